//! What a registry holds about an image digest, in the places cosign writes it: the legacy
//! `sha256-<hex>.sig` and `.att` tags (a simple-signing payload or a DSSE envelope per layer, with the
//! certificate and the Rekor bundle as annotations) and Sigstore bundles attached as OCI referrers
//! (cosign's `--new-bundle-format`). Each signature is turned into a Sigstore bundle so one verifier
//! checks all of them; nothing here decides whether a signature is good.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use sigstore_verify::types::{Bundle, SignatureContent};

use super::reference::Digest;
use crate::oci::{BUNDLE_ANNOTATION, Blob, LayoutReader, OciError, Registry, SIGNATURE_ANNOTATION};

pub use crate::oci::CERTIFICATE_ANNOTATION;
pub const DSSE_ENVELOPE: &str = "application/vnd.dsse.envelope.v1+json";
pub use crate::bundle::{COSIGN_SIGN_PREDICATE, MEDIA_TYPE as BUNDLE_V03};
/// More than this many signatures or attestations on one image is treated as hostile.
const MAX_CANDIDATES: usize = 64;

/// What a signature signs: bytes (a simple-signing payload) or, for DSSE, the image digest itself,
/// which must be a subject of the statement.
#[derive(Debug, Clone)]
pub enum Signed {
    Payload(Vec<u8>),
    ImageDigest,
}

#[derive(Debug, Clone)]
pub struct Candidate {
    /// Where it was found, for messages: `sha256-….sig layer 1`, `referrer sha256:…`.
    pub origin: String,
    pub bundle: Bundle,
    pub signed: Signed,
}

impl Candidate {
    /// The in-toto statement of a DSSE candidate.
    pub fn statement(&self) -> Option<Value> {
        match &self.bundle.content {
            SignatureContent::DsseEnvelope(e) => serde_json::from_slice(e.payload.as_bytes()).ok(),
            _ => None,
        }
    }
}

/// Everything found for one digest, and what could not be read (reported when nothing verifies).
#[derive(Debug, Default)]
pub struct Evidence {
    pub signatures: Vec<Candidate>,
    pub attestations: Vec<Candidate>,
    pub unreadable: Vec<String>,
}

impl Evidence {
    fn add(&mut self, origin: String, converted: Result<(Candidate, bool), String>) {
        match converted {
            Ok((c, true)) if self.attestations.len() < MAX_CANDIDATES => self.attestations.push(c),
            Ok((c, false)) if self.signatures.len() < MAX_CANDIDATES => self.signatures.push(c),
            Ok(_) => {}
            Err(e) => self.unreadable.push(format!("{origin}: {e}")),
        }
    }
}

/// Where an image's manifests, signatures and attestations are read: its registry, or an OCI image
/// layout on disk.
#[allow(async_fn_in_trait)] // used on concrete types only: no Send bound is lost
pub trait ImageStore: Sync {
    /// A manifest by tag or digest; `None` when there is none.
    async fn manifest(&self, reference: &str) -> Result<Option<Vec<u8>>, OciError>;
    /// The layers a manifest lists; a layer that cannot be read fails alone.
    async fn layers_each(&self, manifest: &[u8]) -> Result<Vec<Result<Blob, OciError>>, OciError>;
    /// The referrers of a digest (OCI 1.1), as index descriptors.
    async fn referrers(&self, digest: &str) -> Result<Vec<serde_json::Value>, OciError>;
}

impl ImageStore for Registry {
    async fn manifest(&self, reference: &str) -> Result<Option<Vec<u8>>, OciError> {
        Registry::manifest(self, reference).await
    }

    async fn layers_each(&self, manifest: &[u8]) -> Result<Vec<Result<Blob, OciError>>, OciError> {
        Registry::layers_each(self, manifest).await
    }

    async fn referrers(&self, digest: &str) -> Result<Vec<serde_json::Value>, OciError> {
        Registry::referrers(self, digest).await
    }
}

impl ImageStore for LayoutReader {
    async fn manifest(&self, reference: &str) -> Result<Option<Vec<u8>>, OciError> {
        LayoutReader::manifest(self, reference)
    }

    async fn layers_each(&self, manifest: &[u8]) -> Result<Vec<Result<Blob, OciError>>, OciError> {
        LayoutReader::layers_each(self, manifest)
    }

    async fn referrers(&self, _: &str) -> Result<Vec<serde_json::Value>, OciError> {
        Ok(Vec::new())
    }
}

