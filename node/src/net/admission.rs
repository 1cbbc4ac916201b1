//! The network actor's side of admission: it translates between the swarm
//! and [`hearsay_admission::Admission`], which decides.
//!
//! - On a first connection the peer is pending: gossipsub gives it an
//!   application score far below its graylist threshold (nothing is
//!   published to it, its messages are dropped unread), the sync machine
//!   and the topology do not know it, and its sync, registry and status
//!   messages are dropped. Both sides send a [`Hello`]: certificate,
//!   revocations, equivocation proofs. When the machine says `Admit`, the
//!   score goes back to 0 and the peer becomes a mesh member (the delta
//!   topic subscription it sent meanwhile is replayed); when it says
//!   `Disconnect`, every connection to it is closed and the reason counted.
//!   In an open mesh (no operator) every peer is admitted at once.
//! - Every message a peer sends is charged to its budgets first
//!   ([`Admission::check`]): over a rate it is dropped unread, and a peer
//!   that keeps at it is disconnected and banned for a while.
//! - Deltas (pushed or in anti-entropy pages) whose origin is not
//!   admitted, revoked, expired or proven to equivocate are refused before
//!   the core sees them, and counted by reason.
//! - Revocations and equivocation proofs spread on [`ADMISSION_TOPIC`] and in
//!   hellos; revocations are kept in the store (meta key `revocations`),
//!   proofs by the core.

use std::collections::{BTreeSet, HashMap};
use std::pin::Pin;
use std::time::Duration;

use futures::FutureExt;
use hearsay_admission::{
    Admission, Certificate, Check, Command as GateCommand, Event as GateEvent, Kind, Reason,
    Revocation,
};
use hearsay_crdt::{Delta, Equivocation, NodeId};
use libp2p::PeerId;
use libp2p::gossipsub::{IdentTopic, MessageAcceptance, MessageId};
use libp2p::request_response;
use serde_bytes::ByteBuf;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Sleep};

use super::{
    ADMISSION_TOPIC, HELLO_MAX_PROOFS, HELLO_MAX_REVOCATIONS, Hello, NOT_ADMITTED_SCORE, Net,
    Notice, Pending,
};
use crate::core::PeerCommand;
use crate::metrics::ReasonLabels;
use crate::store::Store;
use hearsay_sync::Event;

/// Meta key of the revocations kept (see [`encode_list`]).
const REVOCATIONS: &str = "revocations";
/// Hellos taken from one peer per connection; more is misbehaviour.
const MAX_HELLOS: u32 = 4;
/// Equivocation proofs the actor keeps for hellos.
const MAX_PROOFS: usize = 256;
/// Peers blocked at the connection at once; beyond it, a banned peer is
/// still refused by the machine, after the handshake.
const MAX_BLOCKED: usize = 4096;

