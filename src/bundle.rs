//! Sigstore bundles (v0.3) as cosign v3 writes and reads them: one DSSE envelope, the hint of the key
//! that signed it and its transparency log entry, attached to the image as an OCI 1.1 referrer with an
//! empty config. Pure: building and reading the JSON; pushing is in oci.rs, deciding in publish.rs.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::oci::{Blob, Image};
use crate::provenance::rekor::Entry;

pub const MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// The predicate cosign v3's `sign` puts in its statement: "this digest is signed".
pub const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";
pub const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";
pub const CONTENT_ANNOTATION: &str = "dev.sigstore.bundle.content";
pub const PREDICATE_ANNOTATION: &str = "dev.sigstore.bundle.predicateType";

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("the log entry cannot go into a bundle: {0}")]
    Entry(String),
    #[error("not a DSSE envelope: {0}")]
    Envelope(String),
}

/// The statement cosign v3 signs for `cosign sign`: one subject, the image digest; an empty predicate.
pub fn sign_statement(image_digest: &str) -> Value {
    json!({
        "_type": crate::provenance::STATEMENT_TYPE,
        "subject": [{"digest": {"sha256": image_digest.trim_start_matches("sha256:")}}],
        "predicateType": COSIGN_SIGN_PREDICATE,
        "predicate": {}
    })
}

/// Who signed: a public key or, keyless, the leaf certificate (DER). A bundle names a key by its hint
/// (base64 SHA-256 of the DER key: the verifier has the key) and carries a certificate whole.
pub use crate::provenance::rekor2::Verifier;
use crate::provenance::rekor2::{Entry2, HashedRekord2};

impl Verifier {
    pub fn of(key: &crate::signing::key::SigningKey) -> Verifier {
        let leaf = key.chain().and_then(<[String]>::first).and_then(|pem| pem_rfc7468::decode_vec(pem.as_bytes()).ok());
        match leaf {
            Some((_, der)) => Verifier::Certificate(der),
            None => Verifier::PublicKey(key.public_der()),
        }
    }
}

/// A v0.3 bundle around a DSSE envelope (as Weft stores it: JSON), for its signer and, when logged, the
/// Rekor entry that holds it.
pub fn dsse_bundle(envelope: &str, verifier: &Verifier, entry: Option<&Entry>) -> Result<Vec<u8>, BundleError> {
    dsse_bundle_with(envelope, verifier, entry.map(tlog_entry).transpose()?, None)
}

/// A v0.3 bundle around a DSSE envelope, with a `TransparencyLogEntry` already made (a Rekor v2 entry's:
/// [`crate::provenance::rekor2::Entry2::tlog_entry`]).
/// `timestamp`: a timestamp authority's response (DER) over the signature.
pub fn dsse_bundle_with(
    envelope: &str,
    verifier: &Verifier,
    tlog: Option<Value>,
    timestamp: Option<&[u8]>,
) -> Result<Vec<u8>, BundleError> {
    let env: Value = serde_json::from_str(envelope).map_err(|e| BundleError::Envelope(e.to_string()))?;
    let signatures: Vec<Value> = env["signatures"]
        .as_array()
        .ok_or_else(|| BundleError::Envelope("no signatures".into()))?
        .iter()
        .map(|s| match s["keyid"].as_str() {
            Some(k) if !k.is_empty() => json!({"sig": s["sig"], "keyid": k}),
            _ => json!({"sig": s["sig"]}),
        })
        .collect();
    let mut material = match verifier {
        Verifier::PublicKey(der) => json!({"publicKey": {"hint": B64.encode(Sha256::digest(der))}}),
        Verifier::Certificate(der) => json!({"certificate": {"rawBytes": B64.encode(der)}}),
    };
    if let Some(t) = tlog {
        material["tlogEntries"] = json!([t]);
    }
    if let Some(t) = timestamp {
        material["timestampVerificationData"] = json!({"rfc3161Timestamps": [{"signedTimestamp": B64.encode(t)}]});
    }
    let bundle = json!({
        "mediaType": MEDIA_TYPE,
        "verificationMaterial": material,
        "dsseEnvelope": {"payload": env["payload"], "payloadType": env["payloadType"], "signatures": signatures}
    });
    Ok(serde_json::to_vec(&bundle).unwrap_or_default())
}

