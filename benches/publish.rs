//! Sign and push an application of 500 resources, side by side with `kubectl sigstore sign -i` on the same
//! manifests, the same key, the same registry and the same Rekor, in one run.
//!
//! Needs the test environment's registry and Rekor:
//! `tests/env/testenv.sh run -- cargo bench --bench publish`.
//!
//! Each round changes one resource, so every tool signs, logs and pushes new content every time (an
//! unchanged render is a no-op for Weft). Reported: the median of the rounds. Also: decrypting a
//! cosign-encrypted key (scrypt), which `weft run` does once, beside `cosign sign-blob` with that key.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{env, median, run};
use weft::oci::Registry;
use weft::provenance::rekor::{LogKey, Rekor};
use weft::render::manifest::{self, Limits};
use weft::signing::key::SigningKey;
use weft::signing::publish::{self, Destination, Log};

const RESOURCES: usize = 500;

/// 500 resources: ConfigMaps, Services and Deployments, one file each; `round` changes one of them.
fn write_manifests(dir: &Path, round: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..RESOURCES {
        let doc = match i % 4 {
            0 | 1 => format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: config-{i}, namespace: bench}}\ndata: {{key: value-{i}, round: \"{}\"}}\n",
                if i == 0 { round } else { 0 }
            ),
            2 => format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: bench}}\nspec:\n  selector: {{app: app-{i}}}\n  ports: [{{port: 80, targetPort: 8080}}]\n"
            ),
            _ => format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: app-{i}, namespace: bench, labels: {{app: app-{i}}}}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: app-{i}}}}}\n  template:\n    metadata: {{labels: {{app: app-{i}}}}}\n    spec:\n      containers:\n      - name: app\n        image: registry.example/bench/app:{i}\n        ports: [{{containerPort: 8080}}]\n        env: [{{name: INDEX, value: \"{i}\"}}]\n"
            ),
        };
        std::fs::write(dir.join(format!("r{i:03}.yaml")), doc).unwrap();
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let testing = !std::env::args().any(|a| a == "--bench");
    let rounds = if testing { 1 } else { 7 };
    let registry = env("WEFT_TEST_REGISTRY", "publish");
    let rekor_url = env("WEFT_TEST_REKOR_URL", "publish");
    let rekor_pub = std::fs::read_to_string(env("WEFT_TEST_REKOR_PUBLIC_KEY", "publish")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let manifests_dir = dir.path().join("manifests");
    run(Command::new("cosign").current_dir(dir.path()).env("COSIGN_PASSWORD", "bench").args([
        "generate-key-pair",
        "--output-key-prefix",
        "bench",
    ]));
    let key =
        SigningKey::from_pem(&std::fs::read_to_string(dir.path().join("bench.key")).unwrap(), Some("bench")).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let rekor = Rekor::new(&rekor_url);
    let log_key = LogKey::from_pem(&rekor_pub).unwrap();

    // For `weft run`: the same files in a git repository signed with an SSH key, and the profile.
    let repo = dir.path().join("repo");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "release@example.com", "-f"])
        .arg(dir.path().join("ssh")));
    run(Command::new("git").args(["init", "-q", "-b", "main"]).arg(&repo));
    let signers =
        format!("release@example.com {}", std::fs::read_to_string(dir.path().join("ssh.pub")).unwrap().trim());
    let resources = [
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "signers"}, "data": {"allowed_signers": signers}}),
        serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "signing"},
            "stringData": {"cosign.key": std::fs::read_to_string(dir.path().join("bench.key")).unwrap(), "cosign.password": "bench"}}),
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "rekor"}, "data": {"rekor.pub": rekor_pub}}),
    ];
    std::fs::write(
        dir.path().join("resources.yaml"),
        resources.iter().map(|r| r.to_string()).collect::<Vec<_>>().join("\n---\n"),
    )
    .unwrap();
    let profile = serde_json::json!({"apiVersion": "weft.dev/v1alpha1", "kind": "IntegrityProfile", "metadata": {"name": "bench"}, "spec": {
        "applicationSelector": [{"name": "*"}],
        "sourceIntegrity": {"git": {"policies": [{"repos": [{"url": "*"}], "gpg": {"mode": "strict"},
            "ssh": {"allowedSigners": {"configMapRef": {"name": "signers", "key": "allowed_signers"}}}}]}},
        "manifestSigning": {"key": {"secretRef": {"name": "signing", "key": "cosign.key"}, "passwordKey": "cosign.password"},
                            "image": {"repository": format!("{registry}/bench/weft-run")}},
        "provenance": {"rekor": {"url": rekor_url, "publicKey": {"configMapRef": {"name": "rekor", "key": "rekor.pub"}}}}}});
    std::fs::write(dir.path().join("profile.yaml"), profile.to_string()).unwrap();
    let git = |args: &[&str]| {
        run(Command::new("git")
            .current_dir(&repo)
            .args(["-c", "user.name=R", "-c", "user.email=r@e", "-c", "gpg.format=ssh"])
            .arg("-c")
            .arg(format!("user.signingkey={}", dir.path().join("ssh").display()))
            .args(args))
    };

    // Decrypting the key: Weft alone, and cosign signing a small blob with it (its decryption included).
    let pem = std::fs::read_to_string(dir.path().join("bench.key")).unwrap();
    std::fs::write(dir.path().join("blob"), b"bench").unwrap();
    let (mut decrypt, mut cosign_blob) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        SigningKey::from_pem(&pem, Some("bench")).unwrap();
        decrypt.push(t.elapsed());
        let t = Instant::now();
        run(Command::new("cosign").current_dir(dir.path()).env("COSIGN_PASSWORD", "bench").args([
            "sign-blob",
            "--key",
            "bench.key",
            "--tlog-upload=false",
            "--yes",
            "blob",
        ]));
        cosign_blob.push(t.elapsed());
    }

    let (mut kubectl, mut weft, mut weft_run) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        // kubectl sigstore: reads the files, signs, pushes the image, signs it (logged in Rekor).
        // (`--no-tlog-upload` is its flag for skipping the confirmation prompt: the two are swapped.)
        write_manifests(&manifests_dir, round);
        let t = Instant::now();
        run(Command::new("kubectl-sigstore")
            .current_dir(dir.path())
            .env("COSIGN_PASSWORD", "bench")
            .args([
                "sign",
                "-f",
                "manifests",
                "-i",
                &format!("{registry}/bench/kubectl-sigstore:r{round}"),
                "-k",
                "bench.key",
            ])
            .args(["--rekor-url", &rekor_url, "--no-tlog-upload", "-o", "signed.yaml"]));
        kubectl.push(t.elapsed());

        // Weft: the same files, parsed, normalized, signed, pushed, the signature logged and verified.
        write_manifests(&manifests_dir, round + 1000);
        let t = Instant::now();
        let mut all = Vec::new();
        let mut files: Vec<_> = std::fs::read_dir(&manifests_dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files {
            all.extend(
                manifest::parse(&f.display().to_string(), &std::fs::read_to_string(&f).unwrap(), Limits::default())
                    .unwrap(),
            );
        }
        manifest::sort(&mut all);
        let dest = Destination::Registry {
            registry: Registry::new(&format!("{registry}/bench/weft"), None).unwrap(),
            tag: format!("r{round}"),
        };
        let published = runtime
            .block_on(publish::publish(&dest, &all, &key, Some(Log::V1 { rekor: &rekor, key: &log_key })))
            .unwrap();
        weft.push(t.elapsed());
        assert!(published.signed && published.tlog.is_some() && published.resources == RESOURCES, "{published:?}");

        // `weft run`, a new process: verify the signed commit, render the directory, sign, publish.
        write_manifests(&repo, round + 2000);
        git(&["add", "-A"]);
        git(&["commit", "-q", "-S", "-m", &format!("round {round}")]);
        let head = git(&["rev-parse", "HEAD"]).trim().to_string();
        let app = serde_json::json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "metadata": {"name": "bench", "namespace": "argocd"},
            "spec": {"source": {"repoURL": repo.display().to_string(), "path": "."}, "destination": {"namespace": "bench"}},
            "status": {"sync": {"status": "Synced", "revision": head}}});
        std::fs::write(dir.path().join("application.yaml"), app.to_string()).unwrap();
        let t = Instant::now();
        run(Command::new(env!("CARGO_BIN_EXE_weft")).current_dir(dir.path()).args([
            "run",
            "--application",
            "application.yaml",
            "--profile",
            "profile.yaml",
            "--resources",
            "resources.yaml",
            "--cache-dir",
            "cache",
        ]));
        weft_run.push(t.elapsed());
    }

    // Both images verify with the real cosign, against the same key and log (named in a trusted root:
    // Weft's image also carries Sigstore bundles, for which cosign wants one).
    let root = weft::bundle::trusted_root_for_log(&rekor_url, &log_key.der());
    std::fs::write(dir.path().join("trusted_root.json"), root.to_string()).unwrap();
    for image in [format!("{registry}/bench/kubectl-sigstore:r{rounds}"), format!("{registry}/bench/weft:r{rounds}")] {
        run(Command::new("cosign").current_dir(dir.path()).args([
            "verify",
            "--key",
            "bench.pub",
            "--trusted-root",
            "trusted_root.json",
            &image,
        ]));
    }

    let (k, w, r) = (median(kubectl), median(weft), median(weft_run));
    let cores = std::thread::available_parallelism().map(|c| c.get()).unwrap_or(1);
    println!(
        "\nSign and push {RESOURCES} resources (median of {rounds} rounds, {cores} cores; local registry and Rekor):\n"
    );
    println!("| tool | time | speed-up |");
    println!("|---|---|---|");
    println!("| kubectl sigstore sign -i (new process) | {} | 1.0x |", ms(k));
    println!(
        "| weft run (new process: verify the signed commit, render, sign, publish) | {} | {:.1}x |",
        ms(r),
        k.as_secs_f64() / r.as_secs_f64()
    );
    println!("| Weft sign and publish only (in-process) | {} | {:.1}x |", ms(w), k.as_secs_f64() / w.as_secs_f64());
    let (c, d) = (median(cosign_blob), median(decrypt));
    println!("\nDecrypting a cosign-encrypted key (scrypt N=32768, r=8, p=1; median of {rounds}):\n");
    println!("| tool | time |");
    println!("|---|---|");
    println!("| cosign sign-blob --key (new process: decrypt, sign, no log) | {} |", ms(c));
    println!("| Weft decrypting the key (once per weft run) | {} |", ms(d));
}
