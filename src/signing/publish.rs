//! Sign and publish: the manifests become the manifest image, which is cosign-signed (the signature
//! logged in Rekor when the profile names a log, its bundle kept with the signature) and pushed to the
//! profile's repository — or written as an OCI image layout. The same digest is never pushed twice, and
//! an existing signature by the same key is reused rather than made (and logged) again.
//!
//! Signatures and attestations are written twice over: in cosign's legacy layout (`.sig` and `.att`
//! tags, which kubectl-sigstore and cosign before 2.6 read) and as Sigstore bundles attached as OCI
//! referrers (cosign v3's format, which cosign 2.6 reads too). With a Rekor v2 log ([`Log::V2`]) only the
//! bundles carry log entries: the legacy layers have room only for an entry with a signed timestamp,
//! which Rekor v2 does not make. With a key, bundles are deterministic (RFC 6979 signatures, the log's
//! earlier entry for the same envelope), so attaching one again changes nothing; a keyless run's key is
//! new each time, and so is its signature.

use std::collections::BTreeMap;
use std::path::PathBuf;

use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::oci::{self, Blob, Image, OciError, Pushed, Registry};
use crate::provenance::rekor::{self, LogKey, Rekor, RekorError};
use crate::provenance::rekor2::{self, CheckpointKey, Entry2, HashedRekord2, Rekor2, Rekor2Error};
use crate::reason::Reason;
use crate::render::manifest::{self, Manifest};
use crate::resources::provenance::RekorEntry;
use crate::signing::key::SigningKey;
use sigstore_tsa::TimestampClient;

#[derive(Debug, Error)]
pub enum PublishError {
    #[error(transparent)]
    Oci(#[from] OciError),
    #[error(transparent)]
    Rekor(#[from] RekorError),
    #[error(transparent)]
    Rekor2(#[from] Rekor2Error),
    #[error("the DSSE envelope cannot be logged: {0}")]
    Envelope(String),
    #[error("nothing to sign: the render produced no resource the profile's match rules select")]
    Empty,
    #[error("the timestamp authority: {0}")]
    Timestamp(String),
}

impl PublishError {
    pub fn reason(&self) -> Reason {
        match self {
            PublishError::Oci(e) => e.reason(),
            PublishError::Rekor(e) => e.reason(),
            PublishError::Rekor2(e) => e.reason(),
            PublishError::Envelope(_) => Reason::EnvelopeInvalid,
            PublishError::Empty => Reason::NothingToSign,
            PublishError::Timestamp(_) => Reason::TimestampAuthorityUnavailable,
        }
    }
}

crate::status::step_error!(PublishError);

/// Where the manifest image goes.
pub enum Destination {
    Registry {
        registry: Registry,
        tag: String,
    },
    /// An OCI image layout directory; `name` stands in the signature payload's docker-reference.
    Layout {
        dir: PathBuf,
        name: String,
    },
}

/// A transparency log to record signatures in.
#[derive(Clone, Copy)]
pub enum Log<'a> {
    /// Rekor v1: the legacy signature as `hashedrekord` v0.0.1, envelopes as `dsse` v0.0.1, each with a
    /// signed entry timestamp that the legacy layers carry as cosign's bundle annotation.
    V1 { rekor: &'a Rekor, key: &'a LogKey },
    /// Rekor v2: only `hashedrekord` v0.0.2 and no signed entry timestamp. Envelopes are logged as cosign
    /// v3 logs them (the digest of their PAE, their signature); the legacy layers carry no log bundle,
    /// and the legacy signature is not logged.
    V2 { rekor: &'a Rekor2, key: &'a CheckpointKey, origin: &'a str, timestamps: Option<&'a TimestampClient> },
}

/// A transparency log, owned: what a profile's `provenance.rekor` names.
pub enum LogClient {
    V1(Rekor, LogKey),
    V2 { rekor: Box<Rekor2>, key: CheckpointKey, origin: String, timestamps: Option<TimestampClient> },
}

impl LogClient {
    pub fn log(&self) -> Log<'_> {
        match self {
            LogClient::V1(rekor, key) => Log::V1 { rekor, key },
            LogClient::V2 { rekor, key, origin, timestamps } => {
                Log::V2 { rekor, key, origin, timestamps: timestamps.as_ref() }
            }
        }
    }
}

/// A verified entry of either log.
#[derive(Clone, Debug)]
pub enum Logged {
    V1(rekor::Entry),
    /// With the timestamp authority's response (DER) over the signature, when one was asked.
    V2(Entry2, Option<Vec<u8>>),
}

impl Logged {
    /// What the status records: for Rekor v2 the hex leaf hash stands for the UUID, and the integrated
    /// time is 0 (the log records none).
    pub fn record(&self) -> RekorEntry {
        match self {
            Logged::V1(e) => e.record(),
            Logged::V2(e, _) => RekorEntry {
                uuid: hex::encode(rekor::leaf_hash(&e.body)),
                log_index: i64::try_from(e.log_index).unwrap_or(i64::MAX),
                integrated_time: 0,
                log_id: hex::encode(&e.log_id),
            },
        }
    }

