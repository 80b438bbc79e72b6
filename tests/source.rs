//! `weft verify-source` against real repositories signed by the real gpg and ssh-keygen: the verdict,
//! its reason, and the exit code.

mod common;

use std::path::Path;
use std::process::Command;

use common::git::{GitHttpServer, Gpg, Repo, Sign, ssh_key};
use common::verify::*;
use serde_json::{Value, json};

#[test]
fn gpg_strict_good_history_verifies_and_names_the_signer() {
    let gpg = Gpg::new();
    let alice = gpg.key("Alice");
    let repo = Repo::new(&gpg);
    for i in 0..5 {
        repo.commit(&format!("c{i}"), Sign::Gpg(&alice));
    }
    let dir = tempfile::tempdir().unwrap();
    let run = verify(
        dir.path(),
        gpg_policy("*", "strict", &[&alice]),
        &[keyring(&gpg, &[&alice])],
        &repo.path().display().to_string(),
        "main",
        &[],
    );
    assert_verdict(&run, 0, "Verified");
    assert_eq!(run.verdict["commit"], repo.head());
    assert_eq!(run.verdict["history"]["checked"], 5);
    assert_eq!(run.verdict["history"]["headSigner"]["fingerprint"], alice.fingerprint);
    assert!(run.verdict["message"].as_str().unwrap().contains("back to the root"));
}

#[test]
fn a_signature_by_a_key_that_is_not_allowed_fails() {
    let gpg = Gpg::new();
    let (alice, mallory) = (gpg.key("Alice"), gpg.key("Mallory"));
    let repo = Repo::new(&gpg);
    repo.commit("c1", Sign::Gpg(&mallory));
    let dir = tempfile::tempdir().unwrap();
    let run = verify(
        dir.path(),
        gpg_policy("*", "head", &[&alice]),
        &[keyring(&gpg, &[&alice, &mallory])],
        &repo.path().display().to_string(),
        &repo.head(),
        &[],
    );
    assert_verdict(&run, 1, "KeyNotAllowed");
    assert!(
        run.verdict["message"].as_str().unwrap().contains(&mallory.fingerprint[24..]),
        "{}",
        run.verdict["message"]
    );
}

#[test]
fn a_tampered_commit_keeps_a_signature_that_no_longer_verifies() {
    let gpg = Gpg::new();
    let alice = gpg.key("Alice");
    let repo = Repo::new(&gpg);
    let good = repo.commit("c1", Sign::Gpg(&alice));
    let forged = repo.tampered_copy(&good);
    let dir = tempfile::tempdir().unwrap();
    let run = verify(
        dir.path(),
        gpg_policy("*", "head", &[&alice]),
        &[keyring(&gpg, &[&alice])],
        &repo.path().display().to_string(),
        &forged,
        &[],
    );
    assert_verdict(&run, 1, "BadSignature");
}

#[test]
fn strict_finds_an_unsigned_commit_deep_in_history_and_head_does_not_look() {
    let gpg = Gpg::new();
    let alice = gpg.key("Alice");
    let repo = Repo::new(&gpg);
    repo.commit("c1", Sign::Gpg(&alice));
    let unsigned = repo.commit("sneaky", Sign::No);
    for i in 0..10 {
        repo.commit(&format!("c{i}"), Sign::Gpg(&alice));
    }
    let dir = tempfile::tempdir().unwrap();
    let keys = [keyring(&gpg, &[&alice])];
    let path = repo.path().display().to_string();
    let run = verify(dir.path(), gpg_policy("*", "strict", &[&alice]), &keys, &path, "main", &[]);
    assert_verdict(&run, 1, "Unsigned");
    assert_eq!(run.verdict["history"]["failure"]["commit"], unsigned);
    assert!(run.verdict["message"].as_str().unwrap().contains("sneaky"));
    assert_verdict(&verify(dir.path(), gpg_policy("*", "head", &[&alice]), &keys, &path, "main", &[]), 0, "Verified");
}

