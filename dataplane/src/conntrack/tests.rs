//! The flow table's tests: placement and look-ups in both buckets, moves
//! and evictions, both entry forms and their counters, expiry, concurrent
//! readers, and the flow record in and out.

use super::tags::{alt_bucket, tag_of, Tags};
use super::*;
use crate::net::{Ip16, MacAddr};
use crate::wire::rewrite::{fast_deltas, TupleV4};
use std::net::IpAddr;
use std::sync::Arc;

fn ip(s: &str) -> Ip16 {
    Ip16::from(s.parse::<IpAddr>().expect("ip"))
}

fn flow(client_port: u16) -> (FlowKey, FlowData, FlowData) {
    let key = FlowKey {
        src: ip("10.0.0.2"),
        dst: ip("192.0.2.1"),
        sport: client_port,
        dport: 80,
        proto: 6,
    };
    let fwd = FlowData {
        kind: Kind::Forward,
        flags: flags::SYN,
        timeout_s: 240,
        gen: 1,
        endpoint: 7,
        service: 0,
        mode: 2,
        new_src: ip("10.9.0.1"),
        new_dst: ip("10.1.0.5"),
        new_sport: 40000 + client_port,
        new_dport: 8080,
        mac: MacAddr([2, 0, 0, 0, 0, 5]),
        port: 1,
    };
    let reply = FlowData {
        kind: Kind::Reply,
        flags: 0,
        new_src: key.dst,
        new_dst: key.src,
        new_sport: key.dport,
        new_dport: key.sport,
        mac: MacAddr([2, 0, 0, 0, 0, 2]),
        port: 0,
        ..fwd
    };
    (key, fwd, reply)
}

/// A one-shard table of 64 buckets and its writer.
fn small_table() -> (Arc<Conntrack>, ShardWriter) {
    let ct = Arc::new(Conntrack::new(
        1,
        ConntrackConfig {
            buckets_per_shard: 64,
        },
    ));
    let w = ct.writer(0);
    (ct, w)
}

/// The packets and bytes the dump reports for the entry keyed `key`.
fn dumped_counts(ct: &Conntrack, key: &FlowKey) -> (u64, u64) {
    let f = ct
        .dump()
        .into_iter()
        .find(|f| f.key == *key)
        .expect("entry");
    (f.packets, f.bytes)
}

proptest::proptest! {
    /// The SWAR tag match finds the first equal tag of a bucket, as a scan would.
    #[test]
    fn tag_match_is_the_first_equal_way(
        ways in proptest::array::uniform8(proptest::prop_oneof![
            proptest::prelude::Just(0u16),
            proptest::prelude::Just(1u16),
            proptest::prelude::Just(0x8001u16),
            proptest::prelude::any::<u16>(),
        ]),
        tag in proptest::prop_oneof![
            proptest::prelude::Just(1u16),
            proptest::prelude::Just(0x8001u16),
            proptest::prelude::any::<u16>(),
        ],
    ) {
        let tag = tag | 1;
        let t = Tags::new(2 * WAYS);
        for (i, &w) in ways.iter().enumerate() {
            t.set(WAYS + i, w);
            proptest::prop_assert_eq!(t.get(WAYS + i, Ordering::Relaxed), w);
        }
        proptest::prop_assert_eq!(t.first_match(1, tag), ways.iter().position(|&w| w == tag));
        proptest::prop_assert_eq!(t.first_match(0, tag), None);
        for want in [tag, 0] {
            let bits: u32 = ways
                .iter()
                .enumerate()
                .filter(|&(_, &w)| w == want)
                .map(|(i, _)| 1 << i)
                .sum();
            proptest::prop_assert_eq!(t.matches(1, want, Ordering::Relaxed), bits);
        }
        proptest::prop_assert_eq!(t.matches(0, 0, Ordering::Relaxed), 0xff);
    }
}

