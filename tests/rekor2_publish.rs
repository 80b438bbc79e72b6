//! `weft run` with a profile naming a Rekor v2 log: the signature and provenance bundles carry
//! `hashedrekord` v0.0.2 entries that cosign v3 accepts with the key and a trusted root naming the log;
//! the legacy layers carry no log bundle; a second run logs nothing new.

mod common;

use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::project::*;
use common::*;
use serde_json::{Value, json};

/// The tests count the log's entries: one at a time.
static LOG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The log's size, from the checkpoint on its read side.
fn log_size() -> u64 {
    let url = format!("{}/checkpoint", peer("WEFT_TEST_REKOR2_READ_URL").trim_end_matches('/'));
    let (code, note, err) = run_cmd(Command::new("curl").args(["-sf", &url]));
    assert_eq!(code, 0, "curl {url}: {err}");
    note.lines().nth(1).and_then(|l| l.parse().ok()).unwrap_or_else(|| panic!("a checkpoint: {note}"))
}

fn json_of(args: &[&str]) -> Value {
    let (code, out, err) = run_cmd(Command::new("curl").arg("-sfL").args(args));
    assert_eq!(code, 0, "curl {args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

/// The Sigstore bundles attached to `image` as referrers, by predicate type.
fn bundles(image: &str) -> Vec<(String, Value)> {
    let (repository, digest) = image.split_once('@').unwrap();
    let (host, name) = repository.split_once('/').unwrap();
    let index = json_of(&[&format!("http://{host}/v2/{name}/referrers/{digest}")]);
    let mut out = Vec::new();
    for d in index["manifests"].as_array().unwrap() {
        // This registry names the config's media type as the artifact type: the annotation tells bundles.
        if d["annotations"]["dev.sigstore.bundle.content"] != "dsse-envelope" {
            continue;
        }
        let m = json_of(&[
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
            &format!("http://{host}/v2/{name}/manifests/{}", d["digest"].as_str().unwrap()),
        ]);
        let bundle =
            json_of(&[&format!("http://{host}/v2/{name}/blobs/{}", m["layers"][0]["digest"].as_str().unwrap())]);
        let predicate = m["annotations"]["dev.sigstore.bundle.predicateType"].as_str().unwrap().to_string();
        out.push((predicate, bundle));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The annotations of the layers of a legacy `.sig` or `.att` tag.
fn legacy_annotations(image: &str, suffix: &str) -> Vec<Value> {
    let (repository, digest) = image.split_once('@').unwrap();
    let tag = format!("{repository}:{}{suffix}", digest.replace(':', "-"));
    let (code, m, err) = run_cmd(Command::new("crane").args(["manifest", &tag]));
    assert_eq!(code, 0, "crane manifest {tag}: {err}");
    let m: Value = serde_json::from_str(&m).unwrap();
    m["layers"].as_array().unwrap().iter().map(|l| l["annotations"].clone()).collect()
}

/// A profile logging in the Rekor v2 log (its checkpoint key a ConfigMap beside the other resources),
/// publishing to `repository`.
fn rekor2_profile(project: &Project, repository: &str, extra: Value) -> std::path::PathBuf {
    let path = project.profile(repository, false, extra);
    project.use_rekor2(&path);
    path
}

/// cosign v3 with the signing key and the trusted root naming the Rekor v2 log.
fn cosign3(project: &Project, args: &[&str], image: &str) -> (i32, String, String) {
    run_cmd(Command::new(peer("WEFT_TEST_COSIGN3")).current_dir(project.dir.path()).args(args).args([
        "--key",
        "weft.pub",
        "--trusted-root",
        &peer("WEFT_TEST_TRUSTED_ROOT"),
        image,
    ]))
}

#[test]
fn a_profile_naming_a_rekor_v2_log_logs_there_and_cosign_v3_verifies_it() {
    let _log = LOG.lock().unwrap_or_else(|e| e.into_inner());
    let project = with_namespace(shop_files);
    let repository = format!("{}/manifests/{}", peer("WEFT_TEST_REGISTRY_REFERRERS"), project.namespace);
    let profile = rekor2_profile(&project, &repository, json!({}));
    let app = project.application(json!({}));

    let before = log_size();
    let (code, first, err) = project.run(&profile, &app, &[]);
    assert_eq!(code, 0, "weft run: {first}\n{err}");
    let logged = log_size() - before;
    assert_eq!(logged, 2, "the signature bundle and the provenance are logged, nothing else: {first}");
    let image = first["manifestImage"].as_str().expect("a manifest image").to_string();
    assert!(first["transparencyLog"].is_null(), "the legacy signature is not logged in Rekor v2: {first}");

    // The provenance record: the leaf hash for a UUID, no integrated time.
    let provenance = &first["provenance"];
    assert_eq!(provenance["integratedTime"], 0, "{first}");
    assert_eq!(provenance["uuid"].as_str().map(str::len), Some(64), "{first}");
    assert!(provenance["logIndex"].as_i64().is_some_and(|i| i >= before as i64), "{first}");

    // The bundles carry the v2 entries; the legacy layers carry no log bundle (it would need a SET).
    let found = bundles(&image);
    let predicates: Vec<&str> = found.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(predicates, ["https://sigstore.dev/cosign/sign/v1", "https://slsa.dev/provenance/v1"], "{found:?}");
    for (predicate, bundle) in &found {
        let entry = &bundle["verificationMaterial"]["tlogEntries"][0];
        assert_eq!(entry["kindVersion"], json!({"kind": "hashedrekord", "version": "0.0.2"}), "{predicate}: {bundle}");
        assert!(entry.get("inclusionPromise").is_none(), "{predicate}: no SET in Rekor v2");
        let body: Value =
            serde_json::from_slice(&B64.decode(entry["canonicalizedBody"].as_str().unwrap()).unwrap()).unwrap();
        assert_eq!(
            body["spec"]["hashedRekordV002"]["signature"]["content"], bundle["dsseEnvelope"]["signatures"][0]["sig"],
            "{predicate}: the envelope's signature is what is logged"
        );
    }
    let provenance_bundle = &found[1].1;
    assert_eq!(
        provenance_bundle["verificationMaterial"]["tlogEntries"][0]["logIndex"],
        provenance["logIndex"].to_string(),
        "the status records the bundle's entry"
    );
    for suffix in [".sig", ".att"] {
        for annotations in legacy_annotations(&image, suffix) {
            assert!(annotations.get("dev.sigstore.cosign/bundle").is_none(), "{suffix}: {annotations}");
        }
    }

    // cosign v3 accepts the image and its provenance with the key and the trusted root naming the log.
    let (code, _, err) = cosign3(&project, &["verify"], &image);
    assert_eq!(code, 0, "cosign v3 verify: {err}");
    let (code, _, err) = cosign3(&project, &["verify-attestation", "--type", "slsaprovenance1"], &image);
    assert_eq!(code, 0, "cosign v3 verify-attestation: {err}");
    // And with what `weft run` wrote beside its output: a trusted root naming the v2 log.
    let (code, _, err) = run_cmd(Command::new(peer("WEFT_TEST_COSIGN3")).current_dir(project.dir.path()).args([
        "verify",
        "--key",
        "weft-out/cosign.pub",
        "--trusted-root",
        "weft-out/trusted_root.json",
        &image,
    ]));
    assert_eq!(code, 0, "cosign v3 verify with weft run's trusted root: {err}");

    // `weft provenance verify` re-checks the bundles against the profile's v2 log: the signature and the
    // provenance, each signed by the key and logged.
    let dir = project.dir.path();
    write_provenance_record(dir, &image, provenance, &project.repo.url(), &project.repo.head());
    let (code, out, err) = reverify(dir, &profile, &[]);
    assert_eq!(code, 0, "weft provenance verify: {out}{err}");
    assert!(out.contains("ok   the manifest image carries a signature that verifies (sigstore-verify"), "{out}");
    assert!(out.contains("ok   a SLSA provenance bundle for the image verifies"), "{out}");
    assert!(!out.contains("FAIL"), "{out}");
    // A trusted root that names another log: nothing verifies.
    std::fs::write(
        project.path("other-root.json"),
        weft::bundle::trusted_root_for_log(
            "http://127.0.0.1:9",
            &weft::provenance::rekor::LogKey::from_pem(
                &std::fs::read_to_string(peer("WEFT_TEST_REKOR_PUBLIC_KEY")).unwrap(),
            )
            .unwrap()
            .der(),
        )
        .to_string(),
    )
    .unwrap();
    let (code, out, _) = reverify(dir, &profile, &["--trusted-root", "other-root.json"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL the manifest image carries a signature") && out.contains("does NOT hold"), "{out}");

    // Again: the same image, the same entries, and nothing new in the log.
    let before = log_size();
    let (code, second, err) = project.run(&profile, &app, &[]);
    assert_eq!(code, 0, "weft run again: {second}\n{err}");
    assert_eq!(second["digest"], first["digest"]);
    assert_eq!(second["provenance"]["logIndex"], first["provenance"]["logIndex"], "{second}");
    assert_eq!(second["provenance"]["uuid"], first["provenance"]["uuid"], "{second}");
    assert_eq!(log_size(), before, "a second run logs nothing new");
    assert_eq!(bundles(&image).len(), 2, "no second bundle");
    for suffix in [".sig", ".att"] {
        assert_eq!(legacy_annotations(&image, suffix).len(), 1, "{suffix}: one layer");
    }
}

/// A revision vouched for: its verification summary is logged in the Rekor v2 log too, and cosign v3
/// accepts it.
#[test]
fn a_verification_summary_is_logged_in_rekor_v2_and_cosign_v3_verifies_it() {
    let _log = LOG.lock().unwrap_or_else(|e| e.into_inner());
    let lab = common::images::Lab::new();
    let (project, _) = common::images::signed_image_project(&lab, "lab/rekor2-web");
    let repository = format!("{}/manifests/{}", peer("WEFT_TEST_REGISTRY_REFERRERS"), project.namespace);
    let iv = lab.image_verification(common::images::key("keys"), json!({}));
    let profile = rekor2_profile(&project, &repository, json!({"imageVerification": iv}));
    let app = project.application(json!({}));

    let before = log_size();
    let (code, out, err) = project.run(&profile, &app, &[]);
    assert_eq!(code, 0, "weft run: {err}\n{out:#}");
    assert_eq!(log_size() - before, 3, "signature, provenance and summary bundles: {out}");
    let summary = &out["verificationSummary"];
    assert_eq!(summary["integratedTime"], 0, "{out}");
    assert!(summary["logIndex"].as_i64().is_some_and(|i| i >= before as i64), "{out}");
    let image = out["manifestImage"].as_str().unwrap().to_string();
    let found = bundles(&image);
    let (_, vsa) = found.iter().find(|(p, _)| p == weft::provenance::SLSA_VSA_V1).expect("a summary bundle");
    let entry = &vsa["verificationMaterial"]["tlogEntries"][0];
    assert_eq!(entry["kindVersion"], json!({"kind": "hashedrekord", "version": "0.0.2"}), "{vsa}");
    assert_eq!(entry["logIndex"], summary["logIndex"].to_string());
    let (code, _, err) = cosign3(&project, &["verify-attestation", "--type", weft::provenance::SLSA_VSA_V1], &image);
    assert_eq!(code, 0, "cosign v3 verify-attestation --type VSA: {err}");

    let before = log_size();
    let (code, again, err) = project.run(&profile, &app, &[]);
    assert_eq!(code, 0, "weft run again: {err}\n{again:#}");
    assert_eq!(again["verificationSummary"], out["verificationSummary"], "the same entry");
    assert_eq!(log_size(), before, "nothing new is logged");
}
