//! The network actor: one task owns the libp2p swarm and translates.
//!
//! Every protocol decision (which peer to ask, when to ask again, what to
//! serve, whether to forward a pushed delta, when to give up on a link and
//! when to redial) is made by [`hearsay_sync::SyncMachine`]; this actor only
//! turns swarm events into machine events and machine commands into swarm
//! calls, store reads and core requests:
//!
//! - Push: every durable local delta is published on one gossipsub topic.
//!   Validation is manual: a received message is decoded and handed to the
//!   core on its peer queue; the core's verdicts go to the machine, whose
//!   acceptance goes back to gossipsub (forward, ignore, or reject and
//!   penalise the sender).
//! - Pull (scuttlebutt anti-entropy): request-response pages of the deltas a
//!   version vector lacks, read from the store off the reactor, never beyond
//!   the durable vector.
//! - Links: pings every second with a short timeout feed the machine's
//!   failure detection; its `Disconnect` closes the link and its `Dial`s
//!   redial join peers and dialled peers with a capped backoff.
//! - Discovery: identify feeds listen addresses into kad and an address
//!   book; kad's routing updates are offered to the machine.
//! - Statuses: once a second the node signs and publishes its status
//!   ([`crate::status`]) on its own gossipsub topic. Received statuses are
//!   verified (refused ones are rejected in gossipsub and counted), give
//!   clock offsets and origin regions ([`crate::status::Origins`]), and go
//!   to a [`hearsay_topology::Topology`], the second machine of this actor:
//!   its peer table and failure detector back `GET /api/v0/nodes`, and its
//!   `Dial`s keep the node at its degree and around articulation points.
//!   Its neighbours are the peers subscribed to the delta topic; a peer
//!   without the sync protocol (a router) is a light member: no sync
//!   rounds, no degree.
//! - Registry: a request-response protocol of its own
//!   ([`REGISTRY_PROTOCOL`]), apart from gossip and sync so their traffic
//!   cannot hold up the name registry's Raft messages. The actor carries
//!   opaque bytes ([`RegistryMessage`]) between the swarm and the registry
//!   service's [`RegistryPort`] without reading them: an outbound message is
//!   sent to its peer (dialled if need be, at its join address, the
//!   addresses it announced and any a behaviour knows) and its reply
//!   channel kept until the response or the failure; one addressed to this
//!   node goes straight to the inbound queue. An inbound request is handed
//!   over with `try_send` (a full or closed queue, or no service, drops it:
//!   the requester sees a failure), and the service's answer comes back as
//!   a future in the same `select!` loop.
//!
//! The actor never waits on the core: deltas go to it with `try_send`, and
//! its answers come back as futures polled in the same `select!` loop.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{BoxFuture, OptionFuture};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use hearsay_crdt::{Delta, MAX_DELTA_BYTES, Signatures, Verdict, VersionVector};
use hearsay_sync::{Acceptance, Batch, Command, Empty, Event, RequestId, SyncMachine};
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, MessageId};
use libp2p::metrics::Recorder;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, connection_limits, identify, identity, kad, noise,
    ping, tcp, yamux,
};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, Sleep};

use crate::core::{CoreEvent, CoreStatus, PeerCommand};
use crate::metrics::{Metrics, ResponseReading, Source, Stage};
use crate::status::{self, OriginInfo, Origins, STATUS_TOPIC, StatusBody, Verified};
use crate::store::{Store, read_page};
use hearsay_topology::{Geo, State, Timeouts, Topology};

mod admission;
#[cfg(test)]
mod wire_fuzz;
pub use admission::{AdminRequest, AdmissionParts, AdmissionStatus, CertificateView};
use hearsay_admission::Kind as MessageKind;

/// The gossipsub topic deltas are pushed on.
pub const DELTA_TOPIC: &str = "hearsay/deltas/1";
/// The anti-entropy request-response protocol.
pub const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/hearsay/sync/1");
/// Most deltas in one anti-entropy page.
pub const SYNC_PAGE_DELTAS: usize = 1024;
/// Most delta bytes in one anti-entropy page.
pub const SYNC_PAGE_BYTES: usize = 4 << 20;
/// Most origins kept in the lag estimate's merged vector (four full sync
/// requests' worth).
const MAX_KNOWN_ORIGINS: usize = 4 * 4096;
/// Largest sync request: a version vector of 4096 origins.
const SYNC_REQUEST_MAX: u64 = 256 << 10;
/// Largest sync response: a full page plus CBOR framing.
const SYNC_RESPONSE_MAX: u64 = (SYNC_PAGE_BYTES + SYNC_PAGE_DELTAS * 16 + 1024) as u64;
/// How often a link is pinged, and how long an answer may take. Two missed
/// pings in a row (the machine's `max_ping_failures`) close the link, so a
/// dead link is noticed in three to five seconds.
pub const PING_INTERVAL: Duration = Duration::from_secs(1);
pub const PING_TIMEOUT: Duration = Duration::from_millis(1500);
/// libp2p's own limit on a sync request; the machine gives up earlier
/// (`request_timeout_ms`) and retries on another peer.
const SYNC_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Addresses kept per peer for redials (from identify and kad).
const MAX_ADDRS_PER_PEER: usize = 8;
/// Peers whose addresses are kept for redials.
const MAX_ADDRESS_BOOK: usize = 1024;
/// How often the peer count is published to the API and metrics.
const STATUS_EVERY: Duration = Duration::from_millis(250);
/// Peers the actor keeps facts about for the API (connected ones, join
/// peers, and ones seen before while room remains).
const MAX_PEER_TABLE: usize = 256;
/// Peers listed in [`NetStatus::known`], connected ones first.
pub const MAX_LISTED_PEERS: usize = 64;
/// How often the node publishes its signed status (the heartbeat).
pub const STATUS_PUBLISH_EVERY: Duration = Duration::from_secs(1);
/// Readings of the response totals kept: the status's response time and
/// error rate cover the last this-many publications (10 s).
const RESPONSE_WINDOW: usize = 10;

/// The name registry's request-response protocol (Raft messages, opaque
/// here).
pub const REGISTRY_PROTOCOL: StreamProtocol = StreamProtocol::new("/hearsay/registry/1");
/// Largest registry message body, request or response. Larger outbound
/// bodies and answers are refused here rather than cut by the receiver.
pub const REGISTRY_MESSAGE_MAX: usize = 4 << 20;
/// The codec's limit on a registry message: the body plus its CBOR byte
/// string header (at most 9 bytes).
const REGISTRY_WIRE_MAX: u64 = (REGISTRY_MESSAGE_MAX + 64) as u64;
/// libp2p's own limit on a registry request (and on the wait for the
/// service's answer to one received); callers give up earlier by dropping
/// their reply receiver.
pub const REGISTRY_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Outbound registry requests whose replies are held at once (including
/// ones addressed to this node); more are refused at once.
pub const MAX_REGISTRY_IN_FLIGHT: usize = 256;

/// The admission handshake's request-response protocol: on a node's first
/// connection to a peer each side sends a [`Hello`] and answers with its
/// own.
pub const ADMISSION_PROTOCOL: StreamProtocol = StreamProtocol::new("/hearsay/admission/1");
/// The gossipsub topic of admission notices ([`Notice`]): revocations and
/// equivocation proofs, spread to every node.
pub const ADMISSION_TOPIC: &str = "hearsay/admission/1";
/// Revocations carried in one hello (the machine keeps at most 4,096).
pub const HELLO_MAX_REVOCATIONS: usize = 4096;
/// Equivocation proofs carried in one hello.
pub const HELLO_MAX_PROOFS: usize = 16;
/// The codec's limit on a hello: the certificate, every revocation (about
/// 150 bytes each) and the proofs (two deltas each).
pub(crate) const HELLO_WIRE_MAX: u64 =
    (2 << 20) + (HELLO_MAX_PROOFS * 2 * (MAX_DELTA_BYTES + 256)) as u64;
/// Application score gossipsub gives a peer that is not admitted (yet): far
/// below its graylist threshold, so nothing is published to it, it is kept
/// out of the mesh and its messages are dropped unread.
pub const NOT_ADMITTED_SCORE: f64 = -1000.0;

/// What a node presents on connect: its certificate (none in an open mesh)
/// and what it knows that every node must know: the revocations and the
/// equivocation proofs it holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Hello {
    /// [`hearsay_admission::Certificate::encode`] of the sender's
    /// certificate.
    pub certificate: Option<ByteBuf>,
    /// [`hearsay_admission::Revocation::encode`] of each revocation held.
    pub revocations: Vec<ByteBuf>,
    /// [`hearsay_crdt::Equivocation::encode`] of each proof held.
    pub proofs: Vec<ByteBuf>,
}

/// A message on [`ADMISSION_TOPIC`]: one tag byte, then the encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Revocation(Vec<u8>),
    Equivocation(Vec<u8>),
    /// The certificate of a node just admitted: so that every node knows
    /// which origins were admitted before their deltas reach it (statuses
    /// carry certificates too, but only from nodes that publish them).
    Certificate(Vec<u8>),
}

impl Notice {
    const REVOCATION: u8 = 1;
    const EQUIVOCATION: u8 = 2;
    const CERTIFICATE: u8 = 3;

