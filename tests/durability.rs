//! Crash durability: a node SIGKILLed at a random moment while writers
//! stream posts at it loses none of the posts it acknowledged, and a peer
//! that watched it converges on the same posts.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{TestNode, assert_converged, covers, wait_until};
use hearsay_node::client::{Client, ClientError};
use rand::Rng as _;

/// Kill cycles.
const CYCLES: usize = 8;
/// Concurrent writers (so that acknowledgements come from group commits).
const WRITERS: usize = 3;
/// How long the witness may take to catch up after the last restart.
const CONVERGE: Duration = Duration::from_secs(60);
/// Upper bound on the posts one writer sends in one cycle.
const MAX_WRITES_PER_WRITER: usize = 10_000;

/// Streams posts at the node until it stops answering; returns the ids of
/// the posts it acknowledged with 200.
async fn writer(client: Client, cycle: usize, writer: usize) -> Vec<String> {
    let mut acked = Vec::new();
    let author = format!("writer{writer}");
    for i in 0..MAX_WRITES_PER_WRITER {
        let body = format!("cycle {cycle}, writer {writer}, post {i}");
        match client.create_post(Some(&author), &body, None).await {
            Ok(post) => acked.push(post.id.to_string()),
            // Connection refused or reset, or the answer cut off: the node
            // is down, and an answer that did not arrive is not an ack.
            Err(ClientError::Transport { .. } | ClientError::Malformed { .. }) => break,
            // A refusal (503 overloaded, 500 while dying) is not an ack.
            Err(ClientError::Refused { .. } | ClientError::SlowDown { .. }) => {
                tokio::time::sleep(Duration::from_millis(5)).await
            }
        }
    }
    acked
}

/// Asserts that `node` serves every id in `acked`, by id and in its listing.
async fn assert_all_present(node: &TestNode, acked: &[String], when: &str) {
    let missing: Vec<&String> = {
        let mut missing = Vec::new();
        for id in acked {
            if node.post(id).await.is_none() {
                missing.push(id);
            }
        }
        missing
    };
    assert!(
        missing.is_empty(),
        "{when}: {} of {} acknowledged posts are lost, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
    let listed: HashSet<String> = node.all_post_ids().await.into_iter().collect();
    let unlisted: Vec<&String> = acked.iter().filter(|id| !listed.contains(*id)).collect();
    assert!(
        unlisted.is_empty(),
        "{when}: {} of {} acknowledged posts are missing from the listing, e.g. {:?}",
        unlisted.len(),
        acked.len(),
        &unlisted[..unlisted.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_posts_survive_sigkill() {
    // The witness sees what the crashing node published before each crash:
    // if a restart reissued a seq a peer already held, the two would diverge.
    let witness = TestNode::start("witness", &[]).await;
    // Checkpoints as often as the node allows and a small document cache,
    // so that kills also land in checkpoints and documents are often cold.
    let mut node = TestNode::start_with_config(
        "crashy",
        &[&witness.tcp_addr()],
        "checkpoint_interval_ms = 100\ncache_docs = 16\n",
    )
    .await;
    let mut acked: Vec<String> = Vec::new();
    for cycle in 0..CYCLES {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| tokio::spawn(writer(node.client().clone(), cycle, w)))
            .collect();
        let delay = rand::rng().random_range(50..=400u64);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        node.kill();
        let mut this_cycle = 0;
        for w in writers {
            let ids = w.await.expect("writer task");
            this_cycle += ids.len();
            acked.extend(ids);
        }
        eprintln!("cycle {cycle}: killed after {delay} ms, {this_cycle} posts acknowledged");

        node.restart().await;
        assert_all_present(&node, &acked, &format!("after kill #{}", cycle + 1)).await;
    }
    assert!(
        !acked.is_empty(),
        "no write was acknowledged in {CYCLES} cycles"
    );
    let unique: HashSet<&String> = acked.iter().collect();
    assert_eq!(unique.len(), acked.len(), "a post id was issued twice");
    let revision = node.revision().await;
    assert!(
        revision >= acked.len() as u64,
        "revision {revision} is below one delta for each of {} acknowledged posts",
        acked.len()
    );

    // A graceful stop (SIGTERM) and restart keeps them too, and the node
    // still takes writes.
    let status = node.stop().await;
    assert!(status.success(), "exit status after SIGTERM: {status}");
    node.restart().await;
    assert_all_present(&node, &acked, "after SIGTERM and restart").await;
    let id = node.create_post("after the crashes").await;
    assert_eq!(
        node.post_body(&id).await.as_deref(),
        Some("after the crashes")
    );

    // The witness converges on exactly the crashing node's posts.
    let want = node.version_vector().await;
    wait_until(
        CONVERGE,
        "the witness covers the node's version vector",
        async || covers(&witness.version_vector().await, &want),
    )
    .await;
    let mut mine: HashSet<String> = HashSet::new();
    let mut theirs: HashSet<String> = HashSet::new();
    wait_until(
        CONVERGE,
        "the witness lists the same posts as the node",
        async || {
            mine = node.all_post_ids().await.into_iter().collect();
            theirs = witness.all_post_ids().await.into_iter().collect();
            mine == theirs
        },
    )
    .await;
    assert_eq!(witness.version_vector().await, node.version_vector().await);
    assert_converged(&[&node, &witness]).await;
    assert!(theirs.contains(&id));
    let lost: Vec<&String> = acked.iter().filter(|id| !theirs.contains(*id)).collect();
    assert!(
        lost.is_empty(),
        "acknowledged posts missing at the witness: {lost:?}"
    );
}
