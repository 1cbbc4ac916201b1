//! Self-healing mesh against real node processes on loopback: nodes learn
//! each other from signed statuses and keep their degree when a neighbour
//! dies. Discovery (kad) is off in every test here, so any link beyond the
//! join links was made by the topology machine.

mod common;

use std::time::Duration;

use common::{TestNode, wait_until};

const HEAL: Duration = Duration::from_secs(30);
const REPLICATION: Duration = Duration::from_secs(30);

/// No kad discovery: links come from joins and the topology machine only.
fn config(degree: usize) -> String {
    format!("target_peers = 0\ndegree = {degree}\n")
}

/// Whether `node` lists `other` as alive and linked in `/api/v0/nodes`.
async fn linked(node: &TestNode, other: &TestNode) -> bool {
    node.client().nodes().await.is_ok_and(|n| {
        n.nodes
            .iter()
            .any(|e| e.status.peer_id == other.peer_id() && e.linked && e.state == "alive")
    })
}

async fn state_of(node: &TestNode, other: &TestNode) -> Option<String> {
    let nodes = node.client().nodes().await.ok()?;
    nodes
        .nodes
        .into_iter()
        .find(|e| e.status.peer_id == other.peer_id())
        .map(|e| e.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_heals_when_its_middle_node_dies() {
    // A <- B <- C: C joins B, B joins A; A and C know each other only from
    // the statuses B relays.
    let cfg = config(2);
    let a = TestNode::start_with_config("chain-a", &[], &cfg).await;
    let mut b = TestNode::start_with_config("chain-b", &[&a.tcp_addr()], &cfg).await;
    let c = TestNode::start_with_config("chain-c", &[&b.tcp_addr()], &cfg).await;
    wait_until(HEAL, "A and C know each other from statuses", async || {
        state_of(&a, &c).await.as_deref() == Some("alive")
            && state_of(&c, &a).await.as_deref() == Some("alive")
    })
    .await;

    b.kill();
    // B falls silent: suspect after 3 s, down after 6 s; A and C, short of
    // their degree, dial each other (if bridge repair has not already).
    wait_until(HEAL, "A and C see B down and are linked", async || {
        state_of(&a, &b).await.as_deref() == Some("down")
            && linked(&a, &c).await
            && linked(&c, &a).await
    })
    .await;
    let id = a.create_post("around the dead middle").await;
    wait_until(REPLICATION, "C reads A's post", async || {
        c.post(&id).await.is_some()
    })
    .await;
    let id = c.create_post("and back").await;
    wait_until(REPLICATION, "A reads C's post", async || {
        a.post(&id).await.is_some()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_of_five_with_degree_two_survives_the_loss_of_any_node() {
    // n1..n4 join their predecessor; n4 also joins n0: a ring.
    let cfg = config(2);
    let mut ring: Vec<TestNode> = Vec::new();
    ring.push(TestNode::start_with_config("ring-0", &[], &cfg).await);
    for i in 1..5 {
        let prev = ring[i - 1].tcp_addr();
        let join: Vec<String> = if i == 4 {
            vec![prev, ring[0].tcp_addr()]
        } else {
            vec![prev]
        };
        let join: Vec<&str> = join.iter().map(String::as_str).collect();
        ring.push(TestNode::start_with_config(&format!("ring-{i}"), &join, &cfg).await);
    }
    wait_until(HEAL, "every node knows the four others", async || {
        for n in &ring {
            let alive = n
                .client()
                .nodes()
                .await
                .map_or(0, |v| v.nodes.iter().filter(|e| e.state == "alive").count());
            if alive < 4 {
                return false;
            }
        }
        true
    })
    .await;

    let victim = rand::random_range(0..5);
    eprintln!("killing ring-{victim}");
    ring[victim].kill();
    let survivors: Vec<&TestNode> = ring
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, n)| n)
        .collect();
    let mut ids = Vec::new();
    for n in &survivors {
        ids.push(
            n.create_post(&format!("from {} after the loss", n.name))
                .await,
        );
    }
    wait_until(
        REPLICATION,
        "every survivor reads every survivor's post",
        async || {
            for n in &survivors {
                for id in &ids {
                    if n.post(id).await.is_none() {
                        return false;
                    }
                }
            }
            true
        },
    )
    .await;
    // And each survivor still has at least the degree's worth of links.
    wait_until(HEAL, "survivors keep two live links each", async || {
        for n in &survivors {
            let links = n.client().nodes().await.map_or(0, |v| {
                v.nodes
                    .iter()
                    .filter(|e| e.linked && e.state == "alive")
                    .count()
            });
            if links < 2 {
                return false;
            }
        }
        true
    })
    .await;
}
