//! An Application's reconcile: the unit of work, whether a record stands, the run, the status write
//! and its Events.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::pipeline::{NoProgress, Pipeline, PipelineOutcome, Request};
use crate::reason::{Category, Dependency, Reason};
use crate::resources::argocd::{self, Application};
use crate::resources::profile::IntegrityProfile;
use crate::resources::provenance::{ApplicationProvenance, ApplicationProvenanceStatus, ProfileRef, WorkUnit};
use crate::selection::{self, AppFacts, Selection};
use crate::status::{self, Governance, Observation, Step, StepError, StepReport, StepState, Subject};
use crate::target;

use super::ControllerError;
use super::FIELD_MANAGER;
use super::informer::hash_of;
use super::scope::Context;
use super::scope::MAX_REFERENCED;
use super::scope::REFERENCED_TTL;
use super::scope::ReferencedKey;
use super::scope::backoff;
use super::scope::key;

/// The unit of work, as a digest (see `WorkUnit`).
pub(super) fn work_unit(
    app: &Application,
    target: &target::SyncTarget,
    profile: &IntegrityProfile,
    referenced: &crate::referenced::ReferencedObjects,
    pipeline: &Pipeline,
) -> String {
    use sha2::{Digest, Sha256};
    let facts = json!({
        "weft": env!("CARGO_PKG_VERSION"),
        "application": {"uid": app.metadata.uid, "spec": app.spec},
        // The revisions, not where they were first seen (a sync operation, then the sync status).
        "target": target.sources,
        "profile": {"uid": profile.metadata.uid, "spec": profile.spec},
        "objects": referenced.fingerprint(
            &target.sources.iter().map(|s| s.repo_url.as_str()).collect::<Vec<_>>(),
            Some(app.spec.project.as_deref().filter(|p| !p.is_empty()).unwrap_or("default")),
        ),
        "settings": {"tracking": format!("{:?}", pipeline.tracking), "builder": pipeline.builder_id,
                     "limits": format!("{:?}", pipeline.limits)},
    });
    hex::encode(Sha256::digest(facts.to_string().as_bytes()))
}

/// The record, and when it was made, when it records this unit with a settled verdict (one a refusal
/// gave only until the resync period has passed).
pub(super) fn recorded<'s>(
    status: &'s ApplicationProvenanceStatus,
    unit: &str,
    resync: Duration,
) -> Option<(&'s ApplicationProvenanceStatus, Timestamp)> {
    let at = status.work_unit.as_ref().filter(|w| w.digest == unit)?.recorded_at.0;
    // A dependency's refusal (credentials refused, a request rejected) may be fixed where the unit of
    // work cannot see it (a permission in the registry), so such a record is run again after the resync
    // period; every other record stands until its unit changes.
    let refused = status.conditions.iter().any(|c| {
        c.status == "False" && c.reason.parse::<Reason>().is_ok_and(|r| matches!(r.category(), Category::Refused(_)))
    });
    (!refused || age(at) < resync).then_some((status, at))
}

/// The time until the next tick of a clock of `period` whose ticks are offset by a hash of `key`: ticks
/// for one key fall together, those of different keys spread over the period.
pub(super) fn aligned(period: Duration, key: &str, now: Timestamp) -> Duration {
    let period = period.as_secs().max(1);
    let offset = hash_of(&key) % period;
    let into = (u64::try_from(now.as_second()).unwrap_or_default() + offset) % period;
    Duration::from_secs(period - into)
}

/// How long ago `at` was (zero for a time in the future, such as a skewed clock's).
pub(super) fn age(at: Timestamp) -> Duration {
    Duration::try_from(Timestamp::now().duration_since(at)).unwrap_or_default()
}

/// Whether the record's sources passed verification (only those are worth checking again).
pub(super) fn source_passed(status: &ApplicationProvenanceStatus) -> bool {
    status.conditions.iter().any(|c| c.type_ == Step::SourceVerified.condition_type() && c.status == "True")
}

pub(super) async fn write_status(
    api: &Api<ApplicationProvenance>,
    name: &str,
    status: &ApplicationProvenanceStatus,
) -> Result<(), ControllerError> {
    let patch = json!({
        "apiVersion": "weft.dev/v1alpha1",
        "kind": "ApplicationProvenance",
        "status": serde_json::to_value(status).map_err(|source| ControllerError::Serialize { what: "status", source })?,
    });
    api.patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    Ok(())
}

