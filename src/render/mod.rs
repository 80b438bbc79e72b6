//! Rendering manifests from the verified trees, as Argo CD would: plain directories (recursive,
//! include/exclude globs), Kustomize (the real `kustomize`, with the Application's kustomize options
//! applied to the kustomization) and Helm (the real `helm template`, with values, value files — `$ref/…`
//! from another source — and parameters).
//!
//! Only what verification pinned is rendered: each source is exported from its verified commit (never a
//! working copy), symlinks that leave the checkout are not materialized, and kustomize remote bases are
//! fetched from the local mirrors at the commits source verification pinned.

pub mod manifest;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde_json::{Value, json};
use thiserror::Error;

use crate::reason::Reason;
use crate::resources::argocd::ApplicationSource;
use crate::source::CommitId;
use crate::source::repo::{FileKind, Repo};
use manifest::{Limits, Manifest};

#[derive(Debug, Error)]
pub enum RenderError {
    #[error("cannot export commit {commit} of {repo}: {reason}")]
    Export { repo: String, commit: String, reason: String },
    #[error("source path {path:?} does not exist in commit {commit} of {repo}")]
    NoPath { repo: String, commit: String, path: String },
    #[error("{tool} failed for {what}: {reason}")]
    Tool { tool: &'static str, what: String, reason: String },
    #[error("{tool} is not installed (looked for {program:?}); it renders {what}")]
    ToolMissing { tool: &'static str, program: String, what: String },
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    #[error("{0}")]
    Unsupported(String),
    #[error("invalid {what}: {reason}")]
    BadOption { what: String, reason: String },
}

impl RenderError {
    pub fn reason(&self) -> Reason {
        match self {
            RenderError::Export { .. } => Reason::SourceExportFailed,
            RenderError::NoPath { .. } => Reason::SourcePathMissing,
            RenderError::Tool { .. } => Reason::RenderFailed,
            RenderError::ToolMissing { .. } => Reason::RenderToolMissing,
            RenderError::Manifest(e) => e.reason(),
            RenderError::Unsupported(_) => Reason::RenderUnsupported,
            RenderError::BadOption { .. } => Reason::InvalidRenderOption,
        }
    }
}

crate::status::step_error!(RenderError);

/// The renderers' programs.
#[derive(Clone, Debug)]
pub struct Tools {
    pub kustomize: String,
    pub helm: String,
}

impl Default for Tools {
    fn default() -> Self {
        Tools {
            kustomize: std::env::var("WEFT_KUSTOMIZE").unwrap_or_else(|_| "kustomize".into()),
            helm: std::env::var("WEFT_HELM").unwrap_or_else(|_| "helm".into()),
        }
    }
}

/// A source ready to render: its declaration and where its verified tree was exported.
pub struct Checkout {
    pub source: ApplicationSource,
    pub dir: PathBuf,
}

/// What a render needs to know about the Application.
pub struct AppContext<'a> {
    pub name: &'a str,
    pub destination_namespace: Option<&'a str>,
    pub kube_version: Option<&'a str>,
}

/// A kustomize remote base, pinned: kustomize's fetch of `repo_url` is served from `mirror` at `commit`.
pub struct PinnedRemote {
    pub repo_url: String,
    pub mirror: PathBuf,
    pub commit: CommitId,
}

/// Writes the tree of `commit` into `dest` (created). Symlinks are kept only when they stay inside the
/// tree; submodules are not fetched.
pub fn export(repo: &Repo, commit: &CommitId, dest: &Path) -> Result<(), RenderError> {
    let err = |reason: String| RenderError::Export {
        repo: repo.inner().path().display().to_string(),
        commit: commit.to_string(),
        reason,
    };
    let files = repo.files_under(commit, "").map_err(|e| err(e.to_string()))?.unwrap_or_default();
    for f in files {
        let Some(rel) = crate::source::repo::contained(&f.path) else { continue };
        let path = dest.join(&rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| err(e.to_string()))?;
        }
        match f.kind {
            FileKind::Regular | FileKind::Executable => {
                let data = repo.blob(&f.id).map_err(|e| err(e.to_string()))?;
                std::fs::write(&path, data).map_err(|e| err(format!("{rel}: {e}")))?;
            }
            FileKind::Symlink => {
                let target = String::from_utf8_lossy(&repo.blob(&f.id).map_err(|e| err(e.to_string()))?).into_owned();
                let base = Path::new(&rel).parent().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
                let joined = if base.is_empty() { target.clone() } else { format!("{base}/{target}") };
                if !target.starts_with('/') && crate::source::repo::contained(&joined).is_some() {
                    #[cfg(unix)]
                    std::os::unix::fs::symlink(&target, &path).map_err(|e| err(format!("{rel}: {e}")))?;
                }
            }
            FileKind::Submodule => {}
        }
    }
    Ok(())
}

