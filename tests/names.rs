//! User names and post slugs through the name registry, between real node
//! processes: a registration or a slug is granted once, whichever nodes are
//! asked at the same time, and every node agrees afterwards.

mod common;

use std::time::Duration;

use common::{TestNode, wait_until};
use hearsay_crdt::{Keypair, UserName};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Three voters in a chain, with the registry set up through the API.
async fn mesh() -> Vec<TestNode> {
    let a = TestNode::start("names-a", &[]).await;
    let b = TestNode::start("names-b", &[&a.tcp_addr()]).await;
    let c = TestNode::start("names-c", &[&b.tcp_addr()]).await;
    let nodes = vec![a, b, c];
    let voters: Vec<String> = nodes.iter().map(TestNode::peer_id).collect();
    // The nodes dial each other's registry protocol through the mesh: wait
    // until the chain is up before setting the group up.
    let init = json!({ "voters": voters });
    let mut last = None;
    for _ in 0..50 {
        let answer = nodes[1]
            .post_json("/api/v0/registry/init", &init)
            .await
            .unwrap();
        if answer.status == StatusCode::OK {
            last = None;
            break;
        }
        last = Some(answer.json);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(last.is_none(), "registry init refused: {last:?}");
    for node in &nodes {
        wait_until(Duration::from_secs(20), "a registry leader", async || {
            let status = node.get("/api/v0/registry").await.unwrap();
            !status.json["body"]["leader"].is_null()
        })
        .await;
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_name_registered_on_every_node_at_once_goes_to_one_key() {
    let nodes = mesh().await;
    for node in &nodes {
        let stats = node.stats().await;
        assert_eq!(stats["names"], "raft", "{}", node.name);
    }
    let ann = UserName::new("ann").unwrap();
    let keys: Vec<Keypair> = (0..3).map(|_| Keypair::generate()).collect();
    let attempts = futures::future::join_all(
        nodes
            .iter()
            .zip(&keys)
            .map(|(node, key)| node.client().register_user(&ann, key, None)),
    )
    .await;
    let mut winner = None;
    for (i, result) in attempts.into_iter().enumerate() {
        match result {
            Ok(acked) => {
                assert_eq!(acked.value.public_key, Some(keys[i].id()));
                assert!(
                    winner.replace(i).is_none(),
                    "two registrations of ann granted"
                );
            }
            Err(e) => assert_eq!(
                e.status(),
                Some(StatusCode::CONFLICT),
                "a registration that lost is a 409: {e}"
            ),
        }
    }
    let winner = winner.expect("one registration of ann granted");
    // The registry says so on every node, and the profile follows.
    for node in &nodes {
        let shown = node.get("/api/v0/names/@ann").await.unwrap();
        assert_eq!(shown.status, StatusCode::OK);
        assert_eq!(shown.json["body"]["owner"], keys[winner].id().to_string());
        wait_until(Duration::from_secs(20), "ann's key everywhere", async || {
            matches!(node.client().user(&ann).await, Ok(p) if p.public_key == Some(keys[winner].id()))
        })
        .await;
    }
    // Registering again with the winning key is granted (idempotent); with
    // another key, refused.
    let again = nodes[2]
        .client()
        .register_user(&ann, &keys[winner], None)
        .await;
    assert!(again.is_ok(), "{again:?}");
    let loser = (winner + 1) % 3;
    let refused = nodes[0]
        .client()
        .register_user(&ann, &keys[loser], None)
        .await;
    assert!(matches!(&refused, Err(e) if e.status() == Some(StatusCode::CONFLICT)));
    // A user name cannot be claimed around the signature check.
    let direct = nodes[0]
        .post_json("/api/v0/names", &json!({"name": "@bob", "owner": "x"}))
        .await
        .unwrap();
    assert_eq!(direct.status, StatusCode::BAD_REQUEST);
}

async fn create(node: &TestNode, body: Value) -> (StatusCode, Value) {
    let answer = node.post_json("/api/v0/p", &body).await.unwrap();
    (answer.status, answer.json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slug_names_one_post_and_its_permalink_leads_there() {
    let nodes = mesh().await;
    // The same anonymous slug asked on every node at once: one post gets it.
    let asks = futures::future::join_all(nodes.iter().enumerate().map(|(i, node)| {
        create(
            node,
            json!({"body": format!("take {i}"), "slug": "launch-day"}),
        )
    }))
    .await;
    let granted: Vec<&Value> = asks
        .iter()
        .filter(|(status, _)| *status == StatusCode::OK)
        .map(|(_, json)| json)
        .collect();
    assert_eq!(granted.len(), 1, "{asks:?}");
    for (status, json) in &asks {
        if *status != StatusCode::OK {
            assert_eq!(*status, StatusCode::CONFLICT, "{json}");
        }
    }
    assert_eq!(granted[0]["slug"], "/p/launch-day");
    let id = granted[0]["body"]["id"].as_str().unwrap().to_string();
    // Every node resolves it to that post (once the post has arrived).
    for node in &nodes {
        wait_until(Duration::from_secs(20), "the slug's post", async || {
            let answer = node.get("/api/v0/slugs/launch-day").await.unwrap();
            answer.status == StatusCode::OK && answer.json["body"]["id"] == id.as_str()
        })
        .await;
    }
    let page = nodes[2]
        .http()
        .get(nodes[2].url("/p/launch-day"))
        .send()
        .await
        .unwrap();
    // reqwest follows the redirect to the id permalink.
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.url().path(), format!("/p/{id}"));

    // A user's slug lives under the user's name: the same words are free
    // for another author.
    let (status, by_bob) = create(
        &nodes[0],
        json!({"body": "b", "author": "bob", "slug": "launch-day"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{by_bob}");
    assert_eq!(by_bob["slug"], "/p/bob/launch-day");
    let (status, _) = create(
        &nodes[1],
        json!({"body": "b2", "author": "bob", "slug": "launch-day"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);

    // Anonymous posts without a slug get distinct short ones.
    let mut made = std::collections::BTreeSet::new();
    for i in 0..5 {
        let (status, json) = create(&nodes[i % 3], json!({"body": format!("anon {i}")})).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        let slug = json["slug"].as_str().unwrap().to_string();
        assert!(slug.starts_with("/p/") && slug.len() == 10, "{slug}");
        assert!(made.insert(slug));
    }
    // A bad slug is refused before anything is claimed.
    let (status, _) = create(&nodes[0], json!({"body": "x", "slug": "Not A Slug"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
