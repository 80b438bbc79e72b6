//! Steady state at scale, against the real apiserver: Applications in 50 namespaces (one profile each,
//! as profiles select within their namespace), each synced to a signed commit of its namespace's
//! repository; the controller (this build, as a ServiceAccount, so priority and fairness apply to it)
//! started once they exist. Measured:
//! - the time from the controller's start to every Application recorded (`status.workUnit`);
//! - then, over a churn like Argo CD's (each Application's status rewritten every 30 s, spread out,
//!   which bumps its generation as Argo CD's writes do), the controller's own counters per minute:
//!   pipeline runs, registry calls, Rekor requests, apiserver requests (429s apart). The controller
//!   resyncs every 60 s (a tenth of the default), so those minutes hold resyncs of every Application;
//! - the controller's resident memory (now and peak);
//! - with signing, the webhook's p99 over those minutes: two webhook replicas (in-process servers, each
//!   with its own watches of the cluster and nothing else shared) review one signed Deployment, 50
//!   reviews/s in turns, and both must admit it every time.
//!
//! The throttled run turns on a priority level that admits the controller's ServiceAccount to about
//! three seats and rejects the rest (429), when the apiserver runs with priority and fairness on.
//!
//! `WEFT_TESTENV_APF=1 tests/env/testenv.sh run -- cargo bench --bench scale`
//! (`WEFT_SCALE_SIZES=100,1000` and `WEFT_SCALE_CHURN_SECONDS=120` by default).

mod common;
#[path = "../tests/common/mod.rs"]
mod testing;

use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::{Value, json};
use testing::images::Lab;
use testing::project::Project;
use testing::{WeftProcess, applications, create, profiles, run_cmd};

const NAMESPACES: usize = 50;
const CHURN_PERIOD: Duration = Duration::from_secs(30);

#[derive(Clone, Copy)]
struct Scenario {
    apps: usize,
    signing: bool,
    throttled: bool,
}

struct Figures {
    startup: Duration,
    /// Requests the apiserver rejected with 429 while the controller started.
    startup_throttled: f64,
    /// And per minute over the churn.
    throttled_per_minute: f64,
    /// Reconciles per Application until every one was recorded.
    startup_reconciles: f64,
    recorded: usize,
    per_minute: Counters,
    rss_mib: (f64, f64),
    webhook_p99: Option<Duration>,
    reviews: usize,
}

#[derive(Default, Clone, Copy)]
struct Counters {
    runs: f64,
    registry: f64,
    rekor: f64,
    apiserver: f64,
    status_writes: f64,
    reconciles: f64,
}

impl Counters {
    fn minus(self, o: Counters, minutes: f64) -> Counters {
        let r = |a: f64, b: f64| (a - b) / minutes;
        Counters {
            runs: r(self.runs, o.runs),
            registry: r(self.registry, o.registry),
            rekor: r(self.rekor, o.rekor),
            apiserver: r(self.apiserver, o.apiserver),
            status_writes: r(self.status_writes, o.status_writes),
            reconciles: r(self.reconciles, o.reconciles),
        }
    }
}

/// The sum of the samples in Prometheus text whose line starts with `prefix` and passes `keep`.
fn sum(text: &str, prefix: &str, keep: &dyn Fn(&str) -> bool) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix) && keep(l))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b)
}

async fn counters(addr: &str) -> Counters {
    let text = reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap();
    let sum = |prefix: &str, keep: &dyn Fn(&str) -> bool| sum(&text, prefix, keep);
    Counters {
        runs: sum("weft_pipeline_runs_total ", &|_| true),
        registry: sum("weft_registry_requests_total ", &|_| true),
        rekor: sum("weft_rekor_requests_total ", &|_| true),
        apiserver: sum("weft_apiserver_requests_total{", &|_| true),
        status_writes: sum("weft_apiserver_requests_total{", &|l| l.contains("method=\"PATCH\"")),
        reconciles: sum("weft_reconciles_total{", &|_| true),
    }
}

/// Requests the apiserver rejected with 429 for the controller's priority level, as the apiserver counts
/// them (the client retries a 429 as the apiserver asks, so the controller sees fewer).
async fn rejected(client: &kube::Client) -> f64 {
    let req = hyper::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(req).await.unwrap_or_default();
    sum(&text, "apiserver_flowcontrol_rejected_requests_total{", &|l| l.contains("priority_level=\"weft-scale\""))
}

/// Resident memory of a process, now and at its peak, in MiB.
fn rss(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
}

/// One namespace: its repository, keys and profile.
struct Tenant {
    ns: String,
    project: Project,
}

