//! The eager push path, modelled on gossipsub (v1.1) as hearsay configures
//! it: a mesh of about `d` peers per node, kept between `d_lo` and `d_hi` at
//! every heartbeat with GRAFT and PRUNE; flood publishing of a node's own
//! messages to every subscribed peer; forwarding of a received message to the
//! mesh only once the application accepted it (manual validation); a
//! duplicate cache of message ids consulted before validation; and lazy
//! gossip: at each heartbeat, the ids of the messages of the last few
//! heartbeats go out as IHAVE to some peers outside the mesh, which answer
//! with IWANT for the ids they have not seen, and get the full messages.
//!
//! Scores, backoffs, fanout, opportunistic grafting and flow control are left
//! out: the simulation tests hearsay's use of the push path, not libp2p.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use rand::Rng;
use rand::seq::IteratorRandom;

/// Parameters of the mesh; defaults are libp2p gossipsub's, with the
/// heartbeat hearsay's node uses.
#[derive(Clone, Debug, PartialEq)]
pub struct GossipConfig {
    /// Desired mesh degree.
    pub d: usize,
    /// Fewer mesh peers than this are topped up to `d` at a heartbeat.
    pub d_lo: usize,
    /// More mesh peers than this are pruned to `d` at a heartbeat.
    pub d_hi: usize,
    /// Least number of peers that get IHAVE at a heartbeat.
    pub d_lazy: usize,
    /// Share of the non-mesh peers that get IHAVE, when more than `d_lazy`.
    pub gossip_factor: f64,
    pub heartbeat_ms: u64,
    /// Heartbeats whose message ids are advertised in IHAVE.
    pub history_gossip: usize,
    /// Heartbeats a message stays in the cache that answers IWANT.
    pub history_length: usize,
    /// A node sends its own messages to every subscribed peer, not only to
    /// its mesh (gossipsub's default).
    pub flood_publish: bool,
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            d: 6,
            d_lo: 4,
            d_hi: 12,
            d_lazy: 6,
            gossip_factor: 0.25,
            heartbeat_ms: 500,
            history_gossip: 3,
            history_length: 5,
            flood_publish: true,
        }
    }
}

/// Control messages of the mesh.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Control {
    Graft,
    Prune,
    IHave(Vec<u64>),
    IWant(Vec<u64>),
}

/// One node's gossipsub state for hearsay's single topic.
#[derive(Debug)]
pub(crate) struct Gossip {
    /// Connected peers subscribed to the topic.
    pub peers: BTreeSet<usize>,
    pub mesh: BTreeSet<usize>,
    /// Ids of every message received or published (the duplicate cache).
    /// Only ever looked up, never iterated.
    seen: HashSet<u64>,
    /// Messages received and waiting for the application's verdict.
    validating: HashMap<u64, Arc<Vec<u8>>>,
    /// Accepted messages by id, for IWANT; only looked up.
    cache: HashMap<u64, Arc<Vec<u8>>>,
    /// Ids accepted per heartbeat, newest first.
    windows: VecDeque<Vec<u64>>,
}

impl Gossip {
    pub fn new() -> Self {
        Gossip {
            peers: BTreeSet::new(),
            mesh: BTreeSet::new(),
            seen: HashSet::new(),
            validating: HashMap::new(),
            cache: HashMap::new(),
            windows: VecDeque::from([Vec::new()]),
        }
    }

    /// A full message arrived: whether it is new (then it waits for
    /// validation), or a duplicate to drop before validation.
    pub fn receive(&mut self, id: u64, payload: &Arc<Vec<u8>>) -> bool {
        if !self.seen.insert(id) {
            return false;
        }
        self.validating.insert(id, payload.clone());
        true
    }

    /// The verdict on a message under validation: on acceptance, the peers
    /// to forward it to and the payload.
    pub fn validated(
        &mut self,
        id: u64,
        from: usize,
        accept: bool,
    ) -> Option<(Arc<Vec<u8>>, Vec<usize>)> {
        let payload = self.validating.remove(&id)?;
        if !accept {
            return None;
        }
        self.remember(id, payload.clone());
        let to = self.mesh.iter().copied().filter(|p| *p != from).collect();
        Some((payload, to))
    }