/// The fast path of a resync or a stray event: the cached record already holds this unit of work, where
/// the revision was seen has not moved, and no re-verification is due. Then nothing is read (but what
/// the profile refers to, shared) and nothing written; how long until the next look.
pub(super) async fn settled(
    ctx: &Context,
    governance: &Governance,
    subject: &Subject,
    app: Option<&Application>,
    name: &str,
    ns: &str,
) -> Option<Duration> {
    let (Governance::Profile { profile, .. }, Subject::Target(target), Some(app)) = (governance, subject, app) else {
        return None;
    };
    let p = ctx.profiles.get(&ObjectRef::new(&profile.name).within(ns))?;
    let cached = ctx.provenances.get(&ObjectRef::new(name).within(ns))?;
    let uid = app.metadata.uid.as_deref()?;
    let status = cached
        .status
        .as_ref()
        .filter(|s| is_own_record(&cached, name, uid) && s.revision_origin == Some(target.origin))?;
    let project = app.spec.project.as_deref().filter(|p| !p.is_empty()).unwrap_or("default");
    let referenced = ctx.referenced(ns, &p, project).await.ok()?;
    let unit = work_unit(app, target, &p, &referenced, &ctx.pipeline);
    let (_, at) = recorded(status, &unit, ctx.resync)?;
    let left = ctx.reverify_in(status, at);
    if left.is_some_and(|l| l.is_zero()) {
        return None; // re-verification is due: the slow path does it
    }
    Some(ctx.next_check(p.metadata.uid.as_deref(), left))
}

/// Whether a record is the one Weft wrote for the Application `name` with `uid`: for it, and owned by it
/// as its controller. Anything else (an edited spec, a dropped owner) is written again.
pub(super) fn is_own_record(ap: &ApplicationProvenance, name: &str, uid: &str) -> bool {
    ap.spec.application.name == name && ap.owner_references().iter().any(|o| o.uid == uid && o.controller == Some(true))
}

impl Context {
    /// How long until a record's revision is re-verified: zero when due now, `None` when never
    /// (re-verification is off, or the record's sources did not pass: there is nothing to check again).
    pub(super) fn reverify_in(&self, status: &ApplicationProvenanceStatus, at: Timestamp) -> Option<Duration> {
        self.reverify.filter(|_| source_passed(status)).map(|every| every.saturating_sub(age(at)))
    }

    /// The UID of profile `name` in `ns`, from the cache.
    pub(super) fn profile_uid(&self, ns: &str, name: &str) -> Option<String> {
        self.profiles.get(&ObjectRef::new(name).within(ns))?.metadata.uid.clone()
    }

    /// When a settled record of `profile`'s is looked at again: at the profile's next resync tick, or
    /// when its re-verification is due (`reverify_in`) if sooner. The ticks are the same for every
    /// Application of a profile, so they share one read of what the profile refers to (`referenced`).
    pub(super) fn next_check(&self, profile: Option<&str>, reverify_in: Option<Duration>) -> Duration {
        let tick = aligned(self.resync, profile.unwrap_or_default(), Timestamp::now());
        let reverify = reverify_in.or(self.reverify).filter(|d| !d.is_zero());
        reverify.map_or(tick, |r| r.min(tick))
    }

    /// What `profile` refers to, with the AppProject, shared for `REFERENCED_TTL` by the Applications
    /// reconciled together.
    pub(super) async fn referenced(
        &self,
        ns: &str,
        profile: &IntegrityProfile,
        project: &str,
    ) -> Result<Arc<crate::referenced::ReferencedObjects>, crate::referenced::ReferenceError> {
        let key: ReferencedKey = (
            profile.metadata.uid.clone().unwrap_or_default(),
            profile.metadata.generation.unwrap_or_default(),
            project.to_string(),
        );
        let lock = || self.referenced_by_profile.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, referenced)) = lock().get(&key)
            && at.elapsed() < REFERENCED_TTL.min(self.resync)
        {
            return Ok(referenced.clone());
        }
        let argocd_ns = &self.pipeline.argocd_namespace;
        let referenced = Arc::new(
            crate::kubernetes::referenced::referenced(&self.client, ns, &profile.spec, argocd_ns, Some(project))
                .await?,
        );
        let mut referenced_by_profile = lock();
        if referenced_by_profile.len() >= MAX_REFERENCED {
            referenced_by_profile.retain(|_, (at, _)| at.elapsed() < REFERENCED_TTL.min(self.resync));
        }
        if referenced_by_profile.len() < MAX_REFERENCED {
            referenced_by_profile.insert(key, (std::time::Instant::now(), referenced.clone()));
        }
        Ok(referenced)
    }
}

