//! The hyperwave-compatible API, kept and checked against a real node:
//! `GET /api/v0/p` (newest 64 by default, `before` paginates),
//! `POST /api/v0/p` (form or JSON: `author`, `body`, `reply_to`),
//! `GET /api/v0/p/{id}` (`{"post": ..., "prev": ...}`), and overload answered
//! 503 `{"status": "SLOWDOWN", "retry_after_ms": N}` with `Retry-After`, with
//! nothing half stored.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::process::Stdio;
use std::time::Duration;

use common::TestNode;
use hearsay_node::client::{Client, ClientError};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const FORM: &str = "application/x-www-form-urlencoded";

/// Creates `n` posts by `author`, alternately as JSON and as a form; their
/// ids in creation order.
async fn write_posts(node: &TestNode, author: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let body = format!("post {i} by {author}");
        let answer = if i % 2 == 0 {
            node.post_json("/api/v0/p", &json!({"author": author, "body": body}))
                .await
        } else {
            node.post_raw(
                "/api/v0/p",
                FORM,
                format!("author={author}&body=post+{i}+by+{author}"),
            )
            .await
        }
        .expect("an answer");
        assert_eq!(answer.status, StatusCode::OK, "post {i}: {}", answer.json);
        assert_eq!(answer.json["body"]["body"], body.as_str());
        ids.push(
            answer.json["body"]["id"]
                .as_str()
                .expect("an id")
                .to_owned(),
        );
    }
    ids
}

/// The ids of a `GET` listing answer.
async fn listing(node: &TestNode, path: &str) -> Vec<String> {
    let answer = node.get(path).await.expect("an answer");
    assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.json);
    assert_eq!(answer.json["status"], "OK", "{path}");
    answer.json["body"]
        .as_array()
        .unwrap_or_else(|| panic!("{path}: not a list: {}", answer.json))
        .iter()
        .map(|p| p["id"].as_str().expect("an id").to_owned())
        .collect()
}

