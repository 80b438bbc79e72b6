//! The controller against the real kube-apiserver, with Argo CD's own CRDs installed: Applications carry
//! the status Argo CD writes, and the assertions read the ApplicationProvenance and IntegrityProfile
//! objects Weft records.

mod common;

use std::time::Duration;

use common::*;
use kube::Client;
use kube::api::{DeleteParams, PostParams};
use serde_json::{Value, json};

/// One real repository (unsigned commits) shared by the tests that are not about signatures; the
/// profile's policy for it is `gpg.mode: none`, so source verification passes on any of its commits.
fn shared_repo() -> &'static (String, Vec<String>) {
    static REPO: std::sync::OnceLock<(String, Vec<String>)> = std::sync::OnceLock::new();
    REPO.get_or_init(|| {
        let gpg = Box::leak(Box::new(common::git::Gpg::new()));
        let repo = Box::leak(Box::new(common::git::Repo::new(gpg)));
        let commits = (0..8).map(|i| repo.commit(&format!("c{i}"), common::git::Sign::No)).collect();
        (repo.url(), commits)
    })
}

fn repo_url() -> &'static str {
    &shared_repo().0
}

/// The i-th commit of the shared repository.
fn rev(i: usize) -> String {
    shared_repo().1[i].clone()
}

fn profile(name: &str, selector: Value) -> Value {
    json!({
        "apiVersion": "weft.dev/v1alpha1",
        "kind": "IntegrityProfile",
        "metadata": {"name": name},
        "spec": {
            "applicationSelector": selector,
            "sourceIntegrity": {"git": {"policies": [{
                "repos": [{"url": "file:///*"}, {"url": "!file:///nowhere/*"}],
                "gpg": {"mode": "none"}
            }]}},
            "enforcement": {"mode": "audit"}
        }
    })
}

fn source() -> Value {
    json!({"repoURL": repo_url(), "path": "deploy", "targetRevision": "main"})
}

/// An Application as Argo CD leaves it after a successful automated sync of `rev`.
fn synced_application(name: &str, labels: Value, rev: &str) -> Value {
    json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "project": "default",
            "destination": {"server": "https://kubernetes.default.svc", "namespace": "shop"},
            "source": source(),
            "syncPolicy": {"automated": {"prune": true}}
        },
        "status": synced_status(rev, 0),
    })
}

fn synced_status(rev: &str, history_id: i64) -> Value {
    json!({
        "sync": {"status": "Synced", "revision": rev, "comparedTo": {
            "source": source(), "destination": {"server": "https://kubernetes.default.svc", "namespace": "shop"}}},
        "health": {"status": "Healthy"},
        "operationState": {
            "operation": {"sync": {"revision": rev}, "initiatedBy": {"automated": true}, "retry": {"limit": 5}},
            "phase": "Succeeded", "message": "successfully synced (all tasks run)",
            "startedAt": "2026-11-22T00:00:00Z", "finishedAt": "2026-11-22T00:00:05Z",
            "syncResult": {"revision": rev, "source": source(), "resources": [
                {"group": "apps", "version": "v1", "kind": "Deployment", "namespace": "shop", "name": "cart",
                 "status": "Synced", "message": "deployment.apps/cart created", "syncPhase": "Sync", "hookPhase": "Running"}]}
        },
        "history": [{"id": history_id, "revision": rev, "deployedAt": "2026-11-22T00:00:05Z",
                     "deployStartedAt": "2026-11-22T00:00:00Z", "source": source(), "initiatedBy": {"automated": true}}],
        "reconciledAt": "2026-11-22T00:00:05Z",
        "sourceType": "Directory",
        "summary": {"images": ["registry.example.com/shop/cart:1.0"]}
    })
}

async fn setup(prefix: &str) -> (Client, String, WeftProcess) {
    let client = client().await;
    let ns = namespace(&client, prefix).await;
    let weft = WeftProcess::start(&["controller", "--namespace", &ns]);
    (client, ns, weft)
}

