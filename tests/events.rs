//! The event stream and tokens against real node processes: resuming on
//! another node with no gap and no repeat, a slow consumer cut off with its
//! token, a token ahead of the node, read-your-writes across nodes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{TestNode, assert_error, wait_until};
use hearsay_crdt::{NodeId, VersionVector};
use hearsay_node::client::{Client, EventStream, StatusCode, StreamEvent};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bound on waiting for one event, or for a node to catch up.
const WAIT: Duration = Duration::from_secs(60);

/// The next message of `stream`, bounded in time.
async fn next(stream: &mut EventStream, what: &str) -> Option<StreamEvent> {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .unwrap_or_else(|_| panic!("no event within {WAIT:?} ({what})"))
        .unwrap_or_else(|e| panic!("reading the stream ({what}): {e}"))
}

/// A change as the stream names it: origin and seq.
fn key(event: &StreamEvent) -> (String, u64) {
    let data = event.json();
    (
        data["origin"].as_str().expect("origin").to_owned(),
        data["seq"].as_u64().expect("seq"),
    )
}

fn post_id(event: &StreamEvent) -> String {
    event.json()["post"]["id"]
        .as_str()
        .expect("a post event carries its post")
        .to_owned()
}

/// Reads change events until `done` holds for the post ids seen so far;
/// every change event is returned. Fails on `unavailable`.
async fn read_until(
    stream: &mut EventStream,
    what: &str,
    mut done: impl FnMut(&BTreeSet<String>) -> bool,
) -> Vec<StreamEvent> {
    let mut seen = BTreeSet::new();
    let mut events = Vec::new();
    while !done(&seen) {
        let event = next(stream, what)
            .await
            .unwrap_or_else(|| panic!("the stream ended ({what})"));
        assert_ne!(event.event, "unavailable", "{what}: {}", event.data);
        assert_ne!(event.event, "lagged", "{what}: {}", event.data);
        if event.is_change() {
            if event.event == "post" {
                seen.insert(post_id(&event));
            }
            events.push(event);
        }
    }
    events
}