/// The Application's AppProject, as Argo CD requires it: it must exist, and permit the Application's
/// namespace. Otherwise Argo CD does not sync the Application, and Weft does not fetch for it.
pub(super) fn project_scope<'b>(
    referenced: &'b crate::referenced::ReferencedObjects,
    project: &str,
    app_namespace: &str,
    argocd_namespace: &str,
) -> Result<&'b crate::repository::access::ProjectRules, StepReport> {
    let Some(rules) = referenced.projects.get(project) else {
        return Err(StepReport::new(
            StepState::Failed,
            Reason::ProjectNotFound,
            format!(
                "AppProject {project} does not exist in {argocd_namespace}; Argo CD does not sync an Application whose project is missing, and Weft fetches nothing for it"
            ),
        ));
    };
    if !rules.permits_namespace(app_namespace, argocd_namespace) {
        return Err(StepReport::new(
            StepState::Failed,
            Reason::ApplicationNamespaceNotPermitted,
            format!(
                "AppProject {project} does not list namespace {app_namespace} in spec.sourceNamespaces; Argo CD ignores Applications there, and Weft fetches nothing for them"
            ),
        ));
    }
    Ok(rules)
}

pub(super) fn facts_of(app: &Application) -> AppFacts<'_> {
    AppFacts {
        name: app.metadata.name.as_deref().unwrap_or_default(),
        project: app.spec.project.as_deref().unwrap_or("default"),
        labels: argocd::labels(&app.metadata),
    }
}