/// With signing, the Deployment runs an image signed with a cosign key, which the profile verifies:
/// every Application is vouched for, and the webhook admits what was signed.
async fn tenant(client: &kube::Client, scenario: Scenario, i: usize, lab: &Lab, image: &str) -> Tenant {
    let ns = testing::namespace(client, &format!("scale{}", i % 10)).await;
    let mut files = testing::project::shop_files(&ns);
    for (_, content) in &mut files {
        *content = content.replace("registry.example/shop/cart:1.4.2", image);
    }
    let refs: Vec<(&str, String)> = files.iter().map(|(p, c)| (p.as_str(), c.clone())).collect();
    let project = Project::new(&refs, ns.clone());
    project.apply_resources(client, &ns).await;
    let repository = format!("{}/scale/{ns}", testing::peer("WEFT_TEST_REGISTRY"));
    let extra = if scenario.signing {
        testing::apply_documents(client, &ns, &std::fs::read_to_string(lab.path("resources.yaml")).unwrap()).await;
        json!({"imageVerification": lab.image_verification(testing::images::key("keys"), json!({}))})
    } else {
        json!({})
    };
    let path = project.profile(&repository, scenario.signing, extra);
    let mut profile: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    profile["metadata"] = json!({"name": "production"});
    if !scenario.signing {
        profile["spec"].as_object_mut().unwrap().remove("manifestSigning");
    }
    create(&profiles(client, &ns), profile).await;
    Tenant { ns, project }
}

fn application(t: &Tenant, j: usize) -> Value {
    let mut app: Value =
        serde_json::from_str(&std::fs::read_to_string(t.project.application(json!({}))).unwrap()).unwrap();
    app["metadata"] = json!({"name": format!("app-{j}")});
    app["status"]["reconciledAt"] = json!("2026-01-01T00:00:00Z");
    app
}

/// The controller's identity: a ServiceAccount (not `system:masters`, which priority and fairness
/// exempts), bound to cluster-admin for the benchmark; and, for the throttled run, a priority level.
fn controller_identity(dir: &std::path::Path, throttled: bool) -> std::path::PathBuf {
    let ns = format!("weft-scale-{}", std::process::id());
    let kubectl = |args: &[&str]| {
        let (code, out, err) = run_cmd(std::process::Command::new("kubectl").args(args));
        assert!(code == 0 || err.contains("already exists"), "kubectl {args:?}: {out}{err}");
    };
    kubectl(&["create", "namespace", &ns]);
    kubectl(&["create", "serviceaccount", "controller", "-n", &ns]);
    kubectl(&[
        "create",
        "clusterrolebinding",
        &format!("{ns}-controller"),
        "--clusterrole=cluster-admin",
        &format!("--serviceaccount={ns}:controller"),
    ]);
    if throttled {
        let apf = format!(
            r#"{{"apiVersion": "v1", "kind": "List", "items": [
              {{"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "PriorityLevelConfiguration",
                "metadata": {{"name": "weft-scale"}},
                "spec": {{"type": "Limited", "limited": {{"nominalConcurrencyShares": 1, "lendablePercent": 0,
                  "limitResponse": {{"type": "Reject"}}}}}}}},
              {{"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema", "metadata": {{"name": "weft-scale"}},
                "spec": {{"priorityLevelConfiguration": {{"name": "weft-scale"}}, "matchingPrecedence": 100,
                  "distinguisherMethod": {{"type": "ByUser"}},
                  "rules": [{{"subjects": [{{"kind": "ServiceAccount", "serviceAccount": {{"name": "controller", "namespace": "{ns}"}}}}],
                    "resourceRules": [{{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"], "namespaces": ["*"], "clusterScope": true}}],
                    "nonResourceRules": [{{"verbs": ["*"], "nonResourceURLs": ["*"]}}]}}]}}}}]}}"#
        );
        let file = dir.join("apf.json");
        std::fs::write(&file, apf).unwrap();
        kubectl(&["apply", "--server-side", "-f", file.to_str().unwrap()]);
    }
    testing::chart::service_account_kubeconfig(&ns, "controller", dir)
}

/// How many of the tenants' Applications are recorded.
async fn recorded(client: &kube::Client, tenants: &[Tenant]) -> usize {
    let all: Api<DynamicObject> =
        Api::all_with(client.clone(), &testing::weft_resource("ApplicationProvenance", "applicationprovenances"));
    let list = all.list(&ListParams::default().labels("app.kubernetes.io/managed-by=weft")).await.unwrap();
    list.items
        .iter()
        .filter(|p| tenants.iter().any(|t| p.metadata.namespace.as_deref() == Some(&t.ns)))
        .filter(|p| p.data["status"]["workUnit"]["digest"].is_string())
        .count()
}

