//! Keyless commit signatures (the gitsign model) against the real peers: commits signed by the real
//! gpgsm (`git -c gpg.format=x509`) with certificates the real Fulcio issued for a ServiceAccount token,
//! the signatures logged in the real Rekor by the real rekor-cli, verified by `weft verify-source` in head
//! and strict mode, with seal commits and signed tags.

mod common;

use std::path::Path;
use std::process::Command;

use common::git::{Gpg, Gpgsm, Repo, Sign, X509Signer};
use common::verify::*;
use common::{keyless_trusted_root, peer, run_cmd, service_account_token};
use serde_json::{Value, json};

/// The issuer and identity Fulcio names for ServiceAccount `name` of namespace `default`.
fn identity(name: &str) -> (String, String) {
    (peer("WEFT_TEST_OIDC_ISSUER"), format!("https://kubernetes.io/namespaces/default/serviceaccounts/{name}"))
}

/// A gpgsm key certified by the real Fulcio for ServiceAccount `name`.
fn fulcio_signer(gpgsm: &Gpgsm, name: &str) -> X509Signer {
    use base64::Engine;
    let csr = gpgsm.request();
    let token = service_account_token("default", name, "sigstore");
    let answer: Value = reqwest::blocking::Client::new()
        .post(format!("{}/api/v2/signingCert", peer("WEFT_TEST_FULCIO_URL")))
        .json(&json!({
            "credentials": {"oidcIdentityToken": token},
            "certificateSigningRequest": base64::engine::general_purpose::STANDARD.encode(csr.as_bytes())
        }))
        .send()
        .and_then(|r| r.error_for_status())
        .and_then(|r| r.json())
        .expect("Fulcio issues a certificate");
    let leaf = answer["signedCertificateDetachedSct"]["chain"]["certificates"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no certificate in Fulcio's answer: {answer}"));
    gpgsm.signer(leaf)
}

/// The armored signature git stored in a commit (its `gpgsig` header) or a tag (the end of its message).
fn signature_of(repo: &Repo, object: &str) -> String {
    let raw = repo.git(&["cat-file", "-p", object]);
    let armored = match raw.lines().position(|l| l.starts_with("gpgsig ")) {
        Some(start) => {
            let lines = raw.lines().skip(start);
            let mut out = Vec::new();
            for (i, line) in lines.enumerate() {
                match (i, line.strip_prefix("gpgsig "), line.strip_prefix(' ')) {
                    (0, Some(first), _) => out.push(first),
                    (_, _, Some(more)) if i > 0 => out.push(more),
                    _ => break,
                }
            }
            out.join("\n")
        }
        None => raw[raw.find("-----BEGIN SIGNED MESSAGE-----").expect("a signed tag")..].to_string(),
    };
    assert!(armored.contains("-----END SIGNED MESSAGE-----"), "no X.509 signature in {object}:\n{raw}");
    armored
}

/// `rekor-cli upload` of a hashedrekord entry: the files `artifact`, `signature` and `certificate` (PEM)
/// in `dir`.
fn rekor_upload(dir: &Path, artifact: &str, signature: &str, certificate: &str) {
    let (code, out, err) = run_cmd(
        Command::new("rekor-cli")
            .current_dir(dir)
            .args(["upload", "--rekor_server", &peer("WEFT_TEST_REKOR_URL"), "--type", "hashedrekord"])
            .args(["--pki-format", "x509", "--artifact", artifact, "--signature", signature])
            .args(["--public-key", certificate]),
    );
    assert_eq!(code, 0, "rekor-cli upload: {out}{err}");
}

/// Logs a gpgsm signature in the real Rekor as gitsign logs its own: a hashedrekord entry over the DER
/// signed attributes, with the signature and the certificate, uploaded by rekor-cli. (Weft's reader
/// only picks the parts out; the entry is what gpgsm's signature says, or Rekor refuses it.)
fn log_signature(dir: &Path, signer: &X509Signer, armored: &str) {
    let cms = weft::source::x509::parse(armored).expect("a CMS signature");
    std::fs::write(dir.join("attrs.der"), &cms.signed_attributes).unwrap();
    std::fs::write(dir.join("sig.bin"), &cms.signature).unwrap();
    std::fs::write(dir.join("cert.pem"), &signer.certificate).unwrap();
    rekor_upload(dir, "attrs.der", "sig.bin", "cert.pem");
}

/// Logs what gitsign logs in its default ("online") mode: a hashedrekord entry over the object's hex ID,
/// signed by the same key, with the certificate.
fn log_object_id(dir: &Path, gpgsm: &Gpgsm, signer: &X509Signer, object: &str) {
    std::fs::write(dir.join("key.der"), gpgsm.secret_key(signer)).unwrap();
    std::fs::write(dir.join("id.txt"), object).unwrap();
    std::fs::write(dir.join("cert.pem"), &signer.certificate).unwrap();
    let (code, out, err) = run_cmd(
        Command::new("sh")
            .current_dir(dir)
            .args(["-c", "openssl dgst -sha256 -keyform DER -sign key.der -out id.sig id.txt"]),
    );
    assert_eq!(code, 0, "openssl dgst: {out}{err}");
    rekor_upload(dir, "id.txt", "id.sig", "cert.pem");
}

fn log_commit(dir: &Path, repo: &Repo, signer: &X509Signer, object: &str) {
    log_signature(dir, signer, &signature_of(repo, object));
}

/// A policy for every repository: `mode`, keyless signers with these identities (exact subjects), and
/// the test trust root (Fulcio's root and the Rekor v1 log).
fn keyless_policy(mode: &str, subjects: &[&str]) -> Value {
    let issuer = peer("WEFT_TEST_OIDC_ISSUER");
    let identities: Vec<Value> = subjects.iter().map(|s| json!({"issuer": issuer, "subject": s})).collect();
    json!({
        "repos": [{"url": "*"}],
        "gpg": {"mode": mode},
        "keyless": {"identities": identities, "trustedRoot": {"configMapRef": {"name": "sigstore", "key": "trusted_root.json"}}}
    })
}

fn trust_root_config_map(dir: &Path) -> Value {
    let root = std::fs::read_to_string(keyless_trusted_root(dir)).unwrap();
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "sigstore"}, "data": {"trusted_root.json": root}})
}

