//! `weft webhook`: the validating admission webhook, over HTTPS. It keeps the ApplicationProvenances
//! and IntegrityProfiles in memory (watched), the signed manifest sets by digest, and answers each
//! AdmissionReview from them with `admission::decide`.

pub mod certs;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Response, StatusCode};
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::api::{DynamicObject, GroupVersionKind, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::Value;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tracing::{debug, info, warn};

use crate::admission::{self, AppEvidence, Decision, Request, Skips, matching};
use crate::manifest::{self, Limits, Manifest};
use crate::oci::Registry;
use crate::resources::argocd::Application;
use crate::resources::profile::{EnforcementMode, IntegrityProfile};
use crate::resources::provenance::{ApplicationProvenance, Verdict};
use crate::selection::{self, AppFacts, Selection};

const MAX_BODY: usize = 8 * 1024 * 1024;
const MAX_CACHED_SETS: usize = 512;

#[derive(Debug, Error)]
pub enum WebhookError {
    #[error("cannot connect to the cluster: {0}")]
    Connect(#[source] kube::Error),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("{0}")]
    Certificates(#[from] certs::CertError),
}

#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Address to serve HTTPS on.
    #[arg(long, env = "WEFT_WEBHOOK_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Namespace of Argo CD: Applications tracked without a namespace live there.
    #[arg(long, env = "WEFT_ARGOCD_NAMESPACE", default_value = "argocd")]
    pub argocd_namespace: String,
    #[command(flatten)]
    pub certs: certs::CertOptions,
    /// Namespaces whose objects are never checked (repeatable).
    #[arg(long = "skip-namespace", env = "WEFT_SKIP_NAMESPACES", value_delimiter = ',', default_value = "kube-system")]
    pub skip_namespaces: Vec<String>,
    /// Users whose requests are not checked (controllers that legitimately mutate objects); a trailing
    /// `*` matches a prefix (repeatable).
    #[arg(long = "skip-user", env = "WEFT_SKIP_USERS", value_delimiter = ',')]
    pub skip_users: Vec<String>,
    /// How Argo CD tracks the objects it applies (argocd-cm `application.resourceTrackingMethod`), as
    /// for the controller.
    #[arg(long, env = "WEFT_TRACKING_METHOD", value_enum, default_value_t = crate::controller::TrackingArg::Annotation)]
    pub tracking_method: crate::controller::TrackingArg,
    /// Kinds (`Kind` or `group/Kind`) that are not checked (repeatable). The default is what Argo CD's
    /// installation excludes from what it manages (argocd-cm `resource.exclusions`): the control plane
    /// writes Endpoints and EndpointSlices (copying a Service's labels onto its Endpoints), Argo CD never
    /// applies them.
    #[arg(
        long = "skip-kind",
        env = "WEFT_SKIP_KINDS",
        value_delimiter = ',',
        default_value = "Event,events.k8s.io/Event,coordination.k8s.io/Lease,Endpoints,discovery.k8s.io/EndpointSlice"
    )]
    pub skip_kinds: Vec<String>,
}

/// What answers reviews: the watched state and the manifest sets.
pub struct Checker {
    client: Client,
    provenances: Store<ApplicationProvenance>,
    profiles: Store<IntegrityProfile>,
    skips: Skips,
    tracking: crate::manifest::TrackingMethod,
    argocd_namespace: String,
    sets: Mutex<HashMap<String, Arc<Vec<Manifest>>>>,
    /// Signed manifests as the apiserver defaults them, per manifest image and object.
    defaults: Mutex<HashMap<String, Arc<Value>>>,
    recorder: Recorder,
}

