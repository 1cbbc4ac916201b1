//! What every simulation test does with its run.

use hearsay_sim::{Report, SimConfig, run};

/// Runs `config`, prints its report and the CPU time it took, and fails on
/// any broken invariant or when no write was acknowledged.
pub fn check(name: &str, config: &SimConfig) -> Report {
    let started = std::time::Instant::now();
    let report = run(config);
    println!(
        "== {name} ({:.1} s of CPU time)\n{report}",
        started.elapsed().as_secs_f64()
    );
    report.assert_ok();
    assert!(report.writes_acked > 0, "no write was acknowledged");
    report
}
