//! The Kubernetes adapter: watches Applications and IntegrityProfiles, computes each Application's
//! verdict with the pure core (`selection`, `target`, `status`) and writes it as the
//! `ApplicationProvenance` owned by that Application, by server-side apply.
//!
//! Namespaces are independent (a profile selects Applications in its own namespace), so each watched
//! namespace, or the whole cluster, runs its own pair of controllers and needs only namespaced access.

use crate::reason::{Category, Dependency, Reason};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::future::{BoxFuture, FutureExt, Shared};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::utils::PredicateConfig;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use thiserror::Error;
use tracing::{debug, info, warn};

use crate::pipeline::{Engine, Job, PipelineOutcome, Quiet};
use crate::resources::argocd::{self, Application};
use crate::resources::profile::{IntegrityProfile, IntegrityProfileStatus, ProfileConflict, ProfileSummary};
use crate::resources::provenance::{ApplicationProvenance, ApplicationProvenanceStatus, ProfileRef, WorkUnit};
use crate::selection::{self, AppFacts, Selection};
use crate::source::verify::SourceVerifier;
use crate::status::{self, Governance, Observation, Step, StepError, StepReport, StepState, Subject};
use crate::target;

pub const FIELD_MANAGER: &str = "weft-controller";

#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Namespaces to watch (Applications, profiles and provenance live together); all when empty.
    #[arg(long = "namespace", env = "WEFT_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// How often what each Application's verdict depends on is read again (the profile's keys, the
    /// repository credentials, the AppProject): a change is a new unit of work. Unchanged, it costs
    /// those reads and nothing else.
    #[arg(long, env = "WEFT_RESYNC_SECONDS", default_value_t = 600)]
    pub resync_seconds: u64,
    /// How often a recorded revision's signatures are checked again against the keys as they are now
    /// (a key may have expired): signature checks only, never a render, registry or log call. 0: never.
    #[arg(long, env = "WEFT_REVERIFY_SECONDS", default_value_t = 3600)]
    pub reverify_seconds: u64,
    /// How many Applications are reconciled at once (reads from the apiserver; the CPU-heavy part is
    /// bounded by --concurrency).
    #[arg(long, env = "WEFT_RECONCILE_CONCURRENCY", default_value_t = 16)]
    pub reconcile_concurrency: u16,
    /// Namespace of Argo CD's repository Secrets and known-hosts ConfigMap.
    #[arg(long, env = "WEFT_ARGOCD_NAMESPACE", default_value = "argocd")]
    pub argocd_namespace: String,
    /// Where fetched repositories are cached (bounded by --max-cached-repos).
    #[arg(long, env = "WEFT_CACHE_DIR")]
    pub cache_dir: Option<std::path::PathBuf>,
    #[arg(long, env = "WEFT_MAX_CACHED_REPOS", default_value_t = 256)]
    pub max_cached_repos: usize,
    /// How many verifications run at once (each uses every core for signature checks).
    #[arg(long, env = "WEFT_CONCURRENCY", default_value_t = 4)]
    pub concurrency: usize,
    /// How Argo CD tracks the objects it applies (argocd-cm `application.resourceTrackingMethod`); the
    /// signed manifests carry the same metadata.
    #[arg(long, env = "WEFT_TRACKING_METHOD", value_enum, default_value_t = TrackingArg::Annotation)]
    pub tracking_method: TrackingArg,
    /// Largest rendered document accepted, in bytes.
    #[arg(long, env = "WEFT_MAX_DOCUMENT_BYTES", default_value_t = 1024 * 1024)]
    pub max_document_bytes: usize,
    /// Identifies this Weft installation in provenance (`runDetails.builder.id`).
    #[arg(long, env = "WEFT_BUILDER_ID", default_value = "https://weft.dev/builders/controller")]
    pub builder_id: String,
    #[command(flatten)]
    pub images: ImageCacheOptions,
    #[command(flatten)]
    pub kube_api: crate::kubeclient::RateLimit,
    /// Elect a leader among replicas on a Lease in this namespace (Weft's own); without it, run only
    /// one replica.
    #[arg(long, env = "WEFT_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    #[arg(long, env = "WEFT_LEADER_ELECTION_LEASE", default_value = "weft-controller")]
    pub leader_election_lease: String,
    /// How long a leader holds the Lease without renewing it before another replica takes over.
    #[arg(long, env = "WEFT_LEADER_ELECTION_SECONDS", default_value_t = 15)]
    pub leader_election_seconds: u64,
    /// Split the Applications among replicas in this many shards (by a hash of their UID), each held
    /// by a Lease `<lease>-shard-<i>` in the leader election namespace; 1: one leader does all.
    #[arg(long, env = "WEFT_SHARDS", default_value_t = 1, requires = "leader_election_namespace")]
    pub shards: u32,
    /// Serve `/healthz`, `/readyz` and `/metrics` over plain HTTP on this address.
    #[arg(long, env = "WEFT_HEALTH_LISTEN")]
    pub health_listen: Option<std::net::SocketAddr>,
}

