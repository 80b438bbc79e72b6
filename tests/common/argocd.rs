//! Weft beside a real Argo CD: Applications in a namespace Argo CD watches (`argocd-e2e-*`), repositories
//! served over HTTP with Argo CD repository credentials, and Weft's controller and webhook running with the
//! chart's ServiceAccounts and RBAC. Argo CD, not the test, syncs.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use super::chart::{install_with, service_account_kubeconfig};
use super::git::{GitHttpServer, Repo, Sign};
use super::images::{Lab, key};
use super::project::{PASSWORD, Project, rand_suffix};
use super::*;

pub const ARGOCD_NAMESPACE: &str = "argocd";
pub const USER: &str = "deploy";
pub const SECRET: &str = "s3cret-e2e";

/// How the webhook runs for a stack.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Webhook {
    Off,
    /// Registered with `failurePolicy: Fail`, covering the stack's destination namespaces.
    Fail,
}

pub struct Stack {
    pub client: Client,
    /// Applications, the profile and what it refers to.
    pub ns: String,
    /// The chart's release namespace (Weft's ServiceAccounts).
    pub weft_ns: String,
    pub release: String,
    /// Keys (the commit signer, the manifest signing key) and the first repository.
    pub project: Project,
    pub git: GitHttpServer,
    pub lab: Lab,
    /// Destination namespaces the webhook covers.
    pub destinations: Vec<String>,
    pub manifests: String,
    pub controller: WeftProcess,
    pub controller_metrics: String,
    pub webhook: Option<WeftProcess>,
    pub dir: tempfile::TempDir,
}

impl Stack {
    /// A stack for `name` whose Applications deploy to `destinations` (suffixes: `<ns>-<suffix>`).
    pub async fn new(name: &str, destinations: &[&str], webhook: Webhook) -> Stack {
        Stack::with_tracking(name, destinations, webhook, "annotation").await
    }

    /// A stack whose controller and webhook read Argo CD's tracking with `tracking` (annotation, label
    /// or annotation+label), as argocd-cm sets it.
    pub async fn with_tracking(name: &str, destinations: &[&str], webhook: Webhook, tracking: &str) -> Stack {
        Stack::with_chart(name, destinations, webhook, tracking, &[]).await
    }

