//! The general path: every frame the fast paths do not take, decided one
//! at a time: later fragments, ICMP errors (to [`super::icmp`]), look-ups
//! in this worker's shard and the others', tracked flows (with their
//! timeouts and their backend's state checked), new flows (rule, source
//! filter, TCP state, backend choice, source NAT, insert), and the
//! rewrite by a flow's entry.
//!
//! Invariant: a packet that starts no flow changes nothing: every check
//! that can refuse a new flow comes before its NAT port, round-robin turn,
//! connection count or entries are taken.

use crate::conntrack::{flags, mode, FlowData, FlowKey, FlowRecord, Hashed, Hit, Kind};
use crate::counters::bump;
use crate::drop::DropReason;
use crate::frame::{Frame, Verdict};
use crate::net::Ip16;
use crate::snat::{self, Target};
use crate::tables::{Endpoint, EndpointState, NatMode, NextHop, Service, Tables};
use crate::wire::rewrite::{self, encap_ipip, fast_deltas, rewrite_fast, set_macs, TupleV4, Xlat};
use crate::wire::tcp::flags as tcp_flags;
use crate::wire::{self, ethernet, proto, Frag, PacketMeta};

use super::gc::on_removed;
use super::{bloom_bit, Pipeline, MIN_IDLE_CHECK_NS};

/// A packet on the general path: its batch's tables and clock, its parse,
/// its flow key and the key's hash in the flow table.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pkt<'a> {
    pub t: &'a Tables,
    pub now: u64,
    pub m: &'a PacketMeta,
    pub key: &'a FlowKey,
    pub hash: u64,
}

impl Pipeline {
    /// Decide one parsed frame.
    #[inline(always)]
    pub(super) fn decide(&mut self, p: &Pkt<'_>, f: &mut Frame<'_>) -> Verdict {
        let Pkt {
            t,
            now,
            m,
            key,
            hash,
        } = *p;
        if m.frag == Frag::Later {
            // It follows its datagram's first fragment, if this worker
            // forwarded that one.
            if let Some((fk, fh)) = self.frags.flow_of(m, now) {
                if let Some(hit) = self.find_anywhere(&fk, fh) {
                    // (Its ports are the first fragment's; it has none. The
                    // rewrite leaves what follows the IP header alone.)
                    let fm = PacketMeta {
                        sport: fk.sport,
                        dport: fk.dport,
                        ..*m
                    };
                    let fp = Pkt {
                        m: &fm,
                        key: &fk,
                        hash: fh,
                        ..*p
                    };
                    return self.tracked(&fp, f, &hit);
                }
            }
            return if t.is_vip(m.dst) || t.is_snat_addr(m.dst) {
                Verdict::Drop(DropReason::Fragment)
            } else {
                Verdict::Pass
            };
        }
        let icmp = proto::is_icmp(m.proto);
        if m.is_icmp_error() {
            return self.icmp_error(t, f, m);
        }
        // (Stages 1.5 and 1.6 may have shown the key absent already.)
        let hit = if self.hint.absent {
            debug_assert!(self.ct.table().find_in(self.worker, key, hash).is_none());
            None
        } else {
            self.ct.table().find_in(self.worker, key, hash)
        };
        if let Some(hit) = hit {
            return self.tracked(p, f, &hit);
        }
        // (The hint, when there is one, is this very look-up, done ahead.)
        let svc = match self.hint.svc {
            u32::MAX => t.lookup(m.dst, m.proto, service_port(m)),
            i => t.services.get(i as usize).map(|s| &**s),
        };
        if let Some(svc) = svc {
            return self.new_flow(p, f, svc, false);
        }
        if let Some(hit) = self.ct.table().find_elsewhere(self.worker, key, hash) {
            return self.tracked(p, f, &hit);
        }
        if t.is_vip(m.dst) {
            if m.is_echo_request() {
                return self.echo_reply(t, f, m);
            }
            return Verdict::Drop(if icmp {
                DropReason::IcmpUnsupported
            } else {
                DropReason::NoService
            });
        }
        if t.is_snat_addr(m.dst) {
            return Verdict::Drop(DropReason::UntrackedReply);
        }
        Verdict::Pass
    }

