//! Version-vector tokens at the HTTP edge: read-your-writes.
//!
//! A token names a set of changes (a version vector, see
//! [`VersionVector::to_token`]). Every write answers with the token covering
//! it; every read accepts `?after=TOKEN` and is answered only once this node
//! holds everything the token names (its durable vector covers it), or, after
//! a bounded wait (`?wait_ms=`, default [`DEFAULT_WAIT_MS`]), refused with 409
//! and a body saying how far behind the node is. Because a token is a vector
//! and not a per-host cursor, a client can write on one node and read on any
//! other.
//!
//! The check is one middleware over every `GET` route, so no handler can
//! forget it; it also stamps each read with [`TOKEN_HEADER`], the node's
//! durable head when the read began: the answer covers at least that, so it
//! is a safe resume point for an event stream that follows the read.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hearsay_crdt::VersionVector;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;

use crate::api::{ApiError, ApiState, TOKEN_HEADER};
use crate::core::CoreStatus;

/// How long a read with `?after=` waits by default.
pub const DEFAULT_WAIT_MS: u64 = 2_000;
/// The longest wait a client may ask for.
pub const MAX_WAIT_MS: u64 = 30_000;

/// Parses a token from a client, naming where it came from in the error.
pub fn parse_token(field: &str, raw: &str) -> Result<VersionVector, ApiError> {
    VersionVector::from_token(raw.trim())
        .map_err(|e| ApiError::bad_request(format!("{field} is not a valid token: {e}")))
}

/// Where the node stands against a token: the origins it lags on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Behind {
    pub origin: String,
    /// The seq the token names.
    pub want: u64,
    /// The highest seq this node holds durably.
    pub have: u64,
}

/// The origins on which `have` does not cover `want` (empty: covered).
pub fn behind(have: &VersionVector, want: &VersionVector) -> Vec<Behind> {
    want.iter()
        .filter(|(origin, seq)| have.get(origin) < **seq)
        .map(|(origin, seq)| Behind {
            origin: origin.to_string(),
            want: *seq,
            have: have.get(origin),
        })
        .collect()
}

/// Waits until the durable vector covers `want`, at most `wait`. Returns what
/// is still missing (empty when caught up).
pub async fn wait_for(
    status: &mut watch::Receiver<CoreStatus>,
    want: &VersionVector,
    wait: Duration,
) -> Vec<Behind> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let missing = behind(&status.borrow_and_update().version_vector, want);
        if missing.is_empty() {
            return missing;
        }
        match tokio::time::timeout_at(deadline, status.changed()).await {
            Ok(Ok(())) => continue,
            // Timed out, or the core stopped: report where it stands.
            _ => return behind(&status.borrow().version_vector, want),
        }
    }
}

#[derive(Deserialize)]
struct AfterQuery {
    after: Option<String>,
    wait_ms: Option<String>,
}

