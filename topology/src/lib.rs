//! hearsay-topology: the IO-less mesh logic of hearsay.
//!
//! [`Topology`] decides which peers a node keeps links to; [`rank`] decides
//! which host serves a client. Like `hearsay-crdt` and `hearsay-sync` it
//! depends on no runtime, socket or clock: events go in with the current
//! time ([`Topology::handle`]), commands come out, randomness is a seeded
//! RNG and timers are commands ([`Command::ArmTimer`]). So every rule is
//! unit-tested by asserting the exact commands it emits.
//!
//! What it owns:
//! - **The peer table** ([`PeerTable`]): the newest [`Status`] of each node
//!   (newest sender timestamp wins; older and duplicate statuses are
//!   ignored), bounded, evicting the node silent longest. Statuses are
//!   verified (signatures, keys) before they get here.
//! - **Failure detection** ([`Timeouts`]): from the local time the newest
//!   status arrived, a node is [`State::Alive`], then [`State::Suspect`]
//!   after `suspect_after_ms`, then [`State::Down`] after `down_after_ms`.
//!   Changes are reported ([`Command::StateChanged`]) for metrics and logs.
//! - **Degree maintenance**: while fewer than `degree` links are up or being
//!   dialled, dial replacements from the table: Alive before Suspect before
//!   Down (when a middle node dies, the nodes behind it fall silent too, and
//!   must still be tried), then those that relieve an articulation point,
//!   then the nearest, then in seeded-random order. A neighbour counts until
//!   it is Down and its link is older than `down_after_ms`. A dial that
//!   fails, or is unanswered for `dial_timeout_ms`, makes its peer wait out
//!   a doubling backoff; a lost link waits the minimum. Links beyond the
//!   degree are kept (the transport bounds them).
//! - **Bridge repair**: the neighbour graph is built from the statuses'
//!   neighbour lists (this node's own edges from its own links); when this
//!   node is adjacent to an articulation point (a node whose failure would
//!   split the mesh, found by Tarjan's algorithm, [`articulation_points`])
//!   it dials an Alive node on another side, at most `max_bridge_links`
//!   such extra links at a time, one at a time.
//! - **The router score** ([`score`], [`rank`], [`Weights`]):
//!   `s = 1 / (i*replication_delay + j*mean_response_time + k*distance + l*error_rate)`
//!   with haversine distance ([`Geo::distance_km`]).
//!
//! ```
//! use hearsay_topology::{Command, Config, Event, Geo, State, Status, Topology};
//!
//! let status = |peer: u32, ts: u64| Status {
//!     peer,
//!     http: format!("http://10.0.0.{peer}:8080"),
//!     region: "eu".into(),
//!     geo: Some(Geo { lat: 50.0, lon: 8.0 }),
//!     revision: 0,
//!     revision_hash: 0,
//!     mean_response_ms: 2.0,
//!     error_rate: 0.0,
//!     replication_delay_p50_ms: 40.0,
//!     replication_delay_p99_ms: 90.0,
//!     neighbours: vec![],
//!     uptime_s: 1,
//!     timestamp_ms: ts,
//! };
//! // Peers are any ordered id (the node uses libp2p's PeerId).
//! let mut t: Topology<u32> = Topology::new(1, None, Config::default(), 7);
//! let out = t.handle(0, Event::Status { from: 2, status: status(2, 100) });
//! assert!(out.contains(&Command::StateChanged { peer: 2, state: State::Alive }));
//! assert!(out.contains(&Command::Dial { peer: 2, http: "http://10.0.0.2:8080".into() }));
//! ```

