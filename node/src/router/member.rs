//! The router's light membership in the mesh: a libp2p swarm that
//! subscribes to statuses only (no store, no deltas, no sync protocol, so
//! nodes neither sync with it nor count it as a neighbour). Verified
//! statuses go to a [`Topology`] (degree 2, no bridge links), whose dials
//! keep the router attached when a node it is linked to dies, and to the
//! host list the HTTP side ranks.
//!
//! In a mesh with an operator, nodes take only peers that present a
//! certificate the operator signed for their key, so the router speaks the
//! admission handshake: on each first connection it sends a [`Hello`] with
//! its certificate (none: it stays pending, and the nodes publish nothing
//! to it and then close the link), and answers every hello with the same.
//! It enforces nothing itself: it ignores the hellos it receives (their
//! revocations and proofs are the nodes' business) and takes in only
//! statuses whose signature it verifies. Its gossipsub scores peers as the
//! nodes' does ([`crate::net::gossip_scoring`]), so it behaves as a mesh member.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hearsay_admission::Certificate;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify, identity, noise, ping, tcp, yamux};
use serde_bytes::ByteBuf;
use tokio::sync::watch;
use tokio::time::Instant;

use super::RouterMetrics;
use super::rank::Host;
use crate::net::{ADMISSION_PROTOCOL, Hello, NetError, hello_codec, scored_gossipsub};
use crate::status::{self, STATUS_TOPIC};
use hearsay_topology::{Command, Event, Topology};

/// How often the router redials its join addresses while it has no link.
const REJOIN_EVERY: Duration = Duration::from_secs(2);
/// Most addresses kept per node (from its statuses).
const MAX_ADDRS: usize = status::MAX_LISTEN_ADDRS;
/// Time for a node to answer the router's hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Hello streams open at once per connection.
const HELLO_STREAMS: usize = 8;

#[allow(missing_debug_implementations)] // libp2p behaviours are not Debug
#[derive(NetworkBehaviour)]
pub struct LightBehaviour {
    pub gossipsub: gossipsub::Behaviour,
    /// The admission handshake (see the module docs).
    pub admission: request_response::cbor::Behaviour<Hello, Hello>,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
}

/// What the HTTP side reads: the hosts known, as of the last change.
#[derive(Clone, Debug, Default)]
pub struct Hosts {
    pub hosts: Arc<Vec<Host>>,
    pub peer_id: Option<PeerId>,
    pub listen_addrs: Vec<Multiaddr>,
    /// Links to nodes open now.
    pub links: usize,
}

pub fn build_swarm(key: identity::Keypair) -> Result<Swarm<LightBehaviour>, NetError> {
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| NetError::Build(e.to_string()))?
        .with_behaviour(|key| {
            let gossipsub = scored_gossipsub()?;
            let admission = request_response::Behaviour::with_codec(
                hello_codec(),
                [(ADMISSION_PROTOCOL, ProtocolSupport::Full)],
                request_response::Config::default()
                    .with_request_timeout(HELLO_TIMEOUT)
                    .with_max_concurrent_streams(HELLO_STREAMS),
            );
            Ok(LightBehaviour {
                gossipsub,
                admission,
                identify: identify::Behaviour::new(
                    identify::Config::new("/hearsay/1".into(), key.public()).with_agent_version(
                        format!("hearsay-router/{}", env!("CARGO_PKG_VERSION")),
                    ),
                ),
                ping: ping::Behaviour::new(ping::Config::new()),
            })
        })
        .map_err(|e| NetError::Build(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    Ok(swarm)
}

/// Runs the membership until `shutdown` turns true; `certificate` is the
/// router's, presented to every node it links to.
pub async fn run(
    mut swarm: Swarm<LightBehaviour>,
    certificate: Option<Certificate>,
    listen: Vec<Multiaddr>,
    join: Vec<Multiaddr>,
    hosts_tx: watch::Sender<Hosts>,
    metrics: RouterMetrics,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), NetError> {
    for addr in &listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| NetError::Listen {
                addr: addr.clone(),
                why: e.to_string(),
            })?;
    }
    let topic = IdentTopic::new(STATUS_TOPIC);
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&topic)
        .map_err(|e| NetError::Build(e.to_string()))?;
    let me = *swarm.local_peer_id();
    let config = hearsay_topology::Config {
        degree: 2,
        max_bridge_links: 0,
        ..hearsay_topology::Config::default()
    };
    let mut m = Member {
        swarm,
        topology: Topology::new(me, None, config, rand::random()),
        epoch: Instant::now(),
        timer: Box::pin(tokio::time::sleep(Duration::from_secs(3600))),
        hosts: BTreeMap::new(),
        addrs: BTreeMap::new(),
        listen_addrs: Vec::new(),
        hosts_tx,
        metrics,
        hello: Hello {
            certificate: certificate.map(|c| ByteBuf::from(c.encode())),
            revocations: Vec::new(),
            proofs: Vec::new(),
        },
    };
    for addr in &join {
        let _ = m.swarm.dial(addr.clone());
    }
    let mut rejoin = tokio::time::interval(REJOIN_EVERY);
    let mut publish = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            event = m.swarm.select_next_some() => m.on_swarm_event(event, &topic),
            () = &mut m.timer => {
                m.timer.as_mut().reset(Instant::now() + Duration::from_secs(3600));
                m.feed(Event::Tick);
            }
            _ = rejoin.tick() => {
                if m.swarm.connected_peers().next().is_none() {
                    for addr in &join {
                        let _ = m.swarm.dial(addr.clone());
                    }
                }
            }
            _ = publish.tick() => m.publish(),
        }
    }
    Ok(())
}

