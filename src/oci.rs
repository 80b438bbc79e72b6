//! OCI artifacts in the shapes cosign and kubectl-sigstore read:
//! - the manifest image: the signed blob as one `text/plain` layer (as `kubectl sigstore sign -i` pushes);
//! - its cosign signature: a simple-signing payload layer with the signature (and, when a transparency
//!   log is configured, the Rekor bundle) as annotations, under the `sha256-<hex>.sig` tag, and also as an
//!   OCI 1.1 referrer where the registry serves the referrers API;
//! - an OCI image layout directory (`index.json` entries marked `kind: dev.cosignproject.cosign/image`
//!   and `/sigs`), which `cosign verify --local-image` reads.
//!
//! Building the artifacts is pure; `Registry` and `write_layout` do the I/O.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::reason::Reason;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MANIFEST_LAYER: &str = "text/plain";
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const COSIGN_SIG_ARTIFACT: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
pub const BUNDLE_ANNOTATION: &str = "dev.sigstore.cosign/bundle";
pub const CERTIFICATE_ANNOTATION: &str = "dev.sigstore.cosign/certificate";
pub const CHAIN_ANNOTATION: &str = "dev.sigstore.cosign/chain";

/// The largest manifest (or image index, the referrers list included) Weft reads: 4 MiB, the limit
/// containerd and distribution's registry put on manifests. A larger one is refused, unread.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// The largest layer Weft reads. Weft reads only signature and attestation layers: simple-signing
/// payloads (under a kilobyte), Sigstore bundles and DSSE envelopes of SLSA provenance (kilobytes to
/// a few hundred). 16 MiB is far above those and the limit `actions/attest` puts on a predicate; a
/// larger layer (a big SBOM attestation) is refused without being read whole, and only that layer.
pub const MAX_LAYER_BYTES: u64 = 16 << 20;
/// At most this many layers of one manifest are read, and together at most `MAX_LAYERS_TOTAL_BYTES`:
/// one manifest never costs more than that in memory.
pub const MAX_LAYERS: usize = 64;
pub const MAX_LAYERS_TOTAL_BYTES: u64 = 32 << 20;
/// How long one registry request (connecting, authenticating, reading the answer) may take; past it the
/// request fails as the registry being unavailable, and is retried later.
pub const REGISTRY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long connecting to a registry may take.
pub const REGISTRY_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Tokens the registry hands out last at least 60 seconds (the distribution token spec's default).
const TOKEN_REUSE: Duration = Duration::from_secs(50);

#[derive(Debug, Error)]
pub enum OciError {
    #[error("registry {registry}: {reason}")]
    Registry { registry: String, reason: String },
    #[error("registry {registry} refused the credentials: {reason}")]
    Unauthorized { registry: String, reason: String },
    /// A 4xx other than 401, 403, 404 and 429: the request itself is refused, and asking again will not
    /// change that.
    #[error("registry {registry} refused the request: {reason}")]
    Refused { registry: String, reason: String },
    #[error("{0:?} is not a valid OCI repository reference: {1}")]
    BadReference(String, String),
    #[error("cannot read the registry credentials: {0}")]
    BadCredentials(String),
    #[error("cannot write the OCI layout at {path}: {reason}")]
    Layout { path: String, reason: String },
    #[error("cannot read the OCI layout at {path}: {reason}")]
    LayoutUnreadable { path: String, reason: String },
    #[error("registry {registry}: {what} is {size}, more than the {} Weft reads", mib(*limit))]
    TooLarge { registry: String, what: String, size: BodySize, limit: u64 },
    #[error(
        "registry {registry}: a manifest in {repository} lists {count} layers, more than the {MAX_LAYERS} Weft reads"
    )]
    TooManyLayers { registry: String, repository: String, count: usize },
}

/// How large a response was found to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodySize {
    /// As declared (a descriptor's size or Content-Length): nothing was read.
    Declared(u64),
    /// At least this much arrived before reading stopped.
    AtLeast(u64),
}

impl std::fmt::Display for BodySize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodySize::Declared(n) => write!(f, "{n} bytes"),
            BodySize::AtLeast(n) => write!(f, "at least {n} bytes"),
        }
    }
}

fn mib(n: u64) -> String {
    if n.is_multiple_of(1 << 20) { format!("{} MiB", n >> 20) } else { format!("{n} bytes") }
}

/// Why a response body was not read.
#[derive(Debug)]
pub enum BodyError {
    TooLarge(BodySize),
    Transport(String),
}

/// Reads a response body, but never more than `limit` bytes: a declared larger length is refused before
/// reading, and reading stops as soon as more than `limit` bytes have arrived.
pub async fn read_capped(mut resp: reqwest::Response, limit: u64) -> Result<Vec<u8>, BodyError> {
    if let Some(n) = resp.content_length().filter(|n| *n > limit) {
        return Err(BodyError::TooLarge(BodySize::Declared(n)));
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| BodyError::Transport(e.to_string()))? {
        let total = out.len() as u64 + chunk.len() as u64;
        if total > limit {
            return Err(BodyError::TooLarge(BodySize::AtLeast(total)));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

impl OciError {
    pub fn reason(&self) -> Reason {
        match self {
            OciError::Registry { .. } => Reason::RegistryUnavailable,
            OciError::Unauthorized { .. } => Reason::RegistryUnauthorized,
            OciError::Refused { .. } => Reason::RegistryRefused,
            OciError::BadReference(..) => Reason::InvalidImageRepository,
            OciError::BadCredentials(_) => Reason::RegistryCredentialsInvalid,
            OciError::Layout { .. } => Reason::LayoutUnwritable,
            OciError::LayoutUnreadable { .. } => Reason::LayoutUnreadable,
            OciError::TooLarge { .. } | OciError::TooManyLayers { .. } => Reason::RegistryObjectTooLarge,
        }
    }
}

crate::status::step_error!(OciError);

/// `sha256:<hex>` of some bytes.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A content-addressed blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    pub media_type: String,
    pub bytes: Vec<u8>,
    pub annotations: BTreeMap<String, String>,
}

impl Blob {
    pub fn digest(&self) -> String {
        digest(&self.bytes)
    }

    fn descriptor(&self) -> Value {
        let mut d = json!({"mediaType": self.media_type, "size": self.bytes.len(), "digest": self.digest()});
        if !self.annotations.is_empty() {
            d["annotations"] = json!(self.annotations);
        }
        d
    }
}

/// An image: its config, its layers and the manifest that ties them together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub config: Blob,
    pub layers: Vec<Blob>,
    /// The manifest's bytes, exactly as pushed (its digest is the image digest).
    pub manifest: Vec<u8>,
}

impl Image {
    /// Builds the manifest over `layers`; `artifact_type` and `subject` make it an OCI 1.1 referrer.
    pub fn new(
        layers: Vec<Blob>,
        annotations: &BTreeMap<String, String>,
        artifact_type: Option<&str>,
        subject: Option<(&str, usize)>,
    ) -> Image {
        let diff_ids: Vec<String> = layers.iter().map(Blob::digest).collect();
        // The config as go-containerregistry writes it for such images; verifiers do not read it.
        let config_json = json!({
            "architecture": "", "created": "0001-01-01T00:00:00Z", "history": [{"created": "0001-01-01T00:00:00Z"}],
            "os": "", "rootfs": {"type": "layers", "diff_ids": diff_ids}, "config": {}
        });
        // As cosign writes referrers: the config's media type is the artifact type.
        let config = Blob {
            media_type: artifact_type.unwrap_or(OCI_CONFIG).to_string(),
            bytes: serde_json::to_vec(&config_json).unwrap_or_default(),
            annotations: BTreeMap::new(),
        };
        Image::with_config(config, layers, annotations, artifact_type, subject)
    }

    /// As [`Image::new`], with a given config.
    pub fn with_config(
        config: Blob,
        layers: Vec<Blob>,
        annotations: &BTreeMap<String, String>,
        artifact_type: Option<&str>,
        subject: Option<(&str, usize)>,
    ) -> Image {
        let mut manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
        });
        if let Some(t) = artifact_type {
            manifest["artifactType"] = json!(t);
        }
        if let Some((d, size)) = subject {
            manifest["subject"] = json!({"mediaType": OCI_MANIFEST, "digest": d, "size": size});
        }
        if !annotations.is_empty() {
            manifest["annotations"] = json!(annotations);
        }
        Image { config, layers, manifest: serde_json::to_vec(&manifest).unwrap_or_default() }
    }

    pub fn digest(&self) -> String {
        digest(&self.manifest)
    }
}

