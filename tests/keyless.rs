//! Keyless signing against the real Fulcio, whose OIDC issuer is the test kube-apiserver: a
//! ServiceAccount token with audience `sigstore` buys a certificate naming the ServiceAccount, which
//! chains to Fulcio's root, and a signature made with its key, logged in Rekor, verifies with the real
//! cosign for exactly that identity and issuer.

mod common;

use std::process::Command;

use common::*;
use sha2::{Digest, Sha256};
use weft::signing::keyless;

use common::service_account_token as token;

#[tokio::test]
async fn a_service_account_token_buys_a_certificate_for_that_identity_and_cosign_verifies_its_signature() {
    let client = client().await;
    let ns = namespace(&client, "keyless").await;
    let fulcio = peer("WEFT_TEST_FULCIO_URL");
    let issuer = peer("WEFT_TEST_OIDC_ISSUER");
    let certified = keyless::certify(&fulcio, &token(&ns, "weft-controller", "sigstore")).await.unwrap();
    let identity = format!("https://kubernetes.io/namespaces/{ns}/serviceaccounts/weft-controller");
    assert_eq!(certified.identity, identity);
    assert_eq!(certified.issuer, issuer);

    // The chain verifies against Fulcio's root (openssl).
    let dir = tempfile::tempdir().unwrap();
    let path = |f: &str| dir.path().join(f).to_str().unwrap().to_string();
    std::fs::write(path("leaf.pem"), &certified.chain[0]).unwrap();
    let (code, out, err) =
        run_cmd(Command::new("openssl").args(["verify", "-CAfile", &peer("WEFT_TEST_FULCIO_ROOT"), &path("leaf.pem")]));
    assert_eq!(code, 0, "openssl verify: {out}{err}");

    // A blob signed with the certified key and logged in Rekor (the certificate as the verifier).
    let blob = b"keyless blob";
    std::fs::write(path("blob"), blob).unwrap();
    let signature = certified.key.sign_base64(blob);
    let rekor = weft::provenance::rekor::Rekor::new(&peer("WEFT_TEST_REKOR_URL"));
    let hash = hex::encode(Sha256::digest(blob));
    let entry =
        rekor.upload(&weft::provenance::rekor::hashedrekord(&hash, &signature, &certified.chain[0])).await.unwrap();
    let log_key = weft::provenance::rekor::LogKey::from_pem(
        &std::fs::read_to_string(peer("WEFT_TEST_REKOR_PUBLIC_KEY")).unwrap(),
    )
    .unwrap();
    weft::provenance::rekor::verify_entry(&entry, &log_key, false).unwrap();
    // cosign's blob bundle: the signature, the certificate and the log's promise, checked offline.
    use base64::Engine;
    let rekor_bundle: serde_json::Value = serde_json::from_str(&entry.cosign_bundle()).unwrap();
    let bundle = serde_json::json!({"base64Signature": signature,
        "cert": base64::engine::general_purpose::STANDARD.encode(&certified.chain[0]), "rekorBundle": rekor_bundle});
    std::fs::write(path("blob.bundle"), bundle.to_string()).unwrap();

    // The real cosign: accepted for this identity and issuer, refused for another identity.
    let cosign = |identity: &str| {
        run_cmd(Command::new("cosign").env("SIGSTORE_REKOR_PUBLIC_KEY", peer("WEFT_TEST_REKOR_PUBLIC_KEY")).args([
            "verify-blob",
            "--certificate-chain",
            &peer("WEFT_TEST_FULCIO_ROOT"),
            "--bundle",
            &path("blob.bundle"),
            "--certificate-identity",
            identity,
            "--certificate-oidc-issuer",
            &issuer,
            "--insecure-ignore-sct",
            &path("blob"),
        ]))
    };
    let (code, out, err) = cosign(&identity);
    assert_eq!(code, 0, "cosign verify-blob: {out}{err}");
    let (code, _, _) = cosign(&format!("https://kubernetes.io/namespaces/{ns}/serviceaccounts/someone-else"));
    assert_ne!(code, 0, "another identity is refused");
}