/// Renders every source of the Application (sources with `ref` only provide files to the others).
pub fn render(
    app: &AppContext,
    checkouts: &[Checkout],
    remotes: &[PinnedRemote],
    tools: &Tools,
    limits: Limits,
) -> Result<Vec<Manifest>, RenderError> {
    let refs: BTreeMap<String, &Path> =
        checkouts.iter().filter_map(|c| c.source.r#ref.as_ref().map(|r| (r.clone(), c.dir.as_path()))).collect();
    let mut out = Vec::new();
    for c in checkouts {
        // A `ref` source without a path only lends its files ($ref/...) to the others.
        if c.source.r#ref.is_some() && c.source.path.as_deref().is_none_or(str::is_empty) {
            continue;
        }
        let rel = c.source.path.as_deref().unwrap_or(".");
        let dir = match crate::source::repo::contained(rel) {
            Some(r) => c.dir.join(r),
            None if rel == "." || rel.is_empty() => c.dir.clone(),
            None => {
                return Err(RenderError::BadOption {
                    what: "source path".into(),
                    reason: format!("{rel:?} leaves the repository"),
                });
            }
        };
        if !dir.is_dir() {
            return Err(RenderError::NoPath {
                repo: c.source.repo_url.clone(),
                commit: String::new(),
                path: rel.into(),
            });
        }
        let what = format!("{} path {rel}", c.source.repo_url);
        let rendered = if c.source.helm.is_some() || dir.join("Chart.yaml").exists() {
            helm(app, c, &dir, &refs, tools, &what)?
        } else if c.source.kustomize.is_some()
            || crate::source::kustomize::KUSTOMIZATION_FILES.iter().any(|f| dir.join(f).exists())
        {
            kustomize(c, &dir, remotes, tools, &what)?
        } else if c.source.plugin.is_some() {
            return Err(RenderError::Unsupported(format!(
                "{what}: config management plugins are not supported; render with Kustomize, Helm or plain directories"
            )));
        } else {
            directory(c, &dir, limits)?
        };
        out.extend(match rendered {
            Rendered::Text(text) => manifest::parse(&what, &text, limits)?,
            Rendered::Manifests(m) => m,
        });
    }
    Ok(out)
}

enum Rendered {
    Text(String),
    Manifests(Vec<Manifest>),
}

fn run(tool: &'static str, program: &str, what: &str, cmd: &mut Command) -> Result<String, RenderError> {
    let out = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            RenderError::ToolMissing { tool, program: program.into(), what: what.into() }
        } else {
            RenderError::Tool { tool, what: what.into(), reason: e.to_string() }
        }
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        let reason = lines[lines.len().saturating_sub(3)..].join(" / ");
        return Err(RenderError::Tool {
            tool,
            what: what.into(),
            reason: if reason.is_empty() { "failed".into() } else { reason },
        });
    }
    String::from_utf8(out.stdout).map_err(|_| RenderError::Tool {
        tool,
        what: what.into(),
        reason: "output is not UTF-8".into(),
    })
}

