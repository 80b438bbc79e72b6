//! The pure core of what an ApplicationProvenance says: from what was observed and what each pipeline
//! step reported, compute the status (verdict, conditions, history). No Kubernetes client here.
//!
//! Fail closed: the verdict is `Verified` only when every step passed. A step that is not built reports
//! `NotImplemented`, which is never success.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::reason::Reason;
use crate::resources::provenance::{
    ApplicationProvenanceStatus, HistoryEntry, ImageStatus, ProfileRef, RekorEntry, SourceRevision, Verdict,
};
use crate::target::SyncTarget;

pub const READY: &str = "Ready";
pub const DEFAULT_HISTORY_LIMIT: usize = 10;

/// The pipeline steps, in order, each with its condition type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    SourceVerified,
    ImagesVerified,
    ManifestsSigned,
    ProvenanceRecorded,
}

impl Step {
    pub const ALL: [Step; 4] =
        [Step::SourceVerified, Step::ImagesVerified, Step::ManifestsSigned, Step::ProvenanceRecorded];

    pub fn condition_type(self) -> &'static str {
        match self {
            Step::SourceVerified => "SourceVerified",
            Step::ImagesVerified => "ImagesVerified",
            Step::ManifestsSigned => "ManifestsSigned",
            Step::ProvenanceRecorded => "ProvenanceRecorded",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Step::SourceVerified => "source verification",
            Step::ImagesVerified => "image verification",
            Step::ManifestsSigned => "manifest signing and publishing",
            Step::ProvenanceRecorded => "provenance recording",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepState {
    Passed,
    Failed,
    /// Waiting on a dependency or on an earlier step; retried.
    Pending,
    /// Not available in this version of Weft.
    NotImplemented,
    /// Not run, because an earlier step did not pass.
    Blocked,
    /// Did not pass, but the profile lets the pipeline go on (permissive image verification).
    Permitted,
    /// The profile does not configure the step: nothing failed, but nothing is vouched for either.
    NotConfigured,
}

/// What one step reported: a state, a reason and a message a person can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepReport {
    pub state: StepState,
    pub reason: Reason,
    pub message: String,
}

impl StepReport {
    pub fn new(state: StepState, reason: Reason, message: impl Into<String>) -> Self {
        StepReport { state, reason, message: message.into() }
    }

    pub fn blocked(by: Step) -> Self {
        StepReport::new(StepState::Blocked, Reason::Blocked, format!("not run: {} did not pass", by.condition_type()))
    }

    pub fn not_implemented(step: Step) -> Self {
        StepReport::new(
            StepState::NotImplemented,
            Reason::NotImplemented,
            format!("{} is not implemented in this version of Weft; nothing is vouched for", step.what()),
        )
    }
}

/// An error a step can end with: the one way from errors to step reports. Pending (retried with
/// backoff) when its reason's category says waiting can change it, and Failed otherwise.
pub trait StepError: std::fmt::Display {
    fn step_reason(&self) -> Reason;

    /// The report, with `message` (the error, with what it means for the step).
    fn report_with(&self, message: String) -> StepReport {
        let reason = self.step_reason();
        let state = if reason.retryable() { StepState::Pending } else { StepState::Failed };
        StepReport::new(state, reason, message)
    }

