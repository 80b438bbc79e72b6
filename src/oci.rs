//! OCI artifacts in the shapes cosign and kubectl-sigstore read:
//! - the manifest image: the signed blob as one `text/plain` layer (as `kubectl sigstore sign -i` pushes);
//! - its cosign signature: a simple-signing payload layer with the signature (and, when a transparency
//!   log is configured, the Rekor bundle) as annotations, under the `sha256-<hex>.sig` tag, and also as an
//!   OCI 1.1 referrer where the registry serves the referrers API;
//! - an OCI image layout directory (`index.json` entries marked `kind: dev.cosignproject.cosign/image`
//!   and `/sigs`), which `cosign verify --local-image` reads.
//!
//! Building the artifacts is pure; `Registry` and `write_layout` do the I/O.

use std::collections::BTreeMap;
use std::path::Path;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use thiserror::Error;

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

#[derive(Debug, Error)]
pub enum OciError {
    #[error("registry {registry}: {reason}")]
    Registry { registry: String, reason: String },
    #[error("registry {registry} refused the credentials: {reason}")]
    Unauthorized { registry: String, reason: String },
    #[error("{0:?} is not a valid OCI repository reference: {1}")]
    BadReference(String, String),
    #[error("cannot read the registry credentials: {0}")]
    BadCredentials(String),
    #[error("cannot write the OCI layout at {path}: {reason}")]
    Layout { path: String, reason: String },
}