/// Argo CD's directory source: YAML and JSON files, optionally recursive, filtered by include/exclude.
fn directory(c: &Checkout, dir: &Path, limits: Limits) -> Result<Rendered, RenderError> {
    let opts = c.source.directory.clone().unwrap_or(Value::Null);
    let recurse = opts.get("recurse").and_then(Value::as_bool).unwrap_or(false);
    let globs = |key: &str| -> Result<Option<GlobSet>, RenderError> {
        let Some(p) = opts.get(key).and_then(Value::as_str).filter(|p| !p.is_empty()) else { return Ok(None) };
        let mut b = GlobSetBuilder::new();
        b.add(
            Glob::new(p)
                .map_err(|e| RenderError::BadOption { what: format!("directory.{key}"), reason: e.to_string() })?,
        );
        Ok(Some(
            b.build()
                .map_err(|e| RenderError::BadOption { what: format!("directory.{key}"), reason: e.to_string() })?,
        ))
    };
    let (include, exclude) = (globs("include")?, globs("exclude")?);
    if opts.get("jsonnet").is_some_and(|j| !j.is_null() && j.as_object().is_some_and(|o| !o.is_empty())) {
        return Err(RenderError::Unsupported("jsonnet directory sources are not supported".into()));
    }
    let mut files = Vec::new();
    walk(dir, dir, recurse, &mut files).map_err(|e| RenderError::Export {
        repo: c.source.repo_url.clone(),
        commit: String::new(),
        reason: e.to_string(),
    })?;
    files.sort();
    let mut out = Vec::new();
    for rel in files {
        let name = rel.to_string_lossy().replace('\\', "/");
        if name.ends_with(".jsonnet") || name.ends_with(".libsonnet") {
            return Err(RenderError::Unsupported(format!("{name}: jsonnet is not supported")));
        }
        let is_manifest = name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json");
        if !is_manifest
            || include.as_ref().is_some_and(|g| !g.is_match(&name))
            || exclude.as_ref().is_some_and(|g| g.is_match(&name))
        {
            continue;
        }
        let text = std::fs::read_to_string(dir.join(&rel)).map_err(|e| RenderError::Export {
            repo: c.source.repo_url.clone(),
            commit: String::new(),
            reason: format!("{name}: {e}"),
        })?;
        out.extend(manifest::parse(&format!("{} {name}", c.source.repo_url), &text, limits)?);
    }
    Ok(Rendered::Manifests(out))
}

fn walk(root: &Path, dir: &Path, recurse: bool, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let meta = std::fs::metadata(&path);
        match meta {
            Ok(m) if m.is_dir() && recurse => walk(root, &path, recurse, out)?,
            Ok(m) if m.is_file() => out.push(path.strip_prefix(root).unwrap_or(&path).to_path_buf()),
            _ => {}
        }
    }
    Ok(())
}

/// `kustomize build`, with the Application's kustomize options written into the kustomization (as
/// Argo CD's `kustomize edit` does), and remote bases served from the pinned mirrors.
fn kustomize(
    c: &Checkout,
    dir: &Path,
    remotes: &[PinnedRemote],
    tools: &Tools,
    what: &str,
) -> Result<Rendered, RenderError> {
    let file = crate::source::kustomize::KUSTOMIZATION_FILES.iter().map(|f| dir.join(f)).find(|p| p.exists());
    let opts = c.source.kustomize.clone().unwrap_or(Value::Null);
    let mut cmd = Command::new(&tools.kustomize);
    if let Some(file) = &file {
        let text = std::fs::read_to_string(file).map_err(|e| RenderError::Tool {
            tool: "kustomize",
            what: what.into(),
            reason: e.to_string(),
        })?;
        let mut k: Value = serde_saphyr::from_str(&text)
            .map_err(|e| RenderError::BadOption { what: "kustomization".into(), reason: e.to_string() })?;
        apply_kustomize_options(&mut k, &opts)?;
        pin_remote_bases(&mut k, remotes);
        let yaml = serde_saphyr::to_string(&k)
            .map_err(|e| RenderError::BadOption { what: "kustomization".into(), reason: e.to_string() })?;
        std::fs::write(file, yaml).map_err(|e| RenderError::Tool {
            tool: "kustomize",
            what: what.into(),
            reason: e.to_string(),
        })?;
    }
    // Remote bases resolve to the local mirrors Weft verified (git's insteadOf), never the network; the
    // mirrors serve the pinned commits by id (the upload-pack git spawns reads the same environment).
    // Replace refs in a mirror never stand in for the pinned objects (Weft verified the objects themselves).
    cmd.env("GIT_CONFIG_COUNT", (remotes.len() + 1).to_string())
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_NO_REPLACE_OBJECTS", "1");
    cmd.env(format!("GIT_CONFIG_KEY_{}", remotes.len()), "uploadpack.allowAnySHA1InWant")
        .env(format!("GIT_CONFIG_VALUE_{}", remotes.len()), "true");
    for (i, r) in remotes.iter().enumerate() {
        cmd.env(format!("GIT_CONFIG_KEY_{i}"), format!("url.file://{}.insteadOf", r.mirror.display()));
        cmd.env(format!("GIT_CONFIG_VALUE_{i}"), &r.repo_url);
    }
    cmd.arg("build").arg(dir);
    run("kustomize", &tools.kustomize, what, &mut cmd).map(Rendered::Text)
}

