//! Image verification against the real registry, with images signed and attested by the real cosign
//! and logged in the real Rekor: key signatures, keyless-style signatures from a certificate authority
//! the test creates (named in a `trusted_root.json`), referrer bundles, SLSA levels, a moved tag, a
//! registry that is down, and the controller's strict and permissive outcomes.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::images::*;
use common::project::*;
use common::*;
use serde_json::{Value, json};
use weft::images::ImageVerifier;
use weft::resources::provenance::ImageOutcome;

fn outcome(v: &Value) -> (&str, &str) {
    (v["outcome"].as_str().unwrap(), v["reason"].as_str().unwrap())
}

#[test]
fn cosign_signatures_verify_for_their_own_signer_only() {
    let lab = Lab::new();
    let by_key = lab.image("lab/by-key", "1");
    lab.sign("k", &by_key);
    let by_cert = lab.image("lab/by-cert", "1");
    lab.sign_with_certificate(&by_cert);
    let unsigned = lab.image("lab/unsigned", "1");
    let in_bundle = lab.image("lab/in-bundle", "1");
    lab.cosign(&[
        "sign",
        "--new-bundle-format",
        "--key",
        "k.key",
        "--rekor-url",
        &peer("WEFT_TEST_REKOR_URL"),
        "--tlog-upload=true",
        "-y",
        &Lab::pinned(&in_bundle),
    ]);

    let with_key = lab.profile(lab.image_verification(key("keys"), json!({})));
    let pinned = Lab::pinned(&by_key);
    let (code, results) = lab.verify(&with_key, &[&by_key, &by_cert, &unsigned, &in_bundle, &pinned]);
    assert_eq!(code, 1);
    let got: Vec<(&str, &str)> = results.iter().map(outcome).collect();
    assert_eq!(
        got,
        [
            ("Verified", "Verified"),
            ("Failed", "NoTrustedSignature"),
            ("Failed", "ImageNotSigned"),
            ("Verified", "Verified"),
            ("Verified", "Verified"),
        ],
        "{results:#?}"
    );
    assert_eq!(results[0]["digest"], Lab::digest_of(&by_key));
    assert!(results[0]["signer"].as_str().unwrap().contains("ConfigMap keys"), "{}", results[0]);
    assert!(results[1]["message"].as_str().unwrap().contains("certificate"), "{}", results[1]);
    let (code, _) = lab.verify(&with_key, &[&by_key, &in_bundle]);
    assert_eq!(code, 0, "every image verified");

    // The real cosign agrees on the same images and keys.
    let cosign_verify = |key: &str, image: &str| {
        run_cmd(
            Command::new("cosign")
                .current_dir(lab.dir.path())
                .env("SIGSTORE_REKOR_PUBLIC_KEY", peer("WEFT_TEST_REKOR_PUBLIC_KEY"))
                .args(["verify", "--key", key, image]),
        )
        .0
    };
    assert_eq!(cosign_verify("k.pub", &by_key), 0);
    assert_ne!(cosign_verify("other.pub", &by_key), 0);

    let wrong_key = lab.profile(lab.image_verification(key("other-keys"), json!({})));
    let (_, results) = lab.verify(&wrong_key, &[&by_key]);
    assert_eq!(outcome(&results[0]), ("Failed", "NoTrustedSignature"), "{results:#?}");

    let identity = lab.profile(
        lab.image_verification(keyless(ISSUER, json!({"subjectRegExp": "^https://ci\\.example/shop/"})), json!({})),
    );
    let (_, results) = lab.verify(&identity, &[&by_cert, &by_key]);
    assert_eq!(outcome(&results[0]), ("Verified", "Verified"), "{results:#?}");
    assert!(results[0]["signer"].as_str().unwrap().contains(ISSUER), "{}", results[0]);
    assert_eq!(outcome(&results[1]), ("Failed", "NoTrustedSignature"), "a key signature is not a certificate identity");

    let other_subject = json!({"subject": "https://ci.example/other/build@refs/heads/main"});
    for wrong in [keyless(ISSUER, other_subject), keyless("https://issuer.example.evil", json!({"subject": SUBJECT}))] {
        let p = lab.profile(lab.image_verification(wrong.clone(), json!({})));
        let (_, results) = lab.verify(&p, &[&by_cert]);
        assert_eq!(outcome(&results[0]), ("Failed", "NoTrustedSignature"), "{wrong}: {results:#?}");
        assert!(results[0]["message"].as_str().unwrap().contains("does not match"), "{}", results[0]);
    }

    let elsewhere = lab
        .profile(json!({"trustedRoot": {"configMapRef": {"name": "sigstore", "key": "trusted_root.json"}},
        "policies": [{"images": ["registry.example.com/**"], "signers": [key("keys")]}]}));
    let (_, results) = lab.verify(&elsewhere, &[&by_key]);
    assert_eq!(outcome(&results[0]), ("Failed", "NoImagePolicy"), "an image no policy covers fails");
}

