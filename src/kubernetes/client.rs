//! The Kubernetes client Weft's long-running processes use: kube's own (which retries a 429, 503 or 504
//! as the apiserver asks), with every request counted as the caller sees it
//! (`weft_apiserver_requests_total`, by status), every request but a watch given a deadline, so a
//! stalled or throttling apiserver fails a reconcile (which is retried with backoff) instead of hanging
//! it, and, for the controller, a client-side rate limit as client-go's (kube has none), so a thousand
//! Applications starting at once queue here rather than in the apiserver's priority-and-fairness queues.

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use hyper::{Request, Response};
use kube::client::{Body, ClientBuilder};
use kube::{Client, Config};
use tower::{Layer, Service};

/// How long a request (not a watch) may take, kube's own retries included, from connecting to the end
/// of its headers.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Requests per second and burst, as client-go's `QPS` and `Burst`; watches are not limited.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct RateLimit {
    /// Requests per second to the Kubernetes API, sustained (watches aside).
    #[arg(long, env = "WEFT_KUBE_API_QPS", default_value_t = 200)]
    pub kube_api_qps: u32,
    /// Requests to the Kubernetes API allowed at once above the sustained rate.
    #[arg(long, env = "WEFT_KUBE_API_BURST", default_value_t = 400)]
    pub kube_api_burst: u32,
}

/// The in-cluster or kubeconfig client, counted and with deadlines; rate limited when `limit` is given.
pub async fn client(limit: Option<RateLimit>) -> Result<Client, kube::Error> {
    let config = Config::infer().await.map_err(kube::Error::InferConfig)?;
    let limiter = limit.map(|l| {
        let qps = NonZeroU32::new(l.kube_api_qps).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(l.kube_api_burst).unwrap_or(qps);
        Arc::new(RateLimiter::direct(Quota::per_second(qps).allow_burst(burst)))
    });
    Ok(ClientBuilder::try_from(config)?.with_layer(&Counted { limiter }).build())
}

#[derive(Clone)]
struct Counted {
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
}

impl<S> Layer<S> for Counted {
    type Service = CountedService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CountedService { inner, limiter: self.limiter.clone() }
    }
}

#[derive(Clone)]
pub struct CountedService<S> {
    inner: S,
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
}

impl<S, B> Service<Request<Body>> for CountedService<S>
where
    S: Service<Request<Body>, Response = Response<B>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = Response<B>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<B>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let method = method_label(req.method());
        let watch = req.uri().query().is_some_and(is_watch);
        // The inner service is ready now (poll_ready): call it now, and hold the sending back until the
        // limiter lets it go (hyper sends when the future is first polled).
        let limiter = self.limiter.clone().filter(|_| !watch);
        let call = self.inner.call(req);
        Box::pin(async move {
            if let Some(l) = limiter {
                l.until_ready().await;
            }
            let answered = if watch {
                call.await.map_err(Into::into)
            } else {
                match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
                    Ok(r) => r.map_err(Into::into),
                    Err(_) => Err(format!("the Kubernetes API did not answer within {REQUEST_TIMEOUT:?}").into()),
                }
            };
            crate::metrics::apiserver_request(method, answered.as_ref().map(|r| r.status().as_u16()).unwrap_or(0));
            answered
        })
    }
}

/// A closed set, so the metric's labels stay bounded.
fn method_label(m: &hyper::Method) -> &'static str {
    match *m {
        hyper::Method::GET => "GET",
        hyper::Method::POST => "POST",
        hyper::Method::PUT => "PUT",
        hyper::Method::PATCH => "PATCH",
        hyper::Method::DELETE => "DELETE",
        _ => "OTHER",
    }
}

fn is_watch(query: &str) -> bool {
    query.split('&').any(|p| p == "watch=true" || p == "watch=1")
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_watches_go_without_a_deadline() {
        assert!(super::is_watch("labelSelector=a&watch=true&timeoutSeconds=290"));
        assert!(!super::is_watch("watchx=true&limit=500"));
        assert!(!super::is_watch("fieldSelector=watch%3Dtrue"));
    }
}