    /// The entry keyed `key` (hash `hash`): in this worker's shard, else in
    /// another's.
    pub(super) fn find_anywhere(&self, key: &FlowKey, hash: u64) -> Option<Hit> {
        let ct = self.ct.table();
        ct.find_in(self.worker, key, hash)
            .or_else(|| ct.find_elsewhere(self.worker, key, hash))
    }

    /// A packet of a tracked flow.
    fn tracked(&mut self, p: &Pkt<'_>, f: &mut Frame<'_>, hit: &Hit) -> Verdict {
        let Pkt { t, now, m, .. } = *p;
        let mut d = hit.data;
        if d.kind == Kind::Forward
            && hit.shard == self.worker
            && now.saturating_sub(hit.last_seen) > MIN_IDLE_CHECK_NS
            && self.ct.is_expired(hit.slot, now)
        {
            // Idle past its timeout but not yet swept: the flow is over, and
            // this packet starts a new one (chosen afresh).
            return self.restart_flow(p, f, hit.slot, false);
        }
        if d.kind == Kind::Reply
            && hit.shard == self.worker
            && now.saturating_sub(hit.last_seen) > MIN_IDLE_CHECK_NS
            && self.ct.is_expired(hit.slot, now)
        {
            // Likewise from the backend's side: the flow is over, so this
            // answer is treated as the sweep would have left it, untracked
            // (it must not bring the flow back).
            if let Some(r) = self.ct.remove_pair(hit.slot, false) {
                on_removed(&mut self.select, &self.counters, &mut self.sync, r);
            }
            return self.decide(p, f);
        }
        if d.kind == Kind::Forward && d.gen != t.generation as u32 && hit.shard == self.worker {
            // The tables changed since this flow last passed: is its backend still there?
            // (An id its backend gave up may since have gone to another:
            // then this flow is not that one's.)
            match t.endpoint(d.endpoint) {
                Some((_, ep)) if ep.state != EndpointState::Down && ep.holds_flow_of(d.gen) => {
                    if let Some(nh) = ep.next_hop {
                        d.mac = nh.mac;
                        d.port = nh.port;
                    }
                    d.gen = t.generation as u32;
                    self.ct.revalidate(hit.slot, &d);
                }
                _ => {
                    // Backend removed or down: re-select. TCP mid-stream packets go
                    // to the new backend too, which resets them, so the client
                    // reconnects at once instead of timing out.
                    return self.restart_flow(p, f, hit.slot, true);
                }
            }
        }
        let mut fl = flags::SEEN;
        if m.proto == proto::TCP {
            fl |= tcp_flag_bits(m.tcp_flags);
        }
        self.ct.table().add_flags(hit, fl);
        self.ct.table().touch(hit, now, f.len as u64);
        self.counters.endpoint_packet(d.endpoint, f.len as u64);
        self.apply(t, f, m, &d)
    }

    /// End the flow in `slot` and treat this packet as the first of a new one.
    /// `reselect`: the old backend went away, so the flow is removed early and
    /// a TCP packet without SYN may start the new flow (the new backend resets
    /// it and the client reconnects at once).
    fn restart_flow(
        &mut self,
        p: &Pkt<'_>,
        f: &mut Frame<'_>,
        slot: usize,
        reselect: bool,
    ) -> Verdict {
        let Pkt { t, m, .. } = *p;
        if let Some(r) = self.ct.remove_pair(slot, reselect) {
            on_removed(&mut self.select, &self.counters, &mut self.sync, r);
        }
        match t.lookup(m.dst, m.proto, service_port(m)) {
            Some(svc) => self.new_flow(p, f, svc, reselect),
            None => Verdict::Drop(DropReason::NoService),
        }
    }