#[tokio::test]
async fn a_token_for_another_audience_or_no_token_at_all_gets_no_certificate() {
    let client = client().await;
    let ns = namespace(&client, "keyless-refused").await;
    let fulcio = peer("WEFT_TEST_FULCIO_URL");
    let e = keyless::certify(&fulcio, &token(&ns, "weft-controller", "not-sigstore")).await.unwrap_err();
    assert_eq!(e.reason().as_str(), "FulcioRefused", "{e}");
    let e = keyless::certify(&fulcio, "not a token").await.unwrap_err();
    assert_eq!(e.reason().as_str(), "IdentityTokenInvalid", "{e}");
    let e = keyless::certify("http://127.0.0.1:1", &token(&ns, "weft-controller", "sigstore")).await.unwrap_err();
    assert!(e.reason().retryable() && e.reason().as_str() == "FulcioUnavailable", "{e}");
}

/// `weft run` with `manifestSigning.keyless`: no key anywhere. The manifests are signed with a key made
/// for the run and certified by Fulcio for the ServiceAccount; signature and provenance are logged with
/// the certificate, and cosign v2 and v3 accept both for exactly that identity and issuer.
#[tokio::test]
async fn weft_run_signs_and_attests_keylessly_and_cosign_verifies_the_identity() {
    use common::project::*;
    use serde_json::json;
    let client = client().await;
    let ns = namespace(&client, "keyless-run").await;
    let project = with_namespace(shop_files);
    std::fs::write(project.path("token"), token(&ns, "weft-controller", "sigstore")).unwrap();
    let repository = format!("{}/manifests/keyless-{}", peer("WEFT_TEST_REGISTRY_REFERRERS"), rand_suffix());
    let profile = project.keyless_profile(&repository, json!({}), json!({"fulcioURL": peer("WEFT_TEST_FULCIO_URL")}));
    let app = project.application(json!({}));

    // Without a token: a specific failure, nothing published.
    let (code, out, err) = project.run(&profile, &app, &["--identity-token", "no-such-token"]);
    assert_ne!(code, 0, "{out}");
    assert_eq!(out["steps"][2]["reason"], "IdentityTokenMissing", "{out:#}\n{err}");

    // A token for another identity than the profile expects: refused before anything is signed.
    let identity = format!("https://kubernetes.io/namespaces/{ns}/serviceaccounts/weft-controller");
    let issuer = peer("WEFT_TEST_OIDC_ISSUER");
    let expecting = |subject: &str| {
        project.keyless_profile(
            &repository,
            json!({}),
            json!({"fulcioURL": peer("WEFT_TEST_FULCIO_URL"), "identity": {"issuer": issuer, "subject": subject}}),
        )
    };
    let other = format!("https://kubernetes.io/namespaces/{ns}/serviceaccounts/someone-else");
    let (code, out, err) = project.run(&expecting(&other), &app, &["--identity-token", "token"]);
    assert_ne!(code, 0, "{out}");
    assert_eq!(out["steps"][2]["reason"], "KeylessIdentityMismatch", "{out:#}\n{err}");

    // Keyless with a Rekor v2 log needs timestamps Weft does not ask for yet: refused, nothing signed.
    let mut v2: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(expecting(&identity)).unwrap()).unwrap();
    v2["spec"]["provenance"]["rekor"]["version"] = json!(2);
    let v2_profile = project.path("profile-rekor-v2.json");
    std::fs::write(&v2_profile, v2.to_string()).unwrap();
    let (code, out, err) = project.run(&v2_profile, &app, &["--identity-token", "token"]);
    assert_ne!(code, 0, "{out}");
    assert_eq!(out["steps"][2]["reason"], "KeylessNeedsTimestamps", "{out:#}\n{err}");

    let profile = expecting(&identity);
    let (code, out, err) = project.run(&profile, &app, &["--identity-token", "token"]);
    assert_eq!(code, 0, "weft run keyless: {err}\n{out:#}");
    let image = out["manifestImage"].as_str().unwrap().to_string();
    assert!(out["provenance"]["logIndex"].is_i64(), "{out:#}");

    // A trusted root with the log and Fulcio's root.
    keyless_trusted_root(project.dir.path());

    for (name, bin) in cosigns() {
        let cosign = |args: &[&str], identity: &str| {
            cosign_keyless(&bin, project.dir.path(), args, identity, &issuer, "trusted_root.json", &image)
        };
        let (code, _, err) = cosign(&["verify"], &identity);
        assert_eq!(code, 0, "{name} verify keyless: {err}");
        let (code, _, err) = cosign(&["verify-attestation", "--type", "slsaprovenance1"], &identity);
        assert_eq!(code, 0, "{name} verify-attestation keyless: {err}");
        let (code, _, _) = cosign(&["verify"], &format!("https://kubernetes.io/namespaces/{ns}/serviceaccounts/other"));
        assert_ne!(code, 0, "{name}: another identity is refused");
    }

    // `weft provenance verify` re-checks the keyless evidence against the trusted root and the profile's
    // identity; without a trusted root it cannot, and says so; another identity in the profile fails.
    let dir = project.dir.path();
    write_provenance_record(dir, &image, &out["provenance"], &project.repo.url(), &project.repo.head());
    let (code, text, err) = reverify(dir, &profile, &["--trusted-root", "trusted_root.json"]);
    assert_eq!(code, 0, "weft provenance verify: {text}{err}");
    assert!(text.contains(&format!("keyless subject {identity}")) && !text.contains("FAIL"), "{text}");
    let (code, text, _) = reverify(dir, &profile, &[]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("needs --trusted-root"), "{text}");
    let (code, text, _) = reverify(dir, &expecting(&other), &["--trusted-root", "trusted_root.json"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("FAIL the manifest image carries a signature"), "{text}");
}

