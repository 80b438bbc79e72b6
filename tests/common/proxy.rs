//! A plain-HTTP proxy in front of a real peer that can stop the world at one request: the first
//! request that contains every one of some texts (request line, headers, body) is forwarded, the peer
//! answers, and the answer is held back (the peer did the work; the client never hears of it). The test then kills the client, as a
//! crash at that exact point would. Everything else passes through unchanged.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

#[derive(Default)]
struct Trap {
    /// A request containing all of these is trapped (once).
    armed: Vec<String>,
    sprung: bool,
}

pub struct Proxy {
    pub url: String,
    trap: Arc<Mutex<Trap>>,
    sprung: Arc<Notify>,
}

impl Proxy {
    /// Proxies `upstream` (`host:port`) on a loopback port.
    pub async fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let trap = Arc::new(Mutex::new(Trap::default()));
        let sprung = Arc::new(Notify::new());
        let upstream = upstream.to_string();
        let (t, s) = (trap.clone(), sprung.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, t, s) = (upstream.clone(), t.clone(), s.clone());
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        let _ = connection(client, server, t, s).await;
                    }
                });
            }
        });
        Proxy { url, trap, sprung }
    }

    /// The next request containing every one of `texts` is answered by the peer, but the answer is held.
    pub fn hold_answer_to(&self, texts: &[&str]) {
        *self.trap.lock().unwrap() = Trap { armed: texts.iter().map(|t| t.to_string()).collect(), sprung: false };
    }

    /// Waits until the trap held an answer.
    pub async fn sprung(&self) {
        loop {
            let notified = self.sprung.notified();
            if self.trap.lock().unwrap().sprung {
                return;
            }
            notified.await;
        }
    }

    /// Lets everything through again (answers already held stay lost, as a crash loses them).
    pub fn disarm(&self) {
        *self.trap.lock().unwrap() = Trap::default();
    }
}

/// One client connection: requests are framed (headers, then Content-Length bytes) so the trap can
/// look at each body; answers are copied back unless this connection sprang the trap.
async fn connection(
    mut client: TcpStream,
    server: TcpStream,
    trap: Arc<Mutex<Trap>>,
    sprung: Arc<Notify>,
) -> std::io::Result<()> {
    let (mut from_server, mut to_server) = server.into_split();
    let (mut from_client, mut to_client) = client.split();
    let held = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answers = {
        let held = held.clone();
        async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = from_server.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<(), std::io::Error>(());
                }
                if !held.load(std::sync::atomic::Ordering::SeqCst) {
                    to_client.write_all(&buf[..n]).await?;
                }
            }
        }
    };
    let requests = async move {
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // One whole request: headers, then the body Content-Length announces.
            let request = loop {
                if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&pending[..end]).to_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if pending.len() >= end + 4 + length {
                        break pending.drain(..end + 4 + length).collect::<Vec<u8>>();
                    }
                }
                let n = from_client.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<(), std::io::Error>(());
                }
                pending.extend_from_slice(&buf[..n]);
            };
            let spring = {
                let mut t = trap.lock().unwrap();
                let text = String::from_utf8_lossy(&request);
                let hit = !t.sprung && !t.armed.is_empty() && t.armed.iter().all(|a| text.contains(a.as_str()));
                if hit {
                    t.sprung = true;
                }
                hit
            };
            if spring {
                held.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            to_server.write_all(&request).await?;
            if spring {
                sprung.notify_waiters();
            }
        }
    };
    let _ = futures::future::join(answers, requests).await;
    Ok(())
}
