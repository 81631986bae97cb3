//! The fast paths: the established-flow forward (one read of the slot's
//! first line, the rewrite with the checksum changes the entry keeps, one
//! packed count), the new-flow path (IPv4 TCP SYN or UDP to a Maglev or
//! persist rule, DNAT, one-arm or full NAT: its service, backend and
//! source-NAT port worked out a batch ahead, both entries written from the
//! values in hand), and the look ahead that makes the second possible.
//!
//! Invariant: each fast path does exactly what the general path would do
//! for the frames it takes (tested frame for frame, entry for entry); a
//! frame it does not take is left unchanged for the general path.

use crate::conntrack::Decline;
use crate::conntrack::{flags, mode, v4_word, FlowKey, Kind, NewFlowV4, NO_SLOT};
use crate::counters::bump;
use crate::frame::{Frame, PortId, Verdict};
use crate::net::Ip16;
use crate::prefetch::prefetch_addr;
use crate::select;
use crate::snat::{NatWalk, Target};
use crate::tables::{NatMode, NextHop, Selection, Service, Tables};
use crate::wire::rewrite::{
    rewrite_fast_tcp, rewrite_fast_udp, src_mac_ipv4, FastXlat, TupleV4, FAST_TCP_END, FAST_UDP_END,
};
use crate::wire::tcp::flags as tcp_flags;
use crate::wire::{self, ethernet, ipv4, proto, tcp, FastMeta};

use super::exit::FastPathExit;
use super::general::tcp_flag_bits;
use super::{bloom_bit, Batch, Counted, Pipeline, Scratch, CHUNK, MIN_IDLE_CHECK_NS, PARSED_FAST};

/// (Short for the reasons in this file.)
use FastPathExit as Exit;

/// Frames ahead of the one being forwarded whose first line is prefetched:
/// parsing read every header, but frame buffers sit a power of two apart
/// (2–4 KiB), so 64 headers share a few L1 sets and most are evicted by
/// the time the frame is forwarded.
pub(super) const FRAME_PREFETCH_AHEAD: usize = 4;

/// [`Pipeline::predict_new_flows`]' look ahead at a frame that opens a new
/// flow: its service and (for the keyed selections, Maglev hash and
/// persist) its endpoint, so that neither is looked up again, or why the
/// new-flow path cannot take it. It also predicts the source-NAT port the
/// flow will get and prefetches its reply entry's bucket; a wrong
/// prediction costs only that cache miss, since the port search runs as
/// always.
#[derive(Debug, Clone, Copy)]
pub(super) struct NewFlowHint {
    /// Index in [`Tables::services`] of [`Tables::lookup`]'s answer for the
    /// frame (`u32::MAX`: no hint).
    pub(super) svc: u32,
    /// [`select::keyed`]'s answer for the frame (`u16::MAX`: none known).
    pub(super) ei: u16,
    /// The NAT cursor the prediction took its port at, and the hash of the
    /// reply entry's key with that port (0: no prediction). The port search
    /// starting at the same cursor for the same endpoint meets the same key.
    pub(super) cursor: u32,
    pub(super) reply_hash: u64,
    /// The source-NAT candidate at `cursor` (its address's [`Ip16::words`]
    /// high word, IPv4 only, and port), when `reply_hash` is set and the
    /// address is IPv4 (else `nat_src` is 0).
    pub(super) nat_src: u64,
    pub(super) nat_port: u16,
    /// The frame's key is known to be absent from this worker's shard
    /// (set in [`Pipeline::decide_rest`] from the probes of both buckets
    /// and [`Pipeline::inserted`]).
    pub(super) absent: bool,
    /// There was a free way in the key's first bucket. Without one the
    /// new-flow path is not tried: in a full table the general path evicts
    /// anyway (and the rare key whose second bucket has room takes the
    /// general path too, with the same result).
    pub(super) room: bool,
    /// Why the new-flow path cannot take the frame, known before it is
    /// tried (no rule, a selection it does not make, no endpoint).
    pub(super) exit: Option<FastPathExit>,
}

