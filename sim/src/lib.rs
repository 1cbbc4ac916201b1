//! hearsay-sim: a seeded, deterministic simulation of many hearsay nodes.
//!
//! Each simulated node runs the real code of a node's decisions: the real
//! [`CoreState`](hearsay_node::core::CoreState) (replica, log, group commit,
//! typed verdicts) over a fault-injecting in-memory store
//! ([`FaultyStore`](hearsay_node::store::FaultyStore) around
//! [`MemoryStore`](hearsay_node::store::MemoryStore)), and the real
//! [`SyncMachine`](hearsay_sync::SyncMachine) (anti-entropy, serving, gossip
//! acceptance, links). What the simulation replaces is the IO: the swarm,
//! sockets, disk and clock.
//!
//! The simulation is the translator that `node/src/net.rs` is for a real
//! node: it carries out the machine's commands (a sync request becomes a
//! message over a link, a page is read with
//! [`read_page`](hearsay_node::store::read_page) from the node's store, a
//! delivery goes to the core and its verdicts back to the machine, an
//! accepted gossip message is forwarded in the mesh, a dial becomes a link
//! after a handshake or a failure) and feeds the machine the events a swarm
//! would: links up and down, subscriptions, pings, requests, pages, and
//! the core's durable vector after every commit.
//!
//! Everything runs on virtual time in one discrete-event loop (a binary heap
//! ordered by time, then by insertion), with one [`StdRng`](rand::rngs::StdRng)
//! seeded from [`SimConfig::seed`] deciding every random choice: latencies,
//! losses, the mesh, who writes when, faults. Nothing that decides an outcome
//! iterates a hash map, and no wall clock is read, so the same seed gives the
//! same trace ([`Report::trace_hash`]).
//!
//! The virtual network ([`network`]) has per-message latency with jitter
//! (so messages reorder), loss and duplication, partitions that heal (dials,
//! messages and pings across the cut fail), and crashes: a crashed node loses
//! everything it had not flushed and restarts from its store. A failed flush
//! leaves a node refusing writes until an operator restarts it. Each node's
//! clock, as seen by its core, is skewed by a fixed offset.
//!
//! Eager push is modelled on gossipsub's mesh ([`gossip`]); see that module
//! for what is and is not modelled.
//!
//! With [`SimConfig::topology`] set, every node also runs the real
//! [`Topology`](hearsay_topology::Topology) machine: each node's status
//! (its links, position, revision, clock) is flooded over the links every
//! `status_interval_ms` with a per-origin newest-timestamp filter, as the
//! node's status topic does; links up and down and failed dials go to both
//! machines; the topology's dials take the same path as the sync machine's.
//! [`SimConfig::failures`] nodes fail for good and [`SimConfig::joins`]
//! nodes start late, and the live mesh's connectivity is sampled every
//! second ([`Mesh`]). The end checks then cover the live nodes; a write
//! whose origin died before any survivor got it is counted apart
//! ([`Report::lost_with_dead_origin`]).
//!
//! With [`SimConfig::admission`] set, the mesh is closed by an operator key
//! derived from the seed and every node also runs the real
//! [`Admission`](hearsay_admission::Admission) machine, fed what the node's
//! network actor feeds it (`node/src/net/admission.rs`): links, the
//! certificates of the hellos, revocations and equivocation proofs
//! (flooded over admitted links and carried in hellos), its timers. Until
//! the machine admits a peer, the peer is no sync or gossip partner; deltas
//! of a refused origin never reach the core. Outsiders (nodes without a
//! valid certificate) dial members and write, a member may be revoked, and
//! one may sign two deltas with one seq; see [`AdmissionSim`] for what is
//! then checked.
//!
//! At the end of a run, after the network healed and a quiet period, the
//! invariants are checked ([`Report::violations`]): every node has the same
//! version vector and the same heads for every document, and every
//! acknowledged write is readable, with its body, at every node. The
//! [`Report`] gives the delay from a write's acknowledgement to its presence
//! at every node, the traffic per write by kind, the anti-entropy rounds,
//! and what a broadcast tree (plumtree) would have sent over the same graph.
//!
//! ```no_run
//! let config = hearsay_sim::SimConfig { nodes: 20, posts: 10, ..Default::default() };
//! let report = hearsay_sim::run(&config);
//! println!("{report}");
//! assert!(report.violations.is_empty());
//! ```

pub mod gossip;
pub mod network;
mod readers;
mod report;
mod world;

pub use gossip::GossipConfig;
pub use network::{LinkConfig, Partition};
pub use report::{AdmissionFigures, Kind, Mesh, Plumtree, Report, Spread, Traffic};
pub use world::run;

/// Environment variable that sets the seed of [`seed_from_env`].
pub const SEED_ENV: &str = "HEARSAY_SIM_SEED";

/// The seed from `HEARSAY_SIM_SEED`, or `default` when unset; panics on a
/// value that is not a u64, naming the variable.
pub fn seed_from_env(default: u64) -> u64 {
    match std::env::var(SEED_ENV) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{SEED_ENV}={v:?} is not an unsigned integer")),
        Err(_) => default,
    }
}

/// The seed from `HEARSAY_SIM_SEED`, or a random one; printed either way so
/// a failing run can be repeated.
pub fn seed_from_env_or_random() -> u64 {
    let seed = seed_from_env(rand::random());
    eprintln!("{SEED_ENV}={seed}");
    seed
}

