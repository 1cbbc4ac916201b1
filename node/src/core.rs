//! The core: one thread that owns the replica and the store.
//!
//! Every automerge and sled call of the node happens here, off the async
//! reactor. Handles send [`Command`]s over a bounded channel; the thread takes
//! everything that queued while it was busy as one batch, so batching needs
//! no timer: an idle core serves a write at once, a loaded core makes a
//! whole batch durable with one flush (group commit).
//!
//! Within a batch:
//! - local writes are applied and appended to the log, and acknowledged only
//!   after the batch's flush; their deltas go to the network only then, so a
//!   crash never reissues a seq a peer already holds;
//! - remote deltas are verified, applied and appended, and their verdict is
//!   returned at once so gossipsub can forward them without waiting for the
//!   flush;
//! - reads are answered at once.

use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hearsay_crdt::{Delta, Keypair, NewPost, Post, PostId, Replica, ReplicaConfig, VersionVector};
use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics::{Metrics, Source, SourceLabels};
use crate::store::{PageLimit, SledStore, Store, StoreDocs};

/// Capacity of the command queue; beyond it the API answers 503.
pub const COMMAND_QUEUE: usize = 1024;
/// Most commands taken into one batch (one flush).
const MAX_BATCH: usize = 512;
/// Replay page size at start-up.
const REPLAY_PAGE: PageLimit = PageLimit {
    max_deltas: 4096,
    max_bytes: 16 << 20,
    up_to: u64::MAX,
};
/// Replication delays kept for the p50/p99 in `/stats`.
const RECENT_DELAYS: usize = 2048;
const SNAPSHOT_VV: &str = "snapshot_vv";

/// Why the core refused a command.
#[derive(Debug, thiserror::Error, Clone)]
pub enum CoreError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("storage failure: {0}")]
    Store(String),
}

impl From<hearsay_crdt::Error> for CoreError {
    fn from(e: hearsay_crdt::Error) -> Self {
        match e {
            hearsay_crdt::Error::Store(s) => CoreError::Store(s),
            other => CoreError::Invalid(other.to_string()),
        }
    }
}

impl From<crate::store::StoreError> for CoreError {
    fn from(e: crate::store::StoreError) -> Self {
        CoreError::Store(e.to_string())
    }
}

pub type Reply<T> = oneshot::Sender<Result<T, CoreError>>;

/// A post and the id of the one before it in the public timeline.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PostWithPrev {
    pub post: Post,
    pub prev: Option<PostId>,
}

/// What the core did with remote deltas (drives gossipsub validation).
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    pub accepted: usize,
    pub buffered: usize,
    pub duplicates: usize,
    /// `Error::kind()` of each rejection.
    pub rejected: Vec<&'static str>,
}

/// Requests to the core.
#[derive(Debug)]
pub enum Command {
    CreatePost {
        new: NewPost,
        reply: Reply<Post>,
    },
    EditPost {
        id: PostId,
        pos: usize,
        delete: usize,
        insert: String,
        reply: Reply<Post>,
    },
    DeletePost {
        id: PostId,
        reply: Reply<Post>,
    },
    GetPost {
        id: PostId,
        reply: Reply<Option<PostWithPrev>>,
    },
    Posts {
        limit: usize,
        before: Option<PostId>,
        reply: Reply<Vec<Post>>,
    },
    Remote {
        deltas: Vec<Delta>,
        source: Source,
        reply: oneshot::Sender<Verdict>,
    },
    /// Periodic: checkpoint documents.
    Tick,
}

/// What the core tells the network.
#[derive(Debug)]
pub enum CoreEvent {
    /// Durable local deltas, encoded, to push to peers.
    Publish(Vec<Vec<u8>>),
    /// A delta is waiting for an earlier one: run anti-entropy now.
    Gap,
}

