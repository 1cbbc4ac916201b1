//! Fuzzing the HTTP API's decoders in-process (axum's `oneshot` over a real
//! core thread on an in-memory store, no name registry): arbitrary bytes and
//! arbitrary or mutated JSON bodies (fields replaced by random values, huge
//! strings, wrong types, nulls, deep nesting) to every POST/PATCH/DELETE
//! route, random path segments to the GET routes, random query strings.
//! The server never panics and never answers 500: bad input is a 4xx (the
//! registry routes 404: this node runs none), 503 only as an overload
//! `SLOWDOWN`; every answer is the JSON envelope; and after the barrage a
//! post is still created and read back.
//!
//! Cases default to 64 per route group; run longer with
//! HEARSAY_FUZZ_CASES=100000
//! (`HEARSAY_FUZZ_CASES=100000 cargo test -p hearsay-node --lib api::fuzz`).

use std::net::SocketAddr;

use axum::body::Body;
use axum::http::{Method, Request};
use hearsay_crdt::Keypair;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tower::ServiceExt as _;

use super::*;
use crate::core::{CHECKPOINT_DELTAS, CLIENT_QUEUE, CoreConfig, CoreState, PEER_QUEUE, Queues};
use crate::store::MemoryStore;

fn cases() -> u32 {
    crate::fuzz_config().cases
}

/// The API over a core thread serving an in-memory store.
struct Fixture {
    rt: tokio::runtime::Runtime,
    app: Router,
}

impl Fixture {
    fn start() -> Fixture {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let metrics = Metrics::new("test", None);
        let config = CoreConfig {
            cache_docs: 64,
            checkpoint_interval_ms: 60_000,
            checkpoint_deltas: CHECKPOINT_DELTAS,
        };
        let core = CoreState::open(
            MemoryStore::default(),
            Keypair::from_secret([0x42; 32]),
            config,
            metrics.clone(),
            now_ms(),
        )
        .unwrap();
        let (client_tx, clients) = mpsc::channel(CLIENT_QUEUE);
        let (peer_tx, peers) = mpsc::channel(PEER_QUEUE);
        // The network's end of the events channel, kept open and drained.
        let (events, mut published) = mpsc::channel(1024);
        let (status_tx, core_status) = watch::channel(core.status());
        // The core stops when the last client sender (in the router) and
        // the peer sender (moved in here) are dropped.
        std::thread::spawn(move || {
            let _peers = peer_tx;
            crate::core::run_core(core, Queues { clients, peers }, events, status_tx, now_ms)
        });
        rt.spawn(async move { while published.recv().await.is_some() {} });
        let (_, net_status) = watch::channel(NetStatus::default());
        let state = ApiState {
            core: client_tx.clone(),
            names: Arc::new(crate::names::MeshRegistry::new(client_tx, metrics.clone())),
            registry: None,
            core_status,
            net_status,
            metrics,
            info: Arc::new(NodeInfo {
                peer_id: "12D3KooWfuzz".into(),
                http: SocketAddr::from(([127, 0, 0, 1], 8080)),
                region: "test".into(),
                geo: None,
                started: Instant::now(),
            }),
            log: Arc::new(MemoryStore::default()),
            events: crate::events::StreamConfig::default(),
            admin: None,
        };
        Fixture {
            rt,
            app: router(state),
        }
    }

