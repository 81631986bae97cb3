//! The Raft glue for xlb's election ([`openraft`]): the type configuration,
//! an in-memory log, a state machine that holds only the membership, and the
//! network that carries openraft's RPCs over [`super::rpc`].
//!
//! Nothing of value is replicated: the log only ever holds the initial
//! membership and the blank entry each new leader appends. What xlb takes
//! from Raft is the leader and its lease: a leader whose heartbeats a
//! majority acknowledged at time `t` knows no other leader can be elected
//! before `t + leader_lease`, because followers refuse to vote for that long
//! after a heartbeat (openraft's `docs::leader_lease`). [`super::Election`]
//! holds the VIPs only inside that lease.
//!
//! The vote is kept in memory only. A restarted node could otherwise vote
//! twice in one term; it instead stays silent for a lease after start
//! ([`super::QUIET_START`]), after which every lease granted by its old vote
//! has run out, so its new vote can never make two leaders hold at once.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::sync::Arc;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    EmptyNode, Entry, EntryPayload, LogId, LogState, RaftLogId, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::rpc::Rpc;

/// A member's id in Raft: its index in `--cluster`, plus one (openraft
/// reserves nothing, but 0 reads as "no node" in logs).
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// xlb's Raft types: u64 node ids, no node data (addresses come from
    /// `--cluster`), no application data.
    pub Types: Node = EmptyNode,
);

/// The Raft handle.
pub type Raft = openraft::Raft<Types>;

/// A Raft RPC as it crosses the wire.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// Replication and heartbeats.
    Append(AppendEntriesRequest<Types>),
    /// A candidate asking for a vote.
    Vote(VoteRequest<NodeId>),
    /// A snapshot chunk (never needed while logs are never purged, carried
    /// for completeness).
    Snapshot(InstallSnapshotRequest<Types>),
    /// "I am here": sent to every member every [`super::HELLO_EVERY`], so
    /// that each member knows which others it can reach (Raft's own traffic
    /// runs between the leader and each follower only). Not answered.
    Hello,
}

/// The answer to a [`Request`].
#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    /// To [`Request::Append`].
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    /// To [`Request::Vote`].
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    /// To [`Request::Snapshot`].
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
}

/// Hand an incoming request to the local Raft node (`None`: nothing to
/// answer).
pub async fn serve(raft: &Raft, req: Request) -> Option<Response> {
    Some(match req {
        Request::Append(r) => Response::Append(raft.append_entries(r).await),
        Request::Vote(r) => Response::Vote(raft.vote(r).await),
        Request::Snapshot(r) => Response::Snapshot(raft.install_snapshot(r).await),
        Request::Hello => return None,
    })
}

/// The log, in memory.
#[derive(Debug, Default, Clone)]
pub struct LogStore {
    inner: Arc<Mutex<LogInner>>,
}

#[derive(Debug, Default)]
struct LogInner {
    purged: Option<LogId<NodeId>>,
    log: BTreeMap<u64, Entry<Types>>,
    committed: Option<LogId<NodeId>>,
    vote: Option<Vote<NodeId>>,
}

impl RaftLogReader<Types> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<Types>>, StorageError<NodeId>> {
        let inner = self.inner.lock().await;
        Ok(inner.log.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<Types> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<Types>, StorageError<NodeId>> {
        let inner = self.inner.lock().await;
        let last = inner
            .log
            .values()
            .next_back()
            .map(|e| *e.get_log_id())
            .or(inner.purged);
        Ok(LogState {
            last_purged_log_id: inner.purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.inner.lock().await.vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.inner.lock().await.vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        self.inner.lock().await.committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.inner.lock().await.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<Types>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<Types>> + Send,
    {
        let mut inner = self.inner.lock().await;
        for e in entries {
            inner.log.insert(e.get_log_id().index, e);
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock().await;
        inner.log.retain(|&i, _| i < log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut inner = self.inner.lock().await;
        inner.purged = Some(log_id);
        inner.log.retain(|&i, _| i > log_id.index);
        Ok(())
    }
}

/// The state machine: the membership and the last applied entry.
#[derive(Debug, Default, Clone)]
pub struct StateMachine {
    inner: Arc<Mutex<Applied>>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Applied {
    last: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, EmptyNode>,
}

impl Applied {
    // openraft's own error type; its size is openraft's choice.
    #[allow(clippy::result_large_err)]
    fn snapshot(&self) -> Result<Snapshot<Types>, StorageError<NodeId>> {
        let data = serde_json::to_vec(self)
            .map_err(|e| openraft::StorageIOError::read_state_machine(&e))?;
        let id = self.last.map_or_else(
            || "empty".to_string(),
            |l| format!("{}-{}", l.leader_id, l.index),
        );
        Ok(Snapshot {
            meta: SnapshotMeta {
                last_log_id: self.last,
                last_membership: self.membership.clone(),
                snapshot_id: id,
            },
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftSnapshotBuilder<Types> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<Types>, StorageError<NodeId>> {
        self.inner.lock().await.snapshot()
    }
}

impl RaftStateMachine<Types> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, EmptyNode>), StorageError<NodeId>>
    {
        let a = self.inner.lock().await;
        Ok((a.last, a.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<String>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<Types>> + Send,
    {
        let mut a = self.inner.lock().await;
        let mut out = Vec::new();
        for e in entries {
            a.last = Some(e.log_id);
            if let EntryPayload::Membership(m) = e.payload {
                a.membership = StoredMembership::new(Some(e.log_id), m);
            }
            out.push(String::new());
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, EmptyNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let applied: Applied = serde_json::from_slice(snapshot.get_ref())
            .map_err(|e| openraft::StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        *self.inner.lock().await = applied;
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<Types>>, StorageError<NodeId>> {
        Ok(Some(self.inner.lock().await.snapshot()?))
    }
}

/// Opens connections (over the one shared UDP endpoint) to members.
#[derive(Clone)]
pub struct Network {
    pub(super) rpc: Arc<Rpc>,
}

impl RaftNetworkFactory<Types> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, _node: &EmptyNode) -> Connection {
        Connection {
            rpc: self.rpc.clone(),
            target,
        }
    }
}

/// openraft's view of one peer.
pub struct Connection {
    rpc: Arc<Rpc>,
    target: NodeId,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, EmptyNode, RaftError<NodeId, E>>>;

impl Connection {
    async fn call(&self, req: Request, option: &RPCOption) -> Result<Response, NetworkError> {
        self.rpc
            .call(self.target, &req, option.soft_ttl())
            .await
            .map_err(|e| NetworkError::new(&e))
    }
}

fn unexpected() -> NetworkError {
    NetworkError::new(&std::io::Error::other("answer of the wrong kind"))
}

impl RaftNetwork<Types> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<Types>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        match self.call(Request::Append(rpc), &option).await? {
            Response::Append(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(RPCError::Network(unexpected())),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<Types>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        match self.call(Request::Snapshot(rpc), &option).await? {
            Response::Snapshot(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(RPCError::Network(unexpected())),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        match self.call(Request::Vote(rpc), &option).await? {
            Response::Vote(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(RPCError::Network(unexpected())),
        }
    }
}
