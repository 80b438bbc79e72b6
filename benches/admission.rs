//! Admission review latency and throughput: the webhook served on loopback over TLS, as in production
//! (the signed manifests of a 50-resource Application read once from the local registry, then cached),
//! and AdmissionReviews of one of its Deployments sent at a fixed rate, open loop (a request is sent on
//! schedule whether or not earlier ones have returned), over kept-alive connections as the apiserver
//! keeps them. Reported per rate: p50, p99 and the achieved throughput.
//!
//! Needs the test environment's registry and apiserver:
//! `tests/env/testenv.sh run -- cargo bench --bench admission`.

mod common;

use std::time::{Duration, Instant};

use common::env;
use kube::runtime::reflector;
use kube::runtime::watcher;
use serde_json::{Value, json};
use weft::admission::Skips;
use weft::oci::Registry;
use weft::render::manifest::{self, Limits};
use weft::resources::profile::IntegrityProfile;
use weft::resources::provenance::ApplicationProvenance;
use weft::signing::key::SigningKey;
use weft::signing::publish::{self, Destination};

const RESOURCES: usize = 50;

fn deployment(i: usize) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": format!("app-{i}"), "namespace": "bench",
            "annotations": {"argocd.argoproj.io/tracking-id": format!("argocd_bench:apps/Deployment:bench/app-{i}")}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": format!("app-{i}")}},
            "template": {"metadata": {"labels": {"app": format!("app-{i}")}},
                "spec": {"containers": [{"name": "app", "image": format!("registry.example/bench/app:{i}"),
                    "ports": [{"containerPort": 8080}]}]}}}})
}

fn main() {
    let testing = !std::env::args().any(|a| a == "--bench");
    let seconds = if testing { 0.3 } else { 5.0 };
    let registry = env("WEFT_TEST_REGISTRY", "admission");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _guard = runtime.enter();

    // The signed manifests, published as the controller publishes them.
    let key = SigningKey::from_pem(&rcgen::KeyPair::generate().unwrap().serialize_pem(), None).unwrap();
    let yaml: Vec<String> = (0..RESOURCES).map(|i| deployment(i).to_string()).collect();
    let mut manifests = manifest::parse("bench", &yaml.join("\n---\n"), Limits::default()).unwrap();
    manifest::sort(&mut manifests);
    let dest = Destination::Registry {
        registry: Registry::new(&format!("{registry}/bench/admission"), None).unwrap(),
        tag: format!("r{}", std::process::id()),
    };
    let published = runtime.block_on(publish::publish(&dest, &manifests, &key, None)).unwrap();

    // What the webhook watches: the Application's provenance (verified, with its images) and profile.
    let images: Vec<Value> = (0..RESOURCES)
        .map(|i| json!({"image": format!("registry.example/bench/app:{i}"), "outcome": "Verified", "reason": "Verified", "message": "ok"}))
        .collect();
    let provenance: ApplicationProvenance = serde_json::from_value(json!({
        "apiVersion": "weft.dev/v1alpha1", "kind": "ApplicationProvenance",
        "metadata": {"name": "bench", "namespace": "argocd"}, "spec": {"application": {"name": "bench"}},
        "status": {"verdict": "Verified", "sources": [{"repoURL": "https://git.example/bench", "revision": "9f2c1e4b7a3d"}],
            "profile": {"name": "production", "generation": 1}, "manifestImage": published.reference, "images": images}}))
    .unwrap();
    let profile: IntegrityProfile = serde_json::from_value(json!({
        "apiVersion": "weft.dev/v1alpha1", "kind": "IntegrityProfile", "metadata": {"name": "production", "namespace": "argocd"},
        "spec": {"applicationSelector": [{"name": "*"}]}}))
    .unwrap();
    let (provenances, mut pw) = reflector::store();
    pw.apply_watcher_event(&watcher::Event::Apply(provenance));
    let (profiles, mut fw) = reflector::store();
    fw.apply_watcher_event(&watcher::Event::Apply(profile));
    // The test cluster: the webhook asks it once per object for the signed manifest's defaults.
    let client = runtime.block_on(kube::Client::try_default()).unwrap();
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": "bench"}})).unwrap();
    let _ = runtime.block_on(kube::Api::all(client.clone()).create(&Default::default(), &ns)); // may exist
    let checker = weft::admission::webhook::checker(
        client,
        weft::admission::webhook::Watched { provenances, profiles, applications: reflector::store().0 },
        weft::admission::webhook::Trust {
            manifest_keys: vec![key.public_pem()],
            manifest_root: None,
            tag_ttl: std::time::Duration::from_secs(60),
            client_ca: false,
        },
        Skips::default(),
        weft::render::manifest::TrackingMethod::Annotation,
        "argocd",
    );

    let (http, url) = runtime.block_on(common::serve_webhook(checker));

    let review = |i: usize| {
        let object = deployment(i % RESOURCES);
        serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": format!("u{i}"), "operation": "UPDATE", "namespace": "bench", "name": object["metadata"]["name"],
                "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                "userInfo": {"username": "system:serviceaccount:argocd:argocd-application-controller"}, "object": object}}))
        .unwrap()
    };
    let send = |body: Vec<u8>| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let t = Instant::now();
            let resp = http.post(&url).header("content-type", "application/json").body(body).send().await.unwrap();
            let v: Value = resp.json().await.unwrap();
            assert_eq!(v["response"]["allowed"], true, "{v}");
            t.elapsed()
        }
    };
    // Warm: the first review reads the manifest image from the registry and asks the apiserver for the
    // defaults of its object; then each other object once, as the first sync of a revision does.
    let first = runtime.block_on(send(review(0)));
    for i in 1..RESOURCES {
        runtime.block_on(send(review(i)));
    }

    println!("\n{RESOURCES}-resource Application, AdmissionReviews of its Deployments over TLS on loopback");
    println!(
        "(first review, reading the signed manifests from the registry and the object's defaults from the apiserver: {:.1} ms)\n",
        first.as_secs_f64() * 1e3
    );
    println!("| offered load (reviews/s) | achieved (reviews/s) | p50 | p99 | max |\n|---|---|---|---|---|");
    for rate in [100u32, 250, 500, 1000, 2000] {
        let n = (f64::from(rate) * seconds) as usize;
        let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
        let start = Instant::now();
        let mut latencies = runtime.block_on(async {
            let mut tasks = Vec::with_capacity(n);
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            for i in 0..n {
                tick.tick().await;
                tasks.push(tokio::spawn(send(review(i))));
            }
            let mut out = Vec::with_capacity(n);
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        });
        let elapsed = start.elapsed();
        latencies.sort();
        let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
        println!(
            "| {rate} | {:.0} | {} | {} | {} |",
            n as f64 / elapsed.as_secs_f64(),
            ms(at(0.5)),
            ms(at(0.99)),
            ms(*latencies.last().unwrap())
        );
    }
}