    fn call(
        &self,
        method: Method,
        uri: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(ct) = content_type {
            request = request.header(header::CONTENT_TYPE, ct);
        }
        let request = request.body(Body::from(body)).expect("a valid request");
        self.rt.block_on(async {
            let response = tokio::time::timeout(
                std::time::Duration::from_secs(20),
                self.app.clone().oneshot(request),
            )
            .await
            .expect("answered within 20 s")
            .expect("infallible");
            let (parts, body) = response.into_parts();
            let bytes = axum::body::to_bytes(body, 16 << 20).await.expect("a body");
            let json = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                Value::String(format!("NOT JSON: {}", String::from_utf8_lossy(&bytes)))
            });
            (parts.status, json)
        })
    }

    /// Sends a request and checks the answer: no 5xx but an overload, the
    /// envelope, and a 404 where `not_found` says so.
    fn check(
        &self,
        method: Method,
        uri: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
        not_found: bool,
    ) -> Result<(StatusCode, Value), TestCaseError> {
        let what = format!("{method} {uri}");
        let (status, json) = self.call(method, uri, content_type, body);
        prop_assert!(
            !status.is_server_error()
                || (status == StatusCode::SERVICE_UNAVAILABLE && json["status"] == "SLOWDOWN"),
            "{}: {} {}",
            what,
            status,
            json
        );
        if status.is_success() {
            prop_assert_eq!(&json["status"], "OK", "{}: {}", what, json);
            prop_assert!(json.get("body").is_some(), "{}: {}", what, json);
        } else {
            prop_assert!(
                json["status"] == "ERROR" || json["status"] == "SLOWDOWN",
                "{}: {} {}",
                what,
                status,
                json
            );
            prop_assert!(json["error"].is_string(), "{}: {}", what, json);
            prop_assert!(json["body"].is_null(), "{}: {}", what, json);
        }
        if not_found {
            prop_assert_eq!(status, StatusCode::NOT_FOUND, "{}: {}", what, json);
        }
        Ok((status, json))
    }

    /// A post is still created and read back.
    fn still_serves(&self) {
        let (status, json) = self.call(
            Method::POST,
            "/api/v0/p",
            Some("application/json"),
            br#"{"author": "ann", "body": "still here"}"#.to_vec(),
        );
        assert_eq!(status, StatusCode::OK, "{json}");
        let id = json["body"]["id"]
            .as_str()
            .or_else(|| json["body"].as_str())
            .unwrap_or_else(|| panic!("a post id in {json}"))
            .to_owned();
        let (status, json) = self.call(Method::GET, &format!("/api/v0/p/{id}"), None, vec![]);
        assert_eq!(status, StatusCode::OK, "{json}");
        assert!(json.to_string().contains("still here"), "{json}");
    }

    fn run<S: Strategy>(&self, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
    where
        S::Value: std::fmt::Debug,
    {
        let started = Instant::now();
        let mut runner = TestRunner::new(Config {
            failure_persistence: None,
            ..Config::with_cases(cases())
        });
        if let Err(e) = runner.run(&strategy, test) {
            panic!("{e}");
        }
        eprintln!("{} cases in {:?}", cases(), started.elapsed());
    }
}

// ---- inputs -----------------------------------------------------------------------

/// Any JSON value: scalars at the edges, huge strings, deep nesting.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,24}".prop_map(Value::from),
        "[0-9a-f]{32}".prop_map(Value::from),
        (1usize..=70_000).prop_map(|n| Value::from("x".repeat(n))),
    ];
    let nested = leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    prop_oneof![
        8 => nested,
        // Deeper than serde_json's recursion limit.
        1 => (100usize..300).prop_map(|depth| {
            (0..depth).fold(Value::Null, |v, _| Value::Array(vec![v]))
        }),
    ]
}

#[derive(Debug, Clone)]
enum BodyInput {
    Bytes(Vec<u8>),
    Json(Value),
    /// A valid body with one field replaced (or added) by any value.
    Replaced(Index, Value),
    Added(String, Value),
    Removed(Index),
    /// A valid body's encoding, truncated or with a byte flipped.
    Truncated(Index),
    Flipped(Index, u8),
}

