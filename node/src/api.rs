//! The HTTP API (axum), in the hyperwave envelope:
//! `{"status": "OK", "body": ...}` or `{"status": "ERROR", "error": "...", "body": null}`.
//!
//! Handlers never touch documents or sled: they send a command to the core
//! and await its answer. A full core queue answers 503 with
//! `{"status": "SLOWDOWN", "retry_after_ms": N, "error": "..."}` and a
//! `Retry-After` header (whole seconds, rounded up): the request never
//! reached the core, so nothing of it is stored. Other 503s (store failed,
//! shutting down) stay `ERROR`s. Bad input answers 4xx naming the field, and
//! nothing partial is stored.

mod names;
pub(crate) mod slugs;
mod users;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hearsay_crdt::{MAX_BODY_CHARS, NewPost, PostId, PostSignature, UserName};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};

use crate::core::{Ack, ClientCommand, CoreError, CoreStatus, Reply, Write, first_page, now_ms};
use crate::metrics::{ErrorClass, Metrics, RouteLabels, RouteOnly, Stage};
use crate::net::NetStatus;

/// Default and largest page of `GET /api/v0/p`.
pub const DEFAULT_LIMIT: usize = 64;
pub const MAX_LIMIT: usize = 500;
/// Largest request body accepted.
const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Least wait an overloaded node asks for (`retry_after_ms`); a random
/// share of it again is added, so refused clients do not all come back at
/// the same instant.
pub const OVERLOAD_RETRY_MS: u64 = 250;

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct ApiState {
    /// The core's client queue (its own capacity: peers cannot fill it).
    pub core: mpsc::Sender<ClientCommand>,
    /// Who holds which user name.
    pub names: Arc<dyn crate::names::NameRegistry>,
    /// The name registry (None: this node runs none, as in some tests).
    pub registry: Option<hearsay_registry::Registry>,
    pub core_status: watch::Receiver<CoreStatus>,
    pub net_status: watch::Receiver<NetStatus>,
    pub metrics: Metrics,
    pub info: Arc<NodeInfo>,
    /// The log, which event streams read.
    pub log: crate::events::Log,
    pub events: crate::events::StreamConfig,
    /// Admission requests of the operator API (None: not served here).
    pub admin: Option<mpsc::Sender<crate::net::AdminRequest>>,
}

/// Static facts about the node.
#[derive(Debug)]
pub struct NodeInfo {
    pub peer_id: String,
    /// The address the HTTP API listens on (the base URL of links when a
    /// request names no `Host`).
    pub http: std::net::SocketAddr,
    pub region: String,
    pub geo: Option<hearsay_topology::Geo>,
    pub started: Instant,
}

/// An error answer: status code and a message for the client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    /// Set for an overload refusal only: answered as `SLOWDOWN` with this
    /// hint instead of as an `ERROR`.
    retry_after_ms: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    fn unavailable(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    /// The node is overloaded (its client queue is full): 503 `SLOWDOWN`,
    /// retry after `retry_after_ms`.
    fn slow_down(retry_after_ms: u64) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!("node overloaded, retry in {retry_after_ms} ms"),
            retry_after_ms: Some(retry_after_ms),
        }
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        let status = match e {
            CoreError::NotFound(_) => StatusCode::NOT_FOUND,
            CoreError::Invalid(_) => StatusCode::BAD_REQUEST,
            CoreError::Conflict(_) => StatusCode::CONFLICT,
            CoreError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            CoreError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            CoreError::Failed(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.to_string())
    }
}

