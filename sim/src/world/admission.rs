//! The simulation's admission translator: what `node/src/net/admission.rs`
//! is for a real node, over the virtual network.
//!
//! Each running node holds the real [`Admission`] machine and a [`Gate`]
//! around it, as the node's actor does:
//! - On a new link the machine gets `Connected` with the peer's key and
//!   answers `Present`: a [`Hello`] (certificate, revocations, proofs) goes
//!   out as a request, and the peer answers with its own. Until the machine
//!   says `Admit`, the peer is not fed to the sync machine (no `PeerUp`,
//!   its subscription is held back and replayed), its gossip and control
//!   messages are dropped unread (gossipsub graylists it), its sync
//!   requests are refused (the requester sees a failure) and its pages
//!   dropped. `Disconnect` closes the link.
//! - Every gossip, status, notice and sync request is charged to the peer
//!   first ([`Admission::check`]).
//! - Deltas (pushed or in pages) of an origin the machine refuses
//!   ([`Admission::origin_allowed`]) never reach the core.
//! - Revocations and proofs are flooded over admitted links (the node's
//!   admission topic) and carried in hellos; a proof is checked, handed to
//!   the core, and forwarded once the core made it durable (its commit's
//!   `proofs`). Persisted revocations survive a crash (the node's store).
//!
//! The rogue behaviours ([`crate::AdmissionSim`]) live here too: outsiders'
//! certificates, the revocation, the double signing, and rogue writes; and
//! so do the end checks and figures of admission runs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use hearsay_admission::{
    Admission, Certificate, Check, Command as GateCommand, Event as GateEvent, Kind as GateKind,
    OperatorKey, Reason, Revocation,
};
use hearsay_crdt::{Delta, Equivocation, Keypair, NewPost, NodeId, PostId, UserName};
use hearsay_node::core::{CoreState, Write, Written};
use hearsay_node::metrics::Metrics;
use hearsay_sync::Event;
use rand::Rng;
use rand::seq::{IteratorRandom, SliceRandom};

use super::{Ev, GOSSIP_OVERHEAD, Msg, RR_OVERHEAD, T0, USERS, World, core_config, message_id};
use crate::AdmissionSim;
use crate::report::{AdmissionFigures, Kind, Spread};

/// Hellos taken from one peer per connection; more is misbehaviour (as
/// the node).
const MAX_HELLOS: u32 = 4;
/// Equivocation proofs a node keeps for its hellos (as the node).
const MAX_PROOFS: usize = 256;

/// An admission hello, as the node's `Hello`.
#[derive(Debug)]
pub(super) struct Hello {
    certificate: Option<Vec<u8>>,
    revocations: Vec<Vec<u8>>,
    proofs: Vec<Vec<u8>>,
}

impl Hello {
    fn bytes(&self) -> usize {
        RR_OVERHEAD
            + self.certificate.as_ref().map_or(0, Vec::len)
            + self.revocations.iter().map(Vec::len).sum::<usize>()
            + self.proofs.iter().map(Vec::len).sum::<usize>()
    }
}

/// A connected peer the machine has not admitted yet.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    dialer: bool,
    /// It subscribed meanwhile: replayed at admission.
    subscribed: bool,
}

/// A running node's admission state (gone with a crash).
pub(super) struct Gate {
    machine: Admission<usize>,
    armed: Option<u64>,
    waiting: BTreeMap<usize, Waiting>,
    /// Admitted connected peers, as the sync machine knows them.
    up: BTreeSet<usize>,
    hellos: BTreeMap<usize, u32>,
    proofs: Vec<Vec<u8>>,
}

/// What a node keeps across restarts.
pub(super) struct Seat {
    /// Its own valid certificate (members).
    certificate: Option<Certificate>,
    /// What its hellos carry: its certificate, or for an outsider nothing,
    /// one of another operator, or a member's.
    pub(super) presents: Option<Vec<u8>>,
    /// Revocations it persisted (its store's meta key).
    persisted: Vec<Vec<u8>>,
    pub(super) gate: Option<Gate>,
}

/// When a node learnt of a revocation or equivocation, and the seq of the
/// node concerned it held then.
type Learnt = Option<(u64, u64)>;

