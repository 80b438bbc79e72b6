//! Source verification against hostile repositories, made with the real gpg, ssh-keygen and git: each
//! test is a way a tenant without a signing key could get a false "verified", or a path that failed open,
//! and what git itself says about the same objects.

mod common;

use std::path::Path;
use std::process::Command;

use common::git::{GitHttpServer, Gpg, GpgKey, Repo, Sign, ssh_key};
use common::verify::*;
use serde_json::{Value, json};

const DAY: i64 = 86_400;

fn path_of(repo: &Repo) -> String {
    repo.path().display().to_string()
}

// 1. An OpenPGP signature whose own expiry has passed is what git calls "Expired signature" (%G? = X).

#[test]
fn expired_openpgp_signatures_do_not_count_for_commits_seals_tags_or_materials() {
    let gpg = Gpg::new();
    let t = now();
    let alice = gpg.key_made_at("Alice", t - 10 * DAY);
    // Signatures made five days ago that expired a day later; and ones that are still good.
    let expired = gpg.program_at(t - 5 * DAY, "1d");
    let lasting = gpg.program_at(t - 5 * DAY, "30d");
    let keys = [keyring(&gpg, &[&alice])];
    let dir = tempfile::tempdir().unwrap();

    let repo = Repo::new(&gpg);
    repo.commit("c1", Sign::GpgVia(&alice, &expired));
    assert_eq!(repo.git(&["log", "-1", "--format=%G?"]), "X", "git calls it an expired signature");
    for mode in ["head", "strict"] {
        let run = verify(dir.path(), gpg_policy("*", mode, &[&alice]), &keys, &path_of(&repo), "main", &[]);
        assert_verdict(&run, 1, "SignatureExpired");
        assert!(run.message().contains("expired"), "{}", run.message());
    }
    let fresh = Repo::new(&gpg);
    fresh.commit("c1", Sign::GpgVia(&alice, &lasting));
    assert_eq!(fresh.git(&["log", "-1", "--format=%G?"]), "G");
    let run = verify(dir.path(), gpg_policy("*", "strict", &[&alice]), &keys, &path_of(&fresh), "main", &[]);
    assert_verdict(&run, 0, "Verified");

    // A seal whose signature expired does not end the strict walk.
    let sealed = Repo::new(&gpg);
    sealed.commit("legacy, unsigned", Sign::No);
    let seal = sealed.commit("adopt signing\n\nWeft-Seal: reviewed", Sign::GpgVia(&alice, &expired));
    sealed.commit("work", Sign::Gpg(&alice));
    let run = verify(dir.path(), gpg_policy("*", "strict", &[&alice]), &keys, &path_of(&sealed), "main", &[]);
    assert_verdict(&run, 1, "SignatureExpired");
    assert_eq!(run.verdict["history"]["failure"]["commit"], seal);

    // A signed tag whose signature expired: neither requireSignedTag nor head's tag rule accepts it.
    let tagged = Repo::new(&gpg);
    tagged.commit("c1", Sign::Gpg(&alice));
    tagged.tag("v1", Sign::GpgVia(&alice, &expired));
    let mut policy = gpg_policy("*", "head", &[&alice]);
    policy["requireSignedTag"] = json!(true);
    assert_verdict(&verify(dir.path(), policy, &keys, &path_of(&tagged), "v1", &[]), 1, "SignatureExpired");
    let unsigned = Repo::new(&gpg);
    unsigned.commit("c1", Sign::No);
    unsigned.tag("v1", Sign::GpgVia(&alice, &expired));
    let run = verify(dir.path(), gpg_policy("*", "head", &[&alice]), &keys, &path_of(&unsigned), "v1", &[]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(run.message().contains("tag v1") && run.message().contains("expired"), "{}", run.message());

    // Source materials signed with a signature that expired.
    let materials = Repo::new(&gpg);
    materials.write("deploy/app.yaml", b"kind: ConfigMap\n");
    let list = format!("{}  app.yaml\n", sha256_hex(b"kind: ConfigMap\n"));
    materials.write("deploy/source-materials", list.as_bytes());
    let when = format!("{}!", t - 5 * DAY);
    let sig = gpg.sign_detached_with(
        &alice,
        &materials.path().join("deploy/source-materials"),
        &["--faked-system-time", &when, "--default-sig-expire", "1d"],
    );
    materials.write("deploy/source-materials.sig", sig.as_bytes());
    let commit = materials.commit_all("publish", Sign::No);
    let resources = [
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "materials"}, "data": {"key.asc": gpg.export(&alice)}}),
    ];
    let policy = json!([{"repos": [{"url": "*"}], "gpg": {"mode": "none"},
                         "sourceMaterials": {"key": {"configMapRef": {"name": "materials"}}}}]);
    let run = verify(dir.path(), policy, &resources, &path_of(&materials), &commit, &["--path", "deploy"]);
    assert_verdict(&run, 1, "SourceMaterialsSignatureInvalid");
    assert!(run.message().contains("expired"), "{}", run.message());
}

