//! One probe of one endpoint, by method, with loxilb's semantics (loxilib
//! `serviceprobe.go`). Every method finishes by `deadline`; the UDP method is
//! the one where running into the deadline (silence) counts as success.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio::time::{timeout_at, Instant};

pub use crate::failure::ProbeFailure;
use crate::icmp;
use crate::spec::{ProbeKind, ProbeSpec};

/// Payload loxilb sends in a UDP probe when no request is configured.
pub const UDP_PROBE_PAYLOAD: &[u8] = b"probe";
/// Cap on an HTTP response head, and on a body read for comparison.
const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 1024 * 1024;

/// Runs one probe of `spec` now and returns its delay (round trip for ping,
/// the whole exchange otherwise), or why it failed, within `spec.timeout`.
pub async fn probe_once(spec: &ProbeSpec) -> Result<Duration, ProbeFailure> {
    let start = Instant::now();
    let deadline = start + spec.timeout;
    let timed_out = ProbeFailure::Timeout(spec.timeout);
    match spec.kind {
        ProbeKind::None => Ok(Duration::ZERO),
        // Silence is success for UDP: the method handles its own deadline.
        ProbeKind::Udp => udp(spec, deadline).await.map(|()| start.elapsed()),
        ProbeKind::Ping => match timeout_at(deadline, icmp::ping(spec.host, deadline)).await {
            Ok(r) => r,
            Err(_) => Err(timed_out),
        },
        kind => {
            let fut = async {
                match kind {
                    ProbeKind::Tcp => tcp(spec).await,
                    ProbeKind::Http => http_like(spec, false).await,
                    ProbeKind::Https => http_like(spec, true).await,
                    ProbeKind::Sctp => sctp(spec).await,
                    _ => unreachable!("handled above"),
                }
            };
            match timeout_at(deadline, fut).await {
                Ok(r) => r.map(|()| start.elapsed()),
                Err(_) => Err(timed_out),
            }
        }
    }
}

/// Whether this kernel can create SCTP sockets (checked once per process).
pub fn sctp_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        Socket::new(
            Domain::IPV4,
            Type::STREAM,
            Some(Protocol::from(libc::IPPROTO_SCTP)),
        )
        .is_ok()
    })
}

async fn tcp_connect(addr: SocketAddr) -> Result<TcpStream, ProbeFailure> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // Close with RST: thousands of endpoints probed every few seconds would
    // otherwise leave as many TIME_WAIT sockets on the balancer.
    sock.set_zero_linger()?;
    Ok(sock.connect(addr).await?)
}

/// tcp: connect; with both probeReq and probeResp set, send the request and
/// require the reply to start with probeResp. loxilb does one `Read` into a
/// buffer pre-filled with probeResp, which also passes a reply cut short by
/// the network; we read until probeResp's length (or EOF), so only a reply that
/// really starts with probeResp passes.
async fn tcp(spec: &ProbeSpec) -> Result<(), ProbeFailure> {
    let mut s = tcp_connect(SocketAddr::new(spec.host, spec.port)).await?;
    if !spec.req.is_empty() && !spec.resp.is_empty() {
        s.write_all(spec.req.as_bytes()).await?;
        expect_prefix(&mut s, spec.resp.as_bytes()).await?;
    }
    Ok(())
}

async fn expect_prefix<R: AsyncRead + Unpin>(r: &mut R, want: &[u8]) -> Result<(), ProbeFailure> {
    let mut got = vec![0u8; want.len()];
    let mut n = 0;
    while n < want.len() {
        let k = r.read(&mut got[n..]).await?;
        if k == 0 {
            break;
        }
        if got[n..n + k] != want[n..n + k] {
            return Err(ProbeFailure::Mismatch);
        }
        n += k;
    }
    if n == want.len() {
        Ok(())
    } else {
        Err(ProbeFailure::Mismatch)
    }
}

