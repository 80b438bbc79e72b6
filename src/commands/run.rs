//! `weft run`: the whole pipeline for one Application, without a cluster — verify the sources, render
//! from the verified trees, sign, and publish to a registry or an OCI image layout directory.

use std::path::PathBuf;

use serde_json::json;

use super::{EXIT_BAD_INPUT, EXIT_FAILED, EXIT_VERIFIED, InputError, load_profile, read};
use crate::pipeline::{DestinationChoice, Pipeline, Progress, Request};
use crate::reason::Category;
use crate::resources::argocd::Application;
use crate::resources::provenance::{RevisionOrigin, SourceRevision};
use crate::source::CommitId;
use crate::source::verify::SourceVerifier;
use crate::status::{Step, StepReport, StepState};
use crate::target::{self, SyncTarget};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// An Argo CD Application (YAML), with the revision Argo CD resolved in its status, or `--revision`.
    #[arg(long)]
    pub application: PathBuf,
    /// An IntegrityProfile, as you would apply it.
    #[arg(long)]
    pub profile: PathBuf,
    #[command(flatten)]
    pub objects: super::Referenced,
    #[command(flatten)]
    pub layouts: super::ImageLayouts,
    /// Publish to this OCI repository (instead of the profile's manifestSigning.image.repository).
    #[arg(long, conflicts_with = "out")]
    pub registry: Option<String>,
    /// Write an OCI image layout directory instead of pushing (the default when the profile names no
    /// repository).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The revision to use when the Application has none in its status (single-source): a commit, tag or
    /// branch, resolved as Argo CD would.
    #[arg(long)]
    pub revision: Option<String>,
    /// Keyless signing: the OIDC identity token to show Fulcio (a file), instead of the profile's
    /// `manifestSigning.keyless.tokenPath`.
    #[arg(long)]
    pub identity_token: Option<PathBuf>,
    #[arg(long, env = "WEFT_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    #[arg(long, env = "WEFT_TRACKING_METHOD", value_enum, default_value_t = crate::render::manifest::TrackingMethod::Annotation)]
    pub tracking_method: crate::render::manifest::TrackingMethod,
    /// Identifies this run's builder in provenance (`runDetails.builder.id`).
    #[arg(long, env = "WEFT_BUILDER_ID", default_value = "https://weft.dev/builders/cli")]
    pub builder_id: String,
    /// Largest rendered document accepted, in bytes.
    #[arg(long, env = "WEFT_MAX_DOCUMENT_BYTES", default_value_t = 1024 * 1024)]
    pub max_document_bytes: usize,
    #[arg(long, value_enum, default_value_t = super::verify_source::Output::Text)]
    pub output: super::verify_source::Output,
}

/// Step-by-step output on stderr, for a person, with the time each step took.
struct Printer {
    since: std::sync::Mutex<std::time::Instant>,
}

impl Printer {
    fn new() -> Printer {
        Printer { since: std::sync::Mutex::new(std::time::Instant::now()) }
    }

    fn lap(&self) -> u128 {
        let mut since = self.since.lock().unwrap_or_else(|p| p.into_inner());
        let ms = since.elapsed().as_millis();
        *since = std::time::Instant::now();
        ms
    }
}

impl Progress for Printer {
    fn step(&self, step: Step, r: &StepReport) {
        let n = Step::ALL.iter().position(|s| *s == step).unwrap_or(0) + 1;
        let mark = match r.state {
            StepState::Passed => "ok  ",
            // Not asked for by the profile (the verdict says so; the run goes on).
            StepState::NotConfigured => "n/a ",
            StepState::Failed => "FAIL",
            StepState::Permitted => "warn",
            StepState::Pending => "WAIT",
            StepState::NotImplemented => "n/a ",
            StepState::Blocked => "skip",
        };
        eprintln!("[{n}/4] {mark} {:<18} ({} ms) {}: {}", step.condition_type(), self.lap(), r.reason, r.message);
    }

    fn note(&self, message: &str) {
        eprintln!("      … {message}");
    }
}

pub fn run(args: Args) -> u8 {
    match execute(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            if let super::verify_source::Output::Json = args.output {
                say!("{}", serde_json::to_string_pretty(&e.to_json()).unwrap_or_default());
            }
            EXIT_BAD_INPUT
        }
    }
}

fn load_application(path: &std::path::Path) -> Result<Application, InputError> {
    let text = read(path)?;
    let shown = path.display().to_string();
    let raw: serde_json::Value =
        serde_saphyr::from_str(&text).map_err(|e| InputError::Other(format!("{shown}: {e}")))?;
    if raw.get("kind").and_then(|k| k.as_str()) != Some("Application") {
        return Err(InputError::Other(format!("{shown} is not an Argo CD Application (kind: Application)")));
    }
    serde_json::from_value(raw).map_err(|e| InputError::Other(format!("{shown}: {e}")))
}

