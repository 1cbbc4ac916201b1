//! The network actor: one task owns the libp2p swarm.
//!
//! - Push: every durable local delta is published on one gossipsub topic.
//!   Validation is manual: a received message is decoded and handed to the
//!   core, and only a delta the core accepted (or buffered) is forwarded; a
//!   bad signature or malformed bytes is rejected and penalises the sender.
//! - Pull (scuttlebutt anti-entropy): every `sync_interval`, and at once when
//!   the core reports a gap, the node sends its version vector to a random
//!   peer over request-response; the peer answers with the deltas the vector
//!   lacks, in per-origin seq order, in bounded pages, and the node asks
//!   again while pages come back full.
//! - Discovery: identify feeds listen addresses into kad; kad's routing
//!   table supplies more peers to dial while below `target_peers`.
//! - Join peers are redialled with exponential backoff.
//!
//! The actor never waits on the core: deltas go to it with `try_send`, and
//! its answers come back as futures polled in the same `select!` loop.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use hearsay_crdt::{Delta, ErrorKind, MAX_DELTA_BYTES, Verdict, VersionVector};
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, MessageId};
use libp2p::metrics::Recorder;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, ProtocolSupport, ResponseChannel};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent, dial_opts::DialOpts};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, connection_limits, identify, identity, kad, noise,
    ping, tcp, yamux,
};
use rand::seq::IteratorRandom;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use tokio::sync::{mpsc, oneshot, watch};

use crate::core::{CoreEvent, CoreStatus, PeerCommand};
use crate::metrics::{Metrics, Source};
use crate::store::{Store, read_page};

/// The gossipsub topic deltas are pushed on.
pub const DELTA_TOPIC: &str = "hearsay/deltas/1";
/// The anti-entropy request-response protocol.
pub const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/hearsay/sync/1");
/// Most deltas in one anti-entropy page.
pub const SYNC_PAGE_DELTAS: usize = 1024;
/// Most delta bytes in one anti-entropy page.
pub const SYNC_PAGE_BYTES: usize = 4 << 20;
/// Largest sync request: a version vector of 4096 origins.
const SYNC_REQUEST_MAX: u64 = 256 << 10;
/// Largest sync response: a full page plus CBOR framing.
const SYNC_RESPONSE_MAX: u64 = (SYNC_PAGE_BYTES + SYNC_PAGE_DELTAS * 16 + 1024) as u64;
const REDIAL_MIN: Duration = Duration::from_millis(500);
const REDIAL_MAX: Duration = Duration::from_secs(30);
/// Anti-entropy pages read for peers at once (each up to `SYNC_PAGE_BYTES`).
const MAX_SERVING: usize = 8;
const KAD_BOOTSTRAP_EVERY: Duration = Duration::from_secs(30);

/// Anti-entropy request: "this is what I have".
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncRequest {
    /// [`VersionVector::to_bytes`] of the requester.
    #[serde(with = "serde_bytes")]
    pub version_vector: Vec<u8>,
}

/// Anti-entropy response: encoded deltas the requester lacks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncResponse {
    pub deltas: Vec<ByteBuf>,
    /// The page was full: ask again.
    pub more: bool,
}

/// The libp2p protocols of a hearsay node.
#[allow(missing_debug_implementations)] // libp2p behaviours are not Debug
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    pub limits: connection_limits::Behaviour,
    pub gossipsub: gossipsub::Behaviour,
    pub sync: request_response::cbor::Behaviour<SyncRequest, SyncResponse>,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    /// Off when discovery is off (`target_peers = 0`): kad dials the peers
    /// its queries find, which a static mesh must not do.
    pub kad: Toggle<kad::Behaviour<kad::store::MemoryStore>>,
}