/// Image verification's verdict cache and registry limits (shared with `weft verify-images`).
#[derive(clap::Args, Debug, Clone)]
pub struct ImageCacheOptions {
    /// How long a verified image digest stays verified before its signatures are read again.
    #[arg(long, env = "WEFT_IMAGE_CACHE_SUCCESS_SECONDS", default_value_t = 600)]
    pub image_cache_success_seconds: u64,
    /// How long a failed image digest stays failed (short, so a newly added signature is seen soon).
    #[arg(long, env = "WEFT_IMAGE_CACHE_FAILURE_SECONDS", default_value_t = 60)]
    pub image_cache_failure_seconds: u64,
    /// Images checked at once against any one registry.
    #[arg(long, env = "WEFT_REGISTRY_CONCURRENCY", default_value_t = 4)]
    pub registry_concurrency: usize,
}

impl ImageCacheOptions {
    pub fn settings(&self) -> crate::images::Settings {
        crate::images::Settings {
            success_ttl: Duration::from_secs(self.image_cache_success_seconds),
            failure_ttl: Duration::from_secs(self.image_cache_failure_seconds),
            per_registry: self.registry_concurrency,
        }
    }
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum TrackingArg {
    Annotation,
    Label,
    #[value(name = "annotation+label")]
    AnnotationAndLabel,
}

impl From<TrackingArg> for crate::manifest::TrackingMethod {
    fn from(t: TrackingArg) -> Self {
        match t {
            TrackingArg::Annotation => crate::manifest::TrackingMethod::Annotation,
            TrackingArg::Label => crate::manifest::TrackingMethod::Label,
            TrackingArg::AnnotationAndLabel => crate::manifest::TrackingMethod::AnnotationAndLabel,
        }
    }
}

#[derive(Debug, Error)]
pub enum ControllerError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("cannot connect to Kubernetes: {0}")]
    Connect(#[source] kube::Error),
    #[error("cannot serialize {what}: {source}")]
    Serialize { what: &'static str, source: serde_json::Error },
    #[error("lost the leader Lease; stopping so that only one replica works")]
    LostLease,
    #[error("cannot serve health checks on {0}: {1}")]
    Health(std::net::SocketAddr, std::io::Error),
}

/// State shared by the reconcilers of one scope (a namespace, or the whole cluster).
struct Context {
    client: Client,
    engine: Arc<Engine>,
    profiles: Store<IntegrityProfile>,
    provenances: Store<ApplicationProvenance>,
    resync: Duration,
    /// How often a recorded revision's signatures are checked again; `None`: never.
    reverify: Option<Duration>,
    recorder: Recorder,
    failures: Backoffs,
    /// The shards this replica works on, when replicas split the Applications.
    shards: Option<Arc<crate::shards::Shards>>,
    /// What each profile refers to, read once for the Applications reconciled together.
    bags: Mutex<HashMap<BagKey, (std::time::Instant, Arc<crate::deref::Bag>)>>,
}

/// A profile (by UID and generation) in a namespace, with an AppProject.
type BagKey = (String, i64, String);

/// How long the objects a profile refers to, once read, serve other Applications of that profile: long
/// enough that a namespace's Applications share one read at startup or on a profile change, short next
/// to the resync period in which a rotated key is noticed anyway.
const BAG_TTL: Duration = Duration::from_secs(10);
const MAX_BAGS: usize = 1024;
/// Objects failing at once beyond this many share one backoff slot (the map never grows past it).
const MAX_BACKOFF_ENTRIES: usize = 10_000;

type ShutdownSignal = Shared<BoxFuture<'static, ()>>;

/// Runs until SIGTERM or Ctrl-C, then finishes the reconciles in flight.
pub async fn run(opts: Options) -> Result<(), ControllerError> {
    let reverify = (opts.reverify_seconds > 0).then(|| Duration::from_secs(opts.reverify_seconds));
    let client = crate::kubeclient::client(Some(opts.kube_api)).await.map_err(ControllerError::Connect)?;
    let shutdown: ShutdownSignal = shutdown_signal().boxed().shared();
    let scopes: Vec<Option<String>> =
        if opts.namespaces.is_empty() { vec![None] } else { opts.namespaces.iter().cloned().map(Some).collect() };

    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Some(addr) = opts.health_listen {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| ControllerError::Health(addr, e))?;
        tokio::spawn(crate::health::serve(listener, ready.clone()));
    }
    if !wait_for_crds(&client, &scopes, shutdown.clone()).await {
        return Ok(());
    }
    let identity = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .map(|h| format!("{h}-{}", std::process::id()))
        .unwrap_or_else(|_| format!("weft-{}", std::process::id()));
    let duration = Duration::from_secs(opts.leader_election_seconds.max(3));
    let lease = &opts.leader_election_lease;
    let (elector, shards) = match &opts.leader_election_namespace {
        Some(ns) if opts.shards > 1 => (
            None,
            Some(Arc::new(crate::shards::Shards::new(client.clone(), ns, lease, &identity, opts.shards, duration))),
        ),
        Some(ns) => (Some(crate::lease::Elector::new(client.clone(), ns, lease, identity, duration)), None),
        None => (None, None),
    };
    // Ready means able to serve: a standby replica is ready too (it takes over without a restart).
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(elector) = &elector {
        tokio::select! {
            _ = elector.acquire() => {}
            _ = shutdown.clone() => return Ok(()),
        }
    }
    info!(namespaces = ?opts.namespaces, "weft controller started");
    let resync = Duration::from_secs(opts.resync_seconds.max(1));
    let engine = Arc::new(Engine {
        verifier: Arc::new(SourceVerifier::new(
            opts.cache_dir.clone().unwrap_or_else(crate::commands::verify_source::default_cache_dir),
            opts.max_cached_repos,
        )),
        tools: crate::render::Tools::default(),
        limits: crate::manifest::Limits { max_document_bytes: opts.max_document_bytes, ..Default::default() },
        tracking: opts.tracking_method.into(),
        argocd_namespace: opts.argocd_namespace.clone(),
        permits: tokio::sync::Semaphore::new(opts.concurrency.max(1)),
        builder_id: opts.builder_id.clone(),
        images: Arc::new(crate::images::ImageVerifier::new(opts.images.settings())),
        discovery: Some(crate::cluster::ScopeDiscovery::new(client.clone())),
        keys: Default::default(),
    });
    let timers = Timers { resync, reverify, concurrency: opts.reconcile_concurrency.max(1) };
    if let Some(shards) = &shards {
        // The first shards before the first reconcile; later ones are announced (subscribed below).
        shards.tick().await;
    }
    let runs = scopes.into_iter().map(|ns| {
        let sharding = shards.as_ref().map(|s| (s.clone(), s.gained()));
        run_scope(client.clone(), ns, timers, engine.clone(), sharding, shutdown.clone())
    });
    let work = futures::future::join_all(runs);
    if let Some(shards) = shards {
        tokio::select! {
            _ = work => {}
            _ = shards.run() => {}
        }
        shards.release().await;
        info!("weft controller stopped");
        return Ok(());
    }
    let Some(elector) = elector else {
        work.await;
        info!("weft controller stopped");
        return Ok(());
    };
    tokio::select! {
        _ = work => {
            elector.release().await;
            info!("weft controller stopped");
            Ok(())
        }
        _ = elector.keep() => Err(ControllerError::LostLease),
    }
}

