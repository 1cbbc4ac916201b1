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

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex};

use hearsay_crdt::{Delta, DocId, NodeId, VersionVector};

/// Storage failures. Always fatal for the write that hit them.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt store: {0}")]
    Corrupt(String),
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
}

impl SledStore {
    pub fn open(dir: &Path) -> StoreResult<Self> {
        // Durability is ours (group commit), not sled's timer.
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(64 << 20)
            .flush_every_ms(None)
            .open()?;
        Ok(SledStore {
            log: db.open_tree("log")?,
            docs: db.open_tree("docs")?,
            meta: db.open_tree("meta")?,
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

    fn flush(&self) -> StoreResult<()> {
        self.db.flush()?;
        Ok(())
    }
}

#[derive(Default, Debug)]
struct Memory {
    log: BTreeMap<[u8; 40], Vec<u8>>,
    docs: BTreeMap<String, Vec<u8>>,
    meta: BTreeMap<String, Vec<u8>>,
}

/// [`Store`] in memory (tests, benchmarks); `flush` is a no-op.
#[derive(Clone, Default, Debug)]
pub struct MemoryStore(Arc<Mutex<Memory>>);

impl MemoryStore {
    fn with<T>(&self, f: impl FnOnce(&mut Memory) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Store for MemoryStore {
    fn append(&self, deltas: &[Delta]) -> StoreResult<()> {
        self.with(|m| {
            for d in deltas {
                m.log.insert(log_key(&d.origin, d.seq), d.encode());
            }
        });
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
                m.log
                    .range(range)
                    .map(|(_, v)| Ok::<_, StoreError>(v.clone())),
            )
        })
    }

    fn log_version_vector(&self) -> StoreResult<VersionVector> {
        self.with(|m| m.log.keys().map(|k| parse_log_key(k)).collect())
    }

    fn log_len(&self) -> StoreResult<u64> {
        Ok(self.with(|m| m.log.len() as u64))
    }

    fn save_doc(&self, id: &DocId, bytes: &[u8]) -> StoreResult<()> {
        self.with(|m| m.docs.insert(id.to_string(), bytes.to_vec()));
        Ok(())
    }

    fn load_doc(&self, id: &DocId) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.with(|m| m.docs.get(&id.to_string()).cloned()))
    }

    fn doc_ids(&self, prefix: &str) -> StoreResult<Vec<DocId>> {
        self.with(|m| {
            m.docs
                .range(prefix.to_owned()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, _)| parse_doc_id(k.as_bytes()))
                .collect()
        })
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> StoreResult<()> {
        self.with(|m| m.meta.insert(key.to_owned(), value.to_vec()));
        Ok(())
    }

    fn get_meta(&self, key: &str) -> StoreResult<Option<Vec<u8>>> {
        Ok(self.with(|m| m.meta.get(key).cloned()))
    }

    fn flush(&self) -> StoreResult<()> {
        Ok(())
    }
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
}

/// The conformance suite every [`Store`] must pass. `reopen` must return a
/// store over the same durable state (for sled: the same directory after the
/// previous handle is dropped).
pub mod conformance {
    use super::*;
    use hearsay_crdt::Keypair;

    fn deltas(key: &Keypair, seqs: std::ops::RangeInclusive<u64>) -> Vec<Delta> {
        seqs.map(|s| Delta::sign(key, s, DocId::Public(s), vec![s as u8; 10], s).unwrap())
            .collect()
    }

    const ALL: PageLimit = PageLimit {
        max_deltas: usize::MAX,
        max_bytes: usize::MAX,
        up_to: u64::MAX,
    };

    /// Runs every check against stores made by `open` (called with `true` for
    /// a fresh store and `false` to reopen the previous one after a flush).
    pub fn run<S: Store>(mut open: impl FnMut(bool) -> S) {
        let a = Keypair::from_secret([1; 32]);
        let b = Keypair::from_secret([2; 32]);
        let store = open(true);
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

        // Durability: everything flushed is there after a reopen.
        store.flush().unwrap();
        drop(store);
        let store = open(false);
        assert_eq!(store.log_version_vector().unwrap(), vv);
        assert_eq!(
            store.deltas_after(&a.id(), 19, ALL).unwrap(),
            vec![da[19].encode()]
        );
        assert_eq!(
            store.load_doc(&p1).unwrap().as_deref(),
            Some(&b"one again"[..])
        );
        assert_eq!(store.get_meta("k").unwrap().as_deref(), Some(&b"v"[..]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sled_store_conforms() {
        let dir = tempfile::tempdir().unwrap();
        conformance::run(|_| SledStore::open(dir.path()).unwrap());
    }

    #[test]
    fn memory_store_conforms() {
        let mut keep: Option<MemoryStore> = None;
        conformance::run(|fresh| {
            if fresh || keep.is_none() {
                keep = Some(MemoryStore::default());
            }
            keep.clone().unwrap()
        });
    }
}