/// Builds the swarm of a hearsay node (also used by tests to make peers);
/// `discovery` enables kad.
pub fn build_swarm(
    key: identity::Keypair,
    max_connections: u32,
    discovery: bool,
) -> Result<Swarm<Behaviour>, NetError> {
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| NetError::Build(e.to_string()))?
        .with_quic()
        .with_behaviour(|key| {
            let gossip_config = gossipsub::ConfigBuilder::default()
                .heartbeat_interval(Duration::from_millis(500))
                .validation_mode(gossipsub::ValidationMode::Strict)
                .validate_messages()
                .max_transmit_size(MAX_DELTA_BYTES + 4096)
                .message_id_fn(|m: &gossipsub::Message| {
                    use sha2::Digest;
                    MessageId::from(sha2::Sha256::digest(&m.data)[..20].to_vec())
                })
                .build()?;
            let gossipsub = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                gossip_config,
            )?;
            let codec = request_response::cbor::codec::Codec::default()
                .set_request_size_maximum(SYNC_REQUEST_MAX)
                .set_response_size_maximum(SYNC_RESPONSE_MAX);
            let sync = request_response::Behaviour::with_codec(
                codec,
                [(SYNC_PROTOCOL, ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(Duration::from_secs(30))
                    .with_max_concurrent_streams(64),
            );
            let peer_id = key.public().to_peer_id();
            let mut kad = kad::Behaviour::with_config(
                peer_id,
                kad::store::MemoryStore::new(peer_id),
                kad::Config::new(StreamProtocol::new("/hearsay/kad/1")),
            );
            // Nodes on loopback or a LAN never confirm an external address;
            // serve the DHT anyway so peers can discover each other.
            kad.set_mode(Some(kad::Mode::Server));
            let kad = Toggle::from(discovery.then_some(kad));
            let limits = connection_limits::ConnectionLimits::default()
                .with_max_established(Some(max_connections))
                .with_max_established_per_peer(Some(2))
                .with_max_pending_incoming(Some(32));
            Ok(Behaviour {
                limits: connection_limits::Behaviour::new(limits),
                gossipsub,
                sync,
                identify: identify::Behaviour::new(
                    identify::Config::new("/hearsay/1".into(), key.public())
                        .with_agent_version(format!("hearsay/{}", env!("CARGO_PKG_VERSION"))),
                ),
                ping: ping::Behaviour::new(
                    ping::Config::new().with_interval(Duration::from_secs(5)),
                ),
                kad,
            })
        })
        .map_err(|e| NetError::Build(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    Ok(swarm)
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("building the swarm: {0}")]
    Build(String),
    #[error("listening on {addr}: {why}")]
    Listen { addr: Multiaddr, why: String },
}

/// The network's state as the API sees it.
#[derive(Debug, Clone, Default)]
pub struct NetStatus {
    pub peers: usize,
    pub listen_addrs: Vec<Multiaddr>,
}

/// Where the node announces its addresses once listening.
#[derive(Debug, Clone)]
pub struct Announce {
    pub path: PathBuf,
    pub http: String,
    pub region: String,
}

struct JoinPeer {
    addr: Multiaddr,
    peer: PeerId,
    backoff: Duration,
    next_dial: Option<Instant>,
}

enum Pending {
    Validated {
        id: MessageId,
        source: PeerId,
        verdict: Option<Vec<Verdict>>,
    },
    Served {
        channel: ResponseChannel<SyncResponse>,
        response: SyncResponse,
    },
    Synced {
        peer: PeerId,
        more: bool,
        verdict: Option<Vec<Verdict>>,
    },
}

/// Everything the network actor needs.
#[allow(missing_debug_implementations)] // holds the swarm
pub struct NetParts<S> {
    pub swarm: Swarm<Behaviour>,
    pub join: Vec<Multiaddr>,
    pub listen: Vec<Multiaddr>,
    pub sync_interval: Duration,
    pub target_peers: usize,
    pub core: mpsc::Sender<PeerCommand>,
    pub core_events: mpsc::Receiver<CoreEvent>,
    pub core_status: watch::Receiver<CoreStatus>,
    pub store: S,
    pub metrics: Metrics,
    pub status: watch::Sender<NetStatus>,
    pub announce: Announce,
}

struct Net<S> {
    swarm: Swarm<Behaviour>,
    topic: IdentTopic,
    join: Vec<JoinPeer>,
    sync_interval: Duration,
    target_peers: usize,
    core: mpsc::Sender<PeerCommand>,
    core_events: mpsc::Receiver<CoreEvent>,
    core_status: watch::Receiver<CoreStatus>,
    store: S,
    metrics: Metrics,
    p2p_metrics: libp2p::metrics::Metrics,
    status: watch::Sender<NetStatus>,
    announce: Announce,
    listen_addrs: Vec<Multiaddr>,
    pending: FuturesUnordered<BoxFuture<'static, Pending>>,
    syncing: HashSet<PeerId>,
    /// Anti-entropy pages being read for peers.
    serving: usize,
    gap: bool,
}

/// Starts listening and runs the actor until `shutdown` turns true.
pub async fn run<S: Store>(
    parts: NetParts<S>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), NetError> {
    let mut swarm = parts.swarm;
    for addr in &parts.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| NetError::Listen {
                addr: addr.clone(),
                why: e.to_string(),
            })?;
    }
    let topic = IdentTopic::new(DELTA_TOPIC);
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&topic)
        .map_err(|e| NetError::Build(e.to_string()))?;
    let join = parts
        .join
        .into_iter()
        .filter_map(|addr| match addr.iter().last() {
            Some(Protocol::P2p(peer)) => Some(JoinPeer {
                addr,
                peer,
                backoff: REDIAL_MIN,
                next_dial: Some(Instant::now()),
            }),
            _ => None,
        })
        .collect();
    let p2p_metrics = parts.metrics.with_registry(libp2p::metrics::Metrics::new);
    let mut net = Net {
        swarm,
        topic,
        join,
        sync_interval: parts.sync_interval,
        target_peers: parts.target_peers,
        core: parts.core,
        core_events: parts.core_events,
        core_status: parts.core_status,
        store: parts.store,
        metrics: parts.metrics,
        p2p_metrics,
        status: parts.status,
        announce: parts.announce,
        listen_addrs: Vec::new(),
        pending: FuturesUnordered::new(),
        syncing: HashSet::new(),
        serving: 0,
        gap: false,
    };
    let mut sync_tick = tokio::time::interval(net.sync_interval);
    sync_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut housekeeping = tokio::time::interval(Duration::from_millis(250));
    let mut last_bootstrap: Option<Instant> = None;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => break,
            Some(event) = net.core_events.recv() => net.on_core_event(event),
            Some(done) = net.pending.next(), if !net.pending.is_empty() => net.on_pending(done),
            event = net.swarm.select_next_some() => net.on_swarm_event(event),
            _ = sync_tick.tick() => net.start_sync(None),
            _ = housekeeping.tick() => {
                net.redial_due();
                if net.gap || net.core_status.borrow().buffered > 0 {
                    net.start_sync(None);
                }
                let connected = net.swarm.connected_peers().count();
                if connected > 0 && last_bootstrap.is_none_or(|t| t.elapsed() >= KAD_BOOTSTRAP_EVERY) {
                    if let Some(kad) = net.swarm.behaviour_mut().kad.as_mut() {
                        let _ = kad.bootstrap();
                    }
                    last_bootstrap = Some(Instant::now());
                }
                net.publish_status();
            }
        }
    }
    tracing::info!("network stopped");
    Ok(())
}

