//! Provenance as the controller records it, against the real Rekor: the real `rekor-cli` and `cosign
//! verify-attestation` accept what is recorded (and slsa-verifier the verification summary), `weft provenance verify` re-checks it and catches
//! tampering, a Rekor outage in the middle of a run ends in exactly one entry, and a log that answers with
//! the wrong key is never taken for provenance.

mod common;

use std::process::Command;
use std::time::Duration;

use common::project::*;
use common::*;
use serde_json::{Value, json};

/// The tests here share one Rekor; the outage test takes it down, so it runs alone.
static LOG: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Rekor is down while this lives; it comes back when the test says so, or when the test fails.
struct Outage(bool);

impl Outage {
    fn begin() -> Outage {
        assert_eq!(
            run_cmd(Command::new("sh").args(["-c", &peer("WEFT_TEST_REKOR_STOP")])).0,
            0,
            "rekor-server stopped"
        );
        Outage(true)
    }
    fn end(&mut self) {
        if std::mem::take(&mut self.0) {
            let (code, out, err) = run_cmd(Command::new("sh").args(["-c", &peer("WEFT_TEST_REKOR_START")]));
            assert_eq!(code, 0, "rekor-server started: {out}{err}");
        }
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        if self.0 {
            let _ = run_cmd(Command::new("sh").args(["-c", &peer("WEFT_TEST_REKOR_START")]));
        }
    }
}

struct Env {
    client: kube::Client,
    ns: String,
    project: Project,
    weft: Option<WeftProcess>,
    repository: String,
    /// Where the controller serves its metrics.
    metrics: String,
}

impl Env {
    async fn new(prefix: &str) -> Env {
        Env::through(prefix, None, None).await
    }

    /// With the log reached at `log` and the registry at `registry` (`host:port`) instead of the test
    /// environment's.
    async fn through(prefix: &str, log: Option<&str>, registry: Option<&str>) -> Env {
        let client = client().await;
        let ns = namespace(&client, prefix).await;
        let project = with_namespace(shop_files);
        project.apply_resources(&client, &ns).await;
        let registry = registry.map(str::to_string).unwrap_or_else(|| peer("WEFT_TEST_REGISTRY"));
        let repository = format!("{registry}/manifests/{ns}");
        let mut profile: Value =
            serde_json::from_str(&std::fs::read_to_string(project.profile(&repository, true, json!({}))).unwrap())
                .unwrap();
        profile["metadata"] = json!({"name": "production"});
        if let Some(url) = log {
            profile["spec"]["provenance"]["rekor"]["url"] = json!(url);
        }
        create(&profiles(&client, &ns), profile).await;
        let metrics = common::argocd::free_address();
        let mut env = Env { client, ns, project, weft: None, repository, metrics };
        env.start_controller();
        env
    }

    fn start_controller(&mut self) {
        let cache = self.project.path("controller-cache");
        self.weft = Some(WeftProcess::start(&[
            "controller",
            "--namespace",
            &self.ns,
            "--cache-dir",
            cache.to_str().unwrap(),
            "--resync-seconds",
            "3",
            "--builder-id",
            "https://weft.dev/builders/test",
            "--health-listen",
            &self.metrics,
        ]));
    }

