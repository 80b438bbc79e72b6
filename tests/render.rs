//! Rendering as Argo CD would, with the real kustomize and helm, from verified trees only: directory
//! options, Kustomize options and remote bases, Helm values, value files and parameters, multi-source
//! `$values`.

mod common;

use common::git::{Repo, Sign};
use common::project::*;
use serde_json::{Value, json};

fn run_layout(p: &Project, app: &std::path::Path) -> (Value, String) {
    let profile = p.profile("unused.example/x", false, json!({}));
    let (code, out, err) = p.run(&profile, app, &["--out", "layout"]);
    assert_eq!(code, 0, "weft run: {out}\n{err}");
    (out, p.layout_blob("layout"))
}

fn files(list: &[(&str, &str)]) -> impl FnOnce(&str) -> Vec<(String, String)> {
    let owned: Vec<(String, String)> = list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    move |_| owned
}

#[test]
fn directory_sources_honour_recurse_include_and_exclude() {
    let p = with_namespace(files(&[
        ("app/a.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n"),
        ("app/skip.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: skip}\n"),
        ("app/nested/b.json", r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}}"#),
        ("app/README.md", "not a manifest"),
    ]));
    let app = p.application(json!({"path": "app", "directory": {"recurse": true, "exclude": "skip*"}}));
    let (_, blob) = run_layout(&p, &app);
    assert!(blob.contains("name: a") && blob.contains("name: b"), "{blob}");
    assert!(!blob.contains("name: skip"), "excluded: {blob}");
    let app = p.application(json!({"path": "app"}));
    let (_, blob) = run_layout(&p, &app);
    assert!(!blob.contains("name: b"), "not recursive by default: {blob}");
}

#[test]
fn kustomize_renders_with_the_applications_options() {
    let p = with_namespace(files(&[
        ("base/kustomization.yaml", "resources: [deployment.yaml]\n"),
        (
            "base/deployment.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: cart}\nspec:\n  selector: {matchLabels: {app: cart}}\n  template:\n    metadata: {labels: {app: cart}}\n    spec:\n      containers: [{name: cart, image: registry.example/shop/cart:1.0}]\n",
        ),
        ("overlay/kustomization.yaml", "resources: [../base]\nnamespace: shop\n"),
    ]));
    let app = p.application(json!({"path": "overlay", "kustomize": {
        "namePrefix": "prod-", "images": ["registry.example/shop/cart=registry.example/shop/cart:2.0"], "commonLabels": {"tier": "prod"}
    }}));
    let (_, blob) = run_layout(&p, &app);
    assert!(blob.contains("name: prod-cart"), "{blob}");
    assert!(blob.contains("image: registry.example/shop/cart:2.0"), "{blob}");
    assert!(blob.contains("tier: prod"), "{blob}");
    assert!(blob.contains("argocd.argoproj.io/tracking-id: shop-cart:apps/Deployment:shop/prod-cart"), "{blob}");
}

