//! What Argo CD is syncing: the exact revision(s) of an Application that Weft must verify.
//!
//! Argo CD applies right after it resolves a revision, so the earliest signal wins:
//! `.operation.sync.revision(s)` while a sync is requested or running, else `.status.sync.revision(s)`.
//! Never "the branch now": a symbolic `targetRevision` is only recorded for people to read.

use thiserror::Error;

use crate::reason::Reason;
use crate::resources::argocd::{Application, ApplicationSource};
use crate::resources::provenance::{RevisionOrigin, SourceRevision};

/// The unit of work: one Application at exact revisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncTarget {
    pub sources: Vec<SourceRevision>,
    pub origin: RevisionOrigin,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("the Application has neither spec.source nor spec.sources")]
    NoSource,
    #[error("source {index} has an empty repoURL")]
    EmptyRepoUrl { index: usize },
    #[error("Argo CD reported {revisions} revision(s) in {field} for {sources} source(s)")]
    RevisionCountMismatch { field: &'static str, revisions: usize, sources: usize },
    #[error("{field} holds an empty revision for source {index} ({repo_url})")]
    EmptyRevision { field: &'static str, index: usize, repo_url: String },
    #[error(
        "revision {revision:?} for {repo_url} is not a full commit SHA, though Argo CD resolves git revisions to one"
    )]
    NotACommit { revision: String, repo_url: String },
}

impl TargetError {
    /// A stable, CamelCase reason for conditions.
    pub fn reason(&self) -> Reason {
        match self {
            TargetError::NoSource => Reason::NoSource,
            TargetError::EmptyRepoUrl { .. } => Reason::EmptyRepoURL,
            TargetError::RevisionCountMismatch { .. } => Reason::RevisionCountMismatch,
            TargetError::EmptyRevision { .. } => Reason::EmptyRevision,
            TargetError::NotACommit { .. } => Reason::RevisionNotACommit,
        }
    }
}

/// The sources an Application declares, multi-source first (as Argo CD does).
pub fn declared_sources(app: &Application) -> Result<&[ApplicationSource], TargetError> {
    match (&app.spec.sources, &app.spec.source) {
        (Some(many), _) if !many.is_empty() => Ok(many),
        (_, Some(one)) => Ok(std::slice::from_ref(one)),
        _ => Err(TargetError::NoSource),
    }
}

/// The exact revisions to verify, or `None` while Argo CD has not resolved any yet.
pub fn sync_target(app: &Application) -> Result<Option<SyncTarget>, TargetError> {
    let declared = declared_sources(app)?;
    if let Some(index) = declared.iter().position(|s| s.repo_url.trim().is_empty()) {
        return Err(TargetError::EmptyRepoUrl { index });
    }

    // 1. A requested or running sync operation.
    if let Some(op) = app.operation.as_ref().and_then(|o| o.sync.as_ref()) {
        let op_sources = match (&op.sources, &op.source) {
            (Some(many), _) if !many.is_empty() => many.as_slice(),
            (_, Some(one)) => std::slice::from_ref(one),
            _ => declared,
        };
        if let Some(revs) = revisions_of(op.revision.as_deref(), op.revisions.as_deref()) {
            let sources = pair(op_sources, &revs, ".operation.sync")?;
            return Ok(Some(SyncTarget { sources, origin: RevisionOrigin::Operation }));
        }
    }

    // 2. What Argo CD compared (OutOfSync) or synced (Synced).
    if let Some(sync) = app.status.as_ref().and_then(|s| s.sync.as_ref())
        && let Some(revs) = revisions_of(sync.revision.as_deref(), sync.revisions.as_deref())
    {
        let sources = pair(declared, &revs, ".status.sync")?;
        return Ok(Some(SyncTarget { sources, origin: RevisionOrigin::SyncStatus }));
    }
    Ok(None)
}

/// Multi-source Applications use `revisions` (one per source); single-source ones `revision`.
/// The count is checked against the sources by `pair`.
fn revisions_of(single: Option<&str>, many: Option<&[String]>) -> Option<Vec<String>> {
    match (many, single) {
        (Some(list), _) if !list.is_empty() => Some(list.to_vec()),
        (_, Some(one)) if !one.is_empty() => Some(vec![one.to_string()]),
        _ => None,
    }
}

