//! `GET /api/v0/events`: every applied change as server-sent events,
//! resumable on any node with a version-vector token.
//!
//! # The stream is the log
//! A token is a version vector: the exact set of changes a client has seen.
//! Each stream keeps such a vector, its position, and sends the deltas of the
//! node's log that the position lacks, per origin in seq order, up to the
//! node's durable vector; then it sleeps until the durable vector moves and
//! does the same again. Replay and live are one loop over one source, so
//! there is no switch at which an event could be dropped or sent twice:
//! every delta sent is exactly `position[origin] + 1`, and the position
//! after it is the event's `id`. A token from another node works here
//! because the position names changes, not offsets in one node's log.
//!
//! Deltas that are no event (timeline bookkeeping) or that the filters
//! drop advance the position too; an id-only message (`id:` and no data:
//! browsers update `Last-Event-Id` without firing an event) carries the
//! position forward after each pass, so a filtered stream's resume point
//! does not lag.
//!
//! # Never a silent gap
//! - The token names deltas this node does not hold yet: an `ahead` event
//!   says which origins and how far; the stream goes on with everything else
//!   and continues those origins once the node holds past the token.
//! - The log lacks a delta the client needs (it was never there or is gone):
//!   an `unavailable` event names the range, and the stream ends, so the
//!   client resumes on another node instead of skipping it.
//! - The consumer does not keep up: the stream reads the log only as fast as
//!   the consumer takes events, through a buffer of `buffer` events; when the
//!   buffer stays full for `stall`, a `lagged` event carries the token of the
//!   last event delivered and the stream ends. Memory per stream is the
//!   buffer and one page of the log, whatever the consumer does.
//!
//! The decisions live in [`Cursor`] (no IO); `produce` only reads pages,
//! asks the core for the posts the events name, and sends.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use hearsay_crdt::event::Kind;
use hearsay_crdt::{Change, Delta, NodeId, Post, PostId, Profile, UserName, VersionVector};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::api::{ApiError, ApiState};
use crate::core::{ClientCommand, CoreError};
use crate::store::{PageLimit, Store, StoreResult};
use crate::tokens::parse_token;

/// Deltas read from the log per pass.
const PAGE_DELTAS: usize = 1024;
/// Bytes read from the log per pass.
const PAGE_BYTES: usize = 1 << 20;
/// What browsers wait before reconnecting a dropped stream.
const RETRY: Duration = Duration::from_millis(1000);
/// Longest `?author=` or `?kind=` accepted.
const MAX_FILTER_CHARS: usize = 256;

/// Bounds of one event stream.
#[derive(Clone, Copy, Debug)]
pub struct StreamConfig {
    /// Events buffered for a consumer.
    pub buffer: usize,
    /// How long the buffer may stay full before the consumer is cut off.
    pub stall: Duration,
    /// Interval of the keep-alive comments.
    pub keepalive: Duration,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            buffer: 512,
            stall: Duration::from_secs(5),
            keepalive: Duration::from_secs(15),
        }
    }
}

/// The part of the store a stream reads: the log.
pub trait DeltaLog: Send + Sync + 'static {
    /// Encoded deltas of `origin` above `after`, within `limit`, in seq order.
    fn deltas_after(
        &self,
        origin: &NodeId,
        after: u64,
        limit: PageLimit,
    ) -> StoreResult<Vec<Vec<u8>>>;
}

impl<S: Store> DeltaLog for S {
    fn deltas_after(
        &self,
        origin: &NodeId,
        after: u64,
        limit: PageLimit,
    ) -> StoreResult<Vec<Vec<u8>>> {
        Store::deltas_after(self, origin, after, limit)
    }
}

impl std::fmt::Debug for dyn DeltaLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeltaLog")
    }
}

// ---- the decisions ----------------------------------------------------------

/// Which changes a client asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub author: Option<UserName>,
    /// Empty: every kind.
    pub kinds: BTreeSet<Kind>,
}

impl Filter {
    fn wants_kind(&self, kind: Kind) -> bool {
        self.kinds.is_empty() || self.kinds.contains(&kind)
    }

    /// Whether a change by `author` passes.
    fn wants_author(&self, author: Option<&UserName>) -> bool {
        self.author.as_ref().is_none_or(|a| Some(a) == author)
    }
}

/// An origin on which the client's token is ahead of this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Ahead {
    pub origin: String,
    pub token_seq: u64,
    pub node_seq: u64,
}

/// Deltas the log lacks although the client needs them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Missing {
    pub origin: String,
    pub from: u64,
    pub to: u64,
}