use std::collections::{BTreeMap, BTreeSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

mod clock;
mod graph;
mod score;
mod table;
#[cfg(test)]
mod tests;

pub use clock::{ClockOffsets, corrected_delay_ms};
pub use graph::{Graph, articulation_points};
pub use score::{MIN_COST, Ranked, Terms, UNKNOWN_DISTANCE_KM, Weights, rank, score};
pub use table::{Entry, Insert, MAX_FIGURE_MS, MAX_NEIGHBOURS, PeerTable, State, Timeouts};

/// Milliseconds on a monotonic clock chosen by the caller.
pub type Millis = u64;

/// What a node's signed status says about it, about once a second. Signing
/// and verification happen outside this crate; the table takes statuses
/// already verified.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status<P> {
    pub peer: P,
    /// Base URL of its HTTP API, where the router sends clients.
    pub http: String,
    pub region: String,
    pub geo: Option<Geo>,
    /// Sum of its version vector: rises with every delta it holds.
    pub revision: u64,
    /// Short hash of its version vector: equal hashes, same data.
    pub revision_hash: u64,
    /// Mean HTTP response time, ms.
    pub mean_response_ms: f64,
    /// Share of requests that failed recently, 0..1.
    pub error_rate: f64,
    /// Replication delay of the deltas it applied recently, ms.
    pub replication_delay_p50_ms: f64,
    pub replication_delay_p99_ms: f64,
    /// The peers it is connected to, at most [`MAX_NEIGHBOURS`] (longer
    /// lists are cut on receipt).
    pub neighbours: Vec<P>,
    pub uptime_s: u64,
    /// The sender's clock when it published this status: orders its
    /// statuses (newest wins). Liveness uses the local receive time.
    pub timestamp_ms: u64,
}

/// Tuning of the machine. Defaults are the node's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Links this node keeps up (target degree `c`): with 2 or more, one
    /// failure degrades the mesh instead of splitting it.
    pub degree: usize,
    /// Failure detector thresholds.
    pub timeouts: Timeouts,
    /// Most nodes in the peer table.
    pub max_peers: usize,
    /// A dial neither connected nor failed after this long has failed.
    pub dial_timeout_ms: Millis,
    /// Wait before redialling a peer whose dial failed (doubling on each
    /// further failure), or whose link was lost.
    pub backoff_min_ms: Millis,
    /// Cap of the doubling backoff.
    pub backoff_max_ms: Millis,
    /// Most links kept up beyond the degree to get around articulation
    /// points; 0 turns bridge repair off.
    pub max_bridge_links: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            degree: 3,
            timeouts: Timeouts::default(),
            max_peers: 1024,
            dial_timeout_ms: 10_000,
            backoff_min_ms: 1_000,
            backoff_max_ms: 60_000,
            max_bridge_links: 2,
        }
    }
}

impl Config {
    /// Checks the relations between the keys; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        let t = &self.timeouts;
        if t.suspect_after_ms == 0 {
            return Err("suspect_after_ms must be above 0".into());
        }
        if t.down_after_ms <= t.suspect_after_ms {
            return Err(format!(
                "down_after_ms ({}) must be above suspect_after_ms ({})",
                t.down_after_ms, t.suspect_after_ms
            ));
        }
        if t.forget_after_ms <= t.down_after_ms {
            return Err(format!(
                "forget_after_ms ({}) must be above down_after_ms ({})",
                t.forget_after_ms, t.down_after_ms
            ));
        }
        if self.max_peers == 0 {
            return Err("max_peers must be above 0".into());
        }
        if self.dial_timeout_ms == 0 {
            return Err("dial_timeout_ms must be above 0".into());
        }
        if self.backoff_min_ms == 0 || self.backoff_max_ms < self.backoff_min_ms {
            return Err(format!(
                "backoff_min_ms ({}) must be above 0 and at most backoff_max_ms ({})",
                self.backoff_min_ms, self.backoff_max_ms
            ));
        }
        Ok(())
    }
}

/// Inputs of the machine.
#[derive(Clone, Debug, PartialEq)]
pub enum Event<P> {
    /// A timer armed by [`Command::ArmTimer`] is due (extra ticks are harmless).
    Tick,
    /// A verified status of `status.peer`, delivered by neighbour `from`
    /// (the table is keyed by `status.peer`; `from` is for the caller's
    /// accounting). A status of this node itself is ignored.
    Status { from: P, status: Status<P> },
    /// A link to `peer` is up (dialled by either side).
    Connected { peer: P },
    /// The last link to `peer` closed.
    Disconnected { peer: P },
    /// A dial to `peer` failed.
    DialFailed { peer: P },
}

/// Outputs of the machine, for the translator to carry out.
#[derive(Clone, Debug, PartialEq)]
pub enum Command<P> {
    /// Connect to `peer`; report [`Event::Connected`] or [`Event::DialFailed`].
    /// `http` is the peer's advertised HTTP address, a hint for finding it.
    Dial { peer: P, http: String },
    /// Send [`Event::Tick`] at `at` (replaces any earlier timer).
    ArmTimer { at: Millis },
    /// The failure detector's verdict on `peer` changed (first verdict
    /// included).
    StateChanged { peer: P, state: State },
}