#[test]
fn a_merge_that_brings_in_an_unsigned_branch_fails_strict() {
    let gpg = Gpg::new();
    let alice = gpg.key("Alice");
    let repo = Repo::new(&gpg);
    repo.commit("base", Sign::Gpg(&alice));
    repo.git(&["checkout", "-q", "-b", "feature"]);
    let unsigned = repo.commit("feature work", Sign::No);
    repo.git(&["checkout", "-q", "main"]);
    repo.commit("main work", Sign::Gpg(&alice));
    repo.git(&[
        "-c",
        &format!("user.signingkey={}!", alice.fingerprint),
        "merge",
        "-q",
        "-S",
        "--no-ff",
        "-m",
        "merge feature",
        "feature",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let run = verify(
        dir.path(),
        gpg_policy("*", "strict", &[&alice]),
        &[keyring(&gpg, &[&alice])],
        &repo.path().display().to_string(),
        "main",
        &[],
    );
    assert_verdict(&run, 1, "Unsigned");
    assert_eq!(run.verdict["history"]["failure"]["commit"], unsigned);
}

#[test]
fn expired_and_revoked_keys_do_not_count() {
    for what in ["expired", "revoked"] {
        let gpg = Gpg::new();
        let alice = gpg.key("Alice");
        let repo = Repo::new(&gpg);
        repo.commit("c1", Sign::Gpg(&alice));
        if what == "expired" {
            gpg.expire(&alice)
        } else {
            gpg.revoke(&alice)
        }
        let dir = tempfile::tempdir().unwrap();
        let run = verify(
            dir.path(),
            gpg_policy("*", "head", &[&alice]),
            &[keyring(&gpg, &[&alice])],
            &repo.path().display().to_string(),
            "main",
            &[],
        );
        assert_verdict(&run, 1, "KeyNotValid");
        assert!(run.verdict["message"].as_str().unwrap().contains(what), "{what}: {}", run.verdict["message"]);
    }
}

#[test]
fn a_signing_subkey_of_an_allowed_key_counts() {
    let gpg = Gpg::new();
    let alice = gpg.key_with_subkey("Alice");
    let repo = Repo::new(&gpg);
    repo.commit("c1", Sign::Gpg(&alice));
    let dir = tempfile::tempdir().unwrap();
    let run = verify(
        dir.path(),
        gpg_policy("*", "strict", &[&alice]),
        &[keyring(&gpg, &[&alice])],
        &repo.path().display().to_string(),
        "main",
        &[],
    );
    assert_verdict(&run, 0, "Verified");
    let signer = &run.verdict["history"]["headSigner"];
    assert_eq!(signer["fingerprint"].as_str(), alice.signing_subkey.as_deref());
    assert_eq!(signer["primary"], alice.fingerprint);
    // Naming the 16-hex key ID of the primary works as well.
    let by_id = json!({"repos": [{"url": "*"}], "gpg": {"mode": "head", "keys": [&alice.fingerprint[24..]], "keyring": {"configMapRef": {"name": "keys"}}}});
    assert_verdict(
        &verify(dir.path(), by_id, &[keyring(&gpg, &[&alice])], &repo.path().display().to_string(), "main", &[]),
        0,
        "Verified",
    );
}

#[test]
fn seals_end_the_strict_walk_only_when_signed_by_an_allowed_key() {
    let gpg = Gpg::new();
    let (alice, bob) = (gpg.key("Alice"), gpg.key("Bob"));
    let repo = Repo::new(&gpg);
    repo.commit("legacy, unsigned", Sign::No);
    repo.commit("more legacy", Sign::No);
    let dir = tempfile::tempdir().unwrap();
    let path = repo.path().display().to_string();
    let keys = [keyring(&gpg, &[&alice, &bob])];

    repo.commit("adopt signing\n\nWeft-Seal: history reviewed in audit 42", Sign::Gpg(&bob));
    repo.commit("signed work", Sign::Gpg(&alice));
    let run = verify(dir.path(), gpg_policy("*", "strict", &[&alice]), &keys, &path, "main", &[]);
    assert_verdict(&run, 1, "KeyNotAllowed");

    let seal = repo.commit("adopt signing\n\nArgocd-gpg-seal: history reviewed", Sign::Gpg(&alice));
    repo.commit("signed work", Sign::Gpg(&alice));
    let run = verify(dir.path(), gpg_policy("*", "strict", &[&alice]), &keys, &path, "main", &[]);
    assert_verdict(&run, 0, "Verified");
    assert_eq!(run.verdict["history"]["seals"], json!([seal]));
}

#[test]
fn the_signed_tag_requirement_rejects_lightweight_tags_and_shadowing_branches() {
    let gpg = Gpg::new();
    let alice = gpg.key("Alice");
    let repo = Repo::new(&gpg);
    repo.commit("c1", Sign::Gpg(&alice));
    let dir = tempfile::tempdir().unwrap();
    let path = repo.path().display().to_string();
    let keys = [keyring(&gpg, &[&alice])];
    let mut policy = gpg_policy("*", "head", &[&alice]);
    policy["requireSignedTag"] = json!(true);

    repo.tag("v1.0.0", Sign::Gpg(&alice));
    let run = verify(dir.path(), policy.clone(), &keys, &path, "v1.0.0", &[]);
    assert_verdict(&run, 0, "Verified");
    assert_eq!(run.verdict["tag"]["tag"], "v1.0.0");

    repo.lightweight_tag("v1.0.1");
    assert_verdict(&verify(dir.path(), policy.clone(), &keys, &path, "v1.0.1", &[]), 1, "LightweightTag");

    repo.tag("v1.0.2", Sign::No);
    assert_verdict(&verify(dir.path(), policy.clone(), &keys, &path, "v1.0.2", &[]), 1, "Unsigned");

    // A branch with the signed tag's name: Argo CD may resolve either.
    repo.git(&["branch", "v1.0.0"]);
    let run = verify(dir.path(), policy.clone(), &keys, &path, &repo.head(), &[]);
    assert_verdict(&run, 1, "NoTagRequested");
    let out = verify(dir.path(), policy, &keys, &path, "v1.0.0", &[]);
    assert_eq!(out.code, 2, "an ambiguous revision is bad input: {}", out.stderr);
    assert!(out.stderr.contains("names both a branch and a tag"), "{}", out.stderr);
}

#[test]
fn a_downgrade_to_an_older_signed_commit_fails_unless_allowed() {
    let gpg = Gpg::new();
    let alice = gpg.key("Alice");
    let repo = Repo::new(&gpg);
    let old = repo.commit("v1", Sign::Gpg(&alice));
    let new = repo.commit("v2", Sign::Gpg(&alice));
    let dir = tempfile::tempdir().unwrap();
    let path = repo.path().display().to_string();
    let keys = [keyring(&gpg, &[&alice])];
    let run = verify(dir.path(), gpg_policy("*", "strict", &[&alice]), &keys, &path, &old, &["--previous", &new]);
    assert_verdict(&run, 1, "Downgrade");
    assert_verdict(
        &verify(dir.path(), gpg_policy("*", "strict", &[&alice]), &keys, &path, &new, &["--previous", &old]),
        0,
        "Verified",
    );
    let mut allow = gpg_policy("*", "strict", &[&alice]);
    allow["allowDowngrade"] = json!(true);
    assert_verdict(&verify(dir.path(), allow, &keys, &path, &old, &["--previous", &new]), 0, "Verified");
}

#[test]
fn ssh_signatures_follow_allowed_signers_with_namespaces_and_validity() {
    let gpg = Gpg::new();
    let keys_dir = tempfile::tempdir().unwrap();
    let (alice, eve) = (ssh_key(keys_dir.path(), "alice"), ssh_key(keys_dir.path(), "eve"));
    let repo = Repo::new(&gpg);
    repo.commit("c1", Sign::Ssh(&alice));
    repo.commit("c2", Sign::Ssh(&alice));
    let dir = tempfile::tempdir().unwrap();
    let path = repo.path().display().to_string();
    let policy = json!({"repos": [{"url": "*"}], "gpg": {"mode": "strict"}, "ssh": {"allowedSigners": {"configMapRef": {"name": "signers", "key": "allowed_signers"}}}});
    let signers = |text: String| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "signers"}, "data": {"allowed_signers": text}});

    let run = verify(
        dir.path(),
        policy.clone(),
        &[signers(format!("alice@example.com {}", alice.public))],
        &path,
        "main",
        &[],
    );
    assert_verdict(&run, 0, "Verified");
    assert_eq!(run.verdict["history"]["headSigner"]["type"], "ssh");

    let run =
        verify(dir.path(), policy.clone(), &[signers(format!("eve@example.com {}", eve.public))], &path, "main", &[]);
    assert_verdict(&run, 1, "KeyNotAllowed");

    let limited = format!("alice@example.com namespaces=\"file\" {}", alice.public);
    assert_verdict(&verify(dir.path(), policy.clone(), &[signers(limited)], &path, "main", &[]), 1, "KeyNotValid");

    let expired = format!("alice@example.com valid-before=\"20200101\" {}", alice.public);
    let run = verify(dir.path(), policy.clone(), &[signers(expired)], &path, "main", &[]);
    assert_verdict(&run, 1, "KeyNotValid");
    assert!(run.verdict["message"].as_str().unwrap().contains("valid only before"));

    // A GPG-only policy does not accept SSH signatures.
    let gpg_key = gpg.key("Alice");
    assert_verdict(
        &verify(dir.path(), gpg_policy("*", "head", &[&gpg_key]), &[keyring(&gpg, &[&gpg_key])], &path, "main", &[]),
        1,
        "KeyNotAllowed",
    );
}