fn pair(
    sources: &[ApplicationSource],
    revisions: &[String],
    field: &'static str,
) -> Result<Vec<SourceRevision>, TargetError> {
    if sources.len() != revisions.len() {
        return Err(TargetError::RevisionCountMismatch { field, revisions: revisions.len(), sources: sources.len() });
    }
    sources
        .iter()
        .zip(revisions)
        .enumerate()
        .map(|(index, (src, rev))| {
            if rev.trim().is_empty() {
                return Err(TargetError::EmptyRevision { field, index, repo_url: src.repo_url.clone() });
            }
            // A git source (no chart) must be pinned to a commit; Helm repositories use chart versions.
            if src.chart.is_none() && !is_commit_sha(rev) {
                return Err(TargetError::NotACommit { revision: rev.clone(), repo_url: src.repo_url.clone() });
            }
            Ok(SourceRevision {
                repo_url: src.repo_url.clone(),
                revision: rev.clone(),
                path: src.path.clone().filter(|p| !p.is_empty()),
                chart: src.chart.clone(),
                target_revision: src.target_revision.clone().filter(|t| !t.is_empty()),
            })
        })
        .collect()
}

/// SHA-1 (40) or SHA-256 (64) hex object names.
pub fn is_commit_sha(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

impl SyncTarget {
    /// The first 12 characters of the first source's revision, for printer columns.
    pub fn short(&self) -> Option<String> {
        self.sources.first().map(|s| s.revision.chars().take(12).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::argocd::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";

    fn app(yaml: &str) -> Application {
        serde_saphyr::from_str(yaml).expect("fixture parses")
    }

    #[test]
    fn operation_revision_wins_over_status() {
        let a = app(&format!(
            "metadata: {{name: a}}
spec: {{source: {{repoURL: https://git.example/r, path: app, targetRevision: main}}}}
operation: {{sync: {{revision: {B}}}}}
status: {{sync: {{status: Synced, revision: {A}}}}}"
        ));
        let t = sync_target(&a).unwrap().unwrap();
        assert_eq!(t.origin, RevisionOrigin::Operation);
        assert_eq!(t.sources[0].revision, B);
        assert_eq!(t.sources[0].target_revision.as_deref(), Some("main"));
        assert_eq!(t.short().as_deref(), Some("222222222222"));
    }

    #[test]
    fn status_revision_when_no_operation() {
        let a = app(&format!(
            "metadata: {{name: a}}
spec: {{source: {{repoURL: https://git.example/r}}}}
status: {{sync: {{status: OutOfSync, revision: {A}}}}}"
        ));
        let t = sync_target(&a).unwrap().unwrap();
        assert_eq!(t.origin, RevisionOrigin::SyncStatus);
        assert_eq!(t.sources[0].revision, A);
    }

    #[test]
    fn nothing_resolved_yet() {
        let a = app("metadata: {name: a}\nspec: {source: {repoURL: https://git.example/r}}");
        assert_eq!(sync_target(&a), Ok(None));
    }

    #[test]
    fn multi_source_pairs_revisions_in_order() {
        let a = app(&format!(
            "metadata: {{name: a}}
spec:
  sources:
  - {{repoURL: https://git.example/app, path: k8s}}
  - {{repoURL: https://charts.example, chart: redis, targetRevision: 19.0.1}}
  - {{repoURL: https://git.example/values, ref: values}}
status: {{sync: {{status: Synced, revisions: [{A}, 19.0.1, {B}]}}}}"
        ));
        let t = sync_target(&a).unwrap().unwrap();
        let revs: Vec<_> = t.sources.iter().map(|s| (s.repo_url.as_str(), s.revision.as_str())).collect();
        assert_eq!(
            revs,
            [("https://git.example/app", A), ("https://charts.example", "19.0.1"), ("https://git.example/values", B)]
        );
    }

    #[test]
    fn malformed_applications_are_specific_errors() {
        let none = app("metadata: {name: a}\nspec: {project: default}");
        assert_eq!(sync_target(&none), Err(TargetError::NoSource));

        let count = app(&format!(
            "metadata: {{name: a}}
spec: {{sources: [{{repoURL: https://x/a}}, {{repoURL: https://x/b}}]}}
status: {{sync: {{status: Synced, revisions: [{A}]}}}}"
        ));
        assert!(matches!(
            sync_target(&count),
            Err(TargetError::RevisionCountMismatch { revisions: 1, sources: 2, .. })
        ));

        let symbolic = app(
            "metadata: {name: a}\nspec: {source: {repoURL: https://x/a}}\nstatus: {sync: {status: Synced, revision: main}}",
        );
        assert!(matches!(sync_target(&symbolic), Err(TargetError::NotACommit { .. })));

        let upper = app(&format!(
            "metadata: {{name: a}}\nspec: {{source: {{repoURL: https://x/a}}}}\nstatus: {{sync: {{status: Synced, revision: {}}}}}",
            "ABCDEF0123ABCDEF0123ABCDEF0123ABCDEF0123"
        ));
        assert!(matches!(sync_target(&upper), Err(TargetError::NotACommit { .. })));

        let empty_url = app("metadata: {name: a}\nspec: {source: {repoURL: ''}}");
        assert_eq!(sync_target(&empty_url), Err(TargetError::EmptyRepoUrl { index: 0 }));
    }
}