/// Marks a `SLOWDOWN` answer, so the metrics count it as an overload
/// rather than a server error.
#[derive(Clone, Copy, Debug)]
struct Overloaded;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(ms) = self.retry_after_ms {
            let body = json!({
                "status": "SLOWDOWN",
                "retry_after_ms": ms,
                "error": self.message,
                "body": null,
            });
            let seconds = ms.div_ceil(1000).max(1);
            let mut response = (
                self.status,
                [(header::RETRY_AFTER, seconds.to_string())],
                Json(body),
            )
                .into_response();
            response.extensions_mut().insert(Overloaded);
            return response;
        }
        let mut response = (
            self.status,
            Json(json!({"status": "ERROR", "error": self.message, "body": null})),
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

pub(crate) fn ok(body: impl serde::Serialize) -> Response {
    Json(json!({"status": "OK", "body": body})).into_response()
}

/// Header carrying a version-vector token: on a write, the token covering
/// it; on a read, the node's durable head when the read was answered.
pub const TOKEN_HEADER: &str = "x-hearsay-token";

/// The answer to a durable write: what it produced, and the token covering
/// it in the envelope (`token`) and in [`TOKEN_HEADER`].
fn acked(ack: Ack) -> Response {
    let token = ack.token.to_token();
    let mut response =
        Json(json!({"status": "OK", "body": ack.written, "token": token})).into_response();
    if let Ok(value) = HeaderValue::from_str(&token) {
        response.headers_mut().insert(TOKEN_HEADER, value);
    }
    response
}

type ApiResult = Result<Response, ApiError>;

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v0/health", get(health))
        .route("/api/v0/stats", get(stats))
        .route("/api/v0/events", get(crate::events::events))
        .route("/api/v0/p", get(list_posts).post(create_post))
        .route(
            "/api/v0/p/{id}",
            get(get_post).patch(edit_post).delete(delete_post),
        )
        .route("/api/v0/slugs/{*slug}", get(slugs::show))
        .route("/api/v0/names", post(names::claim))
        .route("/api/v0/names/{name}", get(names::show))
        .route("/api/v0/registry", get(names::status))
        .route("/api/v0/registry/init", post(names::init))
        .route("/api/v0/admission", get(admission_status))
        .route("/api/v0/admission/revocations", post(revoke))
        .route("/api/v0/users", post(users::register))
        .route("/api/v0/users/{name}", get(users::profile))
        .route("/api/v0/users/{name}/timeline", get(users::timeline))
        .route("/api/v0/users/{name}/home", get(users::home))
        .route(
            "/api/v0/users/{name}/follows/{other}",
            post(users::follow).delete(users::unfollow),
        )
        .route("/metrics", get(metrics))
        .route("/api/v0/feed.atom", get(crate::feeds::public_feed))
        .route(
            "/api/v0/users/{name}/feed.atom",
            get(crate::feeds::user_feed),
        )
        .merge(crate::mesh::routes())
        .merge(crate::web::routes())
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route",
            )
        })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::tokens::read_your_writes,
        ))
        .layer(middleware::from_fn(envelope_errors))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(state)
}

