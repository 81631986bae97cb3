//! The TCP connections of connection sync: dialling a peer (handshake,
//! then this node's dump if it holds, then its live events and pings) and
//! serving a peer's connection (handshake, then its frames to the workers).
//!
//! Invariants: at most one connection out per peer (one dialling task each)
//! and one current connection in (a newer one supersedes an older, which
//! stops at its next frame or falls silent); every failure ends the
//! connection, and the dialler reconnects with backoff.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use xlb_dataplane::sync::SyncEvent;

use super::wire::{self, Frame, Hello, Item, Kind, Opener, Sealer, WireError};
use super::{lock, unix_ns, Batch, Shared, PEER_QUEUE};

/// First wait before redialling; doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest wait between dials: a returning peer is reached within it, or
/// as soon as it connects to this node.
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// A TCP connect, and a handshake, must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// A dialler with nothing to send pings this often.
pub(super) const PING_EVERY: Duration = Duration::from_millis(500);
/// A connection in that brings nothing for this long is dead.
const SILENCE_LIMIT: Duration = Duration::from_secs(3);
/// One frame's write must finish within this (a peer that stops reading
/// is dropped rather than waited for).
const WRITE_TIMEOUT: Duration = Duration::from_secs(3);
/// Dead-peer detection below the frames: keepalive probes after 1 s idle,
/// every 1 s, 3 unanswered; unacknowledged data for 3 s ends the
/// connection (TCP_USER_TIMEOUT, RFC 5482).
const KEEPALIVE: Duration = Duration::from_secs(1);
const KEEPALIVE_PROBES: u32 = 3;
const USER_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    /// the socket failed
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// the peer sent something refused
    #[error("{0}")]
    Wire(#[from] WireError),
    /// the handshake, a write, or the peer took too long
    #[error("timed out")]
    Timeout,
    /// the peer fell behind, or this node superseded the connection
    #[error("superseded or overflowed")]
    Dropped,
    /// the peer closed the connection
    #[error("closed by the peer")]
    Closed,
}

fn tune(s: &TcpStream) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    let sock = socket2::SockRef::from(s);
    sock.set_tcp_keepalive(
        &socket2::TcpKeepalive::new()
            .with_time(KEEPALIVE)
            .with_interval(KEEPALIVE)
            .with_retries(KEEPALIVE_PROBES),
    )?;
    sock.set_tcp_user_timeout(Some(USER_TIMEOUT))
}

async fn timed<T>(
    d: Duration,
    f: impl std::future::Future<Output = Result<T, ConnError>>,
) -> Result<T, ConnError> {
    tokio::time::timeout(d, f)
        .await
        .map_err(|_| ConnError::Timeout)?
}

fn nonce() -> [u8; wire::NONCE_LEN] {
    let mut n = [0u8; wire::NONCE_LEN];
    // The OS's generator does not fail on Linux once booted; a failure
    // leaves zeros, which the peer's own fresh nonce still makes unique.
    let _ = SystemRandom::new().fill(&mut n);
    n
}

