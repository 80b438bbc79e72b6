//! Image verification: every image the rendered manifests would run is resolved to a digest (tags
//! every time, so a moved tag is caught), its cosign signatures and attestations are read from the
//! registry, and the profile's policies decide. Verdicts are cached by (digest, repository, policy
//! fingerprint): the signatures live in the repository and the policies that apply follow from its name,
//! so a digest verified in a laxly governed repository says nothing about the same digest in another;
//! each registry sees a bounded number of requests at a time.

pub mod collect;
pub mod evidence;
pub mod policy;
pub mod reference;
pub mod verify;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::sync::Semaphore;

use crate::oci::{LayoutReader, OciError, Registry};
use crate::reason::Reason;
use crate::resources::profile::ImageEnforcement;
use crate::resources::provenance::{ImageOutcome, ImageStatus};
use crate::status::{StepReport, StepState};
use evidence::ImageStore;
use policy::ImagePolicies;
use reference::{Digest, ImageRef, ReferenceError};
use verify::DigestVerdict;

#[derive(Debug, Error)]
pub enum ImageError {
    #[error("{0}")]
    Reference(#[from] ReferenceError),
    #[error("{0}")]
    Registry(#[from] OciError),
    #[error("{0} is not in the registry")]
    NotFound(String),
    #[error("no image policy covers {0}; add a policy whose images glob matches it")]
    NoPolicy(String),
    #[error("the container has no image")]
    Empty,
}

impl ImageError {
    pub fn reason(&self) -> Reason {
        match self {
            ImageError::Reference(_) | ImageError::Empty => Reason::InvalidImageReference,
            ImageError::Registry(e) => e.reason(),
            ImageError::NotFound(_) => Reason::ImageNotFound,
            ImageError::NoPolicy(_) => Reason::NoImagePolicy,
        }
    }

    fn outcome(&self) -> ImageOutcome {
        match self {
            ImageError::Registry(e) if e.reason().retryable() => ImageOutcome::Pending,
            _ => ImageOutcome::Failed,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// How long a verified digest stays verified without asking the registry again.
    pub success_ttl: Duration,
    /// How long a failed digest stays failed (short: a signature may be added).
    pub failure_ttl: Duration,
    /// Images checked at once against one registry host.
    pub per_registry: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { success_ttl: Duration::from_secs(600), failure_ttl: Duration::from_secs(60), per_registry: 4 }
    }
}

/// What a cached verdict was reached for: the digest, in the repository (`registry/path`) whose
/// signatures and governing policies decided it, under the profile's policies (their fingerprint).
type CacheKey = (Digest, String, String);

/// At most this many verdicts, registry clients and registry gates are kept. When the verdict cache is
/// full, expired verdicts go first, then the oldest tenth; the registry clients are all dropped (each is
/// made again when needed); gates not in use go, and if every one is in use, all of them (a registry
/// may then briefly see twice its limit of requests).
pub const MAX_CACHED: usize = 10_000;

/// Shared by every run: the verdict cache, registry clients and per-registry limits.
pub struct ImageVerifier {
    settings: Settings,
    cache: Mutex<HashMap<CacheKey, (Instant, DigestVerdict)>>,
    registries: Mutex<HashMap<String, Arc<Registry>>>,
    /// Images read from OCI layouts instead of their registries, by repository name.
    layouts: HashMap<String, LayoutReader>,
    gates: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// `MAX_CACHED`, smaller in tests.
    max_entries: usize,
}

impl Default for ImageVerifier {
    fn default() -> Self {
        ImageVerifier::new(Settings::default())
    }
}

impl ImageVerifier {
    pub fn new(settings: Settings) -> ImageVerifier {
        ImageVerifier {
            settings,
            cache: Mutex::default(),
            registries: Mutex::default(),
            layouts: HashMap::new(),
            gates: Mutex::default(),
            max_entries: MAX_CACHED,
        }
    }

    /// Reads these images (by repository name, `registry.example.com/shop/cart`) from OCI image layouts,
    /// as `cosign save` writes them, instead of their registries.
    pub fn with_layouts(mut self, layouts: impl IntoIterator<Item = (String, std::path::PathBuf)>) -> Self {
        self.layouts = layouts.into_iter().map(|(name, dir)| (name, LayoutReader::new(dir))).collect();
        self
    }

    /// Verifies each distinct image (as `collect::distinct` lists them), concurrently.
    pub async fn verify(&self, policies: &ImagePolicies, images: &[(String, Vec<String>)]) -> Vec<ImageStatus> {
        futures::future::join_all(images.iter().map(|(image, used_by)| self.one(policies, image, used_by))).await
    }

    async fn one(&self, policies: &ImagePolicies, written: &str, used_by: &[String]) -> ImageStatus {
        let mut status = ImageStatus { image: written.to_string(), ..Default::default() };
        let (digest, verdict) = match self.digest_verdict(policies, written).await {
            Ok(found) => found,
            Err((digest, e)) => {
                status.digest = digest.map(|d| d.to_string());
                status.outcome = e.outcome();
                status.reason = e.reason().to_string();
                status.message = match e {
                    ImageError::Empty => format!("{}: {e}", used_by.first().map(String::as_str).unwrap_or("?")),
                    e => e.to_string(),
                };
                return status;
            }
        };
        status.digest = Some(digest.to_string());
        match verdict {
            DigestVerdict::Verified { signer, slsa_level } => {
                status.outcome = ImageOutcome::Verified;
                status.reason = Reason::Verified.into();
                status.message = match slsa_level {
                    Some(l) => format!("signed by {signer}; SLSA build level {l}"),
                    None => format!("signed by {signer}"),
                };
                status.signer = Some(signer);
                status.slsa_level = slsa_level.map(i32::from);
            }
            DigestVerdict::Failed { reason, message } => {
                status.outcome = ImageOutcome::Failed;
                status.reason = reason.to_string();
                status.message = message;
            }
        }
        status
    }

    async fn digest_verdict(
        &self,
        policies: &ImagePolicies,
        written: &str,
    ) -> Result<(Digest, DigestVerdict), (Option<Digest>, ImageError)> {
        if written.is_empty() {
            return Err((None, ImageError::Empty));
        }
        let r = ImageRef::parse(written).map_err(|e| (None, e.into()))?;
        let covering = policies.covering(&r.name());
        if covering.is_empty() {
            return Err((r.digest.clone(), ImageError::NoPolicy(r.name())));
        }
        // A pinned digest in the cache needs no registry at all.
        if let Some(d) = &r.digest
            && let Some(v) = self.cached(&(d.clone(), r.name(), policies.fingerprint.clone()))
        {
            return Ok((d.clone(), v));
        }
        let registry = match self.layouts.get(&r.name()) {
            Some(layout) => Store::Layout(layout.clone()),
            None => Store::Registry(self.registry(&policies.credentials, &r).map_err(|e| (r.digest.clone(), e))?),
        };
        let gate = self.gate(&r.registry);
        let _permit = gate.acquire().await;
        let digest = match (&r.digest, &r.tag) {
            (Some(d), _) => d.clone(),
            (None, tag) => {
                let tag = tag.as_deref().unwrap_or("latest");
                match registry.manifest(tag).await {
                    Ok(Some(bytes)) => Digest::of(&bytes),
                    Ok(None) => return Err((None, ImageError::NotFound(format!("{}:{tag}", r.name())))),
                    Err(e) => return Err((None, e.into())),
                }
            }
        };
        let key = (digest.clone(), r.name(), policies.fingerprint.clone());
        if let Some(v) = self.cached(&key) {
            return Ok((digest, v));
        }
        if r.digest.is_some()
            && registry.manifest(digest.as_str()).await.map_err(|e| (Some(digest.clone()), e.into()))?.is_none()
        {
            return Err((Some(digest.clone()), ImageError::NotFound(r.pinned(&digest))));
        }
        let evidence = evidence::fetch(&registry, &digest).await.map_err(|e| (Some(digest.clone()), e.into()))?;
        // Up to 128 candidates, each a certificate chain, a log entry and a signature to check.
        let verdict = crate::signing::key::cpu_heavy(|| verify::judge(policies, &covering, &digest, &evidence));
        self.remember(key, verdict.clone());
        Ok((digest, verdict))
    }

    fn ttl(&self, verdict: &DigestVerdict) -> Duration {
        match verdict {
            DigestVerdict::Verified { .. } => self.settings.success_ttl,
            DigestVerdict::Failed { .. } => self.settings.failure_ttl,
        }
    }

    /// Caches a verdict, keeping at most `max_entries`: when full, expired verdicts go, then the oldest
    /// tenth (so a full cache is not scanned on every insert).
    fn remember(&self, key: CacheKey, verdict: DigestVerdict) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= self.max_entries && !cache.contains_key(&key) {
            cache.retain(|_, (at, v)| at.elapsed() < self.ttl(v));
            if cache.len() >= self.max_entries {
                let mut ages: Vec<Instant> = cache.values().map(|(at, _)| *at).collect();
                ages.sort_unstable();
                let cutoff = ages[(self.max_entries / 10).min(ages.len() - 1)];
                cache.retain(|_, (at, _)| *at > cutoff);
            }
        }
        cache.insert(key, (Instant::now(), verdict));
    }

    fn cached(&self, key: &CacheKey) -> Option<DigestVerdict> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let (at, verdict) = cache.get(key)?;
        if at.elapsed() < self.ttl(verdict) {
            return Some(verdict.clone());
        }
        cache.remove(key);
        None
    }

    /// A client for the image's repository, with the first credentials that name its registry.
    fn registry(&self, credentials: &[String], r: &ImageRef) -> Result<Arc<Registry>, ImageError> {
        let mut creds = None;
        for doc in credentials {
            if !matches!(crate::oci::auth_for(doc, &r.registry)?, oci_client::secrets::RegistryAuth::Anonymous) {
                creds = Some(doc.as_str());
                break;
            }
        }
        // One client per registry host and credentials: connections and tokens are reused across images.
        let key =
            format!("{}\n{}", r.registry, creds.map(|c| Digest::of(c.as_bytes()).to_string()).unwrap_or_default());
        let mut registries = self.registries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(reg) = registries.get(&key) {
            return Ok(Arc::new(reg.with_repository(&r.name())));
        }
        let reg = Registry::new(&r.name(), creds)?;
        if registries.len() >= self.max_entries {
            registries.clear();
        }
        registries.insert(key, Arc::new(reg.with_repository(&r.name())));
        Ok(Arc::new(reg))
    }

    fn gate(&self, host: &str) -> Arc<Semaphore> {
        let mut gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        if gates.len() >= self.max_entries && !gates.contains_key(host) {
            // A gate only the map holds has no request in flight.
            gates.retain(|_, g| Arc::strong_count(g) > 1);
            if gates.len() >= self.max_entries {
                gates.clear();
            }
        }
        gates
            .entry(host.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.settings.per_registry.max(1))))
            .clone()
    }
}

