//! The discrete-event loop: nodes, their translators, faults and checks.

mod admission;

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use hearsay_admission::{Event as GateEvent, Kind as GateKind};
use hearsay_crdt::{Delta, DocId, Keypair, NewPost, NodeId, PostId, UserName, Verdict};
use hearsay_node::core::{CoreConfig, CoreState, Write, Written};
use hearsay_node::metrics::{Metrics, Source};
use hearsay_node::store::{FaultyStore, MemoryStore, read_page};
use hearsay_sync::{Acceptance, Batch, Command, Event, SyncMachine};
use hearsay_topology::{Geo, Status, Topology};

use crate::readers::Readers;
use admission::{Adm, Hello, Seat};
use rand::rngs::StdRng;
use rand::seq::IteratorRandom;
use rand::{Rng, SeedableRng};

use crate::SimConfig;
use crate::gossip::{Control, Gossip, Reply};
use crate::network::Network;
use crate::report::{Kind, Mesh, Plumtree, Report};

type Store = FaultyStore<MemoryStore>;
type Machine = SyncMachine<usize, u64>;

/// Wall-clock time of virtual time 0, as the cores see it (before skew).
const T0: u64 = 1_700_000_000_000;
/// Bytes a gossipsub message adds to its payload (from, seqno, topic,
/// signature, framing).
const GOSSIP_OVERHEAD: usize = 130;
/// Bytes of a message id (hearsay uses 20 bytes of SHA-256).
const ID_BYTES: usize = 20;
/// Bytes of a control message without its ids.
const CONTROL_OVERHEAD: usize = 16;
/// Request-response framing.
const RR_OVERHEAD: usize = 32;
const PING_BYTES: usize = 32;
/// A restarted node is down this long.
const RESTART_DOWN_MS: u64 = 500;
/// Bytes of a status without its neighbour list (signature, peer id,
/// addresses, figures, version vector of a small mesh, gossipsub framing).
const STATUS_BYTES: usize = 600;
/// Bytes per neighbour in a status (a peer id as text).
const NEIGHBOUR_BYTES: usize = 53;
/// Where nodes are: region centres (Frankfurt, Virginia, Tokyo); a node
/// sits within a few degrees of its region's.
const REGIONS: [(f64, f64); 3] = [(50.1, 8.7), (38.9, -77.0), (35.7, 139.7)];
/// The connectivity of the live mesh is sampled this often.
const SAMPLE_MS: u64 = 1_000;
const USERS: [&str; 3] = ["ann", "bob", "cy"];
/// Violations listed one by one before the rest are only counted.
const MAX_LISTED: usize = 30;

/// Runs one simulation to its end and checks the invariants.
pub fn run(config: &SimConfig) -> Report {
    let mut world = World::new(config);
    world.run();
    world.finish()
}

#[derive(Debug)]
enum Msg {
    Subscribe,
    Close,
    Publish {
        id: u64,
        payload: Arc<Vec<u8>>,
    },
    Control(Control),
    SyncRequest {
        have: hearsay_crdt::VersionVector,
    },
    SyncPage {
        deltas: Vec<Vec<u8>>,
        more: bool,
    },
    /// A status, and the certificate it carries (admission runs).
    Status(Arc<Status<usize>>, Option<Arc<Vec<u8>>>),
    /// An admission hello: a request (answered with the receiver's own) or
    /// the answer.
    Hello {
        request: bool,
        hello: Arc<Hello>,
    },
    /// A revocation on the admission topic (encoded).
    Revocation(Arc<Vec<u8>>),
    /// An equivocation proof on the admission topic (encoded).
    Proof(Arc<Vec<u8>>),
}

#[derive(Debug)]
enum Ev {
    Start {
        node: usize,
    },
    Timer {
        node: usize,
        inc: u64,
        at: u64,
    },
    Commit {
        node: usize,
        inc: u64,
    },
    Heartbeat {
        node: usize,
        inc: u64,
    },
    PingRound {
        node: usize,
        inc: u64,
    },
    Machine {
        node: usize,
        inc: u64,
        event: Event<usize, u64>,
    },
    Arrive {
        from: usize,
        to: usize,
        conn: u64,
        msg: Msg,
    },
    Connected {
        from: usize,
        to: usize,
        inc: u64,
    },
    Write {
        k: usize,
    },
    Crash {
        node: usize,
        down_ms: u64,
    },
    FailFlush {
        node: usize,
    },
    Split {
        fraction: f64,
    },
    Heal,
    /// An event-stream reader hops to a random live node and reads.
    Read {
        reader: usize,
    },
    /// A node publishes its status.
    StatusTick {
        node: usize,
        inc: u64,
    },
    TopologyTimer {
        node: usize,
        inc: u64,
        at: u64,
    },
    /// A node fails for good.
    Fail {
        node: usize,
    },
    /// The live mesh's connectivity is sampled.
    Sample,
    /// A node's admission timer.
    GateTimer {
        node: usize,
        inc: u64,
        at: u64,
    },
    /// The operator revokes a member.
    Revoke,
    /// A member signs two deltas with one seq.
    Equivocate,
    /// An outsider, the revoked member or the equivocator writes.
    RogueWrite {
        node: usize,
    },
}

impl Ev {
    /// (tag, node) for the trace hash.
    fn key(&self) -> (u8, usize) {
        match self {
            Ev::Start { node } => (0, *node),
            Ev::Timer { node, .. } => (1, *node),
            Ev::Commit { node, .. } => (2, *node),
            Ev::Heartbeat { node, .. } => (3, *node),
            Ev::PingRound { node, .. } => (4, *node),
            Ev::Machine { node, .. } => (5, *node),
            Ev::Arrive { to, .. } => (6, *to),
            Ev::Connected { from, .. } => (7, *from),
            Ev::Write { k } => (8, *k),
            Ev::Crash { node, .. } => (9, *node),
            Ev::FailFlush { node } => (10, *node),
            Ev::Split { .. } => (11, 0),
            Ev::Heal => (12, 0),
            Ev::Read { reader } => (13, *reader),
            Ev::StatusTick { node, .. } => (20, *node),
            Ev::TopologyTimer { node, .. } => (21, *node),
            Ev::Fail { node } => (22, *node),
            Ev::Sample => (23, 0),
            Ev::GateTimer { node, .. } => (30, *node),
            Ev::Revoke => (31, 0),
            Ev::Equivocate => (32, 0),
            Ev::RogueWrite { node } => (33, *node),
        }
    }
}