/// Sequential clients (the common case: one subnet, counting ports) and
/// IPv6 keys spread evenly over buckets and tags: no bucket gets more
/// than twice its share, and the chi-square statistic of the bucket
/// counts is not above what random placement gives.
#[test]
fn hash_spreads_keys_over_buckets_and_tags() {
    const BUCKETS: usize = 1 << 12;
    const KEYS: usize = 64 * BUCKETS;
    let v4 = |i: usize| FlowKey {
        src: Ip16::v4([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]),
        dst: Ip16::v4([192, 0, 2, 10]),
        sport: 1024 + (i % 50_000) as u16,
        dport: 80,
        proto: 6,
    };
    let v6 = |i: usize| FlowKey {
        src: Ip16::from("2001:db8::".parse::<IpAddr>().expect("ip")),
        dst: ip("2001:db8:1::10"),
        sport: i as u16,
        dport: (i >> 16) as u16,
        proto: 17,
    };
    let hasher = FlowHasher::random();
    for (name, key) in [("v4", &v4 as &dyn Fn(usize) -> FlowKey), ("v6", &v6)] {
        let mut buckets = vec![0u32; BUCKETS];
        let mut tags = vec![0u32; 1 << 16];
        for i in 0..KEYS {
            let h = hasher.hash(&key(i));
            buckets[h as usize % BUCKETS] += 1;
            tags[usize::from(tag_of(h))] += 1;
        }
        let mean = (KEYS / BUCKETS) as f64;
        let chi: f64 = buckets
            .iter()
            .map(|&c| (f64::from(c) - mean).powi(2) / mean)
            .sum();
        let max = buckets.iter().max().copied().unwrap_or(0);
        assert!(f64::from(max) < 2.0 * mean, "{name}: fullest bucket {max}");
        let df = (BUCKETS - 1) as f64;
        assert!(
            chi < df + 6.0 * (2.0 * df).sqrt(),
            "{name}: chi-square {chi}"
        );
        // Tags are odd (0 means empty): 2^15 values for 2^18 keys.
        let used = tags.iter().filter(|&&c| c > 0).count();
        assert!(used > 32_000, "{name}: {used} tags in use");
    }
}

#[test]
fn insert_then_both_directions_are_found_and_removed_together() {
    let ct = Arc::new(Conntrack::new(
        2,
        ConntrackConfig {
            buckets_per_shard: 64,
        },
    ));
    let mut w = ct.writer(0);
    let (key, fwd, reply) = flow(1234);
    w.insert(
        &FlowRecord::from_entries(&key, &fwd, Some(&reply)),
        1,
        &mut |_| {},
    )
    .expect("room");
    let hit = ct.find_in(0, &key, ct.hash(&key)).expect("forward entry");
    assert_eq!(hit.data, fwd);
    let rkey = fwd.partner_key(6);
    assert_eq!(rkey.src, ip("10.1.0.5"));
    assert_eq!(rkey.dport, 41234);
    let rhit = ct
        .find_elsewhere(1, &rkey, ct.hash(&rkey))
        .expect("reply visible from worker 1");
    assert_eq!(rhit.data, reply);
    assert_eq!(
        reply.partner_key(6),
        key,
        "partner of the reply is the forward key"
    );
    assert!(
        ct.find_in(1, &key, ct.hash(&key)).is_none(),
        "other shard does not have it"
    );
    assert_eq!(ct.used(), 2);
    let removed = w.remove_pair(rhit.slot, false).expect("removed");
    assert_eq!(removed.data.kind, Kind::Forward);
    assert!(ct.find_in(0, &key, ct.hash(&key)).is_none());
    assert_eq!(ct.used(), 0);
}

/// `clear` empties the writer's own shard in place: every entry is gone
/// (found by no look-up, counted by no `used`), another worker's shard
/// keeps its flows, and the same flows can be inserted again.
#[test]
fn clear_empties_only_the_writers_shard() {
    let ct = Arc::new(Conntrack::new(
        2,
        ConntrackConfig {
            buckets_per_shard: 64,
        },
    ));
    let (mut w0, mut w1) = (ct.writer(0), ct.writer(1));
    let flows: Vec<_> = (0..40).map(flow).collect();
    for (key, fwd, reply) in &flows {
        w0.insert(
            &FlowRecord::from_entries(key, fwd, Some(reply)),
            1,
            &mut |_| {},
        )
        .expect("room");
    }
    let (okey, ofwd, oreply) = flow(5000);
    w1.insert(
        &FlowRecord::from_entries(&okey, &ofwd, Some(&oreply)),
        1,
        &mut |_| {},
    )
    .expect("room");
    assert_eq!(ct.used_in(0), 80);
    assert_eq!(w0.clear(), 80);
    assert_eq!(ct.used_in(0), 0);
    assert_eq!(ct.used(), 2, "worker 1's flow is still counted");
    for (key, fwd, _) in &flows {
        assert!(ct.find_in(0, key, ct.hash(key)).is_none(), "{key:?}");
        let rkey = fwd.partner_key(key.proto);
        assert!(ct.find_in(0, &rkey, ct.hash(&rkey)).is_none());
    }
    assert!(ct.find_in(1, &okey, ct.hash(&okey)).is_some());
    assert_eq!(w0.clear(), 0, "clearing an empty shard drops nothing");
    for (key, fwd, reply) in &flows {
        w0.insert(
            &FlowRecord::from_entries(key, fwd, Some(reply)),
            2,
            &mut |_| {},
        )
        .expect("room again");
    }
    assert_eq!(ct.used_in(0), 80);
    let (key, fwd, _) = &flows[7];
    assert_eq!(ct.find_in(0, key, ct.hash(key)).expect("back").data, *fwd);
}

