//! The node's metrics: one documented struct, Prometheus names with the
//! `hearsay_` prefix, bounded label sets. libp2p's own metrics register into
//! the same registry (under `libp2p_`), so `/metrics` serves both.
//!
//! Names as exposed (counters get `_total` from prometheus-client):
//! `hearsay_revision`, `hearsay_heartbeat_timestamp_seconds`,
//! `hearsay_http_request_duration_seconds{route}` (its `_sum / _count` is the
//! mean response time), `hearsay_requests_total{route,status}`,
//! `hearsay_errors_total{kind}`, `hearsay_geo_info{region,lat,lon}`,
//! `hearsay_replication_delay_seconds{origin_region}`,
//! `hearsay_peers_connected`, `hearsay_deltas_applied_total{source}`,
//! `hearsay_deltas_rejected_total{reason,source}`,
//! `hearsay_sync_rounds_total`, `hearsay_lag_deltas{origin_region}`, and the
//! smaller operational ones below.
//!
//! Every label value comes from a fixed set: enums written in lowercase
//! snake case, route templates (never raw paths), status codes the API
//! emits, [`ErrorKind::as_str`] names, and the origin region: the region
//! an origin announces in its signed status, normalised by
//! [`region_label`] (lowercase, at most [`MAX_REGION_LABELS`] distinct
//! values per process, then `other`), or [`UNKNOWN_REGION`] for an origin
//! whose status has not arrived.
//!
//! The name registry adds `hearsay_registry_term`,
//! `hearsay_registry_applied_index`, `hearsay_registry_leader`,
//! `hearsay_registry_names`, `hearsay_registry_claims{outcome}` and
//! `hearsay_registry_bad_messages`, refreshed at each scrape.
//!
//! Status gossip adds `hearsay_statuses_received_total`,
//! `hearsay_statuses_rejected_total{reason}` (malformed, forged,
//! unknown_key), `hearsay_nodes{state}` (alive, suspect, down) and
//! `hearsay_replication_delay_unmeasured_total` (deltas applied before their
//! origin's clock offset was known, left out of the delay histogram).
//!
//! Admission and hostile peers add `hearsay_equivocations_total` and
//! `hearsay_equivocators` (origins proven to sign two deltas with one seq),
//! `hearsay_peer_disconnects_total{reason}` (links this node closed, by the
//! admission machine's reason), `hearsay_peer_messages_dropped_total{reason}`
//! (peer messages dropped unread: not admitted, over a rate), and
//! `hearsay_origins_refused_total{reason}` (deltas whose origin is not
//! admitted, revoked or equivocated), plus `hearsay_admitted_peers`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use hearsay_crdt::{ErrorKind, VersionVector};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// Where a rejected or accepted delta came from.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Source {
    Local,
    Gossip,
    Sync,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Local => "local",
            Source::Gossip => "gossip",
            Source::Sync => "sync",
        }
    }
}

/// Writes a label value that is already a lowercase `&'static str`.
fn encode_str(s: &str, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
    std::fmt::Write::write_str(encoder, s)
}

impl EncodeLabelValue for Source {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encode_str(self.as_str(), encoder)
    }
}

/// Why a client write was refused by the user-key rules (see
/// [`crate::signed`]): a fixed, small set.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Refusal {
    /// A user's signature that does not verify (a forgery, or a changed
    /// request).
    BadSignature,
    /// A valid signature by a key that is not the one registered for the
    /// name, or not the post's author key.
    WrongKey,
    /// No signature where the name (or the post) has a key.
    Unsigned,
    /// A signature for a name that has no registered key to check it with.
    Unregistered,
    /// A client time (post id, `at_ms`) outside the clock window.
    Clock,
    /// A signed request already used, or a client-made post id that exists.
    Replay,
    /// A name registered with another key.
    NameTaken,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::BadSignature => "bad_signature",
            Refusal::WrongKey => "wrong_key",
            Refusal::Unsigned => "unsigned",
            Refusal::Unregistered => "unregistered",
            Refusal::Clock => "clock",
            Refusal::Replay => "replay",
            Refusal::NameTaken => "name_taken",
        }
    }
}

impl EncodeLabelValue for Refusal {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encode_str(self.as_str(), encoder)
    }
}

