//! Provenance: an in-toto Statement v1 with an SLSA provenance v1 predicate for the manifest image,
//! DSSE-signed. Pure: building, signing and checking; the log and the registry are elsewhere.
//!
//! The in-toto crate knows only Statement v0.1, so the v1 and SLSA v1 shapes are written here, with
//! only the fields the specifications define (cosign parses statements strictly).

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::signing::SigningKey;

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
pub const BUILD_TYPE: &str = "https://weft.dev/buildtypes/argocd-application/v1";
pub const DSSE_LAYER: &str = "application/vnd.dsse.envelope.v1+json";

/// What the provenance says: the image it is about and everything that went into it.
#[derive(Clone, Debug)]
pub struct Facts {
    /// `registry/repository` (or the layout's name) and the image digest `sha256:<hex>`.
    pub image_name: String,
    pub image_digest: String,
    pub application: Value,
    pub sources: Value,
    pub profile: Value,
    /// (uri, commit, name) of every git commit that went into the render.
    pub commits: Vec<(String, String, String)>,
    pub builder_id: String,
    pub invocation_id: String,
    pub started_on: String,
    pub finished_on: String,
    pub source_verification: Value,
    pub signed_resources: usize,
}

/// The invocation id: a stable name for (Application, revisions, profile generation, manifest digest), so
/// a retry recognizes its own earlier attempt.
pub fn invocation_id(
    app_uid_or_name: &str,
    revisions: &[String],
    profile_generation: i64,
    image_digest: &str,
) -> String {
    let mut h = Sha256::new();
    h.update(app_uid_or_name);
    for r in revisions {
        h.update(b"\0");
        h.update(r);
    }
    h.update(format!("\0{profile_generation}\0{image_digest}"));
    hex::encode(&h.finalize()[..16])
}

pub fn statement(f: &Facts) -> Value {
    let dependencies: Vec<Value> = f
        .commits
        .iter()
        .map(|(uri, commit, name)| json!({"uri": format!("git+{uri}"), "digest": {"gitCommit": commit}, "name": name}))
        .collect();
    json!({
        "_type": STATEMENT_TYPE,
        "subject": [{"name": f.image_name, "digest": {"sha256": f.image_digest.trim_start_matches("sha256:")}}],
        "predicateType": SLSA_PROVENANCE_V1,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"application": f.application, "sources": f.sources, "profile": f.profile},
                "internalParameters": {"signedResources": f.signed_resources},
                "resolvedDependencies": dependencies
            },
            "runDetails": {
                "builder": {"id": f.builder_id, "version": {"weft": env!("CARGO_PKG_VERSION")}},
                "metadata": {"invocationId": f.invocation_id, "startedOn": f.started_on, "finishedOn": f.finished_on},
                "byproducts": [{"name": "source-verification", "mediaType": "application/json",
                                "content": base64::engine::general_purpose::STANDARD.encode(f.source_verification.to_string())}]
            }
        }
    })
}

/// A DSSE envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    pub payload: String,
    pub signatures: Vec<EnvelopeSignature>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    #[serde(default)]
    pub keyid: String,
    pub sig: String,
}

/// DSSE's pre-authentication encoding.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {} {} ", payload_type.len(), payload_type, payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Signs the statement; returns the envelope as the exact JSON bytes that are stored and logged.
pub fn sign(statement: &Value, key: &SigningKey) -> String {
    let payload = serde_json::to_vec(statement).unwrap_or_default();
    let sig = key.sign_base64(&pae(PAYLOAD_TYPE, &payload));
    let env = Envelope {
        payload_type: PAYLOAD_TYPE.into(),
        payload: base64::engine::general_purpose::STANDARD.encode(&payload),
        signatures: vec![EnvelopeSignature { keyid: String::new(), sig }],
    };
    serde_json::to_string(&env).unwrap_or_default()
}

/// Parses an envelope and checks its one signature against a PEM public key; returns the statement.
pub fn open(envelope: &str, public_pem: &str) -> Result<Value, String> {
    let env: Envelope = serde_json::from_str(envelope).map_err(|e| format!("not a DSSE envelope: {e}"))?;
    if env.payload_type != PAYLOAD_TYPE {
        return Err(format!("payload type is {:?}, not {PAYLOAD_TYPE}", env.payload_type));
    }
    let payload = base64::engine::general_purpose::STANDARD
        .decode(&env.payload)
        .map_err(|e| format!("payload is not base64: {e}"))?;
    let [sig] = env.signatures.as_slice() else {
        return Err(format!("{} signatures; exactly one is expected", env.signatures.len()));
    };
    let der = base64::engine::general_purpose::STANDARD
        .decode(&sig.sig)
        .map_err(|e| format!("signature is not base64: {e}"))?;
    if !crate::signing::verify(public_pem, &pae(&env.payload_type, &payload), &der) {
        return Err("the DSSE signature does not verify with the key".into());
    }
    serde_json::from_slice(&payload).map_err(|e| format!("the payload is not a JSON statement: {e}"))
}