// 2. Replace refs, grafts and substituted objects.

/// A repository whose `main` is an unsigned commit on top of a signed one, with a signed commit `S` on
/// another branch that could stand in for it.
fn unsigned_head_and_a_signed_stand_in(gpg: &Gpg, alice: &GpgKey) -> (Repo, String, String) {
    let repo = Repo::new(gpg);
    let base = repo.commit("base", Sign::Gpg(alice));
    let unsigned = repo.commit("sneaky", Sign::No);
    repo.git(&["checkout", "-q", "-b", "stand-in", &base]);
    let signed = repo.commit("reviewed", Sign::Gpg(alice));
    repo.git(&["checkout", "-q", "main"]);
    (repo, unsigned, signed)
}

#[test]
fn replace_refs_never_take_part_in_verification() {
    let gpg = Gpg::new();
    let alice = gpg.key("Alice");
    let keys = [keyring(&gpg, &[&alice])];
    let (repo, unsigned, signed) = unsigned_head_and_a_signed_stand_in(&gpg, &alice);
    repo.git(&["replace", &unsigned, &signed]);
    assert_eq!(repo.git(&["log", "-1", "--format=%G?", &unsigned]), "G", "git itself honours the replacement");
    let dir = tempfile::tempdir().unwrap();
    for (name, url) in [("path", path_of(&repo)), ("file://", repo.url())] {
        for mode in ["head", "strict"] {
            let run = verify(dir.path(), gpg_policy("*", mode, &[&alice]), &keys, &url, &unsigned, &[]);
            assert_verdict(&run, 1, "Unsigned");
            assert_eq!(run.verdict["history"]["failure"]["commit"], unsigned, "{name} {mode}");
        }
    }
}

