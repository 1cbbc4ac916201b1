//! A misbehaving mesh member, for the tests and benchmarks that prove the
//! node's bounds: what a peer that holds a valid key (and, in a closed
//! mesh, a valid certificate) can do to a node, and that the node stays
//! within its limits while it does.
//!
//! A [`Hostile`] is built from the node's own swarm ([`build_swarm`]), so
//! it speaks every protocol exactly as a node does, and then does what no
//! honest node does. Its swarm runs in a task driven by commands over a
//! bounded channel (one actor owns the swarm). It dials the addresses it is
//! given (it listens on nothing, so nobody can dial it back), subscribes to
//! the delta, status and admission topics, presents its certificate (if
//! any) in a [`Hello`] on every new peer and answers hellos with it, and
//! answers sync requests with the pages it was told to serve (forged or
//! altered deltas, to test anti-entropy; empty by default). On command it:
//!
//! - publishes anything on any topic ([`Hostile::publish`]);
//! - asks a node for a sync page ([`Hostile::sync`]);
//! - floods the delta topic with a mix of valid and invalid messages, at
//!   full speed or at a rate ([`Hostile::flood`], see [`Kinds`]);
//! - stops reading altogether ([`Hostile::stall`]): a peer whose TCP and
//!   yamux windows fill up at the node's side.
//!
//! Equivocation (one origin, one seq, two different signed deltas) needs
//! no method: make the two copies with [`signed_delta`] and publish each
//! from its own `Hostile`, both started with the same key and each dialling
//! one node only. Gossipsub sends a publish to every connected subscriber,
//! so one instance linked to two nodes cannot give them different copies;
//! two instances share a peer id but not a connection, and since a hostile
//! listens on nothing the nodes cannot link them.
//!
//! Every wait is bounded, every channel is bounded, and a flood stops by
//! itself after at most [`MAX_FLOOD`].

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hearsay_crdt::{Delta, Keypair, MemoryDocs, NewPost, Replica, UserName};
use libp2p::gossipsub::{self, IdentTopic, PublishError};
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::{Swarm, SwarmEvent};
use libp2p::{Multiaddr, PeerId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_bytes::ByteBuf;
use tokio::sync::{mpsc, oneshot, watch};

use crate::net::{
    ADMISSION_TOPIC, Behaviour, BehaviourEvent, DELTA_TOPIC, Hello, SyncRequest, SyncResponse,
    build_swarm, gossip_config, gossip_scoring,
};
use crate::status::STATUS_TOPIC;

/// The longest a flood runs, whatever [`FloodPlan::max_duration`] says.
pub const MAX_FLOOD: Duration = Duration::from_secs(600);
/// Commands waiting for the swarm task.
const COMMAND_QUEUE: usize = 64;
/// Flood messages made ahead of the swarm task (the generator blocks when
/// it is full).
const FLOOD_QUEUE: usize = 1024;
/// Messages the swarm task publishes per turn before it polls the swarm
/// again.
const FLOOD_BURST: usize = 64;
/// Pause after gossipsub refused a valid delta (queues full, no peer)
/// before it is tried again.
const FLOOD_BACKOFF: Duration = Duration::from_millis(2);
/// Recent valid deltas the generator keeps to replay and to corrupt.
const RECENT: usize = 256;
/// Posts one throw-away replica makes before the generator starts a new
/// one (its documents stay in memory).
const POSTS_PER_REPLICA: usize = 256;
/// How far beyond the next seq a far-ahead delta claims to be.
const FAR_AHEAD: u64 = 1 << 20;
/// How long the hostile's gossipsub remembers what it published: short,
/// so it can publish the same bytes again (a replay) a moment later.
const OWN_DUPLICATE_CACHE: Duration = Duration::from_millis(50);
/// Connections the hostile keeps at most.
const MAX_CONNECTIONS: u32 = 64;
/// Longest wait for a sync page.
const SYNC_WAIT: Duration = Duration::from_secs(60);
/// Longest wait for a flood's counts once asked to stop.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// What the hostile peer sees of its links.
#[derive(Clone, Debug, Default)]
struct Links {
    connected: BTreeSet<PeerId>,
    /// Peers that told it they subscribe to the delta topic.
    subscribed: BTreeSet<PeerId>,
    /// Connections closed so far (by either side).
    closed: usize,
}

/// The message kinds of a flood, as weights (a kind of weight 0 is not
/// sent).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Kinds {
    /// Fresh deltas, validly signed by the hostile's key, seq after seq
    /// from [`FloodPlan::first_seq`]: real posts, which an admitted origin
    /// may write (the node's per-peer and per-origin bounds must hold).
    pub valid_new: u32,
    /// Valid deltas sent again: the caller's ([`FloodPlan::replay`]) and
    /// the flood's own recent ones. Identical bytes have the same gossip
    /// message id, so the node's gossipsub drops them as duplicates before
    /// they reach its core: replays exercise that dedup. (Nothing about a
    /// signed delta can be varied to make it look new and stay valid.)
    pub replay: u32,
    /// A recent valid delta with one bit of its signature flipped (which
    /// bit varies, so each is a new message id, not a gossip duplicate).
    pub bad_signature: u32,
    /// Random bytes of random length, up to 4 KiB.
    pub garbage: u32,
    /// Valid deltas of the hostile's key with a seq far beyond the next
    /// one (a recent change signed again at seq + about 2^20): they must
    /// not be buffered without bound.
    pub far_ahead: u32,
}