#[test]
fn slsa_provenance_must_reach_the_required_level_from_a_trusted_builder() {
    let lab = Lab::new();
    let legacy = lab.image("lab/attested", "1");
    lab.sign("k", &legacy);
    lab.attest("k", &legacy, false);
    let bundled = lab.image("lab/attested-bundle", "1");
    lab.sign("k", &bundled);
    lab.attest("k", &bundled, true);
    let bare = lab.image("lab/not-attested", "1");
    lab.sign("k", &bare);
    let foreign = lab.image("lab/attested-by-other", "1");
    lab.sign("k", &foreign);
    lab.attest("other", &foreign, false);

    let builders = |level: i32| {
        lab.profile(json!({
            "trustedRoot": {"configMapRef": {"name": "sigstore", "key": "trusted_root.json"}},
            "trustedBuilders": [{"id": BUILDER, "level": level}],
            "policies": [{"images": [format!("{}/**", lab.registry)], "signers": [key("keys")], "minSlsaLevel": 2}],
        }))
    };
    let (code, results) = lab.verify(&builders(3), &[&legacy, &bundled, &bare, &foreign]);
    assert_eq!(code, 1);
    for r in &results[..2] {
        assert_eq!(outcome(r), ("Verified", "Verified"), "{results:#?}");
        assert_eq!(r["slsaLevel"], 3);
    }
    assert_eq!(outcome(&results[2]), ("Failed", "SlsaLevelTooLow"));
    assert!(results[2]["message"].as_str().unwrap().contains("no SLSA provenance"), "{}", results[2]);
    assert_eq!(outcome(&results[3]), ("Failed", "SlsaLevelTooLow"));
    assert!(
        results[3]["message"].as_str().unwrap().contains("not signed by a signer of this policy"),
        "{}",
        results[3]
    );

    let (_, results) = lab.verify(&builders(1), &[&legacy]);
    assert_eq!(outcome(&results[0]), ("Failed", "SlsaLevelTooLow"), "{results:#?}");
    assert!(results[0]["message"].as_str().unwrap().contains("proves level 1"), "{}", results[0]);
}

#[tokio::test]
async fn a_tag_moved_after_verification_is_caught() {
    let lab = Lab::new();
    let stable = lab.image("lab/moving", "stable");
    lab.sign("k", &stable);
    let first = Lab::digest_of(&stable);
    let policies = lab.policies(lab.image_verification(key("keys"), json!({})));
    let verifier = ImageVerifier::default();
    let images = [(stable.clone(), vec!["test".to_string()])];
    let before = verifier.verify(&policies, &images).await;
    assert_eq!((before[0].outcome, before[0].digest.as_deref()), (ImageOutcome::Verified, Some(first.as_str())));

    lab.image("lab/moving", "stable"); // the same tag, now an unsigned image
    let after = verifier.verify(&policies, &images).await;
    assert_eq!((after[0].outcome, after[0].reason.as_str()), (ImageOutcome::Failed, "ImageNotSigned"), "{after:?}");
    assert_ne!(after[0].digest.as_deref(), Some(first.as_str()), "the tag is resolved again, not taken from the cache");
}