/// Middleware over every read: honours `?after=TOKEN&wait_ms=N` and stamps
/// the answer with the node's durable head.
pub async fn read_your_writes(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != Method::GET {
        return next.run(request).await;
    }
    let query: AfterQuery = match serde_urlencoded::from_str(request.uri().query().unwrap_or("")) {
        Ok(q) => q,
        Err(e) => return ApiError::bad_request(format!("malformed query: {e}")).into_response(),
    };
    if let Some(raw) = query.after.as_deref() {
        let want = match parse_token("`after`", raw) {
            Ok(t) => t,
            Err(e) => return e.into_response(),
        };
        let wait_ms = match query.wait_ms.as_deref().map(str::parse::<u64>) {
            None => DEFAULT_WAIT_MS,
            Some(Ok(ms)) if ms <= MAX_WAIT_MS => ms,
            Some(_) => {
                return ApiError::bad_request(format!(
                    "`wait_ms` must be a number of milliseconds from 0 to {MAX_WAIT_MS}"
                ))
                .into_response();
            }
        };
        let started = Instant::now();
        let mut status = state.core_status.clone();
        let missing = wait_for(&mut status, &want, Duration::from_millis(wait_ms)).await;
        if !missing.is_empty() {
            state.metrics.reads_behind.inc();
            let waited_ms = started.elapsed().as_millis() as u64;
            let lag: u64 = missing.iter().map(|b| b.want - b.have).sum();
            let message = format!(
                "this node has not caught up with the token after {waited_ms} ms: \
                 {lag} change(s) from {} origin(s) missing; retry, or read elsewhere",
                missing.len()
            );
            return (
                StatusCode::CONFLICT,
                Json(json!({
                    "status": "BEHIND",
                    "error": message,
                    "body": {"behind": missing, "waited_ms": waited_ms},
                })),
            )
                .into_response();
        }
    }
    // Taken before the read: the read sees at least this (the durable vector
    // only grows, and reads see everything applied), so a stream started
    // `from` this token misses nothing the answer lacks (it may repeat some).
    let head = state.core_status.borrow().version_vector.to_token();
    let mut response = next.run(request).await;
    if !response.headers().contains_key(TOKEN_HEADER)
        && let Ok(value) = HeaderValue::from_str(&head)
    {
        response.headers_mut().insert(TOKEN_HEADER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearsay_crdt::NodeId;

    fn vv(entries: &[(u8, u64)]) -> VersionVector {
        entries
            .iter()
            .map(|(o, s)| (NodeId([*o; 32]), *s))
            .collect()
    }

    #[test]
    fn behind_lists_only_the_origins_that_lag() {
        let have = vv(&[(1, 5), (2, 3)]);
        assert!(behind(&have, &vv(&[(1, 5), (2, 1)])).is_empty());
        assert!(behind(&have, &VersionVector::new()).is_empty());
        let missing = behind(&have, &vv(&[(1, 7), (2, 3), (3, 1)]));
        assert_eq!(
            missing,
            vec![
                Behind {
                    origin: NodeId([1; 32]).to_string(),
                    want: 7,
                    have: 5
                },
                Behind {
                    origin: NodeId([3; 32]).to_string(),
                    want: 1,
                    have: 0
                },
            ]
        );
    }

    #[tokio::test]
    async fn a_wait_ends_when_the_durable_vector_covers_the_token() {
        let (tx, mut rx) = watch::channel(CoreStatus::default());
        let want = vv(&[(1, 2)]);
        let waiter =
            tokio::spawn(async move { wait_for(&mut rx, &want, Duration::from_secs(30)).await });
        tx.send_modify(|s| s.version_vector = vv(&[(1, 1)]));
        tx.send_modify(|s| s.version_vector = vv(&[(1, 2), (9, 4)]));
        assert!(waiter.await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_wait_gives_up_after_its_bound_and_says_how_far_behind() {
        let (_tx, mut rx) = watch::channel(CoreStatus {
            version_vector: vv(&[(1, 1)]),
            ..CoreStatus::default()
        });
        let missing = wait_for(&mut rx, &vv(&[(1, 4)]), Duration::from_millis(20)).await;
        assert_eq!(missing.len(), 1);
        assert_eq!((missing[0].want, missing[0].have), (4, 1));
    }
}

/// Fuzzing [`parse_token`], the token parser every `?after=` reaches.
/// Cases default to 64; run longer with HEARSAY_FUZZ_CASES=100000
/// (`HEARSAY_FUZZ_CASES=100000 cargo test -p hearsay-node --lib tokens::fuzz`).
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::Index;
    use proptest::test_runner::Config;

    fn config() -> Config {
        crate::fuzz_config()
    }

    fn sample() -> String {
        [
            (hearsay_crdt::NodeId([3; 32]), 9),
            (hearsay_crdt::NodeId([200; 32]), u64::MAX),
        ]
        .into_iter()
        .collect::<VersionVector>()
        .to_token()
    }

    /// A refusal is a 400 in the JSON envelope naming the field.
    fn assert_refusal(e: ApiError) -> Result<(), TestCaseError> {
        let response = e.into_response();
        prop_assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        Ok(())
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn any_string_is_a_token_or_a_bad_request(raw in ".{0,300}") {
            match parse_token("`after`", &raw) {
                Ok(vv) => prop_assert_eq!(
                    VersionVector::from_token(&vv.to_token()).unwrap(),
                    vv
                ),
                Err(e) => {
                    prop_assert!(format!("{e:?}").contains("`after`"), "{:?}", e);
                    assert_refusal(e)?;
                }
            }
        }

        #[test]
        fn a_mutated_token_is_a_token_or_a_bad_request(
            at in any::<Index>(),
            cut in any::<Index>(),
            c in any::<char>(),
            mode in 0u8..3,
        ) {
            let mut raw: Vec<char> = sample().chars().collect();
            match mode {
                0 => {
                    let i = at.index(raw.len());
                    raw[i] = c;
                }
                1 => raw.truncate(cut.index(raw.len())),
                _ => raw.insert(at.index(raw.len() + 1), c),
            }
            let raw: String = raw.into_iter().collect();
            if let Err(e) = parse_token("`after`", &raw) {
                assert_refusal(e)?;
            }
        }
    }
}