/// What to do with the next delta read for a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this event (the position now covers the delta).
    Send(Change),
    /// Nothing to send (bookkeeping, or filtered out before any read); the
    /// position covers the delta.
    Skip,
    /// Already covered: ignore (the position did not move).
    Seen,
    /// The log skips seqs the client needs: say so and end.
    Gap(Missing),
}

/// A stream's position and the rules that move it.
#[derive(Clone, Debug)]
pub struct Cursor {
    position: VersionVector,
    filter: Filter,
}

impl Cursor {
    pub fn new(from: VersionVector, filter: Filter) -> Cursor {
        Cursor {
            position: from,
            filter,
        }
    }

    /// The token of everything this stream has passed.
    pub fn position(&self) -> &VersionVector {
        &self.position
    }

    /// The origins on which the position is ahead of `head`.
    pub fn ahead_of(&self, head: &VersionVector) -> Vec<Ahead> {
        self.position
            .iter()
            .filter(|(origin, seq)| head.get(origin) < **seq)
            .map(|(origin, seq)| Ahead {
                origin: origin.to_string(),
                token_seq: *seq,
                node_seq: head.get(origin),
            })
            .collect()
    }

    /// What the position lacks of `head`: per origin, the seqs to read.
    pub fn wanted(&self, head: &VersionVector) -> Vec<(NodeId, u64, u64)> {
        head.missing_from(&self.position)
            .into_iter()
            .map(|(origin, range)| (origin, *range.start(), *range.end()))
            .collect()
    }

    /// Takes the next delta read from the log for `origin`.
    pub fn step(&mut self, delta: &Delta) -> Step {
        let at = self.position.get(&delta.origin);
        if delta.seq <= at {
            return Step::Seen;
        }
        if delta.seq != at + 1 {
            return Step::Gap(Missing {
                origin: delta.origin.to_string(),
                from: at + 1,
                to: delta.seq - 1,
            });
        }
        self.position.set(delta.origin, delta.seq);
        match Change::of(delta) {
            Some(change) if self.filter.wants_kind(change.kind()) => {
                // A follow's or profile's author is known now; a post's
                // author is checked once the post is read.
                match change.user() {
                    Some(user) if !self.filter.wants_author(Some(user)) => Step::Skip,
                    _ => Step::Send(change),
                }
            }
            _ => Step::Skip,
        }
    }

    /// Whether a resolved post event passes the author filter.
    pub fn wants_post(&self, post: Option<&Post>) -> bool {
        self.filter.author.is_none() || self.filter.wants_author(post.map(|p| &p.author))
    }

    /// The gap when the log returned nothing for an origin the position
    /// lacks up to `to`.
    pub fn nothing_read(&self, origin: &NodeId, to: u64) -> Missing {
        Missing {
            origin: origin.to_string(),
            from: self.position.get(origin) + 1,
            to,
        }
    }
}

/// Steps `cursor` over one page: the changes to send, each with the
/// position after it, or the gap that stops the stream.
fn step_page(
    cursor: &mut Cursor,
    page: Page,
) -> Result<Vec<(Delta, Change, VersionVector)>, Missing> {
    if let Some((origin, to)) = page.empty.first() {
        return Err(cursor.nothing_read(origin, *to));
    }
    let mut out = Vec::with_capacity(page.deltas.len());
    for delta in page.deltas {
        match cursor.step(&delta) {
            Step::Gap(missing) => return Err(missing),
            Step::Send(change) => {
                let position = cursor.position().clone();
                out.push((delta, change, position));
            }
            Step::Skip | Step::Seen => {}
        }
    }
    Ok(out)
}

/// Why [`read_all`] stopped short.
#[derive(Debug)]
pub enum ReadError {
    /// The log lacks changes the cursor needs.
    Gap(Missing),
    Store(crate::store::StoreError),
}

/// Everything `cursor` lacks of `head`, read from `log` page by page: each
/// change to send, in order, with the position after it. Synchronous: for
/// tools and the simulation (the HTTP stream reads the same pages as the
/// consumer takes them).
pub fn read_all(
    log: &dyn DeltaLog,
    cursor: &mut Cursor,
    head: &VersionVector,
) -> Result<Vec<(Delta, Change, VersionVector)>, ReadError> {
    let mut out = Vec::new();
    loop {
        let wanted = cursor.wanted(head);
        if wanted.is_empty() {
            return Ok(out);
        }
        let page = read_page(log, wanted).map_err(ReadError::Store)?;
        out.extend(step_page(cursor, page).map_err(ReadError::Gap)?);
    }
}

