//! The topology machine in the seeded simulation: 50 and 200 nodes that
//! start as a tree (each joins one earlier node, discovery off), lose 10 %
//! of their nodes for good and take 10 % new ones while clients write. With
//! the topology machine the live mesh stays connected and every write a
//! survivor acknowledged reaches every survivor; without it (same seed) the
//! tree splits and writes are missing.
//!
//! ```text
//! cargo test -p hearsay-sim --test topology -- --nocapture
//! HEARSAY_SIM_SEED=7 cargo test -p hearsay-sim --test topology -- --nocapture
//! cargo test --release -p hearsay-sim --test topology -- --ignored --nocapture
//! ```

use hearsay_sim::{Report, SimConfig, run, seed_from_env};

/// A tree that loses and gains nodes: the mesh survives only if something
/// adds links beyond the joins.
fn scenario(seed: u64, nodes: usize, topology: bool) -> SimConfig {
    SimConfig {
        seed: seed_from_env(seed),
        nodes,
        posts: 40,
        warmup_ms: 6_000,
        write_window_ms: 15_000,
        quiet_ms: 15_000,
        join_peers: 1,
        join_earlier: true,
        discovered_per_bootstrap: 0,
        sync: hearsay_sync::Config {
            target_peers: 0,
            ..hearsay_sync::Config::default()
        },
        failures: nodes / 10,
        joins: nodes / 10,
        readers: 0,
        topology: topology.then(hearsay_topology::Config::default),
        ..SimConfig::default()
    }
}

fn simulate(name: &str, config: &SimConfig) -> Report {
    let started = std::time::Instant::now();
    let report = run(config);
    println!(
        "== {name} ({:.1} s of CPU time)\n{report}",
        started.elapsed().as_secs_f64()
    );
    report
}

/// The mesh stayed connected once it had had time to repair, and every
/// write a survivor got reached every survivor.
fn assert_healed(r: &Report, config: &SimConfig) {
    r.assert_ok();
    let mesh = r.mesh.as_ref().expect("a topology run reports its mesh");
    assert!(mesh.connected_at_end, "the live mesh is split at the end");
    // A failure is noticed after `down_after_ms` (6 s) of silence, and the
    // replacement link takes a dial; no split may outlast that.
    let t = config.topology.as_ref().expect("topology on");
    let bound = t.timeouts.down_after_ms + 4_000;
    assert!(
        mesh.longest_disconnected_ms <= bound,
        "a split lasted {} ms (bound {bound} ms)",
        mesh.longest_disconnected_ms
    );
    assert!(
        mesh.min_degree_end >= 2,
        "a live node ended with {} links",
        mesh.min_degree_end
    );
    assert_eq!(r.dead_nodes, config.failures);
    assert_eq!(r.joined_late, config.joins);
    assert!(
        r.writes_acked >= 30,
        "{} writes acknowledged",
        r.writes_acked
    );
}

#[test]
fn fifty_nodes_with_failures_and_joins_stay_connected() {
    let config = scenario(11, 50, true);
    let r = simulate("50 nodes, topology", &config);
    assert_healed(&r, &config);
}

#[test]
fn two_hundred_nodes_with_failures_and_joins_stay_connected() {
    let config = scenario(12, 200, true);
    let r = simulate("200 nodes, topology", &config);
    assert_healed(&r, &config);
}

#[test]
fn without_the_topology_machine_the_same_tree_splits() {
    let with = scenario(11, 50, true);
    let without = scenario(11, 50, false);
    let r = simulate("50 nodes, no topology", &without);
    let mesh = r.mesh.as_ref().expect("runs with failures sample the mesh");
    assert!(
        !mesh.connected_at_end && mesh.disconnected_samples > 0,
        "the tree should have split without the topology machine: {mesh:?}"
    );
    assert!(
        !r.violations.is_empty(),
        "writes should have been missing on one side of the split"
    );
    // The same scenario with the machine passes (the first test), so the
    // difference is the machine's links.
    assert_eq!(with.failures, without.failures);
}

#[test]
fn a_topology_run_is_deterministic() {
    let config = SimConfig {
        posts: 10,
        ..scenario(13, 30, true)
    };
    let (a, b) = (run(&config), run(&config));
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.mesh, b.mesh);
}
