//! The slot: how one table entry is laid out in its 128 bytes, the one
//! place that knows it. Everything outside this file reads and writes
//! entries as [`FlowData`] and [`NewFlowV4`], or through a [`FastHit`].
//!
//! Invariants: only the shard's owner writes a slot's key, translation and
//! form, inside its sequence lock (odd while written); any worker may count
//! packets, refresh the last-seen time and OR in flag bits of an entry it
//! matched, and each direction of a flow arrives on one queue, so each of
//! those has one writer too. A reader that is not the owner reads under the
//! sequence lock ([`Slot::read`]); the owner's fast path reads without it
//! ([`Slot::read_v4_owned`]).

use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use super::entry::{mode, FlowData, Kind, NewFlowV4};
use super::key::{v4_word, FlowKey};
use crate::frame::PortId;
use crate::net::{Ip16, MacAddr};
use crate::tables::{EndpointId, NextHop};
use crate::wire::rewrite::{fast_deltas, reverse_deltas, TupleV4, Xlat};

/// last_seen is refreshed at most this often per entry (keeps cross-core writes rare).
const TOUCH_GRANULARITY_NS: u64 = 50_000_000;

/// One 128-byte slot, in one of two forms ([`META_V4_LINE`] in `meta`
/// tells which).
///
/// - **Line form**, for IPv4 → IPv4 entries that are not DSR (almost every
///   entry of an IPv4 service): the first cache line holds everything the
///   established fast path reads and writes, so an established packet
///   reads one slot line, not two. Key words 0 and 2 of an IPv4 key are
///   0, and the low halves of words 1 and 3 are the constant
///   `0xffff_0000` ([`Ip16::words`]); the line form keeps its fast-path
///   fields there instead ([`LineWords`]) and its packet and byte counts
///   as one packed word ([`PACKED_PACKET`]). The second line keeps the
///   whole translation as the general form does, for the slow path and
///   dumps, except that `new_src[0]` (0 for an IPv4 address) holds the
///   packets folded out of the packed word.
/// - **General form** (IPv6 keys or translations, DSR): the five key words
///   as they are, packets in `counts`, the translation in the second line.
#[derive(Debug, Default)]
#[repr(C, align(64))]
pub(super) struct Slot {
    /// Sequence lock in the low 16 bits (odd while the owner writes); the
    /// low 16 bits of the entry's tables generation in the high 16, for the
    /// fast path's check. Only the owner writes either.
    seq: AtomicU32,
    /// bits 0-1 kind (1 fwd, 2 reply), 2-6 flags, 7 [`META_V4_LINE`],
    /// 8-31 timeout seconds.
    meta: AtomicU32,
    /// The key ([`FlowKey::words`]); in the line form, [`LineWords`].
    key: [AtomicU64; 5],
    last_seen: AtomicU64,
    /// General form: packets. Line form: packets << [`PACKED_SHIFT`] | bytes
    /// since the last fold ([`Slot::fold`]).
    counts: AtomicU64,
    // --- second cache line ---
    /// Bytes (line form: folded out of `counts`).
    bytes: AtomicU64,
    /// gen (low 32) | endpoint (high 32)
    gen_ep: AtomicU64,
    /// [`Ip16::words`] of the new source; in the line form, word 0 holds
    /// the packets folded out of `counts`.
    new_src: [AtomicU64; 2],
    new_dst: [AtomicU64; 2],
    /// new_sport | new_dport << 16 | mode << 32 | service << 40
    ports: AtomicU64,
    /// mac (low 48) | port << 48
    l2: AtomicU64,
}

const KIND_FWD: u32 = 1;
const KIND_REPLY: u32 = 2;

fn pack_meta(kind: Kind, flags: u8, timeout_s: u32) -> u32 {
    let k = match kind {
        Kind::Forward => KIND_FWD,
        Kind::Reply => KIND_REPLY,
    };
    k | (u32::from(flags & FLAG_MASK) << 2) | (timeout_s.min(0x00ff_ffff) << 8)
}