    /// cosign's legacy bundle annotation: Rekor v1 only (it needs a signed entry timestamp).
    fn cosign_bundle(&self) -> Option<String> {
        match self {
            Logged::V1(e) => Some(e.cosign_bundle()),
            Logged::V2(..) => None,
        }
    }
}

/// What was published.
#[derive(Clone, Debug)]
pub struct Published {
    /// `repository@sha256:…` (or `dir@sha256:…` for a layout).
    pub reference: String,
    pub digest: String,
    pub resources: usize,
    pub image: Pushed,
    /// The size of the image's manifest (a referrer's `subject` names it).
    pub size: usize,
    /// A new signature was made (false: an existing signature by the same key was kept).
    pub signed: bool,
    pub referrer: bool,
    /// The Rekor entry of the image signature.
    pub tlog: Option<RekorEntry>,
}

/// Signs `manifests` (already selected, tracked and sorted) and publishes them.
pub async fn publish(
    dest: &Destination,
    manifests: &[Manifest],
    key: &SigningKey,
    log: Option<Log<'_>>,
) -> Result<Published, PublishError> {
    if manifests.is_empty() {
        return Err(PublishError::Empty);
    }
    let blob = manifest::blob(manifests);
    let image = oci::manifest_image(&blob, &BTreeMap::new());
    let digest = image.digest();
    let identity = match dest {
        Destination::Registry { registry, .. } => registry.repository().to_string(),
        Destination::Layout { name, .. } => name.clone(),
    };
    let payload = oci::simple_signing_payload(&identity, &digest, &BTreeMap::new());

    match dest {
        Destination::Layout { dir, .. } => {
            let (layer, tlog) = sign(&payload, key, log).await?;
            let signatures = Image::new(vec![layer], &BTreeMap::new(), None, None);
            oci::write_layout(dir, &image, &signatures)?;
            sign_bundle(dest, (digest.as_str(), image.manifest.len()), key, log).await?;
            Ok(Published {
                reference: format!("{}@{digest}", dir.display()),
                digest,
                resources: manifests.len(),
                image: Pushed::New,
                size: image.manifest.len(),
                signed: true,
                referrer: false,
                tlog,
            })
        }
        Destination::Registry { registry, tag } => {
            let pushed = registry.push(&image, Some(tag)).await?;
            let sig_tag = oci::signature_tag(&digest);
            let mut layers = match registry.manifest(&sig_tag).await? {
                Some(m) => registry.layers(&m).await?,
                None => Vec::new(),
            };
            let public = key.public_pem();
            let (ours, signed, tlog) =
                match layers.iter().find(|b| b.bytes == payload && oci::signature_verifies(b, &public)) {
                    Some(existing) => {
                        // The entry its bundle names, fetched from the log and verified (a bundle could lie).
                        let tlog = match (log, bundle_entry(existing)) {
                            (Some(Log::V1 { rekor, key }), Some(e)) => {
                                let entry = rekor.get(&e.uuid).await?;
                                rekor::verify_entry(&entry, key, false)?;
                                Some(entry.record())
                            }
                            // Logged in a Rekor v1 log the profile no longer names.
                            (Some(Log::V2 { .. }), Some(_)) => None,
                            (_, e) => e,
                        };
                        (existing.clone(), false, tlog)
                    }
                    None => {
                        let (layer, tlog) = sign(&payload, key, log).await?;
                        layers.push(layer.clone());
                        registry.push(&Image::new(layers, &BTreeMap::new(), None, None), Some(&sig_tag)).await?;
                        (layer, true, tlog)
                    }
                };
            sign_bundle(dest, (digest.as_str(), image.manifest.len()), key, log).await?;
            // OCI 1.1: the legacy signature also as a referrer of the image, where the registry serves them.
            let referrer = registry.serves_referrers(&digest).await;
            if referrer {
                let subject = (digest.as_str(), image.manifest.len());
                let referrer_image =
                    Image::new(vec![ours], &BTreeMap::new(), Some(oci::COSIGN_SIG_ARTIFACT), Some(subject));
                registry.push(&referrer_image, None).await?;
            }
            let reference = format!("{}@{digest}", registry.repository());
            let size = image.manifest.len();
            Ok(Published { reference, digest, resources: manifests.len(), image: pushed, size, signed, referrer, tlog })
        }
    }
}

/// A transparency log, as attesting uses it: the seam where fast tests put an in-memory log. The same
/// envelope sent again must be answered with the log's earlier entry, as Rekor v1 and v2 answer it.
#[allow(async_fn_in_trait)] // used on concrete types only (Weft's logs, test fakes): no Send bound is lost
pub trait EnvelopeLog: Sync {
    /// Logs a DSSE envelope (or finds the log's entry for it) and checks what the log returns.
    async fn log_envelope(&self, envelope: &str, key: &SigningKey) -> Result<Logged, PublishError>;
}

/// Checks the entry, its inclusion proof and checkpoint, and that it holds exactly this envelope.
///
/// In Rekor v2 the envelope is a `hashedrekord` v0.0.2 whose digest is the SHA-256 of its PAE and whose
/// signature is the envelope's (as cosign v3 logs DSSE there); the same envelope again is answered with
/// the log's earlier entry, rebuilt from its tiles.
impl EnvelopeLog for Log<'_> {
    async fn log_envelope(&self, envelope: &str, key: &SigningKey) -> Result<Logged, PublishError> {
        match *self {
            Log::V1 { rekor, key: log_key } => {
                let entry = rekor.upload(&crate::provenance::dsse_entry(envelope, &key.verifier_pem())).await?;
                rekor::verify_entry(&entry, log_key, true)?;
                if !crate::provenance::body_matches(&entry, envelope)? {
                    return Err(RekorError::Unverified("the log returned an entry for another envelope".into()).into());
                }
                Ok(Logged::V1(entry))
            }
            Log::V2 { rekor, key: log_key, origin, timestamps } => {
                let rekord = dsse_rekord(envelope, key)?;
                let entry = rekor.add_hashedrekord(&rekord.digest, &rekord.signature, rekord.verifier.clone()).await?;
                rekor2::verify_entry2(&entry, log_key, origin, &rekord)?;
                let timestamp = match timestamps {
                    Some(tsa) => Some(timestamp(tsa, &rekord.signature).await?),
                    None => None,
                };
                Ok(Logged::V2(entry, timestamp))
            }
        }
    }
}

