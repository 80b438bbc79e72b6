//! The verdict for one image digest: every policy that covers the image must be satisfied, each by a
//! signature from one of its signers, logged in a transparency log the trust root names, and (with
//! `minSlsaLevel`) by SLSA provenance signed by one of those signers, from a builder trusted for that
//! level. Pure over what was fetched; the cryptography is sigstore-verify's.

use sigstore_verify::types::{Artifact, Sha256Hash, SignatureContent};
use sigstore_verify::{PublicKeyVerificationPolicy, VerificationPolicy};

use super::evidence::{Candidate, Evidence, Signed};
use super::policy::{ImagePolicies, Policy, Signer};
use super::reference::Digest;

use crate::reason::Reason;

pub const SLSA_V1: &str = "https://slsa.dev/provenance/v1";
pub const SLSA_V02: &str = "https://slsa.dev/provenance/v0.2";

/// What one digest earned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DigestVerdict {
    Verified { signer: String, slsa_level: Option<u8> },
    Failed { reason: Reason, message: String },
}

/// Checks `evidence` for `digest` against the policies that cover the image.
pub fn judge(policies: &ImagePolicies, covering: &[&Policy], digest: &Digest, evidence: &Evidence) -> DigestVerdict {
    let mut signers = Vec::new();
    let mut level: Option<u8> = None;
    for policy in covering {
        match satisfied_by(policies, policy, digest, &evidence.signatures) {
            Ok(signer) => signers.push(signer),
            Err(why) => {
                let found = match (evidence.signatures.len(), evidence.unreadable.len()) {
                    (0, 0) => "no signature found (no .sig tag and no signature bundle among the referrers)".into(),
                    (0, _) => format!("no readable signature ({})", evidence.unreadable.join("; ")),
                    (n, _) => format!("{n} signature(s) found, none from a signer of this policy: {why}"),
                };
                let reason =
                    if evidence.signatures.is_empty() { Reason::ImageNotSigned } else { Reason::NoTrustedSignature };
                return DigestVerdict::Failed { reason, message: format!("{}: {found}", policy.label) };
            }
        }
        if policy.min_slsa_level > 0 {
            let (got, why) = slsa_level(policies, policy, digest, &evidence.attestations);
            if got < policy.min_slsa_level {
                return DigestVerdict::Failed {
                    reason: Reason::SlsaLevelTooLow,
                    message: format!("{} requires SLSA build level {}; {why}", policy.label, policy.min_slsa_level),
                };
            }
            level = Some(level.map_or(got, |l| l.min(got)));
        }
    }
    signers.dedup();
    DigestVerdict::Verified { signer: signers.join(", "), slsa_level: level }
}

/// The first signer of `policy` that verifies one of the candidates; or why none did.
fn satisfied_by(
    policies: &ImagePolicies,
    policy: &Policy,
    digest: &Digest,
    candidates: &[Candidate],
) -> Result<String, String> {
    let mut why = Vec::new();
    for c in candidates {
        for signer in &policy.signers {
            match check(policies, signer, digest, c) {
                Ok(()) => return Ok(signer.describe()),
                Err(e) => why.push(format!("{} with {}: {e}", c.origin, signer.describe())),
            }
        }
    }
    why.truncate(3);
    Err(why.join("; "))
}

/// Does `signer` vouch for `candidate`, over this digest, with a verified transparency log entry?
pub fn check(policies: &ImagePolicies, signer: &Signer, digest: &Digest, c: &Candidate) -> Result<(), String> {
    // sigstore-verify accepts a bundle with only a signed timestamp; Weft requires the log (fail closed),
    // unless the profile says a key's signatures count without one.
    if c.bundle.verification_material.tlog_entries.is_empty() {
        return match signer {
            Signer::Key { key, ignore_tlog: true, .. } => unlogged(key, c),
            _ => Err("no transparency log entry".into()),
        };
    }
    let hash = Sha256Hash::from_hex(digest.hex()).map_err(|e| e.to_string())?;
    let artifact: Artifact<'_> = match &c.signed {
        Signed::Payload(bytes) => Artifact::from_blob(bytes),
        Signed::ImageDigest => Artifact::from_digest(hash),
    };
    match signer {
        Signer::Key { key, ignore_tlog, .. } => {
            let policy = PublicKeyVerificationPolicy::new(key.clone());
            let logged = policies.verifier.verify(artifact, &c.bundle, &policy).map(|_| ()).map_err(|e| e.to_string());
            match logged {
                // A log the trust root does not name is no log at all to a signer that needs none.
                Err(e) if *ignore_tlog => unlogged(key, c).map_err(|u| format!("{e}; without the log: {u}")),
                other => other,
            }
        }
        Signer::Keyless { .. } => {
            let mut policy = VerificationPolicy::any_identity();
            if !policies.has_ct_logs {
                policy = policy.skip_sct();
            }
            let result = policies.verifier.verify(artifact, &c.bundle, &policy).map_err(|e| e.to_string())?;
            if signer.accepts_identity(result.identity(), result.issuer()) {
                Ok(())
            } else {
                Err(format!(
                    "certificate identity {} issuer {} does not match",
                    result.identity().map(|s| s.as_str()).unwrap_or("(none)"),
                    result.issuer().unwrap_or("(none)")
                ))
            }
        }
    }
}

