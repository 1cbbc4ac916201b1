//! The registry's own database: the Raft log, the vote, the committed
//! index, snapshots of the name set, and the voters this node was told of,
//! in a sled database of their own (`<data dir>/registry`), apart from the
//! CRDT store.
//!
//! Durability is what Raft's safety rests on, so every write openraft waits
//! for is flushed to disk before openraft hears that it is done: appended
//! entries before `LogFlushed` fires, the vote and the committed index
//! before their calls return, a snapshot before it is reported installed.
//!
//! The name set itself lives in memory ([`SmData`]) and is made durable two
//! ways: by snapshots (openraft builds one every
//! [`SNAPSHOT_EVERY`](crate::service::SNAPSHOT_EVERY) entries and then
//! purges the log it covers, so the log stays short), and by the committed
//! index, from which openraft re-applies the log after the snapshot when the
//! node starts again.

// openraft's traits return its `StorageError`, which is large; the helpers
// here return it too.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, RwLock};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader,
    RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};

use crate::{Member, Names, Outcome, RaftId, TypeConfig};

type Result<T> = std::result::Result<T, StorageError<RaftId>>;

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";
const SNAPSHOT: &[u8] = b"snapshot";
const VOTERS: &[u8] = b"voters";

/// Opens (or creates) the registry database in `dir`.
pub fn open(dir: &Path) -> std::result::Result<(LogStore, StateMachine), sled::Error> {
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(8 << 20)
        .flush_every_ms(None)
        .open()?;
    let log = db.open_tree("log")?;
    let meta = db.open_tree("meta")?;
    let logs = LogStore {
        db: db.clone(),
        log,
        meta: meta.clone(),
    };
    let machine = StateMachine::open(db, meta).map_err(|e| {
        sled::Error::Io(std::io::Error::other(format!(
            "reading the registry snapshot: {e}"
        )))
    })?;
    Ok((logs, machine))
}

fn io(
    subject: ErrorSubject<RaftId>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError<RaftId> {
    StorageIOError::new(subject, verb, AnyError::new(&e)).into()
}

fn flush(db: &sled::Db, subject: ErrorSubject<RaftId>) -> Result<()> {
    db.flush()
        .map(|_| ())
        .map_err(|e| io(subject, ErrorVerb::Write, e))
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn get_json<T: for<'de> Deserialize<'de>>(
    tree: &sled::Tree,
    key: &[u8],
    subject: ErrorSubject<RaftId>,
) -> Result<Option<T>> {
    match tree
        .get(key)
        .map_err(|e| io(subject.clone(), ErrorVerb::Read, e))?
    {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io(subject, ErrorVerb::Read, e)),
    }
}

fn put_json<T: Serialize>(
    db: &sled::Db,
    tree: &sled::Tree,
    key: &[u8],
    value: &T,
    subject: ErrorSubject<RaftId>,
) -> Result<()> {
    let bytes = serde_json::to_vec(value).map_err(|e| io(subject.clone(), ErrorVerb::Write, e))?;
    tree.insert(key, bytes)
        .map_err(|e| io(subject.clone(), ErrorVerb::Write, e))?;
    flush(db, subject)
}

/// The Raft log and the vote.
#[derive(Debug, Clone)]
pub struct LogStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
}

