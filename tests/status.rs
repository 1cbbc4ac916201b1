//! Signed status gossip against real node processes: forged and malformed
//! statuses are refused and counted, honest ones are listed with their
//! heartbeat age and state, `/api/v0/sync` tells what each side lacks, and
//! replication delays stay true when a node's clock is 3 s off.

mod common;

use std::time::Duration;

use common::{TestNode, wait_until};
use futures::StreamExt;
use hearsay_node::net::{BehaviourEvent, build_swarm};
use hearsay_node::status::{self, STATUS_TOPIC, StatusBody};
use libp2p::gossipsub::{self, IdentTopic};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, identity};
use tokio::sync::{mpsc, watch};

const SETTLE: Duration = Duration::from_secs(30);

/// A libp2p peer in this process that publishes whatever it is given on
/// the status topic of the node it dials.
struct Publisher {
    key: identity::Keypair,
    data: mpsc::Sender<Vec<u8>>,
    subscribed: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    fn start(dial: &str) -> Publisher {
        let key = identity::Keypair::generate_ed25519();
        let mut swarm = build_swarm(key.clone(), 16, false).expect("swarm");
        let topic = IdentTopic::new(STATUS_TOPIC);
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&topic)
            .expect("subscribe");
        swarm
            .dial(dial.parse::<Multiaddr>().expect("multiaddr"))
            .expect("dial");
        let (data, mut rx) = mpsc::channel::<Vec<u8>>(16);
        let (subscribed_tx, subscribed) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    next = rx.recv() => match next {
                        None => break,
                        Some(bytes) => {
                            if let Err(e) = swarm.behaviour_mut().gossipsub.publish(topic.clone(), bytes) {
                                eprintln!("publish: {e}");
                            }
                        }
                    },
                    event = swarm.select_next_some() => {
                        if let SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(
                            gossipsub::Event::Subscribed { topic: t, .. },
                        )) = event
                            && t == topic.hash()
                        {
                            let _ = subscribed_tx.send(true);
                        }
                    }
                }
            }
        });
        Publisher {
            key,
            data,
            subscribed,
            task,
        }
    }

    fn peer_id(&self) -> PeerId {
        self.key.public().to_peer_id()
    }

    async fn wait_subscribed(&mut self) {
        let waited = tokio::time::timeout(SETTLE, self.subscribed.wait_for(|s| *s)).await;
        assert!(
            matches!(waited, Ok(Ok(_))),
            "the node did not subscribe to {STATUS_TOPIC}"
        );
    }

    async fn publish(&self, bytes: Vec<u8>) {
        self.data.send(bytes).await.expect("publisher running");
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A plausible status of `peer`, stamped now.
fn body(peer: &PeerId) -> StatusBody {
    let (revision, revision_hash, version_vector) =
        status::revision_fields(&hearsay_crdt::VersionVector::new());
    StatusBody {
        peer_id: peer.to_string(),
        http: "http://127.0.0.1:9".into(),
        region: "elsewhere".into(),
        geo: None,
        listen_addrs: Vec::new(),
        revision,
        revision_hash,
        version_vector,
        mean_response_ms: 1.0,
        error_rate: 0.0,
        replication_delay_p50_ms: 0.0,
        replication_delay_p99_ms: 0.0,
        neighbours: Vec::new(),
        uptime_s: 1,
        timestamp_ms: hearsay_node::core::now_ms(),
        certificate: None,
    }
}

async fn rejected(node: &TestNode, reason: &str) -> u64 {
    let text = node.client().metrics().await.expect("metrics");
    let line = format!("hearsay_statuses_rejected_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&line))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

async fn lists(node: &TestNode, peer: &PeerId) -> bool {
    node.client()
        .nodes()
        .await
        .is_ok_and(|n| n.nodes.iter().any(|e| e.status.peer_id == peer.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_malformed_statuses_are_refused_and_counted() {
    let node = TestNode::start_with_config("status-target", &[], "target_peers = 0\n").await;
    let mut publisher = Publisher::start(&node.tcp_addr());
    publisher.wait_subscribed().await;

    // A status claiming to be some other node, signed with the
    // publisher's key.
    let victim = identity::Keypair::generate_ed25519().public().to_peer_id();
    let forged = status::encode(&publisher.key, &body(&victim));
    // Garbage on the status topic.
    let garbage = b"HSS1 this is not a status".to_vec();
    wait_until(
        SETTLE,
        "the node counts the forged and the malformed status",
        async || {
            // Each attempt differs (timestamp, counter), so gossipsub's
            // duplicate filter lets it through.
            publisher.publish(forged.clone()).await;
            let mut b = body(&victim);
            b.uptime_s = rand::random();
            publisher.publish(status::encode(&publisher.key, &b)).await;
            let mut g = garbage.clone();
            g.extend_from_slice(&rand::random::<u64>().to_be_bytes());
            publisher.publish(g).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            rejected(&node, "forged").await >= 1 && rejected(&node, "malformed").await >= 1
        },
    )
    .await;
    assert!(!lists(&node, &victim).await, "a forged status was listed");

    // An honest status of the publisher itself is taken in: listed alive,
    // then, once it stops, suspect and down.
    let honest = publisher.peer_id();
    wait_until(SETTLE, "the node lists the honest publisher", async || {
        let mut b = body(&honest);
        b.timestamp_ms = hearsay_node::core::now_ms();
        publisher.publish(status::encode(&publisher.key, &b)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        lists(&node, &honest).await
    })
    .await;
    wait_until(SETTLE, "the silent publisher goes down", async || {
        node.client().nodes().await.is_ok_and(|n| {
            n.nodes
                .iter()
                .any(|e| e.status.peer_id == honest.to_string() && e.state == "down")
        })
    })
    .await;
    assert!(node.is_running(), "the node survived");
}

/// `(count, count in buckets up to 1.024 s)` of the replication-delay
/// histogram of `region`.
async fn delays(node: &TestNode, region: &str) -> (f64, f64) {
    let text = node.client().metrics().await.expect("metrics");
    let value = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        value(&format!(
            "hearsay_replication_delay_seconds_count{{origin_region=\"{region}\"}} "
        )),
        value(&format!(
            "hearsay_replication_delay_seconds_bucket{{le=\"1.024\",origin_region=\"{region}\"}} "
        )),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_delays_are_true_when_a_clock_is_three_seconds_off() {
    let honest = TestNode::start_with_config("clock-honest", &[], "target_peers = 0\n").await;
    // The follower's clock runs 3 s ahead: uncorrected, every delay it
    // measured would be over 3 s.
    let ahead = TestNode::start_with_config(
        "clock-ahead",
        &[&honest.tcp_addr()],
        "target_peers = 0\nclock_offset_ms = 3000\n",
    )
    .await;
    // Each estimates the other's offset from its statuses.
    let estimate = async |node: &TestNode, of: &TestNode| {
        node.client().nodes().await.ok().and_then(|n| {
            n.nodes
                .into_iter()
                .find(|e| e.status.peer_id == of.peer_id())
                .and_then(|e| e.clock_offset_ms)
        })
    };
    wait_until(SETTLE, "both estimate the offset", async || {
        estimate(&ahead, &honest).await.is_some() && estimate(&honest, &ahead).await.is_some()
    })
    .await;
    let (seen_by_ahead, seen_by_honest) = (
        estimate(&ahead, &honest).await.expect("estimate"),
        estimate(&honest, &ahead).await.expect("estimate"),
    );
    assert!(
        (-3500..=-2500).contains(&seen_by_ahead) && (2500..=3500).contains(&seen_by_honest),
        "offsets estimated: {seen_by_ahead} ms (honest, by the one ahead), \
         {seen_by_honest} ms (the one ahead, by honest)"
    );

    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(honest.create_post(&format!("timed {i}")).await);
    }
    wait_until(SETTLE, "the follower holds the posts", async || {
        for id in &ids {
            if ahead.post(id).await.is_none() {
                return false;
            }
        }
        true
    })
    .await;
    let (count, under_a_second) = delays(&ahead, "clock-honest").await;
    assert!(count >= 5.0, "{count} delay samples for 5 posts");
    assert_eq!(
        under_a_second, count,
        "every corrected delay is under 1.024 s on loopback ({under_a_second} of {count})"
    );
    let reported = ahead.client().nodes().await.expect("nodes");
    let p99 = reported
        .this
        .expect("own status")
        .status
        .replication_delay_p99_ms;
    assert!(p99 < 1000.0, "the follower reports a p99 of {p99} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_view_says_what_each_side_lacks() {
    let a = TestNode::start_with_config("sync-a", &[], "target_peers = 0\n").await;
    let mut b = TestNode::start_with_config("sync-b", &[&a.tcp_addr()], "target_peers = 0\n").await;
    let in_sync = async |node: &TestNode| {
        node.client()
            .sync_view()
            .await
            .is_ok_and(|s| s.in_sync && s.nodes.len() == 1)
    };
    wait_until(SETTLE, "both say they are in sync", async || {
        in_sync(&a).await && in_sync(&b).await
    })
    .await;

    // B stops; A takes 2 posts (2 deltas) that B's last status lacks.
    b.stop().await;
    for i in 0..2 {
        a.create_post(&format!("while b is away {i}")).await;
    }
    let view = a.client().sync_view().await.expect("sync");
    let entry = &view.nodes[0];
    assert_eq!(entry.peer_id, b.peer_id());
    assert_eq!(entry.it_lacks, Some(2), "{view:?}");
    assert_eq!(entry.this_lacks, Some(0), "{view:?}");
    assert!(!view.in_sync);

    b.restart().await;
    wait_until(SETTLE, "in sync again after B's restart", async || {
        in_sync(&a).await && in_sync(&b).await
    })
    .await;
}