fn api<K>(client: &Client, ns: &Option<String>) -> Api<K>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    info!("shutdown requested; finishing reconciles in flight");
}

/// Waits (with backoff) until the Application, IntegrityProfile and ApplicationProvenance resources are
/// served, instead of crashing when a CRD is not installed yet. False when shutdown came first.
async fn wait_for_crds(client: &Client, scopes: &[Option<String>], shutdown: ShutdownSignal) -> bool {
    let mut delay = Duration::from_secs(1);
    loop {
        let mut missing = Vec::new();
        for ns in scopes {
            let lp = ListParams::default().limit(1);
            let checks = [
                (
                    "applications.argoproj.io (Argo CD's CRD)",
                    api::<Application>(client, ns).list_metadata(&lp).await.err(),
                ),
                ("integrityprofiles.weft.dev", api::<IntegrityProfile>(client, ns).list_metadata(&lp).await.err()),
                (
                    "applicationprovenances.weft.dev",
                    api::<ApplicationProvenance>(client, ns).list_metadata(&lp).await.err(),
                ),
            ];
            for (name, err) in checks {
                if let Some(e) = err {
                    missing.push(format!("{name}: {}", short_error(&e)));
                }
            }
        }
        if missing.is_empty() {
            return true;
        }
        warn!(
            missing = %missing.join("; "),
            retry_in = ?delay,
            "waiting for CRDs to be served (install Weft's with `weft crds | kubectl apply -f -`)"
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.clone() => return false,
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

fn short_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if s.code == 404 => "not installed".into(),
        other => other.to_string(),
    }
}

/// A cache of one resource kind, filled by its own watch task, whose changes are forwarded to the
/// controllers that asked for them. Each asks only for the news it acts on (`News`): an event whose news
/// did not change since the last one forwarded is dropped, so status churn wakes nobody. Deletions are
/// always forwarded. The initial list is not (every controller starts by reconciling its own objects).
/// Readiness is awaited once, before the controllers start, so reconciles never wait on a half-filled
/// cache.
struct Mirror<K: Resource + Clone + 'static>
where
    K::DynamicType: std::hash::Hash + Eq,
{
    store: Store<K>,
    task: tokio::task::JoinHandle<()>,
}

type Events<K> = futures::channel::mpsc::UnboundedReceiver<Result<K, watcher::Error>>;

/// What one controller acts on in an object, as a hash.
type News<K> = fn(&K) -> u64;

fn hash_of(v: &impl std::hash::Hash) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(v)
}

