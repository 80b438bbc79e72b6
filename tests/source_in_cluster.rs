//! Source verification as the controller records it: real signed repositories, keys in ConfigMaps in
//! the real apiserver, Applications with the status Argo CD writes; and the CLI gives the same verdicts.

mod common;

use std::process::Command;
use std::time::Duration;

use common::git::{GitHttpServer, Gpg, GpgKey, Repo, Sign};
use common::*;
use kube::Client;
use serde_json::{Value, json};

fn profile(allowed: &[&GpgKey], mode: &str) -> Value {
    let keys: Vec<&str> = allowed.iter().map(|k| k.fingerprint.as_str()).collect();
    json!({
        "apiVersion": "weft.dev/v1alpha1", "kind": "IntegrityProfile", "metadata": {"name": "production"},
        "spec": {"applicationSelector": [{"name": "*"}],
                 "sourceIntegrity": {"git": {"policies": [{"repos": [{"url": "file:///*"}],
                     "gpg": {"mode": mode, "keys": keys, "keyring": {"configMapRef": {"name": "team-keys"}}}}]}}}
    })
}

fn keyring(gpg: &Gpg, keys: &[&GpgKey]) -> Value {
    let data: serde_json::Map<String, Value> =
        keys.iter().map(|k| (k.fingerprint.clone(), json!(gpg.export(k)))).collect();
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "team-keys"}, "data": data})
}

fn application(name: &str, url: &str, rev: &str) -> Value {
    let source = json!({"repoURL": url, "path": ".", "targetRevision": "main"});
    json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "metadata": {"name": name},
        "spec": {"project": "default", "destination": {"server": "https://kubernetes.default.svc", "namespace": "shop"}, "source": source},
        "status": {"sync": {"status": "OutOfSync", "revision": rev, "comparedTo": {"source": source, "destination": {"server": "https://kubernetes.default.svc"}}}}
    })
}

async fn config_maps(client: &Client, ns: &str) -> kube::Api<kube::api::DynamicObject> {
    kube::Api::namespaced_with(
        client.clone(),
        ns,
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("", "v1", "ConfigMap"),
            "configmaps",
        ),
    )
}

async fn setup(prefix: &str) -> (Client, String, WeftProcess) {
    let client = client().await;
    let ns = namespace(&client, prefix).await;
    let cache = tempfile::tempdir().unwrap().keep();
    let weft = WeftProcess::start(&[
        "controller",
        "--namespace",
        &ns,
        "--resync-seconds",
        "3",
        "--cache-dir",
        cache.to_str().unwrap(),
    ]);
    (client, ns, weft)
}

fn source_condition(ap: &Value) -> (String, String, String) {
    let c = condition(ap, "SourceVerified").cloned().unwrap_or(Value::Null);
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    (s("status"), s("reason"), s("message"))
}