/// Request counter and duration histogram, labelled by route template.
async fn observe(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let route = match request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
    {
        Some("/api/v0/health") => "/api/v0/health",
        Some("/api/v0/stats") => "/api/v0/stats",
        Some("/api/v0/events") => "/api/v0/events",
        Some("/api/v0/p") => "/api/v0/p",
        Some("/api/v0/p/{id}") => "/api/v0/p/{id}",
        Some("/api/v0/feed.atom") => "/api/v0/feed.atom",
        Some("/api/v0/users/{name}/feed.atom") => "/api/v0/users/{name}/feed.atom",
        Some("/api/v0/users") => "/api/v0/users",
        Some("/api/v0/users/{name}") => "/api/v0/users/{name}",
        Some("/api/v0/users/{name}/timeline") => "/api/v0/users/{name}/timeline",
        Some("/api/v0/users/{name}/home") => "/api/v0/users/{name}/home",
        Some("/api/v0/users/{name}/follows/{other}") => "/api/v0/users/{name}/follows/{other}",
        Some("/metrics") => "/metrics",
        Some("/api/v0/mesh") => "/api/v0/mesh",
        Some("/api/v0/nodes") => "/api/v0/nodes",
        Some("/api/v0/admission") => "/api/v0/admission",
        Some("/api/v0/admission/revocations") => "/api/v0/admission/revocations",
        Some("/api/v0/sync") => "/api/v0/sync",
        Some(crate::web::PAGE) => crate::web::PAGE,
        Some(crate::web::PERMALINK) => crate::web::PERMALINK,
        Some(crate::web::ASSET) => crate::web::ASSET,
        _ => "other",
    };
    let started = Instant::now();
    let response = next.run(request).await;
    let m = &state.metrics;
    let status = response.status();
    m.requests
        .get_or_create(&RouteLabels {
            route,
            status: status.as_u16(),
        })
        .inc();
    let overloaded = response.extensions().get::<Overloaded>().is_some();
    m.responses.record(
        started.elapsed().as_micros() as u64,
        overloaded || status.is_server_error(),
    );
    if status.is_client_error() {
        m.error(ErrorClass::ClientError);
    } else if response.extensions().get::<Overloaded>().is_some() {
        m.error(ErrorClass::Overload);
    } else if status.is_server_error() {
        m.error(ErrorClass::ServerError);
    }
    m.http_request_duration_seconds
        .get_or_create(&RouteOnly { route })
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Wraps the plain-text refusals of axum's extractors (body too large,
/// malformed query string, ...) in the JSON error envelope.
async fn envelope_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let text = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .unwrap_or_default();
    let message = String::from_utf8_lossy(&text).trim().to_owned();
    let message = if message.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_owned()
    } else {
        message
    };
    ApiError::new(status, message).into_response()
}

/// Sends a command to the core and awaits the answer. A full client queue
/// refuses at once with 503 `SLOWDOWN`: the command never reaches the core.
pub(crate) async fn ask<T>(
    state: &ApiState,
    make: impl FnOnce(Reply<T>) -> ClientCommand,
) -> Result<T, ApiError> {
    let (reply, rx) = oneshot::channel();
    state.core.try_send(make(reply)).map_err(|e| match e {
        mpsc::error::TrySendError::Full(_) => {
            state.metrics.overload_rejections.inc();
            let jitter = rand::random_range(0..=OVERLOAD_RETRY_MS);
            ApiError::slow_down(OVERLOAD_RETRY_MS + jitter)
        }
        mpsc::error::TrySendError::Closed(_) => ApiError::unavailable("node is shutting down"),
    })?;
    Ok(rx
        .await
        .map_err(|_| ApiError::unavailable("node is shutting down"))??)
}

async fn health(State(state): State<ApiState>) -> ApiResult {
    if let Some(failure) = &state.core_status.borrow().failed {
        return Err(ApiError::unavailable(format!("store failed: {failure}")));
    }
    if state.net_status.has_changed().is_err() || state.core.is_closed() {
        return Err(ApiError::unavailable("node is shutting down"));
    }
    Ok(ok(json!({"store": "open", "swarm": "running"})))
}

async fn stats(State(state): State<ApiState>) -> ApiResult {
    let core = state.core_status.borrow().clone();
    let net = state.net_status.borrow().clone();
    let vv: serde_json::Map<String, Value> = core
        .version_vector
        .iter()
        .map(|(o, s)| (o.to_string(), json!(s)))
        .collect();
    let info = &state.info;
    Ok(ok(json!({
        "peer_id": info.peer_id,
        "region": info.region,
        "geo": info.geo.map(|g| json!({"lat": g.lat, "lon": g.lon})),
        "revision": core.version_vector.sum(),
        "version_vector": vv,
        "token": core.version_vector.to_token(),
        "peers": net.peers,
        "listen_addrs": net.listen_addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "buffered": core.buffered,
        "replication_delay_ms": {"p50": core.delay_p50_ms, "p99": core.delay_p99_ms},
        "rejected": state.metrics.rejections(),
        "names": state.names.kind(),
        "admission": net.admission,
        "equivocators": core.equivocators.len(),
        "uptime_s": info.started.elapsed().as_secs(),
        "heartbeat_ms": now_ms(),
    })))
}