#[tokio::test]
async fn records_provenance_owned_by_the_application_with_unbuilt_steps_not_implemented() {
    let (client, ns, _weft) = setup("record").await;
    let p = create(
        &profiles(&client, &ns),
        profile("production", json!([{"name": "shop-*", "matchLabels": {"tier": "prod"}}])),
    )
    .await;
    let rev = rev(0);
    let app = create(&applications(&client, &ns), synced_application("shop-cart", json!({"tier": "prod"}), &rev)).await;

    let ap =
        provenance_where(&client, &ns, "shop-cart", "a recorded verdict", |v| v["status"]["verdict"] == "Failed").await;

    let owner = &ap["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "Application");
    assert_eq!(owner["apiVersion"], "argoproj.io/v1alpha1");
    assert_eq!(owner["name"], "shop-cart");
    assert_eq!(owner["uid"].as_str(), app.metadata.uid.as_deref());
    assert_eq!(owner["controller"], true);
    assert_eq!(ap["spec"]["application"]["name"], "shop-cart");

    let status = &ap["status"];
    assert_eq!(status["revisionShort"], &rev[..12]);
    assert_eq!(status["sources"][0]["repoURL"], repo_url());
    assert_eq!(status["sources"][0]["revision"], rev.as_str());
    assert_eq!(status["sources"][0]["targetRevision"], "main");
    assert_eq!(status["revisionOrigin"], "SyncStatus");
    assert_eq!(status["profile"]["name"], "production");
    assert_eq!(status["profile"]["generation"].as_i64(), p.metadata.generation);
    assert_eq!(status["observedGeneration"].as_i64(), ap["metadata"]["generation"].as_i64());
    assert_eq!(status["applicationGeneration"].as_i64(), app.metadata.generation);
    let source = condition(&ap, "SourceVerified").expect("SourceVerified");
    assert_eq!((source["status"].as_str(), source["reason"].as_str()), (Some("True"), Some("Verified")));
    assert!(source["message"].as_str().unwrap().contains("requires no signatures (gpg.mode: none)"), "{source}");
    // This profile signs nothing (no manifestSigning): said so, and nothing is vouched for.
    let signed = condition(&ap, "ManifestsSigned").expect("ManifestsSigned");
    assert_eq!((signed["status"].as_str(), signed["reason"].as_str()), (Some("False"), Some("SigningNotConfigured")));
    let images = condition(&ap, "ImagesVerified").expect("ImagesVerified");
    assert_eq!(
        (images["status"].as_str(), images["reason"].as_str()),
        (Some("False"), Some("ImageVerificationNotConfigured")),
        "never claims success"
    );
    let provenance = condition(&ap, "ProvenanceRecorded").expect("ProvenanceRecorded");
    assert_eq!((provenance["status"].as_str(), provenance["reason"].as_str()), (Some("False"), Some("Blocked")));
    let ready = condition(&ap, "Ready").expect("Ready");
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("ImageVerificationNotConfigured"))
    );

    let prof = eventually("profile status", Duration::from_secs(30), || {
        let api = profiles(&client, &ns);
        async move {
            let v = serde_json::to_value(api.get("production").await.map_err(|e| e.to_string())?).unwrap();
            if v["status"]["selectedApplications"] == 1 { Ok(v) } else { Err(v["status"].to_string()) }
        }
    })
    .await;
    assert_eq!(prof["status"]["summary"]["sourceMode"], "none");
    assert_eq!(prof["status"]["summary"]["enforcement"], "audit");
    assert_eq!(condition_reason(&prof, "Ready").as_deref(), Some("Active"));

    // Someone points the record at another Application: Weft writes it back, though the unit of work
    // it records is unchanged.
    let patch = json!({"spec": {"application": {"name": "someone-else"}}});
    provenances(&client, &ns)
        .patch("shop-cart", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch))
        .await
        .unwrap();
    provenance_where(&client, &ns, "shop-cart", "the record written back", |v| {
        v["spec"]["application"]["name"] == "shop-cart"
    })
    .await;
}

#[tokio::test]
async fn a_new_synced_revision_is_picked_up_at_the_earliest_signal_and_the_old_one_kept_in_history() {
    let (client, ns, _weft) = setup("revision").await;
    create(&profiles(&client, &ns), profile("production", json!([{"name": "*"}]))).await;
    let (old, new) = (rev(1), rev(2));
    create(&applications(&client, &ns), synced_application("shop-api", json!({}), &old)).await;
    provenance_where(&client, &ns, "shop-api", "the first revision", |v| {
        v["status"]["sources"][0]["revision"] == old.as_str()
    })
    .await;

    // Argo CD's first write for a new automated sync: `.operation` with the resolved SHA, while
    // `.status.sync` still shows the old revision.
    update(&applications(&client, &ns), "shop-api", |v| {
        v["operation"] = json!({"sync": {"revision": new, "source": source()}, "initiatedBy": {"automated": true}, "retry": {"limit": 5}});
        v["status"]["operationState"] = Value::Null;
    })
    .await;
    let ap = provenance_where(&client, &ns, "shop-api", "the operation's revision", |v| {
        v["status"]["sources"][0]["revision"] == new.as_str()
    })
    .await;
    assert_eq!(ap["status"]["revisionOrigin"], "Operation");
    assert_eq!(ap["status"]["history"][0]["sources"][0]["revision"], old.as_str());
    assert_eq!(ap["status"]["history"][0]["verdict"], "Failed");

    // The sync finishes: `.operation` is cleared and the status carries the same revision.
    update(&applications(&client, &ns), "shop-api", |v| {
        v["operation"] = Value::Null;
        v["status"] = synced_status(&new, 1);
    })
    .await;
    let ap = provenance_where(&client, &ns, "shop-api", "the synced status", |v| {
        v["status"]["revisionOrigin"] == "SyncStatus"
    })
    .await;
    assert_eq!(ap["status"]["sources"][0]["revision"], new.as_str());
    assert_eq!(ap["status"]["history"].as_array().map(Vec::len), Some(1), "the same revision adds no history");
}