#[derive(Debug)]
struct Scheduled {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    /// Reversed: the heap pops the earliest, then the first scheduled.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// A write made at a node and waiting for its commit.
#[derive(Debug)]
struct Pending {
    post: PostId,
    body: String,
    first: u64,
    last: u64,
}

/// An acknowledged write.
#[derive(Debug)]
struct Acked {
    node: usize,
    post: PostId,
    body: String,
    last: u64,
    /// Deltas the write made.
    deltas: u64,
    acked_at: u64,
    /// Nodes it reached (first arrival), and when the last of them did.
    reached: usize,
    done_at: u64,
}

struct Node {
    key: Keypair,
    id: NodeId,
    skew_ms: i64,
    join: Vec<usize>,
    /// Incarnation: events of an earlier life are dropped.
    inc: u64,
    store: Store,
    core: Option<CoreState<Store>>,
    machine: Option<Machine>,
    gossip: Gossip,
    armed: Option<u64>,
    commit_due: bool,
    pending: Vec<Pending>,
    /// Per origin (node index): the highest seq this node ever held, to
    /// record first arrivals.
    known: Vec<u64>,
    /// Storage failed; waiting for the operator.
    failed: bool,
    /// Failed for good: never restarts.
    dead: bool,
    geo: Geo,
    region: usize,
    topology: Option<Topology<usize>>,
    topology_armed: Option<u64>,
    /// Newest status timestamp seen per node (flooding's duplicate filter).
    statuses: BTreeMap<usize, u64>,
    /// When the node first started (a late joiner's delays count from
    /// then).
    first_started: Option<u64>,
    /// Its admission (runs with [`crate::AdmissionSim`] only).
    seat: Option<Seat>,
}

struct World<'c> {
    config: &'c SimConfig,
    rng: StdRng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    net: Network,
    nodes: Vec<Node>,
    index: BTreeMap<NodeId, usize>,
    writes: Vec<Acked>,
    /// (origin, last seq of a write) -> write; only looked up.
    by_last: HashMap<(usize, u64), usize>,
    next_request: u64,
    published: (u64, u64),
    end: u64,
    trace: DefaultHasher,
    report: Report,
    readers: Readers,
    mesh: Mesh,
    /// Start of the current run of disconnected samples.
    disconnected_since: Option<u64>,
    /// Per acknowledged write, when each node first held it.
    arrivals: Vec<Vec<Option<u64>>>,
    /// The run's admission (runs with [`crate::AdmissionSim`] only).
    adm: Option<Adm>,
}

impl<'c> World<'c> {
    fn new(config: &'c SimConfig) -> Self {
        let members = config.nodes;
        assert!(members >= 2, "a simulation needs two nodes");
        // Outsiders come after the members.
        let n = members + config.admission.as_ref().map_or(0, |a| a.outsiders);
        let mut rng = StdRng::seed_from_u64(config.seed);
        let mut nodes = Vec::with_capacity(n);
        let mut index = BTreeMap::new();
        for i in 0..n {
            let key = Keypair::from_secret(rng.random());
            let id = key.id();
            index.insert(id, i);
            let skew = config.clock_skew_ms as i64;
            let skew_ms = if skew > 0 {
                rng.random_range(-skew..=skew)
            } else {
                0
            };
            // Everyone joins through members.
            let join = if config.join_earlier {
                (0..i.min(members)).choose_multiple(&mut rng, config.join_peers)
            } else {
                (0..members)
                    .filter(|j| *j != i)
                    .choose_multiple(&mut rng, config.join_peers)
            };
            let region = i % REGIONS.len();
            let (lat, lon) = REGIONS[region];
            let geo = Geo {
                lat: lat + rng.random_range(-3.0..3.0),
                lon: lon + rng.random_range(-3.0..3.0),
            };
            nodes.push(Node {
                key,
                id,
                skew_ms,
                join,
                inc: 0,
                store: FaultyStore::new(MemoryStore::default()),
                core: None,
                machine: None,
                gossip: Gossip::new(),
                armed: None,
                commit_due: false,
                pending: Vec::new(),
                known: vec![0; n],
                failed: false,
                dead: false,
                geo,
                region,
                topology: None,
                topology_armed: None,
                statuses: BTreeMap::new(),
                first_started: None,
                seat: None,
            });
        }
        let mut world = World {
            config,
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            net: Network::new(n, config.link.clone()),
            nodes,
            index,
            writes: Vec::new(),
            by_last: HashMap::new(),
            next_request: 0,
            published: (0, 0),
            end: 0,
            trace: DefaultHasher::new(),
            report: Report {
                seed: config.seed,
                nodes: members,
                ..Report::default()
            },
            readers: Readers::new(config.seed, config.readers),
            mesh: Mesh::default(),
            disconnected_since: None,
            arrivals: Vec::new(),
            adm: None,
        };
        world.setup_admission();
        world.schedule_scenario();
        world
    }

    fn schedule_scenario(&mut self) {
        let c = self.config;
        let n = c.nodes;
        let window = c.write_window_ms.max(1);
        let write_end = c.warmup_ms + window;
        // The last `joins` nodes start late, in the write window.
        let first_late = n - c.joins.min(n - 2);
        for node in 0..n {
            let at = if node < first_late {
                self.rng.random_range(0..500)
            } else {
                self.report.joined_late += 1;
                c.warmup_ms + self.rng.random_range(0..window)
            };
            self.at(at, Ev::Start { node });
        }
        let failing =
            (0..first_late).choose_multiple(&mut self.rng, c.failures.min(first_late - 1));
        // A late joiner joins through nodes that are up and stay up (an
        // operator joins a new node through a live one).
        let staying: Vec<usize> = (0..first_late).filter(|i| !failing.contains(i)).collect();
        for node in first_late..n {
            let want = c.join_peers.max(1);
            self.nodes[node].join = staying.iter().copied().choose_multiple(&mut self.rng, want);
        }
        for &node in &failing {
            let at = c.warmup_ms + self.rng.random_range(0..window);
            self.at(at, Ev::Fail { node });
        }
        if c.topology.is_some() || c.failures > 0 || c.joins > 0 {
            self.at(c.warmup_ms, Ev::Sample);
        }
        for k in 0..c.posts {
            let at = c.warmup_ms + self.rng.random_range(0..window);
            self.at(at, Ev::Write { k });
        }
        for reader in 0..self.readers.len() {
            let at = c.warmup_ms + self.readers.rng.random_range(0..c.reader_hop_ms.max(1));
            self.at(at, Ev::Read { reader });
        }
        let mut settle = write_end;
        if let Some(p) = &c.partition {
            self.at(
                p.at_ms,
                Ev::Split {
                    fraction: p.fraction,
                },
            );
            self.at(p.at_ms + p.duration_ms, Ev::Heal);
            settle = settle.max(p.at_ms + p.duration_ms);
        }
        let crashed = (0..n).choose_multiple(&mut self.rng, c.crashes.min(n));
        for node in crashed {
            let at = c.warmup_ms + self.rng.random_range(0..window);
            self.at(
                at,
                Ev::Crash {
                    node,
                    down_ms: c.crash_down_ms,
                },
            );
            settle = settle.max(at + c.crash_down_ms);
        }
        let failing = (0..n).choose_multiple(&mut self.rng, c.failed_flushes.min(n));
        for node in failing {
            let at = c.warmup_ms + self.rng.random_range(0..window.div_ceil(2));
            self.at(at, Ev::FailFlush { node });
            settle = settle.max(write_end + c.operator_restart_ms + RESTART_DOWN_MS);
        }
        settle = settle.max(self.schedule_admission(write_end));
        self.end = settle + c.quiet_ms;
    }