/// `GET /api/v0/admission`: who may be a peer here, and the peers' state.
async fn admission_status(State(state): State<ApiState>) -> ApiResult {
    let net = state.net_status.borrow().clone();
    Ok(ok(json!({
        "admission": net.admission,
        "equivocators": crate::mesh::nodes_view(&state).equivocators,
    })))
}

/// `POST /api/v0/admission/revocations`: a revocation the operator signed
/// (`hearsay operator revoke`), as text in the body. Taken, it is kept,
/// applied (the revoked node is cut off here) and gossiped to the mesh.
async fn revoke(State(state): State<ApiState>, body: String) -> ApiResult {
    let revocation = hearsay_admission::Revocation::from_text(&body)
        .map_err(|e| ApiError::bad_request(format!("not a revocation: {e}")))?;
    let Some(admin) = &state.admin else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node takes no revocations",
        ));
    };
    let (reply, rx) = tokio::sync::oneshot::channel();
    admin
        .send(crate::net::AdminRequest::Revoke {
            revocation: revocation.encode(),
            reply,
        })
        .await
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the network is stopping"))?;
    match rx.await {
        Ok(Ok(())) => Ok(ok(json!({
            "revoked": revocation.node.to_string(),
        }))),
        Ok(Err(why)) => Err(ApiError::bad_request(why)),
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the network is stopping",
        )),
    }
}

async fn metrics(State(state): State<ApiState>) -> Response {
    if let Some(registry) = &state.registry {
        state.metrics.observe_registry(&registry.status());
    }
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    (
        [(header::CONTENT_TYPE, content_type)],
        state.metrics.encode(),
    )
        .into_response()
}

fn parse_id(field: &str, s: &str) -> Result<PostId, ApiError> {
    s.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "{field} {s:?} is not a valid post id (32 lowercase hex digits)"
        ))
    })
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<String>,
    before: Option<String>,
}

/// The page a listing asks for: `?limit=` (default [`DEFAULT_LIMIT`], at
/// most [`MAX_LIMIT`]) and `?before=POST_ID`.
fn page(q: &ListQuery) -> Result<(usize, Option<PostId>), ApiError> {
    let limit = match q.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "limit {l:?} must be a number from 1 to {MAX_LIMIT}"
                )));
            }
        },
    };
    let before = q
        .before
        .as_deref()
        .map(|b| parse_id("before", b))
        .transpose()?;
    Ok((limit, before))
}

async fn list_posts(State(state): State<ApiState>, Query(q): Query<ListQuery>) -> ApiResult {
    let (limit, before) = page(&q)?;
    // The first page comes from the snapshot the core publishes with each
    // durable head (taken no earlier than the head the answer is stamped
    // with), without queueing behind writes.
    if before.is_none() {
        let newest = state.core_status.borrow().newest.clone();
        if let Some(page) = newest.as_deref().and_then(|n| first_page(n, limit)) {
            let started = Instant::now();
            let answer = ok(page);
            state.metrics.timed(Stage::Read, started);
            return Ok(answer);
        }
    }
    let posts = ask(&state, |reply| ClientCommand::Posts {
        limit,
        before,
        reply,
    })
    .await?;
    Ok(ok(posts))
}

#[derive(Deserialize)]
struct CreateForm {
    author: Option<String>,
    body: Option<String>,
    reply_to: Option<String>,
    /// A signed post: the client-made id, the author's key and signature.
    id: Option<String>,
    author_key: Option<String>,
    signature: Option<String>,
    /// A readable permalink (needs the name registry).
    slug: Option<String>,
}

/// A post to create, its signature if signed, and the slug asked for.
type Create = (NewPost, Option<PostSignature>, Option<String>);

