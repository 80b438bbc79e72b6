//! Weft under a real Argo CD 3.6 and Kubernetes' own controllers (kube-controller-manager): Argo CD, not
//! the test, syncs real Applications from signed repositories served over HTTP with its repository
//! credentials; Weft's controller and webhook run with the chart's ServiceAccounts and RBAC; and what
//! Argo CD applied, read back from the apiserver, passes `kubectl sigstore verify-resource` against
//! Weft's manifest image.

mod common;

use common::argocd::*;
use serde_json::{Value, json};
use tokio::sync::RwLock;

/// Argo CD's settings (argocd-cm) are shared by every test here: one test changes the tracking method and
/// holds them alone meanwhile.
static ARGOCD_CM: RwLock<()> = RwLock::const_new(());

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
    vouched_and_verifiable_but(stack, name, heads, &[]).await
}

/// As [`vouched_and_verifiable`], but for the objects named in `beyond_kubectl_sigstore`, which
/// kubectl-sigstore may fail to verify (and Weft's webhook does verify): only those may fail its check.
async fn vouched_and_verifiable_but(
    stack: &Stack,
    name: &str,
    heads: &[String],
    beyond_kubectl_sigstore: &[&str],
) -> Value {
    let app = stack.synced(name, heads).await;
    assert_eq!(revisions(&app), heads, "Argo CD synced the heads");
    let ap = stack.vouched(name, heads).await;
    for c in ["SourceVerified", "ImagesVerified", "ManifestsSigned", "ProvenanceRecorded"] {
        assert_eq!(common::condition(&ap, c).map(|c| c["status"].clone()), Some(json!("True")), "{c}: {ap}");
    }
    let image = ap["status"]["manifestImage"].as_str().unwrap().to_string();
    let (code, result, err) = stack.verify_resources(&image);
    let total = result["summary"]["total"].as_u64().unwrap_or(0);
    let invalid: Vec<&str> = result["resources"]
        .as_array()
        .map(|r| {
            r.iter().filter(|r| r["result"]["verified"] != true).filter_map(|r| r["object"]["name"].as_str()).collect()
        })
        .unwrap_or_default();
    assert!(
        (code == 0 || !beyond_kubectl_sigstore.is_empty())
            && total > 0
            && invalid.iter().all(|name| beyond_kubectl_sigstore.contains(name)),
        "{name}: kubectl sigstore verify-resource of what Argo CD applied: {result}\n{err}"
    );
    ap
}

