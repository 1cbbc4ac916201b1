//! hearsay: a peer-to-peer gossip replication node.
//!
//! This facade re-exports the member crates, so that examples, tests and
//! embedders depend on one name:
//!
//! - [`crdt`]: the IO-less data model (identities, documents, signed deltas,
//!   version vectors, the replica);
//! - [`topology`]: the IO-less mesh logic;
//! - [`node`]: the daemon (sled store, core thread, libp2p network, HTTP API).
//!
//! The `hearsay` command-line tool is the `hearsay-cli` crate.

pub use hearsay_crdt as crdt;
pub use hearsay_node as node;
pub use hearsay_topology as topology;