    /// A stack whose chart is installed with more `helm` options (`chart`).
    pub async fn with_chart(
        name: &str,
        destinations: &[&str],
        webhook: Webhook,
        tracking: &str,
        chart: &[&str],
    ) -> Stack {
        let client = client().await;
        let ns = namespace(&client, &format!("argocd-e2e-{name}")).await;
        let weft_ns = namespace(&client, &format!("weft-{name}")).await;
        // Unique across test processes: cluster-scoped objects of the chart carry the release name.
        let release = format!("weft-{}", weft_ns.trim_start_matches("weft-"));
        let destinations: Vec<String> = destinations.iter().map(|d| format!("{ns}-{d}")).collect();
        let dir = tempfile::tempdir().unwrap();

        let project = Project::new(&[("README.md", "e2e\n".to_string())], ns.clone());
        let git = GitHttpServer::start(&project.repo, "shop/first.git", USER, SECRET, &[]);
        let lab = Lab::new();

        // Argo CD's credentials for every repository of the server; Weft reads the same Secret.
        let creds = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": format!("creds-{ns}"), "labels": {"argocd.argoproj.io/secret-type": "repo-creds"}},
            "stringData": {"url": format!("http://127.0.0.1:{}", git.port), "username": USER, "password": SECRET}});
        apply_documents(&client, ARGOCD_NAMESPACE, &creds.to_string()).await;
        project.apply_resources(&client, &ns).await;
        apply_documents(&client, &ns, &std::fs::read_to_string(lab.path("resources.yaml")).unwrap()).await;

        // The chart, for its ServiceAccounts, RBAC and webhook configuration (failing open until the
        // webhook below serves: the configuration covers every cluster-scoped object of other tests).
        let selector = json!([{"key": "kubernetes.io/metadata.name", "operator": "In", "values": destinations}]);
        let selector = format!("webhook.namespaceSelector.matchExpressions={selector}");
        let mut options =
            vec!["--set", "argocdNamespace=argocd", "--set", "webhook.failurePolicy=Ignore", "--set-json", &selector];
        options.extend_from_slice(chart);
        install_with(&client, &release, &weft_ns, &options).await;
        let controller_kubeconfig = service_account_kubeconfig(&weft_ns, &format!("{release}-controller"), dir.path());
        let controller_metrics = free_address();
        let cache = dir.path().join("cache");
        let controller = WeftProcess::start_with_env(
            &[
                "controller",
                "--namespace",
                &ns,
                "--argocd-namespace",
                ARGOCD_NAMESPACE,
                "--cache-dir",
                cache.to_str().unwrap(),
                "--health-listen",
                &controller_metrics,
                "--tracking-method",
                tracking,
            ],
            &[("KUBECONFIG", controller_kubeconfig.to_str().unwrap())],
        );
        let configuration = format!("{release}-webhook");
        let webhooks: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
        let webhook = match webhook {
            Webhook::Off => {
                webhooks.delete(&configuration, &Default::default()).await.unwrap();
                None
            }
            Webhook::Fail => {
                let address = free_address();
                // The apiserver calls the webhook process on loopback, not the chart's Service.
                let mut current = serde_json::to_value(webhooks.get(&configuration).await.unwrap()).unwrap();
                current["webhooks"][0]["clientConfig"] = json!({"url": format!("https://{address}/validate")});
                webhooks
                    .replace(&configuration, &Default::default(), &serde_json::from_value(current).unwrap())
                    .await
                    .unwrap();
                let kubeconfig = service_account_kubeconfig(&weft_ns, &configuration, dir.path());
                let process = WeftProcess::start_with_env(
                    &[
                        "--log-format",
                        "json",
                        "webhook",
                        "--listen",
                        &address,
                        "--argocd-namespace",
                        ARGOCD_NAMESPACE,
                        "--cert-host",
                        "127.0.0.1",
                        "--cert-namespace",
                        &weft_ns,
                        "--webhook-configuration",
                        &configuration,
                        "--tracking-method",
                        tracking,
                        "--manifest-key",
                        project.path("weft.pub").to_str().unwrap(),
                    ],
                    &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
                );
                super::chart::webhook_serving(&client, &configuration, &address).await;
                let mut current = serde_json::to_value(webhooks.get(&configuration).await.unwrap()).unwrap();
                current["webhooks"][0]["failurePolicy"] = json!("Fail");
                webhooks
                    .replace(&configuration, &Default::default(), &serde_json::from_value(current).unwrap())
                    .await
                    .unwrap();
                Some(process)
            }
        };
        let manifests = format!("{}/manifests/e2e-{}", peer("WEFT_TEST_REGISTRY_REFERRERS"), rand_suffix());
        Stack {
            client,
            ns,
            weft_ns,
            release,
            project,
            git,
            lab,
            destinations,
            manifests,
            controller,
            controller_metrics,
            webhook,
            dir,
        }
    }

    /// The profile: strict SSH-signed sources from the test's git server, images signed with the lab's
    /// key, manifests signed and published, provenance in Rekor; `extra` merges into the spec.
    pub async fn profile(&self, extra: Value) {
        let policy = json!({"repos": [{"url": format!("http://127.0.0.1:{}/*", self.git.port)}], "gpg": {"mode": "strict"},
            "ssh": {"allowedSigners": {"configMapRef": {"name": "signers", "key": "allowed_signers"}}}});
        let iv = self.lab.image_verification(key("keys"), json!({}));
        let mut spec = json!({"sourceIntegrity": {"git": {"policies": [policy]}}, "imageVerification": iv});
        super::project::merge(&mut spec, extra);
        let path = self.project.profile(&self.manifests, true, spec);
        let mut profile: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        profile["metadata"] = json!({"name": "production", "namespace": self.ns});
        let api = profiles(&self.client, &self.ns);
        let name = "production";
        match api.get_opt(name).await.unwrap() {
            Some(_) => {
                update(&api, name, |v| v["spec"] = profile["spec"].clone()).await;
            }
            None => {
                create(&api, profile).await;
            }
        }
    }

    /// A repository signed by the project's signer, served as `name`, with `files`; returns it.
    pub fn repository(&self, name: &str, files: &[(&str, String)]) -> Repo {
        let repo = Repo::new(&super::git::Gpg::new());
        for (path, content) in files {
            repo.write(path, content.as_bytes());
        }
        repo.commit_all("release", Sign::Ssh(&self.project.signer));
        self.git.add(&repo, name);
        repo
    }

    /// An image in the test registry, signed by the lab's key.
    pub fn signed_image(&self, name: &str) -> String {
        let image = self.lab.image(&format!("e2e/{name}"), "1.0");
        self.lab.sign("k", &image);
        image
    }

    /// An automatically synced Application (prune, selfHeal, CreateNamespace, quick retries).
    pub fn application(&self, name: &str, sources: Value, destination: &str) -> Value {
        let mut app = json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
            "metadata": {"name": name, "namespace": self.ns, "finalizers": ["resources-finalizer.argocd.argoproj.io"]},
            "spec": {"project": "default",
                "destination": {"server": "https://kubernetes.default.svc", "namespace": destination},
                "syncPolicy": {"automated": {"prune": true, "selfHeal": true}, "syncOptions": ["CreateNamespace=true"],
                    "retry": {"limit": 5, "backoff": {"duration": "2s", "factor": 2, "maxDuration": "8s"}}}}});
        let spec = app["spec"].as_object_mut().unwrap();
        match sources {
            Value::Array(list) => spec.insert("sources".into(), Value::Array(list)),
            one => spec.insert("source".into(), one),
        };
        app
    }

    /// Creates an Application; Argo CD takes it from there.
    pub async fn create_application(&self, app: Value) {
        create(&applications(&self.client, &self.ns), app).await;
    }

    /// The Application once Argo CD synced `revisions` (one per source, in order) successfully.
    pub async fn synced(&self, name: &str, revisions: &[String]) -> Value {
        let api = applications(&self.client, &self.ns);
        let want: Vec<String> = revisions.to_vec();
        eventually(&format!("Argo CD to sync {name} at {want:?}"), Duration::from_secs(240), || {
            let (api, want) = (api.clone(), want.clone());
            async move {
                let app = serde_json::to_value(api.get(name).await.map_err(|e| e.to_string())?).unwrap();
                let s = &app["status"];
                let synced: Vec<String> = match s["sync"]["revisions"].as_array() {
                    Some(list) => list.iter().filter_map(|r| r.as_str().map(String::from)).collect(),
                    None => s["sync"]["revision"].as_str().map(|r| vec![r.to_string()]).unwrap_or_default(),
                };
                let done = s["sync"]["status"] == "Synced"
                    && s["operationState"]["phase"] == "Succeeded"
                    && synced == want
                    && app["operation"].is_null();
                if done {
                    Ok(app)
                } else {
                    Err(format!(
                        "sync {} at {synced:?}, operation {}: {}",
                        s["sync"]["status"], s["operationState"]["phase"], s["operationState"]["message"]
                    ))
                }
            }
        })
        .await
    }

    /// The ApplicationProvenance once it vouches for exactly `revisions`.
    pub async fn vouched(&self, name: &str, revisions: &[String]) -> Value {
        let want: Vec<String> = revisions.to_vec();
        let api = provenances(&self.client, &self.ns);
        eventually(&format!("Weft to vouch for {name} at {want:?}"), Duration::from_secs(240), || {
            let (api, want) = (api.clone(), want.clone());
            async move {
                let v = serde_json::to_value(api.get_opt(name).await.map_err(|e| e.to_string())?.ok_or("none yet")?)
                    .unwrap();
                let revs: Vec<String> = v["status"]["sources"]
                    .as_array()
                    .map(|l| l.iter().filter_map(|s| s["revision"].as_str().map(String::from)).collect())
                    .unwrap_or_default();
                if v["status"]["verdict"] == "Verified" && revs == want {
                    Ok(v)
                } else {
                    Err(serde_json::to_string_pretty(&v["status"]).unwrap())
                }
            }
        })
        .await
    }

    /// `kubectl sigstore verify-resource` of every object the manifest image signs, read from the cluster
    /// (as a security team checks it): (exit code, result).
    pub fn verify_resources(&self, image: &str) -> (i32, Value, String) {
        let (code, out, err) = run_cmd(
            Command::new("kubectl-sigstore")
                .current_dir(self.project.dir.path())
                .env("SIGSTORE_REKOR_PUBLIC_KEY", peer("WEFT_TEST_REKOR_PUBLIC_KEY"))
                // A root file of its own, so the tool does not go looking for Sigstore's public TUF
                // repository (keyed verification needs none).
                .env("SIGSTORE_ROOT_FILE", std::path::Path::new(&peer("WEFT_TEST_ENV_DIR")).join("certs/ca.crt"))
                .args(["verify-resource", "-i", image, "-k", "weft.pub", "--rekor-url", &peer("WEFT_TEST_REKOR_URL")])
                .args(["-c", concat!(env!("CARGO_MANIFEST_DIR"), "/examples/verify-resource-config.yaml")])
                .args(["-o", "json"]),
        );
        (code, serde_json::from_str(&out).unwrap_or(Value::Null), err)
    }

    /// The controller's metric `name` (a counter without labels), or 0.
    pub async fn controller_metric(&self, name: &str) -> f64 {
        super::metric(&self.controller_metrics, name).await
    }

    /// The webhook's decisions so far, from its log (JSON lines): (object, allowed, message).
    pub fn decisions(&self) -> Vec<(String, bool, String)> {
        let Some(w) = &self.webhook else { return Vec::new() };
        w.logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["message"] == "admission review")
            .map(|v| {
                let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
                (
                    text("object"),
                    v["allowed"].as_bool().unwrap_or(true),
                    format!("{} (by {})", text("detail"), text("user")),
                )
            })
            .collect()
    }

    /// What the webhook admitted in audit mode, though it would have denied it: (object, message).
    pub fn audited(&self) -> Vec<(String, String)> {
        let Some(w) = &self.webhook else { return Vec::new() };
        w.logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["message"] == "admission review" && v["audited"] == true)
            .map(|v| (v["object"].as_str().unwrap_or_default().into(), v["detail"].as_str().unwrap_or_default().into()))
            .collect()
    }

    /// The webhook's denials so far: (object, message).
    pub fn denials(&self) -> Vec<(String, String)> {
        self.decisions().into_iter().filter(|(_, allowed, _)| !allowed).map(|(o, _, m)| (o, m)).collect()
    }

    /// Where the project's signing key's public half is.
    pub fn public_key(&self) -> PathBuf {
        self.project.path("weft.pub")
    }
}

impl Drop for Stack {
    /// The webhook's registration goes with the stack: left behind with `failurePolicy: Fail` and no
    /// process to answer, it would refuse the writes it covers for every later test.
    fn drop(&mut self) {
        let name = format!("{}-webhook", self.release);
        let _ = Command::new("kubectl")
            .args(["delete", "validatingwebhookconfiguration", &name, "--ignore-not-found", "--wait=false"])
            .output();
        // The apiserver learns of the deletion a moment later; the webhook keeps answering until then
        // (its process stops after this, with the stack's other fields).
        if self.webhook.is_some() {
            std::thread::sleep(Duration::from_secs(2));
        }
    }
}

/// A free loopback address.
pub fn free_address() -> String {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string()
}

/// The password of the project's signing key, for commands that need it.
pub fn password() -> &'static str {
    PASSWORD
}

/// Patches an object with a JSON merge patch, as a user with kubectl would.
pub async fn merge_patch(api: &Api<kube::api::DynamicObject>, name: &str, patch: Value) {
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}
