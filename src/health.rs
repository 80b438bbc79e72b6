//! `/healthz` and `/readyz` over plain HTTP, for the kubelet's probes, and `/metrics` for Prometheus.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Response, StatusCode};
use tokio::net::TcpListener;

/// Serves until the process ends: `/healthz` is 200 while the process runs, `/readyz` once `ready`.
pub async fn serve(listener: TcpListener, ready: Arc<AtomicBool>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let ready = ready.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let (status, body) = match req.uri().path() {
                    "/healthz" => (StatusCode::OK, "ok".to_string()),
                    "/readyz" if ready.load(Ordering::Relaxed) => (StatusCode::OK, "ok".into()),
                    "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "starting".into()),
                    "/metrics" => (StatusCode::OK, crate::metrics::text()),
                    _ => (StatusCode::NOT_FOUND, "not found".into()),
                };
                let mut r = Response::new(Full::new(Bytes::from(body)));
                *r.status_mut() = status;
                std::future::ready(Ok::<_, std::convert::Infallible>(r))
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
        });
    }
}
