//! `hearsay router`: an HTTP front end that sends each client to the best
//! host of the mesh.
//!
//! The router joins the mesh as a light member ([`member`]): it receives
//! and verifies the nodes' signed statuses and keeps two links, but holds no
//! data. For each request it ranks the alive hosts ([`rank`]) by the score
//! `1 / (i*delay + j*response + k*distance + l*error_rate)` for the
//! client's position (`X-Client-Geo: LAT,LON`, or `?lat=&lon=`, else the
//! router's own `--geo`), puts first the hosts whose version vector covers
//! a read's `?after=` token, and proxies to the best one:
//!
//! - responses stream through (pages, feeds, the web page, event streams),
//!   with `X-Hearsay-Host` (peer id) and `X-Hearsay-Host-Url` added;
//! - an idempotent request (GET, HEAD) whose host cannot be reached, times
//!   out, or answers 502/503/504 is retried on the next host, up to
//!   [`MAX_ATTEMPTS`]; a write is retried only when its host refused the
//!   connection (nothing was sent), else the client gets 502;
//! - an event stream (`GET /api/v0/events`) whose host dies is resumed on
//!   the next host from the id of the last whole event passed on
//!   (`Last-Event-Id`), on the same client response: the client sees one
//!   unbroken stream ([`sse`]);
//! - `GET /api/v0/route` shows the ranking and the four terms of each score;
//!   `GET /metrics` the router's own metrics.
//!
//! The router has its own libp2p key, kept in its data directory
//! (`node.key`, like a node's), so that a mesh operator can admit it: with
//! a certificate for that key (`node.cert` in the data directory, or
//! `--certificate`) it is taken in by a mesh with an operator; without
//! one such a mesh publishes nothing to it and closes its links.
//!
//! Routers hold no state another router lacks (statuses are gossiped to
//! all; the only local memory is which hosts failed in the last seconds),
//! so several can run side by side behind DNS or a load balancer.

pub mod member;
pub mod rank;
pub mod sse;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hearsay_crdt::VersionVector;
use hearsay_topology::{Geo, Timeouts, Weights};
use libp2p::{Multiaddr, PeerId};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::api::{ApiError, ok};
use crate::mesh::state_name;
use crate::metrics::{ReasonLabels, StateLabels};
use member::Hosts;
use rank::Choice;

/// Hosts tried for one request.
pub const MAX_ATTEMPTS: usize = 3;
/// Largest request body the router buffers (to retry it).
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
/// Time to connect to a host.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time for a host to start answering (a read with `?after=` may wait up
/// to 30 s for the host to catch up).
const HEADERS_TIMEOUT: Duration = Duration::from_secs(35);
/// Resumptions of one event stream before the router gives up on it.
const MAX_RESUMES: usize = 20;
/// File the router writes once listening.
pub const ANNOUNCE_FILE: &str = "router.json";
/// Header naming the host that served a request.
pub const HOST_HEADER: &str = "x-hearsay-host";
pub const HOST_URL_HEADER: &str = "x-hearsay-host-url";
/// Header carrying the client's position.
pub const CLIENT_GEO_HEADER: &str = "x-client-geo";