impl Default for Kinds {
    fn default() -> Self {
        Kinds {
            valid_new: 1,
            replay: 1,
            bad_signature: 1,
            garbage: 1,
            far_ahead: 1,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    ValidNew,
    Replay,
    BadSignature,
    Garbage,
    FarAhead,
}

/// What a flood does.
#[derive(Clone, Debug)]
pub struct FloodPlan {
    pub kinds: Kinds,
    /// Messages per second; `None`: as fast as the swarm takes them.
    pub rate: Option<f64>,
    /// It stops by itself after this (at most [`MAX_FLOOD`]).
    pub max_duration: Duration,
    /// Seq of the first fresh valid delta: 1 for a key that has signed
    /// nothing the nodes hold, else the next one (a lower seq would be an
    /// equivocation). [`Sent::next_seq`] continues a previous flood.
    pub first_seq: u64,
    /// Encoded valid deltas to replay (at most 256 are kept).
    pub replay: Vec<Vec<u8>>,
}

impl Default for FloodPlan {
    fn default() -> Self {
        FloodPlan {
            kinds: Kinds::default(),
            rate: None,
            max_duration: Duration::from_secs(60),
            first_seq: 1,
            replay: Vec::new(),
        }
    }
}

/// What a flood sent: per kind, the messages gossipsub took (queued to at
/// least one peer), and the publishes it refused.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Sent {
    pub valid_new: u64,
    pub replay: u64,
    pub bad_signature: u64,
    pub garbage: u64,
    pub far_ahead: u64,
    /// Publishes refused because every peer's send queue was full (valid
    /// deltas are then tried again, so their seqs stay gapless).
    pub queue_full: u64,
    /// Publishes refused as the same bytes published a moment ago (a
    /// replay within `OWN_DUPLICATE_CACHE` (50 ms)).
    pub duplicate: u64,
    /// Publishes refused otherwise (no subscribed peer to send to).
    pub refused: u64,
    /// The seq a next fresh valid delta of this key would take.
    pub next_seq: u64,
    /// How long it ran, ms.
    pub elapsed_ms: u64,
}

impl Sent {
    /// Messages gossipsub took, every kind.
    pub fn total(&self) -> u64 {
        self.valid_new + self.replay + self.bad_signature + self.garbage + self.far_ahead
    }