struct Member {
    swarm: Swarm<LightBehaviour>,
    topology: Topology<PeerId>,
    epoch: Instant,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    /// Latest status of each node in the topology's table.
    hosts: BTreeMap<PeerId, Host>,
    /// Listen addresses from statuses, for the topology's dials.
    addrs: BTreeMap<PeerId, Vec<Multiaddr>>,
    listen_addrs: Vec<Multiaddr>,
    hosts_tx: watch::Sender<Hosts>,
    metrics: RouterMetrics,
    /// What the router presents on connect, and answers hellos with.
    hello: Hello,
}

impl Member {
    fn feed(&mut self, event: Event<PeerId>) {
        let now = self.epoch.elapsed().as_millis() as u64;
        for command in self.topology.handle(now, event) {
            match command {
                Command::Dial { peer, .. } => {
                    let opts = DialOpts::peer_id(peer)
                        .condition(PeerCondition::Disconnected)
                        .addresses(self.addrs.get(&peer).cloned().unwrap_or_default())
                        .build();
                    if self.swarm.dial(opts).is_err() {
                        // Reported by the next tick's dial timeout.
                        tracing::debug!(%peer, "router dial refused");
                    }
                }
                Command::ArmTimer { at } => {
                    let when = self.epoch + Duration::from_millis(at);
                    self.timer.as_mut().reset(when);
                }
                Command::StateChanged { peer, state } => {
                    tracing::info!(%peer, ?state, "host state");
                }
            }
        }
        let table = self.topology.table();
        self.hosts.retain(|p, _| table.get(p).is_some());
        self.addrs.retain(|p, _| table.get(p).is_some());
    }

    fn publish(&mut self) {
        let hosts = Arc::new(self.hosts.values().cloned().collect::<Vec<_>>());
        let links = self.swarm.connected_peers().count();
        self.metrics.links.set(links as i64);
        let peer_id = Some(*self.swarm.local_peer_id());
        let listen_addrs = self.listen_addrs.clone();
        self.hosts_tx.send_modify(|h| {
            *h = Hosts {
                hosts,
                peer_id,
                listen_addrs,
                links,
            }
        });
    }

    /// Answers a node's hello with the router's own; the content of the
    /// hellos received is not used.
    fn on_hello(&mut self, event: request_response::Event<Hello, Hello>) {
        match event {
            request_response::Event::Message {
                message: request_response::Message::Request { channel, .. },
                ..
            } => {
                let hello = self.hello.clone();
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .admission
                    .send_response(channel, hello);
            }
            request_response::Event::OutboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "router hello failed");
            }
            _ => {}
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<LightBehaviourEvent>, topic: &IdentTopic) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                let me = *self.swarm.local_peer_id();
                self.listen_addrs
                    .push(address.with(libp2p::multiaddr::Protocol::P2p(me)));
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                ..
            } if num_established.get() == 1 => {
                tracing::info!(peer = %peer_id, "router linked");
                let hello = self.hello.clone();
                self.swarm
                    .behaviour_mut()
                    .admission
                    .send_request(&peer_id, hello);
                self.feed(Event::Connected { peer: peer_id });
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                tracing::info!(peer = %peer_id, "router link closed");
                self.feed(Event::Disconnected { peer: peer_id });
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                ..
            } => self.feed(Event::DialFailed { peer }),
            SwarmEvent::Behaviour(LightBehaviourEvent::Admission(event)) => self.on_hello(event),
            SwarmEvent::Behaviour(LightBehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) if message.topic == topic.hash() => {
                let verdict = status::verify(message.source.as_ref(), &message.data);
                let stale = |v: &status::Verified| {
                    self.hosts
                        .get(&v.peer)
                        .is_some_and(|h| h.status.body.timestamp_ms >= v.body.timestamp_ms)
                };
                let acceptance = match &verdict {
                    Ok(v) if stale(v) => MessageAcceptance::Ignore,
                    Ok(_) => MessageAcceptance::Accept,
                    Err(_) => MessageAcceptance::Reject,
                };
                self.swarm
                    .behaviour_mut()
                    .gossipsub
                    .report_message_validation_result(&message_id, &propagation_source, acceptance);
                match verdict {
                    Err(e) => {
                        tracing::debug!(from = %propagation_source, error = %e, "status refused");
                        self.metrics
                            .statuses_rejected
                            .get_or_create(&crate::metrics::ReasonLabels { reason: e.reason() })
                            .inc();
                    }
                    Ok(v) if matches!(acceptance, MessageAcceptance::Accept) => {
                        self.metrics.statuses_received.inc();
                        let peer = v.peer;
                        let mut addrs = v.listen_addrs.clone();
                        addrs.truncate(MAX_ADDRS);
                        self.addrs.insert(peer, addrs);
                        let topo = v.status.clone();
                        self.hosts.insert(
                            peer,
                            Host {
                                status: Arc::new(v),
                                received: std::time::Instant::now(),
                            },
                        );
                        self.feed(Event::Status {
                            from: propagation_source,
                            status: topo,
                        });
                    }
                    Ok(_) => {}
                }
            }
            _ => {}
        }
    }
}
