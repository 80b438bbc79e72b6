//! The controller signs and publishes: `ManifestsSigned` with the manifest image's digest, which the
//! real cosign verifies; a registry that is down leaves the step pending and retried.

mod common;

use std::process::Command;

use common::project::*;
use common::*;
use serde_json::{Value, json};

async fn setup(prefix: &str, repository: &str) -> (kube::Client, String, Project, WeftProcess) {
    let client = client().await;
    let ns = namespace(&client, prefix).await;
    let project = with_namespace(shop_files);
    project.apply_resources(&client, &ns).await;
    let profile_path = project.profile(repository, true, json!({}));
    let mut profile: Value = serde_json::from_str(&std::fs::read_to_string(profile_path).unwrap()).unwrap();
    profile["metadata"] = json!({"name": "production"});
    create(&profiles(&client, &ns), profile).await;
    let cache = project.path("controller-cache");
    let weft = WeftProcess::start(&[
        "controller",
        "--namespace",
        &ns,
        "--cache-dir",
        cache.to_str().unwrap(),
        "--resync-seconds",
        "5",
    ]);
    (client, ns, project, weft)
}

fn application(project: &Project) -> Value {
    let mut app: Value =
        serde_json::from_str(&std::fs::read_to_string(project.application(json!({}))).unwrap()).unwrap();
    app["metadata"] = json!({"name": "shop-cart"});
    app
}

#[tokio::test]
async fn the_controller_records_the_signed_manifest_image_which_cosign_verifies() {
    let repository = format!("{}/manifests/controller-{}", peer("WEFT_TEST_REGISTRY"), rand_suffix());
    let (client, ns, project, _weft) = setup("sign", &repository).await;
    create(&applications(&client, &ns), application(&project)).await;

    let ap = provenance_where(&client, &ns, "shop-cart", "signed manifests", |v| {
        condition(v, "ManifestsSigned").is_some_and(|c| c["status"] != "Unknown")
    })
    .await;
    let signed = condition(&ap, "ManifestsSigned").unwrap();
    assert_eq!((signed["status"].as_str(), signed["reason"].as_str()), (Some("True"), Some("Signed")), "{signed}");
    let image = ap["status"]["manifestImage"].as_str().expect("the manifest image is recorded");
    assert!(image.starts_with(&format!("{repository}@sha256:")), "{image}");
    assert!(signed["message"].as_str().unwrap().contains("3 resource(s)"), "{signed}");
    let images = condition(&ap, "ImagesVerified").unwrap();
    assert_eq!(images["reason"], "ImageVerificationNotConfigured", "{images}");
    assert_eq!(ap["status"]["verdict"], "Failed", "a profile that does not verify images vouches for nothing");

    let root = trusted_root(project.dir.path());
    let (code, _, err) = run_cmd(
        Command::new("cosign")
            .current_dir(project.dir.path())
            .args(["verify", "--key", "weft.pub", image])
            .args(["--trusted-root", &root]),
    );
    assert_eq!(code, 0, "cosign verify: {err}");
}

#[tokio::test]
async fn a_registry_that_is_down_leaves_signing_pending_and_retried() {
    let (client, ns, project, weft) = setup("sign-down", "127.0.0.1:9/manifests/shop").await;
    create(&applications(&client, &ns), application(&project)).await;
    let ap = provenance_where(&client, &ns, "shop-cart", "a pending signature", |v| {
        condition(v, "ManifestsSigned").is_some_and(|c| c["reason"] == "RegistryUnavailable")
    })
    .await;
    assert_eq!(condition(&ap, "ManifestsSigned").unwrap()["status"], "Unknown");
    assert_eq!(ap["status"]["verdict"], "Pending");
    assert!(ap["status"].get("manifestImage").is_none(), "nothing recorded as signed");
    eventually("a retry", std::time::Duration::from_secs(30), || {
        let logs = weft.logs();
        async move { if logs.matches("a step is pending; retrying").count() >= 2 { Ok(()) } else { Err(logs) } }
    })
    .await;
}
