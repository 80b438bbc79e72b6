//! The one-shot commands (`weft verify-source`, …): they read an IntegrityProfile as users apply it,
//! and the objects it refers to from the cluster or from a YAML file, and print a verdict.
//!
//! Exit codes: 0 verified, 1 verification failed, 2 bad input or configuration, 141 when the reader of
//! the output went away (`weft … | head`).

/// `println!` for the commands' output: see [`print_out`]. (Defined before the command modules, so in
/// scope in each.)
macro_rules! say {
    () => { $crate::commands::print_out(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::commands::print_out(format_args!("{}\n", format_args!($($arg)*))) };
}

pub mod provenance;
pub mod run;
pub mod verify_images;
pub mod verify_source;

use std::path::Path;

use serde_json::Value;
use thiserror::Error;

use crate::reason::Reason;
use crate::referenced::{ReferenceError, ReferencedObjects};
use crate::resources::profile::IntegrityProfile;

pub const EXIT_VERIFIED: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_BAD_INPUT: u8 = 2;
/// 128 + SIGPIPE: what a shell reports for a command stopped by a closed pipe.
pub const EXIT_OUTPUT_CLOSED: i32 = 141;

/// Writes to stdout. When the reader has gone away (`weft verify-source … | head`), the command stops at
/// once, quietly, with [`EXIT_OUTPUT_CLOSED`] (never as success: under `pipefail` a verdict that was cut
/// short is not taken for a pass), where `println!` would panic.
pub fn print_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("error: cannot write the output: {e}");
        }
        std::process::exit(EXIT_OUTPUT_CLOSED);
    }
}

#[derive(Debug, Error)]
pub enum InputError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path} is not an IntegrityProfile: {reason}")]
    NotAProfile { path: String, reason: String },
    #[error("{path}: the profile is invalid:\n{problems}")]
    Invalid { path: String, problems: String },
    #[error("{path}: the profile has fields the schema does not know (kubectl apply would reject them too):\n{fields}")]
    UnknownFields { path: String, fields: String },
    #[error(transparent)]
    Deref(#[from] ReferenceError),
    #[error(
        "cannot reach the cluster for the profile's Secrets and ConfigMaps (use --resources FILE to work without one): {0}"
    )]
    Cluster(String),
    #[error("{0}")]
    Other(String),
}

impl InputError {
    /// A CamelCase reason, as in conditions (for `--output json`).
    pub fn reason(&self) -> Reason {
        match self {
            InputError::Read { .. } => Reason::InputUnreadable,
            InputError::NotAProfile { .. } | InputError::Invalid { .. } | InputError::UnknownFields { .. } => {
                Reason::InvalidProfile
            }
            InputError::Deref(e) => e.reason(),
            InputError::Cluster(_) => Reason::ClusterUnreachable,
            InputError::Other(_) => Reason::InvalidInput,
        }
    }

    /// The error as the JSON verdict of a command run with `--output json`.
    pub fn to_json(&self) -> Value {
        serde_json::json!({"outcome": "Misconfigured", "reason": self.reason(), "message": self.to_string()})
    }
}

pub fn read(path: &Path) -> Result<String, InputError> {
    std::fs::read_to_string(path)
        .map_err(|e| InputError::Read { path: path.display().to_string(), reason: e.to_string() })
}

/// Reads a profile file and checks it as the apiserver would: the schema (a wrong type or value names
/// its field), the CEL rules, and no field the schema does not know (a misspelt requirement would
/// otherwise silently drop out).
pub fn load_profile(path: &Path) -> Result<IntegrityProfile, InputError> {
    let text = read(path)?;
    let shown = path.display().to_string();
    let raw: Value = serde_saphyr::from_str(&text)
        .map_err(|e| InputError::NotAProfile { path: shown.clone(), reason: e.to_string() })?;
    if raw.get("kind").and_then(Value::as_str) != Some("IntegrityProfile") {
        return Err(InputError::NotAProfile { path: shown, reason: "kind is not IntegrityProfile".into() });
    }
    let profile: IntegrityProfile = serde_path_to_error::deserialize(raw.clone()).map_err(|e| {
        let at = e.path().to_string();
        InputError::Invalid { path: shown.clone(), problems: format!("  {at}: {}", e.into_inner()) }
    })?;
    let mut unknown = Vec::new();
    let known = serde_json::to_value(&profile).unwrap_or(Value::Null);
    unknown_fields(
        "spec",
        raw.get("spec").unwrap_or(&Value::Null),
        known.get("spec").unwrap_or(&Value::Null),
        &mut unknown,
    );
    if !unknown.is_empty() {
        let fields = unknown.iter().map(|f| format!("  unknown field {f}")).collect::<Vec<_>>().join("\n");
        return Err(InputError::UnknownFields { path: shown, fields });
    }
    if let Err(errors) = kube::core::cel::validate_cel(&profile) {
        let problems = errors
            .into_vec()
            .iter()
            .map(|e| format!("  {}: {}", e.field_path, e.message))
            .collect::<Vec<_>>()
            .join("\n");
        return Err(InputError::Invalid { path: shown, problems });
    }
    Ok(profile)
}

