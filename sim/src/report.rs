//! What a run reports, and how it prints.

use std::collections::BTreeMap;
use std::fmt;

/// Kinds of messages, for the traffic figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Full gossip messages pushed through the mesh (and flood-published).
    Eager,
    /// IHAVE control messages (lists of message ids).
    IHave,
    /// IWANT control messages.
    IWant,
    /// Full gossip messages sent in answer to IWANT.
    IWantReply,
    /// GRAFT, PRUNE and subscriptions.
    Mesh,
    /// Anti-entropy requests (a version vector).
    SyncRequest,
    /// Anti-entropy answers (a page of deltas, possibly empty).
    SyncPage,
    /// Pings and pongs.
    Ping,
    /// Node statuses, flooded over the links (the node's status topic).
    Status,
    /// Hellos, revocations and equivocation proofs (admission runs only).
    Admission,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Eager,
        Kind::IHave,
        Kind::IWant,
        Kind::IWantReply,
        Kind::Mesh,
        Kind::SyncRequest,
        Kind::SyncPage,
        Kind::Ping,
        Kind::Status,
        Kind::Admission,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Eager => "gossip eager",
            Kind::IHave => "gossip ihave",
            Kind::IWant => "gossip iwant",
            Kind::IWantReply => "gossip iwant reply",
            Kind::Mesh => "mesh control",
            Kind::SyncRequest => "sync request",
            Kind::SyncPage => "sync page",
            Kind::Ping => "ping",
            Kind::Status => "status",
            Kind::Admission => "admission",
        }
    }
}

/// Messages and bytes sent, by kind (indexed as [`Kind::ALL`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub messages: [u64; 10],
    pub bytes: [u64; 10],
}

impl Traffic {
    pub fn add(&mut self, kind: Kind, bytes: usize) {
        self.messages[kind as usize] += 1;
        self.bytes[kind as usize] += bytes as u64;
    }

    pub fn messages(&self, kind: Kind) -> u64 {
        self.messages[kind as usize]
    }

    pub fn bytes(&self, kind: Kind) -> u64 {
        self.bytes[kind as usize]
    }
}

/// What a broadcast tree (plumtree, as iroh-gossip uses) would send for the
/// same writes over the same graph: each delta once along the N-1 edges of a
/// spanning tree, and an IHAVE of its id both ways over every other edge.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plumtree {
    /// Undirected connections at the end of the run.
    pub edges: usize,
    pub eager_messages_per_write: f64,
    pub eager_bytes_per_write: f64,
    pub lazy_messages_per_write: f64,
    pub lazy_bytes_per_write: f64,
}

/// The live mesh as the topology machine kept it: the link graph of the
/// live nodes, sampled once a second from the end of the warm-up.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Mesh {
    pub samples: u64,
    /// Samples in which the live nodes did not form one connected graph.
    pub disconnected_samples: u64,
    /// Longest run of disconnected samples, in ms.
    pub longest_disconnected_ms: u64,
    /// Virtual time of the last disconnected sample, if any.
    pub last_disconnected_ms: Option<u64>,
    pub connected_at_end: bool,
    /// Links per live node at the end.
    pub min_degree_end: usize,
    pub mean_degree_end: f64,
    /// Failure-detector verdicts reported (alive, suspect, down changes).
    pub state_changes: u64,
}

/// How far something about one node (a revocation, an equivocation proof)
/// spread, in virtual ms from `at_ms`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Spread {
    /// The node revoked or proven to equivocate.
    pub node: usize,
    /// When the revocation entered the mesh / the node signed twice.
    pub at_ms: u64,
    /// The seq signed twice (equivocation only).
    pub seq: u64,
    /// Until the first node knew (the proof's first detection).
    pub first_known_after_ms: Option<u64>,
    /// Until the last honest live node knew; `None`: one never did.
    pub known_everywhere_after_ms: Option<u64>,
    /// Until the last honest node closed its last admitted link to the
    /// node; `None`: no honest node had one then.
    pub last_link_closed_after_ms: Option<u64>,
    /// Deltas of the node refused before the core by the origin check.
    pub deltas_refused: u64,
}

