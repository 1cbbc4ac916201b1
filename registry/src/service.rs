//! The registry service: a Raft node over a [`Transport`], and the rules for
//! turning what Raft says into answers a client can act on.
//!
//! Every node runs one. On a voter it takes part in elections and
//! replication; on any other node it stays an idle, uninitialised Raft node
//! and only forwards. A claim goes to the leader (the node itself, or a peer
//! over the transport); a node that is not the leader answers with the
//! leader it knows of and the caller goes there. What the caller finally
//! reports:
//!
//! - [`ClaimAnswer::Claimed`] / [`ClaimAnswer::Taken`]: the claim was
//!   committed by a majority and applied; this is final.
//! - [`ClaimAnswer::Unknown`]: the claim may have reached a leader's log
//!   (a timeout after sending, a leader that died, a partition), so it may
//!   still be applied. Claiming again with the same owner settles it: a
//!   claim by the holder is granted again.
//! - [`ClaimAnswer::Unavailable`]: no attempt reached a leader (no voters
//!   reachable, an election that did not end in time): nothing was written.
//!
//! Within its deadline a claim retries on its own, which is safe because a
//! claim is idempotent for its owner: a retry of a claim that was in fact
//! applied is granted again, and one that lost to another owner answers
//! `Taken` (the lost one, if it lands later, applies as `Taken` too).
//!
//! Reads are linearizable: the leader confirms with a quorum that it is
//! still the leader (`ensure_linearizable`) and waits until it has applied
//! everything committed before it answers.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use openraft::error::{
    ClientWriteError, InitializeError, InstallSnapshotError, NetworkError, RPCError, RaftError,
    RemoteError,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};

use crate::store::{self, LogStore, SmData};
use crate::{Command, Member, Outcome, Raft, RaftId, TypeConfig, raft_id};

/// A snapshot of the name set is taken after this many log entries; the
/// log it covers is then purged but for the last [`LOGS_KEPT`] entries
/// (for followers that are only a little behind; one further behind is
/// sent the snapshot).
pub const SNAPSHOT_EVERY: u64 = 10_000;
pub const LOGS_KEPT: u64 = 1_000;
/// Most bytes of a snapshot in one message.
const SNAPSHOT_CHUNK: u64 = 256 << 10;
/// Most entries in one append message.
const MAX_PAYLOAD_ENTRIES: u64 = 512;
/// Most peers asked for the voters by a node that knows none.
const ASK_PEERS_FOR_VOTERS: usize = 8;
/// Most attempts of one claim or read (each one bounded in time too).
const MAX_ATTEMPTS: usize = 32;

/// Carries the registry's messages between nodes. The node implements it
/// on its own libp2p request-response protocol.
pub trait Transport: Send + Sync + Debug + 'static {
    /// Sends `body` to `peer` and returns its answer, or why there is none,
    /// within `timeout`.
    fn call(
        &self,
        peer: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, String>>;

    /// Peers this node is connected to (asked for the voters by a node that
    /// knows none).
    fn peers(&self) -> Vec<String>;
}

/// Timings. The defaults fit regions 50 to 150 ms apart: a heartbeat every
/// 250 ms, elections after 1 to 1.5 s of silence once the leader's lease
/// (openraft: the longest election timeout) has run out, so a dead leader
/// is replaced in about 2.5 to 3 s.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    pub heartbeat_interval: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// How long a claim or a read may take in all, retries included.
    pub client_timeout: Duration,
    /// How long one attempt may take.
    pub attempt_timeout: Duration,
    /// Log entries between snapshots ([`SNAPSHOT_EVERY`]).
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot ([`LOGS_KEPT`]).
    pub logs_kept: u64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            heartbeat_interval: Duration::from_millis(250),
            election_timeout_min: Duration::from_millis(1000),
            election_timeout_max: Duration::from_millis(1500),
            client_timeout: Duration::from_secs(8),
            attempt_timeout: Duration::from_secs(3),
            snapshot_every: SNAPSHOT_EVERY,
            logs_kept: LOGS_KEPT,
        }
    }
}