/// The [`flags`] bits' mask within their six bits of `meta`; the sixth is
/// [`META_V4_LINE`].
const FLAG_MASK: u8 = 0x1f;
/// `meta` bit: the entry is in the line form (IPv4 → IPv4, not DSR, an
/// endpoint id below 2^16), so the fast path, which leaves DSR and IPv6 to
/// the slow path, takes exactly the entries with the bit.
const META_V4_LINE: u32 = 0x20 << 2;

/// The high halves of key words 1 and 3 (the IPv4 addresses).
const HI: u64 = 0xffff_ffff_0000_0000;
/// The bits of key word 4 ([`FlowKey::words`]) a key uses: proto (0-7),
/// dport (16-31), sport (32-47). The line form keeps the endpoint id in the
/// top 16 ([`LineWords::ep_bits`]).
const KEY4_MASK: u64 = 0x0000_ffff_ffff_ffff;
/// Endpoint ids the line form can hold (16 bits: every id, as
/// [`crate::tables::MAX_ENDPOINT_IDS`] is 2^16; larger ones would take the
/// general form).
const LINE_MAX_ENDPOINT: u64 = 1 << 16;
/// Where the packet count starts in a packed `counts` word (bytes below).
/// The word is folded out once its top bit is set (2^19 packets): by then
/// packets of under [`PACKED_MAX_BYTES`] each have added under 2^43 bytes,
/// so neither field can overflow, and the fast path's check is the sign
/// of the sum.
const PACKED_SHIFT: u32 = 44;
/// One packet in a packed `counts` word.
const PACKED_PACKET: u64 = 1 << PACKED_SHIFT;
/// Bytes a packet may add to a packed word (a frame is far smaller); the
/// rest of a larger count goes straight to the folded bytes.
const PACKED_MAX_BYTES: u64 = 1 << 24;

/// The checksum changes of rewriting packets keyed `key` to `x` in NAT
/// mode `m`, if all four addresses are IPv4 and the flow is not DSR (so
/// the fast path may take them).
pub(super) fn v4_deltas(key: &FlowKey, x: &Xlat, m: u8) -> Option<u64> {
    // (The mode first: with it last, the compiler folded the last tests
    // into one branch-free test, which cost more here than early exits.)
    if mode::is_dsr(m) || !(key.src.is_v4() && key.dst.is_v4() && x.src.is_v4() && x.dst.is_v4()) {
        return None;
    }
    Some(u64::from(fast_deltas(
        TupleV4 {
            src: key.src.v4_octets(),
            dst: key.dst.v4_octets(),
            sport: key.sport,
            dport: key.dport,
        },
        TupleV4 {
            src: x.src.v4_octets(),
            dst: x.dst.v4_octets(),
            sport: x.sport,
            dport: x.dport,
        },
    )))
}

/// The word a slot keeps a next hop in.
#[inline]
fn mac_word(mac: MacAddr, port: PortId) -> u64 {
    let m = mac.0;
    u64::from_le_bytes([m[0], m[1], m[2], m[3], m[4], m[5], 0, 0]) | (u64::from(port) << 48)
}

fn word_mac(w: u64) -> (MacAddr, PortId) {
    let b = w.to_le_bytes();
    (
        MacAddr([b[0], b[1], b[2], b[3], b[4], b[5]]),
        (w >> 48) as u16,
    )
}

/// An entry's translation as the words its slot stores it in (the second
/// cache line but `bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Translation {
    /// gen (low 32) | endpoint (high 32).
    pub gen_ep: u64,
    /// [`Ip16::words`] of the new source; for an entry that may take the
    /// line form, the low word holds its checksum changes instead (an IPv4
    /// address's is 0).
    pub new_src: [u64; 2],
    /// [`Ip16::words`] of the new destination.
    pub new_dst: [u64; 2],
    /// new_sport | new_dport << 16 | mode << 32 | service << 40.
    pub ports: u64,
    /// mac (low 48) | port << 48.
    pub l2: u64,
}

