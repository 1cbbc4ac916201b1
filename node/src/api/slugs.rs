//! Readable permalinks: post slugs claimed in the name registry.
//!
//! `POST /api/v0/p` may carry `slug`: a user's post is then also found at
//! `/p/<user>/<slug>`, an anonymous one at `/p/<slug>`. An anonymous post
//! without a slug gets a short one made from its id (seven characters),
//! made again from the next hash on the rare collision. The slug is claimed
//! (registry key `/p/...`, owner the post id) before the post is written,
//! so a post is never stored under a slug it did not get; if the write then
//! fails, the slug is released.
//!
//! Only when the mesh has registry voters: without them, `slug` is refused
//! and posts keep their id permalinks only.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use hearsay_crdt::{NewPost, PostId, PostSignature};
use hearsay_registry::{ClaimAnswer, ReadAnswer, Registry};
use serde_json::json;

use super::names::claim_response;
use super::{ApiError, ApiResult, ApiState, acked, ask, now_ms, ok};
use crate::core::{ClientCommand, Write};
use crate::registry::slug_key;

/// Longest slug, in characters.
pub const MAX_SLUG_CHARS: usize = 80;
/// Made slugs tried for one anonymous post before giving up.
const MADE_SLUG_ATTEMPTS: u32 = 8;
/// Characters of a made slug (no 0/o, 1/l: read aloud and typed well).
const SLUG_ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
const MADE_SLUG_CHARS: usize = 7;

/// Checks a requested slug: 1 to 80 of `a-z`, `0-9` and `-`, not starting
/// with `-`.
pub fn parse_slug(raw: &str) -> Result<String, ApiError> {
    let ok = !raw.is_empty()
        && raw.chars().count() <= MAX_SLUG_CHARS
        && !raw.starts_with('-')
        && raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(ApiError::bad_request(format!(
            "field `slug` {raw:?}: 1 to {MAX_SLUG_CHARS} of a-z, 0-9 and '-', not starting with '-'"
        )))
    }
}

/// The `attempt`-th short slug of a post: from SHA-256 of its id and the
/// attempt.
pub fn made_slug(id: &PostId, attempt: u32) -> String {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    hash.update(id.to_string().as_bytes());
    hash.update(attempt.to_be_bytes());
    let digest = hash.finalize();
    digest[..MADE_SLUG_CHARS]
        .iter()
        .map(|b| SLUG_ALPHABET[(*b as usize) % SLUG_ALPHABET.len()] as char)
        .collect()
}

/// The registry, if the mesh has voters (slugs need it).
pub(super) fn slug_registry(state: &ApiState) -> Option<&Registry> {
    state
        .registry
        .as_ref()
        .filter(|registry| !registry.voters().is_empty())
}

/// `POST /api/v0/p` on a mesh with a registry: claims the post's slug, then
/// writes the post under the id the slug was claimed for.
pub(super) async fn create(
    state: &ApiState,
    registry: &Registry,
    new: NewPost,
    signature: Option<PostSignature>,
    slug: Option<String>,
) -> ApiResult {
    let anonymous = new.author.as_str() == super::users::ANONYMOUS;
    let id = signature
        .as_ref()
        .map_or_else(|| PostId::generate(now_ms()), |s| s.id);
    let owner = id.to_string();
    let slug = match (slug, anonymous) {
        // A user's post without a slug: its id is its permalink.
        (None, false) => None,
        (Some(slug), false) => {
            match claim(state, registry, &format!("{}/{slug}", new.author), &owner).await {
                Ok(slug) => Some(slug),
                Err(answer) => return Ok(answer),
            }
        }
        (Some(slug), true) => match claim(state, registry, &slug, &owner).await {
            Ok(slug) => Some(slug),
            Err(answer) => return Ok(answer),
        },
        (None, true) => {
            let mut got = None;
            for attempt in 0..MADE_SLUG_ATTEMPTS {
                let slug = made_slug(&id, attempt);
                match registry.claim(&slug_key(&slug), &owner).await {
                    ClaimAnswer::Claimed { .. } => {
                        got = Some(slug);
                        break;
                    }
                    ClaimAnswer::Taken { .. } => continue,
                    other => return Ok(claim_response(state, &slug, other)),
                }
            }
            Some(got.ok_or_else(|| {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "every short slug made for this post is taken; send it again",
                )
            })?)
        }
    };
    let op = match signature {
        Some(signature) => Write::CreateSignedPost { new, signature },
        None => Write::CreatePostAs { new, id },
    };
    match ask(state, |reply| ClientCommand::Write { op, reply }).await {
        Ok(ack) => Ok(with_slug(acked(ack), slug.as_deref()).await),
        Err(e) => {
            if let Some(slug) = slug {
                // The post was not written: the slug goes back.
                let released = registry.release(&slug_key(&slug), &owner).await;
                tracing::debug!(%slug, ?released, "slug released after a failed post");
            }
            Err(e)
        }
    }
}

