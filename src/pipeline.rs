//! The steps for one Application revision, shared by the controller and `weft run`: verify every git
//! source and the kustomize remote bases it pulls in, render from the verified trees, sign and publish
//! the manifests; each step is reported for the status. Blocking work (git, signatures, renderers) runs on
//! the blocking pool, a bounded number at a time. Steps not built yet report `NotImplemented`; steps after
//! one that did not pass report `Blocked`.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::images::{self, ImageVerifier, policy::ImagePolicies};
use crate::oci::Registry;
use crate::provenance::rekor::{LogKey, Rekor};
use crate::provenance::rekor2::{CheckpointKey, Rekor2};
use crate::reason::Reason;
use crate::referenced::{Kind, ReferencedObjects};
use crate::render::manifest::{self, Limits, TrackingMethod};
use crate::render::{self, AppContext, Checkout, PinnedRemote, Tools};
use crate::repository::access::ProjectRules;
use crate::resources::argocd::{Application, ApplicationSource};
use crate::resources::profile::{GitPolicy, IntegrityProfile, SecretValues};
use crate::resources::provenance::{ImageStatus, SourceRevision};
use crate::signing::key::SigningKey;
use crate::signing::publish::{self, Destination, LogClient, Published};
use crate::source::CommitId;
use crate::source::verify::{Outcome, PinnedBase, SourceRequest, SourceVerdict, SourceVerifier};
use crate::status::{Step, StepError, StepReport, StepState};
use crate::target::SyncTarget;

/// The most distinct images one Application's manifests may run: each is listed in the record
/// (`status.images`, which the webhook admits images from), and the record must stay well under the
/// apiserver's object size limit. More is a failed verdict that says so, never a silently shorter list.
pub const MAX_IMAGES: usize = 500;
/// Longest message kept per image (a registry's error text can be anything).
const MAX_IMAGE_MESSAGE: usize = 512;

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
}

/// What the steps need, shared by every run.
pub struct Pipeline {
    pub verifier: Arc<SourceVerifier>,
    pub tools: Tools,
    pub limits: Limits,
    pub tracking: TrackingMethod,
    /// Argo CD's namespace: Applications elsewhere are tracked as `<namespace>_<name>`.
    pub argocd_namespace: String,
    /// Bounds concurrent verifications and renders (each may use every core).
    pub permits: Semaphore,
    /// Identifies this Weft installation in provenance (`runDetails.builder.id`).
    pub builder_id: String,
    pub images: Arc<ImageVerifier>,
    /// Where the scope of a custom resource's kind is learnt (none from the command line: the CRDs
    /// among the manifests and the built-in kinds decide).
    pub discovery: Option<Box<dyn manifest::ScopeSource>>,
    /// Signing keys already decrypted.
    pub keys: SigningKeys,
}

/// Signing keys already decrypted, by a digest of the Secret's key and password: cosign's encrypted
/// keys cost 32 MiB and a tenth of a second of scrypt each, which a thousand Applications sharing a
/// few keys must not pay a thousand times, nor at once: one key is derived at a time. At most
/// `MAX_KEYS`; beyond, it starts over.
#[derive(Default)]
pub struct SigningKeys {
    keys: std::sync::Mutex<std::collections::HashMap<[u8; 32], SigningKey>>,
    deriving: tokio::sync::Mutex<()>,
}

const MAX_KEYS: usize = 256;

impl SigningKeys {
    fn get(&self, id: &[u8; 32]) -> Option<SigningKey> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    fn insert(&self, id: [u8; 32], key: SigningKey) {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if keys.len() >= MAX_KEYS {
            keys.clear();
        }
        keys.insert(id, key);
    }
}

/// The Secrets among the signed manifests.
#[derive(Debug, Clone, Copy, Default)]
pub struct SecretsSigned {
    /// Signed by the digest of their values ([`manifest::digest_secret`]).
    pub by_digest: usize,
    /// Published with their values, as the profile asked.
    pub with_values: usize,
}

impl SecretsSigned {
    /// What the step's message says of them.
    fn note(&self) -> String {
        let mut out = String::new();
        if self.by_digest > 0 {
            out += &format!("; {} Secret(s) signed by the digest of their values (not published)", self.by_digest);
        }
        if self.with_values > 0 {
            out += &format!(
                "; warning: {} Secret(s) published with their values (manifestSigning.secrets: include): anyone who can pull the manifest image can read them",
                self.with_values
            );
        }
        out
    }
}

/// One run: an Application at exact revisions under a profile.
pub struct Request<'a> {
    pub profile: &'a IntegrityProfile,
    pub app: &'a Application,
    pub target: &'a SyncTarget,
    /// The last verified revision per repository (downgrade protection).
    pub verified: &'a [SourceRevision],
    pub referenced: &'a ReferencedObjects,
    /// The Application's AppProject (which repositories it may use, with whose credentials); `None`
    /// only from the command line when no AppProject was given.
    pub project: Option<&'a ProjectRules>,
    /// Replaces the profile's `manifestSigning.image` (the CLI's `--registry` / `--out`).
    pub destination: Option<DestinationChoice>,
    /// Replaces `manifestSigning.keyless.tokenPath` (the CLI's `--identity-token`).
    pub identity_token: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub enum DestinationChoice {
    Registry(String),
    Layout(PathBuf),
}

/// What the steps reported, and what they found along the way.
pub struct PipelineOutcome {
    pub steps: [StepReport; 4],
    /// Kustomize remote bases, pinned to commits.
    pub remote_bases: Vec<SourceRevision>,
    pub published: Option<Published>,
    /// The provenance attestation's entry in the transparency log.
    pub rekor: Option<crate::resources::provenance::RekorEntry>,
    /// The verification summary's entry, for a revision vouched for.
    pub summary: Option<crate::resources::provenance::RekorEntry>,
    /// What image verification found, per image.
    pub images: Vec<ImageStatus>,
}

/// What signing produced, and what the provenance step reuses.
pub struct Signed {
    pub published: Published,
    /// How the Secrets among the manifests were signed: by digest, or (counted here) with their values.
    pub secrets: SecretsSigned,
    pub destination: Destination,
    pub key: SigningKey,
    pub log: Option<LogClient>,
}

