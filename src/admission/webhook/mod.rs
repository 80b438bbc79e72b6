//! `weft webhook`: the validating admission webhook, over HTTPS. It keeps the ApplicationProvenances
//! and IntegrityProfiles in memory (watched), the signed manifest sets by digest, and answers each
//! AdmissionReview from them with `admission::decide`.

pub mod certs;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

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

use crate::admission::matching::Tracked;
use crate::admission::{self, AppEvidence, Decision, Request, Skips, matching};
use crate::oci::Registry;
use crate::reason::Reason;
use crate::render::manifest::{self, Manifest, TrackingMethod};
use crate::resources::argocd::Application;
use crate::resources::profile::{EnforcementMode, IntegrityProfile, UntrackedWorkloads};
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
    #[error("manifest key {0}: {1}")]
    ManifestKey(std::path::PathBuf, String),
    #[error("--manifest-trusted-root {0}: {1}")]
    ManifestTrustedRoot(std::path::PathBuf, std::io::Error),
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
    #[arg(long, env = "WEFT_TRACKING_METHOD", value_enum, default_value_t = crate::render::manifest::TrackingMethod::Annotation)]
    pub tracking_method: crate::render::manifest::TrackingMethod,
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
    /// Files of PEM public keys (one or more each) whose cosign signature a manifest image must carry
    /// before the webhook believes it (repeatable): the keys of the profiles' `manifestSigning`. Without
    /// any, the webhook trusts the manifest image the ApplicationProvenance names.
    #[arg(long = "manifest-key", env = "WEFT_MANIFEST_KEYS", value_delimiter = ',')]
    pub manifest_keys: Vec<std::path::PathBuf>,
    /// A Sigstore `trusted_root.json` naming the Fulcio and the transparency log of keyless profiles
    /// (`manifestSigning.keyless`): their manifest images must then carry a signature whose certificate
    /// names the profile's `keyless.identity`, chains to that Fulcio and was logged while valid.
    #[arg(long = "manifest-trusted-root", env = "WEFT_MANIFEST_TRUSTED_ROOT")]
    pub manifest_trusted_root: Option<std::path::PathBuf>,
    /// Seconds an image tag's resolution is believed: an image written by tag must still resolve to the
    /// digest Weft verified, checked with its registry at most this often per tag.
    #[arg(long, env = "WEFT_IMAGE_TAG_TTL", default_value_t = 60)]
    pub image_tag_ttl_seconds: u64,
    #[command(flatten)]
    pub limits: Limits,
}

/// The PEM public keys in `files` (each may hold several).
pub fn read_manifest_keys(files: &[std::path::PathBuf]) -> Result<Vec<String>, WebhookError> {
    let mut keys = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).map_err(|e| WebhookError::ManifestKey(file.clone(), e.to_string()))?;
        let before = keys.len();
        for block in text.split_inclusive("-----END PUBLIC KEY-----") {
            let Some(start) = block.find("-----BEGIN PUBLIC KEY-----") else { continue };
            let pem = block[start..].to_string();
            if !crate::signing::key::verify_key_parses(&pem) {
                return Err(WebhookError::ManifestKey(file.clone(), "not an ECDSA P-256 public key".into()));
            }
            keys.push(pem);
        }
        if keys.len() == before {
            return Err(WebhookError::ManifestKey(file.clone(), "no PEM public key in it".into()));
        }
    }
    Ok(keys)
}

/// What one client may hold of the server: a few slow or idle clients must not exhaust it.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; more are closed at once (the apiserver opens a few and reuses them).
    #[arg(long, env = "WEFT_WEBHOOK_MAX_CONNECTIONS", default_value_t = 256)]
    pub max_connections: usize,
    /// Seconds a client has to finish the TLS handshake.
    #[arg(long, env = "WEFT_WEBHOOK_HANDSHAKE_TIMEOUT", default_value_t = 5)]
    pub handshake_timeout_seconds: u64,
    /// Seconds a client has to send a request's headers (and an idle connection waits for the next).
    #[arg(long, env = "WEFT_WEBHOOK_HEADER_TIMEOUT", default_value_t = 10)]
    pub header_timeout_seconds: u64,
    /// Seconds a client has to send a request's body.
    #[arg(long, env = "WEFT_WEBHOOK_BODY_TIMEOUT", default_value_t = 10)]
    pub body_timeout_seconds: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 256,
            handshake_timeout_seconds: 5,
            header_timeout_seconds: 10,
            body_timeout_seconds: 10,
        }
    }
}

