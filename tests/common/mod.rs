//! Shared fixtures for the integration tests: the real test cluster started by `tests/env/testenv.sh`,
//! a namespace per test, the `weft` binary run as a separate process, and polling for eventual state.
#![allow(dead_code)]

pub mod argocd;
pub mod chart;
pub mod git;
pub mod images;
pub mod project;
pub mod proxy;
pub mod verify;

use std::fs::File;
use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::Value;

/// The kubeconfig of the running test cluster. The tests need the real apiserver: without it they fail
/// (they are run through `tests/run`, which starts it), never skip.
pub fn kubeconfig_path() -> PathBuf {
    match std::env::var_os("WEFT_TEST_KUBECONFIG") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "WEFT_TEST_KUBECONFIG is not set: these tests run against a real kube-apiserver. \
             Run them with `tests/run`, or `tests/env/testenv.sh run -- cargo test`."
        ),
    }
}

pub async fn client() -> Client {
    let path = kubeconfig_path();
    let kubeconfig = Kubeconfig::read_from(&path).expect("read the test kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("kubeconfig");
    Client::try_from(config).expect("client")
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Creates a namespace unique to this test run.
pub async fn namespace(client: &Client, prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let name = format!("{prefix}-{}-{n}", std::process::id());
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("create namespace");
    name
}

pub fn application_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Application"), "applications")
}

pub fn weft_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("weft.dev", "v1alpha1", kind), plural)
}

pub fn applications(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &application_resource())
}
pub fn profiles(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &weft_resource("IntegrityProfile", "integrityprofiles"))
}
pub fn provenances(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &weft_resource("ApplicationProvenance", "applicationprovenances"))
}

/// Creates an object from JSON (kind and apiVersion included).
pub async fn create(api: &Api<DynamicObject>, value: Value) -> DynamicObject {
    let obj: DynamicObject = serde_json::from_value(value).expect("fixture is an object");
    api.create(&PostParams::default(), &obj).await.unwrap_or_else(|e| panic!("create {:?}: {e}", obj.metadata.name))
}

/// Replaces an object with a changed copy (as Argo CD updates Applications: the whole object, since the
/// Application CRD has no status subresource).
pub async fn update(api: &Api<DynamicObject>, name: &str, change: impl Fn(&mut Value)) -> DynamicObject {
    for _ in 0..10 {
        let current = api.get(name).await.expect("get for update");
        let mut v = serde_json::to_value(&current).unwrap();
        change(&mut v);
        let obj: DynamicObject = serde_json::from_value(v).unwrap();
        match api.replace(name, &PostParams::default(), &obj).await {
            Ok(o) => return o,
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => panic!("update {name}: {e}"),
        }
    }
    panic!("update {name}: conflicts persisted")
}

/// Polls `check` until it returns Some, or fails with the last observation after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    let mut last = String::from("(not checked yet)");
    while start.elapsed() < timeout {
        match check().await {
            Ok(v) => return v,
            Err(why) => last = why,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}; last observation: {last}")
}

/// Waits for the ApplicationProvenance of `app` and returns it once `accept` holds on its status.
pub async fn provenance_where(
    client: &Client,
    ns: &str,
    app: &str,
    what: &str,
    accept: impl Fn(&Value) -> bool,
) -> Value {
    let api = provenances(client, ns);
    eventually(what, Duration::from_secs(60), || {
        let api = api.clone();
        let accept = &accept;
        async move {
            let obj = api.get_opt(app).await.map_err(|e| e.to_string())?.ok_or("no ApplicationProvenance yet")?;
            let v = serde_json::to_value(&obj).unwrap();
            if accept(&v) { Ok(v) } else { Err(serde_json::to_string_pretty(&v["status"]).unwrap()) }
        }
    })
    .await
}

/// The condition of `type_` in an object's status, if any.
pub fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)
}

pub fn condition_reason(obj: &Value, type_: &str) -> Option<String> {
    condition(obj, type_).and_then(|c| c["reason"].as_str()).map(str::to_string)
}

/// The `weft` binary running as its own process against the test cluster; stopped on drop.
pub struct WeftProcess {
    child: Child,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl WeftProcess {
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("weft.log");
        let out = File::create(&log).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
        cmd.args(args)
            .env("KUBECONFIG", kubeconfig_path())
            .env("WEFT_LOG", std::env::var("WEFT_TEST_LOG").unwrap_or_else(|_| "info,weft=debug".into()))
            .stdout(Stdio::null())
            .stderr(out);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start weft");
        WeftProcess { child, log, _dir: dir }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the process to exit; returns its exit code.
    pub async fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }

