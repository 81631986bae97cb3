//! The bytes of connection sync between two members: a handshake that
//! proves both ends hold the cluster key, then length-prefixed frames, each
//! carrying a batch of flow events (or a dump's end, or a keepalive) under
//! an HMAC-SHA256 tag.
//!
//! Handshake (the dialer `D` opens a TCP connection to the listener `L`):
//!
//! ```text
//!  D → L  hello:  "xlbS" | version | 0 | from D (u16) | to L (u16) | nonce D (32)
//!  L → D  reply:  "xlbS" | version | 0 | from L (u16) | to D (u16) | nonce L (32) | tag L (32)
//!  D → L  proof:  tag D (32)
//! ```
//!
//! `tag L` and `tag D` are HMACs of the transcript under the sync key, each
//! under its own label; the session key is a third HMAC of the transcript.
//! Both nonces are fresh, so a recorded connection cannot be played back to
//! either end: its tags were made for other nonces.
//!
//! Frames then flow from dialer to listener only (each member sends its
//! own events over the connection it dialled):
//!
//! ```text
//!  len (u32, bytes after it) | kind (u8) | count (u16) | sequence (u64) | body | tag (32)
//! ```
//!
//! The tag is HMAC-SHA256 under the session key of every byte before it;
//! the sequence number counts from 0 on each connection, and the receiver
//! takes only the next one (TCP keeps the order): a frame cannot be
//! dropped, replayed or moved within a connection, nor carried to another.
//!
//! An event in a body: a kind byte (Open or Close, whether the addresses
//! are IPv4 — then each is 4 bytes, else 16 —, whether an Open is from a
//! dump or refresh rather than a new flow, whether it names the client's
//! MAC), then the fields in the order of [`SyncedFlow`], big-endian.
//!
//! Invariants: nothing after the handshake is believed before its tag
//! checks out; no frame longer than [`MAX_FRAME`] is read; decoding checks
//! every length before it reads and never panics: whatever is wrong is a
//! [`WireError`], which the caller counts before it drops the connection.

use ring::hmac;
use xlb_dataplane::conntrack::FlowKey;
use xlb_dataplane::net::{Ip16, MacAddr};
use xlb_dataplane::sync::{SyncEvent, SyncedFlow};
use xlb_dataplane::wire::rewrite::Xlat;

/// The handshake's first four bytes (the election's datagrams start
/// `xlbC`).
pub const MAGIC: [u8; 4] = *b"xlbS";
/// The protocol version this code speaks.
pub const VERSION: u8 = 1;
/// Nonce length.
pub const NONCE_LEN: usize = 32;
/// HMAC-SHA256 tag length.
pub const TAG_LEN: usize = 32;
/// Length of the dialer's hello (and of the reply before its tag).
pub const HELLO_LEN: usize = 10 + NONCE_LEN;
/// Length of the listener's reply.
pub const REPLY_LEN: usize = HELLO_LEN + TAG_LEN;
/// Length of the dialer's proof.
pub const PROOF_LEN: usize = TAG_LEN;
/// Events in one frame at most.
pub const MAX_EVENTS: usize = 512;
/// The largest event: an IPv6 Open with a MAC.
pub const MAX_EVENT_LEN: usize = 1 + 37 + 36 + 16 + 2 + 1 + 4 + 1 + 1 + 2 + 6 + 8;
/// Frame header after the length: kind, count and sequence number.
const FRAME_HEAD: usize = 11;
/// The largest value of a frame's length field: a full batch of the
/// largest events fits under it.
pub const MAX_FRAME: usize = 64 * 1024;
const _: () = assert!(FRAME_HEAD + MAX_EVENTS * MAX_EVENT_LEN + TAG_LEN <= MAX_FRAME);

/// The labels that separate what the sync key signs (and the sync key from
/// the election's use of the cluster key).
const LABEL_KEY: &[u8] = b"xlb connection sync v1";
const LABEL_LISTENER: &[u8] = b"xlb sync listener";
const LABEL_DIALER: &[u8] = b"xlb sync dialer";
const LABEL_SESSION: &[u8] = b"xlb sync session";

/// Why bytes from a peer were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// a length, kind, count or field that is not valid
    #[error("malformed")]
    Malformed,
    /// a frame longer than the bound
    #[error("oversized frame")]
    Oversized,
    /// a tag that does not match: another key, or altered in transit
    #[error("bad authentication tag")]
    BadAuth,
    /// another protocol version
    #[error("unsupported version")]
    Version,
    /// a frame with a valid tag out of sequence: played back
    #[error("replayed")]
    Replayed,
    /// a peer naming itself as no other member, or this node as not itself
    #[error("not from a member")]
    Foreign,
}