#[tokio::test]
async fn strict_verification_is_recorded_with_signer_and_the_cli_agrees() {
    let (client, ns, _weft) = setup("src-strict").await;
    let gpg = Gpg::new();
    let alice = gpg.key("Alice");
    let repo = Repo::new(&gpg);
    for i in 0..3 {
        repo.commit(&format!("c{i}"), Sign::Gpg(&alice));
    }
    let good = repo.head();
    create(&config_maps(&client, &ns).await, keyring(&gpg, &[&alice])).await;
    create(&profiles(&client, &ns), profile(&[&alice], "strict")).await;
    create(&applications(&client, &ns), application("signed", &repo.url(), &good)).await;

    let ap =
        provenance_where(&client, &ns, "signed", "source verified", |v| condition(v, "SourceVerified").is_some()).await;
    let (status, reason, message) = source_condition(&ap);
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Verified"), "{message}");
    assert!(
        message.contains(&alice.fingerprint) && message.contains("strict: every commit back to the root is signed"),
        "{message}"
    );
    assert_eq!(ap["status"]["verifiedSources"][0]["revision"], good.as_str());
    assert_eq!(
        condition_reason(&ap, "Ready").as_deref(),
        Some("ImageVerificationNotConfigured"),
        "this profile verifies no images and signs nothing: nothing is vouched for"
    );

    // An unsigned commit lands; Argo CD syncs it.
    repo.commit("unsigned hotfix", Sign::No);
    let bad = repo.commit("signed on top", Sign::Gpg(&alice));
    update(&applications(&client, &ns), "signed", |v| v["status"]["sync"]["revision"] = json!(bad)).await;
    let ap = provenance_where(&client, &ns, "signed", "the unsigned commit found", |v| {
        v["status"]["sources"][0]["revision"] == bad.as_str()
            && condition(v, "SourceVerified").is_some_and(|c| c["status"] == "False")
    })
    .await;
    let (_, reason, message) = source_condition(&ap);
    assert_eq!(reason, "Unsigned");
    assert!(message.contains("unsigned hotfix"), "{message}");
    assert_eq!(ap["status"]["verdict"], "Failed");
    assert_eq!(condition_reason(&ap, "Ready").as_deref(), Some("Unsigned"));
    assert_eq!(ap["status"]["verifiedSources"][0]["revision"], good.as_str(), "the last verified revision stays");

    // The same verdicts from the command line, with the same objects given as a file.
    let dir = tempfile::tempdir().unwrap();
    let mut p = profile(&[&alice], "strict");
    p["metadata"]["namespace"] = json!(ns);
    std::fs::write(dir.path().join("profile.yaml"), p.to_string()).unwrap();
    std::fs::write(dir.path().join("resources.yaml"), keyring(&gpg, &[&alice]).to_string()).unwrap();
    for (rev, code, reason) in [(&good, 0, "Verified"), (&bad, 1, "Unsigned")] {
        let out = Command::new(env!("CARGO_BIN_EXE_weft"))
            .current_dir(dir.path())
            .args(["verify-source", "--profile", "profile.yaml", "--resources", "resources.yaml", "--output", "json"])
            .args(["--repo", &repo.url(), "--revision", rev, "--cache-dir", "cache"])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        assert_eq!((out.status.code(), v["reason"].as_str()), (Some(code), Some(reason)));
    }
}

#[tokio::test]
async fn a_sync_back_to_an_older_signed_commit_is_a_downgrade() {
    let (client, ns, _weft) = setup("src-downgrade").await;
    let gpg = Gpg::new();
    let alice = gpg.key("Alice");
    let repo = Repo::new(&gpg);
    let old = repo.commit("v1", Sign::Gpg(&alice));
    let new = repo.commit("v2", Sign::Gpg(&alice));
    create(&config_maps(&client, &ns).await, keyring(&gpg, &[&alice])).await;
    create(&profiles(&client, &ns), profile(&[&alice], "head")).await;
    create(&applications(&client, &ns), application("app", &repo.url(), &new)).await;
    provenance_where(&client, &ns, "app", "v2 verified", |v| {
        v["status"]["verifiedSources"][0]["revision"] == new.as_str()
    })
    .await;

    // Someone syncs the older (signed) revision.
    update(&applications(&client, &ns), "app", |v| {
        v["operation"] = json!({"sync": {"revision": old}, "initiatedBy": {"username": "admin"}})
    })
    .await;
    let ap = provenance_where(&client, &ns, "app", "the downgrade refused", |v| {
        condition(v, "SourceVerified").is_some_and(|c| c["reason"] == "Downgrade")
    })
    .await;
    assert_eq!(ap["status"]["revisionOrigin"], "Operation");
    assert!(source_condition(&ap).2.contains("does not descend from"), "{}", source_condition(&ap).2);
    assert_eq!(ap["status"]["verifiedSources"][0]["revision"], new.as_str());
}

