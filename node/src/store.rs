//! Durable storage of the delta log and document snapshots.
//!
//! The [`Store`] trait is the whole contract between the node and its storage
//! engine; [`SledStore`] implements it over sled and [`MemoryStore`] in
//! memory, and both pass the same [`conformance`] suite, so the engine can be
//! swapped if sled ever fails the crash tests.
//!
//! Layout (sled trees):
//! - `log`: `origin (32) | seq (u64 BE)` -> encoded delta. Keys sort by
//!   origin, then seq, so "the deltas of origin O above seq S" is one range
//!   scan, and the highest contiguous seq of O is its last key (deltas are
//!   only ever appended in per-origin seq order, and sled recovers a prefix
//!   of its write log after a crash).
//! - `docs`: document id -> saved automerge bytes (snapshots).
//! - `meta`: `snapshot_vv` (what the saved documents contain) and friends.
//!
//! Nothing is durable until [`Store::flush`] returns: the node batches many
//! writes into one flush (group commit).
//!
//! Crashes are modelled, not assumed: [`MemoryStore`] keeps the state its
//! last flush made durable beside the live one, and [`MemoryStore::crashed`]
//! returns what a restart would find; for sled the [`conformance`] suite
//! copies the data directory while the first handle is still alive (a clean
//! drop would write everything and hide a flush that did nothing).
//! [`FaultyStore`] wraps any store and injects storage faults (failed
//! flushes) for tests and the simulation.
//!
//! [`read_page`] is the serving side of anti-entropy: the deltas a peer's
//! version vector lacks, up to a bound (the durable vector), per origin in
//! seq order, in bounded pages.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hearsay_crdt::{Delta, DocId, NodeId, VersionVector};

/// Storage failures. Always fatal for the write that hit them.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// A fault injected by [`FaultyStore`].
    #[error("injected storage fault: {0}")]
    Injected(&'static str),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Bounds of one [`Store::deltas_after`] page.
#[derive(Clone, Copy, Debug)]
pub struct PageLimit {
    pub max_deltas: usize,
    pub max_bytes: usize,
    /// Highest seq to include (e.g. the durable version vector's entry).
    pub up_to: u64,
}

/// The node's storage engine.
pub trait Store: Clone + Send + Sync + 'static {
    /// Appends deltas to the log (not yet durable).
    fn append(&self, deltas: &[Delta]) -> StoreResult<()>;
    /// Encoded deltas of `origin` with `after < seq <= limit.up_to`, in seq
    /// order, within `limit` (a non-empty page holds at least one delta).
    fn deltas_after(
        &self,
        origin: &NodeId,
        after: u64,
        limit: PageLimit,
    ) -> StoreResult<Vec<Vec<u8>>>;
    /// The version vector of the log: per origin, its highest seq.
    fn log_version_vector(&self) -> StoreResult<VersionVector>;
    /// Number of deltas in the log.
    fn log_len(&self) -> StoreResult<u64>;
    fn save_doc(&self, id: &DocId, bytes: &[u8]) -> StoreResult<()>;
    fn load_doc(&self, id: &DocId) -> StoreResult<Option<Vec<u8>>>;
    /// Stored document ids whose text form starts with `prefix`.
    fn doc_ids(&self, prefix: &str) -> StoreResult<Vec<DocId>>;
    fn put_meta(&self, key: &str, value: &[u8]) -> StoreResult<()>;
    fn get_meta(&self, key: &str) -> StoreResult<Option<Vec<u8>>>;
    /// Adds keys to the ordered set of post-list keys
    /// ([`hearsay_crdt::lists`]); idempotent, not yet durable.
    fn list_insert(&self, keys: &[Vec<u8>]) -> StoreResult<()>;
    /// At most `n` list keys in `[start, end)`, greatest first.
    fn list_range_rev(&self, start: &[u8], end: &[u8], n: usize) -> StoreResult<Vec<Vec<u8>>>;
    /// Makes every earlier write durable.
    fn flush(&self) -> StoreResult<()>;
}

impl PageLimit {
    /// Takes values from `iter` until the page is full.
    fn take<V: AsRef<[u8]>, E: Into<StoreError>>(
        &self,
        iter: impl Iterator<Item = Result<V, E>>,
    ) -> StoreResult<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        let mut bytes = 0;
        for value in iter {
            let value = value.map_err(Into::into)?;
            let v = value.as_ref();
            if out.len() >= self.max_deltas || (bytes + v.len() > self.max_bytes && !out.is_empty())
            {
                break;
            }
            bytes += v.len();
            out.push(v.to_vec());
        }
        Ok(out)
    }
}

