//! Hostile peers against real node processes: an admitted peer that lies in
//! anti-entropy pages, replays old deltas, equivocates, stops reading, or
//! floods. Each test checks what users would see: honest writes keep
//! arriving, nothing acknowledged is lost, nothing false is stored, and the
//! refusals are counted. How much a flood costs honest replication is
//! measured by `hearsay bench flood` (BENCHMARKS.md), not asserted here.

mod common;

use std::time::{Duration, Instant};

use common::{TestNode, wait_until};
use hearsay_admission::OperatorKey;
use hearsay_crdt::{Delta, Keypair};
use hearsay_node::hostile::{FloodPlan, Hostile, signed_delta};
use hearsay_node::net::DELTA_TOPIC;
use libp2p::{Multiaddr, PeerId};

const SETTLE: Duration = Duration::from_secs(60);
const STATIC: &str = "target_peers = 0\n";

/// A closed mesh of `n` nodes in a chain, and the operator.
async fn mesh(n: usize) -> (OperatorKey, Vec<TestNode>) {
    let op = OperatorKey::generate();
    let mut nodes: Vec<TestNode> = Vec::new();
    for i in 0..n {
        let name = ["a", "b", "c", "d"][i];
        let join: Vec<String> = nodes.last().map(|p| p.tcp_addr()).into_iter().collect();
        let join: Vec<&str> = join.iter().map(String::as_str).collect();
        nodes.push(
            TestNode::start_admitted(name, &join, Some(&op), &Keypair::generate(), STATIC).await,
        );
    }
    (op, nodes)
}

/// Posts of `key` at seq 1, 2, ...: a second call signs the same seqs
/// again with other changes.
fn deltas(key: &Keypair, bodies: &[&str]) -> Vec<Delta> {
    bodies
        .iter()
        .enumerate()
        .map(|(i, body)| signed_delta(key, i as u64 + 1, body))
        .collect()
}

/// An admitted hostile peer with key `key`, dialling `nodes`, once every
/// one of them took it in (told it of their delta subscription).
async fn hostile(op: &OperatorKey, key: &Keypair, nodes: &[&TestNode]) -> Hostile {
    let cert = op
        .admit(key.id(), "hostile", hearsay_node::core::now_ms(), None)
        .expect("certificate");
    let addrs: Vec<Multiaddr> = nodes
        .iter()
        .map(|n| n.tcp_addr().parse().expect("multiaddr"))
        .collect();
    let h = Hostile::start(key.clone(), Some(cert.encode()), &addrs);
    for node in nodes {
        let peer: PeerId = node.peer_id().parse().expect("peer id");
        assert!(
            h.wait_subscribed(peer, SETTLE).await,
            "{} did not take the hostile peer in (connected: {:?})",
            node.name,
            h.connected()
        );
    }
    // Admission replays the subscription once the certificate checks out;
    // give gossipsub a heartbeat to put the peer in its mesh.
    tokio::time::sleep(Duration::from_secs(1)).await;
    h
}

async fn held(node: &TestNode, key: &Keypair) -> u64 {
    node.stats().await["version_vector"][key.id().to_string()]
        .as_u64()
        .unwrap_or(0)
}