    fn at(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Scheduled {
            at,
            seq: self.seq,
            ev,
        });
    }

    fn after(&mut self, delay: u64, ev: Ev) {
        self.at(self.now + delay, ev);
    }

    fn run(&mut self) {
        while let Some(s) = self.queue.pop() {
            if s.at > self.end {
                break;
            }
            self.now = s.at;
            (s.at, s.seq, s.ev.key()).hash(&mut self.trace);
            self.report.events += 1;
            self.step(s.ev);
        }
        self.now = self.end;
    }

    fn alive(&self, node: usize, inc: u64) -> bool {
        let n = &self.nodes[node];
        n.inc == inc && n.core.is_some()
    }

    /// The wall clock of `node`'s core.
    fn local_ms(&self, node: usize) -> u64 {
        (T0 as i64 + self.now as i64 + self.nodes[node].skew_ms) as u64
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Start { node } => self.start(node),
            Ev::Timer { node, inc, at } => {
                if self.alive(node, inc) && self.nodes[node].armed == Some(at) {
                    self.feed(node, Event::Tick);
                }
            }
            Ev::Commit { node, inc } => {
                if self.alive(node, inc) {
                    self.commit(node);
                }
            }
            Ev::Heartbeat { node, inc } => {
                if self.alive(node, inc) {
                    self.heartbeat(node);
                    let every = self.config.gossip.heartbeat_ms;
                    self.after(every, Ev::Heartbeat { node, inc });
                }
            }
            Ev::PingRound { node, inc } => {
                if self.alive(node, inc) {
                    self.ping_round(node);
                    let every = self.config.ping_interval_ms;
                    self.after(every, Ev::PingRound { node, inc });
                }
            }
            Ev::Machine { node, inc, event } => {
                if self.alive(node, inc) {
                    self.feed(node, event);
                }
            }
            Ev::Arrive {
                from,
                to,
                conn,
                msg,
            } => self.arrive(from, to, conn, msg),
            Ev::Connected { from, to, inc } => self.connected(from, to, inc),
            Ev::Write { k } => self.client_write(k),
            Ev::Crash { node, down_ms } => {
                if self.nodes[node].core.is_some() {
                    self.report.crashes += 1;
                    self.crash(node, Some(down_ms));
                }
            }
            Ev::FailFlush { node } => {
                if self.nodes[node].core.is_some() {
                    self.report.failed_flushes += 1;
                    self.nodes[node].store.fail_flushes(1);
                }
            }
            Ev::Split { fraction } => self.net.split(&mut self.rng, fraction),
            Ev::Heal => self.net.heal(),
            Ev::Read { reader } => {
                self.read(reader);
                self.after(self.config.reader_hop_ms.max(1), Ev::Read { reader });
            }
            Ev::StatusTick { node, inc } => {
                if self.alive(node, inc) {
                    self.publish_status(node);
                    let every = self.config.status_interval_ms.max(1);
                    let jitter = self.rng.random_range(0..every / 10 + 1);
                    self.after(every - every / 20 + jitter, Ev::StatusTick { node, inc });
                }
            }
            Ev::TopologyTimer { node, inc, at } => {
                if self.alive(node, inc) && self.nodes[node].topology_armed == Some(at) {
                    self.feed_topology(node, hearsay_topology::Event::Tick);
                }
            }
            Ev::Fail { node } => {
                if !self.nodes[node].dead {
                    self.report.dead_nodes += 1;
                    self.crash(node, None);
                }
            }
            Ev::Sample => {
                self.sample();
                if self.now + SAMPLE_MS <= self.end {
                    self.after(SAMPLE_MS, Ev::Sample);
                }
            }
            Ev::GateTimer { node, inc, at } => self.gate_timer(node, inc, at),
            Ev::Revoke => self.revoke(),
            Ev::Equivocate => self.equivocate(),
            Ev::RogueWrite { node } => self.rogue_write(node),
        }
    }

    // ---- node lifecycle ---------------------------------------------------

    fn start(&mut self, node: usize) {
        if self.nodes[node].dead {
            return;
        }
        let local = self.local_ms(node);
        let n = &mut self.nodes[node];
        let core = match CoreState::open(
            n.store.clone(),
            n.key.clone(),
            core_config(),
            Metrics::new("sim", None),
            local,
        ) {
            Ok(core) => core,
            Err(e) => {
                self.report
                    .violations
                    .push(format!("node {node} failed to open its store: {e}"));
                return;
            }
        };
        if n.inc > 0 {
            self.report.restarts += 1;
        }
        let durable = core.durable().clone();
        n.core = Some(core);
        let seed = self.rng.random();
        n.machine = Some(SyncMachine::new(
            self.config.sync.clone(),
            seed,
            n.join.clone(),
            self.now,
        ));
        let inc = n.inc;
        n.first_started.get_or_insert(self.now);
        if let Some(config) = &self.config.topology {
            n.topology = Some(Topology::new(node, Some(n.geo), config.clone(), seed));
        }
        // Statuses carry certificates too: admission learns from them.
        if self.config.topology.is_some() || self.adm.is_some() {
            n.topology_armed = None;
            n.statuses.clear();
            let every = self.config.status_interval_ms.max(1);
            let first = self.rng.random_range(0..every);
            self.after(first, Ev::StatusTick { node, inc });
        }
        self.gate_start(node);
        self.feed(node, Event::Durable(durable));
        self.feed(node, Event::Tick);
        let hb = self
            .rng
            .random_range(0..self.config.gossip.heartbeat_ms.max(1));
        self.after(hb, Ev::Heartbeat { node, inc });
        let ping = self
            .rng
            .random_range(0..self.config.ping_interval_ms.max(1));
        self.after(ping, Ev::PingRound { node, inc });
    }

    /// The node stops; what it had not flushed is gone; it starts again
    /// from its store after `down_ms`, or never (`None`: failed for good).
    fn crash(&mut self, node: usize, down_ms: Option<u64>) {
        for (peer, conn) in self.net.clear(node) {
            let delay = self.net.delay(&mut self.rng);
            self.after(
                delay,
                Ev::Arrive {
                    from: node,
                    to: peer,
                    conn,
                    msg: Msg::Close,
                },
            );
        }
        let n = &mut self.nodes[node];
        n.store = n.store.crashed();
        n.core = None;
        n.machine = None;
        n.gossip = Gossip::new();
        n.armed = None;
        n.commit_due = false;
        n.failed = false;
        n.topology = None;
        n.topology_armed = None;
        n.statuses.clear();
        if let Some(seat) = n.seat.as_mut() {
            seat.gate = None;
        }
        n.inc += 1;
        self.report.writes_refused += n.pending.len() as u64;
        n.pending.clear();
        match down_ms {
            Some(down_ms) => self.after(down_ms, Ev::Start { node }),
            None => n.dead = true,
        }
    }

    fn schedule_commit(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        if !n.commit_due {
            n.commit_due = true;
            let inc = n.inc;
            self.after(self.config.commit_delay_ms, Ev::Commit { node, inc });
        }
    }

    fn commit(&mut self, node: usize) {
        self.nodes[node].commit_due = false;
        let Some(core) = self.nodes[node].core.as_mut() else {
            return;
        };
        match core.commit() {
            Ok(commit) => {
                let own = self.nodes[node].id;
                let pending = std::mem::take(&mut self.nodes[node].pending);
                for p in pending {
                    self.by_last.insert((node, p.last), self.writes.len());
                    self.writes.push(Acked {
                        node,
                        post: p.post,
                        body: p.body,
                        last: p.last,
                        deltas: p.last + 1 - p.first,
                        acked_at: self.now,
                        reached: 0,
                        done_at: self.now,
                    });
                    self.arrivals.push(vec![None; self.nodes.len()]);
                    self.report.writes_acked += 1;
                }
                let durable_own = commit.durable.get(&own);
                self.note_seq(node, node, durable_own);
                self.feed(node, Event::Durable(commit.durable));
                for delta in commit.publish {
                    let payload = Arc::new(delta.encode());
                    let id = message_id(&payload);
                    self.published.0 += 1;
                    self.published.1 += (payload.len() + GOSSIP_OVERHEAD) as u64;
                    let to =
                        self.nodes[node]
                            .gossip
                            .publish(id, payload.clone(), &self.config.gossip);
                    self.push(node, to, id, &payload);
                }
                for proof in commit.proofs {
                    self.on_core_proof(node, proof);
                }
            }
            Err(_) => {
                let n = &mut self.nodes[node];
                self.report.writes_refused += n.pending.len() as u64;
                n.pending.clear();
                if !n.failed {
                    // The node refuses writes; an operator restarts it.
                    n.failed = true;
                    self.after(
                        self.config.operator_restart_ms,
                        Ev::Crash {
                            node,
                            down_ms: RESTART_DOWN_MS,
                        },
                    );
                }
            }
        }
    }

    fn client_write(&mut self, k: usize) {
        let candidates: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].core.is_some() && !self.nodes[*i].failed)
            .filter(|i| self.is_honest(*i))
            .collect();
        let Some(&node) = candidates.iter().choose(&mut self.rng) else {
            self.report.writes_refused += 1;
            return;
        };
        let local = self.local_ms(node);
        let n = &mut self.nodes[node];
        let own = n.id;
        let Some(core) = n.core.as_mut() else {
            return;
        };
        let body = format!("post {k} written at node {node}");
        let new = NewPost {
            author: UserName::new(USERS[k % USERS.len()]).expect("valid user name"),
            body: body.clone(),
            reply_to: None,
        };
        let before = core.version_vector().get(&own);
        match core.write(Write::CreatePost(new), local) {
            Ok(Written::Post(post)) => {
                let last = core.version_vector().get(&own);
                n.pending.push(Pending {
                    post: post.id,
                    body,
                    first: before + 1,
                    last,
                });
                self.schedule_commit(node);
            }
            Ok(Written::Profile(_)) => unreachable!("a post write answers with the post"),
            Err(_) => self.report.writes_refused += 1,
        }
    }

    /// `node` now holds `origin`'s deltas up to `seq`: record first
    /// arrivals of acknowledged writes.
    fn note_seq(&mut self, node: usize, origin: usize, seq: u64) {
        let known = self.nodes[node].known[origin];
        if seq <= known {
            return;
        }
        self.nodes[node].known[origin] = seq;
        for s in known + 1..=seq {
            if let Some(&w) = self.by_last.get(&(origin, s)) {
                self.arrivals[w][node].get_or_insert(self.now);
                let w = &mut self.writes[w];
                w.reached += 1;
                w.done_at = self.now;
            }
        }
    }

    // ---- the mesh (topology machine, statuses) --------------------------

    /// Feeds `node`'s topology machine, if it runs one, and carries out its
    /// commands: dials through the same path as the sync machine's, timers
    /// as events.
    fn feed_topology(&mut self, node: usize, event: hearsay_topology::Event<usize>) {
        let Some(topology) = self.nodes[node].topology.as_mut() else {
            return;
        };
        for command in topology.handle(self.now, event) {
            match command {
                hearsay_topology::Command::Dial { peer, .. } => self.dial(node, peer),
                hearsay_topology::Command::ArmTimer { at } => {
                    let inc = self.nodes[node].inc;
                    self.nodes[node].topology_armed = Some(at);
                    self.at(at.max(self.now), Ev::TopologyTimer { node, inc, at });
                }
                hearsay_topology::Command::StateChanged { .. } => self.mesh.state_changes += 1,
            }
        }
    }

    /// The peers `node` has an open link to.
    fn linked(&self, node: usize) -> Vec<usize> {
        self.net
            .peers(node)
            .into_iter()
            .filter(|(peer, conn)| self.net.open(node, *peer, *conn))
            .map(|(peer, _)| peer)
            .collect()
    }

    /// `node` publishes its status: flooded over its links.
    fn publish_status(&mut self, node: usize) {
        let neighbours = self.linked(node);
        let local = self.local_ms(node);
        let n = &mut self.nodes[node];
        let revision = n.core.as_ref().map_or(0, |c| c.durable().sum());
        let status = Status {
            peer: node,
            http: format!("http://node{node}"),
            region: format!("r{}", n.region),
            geo: Some(n.geo),
            revision,
            revision_hash: revision,
            mean_response_ms: 1.0,
            error_rate: 0.0,
            replication_delay_p50_ms: 0.0,
            replication_delay_p99_ms: 0.0,
            neighbours: neighbours.clone(),
            uptime_s: 0,
            timestamp_ms: local,
        };
        n.statuses.insert(node, local);
        let certificate = n
            .seat
            .as_ref()
            .and_then(|s| s.presents.clone())
            .map(Arc::new);
        self.flood(node, None, Arc::new(status), certificate);
    }

    /// Sends `status` on every link of `node` but the one it came from.
    fn flood(
        &mut self,
        node: usize,
        from: Option<usize>,
        status: Arc<Status<usize>>,
        certificate: Option<Arc<Vec<u8>>>,
    ) {
        let bytes = STATUS_BYTES + NEIGHBOUR_BYTES * status.neighbours.len();
        for peer in self.linked(node) {
            if Some(peer) != from && peer != status.peer && self.gate_up(node, peer) {
                let msg = Msg::Status(status.clone(), certificate.clone());
                self.send(node, peer, msg, Kind::Status, bytes);
            }
        }
    }

    /// A status arrives at `to` from neighbour `from`: the first copy of a
    /// newer status goes to the topology machine and on to the other links.
    fn receive_status(
        &mut self,
        to: usize,
        from: usize,
        status: Arc<Status<usize>>,
        certificate: Option<Arc<Vec<u8>>>,
    ) {
        let n = &mut self.nodes[to];
        if (n.topology.is_none() && n.seat.is_none()) || status.peer == to {
            return;
        }
        let newest = n.statuses.entry(status.peer).or_insert(0);
        if *newest >= status.timestamp_ms {
            return;
        }
        *newest = status.timestamp_ms;
        self.feed_topology(
            to,
            hearsay_topology::Event::Status {
                from,
                status: Status::clone(&status),
            },
        );
        if let Some(c) = &certificate {
            let certificate = c.to_vec();
            self.gate_feed(to, GateEvent::Learned { certificate });
        }
        self.flood(to, Some(from), status, certificate);
    }

    /// The live nodes (running, not failed for good), honest ones only in
    /// an admission run.
    fn live(&self) -> Vec<bool> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| n.core.is_some() && !n.dead && self.is_honest(i))
            .collect()
    }

    /// Whether the live nodes' links connect them all, and the links per
    /// live node.
    fn connectivity(&self) -> (bool, Vec<usize>) {
        let live = self.live();
        let n = self.nodes.len();
        let mut adj = vec![Vec::new(); n];
        for (a, b) in self.net.edges() {
            if live[a] && live[b] {
                adj[a].push(b);
                adj[b].push(a);
            }
        }
        let degrees: Vec<usize> = (0..n).filter(|i| live[*i]).map(|i| adj[i].len()).collect();
        let Some(start) = (0..n).find(|i| live[*i]) else {
            return (true, degrees);
        };
        let mut seen = vec![false; n];
        seen[start] = true;
        let mut queue = VecDeque::from([start]);
        while let Some(a) = queue.pop_front() {
            for &b in &adj[a] {
                if !seen[b] {
                    seen[b] = true;
                    queue.push_back(b);
                }
            }
        }
        let connected = (0..n).all(|i| !live[i] || seen[i]);
        (connected, degrees)
    }

    fn sample(&mut self) {
        let (connected, _) = self.connectivity();
        self.mesh.samples += 1;
        if connected {
            self.disconnected_since = None;
        } else {
            self.mesh.disconnected_samples += 1;
            self.mesh.last_disconnected_ms = Some(self.now);
            let since = *self.disconnected_since.get_or_insert(self.now);
            self.mesh.longest_disconnected_ms = self
                .mesh
                .longest_disconnected_ms
                .max(self.now - since + SAMPLE_MS);
        }
    }

    // ---- the translator -------------------------------------------------

    /// Feeds `event` to `node`'s machine and carries out the commands, with
    /// the events they cause, until none is left.
    fn feed(&mut self, node: usize, event: Event<usize, u64>) {
        let mut events = VecDeque::from([event]);
        while let Some(event) = events.pop_front() {
            // Links go to the topology machine too, as the node's actor
            // reports them to both.
            let link = match &event {
                Event::PeerUp { peer, .. } => {
                    Some(hearsay_topology::Event::Connected { peer: *peer })
                }
                Event::PeerDown { peer } => {
                    Some(hearsay_topology::Event::Disconnected { peer: *peer })
                }
                Event::DialFailed { peer } => {
                    Some(hearsay_topology::Event::DialFailed { peer: *peer })
                }
                _ => None,
            };
            if let Some(link) = link {
                self.feed_topology(node, link);
            }
            let Some(machine) = self.nodes[node].machine.as_mut() else {
                return;
            };
            let commands = machine.handle(self.now, event);
            for command in commands {
                self.execute(node, command, &mut events);
            }
        }
    }

    fn execute(
        &mut self,
        node: usize,
        command: Command<usize, u64>,
        events: &mut VecDeque<Event<usize, u64>>,
    ) {
        match command {
            Command::SendSyncRequest { to, have } => {
                self.report.sync_rounds += 1;
                if self.net.conn(node, to).is_none() {
                    events.push_back(Event::RequestFailed { peer: to });
                } else {
                    let bytes = have.to_bytes().len() + RR_OVERHEAD;
                    self.send(
                        node,
                        to,
                        Msg::SyncRequest { have },
                        Kind::SyncRequest,
                        bytes,
                    );
                }
            }
            Command::ServePage {
                request,
                to,
                theirs,
                up_to,
                bounds,
            } => {
                let store = &self.nodes[node].store;
                let page = read_page(store, &theirs, &up_to, bounds.max_deltas, bounds.max_bytes);
                let (deltas, more) = match page {
                    Ok(page) => page,
                    Err(e) => {
                        self.report
                            .violations
                            .push(format!("node {node}: read_page failed: {e}"));
                        (Vec::new(), false)
                    }
                };
                if !deltas.is_empty() {
                    self.report.sync_pages_with_deltas += 1;
                }
                let bytes = deltas.iter().map(Vec::len).sum::<usize>() + RR_OVERHEAD;
                self.send(
                    node,
                    to,
                    Msg::SyncPage { deltas, more },
                    Kind::SyncPage,
                    bytes,
                );
                events.push_back(Event::Served { request });
            }
            Command::RespondEmpty { to, .. } => {
                let msg = Msg::SyncPage {
                    deltas: Vec::new(),
                    more: false,
                };
                self.send(node, to, msg, Kind::SyncPage, RR_OVERHEAD);
            }
            Command::Deliver { batch, deltas } => {
                let local = self.local_ms(node);
                let source = match batch {
                    Batch::Gossip { .. } => Source::Gossip,
                    Batch::Page { .. } => Source::Sync,
                };
                let origins: BTreeSet<NodeId> = deltas.iter().map(|d| d.origin).collect();
                let Some(core) = self.nodes[node].core.as_mut() else {
                    return;
                };
                let verdicts = core
                    .receive(vec![(deltas, source)], local)
                    .pop()
                    .unwrap_or_default();
                if verdicts.contains(&Verdict::Accepted) {
                    self.schedule_commit(node);
                }
                if source == Source::Sync {
                    for v in &verdicts {
                        match v {
                            Verdict::Accepted | Verdict::Buffered => {
                                self.report.sync_deltas_new += 1
                            }
                            Verdict::Duplicate => self.report.sync_deltas_duplicate += 1,
                            Verdict::Rejected(_) => {}
                        }
                    }
                }
                for origin in origins {
                    let Some(&o) = self.index.get(&origin) else {
                        continue;
                    };
                    if o == node {
                        continue;
                    }
                    let seq = self.nodes[node]
                        .core
                        .as_ref()
                        .map_or(0, |c| c.version_vector().get(&origin));
                    self.check_outsider_delta(node, o, seq);
                    self.note_seq(node, o, seq);
                }
                events.push_back(Event::Verdicts { batch, verdicts });
            }
            Command::ReportGossip {
                id,
                from,
                acceptance,
            } => {
                let accept = acceptance == Acceptance::Accept;
                if let Some((payload, to)) = self.nodes[node].gossip.validated(id, from, accept) {
                    self.push(node, to, id, &payload);
                }
            }
            Command::Dial { peer } => self.dial(node, peer),
            Command::Disconnect { peer } => {
                if self.close_conn(node, peer) && self.link_down(node, peer) {
                    events.push_back(Event::PeerDown { peer });
                }
            }
            Command::Bootstrap => {
                // A discovery query finds a few random nodes.
                let inc = self.nodes[node].inc;
                let found = (0..self.nodes.len())
                    .filter(|p| *p != node)
                    .choose_multiple(&mut self.rng, self.config.discovered_per_bootstrap);
                let delay = 2 * self.net.delay(&mut self.rng);
                for peer in found {
                    let event = Event::Discovered { peer };
                    self.after(delay, Ev::Machine { node, inc, event });
                }
            }
            Command::ArmTimer { at } => {
                let inc = self.nodes[node].inc;
                self.nodes[node].armed = Some(at);
                self.at(at.max(self.now), Ev::Timer { node, inc, at });
            }
        }
    }

    // ---- the network ----------------------------------------------------

    /// Pushes a full gossip message eagerly from `node` to `peers`.
    fn push(&mut self, node: usize, peers: Vec<usize>, id: u64, payload: &Arc<Vec<u8>>) {
        for peer in peers {
            let msg = Msg::Publish {
                id,
                payload: payload.clone(),
            };
            self.send(
                node,
                peer,
                msg,
                Kind::Eager,
                payload.len() + GOSSIP_OVERHEAD,
            );
        }
    }

    /// Sends `msg` on `from`'s connection to `to`, if any.
    fn send(&mut self, from: usize, to: usize, msg: Msg, kind: Kind, bytes: usize) {
        let Some(conn) = self.net.conn(from, to) else {
            return;
        };
        self.report.traffic.add(kind, bytes);
        // Hellos ride request-response on the connection, like pings.
        let lossy = kind != Kind::Ping && kind != Kind::Mesh && !matches!(msg, Msg::Hello { .. });
        let link = &self.net.link;
        let (loss, duplicate) = (link.loss, link.duplicate);
        if lossy && loss > 0.0 && self.rng.random_bool(loss) {
            return;
        }
        if lossy && duplicate > 0.0 && self.rng.random_bool(duplicate) {
            let copy = match &msg {
                Msg::Publish { id, payload } => Some(Msg::Publish {
                    id: *id,
                    payload: payload.clone(),
                }),
                Msg::Control(c) => Some(Msg::Control(c.clone())),
                Msg::SyncRequest { have } => Some(Msg::SyncRequest { have: have.clone() }),
                Msg::SyncPage { deltas, more } => Some(Msg::SyncPage {
                    deltas: deltas.clone(),
                    more: *more,
                }),
                Msg::Status(status, c) => Some(Msg::Status(status.clone(), c.clone())),
                Msg::Revocation(r) => Some(Msg::Revocation(r.clone())),
                Msg::Proof(p) => Some(Msg::Proof(p.clone())),
                Msg::Subscribe | Msg::Close | Msg::Hello { .. } => None,
            };
            if let Some(copy) = copy {
                let at = self.net.arrival(&mut self.rng, self.now, (from, to, conn));
                self.at(
                    at,
                    Ev::Arrive {
                        from,
                        to,
                        conn,
                        msg: copy,
                    },
                );
            }
        }
        let at = self.net.arrival(&mut self.rng, self.now, (from, to, conn));
        self.at(
            at,
            Ev::Arrive {
                from,
                to,
                conn,
                msg,
            },
        );
    }

    fn control_kind(control: &Control) -> (Kind, usize) {
        match control {
            Control::Graft | Control::Prune => (Kind::Mesh, CONTROL_OVERHEAD + 8),
            Control::IHave(ids) => (Kind::IHave, CONTROL_OVERHEAD + ID_BYTES * ids.len()),
            Control::IWant(ids) => (Kind::IWant, CONTROL_OVERHEAD + ID_BYTES * ids.len()),
        }
    }

    fn send_control(&mut self, from: usize, to: usize, control: Control) {
        let (kind, bytes) = Self::control_kind(&control);
        self.send(from, to, Msg::Control(control), kind, bytes);
    }

    fn arrive(&mut self, from: usize, to: usize, conn: u64, msg: Msg) {
        if self.nodes[to].core.is_none() || self.net.cut(from, to) {
            return;
        }
        if let Msg::Close = msg {
            if self.net.closed_by_peer(to, from, conn) {
                self.nodes[to].gossip.peer_gone(from);
                if self.link_down(to, from) {
                    self.feed(to, Event::PeerDown { peer: from });
                }
            }
            return;
        }
        if self.net.conn(to, from) != Some(conn) {
            return;
        }
        match msg {
            Msg::Close => {}
            Msg::Subscribe => {
                if !self.gate_up(to, from) {
                    // A mesh member once admitted.
                    self.gate_subscribed(to, from);
                } else if !self.nodes[to].gossip.peers.contains(&from) {
                    if let Some(graft) = self.nodes[to].gossip.subscribed(from, &self.config.gossip)
                    {
                        self.send_control(to, from, graft);
                    }
                    self.feed(to, Event::Subscribed { peer: from });
                }
            }
            Msg::Publish { id, payload } => {
                // A peer not admitted is graylisted: dropped unread.
                if self.gate_up(to, from) && self.nodes[to].gossip.receive(id, &payload) {
                    if !self.gate_check(to, from, GateKind::Gossip, payload.len()) {
                        self.nodes[to].gossip.validated(id, from, false);
                        return;
                    }
                    let event = match Delta::decode_verified(&payload) {
                        // A relay may not know yet that an origin was
                        // refused: ignored, not blamed on the relay.
                        Ok(delta) if !self.origin_ok(to, &delta) => {
                            self.nodes[to].gossip.validated(id, from, false);
                            return;
                        }
                        Ok(delta) => Event::Gossip { from, id, delta },
                        Err(_) => Event::GossipMalformed { from, id },
                    };
                    self.feed(to, event);
                }
            }
            Msg::Control(control) => {
                if !self.gate_up(to, from) {
                    return;
                }
                let reply = self.nodes[to]
                    .gossip
                    .control(from, control, &self.config.gossip);
                match reply {
                    Reply::None => {}
                    Reply::Control(c) => self.send_control(to, from, c),
                    Reply::Messages(messages) => {
                        for (id, payload) in messages {
                            let bytes = payload.len() + GOSSIP_OVERHEAD;
                            self.send(
                                to,
                                from,
                                Msg::Publish { id, payload },
                                Kind::IWantReply,
                                bytes,
                            );
                        }
                    }
                }
            }
            Msg::SyncRequest { have } => {
                let bytes = have.to_bytes().len();
                if !self.gate_up(to, from)
                    || !self.gate_check(to, from, GateKind::SyncRequest, bytes)
                {
                    // The node drops the channel: the requester sees a
                    // failure.
                    let (inc, delay) = (self.nodes[from].inc, self.net.delay(&mut self.rng));
                    let event = Event::RequestFailed { peer: to };
                    self.after(
                        delay,
                        Ev::Machine {
                            node: from,
                            inc,
                            event,
                        },
                    );
                    return;
                }
                let request = hearsay_sync::RequestId(self.next_request);
                self.next_request += 1;
                self.feed(
                    to,
                    Event::SyncRequest {
                        from,
                        request,
                        theirs: Some(have),
                    },
                );
            }
            Msg::Status(status, certificate) => {
                if self.gate_check(to, from, GateKind::Status, STATUS_BYTES) {
                    self.receive_status(to, from, status, certificate)
                }
            }
            Msg::Hello { request, hello } => self.on_hello(to, from, request, &hello),
            Msg::Revocation(revocation) => {
                if self.gate_check(to, from, GateKind::Admission, revocation.len()) {
                    self.on_revocation(to, from, &revocation);
                }
            }
            Msg::Proof(proof) => {
                if self.gate_check(to, from, GateKind::Admission, proof.len())
                    && !self.on_proof(to, proof.to_vec())
                {
                    self.gate_feed(
                        to,
                        GateEvent::Misbehaved {
                            peer: from,
                            what: "invalid equivocation proof",
                        },
                    );
                }
            }
            Msg::SyncPage { deltas, more } => {
                if !self.gate_up(to, from) {
                    return;
                }
                // The translator drops (and would count) what does not
                // decode, and leaves out deltas of a refused origin.
                let deltas: Vec<Delta> = deltas
                    .iter()
                    .filter_map(|b| Delta::decode(b).ok())
                    .collect();
                let deltas = deltas
                    .into_iter()
                    .filter(|d| self.origin_ok(to, d))
                    .collect();
                self.feed(to, Event::SyncPage { from, deltas, more });
            }
        }
    }

    /// Closes `node`'s connection to `peer`, if one is open: its gossip
    /// forgets the peer and the close reaches the other side after the
    /// link's delay. Whether the link is then down is [`World::link_down`]'s.
    fn close_conn(&mut self, node: usize, peer: usize) -> bool {
        let Some(conn) = self.net.close(node, peer) else {
            return false;
        };
        self.nodes[node].gossip.peer_gone(peer);
        let at = self
            .net
            .arrival(&mut self.rng, self.now, (node, peer, conn));
        self.at(
            at,
            Ev::Arrive {
                from: node,
                to: peer,
                conn,
                msg: Msg::Close,
            },
        );
        true
    }

    fn dial(&mut self, node: usize, peer: usize) {
        if node == peer || self.net.conn(node, peer).is_some() {
            return;
        }
        let inc = self.nodes[node].inc;
        let rtt = 2 * self.net.delay(&mut self.rng);
        if self.nodes[peer].core.is_none() {
            // Refused at once.
            let event = Event::DialFailed { peer };
            self.after(rtt, Ev::Machine { node, inc, event });
        } else if self.net.cut(node, peer) {
            let event = Event::DialFailed { peer };
            self.after(
                self.config.dial_timeout_ms,
                Ev::Machine { node, inc, event },
            );
        } else {
            // Transport, security and multiplexer handshakes.
            self.after(
                rtt,
                Ev::Connected {
                    from: node,
                    to: peer,
                    inc,
                },
            );
        }
    }

    fn connected(&mut self, a: usize, b: usize, inc: u64) {
        if !self.alive(a, inc) {
            return;
        }
        if self.nodes[b].core.is_none() || self.net.cut(a, b) {
            self.feed(a, Event::DialFailed { peer: b });
            return;
        }
        if self.net.conn(a, b).is_some() && self.net.conn(b, a) == self.net.conn(a, b) {
            // Both dialled each other; the first connection serves.
            return;
        }
        let (new_a, new_b, _) = self.net.connect(a, b);
        if new_a {
            self.link_up(a, b, true);
        }
        if new_b {
            self.link_up(b, a, false);
        }
        self.send(a, b, Msg::Subscribe, Kind::Mesh, CONTROL_OVERHEAD + 8);
        self.send(b, a, Msg::Subscribe, Kind::Mesh, CONTROL_OVERHEAD + 8);
    }

    fn ping_round(&mut self, node: usize) {
        let inc = self.nodes[node].inc;
        for (peer, conn) in self.net.peers(node) {
            if self.net.open(node, peer, conn) && self.nodes[peer].core.is_some() {
                self.report.traffic.add(Kind::Ping, PING_BYTES);
                self.report.traffic.add(Kind::Ping, PING_BYTES);
                let rtt = 2 * self.net.delay(&mut self.rng);
                let event = Event::PingOk { peer };
                self.after(rtt, Ev::Machine { node, inc, event });
            } else {
                self.report.traffic.add(Kind::Ping, PING_BYTES);
                let event = Event::PingFailed { peer };
                let timeout = self.config.ping_interval_ms;
                self.after(timeout, Ev::Machine { node, inc, event });
            }
        }
        // The core's housekeeping (checkpoints) runs on the same beat.
        let local = self.local_ms(node);
        if let Some(core) = self.nodes[node].core.as_mut() {
            core.tick(local);
            self.schedule_commit(node);
        }
    }

    fn heartbeat(&mut self, node: usize) {
        let controls = self.nodes[node]
            .gossip
            .heartbeat(&mut self.rng, &self.config.gossip);
        for (peer, control) in controls {
            self.send_control(node, peer, control);
        }
    }

    /// Reader `reader` reads at a random live node.
    fn read(&mut self, reader: usize) {
        let (nodes, adm) = (&self.nodes, self.adm.as_ref());
        let live = (0..nodes.len())
            .filter(|i| nodes[*i].core.is_some() && adm.is_none_or(|a| a.honest(*i)));
        let Some(node) = live.choose(&mut self.readers.rng) else {
            return;
        };
        let n = &self.nodes[node];
        let head = n.core.as_ref().expect("live").durable().clone();
        self.readers
            .hop(reader, node, &n.store, &head, &mut self.report.violations);
    }

    // ---- the end ----------------------------------------------------------

    fn finish(mut self) -> Report {
        let n = self.nodes.len();
        self.report.virtual_ms = self.now;
        let mut violations = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            match &node.core {
                None if node.dead => {}
                None => violations.push(format!("node {i} is down at the end")),
                Some(core) => {
                    if let Some(f) = core.failed() {
                        violations.push(format!("node {i} is failed at the end: {f}"));
                    }
                    if core.durable() != core.version_vector() {
                        violations.push(format!("node {i}: not everything it holds is durable"));
                    }
                }
            }
        }
        // Version vectors, heads of every document, held changes.
        // In an admission run: honest nodes only, and neither the origins
        // they may hold in part (see `AdmissionSim`) nor those origins'
        // posts.
        let ignored = self.ignored_origins();
        let rogue_posts = self
            .adm
            .as_ref()
            .map(|a| a.rogue_posts.clone())
            .unwrap_or_default();
        let mut reference: Option<(hearsay_crdt::VersionVector, Vec<_>)> = None;
        for i in 0..n {
            if !self.is_honest(i) {
                continue;
            }
            let Some(core) = self.nodes[i].core.as_mut() else {
                continue;
            };
            let mut vv = core.version_vector().clone();
            for origin in &ignored {
                vv.set(*origin, 0);
            }
            vv.to_bytes().hash(&mut self.trace);
            let replica = core.replica_mut();
            if replica.has_held() {
                violations.push(format!("node {i} holds a change waiting for dependencies"));
            }
            let docs = match replica.doc_ids() {
                Ok(ids) => ids
                    .into_iter()
                    .filter(|d| !matches!(d, DocId::Post(p) if rogue_posts.contains(p)))
                    .collect::<Vec<_>>(),
                Err(e) => {
                    violations.push(format!("node {i}: doc ids: {e}"));
                    continue;
                }
            };
            let mut heads = Vec::with_capacity(docs.len());
            for d in docs {
                match replica.heads(&d) {
                    Ok(h) => heads.push((d, h)),
                    Err(e) => violations.push(format!("node {i}: heads of {d}: {e}")),
                }
            }
            match &reference {
                None => reference = Some((vv, heads)),
                Some((rvv, rheads)) => {
                    if *rvv != vv {
                        violations.push(format!(
                            "node {i}: version vector differs from node 0's ({} vs {} deltas)",
                            vv.sum(),
                            rvv.sum()
                        ));
                    }
                    if *rheads != heads {
                        let differ = rheads.iter().zip(&heads).filter(|(a, b)| a != b).count()
                            + rheads.len().abs_diff(heads.len());
                        violations.push(format!(
                            "node {i}: heads differ from node 0's ({} vs {} documents, {differ} differ)",
                            heads.len(),
                            rheads.len()
                        ));
                    }
                }
            }
        }
        if let Some((_, heads)) = &reference {
            format!("{heads:?}").hash(&mut self.trace);
        }
        // Every reader, caught up at the first live node, saw each change once.
        if let Some(i) = (0..n).find(|i| self.nodes[*i].core.is_some() && self.is_honest(*i)) {
            let head = self.nodes[i].core.as_ref().expect("live").durable().clone();
            self.readers
                .finish(i, &self.nodes[i].store, &head, &ignored, &mut violations);
        }
        self.report.reader_hops = self.readers.hops;
        self.report.reader_ahead_hops = self.readers.ahead_hops;
        self.report.reader_events = self.readers.events;
        // Every acknowledged write, readable everywhere with its body; but
        // a write whose origin died for good before any survivor got it
        // went with the origin's disk.
        let ids: Vec<NodeId> = self.nodes.iter().map(|x| x.id).collect();
        let live = self.live();
        let lost: Vec<bool> = self
            .writes
            .iter()
            .map(|w| {
                self.nodes[w.node].dead
                    && (0..n).all(|i| {
                        !live[i]
                            || self.nodes[i]
                                .core
                                .as_ref()
                                .is_none_or(|c| c.version_vector().get(&ids[w.node]) < w.last)
                    })
            })
            .collect();
        self.report.lost_with_dead_origin = lost.iter().filter(|l| **l).count() as u64;
        for i in 0..n {
            if !self.is_honest(i) {
                continue;
            }
            let Some(core) = self.nodes[i].core.as_mut() else {
                continue;
            };
            for (k, w) in self.writes.iter().enumerate() {
                if lost[k] {
                    continue;
                }
                let origin = ids[w.node];
                if core.version_vector().get(&origin) < w.last {
                    violations.push(format!(
                        "node {i} lacks acknowledged write {k} (node {} seq {})",
                        w.node, w.last
                    ));
                    continue;
                }
                match core.replica_mut().post(w.post) {
                    Ok(Some(p)) if p.body == w.body => {}
                    other => violations.push(format!(
                        "node {i}: acknowledged post {k} reads as {other:?}"
                    )),
                }
            }
        }
        let mut delays = Vec::with_capacity(self.writes.len());
        let live_count = live.iter().filter(|l| **l).count();
        let mut last_arrival = 0;
        for (k, w) in self.writes.iter().enumerate() {
            if lost[k] {
                continue;
            }
            let at_live: Vec<u64> = (0..n)
                .filter(|i| live[*i])
                .filter_map(|i| self.arrivals[k][i])
                .collect();
            if at_live.len() < live_count {
                violations.push(format!(
                    "write {k} reached {} of {live_count} live nodes by the end",
                    at_live.len()
                ));
            } else {
                last_arrival = last_arrival.max(at_live.iter().copied().max().unwrap_or(0));
                // The delay to every survivor that was up when the write
                // was acknowledged (a node that joined later got it as
                // part of catching up, counted in the last arrival only).
                let done = (0..n)
                    .filter(|i| live[*i])
                    .filter(|i| {
                        self.nodes[*i]
                            .first_started
                            .is_some_and(|t| t <= w.acked_at)
                    })
                    .filter_map(|i| self.arrivals[k][i])
                    .max()
                    .unwrap_or(w.acked_at);
                delays.push(done.saturating_sub(w.acked_at));
            }
        }
        if self.mesh.samples > 0 {
            let (connected, degrees) = self.connectivity();
            self.mesh.connected_at_end = connected;
            self.mesh.min_degree_end = degrees.iter().copied().min().unwrap_or(0);
            self.mesh.mean_degree_end =
                degrees.iter().sum::<usize>() as f64 / degrees.len().max(1) as f64;
            self.report.mesh = Some(self.mesh.clone());
        }
        self.admission_finish(&mut violations);
        delays.sort_unstable();
        let at = |p: f64| -> u64 {
            if delays.is_empty() {
                0
            } else {
                delays[((delays.len() - 1) as f64 * p).round() as usize]
            }
        };
        let r = &mut self.report;
        r.delay_p50_ms = at(0.5);
        r.delay_p99_ms = at(0.99);
        r.delay_max_ms = delays.last().copied().unwrap_or(0);
        r.last_arrival_ms = last_arrival;
        let deltas: u64 = self.writes.iter().map(|w| w.deltas).sum();
        r.deltas_per_write = deltas as f64 / (self.writes.len().max(1)) as f64;
        // The graph and the yardstick.
        let edges = self.net.edges().len();
        r.mean_degree = 2.0 * edges as f64 / n as f64;
        r.mean_mesh_degree = self
            .nodes
            .iter()
            .map(|x| x.gossip.mesh.len())
            .sum::<usize>() as f64
            / n as f64;
        let full = if self.published.0 > 0 {
            self.published.1 as f64 / self.published.0 as f64
        } else {
            0.0
        };
        let dpw = r.deltas_per_write;
        let tree = (n - 1) as f64;
        let lazy = 2.0 * edges.saturating_sub(n - 1) as f64;
        r.plumtree = Plumtree {
            edges,
            eager_messages_per_write: tree * dpw,
            eager_bytes_per_write: tree * dpw * full,
            lazy_messages_per_write: lazy * dpw,
            lazy_bytes_per_write: lazy * dpw * (CONTROL_OVERHEAD + ID_BYTES) as f64,
        };
        let total = violations.len();
        if total > MAX_LISTED {
            violations.truncate(MAX_LISTED);
            violations.push(format!("... and {} more", total - MAX_LISTED));
        }
        r.violations = violations;
        r.trace_hash = self.trace.finish();
        self.report
    }
}

/// The core's settings in every simulated node.
fn core_config() -> CoreConfig {
    CoreConfig {
        cache_docs: 1024,
        checkpoint_interval_ms: 5_000,
        checkpoint_deltas: hearsay_node::core::CHECKPOINT_DELTAS,
    }
}

/// A gossip message id from its content (the node hashes the payload too).
fn message_id(payload: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    payload.hash(&mut h);
    h.finish()
}