impl NewFlowHint {
    pub(super) const NONE: NewFlowHint = NewFlowHint {
        svc: u32::MAX,
        ei: u16::MAX,
        cursor: 0,
        reply_hash: 0,
        nat_src: 0,
        nat_port: 0,
        absent: false,
        room: false,
        exit: None,
    };

    /// The hint of a frame that opens a flow the new-flow path cannot take.
    #[inline]
    fn exit(why: FastPathExit) -> NewFlowHint {
        NewFlowHint {
            exit: Some(why),
            ..NewFlowHint::NONE
        }
    }

    /// Whether the frame opens a flow (it was a candidate for the new-flow
    /// path, taken or not).
    #[inline]
    pub(super) fn opens(&self) -> bool {
        self.svc != u32::MAX || self.exit.is_some()
    }
}

/// What [`Pipeline::predict_new_flows`] carries from frame to frame: the
/// source-NAT cursor as the new flows before this one will leave it, and
/// the last look-ups.
#[derive(Default)]
pub(super) struct Ahead<'t> {
    cursor: u32,
    last: LastLookups<'t>,
}

/// Stage: the established fast path, for every frame it takes (bit `i` of
/// the result). Kept apart from the other paths, its loop holds its state
/// in registers. It moves no entry, so its frames see the table as the
/// batch found it: a frame decided later, in [`Pipeline::decide_rest`],
/// may still insert a flow that moves or evicts one of theirs, as if they
/// had come just before it. A flow's frames that it leaves (a table
/// change, an idle flow) all go to `decide_rest`, in their order.
#[inline(always)]
pub(super) fn forward_established(
    b: &Batch<'_>,
    sc: &Scratch,
    fc: &mut [Frame<'_>],
    vc: &mut [Verdict],
    ports: &mut PortCache,
    counted: &mut Counted,
) -> u64 {
    let n = fc.len().min(vc.len()).min(CHUNK);
    let mut done = 0u64;
    for i in 0..n {
        if let Some(ahead) = fc.get(i + FRAME_PREFETCH_AHEAD) {
            prefetch_addr(ahead.buf.as_ptr());
        }
        let (Some(f), Some(v)) = (fc.get_mut(i), vc.get_mut(i)) else {
            break;
        };
        // (A candidate of NO_SLOT is out of range: no fast read.)
        if sc.parsed[i] == PARSED_FAST {
            if let Some(port) = Pipeline::established(b, ports, f, &sc.words[i], sc.cands[i]) {
                *v = Verdict::Tx(port);
                counted.tx(f.len);
                done |= 1 << i;
            }
        }
    }
    done
}

impl Pipeline {
    /// Stage: for the frames that no bucket probe found a candidate for
    /// and that open a flow (TCP SYN, UDP), look up the service and the
    /// backend now, predict the source-NAT port and prefetch the reply
    /// entry's tag lines; then, once those lines are in, probe the reply
    /// buckets so their free slots are prefetched too.
    #[inline(always)]
    pub(super) fn predict_new_flows(&self, b: &Batch<'_>, sc: &mut Scratch, fc: &[Frame<'_>]) {
        let n = fc.len().min(CHUNK);
        let mine = b.mine;
        let mut ahead = Ahead {
            cursor: self.nat_cursor,
            ..Ahead::default()
        };
        let mut any = false;
        for i in 0..n {
            (sc.hints[i], sc.reply_hashes[i]) = match fc.get(i) {
                Some(f) if sc.parsed[i] == PARSED_FAST && sc.cands[i] == NO_SLOT => {
                    let room = mine.has_room(sc.hashes[i]);
                    self.predict(b, f.data(), &sc.words[i], room, &mut ahead)
                }
                _ => (NewFlowHint::NONE, 0),
            };
            if sc.reply_hashes[i] != 0 {
                // (The port search looks in both buckets.)
                mine.prefetch(sc.reply_hashes[i]);
                mine.prefetch_alt(sc.reply_hashes[i]);
                any = true;
            }
        }
        if any {
            for &h in sc.reply_hashes.iter().take(n) {
                if h != 0 {
                    mine.probe(h);
                }
            }
        }
    }

    /// The established-flow fast path for a frame [`wire::parse_fast`]
    /// accepted, whose flow the bucket probes found a candidate slot for in
    /// this worker's shard: `Some(port)` if it forwarded the frame. It does
    /// exactly what the general path (decide, tracked, apply) would, for the common case only; `None` (with
    /// nothing changed) hands the frame to that slow path: no entry here, an
    /// entry in another shard, a forward entry whose next hop predates the
    /// tables or that was idle for over a second, DSR, no such port, TTL ≤ 1.
    #[inline(always)]
    fn established(
        b: &Batch<'_>,
        ports: &mut PortCache,
        f: &mut Frame<'_>,
        w: &[u64; 5],
        cand: usize,
    ) -> Option<PortId> {
        let (counters, t, now, ct) = (b.counters, b.tables, b.now, b.mine);
        let hit = ct.read_v4(cand, w[1], w[3], w[4])?;
        if now.saturating_sub(hit.last_seen) > MIN_IDLE_CHECK_NS
            || (hit.kind() == Kind::Forward && hit.gen16() != t.generation as u16)
        {
            // Idle long enough that the flow may have expired (in either
            // direction), or a table change under a forward entry: the slow
            // path decides. (DSR entries take the general form, so the fast
            // read never takes them.)
            return None;
        }
        debug_assert!(!mode::is_dsr(hit.mode()));
        let port_id = hit.port();
        let port_mac = ports.src(t, port_id)?;
        let bytes = f.len as u64;
        // parse_fast checked that the frame holds its headers.
        let data = f.data_mut();
        let x = || FastXlat {
            deltas: hit.deltas(),
            src: hit.new_src_v4(),
            dst: hit.new_dst_v4(),
            ports: hit.ports_wire(),
            mac_dst: hit.mac8(),
            src_type: port_mac,
        };
        if w[4] as u8 == proto::TCP {
            let h = data.first_chunk_mut::<FAST_TCP_END>()?;
            if h[wire::FAST_L3 + ipv4::field::TTL] <= 1 {
                return None;
            }
            // (The rewrite first, which consumes most of what the read
            // loaded; it leaves the TCP flags as they are.)
            rewrite_fast_tcp(h, &x());
            hit.touch(
                now,
                bytes,
                TCP_SEEN_BITS[usize::from(h[wire::FAST_L4 + tcp::field::FLAGS])],
            );
            counters.endpoint_packet(hit.endpoint(), bytes);
        } else {
            let h = data.first_chunk_mut::<FAST_UDP_END>()?;
            if h[wire::FAST_L3 + ipv4::field::TTL] <= 1 {
                return None;
            }
            rewrite_fast_udp(h, &x());
            hit.touch(now, bytes, flags::SEEN);
            counters.endpoint_packet(hit.endpoint(), bytes);
        }
        Some(port_id)
    }

    /// The new-flow path: the first packet of an IPv4 TCP or UDP flow (a
    /// frame [`wire::parse_fast`] took, key words `w`, hash `hash`) that
    /// [`Pipeline::predict_new_flows`] found a service and a Maglev/persist
    /// backend for (`h`), whose key is known absent from this worker's
    /// shard: `Ok(port)` if it tracked and forwarded the frame. It does
    /// exactly what the general path's new flow and rewrite would (the
    /// same entries in the same slots, counters, NAT port and bytes; tested
    /// against it), from the words in hand and without a re-parse, for the
    /// common case only; `Err` (with nothing changed) hands the frame to
    /// the general path and says why ([`FastPathExit`]).
    #[inline(never)]
    pub(super) fn open_new_flow(
        &mut self,
        b: &Batch<'_>,
        ports: &mut PortCache,
        f: &mut Frame<'_>,
        w: &[u64; 5],
        hash: u64,
        h: &NewFlowHint,
    ) -> Result<PortId, FastPathExit> {
        let (t, now) = (b.tables, b.now);
        let svc = t.services.get(h.svc as usize).ok_or(Exit::NoRule)?;
        let spec = &svc.spec;
        let ep = svc
            .endpoints
            .get(usize::from(h.ei))
            .ok_or(Exit::NoEndpoint)?;
        let nh = ep.next_hop.ok_or(Exit::NoNextHop)?;
        if !spec.allowed_sources.is_empty() {
            return Err(Exit::SourceFilter);
        }
        if !ep.addr.is_v4() {
            return Err(Exit::Unsupported);
        }
        let port_mac = ports.src(t, nh.port).ok_or(Exit::NoNextHop)?;
        let proto = w[4] as u8;
        let (sport, dport) = ((w[4] >> 32) as u16, (w[4] >> 16) as u16);
        let bport = if ep.port == 0 { dport } else { ep.port };
        let ep_hi = ep.addr.words()[1];
        let rep_w4 = (u64::from(bport) << 32) | u64::from(proto);
        let hasher = self.ct.table().hasher();
        // (source address word, source port, reply key hash, NAT cursor after)
        let (flow_mode, src_hi, new_sport, rep_hash, cursor) = match spec.mode {
            NatMode::Dnat => (
                mode::DNAT,
                w[1],
                sport,
                hasher.hash_v4(ep_hi, w[1], rep_w4 | (u64::from(sport) << 16)),
                self.nat_cursor,
            ),
            NatMode::OneArm | NatMode::FullNat => {
                // The port search's first candidate (the prediction took it
                // at this cursor if it predicted this search); if it is taken,
                // the general path searches on from the same cursor.
                let (src_hi, port, rep_hash) =
                    if h.cursor == self.nat_cursor && h.reply_hash != 0 && h.nat_src != 0 {
                        (h.nat_src, h.nat_port, h.reply_hash)
                    } else {
                        let snat = ep.snat_addr.ok_or(Exit::NoNatPort)?;
                        let nat = NatWalk::new(t, snat, self.worker, self.workers)
                            .ok_or(Exit::NoNatPort)?;
                        let (addr, port) = nat.candidate(self.nat_cursor);
                        if !addr.is_v4() {
                            return Err(Exit::Unsupported);
                        }
                        let src_hi = addr.words()[1];
                        let rep_hash =
                            hasher.hash_v4(ep_hi, src_hi, rep_w4 | (u64::from(port) << 16));
                        (src_hi, port, rep_hash)
                    };
                let m = if spec.mode == NatMode::OneArm {
                    mode::ONE_ARM
                } else {
                    mode::FULL_NAT
                };
                (m, src_hi, port, rep_hash, self.nat_cursor.wrapping_add(1))
            }
            NatMode::Dsr => return Err(Exit::Dsr),
        };
        let rx_port = f.rx_port;
        let bytes = f.len as u64;
        let data = f.data_mut();
        let client_mac = ethernet::src_mac(data);
        let tcp = proto == proto::TCP;
        // parse_fast checked that the frame holds its headers.
        let (ttl, tcp_flags) = if tcp {
            let hd = data
                .first_chunk::<FAST_TCP_END>()
                .ok_or(Exit::Unsupported)?;
            (
                hd[wire::FAST_L3 + ipv4::field::TTL],
                hd[wire::FAST_L4 + tcp::field::FLAGS],
            )
        } else {
            (
                data.first_chunk::<FAST_UDP_END>()
                    .ok_or(Exit::Unsupported)?[wire::FAST_L3 + ipv4::field::TTL],
                0,
            )
        };
        if ttl <= 1 {
            return Err(Exit::Ttl);
        }
        let v4 = |hi: u64| ((hi >> 32) as u32).to_le_bytes();
        let mut fwd_flags = flags::SEEN;
        if tcp {
            fwd_flags |= tcp_flag_bits(tcp_flags);
        }
        let flow = NewFlowV4 {
            key: TupleV4 {
                src: v4(w[1]),
                dst: v4(w[3]),
                sport,
                dport,
            },
            proto,
            xlat: TupleV4 {
                src: v4(src_hi),
                dst: v4(ep_hi),
                sport: new_sport,
                dport: bport,
            },
            fwd_flags,
            mode: flow_mode,
            timeout_s: spec.inactive_timeout_s,
            endpoint: ep.id,
            service: svc.index as u16,
            gen: t.generation as u32,
            to_backend: nh,
            to_client: NextHop {
                mac: client_mac,
                port: rx_port,
            },
        };
        let (_, deltas) =
            self.ct
                .insert_new_v4(&flow, hash, rep_hash, now)
                .map_err(|d| match d {
                    Decline::Collision => Exit::Collision,
                    Decline::NoRoom => Exit::TableFull,
                    Decline::Wide => Exit::Unsupported,
                })?;
        if spec.sel == Selection::Persist {
            let client = Ip16::from_words([0, w[1]]);
            self.ct
                .table()
                .affinity()
                .set(svc.rule_key, &client, ep.id, now);
        }
        self.nat_cursor = cursor;
        self.inserted |= bloom_bit(hash) | bloom_bit(rep_hash);
        self.select.opened(ep);
        bump(&self.counters.flows_created, 1);
        self.counters.endpoint_flow(ep.id);
        if self.sync.is_some() {
            self.announce_open_v4(&flow, ep, now);
        }
        self.counters.endpoint_packet(ep.id, bytes);
        let (s, d, m) = (new_sport.to_be_bytes(), bport.to_be_bytes(), nh.mac.0);
        let x = FastXlat {
            deltas,
            src: flow.xlat.src,
            dst: flow.xlat.dst,
            ports: [s[0], s[1], d[0], d[1]],
            mac_dst: [m[0], m[1], m[2], m[3], m[4], m[5], 0, 0],
            src_type: port_mac,
        };
        // (parse_fast checked that the frame holds its headers.)
        if tcp {
            let hd = data.first_chunk_mut::<FAST_TCP_END>();
            rewrite_fast_tcp(hd.ok_or(Exit::Unsupported)?, &x);
        } else {
            let hd = data.first_chunk_mut::<FAST_UDP_END>();
            rewrite_fast_udp(hd.ok_or(Exit::Unsupported)?, &x);
        }
        Ok(nh.port)
    }

    /// [`Pipeline::predict_new_flows`] for one frame [`wire::parse_fast`]
    /// took (key words `w`) with no candidate entry: if it opens a flow, its
    /// service and keyed backend choice (or why it has none), and the hash
    /// of the reply entry it would get with the NAT port at the cursor of
    /// `ahead` (advanced if so; 0 if no prediction). Changes nothing but
    /// `ahead`: [`Pipeline::decide_rest`] decides.
    #[inline]
    fn predict<'t>(
        &self,
        b: &Batch<'t>,
        data: &[u8],
        w: &[u64; 5],
        room: bool,
        ahead: &mut Ahead<'t>,
    ) -> (NewFlowHint, u64) {
        let (t, now) = (b.tables, b.now);
        let Ahead { cursor, last } = ahead;
        let proto = w[4] as u8;
        let opening = match proto {
            proto::TCP => data
                .get(wire::FAST_L4 + tcp::field::FLAGS)
                .is_some_and(|&f| f & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN),
            proto::UDP => true,
            _ => false,
        };
        if !opening {
            return (NewFlowHint::NONE, 0);
        }
        // (Words 0 and 2 of a fast-parsed frame are not written: an IPv4
        // key's are zero.)
        let key = FlowKey {
            src: Ip16::from_words([0, w[1]]),
            dst: Ip16::from_words([0, w[3]]),
            sport: (w[4] >> 32) as u16,
            dport: (w[4] >> 16) as u16,
            proto,
        };
        let Some(svc) = last.service(t, w) else {
            return (NewFlowHint::exit(Exit::NoRule), 0);
        };
        let mut hint = NewFlowHint {
            svc: svc.index,
            room,
            ..NewFlowHint::NONE
        };
        let Some(ei) = select::keyed(self.ct.table().affinity(), svc, &key, now) else {
            hint.exit = Some(match svc.spec.sel {
                Selection::Hash | Selection::Persist => Exit::NoEndpoint,
                _ => Exit::Selection,
            });
            return (hint, 0);
        };
        hint.ei = ei as u16;
        let spec = &svc.spec;
        let Some(ep) = svc.endpoints.get(ei) else {
            return (hint, 0);
        };
        let (NatMode::OneArm | NatMode::FullNat, Some(snat), Some(_)) =
            (spec.mode, ep.snat_addr, ep.next_hop)
        else {
            return (hint, 0);
        };
        if !spec.allowed_sources.is_empty()
            && !spec
                .allowed_sources
                .iter()
                .any(|c| c.contains(key.src.into()))
        {
            return (hint, 0);
        }
        let Some(nat) = last.nat(t, snat, self.worker, self.workers) else {
            return (hint, 0);
        };
        let (addr, port) = nat.candidate(*cursor);
        hint.cursor = *cursor;
        *cursor = cursor.wrapping_add(1);
        let to = Target {
            addr: ep.addr,
            port: if ep.port == 0 { key.dport } else { ep.port },
            proto,
        };
        hint.reply_hash = self.ct.table().hash(&to.reply_key(addr, port));
        if addr.is_v4() {
            (hint.nat_src, hint.nat_port) = (addr.words()[1], port);
        }
        (hint, hint.reply_hash)
    }
}

