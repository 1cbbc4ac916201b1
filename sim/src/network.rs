//! The virtual network: connections, latency, loss, duplication, partitions.
//!
//! A connection between two nodes has an id; each node keeps its own view
//! of its connections (peer -> connection id), because the two ends learn
//! of a close at different times (a close crosses the network, and not at
//! all across a partition, where only missed pings reveal it). A message
//! travels on one connection and is delivered only if, when it arrives, the
//! receiver still holds that connection and no partition separates the two.
//!
//! Each message takes `latency_ms` plus a uniform jitter in
//! `0..=jitter_ms`. A connection is a stream, as TCP and a QUIC stream are:
//! by default a message never overtakes an earlier one on the same
//! connection (jitter only delays it), and reordering comes from different
//! paths, as it does in a real mesh. `reorder` lets messages on one
//! connection overtake each other too, the harsher model. Loss and
//! duplication apply to gossip, control and anti-entropy messages; they
//! stand for what a node's own queues drop and what a retry repeats. Pings,
//! subscriptions and closes ride the connection itself and are not lost.

use std::collections::BTreeMap;

use rand::Rng;
use rand::seq::SliceRandom;

/// Properties of every link.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkConfig {
    /// One-way latency.
    pub latency_ms: u64,
    /// Extra one-way latency, uniform in `0..=jitter_ms`, per message.
    pub jitter_ms: u64,
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a message arrives twice.
    pub duplicate: f64,
    /// Messages on one connection may overtake each other.
    pub reorder: bool,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            latency_ms: 50,
            jitter_ms: 10,
            loss: 0.0,
            duplicate: 0.0,
            reorder: false,
        }
    }
}

/// A split of the nodes into two groups that cannot reach each other.
#[derive(Clone, Debug, PartialEq)]
pub struct Partition {
    /// When the split starts.
    pub at_ms: u64,
    /// How long it lasts.
    pub duration_ms: u64,
    /// Share of the nodes on the smaller side.
    pub fraction: f64,
}

/// Connections and partitions of all nodes.
#[derive(Debug)]
pub(crate) struct Network {
    pub link: LinkConfig,
    views: Vec<BTreeMap<usize, u64>>,
    next_conn: u64,
    /// While split: the side of each node.
    side: Option<Vec<bool>>,
    /// Latest arrival scheduled per (from, to, connection), for in-order
    /// delivery.
    last_arrival: BTreeMap<(usize, usize, u64), u64>,
}

impl Network {
    pub fn new(nodes: usize, link: LinkConfig) -> Self {
        Network {
            link,
            views: vec![BTreeMap::new(); nodes],
            next_conn: 1,
            side: None,
            last_arrival: BTreeMap::new(),
        }
    }

    /// The connection `a` holds to `b`.
    pub fn conn(&self, a: usize, b: usize) -> Option<u64> {
        self.views[a].get(&b).copied()
    }

    /// `a`'s connections, by peer.
    pub fn peers(&self, a: usize) -> Vec<(usize, u64)> {
        self.views[a].iter().map(|(p, c)| (*p, *c)).collect()
    }

    /// Whether a partition separates `a` and `b`.
    pub fn cut(&self, a: usize, b: usize) -> bool {
        self.side.as_ref().is_some_and(|s| s[a] != s[b])
    }

    /// Whether both ends hold connection `conn` and nothing separates them.
    pub fn open(&self, a: usize, b: usize, conn: u64) -> bool {
        !self.cut(a, b) && self.conn(a, b) == Some(conn) && self.conn(b, a) == Some(conn)
    }

    /// A new connection between `a` and `b`; for each end, whether it had
    /// none before (a replaced stale one does not count).
    pub fn connect(&mut self, a: usize, b: usize) -> (bool, bool, u64) {
        let conn = self.next_conn;
        self.next_conn += 1;
        let new_a = self.views[a].insert(b, conn).is_none();
        let new_b = self.views[b].insert(a, conn).is_none();
        (new_a, new_b, conn)
    }

    /// `a` closes its connection to `b`.
    pub fn close(&mut self, a: usize, b: usize) -> Option<u64> {
        self.views[a].remove(&b)
    }

    /// `a` learns that `b` closed `conn`; whether `a` still held it.
    pub fn closed_by_peer(&mut self, a: usize, b: usize, conn: u64) -> bool {
        if self.conn(a, b) == Some(conn) {
            self.views[a].remove(&b);
            true
        } else {
            false
        }
    }

    /// Every connection of `a` goes (a crash).
    pub fn clear(&mut self, a: usize) -> Vec<(usize, u64)> {
        std::mem::take(&mut self.views[a]).into_iter().collect()
    }

    /// When a message sent now from `from` to `to` on `conn` arrives: after
    /// its own delay, and (unless `reorder`) not before the message sent
    /// before it on the same connection.
    pub fn arrival(
        &mut self,
        rng: &mut impl Rng,
        now: u64,
        (from, to, conn): (usize, usize, u64),
    ) -> u64 {
        let at = now + self.delay(rng);
        if self.link.reorder {
            return at;
        }
        let last = self.last_arrival.entry((from, to, conn)).or_insert(0);
        *last = (*last).max(at);
        *last
    }

    /// One message's one-way delay.
    pub fn delay(&self, rng: &mut impl Rng) -> u64 {
        self.link.latency_ms + rng.random_range(0..=self.link.jitter_ms)
    }

    /// Splits the nodes: `fraction` of them, chosen at random, on one side.
    pub fn split(&mut self, rng: &mut impl Rng, fraction: f64) {
        let n = self.views.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(rng);
        let small = ((n as f64 * fraction).round() as usize).clamp(1, n.saturating_sub(1));
        let mut side = vec![false; n];
        for i in &order[..small] {
            side[*i] = true;
        }
        self.side = Some(side);
    }

    pub fn heal(&mut self) {
        self.side = None;
    }

    /// Connections both ends hold: the undirected graph of the mesh.
    pub fn edges(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (a, view) in self.views.iter().enumerate() {
            for (b, conn) in view {
                if a < *b && self.conn(*b, a) == Some(*conn) {
                    out.push((a, *b));
                }
            }
        }
        out
    }
}