#[tokio::test]
async fn a_digest_verified_under_one_repositorys_policy_is_not_taken_as_verified_in_another() {
    let lab = Lab::new();
    let dev = lab.image("lab/dev/app", "1");
    lab.sign("k", &dev);
    // The same image (same digest) in a repository a stricter policy governs, not signed there.
    let prod = format!("{}/lab/prod/app:1", lab.registry);
    let (code, _, err) = run_cmd(Command::new("crane").args(["copy", &dev, &prod]));
    assert_eq!(code, 0, "crane copy: {err}");
    assert_eq!(Lab::digest_of(&dev), Lab::digest_of(&prod));
    let mut iv = lab.image_verification(key("keys"), json!({"images": [format!("{}/lab/dev/**", lab.registry)]}));
    iv["policies"]
        .as_array_mut()
        .unwrap()
        .push(json!({"images": [format!("{}/lab/prod/**", lab.registry)], "signers": [key("other-keys")]}));
    let policies = lab.policies(iv);
    let verifier = ImageVerifier::default();
    let first = verifier.verify(&policies, &[(dev.clone(), vec!["dev".to_string()])]).await;
    assert_eq!(first[0].outcome, ImageOutcome::Verified, "{first:?}");
    for reference in [prod.clone(), Lab::pinned(&prod)] {
        let second = verifier.verify(&policies, &[(reference.clone(), vec!["prod".to_string()])]).await;
        assert_eq!(second[0].outcome, ImageOutcome::Failed, "{reference}: {second:?}");
        assert_eq!(second[0].reason, "ImageNotSigned", "{reference}: {second:?}");
    }
}