fn body_input() -> impl Strategy<Value = BodyInput> {
    prop_oneof![
        2 => proptest::collection::vec(any::<u8>(), 0..512).prop_map(BodyInput::Bytes),
        2 => any_json().prop_map(BodyInput::Json),
        4 => (any::<Index>(), any_json()).prop_map(|(i, v)| BodyInput::Replaced(i, v)),
        1 => (".{0,12}", any_json()).prop_map(|(k, v)| BodyInput::Added(k, v)),
        1 => any::<Index>().prop_map(BodyInput::Removed),
        1 => any::<Index>().prop_map(BodyInput::Truncated),
        1 => (any::<Index>(), 1u8..=255).prop_map(|(i, x)| BodyInput::Flipped(i, x)),
    ]
}

fn render(valid: &Value, input: &BodyInput) -> Vec<u8> {
    let mut v = valid.clone();
    let object = v.as_object_mut().expect("valid bodies are objects");
    match input {
        BodyInput::Bytes(b) => return b.clone(),
        BodyInput::Json(j) => return serde_json::to_vec(j).unwrap(),
        BodyInput::Replaced(i, new) => {
            if !object.is_empty() {
                let k = object.keys().nth(i.index(object.len())).unwrap().clone();
                object.insert(k, new.clone());
            }
        }
        BodyInput::Added(k, new) => {
            object.insert(k.clone(), new.clone());
        }
        BodyInput::Removed(i) => {
            if !object.is_empty() {
                let k = object.keys().nth(i.index(object.len())).unwrap().clone();
                object.remove(&k);
            }
        }
        BodyInput::Truncated(_) | BodyInput::Flipped(..) => {}
    }
    let mut bytes = serde_json::to_vec(&v).unwrap();
    match input {
        BodyInput::Truncated(i) => bytes.truncate(i.index(bytes.len())),
        BodyInput::Flipped(i, x) => {
            let i = i.index(bytes.len());
            bytes[i] ^= x;
        }
        _ => {}
    }
    bytes
}

/// A path segment: plausible, random, huge, or hostile; percent-encoded.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("ann".to_owned()),
        "[a-z0-9_]{1,20}",
        "[0-9a-f]{32}",
        ".{0,40}",
        (0usize..=4096).prop_map(|n| "a".repeat(n)),
        Just("..".to_owned()),
        Just("%".to_owned()),
    ]
    .prop_map(|s| encode(&s))
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn content_type() -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![
        6 => Just(Some("application/json")),
        1 => Just(None),
        1 => Just(Some("application/x-www-form-urlencoded")),
        1 => Just(Some("text/plain; charset=utf-8")),
    ]
}

fn signed_proof() -> Value {
    json!({"at_ms": 1_700_000_000_000u64, "signature": "00".repeat(64)})
}

// ---- the harnesses ----------------------------------------------------------------

#[test]
fn post_bodies_never_fail_the_server() {
    let f = Fixture::start();
    let create = json!({"author": "ann", "body": "hello", "slug": ""});
    let signed = json!({
        "author": "ann",
        "body": "hello",
        "reply_to": "0123456789abcdef0123456789abcdef",
        "id": "0123456789abcdef0123456789abcdef",
        "author_key": "ab".repeat(32),
        "signature": "cd".repeat(64),
        "slug": "hello-world",
    });
    let register = json!({
        "name": "ann",
        "public_key": "ab".repeat(32),
        "display_name": "Ann",
        "signature": "cd".repeat(64),
    });
    f.run(
        (0usize..5, body_input(), content_type()),
        |(route, input, ct)| {
            let (uri, valid) = match route {
                0 => ("/api/v0/p", &create),
                1 => ("/api/v0/p", &signed),
                2 => ("/api/v0/users", &register),
                3 => ("/api/v0/names", &json!({"name": "n", "owner": "o"})),
                _ => (
                    "/api/v0/registry/init",
                    &json!({"voters": ["12D3KooWfuzz"]}),
                ),
            };
            let body = render(valid, &input);
            // (A body over the limit is refused before any handler: 413.)
            let not_found = route >= 3 && body.len() <= MAX_REQUEST_BYTES;
            f.check(Method::POST, uri, ct, body, not_found)?;
            Ok(())
        },
    );
    f.still_serves();
}