fn acceptance(verdict: &Option<Vec<Verdict>>) -> MessageAcceptance {
    match verdict {
        None => MessageAcceptance::Ignore,
        Some(v) if v.iter().any(|v| v.blames_sender()) => MessageAcceptance::Reject,
        Some(v) if v.iter().any(|v| v.is_new()) => MessageAcceptance::Accept,
        Some(_) => MessageAcceptance::Ignore,
    }
}

/// Reads the deltas a peer's version vector lacks from the store.
fn serve_sync<S: Store>(
    store: &S,
    mine: &VersionVector,
    request: &SyncRequest,
) -> Result<SyncResponse, String> {
    let theirs = VersionVector::from_bytes(&request.version_vector).map_err(|e| e.to_string())?;
    // `mine` is the durable vector: nothing above it may leave the node.
    let (deltas, more) = read_page(store, &theirs, mine, SYNC_PAGE_DELTAS, SYNC_PAGE_BYTES)
        .map_err(|e| e.to_string())?;
    Ok(SyncResponse {
        deltas: deltas.into_iter().map(ByteBuf::from).collect(),
        more,
    })
}

impl<S: Store> Net<S> {
    fn on_core_event(&mut self, event: CoreEvent) {
        match event {
            CoreEvent::Publish(deltas) => {
                for bytes in deltas {
                    // With no subscribed peer yet, anti-entropy delivers later.
                    if let Err(e) = self
                        .swarm
                        .behaviour_mut()
                        .gossipsub
                        .publish(self.topic.clone(), bytes)
                    {
                        tracing::debug!(error = %e, "publish");
                    }
                }
            }
        }
    }