struct Setup {
    dir: tempfile::TempDir,
    gpgsm: Gpgsm,
    _gpg: Gpg,
    repo: Repo,
    root: Value,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let gpgsm = Gpgsm::new(&peer("WEFT_TEST_GPGSM"), &std::fs::read_to_string(peer("WEFT_TEST_FULCIO_ROOT")).unwrap());
    let gpg = Gpg::new();
    let repo = Repo::new(&gpg);
    let root = trust_root_config_map(dir.path());
    Setup { dir, gpgsm, _gpg: gpg, repo, root }
}

fn run(s: &Setup, policy: Value, revision: &str) -> Run {
    let work = tempfile::tempdir_in(s.dir.path()).unwrap();
    verify(work.path(), policy, std::slice::from_ref(&s.root), &s.repo.path().display().to_string(), revision, &[])
}

#[test]
fn a_gpgsm_commit_with_a_fulcio_certificate_counts_once_logged_for_the_allowed_identity_only() {
    let s = setup();
    let signer = fulcio_signer(&s.gpgsm, "committer");
    let commit = s.repo.commit("c1", Sign::X509(&signer));
    // gpgsm itself finds the signature good (git's own check, gpgsm's status lines).
    let (_, _, err) = run_cmd(Command::new("git").current_dir(s.repo.path()).args([
        "-c",
        &format!("gpg.x509.program={}", signer.program.display()),
        "verify-commit",
        "--raw",
        &commit,
    ]));
    assert!(err.contains("[GNUPG:] GOODSIG"), "git verify-commit: {err}");
    let (_, subject) = identity("committer");

    // Not yet logged: nothing dates it within the certificate's ten minutes.
    let unlogged = run(&s, keyless_policy("head", &[&subject]), &commit);
    assert_verdict(&unlogged, 1, "SignatureNotLogged");
    assert!(
        unlogged.message().contains(&subject) && unlogged.message().contains("rekor-cli"),
        "{}",
        unlogged.message()
    );

    // Someone else logs their own signature over the same signed attributes: that entry is theirs, and
    // neither makes this signature count nor hides it once it is logged.
    let decoy = tempfile::tempdir().unwrap();
    let cms = weft::source::x509::parse(&signature_of(&s.repo, &commit)).unwrap();
    std::fs::write(decoy.path().join("attrs.der"), &cms.signed_attributes).unwrap();
    let (code, _, err) = run_cmd(Command::new("sh").current_dir(decoy.path()).args([
        "-c",
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout k.pem -out c.pem -days 1 -subj /CN=mallory 2>/dev/null \
         && openssl dgst -sha256 -sign k.pem -out sig.bin attrs.der",
    ]));
    assert_eq!(code, 0, "{err}");
    rekor_upload(decoy.path(), "attrs.der", "sig.bin", "c.pem");
    assert_verdict(&run(&s, keyless_policy("head", &[&subject]), &commit), 1, "SignatureNotLogged");

    log_commit(s.dir.path(), &s.repo, &signer, &commit);
    let good = run(&s, keyless_policy("head", &[&subject]), &commit);
    assert_verdict(&good, 0, "Verified");
    let head = &good.verdict["history"]["headSigner"];
    assert_eq!(head["type"], "keyless");
    assert_eq!(head["subject"], subject);
    assert_eq!(head["issuer"], peer("WEFT_TEST_OIDC_ISSUER"));
    assert!(head["logIndex"].as_i64().is_some(), "{head}");

    // Another identity in the policy: the same good signature does not count.
    let (_, other) = identity("someone-else");
    let refused = run(&s, keyless_policy("head", &[&other]), &commit);
    assert_verdict(&refused, 1, "KeyNotAllowed");
    assert!(
        refused.message().contains(&subject) && refused.message().contains("keyless.identities"),
        "{}",
        refused.message()
    );
    // A regular expression for the namespace's ServiceAccounts does.
    let mut pattern = keyless_policy("head", &[]);
    pattern["keyless"]["identities"] = json!([{
        "issuer": peer("WEFT_TEST_OIDC_ISSUER"),
        "subjectRegExp": "^https://kubernetes\\.io/namespaces/default/serviceaccounts/"
    }]);
    assert_verdict(&run(&s, pattern, &commit), 0, "Verified");

    // The commit changed after signing keeps a signature that does not match it.
    let forged = s.repo.tampered_copy(&commit);
    assert_verdict(&run(&s, keyless_policy("head", &[&subject]), &forged), 1, "BadSignature");
}

