//! An IntegrityProfile's reconcile: how many Applications it selects, and the conflicts.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::info;

use crate::reason::Reason;
use crate::resources::profile::{IntegrityProfile, IntegrityProfileStatus, ProfileConflict, ProfileSummary};
use crate::selection::{self, AppFacts};
use crate::status::{self};

use super::ControllerError;
use super::FIELD_MANAGER;
use super::scope::Context;
use super::scope::key;

pub(super) async fn reconcile_profile(
    profile: Arc<IntegrityProfile>,
    ctx: Arc<Context>,
) -> Result<Action, ControllerError> {
    let Some(ns) = profile.namespace() else {
        return Ok(Action::await_change());
    };
    // Every replica sees every record; the one holding the profile's own shard writes its counts.
    let uid = profile.metadata.uid.clone().unwrap_or_default();
    if ctx.shards.as_ref().is_some_and(|s| !s.holds(&uid)) {
        return Ok(Action::requeue(ctx.resync));
    }
    let name = profile.name_any();

    let mut selected = 0;
    let mut conflicts = Vec::new();
    for ap in ctx.provenances.state() {
        let Some(st) = ap.status.as_ref().filter(|_| ap.namespace().as_deref() == Some(&ns)) else {
            continue;
        };
        if st.profile.as_ref().is_some_and(|p| p.name == name) {
            selected += 1;
        } else if st.conflicting_profiles.contains(&name) {
            let others = st.conflicting_profiles.iter().filter(|p| **p != name).cloned().collect();
            conflicts.push(ProfileConflict { application: ap.spec.application.name.clone(), profiles: others });
        }
    }
    conflicts.sort_by(|a, b| a.application.cmp(&b.application));
    let conflicting = conflicts.len();
    conflicts.truncate(20);

    let facts_check = AppFacts { name: "", project: "", labels: &Default::default() };
    let (ready, reason, message) = if let Err(e) = selection::selects(&profile, &facts_check) {
        (
            "False",
            Reason::InvalidSelector,
            format!("{e}; no Application is protected by this profile until it is fixed"),
        )
    } else if conflicting > 0 {
        let list: Vec<String> =
            conflicts.iter().map(|c| format!("{} (also {})", c.application, c.profiles.join(", "))).collect();
        (
            "False",
            Reason::ProfileConflict,
            format!(
                "{conflicting} Application(s) are selected by other profiles too, and nothing is vouched for them: {}. Narrow the applicationSelectors so each Application has one profile",
                list.join("; ")
            ),
        )
    } else {
        ("True", Reason::Active, format!("selects {selected} Application(s)"))
    };

    let generation = profile.metadata.generation;
    let previous = profile.status.as_ref();
    let keep_time = previous
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == status::READY && c.status == ready))
        .map(|c| c.last_transition_time.clone());
    let new_status = IntegrityProfileStatus {
        observed_generation: generation,
        selected_applications: selected,
        conflicting_applications: i32::try_from(conflicting).unwrap_or(i32::MAX),
        conflicts,
        summary: Some(ProfileSummary {
            source_mode: profile.spec.strongest_source_mode().as_str().into(),
            enforcement: profile.spec.enforcement.as_ref().map(|e| e.mode).unwrap_or_default().as_str().into(),
        }),
        conditions: vec![Condition {
            type_: status::READY.into(),
            status: ready.into(),
            reason: reason.into(),
            message,
            observed_generation: generation,
            last_transition_time: keep_time.unwrap_or_else(|| Time(Timestamp::now())),
        }],
    };
    if previous != Some(&new_status) {
        let patch = json!({
            "apiVersion": "weft.dev/v1alpha1",
            "kind": "IntegrityProfile",
            "status": serde_json::to_value(&new_status).map_err(|source| ControllerError::Serialize { what: "status", source })?,
        });
        let api: Api<IntegrityProfile> = Api::namespaced(ctx.client.clone(), &ns);
        api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
        info!(profile = %name, namespace = %ns, selected, conflicting, reason = %reason, "recorded profile status");
    }
    ctx.failures.reset(&key("IntegrityProfile", &ns, &name));
    Ok(Action::requeue(ctx.resync))
}