#[tokio::test]
async fn an_unreachable_repository_is_pending_and_retried_until_it_verifies() {
    let (client, ns, weft) = setup("src-unreachable").await;
    let gpg = Gpg::new();
    let alice = gpg.key("Alice");
    let repo = Repo::new(&gpg);
    let rev = repo.commit("c1", Sign::Gpg(&alice));
    let later = tempfile::tempdir().unwrap();
    let missing = later.path().join("mirror.git");
    let url = format!("file://{}", missing.display());
    create(&config_maps(&client, &ns).await, keyring(&gpg, &[&alice])).await;
    create(&profiles(&client, &ns), profile(&[&alice], "strict")).await;
    create(&applications(&client, &ns), application("app", &url, &rev)).await;

    let ap = provenance_where(&client, &ns, "app", "pending", |v| v["status"]["verdict"] == "Pending").await;
    let (status, reason, message) = source_condition(&ap);
    assert_eq!((status.as_str(), reason.as_str()), ("Unknown", "RepositoryUnreachable"), "{message}");
    assert!(message.contains("retrying"), "{message}");
    assert!(ap["status"].get("verifiedSources").is_none(), "nothing recorded as verified");

    // The repository appears, whole (cloned beside it, then renamed into place: a fetch in the middle of
    // a clone would find a repository without the commit yet); the retries pick it up.
    let staging = later.path().join("staging.git");
    let out = Command::new("git").args(["clone", "-q", "--bare"]).arg(repo.path()).arg(&staging).output().unwrap();
    assert!(out.status.success());
    std::fs::rename(&staging, &missing).unwrap();
    let ap = eventually("verification after the repository appears", Duration::from_secs(60), || {
        let api = provenances(&client, &ns);
        async move {
            let v = serde_json::to_value(api.get("app").await.map_err(|e| e.to_string())?).unwrap();
            if condition(&v, "SourceVerified").is_some_and(|c| c["status"] == "True") {
                Ok(v)
            } else {
                Err(v["status"].to_string())
            }
        }
    })
    .await;
    assert_eq!(ap["status"]["verifiedSources"][0]["revision"], rev.as_str());
    assert!(weft.logs().contains("a step is pending; retrying"));
}

#[tokio::test]
async fn a_missing_keyring_is_a_configuration_error_until_it_is_created() {
    let (client, ns, _weft) = setup("src-config").await;
    let gpg = Gpg::new();
    let alice = gpg.key("Alice");
    let repo = Repo::new(&gpg);
    let rev = repo.commit("c1", Sign::Gpg(&alice));
    create(&profiles(&client, &ns), profile(&[&alice], "head")).await;
    create(&applications(&client, &ns), application("app", &repo.url(), &rev)).await;
    let ap =
        provenance_where(&client, &ns, "app", "a configuration error", |v| condition(v, "SourceVerified").is_some())
            .await;
    let (status, reason, message) = source_condition(&ap);
    assert_eq!((status.as_str(), reason.as_str()), ("False", "ReferencedObjectMissing"));
    assert!(message.contains("ConfigMap team-keys"), "{message}");

    create(&config_maps(&client, &ns).await, keyring(&gpg, &[&alice])).await;
    provenance_where(&client, &ns, "app", "verified once the keyring exists", |v| {
        condition(v, "SourceVerified").is_some_and(|c| c["status"] == "True")
    })
    .await;
}

fn multi_source_application(name: &str, sources: &[(&str, &str, Option<&str>)]) -> Value {
    let specs: Vec<Value> = sources
        .iter()
        .map(|(url, _, r)| match r {
            Some(r) => json!({"repoURL": url, "ref": r, "targetRevision": "main"}),
            None => json!({"repoURL": url, "path": ".", "targetRevision": "main"}),
        })
        .collect();
    let revisions: Vec<&str> = sources.iter().map(|(_, rev, _)| *rev).collect();
    json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Application", "metadata": {"name": name},
        "spec": {"project": "default", "destination": {"server": "https://kubernetes.default.svc", "namespace": "shop"}, "sources": specs},
        "status": {"sync": {"status": "Synced", "revisions": revisions, "comparedTo": {"sources": specs, "destination": {"server": "https://kubernetes.default.svc"}}}}
    })
}