#[tokio::test]
async fn an_application_no_profile_selects_is_reported_unprotected() {
    let (client, ns, _weft) = setup("unprotected").await;
    create(&profiles(&client, &ns), profile("production", json!([{"name": "shop-*"}]))).await;
    create(&applications(&client, &ns), synced_application("blog", json!({}), &rev(3))).await;
    let ap = provenance_where(&client, &ns, "blog", "unprotected", |v| v["status"]["verdict"] == "Unprotected").await;
    let ready = condition(&ap, "Ready").unwrap();
    assert_eq!(ready["reason"], "NoProfile");
    assert!(ready["message"].as_str().unwrap().contains(&format!("no IntegrityProfile in namespace {ns}")));
    assert!(condition(&ap, "SourceVerified").is_none());
}

#[tokio::test]
async fn profile_changes_requeue_the_applications_selected_before_and_after() {
    let (client, ns, _weft) = setup("requeue").await;
    create(&profiles(&client, &ns), profile("production", json!([{"name": "shop-*"}]))).await;
    create(&applications(&client, &ns), synced_application("shop-a", json!({}), &rev(4))).await;
    create(&applications(&client, &ns), synced_application("blog-a", json!({}), &rev(5))).await;
    provenance_where(&client, &ns, "shop-a", "shop-a governed", |v| v["status"]["profile"]["name"] == "production")
        .await;
    provenance_where(&client, &ns, "blog-a", "blog-a unprotected", |v| v["status"]["verdict"] == "Unprotected").await;

    update(&profiles(&client, &ns), "production", |v| v["spec"]["applicationSelector"] = json!([{"name": "blog-*"}]))
        .await;
    provenance_where(&client, &ns, "shop-a", "shop-a no longer selected", |v| v["status"]["verdict"] == "Unprotected")
        .await;
    let blog = provenance_where(&client, &ns, "blog-a", "blog-a now governed", |v| {
        v["status"]["profile"]["name"] == "production"
    })
    .await;
    assert_eq!(blog["status"]["profile"]["generation"], 2);

    profiles(&client, &ns).delete("production", &DeleteParams::default()).await.expect("delete profile");
    provenance_where(&client, &ns, "blog-a", "blog-a unprotected after the profile is gone", |v| {
        v["status"]["verdict"] == "Unprotected"
    })
    .await;
}

#[tokio::test]
async fn two_profiles_selecting_one_application_vouch_for_nothing_and_both_say_so() {
    let (client, ns, _weft) = setup("conflict").await;
    create(&profiles(&client, &ns), profile("team", json!([{"name": "shop-*"}]))).await;
    create(&profiles(&client, &ns), profile("platform", json!([{"matchLabels": {"tier": "prod"}}]))).await;
    create(&applications(&client, &ns), synced_application("shop-cart", json!({"tier": "prod"}), &rev(6))).await;
    create(&applications(&client, &ns), synced_application("shop-ui", json!({}), &rev(7))).await;

    let ap =
        provenance_where(&client, &ns, "shop-cart", "a conflict", |v| v["status"]["verdict"] == "ConfigError").await;
    assert_eq!(ap["status"]["conflictingProfiles"], json!(["platform", "team"]));
    assert!(ap["status"].get("profile").is_none());
    let ready = condition(&ap, "Ready").unwrap();
    assert_eq!(ready["reason"], "ProfileConflict");
    assert!(ready["message"].as_str().unwrap().contains("platform, team"));
    for step in ["SourceVerified", "ManifestsSigned"] {
        assert!(condition(&ap, step).is_none(), "a conflicted Application gets no step results");
    }
    provenance_where(&client, &ns, "shop-ui", "shop-ui governed by team", |v| v["status"]["profile"]["name"] == "team")
        .await;

    for (name, other) in [("team", "platform"), ("platform", "team")] {
        let v = eventually("profile conflict status", Duration::from_secs(30), || {
            let api = profiles(&client, &ns);
            async move {
                let v = serde_json::to_value(api.get(name).await.map_err(|e| e.to_string())?).unwrap();
                if v["status"]["conflictingApplications"] == 1 { Ok(v) } else { Err(v["status"].to_string()) }
            }
        })
        .await;
        assert_eq!(v["status"]["conflicts"], json!([{"application": "shop-cart", "profiles": [other]}]));
        let ready = condition(&v, "Ready").unwrap();
        assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("False"), Some("ProfileConflict")));
    }
}