/// What `hearsay_errors_total` counts, by `kind`: a fixed, small set.
/// The HTTP kinds together, over `hearsay_requests_total`, are the node's
/// error rate as a client sees it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ErrorClass {
    /// An HTTP answer 4xx: the request was wrong (malformed, unknown
    /// route, refused signature, ...).
    ClientError,
    /// An HTTP answer 5xx other than an overload (store failed, shutting
    /// down, ...).
    ServerError,
    /// An HTTP 503 with `Retry-After`: the node refused work to stay
    /// responsive.
    Overload,
    /// A delta from a peer (gossip or sync) refused; the reasons are in
    /// `hearsay_deltas_rejected_total{reason}`.
    PeerInput,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 4] = [
        ErrorClass::ClientError,
        ErrorClass::ServerError,
        ErrorClass::Overload,
        ErrorClass::PeerInput,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::ClientError => "client_error",
            ErrorClass::ServerError => "server_error",
            ErrorClass::Overload => "overload",
            ErrorClass::PeerInput => "peer_input",
        }
    }
}

impl EncodeLabelValue for ErrorClass {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encode_str(self.as_str(), encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: ErrorClass,
}

/// The `origin_region` label value of an origin whose status has not
/// arrived (a delta names its origin node, not its region).
pub const UNKNOWN_REGION: &str = "unknown";
/// The label value for regions beyond [`MAX_REGION_LABELS`].
pub const OTHER_REGION: &str = "other";
/// Most distinct `origin_region` values a process uses.
pub const MAX_REGION_LABELS: usize = 64;

/// The `origin_region` label value of a region as a status announces it:
/// lowercased, characters other than `a-z0-9_-` replaced by `_`, at most 32
/// characters; the first [`MAX_REGION_LABELS`] distinct values are kept
/// for the life of the process (peers cannot grow the label set), later
/// ones become [`OTHER_REGION`].
pub fn region_label(region: &str) -> &'static str {
    static LABELS: OnceLock<Mutex<BTreeSet<&'static str>>> = OnceLock::new();
    let clean: String = region
        .chars()
        .take(32)
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_' | '-') => c,
            _ => '_',
        })
        .collect();
    if clean.is_empty() {
        return UNKNOWN_REGION;
    }
    let mut labels = LABELS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(l) = labels.get(clean.as_str()) {
        return l;
    }
    if labels.len() >= MAX_REGION_LABELS {
        return OTHER_REGION;
    }
    let leaked: &'static str = Box::leak(clean.into_boxed_str());
    labels.insert(leaked);
    leaked
}

/// Running totals of the HTTP API, from which the status reports the mean
/// response time and error rate of the last few seconds.
#[derive(Debug, Default)]
pub struct ResponseTotals {
    count: AtomicU64,
    micros: AtomicU64,
    /// Server-side failures: 5xx, overload.
    failures: AtomicU64,
}

/// A reading of [`ResponseTotals`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResponseReading {
    pub count: u64,
    pub micros: u64,
    pub failures: u64,
}

impl ResponseTotals {
    pub fn record(&self, micros: u64, failed: bool) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.micros.fetch_add(micros, Ordering::Relaxed);
        if failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn read(&self) -> ResponseReading {
        ResponseReading {
            count: self.count.load(Ordering::Relaxed),
            micros: self.micros.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
        }
    }
}