/// The timestamp authority's signed response (DER) over a signature (the SHA-256 of its bytes, as
/// Sigstore bundles carry it); its message imprint and nonce are checked against the request.
async fn timestamp(tsa: &TimestampClient, signature: &[u8]) -> Result<Vec<u8>, PublishError> {
    let token = tsa
        .timestamp_signature(&sigstore_verify::types::SignatureBytes::new(signature.to_vec()))
        .await
        .map_err(|e| PublishError::Timestamp(e.to_string()))?;
    Ok(token.as_bytes().to_vec())
}

/// The `hashedrekord` v0.0.2 for a DSSE envelope: SHA-256 of its PAE, its one signature, and the signer
/// (the public key, or the certificate when keyless).
pub fn dsse_rekord(envelope: &str, key: &SigningKey) -> Result<HashedRekord2, PublishError> {
    use base64::Engine;
    let b64 = &base64::engine::general_purpose::STANDARD;
    let bad = |m: String| PublishError::Envelope(m);
    let env: crate::provenance::Envelope = serde_json::from_str(envelope).map_err(|e| bad(e.to_string()))?;
    let payload = b64.decode(&env.payload).map_err(|e| bad(format!("payload: {e}")))?;
    let [signature] = env.signatures.as_slice() else {
        return Err(bad(format!("{} signatures, not one", env.signatures.len())));
    };
    let signature = b64.decode(&signature.sig).map_err(|e| bad(format!("signature: {e}")))?;
    let verifier = crate::bundle::Verifier::of(key);
    let digest = Sha256::digest(crate::provenance::pae(&env.payload_type, &payload)).into();
    Ok(HashedRekord2 { digest, signature, verifier })
}

