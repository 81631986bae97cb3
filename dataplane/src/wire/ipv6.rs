//! IPv6 headers (RFC 8200 §3) and a bounded walker over the extension-header
//! chain (RFC 8200 §4: hop-by-hop, routing, fragment, destination options;
//! RFC 4302 §2: AH).
//!
//! Invariants: after [`Packet::check_len`] the fixed header and the payload
//! (per the payload length field) lie inside the buffer. [`walk_ext`] looks at
//! no more than [`MAX_EXT_HEADERS`] headers and never reads past its slice.

use super::ip::Frag;
use super::view::view;
use crate::drop::DropReason;

/// Byte ranges of the fixed header.
pub mod field {
    use core::ops::Range;
    /// Version (4 bits), traffic class (8), flow label (20).
    pub const VER_TC_FLOW: Range<usize> = 0..4;
    /// Payload length (everything after the fixed header).
    pub const LENGTH: Range<usize> = 4..6;
    /// Next header.
    pub const NXT_HDR: usize = 6;
    /// Hop limit.
    pub const HOP_LIMIT: usize = 7;
    /// Source address.
    pub const SRC: Range<usize> = 8..24;
    /// Destination address.
    pub const DST: Range<usize> = 24..40;
}

/// Length of the fixed header.
pub const HEADER_LEN: usize = 40;
/// Most extension headers [`walk_ext`] walks before giving up. RFC 8200 §4.1
/// recommends at most one of each kind (two destination options), so a legal
/// chain has at most 6 plus AH; 8 leaves a little room.
pub const MAX_EXT_HEADERS: usize = 8;

/// Next-header values of the extension headers the walker knows.
pub mod next_header {
    /// Hop-by-hop options (RFC 8200 §4.3); only valid first.
    pub const HOP_BY_HOP: u8 = 0;
    /// Routing (RFC 8200 §4.4).
    pub const ROUTING: u8 = 43;
    /// Fragment (RFC 8200 §4.5).
    pub const FRAGMENT: u8 = 44;
    /// ESP (RFC 4303): opaque, ends the walk.
    pub const ESP: u8 = 50;
    /// Authentication header (RFC 4302).
    pub const AH: u8 = 51;
    /// No next header (RFC 8200 §4.7).
    pub const NO_NEXT: u8 = 59;
    /// Destination options (RFC 8200 §4.6).
    pub const DST_OPTS: u8 = 60;
}

/// What the fragment header says (RFC 8200 §4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FragHeader {
    /// Offset of this fragment's data in bytes.
    pub offset: u16,
    /// More fragments follow.
    pub more: bool,
    /// Identification.
    pub ident: u32,
}

/// Where the extension-header chain ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtInfo {
    /// The final next-header value: the L4 protocol (or 59, 50, or the
    /// protocol of a later fragment).
    pub proto: u8,
    /// Offset of the L4 header from the start of the walked slice.
    pub l4_off: usize,
    /// Fragment position. An atomic fragment (offset 0, M=0, RFC 6946 §4) is
    /// `Frag::None`: it is a whole datagram.
    pub frag: Frag,
    /// The fragment header, if one was seen.
    pub frag_header: Option<FragHeader>,
    /// Number of extension headers walked.
    pub count: usize,
}

/// Walk the extension headers of `payload` (the bytes after the fixed header,
/// cut to the payload length), starting with next-header value `first`.
/// Stops at the first non-extension header, at ESP / no-next-header, or after
/// a fragment header whose offset is not zero (what follows is not a header).
/// `BadIpv6ExtHeader` for a header cut short, a hop-by-hop header not first,
/// or more than [`MAX_EXT_HEADERS`] headers.
#[inline]
pub fn walk_ext(first: u8, payload: &[u8]) -> Result<ExtInfo, DropReason> {
    let mut nh = first;
    let mut off = 0usize;
    let mut frag = Frag::None;
    let mut frag_header = None;
    let mut count = 0;
    loop {
        let len = match nh {
            next_header::HOP_BY_HOP | next_header::ROUTING | next_header::DST_OPTS => {
                if nh == next_header::HOP_BY_HOP && count != 0 {
                    return Err(DropReason::BadIpv6ExtHeader);
                }
                let h = ext_head(payload, off)?;
                (usize::from(h[1]) + 1) * 8
            }
            next_header::AH => {
                let h = ext_head(payload, off)?;
                (usize::from(h[1]) + 2) * 4
            }
            next_header::FRAGMENT => 8,
            _ => {
                return Ok(ExtInfo {
                    proto: nh,
                    l4_off: off,
                    frag,
                    frag_header,
                    count,
                })
            }
        };
        if count == MAX_EXT_HEADERS {
            return Err(DropReason::BadIpv6ExtHeader);
        }
        let h = payload
            .get(off..off + len)
            .ok_or(DropReason::BadIpv6ExtHeader)?;
        count += 1;
        let next = h[0];
        off += len;
        if nh == next_header::FRAGMENT {
            let w = u16::from_be_bytes([h[2], h[3]]);
            let f = FragHeader {
                offset: w & 0xfff8,
                more: w & 1 != 0,
                ident: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
            };
            frag_header = Some(f);
            if f.offset != 0 {
                return Ok(ExtInfo {
                    proto: next,
                    l4_off: off,
                    frag: Frag::Later,
                    frag_header,
                    count,
                });
            }
            if f.more {
                frag = Frag::First;
            }
        }
        nh = next;
    }
}