fn execute(args: &Args) -> Result<u8, InputError> {
    let app = load_application(&args.application)?;
    let profile = load_profile(&args.profile)?;
    let project_name = app.spec.project.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "default".into());
    let referenced = args.objects.referenced(&profile, Some(&project_name))?;
    let project = super::project_rules(&referenced, Some(&project_name), false)?;
    if let Some(rules) = project {
        let app_ns = app.metadata.namespace.clone().unwrap_or_default();
        if !rules.permits_namespace(&app_ns, &args.objects.argocd_namespace) {
            return Err(InputError::Other(format!(
                "AppProject {project_name} does not permit Applications in namespace {app_ns} (spec.sourceNamespaces)"
            )));
        }
    }
    let verifier =
        SourceVerifier::new(args.cache_dir.clone().unwrap_or_else(crate::source::fetch::default_cache_dir), 64);

    let target = match (target::sync_target(&app), &args.revision) {
        (Ok(Some(t)), None) => t,
        (Ok(_), Some(rev)) => {
            let sources = target::declared_sources(&app).map_err(|e| InputError::Other(e.to_string()))?;
            let [source] = sources else {
                return Err(InputError::Other("--revision works for single-source Applications".into()));
            };
            let commit = match CommitId::parse(rev) {
                Some(c) => c,
                None => {
                    let access = crate::source::verify::access(&referenced, &source.repo_url, project);
                    let repo = verifier
                        .repos
                        .open(&source.repo_url, &[], Some(&access), true)
                        .map_err(|e| InputError::Other(e.to_string()))?;
                    repo.resolve(rev).map_err(|e| InputError::Other(e.to_string()))?
                }
            };
            SyncTarget {
                sources: vec![SourceRevision {
                    repo_url: source.repo_url.clone(),
                    revision: commit.to_string(),
                    path: source.path.clone(),
                    chart: source.chart.clone(),
                    target_revision: Some(rev.clone()),
                }],
                origin: RevisionOrigin::SyncStatus,
            }
        }
        (Ok(None), None) => {
            return Err(InputError::Other(
                "the Application has no resolved revision in its status; pass --revision".into(),
            ));
        }
        (Err(e), _) => return Err(InputError::Other(format!("the Application cannot be used: {e}"))),
    };

    let destination = match (&args.registry, &args.out) {
        (Some(r), _) => Some(DestinationChoice::Registry(r.clone())),
        (None, Some(dir)) => Some(DestinationChoice::Layout(dir.clone())),
        (None, None) if profile.spec.manifest_signing.as_ref().and_then(|s| s.image.as_ref()).is_some() => None,
        (None, None) => Some(DestinationChoice::Layout(PathBuf::from("weft-out"))),
    };
    let pipeline = Pipeline {
        verifier: std::sync::Arc::new(verifier),
        tools: crate::render::Tools::default(),
        limits: crate::render::manifest::Limits { max_document_bytes: args.max_document_bytes, ..Default::default() },
        tracking: args.tracking_method,
        argocd_namespace: args.objects.argocd_namespace.clone(),
        permits: tokio::sync::Semaphore::new(2),
        builder_id: args.builder_id.clone(),
        images: std::sync::Arc::new(
            crate::images::ImageVerifier::default().with_layouts(args.layouts.image_layouts.iter().cloned()),
        ),
        discovery: None,
        keys: Default::default(),
    };
    let name = app.metadata.name.clone().unwrap_or_default();
    eprintln!("weft run: Application {name}, profile {}", profile.metadata.name.as_deref().unwrap_or_default());
    let request = Request {
        profile: &profile,
        app: &app,
        target: &target,
        verified: &[],
        referenced: &referenced,
        project,
        destination: destination.clone(),
        identity_token: args.identity_token.clone(),
    };
    let runtime = tokio::runtime::Runtime::new().map_err(|e| InputError::Other(e.to_string()))?;
    let printer = Printer::new();
    let outcome = runtime.block_on(pipeline.run(request, &printer));

    let public_key = match outcome.published {
        Some(_) => runtime.block_on(public_key(&pipeline, &profile, &referenced)),
        None => None,
    };
    // What verifying needs, beside the output (or in weft-out for a registry): the signing key's public
    // half, and the log's key when the signature was logged (a private log is not in cosign's roots). In
    // a Rekor v2 log only the bundle's signature is logged.
    let rekor = profile.spec.provenance.as_ref().and_then(|p| p.rekor.as_ref());
    let logged = outcome.published.as_ref().is_some_and(|p| p.tlog.is_some() || rekor.is_some_and(|r| r.is_v2()));
    let log_key =
        rekor.and_then(|r| Some((r.url.clone(), referenced.texts(&r.public_key).ok()?.join("\n")))).filter(|_| logged);
    let keys_dir = match &destination {
        Some(DestinationChoice::Layout(dir)) => dir.clone(),
        _ => PathBuf::from("weft-out"),
    };
    let hint = public_key.as_ref().and_then(|pem| {
        std::fs::create_dir_all(&keys_dir).ok()?;
        std::fs::write(keys_dir.join("cosign.pub"), pem).ok()?;
        if let Some((url, pem)) = &log_key {
            std::fs::write(keys_dir.join("rekor.pub"), pem).ok()?;
            // For bundles, cosign wants the log in a trusted root.
            let key = crate::provenance::rekor::LogKey::from_pem(pem).ok()?;
            let root = crate::bundle::trusted_root_for_log(url, &key.der());
            std::fs::write(keys_dir.join("trusted_root.json"), root.to_string()).ok()?;
        }
        Some(VerifyHint { dir: keys_dir.clone(), logged: log_key.is_some() })
    });
    let [source, images, signed, provenance] = &outcome.steps;
    // Provenance and images count when the profile configures them; without that the run does what is
    // configured (and says what it did not do).
    let provenance_ok = matches!(provenance.state, StepState::Passed | StepState::NotConfigured);
    let images_ok = matches!(images.state, StepState::Passed | StepState::Permitted | StepState::NotConfigured);
    let code = if source.state == StepState::Passed && images_ok && signed.state == StepState::Passed && provenance_ok {
        EXIT_VERIFIED
    } else if signed.state == StepState::NotConfigured
        || [source, images, signed, provenance].iter().any(|s| s.reason.category() == Category::Configuration)
    {
        EXIT_BAD_INPUT
    } else {
        EXIT_FAILED
    };
    match args.output {
        super::verify_source::Output::Json => {
            let steps: Vec<_> = Step::ALL
                .iter()
                .zip(&outcome.steps)
                .map(|(s, r)| json!({"type": s.condition_type(), "state": format!("{:?}", r.state), "reason": r.reason, "message": r.message}))
                .collect();
            let p = outcome.published.as_ref();
            let out = json!({
                "application": name,
                "steps": steps,
                "manifestImage": p.map(|p| p.reference.clone()),
                "digest": p.map(|p| p.digest.clone()),
                "resources": p.map(|p| p.resources),
                "referrer": p.map(|p| p.referrer),
                "transparencyLog": p.and_then(|p| p.tlog.as_ref()).map(|t| json!({"uuid": t.uuid, "logIndex": t.log_index})),
                "provenance": outcome.rekor.as_ref().map(|r| json!({"uuid": r.uuid, "logIndex": r.log_index, "integratedTime": r.integrated_time, "logID": r.log_id})),
                "verificationSummary": outcome.summary.as_ref().map(|r| json!({"uuid": r.uuid, "logIndex": r.log_index, "integratedTime": r.integrated_time, "logID": r.log_id})),
                "remoteBases": outcome.remote_bases,
                "images": outcome.images,
            });
            say!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        }
        super::verify_source::Output::Text => {
            if let Some(p) = &outcome.published {
                say!("manifest image: {}", p.reference);
                if let Some(h) = &hint {
                    match &destination {
                        Some(DestinationChoice::Layout(dir)) => {
                            say!("verify it with: {}", h.cosign(&format!("--local-image {}", dir.display())));
                        }
                        _ => say!("verify it with: {}", h.cosign(&p.reference)),
                    }
                }
            }
            if let Some(r) = &outcome.rekor {
                say!("provenance: transparency log entry {} (index {})", r.uuid, r.log_index);
            }
            if let Some(r) = &outcome.summary {
                say!("verification summary (SLSA VSA): transparency log entry {} (index {})", r.uuid, r.log_index);
            }
            for i in &outcome.images {
                let at = i.digest.as_deref().map(|d| format!(" ({d})")).unwrap_or_default();
                say!("image {}{at}: {:?} {}: {}", i.image, i.outcome, i.reason, i.message);
            }
            if images.state == StepState::NotConfigured {
                say!(
                    "note: the profile does not verify images (no imageVerification); the revision is not fully vouched for"
                );
            }
        }
    }
    Ok(code)
}