/// What answers reviews: the watched state and the manifest sets.
pub struct Checker {
    client: Client,
    provenances: Store<ApplicationProvenance>,
    profiles: Store<IntegrityProfile>,
    /// Where each Application deploys (for workloads nobody tracks).
    applications: Store<Application>,
    trust: Trust,
    /// What each image tag resolved to, and when (see `moved_tag`).
    tags: Mutex<HashMap<String, (String, std::time::Instant)>>,
    skips: Skips,
    tracking: TrackingMethod,
    argocd_namespace: String,
    sets: Mutex<HashMap<String, Arc<Vec<Manifest>>>>,
    /// Signed manifests as the apiserver defaults them, per manifest image and object.
    defaults: Mutex<HashMap<String, Arc<Value>>>,
    recorder: Recorder,
    /// Checks keyless manifest signatures as image signatures are checked.
    manifest_signatures: crate::images::ImageVerifier,
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
        match req.sub_resource.as_str() {
            "" => self.judge(req).await,
            "scale" => self.scale(req).await,
            "ephemeralcontainers" => self.pod_change(req, "ephemeral containers (kubectl debug) are added").await,
            other => Decision::allow(format!("the {other} subresource changes nothing a manifest says")),
        }
    }

    /// The Application whose object this is, by Argo CD's tracking (`None` for objects a controller made
    /// from a labelled template under label tracking: Argo CD applies no such object).
    fn applied_by(&self, object: &Value) -> Option<Tracked> {
        let t = matching::tracked(object, self.tracking)?;
        if self.tracking == TrackingMethod::Label && matching::controller_of(object).is_some() {
            return None;
        }
        Some(t)
    }

    /// An object judged by the Application its tracking names, and on UPDATE by the one it named
    /// before: a protected object stays protected whatever its new metadata says (tracking removed,
    /// pointed at an Application that does not exist, is not protected or is another namespace's).
    async fn judge(&self, req: &Request) -> Decision {
        let new = self.applied_by(&req.object);
        let old = if req.operation == "UPDATE" { self.applied_by(&req.old_object) } else { None };
        match (new, old) {
            (None, None) if req.kind == "Pod" && req.group.is_empty() && req.operation == "UPDATE" => {
                let (before, after) = (matching::images(&req.old_object), matching::images(&req.object));
                if before == after {
                    return Decision::allow("not tracked by Argo CD");
                }
                self.pod_change(req, "its images are changed").await
            }
            (None, None) if req.operation == "CREATE" && is_workload(&req.group, &req.kind) => {
                self.untracked(req).await
            }
            (None, None) => Decision::allow("not tracked by Argo CD"),
            (Some(new), Some(old)) if new != old => {
                // Argo CD may move an object to another Application that vouches for it; nothing else
                // takes it out of the old one's protection.
                let d = self.for_application(req, &new).await;
                if d.vouched {
                    return d;
                }
                self.for_application(req, &old).await
            }
            (Some(t), _) | (None, Some(t)) => self.for_application(req, &t).await,
        }
    }

    /// A workload no Application tracks: denied where a protected Application deploys and its profile
    /// says `untrackedWorkloads: deny`, unless Kubernetes' controllers made it (from a protected
    /// workload or not: theirs is the cluster's own work, and an owner reference is the creator's word).
    async fn untracked(&self, req: &Request) -> Decision {
        let control_plane = req.username == "system:kube-controller-manager"
            || req.username.starts_with("system:serviceaccount:kube-system:")
            || req.username.starts_with("system:node:");
        if control_plane {
            return Decision::allow("not tracked by Argo CD; made by Kubernetes' controllers");
        }
        let deploying_here = self.applications.state().into_iter().filter(|a| {
            a.spec.destination.as_ref().and_then(|d| d.namespace.as_deref()) == Some(req.namespace.as_str())
        });
        for app in deploying_here {
            let (Some(name), Some(ns)) = (app.metadata.name.clone(), app.metadata.namespace.clone()) else { continue };
            let t = Tracked { app_namespace: (ns != self.argocd_namespace).then_some(ns), app: name };
            let Protection::By(ev, Some(profile)) = self.protection(&t).await else { continue };
            let rule = profile.spec.enforcement.as_ref().and_then(|e| e.untracked_workloads).unwrap_or_default();
            if rule == UntrackedWorkloads::Deny {
                let decision = Decision::deny(
                    &ev,
                    format!(
                        "weft: {} is tracked by no Argo CD Application, in namespace {} where Application {} deploys (profile {}: untrackedWorkloads: deny); deploy it through Argo CD",
                        req.describe(),
                        req.namespace,
                        ev.application,
                        profile.metadata.name.as_deref().unwrap_or_default()
                    ),
                );
                if decision.audited {
                    let app_ns = t.app_namespace.clone().unwrap_or_else(|| self.argocd_namespace.clone());
                    self.audit_event(&app_ns, &t.app, &decision).await;
                }
                return decision;
            }
        }
        Decision::allow("not tracked by Argo CD")
    }

    /// A `scale` subresource write carries only the replica count, no metadata: the parent is read and
    /// judged as it would be with that count (so it is checked against the signed replicas unless the
    /// profile's ignoreFields cover `spec.replicas`).
    async fn scale(&self, req: &Request) -> Decision {
        let (group, version, plural) = &req.resource;
        let api_version = if group.is_empty() { version.clone() } else { format!("{group}/{version}") };
        let resource = kube::api::ApiResource {
            group: group.clone(),
            version: version.clone(),
            api_version,
            kind: String::new(),
            plural: plural.clone(),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &req.namespace, &resource);
        let parent = match api.get(&req.name).await.map(serde_json::to_value) {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                return Decision::refuse(format!("weft: cannot read {plural} {}/{}: {e}", req.namespace, req.name));
            }
            Err(e) => {
                return Decision::refuse(format!(
                    "weft: cannot read {plural} {}/{} to check its new scale: {e}",
                    req.namespace, req.name
                ));
            }
        };
        let mut object = parent.clone();
        // The Scale's replicas are `omitempty`: a scale to zero carries none.
        object["spec"]["replicas"] = serde_json::json!(req.object["spec"]["replicas"].as_i64().unwrap_or(0));
        let whole = Request {
            operation: "UPDATE".into(),
            group: group.clone(),
            kind: parent["kind"].as_str().unwrap_or_default().to_string(),
            sub_resource: String::new(),
            object,
            old_object: parent,
            ..req.clone()
        };
        self.judge(&whole).await
    }

    /// A change to a running Pod that runs what nobody signed (`what`): denied for a Pod of a protected
    /// Application (its own, or made by a controller from one of its objects), when enforcing.
    async fn pod_change(&self, req: &Request, what: &str) -> Decision {
        let Some(t) = self.workload_of(&req.object).await else {
            return Decision::allow("the Pod belongs to no Application Argo CD applied");
        };
        match self.protection(&t).await {
            Protection::None(why) => Decision::allow(why),
            Protection::Unknown(why) => Decision::refuse(why),
            Protection::By(ev, _) => Decision::deny(
                &ev,
                format!(
                    "weft: {} of Application {}: {what}, which runs what nobody signed; debug a copy in a namespace Weft does not protect (kubectl debug --copy-to)",
                    req.describe(),
                    ev.application
                ),
            ),
        }
    }

    /// The Application a Pod runs for: its own tracking, or its controllers' (ReplicaSet, Deployment, …),
    /// followed up to four owners.
    async fn workload_of(&self, pod: &Value) -> Option<Tracked> {
        if let Some(t) = matching::tracked(pod, self.tracking) {
            return Some(t);
        }
        let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
        let mut at = pod.clone();
        for _ in 0..4 {
            let owner = at["metadata"]["ownerReferences"].as_array()?.iter().find(|o| o["controller"] == true)?.clone();
            let (group, version) = match owner["apiVersion"].as_str()?.rsplit_once('/') {
                Some((g, v)) => (g.to_string(), v.to_string()),
                None => (String::new(), owner["apiVersion"].as_str()?.to_string()),
            };
            let gvk = GroupVersionKind::gvk(&group, &version, owner["kind"].as_str()?);
            let (resource, _) = kube::discovery::pinned_kind(&self.client, &gvk).await.ok()?;
            let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &namespace, &resource);
            at = serde_json::to_value(api.get(owner["name"].as_str()?).await.ok()?).ok()?;
            if let Some(t) = matching::tracked(&at, self.tracking) {
                return Some(t);
            }
        }
        None
    }

    /// Whether Weft protects an Application, and what it recorded for it.
    async fn protection(&self, t: &Tracked) -> Protection {
        let app_ns = t.app_namespace.clone().unwrap_or_else(|| self.argocd_namespace.clone());
        let key = ObjectRef::<ApplicationProvenance>::new(&t.app).within(&app_ns);
        let Some(status) = self.provenances.get(&key).and_then(|ap| ap.status.clone()) else {
            return self.unrecorded(&app_ns, &t.app).await;
        };
        if status.verdict == Verdict::Unprotected {
            return Protection::None("the Application is not protected by Weft".into());
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
        Protection::By(ev, profile)
    }

    /// The decision for an object of the Application `t` names.
    async fn for_application(&self, req: &Request, t: &Tracked) -> Decision {
        let (ev, profile) = match self.protection(t).await {
            Protection::None(why) => return Decision::allow(why),
            Protection::Unknown(why) => return Decision::refuse(why),
            Protection::By(ev, profile) => (ev, profile),
        };
        // Status, bookkeeping and what the profile leaves to others (an autoscaler's replicas) are the
        // cluster's own work: never judged, whatever the revision's verdict.
        if req.operation == "UPDATE" {
            let extra = matching::ignored_for(&ev.ignore_fields, &req.group, &req.kind, &req.name, &req.namespace);
            if matching::changes_only_ignored(&req.kind, &req.old_object, &req.object, &extra) {
                return Decision::allow("changes only what the signed manifests leave to others");
            }
        }
        let app_ns = t.app_namespace.clone().unwrap_or_else(|| self.argocd_namespace.clone());
        let set = match (&ev.manifest_image, matches!(ev.verdict, Verdict::Verified | Verdict::Permitted)) {
            (Some(image), true) => Some(self.manifests(image, profile.as_deref(), &app_ns).await),
            _ => None,
        };
        let decision = match (&set, &ev.manifest_image) {
            (Some(Ok(set)), Some(image)) => match matching::find(set, &req.object) {
                // A Secret signed by digest: the live one's values are digested to be compared.
                Some(signed) if matching::signed_by_digest(signed) => {
                    let (object, stored) = matching::secret_by_digest(signed, &req.object);
                    let digested = Request { object, ..req.clone() };
                    admission::decide(&digested, &ev, Ok(set.as_slice()), Ok(&stored))
                }
                Some(signed) => {
                    let defaulted = self.defaulted(image, signed, &req.namespace).await;
                    admission::decide(req, &ev, Ok(set.as_slice()), defaulted.as_deref().map_err(Clone::clone))
                }
                None => admission::decide(req, &ev, Ok(set.as_slice()), Err("not needed".into())),
            },
            (Some(Err(e)), _) => admission::decide(req, &ev, Err(e.clone()), Err("not needed".into())),
            _ => admission::decide(req, &ev, Ok(&[]), Err("not needed".into())),
        };
        let decision = match decision.vouched {
            true => match self.moved_tag(req, &ev).await {
                Ok(()) => decision,
                Err(why) => {
                    Decision::deny(&ev, format!("weft: {} of Application {}: {why}", req.describe(), ev.application))
                }
            },
            false => decision,
        };
        if decision.audited {
            self.audit_event(&app_ns, &t.app, &decision).await;
        }
        decision
    }

    /// An image written by tag must still resolve to the digest Weft verified: a tag moved since then (a
    /// push) would run what nobody verified. Each tag is resolved at most once a minute (one manifest
    /// request to its registry, anonymously); a registry that cannot answer is a denial (fail closed),
    /// which pinning the image by digest avoids.
    async fn moved_tag(&self, req: &Request, ev: &AppEvidence) -> Result<(), String> {
        for image in matching::images(&req.object) {
            let Ok(r) = crate::images::reference::ImageRef::parse(&image) else { continue };
            let verified = ev.images.iter().find(|i| i.image == image).and_then(|i| i.digest.clone());
            let (None, Some(verified)) = (&r.digest, verified) else { continue };
            let tag = r.tag.clone().unwrap_or_else(|| "latest".into());
            let reference = format!("{}:{tag}", r.name());
            let cached = self.tags.lock().unwrap_or_else(|p| p.into_inner()).get(&reference).cloned();
            let now = match cached {
                Some((digest, at)) if at.elapsed() < self.trust.tag_ttl => digest,
                _ => {
                    let registry = Registry::new(&r.name(), None).map_err(|e| e.to_string())?;
                    let digest = match registry.manifest(&tag).await {
                        Ok(Some(bytes)) => crate::oci::digest(&bytes),
                        Ok(None) => return Err(format!("image {image} no longer exists in its registry")),
                        Err(e) => {
                            return Err(format!(
                                "cannot check that image {image} still resolves to the verified {verified} ({e}); pin it by digest"
                            ));
                        }
                    };
                    cache(&self.tags, MAX_CACHED_SETS * 16, reference, (digest.clone(), std::time::Instant::now()));
                    digest
                }
            };
            if now != verified {
                return Err(format!(
                    "image {image} now resolves to {now}, not to {verified} that Weft verified: the tag moved; pin the image by digest, or let Weft verify a new revision"
                ));
            }
        }
        Ok(())
    }

    /// No provenance recorded (yet): protected if a profile selects the Application, which then waits
    /// for Weft (fail closed); otherwise left alone.
    async fn unrecorded(&self, app_ns: &str, app: &str) -> Protection {
        let apps: Api<Application> = Api::namespaced(self.client.clone(), app_ns);
        let application = match apps.get_opt(app).await {
            Ok(Some(a)) => a,
            Ok(None) => return Protection::None("the tracked Application does not exist".into()),
            Err(e) => return Protection::Unknown(format!("weft: cannot read Application {app_ns}/{app}: {e}")),
        };
        let profiles: Vec<Arc<IntegrityProfile>> =
            self.profiles.state().into_iter().filter(|p| p.namespace().as_deref() == Some(app_ns)).collect();
        let facts = AppFacts {
            name: app,
            project: application.spec.project.as_deref().unwrap_or("default"),
            labels: crate::resources::argocd::labels(&application.metadata),
        };
        let selected = match selection::select(profiles.iter().map(|p| p.as_ref()), &facts) {
            Selection::Unprotected => return Protection::None("the Application is not protected by Weft".into()),
            Selection::Selected(p) => Some(p),
            _ => None,
        };
        let profile = selected.and_then(|s| profiles.iter().find(|p| std::ptr::eq(p.as_ref(), s)).cloned());
        let ev = AppEvidence {
            application: format!("{app_ns}/{app}"),
            verdict: Verdict::Pending,
            revision: String::new(),
            reason: Reason::NotRecordedYet.into(),
            message: "Weft has not recorded a verdict for this Application yet".into(),
            manifest_image: None,
            images: Vec::new(),
            mode: mode(selected),
            ignore_fields: Vec::new(),
        };
        Protection::By(ev, profile)
    }

    /// Whether the manifest image `digest` carries a cosign signature (its `.sig` tag: a simple-signing
    /// payload that names the digest) by one of the manifest keys. Whoever can write an
    /// ApplicationProvenance's status can name any image; only the keys' holder can sign one.
    async fn signed(&self, registry: &Registry, digest: &str) -> Result<(), String> {
        let tag = crate::oci::signature_tag(digest);
        let unsigned =
            || format!("the manifest image {digest} is not signed by a manifest key (--manifest-key): {tag}");
        let Some(bytes) = registry.manifest(&tag).await.map_err(|e| e.to_string())? else {
            return Err(format!("{} is missing", unsigned()));
        };
        for layer in registry.layers(&bytes).await.map_err(|e| e.to_string())? {
            let Ok(payload) = serde_json::from_slice::<Value>(&layer.bytes) else { continue };
            if payload["critical"]["image"]["docker-manifest-digest"] != digest {
                continue;
            }
            if self.trust.manifest_keys.iter().any(|k| crate::oci::signature_verifies(&layer, k)) {
                return Ok(());
            }
        }
        Err(format!("{} has no valid signature by one", unsigned()))
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
        // A Service's fixed addresses are the live Service's: the dry run would collide with them ("provided
        // IP is already allocated"), and they are never compared.
        if group.is_empty()
            && signed.kind() == "Service"
            && let Some(Value::Object(spec)) = object.get_mut("spec")
        {
            for k in ["clusterIP", "clusterIPs", "healthCheckNodePort"] {
                spec.remove(k);
            }
            if let Some(Value::Array(ports)) = spec.get_mut("ports") {
                for port in ports.iter_mut().filter_map(Value::as_object_mut) {
                    port.remove("nodePort");
                }
            }
        }
        let api: Api<DynamicObject> = match caps.scope {
            kube::discovery::Scope::Namespaced => Api::namespaced_with(self.client.clone(), namespace, &resource),
            kube::discovery::Scope::Cluster => Api::all_with(self.client.clone(), &resource),
        };
        let dry: DynamicObject = serde_json::from_value(Value::Object(object.clone())).map_err(|e| e.to_string())?;
        let pp = PostParams { dry_run: true, field_manager: Some("weft-webhook".into()) };
        let value = match api.create(&pp, &dry).await {
            Ok(created) => serde_json::to_value(created).map_err(|e| e.to_string())?,
            // RBAC's escalation check applies to dry runs too: the webhook may not create a Role that grants
            // more than it holds (and must not hold more). RBAC objects have one default, a subject's
            // apiGroup, which is applied here as the apiserver would.
            Err(kube::Error::Api(e)) if e.code == 403 && group == "rbac.authorization.k8s.io" => {
                debug!(kind = signed.kind(), error = %e.message, "RBAC dry run refused; defaulting RBAC here");
                rbac_defaults(Value::Object(object))
            }
            Err(e) => return Err(format!("the apiserver's dry run: {e}")),
        };
        let value = Arc::new(value);
        cache(&self.defaults, MAX_CACHED_SETS * 16, key, value.clone());
        Ok(value)
    }

    /// The signed manifests of a manifest image, by digest (content-addressed, so cached for good).
    async fn manifests(
        &self,
        image: &str,
        profile: Option<&IntegrityProfile>,
        ns: &str,
    ) -> Result<Arc<Vec<Manifest>>, String> {
        // Keyless: which identity signed is part of the answer, so part of the key.
        let set_key = match profile.and_then(|p| p.spec.manifest_signing.as_ref()?.keyless.as_ref()?.identity.as_ref())
        {
            Some(id) => format!("{image}\n{}\n{}", id.issuer, id.subject),
            None => image.to_string(),
        };
        if let Some(set) = self.sets.lock().unwrap_or_else(|p| p.into_inner()).get(&set_key) {
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
        let keyless = profile.and_then(|p| p.spec.manifest_signing.as_ref()?.keyless.as_ref());
        match keyless {
            Some(k) => self.signed_keylessly(k, image, creds).await?,
            None if !self.trust.manifest_keys.is_empty() => self.signed(&registry, digest).await?,
            None => {}
        }
        let bytes = registry.manifest(digest).await.map_err(|e| e.to_string())?.ok_or("not in the registry")?;
        if crate::oci::digest(&bytes) != digest {
            return Err(format!("the registry served other content for {digest}"));
        }
        let layers = registry.layers(&bytes).await.map_err(|e| e.to_string())?;
        let layer = layers.iter().find(|l| l.media_type == crate::oci::MANIFEST_LAYER).ok_or("no manifest layer")?;
        let text = std::str::from_utf8(&layer.bytes).map_err(|_| "the manifest layer is not text")?;
        let set = Arc::new(manifest::parse(image, text, manifest::Limits::default()).map_err(|e| e.to_string())?);
        cache(&self.sets, MAX_CACHED_SETS, set_key.clone(), set.clone());
        Ok(set)
    }

    /// Whether the manifest image `image` (`repository@digest`) carries a signature by the keyless
    /// profile's identity: a certificate naming it, chaining to a Fulcio of `--manifest-trusted-root`, the
    /// signature logged while the certificate was valid (checked as image signatures are). Without a
    /// trusted root or manifest keys, nothing is checked (as without `--manifest-key`); with keys but no
    /// root, or without an identity to expect, the image is refused.
    async fn signed_keylessly(
        &self,
        keyless: &crate::resources::profile::KeylessSigning,
        image: &str,
        credentials: Option<String>,
    ) -> Result<(), String> {
        let Some(root) = &self.trust.manifest_root else {
            if self.trust.manifest_keys.is_empty() {
                return Ok(());
            }
            return Err(format!(
                "the manifest image {image} is signed keylessly, and the webhook has manifest keys but no --manifest-trusted-root to check a certificate against"
            ));
        };
        let Some(identity) = &keyless.identity else {
            return Err(format!(
                "the profile signs keylessly but names no manifestSigning.keyless.identity, so the signature of {image} cannot be attributed"
            ));
        };
        let expected = crate::resources::profile::KeylessIdentity {
            issuer: Some(identity.issuer.clone()),
            subject: Some(identity.subject.clone()),
            ..Default::default()
        };
        use crate::images::policy::{ImagePolicies, OneSigner};
        let mut policies = ImagePolicies::one_signer(OneSigner::Keyless(expected), root)
            .map_err(|e| format!("--manifest-trusted-root: {e}"))?;
        policies.credentials = credentials.into_iter().collect();
        let status = self.manifest_signatures.verify(&policies, &[(image.to_string(), Vec::new())]).await;
        match status.first() {
            Some(s) if s.outcome == crate::resources::provenance::ImageOutcome::Verified => Ok(()),
            Some(s) => Err(format!(
                "the manifest image {image} carries no signature by {} (issuer {}): {}",
                identity.subject, identity.issuer, s.message
            )),
            None => Err(format!("the manifest image {image} was not checked")),
        }
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

/// Keeps `value` in a cache of at most `max` entries, emptied when full (rare; every entry can be had
/// again).
fn cache<V>(map: &Mutex<HashMap<String, V>>, max: usize, key: String, value: V) {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    if map.len() >= max {
        map.clear();
    }
    map.insert(key, value);
}

/// An RBAC object as the apiserver defaults it (rbac/v1 `SetDefaults_Subject`): a subject's `apiGroup` is
/// `rbac.authorization.k8s.io` for a User or Group (and empty, so not stored, for a ServiceAccount).
fn rbac_defaults(mut object: Value) -> Value {
    if let Some(Value::Array(subjects)) = object.get_mut("subjects") {
        for subject in subjects.iter_mut().filter_map(Value::as_object_mut) {
            let unset = subject.get("apiGroup").and_then(Value::as_str).unwrap_or_default().is_empty();
            if unset && matches!(subject.get("kind").and_then(Value::as_str), Some("User" | "Group")) {
                subject.insert("apiGroup".into(), Value::String("rbac.authorization.k8s.io".into()));
            }
        }
    }
    object
}

/// What the webhook checks beyond the watched state.
pub struct Trust {
    /// PEM public keys a manifest image must be signed by (none: not checked).
    pub manifest_keys: Vec<String>,
    /// The trusted root (JSON) keyless profiles' manifest images are checked against.
    pub manifest_root: Option<String>,
    /// How long an image tag's resolution is believed (see `Checker::moved_tag`).
    pub tag_ttl: Duration,
    /// `/validate` answers only clients with a certificate from the client CA (`--client-ca-file`).
    pub client_ca: bool,
}

/// What the webhook watches (and answers from).
pub struct Watched {
    pub provenances: Store<ApplicationProvenance>,
    pub profiles: Store<IntegrityProfile>,
    /// Where each Application deploys (for workloads nobody tracks).
    pub applications: Store<Application>,
}

/// Whether Weft protects an Application.
enum Protection {
    /// Not protected, and why.
    None(String),
    /// Protected: what Weft recorded (or that it has recorded nothing yet), and the profile.
    By(AppEvidence, Option<Arc<IntegrityProfile>>),
    /// Weft cannot tell (the Application cannot be read): refused.
    Unknown(String),
}

/// A review that could not be read: refused, with the reason.
fn unreadable(why: &str) -> Value {
    serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "response": {"uid": "", "allowed": false, "status": {"code": 400, "message": format!("weft: {why}")}}})
}

/// The kinds that run containers.
fn is_workload(group: &str, kind: &str) -> bool {
    matches!(
        (group, kind),
        ("", "Pod" | "ReplicationController")
            | ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet")
            | ("batch", "Job" | "CronJob")
    )
}

fn mode(profile: Option<&IntegrityProfile>) -> EnforcementMode {
    profile.and_then(|p| p.spec.enforcement.as_ref()).map(|e| e.mode).unwrap_or_default()
}

/// Runs until SIGTERM or Ctrl-C.
pub async fn run(opts: Options) -> Result<(), WebhookError> {
    let client = crate::kubernetes::client::client(None).await.map_err(WebhookError::Connect)?;
    let tls = Arc::new(RwLock::new(certs::load(&client, &opts.certs).await?));
    let manifest_keys = read_manifest_keys(&opts.manifest_keys)?;
    if manifest_keys.is_empty() {
        warn!("no --manifest-key: manifest images are trusted as the ApplicationProvenance names them");
    }
    let (provenances, prov_writer) = reflector::store();
    let (profiles, prof_writer) = reflector::store();
    let (applications, app_writer) = reflector::store();
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
    // Applications, for where each deploys (their status, Argo CD's largest part, is not kept).
    let watch_applications = watcher(Api::<Application>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(|a| {
            a.status = None;
            a.operation = None;
            a.metadata.managed_fields = None;
            a.metadata.annotations = None;
        })
        .reflect(app_writer)
        .applied_objects()
        .for_each(|_| async {});
    tokio::spawn(watch_applications);
    tokio::spawn(watch_provenances);
    tokio::spawn(watch_profiles);
    let skips = Skips {
        // Weft's own namespace is never checked: the webhook must not gate its own recovery.
        namespaces: opts.skip_namespaces.iter().cloned().chain([opts.certs.cert_namespace.clone()]).collect(),
        users: opts.skip_users.clone(),
        kinds: opts.skip_kinds.clone(),
    };
    let watched =
        Watched { provenances: provenances.clone(), profiles: profiles.clone(), applications: applications.clone() };
    let manifest_root = match &opts.manifest_trusted_root {
        Some(path) => {
            Some(std::fs::read_to_string(path).map_err(|e| WebhookError::ManifestTrustedRoot(path.clone(), e))?)
        }
        None => None,
    };
    let trust = Trust {
        manifest_keys,
        manifest_root,
        tag_ttl: Duration::from_secs(opts.image_tag_ttl_seconds),
        client_ca: opts.certs.client_ca_file.is_some(),
    };
    let checker = checker(client.clone(), watched, trust, skips, opts.tracking_method, &opts.argocd_namespace);
    // Ready once both stores have their first list: before that every answer would be a guess.
    let _ = tokio::join!(provenances.wait_until_ready(), profiles.wait_until_ready(), applications.wait_until_ready());
    tokio::spawn(certs::keep_fresh(client.clone(), opts.certs.clone(), tls.clone()));
    let listener = TcpListener::bind(opts.listen).await.map_err(|e| WebhookError::Listen(opts.listen, e))?;
    info!(listen = %opts.listen, "weft webhook serving");
    serve(listener, tls, checker, opts.limits, shutdown()).await;
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

/// Accepts TLS connections and answers `/validate`, `/healthz` and `/readyz` until `stop` completes,
/// within `limits`: a connection over the cap is closed at once, and one that is slow to shake hands,
/// to send its headers or its body, or idle between requests, is closed when its time is up.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<RwLock<Arc<ServerConfig>>>,
    checker: Arc<Checker>,
    limits: Limits,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => { warn!(error = %e, "accept failed"); continue; }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            crate::metrics::webhook_connection_refused();
            debug!(%peer, "connection refused: too many connections");
            drop(stream);
            continue;
        };
        let config = tls.read().unwrap_or_else(|p| p.into_inner()).clone();
        let client_auth = checker.trust.client_ca;
        let checker = checker.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let handshake = Duration::from_secs(limits.handshake_timeout_seconds);
            let stream = match tokio::time::timeout(handshake, TlsAcceptor::from(config).accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return debug!(%peer, "TLS handshake timed out"),
            };
            let body_timeout = Duration::from_secs(limits.body_timeout_seconds);
            // Whether the client presented a certificate the client CA verified (when one is configured,
            // an unverified certificate fails the handshake; none at all is allowed, for probes).
            let who = match (client_auth, stream.get_ref().1.peer_certificates()) {
                (false, _) => Peer::Anyone,
                (true, Some(_)) => Peer::Authenticated,
                (true, None) => Peer::Anonymous,
            };
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let checker = checker.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&checker, req, body_timeout, who).await) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let served = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(limits.header_timeout_seconds))
                .serve_connection(io, service)
                .await;
            if let Err(e) = served {
                debug!(%peer, error = %e, "connection ended");
            }
        });
    }
}