    pub fn encode(&self) -> Vec<u8> {
        let (tag, body) = match self {
            Notice::Revocation(b) => (Self::REVOCATION, b),
            Notice::Equivocation(b) => (Self::EQUIVOCATION, b),
            Notice::Certificate(b) => (Self::CERTIFICATE, b),
        };
        let mut out = Vec::with_capacity(1 + body.len());
        out.push(tag);
        out.extend_from_slice(body);
        out
    }

    pub fn decode(data: &[u8]) -> Option<Notice> {
        let (tag, body) = data.split_first()?;
        match *tag {
            Self::REVOCATION => Some(Notice::Revocation(body.to_vec())),
            Self::EQUIVOCATION => Some(Notice::Equivocation(body.to_vec())),
            Self::CERTIFICATE => Some(Notice::Certificate(body.to_vec())),
            _ => None,
        }
    }
}

type CborCodec<Req, Resp> = request_response::cbor::codec::Codec<Req, Resp>;

/// The anti-entropy codec: it reads at most [`SYNC_REQUEST_MAX`] and
/// [`SYNC_RESPONSE_MAX`] bytes off a stream before decoding.
fn sync_codec() -> CborCodec<SyncRequest, SyncResponse> {
    CborCodec::default()
        .set_request_size_maximum(SYNC_REQUEST_MAX)
        .set_response_size_maximum(SYNC_RESPONSE_MAX)
}

/// The registry codec: [`REGISTRY_WIRE_MAX`] bytes each way.
fn registry_codec() -> CborCodec<RegistryMessage, RegistryMessage> {
    CborCodec::default()
        .set_request_size_maximum(REGISTRY_WIRE_MAX)
        .set_response_size_maximum(REGISTRY_WIRE_MAX)
}

/// The admission codec: [`HELLO_WIRE_MAX`] bytes each way.
pub(crate) fn hello_codec() -> CborCodec<Hello, Hello> {
    CborCodec::default()
        .set_request_size_maximum(HELLO_WIRE_MAX)
        .set_response_size_maximum(HELLO_WIRE_MAX)
}

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

/// A registry message on the wire: opaque bytes, the registry's own
/// encoding.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegistryMessage(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// A message the registry service sends to `peer`; the actor answers
/// `reply` with the peer's response, or with why there is none (dial
/// failure, timeout, unsupported protocol, closed connection, too many in
/// flight, too large). Dropping the receiver abandons the request.
#[derive(Debug)]
pub struct RegistryOutbound {
    pub peer: PeerId,
    pub body: Vec<u8>,
    pub reply: oneshot::Sender<Result<Vec<u8>, String>>,
}

/// A request from `peer` for the registry service. Answer on `reply`
/// within [`REGISTRY_REQUEST_TIMEOUT`] (10 s); dropping it (or answering
/// with more than [`REGISTRY_MESSAGE_MAX`] bytes) fails the request at
/// the requester.
#[derive(Debug)]
pub struct RegistryInbound {
    pub peer: PeerId,
    pub body: Vec<u8>,
    pub reply: oneshot::Sender<Vec<u8>>,
}

/// The registry service's end of the network: it sends on `outbound`'s
/// sender and receives on `inbound`'s receiver.
#[derive(Debug)]
pub struct RegistryPort {
    pub outbound: mpsc::Receiver<RegistryOutbound>,
    pub inbound: mpsc::Sender<RegistryInbound>,
}

/// The libp2p protocols of a hearsay node.
#[allow(missing_debug_implementations)] // libp2p behaviours are not Debug
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    pub limits: connection_limits::Behaviour,
    /// Peers banned by admission: their connections are refused as soon
    /// as the handshake names them, before any protocol runs.
    pub blocked: libp2p::allow_block_list::Behaviour<libp2p::allow_block_list::BlockedPeers>,
    pub gossipsub: gossipsub::Behaviour,
    pub sync: request_response::cbor::Behaviour<SyncRequest, SyncResponse>,
    /// The name registry's messages, on their own streams.
    pub registry: request_response::cbor::Behaviour<RegistryMessage, RegistryMessage>,
    /// The admission handshake.
    pub admission: request_response::cbor::Behaviour<Hello, Hello>,
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
            let gossipsub = scored_gossipsub()?;
            let sync = request_response::Behaviour::with_codec(
                sync_codec(),
                [(SYNC_PROTOCOL, ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(SYNC_REQUEST_TIMEOUT)
                    .with_max_concurrent_streams(64),
            );
            let registry = request_response::Behaviour::with_codec(
                registry_codec(),
                [(REGISTRY_PROTOCOL, ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(REGISTRY_REQUEST_TIMEOUT)
                    .with_max_concurrent_streams(64),
            );
            let admission = request_response::Behaviour::with_codec(
                hello_codec(),
                [(ADMISSION_PROTOCOL, ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(Duration::from_secs(10))
                    .with_max_concurrent_streams(8),
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
                blocked: Default::default(),
                gossipsub,
                sync,
                registry,
                admission,
                identify: identify::Behaviour::new(
                    identify::Config::new("/hearsay/1".into(), key.public())
                        .with_agent_version(format!("hearsay/{}", env!("CARGO_PKG_VERSION"))),
                ),
                ping: ping::Behaviour::new(
                    ping::Config::new()
                        .with_interval(PING_INTERVAL)
                        .with_timeout(PING_TIMEOUT),
                ),
                kad,
            })
        })
        .map_err(|e| NetError::Build(e.to_string()))?
        .with_swarm_config(|c| {
            // Streams are opened with the one protocol the opener wants and
            // its first message sent at once (multistream-select "lazy"),
            // instead of a round trip to agree on the protocol first: every
            // request-response call (a sync page, a registry message) is one
            // round trip, not two. A peer without the protocol refuses the
            // stream, and the request fails as it would have.
            c.with_idle_connection_timeout(Duration::from_secs(60))
                .with_substream_upgrade_protocol_override(libp2p::core::upgrade::Version::V1Lazy)
        })
        .build();
    Ok(swarm)
}

/// The gossipsub settings every member of the mesh shares (nodes and
/// routers): message ids are content hashes, and every message is validated
/// by the receiver before it is forwarded. Gossipsub itself signs nothing
/// (anonymous mode): every delta and every status carries its origin's
/// signature end to end, checked once per hop, so a publisher signature
/// would only add a second ed25519 check (and a signing) per message.
pub fn gossip_config() -> Result<gossipsub::Config, gossipsub::ConfigBuilderError> {
    gossipsub::ConfigBuilder::default()
        .heartbeat_interval(Duration::from_millis(500))
        .validation_mode(gossipsub::ValidationMode::Anonymous)
        .validate_messages()
        .max_transmit_size(MAX_DELTA_BYTES + 4096)
        .message_id_fn(|m: &gossipsub::Message| {
            use sha2::Digest;
            MessageId::from(sha2::Sha256::digest(&m.data)[..20].to_vec())
        })
        .build()
}

/// Gossipsub as every member of the mesh runs it: [`gossip_config`],
/// anonymous messages (deltas carry their own signatures), scored by
/// [`gossip_scoring`].
pub(crate) fn scored_gossipsub()
-> Result<gossipsub::Behaviour, Box<dyn std::error::Error + Send + Sync>> {
    let mut gossipsub =
        gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Anonymous, gossip_config()?)?;
    let (params, thresholds) = gossip_scoring();
    gossipsub.with_peer_score(params, thresholds)?;
    Ok(gossipsub)
}

/// Gossipsub's peer scoring, as every member of the mesh sets it. Two
/// inputs count: the application score, which the node sets from admission
/// (0 for an admitted peer, [`NOT_ADMITTED_SCORE`] until then), and invalid
/// messages (P4: every message the node rejects costs its sender, squared
/// and halved every second), so a peer that keeps sending what no honest
/// node sends (about nine such messages in a second) falls below the
/// graylist threshold, where gossipsub drops its messages unread. The
/// delivery-rate inputs (P1-P3) are off: a quiet mesh is not a fault, and
/// every node of a test mesh shares one address (so no IP colocation
/// penalty either).
pub fn gossip_scoring() -> (gossipsub::PeerScoreParams, gossipsub::PeerScoreThresholds) {
    let topic = gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.0,
        first_message_deliveries_weight: 0.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -1.0,
        invalid_message_deliveries_decay: 0.5,
        ..Default::default()
    };
    let topics = [DELTA_TOPIC, STATUS_TOPIC, ADMISSION_TOPIC]
        .into_iter()
        .map(|t| (IdentTopic::new(t).hash(), topic.clone()))
        .collect();
    let params = gossipsub::PeerScoreParams {
        topics,
        app_specific_weight: 1.0,
        ip_colocation_factor_weight: 0.0,
        ..Default::default()
    };
    (params, gossipsub::PeerScoreThresholds::default())
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
    /// The peers this node knows, connected ones first, then by peer id; at
    /// most [`MAX_LISTED_PEERS`]. For the mesh view (`GET /api/v0/mesh`).
    pub known: Vec<PeerSeen>,
    /// This node's last published status.
    pub me: Option<Arc<StatusBody>>,
    /// The other nodes known by their statuses, by peer id (`GET
    /// /api/v0/nodes`, `GET /api/v0/sync`).
    pub nodes: Arc<Vec<NodeSeen>>,
    /// The failure detector's thresholds, to tell a node's state from its
    /// heartbeat age.
    pub timeouts: Timeouts,
    /// Who may be a peer, as of the last refresh.
    pub admission: AdmissionStatus,
}

