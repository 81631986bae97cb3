//! Small address types and hashes shared by the pipeline, the tables and control.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// Error parsing a MAC address or a CIDR prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// not a MAC address (expected six hex octets separated by ':')
    #[error("not a MAC address (expected six hex octets separated by ':')")]
    Mac,
    /// not a CIDR prefix (expected address/length)
    #[error("not a CIDR prefix (expected address/length)")]
    Cidr,
}

impl FromStr for MacAddr {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in out.iter_mut() {
            let p = parts.next().ok_or(ParseError::Mac)?;
            if p.is_empty() || p.len() > 2 {
                return Err(ParseError::Mac);
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| ParseError::Mac)?;
        }
        if parts.next().is_some() {
            return Err(ParseError::Mac);
        }
        Ok(MacAddr(out))
    }
}

/// An IPv4 or IPv6 prefix, e.g. `10.0.0.0/8`. Host bits are cleared on parse.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    /// A prefix; `None` if `len` is longer than the address.
    pub fn new(addr: IpAddr, len: u8) -> Option<Cidr> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return None;
        }
        Some(Cidr {
            addr: mask(addr, len),
            len,
        })
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// True for `/0`.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `ip` lies inside the prefix (different families never match).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(ip, self.len) == self.addr
            }
            _ => false,
        }
    }
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

impl FromStr for Cidr {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().map_err(|_| ParseError::Cidr)?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            Some(l) => l.trim().parse::<u8>().map_err(|_| ParseError::Cidr)?,
            None => max,
        };
        Cidr::new(addr, len).ok_or(ParseError::Cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// A 64-bit hash that is the same in every process and on every run (Maglev
/// permutations and flow hashing must not depend on a random seed).
/// FNV-1a over the bytes, finished with the murmur3 64-bit finaliser so that
/// nearby inputs spread over all bits.
pub fn stable_hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    fmix64(h)
}

/// murmur3's 64-bit finaliser: a cheap bijective mix.
#[inline]
pub fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// An IP address as a fixed 16-byte value: IPv4 is stored IPv4-mapped
/// (`::ffff:a.b.c.d`), so one key layout serves both families.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Ip16(pub [u8; 16]);

impl Ip16 {
    /// From an IPv4 address.
    #[inline]
    pub fn v4(a: [u8; 4]) -> Ip16 {
        let mut o = [0u8; 16];
        o[10] = 0xff;
        o[11] = 0xff;
        o[12..].copy_from_slice(&a);
        Ip16(o)
    }
    /// From an IPv6 address.
    #[inline]
    pub fn v6(a: [u8; 16]) -> Ip16 {
        Ip16(a)
    }
    /// True if this holds an IPv4 address.
    #[inline]
    pub fn is_v4(&self) -> bool {
        // Bytes 0..10 zero and 10..12 all ones, as two word compares.
        let w = self.words();
        w[0] == 0 && w[1] as u32 == 0xffff_0000
    }
    /// The IPv4 octets (meaningful only if [`Ip16::is_v4`]).
    #[inline]
    pub fn v4_octets(&self) -> [u8; 4] {
        [self.0[12], self.0[13], self.0[14], self.0[15]]
    }
    /// Two 64-bit words, for hashing and atomic storage.
    #[inline]
    pub fn words(&self) -> [u64; 2] {
        let (a, b) = self.0.split_at(8);
        [
            u64::from_le_bytes(a.try_into().expect("8 bytes")),
            u64::from_le_bytes(b.try_into().expect("8 bytes")),
        ]
    }
    /// Inverse of [`Ip16::words`].
    #[inline]
    pub fn from_words(w: [u64; 2]) -> Ip16 {
        let mut o = [0u8; 16];
        o[..8].copy_from_slice(&w[0].to_le_bytes());
        o[8..].copy_from_slice(&w[1].to_le_bytes());
        Ip16(o)
    }
}

impl From<IpAddr> for Ip16 {
    fn from(ip: IpAddr) -> Ip16 {
        match ip {
            IpAddr::V4(a) => Ip16::v4(a.octets()),
            IpAddr::V6(a) => Ip16::v6(a.octets()),
        }
    }
}

impl From<Ip16> for IpAddr {
    fn from(ip: Ip16) -> IpAddr {
        if ip.is_v4() {
            IpAddr::V4(Ipv4Addr::from(ip.v4_octets()))
        } else {
            IpAddr::V6(Ipv6Addr::from(ip.0))
        }
    }
}

impl fmt::Debug for Ip16 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", IpAddr::from(*self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parse_and_print_round_trip() {
        let m: MacAddr = "02:00:0a:ff:00:01".parse().expect("valid");
        assert_eq!(m.to_string(), "02:00:0a:ff:00:01");
        assert!("02:00:0a:ff:00".parse::<MacAddr>().is_err());
        assert!("02:00:0a:ff:00:01:02".parse::<MacAddr>().is_err());
        assert!("zz:00:0a:ff:00:01".parse::<MacAddr>().is_err());
    }

    #[test]
    fn cidr_contains_clears_host_bits_and_separates_families() {
        let c: Cidr = "10.1.2.3/8".parse().expect("valid");
        assert_eq!(c.to_string(), "10.0.0.0/8");
        assert!(c.contains("10.200.0.1".parse().expect("ip")));
        assert!(!c.contains("11.0.0.1".parse().expect("ip")));
        assert!(!c.contains("::ffff:10.0.0.1".parse().expect("ip")));
        let all: Cidr = "0.0.0.0/0".parse().expect("valid");
        assert!(all.contains("1.2.3.4".parse().expect("ip")));
        let v6: Cidr = "2001:db8::/32".parse().expect("valid");
        assert!(v6.contains("2001:db8:1::1".parse().expect("ip")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert_eq!("10.0.0.1".parse::<Cidr>().expect("host").len(), 32);
    }

    #[test]
    fn ip16_round_trips_both_families() {
        for s in ["192.0.2.7", "2001:db8::5", "::1"] {
            let ip: IpAddr = s.parse().expect("ip");
            let k = Ip16::from(ip);
            assert_eq!(IpAddr::from(k), ip);
            assert_eq!(Ip16::from_words(k.words()), k);
        }
        assert!(Ip16::from("1.2.3.4".parse::<IpAddr>().expect("ip")).is_v4());
        // Only ::ffff:0:0/96 is IPv4: one byte off anywhere in the first 12 is not.
        let v4 = Ip16::v4([1, 2, 3, 4]);
        for i in 0..12 {
            let mut o = v4;
            o.0[i] ^= 0x01;
            assert!(!o.is_v4(), "byte {i}");
        }
        assert!(!Ip16::from("::1.2.3.4".parse::<IpAddr>().expect("ip")).is_v4());
    }

    #[test]
    fn stable_hash_is_fixed() {
        // Pinned value: a change here reshuffles every Maglev table in the field.
        assert_eq!(stable_hash64(b"10.0.0.1:80"), stable_hash64(b"10.0.0.1:80"));
        assert_ne!(stable_hash64(b"10.0.0.1:80"), stable_hash64(b"10.0.0.2:80"));
    }
}
