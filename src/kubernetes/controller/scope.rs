//! One scope (a namespace, or the whole cluster): its caches, its two controllers, what re-queues what,
//! and the backoff of objects that fail.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::future::FutureExt;
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::utils::PredicateConfig;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tracing::{debug, warn};

use crate::pipeline::Pipeline;
use crate::resources::argocd::Application;
use crate::resources::profile::IntegrityProfile;
use crate::resources::provenance::ApplicationProvenance;
use crate::selection::{self};

use super::ControllerError;
use super::FIELD_MANAGER;
use super::ShutdownSignal;
use super::api;
use super::application::facts_of;
use super::application::reconcile_application;
use super::informer::application_news;
use super::informer::provenance_news;
use super::informer::selection_news;
use super::informer::{Subscriber, informer};
use super::informer::{profile_news, profile_status_news};
use super::profile::reconcile_profile;

/// State shared by the reconcilers of one scope (a namespace, or the whole cluster).
pub(super) struct Context {
    pub(super) client: Client,
    pub(super) pipeline: Arc<Pipeline>,
    pub(super) profiles: Store<IntegrityProfile>,
    pub(super) provenances: Store<ApplicationProvenance>,
    pub(super) resync: Duration,
    /// How often a recorded revision's signatures are checked again; `None`: never.
    pub(super) reverify: Option<Duration>,
    pub(super) recorder: Recorder,
    pub(super) failures: Backoffs,
    /// The shards this replica works on, when replicas split the Applications.
    pub(super) shards: Option<Arc<crate::kubernetes::shards::Shards>>,
    /// What each profile refers to, read once for the Applications reconciled together.
    pub(super) referenced_by_profile:
        Mutex<HashMap<ReferencedKey, (std::time::Instant, Arc<crate::referenced::ReferencedObjects>)>>,
}

/// A profile (by UID and generation) in a namespace, with an AppProject.
pub(super) type ReferencedKey = (String, i64, String);

/// How long the objects a profile refers to, once read, serve other Applications of that profile: long
/// enough that a namespace's Applications share one read at startup or on a profile change, short next
/// to the resync period in which a rotated key is noticed anyway.
pub(super) const REFERENCED_TTL: Duration = Duration::from_secs(10);
pub(super) const MAX_REFERENCED: usize = 1024;
/// Objects failing at once beyond this many share one backoff slot (the map never grows past it).
pub(super) const MAX_BACKOFF_ENTRIES: usize = 10_000;

#[derive(Clone, Copy)]
pub(super) struct Timers {
    pub(super) resync: Duration,
    pub(super) reverify: Option<Duration>,
    pub(super) concurrency: u16,
}

