//! Who holds a user name: the [`NameRegistry`] trait and today's
//! implementation, [`MeshRegistry`] (first come, on this mesh).
//!
//! A name is bound to one ed25519 public key. The binding decides whose
//! signatures count for the name: signed posts must be by that key, and the
//! name's follows and unfollows must be signed by it.
//!
//! The trait is shaped for a registry with strong consistency (a Raft group
//! of voter nodes, see DESIGN.md) to slot in later: its calls are async, and
//! a claim may end [`Claim::Unknown`] (a timeout before commit), which is
//! neither success nor failure.
//!
//! [`MeshRegistry`] keeps the binding in the CRDT itself: the profile
//! document's `public_key`. A claim succeeds when this node's copy of the
//! profile holds no key yet (or holds the same key) and is refused when it
//! holds another. That is first come *on this node*: during a partition, two
//! nodes can each accept the same new name for different keys. When the
//! partition heals, the profile documents merge and keep one of the two keys
//! (automerge's deterministic choice between concurrent writes, the same on
//! every node); the other claimant loses the name, and their signed posts
//! stay signed by a key that is no longer the name's. A consensus registry
//! behind the same trait removes that window.

use futures::future::BoxFuture;
use hearsay_crdt::{NodeId, UserName, VersionVector};
use tokio::sync::{mpsc, oneshot};

use crate::core::{Ack, ClientCommand, CoreError, Reply, Write, Written};
use crate::metrics::Metrics;

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The name is bound to the key (just now, or it already was). `token`,
    /// when the binding was written to the mesh, covers that write: read
    /// with `?after=` it on any node to see it.
    Granted { token: Option<VersionVector> },
    /// The name is bound to another key.
    Taken { holder: NodeId },
    /// The registry could not learn the outcome in time: the claim may still
    /// be granted or refused. Ask again (claims are idempotent).
    Unknown { why: String },
    /// The registry could not be reached (no quorum): nothing was written.
    Unavailable { why: String },
}

/// The answer to a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The name is bound to this key.
    Bound(NodeId),
    /// Nobody holds the name.
    Free,
    /// The registry cannot answer now.
    Unknown { why: String },
}

/// Why a registry call failed (not a refusal: [`Claim::Taken`] is an answer).
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The node's core refused or failed.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// The node is overloaded: retry shortly.
    #[error("node overloaded, retry shortly")]
    Overloaded,
    /// The node is stopping.
    #[error("node is shutting down")]
    ShuttingDown,
}

/// Binds user names to public keys.
pub trait NameRegistry: Send + Sync + std::fmt::Debug {
    /// Claims `name` for `key`. Idempotent: claiming a name one already
    /// holds grants it again. The caller has checked that the claimant holds
    /// `key` (a signature over the registration).
    fn claim<'a>(
        &'a self,
        name: &'a UserName,
        key: NodeId,
    ) -> BoxFuture<'a, Result<Claim, RegistryError>>;

    /// The key bound to `name`, as far as this node knows.
    fn lookup<'a>(&'a self, name: &'a UserName) -> BoxFuture<'a, Result<Lookup, RegistryError>>;

    /// How names are decided here, for `/api/v0/stats`: `first-come` or
    /// `raft`.
    fn kind(&self) -> &'static str {
        "first-come"
    }
}

/// First come on this mesh: the binding is the profile document's
/// `public_key`, claimed through the core (so that the check and the write
/// are one step on the core thread). See the module docs for its weakness.
#[derive(Debug, Clone)]
pub struct MeshRegistry {
    core: mpsc::Sender<ClientCommand>,
    metrics: Metrics,
}

impl MeshRegistry {
    pub fn new(core: mpsc::Sender<ClientCommand>, metrics: Metrics) -> Self {
        MeshRegistry { core, metrics }
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(Reply<T>) -> ClientCommand,
    ) -> Result<T, RegistryError> {
        let (reply, rx) = oneshot::channel();
        self.core.try_send(make(reply)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                self.metrics.overload_rejections.inc();
                RegistryError::Overloaded
            }
            mpsc::error::TrySendError::Closed(_) => RegistryError::ShuttingDown,
        })?;
        Ok(rx.await.map_err(|_| RegistryError::ShuttingDown)??)
    }
}