#[test]
fn kustomize_remote_bases_are_rendered_from_the_pinned_commit() {
    let remote = Repo::new(&common::git::Gpg::new());
    remote.write("base/kustomization.yaml", b"resources: [cm.yaml]\n");
    remote.write("base/cm.yaml", b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: common}\ndata: {version: one}\n");
    let pinned = remote.commit_all("one", Sign::No);
    remote.write("base/cm.yaml", b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: common}\ndata: {version: two}\n");
    let tip = remote.commit_all("two", Sign::No);
    let url = remote.url();
    let entry = format!("resources:\n- {url}//base?ref={pinned}\n");
    let p = with_namespace(move |_| vec![("kustomization.yaml".to_string(), entry)]);
    // The remote repository has its own policy (unsigned, explicitly).
    let policy = |base: Value| {
        json!({"git": {"policies": [{"repos": [{"url": "file:///*"}, {"url": format!("!{url}")}], "gpg": {"mode": "strict"},
            "ssh": {"allowedSigners": {"configMapRef": {"name": "signers", "key": "allowed_signers"}}}}, base]}})
    };
    let app = p.application(json!({}));
    let profile = p.profile(
        "unused.example/x",
        false,
        json!({"sourceIntegrity": policy(json!({"repos": [{"url": url}], "gpg": {"mode": "none"}}))}),
    );
    let (code, out, err) = p.run(&profile, &app, &["--out", "layout"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(out["remoteBases"][0]["revision"], pinned.as_str(), "{out}");
    let blob = p.layout_blob("layout");
    assert!(blob.contains("version: one") && !blob.contains("version: two"), "{blob}");

    // A base on a branch is whatever the branch holds when Argo CD renders: not pinned, unless the base's
    // policy says that is acceptable.
    let on_branch = format!("resources:\n- {url}//base?ref=main\n");
    let p2 = with_namespace(move |_| vec![("kustomization.yaml".to_string(), on_branch)]);
    let app = p2.application(json!({}));
    let strict_base = json!({"repos": [{"url": url}], "gpg": {"mode": "none"}});
    let profile = p2.profile("unused.example/x", false, json!({"sourceIntegrity": policy(strict_base)}));
    let (code, out, err) = p2.run(&profile, &app, &["--out", "layout"]);
    assert_eq!((code, out["steps"][0]["reason"].as_str()), (1, Some("RemoteBaseNotPinned")), "{out}\n{err}");
    assert!(out["steps"][0]["message"].as_str().unwrap().contains("ref=main"), "{out}");
    let lenient = json!({"repos": [{"url": url}], "gpg": {"mode": "none"}, "allowUnpinnedBases": true});
    let profile = p2.profile("unused.example/x", false, json!({"sourceIntegrity": policy(lenient)}));
    let (code, out, err) = p2.run(&profile, &app, &["--out", "layout"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(out["remoteBases"][0]["revision"], tip.as_str(), "{out}");
}

#[test]
fn a_kustomize_remote_base_no_policy_matches_is_not_vouched_for() {
    let remote = Repo::new(&common::git::Gpg::new());
    remote.write("base/kustomization.yaml", b"resources: [cm.yaml]\n");
    remote.write("base/cm.yaml", b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: common}\n");
    let pinned = remote.commit_all("one", Sign::No);
    let url = remote.url();
    let entry = format!("resources:\n- {url}//base?ref={pinned}\n");
    let p = with_namespace(move |_| vec![("kustomization.yaml".to_string(), entry)]);
    // The policy covers the Application's repository but excludes the base's: nothing vouches for it.
    let policy = json!({"git": {"policies": [{"repos": [{"url": "file:///*"}, {"url": format!("!{url}")}], "gpg": {"mode": "strict"},
        "ssh": {"allowedSigners": {"configMapRef": {"name": "signers", "key": "allowed_signers"}}}}]}});
    let app = p.application(json!({}));
    let profile = p.profile("unused.example/x", false, json!({"sourceIntegrity": policy}));
    let (code, out, err) = p.run(&profile, &app, &["--out", "layout"]);
    assert_eq!((code, out["steps"][0]["reason"].as_str()), (1, Some("NoSourcePolicy")), "{out}\n{err}");
    assert!(out["steps"][0]["message"].as_str().unwrap().contains("remote base"), "{out}");
    assert!(!p.path("layout").exists(), "nothing was signed");
}

#[test]
fn helm_renders_with_values_files_parameters_and_a_values_source() {
    let values_repo = Repo::new(&common::git::Gpg::new());
    values_repo.write("env/prod.yaml", b"currency: CHF\n");
    // The values repository is signed like the chart's (the profile's policy covers every file:// URL).
    let p = with_namespace(files(&[
        ("chart/Chart.yaml", "apiVersion: v2\nname: shop\nversion: 0.1.0\n"),
        ("chart/values.yaml", "currency: EUR\nreplicas: 1\nteam: none\n"),
        (
            "chart/templates/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-config\n  namespace: {{ .Release.Namespace }}\ndata:\n  currency: {{ .Values.currency | quote }}\n  replicas: {{ .Values.replicas | quote }}\n  team: {{ .Values.team | quote }}\n",
        ),
    ]));
    values_repo.commit_all("values", Sign::Ssh(&p.signer));
    let app = json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "metadata": {"name": "shop-cart", "namespace": "argocd"},
        "spec": {"project": "default", "destination": {"namespace": "shop"}, "sources": [
            {"repoURL": p.repo.url(), "path": "chart", "targetRevision": "main",
             "helm": {"releaseName": "cart", "valueFiles": ["$values/env/prod.yaml"], "parameters": [{"name": "replicas", "value": "3"}],
                      "valuesObject": {"team": "checkout"}}},
            {"repoURL": values_repo.url(), "targetRevision": "main", "ref": "values"}
        ]},
        "status": {"sync": {"status": "Synced", "revisions": [p.repo.head(), values_repo.head()]}}
    });
    let app = p.write_application(&app);
    let (out, blob) = run_layout(&p, &app);
    assert!(blob.contains("name: cart-config") && blob.contains("namespace: shop"), "{blob}");
    assert!(blob.contains("currency: CHF"), "the $values file applies: {blob}");
    assert!(blob.contains("replicas: \"3\""), "parameters apply: {blob}");
    assert!(blob.contains("team: checkout"), "valuesObject applies: {blob}");
    assert_eq!(out["steps"][0]["state"], "Passed", "both sources are verified: {out}");
}

#[test]
fn a_symlink_that_leaves_the_repository_is_not_followed() {
    let p = with_namespace(files(&[("app/a.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")]));
    std::os::unix::fs::symlink("/etc/hostname", p.repo.path().join("app/leak.yaml")).unwrap();
    p.repo.commit_all("add a link", Sign::Ssh(&p.signer));
    let app = p.application(json!({"path": "app"}));
    let (_, blob) = run_layout(&p, &app);
    assert!(blob.contains("name: a"));
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    assert!(host.trim().is_empty() || !blob.contains(host.trim()), "nothing from outside the tree: {blob}");
}
