//! Node configuration: a TOML file, then `HEARSAY_*` environment variables,
//! then command-line flags, each overriding the one before; [`Config::validate`]
//! turns the raw values into [`Settings`] with errors that name the key.
//!
//! Every key is one row of [`KEYS`]: its name in `hearsay.toml`, the kind of
//! value it takes and its help text. The environment variable
//! (`HEARSAY_<NAME>`, [`Key::env_var`]) and the flag (`--<name-with-dashes>`,
//! [`Key::flag`]) are derived from the name, and both go through one parser,
//! [`Config::set`], so a bad `HEARSAY_TARGET_PEERS` is refused naming the
//! key, exactly like a bad file value. [`Config::set`] writes the field
//! through serde (the struct serialised, the one value replaced, the struct
//! read back), so adding a key is a field of [`Config`] plus a row of
//! [`KEYS`]; the unit tests check that the two agree.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hearsay_topology::Geo;
use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// File name of the config inside the data directory.
pub const CONFIG_FILE: &str = "hearsay.toml";
/// This node's certificate in the data directory, when the `certificate`
/// key does not name another file.
pub const CERTIFICATE_FILE: &str = "node.cert";

/// Prefix of the environment variable of every key.
pub const ENV_PREFIX: &str = "HEARSAY_";

/// Largest `client_queue`: a queue deeper than this only turns overload
/// into latency (and memory) instead of a prompt 503 SLOWDOWN.
pub const MAX_CLIENT_QUEUE: usize = 1 << 16;

/// A configuration error, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config key `{key}`: {why}")]
    Invalid { key: &'static str, why: String },
    #[error("no config key `{0}`")]
    UnknownKey(String),
    #[error("config file {path}: {why}")]
    File { path: String, why: String },
}

fn invalid(key: &'static str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        why: why.into(),
    }
}

/// The kind of value a key takes, which says how a raw string (an
/// environment variable or a flag) becomes that value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A string, taken as is.
    Text,
    /// A string, or unset when empty.
    OptionalText,
    /// A non-negative whole number.
    Number,
    /// A whole number, maybe negative.
    Signed,
    /// A list of strings: comma-separated, blanks dropped; a flag may also
    /// be repeated.
    List,
}

impl Kind {
    /// The JSON form of `raw`, which serde then reads into the field.
    fn parse(self, raw: &str) -> Result<Value, String> {
        Ok(match self {
            Kind::Text => Value::from(raw),
            Kind::OptionalText if raw.trim().is_empty() => Value::Null,
            Kind::OptionalText => Value::from(raw),
            Kind::Number => Value::from(
                raw.trim()
                    .parse::<u64>()
                    .map_err(|_| format!("{raw:?} is not a whole number"))?,
            ),
            Kind::Signed => Value::from(
                raw.trim()
                    .parse::<i64>()
                    .map_err(|_| format!("{raw:?} is not a whole number"))?,
            ),
            Kind::List => Value::from(
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>(),
            ),
        })
    }
}

/// One configuration key: a field of [`Config`].
#[derive(Debug)]
pub struct Key {
    /// The field's name, as written in `hearsay.toml`.
    pub name: &'static str,
    pub kind: Kind,
    /// Placeholder for the value in `--help`.
    pub value_name: &'static str,
    pub help: &'static str,
    /// A valid value other than the default (shown in `--help`, used by tests).
    pub example: &'static str,
}

