//! The network layer against real node processes on loopback: QUIC as well
//! as TCP, discovery of peers beyond the joined ones, and redial of a join
//! peer that is not up yet.

mod common;

use std::time::Duration;

use common::{TestNode, wait_until};

const CONNECT: Duration = Duration::from_secs(30);
const REPLICATION: Duration = Duration::from_secs(30);

async fn peers(node: &TestNode) -> u64 {
    node.stats().await["peers"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_and_replicate_over_quic() {
    let a = TestNode::start_listening(
        "quic-a",
        &[],
        &["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"],
    )
    .await;
    wait_until(CONNECT, "A announces a QUIC address", async || {
        hearsay_node::node::Announcement::read(a.dir()).is_some_and(|n| n.addr("quic-v1").is_some())
    })
    .await;
    let quic = hearsay_node::node::Announcement::read(a.dir())
        .and_then(|n| n.addr("quic-v1").map(str::to_owned))
        .expect("QUIC address");
    assert!(
        quic.contains("/udp/") && quic.ends_with(&format!("/p2p/{}", a.peer_id())),
        "{quic}"
    );
    let b = TestNode::start("quic-b", &[&quic]).await;
    let id = b.create_post("over quic").await;
    wait_until(REPLICATION, "A reads B's post", async || {
        a.post(&id).await.is_some()
    })
    .await;
    let stats = b.stats().await;
    assert_eq!(stats["peers"], 1, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_beyond_the_joined_ones_are_discovered() {
    // A and C each join only B; kad tells each about the other.
    let b = TestNode::start("disc-b", &[]).await;
    let a = TestNode::start("disc-a", &[&b.tcp_addr()]).await;
    let c = TestNode::start("disc-c", &[&b.tcp_addr()]).await;
    wait_until(CONNECT, "A and C connect to each other", async || {
        peers(&a).await == 2 && peers(&c).await == 2
    })
    .await;
    assert_eq!(peers(&b).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_peer_that_comes_up_later_is_redialled() {
    // B gets a fixed port so its address survives a restart.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let mut b = TestNode::start_listening("redial-b", &[], &[&listen]).await;
    let b_addr = b.tcp_addr();
    assert!(b_addr.starts_with(&listen), "{b_addr}");
    b.stop().await;

    // A starts while B is down: its dials fail and back off.
    let a = TestNode::start("redial-a", &[&b_addr]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(peers(&a).await, 0);

    // B comes back on the same address; A's next redial reaches it.
    b.restart().await;
    wait_until(CONNECT, "A reconnects to B", async || peers(&a).await == 1).await;
    let id = b.create_post("after the redial").await;
    wait_until(REPLICATION, "A reads B's post", async || {
        a.post(&id).await.is_some()
    })
    .await;
}
