//! `weft verify-images`: the controller's image verification, from the command line, for rendered
//! manifests or for image references.

use std::path::{Path, PathBuf};

use super::{EXIT_BAD_INPUT, EXIT_FAILED, EXIT_VERIFIED, InputError, load_profile, read};
use crate::images::policy::{ImagePolicies, Override};
use crate::images::{self, ImageVerifier, collect};
use crate::render::manifest::{self, Limits};
use crate::status::StepState;

#[derive(clap::Args, Debug)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["manifests", "images"]))]
pub struct Args {
    /// An IntegrityProfile, as you would apply it.
    #[arg(long)]
    pub profile: PathBuf,
    #[command(flatten)]
    pub objects: super::Referenced,
    #[command(flatten)]
    pub layouts: super::ImageLayouts,
    /// Rendered manifests: a YAML file, or a directory of them (searched recursively).
    #[arg(long)]
    pub manifests: Option<PathBuf>,
    /// Image references to verify.
    pub images: Vec<String>,
    /// An Application's `weft.dev/image-verification` override (JSON or YAML), to check as it would.
    #[arg(long = "override")]
    pub override_: Option<String>,
    #[arg(long, value_enum, default_value_t = super::verify_source::Output::Text)]
    pub output: super::verify_source::Output,
}

pub fn run(args: Args) -> u8 {
    match verify(&args) {
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

fn verify(args: &Args) -> Result<u8, InputError> {
    let profile = load_profile(&args.profile)?;
    let Some(iv) = &profile.spec.image_verification else {
        return Err(InputError::Other("the profile has no imageVerification".into()));
    };
    let referenced = args.objects.referenced(&profile, None)?;
    let mut policies = ImagePolicies::compile(iv, &referenced).map_err(|e| InputError::Other(e.to_string()))?;
    if let Some(text) = &args.override_ {
        let o = Override::parse(text).map_err(|e| InputError::Other(e.to_string()))?;
        policies.tighten(&o).map_err(|e| InputError::Other(e.to_string()))?;
    }
    let found = match &args.manifests {
        Some(path) => collect::distinct(collect::uses(&load_manifests(path)?)),
        None => args.images.iter().map(|i| (i.clone(), vec!["the command line".to_string()])).collect(),
    };
    let runtime = tokio::runtime::Runtime::new().map_err(|e| InputError::Other(e.to_string()))?;
    let statuses = runtime.block_on(
        ImageVerifier::default().with_layouts(args.layouts.image_layouts.iter().cloned()).verify(&policies, &found),
    );
    let report = images::report(policies.enforcement, &statuses);
    match args.output {
        super::verify_source::Output::Json => {
            let out = serde_json::json!({
                "state": format!("{:?}", report.state), "reason": report.reason, "message": report.message,
                "enforcement": policies.enforcement.as_str(), "images": statuses,
            });
            say!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        }
        super::verify_source::Output::Text => {
            for s in &statuses {
                let at = s.digest.as_deref().map(|d| format!(" @ {d}")).unwrap_or_default();
                say!("{:?} {}{at}", s.outcome, s.image);
                say!("  {}: {}", s.reason, s.message);
            }
            let mark = match report.state {
                StepState::Passed => "VERIFIED",
                StepState::Permitted => "PERMITTED",
                StepState::Pending => "UNAVAILABLE",
                _ => "FAILED",
            };
            say!("{mark} ({} enforcement): {}", policies.enforcement.as_str(), report.reason);
        }
    }
    Ok(if report.state == StepState::Passed { EXIT_VERIFIED } else { EXIT_FAILED })
}

/// Every document of a YAML file, or of every `.yaml`, `.yml` and `.json` file under a directory.
fn load_manifests(path: &Path) -> Result<Vec<manifest::Manifest>, InputError> {
    let mut files = Vec::new();
    if path.is_dir() {
        let mut stack = vec![path.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let entries = std::fs::read_dir(&dir)
                .map_err(|e| InputError::Read { path: dir.display().to_string(), reason: e.to_string() })?;
            for entry in entries.flatten() {
                let p = entry.path();
                if entry.file_name().to_string_lossy().starts_with('.') {
                    continue; // .git and the like
                }
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json") {
                    files.push(p);
                }
            }
        }
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    let mut out = Vec::new();
    for f in files {
        let name = f.display().to_string();
        out.extend(
            manifest::parse(&name, &read(&f)?, Limits::default()).map_err(|e| InputError::Other(e.to_string()))?,
        );
    }
    Ok(out)
}