#[inline]
fn ext_head(payload: &[u8], off: usize) -> Result<&[u8; 2], DropReason> {
    payload
        .get(off..)
        .and_then(|s| s.first_chunk::<2>())
        .ok_or(DropReason::BadIpv6ExtHeader)
}

view! {
    /// A read/write view of an IPv6 packet.
    Packet
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// `TruncatedL3` if the fixed header is cut short; `BadIpv6ExtHeader` if the
    /// version is not 6 (the drop list has no separate IPv6-header reason);
    /// `BadIpLength` if the payload length runs past the buffer.
    pub fn check_len(&self) -> Result<(), DropReason> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(DropReason::TruncatedL3);
        }
        if self.version() != 6 {
            return Err(DropReason::BadIpv6ExtHeader);
        }
        if HEADER_LEN + usize::from(self.payload_len()) > b.len() {
            return Err(DropReason::BadIpLength);
        }
        Ok(())
    }

    fn word0(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }
    /// IP version (6).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }
    /// Traffic class.
    pub fn traffic_class(&self) -> u8 {
        (self.word0() >> 20) as u8
    }
    /// Flow label.
    pub fn flow_label(&self) -> u32 {
        self.word0() & 0x000f_ffff
    }
    /// Payload length.
    pub fn payload_len(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[4], b[5]])
    }
    /// Next header (of the fixed header).
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }
    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }
    /// Source address.
    pub fn src_addr(&self) -> [u8; 16] {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::SRC]);
        a
    }
    /// Destination address.
    pub fn dst_addr(&self) -> [u8; 16] {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::DST]);
        a
    }
    /// The payload (extension headers included), cut to the payload length.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + usize::from(self.payload_len())]
    }
    /// Walk the extension headers ([`walk_ext`]); offsets are relative to the payload.
    pub fn ext(&self) -> Result<ExtInfo, DropReason> {
        walk_ext(self.next_header(), self.payload())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set version 6, traffic class and flow label.
    pub fn set_version_tc_flow(&mut self, tc: u8, flow: u32) {
        let w = (6u32 << 28) | (u32::from(tc) << 20) | (flow & 0x000f_ffff);
        self.buffer.as_mut()[field::VER_TC_FLOW].copy_from_slice(&w.to_be_bytes());
    }
    /// Set the payload length.
    pub fn set_payload_len(&mut self, v: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&v.to_be_bytes());
    }
    /// Set the next header.
    pub fn set_next_header(&mut self, v: u8) {
        self.buffer.as_mut()[field::NXT_HDR] = v;
    }
    /// Set the hop limit.
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = v;
    }
    /// Set the source address.
    pub fn set_src_addr(&mut self, a: [u8; 16]) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a);
    }
    /// Set the destination address.
    pub fn set_dst_addr(&mut self, a: [u8; 16]) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a);
    }
    /// The payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opt(next: u8, units: u8) -> Vec<u8> {
        let mut v = vec![0u8; (usize::from(units) + 1) * 8];
        v[0] = next;
        v[1] = units;
        v
    }

    #[test]
    fn walks_a_legal_chain() {
        let mut p = opt(next_header::ROUTING, 0);
        p.extend(opt(next_header::FRAGMENT, 1));
        p.extend([next_header::AH, 0, 0, 1, 0, 0, 0, 7]); // offset 0, M=1
        p.extend({
            let mut ah = vec![0u8; 16];
            ah[0] = next_header::DST_OPTS;
            ah[1] = 2; // (2+2)*4 = 16 bytes
            ah
        });
        p.extend(opt(6, 0));
        p.extend([0u8; 20]);
        let e = walk_ext(next_header::HOP_BY_HOP, &p).expect("legal");
        assert_eq!(e.proto, 6);
        assert_eq!(e.l4_off, 8 + 16 + 8 + 16 + 8);
        assert_eq!(e.frag, Frag::First);
        assert_eq!(e.count, 5);
        assert_eq!(e.frag_header.map(|f| f.ident), Some(7));
    }

    #[test]
    fn later_fragment_stops_the_walk() {
        let p = [17u8, 0, 0x05, 0x00, 0, 0, 0, 1, 0xff, 0xff];
        let e = walk_ext(next_header::FRAGMENT, &p).expect("legal");
        assert_eq!((e.proto, e.l4_off, e.frag), (17, 8, Frag::Later));
    }

    #[test]
    fn rejects_loops_late_hop_by_hop_and_truncation() {
        // Destination options pointing to destination options, forever.
        let mut p = Vec::new();
        for _ in 0..20 {
            p.extend(opt(next_header::DST_OPTS, 0));
        }
        assert_eq!(
            walk_ext(next_header::DST_OPTS, &p).err(),
            Some(DropReason::BadIpv6ExtHeader)
        );
        // Exactly MAX_EXT_HEADERS is still fine.
        let mut p: Vec<u8> = Vec::new();
        for i in 0..MAX_EXT_HEADERS {
            let next = if i + 1 == MAX_EXT_HEADERS {
                6
            } else {
                next_header::DST_OPTS
            };
            p.extend(opt(next, 0));
        }
        assert!(walk_ext(next_header::DST_OPTS, &p).is_ok());
        let p = opt(next_header::HOP_BY_HOP, 0);
        assert_eq!(
            walk_ext(next_header::HOP_BY_HOP, &[p.clone(), p].concat()).err(),
            Some(DropReason::BadIpv6ExtHeader)
        );
        let p = opt(6, 3);
        for n in 0..p.len() {
            assert_eq!(
                walk_ext(next_header::ROUTING, &p[..n]).err(),
                Some(DropReason::BadIpv6ExtHeader)
            );
        }
    }
}