#[tokio::test]
async fn a_registry_that_is_down_is_pending_and_retried() {
    let lab = Lab::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let registry = format!("127.0.0.1:{port}");
    let image = format!("{registry}/lab/later:1");
    let policies = lab
        .policies(json!({"trustedRoot": {"configMapRef": {"name": "sigstore", "key": "trusted_root.json"}},
        "policies": [{"images": ["127.0.0.1:*/**"], "signers": [key("keys")]}]}));
    let verifier = ImageVerifier::default();
    let images = [(image.clone(), vec!["test".to_string()])];
    let down = verifier.verify(&policies, &images).await;
    assert_eq!((down[0].outcome, down[0].reason.as_str()), (ImageOutcome::Pending, "RegistryUnavailable"), "{down:?}");
    let report = weft::images::report(policies.enforcement, &down);
    assert_eq!(report.state, weft::status::StepState::Pending, "{}", report.message);
    assert!(report.message.contains(&image), "{}", report.message);

    // The registry comes up; the same verifier (nothing cached for a registry that was down) verifies.
    let (code, dir, err) = run_cmd(Command::new("tests/env/peers.sh").args(["path", "referrers-registry"]));
    assert_eq!(code, 0, "{err}");
    let data = lab.path("registry-data");
    std::fs::create_dir_all(&data).unwrap();
    let mut server = std::process::Command::new(PathBuf::from(dir.trim()).join("referrers-registry"))
        .args(["--address", &registry, "--disk"])
        .arg(&data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let up = eventually("the registry", Duration::from_secs(30), || {
        let url = format!("http://{registry}/v2/");
        async move { reqwest::get(&url).await.map(|_| ()).map_err(|e| e.to_string()) }
    });
    up.await;
    lab.image_at(&registry, "lab/later", "1");
    lab.sign("k", &image);
    let back = verifier.verify(&policies, &images).await;
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(back[0].outcome, ImageOutcome::Verified, "{back:?}");
}

#[tokio::test]
async fn strict_refuses_to_sign_and_permissive_signs_with_a_warning_and_the_cli_agrees() {
    let lab = Lab::new();
    let web = lab.image("lab/web", "1.0");
    lab.sign("k", &web);
    let sidecar = lab.image("lab/sidecar", "1.0");
    let project = with_namespace(|ns| {
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "cart", "namespace": ns},
            "spec": {"selector": {"matchLabels": {"app": "cart"}}, "template": {"metadata": {"labels": {"app": "cart"}},
                "spec": {"containers": [{"name": "web", "image": web}, {"name": "proxy", "image": sidecar}]}}}});
        vec![("deployment.yaml".to_string(), deployment.to_string())]
    });
    let client = client().await;
    let ns = namespace(&client, "images").await;
    project.apply_resources(&client, &ns).await;
    apply_documents(&client, &ns, &std::fs::read_to_string(lab.path("resources.yaml")).unwrap()).await;
    let repository = format!("{}/manifests/images-{}", peer("WEFT_TEST_REGISTRY"), rand_suffix());
    let mut iv = lab.image_verification(key("keys"), json!({}));
    iv["enforcement"] = json!("permissive");
    let path = project.profile(&repository, true, json!({"imageVerification": iv}));
    let mut profile: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    profile["metadata"] = json!({"name": "production"});
    create(&profiles(&client, &ns), profile).await;
    let app = |name: &str, annotations: Value| {
        let mut app: Value =
            serde_json::from_str(&std::fs::read_to_string(project.application(json!({}))).unwrap()).unwrap();
        app["metadata"] = json!({"name": name, "annotations": annotations});
        app
    };
    create(&applications(&client, &ns), app("permissive", json!({}))).await;
    let strict = json!({"weft.dev/image-verification": "{\"enforcement\": \"strict\"}"});
    create(&applications(&client, &ns), app("strict", strict)).await;
    let cache = project.path("controller-cache");
    let _weft = WeftProcess::start(&["controller", "--namespace", &ns, "--cache-dir", cache.to_str().unwrap()]);

    let ap = provenance_where(&client, &ns, "strict", "strict refuses", |v| {
        condition(v, "ImagesVerified").is_some_and(|c| c["reason"] == "ImageNotSigned")
            && condition(v, "ManifestsSigned").is_some_and(|c| c["reason"] == "Blocked")
    })
    .await;
    let images = condition(&ap, "ImagesVerified").unwrap();
    assert_eq!(images["status"], "False");
    assert!(images["message"].as_str().unwrap().contains(&sidecar), "names the image: {images}");
    assert_eq!(ap["status"]["verdict"], "Failed");
    assert!(ap["status"].get("manifestImage").is_none(), "nothing signed: {}", ap["status"]);
    let recorded: Vec<(&str, &str)> = ap["status"]["images"].as_array().unwrap().iter().map(outcome).collect();
    assert_eq!(recorded, [("Verified", "Verified"), ("Failed", "ImageNotSigned")], "{}", ap["status"]);
    assert_eq!(ap["status"]["images"][0]["digest"], Lab::digest_of(&web));

    let ap =
        provenance_where(&client, &ns, "permissive", "permissive signs", |v| v["status"]["verdict"] == "Permitted")
            .await;
    let images = condition(&ap, "ImagesVerified").unwrap();
    assert_eq!(
        (images["status"].as_str(), images["reason"].as_str()),
        (Some("False"), Some("UnverifiedImagesPermitted"))
    );
    assert_eq!(condition(&ap, "ManifestsSigned").unwrap()["status"], "True");
    assert!(ap["status"]["manifestImage"].as_str().unwrap().starts_with(&repository), "{}", ap["status"]);

    let events: kube::Api<k8s_openapi::api::events::v1::Event> = kube::Api::namespaced(client.clone(), &ns);
    let seen = eventually("warning Events", Duration::from_secs(30), || {
        let events = events.clone();
        async move {
            let list = events.list(&Default::default()).await.map_err(|e| e.to_string())?;
            let seen: Vec<(String, String, String)> = list
                .items
                .iter()
                .map(|e| {
                    let about = e.regarding.as_ref().and_then(|r| r.name.clone()).unwrap_or_default();
                    (about, e.reason.clone().unwrap_or_default(), e.type_.clone().unwrap_or_default())
                })
                .collect();
            if seen.len() >= 2 { Ok(seen) } else { Err(format!("{seen:?}")) }
        }
    })
    .await;
    assert!(seen.contains(&("strict".into(), "ImageNotSigned".into(), "Warning".into())), "{seen:?}");
    assert!(seen.contains(&("permissive".into(), "UnverifiedImagesPermitted".into(), "Warning".into())), "{seen:?}");

    // The CLI, on the same manifests and profile, says the same.
    let (code, out, err) = run_cmd(
        Command::new(env!("CARGO_BIN_EXE_weft"))
            .args(["verify-images", "--output", "json", "--resources"])
            .arg(lab.path("resources.yaml"))
            .arg("--profile")
            .arg(lab.profile(lab.image_verification(key("keys"), json!({}))))
            .arg("--manifests")
            .arg(project.repo.path()),
    );
    assert_eq!(code, 1, "{err}");
    let cli: Value = serde_json::from_str(&out).unwrap();
    let cli_images: Vec<(&str, &str)> = cli["images"].as_array().unwrap().iter().map(outcome).collect();
    assert_eq!(cli_images, recorded);
}