/// cosign v3's signature: a DSSE bundle saying "this digest is signed", logged and attached as a
/// referrer, unless it is attached already.
async fn sign_bundle(
    dest: &Destination,
    subject: (&str, usize),
    key: &SigningKey,
    log: Option<Log<'_>>,
) -> Result<(), PublishError> {
    let predicate = crate::bundle::COSIGN_SIGN_PREDICATE;
    let envelope = crate::provenance::sign(&crate::bundle::sign_statement(subject.0), key);
    if bundle_attached(dest, subject.0, &envelope, predicate).await? {
        return Ok(());
    }
    let entry = match log {
        Some(log) => Some(log.log_envelope(&envelope, key).await?),
        None => None,
    };
    attach_bundle(dest, subject, &envelope, key, entry.as_ref(), predicate).await
}

/// Is this envelope attached to the image as a bundle already? Its inclusion proof grows with the log,
/// so the bundle made again would be another manifest: the envelope is what identifies it.
async fn bundle_attached(
    dest: &Destination,
    subject: &str,
    envelope: &str,
    predicate_type: &str,
) -> Result<bool, PublishError> {
    let Destination::Registry { registry, .. } = dest else { return Ok(false) };
    let referrers = registry.referrers(subject).await?;
    // Some registries list a referrer under its config's media type rather than its artifact type; what
    // the manifest says is checked below either way.
    let bundles = referrers
        .iter()
        .filter(|d| d["artifactType"] == crate::bundle::MEDIA_TYPE || d["artifactType"] == crate::bundle::EMPTY_CONFIG)
        .take(MAX_BUNDLES);
    for descriptor in bundles {
        let Some(digest) = descriptor["digest"].as_str() else { continue };
        let Some(manifest) = registry.manifest(digest).await? else { continue };
        let parsed: serde_json::Value = serde_json::from_slice(&manifest).unwrap_or_default();
        if parsed["annotations"][crate::bundle::PREDICATE_ANNOTATION] != predicate_type {
            continue;
        }
        let layers = registry.layers(&manifest).await?;
        if layers.first().and_then(|l| crate::bundle::envelope_of(&l.bytes)).as_deref() == Some(envelope) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// At most this many bundles of an image are read when looking for one Weft attached.
const MAX_BUNDLES: usize = 64;

/// Attaches an envelope, with its log entry, as a Sigstore bundle referrer of the manifest image.
async fn attach_bundle(
    dest: &Destination,
    subject: (&str, usize),
    envelope: &str,
    key: &SigningKey,
    entry: Option<&Logged>,
    predicate_type: &str,
) -> Result<(), PublishError> {
    let verifier = crate::bundle::Verifier::of(key);
    let bundle = match entry {
        Some(Logged::V2(e, timestamp)) => {
            crate::bundle::dsse_bundle_with(envelope, &verifier, Some(e.tlog_entry()), timestamp.as_deref())
        }
        Some(Logged::V1(e)) => crate::bundle::dsse_bundle(envelope, &verifier, Some(e)),
        None => crate::bundle::dsse_bundle(envelope, &verifier, None),
    }
    .map_err(|e| RekorError::Malformed(e.to_string()))?;
    let referrer = crate::bundle::referrer(bundle, predicate_type, subject);
    match dest {
        Destination::Registry { registry, .. } => registry.attach_referrer(&referrer, subject.0).await?,
        Destination::Layout { dir, .. } => oci::add_referrer_to_layout(dir, &referrer)?,
    }
    Ok(())
}

/// The Rekor entry recorded in an existing signature's bundle annotation.
fn bundle_entry(layer: &Blob) -> Option<RekorEntry> {
    let bundle: serde_json::Value = serde_json::from_str(layer.annotations.get(oci::BUNDLE_ANNOTATION)?).ok()?;
    let p = &bundle["Payload"];
    let body = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, p["body"].as_str()?).ok()?;
    Some(RekorEntry {
        uuid: hex::encode(rekor::leaf_hash(&body)),
        log_index: p["logIndex"].as_i64()?,
        integrated_time: p["integratedTime"].as_i64()?,
        log_id: p["logID"].as_str()?.to_string(),
    })
}

/// Signs the payload, and logs the signature when a log is configured (verifying what the log returns).
async fn sign(
    payload: &[u8],
    key: &SigningKey,
    log: Option<Log<'_>>,
) -> Result<(Blob, Option<RekorEntry>), PublishError> {
    let signature = key.sign_base64(payload);
    // Rekor v2: cosign's legacy signature has room only for an entry with a signed timestamp, so it is
    // not logged; the signature bundle (a DSSE envelope, logged) is the logged signature.
    let Some(Log::V1 { rekor: log_rekor, key: log_key }) = log else {
        return Ok((layer(payload, &signature, key, None), None));
    };
    let hash = hex::encode(Sha256::digest(payload));
    let entry = log_rekor.upload(&rekor::hashedrekord(&hash, &signature, &key.verifier_pem())).await?;
    rekor::verify_entry(&entry, log_key, false)?;
    if !rekor::body_matches_hashedrekord(&entry, &hash, &signature)? {
        // A 409 can return an entry for the same payload with another signature by this key (made by a
        // signer that randomizes ECDSA, as cosign does; Weft's are deterministic): use that entry's
        // signature instead, so signature and log agree.
        let body = entry.body_json()?;
        let logged = body["spec"]["signature"]["content"].as_str().unwrap_or_default().to_string();
        let der = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &logged).unwrap_or_default();
        if body["spec"]["data"]["hash"]["value"].as_str() != Some(hash.as_str())
            || !crate::signing::key::verify(&key.public_pem(), payload, &der)
        {
            return Err(RekorError::Unverified("the log returned an entry for other content".into()).into());
        }
        return Ok((layer(payload, &logged, key, Some(&entry.cosign_bundle())), Some(entry.record())));
    }
    Ok((layer(payload, &signature, key, Some(&entry.cosign_bundle())), Some(entry.record())))
}

