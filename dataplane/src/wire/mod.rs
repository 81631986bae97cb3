//! Packet bytes: the one model of every header xlb reads or writes.
//!
//! - One file per protocol ([`ethernet`], [`arp`], [`ipv4`], [`ipv6`],
//!   [`tcp`], [`udp`], [`sctp`], [`icmp`]; [`ip`] for what IPv4 and IPv6
//!   share: protocol numbers and fragment positions). Each `field` module
//!   holds its header's byte offsets, the only ones in the crate: the fast
//!   paths index with `FAST_L3 + ipv4::field::TTL`, which the compiler
//!   folds. Where headers are written from scratch ([`build`]) they go
//!   through checked views (smoltcp style: a `Packet<T>` per protocol,
//!   `new_checked` is `new_unchecked` then `check_len`, and no accessor
//!   can panic after `check_len`).
//! - [`checksum`]: the Internet checksum and CRC32c as arithmetic over
//!   bytes and words, nothing else.
//! - [`parse`]: the summarising parsers every frame goes through.
//! - [`rewrite`]: every change the pipeline makes to a frame.
//! - [`build`]: whole frames from scratch, for tests, benchmarks and the
//!   packet generator.
//!
//! A DNAT rewrite and its checksums:
//!
//! ```
//! use xlb_dataplane::net::Ip16;
//! use xlb_dataplane::wire::rewrite::{rewrite_l3l4, Xlat};
//! use xlb_dataplane::wire::{build::Builder, parse, tcp, verify_l4_checksum};
//!
//! let mut f = Builder::tcp("192.0.2.1:40000".parse()?, "10.0.0.10:80".parse()?, tcp::flags::SYN)
//!     .to_vec()?;
//! let m = parse(&f).expect("a valid frame");
//! let backend = Ip16::v4([10, 1, 0, 7]);
//! let x = Xlat { src: m.src, dst: backend, sport: m.sport, dport: 8080 };
//! rewrite_l3l4(&mut f, &m, &x);
//! let m2 = parse(&f).expect("still valid");
//! assert_eq!((m2.dst, m2.dport), (backend, 8080));
//! assert!(verify_l4_checksum(&f, &m2));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Invariants: nothing here allocates or panics on any input a parser
//! accepted; every rejection is a [`crate::DropReason`].

pub mod arp;
pub mod build;
pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod ip;
pub mod ipv4;
pub mod ipv6;
pub mod parse;
pub mod rewrite;
pub mod sctp;
pub mod tcp;
pub mod udp;
mod view;

#[cfg(test)]
mod tests;

pub use ip::{proto, Frag};
pub use parse::{
    parse, parse_fast, parse_icmp_inner, verify_l4_checksum, FastMeta, InnerMeta, L4Checksum,
    PacketMeta, FAST_L3, FAST_L4,
};
