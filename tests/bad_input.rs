//! Bad input, from HTTP clients and from peers, is refused, counted and
//! never stored.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Answer, TestNode, wait_until};
use futures::StreamExt as _;
use hearsay_crdt::{Delta, DocId, Keypair, MemoryDocs, NewPost, Replica, UserName};
use hearsay_node::net::{BehaviourEvent, DELTA_TOPIC, SyncRequest, SyncResponse, build_swarm};
use libp2p::gossipsub::{self, IdentTopic};
use libp2p::request_response::{self, OutboundFailure, OutboundRequestId};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId};
use rand::Rng as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};

/// How long a peer's message may take to be processed and counted.
const SETTLE: Duration = Duration::from_secs(30);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

// ---- HTTP -------------------------------------------------------------------

/// Sends `request`, expects `code` with the error envelope.
async fn expect_error(
    node: &TestNode,
    what: &str,
    code: StatusCode,
    request: reqwest::RequestBuilder,
) {
    let answer = node
        .send(request)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e:#}"));
    common::assert_error(&answer, code, what);
}

/// Asserts the node holds no post and its revision is `revision`.
async fn assert_state(node: &TestNode, revision: u64, posts: usize, when: &str) {
    assert_eq!(
        node.revision().await,
        revision,
        "{when}: revision of {}",
        node.name
    );
    assert_eq!(
        node.posts(500).await.len(),
        posts,
        "{when}: listing of {}",
        node.name
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_http_input_is_refused_and_stores_nothing() {
    let node = TestNode::start("strict", &[]).await;
    assert_state(&node, 0, 0, "at start").await;
    let http = node.http();
    let posts = node.url("/api/v0/p");
    const JSON: &str = "application/json";
    const FORM: &str = "application/x-www-form-urlencoded";
    let bad_request = StatusCode::BAD_REQUEST;

    // POST /api/v0/p, JSON.
    let json_cases: Vec<(&str, Value)> = vec![
        ("missing body", json!({"author": "ann"})),
        ("null body", json!({"author": "ann", "body": null})),
        ("empty body", json!({"author": "ann", "body": ""})),
        ("blank body", json!({"author": "ann", "body": " \n\t "})),
        (
            "body of 4,097 characters",
            json!({"body": "x".repeat(4097)}),
        ),
        (
            "body of 4,097 two-byte characters",
            json!({"body": "é".repeat(4097)}),
        ),
        ("body not a string", json!({"body": 42})),
        (
            "reply_to not an id",
            json!({"body": "hi", "reply_to": "not-an-id"}),
        ),
        (
            "reply_to of 31 hex digits",
            json!({"body": "hi", "reply_to": "0".repeat(31)}),
        ),
        (
            "reply_to in upper case",
            json!({"body": "hi", "reply_to": "ABCDEF0123456789ABCDEF0123456789"}),
        ),
        (
            "author with a space",
            json!({"body": "hi", "author": "ann smith"}),
        ),
        (
            "author of 33 characters",
            json!({"body": "hi", "author": "a".repeat(33)}),
        ),
        (
            "author with a slash",
            json!({"body": "hi", "author": "../admin"}),
        ),
        (
            "author not a string",
            json!({"body": "hi", "author": ["ann"]}),
        ),
        ("a JSON array", json!(["hi"])),
        ("a JSON string", json!("hi")),
    ];
    for (what, body) in &json_cases {
        expect_error(&node, what, bad_request, http.post(&posts).json(body)).await;
    }
    for (what, raw) in [
        ("malformed JSON", "{\"body\": \"hi\""),
        ("not JSON at all", "hello"),
        ("an empty request", ""),
        ("JSON with a trailing comma", "{\"body\": \"hi\",}"),
    ] {
        let request = http
            .post(&posts)
            .header(reqwest::header::CONTENT_TYPE, JSON)
            .body(raw);
        expect_error(&node, what, bad_request, request).await;
    }
    // POST /api/v0/p, form.
    for (what, raw) in [
        ("form without body", "author=ann".to_owned()),
        ("form with empty body", "author=ann&body=".to_owned()),
        ("form with a bad author", "author=a%20b&body=hi".to_owned()),
        (
            "form with a bad reply_to",
            "body=hi&reply_to=xyz".to_owned(),
        ),
        (
            "form with a long body",
            format!("body={}", "y".repeat(4097)),
        ),
    ] {
        let request = http
            .post(&posts)
            .header(reqwest::header::CONTENT_TYPE, FORM)
            .body(raw);
        expect_error(&node, what, bad_request, request).await;
    }

    // GET /api/v0/p: limit and before.
    for query in [
        "limit=0",
        "limit=501",
        "limit=x",
        "limit=-1",
        "limit=",
        "limit=1.5",
        "before=xyz",
        "before=",
        "before=ABCDEF0123456789ABCDEF0123456789",
        "before=0123456789abcdef0123456789abcdef00",
    ] {
        let request = http.get(node.url(&format!("/api/v0/p?{query}")));
        expect_error(&node, query, bad_request, request).await;
    }

    // One post: bad and unknown ids.
    let unknown = "0123456789abcdef0123456789abcdef";
    for (what, path, code) in [
        ("an id that is not one", "/api/v0/p/not-an-id", bad_request),
        (
            "an id in upper case",
            "/api/v0/p/0123456789ABCDEF0123456789ABCDEF",
            bad_request,
        ),
        (
            "an unknown id",
            "/api/v0/p/0123456789abcdef0123456789abcdef",
            StatusCode::NOT_FOUND,
        ),
    ] {
        expect_error(&node, what, code, http.get(node.url(path))).await;
    }
    let edit = json!({"pos": 0, "insert": "x"});
    expect_error(
        &node,
        "PATCH of an unknown id",
        StatusCode::NOT_FOUND,
        http.patch(node.url(&format!("/api/v0/p/{unknown}")))
            .json(&edit),
    )
    .await;
    expect_error(
        &node,
        "PATCH of a bad id",
        bad_request,
        http.patch(node.url("/api/v0/p/nope")).json(&edit),
    )
    .await;
    expect_error(
        &node,
        "DELETE of an unknown id",
        StatusCode::NOT_FOUND,
        http.delete(node.url(&format!("/api/v0/p/{unknown}"))),
    )
    .await;
    expect_error(
        &node,
        "DELETE of a bad id",
        bad_request,
        http.delete(node.url("/api/v0/p/nope")),
    )
    .await;
    expect_error(
        &node,
        "an unknown route",
        StatusCode::NOT_FOUND,
        http.get(node.url("/api/v0/nothing-here")),
    )
    .await;

    assert_state(&node, 0, 0, "after the bad requests").await;

    // Edits of an existing post: out of range or malformed change nothing.
    let id = node.create_post("hello").await;
    // (Stats may trail an acknowledgement by a moment; see the replication
    // test `stats_cover_every_acknowledged_write`.)
    wait_until(SETTLE, "stats show the good post", async || {
        node.revision().await == 1
    })
    .await;
    assert_state(&node, 1, 1, "after one good post").await;
    let post_path = node.url(&format!("/api/v0/p/{id}"));
    for (what, body) in [
        ("pos past the end", json!({"pos": 6, "insert": "x"})),
        ("far past the end", json!({"pos": 1_000_000, "insert": "x"})),
        ("delete past the end", json!({"pos": 2, "delete": 4})),
        ("negative pos", json!({"pos": -1, "insert": "x"})),
        ("pos not a number", json!({"pos": "0", "insert": "x"})),
        ("missing pos", json!({"insert": "x"})),
        (
            "unknown field",
            json!({"pos": 0, "insert": "x", "color": "red"}),
        ),
        (
            "insert making the body too long",
            json!({"pos": 0, "insert": "z".repeat(4092)}),
        ),
    ] {
        expect_error(&node, what, bad_request, http.patch(&post_path).json(&body)).await;
    }
    let request = http
        .patch(&post_path)
        .header(reqwest::header::CONTENT_TYPE, JSON)
        .body("{\"pos\": ");
    expect_error(&node, "malformed PATCH JSON", bad_request, request).await;

    assert_state(&node, 1, 1, "after the bad edits").await;
    let post = node.post(&id).await.expect("the good post");
    assert_eq!(post["body"], "hello");
    assert!(
        post["edited_at"].is_null(),
        "edited by a refused edit: {post}"
    );
}

/// Refusals that come from the HTTP framework rather than a handler (a body
/// over the request size limit, a repeated query parameter, a wrong method)
/// are bad input too: a 4xx in the same JSON envelope, nothing stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framework_refusals_use_the_error_envelope() {
    let node = TestNode::start("envelope", &[]).await;
    let http = node.http();
    let big = json!({"body": "a".repeat(70_000)});
    let cases = [
        (
            "a request body over 64 KiB",
            StatusCode::PAYLOAD_TOO_LARGE,
            http.post(node.url("/api/v0/p")).json(&big),
        ),
        (
            "a repeated limit",
            StatusCode::BAD_REQUEST,
            http.get(node.url("/api/v0/p?limit=1&limit=2")),
        ),
        (
            "PUT on the post collection",
            StatusCode::METHOD_NOT_ALLOWED,
            http.put(node.url("/api/v0/p")).json(&json!({"body": "hi"})),
        ),
    ];
    let mut failures = Vec::new();
    for (what, code, request) in cases {
        let answer: Answer = node.send(request).await.expect(what);
        let enveloped = answer.status == code
            && answer.json["status"] == "ERROR"
            && answer.json["error"]
                .as_str()
                .is_some_and(|e| !e.trim().is_empty());
        if !enveloped {
            failures.push(format!("{what}: {} {}", answer.status, answer.json));
        }
    }
    assert_state(&node, 0, 0, "after the refused requests").await;
    assert!(
        failures.is_empty(),
        "answers outside the {{\"status\": \"ERROR\", \"error\": ...}} envelope:\n{}",
        failures.join("\n")
    );
}

// ---- a rogue peer -------------------------------------------------------------

/// What the test asks of the rogue peer's swarm task.
enum RogueCommand {
    Publish(Vec<u8>, oneshot::Sender<Result<(), String>>),
    Sync(
        PeerId,
        Vec<u8>,
        oneshot::Sender<Result<SyncResponse, OutboundFailure>>,
    ),
}

/// A libp2p peer built with the node's own behaviour, in this process,
/// whose swarm runs in a task: it dials a node, subscribes to the delta topic
/// and publishes whatever the test gives it.
struct Rogue {
    commands: mpsc::Sender<RogueCommand>,
    subscribed: watch::Receiver<HashSet<PeerId>>,
    task: tokio::task::JoinHandle<()>,
}

impl Rogue {
    fn start(dial: &str) -> Rogue {
        let mut swarm = build_swarm(libp2p::identity::Keypair::generate_ed25519(), 16, true)
            .expect("building the rogue swarm");
        let topic = IdentTopic::new(DELTA_TOPIC);
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&topic)
            .expect("subscribing");
        let addr: Multiaddr = dial.parse().expect("node multiaddr");
        swarm.dial(addr).expect("dialling the node");
        let (commands, mut rx) = mpsc::channel::<RogueCommand>(16);
        let (subscribed_tx, subscribed) = watch::channel(HashSet::new());
        let task = tokio::spawn(async move {
            let mut pending: HashMap<
                OutboundRequestId,
                oneshot::Sender<Result<SyncResponse, OutboundFailure>>,
            > = HashMap::new();
            loop {
                tokio::select! {
                    command = rx.recv() => match command {
                        None => break,
                        Some(RogueCommand::Publish(data, reply)) => {
                            let result = swarm
                                .behaviour_mut()
                                .gossipsub
                                .publish(topic.clone(), data)
                                .map(|_| ())
                                .map_err(|e| e.to_string());
                            let _ = reply.send(result);
                        }
                        Some(RogueCommand::Sync(peer, version_vector, reply)) => {
                            let id = swarm
                                .behaviour_mut()
                                .sync
                                .send_request(&peer, SyncRequest { version_vector });
                            pending.insert(id, reply);
                        }
                    },
                    event = swarm.select_next_some() => match event {
                        SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(
                            gossipsub::Event::Subscribed { peer_id, topic: t },
                        )) if t == topic.hash() => {
                            subscribed_tx.send_modify(|s| {
                                s.insert(peer_id);
                            });
                        }
                        SwarmEvent::Behaviour(BehaviourEvent::Sync(
                            request_response::Event::Message { message, .. },
                        )) => match message {
                            // The node's own anti-entropy: the rogue has nothing.
                            request_response::Message::Request { channel, .. } => {
                                let _ = swarm.behaviour_mut().sync.send_response(
                                    channel,
                                    SyncResponse { deltas: Vec::new(), more: false },
                                );
                            }
                            request_response::Message::Response { request_id, response } => {
                                if let Some(reply) = pending.remove(&request_id) {
                                    let _ = reply.send(Ok(response));
                                }
                            }
                        },
                        SwarmEvent::Behaviour(BehaviourEvent::Sync(
                            request_response::Event::OutboundFailure { request_id, error, .. },
                        )) => {
                            if let Some(reply) = pending.remove(&request_id) {
                                let _ = reply.send(Err(error));
                            }
                        }
                        _ => {}
                    },
                }
            }
        });
        Rogue {
            commands,
            subscribed,
            task,
        }
    }

    /// Waits until `peer` has told the rogue it subscribes to the delta topic.
    async fn wait_subscribed(&mut self, peer: PeerId) {
        let waited =
            tokio::time::timeout(SETTLE, self.subscribed.wait_for(|s| s.contains(&peer))).await;
        assert!(
            matches!(waited, Ok(Ok(_))),
            "the node {peer} did not subscribe to {DELTA_TOPIC} towards the rogue peer within {SETTLE:?}"
        );
    }

    async fn publish(&self, what: &str, data: Vec<u8>) {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(RogueCommand::Publish(data, reply))
            .await
            .expect("rogue task running");
        rx.await
            .expect("rogue task answers")
            .unwrap_or_else(|e| panic!("publishing {what}: {e}"));
    }

    /// Sends a sync request: the page, or how the request failed. Panics
    /// when neither arrives within [`SETTLE`].
    async fn sync(
        &self,
        peer: PeerId,
        version_vector: Vec<u8>,
    ) -> Result<SyncResponse, OutboundFailure> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(RogueCommand::Sync(peer, version_vector, reply))
            .await
            .expect("rogue task running");
        tokio::time::timeout(SETTLE, rx)
            .await
            .unwrap_or_else(|_| panic!("no answer to a sync request within {SETTLE:?}"))
            .expect("rogue task answers")
    }
}