// ---- the HTTP edge -------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub struct EventsQuery {
    from: Option<String>,
    author: Option<String>,
    kind: Option<String>,
}

/// Parses the resume point and filters of a request.
fn parse_request(
    headers: &HeaderMap,
    q: &EventsQuery,
) -> Result<(Option<VersionVector>, Filter), ApiError> {
    let from = match headers.get("last-event-id") {
        Some(raw) => {
            let raw = raw.to_str().map_err(|_| {
                ApiError::bad_request("Last-Event-Id is not a valid token: not ASCII")
            })?;
            Some(parse_token("Last-Event-Id", raw)?)
        }
        None => match q.from.as_deref() {
            None => None,
            Some("start") => Some(VersionVector::new()),
            Some(raw) => Some(parse_token("`from`", raw)?),
        },
    };
    let too_long = |field: &str, s: &str| {
        (s.chars().count() > MAX_FILTER_CHARS).then(|| {
            ApiError::bad_request(format!(
                "`{field}` is longer than {MAX_FILTER_CHARS} characters"
            ))
        })
    };
    let author = match q.author.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(a) => {
            if let Some(e) = too_long("author", a) {
                return Err(e);
            }
            Some(UserName::new(a).map_err(|e| ApiError::bad_request(format!("`author`: {e}")))?)
        }
    };
    let mut kinds = BTreeSet::new();
    if let Some(list) = q.kind.as_deref() {
        if let Some(e) = too_long("kind", list) {
            return Err(e);
        }
        for k in list.split(',').map(str::trim).filter(|k| !k.is_empty()) {
            kinds.insert(
                k.parse::<Kind>()
                    .map_err(|e| ApiError::bad_request(format!("`kind`: {e}")))?,
            );
        }
    }
    Ok((from, Filter { author, kinds }))
}

/// `GET /api/v0/events`.
pub async fn events(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    let (from, filter) = parse_request(&headers, &q)?;
    let config = state.events;
    // One slot stays free for the closing event (see `push`).
    let (tx, mut rx) = mpsc::channel::<Event>(config.buffer.max(1) + 1);
    tokio::spawn(produce(state, from, filter, tx));
    let first = futures::stream::once(async { Ok(Event::default().retry(RETRY)) });
    let rest = futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|e| e.map(Ok)));
    let stream: std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>> =
        Box::pin(futures::StreamExt::chain(first, rest));
    Ok(Sse::new(stream)
        .keep_alive(
            KeepAlive::new()
                .interval(config.keepalive)
                .text("keep-alive"),
        )
        .into_response())
}

/// Why a stream ended.
enum End {
    /// The consumer went away.
    Gone,
    /// The consumer did not keep up.
    Lagged,
    /// The node stopped, or cannot serve the stream.
    Stopped,
}

/// Sends `event` when the buffer has room for it and one more (the closing
/// event's slot), waiting at most `stall`.
async fn push(tx: &mpsc::Sender<Event>, event: Event, stall: Duration) -> Result<(), End> {
    match tokio::time::timeout(stall, tx.reserve_many(2)).await {
        Ok(Ok(mut permits)) => {
            if let Some(permit) = permits.next() {
                permit.send(event);
            }
            Ok(())
        }
        Ok(Err(_)) => Err(End::Gone),
        Err(_) => Err(End::Lagged),
    }
}

fn control(kind: &str, position: &VersionVector, data: Value) -> Event {
    let token = position.to_token();
    let mut data = data;
    data["token"] = json!(token);
    Event::default()
        .id(token)
        .event(kind)
        .data(data.to_string())
}

