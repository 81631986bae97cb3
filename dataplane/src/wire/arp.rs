//! ARP for IPv4 over Ethernet (RFC 826): enough to recognise a request for one
//! of our addresses and answer it in place.
//!
//! Invariant: after [`Packet::check_len`] the 28-byte Ethernet/IPv4 ARP body
//! lies inside the buffer and its hardware/protocol types and lengths are
//! Ethernet (1, 6) and IPv4 (0x0800, 4).

use crate::drop::DropReason;
use crate::net::MacAddr;

/// Byte ranges of an Ethernet/IPv4 ARP packet.
pub mod field {
    use core::ops::Range;
    /// Hardware type (1 = Ethernet).
    pub const HTYPE: Range<usize> = 0..2;
    /// Protocol type (0x0800 = IPv4).
    pub const PTYPE: Range<usize> = 2..4;
    /// Hardware address length (6).
    pub const HLEN: usize = 4;
    /// Protocol address length (4).
    pub const PLEN: usize = 5;
    /// Operation (1 request, 2 reply).
    pub const OPER: Range<usize> = 6..8;
    /// Sender hardware address.
    pub const SHA: Range<usize> = 8..14;
    /// Sender protocol address.
    pub const SPA: Range<usize> = 14..18;
    /// Target hardware address.
    pub const THA: Range<usize> = 18..24;
    /// Target protocol address.
    pub const TPA: Range<usize> = 24..28;
}

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;
/// Operation: request.
pub const OP_REQUEST: u16 = 1;
/// Operation: reply.
pub const OP_REPLY: u16 = 2;

/// A read/write view of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap without checking; accessors may panic until [`Packet::check_len`] passes.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }
    /// Wrap and check ([`Packet::check_len`]).
    pub fn new_checked(buffer: T) -> Result<Packet<T>, DropReason> {
        let p = Packet::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }
    /// `TruncatedL3` if shorter than 28 bytes or not Ethernet/IPv4 ARP.
    pub fn check_len(&self) -> Result<(), DropReason> {
        let b = self.buffer.as_ref();
        if b.len() < PACKET_LEN || b[0..6] != [0, 1, 0x08, 0x00, 6, 4] {
            return Err(DropReason::TruncatedL3);
        }
        Ok(())
    }
    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
    fn mac(&self, r: core::ops::Range<usize>) -> MacAddr {
        let mut m = [0u8; 6];
        m.copy_from_slice(&self.buffer.as_ref()[r]);
        MacAddr(m)
    }
    fn ip(&self, r: core::ops::Range<usize>) -> [u8; 4] {
        let b = &self.buffer.as_ref()[r];
        [b[0], b[1], b[2], b[3]]
    }
    /// Operation.
    pub fn operation(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[6], b[7]])
    }
    /// Sender hardware address.
    pub fn sender_mac(&self) -> MacAddr {
        self.mac(field::SHA)
    }
    /// Sender IPv4 address.
    pub fn sender_ip(&self) -> [u8; 4] {
        self.ip(field::SPA)
    }
    /// Target hardware address.
    pub fn target_mac(&self) -> MacAddr {
        self.mac(field::THA)
    }
    /// Target IPv4 address.
    pub fn target_ip(&self) -> [u8; 4] {
        self.ip(field::TPA)
    }
    /// True if this is a request for `ip`.
    pub fn is_request_for(&self, ip: [u8; 4]) -> bool {
        self.operation() == OP_REQUEST && self.target_ip() == ip
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Turn a request into the reply saying `our_ip` is at `our_mac` (RFC 826
    /// "Packet Reception": swap sender and target, fill in our address, set
    /// the opcode to reply). The Ethernet header is the caller's to fix.
    pub fn make_reply(&mut self, our_mac: MacAddr, our_ip: [u8; 4]) {
        let asker_mac = self.sender_mac();
        let asker_ip = self.sender_ip();
        let b = self.buffer.as_mut();
        b[field::OPER].copy_from_slice(&OP_REPLY.to_be_bytes());
        b[field::SHA].copy_from_slice(&our_mac.0);
        b[field::SPA].copy_from_slice(&our_ip);
        b[field::THA].copy_from_slice(&asker_mac.0);
        b[field::TPA].copy_from_slice(&asker_ip);
    }
}

/// Answer an ARP request in a whole Ethernet frame in place: if `frame` (ARP
/// at `l3_off`) asks for `our_ip`, rewrite it into the reply (Ethernet
/// addresses too) and return true; otherwise leave it untouched.
pub fn answer_request(frame: &mut [u8], l3_off: usize, our_mac: MacAddr, our_ip: [u8; 4]) -> bool {
    if frame.len() < 12 {
        return false;
    }
    let (eth, rest) = frame.split_at_mut(12);
    let Some(body) = rest.get_mut(l3_off.saturating_sub(12)..) else {
        return false;
    };
    if l3_off < 14 {
        return false;
    }
    let Ok(mut p) = Packet::new_checked(body) else {
        return false;
    };
    if !p.is_request_for(our_ip) {
        return false;
    }
    let asker = p.sender_mac();
    p.make_reply(our_mac, our_ip);
    eth[0..6].copy_from_slice(&asker.0);
    eth[6..12].copy_from_slice(&our_mac.0);
    true
}