impl WireError {
    /// Every reason, for counters and metrics labels.
    pub const ALL: [WireError; 6] = [
        WireError::Malformed,
        WireError::Oversized,
        WireError::BadAuth,
        WireError::Version,
        WireError::Replayed,
        WireError::Foreign,
    ];

    /// The metrics label.
    pub fn name(self) -> &'static str {
        match self {
            WireError::Malformed => "malformed",
            WireError::Oversized => "oversized",
            WireError::BadAuth => "bad_auth",
            WireError::Version => "version",
            WireError::Replayed => "replayed",
            WireError::Foreign => "foreign",
        }
    }
}

/// The key every member derives from the cluster key (its Debug shows
/// only the algorithm).
#[derive(Debug)]
pub struct SyncKey(hmac::Key);

impl SyncKey {
    /// Derive the sync key from the cluster's shared key.
    pub fn derive(cluster_key: &[u8]) -> SyncKey {
        let k = hmac::Key::new(hmac::HMAC_SHA256, cluster_key);
        let derived = hmac::sign(&k, LABEL_KEY);
        SyncKey(hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()))
    }

    fn tag(&self, label: &[u8], parts: &[&[u8]]) -> hmac::Tag {
        let mut c = hmac::Context::with_key(&self.0);
        c.update(label);
        for p in parts {
            c.update(p);
        }
        c.sign()
    }

    fn session(&self, hello: &[u8; HELLO_LEN], reply: &[u8]) -> hmac::Key {
        let t = self.tag(LABEL_SESSION, &[hello, &reply[..HELLO_LEN]]);
        hmac::Key::new(hmac::HMAC_SHA256, t.as_ref())
    }
}

/// A hello (or a reply's first half): who sends, to whom, and a nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// The sender's member index.
    pub from: u16,
    /// The member index the sender means to reach.
    pub to: u16,
    /// Fresh for this connection.
    pub nonce: [u8; NONCE_LEN],
}

impl Hello {
    /// Its bytes.
    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut b = [0u8; HELLO_LEN];
        b[..4].copy_from_slice(&MAGIC);
        b[4] = VERSION;
        b[6..8].copy_from_slice(&self.from.to_be_bytes());
        b[8..10].copy_from_slice(&self.to.to_be_bytes());
        b[10..].copy_from_slice(&self.nonce);
        b
    }

    /// Read a hello that claims to come from a member other than `me` and
    /// to be meant for `me`, in a cluster of `members`.
    pub fn decode(b: &[u8], me: usize, members: usize) -> Result<Hello, WireError> {
        if b.len() < HELLO_LEN || b[..4] != MAGIC || b[5] != 0 {
            return Err(WireError::Malformed);
        }
        if b[4] != VERSION {
            return Err(WireError::Version);
        }
        let from = u16::from_be_bytes([b[6], b[7]]);
        let to = u16::from_be_bytes([b[8], b[9]]);
        if usize::from(to) != me || usize::from(from) == me || usize::from(from) >= members {
            return Err(WireError::Foreign);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&b[10..HELLO_LEN]);
        Ok(Hello { from, to, nonce })
    }
}

/// The listener's answer to `hello`: its own hello and a tag over both.
pub fn reply(key: &SyncKey, hello: &[u8; HELLO_LEN], mine: &Hello) -> [u8; REPLY_LEN] {
    let head = mine.encode();
    let tag = key.tag(LABEL_LISTENER, &[hello, &head]);
    let mut out = [0u8; REPLY_LEN];
    out[..HELLO_LEN].copy_from_slice(&head);
    out[HELLO_LEN..].copy_from_slice(tag.as_ref());
    out
}

/// The dialer's check of the listener's `reply` to its `hello`: the
/// listener is member `hello.to` and holds the key. Returns the proof to
/// send and the sealer of the frames that follow.
pub fn check_reply(
    key: &SyncKey,
    hello: &Hello,
    reply: &[u8; REPLY_LEN],
) -> Result<([u8; PROOF_LEN], Sealer), WireError> {
    let theirs = Hello::decode(reply, usize::from(hello.from), usize::MAX)?;
    if theirs.from != hello.to {
        return Err(WireError::Foreign);
    }
    let hello = hello.encode();
    let (head, tag) = reply.split_at(HELLO_LEN);
    hmac::verify(&key.0, &[LABEL_LISTENER, &hello, head].concat(), tag)
        .map_err(|_| WireError::BadAuth)?;
    let proof = key.tag(LABEL_DIALER, &[&hello, reply]);
    let mut p = [0u8; PROOF_LEN];
    p.copy_from_slice(proof.as_ref());
    Ok((
        p,
        Sealer {
            key: key.session(&hello, reply),
            seq: 0,
        },
    ))
}

