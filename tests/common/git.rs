//! Real git repositories signed by the real `gpg` and `ssh-keygen`, made at test time in temporary
//! directories (an isolated GNUPGHOME per test).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Writes a wrapper script git runs as its signing program (`gpg.program`, `gpg.x509.program`), and
/// returns once it can be executed. Another test thread that forks while the script is still open for
/// writing holds that descriptor until it execs, and executing the script meanwhile fails with "Text
/// file busy": so run it (`--version`, which gpg and gpgsm both answer) until the kernel lets us.
fn write_program(path: &Path, script: &str) {
    std::fs::write(path, script).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for _ in 0..200 {
        match Command::new(path).arg("--version").output() {
            Err(e) if e.raw_os_error() == Some(26) => std::thread::sleep(std::time::Duration::from_millis(10)),
            Err(e) => panic!("cannot run {}: {e}", path.display()),
            Ok(_) => return,
        }
    }
    panic!("{} stayed busy", path.display());
}

/// An isolated gpg home with its own agent (stopped on drop).
pub struct Gpg {
    home: TempDir,
}

#[derive(Clone, Debug)]
pub struct GpgKey {
    pub fingerprint: String,
    /// The signing subkey, when the key was made with one.
    pub signing_subkey: Option<String>,
}

impl Gpg {
    pub fn new() -> Gpg {
        let home = tempfile::Builder::new().prefix("gpg").tempdir_in("/tmp").expect("gnupg home");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        Gpg { home }
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new("gpg");
        c.env("GNUPGHOME", self.home.path()).args([
            "--batch",
            "--yes",
            "--passphrase",
            "",
            "--pinentry-mode",
            "loopback",
        ]);
        c
    }

    fn fingerprint_of(&self, uid: &str) -> String {
        let listing = run(self.cmd().args(["--list-keys", "--with-colons", uid]));
        listing
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .expect("fingerprint")
            .to_string()
    }

    /// An ed25519 key that signs with its primary key.
    pub fn key(&self, name: &str) -> GpgKey {
        let uid = format!("{name} <{}@example.com>", name.to_lowercase());
        run(self.cmd().args(["--quick-gen-key", &uid, "ed25519", "sign", "1y"]));
        GpgKey { fingerprint: self.fingerprint_of(&uid), signing_subkey: None }
    }

    /// A certify-only primary key with a signing subkey.
    pub fn key_with_subkey(&self, name: &str) -> GpgKey {
        let uid = format!("{name} <{}@example.com>", name.to_lowercase());
        run(self.cmd().args(["--quick-gen-key", &uid, "ed25519", "cert", "never"]));
        let primary = self.fingerprint_of(&uid);
        run(self.cmd().args(["--quick-add-key", &primary, "ed25519", "sign", "1y"]));
        let listing = run(self.cmd().args(["--list-keys", "--with-colons", &primary]));
        let fprs: Vec<&str> =
            listing.lines().filter(|l| l.starts_with("fpr:")).filter_map(|l| l.split(':').nth(9)).collect();
        GpgKey { fingerprint: primary, signing_subkey: fprs.get(1).map(|s| s.to_string()) }
    }

    /// An ed25519 key that signs with its primary key, made by gpg as if the time were `time` (seconds
    /// since the epoch), valid for a year from then.
    pub fn key_made_at(&self, name: &str, time: i64) -> GpgKey {
        let uid = format!("{name} <{}@example.com>", name.to_lowercase());
        run(self.cmd().args([
            "--faked-system-time",
            &format!("{time}!"),
            "--quick-gen-key",
            &uid,
            "ed25519",
            "sign",
            "1y",
        ]));
        GpgKey { fingerprint: self.fingerprint_of(&uid), signing_subkey: None }
    }

    /// A program git can use as `gpg.program` that signs as if the time were `time`, with signatures that
    /// expire after `sig_expire` (gpg's `--default-sig-expire`, e.g. `1d`).
    pub fn program_at(&self, time: i64, sig_expire: &str) -> PathBuf {
        let path = self.home.path().join(format!("gpg-at-{time}-{sig_expire}"));
        let script =
            format!("#!/bin/sh\nexec gpg --faked-system-time {time}! --default-sig-expire {sig_expire} \"$@\"\n");
        write_program(&path, &script);
        path
    }

    /// Makes the key expire (its self-signature now says it expired a moment ago).
    pub fn expire(&self, key: &GpgKey) {
        run(self.cmd().args(["--quick-set-expire", &key.fingerprint, "seconds=1"]));
        if let Some(sub) = &key.signing_subkey {
            run(self.cmd().args(["--quick-set-expire", &key.fingerprint, "seconds=1", sub]));
        }
        std::thread::sleep(std::time::Duration::from_millis(2100));
    }