/// What `hearsay router` runs with.
#[derive(Clone, Debug)]
pub struct RouterConfig {
    pub http: SocketAddr,
    pub listen: Vec<Multiaddr>,
    pub join: Vec<Multiaddr>,
    pub weights: Weights,
    pub geo: Option<Geo>,
    /// Where `router.json` and the router's key (`node.key`) go.
    pub data_dir: PathBuf,
    /// The router's certificate, for a mesh with an operator (it must
    /// admit the router's key).
    pub certificate: Option<hearsay_admission::Certificate>,
}

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
    #[error("HTTP on {addr}: {why}")]
    Http { addr: String, why: String },
    #[error("{path}: {why}")]
    File { path: String, why: String },
    #[error("router key: {0}")]
    Key(#[from] hearsay_crdt::Error),
    #[error("the certificate admits node {certified} but the router's key is {key}")]
    Certificate { certified: String, key: String },
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `ok` (first host), `retried` (a later host), `upstream_error` (every
    /// host tried failed), `no_host`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `connect`, `timeout`, `status` (502/503/504), `stream` (an event
    /// stream's host ended it).
    pub kind: &'static str,
}

/// The router's metrics (`hearsay_router_*`).
#[derive(Clone, Debug)]
pub struct RouterMetrics {
    pub requests: Family<OutcomeLabels, Counter>,
    pub retries: Counter,
    pub upstream_errors: Family<KindLabels, Counter>,
    pub hosts: Family<StateLabels, Gauge>,
    pub links: Gauge,
    pub request_duration_seconds: Histogram,
    pub sse_resumes: Counter,
    pub statuses_received: Counter,
    pub statuses_rejected: Family<ReasonLabels, Counter>,
    registry: Arc<Mutex<Registry>>,
}

impl RouterMetrics {
    pub fn new() -> Self {
        let m = RouterMetrics {
            requests: Family::default(),
            retries: Counter::default(),
            upstream_errors: Family::default(),
            hosts: Family::default(),
            links: Gauge::default(),
            request_duration_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            sse_resumes: Counter::default(),
            statuses_received: Counter::default(),
            statuses_rejected: Family::default(),
            registry: Arc::default(),
        };
        let mut registry = Registry::default();
        let r = registry.sub_registry_with_prefix("hearsay_router");
        r.register(
            "requests",
            "Requests proxied, by outcome (ok, retried, upstream_error, no_host)",
            m.requests.clone(),
        );
        r.register(
            "retries",
            "Requests sent again to the next host",
            m.retries.clone(),
        );
        r.register(
            "upstream_errors",
            "Failed attempts at a host, by kind (connect, timeout, status, stream)",
            m.upstream_errors.clone(),
        );
        r.register(
            "hosts",
            "Hosts known from statuses, by state",
            m.hosts.clone(),
        );
        r.register("links", "Links to mesh nodes open", m.links.clone());
        r.register(
            "request_duration_seconds",
            "Time to the response headers, retries included",
            m.request_duration_seconds.clone(),
        );
        r.register(
            "sse_resumes",
            "Event streams resumed on another host",
            m.sse_resumes.clone(),
        );
        r.register(
            "statuses_received",
            "Signed statuses verified and taken in",
            m.statuses_received.clone(),
        );
        r.register(
            "statuses_rejected",
            "Statuses refused, by reason",
            m.statuses_rejected.clone(),
        );
        for outcome in ["ok", "retried", "upstream_error", "no_host"] {
            drop(m.requests.get_or_create(&OutcomeLabels { outcome }));
        }
        for kind in ["connect", "timeout", "status", "stream"] {
            drop(m.upstream_errors.get_or_create(&KindLabels { kind }));
        }
        for reason in ["malformed", "forged", "unknown_key"] {
            drop(m.statuses_rejected.get_or_create(&ReasonLabels { reason }));
        }
        *m.registry.lock().expect("fresh mutex") = registry;
        m
    }

    fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String");
        out
    }
}

impl Default for RouterMetrics {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Clone)]
struct RouterState {
    hosts: watch::Receiver<Hosts>,
    timeouts: Timeouts,
    weights: Weights,
    geo: Option<Geo>,
    http: reqwest::Client,
    /// Hosts that failed a request, and when (soft state, seconds long).
    failed: Arc<Mutex<BTreeMap<PeerId, Instant>>>,
    metrics: RouterMetrics,
}

impl std::fmt::Debug for RouterState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterState").finish_non_exhaustive()
    }
}

impl RouterState {
    fn ranking(&self, client: Option<Geo>, token: Option<&VersionVector>) -> Vec<Choice> {
        let hosts = self.hosts.borrow().hosts.clone();
        let failed = self
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        rank::rank(
            &hosts,
            &self.timeouts,
            client,
            &self.weights,
            token,
            &failed,
            Instant::now(),
        )
    }

    fn mark_failed(&self, peer: PeerId, kind: &'static str) {
        self.metrics
            .upstream_errors
            .get_or_create(&KindLabels { kind })
            .inc();
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        failed.retain(|_, at| now.saturating_duration_since(*at) < rank::FAILURE_PENALTY);
        failed.insert(peer, now);
    }