    fn count(&mut self, kind: Kind) {
        *match kind {
            Kind::ValidNew => &mut self.valid_new,
            Kind::Replay => &mut self.replay,
            Kind::BadSignature => &mut self.bad_signature,
            Kind::Garbage => &mut self.garbage,
            Kind::FarAhead => &mut self.far_ahead,
        } += 1;
    }
}

/// A running flood: [`FloodHandle::stop`] ends it and gives its counts.
#[derive(Debug)]
pub struct FloodHandle {
    id: u64,
    commands: mpsc::Sender<Cmd>,
    done: oneshot::Receiver<Sent>,
}

impl FloodHandle {
    /// Stops the flood (if it has not stopped by itself) and returns what
    /// it sent; empty counts if the hostile is gone.
    pub async fn stop(self) -> Sent {
        let _ = tokio::time::timeout(STOP_WAIT, self.commands.send(Cmd::StopFlood(self.id))).await;
        match tokio::time::timeout(STOP_WAIT, self.done).await {
            Ok(Ok(sent)) => sent,
            _ => Sent::default(),
        }
    }
}

/// The swarm task's side of a flood.
struct Flooding {
    id: u64,
    messages: mpsc::Receiver<(Kind, Vec<u8>)>,
    /// A valid delta gossipsub refused, to publish before anything else.
    retry: Option<(Kind, Vec<u8>)>,
    started: Instant,
    until: Instant,
    first_seq: u64,
    sent: Sent,
    done: oneshot::Sender<Sent>,
}

impl Flooding {
    fn finish(mut self) {
        // Fresh deltas are gapless: the next seq follows the last one
        // gossipsub took.
        self.sent.next_seq = self.first_seq + self.sent.valid_new;
        self.sent.elapsed_ms = self.started.elapsed().as_millis() as u64;
        let _ = self.done.send(self.sent);
    }
}

#[derive(Debug)]
enum Cmd {
    Publish(String, Vec<u8>, oneshot::Sender<Result<(), String>>),
    Sync(
        PeerId,
        Vec<u8>,
        oneshot::Sender<Result<SyncResponse, String>>,
    ),
    Serve(Vec<Vec<u8>>),
    Flood(Box<FloodStart>),
    StopFlood(u64),
    Stall(bool),
    Dial(Vec<Multiaddr>),
    Disconnect(PeerId),
}

#[derive(Debug)]
struct FloodStart {
    id: u64,
    messages: mpsc::Receiver<(Kind, Vec<u8>)>,
    until: Instant,
    first_seq: u64,
    done: oneshot::Sender<Sent>,
}

/// A misbehaving peer (see the module docs).
#[derive(Debug)]
pub struct Hostile {
    peer_id: PeerId,
    key: Keypair,
    dial: Vec<Multiaddr>,
    commands: mpsc::Sender<Cmd>,
    links: watch::Receiver<Links>,
    floods: std::sync::atomic::AtomicU64,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A post by user `rogue` with `body`, in a delta of `key` at `seq`: a
/// real automerge change (a new post document) from a throw-away replica,
/// signed at whatever seq is asked. Two calls with the same key and seq
/// give two different valid deltas (the post ids differ): an equivocation.
pub fn signed_delta(key: &Keypair, seq: u64, body: &str) -> Delta {
    let mut replica =
        Replica::new(key.clone(), MemoryDocs::default()).expect("a replica in memory");
    resign(key, seq, new_post(&mut replica, body))
}

fn new_post(replica: &mut Replica<MemoryDocs>, body: &str) -> Delta {
    let new = NewPost {
        author: UserName::new("rogue").expect("a valid user name"),
        body: body.to_owned(),
        reply_to: None,
    };
    replica
        .create_post(&new, None, crate::core::now_ms())
        .expect("creating a post in memory")
        .1
}

fn resign(key: &Keypair, seq: u64, delta: Delta) -> Delta {
    Delta::sign(key, seq, delta.doc, delta.change, delta.origin_time_ms)
        .expect("a post delta is within bounds")
}

impl Hostile {
    /// Starts the peer on the current tokio runtime, with node key `key`
    /// (also its libp2p identity, so its deltas and its connections have
    /// one origin) and `certificate`
    /// ([`hearsay_admission::Certificate::encode`]; `None` in an open
    /// mesh), dialling `dial`.
    pub fn start(key: Keypair, certificate: Option<Vec<u8>>, dial: &[Multiaddr]) -> Hostile {
        let identity = crate::node::libp2p_identity(&key);
        let peer_id = identity.public().to_peer_id();
        let mut swarm =
            build_swarm(identity, MAX_CONNECTIONS, false).expect("building the hostile swarm");
        // The node's gossipsub, but forgetful of what it published itself,
        // so that it can replay. Replaced before any connection exists.
        let config = gossipsub::ConfigBuilder::from(gossip_config().expect("gossip config"))
            .duplicate_cache_time(OWN_DUPLICATE_CACHE)
            .build()
            .expect("gossip config");
        let mut gossip =
            gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Anonymous, config)
                .expect("gossipsub");
        let (params, thresholds) = gossip_scoring();
        gossip
            .with_peer_score(params, thresholds)
            .expect("peer scoring");
        swarm.behaviour_mut().gossipsub = gossip;
        for t in [DELTA_TOPIC, STATUS_TOPIC, ADMISSION_TOPIC] {
            swarm
                .behaviour_mut()
                .gossipsub
                .subscribe(&IdentTopic::new(t))
                .expect("subscribing");
        }
        for addr in dial {
            let _ = swarm.dial(addr.clone());
        }
        let (commands, rx) = mpsc::channel(COMMAND_QUEUE);
        let (links_tx, links) = watch::channel(Links::default());
        let hello = Hello {
            certificate: certificate.map(ByteBuf::from),
            ..Hello::default()
        };
        let task = tokio::spawn(run(swarm, rx, Actor::new(links_tx, hello)));
        Hostile {
            peer_id,
            key,
            dial: dial.to_vec(),
            commands,
            links,
            floods: std::sync::atomic::AtomicU64::new(0),
            task,
        }
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The node key it signs with.
    pub fn key(&self) -> &Keypair {
        &self.key
    }