    /// The report, with the error as its message.
    fn report(&self) -> StepReport {
        self.report_with(self.to_string())
    }
}

/// `StepError` for error types with their own `reason()`, written beside each type.
macro_rules! step_error {
    ($t:ty) => {
        impl $crate::status::StepError for $t {
            fn step_reason(&self) -> $crate::reason::Reason {
                <$t>::reason(self)
            }
        }
    };
}
pub(crate) use step_error;

/// Which profile governs the Application, as far as status is concerned.
#[derive(Clone, Debug, PartialEq)]
pub enum Governance {
    Unprotected {
        namespace: String,
    },
    /// More than one profile, or a profile whose selector cannot be evaluated.
    ConfigError {
        reason: Reason,
        message: String,
        profiles: Vec<String>,
    },
    Profile {
        profile: ProfileRef,
        history_limit: usize,
    },
}

/// What Weft could tell about the Application itself.
#[derive(Clone, Debug, PartialEq)]
pub enum Subject {
    /// The Application cannot be used (unreadable or inconsistent); `reason` is CamelCase.
    Invalid {
        reason: Reason,
        message: String,
    },
    /// Argo CD has not resolved a revision yet.
    AwaitingRevision,
    Target(SyncTarget),
}

/// Everything the status is computed from.
#[derive(Clone, Debug)]
pub struct Observation {
    /// The ApplicationProvenance's own generation.
    pub generation: Option<i64>,
    pub application_generation: Option<i64>,
    pub governance: Governance,
    pub subject: Subject,
    /// One report per step, in `Step::ALL` order; only read when a profile governs a target.
    pub steps: [StepReport; 4],
    /// Kustomize remote bases of the sources, pinned to commits by source verification.
    pub remote_bases: Vec<SourceRevision>,
    pub manifest_image: Option<String>,
    pub rekor: Option<RekorEntry>,
    pub verification_summary: Option<RekorEntry>,
    pub images: Vec<ImageStatus>,
}

/// Computes the new status. `previous` keeps condition transition times stable and feeds history.
pub fn compute(
    obs: &Observation,
    previous: Option<&ApplicationProvenanceStatus>,
    now: Timestamp,
) -> ApplicationProvenanceStatus {
    let (verdict, ready_status, ready_reason, ready_message, step_conditions) = assess(obs, now);
    let mut conditions: Vec<Condition> = step_conditions;
    conditions.push(condition(READY, ready_status, ready_reason, &ready_message, obs.generation, now));
    let previous_conditions = previous.map(|p| p.conditions.as_slice()).unwrap_or_default();
    for c in &mut conditions {
        if let Some(old) = previous_conditions.iter().find(|o| o.type_ == c.type_ && o.status == c.status) {
            c.last_transition_time = old.last_transition_time.clone();
        }
    }

    let (sources, revision_origin) = match &obs.subject {
        Subject::Target(t) => (t.sources.clone(), Some(t.origin)),
        _ => (Vec::new(), None),
    };
    let (profile, conflicting_profiles, limit) = match &obs.governance {
        Governance::Profile { profile, history_limit } => (Some(profile.clone()), Vec::new(), *history_limit),
        Governance::ConfigError { profiles, .. } => (None, profiles.clone(), DEFAULT_HISTORY_LIMIT),
        Governance::Unprotected { .. } => (None, Vec::new(), DEFAULT_HISTORY_LIMIT),
    };

    ApplicationProvenanceStatus {
        observed_generation: obs.generation,
        application_generation: obs.application_generation,
        verdict,
        revision_short: sources.first().map(|s| s.revision.chars().take(12).collect()),
        sources: sources.clone(),
        revision_origin,
        profile,
        conflicting_profiles,
        manifest_image: obs.manifest_image.clone(),
        rekor: obs.rekor.clone(),
        verification_summary: obs.verification_summary.clone(),
        conditions,
        history: history(previous, &sources, limit),
        verified_sources: verified_sources(obs, previous),
        remote_bases: obs.remote_bases.clone(),
        images: obs.images.clone(),
        work_unit: None,
    }
}

/// The sources that passed source verification now replace, per repository, what passed before.
fn verified_sources(obs: &Observation, previous: Option<&ApplicationProvenanceStatus>) -> Vec<SourceRevision> {
    let mut out = previous.map(|p| p.verified_sources.clone()).unwrap_or_default();
    let passed = obs.steps[0].state == StepState::Passed;
    if let (true, Subject::Target(t), Governance::Profile { .. }) = (passed, &obs.subject, &obs.governance) {
        for s in &t.sources {
            out.retain(|o| o.repo_url != s.repo_url);
            out.push(s.clone());
        }
        out.sort_by(|a, b| a.repo_url.cmp(&b.repo_url));
    }
    out
}

type Assessment = (Verdict, &'static str, Reason, String, Vec<Condition>);

fn assess(obs: &Observation, now: Timestamp) -> Assessment {
    let none = Vec::new();
    match (&obs.subject, &obs.governance) {
        (Subject::Invalid { reason, message }, _) => (
            Verdict::InvalidApplication,
            "False",
            *reason,
            format!(
                "Weft cannot use this Application: {message}. Fix the Application; nothing is vouched for until then."
            ),
            none,
        ),
        (_, Governance::Unprotected { namespace }) => (
            Verdict::Unprotected,
            "False",
            Reason::NoProfile,
            format!(
                "no IntegrityProfile in namespace {namespace} selects this Application, so Weft does not verify it; add it to a profile's applicationSelector to protect it"
            ),
            none,
        ),
        (_, Governance::ConfigError { reason, message, .. }) => {
            (Verdict::ConfigError, "False", *reason, message.clone(), none)
        }
        (Subject::AwaitingRevision, Governance::Profile { .. }) => (
            Verdict::Pending,
            "Unknown",
            Reason::AwaitingRevision,
            "Argo CD has not resolved a revision for this Application yet".into(),
            none,
        ),
        (Subject::Target(_), Governance::Profile { .. }) => assess_steps(obs, now),
    }
}

fn assess_steps(obs: &Observation, now: Timestamp) -> Assessment {
    let conditions = Step::ALL
        .iter()
        .zip(&obs.steps)
        .map(|(step, r)| {
            let status = match r.state {
                StepState::Passed => "True",
                StepState::Pending => "Unknown",
                StepState::Failed
                | StepState::NotImplemented
                | StepState::Blocked
                | StepState::Permitted
                | StepState::NotConfigured => "False",
            };
            condition(step.condition_type(), status, r.reason, &r.message, obs.generation, now)
        })
        .collect::<Vec<_>>();

    let first = |state: StepState| Step::ALL.iter().zip(&obs.steps).find(|(_, r)| r.state == state);
    // A step the profile does not configure fails the verdict, but a real failure, or a wait, is what
    // a person needs to see first.
    if let Some((step, r)) = first(StepState::Failed) {
        let msg = format!("{} failed: {}", step.condition_type(), r.message);
        return (Verdict::Failed, "False", r.reason, msg, conditions);
    }
    if let Some((step, r)) = first(StepState::Pending) {
        let msg = format!("{} pending: {}", step.condition_type(), r.message);
        return (Verdict::Pending, "Unknown", r.reason, msg, conditions);
    }
    if let Some((step, r)) = first(StepState::NotConfigured) {
        let msg = format!("{} is not configured: {}", step.condition_type(), r.message);
        return (Verdict::Failed, "False", r.reason, msg, conditions);
    }
    let missing: Vec<_> = Step::ALL
        .iter()
        .zip(&obs.steps)
        .filter(|(_, r)| matches!(r.state, StepState::NotImplemented | StepState::Blocked))
        .map(|(s, _)| s.condition_type())
        .collect();
    if !missing.is_empty() {
        let msg = format!(
            "not every step is available in this version of Weft ({}), so this revision is not vouched for",
            missing.join(", ")
        );
        return (Verdict::Incomplete, "False", Reason::StepsNotImplemented, msg, conditions);
    }
    if let Some((step, r)) = first(StepState::Permitted) {
        let msg =
            format!("every other step passed; {} did not, and is permitted: {}", step.condition_type(), r.message);
        return (Verdict::Permitted, "True", r.reason, msg, conditions);
    }
    (Verdict::Verified, "True", Reason::Verified, "every step passed for this revision".into(), conditions)
}

fn condition(
    type_: &str,
    status: &str,
    reason: Reason,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(now),
    }
}

/// When the revision changes, the previous result moves to the front of the history.
fn history(
    previous: Option<&ApplicationProvenanceStatus>,
    sources: &[SourceRevision],
    limit: usize,
) -> Vec<HistoryEntry> {
    let Some(prev) = previous else {
        return Vec::new();
    };
    let mut history = prev.history.clone();
    if !prev.sources.is_empty() && prev.sources != sources {
        let ready = prev.conditions.iter().find(|c| c.type_ == READY);
        history.insert(
            0,
            HistoryEntry {
                sources: prev.sources.clone(),
                verdict: prev.verdict,
                reason: ready.map(|c| c.reason.clone()).unwrap_or_default(),
                manifest_image: prev.manifest_image.clone(),
                rekor: prev.rekor.clone(),
                recorded_at: ready.map(|c| c.last_transition_time.0.to_string()).unwrap_or_default(),
            },
        );
    }
    history.truncate(limit);
    history
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::provenance::RevisionOrigin;

    fn target(rev: &str) -> Subject {
        Subject::Target(SyncTarget {
            sources: vec![SourceRevision {
                repo_url: "https://git.example/r".into(),
                revision: rev.into(),
                ..Default::default()
            }],
            origin: RevisionOrigin::SyncStatus,
        })
    }

    fn governed(limit: usize) -> Governance {
        Governance::Profile { profile: ProfileRef { name: "prod".into(), generation: 3 }, history_limit: limit }
    }

    fn obs(governance: Governance, subject: Subject) -> Observation {
        Observation {
            generation: Some(1),
            application_generation: Some(7),
            governance,
            subject,
            steps: Step::ALL.map(StepReport::not_implemented),
            remote_bases: Vec::new(),
            manifest_image: None,
            rekor: None,
            verification_summary: None,
            images: Vec::new(),
        }
    }

    #[test]
    fn permitted_images_are_a_permitted_verdict_never_verified_and_failures_still_win() {
        let mut o = obs(governed(10), target("a"));
        o.steps = Step::ALL.map(|_| StepReport::new(StepState::Passed, Reason::Verified, "ok"));
        o.steps[1] = StepReport::new(StepState::Permitted, Reason::UnverifiedImagesPermitted, "x: not signed");
        let s = compute(&o, None, t(1));
        assert_eq!(s.verdict, Verdict::Permitted);
        assert_eq!(cond(&s, "ImagesVerified").status, "False");
        assert_eq!(cond(&s, READY).reason, "UnverifiedImagesPermitted");
        o.steps[3] = StepReport::new(StepState::Failed, Reason::RekorRejected, "no");
        assert_eq!(compute(&o, None, t(1)).verdict, Verdict::Failed);
    }

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn cond<'a>(s: &'a ApplicationProvenanceStatus, ty: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == ty).unwrap_or_else(|| panic!("no {ty} condition"))
    }

    #[test]
    fn unbuilt_steps_are_never_success() {
        let s = compute(&obs(governed(10), target("a")), None, t(100));
        assert_eq!(s.verdict, Verdict::Incomplete);
        for step in Step::ALL {
            let c = cond(&s, step.condition_type());
            assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "NotImplemented"));
        }
        let ready = cond(&s, READY);
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "StepsNotImplemented"));
        assert_eq!(s.profile.as_ref().map(|p| p.generation), Some(3));
        assert_eq!(s.revision_short.as_deref(), Some("a"));
        assert_eq!(s.application_generation, Some(7));
    }

    #[test]
    fn verified_only_when_every_step_passed() {
        let mut o = obs(governed(10), target("a"));
        o.steps = Step::ALL.map(|_| StepReport::new(StepState::Passed, Reason::Verified, "ok"));
        assert_eq!(compute(&o, None, t(1)).verdict, Verdict::Verified);
        assert_eq!(cond(&compute(&o, None, t(1)), READY).status, "True");

        o.steps[2] = StepReport::new(StepState::Pending, Reason::RegistryUnavailable, "registry down");
        let s = compute(&o, None, t(1));
        assert_eq!((s.verdict, cond(&s, READY).reason.as_str()), (Verdict::Pending, "RegistryUnavailable"));

        o.steps[0] = StepReport::new(StepState::Failed, Reason::Unsigned, "commit abc is not signed");
        let s = compute(&o, None, t(1));
        assert_eq!((s.verdict, cond(&s, READY).reason.as_str()), (Verdict::Failed, "Unsigned"));
        assert!(cond(&s, READY).message.contains("SourceVerified failed: commit abc"));
    }

    #[test]
    fn unprotected_conflict_and_invalid_carry_no_step_conditions() {
        let s = compute(&obs(Governance::Unprotected { namespace: "argocd".into() }, target("a")), None, t(1));
        assert_eq!(s.verdict, Verdict::Unprotected);
        assert_eq!(s.conditions.len(), 1);
        assert_eq!(cond(&s, READY).reason, "NoProfile");

        let conflict = Governance::ConfigError {
            reason: Reason::ProfileConflict,
            message: "two".into(),
            profiles: vec!["a".into(), "b".into()],
        };
        let s = compute(&obs(conflict, target("a")), None, t(1));
        assert_eq!((s.verdict, s.conflicting_profiles.len()), (Verdict::ConfigError, 2));
        assert!(s.profile.is_none());

        let invalid = Subject::Invalid { reason: Reason::NoSource, message: "no source".into() };
        let s = compute(&obs(governed(10), invalid), None, t(1));
        assert_eq!((s.verdict, cond(&s, READY).reason.as_str()), (Verdict::InvalidApplication, "NoSource"));
    }

    #[test]
    fn transition_times_only_move_when_status_changes() {
        let first = compute(&obs(governed(10), target("a")), None, t(100));
        let again = compute(&obs(governed(10), target("a")), Some(&first), t(200));
        assert_eq!(cond(&again, READY).last_transition_time, Time(t(100)));

        let mut passed = obs(governed(10), target("a"));
        passed.steps[0] = StepReport::new(StepState::Passed, Reason::Signed, "ok");
        let changed = compute(&passed, Some(&again), t(300));
        assert_eq!(cond(&changed, "SourceVerified").last_transition_time, Time(t(300)));
        assert_eq!(cond(&changed, "ImagesVerified").last_transition_time, Time(t(100)));
    }

    #[test]
    fn history_keeps_previous_revisions_newest_first_and_bounded() {
        let mut status = compute(&obs(governed(2), target("r0")), None, t(0));
        for (i, rev) in ["r1", "r2", "r3"].iter().enumerate() {
            status = compute(&obs(governed(2), target(rev)), Some(&status), t(10 * (i as i64 + 1)));
        }
        let revs: Vec<_> = status.history.iter().map(|h| h.sources[0].revision.as_str()).collect();
        assert_eq!(revs, ["r2", "r1"]);
        assert_eq!(status.history[0].reason, "StepsNotImplemented");
        // The same revision again adds nothing.
        let same = compute(&obs(governed(2), target("r3")), Some(&status), t(99));
        assert_eq!(same.history, status.history);
    }

    #[test]
    fn verified_sources_move_only_when_source_verification_passes() {
        let mut o = obs(governed(10), target("r1"));
        o.steps[0] = StepReport::new(StepState::Passed, Reason::Verified, "ok");
        let first = compute(&o, None, t(1));
        assert_eq!(first.verified_sources.iter().map(|s| s.revision.as_str()).collect::<Vec<_>>(), ["r1"]);

        let mut failed = obs(governed(10), target("r0"));
        failed.steps[0] = StepReport::new(StepState::Failed, Reason::Downgrade, "older");
        let after_failure = compute(&failed, Some(&first), t(2));
        assert_eq!(
            after_failure.verified_sources, first.verified_sources,
            "a failure keeps the last verified revision"
        );

        let mut next = obs(governed(10), target("r2"));
        next.steps[0] = StepReport::new(StepState::Passed, Reason::Verified, "ok");
        let moved = compute(&next, Some(&after_failure), t(3));
        assert_eq!(moved.verified_sources.iter().map(|s| s.revision.as_str()).collect::<Vec<_>>(), ["r2"]);
    }
}