    fn count_hosts(&self) {
        let hosts = self.hosts.borrow().hosts.clone();
        let now = Instant::now();
        let mut counts = BTreeMap::from([("alive", 0), ("suspect", 0), ("down", 0)]);
        for h in hosts.iter() {
            *counts
                .entry(state_name(h.state(&self.timeouts, now)))
                .or_default() += 1;
        }
        for (state, n) in counts {
            self.metrics
                .hosts
                .get_or_create(&StateLabels { state })
                .set(n);
        }
    }
}

/// What the router announces in `router.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RouterAnnouncement {
    /// Base URL, `http://HOST:PORT`.
    pub http: String,
    /// The router's libp2p peer id, from its key in the data directory:
    /// what `hearsay operator admit` takes to admit it.
    pub peer_id: String,
    pub listen_addrs: Vec<String>,
}

/// Runs a router until `shutdown` completes. `bound` gets the base URL
/// once the HTTP side listens (the CLI prints it).
pub async fn run(
    config: RouterConfig,
    shutdown: impl std::future::Future<Output = ()>,
    bound: impl FnOnce(&str),
) -> Result<(), RouterError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| RouterError::File {
        path: config.data_dir.display().to_string(),
        why: e.to_string(),
    })?;
    let key =
        hearsay_crdt::Keypair::load_or_generate(&config.data_dir.join(crate::node::KEY_FILE))?;
    if let Some(cert) = &config.certificate
        && cert.node != key.id()
    {
        return Err(RouterError::Certificate {
            certified: cert.node.to_string(),
            key: key.id().to_string(),
        });
    }
    let identity = crate::node::libp2p_identity(&key);
    let peer_id = identity.public().to_peer_id();
    tracing::info!(%peer_id, certificate = config.certificate.is_some(), "router identity");
    let swarm = member::build_swarm(identity)?;
    let metrics = RouterMetrics::new();
    let (hosts_tx, hosts) = watch::channel(Hosts::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let listen = if config.listen.is_empty() {
        vec!["/ip4/0.0.0.0/tcp/0".parse().expect("multiaddr")]
    } else {
        config.listen.clone()
    };
    let member = tokio::spawn(member::run(
        swarm,
        config.certificate.clone(),
        listen,
        config.join.clone(),
        hosts_tx,
        metrics.clone(),
        stop_rx.clone(),
    ));
    let listener = tokio::net::TcpListener::bind(config.http)
        .await
        .map_err(|e| RouterError::Http {
            addr: config.http.to_string(),
            why: e.to_string(),
        })?;
    let addr = listener.local_addr().map_err(|e| RouterError::Http {
        addr: config.http.to_string(),
        why: e.to_string(),
    })?;
    let url = format!("http://{addr}");
    let http = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| RouterError::Http {
            addr: url.clone(),
            why: e.to_string(),
        })?;
    let state = RouterState {
        hosts: hosts.clone(),
        timeouts: Timeouts::default(),
        weights: config.weights,
        geo: config.geo,
        http,
        failed: Arc::default(),
        metrics,
    };
    // router.json once the swarm listens too (bounded wait).
    let mut watch_hosts = hosts.clone();
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        watch_hosts.wait_for(|h| !h.listen_addrs.is_empty()),
    )
    .await;
    let listen_addrs = hosts
        .borrow()
        .listen_addrs
        .iter()
        .map(|a| a.to_string())
        .collect();
    let announcement = RouterAnnouncement {
        http: url.clone(),
        peer_id: peer_id.to_string(),
        listen_addrs,
    };
    let path = config.data_dir.join(ANNOUNCE_FILE);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(&announcement).expect("json"),
    )
    .and_then(|()| std::fs::rename(&tmp, &path))
    .map_err(|e| RouterError::File {
        path: path.display().to_string(),
        why: e.to_string(),
    })?;
    tracing::info!(%url, "router listening");
    bound(&url);

    let app = Router::new()
        .route("/api/v0/route", get(route))
        .route("/metrics", get(metrics_text))
        .route("/api/v0/events", get(events))
        .fallback(proxy)
        .with_state(state);
    let mut http_stop = stop_rx.clone();
    let server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = http_stop.wait_for(|s| *s).await;
            })
            .into_future(),
    );
    shutdown.await;
    let _ = stop_tx.send(true);
    let _ = server.await;
    let _ = std::fs::remove_file(&path);
    member.await.expect("router membership task")?;
    Ok(())
}

#[derive(Debug, Default, Deserialize)]
struct GeoQuery {
    lat: Option<String>,
    lon: Option<String>,
    after: Option<String>,
}