impl Checker {
    /// Answers one AdmissionReview body.
    pub async fn review(&self, body: &[u8]) -> Value {
        let review: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return unreadable(&format!("not JSON: {e}")),
        };
        let req = match Request::parse(&review) {
            Ok(r) => r,
            Err(e) => return unreadable(&e.to_string()),
        };
        let started = std::time::Instant::now();
        let decision = self.decide(&req).await;
        let kind = match (decision.allowed, decision.audited) {
            (_, true) => "audited",
            (true, false) => "allowed",
            (false, false) => "denied",
        };
        crate::metrics::admission(kind, started.elapsed().as_secs_f64());
        debug!(
            object = %req.describe(), user = %req.username, allowed = decision.allowed, audited = decision.audited,
            detail = %decision.message, "admission review"
        );
        decision.review(&req.uid)
    }

    async fn decide(&self, req: &Request) -> Decision {
        if let Some(why) = self.skips.skipped(req) {
            return Decision::allow(why);
        }
        let Some(t) = matching::tracked(&req.object, self.tracking) else {
            return Decision::allow("not tracked by Argo CD");
        };
        // With label tracking, objects a controller makes from a labelled template (Pods of a
        // ReplicaSet, EndpointSlices of a Service) carry the label too; Argo CD applies no such object.
        if self.tracking == crate::manifest::TrackingMethod::Label
            && let Some(owner) = matching::controller_of(&req.object)
        {
            return Decision::allow(format!("made by its controller {owner}, not applied by Argo CD"));
        }
        let app_ns = t.app_namespace.clone().unwrap_or_else(|| self.argocd_namespace.clone());
        let key = ObjectRef::<ApplicationProvenance>::new(&t.app).within(&app_ns);
        let Some(ap) = self.provenances.get(&key) else {
            return self.unrecorded(req, &app_ns, &t.app).await;
        };
        let Some(status) = ap.status.as_ref() else {
            return self.unrecorded(req, &app_ns, &t.app).await;
        };
        if status.verdict == Verdict::Unprotected {
            return Decision::allow("the Application is not protected by Weft");
        }
        let profile = status
            .profile
            .as_ref()
            .and_then(|p| self.profiles.get(&ObjectRef::<IntegrityProfile>::new(&p.name).within(&app_ns)));
        let ready = status.conditions.iter().find(|c| c.type_ == crate::status::READY);
        let ev = AppEvidence {
            application: format!("{app_ns}/{}", t.app),
            verdict: status.verdict,
            revision: status.sources.first().map(|s| s.revision.clone()).unwrap_or_default(),
            reason: ready.map(|c| c.reason.clone()).unwrap_or_default(),
            message: ready.map(|c| c.message.clone()).unwrap_or_default(),
            manifest_image: status.manifest_image.clone(),
            images: status.images.clone(),
            mode: mode(profile.as_deref()),
            ignore_fields: profile
                .as_ref()
                .and_then(|p| p.spec.enforcement.as_ref())
                .map(|e| e.ignore_fields.clone())
                .unwrap_or_default(),
        };
        let set = match (&ev.manifest_image, matches!(ev.verdict, Verdict::Verified | Verdict::Permitted)) {
            (Some(image), true) => Some(self.manifests(image, profile.as_deref(), &app_ns).await),
            _ => None,
        };
        let decision = match (&set, &ev.manifest_image) {
            (Some(Ok(set)), Some(image)) => {
                let defaulted = match matching::find(set, &req.object) {
                    Some(signed) => self.defaulted(image, signed, &req.namespace).await,
                    None => Err("not needed".to_string()),
                };
                admission::decide(req, &ev, Ok(set.as_slice()), defaulted.as_deref().map_err(Clone::clone))
            }
            (Some(Err(e)), _) => admission::decide(req, &ev, Err(e.clone()), Err("not needed".into())),
            _ => admission::decide(req, &ev, Ok(&[]), Err("not needed".into())),
        };
        if decision.audited {
            self.audit_event(&app_ns, &t.app, &decision).await;
        }
        decision
    }

    /// No provenance recorded (yet): protected if a profile selects the Application, which then waits
    /// for Weft (fail closed); otherwise left alone.
    async fn unrecorded(&self, req: &Request, app_ns: &str, app: &str) -> Decision {
        let apps: Api<Application> = Api::namespaced(self.client.clone(), app_ns);
        let application = match apps.get_opt(app).await {
            Ok(Some(a)) => a,
            Ok(None) => return Decision::allow("the tracked Application does not exist"),
            Err(e) => {
                return Decision {
                    allowed: false,
                    message: format!("weft: cannot read Application {app_ns}/{app}: {e}"),
                    warnings: Vec::new(),
                    audited: false,
                };
            }
        };
        let profiles: Vec<Arc<IntegrityProfile>> =
            self.profiles.state().into_iter().filter(|p| p.namespace().as_deref() == Some(app_ns)).collect();
        let facts = AppFacts {
            name: app,
            project: application.spec.project.as_deref().unwrap_or("default"),
            labels: crate::resources::argocd::labels(&application.metadata),
        };
        let selected = match selection::select(profiles.iter().map(|p| p.as_ref()), &facts) {
            Selection::Unprotected => return Decision::allow("the Application is not protected by Weft"),
            Selection::Selected(p) => Some(p),
            _ => None,
        };
        let ev = AppEvidence {
            application: format!("{app_ns}/{app}"),
            verdict: Verdict::Pending,
            revision: String::new(),
            reason: "NotRecordedYet".into(),
            message: "Weft has not recorded a verdict for this Application yet".into(),
            manifest_image: None,
            images: Vec::new(),
            mode: mode(selected),
            ignore_fields: Vec::new(),
        };
        admission::decide(req, &ev, Ok(&[]), Err("not needed".into()))
    }

    /// A signed manifest as the apiserver defaults it: a server-side dry-run create under another name
    /// (as kubectl-sigstore does), cached per manifest image and object.
    async fn defaulted(&self, image: &str, signed: &Manifest, namespace: &str) -> Result<Arc<Value>, String> {
        let key = format!("{image}\n{}", signed.id());
        if let Some(v) = self.defaults.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(v.clone());
        }
        let (group, version) = match signed.api_version().rsplit_once('/') {
            Some((g, v)) => (g, v),
            None => ("", signed.api_version()),
        };
        let gvk = GroupVersionKind::gvk(group, version, signed.kind());
        let (resource, caps) = kube::discovery::pinned_kind(&self.client, &gvk).await.map_err(|e| e.to_string())?;
        let mut object = signed.object.clone();
        let name: String = signed.name().chars().take(40).collect();
        let suffix = &crate::oci::digest(key.as_bytes())["sha256:".len()..][..8];
        if let Some(Value::Object(meta)) = object.get_mut("metadata") {
            meta.insert("name".into(), Value::String(format!("{}-weft-{suffix}", name.trim_end_matches(['-', '.']))));
            if caps.scope == kube::discovery::Scope::Namespaced {
                meta.insert("namespace".into(), Value::String(namespace.to_string()));
            }
        }
        let api: Api<DynamicObject> = match caps.scope {
            kube::discovery::Scope::Namespaced => Api::namespaced_with(self.client.clone(), namespace, &resource),
            kube::discovery::Scope::Cluster => Api::all_with(self.client.clone(), &resource),
        };
        let object: DynamicObject = serde_json::from_value(Value::Object(object)).map_err(|e| e.to_string())?;
        let pp = PostParams { dry_run: true, field_manager: Some("weft-webhook".into()) };
        let created = api.create(&pp, &object).await.map_err(|e| format!("the apiserver's dry run: {e}"))?;
        let value = Arc::new(serde_json::to_value(created).map_err(|e| e.to_string())?);
        let mut defaults = self.defaults.lock().unwrap_or_else(|p| p.into_inner());
        if defaults.len() >= MAX_CACHED_SETS * 16 {
            defaults.clear();
        }
        defaults.insert(key, value.clone());
        Ok(value)
    }

    /// The signed manifests of a manifest image, by digest (content-addressed, so cached for good).
    async fn manifests(
        &self,
        image: &str,
        profile: Option<&IntegrityProfile>,
        ns: &str,
    ) -> Result<Arc<Vec<Manifest>>, String> {
        if let Some(set) = self.sets.lock().unwrap_or_else(|p| p.into_inner()).get(image) {
            return Ok(set.clone());
        }
        let (repository, digest) = image.split_once('@').ok_or_else(|| format!("{image} is not pinned by digest"))?;
        let creds = match profile.and_then(|p| p.spec.manifest_signing.as_ref()?.image.as_ref()?.credentials.clone()) {
            Some(c) => {
                let secrets: Api<Secret> = Api::namespaced(self.client.clone(), ns);
                let secret = secrets.get(&c.secret_ref.name).await.map_err(|e| e.to_string())?;
                let data = secret.data.unwrap_or_default();
                let json = data.get(".dockerconfigjson").ok_or("the credentials Secret has no .dockerconfigjson")?;
                Some(String::from_utf8(json.0.clone()).map_err(|_| "the credentials are not text")?)
            }
            None => None,
        };
        let registry = Registry::new(repository, creds.as_deref()).map_err(|e| e.to_string())?;
        let bytes = registry.manifest(digest).await.map_err(|e| e.to_string())?.ok_or("not in the registry")?;
        let layers = registry.layers(&bytes).await.map_err(|e| e.to_string())?;
        let layer = layers.iter().find(|l| l.media_type == crate::oci::MANIFEST_LAYER).ok_or("no manifest layer")?;
        let text = std::str::from_utf8(&layer.bytes).map_err(|_| "the manifest layer is not text")?;
        let set = Arc::new(manifest::parse(image, text, Limits::default()).map_err(|e| e.to_string())?);
        let mut sets = self.sets.lock().unwrap_or_else(|p| p.into_inner());
        if sets.len() >= MAX_CACHED_SETS {
            sets.clear(); // rare; every entry can be read again
        }
        sets.insert(image.to_string(), set.clone());
        Ok(set)
    }

    async fn audit_event(&self, ns: &str, app: &str, decision: &Decision) {
        let regarding = ObjectReference {
            api_version: Some("argoproj.io/v1alpha1".into()),
            kind: Some("Application".into()),
            name: Some(app.to_string()),
            namespace: Some(ns.to_string()),
            ..Default::default()
        };
        let event = Event {
            type_: EventType::Warning,
            reason: "AdmissionAudited".into(),
            note: Some(decision.message.chars().take(1000).collect()),
            action: "Admitted".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &regarding).await {
            warn!(error = %e, "cannot publish an audit Event");
        }
    }
}