/// A Rekor v1 entry as a bundle's `TransparencyLogEntry` (int64 as strings, bytes as base64).
pub(crate) fn tlog_entry(e: &Entry) -> Result<Value, BundleError> {
    let bad = |what: &str| BundleError::Entry(what.to_string());
    let hex64 = |h: &str| hex::decode(h).map(|b| B64.encode(b)).map_err(|_| bad("a hash is not hex"));
    let body = e.body_json().map_err(|err| BundleError::Entry(err.to_string()))?;
    let (kind, version) = (body["kind"].as_str(), body["apiVersion"].as_str());
    let (Some(kind), Some(version)) = (kind, version) else { return Err(bad("the body names no kind or version")) };
    let proof = e.proof.as_ref().ok_or_else(|| bad("no inclusion proof"))?;
    Ok(json!({
        "logIndex": e.log_index.to_string(),
        "logId": {"keyId": hex64(&e.log_id)?},
        "kindVersion": {"kind": kind, "version": version},
        "integratedTime": e.integrated_time.to_string(),
        "inclusionPromise": {"signedEntryTimestamp": e.set},
        "inclusionProof": {
            "logIndex": proof.log_index.to_string(),
            "rootHash": hex64(&proof.root_hash)?,
            "treeSize": proof.tree_size.to_string(),
            "hashes": proof.hashes.iter().map(|h| hex64(h)).collect::<Result<Vec<_>, _>>()?,
            "checkpoint": {"envelope": proof.checkpoint}
        },
        "canonicalizedBody": e.body
    }))
}

/// The DSSE envelope a bundle holds, as Weft's envelope JSON (for comparing with one Weft made).
pub fn envelope_of(bundle: &[u8]) -> Option<String> {
    let b: Value = serde_json::from_slice(bundle).ok()?;
    let e = &b["dsseEnvelope"];
    let signatures: Vec<Value> = e["signatures"]
        .as_array()?
        .iter()
        .map(|s| json!({"keyid": s["keyid"].as_str().unwrap_or_default(), "sig": s["sig"]}))
        .collect();
    let env = crate::provenance::Envelope {
        payload_type: e["payloadType"].as_str()?.to_string(),
        payload: e["payload"].as_str()?.to_string(),
        signatures: serde_json::from_value(Value::Array(signatures)).ok()?,
    };
    serde_json::to_string(&env).ok()
}

/// The referrer manifest cosign v3 writes for a bundle: an empty config, the bundle as the one layer,
/// the artifact type and the predicate type annotated (no creation time: the same bundle is the same
/// manifest, so attaching it again changes nothing).
pub fn referrer(bundle: Vec<u8>, predicate_type: &str, subject: (&str, usize)) -> Image {
    let config = Blob { media_type: EMPTY_CONFIG.into(), bytes: b"{}".to_vec(), annotations: BTreeMap::new() };
    let layer = Blob { media_type: MEDIA_TYPE.into(), bytes: bundle, annotations: BTreeMap::new() };
    let annotations = BTreeMap::from([
        (CONTENT_ANNOTATION.to_string(), "dsse-envelope".to_string()),
        (PREDICATE_ANNOTATION.to_string(), predicate_type.to_string()),
    ]);
    Image::with_config(config, vec![layer], &annotations, Some(MEDIA_TYPE), Some(subject))
}

/// A Sigstore trusted root naming one Rekor v1 log by its URL and DER public key: what cosign needs to
/// verify bundles logged in a private log (`--trusted-root`); it knows only the public log's key.
pub fn trusted_root_for_log(url: &str, log_key_der: &[u8]) -> Value {
    json!({
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": [{
            "baseUrl": url,
            "hashAlgorithm": "SHA2_256",
            "publicKey": {"rawBytes": B64.encode(log_key_der), "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                          "validFor": {"start": "1970-01-01T00:00:00Z"}},
            "logId": {"keyId": B64.encode(Sha256::digest(log_key_der))}
        }],
        "certificateAuthorities": [], "ctlogs": [], "timestampAuthorities": []
    })
}