/// Every configuration key. The TOML defaults are [`Config::default`]; the
/// environment variables and flags are derived from these rows.
pub const KEYS: &[Key] = &[
    Key {
        name: "listen",
        kind: Kind::List,
        value_name: "MULTIADDR",
        help: "libp2p listen addresses (TCP and QUIC); port 0 picks a free port",
        example: "/ip4/0.0.0.0/tcp/4101,/ip4/0.0.0.0/udp/4101/quic-v1",
    },
    Key {
        name: "http",
        kind: Kind::Text,
        value_name: "HOST:PORT",
        help: "HTTP API address; port 0 picks a free port",
        example: "127.0.0.1:8081",
    },
    Key {
        name: "region",
        kind: Kind::Text,
        value_name: "NAME",
        help: "Region name reported to peers and routers",
        example: "eu-west",
    },
    Key {
        name: "geo",
        kind: Kind::OptionalText,
        value_name: "LAT,LON",
        help: "Location of this node in degrees, for the router's distance term",
        example: "53.35,-6.26",
    },
    Key {
        name: "public_url",
        kind: Kind::OptionalText,
        value_name: "URL",
        help: "Base URL of the HTTP API as clients reach it, announced in statuses [default: http://<http>]",
        example: "https://eu.example.net",
    },
    Key {
        name: "join",
        kind: Kind::List,
        value_name: "MULTIADDR",
        help: "Peers to join, multiaddrs ending in /p2p/<peer id>, redialled with backoff",
        example: "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN",
    },
    Key {
        name: "sync_interval_ms",
        kind: Kind::Number,
        value_name: "MS",
        help: "Anti-entropy period in milliseconds",
        example: "500",
    },
    Key {
        name: "target_peers",
        kind: Kind::Number,
        value_name: "N",
        help: "Peers to dial through kad discovery; 0 turns discovery off (a static mesh of join links)",
        example: "0",
    },
    Key {
        name: "max_connections",
        kind: Kind::Number,
        value_name: "N",
        help: "Hard cap on established connections",
        example: "64",
    },
    Key {
        name: "cache_docs",
        kind: Kind::Number,
        value_name: "N",
        help: "Documents kept in memory; the rest stay in sled",
        example: "1024",
    },
    Key {
        name: "checkpoint_interval_ms",
        kind: Kind::Number,
        value_name: "MS",
        help: "Document snapshot (checkpoint) period in milliseconds",
        example: "5000",
    },
    Key {
        name: "events_buffer",
        kind: Kind::Number,
        value_name: "N",
        help: "Events buffered per event-stream consumer",
        example: "64",
    },
    Key {
        name: "events_stall_ms",
        kind: Kind::Number,
        value_name: "MS",
        help: "How long a consumer's full buffer is tolerated before it is cut off (with its token)",
        example: "1000",
    },
    Key {
        name: "events_keepalive_ms",
        kind: Kind::Number,
        value_name: "MS",
        help: "Interval of the event stream's keep-alive comments",
        example: "5000",
    },
    Key {
        name: "client_queue",
        kind: Kind::Number,
        value_name: "N",
        help: "Client requests (HTTP) queued for the core at most; beyond it the API answers 503 SLOWDOWN",
        example: "64",
    },
    Key {
        name: "degree",
        kind: Kind::Number,
        value_name: "N",
        help: "Mesh links kept up from the nodes known by their statuses (redialled when a neighbour fails, plus links around nodes whose loss would split the mesh); 0 turns this off",
        example: "2",
    },
    Key {
        name: "suspect_after_ms",
        kind: Kind::Number,
        value_name: "MS",
        help: "A node whose status is older than this is suspect (left out of routing)",
        example: "2000",
    },
    Key {
        name: "down_after_ms",
        kind: Kind::Number,
        value_name: "MS",
        help: "A node whose status is older than this is down (replaced as a neighbour)",
        example: "4000",
    },
    Key {
        name: "registry_voters",
        kind: Kind::List,
        value_name: "PEER_ID",
        help: "Peer ids of the name registry's voters (3 or 5; 1 without fault tolerance), the same on every node; unset: no registry, user names are first come",
        example: "12D3KooWDXHDvqXHxeowhK3QjWVuoeFy43nHYr2o3c3hg23JX8zS,12D3KooWRoYRz16JfZGMTH5K9WzeaWVbDHk5RT1nxmSPo5zVyxpE,12D3KooWN758JcpVNmU5H3EBGY6wRdHx9bJ7qactjQbGCKBCT25E",
    },
    Key {
        name: "operator",
        kind: Kind::OptionalText,
        value_name: "OPERATOR_ID",
        help: "The mesh operator's public key (`hearsay operator init` prints it); set: only nodes with a certificate it signed are peers; unset: an open mesh",
        example: "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29",
    },
    Key {
        name: "certificate",
        kind: Kind::OptionalText,
        value_name: "FILE",
        help: "File holding this node's certificate (`hearsay operator admit`); unset: node.cert in the data directory, if it exists",
        example: "/etc/hearsay/node.cert",
    },
    Key {
        name: "registry_heartbeat_ms",
        kind: Kind::Number,
        value_name: "MS",
        help: "How often the registry's leader reaches its followers",
        example: "100",
    },
    Key {
        name: "registry_election_ms",
        kind: Kind::Number,
        value_name: "MS",
        help: "Silence from the leader after which a registry voter stands for election (a random time from this to 1.5 times this, after the leader's lease of 1.5 times this)",
        example: "3000",
    },
    Key {
        name: "clock_offset_ms",
        kind: Kind::Signed,
        value_name: "MS",
        help: "Shifts this node's wall clock by MS (for testing clock-offset correction)",
        example: "3000",
    },
];