impl ResponseReading {
    /// Mean response time (ms) and failure share between `earlier` and
    /// `self`; (0, 0) when no request was answered in between.
    pub fn since(&self, earlier: &ResponseReading) -> (f64, f64) {
        let n = self.count.saturating_sub(earlier.count);
        if n == 0 {
            return (0.0, 0.0);
        }
        let micros = self.micros.saturating_sub(earlier.micros);
        let failures = self.failures.saturating_sub(earlier.failures).min(n);
        (
            micros as f64 / n as f64 / 1000.0,
            failures as f64 / n as f64,
        )
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OriginLabels {
    /// [`region_label`] of the origin node's region, or [`UNKNOWN_REGION`].
    pub origin_region: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub reason: Refusal,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    /// [`ErrorKind::as_str`]: a fixed, small set.
    pub reason: &'static str,
    pub source: Source,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The matched route template (never the raw path).
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: Source,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteOnly {
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: Stage,
}

/// A step on a write's path through a node, timed by
/// [`Metrics::stage_seconds`]: what `hearsay bench replication` breaks a
/// hop's delay into.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Stage {
    /// A local write in the core: the CRDT change and the delta's signature.
    Write,
    /// A batch of remote deltas in the core: verify, order, apply.
    Receive,
    /// Appending a batch's deltas to the log and flushing it.
    Commit,
    /// Handing a durable batch's deltas to gossip: encoding, gossipsub's
    /// signature, sending to the mesh peers.
    Publish,
    /// Gossiped deltas from being handed to the core to the core's verdict
    /// (waiting in its queue included): what a relay waits before
    /// forwarding.
    Deliver,
    /// One read in the core.
    Read,
}

impl Stage {
    pub const ALL: [Stage; 6] = [
        Stage::Write,
        Stage::Receive,
        Stage::Commit,
        Stage::Publish,
        Stage::Deliver,
        Stage::Read,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Write => "write",
            Stage::Receive => "receive",
            Stage::Commit => "commit",
            Stage::Publish => "publish",
            Stage::Deliver => "deliver",
            Stage::Read => "read",
        }
    }
}

impl EncodeLabelValue for Stage {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        encode_str(self.as_str(), encoder)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GeoLabels {
    region: String,
    lat: String,
    lon: String,
}

/// Every metric the node records.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// Deltas held: the sum of the durable version vector.
    pub revision: Gauge,
    /// Unix time (seconds) of the node's last heartbeat: set every second
    /// by the node's tick and on each scrape, so `time() - heartbeat` is how
    /// long ago the node was last alive.
    pub heartbeat_timestamp_seconds: Gauge<f64, AtomicU64>,
    /// Peers with an open connection.
    pub peers_connected: Gauge,
    /// The name registry, as of the last scrape: its Raft term, the log
    /// index applied here, 1 when this node leads, names held, and the
    /// answers this node gave since it started by outcome (claimed, taken,
    /// unknown, unavailable) and bad registry messages from peers.
    pub registry_term: Gauge,
    pub registry_applied_index: Gauge,
    pub registry_leader: Gauge,
    pub registry_names: Gauge,
    pub registry_claims: Family<OutcomeLabels, Gauge>,
    pub registry_bad_messages: Gauge,
    pub deltas_applied: Family<SourceLabels, Counter>,
    pub deltas_rejected: Family<RejectLabels, Counter>,
    pub deltas_duplicate: Counter,
    /// Deltas stored (accepted, in the version vector and the log) whose
    /// change automerge refused: counted apart, never blamed on the sender.
    pub deltas_inert: Counter,
    pub sync_rounds: Counter,
    pub sync_deltas_served: Counter,
    /// HTTP requests answered, by route template and status.
    pub requests: Family<RouteLabels, Counter>,
    /// HTTP errors and refused peer input, by [`ErrorClass`].
    pub errors: Family<ErrorLabels, Counter>,
    pub http_request_duration_seconds: Family<RouteOnly, Histogram>,
    /// Origin write to local apply, for remote deltas, by the origin's
    /// region ([`UNKNOWN_REGION`] until statuses exist).
    pub replication_delay_seconds: Family<OriginLabels, Histogram>,
    /// Deltas known to exist but not yet held, by the origin's region.
    /// Known: the per-origin maximum of the version vectors peers sent in
    /// their sync requests (see `net.rs`); held: the durable version
    /// vector. The gauge is `Σ max(0, known[o] - held[o])`.
    pub lag_deltas: Family<OriginLabels, Gauge>,
    pub group_commit_size: Histogram,
    /// Time spent in each [`Stage`] of the write path.
    pub stage_seconds: Family<StageLabels, Histogram>,
    pub overload_rejections: Counter,
    /// Reads with `?after=` refused with 409 (the node had not caught up).
    pub reads_behind: Counter,
    /// Event streams open now.
    pub event_streams: Gauge,
    /// Change events sent on event streams.
    pub events_sent: Counter,
    /// Event streams cut because their consumer fell behind.
    pub event_streams_lagged: Counter,
    /// Client writes refused by the user-key rules, by reason.
    pub user_refusals: Family<RefusalLabels, Counter>,
    /// Verified statuses taken in.
    pub statuses_received: Counter,
    /// Statuses refused, by [`crate::status::Rejection::reason`].
    pub statuses_rejected: Family<ReasonLabels, Counter>,
    /// Nodes in the peer table, by failure-detector state.
    pub nodes: Family<StateLabels, Gauge>,
    /// Remote deltas applied while their origin's clock offset was unknown
    /// (no status from it yet): left out of the delay histogram.
    pub replication_delay_unmeasured: Counter,
    /// Equivocations detected or learnt (new origins only).
    pub equivocations: Counter,
    /// Origins refused for equivocating.
    pub equivocators: Gauge,
    /// Links closed by admission and peer bounds, by reason.
    pub peer_disconnects: Family<ReasonLabels, Counter>,
    /// Peer messages dropped before decoding, by reason.
    pub peer_messages_dropped: Family<ReasonLabels, Counter>,
    /// Deltas refused for their origin (not admitted, revoked, expired), by
    /// reason.
    pub origins_refused: Family<ReasonLabels, Counter>,
    /// Connected peers admitted now.
    pub admitted_peers: Gauge,
    /// Totals behind the status's mean response time and error rate.
    pub responses: Arc<ResponseTotals>,
    registry: Arc<std::sync::Mutex<Registry>>,
}

/// [`lacking`] per origin region: `region` names each origin's label.
pub fn lacking_by_region(
    known: &VersionVector,
    held: &VersionVector,
    region: impl Fn(&hearsay_crdt::NodeId) -> &'static str,
) -> std::collections::BTreeMap<&'static str, u64> {
    let mut out = std::collections::BTreeMap::new();
    for (origin, seqs) in known.missing_from(held) {
        *out.entry(region(&origin)).or_default() += seqs.end() - seqs.start() + 1;
    }
    out
}