    /// Peers it is connected to now.
    pub fn connected(&self) -> Vec<PeerId> {
        self.links.borrow().connected.iter().copied().collect()
    }

    /// Connections closed so far, by either side.
    pub fn disconnections(&self) -> usize {
        self.links.borrow().closed
    }

    /// Waits until it is connected to `peer`, at most `timeout`.
    pub async fn wait_connected(&self, peer: PeerId, timeout: Duration) -> bool {
        self.wait(timeout, |l| l.connected.contains(&peer)).await
    }

    /// Waits until it has no connection to `peer`, at most `timeout`.
    pub async fn wait_disconnected(&self, peer: PeerId, timeout: Duration) -> bool {
        self.wait(timeout, |l| !l.connected.contains(&peer)).await
    }

    /// Waits until `peer` told it that it subscribes to the delta topic
    /// (from then on a publish reaches it), at most `timeout`.
    pub async fn wait_subscribed(&self, peer: PeerId, timeout: Duration) -> bool {
        self.wait(timeout, |l| l.subscribed.contains(&peer)).await
    }

    async fn wait(&self, timeout: Duration, check: impl Fn(&Links) -> bool) -> bool {
        let mut links = self.links.clone();
        tokio::time::timeout(timeout, links.wait_for(|l| check(l)))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    async fn send(&self, cmd: Cmd) -> Result<(), String> {
        self.commands
            .send(cmd)
            .await
            .map_err(|_| "the hostile task stopped".to_owned())
    }

    /// Dials again every address it was started with.
    pub async fn redial(&self) {
        let _ = self.send(Cmd::Dial(self.dial.clone())).await;
    }

    /// Dials one more address.
    pub async fn dial(&self, addr: Multiaddr) {
        let _ = self.send(Cmd::Dial(vec![addr])).await;
    }

    /// Closes every connection to `peer` (its own side of the link).
    pub async fn disconnect(&self, peer: PeerId) {
        let _ = self.send(Cmd::Disconnect(peer)).await;
    }

    /// Publishes `data` on `topic` once; gossipsub's refusal if it has
    /// nobody to send it to (or published the same bytes a moment ago).
    pub async fn publish(&self, topic: &str, data: Vec<u8>) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Publish(topic.to_owned(), data, reply))
            .await?;
        rx.await
            .map_err(|_| "the hostile task stopped".to_owned())?
    }