/// [`FlowKey::words`] of an IPv4 5-tuple, straight from the frame's bytes
/// (an IPv4 address maps to `::ffff:a.b.c.d`: low word 0, high word
/// `0xffff_0000 | a.b.c.d << 32` in little-endian byte order).
#[inline(always)]
pub(super) fn fast_words(q: &FastMeta) -> [u64; 5] {
    [
        0,
        v4_word(q.src),
        0,
        v4_word(q.dst),
        (u64::from(q.sport) << 32) | (u64::from(q.dport) << 16) | u64::from(q.proto),
    ]
}

/// [`flags::SEEN`] with the [`tcp_flag_bits`] of every TCP flags byte: the
/// fast path's one load per segment.
static TCP_SEEN_BITS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = flags::SEEN | tcp_flag_bits(i as u8);
        i += 1;
    }
    t
};

/// The last port the fast path looked up in this batch's tables, and its
/// MAC (most frames of a batch leave by the same port; the tables do not
/// change during a batch, so this is exactly [`Tables::port`]).
#[derive(Default)]
pub(super) struct PortCache {
    /// The port id plus one (0: none yet).
    id: u32,
    /// Its MAC and the IPv4 ethertype ([`src_mac_ipv4`]).
    src: [u8; 8],
}

impl PortCache {
    /// Port `id`'s MAC as the fast rewrite writes it (with the IPv4
    /// ethertype after it).
    #[inline(always)]
    fn src(&mut self, t: &Tables, id: PortId) -> Option<[u8; 8]> {
        if self.id == u32::from(id) + 1 {
            return Some(self.src);
        }
        let src = src_mac_ipv4(t.port(id)?.mac);
        (self.id, self.src) = (u32::from(id) + 1, src);
        Some(src)
    }
}