/// What the node's operator API asks of admission.
#[derive(Debug)]
pub enum AdminRequest {
    /// A revocation signed by the operator (its encoding): kept, applied
    /// and gossiped. The reply says whether it was taken (or why not).
    Revoke {
        revocation: Vec<u8>,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// What admission needs from the node at start.
#[derive(Debug)]
pub struct AdmissionParts {
    pub config: hearsay_admission::Config,
    pub certificate: Option<Certificate>,
    /// Equivocation proofs the core holds (encoded).
    pub proofs: Vec<Vec<u8>>,
    pub admin: mpsc::Receiver<AdminRequest>,
}

/// Admission as `GET /api/v0/stats` and `GET /api/v0/admission` show it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct AdmissionStatus {
    /// `open` (no operator: every peer is admitted) or `closed`.
    pub mode: &'static str,
    pub operator: Option<String>,
    /// This node's certificate: region and expiry (Unix ms, none: never).
    pub certificate: Option<CertificateView>,
    pub admitted_peers: usize,
    /// Connected peers still without a valid certificate.
    pub pending_peers: usize,
    /// Peers refused on reconnect for now.
    pub banned_peers: usize,
    /// Node ids revoked by the operator.
    pub revoked: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CertificateView {
    pub node: String,
    pub region: String,
    pub issued_ms: u64,
    pub expires_ms: Option<u64>,
}

impl From<&Certificate> for CertificateView {
    fn from(c: &Certificate) -> Self {
        CertificateView {
            node: c.node.to_string(),
            region: c.region.clone(),
            issued_ms: c.issued_ms,
            expires_ms: c.expires_ms,
        }
    }
}

/// A connected peer the machine has not admitted yet.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    dialer: bool,
    /// It subscribed to the delta topic meanwhile.
    subscribed: bool,
}

/// The actor's admission state.
pub(super) struct Gate {
    pub(super) machine: Admission<PeerId>,
    ban_ms: u64,
    pub(super) timer: Pin<Box<Sleep>>,
    pub(super) topic: IdentTopic,
    waiting: HashMap<PeerId, Waiting>,
    /// Admitted connected peers, as the sync machine knows them.
    pub(super) up: BTreeSet<PeerId>,
    hellos: HashMap<PeerId, u32>,
    /// Peers whose connections the swarm refuses, until when (wall ms;
    /// `u64::MAX`: for good). At most [`MAX_BLOCKED`].
    blocked: HashMap<PeerId, u64>,
    proofs: Vec<Vec<u8>>,
    pub(super) admin: mpsc::Receiver<AdminRequest>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("open", &self.machine.is_open())
            .field("up", &self.up.len())
            .field("waiting", &self.waiting.len())
            .finish_non_exhaustive()
    }
}

impl Gate {
    pub(super) fn new<S: Store>(parts: AdmissionParts, me: NodeId, store: &S) -> (Gate, Vec<u8>) {
        let ban_ms = parts.config.ban_ms;
        let machine = Admission::new(parts.config, me, parts.certificate);
        let gate = Gate {
            machine,
            ban_ms,
            timer: Box::pin(tokio::time::sleep(Duration::from_secs(3600))),
            topic: IdentTopic::new(ADMISSION_TOPIC),
            waiting: HashMap::new(),
            up: BTreeSet::new(),
            hellos: HashMap::new(),
            blocked: HashMap::new(),
            proofs: parts.proofs.into_iter().take(MAX_PROOFS).collect(),
            admin: parts.admin,
        };
        let stored = match store.get_meta(REVOCATIONS) {
            Ok(v) => v.unwrap_or_default(),
            Err(e) => {
                tracing::error!(error = %e, "reading the stored revocations");
                Vec::new()
            }
        };
        (gate, stored)
    }
}

/// Length-prefixed items (u32 BE each).
fn encode_list<'a>(items: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for item in items {
        out.extend_from_slice(&(item.len() as u32).to_be_bytes());
        out.extend_from_slice(item);
    }
    out
}

fn decode_list(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some((len, rest)) = bytes.split_first_chunk::<4>() {
        let len = u32::from_be_bytes(*len) as usize;
        if len > rest.len() {
            break;
        }
        let (item, rest) = rest.split_at(len);
        out.push(item.to_vec());
        bytes = rest;
    }
    out
}

impl<S: Store> Net<S> {
    /// Wall clock (Unix ms): certificates expire in wall time.
    fn wall(&self) -> u64 {
        self.announce.wall_ms()
    }

    /// Restores the revocations and proofs kept from earlier runs.
    pub(super) fn admission_start(&mut self, stored_revocations: Vec<u8>) {
        let equivocators = self
            .gate
            .proofs
            .iter()
            .filter_map(|p| Equivocation::decode(p).ok())
            .map(|p| p.origin())
            .collect();
        self.gate_feed(GateEvent::Restored {
            revocations: decode_list(&stored_revocations),
            equivocators,
        });
    }

    pub(super) fn gate_feed(&mut self, event: GateEvent<PeerId>) -> Vec<GateCommand<PeerId>> {
        let now = self.wall();
        let commands = self.gate.machine.handle(now, event);
        for c in &commands {
            self.gate_execute(c.clone());
        }
        commands
    }

