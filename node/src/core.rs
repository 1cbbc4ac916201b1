//! The core: the replica and the store, as a state type and a thread.
//!
//! [`CoreState`] holds everything a node decides about its data: the
//! [`Replica`], the [`Store`], the durable version vector, the replication
//! delays. It does no IO of its own beyond the store, and time comes in as
//! `now_ms` arguments, so tests and the simulation drive it synchronously
//! with an injected clock (over a [`MemoryStore`](crate::store::MemoryStore)
//! or a [`FaultyStore`](crate::store::FaultyStore)). [`run_core`] is the thin
//! thread around it that the node runs: every automerge and sled call of the
//! node happens there, off the async reactor.
//!
//! Admission: clients (the HTTP API) and peers (the network) reach the core
//! through two bounded queues, [`ClientCommand`] and [`PeerCommand`], each
//! with its own capacity. The thread serves them fairly: a batch takes up to
//! half of [`MAX_BATCH`] from each queue and fills the rest from whichever
//! has more waiting. So a flood of peer deltas never turns into client 503s
//! (a full client queue is the API's only reason to answer 503 for load),
//! and a flood of client writes never starves replication.
//!
//! Batching needs no timer: the thread takes everything that queued while it
//! was busy as one batch, so an idle core serves a write at once and a loaded
//! core makes a whole batch durable with one flush (group commit).
//!
//! Within a batch, in this order:
//! 1. local writes are applied and appended to the log ([`CoreState::write`]),
//!    NOT acknowledged yet; reads are answered at once;
//! 2. remote deltas are verified, applied and appended
//!    ([`CoreState::receive`]) and their verdicts returned at once, one per
//!    delta, so gossipsub can forward them without waiting for the flush
//!    (a relay forwards what it validated; durability is the origin's
//!    promise);
//! 3. [`CoreState::commit`]: one flush for everything staged. Only after it
//!    succeeds does the durable version vector advance, the status (whose
//!    vector is the read-your-writes token and the bound of what
//!    anti-entropy serves) get published, the writes get acknowledged, and
//!    the local deltas go to the network, in that order: a client that reads
//!    `/stats` after its 200 sees its write, and a crash never reissues a seq
//!    a peer already holds. If the flush fails, nothing is published and
//!    nothing acknowledged; the node is failed and refuses writes from then
//!    on (`/api/v0/health` says why).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hearsay_crdt::{
    Action, Delta, Equivocation, ErrorKind, Keypair, NewPost, NodeId, Post, PostId, PostSignature,
    Profile, Replica, ReplicaConfig, Signatures, UserName, Verdict, VersionVector,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics::{Metrics, Refusal, Source, SourceLabels, Stage};
use crate::signed::{ReplayGuard, Unfit, UserProof, check_clock};
use crate::store::{PageLimit, Store, StoreDocs};

/// Default capacity of the client queue (HTTP API; config key
/// `client_queue`); beyond it the API answers 503 SLOWDOWN.
pub const CLIENT_QUEUE: usize = 1024;
/// Capacity of the peer queue (network); beyond it a message is ignored and
/// left to anti-entropy.
pub const PEER_QUEUE: usize = 1024;
/// Most commands taken into one batch (one flush), over both queues.
pub const MAX_BATCH: usize = 512;
/// Replay page size at start-up.
const REPLAY_PAGE: PageLimit = PageLimit {
    max_deltas: 4096,
    max_bytes: 16 << 20,
    up_to: u64::MAX,
};
/// Replication delays kept for the p50/p99 in `/stats`.
const RECENT_DELAYS: usize = 2048;
const SNAPSHOT_VV: &str = "snapshot_vv";
/// Meta key of the equivocation proofs held (see [`encode_proofs`]).
const EQUIVOCATIONS: &str = "equivocations";
/// Equivocating origins remembered (each with its proof, at most two
/// deltas). Beyond it a new proof is still acted on by the network, but
/// not kept across restarts.
pub const MAX_EQUIVOCATIONS: usize = 256;

/// Why the core refused a command.
#[derive(Debug, thiserror::Error, Clone)]
pub enum CoreError {
    /// The thing the command names does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The command is not valid for its arguments or the current state (400).
    #[error("{0}")]
    Invalid(String),
    /// The command clashes with what exists: a name held by another key, a
    /// post id taken, a signed request already used (409).
    #[error("{0}")]
    Conflict(String),
    /// The node cannot take this command now, though nothing is wrong with
    /// it; retry later (503).
    #[error("{0}")]
    Busy(String),
    /// Something inside the node broke: storage, automerge (500).
    #[error("internal error: {0}")]
    Internal(String),
    /// A flush failed earlier (or just now): the node refuses writes (503).
    #[error("store failed, the node refuses writes: {0}")]
    Failed(String),
}

impl From<hearsay_crdt::Error> for CoreError {
    fn from(e: hearsay_crdt::Error) -> Self {
        match e.kind() {
            ErrorKind::InvalidOperation => CoreError::Invalid(e.to_string()),
            // Local operations meet no peer input: anything else (store,
            // automerge, a delta the node built itself) is the node's fault.
            _ => CoreError::Internal(e.to_string()),
        }
    }
}

impl From<crate::store::StoreError> for CoreError {
    fn from(e: crate::store::StoreError) -> Self {
        CoreError::Internal(format!("storage: {e}"))
    }
}

pub type Reply<T> = oneshot::Sender<Result<T, CoreError>>;

/// A post and the id of the one before it in the public timeline.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PostWithPrev {
    pub post: Post,
    pub prev: Option<PostId>,
}

/// Bounds and periods of a [`CoreState`].
#[derive(Clone, Copy, Debug)]
pub struct CoreConfig {
    /// Documents kept loaded in memory.
    pub cache_docs: usize,
    /// How often changed documents are saved (snapshots), so a restart
    /// replays only the log above them.
    pub checkpoint_interval_ms: u64,
    /// A checkpoint is also due once this many deltas were applied since
    /// the last one, so the log a restart replays stays short however fast
    /// writes come.
    pub checkpoint_deltas: u64,
}

/// The node's [`CoreConfig::checkpoint_deltas`]: at about 2,000 posts/s a
/// checkpoint every few seconds, and a restart replays a few thousand
/// deltas (well under a second).
pub const CHECKPOINT_DELTAS: u64 = 5_000;