#[test]
fn grafts_never_take_part_in_verification() {
    let gpg = Gpg::new();
    let alice = gpg.key("Alice");
    let repo = Repo::new(&gpg);
    let base = repo.commit("base", Sign::Gpg(&alice));
    let unsigned = repo.commit("sneaky", Sign::No);
    let top = repo.commit("top", Sign::Gpg(&alice));
    // A graft file that cuts the unsigned commit out of the history.
    std::fs::write(repo.path().join(".git/info/grafts"), format!("{top} {base}\n")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = verify(
        dir.path(),
        gpg_policy("*", "strict", &[&alice]),
        &[keyring(&gpg, &[&alice])],
        &path_of(&repo),
        &top,
        &[],
    );
    assert_verdict(&run, 1, "Unsigned");
    assert_eq!(run.verdict["history"]["failure"]["commit"], unsigned);
}

#[test]
fn an_object_whose_content_is_not_its_name_is_refused() {
    let gpg = Gpg::new();
    let alice = gpg.key("Alice");
    let (repo, unsigned, signed) = unsigned_head_and_a_signed_stand_in(&gpg, &alice);
    // Overwrite the loose object of the unsigned commit with the signed commit's (a substitution that
    // needs no ref at all).
    let loose = |id: &str| repo.path().join(".git/objects").join(&id[..2]).join(&id[2..]);
    std::fs::remove_file(loose(&unsigned)).unwrap();
    std::fs::copy(loose(&signed), loose(&unsigned)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let keys = [keyring(&gpg, &[&alice])];
    for mode in ["head", "strict"] {
        let run = verify(dir.path(), gpg_policy("*", mode, &[&alice]), &keys, &path_of(&repo), &unsigned, &[]);
        assert_verdict(&run, 1, "CorruptObject");
        assert!(run.message().contains(&unsigned), "{}", run.message());
    }
}

// 3. Every way of writing a repository's URL selects the same policy.

#[test]
fn every_spelling_of_a_local_repository_selects_the_same_policy() {
    let gpg = Gpg::new();
    let alice = gpg.key("Alice");
    let repo = Repo::new(&gpg);
    repo.commit("unsigned", Sign::No);
    let p = path_of(&repo);
    let (parent, name) = p.rsplit_once('/').unwrap();
    // Strict for the repository, anything goes for everything else.
    let policies = json!([
        gpg_policy(&p, "strict", &[&alice]),
        {"repos": [{"url": "*"}, {"url": format!("!{p}")}], "gpg": {"mode": "none"}}
    ]);
    let keys = [keyring(&gpg, &[&alice])];
    let dir = tempfile::tempdir().unwrap();
    let forms = [
        p.clone(),
        format!("{p}/"),
        format!("{p}/.git"),
        format!("{p}/.git/"),
        format!("{parent}//{name}"),
        format!("{parent}/./{name}"),
        format!("{p}/../{name}"),
        format!("file://{p}"),
        format!("file://{p}/.git"),
        format!("file://{parent}//{name}/"),
    ];
    for form in &forms {
        let run = verify(dir.path(), policies.clone(), &keys, form, "main", &[]);
        assert_verdict(&run, 1, "Unsigned");
        assert_eq!(run.verdict["policy"], 0, "{form}");
    }
    // A symbolic link to the repository is another spelling: it may not pick the lax policy.
    let link = tempfile::tempdir().unwrap();
    let linked = link.path().join("x");
    std::os::unix::fs::symlink(repo.path(), &linked).unwrap();
    let run = verify(dir.path(), policies, &keys, &linked.display().to_string(), "main", &[]);
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert_ne!(run.verdict["reason"], "Verified");
}

// 4. requireSignedTag: the revision must name the tag.

#[test]
fn require_signed_tag_needs_the_revision_to_name_a_tag() {
    let gpg = Gpg::new();
    let alice = gpg.key("Alice");
    let repo = Repo::new(&gpg);
    let head = repo.commit("c1", Sign::Gpg(&alice));
    repo.tag("v1.0.0", Sign::Gpg(&alice));
    let keys = [keyring(&gpg, &[&alice])];
    let dir = tempfile::tempdir().unwrap();
    let mut policy = gpg_policy("*", "head", &[&alice]);
    policy["requireSignedTag"] = json!(true);
    let path = path_of(&repo);
    assert_verdict(&verify(dir.path(), json!([policy.clone()]), &keys, &path, "v1.0.0", &[]), 0, "Verified");
    for revision in ["HEAD", &head[..7], &head[..12]] {
        let run = verify(dir.path(), json!([policy.clone()]), &keys, &path, revision, &[]);
        assert_verdict(&run, 1, "NotATag");
        assert!(run.message().contains(revision), "{revision}: {}", run.message());
    }
    // A plain branch is a branch, not "a tag and a branch".
    let run = verify(dir.path(), json!([policy.clone()]), &keys, &path, "main", &[]);
    assert_verdict(&run, 1, "NotATag");
    assert!(run.message().contains("\"main\" is a branch"), "{}", run.message());
    // A semantic-version constraint, as Argo CD resolves one, is checked against the tag it picked.
    assert_verdict(&verify(dir.path(), json!([policy]), &keys, &path, "~1.0", &[]), 0, "Verified");
}

// 5. A typo in a profile is an error, with the field's path, in every command.

#[test]
fn unknown_fields_and_bad_values_in_a_profile_are_errors_in_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let mut typo = profile(json!([{"repos": [{"url": "*"}], "gpg": {"mode": "none"}, "requireSignedTags": true}]));
    typo["spec"]["sourceMaterial"] = json!({"hashList": "x"});
    let profile_path = write_json(dir.path(), "typo.yaml", &[typo]);
    let app = json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "metadata": {"name": "a", "namespace": "argocd"},
                     "spec": {"project": "default", "destination": {"namespace": "x"}, "source": {"repoURL": "file:///nowhere", "path": "."}}});
    let app_path = write_json(dir.path(), "app.yaml", &[app]);
    let record = json!({"apiVersion": "weft.dev/v1alpha1", "kind": "ApplicationProvenance", "metadata": {"name": "a", "namespace": "argocd"},
                        "spec": {"application": {"name": "a"}}});
    let record_path = write_json(dir.path(), "record.yaml", &[record]);
    let resources = write_json(dir.path(), "resources.yaml", &[]);
    let (p, a, r, res) = (
        profile_path.to_str().unwrap(),
        app_path.to_str().unwrap(),
        record_path.to_str().unwrap(),
        resources.to_str().unwrap(),
    );
    let commands: [&[&str]; 4] = [
        &["verify-source", "--profile", p, "--repo", "/nowhere", "--revision", "main", "--resources", res],
        &["run", "--profile", p, "--application", a, "--resources", res, "--revision", "main"],
        &["verify-images", "--profile", p, "--resources", res, "registry.invalid/x:1"],
        &["provenance", "verify", "--from-file", r, "--profile", p, "--resources", res],
    ];
    for args in commands {
        let out = Command::new(env!("CARGO_BIN_EXE_weft")).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("spec.sourceIntegrity.git.policies[0].requireSignedTags"), "{args:?}: {stderr}");
        assert!(stderr.contains("spec.sourceMaterial"), "{args:?}: {stderr}");
    }

    // A bad enum value names its field; with --output json the error is JSON on stdout too.
    let bad = json!([{"repos": [{"url": "*"}], "gpg": {"mode": "strcit"}}]);
    let run = verify(dir.path(), bad, &[], "/nowhere", "main", &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("spec.sourceIntegrity.git.policies[0].gpg.mode"), "{}", run.stderr);
    assert_eq!(run.verdict["outcome"], "Misconfigured", "stdout: {}", run.stdout);
    assert!(run.message().contains("spec.sourceIntegrity.git.policies[0].gpg.mode"), "{}", run.stdout);
}

