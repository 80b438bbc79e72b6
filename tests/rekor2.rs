//! Weft's Rekor v2 client against the real rekor-tiles of the test environment: entries are added,
//! verified, added again without a second entry, and the bundle made from them is what cosign v3 accepts
//! (and refuses once tampered with).
mod common;

use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::{peer, run_cmd};
use p256::ecdsa::signature::Signer;
use p256::pkcs8::EncodePublicKey;
use serde_json::Value;
use sha2::{Digest, Sha256};
use weft::bundle::message_signature_bundle;
use weft::provenance::rekor2::{CheckpointKey, Entry2, HashedRekord2, Rekor2, Rekor2Error, Verifier, verify_entry2};

struct Log {
    url: String,
    read_url: String,
    key: CheckpointKey,
    origin: String,
}

fn log() -> Log {
    let pem = std::fs::read_to_string(peer("WEFT_TEST_REKOR2_PUBLIC_KEY")).unwrap();
    Log {
        url: peer("WEFT_TEST_REKOR2_URL"),
        read_url: peer("WEFT_TEST_REKOR2_READ_URL"),
        key: CheckpointKey::from_pem(&pem).unwrap(),
        origin: peer("WEFT_TEST_REKOR2_ORIGIN"),
    }
}

/// A fresh P-256 key and its signature over `blob`, as a hashedrekord.
fn signed(blob: &[u8]) -> (HashedRekord2, String) {
    let key = p256::ecdsa::SigningKey::from_slice(&rand::random::<[u8; 32]>()).unwrap();
    let sig: p256::ecdsa::DerSignature = key.sign(blob);
    let public = key.verifying_key().to_public_key_der().unwrap();
    let pem = key.verifying_key().to_public_key_pem(p256::pkcs8::LineEnding::LF).unwrap();
    let rekord = HashedRekord2 {
        digest: Sha256::digest(blob).into(),
        signature: sig.as_bytes().to_vec(),
        verifier: Verifier::PublicKey(public.as_bytes().to_vec()),
    };
    (rekord, pem)
}

async fn add(client: &Rekor2, r: &HashedRekord2) -> Result<Entry2, Rekor2Error> {
    client.add_hashedrekord(&r.digest, &r.signature, r.verifier.clone()).await
}

/// cosign v3's `verify-blob` of `blob` with `bundle`, the key and the environment's trusted root.
fn cosign_verify(dir: &std::path::Path, name: &str, bundle: &Value) -> (i32, String) {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec(bundle).unwrap()).unwrap();
    let (code, out, err) = run_cmd(
        Command::new(peer("WEFT_TEST_COSIGN3"))
            .args(["verify-blob", "--bundle"])
            .arg(&path)
            .arg("--key")
            .arg(dir.join("pub.pem"))
            .args(["--trusted-root", &peer("WEFT_TEST_TRUSTED_ROOT")])
            .arg(dir.join("blob")),
    );
    (code, format!("{out}{err}"))
}

#[tokio::test]
async fn entries_are_logged_verified_idempotent_and_accepted_by_cosign() {
    let log = log();
    let client = Rekor2::new(&log.url).with_reads(&log.read_url, log.key.clone(), &log.origin);
    let blob = format!("weft rekor v2 test {}", hex::encode(rand::random::<[u8; 16]>()));
    let (rekord, pem) = signed(blob.as_bytes());

    let entry = add(&client, &rekord).await.expect("add the entry");
    assert_eq!((entry.kind.as_str(), entry.version.as_str()), ("hashedrekord", "0.0.2"));
    let cp = verify_entry2(&entry, &log.key, &log.origin, &rekord).expect("the entry verifies");
    assert!(cp.size > entry.log_index);

    // Others' entries grow the tree past it.
    for _ in 0..3 {
        let (other, _) = signed(blob.as_bytes());
        add(&client, &other).await.expect("add another entry");
    }

    // The same entry again: the log keeps one, and the client gives it back with a proof against the
    // newest checkpoint, rebuilt from the log's tiles.
    let again = add(&client, &rekord).await.expect("add the entry again");
    assert_eq!(again.log_index, entry.log_index, "no second entry");
    assert_eq!(again.body, entry.body);
    assert_eq!(again.log_id, entry.log_id);
    assert!(again.proof.tree_size >= entry.proof.tree_size + 3, "a proof in the grown tree");
    verify_entry2(&again, &log.key, &log.origin, &rekord).expect("the recovered entry verifies");
    // Without the read side the client can only say where the entry is.
    match add(&Rekor2::new(&log.url), &rekord).await {
        Err(Rekor2Error::Duplicate { index, .. }) => assert_eq!(index, entry.log_index),
        other => panic!("expected a duplicate, got {other:?}"),
    }

    // A signature that does not match the digest is refused for good.
    let mut wrong = rekord.clone();
    wrong.digest = Sha256::digest(b"something else").into();
    match add(&client, &wrong).await {
        Err(e @ Rekor2Error::Rejected { status: 400, .. }) => assert!(!e.reason().retryable()),
        other => panic!("expected a rejection, got {other:?}"),
    }

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("blob"), &blob).unwrap();
    std::fs::write(dir.path().join("pub.pem"), &pem).unwrap();
    for (name, e) in [("first.json", &entry), ("again.json", &again)] {
        let (code, out) = cosign_verify(dir.path(), name, &message_signature_bundle(&rekord, e));
        assert_eq!(code, 0, "cosign v3 accepts the bundle ({name}): {out}");
    }

    // Tampered entries: a proof for another index, a checkpoint whose signature is not the log's, and a
    // proof with a wrong hash.
    let mut other_index = entry.clone();
    other_index.log_index += 1;
    other_index.proof.log_index += 1;
    let mut forged = entry.clone();
    let (text, sig) = forged.proof.checkpoint.rsplit_once(' ').unwrap();
    let mut raw = B64.decode(sig.trim()).unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 1;
    forged.proof.checkpoint = format!("{text} {}\n", B64.encode(raw));
    let mut path = again.clone();
    path.proof.hashes[0][0] ^= 1;
    for (name, tampered) in [("index.json", other_index), ("checkpoint.json", forged), ("path.json", path)] {
        assert!(verify_entry2(&tampered, &log.key, &log.origin, &rekord).is_err(), "Weft refuses {name}");
        let (code, out) = cosign_verify(dir.path(), name, &message_signature_bundle(&rekord, &tampered));
        assert_ne!(code, 0, "cosign v3 refuses {name}: {out}");
        eprintln!("cosign v3 refuses {name}: {}", out.trim());
    }
    // A body that is not what was signed: Weft refuses it. (cosign rebuilds the body from the bundle and
    // never reads the log's copy, so only the proof and checkpoint are tampered with above.)
    let mut body = entry.clone();
    body.body = HashedRekord2 { digest: Sha256::digest(b"x").into(), ..rekord.clone() }.canonical_body();
    assert!(verify_entry2(&body, &log.key, &log.origin, &rekord).is_err());
    // And the log's entry does not verify for another signer's rekord.
    let (stranger, _) = signed(blob.as_bytes());
    assert!(verify_entry2(&entry, &log.key, &log.origin, &stranger).is_err());
}