fn mirror<K, const N: usize>(api: Api<K>, what: &'static str, news: [News<K>; N]) -> (Mirror<K>, [Events<K>; N])
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let channels: [_; N] = std::array::from_fn(|_| futures::channel::mpsc::unbounded());
    let senders: Vec<_> = channels.iter().map(|(tx, _)| tx.clone()).collect();
    let receivers = channels.map(|(_, rx)| rx);
    let mut seen: Vec<HashMap<String, u64>> = vec![HashMap::new(); N];
    let mut listed = false;
    let stream = watcher(api, watcher::Config::default()).default_backoff().reflect(writer);
    let task = tokio::spawn(stream.for_each(move |event| {
        match event {
            Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => {
                let uid = obj.meta().uid.clone().unwrap_or_default();
                for ((tx, seen), news) in senders.iter().zip(&mut seen).zip(&news) {
                    let h = news(&obj);
                    if seen.insert(uid.clone(), h) != Some(h) && listed {
                        let _ = tx.unbounded_send(Ok(obj.clone()));
                    }
                }
            }
            Ok(watcher::Event::Delete(obj)) => {
                let uid = obj.meta().uid.clone().unwrap_or_default();
                for (tx, seen) in senders.iter().zip(&mut seen) {
                    seen.remove(&uid);
                    let _ = tx.unbounded_send(Ok(obj.clone()));
                }
            }
            Ok(watcher::Event::InitDone) => listed = true,
            Ok(watcher::Event::Init) => {}
            Err(e) => warn!(resource = what, error = %e, "watch failed; retrying with backoff"),
        }
        std::future::ready(())
    }));
    (Mirror { store, task }, receivers)
}