#[tokio::test]
async fn malformed_applications_are_reported_while_the_others_are_recorded() {
    let (client, ns, _weft) = setup("malformed").await;
    create(&profiles(&client, &ns), profile("production", json!([{"name": "*"}]))).await;
    let apps = applications(&client, &ns);
    let mut no_source = synced_application("no-source", json!({}), &sha('1'));
    no_source["spec"].as_object_mut().unwrap().remove("source");
    create(&apps, no_source).await;
    create(&apps, synced_application("symbolic", json!({}), "main")).await;
    let mut mismatch = synced_application("mismatch", json!({}), &sha('2'));
    mismatch["spec"]["sources"] =
        json!([source(), {"repoURL": "https://git.example.com/shop/values.git", "ref": "values"}]);
    mismatch["spec"].as_object_mut().unwrap().remove("source");
    mismatch["status"]["sync"]["revisions"] = json!([sha('2')]);
    create(&apps, mismatch).await;
    create(&apps, synced_application("good", json!({}), &rev(0))).await;

    provenance_where(&client, &ns, "good", "the good Application", |v| v["status"]["verdict"] == "Failed").await;
    for (name, reason) in
        [("no-source", "NoSource"), ("symbolic", "RevisionNotACommit"), ("mismatch", "RevisionCountMismatch")]
    {
        let ap = provenance_where(&client, &ns, name, "an invalid verdict", |v| {
            v["status"]["verdict"] == "InvalidApplication"
        })
        .await;
        assert_eq!(condition_reason(&ap, "Ready").as_deref(), Some(reason), "{name}");
    }
}

#[tokio::test]
async fn the_apiserver_rejects_malformed_profiles_with_a_readable_message() {
    let client = client().await;
    let ns = namespace(&client, "schema").await;
    let api = profiles(&client, &ns);
    let cases = [
        (json!({"applicationSelector": []}), "applicationSelector needs at least one term"),
        (
            json!({"applicationSelector": [{}]}),
            "a selector term must set name, project, matchLabels or matchExpressions",
        ),
        (
            json!({"applicationSelector": [{"name": "*"}], "sourceIntegrity": {"git": {"policies": [{"repos": [{"url": "https://x/*"}], "gpg": {"mode": "paranoid"}}]}}}),
            "Unsupported value: \"paranoid\"",
        ),
        (
            json!({"applicationSelector": [{"name": "*"}], "sourceIntegrity": {"git": {"policies": [{"repos": [{"url": "https://x/*"}], "gpg": {"mode": "strict"}}]}}}),
            "gpg.mode head or strict needs allowed signers",
        ),
        (
            json!({"applicationSelector": [{"name": "*"}], "sourceIntegrity": {"git": {"policies": [{"repos": [{"url": "https://x/*"}], "gpg": {"mode": "head", "keys": ["not-a-key"]}}]}}}),
            "each gpg key must be a 16-hex key ID or a 40-hex fingerprint",
        ),
        (
            json!({"applicationSelector": [{"name": "*"}], "sourceIntegrity": {"git": {"policies": [{"repos": [{"url": "!https://x/y"}]}]}}}),
            "repos needs at least one URL that is not an exclusion",
        ),
        (
            json!({"applicationSelector": [{"matchExpressions": [{"key": "tier", "operator": "In"}]}]}),
            "operators In and NotIn need values",
        ),
        (
            json!({"applicationSelector": [{"name": "*"}], "manifestSigning": {"key": {"secretRef": {"name": "Bad_Name"}}}}),
            "must be the name of a Secret or ConfigMap",
        ),
    ];
    for (i, (spec, message)) in cases.into_iter().enumerate() {
        let obj = json!({"apiVersion": "weft.dev/v1alpha1", "kind": "IntegrityProfile", "metadata": {"name": format!("bad-{i}")}, "spec": spec});
        let obj: kube::api::DynamicObject = serde_json::from_value(obj).unwrap();
        match api.create(&PostParams::default(), &obj).await {
            Ok(_) => {
                panic!("case {i}: the apiserver accepted a malformed profile (expected: {message})")
            }
            Err(kube::Error::Api(s)) => {
                assert_eq!(s.code, 422, "case {i}: {}", s.message);
                assert!(s.message.contains(message), "case {i}: {:?} does not contain {message:?}", s.message);
            }
            Err(e) => panic!("case {i}: {e}"),
        }
    }
}

