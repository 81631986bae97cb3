#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::*;
use crate::testutil::*;

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn spec(addr: SocketAddr, kind: ProbeKind) -> ProbeSpec {
    let mut s = ProbeSpec::new(addr.ip(), kind, addr.port());
    s.timeout = Duration::from_millis(500);
    s
}

#[tokio::test]
async fn tcp_detects_closed_then_reopened_listener() {
    let mut srv = TcpServer::start("127.0.0.1:0".parse().unwrap()).await;
    let s = spec(srv.addr, ProbeKind::Tcp);
    assert!(probe_once(&s).await.is_ok());
    srv.close().await;
    assert_eq!(probe_once(&s).await, Err(ProbeFailure::Refused));
    let _srv = TcpServer::start(srv.addr).await;
    assert!(probe_once(&s).await.is_ok());
}

#[tokio::test]
async fn tcp_request_reply_prefix() {
    let (addr, _t) = tcp_reply_server(b"PONG hello").await;
    let mut s = spec(addr, ProbeKind::Tcp);
    s.req = "PING".into();
    s.resp = "PONG".into();
    assert!(probe_once(&s).await.is_ok());
    s.resp = "PONG hello".into();
    assert!(probe_once(&s).await.is_ok());
    s.resp = "PANG".into();
    assert_eq!(probe_once(&s).await, Err(ProbeFailure::Mismatch));
    // A reply shorter than probeResp fails (loxilb's pre-filled buffer would pass it).
    s.resp = "PONG hello world".into();
    assert_eq!(probe_once(&s).await, Err(ProbeFailure::Mismatch));
    // Only the request without resp: a plain connect check.
    s.resp.clear();
    assert!(probe_once(&s).await.is_ok());
}

#[tokio::test]
async fn udp_reply_up_port_unreachable_down_silence_up() {
    let (echo, _t) = udp_echo().await;
    assert!(probe_once(&spec(echo, ProbeKind::Udp)).await.is_ok());

    // A port nobody listens on: the kernel answers ICMP port unreachable.
    let closed = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    assert_eq!(
        probe_once(&spec(closed, ProbeKind::Udp)).await,
        Err(ProbeFailure::Refused)
    );

    // A socket that reads but never answers: silence counts as up, after the timeout.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut s = spec(silent.local_addr().unwrap(), ProbeKind::Udp);
    s.timeout = Duration::from_millis(200);
    let d = probe_once(&s).await.unwrap();
    assert!(d >= Duration::from_millis(190), "waited {d:?}");
    let mut buf = [0u8; 16];
    let n = silent.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], UDP_PROBE_PAYLOAD, "loxilb sends \"probe\"");
}

#[tokio::test]
async fn udp_request_reply() {
    let (echo, _t) = udp_echo().await;
    let mut s = spec(echo, ProbeKind::Udp);
    s.req = "hello there".into();
    s.resp = "hello".into();
    assert!(probe_once(&s).await.is_ok());
    s.resp = "bye".into();
    assert_eq!(probe_once(&s).await, Err(ProbeFailure::Mismatch));
    // With a reply required, silence is down.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut s2 = spec(silent.local_addr().unwrap(), ProbeKind::Udp);
    s2.req = "x".into();
    s2.resp = "y".into();
    s2.timeout = Duration::from_millis(100);
    assert!(matches!(
        probe_once(&s2).await,
        Err(ProbeFailure::Timeout(_))
    ));
}

#[tokio::test]
async fn http_head_status_and_path() {
    let (addr, knobs, _t) = http_server("/healthz").await;
    let mut s = spec(addr, ProbeKind::Http);
    s.req = "healthz".into();
    assert!(probe_once(&s).await.is_ok());
    assert_eq!(knobs.seen.lock().unwrap().last().unwrap(), "HEAD /healthz");
    knobs.status.store(503, Ordering::SeqCst);
    assert_eq!(probe_once(&s).await, Err(ProbeFailure::Status(503)));
    knobs.status.store(200, Ordering::SeqCst);
    assert!(probe_once(&s).await.is_ok());
    s.req = "other".into();
    assert_eq!(probe_once(&s).await, Err(ProbeFailure::Status(404)));
    // Nothing listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    assert_eq!(
        probe_once(&spec(closed, ProbeKind::Http)).await,
        Err(ProbeFailure::Refused)
    );
}