/// Reads every signature and attestation of `digest` in the registry (or layout).
pub async fn fetch(registry: &impl ImageStore, digest: &Digest) -> Result<Evidence, OciError> {
    let mut evidence = Evidence::default();
    // The three places are independent: ask for them at once.
    let (sig, att, referrers) = tokio::join!(
        legacy_layers(registry, digest, ".sig"),
        legacy_layers(registry, digest, ".att"),
        registry.referrers(digest.as_str())
    );
    for (found, attestation) in [(sig?, false), (att?, true)] {
        for (i, (tag, layer)) in found.iter().enumerate() {
            let origin = format!("{tag} layer {}", i + 1);
            // A layer too large to read is unreadable evidence; the others still count.
            let converted = match layer {
                Ok(layer) => legacy(layer, digest, origin.clone()).map(|c| (c, attestation)),
                Err(e) => Err(e.to_string()),
            };
            evidence.add(origin, converted);
        }
    }
    for referrer in referrers?.iter().take(MAX_CANDIDATES) {
        // Registries report the artifact type from the manifest or from its config; cosign's annotation
        // is the other sign of a Sigstore bundle.
        let bundle = referrer["artifactType"].as_str() == Some(BUNDLE_V03)
            || referrer["annotations"].get("dev.sigstore.bundle.content").is_some();
        let Some(d) = referrer["digest"].as_str().filter(|_| bundle) else { continue };
        let origin = format!("referrer {d}");
        let Some(manifest) = registry.manifest(d).await? else { continue };
        let layers = registry.layers_each(&manifest).await?;
        if let Some(Err(e)) = layers.iter().find(|l| l.is_err()) {
            evidence.unreadable.push(format!("{origin}: {e}"));
            continue;
        }
        match layers.iter().flatten().find(|l| l.media_type == BUNDLE_V03) {
            Some(layer) => evidence.add(origin.clone(), referred(&layer.bytes, origin)),
            None => evidence.unreadable.push(format!("{origin}: no {BUNDLE_V03} layer")),
        }
    }
    Ok(evidence)
}

/// The layers under cosign's `sha256-<hex><suffix>` tag, with the tag; a layer too large to read is an
/// error of its own.
async fn legacy_layers(
    registry: &impl ImageStore,
    digest: &Digest,
    suffix: &str,
) -> Result<Vec<(String, Result<Blob, OciError>)>, OciError> {
    let tag = digest.tag(suffix);
    let Some(manifest) = registry.manifest(&tag).await? else { return Ok(Vec::new()) };
    let layers = registry.layers_each(&manifest).await?;
    Ok(layers.into_iter().take(MAX_CANDIDATES).map(|l| (tag.clone(), l)).collect())
}