/// The final answer to a claim (or a release).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimAnswer {
    /// Committed and applied: `owner` holds the name.
    Claimed { owner: String },
    /// Committed and applied: another owner holds the name.
    Taken { owner: String },
    /// A release, committed and applied ([`Outcome::Released`] or
    /// [`Outcome::NotHeld`]).
    Released(Outcome),
    /// The claim may or may not be applied: ask again with the same owner.
    Unknown { why: String },
    /// Nothing was written: no leader could be reached in time.
    Unavailable { why: String, retry_after_ms: u64 },
}

/// The answer to a linearizable read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadAnswer {
    /// Who holds the name (None: free), as of log index `index`.
    Owner { owner: Option<String>, index: u64 },
    /// No leader could confirm its leadership in time.
    Unavailable { why: String, retry_after_ms: u64 },
}

/// What `hearsay registry status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct RegistryStatus {
    pub peer_id: String,
    pub raft_id: RaftId,
    /// The voters this node knows of (peer ids).
    pub voters: Vec<String>,
    pub is_voter: bool,
    /// Leader, Follower, Candidate, Learner or Shutdown.
    pub state: String,
    pub leader: Option<String>,
    pub term: u64,
    /// Highest log index applied here (every applied entry was committed).
    pub applied_index: Option<u64>,
    pub last_log_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    /// On the leader: since a quorum last acknowledged it; on a follower:
    /// since the leader's last message.
    pub last_contact_ms: Option<u64>,
    /// Names held, as applied here.
    pub names: usize,
    pub counters: Counters,
}

/// What this node's registry has done since it started.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counters {
    pub claimed: u64,
    pub taken: u64,
    pub unknown: u64,
    pub unavailable: u64,
    pub reads: u64,
    pub forwarded: u64,
    pub bad_messages: u64,
}

#[derive(Debug, Default)]
struct AtomicCounters {
    claimed: AtomicU64,
    taken: AtomicU64,
    unknown: AtomicU64,
    unavailable: AtomicU64,
    reads: AtomicU64,
    forwarded: AtomicU64,
    bad_messages: AtomicU64,
}

impl AtomicCounters {
    fn snapshot(&self) -> Counters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counters {
            claimed: get(&self.claimed),
            taken: get(&self.taken),
            unknown: get(&self.unknown),
            unavailable: get(&self.unavailable),
            reads: get(&self.reads),
            forwarded: get(&self.forwarded),
            bad_messages: get(&self.bad_messages),
        }
    }
}

/// Why the registry could not start or be set up.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry database: {0}")]
    Store(#[from] sled::Error),
    #[error("registry storage: {0}")]
    Storage(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error("voters: {0}")]
    Voters(String),
}

/// Why a client's request found no leader to settle it.
#[derive(Debug)]
struct Failed {
    why: String,
    /// An attempt may have reached a leader's log.
    maybe_written: bool,
}

/// Messages between registry nodes.
#[derive(Debug, Serialize, Deserialize)]
enum Rpc {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<RaftId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A client's write, forwarded to the leader.
    Write(Command),
    /// A client's linearizable read, forwarded to the leader.
    Read {
        name: String,
    },
    /// Set up the group with these voters.
    Init {
        voters: Vec<String>,
    },
    /// Which voters do you know of?
    Voters,
}

#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    AppendEntries(Result<AppendEntriesResponse<RaftId>, RaftError<RaftId>>),
    Vote(Result<VoteResponse<RaftId>, RaftError<RaftId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<RaftId>, RaftError<RaftId, InstallSnapshotError>>,
    ),
    /// Committed and applied.
    Decided(Outcome),
    Read {
        owner: Option<String>,
        index: u64,
    },
    /// Not the leader; nothing was proposed here.
    Redirect {
        leader: Option<String>,
    },
    /// Proposed, outcome not known.
    Unknown {
        why: String,
    },
    /// Nothing was proposed.
    Unavailable {
        why: String,
    },
    Voters(Vec<String>),
    Done,
    Error(String),
}