impl Drop for Rogue {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A real post from a fresh replica: its id and its signed delta.
fn post_delta(key: Keypair, body: &str) -> (String, Delta) {
    let mut replica = Replica::new(key, MemoryDocs::default()).expect("replica");
    let new = NewPost {
        author: UserName::new("rogue").expect("user name"),
        body: body.to_owned(),
        reply_to: None,
    };
    let (post, delta) = replica
        .create_post(&new, None, now_ms())
        .expect("creating a post");
    (post.id.to_string(), delta)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_peer_changes_nothing_and_is_counted() {
    let b = TestNode::start("b", &[]).await;
    let a = TestNode::start("a", &[&b.tcp_addr()]).await;
    let b_peer: PeerId = b.peer_id().parse().expect("peer id");
    let mut rogue = Rogue::start(&b.tcp_addr());
    rogue.wait_subscribed(b_peer).await;
    assert_eq!(b.revision().await, 0);
    assert_eq!(a.revision().await, 0);

    // (a) garbage, and garbage behind the delta magic.
    let mut garbage = vec![0u8; 300];
    rand::rng().fill(&mut garbage[..]);
    rogue.publish("random garbage", garbage.clone()).await;
    let mut magic = b"HSD1".to_vec();
    magic.extend_from_slice(&garbage);
    rogue.publish("garbage behind the magic", magic).await;

    // A real automerge change to wrap.
    let (_, source) = post_delta(Keypair::generate(), "a change to abuse");
    let change = source.change.clone();
    let (key_x, key_y) = (Keypair::generate(), Keypair::generate());

    // (b) forged: signed by X, claiming to come from Y.
    let mut forged =
        Delta::sign(&key_x, 1, DocId::Public(1), change.clone(), now_ms()).expect("signing");
    forged.origin = key_y.id();
    rogue.publish("a forged delta", forged.encode()).await;

    // (c) altered: validly signed by X, then one byte of the change flipped.
    let mut altered =
        Delta::sign(&key_x, 1, DocId::Public(1), change.clone(), now_ms()).expect("signing");
    let middle = altered.change.len() / 2;
    altered.change[middle] ^= 0x01;
    rogue.publish("an altered delta", altered.encode()).await;

    // (d) a valid encoding, truncated.
    let valid = source.encode();
    rogue
        .publish("a truncated delta", valid[..valid.len() - 10].to_vec())
        .await;

    // A sync request whose version vector does not decode: an empty answer.
    let answer = rogue.sync(b_peer, vec![0xff; 10]).await;
    match answer {
        Ok(page) => assert!(
            page.deltas.is_empty() && !page.more,
            "B answered a garbage version vector with {} deltas",
            page.deltas.len()
        ),
        // Closing the stream is a refusal too; a timeout, a failed dial or
        // an unsupported protocol is not an answer at all.
        Err(e @ (OutboundFailure::ConnectionClosed | OutboundFailure::Io(_))) => {
            eprintln!("B refused the garbage sync request: {e}")
        }
        Err(e) => panic!("the garbage sync request was neither answered nor refused: {e}"),
    }

    // Counted by kind: the forged and the altered delta fail their
    // signatures; the garbage, the truncation and the sync request are
    // malformed.
    wait_until(
        SETTLE,
        "B counts 2 bad signatures and 3 malformed messages",
        async || {
            let stats = b.stats().await;
            let n = |kind: &str| stats["rejected"][kind].as_u64().unwrap_or(0);
            n("bad_signature") >= 2 && n("malformed") >= 3
        },
    )
    .await;
    let rejected = b.stats().await["rejected"].clone();
    eprintln!("rejections at B: {rejected}");
    for node in [&b, &a] {
        assert_state(node, 0, 0, "after the rogue's bad messages").await;
    }

    // Control: valid deltas from the same rogue travel the same path.
    let (control_id, control) = post_delta(Keypair::generate(), "a valid post via the rogue");
    rogue.publish("a valid delta", control.encode()).await;
    for node in [&b, &a] {
        wait_until(
            SETTLE,
            &format!("{} applies the valid delta", node.name),
            async || node.revision().await >= 1,
        )
        .await;
        wait_until(
            SETTLE,
            &format!("{} serves the rogue's valid post", node.name),
            async || node.post(&control_id).await.is_some(),
        )
        .await;
        assert_eq!(
            node.post_body(&control_id).await.as_deref(),
            Some("a valid post via the rogue")
        );
        assert_state(node, 1, 1, "after the valid delta").await;
    }
    let rejected_after = b.stats().await["rejected"].clone();
    assert_eq!(
        rejected_after["bad_signature"], rejected["bad_signature"],
        "the valid deltas were counted as bad signatures"
    );
}