/// The client's position: `X-Client-Geo`, else `?lat=&lon=`, else the
/// router's own; a malformed one is a 400.
fn client_geo(
    headers: &HeaderMap,
    query: &GeoQuery,
    own: Option<Geo>,
) -> Result<Option<Geo>, ApiError> {
    if let Some(v) = headers.get(CLIENT_GEO_HEADER) {
        let text = v
            .to_str()
            .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "X-Client-Geo is not text"))?;
        return Geo::parse(text)
            .map(Some)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("X-Client-Geo: {e}")));
    }
    match (&query.lat, &query.lon) {
        (Some(lat), Some(lon)) => Geo::parse(&format!("{lat},{lon}"))
            .map(Some)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("lat/lon: {e}"))),
        (None, None) => Ok(own),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "give both `lat` and `lon`, or neither",
        )),
    }
}

/// The query of a request, parsed leniently (unknown keys ignored; a
/// malformed query is the host's to refuse).
fn geo_query(uri: &axum::http::Uri) -> GeoQuery {
    uri.query()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default()
}

#[derive(Debug, Serialize)]
struct RouteView {
    client: Option<Geo>,
    weights: Weights,
    hosts: Vec<RouteHost>,
}

#[derive(Debug, Serialize)]
struct RouteHost {
    peer_id: String,
    http: String,
    region: String,
    geo: Option<Geo>,
    state: &'static str,
    score: f64,
    distance_km: Option<f64>,
    terms: hearsay_topology::Terms,
    revision: u64,
    heartbeat_age_ms: u64,
    /// Failed a request in the last few seconds (ranked last).
    failing: bool,
}

async fn route(State(state): State<RouterState>, request: Request) -> Response {
    let query = geo_query(request.uri());
    let client = match client_geo(request.headers(), &query, state.geo) {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    let hosts = state
        .ranking(client, None)
        .into_iter()
        .map(|c| RouteHost {
            peer_id: c.host.status.peer.to_string(),
            http: c.host.status.body.http.clone(),
            region: c.host.status.body.region.clone(),
            geo: c.host.status.body.geo,
            state: "alive",
            score: c.ranked.score,
            distance_km: c.ranked.distance_km,
            terms: c.ranked.terms,
            revision: c.host.status.body.revision,
            heartbeat_age_ms: c.host.received.elapsed().as_millis() as u64,
            failing: c.failing,
        })
        .collect();
    ok(RouteView {
        client,
        weights: state.weights,
        hosts,
    })
}

async fn metrics_text(State(state): State<RouterState>) -> Response {
    state.count_hosts();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// Headers not forwarded in either direction (hop by hop).
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "upgrade"
            | "te"
            | "trailer"
            | "host"
            | "content-length"
    )
}

/// Why an attempt at a host failed.
enum Failure {
    /// Nothing reached the host: safe to retry any request.
    Connect,
    Timeout,
    Other(String),
}

