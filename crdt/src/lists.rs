//! The post lists a replica derives from its post documents.
//!
//! Every post document names its author and carries its id, whose first six
//! bytes are the creation time. The list of all posts and each author's list
//! are therefore facts about the set of post documents, not data of their
//! own: they need no CRDT, no delta and no signature. A replica keeps them as
//! keys of an ordered set in its [`DocStore`](crate::DocStore), inserted
//! whenever a post document gains its content (locally or from a peer), and
//! never removed (a deleted post stays listed and is skipped when read). The
//! inserts are idempotent, so replaying the log after a crash repairs any
//! list the crash cut short.
//!
//! Keys, ordered so that a list is one range and newest is last:
//! - every post: `p` + id (16 bytes);
//! - one author's posts: `u` + name + `/` + id. `/` never occurs in a
//!   [`UserName`], so no author's range holds another's keys.

use crate::ids::{PostId, UserName};

/// A list of posts, newest first when read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PostList<'a> {
    /// Every post the replica holds.
    All,
    /// The posts of one author.
    By(&'a UserName),
}

/// Present once a store's lists hold every post of its documents (written
/// when a replica first opens a store, after deriving the lists of the
/// posts already in it).
pub(crate) const DERIVED_MARKER: &[u8] = b"!lists-v1";

const ALL: u8 = b'p';
const BY: u8 = b'u';
const SEP: u8 = b'/';

fn prefix(list: PostList<'_>) -> Vec<u8> {
    match list {
        PostList::All => vec![ALL],
        PostList::By(user) => {
            let mut k = Vec::with_capacity(user.as_str().len() + 18);
            k.push(BY);
            k.extend_from_slice(user.as_str().as_bytes());
            k.push(SEP);
            k
        }
    }
}

/// The keys under which a post by `author` is listed.
pub fn keys(author: &UserName, id: PostId) -> [Vec<u8>; 2] {
    let mut all = prefix(PostList::All);
    all.extend_from_slice(&id.0);
    let mut by = prefix(PostList::By(author));
    by.extend_from_slice(&id.0);
    [all, by]
}

/// The key range `[start, end)` of `list`'s posts strictly older than
/// `before`.
pub fn range(list: PostList<'_>, before: Option<PostId>) -> (Vec<u8>, Vec<u8>) {
    let start = prefix(list);
    let mut end = start.clone();
    match before {
        Some(b) => end.extend_from_slice(&b.0),
        // The prefix's last byte plus one: just past every key under it.
        None => *end.last_mut().expect("prefixes are not empty") += 1,
    }
    (start, end)
}

/// The post id a list key ends with.
pub fn id_of(key: &[u8]) -> Option<PostId> {
    let at = key.len().checked_sub(16)?;
    Some(PostId(key[at..].try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64) -> PostId {
        PostId::client(ms, [1; 10])
    }

    #[test]
    fn a_list_is_one_range_and_authors_do_not_overlap() {
        let ann = UserName::new("ann").unwrap();
        let ann_b = UserName::new("ann.b").unwrap();
        let [all, by_ann] = keys(&ann, id(5));
        let [_, by_ann_b] = keys(&ann_b, id(5));
        let within = |k: &[u8], (s, e): (Vec<u8>, Vec<u8>)| s.as_slice() <= k && k < e.as_slice();
        assert!(within(&all, range(PostList::All, None)));
        assert!(within(&by_ann, range(PostList::By(&ann), None)));
        assert!(!within(&by_ann_b, range(PostList::By(&ann), None)));
        assert!(!within(&by_ann, range(PostList::By(&ann_b), None)));
        assert!(!within(&by_ann, range(PostList::All, None)));
        assert!(within(&by_ann, range(PostList::By(&ann), Some(id(6)))));
        assert!(!within(&by_ann, range(PostList::By(&ann), Some(id(5)))));
        assert_eq!(id_of(&by_ann), Some(id(5)));
        assert_eq!(id_of(&all), Some(id(5)));
        assert!(DERIVED_MARKER < range(PostList::All, None).0.as_slice());
    }
}