#[tokio::test]
async fn every_git_source_and_kustomize_remote_base_is_verified_under_its_own_policy() {
    let (client, ns, _weft) = setup("src-multi").await;
    let gpg = Gpg::new();
    let alice = gpg.key("Alice");

    let common = Repo::new(&gpg);
    common.write("base/kustomization.yaml", b"resources: [cm.yaml]\n");
    common.write("base/cm.yaml", b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: common}\n");
    let common_rev = common.commit_all("common base", Sign::Gpg(&alice));
    let vendor = Repo::new(&gpg);
    vendor.write("x/kustomization.yaml", b"resources: []\n");
    let vendor_rev = vendor.commit_all("vendor, unsigned, on a branch", Sign::No);

    let app = Repo::new(&gpg);
    app.write(
        "kustomization.yaml",
        format!("resources:\n- local\n- file://{}//base?ref={common_rev}\n", common.path().display()).as_bytes(),
    );
    app.write(
        "local/kustomization.yaml",
        format!("resources:\n- file://{}//x?ref=main\n", vendor.path().display()).as_bytes(),
    );
    let app_rev = app.commit_all("app", Sign::Gpg(&alice));
    let values_signed = Repo::new(&gpg);
    let values_rev = values_signed.commit("values", Sign::Gpg(&alice));
    let values_unsigned = Repo::new(&gpg);
    let unsigned_rev = values_unsigned.commit("values, unsigned", Sign::No);

    let keys: Vec<&str> = vec![alice.fingerprint.as_str()];
    let vendor_url = format!("file://{}", vendor.path().display());
    let policy = json!({"repos": [{"url": "file:///*"}, {"url": format!("!{vendor_url}")}],
                        "gpg": {"mode": "strict", "keys": keys, "keyring": {"configMapRef": {"name": "team-keys"}}}});
    // The vendor's base: unsigned and on a branch, both accepted explicitly by its own policy.
    let vendor_policy = json!({"repos": [{"url": vendor_url}], "gpg": {"mode": "none"}, "allowUnpinnedBases": true});
    let mut p = profile(&[&alice], "strict");
    p["spec"]["sourceIntegrity"]["git"]["policies"] = json!([policy, vendor_policy]);
    create(&config_maps(&client, &ns).await, keyring(&gpg, &[&alice])).await;
    create(&profiles(&client, &ns), p).await;

    let apps = applications(&client, &ns);
    create(
        &apps,
        multi_source_application(
            "bad-values",
            &[(&app.url(), &app_rev, None), (&values_unsigned.url(), &unsigned_rev, Some("values"))],
        ),
    )
    .await;
    create(
        &apps,
        multi_source_application(
            "good",
            &[(&app.url(), &app_rev, None), (&values_signed.url(), &values_rev, Some("values"))],
        ),
    )
    .await;

    let bad = provenance_where(&client, &ns, "bad-values", "the unsigned values source", |v| {
        condition(v, "SourceVerified").is_some()
    })
    .await;
    let (status, reason, message) = source_condition(&bad);
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Unsigned"), "{message}");
    assert!(message.starts_with(&values_unsigned.url()), "the failing source is named first: {message}");

    let good =
        provenance_where(&client, &ns, "good", "every source verified", |v| condition(v, "SourceVerified").is_some())
            .await;
    let (status, reason, message) = source_condition(&good);
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Verified"), "{message}");
    assert!(
        message.contains("remote bases:") && message.contains("unpinned (allowUnpinnedBases), verified"),
        "{message}"
    );
    let bases = good["status"]["remoteBases"].as_array().expect("remote bases recorded");
    let pinned: Vec<(&str, &str)> =
        bases.iter().map(|b| (b["repoURL"].as_str().unwrap(), b["revision"].as_str().unwrap())).collect();
    assert!(
        pinned.contains(&(format!("file://{}", common.path().display()).as_str(), common_rev.as_str())),
        "{pinned:?}"
    );
    assert!(
        pinned.contains(&(vendor_url.as_str(), vendor_rev.as_str())),
        "the branch ref is pinned to its commit: {pinned:?}"
    );
    assert_eq!(good["status"]["verifiedSources"].as_array().map(Vec::len), Some(2));
}

/// The objects of Argo CD's namespace for the project test: the AppProjects and a repository Secret.
fn app_project(name: &str, source_repos: &[&str], source_namespaces: &[&str]) -> Value {
    json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "AppProject", "metadata": {"name": name},
           "spec": {"sourceRepos": source_repos, "sourceNamespaces": source_namespaces,
                    "destinations": [{"server": "*", "namespace": "*"}]}})
}

fn dynamic(client: &Client, ns: &str, group: &str, kind: &str, plural: &str) -> kube::Api<kube::api::DynamicObject> {
    kube::Api::namespaced_with(
        client.clone(),
        ns,
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk(group, "v1alpha1", kind),
            plural,
        ),
    )
}