pub(super) async fn reconcile_application(
    guard: Arc<DeserializeGuard<Application>>,
    ctx: Arc<Context>,
) -> Result<Action, ControllerError> {
    let meta = match &guard.0 {
        Ok(app) => &app.metadata,
        Err(invalid) => &invalid.metadata,
    };
    let (Some(name), Some(ns), Some(uid)) = (meta.name.clone(), meta.namespace.clone(), meta.uid.clone()) else {
        return Ok(Action::await_change()); // not a stored object
    };
    if ctx.shards.as_ref().is_some_and(|s| !s.holds(&uid)) {
        return Ok(Action::await_change()); // another replica's (re-queued here if its shard comes here)
    }

    let profiles: Vec<Arc<IntegrityProfile>> =
        ctx.profiles.state().into_iter().filter(|p| p.metadata.namespace.as_deref() == Some(&ns)).collect();
    let (governance, subject) = match &guard.0 {
        Err(invalid) => (
            Governance::Unprotected { namespace: ns.clone() },
            Subject::Invalid { reason: Reason::UnreadableApplication, message: invalid.error.clone() },
        ),
        Ok(app) => {
            let governance = governance(selection::select(profiles.iter().map(|p| p.as_ref()), &facts_of(app)), &ns);
            let subject = match target::sync_target(app) {
                Ok(Some(t)) => Subject::Target(t),
                Ok(None) => Subject::AwaitingRevision,
                Err(e) => Subject::Invalid { reason: e.reason(), message: e.to_string() },
            };
            (governance, subject)
        }
    };

    if let Some(wait) = settled(&ctx, &governance, &subject, guard.0.as_ref().ok(), &name, &ns).await {
        crate::metrics::reconciled("unchanged");
        return Ok(Action::requeue(wait));
    }
    let provenances: Api<ApplicationProvenance> = Api::namespaced(ctx.client.clone(), &ns);
    // Read the record itself, not the cache: history and transition times must never be lost.
    let existing = provenances.get_opt(&name).await?;
    let previous = existing.as_ref().and_then(|e| e.status.as_ref());
    let mut work = None;
    let outcome = match (&governance, &subject, guard.0.as_ref().ok()) {
        (Governance::Profile { profile, .. }, Subject::Target(target), Some(app)) => {
            match profiles.iter().find(|p| p.metadata.name.as_deref() == Some(profile.name.as_str())) {
                Some(p) => {
                    let verified = previous.map(|s| s.verified_sources.as_slice()).unwrap_or_default();
                    let argocd_ns = &ctx.pipeline.argocd_namespace;
                    let project = app.spec.project.as_deref().filter(|p| !p.is_empty()).unwrap_or("default");
                    Some(match ctx.referenced(&ns, p, project).await {
                        Ok(referenced) => match project_scope(&referenced, project, &ns, argocd_ns) {
                            Ok(rules) => {
                                let unit = work_unit(app, target, p, &referenced, &ctx.pipeline);
                                let request = Request {
                                    profile: p,
                                    app,
                                    target,
                                    verified,
                                    referenced: &referenced,
                                    project: Some(rules),
                                    destination: None,
                                    identity_token: None,
                                };
                                // The same unit of work recorded: nothing to redo, whatever woke us. (A record
                                // someone else rewrote is not Weft's any more: written again by a full run.)
                                let own = existing.as_ref().is_some_and(|e| is_own_record(e, &name, &uid));
                                if let Some((recorded, at)) =
                                    previous.filter(|_| own).and_then(|p| recorded(p, &unit, ctx.resync))
                                {
                                    match ctx.reverify_in(recorded, at) {
                                        Some(left) if left.is_zero() => {
                                            let report = ctx.pipeline.reverify(&request).await;
                                            match report.state {
                                                StepState::Passed => {
                                                    let status = ApplicationProvenanceStatus {
                                                        revision_origin: Some(target.origin),
                                                        work_unit: Some(WorkUnit {
                                                            digest: unit,
                                                            recorded_at: Time(Timestamp::now()),
                                                        }),
                                                        ..recorded.clone()
                                                    };
                                                    write_status(&provenances, &name, &status).await?;
                                                    crate::metrics::reconciled("reverified");
                                                    return Ok(Action::requeue(
                                                        ctx.next_check(p.metadata.uid.as_deref(), None),
                                                    ));
                                                }
                                                StepState::Pending => {
                                                    crate::metrics::reconciled("requeued");
                                                    let k = key("Application", &ns, &name);
                                                    return Ok(Action::requeue(backoff(&ctx, k)));
                                                }
                                                // No longer verifies: recorded as such, like any run.
                                                _ => {}
                                            }
                                            work = Some(unit);
                                            PipelineOutcome::stopped(report)
                                        }
                                        left => {
                                            // Only where the revision was seen may have moved (from the
                                            // sync operation to the sync status): record that alone.
                                            if recorded.revision_origin != Some(target.origin) {
                                                let status = ApplicationProvenanceStatus {
                                                    revision_origin: Some(target.origin),
                                                    ..recorded.clone()
                                                };
                                                write_status(&provenances, &name, &status).await?;
                                            }
                                            crate::metrics::reconciled("unchanged");
                                            return Ok(Action::requeue(
                                                ctx.next_check(p.metadata.uid.as_deref(), left),
                                            ));
                                        }
                                    }
                                } else {
                                    work = Some(unit);
                                    ctx.pipeline.run(request, &NoProgress).await
                                }
                            }
                            Err(report) => PipelineOutcome::stopped(report),
                        },
                        Err(e) => PipelineOutcome::stopped(e.report()),
                    })
                }
                None => None,
            }
        }
        _ => None,
    };
    let (steps, remote_bases, manifest_image, rekor, verification_summary, images) = match outcome {
        Some(o) => (o.steps, o.remote_bases, o.published.map(|p| p.reference), o.rekor, o.summary, o.images),
        None => (Step::ALL.map(StepReport::not_implemented), Vec::new(), None, None, None, Vec::new()),
    };
    let pending = steps.iter().any(|s| s.state == StepState::Pending);
    let observation = Observation {
        generation: existing.as_ref().and_then(|e| e.metadata.generation),
        application_generation: meta.generation,
        governance,
        subject,
        steps,
        remote_bases,
        manifest_image,
        rekor,
        verification_summary,
        images,
    };
    let new_status = status::compute(&observation, previous, Timestamp::now());

    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let owner = OwnerReference {
        api_version: "argoproj.io/v1alpha1".into(),
        kind: "Application".into(),
        name: name.clone(),
        uid: uid.clone(),
        controller: Some(true),
        block_owner_deletion: None,
    };
    let needs_object = existing.as_ref().is_none_or(|e| !is_own_record(e, &name, &uid));
    let mut generation = observation.generation;
    if needs_object {
        let object = json!({
            "apiVersion": "weft.dev/v1alpha1",
            "kind": "ApplicationProvenance",
            "metadata": {
                "name": name,
                "namespace": ns,
                "ownerReferences": [owner],
                "labels": {"app.kubernetes.io/managed-by": "weft"},
            },
            "spec": {"application": {"name": name}},
        });
        let written = provenances.patch(&name, &pp, &Patch::Apply(&object)).await?;
        generation = written.metadata.generation;
        info!(application = %name, namespace = %ns, "created ApplicationProvenance");
    }
    let mut new_status = ApplicationProvenanceStatus {
        observed_generation: generation,
        conditions: new_status
            .conditions
            .into_iter()
            .map(|c| Condition { observed_generation: generation, ..c })
            .collect(),
        // Recorded only once every step finished: a pending step is retried.
        work_unit: work.filter(|_| !pending).map(|digest| WorkUnit { digest, recorded_at: Time(Timestamp::now()) }),
        ..new_status
    };
    // The Application's generation moves with each of Argo CD's status writes (its CRD has no status
    // subresource): on its own it is no news, and writing it would wake this controller again.
    if let Some(p) = previous
        && (ApplicationProvenanceStatus { application_generation: p.application_generation, ..new_status.clone() })
            == *p
    {
        new_status.application_generation = p.application_generation;
    }
    for dependency in dependencies_pending(&new_status) {
        crate::metrics::dependency_error(dependency);
    }
    let events = [verdict_event(previous, &new_status), image_event(previous, &new_status)];
    for event in events.into_iter().flatten() {
        let regarding = ObjectReference {
            api_version: Some("argoproj.io/v1alpha1".into()),
            kind: Some("Application".into()),
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            uid: Some(uid.clone()),
            ..Default::default()
        };
        // An Event is a courtesy; the status is the record, so a failure here does not fail the reconcile.
        if let Err(e) = ctx.recorder.publish(&event, &regarding).await {
            warn!(application = %name, namespace = %ns, error = %e, "cannot publish an Event");
        }
    }
    if previous != Some(&new_status) {
        if previous.map(|p| p.verdict) != Some(new_status.verdict) {
            crate::metrics::verdict(new_status.verdict.as_str());
        }
        let patch = json!({
            "apiVersion": "weft.dev/v1alpha1",
            "kind": "ApplicationProvenance",
            "status": serde_json::to_value(&new_status).map_err(|source| ControllerError::Serialize { what: "status", source })?,
        });
        provenances.patch_status(&name, &pp, &Patch::Apply(&patch)).await?;
        info!(
            application = %name, namespace = %ns,
            verdict = new_status.verdict.as_str(),
            revision = new_status.revision_short.as_deref().unwrap_or("-"),
            reason = new_status.conditions.iter().find(|c| c.type_ == status::READY).map(|c| c.reason.as_str()).unwrap_or(""),
            "recorded verdict"
        );
    }
    let k = key("Application", &ns, &name);
    if pending {
        // Waiting on a dependency (a repository, the apiserver): retry with backoff, nothing vouched for.
        let delay = backoff(&ctx, k);
        debug!(application = %name, namespace = %ns, retry_in = ?delay, "a step is pending; retrying");
        crate::metrics::reconciled("requeued");
        return Ok(Action::requeue(delay));
    }
    ctx.failures.reset(&k);
    crate::metrics::reconciled("ok");
    let profile = new_status.profile.as_ref().and_then(|r| ctx.profile_uid(&ns, &r.name));
    Ok(Action::requeue(ctx.next_check(profile.as_deref(), None)))
}