/// An in-process webhook on the cluster, and a review of one signed Deployment it admits.
async fn webhook(client: &kube::Client, t: &Tenant) -> (reqwest::Client, String, Vec<u8>) {
    let provenance = testing::provenances(client, &t.ns).get("app-0").await.unwrap();
    let image = provenance.data["status"]["manifestImage"].as_str().expect("app-0 is signed").to_string();
    let (repository, digest) = image.split_once('@').unwrap();
    let registry = weft::oci::Registry::new(repository, None).unwrap();
    let bytes = registry.manifest(digest).await.unwrap().unwrap();
    let layers = registry.layers(&bytes).await.unwrap();
    let layer = layers.iter().find(|l| l.media_type == weft::oci::MANIFEST_LAYER).unwrap();
    let set =
        weft::render::manifest::parse(&image, std::str::from_utf8(&layer.bytes).unwrap(), Default::default()).unwrap();
    let deployment = set.iter().find(|m| m.object["kind"] == "Deployment").unwrap().object.clone();

    let (provenances, pw) = reflector::store();
    let (profiles, fw) = reflector::store();
    let (apps, aw) = reflector::store();
    let watch = |w| watcher::Config::default().any_semantic().page_size(500).timeout(w);
    tokio::spawn(watcher(Api::all(client.clone()), watch(290)).default_backoff().reflect(pw).for_each(|_| async {}));
    tokio::spawn(watcher(Api::all(client.clone()), watch(290)).default_backoff().reflect(fw).for_each(|_| async {}));
    tokio::spawn(watcher(Api::all(client.clone()), watch(290)).default_backoff().reflect(aw).for_each(|_| async {}));
    provenances.wait_until_ready().await.unwrap();
    profiles.wait_until_ready().await.unwrap();
    apps.wait_until_ready().await.unwrap();
    let key = std::fs::read_to_string(t.project.path("weft.pub")).unwrap();
    let checker = weft::admission::webhook::checker(
        client.clone(),
        weft::admission::webhook::Watched { provenances, profiles, applications: apps },
        weft::admission::webhook::Trust {
            manifest_keys: vec![key],
            manifest_root: None,
            tag_ttl: Duration::from_secs(60),
            client_ca: false,
        },
        Default::default(),
        weft::render::manifest::TrackingMethod::Annotation,
        "argocd",
    );
    let (http, url) = common::serve_webhook(checker).await;
    let review = serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u", "operation": "UPDATE", "namespace": t.ns, "name": deployment["metadata"]["name"],
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "userInfo": {"username": "system:serviceaccount:argocd:argocd-application-controller"}, "object": deployment}}))
    .unwrap();
    (http, url, review)
}