#[tokio::test]
async fn argo_cds_credentials_serve_only_what_the_applications_project_permits() {
    let client = client().await;
    let ns = namespace(&client, "src-project").await;
    // Argo CD's own namespace for this test: its AppProjects and repository Secrets.
    let argocd = namespace(&client, "src-project-argocd").await;
    let cache = tempfile::tempdir().unwrap();
    let _weft = WeftProcess::start(&[
        "controller",
        "--namespace",
        &ns,
        "--argocd-namespace",
        &argocd,
        "--resync-seconds",
        "2",
        "--cache-dir",
        cache.path().to_str().unwrap(),
    ]);
    let gpg = Gpg::new();
    let alice = gpg.key("Alice");
    let repo = Repo::new(&gpg);
    let rev = repo.commit("c1", Sign::Gpg(&alice));
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("requests.log");
    let server =
        GitHttpServer::start(&repo, "team/private.git", "deploy", "s3cret", &[("GIT_HTTP_LOG", log.to_str().unwrap())]);
    let url = format!("http://127.0.0.1:{}/team/private.git", server.port);
    let requests = || std::fs::read_to_string(&log).unwrap_or_default();

    let projects = dynamic(&client, &argocd, "argoproj.io", "AppProject", "appprojects");
    create(&projects, app_project("team-a", &["https://git.example.com/*"], &[&ns])).await;
    create(&projects, app_project("closed", &["*"], &[])).await;
    let secret = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "private", "labels": {"argocd.argoproj.io/secret-type": "repository"}},
        "stringData": {"url": url, "username": "deploy", "password": "s3cret", "project": "team-b"}});
    apply_documents(&client, &argocd, &secret.to_string()).await;
    let mut p = profile(&[&alice], "strict");
    p["spec"]["sourceIntegrity"]["git"]["policies"][0]["repos"] = json!([{"url": "http://127.0.0.1:*/**"}]);
    create(&config_maps(&client, &ns).await, keyring(&gpg, &[&alice])).await;
    create(&profiles(&client, &ns), p).await;
    let apps = applications(&client, &ns);
    let mut app = application("private", &url, &rev);
    app["spec"]["project"] = json!("team-a");
    create(&apps, app.clone()).await;
    for (name, project) in [("no-project", "nope"), ("closed-namespace", "closed")] {
        let mut other = application(name, &url, &rev);
        other["spec"]["project"] = json!(project);
        create(&apps, other).await;
    }
    let reason_of = |name: &'static str, reason: &'static str| {
        let client = client.clone();
        let ns = ns.clone();
        async move {
            provenance_where(&client, &ns, name, reason, |v| {
                condition(v, "SourceVerified").is_some_and(|c| c["reason"] == reason)
            })
            .await
        }
    };

    // The project does not permit the repository: nothing is fetched at all.
    let ap = reason_of("private", "RepositoryNotPermitted").await;
    assert!(source_condition(&ap).2.contains("AppProject team-a does not permit"), "{}", source_condition(&ap).2);
    reason_of("no-project", "ProjectNotFound").await;
    reason_of("closed-namespace", "ApplicationNamespaceNotPermitted").await;
    assert_eq!(requests(), "", "no request reached the repository");

    // Permitted now, but the repository Secret belongs to another project: fetched without its password,
    // which the server refuses. A refusal is a verdict, not a wait.
    update(&projects, "team-a", |v| v["spec"]["sourceRepos"] = json!([url])).await;
    let ap = reason_of("private", "RepositoryAccessDenied").await;
    assert_eq!(ap["status"]["verdict"], "Failed", "{}", ap["status"]);
    assert!(!requests().is_empty(), "the repository was asked");
    assert!(!requests().contains("Basic ZGVwbG95OnMzY3JldA=="), "the password went out: {}", requests());
    assert!(ap["status"].get("verifiedSources").is_none());

    // The Secret is the project's own: verified.
    let secrets = kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &argocd);
    let patch = json!({"stringData": {"project": "team-a"}});
    secrets.patch("private", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await.unwrap();
    let ap = provenance_where(&client, &ns, "private", "verified with the project's credentials", |v| {
        condition(v, "SourceVerified").is_some_and(|c| c["status"] == "True")
    })
    .await;
    assert_eq!(ap["status"]["verifiedSources"][0]["revision"], rev.as_str());
}

