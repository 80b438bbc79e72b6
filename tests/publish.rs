//! `weft run` end to end against the real peers: a signed repository, keys made by the real cosign, the
//! real registries (with and without the OCI referrers API) and Rekor; what it publishes is checked by
//! the real `cosign verify` and `kubectl sigstore verify-resource` against objects applied to the real
//! kube-apiserver as Argo CD applies them.

mod common;

use std::path::Path;
use std::process::Command;

use common::project::*;
use common::*;
use serde_json::{Value, json};

fn cosign_env(cmd: &mut Command) -> &mut Command {
    cmd.env("SIGSTORE_REKOR_PUBLIC_KEY", peer("WEFT_TEST_REKOR_PUBLIC_KEY"))
}

fn kubectl_sigstore(project: &Project, image: &str) -> (i32, Value, String) {
    let ca = Path::new(&peer("WEFT_TEST_ENV_DIR")).join("certs/ca.crt");
    let (code, out, err) = run_cmd(
        cosign_env(&mut Command::new("kubectl-sigstore"))
            .env("SIGSTORE_ROOT_FILE", ca)
            .current_dir(project.dir.path())
            .args([
                "verify-resource",
                "-i",
                image,
                "-k",
                "weft.pub",
                "--rekor-url",
                &peer("WEFT_TEST_REKOR_URL"),
                "-o",
                "json",
            ]),
    );
    (code, serde_json::from_str(&out).unwrap_or(Value::Null), err)
}

/// The signed manifests, as stored in the image's layer.
fn signed_blob(image: &str) -> String {
    let (code, manifest, err) = run_cmd(Command::new("crane").args(["manifest", image]));
    assert_eq!(code, 0, "crane manifest: {err}");
    let m: Value = serde_json::from_str(&manifest).unwrap();
    let repo = image.split('@').next().unwrap();
    let (code, blob, err) = run_cmd(
        Command::new("crane").args(["blob", &format!("{repo}@{}", m["layers"][0]["digest"].as_str().unwrap())]),
    );
    assert_eq!(code, 0, "crane blob: {err}");
    blob
}