async fn send(
    state: &RouterState,
    choice: &Choice,
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<reqwest::Response, Failure> {
    let url = format!(
        "{}{}",
        choice.host.status.body.http.trim_end_matches('/'),
        path_and_query
    );
    let mut request = state.http.request(method.clone(), &url).body(body);
    for (name, value) in headers {
        if !hop_by_hop(name) {
            request = request.header(name, value);
        }
    }
    match tokio::time::timeout(HEADERS_TIMEOUT, request.send()).await {
        Err(_) => Err(Failure::Timeout),
        Ok(Err(e)) if e.is_connect() => Err(Failure::Connect),
        Ok(Err(e)) if e.is_timeout() => Err(Failure::Timeout),
        Ok(Err(e)) => Err(Failure::Other(e.to_string())),
        Ok(Ok(r)) => Ok(r),
    }
}

/// The client's response from a host's, streamed, with the host named.
fn relay(choice: &Choice, upstream: reqwest::Response) -> Response {
    let mut builder = Response::builder().status(upstream.status());
    for (name, value) in upstream.headers() {
        if !hop_by_hop(name) || name == header::CONTENT_LENGTH {
            builder = builder.header(name, value);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&choice.host.status.peer.to_string()) {
        builder = builder.header(HOST_HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(&choice.host.status.body.http) {
        builder = builder.header(HOST_URL_HEADER, v);
    }
    builder
        .body(Body::from_stream(upstream.bytes_stream()))
        .unwrap_or_else(|e| {
            ApiError::new(StatusCode::BAD_GATEWAY, format!("relaying: {e}")).into_response()
        })
}

async fn proxy(State(state): State<RouterState>, request: Request) -> Response {
    let started = Instant::now();
    let response = proxy_inner(&state, request).await;
    state
        .metrics
        .request_duration_seconds
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn proxy_inner(state: &RouterState, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let query = geo_query(&parts.uri);
    let client = match client_geo(&parts.headers, &query, state.geo) {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    let token = query
        .after
        .as_deref()
        .and_then(|t| VersionVector::from_token(t).ok());
    let body = match axum::body::to_bytes(body, MAX_REQUEST_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body over {MAX_REQUEST_BYTES} bytes"),
            )
            .into_response();
        }
    };
    let idempotent = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let choices = state.ranking(client, token.as_ref());
    if choices.is_empty() {
        state.count_outcome("no_host");
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no healthy host known to this router yet",
        )
        .into_response();
    }
    let mut last_error = String::new();
    for (attempt, choice) in choices.iter().take(MAX_ATTEMPTS).enumerate() {
        if attempt > 0 {
            state.metrics.retries.inc();
        }
        let peer = choice.host.status.peer;
        match send(
            state,
            choice,
            &parts.method,
            &path,
            &parts.headers,
            body.clone(),
        )
        .await
        {
            Ok(r)
                if idempotent
                    && attempt + 1 < MAX_ATTEMPTS.min(choices.len())
                    && matches!(r.status().as_u16(), 502..=504) =>
            {
                state.mark_failed(peer, "status");
                last_error = format!("{} answered {}", choice.host.status.body.http, r.status());
            }
            Ok(r) => {
                state.count_outcome(if attempt == 0 { "ok" } else { "retried" });
                return relay(choice, r);
            }
            Err(failure) => {
                let (kind, retry) = match &failure {
                    Failure::Connect => ("connect", true),
                    Failure::Timeout => ("timeout", idempotent),
                    Failure::Other(_) => ("connect", idempotent),
                };
                state.mark_failed(peer, kind);
                last_error = match failure {
                    Failure::Connect => {
                        format!("{}: connection refused", choice.host.status.body.http)
                    }
                    Failure::Timeout => {
                        format!("{}: no answer in time", choice.host.status.body.http)
                    }
                    Failure::Other(e) => format!("{}: {e}", choice.host.status.body.http),
                };
                if !retry {
                    break;
                }
            }
        }
    }
    state.count_outcome("upstream_error");
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        format!("no host answered: {last_error}"),
    )
    .into_response()
}

impl RouterState {
    fn count_outcome(&self, outcome: &'static str) {
        self.metrics
            .requests
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }
}

/// `GET /api/v0/events` through the router: one client stream fed from a
/// host's stream, resumed on the next host (from the last whole event's
/// id) when its host ends it or dies.
async fn events(State(state): State<RouterState>, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    let query = geo_query(&parts.uri);
    let client = match client_geo(&parts.headers, &query, state.geo) {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or("/api/v0/events", |p| p.as_str())
        .to_owned();
    let first_id = parts
        .headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // The first host answers the request itself: its status and headers
    // are the client's (a refusal, 400 or 409, passes through as is).
    let resume_token = first_id
        .as_deref()
        .and_then(|t| VersionVector::from_token(t).ok());
    let mut choices = state.ranking(client, resume_token.as_ref());
    choices.truncate(MAX_ATTEMPTS);
    let mut first = None;
    for choice in choices {
        match send(
            &state,
            &choice,
            &Method::GET,
            &path,
            &parts.headers,
            Bytes::new(),
        )
        .await
        {
            Ok(r) => {
                first = Some((choice, r));
                break;
            }
            Err(_) => state.mark_failed(choice.host.status.peer, "connect"),
        }
    }
    let Some((choice, upstream)) = first else {
        state.count_outcome("no_host");
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no host answered").into_response();
    };
    state.count_outcome("ok");
    if !upstream.status().is_success() {
        return relay(&choice, upstream);
    }
    let mut response = Response::builder().status(StatusCode::OK);
    for (name, value) in upstream.headers() {
        if !hop_by_hop(name) {
            response = response.header(name, value);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&choice.host.status.peer.to_string()) {
        response = response.header(HOST_HEADER, v);
    }
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(follow(
        state,
        client,
        path,
        parts.headers,
        first_id,
        choice,
        upstream,
        tx,
    ));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    response
        .body(Body::from_stream(stream))
        .unwrap_or_else(|e| {
            ApiError::new(StatusCode::BAD_GATEWAY, format!("relaying: {e}")).into_response()
        })
}

/// Feeds one client's event stream from hosts in turn until the client
/// goes away or [`MAX_RESUMES`] resumptions fail.
#[allow(clippy::too_many_arguments)]
async fn follow(
    state: RouterState,
    client: Option<Geo>,
    path: String,
    mut headers: HeaderMap,
    first_id: Option<String>,
    mut choice: Choice,
    mut upstream: reqwest::Response,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    use futures::StreamExt;
    let mut framer = sse::Framer::new(first_id);
    let mut failures = 0;
    loop {
        let mut body = upstream.bytes_stream();
        loop {
            tokio::select! {
                () = tx.closed() => return,
                chunk = body.next() => match chunk {
                    Some(Ok(bytes)) => match framer.push(&bytes) {
                        Ok(whole) if whole.is_empty() => {}
                        Ok(whole) => {
                            failures = 0;
                            if tx.send(Ok(Bytes::from(whole))).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "event stream refused");
                            break;
                        }
                    },
                    // The host ended the stream or died mid-way.
                    Some(Err(_)) | None => break,
                },
            }
        }
        state.mark_failed(choice.host.status.peer, "stream");
        // Resume on the best host for the last id passed on.
        let token = framer
            .last_id()
            .and_then(|t| VersionVector::from_token(t).ok());
        if let Some(id) = framer.last_id().and_then(|i| HeaderValue::from_str(i).ok()) {
            headers.insert("last-event-id", id);
        }
        let mut resumed = None;
        while resumed.is_none() {
            failures += 1;
            if failures > MAX_RESUMES {
                tracing::info!("event stream: no host to resume on; closing it");
                return;
            }
            let delay = Duration::from_millis((100 * failures as u64).min(2_000));
            tokio::select! {
                () = tx.closed() => return,
                () = tokio::time::sleep(delay) => {}
            }
            let next = state.ranking(client, token.as_ref()).into_iter().next();
            let Some(next) = next else { continue };
            match send(&state, &next, &Method::GET, &path, &headers, Bytes::new()).await {
                Ok(r) if r.status().is_success() => resumed = Some((next, r)),
                Ok(_) | Err(_) => state.mark_failed(next.host.status.peer, "connect"),
            }
        }
        let (next, r) = resumed.expect("resumed");
        tracing::info!(host = %next.host.status.peer, "event stream resumed");
        state.metrics.sse_resumes.inc();
        choice = next;
        upstream = r;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_position_comes_from_the_header_then_the_query_then_the_router() {
        let own = Some(Geo { lat: 1.0, lon: 2.0 });
        let mut headers = HeaderMap::new();
        let q = |lat: Option<&str>, lon: Option<&str>| GeoQuery {
            lat: lat.map(str::to_owned),
            lon: lon.map(str::to_owned),
            after: None,
        };
        assert_eq!(client_geo(&headers, &q(None, None), own).unwrap(), own);
        assert_eq!(
            client_geo(&headers, &q(Some("35.6"), Some("139.7")), own).unwrap(),
            Some(Geo {
                lat: 35.6,
                lon: 139.7
            })
        );
        assert!(client_geo(&headers, &q(Some("35.6"), None), own).is_err());
        assert!(client_geo(&headers, &q(Some("95"), Some("0")), own).is_err());
        headers.insert(CLIENT_GEO_HEADER, HeaderValue::from_static("-33.9,151.2"));
        assert_eq!(
            client_geo(&headers, &q(Some("35.6"), Some("139.7")), own).unwrap(),
            Some(Geo {
                lat: -33.9,
                lon: 151.2
            })
        );
        headers.insert(CLIENT_GEO_HEADER, HeaderValue::from_static("here"));
        assert!(client_geo(&headers, &q(None, None), own).is_err());
    }
}
