//! The admission state machine: events in, commands out, time injected.
//!
//! See the crate docs for the rules; each is unit-tested in `tests.rs` by
//! the exact commands it emits.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use hearsay_crdt::NodeId;

use crate::cert::{CertError, Certificate, OperatorId, Revocation};

/// Most peers banned at once; past it the ban that ends soonest is dropped.
pub const MAX_BANS: usize = 65_536;
/// Most equivocators remembered; past it the oldest is forgotten (in an
/// open mesh keys are free, so the list is a brake, not a wall).
pub const MAX_EQUIVOCATORS: usize = 65_536;

/// What the machine decides by. Defaults are the node's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The operator whose certificates admit nodes; `None`: an open mesh,
    /// where any key may join (rate budgets, strikes and equivocation bans
    /// still apply).
    pub operator: Option<OperatorId>,
    /// A peer of a closed mesh that has not presented a valid certificate
    /// this long after connecting is disconnected.
    pub handshake_timeout_ms: u64,
    /// How long a peer that failed its handshake or misbehaved is refused.
    pub ban_ms: u64,
    pub limits: Limits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            operator: None,
            handshake_timeout_ms: 5_000,
            ban_ms: 60_000,
            limits: Limits::default(),
        }
    }
}

/// Budgets per peer and bounds of what peers can make the machine hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Messages per second per peer (any kind), sustained.
    pub messages_per_s: u32,
    /// Bytes per second per peer, sustained.
    pub bytes_per_s: u64,
    /// Capacity of every token bucket, in seconds of its rate: how far a
    /// peer may burst above the sustained rate (at least 1).
    pub burst_s: u32,
    /// Sync requests per second per peer (each may cost a store read), on
    /// top of the message budget.
    pub sync_requests_per_s: u32,
    /// Strikes within `strike_window_ms` that disconnect and ban a peer.
    pub strikes: u32,
    pub strike_window_ms: u64,
    /// Revocations kept (never evicted: past the bound new ones are refused).
    pub max_revocations: usize,
    /// Certificates kept for origin checks (expired ones are evicted first,
    /// then the one expiring soonest).
    pub max_certificates: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // Far above what an honest peer sends: a node applies about 2,300
        // deltas/s at most (BENCHMARKS.md, bench ingest), one message each
        // per link, and a node catching up asks for a page at a time. The
        // budgets bound a flood; they must never cut an honest peer at
        // peak load (over budget is a strike, and strikes disconnect).
        Limits {
            messages_per_s: 20_000,
            bytes_per_s: 64 << 20,
            burst_s: 2,
            sync_requests_per_s: 100,
            strikes: 32,
            strike_window_ms: 10_000,
            max_revocations: 4_096,
            max_certificates: 4_096,
        }
    }
}

/// Why a peer was disconnected or something was refused: a bounded metric
/// label set ([`Reason::as_str`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// No valid certificate within the handshake timeout (or a message
    /// before the handshake completed).
    NotAdmitted,
    /// A certificate or revocation that does not decode or whose signature
    /// does not verify.
    BadCertificate,
    /// Signed by another operator.
    WrongOperator,
    /// A valid certificate of another key.
    WrongNode,
    Expired,
    Revoked,
    Equivocated,
    MessageRate,
    ByteRate,
    SyncRate,
    /// Too many invalid messages.
    Misbehaved,
    /// Reconnected while banned.
    Banned,
}

impl Reason {
    pub const ALL: [Reason; 12] = [
        Reason::NotAdmitted,
        Reason::BadCertificate,
        Reason::WrongOperator,
        Reason::WrongNode,
        Reason::Expired,
        Reason::Revoked,
        Reason::Equivocated,
        Reason::MessageRate,
        Reason::ByteRate,
        Reason::SyncRate,
        Reason::Misbehaved,
        Reason::Banned,
    ];