#[test]
fn strict_mode_walks_keyless_history_back_to_a_keyless_seal_and_a_signed_tag_counts() {
    let s = setup();
    let signer = fulcio_signer(&s.gpgsm, "releaser");
    let (_, subject) = identity("releaser");
    s.repo.commit("before signing was adopted", Sign::No);
    let seal = s.repo.commit("adopt keyless signing\n\nWeft-Seal: history reviewed", Sign::X509(&signer));
    let head = s.repo.commit("c2", Sign::X509(&signer));
    for c in [&seal, &head] {
        log_commit(s.dir.path(), &s.repo, &signer, c);
    }
    let strict = run(&s, keyless_policy("strict", &[&subject]), &head);
    assert_verdict(&strict, 0, "Verified");
    assert_eq!(strict.verdict["history"]["seals"], json!([seal]));
    assert_eq!(strict.verdict["history"]["checked"], 2);

    // A keyless commit on top whose signature was never logged stops the walk, named.
    let unlogged = s.repo.commit("c3", Sign::X509(&signer));
    let stopped = run(&s, keyless_policy("strict", &[&subject]), &unlogged);
    assert_verdict(&stopped, 1, "SignatureNotLogged");
    assert!(stopped.message().contains(&unlogged[..12]), "{}", stopped.message());

    // A keyless tag, logged, names c3: head mode accepts the tag's signature for it (as Argo CD does), and
    // requireSignedTag holds.
    s.repo.tag("v1.0.0", Sign::X509(&signer));
    log_signature(s.dir.path(), &signer, &signature_of(&s.repo, "v1.0.0"));
    let mut tagged = keyless_policy("head", &[&subject]);
    tagged["requireSignedTag"] = json!(true);
    let release = run(&s, tagged, "v1.0.0");
    assert_verdict(&release, 0, "Verified");
    assert_eq!(release.verdict["commit"], unlogged);
    assert_eq!(release.verdict["tag"]["signer"]["subject"], subject);
}