/// Paths present in `raw` but not in `known` (what deserialization dropped).
fn unknown_fields(prefix: &str, raw: &Value, known: &Value, out: &mut Vec<String>) {
    match (raw, known) {
        (Value::Object(r), Value::Object(k)) => {
            for (key, rv) in r {
                let path = format!("{prefix}.{key}");
                match k.get(key) {
                    Some(kv) => unknown_fields(&path, rv, kv, out),
                    None if !rv.is_null() => out.push(path),
                    None => {}
                }
            }
        }
        (Value::Array(r), Value::Array(k)) => {
            for (i, (rv, kv)) in r.iter().zip(k).enumerate() {
                unknown_fields(&format!("{prefix}[{i}]"), rv, kv, out);
            }
        }
        _ => {}
    }
}

/// Images read from OCI image layouts instead of their registries.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ImageLayouts {
    /// Read an image from an OCI image layout (as `cosign save` writes one) instead of its registry:
    /// `REPOSITORY=DIR`, e.g. `registry.example.com/shop/cart=./cart.oci`. Repeatable.
    #[arg(long = "image-layout", value_name = "REPOSITORY=DIR", value_parser = image_layout)]
    pub image_layouts: Vec<(String, std::path::PathBuf)>,
}

fn image_layout(s: &str) -> Result<(String, std::path::PathBuf), String> {
    match s.split_once('=') {
        Some((name, dir)) if !name.is_empty() && !dir.is_empty() => Ok((name.to_string(), dir.into())),
        _ => Err(format!("{s:?}: expected REPOSITORY=DIR, e.g. registry.example.com/shop/cart=./cart.oci")),
    }
}

/// Where the objects a profile refers to come from: `--resources`, or the cluster.
#[derive(clap::Args, Debug, Clone)]
pub struct Referenced {
    /// YAML documents with the Secrets and ConfigMaps the profile refers to (instead of the cluster).
    #[arg(long)]
    pub resources: Option<std::path::PathBuf>,
    /// Namespace of Argo CD's repository Secrets and AppProjects, when reading from the cluster.
    #[arg(long, env = "WEFT_ARGOCD_NAMESPACE", default_value = "argocd")]
    pub argocd_namespace: String,
}

impl Referenced {
    /// The profile's objects, and the AppProject `project` when one is named.
    pub fn referenced(
        &self,
        profile: &IntegrityProfile,
        project: Option<&str>,
    ) -> Result<ReferencedObjects, InputError> {
        load_bag(self.resources.as_deref(), profile, &self.argocd_namespace, project)
    }
}

/// The AppProject the command works for: `--project` (or the Application's project) must be in the
/// resources or the cluster; without one, sourceRepos are not checked and project-scoped repository
/// Secrets are not used (the command says so).
pub fn project_rules<'b>(
    referenced: &'b ReferencedObjects,
    name: Option<&str>,
    required: bool,
) -> Result<Option<&'b crate::repository::access::ProjectRules>, InputError> {
    match name {
        Some(n) => match referenced.projects.get(n) {
            Some(rules) => Ok(Some(rules)),
            None if required => Err(InputError::Other(format!(
                "AppProject {n} is not in the resources or the cluster; give it (kind AppProject) to check what the project permits"
            ))),
            None => {
                eprintln!(
                    "note: AppProject {n} was not given: its sourceRepos are not checked, and project-scoped repository Secrets are not used"
                );
                Ok(None)
            }
        },
        None => Ok(None),
    }
}

/// The profile's referenced objects: from `--resources` when given, else from the cluster.
pub fn load_bag(
    resources: Option<&Path>,
    profile: &IntegrityProfile,
    argocd_namespace: &str,
    project: Option<&str>,
) -> Result<ReferencedObjects, InputError> {
    if let Some(path) = resources {
        return Ok(ReferencedObjects::from_yaml(&read(path)?)?);
    }
    let namespace = profile.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| InputError::Other(e.to_string()))?;
    runtime.block_on(async {
        let client = kube::Client::try_default().await.map_err(|e| InputError::Cluster(e.to_string()))?;
        Ok(crate::kubernetes::referenced::referenced(&client, &namespace, &profile.spec, argocd_namespace, project)
            .await?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_found_at_any_depth() {
        let raw = serde_json::json!({"a": 1, "typo": 2, "list": [{"x": 1, "y": 2}], "n": null});
        let known = serde_json::json!({"a": 1, "list": [{"x": 1}]});
        let mut out = Vec::new();
        unknown_fields("spec", &raw, &known, &mut out);
        assert_eq!(out, ["spec.list[0].y", "spec.typo"]);
    }
}
