//! Home timelines: the page is right (newest first, `before` pages without
//! duplicates or gaps, deleted posts left out), and the work per page is
//! bounded by the page, not by how many users the reader follows.

use std::cell::Cell;
use std::rc::Rc;

use hearsay_crdt::{
    BUCKET_MS, DocId, DocStore, Keypair, MemoryDocs, NewPost, Post, PostId, Replica, ReplicaConfig,
    UserName,
};

const T0: u64 = 1_700_000_000_000;

fn name(s: &str) -> UserName {
    UserName::new(s).unwrap()
}

fn post<S: DocStore>(r: &mut Replica<S>, author: &str, body: &str, at_ms: u64) -> Post {
    let new = NewPost {
        author: name(author),
        body: body.into(),
        reply_to: None,
    };
    r.create_post(&new, None, at_ms).unwrap().0
}

/// A document store that counts the documents loaded from it and the list
/// ranges read.
#[derive(Debug)]
struct Counting {
    docs: MemoryDocs,
    loads: Rc<Cell<usize>>,
    list_reads: Rc<Cell<usize>>,
}

impl DocStore for Counting {
    fn load(&mut self, id: &DocId) -> hearsay_crdt::Result<Option<Vec<u8>>> {
        self.loads.set(self.loads.get() + 1);
        self.docs.load(id)
    }
    fn save(&mut self, id: &DocId, bytes: Vec<u8>) -> hearsay_crdt::Result<()> {
        self.docs.save(id, bytes)
    }
    fn ids(&mut self, prefix: &str) -> hearsay_crdt::Result<Vec<DocId>> {
        self.docs.ids(prefix)
    }
    fn list_insert(&mut self, keys: &[Vec<u8>]) -> hearsay_crdt::Result<()> {
        self.docs.list_insert(keys)
    }
    fn list_range_rev(
        &mut self,
        start: &[u8],
        end: &[u8],
        n: usize,
    ) -> hearsay_crdt::Result<Vec<Vec<u8>>> {
        self.list_reads.set(self.list_reads.get() + 1);
        self.docs.list_range_rev(start, end, n)
    }
}

/// What a home timeline must be: every followed user's posts, newest first,
/// the deleted ones left out (the straightforward, unbounded way).
fn reference(r: &mut Replica<impl DocStore>, user: &UserName) -> Vec<PostId> {
    let mut all: Vec<PostId> = Vec::new();
    for whom in r.profile(user).unwrap().follows {
        all.extend(
            r.user_posts(&whom, usize::MAX, None)
                .unwrap()
                .iter()
                .map(|p| p.id),
        );
    }
    all.sort_unstable_by(|a, b| b.cmp(a));
    all
}

/// Every page of `limit` posts, following `before`, concatenated; panics
/// on a page longer than `limit` or a loop that does not end.
fn all_pages(r: &mut Replica<impl DocStore>, user: &UserName, limit: usize) -> Vec<PostId> {
    let mut out: Vec<PostId> = Vec::new();
    for _ in 0..10_000 {
        let page = r.home_timeline(user, limit, out.last().copied()).unwrap();
        assert!(page.len() <= limit);
        if page.is_empty() {
            return out;
        }
        out.extend(page.iter().map(|p| p.id));
    }
    panic!("paging did not end");
}