async fn wait_held(node: &TestNode, key: &Keypair, seq: u64) {
    wait_until(
        SETTLE,
        &format!("{} holds seq {seq} of the hostile's key", node.name),
        async || held(node, key).await >= seq,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replayed_forged_and_altered_deltas_in_pages_change_nothing() {
    let (op, nodes) = mesh(2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let key = Keypair::generate();
    let h = hostile(&op, &key, &[a]).await;
    // Three honest-looking posts of its own, which everyone takes.
    let own = deltas(&key, &["one", "two", "three"]);
    for d in &own {
        h.publish(DELTA_TOPIC, d.encode()).await.expect("publish");
    }
    for node in [a, b] {
        wait_held(node, &key, 3).await;
    }
    let revision = a.revision().await;
    let rejected_before = a
        .metric("hearsay_deltas_rejected_total", "source=\"sync\"")
        .await;
    // From now on every page it serves holds the old deltas again, a
    // forged one (another origin's seq, signed by the hostile), and an
    // altered one (a byte of a valid change flipped).
    let victim = Keypair::generate();
    let mut forged = deltas(&key, &["four"]).remove(0);
    forged.origin = victim.id();
    let mut altered = deltas(&key, &["one", "two", "three", "four"]).remove(3);
    let middle = altered.change.len() / 2;
    altered.change[middle] ^= 1;
    let mut page: Vec<Vec<u8>> = own.iter().map(Delta::encode).collect();
    page.push(forged.encode());
    page.push(altered.encode());
    h.serve_pages(page).await;
    // And the old deltas pushed again too.
    for d in &own {
        let _ = h.publish(DELTA_TOPIC, d.encode()).await;
    }
    // Anti-entropy rounds with the hostile come every few seconds.
    wait_until(
        SETTLE,
        "a refuses the forged and altered deltas of a page",
        async || {
            a.metric("hearsay_deltas_rejected_total", "source=\"sync\"")
                .await
                >= rejected_before + 2.0
        },
    )
    .await;
    for node in [a, b] {
        assert_eq!(held(node, &key).await, 3, "{}", node.name);
        assert_eq!(held(node, &victim).await, 0, "{} took a forgery", node.name);
    }
    assert_eq!(
        a.revision().await,
        revision,
        "a page of old deltas changed a"
    );
    assert!(
        a.stats().await["rejected"]["bad_signature"].as_u64() >= Some(2),
        "{}",
        a.stats().await["rejected"]
    );
    // Honest replication goes on.
    let post = a.create_post("still fine").await;
    wait_until(SETTLE, "b has a's post", async || {
        b.post(&post).await.is_some()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_equivocating_origin_is_detected_on_every_node() {
    let (op, nodes) = mesh(3).await;
    let (a, c) = (&nodes[0], &nodes[2]);
    // One admitted key, two peers at the two ends of the chain, each with
    // its own seq 1.
    let key = Keypair::generate();
    let one = deltas(&key, &["one story"]).remove(0);
    let other = deltas(&key, &["another story"]).remove(0);
    assert_eq!((one.seq, other.seq), (1, 1));
    let h1 = hostile(&op, &key, &[a]).await;
    h1.publish(DELTA_TOPIC, one.encode())
        .await
        .expect("publish");
    for node in &nodes {
        wait_held(node, &key, 1).await;
    }
    let h2 = hostile(&op, &key, &[c]).await;
    h2.publish(DELTA_TOPIC, other.encode())
        .await
        .expect("publish");
    let culprit = key.id().to_string();
    for node in &nodes {
        wait_until(
            SETTLE,
            &format!("{} lists the key as an equivocator", node.name),
            async || {
                let listed = node
                    .client()
                    .get_body("/api/v0/nodes")
                    .await
                    .is_ok_and(|n| {
                        n["equivocators"].as_array().is_some_and(|e| {
                            e.iter()
                                .any(|x| x["origin"] == culprit.as_str() && x["seq"] == 1)
                        })
                    });
                listed && node.metric("hearsay_equivocators", "").await == 1.0
            },
        )
        .await;
    }
    // Its next seq is refused everywhere; the honest nodes go on.
    let next = deltas(&key, &["one story", "more"]).remove(1);
    let _ = h1.publish(DELTA_TOPIC, next.encode()).await;
    let post = a.create_post("honest").await;
    wait_until(SETTLE, "c has a's post", async || {
        c.post(&post).await.is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for node in &nodes {
        assert_eq!(
            held(node, &key).await,
            1,
            "{} took more of the equivocator",
            node.name
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_that_reads_nothing_does_not_stall_the_others() {
    let (op, nodes) = mesh(2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let h = hostile(&op, &Keypair::generate(), &[a, b]).await;
    h.stall(true).await;
    // Writes keep flowing from a to b while the hostile's windows fill.
    let started = Instant::now();
    let mut ids = Vec::new();
    for i in 0..100 {
        ids.push(
            a.create_post(&format!("post {i} {}", "x".repeat(2000)))
                .await,
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for id in &ids {
        wait_until(SETTLE, "b has every post of a", async || {
            b.post(id).await.is_some()
        })
        .await;
    }
    eprintln!(
        "100 posts of 2 KB replicated past a stalled peer in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // The silent link is closed, while a and b stay linked.
    wait_until(
        SETTLE,
        "a closes its link to the stalled peer",
        async || a.stats().await["admission"]["admitted_peers"] == 1,
    )
    .await;
    wait_until(
        SETTLE,
        "b closes its link to the stalled peer",
        async || b.stats().await["admission"]["admitted_peers"] == 1,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flooding_peer_is_held_to_its_budgets() {
    let (op, nodes) = mesh(2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let key = Keypair::generate();
    let h = hostile(&op, &key, &[a]).await;
    let rss_before = rss_kib(a);
    // Valid new deltas, replays, bad signatures, garbage and deltas far
    // ahead, as fast as the swarm takes them, while a writes.
    let flood = h
        .flood(FloodPlan {
            max_duration: Duration::from_secs(30),
            ..FloodPlan::default()
        })
        .await;
    let mut ids = Vec::new();
    for i in 0..50 {
        ids.push(a.create_post(&format!("honest {i}")).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sent = flood.stop().await;
    eprintln!("the flood sent {sent:?}");
    assert!(sent.total() > 0, "the flood sent nothing: {sent:?}");
    // Every honest write arrived; nothing invalid was stored.
    for id in &ids {
        wait_until(SETTLE, "b has every honest post", async || {
            b.post(id).await.is_some()
        })
        .await;
    }
    let held_a = held(a, &key).await;
    assert!(held_a <= sent.valid_new, "a holds {held_a} of {sent:?}");
    // The flood cost the peer its link (gossipsub's score fell below its
    // graylist, or a budget ran out), and it is banned: a redial is closed
    // at once.
    let closed = a
        .metric("hearsay_peer_disconnects_total", "reason=\"misbehaved\"")
        .await
        + a.metric("hearsay_peer_disconnects_total", "reason=\"message_rate\"")
            .await
        + a.metric("hearsay_peer_disconnects_total", "reason=\"byte_rate\"")
            .await;
    assert!(closed >= 1.0, "a never closed the flooding peer's link");
    let a_peer: PeerId = a.peer_id().parse().expect("peer id");
    for _ in 0..3 {
        h.redial().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            !h.connected().contains(&a_peer),
            "a let the banned peer back in"
        );
    }
    let refused = a.metric("hearsay_deltas_rejected_total", "").await
        + a.metric("hearsay_peer_messages_dropped_total", "").await;
    eprintln!("a refused or dropped {refused} messages, closed the link {closed} times");
    assert!(refused > 0.0, "a counted nothing of the flood");
    if let (Some(before), Some(after)) = (rss_before, rss_kib(a)) {
        eprintln!("a's RSS {before} KiB before, {after} KiB after the flood");
        assert!(
            after < before + 512 * 1024,
            "a's memory grew from {before} KiB to {after} KiB"
        );
    }
}

/// Resident memory of a node's process, from /proc.
fn rss_kib(node: &TestNode) -> Option<u64> {
    let pid = node.pid()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}