/// The manifest image: the signed blob as a single `text/plain` layer.
pub fn manifest_image(blob: &[u8], annotations: &BTreeMap<String, String>) -> Image {
    let layer = Blob { media_type: MANIFEST_LAYER.into(), bytes: blob.to_vec(), annotations: BTreeMap::new() };
    Image::new(vec![layer], annotations, None, None)
}

/// cosign's simple-signing payload for an image digest.
pub fn simple_signing_payload(repository: &str, image_digest: &str, annotations: &BTreeMap<String, String>) -> Vec<u8> {
    let optional = if annotations.is_empty() { Value::Null } else { json!(annotations) };
    let payload = json!({
        "critical": {
            "identity": {"docker-reference": repository},
            "image": {"docker-manifest-digest": image_digest},
            "type": "cosign container image signature"
        },
        "optional": optional
    });
    serde_json::to_vec(&payload).unwrap_or_default()
}

/// One signature layer: the payload, its base64 signature, and the Rekor bundle when there is one.
pub fn signature_layer(payload: Vec<u8>, signature_b64: &str, bundle: Option<&str>) -> Blob {
    let mut annotations = BTreeMap::from([(SIGNATURE_ANNOTATION.to_string(), signature_b64.to_string())]);
    if let Some(b) = bundle {
        annotations.insert(BUNDLE_ANNOTATION.into(), b.to_string());
    }
    Blob { media_type: SIMPLE_SIGNING.into(), bytes: payload, annotations }
}

/// Whether a signature layer's cosign signature (its annotation) verifies over the layer's payload
/// under the PEM public key.
pub fn signature_verifies(layer: &Blob, public_pem: &str) -> bool {
    use base64::Engine as _;
    let Some(sig) = layer.annotations.get(SIGNATURE_ANNOTATION) else { return false };
    let Ok(der) = base64::engine::general_purpose::STANDARD.decode(sig) else { return false };
    crate::signing::key::verify(public_pem, &layer.bytes, &der)
}

/// The `.sig` tag cosign looks up for an image digest.
pub fn signature_tag(image_digest: &str) -> String {
    format!("{}.sig", image_digest.replace(':', "-"))
}

/// Where an image goes: `registry/repository`, and the client options to reach it.
pub struct Registry {
    client: Client,
    /// For the few calls done directly (see `put_manifest_by_digest`, `serves_referrers`).
    http: reqwest::Client,
    plain_http: bool,
    auth: RegistryAuth,
    repository: String,
    /// The bound on each request (see `REGISTRY_TIMEOUT`).
    timeout: Duration,
    /// Tokens negotiated for direct requests, per repository and operation (push or pull), so a token
    /// is not fetched again for every request.
    tokens: Arc<Mutex<Tokens>>,
}

/// Tokens by (repository, push), with when they were negotiated.
type Tokens = HashMap<(String, bool), (Option<String>, Instant)>;

/// What a push did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// The registry already had it (same digest): nothing was pushed.
    AlreadyThere,
    New,
}

/// A registry host (`name[:port]`, `[v6]:port`) that is exactly a loopback address: only those are
/// spoken to over plain HTTP, so `localhost.example` or `127.evil.test` never get credentials in the clear.
fn is_loopback_host(host: &str) -> bool {
    let bare = match host.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map(|(addr, _)| addr).unwrap_or(v6),
        None => host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host),
    };
    crate::source::fetch::is_loopback(bare)
}

impl Registry {
    /// `repository` is `host[:port]/path`; `dockerconfigjson` the content of a
    /// `kubernetes.io/dockerconfigjson` Secret. Registries on loopback are spoken to over plain HTTP.
    pub fn new(repository: &str, dockerconfigjson: Option<&str>) -> Result<Registry, OciError> {
        Registry::with_timeout(repository, dockerconfigjson, REGISTRY_TIMEOUT)
    }

    /// As `new`, with another bound on each request.
    pub fn with_timeout(
        repository: &str,
        dockerconfigjson: Option<&str>,
        timeout: Duration,
    ) -> Result<Registry, OciError> {
        let probe: Reference = format!("{repository}:probe")
            .parse()
            .map_err(|e: oci_client::ParseError| OciError::BadReference(repository.into(), e.to_string()))?;
        let host = probe.registry().to_string();
        let auth = match dockerconfigjson {
            Some(json) => auth_for(json, &host)?,
            None => RegistryAuth::Anonymous,
        };
        let loopback = is_loopback_host(&host);
        let protocol = if loopback { ClientProtocol::HttpsExcept(vec![host.clone()]) } else { ClientProtocol::Https };
        // Monolithic blob uploads (POST then PUT) work with every registry; chunked ones do not.
        // oci-client's reads are bounded between bytes (read_timeout), and every call is bounded as a
        // whole by `within`.
        let connect = REGISTRY_CONNECT_TIMEOUT.min(timeout);
        let client = Client::new(ClientConfig {
            protocol,
            use_monolithic_push: true,
            read_timeout: Some(timeout),
            connect_timeout: Some(connect),
            ..Default::default()
        });
        let http = reqwest::Client::builder().timeout(timeout).connect_timeout(connect).build().unwrap_or_default();
        Ok(Registry {
            client,
            http,
            plain_http: loopback,
            auth,
            repository: repository.to_string(),
            timeout,
            tokens: Arc::default(),
        })
    }

