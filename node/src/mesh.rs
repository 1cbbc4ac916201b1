//! `GET /api/v0/mesh`: this node and the nodes it knows.
//!
//! The answer is read from what the node already publishes: the core's
//! durable version vector (revision and token) and the network actor's
//! [`NetStatus`](crate::net::NetStatus), whose peer table records each link's
//! address, the RTT of its last ping and the revision a peer sent in its last
//! sync request. Regions of other nodes are `null` until nodes publish
//! signed statuses; a peer's revision is `null` until it has asked this node
//! for a sync page.
//!
//! The shapes here are the wire format and the typed client's
//! ([`crate::client::Client::mesh`]) alike.

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use serde::{Deserialize, Serialize};

use crate::api::{ApiState, ok};
use crate::net::PeerSeen;

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

/// The mesh route.
pub fn routes() -> Router<ApiState> {
    Router::new().route("/api/v0/mesh", get(mesh))
}

/// What `GET /api/v0/mesh` answers, from the node's published state.
pub fn view(state: &ApiState) -> Mesh {
    let (revision, token) = {
        let core = state.core_status.borrow();
        (core.version_vector.sum(), core.version_vector.to_token())
    };
    let peers = state
        .net_status
        .borrow()
        .known
        .iter()
        .map(MeshPeer::from)
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
