//! Where a [`Replica`](crate::Replica) keeps its documents.
//!
//! The replica never owns every document: it keeps a bounded cache of hot
//! ones and asks a [`DocStore`] for the rest, handing back the saved bytes of
//! a changed document when it leaves the cache or at a checkpoint. The node
//! implements this over sled; [`MemoryDocs`] serves tests and benchmarks.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use automerge::{ActorId, Automerge};

use crate::error::{Error, Result};
use crate::ids::DocId;

/// Persistent home of saved documents.
pub trait DocStore {
    /// The saved bytes of `id`, if any.
    fn load(&mut self, id: &DocId) -> Result<Option<Vec<u8>>>;
    /// Stores the saved bytes of `id` (durability is the caller's business:
    /// a checkpoint's version vector is only recorded after a flush).
    fn save(&mut self, id: &DocId, bytes: Vec<u8>) -> Result<()>;
    /// Ids of the stored documents whose text form starts with `prefix`.
    fn ids(&mut self, prefix: &str) -> Result<Vec<DocId>>;
    /// Adds keys to the ordered set that holds the post lists
    /// ([`crate::lists`]). Idempotent; durable like a save.
    fn list_insert(&mut self, keys: &[Vec<u8>]) -> Result<()>;
    /// At most `n` keys of the set in `[start, end)`, greatest first.
    fn list_range_rev(&mut self, start: &[u8], end: &[u8], n: usize) -> Result<Vec<Vec<u8>>>;
}

/// An in-memory [`DocStore`].
#[derive(Default, Debug, Clone)]
pub struct MemoryDocs {
    pub docs: BTreeMap<String, Vec<u8>>,
    pub lists: BTreeSet<Vec<u8>>,
}

impl DocStore for MemoryDocs {
    fn load(&mut self, id: &DocId) -> Result<Option<Vec<u8>>> {
        Ok(self.docs.get(&id.to_string()).cloned())
    }

    fn save(&mut self, id: &DocId, bytes: Vec<u8>) -> Result<()> {
        self.docs.insert(id.to_string(), bytes);
        Ok(())
    }

    fn ids(&mut self, prefix: &str) -> Result<Vec<DocId>> {
        self.docs
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.parse())
            .collect()
    }

    fn list_insert(&mut self, keys: &[Vec<u8>]) -> Result<()> {
        self.lists.extend(keys.iter().cloned());
        Ok(())
    }

    fn list_range_rev(&mut self, start: &[u8], end: &[u8], n: usize) -> Result<Vec<Vec<u8>>> {
        if start >= end {
            return Ok(Vec::new());
        }
        Ok(self
            .lists
            .range::<[u8], _>((
                std::ops::Bound::Included(start),
                std::ops::Bound::Excluded(end),
            ))
            .rev()
            .take(n)
            .cloned()
            .collect())
    }
}

struct Slot {
    doc: Automerge,
    dirty: bool,
    tick: u64,
}

/// A bounded LRU of loaded documents, writing back dirty ones on eviction.
pub(crate) struct DocCache {
    slots: HashMap<DocId, Slot>,
    order: BTreeMap<u64, DocId>,
    tick: u64,
    capacity: usize,
    actor: ActorId,
}

impl DocCache {
    pub(crate) fn new(capacity: usize, actor: ActorId) -> Self {
        DocCache {
            slots: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            capacity: capacity.max(1),
            actor,
        }
    }

    /// The document `id`, loading it from `store`; `None` if it does not
    /// exist and `create` is false.
    pub(crate) fn get<S: DocStore>(
        &mut self,
        store: &mut S,
        id: &DocId,
        create: bool,
    ) -> Result<Option<&mut Automerge>> {
        self.tick += 1;
        let tick = self.tick;
        if let Some(slot) = self.slots.get_mut(id) {
            self.order.remove(&slot.tick);
            self.order.insert(tick, id.clone());
            slot.tick = tick;
            return Ok(self.slots.get_mut(id).map(|s| &mut s.doc));
        }
        let doc = match store.load(id)? {
            Some(bytes) => Automerge::load(&bytes)
                .map_err(|e| Error::Store(format!("stored document {id} does not load: {e}")))?,
            None if create => Automerge::new(),
            None => return Ok(None),
        }
        .with_actor(self.actor.clone());
        self.evict_to(store, self.capacity - 1)?;
        self.order.insert(tick, id.clone());
        self.slots.insert(
            id.clone(),
            Slot {
                doc,
                dirty: false,
                tick,
            },
        );
        Ok(self.slots.get_mut(id).map(|s| &mut s.doc))
    }

    pub(crate) fn mark_dirty(&mut self, id: &DocId) {
        if let Some(slot) = self.slots.get_mut(id) {
            slot.dirty = true;
        }
    }

    fn evict_to<S: DocStore>(&mut self, store: &mut S, len: usize) -> Result<()> {
        while self.slots.len() > len {
            let Some((_, id)) = self.order.pop_first() else {
                break;
            };
            if let Some(slot) = self.slots.remove(&id)
                && slot.dirty
            {
                store.save(&id, slot.doc.save())?;
            }
        }
        Ok(())
    }

    /// Saves every dirty document to `store`.
    pub(crate) fn flush<S: DocStore>(&mut self, store: &mut S) -> Result<usize> {
        let mut saved = 0;
        for (id, slot) in self.slots.iter_mut().filter(|(_, s)| s.dirty) {
            store.save(id, slot.doc.save())?;
            slot.dirty = false;
            saved += 1;
        }
        Ok(saved)
    }

    /// Ids of cached documents that the store may not list yet: the dirty
    /// ones. A clean slot was loaded from the store, has been saved to it, or
    /// is an empty document created for a local operation that then failed
    /// (which must not count as a document).
    pub(crate) fn cached_ids(&self) -> impl Iterator<Item = &DocId> {
        self.slots.iter().filter(|(_, s)| s.dirty).map(|(id, _)| id)
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }
}