/// The registry of one node. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    raft: Raft,
    me: String,
    my_id: RaftId,
    logs: LogStore,
    data: Arc<RwLock<SmData>>,
    transport: Arc<dyn Transport>,
    config: RegistryConfig,
    /// The voters this node knows of (configured, told, or learned).
    voters: RwLock<Vec<String>>,
    /// When the leader last reached this follower.
    last_contact: Mutex<Option<Instant>>,
    counters: AtomicCounters,
}

impl Registry {
    /// Opens the registry database in `dir` and starts the Raft node. With
    /// `voters` (peer ids), remembers them and, if this node is one of
    /// them, sets up the group (every voter may do so: the same voters give
    /// the same first entry).
    pub async fn open(
        dir: &Path,
        me: String,
        voters: Vec<String>,
        transport: Arc<dyn Transport>,
        config: RegistryConfig,
    ) -> Result<Self, RegistryError> {
        std::fs::create_dir_all(dir).map_err(|e| RegistryError::Store(e.into()))?;
        let (logs, machine) = store::open(dir)?;
        if !voters.is_empty() {
            check_voters(&voters)?;
            logs.set_voters(&voters)
                .map_err(|e| RegistryError::Storage(e.to_string()))?;
        }
        let known_voters = logs.voters();
        let raft_config = openraft::Config {
            cluster_name: "hearsay-registry".into(),
            heartbeat_interval: config.heartbeat_interval.as_millis() as u64,
            election_timeout_min: config.election_timeout_min.as_millis() as u64,
            election_timeout_max: config.election_timeout_max.as_millis() as u64,
            max_payload_entries: MAX_PAYLOAD_ENTRIES,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            snapshot_max_chunk_size: SNAPSHOT_CHUNK,
            max_in_snapshot_log_to_keep: config.logs_kept,
            ..Default::default()
        }
        .validate()
        .map_err(|e| RegistryError::Raft(e.to_string()))?;
        let my_id = raft_id(&me);
        let data = machine.data();
        let network = Network {
            transport: transport.clone(),
        };
        let raft = Raft::new(my_id, Arc::new(raft_config), network, logs.clone(), machine)
            .await
            .map_err(|e| RegistryError::Raft(e.to_string()))?;
        let registry = Registry {
            inner: Arc::new(Inner {
                raft,
                me,
                my_id,
                logs,
                data,
                transport,
                config,
                voters: RwLock::new(known_voters.clone()),
                last_contact: Mutex::new(None),
                counters: AtomicCounters::default(),
            }),
        };
        if !voters.is_empty() && voters.contains(&registry.inner.me) {
            registry.initialize_here(&voters).await?;
        }
        Ok(registry)
    }

    /// Stops the Raft node.
    pub async fn shutdown(&self) {
        let _ = self.inner.raft.shutdown().await;
    }

    /// Sets up the group with `voters`: remembers them, and asks every voter
    /// (this node included, if it is one) to initialise. Succeeds when one
    /// voter did, or already holds these voters.
    pub async fn init(&self, voters: Vec<String>) -> Result<(), RegistryError> {
        check_voters(&voters)?;
        self.check_same_voters(&voters)?;
        self.remember_voters(&voters)?;
        let mut errors = Vec::new();
        let mut done = 0;
        for voter in &voters {
            let result = if *voter == self.inner.me {
                self.initialize_here(&voters).await
            } else {
                match self
                    .call(
                        voter,
                        &Rpc::Init {
                            voters: voters.clone(),
                        },
                        self.inner.config.attempt_timeout,
                    )
                    .await
                {
                    Ok(Reply::Done) => Ok(()),
                    Ok(Reply::Error(e)) => Err(RegistryError::Voters(e)),
                    Ok(other) => Err(RegistryError::Voters(format!(
                        "unexpected answer {other:?}"
                    ))),
                    Err(e) => Err(RegistryError::Voters(format!("{voter}: {e}"))),
                }
            };
            match result {
                Ok(()) => done += 1,
                Err(e) => errors.push(e.to_string()),
            }
        }
        if done == 0 {
            return Err(RegistryError::Voters(errors.join("; ")));
        }
        Ok(())
    }