/// The log keys of `origin` in `after < seq <= limit.up_to`, if any.
fn log_range(
    origin: &NodeId,
    after: u64,
    limit: &PageLimit,
) -> Option<std::ops::RangeInclusive<[u8; 40]>> {
    (limit.up_to > after).then(|| log_key(origin, after + 1)..=log_key(origin, limit.up_to))
}

fn log_key(origin: &NodeId, seq: u64) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(origin.as_bytes());
    k[32..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn parse_log_key(k: &[u8]) -> StoreResult<(NodeId, u64)> {
    let k: &[u8; 40] = k
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("log key of {} bytes", k.len())))?;
    let origin = NodeId(k[..32].try_into().expect("32"));
    Ok((origin, u64::from_be_bytes(k[32..].try_into().expect("8"))))
}

fn parse_doc_id(k: &[u8]) -> StoreResult<DocId> {
    std::str::from_utf8(k)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            StoreError::Corrupt(format!("bad document key {:?}", String::from_utf8_lossy(k)))
        })
}

/// [`Store`] over sled.
#[derive(Clone, Debug)]
pub struct SledStore {
    db: sled::Db,
    log: sled::Tree,
    docs: sled::Tree,
    meta: sled::Tree,
    lists: sled::Tree,
}

impl SledStore {
    pub fn open(dir: &Path) -> StoreResult<Self> {
        // Durability is ours (group commit), not sled's timer.
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(32 << 20)
            .flush_every_ms(None)
            .open()?;
        Ok(SledStore {
            log: db.open_tree("log")?,
            docs: db.open_tree("docs")?,
            meta: db.open_tree("meta")?,
            lists: db.open_tree("lists")?,
            db,
        })
    }
}

impl Store for SledStore {
    fn append(&self, deltas: &[Delta]) -> StoreResult<()> {
        let mut batch = sled::Batch::default();
        for d in deltas {
            batch.insert(&log_key(&d.origin, d.seq)[..], d.encode());
        }
        self.log.apply_batch(batch)?;
        Ok(())
    }

    fn deltas_after(
        &self,
        origin: &NodeId,
        after: u64,
        limit: PageLimit,
    ) -> StoreResult<Vec<Vec<u8>>> {
        match log_range(origin, after, &limit) {
            Some(range) => limit.take(self.log.range(range).values()),
            None => Ok(Vec::new()),
        }
    }

    fn log_version_vector(&self) -> StoreResult<VersionVector> {
        // One seek per origin: its last key, then the first key past it.
        let mut vv = VersionVector::new();
        let mut next = self.log.first()?;
        while let Some((key, _)) = next {
            let (origin, _) = parse_log_key(&key)?;
            let end = log_key(&origin, u64::MAX);
            if let Some((last, _)) = self.log.range(..=end).next_back().transpose()? {
                vv.set(origin, parse_log_key(&last)?.1);
            }
            next = self
                .log
                .range((Bound::Excluded(end), Bound::Unbounded))
                .next()
                .transpose()?;
        }
        Ok(vv)
    }

    fn log_len(&self) -> StoreResult<u64> {
        Ok(self.log.len() as u64)
    }

    fn save_doc(&self, id: &DocId, bytes: &[u8]) -> StoreResult<()> {
        self.docs.insert(id.to_string(), bytes)?;
        Ok(())
    }

    fn load_doc(&self, id: &DocId) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.docs.get(id.to_string())?.map(|v| v.to_vec()))
    }

    fn doc_ids(&self, prefix: &str) -> StoreResult<Vec<DocId>> {
        self.docs
            .scan_prefix(prefix)
            .keys()
            .map(|k| parse_doc_id(&k?))
            .collect()
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> StoreResult<()> {
        self.meta.insert(key, value)?;
        Ok(())
    }

    fn get_meta(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.meta.get(key)?.map(|v| v.to_vec()))
    }

    fn list_insert(&self, keys: &[Vec<u8>]) -> StoreResult<()> {
        // Plain inserts, not an atomic batch: a batch rolls sled's log
        // buffer (a hand-off to its IO thread per call), and list keys need
        // no atomicity (inserting one again is harmless).
        for k in keys {
            self.lists.insert(k.as_slice(), &[][..])?;
        }
        Ok(())
    }

    fn list_range_rev(&self, start: &[u8], end: &[u8], n: usize) -> StoreResult<Vec<Vec<u8>>> {
        if start >= end {
            return Ok(Vec::new());
        }
        self.lists
            .range(start..end)
            .keys()
            .rev()
            .take(n)
            .map(|k| Ok(k?.to_vec()))
            .collect()
    }

    fn flush(&self) -> StoreResult<()> {
        self.db.flush()?;
        Ok(())
    }
}