    /// Imports the revocation certificate gpg made at key generation.
    pub fn revoke(&self, key: &GpgKey) {
        let rev = self.home.path().join("openpgp-revocs.d").join(format!("{}.rev", key.fingerprint));
        let text = std::fs::read_to_string(&rev).expect("revocation certificate").replace(":-----BEGIN", "-----BEGIN");
        let path = self.home.path().join("revoke.asc");
        std::fs::write(&path, text).unwrap();
        run(self.cmd().arg("--import").arg(&path));
    }

    pub fn export(&self, key: &GpgKey) -> String {
        run(self.cmd().args(["--armor", "--export", &key.fingerprint]))
    }

    /// A detached armored signature over `data` by `key`.
    pub fn sign_detached(&self, key: &GpgKey, data: &Path) -> String {
        self.sign_detached_with(key, data, &[])
    }

    /// A detached armored signature with extra gpg options (a faked clock, a signature expiry…).
    pub fn sign_detached_with(&self, key: &GpgKey, data: &Path, options: &[&str]) -> String {
        run(self
            .cmd()
            .args(options)
            .args(["--armor", "--detach-sign", "--local-user", &key.fingerprint, "--output", "-"])
            .arg(data))
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf").env("GNUPGHOME", self.home.path()).args(["--kill", "gpg-agent"]).output();
    }
}

/// An SSH key made by ssh-keygen.
/// An isolated gpgsm home (its own agent, stopped on drop) holding keys whose certificates a CA issued
/// (see `x509_signer`). gpgsm includes the signer's certificate in each signature, as gitsign does.
pub struct Gpgsm {
    home: TempDir,
}

/// A gpgsm key with its certificate, and the program git runs to sign with it.
pub struct X509Signer {
    pub fingerprint: String,
    /// The certificate, PEM.
    pub certificate: String,
    pub program: PathBuf,
}

impl Gpgsm {
    /// `gpgsm` is the program to run (a gpgsm that reads Fulcio's certificates); `root` the CA's PEM,
    /// which gpgsm must trust to sign.
    pub fn new(gpgsm: &str, root: &str) -> Gpgsm {
        let home = tempfile::Builder::new().prefix("gpgsm").tempdir_in("/tmp").expect("gpgsm home");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        std::fs::write(home.path().join("gpgsm.conf"), "disable-crl-checks\ninclude-certs 1\n").unwrap();
        std::fs::write(home.path().join("gpg-agent.conf"), "allow-loopback-pinentry\n").unwrap();
        let program = home.path().join("gpgsm");
        write_program(&program, &format!("#!/bin/sh\nGNUPGHOME={} exec {gpgsm} \"$@\"\n", home.path().display()));
        let g = Gpgsm { home };
        let root_path = g.home.path().join("root.pem");
        std::fs::write(&root_path, root).unwrap();
        run(g.cmd().args(["--batch", "--import"]).arg(&root_path));
        let fpr = run(Command::new("openssl").args(["x509", "-noout", "-fingerprint", "-sha1", "-in"]).arg(&root_path));
        let fpr = fpr.rsplit('=').next().unwrap().to_string();
        std::fs::write(g.home.path().join("trustlist.txt"), format!("{fpr} S relax\n")).unwrap();
        g
    }

    pub fn cmd(&self) -> Command {
        Command::new(self.home.path().join("gpgsm"))
    }

    /// A new RSA key (gpgsm makes only RSA keys) and its certificate request, PEM.
    pub fn request(&self) -> String {
        let parms = self.home.path().join("parms");
        std::fs::write(&parms, "Key-Type: RSA\nKey-Length: 2048\nKey-Usage: sign\nName-DN: CN=weft-test\n").unwrap();
        run(self
            .cmd()
            .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--armor", "--gen-key"])
            .arg(&parms))
    }

    /// Like `signer`, but gpgsm signs as if the time were `epoch` (`--faked-system-time`): to sign within
    /// a certificate's validity that has passed.
    pub fn signer_at(&self, certificate: &str, epoch: i64) -> X509Signer {
        let mut signer = self.signer(certificate);
        let program = self.home.path().join(format!("gpgsm-at-{epoch}"));
        write_program(
            &program,
            &format!("#!/bin/sh\nexec {} --faked-system-time {epoch}! \"$@\"\n", signer.program.display()),
        );
        signer.program = program;
        signer
    }

