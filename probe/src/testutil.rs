//! Test fixtures: real servers on loopback (TCP, UDP, HTTP, HTTPS), and
//! async code run inside a namespace of a test-kit lab.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

/// Held by the tests that measure time or create namespaces, so that they do
/// not disturb each other when the harness runs tests in parallel.
pub static TIMING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A TCP listener that accepts and drops connections; `close` stops it.
pub struct TcpServer {
    pub addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl TcpServer {
    pub async fn start(addr: SocketAddr) -> Self {
        let l = TcpListener::bind(addr).await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                if let Ok((s, _)) = l.accept().await {
                    drop(s);
                }
            }
        });
        TcpServer {
            addr,
            task: Some(task),
        }
    }

    /// Stops accepting and closes the listening socket (awaits its drop).
    pub async fn close(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// A TCP server answering each connection's first read with `reply`.
pub async fn tcp_reply_server(reply: &'static [u8]) -> (SocketAddr, JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 256];
                if s.read(&mut buf).await.unwrap_or(0) > 0 {
                    let _ = s.write_all(reply).await;
                }
            });
        }
    });
    (addr, task)
}

/// A UDP echo server.
pub async fn udp_echo() -> (SocketAddr, JoinHandle<()>) {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = s.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        loop {
            if let Ok((n, from)) = s.recv_from(&mut buf).await {
                let _ = s.send_to(&buf[..n], from).await;
            }
        }
    });
    (addr, task)
}

/// Behaviour of the test HTTP server, changeable while it runs.
#[derive(Default)]
pub struct HttpKnobs {
    pub status: AtomicU16,
    pub body: Mutex<String>,
    /// Requests seen, as "METHOD /path".
    pub seen: Mutex<Vec<String>>,
    pub chunked: std::sync::atomic::AtomicBool,
    /// (path, Location): answer requests for path with 301 to Location.
    pub redirects: Mutex<Vec<(String, String)>>,
}

/// Serves one HTTP/1.1 request: `knobs.status` for `path`, 404 elsewhere.
pub async fn serve_http<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    path: &str,
    knobs: &HttpKnobs,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let mut parts = head.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let p = parts.next().unwrap_or_default().to_string();
    knobs.seen.lock().unwrap().push(format!("{method} {p}"));
    let redirect = knobs
        .redirects
        .lock()
        .unwrap()
        .iter()
        .find(|r| r.0 == p)
        .map(|r| r.1.clone());
    if let Some(loc) = redirect {
        let resp =
            format!("HTTP/1.1 301 Moved\r\nLocation: {loc}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        let _ = s.write_all(resp.as_bytes()).await;
        let _ = s.shutdown().await;
        return;
    }
    let (status, body) = if p == path {
        (
            knobs.status.load(Ordering::SeqCst),
            knobs.body.lock().unwrap().clone(),
        )
    } else {
        (404, "not found".to_string())
    };
    let chunked = knobs.chunked.load(Ordering::SeqCst);
    let mut resp = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
    if chunked {
        resp.push_str("Transfer-Encoding: chunked\r\n\r\n");
    } else {
        resp.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    }
    if method != "HEAD" {
        if chunked {
            // Two chunks, to exercise reassembly.
            let (a, b) = body.split_at(body.len() / 2);
            for part in [a, b] {
                if !part.is_empty() {
                    resp.push_str(&format!("{:x};ext=1\r\n{part}\r\n", part.len()));
                }
            }
            resp.push_str("0\r\n\r\n");
        } else {
            resp.push_str(&body);
        }
    }
    let _ = s.write_all(resp.as_bytes()).await;
    let _ = s.shutdown().await;
}

/// A plain HTTP server on 127.0.0.1.
pub async fn http_server(path: &'static str) -> (SocketAddr, Arc<HttpKnobs>, JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let knobs = Arc::new(HttpKnobs::default());
    knobs.status.store(200, Ordering::SeqCst);
    let k = knobs.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let k = k.clone();
            tokio::spawn(async move { serve_http(s, path, &k).await });
        }
    });
    (addr, knobs, task)
}

/// An HTTPS server on 127.0.0.1 with a fresh self-signed certificate.
pub async fn https_server(path: &'static str) -> (SocketAddr, Arc<HttpKnobs>, JoinHandle<()>) {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let ck = rcgen::generate_simple_self_signed(vec!["xlb-test.invalid".to_string()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()));
    let cfg = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let knobs = Arc::new(HttpKnobs::default());
    knobs.status.store(200, Ordering::SeqCst);
    let k = knobs.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let (k, acceptor) = (k.clone(), acceptor.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(s).await {
                    serve_http(tls, path, &k).await;
                }
            });
        }
    });
    (addr, knobs, task)
}

/// Runs `f` on a thread inside namespace `ns`, with its own current-thread
/// runtime: every socket it opens lives in the namespace.
pub fn run_in<F, Fut, T>(ns: &xlb_testkit::Netns, f: F) -> T
where
    F: FnOnce() -> Fut + Send,
    Fut: std::future::Future<Output = T>,
    T: Send,
{
    ns.run(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(f())
    })
}