/// Another node as its latest verified status shows it.
#[derive(Debug, Clone)]
pub struct NodeSeen {
    pub status: Arc<Verified>,
    /// When the status arrived (local monotonic clock).
    pub received: Instant,
    /// Its clock minus this node's, ms (see `hearsay_topology::ClockOffsets`).
    pub clock_offset_ms: Option<i64>,
    /// A mesh link to it is up.
    pub neighbour: bool,
}

impl NodeSeen {
    pub fn heartbeat_age(&self) -> Duration {
        self.received.elapsed()
    }

    pub fn state(&self, timeouts: &Timeouts) -> State {
        timeouts.state(self.heartbeat_age().as_millis() as u64)
    }
}

/// What the actor has observed of one peer. Facts only: nothing here feeds
/// a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSeen {
    pub peer_id: PeerId,
    pub connected: bool,
    /// Round trip of the last answered ping on the current link.
    pub rtt: Option<Duration>,
    /// Revision (version vector sum) the peer sent in its last sync
    /// request: how far it had got then.
    pub revision: Option<u64>,
    /// The address of the current link first, then the listen addresses
    /// the peer announced (at most `MAX_ADDRS_PER_PEER`, 8, in all).
    pub addrs: Vec<Multiaddr>,
}

/// The bounded table behind [`NetStatus::known`].
#[derive(Debug, Default)]
struct PeerTable {
    peers: BTreeMap<PeerId, PeerSeen>,
}

impl PeerTable {
    /// The entry of `peer`, made if there is room (a disconnected entry is
    /// dropped to make room for a new one).
    fn entry(&mut self, peer: PeerId) -> Option<&mut PeerSeen> {
        if !self.peers.contains_key(&peer) && self.peers.len() >= MAX_PEER_TABLE {
            let stale = self
                .peers
                .iter()
                .find(|(_, p)| !p.connected)
                .map(|(id, _)| *id)?;
            self.peers.remove(&stale);
        }
        Some(self.peers.entry(peer).or_insert_with(|| PeerSeen {
            peer_id: peer,
            connected: false,
            rtt: None,
            revision: None,
            addrs: Vec::new(),
        }))
    }

    /// A peer known before any link (a join address).
    fn known(&mut self, peer: PeerId, addr: Multiaddr) {
        if let Some(p) = self.entry(peer) {
            add_addr(&mut p.addrs, addr);
        }
    }

    fn connected(&mut self, peer: PeerId, addr: Multiaddr) {
        if let Some(p) = self.entry(peer) {
            p.connected = true;
            p.addrs.retain(|a| *a != addr);
            p.addrs.insert(0, addr);
            p.addrs.truncate(MAX_ADDRS_PER_PEER);
        }
    }

    fn disconnected(&mut self, peer: PeerId) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.connected = false;
            p.rtt = None;
        }
    }

    fn announced(&mut self, peer: PeerId, addrs: &[Multiaddr]) {
        if let Some(p) = self.peers.get_mut(&peer) {
            for addr in addrs {
                add_addr(&mut p.addrs, addr.clone());
            }
        }
    }

    fn rtt(&mut self, peer: PeerId, rtt: Duration) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.rtt = Some(rtt);
        }
    }

    fn revision(&mut self, peer: PeerId, revision: u64) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.revision = Some(revision);
        }
    }

    /// Connected peers first, then by peer id; at most [`MAX_LISTED_PEERS`].
    fn listed(&self) -> Vec<PeerSeen> {
        let connected = self.peers.values().filter(|p| p.connected);
        let others = self.peers.values().filter(|p| !p.connected);
        connected
            .chain(others)
            .take(MAX_LISTED_PEERS)
            .cloned()
            .collect()
    }
}

fn add_addr(addrs: &mut Vec<Multiaddr>, addr: Multiaddr) {
    if addrs.len() < MAX_ADDRS_PER_PEER && !addrs.contains(&addr) {
        addrs.push(addr);
    }
}

/// Where the node announces its addresses once listening, and what its
/// statuses say of it.
#[derive(Debug, Clone)]
pub struct Announce {
    pub path: PathBuf,
    pub http: String,
    pub region: String,
    /// Base URL announced in statuses.
    pub public_url: String,
    pub geo: Option<Geo>,
    /// Added to the wall clock (testing: `clock_offset_ms`).
    pub clock_offset_ms: i64,
}

impl Announce {
    /// This node's wall clock, Unix ms (shifted by `clock_offset_ms`).
    pub fn wall_ms(&self) -> u64 {
        crate::core::now_ms().saturating_add_signed(self.clock_offset_ms)
    }
}

/// Everything the network actor needs.
#[allow(missing_debug_implementations)] // holds the swarm
pub struct NetParts<S> {
    pub swarm: Swarm<Behaviour>,
    pub join: Vec<Multiaddr>,
    pub listen: Vec<Multiaddr>,
    /// The machine's rules and timings.
    pub sync: hearsay_sync::Config,
    pub core: mpsc::Sender<PeerCommand>,
    pub core_events: mpsc::Receiver<CoreEvent>,
    pub core_status: watch::Receiver<CoreStatus>,
    pub store: S,
    pub metrics: Metrics,
    pub status: watch::Sender<NetStatus>,
    pub announce: Announce,
    /// The node's identity, to sign statuses with.
    pub identity: identity::Keypair,
    /// The topology machine's rules.
    pub topology: hearsay_topology::Config,
    /// Written here from statuses, read by the core.
    pub origins: Origins,
    /// The registry service's channels. `None`: the protocol is still
    /// served, but every inbound request is dropped (and counted).
    pub registry: Option<RegistryPort>,
    /// Who may be a peer.
    pub admission: AdmissionParts,
}

/// Work the actor waits for without blocking its loop.
enum Pending {
    /// The core's verdicts on a batch it was handed.
    Verdicts {
        batch: Batch<PeerId, MessageId>,
        verdicts: Option<Vec<Verdict>>,
        /// When the batch was handed to the core.
        sent: std::time::Instant,
    },
    /// A page read from the store for a peer.
    Served {
        request: RequestId,
        response: SyncResponse,
    },
    /// An event for the topology machine, deferred.
    TopologyEvent(hearsay_topology::Event<PeerId>),
    /// The registry service's answer to a peer's request (`None`: it
    /// dropped the request or did not answer in time).
    RegistryServed {
        channel: ResponseChannel<RegistryMessage>,
        body: Option<Vec<u8>>,
    },
    /// A registry request addressed to this node was answered (or
    /// abandoned).
    RegistryLocalDone,
    /// Background work that needs no follow-up.
    Done,
}

struct Net<S> {
    swarm: Swarm<Behaviour>,
    topic: IdentTopic,
    machine: SyncMachine<PeerId, MessageId>,
    /// The machine's clock: milliseconds since the actor started.
    epoch: Instant,
    timer: Pin<Box<Sleep>>,
    /// Join peers' addresses, dialled by peer id.
    join: BTreeMap<PeerId, Multiaddr>,
    /// Listen addresses peers announced (identify, kad), for redials.
    addresses: HashMap<PeerId, Vec<Multiaddr>>,
    /// What the API lists about peers (links, RTTs, revisions).
    seen: PeerTable,
    /// Per origin, the highest seq any peer said it holds (the merge of
    /// the version vectors in the sync requests received): deltas known to
    /// exist. Against the durable vector this gives `hearsay_lag_deltas`.
    /// At most [`MAX_KNOWN_ORIGINS`] origins (else restarted from the last
    /// request), so peers cannot grow it without bound.
    known: VersionVector,
    /// Response channels of the sync requests being answered.
    requests: HashMap<RequestId, ResponseChannel<SyncResponse>>,
    next_request: u64,
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
    /// Events produced while carrying out commands, fed before the next
    /// swarm event (a full core queue, for instance).
    inbox: VecDeque<Event<PeerId, MessageId>>,
    status_topic: IdentTopic,
    identity: identity::Keypair,
    started: Instant,
    /// The mesh machine, on the same clock as the sync machine.
    topology: Topology<PeerId>,
    topology_timer: Pin<Box<Sleep>>,
    /// Latest verified status of each node in the topology's table.
    nodes: BTreeMap<PeerId, NodeSeen>,
    /// `nodes` changed since it was last published to the API.
    nodes_dirty: bool,
    offsets: hearsay_topology::ClockOffsets<PeerId>,
    origins: Origins,
    /// Connected peers subscribed to the delta topic: mesh neighbours.
    members: BTreeSet<PeerId>,
    /// Connected peers without the sync protocol (routers).
    light: BTreeSet<PeerId>,
    /// Readings of the HTTP response totals, one per status publication.
    responses: VecDeque<ResponseReading>,
    /// Regions whose lag gauge was set, so a region that caught up is set
    /// back to 0.
    lag_regions: BTreeSet<&'static str>,
    /// Messages from the registry service to send (`None`: no service, or
    /// it stopped).
    registry_out: Option<mpsc::Receiver<RegistryOutbound>>,
    /// Requests from peers for the registry service.
    registry_in: Option<mpsc::Sender<RegistryInbound>>,
    /// Reply channels of the registry requests sent, until the response or
    /// the failure.
    registry_calls: RegistryCalls<OutboundRequestId>,
    /// Admission: who may be a peer, per-peer budgets.
    gate: admission::Gate,
    operator: Option<hearsay_admission::OperatorId>,
}