/// An Event when the verdict or the revision changes: Normal when vouched for, Warning otherwise.
pub(super) fn verdict_event(
    previous: Option<&ApplicationProvenanceStatus>,
    new: &ApplicationProvenanceStatus,
) -> Option<Event> {
    let changed = previous.is_none_or(|p| p.verdict != new.verdict || p.sources != new.sources);
    let ready = new.conditions.iter().find(|c| c.type_ == status::READY)?;
    if !changed || new.verdict == crate::resources::provenance::Verdict::Pending {
        return None;
    }
    let good = matches!(new.verdict, crate::resources::provenance::Verdict::Verified);
    let rev = new.revision_short.as_deref().unwrap_or("-");
    Some(Event {
        type_: if good { EventType::Normal } else { EventType::Warning },
        reason: ready.reason.clone(),
        note: Some(
            format!("revision {rev}: {} ({})", new.verdict.as_str(), ready.message).chars().take(1000).collect(),
        ),
        action: "Verify".into(),
        secondary: None,
    })
}

/// The dependencies the steps left pending waited on.
pub(super) fn dependencies_pending(s: &ApplicationProvenanceStatus) -> Vec<Dependency> {
    s.conditions
        .iter()
        .filter(|c| c.status == "Unknown" && c.type_ != status::READY)
        .filter_map(|c| c.reason.parse::<Reason>().ok()?.category().dependency())
        .collect()
}