impl Key {
    /// The key named `name`.
    pub fn find(name: &str) -> Result<&'static Key, ConfigError> {
        KEYS.iter()
            .find(|k| k.name == name)
            .ok_or_else(|| ConfigError::UnknownKey(name.to_owned()))
    }

    /// `HEARSAY_<NAME>`, e.g. `HEARSAY_TARGET_PEERS`.
    pub fn env_var(&self) -> String {
        format!("{ENV_PREFIX}{}", self.name.to_ascii_uppercase())
    }

    /// The long flag without its dashes, e.g. `target-peers`.
    pub fn flag(&self) -> String {
        self.name.replace('_', "-")
    }
}

/// Raw configuration as written in `hearsay.toml`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// libp2p listen addresses (TCP and QUIC); port 0 picks a free port.
    pub listen: Vec<String>,
    /// HTTP API address.
    pub http: String,
    /// Region name reported to routers and peers.
    pub region: String,
    /// `LAT,LON` of this node, for the router's distance term.
    pub geo: Option<String>,
    /// Peers to join (full multiaddrs ending in `/p2p/<peer id>`), redialled with backoff.
    pub join: Vec<String>,
    /// Anti-entropy period in milliseconds (a round also runs at once when a gap is seen).
    pub sync_interval_ms: u64,
    /// Peers this node dials through kad discovery while it has fewer (kad's
    /// own queries may connect more). 0 turns discovery off: the node then
    /// only dials its join peers and accepts who dials it (a static mesh).
    pub target_peers: usize,
    /// Hard cap on established connections.
    pub max_connections: u32,
    /// Documents kept in memory; the rest stay in sled.
    pub cache_docs: usize,
    /// Checkpoint (document snapshot) period in milliseconds.
    pub checkpoint_interval_ms: u64,
    /// Events buffered per event-stream consumer.
    pub events_buffer: usize,
    /// How long a consumer's full buffer is tolerated before it is cut off.
    pub events_stall_ms: u64,
    /// Interval of the event stream's keep-alive comments.
    pub events_keepalive_ms: u64,
    /// Capacity of the client queue (HTTP requests waiting for the core).
    /// When it is full the API answers 503 SLOWDOWN at once rather than
    /// letting latency grow without bound; peers have their own queue.
    pub client_queue: usize,
    /// Base URL of the HTTP API as clients reach it (statuses announce it
    /// to routers); unset: `http://<http>`.
    pub public_url: Option<String>,
    /// Target degree: mesh links kept up from the peer table.
    pub degree: usize,
    /// Status age after which a node is suspect.
    pub suspect_after_ms: u64,
    /// Status age after which a node is down.
    pub down_after_ms: u64,
    /// Shift of this node's wall clock, ms (testing).
    pub clock_offset_ms: i64,
    /// Peer ids of the name registry's voters.
    pub registry_voters: Vec<String>,
    /// The registry leader's heartbeat period.
    pub registry_heartbeat_ms: u64,
    /// The operator's public key (hex); `None`: an open mesh.
    pub operator: Option<String>,
    /// Path of this node's certificate file.
    pub certificate: Option<String>,
    /// The registry's least election timeout (the most is twice this).
    pub registry_election_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![
                "/ip4/0.0.0.0/tcp/4001".into(),
                "/ip4/0.0.0.0/udp/4001/quic-v1".into(),
            ],
            http: "127.0.0.1:8080".into(),
            region: "local".into(),
            geo: None,
            join: Vec::new(),
            sync_interval_ms: 2_000,
            target_peers: 8,
            max_connections: 128,
            cache_docs: 4096,
            checkpoint_interval_ms: 10_000,
            events_buffer: 512,
            events_stall_ms: 5_000,
            events_keepalive_ms: 15_000,
            client_queue: crate::core::CLIENT_QUEUE,
            public_url: None,
            degree: 3,
            suspect_after_ms: 3_000,
            down_after_ms: 6_000,
            clock_offset_ms: 0,
            registry_voters: Vec::new(),
            registry_heartbeat_ms: 250,
            registry_election_ms: 1_000,
            operator: None,
            certificate: None,
        }
    }
}