    /// Refuses voters other than the ones this node already knows.
    fn check_same_voters(&self, voters: &[String]) -> Result<(), RegistryError> {
        let known = self.voters();
        let same = |a: &[String], b: &[String]| {
            a.iter().collect::<BTreeSet<_>>() == b.iter().collect::<BTreeSet<_>>()
        };
        if known.is_empty() || same(&known, voters) {
            Ok(())
        } else {
            Err(RegistryError::Voters(format!(
                "the registry is already set up with voters {known:?}"
            )))
        }
    }

    fn remember_voters(&self, voters: &[String]) -> Result<(), RegistryError> {
        self.inner
            .logs
            .set_voters(voters)
            .map_err(|e| RegistryError::Storage(e.to_string()))?;
        *self.inner.voters.write().unwrap_or_else(|p| p.into_inner()) = voters.to_vec();
        Ok(())
    }

    async fn initialize_here(&self, voters: &[String]) -> Result<(), RegistryError> {
        let members: BTreeMap<RaftId, Member> = voters
            .iter()
            .map(|peer| (raft_id(peer), Member { peer: peer.clone() }))
            .collect();
        match self.inner.raft.initialize(members.clone()).await {
            Ok(()) => {
                tracing::info!(voters = ?voters, "registry group set up");
                Ok(())
            }
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                // Already set up: fine if with these voters.
                let current = self.members();
                let wanted: BTreeSet<&String> = voters.iter().collect();
                let have: BTreeSet<&String> = current.iter().collect();
                if have.is_empty() || have == wanted {
                    Ok(())
                } else {
                    Err(RegistryError::Voters(format!(
                        "this node's group already has other voters: {current:?}"
                    )))
                }
            }
            Err(e) => Err(RegistryError::Raft(e.to_string())),
        }
    }

    /// The group's voters as Raft knows them (empty on a node outside it).
    fn members(&self) -> Vec<String> {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        membership
            .voter_ids()
            .filter_map(|id| membership.get_node(&id).map(|m| m.peer.clone()))
            .collect()
    }

    /// The voters: Raft's membership if this node is in the group, else
    /// those configured, told or learned.
    pub fn voters(&self) -> Vec<String> {
        let members = self.members();
        if !members.is_empty() {
            return members;
        }
        self.inner
            .voters
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Asks connected peers for the voters, if this node knows none.
    pub async fn discover_voters(&self) -> Vec<String> {
        self.learn_voters().await
    }

    async fn learn_voters(&self) -> Vec<String> {
        let known = self.voters();
        if !known.is_empty() {
            return known;
        }
        let peers = self.inner.transport.peers();
        for peer in peers.iter().take(ASK_PEERS_FOR_VOTERS) {
            if let Ok(Reply::Voters(voters)) = self
                .call(peer, &Rpc::Voters, Duration::from_millis(1000))
                .await
                && !voters.is_empty()
                && check_voters(&voters).is_ok()
            {
                if let Err(e) = self.remember_voters(&voters) {
                    tracing::warn!(error = %e, "could not store the voters learned");
                }
                return voters;
            }
        }
        Vec::new()
    }

    fn leader(&self) -> Option<String> {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let leader = metrics.current_leader?;
        if leader == self.inner.my_id {
            return Some(self.inner.me.clone());
        }
        metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|m| m.peer.clone())
    }

    /// Claims `name` for `owner`. See the module docs for what each answer
    /// means.
    pub async fn claim(&self, name: &str, owner: &str) -> ClaimAnswer {
        let answer = self
            .write(Command::Claim {
                name: name.into(),
                owner: owner.into(),
            })
            .await;
        let counters = &self.inner.counters;
        match &answer {
            ClaimAnswer::Claimed { .. } => counters.claimed.fetch_add(1, Ordering::Relaxed),
            ClaimAnswer::Taken { .. } => counters.taken.fetch_add(1, Ordering::Relaxed),
            ClaimAnswer::Unknown { .. } => counters.unknown.fetch_add(1, Ordering::Relaxed),
            ClaimAnswer::Unavailable { .. } => counters.unavailable.fetch_add(1, Ordering::Relaxed),
            ClaimAnswer::Released(_) => 0,
        };
        answer
    }

    /// Frees `name` if `owner` holds it.
    pub async fn release(&self, name: &str, owner: &str) -> ClaimAnswer {
        self.write(Command::Release {
            name: name.into(),
            owner: owner.into(),
        })
        .await
    }

    fn retry_after_ms(&self) -> u64 {
        self.inner.config.election_timeout_max.as_millis() as u64
    }

    /// Proposes `command` at the leader, retrying within the deadline.
    async fn write(&self, command: Command) -> ClaimAnswer {
        match self.at_leader(&Rpc::Write(command)).await {
            Ok(Reply::Decided(Outcome::Claimed { owner })) => ClaimAnswer::Claimed { owner },
            Ok(Reply::Decided(Outcome::Taken { owner })) => ClaimAnswer::Taken { owner },
            Ok(Reply::Decided(other)) => ClaimAnswer::Released(other),
            Ok(other) => ClaimAnswer::Unknown {
                why: format!("unexpected answer {other:?}"),
            },
            Err(Failed {
                why,
                maybe_written: true,
            }) => ClaimAnswer::Unknown { why },
            Err(Failed { why, .. }) => ClaimAnswer::Unavailable {
                why,
                retry_after_ms: self.retry_after_ms(),
            },
        }
    }

    /// Sends `rpc` (a client's write or read) to the leader: this node, or
    /// the peer it is believed to be, following redirects and retrying with
    /// a backoff until an answer that settles it or the deadline.
    async fn at_leader(&self, rpc: &Rpc) -> Result<Reply, Failed> {
        let deadline = Instant::now() + self.inner.config.client_timeout;
        let voters = self.learn_voters().await;
        if voters.is_empty() {
            return Err(Failed {
                why: "this mesh has no registry voters".into(),
                maybe_written: false,
            });
        }
        let mut failed = Failed {
            why: "no leader answered".into(),
            maybe_written: false,
        };
        let mut target: Option<String> = None;
        for attempt in 0..MAX_ATTEMPTS {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let peer = target
                .take()
                .or_else(|| self.leader())
                .unwrap_or_else(|| voters[attempt % voters.len()].clone());
            let budget = (deadline - now).min(self.inner.config.attempt_timeout);
            match self.attempt(&peer, rpc, budget).await {
                reply @ (Reply::Decided(_) | Reply::Read { .. }) => return Ok(reply),
                Reply::Redirect {
                    leader: Some(leader),
                } if leader != peer => {
                    target = Some(leader);
                    continue;
                }
                Reply::Redirect { .. } => failed.why = format!("{peer}: no leader (an election?)"),
                Reply::Unknown { why } => {
                    failed.maybe_written = true;
                    failed.why = why;
                }
                Reply::Unavailable { why } => failed.why = why,
                other => failed.why = format!("{peer}: unexpected answer {other:?}"),
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
        Err(failed)
    }

    /// One try of a client's `rpc` at `peer`.
    async fn attempt(&self, peer: &str, rpc: &Rpc, budget: Duration) -> Reply {
        if peer == self.inner.me {
            return match rpc {
                Rpc::Write(command) => self.serve_write(command.clone(), budget).await,
                Rpc::Read { name } => self.serve_read(name, budget).await,
                other => Reply::Error(format!("not a client request: {other:?}")),
            };
        }
        let is_write = matches!(rpc, Rpc::Write(_));
        if is_write {
            self.inner
                .counters
                .forwarded
                .fetch_add(1, Ordering::Relaxed);
        }
        match self.call(peer, rpc, budget).await {
            Ok(reply) => reply,
            // A write may have arrived and been proposed; a read changed
            // nothing.
            Err(e) if is_write => Reply::Unknown {
                why: format!("{peer}: {e}"),
            },
            Err(e) => Reply::Unavailable {
                why: format!("{peer}: {e}"),
            },
        }
    }

    /// A write proposed here, if this node leads.
    async fn serve_write(&self, command: Command, budget: Duration) -> Reply {
        match tokio::time::timeout(budget, self.inner.raft.client_write(command)).await {
            Err(_) => Reply::Unknown {
                why: "not committed in time (no quorum?)".into(),
            },
            Ok(Ok(response)) => Reply::Decided(response.data),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => {
                Reply::Redirect {
                    leader: forward.leader_node.map(|m| m.peer),
                }
            }
            Ok(Err(RaftError::APIError(e))) => Reply::Unavailable { why: e.to_string() },
            // The Raft node stopped: the entry may be in the log.
            Ok(Err(RaftError::Fatal(e))) => Reply::Unknown { why: e.to_string() },
        }
    }

    /// Who holds `name`, linearizably.
    pub async fn read(&self, name: &str) -> ReadAnswer {
        self.inner.counters.reads.fetch_add(1, Ordering::Relaxed);
        match self.at_leader(&Rpc::Read { name: name.into() }).await {
            Ok(Reply::Read { owner, index }) => ReadAnswer::Owner { owner, index },
            Ok(other) => ReadAnswer::Unavailable {
                why: format!("unexpected answer {other:?}"),
                retry_after_ms: self.retry_after_ms(),
            },
            Err(Failed { why, .. }) => ReadAnswer::Unavailable {
                why,
                retry_after_ms: self.retry_after_ms(),
            },
        }
    }

    async fn serve_read(&self, name: &str, budget: Duration) -> Reply {
        match tokio::time::timeout(budget, self.inner.raft.ensure_linearizable()).await {
            Err(_) => Reply::Unavailable {
                why: "leadership not confirmed in time (no quorum?)".into(),
            },
            Ok(Ok(read_log_id)) => {
                let data = self.inner.data.read().unwrap_or_else(|p| p.into_inner());
                Reply::Read {
                    owner: data.names.owner(name).map(str::to_owned),
                    index: data
                        .last_applied
                        .map(|l| l.index)
                        .max(read_log_id.map(|l| l.index))
                        .unwrap_or(0),
                }
            }
            Ok(Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(
                forward,
            )))) => Reply::Redirect {
                leader: forward.leader_node.map(|m| m.peer),
            },
            Ok(Err(e)) => Reply::Unavailable { why: e.to_string() },
        }
    }

    /// Answers a message from `peer` (the node's transport calls this for
    /// every registry request it receives). Never panics on bad input.
    pub async fn handle(&self, peer: &str, body: &[u8]) -> Vec<u8> {
        let reply = match serde_json::from_slice::<Rpc>(body) {
            Err(e) => {
                self.inner
                    .counters
                    .bad_messages
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, error = %e, "bad registry message");
                Reply::Error(format!("bad message: {e}"))
            }
            Ok(rpc) => self.serve(peer, rpc).await,
        };
        serde_json::to_vec(&reply).unwrap_or_default()
    }

    async fn serve(&self, peer: &str, rpc: Rpc) -> Reply {
        let raft = &self.inner.raft;
        let budget = self.inner.config.attempt_timeout;
        match rpc {
            Rpc::AppendEntries(request) => {
                if let Some(refused) = self.refuse_raft_sender(peer, request.vote.leader_id.node_id)
                {
                    return refused;
                }
                *self
                    .inner
                    .last_contact
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                Reply::AppendEntries(raft.append_entries(request).await)
            }
            Rpc::Vote(request) => {
                if let Some(refused) = self.refuse_raft_sender(peer, request.vote.leader_id.node_id)
                {
                    return refused;
                }
                Reply::Vote(raft.vote(request).await)
            }
            Rpc::InstallSnapshot(request) => {
                if let Some(refused) = self.refuse_raft_sender(peer, request.vote.leader_id.node_id)
                {
                    return refused;
                }
                *self
                    .inner
                    .last_contact
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                Reply::InstallSnapshot(raft.install_snapshot(request).await)
            }
            Rpc::Write(command) => {
                if let Err(e) = match &command {
                    Command::Claim { name, owner } | Command::Release { name, owner } => {
                        crate::validate(name, owner)
                    }
                } {
                    self.inner
                        .counters
                        .bad_messages
                        .fetch_add(1, Ordering::Relaxed);
                    return Reply::Error(e.to_string());
                }
                self.serve_write(command, budget).await
            }
            Rpc::Read { name } => {
                if let Err(e) = crate::validate_name(&name) {
                    self.inner
                        .counters
                        .bad_messages
                        .fetch_add(1, Ordering::Relaxed);
                    return Reply::Error(e.to_string());
                }
                self.serve_read(&name, budget).await
            }
            Rpc::Init { voters } => {
                if let Err(e) = check_voters(&voters) {
                    return Reply::Error(e.to_string());
                }
                // A group is set up once: a peer cannot move this node's
                // claims to other voters afterwards.
                if let Err(e) = self.check_same_voters(&voters) {
                    return Reply::Error(e.to_string());
                }
                tracing::info!(%peer, ?voters, "asked to set up the registry group");
                let result = match self.remember_voters(&voters) {
                    Ok(()) if voters.contains(&self.inner.me) => {
                        self.initialize_here(&voters).await
                    }
                    other => other,
                };
                match result {
                    Ok(()) => Reply::Done,
                    Err(e) => Reply::Error(e.to_string()),
                }
            }
            Rpc::Voters => Reply::Voters(self.voters()),
        }
    }

    /// Raft messages are taken only from the group's voters, each speaking
    /// as itself (the transport authenticates `peer`): a process outside
    /// the group cannot call elections or push entries.
    fn refuse_raft_sender(&self, peer: &str, claimed: RaftId) -> Option<Reply> {
        let why = if raft_id(peer) != claimed {
            format!("{peer} sent a Raft message as node {claimed}")
        } else if !self.voters().iter().any(|v| v == peer) {
            format!("{peer} is not a voter of this registry")
        } else {
            return None;
        };
        self.inner
            .counters
            .bad_messages
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%peer, %why, "Raft message refused");
        Some(Reply::Error(why))
    }

    async fn call(&self, peer: &str, rpc: &Rpc, timeout: Duration) -> Result<Reply, String> {
        let body = serde_json::to_vec(rpc).map_err(|e| e.to_string())?;
        let answer = self.inner.transport.call(peer, body, timeout).await?;
        serde_json::from_slice(&answer).map_err(|e| format!("bad answer: {e}"))
    }

    /// Where the registry stands, for `hearsay registry status`.
    pub fn status(&self) -> RegistryStatus {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let voters = self.voters();
        let is_leader = metrics.state == ServerState::Leader;
        let last_contact_ms = if is_leader {
            metrics.millis_since_quorum_ack
        } else {
            self.inner
                .last_contact
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .map(|t| t.elapsed().as_millis() as u64)
        };
        let names = self
            .inner
            .data
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .names
            .len();
        RegistryStatus {
            peer_id: self.inner.me.clone(),
            raft_id: self.inner.my_id,
            is_voter: voters.contains(&self.inner.me),
            voters,
            state: format!("{:?}", metrics.state),
            leader: self.leader(),
            term: metrics.current_term,
            applied_index: metrics.last_applied.map(|l| l.index),
            last_log_index: metrics.last_log_index,
            snapshot_index: metrics.snapshot.map(|l| l.index),
            last_contact_ms,
            names,
            counters: self.inner.counters.snapshot(),
        }
    }
}

