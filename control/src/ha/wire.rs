//! The datagrams xlb nodes of one cluster exchange (election RPCs now,
//! connection sync later): a fixed header, a JSON body, and an HMAC-SHA256
//! tag over both under the cluster's shared key.
//!
//! ```text
//!  0      4    5     6        8          16         24     26          26+len   +32
//!  +------+----+-----+--------+----------+----------+------+-----------+--------+
//!  | xlbC | v1 | kind| sender | sequence | rpc id   | len  | body      | tag    |
//!  +------+----+-----+--------+----------+----------+------+-----------+--------+
//! ```
//!
//! Invariants: nothing in a datagram is believed before its tag checks out
//! against the key ([`Codec::open`]); the sender index must name a member
//! other than this node, and the datagram must come from that member's
//! address; a sequence number is accepted once per sender (a sliding
//! window of 64, as IPsec's anti-replay, RFC 4303 §3.4.3), so a captured
//! datagram cannot be played back — a replayed heartbeat would otherwise
//! keep a dead leader's lease alive. Every rejection is a counted
//! [`Reject`], never a panic.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use ring::hmac;

/// The datagrams' first four bytes.
pub const MAGIC: [u8; 4] = *b"xlbC";
/// The format version this code speaks.
pub const VERSION: u8 = 1;
/// Header length.
pub const HEADER_LEN: usize = 26;
/// HMAC-SHA256 tag length.
pub const TAG_LEN: usize = 32;
/// The largest datagram sent or accepted (a body fits easily; UDP over a
/// LAN carries it, fragmented where the MTU is smaller).
pub const MAX_DATAGRAM: usize = 60 * 1024;

/// What a datagram carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A call that expects an answer with the same rpc id.
    Request = 1,
    /// The answer to a request.
    Response = 2,
}

/// A datagram that checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// Request or response.
    pub kind: Kind,
    /// The member that sent it.
    pub sender: usize,
    /// Matches a response to its request.
    pub rpc_id: u64,
    /// The JSON body.
    pub body: &'a [u8],
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    /// too short, wrong magic or version, bad length or kind
    #[error("malformed")]
    Malformed,
    /// not from a member's address, or naming this node or no member
    #[error("not from a member")]
    Foreign,
    /// the tag does not match: another key, or altered in transit
    #[error("bad authentication tag")]
    BadAuth,
    /// a sequence number already seen or too old
    #[error("replayed")]
    Replayed,
}

/// Seals and opens datagrams for one member of a cluster.
pub struct Codec {
    key: hmac::Key,
    /// Every member's address, by index (datagrams come from the member's
    /// bound port, so the whole address is checked).
    members: Vec<SocketAddr>,
    me: usize,
    /// Next sequence number: seconds since the epoch at start in the high
    /// half, so a restarted node continues above what peers saw before.
    next_seq: u64,
    /// Per sender: the highest sequence accepted and a bitmap of the 64
    /// below it.
    windows: Vec<(u64, u64)>,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec")
            .field("members", &self.members)
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

impl Codec {
    /// A codec for member `me` of `members`, authenticating with `key`.
    pub fn new(key: &[u8], members: Vec<SocketAddr>, me: usize) -> Codec {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Codec {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            windows: vec![(0, 0); members.len()],
            members,
            me,
            next_seq: now << 32,
        }
    }

    /// A sealed datagram of `body`.
    pub fn seal(&mut self, kind: Kind, rpc_id: u64, body: &[u8]) -> Option<Vec<u8>> {
        let len = u16::try_from(body.len()).ok()?;
        if HEADER_LEN + body.len() + TAG_LEN > MAX_DATAGRAM {
            return None;
        }
        let sender = u16::try_from(self.me).ok()?;
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut out = Vec::with_capacity(HEADER_LEN + body.len() + TAG_LEN);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(kind as u8);
        out.extend_from_slice(&sender.to_be_bytes());
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&rpc_id.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(body);
        let tag = hmac::sign(&self.key, &out);
        out.extend_from_slice(tag.as_ref());
        Some(out)
    }