// 6. A malformed allowed_signers line is a clear error, never a panic.

#[test]
fn malformed_allowed_signers_times_are_errors_that_name_the_line() {
    let gpg = Gpg::new();
    let keys_dir = tempfile::tempdir().unwrap();
    let alice = ssh_key(keys_dir.path(), "alice");
    let repo = Repo::new(&gpg);
    repo.commit("c1", Sign::Ssh(&alice));
    let dir = tempfile::tempdir().unwrap();
    let policy = json!([{"repos": [{"url": "*"}], "gpg": {"mode": "strict"},
                         "ssh": {"allowedSigners": {"configMapRef": {"name": "signers", "key": "allowed_signers"}}}}]);
    for bad in ["valid-after=\"20241301\"", "valid-before=\"20240230\"", "valid-after=\"202401012561\""] {
        let text = format!("# team\nalice@example.com {bad} {}\n", alice.public);
        let signers = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "signers"}, "data": {"allowed_signers": text}});
        let run = verify(dir.path(), policy.clone(), &[signers], &path_of(&repo), "main", &[]);
        assert!(!run.stderr.contains("panicked"), "{bad}: {}", run.stderr);
        assert_verdict(&run, 2, "InvalidAllowedSigners");
        assert!(run.message().contains("line 2"), "{bad}: {}", run.message());
    }
}

// 8. Repository credentials go only to the host they were issued for.

fn repo_secret(name: &str, kind: &str, url: &str, extra: Value) -> Value {
    let mut data = json!({"url": url, "username": "deploy", "password": "s3cret"});
    common::project::merge(&mut data, extra);
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": name, "labels": {"argocd.argoproj.io/secret-type": kind}}, "stringData": data})
}