fn parse_create(headers: &HeaderMap, bytes: &[u8]) -> Result<Create, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let form: CreateForm = if content_type.starts_with("application/x-www-form-urlencoded") {
        serde_urlencoded::from_bytes(bytes)
            .map_err(|e| ApiError::bad_request(format!("malformed form: {e}")))?
    } else {
        serde_json::from_slice(bytes)
            .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?
    };
    let body = form
        .body
        .ok_or_else(|| ApiError::bad_request("field `body` is required"))?;
    if body.trim().is_empty() {
        return Err(ApiError::bad_request("field `body` must not be empty"));
    }
    let chars = body.chars().count();
    if chars > MAX_BODY_CHARS {
        return Err(ApiError::bad_request(format!(
            "field `body` has {chars} characters; the limit is {MAX_BODY_CHARS}"
        )));
    }
    let author = match form.author.as_deref().map(str::trim) {
        None | Some("") => UserName::new("anonymous").expect("valid"),
        Some(a) => {
            UserName::new(a).map_err(|e| ApiError::bad_request(format!("field `author`: {e}")))?
        }
    };
    let reply_to = match form.reply_to.as_deref() {
        None | Some("") => None,
        Some(r) => Some(parse_id("field `reply_to`", r)?),
    };
    let signature = users::parse_post_signature(
        form.id.as_deref(),
        form.author_key.as_deref(),
        form.signature.as_deref(),
    )?;
    if signature.is_some() && form.author.as_deref().is_none_or(|a| a.trim().is_empty()) {
        return Err(ApiError::bad_request(
            "a signed post needs field `author`: the name whose key signed it",
        ));
    }
    let slug = match form.slug.as_deref() {
        None | Some("") => None,
        Some(raw) => Some(slugs::parse_slug(raw)?),
    };
    let new = NewPost {
        author,
        body,
        reply_to,
    };
    Ok((new, signature, slug))
}

async fn create_post(State(state): State<ApiState>, headers: HeaderMap, bytes: Bytes) -> ApiResult {
    let (new, signature, slug) = parse_create(&headers, &bytes)?;
    if let Some(registry) = slugs::slug_registry(&state) {
        return slugs::create(&state, registry, new, signature, slug).await;
    }
    if slug.is_some() {
        return Err(ApiError::bad_request(
            "field `slug` needs the name registry, and this mesh has no registry voters",
        ));
    }
    let op = match signature {
        None => Write::CreatePost(new),
        Some(signature) => Write::CreateSignedPost { new, signature },
    };
    let ack = ask(&state, |reply| ClientCommand::Write { op, reply }).await?;
    Ok(acked(ack))
}

async fn get_post(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult {
    let id = parse_id("id", &id)?;
    match ask(&state, |reply| ClientCommand::GetPost { id, reply }).await? {
        Some(found) => Ok(ok(found)),
        None => Err(ApiError::not_found(format!("no post {id}"))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Edit {
    /// Character offset in the body.
    pos: usize,
    /// Characters to remove at `pos`.
    #[serde(default)]
    delete: usize,
    /// Text to insert at `pos`.
    #[serde(default)]
    insert: String,
    /// For a signed post: the author's time and signature of the edit.
    at_ms: Option<u64>,
    signature: Option<String>,
}

async fn edit_post(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> ApiResult {
    let id = parse_id("id", &id)?;
    let edit: Edit = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    let (pos, delete, insert) = (edit.pos, edit.delete, edit.insert);
    let op = match users::parse_proof(edit.at_ms, edit.signature.as_deref())? {
        None => Write::EditPost {
            id,
            pos,
            delete,
            insert,
        },
        Some(proof) => Write::SignedEdit {
            id,
            pos,
            delete,
            insert,
            proof,
        },
    };
    let ack = ask(&state, |reply| ClientCommand::Write { op, reply }).await?;
    Ok(acked(ack))
}

/// `DELETE /api/v0/p/{id}`, with a JSON body `{"at_ms", "signature"}` for a
/// signed post.
async fn delete_post(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> ApiResult {
    let id = parse_id("id", &id)?;
    let op = match users::parse_signed_body(&bytes)? {
        None => Write::DeletePost(id),
        Some(proof) => Write::SignedDelete { id, proof },
    };
    let ack = ask(&state, |reply| ClientCommand::Write { op, reply }).await?;
    Ok(acked(ack))
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
