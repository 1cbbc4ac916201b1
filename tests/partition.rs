//! A network partition between two nodes: both sides keep taking writes,
//! and after the link heals every acknowledged write is on both sides and
//! the nodes converge to the same version vector and the same posts.

mod common;

use std::time::Duration;

use common::{TestNode, assert_converged, proxy_to, wait_until};

const CONNECT: Duration = Duration::from_secs(60);
const CONVERGE: Duration = Duration::from_secs(60);
const WRITES_PER_SIDE: usize = 25;

/// No kad-driven dials: B reaches A only through the proxy it joined.
const ONLY_JOINED: &str = "target_peers = 0\nsync_interval_ms = 500\n";

async fn peers(node: &TestNode) -> u64 {
    node.stats().await["peers"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_both_sides_of_a_partition_converge_after_it_heals() {
    let a = TestNode::start_with_config("part-a", &[], ONLY_JOINED).await;
    let (proxy, via_proxy) = proxy_to(&a, Duration::from_millis(5)).await;
    let b = TestNode::start_with_config("part-b", &[&via_proxy], ONLY_JOINED).await;
    wait_until(CONNECT, "B connects to A through the proxy", async || {
        peers(&b).await == 1
    })
    .await;
    let first = a.create_post("before the partition").await;
    wait_until(CONVERGE, "B reads A's first post", async || {
        b.post(&first).await.is_some()
    })
    .await;

    proxy.partition();
    wait_until(CONNECT, "both sides notice the partition", async || {
        peers(&a).await == 0 && peers(&b).await == 0
    })
    .await;
    let mut ids = vec![first];
    for i in 0..WRITES_PER_SIDE {
        ids.push(a.create_post(&format!("a during the partition {i}")).await);
        ids.push(b.create_post(&format!("b during the partition {i}")).await);
    }
    // Nothing crosses a partition.
    assert!(
        b.post(&ids[1]).await.is_none(),
        "A's write reached B through a cut link"
    );
    assert!(
        a.post(&ids[2]).await.is_none(),
        "B's write reached A through a cut link"
    );

    proxy.heal();
    wait_until(CONNECT, "B redials A after the heal", async || {
        peers(&b).await == 1
    })
    .await;
    wait_until(
        CONVERGE,
        "both sides hold every acknowledged write",
        async || {
            for id in &ids {
                if a.post(id).await.is_none() || b.post(id).await.is_none() {
                    return false;
                }
            }
            true
        },
    )
    .await;
    wait_until(CONVERGE, "equal version vectors", async || {
        a.version_vector().await == b.version_vector().await
    })
    .await;
    let (listed_a, listed_b) = (a.all_post_ids().await, b.all_post_ids().await);
    assert_eq!(listed_a, listed_b);
    assert_eq!(listed_a.len(), 1 + 2 * WRITES_PER_SIDE);
    assert_converged(&[&a, &b]).await;
}