    /// The snake_case metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::NotAdmitted => "not_admitted",
            Reason::BadCertificate => "bad_certificate",
            Reason::WrongOperator => "wrong_operator",
            Reason::WrongNode => "wrong_node",
            Reason::Expired => "expired",
            Reason::Revoked => "revoked",
            Reason::Equivocated => "equivocated",
            Reason::MessageRate => "message_rate",
            Reason::ByteRate => "byte_rate",
            Reason::SyncRate => "sync_rate",
            Reason::Misbehaved => "misbehaved",
            Reason::Banned => "banned",
        }
    }

    fn of(e: &CertError) -> Reason {
        match e {
            CertError::WrongOperator { .. } => Reason::WrongOperator,
            _ => Reason::BadCertificate,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a received message is, for [`Admission::check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Gossip,
    /// Has its own budget on top of the message budget.
    SyncRequest,
    Status,
    Registry,
    /// The hello that carries a certificate: the only kind a peer of a
    /// closed mesh may send before it is admitted.
    Admission,
}

/// Inputs of the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event<P> {
    /// A timer armed by [`Command::ArmTimer`] is due (extra ticks are harmless).
    Tick,
    /// First connection to `peer`, whose key is `node`.
    Connected { peer: P, node: NodeId },
    /// The last connection to `peer` closed.
    Disconnected { peer: P },
    /// `peer` presented this certificate (bytes as received, not decoded yet).
    Presented { peer: P, certificate: Vec<u8> },
    /// A certificate seen elsewhere (in a signed status of its node): learnt
    /// for origin checks, not an admission of any connection.
    Learned { certificate: Vec<u8> },
    /// A revocation, from a peer (`from: Some`) or from the local operator
    /// API (`from: None`).
    Revocation {
        from: Option<P>,
        revocation: Vec<u8>,
    },
    /// `node` was proven to equivocate (the proof is checked by the caller).
    Equivocated { node: NodeId },
    /// `peer` sent something no honest node sends (bad signature,
    /// undecodable message, forged page...). One strike.
    Misbehaved { peer: P, what: &'static str },
    /// The gossip layer scored `peer` below the point where it drops its
    /// messages unread (gossipsub's graylist): it has sent many messages no
    /// honest node sends. Closed and banned at once, so it stops costing
    /// the node even the reading.
    Graylisted { peer: P },
    /// Persisted state loaded at start (revocations read back from disk,
    /// equivocators): no Persist/Publish commands for these.
    Restored {
        revocations: Vec<Vec<u8>>,
        equivocators: Vec<NodeId>,
    },
}

/// Outputs of the machine, for the translator to carry out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command<P> {
    /// The peer passed: serve it, take its messages, add it to gossip.
    Admit { peer: P },
    /// Close every connection to the peer and count the reason.
    Disconnect { peer: P, reason: Reason },
    /// Keep this revocation durably (encoded bytes).
    Persist { revocation: Vec<u8> },
    /// Gossip this revocation to the mesh (encoded bytes).
    Publish { revocation: Vec<u8> },
    /// Send `peer` this node's certificate and the known revocations (the
    /// translator builds the hello from [`Admission::own_certificate`] and
    /// [`Admission::revocations`]).
    Present { peer: P },
    /// Send [`Event::Tick`] at `at` (replaces any earlier timer).
    ArmTimer { at: u64 },
    /// Something refused that is not a disconnect: count it (e.g. a
    /// revocation signed by another operator, an invalid certificate learnt
    /// from a status, a revocation past `max_revocations`).
    Refused { reason: Reason },
}

/// The verdict on one received message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    Pass,
    /// Drop this message, keep the link.
    Drop(Reason),
    /// Drop it and close the link (the machine has banned the peer).
    Disconnect(Reason),
}

/// What [`Admission::peers`] shows of a connected peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerView {
    pub node: NodeId,
    pub admitted: bool,
    /// From its certificate (closed mesh).
    pub region: Option<String>,
    pub expires_ms: Option<u64>,
    /// Strikes recorded in the current window.
    pub strikes: u32,
}

/// A token bucket in thousandths of a token, so refills are exact in
/// integer milliseconds: a rate of `r` per second adds `r` per ms.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    milli: u64,
    at: u64,
}

impl Bucket {
    fn capacity(rate: u64, burst_s: u32) -> u64 {
        rate.saturating_mul(u64::from(burst_s)).saturating_mul(1000)
    }

    fn full(now: u64, rate: u64, burst_s: u32) -> Self {
        Bucket {
            milli: Self::capacity(rate, burst_s),
            at: now,
        }
    }

    fn refill(&mut self, now: u64, rate: u64, burst_s: u32) {
        let elapsed = now.saturating_sub(self.at);
        self.milli = self
            .milli
            .saturating_add(elapsed.saturating_mul(rate))
            .min(Self::capacity(rate, burst_s));
        self.at = self.at.max(now);
    }

    fn has(&self, tokens: u64) -> bool {
        self.milli >= tokens.saturating_mul(1000)
    }

    fn take(&mut self, tokens: u64) {
        self.milli = self.milli.saturating_sub(tokens.saturating_mul(1000));
    }
}

#[derive(Clone, Debug)]
enum State {
    /// Connected to a closed mesh, no valid certificate yet.
    Pending { deadline: u64 },
    /// Passed; the certificate it presented (none in an open mesh).
    Admitted { certificate: Option<Certificate> },
}

#[derive(Clone, Debug)]
struct Peer {
    node: NodeId,
    state: State,
    /// Times of the strikes within the window (fewer than `limits.strikes`).
    strikes: VecDeque<u64>,
    messages: Bucket,
    bytes: Bucket,
    sync: Bucket,
}

impl Peer {
    fn view(&self) -> PeerView {
        let certificate = match &self.state {
            State::Admitted { certificate } => certificate.as_ref(),
            State::Pending { .. } => None,
        };
        PeerView {
            node: self.node,
            admitted: matches!(self.state, State::Admitted { .. }),
            region: certificate.map(|c| c.region.clone()),
            expires_ms: certificate.and_then(|c| c.expires_ms),
            strikes: self.strikes.len() as u32,
        }
    }

    /// When its admission ends (its certificate expires).
    fn deadline(&self) -> Option<u64> {
        match &self.state {
            State::Pending { deadline } => Some(*deadline),
            State::Admitted { certificate } => certificate.as_ref().and_then(|c| c.expires_ms),
        }
    }
}

/// Who may be part of the mesh, as seen by one node; see the crate docs.
#[derive(Debug)]
pub struct Admission<P> {
    config: Config,
    me: NodeId,
    own: Option<Certificate>,
    peers: BTreeMap<P, Peer>,
    /// Valid certificates, presented or learnt, by node, for origin checks.
    certificates: BTreeMap<NodeId, Certificate>,
    /// By the node they name: one is enough, later ones are not new.
    revocations: BTreeMap<NodeId, Revocation>,
    equivocators: BTreeSet<NodeId>,
    /// Equivocators oldest first, for the bound.
    equivocator_order: VecDeque<NodeId>,
    /// Peer → end of its ban, and the same ordered by end.
    bans: BTreeMap<P, u64>,
    ban_order: BTreeSet<(u64, P)>,
    armed: Option<u64>,
}

impl<P> Admission<P>
where
    P: Ord + Clone + fmt::Debug,
{
    /// The machine of node `me`. In a closed mesh `own_certificate` is what
    /// this node presents and what admits its own deltas; one that does not
    /// name `me` or does not verify against the operator is ignored (the
    /// node checks it at start with [`Certificate::verify`] to fail with a
    /// clear error).
    pub fn new(config: Config, me: NodeId, own_certificate: Option<Certificate>) -> Self {
        let own = own_certificate.filter(|c| {
            c.node == me
                && match &config.operator {
                    Some(op) => c.verify(op).is_ok(),
                    None => true,
                }
        });
        Admission {
            config,
            me,
            own,
            peers: BTreeMap::new(),
            certificates: BTreeMap::new(),
            revocations: BTreeMap::new(),
            equivocators: BTreeSet::new(),
            equivocator_order: VecDeque::new(),
            bans: BTreeMap::new(),
            ban_order: BTreeSet::new(),
            armed: None,
        }
    }

    /// Feeds one event at `now` (unix ms); returns the commands to carry
    /// out, in order.
    pub fn handle(&mut self, now: u64, event: Event<P>) -> Vec<Command<P>> {
        let mut out = Vec::new();
        match event {
            Event::Tick => self.on_tick(now, &mut out),
            Event::Connected { peer, node } => self.on_connected(now, peer, node, &mut out),
            Event::Disconnected { peer } => {
                // Bans outlive the connection; strikes do not.
                self.peers.remove(&peer);
            }
            Event::Presented { peer, certificate } => {
                self.on_presented(now, peer, &certificate, &mut out)
            }
            Event::Learned { certificate } => {
                if self.config.operator.is_some() {
                    match self.judge(now, &certificate, None) {
                        Ok(cert) => self.remember(now, cert),
                        Err(reason) => out.push(Command::Refused { reason }),
                    }
                }
            }
            Event::Revocation { from, revocation } => {
                self.on_revocation(now, from, &revocation, true, &mut out)
            }
            Event::Equivocated { node } => self.on_equivocated(node, &mut out),
            Event::Graylisted { peer } => {
                if self.peers.remove(&peer).is_some() {
                    self.ban(now, peer.clone());
                    out.push(Command::Disconnect {
                        peer,
                        reason: Reason::Misbehaved,
                    });
                }
            }
            Event::Misbehaved { peer, what: _ } => {
                if self.strike(now, &peer) {
                    out.push(Command::Disconnect {
                        peer,
                        reason: Reason::Misbehaved,
                    });
                }
            }
            Event::Restored {
                revocations,
                equivocators,
            } => {
                for revocation in revocations {
                    self.on_revocation(now, None, &revocation, false, &mut out);
                }
                for node in equivocators {
                    self.on_equivocated(node, &mut out);
                }
            }
        }
        self.arm(now, &mut out);
        out
    }

    /// The verdict on one message received from `peer`, `bytes` long.
    ///
    /// Budgets come first, for every kind and every connected peer (a peer
    /// still in its handshake may not flood either): over the message, sync
    /// request or byte budget the message is dropped with a strike. Then a
    /// peer of a closed mesh that is not admitted yet may only send its
    /// hello ([`Kind::Admission`]); anything else is dropped without a
    /// strike (the handshake may still be under way). A peer that reaches
    /// `limits.strikes` within the window is disconnected and banned
    /// (the ban's timer is armed by the next [`Admission::handle`]).
    pub fn check(&mut self, now: u64, peer: &P, kind: Kind, bytes: usize) -> Check {
        let limits = &self.config.limits;
        let Some(p) = self.peers.get_mut(peer) else {
            return Check::Drop(if self.is_banned(now, peer) {
                Reason::Banned
            } else {
                Reason::NotAdmitted
            });
        };
        let (messages_rate, sync_rate) = (
            u64::from(limits.messages_per_s),
            u64::from(limits.sync_requests_per_s),
        );
        p.messages.refill(now, messages_rate, limits.burst_s);
        p.sync.refill(now, sync_rate, limits.burst_s);
        p.bytes.refill(now, limits.bytes_per_s, limits.burst_s);
        let sync = kind == Kind::SyncRequest;
        let bytes = bytes as u64;
        let over = if !p.messages.has(1) {
            Some(Reason::MessageRate)
        } else if sync && !p.sync.has(1) {
            Some(Reason::SyncRate)
        } else if !p.bytes.has(bytes) {
            Some(Reason::ByteRate)
        } else {
            None
        };
        if let Some(reason) = over {
            return if self.strike(now, peer) {
                Check::Disconnect(reason)
            } else {
                Check::Drop(reason)
            };
        }
        p.messages.take(1);
        if sync {
            p.sync.take(1);
        }
        p.bytes.take(bytes);
        if matches!(p.state, State::Pending { .. }) && kind != Kind::Admission {
            return Check::Drop(Reason::NotAdmitted);
        }
        Check::Pass
    }

    /// An open mesh: no operator, any key may join.
    pub fn is_open(&self) -> bool {
        self.config.operator.is_none()
    }

    pub fn is_admitted(&self, peer: &P) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|p| matches!(p.state, State::Admitted { .. }))
    }

    /// Whether deltas originated by `node` may be accepted at `now`: never
    /// from an equivocator; in a closed mesh only from a node with a known
    /// certificate (presented, learnt, or this node's own) valid at `now`
    /// and not revoked.
    pub fn origin_allowed(&self, now: u64, node: &NodeId) -> Result<(), Reason> {
        if self.equivocators.contains(node) {
            return Err(Reason::Equivocated);
        }
        if self.config.operator.is_none() {
            return Ok(());
        }
        if self.revocations.contains_key(node) {
            return Err(Reason::Revoked);
        }
        let certificate = if *node == self.me {
            self.own.as_ref()
        } else {
            self.certificates.get(node)
        };
        match certificate {
            None => Err(Reason::NotAdmitted),
            Some(c) if !c.valid_at(now) => Err(Reason::Expired),
            Some(_) => Ok(()),
        }
    }

    /// What this node presents to its peers.
    pub fn own_certificate(&self) -> Option<&Certificate> {
        self.own.as_ref()
    }

    /// Every revocation known, for the hello (one per node).
    pub fn revocations(&self) -> impl Iterator<Item = &Revocation> {
        self.revocations.values()
    }

    pub fn equivocators(&self) -> impl Iterator<Item = &NodeId> {
        self.equivocators.iter()
    }

    /// The connected peers.
    pub fn peers(&self) -> impl Iterator<Item = (&P, PeerView)> {
        self.peers.iter().map(|(p, peer)| (p, peer.view()))
    }

    /// Peers banned at `now`.
    pub fn banned(&self, now: u64) -> usize {
        self.bans.values().filter(|&&until| until > now).count()
    }

    fn is_banned(&self, now: u64, peer: &P) -> bool {
        self.bans.get(peer).is_some_and(|&until| until > now)
    }

    fn on_tick(&mut self, now: u64, out: &mut Vec<Command<P>>) {
        let due: Vec<(P, Reason)> = self
            .peers
            .iter()
            .filter_map(|(peer, p)| match &p.state {
                State::Pending { deadline } if *deadline <= now => {
                    Some((peer.clone(), Reason::NotAdmitted))
                }
                State::Admitted {
                    certificate: Some(c),
                } if !c.valid_at(now) => Some((peer.clone(), Reason::Expired)),
                _ => None,
            })
            .collect();
        for (peer, reason) in due {
            self.peers.remove(&peer);
            out.push(Command::Disconnect { peer, reason });
        }
        while let Some((until, _)) = self.ban_order.first()
            && *until <= now
        {
            if let Some((_, peer)) = self.ban_order.pop_first() {
                self.bans.remove(&peer);
            }
        }
    }

    fn on_connected(&mut self, now: u64, peer: P, node: NodeId, out: &mut Vec<Command<P>>) {
        if self.peers.contains_key(&peer) {
            return;
        }
        let refused = if self.is_banned(now, &peer) {
            Some(Reason::Banned)
        } else if self.config.operator.is_some() && self.revocations.contains_key(&node) {
            Some(Reason::Revoked)
        } else if self.equivocators.contains(&node) {
            Some(Reason::Equivocated)
        } else {
            None
        };
        if let Some(reason) = refused {
            out.push(Command::Disconnect { peer, reason });
            return;
        }
        let limits = &self.config.limits;
        let (state, command) = if self.config.operator.is_some() {
            let deadline = now.saturating_add(self.config.handshake_timeout_ms);
            let present = Command::Present { peer: peer.clone() };
            (State::Pending { deadline }, present)
        } else {
            let admit = Command::Admit { peer: peer.clone() };
            (State::Admitted { certificate: None }, admit)
        };
        let p = Peer {
            node,
            state,
            strikes: VecDeque::new(),
            messages: Bucket::full(now, u64::from(limits.messages_per_s), limits.burst_s),
            bytes: Bucket::full(now, limits.bytes_per_s, limits.burst_s),
            sync: Bucket::full(now, u64::from(limits.sync_requests_per_s), limits.burst_s),
        };
        self.peers.insert(peer, p);
        out.push(command);
    }

    fn on_presented(&mut self, now: u64, peer: P, bytes: &[u8], out: &mut Vec<Command<P>>) {
        if self.config.operator.is_none() {
            return;
        }
        let Some(node) = self.peers.get(&peer).map(|p| p.node) else {
            return;
        };
        let cert = match self.judge(now, bytes, Some(node)) {
            Ok(cert) => cert,
            Err(reason) => {
                self.peers.remove(&peer);
                self.ban(now, peer.clone());
                out.push(Command::Disconnect { peer, reason });
                return;
            }
        };
        self.remember(now, cert.clone());
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        match &mut p.state {
            State::Pending { .. } => {
                p.state = State::Admitted {
                    certificate: Some(cert),
                };
                out.push(Command::Admit { peer });
            }
            // Admitted already: a renewal may push the expiry back.
            State::Admitted { certificate } => {
                if certificate
                    .as_ref()
                    .is_none_or(|old| expiry(&cert) > expiry(old))
                {
                    *certificate = Some(cert);
                }
            }
        }
    }

    /// Decodes and checks a certificate for a closed mesh; `node`: the key
    /// it must name (the presenting peer's).
    fn judge(&self, now: u64, bytes: &[u8], node: Option<NodeId>) -> Result<Certificate, Reason> {
        let Some(operator) = &self.config.operator else {
            return Err(Reason::NotAdmitted);
        };
        let cert = Certificate::decode(bytes).map_err(|e| Reason::of(&e))?;
        cert.verify(operator).map_err(|e| Reason::of(&e))?;
        if node.is_some_and(|n| n != cert.node) {
            return Err(Reason::WrongNode);
        }
        if self.revocations.contains_key(&cert.node) {
            return Err(Reason::Revoked);
        }
        if self.equivocators.contains(&cert.node) {
            return Err(Reason::Equivocated);
        }
        if !cert.valid_at(now) {
            return Err(Reason::Expired);
        }
        Ok(cert)
    }

    /// Keeps a valid certificate for origin checks, within
    /// `max_certificates`.
    fn remember(&mut self, now: u64, cert: Certificate) {
        if let Some(old) = self.certificates.get_mut(&cert.node) {
            if expiry(&cert) > expiry(old) {
                *old = cert;
            }
            return;
        }
        let max = self.config.limits.max_certificates;
        if max == 0 {
            return;
        }
        if self.certificates.len() >= max {
            self.certificates.retain(|_, c| c.valid_at(now));
        }
        if self.certificates.len() >= max {
            let soonest = self
                .certificates
                .iter()
                .min_by_key(|(_, c)| expiry(c))
                .map(|(node, _)| *node);
            if let Some(node) = soonest {
                self.certificates.remove(&node);
            }
        }
        self.certificates.insert(cert.node, cert);
    }

    /// `live`: it arrived now (from a peer or the operator API), so a new one
    /// is persisted and published; otherwise it was restored from disk.
    fn on_revocation(
        &mut self,
        now: u64,
        from: Option<P>,
        bytes: &[u8],
        live: bool,
        out: &mut Vec<Command<P>>,
    ) {
        let Some(operator) = self.config.operator else {
            return;
        };
        let decoded = Revocation::decode(bytes).and_then(|r| r.verify(&operator).map(|()| r));
        let rev = match decoded {
            Ok(rev) => rev,
            Err(e) => {
                out.push(Command::Refused {
                    reason: Reason::of(&e),
                });
                // No honest peer forwards a revocation it could not verify.
                if let Some(peer) = from
                    && self.strike(now, &peer)
                {
                    out.push(Command::Disconnect {
                        peer,
                        reason: Reason::Misbehaved,
                    });
                }
                return;
            }
        };
        if self.revocations.contains_key(&rev.node) {
            return;
        }
        if self.revocations.len() >= self.config.limits.max_revocations {
            out.push(Command::Refused {
                reason: Reason::Revoked,
            });
            return;
        }
        let node = rev.node;
        if live {
            let encoded = rev.encode();
            out.push(Command::Persist {
                revocation: encoded.clone(),
            });
            out.push(Command::Publish {
                revocation: encoded,
            });
        }
        self.revocations.insert(node, rev);
        self.certificates.remove(&node);
        self.disconnect_node(node, Reason::Revoked, out);
    }

    fn on_equivocated(&mut self, node: NodeId, out: &mut Vec<Command<P>>) {
        if self.equivocators.insert(node) {
            self.equivocator_order.push_back(node);
            if self.equivocator_order.len() > MAX_EQUIVOCATORS
                && let Some(oldest) = self.equivocator_order.pop_front()
            {
                self.equivocators.remove(&oldest);
            }
        }
        self.disconnect_node(node, Reason::Equivocated, out);
    }

    /// Disconnects every peer whose key is `node` (no ban: its key is
    /// refused at the next connection anyway).
    fn disconnect_node(&mut self, node: NodeId, reason: Reason, out: &mut Vec<Command<P>>) {
        let named: Vec<P> = self
            .peers
            .iter()
            .filter(|(_, p)| p.node == node)
            .map(|(peer, _)| peer.clone())
            .collect();
        for peer in named {
            self.peers.remove(&peer);
            out.push(Command::Disconnect { peer, reason });
        }
    }

    /// Records a strike against a connected peer; true when it reached the
    /// limit, and is now forgotten and banned.
    fn strike(&mut self, now: u64, peer: &P) -> bool {
        let limits = &self.config.limits;
        let Some(p) = self.peers.get_mut(peer) else {
            return false;
        };
        while p
            .strikes
            .front()
            .is_some_and(|&t| t.saturating_add(limits.strike_window_ms) <= now)
        {
            p.strikes.pop_front();
        }
        p.strikes.push_back(now);
        if p.strikes.len() < limits.strikes as usize {
            return false;
        }
        self.peers.remove(peer);
        self.ban(now, peer.clone());
        true
    }

    fn ban(&mut self, now: u64, peer: P) {
        let until = now.saturating_add(self.config.ban_ms);
        if until <= now {
            return;
        }
        if let Some(old) = self.bans.get(&peer).copied() {
            if old >= until {
                return;
            }
            self.ban_order.remove(&(old, peer.clone()));
        } else if self.bans.len() >= MAX_BANS
            && let Some((_, evicted)) = self.ban_order.pop_first()
        {
            self.bans.remove(&evicted);
        }
        self.bans.insert(peer.clone(), until);
        self.ban_order.insert((until, peer));
    }

    /// The earliest time something is due: a handshake deadline, an
    /// admitted peer's certificate expiry, the end of a ban.
    fn next_deadline(&self) -> Option<u64> {
        let peers = self.peers.values().filter_map(Peer::deadline);
        let ban = self.ban_order.first().map(|(until, _)| *until);
        peers.chain(ban).min()
    }

    fn arm(&mut self, now: u64, out: &mut Vec<Command<P>>) {
        let Some(at) = self.next_deadline() else {
            // Nothing due: a timer still armed fires a harmless tick.
            self.armed = None;
            return;
        };
        let at = at.max(now);
        if self.armed != Some(at) {
            self.armed = Some(at);
            out.push(Command::ArmTimer { at });
        }
    }
}

/// When a certificate stops being valid; `u64::MAX`: never.
fn expiry(c: &Certificate) -> u64 {
    c.expires_ms.unwrap_or(u64::MAX)
}