/// Validated settings the node runs with.
#[derive(Clone, Debug)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub listen: Vec<Multiaddr>,
    pub http: SocketAddr,
    pub region: String,
    pub geo: Option<Geo>,
    pub join: Vec<Multiaddr>,
    pub sync_interval: Duration,
    pub target_peers: usize,
    pub max_connections: u32,
    pub cache_docs: usize,
    pub checkpoint_interval: Duration,
    pub events: crate::events::StreamConfig,
    pub client_queue: usize,
    pub public_url: Option<String>,
    /// The topology machine's rules (degree, failure detector).
    pub topology: hearsay_topology::Config,
    pub clock_offset_ms: i64,
    /// The name registry's voters (empty: none configured here).
    pub registry_voters: Vec<String>,
    pub registry: hearsay_registry::RegistryConfig,
    /// The operator whose certificates admit peers; `None`: an open mesh.
    pub operator: Option<hearsay_admission::OperatorId>,
    /// The file of this node's certificate, read and checked at start
    /// ([`Settings::load_certificate`]).
    pub certificate: Option<PathBuf>,
}

impl Settings {
    /// Reads this node's certificate and checks it against the operator;
    /// a mesh with an operator needs one.
    pub fn load_certificate(&self) -> Result<Option<hearsay_admission::Certificate>, ConfigError> {
        let Some(path) = &self.certificate else {
            return match self.operator {
                Some(_) => Err(invalid(
                    "certificate",
                    format!(
                        "the mesh has an operator but this node has no certificate (write it to {CERTIFICATE_FILE} in the data directory, or set the key): `hearsay operator admit <peer id>` makes one"
                    ),
                )),
                None => Ok(None),
            };
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| invalid("certificate", format!("reading {}: {e}", path.display())))?;
        let cert = hearsay_admission::Certificate::from_text(&text)
            .map_err(|e| invalid("certificate", format!("{}: {e}", path.display())))?;
        if let Some(op) = &self.operator {
            cert.verify(op)
                .map_err(|e| invalid("certificate", format!("{}: {e}", path.display())))?;
        }
        Ok(Some(cert))
    }
}

fn multiaddrs(key: &'static str, list: &[String]) -> Result<Vec<Multiaddr>, ConfigError> {
    list.iter()
        .map(|s| {
            s.parse::<Multiaddr>()
                .map_err(|e| invalid(key, format!("{s:?} is not a multiaddr: {e}")))
        })
        .collect()
}

impl Config {
    /// Reads `DIR/hearsay.toml`, or the defaults when it does not exist.
    pub fn load(data_dir: &Path) -> Result<Self, ConfigError> {
        let path = data_dir.join(CONFIG_FILE);
        let err = |why: String| ConfigError::File {
            path: path.display().to_string(),
            why,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| err(e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// Writes the config as `DIR/hearsay.toml`.
    pub fn save(&self, data_dir: &Path) -> Result<(), ConfigError> {
        let path = data_dir.join(CONFIG_FILE);
        let text = toml::to_string_pretty(self).expect("config serialises");
        std::fs::write(&path, text).map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            why: e.to_string(),
        })
    }

    /// Sets `key` from its string form (an environment variable's value or
    /// a flag's argument), refusing a value the field cannot hold with an
    /// error naming the key. Range checks are [`Config::validate`]'s.
    pub fn set(&mut self, key: &str, raw: &str) -> Result<(), ConfigError> {
        let key = Key::find(key)?;
        let value = key.kind.parse(raw).map_err(|why| invalid(key.name, why))?;
        let mut fields = serde_json::to_value(&*self).expect("config serialises");
        fields[key.name] = value;
        *self = serde_json::from_value(fields)
            .map_err(|e| invalid(key.name, format!("{raw:?}: {e}")))?;
        Ok(())
    }

    /// The string form of `key`'s value, as [`Config::set`] reads it.
    pub fn get(&self, key: &str) -> Result<String, ConfigError> {
        let key = Key::find(key)?;
        let fields = serde_json::to_value(self).expect("config serialises");
        Ok(match &fields[key.name] {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            Value::Array(items) => items
                .iter()
                .map(|i| i.as_str().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string(),
        })
    }

    /// Applies the environment variable of every key that is set
    /// ([`Key::env_var`]); a bad value is an error naming the key.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        for key in KEYS {
            let var = key.env_var();
            if let Some(raw) = env(&var) {
                self.set(key.name, &raw).map_err(|e| match e {
                    ConfigError::Invalid { key, why } => invalid(key, format!("{var}: {why}")),
                    other => other,
                })?;
            }
        }
        Ok(())
    }