    /// The first packet of a flow to service `svc`.
    fn new_flow(
        &mut self,
        p: &Pkt<'_>,
        f: &mut Frame<'_>,
        svc: &Service,
        reselect: bool,
    ) -> Verdict {
        let Pkt {
            t,
            now,
            m,
            key,
            hash,
        } = *p;
        let spec = &svc.spec;
        if !spec.allowed_sources.is_empty()
            && !spec
                .allowed_sources
                .iter()
                .any(|c| c.contains(m.src.into()))
        {
            return Verdict::Drop(DropReason::SourceNotAllowed);
        }
        if m.proto == proto::TCP
            && !reselect
            && (m.tcp_flags & tcp_flags::SYN == 0 || m.tcp_flags & tcp_flags::ACK != 0)
        {
            return Verdict::Drop(DropReason::TcpNotSyn);
        }
        let icmp = proto::is_icmp(m.proto);
        if icmp && !m.is_echo_request() {
            return Verdict::Drop(DropReason::IcmpUnsupported);
        }
        // Checked before anything is chosen or tracked: a packet that cannot
        // be forwarded starts no flow (no entries, NAT port, round-robin
        // turn or connection count). DSR forwards it as it is.
        if spec.mode != NatMode::Dsr && m.ttl <= 1 {
            return Verdict::Drop(DropReason::TtlExceeded);
        }
        // The look ahead made this same keyed choice for this frame.
        let keyed = (self.hint.svc == svc.index && self.hint.ei != u16::MAX)
            .then_some(usize::from(self.hint.ei));
        let affinity = self.ct.table().affinity();
        let Some(ei) = self.select.choose(svc, key, now, affinity, keyed) else {
            return Verdict::Drop(DropReason::NoEndpoint);
        };
        let ep: &Endpoint = &svc.endpoints[ei];
        let Some(nh) = ep.next_hop else {
            return Verdict::Drop(DropReason::NoNeighbor);
        };
        if t.port(nh.port).is_none() {
            return Verdict::Drop(DropReason::NoPort);
        }
        let bport = if icmp || ep.port == 0 {
            m.dport
        } else {
            ep.port
        };
        let flow_mode = match spec.mode {
            NatMode::Dnat => mode::DNAT,
            NatMode::OneArm => mode::ONE_ARM,
            NatMode::FullNat => mode::FULL_NAT,
            NatMode::Dsr if spec.dsr_ipip => mode::DSR_IPIP,
            NatMode::Dsr => mode::DSR,
        };
        // The reply entry's key hash, when the NAT port search computed it.
        let (new_src, new_sport, reply_hash) = match spec.mode {
            NatMode::Dnat | NatMode::Dsr => (m.src, m.sport, None),
            NatMode::OneArm | NatMode::FullNat => {
                let Some(snat) = ep.snat_addr else {
                    return Verdict::Drop(DropReason::NatPortsExhausted);
                };
                // The look ahead hashed the first candidate's reply key if it
                // predicted this very search (same endpoint, same cursor).
                let h = self.hint;
                let predicted = (h.svc == svc.index
                    && usize::from(h.ei) == ei
                    && h.cursor == self.nat_cursor
                    && h.reply_hash != 0)
                    .then_some(h.reply_hash);
                let to = Target {
                    addr: ep.addr,
                    port: bport,
                    proto: m.proto,
                };
                let me = (self.worker, self.workers);
                let ct = self.ct.table();
                let found = snat::find(t, snat, me, &mut self.nat_cursor, ct, &to, predicted);
                match found {
                    Some((addr, port, h)) => (addr, port, Some(h)),
                    None => return Verdict::Drop(DropReason::NatPortsExhausted),
                }
            }
        };
        let dsr = spec.mode == NatMode::Dsr;
        let mut fwd_flags = flags::SEEN;
        if m.proto == proto::TCP {
            fwd_flags |= tcp_flag_bits(m.tcp_flags);
        }
        let flow = FlowRecord {
            key: *key,
            xlat: Xlat {
                src: new_src,
                dst: if dsr { m.dst } else { ep.addr },
                sport: new_sport,
                dport: if icmp {
                    new_sport
                } else if dsr {
                    m.dport
                } else {
                    bport
                },
            },
            mode: flow_mode,
            timeout_s: spec.inactive_timeout_s,
            fwd_flags,
            rep_flags: 0,
            endpoint: ep.id,
            service: svc.index as u16,
            gen: t.generation as u32,
            to_backend: nh,
            // (Not `then` with a closure: that closure was compiled out of
            // line, a call on every new flow.)
            to_client: if dsr {
                None
            } else {
                Some(NextHop {
                    mac: ethernet::src_mac(f.data()),
                    port: f.rx_port,
                })
            },
        };
        // The forward key is absent from this shard: `decide` looked it up,
        // or `restart_flow` just removed it. The NAT port search found the
        // reply key absent; without it (DNAT) an old entry may hold the key
        // and is overwritten.
        let (rep, rep_absent) = match reply_hash {
            _ if dsr => (0, false),
            Some(h) => (h, true),
            None => (self.ct.table().hash(&flow.reply_key()), false),
        };
        let at = Hashed {
            fwd: hash,
            fwd_absent: true,
            rep,
            rep_absent,
        };
        self.inserted |= bloom_bit(hash) | if dsr { 0 } else { bloom_bit(rep) };
        let (sel, counters, sync) = (&mut self.select, &self.counters, &mut self.sync);
        let fwd = flow.forward();
        let res = self.ct.insert_hashed(&flow, &fwd, &at, now, &mut |r| {
            on_removed(sel, counters, sync, r)
        });
        let Ok((_, deltas)) = res else {
            return Verdict::Drop(DropReason::ConntrackFull);
        };
        self.select.opened(ep);
        bump(&self.counters.flows_created, 1);
        self.counters.endpoint_flow(ep.id);
        if self.sync.is_some() {
            self.announce_open(&flow, ep, now);
        }
        self.counters.endpoint_packet(ep.id, f.len as u64);
        // (The entry's checksum changes are this packet's: it is keyed by it.)
        self.apply_with(t, f, m, &fwd, deltas)
    }