/// An Application whose manifests run more distinct images than Weft records is refused whole, with the
/// count, before any registry is asked: never a silently shortened list the webhook would admit from.
#[tokio::test]
async fn more_images_than_weft_records_is_a_failed_verdict_that_says_so() {
    let lab = Lab::new();
    let count = weft::pipeline::MAX_IMAGES + 1;
    let project = with_namespace(|ns| {
        let containers: Vec<Value> = (0..count)
            .map(|i| json!({"name": format!("c{i}"), "image": format!("{}/lab/c{i}:1.0", lab.registry)}))
            .collect();
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "many", "namespace": ns},
            "spec": {"selector": {"matchLabels": {"app": "many"}}, "template": {"metadata": {"labels": {"app": "many"}},
                "spec": {"containers": containers}}}});
        vec![("deployment.yaml".to_string(), deployment.to_string())]
    });
    let client = client().await;
    let ns = namespace(&client, "images-many").await;
    project.apply_resources(&client, &ns).await;
    apply_documents(&client, &ns, &std::fs::read_to_string(lab.path("resources.yaml")).unwrap()).await;
    let repository = format!("{}/manifests/images-{}", peer("WEFT_TEST_REGISTRY"), rand_suffix());
    let iv = lab.image_verification(key("keys"), json!({}));
    let path = project.profile(&repository, true, json!({"imageVerification": iv}));
    let mut profile: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    profile["metadata"] = json!({"name": "production"});
    create(&profiles(&client, &ns), profile).await;
    let mut app: Value =
        serde_json::from_str(&std::fs::read_to_string(project.application(json!({}))).unwrap()).unwrap();
    app["metadata"] = json!({"name": "many"});
    create(&applications(&client, &ns), app).await;
    let cache = project.path("controller-cache");
    let _weft = WeftProcess::start(&["controller", "--namespace", &ns, "--cache-dir", cache.to_str().unwrap()]);

    let ap = provenance_where(&client, &ns, "many", "refused", |v| condition(v, "ImagesVerified").is_some()).await;
    let images = condition(&ap, "ImagesVerified").unwrap();
    assert_eq!((images["status"].as_str(), images["reason"].as_str()), (Some("False"), Some("TooManyImages")));
    assert!(images["message"].as_str().unwrap().contains(&format!("{count} distinct images")), "{images}");
    assert_eq!(ap["status"]["verdict"], "Failed");
    assert!(ap["status"].get("images").is_none(), "nothing listed: {}", ap["status"]);
    assert!(ap["status"].get("manifestImage").is_none(), "nothing signed");
}

