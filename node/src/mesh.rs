//! `GET /api/v0/mesh`: this node and the peers it has links to;
//! `GET /api/v0/nodes`: every node known by its signed status, with its
//! heartbeat age and state; `GET /api/v0/sync`: for each other node, what
//! this node lacks of it and what it lacks of this node.
//!
//! The answer is read from what the node already publishes: the core's
//! durable version vector (revision and token) and the network actor's
//! [`NetStatus`](crate::net::NetStatus), whose peer table records each link's
//! address, the RTT of its last ping and the revision a peer sent in its last
//! sync request. A peer's region is `null` until its status arrived; its
//! revision is `null` until it has asked this node for a sync page.
//!
//! `/api/v0/sync` compares version vectors: this node's durable vector now,
//! and each node's vector as of its last status (`status_age_ms` old, about
//! a second at most while it is alive). "Lacks" counts deltas: `Σ max(0,
//! theirs[o] - mine[o])` over origins `o`. A node holding deltas of more
//! than [`crate::status::MAX_STATUS_ORIGINS`] origins publishes no vector;
//! its counts are then `null` (unknown), never a guess.
//!
//! The shapes here are the wire format and the typed client's
//! ([`crate::client::Client::mesh`]) alike.

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use serde::{Deserialize, Serialize};

use hearsay_crdt::VersionVector;
use hearsay_topology::{State as NodeState, Status};

use crate::api::{ApiState, ok};
use crate::net::{NodeSeen, PeerSeen};
use crate::status::StatusBody;

/// The body of `GET /api/v0/mesh`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mesh {
    /// This node.
    #[serde(rename = "self")]
    pub this: MeshSelf,
    /// Connected peers first, then peers known from joins and earlier links
    /// (bounded: [`crate::net::MAX_LISTED_PEERS`]).
    pub peers: Vec<MeshPeer>,
}

/// The node answering.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeshSelf {
    pub peer_id: String,
    pub region: String,
    /// Sum of the durable version vector.
    pub revision: u64,
    /// The durable version vector as a token (resume point of the event
    /// stream, `?after=` of reads).
    pub token: String,
    /// `host:port` of the HTTP API.
    pub http: String,
}

/// A node this one knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeshPeer {
    pub peer_id: String,
    /// Whether a link to it is open now.
    pub connected: bool,
    /// Round trip of the last answered ping on the open link, milliseconds.
    pub rtt_ms: Option<f64>,
    /// Its region, once statuses carry it.
    pub region: Option<String>,
    /// Its revision when it last asked this node for a sync page.
    pub revision: Option<u64>,
    /// The open link's address first, then addresses it announced.
    pub addrs: Vec<String>,
}

impl From<&PeerSeen> for MeshPeer {
    fn from(p: &PeerSeen) -> Self {
        MeshPeer {
            peer_id: p.peer_id.to_string(),
            connected: p.connected,
            // Microsecond precision: loopback and LAN links are well under 1 ms.
            rtt_ms: p.rtt.map(|d| (d.as_secs_f64() * 1e6).round() / 1e3),
            region: None,
            revision: p.revision,
            addrs: p.addrs.iter().map(ToString::to_string).collect(),
        }
    }
}

/// The body of `GET /api/v0/nodes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Nodes {
    /// This node's last published status (`null` in the first moment
    /// after start).
    #[serde(rename = "self")]
    pub this: Option<NodeEntry>,
    /// Every other node known, by peer id (bounded by the peer table).
    pub nodes: Vec<NodeEntry>,
    /// Origins proven to have signed two different deltas with one seq:
    /// their deltas are refused from then on, on every node that holds
    /// the proof.
    #[serde(default)]
    pub equivocators: Vec<EquivocatorEntry>,
}

/// An origin proven to equivocate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EquivocatorEntry {
    /// Its node id (hex) and peer id.
    pub origin: String,
    pub peer_id: Option<String>,
    /// The seq it signed twice.
    pub seq: u64,
    /// When this node learnt it (Unix ms).
    pub detected_ms: u64,
}

/// A node as its latest status shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeEntry {
    /// What the node said of itself, as signed.
    #[serde(flatten)]
    pub status: StatusBody,
    /// `alive`, `suspect` or `down` (`self` for the node answering).
    pub state: String,
    /// How long ago its latest status arrived, ms.
    pub heartbeat_age_ms: u64,
    /// Its clock minus this node's, estimated from status timestamps, ms.
    pub clock_offset_ms: Option<i64>,
    /// Whether this node has a mesh link to it.
    pub linked: bool,
}

impl NodeEntry {
    /// The figures the router scores, as the topology crate takes them.
    pub fn as_status(&self) -> Status<&str> {
        let b = &self.status;
        Status {
            peer: &b.peer_id,
            http: b.http.clone(),
            region: b.region.clone(),
            geo: b.geo,
            revision: b.revision,
            revision_hash: 0,
            mean_response_ms: b.mean_response_ms,
            error_rate: b.error_rate,
            replication_delay_p50_ms: b.replication_delay_p50_ms,
            replication_delay_p99_ms: b.replication_delay_p99_ms,
            neighbours: Vec::new(),
            uptime_s: b.uptime_s,
            timestamp_ms: b.timestamp_ms,
        }
    }
}

/// The lowercase name of a failure-detector state.
pub fn state_name(state: NodeState) -> &'static str {
    match state {
        NodeState::Alive => "alive",
        NodeState::Suspect => "suspect",
        NodeState::Down => "down",
    }
}

