//! The post lists derived from the post documents agree with them: local
//! posts, remote deltas, deletions, pages that follow `before`, and a store
//! written before the lists existed.

use hearsay_crdt::{Keypair, MemoryDocs, NewPost, PostId, Replica, ReplicaConfig, UserName};

const T0: u64 = 1_700_000_000_000;

fn new_post(author: &str, body: &str) -> NewPost {
    NewPost {
        author: UserName::new(author).unwrap(),
        body: body.into(),
        reply_to: None,
    }
}

fn ids(r: &mut Replica<MemoryDocs>, limit: usize, before: Option<PostId>) -> Vec<PostId> {
    r.newest_posts(limit, before)
        .unwrap()
        .iter()
        .map(|p| p.id)
        .collect()
}

#[test]
fn newest_posts_follow_local_and_remote_writes() {
    let mut a = Replica::new(Keypair::generate(), MemoryDocs::default()).unwrap();
    let mut b = Replica::new(Keypair::generate(), MemoryDocs::default()).unwrap();
    let mut written = Vec::new();
    // 30 posts in one bucket at a, all reaching b.
    for i in 0..30u64 {
        let (post, delta) = a
            .create_post(&new_post("ann", &format!("post {i}")), None, T0 + i)
            .unwrap();
        written.push(post.id);
        assert!(b.receive([delta]).accepted.len() == 1);
    }
    written.reverse();
    assert_eq!(ids(&mut b, 10, None), written[..10]);
    // Remote posts applied after a read, and local ones, are listed.
    let mut newer = Vec::new();
    for i in 30..40u64 {
        let (post, delta) = a
            .create_post(&new_post("ann", &format!("post {i}")), None, T0 + i)
            .unwrap();
        newer.push(post.id);
        b.receive([delta]);
    }
    let (local, _) = b
        .create_post(&new_post("bob", "mine"), None, T0 + 50)
        .unwrap();
    newer.push(local.id);
    newer.reverse();
    assert_eq!(ids(&mut b, 11, None), newer);

    // A deleted post is skipped and the page still fills.
    let gone = written[0];
    let delta = a.delete_post(gone, T0 + 60).unwrap();
    b.receive([delta]);
    let mut expect: Vec<PostId> = newer.iter().chain(&written).copied().collect();
    expect.retain(|id| *id != gone);
    assert_eq!(ids(&mut b, 15, None), expect[..15]);

    // Pages of 7 following `before`: every post once, in order.
    let mut paged = Vec::new();
    let mut before = None;
    for _ in 0..20 {
        let page = ids(&mut b, 7, before);
        if page.is_empty() {
            break;
        }
        before = page.last().copied();
        paged.extend(page);
    }
    assert_eq!(paged, expect);
    // The same lists at a, which listed only local writes.
    assert_eq!(ids(&mut a, 100, None), expect[1..]);
    // An author's list holds their posts only.
    let bob = UserName::new("bob").unwrap();
    let bobs: Vec<PostId> = b
        .user_posts(&bob, 10, None)
        .unwrap()
        .iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(bobs, vec![local.id]);
}

#[test]
fn a_store_without_lists_gets_them_derived_from_its_posts_when_opened() {
    let key = Keypair::generate();
    let mut a = Replica::new(key.clone(), MemoryDocs::default()).unwrap();
    let mut written: Vec<PostId> = (0..20u64)
        .map(|i| {
            let author = if i % 2 == 0 { "ann" } else { "bob" };
            a.create_post(&new_post(author, &format!("post {i}")), None, T0 + i)
                .unwrap()
                .0
                .id
        })
        .collect();
    written.reverse();
    let vv = a.checkpoint().unwrap();
    // The documents as an older version left them: no lists at all.
    let mut old = a.store().clone();
    old.lists.clear();
    let mut reopened = Replica::open(key, old, vv, ReplicaConfig::default()).unwrap();
    assert_eq!(ids(&mut reopened, 100, None), written);
    let anns: Vec<PostId> = reopened
        .user_posts(&UserName::new("ann").unwrap(), 100, None)
        .unwrap()
        .iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(
        anns,
        written
            .iter()
            .skip(1)
            .step_by(2)
            .copied()
            .collect::<Vec<_>>()
    );
    // Derived once: the marker keeps the next open from scanning again.
    let store = reopened.store().clone();
    assert_eq!(store.lists.len(), 2 * written.len() + 1);
}