#[derive(Clone, Default, Debug)]
struct Tables {
    log: BTreeMap<[u8; 40], Vec<u8>>,
    docs: BTreeMap<String, Vec<u8>>,
    meta: BTreeMap<String, Vec<u8>>,
    lists: BTreeSet<Vec<u8>>,
}

/// One write not yet made durable.
#[derive(Debug)]
enum Pending {
    Log([u8; 40], Vec<u8>),
    Doc(String, Vec<u8>),
    Meta(String, Vec<u8>),
    List(Vec<u8>),
}

impl Tables {
    fn apply(&mut self, write: Pending) {
        match write {
            Pending::Log(k, v) => {
                self.log.insert(k, v);
            }
            Pending::Doc(k, v) => {
                self.docs.insert(k, v);
            }
            Pending::Meta(k, v) => {
                self.meta.insert(k, v);
            }
            Pending::List(k) => {
                self.lists.insert(k);
            }
        }
    }
}

#[derive(Default, Debug)]
struct Memory {
    /// What reads see: every write so far.
    live: Tables,
    /// What the last flush made durable: all a crash leaves.
    durable: Tables,
    /// Writes since the last flush, in order.
    pending: Vec<Pending>,
}

/// [`Store`] in memory (tests, benchmarks, the simulation). Writes are
/// visible at once; [`Store::flush`] makes them durable, and
/// [`MemoryStore::crashed`] returns the store a restart after a crash would
/// find: only what was flushed.
#[derive(Clone, Default, Debug)]
pub struct MemoryStore(Arc<Mutex<Memory>>);

impl MemoryStore {
    fn with<T>(&self, f: impl FnOnce(&mut Memory) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn write(&self, write: Pending) {
        self.with(|m| {
            let copy = match &write {
                Pending::Log(k, v) => Pending::Log(*k, v.clone()),
                Pending::Doc(k, v) => Pending::Doc(k.clone(), v.clone()),
                Pending::Meta(k, v) => Pending::Meta(k.clone(), v.clone()),
                Pending::List(k) => Pending::List(k.clone()),
            };
            m.live.apply(copy);
            m.pending.push(write);
        });
    }

    /// A new, independent store holding only what the last successful flush
    /// of this one made durable: unflushed appends, document saves and meta
    /// writes are lost, as in a crash.
    pub fn crashed(&self) -> MemoryStore {
        let durable = self.with(|m| m.durable.clone());
        MemoryStore(Arc::new(Mutex::new(Memory {
            live: durable.clone(),
            durable,
            pending: Vec::new(),
        })))
    }

    /// Writes waiting for a flush.
    pub fn unflushed(&self) -> usize {
        self.with(|m| m.pending.len())
    }
}

impl Store for MemoryStore {
    fn append(&self, deltas: &[Delta]) -> StoreResult<()> {
        for d in deltas {
            self.write(Pending::Log(log_key(&d.origin, d.seq), d.encode()));
        }
        Ok(())
    }

    fn deltas_after(
        &self,
        origin: &NodeId,
        after: u64,
        limit: PageLimit,
    ) -> StoreResult<Vec<Vec<u8>>> {
        let Some(range) = log_range(origin, after, &limit) else {
            return Ok(Vec::new());
        };
        self.with(|m| {
            limit.take(
                m.live
                    .log
                    .range(range)
                    .map(|(_, v)| Ok::<_, StoreError>(v.clone())),
            )
        })
    }

    fn log_version_vector(&self) -> StoreResult<VersionVector> {
        self.with(|m| m.live.log.keys().map(|k| parse_log_key(k)).collect())
    }

    fn log_len(&self) -> StoreResult<u64> {
        Ok(self.with(|m| m.live.log.len() as u64))
    }