/// Images signed and attested with cosign v3's defaults (Sigstore bundles as referrers, a signing config
/// naming the log) verify: logged in a Rekor v1 log, and in a Rekor v2 log (its entries proven by an
/// inclusion proof and a signed checkpoint, no signed entry timestamp). The trusted root names both logs.
#[test]
fn images_signed_and_attested_with_cosign_v3_defaults_verify_in_rekor_v1_and_v2() {
    let lab = Lab::new();
    // A signing config naming the Rekor v1 log (cosign v3 reaches a log only through one).
    let config = json!({"mediaType": "application/vnd.dev.sigstore.signingconfig.v0.2+json",
        "caUrls": [], "oidcUrls": [], "tsaUrls": [],
        "rekorTlogUrls": [{"url": peer("WEFT_TEST_REKOR_URL"), "majorApiVersion": 1,
            "validFor": {"start": "2020-01-01T00:00:00Z"}, "operator": "weft-test"}],
        "rekorTlogConfig": {"selector": "ANY"}, "tsaConfig": {"selector": "ANY"}});
    std::fs::write(lab.path("signing_config_rekor1.json"), config.to_string()).unwrap();
    let v2_config = peer("WEFT_TEST_SIGNING_CONFIG_REKOR2");
    // One trusted root with both logs: the lab's (Rekor v1, its CA) and the environment's Rekor v2.
    let resources = std::fs::read_to_string(lab.path("resources.yaml")).unwrap();
    let mut docs: Vec<Value> = resources.split("\n---\n").map(|d| serde_json::from_str(d).unwrap()).collect();
    let env_root: Value =
        serde_json::from_str(&std::fs::read_to_string(peer("WEFT_TEST_TRUSTED_ROOT")).unwrap()).unwrap();
    let sigstore = docs.iter_mut().find(|d| d["metadata"]["name"] == "sigstore").unwrap();
    let mut root: Value = serde_json::from_str(sigstore["data"]["trusted_root.json"].as_str().unwrap()).unwrap();
    root["tlogs"].as_array_mut().unwrap().extend(env_root["tlogs"].as_array().unwrap().iter().cloned());
    std::fs::write(lab.path("trusted_root_both.json"), root.to_string()).unwrap();
    sigstore["data"]["trusted_root.json"] = json!(root.to_string());
    let docs: Vec<String> = docs.iter().map(Value::to_string).collect();
    std::fs::write(lab.path("resources.yaml"), docs.join("\n---\n")).unwrap();
    std::fs::write(lab.path("resources-rekor-v1-only.yaml"), &resources).unwrap();

    let v3 = peer("WEFT_TEST_COSIGN3");
    let cosign3 = |args: &[&str]| {
        let (code, _, err) =
            run_cmd(Command::new(&v3).current_dir(lab.dir.path()).env("COSIGN_PASSWORD", PASSWORD).args(args));
        assert_eq!(code, 0, "cosign v3 {args:?}: {err}");
    };
    std::fs::write(
        lab.path("provenance.json"),
        json!({"buildDefinition": {"buildType": "https://ci.example/build/v1", "externalParameters": {}},
            "runDetails": {"builder": {"id": BUILDER}}})
        .to_string(),
    )
    .unwrap();
    let mut images = Vec::new();
    for (name, config) in
        [("rekor-v1", lab.path("signing_config_rekor1.json").display().to_string()), ("rekor-v2", v2_config)]
    {
        let image = lab.image(&format!("lab/cosign3-{name}"), "1");
        let pinned = Lab::pinned(&image);
        cosign3(&["sign", "--key", "k.key", "--signing-config", &config, "-y", &pinned]);
        cosign3(&[
            "attest",
            "--key",
            "k.key",
            "--signing-config",
            &config,
            "--type",
            "slsaprovenance1",
            "--predicate",
            "provenance.json",
            "-y",
            &pinned,
        ]);
        // What cosign v3 itself says of it, with the same trusted root.
        cosign3(&["verify", "--key", "k.pub", "--trusted-root", "trusted_root_both.json", &pinned]);
        images.push(image);
    }
    let profile = lab.profile(json!({
        "trustedRoot": {"configMapRef": {"name": "sigstore", "key": "trusted_root.json"}},
        "trustedBuilders": [{"id": BUILDER, "level": 3}],
        "policies": [{"images": [format!("{}/**", lab.registry)], "signers": [key("keys")], "minSlsaLevel": 3}],
    }));
    let refs: Vec<&str> = images.iter().map(String::as_str).collect();
    let (code, results) = lab.verify(&profile, &refs);
    assert_eq!(code, 0, "{results:#?}");
    for r in &results {
        assert_eq!(outcome(r), ("Verified", "Verified"), "{results:#?}");
        assert_eq!(r["slsaLevel"], 3, "{r}");
    }
    // A trusted root without the Rekor v2 log: the entry in it proves nothing, so that image fails.
    std::fs::copy(lab.path("resources-rekor-v1-only.yaml"), lab.path("resources.yaml")).unwrap();
    let (_, results) = lab.verify(&profile, &refs);
    assert_eq!(outcome(&results[0]), ("Verified", "Verified"), "{results:#?}");
    assert_eq!(outcome(&results[1]).0, "Failed", "a log the trusted root does not name: {results:#?}");
    // Another signer's key: not verified, whichever log.
    let other = lab.profile(lab.image_verification(key("other-keys"), json!({})));
    let (_, results) = lab.verify(&other, &refs);
    assert!(results.iter().all(|r| outcome(r).0 == "Failed"), "{results:#?}");
}

