//! hearsay-sync: the IO-less protocol machine of a hearsay node.
//!
//! [`SyncMachine`] decides everything about keeping links and closing gaps;
//! the libp2p actor (`hearsay-node`'s `net`) and the seeded simulation only
//! translate. Events go in with the current time ([`SyncMachine::handle`]),
//! commands come out; time and randomness are injected (a seeded RNG), timers
//! are commands ([`Command::ArmTimer`]). So every rule below is unit-tested by
//! asserting the exact commands it emits, and driven for many nodes by the
//! simulation.
//!
//! What it owns:
//! - **Anti-entropy (scuttlebutt pull).** Every `sync_interval_ms` a round
//!   starts with a random connected peer: the node sends its durable version
//!   vector, the peer answers with a page of the deltas that vector lacks.
//!   While pages come back full and useful, the node asks the same peer
//!   again. A round also starts at once with a peer that just subscribed,
//!   with any peer when a gap is seen (a delta buffered for an earlier seq,
//!   one too far ahead, one the core had no room for), and with a peer whose
//!   own request shows it holds deltas this node lacks (push-pull). A
//!   request that fails or times out is retried on another peer.
//! - **Serving.** A request is answered from the durable version vector
//!   only, so a delta that is not yet on disk never leaves its origin (a
//!   crash must never reissue a seq a peer already holds). A peer that is
//!   already up to date gets an empty page without a store read; pages read
//!   at once are bounded, overall and per peer.
//! - **Gossip validation, cut through.** A pushed delta arrives with its
//!   origin's signature already checked by the translator (one check per
//!   hop: gossipsub itself signs nothing, since every delta and status
//!   carries its origin's signature end to end). One this node already
//!   holds durably is not forwarded, and goes to the core only to be
//!   compared with the copy held (equivocation detection). Any other
//!   is forwarded at once and handed to the core in parallel, so a relay's
//!   apply and flush are not on the path to the next hop. What does not
//!   decode or verify is rejected (and so penalises the sender): no honest
//!   node sends it.
//! - **Links.** A link silent for `link_timeout_ms` (no ping answered, no
//!   message) is closed, so the node never waits on TCP retransmission
//!   backoff; join peers and the peers it dialled
//!   are redialled with a backoff capped at `redial_max_ms`, and discovered
//!   peers are dialled while below `target_peers`.
//!
//! ```
//! use hearsay_sync::{Command, Config, Event, SyncMachine};
//!
//! // Peers are any ordered id (the node uses libp2p's PeerId), gossip
//! // message ids any type (the node uses gossipsub's MessageId).
//! let mut m: SyncMachine<u32, u64> = SyncMachine::new(Config::default(), 7, vec![], 0);
//! m.handle(0, Event::PeerUp { peer: 2, dialer: false });
//! let out = m.handle(5, Event::Subscribed { peer: 2 });
//! assert!(matches!(out[0], Command::SendSyncRequest { to: 2, .. }));
//! ```

use std::collections::BTreeMap;
use std::marker::PhantomData;

use hearsay_crdt::{Delta, Verdict, VersionVector};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::IteratorRandom;

#[cfg(test)]
mod tests;

/// Milliseconds on a monotonic clock chosen by the caller.
pub type Millis = u64;