/// A legacy signature layer; a keyless key's certificate and chain go with it, as cosign writes them.
fn layer(payload: &[u8], signature: &str, key: &SigningKey, bundle: Option<&str>) -> Blob {
    let mut layer = oci::signature_layer(payload.to_vec(), signature, bundle);
    if let Some((leaf, chain)) = key.chain().and_then(<[String]>::split_first) {
        layer.annotations.insert(oci::CERTIFICATE_ANNOTATION.into(), leaf.clone());
        layer.annotations.insert(oci::CHAIN_ANNOTATION.into(), chain.concat());
    }
    layer
}

/// An attestation (provenance or verification summary), logged and attached.
#[derive(Clone, Debug)]
pub struct Attested {
    /// Its entry in the transparency log; none when the profile records provenance unlogged.
    pub entry: Option<RekorEntry>,
    /// Where it is attached (`…:sha256-<hex>.att`, or the layout).
    pub attached: String,
    /// An earlier attempt's attestation was found and completed or kept (no new envelope was made).
    pub reused: bool,
}

pub const PREDICATE_TYPE_ANNOTATION: &str = "predicateType";

/// Logs the statement's DSSE envelope in Rekor (verifying the entry, its inclusion proof and checkpoint)
/// and attaches it to the manifest image as cosign does (`.att`, one layer per attestation, annotated with
/// its predicate type), so `cosign verify-attestation --type …` finds it.
///
/// Idempotent: the envelope is stored with the image before it is logged, and an attempt that finds its
/// own envelope (same key, same unit: [`crate::provenance::unit`]) re-sends those exact bytes, which the
/// log recognizes; a retry or a restart never makes a second entry. Without a log (`None`), the
/// attestation is attached alone, and its bundle carries no log entry.
pub async fn attest(
    dest: &Destination,
    published: &Published,
    statement: &serde_json::Value,
    key: &SigningKey,
    log: Option<&impl EnvelopeLog>,
) -> Result<Attested, PublishError> {
    let unit = crate::provenance::unit(statement);
    let subject = (published.digest.as_str(), published.size);
    let predicate_type = statement["predicateType"].as_str().unwrap_or_default().to_string();
    let public = key.public_pem();
    let ours = |b: &Blob| {
        unit.is_some()
            && std::str::from_utf8(&b.bytes)
                .ok()
                .and_then(|env| crate::provenance::open(env, &public).ok())
                .is_some_and(|s| crate::provenance::unit(&s) == unit)
    };
    let layer_for = |envelope: &str, bundle: Option<&str>| {
        let mut annotations = BTreeMap::from([
            (oci::SIGNATURE_ANNOTATION.to_string(), String::new()),
            (PREDICATE_TYPE_ANNOTATION.to_string(), predicate_type.clone()),
        ]);
        if let Some(b) = bundle {
            annotations.insert(oci::BUNDLE_ANNOTATION.into(), b.to_string());
        }
        Blob { media_type: crate::provenance::DSSE_LAYER.into(), bytes: envelope.as_bytes().to_vec(), annotations }
    };

    // Earlier attestations of this image (by anyone), and ours among them.
    let (mut layers, attached) = match dest {
        Destination::Registry { registry, .. } => {
            let tag = oci::attestation_tag(&published.digest);
            let layers = match registry.manifest(&tag).await? {
                Some(m) => registry.layers(&m).await?,
                None => Vec::new(),
            };
            (layers, format!("{}:{tag}", registry.repository()))
        }
        Destination::Layout { dir, .. } => (oci::layout_layers(dir, oci::KIND_ATTS), dir.display().to_string()),
    };
    let store = |layers: Vec<Blob>| async move {
        let image = Image::new(layers, &BTreeMap::new(), None, None);
        match dest {
            Destination::Registry { registry, .. } => {
                registry.push(&image, Some(&oci::attestation_tag(&published.digest))).await.map(|_| ())
            }
            Destination::Layout { dir, .. } => oci::add_to_layout(dir, &image, oci::KIND_ATTS),
        }
    };

    let position = layers.iter().position(ours);
    let (envelope, reused) = match position.map(|i| &layers[i]) {
        Some(existing) if existing.annotations.contains_key(oci::BUNDLE_ANNOTATION) => {
            // Complete already: check the entry it names, in the log itself.
            let envelope = String::from_utf8_lossy(&existing.bytes).into_owned();
            let entry = log_if(log, &envelope, key).await?;
            if !bundle_attached(dest, subject.0, &envelope, &predicate_type).await? {
                attach_bundle(dest, subject, &envelope, key, entry.as_ref(), &predicate_type).await?;
            }
            return Ok(Attested { entry: entry.map(|e| e.record()), attached, reused: true });
        }
        Some(existing) => (String::from_utf8_lossy(&existing.bytes).into_owned(), true),
        None => {
            let envelope = crate::provenance::sign(statement, key);
            layers.push(layer_for(&envelope, None));
            store(layers.clone()).await?;
            (envelope, false)
        }
    };

    let entry = log_if(log, &envelope, key).await?;
    let i = layers.iter().position(ours).unwrap_or(layers.len());
    let layer = layer_for(&envelope, entry.as_ref().and_then(Logged::cosign_bundle).as_deref());
    if i < layers.len() {
        layers[i] = layer;
    } else {
        layers.push(layer);
    }
    store(layers).await?;
    if !bundle_attached(dest, subject.0, &envelope, &predicate_type).await? {
        attach_bundle(dest, subject, &envelope, key, entry.as_ref(), &predicate_type).await?;
    }
    Ok(Attested { entry: entry.map(|e| e.record()), attached, reused })
}