#[derive(Clone, Copy, Debug)]
struct Backoff {
    delay: Millis,
    until: Millis,
}

/// The mesh machine of one node. See the crate docs for its rules.
#[derive(Debug)]
pub struct Topology<P> {
    me: P,
    geo: Option<Geo>,
    config: Config,
    rng: StdRng,
    table: PeerTable<P>,
    /// Last state reported per node (kept in step with the table).
    reported: BTreeMap<P, State>,
    /// Linked peers, with the time each link came up.
    connected: BTreeMap<P, Millis>,
    /// Dials in flight, with the time each started.
    dialing: BTreeMap<P, Millis>,
    /// Peers dialled, or linked, for bridge repair.
    bridges: BTreeSet<P>,
    backoff: BTreeMap<P, Backoff>,
    armed: Option<Millis>,
    /// Something the neighbour graph is made of changed since the bridge
    /// rule last looked at it (so a steady stream of unchanged statuses
    /// costs no graph walk).
    graph_dirty: bool,
}

impl<P: Copy + Ord + std::fmt::Debug> Topology<P> {
    /// The machine of node `me`, at `geo` if known; `seed` drives every
    /// random choice. `config` should pass [`Config::validate`].
    pub fn new(me: P, geo: Option<Geo>, config: Config, seed: u64) -> Self {
        Topology {
            me,
            geo,
            table: PeerTable::new(config.max_peers, config.timeouts),
            config,
            rng: StdRng::seed_from_u64(seed),
            reported: BTreeMap::new(),
            connected: BTreeMap::new(),
            dialing: BTreeMap::new(),
            bridges: BTreeSet::new(),
            backoff: BTreeMap::new(),
            armed: None,
            graph_dirty: true,
        }
    }

    /// The peer table, for the API and the router.
    pub fn table(&self) -> &PeerTable<P> {
        &self.table
    }

    /// The peers linked to this node.
    pub fn connected(&self) -> impl Iterator<Item = P> + '_ {
        self.connected.keys().copied()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Takes one event at `now`; returns what to do.
    pub fn handle(&mut self, now: Millis, event: Event<P>) -> Vec<Command<P>> {
        match event {
            Event::Tick => {}
            Event::Status { from: _, status } => return self.on_status(now, status),
            Event::Connected { peer } => {
                self.dialing.remove(&peer);
                self.backoff.remove(&peer);
                if peer != self.me {
                    self.connected.entry(peer).or_insert(now);
                }
            }
            Event::Disconnected { peer } => {
                self.connected.remove(&peer);
                self.dialing.remove(&peer);
                self.bridges.remove(&peer);
                self.back_off(now, peer, false);
            }
            Event::DialFailed { peer } => {
                self.dialing.remove(&peer);
                self.bridges.remove(&peer);
                self.back_off(now, peer, true);
            }
        }
        let timeout = self.config.dial_timeout_ms;
        let expired: Vec<P> = self
            .dialing
            .iter()
            .filter(|(_, start)| now.saturating_sub(**start) >= timeout)
            .map(|(p, _)| *p)
            .collect();
        for p in expired {
            self.dialing.remove(&p);
            self.bridges.remove(&p);
            self.back_off(now, p, true);
        }
        for p in self.table.forget(now) {
            self.reported.remove(&p);
        }
        self.graph_dirty = true;
        let table = &self.table;
        self.backoff
            .retain(|p, b| b.until > now || table.get(p).is_some());

        let mut out = Vec::new();
        self.report_states(now, &mut out);
        self.maintain(now, &mut out);
        self.arm(now, &mut out);
        out
    }