/// Tuning of the machine. Defaults are the node's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Period of anti-entropy rounds with a random peer.
    pub sync_interval_ms: Millis,
    /// A sync request unanswered this long has failed (and is retried on
    /// another peer).
    pub request_timeout_ms: Millis,
    /// Rounds in flight at once, not counting those started for a newly
    /// subscribed peer.
    pub max_rounds: usize,
    /// Shortest spacing between two rounds started for a gap, so a gap that
    /// no peer can fill yet (its origin is across a partition) does not turn
    /// into a request loop.
    pub gap_retry_ms: Millis,
    /// Pages being read for peers at once (each up to `page_bytes`).
    pub max_serving: usize,
    /// Pages being read for one peer at once.
    pub max_serving_per_peer: usize,
    /// Most deltas in one served page.
    pub page_deltas: usize,
    /// Most delta bytes in one served page.
    pub page_bytes: usize,
    /// First redial delay after a link is lost or a dial fails.
    pub redial_min_ms: Millis,
    /// Cap of the doubling redial delay: after the network returns, a lost
    /// peer is dialled again within this long.
    pub redial_max_ms: Millis,
    /// Consecutive failed pings after which a link is closed.
    pub max_ping_failures: u32,
    /// A link nothing was heard on (no ping answered, no message) for this
    /// long is closed. Pings answer every second on a live link; a failed
    /// ping alone is reported late (libp2p's first failure is silent and
    /// the next waits on a 10 s stream negotiation), so silence is the
    /// failure detector that keeps detection within seconds.
    pub link_timeout_ms: Millis,
    /// Discovered peers are dialled while fewer are connected; 0 turns
    /// discovery off.
    pub target_peers: usize,
    /// A peer this node dialled (not a join peer) is forgotten after this
    /// long without a connection.
    pub forget_after_ms: Millis,
    /// Period of discovery bootstraps while connected (discovery on).
    pub bootstrap_interval_ms: Millis,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            sync_interval_ms: 2_000,
            request_timeout_ms: 5_000,
            max_rounds: 2,
            gap_retry_ms: 100,
            max_serving: 8,
            max_serving_per_peer: 2,
            page_deltas: 1024,
            page_bytes: 4 << 20,
            redial_min_ms: 250,
            redial_max_ms: 1_000,
            max_ping_failures: 2,
            link_timeout_ms: 4_000,
            target_peers: 8,
            forget_after_ms: 10 * 60 * 1000,
            bootstrap_interval_ms: 30_000,
        }
    }
}

/// A sync request being answered, named by the translator (which keeps the
/// response channel under this id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// Where deltas handed to the core came from; the core's verdicts come back
/// with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Batch<P, M> {
    /// One pushed gossip message.
    Gossip { from: P, id: M },
    /// One anti-entropy page.
    Page { from: P },
}

/// What the gossip layer should do with a validated message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acceptance {
    /// New: store-and-forward.
    Accept,
    /// Not new, or not usable yet: drop without penalty.
    Ignore,
    /// No honest node sends this: drop and penalise the sender.
    Reject,
}

/// Why a sync request gets an empty page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Empty {
    /// The requester already holds every durable delta of this node.
    UpToDate,
    /// Too many pages are being read; the requester retries next round.
    Busy,
    /// The request did not decode.
    Malformed,
}

/// Bounds of one served page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageBounds {
    pub max_deltas: usize,
    pub max_bytes: usize,
}

/// Inputs of the machine.
#[derive(Clone, Debug)]
pub enum Event<P, M> {
    /// A timer armed by [`Command::ArmTimer`] is due (extra ticks are harmless).
    Tick,
    /// The core made everything up to this vector durable.
    Durable(VersionVector),
    /// The first connection to `peer` is up; `dialer` when this node dialled.
    PeerUp {
        peer: P,
        dialer: bool,
    },
    /// The last connection to `peer` closed.
    PeerDown {
        peer: P,
    },
    /// A dial to `peer` failed.
    DialFailed {
        peer: P,
    },
    /// `peer` subscribed to the delta topic: a new neighbour to sync with.
    Subscribed {
        peer: P,
    },
    /// Discovery found `peer`.
    Discovered {
        peer: P,
    },
    PingOk {
        peer: P,
    },
    PingFailed {
        peer: P,
    },
    /// Something outside the machine noticed a gap (e.g. the core buffered).
    GapSeen,
    /// A pushed delta arrived, its signature checked by the translator
    /// ([`Delta::decode_verified`]).
    Gossip {
        from: P,
        id: M,
        delta: Delta,
    },
    /// A pushed message that does not decode as a delta, or whose signature
    /// does not verify.
    GossipMalformed {
        from: P,
        id: M,
    },
    /// A peer asks for what its vector lacks; `None` when it did not decode.
    SyncRequest {
        from: P,
        request: RequestId,
        theirs: Option<VersionVector>,
    },
    /// The page for `request` has been sent.
    Served {
        request: RequestId,
    },
    /// An answer to this node's sync request (undecodable deltas already
    /// counted and dropped by the translator).
    SyncPage {
        from: P,
        deltas: Vec<Delta>,
        more: bool,
    },
    /// This node's sync request to `peer` failed.
    RequestFailed {
        peer: P,
    },
    /// The core's verdicts on a batch, one per delta, in order.
    Verdicts {
        batch: Batch<P, M>,
        verdicts: Vec<Verdict>,
    },
    /// The core's peer queue was full: the batch was not delivered.
    CoreBusy {
        batch: Batch<P, M>,
    },
}

