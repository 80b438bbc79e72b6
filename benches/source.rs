//! Strict source verification of a long signed history, side by side with git's own check.
//!
//! `cargo bench --bench source` generates a repository of N commits (default 10 000, `WEFT_BENCH_COMMITS`)
//! signed with an ed25519 key made by gpg (and, in the SSH variant, by ssh-keygen), then times in one run:
//! - git's check, the mechanism Argo CD uses: `git log --format=%G?` over the whole history (git runs gpg or
//!   ssh-keygen once per commit); every commit must come back good;
//! - `weft verify-source`, the command a person runs (a new process: cold cache);
//! - Weft's strict walk in-process, cold, and after one new commit (warm cache; median of 20).
//!
//! The history is packed (`git repack`) before anything reads it, as a cloned or fetched repository is.
//!
//! Commits are written with gix and signed in-process (rPGP / ssh-key) to keep generation short; git and
//! gpg verify those same signatures in the comparison, so they are ordinary signatures.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use gix::bstr::ByteSlice;
use gix::prelude::Write as _;
use pgp::composed::{Deserializable, DetachedSignature, SignedSecretKey};
use pgp::types::Password;
use weft::source::history::{self, VerifiedCommits};
use weft::source::openpgp::AllowedPgpKeys;
use weft::source::sshsig::AllowedSigners;
use weft::source::{CommitId, Trust};

enum Signer {
    Gpg(Box<SignedSecretKey>),
    Ssh(Box<ssh_key::PrivateKey>),
}