fn leaked(log: &Path) -> Vec<String> {
    use base64::Engine;
    let secret = base64::engine::general_purpose::STANDARD.encode("deploy:s3cret");
    std::fs::read_to_string(log).unwrap_or_default().lines().filter(|l| l.contains(&secret)).map(String::from).collect()
}

#[test]
fn repository_credentials_never_go_to_another_host_or_path() {
    let gpg = Gpg::new();
    let repo = Repo::new(&gpg);
    let head = repo.commit("c1", Sign::No);
    let dir = tempfile::tempdir().unwrap();
    let none = json!([{"repos": [{"url": "*"}], "gpg": {"mode": "none"}}]);

    // The legitimate server, which logs what it is sent.
    let log = dir.path().join("legit.log");
    let legit =
        GitHttpServer::start(&repo, "shop/cart.git", "deploy", "s3cret", &[("GIT_HTTP_LOG", log.to_str().unwrap())]);
    let origin = format!("http://127.0.0.1:{}", legit.port);
    let url = format!("{origin}/shop/cart.git");
    let run = verify(
        dir.path(),
        none.clone(),
        &[repo_secret("shop", "repo-creds", &format!("{origin}/shop"), json!({}))],
        &url,
        &head,
        &[],
    );
    assert_verdict(&run, 0, "Verified");

    // The attacker's server, reached through URLs that start with the credential's URL.
    let evil_log = dir.path().join("evil.log");
    let evil =
        GitHttpServer::start(&repo, "x.git", "nobody", "nothing", &[("GIT_HTTP_LOG", evil_log.to_str().unwrap())]);
    let creds = [repo_secret("shop", "repo-creds", &origin, json!({}))];
    let at_evil = format!("http://127.0.0.1:{}@localhost:{}/x.git", legit.port, evil.port);
    let run = verify(dir.path(), none.clone(), &creds, &at_evil, &head, &[]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(leaked(&evil_log).is_empty(), "the password went to another host: {:?}", leaked(&evil_log));

    // A path that only starts with the credential's path segment.
    std::fs::write(&log, "").unwrap();
    let creds = [repo_secret("shop", "repo-creds", &format!("{origin}/shop"), json!({}))];
    let sibling = format!("{origin}/shopping/cart.git");
    let run = verify(dir.path(), none.clone(), &creds, &sibling, &head, &[]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(leaked(&log).is_empty(), "the password went to another path: {:?}", leaked(&log));

    // A redirect to another host: the credentials stay behind.
    let redirect_log = dir.path().join("redirect.log");
    let target = format!("http://localhost:{}", legit.port);
    let redirect = GitHttpServer::start(
        &repo,
        "unused.git",
        "deploy",
        "s3cret",
        &[("GIT_HTTP_REDIRECT", target.as_str()), ("GIT_HTTP_LOG", redirect_log.to_str().unwrap())],
    );
    std::fs::write(&log, "").unwrap();
    let redirected = format!("http://127.0.0.1:{}/shop/cart.git", redirect.port);
    let creds = [repo_secret("cart", "repository", &redirected, json!({}))];
    let run = verify(dir.path(), none, &creds, &redirected, &head, &[]);
    assert!(!std::fs::read_to_string(&redirect_log).unwrap_or_default().is_empty(), "the redirect was requested");
    assert!(leaked(&log).is_empty(), "the password followed the redirect: {:?} ({})", leaked(&log), run.stdout);
}

// Correctness and messages.

#[test]
fn every_gpgsig_header_is_left_out_of_the_signed_payload_as_git_does() {
    let gpg = Gpg::new();
    let alice = gpg.key("Alice");
    let repo = Repo::new(&gpg);
    repo.commit("c1", Sign::No);
    // A commit with an extra `gpgsig-sha256` header (as a repository converting to SHA-256 writes), signed
    // the way git signs: over the commit without any gpgsig header.
    let tree = repo.git(&["rev-parse", "HEAD^{tree}"]);
    let parent = repo.head();
    let payload = format!(
        "tree {tree}\nparent {parent}\nauthor Alice <alice@example.com> 1700000000 +0000\ncommitter Alice <alice@example.com> 1700000000 +0000\n\nwith two signature headers\n"
    );
    let payload_path = repo.path().join(".payload");
    std::fs::write(&payload_path, &payload).unwrap();
    let sig = gpg.sign_detached(&alice, &payload_path);
    let indent = |s: &str| s.trim_end().lines().collect::<Vec<_>>().join("\n ");
    let (head, body) = payload.split_once("\n\n").unwrap();
    let object = format!(
        "{head}\ngpgsig {}\ngpgsig-sha256 {}\n\n{body}",
        indent(&sig),
        indent("-----BEGIN PGP SIGNATURE-----\n\nnot a signature for this object format\n-----END PGP SIGNATURE-----")
    );
    std::fs::write(&payload_path, object).unwrap();
    let id = repo.git(&["hash-object", "-w", "-t", "commit", ".payload"]);
    std::fs::remove_file(payload_path).unwrap();
    repo.git(&["update-ref", "refs/heads/main", &id]);
    assert_eq!(repo.git(&["log", "-1", "--format=%G?", &id]), "G", "git verifies it");
    let dir = tempfile::tempdir().unwrap();
    let run =
        verify(dir.path(), gpg_policy("*", "head", &[&alice]), &[keyring(&gpg, &[&alice])], &path_of(&repo), &id, &[]);
    assert_verdict(&run, 0, "Verified");
}

#[test]
fn sha256_repositories_get_a_permanent_specific_reason() {
    let gpg = Gpg::new();
    let repo = Repo::init(&gpg, &["--object-format=sha256"]);
    let head = repo.commit("c1", Sign::No);
    assert_eq!(head.len(), 64);
    let dir = tempfile::tempdir().unwrap();
    let none = json!([{"repos": [{"url": "*"}], "gpg": {"mode": "none"}}]);
    for url in [path_of(&repo), repo.url()] {
        let run = verify(dir.path(), none.clone(), &[], &url, &head, &[]);
        assert_verdict(&run, 1, "UnsupportedObjectFormat");
        assert_eq!(run.verdict["outcome"], "Failed", "not retried forever: {url}");
        assert!(run.message().contains("SHA-256"), "{}", run.message());
    }
}

#[test]
fn failure_messages_say_plainly_who_signed_and_what_to_do() {
    let gpg = Gpg::new();
    let (alice, mallory) = (gpg.key("Alice"), gpg.key("Mallory"));
    let dir = tempfile::tempdir().unwrap();
    let keys = [keyring(&gpg, &[&alice, &mallory])];

    // A signature that does not verify: no library internals.
    let repo = Repo::new(&gpg);
    let good = repo.commit("c1", Sign::Gpg(&alice));
    let forged = repo.tampered_copy(&good);
    let run = verify(dir.path(), gpg_policy("*", "head", &[&alice]), &keys, &path_of(&repo), &forged, &[]);
    assert_verdict(&run, 1, "BadSignature");
    for internal in ["assertion", "left ==", "right)", "Error"] {
        assert!(!run.message().contains(internal), "{internal}: {}", run.message());
    }
    assert!(run.message().contains(&alice.fingerprint), "{}", run.message());

    // A key that is not allowed: its full fingerprint and user ID, and as structured fields.
    let repo = Repo::new(&gpg);
    let commit = repo.commit("c1", Sign::Gpg(&mallory));
    let run = verify(dir.path(), gpg_policy("*", "strict", &[&alice]), &keys, &path_of(&repo), "main", &[]);
    assert_verdict(&run, 1, "KeyNotAllowed");
    assert!(run.message().contains(&mallory.fingerprint), "{}", run.message());
    assert!(run.message().contains("Mallory <mallory@example.com>"), "{}", run.message());
    let failure = &run.verdict["history"]["failure"];
    assert_eq!(failure["commit"], commit);
    assert_eq!(failure["key"]["fingerprint"], mallory.fingerprint, "{failure}");
    assert_eq!(failure["key"]["userId"], "Mallory <mallory@example.com>", "{failure}");

    // head: the tag that names the commit is signed by a key that is not allowed, and the message says so.
    let repo = Repo::new(&gpg);
    repo.commit("c1", Sign::No);
    repo.tag("v1", Sign::Gpg(&mallory));
    let run = verify(dir.path(), gpg_policy("*", "head", &[&alice]), &keys, &path_of(&repo), "v1", &[]);
    assert_verdict(&run, 1, "Unsigned");
    assert!(run.message().contains("tag v1") && run.message().contains(&mallory.fingerprint), "{}", run.message());

    // An unreadable keyring: what it is, not a byte array.
    let garbage = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "keys"}, "data": {"k": "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n-----END PGP PUBLIC KEY BLOCK-----\n"}});
    let run = verify(dir.path(), gpg_policy("*", "head", &[&alice]), &[garbage], &path_of(&repo), "main", &[]);
    assert_verdict(&run, 2, "InvalidKeyring");
    assert!(!run.message().contains("[") && run.message().contains("ConfigMap keys"), "{}", run.message());

    // strict on a shallow clone says the clone is shallow.
    let deep = Repo::new(&gpg);
    for i in 0..3 {
        deep.commit(&format!("c{i}"), Sign::Gpg(&alice));
    }
    let shallow = tempfile::tempdir().unwrap();
    let target = shallow.path().join("clone");
    let status =
        Command::new("git").args(["clone", "-q", "--depth", "1"]).arg(deep.url()).arg(&target).status().unwrap();
    assert!(status.success());
    let run =
        verify(dir.path(), gpg_policy("*", "strict", &[&alice]), &keys, &target.display().to_string(), "main", &[]);
    assert_verdict(&run, 1, "ShallowRepository");
    assert!(run.message().contains("shallow"), "{}", run.message());
}