/// The body of `GET /api/v0/sync`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncView {
    pub peer_id: String,
    /// This node's durable revision.
    pub revision: u64,
    /// Every other node and how far apart the two are.
    pub nodes: Vec<SyncEntry>,
    /// Every node is alive, and neither side lacks anything of any.
    pub in_sync: bool,
}

/// How this node and one other differ, in deltas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncEntry {
    pub peer_id: String,
    pub region: String,
    pub state: String,
    /// Age of the status the comparison uses, ms.
    pub status_age_ms: u64,
    pub revision: u64,
    /// Deltas it holds that this node lacks (`null`: it sent no vector).
    pub this_lacks: Option<u64>,
    /// Deltas this node holds that it lacks.
    pub it_lacks: Option<u64>,
    /// Both counts are 0.
    pub in_sync: Option<bool>,
}

/// The comparison of `mine` with one node's status.
pub fn sync_entry(mine: &VersionVector, node: &NodeSeen, state: NodeState) -> SyncEntry {
    let theirs = node.status.version_vector.as_ref();
    let this_lacks = theirs.map(|t| crate::metrics::lacking(t, mine));
    let it_lacks = theirs.map(|t| crate::metrics::lacking(mine, t));
    let body = &node.status.body;
    SyncEntry {
        peer_id: body.peer_id.clone(),
        region: body.region.clone(),
        state: state_name(state).to_owned(),
        status_age_ms: node.heartbeat_age().as_millis() as u64,
        revision: body.revision,
        this_lacks,
        it_lacks,
        in_sync: this_lacks.zip(it_lacks).map(|(a, b)| a == 0 && b == 0),
    }
}

/// The mesh routes.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v0/mesh", get(mesh))
        .route("/api/v0/nodes", get(nodes))
        .route("/api/v0/sync", get(sync))
}

/// What `GET /api/v0/nodes` answers.
pub fn nodes_view(state: &ApiState) -> Nodes {
    let net = state.net_status.borrow();
    let this = net.me.as_ref().map(|b| NodeEntry {
        status: StatusBody::clone(b),
        state: "self".into(),
        heartbeat_age_ms: 0,
        clock_offset_ms: Some(0),
        linked: false,
    });
    let nodes = net
        .nodes
        .iter()
        .map(|n| NodeEntry {
            status: n.status.body.clone(),
            state: state_name(n.state(&net.timeouts)).into(),
            heartbeat_age_ms: n.heartbeat_age().as_millis() as u64,
            clock_offset_ms: n.clock_offset_ms,
            linked: n.neighbour,
        })
        .collect();
    let equivocators = state
        .core_status
        .borrow()
        .equivocators
        .iter()
        .map(|e| EquivocatorEntry {
            origin: e.origin.to_string(),
            peer_id: libp2p::identity::ed25519::PublicKey::try_from_bytes(e.origin.as_bytes())
                .ok()
                .map(|k| {
                    libp2p::identity::PublicKey::from(k)
                        .to_peer_id()
                        .to_string()
                }),
            seq: e.seq,
            detected_ms: e.detected_ms,
        })
        .collect();
    Nodes {
        this,
        nodes,
        equivocators,
    }
}

async fn nodes(State(state): State<ApiState>) -> Response {
    ok(nodes_view(&state))
}

async fn sync(State(state): State<ApiState>) -> Response {
    let mine = state.core_status.borrow().version_vector.clone();
    let net = state.net_status.borrow();
    let nodes: Vec<SyncEntry> = net
        .nodes
        .iter()
        .map(|n| sync_entry(&mine, n, n.state(&net.timeouts)))
        .collect();
    let in_sync = nodes
        .iter()
        .all(|n| n.state == "alive" && n.in_sync == Some(true));
    ok(SyncView {
        peer_id: state.info.peer_id.clone(),
        revision: mine.sum(),
        nodes,
        in_sync,
    })
}

/// What `GET /api/v0/mesh` answers, from the node's published state.
pub fn view(state: &ApiState) -> Mesh {
    let (revision, token) = {
        let core = state.core_status.borrow();
        (core.version_vector.sum(), core.version_vector.to_token())
    };
    let net = state.net_status.borrow();
    let peers = net
        .known
        .iter()
        .map(|p| {
            let mut peer = MeshPeer::from(p);
            peer.region = net
                .nodes
                .iter()
                .find(|n| n.status.peer == p.peer_id)
                .map(|n| n.status.body.region.clone());
            peer
        })
        .collect();
    let info = &state.info;
    Mesh {
        this: MeshSelf {
            peer_id: info.peer_id.clone(),
            region: info.region.clone(),
            revision,
            token,
            http: info.http.to_string(),
        },
        peers,
    }
}

async fn mesh(State(state): State<ApiState>) -> Response {
    ok(view(&state))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use libp2p::PeerId;

    use super::*;

    #[test]
    fn a_peer_is_shown_with_its_rtt_in_milliseconds_and_no_region_yet() {
        let peer = PeerId::random();
        let seen = PeerSeen {
            peer_id: peer,
            connected: true,
            rtt: Some(Duration::from_micros(1_234)),
            revision: Some(9),
            addrs: vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
        };
        let json = serde_json::to_value(MeshPeer::from(&seen)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "peer_id": peer.to_string(),
                "connected": true,
                "rtt_ms": 1.234,
                "region": null,
                "revision": 9,
                "addrs": ["/ip4/127.0.0.1/tcp/4001"],
            })
        );
    }
}