    /// Rewrite a frame by a flow entry and pick its port.
    fn apply(&mut self, t: &Tables, f: &mut Frame<'_>, m: &PacketMeta, d: &FlowData) -> Verdict {
        self.apply_with(t, f, m, d, None)
    }

    /// [`Pipeline::apply`], with the entry's checksum changes if known
    /// ([`rewrite::fast_deltas`] from the frame's addresses and ports).
    fn apply_with(
        &mut self,
        t: &Tables,
        f: &mut Frame<'_>,
        m: &PacketMeta,
        d: &FlowData,
        deltas: Option<u32>,
    ) -> Verdict {
        let Some(port) = t.port(d.port) else {
            return Verdict::Drop(DropReason::NoPort);
        };
        let src_mac = port.mac;
        // DSR changes only the L2 header (the backend answers the client
        // directly, from the VIP), so not even the TTL is touched.
        let dsr = d.kind == Kind::Forward && mode::is_dsr(d.mode);
        if !dsr && m.ttl <= 1 {
            return Verdict::Drop(DropReason::TtlExceeded);
        }
        // The common shape takes the fixed-offset rewrite (same bytes,
        // tested), with the entry's checksum changes, or (an entry that does
        // not keep them) those summed here.
        let simple = !dsr
            && m.v4
            && usize::from(m.l3_off) == wire::FAST_L3
            && usize::from(m.l4_off) == wire::FAST_L4
            && m.frag == Frag::None
            && (m.proto == proto::TCP || m.proto == proto::UDP)
            && {
                let new = TupleV4 {
                    src: d.new_src.v4_octets(),
                    dst: d.new_dst.v4_octets(),
                    sport: d.new_sport,
                    dport: d.new_dport,
                };
                let deltas = deltas.unwrap_or_else(|| {
                    let old = TupleV4 {
                        src: m.src.v4_octets(),
                        dst: m.dst.v4_octets(),
                        sport: m.sport,
                        dport: m.dport,
                    };
                    fast_deltas(old, new)
                });
                rewrite_fast(
                    f.data_mut(),
                    m.proto == proto::TCP,
                    deltas,
                    new,
                    d.mac,
                    src_mac,
                )
            };
        if !simple {
            if dsr {
                set_macs(f.data_mut(), d.mac, src_mac);
            } else {
                rewrite::forward(f.data_mut(), m, &d.xlat(), d.mac, src_mac);
            }
        }
        if d.kind == Kind::Forward && d.mode == mode::DSR_IPIP {
            if let Err(r) = ipip_wrap(t, &port.addrs, f, m, d) {
                return Verdict::Drop(r);
            }
        }
        Verdict::Tx(d.port)
    }