/// Where one image is read from.
enum Store {
    Registry(Arc<Registry>),
    Layout(LayoutReader),
}

/// Each arm answers as its own `ImageStore` does.
impl ImageStore for Store {
    async fn manifest(&self, reference: &str) -> Result<Option<Vec<u8>>, OciError> {
        match self {
            Store::Registry(r) => ImageStore::manifest(r.as_ref(), reference).await,
            Store::Layout(l) => ImageStore::manifest(l, reference).await,
        }
    }

    async fn layers_each(&self, manifest: &[u8]) -> Result<Vec<Result<crate::oci::Blob, OciError>>, OciError> {
        match self {
            Store::Registry(r) => ImageStore::layers_each(r.as_ref(), manifest).await,
            Store::Layout(l) => ImageStore::layers_each(l, manifest).await,
        }
    }

    async fn referrers(&self, digest: &str) -> Result<Vec<serde_json::Value>, OciError> {
        match self {
            Store::Registry(r) => ImageStore::referrers(r.as_ref(), digest).await,
            Store::Layout(l) => ImageStore::referrers(l, digest).await,
        }
    }
}

/// The `ImagesVerified` step from the per-image results.
pub fn report(enforcement: ImageEnforcement, images: &[ImageStatus]) -> StepReport {
    let list = |outcome: ImageOutcome| -> (usize, String) {
        let matching: Vec<&ImageStatus> = images.iter().filter(|i| i.outcome == outcome).collect();
        let mut shown: Vec<String> = matching.iter().take(5).map(|i| format!("{}: {}", i.image, i.message)).collect();
        if matching.len() > 5 {
            shown.push(format!("and {} more (see status.images)", matching.len() - 5));
        }
        (matching.len(), shown.join(" | "))
    };
    if images.is_empty() {
        return StepReport::new(StepState::Passed, Reason::NoImages, "the manifests run no container images");
    }
    let (pending, pending_list) = list(ImageOutcome::Pending);
    if pending > 0 {
        let reason = first_reason(images, ImageOutcome::Pending).unwrap_or(Reason::RegistryUnavailable);
        return StepReport::new(
            StepState::Pending,
            reason,
            format!("{pending} image(s) could not be checked yet (retrying with backoff): {pending_list}"),
        );
    }
    let (failed, failed_list) = list(ImageOutcome::Failed);
    if failed > 0 {
        let first = first_reason(images, ImageOutcome::Failed).unwrap_or(Reason::ImageNotSigned);
        return match enforcement {
            ImageEnforcement::Strict => StepReport::new(
                StepState::Failed,
                first,
                format!("{failed} of {} image(s) failed verification: {failed_list}", images.len()),
            ),
            ImageEnforcement::Permissive => StepReport::new(
                StepState::Permitted,
                Reason::UnverifiedImagesPermitted,
                format!(
                    "{failed} of {} image(s) failed verification, permitted because enforcement is permissive: {failed_list}",
                    images.len()
                ),
            ),
        };
    }
    let (n, verified) = list(ImageOutcome::Verified);
    StepReport::new(StepState::Passed, Reason::Verified, format!("{n} image(s) verified: {verified}"))
}