    /// Hands remote deltas to the core without waiting; `None` when it is full.
    fn send_to_core(
        &mut self,
        deltas: Vec<Delta>,
        source: Source,
    ) -> Option<oneshot::Receiver<Vec<Verdict>>> {
        let (reply, rx) = oneshot::channel();
        match self.core.try_send(PeerCommand::Remote {
            deltas,
            source,
            reply,
        }) {
            Ok(()) => Some(rx),
            Err(_) => {
                self.metrics.overload_rejections.inc();
                self.gap = true;
                None
            }
        }
    }

    fn on_pending(&mut self, done: Pending) {
        match done {
            Pending::Validated {
                id,
                source,
                verdict,
            } => {
                self.gap |= verdict.iter().flatten().any(|v| v.is_gap());
                let acceptance = acceptance(&verdict);
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&id, &source, acceptance);
            }
            Pending::Served { channel, response } => {
                self.serving -= 1;
                self.metrics
                    .sync_deltas_served
                    .inc_by(response.deltas.len() as u64);
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .sync
                    .send_response(channel, response);
            }
            Pending::Synced {
                peer,
                more,
                verdict,
            } => {
                self.syncing.remove(&peer);
                self.gap |= verdict.iter().flatten().any(|v| v.is_gap());
                let progress = verdict.is_some_and(|v| {
                    v.iter()
                        .any(|v| matches!(v, Verdict::Accepted | Verdict::Duplicate))
                });
                if more && progress {
                    self.start_sync(Some(peer));
                }
            }
        }
    }

    fn start_sync(&mut self, peer: Option<PeerId>) {
        let peer = peer.or_else(|| {
            let syncing = &self.syncing;
            self.swarm
                .connected_peers()
                .filter(|p| !syncing.contains(p))
                .choose(&mut rand::rng())
                .copied()
        });
        let Some(peer) = peer else { return };
        self.gap = false;
        let version_vector = self.core_status.borrow().version_vector.to_bytes();
        self.swarm
            .behaviour_mut()
            .sync
            .send_request(&peer, SyncRequest { version_vector });
        self.syncing.insert(peer);
        self.metrics.sync_rounds.inc();
    }

    fn redial_due(&mut self) {
        let now = Instant::now();
        for j in &mut self.join {
            if j.next_dial.is_some_and(|t| t <= now) && !self.swarm.is_connected(&j.peer) {
                j.next_dial = None;
                tracing::debug!(addr = %j.addr, "dialling join peer");
                if let Err(e) = self.swarm.dial(j.addr.clone()) {
                    tracing::debug!(addr = %j.addr, error = %e, "dial");
                    j.next_dial = Some(now + j.backoff);
                    j.backoff = (j.backoff * 2).min(REDIAL_MAX);
                }
            }
        }
    }

    fn schedule_redial(&mut self, peer: &PeerId) {
        if let Some(j) = self.join.iter_mut().find(|j| j.peer == *peer)
            && j.next_dial.is_none()
        {
            j.next_dial = Some(Instant::now() + j.backoff);
            j.backoff = (j.backoff * 2).min(REDIAL_MAX);
        }
    }

    fn publish_status(&mut self) {
        let peers = self.swarm.connected_peers().count();
        self.metrics.connected_peers.set(peers as i64);
        self.status.send_if_modified(|s| {
            let changed = s.peers != peers || s.listen_addrs != self.listen_addrs;
            s.peers = peers;
            s.listen_addrs.clone_from(&self.listen_addrs);
            changed
        });
    }

    fn write_announce(&self) {
        let body = serde_json::json!({
            "peer_id": self.swarm.local_peer_id().to_string(),
            "listen_addrs": self.listen_addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "http": self.announce.http,
            "region": self.announce.region,
        });
        let tmp = self.announce.path.with_extension("json.tmp");
        let written = std::fs::write(&tmp, serde_json::to_vec_pretty(&body).expect("json"))
            .and_then(|()| std::fs::rename(&tmp, &self.announce.path));
        if let Err(e) = written {
            tracing::warn!(path = %self.announce.path.display(), error = %e, "writing node.json");
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.p2p_metrics.record(&event);
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                let full = address.with(Protocol::P2p(*self.swarm.local_peer_id()));
                tracing::info!(addr = %full, "listening");
                self.listen_addrs.push(full);
                self.write_announce();
                self.publish_status();
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                ..
            } => {
                if num_established.get() == 1 {
                    tracing::info!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connected");
                }
                if endpoint.is_dialer()
                    && let Some(kad) = self.swarm.behaviour_mut().kad.as_mut()
                {
                    kad.add_address(&peer_id, endpoint.get_remote_address().clone());
                }
                if let Some(j) = self.join.iter_mut().find(|j| j.peer == peer_id) {
                    j.backoff = REDIAL_MIN;
                    j.next_dial = None;
                }
                self.publish_status();
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => {
                if num_established == 0 {
                    tracing::info!(peer = %peer_id, "disconnected");
                    self.syncing.remove(&peer_id);
                    self.schedule_redial(&peer_id);
                }
                self.publish_status();
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => {
                tracing::debug!(%peer, %error, "dial failed");
                self.schedule_redial(&peer);
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Gossipsub(event) => {
                self.p2p_metrics.record(&event);
                match event {
                    gossipsub::Event::Message {
                        propagation_source,
                        message_id,
                        message,
                    } => self.on_gossip(propagation_source, message_id, &message.data),
                    // Whatever we published before this peer subscribed never
                    // reached it, nor its writes us: repair at once rather
                    // than at the next anti-entropy tick.
                    gossipsub::Event::Subscribed { peer_id, .. }
                        if !self.syncing.contains(&peer_id) =>
                    {
                        self.start_sync(Some(peer_id));
                    }
                    _ => {}
                }
            }
            BehaviourEvent::Sync(request_response::Event::Message { peer, message, .. }) => {
                match message {
                    request_response::Message::Request {
                        request, channel, ..
                    } => {
                        if self.serving >= MAX_SERVING {
                            // Each page may hold megabytes: bound the work and
                            // memory peers can ask of us. An empty page tells
                            // the peer to come back at its next round.
                            self.metrics.overload_rejections.inc();
                            let empty = SyncResponse {
                                deltas: Vec::new(),
                                more: false,
                            };
                            let _ = self
                                .swarm
                                .behaviour_mut()
                                .sync
                                .send_response(channel, empty);
                            return;
                        }
                        self.serving += 1;
                        let store = self.store.clone();
                        let mine = self.core_status.borrow().version_vector.clone();
                        let metrics = self.metrics.clone();
                        self.pending.push(
                            async move {
                                let served = tokio::task::spawn_blocking(move || {
                                    serve_sync(&store, &mine, &request)
                                })
                                .await
                                .unwrap_or_else(|e| Err(e.to_string()));
                                let response = served.unwrap_or_else(|e| {
                                    tracing::debug!(%peer, error = %e, "bad sync request");
                                    metrics.reject(ErrorKind::Malformed, Source::Sync);
                                    SyncResponse {
                                        deltas: Vec::new(),
                                        more: false,
                                    }
                                });
                                Pending::Served { channel, response }
                            }
                            .boxed(),
                        );
                    }
                    request_response::Message::Response { response, .. } => {
                        self.on_sync_response(peer, response)
                    }
                }
            }
            BehaviourEvent::Sync(request_response::Event::OutboundFailure {
                peer, error, ..
            }) => {
                tracing::debug!(%peer, %error, "sync request failed");
                self.syncing.remove(&peer);
            }
            BehaviourEvent::Sync(_) => {}
            BehaviourEvent::Identify(event) => {
                self.p2p_metrics.record(&event);
                if let identify::Event::Received { peer_id, info, .. } = event
                    && let Some(kad) = self.swarm.behaviour_mut().kad.as_mut()
                {
                    for addr in info.listen_addrs.into_iter().take(16) {
                        kad.add_address(&peer_id, addr);
                    }
                }
            }
            BehaviourEvent::Kad(event) => {
                self.p2p_metrics.record(&event);
                if let kad::Event::RoutingUpdated {
                    peer, addresses, ..
                } = event
                {
                    let connected = self.swarm.connected_peers().count();
                    if connected < self.target_peers && !self.swarm.is_connected(&peer) {
                        let opts = DialOpts::peer_id(peer)
                            .addresses(addresses.into_vec())
                            .build();
                        let _ = self.swarm.dial(opts);
                    }
                }
            }
            BehaviourEvent::Ping(event) => self.p2p_metrics.record(&event),
            BehaviourEvent::Limits(v) => match v {},
        }
    }

    fn on_gossip(&mut self, source: PeerId, id: MessageId, data: &[u8]) {
        let delta = match Delta::decode(data) {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(%source, error = %e, "undecodable gossip");
                self.metrics.reject(e.kind(), Source::Gossip);
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&id, &source, MessageAcceptance::Reject);
                return;
            }
        };
        match self.send_to_core(vec![delta], Source::Gossip) {
            Some(rx) => self.pending.push(
                async move {
                    Pending::Validated {
                        id,
                        source,
                        verdict: rx.await.ok(),
                    }
                }
                .boxed(),
            ),
            None => {
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&id, &source, MessageAcceptance::Ignore);
            }
        }
    }

    fn on_sync_response(&mut self, peer: PeerId, response: SyncResponse) {
        let more = response.more;
        let mut deltas = Vec::with_capacity(response.deltas.len().min(SYNC_PAGE_DELTAS));
        for bytes in response.deltas.iter().take(SYNC_PAGE_DELTAS) {
            match Delta::decode(bytes) {
                Ok(d) => deltas.push(d),
                Err(e) => self.metrics.reject(e.kind(), Source::Sync),
            }
        }
        if deltas.is_empty() {
            // Caught up with this peer (or it sent nothing usable).
            self.syncing.remove(&peer);
            return;
        }
        match self.send_to_core(deltas, Source::Sync) {
            Some(rx) => self.pending.push(
                async move {
                    Pending::Synced {
                        peer,
                        more,
                        verdict: rx.await.ok(),
                    }
                }
                .boxed(),
            ),
            None => {
                self.syncing.remove(&peer);
            }
        }
    }
}