/// The listener's check of the dialer's `proof`. Returns the opener of the
/// frames that follow.
pub fn check_proof(
    key: &SyncKey,
    hello: &[u8; HELLO_LEN],
    reply: &[u8; REPLY_LEN],
    proof: &[u8; PROOF_LEN],
) -> Result<Opener, WireError> {
    hmac::verify(&key.0, &[LABEL_DIALER, hello, reply].concat(), proof)
        .map_err(|_| WireError::BadAuth)?;
    Ok(Opener {
        key: key.session(hello, reply),
        seq: 0,
    })
}

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A batch of events.
    Events = 1,
    /// The sender's full dump has been sent.
    DumpDone = 2,
    /// Nothing: the connection is alive.
    Ping = 3,
}

/// A frame that checked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// `count` events encoded in `body` ([`decode_events`]).
    Events {
        /// How many.
        count: u16,
        /// Their bytes.
        body: &'a [u8],
    },
    /// The dump is complete.
    DumpDone,
    /// Keepalive.
    Ping,
}

/// Seals the frames of one connection, in order.
#[derive(Debug)]
pub struct Sealer {
    key: hmac::Key,
    seq: u64,
}

impl Sealer {
    /// The frame of `count` events encoded in `body` (or of another kind,
    /// with no body), length prefix and tag included. `None` if it would
    /// exceed the bounds.
    pub fn seal(&mut self, kind: Kind, count: usize, body: &[u8]) -> Option<Vec<u8>> {
        let len = FRAME_HEAD + body.len() + TAG_LEN;
        if len > MAX_FRAME || count > MAX_EVENTS {
            return None;
        }
        let mut out = Vec::with_capacity(4 + len);
        out.extend_from_slice(&u32::try_from(len).ok()?.to_be_bytes());
        out.push(kind as u8);
        out.extend_from_slice(&u16::try_from(count).ok()?.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(body);
        let tag = hmac::sign(&self.key, &out);
        out.extend_from_slice(tag.as_ref());
        self.seq += 1;
        Some(out)
    }
}

/// The length a frame's 4-byte prefix announces (the bytes that follow),
/// if it is within bounds.
pub fn frame_len(prefix: [u8; 4]) -> Result<usize, WireError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME {
        return Err(WireError::Oversized);
    }
    if len < FRAME_HEAD + TAG_LEN {
        return Err(WireError::Malformed);
    }
    Ok(len)
}

/// Opens the frames of one connection, in order.
#[derive(Debug)]
pub struct Opener {
    key: hmac::Key,
    seq: u64,
}

impl Opener {
    /// Check the next frame, `frame` being all of it, length prefix
    /// included.
    pub fn open<'a>(&mut self, frame: &'a [u8]) -> Result<Frame<'a>, WireError> {
        let prefix: [u8; 4] = frame
            .get(..4)
            .and_then(|p| p.try_into().ok())
            .ok_or(WireError::Malformed)?;
        let len = frame_len(prefix)?;
        if frame.len() != 4 + len {
            return Err(WireError::Malformed);
        }
        let (signed, tag) = frame.split_at(frame.len() - TAG_LEN);
        hmac::verify(&self.key, signed, tag).map_err(|_| WireError::BadAuth)?;
        let seq = u64::from_be_bytes(signed[7..15].try_into().map_err(|_| WireError::Malformed)?);
        if seq != self.seq {
            return Err(WireError::Replayed);
        }
        self.seq += 1;
        let count = u16::from_be_bytes([signed[5], signed[6]]);
        let body = &signed[4 + FRAME_HEAD..];
        match signed[4] {
            1 if usize::from(count) <= MAX_EVENTS => Ok(Frame::Events { count, body }),
            2 if count == 0 && body.is_empty() => Ok(Frame::DumpDone),
            3 if count == 0 && body.is_empty() => Ok(Frame::Ping),
            _ => Err(WireError::Malformed),
        }
    }
}

