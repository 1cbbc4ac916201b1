//! The API in-process (axum's `oneshot`): how refusals are answered.

use std::net::SocketAddr;

use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt as _;

use super::*;

/// An API over a client queue of `capacity` that no core serves: its sender
/// (to fill it) and its receiver (to see what reached it).
fn api(
    capacity: usize,
) -> (
    Router,
    mpsc::Sender<ClientCommand>,
    mpsc::Receiver<ClientCommand>,
) {
    let (core, queue) = mpsc::channel(capacity);
    let (_, core_status) = watch::channel(CoreStatus::default());
    let (_, net_status) = watch::channel(NetStatus::default());
    let state = ApiState {
        core: core.clone(),
        core_status,
        net_status,
        metrics: Metrics::new("test", None),
        info: Arc::new(NodeInfo {
            peer_id: "test".into(),
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            region: "test".into(),
            geo: None,
            started: Instant::now(),
        }),
        log: Arc::new(crate::store::MemoryStore::default()),
        registry: None,
        names: Arc::new(crate::names::MeshRegistry::new(
            core.clone(),
            Metrics::new("test", None),
        )),
        events: crate::events::StreamConfig::default(),
        admin: None,
    };
    (router(state), core, queue)
}

async fn call(app: &Router, request: Request<Body>) -> (StatusCode, HeaderMap, Value) {
    let response = app.clone().oneshot(request).await.expect("infallible");
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.expect("a body");
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (parts.status, parts.headers, json)
}

fn write() -> Request<Body> {
    Request::post("/api/v0/p")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"author": "ann", "body": "hello"}"#))
        .unwrap()
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

#[tokio::test]
async fn a_full_client_queue_answers_slowdown_and_queues_nothing() {
    let (app, sender, mut queue) = api(1);
    sender.try_send(ClientCommand::Tick).expect("one free slot");
    let requests = [
        write(),
        get("/api/v0/p"),
        get("/api/v0/p/0123456789abcdef0123456789abcdef"),
        get("/api/v0/feed.atom"),
        get("/api/v0/users/ann/feed.atom"),
    ];
    for request in requests {
        let what = format!("{} {}", request.method(), request.uri());
        let (status, headers, json) = call(&app, request).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{what}: {json}");
        assert_eq!(json["status"], "SLOWDOWN", "{what}: {json}");
        let ms = json["retry_after_ms"].as_u64().expect("retry_after_ms");
        assert!(
            (OVERLOAD_RETRY_MS..=2 * OVERLOAD_RETRY_MS).contains(&ms),
            "{what}: {ms}"
        );
        assert_eq!(
            json["error"],
            format!("node overloaded, retry in {ms} ms"),
            "{what}"
        );
        let retry_after = headers[header::RETRY_AFTER].to_str().unwrap();
        assert_eq!(retry_after, ms.div_ceil(1000).to_string(), "{what}");
    }
    // Only the command that filled the queue is in it.
    assert!(matches!(queue.try_recv(), Ok(ClientCommand::Tick)));
    assert!(
        queue.try_recv().is_err(),
        "a refused request reached the core"
    );
}

#[tokio::test]
async fn other_unavailability_stays_an_error() {
    // A node shutting down (the core's queue closed).
    let (app, _, queue) = api(4);
    drop(queue);
    let (status, headers, json) = call(&app, write()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json["status"], "ERROR", "{json}");
    assert!(json.get("retry_after_ms").is_none(), "{json}");
    assert_eq!(headers[header::RETRY_AFTER], "1");
    // A failed store.
    let response = ApiError::from(CoreError::Failed("disk full".into())).into_response();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let json: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(json["status"], "ERROR", "{json}");
    assert!(json["error"].as_str().unwrap().contains("disk full"));
}