#[test]
fn configuration_problems_exit_2_with_the_missing_piece_named() {
    let gpg = Gpg::new();
    let alice = gpg.key("Alice");
    let repo = Repo::new(&gpg);
    repo.commit("c1", Sign::Gpg(&alice));
    let dir = tempfile::tempdir().unwrap();
    let path = repo.path().display().to_string();
    let run = verify(dir.path(), gpg_policy("*", "head", &[&alice]), &[], &path, "main", &[]);
    assert_verdict(&run, 2, "ReferencedObjectMissing");
    assert!(run.verdict["message"].as_str().unwrap().contains("ConfigMap keys"));

    let other = gpg.key("Other");
    let run = verify(dir.path(), gpg_policy("*", "head", &[&alice]), &[keyring(&gpg, &[&other])], &path, "main", &[]);
    assert_verdict(&run, 2, "AllowedKeysNotInKeyring");

    // A malformed profile is rejected by the same CEL rules the apiserver applies.
    let bad = json!({"repos": [{"url": "*"}], "gpg": {"mode": "strict"}});
    let run = verify(dir.path(), bad, &[], &path, "main", &[]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("gpg.mode head or strict needs allowed signers"), "{}", run.stderr);

    // No policy for the repository: nothing vouches for it.
    let elsewhere = json!({"repos": [{"url": "https://elsewhere.example/*"}], "gpg": {"mode": "none"}});
    assert_verdict(&verify(dir.path(), elsewhere, &[], &path, "main", &[]), 1, "NoSourcePolicy");
}