pub(super) async fn run_scope(
    client: Client,
    ns: Option<String>,
    timers: Timers,
    pipeline: Arc<Pipeline>,
    sharding: Option<(Arc<crate::kubernetes::shards::Shards>, tokio::sync::broadcast::Receiver<u32>)>,
    shutdown: ShutdownSignal,
) {
    let (shards, gained) = match sharding {
        Some((s, g)) => (Some(s), Some(g)),
        None => (None, None),
    };
    // One watch per kind: the Application controller is woken by a profile's spec changing and by a
    // record written by someone else; the profile controller by its profiles (from the start) and by
    // records naming another profile.
    let (profiles, [profile_events, profiles_to_reconcile]) = informer::<IntegrityProfile, 2>(
        api(&client, &ns),
        "IntegrityProfile",
        [Subscriber::changes(profile_news), Subscriber::everything(profile_status_news)],
    );
    let (provenances, [provenance_events, provenance_events_for_profiles]) = informer::<ApplicationProvenance, 2>(
        api(&client, &ns),
        "ApplicationProvenance",
        [Subscriber::changes(provenance_news), Subscriber::changes(selection_news)],
    );
    for (store_ready, what) in [
        (profiles.store.wait_until_ready().boxed(), "IntegrityProfile"),
        (provenances.store.wait_until_ready().boxed(), "ApplicationProvenance"),
    ] {
        tokio::select! {
            ready = store_ready => if ready.is_err() { warn!(resource = what, "cache writer dropped"); return; },
            _ = shutdown.clone() => return,
        }
    }

    let ctx = Arc::new(Context {
        client: client.clone(),
        pipeline,
        profiles: profiles.store.clone(),
        provenances: provenances.store.clone(),
        resync: timers.resync,
        reverify: timers.reverify,
        recorder: Recorder::new(client.clone(), Reporter { controller: FIELD_MANAGER.into(), instance: None }),
        failures: Backoffs::default(),
        referenced_by_profile: Mutex::new(HashMap::new()),
        shards: shards.clone(),
    });

    // Argo CD rewrites every Application's status every few minutes; only what can change a verdict
    // wakes a reconcile.
    let (app_store, app_writer) = reflector::store::<DeserializeGuard<Application>>();
    let app_stream = watcher(api::<DeserializeGuard<Application>>(&client, &ns), watcher::Config::default())
        .default_backoff()
        .reflect(app_writer)
        .applied_objects()
        .predicate_filter(application_news, PredicateConfig::default());
    let mut apps = Controller::for_stream(app_stream, app_store.clone())
        .with_config(kube::runtime::controller::Config::default().concurrency(timers.concurrency));
    if let (Some(shards), Some(gained)) = (&shards, gained) {
        // A shard taken over: its Applications now, not at their next event.
        let (store, count) = (app_store.clone(), shards.count());
        let gained = stream_of(gained).flat_map(move |shard| {
            let refs: Vec<_> = store
                .state()
                .iter()
                .filter(|a| {
                    let uid = match &a.0 {
                        Ok(app) => app.metadata.uid.as_deref(),
                        Err(i) => i.metadata.uid.as_deref(),
                    };
                    uid.is_some_and(|u| crate::kubernetes::shards::shard_of(u, count) == shard)
                })
                .map(|a| ObjectRef::from_obj(a.as_ref()))
                .collect();
            futures::stream::iter(refs)
        });
        apps = apps.reconcile_on(gained);
    }
    let requeue = {
        let (app_store, provenances) = (app_store.clone(), provenances.store.clone());
        move |p: IntegrityProfile| applications_to_requeue(&p, &app_store, &provenances)
    };
    let app_controller = apps
        .owns_stream(provenance_events)
        .watches_stream(profile_events, requeue)
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile_application, app_error_policy, ctx.clone())
        .for_each(|res| async move {
            if let Err(e) = res {
                debug!(error = %e, "application reconcile did not complete");
            }
        });

    // Profile status is derived from the provenance records: any change to one re-queues the profiles
    // of its namespace (there are few), so counts follow selections in both directions.
    // Debounced: at startup every Application's first record moves some profile's count.
    let profile_controller = Controller::for_stream(profiles_to_reconcile, profiles.store.clone())
        .with_config(kube::runtime::controller::Config::default().debounce(Duration::from_secs(2)));
    let profile_store = profiles.store.clone();
    let profile_controller = profile_controller
        .watches_stream(provenance_events_for_profiles, move |ap: ApplicationProvenance| {
            let ns = ap.namespace();
            profile_store
                .state()
                .into_iter()
                .filter(|p| p.namespace() == ns)
                .map(|p| ObjectRef::from_obj(p.as_ref()))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile_profile, profile_error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                debug!(error = %e, "profile reconcile did not complete");
            }
        });

    futures::future::join(app_controller, profile_controller).await;
    profiles.task.abort();
    provenances.task.abort();
}

