//! Wiring: key, store, core thread, network actor and HTTP server, and their
//! orderly shutdown.
//!
//! Shutdown order: stop the HTTP server (no new writes) and the network, then
//! drop the last sender of both core queues so the core drains them, checkpoints the
//! documents and flushes, and only then return.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearsay_crdt::Keypair;
use tokio::sync::{mpsc, watch};

use crate::api::{self, ApiState, NodeInfo};
use crate::config::Settings;
use crate::core::{ClientCommand, CoreConfig, CoreError, CoreState, PEER_QUEUE, Queues, run_core};
use crate::metrics::Metrics;
use crate::names::MeshRegistry;
use crate::net::{self, Announce, NetParts};
use crate::registry::RaftNames;
use crate::store::SledStore;

/// File name of the node key inside the data directory.
pub const KEY_FILE: &str = "node.key";
/// File the node writes once listening: peer id, addresses, HTTP address.
pub const ANNOUNCE_FILE: &str = "node.json";
const CORE_EVENTS: usize = 1024;
const TICK: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("data directory {path}: {why}")]
    DataDir { path: String, why: String },
    #[error(transparent)]
    Key(#[from] hearsay_crdt::Error),
    #[error("opening the store: {0}")]
    Store(#[from] CoreError),
    #[error(transparent)]
    Net(#[from] net::NetError),
    #[error("name registry: {0}")]
    Registry(String),
    #[error("admission: {0}")]
    Admission(String),
    #[error("the core thread failed (see the log above)")]
    CoreFailed,
    #[error("HTTP on {addr}: {why}")]
    Http { addr: String, why: String },
}

/// Creates the data directory and the node key if needed; returns the key.
pub fn init(data_dir: &Path) -> Result<Keypair, NodeError> {
    std::fs::create_dir_all(data_dir).map_err(|e| NodeError::DataDir {
        path: data_dir.display().to_string(),
        why: e.to_string(),
    })?;
    Ok(Keypair::load_or_generate(&data_dir.join(KEY_FILE))?)
}

/// The libp2p identity of a node key (the same ed25519 key).
pub fn libp2p_identity(key: &Keypair) -> libp2p::identity::Keypair {
    libp2p::identity::Keypair::ed25519_from_bytes(key.secret()).expect("32-byte ed25519 secret")
}

/// Runs a node until `shutdown` completes.
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
    let key = init(&settings.data_dir)?;
    let identity = libp2p_identity(&key);
    let peer_id = identity.public().to_peer_id();
    let announce_path = settings.data_dir.join(ANNOUNCE_FILE);
    let _ = std::fs::remove_file(&announce_path);
    tracing::info!(%peer_id, region = %settings.region, data_dir = %settings.data_dir.display(), "starting");

    let metrics = Metrics::new(&settings.region, settings.geo);
    let offset = settings.clock_offset_ms;
    let clock = move || crate::core::now_ms().saturating_add_signed(offset);
    let origins = crate::status::Origins::default();
    let core = {
        let (dir, metrics) = (settings.data_dir.join("db"), metrics.clone());
        let config = CoreConfig {
            cache_docs: settings.cache_docs,
            checkpoint_interval_ms: settings.checkpoint_interval.as_millis() as u64,
            checkpoint_deltas: crate::core::CHECKPOINT_DELTAS,
        };
        let origins = origins.clone();
        tokio::task::spawn_blocking(move || {
            let store = SledStore::open(&dir).map_err(CoreError::from)?;
            let mut core = CoreState::open(store, key, config, metrics, clock())?;
            core.set_origins(origins);
            Ok::<_, CoreError>(core)
        })
        .await
        .expect("store open task")?
    };
    let store = core.store().clone();
    let proofs = core.proofs();
    let key_id = core.id();
    let log: crate::events::Log = Arc::new(store.clone());
    let (client_tx, client_rx) = mpsc::channel(settings.client_queue);
    let (peer_tx, peer_rx) = mpsc::channel(PEER_QUEUE);
    let (event_tx, event_rx) = mpsc::channel(CORE_EVENTS);
    let (core_status_tx, core_status) = watch::channel(core.status());
    let queues = Queues {
        clients: client_rx,
        peers: peer_rx,
    };
    let core_thread = std::thread::Builder::new()
        .name("hearsay-core".into())
        .spawn(move || run_core(core, queues, event_tx, core_status_tx, clock))
        .expect("spawn core thread");

    let listener = tokio::net::TcpListener::bind(settings.http)
        .await
        .map_err(|e| NodeError::Http {
            addr: settings.http.to_string(),
            why: e.to_string(),
        })?;
    let http_addr = listener.local_addr().map_err(|e| NodeError::Http {
        addr: settings.http.to_string(),
        why: e.to_string(),
    })?;
    tracing::info!(http = %http_addr, "HTTP API listening");

    let (stop_tx, stop_rx) = watch::channel(false);
    let (net_status_tx, net_status) = watch::channel(net::NetStatus::default());
    let (registry_out_tx, registry_out_rx) = mpsc::channel(crate::registry::REGISTRY_QUEUE);
    let (registry_in_tx, registry_in_rx) = mpsc::channel(crate::registry::REGISTRY_QUEUE);
    let certificate = settings
        .load_certificate()
        .map_err(|e| NodeError::Admission(e.to_string()))?;
    if let Some(cert) = &certificate
        && cert.node != key_id
    {
        return Err(NodeError::Admission(format!(
            "the certificate admits node {} but this node's key is {key_id}",
            cert.node
        )));
    }
    let (admin_tx, admin_rx) = mpsc::channel(16);
    let swarm = net::build_swarm(
        identity.clone(),
        settings.max_connections,
        settings.target_peers > 0,
    )?;
    let net_task = tokio::spawn(net::run(
        NetParts {
            swarm,
            join: settings.join.clone(),
            listen: settings.listen.clone(),
            sync: hearsay_sync::Config {
                sync_interval_ms: settings.sync_interval.as_millis() as u64,
                target_peers: settings.target_peers,
                ..hearsay_sync::Config::default()
            },
            core: peer_tx,
            core_events: event_rx,
            core_status: core_status.clone(),
            store,
            metrics: metrics.clone(),
            status: net_status_tx,
            announce: Announce {
                path: announce_path.clone(),
                http: http_addr.to_string(),
                region: settings.region.clone(),
                public_url: settings
                    .public_url
                    .clone()
                    .unwrap_or_else(|| format!("http://{http_addr}")),
                geo: settings.geo,
                clock_offset_ms: settings.clock_offset_ms,
            },
            identity,
            topology: settings.topology.clone(),
            origins,
            registry: Some(net::RegistryPort {
                outbound: registry_out_rx,
                inbound: registry_in_tx,
            }),
            admission: net::AdmissionParts {
                config: hearsay_admission::Config {
                    operator: settings.operator,
                    ..hearsay_admission::Config::default()
                },
                certificate,
                proofs,
                admin: admin_rx,
            },
        },
        stop_rx.clone(),
    ));

    let ticker = {
        let (core, metrics, mut stop) = (client_tx.clone(), metrics.clone(), stop_rx.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            loop {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    _ = tick.tick() => {
                        metrics.heartbeat();
                        let _ = core.try_send(ClientCommand::Tick);
                    }
                }
            }
        })
    };

    // The name registry: its own database, its own protocol on the swarm.
    let registry = hearsay_registry::Registry::open(
        &settings.data_dir.join("registry"),
        peer_id.to_string(),
        settings.registry_voters.clone(),
        Arc::new(crate::registry::Link::new(
            registry_out_tx,
            net_status.clone(),
        )),
        settings.registry.clone(),
    )
    .await
    .map_err(|e| NodeError::Registry(e.to_string()))?;
    let registry_server = tokio::spawn(crate::registry::serve(registry.clone(), registry_in_rx));
    let voter_discovery = tokio::spawn(crate::registry::discover_voters(
        registry.clone(),
        stop_rx.clone(),
    ));
    let names = Arc::new(RaftNames::new(
        registry.clone(),
        MeshRegistry::new(client_tx.clone(), metrics.clone()),
    ));
    let state = ApiState {
        core: client_tx,
        names,
        registry: Some(registry.clone()),
        core_status,
        net_status,
        metrics,
        info: Arc::new(NodeInfo {
            peer_id: peer_id.to_string(),
            http: http_addr,
            region: settings.region.clone(),
            geo: settings.geo,
            started: Instant::now(),
        }),
        log,
        events: settings.events,
        admin: Some(admin_tx),
    };
    let mut http_stop = stop_rx.clone();
    let http = tokio::spawn(
        axum::serve(listener, api::router(state))
            .with_graceful_shutdown(async move {
                let _ = http_stop.wait_for(|s| *s).await;
            })
            .into_future(),
    );

    // Run until asked to stop, or until the network or the core fails: a
    // node that cannot store or cannot talk exits rather than lingering.
    let mut net_task = net_task;
    let mut core_done = tokio::task::spawn_blocking(move || core_thread.join());
    let (mut net_result, mut core_result) = (None, None);
    tokio::select! {
        () = shutdown => {}
        r = &mut net_task => net_result = Some(r),
        r = &mut core_done => core_result = Some(r),
    }
    tracing::info!("shutting down: no new writes, flushing");
    let _ = stop_tx.send(true);
    let net_result = match net_result {
        Some(r) => r,
        None => net_task.await,
    };
    let _ = http.await;
    let _ = ticker.await;
    let _ = voter_discovery.await;
    registry.shutdown().await;
    // The network actor is gone, so the registry's inbound queue is closed.
    let _ = registry_server.await;
    // Every sender of both queues is gone now: the core drains, checkpoints,
    // flushes.
    let core_result = match core_result {
        Some(r) => r,
        None => core_done.await,
    };
    let _ = std::fs::remove_file(&announce_path);
    tracing::info!("stopped");
    if !matches!(core_result, Ok(Ok(()))) {
        return Err(NodeError::CoreFailed);
    }
    net_result.expect("network task")?;
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// The contents of `node.json`, for scripts, the demo and tests.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Announcement {
    pub peer_id: String,
    /// Full multiaddrs ending in `/p2p/<peer id>`.
    pub listen_addrs: Vec<String>,
    /// `host:port` of the HTTP API.
    pub http: String,
    pub region: String,
}

impl Announcement {
    /// Reads `DIR/node.json`, if the node has written it.
    pub fn read(data_dir: &Path) -> Option<Self> {
        let bytes = std::fs::read(data_dir.join(ANNOUNCE_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The first listen address on `transport` ("tcp" or "quic-v1").
    pub fn addr(&self, transport: &str) -> Option<&str> {
        self.listen_addrs
            .iter()
            .map(String::as_str)
            .find(|a| a.contains(&format!("/{transport}")))
    }

    /// The HTTP base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.http)
    }
}