/// udp: send probeReq (or "probe") on a connected socket. A reply is up; ICMP
/// port unreachable (ECONNREFUSED on the connected socket) is down; silence
/// until the deadline is up, as in loxilb. With probeReq and probeResp both
/// set, a reply starting with probeResp is required (silence is down).
async fn udp(spec: &ProbeSpec, deadline: Instant) -> Result<(), ProbeFailure> {
    let bind: SocketAddr = match spec.host {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = UdpSocket::bind(bind).await?;
    s.connect(SocketAddr::new(spec.host, spec.port)).await?;
    let want_reply = !spec.req.is_empty() && !spec.resp.is_empty();
    let payload = if spec.req.is_empty() {
        UDP_PROBE_PAYLOAD
    } else {
        spec.req.as_bytes()
    };
    s.send(payload).await?;
    let mut buf = vec![0u8; 2048];
    match timeout_at(deadline, s.recv(&mut buf)).await {
        Ok(Ok(n)) if want_reply => {
            if buf[..n].starts_with(spec.resp.as_bytes()) {
                Ok(())
            } else {
                Err(ProbeFailure::Mismatch)
            }
        }
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.into()),
        Err(_) if want_reply => Err(ProbeFailure::Timeout(spec.timeout)),
        Err(_) => Ok(()),
    }
}

/// The request path: probeReq with one leading '/'.
fn path(req: &str) -> String {
    format!("/{}", req.trim_start_matches('/'))
}

