//! Weft under a real Argo CD 3.6 and Kubernetes' own controllers (kube-controller-manager): Argo CD, not
//! the test, syncs real Applications from signed repositories served over HTTP with its repository
//! credentials; Weft's controller and webhook run with the chart's ServiceAccounts and RBAC; and what
//! Argo CD applied, read back from the apiserver, passes `kubectl sigstore verify-resource` against
//! Weft's manifest image.

mod common;

use common::argocd::*;
use serde_json::{Value, json};

fn deployment(ns: &str, name: &str, image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: {name}}}}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers:\n      - name: {name}\n        image: {image}\n        ports: [{{containerPort: 8080}}]\n"
    )
}

fn service(ns: &str, name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  selector: {{app: {name}}}\n  ports: [{{port: 80, targetPort: 8080}}]\n"
    )
}

fn config_map(ns: &str, name: &str, value: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {ns}}}\ndata: {{VALUE: {value}}}\n")
}

fn revisions(app: &Value) -> Vec<String> {
    match app["status"]["sync"]["revisions"].as_array() {
        Some(list) => list.iter().filter_map(|r| r.as_str().map(String::from)).collect(),
        None => vec![app["status"]["sync"]["revision"].as_str().unwrap_or_default().to_string()],
    }
}

/// Argo CD syncs it; Weft vouches for exactly what Argo CD synced; every object the manifest image
/// signs passes kubectl sigstore verify-resource against the cluster.
async fn vouched_and_verifiable(stack: &Stack, name: &str, heads: &[String]) -> Value {
    let app = stack.synced(name, heads).await;
    assert_eq!(revisions(&app), heads, "Argo CD synced the heads");
    let ap = stack.vouched(name, heads).await;
    for c in ["SourceVerified", "ImagesVerified", "ManifestsSigned", "ProvenanceRecorded"] {
        assert_eq!(common::condition(&ap, c).map(|c| c["status"].clone()), Some(json!("True")), "{c}: {ap}");
    }
    let image = ap["status"]["manifestImage"].as_str().unwrap().to_string();
    let (code, result, err) = stack.verify_resources(&image);
    let total = result["summary"]["total"].as_u64().unwrap_or(0);
    assert!(
        code == 0 && total > 0 && result["summary"]["invalid"] == 0,
        "{name}: kubectl sigstore verify-resource of what Argo CD applied: {result}\n{err}"
    );
    ap
}

#[tokio::test]
async fn four_kinds_of_application_synced_by_argo_cd_are_vouched_for_and_verify_against_the_cluster() {
    let stack = Stack::new("kinds", &["dir", "kust", "helm", "multi"], Webhook::Off).await;
    stack.profile(json!({})).await;
    let image = stack.signed_image("shop");
    let [dir_ns, kust_ns, helm_ns, multi_ns] = [0, 1, 2, 3].map(|i| stack.destinations[i].clone());

    // A plain directory.
    let plain = stack.repository(
        "shop/plain.git",
        &[
            ("app/deployment.yaml", deployment(&dir_ns, "cart", &image)),
            ("app/service.yaml", service(&dir_ns, "cart")),
            ("app/config.yaml", config_map(&dir_ns, "cart-config", "EUR")),
        ],
    );
    let source = json!({"repoURL": stack.git.url("shop/plain.git"), "path": "app", "targetRevision": "main"});
    stack.create_application(stack.application("plain", source, &dir_ns)).await;

    // Kustomize with a remote base, pinned to a commit, from the same server.
    let common = stack.repository(
        "shop/common.git",
        &[
            ("base/kustomization.yaml", "resources: [config.yaml]\n".to_string()),
            (
                "base/config.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: common}\ndata: {TIER: shared}\n".into(),
            ),
        ],
    );
    let base = format!("{}//base?ref={}", stack.git.url("shop/common.git"), common.head());
    let kust = stack.repository(
        "shop/kustomize.git",
        &[
            ("overlay/kustomization.yaml", format!("resources:\n- {base}\n- deployment.yaml\nnamePrefix: prod-\n")),
            ("overlay/deployment.yaml", deployment("", "web", &image).replace("namespace: , ", "")),
        ],
    );
    let source = json!({"repoURL": stack.git.url("shop/kustomize.git"), "path": "overlay", "targetRevision": "main",
                        "kustomize": {"commonLabels": {"tier": "prod"}}});
    stack.create_application(stack.application("kustomized", source, &kust_ns)).await;

    // A Helm chart from git, with a values file and parameters.
    let chart_files = [
        ("chart/Chart.yaml", "apiVersion: v2\nname: shop\nversion: 0.1.0\n".to_string()),
        ("chart/values.yaml", format!("image: {image}\nreplicas: 1\ncurrency: EUR\n")),
        ("chart/values-prod.yaml", "currency: CHF\n".to_string()),
        (
            "chart/templates/app.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-config\n  labels: {app.kubernetes.io/instance: \"{{ .Release.Name }}\"}\ndata:\n  currency: {{ .Values.currency | quote }}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}\n  labels: {app.kubernetes.io/instance: \"{{ .Release.Name }}\"}\nspec:\n  replicas: {{ .Values.replicas }}\n  selector: {matchLabels: {app.kubernetes.io/instance: \"{{ .Release.Name }}\"}}\n  template:\n    metadata: {labels: {app.kubernetes.io/instance: \"{{ .Release.Name }}\"}}\n    spec:\n      containers:\n      - name: app\n        image: {{ .Values.image }}\n".to_string(),
        ),
    ];
    let chart = stack.repository("shop/chart.git", &chart_files);
    let source = json!({"repoURL": stack.git.url("shop/chart.git"), "path": "chart", "targetRevision": "main",
                        "helm": {"valueFiles": ["values-prod.yaml"], "parameters": [{"name": "replicas", "value": "2"}]}});
    stack.create_application(stack.application("charted", source, &helm_ns)).await;

    // Multi-source: the chart, with its values from another repository (`ref: values`).
    let values = stack.repository("shop/values.git", &[("env/prod.yaml", "currency: JPY\n".to_string())]);
    let sources = json!([
        {"repoURL": stack.git.url("shop/chart.git"), "path": "chart", "targetRevision": "main",
         "helm": {"valueFiles": ["$values/env/prod.yaml"]}},
        {"repoURL": stack.git.url("shop/values.git"), "targetRevision": "main", "ref": "values"}
    ]);
    stack.create_application(stack.application("multi", sources, &multi_ns)).await;

    vouched_and_verifiable(&stack, "plain", &[plain.head()]).await;
    let ap = vouched_and_verifiable(&stack, "kustomized", &[kust.head()]).await;
    assert_eq!(ap["status"]["remoteBases"][0]["revision"], common.head().as_str(), "{ap}");
    vouched_and_verifiable(&stack, "charted", &[chart.head()]).await;
    vouched_and_verifiable(&stack, "multi", &[chart.head(), values.head()]).await;
}
