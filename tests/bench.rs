//! `hearsay bench replication` end to end: a smoke run (three real nodes in
//! a ring with delayed links, a few seconds of writes). Behaviour only: the
//! report's shape, and every write seen at every node; no timing asserted.

mod common;

use std::process::{Command, Stdio};

use common::{binary, clear_node_env};
use serde_json::Value;

#[test]
fn a_short_replication_bench_sees_every_write_at_every_node() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plot = dir.path().join("delay.svg");
    let mut cmd = Command::new(binary());
    clear_node_env(&mut cmd);
    let out = cmd
        .args(["bench", "replication", "--nodes", "3", "--topology", "ring"])
        .args(["--link-delay", "5", "--rate", "20", "--duration", "2"])
        .args(["--writers", "all", "--json", "--plot"])
        .arg(&plot)
        .stdin(Stdio::null())
        .output()
        .expect("running hearsay bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not one JSON object ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(report["nodes"], 3, "{report}");
    assert_eq!(report["topology"], "ring");
    let writes = report["writes"].as_u64().expect("writes");
    assert_eq!(
        writes + report["errors"].as_u64().expect("errors"),
        40,
        "{report}"
    );
    assert!(writes > 0);
    assert_eq!(report["missing"], 0, "{report}");
    assert_eq!(report["delay_ms"]["n"].as_u64(), Some(3 * writes));
    let per_node = report["per_node"].as_array().expect("per_node");
    assert_eq!(per_node.len(), 3);
    for node in per_node {
        assert_eq!(node["delay_ms"]["n"].as_u64(), Some(writes), "{node}");
        assert!(node["delay_ms"]["p50"].as_f64().is_some_and(|d| d >= 0.0));
    }
    for key in ["converge_ms", "achieved_rate"] {
        assert!(report[key].is_number(), "{key} in {report}");
    }
    let svg = std::fs::read_to_string(&plot).expect("the --plot file");
    for i in 0..3 {
        assert!(
            svg.contains(&format!("node {i}: p50")),
            "no curve of node {i}"
        );
    }
}

#[test]
fn a_short_ingest_bench_counts_acknowledged_writes_and_reads() {
    let report = bench_json(&["ingest", "--concurrency", "4", "--duration", "2"]);
    assert_eq!(report["concurrency"], 4, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    let writes = report["writes"].as_u64().expect("writes");
    assert!(writes > 0, "{report}");
    assert_eq!(report["write_ms"]["n"].as_u64(), Some(writes), "{report}");
    assert!(
        report["read_newest_64_ms"]["n"]
            .as_u64()
            .is_some_and(|n| n > 0)
    );
    assert!(report["writes_per_s"].as_f64().is_some_and(|r| r > 0.0));
}

/// Runs `hearsay bench ARGS --json` and parses its one JSON object.
fn bench_json(args: &[&str]) -> Value {
    let mut cmd = Command::new(binary());
    clear_node_env(&mut cmd);
    let out = cmd
        .arg("bench")
        .args(args)
        .arg("--json")
        .stdin(Stdio::null())
        .output()
        .expect("running hearsay bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench {args:?} failed: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not one JSON object ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn a_short_catchup_bench_sees_the_offline_node_catch_up() {
    let report = bench_json(&["catchup", "--posts", "50", "--concurrency", "4"]);
    assert_eq!(report["errors"], 0, "{report}");
    // One delta per post, all written while the node was down.
    assert_eq!(report["deltas_behind"], 50, "{report}");
    let serving = report["restart_to_serving_ms"].as_f64().expect("serving");
    let caught = report["restart_to_caught_up_ms"].as_f64().expect("caught");
    assert!(caught >= serving, "{report}");
}

#[test]
fn a_short_restart_bench_reports_time_memory_and_disk() {
    let report = bench_json(&["restart", "--posts", "50", "--concurrency", "4"]);
    assert_eq!(report["errors"], 0, "{report}");
    assert!(
        report["revision"].as_u64().is_some_and(|r| r >= 50),
        "{report}"
    );
    for key in [
        "rss_peak_during_ingest_mib",
        "rss_after_restart_mib",
        "disk_mib",
    ] {
        assert!(
            report[key].as_f64().is_some_and(|v| v > 0.0),
            "{key} in {report}"
        );
    }
    assert!(
        report["disk_bytes_per_post"]
            .as_u64()
            .is_some_and(|b| b > 0)
    );
    assert!(report["restart_to_serving_ms"].is_number(), "{report}");
}
