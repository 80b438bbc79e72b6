//! The Kubernetes adapter: watches Applications and IntegrityProfiles, computes each Application's
//! verdict with the pure core (`selection`, `target`, `status`) and writes it as the
//! `ApplicationProvenance` owned by that Application, by server-side apply.
//!
//! Namespaces are independent (a profile selects Applications in its own namespace), so each watched
//! namespace, or the whole cluster, runs its own pair of controllers and needs only namespaced access.

mod application;
mod informer;
mod profile;
mod scope;

use scope::{Timers, run_scope};

use std::sync::Arc;
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};
use kube::api::ListParams;
use kube::{Api, Client, Resource};
use thiserror::Error;
use tracing::{info, warn};

use crate::pipeline::Pipeline;
use crate::resources::argocd::Application;
use crate::resources::profile::IntegrityProfile;
use crate::resources::provenance::ApplicationProvenance;
use crate::source::verify::SourceVerifier;

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
    #[arg(long, env = "WEFT_TRACKING_METHOD", value_enum, default_value_t = crate::render::manifest::TrackingMethod::Annotation)]
    pub tracking_method: crate::render::manifest::TrackingMethod,
    /// Largest rendered document accepted, in bytes.
    #[arg(long, env = "WEFT_MAX_DOCUMENT_BYTES", default_value_t = 1024 * 1024)]
    pub max_document_bytes: usize,
    /// Identifies this Weft installation in provenance (`runDetails.builder.id`).
    #[arg(long, env = "WEFT_BUILDER_ID", default_value = "https://weft.dev/builders/controller")]
    pub builder_id: String,
    #[command(flatten)]
    pub images: ImageCacheOptions,
    #[command(flatten)]
    pub kube_api: crate::kubernetes::client::RateLimit,
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

type ShutdownSignal = Shared<BoxFuture<'static, ()>>;

/// Runs until SIGTERM or Ctrl-C, then finishes the reconciles in flight.
pub async fn run(opts: Options) -> Result<(), ControllerError> {
    let reverify = (opts.reverify_seconds > 0).then(|| Duration::from_secs(opts.reverify_seconds));
    let client = crate::kubernetes::client::client(Some(opts.kube_api)).await.map_err(ControllerError::Connect)?;
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
            Some(Arc::new(crate::kubernetes::shards::Shards::new(
                client.clone(),
                ns,
                lease,
                &identity,
                opts.shards,
                duration,
            ))),
        ),
        Some(ns) => (Some(crate::kubernetes::lease::Elector::new(client.clone(), ns, lease, identity, duration)), None),
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
    let pipeline = Arc::new(Pipeline {
        verifier: Arc::new(SourceVerifier::new(
            opts.cache_dir.clone().unwrap_or_else(crate::source::fetch::default_cache_dir),
            opts.max_cached_repos,
        )),
        tools: crate::render::Tools::default(),
        limits: crate::render::manifest::Limits { max_document_bytes: opts.max_document_bytes, ..Default::default() },
        tracking: opts.tracking_method,
        argocd_namespace: opts.argocd_namespace.clone(),
        permits: tokio::sync::Semaphore::new(opts.concurrency.max(1)),
        builder_id: opts.builder_id.clone(),
        images: Arc::new(crate::images::ImageVerifier::new(opts.images.settings())),
        discovery: Some(Box::new(crate::kubernetes::discovery::ScopeDiscovery::new(client.clone()))),
        keys: Default::default(),
    });
    let timers = Timers { resync, reverify, concurrency: opts.reconcile_concurrency.max(1) };
    if let Some(shards) = &shards {
        // The first shards before the first reconcile; later ones are announced (subscribed below).
        shards.tick().await;
    }
    let runs = scopes.into_iter().map(|ns| {
        let sharding = shards.as_ref().map(|s| (s.clone(), s.gained()));
        run_scope(client.clone(), ns, timers, pipeline.clone(), sharding, shutdown.clone())
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