    /// The same registry host, client and credentials, for another repository (connections and tokens are
    /// shared).
    pub fn with_repository(&self, repository: &str) -> Registry {
        Registry {
            client: self.client.clone(),
            http: self.http.clone(),
            plain_http: self.plain_http,
            auth: self.auth.clone(),
            repository: repository.to_string(),
            timeout: self.timeout,
            tokens: self.tokens.clone(),
        }
    }

    pub fn repository(&self) -> &str {
        &self.repository
    }

    fn reference(&self, tag_or_digest: &str) -> Result<Reference, OciError> {
        let r = if tag_or_digest.starts_with("sha256:") {
            format!("{}@{tag_or_digest}", self.repository)
        } else {
            format!("{}:{tag_or_digest}", self.repository)
        };
        r.parse().map_err(|e: oci_client::ParseError| OciError::BadReference(r.clone(), e.to_string()))
    }

    fn err(&self, e: oci_client::errors::OciDistributionError) -> OciError {
        let registry = self.repository.split('/').next().unwrap_or_default().to_string();
        use oci_client::errors::{OciDistributionError as E, OciErrorCode as C};
        let reason = match &e {
            E::RequestError(r) if r.is_timeout() => {
                format!(
                    "no answer within {} s ({})",
                    self.timeout.as_secs_f64(),
                    r.url().map(|u| u.as_str()).unwrap_or("")
                )
            }
            E::RequestError(r) => {
                format!("{r}: {}", std::error::Error::source(r).map(|s| s.to_string()).unwrap_or_default())
            }
            _ => e.to_string(),
        };
        let unauthorized = match &e {
            E::AuthenticationFailure(_) | E::UnauthorizedError { .. } => true,
            E::RegistryError { envelope, .. } => {
                envelope.errors.iter().any(|x| matches!(x.code, C::Unauthorized | C::Denied))
            }
            E::ServerError { code, .. } => *code == 401 || *code == 403,
            _ => false,
        };
        // A refusal of the request itself: the distribution spec's error codes other than throttling,
        // or a 4xx without one.
        let refused = match &e {
            E::RegistryError { envelope, .. } => {
                envelope.errors.iter().any(|x| !matches!(x.code, C::Unauthorized | C::Denied | C::Toomanyrequests))
            }
            E::ServerError { code, .. } => (400..500).contains(code) && *code != 404 && *code != 429,
            _ => false,
        };
        if unauthorized {
            OciError::Unauthorized { registry, reason }
        } else if refused {
            OciError::Refused { registry, reason }
        } else {
            OciError::Registry { registry, reason }
        }
    }

    /// What an HTTP status other than success and 404 means, doing `what`.
    fn status_error(&self, status: u16, what: &str, body: &str) -> OciError {
        let reason =
            if body.is_empty() { format!("HTTP {status} {what}") } else { format!("HTTP {status} {what}: {body}") };
        match status {
            401 | 403 => OciError::Unauthorized { registry: self.registry_host(), reason },
            429 => self.unavailable(reason),
            400..=499 => OciError::Refused { registry: self.registry_host(), reason },
            _ => self.unavailable(reason),
        }
    }

    fn registry_host(&self) -> String {
        self.repository.split('/').next().unwrap_or_default().to_string()
    }

    fn unavailable(&self, reason: impl std::fmt::Display) -> OciError {
        OciError::Registry { registry: self.registry_host(), reason: reason.to_string() }
    }

    /// A failed direct request; a timeout says so.
    fn request_failed(&self, what: &str, e: reqwest::Error) -> OciError {
        if e.is_timeout() {
            self.unavailable(format!("{what}: no answer within {} s", self.timeout.as_secs_f64()))
        } else {
            self.unavailable(format!("{what}: {e}"))
        }
    }

    fn too_large(&self, what: impl Into<String>, size: BodySize, limit: u64) -> OciError {
        OciError::TooLarge { registry: self.registry_host(), what: what.into(), size, limit }
    }

    /// Runs one registry operation within the request bound: one that takes longer fails as the
    /// registry being unavailable (retried), never hangs the caller.
    async fn within<T>(
        &self,
        what: &str,
        op: impl std::future::Future<Output = Result<T, OciError>>,
    ) -> Result<T, OciError> {
        crate::metrics::registry_request();
        match tokio::time::timeout(self.timeout, op).await {
            Ok(r) => r,
            Err(_) => Err(self.unavailable(format!("{what}: no answer within {} s", self.timeout.as_secs_f64()))),
        }
    }

    /// Reads a response body of at most `limit` bytes; `what` names it in the error.
    async fn body(&self, resp: reqwest::Response, what: &str, limit: u64) -> Result<Vec<u8>, OciError> {
        read_capped(resp, limit).await.map_err(|e| match e {
            BodyError::TooLarge(size) => self.too_large(what, size, limit),
            BodyError::Transport(reason) => self.unavailable(format!("reading {what}: {reason}")),
        })
    }