/// A Sigstore bundle attached as a referrer; `true` when it is an attestation rather than a signature.
pub fn referred(bytes: &[u8], origin: String) -> Result<(Candidate, bool), String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the bundle is not text".to_string())?;
    let bundle = Bundle::from_json(text).map_err(|e| format!("not a Sigstore bundle: {e}"))?;
    let c = Candidate { origin, bundle, signed: Signed::ImageDigest };
    let attestation = match c.statement() {
        Some(s) => s["predicateType"].as_str() != Some(COSIGN_SIGN_PREDICATE),
        None => false,
    };
    Ok((c, attestation))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RekorBundle {
    signed_entry_timestamp: String,
    payload: RekorPayload,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RekorPayload {
    body: String,
    integrated_time: i64,
    log_index: i64,
    #[serde(rename = "logID")]
    log_id: String,
}

/// A layer of a legacy `.sig` or `.att` image as a Sigstore bundle (v0.1: the Rekor entry is proven by
/// its signed entry timestamp, which is what cosign stores).
pub fn legacy(layer: &Blob, digest: &Digest, origin: String) -> Result<Candidate, String> {
    let a: &BTreeMap<String, String> = &layer.annotations;
    let material = match a.get(CERTIFICATE_ANNOTATION) {
        Some(pem) => {
            let (_, der) = pem_rfc7468::decode_vec(pem.trim().as_bytes())
                .map_err(|e| format!("the certificate annotation is not PEM: {e}"))?;
            json!({"x509CertificateChain": {"certificates": [{"rawBytes": B64.encode(der)}]}})
        }
        None => json!({"publicKey": {"hint": ""}}),
    };
    let mut bundle = json!({
        "mediaType": "application/vnd.dev.sigstore.bundle+json;version=0.1",
        "verificationMaterial": material,
    });
    match a.get(BUNDLE_ANNOTATION) {
        Some(rekor) => bundle["verificationMaterial"]["tlogEntries"] = json!([tlog_entry(rekor)?]),
        // Counts only for a key signer with `ignoreTlog`, and only as a simple-signing signature.
        None if layer.media_type != DSSE_ENVELOPE => bundle["verificationMaterial"]["tlogEntries"] = json!([]),
        None => {
            return Err("no transparency log entry (annotation dev.sigstore.cosign/bundle): attestations made without uploading to Rekor are not accepted".into());
        }
    }
    let signed = if layer.media_type == DSSE_ENVELOPE {
        let env: Value = serde_json::from_slice(&layer.bytes).map_err(|e| format!("not a DSSE envelope: {e}"))?;
        let sigs = env["signatures"].as_array().map(Vec::as_slice).unwrap_or_default();
        let [sig] = sigs else { return Err(format!("a DSSE envelope with {} signatures", sigs.len())) };
        bundle["dsseEnvelope"] = json!({
            "payload": env["payload"], "payloadType": env["payloadType"],
            "signatures": [{"sig": sig["sig"], "keyid": sig["keyid"].as_str().unwrap_or_default()}],
        });
        Signed::ImageDigest
    } else {
        // The payload names the digest it signs; one copied from another image must not count.
        let payload: Value =
            serde_json::from_slice(&layer.bytes).map_err(|e| format!("the simple-signing payload is not JSON: {e}"))?;
        let named = payload["critical"]["image"]["docker-manifest-digest"].as_str().unwrap_or_default();
        if named != digest.as_str() {
            return Err(format!("the payload signs {named:?}, not this image"));
        }
        let sig = a.get(SIGNATURE_ANNOTATION).ok_or("no signature annotation")?;
        bundle["messageSignature"] = json!({
            "messageDigest": {"algorithm": "SHA2_256", "digest": B64.encode(Sha256::digest(&layer.bytes))},
            "signature": sig,
        });
        Signed::Payload(layer.bytes.clone())
    };
    let bundle = Bundle::from_json(&bundle.to_string()).map_err(|e| format!("cannot be read as a bundle: {e}"))?;
    Ok(Candidate { origin, bundle, signed })
}

/// The bundle's log entry from cosign's legacy bundle annotation.
fn tlog_entry(rekor: &str) -> Result<Value, String> {
    let rekor: RekorBundle =
        serde_json::from_str(rekor).map_err(|e| format!("the transparency log bundle cannot be read: {e}"))?;
    let body: Value = B64
        .decode(&rekor.payload.body)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("the transparency log entry body is not base64 JSON")?;
    let (Some(kind), Some(version)) = (body["kind"].as_str(), body["apiVersion"].as_str()) else {
        return Err("the transparency log entry body has no kind or apiVersion".into());
    };
    let log_id = hex::decode(&rekor.payload.log_id).map_err(|_| "the log ID is not hex")?;
    Ok(json!({
        "logIndex": rekor.payload.log_index.to_string(),
        "logId": {"keyId": B64.encode(log_id)},
        "kindVersion": {"kind": kind, "version": version},
        "integratedTime": rekor.payload.integrated_time.to_string(),
        "inclusionPromise": {"signedEntryTimestamp": rekor.signed_entry_timestamp},
        "canonicalizedBody": rekor.payload.body,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(payload_digest: &str, annotations: &[(&str, String)]) -> Blob {
        let payload = json!({"critical": {"identity": {"docker-reference": "r/x"}, "image": {"docker-manifest-digest": payload_digest}, "type": "cosign container image signature"}, "optional": null});
        Blob {
            media_type: crate::oci::SIMPLE_SIGNING.into(),
            bytes: payload.to_string().into_bytes(),
            annotations: annotations.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        }
    }

    fn rekor_bundle() -> String {
        let body = B64.encode(br#"{"apiVersion":"0.0.1","kind":"hashedrekord","spec":{}}"#);
        json!({"SignedEntryTimestamp": B64.encode(b"set"), "Payload": {"body": body, "integratedTime": 1700000000, "logIndex": 7, "logID": "c0ffee"}}).to_string()
    }

    #[test]
    fn a_legacy_signature_becomes_a_v01_bundle_over_its_payload() {
        let d = Digest::of(b"image");
        let l = layer(d.as_str(), &[(SIGNATURE_ANNOTATION, B64.encode(b"sig")), (BUNDLE_ANNOTATION, rekor_bundle())]);
        let c = legacy(&l, &d, "x".into()).unwrap();
        assert!(matches!(&c.signed, Signed::Payload(p) if *p == l.bytes));
        let entry = &c.bundle.verification_material.tlog_entries[0];
        assert_eq!(entry.log_index.to_string(), "7");
        assert!(entry.inclusion_promise.is_some());
    }

    #[test]
    fn legacy_signatures_without_a_log_entry_or_for_another_image_are_refused() {
        let d = Digest::of(b"image");
        // Read with no log entry: only a key signer with ignoreTlog can count it (see verify.rs).
        let no_log = layer(d.as_str(), &[(SIGNATURE_ANNOTATION, B64.encode(b"sig"))]);
        assert!(legacy(&no_log, &d, "x".into()).unwrap().bundle.verification_material.tlog_entries.is_empty());
        let envelope = Blob { media_type: DSSE_ENVELOPE.into(), ..no_log.clone() };
        assert!(legacy(&envelope, &d, "x".into()).unwrap_err().contains("no transparency log entry"));
        let other = Digest::of(b"other");
        let copied =
            layer(other.as_str(), &[(SIGNATURE_ANNOTATION, B64.encode(b"sig")), (BUNDLE_ANNOTATION, rekor_bundle())]);
        assert!(legacy(&copied, &d, "x".into()).unwrap_err().contains("not this image"));
        let garbage = Blob { bytes: b"\xff".to_vec(), ..copied };
        assert!(legacy(&garbage, &d, "x".into()).is_err());
        assert!(referred(b"{}", "r".into()).is_err());
    }
}
