//! Weft's bounds on what peers send: registries and Rekor answering too much, or never answering. The
//! peers here are real sockets on loopback, serving exactly the hostile answer under test.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use weft::oci::{MAX_LAYER_BYTES, MAX_MANIFEST_BYTES, OciError, Registry};
use weft::provenance::rekor::{Rekor, RekorError};

/// One answer of the hostile peer.
enum Answer {
    /// A complete response: status, content type and body.
    Full(u16, &'static str, Vec<u8>),
    /// 200 and `n` bytes of body, streamed; `declared` sends a Content-Length first.
    Endless { n: u64, declared: bool },
}

/// An HTTP/1.1 peer on loopback answering each request by its method and path; its address.
fn peer(answer: impl Fn(&str, &str) -> Answer + Send + Sync + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let answer = std::sync::Arc::new(answer);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let answer = answer.clone();
            std::thread::spawn(move || serve(conn, &*answer));
        }
    });
    addr
}

fn serve(mut conn: TcpStream, answer: &dyn Fn(&str, &str) -> Answer) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte).unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut words = head.split_whitespace();
    let (method, path) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
    // A request body (Rekor uploads) is left unread: the connection closes after the answer.
    match answer(method, path) {
        Answer::Full(status, content_type, body) => {
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(&body);
        }
        Answer::Endless { n, declared } => {
            let length = if declared { format!("content-length: {n}\r\n") } else { String::new() };
            let _ =
                write!(conn, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{length}connection: close\r\n\r\n");
            let chunk = vec![b' '; 64 << 10];
            let mut sent = 0;
            // Stops as soon as the client hangs up.
            while sent < n && conn.write_all(&chunk).is_ok() {
                sent += chunk.len() as u64;
            }
        }
    }
}

/// A peer that accepts connections and never answers; its address.
fn silent_peer() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    addr
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

#[tokio::test]
async fn a_manifest_over_4_mib_is_refused_unread_or_read_no_further() {
    let addr = peer(|_, path| match path {
        "/v2/" => Answer::Full(200, "application/json", b"{}".to_vec()),
        p if p.ends_with("/declared") => Answer::Endless { n: MAX_MANIFEST_BYTES + 1, declared: true },
        p if p.ends_with("/streamed") => Answer::Endless { n: 1 << 30, declared: false },
        _ => Answer::Full(404, "application/json", b"{}".to_vec()),
    });
    let registry = Registry::new(&format!("{addr}/shop/cart"), None).unwrap();
    let err = registry.manifest("declared").await.unwrap_err();
    assert!(matches!(err, OciError::TooLarge { .. }), "{err}");
    assert!(!err.reason().retryable());
    assert_eq!(err.reason().as_str(), "RegistryObjectTooLarge");
    let expected = format!("manifest {addr}/shop/cart:declared is 4194305 bytes, more than the 4 MiB Weft reads");
    assert!(err.to_string().contains(&expected), "{err}");
    // Without a declared length, reading stops just past the bound (not at the 1 GiB the peer offers).
    let err = registry.manifest("streamed").await.unwrap_err();
    assert!(err.to_string().contains("is at least") && err.to_string().contains("more than the 4 MiB"), "{err}");
    assert_eq!(registry.manifest("absent").await.unwrap(), None);
}