    /// SIGKILL, as a crash: nothing is finished or released. The log stays readable.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for WeftProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() || std::env::var_os("WEFT_TEST_SHOW_LOGS").is_some() {
            eprintln!("---- weft log ({}) ----\n{}", self.log.display(), self.logs());
        }
    }
}

/// Creates the Secrets and ConfigMaps of a `---`-separated JSON document stream.
pub async fn apply_documents(client: &Client, ns: &str, text: &str) {
    for doc in text.split("\n---\n") {
        let v: Value = serde_json::from_str(doc).unwrap();
        let (kind, plural) = if v["kind"] == "Secret" { ("Secret", "secrets") } else { ("ConfigMap", "configmaps") };
        let api = Api::namespaced_with(
            client.clone(),
            ns,
            &ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", kind), plural),
        );
        create(&api, v).await;
    }
}

/// Metric `name` (a counter or gauge without labels) from Weft's `/metrics` on `addr`, or 0.
pub async fn metric(addr: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A commit SHA made of one repeated hex digit, for fixtures that need a well-formed revision.
pub fn sha(c: char) -> String {
    std::iter::repeat_n(c, 40).collect()
}

/// A peer's address from the test environment (`tests/env/testenv.sh`); the tests need it.
pub fn peer(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: this test runs against the real peers; run it with `tests/run` or `tests/env/testenv.sh run -- cargo test`")
    })
}

/// The real cosign of each major version Weft's output must satisfy: v2 (`cosign` on PATH) and v3.
/// A Sigstore trusted root naming the test environment's Rekor, written to `dir/trusted_root.json`:
/// cosign wants it (`--trusted-root`) to verify bundles logged in a private log.
pub fn trusted_root(dir: &std::path::Path) -> String {
    let pem = std::fs::read_to_string(peer("WEFT_TEST_REKOR_PUBLIC_KEY")).unwrap();
    let key = weft::provenance::rekor::LogKey::from_pem(&pem).unwrap();
    let root = weft::bundle::trusted_root_for_log(&peer("WEFT_TEST_REKOR_URL"), &key.der());
    let path = dir.join("trusted_root.json");
    std::fs::write(&path, root.to_string()).unwrap();
    path.to_str().unwrap().to_string()
}

/// A trusted root naming the test environment's Rekor (v1) and Fulcio's root, written to
/// `dir/trusted_root.json`: what verifies keyless signatures.
pub fn keyless_trusted_root(dir: &std::path::Path) -> String {
    use base64::Engine;
    let path = trusted_root(dir);
    let mut root: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let fulcio_root = std::fs::read_to_string(peer("WEFT_TEST_FULCIO_ROOT")).unwrap();
    let (_, der) = pem_rfc7468::decode_vec(fulcio_root.as_bytes()).unwrap();
    root["certificateAuthorities"] = serde_json::json!([{
        "subject": {"organization": "weft-test", "commonName": "weft-test-fulcio-root"},
        "uri": peer("WEFT_TEST_FULCIO_URL"),
        "certChain": {"certificates": [{"rawBytes": base64::engine::general_purpose::STANDARD.encode(&der)}]},
        "validFor": {"start": "2020-01-01T00:00:00Z"}}]);
    std::fs::write(&path, root.to_string()).unwrap();
    path
}

/// A token for ServiceAccount `name` in `ns` (created when missing), for `audience`.
pub fn service_account_token(ns: &str, name: &str, audience: &str) -> String {
    let (code, _, err) = run_cmd(Command::new("kubectl").args(["create", "serviceaccount", name, "-n", ns]));
    assert!(code == 0 || err.contains("already exists"), "kubectl create serviceaccount: {err}");
    let (code, out, err) =
        run_cmd(Command::new("kubectl").args(["create", "token", name, "-n", ns, "--audience", audience]));
    assert_eq!(code, 0, "kubectl create token: {err}");
    out.trim().to_string()
}