impl OciError {
    pub fn reason(&self) -> &'static str {
        match self {
            OciError::Registry { .. } => "RegistryUnavailable",
            OciError::Unauthorized { .. } => "RegistryUnauthorized",
            OciError::BadReference(..) => "InvalidImageRepository",
            OciError::BadCredentials(_) => "RegistryCredentialsInvalid",
            OciError::Layout { .. } => "LayoutUnwritable",
        }
    }

    /// A registry that is down (or briefly refusing) is retried; configuration problems are not.
    pub fn retryable(&self) -> bool {
        matches!(self, OciError::Registry { .. })
    }
}

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
    crate::signing::verify(public_pem, &layer.bytes, &der)
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
}

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
        let client = Client::new(ClientConfig { protocol, use_monolithic_push: true, ..Default::default() });
        let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(60)).build().unwrap_or_default();
        Ok(Registry { client, http, plain_http: loopback, auth, repository: repository.to_string() })
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
        let reason = e.to_string();
        use oci_client::errors::{OciDistributionError as E, OciErrorCode as C};
        let unauthorized = match &e {
            E::AuthenticationFailure(_) | E::UnauthorizedError { .. } => true,
            E::RegistryError { envelope, .. } => {
                envelope.errors.iter().any(|x| matches!(x.code, C::Unauthorized | C::Denied))
            }
            E::ServerError { code, .. } => *code == 401 || *code == 403,
            _ => false,
        };
        if unauthorized { OciError::Unauthorized { registry, reason } } else { OciError::Registry { registry, reason } }
    }

    /// The raw manifest at a tag or digest, if any.
    pub async fn manifest(&self, tag_or_digest: &str) -> Result<Option<Vec<u8>>, OciError> {
        let r = self.reference(tag_or_digest)?;
        match self
            .client
            .pull_manifest_raw(&r, &self.auth, &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST])
            .await
        {
            // Pulled by digest, the bytes must be that digest: a registry is not trusted to say so.
            Ok((bytes, _)) if tag_or_digest.starts_with("sha256:") && digest(&bytes) != tag_or_digest => {
                Err(OciError::Registry {
                    registry: self.repository.clone(),
                    reason: format!("served a manifest for {tag_or_digest} whose digest is {}", digest(&bytes)),
                })
            }
            Ok((bytes, _)) => Ok(Some(bytes.to_vec())),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Pushes an image (blobs first) and points `tag` at it; skipped when the digest is already there.
    pub async fn push(&self, image: &Image, tag: Option<&str>) -> Result<Pushed, OciError> {
        let digest = image.digest();
        let present = self.manifest(&digest).await?.is_some();
        let target = self.reference(tag.unwrap_or(&digest))?;
        self.client.auth(&target, &self.auth, oci_client::RegistryOperation::Push).await.map_err(|e| self.err(e))?;
        if present && tag.is_none() {
            return Ok(Pushed::AlreadyThere);
        }
        if !present {
            for blob in std::iter::once(&image.config).chain(&image.layers) {
                let d = blob.digest();
                if !self.client.blob_exists(&target, &d).await.map_err(|e| self.err(e))? {
                    match self.client.push_blob(&target, blob.bytes.clone(), &d).await {
                        Ok(_) => {}
                        // Some registries store the blob but omit the Location header the spec requires.
                        Err(oci_client::errors::OciDistributionError::RegistryNoLocationError)
                            if self.client.blob_exists(&target, &d).await.unwrap_or(false) => {}
                        Err(e) => return Err(self.err(e)),
                    }
                }
            }
        }
        match tag {
            Some(_) => {
                let content_type = reqwest::header::HeaderValue::from_static(OCI_MANIFEST);
                self.client
                    .push_manifest_raw(&target, image.manifest.clone(), content_type)
                    .await
                    .map_err(|e| self.err(e))?;
            }
            None => self.put_manifest_by_digest(image).await?,
        }
        Ok(if present { Pushed::AlreadyThere } else { Pushed::New })
    }

    /// The layers of a manifest, with their bytes (used for signature manifests, whose layers are small).
    pub async fn layers(&self, manifest: &[u8]) -> Result<Vec<Blob>, OciError> {
        let v: Value = serde_json::from_slice(manifest).map_err(|e| OciError::Registry {
            registry: self.repository.clone(),
            reason: format!("a signature manifest cannot be read: {e}"),
        })?;
        let r = self.reference("probe")?;
        let mut out = Vec::new();
        for l in v["layers"].as_array().into_iter().flatten() {
            let digest = l["digest"].as_str().unwrap_or_default();
            let mut bytes = Vec::new();
            self.client.pull_blob(&r, digest, &mut bytes).await.map_err(|e| self.err(e))?;
            if oci_digest_matches(&bytes, digest) {
                let annotations = l["annotations"]
                    .as_object()
                    .map(|a| a.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
                    .unwrap_or_default();
                out.push(Blob {
                    media_type: l["mediaType"].as_str().unwrap_or_default().to_string(),
                    bytes,
                    annotations,
                });
            }
        }
        Ok(out)
    }

    /// Does the registry serve the OCI 1.1 referrers API?
    pub async fn serves_referrers(&self, image_digest: &str) -> bool {
        // Asked directly: a client library may fall back to the tag schema and hide a 404.
        let Ok(r) = self.reference(image_digest) else { return false };
        let url = format!("{}/v2/{}/referrers/{image_digest}", self.base_url(), r.repository());
        let Ok(req) = self.authorized(self.http.get(&url), &r, oci_client::RegistryOperation::Pull).await else {
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
    /// the `sha256-<hex>` fallback index on registries without it.
    pub async fn referrers(&self, image_digest: &str) -> Result<Vec<Value>, OciError> {
        let r = self.reference(image_digest)?;
        let url = format!("{}/v2/{}/referrers/{image_digest}", self.base_url(), r.repository());
        let unavailable = |reason: String| OciError::Registry { registry: self.repository.clone(), reason };
        let resp = self
            .authorized(self.http.get(&url).header("accept", OCI_INDEX), &r, oci_client::RegistryOperation::Pull)
            .await?
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let index: Value = match resp.status().as_u16() {
            200 => resp.json().await.map_err(|e| unavailable(format!("the referrers index cannot be read: {e}")))?,
            404 => match self.manifest(&image_digest.replace(':', "-")).await? {
                Some(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
                None => return Ok(Vec::new()),
            },
            s @ (401 | 403) => {
                let registry = self.repository.split('/').next().unwrap_or_default().to_string();
                return Err(OciError::Unauthorized { registry, reason: format!("HTTP {s} listing referrers") });
            }
            s => return Err(unavailable(format!("HTTP {s} listing referrers"))),
        };
        Ok(index["manifests"].as_array().cloned().unwrap_or_default())
    }

    fn base_url(&self) -> String {
        let host = self.repository.split('/').next().unwrap_or_default();
        format!("{}://{host}", if self.plain_http { "http" } else { "https" })
    }

    /// Adds the credentials oci-client negotiated (a bearer token, or basic auth).
    async fn authorized(
        &self,
        req: reqwest::RequestBuilder,
        r: &Reference,
        op: oci_client::RegistryOperation,
    ) -> Result<reqwest::RequestBuilder, OciError> {
        let token = self.client.auth(r, &self.auth, op).await.map_err(|e| self.err(e))?;
        Ok(match (token, &self.auth) {
            (Some(t), _) => req.bearer_auth(t),
            (None, RegistryAuth::Basic(u, p)) => req.basic_auth(u, Some(p)),
            _ => req,
        })
    }

    /// Puts a manifest by digest. Done here because oci-client cannot handle a registry that omits the
    /// Location header on a push by digest.
    async fn put_manifest_by_digest(&self, image: &Image) -> Result<(), OciError> {
        let digest = image.digest();
        let r = self.reference(&digest)?;
        let url = format!("{}/v2/{}/manifests/{digest}", self.base_url(), r.repository());
        let req = self.http.put(&url).header("content-type", OCI_MANIFEST).body(image.manifest.clone());
        let resp = self
            .authorized(req, &r, oci_client::RegistryOperation::Push)
            .await?
            .send()
            .await
            .map_err(|e| OciError::Registry { registry: self.repository.clone(), reason: e.to_string() })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        let registry = self.repository.split('/').next().unwrap_or_default().to_string();
        if status.as_u16() == 401 || status.as_u16() == 403 {
            Err(OciError::Unauthorized { registry, reason: format!("HTTP {status}: {body}") })
        } else {
            Err(OciError::Registry { registry, reason: format!("pushing manifest {digest}: HTTP {status}: {body}") })
        }
    }
}

fn is_not_found(e: &oci_client::errors::OciDistributionError) -> bool {
    use oci_client::errors::{OciDistributionError as E, OciErrorCode as C};
    match e {
        E::ImageManifestNotFoundError(_) => true,
        E::RegistryError { envelope, .. } => {
            envelope.errors.iter().any(|x| matches!(x.code, C::ManifestUnknown | C::NameUnknown))
        }
        E::ServerError { code, .. } => *code == 404,
        _ => false,
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
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).map_err(err)?;
    let write_blob = |bytes: &[u8]| -> Result<(), OciError> {
        let d = digest(bytes);
        std::fs::write(blobs.join(d.trim_start_matches("sha256:")), bytes).map_err(err)
    };
    write_blob(&image.manifest)?;
    write_blob(&image.config.bytes)?;
    for l in &image.layers {
        write_blob(&l.bytes)?;
    }
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

/// The layers of the image of one `kind` in an OCI image layout, if there is one.
pub fn layout_layers(dir: &Path, kind: &str) -> Vec<Blob> {
    let read = |d: &str| std::fs::read(dir.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).ok();
    let Some(index) = std::fs::read(dir.join("index.json")).ok().and_then(|b| serde_json::from_slice::<Value>(&b).ok())
    else {
        return Vec::new();
    };
    let Some(entry) = index["manifests"].as_array().and_then(|ms| ms.iter().find(|m| m["annotations"]["kind"] == kind))
    else {
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
            let annotations = l["annotations"]
                .as_object()
                .map(|a| a.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect())
                .unwrap_or_default();
            Some(Blob { media_type: l["mediaType"].as_str()?.to_string(), bytes, annotations })
        })
        .collect()
}

/// The `.att` tag cosign looks up for an image digest.
pub fn attestation_tag(image_digest: &str) -> String {
    format!("{}.att", image_digest.replace(':', "-"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