/// A review that could not be read: refused, with the reason.
fn unreadable(why: &str) -> Value {
    serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "response": {"uid": "", "allowed": false, "status": {"code": 400, "message": format!("weft: {why}")}}})
}

fn mode(profile: Option<&IntegrityProfile>) -> EnforcementMode {
    profile.and_then(|p| p.spec.enforcement.as_ref()).map(|e| e.mode).unwrap_or_default()
}

/// Runs until SIGTERM or Ctrl-C.
pub async fn run(opts: Options) -> Result<(), WebhookError> {
    let client = Client::try_default().await.map_err(WebhookError::Connect)?;
    let tls = Arc::new(RwLock::new(certs::load(&client, &opts.certs).await?));
    let (provenances, prov_writer) = reflector::store();
    let (profiles, prof_writer) = reflector::store();
    let watch_provenances = watcher(Api::<ApplicationProvenance>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(prov_writer)
        .applied_objects()
        .for_each(|_| async {});
    let watch_profiles = watcher(Api::<IntegrityProfile>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(prof_writer)
        .applied_objects()
        .for_each(|_| async {});
    tokio::spawn(watch_provenances);
    tokio::spawn(watch_profiles);
    let skips = Skips {
        // Weft's own namespace is never checked: the webhook must not gate its own recovery.
        namespaces: opts.skip_namespaces.iter().cloned().chain([opts.certs.cert_namespace.clone()]).collect(),
        users: opts.skip_users.clone(),
        kinds: opts.skip_kinds.clone(),
    };
    let checker = checker(
        client.clone(),
        provenances.clone(),
        profiles.clone(),
        skips,
        opts.tracking_method.into(),
        &opts.argocd_namespace,
    );
    // Ready once both stores have their first list: before that every answer would be a guess.
    let _ = tokio::join!(provenances.wait_until_ready(), profiles.wait_until_ready());
    tokio::spawn(certs::keep_fresh(client.clone(), opts.certs.clone(), tls.clone()));
    let listener = TcpListener::bind(opts.listen).await.map_err(|e| WebhookError::Listen(opts.listen, e))?;
    info!(listen = %opts.listen, "weft webhook serving");
    serve(listener, tls, checker, shutdown()).await;
    info!("weft webhook stopped");
    Ok(())
}

async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(t) => t,
            Err(_) => return ctrl_c.await.unwrap_or(()),
        };
        tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
}