    /// Asks `peer` for the deltas beyond `version_vector`
    /// ([`hearsay_crdt::VersionVector::to_bytes`], or anything): its page,
    /// or why there is none (within a minute).
    pub async fn sync(
        &self,
        peer: PeerId,
        version_vector: Vec<u8>,
    ) -> Result<SyncResponse, String> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Sync(peer, version_vector, reply)).await?;
        tokio::time::timeout(SYNC_WAIT, rx)
            .await
            .map_err(|_| format!("no answer within {SYNC_WAIT:?}"))?
            .map_err(|_| "the hostile task stopped".to_owned())?
    }

    /// The encoded deltas every sync page it serves holds from now on
    /// (default: none).
    pub async fn serve_pages(&self, deltas: Vec<Vec<u8>>) {
        let _ = self.send(Cmd::Serve(deltas)).await;
    }

    /// Stops polling its swarm entirely (true): it reads nothing, answers
    /// nothing, and the node's writes to it back up. `false` resumes.
    /// Commands are still taken while stalled (a publish is queued, a
    /// flood can be stopped).
    pub async fn stall(&self, stalled: bool) {
        let _ = self.send(Cmd::Stall(stalled)).await;
    }

    /// Starts flooding the delta topic as `plan` says (ending any flood
    /// still running). The messages are made on a thread of their own, at
    /// most 1024 ahead of the swarm task.
    pub async fn flood(&self, plan: FloodPlan) -> FloodHandle {
        let id = self
            .floods
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, messages) = mpsc::channel(FLOOD_QUEUE);
        let (done, done_rx) = oneshot::channel();
        let until = Instant::now() + plan.max_duration.min(MAX_FLOOD);
        let first_seq = plan.first_seq.max(1);
        let key = self.key.clone();
        let spawned = std::thread::Builder::new()
            .name("hostile-flood".into())
            .spawn(move || generate(key, plan, until, tx));
        if let Err(e) = spawned {
            tracing::warn!("starting the flood generator: {e}");
        }
        let _ = self
            .send(Cmd::Flood(Box::new(FloodStart {
                id,
                messages,
                until,
                first_seq,
                done,
            })))
            .await;
        FloodHandle {
            id,
            commands: self.commands.clone(),
            done: done_rx,
        }
    }
}