/// IPv4 entries carry their rewrite's checksum changes for the fast path,
/// through a revalidation too; reads for the slow path and dumps still see
/// the IPv4 address (low word 0); an IPv6 entry has none.
#[test]
fn ipv4_entries_keep_checksum_changes() {
    let (ct, mut w) = small_table();
    let (key, fwd, reply) = flow(7);
    let slot = w
        .insert(
            &FlowRecord::from_entries(&key, &fwd, Some(&reply)),
            1,
            &mut |_| {},
        )
        .expect("room");
    let want = fast_deltas(
        TupleV4 {
            src: key.src.v4_octets(),
            dst: key.dst.v4_octets(),
            sport: key.sport,
            dport: key.dport,
        },
        TupleV4 {
            src: fwd.new_src.v4_octets(),
            dst: fwd.new_dst.v4_octets(),
            sport: fwd.new_sport,
            dport: fwd.new_dport,
        },
    );
    let kw = key.words();
    let view = ct.owner_view(&w).expect("shard");
    let hit = view.read_v4(slot, kw[1], kw[3], kw[4]).expect("fast read");
    assert_eq!(hit.deltas(), want);
    assert_eq!(hit.ports_wire(), [0x9c, 0x47, 0x1f, 0x90], "40007 and 8080");
    let moved = FlowData {
        mac: MacAddr([2, 0, 0, 0, 0, 9]),
        gen: 2,
        ..fwd
    };
    w.revalidate(slot, &moved);
    let hit = view.read_v4(slot, kw[1], kw[3], kw[4]).expect("fast read");
    assert_eq!(hit.deltas(), want);
    assert_eq!(hit.mac8()[..6], [2, 0, 0, 0, 0, 9]);
    assert_eq!(
        ct.find_in(0, &key, ct.hash(&key)).expect("entry").data,
        moved
    );
    // IPv6: no fast read.
    let key6 = FlowKey {
        src: ip("2001:db8::2"),
        dst: ip("2001:db8::10"),
        ..key
    };
    let fwd6 = FlowData {
        new_src: ip("2001:db8::2"),
        new_dst: ip("2001:db8:1::5"),
        ..fwd
    };
    let slot6 = w
        .insert(
            &FlowRecord::from_entries(&key6, &fwd6, None),
            1,
            &mut |_| {},
        )
        .expect("room");
    let k6 = key6.words();
    assert!(view.read_v4(slot6, k6[1], k6[3], k6[4]).is_none());
    assert_eq!(
        ct.find_in(0, &key6, ct.hash(&key6)).expect("entry").data,
        fwd6
    );
    // DSR: no checksum changes kept, so no fast read either (the slow
    // path rewrites only the MACs); the entry reads back whole.
    let (key_dsr, _, _) = flow(8);
    let dsr = FlowData {
        mode: mode::DSR,
        ..fwd
    };
    let slot_dsr = w
        .insert(
            &FlowRecord::from_entries(&key_dsr, &dsr, None),
            1,
            &mut |_| {},
        )
        .expect("room");
    let kd = key_dsr.words();
    assert!(view.read_v4(slot_dsr, kd[1], kd[3], kd[4]).is_none());
    assert_eq!(
        ct.find_in(0, &key_dsr, ct.hash(&key_dsr))
            .expect("entry")
            .data,
        dsr
    );
}