/// A local write.
///
/// The unsigned writes are refused where a key must sign (see
/// [`crate::signed`]): a post under a name with a registered key, an edit or
/// delete of a signed post, a follow or unfollow by a user with a key. A
/// follow already in place, an unfollow of someone not followed, a profile
/// change already made and a claim of a held name write nothing.
#[derive(Debug, Clone)]
pub enum Write {
    /// An unsigned post (the node makes its id).
    CreatePost(NewPost),
    /// An unsigned post under an id chosen beforehand (its slug was claimed
    /// for that id).
    CreatePostAs {
        new: NewPost,
        id: PostId,
    },
    /// Replaces `delete` characters at `pos` of the body with `insert`.
    EditPost {
        id: PostId,
        pos: usize,
        delete: usize,
        insert: String,
    },
    DeletePost(PostId),
    /// `user` follows `whom`.
    Follow {
        user: UserName,
        whom: UserName,
    },
    /// `user` stops following `whom`.
    Unfollow {
        user: UserName,
        whom: UserName,
    },
    /// Sets a profile's display name and/or public key.
    SetProfile {
        user: UserName,
        display_name: Option<String>,
        public_key: Option<NodeId>,
    },
    /// A post its author signed under a client-made id. Refused when the
    /// key is not the one bound to the author's name, when the id's time is
    /// outside the clock window, when the id exists, or when the signature
    /// does not verify (see [`crate::signed`]).
    CreateSignedPost {
        new: NewPost,
        signature: PostSignature,
    },
    /// `user` follows (`follow: true`) or unfollows `whom`, signed by the
    /// key bound to `user` (the profile's `public_key`).
    SignedFollow {
        user: UserName,
        whom: UserName,
        follow: bool,
        proof: UserProof,
    },
    /// [`Write::EditPost`] signed by the post's author key.
    SignedEdit {
        id: PostId,
        pos: usize,
        delete: usize,
        insert: String,
        proof: UserProof,
    },
    /// [`Write::DeletePost`] signed by the post's author key.
    SignedDelete {
        id: PostId,
        proof: UserProof,
    },
    /// Binds `user` to `key` when the profile holds no key yet, and answers
    /// the profile as it then stands (whoever holds it): first come on this
    /// node (see [`crate::names`]).
    ClaimName {
        user: UserName,
        key: NodeId,
    },
}

/// What a write produced: the post or the profile as they are now.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(untagged)]
pub enum Written {
    Post(Post),
    Profile(Profile),
}

impl Written {
    /// The post, for a post write.
    pub fn into_post(self) -> Option<Post> {
        match self {
            Written::Post(p) => Some(p),
            Written::Profile(_) => None,
        }
    }
}

/// A durable write: what it produced and the token covering it (the durable
/// version vector of the flush that made it durable).
#[derive(Debug, Clone)]
pub struct Ack {
    pub written: Written,
    pub token: VersionVector,
}

/// What a successful [`CoreState::commit`] made durable.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    /// Local deltas now durable, in seq order: these may go to the network.
    pub publish: Vec<Delta>,
    /// Equivocation proofs now durable, encoded: these go to the network.
    pub proofs: Vec<Vec<u8>>,
    /// The new durable version vector.
    pub durable: VersionVector,
}

/// Requests from clients (the HTTP API) and the node's own timer.
#[derive(Debug)]
pub enum ClientCommand {
    /// Answered after the batch's flush.
    Write { op: Write, reply: Reply<Ack> },
    GetPost {
        id: PostId,
        reply: Reply<Option<PostWithPrev>>,
    },
    Posts {
        limit: usize,
        before: Option<PostId>,
        reply: Reply<Vec<Post>>,
    },
    /// One user's posts, newest first, strictly older than `before`.
    UserPosts {
        user: UserName,
        limit: usize,
        before: Option<PostId>,
        reply: Reply<Vec<Post>>,
    },
    /// The posts of the users `user` follows, newest first.
    Home {
        user: UserName,
        limit: usize,
        before: Option<PostId>,
        reply: Reply<Vec<Post>>,
    },
    Profile {
        user: UserName,
        reply: Reply<Profile>,
    },
    /// Several posts at once (the event stream's reads); `None` for a post
    /// this node does not hold.
    PostsById {
        ids: Vec<PostId>,
        reply: Reply<Vec<Option<Post>>>,
    },
    /// Periodic: refresh the delay percentiles, checkpoint when due.
    Tick,
}

/// Requests from peers (the network).
#[derive(Debug)]
pub enum PeerCommand {
    /// An equivocation proof a peer sent (undecoded): checked, kept
    /// durably if new, and the origin refused from then on.
    Proof { bytes: Vec<u8> },
    /// Remote deltas; the reply holds one verdict per delta, in order.
    Remote {
        deltas: Vec<Delta>,
        source: Source,
        /// Whether the network already checked the deltas' signatures.
        signatures: Signatures,
        reply: oneshot::Sender<Vec<Verdict>>,
    },
}

/// What the core tells the network.
#[derive(Debug)]
pub enum CoreEvent {
    /// Durable local deltas, encoded, to push to peers.
    Publish(Vec<Vec<u8>>),
    /// A durable equivocation proof new to this node, encoded: gossip it
    /// and refuse its origin.
    Equivocation(Vec<u8>),
}

/// The core's state as the rest of the node sees it.
#[derive(Debug, Clone, Default)]
pub struct CoreStatus {
    /// The DURABLE version vector: what the last successful flush covers.
    /// It is the read-your-writes token and the bound of what anti-entropy
    /// serves, so it never names a delta a crash could lose.
    pub version_vector: VersionVector,
    pub buffered: usize,
    pub delay_p50_ms: Option<u64>,
    pub delay_p99_ms: Option<u64>,
    /// Set when storage failed: the node refuses writes from then on.
    pub failed: Option<String>,
    /// The newest [`NEWEST_SNAPSHOT`] posts as of `version_vector`, deleted
    /// ones left out: the answer to the most common read, served without
    /// queueing behind the core's writes. `None` when it could not be read.
    pub newest: Option<Arc<Vec<Post>>>,
    /// Origins proven to equivocate, with the seq they signed twice and
    /// when this node learnt it.
    pub equivocators: Arc<Vec<Equivocator>>,
}

/// An origin proven to equivocate, as `/api/v0/nodes` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Equivocator {
    pub origin: NodeId,
    pub seq: u64,
    pub detected_ms: u64,
}

/// Posts in [`CoreStatus::newest`]: the default page of the public list.
pub const NEWEST_SNAPSHOT: usize = 64;

/// The first `limit` posts of the public list, if the snapshot `newest`
/// holds them: it does when it has at least `limit` posts, or fewer than
/// it can hold (then it is the whole list). `None`: ask the core.
pub fn first_page(newest: &[Post], limit: usize) -> Option<&[Post]> {
    (limit <= newest.len() || newest.len() < NEWEST_SNAPSHOT)
        .then(|| &newest[..limit.min(newest.len())])
}