/// A profile changed: re-queue the Applications it selects now, and those whose provenance names it
/// (what it selected before the change, or conflicted on).
pub(super) fn applications_to_requeue(
    profile: &IntegrityProfile,
    apps: &Store<DeserializeGuard<Application>>,
    provenances: &Store<ApplicationProvenance>,
) -> Vec<ObjectRef<DeserializeGuard<Application>>> {
    let ns = profile.namespace();
    let name = profile.name_any();
    let mut refs = BTreeSet::new();
    for app in apps.state() {
        let Ok(a) = &app.0 else { continue };
        if a.metadata.namespace != ns {
            continue;
        }
        let facts = facts_of(a);
        // An invalid selector may have selected anything: re-check them all.
        if selection::selects(profile, &facts).unwrap_or(true) {
            refs.insert((a.name_any(), ns.clone()));
        }
    }
    for ap in provenances.state() {
        if ap.namespace() != ns {
            continue;
        }
        let named = ap.status.as_ref().is_some_and(|s| {
            s.profile.as_ref().is_some_and(|p| p.name == name) || s.conflicting_profiles.contains(&name)
        });
        if named {
            refs.insert((ap.spec.application.name.clone(), ns.clone()));
        }
    }
    refs.into_iter()
        .map(|(n, ns)| {
            let r = ObjectRef::new(&n);
            match ns {
                Some(ns) => r.within(&ns),
                None => r,
            }
        })
        .collect()
}

/// A broadcast receiver as a stream (a lagging receiver skips what it missed).
pub(super) fn stream_of(rx: tokio::sync::broadcast::Receiver<u32>) -> impl futures::Stream<Item = u32> {
    futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(v) => return Some((v, rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

pub(super) fn key(kind: &str, ns: &str, name: &str) -> String {
    format!("{kind} {ns}/{name}")
}

pub(super) fn backoff(ctx: &Context, key: String) -> Duration {
    ctx.failures.next(key)
}

/// Consecutive failures per object, for exponential backoff: 1 s, 2 s, 4 s … up to 5 minutes; reset by
/// a successful reconcile. At most `MAX_BACKOFF_ENTRIES` objects are counted apart; beyond that, the
/// newcomers share one count (they back off together, faster to the 5 minutes), so the map never grows
/// with a flood of failing objects.
#[derive(Default)]
pub(super) struct Backoffs(Mutex<HashMap<String, u32>>);

impl Backoffs {
    pub(super) fn next(&self, key: String) -> Duration {
        let mut f = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let key = if f.len() >= MAX_BACKOFF_ENTRIES && !f.contains_key(&key) { String::new() } else { key };
        let n = f.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        Duration::from_secs(1u64 << n.saturating_sub(1).min(9)).min(Duration::from_secs(300))
    }

    pub(super) fn reset(&self, key: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

pub(super) fn app_error_policy(
    guard: Arc<DeserializeGuard<Application>>,
    err: &ControllerError,
    ctx: Arc<Context>,
) -> Action {
    let meta = match &guard.0 {
        Ok(a) => &a.metadata,
        Err(i) => &i.metadata,
    };
    let k = key("Application", meta.namespace.as_deref().unwrap_or_default(), meta.name.as_deref().unwrap_or_default());
    let delay = backoff(&ctx, k.clone());
    crate::metrics::reconciled("error");
    warn!(application = %k, error = %err, retry_in = ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

pub(super) fn profile_error_policy(profile: Arc<IntegrityProfile>, err: &ControllerError, ctx: Arc<Context>) -> Action {
    let k = key("IntegrityProfile", profile.namespace().as_deref().unwrap_or_default(), &profile.name_any());
    let delay = backoff(&ctx, k.clone());
    warn!(profile = %k, error = %err, retry_in = ?delay, "profile reconcile failed; retrying");
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_five_minutes_and_the_map_stays_bounded() {
        let b = Backoffs::default();
        let delays: Vec<u64> = (0..12).map(|_| b.next("a".into()).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        b.reset("a");
        assert_eq!(b.next("a".into()), Duration::from_secs(1));
        for i in 0..MAX_BACKOFF_ENTRIES + 500 {
            b.next(format!("app-{i}"));
        }
        let f = b.0.lock().unwrap();
        assert_eq!(f.len(), MAX_BACKOFF_ENTRIES + 1, "the newcomers share one slot");
        assert_eq!(f.get(""), Some(&501));
    }
}