#[test]
fn pages_of_a_home_timeline_have_no_duplicates_or_gaps() {
    let mut r = Replica::new(Keypair::from_secret([1; 32]), MemoryDocs::default()).unwrap();
    let me = name("me");
    for whom in ["ann", "bob", "cy"] {
        r.follow(&me, &name(whom), T0).unwrap();
    }
    let mut deleted = Vec::new();
    let mut t = T0;
    for i in 0..40u64 {
        // Several authors in the same bucket, buckets skipped, and posts of
        // someone not followed in between.
        let author = ["ann", "bob", "cy", "dee"][(i % 4) as usize];
        t += if i % 7 == 0 { 3 * BUCKET_MS } else { 1_000 };
        let p = post(&mut r, author, &format!("post {i}"), t);
        if i % 9 == 0 {
            r.delete_post(p.id, t + 1).unwrap();
            deleted.push(p.id);
        }
    }
    let want = reference(&mut r, &me);
    assert!(want.len() > 20);
    assert!(want.iter().all(|id| !deleted.contains(id)));
    for limit in [1, 2, 3, 5, 7, 64] {
        assert_eq!(all_pages(&mut r, &me, limit), want, "pages of {limit}");
    }
    // A page starting anywhere is the rest of the list.
    let at = want[10];
    let page = r.home_timeline(&me, 5, Some(at)).unwrap();
    let ids: Vec<PostId> = page.iter().map(|p| p.id).collect();
    assert_eq!(ids, want[11..16]);
    // Unfollowing takes a user's posts out; nobody followed, nothing.
    r.unfollow(&me, &name("bob"), t + 10).unwrap();
    assert!(
        r.home_timeline(&me, 500, None)
            .unwrap()
            .iter()
            .all(|p| p.author != name("bob"))
    );
    assert!(
        r.home_timeline(&name("nobody"), 10, None)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_home_page_reads_documents_in_proportion_to_the_page_not_the_follows() {
    const FOLLOWED: usize = 2_000;
    let key = Keypair::from_secret([2; 32]);
    let mut w = Replica::new(key.clone(), MemoryDocs::default()).unwrap();
    let me = name("me");
    let users: Vec<UserName> = (0..FOLLOWED).map(|i| name(&format!("u{i:04}"))).collect();
    for u in &users {
        w.follow(&me, u, T0).unwrap();
    }
    // Ten of them post, three posts each, in buckets minutes apart; many
    // users nobody follows post too.
    for (k, i) in (0..FOLLOWED).step_by(FOLLOWED / 10).enumerate() {
        for j in 0..3u64 {
            let at = T0 + (k as u64 * 3 + j) * BUCKET_MS;
            post(&mut w, users[i].as_str(), &format!("{i}/{j}"), at);
        }
    }
    for i in 0..200u64 {
        post(&mut w, &format!("x{i}"), "not followed", T0 + i * 1_000);
    }
    // Reopen over the saved documents with a cold cache, counting loads.
    let vv = w.checkpoint().unwrap();
    let loads = Rc::new(Cell::new(0));
    let list_reads = Rc::new(Cell::new(0));
    let store = Counting {
        docs: w.store().clone(),
        loads: loads.clone(),
        list_reads: list_reads.clone(),
    };
    let mut r = Replica::open(key.clone(), store, vv.clone(), ReplicaConfig::default()).unwrap();
    let want = reference(&mut r, &me);
    assert_eq!(want.len(), 30);
    let store = Counting {
        docs: w.store().clone(),
        loads: loads.clone(),
        list_reads: list_reads.clone(),
    };
    let mut r = Replica::open(key, store, vv, ReplicaConfig::default()).unwrap();
    loads.set(0);
    let page = r.home_timeline(&me, 5, None).unwrap();
    let ids: Vec<PostId> = page.iter().map(|p| p.id).collect();
    assert_eq!(ids, want[..5]);
    // The profile and the five posts: nowhere near 2,000. (The first page
    // after opening also looks up each followed user's newest post once.)
    let first_page = loads.get();
    assert!(
        first_page <= 1 + 5,
        "a page of 5 read {first_page} documents"
    );
    // The next page, from where the first ended: bounded by the page in
    // documents and in list reads (one run per user the merge reaches).
    loads.set(0);
    list_reads.set(0);
    let next = r.home_timeline(&me, 5, ids.last().copied()).unwrap();
    let next_ids: Vec<PostId> = next.iter().map(|p| p.id).collect();
    assert_eq!(next_ids, want[5..10]);
    assert!(
        loads.get() <= 1 + 5,
        "the second page read {} documents",
        loads.get()
    );
    assert!(
        list_reads.get() <= 2 * 10,
        "the second page read {} list ranges",
        list_reads.get()
    );
    // A post made after the lookups moves its author to the top.
    let late = post(&mut r, users[0].as_str(), "late", T0 + 100 * BUCKET_MS);
    assert_eq!(r.home_timeline(&me, 1, None).unwrap()[0].id, late.id);
    // The whole timeline, page by page, is the reference.
    let mut want_now = vec![late.id];
    want_now.extend(want);
    assert_eq!(all_pages(&mut r, &me, 4), want_now);
    assert_eq!(reference(&mut r, &me), want_now);
}