    fn save_doc(&self, id: &DocId, bytes: &[u8]) -> StoreResult<()> {
        self.write(Pending::Doc(id.to_string(), bytes.to_vec()));
        Ok(())
    }

    fn load_doc(&self, id: &DocId) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.with(|m| m.live.docs.get(&id.to_string()).cloned()))
    }

    fn doc_ids(&self, prefix: &str) -> StoreResult<Vec<DocId>> {
        self.with(|m| {
            m.live
                .docs
                .range(prefix.to_owned()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, _)| parse_doc_id(k.as_bytes()))
                .collect()
        })
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> StoreResult<()> {
        self.write(Pending::Meta(key.to_owned(), value.to_vec()));
        Ok(())
    }

    fn get_meta(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.with(|m| m.live.meta.get(key).cloned()))
    }

    fn list_insert(&self, keys: &[Vec<u8>]) -> StoreResult<()> {
        for k in keys {
            self.write(Pending::List(k.clone()));
        }
        Ok(())
    }

    fn list_range_rev(&self, start: &[u8], end: &[u8], n: usize) -> StoreResult<Vec<Vec<u8>>> {
        if start >= end {
            return Ok(Vec::new());
        }
        Ok(self.with(|m| {
            m.live
                .lists
                .range::<[u8], _>((Bound::Included(start), Bound::Excluded(end)))
                .rev()
                .take(n)
                .cloned()
                .collect()
        }))
    }

    fn flush(&self) -> StoreResult<()> {
        self.with(|m| {
            for write in std::mem::take(&mut m.pending) {
                m.durable.apply(write);
            }
        });
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Faults {
    /// Flushes still to fail.
    fail_flushes: AtomicU64,
    /// Flushes that failed so far.
    failed_flushes: AtomicU64,
}

/// A [`Store`] that injects storage faults into another one, for tests and
/// the simulation. Clones share the armed faults.
///
/// A failed flush returns an error without flushing the inner store: what
/// was written since the last good flush is not durable, and a crash (see
/// [`FaultyStore::crashed`]) loses it.
#[derive(Clone, Debug)]
pub struct FaultyStore<S> {
    inner: S,
    faults: Arc<Faults>,
}

impl<S: Store> FaultyStore<S> {
    /// Wraps `inner` with no fault armed.
    pub fn new(inner: S) -> Self {
        FaultyStore {
            inner,
            faults: Arc::default(),
        }
    }

    /// Makes the next `n` flushes fail (replacing any count still armed).
    pub fn fail_flushes(&self, n: u64) {
        self.faults.fail_flushes.store(n, Ordering::SeqCst);
    }

    /// Flushes that failed by injection so far.
    pub fn failed_flushes(&self) -> u64 {
        self.faults.failed_flushes.load(Ordering::SeqCst)
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }
}

impl FaultyStore<MemoryStore> {
    /// The store a restart after a crash would find (see
    /// [`MemoryStore::crashed`]), with no fault armed.
    pub fn crashed(&self) -> Self {
        FaultyStore::new(self.inner.crashed())
    }
}

impl<S: Store> Store for FaultyStore<S> {
    fn append(&self, deltas: &[Delta]) -> StoreResult<()> {
        self.inner.append(deltas)
    }

    fn deltas_after(
        &self,
        origin: &NodeId,
        after: u64,
        limit: PageLimit,
    ) -> StoreResult<Vec<Vec<u8>>> {
        self.inner.deltas_after(origin, after, limit)
    }

    fn log_version_vector(&self) -> StoreResult<VersionVector> {
        self.inner.log_version_vector()
    }

    fn log_len(&self) -> StoreResult<u64> {
        self.inner.log_len()
    }

    fn save_doc(&self, id: &DocId, bytes: &[u8]) -> StoreResult<()> {
        self.inner.save_doc(id, bytes)
    }

    fn load_doc(&self, id: &DocId) -> StoreResult<Option<Vec<u8>>> {
        self.inner.load_doc(id)
    }

    fn doc_ids(&self, prefix: &str) -> StoreResult<Vec<DocId>> {
        self.inner.doc_ids(prefix)
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> StoreResult<()> {
        self.inner.put_meta(key, value)
    }

    fn get_meta(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        self.inner.get_meta(key)
    }

    fn list_insert(&self, keys: &[Vec<u8>]) -> StoreResult<()> {
        self.inner.list_insert(keys)
    }

    fn list_range_rev(&self, start: &[u8], end: &[u8], n: usize) -> StoreResult<Vec<Vec<u8>>> {
        self.inner.list_range_rev(start, end, n)
    }

    fn flush(&self) -> StoreResult<()> {
        let armed =
            self.faults
                .fail_flushes
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if armed.is_ok() {
            self.faults.failed_flushes.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Injected("flush failed"));
        }
        self.inner.flush()
    }
}

/// The encoded deltas that `theirs` lacks, up to `up_to` (e.g. the durable
/// version vector: nothing above it may be served), per origin in seq order:
/// at most `max_deltas` deltas and `max_bytes` bytes, except that a page
/// always holds at least one delta when there is one to send (so a single
/// delta larger than `max_bytes` cannot stall a peer). The flag is "more":
/// the page was cut short by a bound, ask again.
pub fn read_page<S: Store>(
    store: &S,
    theirs: &VersionVector,
    up_to: &VersionVector,
    max_deltas: usize,
    max_bytes: usize,
) -> StoreResult<(Vec<Vec<u8>>, bool)> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut bytes = 0;
    for (origin, range) in up_to.missing_from(theirs) {
        if out.len() >= max_deltas {
            return Ok((out, true));
        }
        let limit = PageLimit {
            max_deltas: max_deltas - out.len(),
            // `take` always returns one delta; whether it fits is decided below.
            max_bytes: max_bytes.saturating_sub(bytes),
            up_to: *range.end(),
        };
        let page = store.deltas_after(&origin, range.start() - 1, limit)?;
        let wanted = range.end() - range.start() + 1;
        let got = page.len() as u64;
        for delta in page {
            if !out.is_empty() && bytes + delta.len() > max_bytes {
                return Ok((out, true));
            }
            bytes += delta.len();
            out.push(delta);
        }
        if got < wanted {
            // Cut short by a bound (the log holds every seq up to `up_to`).
            return Ok((out, true));
        }
    }
    Ok((out, false))
}