/// What a profile change means to its Applications: its spec (the generation), not its status.
fn profile_news(p: &IntegrityProfile) -> u64 {
    hash_of(&p.metadata.generation)
}

/// What a provenance change means to its Application: its spec or ownership changed (someone else
/// wrote it), never Weft's own status write.
fn provenance_news(ap: &ApplicationProvenance) -> u64 {
    let owners: Vec<(&str, Option<bool>)> =
        ap.owner_references().iter().map(|o| (o.uid.as_str(), o.controller)).collect();
    hash_of(&(ap.metadata.generation, owners))
}

/// What a provenance change means to the profiles' counts: which profile it names or conflicts on.
fn selection_news(ap: &ApplicationProvenance) -> u64 {
    let s = ap.status.as_ref();
    hash_of(&(s.and_then(|s| s.profile.as_ref().map(|p| p.name.as_str())), s.map(|s| &s.conflicting_profiles)))
}

/// What in an Application can change its verdict: its identity, labels (profile selection),
/// annotations (image policy overrides), spec, and the revisions it targets and where they were seen.
/// Argo CD's status writes (health, reconciledAt, resources, its generation bump) change none of it.
fn application_news(guard: &DeserializeGuard<Application>) -> Option<u64> {
    Some(match &guard.0 {
        Ok(app) => {
            let target = target::sync_target(app).map_err(|e| e.to_string());
            let facts = json!({
                "uid": app.metadata.uid,
                "labels": app.metadata.labels,
                "annotations": app.metadata.annotations.as_ref().map(|a| a.iter().filter(|(k, _)| !k.starts_with("kubectl.kubernetes.io/")).collect::<Vec<_>>()),
                "spec": app.spec,
                "target": target.as_ref().map(|t| t.as_ref().map(|t| (&t.sources, format!("{:?}", t.origin)))).ok(),
                "invalid": target.err(),
            });
            hash_of(&facts.to_string())
        }
        Err(invalid) => hash_of(&(&invalid.metadata.uid, &invalid.error)),
    })
}

#[derive(Clone, Copy)]
struct Timers {
    resync: Duration,
    reverify: Option<Duration>,
    concurrency: u16,
}