#[tokio::test]
async fn http_and_https_follow_redirects_like_go() {
    let (addr, knobs, _t) = http_server("/healthz").await;
    *knobs.redirects.lock().unwrap() = vec![
        ("/old".into(), "/healthz".into()),
        ("/dir/rel".into(), "sub".into()),
        ("/dir/sub".into(), "/healthz".into()),
        ("/abs".into(), format!("http://{addr}/healthz")),
        ("/twice".into(), "/old".into()),
        ("/loop".into(), "/loop".into()),
        ("/gone".into(), "/missing".into()),
    ];
    let mut s = spec(addr, ProbeKind::Http);
    for ok in ["old", "abs", "twice", "dir/rel"] {
        s.req = ok.into();
        assert_eq!(probe_once(&s).await.map(|_| ()), Ok(()), "{ok}");
    }
    assert!(
        knobs
            .seen
            .lock()
            .unwrap()
            .iter()
            .all(|r| r.starts_with("HEAD ")),
        "method kept"
    );
    s.req = "gone".into();
    assert_eq!(probe_once(&s).await, Err(ProbeFailure::Status(404)));
    s.req = "loop".into();
    assert_eq!(
        probe_once(&s).await,
        Err(ProbeFailure::BadHttp("more than 10 redirects"))
    );

    let (addr, knobs, _t) = https_server("/status").await;
    *knobs.body.lock().unwrap() = "alive".into();
    *knobs.redirects.lock().unwrap() = vec![("/".into(), format!("https://{addr}/status"))];
    let mut s = spec(addr, ProbeKind::Https);
    s.resp = "alive".into();
    assert_eq!(probe_once(&s).await.map(|_| ()), Ok(()));
}

#[tokio::test]
async fn http_silent_server_times_out() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let _hold = tokio::spawn(async move {
        let mut conns = Vec::new();
        loop {
            if let Ok((c, _)) = l.accept().await {
                conns.push(c);
            }
        }
    });
    let mut s = spec(addr, ProbeKind::Http);
    s.timeout = Duration::from_millis(200);
    assert_eq!(
        probe_once(&s).await,
        Err(ProbeFailure::Timeout(Duration::from_millis(200)))
    );
}

#[tokio::test]
async fn https_self_signed_status_and_body() {
    let (addr, knobs, _t) = https_server("/status").await;
    *knobs.body.lock().unwrap() = "alive".into();
    let mut s = spec(addr, ProbeKind::Https);
    s.req = "/status".into();
    // Status only.
    assert!(probe_once(&s).await.is_ok());
    assert_eq!(knobs.seen.lock().unwrap().last().unwrap(), "GET /status");
    s.resp = "alive".into();
    assert!(probe_once(&s).await.is_ok());
    *knobs.body.lock().unwrap() = "dead".into();
    assert_eq!(probe_once(&s).await, Err(ProbeFailure::Mismatch));
    // Chunked framing is decoded before comparing.
    *knobs.body.lock().unwrap() = "alive".into();
    knobs.chunked.store(true, Ordering::SeqCst);
    assert!(probe_once(&s).await.is_ok());
    knobs.status.store(500, Ordering::SeqCst);
    assert_eq!(probe_once(&s).await, Err(ProbeFailure::Status(500)));
    // A plain-HTTP server is not an https endpoint (it waits for a request
    // head that never comes, or answers garbage to the ClientHello).
    let (plain, _k, _t2) = http_server("/status").await;
    let mut s2 = spec(plain, ProbeKind::Https);
    s2.timeout = Duration::from_millis(200);
    assert!(probe_once(&s2).await.is_err());
}

#[tokio::test]
async fn ping_loopback_v4_and_v6() {
    for host in [LO, IpAddr::V6(Ipv6Addr::LOCALHOST)] {
        let s = ProbeSpec::new(host, ProbeKind::Ping, 0);
        let rtt = probe_once(&s)
            .await
            .unwrap_or_else(|e| panic!("ping {host}: {e}"));
        assert!(rtt < Duration::from_millis(500));
    }
}

#[tokio::test]
async fn none_is_always_up() {
    // Even towards an address nothing answers on.
    let s = ProbeSpec::new("127.0.2.1".parse().unwrap(), ProbeKind::None, 0);
    assert_eq!(probe_once(&s).await, Ok(Duration::ZERO));
}

#[tokio::test]
async fn sctp_association_or_clear_unsupported_error() {
    use socket2::{Domain, Protocol, Socket, Type};
    if !sctp_supported() {
        let s = ProbeSpec::new(LO, ProbeKind::Sctp, 9);
        assert_eq!(probe_once(&s).await, Err(ProbeFailure::SctpUnsupported));
        assert_eq!(
            ProbeFailure::SctpUnsupported.to_string(),
            "SCTP is unsupported on this kernel"
        );
        return;
    }
    let l = Socket::new(
        Domain::IPV4,
        Type::STREAM,
        Some(Protocol::from(libc::IPPROTO_SCTP)),
    )
    .unwrap();
    l.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
        .unwrap();
    l.listen(16).unwrap();
    let addr = l.local_addr().unwrap().as_socket().unwrap();
    let s = spec(addr, ProbeKind::Sctp);
    assert!(probe_once(&s).await.is_ok());
    drop(l);
    // An INIT to a port without a listener is answered with ABORT.
    assert!(probe_once(&s).await.is_err());
}

/// The connect path SCTP probes use, exercised over TCP (works on any kernel).
#[tokio::test]
async fn stream_connect_path_over_tcp() {
    use socket2::{Domain, Socket, Type};
    let mut srv = TcpServer::start("127.0.0.1:0".parse().unwrap()).await;
    let sock = || Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    assert_eq!(stream_connect(sock(), srv.addr).await, Ok(()));
    srv.close().await;
    assert_eq!(
        stream_connect(sock(), srv.addr).await,
        Err(ProbeFailure::Refused)
    );
}