/// Makes the messages of a flood until `until`, or until the swarm task
/// stops taking them.
fn generate(key: Keypair, plan: FloodPlan, until: Instant, tx: mpsc::Sender<(Kind, Vec<u8>)>) {
    let mut rng = StdRng::from_os_rng();
    let k = plan.kinds;
    let weights = [
        (Kind::ValidNew, k.valid_new),
        (Kind::Replay, k.replay),
        (Kind::BadSignature, k.bad_signature),
        (Kind::Garbage, k.garbage),
        (Kind::FarAhead, k.far_ahead),
    ];
    let total: u64 = weights.iter().map(|(_, w)| u64::from(*w)).sum();
    if total == 0 {
        return;
    }
    let replay: Vec<Vec<u8>> = plan.replay.into_iter().take(RECENT).collect();
    let mut recent: VecDeque<Delta> = VecDeque::with_capacity(RECENT);
    let mut replica = Replica::new(key.clone(), MemoryDocs::default()).expect("a replica");
    let mut posts = 0usize;
    let mut next_seq = plan.first_seq.max(1);
    let fresh = |replica: &mut Replica<MemoryDocs>, posts: &mut usize, seq: u64| {
        if *posts == POSTS_PER_REPLICA {
            *replica = Replica::new(key.clone(), MemoryDocs::default()).expect("a replica");
            *posts = 0;
        }
        *posts += 1;
        let body = format!("flood {seq}: a post of a hostile peer, valid and signed");
        resign(&key, seq, new_post(replica, &body))
    };
    // Something to corrupt and to sign far ahead from the start (never
    // sent as is: its seq is past any window).
    recent.push_back(fresh(&mut replica, &mut posts, u64::MAX / 2));
    let started = Instant::now();
    for n in 0u64.. {
        let now = Instant::now();
        if now >= until {
            return;
        }
        if let Some(rate) = plan.rate.filter(|r| *r > 0.0) {
            let due = started + Duration::from_secs_f64(n as f64 / rate);
            if due > now {
                std::thread::sleep((due - now).min(until - now));
            }
        }
        let mut pick = rng.random_range(0..total);
        let kind = weights
            .iter()
            .find(|(_, w)| {
                let hit = pick < u64::from(*w);
                pick = pick.saturating_sub(u64::from(*w));
                hit
            })
            .map(|(kind, _)| *kind)
            .unwrap_or(Kind::Garbage);
        let bytes = match kind {
            Kind::ValidNew => {
                let delta = fresh(&mut replica, &mut posts, next_seq);
                next_seq += 1;
                let bytes = delta.encode();
                if recent.len() == RECENT {
                    recent.pop_front();
                }
                recent.push_back(delta);
                bytes
            }
            Kind::Replay => {
                let i = rng.random_range(0..replay.len() + recent.len());
                match replay.get(i) {
                    Some(bytes) => bytes.clone(),
                    None => recent[i - replay.len()].encode(),
                }
            }
            Kind::BadSignature => {
                let mut delta = recent[rng.random_range(0..recent.len())].clone();
                delta.signature[rng.random_range(0..64)] ^= 1 << rng.random_range(0..8);
                delta.encode()
            }
            Kind::Garbage => {
                let mut junk = vec![0u8; rng.random_range(1..=4096)];
                rng.fill(&mut junk[..]);
                junk
            }
            Kind::FarAhead => {
                let source = recent[rng.random_range(0..recent.len())].clone();
                let seq = next_seq + FAR_AHEAD + rng.random_range(0..FAR_AHEAD);
                resign(&key, seq, source).encode()
            }
        };
        // The swarm task stopped taking messages: the flood is over.
        if tx.blocking_send((kind, bytes)).is_err() {
            return;
        }
    }
}

/// The swarm task's state besides the swarm.
struct Actor {
    links: watch::Sender<Links>,
    hello: Hello,
    pages: Vec<Vec<u8>>,
    pending: HashMap<OutboundRequestId, oneshot::Sender<Result<SyncResponse, String>>>,
    flood: Option<Flooding>,
    backoff: Option<Instant>,
    stalled: bool,
}

impl Actor {
    fn new(links: watch::Sender<Links>, hello: Hello) -> Actor {
        Actor {
            links,
            hello,
            pages: Vec::new(),
            pending: HashMap::new(),
            flood: None,
            backoff: None,
            stalled: false,
        }
    }

    fn command(&mut self, swarm: &mut Swarm<Behaviour>, cmd: Cmd) {
        match cmd {
            Cmd::Publish(topic, data, reply) => {
                let r = swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(IdentTopic::new(topic), data)
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                let _ = reply.send(r);
            }
            Cmd::Sync(peer, version_vector, reply) => {
                let id = swarm
                    .behaviour_mut()
                    .sync
                    .send_request(&peer, SyncRequest { version_vector });
                self.pending.insert(id, reply);
            }
            Cmd::Serve(pages) => self.pages = pages,
            Cmd::Flood(start) => {
                if let Some(old) = self.flood.take() {
                    old.finish();
                }
                let FloodStart {
                    id,
                    messages,
                    until,
                    first_seq,
                    done,
                } = *start;
                self.backoff = None;
                self.flood = Some(Flooding {
                    id,
                    messages,
                    retry: None,
                    started: Instant::now(),
                    until,
                    first_seq,
                    sent: Sent::default(),
                    done,
                });
            }
            Cmd::StopFlood(id) => {
                if self.flood.as_ref().is_some_and(|f| f.id == id)
                    && let Some(f) = self.flood.take()
                {
                    f.finish();
                }
            }
            Cmd::Stall(stalled) => self.stalled = stalled,
            Cmd::Dial(addrs) => {
                for addr in addrs {
                    let _ = swarm.dial(addr);
                }
            }
            Cmd::Disconnect(peer) => {
                let _ = swarm.disconnect_peer_id(peer);
            }
        }
    }