/// Rewrites remote-base refs to the commits verification pinned.
fn pin_remote_bases(k: &mut Value, remotes: &[PinnedRemote]) {
    for key in ["resources", "bases", "components"] {
        let Some(items) = k.get_mut(key).and_then(Value::as_array_mut) else { continue };
        for item in items {
            let Some(entry) = item.as_str() else { continue };
            let Some(base) = crate::source::kustomize::parse_remote(entry, "") else { continue };
            if let Some(pin) = remotes.iter().find(|r| r.repo_url == base.repo_url) {
                let path = base.path.map(|p| format!("//{p}")).unwrap_or_default();
                *item = Value::String(format!("{}{path}?ref={}", base.repo_url, pin.commit));
            }
        }
    }
}

fn apply_kustomize_options(k: &mut Value, opts: &Value) -> Result<(), RenderError> {
    let Some(o) = opts.as_object() else { return Ok(()) };
    let obj = k
        .as_object_mut()
        .ok_or_else(|| RenderError::BadOption { what: "kustomization".into(), reason: "not a map".into() })?;
    for key in ["namePrefix", "nameSuffix", "namespace"] {
        if let Some(v) = o.get(key).filter(|v| v.as_str().is_some_and(|s| !s.is_empty())) {
            obj.insert(key.into(), v.clone());
        }
    }
    for (src, dst) in [("commonLabels", "commonLabels"), ("commonAnnotations", "commonAnnotations")] {
        if let Some(Value::Object(m)) = o.get(src) {
            let target = obj.entry(dst).or_insert_with(|| json!({}));
            if let Some(t) = target.as_object_mut() {
                t.extend(m.clone());
            }
        }
    }
    if let Some(Value::Array(images)) = o.get("images") {
        let list = obj.entry("images").or_insert_with(|| json!([]));
        for spec in images.iter().filter_map(Value::as_str) {
            // [old_name=]new_name[:tag|@digest], as `kustomize edit set image`.
            let (name, new) = spec.split_once('=').unwrap_or((spec, spec));
            let (new_name, tag, digest) = match new.split_once('@') {
                Some((n, d)) => (n, None, Some(d)),
                None => match new.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
                    Some((n, t)) => (n, Some(t), None),
                    None => (new, None, None),
                },
            };
            let base = name.split(['@', ':']).next().unwrap_or(name);
            let mut entry = json!({"name": base, "newName": new_name});
            if let Some(t) = tag {
                entry["newTag"] = json!(t);
            }
            if let Some(d) = digest {
                entry["digest"] = json!(d);
            }
            if let Some(arr) = list.as_array_mut() {
                arr.retain(|e| e.get("name").and_then(Value::as_str) != Some(base));
                arr.push(entry);
            }
        }
    }
    if let Some(Value::Array(replicas)) = o.get("replicas") {
        obj.insert("replicas".into(), Value::Array(replicas.clone()));
    }
    for key in ["patches", "components"] {
        if let Some(Value::Array(items)) = o.get(key) {
            let list = obj.entry(key).or_insert_with(|| json!([]));
            if let Some(arr) = list.as_array_mut() {
                arr.extend(items.iter().cloned());
            }
        }
    }
    Ok(())
}