    /// The node's own message: the peers to send it to.
    pub fn publish(&mut self, id: u64, payload: Arc<Vec<u8>>, config: &GossipConfig) -> Vec<usize> {
        self.seen.insert(id);
        self.remember(id, payload);
        if config.flood_publish {
            self.peers.iter().copied().collect()
        } else {
            self.mesh.iter().copied().collect()
        }
    }

    fn remember(&mut self, id: u64, payload: Arc<Vec<u8>>) {
        self.cache.insert(id, payload);
        if let Some(w) = self.windows.front_mut() {
            w.push(id);
        }
    }

    /// `peer` subscribed: joins the mesh at once while the mesh is short
    /// (the GRAFT to send is returned).
    pub fn subscribed(&mut self, peer: usize, config: &GossipConfig) -> Option<Control> {
        self.peers.insert(peer);
        if self.mesh.len() < config.d_lo && self.mesh.insert(peer) {
            return Some(Control::Graft);
        }
        None
    }

    /// The link to `peer` closed.
    pub fn peer_gone(&mut self, peer: usize) {
        self.peers.remove(&peer);
        self.mesh.remove(&peer);
    }

    /// A control message from `peer`; returns the answer to send back.
    pub fn control(&mut self, peer: usize, control: Control, config: &GossipConfig) -> Reply {
        match control {
            Control::Graft => {
                if !self.peers.contains(&peer) {
                    return Reply::None;
                }
                if self.mesh.len() >= config.d_hi && !self.mesh.contains(&peer) {
                    return Reply::Control(Control::Prune);
                }
                self.mesh.insert(peer);
                Reply::None
            }
            Control::Prune => {
                self.mesh.remove(&peer);
                Reply::None
            }
            Control::IHave(ids) => {
                let want: Vec<u64> = ids
                    .into_iter()
                    .filter(|id| !self.seen.contains(id))
                    .collect();
                if want.is_empty() {
                    Reply::None
                } else {
                    Reply::Control(Control::IWant(want))
                }
            }
            Control::IWant(ids) => Reply::Messages(
                ids.into_iter()
                    .filter_map(|id| self.cache.get(&id).map(|p| (id, p.clone())))
                    .collect(),
            ),
        }
    }

    /// Mesh maintenance and lazy gossip; returns the control messages to send.
    pub fn heartbeat(
        &mut self,
        rng: &mut impl Rng,
        config: &GossipConfig,
    ) -> Vec<(usize, Control)> {
        let mut out = Vec::new();
        let peers = &self.peers;
        self.mesh.retain(|p| peers.contains(p));
        if self.mesh.len() < config.d_lo {
            let want = config.d - self.mesh.len();
            let add = self
                .peers
                .iter()
                .filter(|p| !self.mesh.contains(p))
                .copied()
                .choose_multiple(rng, want);
            for p in add {
                self.mesh.insert(p);
                out.push((p, Control::Graft));
            }
        } else if self.mesh.len() > config.d_hi {
            let drop = self.mesh.len() - config.d;
            let remove = self.mesh.iter().copied().choose_multiple(rng, drop);
            for p in remove {
                self.mesh.remove(&p);
                out.push((p, Control::Prune));
            }
        }
        let ids: Vec<u64> = self
            .windows
            .iter()
            .take(config.history_gossip)
            .flatten()
            .copied()
            .collect();
        if !ids.is_empty() {
            let others: Vec<usize> = self
                .peers
                .iter()
                .filter(|p| !self.mesh.contains(p))
                .copied()
                .collect();
            let n = config
                .d_lazy
                .max((config.gossip_factor * others.len() as f64) as usize);
            for p in others.into_iter().choose_multiple(rng, n) {
                out.push((p, Control::IHave(ids.clone())));
            }
        }
        self.windows.push_front(Vec::new());
        while self.windows.len() > config.history_length {
            for id in self.windows.pop_back().unwrap_or_default() {
                self.cache.remove(&id);
            }
        }
        out
    }
}

/// What a node sends back for a control message.
#[derive(Debug)]
pub(crate) enum Reply {
    None,
    Control(Control),
    Messages(Vec<(u64, Arc<Vec<u8>>)>),
}
