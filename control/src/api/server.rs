//! The API's HTTP server: the accept loop and the connections it serves the
//! router on, with the limits that keep idle or slow clients from starving
//! the API — and, through the descriptor limit, the rest of the daemon.
//!
//! Invariants: at most [`Limits::max_conns`] connections are open at once
//! (TLS handshakes included), at most [`Limits::max_per_client`] from one
//! address; a connection over either cap is accepted and closed at once
//! (not left in the kernel's backlog). A connection whose request head does
//! not arrive within [`Limits::header_timeout`] (idle keep-alive waits
//! included) or that moves no byte for [`Limits::idle_timeout`] is closed.
//! The cap is a quarter of the descriptor limit at most, so the health
//! prober, connection sync and the dataplane keep descriptors of their own
//! however many clients connect. Every request carries its client's
//! address as [`ConnectInfo`], for the audit log.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::server::conn::http1;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio_rustls::TlsAcceptor;

/// What one API server allows its clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once, over all clients.
    pub max_conns: usize,
    /// Connections open at once from one client address.
    pub max_per_client: usize,
    /// Time for a request head to arrive, from the connection's start or
    /// the previous response (a keep-alive connection waiting for its next
    /// request counts).
    pub header_timeout: Duration,
    /// Time a connection may move no byte in either direction.
    pub idle_timeout: Duration,
    /// Time for a TLS handshake.
    pub handshake_timeout: Duration,
    /// Time an open connection may take to finish once the server stops.
    pub drain_timeout: Duration,
}

impl Limits {
    /// The most connections the API serves at once, however high the
    /// descriptor limit (kube-loxilb and loxicmd use a handful).
    pub const MAX_CONNS: usize = 1024;
    /// The fewest, however low the descriptor limit.
    pub const MIN_CONNS: usize = 16;

    /// Limits for a process whose soft descriptor limit is `nofile`: the
    /// API may hold a quarter of it (at most [`Limits::MAX_CONNS`]); the
    /// rest stays for the prober (a socket per probe in flight), connection
    /// sync and the dataplane's sockets and maps.
    pub fn for_fd_limit(nofile: u64) -> Limits {
        let quarter = usize::try_from(nofile / 4).unwrap_or(usize::MAX);
        let max_conns = quarter.clamp(Self::MIN_CONNS, Self::MAX_CONNS);
        Limits {
            max_conns,
            max_per_client: (max_conns / 4).max(Self::MIN_CONNS / 2),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            handshake_timeout: crate::tls::HANDSHAKE_TIMEOUT,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

impl Default for Limits {
    /// Limits for this process's soft descriptor limit now.
    fn default() -> Limits {
        Limits::for_fd_limit(fd_limit())
    }
}

/// A soft descriptor limit to assume when the kernel reports none.
const UNLIMITED_FDS: u64 = 1 << 20;

/// This process's soft descriptor limit (RLIMIT_NOFILE).
pub fn fd_limit() -> u64 {
    let l = getrlimit(Resource::Nofile);
    l.current.unwrap_or(UNLIMITED_FDS)
}

/// Raise the soft descriptor limit to the hard one (systemd and shells
/// start processes at 1024, which a few hundred API clients and the
/// prober's sockets exhaust) and return the soft limit now in force.
pub fn raise_fd_limit() -> u64 {
    let l = getrlimit(Resource::Nofile);
    // "Unlimited" is refused for descriptors (fs.nr_open caps it).
    let want = l.maximum.unwrap_or(UNLIMITED_FDS);
    if l.current.is_some_and(|c| c < want) {
        let raised = Rlimit {
            current: Some(want),
            maximum: l.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(
                soft = ?l.current,
                hard = ?l.maximum,
                "cannot raise the descriptor limit: {e}"
            );
        }
    }
    fd_limit()
}

/// Serve `router` on `listener` (TLS first when `tls` is given) within
/// `limits`, until `shutdown` resolves; then stop accepting and give open
/// connections up to [`Limits::drain_timeout`] to finish.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let slots = Arc::new(Slots::new(&limits));
    let limits = Arc::new(limits);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: back off, do not spin.
                    tracing::warn!("API accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(slot) = slots.take(peer.ip()) else {
            // Dropping the stream closes it: the client learns at once.
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (tls, router, limits, stop) =
            (tls.clone(), router.clone(), limits.clone(), stop_rx.clone());
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                None => connection(stream, peer, router, &limits, stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => connection(tls, peer, router, &limits, stop).await,
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    if tokio::time::timeout(limits.drain_timeout, slots.drained())
        .await
        .is_err()
    {
        tracing::info!(
            open = slots.open(),
            "API stopped with connections still open"
        );
    }
}

/// Serve one connection until it ends, times out or the server stops.
async fn connection<IO>(
    io: IO,
    peer: SocketAddr,
    router: Router,
    limits: &Limits,
    mut stop: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        io,
        activity: activity.clone(),
    });
    let svc = TowerToHyperService::new(router);
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        svc.call(req)
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let mut conn = pin!(builder.serve_connection(io, svc));
    let mut check = tokio::time::interval((limits.idle_timeout / 4).max(Duration::from_millis(10)));
    let mut stopping = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(%peer, "API connection closed: {e}");
                }
                return;
            }
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
            _ = check.tick() => {
                if activity.idle_for() >= limits.idle_timeout {
                    tracing::debug!(%peer, "closing an idle API connection");
                    return;
                }
            }
        }
    }
}