    /// The raw manifest at a tag or digest, if any; at most `MAX_MANIFEST_BYTES` of it are read (a larger
    /// one is `TooLarge`, a permanent error).
    pub async fn manifest(&self, tag_or_digest: &str) -> Result<Option<Vec<u8>>, OciError> {
        let r = self.reference(tag_or_digest)?;
        let what = format!("manifest {}", r.whole());
        self.within(&what, async {
            // Read directly: oci-client reads a manifest whole, however large.
            let url = format!("{}/v2/{}/manifests/{tag_or_digest}", self.base_url(&r), r.repository());
            let accept = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].join(", ");
            let req = self.authorized(self.http.get(&url).header("accept", accept), &r, false).await?;
            let resp = req.send().await.map_err(|e| self.request_failed(&format!("reading {what}"), e))?;
            match resp.status().as_u16() {
                200 => {}
                404 => return Ok(None),
                s => return Err(self.status_error(s, &format!("reading {what}"), "")),
            }
            let bytes = self.body(resp, &what, MAX_MANIFEST_BYTES).await?;
            // Pulled by digest, the bytes must be that digest: a registry is not trusted to say so.
            if tag_or_digest.starts_with("sha256:") && digest(&bytes) != tag_or_digest {
                return Err(OciError::Registry {
                    registry: self.repository.clone(),
                    reason: format!("served a manifest for {tag_or_digest} whose digest is {}", digest(&bytes)),
                });
            }
            Ok(Some(bytes))
        })
        .await
    }

    /// Pushes an image (blobs first) and points `tag` at it; skipped when the digest is already there.
    pub async fn push(&self, image: &Image, tag: Option<&str>) -> Result<Pushed, OciError> {
        let digest = image.digest();
        let present = self.manifest(&digest).await?.is_some();
        let target = self.reference(tag.unwrap_or(&digest))?;
        self.within("authenticating to push", async {
            self.client.auth(&target, &self.auth, oci_client::RegistryOperation::Push).await.map_err(|e| self.err(e))
        })
        .await?;
        if present && tag.is_none() {
            return Ok(Pushed::AlreadyThere);
        }
        if !present {
            for blob in std::iter::once(&image.config).chain(&image.layers) {
                let d = blob.digest();
                self.within(&format!("pushing blob {d}"), async {
                    if self.client.blob_exists(&target, &d).await.map_err(|e| self.err(e))? {
                        return Ok(());
                    }
                    match self.client.push_blob(&target, blob.bytes.clone(), &d).await {
                        Ok(_) => Ok(()),
                        // Some registries store the blob but omit the Location header the spec requires.
                        Err(oci_client::errors::OciDistributionError::RegistryNoLocationError)
                            if self.client.blob_exists(&target, &d).await.unwrap_or(false) =>
                        {
                            Ok(())
                        }
                        Err(e) => Err(self.err(e)),
                    }
                })
                .await?;
            }
        }
        match tag {
            Some(_) => {
                let content_type = reqwest::header::HeaderValue::from_static(OCI_MANIFEST);
                self.within("pushing the manifest", async {
                    self.client
                        .push_manifest_raw(&target, image.manifest.clone(), content_type)
                        .await
                        .map_err(|e| self.err(e))
                })
                .await?;
            }
            None => self.put_manifest_by_digest(image).await?,
        }
        Ok(if present { Pushed::AlreadyThere } else { Pushed::New })
    }

    /// The layers of a manifest, with their bytes (used for signature manifests, whose layers are small).
    /// A layer over `MAX_LAYER_BYTES`, more than `MAX_LAYERS` layers, or layers over
    /// `MAX_LAYERS_TOTAL_BYTES` together are `TooLarge`, a permanent error.
    pub async fn layers(&self, manifest: &[u8]) -> Result<Vec<Blob>, OciError> {
        self.layers_each(manifest).await?.into_iter().collect()
    }

    /// As `layers`, but a layer that cannot be read (too large, say) fails alone: the others are still
    /// read. The manifest itself failing (not JSON, too many layers) fails all.
    pub async fn layers_each(&self, manifest: &[u8]) -> Result<Vec<Result<Blob, OciError>>, OciError> {
        let v: Value = serde_json::from_slice(manifest).map_err(|e| OciError::Registry {
            registry: self.repository.clone(),
            reason: format!("a signature manifest cannot be read: {e}"),
        })?;
        let listed = v["layers"].as_array().map(Vec::as_slice).unwrap_or_default();
        if listed.len() > MAX_LAYERS {
            return Err(OciError::TooManyLayers {
                registry: self.registry_host(),
                repository: self.repository.clone(),
                count: listed.len(),
            });
        }
        let r = self.reference("probe")?;
        let mut out = Vec::new();
        let mut total = 0u64;
        for l in listed {
            let digest = l["digest"].as_str().unwrap_or_default();
            let what = format!("layer {digest} of {}", self.repository);
            // OCI descriptors must have a size; without one, the bound alone caps the read.
            let declared = l["size"].as_u64();
            // The declared size is checked before reading, and the bytes read are capped by it as well:
            // a registry cannot send more than the manifest says.
            let limit = MAX_LAYER_BYTES.min(MAX_LAYERS_TOTAL_BYTES - total);
            if let Some(declared) = declared.filter(|d| *d > limit) {
                let too_large = if declared > MAX_LAYER_BYTES {
                    self.too_large(what, BodySize::Declared(declared), MAX_LAYER_BYTES)
                } else {
                    self.too_large(
                        format!("{what} with the layers before it"),
                        BodySize::Declared(total + declared),
                        MAX_LAYERS_TOTAL_BYTES,
                    )
                };
                out.push(Err(too_large));
                continue;
            }
            let bytes =
                self.within(&format!("reading {what}"), self.blob(&r, digest, &what, declared.unwrap_or(limit))).await;
            let bytes = match bytes {
                Ok(b) => b,
                Err(e @ OciError::TooLarge { .. }) => {
                    out.push(Err(e));
                    continue;
                }
                Err(e) => return Err(e),
            };
            total += bytes.len() as u64;
            if oci_digest_matches(&bytes, digest) {
                let annotations = descriptor_annotations(l);
                out.push(Ok(Blob {
                    media_type: l["mediaType"].as_str().unwrap_or_default().to_string(),
                    bytes,
                    annotations,
                }));
            }
        }
        Ok(out)
    }

    /// A blob's bytes, reading no more than `size` bytes (its descriptor's size).
    async fn blob(&self, r: &Reference, digest: &str, what: &str, size: u64) -> Result<Vec<u8>, OciError> {
        use futures::StreamExt as _;
        crate::metrics::registry_request();
        let mut sized = self.client.pull_blob_stream(r, digest).await.map_err(|e| self.err(e))?;
        if let Some(n) = sized.content_length.filter(|n| *n > size) {
            return Err(self.too_large(what, BodySize::Declared(n), size));
        }
        let mut out = Vec::new();
        while let Some(chunk) = sized.stream.next().await {
            let chunk = chunk.map_err(|e| self.unavailable(format!("reading {what}: {e}")))?;
            let total = out.len() as u64 + chunk.len() as u64;
            if total > size {
                return Err(self.too_large(what, BodySize::AtLeast(total), size));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// Does the registry serve the OCI 1.1 referrers API?
    pub async fn serves_referrers(&self, image_digest: &str) -> bool {
        // Asked directly: a client library may fall back to the tag schema and hide a 404.
        let Ok(r) = self.reference(image_digest) else { return false };
        crate::metrics::registry_request();
        let url = format!("{}/v2/{}/referrers/{image_digest}", self.base_url(&r), r.repository());
        let Ok(Ok(req)) = tokio::time::timeout(self.timeout, self.authorized(self.http.get(&url), &r, false)).await
        else {
            return false;
        };
        match req.send().await {
            Ok(resp) if resp.status().is_success() => resp
                .headers()
                .get("content-type")
                .and_then(|c| c.to_str().ok())
                .is_some_and(|c| c.starts_with(OCI_INDEX)),
            _ => false,
        }
    }

    /// The descriptors of the manifests that refer to `image_digest`: from the referrers API, or from
    /// the `sha256-<hex>` fallback index on registries without it. The index is a manifest: at most
    /// `MAX_MANIFEST_BYTES` of it are read (a larger one is `TooLarge`).
    pub async fn referrers(&self, image_digest: &str) -> Result<Vec<Value>, OciError> {
        let r = self.reference(image_digest)?;
        let url = format!("{}/v2/{}/referrers/{image_digest}", self.base_url(&r), r.repository());
        let what = format!("the referrers index of {image_digest}");
        let index: Value = self
            .within(&format!("listing referrers of {image_digest}"), async {
                let req = self.authorized(self.http.get(&url).header("accept", OCI_INDEX), &r, false).await?;
                let resp = req.send().await.map_err(|e| self.request_failed("listing referrers", e))?;
                match resp.status().as_u16() {
                    200 => {
                        let bytes = self.body(resp, &what, MAX_MANIFEST_BYTES).await?;
                        serde_json::from_slice(&bytes)
                            .map_err(|e| self.unavailable(format!("the referrers index cannot be read: {e}")))
                    }
                    404 => Ok(Value::Null),
                    s => Err(self.status_error(s, "listing referrers", "")),
                }
            })
            .await?;
        let index = match index {
            Value::Null => match self.manifest(&image_digest.replace(':', "-")).await? {
                Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
                None => return Ok(Vec::new()),
            },
            index => index,
        };
        Ok(index["manifests"].as_array().cloned().unwrap_or_default())
    }

    /// Where the registry of `r` is served: as oci-client resolves it (`docker.io` is served at
    /// `index.docker.io`).
    fn base_url(&self, r: &Reference) -> String {
        format!("{}://{}", if self.plain_http { "http" } else { "https" }, r.resolve_registry())
    }

    /// Adds the credentials oci-client negotiated (a bearer token, or basic auth), reusing a token for a
    /// while rather than asking the registry for one before every request.
    async fn authorized(
        &self,
        req: reqwest::RequestBuilder,
        r: &Reference,
        push: bool,
    ) -> Result<reqwest::RequestBuilder, OciError> {
        let key = (r.repository().to_string(), push);
        let cached =
            self.tokens.lock().ok().and_then(|t| t.get(&key).filter(|(_, at)| at.elapsed() < TOKEN_REUSE).cloned());
        let token = match cached {
            Some((token, _)) => token,
            None => {
                use oci_client::RegistryOperation as Op;
                let op = if push { Op::Push } else { Op::Pull };
                let token = self.client.auth(r, &self.auth, op).await.map_err(|e| self.err(e))?;
                if let Ok(mut t) = self.tokens.lock() {
                    // A handful of repositories per registry; never let the map grow without end.
                    if t.len() >= 256 {
                        t.clear();
                    }
                    t.insert(key, (token.clone(), Instant::now()));
                }
                token
            }
        };
        Ok(match (token, &self.auth) {
            (Some(t), _) => req.bearer_auth(t),
            (None, RegistryAuth::Basic(u, p)) => req.basic_auth(u, Some(p)),
            _ => req,
        })
    }

    /// Puts a manifest by digest. Done here because oci-client cannot handle a registry that omits the
    /// Location header on a push by digest.
    async fn put_manifest_by_digest(&self, image: &Image) -> Result<(), OciError> {
        self.put_manifest(&image.digest(), OCI_MANIFEST, image.manifest.clone()).await
    }

    /// Attaches a referrer (pushed by digest) to `subject`; on a registry without the referrers API, also
    /// lists it in the `sha256-<hex>` fallback index, as the OCI distribution spec has clients do.
    pub async fn attach_referrer(&self, referrer: &Image, subject: &str) -> Result<(), OciError> {
        self.push(referrer, None).await?;
        if self.serves_referrers(subject).await {
            return Ok(());
        }
        let tag = subject.replace(':', "-");
        let mut manifests: Vec<Value> = match self.manifest(&tag).await? {
            Some(bytes) => serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v["manifests"].as_array().cloned())
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let digest = referrer.digest();
        if manifests.iter().any(|m| m["digest"] == digest.as_str()) {
            return Ok(());
        }
        let manifest: Value = serde_json::from_slice(&referrer.manifest).unwrap_or_default();
        let mut descriptor = json!({"mediaType": OCI_MANIFEST, "size": referrer.manifest.len(), "digest": digest});
        if let Some(t) = manifest["artifactType"].as_str() {
            descriptor["artifactType"] = json!(t);
        }
        manifests.push(descriptor);
        manifests.sort_by(|a, b| a["digest"].as_str().cmp(&b["digest"].as_str()));
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
        self.put_manifest(&tag, OCI_INDEX, serde_json::to_vec(&index).unwrap_or_default()).await
    }

    async fn put_manifest(&self, tag_or_digest: &str, media_type: &str, bytes: Vec<u8>) -> Result<(), OciError> {
        let digest = tag_or_digest;
        let r = self.reference(digest)?;
        let url = format!("{}/v2/{}/manifests/{digest}", self.base_url(&r), r.repository());
        let req = self.http.put(&url).header("content-type", media_type).body(bytes);
        let resp = self
            .within("pushing the manifest", async {
                let req = self.authorized(req, &r, true).await?;
                req.send().await.map_err(|e| self.request_failed("pushing the manifest", e))
            })
            .await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        // Only the start of an error body goes into the message.
        let body = match read_capped(resp, 4096).await {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(_) => "(an error body over 4 KiB)".to_string(),
        };
        Err(self.status_error(status.as_u16(), &format!("pushing manifest {digest}"), body.trim()))
    }
}

/// A blob is kept only when its bytes match the digest the registry claims for it.
fn oci_digest_matches(bytes: &[u8], expected: &str) -> bool {
    digest(bytes) == expected
}

/// Basic credentials for `host` from a dockerconfigjson document.
pub fn auth_for(dockerconfigjson: &str, host: &str) -> Result<RegistryAuth, OciError> {
    use base64::Engine;
    let v: Value = serde_json::from_str(dockerconfigjson).map_err(|e| OciError::BadCredentials(e.to_string()))?;
    let auths = v
        .get("auths")
        .and_then(Value::as_object)
        .ok_or_else(|| OciError::BadCredentials("no \"auths\" object".into()))?;
    let entry = auths.iter().find(|(k, _)| {
        let k = k.trim_start_matches("https://").trim_start_matches("http://");
        k.split('/').next() == Some(host)
    });
    let Some((_, entry)) = entry else { return Ok(RegistryAuth::Anonymous) };
    if let (Some(u), Some(p)) =
        (entry.get("username").and_then(Value::as_str), entry.get("password").and_then(Value::as_str))
    {
        return Ok(RegistryAuth::Basic(u.into(), p.into()));
    }
    let encoded = entry.get("auth").and_then(Value::as_str).ok_or_else(|| {
        OciError::BadCredentials(format!("the entry for {host} has neither auth nor username/password"))
    })?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| OciError::BadCredentials(format!("auth for {host}: {e}")))?;
    let text =
        String::from_utf8(decoded).map_err(|_| OciError::BadCredentials(format!("auth for {host} is not text")))?;
    let (u, p) = text
        .split_once(':')
        .ok_or_else(|| OciError::BadCredentials(format!("auth for {host} is not user:password")))?;
    Ok(RegistryAuth::Basic(u.into(), p.into()))
}

pub const KIND_IMAGE: &str = "dev.cosignproject.cosign/image";
pub const KIND_SIGS: &str = "dev.cosignproject.cosign/sigs";
pub const KIND_ATTS: &str = "dev.cosignproject.cosign/atts";
/// A multi-platform image, as `cosign save` marks it.
pub const KIND_IMAGE_INDEX: &str = "dev.cosignproject.cosign/imageIndex";
/// The OCI annotation naming an image of a layout (its tag, or a reference).
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// An OCI image layout as `cosign save` (and `weft run --out`) write one: one image, its signatures and its
/// attestations, told apart by the `kind` annotation of `index.json`. Read for image verification where
/// the registry is not reachable (the quickstart, an air-gapped build). The layout is input like any
/// registry answer: each blob is checked against its digest and read within the registry's limits; the
/// layout lists no referrers.
#[derive(Clone, Debug)]
pub struct LayoutReader {
    dir: PathBuf,
}

impl LayoutReader {
    pub fn new(dir: impl Into<PathBuf>) -> LayoutReader {
        LayoutReader { dir: dir.into() }
    }

    fn unreadable(&self, reason: impl Into<String>) -> OciError {
        OciError::LayoutUnreadable { path: self.dir.display().to_string(), reason: reason.into() }
    }

    /// A regular file of the layout, at most `limit` bytes (`None`: not there). Never a link, a FIFO or a
    /// device: a layout is input, and such a file could stall the read or never end it.
    fn file(&self, path: &Path, what: &str, limit: u64) -> Result<Option<Vec<u8>>, OciError> {
        use std::io::Read;
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_file() => {}
            Ok(_) => return Err(self.unreadable(format!("{what} is not a regular file"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.unreadable(format!("{what}: {e}"))),
        }
        let file = std::fs::File::open(path).map_err(|e| self.unreadable(format!("{what}: {e}")))?;
        let size = file.metadata().map_err(|e| self.unreadable(format!("{what}: {e}")))?.len();
        let too_large = |size: BodySize| {
            let (registry, what) = (self.dir.display().to_string(), what.to_string());
            OciError::TooLarge { registry, what, size, limit }
        };
        if size > limit {
            return Err(too_large(BodySize::Declared(size)));
        }
        let mut bytes = Vec::new();
        file.take(limit + 1).read_to_end(&mut bytes).map_err(|e| self.unreadable(format!("{what}: {e}")))?;
        if bytes.len() as u64 > limit {
            return Err(too_large(BodySize::AtLeast(bytes.len() as u64)));
        }
        Ok(Some(bytes))
    }

    /// The blob with this digest (`None`: not in the layout), at most `limit` bytes.
    fn blob(&self, digest: &str, limit: u64) -> Result<Option<Vec<u8>>, OciError> {
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            .ok_or_else(|| self.unreadable(format!("{digest:?} is not a sha256 digest")))?;
        let Some(bytes) = self.file(&self.dir.join("blobs/sha256").join(hex), &format!("blob {digest}"), limit)? else {
            return Ok(None);
        };
        if hex::encode(Sha256::digest(&bytes)) != hex {
            return Err(self.unreadable(format!("blob {digest} does not match its digest")));
        }
        Ok(Some(bytes))
    }

    /// The entries of `index.json` of one `kind`.
    fn entries(&self, kinds: &[&str]) -> Result<Vec<Value>, OciError> {
        let index = self
            .file(&self.dir.join("index.json"), "index.json", MAX_MANIFEST_BYTES)?
            .ok_or_else(|| self.unreadable("no index.json: not an OCI image layout"))?;
        let index: Value = serde_json::from_slice(&index).map_err(|e| self.unreadable(format!("index.json: {e}")))?;
        let manifests = index["manifests"].as_array().map(Vec::as_slice).unwrap_or_default();
        Ok(manifests.iter().filter(|m| kinds.iter().any(|k| m["annotations"]["kind"] == *k)).cloned().collect())
    }

    /// The one entry of these kinds, if any.
    fn entry(&self, kinds: &[&str]) -> Result<Option<Value>, OciError> {
        match self.entries(kinds)?.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one.clone())),
            _ => Err(self.unreadable(format!("index.json lists more than one {}", kinds.join(" or ")))),
        }
    }

    /// The image (or image index, for a multi-platform image) the layout holds.
    fn image(&self) -> Result<Option<Value>, OciError> {
        self.entry(&[KIND_IMAGE, KIND_IMAGE_INDEX])
    }

    /// A manifest by digest, by cosign's `sha256-<hex>.sig` / `.att` tags (for the image the layout holds
    /// only), or by a tag the layout names for its image (`org.opencontainers.image.ref.name`, as the tag
    /// or a reference ending in it). `cosign save` names none: then only digests resolve, as a tag could
    /// stand for any image.
    pub fn manifest(&self, reference: &str) -> Result<Option<Vec<u8>>, OciError> {
        if reference.starts_with("sha256:") {
            return self.blob(reference, MAX_MANIFEST_BYTES);
        }
        let digest_of = |e: Option<Value>| e.and_then(|e| e["digest"].as_str().map(str::to_string));
        let signed = reference.strip_prefix("sha256-").and_then(|r| {
            r.strip_suffix(".sig").map(|h| (h, KIND_SIGS)).or_else(|| r.strip_suffix(".att").map(|h| (h, KIND_ATTS)))
        });
        let digest = match signed {
            Some((hex, kind)) if digest_of(self.image()?).as_deref() == Some(&format!("sha256:{hex}")) => {
                digest_of(self.entry(&[kind])?)
            }
            Some(_) => None,
            None => digest_of(self.image()?.filter(|e| {
                let named = e["annotations"][REF_NAME_ANNOTATION].as_str().unwrap_or_default();
                !named.is_empty() && (named == reference || named.ends_with(&format!(":{reference}")))
            })),
        };
        match digest {
            Some(d) => self.blob(&d, MAX_MANIFEST_BYTES),
            None => Ok(None),
        }
    }

    /// The layers a manifest lists; a layer that cannot be read fails alone.
    pub fn layers_each(&self, manifest: &[u8]) -> Result<Vec<Result<Blob, OciError>>, OciError> {
        let v: Value =
            serde_json::from_slice(manifest).map_err(|e| self.unreadable(format!("a manifest cannot be read: {e}")))?;
        let listed = v["layers"].as_array().map(Vec::as_slice).unwrap_or_default();
        if listed.len() > MAX_LAYERS {
            let (registry, repository) = (self.dir.display().to_string(), String::new());
            return Err(OciError::TooManyLayers { registry, repository, count: listed.len() });
        }
        let mut total = 0u64;
        let layers = listed.iter().map(|l| {
            let digest = l["digest"].as_str().unwrap_or_default();
            let bytes = self
                .blob(digest, MAX_LAYER_BYTES.min(MAX_LAYERS_TOTAL_BYTES - total))?
                .ok_or_else(|| self.unreadable(format!("layer {digest} is not in the layout")))?;
            total += bytes.len() as u64;
            let annotations = descriptor_annotations(l);
            Ok(Blob { media_type: l["mediaType"].as_str().unwrap_or_default().to_string(), bytes, annotations })
        });
        Ok(layers.collect())
    }
}