#[tokio::test]
async fn four_kinds_of_application_synced_by_argo_cd_are_vouched_for_and_verify_against_the_cluster() {
    let _settings = ARGOCD_CM.read().await;
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

/// Asks Argo CD to look at the repository now (a hard refresh), instead of at its next resync.
async fn refresh(stack: &Stack, name: &str) {
    let api = common::applications(&stack.client, &stack.ns);
    merge_patch(&api, name, json!({"metadata": {"annotations": {"argocd.argoproj.io/refresh": "hard"}}})).await;
}

/// Writes `file` with `content` in an unsigned commit, pushes it as `served_as`, refreshes Application
/// `app`, and waits for Weft to refuse it; returns the commit and the ApplicationProvenance.
async fn refused_unsigned(
    stack: &Stack,
    repo: &common::git::Repo,
    served_as: &str,
    app: &str,
    (file, content): (&str, String),
) -> (String, Value) {
    repo.write(file, content.as_bytes());
    let unsigned = repo.commit_all("an unsigned change", common::git::Sign::No);
    stack.git.push(repo, served_as);
    refresh(stack, app).await;
    let ap = common::provenance_where(&stack.client, &stack.ns, app, "the unsigned commit refused", |v| {
        v["status"]["sources"][0]["revision"] == unsigned.as_str() && v["status"]["verdict"] == "Failed"
    })
    .await;
    (unsigned, ap)
}

#[tokio::test]
async fn an_unsigned_commit_is_refused_at_apply_with_weft_s_reason_and_a_seal_lets_argo_cd_sync_again() {
    let _settings = ARGOCD_CM.read().await;
    let stack = Stack::new("unsigned", &["app"], Webhook::Fail).await;
    stack.profile(json!({})).await;
    let image = stack.signed_image("cart");
    let dest = stack.destinations[0].clone();
    let repo = stack.repository(
        "shop/cart.git",
        &[
            ("app/deployment.yaml", deployment(&dest, "cart", &image)),
            ("app/config.yaml", config_map(&dest, "cart-config", "EUR")),
        ],
    );
    let source = json!({"repoURL": stack.git.url("shop/cart.git"), "path": "app", "targetRevision": "main"});
    stack.create_application(stack.application("cart", source, &dest)).await;
    vouched_and_verifiable(&stack, "cart", &[repo.head()]).await;

    // An unsigned commit reaches the branch; Argo CD's automated sync picks it up.
    let change = ("app/config.yaml", config_map(&dest, "cart-config", "USD"));
    let (unsigned, ap) = refused_unsigned(&stack, &repo, "shop/cart.git", "cart", change).await;
    let reason = common::condition(&ap, "SourceVerified").unwrap().clone();
    assert_eq!(reason["reason"], "Unsigned", "{reason}");
    assert!(reason["message"].as_str().unwrap().contains(&unsigned[..12]), "names the commit: {reason}");
    // Argo CD tried to apply it and was refused, with Weft's reason in its operation state.
    let apps = common::applications(&stack.client, &stack.ns);
    let denied =
        common::eventually("Argo CD's apply refused by the webhook", std::time::Duration::from_secs(120), || {
            let apps = apps.clone();
            async move {
                let app = serde_json::to_value(apps.get("cart").await.map_err(|e| e.to_string())?).unwrap();
                let op = app["status"]["operationState"].to_string();
                // Until Weft records the new revision the webhook judges by the last one it recorded
                // (the change does not match it); then by the verdict on the new one.
                let refused = op.contains("denied the request") && op.contains("weft:");
                if refused && op.contains("not vouched for") { Ok(op) } else { Err(op) }
            }
        })
        .await;
    assert!(denied.contains("Unsigned") && denied.contains(&unsigned[..12]), "{denied}");
    let live = common::run_cmd(std::process::Command::new("kubectl").args([
        "get",
        "configmap",
        "cart-config",
        "-n",
        &dest,
        "-o",
        "jsonpath={.data.VALUE}",
    ]));
    assert_eq!(live.1, "EUR", "the unsigned change never reached the cluster");

    // A seal commit on top, signed by an allowed key: Argo CD syncs it cleanly.
    let seal = repo.commit(
        "adopt the currency change\n\nWeft-Seal: reviewed in change 42",
        common::git::Sign::Ssh(&stack.project.signer),
    );
    stack.git.push(&repo, "shop/cart.git");
    refresh(&stack, "cart").await;
    vouched_and_verifiable(&stack, "cart", std::slice::from_ref(&seal)).await;
    let live = common::run_cmd(std::process::Command::new("kubectl").args([
        "get",
        "configmap",
        "cart-config",
        "-n",
        &dest,
        "-o",
        "jsonpath={.data.VALUE}",
    ]));
    assert_eq!(live.1, "USD");

    // Audit mode: the same kind of commit is admitted, and what would have been denied is recorded.
    stack.profile(json!({"enforcement": {"mode": "audit"}})).await;
    repo.write("app/config.yaml", config_map(&dest, "cart-config", "GBP").as_bytes());
    let unsigned = repo.commit_all("another unsigned change", common::git::Sign::No);
    stack.git.push(&repo, "shop/cart.git");
    refresh(&stack, "cart").await;
    stack.synced("cart", std::slice::from_ref(&unsigned)).await;
    let ap = common::provenance_where(&stack.client, &stack.ns, "cart", "the audited revision", |v| {
        v["status"]["sources"][0]["revision"] == unsigned.as_str() && v["status"]["verdict"] == "Failed"
    })
    .await;
    assert_eq!(common::condition_reason(&ap, "SourceVerified").as_deref(), Some("Unsigned"));
    let audited = stack.audited();
    assert!(
        audited.iter().any(|(object, message)| object.ends_with("/cart-config") && message.starts_with("weft: ")),
        "the webhook recorded what it would have denied: {audited:?}"
    );
    let events: kube::Api<k8s_openapi::api::events::v1::Event> = kube::Api::namespaced(stack.client.clone(), &stack.ns);
    let listed = events.list(&Default::default()).await.unwrap();
    assert!(
        listed.items.iter().any(|e| e.reason.as_deref() == Some("AdmissionAudited")),
        "an AdmissionAudited Event on the Application"
    );
}

#[tokio::test]
async fn with_the_webhook_enforcing_and_failing_closed_the_clusters_own_work_is_never_denied() {
    let _settings = ARGOCD_CM.read().await;
    // The test's custom resource (cluster-scoped, unknown to any built-in list) is one the webhook protects.
    let extra = r#"webhook.extraProtectedResources=[{"apiGroup": "e2e.weft.example", "resources": ["guards"]}]"#;
    let stack = Stack::with_chart("cluster", &["app"], Webhook::Fail, "annotation", &["--set-json", extra]).await;
    // Replicas belong to the autoscaler (for Weft's webhook and for Argo CD alike).
    stack
        .profile(json!({"enforcement": {"mode": "enforce", "ignoreFields": [
            {"fields": ["spec.replicas"], "objects": [{"kind": "Deployment"}]}]}}))
        .await;
    let image = stack.signed_image("web");
    let dest = stack.destinations[0].clone();
    let statefulset = format!(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: db, namespace: {dest}}}\nspec:\n  serviceName: db\n  replicas: 1\n  selector: {{matchLabels: {{app: db}}}}\n  template:\n    metadata: {{labels: {{app: db}}}}\n    spec:\n      containers: [{{name: db, image: \"{image}\"}}]\n  volumeClaimTemplates:\n  - metadata: {{name: data}}\n    spec:\n      accessModes: [ReadWriteOnce]\n      resources: {{requests: {{storage: 1Gi}}}}\n"
    );
    let job = format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: migrate, namespace: {dest}}}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{{name: migrate, image: \"{image}\"}}]\n"
    );
    let cronjob = format!(
        "apiVersion: batch/v1\nkind: CronJob\nmetadata: {{name: nightly, namespace: {dest}}}\nspec:\n  schedule: \"* * * * *\"\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          containers: [{{name: nightly, image: \"{image}\"}}]\n"
    );
    let doomed = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: doomed, namespace: {dest}, finalizers: [example.com/cleanup]}}\ndata: {{X: \"1\"}}\n"
    );
    // What the apiserver's dry run cannot reproduce as it is: a bare Pod (its token volume's random
    // name), Services with fixed addresses (they collide with the live ones) and a load balancer's
    // health check port, RBAC that grants more than the webhook holds (the escalation check), an
    // aggregated ClusterRole (its rules are the aggregation controller's), and a cluster-scoped custom
    // resource that no built-in list knows.
    let n = dest.bytes().fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
    let (node_port, ip) = (30000 + n % 2000, format!("10.0.{}.{}", 100 + n % 100, 2 + (n / 100) % 250));
    let special = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: solo, namespace: {dest}}}