/// Who is on the other end of a connection.
#[derive(Clone, Copy, PartialEq)]
enum Peer {
    /// No client CA is configured: anyone may ask.
    Anyone,
    /// A certificate the client CA issued.
    Authenticated,
    /// No certificate, where a client CA is configured: health and metrics only.
    Anonymous,
}

async fn handle(
    checker: &Checker,
    req: hyper::Request<Incoming>,
    body_timeout: Duration,
    peer: Peer,
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: Vec<u8>| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
        r
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") | (&Method::GET, "/readyz") => reply(StatusCode::OK, b"ok".to_vec()),
        (&Method::GET, "/metrics") => reply(StatusCode::OK, crate::metrics::text().into_bytes()),
        (&Method::POST, "/validate") if peer == Peer::Anonymous => {
            reply(StatusCode::FORBIDDEN, b"a client certificate from the client CA is required".to_vec())
        }
        (&Method::POST, "/validate") => {
            let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
            let body = match tokio::time::timeout(body_timeout, limited.collect()).await {
                Ok(Ok(b)) => b.to_bytes(),
                Ok(Err(e)) => return reply(StatusCode::PAYLOAD_TOO_LARGE, e.to_string().into_bytes()),
                Err(_) => return reply(StatusCode::REQUEST_TIMEOUT, b"the request body was too slow".to_vec()),
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
    watched: Watched,
    trust: Trust,
    skips: Skips,
    tracking: TrackingMethod,
    argocd_namespace: &str,
) -> Arc<Checker> {
    let Watched { provenances, profiles, applications } = watched;
    Arc::new(Checker {
        recorder: Recorder::new(client.clone(), Reporter { controller: "weft-webhook".into(), instance: None }),
        client,
        provenances,
        profiles,
        applications,
        trust,
        tags: Mutex::new(HashMap::new()),
        skips,
        tracking,
        argocd_namespace: argocd_namespace.to_string(),
        sets: Mutex::new(HashMap::new()),
        defaults: Mutex::new(HashMap::new()),
        manifest_signatures: crate::images::ImageVerifier::default(),
    })
}
