//! Sorted post ids of the bucket documents read lately.
//!
//! A bucket document (`public/<bucket>`, `timeline/<user>/<bucket>`) is an
//! automerge map from post id to creation time. Automerge lists a map's keys
//! only front to back, as text, so a page of the newest posts read straight
//! from the document costs a parse and a sort of every key in the bucket: a
//! read grows with the bucket (about 10 ms at 7,000 posts in a minute). The
//! index keeps each bucket's ids parsed and sorted once, so a page costs
//! O(page · log bucket). It is kept exact: local posts and remote changes
//! that only add keys to the bucket's root map are added as they are
//! applied; any other change (a delete, a nested object, a batch that had to
//! be applied one change at a time) drops the bucket's entry, to be rebuilt
//! from the document on its next read. Memory is bounded by a total count
//! of ids, the least recently read buckets leaving first.

use std::collections::{BTreeSet, HashMap};

use automerge::{Change, legacy};

use crate::ids::{DocId, PostId};

/// Ids held over all buckets before the least recently read ones leave
/// (about 32 bytes each).
pub const MAX_INDEXED_IDS: usize = 1 << 20;

#[derive(Debug, Default)]
pub struct BucketIndex {
    /// Per bucket document: when it was last read, and its ids.
    buckets: HashMap<DocId, (u64, BTreeSet<PostId>)>,
    ids: usize,
    clock: u64,
    max_ids: usize,
}

impl BucketIndex {
    pub fn new(max_ids: usize) -> Self {
        BucketIndex {
            max_ids,
            ..BucketIndex::default()
        }
    }

    /// At most `n` ids of the bucket strictly older than `before`, newest
    /// first; `None` when the bucket is not indexed.
    pub fn page(&mut self, doc: &DocId, before: Option<PostId>, n: usize) -> Option<Vec<PostId>> {
        self.clock += 1;
        let (used, ids) = self.buckets.get_mut(doc)?;
        *used = self.clock;
        let page = match before {
            Some(b) => ids.range(..b).rev().take(n).copied().collect(),
            None => ids.iter().rev().take(n).copied().collect(),
        };
        Some(page)
    }

    /// Indexes a bucket read whole from its document.
    pub fn insert(&mut self, doc: DocId, ids: BTreeSet<PostId>) {
        self.forget(&doc);
        self.clock += 1;
        self.ids += ids.len();
        self.buckets.insert(doc, (self.clock, ids));
        // Make room, least recently read first, never dropping the one just
        // read.
        while self.ids > self.max_ids && self.buckets.len() > 1 {
            let oldest = self
                .buckets
                .iter()
                .min_by_key(|(_, (used, _))| *used)
                .map(|(d, _)| d.clone());
            match oldest {
                Some(d) => self.forget(&d),
                None => break,
            }
        }
    }

    /// Adds a post id to an indexed bucket (a no-op for one not indexed).
    pub fn add(&mut self, doc: &DocId, id: PostId) {
        if let Some((_, ids)) = self.buckets.get_mut(doc)
            && ids.insert(id)
        {
            self.ids += 1;
        }
    }

    /// Drops a bucket's entry; its next read rebuilds it.
    pub fn forget(&mut self, doc: &DocId) {
        if let Some((_, ids)) = self.buckets.remove(doc) {
            self.ids -= ids.len();
        }
    }

    /// Follows a change applied to a bucket document: adds the post ids it
    /// puts in the root map, or forgets the bucket if it does anything else.
    pub fn applied(&mut self, doc: &DocId, change: &Change) {
        if !self.buckets.contains_key(doc) {
            return;
        }
        let expanded = change.decode();
        for op in &expanded.operations {
            let added = match (&op.action, &op.key, &op.obj) {
                (legacy::OpType::Put(_), legacy::Key::Map(key), legacy::ObjectId::Root) => {
                    key.parse::<PostId>().ok()
                }
                _ => None,
            };
            match added {
                Some(id) => self.add(doc, id),
                None => {
                    self.forget(doc);
                    return;
                }
            }
        }
    }

    /// Ids held over all buckets.
    pub fn len(&self) -> usize {
        self.ids
    }

    pub fn is_empty(&self) -> bool {
        self.ids == 0
    }
}

/// Posts as last read from their documents, so a page of posts does not
/// read every post's automerge document again (about 30 µs each). The
/// replica drops a post's entry whenever its document changes; when full,
/// the least recently read half leaves.
#[derive(Debug)]
pub struct PostCache {
    posts: HashMap<PostId, (u64, crate::docs::Post)>,
    clock: u64,
    max: usize,
}

impl PostCache {
    pub fn new(max: usize) -> Self {
        PostCache {
            posts: HashMap::new(),
            clock: 0,
            max: max.max(2),
        }
    }