/// Writes `image` and its signature image as an OCI image layout that `cosign verify --local-image`
/// reads. An existing layout at `dir` is replaced.
pub fn write_layout(dir: &Path, image: &Image, signatures: &Image) -> Result<(), OciError> {
    let _ = std::fs::remove_file(dir.join("index.json"));
    add_to_layout(dir, image, KIND_IMAGE)?;
    add_to_layout(dir, signatures, KIND_SIGS)
}

/// Adds (or replaces) the image of one `kind` in an OCI image layout.
pub fn add_to_layout(dir: &Path, image: &Image, kind: &str) -> Result<(), OciError> {
    let err = |e: std::io::Error| OciError::Layout { path: dir.display().to_string(), reason: e.to_string() };
    write_blobs(dir, image)?;
    let mut manifests: Vec<Value> = std::fs::read(dir.join("index.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["manifests"].as_array().cloned())
        .unwrap_or_default();
    manifests.retain(|m| m["annotations"]["kind"] != kind);
    manifests.push(json!({"mediaType": OCI_MANIFEST, "size": image.manifest.len(), "digest": image.digest(), "annotations": {"kind": kind}}));
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(err)?;
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap_or_default()).map_err(err)?;
    Ok(())
}

/// Writes a referrer's blobs into an OCI image layout: cosign finds them by their subject, unlisted.
pub fn add_referrer_to_layout(dir: &Path, referrer: &Image) -> Result<(), OciError> {
    write_blobs(dir, referrer)
}

/// An image's manifest, config and layers, as blobs of a layout.
fn write_blobs(dir: &Path, image: &Image) -> Result<(), OciError> {
    let err = |e: std::io::Error| OciError::Layout { path: dir.display().to_string(), reason: e.to_string() };
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).map_err(err)?;
    for bytes in [&image.manifest, &image.config.bytes].into_iter().chain(image.layers.iter().map(|l| &l.bytes)) {
        std::fs::write(blobs.join(digest(bytes).trim_start_matches("sha256:")), bytes).map_err(err)?;
    }
    Ok(())
}

