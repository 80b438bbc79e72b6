//! Provenance: an in-toto Statement v1 with an SLSA provenance v1 predicate for the manifest image,
//! DSSE-signed. Pure: building, signing and checking; the log and the registry are elsewhere.
//!
//! The in-toto crate knows only Statement v0.1, so the v1 and SLSA v1 shapes are written here, with
//! only the fields the specifications define (cosign parses statements strictly).

pub mod rekor;
pub mod rekor2;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::signing::key::SigningKey;

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";
pub const SLSA_VSA_V1: &str = "https://slsa.dev/verification_summary/v1";
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

/// What a verification summary (SLSA VSA v1) says: Weft, as the verifier, checked these inputs against
/// this policy and they passed. Written only for a revision that is vouched for.
#[derive(Clone, Debug)]
pub struct Summary {
    /// The manifest image the summary is attached to: its name and digest `sha256:<hex>`.
    pub image_name: String,
    pub image_digest: String,
    pub verifier_id: String,
    pub time_verified: String,
    /// The profile: a URI naming it and its generation, and the SHA-256 of its spec as JSON.
    pub policy_uri: String,
    pub policy_sha256: String,
    /// (uri, commit) of every git commit whose signatures were verified.
    pub commits: Vec<(String, String)>,
    /// (reference, digest `sha256:<hex>`) of every image whose signatures were verified.
    pub images: Vec<(String, String)>,
    /// What was verified, in Weft's own terms (never an `SLSA_` level Weft did not check).
    pub levels: Vec<String>,
    /// The SLSA build levels the images' provenance proved, counted.
    pub dependency_levels: std::collections::BTreeMap<String, u64>,
}

/// The `policy.uri` of a VSA for an IntegrityProfile.
pub fn policy_uri(namespace: Option<&str>, name: &str, generation: i64) -> String {
    match namespace {
        Some(ns) if !ns.is_empty() => format!("weft://integrityprofiles/{ns}/{name}?generation={generation}"),
        _ => format!("weft://integrityprofiles/{name}?generation={generation}"),
    }
}

/// The `policy.digest` of a VSA: SHA-256 (hex) of the profile's spec as Weft serializes it.
pub fn policy_sha256(spec: &crate::resources::profile::IntegrityProfileSpec) -> String {
    hex::encode(Sha256::digest(serde_json::to_vec(spec).unwrap_or_default()))
}

/// An in-toto Statement v1 with a `verification_summary/v1` predicate. The inputs are the commits and
/// images: the signatures Weft checked are in the commit objects and attached to the image digests.
pub fn summary_statement(s: &Summary) -> Value {
    let mut inputs: Vec<Value> = s
        .commits
        .iter()
        .map(|(uri, commit)| json!({"uri": format!("git+{uri}@{commit}"), "digest": {"gitCommit": commit}}))
        .collect();
    inputs.extend(s.images.iter().map(|(reference, digest)| {
        // The repository: without digest or tag (a `:` before the last `/` is a registry port).
        let name = reference.split('@').next().unwrap_or(reference);
        let slash = name.rfind('/').map_or(0, |i| i + 1);
        let name = name[slash..].find(':').map_or(name, |i| &name[..slash + i]);
        json!({"uri": format!("oci://{name}@{digest}"), "digest": {"sha256": digest.trim_start_matches("sha256:")}})
    }));
    json!({
        "_type": STATEMENT_TYPE,
        "subject": [{"name": s.image_name, "digest": {"sha256": s.image_digest.trim_start_matches("sha256:")}}],
        "predicateType": SLSA_VSA_V1,
        "predicate": {
            "verifier": {"id": s.verifier_id, "version": {"weft": env!("CARGO_PKG_VERSION")}},
            "timeVerified": s.time_verified,
            "resourceUri": format!("oci://{}@{}", s.image_name, s.image_digest),
            "policy": {"uri": s.policy_uri, "digest": {"sha256": s.policy_sha256}},
            "inputAttestations": inputs,
            "verificationResult": "PASSED",
            "verifiedLevels": s.levels,
            "dependencyLevels": s.dependency_levels,
            "slsaVersion": "1.0"
        }
    })
}