/// A Rekor `dsse` v0.0.1 entry for an envelope.
pub fn dsse_entry(envelope: &str, public_pem: &str) -> Value {
    json!({"apiVersion": "0.0.1", "kind": "dsse", "spec": {"proposedContent": {
        "envelope": envelope,
        "verifiers": [base64::engine::general_purpose::STANDARD.encode(public_pem)]
    }}})
}

/// Does a logged `dsse` entry hold exactly this envelope?
pub fn body_matches(entry: &crate::rekor::Entry, envelope: &str) -> Result<bool, crate::rekor::RekorError> {
    let body = entry.body_json()?;
    let hash = hex::encode(Sha256::digest(envelope.as_bytes()));
    Ok(body["kind"] == "dsse" && body["spec"]["envelopeHash"]["value"].as_str() == Some(hash.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg+yaTHcmYlgvj6dhO
5S1doLeJtaNjCCoGdHMFO650whihRANCAATtC3IXpOSbqt/kC7PyXatHyX6gWSlt
y5g1MplhMrul3xK3zVfbb05Yo6qveZLDJUq9kfM3JGihNAYXM+fbQi26
-----END PRIVATE KEY-----";

    fn facts() -> Facts {
        Facts {
            image_name: "reg/manifests/shop".into(),
            image_digest: "sha256:abcd".into(),
            application: json!({"name": "shop-cart"}),
            sources: json!([{"repoURL": "https://git.example/shop"}]),
            profile: json!({"name": "p", "generation": 2}),
            commits: vec![(
                "https://git.example/shop".into(),
                "1111111111111111111111111111111111111111".into(),
                "source".into(),
            )],
            builder_id: "https://weft.dev/builders/test".into(),
            invocation_id: invocation_id("uid", &["1111".into()], 2, "sha256:abcd"),
            started_on: "2026-11-22T00:00:00Z".into(),
            finished_on: "2026-11-22T00:00:01Z".into(),
            source_verification: json!({"verified": true}),
            signed_resources: 3,
        }
    }

    #[test]
    fn the_statement_is_in_toto_v1_with_slsa_v1() {
        let s = statement(&facts());
        assert_eq!(s["_type"], STATEMENT_TYPE);
        assert_eq!(s["predicateType"], SLSA_PROVENANCE_V1);
        assert_eq!(s["subject"][0]["digest"]["sha256"], "abcd");
        assert_eq!(
            s["predicate"]["buildDefinition"]["resolvedDependencies"][0]["digest"]["gitCommit"],
            "1111111111111111111111111111111111111111"
        );
        assert_eq!(s["predicate"]["runDetails"]["builder"]["id"], "https://weft.dev/builders/test");
        assert_eq!(s.as_object().unwrap().len(), 4, "only the fields the spec defines");
    }

    #[test]
    fn envelopes_sign_and_open_and_tampering_is_caught() {
        let key = SigningKey::from_pem(KEY, None).unwrap();
        let env = sign(&statement(&facts()), &key);
        assert_eq!(open(&env, &key.public_pem()).unwrap()["subject"][0]["name"], "reg/manifests/shop");
        let mut e: Envelope = serde_json::from_str(&env).unwrap();
        let other = statement(&Facts { image_digest: "sha256:ffff".into(), ..facts() });
        e.payload = base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&other).unwrap());
        assert!(open(&serde_json::to_string(&e).unwrap(), &key.public_pem()).is_err());
        assert_eq!(pae("t", b"ab"), b"DSSEv1 1 t 2 ab");
    }

    #[test]
    fn invocation_ids_are_stable_and_distinct() {
        let a = invocation_id("uid", &["r1".into()], 1, "sha256:x");
        assert_eq!(a, invocation_id("uid", &["r1".into()], 1, "sha256:x"));
        assert_ne!(a, invocation_id("uid", &["r1".into()], 2, "sha256:x"));
        assert_ne!(a, invocation_id("uid", &["r2".into()], 1, "sha256:x"));
    }
}