impl Translation {
    /// `d`'s words, with the checksum changes `deltas` if given.
    #[inline]
    fn of(d: &FlowData, deltas: Option<u64>) -> Translation {
        let s = d.new_src.words();
        Translation {
            gen_ep: u64::from(d.gen) | (u64::from(d.endpoint) << 32),
            new_src: [deltas.unwrap_or(s[0]), s[1]],
            new_dst: d.new_dst.words(),
            ports: u64::from(d.new_sport)
                | (u64::from(d.new_dport) << 16)
                | (u64::from(d.mode) << 32)
                | (u64::from(d.service) << 40),
            l2: mac_word(d.mac, d.port),
        }
    }
}

/// The five key words of a line-form entry:
/// - 0: the next hop word (as `l2`);
/// - 1: the source address (high half, as in the key) | the checksum
///   changes ([`fast_deltas`]);
/// - 2: the new source address | the new destination address << 32 (each
///   as the high half of its [`Ip16::words`] word holds it);
/// - 3: the destination address (high half) | the new ports as they lie in
///   a frame;
/// - 4: key word 4 | the endpoint id in the bits the key leaves 0.
struct LineWords;

impl LineWords {
    /// The line form of key words `k` (an IPv4 key) with translation `t`
    /// (checksum changes in `t.new_src[0]`).
    #[inline(always)]
    fn of(k: [u64; 5], t: &Translation) -> [u64; 5] {
        LineWords::of_v4([k[1], k[3], k[4]], t, LineWords::ep_bits(t.gen_ep >> 32))
    }

    /// [`LineWords::of`] given an IPv4 key's words 1, 3 and 4 and the
    /// endpoint id's [`LineWords::ep_bits`].
    #[inline(always)]
    fn of_v4(k: [u64; 3], t: &Translation, ep_bits: u64) -> [u64; 5] {
        // The ports word's low half is sport | dport << 16; swapping the
        // bytes within each 16-bit half gives both in network order.
        let p = t.ports as u32;
        let wire = ((p & 0x00ff_00ff) << 8) | ((p >> 8) & 0x00ff_00ff);
        [
            t.l2,
            (k[0] & HI) | (t.new_src[0] & 0xffff_ffff),
            (t.new_src[1] >> 32) | (t.new_dst[1] & HI),
            (k[1] & HI) | u64::from(wire),
            (k[2] & KEY4_MASK) | ep_bits,
        ]
    }

    /// Endpoint id `ep` (below [`LINE_MAX_ENDPOINT`]) in key word 4's
    /// unused top 16 bits.
    #[inline(always)]
    fn ep_bits(ep: u64) -> u64 {
        (ep & 0xffff) << 48
    }

    /// The endpoint id in key word 4 `w`.
    #[inline(always)]
    fn ep(w: u64) -> u32 {
        (w >> 48) as u32
    }

    /// The key words the line-form words `w` hold.
    #[inline]
    fn key(w: [u64; 5]) -> [u64; 5] {
        [
            0,
            (w[1] & HI) | 0xffff_0000,
            0,
            (w[3] & HI) | 0xffff_0000,
            w[4] & KEY4_MASK,
        ]
    }
}

impl Slot {
    /// Owner only: start a write (the sequence number goes odd). Returns
    /// the sequence word as it was, for [`Slot::end_write`].
    #[inline(always)]
    fn begin_write(&self) -> u32 {
        let s = self.seq.load(Ordering::Relaxed);
        // (Even at rest, so this is the next number.)
        self.seq.store(s | 1, Ordering::Relaxed);
        fence(Ordering::Release);
        s
    }

    /// Owner only: end a write begun when the sequence word was `s`; the
    /// entry's generation (low 16 bits kept) becomes `gen`.
    #[inline(always)]
    fn end_write(&self, s: u32, gen: u32) {
        let next = ((s | 1) + 1) & 0xffff;
        self.seq.store(next | (gen << 16), Ordering::Release);
    }