    /// Waits until the controller has found the record settled `n` more times (resyncs that change
    /// nothing), as its metrics count them.
    async fn resyncs(&self, n: f64) {
        let unchanged = || common::metric(&self.metrics, "weft_reconciles_total{outcome=\"unchanged\"}");
        let start = unchanged().await;
        tokio::time::timeout(Duration::from_secs(60), async {
            while unchanged().await < start + n {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the controller did not resync {n} times in 60 s"));
    }

    async fn create_application(&self) {
        let mut app: Value =
            serde_json::from_str(&std::fs::read_to_string(self.project.application(json!({}))).unwrap()).unwrap();
        app["metadata"] = json!({"name": "shop-cart"});
        create(&applications(&self.client, &self.ns), app).await;
    }

    async fn recorded(&self) -> Value {
        provenance_where(&self.client, &self.ns, "shop-cart", "recorded provenance", |v| {
            condition(v, "ProvenanceRecorded").is_some_and(|c| c["status"] == "True")
        })
        .await
    }

    /// `weft provenance verify` (extra arguments appended), as a person runs it.
    fn verify(&self, args: &[&str]) -> (i32, String, String) {
        run_cmd(
            Command::new(env!("CARGO_BIN_EXE_weft"))
                .current_dir(self.project.dir.path())
                .env("KUBECONFIG", kubeconfig_path())
                .args(["provenance", "verify", "--cache-dir", "verify-cache"])
                .args(args),
        )
    }
}

/// UUIDs of the log's entries indexed under `hash` (`sha256:<hex>`).
fn rekor_search(hash: &str) -> Vec<String> {
    let (code, out, err) = run_cmd(
        Command::new("curl")
            .args(["-sf", "-H", "Content-Type: application/json", "-d"])
            .arg(json!({"hash": hash}).to_string())
            .arg(format!("{}/api/v1/index/retrieve", peer("WEFT_TEST_REKOR_URL"))),
    );
    assert_eq!(code, 0, "rekor search: {err}");
    serde_json::from_str(&out).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn recorded_provenance_is_accepted_by_rekor_cli_and_cosign_and_reverified() {
    let _shared = LOG.read().await;
    let env = Env::new("prov").await;
    env.create_application().await;
    let ap = env.recorded().await;
    let status = &ap["status"];
    let uuid = status["rekor"]["uuid"].as_str().expect("the entry is recorded").to_string();
    let index = status["rekor"]["logIndex"].as_i64().unwrap();
    assert!(status["rekor"]["integratedTime"].as_i64().unwrap() > 0 && status["rekor"]["logID"].as_str().is_some());
    let image = status["manifestImage"].as_str().unwrap().to_string();
    let message = condition(&ap, "ProvenanceRecorded").unwrap()["message"].as_str().unwrap().to_string();
    assert!(message.contains(&format!("index {index}")), "{message}");

    // The real rekor-cli.
    let rekor = peer("WEFT_TEST_REKOR_URL");
    let (code, out, err) =
        run_cmd(Command::new("rekor-cli").args(["get", "--uuid", &uuid, "--rekor_server", &rekor, "--format", "json"]));
    assert_eq!(code, 0, "rekor-cli get: {err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["LogIndex"], index);
    let (code, out, err) =
        run_cmd(Command::new("rekor-cli").args(["verify", "--uuid", &uuid, "--rekor_server", &rekor]));
    assert_eq!(code, 0, "rekor-cli verify: {out}{err}");

    // The real cosign, v2 and v3, on the attestation attached to the manifest image.
    let mut outputs = Vec::new();
    for (cosign, bin) in cosigns() {
        let (code, out, err) = run_cmd(
            Command::new(bin)
                .env("SIGSTORE_REKOR_PUBLIC_KEY", peer("WEFT_TEST_REKOR_PUBLIC_KEY"))
                .current_dir(env.project.dir.path())
                .args(["verify-attestation", "--key", "weft.pub", "--type", "slsaprovenance1", &image])
                .args(["--trusted-root", &trusted_root(env.project.dir.path())]),
        );
        assert_eq!(code, 0, "{cosign} verify-attestation: {err}");
        outputs.push(out);
    }
    let out = outputs.swap_remove(0);
    let envelope: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    use base64::Engine;
    let statement: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD.decode(envelope["payload"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(statement["predicate"]["runDetails"]["builder"]["id"], "https://weft.dev/builders/test");
    assert_eq!(
        statement["predicate"]["buildDefinition"]["resolvedDependencies"][0]["digest"]["gitCommit"],
        env.project.repo.head().as_str()
    );
    assert_eq!(
        format!("sha256:{}", statement["subject"][0]["digest"]["sha256"].as_str().unwrap()),
        image.split('@').nth(1).unwrap()
    );

    // Weft's own re-check, from the cluster and from a file.
    let target = format!("{}/shop-cart", env.ns);
    let (code, out, err) = env.verify(&[&target]);
    assert_eq!(code, 0, "weft provenance verify:\n{out}{err}");
    assert!(out.contains("the evidence holds") && !out.contains("FAIL"), "{out}");

    let file = env.project.path("appprov.json");
    std::fs::write(&file, ap.to_string()).unwrap();
    let profile = env.project.path("profile.yaml");
    let from_file = |f: &std::path::Path| {
        env.verify(&[
            "--from-file",
            f.to_str().unwrap(),
            "--profile",
            profile.to_str().unwrap(),
            "--resources",
            "resources.yaml",
        ])
    };
    let (code, out, err) = from_file(&file);
    assert_eq!(code, 0, "--from-file:\n{out}{err}");

    // Tampered evidence: another entry, another image, another revision.
    let signature_entry = rekor_search(&format!("sha256:{}", common::verify::sha256_hex(&cosign_payload(&image))));
    let mut tampered = ap.clone();
    tampered["status"]["rekor"]["uuid"] = json!(signature_entry.first().expect("the image signature is logged"));
    std::fs::write(&file, tampered.to_string()).unwrap();
    let (code, out, _) = from_file(&file);
    assert_eq!(code, 1, "another entry is not this provenance:\n{out}");
    assert!(out.contains("FAIL"), "{out}");

    let mut tampered = ap.clone();
    tampered["status"]["sources"][0]["revision"] = json!("0000000000000000000000000000000000000000");
    std::fs::write(&file, tampered.to_string()).unwrap();
    let (code, out, _) = from_file(&file);
    assert_eq!(code, 1, "the attested commit is not the recorded one:\n{out}");
    assert!(out.contains("FAIL the attested source commits"), "{out}");
}

fn cosign_payload(image: &str) -> Vec<u8> {
    let (repo, digest) = image.split_once('@').unwrap();
    weft::oci::simple_signing_payload(repo, digest, &Default::default())
}

/// The controller is killed at the worst moments: a peer has done the work and the answer never reached
/// the controller — the registry stored the manifest image, the log accepted the image's signature, the
/// log accepted the provenance. Until it is restarted nothing is vouched for; after, the run completes
/// with exactly one log entry of each kind, the ones made before the crash.
#[tokio::test(flavor = "multi_thread")]
async fn a_controller_killed_mid_push_mid_signing_or_mid_attesting_completes_with_exactly_one_entry_of_each() {
    // Alone on the log: the entries it gains are this test's.
    let _alone = LOG.write().await;
    let rekor = peer("WEFT_TEST_REKOR_URL");
    let log = proxy::Proxy::start(rekor.trim_start_matches("http://").trim_end_matches('/')).await;
    let registry = proxy::Proxy::start(&peer("WEFT_TEST_REGISTRY")).await;
    // Which statement a `dsse` upload carries: the start of its payload, base64 (keys are sorted, so the
    // predicate comes first after `_type`).
    let payload_start = |start: &str| {
        use base64::Engine;
        let bytes = format!("{{\"_type\":\"https://in-toto.io/Statement/v1\",\"predicate\":{start}");
        base64::engine::general_purpose::STANDARD.encode(&bytes.as_bytes()[..bytes.len() / 3 * 3])
    };
    let (sign_statement, provenance) = (payload_start("{},\"predicateType\""), payload_start("{\"buildDefinition\""));
    let kill_points: [(&str, &proxy::Proxy, &[&str]); 4] = [
        // The manifest image is in the registry; its signature is not made yet.
        ("pushing", &registry, &["PUT ", "/manifests/"]),
        // The signature is in the log; nothing is attached yet.
        ("signing", &log, &["\"kind\":\"hashedrekord\""]),
        // The signature's bundle (cosign v3's format) is in the log; it is not attached yet.
        ("bundling", &log, &["\"kind\":\"dsse\"", &sign_statement]),
        // The provenance is in the log; the entry is not attached yet.
        ("attesting", &log, &["\"kind\":\"dsse\"", &provenance]),
    ];
    for (point, proxy, request) in kill_points {
        let before = log_size();
        proxy.hold_answer_to(request);
        let registry_host = registry.url.trim_start_matches("http://");
        let mut env = Env::through(&format!("prov-kill-{point}"), Some(&log.url), Some(registry_host)).await;
        env.create_application().await;
        tokio::time::timeout(Duration::from_secs(120), proxy.sprung())
            .await
            .unwrap_or_else(|_| panic!("the controller reached {point}"));
        drop(env.weft.take()); // SIGKILL, mid-{point}
        let ap = provenances(&env.client, &env.ns).get_opt("shop-cart").await.unwrap();
        let status = ap.map(|a| a.data["status"].clone()).unwrap_or(Value::Null);
        assert_ne!(status["verdict"], "Verified", "killed {point}: {status}");
        assert!(status.get("rekor").is_none(), "killed {point}: nothing recorded yet: {status}");

        proxy.disarm();
        env.start_controller();
        let ap = env.recorded().await;
        assert_eq!(ap["status"]["verdict"], "Failed", "no imageVerification: recorded, not vouched for");
        // Let a few resyncs pass too.
        env.resyncs(2.0).await;
        // The image's signature (legacy and bundle) and its provenance: three entries, whatever the crash
        // interrupted (the log's search index is not used here: Rekor may not index an entry whose
        // client went away).
        assert_eq!(log_size() - before, 3, "killed {point}: two signature entries and one provenance entry");
        let index = ap["status"]["rekor"]["logIndex"].as_i64().unwrap();
        assert!(index >= before, "killed {point}: the entry is this run's ({index}, log was {before})");
        if point == "attesting" {
            let message = condition(&ap, "ProvenanceRecorded").unwrap()["message"].as_str().unwrap().to_string();
            assert!(message.contains("completing an earlier attempt"), "the entry from before the crash: {message}");
        }
    }
}

/// How many entries the log holds.
fn log_size() -> i64 {
    let (code, out, err) =
        run_cmd(Command::new("curl").args(["-sf"]).arg(format!("{}/api/v1/log", peer("WEFT_TEST_REKOR_URL"))));
    assert_eq!(code, 0, "rekor log info: {err}");
    serde_json::from_str::<Value>(&out).unwrap()["treeSize"].as_i64().expect("treeSize")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rekor_outage_mid_run_ends_in_exactly_one_entry() {
    let _alone = LOG.write().await;
    let mut env = Env::new("prov-outage").await;
    // Rekor goes down; the Application is synced meanwhile.
    let mut outage = Outage::begin();
    env.create_application().await;
    let pending = provenance_where(&env.client, &env.ns, "shop-cart", "a step waiting for Rekor", |v| {
        v["status"]["conditions"].as_array().is_some_and(|cs| cs.iter().any(|c| c["reason"] == "RekorUnavailable"))
    })
    .await;
    assert_eq!(pending["status"]["verdict"], "Pending");
    assert!(pending["status"].get("rekor").is_none(), "nothing recorded while the log is down");

    // The log comes back: the retries complete the run.
    outage.end();
    let ap = env.recorded().await;
    let image = ap["status"]["manifestImage"].as_str().unwrap().to_string();
    let digest = image.split('@').nth(1).unwrap().to_string();

    // Restart the controller too, and let several resyncs pass.
    env.weft.take().unwrap().terminate(Duration::from_secs(20)).await;
    env.start_controller();
    env.resyncs(2.0).await;
    let after = env.recorded().await;
    assert_eq!(after["status"]["rekor"], ap["status"]["rekor"], "the recorded entry stays the same");

    // Exactly two DSSE entries name the image (the provenance, and the signature's bundle), and one
    // signature entry its payload.
    assert_eq!(rekor_search(&digest).len(), 2, "one provenance entry and one signature bundle name the image");
    assert_eq!(
        rekor_search(&format!("sha256:{}", common::verify::sha256_hex(&cosign_payload(&image)))).len(),
        1,
        "one signature entry"
    );
    let _ = &env.repository;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_log_answering_with_another_key_is_never_provenance() {
    let _shared = LOG.read().await;
    let client = client().await;
    let ns = namespace(&client, "prov-wrongkey").await;
    let project = with_namespace(shop_files);
    // The configured log key is not the log's.
    let other = project.path("other.pem");
    assert!(
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "openssl ecparam -name prime256v1 -genkey -noout | openssl ec -pubout -out {}",
                other.display()
            ))
            .status()
            .unwrap()
            .success()
    );
    let text = std::fs::read_to_string(project.path("resources.yaml")).unwrap().replace(
        &serde_json::to_string(&std::fs::read_to_string(peer("WEFT_TEST_REKOR_PUBLIC_KEY")).unwrap()).unwrap(),
        &serde_json::to_string(&std::fs::read_to_string(&other).unwrap()).unwrap(),
    );
    std::fs::write(project.path("resources.yaml"), text).unwrap();
    project.apply_resources(&client, &ns).await;
    let repository = format!("{}/manifests/{}", peer("WEFT_TEST_REGISTRY"), ns);
    let mut profile: Value =
        serde_json::from_str(&std::fs::read_to_string(project.profile(&repository, true, json!({}))).unwrap()).unwrap();
    profile["metadata"] = json!({"name": "production"});
    create(&profiles(&client, &ns), profile).await;
    let _weft =
        WeftProcess::start(&["controller", "--namespace", &ns, "--cache-dir", project.path("cache").to_str().unwrap()]);
    let mut app: Value =
        serde_json::from_str(&std::fs::read_to_string(project.application(json!({}))).unwrap()).unwrap();
    app["metadata"] = json!({"name": "shop-cart"});
    create(&applications(&client, &ns), app).await;

    let ap = provenance_where(&client, &ns, "shop-cart", "a failed verification of the log", |v| {
        v["status"]["verdict"] == "Failed"
    })
    .await;
    assert_eq!(condition_reason(&ap, "Ready").as_deref(), Some("RekorEntryUnverified"), "{}", ap["status"]);
    assert!(ap["status"].get("rekor").is_none(), "never recorded as provenance");
    assert!(ap["status"].get("manifestImage").is_none());
}

/// A revision vouched for carries a verification summary (SLSA VSA v1) beside its provenance: logged,
/// attached to the manifest image, accepted by cosign v2 and v3 by its predicate type (from the registry
/// and from an OCI layout) and by slsa-verifier's `verify-vsa`, and re-checked by `weft provenance verify`. It names the profile (and the digest of its spec), the commits and
/// the images verified. A revision not vouched for (images not verified) gets none.
#[tokio::test(flavor = "multi_thread")]
async fn a_vouched_for_revision_has_a_verification_summary_cosign_accepts() {
    let _shared = LOG.read().await;
    let lab = common::images::Lab::new();
    let (project, web) = common::images::signed_image_project(&lab, "lab/summarized-web");
    let resources = project.path("resources.yaml");
    let repository = format!("{}/manifests/summary-{}", peer("WEFT_TEST_REGISTRY"), rand_suffix());
    let iv = lab.image_verification(common::images::key("keys"), json!({}));
    let app = project.application(json!({}));
    let pinned = common::images::Lab::pinned(&web);

    let root = trusted_root(project.dir.path());
    let verify = |cosign: &str, bin: &str, target: &[&str]| {
        let (code, out, err) = run_cmd(
            Command::new(bin)
                .env("SIGSTORE_REKOR_PUBLIC_KEY", peer("WEFT_TEST_REKOR_PUBLIC_KEY"))
                .current_dir(project.dir.path())
                .args(["verify-attestation", "--key", "weft.pub", "--type", weft::provenance::SLSA_VSA_V1])
                .args(["--trusted-root", &root])
                .args(target),
        );
        assert_eq!(code, 0, "{cosign} verify-attestation --type VSA {target:?}: {err}");
        let envelope = out.lines().next().unwrap().to_string();
        let payload = serde_json::from_str::<Value>(&envelope).unwrap()["payload"].as_str().unwrap().to_string();
        use base64::Engine;
        let payload = base64::engine::general_purpose::STANDARD.decode(payload).unwrap();
        (envelope, serde_json::from_slice::<Value>(&payload).unwrap())
    };

    // To the registry.
    let profile = project.profile(&repository, true, json!({"imageVerification": iv}));
    let (code, out, err) = project.run(&profile, &app, &[]);
    assert_eq!(code, 0, "weft run: {err}\n{out:#}");
    let summary_index = out["verificationSummary"]["logIndex"].as_i64().expect("a summary is logged");
    assert_ne!(Some(summary_index), out["provenance"]["logIndex"].as_i64());
    let image = out["manifestImage"].as_str().unwrap().to_string();
    let spec: weft::resources::profile::IntegrityProfile =
        serde_json::from_str(&std::fs::read_to_string(&profile).unwrap()).unwrap();
    let spec_digest = common::verify::sha256_hex(&serde_json::to_vec(&spec.spec).unwrap());
    for (cosign, bin) in cosigns() {
        let (envelope, s) = verify(cosign, &bin, &[&image]);
        assert_eq!(s["predicateType"], weft::provenance::SLSA_VSA_V1);
        // slsa-verifier reads it as a VSA: signature, type, subject, verifier, resource and levels.
        std::fs::write(project.path("vsa.json"), &envelope).unwrap();
        let slsa_verifier = |resource: &str| {
            run_cmd(Command::new("slsa-verifier").current_dir(project.dir.path()).args([
                "verify-vsa",
                "--attestation-path",
                "vsa.json",
                "--subject-digest",
                image.split('@').nth(1).unwrap(),
                "--verifier-id",
                s["predicate"]["verifier"]["id"].as_str().unwrap(),
                "--resource-uri",
                resource,
                "--verified-level",
                "WEFT_SOURCE_HISTORY_SIGNED",
                "--verified-level",
                "WEFT_IMAGES_VERIFIED",
                "--public-key-path",
                "weft.pub",
            ]))
        };
        let (code, out, err) = slsa_verifier(&format!("oci://{image}"));
        assert_eq!(code, 0, "slsa-verifier verify-vsa: {out}{err}");
        let (code, _, _) = slsa_verifier("oci://another/image");
        assert_ne!(code, 0, "slsa-verifier checks the resource");
        assert_eq!(
            format!("sha256:{}", s["subject"][0]["digest"]["sha256"].as_str().unwrap()),
            image.split('@').nth(1).unwrap()
        );
        let p = &s["predicate"];
        assert_eq!(p["verificationResult"], "PASSED", "{p:#}");
        assert_eq!(p["policy"]["digest"]["sha256"], spec_digest.as_str(), "{p:#}");
        assert!(
            p["policy"]["uri"].as_str().unwrap().starts_with("weft://integrityprofiles/argocd/p?generation="),
            "{p:#}"
        );
        let inputs = p["inputAttestations"].as_array().unwrap();
        assert!(inputs.iter().any(|i| i["digest"]["gitCommit"] == project.repo.head().as_str()), "{p:#}");
        let image_digest = pinned.split('@').nth(1).unwrap().trim_start_matches("sha256:");
        assert!(inputs.iter().any(|i| i["digest"]["sha256"] == image_digest), "{p:#}");
        assert!(p["verifiedLevels"].as_array().unwrap().contains(&json!("WEFT_SOURCE_HISTORY_SIGNED")), "{p:#}");
        // The provenance is still found by its own type among the image's attestations.
        let (code, _, err) = run_cmd(
            Command::new(&bin)
                .env("SIGSTORE_REKOR_PUBLIC_KEY", peer("WEFT_TEST_REKOR_PUBLIC_KEY"))
                .current_dir(project.dir.path())
                .args(["verify-attestation", "--key", "weft.pub", "--type", "slsaprovenance1", &image])
                .args(["--trusted-root", &root]),
        );
        assert_eq!(code, 0, "{cosign} verify-attestation --type slsaprovenance1 beside a summary: {err}");
    }
    // Run again: the same summary is recognized, nothing is logged twice.
    let (code, again, err) = project.run(&profile, &app, &[]);
    assert_eq!(code, 0, "weft run again: {err}");
    assert_eq!(again["verificationSummary"]["logIndex"].as_i64(), Some(summary_index), "{again:#}");

    // To an OCI layout.
    let (code, out, err) = project.run(&profile, &app, &["--out", "layout"]);
    assert_eq!(code, 0, "weft run --out: {err}\n{out:#}");
    for (cosign, bin) in cosigns() {
        let (_, s) = verify(cosign, &bin, &["--local-image", "layout"]);
        assert_eq!(s["predicate"]["verificationResult"], "PASSED");
    }

    // Through the controller: the record names the summary, and `weft provenance verify` re-checks it.
    let client = client().await;
    let ns = namespace(&client, "summary").await;
    apply_documents(&client, &ns, &std::fs::read_to_string(&resources).unwrap()).await;
    let mut profile: Value = serde_json::from_str(&std::fs::read_to_string(&profile).unwrap()).unwrap();
    profile["metadata"] = json!({"name": "production"});
    create(&profiles(&client, &ns), profile.clone()).await;
    let mut application: Value = serde_json::from_str(&std::fs::read_to_string(&app).unwrap()).unwrap();
    application["metadata"] = json!({"name": "shop-cart"});
    create(&applications(&client, &ns), application).await;
    let cache = project.path("controller-cache");
    let _controller = WeftProcess::start(&["controller", "--namespace", &ns, "--cache-dir", cache.to_str().unwrap()]);
    let ap = provenance_where(&client, &ns, "shop-cart", "a verified revision with a summary", |v| {
        v["status"]["verdict"] == "Verified" && v["status"]["verificationSummary"]["uuid"].is_string()
    })
    .await;
    let reverify = |args: &[&str]| {
        run_cmd(
            Command::new(env!("CARGO_BIN_EXE_weft"))
                .current_dir(project.dir.path())
                .env("KUBECONFIG", kubeconfig_path())
                .args(["provenance", "verify", "--cache-dir", "verify-cache"])
                .args(args),
        )
    };
    let (code, out, err) = reverify(&[&format!("{ns}/shop-cart")]);
    assert_eq!(code, 0, "weft provenance verify:\n{out}{err}");
    assert!(out.contains("ok   the verification summary (SLSA VSA"), "{out}");
    let mut tampered = ap.clone();
    tampered["status"]["verificationSummary"] = ap["status"]["rekor"].clone();
    let file = project.path("tampered.json");
    std::fs::write(&file, tampered.to_string()).unwrap();
    std::fs::write(project.path("production.json"), profile.to_string()).unwrap();
    let (code, out, _) =
        reverify(&["--from-file", "tampered.json", "--profile", "production.json", "--resources", "resources.yaml"]);
    assert_eq!(code, 1, "the provenance's entry is not a summary:\n{out}");
    assert!(out.contains("FAIL the verification summary"), "{out}");

    // Not vouched for (the profile does not verify images): a provenance, and no summary.
    let repository = format!("{}/manifests/summary-{}", peer("WEFT_TEST_REGISTRY"), rand_suffix());
    let profile = project.profile(&repository, true, json!({}));
    let (_, out, err) = project.run(&profile, &app, &[]);
    assert!(out["provenance"]["logIndex"].is_i64(), "{err}\n{out:#}");
    assert!(out["verificationSummary"].is_null(), "{out:#}");
    let image = out["manifestImage"].as_str().unwrap().to_string();
    let (code, _, _) = run_cmd(
        Command::new("cosign")
            .env("SIGSTORE_REKOR_PUBLIC_KEY", peer("WEFT_TEST_REKOR_PUBLIC_KEY"))
            .current_dir(project.dir.path())
            .args(["verify-attestation", "--key", "weft.pub", "--type", weft::provenance::SLSA_VSA_V1, &image])
            .args(["--trusted-root", &root]),
    );
    assert_ne!(code, 0, "no summary is attached to a revision not vouched for");
}