#[tokio::test]
async fn a_huge_referrers_index_is_not_read_whole() {
    let addr = peer(|_, path| match path {
        "/v2/" => Answer::Full(200, "application/json", b"{}".to_vec()),
        p if p.contains("/referrers/") => Answer::Endless { n: 1 << 30, declared: false },
        _ => Answer::Full(404, "application/json", b"{}".to_vec()),
    });
    let registry = Registry::new(&format!("{addr}/shop/cart"), None).unwrap();
    let digest = weft::oci::digest(b"image");
    let err = registry.referrers(&digest).await.unwrap_err();
    assert!(matches!(err, OciError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains(&format!("the referrers index of {digest} is at least")), "{err}");
}

#[tokio::test]
async fn a_layer_over_the_bound_fails_alone_and_is_never_read_past_its_size() {
    let small = br#"{"payload":"small"}"#.to_vec();
    let small_digest = weft::oci::digest(&small);
    let liar = vec![b'x'; 4096];
    let liar_digest = weft::oci::digest(&liar);
    let (s, l) = (small_digest.clone(), liar_digest.clone());
    let addr = peer(move |_, path| match path {
        "/v2/" => Answer::Full(200, "application/json", b"{}".to_vec()),
        p if p.ends_with(&s) => Answer::Full(200, "application/octet-stream", small.clone()),
        // Serves more than the manifest says the layer holds.
        p if p.ends_with(&l) => Answer::Full(200, "application/octet-stream", liar.clone()),
        p if p.contains("/blobs/") => Answer::Endless { n: 1 << 30, declared: false },
        _ => Answer::Full(404, "application/json", b"{}".to_vec()),
    });
    let registry = Registry::new(&format!("{addr}/shop/cart"), None).unwrap();
    let huge = weft::oci::digest(b"huge");
    let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [
        {"mediaType": "application/vnd.dsse.envelope.v1+json", "digest": huge, "size": MAX_LAYER_BYTES + 1},
        {"mediaType": "application/vnd.dsse.envelope.v1+json", "digest": liar_digest, "size": 100},
        {"mediaType": "application/vnd.dsse.envelope.v1+json", "digest": small_digest, "size": 19},
    ]});
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let each = registry.layers_each(&bytes).await.unwrap();
    assert_eq!(each.len(), 3);
    let declared = each[0].as_ref().unwrap_err().to_string();
    assert!(declared.contains(&format!("layer {huge} of {addr}/shop/cart is 16777217 bytes, more than the 16 MiB")));
    let lied = each[1].as_ref().unwrap_err().to_string();
    assert!(lied.contains("more than the 100 bytes Weft reads"), "{lied}");
    assert_eq!(each[2].as_ref().unwrap().bytes, br#"{"payload":"small"}"#);
    // Read all at once, the first refusal is the answer.
    assert!(matches!(registry.layers(&bytes).await, Err(OciError::TooLarge { .. })));

    let many: Vec<_> = (0..65).map(|_| serde_json::json!({"digest": huge, "size": 1})).collect();
    let bytes = serde_json::to_vec(&serde_json::json!({"layers": many})).unwrap();
    let err = registry.layers_each(&bytes).await.unwrap_err();
    assert!(err.to_string().ends_with("lists 65 layers, more than the 64 Weft reads"), "{err}");
}

#[tokio::test]
async fn a_registry_that_never_answers_fails_within_the_timeout() {
    let addr = silent_peer();
    let registry = Registry::with_timeout(&format!("{addr}/shop/cart"), None, Duration::from_millis(500)).unwrap();
    let started = Instant::now();
    let err = registry.manifest("latest").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(err.reason().retryable(), "a silent registry is unavailable, retried later: {err}");
    assert!(err.to_string().contains("no answer within 0.5 s"), "{err}");
    assert!(matches!(err, OciError::Registry { .. }), "{err}");
    let started = Instant::now();
    let err = registry.referrers(&weft::oci::digest(b"image")).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5) && err.reason().retryable(), "{err}");
}

#[tokio::test]
async fn a_rekor_response_over_the_bound_is_refused() {
    let addr = peer(|_, _| Answer::Endless { n: 1 << 30, declared: false });
    let rekor = Rekor::new(&format!("http://{addr}"));
    let err = rekor.get("0123").await.unwrap_err();
    assert!(matches!(err, RekorError::TooLarge { .. }), "{err}");
    assert!(!err.reason().retryable());
    assert!(err.to_string().contains("more than the 2 MiB Weft reads"), "{err}");
    let err = rekor.upload(&serde_json::json!({"kind": "dsse"})).await.unwrap_err();
    assert!(matches!(err, RekorError::TooLarge { .. }), "{err}");

    let addr = peer(|_, _| Answer::Endless { n: (2 << 20) + 1, declared: true });
    let err = Rekor::new(&format!("http://{addr}")).get("0123").await.unwrap_err();
    assert!(err.to_string().contains("answered with 2097153 bytes"), "{err}");
}

#[tokio::test]
async fn a_rekor_that_never_answers_fails_within_the_timeout() {
    let addr = silent_peer();
    let rekor = Rekor::with_timeout(&format!("http://{addr}"), Duration::from_millis(500));
    let started = Instant::now();
    let err = rekor.get("0123").await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(err.reason().retryable(), "{err}");
}

/// A fetch from a server that accepts the connection and never answers ends, unreachable (retried),
/// within the fetch bound, over each transport.
#[test]
fn a_git_server_that_never_answers_fails_within_the_timeout() {
    let addr = silent_peer();
    let (ip, port) = addr.split_once(':').unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = weft::source::fetch::RepoCache::with_timeout(dir.path(), 4, Duration::from_secs(1));
    let commit = weft::source::CommitId::parse(&"a".repeat(40)).unwrap();
    for url in [
        format!("http://{addr}/shop/cart.git"),
        format!("git://{addr}/shop/cart.git"),
        format!("ssh://git@{ip}:{port}/shop/cart.git"),
    ] {
        let started = Instant::now();
        let err = match cache.open(&url, &[&commit], None, false) {
            Ok(_) => panic!("{url}: fetched from a silent server"),
            Err(e) => e,
        };
        assert!(started.elapsed() < Duration::from_secs(10), "{url}: took {:?}", started.elapsed());
        assert!(err.reason().retryable(), "{url}: {err}");
        assert_eq!(err.reason().as_str(), "RepositoryUnreachable", "{url}: {err}");
    }
}