/// The packed counts of a line-form entry fold into its wide counters
/// before either field overflows: packets past 2^19 and bytes past 2^44
/// are counted exactly, through the fast path's touch and through
/// another worker's, and the dump adds both parts.
#[test]
fn line_form_counts_fold_without_losing_any() {
    let (ct, mut w) = small_table();
    let (key, fwd, reply) = flow(9);
    let slot = w
        .insert(
            &FlowRecord::from_entries(&key, &fwd, Some(&reply)),
            1,
            &mut |_| {},
        )
        .expect("room");
    let kw = key.words();
    let view = ct.owner_view(&w).expect("shard");
    // 600,000 packets of 1,000 bytes: three folds of the packet field.
    for _ in 0..600_000 {
        view.read_v4(slot, kw[1], kw[3], kw[4])
            .expect("fast read")
            .touch(2, 1_000, flags::SEEN);
    }
    assert_eq!(dumped_counts(&ct, &key), (600_000, 600_000_000));
    // Counts of 2^31 + 5 bytes (no frame is that long, but a count
    // must hold): 10,000 of them, past 2^44 bytes in all.
    let hit = ct.find_in(0, &key, ct.hash(&key)).expect("entry");
    let big = (1u64 << 31) + 5;
    for _ in 0..10_000 {
        ct.touch(&hit, 2, big);
    }
    assert_eq!(
        dumped_counts(&ct, &key),
        (610_000, 600_000_000 + 10_000 * big)
    );
    // The fold leaves the entry readable on both paths.
    let again = ct.find_in(0, &key, ct.hash(&key)).expect("entry");
    assert_eq!(
        again.data,
        FlowData {
            flags: flags::SYN | flags::SEEN,
            ..fwd
        }
    );
    assert!(view.read_v4(slot, kw[1], kw[3], kw[4]).is_some());
}

/// An entry changes form when a revalidation calls for the other one
/// (here a DSR translation, which has no fast path, and back): its key,
/// counters and flags stay, the fast read follows the form, and the
/// fast path's generation check sees the new generation.
#[test]
fn revalidation_changes_form_and_keeps_counters() {
    let (ct, mut w) = small_table();
    let (key, fwd, reply) = flow(11);
    let slot = w
        .insert(
            &FlowRecord::from_entries(&key, &fwd, Some(&reply)),
            1,
            &mut |_| {},
        )
        .expect("room");
    let kw = key.words();
    let view = ct.owner_view(&w).expect("shard");
    let fast = || view.read_v4(slot, kw[1], kw[3], kw[4]);
    for _ in 0..3 {
        fast().expect("line form").touch(2, 100, flags::SEEN);
    }
    let found = |ct: &Conntrack| ct.find_in(0, &key, ct.hash(&key)).expect("entry");
    let dsr = FlowData {
        mode: mode::DSR,
        gen: 5,
        ..fwd
    };
    w.revalidate(slot, &dsr);
    assert!(fast().is_none(), "DSR takes the general form");
    let hit = found(&ct);
    assert_eq!(hit.data.flags, flags::SYN | flags::SEEN);
    assert_eq!(
        hit.data,
        FlowData {
            flags: hit.data.flags,
            ..dsr
        }
    );
    assert_eq!(dumped_counts(&ct, &key), (3, 300));
    ct.touch(&hit, 3, 50);
    assert_eq!(dumped_counts(&ct, &key), (4, 350));
    let back = FlowData {
        gen: 0x0003_0006,
        ..fwd
    };
    w.revalidate(slot, &back);
    let f = fast().expect("line form again");
    assert_eq!(f.gen16(), 6, "the generation's low 16 bits");
    assert_eq!(f.endpoint(), fwd.endpoint);
    f.touch(4, 10, flags::SEEN);
    assert_eq!(dumped_counts(&ct, &key), (5, 360));
    let hit = found(&ct);
    assert_eq!(
        hit.data,
        FlowData {
            flags: hit.data.flags,
            ..back
        }
    );
    // The reply entry was left alone throughout.
    let rkey = fwd.partner_key(key.proto);
    assert_eq!(
        ct.find_in(0, &rkey, ct.hash(&rkey)).expect("reply").data,
        reply
    );
}

/// Endpoint ids take 16 bits of the line form's key word; a larger id
/// (none is, today) makes the entry take the general form, which reads
/// back whole.
#[test]
fn endpoint_ids_past_16_bits_take_the_general_form() {
    let (ct, mut w) = small_table();
    let view = ct.owner_view(&w).expect("shard");
    for (port, ep, line) in [(20, (1 << 16) - 1, true), (21, 1 << 16, false)] {
        let (key, fwd, reply) = flow(port);
        let fwd = FlowData {
            endpoint: ep,
            ..fwd
        };
        let slot = w
            .insert(
                &FlowRecord::from_entries(&key, &fwd, Some(&reply)),
                1,
                &mut |_| {},
            )
            .expect("room");
        let kw = key.words();
        let fast = view.read_v4(slot, kw[1], kw[3], kw[4]);
        assert_eq!(fast.is_some(), line, "endpoint {ep}");
        if let Some(f) = fast {
            assert_eq!(f.endpoint(), ep);
        }
        assert_eq!(ct.find_in(0, &key, ct.hash(&key)).expect("entry").data, fwd);
    }
}