/// What [`Pipeline::predict_new_flows`] last looked up in this batch's
/// tables: the service by
/// the IPv4 destination and `dport << 16 | proto` it was looked up for, and
/// the source-NAT walk by its address (a SYN flood, or a busy service,
/// brings batches of new flows to one rule; the tables do not change
/// during a batch, so these are exactly what looking up again gives).
#[derive(Default)]
struct LastLookups<'t> {
    svc: Option<(u64, u32, Option<&'t Service>)>,
    nat: Option<(Ip16, Option<NatWalk<'t>>)>,
}

impl<'t> LastLookups<'t> {
    /// [`Tables::lookup`] of the IPv4 key words `w` ([`FlowKey::words`];
    /// words 0 and 2 are not read).
    #[inline(always)]
    fn service(&mut self, t: &'t Tables, w: &[u64; 5]) -> Option<&'t Service> {
        let (dst, port_proto) = (w[3], w[4] as u32);
        match self.svc {
            Some((d, pp, svc)) if d == dst && pp == port_proto => svc,
            _ => {
                let svc = t.lookup(
                    Ip16::from_words([0, dst]),
                    port_proto as u8,
                    (port_proto >> 16) as u16,
                );
                self.svc = Some((dst, port_proto, svc));
                svc
            }
        }
    }

    /// [`NatWalk::new`] for source-NAT address `snat`.
    #[inline(always)]
    fn nat(
        &mut self,
        t: &'t Tables,
        snat: Ip16,
        worker: usize,
        workers: usize,
    ) -> Option<NatWalk<'t>> {
        match self.nat {
            Some((a, walk)) if a == snat => walk,
            _ => {
                let walk = NatWalk::new(t, snat, worker, workers);
                self.nat = Some((snat, walk));
                walk
            }
        }
    }
}
