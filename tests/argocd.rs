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
    repo.write("app/config.yaml", config_map(&dest, "cart-config", "USD").as_bytes());
    let unsigned = repo.commit_all("switch currency, unsigned", common::git::Sign::No);
    stack.git.push(&repo, "shop/cart.git");
    refresh(&stack, "cart").await;
    let ap = common::provenance_where(&stack.client, &stack.ns, "cart", "the unsigned commit refused", |v| {
        v["status"]["sources"][0]["revision"] == unsigned.as_str() && v["status"]["verdict"] == "Failed"
    })
    .await;
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
    let stack = Stack::new("cluster", &["app"], Webhook::Fail).await;
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
    let repo = stack.repository(
        "shop/cluster.git",
        &[
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
    app["spec"]["ignoreDifferences"] =
        json!([{"group": "apps", "kind": "Deployment", "jsonPointers": ["/spec/replicas"]}]);
    app["spec"]["syncPolicy"]["syncOptions"] = json!(["CreateNamespace=true", "RespectIgnoreDifferences=true"]);
    stack.create_application(app).await;
    stack.vouched("cluster", &[repo.head()]).await;
    let apps = common::applications(&stack.client, &stack.ns);
    merge_patch(&apps, "cluster", json!({"spec": {"syncPolicy": {"automated": automated}}})).await;
    vouched_and_verifiable(&stack, "cluster", &[repo.head()]).await;

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

    // Nothing legitimate was denied: the webhook denied nothing at all in this run.
    let denials = stack.denials();
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