/// Outputs of the machine, for the translator to carry out.
#[derive(Clone, Debug, PartialEq)]
pub enum Command<P, M> {
    /// Ask `to` for the deltas `have` lacks.
    SendSyncRequest {
        to: P,
        have: VersionVector,
    },
    /// Read the deltas `theirs` lacks, up to `up_to` (this node's durable
    /// vector), in per-origin seq order within `bounds`, and answer
    /// `request`; then report [`Event::Served`].
    ServePage {
        request: RequestId,
        to: P,
        theirs: VersionVector,
        up_to: VersionVector,
        bounds: PageBounds,
    },
    /// Answer `request` with an empty page.
    RespondEmpty {
        request: RequestId,
        to: P,
        why: Empty,
    },
    /// Hand deltas to the core; report [`Event::Verdicts`] or [`Event::CoreBusy`].
    Deliver {
        batch: Batch<P, M>,
        deltas: Vec<Delta>,
    },
    /// Tell the gossip layer what to do with message `id` from `from`.
    ReportGossip {
        id: M,
        from: P,
        acceptance: Acceptance,
    },
    Dial {
        peer: P,
    },
    /// Close every connection to `peer`.
    Disconnect {
        peer: P,
    },
    /// Refresh discovery.
    Bootstrap,
    /// Send [`Event::Tick`] at `at` (replaces any earlier timer).
    ArmTimer {
        at: Millis,
    },
}

#[derive(Clone, Debug)]
struct Link {
    ping_failures: u32,
    /// Last time a ping was answered or a message arrived on the link.
    heard: Millis,
}

#[derive(Clone, Debug)]
struct DialTarget {
    /// Join peers are redialled forever; others are forgotten.
    join: bool,
    backoff: Millis,
    /// When to dial next (while not connected).
    next_at: Option<Millis>,
    /// When the link was lost, for forgetting.
    lost_at: Option<Millis>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Request sent, answer due by the deadline.
    Requested { deadline: Millis },
    /// A page is with the core; `more` when the peer said there is more.
    Applying { more: bool },
}

#[derive(Clone, Copy, Debug)]
struct Round {
    stage: Stage,
    /// Started to close a gap.
    gap: bool,
    /// Already a retry of a failed round: a second failure is not retried
    /// at once (two dead peers must not bounce requests back and forth).
    retry: bool,
}

/// The anti-entropy and link-keeping state of one node; see the crate docs.
#[derive(Debug)]
pub struct SyncMachine<P, M> {
    config: Config,
    rng: StdRng,
    durable: VersionVector,
    links: BTreeMap<P, Link>,
    targets: BTreeMap<P, DialTarget>,
    rounds: BTreeMap<P, Round>,
    serving: BTreeMap<RequestId, P>,
    /// A gap was seen that no round started since then covers.
    gap: bool,
    next_gap_round: Millis,
    next_sync: Millis,
    next_bootstrap: Millis,
    armed: Option<Millis>,
    _message: PhantomData<fn() -> M>,
}