    /// The signer's private key (PKCS #1 DER), to sign what gpgsm does not (gitsign's commit-ID entries).
    pub fn secret_key(&self, signer: &X509Signer) -> Vec<u8> {
        let out = self
            .cmd()
            .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--export-secret-key-raw"])
            .arg(format!("0x{}", signer.fingerprint))
            .output()
            .unwrap();
        assert!(!out.stdout.is_empty(), "gpgsm --export-secret-key-raw: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    /// Imports the certificate issued for the last request's key: the key can then sign.
    pub fn signer(&self, certificate: &str) -> X509Signer {
        let path = self.home.path().join("leaf.pem");
        std::fs::write(&path, certificate).unwrap();
        // gpgsm logs "no subject found in certificate" for Fulcio's empty subject, and so exits 2, but
        // imports it.
        let out = self.cmd().args(["--batch", "--import"]).arg(&path).output().unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(log.contains("imported: 1"), "gpgsm --import {}: {log}", path.display());
        let fpr = run(Command::new("openssl").args(["x509", "-noout", "-fingerprint", "-sha1", "-in"]).arg(&path));
        X509Signer {
            fingerprint: fpr.rsplit('=').next().unwrap().replace(':', ""),
            certificate: certificate.to_string(),
            program: self.home.path().join("gpgsm"),
        }
    }
}

impl Drop for Gpgsm {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf").env("GNUPGHOME", self.home.path()).args(["--kill", "gpg-agent"]).output();
    }
}

pub struct SshKey {
    pub private: PathBuf,
    pub public: String,
}

pub fn ssh_key(dir: &Path, name: &str) -> SshKey {
    let private = dir.join(name);
    run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"]).arg(&private));
    let public = std::fs::read_to_string(private.with_extension("pub")).expect("public key").trim().to_string();
    SshKey { private, public }
}

/// How a commit or tag is signed.
#[derive(Clone, Copy)]
pub enum Sign<'a> {
    No,
    Gpg(&'a GpgKey),
    /// By a gpg key, through another gpg program (see `Gpg::program_at`).
    GpgVia(&'a GpgKey, &'a Path),
    Ssh(&'a SshKey),
    /// By gpgsm, with a certificate (`git -c gpg.format=x509`).
    X509(&'a X509Signer),
}

/// A git work tree whose objects the tests sign.
pub struct Repo {
    pub dir: TempDir,
    gnupghome: PathBuf,
    counter: std::cell::Cell<u32>,
}

impl Repo {
    pub fn new(gpg: &Gpg) -> Repo {
        Repo::init(gpg, &[])
    }

    /// A repository made with extra `git init` options (`--object-format=sha256`, …).
    pub fn init(gpg: &Gpg, options: &[&str]) -> Repo {
        let dir = tempfile::Builder::new().prefix("repo").tempdir().expect("repo dir");
        let repo = Repo { dir, gnupghome: gpg.home().to_path_buf(), counter: std::cell::Cell::new(0) };
        let mut args = vec!["init", "-q", "-b", "main"];
        args.extend_from_slice(options);
        repo.git(&args);
        repo.git(&["config", "user.name", "Alice"]);
        repo.git(&["config", "user.email", "alice@example.com"]);
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.path().display())
    }

    pub fn git(&self, args: &[&str]) -> String {
        run(Command::new("git").current_dir(self.path()).env("GNUPGHOME", &self.gnupghome).args(args))
    }

    fn signing_args(sign: Sign) -> Vec<String> {
        match sign {
            Sign::No => vec!["-c".into(), "commit.gpgsign=false".into(), "-c".into(), "tag.gpgsign=false".into()],
            Sign::Gpg(k) => vec![
                "-c".into(),
                "gpg.format=openpgp".into(),
                "-c".into(),
                format!("user.signingkey={}!", k.signing_subkey.as_deref().unwrap_or(&k.fingerprint)),
            ],
            Sign::GpgVia(k, program) => vec![
                "-c".into(),
                "gpg.format=openpgp".into(),
                "-c".into(),
                format!("gpg.program={}", program.display()),
                "-c".into(),
                format!("user.signingkey={}!", k.signing_subkey.as_deref().unwrap_or(&k.fingerprint)),
            ],
            Sign::Ssh(k) => vec![
                "-c".into(),
                "gpg.format=ssh".into(),
                "-c".into(),
                format!("user.signingkey={}", k.private.display()),
            ],
            Sign::X509(k) => vec![
                "-c".into(),
                "gpg.format=x509".into(),
                "-c".into(),
                format!("gpg.x509.program={}", k.program.display()),
                "-c".into(),
                format!("user.signingkey=0x{}", k.fingerprint),
            ],
        }
    }

    /// Writes a file and commits everything, signed as asked; returns the commit id.
    pub fn commit(&self, message: &str, sign: Sign) -> String {
        let n = self.counter.get() + 1;
        self.counter.set(n);
        std::fs::write(self.path().join(format!("file-{n}.txt")), format!("{n}\n")).unwrap();
        self.commit_all(message, sign)
    }

    pub fn commit_all(&self, message: &str, sign: Sign) -> String {
        self.git(&["add", "-A"]);
        let mut args = Self::signing_args(sign);
        args.extend(["commit".into(), "-q".into(), "--allow-empty".into(), "-m".into(), message.into()]);
        if !matches!(sign, Sign::No) {
            args.push("-S".into());
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.git(&refs);
        self.head()
    }

    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"])
    }

    pub fn write(&self, path: &str, content: &[u8]) {
        let p = self.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    pub fn tag(&self, name: &str, sign: Sign) {
        let mut args = Self::signing_args(sign);
        args.push("tag".into());
        match sign {
            Sign::No => args.extend(["-a".into(), name.into(), "-m".into(), format!("release {name}")]),
            _ => args.extend(["-s".into(), name.into(), "-m".into(), format!("release {name}")]),
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.git(&refs);
    }

    pub fn lightweight_tag(&self, name: &str) {
        self.git(&["tag", name]);
    }

    /// Writes a copy of `commit` with its message changed but its signature kept (a forgery).
    pub fn tampered_copy(&self, commit: &str) -> String {
        let raw = self.git(&["cat-file", "commit", commit]);
        let forged = raw.replacen("\n\n", "\n\nforged: ", 1) + "\n";
        let path = self.path().join(".forged");
        std::fs::write(&path, forged).unwrap();
        let id = self.git(&["hash-object", "-w", "-t", "commit", path.to_str().unwrap()]);
        std::fs::remove_file(path).unwrap();
        id
    }
}

/// git's own smart-HTTP server (`git http-backend`, tests/env/git-http-server.py) behind Basic auth, on
/// loopback, serving a bare clone of a test repository; stopped on drop.
pub struct GitHttpServer {
    child: std::process::Child,
    pub port: u16,
    root: TempDir,
}

impl GitHttpServer {
    /// Serves `repo` as `name` over plain http; `env` sets the server's options (a request log, a
    /// redirect; see the script).
    pub fn start(repo: &Repo, name: &str, user: &str, password: &str, env: &[(&str, &str)]) -> GitHttpServer {
        Self::spawn(repo, name, user, password, env, None)
    }

    /// Serves over https with a certificate for 127.0.0.1 from a CA the test makes (its PEM is returned
    /// too).
    pub fn start_tls(repo: &Repo, name: &str, user: &str, password: &str) -> (GitHttpServer, String) {
        let tls = tempfile::tempdir().unwrap();
        let sh = |script: &str| {
            assert!(Command::new("sh").current_dir(tls.path()).args(["-c", script]).status().unwrap().success())
        };
        sh(
            "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 1 -subj /CN=test-ca 2>/dev/null",
        );
        sh("openssl req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr -subj /CN=127.0.0.1 2>/dev/null");
        sh("printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > ext.cnf");
        sh(
            "openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out srv.crt -days 1 -extfile ext.cnf 2>/dev/null",
        );
        let ca = std::fs::read_to_string(tls.path().join("ca.crt")).unwrap();
        let server = Self::spawn(repo, name, user, password, &[], Some(tls));
        (server, ca)
    }

    fn spawn(
        repo: &Repo,
        name: &str,
        user: &str,
        password: &str,
        env: &[(&str, &str)],
        tls: Option<TempDir>,
    ) -> GitHttpServer {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join(name);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        run(Command::new("git").args(["clone", "-q", "--bare"]).arg(repo.path()).arg(&target));
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/env/git-http-server.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script).arg(root.path()).args([user, password]).stdout(std::process::Stdio::piped());
        if let Some(tls) = &tls {
            cmd.arg(tls.path().join("srv.crt")).arg(tls.path().join("srv.key"));
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("python3 runs the git HTTP server");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| panic!("the git HTTP server did not start: {line:?}"));
        if let Some(tls) = tls {
            // Keep the certificate files as long as the server runs.
            let _ = std::fs::rename(tls.keep(), root.path().join(".tls"));
        }
        GitHttpServer { child, port, root }
    }

    /// The bare repository the server serves as `name`.
    pub fn repository(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    /// Serves another repository, as `name`.
    pub fn add(&self, repo: &Repo, name: &str) {
        let target = self.repository(name);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        run(Command::new("git").args(["clone", "-q", "--bare"]).arg(repo.path()).arg(&target));
    }

    /// Pushes `repo`'s branches and tags to the served `name` (as a developer pushes).
    pub fn push(&self, repo: &Repo, name: &str) {
        repo.git(&[
            "push",
            "-q",
            "--force",
            "--tags",
            self.repository(name).to_str().unwrap(),
            "refs/heads/*:refs/heads/*",
        ]);
    }

    /// `http://127.0.0.1:PORT/name`.
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