async fn end_to_end(registry_var: &str, referrers: bool) {
    let project = with_namespace(shop_files);
    let repository = format!("{}/manifests/{}", peer(registry_var), project.namespace);
    let profile = project.profile(&repository, true, json!({}));
    let app = project.application(json!({}));
    let (code, out, err) = project.run(&profile, &app, &[]);
    assert_eq!(code, 0, "weft run: {out}\n{err}");
    let image = out["manifestImage"].as_str().expect("a manifest image").to_string();
    assert!(image.starts_with(&format!("{repository}@sha256:")), "{image}");
    assert_eq!(out["resources"], 3);
    assert_eq!(out["referrer"], referrers, "the referrers API is used where the registry serves it");
    assert!(out["transparencyLog"]["logIndex"].is_i64(), "the signature is logged: {out}");

    // The real cosign, v2 and v3, accepts the image, its signature checked against the Rekor bundle
    // offline.
    for (cosign, bin) in cosigns() {
        let (code, _, err) = run_cmd(cosign_env(&mut Command::new(bin)).current_dir(project.dir.path()).args([
            "verify",
            "--key",
            "weft.pub",
            "--trusted-root",
            "weft-out/trusted_root.json",
            &image,
        ]));
        assert_eq!(code, 0, "{cosign} verify: {err}");
    }
    if referrers {
        let digest = image.split('@').nth(1).unwrap();
        let url = format!("http://{}/v2/manifests/{}/referrers/{digest}", peer(registry_var), project.namespace);
        let (code, index, _) = run_cmd(Command::new("curl").args(["-sf", &url]));
        assert_eq!(code, 0);
        assert!(index.contains("application/vnd.dev.cosign.artifact.sig.v1+json"), "{index}");
        let (code, _, err) = run_cmd(cosign_env(&mut Command::new("cosign")).current_dir(project.dir.path()).args([
            "verify",
            "--experimental-oci11",
            "--key",
            "weft.pub",
            "--trusted-root",
            "weft-out/trusted_root.json",
            &image,
        ]));
        assert_eq!(code, 0, "cosign verify --experimental-oci11: {err}");
    }

    // Argo CD applies the rendered manifests with its tracking annotation: apply what was signed.
    let blob = signed_blob(&image);
    assert!(
        blob.contains(&format!("argocd.argoproj.io/tracking-id: shop-cart:apps/Deployment:{}/cart", project.namespace)),
        "{blob}"
    );
    std::fs::write(project.path("applied.yaml"), &blob).unwrap();
    let client = client().await;
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": project.namespace}})).unwrap();
    kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(client).create(&Default::default(), &ns).await.unwrap();
    let (code, _, err) = run_cmd(Command::new("kubectl").arg("apply").arg("-f").arg(project.path("applied.yaml")));
    assert_eq!(code, 0, "kubectl apply: {err}");

    let (code, result, err) = kubectl_sigstore(&project, &image);
    assert_eq!(
        (code, &result["summary"]),
        (0, &json!({"total": 3, "valid": 3, "invalid": 0})),
        "verify-resource: {result}\n{err}"
    );

    // Change one live object: exactly that one is reported.
    let (code, _, err) = run_cmd(Command::new("kubectl").args([
        "-n",
        &project.namespace,
        "patch",
        "configmap",
        "cart-config",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"CURRENCY":"USD"}}"#,
    ]));
    assert_eq!(code, 0, "{err}");
    let (code, result, _) = kubectl_sigstore(&project, &image);
    assert_eq!((code, &result["summary"]), (1, &json!({"total": 3, "valid": 2, "invalid": 1})), "{result}");
    let invalid: Vec<&str> = result["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["result"]["verified"] == false)
        .map(|r| r["object"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(invalid, ["ConfigMap"]);

    bundles_verify_alone(&project, &image);
}

/// The signature and the provenance are also Sigstore bundles attached as referrers (through the
/// `sha256-<hex>` fallback index where the registry has no referrers API). cosign v2.6 and v3 read the
/// bundles whenever there are any (for a private log they need `--trusted-root` then, which `weft run`
/// writes); the legacy `.sig` and `.att` tags stay for kubectl-sigstore (checked above) and older cosign.
/// With those tags overwritten by the unsigned manifest image, the bundles are the only signatures
/// left, and cosign v2 and v3 still verify both.
fn bundles_verify_alone(project: &Project, image: &str) {
    let digest = image.split_once('@').unwrap().1;
    for suffix in [".sig", ".att"] {
        let tag = format!("{}{suffix}", digest.replace(':', "-"));
        let (code, _, err) = run_cmd(Command::new("crane").args(["tag", image, &tag]));
        assert_eq!(code, 0, "crane tag {tag}: {err}");
        let repository = image.split_once('@').unwrap().0;
        let (_, manifest, _) = run_cmd(Command::new("crane").args(["manifest", &format!("{repository}:{tag}")]));
        assert!(!manifest.contains("dev.cosignproject.cosign/signature"), "{tag} holds no signature now: {manifest}");
    }
    for (name, bin) in cosigns() {
        let cosign = |args: &[&str]| {
            run_cmd(Command::new(&bin).current_dir(project.dir.path()).args(args).args([
                "--key",
                "weft.pub",
                "--trusted-root",
                "weft-out/trusted_root.json",
                image,
            ]))
        };
        let (code, _, err) = cosign(&["verify"]);
        assert_eq!(code, 0, "{name} verify, from the bundle: {err}");
        let (code, _, err) = cosign(&["verify-attestation", "--type", "slsaprovenance1"]);
        assert_eq!(code, 0, "{name} verify-attestation, from the bundle: {err}");
    }
}

#[tokio::test]
async fn published_to_a_registry_without_referrers_the_real_tools_verify_it() {
    end_to_end("WEFT_TEST_REGISTRY", false).await;
}

#[tokio::test]
async fn published_to_a_registry_with_referrers_the_real_tools_verify_it() {
    end_to_end("WEFT_TEST_REGISTRY_REFERRERS", true).await;
}

#[test]
fn the_oci_layout_verifies_with_cosign_as_written() {
    let project = with_namespace(shop_files);
    let app = project.application(json!({}));
    // Without a transparency log: cosign is told to skip it.
    let profile = project.profile("unused.example/x", false, json!({}));
    let (code, out, err) = project.run(&profile, &app, &["--out", "layout"]);
    assert_eq!(code, 0, "{out}\n{err}");
    for (cosign, bin) in cosigns() {
        let (code, _, err) = run_cmd(Command::new(bin).current_dir(project.dir.path()).args([
            "verify",
            "--local-image",
            "layout",
            "--key",
            "weft.pub",
            "--insecure-ignore-tlog",
        ]));
        assert_eq!(code, 0, "{cosign} verify --local-image: {err}");
    }
    assert_eq!(
        std::fs::read_to_string(project.path("layout/cosign.pub")).unwrap(),
        std::fs::read_to_string(project.path("weft.pub")).unwrap()
    );

    // With Rekor: the bundle travels with the signature and cosign checks it offline.
    let profile = project.profile("unused.example/x", true, json!({}));
    let (code, out, err) = project.run(&profile, &app, &["--out", "logged"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out["provenance"]["logIndex"].is_i64(), "provenance is recorded: {out}");
    for (cosign, bin) in cosigns() {
        let (code, _, err) = run_cmd(cosign_env(&mut Command::new(&bin)).current_dir(project.dir.path()).args([
            "verify",
            "--local-image",
            "logged",
            "--key",
            "weft.pub",
            "--trusted-root",
            "logged/trusted_root.json",
        ]));
        assert_eq!(code, 0, "{cosign} verify --local-image with the tlog: {err}");
        let (code, _, err) = run_cmd(cosign_env(&mut Command::new(&bin)).current_dir(project.dir.path()).args([
            "verify-attestation",
            "--local-image",
            "logged",
            "--key",
            "weft.pub",
            "--trusted-root",
            "logged/trusted_root.json",
            "--type",
            "slsaprovenance1",
        ]));
        assert_eq!(code, 0, "{cosign} verify-attestation --local-image: {err}");
    }
}

#[test]
fn publishing_the_same_manifests_again_pushes_and_logs_nothing_new() {
    let project = with_namespace(shop_files);
    let repository = format!("{}/manifests/{}", peer("WEFT_TEST_REGISTRY"), project.namespace);
    let profile = project.profile(&repository, true, json!({}));
    let app = project.application(json!({}));
    let (code, first, err) = project.run(&profile, &app, &[]);
    assert_eq!(code, 0, "{err}");
    let (code, second, err) = project.run(&profile, &app, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(first["digest"], second["digest"], "the same manifests give the same image");
    assert_eq!(first["transparencyLog"], second["transparencyLog"], "the existing signature and its entry are kept");
    assert!(second["steps"][2]["message"].as_str().unwrap().contains("already signed"), "{second}");
    assert_eq!(first["provenance"], second["provenance"], "the existing provenance entry is kept");
    // One tag for the revision, one .sig tag with one signature, one .att tag with one attestation, and
    // (this registry has no referrers API) the referrers index with two bundles: signature, provenance.
    let (_, tags, _) = run_cmd(Command::new("crane").args(["ls", &repository]));
    assert_eq!(tags.lines().count(), 4, "{tags}");
    let fallback = format!("{repository}:{}", first["digest"].as_str().unwrap().replace(':', "-"));
    let (_, index, _) = run_cmd(Command::new("crane").args(["manifest", &fallback]));
    let index: Value = serde_json::from_str(&index).unwrap();
    assert_eq!(index["manifests"].as_array().map(Vec::len), Some(2), "{index}");
    for suffix in [".sig", ".att"] {
        let tag = format!("{repository}:{}{suffix}", first["digest"].as_str().unwrap().replace(':', "-"));
        let (_, m, _) = run_cmd(Command::new("crane").args(["manifest", &tag]));
        let m: Value = serde_json::from_str(&m).unwrap();
        assert_eq!(m["layers"].as_array().map(Vec::len), Some(1), "{tag}");
    }
}

#[test]
fn bad_input_and_faults_are_specific_and_push_nothing() {
    let project = with_namespace(shop_files);
    let registry = peer("WEFT_TEST_REGISTRY");
    let app = project.application(json!({}));
    let step = |out: &Value| {
        (
            out["steps"][2]["state"].as_str().unwrap_or("").to_string(),
            out["steps"][2]["reason"].as_str().unwrap_or("").to_string(),
        )
    };

    // The registry is down.
    let profile = project.profile("127.0.0.1:9/manifests/shop", false, json!({}));
    let (code, out, _) = project.run(&profile, &app, &[]);
    assert_eq!((code, step(&out)), (1, ("Pending".into(), "RegistryUnavailable".into())), "{out}");

    // A wrong key password, and a missing key Secret: configuration errors, nothing pushed.
    let repository = format!("{registry}/manifests/{}-faults", project.namespace);
    let profile = project.profile(&repository, false, json!({}));
    project.write_resources("wrong");
    let (code, out, _) = project.run(&profile, &app, &[]);
    assert_eq!((code, step(&out)), (2, ("Failed".into(), "SigningKeyWrongPassword".into())), "{out}");
    let mut missing = json!({});
    missing["manifestSigning"] =
        json!({"key": {"secretRef": {"name": "nowhere", "key": "cosign.key"}}, "image": {"repository": repository}});
    let profile = project.profile(&repository, false, missing);
    let (code, out, _) = project.run(&profile, &app, &[]);
    assert_eq!((code, step(&out)), (2, ("Failed".into(), "ReferencedObjectMissing".into())), "{out}");
    assert!(out["steps"][2]["message"].as_str().unwrap().contains("Secret nowhere"), "{out}");
    let (code, _, _) = run_cmd(Command::new("crane").args(["ls", &repository]));
    assert_ne!(code, 0, "nothing was pushed to {repository}");
    project.write_resources(PASSWORD);

    // Broken manifests in the verified tree.
    for (file, content, reason) in [
        ("broken.yaml", "kind: [unclosed", "ManifestUnparseable"),
        ("list.yaml", "- a\n- b\n", "ManifestNotAnObject"),
        (
            "big.yaml",
            &format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: big}}\ndata: {{x: \"{}\"}}\n",
                "x".repeat(4096)
            ),
            "ManifestTooLarge",
        ),
    ] {
        let p = with_namespace(|ns| {
            let mut f = shop_files(ns);
            f.push((file.to_string(), content.to_string()));
            f
        });
        let profile = p.profile(&format!("{registry}/manifests/{}", p.namespace), false, json!({}));
        let app = p.application(json!({}));
        let (code, out, err) = p.run(&profile, &app, &["--max-document-bytes", "2048"]);
        assert_eq!((code, step(&out)), (1, ("Failed".into(), reason.into())), "{file}: {out}\n{err}");
        assert!(out["steps"][2]["message"].as_str().unwrap().contains(file), "the message names the file: {out}");
    }
}

#[test]
fn a_secret_is_signed_by_the_digest_of_its_values_unless_the_profile_includes_them() {
    let project = with_namespace(|ns| {
        let mut files = shop_files(ns);
        files.push((
            "secret.yaml".into(),
            format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: db, namespace: {ns}}}\nstringData: {{password: hunter2}}\n"),
        ));
        files
    });
    let app = project.application(json!({}));
    let published = |out: &str| {
        let layers = weft::oci::layout_layers(&project.path(out), weft::oci::KIND_IMAGE);
        String::from_utf8(layers[0].bytes.clone()).unwrap()
    };

    let profile = project.profile("unused.example/x", false, json!({}));
    let (code, out, err) = project.run(&profile, &app, &["--out", "digest"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let blob = published("digest");
    assert!(!blob.contains("hunter2") && !blob.contains("aHVudGVyMg"), "the value is not published: {blob}");
    assert!(blob.contains("weft.dev/secret-values: sha256"), "{blob}");
    let signed = out["steps"][2]["message"].as_str().unwrap();
    assert!(signed.contains("1 Secret(s) signed by the digest of their values"), "{signed}");

    let mut included: Value = serde_json::from_str(&std::fs::read_to_string(&profile).unwrap()).unwrap();
    included["spec"]["manifestSigning"]["secrets"] = json!("include");
    std::fs::write(&profile, included.to_string()).unwrap();
    let (code, out, err) = project.run(&profile, &app, &["--out", "included"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(published("included").contains("hunter2"), "published as the profile asked");
    let signed = out["steps"][2]["message"].as_str().unwrap();
    assert!(signed.contains("warning: 1 Secret(s) published with their values"), "{signed}");
}

/// The verification command `weft run` prints works as printed, with cosign v2 and v3: for an OCI
/// layout without a log, for one whose signature is in the (private) log, and for a registry.
#[test]
fn the_printed_verification_command_works_as_written() {
    let project = with_namespace(shop_files);
    let app = project.application(json!({}));
    let repository = format!("{}/manifests/{}", peer("WEFT_TEST_REGISTRY"), project.namespace);
    let cases = [
        ("a layout, no log", project.profile("unused.example/x", false, json!({})), vec!["--out", "plain"]),
        ("a layout, a private log", project.profile("unused.example/x", true, json!({})), vec!["--out", "logged"]),
        ("a registry, a private log", project.profile(&repository, true, json!({})), vec![]),
    ];
    for (case, profile, extra) in cases {
        let (code, out, err) = run_cmd(
            Command::new(env!("CARGO_BIN_EXE_weft"))
                .current_dir(project.dir.path())
                .args(["run", "--resources", "resources.yaml", "--cache-dir", "cache"])
                .arg("--profile")
                .arg(&profile)
                .arg("--application")
                .arg(&app)
                .args(&extra),
        );
        assert_eq!(code, 0, "{case}: {out}\n{err}");
        let command = out
            .lines()
            .find_map(|l| l.strip_prefix("verify it with: "))
            .unwrap_or_else(|| panic!("{case}: no verification command in {out}"))
            .to_string();
        for (cosign, bin) in cosigns() {
            let as_printed = command.replacen("cosign verify", &format!("{bin} verify"), 1);
            let (code, _, err) = run_cmd(Command::new("sh").current_dir(project.dir.path()).args(["-c", &as_printed]));
            assert_eq!(code, 0, "{case}, {cosign}: `{command}`: {err}");
        }
    }
}