/// The controller signs keylessly with the token at the profile's `tokenPath` (where the chart mounts
/// the projected ServiceAccount token); the apiserver refuses a profile with both a key and keyless.
#[tokio::test]
async fn the_controller_signs_keylessly_with_the_token_the_profile_names() {
    use common::project::*;
    use serde_json::{Value, json};
    let client = client().await;
    let ns = namespace(&client, "keyless-controller").await;
    let project = with_namespace(shop_files);
    project.apply_resources(&client, &ns).await;
    let token_path = project.path("token");
    std::fs::write(&token_path, token(&ns, "weft-controller", "sigstore")).unwrap();
    let repository = format!("{}/manifests/keyless-{}", peer("WEFT_TEST_REGISTRY"), rand_suffix());
    let keyless = json!({"fulcioURL": peer("WEFT_TEST_FULCIO_URL"), "tokenPath": token_path});
    let path = project.keyless_profile(&repository, json!({}), keyless.clone());
    let mut profile: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    profile["metadata"] = json!({"name": "production"});

    let mut both = profile.clone();
    both["metadata"]["name"] = json!("both");
    both["spec"]["manifestSigning"]["key"] = json!({"secretRef": {"name": "signing"}});
    let obj: kube::api::DynamicObject = serde_json::from_value(both).unwrap();
    let refused = profiles(&client, &ns).create(&Default::default(), &obj).await.unwrap_err();
    assert!(refused.to_string().contains("exactly one of key"), "{refused}");

    create(&profiles(&client, &ns), profile).await;
    let mut app: Value =
        serde_json::from_str(&std::fs::read_to_string(project.application(json!({}))).unwrap()).unwrap();
    app["metadata"] = json!({"name": "shop-cart"});
    create(&applications(&client, &ns), app).await;
    let cache = project.path("controller-cache");
    let _controller = WeftProcess::start(&["controller", "--namespace", &ns, "--cache-dir", cache.to_str().unwrap()]);
    let ap = provenance_where(&client, &ns, "shop-cart", "keyless provenance", |v| {
        condition(v, "ProvenanceRecorded").is_some_and(|c| c["status"] == "True")
    })
    .await;
    let signed = condition(&ap, "ManifestsSigned").unwrap();
    assert_eq!(signed["status"], "True", "{signed}");
    let image = ap["status"]["manifestImage"].as_str().unwrap();
    // The legacy signature carries the certificate, which names the ServiceAccount.
    let sig_tag = format!("{repository}:{}.sig", image.split('@').nth(1).unwrap().replace(':', "-"));
    let (code, manifest, err) = run_cmd(Command::new("crane").args(["manifest", &sig_tag]));
    assert_eq!(code, 0, "{err}");
    let manifest: Value = serde_json::from_str(&manifest).unwrap();
    let leaf = manifest["layers"][0]["annotations"]["dev.sigstore.cosign/certificate"].as_str().unwrap();
    let (identity, issuer, _) = keyless::read_leaf(leaf).unwrap();
    assert_eq!(identity, format!("https://kubernetes.io/namespaces/{ns}/serviceaccounts/weft-controller"));
    assert_eq!(issuer, peer("WEFT_TEST_OIDC_ISSUER"));
}