    pub fn validate(&self, data_dir: &Path) -> Result<Settings, ConfigError> {
        let listen = multiaddrs("listen", &self.listen)?;
        if listen.is_empty() {
            return Err(invalid("listen", "needs at least one address"));
        }
        let join = multiaddrs("join", &self.join)?;
        for (addr, raw) in join.iter().zip(&self.join) {
            if !matches!(
                addr.iter().last(),
                Some(libp2p::multiaddr::Protocol::P2p(_))
            ) {
                return Err(invalid(
                    "join",
                    format!("{raw:?} must end in /p2p/<peer id>"),
                ));
            }
        }
        let http = self
            .http
            .parse()
            .map_err(|e| invalid("http", format!("{:?} is not HOST:PORT: {e}", self.http)))?;
        let region = self.region.trim();
        if region.is_empty() || region.len() > 64 || !region.bytes().all(|c| c.is_ascii_graphic()) {
            return Err(invalid(
                "region",
                "must be 1 to 64 printable characters without spaces",
            ));
        }
        let geo = self
            .geo
            .as_deref()
            .map(Geo::parse)
            .transpose()
            .map_err(|e| invalid("geo", e))?;
        if self.sync_interval_ms < 50 {
            return Err(invalid("sync_interval_ms", "must be at least 50"));
        }
        if self.checkpoint_interval_ms < 100 {
            return Err(invalid("checkpoint_interval_ms", "must be at least 100"));
        }
        if self.max_connections < 2 {
            return Err(invalid("max_connections", "must be at least 2"));
        }
        if self.cache_docs < 16 {
            return Err(invalid("cache_docs", "must be at least 16"));
        }
        if !(1..=65_536).contains(&self.events_buffer) {
            return Err(invalid("events_buffer", "must be from 1 to 65536"));
        }
        if self.events_stall_ms < 10 {
            return Err(invalid("events_stall_ms", "must be at least 10"));
        }
        if self.events_keepalive_ms < 100 {
            return Err(invalid("events_keepalive_ms", "must be at least 100"));
        }
        if !(1..=MAX_CLIENT_QUEUE).contains(&self.client_queue) {
            return Err(invalid(
                "client_queue",
                format!("must be from 1 to {MAX_CLIENT_QUEUE}"),
            ));
        }
        if let Some(url) = &self.public_url
            && !((url.starts_with("http://") || url.starts_with("https://"))
                && url.len() <= 200
                && url.bytes().all(|c| c.is_ascii_graphic()))
        {
            return Err(invalid(
                "public_url",
                "must be an http:// or https:// URL of at most 200 characters",
            ));
        }
        let topology = hearsay_topology::Config {
            degree: self.degree,
            timeouts: hearsay_topology::Timeouts {
                suspect_after_ms: self.suspect_after_ms,
                down_after_ms: self.down_after_ms,
                ..hearsay_topology::Timeouts::default()
            },
            // Degree 0 turns the machine's dialling off altogether.
            max_bridge_links: if self.degree == 0 {
                0
            } else {
                hearsay_topology::Config::default().max_bridge_links
            },
            ..hearsay_topology::Config::default()
        };
        topology.validate().map_err(|e| {
            let key = if e.contains("suspect_after_ms") && !e.contains("down_after_ms") {
                "suspect_after_ms"
            } else {
                "down_after_ms"
            };
            invalid(key, e)
        })?;
        if self.degree > 32 {
            return Err(invalid("degree", "must be at most 32"));
        }
        if self.clock_offset_ms.unsigned_abs() > 24 * 3_600_000 {
            return Err(invalid("clock_offset_ms", "must be within a day"));
        }
        for voter in &self.registry_voters {
            if voter.parse::<libp2p::PeerId>().is_err() {
                return Err(invalid(
                    "registry_voters",
                    format!("{voter:?} is not a peer id"),
                ));
            }
        }
        if !matches!(self.registry_voters.len(), 0 | 1 | 3 | 5) {
            return Err(invalid(
                "registry_voters",
                "a registry has 3 or 5 voters (or 1, without fault tolerance)",
            ));
        }
        if !(10..=10_000).contains(&self.registry_heartbeat_ms) {
            return Err(invalid("registry_heartbeat_ms", "must be from 10 to 10000"));
        }
        if self.registry_election_ms < 3 * self.registry_heartbeat_ms
            || self.registry_election_ms > 60_000
        {
            return Err(invalid(
                "registry_election_ms",
                "must be at least three heartbeats (registry_heartbeat_ms) and at most 60000",
            ));
        }
        let operator =
            match self.operator.as_deref().filter(|s| !s.is_empty()) {
                None => None,
                Some(s) => Some(s.trim().parse::<hearsay_admission::OperatorId>().map_err(
                    |e| {
                        invalid(
                            "operator",
                            format!("{s:?} is not an operator id (64 hex digits): {e}"),
                        )
                    },
                )?),
            };
        let certificate = match self.certificate.as_deref().filter(|s| !s.is_empty()) {
            Some(p) => Some(PathBuf::from(p)),
            None => Some(data_dir.join(CERTIFICATE_FILE)).filter(|p| p.exists()),
        };
        let election = Duration::from_millis(self.registry_election_ms);
        let registry = hearsay_registry::RegistryConfig {
            heartbeat_interval: Duration::from_millis(self.registry_heartbeat_ms),
            election_timeout_min: election,
            election_timeout_max: election * 3 / 2,
            // A follower stands for election only after the leader's lease
            // (the longest election timeout) and its own random timeout: a
            // dead leader is replaced in 2.5 to 3 s by default. A claim's
            // deadline leaves room for that and a retry at the new leader.
            client_timeout: (8 * election).max(Duration::from_secs(8)),
            attempt_timeout: (2 * election).max(Duration::from_secs(2)),
            ..hearsay_registry::RegistryConfig::default()
        };
        Ok(Settings {
            data_dir: data_dir.to_path_buf(),
            listen,
            http,
            region: region.to_owned(),
            geo,
            join,
            sync_interval: Duration::from_millis(self.sync_interval_ms),
            target_peers: self.target_peers,
            max_connections: self.max_connections,
            cache_docs: self.cache_docs,
            checkpoint_interval: Duration::from_millis(self.checkpoint_interval_ms),
            events: crate::events::StreamConfig {
                buffer: self.events_buffer,
                stall: Duration::from_millis(self.events_stall_ms),
                keepalive: Duration::from_millis(self.events_keepalive_ms),
            },
            client_queue: self.client_queue,
            public_url: self.public_url.clone(),
            topology,
            clock_offset_ms: self.clock_offset_ms,
            registry_voters: self.registry_voters.clone(),
            registry,
            operator,
            certificate,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::default();
        c.validate(dir.path()).unwrap();
        c.save(dir.path()).unwrap();
        assert_eq!(Config::load(dir.path()).unwrap(), c);
    }

    #[test]
    fn errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        type Breaker = Box<dyn Fn(&mut Config)>;
        let cases: Vec<(&str, Breaker)> = vec![
            ("listen", Box::new(|c| c.listen = vec!["nope".into()])),
            ("http", Box::new(|c| c.http = "localhost".into())),
            ("region", Box::new(|c| c.region = "a b".into())),
            ("geo", Box::new(|c| c.geo = Some("100,0".into()))),
            (
                "join",
                Box::new(|c| c.join = vec!["/ip4/127.0.0.1/tcp/1".into()]),
            ),
            ("sync_interval_ms", Box::new(|c| c.sync_interval_ms = 0)),
            ("client_queue", Box::new(|c| c.client_queue = 0)),
            (
                "client_queue",
                Box::new(|c| c.client_queue = MAX_CLIENT_QUEUE + 1),
            ),
        ];
        for (key, break_it) in cases {
            let mut c = Config::default();
            break_it(&mut c);
            let e = c.validate(dir.path()).unwrap_err().to_string();
            assert!(e.contains(&format!("`{key}`")), "{key}: {e}");
        }
    }

    #[test]
    fn env_overrides_file() {
        let mut c = Config::default();
        c.apply_env(|k| match k {
            "HEARSAY_REGION" => Some("eu-west".into()),
            "HEARSAY_JOIN" => Some(
                "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN, "
                    .into(),
            ),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.region, "eu-west");
        assert_eq!(c.join.len(), 1);
        c.validate(Path::new("/tmp")).unwrap();
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), "regoin = 'x'\n").unwrap();
        let e = Config::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("regoin"), "{e}");
    }

    #[test]
    fn the_table_and_the_struct_agree() {
        let fields = serde_json::to_value(Config::default()).unwrap();
        let fields: Vec<&str> = fields
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut names: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
        names.sort_unstable();
        assert_eq!(names, fields, "KEYS and the fields of Config");
    }

    #[test]
    fn every_key_round_trips_through_set() {
        let dir = tempfile::tempdir().unwrap();
        for key in KEYS {
            let mut c = Config::default();
            assert_ne!(c.get(key.name).unwrap(), key.example, "{}", key.name);
            c.set(key.name, key.example).unwrap();
            assert_eq!(c.get(key.name).unwrap(), key.example, "{}", key.name);
            c.validate(dir.path())
                .unwrap_or_else(|e| panic!("example of {}: {e}", key.name));
            let again = c.clone();
            c.set(key.name, &again.get(key.name).unwrap()).unwrap();
            assert_eq!(c, again, "{}", key.name);
        }
    }

    #[test]
    fn every_key_has_an_environment_variable() {
        let mut c = Config::default();
        c.apply_env(|var| {
            KEYS.iter()
                .find(|k| k.env_var() == var)
                .map(|k| k.example.to_owned())
        })
        .unwrap();
        for key in KEYS {
            assert_eq!(c.get(key.name).unwrap(), key.example, "{}", key.env_var());
        }
        assert_eq!(
            Key::find("target_peers").unwrap().env_var(),
            "HEARSAY_TARGET_PEERS"
        );
        assert_eq!(
            Key::find("sync_interval_ms").unwrap().flag(),
            "sync-interval-ms"
        );
    }

    #[test]
    fn a_bad_environment_value_names_the_key() {
        for (var, raw, key) in [
            ("HEARSAY_TARGET_PEERS", "many", "target_peers"),
            ("HEARSAY_MAX_CONNECTIONS", "-1", "max_connections"),
            ("HEARSAY_MAX_CONNECTIONS", "5000000000", "max_connections"),
            ("HEARSAY_SYNC_INTERVAL_MS", "2s", "sync_interval_ms"),
        ] {
            let mut c = Config::default();
            let e = c
                .apply_env(|v| (v == var).then(|| raw.to_owned()))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("`{key}`")) && e.contains(var),
                "{var}: {e}"
            );
            assert_eq!(
                c,
                Config::default(),
                "{var}: a refused value changes nothing"
            );
        }
    }

    #[test]
    fn lists_and_optional_values_from_strings() {
        let mut c = Config::default();
        c.set(
            "listen",
            " /ip4/127.0.0.1/tcp/0 , ,/ip4/127.0.0.1/udp/0/quic-v1",
        )
        .unwrap();
        assert_eq!(
            c.listen,
            ["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"]
        );
        c.set("geo", "1,2").unwrap();
        assert_eq!(c.geo.as_deref(), Some("1,2"));
        c.set("geo", "").unwrap();
        assert_eq!(c.geo, None);
        assert!(matches!(
            c.set("regoin", "x"),
            Err(ConfigError::UnknownKey(k)) if k == "regoin"
        ));
    }

    #[test]
    fn the_readme_lists_every_key() {
        let readme = include_str!("../../README.md");
        for key in KEYS {
            let row = format!("`{}` | `--{}` |", key.env_var(), key.flag());
            assert!(
                readme.contains(&format!("| `{}`", key.name)) && readme.contains(&row),
                "README.md's key table lacks {row}"
            );
        }
    }
}
