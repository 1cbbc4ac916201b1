//! The name registry over HTTP: `POST /api/v0/names`,
//! `GET /api/v0/names/{name}`, `GET /api/v0/registry`,
//! `POST /api/v0/registry/init`.
//!
//! A claim answers 201 (claimed: final), 409 (taken, with the owner: final),
//! 503 `UNAVAILABLE` (no leader reachable: nothing was written; retry after
//! `retry_after_ms`) or 504 `UNKNOWN` (the claim may or may not be applied:
//! send the same claim again, with the same owner, to settle it).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hearsay_registry::{ClaimAnswer, ReadAnswer, Registry};
use serde::Deserialize;
use serde_json::json;

use super::users::json;
use super::{ApiError, ApiResult, ApiState, ok};
use crate::metrics::Refusal;
use crate::registry::is_reserved;

fn registry(state: &ApiState) -> Result<&Registry, ApiError> {
    state
        .registry
        .as_ref()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "this node runs no name registry"))
}

/// A 503 or 504 in the envelope, with its retry hint.
fn not_now(status: StatusCode, kind: &str, why: &str, retry_after_ms: u64) -> Response {
    let body = json!({
        "status": kind,
        "error": why,
        "retry_after_ms": retry_after_ms,
        "body": null,
    });
    let mut response = (status, Json(body)).into_response();
    let seconds = retry_after_ms.div_ceil(1000).max(1);
    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimBody {
    name: String,
    owner: String,
}

/// `POST /api/v0/names` `{"name", "owner"}`.
pub(super) async fn claim(State(state): State<ApiState>, bytes: Bytes) -> ApiResult {
    let registry = registry(&state)?;
    let body: ClaimBody = json(&bytes)?;
    hearsay_registry::validate(&body.name, &body.owner)
        .map_err(|e| ApiError::bad_request(format!("{e}")))?;
    if is_reserved(&body.name) {
        return Err(ApiError::bad_request(
            "names starting with `@` or `/` are user names and post slugs: claim them with POST /api/v0/users or POST /api/v0/p",
        ));
    }
    Ok(claim_response(
        &state,
        &body.name,
        registry.claim(&body.name, &body.owner).await,
    ))
}

/// The HTTP answer to a claim's answer.
pub(crate) fn claim_response(state: &ApiState, name: &str, answer: ClaimAnswer) -> Response {
    match answer {
        ClaimAnswer::Claimed { owner } => (
            StatusCode::CREATED,
            Json(json!({"status": "OK", "body": {"name": name, "owner": owner}})),
        )
            .into_response(),
        ClaimAnswer::Taken { owner } => {
            state.metrics.refuse(Refusal::NameTaken);
            (
                StatusCode::CONFLICT,
                Json(json!({
                    "status": "ERROR",
                    "error": format!("{name} is taken"),
                    "body": {"name": name, "owner": owner},
                })),
            )
                .into_response()
        }
        ClaimAnswer::Unknown { why } => not_now(
            StatusCode::GATEWAY_TIMEOUT,
            "UNKNOWN",
            &format!(
                "the outcome is unknown ({why}): the claim may still be applied; send the same claim again to settle it"
            ),
            0,
        ),
        ClaimAnswer::Unavailable {
            why,
            retry_after_ms,
        } => not_now(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            &format!("no registry quorum reachable ({why}); nothing was claimed"),
            retry_after_ms,
        ),
        ClaimAnswer::Released(outcome) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("a claim answered {outcome:?}"),
        )
        .into_response(),
    }
}

/// `GET /api/v0/names/{name}`: linearizable.
pub(super) async fn show(State(state): State<ApiState>, Path(name): Path<String>) -> ApiResult {
    let registry = registry(&state)?;
    hearsay_registry::validate_name(&name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(match registry.read(&name).await {
        ReadAnswer::Owner { owner, index } => ok(json!({
            "name": name,
            "owner": owner,
            "free": owner.is_none(),
            "index": index,
        })),
        ReadAnswer::Unavailable {
            why,
            retry_after_ms,
        } => not_now(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            &format!("no registry quorum reachable ({why})"),
            retry_after_ms,
        ),
    })
}

/// `GET /api/v0/registry`: members, leader, term, commit index, last
/// contact.
pub(super) async fn status(State(state): State<ApiState>) -> ApiResult {
    Ok(ok(registry(&state)?.status()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InitBody {
    voters: Vec<String>,
}

/// `POST /api/v0/registry/init` `{"voters": [peer id, ...]}`: sets up the
/// registry group on a running mesh.
pub(super) async fn init(State(state): State<ApiState>, bytes: Bytes) -> ApiResult {
    let registry = registry(&state)?;
    let body: InitBody = json(&bytes)?;
    for voter in &body.voters {
        voter
            .parse::<libp2p::PeerId>()
            .map_err(|_| ApiError::bad_request(format!("{voter:?} is not a peer id")))?;
    }
    registry
        .init(body.voters)
        .await
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(ok(registry.status()))
}
