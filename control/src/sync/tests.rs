//! Connection sync in one process: members on loopback, each with its own
//! workers' rings; a holder's events reach the others, a backup's do not, a
//! late member gets the dump, and strangers and garbage are counted and
//! cut off.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xlb_dataplane::sync::{sync_queues, SyncEvent, SyncedFlow, WorkerSync};

use super::*;

const KEY: &[u8] = b"a test key of 32 bytes, no more.";

/// Loopback addresses on ports the test kit hands out: free now, outside
/// the ephemeral range (which the members' own dials draw from) and never
/// the same twice in this process.
fn addrs(n: usize) -> Vec<SocketAddr> {
    (0..n)
        .map(|_| {
            let port = xlb_testkit::unused_port().expect("a free port");
            SocketAddr::from(([127, 0, 0, 1], port))
        })
        .collect()
}

/// A table a test fills by hand: every flow, and the ones a refresh finds
/// active.
#[derive(Default)]
struct Table {
    all: Mutex<Vec<SyncedFlow>>,
    active: Mutex<Vec<SyncedFlow>>,
}

impl FlowSource for Table {
    fn dump(&self) -> Vec<SyncedFlow> {
        lock(&self.all).clone()
    }
    fn active_since(&self, _unix_ns: u64) -> Vec<SyncedFlow> {
        lock(&self.active).clone()
    }
}

struct Node {
    me: usize,
    svc: SyncService,
    workers: Vec<WorkerSync>,
    holding: Arc<AtomicBool>,
    table: Arc<Table>,
}

async fn node(peers: &[SocketAddr], me: usize, key: &[u8], holding: bool) -> Node {
    node_with_rings(peers, me, key, holding, 4096).await
}

/// [`node`] whose workers' rings hold `ring` events each way.
async fn node_with_rings(
    peers: &[SocketAddr],
    me: usize,
    key: &[u8],
    holding: bool,
    ring: usize,
) -> Node {
    let (hub, workers) = sync_queues(2, ring);
    let holding = Arc::new(AtomicBool::new(holding));
    let table = Arc::new(Table::default());
    let svc = SyncService::start(
        SyncConfig {
            peers: peers.to_vec(),
            me,
            key: key.to_vec(),
        },
        hub,
        table.clone(),
        holding.clone(),
    )
    .await
    .expect("started");
    Node {
        me,
        svc,
        workers,
        holding,
        table,
    }
}

fn flow(sport: u16) -> SyncedFlow {
    wire::example_flow(sport, unix_ns())
}