/// A v0.3 bundle for a signature over an artifact's digest (`messageSignature`), with its Rekor v2 entry:
/// a public key is named by its hint (base64 SHA-256 of the DER key, as cosign does), a certificate is
/// carried whole.
pub fn message_signature_bundle(rekord: &HashedRekord2, entry: &Entry2) -> Value {
    let mut material = match &rekord.verifier {
        Verifier::PublicKey(der) => json!({"publicKey": {"hint": B64.encode(Sha256::digest(der))}}),
        Verifier::Certificate(der) => json!({"certificate": {"rawBytes": B64.encode(der)}}),
    };
    material["tlogEntries"] = json!([entry.tlog_entry()]);
    json!({
        "mediaType": MEDIA_TYPE,
        "verificationMaterial": material,
        "messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256", "digest": B64.encode(rekord.digest)},
            "signature": B64.encode(&rekord.signature)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        let body = B64.encode(br#"{"apiVersion":"0.0.1","kind":"dsse","spec":{}}"#);
        Entry {
            uuid: "u".into(),
            body,
            integrated_time: 1_700_000_000,
            log_index: 42,
            log_id: "ab".repeat(32),
            set: "c2V0".into(),
            proof: Some(crate::provenance::rekor::Proof {
                log_index: 42,
                tree_size: 43,
                root_hash: "cd".repeat(32),
                hashes: vec!["ef".repeat(32)],
                checkpoint: "origin\n43\nroot\n\n— sig\n".into(),
            }),
        }
    }

    const ENVELOPE: &str =
        r#"{"payloadType":"application/vnd.in-toto+json","payload":"e30=","signatures":[{"keyid":"","sig":"c2ln"}]}"#;

    #[test]
    fn a_bundle_holds_the_envelope_the_key_hint_and_the_entry_as_protobuf_json() {
        let b: Value = serde_json::from_slice(
            &dsse_bundle(ENVELOPE, &Verifier::PublicKey(b"der".to_vec()), Some(&entry())).unwrap(),
        )
        .unwrap();
        assert_eq!(b["mediaType"], MEDIA_TYPE);
        assert_eq!(b["verificationMaterial"]["publicKey"]["hint"], B64.encode(Sha256::digest(b"der")));
        let t = &b["verificationMaterial"]["tlogEntries"][0];
        assert_eq!(t["logIndex"], "42", "int64 is a string in protobuf JSON");
        assert_eq!(t["integratedTime"], "1700000000");
        assert_eq!(t["kindVersion"], json!({"kind": "dsse", "version": "0.0.1"}));
        assert_eq!(t["logId"]["keyId"], B64.encode([0xab; 32]));
        assert_eq!(t["inclusionProof"]["treeSize"], "43");
        assert_eq!(t["inclusionProof"]["hashes"][0], B64.encode([0xef; 32]));
        assert_eq!(b["dsseEnvelope"]["signatures"], json!([{"sig": "c2ln"}]), "an empty keyid is left out");
        assert_eq!(envelope_of(&serde_json::to_vec(&b).unwrap()).unwrap(), ENVELOPE);
    }

    #[test]
    fn a_keyless_bundle_carries_the_certificate_instead_of_a_hint() {
        let b = dsse_bundle(ENVELOPE, &Verifier::Certificate(b"cert".to_vec()), None).unwrap();
        let b: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(b["verificationMaterial"]["certificate"]["rawBytes"], B64.encode(b"cert"));
        assert!(b["verificationMaterial"].get("publicKey").is_none());
    }

    #[test]
    fn without_a_log_there_is_no_entry_and_a_broken_entry_is_an_error() {
        let b: Value =
            serde_json::from_slice(&dsse_bundle(ENVELOPE, &Verifier::PublicKey(b"der".to_vec()), None).unwrap())
                .unwrap();
        assert!(b["verificationMaterial"].get("tlogEntries").is_none());
        let mut e = entry();
        e.proof = None;
        assert!(dsse_bundle(ENVELOPE, &Verifier::PublicKey(b"der".to_vec()), Some(&e)).is_err());
        assert!(dsse_bundle("not json", &Verifier::PublicKey(b"der".to_vec()), None).is_err());
    }

    #[test]
    fn the_referrer_is_cosigns_shape_and_the_same_bundle_is_the_same_manifest() {
        let r = referrer(b"{}".to_vec(), COSIGN_SIGN_PREDICATE, ("sha256:aa", 7));
        let m: Value = serde_json::from_slice(&r.manifest).unwrap();
        assert_eq!(m["artifactType"], MEDIA_TYPE);
        assert_eq!(m["config"]["mediaType"], EMPTY_CONFIG);
        assert_eq!(m["config"]["digest"], crate::oci::digest(b"{}"));
        assert_eq!(m["layers"][0]["mediaType"], MEDIA_TYPE);
        assert_eq!(m["annotations"][PREDICATE_ANNOTATION], COSIGN_SIGN_PREDICATE);
        assert_eq!(m["subject"]["digest"], "sha256:aa");
        assert_eq!(r.digest(), referrer(b"{}".to_vec(), COSIGN_SIGN_PREDICATE, ("sha256:aa", 7)).digest());
    }
}