    pub fn get(&mut self, id: &PostId) -> Option<crate::docs::Post> {
        self.clock += 1;
        let (used, post) = self.posts.get_mut(id)?;
        *used = self.clock;
        Some(post.clone())
    }

    pub fn put(&mut self, post: crate::docs::Post) {
        if self.posts.len() >= self.max {
            let mut uses: Vec<u64> = self.posts.values().map(|(u, _)| *u).collect();
            let mid = uses.len() / 2;
            let (_, cut, _) = uses.select_nth_unstable(mid);
            let cut = *cut;
            self.posts.retain(|_, (u, _)| *u > cut);
        }
        self.clock += 1;
        self.posts.insert(post.id, (self.clock, post));
    }

    pub fn forget(&mut self, id: &PostId) {
        self.posts.remove(id);
    }

    pub fn len(&self) -> usize {
        self.posts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.posts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docs::bucket;
    use automerge::{Automerge, ROOT, transaction::Transactable};

    fn id(ms: u64) -> PostId {
        PostId::client(ms, [7; 10])
    }

    fn set(ms: &[u64]) -> BTreeSet<PostId> {
        ms.iter().map(|m| id(*m)).collect()
    }

    #[test]
    fn the_post_cache_keeps_the_recently_read_half_when_full() {
        let post = |ms| crate::docs::Post {
            id: id(ms),
            author: crate::ids::UserName::new("ann").unwrap(),
            author_key: None,
            signed: false,
            body: format!("{ms}"),
            reply_to: None,
            created_at: ms,
            edited_at: None,
            deleted: false,
        };
        let mut cache = PostCache::new(4);
        for ms in 0..4 {
            cache.put(post(ms));
        }
        assert!(cache.get(&id(0)).is_some());
        cache.put(post(4));
        assert!(cache.len() <= 4);
        assert_eq!(cache.get(&id(0)).map(|p| p.body), Some("0".into()));
        assert!(cache.get(&id(4)).is_some());
        assert!(cache.get(&id(1)).is_none());
        cache.forget(&id(4));
        assert!(cache.get(&id(4)).is_none());
    }

    #[test]
    fn pages_newest_first_below_a_cursor() {
        let mut index = BucketIndex::new(100);
        let doc = DocId::Public(1);
        assert_eq!(index.page(&doc, None, 10), None);
        index.insert(doc.clone(), set(&[1, 2, 3, 4, 5]));
        assert_eq!(index.page(&doc, None, 2), Some(vec![id(5), id(4)]));
        assert_eq!(
            index.page(&doc, Some(id(4)), 10),
            Some(vec![id(3), id(2), id(1)])
        );
        index.add(&doc, id(6));
        assert_eq!(index.page(&doc, None, 1), Some(vec![id(6)]));
        assert_eq!(index.len(), 6);
        // Adding to a bucket not indexed does nothing.
        index.add(&DocId::Public(2), id(9));
        assert_eq!(index.len(), 6);
    }

    #[test]
    fn the_least_recently_read_bucket_leaves_when_full() {
        let mut index = BucketIndex::new(5);
        let (a, b, c) = (DocId::Public(1), DocId::Public(2), DocId::Public(3));
        index.insert(a.clone(), set(&[1, 2]));
        index.insert(b.clone(), set(&[3, 4]));
        index.page(&a, None, 1);
        index.insert(c.clone(), set(&[5, 6]));
        // b was read least recently.
        assert!(index.page(&b, None, 1).is_none());
        assert!(index.page(&a, None, 1).is_some() && index.page(&c, None, 1).is_some());
        assert_eq!(index.len(), 4);
        // One bucket larger than the bound is still kept, alone.
        index.insert(b.clone(), set(&[10, 11, 12, 13, 14, 15]));
        assert_eq!(index.len(), 6);
        assert_eq!(index.page(&b, None, 10).map(|p| p.len()), Some(6));
    }

    #[test]
    fn follows_changes_that_add_and_forgets_on_anything_else() {
        let doc_id = DocId::Public(1);
        let mut index = BucketIndex::new(100);
        index.insert(doc_id.clone(), BTreeSet::new());
        let mut doc = Automerge::new();
        bucket::add(&mut doc, id(1)).unwrap();
        index.applied(&doc_id, &doc.get_last_local_change().unwrap().clone());
        assert_eq!(index.page(&doc_id, None, 10), Some(vec![id(1)]));
        // A delete in a bucket: rebuilt from the document next time.
        let mut tx = doc.transaction();
        tx.delete(ROOT, id(1).to_string()).unwrap();
        tx.commit();
        index.applied(&doc_id, &doc.get_last_local_change().unwrap().clone());
        assert_eq!(index.page(&doc_id, None, 10), None);
        assert!(index.is_empty());
    }
}
