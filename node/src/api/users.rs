//! Users, follows and timelines over HTTP.
//!
//! - `POST /api/v0/users` `{"name", "public_key", "display_name"?,
//!   "signature"}`: registers a name with a key. The signature, by that key,
//!   covers [`registration_message`] (name, key, display name): proof that
//!   the claimant holds the key. 400 when it does not verify, 409 when the
//!   name is held by another key ([`crate::names`]), 503 when the registry
//!   cannot decide in time.
//! - `GET /api/v0/users/{name}`: the profile (display name, public key,
//!   follows).
//! - `GET /api/v0/users/{name}/timeline` and `.../home`: the user's posts,
//!   and the posts of the users they follow; newest first, `?limit=`
//!   (default 64, at most 500) and `?before=POST_ID`.
//! - `POST` and `DELETE /api/v0/users/{name}/follows/{other}`: follow and
//!   unfollow. A user with a registered key signs the request, JSON body
//!   `{"at_ms": N, "signature": HEX}` over [`Action::Follow`] or
//!   [`Action::Unfollow`]; a user without one sends no body. The answer is
//!   the profile and the token covering the write.
//!
//! Handlers only parse and translate: every rule about keys, clocks and
//! replays is the core's (see [`crate::signed`]).
//!
//! [`Action::Follow`]: hearsay_crdt::Action::Follow
//! [`Action::Unfollow`]: hearsay_crdt::Action::Unfollow

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use hearsay_crdt::docs::MAX_DISPLAY_NAME_CHARS;
use hearsay_crdt::signing::{registration_message, signature_from_hex};
use hearsay_crdt::{NodeId, PostSignature, UserName, identity};
use serde::Deserialize;

use super::{ApiError, ApiResult, ApiState, ListQuery, acked, ask, ok, page, parse_id};
use crate::core::{Ack, ClientCommand, Write, Written};
use crate::metrics::Refusal;
use crate::names::{Claim, RegistryError};
use crate::signed::UserProof;

/// The author name of posts without one; it cannot be registered.
pub(super) const ANONYMOUS: &str = "anonymous";

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Core(e) => e.into(),
            RegistryError::Overloaded | RegistryError::ShuttingDown => {
                ApiError::unavailable(e.to_string())
            }
        }
    }
}

fn parse_name(what: &str, s: &str) -> Result<UserName, ApiError> {
    UserName::new(s).map_err(|e| ApiError::bad_request(format!("{what}: {e}")))
}

fn parse_key(what: &str, s: &str) -> Result<NodeId, ApiError> {
    s.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "{what} {s:?} is not a public key (64 lowercase hex digits)"
        ))
    })
}

fn parse_signature(what: &str, s: &str) -> Result<[u8; 64], ApiError> {
    signature_from_hex(s).map_err(|_| {
        ApiError::bad_request(format!(
            "{what} is not a signature (128 lowercase hex digits)"
        ))
    })
}

pub(super) fn json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))
}

/// The signature fields of `POST /api/v0/p`: all three, or none.
pub(super) fn parse_post_signature(
    id: Option<&str>,
    author_key: Option<&str>,
    signature: Option<&str>,
) -> Result<Option<PostSignature>, ApiError> {
    fn given(f: Option<&str>) -> Option<&str> {
        f.filter(|s| !s.is_empty())
    }
    match (given(id), given(author_key), given(signature)) {
        (None, None, None) => Ok(None),
        (Some(id), Some(key), Some(sig)) => Ok(Some(PostSignature {
            id: parse_id("field `id`", id)?,
            author_key: parse_key("field `author_key`", key)?,
            signature: parse_signature("field `signature`", sig)?,
        })),
        _ => Err(ApiError::bad_request(
            "a signed post needs all of `id`, `author_key` and `signature` (or none of them for an unsigned post)",
        )),
    }
}