async fn run_scope(
    client: Client,
    ns: Option<String>,
    timers: Timers,
    engine: Arc<Engine>,
    sharding: Option<(Arc<crate::shards::Shards>, tokio::sync::broadcast::Receiver<u32>)>,
    shutdown: ShutdownSignal,
) {
    let (shards, gained) = match sharding {
        Some((s, g)) => (Some(s), Some(g)),
        None => (None, None),
    };
    let (profiles, [profile_events]) =
        mirror::<IntegrityProfile, 1>(api(&client, &ns), "IntegrityProfile", [profile_news]);
    let (provenances, [provenance_events, provenance_events_for_profiles]) = mirror::<ApplicationProvenance, 2>(
        api(&client, &ns),
        "ApplicationProvenance",
        [provenance_news, selection_news],
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
        engine,
        profiles: profiles.store.clone(),
        provenances: provenances.store.clone(),
        resync: timers.resync,
        reverify: timers.reverify,
        recorder: Recorder::new(client.clone(), Reporter { controller: FIELD_MANAGER.into(), instance: None }),
        failures: Backoffs::default(),
        bags: Mutex::new(HashMap::new()),
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
                    uid.is_some_and(|u| crate::shards::shard_of(u, count) == shard)
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
    let profile_controller = Controller::new(api::<IntegrityProfile>(&client, &ns), watcher::Config::default())
        .with_config(kube::runtime::controller::Config::default().debounce(Duration::from_secs(2)));
    let profile_store = profile_controller.store();
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
fn applications_to_requeue(
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

/// The unit of work, as a digest (see `WorkUnit`).
fn work_unit(
    app: &Application,
    target: &target::SyncTarget,
    profile: &IntegrityProfile,
    bag: &crate::deref::Bag,
    engine: &Engine,
) -> String {
    use sha2::{Digest, Sha256};
    let facts = json!({
        "weft": env!("CARGO_PKG_VERSION"),
        "application": {"uid": app.metadata.uid, "spec": app.spec},
        // The revisions, not where they were first seen (a sync operation, then the sync status).
        "target": target.sources,
        "profile": {"uid": profile.metadata.uid, "spec": profile.spec},
        "objects": bag.fingerprint(
            &target.sources.iter().map(|s| s.repo_url.as_str()).collect::<Vec<_>>(),
            Some(app.spec.project.as_deref().filter(|p| !p.is_empty()).unwrap_or("default")),
        ),
        "settings": {"tracking": format!("{:?}", engine.tracking), "builder": engine.builder_id,
                     "limits": format!("{:?}", engine.limits)},
    });
    hex::encode(Sha256::digest(facts.to_string().as_bytes()))
}

/// The record, and when it was made, when it records this unit with a settled verdict (one a refusal
/// gave only until the resync period has passed).
fn recorded<'s>(
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
fn aligned(period: Duration, key: &str, now: Timestamp) -> Duration {
    let period = period.as_secs().max(1);
    let offset = hash_of(&key) % period;
    let into = (u64::try_from(now.as_second()).unwrap_or_default() + offset) % period;
    Duration::from_secs(period - into)
}

/// How long ago `at` was (zero for a time in the future, such as a skewed clock's).
fn age(at: Timestamp) -> Duration {
    Duration::try_from(Timestamp::now().duration_since(at)).unwrap_or_default()
}

/// Whether the record's sources passed verification (only those are worth checking again).
fn source_passed(status: &ApplicationProvenanceStatus) -> bool {
    status.conditions.iter().any(|c| c.type_ == Step::SourceVerified.condition_type() && c.status == "True")
}

async fn write_status(
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
async fn settled(
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
    let bag = ctx.bag(ns, &p, project).await.ok()?;
    let unit = work_unit(app, target, &p, &bag, &ctx.engine);
    let (_, at) = recorded(status, &unit, ctx.resync)?;
    let left = ctx.reverify_in(status, at);
    if left.is_some_and(|l| l.is_zero()) {
        return None; // re-verification is due: the slow path does it
    }
    Some(ctx.next_check(p.metadata.uid.as_deref(), left))
}

/// Whether a record is the one Weft wrote for the Application `name` with `uid`: for it, and owned by it
/// as its controller. Anything else (an edited spec, a dropped owner) is written again.
fn is_own_record(ap: &ApplicationProvenance, name: &str, uid: &str) -> bool {
    ap.spec.application.name == name && ap.owner_references().iter().any(|o| o.uid == uid && o.controller == Some(true))
}

impl Context {
    /// How long until a record's revision is re-verified: zero when due now, `None` when never
    /// (re-verification is off, or the record's sources did not pass: there is nothing to check again).
    fn reverify_in(&self, status: &ApplicationProvenanceStatus, at: Timestamp) -> Option<Duration> {
        self.reverify.filter(|_| source_passed(status)).map(|every| every.saturating_sub(age(at)))
    }

    /// The UID of profile `name` in `ns`, from the cache.
    fn profile_uid(&self, ns: &str, name: &str) -> Option<String> {
        self.profiles.get(&ObjectRef::new(name).within(ns))?.metadata.uid.clone()
    }

    /// When a settled record of `profile`'s is looked at again: at the profile's next resync tick, or
    /// when its re-verification is due (`reverify_in`) if sooner. The ticks are the same for every
    /// Application of a profile, so they share one read of what the profile refers to (`bag`).
    fn next_check(&self, profile: Option<&str>, reverify_in: Option<Duration>) -> Duration {
        let tick = aligned(self.resync, profile.unwrap_or_default(), Timestamp::now());
        let reverify = reverify_in.or(self.reverify).filter(|d| !d.is_zero());
        reverify.map_or(tick, |r| r.min(tick))
    }

    /// What `profile` refers to, with the AppProject, shared for `BAG_TTL` by the Applications
    /// reconciled together.
    async fn bag(
        &self,
        ns: &str,
        profile: &IntegrityProfile,
        project: &str,
    ) -> Result<Arc<crate::deref::Bag>, crate::deref::DerefError> {
        let key: BagKey = (
            profile.metadata.uid.clone().unwrap_or_default(),
            profile.metadata.generation.unwrap_or_default(),
            project.to_string(),
        );
        let lock = || self.bags.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, bag)) = lock().get(&key)
            && at.elapsed() < BAG_TTL.min(self.resync)
        {
            return Ok(bag.clone());
        }
        let argocd_ns = &self.engine.argocd_namespace;
        let bag = Arc::new(crate::cluster::bag(&self.client, ns, &profile.spec, argocd_ns, Some(project)).await?);
        let mut bags = lock();
        if bags.len() >= MAX_BAGS {
            bags.retain(|_, (at, _)| at.elapsed() < BAG_TTL.min(self.resync));
        }
        if bags.len() < MAX_BAGS {
            bags.insert(key, (std::time::Instant::now(), bag.clone()));
        }
        Ok(bag)
    }
}

/// The Application's AppProject, as Argo CD requires it: it must exist, and permit the Application's
/// namespace. Otherwise Argo CD does not sync the Application, and Weft does not fetch for it.
fn project_scope<'b>(
    bag: &'b crate::deref::Bag,
    project: &str,
    app_namespace: &str,
    argocd_namespace: &str,
) -> Result<&'b crate::source::access::ProjectRules, StepReport> {
    let Some(rules) = bag.projects.get(project) else {
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

fn facts_of(app: &Application) -> AppFacts<'_> {
    AppFacts {
        name: app.metadata.name.as_deref().unwrap_or_default(),
        project: app.spec.project.as_deref().unwrap_or("default"),
        labels: argocd::labels(&app.metadata),
    }
}

async fn reconcile_application(
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
                    let argocd_ns = &ctx.engine.argocd_namespace;
                    let project = app.spec.project.as_deref().filter(|p| !p.is_empty()).unwrap_or("default");
                    Some(match ctx.bag(&ns, p, project).await {
                        Ok(bag) => match project_scope(&bag, project, &ns, argocd_ns) {
                            Ok(rules) => {
                                let unit = work_unit(app, target, p, &bag, &ctx.engine);
                                let job = Job {
                                    profile: p,
                                    app,
                                    target,
                                    verified,
                                    bag: &bag,
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
                                            let report = ctx.engine.reverify(&job).await;
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
                                    ctx.engine.run(job, &Quiet).await
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
fn verdict_event(previous: Option<&ApplicationProvenanceStatus>, new: &ApplicationProvenanceStatus) -> Option<Event> {
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
fn dependencies_pending(s: &ApplicationProvenanceStatus) -> Vec<Dependency> {
    s.conditions
        .iter()
        .filter(|c| c.status == "Unknown" && c.type_ != status::READY)
        .filter_map(|c| c.reason.parse::<Reason>().ok()?.category().dependency())
        .collect()
}

/// A Warning Event when images fail verification (permitted or not), once per change of what failed.
fn image_event(previous: Option<&ApplicationProvenanceStatus>, new: &ApplicationProvenanceStatus) -> Option<Event> {
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

fn governance(sel: Selection<'_>, ns: &str) -> Governance {
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

async fn reconcile_profile(profile: Arc<IntegrityProfile>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
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

/// A broadcast receiver as a stream (a lagging receiver skips what it missed).
fn stream_of(rx: tokio::sync::broadcast::Receiver<u32>) -> impl futures::Stream<Item = u32> {
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

fn key(kind: &str, ns: &str, name: &str) -> String {
    format!("{kind} {ns}/{name}")
}

fn backoff(ctx: &Context, key: String) -> Duration {
    ctx.failures.next(key)
}

/// Consecutive failures per object, for exponential backoff: 1 s, 2 s, 4 s … up to 5 minutes; reset by
/// a successful reconcile. At most `MAX_BACKOFF_ENTRIES` objects are counted apart; beyond that, the
/// newcomers share one count (they back off together, faster to the 5 minutes), so the map never grows
/// with a flood of failing objects.
#[derive(Default)]
struct Backoffs(Mutex<HashMap<String, u32>>);

impl Backoffs {
    fn next(&self, key: String) -> Duration {
        let mut f = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let key = if f.len() >= MAX_BACKOFF_ENTRIES && !f.contains_key(&key) { String::new() } else { key };
        let n = f.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        Duration::from_secs(1u64 << n.saturating_sub(1).min(9)).min(Duration::from_secs(300))
    }

    fn reset(&self, key: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

fn app_error_policy(guard: Arc<DeserializeGuard<Application>>, err: &ControllerError, ctx: Arc<Context>) -> Action {
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

fn profile_error_policy(profile: Arc<IntegrityProfile>, err: &ControllerError, ctx: Arc<Context>) -> Action {
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

    fn app(json: serde_json::Value) -> DeserializeGuard<Application> {
        DeserializeGuard(Ok(serde_json::from_value(json).unwrap()))
    }

    #[test]
    fn argo_cds_status_writes_are_no_news_but_a_new_revision_or_label_is() {
        let base = json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
            "metadata": {"name": "a", "namespace": "n", "uid": "u1", "generation": 3, "labels": {"team": "x"}},
            "spec": {"project": "default", "source": {"repoURL": "https://git.example/r.git", "path": "p"},
                     "destination": {"namespace": "d", "server": "https://kubernetes.default.svc"}},
            "status": {"sync": {"status": "Synced", "revision": "a".repeat(40)}, "health": {"status": "Healthy"},
                       "reconciledAt": "2026-01-01T00:00:00Z"},
        });
        let news = |v: &serde_json::Value| application_news(&app(v.clone())).unwrap();
        let before = news(&base);

        let mut refreshed = base.clone();
        refreshed["metadata"]["generation"] = json!(4);
        refreshed["metadata"]["resourceVersion"] = json!("99");
        refreshed["status"]["reconciledAt"] = json!("2026-01-01T00:03:00Z");
        refreshed["status"]["health"]["status"] = json!("Progressing");
        assert_eq!(news(&refreshed), before, "a refresh changes nothing Weft acts on");

        for (path, value) in [
            (vec!["status", "sync", "revision"], json!("b".repeat(40))),
            (vec!["metadata", "labels", "team"], json!("y")),
            (vec!["metadata", "uid"], json!("u2")),
            (vec!["spec", "source", "path"], json!("q")),
            (vec!["metadata", "annotations"], json!({"weft.dev/image-policy": "strict"})),
            (vec!["operation"], json!({"sync": {"revision": "c".repeat(40)}})),
        ] {
            let mut changed = base.clone();
            let mut at = &mut changed;
            for p in &path[..path.len() - 1] {
                at = &mut at[*p];
            }
            at[path[path.len() - 1]] = value;
            assert_ne!(news(&changed), before, "{path:?} is news");
        }
    }
}