    /// Check a datagram that came from `from`, and return what it carries.
    pub fn open<'a>(&mut self, from: SocketAddr, d: &'a [u8]) -> Result<Datagram<'a>, Reject> {
        if d.len() < HEADER_LEN + TAG_LEN || d.len() > MAX_DATAGRAM || d[..4] != MAGIC {
            return Err(Reject::Malformed);
        }
        if d[4] != VERSION {
            return Err(Reject::Malformed);
        }
        let kind = match d[5] {
            1 => Kind::Request,
            2 => Kind::Response,
            _ => return Err(Reject::Malformed),
        };
        let word = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&d[at..at + 8]);
            u64::from_be_bytes(b)
        };
        let sender = usize::from(u16::from_be_bytes([d[6], d[7]]));
        let seq = word(8);
        let rpc_id = word(16);
        let len = usize::from(u16::from_be_bytes([d[24], d[25]]));
        if HEADER_LEN + len + TAG_LEN != d.len() {
            return Err(Reject::Malformed);
        }
        if sender == self.me || self.members.get(sender) != Some(&from) {
            return Err(Reject::Foreign);
        }
        let (signed, tag) = d.split_at(HEADER_LEN + len);
        hmac::verify(&self.key, signed, tag).map_err(|_| Reject::BadAuth)?;
        self.accept_seq(sender, seq)?;
        Ok(Datagram {
            kind,
            sender,
            rpc_id,
            body: &signed[HEADER_LEN..],
        })
    }

    /// The anti-replay window: accept `seq` once, and nothing 64 or more
    /// below the highest accepted.
    fn accept_seq(&mut self, sender: usize, seq: u64) -> Result<(), Reject> {
        let (top, bits) = &mut self.windows[sender];
        if seq > *top {
            let shift = seq - *top;
            *bits = if shift >= 64 { 0 } else { *bits << shift };
            *bits |= 1;
            *top = seq;
            return Ok(());
        }
        let back = *top - seq;
        if back >= 64 || *bits & (1 << back) != 0 {
            return Err(Reject::Replayed);
        }
        *bits |= 1 << back;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn members() -> Vec<SocketAddr> {
        vec![a(), "10.0.0.2:11112".parse().expect("addr")]
    }

    fn pair() -> (Codec, Codec) {
        (
            Codec::new(b"secret", members(), 0),
            Codec::new(b"secret", members(), 1),
        )
    }

    fn a() -> SocketAddr {
        "10.0.0.1:11112".parse().expect("addr")
    }

    #[test]
    fn a_sealed_datagram_opens_once_at_its_member() {
        let (mut n0, mut n1) = pair();
        let d = n0.seal(Kind::Request, 7, b"{\"x\":1}").expect("fits");
        let got = n1.open(a(), &d).expect("valid");
        assert_eq!(got.kind, Kind::Request);
        assert_eq!(
            (got.sender, got.rpc_id, got.body),
            (0, 7, &b"{\"x\":1}"[..])
        );
        assert_eq!(n1.open(a(), &d), Err(Reject::Replayed), "played back");
    }

    #[test]
    fn the_wrong_key_sender_or_address_is_refused() {
        let (mut n0, mut n1) = pair();
        let mut other = Codec::new(b"other key", members(), 0);
        let d = other.seal(Kind::Request, 1, b"{}").expect("fits");
        assert_eq!(n1.open(a(), &d), Err(Reject::BadAuth));
        let d = n0.seal(Kind::Request, 1, b"{}").expect("fits");
        let stranger: SocketAddr = "10.0.0.9:11112".parse().expect("addr");
        assert_eq!(
            n1.open(stranger, &d),
            Err(Reject::Foreign),
            "from a non-member"
        );
        let other_port: SocketAddr = "10.0.0.1:11113".parse().expect("addr");
        assert_eq!(
            n1.open(other_port, &d),
            Err(Reject::Foreign),
            "from another port of the member's host"
        );
        // A member cannot send as itself to itself.
        assert_eq!(n0.open(a(), &d), Err(Reject::Foreign));
        let mut flipped = d.clone();
        flipped[HEADER_LEN] ^= 1;
        assert_eq!(n1.open(a(), &flipped), Err(Reject::BadAuth), "altered body");
        assert!(n1.open(a(), &d).is_ok(), "the original still opens");
    }

    #[test]
    fn reordered_datagrams_open_and_old_ones_do_not() {
        let (mut n0, mut n1) = pair();
        let ds: Vec<Vec<u8>> = (0..70)
            .map(|i| n0.seal(Kind::Response, i, b"{}").expect("fits"))
            .collect();
        assert!(n1.open(a(), &ds[69]).is_ok());
        assert!(
            n1.open(a(), &ds[10]).is_ok(),
            "59 behind: inside the window"
        );
        assert_eq!(
            n1.open(a(), &ds[5]),
            Err(Reject::Replayed),
            "64 behind: too old"
        );
        assert_eq!(n1.open(a(), &ds[10]), Err(Reject::Replayed));
    }

    #[test]
    fn a_restarted_sender_continues_above_what_was_seen() {
        let (mut n0, mut n1) = pair();
        let d = n0.seal(Kind::Request, 1, b"{}").expect("fits");
        assert!(n1.open(a(), &d).is_ok());
        // A restart within the same second starts from the same base: it is
        // refused until its numbers pass the old ones. One a second later
        // starts above them.
        let mut restarted = Codec::new(b"secret", members(), 0);
        restarted.next_seq = n0.next_seq + (1 << 32);
        let d = restarted.seal(Kind::Request, 1, b"{}").expect("fits");
        assert!(n1.open(a(), &d).is_ok());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let (_, mut n1) = pair();
            let _ = n1.open(a(), &bytes);
        }

        #[test]
        fn any_altered_byte_is_refused(body in proptest::collection::vec(any::<u8>(), 0..64), at in any::<usize>(), bit in 0u8..8) {
            let (mut n0, mut n1) = pair();
            let d = n0.seal(Kind::Request, 3, &body).expect("fits");
            let mut bad = d.clone();
            let i = at % bad.len();
            bad[i] ^= 1 << bit;
            prop_assert!(n1.open(a(), &bad).is_err());
        }
    }
}