/// Wall-clock milliseconds since the Unix epoch (the thread's clock).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The replica, its store and the bookkeeping of one node, driven
/// synchronously (see the module docs).
pub struct CoreState<S: Store> {
    replica: Replica<StoreDocs<S>>,
    store: S,
    metrics: Metrics,
    config: CoreConfig,
    delays: VecDeque<u64>,
    delay_percentiles: (Option<u64>, Option<u64>),
    failed: Option<String>,
    last_checkpoint_ms: u64,
    /// Deltas applied (local and remote) since the last checkpoint.
    since_checkpoint: u64,
    /// Local deltas applied and appended since the last commit.
    staged: Vec<Delta>,
    /// Deltas applied (local and remote) and not yet in the log: appended
    /// together at the next commit, just before its flush.
    unlogged: Vec<Delta>,
    /// Local writes since the last commit (for the group-commit histogram).
    staged_writes: usize,
    /// Whether the store was written since the last commit.
    dirty: bool,
    durable: VersionVector,
    /// Signed actions accepted within the clock window (replay refusal).
    replays: ReplayGuard,
    /// Regions and clock offsets of origins, from statuses; `None` (the
    /// simulation, tests) measures delays on the raw clocks.
    origins: Option<crate::status::Origins>,
    /// [`CoreStatus::newest`], refreshed by every commit that flushed.
    newest: Option<Arc<Vec<Post>>>,
    /// Equivocation proofs held, by origin: the origin's deltas are refused.
    equivocations: std::collections::BTreeMap<NodeId, (Equivocation, u64)>,
    /// Proofs new since the last commit: published once durable.
    new_proofs: Vec<Vec<u8>>,
}

