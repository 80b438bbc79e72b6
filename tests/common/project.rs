//! A project for `weft run`: a signed application repository, a cosign key pair made by the real
//! cosign, and the profile, Application and resources files.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use super::git::{Gpg, Repo, Sign, SshKey, ssh_key};
use super::{peer, run_cmd};

/// A project: a signed application repository, a cosign key pair, and the files `weft run` reads.
pub struct Project {
    pub dir: tempfile::TempDir,
    _gpg: Gpg,
    pub repo: Repo,
    pub signer: SshKey,
    pub namespace: String,
}

pub const PASSWORD: &str = "correct horse";

impl Project {
    /// `files`: path → content in the application repository (committed and signed).
    pub fn new(files: &[(&str, String)], namespace: String) -> Project {
        let dir = tempfile::tempdir().unwrap();
        let gpg = Gpg::new();
        let signer = ssh_key(dir.path(), "release");
        let repo = Repo::new(&gpg);
        for (path, content) in files {
            repo.write(path, content.as_bytes());
        }
        repo.commit_all("release", Sign::Ssh(&signer));
        let (code, _, err) =
            run_cmd(Command::new("cosign").current_dir(dir.path()).env("COSIGN_PASSWORD", PASSWORD).args([
                "generate-key-pair",
                "--output-key-prefix",
                "weft",
            ]));
        assert_eq!(code, 0, "cosign generate-key-pair: {err}");
        let p = Project { dir, _gpg: gpg, repo, signer, namespace };
        p.write_resources(PASSWORD);
        p
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write_resources(&self, password: &str) {
        let key = std::fs::read_to_string(self.path("weft.key")).unwrap();
        let signers = format!("release@example.com {}", self.signer.public);
        let rekor_pub = std::fs::read_to_string(peer("WEFT_TEST_REKOR_PUBLIC_KEY")).unwrap();
        let docs = [
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "signers"}, "data": {"allowed_signers": signers}}),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "signing"}, "stringData": {"cosign.key": key, "cosign.password": password}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "rekor"}, "data": {"rekor.pub": rekor_pub}}),
        ];
        std::fs::write(
            self.path("resources.yaml"),
            docs.iter().map(Value::to_string).collect::<Vec<_>>().join("\n---\n"),
        )
        .unwrap();
    }

    /// Puts the project's Secrets and ConfigMaps into the namespace, as a user would apply them.
    pub async fn apply_resources(&self, client: &kube::Client, ns: &str) {
        let text = std::fs::read_to_string(self.path("resources.yaml")).unwrap();
        super::apply_documents(client, ns, &text).await;
    }

    /// A profile publishing to `repository` (and logging in Rekor when `rekor`).
    pub fn profile(&self, repository: &str, rekor: bool, extra: Value) -> PathBuf {
        let mut spec = json!({
            "applicationSelector": [{"name": "*"}],
            "sourceIntegrity": {"git": {"policies": [{"repos": [{"url": "file:///*"}], "gpg": {"mode": "strict"},
                "ssh": {"allowedSigners": {"configMapRef": {"name": "signers", "key": "allowed_signers"}}}}]}},
            "manifestSigning": {"key": {"secretRef": {"name": "signing", "key": "cosign.key"}, "passwordKey": "cosign.password"},
                                "image": {"repository": repository}}
        });
        if rekor {
            spec["provenance"] = json!({"rekor": {"url": peer("WEFT_TEST_REKOR_URL"), "publicKey": {"configMapRef": {"name": "rekor", "key": "rekor.pub"}}}});
        }
        merge(&mut spec, extra);
        let profile = json!({"apiVersion": "weft.dev/v1alpha1", "kind": "IntegrityProfile", "metadata": {"name": "p", "namespace": "argocd"}, "spec": spec});
        let path = self.path("profile.yaml");
        std::fs::write(&path, profile.to_string()).unwrap();
        path
    }

    /// As `profile` (logging in Rekor), signing keylessly as `keyless` says instead of with the key.
    pub fn keyless_profile(&self, repository: &str, extra: Value, keyless: Value) -> PathBuf {
        let path = self.profile(repository, true, extra);
        let mut p: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let signing = p["spec"]["manifestSigning"].as_object_mut().unwrap();
        signing.remove("key");
        signing.insert("keyless".into(), keyless);
        std::fs::write(&path, p.to_string()).unwrap();
        path
    }

    /// Makes the profile at `path` log in the Rekor v2 log (its checkpoint key a ConfigMap beside the
    /// other resources).
    pub fn use_rekor2(&self, path: &std::path::Path) {
        let key = std::fs::read_to_string(super::peer("WEFT_TEST_REKOR2_PUBLIC_KEY")).unwrap();
        let resources = std::fs::read_to_string(self.path("resources.yaml")).unwrap();
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "rekor2"}, "data": {"rekor.pub": key}});
        std::fs::write(self.path("resources.yaml"), format!("{resources}\n---\n{cm}")).unwrap();
        let mut p: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        p["spec"]["provenance"] = json!({"rekor": {
            "url": super::peer("WEFT_TEST_REKOR2_URL"),
            "version": 2,
            "readURL": super::peer("WEFT_TEST_REKOR2_READ_URL"),
            "origin": super::peer("WEFT_TEST_REKOR2_ORIGIN"),
            "publicKey": {"configMapRef": {"name": "rekor2", "key": "rekor.pub"}}
        }});
        std::fs::write(path, p.to_string()).unwrap();
    }

    /// The Application, synced to the repository's head.
    pub fn application(&self, source_extra: Value) -> PathBuf {
        let mut source = json!({"repoURL": self.repo.url(), "path": ".", "targetRevision": "main"});
        merge(&mut source, source_extra);
        let app = json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "metadata": {"name": "shop-cart", "namespace": "argocd"},
            "spec": {"project": "default", "source": source, "destination": {"server": "https://kubernetes.default.svc", "namespace": self.namespace}},
            "status": {"sync": {"status": "Synced", "revision": self.repo.head()}}
        });
        let path = self.path("application.yaml");
        std::fs::write(&path, app.to_string()).unwrap();
        path
    }

    /// Writes any Application.
    pub fn write_application(&self, app: &Value) -> PathBuf {
        let path = self.path("application.yaml");
        std::fs::write(&path, app.to_string()).unwrap();
        path
    }

    /// The signed manifests of an OCI layout written by `weft run --out`.
    pub fn layout_blob(&self, dir: &str) -> String {
        let root = self.path(dir);
        let index: Value = serde_json::from_str(&std::fs::read_to_string(root.join("index.json")).unwrap()).unwrap();
        let image = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["kind"] == "dev.cosignproject.cosign/image")
            .unwrap();
        let blob = |d: &str| std::fs::read(root.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).unwrap();
        let manifest: Value = serde_json::from_slice(&blob(image["digest"].as_str().unwrap())).unwrap();
        String::from_utf8(blob(manifest["layers"][0]["digest"].as_str().unwrap())).unwrap()
    }

    /// `weft run … --output json`: (exit code, JSON, stderr).
    pub fn run(&self, profile: &Path, app: &Path, extra: &[&str]) -> (i32, Value, String) {
        let (code, out, err) = run_cmd(
            Command::new(env!("CARGO_BIN_EXE_weft"))
                .current_dir(self.dir.path())
                .args(["run", "--output", "json", "--resources", "resources.yaml", "--cache-dir", "cache"])
                .arg("--profile")
                .arg(profile)
                .arg("--application")
                .arg(app)
                .args(extra),
        );
        (code, serde_json::from_str(&out).unwrap_or(Value::Null), err)
    }
}