impl<P, M> SyncMachine<P, M>
where
    P: Copy + Ord + std::fmt::Debug,
    M: Clone + std::fmt::Debug,
{
    /// A machine at time `now` whose RNG is seeded with `seed`; the join
    /// peers are dialled at the first [`Event::Tick`].
    pub fn new(config: Config, seed: u64, join: Vec<P>, now: Millis) -> Self {
        let targets = join
            .into_iter()
            .map(|p| {
                let target = DialTarget {
                    join: true,
                    backoff: config.redial_min_ms,
                    next_at: Some(now),
                    lost_at: None,
                };
                (p, target)
            })
            .collect();
        SyncMachine {
            next_sync: now + config.sync_interval_ms,
            next_bootstrap: now,
            config,
            rng: StdRng::seed_from_u64(seed),
            durable: VersionVector::new(),
            links: BTreeMap::new(),
            targets,
            rounds: BTreeMap::new(),
            serving: BTreeMap::new(),
            gap: false,
            next_gap_round: now,
            armed: None,
            _message: PhantomData,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The durable vector this node serves up to and asks with.
    pub fn durable(&self) -> &VersionVector {
        &self.durable
    }

    /// Peers with an open link.
    pub fn connected(&self) -> impl Iterator<Item = &P> {
        self.links.keys()
    }

    pub fn is_connected(&self, peer: &P) -> bool {
        self.links.contains_key(peer)
    }

    /// Peers a sync round is in flight with.
    pub fn syncing(&self) -> impl Iterator<Item = &P> {
        self.rounds.keys()
    }

    /// Pages being read for peers.
    pub fn serving(&self) -> usize {
        self.serving.len()
    }

    /// Whether a gap waits for a round.
    pub fn gap_pending(&self) -> bool {
        self.gap
    }

    /// Feeds one event at time `now`; returns the commands to carry out, in
    /// order.
    pub fn handle(&mut self, now: Millis, event: Event<P, M>) -> Vec<Command<P, M>> {
        let mut out = Vec::new();
        match event {
            Event::Tick => self.on_tick(now, &mut out),
            Event::Durable(vv) => self.durable = vv,
            Event::PeerUp { peer, dialer } => self.on_peer_up(now, peer, dialer),
            Event::PeerDown { peer } => self.on_peer_down(now, peer, &mut out),
            Event::DialFailed { peer } => {
                // The redial is already scheduled when the dial went out.
                if let Some(t) = self.targets.get_mut(&peer)
                    && t.next_at.is_none()
                    && !self.links.contains_key(&peer)
                {
                    t.next_at = Some(now + t.backoff);
                }
            }
            Event::Subscribed { peer } => {
                // Whatever either side published before the subscription
                // never reached the other: repair now, not at the next tick.
                if self.links.contains_key(&peer) && !self.rounds.contains_key(&peer) {
                    self.start_round(now, peer, false, &mut out);
                }
            }
            Event::Discovered { peer } => {
                if self.config.target_peers > 0
                    && self.links.len() < self.config.target_peers
                    && !self.links.contains_key(&peer)
                    && !self.targets.contains_key(&peer)
                {
                    out.push(Command::Dial { peer });
                }
            }
            Event::PingOk { peer } => {
                if let Some(l) = self.links.get_mut(&peer) {
                    l.ping_failures = 0;
                    l.heard = now;
                }
            }
            Event::PingFailed { peer } => {
                if let Some(l) = self.links.get_mut(&peer) {
                    l.ping_failures += 1;
                    if l.ping_failures >= self.config.max_ping_failures {
                        l.ping_failures = 0;
                        out.push(Command::Disconnect { peer });
                    }
                }
            }
            Event::GapSeen => {
                self.gap = true;
                self.maybe_gap_round(now, &mut out);
            }
            Event::Gossip { from, id, delta } => {
                self.heard(now, &from);
                if delta.seq <= self.durable.get(&delta.origin) {
                    // Held already: not forwarded. Still handed to the
                    // core, which compares it with the copy it holds: the
                    // same bytes come back as a gossip message only after
                    // gossipsub's duplicate cache forgot them, so a second
                    // copy here is most often a different delta with a
                    // taken seq (forged, or an equivocation to prove).
                    out.push(Command::ReportGossip {
                        id: id.clone(),
                        from,
                        acceptance: Acceptance::Ignore,
                    });
                    out.push(Command::Deliver {
                        batch: Batch::Gossip { from, id },
                        deltas: vec![delta],
                    });
                    return out;
                }
                // Forward first: the core's verdict cannot make a verified
                // delta worse for the next hop (a gap there is filled the
                // same way as here, a change automerge refuses is refused
                // everywhere alike).
                out.push(Command::ReportGossip {
                    id: id.clone(),
                    from,
                    acceptance: Acceptance::Accept,
                });
                out.push(Command::Deliver {
                    batch: Batch::Gossip { from, id },
                    deltas: vec![delta],
                });
            }
            Event::GossipMalformed { from, id } => out.push(Command::ReportGossip {
                id,
                from,
                acceptance: Acceptance::Reject,
            }),
            Event::SyncRequest {
                from,
                request,
                theirs,
            } => {
                self.heard(now, &from);
                self.on_sync_request(now, from, request, theirs, &mut out);
            }
            Event::Served { request } => {
                self.serving.remove(&request);
            }
            Event::SyncPage { from, deltas, more } => {
                self.heard(now, &from);
                self.on_sync_page(now, from, deltas, more, &mut out);
            }
            Event::RequestFailed { peer } => {
                if let Some(round) = self.rounds.remove(&peer) {
                    self.retry_elsewhere(now, peer, round, &mut out);
                }
            }
            Event::Verdicts { batch, verdicts } => {
                self.on_verdicts(now, batch, &verdicts, &mut out)
            }
            Event::CoreBusy { batch } => {
                // A gossip message was reported (forwarded) on arrival.
                if let Batch::Page { from } = batch {
                    self.rounds.remove(&from);
                }
                // Something was dropped: fetch it once the core has room.
                self.gap = true;
                self.next_gap_round = self.next_gap_round.max(now + self.config.gap_retry_ms);
            }
        }
        self.arm(now, &mut out);
        out
    }

    /// Notes that `peer` was heard from.
    fn heard(&mut self, now: Millis, peer: &P) {
        if let Some(l) = self.links.get_mut(peer) {
            l.heard = l.heard.max(now);
        }
    }

    fn on_tick(&mut self, now: Millis, out: &mut Vec<Command<P, M>>) {
        // Links silent for too long are dead: close them, so they are
        // redialled rather than left to TCP's retransmission backoff.
        let timeout = self.config.link_timeout_ms;
        for (peer, link) in &mut self.links {
            if now >= link.heard + timeout {
                // Once; the link goes when its close is reported.
                link.heard = now;
                out.push(Command::Disconnect { peer: *peer });
            }
        }
        // Requests that outlived their deadline failed.
        let expired: Vec<P> = self
            .rounds
            .iter()
            .filter(|(_, r)| matches!(r.stage, Stage::Requested { deadline } if deadline <= now))
            .map(|(p, _)| *p)
            .collect();
        for peer in expired {
            if let Some(round) = self.rounds.remove(&peer) {
                self.retry_elsewhere(now, peer, round, out);
            }
        }
        // Redials due; forget discovered peers lost too long ago.
        let forget = self.config.forget_after_ms;
        self.targets
            .retain(|_, t| t.join || t.lost_at.is_none_or(|lost| now < lost + forget));
        let max = self.config.redial_max_ms;
        for (peer, t) in &mut self.targets {
            if self.links.contains_key(peer) {
                continue;
            }
            if t.next_at.is_some_and(|at| at <= now) {
                out.push(Command::Dial { peer: *peer });
                // Dial again after the backoff whether or not this dial
                // reports back: a dial into a dead network may hang for
                // long, and a fresh one connects as soon as it returns.
                t.next_at = Some(now + t.backoff);
                t.backoff = (t.backoff * 2).min(max);
            }
        }
        if now >= self.next_sync {
            self.next_sync = now + self.config.sync_interval_ms;
            if self.rounds.len() < self.config.max_rounds
                && let Some(peer) = self.pick_peer(None)
            {
                self.start_round(now, peer, false, out);
            }
        }
        self.maybe_gap_round(now, out);
        if self.config.target_peers > 0 && !self.links.is_empty() && now >= self.next_bootstrap {
            self.next_bootstrap = now + self.config.bootstrap_interval_ms;
            out.push(Command::Bootstrap);
        }
    }

    fn on_peer_up(&mut self, now: Millis, peer: P, dialer: bool) {
        self.links.insert(
            peer,
            Link {
                ping_failures: 0,
                heard: now,
            },
        );
        match self.targets.get_mut(&peer) {
            Some(t) => {
                t.backoff = self.config.redial_min_ms;
                t.next_at = None;
                t.lost_at = None;
            }
            None if dialer => {
                // A peer this node chose to dial: keep it.
                self.targets.insert(
                    peer,
                    DialTarget {
                        join: false,
                        backoff: self.config.redial_min_ms,
                        next_at: None,
                        lost_at: None,
                    },
                );
            }
            None => {}
        }
    }

    fn on_peer_down(&mut self, now: Millis, peer: P, out: &mut Vec<Command<P, M>>) {
        self.links.remove(&peer);
        if let Some(t) = self.targets.get_mut(&peer) {
            t.next_at = Some(now);
            if !t.join {
                t.lost_at = Some(now);
            }
        }
        if let Some(round) = self.rounds.remove(&peer) {
            self.retry_elsewhere(now, peer, round, out);
        }
    }

    fn on_sync_request(
        &mut self,
        now: Millis,
        from: P,
        request: RequestId,
        theirs: Option<VersionVector>,
        out: &mut Vec<Command<P, M>>,
    ) {
        let Some(theirs) = theirs else {
            out.push(Command::RespondEmpty {
                request,
                to: from,
                why: Empty::Malformed,
            });
            return;
        };
        // Push-pull: the requester holds deltas this node lacks.
        let behind = !self.durable.covers(&theirs);
        if theirs.covers(&self.durable) {
            out.push(Command::RespondEmpty {
                request,
                to: from,
                why: Empty::UpToDate,
            });
        } else {
            let for_peer = self.serving.values().filter(|p| **p == from).count();
            if self.serving.len() >= self.config.max_serving
                || for_peer >= self.config.max_serving_per_peer
            {
                out.push(Command::RespondEmpty {
                    request,
                    to: from,
                    why: Empty::Busy,
                });
            } else {
                self.serving.insert(request, from);
                out.push(Command::ServePage {
                    request,
                    to: from,
                    theirs,
                    up_to: self.durable.clone(),
                    bounds: PageBounds {
                        max_deltas: self.config.page_deltas,
                        max_bytes: self.config.page_bytes,
                    },
                });
            }
        }
        if behind && self.links.contains_key(&from) && !self.rounds.contains_key(&from) {
            self.start_round(now, from, false, out);
        }
    }

    fn on_sync_page(
        &mut self,
        now: Millis,
        from: P,
        deltas: Vec<Delta>,
        more: bool,
        out: &mut Vec<Command<P, M>>,
    ) {
        let round = self.rounds.get_mut(&from);
        if deltas.is_empty() {
            // Caught up with this peer (or it had nothing usable).
            if round.is_some() {
                self.rounds.remove(&from);
                self.maybe_gap_round(now, out);
            }
            return;
        }
        if let Some(round) = round {
            round.stage = Stage::Applying { more };
        }
        // A late answer to a request that timed out still carries deltas.
        out.push(Command::Deliver {
            batch: Batch::Page { from },
            deltas,
        });
    }

    fn on_verdicts(
        &mut self,
        now: Millis,
        batch: Batch<P, M>,
        verdicts: &[Verdict],
        out: &mut Vec<Command<P, M>>,
    ) {
        let gap = verdicts.iter().any(|v| v.is_gap());
        match batch {
            // Reported (forwarded) on arrival; the verdict only tells of gaps.
            Batch::Gossip { .. } => {}
            Batch::Page { from } => {
                if let Some(round) = self.rounds.get(&from).copied()
                    && let Stage::Applying { more } = round.stage
                {
                    // Ask again while pages come back full and of use.
                    let useful = verdicts
                        .iter()
                        .any(|v| v.is_new() || *v == Verdict::Duplicate);
                    self.rounds.remove(&from);
                    if more && useful && self.links.contains_key(&from) {
                        self.start_round(now, from, round.gap, out);
                        if let Some(r) = self.rounds.get_mut(&from) {
                            r.retry = round.retry;
                        }
                    }
                }
            }
        }
        if gap {
            self.gap = true;
        }
        self.maybe_gap_round(now, out);
    }

    /// A round with `failed` ended without an answer: try another peer now.
    fn retry_elsewhere(
        &mut self,
        now: Millis,
        failed: P,
        round: Round,
        out: &mut Vec<Command<P, M>>,
    ) {
        if round.gap {
            self.gap = true;
        }
        if round.retry {
            return;
        }
        if let Some(peer) = self.pick_peer(Some(failed)) {
            if round.gap {
                self.gap = false;
            }
            self.start_round(now, peer, round.gap, out);
            if let Some(r) = self.rounds.get_mut(&peer) {
                r.retry = true;
            }
        }
    }

    /// Starts a round for a pending gap, unless one is in flight or the last
    /// one ended less than `gap_retry_ms` ago.
    fn maybe_gap_round(&mut self, now: Millis, out: &mut Vec<Command<P, M>>) {
        if !self.gap || now < self.next_gap_round || self.rounds.values().any(|r| r.gap) {
            return;
        }
        if let Some(peer) = self.pick_peer(None) {
            self.gap = false;
            self.next_gap_round = now + self.config.gap_retry_ms;
            self.start_round(now, peer, true, out);
        }
    }

    /// A random connected peer with no round in flight, other than `except`.
    fn pick_peer(&mut self, except: Option<P>) -> Option<P> {
        let rounds = &self.rounds;
        self.links
            .keys()
            .filter(|p| !rounds.contains_key(p) && Some(**p) != except)
            .copied()
            .choose(&mut self.rng)
    }

    fn start_round(&mut self, now: Millis, peer: P, gap: bool, out: &mut Vec<Command<P, M>>) {
        self.rounds.insert(
            peer,
            Round {
                stage: Stage::Requested {
                    deadline: now + self.config.request_timeout_ms,
                },
                gap,
                retry: false,
            },
        );
        out.push(Command::SendSyncRequest {
            to: peer,
            have: self.durable.clone(),
        });
    }

    /// The earliest time something is due.
    fn next_deadline(&self) -> Option<Millis> {
        let dials = self
            .targets
            .iter()
            .filter(|(p, _)| !self.links.contains_key(p))
            .filter_map(|(_, t)| t.next_at);
        let requests = self.rounds.values().filter_map(|r| match r.stage {
            Stage::Requested { deadline } => Some(deadline),
            Stage::Applying { .. } => None,
        });
        let silences = self
            .links
            .values()
            .map(|l| l.heard + self.config.link_timeout_ms);
        let gap = (self.gap && !self.links.is_empty()).then_some(self.next_gap_round);
        let bootstrap =
            (self.config.target_peers > 0 && !self.links.is_empty()).then_some(self.next_bootstrap);
        dials
            .chain(silences)
            .chain(requests)
            .chain(gap)
            .chain(bootstrap)
            .chain(std::iter::once(self.next_sync))
            .min()
    }

    fn arm(&mut self, now: Millis, out: &mut Vec<Command<P, M>>) {
        let Some(at) = self.next_deadline() else {
            return;
        };
        let at = at.max(now);
        if self.armed != Some(at) {
            self.armed = Some(at);
            out.push(Command::ArmTimer { at });
        }
    }
}