#[test]
fn expiry_follows_tcp_state_of_both_directions() {
    let ct = Arc::new(Conntrack::new(
        1,
        ConntrackConfig {
            buckets_per_shard: 16,
        },
    ));
    let mut w = ct.writer(0);
    let (key, fwd, reply) = flow(1);
    w.insert(
        &FlowRecord::from_entries(&key, &fwd, Some(&reply)),
        0,
        &mut |_| {},
    )
    .expect("room");
    // Half-open: expires after the SYN timeout, not the 240 s rule timeout.
    let mut n = 0;
    w.expire(SYN_TIMEOUT_NS - 1, 16, &mut |_| n += 1);
    assert_eq!(n, 0);
    w.expire(SYN_TIMEOUT_NS + 1, 16, &mut |_| n += 1);
    assert_eq!(n, 1);

    // Established (the backend answered): lives for the rule's timeout.
    let (key, fwd, reply) = flow(2);
    w.insert(
        &FlowRecord::from_entries(&key, &fwd, Some(&reply)),
        0,
        &mut |_| {},
    )
    .expect("room");
    let rk = fwd.partner_key(6);
    let rhit = ct.find_in(0, &rk, ct.hash(&rk)).expect("reply");
    ct.add_flags(&rhit, flags::SEEN);
    let mut n = 0;
    w.expire(SYN_TIMEOUT_NS + 1, 16, &mut |_| n += 1);
    assert_eq!(n, 0, "established flow survives the SYN timeout");
    w.expire(241_000_000_000, 16, &mut |_| n += 1);
    assert_eq!(n, 1);
}

#[test]
fn full_bucket_evicts_half_open_before_established() {
    // One bucket: every key lands in it.
    let ct = Arc::new(Conntrack::new(
        1,
        ConntrackConfig {
            buckets_per_shard: 1,
        },
    ));
    let mut w = ct.writer(0);
    // Four established flows fill the 8 ways.
    for p in 0..4u16 {
        let (key, mut fwd, reply) = flow(p);
        fwd.flags |= flags::ACK;
        w.insert(
            &FlowRecord::from_entries(&key, &fwd, Some(&reply)),
            u64::from(p),
            &mut |_| {},
        )
        .expect("room");
        let rk = fwd.partner_key(6);
        let h = ct.find_in(0, &rk, ct.hash(&rk)).expect("reply");
        ct.add_flags(&h, flags::SEEN);
    }
    assert_eq!(ct.used(), 8);
    // A new flow must evict; established flows are all equal rank, oldest goes.
    let mut evicted = Vec::new();
    let (key, fwd, reply) = flow(100);
    w.insert(
        &FlowRecord::from_entries(&key, &fwd, Some(&reply)),
        10,
        &mut |r| evicted.push(r),
    )
    .expect("evicts");
    assert_eq!(evicted.len(), 1);
    assert_eq!(
        evicted[0].data.new_sport, 40000,
        "the oldest flow (port 0) went"
    );
    // Another new flow evicts the half-open one, not an established one.
    let (key2, fwd2, reply2) = flow(101);
    let mut ev2 = Vec::new();
    w.insert(
        &FlowRecord::from_entries(&key2, &fwd2, Some(&reply2)),
        11,
        &mut |r| ev2.push(r),
    )
    .expect("evicts");
    assert_eq!(ev2.len(), 1);
    assert_eq!(
        ev2[0].data.new_sport, 40100,
        "the half-open flow went first"
    );
    assert!(ct.find_in(0, &key2, ct.hash(&key2)).is_some());
}

