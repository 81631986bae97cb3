//! Request/response calls between cluster members over one UDP socket
//! ([`Rpc`]), sealed by [`super::wire::Codec`]. UDP rather than TCP: a
//! heartbeat to a dead peer must cost nothing and never wait on a
//! connection; openraft retries what is lost.
//!
//! Every datagram that fails a check is counted by cause ([`Counters`]) and
//! dropped; a member is "heard" (for liveness in `GET /config/cistate`) when
//! an authenticated datagram of its arrives.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::oneshot;

use super::raft::{self, NodeId, Raft, Request, Response};
use super::wire::{Codec, Kind, Reject, MAX_DATAGRAM};

/// Datagrams received, by outcome.
#[derive(Debug, Default)]
pub struct Counters {
    /// Authenticated and understood.
    pub accepted: AtomicU64,
    /// Too short, wrong magic/version/length.
    pub malformed: AtomicU64,
    /// Not from a member's address.
    pub foreign: AtomicU64,
    /// Bad authentication tag (another key, or altered).
    pub bad_auth: AtomicU64,
    /// Sequence number seen before.
    pub replayed: AtomicU64,
    /// Authenticated, but the body is not a call this version knows.
    pub bad_body: AtomicU64,
    /// Calls that got no answer in time.
    pub timeouts: AtomicU64,
}

impl Counters {
    fn reject(&self, r: Reject) {
        match r {
            Reject::Malformed => &self.malformed,
            Reject::Foreign => &self.foreign,
            Reject::BadAuth => &self.bad_auth,
            Reject::Replayed => &self.replayed,
        }
        .fetch_add(1, Ordering::Relaxed);
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// no member with that id
    #[error("no member {0}")]
    NoMember(NodeId),
    /// the request could not be encoded or is too large
    #[error("cannot encode the request")]
    Encode,
    /// sending failed
    #[error("sending: {0}")]
    Send(std::io::Error),
    /// no answer within the time allowed
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// the answer could not be decoded
    #[error("undecodable answer")]
    Decode,
}

/// One member's endpoint.
pub struct Rpc {
    socket: UdpSocket,
    codec: Mutex<Codec>,
    /// Every member's address, by index.
    members: Vec<SocketAddr>,
    pending: Pending,
    next_id: AtomicU64,
    /// When each member was last heard, as nanoseconds since `epoch` (0 = never).
    heard: Vec<AtomicU64>,
    epoch: Instant,
    /// Datagrams by outcome.
    pub counters: Counters,
    /// Tests: drop everything sent and received, as a cut cable would.
    #[cfg(test)]
    pub(super) cut: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Rpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rpc")
            .field("members", &self.members)
            .finish_non_exhaustive()
    }
}

impl Rpc {
    #[cfg(test)]
    fn is_cut(&self) -> bool {
        self.cut.load(Ordering::Relaxed)
    }

    #[cfg(not(test))]
    fn is_cut(&self) -> bool {
        false
    }
}

/// Raft node id of member index `i`.
pub fn node_id(i: usize) -> NodeId {
    i as NodeId + 1
}

fn index(id: NodeId) -> Option<usize> {
    usize::try_from(id.checked_sub(1)?).ok()
}

