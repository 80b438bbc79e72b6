//! Prometheus metrics (OpenMetrics text), process-wide. Labels are small closed sets (outcomes, steps,
//! verdicts, dependencies): never per-object, so cardinality stays bounded however many Applications
//! there are.

use std::sync::LazyLock;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::reason::Dependency;

type Labels = Vec<(&'static str, String)>;

#[derive(Clone)]
struct Buckets;

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        // 1 ms to about 65 s.
        Histogram::new(exponential_buckets(0.001, 2.0, 17))
    }
}

pub struct Metrics {
    registry: Registry,
    reconciles: Family<Labels, Counter>,
    steps: Family<Labels, Histogram, Buckets>,
    verdicts: Family<Labels, Counter>,
    dependency_errors: Family<Labels, Counter>,
    admissions: Family<Labels, Counter>,
    admission_seconds: Family<Labels, Histogram, Buckets>,
    pipeline_runs: Counter,
    reverifications: Counter,
    queue_wait: Histogram,
    apiserver_requests: Family<Labels, Counter>,
    registry_requests: Counter,
    rekor_requests: Counter,
    refused_connections: Counter,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("weft");
    let m = Metrics {
        reconciles: Family::default(),
        steps: Family::new_with_constructor(Buckets),
        verdicts: Family::default(),
        dependency_errors: Family::default(),
        admissions: Family::default(),
        admission_seconds: Family::new_with_constructor(Buckets),
        pipeline_runs: Counter::default(),
        reverifications: Counter::default(),
        queue_wait: Buckets.new_metric(),
        apiserver_requests: Family::default(),
        registry_requests: Counter::default(),
        rekor_requests: Counter::default(),
        refused_connections: Counter::default(),
        registry: Registry::default(),
    };
    registry.register("reconciles", "Application reconciles, by outcome (ok, requeued, error)", m.reconciles.clone());
    registry.register("step_duration_seconds", "How long each pipeline step took", m.steps.clone());
    registry.register("verdicts", "Verdicts recorded, by verdict", m.verdicts.clone());
    registry.register(
        "dependency_errors",
        "Steps left pending by an unavailable dependency (git, registry, rekor, timestamp-authority, fulcio, kubernetes, local)",
        m.dependency_errors.clone(),
    );
    registry.register("admission_reviews", "Admission reviews, by decision", m.admissions.clone());
    registry.register(
        "pipeline_runs",
        "Pipeline runs (verify, render, sign, attest); a revision already recorded does not start one",
        m.pipeline_runs.clone(),
    );
    registry.register(
        "reverifications",
        "Source signatures checked again for a revision already recorded (--reverify-seconds): no render, registry or log call",
        m.reverifications.clone(),
    );
    registry.register(
        "queue_wait_seconds",
        "How long verifications and renders waited for a slot (--concurrency); not part of step durations",
        m.queue_wait.clone(),
    );
    registry.register(
        "apiserver_requests",
        "Requests to the Kubernetes API, by method and status class (429 counted apart)",
        m.apiserver_requests.clone(),
    );
    registry.register(
        "registry_requests",
        "Requests to OCI registries: each manifest, blob, referrers or push operation (token requests aside)",
        m.registry_requests.clone(),
    );
    registry.register("rekor_requests", "HTTP requests to the transparency log", m.rekor_requests.clone());
    registry.register(
        "webhook_refused_connections",
        "Connections the webhook closed at once because it already served its maximum",
        m.refused_connections.clone(),
    );
    registry.register("admission_review_duration_seconds", "Admission review latency", m.admission_seconds.clone());
    Metrics { registry, ..m }
});

pub fn reconciled(outcome: &str) {
    METRICS.reconciles.get_or_create(&vec![("outcome", outcome.to_string())]).inc();
}

pub fn pipeline_run() {
    METRICS.pipeline_runs.inc();
}

pub fn reverification() {
    METRICS.reverifications.inc();
}

pub fn queue_wait(seconds: f64) {
    METRICS.queue_wait.observe(seconds);
}

/// One request to the Kubernetes API; `status` is the HTTP status, or 0 when none came back.
pub fn apiserver_request(method: &str, status: u16) {
    let class = match status {
        0 => "error".to_string(),
        429 => "429".to_string(),
        s => format!("{}xx", s / 100),
    };
    METRICS.apiserver_requests.get_or_create(&vec![("method", method.to_string()), ("status", class)]).inc();
}

pub fn registry_request() {
    METRICS.registry_requests.inc();
}

pub fn rekor_request() {
    METRICS.rekor_requests.inc();
}

pub fn step(step: &str, seconds: f64) {
    METRICS.steps.get_or_create(&vec![("step", step.to_string())]).observe(seconds);
}

pub fn verdict(verdict: &str) {
    METRICS.verdicts.get_or_create(&vec![("verdict", verdict.to_string())]).inc();
}

pub fn dependency_error(dependency: Dependency) {
    METRICS.dependency_errors.get_or_create(&vec![("dependency", dependency.label().to_string())]).inc();
}

pub fn admission(decision: &str, seconds: f64) {
    METRICS.admissions.get_or_create(&vec![("decision", decision.to_string())]).inc();
    METRICS.admission_seconds.get_or_create(&vec![("decision", decision.to_string())]).observe(seconds);
}

pub fn webhook_connection_refused() {
    METRICS.refused_connections.inc();
}

/// The OpenMetrics text.
pub fn text() -> String {
    let mut out = String::new();
    if encode(&mut out, &METRICS.registry).is_err() {
        out.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn metrics_are_encoded_with_bounded_labels() {
        super::verdict("Verified");
        super::step("SourceVerified", 0.004);
        super::admission("denied", 0.0005);
        let text = super::text();
        assert!(text.contains("weft_verdicts_total{verdict=\"Verified\"} 1"), "{text}");
        assert!(text.contains("weft_step_duration_seconds_bucket{le=\"0.004\",step=\"SourceVerified\"} 1"), "{text}");
        assert!(text.contains("weft_admission_reviews_total{decision=\"denied\"} 1"), "{text}");
        super::dependency_error(crate::reason::Dependency::TransparencyLog);
        assert!(super::text().contains("weft_dependency_errors_total{dependency=\"rekor\"} 1"));
    }
}
