//! The Helm chart as tests install it: rendered by the real helm, applied to the real apiserver, and
//! kubeconfigs that authenticate as its ServiceAccounts.
#![allow(dead_code)]

use std::process::Command;

use kube::{Api, Client};
use serde_json::Value;

use super::run_cmd;

pub const CHART: &str = "charts/weft";

pub fn helm(args: &[&str]) -> String {
    let (code, out, err) = run_cmd(Command::new("helm").args(args));
    assert_eq!(code, 0, "helm {args:?}: {out}{err}");
    out
}

/// `helm template` for a release in `ns`, as YAML documents (JSON values).
pub fn render(release: &str, ns: &str, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["template", release, CHART, "--namespace", ns, "--kube-version", "1.34.0"];
    args.extend(extra);
    let out = helm(&args);
    out.split("\n---")
        .filter(|d| d.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')))
        .map(|d| serde_saphyr::from_str::<Value>(d).unwrap_or_else(|e| panic!("{e}: {d}")))
        .collect()
}

pub async fn apply(client: &Client, object: &Value) {
    super::apply_as(client, object, "helm-test")
        .await
        .unwrap_or_else(|e| panic!("apply {} {}: {e}", object["kind"], object["metadata"]["name"]));
}

/// A kubeconfig that authenticates with a token of the ServiceAccount alone.
pub fn service_account_kubeconfig(ns: &str, sa: &str, dir: &std::path::Path) -> std::path::PathBuf {
    let (code, token, err) =
        run_cmd(Command::new("kubectl").args(["create", "token", sa, "-n", ns, "--duration", "1h"]));
    assert_eq!(code, 0, "{err}");
    super::kubeconfig_with_token(&token, dir, sa)
}

/// Installs the chart as `release` in `ns`; its webhook covers no namespace and ignores failures, so it
/// cannot disturb other tests.
pub async fn install(client: &Client, release: &str, ns: &str) {
    let selector = format!("webhook.namespaceSelector.matchLabels.weft-chart-test={ns}");
    let argocd = format!("argocdNamespace={ns}");
    install_with(client, release, ns, &["--set", "webhook.failurePolicy=Ignore", "--set", &selector, "--set", &argocd])
        .await;
}

/// Installs the chart as `release` in `ns` with `helm template` options (`--set …`).
pub async fn install_with(client: &Client, release: &str, ns: &str, options: &[&str]) {
    for d in &render(release, ns, options) {
        apply(client, d).await;
    }
}

/// Waits until the webhook process at `address` has written its CA into every webhook of the
/// configuration `name` and answers `/readyz`.
pub async fn webhook_serving(client: &Client, name: &str, address: &str) {
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    let webhooks: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    super::eventually("the webhook's caBundle", std::time::Duration::from_secs(30), || {
        let webhooks = webhooks.clone();
        async move {
            let c = webhooks.get(name).await.map_err(|e| e.to_string())?;
            let set = c.webhooks.unwrap_or_default().iter().all(|w| w.client_config.ca_bundle.is_some());
            if set { Ok(()) } else { Err("no caBundle yet".into()) }
        }
    })
    .await;
    let http = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
    let url = format!("https://{address}/readyz");
    let ready = super::eventually("the webhook to serve", std::time::Duration::from_secs(30), || {
        let (http, url) = (http.clone(), url.clone());
        async move { http.get(&url).send().await.map_err(|e| e.to_string()) }
    })
    .await;
    assert_eq!(ready.status(), 200, "{url}");
}