/// Open connections, in all and per client address.
#[derive(Debug)]
struct Slots {
    max: usize,
    per_client: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
    refused: AtomicU64,
    emptied: Notify,
}

/// One open connection's place; given back on drop.
#[derive(Debug)]
struct Slot {
    slots: Arc<Slots>,
    client: IpAddr,
}

impl Slots {
    fn new(limits: &Limits) -> Slots {
        Slots {
            max: limits.max_conns,
            per_client: limits.max_per_client,
            open: Mutex::default(),
            refused: AtomicU64::new(0),
            emptied: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, HashMap<IpAddr, usize>)> {
        // Nothing panics while holding it; the counts are whole anyway.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a connection from `client`, or `None` (counted and
    /// logged) when either cap is reached.
    fn take(self: &Arc<Slots>, client: IpAddr) -> Option<Slot> {
        let mut open = self.lock();
        let (total, by_client) = &mut *open;
        let mine = by_client.get(&client).copied().unwrap_or(0);
        if *total >= self.max || mine >= self.per_client {
            let (total, mine) = (*total, mine);
            drop(open);
            let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
            // 1st, 2nd, 4th, 8th, ...: a flood is visible without flooding the log.
            if n.is_power_of_two() {
                tracing::warn!(
                    %client,
                    open = total,
                    from_client = mine,
                    max = self.max,
                    max_per_client = self.per_client,
                    refused = n,
                    "API connection refused: too many open"
                );
            }
            return None;
        }
        *total += 1;
        *by_client.entry(client).or_insert(0) += 1;
        Some(Slot {
            slots: self.clone(),
            client,
        })
    }

    fn open(&self) -> usize {
        self.lock().0
    }

    /// Resolves once no connection is open.
    async fn drained(&self) {
        loop {
            let emptied = self.emptied.notified();
            let mut emptied = pin!(emptied);
            emptied.as_mut().enable();
            if self.open() == 0 {
                return;
            }
            emptied.await;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.lock();
        let (total, by_client) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(n) = by_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                by_client.remove(&self.client);
            }
        }
        if *total == 0 {
            self.slots.emptied.notify_waiters();
        }
    }
}

/// When a connection last moved a byte.
#[derive(Debug)]
struct Activity {
    start: Instant,
    /// Milliseconds from `start` to the last byte moved.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        last.elapsed()
    }
}

/// An I/O stream that notes when it last moved a byte.
struct Watched<IO> {
    io: IO,
    activity: Arc<Activity>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_most_descriptors_to_the_rest() {
        let l = Limits::for_fd_limit(1024);
        assert_eq!((l.max_conns, l.max_per_client), (256, 64));
        assert_eq!(Limits::for_fd_limit(1 << 20).max_conns, Limits::MAX_CONNS);
        assert_eq!(Limits::for_fd_limit(20).max_conns, Limits::MIN_CONNS);
    }

    #[test]
    fn slots_cap_in_all_and_per_client() {
        let limits = Limits {
            max_conns: 3,
            max_per_client: 2,
            ..Limits::for_fd_limit(1024)
        };
        let slots = Arc::new(Slots::new(&limits));
        let (a, b): (IpAddr, IpAddr) = ([192, 0, 2, 1].into(), [192, 0, 2, 2].into());
        let a1 = slots.take(a).expect("first");
        let _a2 = slots.take(a).expect("second");
        assert!(slots.take(a).is_none(), "a third from one client");
        let _b1 = slots.take(b).expect("another client");
        assert!(slots.take(b).is_none(), "over the total");
        drop(a1);
        assert!(slots.take(b).is_some(), "a place given back is taken again");
        assert_eq!(slots.refused.load(Ordering::Relaxed), 2);
    }
}