    fn event(&mut self, swarm: &mut Swarm<Behaviour>, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                ..
            } => {
                if num_established.get() == 1 {
                    swarm
                        .behaviour_mut()
                        .admission
                        .send_request(&peer_id, self.hello.clone());
                }
                self.links.send_modify(|l| {
                    l.connected.insert(peer_id);
                });
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established,
                ..
            } => {
                self.links.send_modify(|l| {
                    l.closed += 1;
                    if num_established == 0 {
                        l.connected.remove(&peer_id);
                        l.subscribed.remove(&peer_id);
                    }
                });
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed {
                peer_id,
                topic,
            })) if topic == IdentTopic::new(DELTA_TOPIC).hash() => {
                self.links.send_modify(|l| {
                    l.subscribed.insert(peer_id);
                });
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Unsubscribed {
                peer_id,
                topic,
            })) if topic == IdentTopic::new(DELTA_TOPIC).hash() => {
                self.links.send_modify(|l| {
                    l.subscribed.remove(&peer_id);
                });
            }
            SwarmEvent::Behaviour(BehaviourEvent::Admission(
                request_response::Event::Message {
                    message: request_response::Message::Request { channel, .. },
                    ..
                },
            )) => {
                let _ = swarm
                    .behaviour_mut()
                    .admission
                    .send_response(channel, self.hello.clone());
            }
            SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::Message {
                message,
                ..
            })) => match message {
                request_response::Message::Request { channel, .. } => {
                    let deltas = self.pages.iter().cloned().map(ByteBuf::from).collect();
                    let _ = swarm.behaviour_mut().sync.send_response(
                        channel,
                        SyncResponse {
                            deltas,
                            more: false,
                        },
                    );
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(reply) = self.pending.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            SwarmEvent::Behaviour(BehaviourEvent::Sync(
                request_response::Event::OutboundFailure {
                    request_id, error, ..
                },
            )) => {
                if let Some(reply) = self.pending.remove(&request_id) {
                    let _ = reply.send(Err(error.to_string()));
                }
            }
            _ => {}
        }
    }

    /// Publishes `first` and up to a burst more of the flood's messages.
    fn flood(&mut self, swarm: &mut Swarm<Behaviour>, first: Option<(Kind, Vec<u8>)>) {
        let Some(f) = self.flood.as_mut() else {
            return;
        };
        let Some(mut next) = first else {
            // The generator is done (its deadline).
            if let Some(f) = self.flood.take() {
                f.finish();
            }
            return;
        };
        let topic = IdentTopic::new(DELTA_TOPIC);
        for _ in 0..FLOOD_BURST {
            let (kind, bytes) = next;
            let retry = (kind == Kind::ValidNew).then(|| bytes.clone());
            match swarm
                .behaviour_mut()
                .gossipsub
                .publish(topic.clone(), bytes)
            {
                Ok(_) => f.sent.count(kind),
                Err(e) => {
                    match e {
                        PublishError::AllQueuesFull(_) => f.sent.queue_full += 1,
                        PublishError::Duplicate => f.sent.duplicate += 1,
                        _ => f.sent.refused += 1,
                    }
                    // A valid delta lost would leave a gap the hostile
                    // never fills: try it again shortly.
                    if let Some(bytes) = retry {
                        f.retry = Some((kind, bytes));
                        self.backoff = Some(Instant::now() + FLOOD_BACKOFF);
                        return;
                    }
                }
            }
            match f.messages.try_recv() {
                Ok(m) => next = m,
                Err(_) => return,
            }
        }
    }
}