impl<S: Store> std::fmt::Debug for CoreState<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreState")
            .field("replica", &self.replica)
            .field("durable", &self.durable.sum())
            .field("staged", &self.staged.len())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl<S: Store> CoreState<S> {
    /// Labels and corrects replication delays with what statuses say of
    /// each origin (see [`crate::status::Origins`]); deltas of an origin
    /// not in `origins` are left out of the delay figures.
    pub fn set_origins(&mut self, origins: crate::status::Origins) {
        self.origins = Some(origins);
    }

    /// Loads the document snapshot from `store` and replays the log above
    /// it. Everything the store holds counts as durable.
    pub fn open(
        store: S,
        key: Keypair,
        config: CoreConfig,
        metrics: Metrics,
        now_ms: u64,
    ) -> Result<Self, CoreError> {
        let snapshot = match store.get_meta(SNAPSHOT_VV)? {
            Some(b) => VersionVector::from_bytes(&b)
                .map_err(|e| CoreError::Internal(format!("snapshot vv: {e}")))?,
            None => VersionVector::new(),
        };
        let replica_config = ReplicaConfig {
            cache_docs: config.cache_docs,
            ..ReplicaConfig::default()
        };
        let mut replica = Replica::open(
            key,
            StoreDocs(store.clone()),
            snapshot.clone(),
            replica_config,
        )?;
        let log = store.log_version_vector()?;
        let mut replayed = 0;
        for (origin, _) in log.missing_from(&snapshot) {
            loop {
                let after = replica.version_vector().get(&origin);
                let page = store.deltas_after(&origin, after, REPLAY_PAGE)?;
                if page.is_empty() {
                    break;
                }
                let deltas = page
                    .iter()
                    .map(|b| Delta::decode(b))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| CoreError::Internal(format!("log entry of {origin}: {e}")))?;
                replayed += deltas.len();
                let outcome = replica.replay(deltas);
                if let Some(e) = outcome.rejected.first() {
                    tracing::warn!(%origin, error = %e, "replaying the log");
                }
                for (o, seq, e) in &outcome.inert {
                    tracing::debug!(origin = %o, seq, error = %e, "replayed an inert delta");
                }
                if outcome.accepted.is_empty() {
                    break;
                }
            }
        }
        tracing::info!(
            replayed,
            revision = replica.version_vector().sum(),
            "store opened"
        );
        let durable = replica.version_vector().clone();
        metrics.revision.set(durable.sum() as i64);
        let equivocations = match store.get_meta(EQUIVOCATIONS)? {
            Some(b) => decode_proofs(&b)
                .map_err(|e| CoreError::Internal(format!("stored equivocation proofs: {e}")))?,
            None => Default::default(),
        };
        metrics.equivocators.set(equivocations.len() as i64);
        let newest = replica
            .newest_posts(NEWEST_SNAPSHOT, None)
            .ok()
            .map(Arc::new);
        Ok(CoreState {
            newest,
            replica,
            store,
            metrics,
            config,
            delays: VecDeque::with_capacity(RECENT_DELAYS),
            delay_percentiles: (None, None),
            origins: None,
            failed: None,
            last_checkpoint_ms: now_ms,
            since_checkpoint: 0,
            staged: Vec::new(),
            unlogged: Vec::new(),
            staged_writes: 0,
            dirty: false,
            durable,
            replays: ReplayGuard::default(),
            equivocations,
            new_proofs: Vec::new(),
        })
    }

    pub fn id(&self) -> NodeId {
        self.replica.id()
    }

    /// Applies a local write and appends its deltas to the log. Not durable:
    /// the caller holds the acknowledgement until [`CoreState::commit`].
    /// Refuses an unsigned post under a name that has a registered key.
    fn check_unsigned(&mut self, author: &UserName) -> Result<(), CoreError> {
        match self.bound_key(author)? {
            Some(key) => Err(self.refused(
                Refusal::Unsigned,
                CoreError::Invalid(format!(
                    "user {author} has a registered key ({key}): posts under that name must be signed (fields id, author_key, signature), or posted without an author"
                )),
            )),
            None => Ok(()),
        }
    }

    pub fn write(&mut self, op: Write, now_ms: u64) -> Result<Written, CoreError> {
        if let Some(f) = &self.failed {
            return Err(CoreError::Failed(f.clone()));
        }
        // A signed action used by this write: remembered once it succeeded.
        let mut used: Option<UserProof> = None;
        let (written, deltas) = match op {
            Write::CreatePostAs { new, id } => {
                self.check_unsigned(&new.author)?;
                let (post, delta) = self.replica.create_post_with_id(&new, id, now_ms)?;
                (Written::Post(post), vec![delta])
            }
            Write::CreatePost(new) => {
                self.check_unsigned(&new.author)?;
                let (post, delta) = self.replica.create_post(&new, None, now_ms)?;
                (Written::Post(post), vec![delta])
            }
            Write::CreateSignedPost { new, signature } => {
                let id = signature.id;
                match self.bound_key(&new.author)? {
                    Some(key) if key == signature.author_key => {}
                    Some(key) => {
                        let e = format!(
                            "field `author_key` {} is not the key registered for user {} ({key})",
                            signature.author_key, new.author
                        );
                        return Err(self.refused(Refusal::WrongKey, CoreError::Invalid(e)));
                    }
                    None => {
                        let e = format!(
                            "user {} has no registered key to check the signature against: register the name with this key first (POST /api/v0/users)",
                            new.author
                        );
                        return Err(self.refused(Refusal::Unregistered, CoreError::Invalid(e)));
                    }
                }
                check_clock("the post id's time", id.created_at_ms(), now_ms)
                    .map_err(|e| self.refused(Refusal::Clock, CoreError::Invalid(e)))?;
                if self.replica.post(id)?.is_some() {
                    let e = format!("post {id} already exists: a signed post is created once");
                    return Err(self.refused(Refusal::Replay, CoreError::Conflict(e)));
                }
                let (post, delta) =
                    self.replica
                        .create_post(&new, Some(&signature), now_ms)
                        .map_err(|e| match e.kind() {
                            ErrorKind::BadSignature => self
                                .refused(Refusal::BadSignature, CoreError::Invalid(e.to_string())),
                            _ => e.into(),
                        })?;
                (Written::Post(post), vec![delta])
            }
            Write::EditPost {
                id,
                pos,
                delete,
                insert,
            } => {
                let post = self.require_post(id)?;
                self.require_unsigned(&post, "an edit")?;
                let delta = self.replica.edit_post(id, pos, delete, &insert, now_ms)?;
                (Written::Post(self.require_post(id)?), vec![delta])
            }
            Write::SignedEdit {
                id,
                pos,
                delete,
                insert,
                proof,
            } => {
                let post = self.require_post(id)?;
                let key = self.author_key(&post, "an edit")?;
                let action = Action::Edit {
                    post: id,
                    pos: pos as u64,
                    delete: delete as u64,
                    insert: &insert,
                };
                self.check_proof(&action, &key, &proof, now_ms)?;
                let delta = self.replica.edit_post(id, pos, delete, &insert, now_ms)?;
                used = Some(proof);
                (Written::Post(self.require_post(id)?), vec![delta])
            }
            Write::DeletePost(id) => {
                let post = self.require_post(id)?;
                self.require_unsigned(&post, "a delete")?;
                let delta = self.replica.delete_post(id, now_ms)?;
                (Written::Post(self.require_post(id)?), vec![delta])
            }
            Write::SignedDelete { id, proof } => {
                let post = self.require_post(id)?;
                let key = self.author_key(&post, "a delete")?;
                self.check_proof(&Action::Delete { post: id }, &key, &proof, now_ms)?;
                let delta = self.replica.delete_post(id, now_ms)?;
                used = Some(proof);
                (Written::Post(self.require_post(id)?), vec![delta])
            }
            Write::SignedFollow {
                user,
                whom,
                follow,
                proof,
            } => {
                let Some(key) = self.bound_key(&user)? else {
                    let e = format!(
                        "user {user} has no registered key to check the signature against: register the name first (POST /api/v0/users), or send the request unsigned"
                    );
                    return Err(self.refused(Refusal::Unregistered, CoreError::Invalid(e)));
                };
                let action = Action::follow(follow, &user, &whom);
                self.check_proof(&action, &key, &proof, now_ms)?;
                used = Some(proof);
                self.set_follow(&user, &whom, follow, now_ms)?
            }
            Write::ClaimName { user, key } => {
                let profile = self.replica.profile(&user)?;
                if profile.public_key.is_some() {
                    // Held already (by this key or another): nothing to write.
                    (Written::Profile(profile), Vec::new())
                } else {
                    let delta = self.replica.set_profile(&user, None, Some(key), now_ms)?;
                    (Written::Profile(self.replica.profile(&user)?), vec![delta])
                }
            }
            Write::Follow { user, whom } => {
                self.require_unregistered(&user, "a follow")?;
                self.set_follow(&user, &whom, true, now_ms)?
            }
            Write::Unfollow { user, whom } => {
                self.require_unregistered(&user, "an unfollow")?;
                self.set_follow(&user, &whom, false, now_ms)?
            }
            Write::SetProfile {
                user,
                display_name,
                public_key,
            } => {
                let profile = self.replica.profile(&user)?;
                let unchanged = (display_name.is_some() || public_key.is_some())
                    && display_name
                        .as_ref()
                        .is_none_or(|d| profile.display_name.as_ref() == Some(d))
                    && public_key.is_none_or(|k| profile.public_key == Some(k));
                if unchanged {
                    (Written::Profile(profile), Vec::new())
                } else {
                    let delta = self.replica.set_profile(
                        &user,
                        display_name.as_deref(),
                        public_key,
                        now_ms,
                    )?;
                    (Written::Profile(self.replica.profile(&user)?), vec![delta])
                }
            }
        };
        if deltas.is_empty() {
            // Already so (a follow in place, a profile unchanged, a name
            // held): nothing to write, nothing to remember. The answer still
            // waits for the batch's flush, so its token covers what it read.
            return Ok(written);
        }
        self.metrics
            .deltas_applied
            .get_or_create(&SourceLabels {
                source: Source::Local,
            })
            .inc_by(deltas.len() as u64);
        self.since_checkpoint += deltas.len() as u64;
        self.unlogged.extend(deltas.iter().cloned());
        self.staged.extend(deltas);
        self.staged_writes += 1;
        self.dirty = true;
        if let Some(proof) = used {
            self.replays.remember(proof.signature, proof.at_ms);
        }
        Ok(written)
    }

    fn require_post(&mut self, id: PostId) -> Result<Post, CoreError> {
        self.replica
            .post(id)?
            .ok_or_else(|| CoreError::NotFound(format!("no post {id}")))
    }

    /// Counts a refusal by the user-key rules and passes the error on.
    fn refused(&self, reason: Refusal, e: CoreError) -> CoreError {
        self.metrics.refuse(reason);
        e
    }

    /// Follows (`follow`) or unfollows `whom`. Idempotent: a follow already
    /// in place, or an unfollow of someone not followed, writes nothing and
    /// answers the profile as it is.
    fn set_follow(
        &mut self,
        user: &UserName,
        whom: &UserName,
        follow: bool,
        now_ms: u64,
    ) -> Result<(Written, Vec<Delta>), CoreError> {
        let profile = self.replica.profile(user)?;
        if user != whom && profile.follows.contains(whom) == follow {
            return Ok((Written::Profile(profile), Vec::new()));
        }
        let delta = if follow {
            self.replica.follow(user, whom, now_ms)?
        } else {
            self.replica.unfollow(user, whom, now_ms)?
        };
        Ok((Written::Profile(self.replica.profile(user)?), vec![delta]))
    }

    /// The key bound to `user`: the profile's `public_key`, where the name
    /// registry records a granted claim ([`crate::names`]).
    fn bound_key(&mut self, user: &UserName) -> Result<Option<NodeId>, CoreError> {
        Ok(self.replica.profile(user)?.public_key)
    }

    /// Refuses an unsigned `what` (follow, unfollow) by a user with a key.
    fn require_unregistered(&mut self, user: &UserName, what: &str) -> Result<(), CoreError> {
        match self.bound_key(user)? {
            None => Ok(()),
            Some(key) => Err(self.refused(
                Refusal::Unsigned,
                CoreError::Invalid(format!(
                    "user {user} has a registered key ({key}): {what} must be signed by it (JSON body {{\"at_ms\", \"signature\"}})"
                )),
            )),
        }
    }

    /// Refuses an unsigned `what` (edit, delete) of a signed post.
    fn require_unsigned(&self, post: &Post, what: &str) -> Result<(), CoreError> {
        match post.author_key {
            None => Ok(()),
            Some(key) => Err(self.refused(
                Refusal::Unsigned,
                CoreError::Invalid(format!(
                    "post {} is signed by its author: {what} must be signed by key {key} (fields at_ms and signature)",
                    post.id
                )),
            )),
        }
    }

    /// The key that must sign `what` (edit, delete) of `post`.
    fn author_key(&self, post: &Post, what: &str) -> Result<NodeId, CoreError> {
        post.author_key.ok_or_else(|| {
            self.refused(
                Refusal::Unregistered,
                CoreError::Invalid(format!(
                    "post {} is not signed, so there is no author key to check {what} against: send it without a signature",
                    post.id
                )),
            )
        })
    }

    /// Checks a user's signature of `action` by `key`: the time within the
    /// clock window, the signature, and no earlier use on this node.
    fn check_proof(
        &mut self,
        action: &Action<'_>,
        key: &NodeId,
        proof: &UserProof,
        now_ms: u64,
    ) -> Result<(), CoreError> {
        check_clock("`at_ms`", proof.at_ms, now_ms)
            .map_err(|e| self.refused(Refusal::Clock, CoreError::Invalid(e)))?;
        if !action.verify(key, proof.at_ms, &proof.signature) {
            return Err(self.refused(
                Refusal::BadSignature,
                CoreError::Invalid(format!(
                    "the signature does not verify with key {key} for this request"
                )),
            ));
        }
        match self.replays.check(&proof.signature, now_ms) {
            Ok(()) => Ok(()),
            Err(Unfit::Replayed) => Err(self.refused(
                Refusal::Replay,
                CoreError::Conflict(
                    "this signed request was already applied on this node: sign it again with a new at_ms"
                        .into(),
                ),
            )),
            Err(Unfit::Full) => Err(CoreError::Busy(
                "too many signed requests within the clock window; retry shortly".into(),
            )),
        }
    }

    /// The post `id` and the one before it in the public timeline.
    pub fn post(&mut self, id: PostId) -> Result<Option<PostWithPrev>, CoreError> {
        let Some(post) = self.replica.post(id)? else {
            return Ok(None);
        };
        let prev = self
            .replica
            .newest_posts(1, Some(id))?
            .first()
            .map(|p| p.id);
        Ok(Some(PostWithPrev { post, prev }))
    }

    /// Newest posts first, strictly older than `before`.
    pub fn posts(&mut self, limit: usize, before: Option<PostId>) -> Result<Vec<Post>, CoreError> {
        Ok(self.replica.newest_posts(limit, before)?)
    }

    /// One user's posts, newest first, strictly older than `before`.
    pub fn user_posts(
        &mut self,
        user: &UserName,
        limit: usize,
        before: Option<PostId>,
    ) -> Result<Vec<Post>, CoreError> {
        Ok(self.replica.user_posts(user, limit, before)?)
    }

    /// The posts of the users `user` follows, newest first.
    pub fn home(
        &mut self,
        user: &UserName,
        limit: usize,
        before: Option<PostId>,
    ) -> Result<Vec<Post>, CoreError> {
        Ok(self.replica.home_timeline(user, limit, before)?)
    }

    pub fn profile(&mut self, user: &UserName) -> Result<Profile, CoreError> {
        Ok(self.replica.profile(user)?)
    }

    /// The posts `ids`, `None` for one this node does not hold.
    pub fn posts_by_id(&mut self, ids: &[PostId]) -> Result<Vec<Option<Post>>, CoreError> {
        ids.iter().map(|id| Ok(self.replica.post(*id)?)).collect()
    }

    /// Receives the remote deltas of many messages at once (one automerge
    /// batch per document) and appends what was accepted to the log. Returns
    /// one verdict list per group, one verdict per delta in input order.
    /// Counts the metrics and records the replication delay of each accepted
    /// delta (`now_ms - origin_time_ms`).
    ///
    /// A failed node stores nothing more: every delta is
    /// `Rejected(ErrorKind::Store)` (not the sender's fault).
    pub fn receive(&mut self, groups: Vec<(Vec<Delta>, Source)>, now_ms: u64) -> Vec<Vec<Verdict>> {
        let groups = groups
            .into_iter()
            .map(|(deltas, source)| (deltas, source, Signatures::Unchecked))
            .collect();
        self.receive_with(groups, now_ms)
    }

    /// [`CoreState::receive`], saying per group whether the network already
    /// checked its signatures.
    pub fn receive_with(
        &mut self,
        groups: Vec<(Vec<Delta>, Source, Signatures)>,
        now_ms: u64,
    ) -> Vec<Vec<Verdict>> {
        if self.failed.is_some() {
            return groups
                .into_iter()
                .map(|(deltas, source, _)| {
                    for _ in &deltas {
                        self.metrics.reject(ErrorKind::Store, source);
                    }
                    vec![Verdict::Rejected(ErrorKind::Store); deltas.len()]
                })
                .collect();
        }
        // Deltas of an origin proven to equivocate never reach the replica;
        // their places keep their verdicts.
        let mut refused: Vec<Vec<usize>> = Vec::with_capacity(groups.len());
        let (groups, sources): (Vec<_>, Vec<_>) = groups
            .into_iter()
            .map(|(deltas, source, signatures)| {
                let mut places = Vec::new();
                let deltas = if self.equivocations.is_empty() {
                    deltas
                } else {
                    let mut kept = Vec::with_capacity(deltas.len());
                    for (at, d) in deltas.into_iter().enumerate() {
                        if self.equivocations.contains_key(&d.origin) {
                            places.push(at);
                            self.metrics.reject(ErrorKind::Equivocated, source);
                        } else {
                            kept.push(d);
                        }
                    }
                    kept
                };
                refused.push(places);
                ((deltas, signatures), source)
            })
            .unzip();
        let outcomes = self.replica.receive_groups_with(groups);
        let mut accepted = 0;
        let mut verdicts = Vec::with_capacity(outcomes.len());
        for ((mut outcome, source), places) in outcomes.into_iter().zip(sources).zip(refused) {
            for e in &outcome.rejected {
                tracing::debug!(error = %e, ?source, "delta rejected");
                self.metrics.reject(e.kind(), source);
            }
            for (origin, seq, e) in &outcome.inert {
                // Stored like any accepted delta; every replica refuses the
                // same change, so replicas still converge.
                tracing::warn!(%origin, seq, error = %e, ?source, "stored a delta automerge refuses");
                self.metrics.deltas_inert.inc();
            }
            self.metrics
                .deltas_duplicate
                .inc_by(outcome.duplicates() as u64);
            self.metrics
                .deltas_applied
                .get_or_create(&SourceLabels { source })
                .inc_by(outcome.accepted.len() as u64);
            for d in &outcome.accepted {
                let (region, delay) = match &self.origins {
                    None => (
                        crate::metrics::UNKNOWN_REGION,
                        now_ms.saturating_sub(d.origin_time_ms),
                    ),
                    Some(origins) => match origins.get(&d.origin) {
                        Some(o) => (
                            o.region,
                            hearsay_topology::corrected_delay_ms(
                                now_ms,
                                d.origin_time_ms,
                                o.offset_ms,
                            ),
                        ),
                        None => {
                            // No status of the origin yet: its clock may
                            // be anywhere, so the delay is not measured.
                            self.metrics.replication_delay_unmeasured.inc();
                            continue;
                        }
                    },
                };
                self.metrics
                    .replication_delay(region, delay as f64 / 1000.0);
                if self.delays.len() == RECENT_DELAYS {
                    self.delays.pop_front();
                }
                self.delays.push_back(delay);
            }
            accepted += outcome.accepted.len();
            // Logged before the duplicates are compared, so that a second
            // copy in the same batch finds the first.
            self.unlogged.extend(outcome.accepted);
            for (at, copy) in std::mem::take(&mut outcome.duplicates) {
                if let Some(kind) = self.compare_with_held(copy, source, now_ms) {
                    outcome.verdicts[at] = Verdict::Rejected(kind);
                }
            }
            for at in places {
                outcome
                    .verdicts
                    .insert(at, Verdict::Rejected(ErrorKind::Equivocated));
            }
            verdicts.push(outcome.verdicts);
        }
        if accepted > 0 {
            self.dirty = true;
            self.since_checkpoint += accepted as u64;
        }
        verdicts
    }

    /// Compares a delta that came again with the copy this node holds of
    /// its origin and seq. The same delta: nothing to do (`None`). A
    /// different one the origin signed: an equivocation, recorded with both
    /// envelopes as proof (`Equivocated`). A different one it did not sign:
    /// a forgery (`BadSignature`, the sender's fault).
    fn compare_with_held(&mut self, copy: Delta, source: Source, now_ms: u64) -> Option<ErrorKind> {
        let held = match self.held_copy(&copy.origin, copy.seq) {
            Ok(Some(held)) => held,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = %e, origin = %copy.origin, seq = copy.seq, "reading the held copy of a duplicate");
                return None;
            }
        };
        if held == copy {
            return None;
        }
        match Equivocation::new(held, copy) {
            Ok(proof) => {
                tracing::warn!(origin = %proof.origin(), seq = proof.seq(), ?source, "equivocation: the origin signed two deltas with one seq");
                self.record_equivocation(proof, now_ms);
                Some(ErrorKind::Equivocated)
            }
            Err(e) => {
                self.metrics.reject(e.kind(), source);
                Some(ErrorKind::BadSignature)
            }
        }
    }

    /// The delta of `origin` at `seq` this node holds: in the out-of-order
    /// buffer, applied but not yet logged, or in the log.
    fn held_copy(&self, origin: &NodeId, seq: u64) -> Result<Option<Delta>, CoreError> {
        if let Some(d) = self.replica.buffered_delta(origin, seq) {
            return Ok(Some(d.clone()));
        }
        if let Some(d) = self
            .unlogged
            .iter()
            .rev()
            .find(|d| d.origin == *origin && d.seq == seq)
        {
            return Ok(Some(d.clone()));
        }
        let one = PageLimit {
            max_deltas: 1,
            max_bytes: usize::MAX,
            up_to: seq,
        };
        match self.store.deltas_after(origin, seq - 1, one)?.first() {
            Some(bytes) => Delta::decode(bytes)
                .map(Some)
                .map_err(|e| CoreError::Internal(format!("log entry {origin}:{seq}: {e}"))),
            None => Ok(None),
        }
    }

    /// Refuses the proof's origin from now on and keeps the proof (durable
    /// with the next commit, then published). A second proof of the same
    /// origin changes nothing.
    fn record_equivocation(&mut self, proof: Equivocation, now_ms: u64) {
        let origin = proof.origin();
        if self.equivocations.contains_key(&origin) {
            return;
        }
        self.metrics.equivocations.inc();
        self.new_proofs.push(proof.encode());
        self.equivocations.insert(origin, (proof, now_ms));
        self.metrics
            .equivocators
            .set(self.equivocations.len() as i64);
        if self.equivocations.len() <= MAX_EQUIVOCATIONS {
            match self
                .store
                .put_meta(EQUIVOCATIONS, &encode_proofs(&self.equivocations))
            {
                Ok(()) => self.dirty = true,
                Err(e) => tracing::error!(error = %e, "storing an equivocation proof"),
            }
        } else {
            self.dirty = true;
        }
    }

    /// A proof a peer sent: kept and acted on if it checks out and is new.
    pub fn receive_proof(&mut self, bytes: &[u8], now_ms: u64) -> Result<(), hearsay_crdt::Error> {
        let proof = Equivocation::decode(bytes)?;
        self.record_equivocation(proof, now_ms);
        Ok(())
    }

    /// The origins proven to equivocate.
    pub fn equivocators(&self) -> Vec<Equivocator> {
        self.equivocations
            .iter()
            .map(|(origin, (proof, at))| Equivocator {
                origin: *origin,
                seq: proof.seq(),
                detected_ms: *at,
            })
            .collect()
    }

    /// The encoded proofs held (for the admission hello).
    pub fn proofs(&self) -> Vec<Vec<u8>> {
        self.equivocations
            .values()
            .map(|(p, _)| p.encode())
            .collect()
    }

    /// Refreshes the delay percentiles and checkpoints the documents when
    /// the checkpoint interval has passed or enough deltas were applied
    /// since the last one (made durable by the next commit).
    pub fn tick(&mut self, now_ms: u64) {
        self.delay_percentiles = percentiles(&self.delays);
        let due = now_ms.saturating_sub(self.last_checkpoint_ms)
            >= self.config.checkpoint_interval_ms
            || self.since_checkpoint >= self.config.checkpoint_deltas;
        if due
            && self.failed.is_none()
            && let Err(e) = self.checkpoint(now_ms)
        {
            self.fail(&e);
        }
    }

    /// Saves every changed document and the version vector they contain
    /// (made durable by the next commit).
    pub fn checkpoint(&mut self, now_ms: u64) -> Result<(), CoreError> {
        // The log first: sled recovers a prefix of its writes after a crash,
        // so a snapshot must never be written ahead of the log it covers.
        self.log_unlogged()?;
        let vv = self.replica.checkpoint()?;
        self.store.put_meta(SNAPSHOT_VV, &vv.to_bytes())?;
        self.last_checkpoint_ms = now_ms;
        self.since_checkpoint = 0;
        self.dirty = true;
        Ok(())
    }

    /// One flush for everything staged since the last commit (group
    /// commit). `Ok`: acknowledgements may be sent and `publish` may go to
    /// the network. `Err`: the store failed; nothing is published or
    /// acknowledged, the durable vector does not advance, and the node
    /// refuses writes from then on. With nothing to flush, returns `Ok`
    /// without flushing.
    pub fn commit(&mut self) -> Result<Commit, CoreError> {
        if let Some(f) = &self.failed {
            let e = CoreError::Failed(f.clone());
            self.unlogged.clear();
            self.staged.clear();
            self.staged_writes = 0;
            return Err(e);
        }
        if !self.dirty {
            return Ok(Commit {
                publish: Vec::new(),
                proofs: Vec::new(),
                durable: self.durable.clone(),
            });
        }
        // The log gets everything applied since the last commit in one
        // batch (one roll of sled's log buffer per commit, not per write).
        if let Err(e) = self.log_unlogged().and_then(|()| Ok(self.store.flush()?)) {
            let e = CoreError::Failed(format!("flush: {e}"));
            self.fail(&e);
            self.staged.clear();
            self.staged_writes = 0;
            return Err(e);
        }
        self.dirty = false;
        self.durable = self.replica.version_vector().clone();
        // Everything applied is durable now: the snapshot matches `durable`.
        self.newest = self
            .replica
            .newest_posts(NEWEST_SNAPSHOT, None)
            .ok()
            .map(Arc::new);
        self.metrics
            .group_commit_size
            .observe(std::mem::take(&mut self.staged_writes) as f64);
        self.metrics.revision.set(self.durable.sum() as i64);
        Ok(Commit {
            publish: std::mem::take(&mut self.staged),
            proofs: std::mem::take(&mut self.new_proofs),
            durable: self.durable.clone(),
        })
    }

    /// Appends the deltas applied since the last append to the log.
    fn log_unlogged(&mut self) -> Result<(), CoreError> {
        if !self.unlogged.is_empty() {
            self.store.append(&self.unlogged)?;
            self.unlogged.clear();
        }
        Ok(())
    }

    /// What the last successful commit made durable: serve anti-entropy only
    /// up to this.
    pub fn durable(&self) -> &VersionVector {
        &self.durable
    }

    /// Everything accepted, durable or not.
    pub fn version_vector(&self) -> &VersionVector {
        self.replica.version_vector()
    }

    /// The state to publish (durable vector); the delay percentiles are
    /// refreshed by [`CoreState::tick`].
    pub fn status(&self) -> CoreStatus {
        CoreStatus {
            version_vector: self.durable.clone(),
            buffered: self.replica.buffered(),
            delay_p50_ms: self.delay_percentiles.0,
            delay_p99_ms: self.delay_percentiles.1,
            failed: self.failed.clone(),
            newest: self.newest.clone(),
            equivocators: Arc::new(self.equivocators()),
        }
    }

    /// Why the node refuses writes, once storage failed.
    pub fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// The replica, for invariant checks (heads, document ids).
    pub fn replica_mut(&mut self) -> &mut Replica<StoreDocs<S>> {
        &mut self.replica
    }

    fn fail(&mut self, e: &CoreError) {
        tracing::error!(error = %e, "storage failed; refusing writes");
        let why = match e {
            CoreError::Failed(why) => why.clone(),
            other => other.to_string(),
        };
        self.failed.get_or_insert(why);
    }
}