    /// The slow path: every frame the fast path does not take.
    #[inline(never)]
    pub(super) fn slow(
        &mut self,
        t: &Tables,
        now: u64,
        f: &mut Frame<'_>,
        meta: &Result<PacketMeta, DropReason>,
        hash: u64,
    ) -> Verdict {
        match meta {
            Err(r) => Verdict::Drop(*r),
            Ok(m) if !m.is_ip() => Verdict::Pass,
            Ok(m) => {
                let m = *m;
                let key = FlowKey {
                    src: m.src,
                    dst: m.dst,
                    sport: m.sport,
                    dport: m.dport,
                    proto: m.proto,
                };
                let p = Pkt {
                    t,
                    now,
                    m: &m,
                    key: &key,
                    hash,
                };
                let v = self.decide(&p, f);
                if m.frag == Frag::First && matches!(v, Verdict::Tx(_)) {
                    self.frags.remember(&m, key, hash, now);
                }
                v
            }
        }
    }

    /// The slow path of a frame [`wire::parse_fast`] took (parsed again:
    /// cheaper than keeping every frame's parse for the few that need it).
    #[inline(never)]
    pub(super) fn slow_fast(
        &mut self,
        t: &Tables,
        now: u64,
        f: &mut Frame<'_>,
        hash: u64,
    ) -> Verdict {
        let meta = match wire::parse_fast(f.data()) {
            Some(q) => Ok(q.to_meta()),
            None => wire::parse(f.data()),
        };
        self.slow(t, now, f, &meta, hash)
    }
}

/// Where a flow's packets are headed: its translation's destination, or
/// for DSR (which keeps the VIP there) its endpoint's address in `t`.
fn backend_addr(t: &Tables, d: &FlowData) -> Ip16 {
    t.endpoint(d.endpoint).map_or(d.new_dst, |(_, e)| e.addr)
}

/// Wrap the packet `m` of a DSR-over-IPIP flow `d` for its backend: an
/// outer IPv4 header from the transmit port's IPv4 address (`addrs`).
pub(super) fn ipip_wrap(
    t: &Tables,
    addrs: &[std::net::IpAddr],
    f: &mut Frame<'_>,
    m: &PacketMeta,
    d: &FlowData,
) -> Result<(), DropReason> {
    let outer_src = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .map(|a| Ip16::from(*a))
        .ok_or(DropReason::NoPort)?;
    if encap_ipip(f, m, outer_src, backend_addr(t, d)) {
        Ok(())
    } else {
        Err(DropReason::NoRoom)
    }
}

/// The port a packet is matched against rules with: ICMP rules use port 0
/// (the echo identifier in `dport` is a flow key, not a service port).
pub(super) fn service_port(m: &PacketMeta) -> u16 {
    if proto::is_icmp(m.proto) {
        0
    } else {
        m.dport
    }
}

/// The [`flags`] bits a TCP segment with flags `tcp` sets: FIN, SYN and
/// RST share their TCP bit positions; ACK counts only without SYN.
#[inline(always)]
pub(super) const fn tcp_flag_bits(tcp: u8) -> u8 {
    use tcp_flags::{ACK, FIN, RST, SYN};
    const _: () = assert!(flags::FIN == FIN && flags::SYN == SYN && flags::RST == RST);
    let ack_only = (tcp & (ACK | SYN) == ACK) as u8;
    (tcp & (FIN | SYN | RST)) | (ack_only * flags::ACK)
}