impl Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("me", &self.me)
            .field("raft_id", &self.my_id)
            .finish_non_exhaustive()
    }
}

fn backoff(attempt: usize) -> Duration {
    Duration::from_millis(50u64 << attempt.min(3))
}

/// A group is 1, 3 or 5 distinct voters (1 for trying it out alone: no
/// fault tolerance), whose Raft ids do not collide.
fn check_voters(voters: &[String]) -> Result<(), RegistryError> {
    if !matches!(voters.len(), 1 | 3 | 5) {
        return Err(RegistryError::Voters(format!(
            "a registry has 3 or 5 voters (or 1, without fault tolerance), not {}",
            voters.len()
        )));
    }
    let ids: BTreeSet<RaftId> = voters.iter().map(|v| raft_id(v)).collect();
    let peers: BTreeSet<&String> = voters.iter().collect();
    if peers.len() != voters.len() {
        return Err(RegistryError::Voters("a voter is named twice".into()));
    }
    if ids.len() != voters.len() {
        return Err(RegistryError::Voters("two voters' Raft ids collide".into()));
    }
    if let Some(bad) = voters.iter().find(|v| v.is_empty() || v.len() > 128) {
        return Err(RegistryError::Voters(format!("not a peer id: {bad:?}")));
    }
    Ok(())
}

