//! The Helm chart: the real helm lints and renders it; the rendered chart applies to the real
//! kube-apiserver; and the controller, running with the chart's ServiceAccount token (not an admin
//! token), does its job with only the chart's RBAC.

mod common;

use std::process::Command;
use std::time::Duration;

use common::chart::*;
use common::git::{Gpg, Repo, Sign};
use common::*;
use kube::Api;
use serde_json::json;

#[test]
fn the_chart_lints_renders_and_ships_the_crds() {
    helm(&["lint", "--strict", CHART, "--kube-version", "1.34.0"]);
    let docs = render("weft", "weft-system", &[]);
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    for kind in ["ServiceAccount", "ClusterRole", "Deployment", "Service", "ValidatingWebhookConfiguration"] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    for d in docs.iter().filter(|d| d["kind"] == "Deployment") {
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{}", d["metadata"]["name"]);
        let c = &pod["containers"][0]["securityContext"];
        assert_eq!(
            (c["allowPrivilegeEscalation"].as_bool(), c["readOnlyRootFilesystem"].as_bool()),
            (Some(false), Some(true))
        );
        assert_eq!(c["capabilities"]["drop"], json!(["ALL"]));
    }
    let vwc = docs.iter().find(|d| d["kind"] == "ValidatingWebhookConfiguration").unwrap();
    let excluded = &vwc["webhooks"][0]["namespaceSelector"]["matchExpressions"][0]["values"];
    assert_eq!(excluded, &json!(["kube-system", "weft-system"]), "never blocks kube-system or Weft's own namespace");
    let shipped = std::fs::read_to_string(format!("{CHART}/crds/weft.crds.yaml")).unwrap();
    assert_eq!(shipped, std::fs::read_to_string("crds/weft.crds.yaml").unwrap(), "the chart's CRDs are crds/");
    let monitored = render("weft", "weft-system", &["--set", "metrics.serviceMonitor.enabled=true"]);
    assert_eq!(monitored.iter().filter(|d| d["kind"] == "ServiceMonitor").count(), 2);
    let policed = render("weft", "weft-system", &["--set", "networkPolicy.enabled=true"]);
    assert!(policed.iter().any(|d| d["kind"] == "NetworkPolicy"));
    let off = render("weft", "weft-system", &["--set", "webhook.enabled=false"]);
    assert!(off.iter().all(|d| d["kind"] != "ValidatingWebhookConfiguration"));
}

#[tokio::test]
async fn the_webhook_works_with_only_the_charts_rbac() {
    let client = client().await;
    let ns = namespace(&client, "chart-webhook").await;
    let release = format!("weft-w{}", ns.rsplit('-').next().unwrap());
    install(&client, &release, &ns).await;
    let dir = tempfile::tempdir().unwrap();
    let path = service_account_kubeconfig(&ns, &format!("{release}-webhook"), dir.path());
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let configuration = format!("{release}-webhook");
    let _webhook = WeftProcess::start_with_env(
        &[
            "webhook",
            "--listen",
            &addr,
            "--cert-host",
            "127.0.0.1",
            "--cert-namespace",
            &ns,
            "--webhook-configuration",
            &configuration,
        ],
        &[("KUBECONFIG", path.to_str().unwrap())],
    );
    // It issued its certificate into its Secret and its CA into its own configuration, and serves.
    webhook_serving(&client, &configuration, &addr).await;

    // Its privileges: dry-run creates of the kinds it protects, reads of what it follows; nothing that
    // would let whoever takes the webhook over act in the cluster (Kubernetes RBAC cannot require the
    // dry run, so the list of creatable kinds is what bounds it).
    let who = format!("system:serviceaccount:{ns}:{release}-webhook");
    let can = |args: &[&str]| {
        let (code, out, err) = run_cmd(Command::new("kubectl").args(["auth", "can-i", "--as", &who]).args(args));
        assert!(code == 0 || out.trim() == "no", "kubectl auth can-i {args:?}: {out}{err}");
        out.trim() == "yes"
    };
    let dangerous: [&[&str]; 16] = [
        &["create", "serviceaccounts", "--subresource=token", "-n", "default"],
        &["create", "pods", "--subresource=exec", "-n", "default"],
        &["create", "pods", "--subresource=attach", "-n", "default"],
        &["create", "pods", "--subresource=eviction", "-n", "default"],
        &["get", "nodes", "--subresource=proxy", "-n", "default"],
        &["create", "nodes", "--subresource=proxy", "-n", "default"],
        &["get", "secrets", "-n", "kube-system"],
        &["list", "secrets", "-n", "default"],
        &["update", "deployments.apps", "-n", "default"],
        &["delete", "pods", "-n", "default"],
        &["create", "certificatesigningrequests.certificates.k8s.io", "-n", "default"],
        &["create", "mutatingwebhookconfigurations.admissionregistration.k8s.io", "-n", "default"],
        &["create", "tokenreviews.authentication.k8s.io", "-n", "default"],
        &["impersonate", "users", "-n", "default"],
        &["escalate", "clusterroles.rbac.authorization.k8s.io", "-n", "default"],
        &["bind", "clusterroles.rbac.authorization.k8s.io", "-n", "default"],
    ];
    for dangerous in dangerous {
        assert!(!can(dangerous), "the webhook's ServiceAccount must not: {}", dangerous.join(" "));
    }
    for needed in [
        ["create", "deployments.apps", "-n", "default"],
        ["create", "configmaps", "-n", "default"],
        ["get", "replicasets.apps", "-n", "default"],
        ["get", "applications.argoproj.io", "-n", "argocd"],
    ] {
        assert!(can(&needed), "the webhook's ServiceAccount needs: {}", needed.join(" "));
    }
}