fn authority(host: IpAddr, port: u16) -> String {
    match host {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

fn port_or(spec: &ProbeSpec, default: u16) -> u16 {
    if spec.port == 0 {
        default
    } else {
        spec.port
    }
}

/// Redirects followed, as Go's `http.Client` (which loxilb uses) does.
const MAX_REDIRECTS: usize = 10;

/// Where one HTTP request goes; a redirect replaces it.
#[derive(Debug, Clone)]
struct Target {
    tls: bool,
    addr: SocketAddr,
    /// `Host` header: the URL's authority.
    authority: String,
    path: String,
    /// TLS server name when the URL named a host rather than an address.
    sni: Option<String>,
}

impl Target {
    /// The target of a `Location` (RFC 9110 §10.2.2): an absolute http(s)
    /// URL (a host name is resolved), an absolute path, or a path relative
    /// to the current one.
    async fn follow(&self, location: &str) -> Result<Target, ProbeFailure> {
        let location = location.split('#').next().unwrap_or_default();
        let (tls, rest) = if let Some(r) = location.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = location.strip_prefix("https://") {
            (true, r)
        } else {
            let path = if location.starts_with('/') {
                location.to_string()
            } else {
                let dir = &self.path[..=self.path.rfind('/').unwrap_or(0)];
                format!("{dir}{location}")
            };
            return Ok(Target {
                path,
                ..self.clone()
            });
        };
        let (auth, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        let bad = ProbeFailure::BadHttp("bad redirect location");
        let (host, port) = match auth.strip_prefix('[') {
            Some(r) => {
                let end = r.find(']').ok_or(bad.clone())?;
                let port = match r[end + 1..].strip_prefix(':') {
                    Some(p) => p.parse().map_err(|_| bad.clone())?,
                    None => {
                        if tls {
                            443
                        } else {
                            80
                        }
                    }
                };
                (&r[..end], port)
            }
            None => match auth.rsplit_once(':') {
                Some((h, p)) => (h, p.parse().map_err(|_| bad.clone())?),
                None => (auth, if tls { 443 } else { 80 }),
            },
        };
        let (ip, sni) = match host.parse::<IpAddr>() {
            Ok(ip) => (ip, None),
            Err(_) => {
                let addr = tokio::net::lookup_host((host, port))
                    .await?
                    .next()
                    .ok_or(ProbeFailure::BadHttp("redirect host does not resolve"))?;
                (addr.ip(), Some(host.to_string()))
            }
        };
        Ok(Target {
            tls,
            addr: SocketAddr::new(ip, port),
            authority: auth.to_string(),
            path,
            sni,
        })
    }
}

/// http: `HEAD http://host:port/<probeReq>`; status 200 is up.
///
/// https: `GET https://host:port/<probeReq>` over TLS; status 200, and the body
/// equal to probeResp when set, is up. The server's certificate is NOT
/// verified: a probe checks that the endpoint is alive, not who it is, and
/// backends commonly use self-signed certificates (loxilb's Go client does the
/// same with `InsecureSkipVerify`). The handshake's signatures are still checked.
///
/// Both follow up to 10 redirects (301, 302, 303, 307, 308) keeping the
/// method, as loxilb's Go `http.Client` does for HEAD and GET.
async fn http_like(spec: &ProbeSpec, tls: bool) -> Result<(), ProbeFailure> {
    let port = port_or(spec, if tls { 443 } else { 80 });
    let mut target = Target {
        tls,
        addr: SocketAddr::new(spec.host, port),
        authority: authority(spec.host, port),
        path: path(&spec.req),
        sni: None,
    };
    let method = if tls { "GET" } else { "HEAD" };
    let want_body = tls && !spec.resp.is_empty();
    for _ in 0..=MAX_REDIRECTS {
        let r = request(&target, method, want_body).await?;
        if matches!(r.status, 301 | 302 | 303 | 307 | 308) {
            if let Some(loc) = r.location {
                target = target.follow(&loc).await?;
                continue;
            }
        }
        if r.status != 200 {
            return Err(ProbeFailure::Status(r.status));
        }
        if want_body && r.body != spec.resp.as_bytes() {
            return Err(ProbeFailure::Mismatch);
        }
        return Ok(());
    }
    Err(ProbeFailure::BadHttp("more than 10 redirects"))
}

async fn request(t: &Target, method: &str, want_body: bool) -> Result<Response, ProbeFailure> {
    let mut tcp = tcp_connect(t.addr).await?;
    if !t.tls {
        return exchange(&mut tcp, method, &t.authority, &t.path, want_body).await;
    }
    let name = match &t.sni {
        Some(n) => rustls::pki_types::ServerName::try_from(n.clone())
            .map_err(|_| ProbeFailure::BadHttp("bad redirect host name"))?,
        None => rustls::pki_types::ServerName::IpAddress(t.addr.ip().into()),
    };
    let mut s = tokio_rustls::TlsConnector::from(crate::tls::client_config())
        .connect(name, tcp)
        .await
        .map_err(|e| ProbeFailure::Tls(e.to_string()))?;
    exchange(&mut s, method, &t.authority, &t.path, want_body).await
}

/// What `exchange` learnt.
struct Response {
    status: u16,
    location: Option<String>,
    body: Vec<u8>,
}

/// Minimal HTTP/1.1 client exchange (RFC 9112): one request with
/// `Connection: close`, the status code (§4) and, when asked for, the body
/// framed by Content-Length, chunked coding (§7.1) or the end of the connection (§6.3).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    method: &str,
    authority: &str,
    path: &str,
    want_body: bool,
) -> Result<Response, ProbeFailure> {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: xlb-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n",
    );
    s.write_all(request.as_bytes()).await?;
    s.flush().await?;
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(ProbeFailure::BadHttp("header too long"));
        }
        let mut chunk = [0u8; 2048];
        let n = read_tolerant(s, &mut chunk).await?;
        if n == 0 {
            return Err(ProbeFailure::BadHttp(
                "connection closed before the header ended",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| ProbeFailure::BadHttp("header not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(ProbeFailure::BadHttp("not an HTTP/1.x status line"));
    }
    let status: u16 = parts
        .next()
        .and_then(|c| c.parse().ok())
        .ok_or(ProbeFailure::BadHttp("bad status code"))?;
    let mut content_length = None;
    let mut chunked = false;
    let mut location = None;
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            let (k, v) = (k.trim(), v.trim());
            if k.eq_ignore_ascii_case("content-length") {
                content_length = Some(
                    v.parse::<usize>()
                        .map_err(|_| ProbeFailure::BadHttp("bad Content-Length"))?,
                );
            } else if k.eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
            {
                chunked = true;
            } else if k.eq_ignore_ascii_case("location") {
                location = Some(v.to_string());
            }
        }
    }
    let mut r = Response {
        status,
        location,
        body: Vec::new(),
    };
    if !want_body || (300..400).contains(&status) {
        return Ok(r);
    }
    let mut rest = buf.split_off(head_end);
    if chunked {
        r.body = read_chunked(s, rest).await?;
        return Ok(r);
    }
    let limit = content_length.unwrap_or(MAX_BODY).min(MAX_BODY);
    while rest.len() < limit {
        let mut chunk = [0u8; 4096];
        let n = read_tolerant(s, &mut chunk).await?;
        if n == 0 {
            break;
        }
        rest.extend_from_slice(&chunk[..n]);
    }
    if let Some(len) = content_length {
        if rest.len() < len {
            return Err(ProbeFailure::BadHttp("body shorter than Content-Length"));
        }
        rest.truncate(len);
    }
    r.body = rest;
    Ok(r)
}

/// Reads, treating a TLS peer that closes without close_notify as EOF: many
/// small servers do, and the framing above already tells complete from short.
async fn read_tolerant<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut [u8],
) -> Result<usize, ProbeFailure> {
    match s.read(buf).await {
        Ok(n) => Ok(n),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
        Err(e) => Err(e.into()),
    }
}