/// Every id of the public timeline, following `before` pages of the default
/// size; asserts each full page holds exactly 64.
async fn paginate(node: &TestNode, limit: Option<usize>) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    for _ in 0..1_000 {
        let mut query = Vec::new();
        if let Some(l) = limit {
            query.push(format!("limit={l}"));
        }
        if let Some(last) = all.last() {
            query.push(format!("before={last}"));
        }
        let page = listing(node, &format!("/api/v0/p?{}", query.join("&"))).await;
        if page.is_empty() {
            return all;
        }
        assert!(page.len() <= limit.unwrap_or(64), "page of {}", page.len());
        all.extend(page);
    }
    panic!("pagination did not end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_newest_64_by_default_and_before_pages_without_gap_or_repeat() {
    let node = TestNode::start("hw-list", &[]).await;
    assert!(listing(&node, "/api/v0/p").await.is_empty());
    let created = write_posts(&node, "ann", 150).await;
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();

    let first = listing(&node, "/api/v0/p").await;
    assert_eq!(first.len(), 64, "the default page");
    assert_eq!(first, newest_first[..64], "newest first");

    let pages = paginate(&node, None).await;
    assert_eq!(
        pages, newest_first,
        "default pages: every post once, in order"
    );
    let small = paginate(&node, Some(7)).await;
    assert_eq!(small, newest_first, "pages of 7");
    let unique: HashSet<&String> = pages.iter().collect();
    assert_eq!(unique.len(), 150);

    // `before` any listed id: everything older, and nothing else.
    let middle = &newest_first[100];
    let after_middle = listing(&node, &format!("/api/v0/p?limit=500&before={middle}")).await;
    assert_eq!(after_middle, newest_first[101..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_are_created_from_forms_and_json() {
    let node = TestNode::start("hw-create", &[]).await;
    let form = |raw: &str| node.post_raw("/api/v0/p", FORM, raw.to_owned());

    let root = form("author=ann&body=hello+%26+welcome%3A+%3Cb%3E%F0%9F%98%80")
        .await
        .unwrap();
    assert_eq!(root.status, StatusCode::OK, "{}", root.json);
    let root_id = root.json["body"]["id"].as_str().unwrap().to_owned();
    assert_eq!(root.json["body"]["body"], "hello & welcome: <b>😀");
    assert_eq!(root.json["body"]["author"], "ann");
    assert_eq!(root.json["body"]["reply_to"], Value::Null);

    // A form reply, with a charset in the content type and an empty field.
    let reply = node
        .post_raw(
            "/api/v0/p",
            "application/x-www-form-urlencoded; charset=UTF-8",
            format!("author=bob&body=re&reply_to={root_id}&extra="),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.json);
    assert_eq!(reply.json["body"]["reply_to"], root_id.as_str());

    // JSON: a reply, and an anonymous post (no author, or an empty one).
    let json_reply = node
        .post_json(
            "/api/v0/p",
            &json!({"author": "cy", "body": "json reply", "reply_to": root_id}),
        )
        .await
        .unwrap();
    assert_eq!(json_reply.status, StatusCode::OK, "{}", json_reply.json);
    assert_eq!(json_reply.json["body"]["reply_to"], root_id.as_str());
    for anonymous in [
        json!({"body": "who?"}),
        json!({"author": "", "body": "who?"}),
    ] {
        let a = node.post_json("/api/v0/p", &anonymous).await.unwrap();
        assert_eq!(a.status, StatusCode::OK, "{}", a.json);
        assert_eq!(a.json["body"]["author"], "anonymous");
    }
    let a = form("body=who%3F&reply_to=").await.unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    assert_eq!(a.json["body"]["author"], "anonymous");
    assert_eq!(a.json["body"]["reply_to"], Value::Null);

    // Each reads back as written.
    for created in [&root, &reply, &json_reply] {
        let id = created.json["body"]["id"].as_str().unwrap();
        let read = node.get(&format!("/api/v0/p/{id}")).await.unwrap();
        assert_eq!(read.status, StatusCode::OK);
        assert_eq!(read.json["body"]["post"], created.json["body"], "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_names_the_one_before_it_in_the_public_timeline() {
    let node = TestNode::start("hw-prev", &[]).await;
    let mut created = write_posts(&node, "ann", 6).await;
    created.extend(write_posts(&node, "bob", 6).await);

    let prev_of = async |id: &str| {
        let answer = node.get(&format!("/api/v0/p/{id}")).await.unwrap();
        assert_eq!(answer.status, StatusCode::OK, "{id}: {}", answer.json);
        let body = &answer.json["body"];
        assert_eq!(body["post"]["id"], id);
        let prev = body
            .get("prev")
            .expect("a `prev` field, null for the first");
        prev.as_str().map(str::to_owned)
    };
    assert_eq!(prev_of(&created[0]).await, None, "the first post");
    for i in 1..created.len() {
        assert_eq!(
            prev_of(&created[i]).await.as_deref(),
            Some(created[i - 1].as_str()),
            "post {i} (authors do not matter: the public timeline)"
        );
    }
    // A deleted post leaves the timeline: the one after it names the one
    // before it.
    node.client().delete(&created[4]).await.expect("delete");
    assert_eq!(
        prev_of(&created[5]).await.as_deref(),
        Some(created[3].as_str())
    );
    node.client().delete(&created[0]).await.expect("delete");
    assert_eq!(prev_of(&created[1]).await, None);
    // The same relation as the listing's order.
    let listed = listing(&node, "/api/v0/p?limit=500").await;
    for pair in listed.windows(2) {
        assert_eq!(prev_of(&pair[0]).await.as_deref(), Some(pair[1].as_str()));
    }
}

/// What one write of the overload storm got.
enum Outcome {
    Acked(String),
    SlowDown,
}

/// One raw write; checks a SLOWDOWN answer's body and header in full.
async fn raw_write(http: reqwest::Client, url: String, author: String, i: usize) -> Outcome {
    let response = http
        .post(&url)
        .json(&json!({"author": author, "body": format!("load {i}")}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("write {i}: {e}"));
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .map(|v| v.to_str().expect("ASCII").to_owned());
    let json: Value = response.json().await.expect("a JSON answer");
    match status {
        StatusCode::OK => Outcome::Acked(json["body"]["id"].as_str().expect("an id").to_owned()),
        StatusCode::SERVICE_UNAVAILABLE => {
            assert_eq!(json["status"], "SLOWDOWN", "{json}");
            let ms = json["retry_after_ms"].as_u64().expect("retry_after_ms");
            assert!(ms >= 1, "{json}");
            let message = json["error"].as_str().expect("an error message");
            assert!(message.contains(&format!("retry in {ms} ms")), "{json}");
            assert_eq!(
                retry_after,
                Some(ms.div_ceil(1000).to_string()),
                "Retry-After is retry_after_ms in seconds, rounded up"
            );
            Outcome::SlowDown
        }
        other => panic!("write {i}: unexpected {other}: {json}"),
    }
}

/// One write through the typed client, which must surface SLOWDOWN.
async fn typed_write(client: Client, author: String, i: usize) -> Outcome {
    match client
        .create_post(Some(&author), &format!("load {i}"), None)
        .await
    {
        Ok(post) => Outcome::Acked(post.id.to_string()),
        Err(e @ ClientError::SlowDown { .. }) => {
            assert!(e.retry_after_ms().is_some_and(|ms| ms >= 1), "{e}");
            assert_eq!(e.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
            assert!(e.to_string().contains("node overloaded, retry in"), "{e}");
            Outcome::SlowDown
        }
        Err(e) => panic!("write {i}: {e}"),
    }
}

/// Writers of the overload storm; each author gets at most a few hundred
/// posts, so one user feed page lists them all.
const AUTHORS: usize = 8;
const STORM: usize = 256;
const MIN_ROUNDS: usize = 4;
const MAX_ROUNDS: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_answers_slowdown_and_stores_nothing_half() {
    // A client queue of two: a burst of writes overflows it at once.
    let node = TestNode::start_with_config("hw-overload", &[], "client_queue = 2\n").await;
    let url = node.url("/api/v0/p");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let typed = Client::with_http(node.client().base_url(), http.clone());

    let (mut acked, mut raw_slow, mut typed_slow) = (Vec::new(), 0, 0);
    for round in 0..MAX_ROUNDS {
        let tasks: Vec<_> = (0..STORM)
            .map(|i| {
                let author = format!("load{}", i % AUTHORS);
                let n = round * STORM + i;
                if i % 2 == 0 {
                    tokio::spawn(raw_write(http.clone(), url.clone(), author, n))
                } else {
                    tokio::spawn(typed_write(typed.clone(), author, n))
                }
            })
            .collect();
        for (i, task) in tasks.into_iter().enumerate() {
            match task.await.expect("writer task") {
                Outcome::Acked(id) => acked.push(id),
                Outcome::SlowDown if i % 2 == 0 => raw_slow += 1,
                Outcome::SlowDown => typed_slow += 1,
            }
        }
        if round + 1 >= MIN_ROUNDS && raw_slow > 0 && typed_slow > 0 && !acked.is_empty() {
            break;
        }
    }
    assert!(
        raw_slow > 0 && typed_slow > 0,
        "no overload in {MAX_ROUNDS} bursts of {STORM} writes on a queue of 2 \
         ({raw_slow} raw, {typed_slow} typed SLOWDOWN answers)"
    );
    assert!(!acked.is_empty(), "no write acknowledged");
    eprintln!(
        "{} acknowledged, {} SLOWDOWN ({raw_slow} raw, {typed_slow} typed)",
        acked.len(),
        raw_slow + typed_slow
    );

    // Every refusal was counted, and every acknowledged post is readable.
    let metrics = node.client().metrics().await.expect("metrics");
    let counted: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hearsay_overload_rejections_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("hearsay_overload_rejections_total");
    assert_eq!(counted, (raw_slow + typed_slow) as u64);
    let acked_set: BTreeSet<String> = acked.iter().cloned().collect();
    assert_eq!(acked_set.len(), acked.len(), "an id acknowledged twice");
    for id in &acked {
        assert!(
            node.post(id).await.is_some(),
            "acknowledged post {id} is not readable"
        );
    }

    // Nothing half stored: a post is one delta. The node holds exactly one
    // per acknowledged post, the public listing holds exactly the
    // acknowledged posts, and so do the authors' timelines.
    assert_eq!(node.revision().await, acked.len() as u64, "deltas stored");
    let listed: BTreeSet<String> = node.all_post_ids().await.into_iter().collect();
    assert_eq!(listed, acked_set, "the public listing and the 200s");
    let mut in_timelines = BTreeSet::new();
    for a in 0..AUTHORS {
        let path = format!("/api/v0/users/load{a}/feed.atom?limit=500");
        let answer = node.http().get(node.url(&path)).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "{path}");
        let feed = feed_rs::parser::parse(answer.bytes().await.unwrap().as_ref()).unwrap();
        assert!(feed.entries.len() < 500, "{path}: a full page");
        for e in feed.entries {
            let id = e.id.trim_start_matches("urn:hearsay:post:").to_owned();
            assert!(in_timelines.insert(id), "{path}: listed twice");
        }
    }
    assert_eq!(
        in_timelines, acked_set,
        "the authors' timelines and the 200s"
    );
}

/// Serves one canned HTTP answer to the first request on a loopback port.
async fn canned_server(
    status: &'static str,
    body: String,
) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        // Read the request head and its body before answering.
        let mut request = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = socket.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            request.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if request.len() >= end + 4 + length {
                    break;
                }
            }
        }
        let answer = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        socket.write_all(answer.as_bytes()).await.unwrap();
        socket.shutdown().await.ok();
    });
    (url, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hearsay_post_says_when_the_node_is_overloaded() {
    let body = json!({"status": "SLOWDOWN", "retry_after_ms": 420,
                      "error": "node overloaded, retry in 420 ms", "body": null})
    .to_string();
    let (url, server) = canned_server("503 Service Unavailable", body).await;
    let mut cmd = tokio::process::Command::new(common::binary());
    cmd.args(["post", "--node", &url, "--author", "ann", "hello"])
        .env_remove("HEARSAY_NODE")
        .stdin(Stdio::null());
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("hearsay post finished")
        .expect("hearsay post ran");
    server.await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an overloaded node is a failure");
    assert!(
        stderr.contains("node overloaded, retry in 420 ms"),
        "stderr: {stderr}"
    );
    assert!(out.stdout.is_empty(), "nothing printed as a post");
}
