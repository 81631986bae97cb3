//! ICMPv4 (RFC 792) and ICMPv6 (RFC 4443) messages: both share the first 8
//! bytes' layout (type, code, checksum, 4 bytes of type-specific data), so one
//! view serves both; the type numbers differ and live in [`v4`] and [`v6`].
//!
//! Invariant: after [`Packet::check_len`] the 8-byte header lies inside the
//! buffer. Error messages carry the offending packet's IP header and at least
//! its first 8 payload bytes (RFC 792; RFC 4443 §2.4(c) "as much as fits")
//! from [`HEADER_LEN`] on: [`Packet::embedded`].

use super::view::view;
use crate::drop::DropReason;

/// Byte ranges of the header.
pub mod field {
    use core::ops::{Range, RangeFrom};
    /// Type.
    pub const TYPE: usize = 0;
    /// Code.
    pub const CODE: usize = 1;
    /// Checksum.
    pub const CHECKSUM: Range<usize> = 2..4;
    /// Echo identifier.
    pub const ECHO_ID: Range<usize> = 4..6;
    /// Echo sequence number.
    pub const ECHO_SEQ: Range<usize> = 6..8;
    /// Next-hop MTU of an ICMPv4 fragmentation-needed message (RFC 1191 §4).
    pub const V4_MTU: Range<usize> = 6..8;
    /// MTU of an ICMPv6 packet-too-big message (RFC 4443 §3.2).
    pub const V6_MTU: Range<usize> = 4..8;
    /// The embedded packet of an error message, or echo data.
    pub const BODY: RangeFrom<usize> = 8..;
}

/// Header length (type, code, checksum, 4 bytes of type-specific data).
pub const HEADER_LEN: usize = 8;

/// ICMPv4 types and codes (RFC 792).
pub mod v4 {
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 0;
    /// Destination unreachable.
    pub const DEST_UNREACH: u8 = 3;
    /// Destination-unreachable code: fragmentation needed and DF set (RFC 1191).
    pub const CODE_FRAG_NEEDED: u8 = 4;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 8;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 11;
    /// Parameter problem.
    pub const PARAM_PROBLEM: u8 = 12;

    /// True for the error messages that embed an original datagram and that
    /// xlb translates for tracked flows. Source quench (4, deprecated by
    /// RFC 6633) and redirect (5, about a gateway on the sender's own link,
    /// meaningless across a NAT) embed one too, but are left to the kernel
    /// (the XDP program does not steer them either).
    pub fn is_error(t: u8) -> bool {
        matches!(t, DEST_UNREACH | TIME_EXCEEDED | PARAM_PROBLEM)
    }
    /// True for echo request or reply.
    pub fn is_echo(t: u8) -> bool {
        matches!(t, ECHO_REQUEST | ECHO_REPLY)
    }
}

/// ICMPv6 types (RFC 4443, RFC 4861).
pub mod v6 {
    /// Destination unreachable.
    pub const DEST_UNREACH: u8 = 1;
    /// Packet too big.
    pub const PACKET_TOO_BIG: u8 = 2;
    /// Time exceeded.
    pub const TIME_EXCEEDED: u8 = 3;
    /// Parameter problem.
    pub const PARAM_PROBLEM: u8 = 4;
    /// Echo request.
    pub const ECHO_REQUEST: u8 = 128;
    /// Echo reply.
    pub const ECHO_REPLY: u8 = 129;
    /// Neighbor solicitation (RFC 4861 §4.3).
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    /// Neighbor advertisement (RFC 4861 §4.4).
    pub const NEIGHBOR_ADVERT: u8 = 136;

    /// True for the error messages (types 1–4) that embed an original packet.
    pub fn is_error(t: u8) -> bool {
        matches!(
            t,
            DEST_UNREACH | PACKET_TOO_BIG | TIME_EXCEEDED | PARAM_PROBLEM
        )
    }
    /// True for echo request or reply.
    pub fn is_echo(t: u8) -> bool {
        matches!(t, ECHO_REQUEST | ECHO_REPLY)
    }
}

/// True for the error messages of family `v4` (ICMPv4 if true, ICMPv6
/// otherwise) that embed an original datagram and that xlb translates for
/// the flows it tracks: [`v4::is_error`] or [`v6::is_error`]. The one
/// definition in the crate; the XDP program's (`bpf/xlb_parse.h`)
/// is checked against it by a test.
#[inline]
pub fn is_error(v4: bool, t: u8) -> bool {
    if v4 {
        v4::is_error(t)
    } else {
        v6::is_error(t)
    }
}

/// True for echo requests and replies of family `v4`: the messages whose
/// identifier plays the ports of a flow.
#[inline]
pub fn is_echo(v4: bool, t: u8) -> bool {
    if v4 {
        v4::is_echo(t)
    } else {
        v6::is_echo(t)
    }
}

/// True for an echo request of family `v4`: the ICMP message that starts
/// a flow.
#[inline]
pub fn is_echo_request(v4: bool, t: u8) -> bool {
    t == if v4 {
        v4::ECHO_REQUEST
    } else {
        v6::ECHO_REQUEST
    }
}

view! {
    /// A read/write view of an ICMPv4 or ICMPv6 message.
    Packet
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// `TruncatedL4` if the 8-byte header is cut short.
    pub fn check_len(&self) -> Result<(), DropReason> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(DropReason::TruncatedL4);
        }
        Ok(())
    }
    /// Message type.
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }
    /// Message code.
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }
    /// Checksum.
    pub fn checksum(&self) -> u16 {
        self.be16(field::CHECKSUM.start)
    }
    /// Echo identifier (meaningful for echo messages).
    pub fn echo_id(&self) -> u16 {
        self.be16(field::ECHO_ID.start)
    }
    /// Echo sequence number (meaningful for echo messages).
    pub fn echo_seq(&self) -> u16 {
        self.be16(field::ECHO_SEQ.start)
    }
    /// Next-hop MTU of an ICMPv4 fragmentation-needed message.
    pub fn v4_mtu(&self) -> u16 {
        self.be16(field::V4_MTU.start)
    }
    /// MTU of an ICMPv6 packet-too-big message.
    pub fn v6_mtu(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::V6_MTU];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }
    /// The embedded original packet (error messages) or echo data: everything
    /// after the 8-byte header. Parse it with the IP views, which check it.
    pub fn embedded(&self) -> &[u8] {
        &self.buffer.as_ref()[field::BODY]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set the message type.
    pub fn set_msg_type(&mut self, t: u8) {
        self.buffer.as_mut()[field::TYPE] = t;
    }
    /// Set the code.
    pub fn set_code(&mut self, c: u8) {
        self.buffer.as_mut()[field::CODE] = c;
    }
    /// Set the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        self.set16(field::CHECKSUM.start, v);
    }
    /// Set the echo identifier.
    pub fn set_echo_id(&mut self, v: u16) {
        self.set16(field::ECHO_ID.start, v);
    }
    /// Set the echo sequence number.
    pub fn set_echo_seq(&mut self, v: u16) {
        self.set16(field::ECHO_SEQ.start, v);
    }
    /// Set the 4 type-specific bytes (unused / MTU / pointer) as one word.
    pub fn set_rest(&mut self, v: u32) {
        self.buffer.as_mut()[4..8].copy_from_slice(&v.to_be_bytes());
    }
    /// The embedded packet or echo data, writable.
    pub fn embedded_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[field::BODY]
    }
}