/// The core's state as the rest of the node sees it.
#[derive(Debug, Clone, Default)]
pub struct CoreStatus {
    pub version_vector: VersionVector,
    pub buffered: usize,
    pub delay_p50_ms: Option<u64>,
    pub delay_p99_ms: Option<u64>,
    /// Set when storage failed: the node refuses writes from then on.
    pub failed: Option<String>,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The replica, its store and the bookkeeping of one node.
pub struct Core {
    replica: Replica<StoreDocs<SledStore>>,
    store: SledStore,
    metrics: Metrics,
    delays: VecDeque<u64>,
    delay_percentiles: (Option<u64>, Option<u64>),
    failed: Option<String>,
    checkpoint_interval: Duration,
    last_checkpoint: Instant,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

impl Core {
    /// Opens the store in `dir`, loads the document snapshot and replays the
    /// log above it.
    pub fn open(
        dir: &Path,
        key: Keypair,
        cache_docs: usize,
        checkpoint_interval: Duration,
        metrics: Metrics,
    ) -> Result<Self, CoreError> {
        let store = SledStore::open(dir)?;
        let snapshot = match store.get_meta(SNAPSHOT_VV)? {
            Some(b) => VersionVector::from_bytes(&b)
                .map_err(|e| CoreError::Store(format!("snapshot vv: {e}")))?,
            None => VersionVector::new(),
        };
        let config = ReplicaConfig {
            cache_docs,
            ..ReplicaConfig::default()
        };
        let mut replica = Replica::open(key, StoreDocs(store.clone()), snapshot.clone(), config)?;
        let log = store.log_version_vector()?;
        let started = Instant::now();
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
                    .map_err(|e| CoreError::Store(format!("log entry of {origin}: {e}")))?;
                replayed += deltas.len();
                let outcome = replica.replay(deltas);
                if let Some(e) = outcome.rejected.first() {
                    tracing::warn!(%origin, error = %e, "replaying the log");
                }
                if outcome.accepted.is_empty() {
                    break;
                }
            }
        }
        tracing::info!(
            replayed,
            elapsed_ms = started.elapsed().as_millis() as u64,
            revision = replica.version_vector().sum(),
            "store opened"
        );
        metrics.revision.set(replica.version_vector().sum() as i64);
        Ok(Core {
            replica,
            store,
            metrics,
            delays: VecDeque::with_capacity(RECENT_DELAYS),
            delay_percentiles: (None, None),
            failed: None,
            checkpoint_interval,
            last_checkpoint: Instant::now(),
        })
    }

    /// The store, for serving anti-entropy from other threads.
    pub fn store(&self) -> SledStore {
        self.store.clone()
    }

    /// The state to publish; the delay percentiles are refreshed on `Tick`.
    pub fn status(&self) -> CoreStatus {
        CoreStatus {
            version_vector: self.replica.version_vector().clone(),
            buffered: self.replica.buffered(),
            delay_p50_ms: self.delay_percentiles.0,
            delay_p99_ms: self.delay_percentiles.1,
            failed: self.failed.clone(),
        }
    }