fn percentiles(delays: &VecDeque<u64>) -> (Option<u64>, Option<u64>) {
    if delays.is_empty() {
        return (None, None);
    }
    let mut sorted: Vec<u64> = delays.iter().copied().collect();
    sorted.sort_unstable();
    let at = |p: f64| sorted[((sorted.len() - 1) as f64 * p).round() as usize];
    (Some(at(0.5)), Some(at(0.99)))
}

// ---- the thread ----------------------------------------------------------

/// The two admission queues, as the core thread holds them.
#[derive(Debug)]
pub struct Queues {
    pub clients: mpsc::Receiver<ClientCommand>,
    pub peers: mpsc::Receiver<PeerCommand>,
}

/// One batch of commands, taken fairly from both queues.
#[derive(Debug, Default)]
pub struct Batch {
    pub clients: Vec<ClientCommand>,
    pub peers: Vec<PeerCommand>,
}

impl Queues {
    /// Takes what is queued without waiting: up to half of `max` from each
    /// queue, the rest from whichever has more waiting.
    pub fn take_ready(&mut self, max: usize) -> Batch {
        let half = max / 2;
        let mut batch = Batch::default();
        drain(&mut self.clients, &mut batch.clients, half);
        drain(&mut self.peers, &mut batch.peers, max - half);
        let room = max - batch.clients.len() - batch.peers.len();
        if room > 0 {
            // Only a queue that filled its share can have more waiting.
            if batch.clients.len() == half {
                drain(&mut self.clients, &mut batch.clients, half + room);
            } else {
                drain(&mut self.peers, &mut batch.peers, max - batch.clients.len());
            }
        }
        batch
    }