/// The run's admission state.
pub(super) struct Adm {
    config: AdmissionSim,
    /// The machine's config, with the run's operator.
    machine: hearsay_admission::Config,
    operator: OperatorKey,
    members: usize,
    revoked: Option<usize>,
    equivocator: Option<usize>,
    /// Posts of the revoked member and the equivocator: nodes may hold
    /// them in part, so they are left out of the convergence check.
    pub(super) rogue_posts: BTreeSet<PostId>,
    revoked_at: Option<u64>,
    learnt_revocation: Vec<Learnt>,
    /// When the equivocator signed twice, and the seq.
    equivocated: Option<(u64, u64)>,
    learnt_equivocation: Vec<Learnt>,
    /// Last time an honest node closed an admitted link to the revoked
    /// node (to the equivocator) after the fact.
    revoked_cut: Option<u64>,
    equivocator_cut: Option<u64>,
    /// Members already reported for holding an outsider's delta.
    holds_outsider: Vec<bool>,
    revoked_refused: u64,
    equivocator_refused: u64,
    figures: AdmissionFigures,
}

impl Adm {
    pub(super) fn honest(&self, i: usize) -> bool {
        i < self.members && Some(i) != self.revoked && Some(i) != self.equivocator
    }
}

fn bump(counts: &mut BTreeMap<&'static str, u64>, reason: Reason) {
    *counts.entry(reason.as_str()).or_default() += 1;
}