async fn read_chunked<S: AsyncRead + Unpin>(
    s: &mut S,
    mut buf: Vec<u8>,
) -> Result<Vec<u8>, ProbeFailure> {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        // Chunk-size line.
        let line_end = loop {
            if let Some(i) = find(&buf[pos..], b"\r\n") {
                break pos + i;
            }
            if buf.len() - pos > MAX_HEAD || !fill(s, &mut buf).await? {
                return Err(ProbeFailure::BadHttp("bad chunk header"));
            }
        };
        let size_str = std::str::from_utf8(&buf[pos..line_end])
            .map_err(|_| ProbeFailure::BadHttp("bad chunk size"))?;
        let size_str = size_str.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_str, 16)
            .map_err(|_| ProbeFailure::BadHttp("bad chunk size"))?;
        pos = line_end + 2;
        if size == 0 {
            return Ok(body);
        }
        if body.len() + size > MAX_BODY {
            return Err(ProbeFailure::BadHttp("body too large"));
        }
        while buf.len() < pos + size + 2 {
            if !fill(s, &mut buf).await? {
                return Err(ProbeFailure::BadHttp("chunk cut short"));
            }
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        pos += size + 2;
    }
}

async fn fill<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> Result<bool, ProbeFailure> {
    let mut chunk = [0u8; 4096];
    let n = read_tolerant(s, &mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n > 0)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// sctp: an SCTP association (one-to-one style socket, RFC 6458 §3) set up
/// within the timeout, then closed.
async fn sctp(spec: &ProbeSpec) -> Result<(), ProbeFailure> {
    let domain = match spec.host {
        IpAddr::V4(_) => Domain::IPV4,
        IpAddr::V6(_) => Domain::IPV6,
    };
    let sock = Socket::new(
        domain,
        Type::STREAM,
        Some(Protocol::from(libc::IPPROTO_SCTP)),
    )
    .map_err(|e| match e.raw_os_error() {
        Some(libc::EPROTONOSUPPORT | libc::ESOCKTNOSUPPORT | libc::EAFNOSUPPORT) => {
            ProbeFailure::SctpUnsupported
        }
        _ => e.into(),
    })?;
    stream_connect(sock, SocketAddr::new(spec.host, spec.port)).await
}

/// Non-blocking connect of a stream socket of any protocol, closed with an
/// abort (RST / SCTP ABORT) afterwards. Separate from `sctp` so the same path
/// is tested over TCP on kernels without SCTP.
async fn stream_connect(sock: Socket, addr: SocketAddr) -> Result<(), ProbeFailure> {
    sock.set_nonblocking(true)?;
    sock.set_linger(Some(Duration::ZERO))?;
    match sock.connect(&SockAddr::from(addr)) {
        Ok(()) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    let fd = crate::sys::async_socket(sock)?;
    loop {
        let mut guard = fd.writable().await?;
        guard.clear_ready();
        if let Some(e) = fd.get_ref().take_error()? {
            return Err(e.into());
        }
        // Writable with no error and a peer address: the association is up.
        if fd.get_ref().peer_addr().is_ok() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests;