/// A token naming `extra` changes of an origin no node has heard of.
fn token_ahead(token: &str, extra: u64) -> String {
    let mut vv = VersionVector::from_token(token).expect("a node's token decodes");
    vv.set(NodeId([0xee; 32]), extra);
    vv.to_token()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_resumed_on_another_node_misses_nothing_and_repeats_nothing() {
    let b = TestNode::start("b", &[]).await;
    let a = TestNode::start("a", &[&b.tcp_addr()]).await;
    let c = TestNode::start("c", &[&b.tcp_addr()]).await;
    let mut all = BTreeSet::new();
    for i in 0..20 {
        all.insert(a.create_post(&format!("before the switch {i}")).await);
    }

    // Read part of the history at A, then drop the connection.
    let mut at_a = a.client().events(Some("start"), &[]).await.unwrap();
    let first = read_until(&mut at_a, "first half at A", |seen| seen.len() >= 10).await;
    let token = at_a.last_id().expect("events carry ids").to_owned();
    drop(at_a);

    // Writes keep arriving at A and C while the client moves to B.
    let writers = {
        let (a, c) = (a.client().clone(), c.client().clone());
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..15 {
                let (text_a, text_c) = (
                    format!("during the switch, A {i}"),
                    format!("during the switch, C {i}"),
                );
                let (x, y) = tokio::join!(
                    a.create_post(Some("ann"), &text_a, None),
                    c.create_post(Some("cid"), &text_c, None),
                );
                ids.push(x.expect("write at A").id.to_string());
                ids.push(y.expect("write at C").id.to_string());
            }
            ids
        })
    };
    let mut at_b = b.client().events(Some(&token), &[]).await.unwrap();
    let during_switch = writers.await.unwrap();
    all.extend(during_switch);
    let first_ids: BTreeSet<String> = first
        .iter()
        .filter(|e| e.event == "post")
        .map(post_id)
        .collect();
    let expected_rest: BTreeSet<String> = all.difference(&first_ids).cloned().collect();
    let rest = read_until(&mut at_b, "the rest at B", |seen| {
        expected_rest.is_subset(seen)
    })
    .await;

    // The union is exactly the changes: every post once, no change twice.
    let mut keys = BTreeMap::new();
    for event in first.iter().chain(&rest) {
        if let Some(earlier) = keys.insert(key(event), event.event.clone()) {
            panic!("change {:?} sent twice ({earlier})", key(event));
        }
    }
    let posts: Vec<String> = first
        .iter()
        .chain(&rest)
        .filter(|e| e.event == "post")
        .map(post_id)
        .collect();
    let unique: BTreeSet<String> = posts.iter().cloned().collect();
    assert_eq!(unique.len(), posts.len(), "a post event repeated");
    assert_eq!(unique, all, "the two streams together hold every post");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_cut_off_with_its_token_and_resumes_without_a_gap() {
    let node =
        TestNode::start_with_config("slow", &[], "events_buffer = 4\nevents_stall_ms = 200\n")
            .await;
    // About 12 MB of events (4,000 four-byte characters a post): more than
    // the kernel's socket buffers (up to 4 MiB for a sender by default) and
    // the HTTP server's hold, so the node's buffer fills.
    let body = "\u{1F980}".repeat(4000);
    let mut all = BTreeSet::new();
    for round in 0..75 {
        let writes = (0..10).map(|i| {
            let client = node.client().clone();
            let body = format!("{round}-{i} {body}");
            async move { client.create_post(Some("ann"), &body, None).await }
        });
        for post in futures::future::join_all(writes).await {
            all.insert(post.expect("write").id.to_string());
        }
    }

    // A consumer with a tiny receive buffer that does not read for a while.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let addr: std::net::SocketAddr = node
        .client()
        .base_url()
        .trim_start_matches("http://")
        .parse()
        .expect("the node's HTTP address");
    let mut conn = socket.connect(addr).await.unwrap();
    // HTTP/1.0: the body is delimited by the close, not chunked.
    conn.write_all(b"GET /api/v0/events?from=start HTTP/1.0\r\nHost: node\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, conn.read_to_end(&mut raw))
        .await
        .expect("the node ends the stream of a consumer it cut off")
        .unwrap();
    let text = String::from_utf8_lossy(&raw);
    let (_, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let mut received = Vec::new();
    let mut lagged = None;
    for block in body.split("\n\n") {
        let field = |name: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                .map(str::to_owned)
        };
        match field("event").as_deref() {
            Some("post") => {
                let data: Value = serde_json::from_str(&field("data").unwrap()).unwrap();
                received.push(data["post"]["id"].as_str().unwrap().to_owned());
            }
            Some("lagged") => {
                let data: Value = serde_json::from_str(&field("data").unwrap()).unwrap();
                lagged = Some(data["token"].as_str().unwrap().to_owned());
            }
            _ => {}
        }
    }
    let token = lagged.expect("a `lagged` event closes the stream of a slow consumer");
    assert!(
        received.len() < all.len(),
        "the consumer was cut off before the end ({} of {})",
        received.len(),
        all.len()
    );
    assert!(
        body.trim_end().ends_with('}'),
        "the lagged event is the last message"
    );

    // Resume with the token: exactly the rest.
    let mut resumed = node.client().events(Some(&token), &[]).await.unwrap();
    let before: BTreeSet<String> = received.iter().cloned().collect();
    assert_eq!(before.len(), received.len(), "no repeat before the cut");
    let expected_rest: BTreeSet<String> = all.difference(&before).cloned().collect();
    let rest = read_until(&mut resumed, "the rest after the cut", |seen| {
        expected_rest.is_subset(seen)
    })
    .await;
    let rest_ids: Vec<String> = rest
        .iter()
        .filter(|e| e.event == "post")
        .map(post_id)
        .collect();
    assert!(
        rest_ids.iter().all(|id| !before.contains(id)),
        "a post delivered before the cut came again"
    );
    assert_eq!(rest_ids.len() + received.len(), all.len());
    let metrics = node.client().metrics().await.unwrap();
    assert!(
        metrics.contains("hearsay_event_streams_lagged_total 1"),
        "the cut is counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_ahead_of_the_node_gets_an_explicit_event_then_the_rest() {
    let node = TestNode::start("ahead", &[]).await;
    let mut ids = BTreeSet::new();
    for i in 0..3 {
        ids.insert(node.create_post(&format!("post {i}")).await);
    }
    // The node's own origin as a client that saw nothing of it, plus five
    // changes of an origin this node has never heard of.
    let empty = VersionVector::new().to_token();
    let token = token_ahead(&empty, 5);
    let mut stream = node.client().events(Some(&token), &[]).await.unwrap();
    let first = next(&mut stream, "the first event").await.unwrap();
    assert_eq!(first.event, "ahead", "{}", first.data);
    let ahead = &first.json()["ahead"][0];
    assert_eq!(ahead["origin"], NodeId([0xee; 32]).to_string());
    assert_eq!(
        (ahead["token_seq"].as_u64(), ahead["node_seq"].as_u64()),
        (Some(5), Some(0))
    );
    // Everything else still comes, then `ready`.
    let mut seen = BTreeSet::new();
    loop {
        let event = next(&mut stream, "replay after ahead").await.unwrap();
        match event.event.as_str() {
            "post" => {
                seen.insert(post_id(&event));
            }
            "ready" => break,
            other => panic!("unexpected {other}: {}", event.data),
        }
    }
    assert_eq!(seen, ids);
    // The resume point keeps the origin it is ahead on.
    let position = VersionVector::from_token(stream.last_id().unwrap()).unwrap();
    assert_eq!(position.get(&NodeId([0xee; 32])), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_tokens_and_filters_are_refused_with_400() {
    let node = TestNode::start("tokens", &[]).await;
    for path in [
        "/api/v0/events?from=not*a*token",
        "/api/v0/events?kind=posts",
        "/api/v0/events?author=two%20words",
        "/api/v0/p?after=@@@",
        "/api/v0/p?after=AA&wait_ms=forever",
    ] {
        let answer = node.get(path).await.unwrap();
        assert_error(&answer, StatusCode::BAD_REQUEST, path);
    }
    let answer = node
        .send(
            node.http()
                .get(node.url("/api/v0/events"))
                .header("last-event-id", "%%%"),
        )
        .await
        .unwrap();
    assert_error(&answer, StatusCode::BAD_REQUEST, "Last-Event-Id");
    assert!(
        answer.error_message().unwrap().contains("Last-Event-Id"),
        "the message names the header"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_after_a_write_token_sees_the_write_on_another_node() {
    let a = TestNode::start("a", &[]).await;
    let c = TestNode::start("c", &[&a.tcp_addr()]).await;
    for round in 0..3 {
        let written = a
            .client()
            .create_post_acked(Some("ann"), &format!("read me anywhere {round}"), None)
            .await
            .unwrap();
        assert!(!written.token.is_empty(), "a write answers with its token");
        let id = written.value.id.to_string();
        // At C, straight away: the read waits until C holds the write.
        let read = c
            .client()
            .get_after(&format!("/api/v0/p/{id}"), &written.token, 30_000)
            .await
            .expect("C catches up with the token");
        assert_eq!(read["post"]["id"], id.as_str());
        let listed = c
            .client()
            .get_after("/api/v0/p?limit=5", &written.token, 30_000)
            .await
            .unwrap();
        assert!(
            listed
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["id"] == id.as_str()),
            "listings honour the token too"
        );
    }

    // A token C cannot reach: 409 after the bounded wait, saying how far.
    let stats = c.stats().await;
    let token = token_ahead(stats["token"].as_str().unwrap(), 7);
    let answer = c
        .get(&format!("/api/v0/p?after={token}&wait_ms=300"))
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::CONFLICT, "{}", answer.json);
    assert_eq!(answer.json["status"], "BEHIND");
    let behind = &answer.json["body"]["behind"][0];
    assert_eq!(behind["origin"], NodeId([0xee; 32]).to_string());
    assert_eq!(
        (behind["want"].as_u64(), behind["have"].as_u64()),
        (Some(7), Some(0))
    );
    assert!(answer.json["body"]["waited_ms"].as_u64().unwrap() >= 300);
    assert!(answer.error_message().is_none() || answer.json["error"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_sends_only_what_its_filters_ask_and_keeps_alive() {
    let node = TestNode::start_with_config("live", &[], "events_keepalive_ms = 200\n").await;
    let old = node.create_post("written before the stream").await;
    let client: &Client = node.client();
    let mut stream = client
        .events(None, &[("author", "ann"), ("kind", "post,edit")])
        .await
        .unwrap();
    let ready = next(&mut stream, "ready").await.unwrap();
    assert_eq!(
        ready.event, "ready",
        "a live-only stream starts at the head"
    );

    client
        .create_post(Some("bob"), "not ann's", None)
        .await
        .unwrap();
    let mine = client
        .create_post(Some("ann"), "ann's", None)
        .await
        .unwrap();
    client.delete(&mine.id.to_string()).await.unwrap();
    let edited = client
        .create_post(Some("ann"), "ann's second", None)
        .await
        .unwrap();
    client
        .edit(&edited.id.to_string(), 0, 0, ">> ")
        .await
        .unwrap();

    let mut got = Vec::new();
    while got.len() < 3 {
        let event = next(&mut stream, "filtered live events").await.unwrap();
        if event.is_change() {
            got.push((event.event.clone(), post_id(&event)));
        }
    }
    let (mine, edited) = (mine.id.to_string(), edited.id.to_string());
    assert_eq!(
        got,
        vec![
            ("post".to_owned(), mine.clone()),
            ("post".to_owned(), edited.clone()),
            ("edit".to_owned(), edited.clone()),
        ],
        "ann's posts and edits only: no bob, no delete, nothing from before ({old})"
    );
    // Keep-alive comments arrive on an idle stream.
    let before = stream.comments;
    let _ = tokio::time::timeout(Duration::from_millis(1500), stream.next()).await;
    assert!(
        stream.comments > before,
        "keep-alive comments on an idle stream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hearsay_tail_prints_events_as_they_arrive() {
    let node = TestNode::start("tail", &[]).await;
    let first = node.create_post("before tail").await;
    let mut tail = tokio::process::Command::new(common::binary())
        .args([
            "tail",
            "--json",
            "--from",
            "start",
            "--node",
            node.client().base_url(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let second = node.create_post("while tail runs").await;
    let stdout = tail.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout);
    let mut posts = Vec::new();
    wait_until(WAIT, "tail prints both posts", async || {
        let mut line = String::new();
        if let Ok(Ok(n)) = tokio::time::timeout(
            Duration::from_secs(1),
            tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut line),
        )
        .await
            && n > 0
        {
            let v: Value = serde_json::from_str(&line).expect("one JSON object a line");
            if v["event"] == "post" {
                posts.push(v["data"]["post"]["id"].as_str().unwrap().to_owned());
            }
        }
        posts.len() >= 2
    })
    .await;
    assert_eq!(posts, vec![first, second]);
    tail.kill().await.unwrap();
}