spec:
  containers: [{{name: solo, image: "{image}"}}]
---
apiVersion: v1
kind: Service
metadata: {{name: fixed, namespace: {dest}}}
spec:
  type: NodePort
  clusterIP: {ip}
  selector: {{app: web}}
  ports: [{{port: 80, nodePort: {node_port}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: balanced, namespace: {dest}}}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {{app: web}}
  ports: [{{port: 80}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: operator, namespace: {dest}}}
rules:
- {{apiGroups: [""], resources: [secrets], verbs: [get, list, watch]}}
- {{apiGroups: [""], resources: [pods/exec], verbs: [create]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: operator, namespace: {dest}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: operator}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: {dest}-view}}
aggregationRule:
  clusterRoleSelectors: [{{matchLabels: {{e2e.weft.example/aggregate-to: {dest}}}}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {dest}-pods
  labels: {{e2e.weft.example/aggregate-to: {dest}}}
rules:
- {{apiGroups: [""], resources: [pods], verbs: [get]}}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: guards.e2e.weft.example}}
spec:
  group: e2e.weft.example
  scope: Cluster
  names: {{kind: Guard, plural: guards, singular: guard}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {{type: object, properties: {{level: {{type: string}}}}}}
---
apiVersion: e2e.weft.example/v1
kind: Guard
metadata:
  name: {dest}
  annotations: {{argocd.argoproj.io/sync-options: SkipDryRunOnMissingResource=true}}
spec: {{level: high}}
"#
    );
    let repo = stack.repository(
        "shop/cluster.git",
        &[
            ("app/special.yaml", special),
            ("app/deployment.yaml", deployment(&dest, "web", &image)),
            ("app/service.yaml", service(&dest, "web")),
            ("app/config.yaml", config_map(&dest, "web-config", "EUR")),
            ("app/statefulset.yaml", statefulset),
            ("app/job.yaml", job),
            ("app/cronjob.yaml", cronjob),
            ("app/doomed.yaml", doomed),
        ],
    );
    // Weft vouches first; then automated sync goes on and Argo CD applies what is vouched for.
    let source = json!({"repoURL": stack.git.url("shop/cluster.git"), "path": "app", "targetRevision": "main"});
    let mut app = stack.application("cluster", source, &dest);
    let automated = app["spec"]["syncPolicy"]["automated"].take();
    app["spec"]["syncPolicy"].as_object_mut().unwrap().remove("automated");
    // As Argo CD's documentation says for an aggregated ClusterRole: its rules are the controller's.
    app["spec"]["ignoreDifferences"] = json!([
        {"group": "apps", "kind": "Deployment", "jsonPointers": ["/spec/replicas"]},
        {"group": "rbac.authorization.k8s.io", "kind": "ClusterRole", "jsonPointers": ["/rules"]}]);
    app["spec"]["syncPolicy"]["syncOptions"] = json!(["CreateNamespace=true", "RespectIgnoreDifferences=true"]);
    stack.create_application(app).await;
    stack.vouched("cluster", &[repo.head()]).await;
    let apps = common::applications(&stack.client, &stack.ns);
    merge_patch(&apps, "cluster", json!({"spec": {"syncPolicy": {"automated": automated}}})).await;
    // kubectl-sigstore's own dry run collides with the fixed node port, draws another name for the bare
    // Pod's token volume, and it takes the aggregated role's rules (the controller's) for a change.
    let aggregated = format!("{dest}-view");
    vouched_and_verifiable_but(&stack, "cluster", &[repo.head()], &["fixed", "solo", &aggregated]).await;

    // Kubernetes' controllers did their work in the covered namespace.
    let kubectl = |args: &[&str]| {
        let (code, out, err) = common::run_cmd(std::process::Command::new("kubectl").args(args));
        assert_eq!(code, 0, "kubectl {args:?}: {err}");
        out
    };
    let count = |kind: &str| {
        let out = kubectl(&["get", kind, "-n", &dest, "-o", "name"]);
        out.lines().count()
    };
    common::eventually(
        "ReplicaSets, Pods, EndpointSlices, ControllerRevisions, PVCs and Jobs",
        std::time::Duration::from_secs(120),
        || {
            let counts: Vec<(&str, usize)> =
                ["replicasets", "pods", "endpointslices", "controllerrevisions", "persistentvolumeclaims", "jobs"]
                    .iter()
                    .map(|k| (*k, count(k)))
                    .collect();
            async move {
                // 2 web + 1 db + 1 migrate (+ cron) Pods; a Job from the CronJob within a minute.
                let ok = counts.iter().all(|(k, n)| match *k {
                    "pods" => *n >= 4,
                    "jobs" => *n >= 2,
                    _ => *n >= 1,
                });
                if ok { Ok(()) } else { Err(format!("{counts:?}")) }
            }
        },
    )
    .await;

    // Each of them was applied and admitted, and the aggregation controller filled the aggregated role.
    let guard = kubectl(&["get", "guard", &dest, "-o", "jsonpath={.metadata.namespace}/{.spec.level}"]);
    assert_eq!(guard, "/high", "the Guard is cluster-scoped, as its CRD says");
    common::eventually("the aggregated ClusterRole's rules", std::time::Duration::from_secs(60), || {
        let rules = kubectl(&["get", "clusterrole", &format!("{dest}-view"), "-o", "jsonpath={.rules[*].resources}"]);
        async move { if rules.contains("pods") { Ok(()) } else { Err(rules) } }
    })
    .await;
    for (kind, name) in [
        ("pod", "solo"),
        ("service", "fixed"),
        ("service", "balanced"),
        ("role", "operator"),
        ("rolebinding", "operator"),
    ] {
        kubectl(&["get", kind, name, "-n", &dest]);
    }
    assert_eq!(kubectl(&["get", "service", "fixed", "-n", &dest, "-o", "jsonpath={.spec.clusterIP}"]), ip);

    // An autoscaler-like writer scales the Deployment through the scale subresource.
    kubectl(&["scale", "deployment/web", "-n", &dest, "--replicas", "3"]);
    common::eventually("three web Pods", std::time::Duration::from_secs(60), || {
        let n = kubectl(&["get", "pods", "-n", &dest, "-l", "app=web", "-o", "name"]).lines().count();
        async move { if n == 3 { Ok(()) } else { Err(format!("{n} Pods")) } }
    })
    .await;

    // selfHeal: an object deleted by hand comes back, applied again by Argo CD.
    kubectl(&["delete", "configmap", "web-config", "-n", &dest]);
    common::eventually("selfHeal to restore web-config", std::time::Duration::from_secs(90), || {
        let (code, _, _) = common::run_cmd(std::process::Command::new("kubectl").args([
            "get",
            "configmap",
            "web-config",
            "-n",
            &dest,
        ]));
        async move { if code == 0 { Ok(()) } else { Err("not yet".into()) } }
    })
    .await;

    // A revision Weft refuses (an unsigned commit): while it stands, the autoscaler still scales and
    // Argo CD still writes status; only what the signed manifests decide waits.
    let change = ("app/config.yaml", config_map(&dest, "web-config", "USD"));
    let (unsigned, _) = refused_unsigned(&stack, &repo, "shop/cluster.git", "cluster", change).await;
    kubectl(&["scale", "deployment/web", "-n", &dest, "--replicas", "2"]);
    let (code, _, err) = common::run_cmd(std::process::Command::new("kubectl").args([
        "label",
        "deployment/web",
        "-n",
        &dest,
        "tampered=yes",
    ]));
    assert_ne!(code, 0, "a change the signed manifests decide is denied during a refused revision");
    assert!(err.contains("not vouched for"), "{err}");
    repo.write("app/config.yaml", config_map(&dest, "web-config", "EUR").as_bytes());
    let restored = repo.commit_all(
        "restore the currency\n\nWeft-Seal: the unsigned change is reverted",
        common::git::Sign::Ssh(&stack.project.signer),
    );
    stack.git.push(&repo, "shop/cluster.git");
    refresh(&stack, "cluster").await;
    stack.vouched("cluster", std::slice::from_ref(&restored)).await;

    // Prune with a finalizer: a signed commit drops `doomed`; Argo CD deletes it; its finalizer's
    // owner (here the test, as a controller would) removes the finalizer, and the object goes.
    std::fs::remove_file(repo.path().join("app/doomed.yaml")).unwrap();
    let pruned = repo.commit_all("drop doomed", common::git::Sign::Ssh(&stack.project.signer));
    stack.git.push(&repo, "shop/cluster.git");
    refresh(&stack, "cluster").await;
    stack.vouched("cluster", std::slice::from_ref(&pruned)).await;
    common::eventually("Argo CD to prune doomed", std::time::Duration::from_secs(120), || {
        let out = common::run_cmd(std::process::Command::new("kubectl").args([
            "get",
            "configmap",
            "doomed",
            "-n",
            &dest,
            "-o",
            "jsonpath={.metadata.deletionTimestamp}",
        ]));
        async move { if !out.1.is_empty() { Ok(()) } else { Err(format!("{out:?}")) } }
    })
    .await;
    kubectl(&[
        "patch",
        "configmap",
        "doomed",
        "-n",
        &dest,
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    stack.synced("cluster", std::slice::from_ref(&pruned)).await;

    // The Application goes (its finalizer makes Argo CD delete what it deployed), then the namespace.
    let apps = common::applications(&stack.client, &stack.ns);
    apps.delete("cluster", &Default::default()).await.unwrap();
    common::eventually("the Application and its resources deleted", std::time::Duration::from_secs(120), || {
        let apps = apps.clone();
        async move {
            if apps.get_opt("cluster").await.map_err(|e| e.to_string())?.is_none() {
                Ok(())
            } else {
                Err("still there".into())
            }
        }
    })
    .await;
    kubectl(&["delete", "namespace", &dest, "--wait=false"]);
    common::eventually("the namespace deleted", std::time::Duration::from_secs(120), || {
        let (code, _, _) = common::run_cmd(std::process::Command::new("kubectl").args(["get", "namespace", &dest]));
        async move { if code != 0 { Ok(()) } else { Err("still there".into()) } }
    })
    .await;

    // Nothing legitimate was denied: the webhook denied nothing but the test's own tampering.
    let denials: Vec<_> = stack.denials().into_iter().filter(|(_, m)| !m.contains(&unsigned[..12])).collect();
    assert!(denials.is_empty(), "denials: {denials:#?}");
    let reviewed = stack.decisions().len();
    assert!(reviewed > 20, "the webhook saw the cluster's writes ({reviewed} reviews)");
}

/// `status.reconciledAt` of an Application: Argo CD rewrites it at every refresh.
async fn reconciled_at(stack: &Stack, name: &str) -> String {
    let app = common::applications(&stack.client, &stack.ns).get(name).await.unwrap();
    serde_json::to_value(app).unwrap()["status"]["reconciledAt"].as_str().unwrap_or_default().to_string()
}

/// Waits for Argo CD's next refresh of `name` (asked for, so the test need not wait a resync period).
async fn next_refresh(stack: &Stack, name: &str) {
    let before = reconciled_at(stack, name).await;
    let api = common::applications(&stack.client, &stack.ns);
    merge_patch(&api, name, json!({"metadata": {"annotations": {"argocd.argoproj.io/refresh": "normal"}}})).await;
    common::eventually("Argo CD to refresh", std::time::Duration::from_secs(90), || {
        let before = before.clone();
        async move {
            let now = reconciled_at(stack, name).await;
            if now != before { Ok(()) } else { Err(now) }
        }
    })
    .await;
}

#[tokio::test]
async fn argo_cds_refreshes_cost_no_pipeline_run_and_a_change_of_what_matters_does() {
    let _settings = ARGOCD_CM.read().await;
    let stack = Stack::new("refresh", &["app"], Webhook::Off).await;
    stack.profile(json!({})).await;
    let image = stack.signed_image("api");
    let dest = stack.destinations[0].clone();
    let repo = stack.repository(
        "shop/api.git",
        &[("app/deployment.yaml", deployment(&dest, "api", &image)), ("app/service.yaml", service(&dest, "api"))],
    );
    let source = json!({"repoURL": stack.git.url("shop/api.git"), "path": "app", "targetRevision": "main"});
    stack.create_application(stack.application("api", source, &dest)).await;
    stack.synced("api", &[repo.head()]).await;
    let recorded = stack.vouched("api", &[repo.head()]).await;
    let runs = || stack.controller_metric("weft_pipeline_runs_total");
    // Argo CD is done with the sync once it has refreshed after it.
    next_refresh(&stack, "api").await;
    let settled = runs().await;
    assert!(settled >= 1.0, "the revision was verified once");

    // Several of Argo CD's refreshes (each rewrites the Application's status): no run, no write.
    let record_version = |v: &Value| v["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_string();
    let provenances = common::provenances(&stack.client, &stack.ns);
    let before = serde_json::to_value(provenances.get("api").await.unwrap()).unwrap();
    for _ in 0..3 {
        next_refresh(&stack, "api").await;
    }
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(runs().await, settled, "refreshes start no pipeline run");
    let after = serde_json::to_value(provenances.get("api").await.unwrap()).unwrap();
    assert_eq!(record_version(&after), record_version(&before), "and no status write: {before:#}\n{after:#}");
    assert_eq!(after["status"]["workUnit"], recorded["status"]["workUnit"]);

    // A new revision runs it.
    repo.write("app/config.yaml", config_map(&dest, "api-config", "1").as_bytes());
    let next = repo.commit_all("configure", common::git::Sign::Ssh(&stack.project.signer));
    stack.git.push(&repo, "shop/api.git");
    refresh(&stack, "api").await;
    stack.vouched("api", std::slice::from_ref(&next)).await;
    let after_revision = runs().await;
    assert!(after_revision > settled, "a new revision is verified");

    // So does a profile change…
    stack.profile(json!({"enforcement": {"mode": "audit"}})).await;
    common::eventually("a run for the changed profile", std::time::Duration::from_secs(60), || async {
        let n = runs().await;
        if n > after_revision { Ok(n) } else { Err(format!("{n} runs")) }
    })
    .await;
    let after_profile = runs().await;

    // …and a change to an object the profile refers to (here its allowed signers), seen at the next event.
    let config_maps = kube::Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(stack.client.clone(), &stack.ns);
    let mut signers = config_maps.get("signers").await.unwrap();
    let data = signers.data.get_or_insert_with(Default::default);
    let line = data.get("allowed_signers").cloned().unwrap_or_default();
    data.insert("allowed_signers".into(), format!("{line}\n# reviewed\n"));
    config_maps.replace("signers", &Default::default(), &signers).await.unwrap();
    next_refresh(&stack, "api").await;
    common::eventually("a run for the changed signers", std::time::Duration::from_secs(60), || async {
        let n = runs().await;
        if n > after_profile { Ok(n) } else { Err(format!("{n} runs")) }
    })
    .await;
}

/// Sets argocd-cm's tracking method, and puts it back to the default on drop.
struct TrackingMethod;

impl TrackingMethod {
    async fn set(stack: &Stack, method: &str) -> TrackingMethod {
        let cms =
            kube::Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(stack.client.clone(), ARGOCD_NAMESPACE);
        let patch = json!({"data": {"application.resourceTrackingMethod": method}});
        cms.patch("argocd-cm", &Default::default(), &kube::api::Patch::Merge(&patch)).await.unwrap();
        // Argo CD watches its settings; give its controller a moment to take the change.
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        TrackingMethod
    }
}

impl Drop for TrackingMethod {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kubectl")
            .args(["patch", "configmap", "argocd-cm", "-n", ARGOCD_NAMESPACE, "--type", "merge"])
            .args(["-p", r#"{"data":{"application.resourceTrackingMethod":"annotation"}}"#])
            .output();
    }
}

#[tokio::test]
async fn with_label_tracking_weft_signs_and_reads_what_argo_cd_applies() {
    let _settings = ARGOCD_CM.write().await;
    for (name, method) in [("label", "label"), ("both", "annotation+label")] {
        let stack = Stack::with_tracking(&format!("tracking-{name}"), &["app"], Webhook::Fail, method).await;
        let _method = TrackingMethod::set(&stack, method).await;
        stack.profile(json!({})).await;
        let image = stack.signed_image("tracked");
        let dest = stack.destinations[0].clone();
        // As Helm charts do: the Application's instance label on the Pod template too, so the Pods the
        // ReplicaSet makes carry it.
        let instance = format!("{}_shop", stack.ns);
        let deployment = deployment(&dest, "shop", &image).replace(
            "    metadata: {labels: {app: shop}}",
            &format!("    metadata: {{labels: {{app: shop, app.kubernetes.io/instance: {instance}}}}}"),
        );
        let repo = stack.repository(
            "shop/tracked.git",
            &[("app/deployment.yaml", deployment), ("app/service.yaml", service(&dest, "shop"))],
        );
        let source = json!({"repoURL": stack.git.url("shop/tracked.git"), "path": "app", "targetRevision": "main"});
        stack.create_application(stack.application("shop", source, &dest)).await;
        vouched_and_verifiable(&stack, "shop", &[repo.head()]).await;
        let (_, live, _) = common::run_cmd(std::process::Command::new("kubectl").args([
            "get",
            "deployment",
            "shop",
            "-n",
            &dest,
            "-o",
            "jsonpath={.metadata.labels.app\\.kubernetes\\.io/instance}",
        ]));
        assert_eq!(live, instance, "{method}: Argo CD labelled what it applied");
        common::eventually("the labelled Pods", std::time::Duration::from_secs(60), || {
            let (_, pods, _) =
                common::run_cmd(std::process::Command::new("kubectl").args(["get", "pods", "-n", &dest, "-o", "name"]));
            async move { if pods.lines().count() >= 2 { Ok(()) } else { Err(pods) } }
        })
        .await;
        let denials = stack.denials();
        let unexpected: Vec<_> = denials.iter().filter(|(_, m)| !m.contains("not vouched for")).collect();
        assert!(unexpected.is_empty(), "{method}: only Argo CD's first applies, before Weft vouched: {denials:#?}");
    }
}

/// A tenant who may write objects in the destination namespace and run pods there, but holds no
/// signing key, tries every way around the webhook on what Argo CD applied from a vouched revision: the
/// tracking metadata, subresources, zero values, added metadata, Pods of the workload. Each is denied
/// with Weft's reason; a Secret's values are never quoted; the control plane's own writes (a Node's
/// heartbeat, a Lease, an Event) never reach the webhook.
#[tokio::test]
async fn a_tenant_without_a_signing_key_cannot_get_around_the_webhook() {
    let _settings = ARGOCD_CM.read().await;
    let stack = Stack::new("tenant", &["app"], Webhook::Fail).await;
    stack.profile(json!({"enforcement": {"mode": "enforce", "untrackedWorkloads": "deny"}})).await;
    let image = stack.signed_image("web");
    let dest = stack.destinations[0].clone();
    let hardened = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: {dest}}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      automountServiceAccountToken: false\n      containers:\n      - name: web\n        image: {image}\n        securityContext: {{allowPrivilegeEscalation: false}}\n"
    );
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: db, namespace: {dest}}}\ndata: {{password: c2lnbmVkLXBhc3N3b3Jk}}\n"
    );
    let repo = stack.repository(
        "shop/tenant.git",
        &[
            ("app/deployment.yaml", hardened),
            ("app/config.yaml", config_map(&dest, "web-config", "EUR")),
            ("app/secret.yaml", secret),
        ],
    );
    let source = json!({"repoURL": stack.git.url("shop/tenant.git"), "path": "app", "targetRevision": "main"});
    stack.create_application(stack.application("tenant", source, &dest)).await;
    vouched_and_verifiable(&stack, "tenant", &[repo.head()]).await;

    let kubectl = |args: &[&str]| common::run_cmd(std::process::Command::new("kubectl").args(args));
    let denied = |args: Vec<String>, why: &str| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = kubectl(&args);
        assert_ne!(code, 0, "{why}: admitted\n{out}");
        assert!(err.contains("weft: "), "{why}: denied by Weft, with its reason: {err}");
        err
    };
    let patch = |kind: &str, name: &str, kind_of_patch: &str, body: Value| {
        ["patch", kind, name, "-n", &dest, "--type", kind_of_patch, "-p", &body.to_string()].map(String::from).to_vec()
    };
    let tracking = |id: Value| json!({"metadata": {"annotations": {"argocd.argoproj.io/tracking-id": id}}, "data": {"VALUE": "USD"}});

    // 1. The tracking metadata: removed, or pointed elsewhere, in the same write as the change.
    denied(patch("configmap", "web-config", "merge", tracking(Value::Null)), "tracking removed");
    let nowhere = format!("nowhere:/ConfigMap:{dest}/web-config");
    denied(patch("configmap", "web-config", "merge", tracking(json!(nowhere))), "an Application that does not exist");
    let elsewhere = format!("kube-system_other:/ConfigMap:{dest}/web-config");
    denied(patch("configmap", "web-config", "merge", tracking(json!(elsewhere))), "another namespace's Application");
    let label = json!({"metadata": {"annotations": {"argocd.argoproj.io/tracking-id": null}, "labels": {"app.kubernetes.io/instance": "other"}}, "data": {"VALUE": "USD"}});
    denied(patch("configmap", "web-config", "merge", label), "the label of an unprotected Application instead");

    // 2. Subresources: scale, ephemeral containers, and a Pod's image.
    let err = denied(["scale", "deployment/web", "-n", &dest, "--replicas", "0"].map(String::from).to_vec(), "scale");
    assert!(err.contains("spec.replicas: signed 1, got 0"), "{err}");

    // 3. Zero values: a signed false removed, a zero added.
    let removal = json!([{"op": "remove", "path": "/spec/template/spec/automountServiceAccountToken"}]);
    let err = denied(patch("deployment", "web", "json", removal), "a signed false removed");
    assert!(err.contains("automountServiceAccountToken: signed false, got (unset)"), "{err}");
    let removal =
        json!([{"op": "remove", "path": "/spec/template/spec/containers/0/securityContext/allowPrivilegeEscalation"}]);
    denied(patch("deployment", "web", "json", removal), "allowPrivilegeEscalation: false removed");
    let root =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "securityContext": {"runAsUser": 0}}]}}}});
    let err = denied(patch("deployment", "web", "strategic", root), "runAsUser: 0 added");
    assert!(err.contains("runAsUser: signed (unset), got 0"), "{err}");

    // 4. Added metadata that changes behaviour.
    let sync_options = json!({"metadata": {"annotations": {"argocd.argoproj.io/sync-options": "Prune=false"}}});
    denied(patch("configmap", "web-config", "merge", sync_options), "an added sync-options annotation");

    // 7. A Secret's values are never quoted back.
    let err = denied(patch("secret", "db", "merge", json!({"data": {"password": "dGVuYW50LXBhc3N3b3Jk"}})), "Secret");
    assert!(err.contains("data.password") && err.contains("withheld"), "{err}");
    assert!(!err.contains("c2lnbmVkLXBhc3N3b3Jk") && !err.contains("dGVuYW50LXBhc3N3b3Jk"), "{err}");

    // The Deployment controller made a Pod; the tenant debugs it, then changes its image.
    let pod = common::eventually("the web Pod", std::time::Duration::from_secs(60), || {
        let (_, out, _) = kubectl(&["get", "pods", "-n", &dest, "-l", "app=web", "-o", "name"]);
        async move { out.lines().next().map(String::from).ok_or_else(|| "no Pod yet".to_string()) }
    })
    .await;
    let debug = ["debug", &pod, "-n", &dest, "--image", &image, "--container", "probe", "--profile", "general"];
    let err = denied(debug.map(String::from).to_vec(), "an ephemeral container");
    assert!(err.contains("ephemeral containers"), "{err}");
    let name = pod.trim_start_matches("pod/");
    let set_image = ["set", "image", &format!("pod/{name}"), "-n", &dest, "web=registry.example/evil:1"];
    let err = denied(set_image.map(String::from).to_vec(), "a Pod's image changed");
    assert!(err.contains("its images are changed"), "{err}");

    // 8. Workloads nobody signed, made by hand in the namespace the Application deploys to, are denied;
    // what Kubernetes' controllers made from the signed Deployment (its ReplicaSet and Pod) was not.
    let err = denied(["run", "rogue", "-n", &dest, "--image", &image].map(String::from).to_vec(), "a hand-made Pod");
    assert!(err.contains("tracked by no Argo CD Application") && err.contains("untrackedWorkloads: deny"), "{err}");
    let job = ["create", "job", "rogue", "-n", &dest, "--image", &image];
    denied(job.map(String::from).to_vec(), "a hand-made Job");
    let (_, replicasets, _) = kubectl(&["get", "replicasets", "-n", &dest, "-o", "name"]);
    assert_eq!(replicasets.lines().count(), 1, "the Deployment's ReplicaSet: {replicasets}");

    // The control plane's own writes never reach the webhook, even for cluster-scoped objects (which
    // no namespace selector excludes).
    let node = format!("weft-e2e-{}", dest.rsplit('-').nth(1).unwrap_or("node"));
    let node_doc = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}});
    common::chart::apply(&stack.client, &node_doc).await;
    let heartbeat = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
        "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    let (code, _, err) =
        kubectl(&["patch", "node", &node, "--subresource", "status", "--type", "merge", "-p", &heartbeat.to_string()]);
    assert_eq!(code, 0, "{err}");
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": node, "namespace": dest},
        "spec": {"holderIdentity": node, "leaseDurationSeconds": 40}});
    common::chart::apply(&stack.client, &lease).await;
    let (code, _, err) = kubectl(&[
        "patch",
        "lease",
        &node,
        "-n",
        &dest,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"leaseDurationSeconds":41}}"#,
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = kubectl(&["delete", "node", &node]);
    assert_eq!(code, 0, "{err}");
    let reached: Vec<String> =
        stack.decisions().into_iter().map(|(object, _, _)| object).filter(|o| o.contains(&node)).collect();
    assert!(reached.is_empty(), "the control plane's writes reached the webhook: {reached:?}");

    // Nothing the tenant tried got through.
    let (_, out, _) = kubectl(&["get", "configmap", "web-config", "-n", &dest, "-o", "jsonpath={.data.VALUE}"]);
    assert_eq!(out, "EUR");
}