/// Calls waiting for their answer, by (member index, rpc id).
type Pending = Mutex<HashMap<(usize, u64), oneshot::Sender<Vec<u8>>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Rpc {
    /// Bind `members[me]` (its own address, so that what it sends carries
    /// the source address peers check) and seal with `key`.
    pub async fn bind(members: Vec<SocketAddr>, me: usize, key: &[u8]) -> std::io::Result<Rpc> {
        let own = *members
            .get(me)
            .ok_or_else(|| std::io::Error::other("no such member"))?;
        let socket = UdpSocket::bind(own).await?;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Ok(Rpc {
            socket,
            codec: Mutex::new(Codec::new(key, members.clone(), me)),
            heard: members.iter().map(|_| AtomicU64::new(0)).collect(),
            members,
            pending: Mutex::default(),
            next_id: AtomicU64::new(seed),
            epoch: Instant::now(),
            counters: Counters::default(),
            #[cfg(test)]
            cut: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// How long ago member `i` was last heard (`None`: never).
    pub fn heard_ago(&self, i: usize) -> Option<Duration> {
        let ns = self.heard.get(i)?.load(Ordering::Relaxed);
        (ns != 0).then(|| {
            self.epoch
                .elapsed()
                .saturating_sub(Duration::from_nanos(ns))
        })
    }

    /// Call `target` with `req` and wait up to `ttl` for its answer.
    pub async fn call(
        &self,
        target: NodeId,
        req: &Request,
        ttl: Duration,
    ) -> Result<Response, CallError> {
        let i = index(target)
            .filter(|&i| i < self.members.len())
            .ok_or(CallError::NoMember(target))?;
        let body = serde_json::to_vec(req).map_err(|_| CallError::Encode)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let d = lock(&self.codec)
            .seal(Kind::Request, id, &body)
            .ok_or(CallError::Encode)?;
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert((i, id), tx);
        let _forget = Forget {
            pending: &self.pending,
            key: (i, id),
        };
        if !self.is_cut() {
            self.socket
                .send_to(&d, self.members[i])
                .await
                .map_err(CallError::Send)?;
        }
        match tokio::time::timeout(ttl, rx).await {
            Ok(Ok(answer)) => serde_json::from_slice(&answer).map_err(|_| CallError::Decode),
            _ => {
                self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                Err(CallError::Timeout(ttl))
            }
        }
    }

    /// Receive until the socket fails: answers go to their callers,
    /// requests to `raft`.
    pub async fn serve(self: Arc<Self>, raft: Raft) {
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        loop {
            let (n, from) = match self.socket.recv_from(&mut buf).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("cluster socket: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if self.is_cut() {
                continue;
            }
            let opened = lock(&self.codec)
                .open(from, &buf[..n])
                .map(|d| (d.kind, d.sender, d.rpc_id, d.body.to_vec()));
            let (kind, sender, rpc_id, body) = match opened {
                Ok(d) => d,
                Err(r) => {
                    self.counters.reject(r);
                    continue;
                }
            };
            self.heard[sender].store(
                u64::try_from(self.epoch.elapsed().as_nanos())
                    .unwrap_or(u64::MAX)
                    .max(1),
                Ordering::Relaxed,
            );
            match kind {
                Kind::Response => {
                    self.counters.accepted.fetch_add(1, Ordering::Relaxed);
                    if let Some(tx) = lock(&self.pending).remove(&(sender, rpc_id)) {
                        let _ = tx.send(body);
                    }
                }
                Kind::Request => {
                    let Ok(req) = serde_json::from_slice::<Request>(&body) else {
                        self.counters.bad_body.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    self.counters.accepted.fetch_add(1, Ordering::Relaxed);
                    let (me, raft) = (self.clone(), raft.clone());
                    tokio::spawn(async move {
                        if let Some(answer) = raft::serve(&raft, req).await {
                            me.answer(sender, rpc_id, &answer).await;
                        }
                    });
                }
            }
        }
    }

    /// Send a [`Request::Hello`] to every other member.
    pub async fn hello(&self, me: usize) {
        let Ok(body) = serde_json::to_vec(&Request::Hello) else {
            return;
        };
        for (i, addr) in self.members.iter().enumerate() {
            if i == me {
                continue;
            }
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let Some(d) = lock(&self.codec).seal(Kind::Request, id, &body) else {
                return;
            };
            if self.is_cut() {
                continue;
            }
            if let Err(e) = self.socket.send_to(&d, addr).await {
                tracing::trace!(peer = %addr, "hello: {e}");
            }
        }
    }

    async fn answer(&self, to: usize, rpc_id: u64, answer: &Response) {
        let Ok(body) = serde_json::to_vec(answer) else {
            return;
        };
        let Some(d) = lock(&self.codec).seal(Kind::Response, rpc_id, &body) else {
            return;
        };
        if self.is_cut() {
            return;
        }
        if let Err(e) = self.socket.send_to(&d, self.members[to]).await {
            tracing::debug!(peer = %self.members[to], "answering: {e}");
        }
    }
}

/// Drops a call's pending entry whatever way the call ends.
struct Forget<'a> {
    pending: &'a Pending,
    key: (usize, u64),
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(self.pending).remove(&self.key);
    }
}
