//! Replication across real node processes on loopback, joined as a chain
//! A – B – C (B starts first; A and C each join only B).

mod common;

use std::time::Duration;

use common::{TestNode, assert_converged, covers, proxy_to, wait_until};

/// How long a write may take to reach every node (generous: the design
/// promises well under two seconds; anti-entropy runs every two).
const REPLICATION: Duration = Duration::from_secs(30);
/// How long a restarted node may take to catch up on a few hundred writes.
const CATCH_UP: Duration = Duration::from_secs(90);

/// No kad-driven dials: a node reaches only the peers it joined, so a proxy
/// on a join link is the only path between its two sides.
const ONLY_JOINED: &str = "target_peers = 0\nsync_interval_ms = 500\n";

async fn peers(node: &TestNode) -> u64 {
    node.stats().await["peers"].as_u64().unwrap_or(0)
}

/// Starts B, then A and C, each joining only B.
async fn chain() -> (TestNode, TestNode, TestNode) {
    let b = TestNode::start("b", &[]).await;
    let b_addr = b.tcp_addr();
    let a = TestNode::start("a", &[&b_addr]).await;
    let c = TestNode::start("c", &[&b_addr]).await;
    (a, b, c)
}

/// Waits until every node in `nodes` can read post `id`.
async fn wait_everywhere(nodes: &[&TestNode], id: &str) {
    for node in nodes {
        wait_until(
            REPLICATION,
            &format!("node {} reads post {id}", node.name),
            async || node.post(id).await.is_some(),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_crosses_the_chain_both_ways() {
    let (a, b, c) = chain().await;

    let from_a = a.create_post("hello from the A end").await;
    wait_everywhere(&[&b, &c], &from_a).await;
    assert_eq!(
        c.post_body(&from_a).await.as_deref(),
        Some("hello from the A end")
    );

    let from_c = c.create_post("hello from the C end").await;
    wait_everywhere(&[&b, &a], &from_c).await;
    assert_eq!(
        a.post_body(&from_c).await.as_deref(),
        Some("hello from the C end")
    );

    // Both posts in every node's listing, newest first.
    for node in [&a, &b, &c] {
        let ids: Vec<String> = node
            .posts(10)
            .await
            .iter()
            .map(|p| p["id"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(
            ids,
            [from_c.clone(), from_a.clone()],
            "listing at {}",
            node.name
        );
    }
}

/// Concurrent edits, made deterministic: C's only link (to B) runs through
/// a proxy and discovery is off, so cutting the proxy isolates C. Both ends
/// pick their offsets from the body every node holds, then edit while the
/// link is cut: neither edit can have seen the other. After the heal the
/// two merge into one text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_edits_at_both_ends_converge() {
    let b = TestNode::start_with_config("b", &[], ONLY_JOINED).await;
    let a = TestNode::start_with_config("a", &[&b.tcp_addr()], ONLY_JOINED).await;
    let (proxy, b_via_proxy) = proxy_to(&b, Duration::ZERO).await;
    let c = TestNode::start_with_config("c", &[&b_via_proxy], ONLY_JOINED).await;
    // Non-ASCII, so that character offsets and byte offsets differ.
    let original = "héllo wörld";
    let id = a.create_post(original).await;
    wait_everywhere(&[&b, &c], &id).await;
    for node in [&a, &b, &c] {
        assert_eq!(node.post_body(&id).await.as_deref(), Some(original));
    }

    proxy.partition();
    wait_until(REPLICATION, "C and B notice the cut link", async || {
        peers(&c).await == 0 && peers(&b).await == 1
    })
    .await;
    let end = original.chars().count();
    let (at_a, at_c) = tokio::join!(a.edit(&id, 0, 0, "[A] "), c.edit(&id, end, 0, " [C]"));
    // Each answer holds its own edit, and only its own: the link is cut.
    let own = |post: &serde_json::Value| post["body"].as_str().unwrap_or_default().to_owned();
    assert!(
        own(&at_a).starts_with("[A] héllo wörld"),
        "A's answer: {at_a}"
    );
    assert!(
        own(&at_c).ends_with("héllo wörld [C]"),
        "C's answer: {at_c}"
    );
    assert_eq!(
        own(&at_a),
        "[A] héllo wörld",
        "A saw C's edit through a cut link"
    );
    assert_eq!(
        own(&at_c),
        "héllo wörld [C]",
        "C saw A's edit through a cut link"
    );
    wait_until(REPLICATION, "B holds A's edit", async || {
        b.post_body(&id).await.as_deref() == Some("[A] héllo wörld")
    })
    .await;
    assert_eq!(
        c.post_body(&id).await.as_deref(),
        Some("héllo wörld [C]"),
        "A's edit reached C through a cut link"
    );

    proxy.heal();
    let mut bodies = Vec::new();
    wait_until(
        REPLICATION,
        "A, B and C show the same body with both edits",
        async || {
            bodies.clear();
            for node in [&a, &b, &c] {
                bodies.push(node.post_body(&id).await.unwrap_or_default());
            }
            bodies.iter().all(|b| *b == bodies[0])
                && bodies[0].contains("[A] ")
                && bodies[0].contains(" [C]")
        },
    )
    .await;
    // An insertion at the start and one at the end merge into one text.
    assert_eq!(bodies[0], "[A] héllo wörld [C]");
    for node in [&a, &b, &c] {
        let post = node.post(&id).await.expect("post exists");
        assert!(
            post["edited_at"].is_u64(),
            "edited_at at {}: {post}",
            node.name
        );
    }
    wait_until(REPLICATION, "equal version vectors", async || {
        let vv = a.version_vector().await;
        b.version_vector().await == vv && c.version_vector().await == vv
    })
    .await;
    assert_converged(&[&a, &b, &c]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_node_catches_up_after_restart() {
    const WRITES: usize = 500;
    const WRITERS: usize = 4;
    let (a, b, mut c) = chain().await;

    // C is part of the mesh before it crashes.
    let first = a.create_post("before the crash").await;
    wait_everywhere(&[&b, &c], &first).await;

    c.kill();
    // A takes 500 writes while C is down: a few concurrent sequential writers.
    let per_writer = WRITES / WRITERS;
    let writers = (0..WRITERS).map(|w| {
        let a = &a;
        async move {
            let mut ids = Vec::with_capacity(per_writer);
            for i in 0..per_writer {
                ids.push(a.create_post(&format!("write {i} of writer {w}")).await);
            }
            ids
        }
    });
    let written: Vec<Vec<String>> = futures::future::join_all(writers).await;
    assert_eq!(written.iter().map(Vec::len).sum::<usize>(), WRITES);
    let last = a.create_post("the last post").await;

    // Every post is one delta.
    let expected = WRITES as u64 + 2;
    wait_until(
        REPLICATION,
        &format!("A's stats show revision {expected}"),
        async || a.revision().await >= expected,
    )
    .await;
    let want = a.version_vector().await;

    c.restart().await;
    wait_until(CATCH_UP, "C's version vector covers A's", async || {
        covers(&c.version_vector().await, &want)
    })
    .await;
    assert_eq!(c.post_body(&last).await.as_deref(), Some("the last post"));
    // A sample of the writes made while C was down, from every writer.
    for ids in &written {
        for id in [&ids[0], &ids[ids.len() / 2], &ids[ids.len() - 1]] {
            assert!(c.post(id).await.is_some(), "post {id} missing at C");
        }
    }
    assert!(
        b.post(&last).await.is_some(),
        "the relay B has the last post"
    );
    // No write since: C holds exactly A's documents.
    wait_until(CATCH_UP, "C's version vector equals A's", async || {
        c.version_vector().await == want
    })
    .await;
    assert_converged(&[&a, &c]).await;
}

/// The version vector is the read-your-writes token: once a write is
/// acknowledged, the node's stats (version vector, revision) include it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_cover_every_acknowledged_write() {
    const WRITES: u64 = 100;
    let node = TestNode::start("ryw", &[]).await;
    let mut stale = Vec::new();
    for i in 1..=WRITES {
        node.create_post(&format!("write {i}")).await;
        let revision = node.revision().await;
        if revision < i {
            stale.push(format!("after write {i}: revision {revision}, want {i}"));
        }
    }
    assert!(
        stale.is_empty(),
        "stats trailed {} of {WRITES} acknowledged writes, e.g.\n{}",
        stale.len(),
        stale[..stale.len().min(5)].join("\n")
    );
}