/// Where the answer to a registry request goes.
type RegistryReply = oneshot::Sender<Result<Vec<u8>, String>>;

/// The registry requests in flight: reply channels of those sent, by
/// request id, and a count of those addressed to this node. At most
/// [`MAX_REGISTRY_IN_FLIGHT`] in all.
#[derive(Debug)]
struct RegistryCalls<K> {
    replies: HashMap<K, RegistryReply>,
    local: usize,
}

impl<K: std::hash::Hash + Eq> RegistryCalls<K> {
    fn new() -> Self {
        RegistryCalls {
            replies: HashMap::new(),
            local: 0,
        }
    }

    fn len(&self) -> usize {
        self.replies.len() + self.local
    }

    /// Whether one more request may be taken. When full, the requests whose
    /// callers gave up (dropped their receiver) give their place back; a
    /// late response to one of them is discarded.
    fn has_room(&mut self) -> bool {
        if self.len() >= MAX_REGISTRY_IN_FLIGHT {
            self.replies.retain(|_, reply| !reply.is_closed());
        }
        self.len() < MAX_REGISTRY_IN_FLIGHT
    }

    fn sent(&mut self, id: K, reply: RegistryReply) {
        self.replies.insert(id, reply);
    }

    /// Answers request `id`, if its caller is still known.
    fn answer(&mut self, id: &K, result: Result<Vec<u8>, String>) {
        if let Some(reply) = self.replies.remove(id) {
            // The caller may have gone since.
            let _ = reply.send(result);
        }
    }
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
    let status_topic = IdentTopic::new(STATUS_TOPIC);
    let admission_topic = IdentTopic::new(ADMISSION_TOPIC);
    for t in [&topic, &status_topic, &admission_topic] {
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(t)
            .map_err(|e| NetError::Build(e.to_string()))?;
    }
    let join: BTreeMap<PeerId, Multiaddr> = parts
        .join
        .into_iter()
        .filter_map(|addr| match addr.iter().last() {
            Some(Protocol::P2p(peer)) => Some((peer, addr)),
            _ => None,
        })
        .collect();
    let p2p_metrics = parts.metrics.with_registry(libp2p::metrics::Metrics::new);
    let mut machine = SyncMachine::new(
        parts.sync,
        rand::random(),
        join.keys().copied().collect(),
        0,
    );
    let durable = parts.core_status.borrow().version_vector.clone();
    machine.handle(0, Event::Durable(durable));
    let epoch = Instant::now();
    let mut seen = PeerTable::default();
    for (peer, addr) in &join {
        seen.known(*peer, addr.clone());
    }
    let local = *swarm.local_peer_id();
    let max_nodes = parts.topology.max_peers;
    let topology = Topology::new(local, parts.announce.geo, parts.topology, rand::random());
    let (registry_out, registry_in) = match parts.registry {
        Some(port) => (Some(port.outbound), Some(port.inbound)),
        None => (None, None),
    };
    let operator = parts.admission.config.operator;
    let me = status::node_id(swarm.local_peer_id())
        .ok_or_else(|| NetError::Build("the node key is not an ed25519 key".to_owned()))?;
    let (gate, stored_revocations) = admission::Gate::new(parts.admission, me, &parts.store);
    let mut net = Net {
        gate,
        operator,
        registry_out,
        registry_in,
        registry_calls: RegistryCalls::new(),
        status_topic,
        identity: parts.identity,
        started: Instant::now(),
        topology,
        topology_timer: Box::pin(tokio::time::sleep_until(epoch + Duration::from_secs(3600))),
        nodes: BTreeMap::new(),
        nodes_dirty: false,
        offsets: hearsay_topology::ClockOffsets::new(max_nodes),
        origins: parts.origins,
        members: BTreeSet::new(),
        light: BTreeSet::new(),
        responses: VecDeque::new(),
        lag_regions: BTreeSet::new(),
        swarm,
        topic,
        machine,
        epoch,
        timer: Box::pin(tokio::time::sleep_until(epoch)),
        join,
        addresses: HashMap::new(),
        seen,
        known: VersionVector::default(),
        requests: HashMap::new(),
        next_request: 0,
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
        inbox: VecDeque::new(),
    };
    net.admission_start(stored_revocations);
    let mut status_tick = tokio::time::interval(STATUS_EVERY);
    status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heartbeat = tokio::time::interval(STATUS_PUBLISH_EVERY);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => break,
            Ok(()) = net.core_status.changed() => {
                let durable = net.core_status.borrow_and_update().version_vector.clone();
                net.feed(Event::Durable(durable));
            }
            Some(event) = net.core_events.recv() => net.on_core_event(event),
            Some(done) = net.pending.next(), if !net.pending.is_empty() => net.on_pending(done),
            // Polled only while a registry service is attached.
            Some(out) = OptionFuture::from(net.registry_out.as_mut().map(|rx| rx.recv())),
                if net.registry_out.is_some() =>
            {
                match out {
                    Some(out) => net.on_registry_outbound(out),
                    // The service stopped sending: stop polling.
                    None => net.registry_out = None,
                }
            }
            event = net.swarm.select_next_some() => net.on_swarm_event(event),
            () = &mut net.timer => {
                // Disarm until the machine asks again.
                net.timer.as_mut().reset(Instant::now() + Duration::from_secs(3600));
                net.feed(Event::Tick);
            }
            () = &mut net.gate.timer => {
                net.gate.timer.as_mut().reset(Instant::now() + Duration::from_secs(3600));
                net.gate_feed(hearsay_admission::Event::Tick);
            }
            Some(request) = net.gate.admin.recv() => net.on_admin(request),
            () = &mut net.topology_timer => {
                net.topology_timer.as_mut().reset(Instant::now() + Duration::from_secs(3600));
                net.feed_topology(hearsay_topology::Event::Tick);
            }
            _ = status_tick.tick() => net.publish_status(),
            _ = heartbeat.tick() => net.publish_heartbeat(),
        }
    }
    tracing::info!("network stopped");
    Ok(())
}

fn gossip_acceptance(a: Acceptance) -> MessageAcceptance {
    match a {
        Acceptance::Accept => MessageAcceptance::Accept,
        Acceptance::Ignore => MessageAcceptance::Ignore,
        Acceptance::Reject => MessageAcceptance::Reject,
    }
}

fn empty_page() -> SyncResponse {
    SyncResponse {
        deltas: Vec::new(),
        more: false,
    }
}

impl<S: Store> Net<S> {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Feeds one event, and any the commands give rise to, to the machine.
    fn feed(&mut self, event: Event<PeerId, MessageId>) {
        self.inbox.push_back(event);
        while let Some(event) = self.inbox.pop_front() {
            let now = self.now();
            for command in self.machine.handle(now, event) {
                self.execute(command);
            }
        }
    }

