//! The node's metrics: one documented struct, Prometheus names with the
//! `hearsay_` prefix, bounded label sets. libp2p's own metrics register into
//! the same registry (under `libp2p_`), so `/metrics` serves both.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use hearsay_crdt::ErrorKind;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// Where a rejected or accepted delta came from.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Source {
    Local,
    Gossip,
    Sync,
}

/// Why a client write was refused by the user-key rules (see
/// [`crate::signed`]): a fixed, small set.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub reason: Refusal,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    /// [`ErrorKind::as_str`]: a fixed, small set.
    pub kind: &'static str,
    pub source: Source,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The matched route template (never the raw path).
    pub route: &'static str,
    pub status: u16,
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
struct GeoLabels {
    region: String,
    lat: String,
    lon: String,
}

/// Every metric the node records.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub revision: Gauge,
    pub heartbeat_timestamp_seconds: Gauge<f64, AtomicU64>,
    pub connected_peers: Gauge,
    pub deltas_applied: Family<SourceLabels, Counter>,
    pub deltas_rejected: Family<RejectLabels, Counter>,
    pub deltas_duplicate: Counter,
    /// Deltas stored (accepted, in the version vector and the log) whose
    /// change automerge refused: counted apart, never blamed on the sender.
    pub deltas_inert: Counter,
    pub sync_rounds: Counter,
    pub sync_deltas_served: Counter,
    pub http_requests: Family<RouteLabels, Counter>,
    pub http_request_duration_seconds: Family<RouteOnly, Histogram>,
    pub replication_delay_seconds: Histogram,
    pub group_commit_size: Histogram,
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
    registry: Arc<std::sync::Mutex<Registry>>,
}

fn delay_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Metrics {
    pub fn new(region: &str, geo: Option<hearsay_topology::Geo>) -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            revision: Gauge::default(),
            heartbeat_timestamp_seconds: Gauge::default(),
            connected_peers: Gauge::default(),
            deltas_applied: Family::default(),
            deltas_rejected: Family::default(),
            deltas_duplicate: Counter::default(),
            deltas_inert: Counter::default(),
            sync_rounds: Counter::default(),
            sync_deltas_served: Counter::default(),
            http_requests: Family::default(),
            http_request_duration_seconds: Family::new_with_constructor(delay_histogram),
            replication_delay_seconds: delay_histogram(),
            group_commit_size: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            overload_rejections: Counter::default(),
            reads_behind: Counter::default(),
            event_streams: Gauge::default(),
            events_sent: Counter::default(),
            event_streams_lagged: Counter::default(),
            user_refusals: Family::default(),
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
            "connected_peers",
            "Peers with an open connection",
            m.connected_peers.clone(),
        );
        r.register(
            "deltas_applied",
            "Deltas accepted, by source",
            m.deltas_applied.clone(),
        );
        r.register(
            "deltas_rejected",
            "Deltas refused, by reason and source",
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
            "http_requests",
            "HTTP requests, by route and status",
            m.http_requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "HTTP request duration, by route",
            m.http_request_duration_seconds.clone(),
        );
        r.register(
            "replication_delay_seconds",
            "Origin write to local apply, for remote deltas",
            m.replication_delay_seconds.clone(),
        );
        r.register(
            "group_commit_size",
            "Writes made durable per flush",
            m.group_commit_size.clone(),
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
        let (lat, lon) = geo.map_or((String::new(), String::new()), |g| {
            (g.lat.to_string(), g.lon.to_string())
        });
        r.register(
            "geolocation",
            "Where this node runs",
            Info::new(GeoLabels {
                region: region.to_owned(),
                lat,
                lon,
            }),
        );
        *m.registry.lock().expect("fresh mutex") = registry;
        m
    }

    /// The registry, for libp2p's metrics to register into at start-up.
    pub fn with_registry<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> T {
        f(&mut self.registry.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String");
        out
    }

    /// Counts one refused delta.
    pub fn reject(&self, kind: ErrorKind, source: Source) {
        self.deltas_rejected
            .get_or_create(&RejectLabels {
                kind: kind.as_str(),
                source,
            })
            .inc();
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
                            kind: kind.as_str(),
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