/// Adapts a [`Store`] to the replica's document provider.
#[derive(Clone, Debug)]
pub struct StoreDocs<S>(pub S);

impl<S: Store> hearsay_crdt::DocStore for StoreDocs<S> {
    fn load(&mut self, id: &DocId) -> hearsay_crdt::Result<Option<Vec<u8>>> {
        self.0
            .load_doc(id)
            .map_err(|e| hearsay_crdt::Error::Store(e.to_string()))
    }

    fn save(&mut self, id: &DocId, bytes: Vec<u8>) -> hearsay_crdt::Result<()> {
        self.0
            .save_doc(id, &bytes)
            .map_err(|e| hearsay_crdt::Error::Store(e.to_string()))
    }

    fn ids(&mut self, prefix: &str) -> hearsay_crdt::Result<Vec<DocId>> {
        self.0
            .doc_ids(prefix)
            .map_err(|e| hearsay_crdt::Error::Store(e.to_string()))
    }

    fn list_insert(&mut self, keys: &[Vec<u8>]) -> hearsay_crdt::Result<()> {
        self.0
            .list_insert(keys)
            .map_err(|e| hearsay_crdt::Error::Store(e.to_string()))
    }

    fn list_range_rev(
        &mut self,
        start: &[u8],
        end: &[u8],
        n: usize,
    ) -> hearsay_crdt::Result<Vec<Vec<u8>>> {
        self.0
            .list_range_rev(start, end, n)
            .map_err(|e| hearsay_crdt::Error::Store(e.to_string()))
    }
}

/// The conformance suite every [`Store`] must pass.
///
/// Durability is checked against a modelled crash, not a clean reopen: a
/// clean close may write everything (sled's `Drop` does), which would let a
/// flush that did nothing pass. The suite asks `open` for
/// [`Open::AfterCrash`](conformance::Open::AfterCrash) while the first store
/// is still open and checks that what was flushed is there.
pub mod conformance {
    use super::*;
    use hearsay_crdt::Keypair;

    /// How the suite wants a store opened.
    #[derive(Debug)]
    pub enum Open<'a, S> {
        /// A new, empty store.
        Fresh,
        /// The store a restart would find if the machine died now, while
        /// `previous` is still open: only what reached durable storage (for
        /// sled: a copy of the data directory's files; for [`MemoryStore`]:
        /// [`MemoryStore::crashed`]).
        AfterCrash(&'a S),
    }