    /// The key words as stored (line form or not).
    #[inline]
    fn stored_key(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.key[i].load(Ordering::Relaxed))
    }

    /// Read key and data under the seqlock; `None` if empty, being written, or
    /// its key is not `want`.
    #[inline]
    pub(super) fn read(&self, want: Option<&FlowKey>) -> Option<(FlowKey, FlowData, u64)> {
        for _ in 0..4 {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let kw = self.stored_key();
            let meta = self.meta.load(Ordering::Relaxed);
            let gen_ep = self.gen_ep.load(Ordering::Relaxed);
            let line = meta & META_V4_LINE != 0;
            let src = [
                // (The line form keeps folded packets there; an IPv4
                // address's word 0 is 0.)
                if line {
                    0
                } else {
                    self.new_src[0].load(Ordering::Relaxed)
                },
                self.new_src[1].load(Ordering::Relaxed),
            ];
            let dst = [
                self.new_dst[0].load(Ordering::Relaxed),
                self.new_dst[1].load(Ordering::Relaxed),
            ];
            let ports = self.ports.load(Ordering::Relaxed);
            let l2 = self.l2.load(Ordering::Relaxed);
            let last = self.last_seen.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) != s1 {
                continue;
            }
            let kind = match meta & 3 {
                KIND_FWD => Kind::Forward,
                KIND_REPLY => Kind::Reply,
                _ => return None,
            };
            let key = FlowKey::from_words(if line { LineWords::key(kw) } else { kw });
            if let Some(w) = want {
                if *w != key {
                    return None;
                }
            }
            let (mac, port) = word_mac(l2);
            let data = FlowData {
                kind,
                flags: ((meta >> 2) as u8) & FLAG_MASK,
                timeout_s: meta >> 8,
                gen: gen_ep as u32,
                endpoint: (gen_ep >> 32) as u32,
                service: (ports >> 40) as u16,
                mode: (ports >> 32) as u8,
                new_src: Ip16::from_words(src),
                new_dst: Ip16::from_words(dst),
                new_sport: ports as u16,
                new_dport: (ports >> 16) as u16,
                mac,
                port,
            };
            return Some((key, data, last));
        }
        None
    }

    /// The established fast path's read of an IPv4 entry keyed
    /// `[0, w1, 0, w3, w4]` ([`FlowKey::words`]): `None` unless the slot
    /// holds that key in the line form. It reads the slot's first cache
    /// line only.
    ///
    /// Owner only: the shard's writer reads its own entries, which nothing
    /// else rewrites (other workers only count packets, refresh the last
    /// seen time and add flag bits), so the read needs no sequence check.
    #[inline(always)]
    pub(super) fn read_v4_owned(&self, w1: u64, w3: u64, w4: u64) -> Option<FastHit<'_>> {
        let (k1, k3, k4) = (
            self.key[1].load(Ordering::Relaxed),
            self.key[3].load(Ordering::Relaxed),
            self.key[4].load(Ordering::Relaxed),
        );
        // (The addresses are the high halves of words 1 and 3; the shift
        // drops word 4's endpoint bits.)
        let diff = (((k1 ^ w1) | (k3 ^ w3)) >> 32) | ((k4 ^ w4) << 16);
        let meta = self.meta.load(Ordering::Relaxed);
        // Another key, or no entry in the line form: an empty slot (`meta`
        // 0), or the general form (an IPv6 key or translation, or DSR). (A
        // general-form IPv4 key's words 1 and 3 have the same high halves,
        // so only the bit tells the forms apart; only live entries have it.)
        let bad = diff | u64::from((meta & META_V4_LINE) ^ META_V4_LINE);
        if bad != 0 {
            return None;
        }
        Some(FastHit {
            slot: self,
            meta,
            seq: self.seq.load(Ordering::Relaxed),
            l2: self.key[0].load(Ordering::Relaxed),
            k1,
            addrs: self.key[2].load(Ordering::Relaxed),
            k3,
            k4,
            last_seen: self.last_seen.load(Ordering::Relaxed),
        })
    }

    /// Owner only: write a whole entry, in the line form if `deltas` (its
    /// [`v4_deltas`]) are given and its endpoint id fits, else in the
    /// general form (fresh counters, last seen `now`).
    pub(super) fn write(&self, key: &FlowKey, d: &FlowData, deltas: Option<u64>, now: u64) {
        let meta = pack_meta(d.kind, d.flags, d.timeout_s);
        match deltas {
            Some(_) if u64::from(d.endpoint) < LINE_MAX_ENDPOINT => {
                let t = Translation::of(d, deltas);
                let words = LineWords::of(key.words(), &t);
                self.write_words(words, true, meta | META_V4_LINE, now, &t);
            }
            _ => self.write_words(key.words(), false, meta, now, &Translation::of(d, None)),
        }
    }

    /// Owner only: write a whole entry given as the key words it stores
    /// (its [`LineWords`] if `line`, which `meta` says with
    /// [`META_V4_LINE`]; callers pass a constant, so each inlined copy
    /// writes one form), `meta` and its translation (fresh counters, last
    /// seen `now`).
    #[inline(always)]
    fn write_words(&self, words: [u64; 5], line: bool, meta: u32, now: u64, t: &Translation) {
        debug_assert_eq!(line, meta & META_V4_LINE != 0);
        let s = self.begin_write();
        self.store_entry(words, line, t);
        if line {
            // (The folded packets.)
            self.new_src[0].store(0, Ordering::Relaxed);
        }
        self.meta.store(meta, Ordering::Relaxed);
        self.last_seen.store(now, Ordering::Relaxed);
        self.counts.store(0, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
        self.end_write(s, t.gen_ep as u32);
    }

    /// Owner only, inside a write: the key words as stored (`words`, the
    /// [`LineWords`] if `line`) and the translation `t`; in the line form
    /// `new_src[0]`, the folded packets, is left alone.
    #[inline(always)]
    fn store_entry(&self, words: [u64; 5], line: bool, t: &Translation) {
        for (slot, w) in self.key.iter().zip(words) {
            slot.store(w, Ordering::Relaxed);
        }
        self.gen_ep.store(t.gen_ep, Ordering::Relaxed);
        if !line {
            self.new_src[0].store(t.new_src[0], Ordering::Relaxed);
        }
        self.new_src[1].store(t.new_src[1], Ordering::Relaxed);
        self.new_dst[0].store(t.new_dst[0], Ordering::Relaxed);
        self.new_dst[1].store(t.new_dst[1], Ordering::Relaxed);
        self.ports.store(t.ports, Ordering::Relaxed);
        self.l2.store(t.l2, Ordering::Relaxed);
    }

    /// Packets and bytes counted on this entry.
    pub(super) fn counters(&self) -> (u64, u64) {
        let c = self.counts.load(Ordering::Relaxed);
        let bytes = self.bytes.load(Ordering::Relaxed);
        if self.meta.load(Ordering::Relaxed) & META_V4_LINE != 0 {
            let folded = self.new_src[0].load(Ordering::Relaxed);
            (
                folded + (c >> PACKED_SHIFT),
                bytes + (c & (PACKED_PACKET - 1)),
            )
        } else {
            (c, bytes)
        }
    }

    /// Count a packet of `bytes`, in either form. Called by the entry's one
    /// counting worker (as [`FastHit::touch`] is).
    #[inline]
    fn count(&self, meta: u32, bytes: u64) {
        if meta & META_V4_LINE != 0 {
            self.count_packed(bytes % PACKED_MAX_BYTES);
            if bytes >= PACKED_MAX_BYTES {
                let big = bytes - bytes % PACKED_MAX_BYTES;
                crate::counters::bump(&self.bytes, big);
            }
        } else {
            crate::counters::bump(&self.counts, 1);
            crate::counters::bump(&self.bytes, bytes);
        }
    }

    /// Count a packet of `bytes` (under [`PACKED_MAX_BYTES`]) on a
    /// line-form entry.
    #[inline(always)]
    fn count_packed(&self, bytes: u64) {
        debug_assert!(bytes < PACKED_MAX_BYTES);
        let c = self
            .counts
            .load(Ordering::Relaxed)
            .wrapping_add(PACKED_PACKET + bytes);
        self.counts.store(c, Ordering::Relaxed);
        if (c as i64) < 0 {
            self.fold(c);
        }
    }

    /// Move the packed counts `c` of a line-form entry into its folded
    /// counters (the wide ones in the second line). Once every 2^19
    /// packets.
    #[cold]
    #[inline(never)]
    fn fold(&self, c: u64) {
        crate::counters::bump(&self.new_src[0], c >> PACKED_SHIFT);
        crate::counters::bump(&self.bytes, c & (PACKED_PACKET - 1));
        self.counts.store(0, Ordering::Relaxed);
    }

    /// Owner only: copy the whole entry of `src` into this (empty) slot.
    /// Counts and flags another worker adds to `src` during the copy may be
    /// lost; the next packet of the flow adds them again.
    pub(super) fn copy_from(&self, src: &Slot) {
        let s = self.begin_write();
        let pairs = [
            (&self.key[0], &src.key[0]),
            (&self.key[1], &src.key[1]),
            (&self.key[2], &src.key[2]),
            (&self.key[3], &src.key[3]),
            (&self.key[4], &src.key[4]),
            (&self.last_seen, &src.last_seen),
            (&self.counts, &src.counts),
            (&self.bytes, &src.bytes),
            (&self.gen_ep, &src.gen_ep),
            (&self.new_src[0], &src.new_src[0]),
            (&self.new_src[1], &src.new_src[1]),
            (&self.new_dst[0], &src.new_dst[0]),
            (&self.new_dst[1], &src.new_dst[1]),
            (&self.ports, &src.ports),
            (&self.l2, &src.l2),
        ];
        for (d, from) in pairs {
            d.store(from.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self.meta
            .store(src.meta.load(Ordering::Relaxed), Ordering::Relaxed);
        self.end_write(s, src.seq.load(Ordering::Relaxed) >> 16);
    }

    /// Count a packet of `bytes` on this entry, matched when it was last
    /// seen at `last_seen`, and refresh that time (at most every
    /// [`TOUCH_GRANULARITY_NS`]).
    #[inline]
    pub(super) fn touch(&self, last_seen: u64, now: u64, bytes: u64) {
        self.count(self.meta.load(Ordering::Relaxed), bytes);
        if now.saturating_sub(last_seen) >= TOUCH_GRANULARITY_NS {
            self.last_seen.store(now, Ordering::Relaxed);
        }
    }

    /// Record the [`flags`] bits `f` (any worker; an atomic OR).
    #[inline]
    pub(super) fn add_flags(&self, f: u8) {
        self.meta
            .fetch_or(u32::from(f & FLAG_MASK) << 2, Ordering::Relaxed);
    }

    /// Prefetch the slot's first line (all the fast path reads of a
    /// line-form entry), and its second if `both`.
    #[inline(always)]
    pub(super) fn prefetch(&self, both: bool) {
        crate::prefetch::prefetch(&self.seq);
        if both {
            self.prefetch_second();
        }
    }

    /// Prefetch the slot's second line.
    #[inline(always)]
    pub(super) fn prefetch_second(&self) {
        crate::prefetch::prefetch(&self.bytes);
    }

    /// Owner only: mark empty.
    pub(super) fn clear(&self) {
        let s = self.begin_write();
        self.meta.store(0, Ordering::Relaxed);
        self.end_write(s, s >> 16);
    }

    /// Owner only: the translation and generation of the entry become
    /// those of `d`, keeping its key, counters, flags and last-seen time;
    /// it changes form if `d` calls for the other one.
    pub(super) fn revalidate(&self, d: &FlowData) {
        let s = self.begin_write();
        let was_line = self.meta.load(Ordering::Relaxed) & META_V4_LINE != 0;
        let stored = self.stored_key();
        let key = if was_line {
            LineWords::key(stored)
        } else {
            stored
        };
        let deltas = v4_deltas(&FlowKey::from_words(key), &d.xlat(), d.mode);
        let line = deltas.is_some() && u64::from(d.endpoint) < LINE_MAX_ENDPOINT;
        if line != was_line {
            // The counters change places: (packets, bytes) whole, then in
            // the new form's words. Other workers may OR flag bits into
            // `meta` meanwhile: the marker bit changes alone.
            let (packets, bytes) = self.counters();
            self.bytes.store(bytes, Ordering::Relaxed);
            if line {
                self.new_src[0].store(packets, Ordering::Relaxed);
                self.counts.store(0, Ordering::Relaxed);
                self.meta.fetch_or(META_V4_LINE, Ordering::Relaxed);
            } else {
                self.counts.store(packets, Ordering::Relaxed);
                self.meta.fetch_and(!META_V4_LINE, Ordering::Relaxed);
            }
        }
        let t = Translation::of(d, deltas.filter(|_| line));
        let words = if line { LineWords::of(key, &t) } else { key };
        self.store_entry(words, line, &t);
        self.end_write(s, d.gen);
    }
}

/// A new IPv4 flow's two entries in the line form, as their slots store
/// them, and the forward rewrite's checksum changes (the new-flow path
/// rewrites the first packet with them).
#[derive(Debug, Clone, Copy)]
pub(super) struct LinePair {
    fwd: LineEntry,
    rep: LineEntry,
    /// [`fast_deltas`] of the forward translation.
    pub deltas: u32,
}

/// One line-form entry as its slot stores it.
#[derive(Debug, Clone, Copy)]
struct LineEntry {
    words: [u64; 5],
    meta: u32,
    t: Translation,
}

impl LinePair {
    /// Whether `f`'s entries fit the line form (its endpoint id does).
    #[inline(always)]
    pub(super) fn fits(f: &NewFlowV4) -> bool {
        u64::from(f.endpoint) < LINE_MAX_ENDPOINT
    }

    /// The entries of `f`, which [`LinePair::fits`].
    #[inline(always)]
    pub(super) fn of(f: &NewFlowV4) -> LinePair {
        debug_assert!(LinePair::fits(f));
        let ep = u64::from(f.endpoint);
        let (k, x) = (&f.key, &f.xlat);
        let deltas = fast_deltas(*k, *x);
        let gen_ep = u64::from(f.gen) | (ep << 32);
        let ports = |a: u16, b: u16| {
            u64::from(a)
                | (u64::from(b) << 16)
                | (u64::from(f.mode) << 32)
                | (u64::from(f.service) << 40)
        };
        let word4 = |sport: u16, dport: u16| {
            (u64::from(sport) << 32) | (u64::from(dport) << 16) | u64::from(f.proto)
        };
        let entry = |key: [u64; 3], meta: u32, t: Translation| LineEntry {
            words: LineWords::of_v4(key, &t, LineWords::ep_bits(ep)),
            meta: meta | META_V4_LINE,
            t,
        };
        LinePair {
            fwd: entry(
                [v4_word(k.src), v4_word(k.dst), word4(k.sport, k.dport)],
                pack_meta(Kind::Forward, f.fwd_flags, f.timeout_s),
                Translation {
                    gen_ep,
                    new_src: [u64::from(deltas), v4_word(x.src)],
                    new_dst: [0, v4_word(x.dst)],
                    ports: ports(x.sport, x.dport),
                    l2: hop_word(&f.to_backend),
                },
            ),
            rep: entry(
                [v4_word(x.dst), v4_word(x.src), word4(x.dport, x.sport)],
                pack_meta(Kind::Reply, 0, f.timeout_s),
                Translation {
                    gen_ep,
                    new_src: [u64::from(reverse_deltas(deltas)), v4_word(k.dst)],
                    new_dst: [0, v4_word(k.src)],
                    ports: ports(k.dport, k.sport),
                    l2: hop_word(&f.to_client),
                },
            ),
            deltas,
        }
    }

    /// Owner only: write the forward entry into `fwd` and the reply entry
    /// into `rep` (fresh counters, last seen `now`).
    #[inline(always)]
    pub(super) fn write(&self, fwd: &Slot, rep: &Slot, now: u64) {
        let (f, r) = (&self.fwd, &self.rep);
        fwd.write_words(f.words, true, f.meta, now, &f.t);
        rep.write_words(r.words, true, r.meta, now, &r.t);
    }
}

/// [`mac_word`] of a next hop.
#[inline(always)]
fn hop_word(h: &NextHop) -> u64 {
    mac_word(h.mac, h.port)
}

/// A hit of the established fast path: the slot and the raw words of its
/// first line ([`LineWords`]), decoded on use (the full [`FlowData`] is
/// only built on the slow path).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FastHit<'a> {
    slot: &'a Slot,
    meta: u32,
    seq: u32,
    l2: u64,
    k1: u64,
    addrs: u64,
    k3: u64,
    k4: u64,
    /// When a packet last matched it (ns).
    pub last_seen: u64,
}

impl FastHit<'_> {
    /// Direction.
    #[inline]
    pub fn kind(&self) -> Kind {
        if self.meta & 3 == KIND_FWD {
            Kind::Forward
        } else {
            Kind::Reply
        }
    }
    /// [`flags`] bits seen so far.
    #[inline]
    pub fn flags(&self) -> u8 {
        ((self.meta >> 2) as u8) & FLAG_MASK
    }
    /// Low 16 bits of the tables generation of the cached next hop. (A
    /// stale entry goes unnoticed only if the tables change a multiple of
    /// 65,536 times between two of its packets, within the second after
    /// which the fast path leaves an idle flow to the slow path anyway.)
    #[inline]
    pub fn gen16(&self) -> u16 {
        (self.seq >> 16) as u16
    }
    /// The backend.
    #[inline]
    pub fn endpoint(&self) -> EndpointId {
        LineWords::ep(self.k4)
    }
    /// NAT mode number (from the second line: for checks, not the fast path).
    #[inline]
    pub fn mode(&self) -> u8 {
        (self.slot.ports.load(Ordering::Relaxed) >> 32) as u8
    }
    /// Bytes 12..16 of the source address to write (the IPv4 address).
    #[inline]
    pub fn new_src_v4(&self) -> [u8; 4] {
        (self.addrs as u32).to_le_bytes()
    }
    /// Bytes 12..16 of the destination address to write.
    #[inline]
    pub fn new_dst_v4(&self) -> [u8; 4] {
        ((self.addrs >> 32) as u32).to_le_bytes()
    }
    /// The rewrite's checksum changes ([`fast_deltas`]).
    #[inline]
    pub fn deltas(&self) -> u32 {
        self.k1 as u32
    }
    /// New source and destination ports as they lie in a frame.
    #[inline]
    pub fn ports_wire(&self) -> [u8; 4] {
        (self.k3 as u32).to_le_bytes()
    }
    /// Transmit port.
    #[inline]
    pub fn port(&self) -> PortId {
        (self.l2 >> 48) as u16
    }
    /// Destination MAC in the first six bytes (the transmit port in the rest).
    #[inline]
    pub fn mac8(&self) -> [u8; 8] {
        self.l2.to_le_bytes()
    }

    /// Count a packet of `bytes`, refresh the last-seen time (at most every
    /// [`TOUCH_GRANULARITY_NS`]) and record the [`flags`] bits `f` if any is
    /// new — as [`Conntrack::touch`] and [`Conntrack::add_flags`] do. Called
    /// by whichever worker received the packet: each direction of a flow
    /// arrives on one queue, so every entry has a single writer here too.
    #[inline(always)]
    pub fn touch(&self, now: u64, bytes: u64, f: u8) {
        let slot = self.slot;
        // (A frame's length: far under PACKED_MAX_BYTES.)
        slot.count_packed(bytes % PACKED_MAX_BYTES);
        if now.saturating_sub(self.last_seen) >= TOUCH_GRANULARITY_NS {
            slot.last_seen.store(now, Ordering::Relaxed);
        }
        if self.flags() & f != f {
            slot.meta
                .fetch_or(u32::from(f & FLAG_MASK) << 2, Ordering::Relaxed);
        }
    }
}
