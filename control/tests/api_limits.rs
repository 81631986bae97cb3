//! The API server's limits against idle, half-sent and stalled clients:
//! over real sockets, in-process ([`server::serve`]) and through the `xlb`
//! binary with the common 1024-descriptor limit, next to a health probe
//! that must not suffer for it.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Harness;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use xlb_control::api::router;
use xlb_control::api::server::{self, Limits};

/// Connect to `to` from the local address `from` (any 127/8 address is this host's).
async fn connect_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(from.parse().expect("ip"), 0))?;
    s.connect(to).await
}

/// One request on a fresh connection from `from`; the answer's status line.
async fn status_line(from: &str, to: SocketAddr, path: &str) -> String {
    let mut s = connect_from(from, to).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer))
        .await
        .expect("answered in time")
        .expect("read");
    let text = String::from_utf8_lossy(&answer).into_owned();
    text.lines().next().unwrap_or("").to_string()
}

/// Whether the server closed `s` (end of stream or reset) within `limit`.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // Whatever it said before closing (hyper may answer 408).
            Ok(Ok(_)) => {}
        }
    }
}

const FLOOD: usize = 1_100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_connections_are_closed_or_refused() {
    let h = Harness::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let limits = Limits {
        max_conns: 300,
        max_per_client: 250,
        header_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_secs(1),
        handshake_timeout: Duration::from_secs(1),
        drain_timeout: Duration::from_secs(1),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(server::serve(
        listener,
        None,
        router(h.api.clone()),
        limits,
        async {
            let _ = stopped.await;
        },
    ));

    // Half the flood says nothing, half stops in the middle of its head.
    let mut flood = Vec::with_capacity(FLOOD);
    for i in 0..FLOOD {
        let mut s = connect_from("127.0.0.1", addr).await.expect("connect");
        if i % 2 == 1 {
            // Refused ones may be closed already: a failed write is fine.
            let _ = s
                .write_all(b"POST /netlox/v1/config/loadbalancer HTTP/1.1\r\nHost: x\r\nContent-Le")
                .await;
        }
        flood.push(s);
    }
    // A body that stalls: the head is complete, the idle timeout ends it.
    let mut stalled = connect_from("127.0.0.3", addr).await.expect("connect");
    stalled
        .write_all(
            b"POST /netlox/v1/config/params HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"logLe",
        )
        .await
        .expect("send");

    // Another client is answered at once, flood or not.
    let start = Instant::now();
    assert_eq!(
        status_line("127.0.0.2", addr, "/netlox/v1").await,
        "HTTP/1.1 200 OK"
    );
    println!(
        "answered during a flood of {FLOOD} in {:?}",
        start.elapsed()
    );

    // Every flood connection is closed: at once over the cap, after the
    // header timeout within it.
    let mut open = 0;
    for s in &mut flood {
        if !closed_within(s, Duration::from_secs(3)).await {
            open += 1;
        }
    }
    assert_eq!(
        open, 0,
        "{open} of {FLOOD} idle or half-sent connections still open"
    );
    assert!(
        closed_within(&mut stalled, Duration::from_secs(3)).await,
        "a stalled body keeps its connection"
    );
    assert_eq!(
        status_line("127.0.0.1", addr, "/netlox/v1").await,
        "HTTP/1.1 200 OK",
        "the flooding address is served again once its connections are gone"
    );
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("the server stops")
        .expect("joined");
}

/// An `xlb run --no-dataplane` child on `port`, with at most `nofile`
/// descriptors (soft and hard, so it cannot raise them).
struct Daemon(Child);

impl Daemon {
    fn start(port: u16, nofile: u32, dir: &std::path::Path) -> Daemon {
        let limit = format!("--nofile={nofile}:{nofile}");
        let child = Command::new("prlimit")
            .args([
                limit.as_str(),
                env!("CARGO_BIN_EXE_xlb"),
                "run",
                "--no-dataplane",
                "--api",
                &format!("0.0.0.0:{port}"),
                "--config-path",
                dir.to_str().expect("utf-8 path"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prlimit xlb run");
        Daemon(child)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn probe_states(port: u16) -> Vec<String> {
    let body = ureq::get(&format!(
        "http://127.0.0.1:{port}/netlox/v1/config/endpoint/all"
    ))
    .timeout(Duration::from_secs(2))
    .call()
    .expect("API answers")
    .into_string()
    .expect("body");
    let body: serde_json::Value = serde_json::from_str(&body).expect("json");
    body["Attr"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["currState"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// With 1024 descriptors, 1,100 idle clients used to take them all: the
/// API stopped answering and the prober, unable to open a socket, marked a
/// live backend down. Now the API holds at most a quarter of them.
#[test]
fn a_flood_neither_silences_the_api_nor_fails_probes() {
    let dir = tempfile::tempdir().expect("tmp");
    let port = xlb_testkit::ports::unused_port().expect("port");
    let _daemon = Daemon::start(port, 1024, dir.path());
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "xlb did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A live backend, probed every second; one failure marks it down.
    let backend = std::net::TcpListener::bind("127.0.0.1:0").expect("backend");
    let backend_port = backend.local_addr().expect("addr").port();
    std::thread::spawn(move || for _ in backend.incoming() {});
    let entry = serde_json::json!({
        "hostName": "127.0.0.1", "name": "live", "probeType": "tcp",
        "probePort": backend_port, "probeDuration": 1, "inactiveReTries": 1,
    });
    ureq::post(&format!(
        "http://127.0.0.1:{port}/netlox/v1/config/endpoint"
    ))
    .set("Content-Type", "application/json")
    .send_string(&entry.to_string())
    .expect("probe entry added");
    let deadline = Instant::now() + Duration::from_secs(10);
    while probe_states(port) != ["ok"] {
        assert!(Instant::now() < deadline, "the probe never succeeded");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The flood, from a few addresses, held open for several probe rounds.
    let mut flood = Vec::with_capacity(FLOOD);
    for i in 0..FLOOD {
        let from: IpAddr = [127, 0, 0, 2 + u8::try_from(i % 3).expect("small")].into();
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        s.bind(&SocketAddr::new(from, 0).into()).expect("bind");
        // Refused connections are closed by the server; that is the point.
        if s.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into())
            .is_ok()
        {
            flood.push(s);
        }
    }
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        assert_eq!(
            probe_states(port),
            ["ok"],
            "the live backend was marked down during the flood"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(flood);
}
