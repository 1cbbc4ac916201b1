//! The name registry inside a node: [`hearsay_registry::Registry`] wired to
//! the network actor's registry protocol, and [`RaftNames`], the
//! [`NameRegistry`] that user registration uses when the mesh has voters.
//!
//! The registry's messages travel on their own libp2p request-response
//! protocol (`/hearsay/registry/1`, see [`crate::net`]), with their own
//! streams and timeouts, so deltas and anti-entropy pages queued on other
//! streams do not hold back the leader's heartbeats.
//!
//! Names are namespaced in the registry: a user name `ann` is held as
//! `@ann`, a post slug as `/p/<slug>`; names claimed through
//! `POST /api/v0/names` may not start with `@` or `/`.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use hearsay_crdt::{NodeId, UserName};
use hearsay_registry::{ClaimAnswer, ReadAnswer, Registry, Transport};
use libp2p::PeerId;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

use crate::names::{Claim, Lookup, MeshRegistry, NameRegistry, RegistryError};
use crate::net::{NetStatus, RegistryInbound, RegistryOutbound};

/// Registry requests from peers served at once; more wait their turn in
/// the network actor's queue (and beyond it, are refused there).
const SERVE_AT_ONCE: usize = 64;
/// Queue of registry messages between the service and the network actor.
pub const REGISTRY_QUEUE: usize = 256;

/// The registry key of a user name.
pub fn user_key(name: &UserName) -> String {
    format!("@{name}")
}

/// The registry key of a post slug (`ann/hello-world` or `x7f3k2`).
pub fn slug_key(slug: &str) -> String {
    format!("/p/{slug}")
}

/// Whether a name may be claimed directly (`POST /api/v0/names`): user
/// names and slugs are claimed by the endpoints that check their owners.
pub fn is_reserved(name: &str) -> bool {
    name.starts_with('@') || name.starts_with('/')
}

/// The registry's transport: messages go to the network actor, which sends
/// them on the registry protocol.
#[derive(Debug)]
pub struct Link {
    outbound: mpsc::Sender<RegistryOutbound>,
    net_status: watch::Receiver<NetStatus>,
}

impl Link {
    pub fn new(
        outbound: mpsc::Sender<RegistryOutbound>,
        net_status: watch::Receiver<NetStatus>,
    ) -> Self {
        Link {
            outbound,
            net_status,
        }
    }
}

impl Transport for Link {
    fn call(
        &self,
        peer: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        let outbound = self.outbound.clone();
        let peer = peer.parse::<PeerId>().map_err(|e| format!("{peer}: {e}"));
        Box::pin(async move {
            let peer = peer?;
            let (reply, answer) = oneshot::channel();
            let send = outbound.send(RegistryOutbound { peer, body, reply });
            tokio::time::timeout(timeout, async {
                send.await
                    .map_err(|_| "the network is stopping".to_string())?;
                answer
                    .await
                    .map_err(|_| "the network dropped the request".to_string())?
            })
            .await
            .map_err(|_| format!("no answer from {peer} in {timeout:?}"))?
        })
    }

    fn peers(&self) -> Vec<String> {
        let status = self.net_status.borrow();
        status
            .known
            .iter()
            .filter(|p| p.connected)
            .map(|p| p.peer_id.to_string())
            .collect()
    }
}

/// Serves the registry requests peers send, until the network actor drops
/// its end of the queue.
pub async fn serve(registry: Registry, mut inbound: mpsc::Receiver<RegistryInbound>) {
    let slots = Arc::new(Semaphore::new(SERVE_AT_ONCE));
    while let Some(request) = inbound.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let answer = registry
                .handle(&request.peer.to_string(), &request.body)
                .await;
            let _ = request.reply.send(answer);
            drop(slot);
        });
    }
}

/// Until this node knows the registry's voters, asks its peers for them
/// every few seconds (a node set up without `registry_voters` on a mesh
/// that has them, or before `hearsay registry init`).
pub async fn discover_voters(registry: Registry, mut stop: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            // Any change is the stop (it only ever turns true).
            _ = stop.changed() => return,
            _ = every.tick() => {
                if registry.voters().is_empty() && !registry.discover_voters().await.is_empty() {
                    tracing::info!(voters = ?registry.voters(), "learned the registry's voters");
                }
            }
        }
    }
}

/// User names through the registry (first come, as [`MeshRegistry`], while
/// this node knows no voters): a name is granted only once the voters have
/// committed it, then its key is written to the profile
/// document (through [`MeshRegistry`]) so that every node checks the user's
/// signatures against it.
#[derive(Debug, Clone)]
pub struct RaftNames {
    registry: Registry,
    profiles: MeshRegistry,
}

impl RaftNames {
    pub fn new(registry: Registry, profiles: MeshRegistry) -> Self {
        RaftNames { registry, profiles }
    }
}

impl NameRegistry for RaftNames {
    fn claim<'a>(
        &'a self,
        name: &'a UserName,
        key: NodeId,
    ) -> BoxFuture<'a, Result<Claim, RegistryError>> {
        Box::pin(async move {
            if self.registry.voters().is_empty() {
                return self.profiles.claim(name, key).await;
            }
            match self.registry.claim(&user_key(name), &key.to_string()).await {
                ClaimAnswer::Claimed { .. } => self.profiles.claim(name, key).await,
                ClaimAnswer::Taken { owner } => match owner.parse::<NodeId>() {
                    Ok(holder) => Ok(Claim::Taken { holder }),
                    Err(_) => Ok(Claim::Unknown {
                        why: format!("the registry holds a malformed owner {owner:?}"),
                    }),
                },
                ClaimAnswer::Unknown { why } => Ok(Claim::Unknown { why }),
                ClaimAnswer::Unavailable { why, .. } => Ok(Claim::Unavailable { why }),
                ClaimAnswer::Released(outcome) => Ok(Claim::Unknown {
                    why: format!("a claim answered {outcome:?}"),
                }),
            }
        })
    }

    fn lookup<'a>(&'a self, name: &'a UserName) -> BoxFuture<'a, Result<Lookup, RegistryError>> {
        Box::pin(async move {
            if self.registry.voters().is_empty() {
                return self.profiles.lookup(name).await;
            }
            Ok(match self.registry.read(&user_key(name)).await {
                ReadAnswer::Owner { owner: None, .. } => Lookup::Free,
                ReadAnswer::Owner {
                    owner: Some(owner), ..
                } => match owner.parse::<NodeId>() {
                    Ok(key) => Lookup::Bound(key),
                    Err(_) => Lookup::Unknown {
                        why: format!("the registry holds a malformed owner {owner:?}"),
                    },
                },
                ReadAnswer::Unavailable { why, .. } => Lookup::Unknown { why },
            })
        })
    }

    fn kind(&self) -> &'static str {
        if self.registry.voters().is_empty() {
            "first-come (no registry voters known)"
        } else {
            "raft"
        }
    }
}