/// openraft's view of the transport.
#[derive(Debug, Clone)]
struct Network {
    transport: Arc<dyn Transport>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: RaftId, node: &Member) -> Connection {
        Connection {
            transport: self.transport.clone(),
            target,
            peer: node.peer.clone(),
        }
    }
}

#[derive(Debug)]
struct Connection {
    transport: Arc<dyn Transport>,
    target: RaftId,
    peer: String,
}

impl Connection {
    async fn call<E: std::error::Error>(
        &self,
        rpc: &Rpc,
        timeout: Duration,
    ) -> Result<Reply, RPCError<RaftId, Member, E>> {
        let body = serde_json::to_vec(rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let answer = self
            .transport
            .call(&self.peer, body, timeout)
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&std::io::Error::other(e))))?;
        serde_json::from_slice(&answer).map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }

    fn unexpected<E: std::error::Error>(reply: Reply) -> RPCError<RaftId, Member, E> {
        RPCError::Network(NetworkError::new(&std::io::Error::other(format!(
            "unexpected answer: {reply:?}"
        ))))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<RaftId>, RPCError<RaftId, Member, RaftError<RaftId>>> {
        match self
            .call(&Rpc::AppendEntries(request), option.hard_ttl())
            .await?
        {
            Reply::AppendEntries(result) => {
                result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(Self::unexpected(other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        request: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<RaftId>,
        RPCError<RaftId, Member, RaftError<RaftId, InstallSnapshotError>>,
    > {
        match self
            .call(&Rpc::InstallSnapshot(request), option.hard_ttl())
            .await?
        {
            Reply::InstallSnapshot(result) => {
                result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(Self::unexpected(other)),
        }
    }

    async fn vote(
        &mut self,
        request: VoteRequest<RaftId>,
        option: RPCOption,
    ) -> Result<VoteResponse<RaftId>, RPCError<RaftId, Member, RaftError<RaftId>>> {
        match self.call(&Rpc::Vote(request), option.hard_ttl()).await? {
            Reply::Vote(result) => {
                result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(Self::unexpected(other)),
        }
    }
}