/// Keyless signing into a Rekor v2 log: each signature is timestamped by the timestamp authority (the
/// v2 entry has no time of its own), and cosign v3 verifies the identity with a trusted root naming
/// Fulcio, the v2 log and the authority; so does `weft provenance verify`.
#[tokio::test]
async fn keyless_signing_into_rekor_v2_is_timestamped_and_cosign_v3_verifies_it() {
    use common::project::*;
    use serde_json::json;
    let client = client().await;
    let ns = namespace(&client, "keyless-v2").await;
    let project = with_namespace(shop_files);
    std::fs::write(project.path("token"), token(&ns, "weft-controller", "sigstore")).unwrap();
    let repository = format!("{}/manifests/keyless-v2-{}", peer("WEFT_TEST_REGISTRY_REFERRERS"), rand_suffix());
    let identity = format!("https://kubernetes.io/namespaces/{ns}/serviceaccounts/weft-controller");
    let issuer = peer("WEFT_TEST_OIDC_ISSUER");
    let keyless = json!({"fulcioURL": peer("WEFT_TEST_FULCIO_URL"), "identity": {"issuer": issuer, "subject": identity},
                         "timestampURL": peer("WEFT_TEST_TSA_URL")});
    let profile = project.keyless_profile(&repository, json!({}), keyless);
    project.use_rekor2(&profile);
    let app = project.application(json!({}));
    let (code, out, err) = project.run(&profile, &app, &["--identity-token", "token"]);
    assert_eq!(code, 0, "weft run keyless into Rekor v2: {err}\n{out:#}");
    let image = out["manifestImage"].as_str().unwrap().to_string();

    let root = peer("WEFT_TEST_TRUSTED_ROOT");
    let cosign3 = peer("WEFT_TEST_COSIGN3");
    let dir = project.dir.path();
    let cosign = |args: &[&str], identity: &str| cosign_keyless(&cosign3, dir, args, identity, &issuer, &root, &image);
    let (code, _, err) = cosign(&["verify"], &identity);
    assert_eq!(code, 0, "cosign v3 verify keyless, Rekor v2: {err}");
    let (code, _, err) = cosign(&["verify-attestation", "--type", "slsaprovenance1"], &identity);
    assert_eq!(code, 0, "cosign v3 verify-attestation keyless, Rekor v2: {err}");
    let (code, _, _) = cosign(&["verify"], &format!("https://kubernetes.io/namespaces/{ns}/serviceaccounts/other"));
    assert_ne!(code, 0, "another identity is refused");

    // Without the timestamp authority in the trusted root, nothing shows the certificate was valid.
    let mut untimed: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&root).unwrap()).unwrap();
    untimed["timestampAuthorities"] = json!([]);
    std::fs::write(project.path("untimed_root.json"), untimed.to_string()).unwrap();
    let (code, _, _) = cosign_keyless(&cosign3, dir, &["verify"], &identity, &issuer, "untimed_root.json", &image);
    assert_ne!(code, 0, "a root without the timestamp authority does not verify it");

    write_provenance_record(dir, &image, &out["provenance"], &project.repo.url(), &project.repo.head());
    let (code, text, err) = reverify(dir, &profile, &["--trusted-root", &root]);
    assert_eq!(code, 0, "weft provenance verify: {text}{err}");
    let (code, text, _) = reverify(dir, &profile, &["--trusted-root", "untimed_root.json"]);
    assert_eq!(code, 1, "{text}");
}