/// An event as it travels: what the dataplane said, and for an Open
/// whether it repeats a flow the receiver may already have (a dump or a
/// refresh) rather than announcing a new one, whose lag is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item {
    /// The event.
    pub event: SyncEvent,
    /// From a dump or refresh (always false for a Close).
    pub refresh: bool,
}

/// The kind byte of an event.
mod ev {
    pub const OPEN: u8 = 1;
    pub const CLOSE: u8 = 2;
    pub const TYPE_MASK: u8 = 3;
    pub const V4: u8 = 4;
    pub const REFRESH: u8 = 8;
    pub const MAC: u8 = 16;
    pub const KNOWN: u8 = TYPE_MASK | V4 | REFRESH | MAC;
}

fn put_ip(out: &mut Vec<u8>, ip: &Ip16, v4: bool) {
    if v4 {
        out.extend_from_slice(&ip.v4_octets());
    } else {
        out.extend_from_slice(&ip.0);
    }
}

fn put_key(out: &mut Vec<u8>, k: &FlowKey, v4: bool) {
    put_ip(out, &k.src, v4);
    put_ip(out, &k.dst, v4);
    out.extend_from_slice(&k.sport.to_be_bytes());
    out.extend_from_slice(&k.dport.to_be_bytes());
    out.push(k.proto);
}

/// Append `item`'s encoding to `out`.
pub fn encode_item(item: &Item, out: &mut Vec<u8>) {
    match &item.event {
        SyncEvent::Close(k) => {
            let v4 = k.src.is_v4() && k.dst.is_v4();
            out.push(ev::CLOSE | if v4 { ev::V4 } else { 0 });
            put_key(out, k, v4);
        }
        SyncEvent::Open(f) => {
            let v4 = [f.key.src, f.key.dst, f.xlat.src, f.xlat.dst, f.backend]
                .iter()
                .all(Ip16::is_v4);
            let mut kind = ev::OPEN;
            if v4 {
                kind |= ev::V4;
            }
            if item.refresh {
                kind |= ev::REFRESH;
            }
            if f.client_mac.is_some() {
                kind |= ev::MAC;
            }
            out.push(kind);
            put_key(out, &f.key, v4);
            put_ip(out, &f.xlat.src, v4);
            put_ip(out, &f.xlat.dst, v4);
            out.extend_from_slice(&f.xlat.sport.to_be_bytes());
            out.extend_from_slice(&f.xlat.dport.to_be_bytes());
            put_ip(out, &f.backend, v4);
            out.extend_from_slice(&f.backend_port.to_be_bytes());
            out.push(f.mode);
            out.extend_from_slice(&f.timeout_s.to_be_bytes());
            out.push(f.fwd_flags);
            out.push(f.rep_flags);
            out.extend_from_slice(&f.client_port.to_be_bytes());
            if let Some(m) = f.client_mac {
                out.extend_from_slice(&m.0);
            }
            out.extend_from_slice(&f.opened_unix_ns.to_be_bytes());
        }
    }
}

/// The body of a frame of `items` (at most [`MAX_EVENTS`]).
pub fn encode_items(items: &[Item]) -> Vec<u8> {
    let mut out = Vec::with_capacity(items.len() * MAX_EVENT_LEN);
    for i in items {
        encode_item(i, &mut out);
    }
    out
}

/// A checked reader over a body: every take checks the length first.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Malformed);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        self.take(N)?.try_into().map_err(|_| WireError::Malformed)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.arr::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.arr()?))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.arr()?))
    }
    fn ip(&mut self, v4: bool) -> Result<Ip16, WireError> {
        if v4 {
            Ok(Ip16::v4(self.arr()?))
        } else {
            Ok(Ip16(self.arr()?))
        }
    }
    fn key(&mut self, v4: bool) -> Result<FlowKey, WireError> {
        Ok(FlowKey {
            src: self.ip(v4)?,
            dst: self.ip(v4)?,
            sport: self.u16()?,
            dport: self.u16()?,
            proto: self.u8()?,
        })
    }
}