/// Every event the node received (each of its workers gets every event:
/// worker 0's copy), waiting until `n` have come or `within` passed.
async fn received(n: &mut Node, want: usize, within: Duration) -> Vec<SyncEvent> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    loop {
        for (i, w) in n.workers.iter_mut().enumerate() {
            while let Some(ev) = w.receive() {
                if i == 0 {
                    got.push(ev);
                }
            }
        }
        if got.len() >= want || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn rejected(s: &SyncStatus, reason: &str) -> u64 {
    s.rejected
        .iter()
        .find(|(r, _)| *r == reason)
        .map_or(0, |(_, n)| *n)
}

/// All connections between `nodes` up (members not among them may be
/// down).
async fn meshed(nodes: &[&Node]) {
    wait_until("every connection up", Duration::from_secs(5), || {
        nodes.iter().all(|n| {
            n.svc
                .status()
                .peers
                .iter()
                .filter(|p| nodes.iter().any(|m| m.me == p.member))
                .all(|p| p.outbound_up && p.inbound_up)
        })
    })
    .await;
}

#[tokio::test]
async fn a_holders_events_reach_every_peer_within_milliseconds() {
    let peers = addrs(3);
    let mut a = node(&peers, 0, KEY, true).await;
    let mut b = node(&peers, 1, KEY, false).await;
    let mut c = node(&peers, 2, KEY, false).await;
    meshed(&[&a, &b, &c]).await;
    let flows: Vec<SyncedFlow> = (0..100).map(|i| flow(1000 + i)).collect();
    let sent_at = Instant::now();
    for (i, f) in flows.iter().enumerate() {
        a.workers[i % 2].emit(SyncEvent::Open(*f));
    }
    a.workers[0].emit(SyncEvent::Close(flow(1000).key));
    a.workers.iter_mut().for_each(WorkerSync::flush);
    for n in [&mut b, &mut c] {
        let got = received(n, 101, Duration::from_secs(2)).await;
        let took = sent_at.elapsed();
        assert_eq!(got.len(), 101, "{got:?}");
        assert!(took < Duration::from_millis(500), "took {took:?}");
        assert!(flows.iter().all(|f| got.contains(&SyncEvent::Open(*f))));
        assert!(got.contains(&SyncEvent::Close(flow(1000).key)));
        let s = n.svc.status();
        assert_eq!(s.delivered, 101);
        assert_eq!(
            s.received,
            vec![("open", 100), ("refresh", 0), ("close", 1)]
        );
        assert_eq!(s.lag.count, 100, "every live Open's lag is measured");
        assert!(s.lag.sum_seconds < 50.0, "{:?}", s.lag);
        let text = crate::metrics::render_sync(&s);
        for line in [
            "xlb_sync_lag_seconds_count 100",
            "xlb_sync_lag_seconds_bucket{le=\"+Inf\"} 100",
            "xlb_sync_events_received_total{kind=\"open\"} 100",
            "xlb_sync_delivered_total 101",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
    assert_eq!(a.svc.status().sent, 202);
    // 202 events of at least a 5-tuple each went over the links.
    let bytes = a.svc.status().bytes_sent;
    assert!(bytes > 202 * 37, "{bytes} bytes for 202 events");
    assert!(crate::metrics::render_sync(&a.svc.status())
        .contains(&format!("xlb_sync_bytes_sent_total {bytes}")));
    assert!(a.svc.status().holding);
}

#[tokio::test]
async fn a_backup_sends_nothing() {
    let peers = addrs(3);
    let mut a = node(&peers, 0, KEY, false).await;
    let mut b = node(&peers, 1, KEY, false).await;
    let c = node(&peers, 2, KEY, false).await;
    meshed(&[&a, &b, &c]).await;
    for i in 0..10 {
        a.workers[0].emit(SyncEvent::Close(flow(i).key));
    }
    a.workers[0].flush();
    wait_until("drained", Duration::from_secs(1), || {
        a.svc.status().discarded_inactive == 10
    })
    .await;
    assert!(received(&mut b, 1, Duration::from_millis(100))
        .await
        .is_empty());
    assert_eq!(a.svc.status().sent, 0);
    // Holding from now on: the next events go out.
    a.holding.store(true, Ordering::Release);
    a.workers[0].emit(SyncEvent::Close(flow(99).key));
    a.workers[0].flush();
    assert_eq!(
        received(&mut b, 1, Duration::from_secs(2)).await,
        vec![SyncEvent::Close(flow(99).key)]
    );
    assert!(!b.svc.complete_from(0), "no dump without a new connection");
}

#[tokio::test]
async fn a_late_member_gets_the_holders_table_then_complete() {
    let peers = addrs(3);
    let a = node(&peers, 0, KEY, true).await;
    let flows: Vec<SyncedFlow> = (0..2000).map(flow).collect();
    *lock(&a.table.all) = flows.clone();
    let c = node(&peers, 2, KEY, false).await;
    meshed(&[&a, &c]).await;
    let mut b = node(&peers, 1, KEY, false).await;
    assert!(!b.svc.complete_from(0));
    wait_until("B complete from A", Duration::from_secs(5), || {
        b.svc.complete_from(0)
    })
    .await;
    // Everything of the dump was delivered before DumpDone counted.
    assert_eq!(b.svc.status().received[1], ("refresh", 2000));
    let got = received(&mut b, 2000, Duration::from_secs(1)).await;
    assert_eq!(got.len(), 2000);
    let mut keys: Vec<_> = got
        .iter()
        .map(|e| match e {
            SyncEvent::Open(f) => f.key.sport,
            SyncEvent::Close(k) => panic!("a close in a dump: {k:?}"),
        })
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, (0..2000).collect::<Vec<_>>());
    assert_eq!(
        b.svc.status().lag.count,
        0,
        "dumped flows are no lag sample"
    );
    assert!(!b.svc.complete_from(2), "C never held: no dump from it");
    let s = b.svc.status();
    let from_a = s.peers.iter().find(|p| p.member == 0).expect("A");
    assert!(from_a.dump_complete && from_a.last_heard.is_some());
    // A's connection to B goes away: B no longer counts as complete.
    drop(a);
    wait_until("B no longer complete", Duration::from_secs(5), || {
        !b.svc.complete_from(0)
    })
    .await;
}

#[tokio::test]
async fn a_member_with_another_key_is_refused_and_counted() {
    let peers = addrs(3);
    let mut a = node(&peers, 0, KEY, true).await;
    let mut b = node(&peers, 1, b"another key, also 32 bytes long.", false).await;
    wait_until("both refused", Duration::from_secs(5), || {
        rejected(&a.svc.status(), "bad_auth") > 0 && rejected(&b.svc.status(), "bad_auth") > 0
    })
    .await;
    a.workers[0].emit(SyncEvent::Close(flow(1).key));
    a.workers[0].flush();
    assert!(received(&mut b, 1, Duration::from_millis(200))
        .await
        .is_empty());
    let s = a.svc.status();
    assert!(
        s.peers.iter().all(|p| !p.outbound_up && !p.inbound_up),
        "{s:?}"
    );
    assert_eq!(a.workers.len(), 2);
}

/// A raw connection to `to` that completed the handshake as member `from`.
async fn handshaken(to: SocketAddr, from: u16, me: u16) -> (tokio::net::TcpStream, wire::Sealer) {
    let mut s = tokio::net::TcpStream::connect(to).await.expect("connect");
    let hello = wire::Hello {
        from,
        to: me,
        nonce: [1; wire::NONCE_LEN],
    };
    s.write_all(&hello.encode()).await.expect("write");
    let mut reply = [0u8; wire::REPLY_LEN];
    s.read_exact(&mut reply).await.expect("reply");
    let (proof, sealer) =
        wire::check_reply(&SyncKey::derive(KEY), &hello, &reply).expect("same key");
    s.write_all(&proof).await.expect("write");
    (s, sealer)
}

/// Whether the other end closed `s` within a second.
async fn closed(s: &mut tokio::net::TcpStream) -> bool {
    let mut b = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), s.read(&mut b)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn garbage_and_forgeries_are_counted_and_cut_off() {
    // Only B runs: the test plays member 0 by hand. Member 2 is elsewhere.
    let mut peers = addrs(3);
    peers[2] = "127.0.0.2:1".parse().expect("addr");
    let b = node(&peers, 1, KEY, false).await;
    let at = b.svc.local_addr();

    // Not even a hello; a hello for another member; a hello from member
    // 2, but not from its address.
    let hello = |from, to| {
        wire::Hello {
            from,
            to,
            nonce: [0; wire::NONCE_LEN],
        }
        .encode()
        .to_vec()
    };
    for bytes in [vec![0xab; 100], hello(0, 2), hello(2, 1)] {
        let mut s = tokio::net::TcpStream::connect(at).await.expect("connect");
        s.write_all(&bytes).await.expect("write");
        assert!(closed(&mut s).await);
    }

    // After a good handshake: an oversized length.
    let (mut s, _) = handshaken(at, 0, 1).await;
    s.write_all(&u32::MAX.to_be_bytes()).await.expect("write");
    assert!(closed(&mut s).await);
    // A frame with a bad tag.
    let (mut s, mut sealer) = handshaken(at, 0, 1).await;
    let mut f = sealer.seal(wire::Kind::Ping, 0, &[]).expect("fits");
    let last = f.len() - 1;
    f[last] ^= 1;
    s.write_all(&f).await.expect("write");
    assert!(closed(&mut s).await);
    // A well-sealed frame whose events do not parse.
    let (mut s, mut sealer) = handshaken(at, 0, 1).await;
    let f = sealer
        .seal(wire::Kind::Events, 3, &[0xff; 40])
        .expect("fits");
    s.write_all(&f).await.expect("write");
    assert!(closed(&mut s).await);
    // A replayed frame.
    let (mut s, mut sealer) = handshaken(at, 0, 1).await;
    let f = sealer.seal(wire::Kind::Ping, 0, &[]).expect("fits");
    s.write_all(&f).await.expect("write");
    s.write_all(&f).await.expect("write");
    assert!(closed(&mut s).await);

    wait_until("all counted", Duration::from_secs(2), || {
        let st = b.svc.status();
        rejected(&st, "malformed") == 2
            && rejected(&st, "foreign") == 2
            && rejected(&st, "oversized") == 1
            && rejected(&st, "bad_auth") == 1
            && rejected(&st, "replayed") == 1
    })
    .await;
    let st = b.svc.status();
    assert_eq!(st.delivered, 0);
    assert!(!b.svc.complete_from(0));
    // And B still serves: a good connection works.
    let (mut s, mut sealer) = handshaken(at, 0, 1).await;
    let body = wire::encode_items(&[Item {
        event: SyncEvent::Close(flow(7).key),
        refresh: false,
    }]);
    let f = sealer.seal(wire::Kind::Events, 1, &body).expect("fits");
    s.write_all(&f).await.expect("write");
    let f = sealer.seal(wire::Kind::DumpDone, 0, &[]).expect("fits");
    s.write_all(&f).await.expect("write");
    wait_until("delivered", Duration::from_secs(2), || {
        b.svc.complete_from(0) && b.svc.status().delivered == 1
    })
    .await;
}

#[tokio::test]
async fn a_holder_refreshes_its_active_flows() {
    let peers = addrs(3);
    let a = node(&peers, 0, KEY, true).await;
    let mut b = node(&peers, 1, KEY, false).await;
    meshed(&[&a, &b]).await;
    // Connected before the table had anything: the dump was empty.
    let _ = received(&mut b, 0, Duration::ZERO).await;
    *lock(&a.table.active) = vec![flow(1), flow(2)];
    let got = received(&mut b, 2, REFRESH * 2).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(b.svc.status().received.contains(&("refresh", 2)));
}

/// 100k new flows in bursts of 1000 every 10 ms: all arrive, none is
/// lost on the way (`cargo test -p xlb-control --lib sync::tests::bursts
/// -- --nocapture` prints the lag histogram).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_of_new_flows_arrive_whole() {
    let peers = addrs(3);
    let mut a = node(&peers, 0, KEY, true).await;
    let mut b = node(&peers, 1, KEY, false).await;
    meshed(&[&a, &b]).await;
    let t = Instant::now();
    let mut n = 0usize;
    let mut got = 0usize;
    for round in 0..100u32 {
        for i in 0..1000u32 {
            let s = (round * 1000 + i) as u16;
            a.workers[(i % 2) as usize].emit(SyncEvent::Open(flow(s)));
            n += 1;
        }
        a.workers.iter_mut().for_each(WorkerSync::flush);
        tokio::time::sleep(Duration::from_millis(10)).await;
        got += received(&mut b, 0, Duration::ZERO).await.len();
    }
    got += received(&mut b, n - got, Duration::from_secs(2))
        .await
        .len();
    let st = b.svc.status();
    eprintln!("{n} flows in {:?}; lag {:?}", t.elapsed(), st.lag);
    assert_eq!(got, n);
    assert_eq!(a.svc.status().queue_dropped, 0);
    assert_eq!((st.delivered, st.delivery_refused), (n as u64, 0));
    assert_eq!(st.lag.count, n as u64);
}

#[tokio::test]
async fn a_restarted_holder_reconnects_and_dumps_again() {
    let peers = addrs(3);
    let a = node(&peers, 0, KEY, true).await;
    *lock(&a.table.all) = vec![flow(1)];
    let mut b = node(&peers, 1, KEY, false).await;
    wait_until("B complete from A", Duration::from_secs(5), || {
        b.svc.complete_from(0)
    })
    .await;
    assert_eq!(received(&mut b, 1, Duration::from_secs(1)).await.len(), 1);
    drop(a);
    wait_until("B sees A gone", Duration::from_secs(5), || {
        !b.svc.complete_from(0)
    })
    .await;
    // Let the runtime close the old listener, then start A again on its port.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let a = node(&peers, 0, KEY, true).await;
    *lock(&a.table.all) = vec![flow(1), flow(2)];
    wait_until("B complete from the new A", Duration::from_secs(5), || {
        b.svc.complete_from(0)
    })
    .await;
    assert_eq!(received(&mut b, 2, Duration::from_secs(1)).await.len(), 2);
    meshed(&[&a, &b]).await;
}

#[tokio::test]
async fn a_returning_backup_gets_the_dump_without_waiting_out_the_backoff() {
    let peers = addrs(3);
    let b = node(&peers, 1, KEY, true).await;
    *lock(&b.table.all) = vec![flow(1)];
    let a = node(&peers, 0, KEY, false).await;
    meshed(&[&a, &b]).await;
    drop(a);
    // B's dials to the absent A back off to their longest wait.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let t = Instant::now();
    let a = node(&peers, 0, KEY, false).await;
    wait_until("A complete from B", Duration::from_secs(5), || {
        a.svc.complete_from(1)
    })
    .await;
    let took = t.elapsed();
    assert!(took < Duration::from_millis(300), "took {took:?}");
}

/// A burst far larger than the receiver's rings, taken by workers slower
/// than the link: it waits for them (TCP holds the sender back) and
/// nothing is lost.
#[tokio::test]
async fn a_burst_larger_than_the_rings_waits_for_slow_workers() {
    let peers = addrs(2);
    let mut a = node(&peers, 0, KEY, true).await;
    let mut b = node_with_rings(&peers, 1, KEY, false, 64).await;
    meshed(&[&a, &b]).await;
    let n = 3000u16;
    for s in 0..n {
        a.workers[usize::from(s % 2)].emit(SyncEvent::Open(flow(s)));
        if s % 512 == 511 {
            a.workers.iter_mut().for_each(WorkerSync::flush);
        }
    }
    a.workers.iter_mut().for_each(WorkerSync::flush);
    // B's workers take at most 32 events each per millisecond.
    let mut got = 0usize;
    let deadline = Instant::now() + Duration::from_secs(20);
    while got < usize::from(n) && Instant::now() < deadline {
        for (i, w) in b.workers.iter_mut().enumerate() {
            for _ in 0..32 {
                match w.receive() {
                    Some(_) if i == 0 => got += 1,
                    Some(_) => {}
                    None => break,
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let s = b.svc.status();
    assert_eq!(got, usize::from(n), "{s:?}");
    assert_eq!(s.delivery_refused, 0);
    assert_eq!(s.delivered, u64::from(n));
}