/// The envelope's entry in the log, when there is a log.
async fn log_if(
    log: Option<&impl EnvelopeLog>,
    envelope: &str,
    key: &SigningKey,
) -> Result<Option<Logged>, PublishError> {
    match log {
        Some(log) => log.log_envelope(envelope, key).await.map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// An in-memory log that answers the same envelope with its earlier entry, as Rekor does. With
    /// `lose_answers` set, the log makes the entry but its answer never arrives: the crash (or cut
    /// connection) between the log writing an entry and Weft recording it.
    #[derive(Default)]
    struct MemoryLog {
        envelopes: Mutex<Vec<String>>,
        lose_answers: AtomicBool,
    }

    impl EnvelopeLog for MemoryLog {
        async fn log_envelope(&self, envelope: &str, key: &SigningKey) -> Result<Logged, PublishError> {
            use base64::Engine;
            let index = {
                let mut envelopes = self.envelopes.lock().unwrap();
                match envelopes.iter().position(|e| e == envelope) {
                    Some(i) => i,
                    None => {
                        envelopes.push(envelope.to_string());
                        envelopes.len() - 1
                    }
                }
            };
            if self.lose_answers.load(Ordering::SeqCst) {
                let reason = "connection reset".to_string();
                return Err(RekorError::Unavailable { url: "memory".into(), reason }.into());
            }
            let body = crate::provenance::dsse_entry(envelope, &key.verifier_pem()).to_string();
            let body = base64::engine::general_purpose::STANDARD.encode(body);
            let proof = rekor::Proof {
                log_index: index as u64,
                tree_size: index as u64 + 1,
                root_hash: "00".repeat(32),
                hashes: Vec::new(),
                checkpoint: String::new(),
            };
            Ok(Logged::V1(rekor::Entry {
                uuid: format!("{index:064x}"),
                body,
                integrated_time: 1,
                log_index: i64::try_from(index).unwrap(),
                log_id: "ab".repeat(32),
                set: "c2V0".into(),
                proof: Some(proof),
            }))
        }
    }

    fn manifests() -> Vec<Manifest> {
        let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: shop\ndata:\n  a: b\n";
        manifest::parse("test", yaml, manifest::Limits::default()).unwrap()
    }

    #[tokio::test]
    async fn an_attestation_whose_logging_was_cut_short_is_completed_on_retry_with_one_entry() {
        let dir = tempfile::tempdir().unwrap();
        let dest = Destination::Layout { dir: dir.path().to_path_buf(), name: "shop".into() };
        let key = SigningKey::generate().unwrap();
        let published = publish(&dest, &manifests(), &key, None).await.unwrap();
        let statement = serde_json::json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "shop", "digest": {"sha256": published.digest.trim_start_matches("sha256:")}}],
            "predicateType": "https://slsa.dev/provenance/v1",
            "predicate": {"runDetails": {"metadata": {"invocationId": "unit-1"}}},
        });
        let log = MemoryLog::default();

        // The log writes the entry, its answer is lost: the step fails, and is retried.
        log.lose_answers.store(true, Ordering::SeqCst);
        let lost = attest(&dest, &published, &statement, &key, Some(&log)).await.unwrap_err();
        assert!(lost.reason().retryable(), "{lost}");
        assert_eq!(log.envelopes.lock().unwrap().len(), 1);
        let stored = oci::layout_layers(dir.path(), oci::KIND_ATTS);
        assert_eq!(stored.len(), 1, "the envelope is kept with the image before it is logged");

        // The retry re-sends the very envelope it stored: the log answers with the same entry.
        log.lose_answers.store(false, Ordering::SeqCst);
        let first = attest(&dest, &published, &statement, &key, Some(&log)).await.unwrap();
        assert!(first.reused, "an earlier attempt's envelope is completed, not a new one made");
        assert_eq!(log.envelopes.lock().unwrap().len(), 1, "one entry in the log");
        assert_eq!(first.entry.as_ref().map(|e| e.log_index), Some(0));
        let layers = oci::layout_layers(dir.path(), oci::KIND_ATTS);
        assert_eq!(layers.len(), 1, "one attestation attached");
        assert!(layers[0].annotations.contains_key(oci::BUNDLE_ANNOTATION), "with the log's bundle");

        // Complete: once more changes nothing.
        let again = attest(&dest, &published, &statement, &key, Some(&log)).await.unwrap();
        assert!(again.reused);
        assert_eq!((again.entry, log.envelopes.lock().unwrap().len()), (first.entry, 1));
        assert_eq!(oci::layout_layers(dir.path(), oci::KIND_ATTS).len(), 1);

        // Another unit of work (another run of the same image) is another attestation.
        let mut next = statement.clone();
        next["predicate"]["runDetails"]["metadata"]["invocationId"] = "unit-2".into();
        let other = attest(&dest, &published, &next, &key, Some(&log)).await.unwrap();
        assert!(!other.reused);
        assert_eq!(log.envelopes.lock().unwrap().len(), 2);
        assert_eq!(oci::layout_layers(dir.path(), oci::KIND_ATTS).len(), 2);
    }

    #[test]
    fn an_envelope_is_logged_in_rekor_v2_as_the_digest_of_its_pae_and_its_signature() {
        let key = SigningKey::generate().unwrap();
        let statement = serde_json::json!({"_type": "https://in-toto.io/Statement/v1", "subject": [], "predicate": {}});
        let envelope = crate::provenance::sign(&statement, &key);
        let rekord = dsse_rekord(&envelope, &key).unwrap();
        let payload = serde_json::to_vec(&statement).unwrap();
        let pae = crate::provenance::pae(crate::provenance::PAYLOAD_TYPE, &payload);
        assert_eq!(rekord.digest, <[u8; 32]>::from(Sha256::digest(&pae)));
        assert!(crate::signing::key::verify(&key.public_pem(), &pae, &rekord.signature), "the envelope's signature");
        assert_eq!(rekord.verifier, rekor2::Verifier::PublicKey(key.public_der()));
        assert!(dsse_rekord("{}", &key).is_err());
        let two = envelope.replace(r#""signatures":["#, r#""signatures":[{"keyid":"","sig":"c2ln"},"#);
        assert!(dsse_rekord(&two, &key).is_err(), "one signature only");
    }

    #[test]
    fn a_rekor_v2_entry_is_recorded_by_its_leaf_hash_without_a_time() {
        let entry = Entry2 {
            log_index: 7,
            log_id: vec![0xab; 32],
            kind: rekor2::KIND.into(),
            version: rekor2::VERSION.into(),
            proof: rekor2::Proof2 {
                log_index: 7,
                root_hash: [0; 32],
                tree_size: 8,
                hashes: vec![],
                checkpoint: String::new(),
            },
            body: b"body".to_vec(),
        };
        let logged = Logged::V2(entry, None);
        let r = logged.record();
        assert_eq!(r.uuid, hex::encode(rekor::leaf_hash(b"body")));
        assert_eq!((r.log_index, r.integrated_time), (7, 0));
        assert_eq!(r.log_id, "ab".repeat(32));
        assert!(logged.cosign_bundle().is_none(), "no SET, no legacy bundle");
    }
}