    /// A status: the only state it can change is its own node's (to
    /// Alive); what time changes (verdicts, dial timeouts, backoffs,
    /// forgetting) waits for the timer armed for it, so a steady stream of
    /// statuses costs a table update each, not a walk of the table.
    fn on_status(&mut self, now: Millis, status: Status<P>) -> Vec<Command<P>> {
        let mut out = Vec::new();
        let peer = status.peer;
        if peer == self.me {
            return out;
        }
        let before = self.table.get(&peer).map(|e| e.status.neighbours.clone());
        match self.table.insert(now, status) {
            Insert::Stale => return out,
            Insert::Updated => {
                let after = self.table.get(&peer).map(|e| &e.status.neighbours);
                self.graph_dirty |= before.as_ref() != after;
            }
            Insert::New { evicted } => {
                if let Some(p) = evicted {
                    self.reported.remove(&p);
                }
                self.graph_dirty = true;
            }
        }
        if self.reported.get(&peer) != Some(&State::Alive) {
            self.reported.insert(peer, State::Alive);
            out.push(Command::StateChanged {
                peer,
                state: State::Alive,
            });
            self.graph_dirty = true;
        }
        self.maintain(now, &mut out);
        // The node's next verdict, and the timeouts of dials just started,
        // may come before the timer armed now; a later one is caught when
        // the armed timer fires.
        let dials = out
            .iter()
            .filter(|c| matches!(c, Command::Dial { .. }))
            .count();
        let mut due = now.saturating_add(self.table.timeouts().suspect_after_ms);
        if dials > 0 {
            due = due.min(now.saturating_add(self.config.dial_timeout_ms));
        }
        if self.armed.is_none_or(|at| at <= now || due < at) {
            self.armed = Some(due);
            out.push(Command::ArmTimer { at: due });
        }
        out
    }

    fn back_off(&mut self, now: Millis, peer: P, failed: bool) {
        let (min, max) = (self.config.backoff_min_ms, self.config.backoff_max_ms);
        let b = self
            .backoff
            .entry(peer)
            .or_insert(Backoff { delay: 0, until: 0 });
        b.delay = if !failed {
            b.delay.max(min)
        } else if b.delay == 0 {
            min
        } else {
            b.delay.saturating_mul(2).min(max)
        };
        b.until = now.saturating_add(b.delay);
    }

    fn report_states(&mut self, now: Millis, out: &mut Vec<Command<P>>) {
        for e in self.table.iter() {
            let peer = e.status.peer;
            let state = self
                .table
                .timeouts()
                .state(now.saturating_sub(e.received_ms));
            if self.reported.get(&peer) != Some(&state) {
                self.reported.insert(peer, state);
                out.push(Command::StateChanged { peer, state });
                self.graph_dirty = true;
            }
        }
    }

    fn is_down(&self, peer: &P, now: Millis) -> bool {
        self.table.state(peer, now) == Some(State::Down)
    }

    /// A link counts as a neighbour unless its peer is Down and the link is
    /// older than `down_after_ms` (a fresh link is a sign of life until the
    /// peer's next status arrives).
    fn link_live(&self, peer: &P, now: Millis) -> bool {
        !self.is_down(peer, now)
            || self
                .connected
                .get(peer)
                .is_some_and(|at| now.saturating_sub(*at) < self.table.timeouts().down_after_ms)
    }

    /// Dials towards the degree, then around an articulation point.
    fn maintain(&mut self, now: Millis, out: &mut Vec<Command<P>>) {
        let live = self
            .connected
            .keys()
            .filter(|p| self.link_live(p, now))
            .count();
        let need = self.config.degree.saturating_sub(live + self.dialing.len());
        let bridging = need == 0
            && self.dialing.is_empty()
            && self.bridges.len() < self.config.max_bridge_links
            && self.graph_dirty;
        if need == 0 && !bridging {
            return;
        }
        self.graph_dirty = false;
        let relieving = graph::other_sides(&self.graph(now), self.me);
        let candidates = self.candidates(now, &relieving);
        let mut picked: Vec<(P, bool)> = candidates
            .iter()
            .take(need)
            .map(|c| (c.peer, false))
            .collect();
        if bridging
            && let Some(c) = candidates
                .iter()
                .find(|c| c.relieving && c.state == State::Alive)
        {
            picked.push((c.peer, true));
        }
        for (peer, bridge) in picked {
            self.dialing.insert(peer, now);
            if bridge {
                self.bridges.insert(peer);
            }
            let http = self
                .table
                .get(&peer)
                .map(|e| e.status.http.clone())
                .unwrap_or_default();
            out.push(Command::Dial { peer, http });
        }
    }