/// Counts the stream in the gauge while it lives.
struct Open(prometheus_client::metrics::gauge::Gauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Asks the core, waiting for room in its queue (a stream is no reason for
/// a 503).
async fn ask_core<T>(
    state: &ApiState,
    make: impl FnOnce(oneshot::Sender<Result<T, CoreError>>) -> ClientCommand,
) -> Result<T, End> {
    let (reply, rx) = oneshot::channel();
    state
        .core
        .send(make(reply))
        .await
        .map_err(|_| End::Stopped)?;
    rx.await
        .map_err(|_| End::Stopped)?
        .map_err(|_| End::Stopped)
}

/// One page of the log: what a cursor lacks of a head, decoded, per origin
/// in seq order, with the origins the log had nothing for.
#[derive(Debug)]
pub struct Page {
    pub deltas: Vec<Delta>,
    /// Origins (with the seq wanted up to) for which the log returned nothing.
    pub empty: Vec<(NodeId, u64)>,
}

/// Reads one bounded page of `wanted` ([`Cursor::wanted`]) from `log`.
pub fn read_page(log: &dyn DeltaLog, wanted: Vec<(NodeId, u64, u64)>) -> StoreResult<Page> {
    let mut page = Page {
        deltas: Vec::new(),
        empty: Vec::new(),
    };
    let mut bytes = 0;
    for (origin, from, to) in wanted {
        if page.deltas.len() >= PAGE_DELTAS || bytes >= PAGE_BYTES {
            break;
        }
        let limit = PageLimit {
            max_deltas: PAGE_DELTAS - page.deltas.len(),
            max_bytes: PAGE_BYTES - bytes,
            up_to: to,
        };
        let encoded = log.deltas_after(&origin, from - 1, limit)?;
        if encoded.is_empty() {
            page.empty.push((origin, to));
        }
        for e in encoded {
            bytes += e.len();
            // The log holds only deltas verified on arrival; one that does
            // not decode is a storage fault, reported as a gap below.
            if let Ok(d) = Delta::decode(&e) {
                page.deltas.push(d);
            }
        }
    }
    Ok(page)
}

/// The stream's task: replay what the token lacks, then follow the node.
async fn produce(
    state: ApiState,
    from: Option<VersionVector>,
    filter: Filter,
    tx: mpsc::Sender<Event>,
) {
    let metrics = state.metrics.clone();
    metrics.event_streams.inc();
    let _open = Open(metrics.event_streams.clone());
    let stall = state.events.stall;
    let mut status = state.core_status.clone();
    // The node is stopping once the network actor has gone (it drops its
    // status sender): end the stream then, or the open response would hold
    // the HTTP server's graceful shutdown, and the node, forever.
    let mut net = state.net_status.clone();
    let stopping = async move { while net.changed().await.is_ok() {} };
    tokio::pin!(stopping);
    let head = status.borrow_and_update().version_vector.clone();
    let live_only = from.is_none();
    let mut cursor = Cursor::new(from.unwrap_or_else(|| head.clone()), filter);
    // The position the consumer holds: the id of the last message enqueued.
    let mut delivered = cursor.position().clone();
    let end = async {
        let ahead = cursor.ahead_of(&head);
        if !ahead.is_empty() {
            let message = format!(
                "the token names changes of {} origin(s) this node does not hold yet; \
                 they follow once it does, everything else is sent now",
                ahead.len()
            );
            push(
                &tx,
                control(
                    "ahead",
                    cursor.position(),
                    json!({"ahead": ahead, "message": message}),
                ),
                stall,
            )
            .await?;
        }
        let mut ready = live_only;
        if ready {
            push(&tx, control("ready", cursor.position(), json!({})), stall).await?;
        }
        // The consumer holds the position of the last message enqueued.
        loop {
            let head = status.borrow_and_update().version_vector.clone();
            loop {
                let wanted = cursor.wanted(&head);
                if wanted.is_empty() {
                    break;
                }
                // Reading the log and classifying each delta (automerge
                // decoding) both run off the reactor; the cursor goes along.
                let log = state.log.clone();
                let mut moved = cursor.clone();
                let (moved, read) = tokio::task::spawn_blocking(move || {
                    let read = read_page(&*log, wanted).map(|page| step_page(&mut moved, page));
                    (moved, read)
                })
                .await
                .map_err(|_| End::Stopped)?;
                cursor = moved;
                let steps = match read.map_err(|_| End::Stopped)? {
                    Ok(steps) => steps,
                    Err(missing) => return Err(unavailable(&tx, &delivered, missing)),
                };
                let ids: Vec<PostId> = steps.iter().filter_map(|(_, c, _)| c.post()).collect();
                let mut posts = if ids.is_empty() {
                    Vec::new()
                } else {
                    ask_core(&state, |reply| ClientCommand::PostsById { ids, reply }).await?
                }
                .into_iter();
                for (delta, change, position) in steps {
                    let post = change.post().and_then(|_| posts.next().flatten());
                    if change.post().is_some() && !cursor.wants_post(post.as_ref()) {
                        continue;
                    }
                    let profile = match &change {
                        Change::Profile(user) => {
                            let user = user.clone();
                            Some(
                                ask_core(&state, |reply| ClientCommand::Profile { user, reply })
                                    .await?,
                            )
                        }
                        _ => None,
                    };
                    let event = change_event(&delta, &change, &position, post, profile);
                    push(&tx, event, stall).await?;
                    metrics.events_sent.inc();
                    delivered = position;
                }
            }
            if !ready {
                push(&tx, control("ready", cursor.position(), json!({})), stall).await?;
                ready = true;
            } else if &delivered != cursor.position() {
                push(
                    &tx,
                    Event::default().id(cursor.position().to_token()),
                    stall,
                )
                .await?;
            }
            delivered = cursor.position().clone();
            tokio::select! {
                changed = status.changed() => changed.map_err(|_| End::Stopped)?,
                () = tx.closed() => return Err(End::Gone),
                () = &mut stopping => return Err(End::Stopped),
            }
        }
    };
    let end: Result<(), End> = end.await;
    if let Err(End::Lagged) = end {
        metrics.event_streams_lagged.inc();
        let message = "the consumer fell behind its buffer; resume with `from` set to this token";
        // `push` kept this slot free.
        let _ = tx.try_send(control("lagged", &delivered, json!({"message": message})));
    }
}

/// Enqueues the `unavailable` event (into the slot `push` keeps free) and
/// ends the stream.
/// Its token is `delivered`, what the consumer holds: the cursor may have
/// passed deltas of the page that were never sent.
fn unavailable(tx: &mpsc::Sender<Event>, delivered: &VersionVector, missing: Missing) -> End {
    let message = format!(
        "this node does not hold changes {}..={} of origin {}, which the token lacks; \
         resume on another node",
        missing.from, missing.to, missing.origin
    );
    tracing::warn!(%message, "event stream cannot continue");
    let _ = tx.try_send(control(
        "unavailable",
        delivered,
        json!({"missing": [missing], "message": message}),
    ));
    End::Stopped
}

/// The SSE message of one change.
fn change_event(
    delta: &Delta,
    change: &Change,
    position: &VersionVector,
    post: Option<Post>,
    profile: Option<Profile>,
) -> Event {
    let mut data = json!({
        "kind": change.kind().as_str(),
        "origin": delta.origin.to_string(),
        "seq": delta.seq,
        "at_ms": delta.origin_time_ms,
        "doc": delta.doc.to_string(),
    });
    match change {
        Change::Post(_) | Change::Edit(_) | Change::Delete(_) => data["post"] = json!(post),
        Change::Follow { user, whom } | Change::Unfollow { user, whom } => {
            data["user"] = json!(user);
            data["whom"] = json!(whom);
        }
        Change::Profile(user) => {
            data["user"] = json!(user);
            data["profile"] = json!(profile);
        }
    }
    Event::default()
        .id(position.to_token())
        .event(change.kind().as_str())
        .data(data.to_string())
}

/// The shared pieces a stream needs, for [`ApiState`].
pub type Log = Arc<dyn DeltaLog>;

#[cfg(test)]
mod tests;

/// Fuzzing the resume point and filters of `GET /api/v0/events`
/// (`Last-Event-Id`, `?from=`, `?author=`, `?kind=`): never a panic, and a
/// refusal is a 400. Cases default to 64; run longer with
/// HEARSAY_FUZZ_CASES=100000
/// (`HEARSAY_FUZZ_CASES=100000 cargo test -p hearsay-node --lib events::fuzz`).
#[cfg(test)]
mod fuzz {
    use super::*;
    use axum::http::{HeaderValue, StatusCode};
    use proptest::prelude::*;
    use proptest::test_runner::Config;

    fn config() -> Config {
        crate::fuzz_config()
    }

    fn text() -> impl Strategy<Value = Option<String>> {
        let token: VersionVector = [(NodeId([3; 32]), 9)].into_iter().collect();
        proptest::option::of(prop_oneof![
            ".{0,80}",
            "[a-z0-9_,. -]{0,40}",
            Just("start".to_owned()),
            Just(token.to_token()),
            (0usize..4096).prop_map(|n| "k".repeat(n)),
        ])
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn any_request_parses_or_is_a_bad_request(
            header in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..120)),
            from in text(),
            author in text(),
            kind in text(),
        ) {
            let mut headers = HeaderMap::new();
            if let Some(value) = header.and_then(|h| HeaderValue::from_bytes(&h).ok()) {
                headers.insert("last-event-id", value);
            }
            let q = EventsQuery { from, author, kind };
            if let Err(e) = parse_request(&headers, &q) {
                prop_assert_eq!(e.into_response().status(), StatusCode::BAD_REQUEST);
            }
        }
    }
}
