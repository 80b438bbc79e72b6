//! What the benchmarks that need the test environment share.
#![allow(dead_code)]

use std::process::Command;
use std::time::Duration;

/// A peer's address from the test environment; `bench` names the benchmark for the message.
pub fn env(var: &str, bench: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run this with `tests/env/testenv.sh run -- cargo bench --bench {bench}`")
    })
}

/// Runs a command that must succeed; its standard output.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn median(mut d: Vec<Duration>) -> Duration {
    d.sort();
    d[d.len() / 2]
}

/// The webhook served over TLS on a loopback port, as in production, with `checker`; a client that
/// trusts its certificate, and the URL to post reviews to.
pub async fn serve_webhook(checker: std::sync::Arc<weft::admission::webhook::Checker>) -> (reqwest::Client, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let config = weft::admission::webhook::certs::server_config(
        cert.cert.pem().as_bytes(),
        cert.signing_key.serialize_pem().as_bytes(),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/validate", listener.local_addr().unwrap());
    tokio::spawn(weft::admission::webhook::serve(
        listener,
        std::sync::Arc::new(std::sync::RwLock::new(config)),
        checker,
        Default::default(),
        std::future::pending(),
    ));
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    (http, url)
}