#[test]
fn edit_delete_and_follow_bodies_never_fail_the_server() {
    let f = Fixture::start();
    // A post to aim at, besides random ids.
    let (_, json) = f.call(
        Method::POST,
        "/api/v0/p",
        Some("application/json"),
        br#"{"author": "ann", "body": "target"}"#.to_vec(),
    );
    let target = json["body"]["id"]
        .as_str()
        .or_else(|| json["body"].as_str())
        .unwrap_or_else(|| panic!("a post id in {json}"))
        .to_owned();
    let edit = json!({"pos": 0, "delete": 1, "insert": "x"});
    let signed_edit = json!({"pos": 0, "delete": 1, "insert": "x", "at_ms": 1, "signature": "00"});
    f.run(
        (
            0usize..6,
            prop_oneof![Just(target.clone()), segment()],
            segment(),
            body_input(),
            content_type(),
            any::<bool>(),
        ),
        |(route, id, other, input, ct, empty)| {
            let (method, uri, valid) = match route {
                0 => (Method::PATCH, format!("/api/v0/p/{id}"), edit.clone()),
                5 => (
                    Method::PATCH,
                    format!("/api/v0/p/{id}"),
                    signed_edit.clone(),
                ),
                1 => (Method::DELETE, format!("/api/v0/p/{id}"), signed_proof()),
                2 => (
                    Method::POST,
                    format!("/api/v0/users/{}/follows/{other}", encode("ann")),
                    signed_proof(),
                ),
                3 => (
                    Method::DELETE,
                    format!("/api/v0/users/{id}/follows/{other}"),
                    signed_proof(),
                ),
                _ => (
                    Method::POST,
                    format!("/api/v0/users/{other}/follows/{id}"),
                    signed_proof(),
                ),
            };
            // Deletes and follows are valid with no body at all.
            let body = if empty && (1..5).contains(&route) {
                Vec::new()
            } else {
                render(&valid, &input)
            };
            f.check(method, &uri, ct, body, false)?;
            Ok(())
        },
    );
    f.still_serves();
}

#[test]
fn get_paths_and_queries_never_fail_the_server() {
    let f = Fixture::start();
    let query_value = prop_oneof![
        Just("10".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        "[0-9a-f]{32}",
        ".{0,40}",
        (0usize..2048).prop_map(|n| "A".repeat(n)),
    ]
    .prop_map(|s| encode(&s));
    let query = proptest::collection::vec(
        (
            prop_oneof![
                Just("limit"),
                Just("before"),
                Just("after"),
                Just("wait_ms"),
                Just("x")
            ],
            query_value,
        ),
        0..4,
    );
    f.run(
        (0usize..6, segment(), query, any::<bool>()),
        |(route, segment, query, raw)| {
            let path = match route {
                0 => format!("/api/v0/p/{segment}"),
                1 => format!("/api/v0/users/{segment}"),
                2 => format!("/api/v0/names/{segment}"),
                3 => format!("/api/v0/slugs/{segment}"),
                4 => "/api/v0/p".to_owned(),
                _ => format!("/api/v0/users/{segment}/timeline"),
            };
            let mut query: Vec<String> = query
                .iter()
                .map(|(k, v)| {
                    // A wait on an unknown token is bounded: keep it short.
                    if *k == "after" {
                        format!("{k}={v}&wait_ms=0")
                    } else {
                        format!("{k}={v}")
                    }
                })
                .collect();
            if raw {
                // An undecodable query string.
                query.push("limit=%FF%FE".into());
            }
            let uri = if query.is_empty() {
                path
            } else {
                format!("{path}?{}", query.join("&"))
            };
            // The query is checked first (a bad one is a 400 on any route).
            let not_found = route == 2 && query.is_empty();
            f.check(Method::GET, &uri, None, Vec::new(), not_found)?;
            Ok(())
        },
    );
    f.still_serves();
}