pub fn cosigns() -> [(&'static str, String); 2] {
    [("cosign v2", "cosign".into()), ("cosign v3", peer("WEFT_TEST_COSIGN3"))]
}

/// Runs a command, returning (exit code, stdout, stderr).
pub fn run_cmd(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes `dir/appprov.json`: an ApplicationProvenance naming `image`, its log entry `rekor` (as `weft run`
/// prints it) and the source revision, for `weft provenance verify --from-file`.
pub fn write_provenance_record(dir: &std::path::Path, image: &str, rekor: &Value, repo_url: &str, revision: &str) {
    let record = serde_json::json!({
        "apiVersion": "weft.dev/v1alpha1", "kind": "ApplicationProvenance",
        "metadata": {"name": "shop-cart", "namespace": "argocd"},
        "spec": {"application": {"name": "shop-cart"}},
        "status": {"verdict": "Verified", "manifestImage": image, "rekor": rekor,
                   "sources": [{"repoURL": repo_url, "revision": revision}]}
    });
    std::fs::write(dir.join("appprov.json"), record.to_string()).unwrap();
}

/// `weft provenance verify` of `dir/appprov.json` under `profile`, with `dir/resources.yaml`; `extra`
/// appended. Returns (exit code, stdout, stderr).
pub fn reverify(dir: &std::path::Path, profile: &std::path::Path, extra: &[&str]) -> (i32, String, String) {
    run_cmd(
        Command::new(env!("CARGO_BIN_EXE_weft"))
            .current_dir(dir)
            .args(["provenance", "verify", "--cache-dir", "verify-cache", "--from-file", "appprov.json"])
            .arg("--profile")
            .arg(profile)
            .args(["--resources", "resources.yaml"])
            .args(extra),
    )
}

/// cosign (`bin`, v2 or v3) checking `image` keylessly: `args` (`verify`, …), then the identity, the
/// issuer and the trusted root `root` (no CT log in the test environment).
pub fn cosign_keyless(
    bin: &str,
    dir: &std::path::Path,
    args: &[&str],
    identity: &str,
    issuer: &str,
    root: &str,
    image: &str,
) -> (i32, String, String) {
    run_cmd(Command::new(bin).current_dir(dir).args(args).args([
        "--certificate-identity",
        identity,
        "--certificate-oidc-issuer",
        issuer,
        "--trusted-root",
        root,
        "--insecure-ignore-sct",
        image,
    ]))
}

/// The API for an object's kind, as the cluster's discovery serves it (namespaced or cluster-wide).
pub async fn api_for(client: &Client, object: &Value) -> Api<DynamicObject> {
    let (group, version) = match object["apiVersion"].as_str().unwrap().split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", object["apiVersion"].as_str().unwrap()),
    };
    let gvk = GroupVersionKind::gvk(group, version, object["kind"].as_str().unwrap());
    let (resource, caps) = kube::discovery::pinned_kind(client, &gvk).await.unwrap();
    match caps.scope {
        kube::discovery::Scope::Namespaced => {
            Api::namespaced_with(client.clone(), object["metadata"]["namespace"].as_str().unwrap(), &resource)
        }
        kube::discovery::Scope::Cluster => Api::all_with(client.clone(), &resource),
    }
}

/// Server-side apply as `manager`, forcing conflicts (as Argo CD and Helm apply); the apiserver's error.
pub async fn apply_as(client: &Client, object: &Value, manager: &str) -> Result<(), kube::Error> {
    let name = object["metadata"]["name"].as_str().unwrap();
    let pp = kube::api::PatchParams::apply(manager).force();
    api_for(client, object).await.patch(name, &pp, &kube::api::Patch::Apply(object)).await.map(|_| ())
}

/// A kubeconfig for the test cluster that authenticates with `token` alone.
pub fn kubeconfig_with_token(token: &str, dir: &std::path::Path, name: &str) -> PathBuf {
    let admin: Value = serde_saphyr::from_str(&std::fs::read_to_string(kubeconfig_path()).unwrap()).unwrap();
    let cluster = &admin["clusters"][0]["cluster"];
    let kubeconfig = serde_json::json!({"apiVersion": "v1", "kind": "Config", "current-context": name,
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": name, "user": {"token": token.trim()}}],
        "contexts": [{"name": name, "context": {"cluster": "c", "user": name}}]});
    let path = dir.join(format!("{name}.kubeconfig"));
    std::fs::write(&path, kubeconfig.to_string()).unwrap();
    path
}