/// The next message of the flood, if one runs (never ready otherwise).
async fn next_message(flood: &mut Option<Flooding>) -> Option<(Kind, Vec<u8>)> {
    match flood {
        Some(f) if Instant::now() >= f.until => None,
        Some(f) => match f.retry.take() {
            Some(m) => Some(m),
            None => f.messages.recv().await,
        },
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The swarm task: until every handle is dropped.
async fn run(mut swarm: Swarm<Behaviour>, mut rx: mpsc::Receiver<Cmd>, mut actor: Actor) {
    loop {
        if actor.stalled {
            // Reads nothing at all: only commands.
            match rx.recv().await {
                Some(cmd) => actor.command(&mut swarm, cmd),
                None => break,
            }
            continue;
        }
        tokio::select! {
            biased;
            cmd = rx.recv() => match cmd {
                Some(cmd) => actor.command(&mut swarm, cmd),
                None => break,
            },
            event = swarm.select_next_some() => actor.event(&mut swarm, event),
            () = sleep_until(actor.backoff) => actor.backoff = None,
            message = next_message(&mut actor.flood), if actor.backoff.is_none() => {
                actor.flood(&mut swarm, message);
            }
        }
    }
    if let Some(f) = actor.flood.take() {
        f.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node's swarm listening on loopback, subscribed to the delta
    /// topic, counting the delta messages it receives.
    async fn listener() -> (Multiaddr, PeerId, watch::Receiver<usize>) {
        let key = libp2p::identity::Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let mut swarm = build_swarm(key, 16, false).expect("swarm");
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&IdentTopic::new(DELTA_TOPIC))
            .expect("subscribe");
        swarm
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("addr"))
            .expect("listen");
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                break address;
            }
        };
        let (count_tx, count) = watch::channel(0usize);
        tokio::spawn(async move {
            loop {
                let event = swarm.select_next_some().await;
                if let SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(
                    gossipsub::Event::Message { .. },
                )) = event
                {
                    count_tx.send_modify(|n| *n += 1);
                }
            }
        });
        (
            addr.with(libp2p::multiaddr::Protocol::P2p(peer)),
            peer,
            count,
        )
    }

    const WAIT: Duration = Duration::from_secs(20);

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hostile_connects_publishes_and_floods() {
        let (addr, peer, mut received) = listener().await;
        let hostile = Hostile::start(Keypair::generate(), None, &[addr]);
        assert!(hostile.wait_connected(peer, WAIT).await, "not connected");
        assert!(hostile.wait_subscribed(peer, WAIT).await, "not subscribed");
        assert_eq!(hostile.connected(), vec![peer]);
        let delta = signed_delta(hostile.key(), 1, "hello");
        hostile
            .publish(DELTA_TOPIC, delta.encode())
            .await
            .expect("publishing");
        let got = tokio::time::timeout(WAIT, received.wait_for(|n| *n >= 1))
            .await
            .is_ok_and(|r| r.is_ok());
        assert!(got, "the listener got nothing");

        let flood = hostile
            .flood(FloodPlan {
                first_seq: 2,
                ..FloodPlan::default()
            })
            .await;
        let got = tokio::time::timeout(WAIT, received.wait_for(|n| *n >= 100))
            .await
            .is_ok_and(|r| r.is_ok());
        assert!(got, "the flood did not arrive");
        let sent = flood.stop().await;
        assert!(sent.total() >= 99, "{sent:?}");
        for (kind, n) in [
            ("valid_new", sent.valid_new),
            ("bad_signature", sent.bad_signature),
            ("garbage", sent.garbage),
            ("far_ahead", sent.far_ahead),
        ] {
            assert!(n > 0, "no {kind} sent: {sent:?}");
        }
        assert_eq!(sent.next_seq, 2 + sent.valid_new);

        hostile.disconnect(peer).await;
        assert!(hostile.wait_disconnected(peer, WAIT).await);
        assert!(hostile.disconnections() >= 1);
    }

    #[test]
    fn two_deltas_of_one_key_at_one_seq_are_an_equivocation() {
        let key = Keypair::generate();
        let (a, b) = (signed_delta(&key, 7, "a"), signed_delta(&key, 7, "b"));
        assert_eq!((a.origin, a.seq), (b.origin, b.seq));
        assert_ne!(a.encode(), b.encode());
        a.verify().expect("a is valid");
        b.verify().expect("b is valid");
        let far = signed_delta(&key, 1 << 40, "far");
        far.verify().expect("valid at any seq");
    }
}