impl PipelineOutcome {
    /// The first step stopped before anything ran (for example, its Secrets could not be read).
    pub fn stopped(first: StepReport) -> PipelineOutcome {
        let blocked = StepReport::blocked(Step::SourceVerified);
        PipelineOutcome::ended([first, blocked.clone(), blocked.clone(), blocked], Vec::new(), Vec::new())
    }

    /// A run that ended before anything was published.
    fn ended(steps: [StepReport; 4], remote_bases: Vec<SourceRevision>, images: Vec<ImageStatus>) -> PipelineOutcome {
        PipelineOutcome { steps, remote_bases, published: None, rekor: None, summary: None, images }
    }
}

/// Progress, for people watching a run.
pub trait Progress: Sync {
    fn step(&self, step: Step, report: &StepReport);
    fn note(&self, _message: &str) {}
}

pub struct NoProgress;
impl Progress for NoProgress {
    fn step(&self, _: Step, _: &StepReport) {}
}

/// What source verification found: its report, the verdicts, and the remote bases pinned.
pub struct Sources {
    pub report: StepReport,
    pub verdicts: Vec<SourceVerdict>,
    pub bases: Vec<PinnedBase>,
}

/// The steps of a run, as the gating in [`run_steps`] sees them: the seam between the order of the
/// steps (what blocks what) and the adapters each step uses. The [`Pipeline`] runs the real ones.
pub(crate) trait Steps: Sync {
    async fn source(&self, request: &Request<'_>, progress: &dyn Progress) -> Result<Sources, StepReport>;
    async fn render(&self, request: &Request<'_>, sources: &Sources) -> Result<Vec<manifest::Manifest>, StepReport>;
    async fn images(
        &self,
        request: &Request<'_>,
        manifests: &[manifest::Manifest],
        progress: &dyn Progress,
    ) -> (StepReport, Vec<ImageStatus>);
    async fn sign(
        &self,
        request: &Request<'_>,
        manifests: Vec<manifest::Manifest>,
        progress: &dyn Progress,
    ) -> Result<Signed, StepReport>;
    /// `vouched` holds the verified images when the revision is vouched for (a summary is then due).
    async fn provenance(
        &self,
        request: &Request<'_>,
        sources: &Sources,
        signed: &Signed,
        started_on: k8s_openapi::jiff::Timestamp,
        vouched: Option<&[ImageStatus]>,
    ) -> Result<(publish::Attested, Option<publish::Attested>), StepReport>;
}

/// One run, step by step. Fail closed: a step runs only when every step before it passed (images that
/// are permitted or not configured do not stop signing, and the verdict says so); the steps after one
/// that did not pass report `Blocked`.
pub(crate) async fn run_steps(steps: &impl Steps, request: Request<'_>, progress: &dyn Progress) -> PipelineOutcome {
    crate::metrics::pipeline_run();
    let mut reports = Step::ALL.map(StepReport::not_implemented);
    let sources = match steps.source(&request, progress).await {
        Ok(sources) => sources,
        Err(report) => Sources { report, verdicts: Vec::new(), bases: Vec::new() },
    };
    progress.step(Step::SourceVerified, &sources.report);
    reports[0] = sources.report.clone();
    let remote_bases: Vec<SourceRevision> = sources
        .bases
        .iter()
        .map(|b| SourceRevision {
            repo_url: b.base.repo_url.clone(),
            revision: b.commit.to_string(),
            path: b.base.path.clone(),
            chart: None,
            target_revision: b.base.reference.clone(),
        })
        .collect();
    if sources.report.state != StepState::Passed {
        reports[1..].fill(StepReport::blocked(Step::SourceVerified));
        return PipelineOutcome::ended(reports, remote_bases, Vec::new());
    }
    let started_on = k8s_openapi::jiff::Timestamp::now();
    let spec = &request.profile.spec;
    let manifests = if spec.image_verification.is_none() && spec.manifest_signing.is_none() {
        Ok(Vec::new()) // nothing needs them
    } else {
        progress.note("rendering from the verified trees");
        steps.render(&request, &sources).await
    };
    let manifests = match manifests {
        Ok(m) => m,
        Err(report) => {
            reports[1] = StepReport::new(
                StepState::Blocked,
                Reason::Blocked,
                "not run: the manifests could not be rendered (see ManifestsSigned)",
            );
            progress.step(Step::ImagesVerified, &reports[1]);
            progress.step(Step::ManifestsSigned, &report);
            reports[2] = report;
            reports[3] = StepReport::blocked(Step::ManifestsSigned);
            return PipelineOutcome::ended(reports, remote_bases, Vec::new());
        }
    };
    let timer = std::time::Instant::now();
    let (images_report, images) = steps.images(&request, &manifests, progress).await;
    crate::metrics::step("ImagesVerified", timer.elapsed().as_secs_f64());
    progress.step(Step::ImagesVerified, &images_report);
    // Strict failures and images not checked yet stop signing; a profile without image verification
    // does not (its verdict says so), nor does permissive enforcement.
    let gate = matches!(images_report.state, StepState::Pending | StepState::Failed);
    reports[1] = images_report;
    if gate {
        reports[2..].fill(StepReport::blocked(Step::ImagesVerified));
        return PipelineOutcome::ended(reports, remote_bases, images);
    }
    let timer = std::time::Instant::now();
    let signed_step = steps.sign(&request, manifests, progress).await;
    crate::metrics::step("ManifestsSigned", timer.elapsed().as_secs_f64());
    let (signed, done) = match signed_step {
        Ok(done) => {
            let p = &done.published;
            let how = if p.signed { "signed" } else { "already signed" };
            let log = p
                .tlog
                .as_ref()
                .map(|t| format!("; signature in the transparency log at index {}", t.log_index))
                .unwrap_or_default();
            let msg = format!(
                "{} resource(s) {how} and published as {}{log}{}",
                p.resources,
                p.reference,
                done.secrets.note()
            );
            (StepReport::new(StepState::Passed, Reason::Signed, msg), Some(done))
        }
        Err(report) => (report, None),
    };
    progress.step(Step::ManifestsSigned, &signed);
    reports[2] = signed;
    let Some(done) = done else {
        reports[3] = StepReport::blocked(Step::ManifestsSigned);
        return PipelineOutcome::ended(reports, remote_bases, images);
    };
    let timer = std::time::Instant::now();
    // Vouched for: every image verified (or none run), so the summary can say PASSED.
    let vouched = (reports[1].state == StepState::Passed).then_some(images.as_slice());
    let recorded = steps.provenance(&request, &sources, &done, started_on, vouched).await;
    crate::metrics::step("ProvenanceRecorded", timer.elapsed().as_secs_f64());
    let (report, rekor, summary) = match recorded {
        Ok((a, summary)) => {
            let how = if a.reused { "recorded (completing an earlier attempt)" } else { "recorded" };
            const UNLOGGED: &str = "in no transparency log (provenance.unlogged: nobody else can tell when it was made, or that it was not replaced)";
            let logged = |e: Option<&crate::resources::provenance::RekorEntry>| match e {
                Some(e) => format!("in the transparency log at index {} (entry {})", e.log_index, e.uuid),
                None => UNLOGGED.to_string(),
            };
            let mut msg = format!(
                "SLSA provenance for {} {how} {}, attached as a signed attestation to {}",
                done.published.reference,
                logged(a.entry.as_ref()),
                a.attached
            );
            match summary.as_ref().map(|s| &s.entry) {
                Some(Some(e)) => msg += &format!("; verification summary (SLSA VSA) {}", logged(Some(e))),
                Some(None) => msg += "; verification summary (SLSA VSA) attached beside it, unlogged too",
                None => {}
            }
            (StepReport::new(StepState::Passed, Reason::Recorded, msg), a.entry, summary.and_then(|s| s.entry))
        }
        Err(report) => (report, None, None),
    };
    progress.step(Step::ProvenanceRecorded, &report);
    reports[3] = report;
    PipelineOutcome { steps: reports, remote_bases, published: Some(done.published), rekor, summary, images }
}

impl Steps for Pipeline {
    async fn source(&self, request: &Request<'_>, progress: &dyn Progress) -> Result<Sources, StepReport> {
        self.source_step(request, progress).await
    }

    async fn render(&self, request: &Request<'_>, sources: &Sources) -> Result<Vec<manifest::Manifest>, StepReport> {
        self.render_step(request, &sources.verdicts, &sources.bases).await
    }

    async fn images(
        &self,
        request: &Request<'_>,
        manifests: &[manifest::Manifest],
        progress: &dyn Progress,
    ) -> (StepReport, Vec<ImageStatus>) {
        self.images_step(request, manifests, progress).await
    }

    async fn sign(
        &self,
        request: &Request<'_>,
        manifests: Vec<manifest::Manifest>,
        progress: &dyn Progress,
    ) -> Result<Signed, StepReport> {
        self.sign_step(request, manifests, progress).await
    }

    async fn provenance(
        &self,
        request: &Request<'_>,
        sources: &Sources,
        signed: &Signed,
        started_on: k8s_openapi::jiff::Timestamp,
        vouched: Option<&[ImageStatus]>,
    ) -> Result<(publish::Attested, Option<publish::Attested>), StepReport> {
        self.provenance_step(request, &sources.verdicts, &sources.bases, signed, started_on, vouched).await
    }
}

impl Pipeline {
    /// Source verification alone, for a revision already recorded: the signatures are checked again
    /// against the keys as they are now (one may have expired or been removed). No render, registry or
    /// transparency log call.
    pub async fn reverify(&self, request: &Request<'_>) -> StepReport {
        crate::metrics::reverification();
        match self.source_step(request, &NoProgress).await {
            Ok(Sources { report, .. }) | Err(report) => report,
        }
    }

    /// The signing key, decrypted once.
    pub async fn signing_key(
        &self,
        pem: &str,
        password: Option<&str>,
    ) -> Result<SigningKey, crate::signing::key::KeyError> {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for part in [pem.as_bytes(), &[0], password.unwrap_or_default().as_bytes(), &[u8::from(password.is_some())]] {
            h.update(part);
        }
        let id: [u8; 32] = h.finalize().into();
        if let Some(key) = self.keys.get(&id) {
            return Ok(key);
        }
        let _one = self.keys.deriving.lock().await;
        if let Some(key) = self.keys.get(&id) {
            return Ok(key); // derived while this one waited
        }
        let key = SigningKey::from_pem(pem, password)?;
        self.keys.insert(id, key.clone());
        Ok(key)
    }

    /// Keyless signing: a key made for this run, certified by Fulcio for the identity of the token.
    async fn keyless_key(
        &self,
        keyless: &crate::resources::profile::KeylessSigning,
        token: Option<&std::path::Path>,
        progress: &dyn Progress,
    ) -> Result<SigningKey, StepReport> {
        let path = token.map(std::path::Path::to_path_buf).unwrap_or_else(|| {
            PathBuf::from(keyless.token_path.as_deref().unwrap_or(crate::resources::profile::DEFAULT_TOKEN_PATH))
        });
        let token = read_token(&path).map_err(|e| {
            StepReport::new(
                StepState::Failed,
                Reason::IdentityTokenMissing,
                format!(
                    "the identity token for keyless signing cannot be read from {}: {e}; mount a projected ServiceAccount token with audience sigstore there (the chart's keyless.enabled does)",
                    path.display()
                ),
            )
        })?;
        progress.note(&format!("asking Fulcio at {} for a certificate", keyless.fulcio_url));
        let certified = crate::signing::keyless::certify(&keyless.fulcio_url, &token)
            .await
            .map_err(|e| e.report_with(format!("keyless signing: {e}")))?;
        if let Some(expected) = &keyless.identity
            && (expected.subject != certified.identity || expected.issuer != certified.issuer)
        {
            return Err(StepReport::new(
                StepState::Failed,
                Reason::KeylessIdentityMismatch,
                format!(
                    "Fulcio certified {} (issuer {}), but the profile's manifestSigning.keyless.identity is {} (issuer {}): nothing is signed; mount the token of the expected ServiceAccount, or correct the identity",
                    certified.identity, certified.issuer, expected.subject, expected.issuer
                ),
            ));
        }
        progress.note(&format!("certified for {} (issuer {})", certified.identity, certified.issuer));
        Ok(certified.key.with_chain(certified.chain))
    }

    /// A slot for CPU-heavy work; the wait is its own metric, so step durations measure the work.
    async fn permit(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        let timer = std::time::Instant::now();
        let permit = self.permits.acquire().await.ok();
        crate::metrics::queue_wait(timer.elapsed().as_secs_f64());
        permit
    }

    pub async fn run(&self, request: Request<'_>, progress: &dyn Progress) -> PipelineOutcome {
        run_steps(self, request, progress).await
    }

    /// Every image the manifests run, verified under the profile (tightened by the Application's
    /// override annotation).
    async fn images_step(
        &self,
        request: &Request<'_>,
        manifests: &[manifest::Manifest],
        progress: &dyn Progress,
    ) -> (StepReport, Vec<ImageStatus>) {
        let Some(iv) = &request.profile.spec.image_verification else {
            let msg = "the profile has no imageVerification, so the images the manifests run are not verified and this revision is not vouched for; add imageVerification to the profile";
            return (
                StepReport::new(StepState::NotConfigured, Reason::ImageVerificationNotConfigured, msg),
                Vec::new(),
            );
        };
        let policies = ImagePolicies::compile(iv, request.referenced).and_then(|mut p| {
            let annotations = request.app.metadata.annotations.as_ref();
            if let Some(text) = annotations.and_then(|a| a.get(images::policy::OVERRIDE_ANNOTATION)) {
                p.tighten(&images::policy::Override::parse(text)?)?;
            }
            Ok(p)
        });
        let policies = match policies {
            Ok(p) => p,
            Err(e) => return (e.report(), Vec::new()),
        };
        let found = images::collect::distinct(images::collect::uses(manifests));
        if found.len() > MAX_IMAGES {
            let msg = format!(
                "the manifests run {} distinct images, more than the {MAX_IMAGES} Weft verifies and records for one Application; nothing is vouched for: split the Application",
                found.len()
            );
            return (StepReport::new(StepState::Failed, Reason::TooManyImages, msg), Vec::new());
        }
        progress.note(&format!("verifying {} image(s) ({})", found.len(), policies.enforcement.as_str()));
        let mut statuses = self.images.verify(&policies, &found).await;
        for s in &mut statuses {
            truncate(&mut s.message, MAX_IMAGE_MESSAGE);
        }
        (images::report(policies.enforcement, &statuses), statuses)
    }

    /// An in-toto SLSA provenance statement for the manifest image, DSSE-signed, logged and attached; and
    /// for a revision vouched for (`vouched` holds its verified images), a verification summary beside it.
    async fn provenance_step(
        &self,
        request: &Request<'_>,
        verdicts: &[SourceVerdict],
        bases: &[PinnedBase],
        done: &Signed,
        started_on: k8s_openapi::jiff::Timestamp,
        vouched: Option<&[ImageStatus]>,
    ) -> Result<(publish::Attested, Option<publish::Attested>), StepReport> {
        let unlogged = request.profile.spec.provenance.as_ref().is_some_and(|p| p.unlogged == Some(true));
        if done.log.is_none() && !unlogged {
            return Err(StepReport::new(
                StepState::NotConfigured,
                Reason::ProvenanceNotConfigured,
                "the profile names no transparency log (provenance.rekor), so no provenance is recorded and nothing is vouched for".to_string(),
            ));
        }
        if done.log.is_none() && done.key.chain().is_some() {
            return Err(StepReport::new(
                StepState::Failed,
                Reason::KeylessNeedsLog,
                "provenance.unlogged with keyless signing: the certificate lives minutes, and with no log entry nobody could later show the attestation was signed while it was valid, so none is recorded; name provenance.rekor, or sign with a key".to_string(),
            ));
        }
        let app = request.app;
        let revisions: Vec<String> = request.target.sources.iter().map(|s| s.revision.clone()).collect();
        let generation = request.profile.metadata.generation.unwrap_or_default();
        let app_id = app.metadata.uid.clone().unwrap_or_else(|| {
            format!(
                "{}/{}",
                app.metadata.namespace.as_deref().unwrap_or_default(),
                app.metadata.name.as_deref().unwrap_or_default()
            )
        });
        let mut commits: Vec<(String, String, String)> =
            verdicts.iter().map(|v| (v.repo_url.clone(), v.commit.to_string(), "source".to_string())).collect();
        commits.extend(bases.iter().map(|b| {
            (b.base.repo_url.clone(), b.commit.to_string(), format!("kustomize remote base {}", b.base.entry))
        }));
        let image_name = done.published.reference.split('@').next().unwrap_or_default().to_string();
        let facts = crate::provenance::Facts {
            image_name,
            image_digest: done.published.digest.clone(),
            application: serde_json::json!({
                "name": app.metadata.name, "namespace": app.metadata.namespace, "project": app.spec.project,
                "destination": app.spec.destination,
            }),
            sources: serde_json::to_value(&request.target.sources).unwrap_or_default(),
            profile: serde_json::json!({"name": request.profile.metadata.name, "namespace": request.profile.metadata.namespace, "generation": generation}),
            commits,
            builder_id: self.builder_id.clone(),
            invocation_id: crate::provenance::invocation_id(&app_id, &revisions, generation, &done.published.digest),
            started_on: started_on.to_string(),
            finished_on: k8s_openapi::jiff::Timestamp::now().to_string(),
            source_verification: serde_json::to_value(verdicts).unwrap_or_default(),
            signed_resources: done.published.resources,
        };
        let statement = crate::provenance::statement(&facts);
        let log = done.log.as_ref().map(publish::LogClient::log);
        let failed = |e: publish::PublishError, what: &str| e.report_with(format!("{e}; {what}"));
        let provenance = publish::attest(&done.destination, &done.published, &statement, &done.key, log.as_ref())
            .await
            .map_err(|e| failed(e, "no provenance is recorded for this revision"))?;
        let Some(images) = vouched else { return Ok((provenance, None)) };
        let summary = summary(request, verdicts, bases, images, &facts, &self.builder_id);
        let statement = crate::provenance::summary_statement(&summary);
        let summary = publish::attest(&done.destination, &done.published, &statement, &done.key, log.as_ref())
            .await
            .map_err(|e| failed(e, "the provenance is recorded, the verification summary is not (retried)"))?;
        Ok((provenance, Some(summary)))
    }

    async fn source_step(&self, request: &Request<'_>, progress: &dyn Progress) -> Result<Sources, StepReport> {
        let policies = request
            .profile
            .spec
            .source_integrity
            .as_ref()
            .and_then(|s| s.git.as_ref())
            .map(|g| g.policies.clone())
            .unwrap_or_default();
        let mut verdicts = Vec::new();
        let mut bases = Vec::new();
        for source in &request.target.sources {
            if source.chart.is_some() {
                return Err(StepReport::new(
                    StepState::NotImplemented,
                    Reason::ChartSourceNotVerified,
                    format!(
                        "source {} is a Helm chart repository ({} {}); verifying chart repositories is not implemented in this version of Weft, so nothing is vouched for",
                        source.repo_url,
                        source.chart.as_deref().unwrap_or_default(),
                        source.revision
                    ),
                ));
            }
            let Some(revision) = CommitId::parse(&source.revision) else {
                return Err(StepReport::new(
                    StepState::Failed,
                    Reason::RevisionNotACommit,
                    format!("{} is not a commit SHA", source.revision),
                ));
            };
            let previous = request
                .verified
                .iter()
                .find(|v| v.repo_url == source.repo_url)
                .and_then(|v| CommitId::parse(&v.revision));
            progress.note(&format!("verifying {} @ {}", source.repo_url, revision.short()));
            let (verdict, pinned) = self
                .verify_source(&policies, request.referenced, request.project, source.clone(), revision, previous)
                .await?;
            if verdict.outcome != Outcome::Verified {
                return Err(report(&verdict));
            }
            verdicts.push(verdict);
            bases.extend(pinned);
        }
        let mut message = verdicts.iter().map(line).collect::<Vec<_>>().join(" | ");
        if !bases.is_empty() {
            let listed: Vec<String> = bases
                .iter()
                .map(|b| {
                    let how = if b.pinned { "pinned, verified" } else { "unpinned (allowUnpinnedBases), verified" };
                    format!("{} @ {} ({how})", b.base.entry, b.commit.short())
                })
                .collect();
            message.push_str(&format!(" | remote bases: {}", listed.join(", ")));
        }
        Ok(Sources { report: StepReport::new(StepState::Passed, Reason::Verified, message), verdicts, bases })
    }

    /// One source and its remote bases, on the blocking pool.
    async fn verify_source(
        &self,
        policies: &[GitPolicy],
        referenced: &ReferencedObjects,
        project: Option<&ProjectRules>,
        source: SourceRevision,
        revision: CommitId,
        previous: Option<CommitId>,
    ) -> Result<(SourceVerdict, Vec<PinnedBase>), StepReport> {
        let _permit = self.permit().await;
        let timer = std::time::Instant::now();
        let verifier = self.verifier.clone();
        let (policies, referenced, project) = (policies.to_vec(), referenced.clone(), project.cloned());
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        let joined = tokio::task::spawn_blocking(move || {
            let request = SourceRequest {
                repo_url: &source.repo_url,
                revision: &revision,
                path: source.path.as_deref(),
                target_revision: source.target_revision.as_deref(),
                previous: previous.as_ref(),
                project: project.as_ref(),
            };
            let verdict = verifier.verify(&policies, &referenced, &request, now);
            if verdict.outcome != Outcome::Verified {
                return Ok((verdict, Vec::new()));
            }
            let bases = verifier.remote_bases(&policies, &referenced, &request, now).map_err(|p| {
                let state = if p.outcome == Outcome::Retry { StepState::Pending } else { StepState::Failed };
                StepReport::new(state, p.reason, p.message)
            })?;
            Ok((verdict, bases))
        })
        .await;
        crate::metrics::step("SourceVerified", timer.elapsed().as_secs_f64());
        joined.unwrap_or_else(|e| Err(interrupted(e)))
    }

    /// Render from the verified trees, select, sign, publish.
    async fn sign_step(
        &self,
        request: &Request<'_>,
        manifests: Vec<manifest::Manifest>,
        progress: &dyn Progress,
    ) -> Result<Signed, StepReport> {
        let failed = |reason: Reason, message: String| StepReport::new(StepState::Failed, reason, message);
        let Some(signing) = &request.profile.spec.manifest_signing else {
            return Err(StepReport::new(
                StepState::NotConfigured,
                Reason::SigningNotConfigured,
                "the profile has no manifestSigning, so the manifests are not signed; add manifestSigning.key",
            ));
        };
        // A keyless signature in Rekor v2 needs a timestamp from a timestamp authority (v2 entries carry
        // no time of their own to hold the short-lived certificate against).
        let rekor_v2 =
            request.profile.spec.provenance.as_ref().and_then(|p| p.rekor.as_ref()).is_some_and(|r| r.is_v2());
        let timestamp_url = signing.keyless.as_ref().and_then(|k| k.timestamp_url.as_deref()).filter(|_| rekor_v2);
        if signing.key.is_none() && signing.keyless.is_some() && rekor_v2 && timestamp_url.is_none() {
            return Err(failed(
                Reason::KeylessNeedsTimestamps,
                "keyless signing with a Rekor v2 log needs signed timestamps (RFC 3161) to show the short-lived certificate was valid, and manifestSigning.keyless.timestampURL is not set, so nothing is signed; name a timestamp authority (e.g. https://timestamp.sigstore.dev/api/v1/timestamp)".into(),
            ));
        }
        // The key first: a missing or wrong key fails before anything is published.
        let key = match (&signing.key, &signing.keyless) {
            (Some(key), _) => {
                let (pem, password) = request.referenced.signing_key(key).map_err(|e| e.report())?;
                self.signing_key(&pem, password.as_deref().map(str::trim_end)).await.map_err(|e| {
                    failed(e.reason(), format!("Secret {} key {}: {e}", key.secret_ref.name, key.key_name()))
                })?
            }
            (None, Some(keyless)) => self.keyless_key(keyless, request.identity_token.as_deref(), progress).await?,
            (None, None) => {
                return Err(failed(
                    Reason::SigningKeyMissing,
                    "manifestSigning names neither a key nor keyless signing; set one of them".into(),
                ));
            }
        };

        let rules = signing.r#match.clone().unwrap_or_default();
        // Scopes from every rendered CRD, signed or not.
        let mut scopes = manifest::Scopes::of_crds(&manifests);
        let mut selected = manifest::select(manifests, &rules).map_err(|e| failed(e.reason(), e.to_string()))?;
        let app_name = request.app.metadata.name.clone().unwrap_or_default();
        let app_ns = request.app.metadata.namespace.clone().unwrap_or_else(|| self.argocd_namespace.clone());
        let tracked = if app_ns == self.argocd_namespace { app_name.clone() } else { format!("{app_ns}_{app_name}") };
        let dest_ns = request.app.spec.destination.as_ref().and_then(|d| d.namespace.clone());
        if let Some(discovery) = &self.discovery {
            discovery.fill(&selected, &mut scopes).await;
        }
        manifest::add_tracking(&mut selected, &tracked, dest_ns.as_deref(), self.tracking, &scopes);
        // A Secret's values go into the manifest image only when the profile asks for it.
        let mut secrets = SecretsSigned::default();
        for m in selected.iter_mut().filter(|m| manifest::is_secret(&m.object)) {
            if signing.secrets == Some(SecretValues::Include) {
                secrets.with_values += 1;
            } else {
                manifest::digest_secret(&mut m.object);
                secrets.by_digest += 1;
            }
        }
        manifest::sort(&mut selected);
        progress.note(&format!("signing {} resource(s)", selected.len()));

        let destination = match request.destination.clone() {
            Some(DestinationChoice::Layout(dir)) => Destination::Layout { dir, name: app_name.clone() },
            Some(DestinationChoice::Registry(repo)) => self.registry(request, &repo, &app_name)?,
            None => match signing.image.as_ref() {
                Some(image) => self.registry(request, &image.repository, &app_name)?,
                None => {
                    return Err(failed(
                        Reason::NoDestination,
                        "manifestSigning.image.repository is not set, so the signed manifests have nowhere to go"
                            .into(),
                    ));
                }
            },
        };
        let rekor = request.profile.spec.provenance.as_ref().and_then(|p| p.rekor.as_ref());
        let log = match rekor {
            Some(r) if r.is_v2() => {
                let pem = request.referenced.texts(&r.public_key).map_err(|e| e.report())?.join("\n");
                let key = CheckpointKey::from_pem(&pem).map_err(|e| e.report())?;
                let origin = r.origin();
                let rekor = Rekor2::new(&r.url).with_reads(r.read_url(), key.clone(), &origin);
                let timestamps =
                    match timestamp_url {
                        Some(url) => Some(sigstore_tsa::TimestampClient::new(url).map_err(|e| {
                            failed(Reason::TimestampAuthorityInvalid, format!("timestampURL {url}: {e}"))
                        })?),
                        None => None,
                    };
                Some(LogClient::V2 { rekor: Box::new(rekor), key, origin, timestamps })
            }
            Some(r) => {
                let pem = request.referenced.texts(&r.public_key).map_err(|e| e.report())?.join("\n");
                Some(LogClient::V1(Rekor::new(&r.url), LogKey::from_pem(&pem).map_err(|e| e.report())?))
            }
            None => None,
        };
        let where_to = match &destination {
            Destination::Registry { registry, tag } => format!("{}:{tag}", registry.repository()),
            Destination::Layout { dir, .. } => dir.display().to_string(),
        };
        progress.note(&format!("publishing to {where_to}"));
        let published = publish::publish(&destination, &selected, &key, log.as_ref().map(LogClient::log))
            .await
            .map_err(|e| e.report_with(format!("{e}; nothing was recorded as signed")))?;
        Ok(Signed { published, secrets, destination, key, log })
    }

    fn registry(&self, request: &Request<'_>, repository: &str, app: &str) -> Result<Destination, StepReport> {
        let creds = match request
            .profile
            .spec
            .manifest_signing
            .as_ref()
            .and_then(|s| s.image.as_ref())
            .and_then(|i| i.credentials.as_ref())
        {
            Some(c) => Some(
                request
                    .referenced
                    .text(Kind::Secret, &c.secret_ref.name, ".dockerconfigjson")
                    .map_err(|e| e.report())?,
            ),
            None => None,
        };
        let registry = Registry::new(repository, creds.as_deref()).map_err(|e| e.report())?;
        let revision: String =
            request.target.sources.first().map(|s| s.revision.chars().take(12).collect()).unwrap_or_default();
        Ok(Destination::Registry { registry, tag: tag_for(app, &revision) })
    }

    /// Exports each verified source and renders it, on the blocking pool.
    async fn render_step(
        &self,
        request: &Request<'_>,
        verdicts: &[SourceVerdict],
        bases: &[PinnedBase],
    ) -> Result<Vec<manifest::Manifest>, StepReport> {
        let _permit = self.permit().await;
        let timer = std::time::Instant::now();
        let declared: Vec<ApplicationSource> =
            crate::target::declared_sources(request.app).map(|s| s.to_vec()).unwrap_or_default();
        let sources: Vec<(ApplicationSource, SourceRevision)> =
            declared.into_iter().zip(request.target.sources.iter().cloned()).collect();
        let verdicts = verdicts.to_vec();
        let remotes: Vec<(String, CommitId)> =
            bases.iter().map(|b| (b.base.repo_url.clone(), b.commit.clone())).collect();
        let (verifier, tools, limits) = (self.verifier.clone(), self.tools.clone(), self.limits);
        let referenced = request.referenced.clone();
        let project = request.project.cloned();
        let app = request.app.clone();
        let joined = tokio::task::spawn_blocking(move || -> Result<Vec<manifest::Manifest>, StepReport> {
            let failed = |e: render::RenderError| e.report();
            let work = tempfile::tempdir()
                .map_err(|e| StepReport::new(StepState::Pending, Reason::WorkDirUnavailable, e.to_string()))?;
            let mut checkouts = Vec::new();
            for (i, (declared, rev)) in sources.iter().enumerate() {
                let verdict = verdicts.iter().find(|v| v.repo_url == rev.repo_url && v.commit.as_str() == rev.revision);
                let Some(verdict) = verdict else { continue };
                let access = crate::source::verify::access(&referenced, &rev.repo_url, project.as_ref());
                let repo = verifier
                    .repos
                    .open(&rev.repo_url, &[&verdict.commit], Some(&access), false)
                    .map_err(|e| e.report())?;
                let dir = work.path().join(format!("source-{i}"));
                render::export(&repo, &verdict.commit, &dir).map_err(failed)?;
                checkouts.push(Checkout { source: declared.clone(), dir });
            }
            let mut pinned = Vec::new();
            for (url, commit) in remotes {
                let access = crate::source::verify::base_access(&referenced, &url, project.as_ref());
                let repo = verifier.repos.open(&url, &[&commit], Some(&access), false).map_err(|e| e.report())?;
                let mirror =
                    std::fs::canonicalize(repo.inner().path()).unwrap_or_else(|_| repo.inner().path().to_path_buf());
                pinned.push(PinnedRemote { repo_url: url, mirror, commit });
            }
            let ctx = AppContext {
                name: app.metadata.name.as_deref().unwrap_or_default(),
                destination_namespace: app.spec.destination.as_ref().and_then(|d| d.namespace.as_deref()),
                kube_version: None,
            };
            render::render(&ctx, &checkouts, &pinned, &tools, limits).map_err(failed)
        })
        .await;
        crate::metrics::step("Render", timer.elapsed().as_secs_f64());
        joined.unwrap_or_else(|e| Err(interrupted(e)))
    }
}

/// A tag for the manifest image: `<app>-<revision>`, within OCI's tag grammar.
pub fn tag_for(app: &str, revision: &str) -> String {
    let clean: String = format!("{app}-{revision}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' { c } else { '-' })
        .collect();
    let clean = clean.trim_start_matches(['.', '-']).to_string();
    clean.chars().take(128).collect()
}

fn interrupted(e: tokio::task::JoinError) -> StepReport {
    StepReport::new(StepState::Pending, Reason::Interrupted, format!("the step did not finish: {e}"))
}

fn line(v: &SourceVerdict) -> String {
    format!("{} @ {}: {}", v.repo_url, v.commit.short(), v.message)
}

/// The step report for a source that did not verify.
fn report(v: &SourceVerdict) -> StepReport {
    match v.outcome {
        Outcome::Retry => StepReport::new(StepState::Pending, v.reason, format!("{} (retrying with backoff)", line(v))),
        _ => StepReport::new(StepState::Failed, v.reason, line(v)),
    }
}

/// The verification summary of a vouched-for revision: what was checked, against which profile.
fn summary(
    request: &Request<'_>,
    verdicts: &[SourceVerdict],
    bases: &[PinnedBase],
    images: &[ImageStatus],
    facts: &crate::provenance::Facts,
    verifier_id: &str,
) -> crate::provenance::Summary {
    let all: Vec<&SourceVerdict> = verdicts.iter().chain(bases.iter().map(|b| &b.verdict)).collect();
    let mut levels = vec!["WEFT_SOURCE_VERIFIED".to_string()];
    if all.iter().all(|v| matches!(v.mode, Some("head" | "strict"))) {
        levels.push("WEFT_SOURCE_SIGNED".into());
    }
    if all.iter().all(|v| v.mode == Some("strict")) {
        levels.push("WEFT_SOURCE_HISTORY_SIGNED".into());
    }
    levels.push("WEFT_IMAGES_VERIFIED".into());
    levels.push("WEFT_MANIFESTS_SIGNED".into());
    let mut dependency_levels = std::collections::BTreeMap::new();
    for level in images.iter().filter_map(|i| i.slsa_level) {
        *dependency_levels.entry(format!("SLSA_BUILD_LEVEL_{level}")).or_insert(0) += 1;
    }
    let profile = request.profile;
    crate::provenance::Summary {
        image_name: facts.image_name.clone(),
        image_digest: facts.image_digest.clone(),
        verifier_id: verifier_id.to_string(),
        time_verified: k8s_openapi::jiff::Timestamp::now().to_string(),
        policy_uri: crate::provenance::policy_uri(
            profile.metadata.namespace.as_deref(),
            profile.metadata.name.as_deref().unwrap_or_default(),
            profile.metadata.generation.unwrap_or_default(),
        ),
        policy_sha256: crate::provenance::policy_sha256(&profile.spec),
        commits: facts.commits.iter().map(|(uri, commit, _)| (uri.clone(), commit.clone())).collect(),
        images: images.iter().filter_map(|i| Some((i.image.clone(), i.digest.clone()?))).collect(),
        levels,
        dependency_levels,
    }
}

/// An identity token file: a JWT, small (a larger file is not one).
fn read_token(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    const MAX_TOKEN_BYTES: u64 = 64 << 10;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut text = String::new();
    file.take(MAX_TOKEN_BYTES + 1).read_to_string(&mut text).map_err(|e| e.to_string())?;
    if text.len() as u64 > MAX_TOKEN_BYTES {
        return Err(format!("larger than {} KiB, not a token", MAX_TOKEN_BYTES >> 10));
    }
    Ok(text.trim().to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::resources::profile::{ImageVerification, ManifestSigning};
    use crate::resources::provenance::{ImageOutcome, RekorEntry, RevisionOrigin};

    #[test]
    fn tags_follow_the_oci_grammar() {
        assert_eq!(super::tag_for("shop-cart", "9f2c1e4b7a3d"), "shop-cart-9f2c1e4b7a3d");
        assert_eq!(super::tag_for(".x/y", "1"), "x-y-1");
    }

    /// Steps that report what they are told to, and remember which ran: the gating alone, no peers.
    struct Scripted {
        source: StepState,
        render: bool,
        images: StepReport,
        sign: bool,
        ran: Mutex<Vec<String>>,
    }

    impl Scripted {
        fn new(source: StepState, images: StepState) -> Scripted {
            let reason = match images {
                StepState::Passed => Reason::Verified,
                StepState::NotConfigured => Reason::ImageVerificationNotConfigured,
                StepState::Permitted => Reason::UnverifiedImagesPermitted,
                StepState::Pending => Reason::RegistryUnavailable,
                _ => Reason::ImageNotSigned,
            };
            Scripted {
                source,
                render: true,
                images: StepReport::new(images, reason, "images"),
                sign: true,
                ran: Mutex::default(),
            }
        }

        fn ran(&self, step: impl Into<String>) {
            self.ran.lock().unwrap().push(step.into());
        }

        fn steps(&self) -> Vec<String> {
            self.ran.lock().unwrap().clone()
        }
    }

    impl Steps for Scripted {
        async fn source(&self, _: &Request<'_>, _: &dyn Progress) -> Result<Sources, StepReport> {
            self.ran("source");
            let reason = if self.source == StepState::Passed { Reason::Verified } else { Reason::Unsigned };
            let report = StepReport::new(self.source, reason, "source");
            match self.source {
                StepState::Passed => Ok(Sources { report, verdicts: Vec::new(), bases: Vec::new() }),
                _ => Err(report),
            }
        }

        async fn render(&self, _: &Request<'_>, _: &Sources) -> Result<Vec<manifest::Manifest>, StepReport> {
            self.ran("render");
            match self.render {
                true => Ok(Vec::new()),
                false => Err(StepReport::new(StepState::Failed, Reason::RenderFailed, "render")),
            }
        }

        async fn images(
            &self,
            _: &Request<'_>,
            _: &[manifest::Manifest],
            _: &dyn Progress,
        ) -> (StepReport, Vec<ImageStatus>) {
            self.ran("images");
            let image = ImageStatus { image: "a".into(), outcome: ImageOutcome::Verified, ..Default::default() };
            (self.images.clone(), vec![image])
        }

        async fn sign(
            &self,
            _: &Request<'_>,
            _: Vec<manifest::Manifest>,
            _: &dyn Progress,
        ) -> Result<Signed, StepReport> {
            self.ran("sign");
            if !self.sign {
                return Err(StepReport::new(StepState::Pending, Reason::RegistryUnavailable, "sign"));
            }
            let published = Published {
                reference: "layout@sha256:00".into(),
                digest: "sha256:00".into(),
                resources: 1,
                image: crate::oci::Pushed::New,
                size: 1,
                signed: true,
                referrer: false,
                tlog: None,
            };
            Ok(Signed {
                published,
                secrets: SecretsSigned::default(),
                destination: Destination::Layout { dir: PathBuf::from("layout"), name: "app".into() },
                key: SigningKey::generate().unwrap(),
                log: None,
            })
        }

        async fn provenance(
            &self,
            _: &Request<'_>,
            _: &Sources,
            _: &Signed,
            _: k8s_openapi::jiff::Timestamp,
            vouched: Option<&[ImageStatus]>,
        ) -> Result<(publish::Attested, Option<publish::Attested>), StepReport> {
            self.ran(if vouched.is_some() { "provenance and summary" } else { "provenance" });
            let attested =
                publish::Attested { entry: Some(RekorEntry::default()), attached: "layout".into(), reused: false };
            Ok((attested.clone(), vouched.map(|_| attested)))
        }
    }

    fn profile(images: bool, signing: bool) -> IntegrityProfile {
        let mut p: IntegrityProfile = serde_json::from_value(serde_json::json!({
            "apiVersion": "weft.dev/v1alpha1", "kind": "IntegrityProfile",
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"applicationSelector": [{"name": "*"}]},
        }))
        .unwrap();
        p.spec.image_verification = images.then(ImageVerification::default);
        p.spec.manifest_signing = signing.then(ManifestSigning::default);
        p
    }

    async fn run(steps: &Scripted, profile: &IntegrityProfile) -> PipelineOutcome {
        let app = Application::default();
        let target = SyncTarget { sources: Vec::new(), origin: RevisionOrigin::SyncStatus };
        let referenced = ReferencedObjects::default();
        let request = Request {
            profile,
            app: &app,
            target: &target,
            verified: &[],
            referenced: &referenced,
            project: None,
            destination: None,
            identity_token: None,
        };
        run_steps(steps, request, &NoProgress).await
    }

    fn states(o: &PipelineOutcome) -> Vec<StepState> {
        o.steps.iter().map(|r| r.state).collect()
    }

    use StepState::{Blocked, Failed, NotConfigured, Passed, Pending, Permitted};

    #[tokio::test]
    async fn a_source_that_does_not_pass_blocks_every_later_step_and_nothing_else_runs() {
        for source in [Failed, Pending, StepState::NotImplemented] {
            let steps = Scripted::new(source, Passed);
            let o = run(&steps, &profile(true, true)).await;
            assert_eq!(states(&o), [source, Blocked, Blocked, Blocked]);
            assert_eq!(steps.steps(), ["source"]);
            assert!(o.published.is_none() && o.rekor.is_none());
        }
    }

    #[tokio::test]
    async fn images_failed_or_not_checked_yet_stop_signing() {
        for images in [Failed, Pending] {
            let steps = Scripted::new(Passed, images);
            let o = run(&steps, &profile(true, true)).await;
            assert_eq!(states(&o), [Passed, images, Blocked, Blocked]);
            assert_eq!(steps.steps(), ["source", "render", "images"]);
            assert_eq!(o.images.len(), 1, "what image verification found is kept");
        }
    }

    #[tokio::test]
    async fn only_a_revision_whose_images_all_passed_gets_a_verification_summary() {
        for (images, ran) in
            [(Passed, "provenance and summary"), (Permitted, "provenance"), (NotConfigured, "provenance")]
        {
            let steps = Scripted::new(Passed, images);
            let o = run(&steps, &profile(true, true)).await;
            assert_eq!(states(&o), [Passed, images, Passed, Passed]);
            assert_eq!(steps.steps(), ["source", "render", "images", "sign", ran]);
            assert_eq!(o.summary.is_some(), images == Passed);
        }
    }

    #[tokio::test]
    async fn a_render_that_fails_is_the_signing_steps_failure_and_blocks_the_rest() {
        let mut steps = Scripted::new(Passed, Passed);
        steps.render = false;
        let o = run(&steps, &profile(true, true)).await;
        assert_eq!(states(&o), [Passed, Blocked, Failed, Blocked]);
        assert_eq!(o.steps[2].reason, Reason::RenderFailed);
        assert_eq!(steps.steps(), ["source", "render"]);
    }

    #[tokio::test]
    async fn signing_that_does_not_pass_blocks_provenance() {
        let mut steps = Scripted::new(Passed, Passed);
        steps.sign = false;
        let o = run(&steps, &profile(true, true)).await;
        assert_eq!(states(&o), [Passed, Passed, Pending, Blocked]);
        assert_eq!(steps.steps(), ["source", "render", "images", "sign"]);
        assert!(o.published.is_none());
    }

    #[tokio::test]
    async fn nothing_is_rendered_when_no_step_needs_the_manifests() {
        let steps = Scripted::new(Passed, NotConfigured);
        run(&steps, &profile(false, false)).await;
        assert!(!steps.steps().contains(&"render".to_string()), "{:?}", steps.steps());
    }
}