#[test]
fn an_unreachable_repository_is_reported_not_verified() {
    let dir = tempfile::tempdir().unwrap();
    let policy = json!({"repos": [{"url": "*"}], "gpg": {"mode": "none"}});
    let sha = "1111111111111111111111111111111111111111";
    let run = verify(dir.path(), policy, &[], "http://127.0.0.1:9/shop/cart.git", sha, &[]);
    assert_verdict(&run, 1, "RepositoryUnreachable");
    assert_eq!(run.verdict["outcome"], "Retry");
}

#[test]
fn fetching_over_file_urls_mirrors_into_the_cache() {
    let gpg = Gpg::new();
    let alice = gpg.key("Alice");
    let repo = Repo::new(&gpg);
    repo.commit("c1", Sign::Gpg(&alice));
    let dir = tempfile::tempdir().unwrap();
    let run = verify(
        dir.path(),
        gpg_policy("*", "strict", &[&alice]),
        &[keyring(&gpg, &[&alice])],
        &repo.url(),
        &repo.head(),
        &[],
    );
    assert_verdict(&run, 0, "Verified");
    let cached: Vec<_> = std::fs::read_dir(dir.path().join("cache")).unwrap().collect();
    assert_eq!(cached.len(), 1, "one mirror in the cache");
}

/// A cosign-format signature (base64 DER ECDSA P-256 over the bytes), made with openssl.
fn cosign_style_signature(key: &Path, data: &Path) -> String {
    let out = Command::new("openssl").args(["dgst", "-sha256", "-sign"]).arg(key).arg(data).output().expect("openssl");
    assert!(out.status.success());
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(out.stdout)
}

