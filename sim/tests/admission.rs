//! Seeded simulations of a closed mesh: every node runs the real admission
//! machine next to its core and sync machine (see `hearsay_sim::AdmissionSim`).
//!
//! Each test runs one fixed seed, prints its figures and fails on any broken
//! invariant; `HEARSAY_SIM_SEED=<n>` replaces the fixed seed:
//!
//! ```text
//! cargo test -p hearsay-sim --test admission -- --nocapture
//! HEARSAY_SIM_SEED=42 cargo test -p hearsay-sim --test admission -- --nocapture revoked
//! ```

mod common;

use common::check;
use hearsay_sim::{AdmissionSim, SimConfig, seed_from_env};

fn config(seed: u64, nodes: usize, admission: AdmissionSim) -> SimConfig {
    SimConfig {
        seed: seed_from_env(seed),
        nodes,
        posts: 30,
        admission: Some(admission),
        ..SimConfig::default()
    }
}

/// Outsiders (no certificate, one of another operator, a member's) dial
/// members and write: no member admits one or holds any of their deltas,
/// and the members converge as usual.
#[test]
fn outsiders_never_get_in() {
    let c = config(
        21,
        20,
        AdmissionSim {
            outsiders: 6,
            ..AdmissionSim::default()
        },
    );
    let r = check("outsiders never get in", &c);
    let a = r.admission.expect("admission figures");
    assert!(a.outsider_links > 0, "no outsider ever reached a member");
    assert!(a.rogue_writes > 0, "no outsider wrote");
    // Outsiders without a certificate time out, the others are refused.
    for reason in ["not_admitted", "wrong_operator", "wrong_node"] {
        assert!(
            a.disconnects.get(reason).is_some_and(|n| *n > 0),
            "no disconnect for {reason}: {:?}",
            a.disconnects
        );
    }
}

/// The operator revokes a member in the middle of the writes (it keeps
/// writing and redialling): every honest node learns it within seconds,
/// closes its links and takes none of its later deltas.
#[test]
fn a_revoked_node_is_cut_off_everywhere() {
    let c = config(
        22,
        20,
        AdmissionSim {
            outsiders: 2,
            revoke_at_ms: Some(7_000),
            ..AdmissionSim::default()
        },
    );
    let r = check("a revoked node is cut off everywhere", &c);
    let rev = r
        .admission
        .and_then(|a| a.revocation)
        .expect("revocation figures");
    let everywhere = rev.known_everywhere_after_ms.expect("known everywhere");
    assert!(everywhere <= 2_000, "revocation took {everywhere} ms");
}

/// A member signs two deltas with one seq and pushes each to half of its
/// peers: the proof is found, spreads, and every honest node refuses it;
/// the honest nodes converge on every other origin.
#[test]
fn an_equivocator_is_refused_everywhere() {
    let c = config(
        23,
        20,
        AdmissionSim {
            equivocator: true,
            ..AdmissionSim::default()
        },
    );
    let r = check("an equivocator is refused everywhere", &c);
    let e = r
        .admission
        .and_then(|a| a.equivocation)
        .expect("equivocation figures");
    let everywhere = e.known_everywhere_after_ms.expect("known everywhere");
    assert!(everywhere <= 5_000, "the proof took {everywhere} ms");
}