async fn run(client: &kube::Client, scenario: Scenario, churn: Duration) -> Figures {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::new();
    let image = lab.image("scale/cart", "1.0");
    lab.sign("k", &image);
    let mut tenants = Vec::new();
    for i in 0..NAMESPACES {
        tenants.push(tenant(client, scenario, i, &lab, &image).await);
    }
    let per_ns = scenario.apps.div_ceil(NAMESPACES);
    let mut creations = Vec::new();
    for t in &tenants {
        for j in 0..per_ns {
            creations.push((applications(client, &t.ns), application(t, j)));
        }
    }
    creations.truncate(scenario.apps);
    for chunk in creations.chunks(50) {
        futures::future::join_all(chunk.iter().map(|(api, app)| create(api, app.clone()))).await;
    }

    let kubeconfig = controller_identity(dir.path(), scenario.throttled);
    let metrics = testing::argocd::free_address();
    let cache = dir.path().join("cache");
    let rejected_before = rejected(client).await;
    let start = Instant::now();
    let controller = WeftProcess::start_with_env(
        &[
            "controller",
            "--argocd-namespace",
            "argocd",
            "--cache-dir",
            cache.to_str().unwrap(),
            "--health-listen",
            &metrics,
            // A tenth of the default, so that the churn's minutes hold resyncs of every Application.
            "--resync-seconds",
            "60",
        ],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap()), ("WEFT_LOG", "warn")],
    );
    let deadline = Duration::from_secs(1800);
    let mut done = 0;
    while start.elapsed() < deadline {
        done = recorded(client, &tenants).await;
        if done >= scenario.apps {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let startup = start.elapsed();
    assert_eq!(done, scenario.apps, "every Application recorded within {deadline:?}");
    let at_start = counters(&metrics).await;
    let startup_throttled = rejected(client).await - rejected_before;
    let startup_reconciles = at_start.reconciles / scenario.apps as f64;

    // Settle (the profile counts, the last status writes), then the churn.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let webhooks = if scenario.signing {
        vec![webhook(client, &tenants[0]).await, webhook(client, &tenants[0]).await]
    } else {
        Vec::new()
    };
    let before = counters(&metrics).await;
    let rejected_churn = rejected(client).await;
    let began = Instant::now();
    let apps: Vec<(Api<DynamicObject>, String)> = tenants
        .iter()
        .flat_map(|t| (0..per_ns).map(|j| (applications(client, &t.ns), format!("app-{j}"))))
        .take(scenario.apps)
        .collect();
    let churner = {
        let apps = apps.clone();
        async move {
            let gap = CHURN_PERIOD / apps.len() as u32;
            let mut tick = tokio::time::interval(gap);
            let mut n = 0usize;
            while began.elapsed() < churn {
                tick.tick().await;
                let (api, name) = &apps[n % apps.len()];
                let patch = json!({"status": {"reconciledAt": format!("2026-01-01T00:{:02}:{:02}Z", (n / 60) % 60, n % 60),
                    "health": {"status": if n.is_multiple_of(2) { "Healthy" } else { "Progressing" }}}});
                let _ = api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await;
                n += 1;
            }
        }
    };
    let reviewer = async {
        let mut latencies = Vec::new();
        if webhooks.is_empty() {
            return latencies;
        }
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        while began.elapsed() < churn {
            tick.tick().await;
            let (http, url, review) = &webhooks[latencies.len() % webhooks.len()];
            let t = Instant::now();
            let resp = http.post(url).header("content-type", "application/json").body(review.clone()).send().await;
            let v: Value = resp.unwrap().json().await.unwrap();
            assert_eq!(v["response"]["allowed"], true, "{v}");
            latencies.push(t.elapsed());
        }
        latencies
    };
    let ((), mut latencies) = futures::future::join(churner, reviewer).await;
    let minutes = began.elapsed().as_secs_f64() / 60.0;
    let per_minute = counters(&metrics).await.minus(before, minutes);
    let throttled_per_minute = (rejected(client).await - rejected_churn) / minutes;
    let rss_mib = rss(controller.pid());
    latencies.sort();
    let webhook_p99 = (!latencies.is_empty()).then(|| latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)]);
    let reviews = latencies.len();
    let recorded_after = recorded(client, &tenants).await;
    assert_eq!(recorded_after, scenario.apps, "nothing lost over the churn");
    drop(controller);

    // Out of the way of the next run: its controller watches the whole cluster.
    for t in &tenants {
        let _ = applications(client, &t.ns).delete_collection(&DeleteParams::default(), &ListParams::default()).await;
        let _ = testing::provenances(client, &t.ns)
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await;
    }
    Figures {
        startup,
        startup_throttled,
        throttled_per_minute,
        startup_reconciles,
        recorded: recorded_after,
        per_minute,
        rss_mib,
        webhook_p99,
        reviews,
    }
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let sizes: Vec<usize> = std::env::var("WEFT_SCALE_SIZES")
        .unwrap_or_else(|_| if bench { "100,1000".into() } else { "50".into() })
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let churn = Duration::from_secs(
        std::env::var("WEFT_SCALE_CHURN_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(if bench {
            120
        } else {
            10
        }),
    );
    let apf = std::env::var("WEFT_TESTENV_APF").as_deref() == Ok("1");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = runtime.block_on(testing::client());
    let largest = sizes.iter().copied().max().unwrap_or(50);
    let mut scenarios: Vec<Scenario> = Vec::new();
    for signing in [false, true] {
        for &apps in &sizes {
            scenarios.push(Scenario { apps, signing, throttled: false });
        }
    }
    if apf {
        scenarios.push(Scenario { apps: largest, signing: true, throttled: true });
    }
    println!(
        "\n{NAMESPACES} namespaces, one profile each; churn: each Application's status rewritten every 30 s for {churn:?}"
    );
    println!(
        "| Applications | pipeline | start → all recorded (reconciles each) | pipeline runs/min | registry calls/min | Rekor requests/min | apiserver requests/min (PATCH) | 429s: start / per min | controller RSS now / peak | webhook p99 (reviews) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for s in scenarios {
        let f = runtime.block_on(run(&client, s, churn));
        let mode = match (s.signing, s.throttled) {
            (false, _) => "source only",
            (true, false) => "sign + attest",
            (true, true) => "sign + attest, throttled (APF, 429)",
        };
        let m = f.per_minute;
        println!(
            "| {} | {mode} | {:.1} s ({:.1}) | {:.1} | {:.1} | {:.1} | {:.0} ({:.0}) | {:.0} / {:.0} | {:.0} / {:.0} MiB | {} |",
            f.recorded,
            f.startup.as_secs_f64(),
            f.startup_reconciles,
            m.runs,
            m.registry,
            m.rekor,
            m.apiserver,
            m.status_writes,
            f.startup_throttled,
            f.throttled_per_minute,
            f.rss_mib.0,
            f.rss_mib.1,
            f.webhook_p99
                .map(|d| format!("{:.2} ms ({})", d.as_secs_f64() * 1e3, f.reviews))
                .unwrap_or_else(|| "-".into()),
        );
    }
}