/// Deltas `known` names that `held` lacks: `Σ max(0, known[o] - held[o])`
/// over origins `o`. The value of `hearsay_lag_deltas`.
pub fn lacking(known: &VersionVector, held: &VersionVector) -> u64 {
    known
        .missing_from(held)
        .iter()
        .map(|(_, seqs)| seqs.end() - seqs.start() + 1)
        .sum()
}

fn delay_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// 4 µs to about 4 s.
fn stage_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_004, 2.0, 20))
}

impl Metrics {
    /// Records `since.elapsed()` as time spent in `stage`.
    pub fn timed(&self, stage: Stage, since: std::time::Instant) {
        self.stage_seconds
            .get_or_create(&StageLabels { stage })
            .observe(since.elapsed().as_secs_f64());
    }

    pub fn new(region: &str, geo: Option<hearsay_topology::Geo>) -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            revision: Gauge::default(),
            heartbeat_timestamp_seconds: Gauge::default(),
            peers_connected: Gauge::default(),
            registry_term: Gauge::default(),
            registry_applied_index: Gauge::default(),
            registry_leader: Gauge::default(),
            registry_names: Gauge::default(),
            registry_claims: Family::default(),
            registry_bad_messages: Gauge::default(),
            deltas_applied: Family::default(),
            deltas_rejected: Family::default(),
            deltas_duplicate: Counter::default(),
            deltas_inert: Counter::default(),
            sync_rounds: Counter::default(),
            sync_deltas_served: Counter::default(),
            requests: Family::default(),
            errors: Family::default(),
            http_request_duration_seconds: Family::new_with_constructor(delay_histogram),
            replication_delay_seconds: Family::new_with_constructor(delay_histogram),
            lag_deltas: Family::default(),
            group_commit_size: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            stage_seconds: Family::new_with_constructor(stage_histogram),
            overload_rejections: Counter::default(),
            reads_behind: Counter::default(),
            event_streams: Gauge::default(),
            events_sent: Counter::default(),
            event_streams_lagged: Counter::default(),
            user_refusals: Family::default(),
            statuses_received: Counter::default(),
            statuses_rejected: Family::default(),
            nodes: Family::default(),
            replication_delay_unmeasured: Counter::default(),
            equivocations: Counter::default(),
            equivocators: Gauge::default(),
            peer_disconnects: Family::default(),
            peer_messages_dropped: Family::default(),
            origins_refused: Family::default(),
            admitted_peers: Gauge::default(),
            responses: Arc::default(),
            registry: Arc::default(),
        };
        let r = registry.sub_registry_with_prefix("hearsay");
        r.register(
            "revision",
            "Deltas known (version vector sum)",
            m.revision.clone(),
        );
        r.register(
            "heartbeat_timestamp_seconds",
            "Unix time of the node's last heartbeat",
            m.heartbeat_timestamp_seconds.clone(),
        );
        r.register(
            "peers_connected",
            "Peers with an open connection",
            m.peers_connected.clone(),
        );
        r.register(
            "registry_term",
            "The name registry's Raft term",
            m.registry_term.clone(),
        );
        r.register(
            "registry_applied_index",
            "The name registry's log index applied on this node",
            m.registry_applied_index.clone(),
        );
        r.register(
            "registry_leader",
            "1 when this node leads the name registry",
            m.registry_leader.clone(),
        );
        r.register(
            "registry_names",
            "Names held in the registry, as applied on this node",
            m.registry_names.clone(),
        );
        r.register(
            "registry_claims",
            "Claims this node answered since it started, by outcome",
            m.registry_claims.clone(),
        );
        r.register(
            "registry_bad_messages",
            "Malformed or invalid registry messages from peers since the node started",
            m.registry_bad_messages.clone(),
        );
        r.register(
            "deltas_applied",
            "Deltas accepted, by source",
            m.deltas_applied.clone(),
        );
        r.register(
            "deltas_rejected",
            "Deltas refused, by reason (error kind) and source",
            m.deltas_rejected.clone(),
        );
        r.register(
            "deltas_duplicate",
            "Deltas received that were already held",
            m.deltas_duplicate.clone(),
        );
        r.register(
            "deltas_inert",
            "Deltas stored whose change automerge refused",
            m.deltas_inert.clone(),
        );
        r.register(
            "sync_rounds",
            "Anti-entropy requests sent",
            m.sync_rounds.clone(),
        );
        r.register(
            "sync_deltas_served",
            "Deltas sent in anti-entropy responses",
            m.sync_deltas_served.clone(),
        );
        r.register(
            "requests",
            "HTTP requests, by route template and status",
            m.requests.clone(),
        );
        r.register(
            "errors",
            "HTTP errors (client_error, server_error, overload) and refused peer deltas (peer_input), by kind",
            m.errors.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "HTTP request duration, by route",
            m.http_request_duration_seconds.clone(),
        );
        r.register(
            "replication_delay_seconds",
            "Origin write to local apply, for remote deltas, corrected by the clock offset to the origin, by origin region",
            m.replication_delay_seconds.clone(),
        );
        r.register(
            "lag_deltas",
            "Deltas known to exist (from peers' version vectors) but not yet held, by origin region",
            m.lag_deltas.clone(),
        );
        r.register(
            "group_commit_size",
            "Writes made durable per flush",
            m.group_commit_size.clone(),
        );
        r.register(
            "stage_seconds",
            "Time spent in each step of the write path: write, receive, commit, publish, deliver, read",
            m.stage_seconds.clone(),
        );
        r.register(
            "overload_rejections",
            "Requests refused with 503",
            m.overload_rejections.clone(),
        );
        r.register(
            "reads_behind",
            "Reads with ?after= refused with 409: the node had not caught up with the token",
            m.reads_behind.clone(),
        );
        r.register(
            "event_streams",
            "Event streams open",
            m.event_streams.clone(),
        );
        r.register(
            "events_sent",
            "Change events sent on event streams",
            m.events_sent.clone(),
        );
        r.register(
            "event_streams_lagged",
            "Event streams cut because their consumer fell behind",
            m.event_streams_lagged.clone(),
        );
        r.register(
            "user_refusals",
            "Client writes refused by the user-key rules (signatures, keys, clock window, replays, names), by reason",
            m.user_refusals.clone(),
        );
        r.register(
            "statuses_received",
            "Signed statuses verified and taken in",
            m.statuses_received.clone(),
        );
        r.register(
            "statuses_rejected",
            "Statuses refused, by reason (malformed, forged, unknown_key)",
            m.statuses_rejected.clone(),
        );
        r.register(
            "nodes",
            "Nodes known from statuses, by state (alive, suspect, down)",
            m.nodes.clone(),
        );
        r.register(
            "replication_delay_unmeasured",
            "Remote deltas applied before their origin's clock offset was known (not in the delay histogram)",
            m.replication_delay_unmeasured.clone(),
        );
        r.register(
            "equivocations",
            "Origins newly proven to sign two different deltas with one seq",
            m.equivocations.clone(),
        );
        r.register(
            "equivocators",
            "Origins refused for equivocating",
            m.equivocators.clone(),
        );
        r.register(
            "peer_disconnects",
            "Links closed by admission or a peer bound, by reason",
            m.peer_disconnects.clone(),
        );
        r.register(
            "peer_messages_dropped",
            "Peer messages dropped unread (not admitted, over a rate), by reason",
            m.peer_messages_dropped.clone(),
        );
        r.register(
            "origins_refused",
            "Deltas refused for their origin (not admitted, revoked, expired, equivocated), by reason",
            m.origins_refused.clone(),
        );
        r.register(
            "admitted_peers",
            "Connected peers that passed admission",
            m.admitted_peers.clone(),
        );
        let (lat, lon) = geo.map_or((String::new(), String::new()), |g| {
            (g.lat.to_string(), g.lon.to_string())
        });
        r.register(
            "geo",
            "Where this node runs (value 1)",
            Info::new(GeoLabels {
                region: region.to_owned(),
                lat,
                lon,
            }),
        );
        // Every series of a fixed label set exists from the start (at 0), so
        // rates and dashboards see them before the first event.
        for kind in ErrorClass::ALL {
            drop(m.errors.get_or_create(&ErrorLabels { kind }));
        }
        drop(m.replication_delay_seconds.get_or_create(&OriginLabels {
            origin_region: UNKNOWN_REGION,
        }));
        for source in [Source::Local, Source::Gossip, Source::Sync] {
            drop(m.deltas_applied.get_or_create(&SourceLabels { source }));
            for kind in ErrorKind::ALL {
                drop(m.deltas_rejected.get_or_create(&RejectLabels {
                    reason: kind.as_str(),
                    source,
                }));
            }
        }
        m.lag(UNKNOWN_REGION, 0);
        for reason in hearsay_admission::Reason::ALL {
            let reason = reason.as_str();
            drop(m.peer_disconnects.get_or_create(&ReasonLabels { reason }));
            drop(
                m.peer_messages_dropped
                    .get_or_create(&ReasonLabels { reason }),
            );
            drop(m.origins_refused.get_or_create(&ReasonLabels { reason }));
        }
        for reason in ["malformed", "forged", "unknown_key", "not_admitted"] {
            drop(m.statuses_rejected.get_or_create(&ReasonLabels { reason }));
        }
        for state in ["alive", "suspect", "down"] {
            drop(m.nodes.get_or_create(&StateLabels { state }));
        }
        m.heartbeat();
        *m.registry.lock().expect("fresh mutex") = registry;
        m
    }

    /// The registry, for libp2p's metrics to register into at start-up.
    pub fn with_registry<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> T {
        f(&mut self.registry.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// OpenMetrics text exposition. Sets the heartbeat to now first.
    pub fn encode(&self) -> String {
        self.heartbeat();
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String");
        out
    }

    /// Copies the registry's state into its gauges (at each scrape).
    pub fn observe_registry(&self, status: &hearsay_registry::RegistryStatus) {
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.registry_term.set(int(status.term));
        self.registry_applied_index
            .set(int(status.applied_index.unwrap_or(0)));
        self.registry_leader
            .set(i64::from(status.state == "Leader"));
        self.registry_names.set(int(status.names as u64));
        let c = &status.counters;
        for (outcome, value) in [
            ("claimed", c.claimed),
            ("taken", c.taken),
            ("unknown", c.unknown),
            ("unavailable", c.unavailable),
        ] {
            self.registry_claims
                .get_or_create(&OutcomeLabels { outcome })
                .set(int(value));
        }
        self.registry_bad_messages.set(int(c.bad_messages));
    }

    /// Sets the heartbeat to the current Unix time.
    pub fn heartbeat(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.heartbeat_timestamp_seconds.set(now.as_secs_f64());
    }

    /// Counts one refused delta; one from a peer also counts as a
    /// `peer_input` error (a local one is answered with an HTTP error,
    /// counted there).
    pub fn reject(&self, kind: ErrorKind, source: Source) {
        self.deltas_rejected
            .get_or_create(&RejectLabels {
                reason: kind.as_str(),
                source,
            })
            .inc();
        if source != Source::Local {
            self.error(ErrorClass::PeerInput);
        }
    }

    /// Counts one error of class `kind`.
    pub fn error(&self, kind: ErrorClass) {
        self.errors.get_or_create(&ErrorLabels { kind }).inc();
    }

    /// Records one replication delay (seconds) of a delta from an origin
    /// whose region is `origin_region`.
    pub fn replication_delay(&self, origin_region: &'static str, seconds: f64) {
        self.replication_delay_seconds
            .get_or_create(&OriginLabels { origin_region })
            .observe(seconds);
    }

    /// Sets the lag (deltas known but not held) of origins in
    /// `origin_region`.
    pub fn lag(&self, origin_region: &'static str, deltas: u64) {
        self.lag_deltas
            .get_or_create(&OriginLabels { origin_region })
            .set(i64::try_from(deltas).unwrap_or(i64::MAX));
    }

    /// Counts one client write refused by the user-key rules.
    pub fn refuse(&self, reason: Refusal) {
        self.user_refusals
            .get_or_create(&RefusalLabels { reason })
            .inc();
    }

    /// Rejections by reason label, summed over sources (for `/stats`).
    pub fn rejections(&self) -> std::collections::BTreeMap<&'static str, u64> {
        let mut out = std::collections::BTreeMap::new();
        for kind in ErrorKind::ALL {
            let n: u64 = [Source::Local, Source::Gossip, Source::Sync]
                .into_iter()
                .map(|source| {
                    self.deltas_rejected
                        .get_or_create(&RejectLabels {
                            reason: kind.as_str(),
                            source,
                        })
                        .get()
                })
                .sum();
            if n > 0 {
                out.insert(kind.as_str(), n);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearsay_crdt::NodeId;

    #[test]
    fn lag_counts_what_is_known_and_not_held() {
        let (a, b, c) = (NodeId([1; 32]), NodeId([2; 32]), NodeId([3; 32]));
        let known: VersionVector = [(a, 5), (b, 2), (c, 7)].into_iter().collect();
        let held: VersionVector = [(a, 3), (b, 4)].into_iter().collect();
        // a: 4..=5, b: none (held is ahead), c: 1..=7.
        assert_eq!(lacking(&known, &held), 2 + 7);
        assert_eq!(lacking(&held, &held), 0);
        assert_eq!(lacking(&VersionVector::default(), &held), 0);
    }

    #[test]
    fn exposition_has_the_names_and_lowercase_label_values() {
        let m = Metrics::new("eu-west", None);
        m.reject(ErrorKind::Malformed, Source::Gossip);
        m.reject(ErrorKind::Malformed, Source::Local);
        m.refuse(Refusal::NameTaken);
        m.error(ErrorClass::Overload);
        let text = m.encode();
        for needle in [
            "hearsay_revision 0",
            "hearsay_heartbeat_timestamp_seconds ",
            "hearsay_peers_connected 0",
            "hearsay_sync_rounds_total 0",
            "hearsay_deltas_applied_total{source=\"gossip\"} 0",
            // Only the peer's delta is a peer_input error; the local one is
            // counted as the HTTP error it is answered with.
            "hearsay_errors_total{kind=\"peer_input\"} 1",
            "hearsay_errors_total{kind=\"overload\"} 1",
            "hearsay_errors_total{kind=\"client_error\"} 0",
            "hearsay_user_refusals_total{reason=\"name_taken\"} 1",
            "hearsay_deltas_rejected_total{reason=\"malformed\",source=\"gossip\"} 1",
            "hearsay_deltas_rejected_total{reason=\"malformed\",source=\"local\"} 1",
            "hearsay_replication_delay_seconds_count{origin_region=\"unknown\"} 0",
            "hearsay_lag_deltas{origin_region=\"unknown\"} 0",
            "hearsay_geo_info{region=\"eu-west\",lat=\"\",lon=\"\"} 1",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
    }
}

#[cfg(test)]
mod region_tests {
    use super::*;

    #[test]
    fn region_labels_are_normalised_and_bounded() {
        assert_eq!(region_label("EU West"), "eu_west");
        assert_eq!(region_label("us-east-1"), "us-east-1");
        assert_eq!(region_label(""), UNKNOWN_REGION);
        let long = "x".repeat(100);
        assert_eq!(region_label(&long).len(), 32);
        for i in 0..2 * MAX_REGION_LABELS {
            region_label(&format!("flood{i}"));
        }
        assert_eq!(region_label("a-region-never-seen"), OTHER_REGION);
        // Regions interned before the flood keep their label.
        assert_eq!(region_label("EU West"), "eu_west");
    }

    #[test]
    fn response_readings_give_the_window_mean_and_failure_share() {
        let totals = ResponseTotals::default();
        let start = totals.read();
        totals.record(1_000, false);
        totals.record(3_000, true);
        let (mean_ms, rate) = totals.read().since(&start);
        assert_eq!((mean_ms, rate), (2.0, 0.5));
        assert_eq!(totals.read().since(&totals.read()), (0.0, 0.0));
    }
}