/// One simulated run. Times are virtual milliseconds from the start.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub nodes: usize,
    /// Posts written by clients (each is one delta), spread uniformly
    /// over the write window at random nodes.
    pub posts: usize,
    /// Writes start this long after the start (the mesh forms first).
    pub warmup_ms: u64,
    pub write_window_ms: u64,
    /// After the last write and the end of every fault, the run goes on this
    /// long before the invariants are checked.
    pub quiet_ms: u64,
    pub link: LinkConfig,
    pub partition: Option<Partition>,
    /// Nodes that crash (at a random time in the write window) and restart
    /// from their store `crash_down_ms` later.
    pub crashes: usize,
    pub crash_down_ms: u64,
    /// Nodes whose next flush fails (at a random time in the write window);
    /// an operator restarts a failed node `operator_restart_ms` later.
    pub failed_flushes: usize,
    pub operator_restart_ms: u64,
    /// Each node's clock is off by a fixed amount in `-skew..=skew`.
    pub clock_skew_ms: u64,
    /// Join peers per node (random other nodes).
    pub join_peers: usize,
    /// Peers a discovery bootstrap finds.
    pub discovered_per_bootstrap: usize,
    /// A core commits (one flush for everything since the last commit) this
    /// long after the first uncommitted change: group commit.
    pub commit_delay_ms: u64,
    pub ping_interval_ms: u64,
    /// A dial across a partition fails after this long.
    pub dial_timeout_ms: u64,
    pub sync: hearsay_sync::Config,
    pub gossip: GossipConfig,
    /// Event-stream readers hopping between random live nodes with their
    /// token, one hop every `reader_hop_ms` (see `readers.rs`).
    pub readers: usize,
    pub reader_hop_ms: u64,
    /// Run the topology machine on every node (statuses flooded over the
    /// links every `status_interval_ms`, dials carried out); `None` leaves
    /// links to join peers, discovery and the sync machine's redials.
    pub topology: Option<hearsay_topology::Config>,
    pub status_interval_ms: u64,
    /// Nodes that fail for good at a random time in the write window.
    pub failures: usize,
    /// Nodes that start at a random time in the write window instead of at
    /// the start, joining through `join_peers` nodes started before them.
    pub joins: usize,
    /// Join peers are drawn among the nodes started earlier only (with one
    /// join peer, the start graph is a tree).
    pub join_earlier: bool,
    /// A closed mesh with admission on every node (see [`AdmissionSim`]);
    /// `None`: no admission machine, every link is a mesh link at once.
    pub admission: Option<AdmissionSim>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 0,
            nodes: 20,
            posts: 20,
            warmup_ms: 3_000,
            write_window_ms: 10_000,
            quiet_ms: 10_000,
            link: LinkConfig::default(),
            partition: None,
            crashes: 0,
            crash_down_ms: 3_000,
            failed_flushes: 0,
            operator_restart_ms: 2_000,
            clock_skew_ms: 0,
            join_peers: 3,
            discovered_per_bootstrap: 3,
            commit_delay_ms: 2,
            ping_interval_ms: 1_000,
            dial_timeout_ms: 2_000,
            sync: hearsay_sync::Config::default(),
            gossip: GossipConfig::default(),
            readers: 3,
            reader_hop_ms: 700,
            topology: None,
            status_interval_ms: 1_000,
            failures: 0,
            joins: 0,
            join_earlier: false,
            admission: None,
        }
    }
}

/// Admission in a simulated closed mesh.
///
/// The operator key is derived from the seed; each of the
/// [`SimConfig::nodes`] members holds a certificate. The end checks then
/// cover the *honest* members (not revoked, not the equivocator), and add:
/// no member ever holds a delta of an outsider and no member ever admits
/// one; every honest live node knows the revocation and the equivocation
/// within `spread_ms` of it entering the mesh (of its first detection, for
/// an equivocation), keeps no link to the node, admits it no more and
/// takes none of its deltas above what it held when it learnt. Honest nodes
/// must converge on every other origin: the version vectors without the
/// revoked node's and the equivocator's entries, and the heads of every
/// document but their posts (they legitimately differ: each node holds
/// what it took before it learnt).
#[derive(Clone, Debug)]
pub struct AdmissionSim {
    /// Extra nodes without a valid certificate (none, one from another
    /// operator, or a member's), which run the same code, dial members
    /// (their join peers) and write.
    pub outsiders: usize,
    /// The operator revokes one random member at this time; the revocation
    /// enters at one random honest live node, as
    /// `hearsay operator revoke --node` does.
    pub revoke_at_ms: Option<u64>,
    /// One member signs two different deltas with one seq, at a random time
    /// in the middle of the write window, and pushes one copy to half of its
    /// gossip peers and the other to the rest.
    pub equivocator: bool,
    /// How long a revocation or an equivocation proof may take to reach
    /// every honest live node (no partition assumed).
    pub spread_ms: u64,
    /// Outsiders, the revoked member and the equivocator write a post this
    /// often through the write window (not client writes: not checked as
    /// acknowledged).
    pub rogue_write_ms: u64,
    /// The machine's settings (timeouts, budgets); `operator` is replaced
    /// by the run's operator.
    pub machine: hearsay_admission::Config,
}

impl Default for AdmissionSim {
    fn default() -> Self {
        AdmissionSim {
            outsiders: 0,
            revoke_at_ms: None,
            equivocator: false,
            spread_ms: 5_000,
            rogue_write_ms: 500,
            machine: hearsay_admission::Config::default(),
        }
    }
}