/// A Warning Event when images fail verification (permitted or not), once per change of what failed.
pub(super) fn image_event(
    previous: Option<&ApplicationProvenanceStatus>,
    new: &ApplicationProvenanceStatus,
) -> Option<Event> {
    let cond = |s: &ApplicationProvenanceStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == Step::ImagesVerified.condition_type())
            .map(|c| (c.reason.clone(), c.message.clone()))
    };
    let (reason, message) = cond(new)?;
    let failed = new.images.iter().any(|i| i.outcome == crate::resources::provenance::ImageOutcome::Failed);
    if !failed || previous.and_then(cond) == Some((reason.clone(), message.clone())) {
        return None;
    }
    let action = if reason == Reason::UnverifiedImagesPermitted.as_str() { "SignedAnyway" } else { "RefusedToSign" };
    Some(Event {
        type_: EventType::Warning,
        reason,
        note: Some(message.chars().take(1000).collect()),
        action: action.into(),
        secondary: None,
    })
}

pub(super) fn governance(sel: Selection<'_>, ns: &str) -> Governance {
    match sel {
        Selection::Unprotected => Governance::Unprotected { namespace: ns.into() },
        Selection::Selected(p) => Governance::Profile {
            profile: ProfileRef { name: p.name_any(), generation: p.metadata.generation.unwrap_or_default() },
            history_limit: p
                .spec
                .provenance
                .as_ref()
                .and_then(|pr| pr.history_limit)
                .and_then(|l| usize::try_from(l).ok())
                .unwrap_or(status::DEFAULT_HISTORY_LIMIT),
        },
        Selection::Conflict(ps) => {
            let names: Vec<String> = ps.iter().map(|p| p.name_any()).collect();
            Governance::ConfigError {
                reason: Reason::ProfileConflict,
                message: format!(
                    "{} IntegrityProfiles select this Application ({}); exactly one may, so nothing is vouched for until their applicationSelectors are narrowed",
                    names.len(),
                    names.join(", ")
                ),
                profiles: names,
            }
        }
        Selection::Invalid { profile, error } => Governance::ConfigError {
            reason: Reason::InvalidProfileSelector,
            message: format!(
                "IntegrityProfile {} has an applicationSelector Weft cannot evaluate ({error}), so whether it selects this Application is unknown; fix the profile",
                profile.name_any()
            ),
            profiles: vec![profile.name_any()],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profiles_applications_resync_together_and_profiles_spread() {
        let period = Duration::from_secs(600);
        let at = |s: i64| Timestamp::from_second(s).unwrap();
        let now = 1_800_000_000;
        let wait = aligned(period, "profile-a", at(now));
        assert!(wait > Duration::ZERO && wait <= period);
        // Whenever an Application of the profile asks, the tick is the same instant.
        let w = wait.as_secs() as i64;
        for later in [1, w / 2, w - 1].into_iter().filter(|l| *l > 0) {
            assert_eq!(aligned(period, "profile-a", at(now + later)).as_secs() as i64, w - later);
        }
        // Right after the tick, the next one is a whole period away.
        assert_eq!(aligned(period, "profile-a", at(now + w)), period);
        let ticks: std::collections::BTreeSet<u64> =
            (0..50).map(|i| aligned(period, &format!("profile-{i}"), at(now)).as_secs()).collect();
        assert!(ticks.len() > 40, "profiles spread over the period: {ticks:?}");
    }
}