/// The layers of the image of one `kind` in an OCI image layout, if there is one.
pub fn layout_layers(dir: &Path, kind: &str) -> Vec<Blob> {
    // Through the reader: digests checked (no path out of the layout), regular files only, bounded.
    let layout = LayoutReader::new(dir);
    let read = |d: &str| layout.blob(d, MAX_LAYER_BYTES).ok().flatten();
    let Some(entry) = layout.entries(&[kind]).ok().and_then(|e| e.into_iter().next()) else {
        return Vec::new();
    };
    let Some(manifest) = entry["digest"].as_str().and_then(read).and_then(|b| serde_json::from_slice::<Value>(&b).ok())
    else {
        return Vec::new();
    };
    manifest["layers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| {
            let bytes = read(l["digest"].as_str()?)?;
            let annotations = descriptor_annotations(l);
            Some(Blob { media_type: l["mediaType"].as_str()?.to_string(), bytes, annotations })
        })
        .collect()
}

/// A descriptor's annotations, as strings.
fn descriptor_annotations(descriptor: &Value) -> BTreeMap<String, String> {
    descriptor["annotations"]
        .as_object()
        .map(|a| a.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
        .unwrap_or_default()
}

/// The `.att` tag cosign looks up for an image digest.
pub fn attestation_tag(image_digest: &str) -> String {
    format!("{}.att", image_digest.replace(':', "-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layout as `cosign save` writes one: an image and its signatures, told apart by `kind`.
    fn saved_layout() -> (tempfile::TempDir, Image, Image) {
        let dir = tempfile::tempdir().unwrap();
        let layer = Blob { media_type: MANIFEST_LAYER.into(), bytes: b"app".to_vec(), annotations: BTreeMap::new() };
        let image = Image::new(vec![layer], &BTreeMap::new(), None, None);
        let payload = simple_signing_payload("registry.example/app", &image.digest(), &BTreeMap::new());
        let signatures = Image::new(vec![signature_layer(payload, "c2ln", None)], &BTreeMap::new(), None, None);
        write_layout(dir.path(), &image, &signatures).unwrap();
        (dir, image, signatures)
    }

    fn set_index(dir: &Path, edit: impl FnOnce(&mut Value)) {
        let mut index: Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
        edit(&mut index);
        std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    }

    #[test]
    fn a_layout_answers_for_its_own_image_by_digest_and_for_a_tag_only_when_it_names_it() {
        let (dir, image, signatures) = saved_layout();
        let layout = LayoutReader::new(dir.path());
        assert_eq!(layout.manifest(&image.digest()).unwrap(), Some(image.manifest.clone()));
        let hex = image.digest().trim_start_matches("sha256:").to_string();
        assert_eq!(layout.manifest(&format!("sha256-{hex}.sig")).unwrap(), Some(signatures.manifest.clone()));
        assert_eq!(layout.manifest(&format!("sha256-{}.sig", "0".repeat(64))).unwrap(), None, "another image's");
        assert_eq!(layout.manifest(&format!("sha256-{hex}.att")).unwrap(), None, "no attestations saved");
        // `cosign save` names no tag: a tag could stand for any image, so it resolves to nothing.
        assert_eq!(layout.manifest("1.0").unwrap(), None);
        set_index(dir.path(), |i| i["manifests"][0]["annotations"][REF_NAME_ANNOTATION] = json!("1.0"));
        assert_eq!(layout.manifest("1.0").unwrap(), Some(image.manifest.clone()));
        assert_eq!(layout.manifest("2.0").unwrap(), None);
        // A multi-platform image is saved as an image index.
        set_index(dir.path(), |i| i["manifests"][0]["annotations"]["kind"] = json!(KIND_IMAGE_INDEX));
        assert_eq!(layout.manifest(&format!("sha256-{hex}.sig")).unwrap(), Some(signatures.manifest.clone()));
        let layers = layout.layers_each(&signatures.manifest).unwrap();
        assert_eq!(layers.len(), 1);
        assert!(layers[0].as_ref().unwrap().annotations.contains_key(SIGNATURE_ANNOTATION));
    }

    #[test]
    fn a_layout_is_input_tampered_linked_special_and_ambiguous_files_are_refused() {
        let (dir, image, _) = saved_layout();
        let layout = LayoutReader::new(dir.path());
        let blob = dir.path().join("blobs/sha256").join(image.digest().trim_start_matches("sha256:"));
        let unreadable = |r: Result<Option<Vec<u8>>, OciError>| match r {
            Err(e @ OciError::LayoutUnreadable { .. }) => e.to_string(),
            other => panic!("expected LayoutUnreadable, got {other:?}"),
        };
        std::fs::write(&blob, b"something else").unwrap();
        assert!(unreadable(layout.manifest(&image.digest())).contains("does not match its digest"));
        std::fs::remove_file(&blob).unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/dev/zero", &blob).unwrap();
            assert!(unreadable(layout.manifest(&image.digest())).contains("not a regular file"));
            std::fs::remove_file(&blob).unwrap();
            let made = std::process::Command::new("mkfifo").arg(&blob).status().unwrap();
            assert!(made.success());
            assert!(
                unreadable(layout.manifest(&image.digest())).contains("not a regular file"),
                "a FIFO never blocks it"
            );
            std::fs::remove_file(&blob).unwrap();
        }
        assert!(unreadable(layout.manifest("sha256:../../etc/passwd")).contains("not a sha256 digest"));
        set_index(dir.path(), |i| {
            let first = i["manifests"][0].clone();
            i["manifests"].as_array_mut().unwrap().push(first);
        });
        assert!(unreadable(layout.manifest("1.0")).contains("more than one"));
        std::fs::write(dir.path().join("index.json"), vec![b' '; (MAX_MANIFEST_BYTES + 1) as usize]).unwrap();
        assert!(matches!(layout.manifest("1.0"), Err(OciError::TooLarge { .. })));
    }

    #[test]
    fn throttling_and_failures_are_retried_refusals_are_verdicts() {
        let r = Registry::new("127.0.0.1:5000/team/app", None).unwrap();
        let kind = |status| {
            let e = r.status_error(status, "reading manifest x", "");
            (e.reason().as_str(), e.reason().retryable())
        };
        assert_eq!(kind(429), ("RegistryUnavailable", true));
        assert_eq!(kind(500), ("RegistryUnavailable", true));
        assert_eq!(kind(503), ("RegistryUnavailable", true));
        assert_eq!(kind(401), ("RegistryUnauthorized", false));
        assert_eq!(kind(403), ("RegistryUnauthorized", false));
        assert_eq!(kind(400), ("RegistryRefused", false));
        assert_eq!(kind(413), ("RegistryRefused", false));
        assert!(r.status_error(400, "pushing manifest m", "MANIFEST_INVALID").to_string().contains("MANIFEST_INVALID"));
    }

    #[test]
    fn only_exact_loopback_registries_get_plain_http() {
        assert!(is_loopback_host("[::1]:5000"));
        for host in ["localhost:5000", "127.0.0.1:5000", "127.0.0.1", "localhost"] {
            assert!(is_loopback_host(host), "{host}");
            assert!(Registry::new(&format!("{host}/a"), None).unwrap().plain_http, "{host}");
        }
        assert!(!is_loopback_host("[::2]:5000"));
        for host in ["localhost.evil.test", "localhost.evil.test:5000", "127.evil.test", "127.0.0.1.example:80"] {
            assert!(!is_loopback_host(host), "{host}");
            assert!(!Registry::new(&format!("{host}/a"), None).unwrap().plain_http, "{host}");
        }
    }

    #[test]
    fn the_manifest_image_is_one_text_layer_and_stable() {
        let a = manifest_image(b"kind: A", &BTreeMap::new());
        let b = manifest_image(b"kind: A", &BTreeMap::new());
        assert_eq!(a.digest(), b.digest(), "the same blob gives the same digest");
        let m: Value = serde_json::from_slice(&a.manifest).unwrap();
        assert_eq!(m["layers"][0]["mediaType"], "text/plain");
        assert_eq!(m["layers"][0]["digest"], digest(b"kind: A"));
        assert_eq!(m["config"]["mediaType"], OCI_CONFIG);
    }

    #[test]
    fn simple_signing_payload_is_what_cosign_checks() {
        let p: Value =
            serde_json::from_slice(&simple_signing_payload("reg/repo", "sha256:ab", &BTreeMap::new())).unwrap();
        assert_eq!(p["critical"]["image"]["docker-manifest-digest"], "sha256:ab");
        assert_eq!(p["critical"]["type"], "cosign container image signature");
        assert!(p["optional"].is_null());
        assert_eq!(signature_tag("sha256:ab"), "sha256-ab.sig");
    }

    #[test]
    fn docker_config_credentials() {
        let json = r#"{"auths":{"https://reg.example:5000":{"auth":"dTpw"},"other":{"username":"a","password":"b"}}}"#;
        assert_eq!(auth_for(json, "reg.example:5000").unwrap(), RegistryAuth::Basic("u".into(), "p".into()));
        assert_eq!(auth_for(json, "other").unwrap(), RegistryAuth::Basic("a".into(), "b".into()));
        assert_eq!(auth_for(json, "none").unwrap(), RegistryAuth::Anonymous);
        assert!(matches!(auth_for("{}", "x"), Err(OciError::BadCredentials(_))));
        assert!(matches!(auth_for(r#"{"auths":{"x":{"auth":"%%"}}}"#, "x"), Err(OciError::BadCredentials(_))));
    }
}
