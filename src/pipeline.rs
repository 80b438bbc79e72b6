//! The steps for one Application revision, as the controller runs them: dereference what the profile
//! refers to, verify every git source (on the blocking pool, a bounded number at a time), and report each
//! step for the status. Steps not built yet report `NotImplemented`.

use std::sync::Arc;

use kube::Client;
use tokio::sync::Semaphore;

use crate::resources::profile::IntegrityProfile;
use crate::resources::provenance::SourceRevision;
use crate::source::CommitId;
use crate::source::verify::{Outcome, SourceRequest, SourceVerdict, SourceVerifier};
use crate::status::{Step, StepReport, StepState};
use crate::target::SyncTarget;

/// What the pipeline needs, shared by every reconcile.
pub struct Pipeline {
    pub client: Client,
    pub verifier: Arc<SourceVerifier>,
    pub argocd_namespace: String,
    /// Bounds concurrent verifications (each may use every core).
    pub permits: Semaphore,
}

impl Pipeline {
    /// Runs the steps for `target` under `profile`; `verified` holds the last verified revision per
    /// repository.
    pub async fn run(
        &self,
        profile: &IntegrityProfile,
        namespace: &str,
        target: &SyncTarget,
        verified: &[SourceRevision],
    ) -> [StepReport; 4] {
        let source = self.source_step(profile, namespace, target, verified).await;
        [
            source,
            StepReport::not_implemented(Step::ImagesVerified),
            StepReport::not_implemented(Step::ManifestsSigned),
            StepReport::not_implemented(Step::ProvenanceRecorded),
        ]
    }

    async fn source_step(
        &self,
        profile: &IntegrityProfile,
        namespace: &str,
        target: &SyncTarget,
        verified: &[SourceRevision],
    ) -> StepReport {
        let bag = match crate::cluster::bag(&self.client, namespace, &profile.spec, &self.argocd_namespace).await {
            Ok(b) => b,
            Err(e) => {
                let state = if e.retryable() { StepState::Pending } else { StepState::Failed };
                return StepReport::new(state, e.reason(), e.to_string());
            }
        };
        let policies = profile
            .spec
            .source_integrity
            .as_ref()
            .and_then(|s| s.git.as_ref())
            .map(|g| g.policies.clone())
            .unwrap_or_default();
        let mut verdicts = Vec::new();
        for source in &target.sources {
            if source.chart.is_some() {
                return StepReport::new(
                    StepState::NotImplemented,
                    "ChartSourceNotVerified",
                    format!(
                        "source {} is a Helm chart repository ({} {}); verifying chart repositories is not implemented in this version of Weft, so nothing is vouched for",
                        source.repo_url,
                        source.chart.as_deref().unwrap_or_default(),
                        source.revision
                    ),
                );
            }
            let Some(revision) = CommitId::parse(&source.revision) else {
                return StepReport::new(
                    StepState::Failed,
                    "RevisionNotACommit",
                    format!("{} is not a commit SHA", source.revision),
                );
            };
            let previous =
                verified.iter().find(|v| v.repo_url == source.repo_url).and_then(|v| CommitId::parse(&v.revision));
            let _permit = self.permits.acquire().await;
            let verifier = self.verifier.clone();
            let (policies, bag, source) = (policies.clone(), bag.clone(), source.clone());
            let now = k8s_openapi::jiff::Timestamp::now().as_second();
            let verdict = tokio::task::spawn_blocking(move || {
                let request = SourceRequest {
                    repo_url: &source.repo_url,
                    revision: &revision,
                    path: source.path.as_deref(),
                    target_revision: source.target_revision.as_deref(),
                    previous: previous.as_ref(),
                };
                verifier.verify(&policies, &bag, &request, now)
            })
            .await;
            match verdict {
                Ok(v) => verdicts.push(v),
                Err(e) => {
                    return StepReport::new(
                        StepState::Pending,
                        "VerificationInterrupted",
                        format!("source verification did not finish: {e}"),
                    );
                }
            }
        }
        combine(&verdicts)
    }
}

/// One report for all sources: the first that did not verify decides; all verified is a pass.
pub fn combine(verdicts: &[SourceVerdict]) -> StepReport {
    let line = |v: &SourceVerdict| format!("{} @ {}: {}", v.repo_url, v.commit.short(), v.message);
    for v in verdicts {
        match v.outcome {
            Outcome::Failed | Outcome::Misconfigured => return StepReport::new(StepState::Failed, &v.reason, line(v)),
            Outcome::Retry => {
                return StepReport::new(StepState::Pending, &v.reason, format!("{} (retrying with backoff)", line(v)));
            }
            Outcome::Verified => {}
        }
    }
    let message = verdicts.iter().map(line).collect::<Vec<_>>().join(" | ");
    StepReport::new(StepState::Passed, "Verified", message)
}
