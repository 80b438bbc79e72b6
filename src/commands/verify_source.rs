//! `weft verify-source`: the source verification of the controller, from the command line.

use std::path::PathBuf;

use super::{EXIT_BAD_INPUT, EXIT_FAILED, EXIT_VERIFIED, InputError, load_profile};
use crate::source::CommitId;
use crate::source::verify::{Outcome, SourceRequest, SourceVerdict, SourceVerifier};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// An IntegrityProfile, as you would apply it.
    #[arg(long)]
    pub profile: PathBuf,
    /// The repository: a URL (https, ssh, file://) or a local path.
    #[arg(long)]
    pub repo: String,
    /// The revision: a commit SHA, or a tag or branch name resolved in the repository (as Argo CD does).
    #[arg(long)]
    pub revision: String,
    /// The source's path in the repository (where source materials are looked for).
    #[arg(long)]
    pub path: Option<String>,
    /// The last verified revision, to check for a downgrade.
    #[arg(long)]
    pub previous: Option<String>,
    /// The Argo CD AppProject the repository is used from (from `--resources` or the cluster): its
    /// sourceRepos must permit the repository, and only then are its project-scoped repository Secrets
    /// used.
    #[arg(long)]
    pub project: Option<String>,
    #[command(flatten)]
    pub objects: super::Referenced,
    /// Where remote repositories are cached.
    #[arg(long, env = "WEFT_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

pub fn run(args: Args) -> u8 {
    match verify(&args) {
        Ok(verdict) => {
            print_verdict(&verdict, args.output);
            match verdict.outcome {
                Outcome::Verified => EXIT_VERIFIED,
                Outcome::Misconfigured => EXIT_BAD_INPUT,
                Outcome::Failed | Outcome::Retry => EXIT_FAILED,
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            if let Output::Json = args.output {
                say!("{}", serde_json::to_string_pretty(&e.to_json()).unwrap_or_default());
            }
            EXIT_BAD_INPUT
        }
    }
}

fn verify(args: &Args) -> Result<SourceVerdict, InputError> {
    let profile = load_profile(&args.profile)?;
    let referenced = args.objects.referenced(&profile, args.project.as_deref())?;
    let project = super::project_rules(&referenced, args.project.as_deref(), true)?;
    let verifier =
        SourceVerifier::new(args.cache_dir.clone().unwrap_or_else(crate::source::fetch::default_cache_dir), 64);

    // A symbolic revision is resolved the way Argo CD does, and kept as the target revision.
    let (revision, target_revision) = match CommitId::parse(&args.revision) {
        Some(id) => (id, None),
        None => {
            let creds = crate::source::verify::access(&referenced, &args.repo, project);
            let repo = verifier
                .repos
                .open(&args.repo, &[], Some(&creds), true)
                .map_err(|e| InputError::Other(e.to_string()))?;
            let id = repo.resolve(&args.revision).map_err(|e| InputError::Other(e.to_string()))?;
            (id, Some(args.revision.clone()))
        }
    };
    let previous = match &args.previous {
        Some(p) => Some(
            CommitId::parse(p)
                .ok_or_else(|| InputError::Other(format!("--previous {p:?} is not a full commit SHA")))?,
        ),
        None => None,
    };
    let policies = profile
        .spec
        .source_integrity
        .as_ref()
        .and_then(|s| s.git.as_ref())
        .map(|g| g.policies.clone())
        .unwrap_or_default();
    let request = SourceRequest {
        repo_url: &args.repo,
        revision: &revision,
        path: args.path.as_deref(),
        target_revision: target_revision.as_deref(),
        previous: previous.as_ref(),
        project,
    };
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    Ok(verifier.verify(&policies, &referenced, &request, now))
}

fn print_verdict(v: &SourceVerdict, output: Output) {
    match output {
        Output::Json => match serde_json::to_string_pretty(v) {
            Ok(s) => say!("{s}"),
            Err(e) => eprintln!("error: cannot render the verdict as JSON: {e}"),
        },
        Output::Text => {
            let mark = match v.outcome {
                Outcome::Verified => "VERIFIED",
                Outcome::Failed => "FAILED",
                Outcome::Misconfigured => "MISCONFIGURED",
                Outcome::Retry => "UNAVAILABLE",
            };
            let policy = match (v.policy, v.mode) {
                (Some(i), Some(m)) => format!(" (policy #{i}, gpg.mode {m})"),
                _ => String::new(),
            };
            say!("{mark} {} @ {}{policy}", v.repo_url, v.commit);
            say!("  reason:  {}", v.reason);
            say!("  {}", v.message);
            if let Some(h) = &v.history
                && !h.signers.is_empty()
            {
                say!("  signers: {}", h.signers.iter().cloned().collect::<Vec<_>>().join("; "));
            }
            say!("  took {} ms", v.millis);
        }
    }
}