#[test]
fn source_materials_are_checked_against_the_verified_tree() {
    let gpg = Gpg::new();
    let repo = Repo::new(&gpg);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("materials.key");
    let ok = |c: &mut Command| assert!(c.status().unwrap().success());
    ok(Command::new("openssl").args(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out"]).arg(&key));
    let public =
        String::from_utf8(Command::new("openssl").args(["ec", "-pubout", "-in"]).arg(&key).output().unwrap().stdout)
            .unwrap();
    let resources = [
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "materials"}, "stringData": {"cosign.pub": public}}),
    ];
    let policy = |complete: bool| {
        json!({"repos": [{"url": "*"}], "gpg": {"mode": "none"},
               "sourceMaterials": {"key": {"secretRef": {"name": "materials", "key": "cosign.pub"}}, "requireComplete": complete}})
    };
    // Lists `entries` as source-materials under deploy/, signs it, commits; returns the commit.
    let publish = |entries: &[(&str, &[u8])], extra: &[(&str, &[u8])]| {
        let mut list = String::new();
        for (path, content) in entries {
            list.push_str(&format!("{}  {path}\n", sha256_hex(content)));
        }
        for (path, content) in extra {
            repo.write(&format!("deploy/{path}"), content);
        }
        repo.write("deploy/source-materials", list.as_bytes());
        let sig = cosign_style_signature(&key, &repo.path().join("deploy/source-materials"));
        repo.write("deploy/source-materials.sig", sig.as_bytes());
        repo.commit_all("publish", Sign::No)
    };
    let path = repo.path().display().to_string();
    let check = |commit: &str, complete: bool| {
        verify(dir.path(), policy(complete), &resources, &path, commit, &["--path", "deploy"])
    };

    let files: [(&str, &[u8]); 2] = [("app.yaml", b"kind: ConfigMap\n"), ("sub/svc.yaml", b"kind: Service\n")];
    let good = publish(&files, &files);
    let run = check(&good, true);
    assert_verdict(&run, 0, "Verified");
    assert_eq!(run.verdict["materials"]["files"], 2);

    // A file changed after the list was signed.
    let changed = publish(&files, &[("app.yaml", b"kind: Secret\n")]);
    assert_verdict(&check(&changed, false), 1, "SourceMaterialsMismatch");

    // The list itself changed after signing.
    publish(&files, &files);
    repo.write("deploy/source-materials", format!("{}  app.yaml\n", sha256_hex(b"kind: ConfigMap\n")).as_bytes());
    let relisted = repo.commit_all("edit list", Sign::No);
    assert_verdict(&check(&relisted, false), 1, "SourceMaterialsSignatureInvalid");

    // A listed path that leaves the directory.
    let escape = publish(&[("../outside.yaml", b"x")], &[]);
    assert_verdict(&check(&escape, false), 1, "SourceMaterialsPathEscapes");

    // A listed symlink (which could point anywhere at render time).
    std::os::unix::fs::symlink("/etc/passwd", repo.path().join("deploy/link.yaml")).unwrap();
    let linked = publish(&[("link.yaml", b"/etc/passwd")], &[]);
    let run = check(&linked, false);
    assert_verdict(&run, 1, "SourceMaterialsMismatch");
    assert!(run.verdict["message"].as_str().unwrap().contains("symlink"));

    // requireComplete: a tracked file that is not listed.
    std::fs::remove_file(repo.path().join("deploy/link.yaml")).unwrap();
    let partial = publish(&files[..1], &files);
    assert_verdict(&check(&partial, false), 0, "Verified");
    assert_verdict(&check(&partial, true), 1, "SourceMaterialsIncomplete");
}

#[test]
fn source_materials_accept_an_openpgp_detached_signature() {
    let gpg = Gpg::new();
    let alice = gpg.key("Alice");
    let repo = Repo::new(&gpg);
    repo.write("deploy/app.yaml", b"kind: ConfigMap\n");
    repo.write("deploy/source-materials", format!("{}  app.yaml\n", sha256_hex(b"kind: ConfigMap\n")).as_bytes());
    let sig = gpg.sign_detached(&alice, &repo.path().join("deploy/source-materials"));
    repo.write("deploy/source-materials.sig", sig.as_bytes());
    let commit = repo.commit_all("publish", Sign::No);
    let dir = tempfile::tempdir().unwrap();
    let resources = [
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "materials"}, "data": {"key.asc": gpg.export(&alice)}}),
    ];
    let policy = json!({"repos": [{"url": "*"}], "gpg": {"mode": "none"},
                        "sourceMaterials": {"key": {"configMapRef": {"name": "materials"}}}});
    let run =
        verify(dir.path(), policy, &resources, &repo.path().display().to_string(), &commit, &["--path", "deploy"]);
    assert_verdict(&run, 0, "Verified");
    assert!(run.verdict["message"].as_str().unwrap().contains("Alice"));
}