    fn gate_execute(&mut self, command: GateCommand<PeerId>) {
        match command {
            GateCommand::Admit { peer } => self.admitted(peer),
            GateCommand::Disconnect { peer, reason } => {
                tracing::info!(%peer, reason = reason.as_str(), "closing the link: admission");
                self.block(peer, reason);
                self.metrics
                    .peer_disconnects
                    .get_or_create(&ReasonLabels {
                        reason: reason.as_str(),
                    })
                    .inc();
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            GateCommand::Persist { .. } => {
                let list = encode_list(
                    self.gate
                        .machine
                        .revocations()
                        .map(Revocation::encode)
                        .collect::<Vec<_>>()
                        .iter()
                        .map(Vec::as_slice),
                );
                let store = self.store.clone();
                self.pending.push(
                    async move {
                        let saved = tokio::task::spawn_blocking(move || {
                            store.put_meta(REVOCATIONS, &list)?;
                            store.flush()
                        })
                        .await;
                        if !matches!(saved, Ok(Ok(()))) {
                            tracing::error!("storing the revocations failed");
                        }
                        Pending::Done
                    }
                    .boxed(),
                );
            }
            GateCommand::Publish { revocation } => {
                self.publish_notice(Notice::Revocation(revocation));
            }
            GateCommand::Present { peer } => self.send_hello(peer),
            GateCommand::ArmTimer { at } => {
                let wait = at.saturating_sub(self.wall());
                self.gate
                    .timer
                    .as_mut()
                    .reset(Instant::now() + Duration::from_millis(wait));
            }
            GateCommand::Refused { reason } => {
                self.metrics
                    .peer_messages_dropped
                    .get_or_create(&ReasonLabels {
                        reason: reason.as_str(),
                    })
                    .inc();
            }
        }
    }

    /// Refuses the peer's connections at the swarm for as long as the
    /// machine bans it (for good once revoked or proven to equivocate): a
    /// peer that redials costs a handshake, not a round of protocols.
    fn block(&mut self, peer: PeerId, reason: Reason) {
        let until = match reason {
            Reason::Revoked | Reason::Equivocated => u64::MAX,
            Reason::NotAdmitted | Reason::Expired | Reason::Banned => return,
            _ => self.wall().saturating_add(self.gate.ban_ms),
        };
        if self.gate.blocked.len() >= MAX_BLOCKED && !self.gate.blocked.contains_key(&peer) {
            return;
        }
        self.gate.blocked.insert(peer, until);
        self.swarm.behaviour_mut().blocked.block_peer(peer);
    }

    /// Lets the peers whose ban ended connect again.
    pub(super) fn unblock_expired(&mut self) {
        let now = self.wall();
        let ended: Vec<PeerId> = self
            .gate
            .blocked
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(p, _)| *p)
            .collect();
        for peer in ended {
            self.gate.blocked.remove(&peer);
            self.swarm.behaviour_mut().blocked.unblock_peer(peer);
        }
    }

    fn publish_notice(&mut self, notice: Notice) {
        let topic = self.gate.topic.clone();
        if let Err(e) = self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(topic, notice.encode())
        {
            // No peer yet: hellos carry it to the next ones.
            tracing::debug!(error = %e, "publishing an admission notice");
        }
    }