#[tokio::test]
async fn a_kustomize_base_outside_the_projects_source_repos_is_verified_without_credentials() {
    let client = client().await;
    let ns = namespace(&client, "src-project-base").await;
    let cache = tempfile::tempdir().unwrap();
    // Argo CD's namespace is this one here, so the AppProject lives beside the Application.
    let _weft = WeftProcess::start(&[
        "controller",
        "--namespace",
        &ns,
        "--argocd-namespace",
        &ns,
        "--resync-seconds",
        "2",
        "--cache-dir",
        cache.path().to_str().unwrap(),
    ]);
    let gpg = Gpg::new();
    let alice = gpg.key("Alice");
    let base = Repo::new(&gpg);
    base.write("base/kustomization.yaml", b"resources: [cm.yaml]\n");
    base.write("base/cm.yaml", b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: common}\n");
    let base_rev = base.commit_all("base", Sign::Gpg(&alice));
    let app = Repo::new(&gpg);
    app.write("kustomization.yaml", format!("resources:\n- {}//base?ref={base_rev}\n", base.url()).as_bytes());
    let rev = app.commit_all("app", Sign::Gpg(&alice));
    // The project permits the Application's repository only; Argo CD does not hold bases to it.
    let projects = dynamic(&client, &ns, "argoproj.io", "AppProject", "appprojects");
    create(&projects, app_project("default", &[&app.url()], &[])).await;
    let mut p = profile(&[&alice], "strict");
    p["spec"]["sourceIntegrity"]["git"]["policies"][0]["repos"] = json!([{"url": "file:///*"}]);
    create(&config_maps(&client, &ns).await, keyring(&gpg, &[&alice])).await;
    create(&profiles(&client, &ns), p).await;
    create(&applications(&client, &ns), application("app", &app.url(), &rev)).await;
    let ap = provenance_where(&client, &ns, "app", "the source and its base verified", |v| {
        condition(v, "SourceVerified").is_some()
    })
    .await;
    let (status, reason, message) = source_condition(&ap);
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Verified"), "{message}");
    assert_eq!(ap["status"]["remoteBases"][0]["revision"], base_rev.as_str());
}

/// A recorded revision is checked again on a timer against the keys as they are now: when its
/// signature expires, the verdict says so, and only signatures were checked (no pipeline run).
/// Argo CD-style status writes in the meantime wake nothing.
#[tokio::test]
async fn a_recorded_revision_is_checked_again_and_an_expired_signature_fails_it_without_a_render() {
    let client = client().await;
    let ns = namespace(&client, "src-reverify").await;
    let cache = tempfile::tempdir().unwrap();
    let metrics = common::argocd::free_address();
    let _weft = WeftProcess::start(&[
        "controller",
        "--namespace",
        &ns,
        "--reverify-seconds",
        "2",
        "--cache-dir",
        cache.path().to_str().unwrap(),
        "--health-listen",
        &metrics,
    ]);
    let gpg = Gpg::new();
    let alice = gpg.key("Alice");
    // A signature that expires 25 seconds after it is made (gpg --default-sig-expire).
    let made = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let short_lived = gpg.program_at(made, "seconds=25");
    let repo = Repo::new(&gpg);
    let rev = repo.commit("c1", Sign::GpgVia(&alice, &short_lived));
    create(&config_maps(&client, &ns).await, keyring(&gpg, &[&alice])).await;
    create(&profiles(&client, &ns), profile(&[&alice], "head")).await;
    create(&applications(&client, &ns), application("app", &repo.url(), &rev)).await;
    let ap = provenance_where(&client, &ns, "app", "verified", |v| {
        condition(v, "SourceVerified").is_some_and(|c| c["status"] == "True")
    })
    .await;
    let recorded_at = ap["status"]["workUnit"]["recordedAt"].clone();
    let runs = common::metric(&metrics, "weft_pipeline_runs_total").await;
    assert!(runs >= 1.0);

    // Argo CD rewrites the Application's status (a refresh): no news.
    for i in 0..5 {
        update(&applications(&client, &ns), "app", |v| {
            v["status"]["reconciledAt"] = json!(format!("2026-01-01T00:00:0{i}Z"));
            v["status"]["health"] = json!({"status": if i % 2 == 0 { "Healthy" } else { "Progressing" }});
        })
        .await;
    }
    // Re-checked: the same record, a newer time, still no pipeline run.
    let again = provenance_where(&client, &ns, "app", "checked again", |v| {
        v["status"]["workUnit"]["recordedAt"] != recorded_at
            && condition(v, "SourceVerified").is_some_and(|c| c["status"] == "True")
    })
    .await;
    assert_eq!(again["status"]["verdict"], ap["status"]["verdict"]);
    assert!(common::metric(&metrics, "weft_reverifications_total").await >= 1.0);

    // The signature expires: the next check fails the revision, saying why.
    let failed = provenance_where(&client, &ns, "app", "the expired signature found", |v| {
        condition(v, "SourceVerified").is_some_and(|c| c["status"] == "False")
    })
    .await;
    let (_, reason, message) = source_condition(&failed);
    assert_eq!(reason, "SignatureExpired", "{message}");
    assert_eq!(failed["status"]["verdict"], "Failed");
    assert_eq!(
        common::metric(&metrics, "weft_pipeline_runs_total").await,
        runs,
        "status writes and re-checks ran no pipeline (no fetch, render, registry or log call)"
    );
}