/// Decode the `count` events of `body` into `out`; every byte must belong
/// to one of them.
pub fn decode_events(body: &[u8], count: u16, out: &mut Vec<Item>) -> Result<(), WireError> {
    let mut r = Reader(body);
    for _ in 0..count {
        let kind = r.u8()?;
        if kind & !ev::KNOWN != 0 {
            return Err(WireError::Malformed);
        }
        let v4 = kind & ev::V4 != 0;
        let item = match kind & ev::TYPE_MASK {
            ev::CLOSE if kind & (ev::REFRESH | ev::MAC) == 0 => Item {
                event: SyncEvent::Close(r.key(v4)?),
                refresh: false,
            },
            ev::OPEN => {
                let key = r.key(v4)?;
                let xlat = Xlat {
                    src: r.ip(v4)?,
                    dst: r.ip(v4)?,
                    sport: r.u16()?,
                    dport: r.u16()?,
                };
                let backend = r.ip(v4)?;
                let backend_port = r.u16()?;
                let mode = r.u8()?;
                let timeout_s = r.u32()?;
                let fwd_flags = r.u8()?;
                let rep_flags = r.u8()?;
                let client_port = r.u16()?;
                let client_mac = if kind & ev::MAC != 0 {
                    Some(MacAddr(r.arr()?))
                } else {
                    None
                };
                let opened_unix_ns = r.u64()?;
                Item {
                    event: SyncEvent::Open(SyncedFlow {
                        key,
                        xlat,
                        backend,
                        backend_port,
                        mode,
                        timeout_s,
                        fwd_flags,
                        rep_flags,
                        client_mac,
                        client_port,
                        opened_unix_ns,
                    }),
                    refresh: kind & ev::REFRESH != 0,
                }
            }
            _ => return Err(WireError::Malformed),
        };
        out.push(item);
    }
    if !r.0.is_empty() {
        return Err(WireError::Malformed);
    }
    Ok(())
}