/// The reason of the first image with `outcome` (statuses keep reasons as the strings Weft wrote).
fn first_reason(images: &[ImageStatus], outcome: ImageOutcome) -> Option<Reason> {
    images.iter().find(|i| i.outcome == outcome).and_then(|i| i.reason.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(name: &str, outcome: ImageOutcome, reason: &str) -> ImageStatus {
        ImageStatus {
            image: name.into(),
            outcome,
            reason: reason.into(),
            message: format!("{reason} message"),
            ..Default::default()
        }
    }

    #[test]
    fn strict_fails_permissive_permits_and_pending_waits_in_both() {
        let ok = image("a", ImageOutcome::Verified, "Verified");
        let bad = image("b", ImageOutcome::Failed, "ImageNotSigned");
        let r = report(ImageEnforcement::Strict, &[ok.clone(), bad.clone()]);
        assert_eq!((r.state, r.reason.as_str()), (StepState::Failed, "ImageNotSigned"));
        assert!(r.message.contains("b: ImageNotSigned message"), "{}", r.message);
        let r = report(ImageEnforcement::Permissive, &[ok.clone(), bad.clone()]);
        assert_eq!((r.state, r.reason.as_str()), (StepState::Permitted, "UnverifiedImagesPermitted"));
        let down = image("c", ImageOutcome::Pending, "RegistryUnavailable");
        for e in [ImageEnforcement::Strict, ImageEnforcement::Permissive] {
            let r = report(e, &[ok.clone(), bad.clone(), down.clone()]);
            assert_eq!((r.state, r.reason.as_str()), (StepState::Pending, "RegistryUnavailable"));
        }
        assert_eq!(report(ImageEnforcement::Strict, &[ok]).state, StepState::Passed);
        assert_eq!(report(ImageEnforcement::Strict, &[]).reason, Reason::NoImages);
    }

    fn verdict(n: usize) -> DigestVerdict {
        DigestVerdict::Failed { reason: Reason::ImageNotSigned, message: format!("{n}") }
    }

    #[test]
    fn the_caches_stay_bounded() {
        let mut v = ImageVerifier::new(Settings { failure_ttl: Duration::from_secs(600), ..Settings::default() });
        v.max_entries = 20;
        let key = |n: usize| (Digest::of(n.to_string().as_bytes()), format!("reg.test/app{n}"), "fp".to_string());
        for n in 0..100 {
            v.remember(key(n), verdict(n));
            assert!(v.cache.lock().unwrap().len() <= 20);
        }
        // The newest verdicts are kept, the oldest went first.
        assert!(v.cached(&key(99)).is_some());
        assert!(v.cached(&key(0)).is_none());
        // Full, expired verdicts go before any live one (here, all of them).
        for n in 100.. {
            if v.cache.lock().unwrap().len() == 20 {
                break;
            }
            v.remember(key(n), verdict(n));
        }
        v.settings.failure_ttl = Duration::ZERO;
        v.remember(key(1000), verdict(1000));
        assert_eq!(v.cache.lock().unwrap().len(), 1);

        let held: Vec<_> = (0..5).map(|n| v.gate(&format!("busy{n}"))).collect();
        for n in 0..100 {
            v.gate(&format!("idle{n}.test"));
            assert!(v.gates.lock().unwrap().len() <= 20);
        }
        // Gates in use are kept.
        for (n, gate) in held.iter().enumerate() {
            assert!(Arc::ptr_eq(gate, &v.gate(&format!("busy{n}"))));
        }

        for n in 0..100 {
            let r = ImageRef::parse(&format!("reg{n}.test/app:1")).unwrap();
            v.registry(&[], &r).unwrap();
            assert!(v.registries.lock().unwrap().len() <= 20);
        }
    }
}
