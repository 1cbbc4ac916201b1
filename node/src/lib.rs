//! hearsay-node: the daemon library.
//!
//! A node is three parts joined by bounded channels:
//!
//! - [`core`]: one thread owning the [`hearsay_crdt::Replica`] and the
//!   [`store`] (sled). Every automerge and disk call happens there, off the
//!   async reactor; writes are made durable in groups (one flush per batch).
//! - [`net`]: one task owning the libp2p swarm: gossipsub push, request-response
//!   anti-entropy, identify, ping, kad discovery, join redials.
//! - [`api`]: the axum HTTP API, which talks to the core by command
//!   ([`feeds`]: its Atom feeds; [`mesh`]: the node and the peers it knows;
//!   [`web`]: the page at `/`, live timeline and mesh, embedded in the
//!   binary).
//!
//! Users: [`names`] binds user names to keys (the [`names::NameRegistry`]
//! trait), and [`signed`] holds the rules for writes signed by user keys.
//!
//! [`node::run`] wires them together from validated [`config::Settings`].
//!
//! Around a node: [`client`] is the typed client of its HTTP API, and
//! [`launch`] starts and stops `hearsay node` processes (tests, benchmark,
//! demo).

pub mod api;
pub mod client;
pub mod config;
pub mod core;
pub mod events;
pub mod feeds;
pub mod hostile;
pub mod launch;
pub mod mesh;
pub mod metrics;
pub mod names;
pub mod net;
pub mod node;
pub mod proxy;
pub mod registry;
pub mod router;
pub mod signed;
pub mod status;
pub mod store;
pub mod tokens;
pub mod web;

pub use config::{Config, Settings};
pub use node::{init, run, shutdown_signal};

/// The property-test settings of the fuzz harnesses: `HEARSAY_FUZZ_CASES`
/// cases (64 unless set; run longer with 100000), no regression files.
#[cfg(test)]
pub(crate) fn fuzz_config() -> proptest::test_runner::Config {
    let cases = std::env::var("HEARSAY_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    proptest::test_runner::Config {
        failure_persistence: None,
        ..proptest::test_runner::Config::with_cases(cases)
    }
}