    /// The neighbour graph of the nodes not Down: their reported links, and
    /// this node's own links (others' reports of links to this node are
    /// ignored: this node knows its links better).
    fn graph(&self, now: Millis) -> Graph<P> {
        let mut g = Graph::new();
        g.entry(self.me).or_default();
        for e in self.table.iter() {
            let p = e.status.peer;
            if self.is_down(&p, now) {
                continue;
            }
            g.entry(p).or_default();
            for n in &e.status.neighbours {
                if *n != self.me && !self.is_down(n, now) {
                    graph::add_edge(&mut g, p, *n);
                }
            }
        }
        for p in self.connected.keys() {
            if self.link_live(p, now) {
                graph::add_edge(&mut g, self.me, *p);
            }
        }
        g
    }

    /// Peers to dial, best first.
    fn candidates(&mut self, now: Millis, relieving: &BTreeSet<P>) -> Vec<Candidate<P>> {
        let mut out: Vec<Candidate<P>> = Vec::new();
        for e in self.table.iter() {
            let peer = e.status.peer;
            if peer == self.me
                || self.connected.contains_key(&peer)
                || self.dialing.contains_key(&peer)
                || self.backoff.get(&peer).is_some_and(|b| b.until > now)
            {
                continue;
            }
            out.push(Candidate {
                peer,
                state: self
                    .table
                    .timeouts()
                    .state(now.saturating_sub(e.received_ms)),
                relieving: relieving.contains(&peer),
                km: match (self.geo, e.status.geo) {
                    (Some(a), Some(b)) => a.distance_km(&b),
                    _ => f64::INFINITY,
                },
                draw: 0,
            });
        }
        for c in &mut out {
            c.draw = self.rng.random();
        }
        out.sort_by(|a, b| {
            (a.state, !a.relieving)
                .cmp(&(b.state, !b.relieving))
                .then(a.km.total_cmp(&b.km))
                .then(a.draw.cmp(&b.draw))
        });
        out
    }

    /// Arms the timer for the next state change, backoff end or dial
    /// timeout, if not armed for it already.
    fn arm(&mut self, now: Millis, out: &mut Vec<Command<P>>) {
        let timeouts = self.table.timeouts();
        let states = self
            .table
            .iter()
            .filter_map(|e| timeouts.next_change(e.received_ms, now));
        let backoffs = self.backoff.values().map(|b| b.until).filter(|&t| t > now);
        let dials = self
            .dialing
            .values()
            .map(|s| s.saturating_add(self.config.dial_timeout_ms));
        let next = states.chain(backoffs).chain(dials).min();
        if let Some(at) = next
            && self.armed != Some(at)
        {
            self.armed = Some(at);
            out.push(Command::ArmTimer { at });
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Candidate<P> {
    peer: P,
    state: State,
    relieving: bool,
    km: f64,
    draw: u64,
}

/// A point on the Earth, in degrees.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Geo {
    pub lat: f64,
    pub lon: f64,
}

impl Geo {
    /// Parses `LAT,LON` in degrees, checking the ranges.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (lat, lon) = s
            .split_once(',')
            .ok_or_else(|| format!("{s:?} is not LAT,LON"))?;
        let lat: f64 = lat
            .trim()
            .parse()
            .map_err(|_| format!("latitude {lat:?} is not a number"))?;
        let lon: f64 = lon
            .trim()
            .parse()
            .map_err(|_| format!("longitude {lon:?} is not a number"))?;
        if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
            return Err(format!("{lat},{lon} is outside -90..90, -180..180"));
        }
        Ok(Geo { lat, lon })
    }

    /// Great-circle distance in kilometres (haversine).
    pub fn distance_km(&self, other: &Geo) -> f64 {
        const EARTH_RADIUS_KM: f64 = 6371.0;
        let (p1, p2) = (self.lat.to_radians(), other.lat.to_radians());
        let dp = p2 - p1;
        let dl = (other.lon - self.lon).to_radians();
        let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * a.sqrt().asin()
    }
}

#[cfg(test)]
mod geo_tests {
    use super::*;

    #[test]
    fn haversine_matches_known_distance() {
        let london = Geo::parse("51.5074,-0.1278").unwrap();
        let paris = Geo::parse("48.8566,2.3522").unwrap();
        let d = london.distance_km(&paris);
        assert!((d - 343.5).abs() < 2.0, "{d}");
        assert_eq!(london.distance_km(&london), 0.0);
    }

    #[test]
    fn bad_geo_is_an_error() {
        assert!(Geo::parse("91,0").is_err());
        assert!(Geo::parse("north").is_err());
        assert!(Geo::parse("1,x").is_err());
    }
}