/// `at_ms` and `signature` of a signed request: both, or neither.
pub(super) fn parse_proof(
    at_ms: Option<u64>,
    signature: Option<&str>,
) -> Result<Option<UserProof>, ApiError> {
    match (at_ms, signature) {
        (None, None) => Ok(None),
        (Some(at_ms), Some(sig)) => Ok(Some(UserProof {
            at_ms,
            signature: parse_signature("field `signature`", sig)?,
        })),
        _ => Err(ApiError::bad_request(
            "a signed request needs both `at_ms` and `signature`",
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignedBody {
    at_ms: Option<u64>,
    signature: Option<String>,
}

/// A request body that is empty (unsigned) or `{"at_ms", "signature"}`.
pub(super) fn parse_signed_body(bytes: &[u8]) -> Result<Option<UserProof>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let body: SignedBody = json(bytes)?;
    parse_proof(body.at_ms, body.signature.as_deref())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Register {
    name: String,
    public_key: String,
    display_name: Option<String>,
    signature: String,
}

/// `POST /api/v0/users`.
pub(super) async fn register(State(state): State<ApiState>, bytes: Bytes) -> ApiResult {
    let r: Register = json(&bytes)?;
    let name = parse_name("field `name`", &r.name)?;
    if name.as_str() == ANONYMOUS {
        return Err(ApiError::bad_request(format!(
            "the name {ANONYMOUS} is reserved for posts without an author"
        )));
    }
    let key = parse_key("field `public_key`", &r.public_key)?;
    if let Some(d) = &r.display_name {
        let chars = d.chars().count();
        if chars > MAX_DISPLAY_NAME_CHARS {
            return Err(ApiError::bad_request(format!(
                "field `display_name` has {chars} characters; the limit is {MAX_DISPLAY_NAME_CHARS}"
            )));
        }
    }
    let signature = parse_signature("field `signature`", &r.signature)?;
    let message = registration_message(&name, &key, r.display_name.as_deref());
    if !identity::verify(&key, &message, &signature) {
        state.metrics.refuse(Refusal::BadSignature);
        return Err(ApiError::bad_request(
            "field `signature` does not verify: it must be the key's signature of the registration (name, public_key, display_name)",
        ));
    }
    let token = match state.names.claim(&name, key).await? {
        Claim::Granted { token } => token,
        Claim::Taken { holder } => {
            state.metrics.refuse(Refusal::NameTaken);
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("user name {name} is taken: it is registered with key {holder}"),
            ));
        }
        Claim::Unknown { why } => {
            return Err(ApiError::unavailable(format!(
                "the name registry could not decide in time ({why}); the claim may still succeed: send the same request again"
            )));
        }
        Claim::Unavailable { why } => {
            return Err(ApiError::unavailable(format!(
                "the name registry cannot be reached ({why}); nothing was claimed: try again later"
            )));
        }
    };
    if let Some(display_name) = r.display_name {
        let ack = ask(&state, |reply| ClientCommand::Write {
            op: Write::SetProfile {
                user: name,
                display_name: Some(display_name),
                public_key: None,
            },
            reply,
        })
        .await?;
        return Ok(acked(ack));
    }
    let profile = ask(&state, |reply| ClientCommand::Profile { user: name, reply }).await?;
    let token = token.unwrap_or_else(|| state.core_status.borrow().version_vector.clone());
    Ok(acked(Ack {
        written: Written::Profile(profile),
        token,
    }))
}

/// `GET /api/v0/users/{name}`.
pub(super) async fn profile(State(state): State<ApiState>, Path(name): Path<String>) -> ApiResult {
    let user = parse_name("user name", &name)?;
    let profile = ask(&state, |reply| ClientCommand::Profile { user, reply }).await?;
    Ok(ok(profile))
}

/// `GET /api/v0/users/{name}/timeline`.
pub(super) async fn timeline(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult {
    let user = parse_name("user name", &name)?;
    let (limit, before) = page(&q)?;
    let posts = ask(&state, |reply| ClientCommand::UserPosts {
        user,
        limit,
        before,
        reply,
    })
    .await?;
    Ok(ok(posts))
}

/// `GET /api/v0/users/{name}/home`.
pub(super) async fn home(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult {
    let user = parse_name("user name", &name)?;
    let (limit, before) = page(&q)?;
    let posts = ask(&state, |reply| ClientCommand::Home {
        user,
        limit,
        before,
        reply,
    })
    .await?;
    Ok(ok(posts))
}

/// `POST /api/v0/users/{name}/follows/{other}`.
pub(super) async fn follow(
    State(state): State<ApiState>,
    Path((name, other)): Path<(String, String)>,
    bytes: Bytes,
) -> ApiResult {
    follow_or_unfollow(state, &name, &other, &bytes, true).await
}

/// `DELETE /api/v0/users/{name}/follows/{other}`.
pub(super) async fn unfollow(
    State(state): State<ApiState>,
    Path((name, other)): Path<(String, String)>,
    bytes: Bytes,
) -> ApiResult {
    follow_or_unfollow(state, &name, &other, &bytes, false).await
}

async fn follow_or_unfollow(
    state: ApiState,
    name: &str,
    other: &str,
    bytes: &[u8],
    follow: bool,
) -> ApiResult {
    let user = parse_name("user name", name)?;
    let whom = parse_name("followed user name", other)?;
    let op = match (parse_signed_body(bytes)?, follow) {
        (None, true) => Write::Follow { user, whom },
        (None, false) => Write::Unfollow { user, whom },
        (Some(proof), follow) => Write::SignedFollow {
            user,
            whom,
            follow,
            proof,
        },
    };
    let ack = ask(&state, |reply| ClientCommand::Write { op, reply }).await?;
    Ok(acked(ack))
}
