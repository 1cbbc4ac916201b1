//! The newest-posts list read through the bucket index agrees with the
//! documents: local posts, remote deltas applied after the index was built,
//! deletions, and pages that follow `before`.

use hearsay_crdt::{Keypair, MemoryDocs, NewPost, PostId, Replica, UserName};

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
fn newest_posts_follow_local_and_remote_writes_after_the_index_is_built() {
    let mut a = Replica::new(Keypair::generate(), MemoryDocs::default()).unwrap();
    let mut b = Replica::new(Keypair::generate(), MemoryDocs::default()).unwrap();
    let mut written = Vec::new();
    // 30 posts in one bucket at a, all reaching b.
    for i in 0..30u64 {
        let (post, deltas) = a
            .create_post(&new_post("ann", &format!("post {i}")), None, T0 + i)
            .unwrap();
        written.push(post.id);
        assert!(b.receive(deltas).accepted.len() == 3);
    }
    written.reverse();
    // Reading builds b's index of the bucket.
    assert_eq!(ids(&mut b, 10, None), written[..10]);
    // Remote posts applied afterwards, and local ones, enter the index.
    let mut newer = Vec::new();
    for i in 30..40u64 {
        let (post, deltas) = a
            .create_post(&new_post("ann", &format!("post {i}")), None, T0 + i)
            .unwrap();
        newer.push(post.id);
        b.receive(deltas);
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
    // The same lists at a, whose index saw only local writes.
    assert_eq!(ids(&mut a, 100, None), expect[1..]);
}
