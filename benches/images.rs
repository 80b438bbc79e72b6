//! Image verifications per second, side by side with `cosign verify --key` on the same images, the same
//! key, the same local registry and the same Rekor, in one run.
//!
//! Needs the test environment's registry and Rekor:
//! `tests/env/testenv.sh run -- cargo bench --bench images`.
//!
//! Reported: the median of the rounds, as verifications per second.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::{env, median, run};
use sha2::{Digest, Sha256};
use weft::images::ImageVerifier;
use weft::images::policy::ImagePolicies;
use weft::resources::profile::IntegrityProfile;
use weft::resources::provenance::ImageOutcome;

const IMAGES: usize = 20;

fn per_second(d: Duration, n: usize) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn main() {
    let testing = !std::env::args().any(|a| a == "--bench");
    let rounds = if testing { 1 } else { 5 };
    let registry = env("WEFT_TEST_REGISTRY", "images");
    let rekor_url = env("WEFT_TEST_REKOR_URL", "images");
    let rekor_pub = env("WEFT_TEST_REKOR_PUBLIC_KEY", "images");
    let dir = tempfile::tempdir().unwrap();
    let cosign = || {
        let mut c = Command::new("cosign");
        c.current_dir(dir.path()).env("COSIGN_PASSWORD", "bench").env("SIGSTORE_REKOR_PUBLIC_KEY", &rekor_pub);
        c
    };
    run(cosign().args(["generate-key-pair", "--output-key-prefix", "bench"]));

    // IMAGES images, each signed by cosign and logged in Rekor.
    let mut images = Vec::new();
    for i in 0..IMAGES {
        let layer = dir.path().join(format!("layer-{i}"));
        std::fs::write(&layer, format!("image {i} {}\n", std::process::id())).unwrap();
        run(Command::new("tar").current_dir(dir.path()).args(["cf", &format!("layer-{i}.tar"), &format!("layer-{i}")]));
        let tagged = format!("{registry}/bench/image-{i}:1");
        run(Command::new("crane").current_dir(dir.path()).args([
            "append",
            "-f",
            &format!("layer-{i}.tar"),
            "-t",
            &tagged,
        ]));
        let digest = run(Command::new("crane").args(["digest", &tagged])).trim().to_string();
        let pinned = format!("{registry}/bench/image-{i}@{digest}");
        run(cosign().args([
            "sign",
            "--key",
            "bench.key",
            "--rekor-url",
            &rekor_url,
            "--tlog-upload=true",
            "-y",
            &pinned,
        ]));
        images.push((tagged, pinned));
    }

    // The profile: the key, and a trust root naming the local Rekor.
    let der =
        run(Command::new("sh").args(["-c", &format!("openssl pkey -pubin -in {rekor_pub} -outform DER | base64 -w0")]));
    let der = B64.decode(der.trim()).unwrap();
    let root = serde_json::json!({
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": [{"baseUrl": rekor_url, "hashAlgorithm": "SHA2_256",
            "publicKey": {"rawBytes": B64.encode(&der), "keyDetails": "PKIX_ECDSA_P256_SHA_256", "validFor": {"start": "2020-01-01T00:00:00Z"}},
            "logId": {"keyId": B64.encode(Sha256::digest(&der))}}],
        "certificateAuthorities": [], "ctlogs": [], "timestampAuthorities": []
    });
    let resources = [
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "sigstore"}, "data": {"trusted_root.json": root.to_string()}}),
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "keys"},
            "data": {"cosign.pub": std::fs::read_to_string(dir.path().join("bench.pub")).unwrap()}}),
    ];
    let resources: Vec<String> = resources.iter().map(|r| r.to_string()).collect();
    std::fs::write(dir.path().join("resources.yaml"), resources.join("\n---\n")).unwrap();
    let profile = serde_json::json!({"apiVersion": "weft.dev/v1alpha1", "kind": "IntegrityProfile", "metadata": {"name": "bench"}, "spec": {
        "applicationSelector": [{"name": "*"}],
        "imageVerification": {"trustedRoot": {"configMapRef": {"name": "sigstore", "key": "trusted_root.json"}},
            "policies": [{"images": [format!("{registry}/bench/**")], "signers": [{"key": {"configMapRef": {"name": "keys", "key": "cosign.pub"}}}]}]}}});
    std::fs::write(dir.path().join("profile.yaml"), profile.to_string()).unwrap();
    let parsed: IntegrityProfile = serde_json::from_value(profile).unwrap();
    let referenced = weft::referenced::ReferencedObjects::from_yaml(&resources.join("\n---\n")).unwrap();
    let policies = ImagePolicies::compile(parsed.spec.image_verification.as_ref().unwrap(), &referenced).unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let list = |pinned: bool| -> Vec<(String, Vec<String>)> {
        images.iter().map(|(t, p)| (if pinned { p.clone() } else { t.clone() }, vec!["bench".to_string()])).collect()
    };
    let verify = |verifier: &ImageVerifier, list: &[(String, Vec<String>)]| {
        let out = runtime.block_on(verifier.verify(&policies, list));
        assert!(out.iter().all(|s| s.outcome == ImageOutcome::Verified), "{out:?}");
    };
    let (mut cosign_times, mut cli, mut cold, mut warm_tag, mut warm_digest) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        // cosign verify: one process per image, as a script or an admission hook would call it.
        let t = Instant::now();
        for (tagged, _) in &images {
            run(cosign().args(["verify", "--key", "bench.pub", tagged]));
        }
        cosign_times.push(t.elapsed());

        // weft verify-images: one process for all of them.
        let t = Instant::now();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
        cmd.current_dir(dir.path()).args([
            "verify-images",
            "--profile",
            "profile.yaml",
            "--resources",
            "resources.yaml",
        ]);
        run(cmd.args(images.iter().map(|(t, _)| t)));
        cli.push(t.elapsed());

        // In-process, as the controller: cold (from the registry), then warm (from the cache).
        let verifier = ImageVerifier::default();
        let t = Instant::now();
        verify(&verifier, &list(false));
        cold.push(t.elapsed());
        let t = Instant::now();
        verify(&verifier, &list(false));
        warm_tag.push(t.elapsed());
        let pinned = list(true);
        let t = Instant::now();
        for _ in 0..100 {
            verify(&verifier, &pinned);
        }
        warm_digest.push(t.elapsed() / 100);
    }

    let base = per_second(median(cosign_times.clone()), IMAGES);
    let row = |name: &str, d: Vec<Duration>| {
        let v = per_second(median(d), IMAGES);
        println!("| {name} | {v:.0} | {:.1}× |", v / base);
    };
    println!(
        "\n{IMAGES} images signed with a cosign key, each signature logged in the local Rekor (median of {rounds} rounds)\n"
    );
    println!("| tool | verifications per second | speed-up |\n|---|---|---|");
    row("cosign verify --key (a process per image)", cosign_times);
    row("weft verify-images (one process, all images)", cli);
    row("Weft in-process, from the registry (cache cold)", cold);
    row("Weft in-process, cache warm, tags resolved again", warm_tag);
    row("Weft in-process, cache warm, references pinned by digest", warm_digest);
}