impl World<'_> {
    // ---- setup ----------------------------------------------------------

    /// The operator key, every member's certificate, what outsiders present.
    pub(super) fn setup_admission(&mut self) {
        let Some(config) = self.config.admission.clone() else {
            return;
        };
        let members = self.config.nodes;
        let operator = OperatorKey::from_keypair(Keypair::from_secret(self.rng.random()));
        let foreign = OperatorKey::from_keypair(Keypair::from_secret(self.rng.random()));
        let issued = T0 - 60_000;
        let admit = |op: &OperatorKey, node: &super::Node| {
            op.admit(node.id, &format!("r{}", node.region), issued, None)
                .expect("a valid certificate")
        };
        let certificates: Vec<Certificate> = self.nodes[..members]
            .iter()
            .map(|n| admit(&operator, n))
            .collect();
        for i in 0..self.nodes.len() {
            let (certificate, presents) = if i < members {
                let c = certificates[i].clone();
                let bytes = c.encode();
                (Some(c), Some(bytes))
            } else {
                match (i - members) % 3 {
                    0 => (None, None),
                    1 => (None, Some(admit(&foreign, &self.nodes[i]).encode())),
                    _ => (None, Some(certificates[(i - members) % members].encode())),
                }
            };
            self.nodes[i].seat = Some(Seat {
                certificate,
                presents,
                persisted: Vec::new(),
                gate: None,
            });
        }
        let mut machine = config.machine.clone();
        machine.operator = Some(operator.id());
        let n = self.nodes.len();
        self.adm = Some(Adm {
            figures: AdmissionFigures {
                members,
                outsiders: config.outsiders,
                ..AdmissionFigures::default()
            },
            config,
            machine,
            operator,
            members,
            revoked: None,
            equivocator: None,
            rogue_posts: BTreeSet::new(),
            revoked_at: None,
            learnt_revocation: vec![None; n],
            equivocated: None,
            learnt_equivocation: vec![None; n],
            revoked_cut: None,
            equivocator_cut: None,
            holds_outsider: vec![false; members],
            revoked_refused: 0,
            equivocator_refused: 0,
        });
    }

    /// Outsiders' starts, the revocation, the double signing and the rogue
    /// writes; returns when they are over.
    pub(super) fn schedule_admission(&mut self, write_end: u64) -> u64 {
        let Some(adm) = self.adm.as_ref() else {
            return 0;
        };
        let (members, config) = (adm.members, adm.config.clone());
        for node in members..self.nodes.len() {
            let at = self.rng.random_range(0..500);
            self.at(at, Ev::Start { node });
        }
        let picked = (0..members).choose_multiple(&mut self.rng, 2);
        let mut settle = write_end;
        let revoked = config.revoke_at_ms.map(|at| {
            self.at(at, Ev::Revoke);
            settle = settle.max(at);
            picked[0]
        });
        let equivocator = config.equivocator.then(|| {
            let window = self.config.write_window_ms.max(4);
            let at = self.config.warmup_ms + window / 4 + self.rng.random_range(0..window / 2);
            self.at(at, Ev::Equivocate);
            picked[1]
        });
        let rogues: Vec<usize> = revoked
            .into_iter()
            .chain(equivocator)
            .chain(members..self.nodes.len())
            .collect();
        let every = config.rogue_write_ms.max(1);
        for node in rogues {
            let at = self.config.warmup_ms + self.rng.random_range(0..every);
            self.at(at, Ev::RogueWrite { node });
        }
        let adm = self.adm.as_mut().expect("admission run");
        adm.revoked = revoked;
        adm.equivocator = equivocator;
        settle
    }

    /// Whether `i` is an honest node: always outside admission runs;
    /// otherwise a member neither revoked nor equivocating.
    pub(super) fn is_honest(&self, i: usize) -> bool {
        self.adm.as_ref().is_none_or(|a| a.honest(i))
    }

    /// Origins honest nodes may hold in part: the revoked member's and the
    /// equivocator's (and outsiders', which they must not hold at all).
    pub(super) fn ignored_origins(&self) -> BTreeSet<NodeId> {
        let Some(adm) = &self.adm else {
            return BTreeSet::new();
        };
        (0..self.nodes.len())
            .filter(|i| !adm.honest(*i))
            .map(|i| self.nodes[i].id)
            .collect()
    }

    // ---- the machine ----------------------------------------------------

    fn gate(&self, node: usize) -> Option<&Gate> {
        self.nodes[node].seat.as_ref()?.gate.as_ref()
    }

    fn gate_mut(&mut self, node: usize) -> Option<&mut Gate> {
        self.nodes[node].seat.as_mut()?.gate.as_mut()
    }

    /// A (re)started node's machine, with what it persisted and the proofs
    /// its core holds.
    pub(super) fn gate_start(&mut self, node: usize) {
        let Some(adm) = &self.adm else {
            return;
        };
        let config = adm.machine.clone();
        let n = &mut self.nodes[node];
        let Some(core) = n.core.as_ref() else {
            return;
        };
        let equivocators = core.equivocators().iter().map(|e| e.origin).collect();
        let proofs = core.proofs().into_iter().take(MAX_PROOFS).collect();
        let Some(seat) = n.seat.as_mut() else {
            return;
        };
        seat.gate = Some(Gate {
            machine: Admission::new(config, n.id, seat.certificate.clone()),
            armed: None,
            waiting: BTreeMap::new(),
            up: BTreeSet::new(),
            hellos: BTreeMap::new(),
            proofs,
        });
        let revocations = seat.persisted.clone();
        self.gate_feed(
            node,
            GateEvent::Restored {
                revocations,
                equivocators,
            },
        );
    }

    /// Feeds `node`'s machine at its wall clock and carries out the commands.
    pub(super) fn gate_feed(
        &mut self,
        node: usize,
        event: GateEvent<usize>,
    ) -> Vec<GateCommand<usize>> {
        let now = self.local_ms(node);
        let Some(gate) = self.gate_mut(node) else {
            return Vec::new();
        };
        let commands = gate.machine.handle(now, event);
        for c in &commands {
            self.gate_execute(node, c.clone());
        }
        commands
    }

    fn gate_execute(&mut self, node: usize, command: GateCommand<usize>) {
        match command {
            GateCommand::Admit { peer } => self.admitted(node, peer),
            GateCommand::Disconnect { peer, reason } => {
                if let Some(adm) = self.adm.as_mut() {
                    bump(&mut adm.figures.disconnects, reason);
                }
                self.close_link(node, peer);
            }
            GateCommand::Persist { revocation } => {
                let Some(gate) = self.gate(node) else {
                    return;
                };
                let kept = gate.machine.revocations().map(Revocation::encode).collect();
                if let Some(seat) = self.nodes[node].seat.as_mut() {
                    seat.persisted = kept;
                }
                if let Ok(r) = Revocation::decode(&revocation) {
                    self.learnt(node, r.node, false);
                }
            }
            GateCommand::Publish { revocation } => {
                let revocation = Arc::new(revocation);
                for peer in self.admitted_peers(node) {
                    let bytes = revocation.len() + GOSSIP_OVERHEAD;
                    let msg = Msg::Revocation(revocation.clone());
                    self.send(node, peer, msg, Kind::Admission, bytes);
                }
            }
            GateCommand::Present { peer } => self.send_hello(node, peer, true),
            GateCommand::ArmTimer { at } => {
                let local = self.local_ms(node);
                let inc = self.nodes[node].inc;
                if let Some(gate) = self.gate_mut(node) {
                    gate.armed = Some(at);
                    self.after(at.saturating_sub(local), Ev::GateTimer { node, inc, at });
                }
            }
            GateCommand::Refused { reason } => {
                if let Some(adm) = self.adm.as_mut() {
                    bump(&mut adm.figures.dropped, reason);
                }
            }
        }
    }

    pub(super) fn gate_timer(&mut self, node: usize, inc: u64, at: u64) {
        if self.alive(node, inc) && self.gate(node).is_some_and(|g| g.armed == Some(at)) {
            self.gate_feed(node, GateEvent::Tick);
        }
    }

    /// `node` now knows of `about` (revoked, or proven to equivocate when
    /// `equivocation`): noted with the seq of it the node holds.
    fn learnt(&mut self, node: usize, about: NodeId, equivocation: bool) {
        let (now, held) = (
            self.now,
            self.nodes[node]
                .core
                .as_ref()
                .map_or(0, |c| c.version_vector().get(&about)),
        );
        let Some(adm) = self.adm.as_mut() else {
            return;
        };
        let (who, learnt) = if equivocation {
            (adm.equivocator, &mut adm.learnt_equivocation)
        } else {
            (adm.revoked, &mut adm.learnt_revocation)
        };
        if who.is_some_and(|w| self.nodes[w].id == about) {
            learnt[node].get_or_insert((now, held));
        }
    }

    // ---- links ----------------------------------------------------------

    /// Whether `peer` is a mesh partner of `node`: admitted, or any peer
    /// outside admission runs.
    pub(super) fn gate_up(&self, node: usize, peer: usize) -> bool {
        match self.nodes[node].seat.as_ref() {
            None => true,
            Some(seat) => seat.gate.as_ref().is_some_and(|g| g.up.contains(&peer)),
        }
    }

    fn admitted_peers(&self, node: usize) -> Vec<usize> {
        self.gate(node).map_or_else(Vec::new, |g| {
            g.up.iter()
                .copied()
                .filter(|p| self.net.conn(node, *p).is_some())
                .collect()
        })
    }

    /// A new link of `node` to `peer`: a sync partner at once, or pending
    /// admission.
    pub(super) fn link_up(&mut self, node: usize, peer: usize, dialer: bool) {
        let Some(adm) = self.adm.as_mut() else {
            self.feed(node, Event::PeerUp { peer, dialer });
            return;
        };
        if node < adm.members && peer >= adm.members {
            adm.figures.outsider_links += 1;
        }
        let key = self.nodes[peer].id;
        let Some(gate) = self.gate_mut(node) else {
            return;
        };
        gate.waiting.insert(
            peer,
            Waiting {
                dialer,
                subscribed: false,
            },
        );
        self.gate_feed(node, GateEvent::Connected { peer, node: key });
    }

    /// `node`'s link to `peer` is gone; whether the sync machine knew it
    /// (then it gets `PeerDown`).
    pub(super) fn link_down(&mut self, node: usize, peer: usize) -> bool {
        let Some(gate) = self.gate_mut(node) else {
            return self.adm.is_none();
        };
        gate.waiting.remove(&peer);
        gate.hellos.remove(&peer);
        let was_up = gate.up.remove(&peer);
        self.gate_feed(node, GateEvent::Disconnected { peer });
        if was_up && self.is_honest(node) {
            let now = self.now;
            if let Some(adm) = self.adm.as_mut() {
                if adm.revoked == Some(peer) && adm.revoked_at.is_some_and(|at| now >= at) {
                    adm.revoked_cut = Some(now);
                }
                if adm.equivocator == Some(peer) && adm.equivocated.is_some_and(|(at, _)| now >= at)
                {
                    adm.equivocator_cut = Some(now);
                }
            }
        }
        was_up
    }

    /// Closes every connection of `node` to `peer` (admission's verdict).
    fn close_link(&mut self, node: usize, peer: usize) {
        self.close_conn(node, peer);
        if self.link_down(node, peer) {
            self.feed(node, Event::PeerDown { peer });
        }
    }

    /// The machine admitted `peer`: a sync partner now, and a mesh member
    /// if it subscribed meanwhile.
    fn admitted(&mut self, node: usize, peer: usize) {
        let (now, key) = (self.local_ms(node), self.nodes[peer].id);
        let Some(gate) = self.gate_mut(node) else {
            return;
        };
        let Some(waiting) = gate.waiting.remove(&peer) else {
            return;
        };
        gate.up.insert(peer);
        let refused = gate.machine.origin_allowed(now, &key).err();
        if let Some(adm) = &self.adm
            && node < adm.members
        {
            if peer >= adm.members {
                self.report
                    .violations
                    .push(format!("node {node} admitted outsider {peer}"));
            } else if let Some(reason) = refused {
                self.report.violations.push(format!(
                    "node {node} admitted node {peer}, whose deltas it refuses ({reason})"
                ));
            }
        }
        self.feed(
            node,
            Event::PeerUp {
                peer,
                dialer: waiting.dialer,
            },
        );
        if waiting.subscribed {
            self.gate_subscribed(node, peer);
        }
    }

    /// `peer` subscribed to the delta topic: a mesh member once admitted.
    pub(super) fn gate_subscribed(&mut self, node: usize, peer: usize) {
        if self.gate_up(node, peer) {
            if !self.nodes[node].gossip.peers.contains(&peer) {
                if let Some(graft) = self.nodes[node]
                    .gossip
                    .subscribed(peer, &self.config.gossip)
                {
                    self.send_control(node, peer, graft);
                }
                self.feed(node, Event::Subscribed { peer });
            }
        } else if let Some(w) = self.gate_mut(node).and_then(|g| g.waiting.get_mut(&peer)) {
            w.subscribed = true;
        }
    }

    // ---- messages -------------------------------------------------------

    /// Charges a message from `peer` to its budgets: whether to read it.
    pub(super) fn gate_check(
        &mut self,
        node: usize,
        peer: usize,
        kind: GateKind,
        bytes: usize,
    ) -> bool {
        let now = self.local_ms(node);
        let Some(gate) = self.gate_mut(node) else {
            return true;
        };
        let (reason, disconnect) = match gate.machine.check(now, &peer, kind, bytes) {
            Check::Pass => return true,
            Check::Drop(reason) => (reason, false),
            Check::Disconnect(reason) => (reason, true),
        };
        if let Some(adm) = self.adm.as_mut() {
            bump(&mut adm.figures.dropped, reason);
        }
        if disconnect {
            self.gate_execute(node, GateCommand::Disconnect { peer, reason });
        }
        false
    }

    /// Whether a delta's origin may be taken at `node`; counts a refusal.
    pub(super) fn origin_ok(&mut self, node: usize, delta: &Delta) -> bool {
        let now = self.local_ms(node);
        let Some(gate) = self.gate(node) else {
            return true;
        };
        let Err(reason) = gate.machine.origin_allowed(now, &delta.origin) else {
            return true;
        };
        let Some(adm) = self.adm.as_mut() else {
            return false;
        };
        bump(&mut adm.figures.origins_refused, reason);
        if adm
            .revoked
            .is_some_and(|r| self.nodes[r].id == delta.origin)
        {
            adm.revoked_refused += 1;
        }
        if adm
            .equivocator
            .is_some_and(|e| self.nodes[e].id == delta.origin)
        {
            adm.equivocator_refused += 1;
        }
        false
    }

    fn send_hello(&mut self, node: usize, peer: usize, request: bool) {
        let Some(seat) = self.nodes[node].seat.as_ref() else {
            return;
        };
        let Some(gate) = seat.gate.as_ref() else {
            return;
        };
        let hello = Hello {
            certificate: seat.presents.clone(),
            revocations: gate.machine.revocations().map(Revocation::encode).collect(),
            proofs: gate.proofs.clone(),
        };
        let bytes = hello.bytes();
        let msg = Msg::Hello {
            request,
            hello: Arc::new(hello),
        };
        self.send(node, peer, msg, Kind::Admission, bytes);
    }

    /// A hello from `from`: answered if a request; its certificate to the
    /// machine; its revocations and proofs taken once `from` is admitted.
    pub(super) fn on_hello(&mut self, node: usize, from: usize, request: bool, hello: &Hello) {
        let Some(gate) = self.gate_mut(node) else {
            return;
        };
        let n = gate.hellos.entry(from).or_default();
        *n += 1;
        if *n > MAX_HELLOS {
            let what = "too many hellos";
            self.gate_feed(node, GateEvent::Misbehaved { peer: from, what });
            return;
        }
        if request {
            self.send_hello(node, from, false);
        }
        if let Some(certificate) = &hello.certificate {
            let certificate = certificate.clone();
            self.gate_feed(
                node,
                GateEvent::Presented {
                    peer: from,
                    certificate,
                },
            );
        }
        if !self.gate_up(node, from) {
            return;
        }
        for revocation in &hello.revocations {
            self.on_revocation(node, from, revocation);
        }
        for proof in &hello.proofs {
            if !self.on_proof(node, proof.clone()) {
                let what = "invalid equivocation proof";
                self.gate_feed(node, GateEvent::Misbehaved { peer: from, what });
            }
        }
    }

    pub(super) fn on_revocation(&mut self, node: usize, from: usize, revocation: &[u8]) {
        let revocation = revocation.to_vec();
        self.gate_feed(
            node,
            GateEvent::Revocation {
                from: Some(from),
                revocation,
            },
        );
    }

    /// A proof from a peer: checked here, then kept by the core (which
    /// forwards it once durable) and acted on at once. False: it does not
    /// check out.
    pub(super) fn on_proof(&mut self, node: usize, bytes: Vec<u8>) -> bool {
        let Ok(proof) = Equivocation::decode(&bytes) else {
            return false;
        };
        let origin = proof.origin();
        let Some(gate) = self.gate(node) else {
            return true;
        };
        if gate.machine.equivocators().any(|n| *n == origin) {
            return true;
        }
        self.gate_feed(node, GateEvent::Equivocated { node: origin });
        self.learnt(node, origin, true);
        let local = self.local_ms(node);
        if let Some(core) = self.nodes[node].core.as_mut()
            && core.receive_proof(&bytes, local).is_ok()
        {
            self.schedule_commit(node);
        }
        true
    }

    /// A proof the core found or took in, now durable: refuse the origin
    /// and tell the mesh.
    pub(super) fn on_core_proof(&mut self, node: usize, bytes: Vec<u8>) {
        if self.gate(node).is_none() {
            return;
        }
        if let Ok(proof) = Equivocation::decode(&bytes) {
            let origin = proof.origin();
            self.gate_feed(node, GateEvent::Equivocated { node: origin });
            self.learnt(node, origin, true);
        }
        let proof = Arc::new(bytes);
        if let Some(gate) = self.gate_mut(node)
            && gate.proofs.len() < MAX_PROOFS
            && !gate.proofs.contains(&*proof)
        {
            gate.proofs.push(proof.to_vec());
        }
        for peer in self.admitted_peers(node) {
            let bytes = proof.len() + GOSSIP_OVERHEAD;
            self.send(
                node,
                peer,
                Msg::Proof(proof.clone()),
                Kind::Admission,
                bytes,
            );
        }
    }

    /// Reports a member that holds a delta of an outsider (once per member).
    pub(super) fn check_outsider_delta(&mut self, node: usize, origin: usize, seq: u64) {
        let Some(adm) = self.adm.as_mut() else {
            return;
        };
        if node < adm.members && origin >= adm.members && seq > 0 && !adm.holds_outsider[node] {
            adm.holds_outsider[node] = true;
            self.report.violations.push(format!(
                "node {node} accepted a delta of outsider {origin} (seq {seq})"
            ));
        }
    }

    // ---- the rogues -------------------------------------------------------

    /// The operator revokes the chosen member; the revocation enters at one
    /// random honest live node.
    pub(super) fn revoke(&mut self) {
        let Some(adm) = self.adm.as_ref() else {
            return;
        };
        let Some(revoked) = adm.revoked else {
            return;
        };
        let entry = (0..adm.members)
            .filter(|i| adm.honest(*i) && self.nodes[*i].core.is_some())
            .choose(&mut self.rng);
        let Some(entry) = entry else {
            return;
        };
        let local = self.local_ms(entry);
        let revocation = adm.operator.revoke(self.nodes[revoked].id, local).encode();
        self.adm.as_mut().expect("admission run").revoked_at = Some(self.now);
        let commands = self.gate_feed(
            entry,
            GateEvent::Revocation {
                from: None,
                revocation,
            },
        );
        if let Some(GateCommand::Refused { reason }) = commands
            .iter()
            .find(|c| matches!(c, GateCommand::Refused { .. }))
        {
            self.report.violations.push(format!(
                "node {entry} refused the operator's revocation: {reason}"
            ));
        }
    }

    /// The equivocator signs two posts with its next seq (the second with a
    /// twin core over a copy of its store) and pushes one to half of its
    /// gossip peers, the other to the rest.
    pub(super) fn equivocate(&mut self) {
        let Some(e) = self.adm.as_ref().and_then(|a| a.equivocator) else {
            return;
        };
        if self.nodes[e].core.is_none() {
            self.report.violations.push(format!(
                "equivocator {e} was down when it was to equivocate"
            ));
            return;
        }
        // Everything staged first, so the twin starts from the same seq.
        self.commit(e);
        let local = self.local_ms(e);
        let n = &mut self.nodes[e];
        let twin = CoreState::open(
            n.store.crashed(),
            n.key.clone(),
            core_config(),
            Metrics::new("sim", None),
            local,
        );
        let post = |body: &str| {
            Write::CreatePost(NewPost {
                author: UserName::new(USERS[0]).expect("valid user name"),
                body: body.to_owned(),
                reply_to: None,
            })
        };
        let Some(core) = n.core.as_mut() else {
            return;
        };
        let pair = twin.map_err(|e| e.to_string()).and_then(|mut twin| {
            let one = core.write(post("one story"), local);
            let other = twin.write(post("another story"), local);
            let ids = [one, other].map(|w| match w {
                Ok(Written::Post(p)) => Some(p.id),
                _ => None,
            });
            let a = core.commit().map_err(|e| e.to_string())?;
            let b = twin.commit().map_err(|e| e.to_string())?;
            Ok((a, b.publish, ids))
        });
        let (commit, other, ids) = match pair {
            Ok(pair) => pair,
            Err(err) => {
                let v = format!("equivocator {e} could not sign twice: {err}");
                self.report.violations.push(v);
                return;
            }
        };
        let (Some(a), Some(b)) = (commit.publish.first(), other.first()) else {
            return;
        };
        if (a.origin, a.seq) != (b.origin, b.seq) || a == b || commit.publish.len() != 1 {
            let v = format!("equivocator {e}: the twin deltas are not a double signing");
            self.report.violations.push(v);
            return;
        }
        let seq = a.seq;
        let adm = self.adm.as_mut().expect("admission run");
        adm.rogue_posts.extend(ids.into_iter().flatten());
        adm.equivocated = Some((self.now, seq));
        let own = self.nodes[e].id;
        self.note_seq(e, e, commit.durable.get(&own));
        self.feed(e, Event::Durable(commit.durable.clone()));
        let mut peers: Vec<usize> = self.nodes[e].gossip.peers.iter().copied().collect();
        peers.shuffle(&mut self.rng);
        let half = peers.len() / 2;
        for (delta, to) in [(a, &peers[..half]), (b, &peers[half..])] {
            let payload = Arc::new(delta.encode());
            let id = message_id(&payload);
            self.nodes[e]
                .gossip
                .publish(id, payload.clone(), &self.config.gossip);
            self.push(e, to.to_vec(), id, &payload);
        }
    }

    /// An outsider, the revoked member or the equivocator writes a post.
    pub(super) fn rogue_write(&mut self, node: usize) {
        let Some(adm) = self.adm.as_ref() else {
            return;
        };
        let every = adm.config.rogue_write_ms.max(1);
        let keep = !adm.honest(node);
        let write_end = self.config.warmup_ms + self.config.write_window_ms;
        if self.now + every <= write_end {
            self.after(every, Ev::RogueWrite { node });
        }
        let local = self.local_ms(node);
        let n = &mut self.nodes[node];
        if n.failed {
            return;
        }
        let Some(core) = n.core.as_mut() else {
            return;
        };
        let write = Write::CreatePost(NewPost {
            author: UserName::new(USERS[node % USERS.len()]).expect("valid user name"),
            body: format!("rogue post of node {node} at {}", self.now),
            reply_to: None,
        });
        if let Ok(Written::Post(p)) = core.write(write, local) {
            let adm = self.adm.as_mut().expect("admission run");
            adm.figures.rogue_writes += 1;
            if keep {
                adm.rogue_posts.insert(p.id);
            }
            self.schedule_commit(node);
        }
    }

    // ---- the end ----------------------------------------------------------

    /// The admission invariants and figures (see [`AdmissionSim`]).
    pub(super) fn admission_finish(&mut self, violations: &mut Vec<String>) {
        let Some(mut adm) = self.adm.take() else {
            return;
        };
        let spread = adm.config.spread_ms;
        let honest_live: Vec<usize> = (0..adm.members)
            .filter(|i| adm.honest(*i) && self.nodes[*i].core.is_some() && !self.nodes[*i].dead)
            .collect();
        // No member holds an outsider's delta.
        for i in 0..adm.members {
            let Some(core) = self.nodes[i].core.as_ref() else {
                continue;
            };
            for o in adm.members..self.nodes.len() {
                let seq = core.version_vector().get(&self.nodes[o].id);
                if seq > 0 && !adm.holds_outsider[i] {
                    adm.holds_outsider[i] = true;
                    violations.push(format!(
                        "node {i} holds outsider {o}'s deltas up to seq {seq}"
                    ));
                }
            }
        }
        let cases = [
            (
                "revocation",
                adm.revoked,
                adm.revoked_at.map(|at| (at, 0)),
                adm.learnt_revocation.clone(),
                adm.revoked_cut,
                adm.revoked_refused,
            ),
            (
                "equivocation",
                adm.equivocator,
                adm.equivocated,
                adm.learnt_equivocation.clone(),
                adm.equivocator_cut,
                adm.equivocator_refused,
            ),
        ];
        for (what, who, at, learnt, cut, refused) in cases {
            let Some(who) = who else {
                continue;
            };
            let Some((at, seq)) = at else {
                violations.push(format!("the {what} of node {who} never happened"));
                continue;
            };
            let id = self.nodes[who].id;
            // The clock of the spread bound: the revocation's entry, or the
            // proof's first detection.
            let first = learnt.iter().flatten().map(|(t, _)| *t).min();
            let from = if what == "equivocation" {
                first.unwrap_or(at)
            } else {
                at
            };
            let mut everywhere = Some(at);
            for &i in &honest_live {
                let Some((t, held)) = learnt[i] else {
                    violations.push(format!("node {i} never learnt the {what} of node {who}"));
                    everywhere = None;
                    continue;
                };
                everywhere = everywhere.map(|e| e.max(t));
                if t > from + spread {
                    violations.push(format!(
                        "node {i} learnt the {what} of node {who} {} ms after it, over {spread} ms",
                        t - from
                    ));
                }
                let gate = self.nodes[i].seat.as_ref().and_then(|s| s.gate.as_ref());
                if self.net.conn(i, who).is_some() || gate.is_some_and(|g| g.up.contains(&who)) {
                    violations.push(format!("node {i} still has a link to node {who} ({what})"));
                }
                let Some(core) = self.nodes[i].core.as_ref() else {
                    continue;
                };
                let now = core.version_vector().get(&id);
                if now > held {
                    violations.push(format!(
                        "node {i} took node {who}'s deltas up to seq {now} after the {what} (held {held})"
                    ));
                }
                if what == "equivocation" {
                    if !core.equivocators().iter().any(|e| e.origin == id) {
                        violations.push(format!(
                            "node {i}'s core does not list {who} as an equivocator"
                        ));
                    }
                    if gate.is_none_or(|g| !g.machine.equivocators().any(|n| *n == id)) {
                        violations.push(format!(
                            "node {i}'s admission does not refuse equivocator {who}"
                        ));
                    }
                }
            }
            let figures = Spread {
                node: who,
                at_ms: at,
                seq,
                first_known_after_ms: first.map(|t| t - at),
                known_everywhere_after_ms: everywhere.map(|t| t - at),
                last_link_closed_after_ms: cut.map(|t| t - at),
                deltas_refused: refused,
            };
            if what == "revocation" {
                adm.figures.revocation = Some(figures);
            } else {
                adm.figures.equivocation = Some(figures);
            }
        }
        self.report.admission = Some(adm.figures.clone());
        self.adm = Some(adm);
    }
}