/// Three replicas split the Applications in three shards, each held by a Lease. One is killed in the
/// middle of a run: its shard is taken over once its Lease expires, every Application is recorded, and
/// none twice.
#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_share_the_work_and_a_killed_ones_shard_is_taken_over() {
    let client = client().await;
    let ns = namespace(&client, "src-shards").await;
    let gpg = Gpg::new();
    let alice = gpg.key("Alice");
    let repo = Repo::new(&gpg);
    let rev = repo.commit("c1", Sign::Gpg(&alice));
    create(&config_maps(&client, &ns).await, keyring(&gpg, &[&alice])).await;
    create(&profiles(&client, &ns), profile(&[&alice], "head")).await;
    let apps = applications(&client, &ns);
    for i in 0..12 {
        create(&apps, application(&format!("app-{i}"), &repo.url(), &rev)).await;
    }
    let cache = tempfile::tempdir().unwrap();
    let replica = |n: usize| {
        let dir = cache.path().join(format!("r{n}"));
        WeftProcess::start(&[
            "controller",
            "--namespace",
            &ns,
            "--cache-dir",
            dir.to_str().unwrap(),
            "--shards",
            "3",
            "--leader-election-namespace",
            &ns,
            "--leader-election-seconds",
            "3",
        ])
    };
    let mut replicas: Vec<Option<WeftProcess>> = (0..3).map(|n| Some(replica(n))).collect();
    let recorded = |names: Vec<String>| {
        let api = provenances(&client, &ns);
        eventually("every Application recorded", Duration::from_secs(90), move || {
            let (api, names) = (api.clone(), names.clone());
            async move {
                let list = api.list(&Default::default()).await.map_err(|e| e.to_string())?;
                let done: Vec<String> = list
                    .items
                    .iter()
                    .filter(|p| p.data["status"]["workUnit"]["digest"].is_string())
                    .filter_map(|p| p.metadata.name.clone())
                    .collect();
                let missing: Vec<&String> = names.iter().filter(|n| !done.contains(n)).collect();
                if missing.is_empty() { Ok(()) } else { Err(format!("not yet: {missing:?}")) }
            }
        })
    };
    recorded((0..12).map(|i| format!("app-{i}")).collect()).await;
    let logs = |replicas: &[Option<WeftProcess>], logs_of_killed: &str| {
        let ansi = regex::Regex::new("\x1b\\[[0-9;]*m").unwrap();
        let mut all = logs_of_killed.to_string();
        for r in replicas.iter().flatten() {
            all.push_str(&r.logs());
        }
        ansi.replace_all(&all, "").into_owned()
    };
    let text = logs(&replicas, "");
    assert_eq!(text.matches("took the shard").count(), 3, "one shard each: {text}");
    for r in replicas.iter().flatten() {
        assert_eq!(r.logs().matches("took the shard").count(), 1, "each replica holds one shard");
    }

    // More Applications, and one replica killed while they are worked on.
    for i in 12..24 {
        create(&apps, application(&format!("app-{i}"), &repo.url(), &rev)).await;
    }
    let mut killed = replicas[1].take().unwrap();
    killed.kill();
    let killed_logs = killed.logs() + "\n";
    recorded((0..24).map(|i| format!("app-{i}")).collect()).await;
    let text = logs(&replicas, &killed_logs);
    assert_eq!(text.matches("took the shard").count(), 4, "the killed replica's shard was taken over: {text}");
    // Never recorded twice. (The killed replica may have written a record and died before logging it.)
    for i in 0..24 {
        let line = format!("recorded verdict application=app-{i} ");
        assert!(text.matches(&line).count() <= 1, "app-{i} recorded once: {text}");
    }
    let selected = eventually("the profile's count", Duration::from_secs(30), || {
        let api = profiles(&client, &ns);
        async move {
            let p = api.get("production").await.map_err(|e| e.to_string())?;
            let n = p.data["status"]["selectedApplications"].as_i64().unwrap_or(0);
            if n == 24 { Ok(n) } else { Err(format!("{n}")) }
        }
    })
    .await;
    assert_eq!(selected, 24);
}