/// Adds `"slug": "/p/..."` to a write's envelope.
async fn with_slug(response: Response, slug: Option<&str>) -> Response {
    let Some(slug) = slug else {
        return response;
    };
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 1 << 20).await else {
        return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "answer too large")
            .into_response();
    };
    let mut envelope: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    envelope["slug"] = json!(format!("/p/{slug}"));
    let body = serde_json::to_vec(&envelope).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// Claims a requested slug; anything but claimed is the final answer to
/// the request (409 naming the post that holds it, 503, 504).
async fn claim(
    state: &ApiState,
    registry: &Registry,
    slug: &str,
    owner: &str,
) -> Result<String, Response> {
    match registry.claim(&slug_key(slug), owner).await {
        ClaimAnswer::Claimed { .. } => Ok(slug.to_owned()),
        ClaimAnswer::Taken { owner } => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("slug {slug} is taken by post {owner}"),
        )
        .into_response()),
        other => Err(claim_response(state, slug, other)),
    }
}

/// `GET /api/v0/slugs/{*slug}`: the post a slug names (linearizable: the
/// slug is read through the registry's leader).
pub(super) async fn show(State(state): State<ApiState>, Path(slug): Path<String>) -> ApiResult {
    let id = resolve(&state, &slug).await?;
    match ask(&state, |reply| ClientCommand::GetPost { id, reply }).await? {
        Some(found) => Ok(ok(
            json!({"slug": format!("/p/{slug}"), "id": id, "post": found}),
        )),
        None => Err(ApiError::not_found(format!(
            "slug {slug} names post {id}, which has not reached this node yet"
        ))),
    }
}

async fn resolve(state: &ApiState, slug: &str) -> Result<PostId, ApiError> {
    let registry = slug_registry(state).ok_or_else(|| {
        ApiError::not_found("this mesh has no registry: posts have id permalinks only")
    })?;
    hearsay_registry::validate_name(&slug_key(slug))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    match registry.read(&slug_key(slug)).await {
        ReadAnswer::Owner {
            owner: Some(owner), ..
        } => owner.parse().map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("slug {slug} holds {owner:?}"),
            )
        }),
        ReadAnswer::Owner { owner: None, .. } => {
            Err(ApiError::not_found(format!("no post has slug {slug}")))
        }
        ReadAnswer::Unavailable { why, .. } => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the registry cannot be reached ({why})"),
        )),
    }
}

/// `GET /p/{user}/{title}`: the page of the post with that slug (a redirect
/// to its id permalink).
pub(crate) async fn user_permalink(
    State(state): State<ApiState>,
    Path((user, title)): Path<(String, String)>,
) -> ApiResult {
    let id = resolve(&state, &format!("{user}/{title}")).await?;
    Ok(Redirect::to(&format!("/p/{id}")).into_response())
}

/// `GET /p/{slug}` when `slug` is not a post id: a redirect to the id
/// permalink of the anonymous post with that slug.
pub(crate) async fn anonymous_permalink(state: &ApiState, slug: &str) -> ApiResult {
    let id = resolve(state, slug).await?;
    Ok(Redirect::to(&format!("/p/{id}")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_short_lowercase_words() {
        assert_eq!(parse_slug("hello-world").unwrap(), "hello-world");
        assert_eq!(parse_slug("2026-recap").unwrap(), "2026-recap");
        for bad in ["", "-lead", "Hello", "a b", "a/b", "é", &"a".repeat(81)] {
            assert!(parse_slug(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_slug(&"a".repeat(80)).is_ok());
    }

    #[test]
    fn made_slugs_are_stable_per_attempt_and_differ_between_attempts() {
        let id = PostId::client(1_700_000_000_000, [7; 10]);
        let first = made_slug(&id, 0);
        assert_eq!(first.len(), MADE_SLUG_CHARS);
        assert_eq!(first, made_slug(&id, 0));
        assert_ne!(first, made_slug(&id, 1));
        assert!(parse_slug(&first).is_ok(), "a made slug is a valid slug");
        let other = PostId::client(1_700_000_000_000, [8; 10]);
        assert_ne!(first, made_slug(&other, 0));
    }
}