#[test]
fn https_fetches_use_the_credentials_of_argo_cds_repository_secrets() {
    let gpg = Gpg::new();
    let alice = gpg.key("Alice");
    let repo = Repo::new(&gpg);
    let head = repo.commit("c1", Sign::Gpg(&alice));
    let (server, ca) = GitHttpServer::start_tls(&repo, "shop/cart.git", "deploy", "s3cret");
    let url = format!("https://127.0.0.1:{}/shop/cart.git", server.port);
    // Argo CD's trusted certificates, by host name.
    let tls = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "argocd-tls-certs-cm"}, "data": {"127.0.0.1": ca}});
    let secret = |name: &str, kind: &str, url: &str, password: &str| {
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": name, "labels": {"argocd.argoproj.io/secret-type": kind}},
               "stringData": {"url": url, "username": "deploy", "password": password}})
    };
    let keys = keyring(&gpg, &[&alice]);
    let dir = tempfile::tempdir().unwrap();
    let check =
        |resources: &[Value]| verify(dir.path(), gpg_policy("*", "strict", &[&alice]), resources, &url, &head, &[]);

    let prefix = format!("https://127.0.0.1:{}/shop", server.port);
    // The server's certificate is not trusted without Argo CD's TLS ConfigMap.
    let run = check(&[keys.clone(), secret("shop", "repo-creds", &prefix, "s3cret")]);
    assert_verdict(&run, 1, "RepositoryUnreachable");
    assert!(
        run.verdict["message"].as_str().unwrap().to_lowercase().contains("certificate"),
        "{}",
        run.verdict["message"]
    );
    // No credentials for a repository that asks for them: refused, a verdict.
    let run = check(&[keys.clone(), tls.clone()]);
    assert_verdict(&run, 1, "RepositoryAccessDenied");
    // Refused credentials are a verdict, not a wait: asking again will not change them.
    let run = check(&[keys.clone(), tls.clone(), secret("cart", "repository", &url, "wrong")]);
    assert_verdict(&run, 1, "RepositoryAccessDenied");
    let message = run.verdict["message"].as_str().unwrap();
    assert!(message.contains("401") && message.contains("repository Secret"), "{message}");
    // A credential template for every repository under the prefix (Argo CD's repo-creds).
    let run = check(&[keys.clone(), tls.clone(), secret("shop", "repo-creds", &prefix, "s3cret")]);
    assert_verdict(&run, 0, "Verified");
    // An exact repository Secret wins over the template (a fresh cache, so the fetch happens again).
    let fresh = tempfile::tempdir().unwrap();
    let resources = [
        keys,
        tls,
        secret("shop", "repo-creds", &prefix, "s3cret"),
        secret("cart", "repository", &format!("{url}/"), "wrong"),
    ];
    let run = verify(fresh.path(), gpg_policy("*", "strict", &[&alice]), &resources, &url, &head, &[]);
    assert_verdict(&run, 1, "RepositoryAccessDenied");
}

/// `weft verify-source … | head`: when the reader goes away, the command stops quietly with 141 (as a
/// command a closed pipe stops), not with a panic, and never with success.
#[test]
fn a_reader_that_goes_away_stops_the_command_quietly_and_not_as_success() {
    let gpg = Gpg::new();
    let alice = gpg.key("Alice");
    let repo = Repo::new(&gpg);
    repo.commit("c1", Sign::Gpg(&alice));
    let dir = tempfile::tempdir().unwrap();
    let policies = gpg_policy("*", "head", &[&alice]);
    let repo_path = repo.path().display().to_string();
    let mut child = verify_command(dir.path(), policies, &[keyring(&gpg, &[&alice])], &repo_path, "main")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reader closes before anything is written (the verdict takes a repository read first).
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{stderr}");
}