#[test]
fn a_certificate_from_an_authority_the_trusted_root_does_not_name_does_not_count() {
    let s = setup();
    let signer = fulcio_signer(&s.gpgsm, "committer");
    let (_, subject) = identity("committer");
    let commit = s.repo.commit("c1", Sign::X509(&signer));
    log_commit(s.dir.path(), &s.repo, &signer, &commit);

    // A root that names this log but another certificate authority.
    let mut other_ca = s.root.clone();
    let mut root: Value = serde_json::from_str(other_ca["data"]["trusted_root.json"].as_str().unwrap()).unwrap();
    let der = {
        let ca = tempfile::tempdir().unwrap();
        let (code, _, err) = run_cmd(Command::new("openssl").current_dir(ca.path()).args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "k.pem",
            "-out",
            "c.pem",
            "-days",
            "1",
            "-subj",
            "/O=weft-test/CN=weft-test-fulcio-root",
        ]));
        assert_eq!(code, 0, "{err}");
        let pem = std::fs::read_to_string(ca.path().join("c.pem")).unwrap();
        pem_rfc7468::decode_vec(pem.as_bytes()).unwrap().1
    };
    use base64::Engine;
    root["certificateAuthorities"][0]["certChain"]["certificates"][0]["rawBytes"] =
        json!(base64::engine::general_purpose::STANDARD.encode(der));
    other_ca["data"]["trusted_root.json"] = json!(root.to_string());
    let work = tempfile::tempdir_in(s.dir.path()).unwrap();
    let run = verify(
        work.path(),
        keyless_policy("head", &[&subject]),
        &[other_ca],
        &s.repo.path().display().to_string(),
        &commit,
        &[],
    );
    assert_verdict(&run, 1, "KeylessSignatureNotVerified");
}

/// A certificate for gpgsm's last request, from the test Fulcio's own CA key (Fulcio issues only for
/// now), valid from `not_before` to `not_after` (seconds since the epoch), naming `name` as Fulcio would.
fn certificate_valid(gpgsm: &Gpgsm, name: &str, not_before: i64, not_after: i64) -> String {
    let ca = tempfile::tempdir().unwrap();
    let root = std::path::PathBuf::from(peer("WEFT_TEST_FULCIO_ROOT"));
    let key = root.with_file_name("root.key");
    let (issuer, subject) = identity(name);
    let time = |t: i64| {
        let out = run_cmd(Command::new("date").args(["-u", "-d", &format!("@{t}"), "+%Y%m%d%H%M%SZ"]));
        out.1.trim().to_string()
    };
    std::fs::write(ca.path().join("csr.pem"), gpgsm.request()).unwrap();
    std::fs::write(ca.path().join("index.txt"), "").unwrap();
    std::fs::write(ca.path().join("serial"), "1000\n").unwrap();
    std::fs::write(
        ca.path().join("ca.cnf"),
        format!(
            "[ca]\ndefault_ca = c\n[c]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\ndefault_md = sha256\n\
             policy = p\nunique_subject = no\n[p]\ncommonName = optional\n[ext]\n\
             subjectAltName = critical,URI:{subject}\nkeyUsage = critical,digitalSignature\n\
             extendedKeyUsage = codeSigning\n1.3.6.1.4.1.57264.1.8 = ASN1:UTF8String:{issuer}\n"
        ),
    )
    .unwrap();
    let (code, out, err) = run_cmd(
        Command::new("openssl")
            .current_dir(ca.path())
            .args(["ca", "-batch", "-config", "ca.cnf", "-extensions", "ext", "-notext", "-in", "csr.pem"])
            .args(["-out", "leaf.pem", "-startdate", &time(not_before), "-enddate", &time(not_after), "-cert"])
            .arg(&root)
            .arg("-keyfile")
            .arg(&key),
    );
    assert_eq!(code, 0, "openssl ca: {out}{err}");
    std::fs::read_to_string(ca.path().join("leaf.pem")).unwrap()
}