/// What admission did in a run with [`crate::AdmissionSim`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AdmissionFigures {
    pub members: usize,
    pub outsiders: usize,
    /// Links closed by the machine, by reason.
    pub disconnects: BTreeMap<&'static str, u64>,
    /// Messages dropped by the machine's check, by reason.
    pub dropped: BTreeMap<&'static str, u64>,
    /// Deltas refused before the core by the origin check, by reason.
    pub origins_refused: BTreeMap<&'static str, u64>,
    /// Links opened by outsiders to members, or by members to outsiders.
    pub outsider_links: u64,
    /// Writes made by outsiders, the revoked member and the equivocator.
    pub rogue_writes: u64,
    pub revocation: Option<Spread>,
    pub equivocation: Option<Spread>,
}

fn counts(m: &BTreeMap<&'static str, u64>) -> String {
    if m.is_empty() {
        return "none".to_owned();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn after(ms: Option<u64>) -> String {
    ms.map_or("never".to_owned(), |ms| format!("{ms} ms"))
}

/// The outcome of one run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub seed: u64,
    pub nodes: usize,
    /// Virtual time at the end.
    pub virtual_ms: u64,
    /// Events processed.
    pub events: u64,
    pub writes_acked: u64,
    /// Writes refused or never acknowledged (failed node, failed flush, crash).
    pub writes_refused: u64,
    pub deltas_per_write: f64,
    /// From a write's acknowledgement to its presence at every node.
    pub delay_p50_ms: u64,
    pub delay_p99_ms: u64,
    pub delay_max_ms: u64,
    /// Virtual time at which the last acknowledged write reached its last
    /// node (e.g. to compare with the end of a partition).
    pub last_arrival_ms: u64,
    pub traffic: Traffic,
    /// Anti-entropy requests sent.
    pub sync_rounds: u64,
    /// Of which answered with at least one delta.
    pub sync_pages_with_deltas: u64,
    /// Deltas anti-entropy brought that the node lacked, and ones it held.
    pub sync_deltas_new: u64,
    pub sync_deltas_duplicate: u64,
    pub crashes: u64,
    pub failed_flushes: u64,
    pub restarts: u64,
    /// Mean connections per node and mesh peers per node at the end.
    pub mean_degree: f64,
    pub mean_mesh_degree: f64,
    pub plumtree: Plumtree,
    /// Event-stream readers: hops between nodes, hops to a node behind the
    /// reader's token, change events received.
    pub reader_hops: u64,
    pub reader_ahead_hops: u64,
    pub reader_events: u64,
    /// The live mesh's connectivity (see [`Mesh`]), sampled in runs with
    /// the topology machine or with failures and joins.
    pub mesh: Option<Mesh>,
    /// Nodes that failed for good (left out of the end checks but for the
    /// writes they acknowledged).
    pub dead_nodes: usize,
    /// Nodes that started late, joining a running mesh.
    pub joined_late: usize,
    /// Writes acknowledged by a node that then died for good before any
    /// surviving node got them: lost with their node's disk (not counted as
    /// a violation; a write any survivor got must reach every survivor).
    pub lost_with_dead_origin: u64,
    /// Admission figures, in runs with [`crate::AdmissionSim`].
    pub admission: Option<AdmissionFigures>,
    /// Hash of the whole trace: equal seeds give equal hashes.
    pub trace_hash: u64,
    /// Broken invariants; empty when the run passed.
    pub violations: Vec<String>,
}

impl Report {
    /// Panics with every violation, if any.
    pub fn assert_ok(&self) {
        assert!(
            self.violations.is_empty(),
            "seed {}: {} violations:\n{}",
            self.seed,
            self.violations.len(),
            self.violations.join("\n")
        );
    }

    fn per_write(&self, x: u64) -> f64 {
        x as f64 / self.writes_acked.max(1) as f64
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {} | {} nodes | {} writes acked, {} refused | {:.0} s virtual, {} events | trace {:016x}",
            self.seed,
            self.nodes,
            self.writes_acked,
            self.writes_refused,
            self.virtual_ms as f64 / 1000.0,
            self.events,
            self.trace_hash
        )?;
        writeln!(
            f,
            "  delay ack -> every node: p50 {} ms, p99 {} ms, max {} ms; last arrival at {} ms",
            self.delay_p50_ms, self.delay_p99_ms, self.delay_max_ms, self.last_arrival_ms
        )?;
        writeln!(
            f,
            "  faults: {} crashes, {} failed flushes, {} restarts | degree {:.1}, mesh {:.1}",
            self.crashes,
            self.failed_flushes,
            self.restarts,
            self.mean_degree,
            self.mean_mesh_degree
        )?;
        writeln!(
            f,
            "  event-stream readers: {} hops ({} to a node behind the token), {} change events, each once",
            self.reader_hops, self.reader_ahead_hops, self.reader_events
        )?;
        writeln!(
            f,
            "  anti-entropy: {} rounds ({:.1} per write), {} pages with deltas: {} new, {} duplicate",
            self.sync_rounds,
            self.per_write(self.sync_rounds),
            self.sync_pages_with_deltas,
            self.sync_deltas_new,
            self.sync_deltas_duplicate
        )?;
        writeln!(f, "  per write (gossipsub model):")?;
        let (mut push_m, mut push_b) = (0, 0);
        for kind in Kind::ALL {
            let (m, b) = (self.traffic.messages(kind), self.traffic.bytes(kind));
            if kind == Kind::Admission && m == 0 {
                continue;
            }
            if matches!(
                kind,
                Kind::Eager | Kind::IHave | Kind::IWant | Kind::IWantReply
            ) {
                push_m += m;
                push_b += b;
            }
            writeln!(
                f,
                "    {:<20} {:>10.1} msgs {:>12.0} bytes",
                kind.name(),
                self.per_write(m),
                self.per_write(b)
            )?;
        }
        writeln!(
            f,
            "    {:<20} {:>10.1} msgs {:>12.0} bytes",
            "push path total",
            self.per_write(push_m),
            self.per_write(push_b)
        )?;
        let p = &self.plumtree;
        writeln!(
            f,
            "  per write (plumtree yardstick, {} edges, {:.1} deltas/write):",
            p.edges, self.deltas_per_write
        )?;
        writeln!(
            f,
            "    {:<20} {:>10.1} msgs {:>12.0} bytes",
            "eager (tree)", p.eager_messages_per_write, p.eager_bytes_per_write
        )?;
        writeln!(
            f,
            "    {:<20} {:>10.1} msgs {:>12.0} bytes",
            "lazy ihave", p.lazy_messages_per_write, p.lazy_bytes_per_write
        )?;
        writeln!(
            f,
            "    {:<20} {:>10.1} msgs {:>12.0} bytes",
            "push path total",
            p.eager_messages_per_write + p.lazy_messages_per_write,
            p.eager_bytes_per_write + p.lazy_bytes_per_write
        )?;
        if let Some(m) = &self.mesh {
            writeln!(
                f,
                "  mesh: {} dead, {} joined late | {} samples, {} disconnected (longest {} ms, last at {}) | connected at end: {} | degree min {} mean {:.1} | {} state changes | {} writes lost with their dead origin",
                self.dead_nodes,
                self.joined_late,
                m.samples,
                m.disconnected_samples,
                m.longest_disconnected_ms,
                m.last_disconnected_ms
                    .map_or("never".to_owned(), |t| format!("{t} ms")),
                m.connected_at_end,
                m.min_degree_end,
                m.mean_degree_end,
                m.state_changes,
                self.lost_with_dead_origin
            )?;
        }
        if let Some(a) = &self.admission {
            writeln!(
                f,
                "  admission: {} members, {} outsiders ({} links with members, {} rogue writes) | disconnects: {} | dropped: {} | origins refused: {}",
                a.members,
                a.outsiders,
                a.outsider_links,
                a.rogue_writes,
                counts(&a.disconnects),
                counts(&a.dropped),
                counts(&a.origins_refused)
            )?;
            if let Some(r) = &a.revocation {
                writeln!(
                    f,
                    "  revocation of node {} at {} ms: known by every honest live node after {}, last honest link to it closed after {}, {} of its deltas refused",
                    r.node,
                    r.at_ms,
                    after(r.known_everywhere_after_ms),
                    after(r.last_link_closed_after_ms),
                    r.deltas_refused
                )?;
            }
            if let Some(e) = &a.equivocation {
                writeln!(
                    f,
                    "  equivocation by node {} at {} ms (seq {}): first detected after {}, known by every honest live node after {}, last honest link to it closed after {}, {} of its deltas refused",
                    e.node,
                    e.at_ms,
                    e.seq,
                    after(e.first_known_after_ms),
                    after(e.known_everywhere_after_ms),
                    after(e.last_link_closed_after_ms),
                    e.deltas_refused
                )?;
            }
        }
        if self.violations.is_empty() {
            write!(f, "  invariants: ok")
        } else {
            write!(f, "  invariants: {} VIOLATED", self.violations.len())
        }
    }
}
