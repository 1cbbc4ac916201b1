//! Admission against real node processes: a mesh with an operator takes
//! only the nodes it admitted and cuts off a revoked node everywhere.
//!
//! The misbehaving parties here are real `hearsay node` processes: a node
//! of an open mesh (no certificate) and a node admitted by another
//! operator.

mod common;

use std::time::{Duration, Instant};

use common::{TestNode, wait_until};
use hearsay_admission::OperatorKey;
use hearsay_crdt::Keypair;

/// Bound of every wait: generous, these run on loaded CI machines.
const SETTLE: Duration = Duration::from_secs(60);
/// Static meshes: exactly the links the tests make.
const STATIC: &str = "target_peers = 0\n";

fn origin_hex(key: &Keypair) -> String {
    key.id().to_string()
}

async fn holds_origin(node: &TestNode, key: &Keypair) -> u64 {
    let stats = node.stats().await;
    stats["version_vector"][origin_hex(key)]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_without_a_certificate_of_the_operator_are_refused() {
    let op = OperatorKey::generate();
    let (ka, kb) = (Keypair::generate(), Keypair::generate());
    let a = TestNode::start_admitted("a", &[], Some(&op), &ka, STATIC).await;
    let b = TestNode::start_admitted("b", &[&a.tcp_addr()], Some(&op), &kb, STATIC).await;
    // An open-mesh node (no certificate at all) and a node another
    // operator admitted, both dialling the mesh.
    let (ko, kw) = (Keypair::generate(), Keypair::generate());
    let outsider = TestNode::start_admitted(
        "outsider",
        &[&a.tcp_addr(), &b.tcp_addr()],
        None,
        &ko,
        STATIC,
    )
    .await;
    let stranger = TestNode::start_admitted(
        "stranger",
        &[&a.tcp_addr()],
        Some(&OperatorKey::generate()),
        &kw,
        STATIC,
    )
    .await;
    assert_eq!(a.stats().await["admission"]["mode"], "closed");
    assert_eq!(outsider.stats().await["admission"]["mode"], "open");

    let from_a = a.create_post("inside").await;
    outsider.create_post("from outside").await;
    stranger.create_post("from another mesh").await;
    wait_until(SETTLE, "b has a's post", async || {
        b.post(&from_a).await.is_some()
    })
    .await;
    // Each refusal is counted by its reason, and the links closed.
    wait_until(
        SETTLE,
        "a closes the outsider's link (no certificate) and the stranger's (another operator)",
        async || {
            a.metric("hearsay_peer_disconnects_total", "reason=\"not_admitted\"")
                .await
                >= 1.0
                && a.metric(
                    "hearsay_peer_disconnects_total",
                    "reason=\"wrong_operator\"",
                )
                .await
                    >= 1.0
        },
    )
    .await;
    // Nothing crossed in either direction, through pushes or anti-entropy
    // (a few sync intervals have passed).
    tokio::time::sleep(Duration::from_secs(5)).await;
    for node in [&a, &b] {
        assert_eq!(
            holds_origin(node, &ko).await,
            0,
            "{} took the outsider's post",
            node.name
        );
        assert_eq!(
            holds_origin(node, &kw).await,
            0,
            "{} took the stranger's post",
            node.name
        );
        let admission = &node.stats().await["admission"];
        assert_eq!(admission["admitted_peers"], 1, "{}: {admission}", node.name);
    }
    for node in [&outsider, &stranger] {
        assert!(
            node.post(&from_a).await.is_none(),
            "{} got a post of the closed mesh",
            node.name
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_node_is_cut_off_everywhere_within_seconds() {
    let op = OperatorKey::generate();
    let keys: Vec<Keypair> = (0..3).map(|_| Keypair::generate()).collect();
    let a = TestNode::start_admitted("a", &[], Some(&op), &keys[0], STATIC).await;
    let b = TestNode::start_admitted("b", &[&a.tcp_addr()], Some(&op), &keys[1], STATIC).await;
    // c is linked to both.
    let c = TestNode::start_admitted(
        "c",
        &[&a.tcp_addr(), &b.tcp_addr()],
        Some(&op),
        &keys[2],
        STATIC,
    )
    .await;
    let before = c.create_post("before the revocation").await;
    for node in [&a, &b] {
        wait_until(SETTLE, &format!("{} has c's post", node.name), async || {
            node.post(&before).await.is_some()
        })
        .await;
    }

    // The operator revokes c through a, with the CLI.
    let dir = tempfile::tempdir().expect("temporary directory");
    let key_file = dir.path().join("operator.key");
    op.save(&key_file).expect("writing the operator key");
    let started = Instant::now();
    let out = std::process::Command::new(common::binary())
        .args(["operator", "revoke", "--key"])
        .arg(&key_file)
        .arg(c.peer_id())
        .args(["--node", &a.url("")])
        .output()
        .expect("running hearsay operator revoke");
    assert!(
        out.status.success(),
        "hearsay operator revoke failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // b learns it by gossip from a, and both close their links to c.
    for node in [&a, &b] {
        wait_until(
            SETTLE,
            &format!("{} revokes c and closes its links", node.name),
            async || {
                let admission = node.stats().await["admission"].clone();
                let revoked = admission["revoked"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|n| n == &origin_hex(&keys[2])));
                revoked
                    && node
                        .metric("hearsay_peer_disconnects_total", "reason=\"revoked\"")
                        .await
                        >= 1.0
                    && admission["admitted_peers"] == 1
            },
        )
        .await;
    }
    eprintln!(
        "c cut off by a and b {:.1} s after the revocation was posted",
        started.elapsed().as_secs_f64()
    );
    // What c writes now reaches nobody; a and b still replicate.
    let seq_before = holds_origin(&a, &keys[2]).await;
    c.create_post("after the revocation").await;
    let from_b = b.create_post("still here").await;
    wait_until(SETTLE, "a has b's new post", async || {
        a.post(&from_b).await.is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    for node in [&a, &b] {
        assert_eq!(
            holds_origin(node, &keys[2]).await,
            seq_before,
            "{} took a delta of the revoked node",
            node.name
        );
        assert!(
            node.post(&before).await.is_some(),
            "{} lost c's earlier post",
            node.name
        );
    }
    // The revocation is kept: after a restart, a still refuses c.
    let mut a = a;
    a.kill();
    a.restart().await;
    let revoked = a.stats().await["admission"]["revoked"].clone();
    assert!(
        revoked
            .as_array()
            .is_some_and(|r| r.iter().any(|n| n == &origin_hex(&keys[2]))),
        "the revocation did not survive a restart: {revoked}"
    );
}