/// `weft verify-images --image-layout`: the images of a layout `cosign save` wrote, verified with no
/// registry in reach, the log entries their signatures carry checked as ever; a tampered layout fails.
#[test]
fn an_image_saved_by_cosign_into_a_layout_verifies_offline_and_a_tampered_layout_does_not() {
    let lab = Lab::new();
    let image = lab.image("lab/saved", "1");
    lab.sign("k", &image);
    let layout = lab.path("saved.oci");
    lab.cosign(&["save", "--dir", layout.to_str().unwrap(), &Lab::pinned(&image)]);
    let digest = Lab::digest_of(&image);

    // A name whose registry nothing listens on: only the layout can answer for it.
    let name = "127.0.0.1:9/lab/saved";
    let offline = format!("{name}@{digest}");
    let verify = |profile: &PathBuf, layout: Option<&std::path::Path>, image: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
        cmd.args(["verify-images", "--output", "json", "--resources"]).arg(lab.path("resources.yaml"));
        cmd.arg("--profile").arg(profile).arg(image);
        if let Some(dir) = layout {
            cmd.arg("--image-layout").arg(format!("{name}={}", dir.display()));
        }
        let (code, out, err) = run_cmd(&mut cmd);
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("not JSON ({code}): {out}\n{err}"));
        (code, v["images"][0].clone())
    };
    let logged = lab.profile(lab.image_verification(key("keys"), json!({"images": ["**"]})));
    let (code, result) = verify(&logged, Some(&layout), &offline);
    assert_eq!((code, outcome(&result)), (0, ("Verified", "Verified")), "{result}");
    assert_eq!(result["digest"], digest);
    let (_, result) = verify(&logged, None, &offline);
    assert_eq!(outcome(&result), ("Pending", "RegistryUnavailable"), "without the layout: {result}");

    // Another key's policy, and a digest the layout does not hold.
    let wrong_key = lab.profile(lab.image_verification(key("other-keys"), json!({"images": ["**"]})));
    let (_, result) = verify(&wrong_key, Some(&layout), &offline);
    assert_eq!(outcome(&result), ("Failed", "NoTrustedSignature"), "{result}");
    let other = format!("{name}@sha256:{}", "0".repeat(64));
    let (_, result) = verify(&logged, Some(&layout), &other);
    assert_eq!(outcome(&result), ("Failed", "ImageNotFound"), "{result}");

    // A layout whose image manifest was changed after it was saved.
    let tampered = lab.path("tampered.oci");
    copy_dir(&layout, &tampered);
    let blob = tampered.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes.push(b' ');
    std::fs::write(&blob, bytes).unwrap();
    let (code, result) = verify(&logged, Some(&tampered), &offline);
    assert_eq!((code, outcome(&result)), (1, ("Failed", "LayoutUnreadable")), "{result}");
    assert!(result["message"].as_str().unwrap().contains("does not match its digest"), "{result}");
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}