#[test]
fn a_signature_logged_after_its_certificate_expired_does_not_count() {
    let s = setup();
    let (_, subject) = identity("committer");
    // The CA's root is valid from when the test environment started; the leaves start with it.
    let root_pem = std::fs::read_to_string(peer("WEFT_TEST_FULCIO_ROOT")).unwrap();
    let (_, root_der) = pem_rfc7468::decode_vec(root_pem.as_bytes()).unwrap();
    let (_, root) = x509_parser::parse_x509_certificate(&root_der).unwrap();
    let start = root.validity().not_before.timestamp();
    while now() < start + 4 {
        std::thread::sleep(std::time::Duration::from_millis(500));
    }

    // Valid until two seconds ago: gpgsm signs within its validity (a faked clock, as a key that leaked
    // could), but the log sees the signature only now.
    let expired = certificate_valid(&s.gpgsm, "committer", start, now() - 2);
    let late = s.gpgsm.signer_at(&expired, start + 1);
    let commit = s.repo.commit("signed with an expired certificate", Sign::X509(&late));
    log_commit(s.dir.path(), &s.repo, &late, &commit);
    let refused = run(&s, keyless_policy("head", &[&subject]), &commit);
    assert_verdict(&refused, 1, "KeylessSignatureNotVerified");
    assert!(refused.message().contains("CertExpired"), "{}", refused.message());

    // The same with a certificate that was still valid when the log saw the signature counts, also once
    // the certificate has expired: the log's time is what matters, not the verifier's.
    let not_after = now() + 6;
    let current = certificate_valid(&s.gpgsm, "committer", start, not_after);
    let on_time = s.gpgsm.signer_at(&current, start + 1);
    let commit = s.repo.commit("signed in time", Sign::X509(&on_time));
    log_commit(s.dir.path(), &s.repo, &on_time, &commit);
    while now() <= not_after + 1 {
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert_verdict(&run(&s, keyless_policy("head", &[&subject]), &commit), 0, "Verified");
}

#[test]
fn gitsign_online_entries_over_the_object_id_count_for_that_object_only() {
    let s = setup();
    let signer = fulcio_signer(&s.gpgsm, "committer");
    let (_, subject) = identity("committer");
    let first = s.repo.commit("c1", Sign::X509(&signer));
    let second = s.repo.commit("c2", Sign::X509(&signer));
    log_object_id(s.dir.path(), &s.gpgsm, &signer, &first);

    let good = run(&s, keyless_policy("head", &[&subject]), &first);
    assert_verdict(&good, 0, "Verified");
    assert_eq!(good.verdict["history"]["headSigner"]["subject"], subject);
    // The certificate's entry names the first commit: the second, signed by the same key, is not logged.
    assert_verdict(&run(&s, keyless_policy("head", &[&subject]), &second), 1, "SignatureNotLogged");
    // A copy of the first commit changed after signing has another ID, and its digest does not match.
    assert_verdict(&run(&s, keyless_policy("head", &[&subject]), &s.repo.tampered_copy(&first)), 1, "BadSignature");
}