// Bounds: a commit or tag too large to be a real one is refused before it is read, with a verdict that
// says so; never a panic, never read into memory.

#[test]
fn an_oversized_commit_or_tag_is_refused_unread() {
    let gpg = Gpg::new();
    let alice = gpg.key("Alice");
    let keys = [keyring(&gpg, &[&alice])];
    let dir = tempfile::tempdir().unwrap();
    let message = dir.path().join("message");
    // Over the 1 MiB bound on a commit or tag (and over what a command-line argument may hold).
    let long = format!("a long message\n\n{}\n", "x".repeat((1 << 20) + 10));
    std::fs::write(&message, &long).unwrap();
    let message = message.display().to_string();

    let repo = Repo::new(&gpg);
    repo.commit("c1", Sign::Gpg(&alice));
    repo.git(&["commit", "-q", "--allow-empty", "-F", &message]);
    let big = repo.head();
    let run = verify(dir.path(), gpg_policy("*", "head", &[&alice]), &keys, &path_of(&repo), "main", &[]);
    assert_verdict(&run, 1, "ObjectTooLarge");
    assert!(run.message().contains(&format!("commit {big} is ")), "{}", run.message());
    assert!(run.message().contains("more than the 1 MiB Weft reads for a commit"), "{}", run.message());

    // In strict mode, under a signed commit, the walk stops at it.
    repo.commit("on top", Sign::Gpg(&alice));
    let run = verify(dir.path(), gpg_policy("*", "strict", &[&alice]), &keys, &path_of(&repo), "main", &[]);
    assert_verdict(&run, 1, "ObjectTooLarge");
    assert!(run.message().contains(&big), "{}", run.message());

    // An annotated tag as large, when a signed tag is required.
    repo.git(&["tag", "-a", "v1", "-F", &message]);
    let mut policy = gpg_policy("*", "head", &[&alice]);
    policy["requireSignedTag"] = json!(true);
    let run = verify(dir.path(), policy, &keys, &path_of(&repo), "v1", &[]);
    // Resolving the revision already reads the tag: refused there (bad input to the command line).
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert!(run.message().contains("more than the 1 MiB Weft reads for a tag"), "{}", run.message());
}