    fn execute(&mut self, command: Command<PeerId, MessageId>) {
        match command {
            Command::SendSyncRequest { to, have } => {
                self.metrics.sync_rounds.inc();
                self.swarm.behaviour_mut().sync.send_request(
                    &to,
                    SyncRequest {
                        version_vector: have.to_bytes(),
                    },
                );
            }
            Command::ServePage {
                request,
                theirs,
                up_to,
                bounds,
                ..
            } => {
                let store = self.store.clone();
                self.pending.push(
                    async move {
                        let read = tokio::task::spawn_blocking(move || {
                            read_page(&store, &theirs, &up_to, bounds.max_deltas, bounds.max_bytes)
                        })
                        .await;
                        let response = match read {
                            Ok(Ok((deltas, more))) => SyncResponse {
                                deltas: deltas.into_iter().map(ByteBuf::from).collect(),
                                more,
                            },
                            Ok(Err(e)) => {
                                tracing::error!(error = %e, "reading a sync page");
                                empty_page()
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "sync page task");
                                empty_page()
                            }
                        };
                        Pending::Served { request, response }
                    }
                    .boxed(),
                );
            }
            Command::RespondEmpty { request, to, why } => {
                match why {
                    Empty::UpToDate => {}
                    Empty::Busy => {
                        self.metrics.overload_rejections.inc();
                    }
                    Empty::Malformed => {
                        tracing::debug!(peer = %to, "undecodable sync request");
                        self.metrics
                            .reject(hearsay_crdt::ErrorKind::Malformed, Source::Sync);
                    }
                }
                self.respond(request, empty_page());
            }
            Command::Deliver { batch, deltas } => self.deliver(batch, deltas),
            Command::ReportGossip {
                id,
                from,
                acceptance,
            } => {
                self.judge(&id, from, gossip_acceptance(acceptance));
            }
            Command::Dial { peer } => self.dial(peer),
            Command::Disconnect { peer } => {
                tracing::info!(%peer, "link stopped answering pings; closing it");
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::Bootstrap => {
                if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
                    let _ = kad.bootstrap();
                }
            }
            Command::ArmTimer { at } => {
                let when = self.epoch + Duration::from_millis(at);
                self.timer.as_mut().reset(when);
            }
        }
    }

    fn respond(&mut self, request: RequestId, response: SyncResponse) {
        if let Some(channel) = self.requests.remove(&request) {
            self.metrics
                .sync_deltas_served
                .inc_by(response.deltas.len() as u64);
            // Fails only when the requester has gone.
            let _ = self
                .swarm
                .behaviour_mut()
                .sync
                .send_response(channel, response);
        }
    }

    /// Dials `peer` at its join address or the addresses it announced. A
    /// dial pending into a dead network does not stop a fresh one: the
    /// fresh one connects as soon as the network returns.
    fn dial(&mut self, peer: PeerId) {
        let addresses = match self.join.get(&peer) {
            Some(addr) => vec![addr.clone()],
            None => self.addresses.get(&peer).cloned().unwrap_or_default(),
        };
        let opts = DialOpts::peer_id(peer)
            .condition(PeerCondition::Disconnected)
            .addresses(addresses)
            .build();
        tracing::debug!(%peer, "dialling");
        if let Err(e) = self.swarm.dial(opts) {
            tracing::debug!(%peer, error = %e, "dial");
            self.inbox.push_back(Event::DialFailed { peer });
        }
    }

    /// Hands deltas to the core on its peer queue, without waiting.
    fn deliver(&mut self, batch: Batch<PeerId, MessageId>, deltas: Vec<Delta>) {
        let source = match batch {
            Batch::Gossip { .. } => Source::Gossip,
            Batch::Page { .. } => Source::Sync,
        };
        let (reply, rx) = oneshot::channel();
        let sent = std::time::Instant::now();
        match self.core.try_send(PeerCommand::Remote {
            deltas,
            source,
            // Checked on arrival: `on_gossip`, `on_sync_response`.
            signatures: Signatures::Checked,
            reply,
        }) {
            Ok(()) => self.pending.push(
                async move {
                    Pending::Verdicts {
                        batch,
                        verdicts: rx.await.ok(),
                        sent,
                    }
                }
                .boxed(),
            ),
            Err(_) => {
                self.metrics.overload_rejections.inc();
                self.inbox.push_back(Event::CoreBusy { batch });
            }
        }
    }

    fn on_core_event(&mut self, event: CoreEvent) {
        match event {
            CoreEvent::Publish(deltas) => {
                let began = std::time::Instant::now();
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
                self.metrics.timed(Stage::Publish, began);
            }
            CoreEvent::Equivocation(proof) => self.on_core_proof(proof),
        }
    }

    fn on_pending(&mut self, done: Pending) {
        match done {
            Pending::Verdicts {
                batch,
                verdicts: Some(verdicts),
                sent,
            } => {
                if matches!(batch, Batch::Gossip { .. }) {
                    self.metrics.timed(Stage::Deliver, sent);
                }
                // A forged copy of a held delta is found only by the core.
                if verdicts.iter().any(|v| v.blames_sender()) {
                    let from = match &batch {
                        Batch::Gossip { from, .. } | Batch::Page { from } => *from,
                    };
                    self.misbehaved(from, "a delta no honest node sends");
                }
                // The core publishes its durable vector before it answers:
                // hand it over first, so a next page is asked for with it.
                if self.core_status.has_changed().unwrap_or(false) {
                    let durable = self.core_status.borrow_and_update().version_vector.clone();
                    self.feed(Event::Durable(durable));
                }
                self.feed(Event::Verdicts { batch, verdicts });
            }
            // The core is stopping.
            Pending::Verdicts { verdicts: None, .. } => {}
            Pending::Served { request, response } => {
                self.respond(request, response);
                self.feed(Event::Served { request });
            }
            Pending::TopologyEvent(event) => self.feed_topology(event),
            Pending::RegistryServed { channel, body } => match body {
                Some(body) if body.len() <= REGISTRY_MESSAGE_MAX => {
                    // Fails only when the requester has gone.
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .registry
                        .send_response(channel, RegistryMessage(body));
                }
                // Dropping the channel fails the request at the requester.
                Some(_) => self.registry_dropped(None, "answer_too_large"),
                None => self.registry_dropped(None, "unanswered"),
            },
            Pending::RegistryLocalDone => self.registry_calls.local -= 1,
            Pending::Done => {}
        }
    }

    /// A message from the registry service: sent to its peer, or handed
    /// back to the service itself when addressed to this node.
    fn on_registry_outbound(&mut self, out: RegistryOutbound) {
        let RegistryOutbound { peer, body, reply } = out;
        if reply.is_closed() {
            return; // The caller gave up already.
        }
        if body.len() > REGISTRY_MESSAGE_MAX {
            let _ = reply.send(Err(format!(
                "registry message of {} bytes is over the {REGISTRY_MESSAGE_MAX}-byte limit",
                body.len()
            )));
            return;
        }
        if !self.registry_calls.has_room() {
            self.registry_dropped(Some(peer), "too_many_in_flight");
            let _ = reply.send(Err("too many registry requests in flight".into()));
            return;
        }
        if peer == *self.swarm.local_peer_id() {
            self.registry_local_call(body, reply);
            return;
        }
        let addresses = self.registry_addresses(&peer);
        let id = self
            .swarm
            .behaviour_mut()
            .registry
            .send_request_with_addresses(&peer, RegistryMessage(body), addresses);
        self.registry_calls.sent(id, reply);
    }

    /// Addresses to dial `peer` at for a registry request, if it is not
    /// connected: its join address, then the ones it announced. libp2p adds
    /// those its behaviours know (kad, identify, `Swarm::add_peer_address`).
    fn registry_addresses(&self, peer: &PeerId) -> Vec<Multiaddr> {
        let mut addresses: Vec<Multiaddr> = self.join.get(peer).cloned().into_iter().collect();
        for addr in self.addresses.get(peer).into_iter().flatten() {
            if !addresses.contains(addr) {
                addresses.push(addr.clone());
            }
        }
        addresses
    }

    /// A registry request addressed to this node: put on the inbound queue
    /// as if a peer had sent it (the service need not tell local calls
    /// apart), its answer forwarded to `reply`.
    fn registry_local_call(&mut self, body: Vec<u8>, mut reply: RegistryReply) {
        let peer = *self.swarm.local_peer_id();
        let (answer, rx) = oneshot::channel();
        let request = RegistryInbound {
            peer,
            body,
            reply: answer,
        };
        if let Err(why) = self.registry_hand_over(request) {
            let _ = reply.send(Err(why.into()));
            return;
        }
        self.registry_calls.local += 1;
        self.pending.push(
            async move {
                let answered = tokio::select! {
                    r = tokio::time::timeout(REGISTRY_REQUEST_TIMEOUT, rx) => Some(r),
                    () = reply.closed() => None,
                };
                let result = match answered {
                    None => return Pending::RegistryLocalDone,
                    Some(Ok(Ok(body))) if body.len() <= REGISTRY_MESSAGE_MAX => Ok(body),
                    Some(Ok(Ok(_))) => Err("registry answer over the size limit".into()),
                    Some(Ok(Err(_))) => Err("the registry dropped the request".into()),
                    Some(Err(_)) => Err("Timeout while waiting for a response".into()),
                };
                let _ = reply.send(result);
                Pending::RegistryLocalDone
            }
            .boxed(),
        );
    }

    /// A registry request from a peer: handed to the service without
    /// waiting; its answer comes back as [`Pending::RegistryServed`].
    /// Without a service, or with its queue full or closed, the channel is
    /// dropped (the requester sees a failure).
    fn on_registry_request(
        &mut self,
        peer: PeerId,
        body: Vec<u8>,
        channel: ResponseChannel<RegistryMessage>,
    ) {
        let (reply, rx) = oneshot::channel();
        if self
            .registry_hand_over(RegistryInbound { peer, body, reply })
            .is_err()
        {
            return;
        }
        self.pending.push(
            async move {
                let body = tokio::time::timeout(REGISTRY_REQUEST_TIMEOUT, rx)
                    .await
                    .ok()
                    .and_then(Result::ok);
                Pending::RegistryServed { channel, body }
            }
            .boxed(),
        );
    }

    /// Puts a request on the registry service's queue, never waiting;
    /// counts and explains a refusal.
    fn registry_hand_over(&mut self, request: RegistryInbound) -> Result<(), &'static str> {
        let peer = request.peer;
        let Some(queue) = &self.registry_in else {
            self.registry_dropped(Some(peer), "no_service");
            return Err("no registry service");
        };
        match queue.try_send(request) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.registry_dropped(Some(peer), "busy");
                Err("the registry is busy")
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.registry_in = None;
                self.registry_dropped(Some(peer), "closed");
                Err("the registry has stopped")
            }
        }
    }

    /// Counts a registry message dropped or refused here. A full inbound
    /// queue counts as an overload refusal (like a busy sync server); the
    /// other reasons are only logged.
    fn registry_dropped(&self, peer: Option<PeerId>, reason: &'static str) {
        tracing::debug!(peer = ?peer, reason, "registry message dropped");
        if reason == "busy" {
            self.metrics.overload_rejections.inc();
        }
    }

    /// Merges a peer's version vector into [`Net::known`].
    fn know(&mut self, theirs: &VersionVector) {
        self.known.merge(theirs);
        if self.known.len() > MAX_KNOWN_ORIGINS {
            self.known = theirs.clone();
        }
    }

    fn publish_status(&mut self) {
        let admitted = self.admitted_peers();
        self.close_graylisted(admitted);
        self.unblock_expired();
        let peers = self.swarm.connected_peers().count();
        self.metrics.peers_connected.set(peers as i64);
        // Lag: deltas some peer holds (by its last sync request or status)
        // that this node has not made durable, by the origin's region.
        let origins = &self.origins;
        let lag = crate::metrics::lacking_by_region(
            &self.known,
            &self.core_status.borrow().version_vector,
            |o| origins.region(o),
        );
        for region in &self.lag_regions {
            if !lag.contains_key(region) {
                self.metrics.lag(region, 0);
            }
        }
        for (region, deltas) in &lag {
            self.metrics.lag(region, *deltas);
            self.lag_regions.insert(region);
        }
        let known = self.seen.listed();
        let nodes = std::mem::take(&mut self.nodes_dirty)
            .then(|| Arc::new(self.nodes.values().cloned().collect::<Vec<_>>()));
        let timeouts = *self.topology.table().timeouts();
        let admission = self.admission_status();
        self.status.send_if_modified(|s| {
            let changed = s.peers != peers
                || s.listen_addrs != self.listen_addrs
                || s.known != known
                || nodes.is_some()
                || s.admission != admission;
            s.peers = peers;
            s.admission = admission;
            s.listen_addrs.clone_from(&self.listen_addrs);
            s.known = known;
            s.timeouts = timeouts;
            if let Some(nodes) = nodes {
                s.nodes = nodes;
            }
            changed
        });
    }

    /// Feeds the topology machine and carries out its commands.
    fn feed_topology(&mut self, event: hearsay_topology::Event<PeerId>) {
        let now = self.now();
        for command in self.topology.handle(now, event) {
            match command {
                hearsay_topology::Command::Dial { peer, .. } => {
                    tracing::debug!(%peer, "topology dials");
                    let addresses = self.addresses.get(&peer).cloned().unwrap_or_default();
                    let opts = DialOpts::peer_id(peer)
                        .condition(PeerCondition::Disconnected)
                        .addresses(addresses)
                        .build();
                    if let Err(e) = self.swarm.dial(opts) {
                        tracing::debug!(%peer, error = %e, "topology dial");
                        // Reported at the next event (not re-entrantly).
                        self.pending.push(
                            async move {
                                Pending::TopologyEvent(hearsay_topology::Event::DialFailed { peer })
                            }
                            .boxed(),
                        );
                    }
                }
                hearsay_topology::Command::ArmTimer { at } => {
                    let when = self.epoch + Duration::from_millis(at);
                    self.topology_timer.as_mut().reset(when);
                }
                hearsay_topology::Command::StateChanged { peer, state } => {
                    tracing::info!(%peer, ?state, "node state");
                    self.nodes_dirty = true;
                }
            }
        }
        // The table forgets nodes silent for long: so do the views of them.
        let table = self.topology.table();
        let before = self.nodes.len();
        self.nodes.retain(|p, _| table.get(p).is_some());
        if self.nodes.len() != before {
            let nodes = &self.nodes;
            self.origins
                .retain(|o| nodes.keys().any(|p| status::node_id(p).as_ref() == Some(o)));
            self.nodes_dirty = true;
        }
    }

    /// Signs and publishes this node's status, and counts nodes by state.
    fn publish_heartbeat(&mut self) {
        let core = self.core_status.borrow().clone();
        let (revision, revision_hash, version_vector) =
            status::revision_fields(&core.version_vector);
        let reading = self.metrics.responses.read();
        let (mean_response_ms, error_rate) = self
            .responses
            .front()
            .map_or((0.0, 0.0), |earlier| reading.since(earlier));
        if self.responses.len() == RESPONSE_WINDOW {
            self.responses.pop_front();
        }
        self.responses.push_back(reading);
        let body = StatusBody {
            peer_id: self.swarm.local_peer_id().to_string(),
            http: self.announce.public_url.clone(),
            region: self.announce.region.clone(),
            geo: self.announce.geo,
            listen_addrs: self
                .listen_addrs
                .iter()
                .take(status::MAX_LISTEN_ADDRS)
                .map(|a| a.to_string())
                .collect(),
            revision,
            revision_hash,
            version_vector,
            mean_response_ms,
            error_rate,
            replication_delay_p50_ms: core.delay_p50_ms.unwrap_or(0) as f64,
            replication_delay_p99_ms: core.delay_p99_ms.unwrap_or(0) as f64,
            neighbours: self
                .members
                .iter()
                .take(hearsay_topology::MAX_NEIGHBOURS)
                .map(|p| p.to_string())
                .collect(),
            uptime_s: self.started.elapsed().as_secs(),
            timestamp_ms: self.announce.wall_ms(),
            certificate: self.gate.machine.own_certificate().map(|c| c.to_text()),
        };
        let bytes = status::encode(&self.identity, &body);
        if let Err(e) = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(self.status_topic.clone(), bytes)
        {
            // No subscribed peer yet: the next heartbeat tries again.
            tracing::trace!(error = %e, "publishing the status");
        }
        let me = Arc::new(body);
        self.status.send_modify(|s| s.me = Some(me));
        let now = self.now();
        let mut counts = [0i64; 3];
        for e in self.topology.table().iter() {
            let i = match self.topology.table().state(&e.status.peer, now) {
                Some(State::Alive) => 0,
                Some(State::Suspect) => 1,
                _ => 2,
            };
            counts[i] += 1;
        }
        for (state, n) in ["alive", "suspect", "down"].into_iter().zip(counts) {
            self.metrics
                .nodes
                .get_or_create(&crate::metrics::StateLabels { state })
                .set(n);
        }
        // Ages move even when no status arrives.
        self.nodes_dirty |= !self.nodes.is_empty();
    }

    /// A status from gossip: verify, learn, feed the topology.
    fn on_status(&mut self, from: PeerId, id: MessageId, author: Option<PeerId>, data: &[u8]) {
        let verdict = status::verify(author.as_ref(), data);
        // In a closed mesh a status speaks for an admitted node only; it
        // carries the node's certificate, learnt here for origin checks.
        let mut refused_origin = false;
        if let Ok(v) = &verdict
            && !self.gate.machine.is_open()
            && v.peer != *self.swarm.local_peer_id()
        {
            if let Some(text) = &v.body.certificate {
                self.learn_certificate(text);
            }
            refused_origin = status::node_id(&v.peer).is_none_or(|node| {
                self.gate
                    .machine
                    .origin_allowed(self.announce.wall_ms(), &node)
                    .is_err()
            });
        }
        if refused_origin {
            self.judge(&id, from, MessageAcceptance::Ignore);
            self.metrics
                .statuses_rejected
                .get_or_create(&crate::metrics::ReasonLabels {
                    reason: "not_admitted",
                })
                .inc();
            return;
        }
        let acceptance = match &verdict {
            Ok(v) if self.is_stale(v) => MessageAcceptance::Ignore,
            Ok(_) => MessageAcceptance::Accept,
            Err(_) => MessageAcceptance::Reject,
        };
        self.judge(&id, from, acceptance);
        let v = match verdict {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(%from, error = %e, "status refused");
                self.metrics
                    .statuses_rejected
                    .get_or_create(&crate::metrics::ReasonLabels { reason: e.reason() })
                    .inc();
                return;
            }
        };
        if !matches!(acceptance, MessageAcceptance::Accept) || v.peer == *self.swarm.local_peer_id()
        {
            return;
        }
        self.metrics.statuses_received.inc();
        let peer = v.peer;
        self.offsets
            .sample(peer, v.body.timestamp_ms, self.announce.wall_ms());
        let clock_offset_ms = self.offsets.offset(&peer);
        if let (Some(origin), Some(offset_ms)) = (status::node_id(&peer), clock_offset_ms) {
            self.origins.set(
                origin,
                OriginInfo {
                    region: crate::metrics::region_label(&v.body.region),
                    offset_ms,
                },
            );
        }
        self.learn_addresses(peer, v.listen_addrs.iter().cloned());
        if let Some(vv) = &v.version_vector {
            self.know(vv);
        }
        let topology_status = v.status.clone();
        self.nodes.insert(
            peer,
            NodeSeen {
                status: Arc::new(v),
                received: Instant::now(),
                clock_offset_ms,
                neighbour: self.members.contains(&peer),
            },
        );
        self.nodes_dirty = true;
        self.feed_topology(hearsay_topology::Event::Status {
            from,
            status: topology_status,
        });
    }

    /// A status no newer than the one held (relayed again, or replayed).
    fn is_stale(&self, v: &Verified) -> bool {
        self.nodes
            .get(&v.peer)
            .is_some_and(|n| n.status.body.timestamp_ms >= v.body.timestamp_ms)
    }

    /// A peer subscribed to the delta topic: a mesh neighbour.
    fn member_up(&mut self, peer: PeerId) {
        if self.light.contains(&peer) || !self.members.insert(peer) {
            return;
        }
        if let Some(n) = self.nodes.get_mut(&peer) {
            n.neighbour = true;
        }
        self.feed_topology(hearsay_topology::Event::Connected { peer });
    }

    fn member_down(&mut self, peer: PeerId) {
        if self.members.remove(&peer) {
            if let Some(n) = self.nodes.get_mut(&peer) {
                n.neighbour = false;
            }
            self.feed_topology(hearsay_topology::Event::Disconnected { peer });
        }
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

    /// Remembers announced addresses of `peer` for redials (bounded).
    fn learn_addresses(&mut self, peer: PeerId, addrs: impl IntoIterator<Item = Multiaddr>) {
        if !self.addresses.contains_key(&peer) && self.addresses.len() >= MAX_ADDRESS_BOOK {
            return;
        }
        let known = self.addresses.entry(peer).or_default();
        for addr in addrs {
            if known.len() >= MAX_ADDRS_PER_PEER {
                break;
            }
            if !known.contains(&addr) {
                known.push(addr);
            }
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
                if endpoint.is_dialer()
                    && let Some(kad) = self.swarm.behaviour_mut().kad.as_mut()
                {
                    kad.add_address(&peer_id, endpoint.get_remote_address().clone());
                }
                if num_established.get() == 1 {
                    tracing::info!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connected");
                    self.seen
                        .connected(peer_id, endpoint.get_remote_address().clone());
                    // A mesh member (sync, topology) once admitted.
                    self.admission_connected(peer_id, endpoint.is_dialer());
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
                    self.seen.disconnected(peer_id);
                    self.admission_closed(peer_id);
                }
                self.publish_status();
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } => {
                tracing::debug!(%peer, %error, "dial failed");
                self.feed(Event::DialFailed { peer });
                self.feed_topology(hearsay_topology::Event::DialFailed { peer });
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
                    } => {
                        let kind = if message.topic == self.status_topic.hash() {
                            MessageKind::Status
                        } else if message.topic == self.gate.topic.hash() {
                            MessageKind::Admission
                        } else {
                            MessageKind::Gossip
                        };
                        // Charged to the peer first: over its budgets, or
                        // not admitted, the message is dropped unread.
                        if !self.admit_message(&propagation_source, kind, message.data.len()) {
                            self.judge(&message_id, propagation_source, MessageAcceptance::Ignore);
                            return;
                        }
                        match kind {
                            MessageKind::Status => self.on_status(
                                propagation_source,
                                message_id,
                                message.source,
                                &message.data,
                            ),
                            MessageKind::Admission => {
                                self.on_notice(propagation_source, message_id, &message.data)
                            }
                            _ => self.on_gossip(propagation_source, message_id, &message.data),
                        }
                    }
                    gossipsub::Event::Subscribed { peer_id, topic }
                        if topic == self.topic.hash() =>
                    {
                        self.admission_subscribed(peer_id);
                    }
                    _ => {}
                }
            }
            BehaviourEvent::Sync(request_response::Event::Message { peer, message, .. }) => {
                match message {
                    request_response::Message::Request {
                        request, channel, ..
                    } => {
                        // Not admitted or over its budget: the channel is
                        // dropped, and the requester sees a failure.
                        if !self.is_up(&peer)
                            || !self.admit_message(
                                &peer,
                                MessageKind::SyncRequest,
                                request.version_vector.len(),
                            )
                        {
                            return;
                        }
                        let id = RequestId(self.next_request);
                        self.next_request += 1;
                        self.requests.insert(id, channel);
                        let theirs = VersionVector::from_bytes(&request.version_vector).ok();
                        if let Some(vv) = &theirs {
                            self.seen.revision(peer, vv.sum());
                            self.know(vv);
                        }
                        self.feed(Event::SyncRequest {
                            from: peer,
                            request: id,
                            theirs,
                        });
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
                self.feed(Event::RequestFailed { peer });
            }
            BehaviourEvent::Sync(_) => {}
            BehaviourEvent::Registry(request_response::Event::Message {
                peer, message, ..
            }) => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    if self.is_up(&peer)
                        && self.admit_message(&peer, MessageKind::Registry, request.0.len())
                    {
                        self.on_registry_request(peer, request.0, channel)
                    }
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => self.registry_calls.answer(&request_id, Ok(response.0)),
            },
            BehaviourEvent::Registry(request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            }) => {
                tracing::debug!(%peer, %error, "registry request failed");
                self.registry_calls
                    .answer(&request_id, Err(error.to_string()));
            }
            BehaviourEvent::Registry(request_response::Event::InboundFailure {
                peer,
                error,
                ..
            }) => {
                tracing::debug!(%peer, %error, "registry request not answered");
            }
            BehaviourEvent::Registry(_) => {}
            BehaviourEvent::Admission(event) => self.on_admission_event(event),
            BehaviourEvent::Identify(event) => {
                self.p2p_metrics.record(&event);
                if let identify::Event::Received { peer_id, info, .. } = event {
                    if !info.protocols.contains(&SYNC_PROTOCOL)
                        && self.swarm.is_connected(&peer_id)
                        && self.light.insert(peer_id)
                    {
                        // A light member (a router): not a sync partner,
                        // not a neighbour.
                        tracing::info!(peer = %peer_id, agent = %info.agent_version, "light member");
                        self.feed(Event::PeerDown { peer: peer_id });
                        self.member_down(peer_id);
                        return;
                    }
                    let addrs: Vec<Multiaddr> = info
                        .listen_addrs
                        .into_iter()
                        .take(MAX_ADDRS_PER_PEER)
                        .collect();
                    self.seen.announced(peer_id, &addrs);
                    if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
                        for addr in &addrs {
                            kad.add_address(&peer_id, addr.clone());
                        }
                    }
                    self.learn_addresses(peer_id, addrs);
                }
            }
            BehaviourEvent::Kad(event) => {
                self.p2p_metrics.record(&event);
                if let kad::Event::RoutingUpdated {
                    peer, addresses, ..
                } = event
                {
                    self.learn_addresses(peer, addresses.into_vec());
                    self.feed(Event::Discovered { peer });
                }
            }
            BehaviourEvent::Ping(event) => {
                self.p2p_metrics.record(&event);
                let peer = event.peer;
                if self.light.contains(&peer) {
                    return;
                }
                match event.result {
                    Ok(rtt) => {
                        self.seen.rtt(peer, rtt);
                        self.feed(Event::PingOk { peer });
                    }
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "ping failed");
                        self.feed(Event::PingFailed { peer });
                    }
                }
            }
            BehaviourEvent::Limits(v) => match v {},
            BehaviourEvent::Blocked(v) => match v {},
        }
    }

    /// A delta from gossip: decoded and its signature checked here, so the
    /// sync machine can forward it before the core applies it.
    fn on_gossip(&mut self, from: PeerId, id: MessageId, data: &[u8]) {
        match Delta::decode_verified(data) {
            // A relay may not know yet that an origin was revoked: its
            // delta is ignored, not blamed on the relay.
            Ok(delta) if !self.origin_ok(&delta) => {
                self.judge(&id, from, MessageAcceptance::Ignore);
            }
            Ok(delta) => self.feed(Event::Gossip { from, id, delta }),
            Err(e) => {
                tracing::debug!(%from, error = %e, "gossip refused");
                self.metrics.reject(e.kind(), Source::Gossip);
                self.feed(Event::GossipMalformed { from, id });
            }
        }
    }

    fn on_sync_response(&mut self, from: PeerId, response: SyncResponse) {
        if !self.is_up(&from) {
            return;
        }
        let more = response.more;
        let mut deltas = Vec::with_capacity(response.deltas.len().min(SYNC_PAGE_DELTAS));
        let mut forged = false;
        // Signatures are checked here, off the core's thread (which then
        // skips the check), so a large page is verified while the core
        // applies the previous one. A page is held to the same rules as
        // pushed deltas: forged or altered ones are refused and cost the
        // sender, those of a refused origin are left out.
        for bytes in response.deltas.iter().take(SYNC_PAGE_DELTAS) {
            match Delta::decode_verified(bytes) {
                Ok(d) if !self.origin_ok(&d) => {}
                Ok(d) => deltas.push(d),
                Err(e) => {
                    forged = true;
                    self.metrics.reject(e.kind(), Source::Sync);
                }
            }
        }
        if forged {
            self.misbehaved(from, "forged or altered deltas in a sync page");
        }
        self.feed(Event::SyncPage { from, deltas, more });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> Multiaddr {
        format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()
    }

    #[test]
    fn the_peer_table_lists_links_with_their_rtt_revision_and_address() {
        let mut table = PeerTable::default();
        let (joined, dialled) = (PeerId::random(), PeerId::random());
        table.known(joined, addr(1));
        table.connected(dialled, addr(2));
        table.rtt(dialled, Duration::from_millis(7));
        table.revision(dialled, 42);
        table.announced(dialled, &[addr(3), addr(2)]);
        let listed = table.listed();
        assert_eq!(
            listed,
            vec![
                PeerSeen {
                    peer_id: dialled,
                    connected: true,
                    rtt: Some(Duration::from_millis(7)),
                    revision: Some(42),
                    addrs: vec![addr(2), addr(3)],
                },
                PeerSeen {
                    peer_id: joined,
                    connected: false,
                    rtt: None,
                    revision: None,
                    addrs: vec![addr(1)],
                },
            ]
        );

        // A dropped link keeps the peer (and its last revision), not its RTT.
        table.disconnected(dialled);
        let p = &table.peers[&dialled];
        assert!(!p.connected);
        assert_eq!((p.rtt, p.revision), (None, Some(42)));
        // Facts about a peer never seen on a link are not recorded.
        let stranger = PeerId::random();
        table.rtt(stranger, Duration::from_millis(1));
        table.revision(stranger, 1);
        assert!(!table.peers.contains_key(&stranger));
    }

    #[test]
    fn the_peer_table_is_bounded_and_keeps_live_links() {
        let mut table = PeerTable::default();
        let live: Vec<PeerId> = (0..MAX_PEER_TABLE).map(|_| PeerId::random()).collect();
        for (i, peer) in live.iter().enumerate() {
            table.connected(*peer, addr(i as u16));
        }
        // Full of live links: a newcomer is not tracked.
        let newcomer = PeerId::random();
        table.connected(newcomer, addr(9999));
        assert_eq!(table.peers.len(), MAX_PEER_TABLE);
        assert!(!table.peers.contains_key(&newcomer));
        // A dropped link makes room.
        table.disconnected(live[5]);
        table.connected(newcomer, addr(9999));
        assert_eq!(table.peers.len(), MAX_PEER_TABLE);
        assert!(table.peers[&newcomer].connected);
        assert!(!table.peers.contains_key(&live[5]));
        // The listing is bounded too, connected peers first.
        let listed = table.listed();
        assert_eq!(listed.len(), MAX_LISTED_PEERS);
        assert!(listed.iter().all(|p| p.connected));
        // Addresses per peer are bounded.
        let many: Vec<Multiaddr> = (0..20).map(|i| addr(20_000 + i)).collect();
        table.announced(newcomer, &many);
        assert_eq!(table.peers[&newcomer].addrs.len(), MAX_ADDRS_PER_PEER);
    }

    #[test]
    fn registry_calls_are_bounded_and_give_back_the_places_of_abandoned_ones() {
        let mut calls = RegistryCalls::<u64>::new();
        let mut waiting = Vec::new();
        for id in 0..MAX_REGISTRY_IN_FLIGHT as u64 - 1 {
            assert!(calls.has_room());
            let (tx, rx) = oneshot::channel();
            calls.sent(id, tx);
            waiting.push(rx);
        }
        calls.local += 1;
        assert!(!calls.has_room(), "full");
        // A caller that gave up frees its place; its late answer is dropped.
        drop(waiting.remove(0));
        assert!(calls.has_room());
        assert_eq!(calls.len(), MAX_REGISTRY_IN_FLIGHT - 1);
        calls.answer(&0, Ok(b"late".to_vec()));
        // An answer reaches its caller once and frees its place.
        calls.answer(&1, Ok(b"one".to_vec()));
        calls.answer(&1, Ok(b"again".to_vec()));
        assert_eq!(waiting[0].try_recv().unwrap(), Ok(b"one".to_vec()));
        calls.answer(&2, Err("Timeout".into()));
        assert_eq!(waiting[1].try_recv().unwrap(), Err("Timeout".to_string()));
        assert_eq!(calls.len(), MAX_REGISTRY_IN_FLIGHT - 3);
    }

    /// A network actor on loopback with a registry port, and what keeps it
    /// running.
    struct TestNet {
        peer: PeerId,
        addr: Multiaddr,
        outbound: mpsc::Sender<RegistryOutbound>,
        stop: watch::Sender<bool>,
        task: tokio::task::JoinHandle<Result<(), NetError>>,
        _core: (
            mpsc::Receiver<PeerCommand>,
            mpsc::Sender<CoreEvent>,
            watch::Sender<CoreStatus>,
            tempfile::TempDir,
        ),
    }

    impl TestNet {
        /// Starts an actor joining `join`; its registry service (if
        /// `service`) answers every request with `pong:` and the body.
        async fn start(join: Vec<Multiaddr>, service: bool) -> TestNet {
            Self::start_knowing(join, None, service).await
        }

        /// [`TestNet::start`], its swarm told an address of a peer first
        /// (as discovery would).
        async fn start_knowing(
            join: Vec<Multiaddr>,
            known: Option<(PeerId, Multiaddr)>,
            service: bool,
        ) -> TestNet {
            let identity = identity::Keypair::generate_ed25519();
            let peer = identity.public().to_peer_id();
            let mut swarm = build_swarm(identity.clone(), 16, false).unwrap();
            if let Some((peer, addr)) = known {
                swarm.add_peer_address(peer, addr);
            }
            let (core, core_rx) = mpsc::channel(16);
            let (events_tx, core_events) = mpsc::channel(16);
            let (status_tx, core_status) = watch::channel(CoreStatus::default());
            let (net_status, mut status_rx) = watch::channel(NetStatus::default());
            let dir = tempfile::tempdir().unwrap();
            let (outbound, outbound_rx) = mpsc::channel(16);
            let registry = service.then(|| {
                let (inbound, mut inbound_rx) = mpsc::channel::<RegistryInbound>(16);
                tokio::spawn(async move {
                    while let Some(request) = inbound_rx.recv().await {
                        let mut answer = b"pong:".to_vec();
                        answer.extend_from_slice(&request.body);
                        let _ = request.reply.send(answer);
                    }
                });
                RegistryPort {
                    outbound: outbound_rx,
                    inbound,
                }
            });
            let (stop, stop_rx) = watch::channel(false);
            let task = tokio::spawn(run(
                NetParts {
                    swarm,
                    join,
                    listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
                    sync: hearsay_sync::Config {
                        target_peers: 0,
                        ..hearsay_sync::Config::default()
                    },
                    core,
                    core_events,
                    core_status,
                    store: crate::store::MemoryStore::default(),
                    metrics: Metrics::new("test", None),
                    status: net_status,
                    announce: Announce {
                        path: dir.path().join("node.json"),
                        http: String::new(),
                        region: "test".into(),
                        public_url: String::new(),
                        geo: None,
                        clock_offset_ms: 0,
                    },
                    identity,
                    topology: hearsay_topology::Config::default(),
                    origins: Origins::default(),
                    registry,
                    admission: AdmissionParts {
                        config: hearsay_admission::Config::default(),
                        certificate: None,
                        proofs: Vec::new(),
                        admin: mpsc::channel(1).1,
                    },
                },
                stop_rx,
            ));
            let addr = tokio::time::timeout(
                Duration::from_secs(10),
                status_rx.wait_for(|s| !s.listen_addrs.is_empty()),
            )
            .await
            .expect("listening in time")
            .expect("actor running")
            .listen_addrs[0]
                .clone();
            TestNet {
                peer,
                addr,
                outbound,
                stop,
                task,
                _core: (core_rx, events_tx, status_tx, dir),
            }
        }

        /// Sends `body` to `peer` through the registry port and waits (at
        /// most 15 s) for the answer.
        async fn call(&self, peer: PeerId, body: &[u8]) -> Result<Vec<u8>, String> {
            let (reply, rx) = oneshot::channel();
            self.outbound
                .send(RegistryOutbound {
                    peer,
                    body: body.to_vec(),
                    reply,
                })
                .await
                .expect("actor running");
            tokio::time::timeout(Duration::from_secs(15), rx)
                .await
                .expect("answered in time")
                .expect("answered, not dropped")
        }

        async fn stop(self) {
            self.stop.send_replace(true);
            self.task.await.unwrap().unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn registry_messages_reach_a_peer_and_bring_back_its_answer() {
        let b = TestNet::start(Vec::new(), true).await;
        let a = TestNet::start(vec![b.addr.clone()], true).await;
        assert_eq!(a.call(b.peer, b"ping").await, Ok(b"pong:ping".to_vec()));
        // Several at once, and a large one (beyond the codec's default 1 MiB).
        let big = vec![7u8; 3 << 20];
        let (x, y, z) = tokio::join!(
            a.call(b.peer, b"x"),
            a.call(b.peer, b"y"),
            a.call(b.peer, &big)
        );
        assert_eq!((x, y), (Ok(b"pong:x".to_vec()), Ok(b"pong:y".to_vec())));
        assert_eq!(z.expect("large message").len(), big.len() + 5);
        // Both ways.
        assert_eq!(b.call(a.peer, b"back").await, Ok(b"pong:back".to_vec()));
        // Addressed to itself: served by its own service, no network.
        assert_eq!(a.call(a.peer, b"me").await, Ok(b"pong:me".to_vec()));
        // Too large: refused at once.
        let huge = vec![0u8; REGISTRY_MESSAGE_MAX + 1];
        assert!(a.call(b.peer, &huge).await.unwrap_err().contains("limit"));
        // Not joined, not connected: the request dials the peer at an
        // address the swarm knows.
        let c = TestNet::start_knowing(Vec::new(), Some((b.peer, b.addr.clone())), true).await;
        assert_eq!(c.call(b.peer, b"c").await, Ok(b"pong:c".to_vec()));
        a.stop().await;
        b.stop().await;
        c.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn registry_messages_fail_promptly_without_an_address_or_a_service() {
        let a = TestNet::start(Vec::new(), true).await;
        // A peer nobody knows an address of: the dial fails at once.
        let began = Instant::now();
        let err = a.call(PeerId::random(), b"hello").await.unwrap_err();
        assert!(began.elapsed() < Duration::from_secs(5), "{err}");
        assert!(err.contains("dial"), "{err}");
        // A peer reachable but without a registry service drops the
        // request: the requester sees a failure, not a hang.
        let b = TestNet::start(Vec::new(), false).await;
        let a2 = TestNet::start(vec![b.addr.clone()], true).await;
        let began = Instant::now();
        let err = a2.call(b.peer, b"hello").await.unwrap_err();
        assert!(began.elapsed() < Duration::from_secs(5), "{err}");
        a.stop().await;
        a2.stop().await;
        b.stop().await;
    }
}