    /// Runs until every command sender is dropped, then checkpoints and flushes.
    pub fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<CoreEvent>,
        status: watch::Sender<CoreStatus>,
    ) {
        while let Some(first) = commands.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match commands.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            self.run_batch(batch, &events, &status);
        }
        if let Err(e) = self.checkpoint().and_then(|()| Ok(self.store.flush()?)) {
            tracing::error!(error = %e, "final checkpoint");
        }
        tracing::info!("core stopped");
    }

    fn run_batch(
        &mut self,
        batch: Vec<Command>,
        events: &mpsc::Sender<CoreEvent>,
        status: &watch::Sender<CoreStatus>,
    ) {
        let mut acks: Vec<(Reply<Post>, Result<Post, CoreError>)> = Vec::new();
        let mut outgoing: Vec<Delta> = Vec::new();
        let mut remote = Vec::new();
        let mut dirty = false;
        let mut gap = false;
        for command in batch {
            match command {
                Command::CreatePost { new, reply } => {
                    let result = self.write(&mut outgoing, |r| r.create_post(&new, None, now_ms()));
                    acks.push((reply, result));
                }
                Command::EditPost {
                    id,
                    pos,
                    delete,
                    insert,
                    reply,
                } => {
                    let result = self.write_post(id, &mut outgoing, |r, now| {
                        r.edit_post(id, pos, delete, &insert, now)
                    });
                    acks.push((reply, result));
                }
                Command::DeletePost { id, reply } => {
                    let result =
                        self.write_post(id, &mut outgoing, |r, now| r.delete_post(id, now));
                    acks.push((reply, result));
                }
                Command::GetPost { id, reply } => {
                    let _ = reply.send(self.get_post(id));
                }
                Command::Posts {
                    limit,
                    before,
                    reply,
                } => {
                    let _ = reply.send(
                        self.replica
                            .newest_posts(limit, before)
                            .map_err(CoreError::from),
                    );
                }
                Command::Remote {
                    deltas,
                    source,
                    reply,
                } => remote.push((deltas, source, reply)),
                Command::Tick => {
                    self.delay_percentiles = percentiles(&self.delays);
                    if self.last_checkpoint.elapsed() >= self.checkpoint_interval {
                        if let Err(e) = self.checkpoint() {
                            self.fail(&e);
                        }
                        dirty = true;
                    }
                }
            }
        }
        if !remote.is_empty() {
            for verdict in self.remote(remote) {
                dirty |= verdict.accepted > 0;
                gap |= verdict.buffered > 0 || verdict.rejected.contains(&"seq_gap");
            }
        }
        if !outgoing.is_empty() || dirty {
            if let Err(e) = self.store.flush() {
                self.fail(&e.into());
                for (_, result) in acks.iter_mut() {
                    *result = Err(CoreError::Store("flush failed".into()));
                }
                outgoing.clear();
            }
            self.metrics.group_commit_size.observe(acks.len() as f64);
        }
        // Publish the new version vector before acknowledging, so a client
        // that reads `/stats` after its 200 sees its own write (the vector is
        // the read-your-writes token), and anti-entropy, which serves up to
        // this vector, never serves a local delta before it is durable.
        status.send_replace(self.status());
        for (reply, result) in acks {
            let _ = reply.send(result);
        }
        if !outgoing.is_empty() {
            let bytes = outgoing.iter().map(Delta::encode).collect();
            // The network drains this channel in its own loop and never waits
            // on the core, so a blocking send cannot deadlock.
            let _ = events.blocking_send(CoreEvent::Publish(bytes));
        }
        if gap || self.replica.buffered() > 0 {
            let _ = events.try_send(CoreEvent::Gap);
        }
        self.metrics
            .revision
            .set(self.replica.version_vector().sum() as i64);
    }

    fn fail(&mut self, e: &CoreError) {
        tracing::error!(error = %e, "storage failed; refusing writes");
        self.failed.get_or_insert_with(|| e.to_string());
    }

    fn write(
        &mut self,
        outgoing: &mut Vec<Delta>,
        op: impl FnOnce(&mut Replica<StoreDocs<SledStore>>) -> hearsay_crdt::Result<(Post, Vec<Delta>)>,
    ) -> Result<Post, CoreError> {
        if let Some(f) = &self.failed {
            return Err(CoreError::Store(f.clone()));
        }
        let (post, deltas) = op(&mut self.replica)?;
        if let Err(e) = self.store.append(&deltas) {
            let e = CoreError::from(e);
            self.fail(&e);
            return Err(e);
        }
        self.metrics
            .deltas_applied
            .get_or_create(&SourceLabels {
                source: Source::Local,
            })
            .inc_by(deltas.len() as u64);
        outgoing.extend(deltas);
        Ok(post)
    }

    fn write_post(
        &mut self,
        id: PostId,
        outgoing: &mut Vec<Delta>,
        op: impl FnOnce(&mut Replica<StoreDocs<SledStore>>, u64) -> hearsay_crdt::Result<Delta>,
    ) -> Result<Post, CoreError> {
        if self.replica.post(id)?.is_none() {
            return Err(CoreError::NotFound(format!("no post {id}")));
        }
        self.write(outgoing, |r| {
            let delta = op(r, now_ms())?;
            let post = r.post(id)?.expect("post exists");
            Ok((post, vec![delta]))
        })
    }

    fn get_post(&mut self, id: PostId) -> Result<Option<PostWithPrev>, CoreError> {
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

    /// Receives the remote deltas of a whole batch at once (one automerge
    /// batch per document), answers each sender with its verdict, and
    /// appends what was accepted to the log.
    fn remote(
        &mut self,
        messages: Vec<(Vec<Delta>, Source, oneshot::Sender<Verdict>)>,
    ) -> Vec<Verdict> {
        let (groups, senders): (Vec<_>, Vec<_>) =
            messages.into_iter().map(|(d, s, r)| (d, (s, r))).unzip();
        let outcomes = self.replica.receive_groups(groups);
        let now = now_ms();
        let mut accepted = Vec::new();
        let mut verdicts = Vec::with_capacity(outcomes.len());
        for (outcome, (source, reply)) in outcomes.into_iter().zip(senders) {
            let verdict = Verdict {
                accepted: outcome.accepted.len(),
                buffered: outcome.buffered,
                duplicates: outcome.duplicates,
                rejected: outcome.rejected.iter().map(|e| e.kind().as_str()).collect(),
            };
            for e in &outcome.rejected {
                tracing::debug!(error = %e, ?source, "delta rejected");
                self.metrics.reject(e.kind().as_str(), source);
            }
            self.metrics
                .deltas_duplicate
                .inc_by(outcome.duplicates as u64);
            self.metrics
                .deltas_applied
                .get_or_create(&SourceLabels { source })
                .inc_by(verdict.accepted as u64);
            for d in &outcome.accepted {
                let delay = now.saturating_sub(d.origin_time_ms);
                self.metrics
                    .replication_delay_seconds
                    .observe(delay as f64 / 1000.0);
                if self.delays.len() == RECENT_DELAYS {
                    self.delays.pop_front();
                }
                self.delays.push_back(delay);
            }
            accepted.extend(outcome.accepted);
            // Relays forward on this verdict without waiting for the flush.
            let _ = reply.send(verdict.clone());
            verdicts.push(verdict);
        }
        if let Err(e) = self.store.append(&accepted) {
            self.fail(&e.into());
        }
        verdicts
    }

    fn checkpoint(&mut self) -> Result<(), CoreError> {
        let vv = self.replica.checkpoint()?;
        self.store.put_meta(SNAPSHOT_VV, &vv.to_bytes())?;
        self.last_checkpoint = Instant::now();
        Ok(())
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