    fn deltas(key: &Keypair, seqs: std::ops::RangeInclusive<u64>) -> Vec<Delta> {
        seqs.map(|s| Delta::sign(key, s, DocId::Public(s), vec![s as u8; 10], s).unwrap())
            .collect()
    }

    const ALL: PageLimit = PageLimit {
        max_deltas: usize::MAX,
        max_bytes: usize::MAX,
        up_to: u64::MAX,
    };

    /// Runs every check against stores made by `open`.
    pub fn run<S: Store>(mut open: impl FnMut(Open<'_, S>) -> S) {
        let a = Keypair::from_secret([1; 32]);
        let b = Keypair::from_secret([2; 32]);
        let store = open(Open::Fresh);
        assert_eq!(store.log_version_vector().unwrap(), VersionVector::new());
        assert_eq!(store.log_len().unwrap(), 0);
        // Log: per-origin order, ranges, pages.
        let da = deltas(&a, 1..=20);
        store.append(&da[..10]).unwrap();
        store.append(&da[10..]).unwrap();
        store.append(&deltas(&b, 1..=3)).unwrap();
        let vv = store.log_version_vector().unwrap();
        assert_eq!(vv.get(&a.id()), 20);
        assert_eq!(vv.get(&b.id()), 3);
        assert_eq!(vv.len(), 2);
        assert_eq!(store.log_len().unwrap(), 23);
        let after5 = store.deltas_after(&a.id(), 5, ALL).unwrap();
        assert_eq!(after5.len(), 15);
        assert_eq!(Delta::decode(&after5[0]).unwrap().seq, 6);
        assert_eq!(Delta::decode(&after5[14]).unwrap(), da[19]);
        let page = store
            .deltas_after(
                &a.id(),
                0,
                PageLimit {
                    max_deltas: 4,
                    max_bytes: usize::MAX,
                    up_to: u64::MAX,
                },
            )
            .unwrap();
        assert_eq!(page.len(), 4);
        let one = da[0].encode().len();
        let page = store
            .deltas_after(
                &a.id(),
                0,
                PageLimit {
                    max_deltas: 100,
                    max_bytes: one * 3,
                    up_to: u64::MAX,
                },
            )
            .unwrap();
        assert_eq!(page.len(), 3);
        let page = store
            .deltas_after(
                &a.id(),
                0,
                PageLimit {
                    max_deltas: 100,
                    max_bytes: 1,
                    up_to: u64::MAX,
                },
            )
            .unwrap();
        assert_eq!(page.len(), 1, "a page always makes progress");
        assert!(store.deltas_after(&b.id(), 3, ALL).unwrap().is_empty());
        assert!(
            store
                .deltas_after(&a.id(), 9, PageLimit { up_to: 3, ..ALL })
                .unwrap()
                .is_empty()
        );
        let bounded = PageLimit { up_to: 7, ..ALL };
        let upto7 = store.deltas_after(&a.id(), 5, bounded).unwrap();
        assert_eq!(upto7, vec![da[5].encode(), da[6].encode()]);
        assert!(
            store
                .deltas_after(&Keypair::from_secret([3; 32]).id(), 0, ALL)
                .unwrap()
                .is_empty()
        );
        // Re-appending a delta is idempotent.
        store.append(&da[..1]).unwrap();
        assert_eq!(store.log_len().unwrap(), 23);

        // Documents and meta.
        let p1 = DocId::Public(1);
        let p2 = DocId::Public(2);
        let t = DocId::Timeline("ann".parse().unwrap(), 2);
        store.save_doc(&p1, b"one").unwrap();
        store.save_doc(&p2, b"two").unwrap();
        store.save_doc(&t, b"tl").unwrap();
        store.save_doc(&p1, b"one again").unwrap();
        assert_eq!(
            store.load_doc(&p1).unwrap().as_deref(),
            Some(&b"one again"[..])
        );
        assert_eq!(store.load_doc(&DocId::Public(3)).unwrap(), None);
        assert_eq!(
            store.doc_ids("public/").unwrap(),
            vec![p1.clone(), p2.clone()]
        );
        assert_eq!(store.doc_ids("timeline/").unwrap(), vec![t.clone()]);
        assert_eq!(store.doc_ids("").unwrap().len(), 3);
        store.put_meta("k", b"v").unwrap();
        assert_eq!(store.get_meta("k").unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(store.get_meta("missing").unwrap(), None);

        // Post lists: an ordered set, read greatest first within a range.
        let keys: Vec<Vec<u8>> = [&b"a1"[..], b"a2", b"a3", b"b1"]
            .iter()
            .map(|k| k.to_vec())
            .collect();
        store.list_insert(&keys[2..]).unwrap();
        store.list_insert(&keys).unwrap();
        assert_eq!(
            store.list_range_rev(b"a", b"b", 10).unwrap(),
            vec![keys[2].clone(), keys[1].clone(), keys[0].clone()]
        );
        assert_eq!(
            store.list_range_rev(b"a", b"a3", 1).unwrap(),
            vec![keys[1].clone()]
        );
        assert!(store.list_range_rev(b"b", b"a", 10).unwrap().is_empty());
        assert_eq!(store.list_range_rev(b"", b"z", 10).unwrap().len(), 4);

        // Anti-entropy pages.
        read_pages(&store, &a, &b, &da);

        // Durability: everything flushed is there after a crash.
        store.flush().unwrap();
        let crashed = open(Open::AfterCrash(&store));
        assert_eq!(
            crashed.log_version_vector().unwrap(),
            vv,
            "flushed log entries lost in a crash"
        );
        assert_eq!(
            crashed.deltas_after(&a.id(), 19, ALL).unwrap(),
            vec![da[19].encode()]
        );
        assert_eq!(
            crashed.load_doc(&p1).unwrap().as_deref(),
            Some(&b"one again"[..]),
            "flushed document lost in a crash"
        );
        assert_eq!(crashed.doc_ids("").unwrap().len(), 3);
        assert_eq!(
            crashed.get_meta("k").unwrap().as_deref(),
            Some(&b"v"[..]),
            "flushed meta lost in a crash"
        );
        assert_eq!(
            crashed.list_range_rev(b"", b"z", 10).unwrap().len(),
            4,
            "flushed list keys lost in a crash"
        );
        drop(crashed);

        // A second group commit on the same store survives too.
        let more = deltas(&a, 21..=25);
        store.append(&more).unwrap();
        store.save_doc(&p2, b"two again").unwrap();
        store.put_meta("k", b"v2").unwrap();
        store.flush().unwrap();
        let crashed = open(Open::AfterCrash(&store));
        assert_eq!(crashed.log_version_vector().unwrap().get(&a.id()), 25);
        assert_eq!(
            crashed.deltas_after(&a.id(), 20, ALL).unwrap(),
            more.iter().map(Delta::encode).collect::<Vec<_>>()
        );
        assert_eq!(
            crashed.load_doc(&p2).unwrap().as_deref(),
            Some(&b"two again"[..])
        );
        assert_eq!(crashed.get_meta("k").unwrap().as_deref(), Some(&b"v2"[..]));
        // The recovered store takes writes and serves them.
        crashed.append(&deltas(&b, 4..=4)).unwrap();
        crashed.flush().unwrap();
        assert_eq!(crashed.log_version_vector().unwrap().get(&b.id()), 4);
    }

    /// [`read_page`]: what a peer lacks, bounded by the durable vector and
    /// the page limits, per origin in seq order, with an honest "more".
    fn read_pages<S: Store>(store: &S, a: &Keypair, b: &Keypair, da: &[Delta]) {
        let enc = |ds: &[Delta]| ds.iter().map(Delta::encode).collect::<Vec<_>>();
        let db = deltas(b, 1..=3);
        let mut theirs = VersionVector::new();
        theirs.set(a.id(), 5);
        let mut up_to = VersionVector::new();
        up_to.set(a.id(), 20);
        up_to.set(b.id(), 3);
        let mut all = enc(&da[5..]);
        all.extend(enc(&db));
        all.sort_by_key(|e| {
            let d = Delta::decode(e).unwrap();
            (d.origin, d.seq)
        });
        let (page, more) = read_page(store, &theirs, &up_to, 100, usize::MAX).unwrap();
        assert_eq!((page.len(), more), (18, false));
        assert_eq!(page, all, "per origin, in seq order");
        // Bounded by count: the page is full, ask again.
        let (page, more) = read_page(store, &theirs, &up_to, 10, usize::MAX).unwrap();
        assert_eq!(page, all[..10]);
        assert!(more);
        let (page, more) = read_page(store, &theirs, &up_to, 18, usize::MAX).unwrap();
        assert_eq!((page.len(), more), (18, false));
        // Bounded by bytes; a page always makes progress.
        let one = da[0].encode().len();
        let (page, more) = read_page(store, &theirs, &up_to, 100, one * 3).unwrap();
        assert_eq!((page.len(), more), (3, true));
        let (page, more) = read_page(store, &theirs, &up_to, 100, 1).unwrap();
        assert_eq!((page.len(), more), (1, true));
        // Nothing above `up_to` is served, whatever the log holds.
        let mut low = VersionVector::new();
        low.set(a.id(), 7);
        let (page, more) = read_page(store, &theirs, &low, 100, usize::MAX).unwrap();
        assert_eq!((page, more), (enc(&da[5..7]), false));
        // Caught up: nothing to send.
        let (page, more) = read_page(store, &up_to, &up_to, 100, usize::MAX).unwrap();
        assert!(page.is_empty() && !more);
    }
}

/// Copies the files of a directory tree (a sled data directory) as they are
/// on disk now.
#[cfg(test)]
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::conformance::Open;
    use super::*;
    use hearsay_crdt::Keypair;

    #[test]
    fn sled_store_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let mut copies = Vec::new();
        conformance::run(|mode| match mode {
            Open::Fresh => SledStore::open(dir.path()).unwrap(),
            Open::AfterCrash(_) => {
                // Only the files as they are on disk: the first handle is
                // still open, so nothing is written on its behalf.
                let copy = tempfile::tempdir().unwrap();
                copy_dir(dir.path(), copy.path()).unwrap();
                let store = SledStore::open(copy.path()).unwrap();
                copies.push(copy);
                store
            }
        });
    }