/// `helm template`, as Argo CD runs it.
fn helm(
    app: &AppContext,
    c: &Checkout,
    dir: &Path,
    refs: &BTreeMap<String, &Path>,
    tools: &Tools,
    what: &str,
) -> Result<Rendered, RenderError> {
    let opts = c.source.helm.clone().unwrap_or(Value::Null);
    let chart = std::fs::read_to_string(dir.join("Chart.yaml")).unwrap_or_default();
    if chart.contains("dependencies:") && !dir.join("charts").is_dir() {
        return Err(RenderError::Unsupported(format!(
            "{what}: the chart declares dependencies but vendors none (charts/); Weft renders only verified content, so vendor them into the repository"
        )));
    }
    let release = opts.get("releaseName").and_then(Value::as_str).filter(|s| !s.is_empty()).unwrap_or(app.name);
    let namespace = opts
        .get("namespace")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .or(app.destination_namespace)
        .unwrap_or("default");
    let mut cmd = Command::new(&tools.helm);
    cmd.args(["template", release]).arg(dir).args(["--namespace", namespace]);
    // Helm must not reach out: no repositories, no plugins; its home is a throwaway directory.
    let home = tempfile::tempdir().map_err(|e| RenderError::Tool {
        tool: "helm",
        what: what.into(),
        reason: e.to_string(),
    })?;
    for (k, sub) in [("HELM_CACHE_HOME", "cache"), ("HELM_CONFIG_HOME", "config"), ("HELM_DATA_HOME", "data")] {
        cmd.env(k, home.path().join(sub));
    }
    if !opts.get("skipCrds").and_then(Value::as_bool).unwrap_or(false) {
        cmd.arg("--include-crds");
    }
    if opts.get("skipTests").and_then(Value::as_bool).unwrap_or(false) {
        cmd.arg("--skip-tests");
    }
    if let Some(v) = opts.get("kubeVersion").and_then(Value::as_str).or(app.kube_version) {
        cmd.args(["--kube-version", v]);
    }
    for v in opts.get("apiVersions").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        cmd.args(["--api-versions", v]);
    }
    let ignore_missing = opts.get("ignoreMissingValueFiles").and_then(Value::as_bool).unwrap_or(false);
    for f in opts.get("valueFiles").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        let path = value_file(f, dir, refs)?;
        if !path.exists() {
            if ignore_missing {
                continue;
            }
            return Err(RenderError::BadOption {
                what: "helm.valueFiles".into(),
                reason: format!("{f} does not exist in the verified tree"),
            });
        }
        cmd.arg("--values").arg(path);
    }
    let inline = match opts.get("valuesObject") {
        Some(v) if !v.is_null() => Some(serde_saphyr::to_string(v).unwrap_or_default()),
        _ => opts.get("values").and_then(Value::as_str).filter(|s| !s.trim().is_empty()).map(str::to_string),
    };
    if let Some(values) = inline {
        let path = home.path().join("inline-values.yaml");
        std::fs::write(&path, values).map_err(|e| RenderError::Tool {
            tool: "helm",
            what: what.into(),
            reason: e.to_string(),
        })?;
        cmd.arg("--values").arg(path);
    }
    for p in opts.get("parameters").and_then(Value::as_array).into_iter().flatten() {
        let (Some(name), value) =
            (p.get("name").and_then(Value::as_str), p.get("value").and_then(Value::as_str).unwrap_or(""))
        else {
            continue;
        };
        let flag =
            if p.get("forceString").and_then(Value::as_bool).unwrap_or(false) { "--set-string" } else { "--set" };
        cmd.args([flag, &format!("{name}={value}")]);
    }
    for p in opts.get("fileParameters").and_then(Value::as_array).into_iter().flatten() {
        let (Some(name), Some(path)) = (p.get("name").and_then(Value::as_str), p.get("path").and_then(Value::as_str))
        else {
            continue;
        };
        cmd.args(["--set-file", &format!("{name}={}", value_file(path, dir, refs)?.display())]);
    }
    run("helm", &tools.helm, what, &mut cmd).map(Rendered::Text)
}