impl LogStore {
    /// The voters this node was told of (by its configuration or by
    /// `registry init`), kept so a node that is not a voter knows where to
    /// send claims after a restart.
    pub fn voters(&self) -> Vec<String> {
        get_json(&self.meta, VOTERS, ErrorSubject::Store)
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Remembers the voters, durably.
    pub fn set_voters(&self, voters: &[String]) -> Result<()> {
        put_json(&self.db, &self.meta, VOTERS, &voters, ErrorSubject::Store)
    }

    fn last_purged(&self) -> Result<Option<LogId<RaftId>>> {
        get_json(&self.meta, LAST_PURGED, ErrorSubject::Store)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let mut entries = Vec::new();
        for item in self.log.range(index_key(start)..) {
            let (key, value) = item.map_err(|e| io(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            let index = u64::from_be_bytes(key.as_ref().try_into().map_err(|_| {
                io(
                    ErrorSubject::Logs,
                    ErrorVerb::Read,
                    std::io::Error::other("a log key is not 8 bytes"),
                )
            })?);
            if !range.contains(&index) {
                break;
            }
            let entry: Entry<TypeConfig> = serde_json::from_slice(&value)
                .map_err(|e| io(ErrorSubject::LogIndex(index), ErrorVerb::Read, e))?;
            entries.push(entry);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>> {
        let last_purged_log_id = self.last_purged()?;
        let last = match self
            .log
            .last()
            .map_err(|e| io(ErrorSubject::Logs, ErrorVerb::Read, e))?
        {
            Some((_, value)) => {
                let entry: Entry<TypeConfig> = serde_json::from_slice(&value)
                    .map_err(|e| io(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                Some(entry.log_id)
            }
            None => None,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<RaftId>) -> Result<()> {
        put_json(&self.db, &self.meta, VOTE, vote, ErrorSubject::Vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<RaftId>>> {
        get_json(&self.meta, VOTE, ErrorSubject::Vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<RaftId>>) -> Result<()> {
        put_json(
            &self.db,
            &self.meta,
            COMMITTED,
            &committed,
            ErrorSubject::Store,
        )
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<RaftId>>> {
        Ok(
            get_json::<Option<LogId<RaftId>>>(&self.meta, COMMITTED, ErrorSubject::Store)?
                .flatten(),
        )
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let bytes = serde_json::to_vec(&entry)
                .map_err(|e| io(ErrorSubject::Log(entry.log_id), ErrorVerb::Write, e))?;
            batch.insert(&index_key(entry.log_id.index), bytes);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| io(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        // Durable before openraft counts the entries as held here (a vote
        // for a leader, an acknowledgement that commits).
        let flushed = self.db.flush_async().await.map(|_| ());
        callback.log_io_completed(flushed.map_err(std::io::Error::other));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<RaftId>) -> Result<()> {
        let mut batch = sled::Batch::default();
        for key in self.log.range(index_key(log_id.index)..).keys() {
            batch.remove(key.map_err(|e| io(ErrorSubject::Logs, ErrorVerb::Delete, e))?);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| io(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        flush(&self.db, ErrorSubject::Logs)
    }

    async fn purge(&mut self, log_id: LogId<RaftId>) -> Result<()> {
        // The purge mark first: a crash between the two leaves entries
        // below the mark, which are ignored, never a hole above it.
        put_json(
            &self.db,
            &self.meta,
            LAST_PURGED,
            &log_id,
            ErrorSubject::Store,
        )?;
        let mut batch = sled::Batch::default();
        for key in self.log.range(..=index_key(log_id.index)).keys() {
            batch.remove(key.map_err(|e| io(ErrorSubject::Logs, ErrorVerb::Delete, e))?);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| io(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        flush(&self.db, ErrorSubject::Logs)
    }
}

/// The state machine's contents, shared with the service that reads names.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SmData {
    pub last_applied: Option<LogId<RaftId>>,
    pub last_membership: StoredMembership<RaftId, Member>,
    pub names: Names,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<RaftId, Member>,
    data: Vec<u8>,
}

/// The name set, applied from the log.
#[derive(Debug, Clone)]
pub struct StateMachine {
    db: sled::Db,
    meta: sled::Tree,
    data: Arc<RwLock<SmData>>,
    /// Makes snapshot ids unique within a run.
    snapshots_built: u64,
}

impl StateMachine {
    fn open(db: sled::Db, meta: sled::Tree) -> Result<Self> {
        let mut data = SmData::default();
        if let Some(stored) =
            get_json::<StoredSnapshot>(&meta, SNAPSHOT, ErrorSubject::Snapshot(None))?
        {
            data = decode_snapshot(&stored.meta, &stored.data)?;
        }
        Ok(StateMachine {
            db,
            meta,
            data: Arc::new(RwLock::new(data)),
            snapshots_built: 0,
        })
    }

    /// The applied name set, to read from.
    pub fn data(&self) -> Arc<RwLock<SmData>> {
        self.data.clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, SmData> {
        self.data
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, SmData> {
        self.data
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn decode_snapshot(meta: &SnapshotMeta<RaftId, Member>, bytes: &[u8]) -> Result<SmData> {
    let names: Names = serde_json::from_slice(bytes).map_err(|e| {
        io(
            ErrorSubject::Snapshot(Some(meta.signature())),
            ErrorVerb::Read,
            e,
        )
    })?;
    Ok(SmData {
        last_applied: meta.last_log_id,
        last_membership: meta.last_membership.clone(),
        names,
    })
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>> {
        let (meta, bytes) = {
            let data = self.read();
            let bytes = serde_json::to_vec(&data.names)
                .map_err(|e| io(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
            let snapshot_id = match data.last_applied {
                Some(last) => format!("{}-{}-{}", last.leader_id, last.index, self.snapshots_built),
                None => format!("--{}", self.snapshots_built),
            };
            let meta = SnapshotMeta {
                last_log_id: data.last_applied,
                last_membership: data.last_membership.clone(),
                snapshot_id,
            };
            (meta, bytes)
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: bytes.clone(),
        };
        put_json(
            &self.db,
            &self.meta,
            SNAPSHOT,
            &stored,
            ErrorSubject::Snapshot(Some(meta.signature())),
        )?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<RaftId>>, StoredMembership<RaftId, Member>)> {
        let data = self.read();
        Ok((data.last_applied, data.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut data = self.write();
        let mut outcomes = Vec::new();
        for entry in entries {
            data.last_applied = Some(entry.log_id);
            outcomes.push(match entry.payload {
                EntryPayload::Blank => Outcome::None,
                EntryPayload::Normal(command) => data.names.apply(&command),
                EntryPayload::Membership(membership) => {
                    data.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                    Outcome::None
                }
            });
        }
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshots_built += 1;
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<RaftId, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<()> {
        let bytes = snapshot.into_inner();
        let data = decode_snapshot(meta, &bytes)?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: bytes,
        };
        put_json(
            &self.db,
            &self.meta,
            SNAPSHOT,
            &stored,
            ErrorSubject::Snapshot(Some(meta.signature())),
        )?;
        *self.write() = data;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>> {
        let stored: Option<StoredSnapshot> =
            get_json(&self.meta, SNAPSHOT, ErrorSubject::Snapshot(None))?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::{StoreBuilder, Suite};

    use super::*;

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine)> {
            let dir =
                tempfile::tempdir().map_err(|e| io(ErrorSubject::Store, ErrorVerb::Write, e))?;
            let (logs, machine) =
                open(dir.path()).map_err(|e| io(ErrorSubject::Store, ErrorVerb::Write, e))?;
            Ok((dir, logs, machine))
        }
    }

    /// openraft's own checks of a storage implementation: log ranges,
    /// truncation and purge, votes, membership from log and state machine,
    /// snapshots.
    #[test]
    fn passes_openraft_storage_suite() {
        Suite::test_all(Builder).expect("openraft storage suite");
    }

    #[tokio::test]
    async fn the_vote_the_log_and_the_snapshot_survive_a_reopen() {
        use openraft::CommittedLeaderId;
        let dir = tempfile::tempdir().unwrap();
        let leader = CommittedLeaderId::new(3, 1);
        let entry = |index: u64, command: Option<crate::Command>| Entry::<TypeConfig> {
            log_id: LogId::new(leader, index),
            payload: command.map_or(EntryPayload::Blank, EntryPayload::Normal),
        };
        {
            let (mut logs, mut machine) = open(dir.path()).unwrap();
            logs.save_vote(&Vote::new(3, 1)).await.unwrap();
            logs.set_voters(&["a".into(), "b".into(), "c".into()])
                .unwrap();
            let claim = crate::Command::Claim {
                name: "ann".into(),
                owner: "k1".into(),
            };
            let entries = vec![entry(1, None), entry(2, Some(claim))];
            // The log written as `append` writes it (its callback cannot be
            // made outside openraft), then applied and snapshotted.
            machine.apply(entries.clone()).await.unwrap();
            let mut batch = sled::Batch::default();
            for e in &entries {
                batch.insert(&index_key(e.log_id.index), serde_json::to_vec(e).unwrap());
            }
            logs.log.apply_batch(batch).unwrap();
            logs.db.flush().unwrap();
            machine
                .get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .unwrap();
        }
        let (mut logs, mut machine) = open(dir.path()).unwrap();
        assert_eq!(logs.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
        assert_eq!(logs.voters(), vec!["a", "b", "c"]);
        let state = logs.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id.map(|l| l.index), Some(2));
        let (applied, _) = machine.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(2));
        assert_eq!(machine.read().names.owner("ann"), Some("k1"));
    }
}
