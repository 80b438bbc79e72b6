//! Kustomize remote bases: git repositories a kustomization pulls in by URL
//! (`github.com/org/repo//path?ref=v1`, `https://host/repo.git//path?ref=…`, `git@host:repo//path`,
//! `file:///repo//path`). They go into the render as much as the Application's own source, so they are
//! found in the verified tree (following local bases), pinned to the commit their ref names, and verified
//! where a policy matches.

use std::collections::{BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use super::CommitId;
use super::repo::{FileKind, Repo, RepoError, contained};

pub const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// One remote base as written in a kustomization.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteBase {
    /// The git repository URL.
    pub repo_url: String,
    /// The directory in that repository.
    pub path: Option<String>,
    /// `?ref=` (or `?version=`): a commit, tag or branch; the default branch when absent.
    pub reference: Option<String>,
    /// The kustomization file (relative to the repository root) that refers to it.
    pub referenced_from: String,
    /// The entry as written.
    pub entry: String,
}

/// A remote resource that is not a git repository (a plain HTTP file): it cannot be pinned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RemoteFile {
    pub url: String,
    pub referenced_from: String,
}

#[derive(Deserialize, Default)]
struct Kustomization {
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    bases: Vec<String>,
    #[serde(default)]
    components: Vec<String>,
}

/// Walks the kustomizations under `dir` of `commit` (and the local bases they name) and returns what
/// they pull in from elsewhere. Nothing when `dir` holds no kustomization.
pub fn remote_resources(
    repo: &Repo,
    commit: &CommitId,
    dir: &str,
) -> Result<(Vec<RemoteBase>, Vec<RemoteFile>), RepoError> {
    let Some(files) = repo.files_under(commit, "")? else { return Ok((Vec::new(), Vec::new())) };
    let by_path: std::collections::BTreeMap<&str, _> = files.iter().map(|f| (f.path.as_str(), f)).collect();
    let start = contained(dir).unwrap_or_default();
    let mut queue = VecDeque::from([start]);
    let mut seen = BTreeSet::new();
    let (mut bases, mut remote_files) = (Vec::new(), Vec::new());
    while let Some(d) = queue.pop_front() {
        if !seen.insert(d.clone()) {
            continue;
        }
        let Some((file_path, entry)) = KUSTOMIZATION_FILES.iter().find_map(|name| {
            let p = if d.is_empty() { name.to_string() } else { format!("{d}/{name}") };
            by_path.get(p.as_str()).map(|e| (p, *e))
        }) else {
            continue;
        };
        if entry.kind == FileKind::Symlink {
            continue;
        }
        let text = repo.blob(&entry.id)?;
        // A kustomization Weft cannot read is left to kustomize, which will report it at render time.
        let Ok(k) = serde_saphyr::from_slice::<Kustomization>(&text) else { continue };
        for item in k.resources.iter().chain(&k.bases).chain(&k.components) {
            let local = if d.is_empty() { item.clone() } else { format!("{d}/{item}") };
            if let Some(local) = contained(&local)
                && (by_path.contains_key(local.as_str()) || by_path.keys().any(|p| p.starts_with(&format!("{local}/"))))
            {
                queue.push_back(local);
                continue;
            }
            if let Some(base) = parse_remote(item, &file_path) {
                bases.push(base);
            } else if item.starts_with("https://") || item.starts_with("http://") {
                remote_files.push(RemoteFile { url: item.clone(), referenced_from: file_path.clone() });
            }
        }
    }
    Ok((bases, remote_files))
}

/// Parses a kustomize remote target into repository, path and ref; `None` for anything else.
pub fn parse_remote(entry: &str, referenced_from: &str) -> Option<RemoteBase> {
    let e = entry.trim().trim_start_matches("git::");
    let (body, query) = match e.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (e, None),
    };
    let reference = query.and_then(|q| {
        q.split('&').find_map(|kv| kv.strip_prefix("ref=").or_else(|| kv.strip_prefix("version=")).map(str::to_string))
    });
    let scheme_end = body.find("://").map(|i| i + 3).unwrap_or(0);
    let (repo_part, path) = match body[scheme_end..].find("//") {
        Some(i) => (
            &body[..scheme_end + i],
            Some(body[scheme_end + i + 2..].trim_matches('/').to_string()).filter(|p| !p.is_empty()),
        ),
        None => (body, None),
    };
    let is_git = scheme_end > 0 && (path.is_some() || repo_part.ends_with(".git") || reference.is_some())
        || repo_part.starts_with("git@")
        || (scheme_end == 0 && looks_like_host_path(repo_part));
    if !is_git
        || (repo_part.starts_with("http") && path.is_none() && reference.is_none() && !repo_part.ends_with(".git"))
    {
        return None;
    }
    let repo_url = if scheme_end == 0 && !repo_part.starts_with("git@") {
        format!("https://{repo_part}")
    } else {
        repo_part.to_string()
    };
    Some(RemoteBase {
        repo_url,
        path,
        reference,
        referenced_from: referenced_from.to_string(),
        entry: entry.to_string(),
    })
}

/// `github.com/org/repo`: a host name with a dot, then a path.
fn looks_like_host_path(s: &str) -> bool {
    s.split_once('/').is_some_and(|(host, rest)| host.contains('.') && !host.starts_with('.') && !rest.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(e: &str) -> Option<(String, Option<String>, Option<String>)> {
        parse_remote(e, "k.yaml").map(|b| (b.repo_url, b.path, b.reference))
    }

    #[test]
    fn remote_targets_are_split_into_repo_path_and_ref() {
        assert_eq!(
            parse("github.com/org/repo//deploy/base?ref=v1.2.0"),
            Some(("https://github.com/org/repo".into(), Some("deploy/base".into()), Some("v1.2.0".into())))
        );
        assert_eq!(
            parse("https://git.example.com/shop/common.git//base?ref=0123456789abcdef0123456789abcdef01234567"),
            Some((
                "https://git.example.com/shop/common.git".into(),
                Some("base".into()),
                Some("0123456789abcdef0123456789abcdef01234567".into())
            ))
        );
        assert_eq!(
            parse("git@git.example.com:shop/common.git//base"),
            Some(("git@git.example.com:shop/common.git".into(), Some("base".into()), None))
        );
        assert_eq!(
            parse("file:///srv/repos/common//base?ref=main"),
            Some(("file:///srv/repos/common".into(), Some("base".into()), Some("main".into())))
        );
        assert_eq!(
            parse("git::https://git.example.com/x.git?version=v2"),
            Some(("https://git.example.com/x.git".into(), None, Some("v2".into())))
        );
    }

    #[test]
    fn local_paths_and_plain_files_are_not_git_bases() {
        assert_eq!(parse("../base"), None);
        assert_eq!(parse("deployment.yaml"), None);
        assert_eq!(parse("https://raw.example.com/manifests/app.yaml"), None);
    }
}