/// An IPv4 TCP flow to a VIP on :6443 from client port `sport`, DNAT to
/// one backend, for tests.
#[cfg(test)]
pub(crate) fn example_flow(sport: u16, opened_unix_ns: u64) -> SyncedFlow {
    SyncedFlow {
        key: FlowKey {
            src: Ip16::v4([10, 0, 0, 1]),
            dst: Ip16::v4([10, 0, 0, 100]),
            sport,
            dport: 6443,
            proto: 6,
        },
        xlat: Xlat {
            src: Ip16::v4([10, 0, 0, 1]),
            dst: Ip16::v4([10, 0, 1, 5]),
            sport,
            dport: 6443,
        },
        backend: Ip16::v4([10, 0, 1, 5]),
        backend_port: 6443,
        mode: 0,
        timeout_s: 3600,
        fwd_flags: 2,
        rep_flags: 0,
        client_mac: Some(MacAddr([2, 0, 0, 0, 0, 1])),
        client_port: 0,
        opened_unix_ns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: &[u8] = b"a test key of 32 bytes, no more.";

    /// A completed handshake between member 0 (dialing) and 1.
    fn session(dialer_key: &[u8]) -> Result<(Sealer, Opener), WireError> {
        let (kd, kl) = (SyncKey::derive(dialer_key), SyncKey::derive(KEY));
        let mine = Hello {
            from: 0,
            to: 1,
            nonce: [7; NONCE_LEN],
        };
        let hello = mine.encode();
        let got = Hello::decode(&hello, 1, 3)?;
        let r = reply(
            &kl,
            &hello,
            &Hello {
                from: 1,
                to: got.from,
                nonce: [9; NONCE_LEN],
            },
        );
        let (proof, sealer) = check_reply(&kd, &mine, &r)?;
        let opener = check_proof(&kl, &hello, &r, &proof)?;
        Ok((sealer, opener))
    }

    fn ip() -> impl Strategy<Value = Ip16> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(Ip16::v4),
            any::<[u8; 16]>().prop_map(Ip16),
        ]
    }

    fn key() -> impl Strategy<Value = FlowKey> {
        (ip(), ip(), any::<u16>(), any::<u16>(), any::<u8>()).prop_map(
            |(src, dst, sport, dport, proto)| FlowKey {
                src,
                dst,
                sport,
                dport,
                proto,
            },
        )
    }

    fn item() -> impl Strategy<Value = Item> {
        let open = (
            key(),
            (ip(), ip(), any::<u16>(), any::<u16>()),
            ip(),
            (
                any::<u16>(),
                any::<u8>(),
                any::<u32>(),
                any::<u8>(),
                any::<u8>(),
                any::<u16>(),
            ),
            proptest::option::of(any::<[u8; 6]>()),
            any::<u64>(),
            any::<bool>(),
        )
            .prop_map(
                |(
                    key,
                    (xs, xd, xsp, xdp),
                    backend,
                    (bp, mode, t, ff, rf, cp),
                    mac,
                    at,
                    refresh,
                )| {
                    Item {
                        event: SyncEvent::Open(SyncedFlow {
                            key,
                            xlat: Xlat {
                                src: xs,
                                dst: xd,
                                sport: xsp,
                                dport: xdp,
                            },
                            backend,
                            backend_port: bp,
                            mode,
                            timeout_s: t,
                            fwd_flags: ff,
                            rep_flags: rf,
                            client_mac: mac.map(MacAddr),
                            client_port: cp,
                            opened_unix_ns: at,
                        }),
                        refresh,
                    }
                },
            );
        let close = key().prop_map(|k| Item {
            event: SyncEvent::Close(k),
            refresh: false,
        });
        prop_oneof![open, close]
    }

    #[test]
    fn a_handshake_with_the_same_key_opens_frames_in_order() {
        let (mut s, mut o) = session(KEY).expect("same key");
        let f1 = s.seal(Kind::Ping, 0, &[]).expect("fits");
        let f2 = s.seal(Kind::DumpDone, 0, &[]).expect("fits");
        assert_eq!(o.open(&f1), Ok(Frame::Ping));
        assert_eq!(o.open(&f1), Err(WireError::Replayed));
        let (_, mut o2) = session(KEY).expect("same key");
        assert_eq!(o2.open(&f2), Err(WireError::Replayed), "out of order");
        assert_eq!(o.open(&f2), Ok(Frame::DumpDone));
    }

    #[test]
    fn another_key_fails_the_handshake_on_both_sides() {
        assert_eq!(
            session(b"another key, also 32 bytes long.").map(|_| ()),
            Err(WireError::BadAuth)
        );
    }

    #[test]
    fn a_hello_naming_the_wrong_members_is_foreign() {
        let h = |from, to| {
            Hello {
                from,
                to,
                nonce: [0; NONCE_LEN],
            }
            .encode()
        };
        assert_eq!(Hello::decode(&h(0, 2), 1, 3), Err(WireError::Foreign));
        assert_eq!(Hello::decode(&h(1, 1), 1, 3), Err(WireError::Foreign));
        assert_eq!(Hello::decode(&h(3, 1), 1, 3), Err(WireError::Foreign));
        let mut v2 = h(0, 1);
        v2[4] = 2;
        assert_eq!(Hello::decode(&v2, 1, 3), Err(WireError::Version));
    }

    #[test]
    fn an_oversized_length_is_refused_before_reading() {
        assert_eq!(
            frame_len((MAX_FRAME as u32 + 1).to_be_bytes()),
            Err(WireError::Oversized)
        );
        assert_eq!(frame_len(0u32.to_be_bytes()), Err(WireError::Malformed));
    }

    #[test]
    fn an_ipv4_open_takes_55_bytes() {
        let f = example_flow(40000, 1);
        let b = encode_items(&[Item {
            event: SyncEvent::Open(f),
            refresh: false,
        }]);
        assert_eq!(b.len(), 55);
    }

    proptest! {
        #[test]
        fn decode_inverts_encode(items in proptest::collection::vec(item(), 0..MAX_EVENTS)) {
            let (mut s, mut o) = session(KEY).expect("same key");
            let body = encode_items(&items);
            let frame = s.seal(Kind::Events, items.len(), &body).expect("fits");
            let Ok(Frame::Events { count, body }) = o.open(&frame) else {
                return Err(TestCaseError::fail("not an events frame"));
            };
            let mut got = Vec::new();
            decode_events(body, count, &mut got).expect("valid");
            prop_assert_eq!(got, items);
        }

        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..600), count in any::<u16>()) {
            let _ = decode_events(&body, count, &mut Vec::new());
        }

        #[test]
        fn arbitrary_frames_and_hellos_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let (_, mut o) = session(KEY).expect("same key");
            prop_assert!(o.open(&bytes).is_err());
            let _ = Hello::decode(&bytes, 1, 3);
        }

        #[test]
        fn any_altered_byte_is_refused(items in proptest::collection::vec(item(), 1..4), at in any::<usize>(), bit in 0u8..8) {
            let (mut s, mut o) = session(KEY).expect("same key");
            let body = encode_items(&items);
            let mut f = s.seal(Kind::Events, items.len(), &body).expect("fits");
            let i = at % f.len();
            f[i] ^= 1 << bit;
            prop_assert!(o.open(&f).is_err());
        }
    }
}
