//! The steps for one Application revision, as the controller runs them: dereference what the profile
//! refers to, verify every git source and the kustomize remote bases it pulls in (on the blocking pool, a
//! bounded number at a time), and report each step for the status. Steps not built yet report
//! `NotImplemented`.

use std::sync::Arc;

use kube::Client;
use tokio::sync::Semaphore;

use crate::deref::Bag;
use crate::resources::profile::{GitPolicy, IntegrityProfile};
use crate::resources::provenance::SourceRevision;
use crate::source::CommitId;
use crate::source::verify::{Outcome, PinnedBase, SourceRequest, SourceVerdict, SourceVerifier};
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

/// What the steps reported, and what they found along the way.
pub struct PipelineOutcome {
    pub steps: [StepReport; 4],
    /// Kustomize remote bases, pinned to commits.
    pub remote_bases: Vec<SourceRevision>,
}

impl Pipeline {
    /// Runs the steps for `target` under `profile`; `verified` holds the last verified revision per
    /// repository.
    pub async fn run(
        &self,
        profile: &IntegrityProfile,
        ns: &str,
        target: &SyncTarget,
        verified: &[SourceRevision],
    ) -> PipelineOutcome {
        let (source, remote_bases) = match self.source_step(profile, ns, target, verified).await {
            Ok((report, bases)) => (report, bases),
            Err(report) => (report, Vec::new()),
        };
        PipelineOutcome {
            steps: [
                source,
                StepReport::not_implemented(Step::ImagesVerified),
                StepReport::not_implemented(Step::ManifestsSigned),
                StepReport::not_implemented(Step::ProvenanceRecorded),
            ],
            remote_bases,
        }
    }

    async fn source_step(
        &self,
        profile: &IntegrityProfile,
        ns: &str,
        target: &SyncTarget,
        verified: &[SourceRevision],
    ) -> Result<(StepReport, Vec<SourceRevision>), StepReport> {
        let bag = crate::cluster::bag(&self.client, ns, &profile.spec, &self.argocd_namespace).await.map_err(|e| {
            let state = if e.retryable() { StepState::Pending } else { StepState::Failed };
            StepReport::new(state, e.reason(), e.to_string())
        })?;
        let policies = profile
            .spec
            .source_integrity
            .as_ref()
            .and_then(|s| s.git.as_ref())
            .map(|g| g.policies.clone())
            .unwrap_or_default();
        let mut verdicts = Vec::new();
        let mut bases = Vec::new();
        for source in &target.sources {
            if source.chart.is_some() {
                return Err(StepReport::new(
                    StepState::NotImplemented,
                    "ChartSourceNotVerified",
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
                    "RevisionNotACommit",
                    format!("{} is not a commit SHA", source.revision),
                ));
            };
            let previous =
                verified.iter().find(|v| v.repo_url == source.repo_url).and_then(|v| CommitId::parse(&v.revision));
            let (verdict, pinned) = self.verify_source(&policies, &bag, source.clone(), revision, previous).await?;
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
                    let how = if b.verdict.is_some() { "verified" } else { "recorded; no policy matches it" };
                    format!("{} @ {} ({how})", b.base.entry, b.commit.short())
                })
                .collect();
            message.push_str(&format!(" | remote bases: {}", listed.join(", ")));
        }
        let revisions = bases
            .into_iter()
            .map(|b| SourceRevision {
                repo_url: b.base.repo_url,
                revision: b.commit.to_string(),
                path: b.base.path,
                chart: None,
                target_revision: b.base.reference,
            })
            .collect();
        Ok((StepReport::new(StepState::Passed, "Verified", message), revisions))
    }

    /// One source and its remote bases, on the blocking pool.
    async fn verify_source(
        &self,
        policies: &[GitPolicy],
        bag: &Bag,
        source: SourceRevision,
        revision: CommitId,
        previous: Option<CommitId>,
    ) -> Result<(SourceVerdict, Vec<PinnedBase>), StepReport> {
        let _permit = self.permits.acquire().await;
        let verifier = self.verifier.clone();
        let (policies, bag) = (policies.to_vec(), bag.clone());
        let now = k8s_openapi::jiff::Timestamp::now().as_second();
        let joined = tokio::task::spawn_blocking(move || {
            let request = SourceRequest {
                repo_url: &source.repo_url,
                revision: &revision,
                path: source.path.as_deref(),
                target_revision: source.target_revision.as_deref(),
                previous: previous.as_ref(),
            };
            let verdict = verifier.verify(&policies, &bag, &request, now);
            if verdict.outcome != Outcome::Verified {
                return Ok((verdict, Vec::new()));
            }
            let bases = verifier.remote_bases(&policies, &bag, &request, now).map_err(|p| {
                let state = if p.outcome == Outcome::Retry { StepState::Pending } else { StepState::Failed };
                StepReport::new(state, p.reason, p.message)
            })?;
            Ok((verdict, bases))
        })
        .await;
        match joined {
            Ok(result) => result,
            Err(e) => Err(StepReport::new(
                StepState::Pending,
                "VerificationInterrupted",
                format!("source verification did not finish: {e}"),
            )),
        }
    }
}

fn line(v: &SourceVerdict) -> String {
    format!("{} @ {}: {}", v.repo_url, v.commit.short(), v.message)
}

/// The step report for a source that did not verify.
fn report(v: &SourceVerdict) -> StepReport {
    match v.outcome {
        Outcome::Retry => {
            StepReport::new(StepState::Pending, &v.reason, format!("{} (retrying with backoff)", line(v)))
        }
        _ => StepReport::new(StepState::Failed, &v.reason, line(v)),
    }
}