#[test]
fn concurrent_readers_never_see_torn_entries() {
    let ct = Arc::new(Conntrack::new(
        2,
        ConntrackConfig {
            buckets_per_shard: 4,
        },
    ));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let ct = ct.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut seen = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for info in ct.dump() {
                    // Writers always store new_sport = 40000 + client port
                    // and endpoint = client port: a torn read breaks it.
                    if info.data.kind == Kind::Forward {
                        assert_eq!(info.data.new_sport, 40000 + info.key.sport);
                        assert_eq!(info.data.endpoint, u32::from(info.key.sport));
                        seen += 1;
                    }
                }
            }
            seen
        })
    };
    let mut w = ct.writer(0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(300);
    let mut round = 0u64;
    while std::time::Instant::now() < deadline && round < 200_000 {
        let p = (round % 50) as u16;
        let (key, mut fwd, reply) = flow(p);
        fwd.endpoint = u32::from(p);
        let _ = w.insert(
            &FlowRecord::from_entries(&key, &fwd, Some(&reply)),
            round,
            &mut |_| {},
        );
        if round.is_multiple_of(3) {
            if let Some(h) = ct.find_in(0, &key, ct.hash(&key)) {
                w.remove_pair(h.slot, false);
            }
        }
        round += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let seen = reader.join().expect("reader did not panic");
    assert!(seen > 0, "the reader observed entries");
}

/// Flow `i` of a load test: clients counting through 10.0.0.0/8 and
/// their ports, as a real client population would.
fn nth_flow(i: u32) -> (FlowKey, FlowData, FlowData) {
    let (mut key, mut fwd, mut reply) = flow(0);
    key.src = Ip16::v4([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
    key.sport = 1024 + (i % 60_000) as u16;
    fwd.new_sport = key.sport;
    fwd.new_src = Ip16::v4([10, 9, (i >> 16) as u8, (i >> 8) as u8]);
    reply.new_dst = key.src;
    reply.new_dport = key.sport;
    (key, fwd, reply)
}

/// A shard filled to 95 % of its slots with flows (two entries each)
/// holds every one of them, both directions, without evicting any:
/// two-choice buckets with moves, where one bucket per key lost ~0.4 %
/// of the flows at a quarter full and ~12 % at 95 %.
#[test]
fn a_shard_at_95_percent_holds_every_flow() {
    for (buckets, seed) in [(1usize << 10, 1u64), (1 << 12, 2), (1 << 14, 3)] {
        let ct = Arc::new(Conntrack::with_hasher(
            1,
            ConntrackConfig {
                buckets_per_shard: buckets,
            },
            FlowHasher::with_seed(seed),
        ));
        let mut w = ct.writer(0);
        let flows = (buckets * WAYS * 95 / 100 / 2) as u32;
        let mut evicted = 0;
        for i in 0..flows {
            let (key, fwd, reply) = nth_flow(i);
            w.insert(
                &FlowRecord::from_entries(&key, &fwd, Some(&reply)),
                1,
                &mut |_| evicted += 1,
            )
            .expect("room");
        }
        assert_eq!(evicted, 0, "{buckets} buckets: flows evicted");
        assert_eq!(ct.used(), 2 * u64::from(flows), "{buckets} buckets");
        let mut second = 0;
        for i in 0..flows {
            let (key, fwd, reply) = nth_flow(i);
            let h = ct.find_in(0, &key, ct.hash(&key)).expect("forward entry");
            assert_eq!(h.data, fwd, "flow {i}");
            second += usize::from(h.slot / WAYS != ct.hash(&key) as usize & (buckets - 1));
            let rk = fwd.partner_key(6);
            assert_eq!(
                ct.find_in(0, &rk, ct.hash(&rk)).expect("reply entry").data,
                reply,
                "flow {i}"
            );
        }
        // Most keys sit in the bucket a look-up tries first.
        assert!(
            second * 4 < flows as usize,
            "{buckets} buckets: {second} of {flows} forward entries in their second bucket"
        );
    }
}

/// Every table keys its hash afresh: two tables place the same keys
/// differently, and each finds what it stored.
#[test]
fn every_table_has_its_own_hash_keys() {
    let cfg = ConntrackConfig {
        buckets_per_shard: 256,
    };
    let a = Arc::new(Conntrack::new(1, cfg));
    let b = Arc::new(Conntrack::new(1, cfg));
    let keys: Vec<FlowKey> = (0..64).map(|i| nth_flow(i).0).collect();
    let same = keys.iter().filter(|k| a.hash(k) == b.hash(k)).count();
    assert_eq!(same, 0, "two tables hash alike");
    let buckets_alike = keys
        .iter()
        .filter(|k| a.hash(k) & 255 == b.hash(k) & 255)
        .count();
    assert!(
        buckets_alike < 8,
        "{buckets_alike} of 64 keys in the same bucket"
    );
    for ct in [&a, &b] {
        let mut w = ct.writer(0);
        for i in 0..64 {
            let (key, fwd, reply) = nth_flow(i);
            w.insert(
                &FlowRecord::from_entries(&key, &fwd, Some(&reply)),
                1,
                &mut |_| {},
            )
            .expect("room");
        }
        for i in 0..64 {
            let (key, fwd, _) = nth_flow(i);
            assert_eq!(ct.hash(&key), ct.hasher().hash_words(&key.words()));
            let w = key.words();
            assert_eq!(ct.hash(&key), ct.hasher().hash_v4(w[1], w[3], w[4]));
            assert_eq!(
                ct.find_in(0, &key, ct.hash(&key)).expect("stored").data,
                fwd
            );
        }
    }
    // A fixed seed places keys the same way every time.
    let k = keys[0];
    assert_eq!(
        FlowHasher::with_seed(7).hash(&k),
        FlowHasher::with_seed(7).hash(&k)
    );
}

/// A key's two buckets are each other's other bucket, and differ.
#[test]
fn the_other_bucket_of_the_other_bucket_is_the_first() {
    for mask in [0usize, 1, 3, 1023, (1 << 20) - 1] {
        for tag in (1..=u16::MAX).step_by(7).map(|t| t | 1) {
            for b in [0, 1, 5, mask] {
                let b = b & mask;
                let a = alt_bucket(b, tag, mask);
                assert!(a <= mask);
                assert_eq!(alt_bucket(a, tag, mask), b);
                assert_eq!(a == b, mask == 0, "mask {mask} tag {tag} bucket {b}");
            }
        }
    }
}

/// While the owner fills its shard to 95 % and empties it again (moving
/// entries between buckets all the while), another worker looking up
/// flows that stay in the table finds every one, every time.
#[test]
fn readers_elsewhere_never_miss_an_entry_that_is_moved() {
    const BUCKETS: usize = 256;
    let ct = Arc::new(Conntrack::new(
        2,
        ConntrackConfig {
            buckets_per_shard: BUCKETS,
        },
    ));
    let mut w = ct.writer(0);
    let stay: Vec<u32> = (0..200).collect();
    for &i in &stay {
        let (key, fwd, reply) = nth_flow(i);
        w.insert(
            &FlowRecord::from_entries(&key, &fwd, Some(&reply)),
            1,
            &mut |_| {},
        )
        .expect("room");
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (ct, stop, stay) = (ct.clone(), stop.clone(), stay.clone());
        std::thread::spawn(move || {
            let mut looks = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for &i in &stay {
                    let (key, fwd, _) = nth_flow(i);
                    let rk = fwd.partner_key(6);
                    for k in [key, rk] {
                        assert!(
                            ct.find_elsewhere(1, &k, ct.hash(&k)).is_some(),
                            "flow {i} missed"
                        );
                        looks += 1;
                    }
                }
            }
            looks
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(400);
    let churn = (BUCKETS * WAYS * 95 / 100 / 2) as u32 - 200;
    let mut rounds = 0;
    while std::time::Instant::now() < deadline && rounds < 50 {
        for i in 1000..1000 + churn {
            let (key, fwd, reply) = nth_flow(i);
            w.insert(
                &FlowRecord::from_entries(&key, &fwd, Some(&reply)),
                1,
                &mut |_| {},
            )
            .expect("room");
        }
        for i in 1000..1000 + churn {
            let (key, _, _) = nth_flow(i);
            let h = ct.find_in(0, &key, ct.hash(&key)).expect("inserted");
            w.remove_pair(h.slot, false);
        }
        rounds += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let looks = reader.join().expect("the reader found every flow");
    assert!(looks > 0 && rounds > 0);
    assert_eq!(ct.used(), 2 * stay.len() as u64);
}

/// A flood of new flows into a shard keeps it consistent while moving
/// and evicting: every insert gets in, every entry left has its
/// partner, and the count of entries is what is there.
#[test]
fn a_flood_into_a_full_shard_evicts_whole_flows() {
    const BUCKETS: usize = 256;
    let ct = Arc::new(Conntrack::new(
        1,
        ConntrackConfig {
            buckets_per_shard: BUCKETS,
        },
    ));
    let mut w = ct.writer(0);
    let mut evicted = 0u64;
    let flows = (3 * BUCKETS * WAYS) as u32;
    for i in 0..flows {
        let (key, fwd, reply) = nth_flow(i);
        w.insert(
            &FlowRecord::from_entries(&key, &fwd, Some(&reply)),
            u64::from(i),
            &mut |r| {
                assert!(r.early);
                evicted += 1;
            },
        )
        .expect("a new flow always gets in");
        assert!(ct.find_in(0, &key, ct.hash(&key)).is_some(), "flow {i}");
    }
    let all = ct.dump();
    assert_eq!(all.len() as u64, ct.used());
    assert_eq!(ct.used(), 2 * (u64::from(flows) - evicted));
    assert!(
        ct.used() as usize > BUCKETS * WAYS * 9 / 10,
        "the flood keeps the shard full: {}",
        ct.used()
    );
    for e in &all {
        let pk = e.data.partner_key(e.key.proto);
        let p = ct.find_in(0, &pk, ct.hash(&pk)).expect("partner");
        assert_eq!(p.data.partner_key(pk.proto), e.key);
    }
}

/// A new IPv4 flow given as a [`NewFlowV4`] (the new-flow path) lands in
/// the slots, with the words, that its [`FlowRecord`] does through the
/// general insert, and the checksum changes it returns are its rewrite's.
#[test]
fn a_new_v4_flow_is_stored_as_its_record_is() {
    let table = || {
        Arc::new(Conntrack::with_hasher(
            1,
            ConntrackConfig {
                buckets_per_shard: 64,
            },
            FlowHasher::with_seed(5),
        ))
    };
    let (a, b) = (table(), table());
    let (mut wa, mut wb) = (a.writer(0), b.writer(0));
    let hop = |p: u8| crate::tables::NextHop {
        mac: MacAddr([2, 0, 0, 0, 0, p]),
        port: u16::from(p & 1),
    };
    for i in 0..40u16 {
        let f = NewFlowV4 {
            key: TupleV4 {
                src: [10, 0, (i >> 8) as u8, i as u8],
                dst: [192, 0, 2, 1],
                sport: 1024 + i,
                dport: 80,
            },
            proto: if i % 3 == 0 { 17 } else { 6 },
            xlat: TupleV4 {
                src: [10, 9, 0, 1],
                dst: [10, 1, 0, (i % 5) as u8],
                sport: 40000 + i,
                dport: 8080,
            },
            fwd_flags: flags::SEEN | flags::SYN,
            mode: if i % 2 == 0 {
                mode::FULL_NAT
            } else {
                mode::DNAT
            },
            timeout_s: 30 + u32::from(i),
            endpoint: u32::from(i % 5),
            service: 3,
            gen: 9,
            to_backend: hop(5),
            to_client: hop(2),
        };
        let rec = FlowRecord::from(&f);
        let (fh, rh) = (a.hash(&rec.key), a.hash(&rec.reply_key()));
        let (slot, deltas) = wa.insert_new_v4(&f, fh, rh, 1).expect("a free way");
        assert_eq!(deltas, fast_deltas(f.key, f.xlat), "flow {i}");
        assert_eq!(wb.insert(&rec, 1, &mut |_| {}), Ok(slot), "flow {i}");
    }
    assert_eq!(a.dump(), b.dump());
}

/// The records that go in come back out: both directions' flags (the
/// TCP state), the translation, the next hops, and no reply entry for a
/// flow without one.
#[test]
fn flows_give_back_the_records_inserted() {
    let (ct, mut w) = small_table();
    let (key, fwd, reply) = flow(1);
    let v4 = FlowRecord::from_entries(&key, &fwd, Some(&reply));
    let (key6, fwd6, reply6) = {
        let (k, f, r) = flow(2);
        let k = FlowKey {
            src: ip("2001:db8::2"),
            dst: ip("2001:db8::10"),
            ..k
        };
        let f = FlowData {
            new_src: ip("2001:db8:9::1"),
            new_dst: ip("2001:db8:1::5"),
            ..f
        };
        let r = FlowData {
            new_src: k.dst,
            new_dst: k.src,
            ..r
        };
        (k, f, r)
    };
    let v6 = FlowRecord::from_entries(&key6, &fwd6, Some(&reply6));
    let (key_dsr, fwd_dsr, _) = flow(3);
    let dsr = FlowRecord::from_entries(
        &key_dsr,
        &FlowData {
            mode: mode::DSR,
            new_dst: key_dsr.dst,
            new_sport: key_dsr.sport,
            new_dport: key_dsr.dport,
            new_src: key_dsr.src,
            ..fwd_dsr
        },
        None,
    );
    for r in [&v4, &v6, &dsr] {
        w.insert(r, 1, &mut |_| {}).expect("room");
    }
    // The backend answers the IPv4 flow.
    let rk = v4.reply_key();
    let hit = ct.find_in(0, &rk, ct.hash(&rk)).expect("reply");
    ct.add_flags(&hit, flags::SEEN);
    let mut got = ct.flows();
    got.sort_by_key(|r| r.key.sport);
    let answered = FlowRecord {
        rep_flags: flags::SEEN,
        ..v4
    };
    assert_eq!(got, vec![answered, v6, dsr]);
    assert_eq!(dsr.reply(), None);
    assert_eq!(v4.reply(), Some((rk, reply)));
    assert_eq!(v4.rule(), (key.dst, 6, 80));
}