    #[test]
    fn memory_store_conforms() {
        conformance::run(|mode: Open<'_, MemoryStore>| match mode {
            Open::Fresh => MemoryStore::default(),
            Open::AfterCrash(previous) => previous.crashed(),
        });
    }

    #[test]
    fn faulty_store_conforms_when_no_fault_is_armed() {
        conformance::run(|mode: Open<'_, FaultyStore<MemoryStore>>| match mode {
            Open::Fresh => FaultyStore::new(MemoryStore::default()),
            Open::AfterCrash(previous) => previous.crashed(),
        });
    }

    fn delta(seq: u64) -> Delta {
        let key = Keypair::from_secret([7; 32]);
        Delta::sign(&key, seq, DocId::Public(seq), vec![1, 2, 3], seq).unwrap()
    }

    #[test]
    fn a_crash_loses_what_was_not_flushed() {
        let store = MemoryStore::default();
        store.append(&[delta(1)]).unwrap();
        store.put_meta("k", b"1").unwrap();
        store.flush().unwrap();
        store.append(&[delta(2)]).unwrap();
        store.save_doc(&DocId::Public(1), b"doc").unwrap();
        store.put_meta("k", b"2").unwrap();
        store.list_insert(&[b"p1".to_vec()]).unwrap();
        assert_eq!(store.unflushed(), 4);
        // Reads see everything; a crash keeps only the flushed state.
        assert_eq!(store.log_len().unwrap(), 2);
        let crashed = store.crashed();
        assert_eq!(crashed.log_len().unwrap(), 1);
        assert_eq!(crashed.load_doc(&DocId::Public(1)).unwrap(), None);
        assert_eq!(crashed.get_meta("k").unwrap().as_deref(), Some(&b"1"[..]));
        assert!(crashed.list_range_rev(b"", b"z", 1).unwrap().is_empty());
        assert_eq!(store.list_range_rev(b"", b"z", 1).unwrap().len(), 1);
        assert_eq!(crashed.unflushed(), 0);
    }

    #[test]
    fn a_failed_flush_makes_nothing_durable() {
        let store = FaultyStore::new(MemoryStore::default());
        store.append(&[delta(1)]).unwrap();
        store.fail_flushes(2);
        assert!(matches!(store.flush(), Err(StoreError::Injected(_))));
        assert!(store.flush().is_err());
        assert_eq!(store.failed_flushes(), 2);
        assert_eq!(store.crashed().log_len().unwrap(), 0, "nothing durable");
        // Disarmed: the next flush works and makes the earlier writes durable.
        store.flush().unwrap();
        assert_eq!(store.crashed().log_len().unwrap(), 1);
    }
}