#[tokio::test]
async fn the_controller_shuts_down_gracefully_on_sigterm() {
    let (client, ns, mut weft) = setup("shutdown").await;
    create(&profiles(&client, &ns), profile("production", json!([{"name": "*"}]))).await;
    create(&applications(&client, &ns), synced_application("app", json!({}), &rev(1))).await;
    provenance_where(&client, &ns, "app", "a verdict", |v| v["status"]["verdict"] == "Failed").await;
    let code = weft.terminate(Duration::from_secs(20)).await;
    assert_eq!(code, Some(0), "exit code after SIGTERM; log:\n{}", weft.logs());
    assert!(weft.logs().contains("weft controller stopped"));
}

/// A kubeconfig for the test cluster's user that has no permissions until a test grants some.
fn restricted_kubeconfig(dir: &std::path::Path) -> std::path::PathBuf {
    let token =
        std::env::var("WEFT_TEST_RESTRICTED_TOKEN").expect("WEFT_TEST_RESTRICTED_TOKEN (set by tests/env/testenv.sh)");
    kubeconfig_with_token(&token, dir, "restricted")
}

#[tokio::test]
async fn without_access_to_its_resources_the_controller_waits_and_retries_instead_of_crashing() {
    let client = client().await;
    let ns = namespace(&client, "waits").await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = restricted_kubeconfig(dir.path());
    // Argo CD's namespace is this one too, so the grant below stays within it.
    let mut weft = WeftProcess::start_with_env(
        &["controller", "--namespace", &ns, "--argocd-namespace", &ns],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    );

    eventually("the controller to report what it waits for", Duration::from_secs(30), || {
        let logs = weft.logs();
        async move {
            if logs.contains("waiting for CRDs to be served") && logs.contains("integrityprofiles.weft.dev") {
                Ok(())
            } else {
                Err(logs)
            }
        }
    })
    .await;
    assert!(weft.is_running(), "the controller exited instead of waiting:\n{}", weft.logs());

    // Grant exactly what the controller needs in this namespace.
    let rbac = |kind: &str, body: Value| {
        let mut v = body;
        v["kind"] = json!(kind);
        v["apiVersion"] = json!("rbac.authorization.k8s.io/v1");
        v
    };
    let role = rbac(
        "Role",
        json!({"metadata": {"name": "weft"}, "rules": [
            {"apiGroups": ["argoproj.io"], "resources": ["applications"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["weft.dev"], "resources": ["integrityprofiles"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["weft.dev"], "resources": ["integrityprofiles/status"], "verbs": ["patch"]},
            {"apiGroups": ["weft.dev"], "resources": ["applicationprovenances"], "verbs": ["get", "list", "watch", "create", "patch"]},
            {"apiGroups": ["weft.dev"], "resources": ["applicationprovenances/status"], "verbs": ["patch"]},
            {"apiGroups": ["argoproj.io"], "resources": ["appprojects"], "verbs": ["get"]}
        ]}),
    );
    let binding = rbac(
        "RoleBinding",
        json!({"metadata": {"name": "weft"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "weft"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "weft-test-restricted"}]}),
    );
    let roles = kube::Api::<kube::api::DynamicObject>::namespaced_with(
        client.clone(),
        &ns,
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", "Role"),
            "roles",
        ),
    );
    let bindings = kube::Api::<kube::api::DynamicObject>::namespaced_with(
        client.clone(),
        &ns,
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", "RoleBinding"),
            "rolebindings",
        ),
    );
    create(&roles, role).await;
    create(&bindings, binding).await;
    let projects = kube::Api::<kube::api::DynamicObject>::namespaced_with(
        client.clone(),
        &ns,
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("argoproj.io", "v1alpha1", "AppProject"),
            "appprojects",
        ),
    );
    create(
        &projects,
        json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "AppProject", "metadata": {"name": "default"},
               "spec": {"sourceRepos": ["*"], "destinations": [{"server": "*", "namespace": "*"}]}}),
    )
    .await;

    create(&profiles(&client, &ns), profile("production", json!([{"name": "*"}]))).await;
    create(&applications(&client, &ns), synced_application("app", json!({}), &rev(2))).await;
    provenance_where(&client, &ns, "app", "a verdict once access is granted", |v| v["status"]["verdict"] == "Failed")
        .await;
}