impl NameRegistry for MeshRegistry {
    fn claim<'a>(
        &'a self,
        name: &'a UserName,
        key: NodeId,
    ) -> BoxFuture<'a, Result<Claim, RegistryError>> {
        Box::pin(async move {
            let Ack { written, token } = self
                .ask(|reply| ClientCommand::Write {
                    op: Write::ClaimName {
                        user: name.clone(),
                        key,
                    },
                    reply,
                })
                .await?;
            let Written::Profile(profile) = written else {
                return Err(
                    CoreError::Internal("a claim answered without a profile".into()).into(),
                );
            };
            Ok(match profile.public_key {
                Some(holder) if holder != key => Claim::Taken { holder },
                Some(_) => Claim::Granted { token: Some(token) },
                None => Claim::Unknown {
                    why: "the profile holds no key after the claim".into(),
                },
            })
        })
    }

    fn lookup<'a>(&'a self, name: &'a UserName) -> BoxFuture<'a, Result<Lookup, RegistryError>> {
        Box::pin(async move {
            let profile = self
                .ask(|reply| ClientCommand::Profile {
                    user: name.clone(),
                    reply,
                })
                .await?;
            Ok(match profile.public_key {
                Some(key) => Lookup::Bound(key),
                None => Lookup::Free,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use hearsay_crdt::Keypair;
    use tokio::sync::watch;

    use super::*;
    use crate::core::{CLIENT_QUEUE, CoreConfig, CoreState, PEER_QUEUE, Queues, run_core};
    use crate::store::MemoryStore;

    const T0: u64 = 1_700_000_000_000;

    fn name(s: &str) -> UserName {
        UserName::new(s).unwrap()
    }

    fn core(secret: u8) -> CoreState<MemoryStore> {
        let config = CoreConfig {
            cache_docs: 64,
            checkpoint_interval_ms: 60_000,
            checkpoint_deltas: crate::core::CHECKPOINT_DELTAS,
        };
        let metrics = Metrics::new("test", None);
        let key = Keypair::from_secret([secret; 32]);
        CoreState::open(MemoryStore::default(), key, config, metrics, T0).unwrap()
    }

    /// A registry over a core thread; drop the registry to stop the thread.
    fn registry() -> (MeshRegistry, std::thread::JoinHandle<()>) {
        let (client_tx, clients) = mpsc::channel(CLIENT_QUEUE);
        let (_peer_tx, peers) = mpsc::channel(PEER_QUEUE);
        // Nobody listens to the network events or the status here.
        let (events, _) = mpsc::channel(1024);
        let state = core(1);
        let (status, _) = watch::channel(state.status());
        let thread = std::thread::spawn(move || {
            run_core(state, Queues { clients, peers }, events, status, || T0)
        });
        let registry = MeshRegistry::new(client_tx, Metrics::new("test", None));
        (registry, thread)
    }

    #[tokio::test]
    async fn first_come_keeps_the_name_and_claims_are_idempotent() {
        let (registry, thread) = registry();
        let (ann, bob) = (name("ann"), name("bob"));
        let (k1, k2) = (Keypair::generate().id(), Keypair::generate().id());
        assert_eq!(registry.lookup(&ann).await.unwrap(), Lookup::Free);

        let first = registry.claim(&ann, k1).await.unwrap();
        let Claim::Granted { token: Some(token) } = first else {
            panic!("a free name is granted: {first:?}");
        };
        assert_eq!(token.sum(), 1, "one write: the profile's key");
        assert_eq!(registry.lookup(&ann).await.unwrap(), Lookup::Bound(k1));
        // Again by the same key: granted, nothing written.
        let again = registry.claim(&ann, k1).await.unwrap();
        assert_eq!(
            again,
            Claim::Granted {
                token: Some(token.clone())
            }
        );
        // By another key: taken, and the binding stays.
        assert_eq!(
            registry.claim(&ann, k2).await.unwrap(),
            Claim::Taken { holder: k1 }
        );
        assert_eq!(registry.lookup(&ann).await.unwrap(), Lookup::Bound(k1));
        // Another name is independent.
        assert!(matches!(
            registry.claim(&bob, k2).await.unwrap(),
            Claim::Granted { .. }
        ));
        drop(registry);
        thread.join().unwrap();
    }

    /// The weakness the README states: two nodes that cannot talk both grant
    /// the same new name; once their deltas meet, both keep the same one key
    /// and the other claimant has lost the name.
    #[test]
    fn a_name_claimed_on_both_sides_of_a_partition_ends_with_one_key() {
        let (mut a, mut c) = (core(1), core(2));
        let ann = name("ann");
        let (k1, k2) = (Keypair::generate().id(), Keypair::generate().id());
        let claim = |core: &mut CoreState<MemoryStore>, key| {
            core.write(
                Write::ClaimName {
                    user: ann.clone(),
                    key,
                },
                T0,
            )
            .unwrap();
            core.commit().unwrap().publish
        };
        let from_a = claim(&mut a, k1);
        let from_c = claim(&mut c, k2);
        assert_eq!(a.profile(&ann).unwrap().public_key, Some(k1));
        assert_eq!(c.profile(&ann).unwrap().public_key, Some(k2));
        a.receive(vec![(from_c, crate::metrics::Source::Gossip)], T0);
        c.receive(vec![(from_a, crate::metrics::Source::Gossip)], T0);
        let (at_a, at_c) = (a.profile(&ann).unwrap(), c.profile(&ann).unwrap());
        assert_eq!(at_a, at_c, "both nodes agree");
        let winner = at_a.public_key.expect("one key kept");
        assert!(winner == k1 || winner == k2);
        // From now on the loser's claim is refused everywhere.
        let loser = if winner == k1 { k2 } else { k1 };
        for core in [&mut a, &mut c] {
            let profile = core
                .write(
                    Write::ClaimName {
                        user: ann.clone(),
                        key: loser,
                    },
                    T0 + 1,
                )
                .unwrap();
            let Written::Profile(p) = profile else {
                panic!("a claim answers with the profile")
            };
            assert_eq!(p.public_key, Some(winner));
        }
    }
}