pub fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

pub fn merge(base: &mut Value, extra: Value) {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        for (k, v) in e {
            b.insert(k, v);
        }
    }
}

/// The example application: a ConfigMap, a Service and a Deployment in `ns`.
pub fn shop_files(ns: &str) -> Vec<(String, String)> {
    let files = vec![
        (
            "configmap.yaml",
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cart-config, namespace: {ns}}}\ndata: {{CURRENCY: EUR}}\n"
            ),
        ),
        (
            "service.yaml",
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: cart, namespace: {ns}}}\nspec:\n  selector: {{app: cart}}\n  ports: [{{port: 80, targetPort: 8080}}]\n"
            ),
        ),
        (
            "deployment.yaml",
            format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: cart, namespace: {ns}, labels: {{app: cart}}}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: cart}}}}\n  template:\n    metadata: {{labels: {{app: cart}}}}\n    spec:\n      containers:\n      - name: cart\n        image: registry.example/shop/cart:1.4.2\n        ports: [{{containerPort: 8080}}]\n"
            ),
        ),
    ];
    files.into_iter().map(|(p, c)| (p.to_string(), c)).collect()
}

/// A project whose files are made for a namespace unique to the test.
pub fn with_namespace(f: impl FnOnce(&str) -> Vec<(String, String)>) -> Project {
    let ns = format!("shop-{}-{}", std::process::id(), rand_suffix());
    let files = f(&ns);
    let refs: Vec<(&str, String)> = files.iter().map(|(p, c)| (p.as_str(), c.clone())).collect();
    Project::new(&refs, ns)
}