    /// The first connection to `peer` is up.
    pub(super) fn admission_connected(&mut self, peer: PeerId, dialer: bool) {
        let Some(node) = crate::status::node_id(&peer) else {
            // Not an ed25519 key: never a hearsay node.
            tracing::info!(%peer, "closing the link: not an ed25519 peer id");
            let _ = self.swarm.disconnect_peer_id(peer);
            return;
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .set_application_score(&peer, NOT_ADMITTED_SCORE);
        self.gate.waiting.insert(
            peer,
            Waiting {
                dialer,
                subscribed: false,
            },
        );
        let commands = self.gate_feed(GateEvent::Connected { peer, node });
        // An open mesh admits at once and needs no certificate, but the
        // hello still carries revocations and proofs.
        if self.gate.machine.is_open()
            && commands
                .iter()
                .any(|c| matches!(c, GateCommand::Admit { .. }))
        {
            self.send_hello(peer);
        }
    }

    /// The last connection to `peer` closed.
    pub(super) fn admission_closed(&mut self, peer: PeerId) {
        self.gate.waiting.remove(&peer);
        self.gate.hellos.remove(&peer);
        let was_up = self.gate.up.remove(&peer);
        if was_up && !self.light.remove(&peer) {
            self.feed(Event::PeerDown { peer });
        }
        self.light.remove(&peer);
        self.member_down(peer);
        self.gate_feed(GateEvent::Disconnected { peer });
        self.admitted_gauge();
    }

    fn admitted_gauge(&self) {
        self.metrics.admitted_peers.set(self.gate.up.len() as i64);
    }

    fn admitted(&mut self, peer: PeerId) {
        let Some(waiting) = self.gate.waiting.remove(&peer) else {
            return;
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .set_application_score(&peer, 0.0);
        self.gate.up.insert(peer);
        self.admitted_gauge();
        tracing::info!(%peer, "admitted");
        if self.light.contains(&peer) {
            return;
        }
        self.feed(Event::PeerUp {
            peer,
            dialer: waiting.dialer,
        });
        if waiting.subscribed {
            self.feed(Event::Subscribed { peer });
            self.member_up(peer);
        }
    }

    /// `peer` subscribed to the delta topic: a mesh member once admitted.
    pub(super) fn admission_subscribed(&mut self, peer: PeerId) {
        if self.gate.up.contains(&peer) {
            self.feed(Event::Subscribed { peer });
            self.member_up(peer);
        } else if let Some(w) = self.gate.waiting.get_mut(&peer) {
            w.subscribed = true;
        }
    }

    pub(super) fn is_up(&self, peer: &PeerId) -> bool {
        self.gate.up.contains(peer)
    }

    /// Charges a message to the peer's budgets: whether to read it.
    pub(super) fn admit_message(&mut self, peer: &PeerId, kind: Kind, bytes: usize) -> bool {
        let now = self.wall();
        match self.gate.machine.check(now, peer, kind, bytes) {
            Check::Pass => true,
            Check::Drop(reason) => {
                self.count_dropped(reason);
                false
            }
            Check::Disconnect(reason) => {
                self.count_dropped(reason);
                self.gate_execute(GateCommand::Disconnect {
                    peer: *peer,
                    reason,
                });
                false
            }
        }
    }

    fn count_dropped(&self, reason: Reason) {
        self.metrics
            .peer_messages_dropped
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Whether a delta's origin may be taken; counts a refusal.
    pub(super) fn origin_ok(&self, delta: &Delta) -> bool {
        match self.gate.machine.origin_allowed(self.wall(), &delta.origin) {
            Ok(()) => true,
            Err(reason) => {
                tracing::debug!(origin = %delta.origin, seq = delta.seq, reason = reason.as_str(), "delta of a refused origin");
                self.metrics
                    .origins_refused
                    .get_or_create(&ReasonLabels {
                        reason: reason.as_str(),
                    })
                    .inc();
                false
            }
        }
    }

    /// Tells gossipsub what became of message `id` from `from` (forward,
    /// drop, or drop and score the sender down); a rejection may take the
    /// sender below the graylist threshold, and then it is cut off.
    pub(super) fn judge(&mut self, id: &MessageId, from: PeerId, acceptance: MessageAcceptance) {
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(id, &from, acceptance);
        if acceptance == MessageAcceptance::Reject {
            self.close_graylisted(vec![from]);
        }
    }

    /// Closes and bans the admitted peers among `peers` that gossipsub
    /// scored below its graylist threshold: it drops their messages unread
    /// from then on, but reading them still costs, and they keep coming.
    pub(super) fn close_graylisted(&mut self, peers: Vec<PeerId>) {
        let threshold = libp2p::gossipsub::PeerScoreThresholds::default().graylist_threshold;
        for peer in peers {
            let low = self
                .swarm
                .behaviour()
                .gossipsub
                .peer_score(&peer)
                .is_some_and(|s| s < threshold);
            if low && self.gate.up.contains(&peer) {
                tracing::info!(%peer, "gossipsub graylisted the peer");
                self.gate_feed(GateEvent::Graylisted { peer });
            }
        }
    }

    /// Every admitted peer, for [`Net::close_graylisted`].
    pub(super) fn admitted_peers(&self) -> Vec<PeerId> {
        self.gate.up.iter().copied().collect()
    }

    /// A peer sent what no honest node sends: one strike.
    pub(super) fn misbehaved(&mut self, peer: PeerId, what: &'static str) {
        self.gate_feed(GateEvent::Misbehaved { peer, what });
    }

    pub(super) fn send_hello(&mut self, peer: PeerId) {
        let hello = self.hello();
        self.swarm
            .behaviour_mut()
            .admission
            .send_request(&peer, hello);
    }

    fn hello(&self) -> Hello {
        Hello {
            certificate: self
                .gate
                .machine
                .own_certificate()
                .map(|c| ByteBuf::from(c.encode())),
            revocations: self
                .gate
                .machine
                .revocations()
                .take(HELLO_MAX_REVOCATIONS)
                .map(|r| ByteBuf::from(r.encode()))
                .collect(),
            proofs: self
                .gate
                .proofs
                .iter()
                .take(HELLO_MAX_PROOFS)
                .cloned()
                .map(ByteBuf::from)
                .collect(),
        }
    }

    pub(super) fn on_admission_event(&mut self, event: request_response::Event<Hello, Hello>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    let hello = self.hello();
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .admission
                        .send_response(channel, hello);
                    self.on_hello(peer, request);
                }
                request_response::Message::Response { response, .. } => {
                    self.on_hello(peer, response)
                }
            },
            request_response::Event::OutboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "hello failed");
            }
            _ => {}
        }
    }

    fn on_hello(&mut self, peer: PeerId, hello: Hello) {
        let n = self.gate.hellos.entry(peer).or_default();
        *n += 1;
        if *n > MAX_HELLOS {
            self.misbehaved(peer, "too many hellos");
            return;
        }
        if let Some(cert) = hello.certificate {
            let cert = cert.into_vec();
            let commands = self.gate_feed(GateEvent::Presented {
                peer,
                certificate: cert.clone(),
            });
            // Tell the mesh whom this node admitted, before the newcomer's
            // deltas travel through relays that have no link to it.
            if commands
                .iter()
                .any(|c| matches!(c, GateCommand::Admit { .. }))
            {
                self.publish_notice(Notice::Certificate(cert));
            }
        }
        if !self.is_up(&peer) {
            return;
        }
        for r in hello.revocations.into_iter().take(HELLO_MAX_REVOCATIONS) {
            self.gate_feed(GateEvent::Revocation {
                from: Some(peer),
                revocation: r.into_vec(),
            });
        }
        for p in hello.proofs.into_iter().take(HELLO_MAX_PROOFS) {
            if !self.on_proof(p.into_vec()) {
                self.misbehaved(peer, "invalid equivocation proof");
            }
        }
    }

    /// A proof from a peer: checked here, then kept by the core (which
    /// tells the actor back if it was new) and acted on at once.
    fn on_proof(&mut self, bytes: Vec<u8>) -> bool {
        let Ok(proof) = Equivocation::decode(&bytes) else {
            return false;
        };
        let origin = proof.origin();
        if self.gate.machine.equivocators().any(|n| *n == origin) {
            return true;
        }
        self.gate_feed(GateEvent::Equivocated { node: origin });
        if self.core.try_send(PeerCommand::Proof { bytes }).is_err() {
            self.metrics.overload_rejections.inc();
        }
        true
    }

    /// A proof the core found or took in, now durable: refuse the origin
    /// and tell the mesh.
    pub(super) fn on_core_proof(&mut self, bytes: Vec<u8>) {
        if let Ok(proof) = Equivocation::decode(&bytes) {
            self.gate_feed(GateEvent::Equivocated {
                node: proof.origin(),
            });
        }
        if self.gate.proofs.len() < MAX_PROOFS && !self.gate.proofs.contains(&bytes) {
            self.gate.proofs.push(bytes.clone());
        }
        self.publish_notice(Notice::Equivocation(bytes));
    }

    /// A message on the admission topic.
    pub(super) fn on_notice(&mut self, from: PeerId, id: MessageId, data: &[u8]) {
        let acceptance = match Notice::decode(data) {
            Some(Notice::Revocation(r)) => {
                let commands = self.gate_feed(GateEvent::Revocation {
                    from: Some(from),
                    revocation: r,
                });
                if commands
                    .iter()
                    .any(|c| matches!(c, GateCommand::Refused { .. }))
                {
                    MessageAcceptance::Reject
                } else if commands
                    .iter()
                    .any(|c| matches!(c, GateCommand::Persist { .. }))
                {
                    MessageAcceptance::Accept
                } else {
                    MessageAcceptance::Ignore
                }
            }
            Some(Notice::Certificate(c)) => {
                let commands = self.gate_feed(GateEvent::Learned { certificate: c });
                if commands
                    .iter()
                    .any(|c| matches!(c, GateCommand::Refused { .. }))
                {
                    MessageAcceptance::Reject
                } else {
                    MessageAcceptance::Accept
                }
            }
            Some(Notice::Equivocation(p)) => {
                if self.on_proof(p) {
                    MessageAcceptance::Accept
                } else {
                    MessageAcceptance::Reject
                }
            }
            None => MessageAcceptance::Reject,
        };
        self.judge(&id, from, acceptance);
    }

    /// The operator API's requests.
    pub(super) fn on_admin(&mut self, request: AdminRequest) {
        match request {
            AdminRequest::Revoke { revocation, reply } => {
                let result = if self.gate.machine.is_open() {
                    Err("this mesh is open (no operator): there is nothing to revoke".to_owned())
                } else {
                    match Revocation::decode(&revocation) {
                        Err(e) => Err(e.to_string()),
                        Ok(_) => {
                            let commands = self.gate_feed(GateEvent::Revocation {
                                from: None,
                                revocation,
                            });
                            match commands.iter().find_map(|c| match c {
                                GateCommand::Refused { reason } => Some(*reason),
                                _ => None,
                            }) {
                                Some(reason) => Err(format!("refused: {}", reason.as_str())),
                                None => Ok(()),
                            }
                        }
                    }
                };
                let _ = reply.send(result);
            }
        }
    }

    /// A certificate carried by a verified status.
    pub(super) fn learn_certificate(&mut self, text: &str) {
        match Certificate::from_text(text) {
            Ok(c) => {
                self.gate_feed(GateEvent::Learned {
                    certificate: c.encode(),
                });
            }
            Err(_) => self.count_dropped(Reason::BadCertificate),
        }
    }

    pub(super) fn admission_status(&self) -> AdmissionStatus {
        let m = &self.gate.machine;
        AdmissionStatus {
            mode: if m.is_open() { "open" } else { "closed" },
            operator: self.operator.map(|o| o.to_string()),
            certificate: m.own_certificate().map(CertificateView::from),
            admitted_peers: self.gate.up.len(),
            pending_peers: self.gate.waiting.len(),
            banned_peers: m.banned(self.wall()),
            revoked: m.revocations().map(|r| r.node.to_string()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_round_trip_and_unknown_tags_are_refused() {
        for n in [
            Notice::Revocation(vec![1, 2, 3]),
            Notice::Equivocation(Vec::new()),
            Notice::Certificate(vec![9]),
        ] {
            assert_eq!(Notice::decode(&n.encode()), Some(n));
        }
        assert_eq!(Notice::decode(&[]), None);
        assert_eq!(Notice::decode(&[0, 1]), None);
        assert_eq!(Notice::decode(&[4]), None);
    }

    #[test]
    fn stored_lists_round_trip_and_a_torn_tail_is_dropped() {
        let items: Vec<Vec<u8>> = vec![b"one".to_vec(), Vec::new(), vec![7; 300]];
        let bytes = encode_list(items.iter().map(Vec::as_slice));
        assert_eq!(decode_list(&bytes), items);
        assert_eq!(decode_list(&bytes[..bytes.len() - 1]), items[..2].to_vec());
        assert!(decode_list(&[0, 0]).is_empty());
    }
}