impl Signer {
    fn sign(&self, payload: &[u8]) -> String {
        match self {
            Signer::Gpg(key) => {
                let sig = DetachedSignature::sign_binary_data(
                    rand::thread_rng(),
                    &key.primary_key,
                    &Password::empty(),
                    pgp::crypto::hash::HashAlgorithm::Sha256,
                    payload,
                )
                .expect("sign");
                sig.to_armored_string(Default::default()).expect("armor")
            }
            Signer::Ssh(key) => key
                .sign("git", ssh_key::HashAlg::Sha512, payload)
                .expect("sign")
                .to_pem(ssh_key::LineEnding::LF)
                .expect("pem"),
        }
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes a linear history of `n` signed commits on top of `parent` and points `main` at the last one.
fn write_commits(
    repo: &gix::Repository,
    signer: &Signer,
    parent: Option<gix::ObjectId>,
    n: usize,
    start: usize,
) -> gix::ObjectId {
    let tree = repo.empty_tree().id;
    let mut parent = parent;
    let base_time = 1_790_000_000 + start as i64 * 60;
    for i in 0..n {
        let time = base_time + i as i64 * 60;
        let mut payload = format!("tree {tree}\n");
        if let Some(p) = parent {
            payload.push_str(&format!("parent {p}\n"));
        }
        payload.push_str(&format!(
            "author Alice <alice@example.com> {time} +0000\ncommitter Alice <alice@example.com> {time} +0000\n\ncommit {}\n",
            start + i
        ));
        let sig = signer.sign(payload.as_bytes());
        // The signature goes in a `gpgsig` header, continuation lines indented by one space.
        let (head, body) = payload.split_once("\n\n").expect("message");
        let mut object = format!("{head}\ngpgsig");
        for line in sig.trim_end().lines() {
            object.push(' ');
            object.push_str(line);
            object.push('\n');
        }
        object.push('\n');
        object.push_str(body);
        let id = repo.objects.write_buf(gix::object::Kind::Commit, object.as_bytes()).expect("write commit");
        parent = Some(id);
    }
    let id = parent.expect("at least one commit");
    std::fs::write(repo.path().join("refs/heads/main"), format!("{id}\n")).expect("ref");
    id
}

fn median(mut d: Vec<Duration>) -> Duration {
    d.sort();
    d[d.len() / 2]
}

fn secs(d: Duration) -> String {
    if d.as_secs_f64() >= 1.0 {
        format!("{:.2} s", d.as_secs_f64())
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1000.0)
    }
}

struct Row {
    variant: &'static str,
    git: Duration,
    cli: Duration,
    cold: Duration,
    incremental: Duration,
}

fn bench(variant: &'static str, n: usize, dir: &Path) -> Row {
    let repo_dir = dir.join(format!("repo-{variant}"));
    run(Command::new("git").args(["init", "-q", "-b", "main"]).arg(&repo_dir));
    let gnupghome = dir.join(format!("gnupg-{variant}"));
    std::fs::create_dir_all(&gnupghome).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&gnupghome, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let gpg = |args: &[&str]| {
        run(Command::new("gpg").env("GNUPGHOME", &gnupghome).args(["--batch", "--yes", "--passphrase", ""]).args(args))
    };

    // Keys, and what Weft's profile and git's check each need to trust them.
    let (signer, trust, resources, policy_keys) = match variant {
        "gpg" => {
            gpg(&["--quick-gen-key", "Alice <alice@example.com>", "ed25519", "sign", "2y"]);
            let listing = gpg(&["--list-keys", "--with-colons", "alice@example.com"]);
            let fpr =
                listing.lines().find(|l| l.starts_with("fpr:")).and_then(|l| l.split(':').nth(9)).unwrap().to_string();
            let public = gpg(&["--armor", "--export", &fpr]);
            let secret = gpg(&["--armor", "--pinentry-mode", "loopback", "--export-secret-keys", &fpr]);
            let (key, _) = SignedSecretKey::from_string(&secret).expect("secret key");
            let trust = Trust::new(
                Some(AllowedPgpKeys::new(&[public.as_str()], std::slice::from_ref(&fpr)).unwrap()),
                None,
                None,
            );
            let resources = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "keys"}, "data": {"key.asc": public}});
            let policy =
                serde_json::json!({"mode": "strict", "keys": [fpr], "keyring": {"configMapRef": {"name": "keys"}}});
            (Signer::Gpg(Box::new(key)), trust, resources, policy)
        }
        _ => {
            let key_path = dir.join("id_ed25519");
            run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key_path));
            let key = ssh_key::PrivateKey::read_openssh_file(&key_path).expect("ssh key");
            let line = format!(
                "alice@example.com {}",
                std::fs::read_to_string(key_path.with_extension("pub")).unwrap().trim()
            );
            let signers_file = dir.join("allowed_signers");
            std::fs::write(&signers_file, format!("{line}\n")).unwrap();
            run(Command::new("git")
                .current_dir(&repo_dir)
                .args(["config", "gpg.ssh.allowedSignersFile"])
                .arg(&signers_file));
            let trust = Trust::new(None, Some(AllowedSigners::parse(&line).unwrap()), None);
            let resources = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "signers"}, "data": {"allowed_signers": line}});
            (Signer::Ssh(Box::new(key)), trust, resources, serde_json::json!({"mode": "strict"}))
        }
    };
    let repo = gix::open(&repo_dir).expect("open");
    let t = Instant::now();
    let head = write_commits(&repo, &signer, None, n, 0);
    // Packed, as every repository that was cloned or fetched is; git and Weft read the same pack.
    run(Command::new("git").current_dir(&repo_dir).args(["repack", "-a", "-d", "-q"]));
    eprintln!("[{variant}] generated {n} signed commits in {} (packed)", secs(t.elapsed()));

    // git's own check: every commit must come back good ('G', or 'U' for a good signature by a key gpg
    // has no trust path to).
    let t = Instant::now();
    let out = run(Command::new("git").current_dir(&repo_dir).env("GNUPGHOME", &gnupghome).args([
        "log",
        "--format=%G?",
        "main",
    ]));
    let git = t.elapsed();
    let good = out.lines().filter(|l| *l == "G" || *l == "U").count();
    assert_eq!(good, n, "git must find every signature good (got {good} of {n})");
    eprintln!("[{variant}] git log --format=%G?: {}", secs(git));

    // The command a person runs: a new process, cold.
    let mut policy = serde_json::json!({"repos": [{"url": "*"}], "gpg": policy_keys});
    if variant == "ssh" {
        policy["ssh"] =
            serde_json::json!({"allowedSigners": {"configMapRef": {"name": "signers", "key": "allowed_signers"}}});
    }
    let profile = serde_json::json!({"apiVersion": "weft.dev/v1alpha1", "kind": "IntegrityProfile", "metadata": {"name": "bench"},
        "spec": {"applicationSelector": [{"name": "*"}], "sourceIntegrity": {"git": {"policies": [policy]}}}});
    std::fs::write(dir.join("profile.yaml"), profile.to_string()).unwrap();
    std::fs::write(dir.join("resources.yaml"), resources.to_string()).unwrap();
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_weft"))
        .current_dir(dir)
        .args([
            "verify-source",
            "--profile",
            "profile.yaml",
            "--resources",
            "resources.yaml",
            "--revision",
            &head.to_string(),
            "--repo",
        ])
        .arg(&repo_dir)
        .output()
        .unwrap();
    let cli = t.elapsed();
    assert!(out.status.success(), "weft verify-source: {}{}", out.stdout.to_str_lossy(), out.stderr.to_str_lossy());
    eprintln!("[{variant}] weft verify-source (new process): {}", secs(cli));

    // In-process: cold, then one new commit at a time with the cache warm.
    let local = weft::source::repo::Repo::open(&repo_dir).unwrap();
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let cache = VerifiedCommits::default();
    let target = CommitId::parse(&head.to_string()).unwrap();
    let t = Instant::now();
    let outcome = history::verify_strict(&local, &target, &trust, &cache, now).unwrap();
    let cold = t.elapsed();
    assert!(outcome.failure.is_none() && outcome.checked == n, "cold walk: {outcome:?}");
    eprintln!("[{variant}] weft strict, cold: {}", secs(cold));

    let mut samples = Vec::new();
    let mut tip = head;
    for i in 0..20 {
        tip = write_commits(&repo, &signer, Some(tip), 1, n + i);
        let local = weft::source::repo::Repo::open(&repo_dir).unwrap();
        let target = CommitId::parse(&tip.to_string()).unwrap();
        let t = Instant::now();
        let outcome = history::verify_strict(&local, &target, &trust, &cache, now).unwrap();
        samples.push(t.elapsed());
        assert!(outcome.failure.is_none() && outcome.checked == 1 && outcome.cached == 1, "incremental: {outcome:?}");
    }
    let incremental = median(samples);
    eprintln!("[{variant}] weft strict, one new commit (median of 20): {}", secs(incremental));
    Row { variant, git, cli, cold, incremental }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too, with a small history.
    let testing = !std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("WEFT_BENCH_COMMITS").ok().and_then(|v| v.parse().ok()).unwrap_or(if testing {
        50
    } else {
        10_000
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let rows: Vec<Row> = ["gpg", "ssh"].iter().map(|v| bench(v, n, dir.path())).collect();
    let cores = std::thread::available_parallelism().map(|c| c.get()).unwrap_or(1);
    println!("\nStrict verification of {n} signed commits ({cores} cores):\n");
    println!(
        "| signatures | git log --format=%G? (git + gpg/ssh-keygen per commit) | weft verify-source (new process) | Weft strict, cold (in-process) | speed-up, cold vs git | Weft, one new commit (warm) |"
    );
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {:.0}x | {} |",
            if r.variant == "gpg" { "GPG (ed25519)" } else { "SSH (ed25519)" },
            secs(r.git),
            secs(r.cli),
            secs(r.cold),
            r.git.as_secs_f64() / r.cli.as_secs_f64(),
            secs(r.incremental)
        );
    }
    for v in ["gpg", "ssh"] {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", dir.path().join(format!("gnupg-{v}")))
            .args(["--kill", "gpg-agent"])
            .output();
    }
    // WEFT_BENCH_KEEP=1 keeps the repositories, keys, profile and resources (to profile Weft on them).
    if std::env::var_os("WEFT_BENCH_KEEP").is_some() {
        eprintln!("kept {}", dir.keep().display());
    }
}