/// How to verify what `weft run` published with cosign, as a command that works as printed.
struct VerifyHint {
    /// Where `cosign.pub` (and `rekor.pub` and `trusted_root.json`) were written.
    dir: PathBuf,
    /// The signature is in a log whose key is `rekor.pub` (cosign knows only the public log's).
    logged: bool,
}

impl VerifyHint {
    /// `cosign verify` of `what` (an image reference, or `--local-image DIR`).
    fn cosign(&self, what: &str) -> String {
        let key = self.dir.join("cosign.pub");
        if self.logged {
            let root = self.dir.join("trusted_root.json");
            format!("cosign verify --key {} --trusted-root {} {what}", key.display(), root.display())
        } else {
            format!("cosign verify --key {} --insecure-ignore-tlog {what}", key.display())
        }
    }
}

/// The public key of the profile's signing key (for the verification hint); the run decrypted it already.
async fn public_key(
    pipeline: &Pipeline,
    profile: &crate::resources::profile::IntegrityProfile,
    referenced: &crate::referenced::ReferencedObjects,
) -> Option<String> {
    let key = profile.spec.manifest_signing.as_ref()?.key.as_ref()?;
    let (pem, password) = referenced.signing_key(key).ok()?;
    pipeline.signing_key(&pem, password.as_deref().map(str::trim_end)).await.ok().map(|k| k.public_pem())
}
