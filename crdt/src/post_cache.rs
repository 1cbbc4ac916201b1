//! Posts as last read from their documents.

use std::collections::HashMap;

use crate::ids::PostId;

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

    fn id(ms: u64) -> PostId {
        PostId::client(ms, [7; 10])
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
}
