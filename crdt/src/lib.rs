//! hearsay-crdt: the IO-less data model of hearsay.
//!
//! Everything the node, the network and the API agree on lives here, free of
//! any runtime, socket or disk:
//!
//! - [`Keypair`] and [`NodeId`]: ed25519 identities and their key files;
//! - [`docs`]: the automerge documents (post, profile) with typed
//!   operations and reads;
//! - [`lists`]: the list of all posts and each author's, derived from the
//!   post documents;
//! - [`signing`]: what users sign (posts, name registrations, follows,
//!   edits), each message domain-separated;
//! - [`Delta`]: one signed change of one document, the unit of replication;
//! - [`Equivocation`]: proof that an origin signed two deltas with one seq;
//! - [`VersionVector`]: the anti-entropy digest and resume token;
//! - [`Replica`]: documents plus the rules that make replicas converge.
//!
//! ```
//! use hearsay_crdt::{Keypair, MemoryDocs, NewPost, Replica, UserName};
//!
//! let mut a = Replica::new(Keypair::generate(), MemoryDocs::default()).unwrap();
//! let mut b = Replica::new(Keypair::generate(), MemoryDocs::default()).unwrap();
//! let new = NewPost { author: UserName::new("ann").unwrap(), body: "hello".into(), reply_to: None };
//! let (post, delta) = a.create_post(&new, None, 1_700_000_000_000).unwrap();
//!
//! // Deltas travel as bytes; the receiver verifies, orders and applies them.
//! let wire: Vec<u8> = delta.encode();
//! let outcome = b.receive([hearsay_crdt::Delta::decode(&wire).unwrap()]);
//! assert_eq!(outcome.accepted.len(), 1);
//! assert_eq!(b.post(post.id).unwrap().unwrap().body, "hello");
//! assert_eq!(a.version_vector(), b.version_vector());
//! ```

pub mod delta;
pub mod docs;
pub mod equivocation;
pub mod error;
pub mod event;
pub mod identity;
pub mod ids;
pub mod lists;
pub mod post_cache;
pub mod replica;
pub mod signing;
pub mod store;
pub mod verdict;
pub mod vv;

pub use delta::{Delta, MAX_DELTA_BYTES};
pub use docs::{MAX_BODY_CHARS, NewPost, Post, Profile};
pub use equivocation::Equivocation;
pub use error::{Error, ErrorKind, Result};
pub use event::Change;
pub use identity::Keypair;
pub use ids::{BUCKET_MS, DocId, NodeId, PostId, UserName};
pub use lists::PostList;
pub use replica::{ReceiveOutcome, Replica, ReplicaConfig, Signatures};
pub use signing::{Action, PostSignature};
pub use store::{DocStore, MemoryDocs};
pub use verdict::Verdict;
pub use vv::VersionVector;