#[test]
fn the_kustomize_base_is_the_chart_rendered_with_its_defaults() {
    let rendered = helm(&["template", "weft", CHART, "--namespace", "weft-system", "--kube-version", "1.34.0"]);
    let base = std::fs::read_to_string("config/weft.yaml").unwrap();
    let body: String = base.lines().skip_while(|l| l.starts_with('#')).map(|l| format!("{l}\n")).collect();
    assert_eq!(body, rendered, "config/weft.yaml is stale: regenerate it as its header says");
    assert_eq!(
        std::fs::read_to_string("config/crds.yaml").unwrap(),
        std::fs::read_to_string("crds/weft.crds.yaml").unwrap()
    );
    let (code, out, err) = run_cmd(Command::new("kustomize").args(["build", "config"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.matches("kind: CustomResourceDefinition\n").count(), 2, "{out}");
    assert!(out.contains("kind: ValidatingWebhookConfiguration"));
}

#[tokio::test]
async fn the_controller_works_with_only_the_charts_rbac() {
    let client = client().await;
    let ns = namespace(&client, "chart").await;
    let release = format!("weft-{}", ns.rsplit('-').next().unwrap());
    install(&client, &release, &ns).await;

    let dir = tempfile::tempdir().unwrap();
    let path = service_account_kubeconfig(&ns, &format!("{release}-controller"), dir.path());

    let as_sa = |args: &[&str]| run_cmd(Command::new("kubectl").arg("--kubeconfig").arg(&path).args(args));
    let (code, _, err) = as_sa(&["get", "secrets", "-n", "kube-system"]);
    assert_ne!(code, 0, "the chart's ServiceAccount cannot list Secrets outside Argo CD's namespace");
    assert!(err.contains("forbidden"), "{err}");
    let (code, _, err) = as_sa(&["get", "secrets", "-n", &ns, "-l", "argocd.argoproj.io/secret-type"]);
    assert_eq!(code, 0, "but may list Argo CD's repository Secrets in Argo CD's namespace: {err}");

    let gpg = Gpg::new();
    let repo = Repo::new(&gpg);
    repo.write("cm.yaml", b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n");
    let head = repo.commit_all("init", Sign::No);
    let profile = json!({"apiVersion": "weft.dev/v1alpha1", "kind": "IntegrityProfile", "metadata": {"name": "production"},
        "spec": {"applicationSelector": [{"name": "*"}],
            "sourceIntegrity": {"git": {"policies": [{"repos": [{"url": "file:///*"}], "gpg": {"mode": "none"}}]}}}});
    create(&profiles(&client, &ns), profile).await;
    // Argo CD's default project, in what is Argo CD's namespace here; the chart lets Weft read it.
    let project = json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "AppProject", "metadata": {"name": "default"},
        "spec": {"sourceRepos": ["*"], "destinations": [{"server": "*", "namespace": "*"}]}});
    let projects = Api::<kube::api::DynamicObject>::namespaced_with(
        client.clone(),
        &ns,
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("argoproj.io", "v1alpha1", "AppProject"),
            "appprojects",
        ),
    );
    create(&projects, project).await;
    let (code, _, err) = as_sa(&["get", "appprojects.argoproj.io", "default", "-n", &ns]);
    assert_eq!(code, 0, "the chart's ServiceAccount reads Argo CD's AppProjects: {err}");
    let app = json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "metadata": {"name": "shop"},
        "spec": {"project": "default", "destination": {"namespace": "shop"},
            "source": {"repoURL": repo.url(), "path": ".", "targetRevision": "main"}},
        "status": {"sync": {"status": "Synced", "revision": head}}});
    create(&applications(&client, &ns), app).await;
    // Two replicas, as the chart runs them: one leads, the other stands by.
    let cache = dir.path().join("cache");
    let health_addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let replica = |extra: &[&str]| {
        let mut args = vec!["controller", "--namespace", &ns, "--cache-dir", cache.to_str().unwrap()];
        args.extend(["--leader-election-namespace", &ns, "--leader-election-seconds", "4", "--argocd-namespace", &ns]);
        args.extend(extra);
        WeftProcess::start_with_env(&args, &[("KUBECONFIG", path.to_str().unwrap())])
    };
    let mut first = replica(&["--health-listen", &health_addr]);
    eventually("a leader", Duration::from_secs(30), || {
        let logs = first.logs();
        async move { if logs.contains("became leader") { Ok(()) } else { Err(logs) } }
    })
    .await;
    let second = replica(&[]);
    eventually("a standby", Duration::from_secs(30), || {
        let logs = second.logs();
        async move { if logs.contains("another replica leads; waiting") { Ok(()) } else { Err(logs) } }
    })
    .await;
    let probe = reqwest::get(format!("http://{health_addr}/readyz")).await.unwrap();
    assert_eq!(probe.status(), 200);
    let ap = provenance_where(&client, &ns, "shop", "a verdict written with the chart's RBAC", |v| {
        condition(v, "SourceVerified").is_some_and(|c| c["status"] == "True")
    })
    .await;
    assert_eq!(ap["metadata"]["ownerReferences"][0]["name"], "shop");
    let prof = eventually("the profile's status", Duration::from_secs(30), || {
        let api = profiles(&client, &ns);
        async move {
            let p = api.get("production").await.map_err(|e| e.to_string())?;
            let v = serde_json::to_value(&p).unwrap();
            if v["status"]["selectedApplications"] == 1 { Ok(v) } else { Err(v["status"].to_string()) }
        }
    })
    .await;
    assert_eq!(condition_reason(&prof, "Ready").as_deref(), Some("Active"));
    // Exactly one leads: the Lease names the first replica (the identity it logged on becoming leader),
    // the second logged its own identity as waiting, and never became leader.
    let identity_in = |logs: &str, line: &str| -> String {
        let plain = regex::Regex::new("\u{1b}\\[[0-9;]*m").unwrap().replace_all(logs, "").into_owned();
        let found = plain.lines().find(|l| l.contains(line)).unwrap_or_else(|| panic!("no {line:?} in {plain}"));
        let id = found.split("identity=").nth(1).unwrap_or_default();
        id.split_whitespace().next().unwrap_or_default().to_string()
    };
    let leader = identity_in(&first.logs(), "became leader");
    let standby = identity_in(&second.logs(), "another replica leads; waiting");
    let lease: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client.clone(), &ns);
    let holder = lease.get("weft-controller").await.unwrap().spec.unwrap().holder_identity.unwrap_or_default();
    assert!(
        !leader.is_empty() && holder == leader && holder != standby,
        "lease {holder}, leader {leader}, standby {standby}"
    );
    assert!(!second.logs().contains("became leader"), "the standby never led");
    let metrics = reqwest::get(format!("http://{health_addr}/metrics")).await.unwrap().text().await.unwrap();
    for series in [
        "weft_reconciles_total{outcome=\"ok\"}",
        "weft_verdicts_total{verdict=\"Failed\"}",
        "weft_step_duration_seconds_bucket",
    ] {
        assert!(metrics.contains(series), "{series} in {metrics}");
    }
    // The verdict is an Event on the Application too (this profile verifies no images: not vouched for).
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns);
    let listed = events.list(&Default::default()).await.unwrap();
    assert!(
        listed.items.iter().any(|e| e.reason.as_deref() == Some("ImageVerificationNotConfigured")
            && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("shop")),
        "{:?}",
        listed.items.iter().map(|e| e.reason.clone()).collect::<Vec<_>>()
    );

    // The leader stops; the standby takes over and does the work.
    assert_eq!(first.terminate(Duration::from_secs(20)).await, Some(0));
    assert!(first.logs().contains("released the Lease"), "{}", first.logs());
    eventually("the standby to take over", Duration::from_secs(30), || {
        let logs = second.logs();
        async move { if logs.contains("became leader") { Ok(()) } else { Err(logs) } }
    })
    .await;
    let later = json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "metadata": {"name": "blog"},
        "spec": {"project": "default", "destination": {"namespace": "blog"},
            "source": {"repoURL": repo.url(), "path": ".", "targetRevision": "main"}},
        "status": {"sync": {"status": "Synced", "revision": head}}});
    create(&applications(&client, &ns), later).await;
    provenance_where(&client, &ns, "blog", "work done by the new leader", |v| {
        condition(v, "SourceVerified").is_some_and(|c| c["status"] == "True")
    })
    .await;
}