/// What an attestation records, the same for every attempt at it, so that a retry recognizes its own
/// earlier envelope: the provenance's invocation id; for a summary, its content without the time.
pub fn unit(statement: &Value) -> Option<String> {
    match statement["predicateType"].as_str()? {
        SLSA_PROVENANCE_V1 => {
            statement["predicate"]["runDetails"]["metadata"]["invocationId"].as_str().map(|i| format!("p:{i}"))
        }
        SLSA_VSA_V1 => {
            let mut s = statement.clone();
            s["predicate"].as_object_mut()?.remove("timeVerified");
            Some(format!("s:{}", hex::encode(Sha256::digest(s.to_string()))))
        }
        _ => None,
    }
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
    if !crate::signing::key::verify(public_pem, &pae(&env.payload_type, &payload), &der) {
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
pub fn body_matches(
    entry: &crate::provenance::rekor::Entry,
    envelope: &str,
) -> Result<bool, crate::provenance::rekor::RekorError> {
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

    fn summary() -> Summary {
        Summary {
            image_name: "reg/manifests/shop".into(),
            image_digest: "sha256:abcd".into(),
            verifier_id: "https://weft.dev/builders/test".into(),
            time_verified: "2026-11-22T00:00:01Z".into(),
            policy_uri: policy_uri(Some("shop"), "strict", 3),
            policy_sha256: "ee".repeat(32),
            commits: vec![("https://git.example/shop".into(), "1".repeat(40))],
            images: vec![
                ("reg/app:1.0".into(), "sha256:cafe".into()),
                ("localhost:5000/web@sha256:beef".into(), "sha256:beef".into()),
            ],
            levels: vec!["WEFT_SOURCE_SIGNATURES_VERIFIED".into()],
            dependency_levels: [("SLSA_BUILD_LEVEL_3".to_string(), 1)].into(),
        }
    }

    #[test]
    fn the_summary_is_a_vsa_v1_naming_policy_inputs_and_result() {
        let s = summary_statement(&summary());
        assert_eq!(s["predicateType"], SLSA_VSA_V1);
        assert_eq!(s["subject"][0]["digest"]["sha256"], "abcd");
        let p = &s["predicate"];
        assert_eq!(p["verifier"]["id"], "https://weft.dev/builders/test");
        assert_eq!(p["policy"]["uri"], "weft://integrityprofiles/shop/strict?generation=3");
        assert_eq!(p["policy"]["digest"]["sha256"], "ee".repeat(32));
        assert_eq!(p["resourceUri"], "oci://reg/manifests/shop@sha256:abcd");
        assert_eq!(p["inputAttestations"][0]["digest"]["gitCommit"], "1".repeat(40));
        assert_eq!(p["inputAttestations"][1]["uri"], "oci://reg/app@sha256:cafe");
        assert_eq!(p["inputAttestations"][1]["digest"]["sha256"], "cafe");
        assert_eq!(p["inputAttestations"][2]["uri"], "oci://localhost:5000/web@sha256:beef");
        assert_eq!(p["verificationResult"], "PASSED");
        assert_eq!(p["dependencyLevels"]["SLSA_BUILD_LEVEL_3"], 1);
        let fields: Vec<&String> = p.as_object().unwrap().keys().collect();
        let defined = [
            "verifier",
            "timeVerified",
            "resourceUri",
            "policy",
            "inputAttestations",
            "verificationResult",
            "verifiedLevels",
            "dependencyLevels",
            "slsaVersion",
        ];
        assert!(fields.iter().all(|f| defined.contains(&f.as_str())), "only the fields VSA v1 defines: {fields:?}");
    }

    #[test]
    fn an_attestations_unit_ignores_the_time_and_nothing_else() {
        let a = summary_statement(&summary());
        let later = summary_statement(&Summary { time_verified: "2026-11-23T00:00:00Z".into(), ..summary() });
        assert_eq!(unit(&a), unit(&later));
        let other_policy = summary_statement(&Summary { policy_sha256: "ff".repeat(32), ..summary() });
        assert_ne!(unit(&a), unit(&other_policy));
        let p = statement(&facts());
        let retried = statement(&Facts { finished_on: "2026-11-22T00:00:09Z".into(), ..facts() });
        assert_eq!(unit(&p), unit(&retried));
        assert_ne!(unit(&p), unit(&a));
        assert_eq!(unit(&json!({"predicateType": "other"})), None);
    }

    #[test]
    fn invocation_ids_are_stable_and_distinct() {
        let a = invocation_id("uid", &["r1".into()], 1, "sha256:x");
        assert_eq!(a, invocation_id("uid", &["r1".into()], 1, "sha256:x"));
        assert_ne!(a, invocation_id("uid", &["r1".into()], 2, "sha256:x"));
        assert_ne!(a, invocation_id("uid", &["r2".into()], 1, "sha256:x"));
    }
}