/// A value file: relative to the chart, or `$<ref>/path` in another source's verified tree.
fn value_file(f: &str, chart_dir: &Path, refs: &BTreeMap<String, &Path>) -> Result<PathBuf, RenderError> {
    let bad = |reason: String| RenderError::BadOption { what: "helm value file".into(), reason };
    if let Some(rest) = f.strip_prefix('$') {
        let (name, path) = rest.split_once('/').ok_or_else(|| bad(format!("{f:?} names no file")))?;
        let root = refs
            .get(name)
            .ok_or_else(|| bad(format!("{f:?} refers to source ref {name:?}, which the Application does not have")))?;
        let rel = crate::source::repo::contained(path).ok_or_else(|| bad(format!("{f:?} leaves the source")))?;
        return Ok(root.join(rel));
    }
    if f.starts_with("http://") || f.starts_with("https://") {
        return Err(bad(format!("{f:?} is remote; Weft renders only verified content")));
    }
    let rel = crate::source::repo::contained(f).ok_or_else(|| bad(format!("{f:?} leaves the chart directory")))?;
    Ok(chart_dir.join(rel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kustomize_options_are_written_into_the_kustomization() {
        let mut k = json!({"resources": ["a.yaml"], "images": [{"name": "nginx", "newTag": "1"}]});
        let opts = json!({"namePrefix": "p-", "namespace": "shop", "images": ["nginx=registry.example/nginx:1.27", "busybox@sha256:abc"],
                          "commonLabels": {"team": "a"}});
        apply_kustomize_options(&mut k, &opts).unwrap();
        assert_eq!(k["namePrefix"], "p-");
        assert_eq!(k["namespace"], "shop");
        assert_eq!(k["commonLabels"]["team"], "a");
        let images = k["images"].as_array().unwrap();
        assert_eq!(images.len(), 2);
        assert!(images.contains(&json!({"name": "nginx", "newName": "registry.example/nginx", "newTag": "1.27"})));
        assert!(images.contains(&json!({"name": "busybox", "newName": "busybox", "digest": "sha256:abc"})));
    }

    #[test]
    fn remote_bases_are_pinned_to_verified_commits() {
        let mut k = json!({"resources": ["local", "https://git.example.com/shop/common.git//base?ref=main"]});
        let pin = CommitId::parse("0123456789abcdef0123456789abcdef01234567").unwrap();
        pin_remote_bases(
            &mut k,
            &[PinnedRemote {
                repo_url: "https://git.example.com/shop/common.git".into(),
                mirror: "/m".into(),
                commit: pin.clone(),
            }],
        );
        assert_eq!(k["resources"][1], format!("https://git.example.com/shop/common.git//base?ref={pin}"));
        assert_eq!(k["resources"][0], "local");
    }

    #[test]
    fn value_files_stay_in_verified_trees() {
        let root = Path::new("/v");
        let refs = BTreeMap::from([("values".to_string(), root)]);
        assert_eq!(
            value_file("$values/env/prod.yaml", Path::new("/c"), &refs).unwrap(),
            PathBuf::from("/v/env/prod.yaml")
        );
        assert_eq!(
            value_file("values-prod.yaml", Path::new("/c"), &refs).unwrap(),
            PathBuf::from("/c/values-prod.yaml")
        );
        assert!(value_file("../../etc/passwd", Path::new("/c"), &refs).is_err());
        assert!(value_file("$values/../x", Path::new("/c"), &refs).is_err());
        assert!(value_file("$other/x", Path::new("/c"), &refs).is_err());
        assert!(value_file("https://example.com/v.yaml", Path::new("/c"), &refs).is_err());
    }
}