/// A simple-signing signature without a log entry, checked against the key alone (ECDSA P-256, cosign's
/// keys). The payload naming this digest was checked when the candidate was read.
fn unlogged(key: &sigstore_verify::types::DerPublicKey, c: &Candidate) -> Result<(), String> {
    use p256::ecdsa::signature::Verifier as _;
    use p256::pkcs8::DecodePublicKey;
    let (Signed::Payload(payload), SignatureContent::MessageSignature(m)) = (&c.signed, &c.bundle.content) else {
        return Err("no transparency log entry (ignoreTlog covers signatures, not attestations)".into());
    };
    let key = p256::ecdsa::VerifyingKey::from_public_key_der(key.as_bytes())
        .map_err(|_| "ignoreTlog checks ECDSA P-256 keys (cosign's) only".to_string())?;
    let signature = p256::ecdsa::Signature::from_der(m.signature.as_bytes())
        .map_err(|e| format!("the signature is not DER ECDSA: {e}"))?;
    key.verify(payload, &signature).map_err(|_| "the signature does not verify with the key".to_string())
}

/// The highest SLSA build level that verified provenance proves, and what was seen.
fn slsa_level(policies: &ImagePolicies, policy: &Policy, digest: &Digest, attestations: &[Candidate]) -> (u8, String) {
    let mut best = 0;
    let mut seen = Vec::new();
    for c in attestations {
        let Some(statement) = c.statement() else { continue };
        let builder = match statement["predicateType"].as_str() {
            Some(SLSA_V1) => statement["predicate"]["runDetails"]["builder"]["id"].as_str(),
            Some(SLSA_V02) => statement["predicate"]["builder"]["id"].as_str(),
            _ => continue,
        };
        let Some(builder) = builder else {
            seen.push(format!("{}: provenance without a builder id", c.origin));
            continue;
        };
        if !policy.signers.iter().any(|s| check(policies, s, digest, c).is_ok()) {
            seen.push(format!("{}: provenance from {builder} not signed by a signer of this policy", c.origin));
            continue;
        }
        let level = policies.builder_level(builder);
        seen.push(format!("provenance from builder {builder} proves level {level}"));
        best = best.max(level);
    }
    if seen.is_empty() {
        seen.push("no SLSA provenance attestation found".into());
    }
    (best, seen.join("; "))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::images::evidence::legacy;
    use crate::oci::Blob;
    use crate::referenced::ReferencedObjects;
    use crate::resources::profile::ImageVerification;
    use crate::signing::key::SigningKey;

    fn policies(pem: &str, ignore_tlog: bool) -> ImagePolicies {
        let pem: String = pem.lines().map(|l| format!("    {l}\n")).collect();
        let doc = format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: keys}}\ndata:\n  cosign.pub: |\n{pem}");
        let iv: ImageVerification = serde_json::from_value(serde_json::json!({"policies": [{
            "images": ["**"],
            "signers": [{"key": {"configMapRef": {"name": "keys", "key": "cosign.pub"}}, "ignoreTlog": ignore_tlog}],
        }]}))
        .unwrap();
        ImagePolicies::compile(&iv, &ReferencedObjects::from_yaml(&doc).unwrap()).unwrap()
    }

    fn signature(key: &SigningKey, digest: &Digest) -> Blob {
        let payload =
            crate::oci::simple_signing_payload("registry.example/shop/cart", digest.as_str(), &BTreeMap::new());
        crate::oci::signature_layer(payload.clone(), &key.sign_base64(&payload), None)
    }

    #[test]
    fn a_signature_without_a_log_entry_counts_only_for_a_key_whose_policy_ignores_the_log() {
        let key = SigningKey::generate().unwrap();
        let digest = Digest::of(b"image");
        let unlogged = legacy(&signature(&key, &digest), &digest, "sig".into()).unwrap();

        let strict = policies(&key.public_pem(), false);
        let signer = &strict.policies[0].signers[0];
        assert_eq!(check(&strict, signer, &digest, &unlogged).unwrap_err(), "no transparency log entry");

        let lenient = policies(&key.public_pem(), true);
        let signer = &lenient.policies[0].signers[0];
        check(&lenient, signer, &digest, &unlogged).unwrap();
        assert!(signer.describe().contains("ignoreTlog"), "the verdict says so: {}", signer.describe());
        assert_ne!(strict.fingerprint, lenient.fingerprint, "no verdict cached under one holds for the other");

        // Another key's signature, a payload changed after signing, a signature copied from another image.
        let other = legacy(&signature(&SigningKey::generate().unwrap(), &digest), &digest, "sig".into()).unwrap();
        assert!(check(&lenient, signer, &digest, &other).unwrap_err().contains("does not verify"));
        let mut changed = signature(&key, &digest);
        changed.bytes = String::from_utf8(changed.bytes).unwrap().replace("cart", "cort").into_bytes();
        let changed = legacy(&changed, &digest, "sig".into()).unwrap();
        assert!(check(&lenient, signer, &digest, &changed).is_err());
        assert!(legacy(&signature(&key, &Digest::of(b"other")), &digest, "sig".into()).is_err());
    }
}