    /// Waits for the next batch; `None` once both queues are closed and
    /// drained.
    pub fn next_batch(&mut self, max: usize) -> Option<Batch> {
        let batch = self.take_ready(max);
        if !batch.clients.is_empty() || !batch.peers.is_empty() {
            return Some(batch);
        }
        // Both empty: block on whichever speaks first (tokio's channels work
        // outside a runtime). A closed queue's branch is disabled.
        let first = futures::executor::block_on(async {
            tokio::select! {
                biased;
                Some(c) = self.clients.recv() => Some(Ok(c)),
                Some(p) = self.peers.recv() => Some(Err(p)),
                else => None,
            }
        })?;
        let mut batch = self.take_ready(max.saturating_sub(1));
        match first {
            Ok(c) => batch.clients.insert(0, c),
            Err(p) => batch.peers.insert(0, p),
        }
        Some(batch)
    }
}

fn drain<T>(rx: &mut mpsc::Receiver<T>, into: &mut Vec<T>, up_to: usize) {
    while into.len() < up_to {
        match rx.try_recv() {
            Ok(v) => into.push(v),
            Err(_) => break,
        }
    }
}

/// Runs one batch against `state`: writes and reads, remote deltas (their
/// verdicts answered at once), a tick, then one commit; publishes the status
/// before acknowledging, then the durable local deltas to the network.
pub fn run_batch<S: Store>(
    state: &mut CoreState<S>,
    batch: Batch,
    now_ms: u64,
    events: &mpsc::Sender<CoreEvent>,
    status: &watch::Sender<CoreStatus>,
) {
    let metrics = state.metrics.clone();
    let mut acks: Vec<(Reply<Ack>, Written)> = Vec::new();
    let mut tick = false;
    for command in batch.clients {
        let began = Instant::now();
        let stage = match command {
            ClientCommand::Write { .. } => Stage::Write,
            ClientCommand::Tick => {
                tick = true;
                continue;
            }
            _ => Stage::Read,
        };
        match command {
            ClientCommand::Write { op, reply } => match state.write(op, now_ms) {
                Ok(written) => acks.push((reply, written)),
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            },
            ClientCommand::GetPost { id, reply } => {
                let _ = reply.send(state.post(id));
            }
            ClientCommand::Posts {
                limit,
                before,
                reply,
            } => {
                let _ = reply.send(state.posts(limit, before));
            }
            ClientCommand::UserPosts {
                user,
                limit,
                before,
                reply,
            } => {
                let _ = reply.send(state.user_posts(&user, limit, before));
            }
            ClientCommand::Home {
                user,
                limit,
                before,
                reply,
            } => {
                let _ = reply.send(state.home(&user, limit, before));
            }
            ClientCommand::Profile { user, reply } => {
                let _ = reply.send(state.profile(&user));
            }
            ClientCommand::PostsById { ids, reply } => {
                let _ = reply.send(state.posts_by_id(&ids));
            }
            ClientCommand::Tick => {}
        }
        metrics.timed(stage, began);
    }
    if !batch.peers.is_empty() {
        let began = Instant::now();
        let mut groups = Vec::with_capacity(batch.peers.len());
        let mut replies = Vec::with_capacity(batch.peers.len());
        for command in batch.peers {
            match command {
                PeerCommand::Remote {
                    deltas,
                    source,
                    signatures,
                    reply,
                } => {
                    groups.push((deltas, source, signatures));
                    replies.push(reply);
                }
                PeerCommand::Proof { bytes } => {
                    if let Err(e) = state.receive_proof(&bytes, now_ms) {
                        tracing::debug!(error = %e, "refused an equivocation proof");
                        metrics.reject(e.kind(), Source::Gossip);
                    }
                }
            }
        }
        for (verdicts, reply) in state.receive_with(groups, now_ms).into_iter().zip(replies) {
            // Relays forward on this verdict without waiting for the flush.
            let _ = reply.send(verdicts);
        }
        metrics.timed(Stage::Receive, began);
    }
    if tick {
        state.tick(now_ms);
    }
    let (began, flushes) = (Instant::now(), state.dirty);
    let committed = state.commit();
    if flushes {
        metrics.timed(Stage::Commit, began);
    }
    match committed {
        Ok(commit) => {
            // Status first: the durable vector is the read-your-writes token.
            status.send_replace(state.status());
            for (reply, written) in acks {
                let _ = reply.send(Ok(Ack {
                    written,
                    token: commit.durable.clone(),
                }));
            }
            if !commit.publish.is_empty() {
                let bytes = commit.publish.iter().map(Delta::encode).collect();
                // The network drains this channel in its own loop and never
                // waits on the core, so a blocking send cannot deadlock.
                let _ = events.blocking_send(CoreEvent::Publish(bytes));
            }
            for proof in commit.proofs {
                let _ = events.blocking_send(CoreEvent::Equivocation(proof));
            }
        }
        Err(e) => {
            // The durable vector did not advance; the status says failed.
            status.send_replace(state.status());
            for (reply, _) in acks {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// The core thread: serves both queues fairly until both are closed, then
/// checkpoints and flushes. `clock` gives the time of each batch.
pub fn run_core<S: Store>(
    mut state: CoreState<S>,
    mut queues: Queues,
    events: mpsc::Sender<CoreEvent>,
    status: watch::Sender<CoreStatus>,
    mut clock: impl FnMut() -> u64,
) {
    while let Some(batch) = queues.next_batch(MAX_BATCH) {
        run_batch(&mut state, batch, clock(), &events, &status);
    }
    if state.failed().is_none() {
        let closed = state.checkpoint(clock()).and_then(|()| state.commit());
        if let Err(e) = closed {
            tracing::error!(error = %e, "final checkpoint");
        }
    }
    tracing::info!("core stopped");
}

/// The stored form of the proofs held: per origin, the time it was
/// detected (u64 BE), the proof's length (u32 BE) and the proof.
fn encode_proofs(proofs: &std::collections::BTreeMap<NodeId, (Equivocation, u64)>) -> Vec<u8> {
    let mut out = Vec::new();
    for (proof, at) in proofs.values().take(MAX_EQUIVOCATIONS) {
        let bytes = proof.encode();
        out.extend_from_slice(&at.to_be_bytes());
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(&bytes);
    }
    out
}

fn decode_proofs(
    mut bytes: &[u8],
) -> Result<std::collections::BTreeMap<NodeId, (Equivocation, u64)>, String> {
    let mut out = std::collections::BTreeMap::new();
    while !bytes.is_empty() {
        let (at, rest) = bytes.split_first_chunk::<8>().ok_or("truncated time")?;
        let (len, rest) = rest.split_first_chunk::<4>().ok_or("truncated length")?;
        let len = u32::from_be_bytes(*len) as usize;
        if len > rest.len() {
            return Err("truncated proof".into());
        }
        let (proof, rest) = rest.split_at(len);
        let proof = Equivocation::decode(proof).map_err(|e| e.to_string())?;
        out.insert(proof.origin(), (proof, u64::from_be_bytes(*at)));
        bytes = rest;
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