/// Keep a connection to `peer` up, for ever.
pub(super) async fn dial(shared: Arc<Shared>, peer: usize) {
    let mut backoff = BACKOFF_MIN;
    loop {
        match connect(&shared, peer).await {
            Ok((stream, sealer)) => {
                backoff = BACKOFF_MIN;
                let r = run_out(&shared, peer, stream, sealer).await;
                shared.peers[peer].out_up.store(false, Ordering::Release);
                lock(&shared.outs)[peer] = None;
                if let Err(ConnError::Wire(e)) = r {
                    shared.reject(e);
                }
                tracing::info!(peer = %shared.peers_addr[peer], "sync: connection out ended: {}",
                    r.err().map_or_else(String::new, |e| e.to_string()));
            }
            Err(e) => {
                // A peer that is down is no rejection: only what it said is.
                if let ConnError::Wire(w) = e {
                    shared.reject(w);
                }
                tracing::debug!(peer = %shared.peers_addr[peer], "sync: dialling: {e}");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shared.peers[peer].redial.notified() => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Connect to `peer` from this node's own address and prove the key.
async fn connect(shared: &Shared, peer: usize) -> Result<(TcpStream, Sealer), ConnError> {
    let to = shared.peers_addr[peer];
    let sock = if to.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // From this member's address: the peer checks the source.
    let from = SocketAddr::new(shared.peers_addr[shared.me].ip(), 0);
    if from.is_ipv4() == to.is_ipv4() {
        sock.bind(from)?;
    }
    timed(HANDSHAKE_TIMEOUT, async {
        let mut s = sock.connect(to).await?;
        tune(&s)?;
        let hello = Hello {
            from: u16::try_from(shared.me).map_err(|_| WireError::Foreign)?,
            to: u16::try_from(peer).map_err(|_| WireError::Foreign)?,
            nonce: nonce(),
        };
        s.write_all(&hello.encode()).await?;
        let mut reply = [0u8; wire::REPLY_LEN];
        s.read_exact(&mut reply).await?;
        let (proof, sealer) = wire::check_reply(&shared.key, &hello, &reply)?;
        s.write_all(&proof).await?;
        Ok::<_, ConnError>((s, sealer))
    })
    .await
}

/// Write one sealed frame, counting its bytes in `sent`.
async fn send(
    s: &mut tokio::net::tcp::OwnedWriteHalf,
    sealer: &mut Sealer,
    kind: Kind,
    count: usize,
    body: &[u8],
    sent: &AtomicU64,
) -> Result<(), ConnError> {
    let frame = sealer
        .seal(kind, count, body)
        .ok_or(ConnError::Wire(WireError::Oversized))?;
    tokio::time::timeout(WRITE_TIMEOUT, s.write_all(&frame))
        .await
        .map_err(|_| ConnError::Timeout)??;
    sent.fetch_add(frame.len() as u64, Ordering::Relaxed);
    Ok(())
}

/// A connection out once it is up: register its live queue, dump if this
/// node holds, then send what the pump hands over, and ping when idle.
async fn run_out(
    shared: &Arc<Shared>,
    peer: usize,
    stream: TcpStream,
    mut sealer: Sealer,
) -> Result<(), ConnError> {
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Batch>(PEER_QUEUE);
    // The queue first, then the dump: an event drained after this is on
    // the queue, and whatever the dump misses of the ones drained before
    // was in the table when the dump was taken.
    lock(&shared.outs)[peer] = Some(tx);
    shared.peers[peer].out_up.store(true, Ordering::Release);
    tracing::info!(peer = %shared.peers_addr[peer], "sync: connected out");
    let stats = &shared.peers[peer];
    if shared.holding.holding() {
        let source = shared.source.clone();
        let flows = tokio::task::spawn_blocking(move || source.dump())
            .await
            .unwrap_or_default();
        let n = flows.len();
        let mut items = Vec::with_capacity(wire::MAX_EVENTS);
        for chunk in flows.chunks(wire::MAX_EVENTS) {
            items.clear();
            items.extend(chunk.iter().map(|&f| Item {
                event: SyncEvent::Open(f),
                refresh: true,
            }));
            let body = wire::encode_items(&items);
            send(
                &mut wr,
                &mut sealer,
                Kind::Events,
                items.len(),
                &body,
                &stats.bytes_sent,
            )
            .await?;
            stats.sent.fetch_add(items.len() as u64, Ordering::Relaxed);
            // Paced: the live stream's pump and the other peers run
            // between batches.
            tokio::task::yield_now().await;
        }
        send(
            &mut wr,
            &mut sealer,
            Kind::DumpDone,
            0,
            &[],
            &stats.bytes_sent,
        )
        .await?;
        tracing::info!(peer = %shared.peers_addr[peer], flows = n, "sync: dump sent");
    }
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent_since_ping = false;
    let mut scratch = [0u8; 1];
    loop {
        tokio::select! {
            b = rx.recv() => {
                let Some(b) = b else { return Err(ConnError::Dropped) };
                send(&mut wr, &mut sealer, Kind::Events, b.count, &b.body, &stats.bytes_sent).await?;
                stats.sent.fetch_add(b.count as u64, Ordering::Relaxed);
                sent_since_ping = true;
            }
            _ = ping.tick() => {
                if !std::mem::take(&mut sent_since_ping) {
                    send(&mut wr, &mut sealer, Kind::Ping, 0, &[], &stats.bytes_sent).await?;
                }
            }
            // The listener sends nothing after the handshake: anything
            // readable is its close (or a protocol error).
            r = rd.read(&mut scratch) => {
                return match r {
                    Ok(0) => Err(ConnError::Closed),
                    Ok(_) => Err(ConnError::Wire(WireError::Malformed)),
                    Err(e) => Err(e.into()),
                };
            }
        }
    }
}

/// Connections in at once at most: each member's current one, the ones it
/// is replacing, and handshakes (which end within [`HANDSHAKE_TIMEOUT`]).
/// More is someone else's flood; they are closed at once.
const MAX_CONNS_IN: usize = 64;

/// Accept connections for ever; each runs in a task of this one, so that
/// stopping it closes them all.
pub(super) async fn listen(shared: Arc<Shared>, listener: TcpListener) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            a = listener.accept() => match a {
                Ok((_, from)) if conns.len() >= MAX_CONNS_IN => {
                    tracing::debug!(%from, "sync: too many connections in; closed");
                }
                Ok((s, from)) => {
                    conns.spawn(serve(shared.clone(), s, from));
                }
                Err(e) => {
                    tracing::warn!("sync: accepting: {e}");
                    tokio::time::sleep(BACKOFF_MIN).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// One connection in: the handshake, then its frames until it fails.
async fn serve(shared: Arc<Shared>, mut s: TcpStream, from: SocketAddr) {
    let _ = tune(&s);
    let (peer, opener) = match timed(HANDSHAKE_TIMEOUT, accept(&shared, &mut s, from)).await {
        Ok(a) => a,
        Err(e) => {
            count_in(&shared, &e);
            tracing::info!(%from, "sync: connection in refused: {e}");
            return;
        }
    };
    let state = &shared.peers[peer];
    let gen = state.inbound_gen.fetch_add(1, Ordering::AcqRel) + 1;
    state.dump_complete.store(false, Ordering::Release);
    state.in_up.store(true, Ordering::Release);
    if !state.out_up.load(Ordering::Acquire) {
        state.redial.notify_one();
    }
    shared.heard(peer);
    tracing::info!(peer = %shared.peers_addr[peer], "sync: connected in");
    let r = run_in(&shared, peer, gen, s, opener).await;
    if state.inbound_gen.load(Ordering::Acquire) == gen {
        state.in_up.store(false, Ordering::Release);
        state.dump_complete.store(false, Ordering::Release);
    }
    if let Err(e) = &r {
        count_in(&shared, e);
    }
    tracing::info!(peer = %shared.peers_addr[peer], "sync: connection in ended: {}",
        r.err().map_or_else(String::new, |e| e.to_string()));
}

/// The listener's half of the handshake: which member dialled, and the
/// opener of its frames.
async fn accept(
    shared: &Shared,
    s: &mut TcpStream,
    from: SocketAddr,
) -> Result<(usize, Opener), ConnError> {
    let mut hello = [0u8; wire::HELLO_LEN];
    s.read_exact(&mut hello).await?;
    let theirs = Hello::decode(&hello, shared.me, shared.peers_addr.len())?;
    let peer = usize::from(theirs.from);
    // It dials from its member address (see `connect`).
    if shared.peers_addr[peer].ip() != from.ip() {
        return Err(WireError::Foreign.into());
    }
    let mine = Hello {
        from: theirs.to,
        to: theirs.from,
        nonce: nonce(),
    };
    let reply = wire::reply(&shared.key, &hello, &mine);
    s.write_all(&reply).await?;
    let mut proof = [0u8; wire::PROOF_LEN];
    s.read_exact(&mut proof).await?;
    let opener = wire::check_proof(&shared.key, &hello, &reply, &proof)?;
    Ok((peer, opener))
}

/// Read `peer`'s frames (connection generation `gen`) and hand their
/// events to the workers, until something fails or a newer connection
/// from the same peer supersedes this one.
async fn run_in(
    shared: &Shared,
    peer: usize,
    gen: u64,
    mut s: TcpStream,
    mut opener: Opener,
) -> Result<(), ConnError> {
    let state = &shared.peers[peer];
    let mut buf = Vec::with_capacity(wire::MAX_FRAME + 4);
    let mut items = Vec::with_capacity(wire::MAX_EVENTS);
    loop {
        let mut prefix = [0u8; 4];
        tokio::time::timeout(SILENCE_LIMIT, s.read_exact(&mut prefix))
            .await
            .map_err(|_| ConnError::Timeout)??;
        let len = wire::frame_len(prefix)?;
        buf.clear();
        buf.extend_from_slice(&prefix);
        buf.resize(4 + len, 0);
        tokio::time::timeout(SILENCE_LIMIT, s.read_exact(&mut buf[4..]))
            .await
            .map_err(|_| ConnError::Timeout)??;
        if state.inbound_gen.load(Ordering::Acquire) != gen {
            return Err(ConnError::Dropped);
        }
        let frame = opener.open(&buf)?;
        shared.heard(peer);
        match frame {
            Frame::Ping => {}
            Frame::DumpDone => {
                state.dump_complete.store(true, Ordering::Release);
                tracing::info!(peer = %shared.peers_addr[peer], "sync: dump received");
            }
            Frame::Events { count, body } => {
                items.clear();
                wire::decode_events(body, count, &mut items)?;
                deliver_paced(shared, peer, &items).await;
            }
        }
    }
}

/// Count why a connection in was refused or ended.
fn count_in(shared: &Shared, e: &ConnError) {
    match e {
        ConnError::Wire(w) => shared.reject(*w),
        ConnError::Timeout => {
            shared.counters.timeouts.fetch_add(1, Ordering::Relaxed);
        }
        _ => {}
    }
}

/// [`deliver`] `items` as the workers' inbound rings make room: a burst
/// larger than a ring (a dump, a flood of new flows on the holder) waits
/// for the workers to take what came before rather than being lost, and
/// TCP holds the sender back meanwhile. Only when the workers take nothing
/// for [`ROOM_WAIT`] (stuck, or starved of CPU) are the rest delivered
/// regardless, and what does not fit is lost (counted as refused).
async fn deliver_paced(shared: &Shared, peer: usize, items: &[Item]) {
    let mut rest = items;
    let mut deadline = tokio::time::Instant::now() + ROOM_WAIT;
    while !rest.is_empty() {
        let room = lock(&shared.hub).room();
        if room == 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(ROOM_POLL).await;
            continue;
        }
        let (now, later) = rest.split_at(if room == 0 {
            rest.len()
        } else {
            room.min(rest.len())
        });
        deliver(shared, peer, now);
        rest = later;
        deadline = tokio::time::Instant::now() + ROOM_WAIT;
    }
}

/// The longest the workers may take nothing before a frame's events are
/// delivered regardless.
const ROOM_WAIT: Duration = Duration::from_secs(1);
/// How often it looks (a worker with sync on takes its ring within
/// about 2 ms even when idle).
const ROOM_POLL: Duration = Duration::from_micros(500);

/// Hand `items` from `peer` to the workers, counting them and measuring
/// the lag of new flows.
fn deliver(shared: &Shared, peer: usize, items: &[Item]) {
    let c = &shared.counters;
    let now = unix_ns();
    let mut delivered = 0;
    {
        let mut hub = lock(&shared.hub);
        for it in items {
            if hub.deliver(it.event).is_ok() {
                delivered += 1;
            }
        }
    }
    for it in items {
        match (&it.event, it.refresh) {
            (SyncEvent::Open(f), false) => {
                c.received_open.fetch_add(1, Ordering::Relaxed);
                shared.lag.observe(now.saturating_sub(f.opened_unix_ns));
            }
            (SyncEvent::Open(_), true) => {
                c.received_refresh.fetch_add(1, Ordering::Relaxed);
            }
            (SyncEvent::Close(_), _) => {
                c.received_close.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let p = &shared.peers[peer];
    p.received.fetch_add(items.len() as u64, Ordering::Relaxed);
    p.delivered.fetch_add(delivered, Ordering::Relaxed);
}