/// An app of apps: the parent's revision deploys a child Application, which Argo CD then syncs,
/// writing its `operation` and status (the Application CRD has no status subresource, so those are
/// writes to the child object the parent tracks). While a parent revision is refused, that bookkeeping
/// goes on, and only what the signed manifests decide waits.
#[tokio::test]
async fn argo_cds_bookkeeping_on_a_child_application_goes_on_while_the_parents_revision_is_refused() {
    let _settings = ARGOCD_CM.read().await;
    let stack = Stack::new("apps", &["app"], Webhook::Fail).await;
    stack.profile(json!({})).await;
    let dest = stack.destinations[0].clone();
    // The child lives in the destination namespace (Argo CD watches it) and deploys a ConfigMap there.
    let child_repo =
        stack.repository("shop/child.git", &[("app/config.yaml", config_map(&dest, "child-config", "EUR"))]);
    let child = json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
        "metadata": {"name": "child", "namespace": dest},
        "spec": {"project": "default",
            "source": {"repoURL": stack.git.url("shop/child.git"), "path": "app", "targetRevision": "main"},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": dest},
            "syncPolicy": {"automated": {"prune": true, "selfHeal": true}}}});
    let parent_repo = stack.repository(
        "shop/parent.git",
        &[("apps/child.json", child.to_string()), ("apps/config.yaml", config_map(&dest, "parent-config", "EUR"))],
    );
    let source = json!({"repoURL": stack.git.url("shop/parent.git"), "path": "apps", "targetRevision": "main"});
    stack.create_application(stack.application("parent", source, &dest)).await;
    // (kubectl-sigstore may catch the child mid-sync, with Argo CD's operation on it.)
    vouched_and_verifiable_but(&stack, "parent", &[parent_repo.head()], &["child"]).await;
    let children = common::applications(&stack.client, &dest);
    let synced_child = |revision: String| {
        let children = children.clone();
        async move {
            let app = serde_json::to_value(children.get("child").await.map_err(|e| e.to_string())?).unwrap();
            let s = &app["status"];
            let done = s["sync"]["status"] == "Synced"
                && s["operationState"]["phase"] == "Succeeded"
                && s["sync"]["revision"] == revision.as_str();
            if done { Ok(()) } else { Err(format!("{}", s["operationState"])) }
        }
    };
    common::eventually("the child synced", std::time::Duration::from_secs(180), || synced_child(child_repo.head()))
        .await;

    // The parent's next commit is unsigned: refused.
    let change = ("apps/config.yaml", config_map(&dest, "parent-config", "USD"));
    let (unsigned, _) = refused_unsigned(&stack, &parent_repo, "shop/parent.git", "parent", change).await;

    // Meanwhile the child's own source moves (signed): Argo CD syncs it, writing the child
    // Application's operation and status, which the parent tracks.
    child_repo.write("app/config.yaml", config_map(&dest, "child-config", "GBP").as_bytes());
    let moved = child_repo.commit_all("move", common::git::Sign::Ssh(&stack.project.signer));
    stack.git.push(&child_repo, "shop/child.git");
    let patch = json!({"metadata": {"annotations": {"argocd.argoproj.io/refresh": "hard"}}});
    merge_patch(&children, "child", patch).await;
    common::eventually("the child synced again", std::time::Duration::from_secs(180), || synced_child(moved.clone()))
        .await;

    // Nothing of Argo CD's bookkeeping on the child was denied while the refused revision stood (before
    // Weft first vouched, Argo CD's first applies were, as they should be); what the refused revision
    // changes itself waits.
    let denied: Vec<_> =
        stack.denials().into_iter().filter(|(o, m)| o.contains("Application") && m.contains(&unsigned[..12])).collect();
    assert!(denied.is_empty(), "{denied:#?}");
    let (_, value, _) = common::run_cmd(std::process::Command::new("kubectl").args([
        "get",
        "configmap",
        "parent-config",
        "-n",
        &dest,
        "-o",
        "jsonpath={.data.VALUE}",
    ]));
    assert_eq!(value, "EUR", "the refused revision's change never reached the cluster");
}
