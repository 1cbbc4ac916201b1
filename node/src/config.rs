//! Node configuration: a TOML file, then `HEARSAY_*` environment variables,
//! then command-line flags, each overriding the one before; [`Config::validate`]
//! turns the raw values into [`Settings`] with errors that name the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hearsay_topology::Geo;
use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

/// File name of the config inside the data directory.
pub const CONFIG_FILE: &str = "hearsay.toml";

/// A configuration error, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config key `{key}`: {why}")]
    Invalid { key: &'static str, why: String },
    #[error("config file {path}: {why}")]
    File { path: String, why: String },
}

fn invalid(key: &'static str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        why: why.into(),
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

    /// Applies `HEARSAY_LISTEN`, `HEARSAY_HTTP`, `HEARSAY_REGION`,
    /// `HEARSAY_GEO`, `HEARSAY_JOIN` (lists comma-separated) and
    /// `HEARSAY_TARGET_PEERS`.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) {
        let list = |s: String| {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        };
        if let Some(v) = env("HEARSAY_LISTEN") {
            self.listen = list(v);
        }
        if let Some(v) = env("HEARSAY_HTTP") {
            self.http = v;
        }
        if let Some(v) = env("HEARSAY_REGION") {
            self.region = v;
        }
        if let Some(v) = env("HEARSAY_GEO") {
            self.geo = Some(v);
        }
        if let Some(v) = env("HEARSAY_JOIN") {
            self.join = list(v);
        }
        if let Some(v) = env("HEARSAY_TARGET_PEERS").and_then(|v| v.parse().ok()) {
            self.target_peers = v;
        }
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
        });
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
}