/// Accepts TLS connections and answers `/validate`, `/healthz` and `/readyz` until `stop` completes.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<RwLock<Arc<ServerConfig>>>,
    checker: Arc<Checker>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => { warn!(error = %e, "accept failed"); continue; }
            },
        };
        let config = tls.read().unwrap_or_else(|p| p.into_inner()).clone();
        let checker = checker.clone();
        tokio::spawn(async move {
            let Ok(stream) = TlsAcceptor::from(config).accept(stream).await else { return };
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let checker = checker.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&checker, req).await) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await {
                debug!(error = %e, "connection ended");
            }
        });
    }
}

async fn handle(checker: &Checker, req: hyper::Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: Vec<u8>| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
        r
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") | (&Method::GET, "/readyz") => reply(StatusCode::OK, b"ok".to_vec()),
        (&Method::GET, "/metrics") => reply(StatusCode::OK, crate::metrics::text().into_bytes()),
        (&Method::POST, "/validate") => {
            let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
            let body = match limited.collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return reply(StatusCode::PAYLOAD_TOO_LARGE, e.to_string().into_bytes()),
            };
            let review = checker.review(&body).await;
            reply(StatusCode::OK, serde_json::to_vec(&review).unwrap_or_default())
        }
        _ => reply(StatusCode::NOT_FOUND, b"not found".to_vec()),
    }
}

/// For the benchmark and tests: a checker over given stores.
pub fn checker(
    client: Client,
    provenances: Store<ApplicationProvenance>,
    profiles: Store<IntegrityProfile>,
    skips: Skips,
    tracking: crate::manifest::TrackingMethod,
    argocd_namespace: &str,
) -> Arc<Checker> {
    Arc::new(Checker {
        recorder: Recorder::new(client.clone(), Reporter { controller: "weft-webhook".into(), instance: None }),
        client,
        provenances,
        profiles,
        skips,
        tracking,
        argocd_namespace: argocd_namespace.to_string(),
        sets: Mutex::new(HashMap::new()),
        defaults: Mutex::new(HashMap::new()),
    })
}
