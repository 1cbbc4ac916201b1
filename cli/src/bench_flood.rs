//! `hearsay bench flood`: what a hostile mesh member costs the honest
//! traffic.
//!
//! The bench starts `--nodes` node processes on loopback, every node linked
//! to every other, in a closed mesh: it makes an operator key, writes each
//! node's key and certificate into its data directory before it starts,
//! and sets `operator` (`--open`: no operator, no certificates). It follows
//! every node's event stream (posts of the bench's author only) and runs
//! two phases of `--duration` seconds each on the same mesh:
//!
//! 1. baseline: honest writes to node 0 at `--rate` with an open loop (as
//!    `bench replication` does: write k is due at `start + k / rate`, its
//!    delay at a node counts from then to the node's event for it);
//! 2. flood: the same writes while a [`Hostile`] peer (admitted, with a
//!    certificate of the operator, in a closed mesh) connected to every node
//!    publishes on the delta topic as fast as it can (or `--flood-rate`) a
//!    mix of fresh valid deltas of its own key, replays, deltas with a bad
//!    signature, garbage and valid deltas far ahead of their sequence.
//!
//! For each phase: the delay of the writes at the other nodes (p50, p90,
//! p99, max) and every node's resident memory (at the end, and the peak
//! sampled every 250 ms); for the flood, what the hostile sent by kind and
//! how the nodes' counters of refused, dropped, rejected and duplicate
//! messages and of closed links grew. The hostile runs in this process on
//! a runtime of its own, so its work does not delay the followers that
//! measure.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hearsay_crdt::Keypair;
use hearsay_node::client::Client;
use hearsay_node::hostile::{FloodPlan, Hostile, Kinds, Sent};
use hearsay_node::launch::{Launch, NodeProcess};
use serde_json::json;
use tokio::sync::{Mutex, Semaphore, mpsc};

use crate::bench::{Seen, follow, mib, rss_bytes, summary};

#[derive(clap::Args, Debug)]
pub struct FloodArgs {
    /// Nodes to start
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Honest writes per second, to node 0, in both phases
    #[arg(long, value_name = "WRITES_PER_S", default_value_t = 50.0)]
    rate: f64,
    /// Seconds of each phase
    #[arg(long, value_name = "SECS", default_value_t = 20.0)]
    duration: f64,
    /// Messages per second of the hostile peer; 0: as fast as it can
    #[arg(long, value_name = "MSGS_PER_S", default_value_t = 0.0)]
    flood_rate: f64,
    /// An open mesh: no operator, no certificates (closed by default)
    #[arg(long)]
    open: bool,
    /// How long to wait, after a phase's last write, for its writes to
    /// arrive
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    settle: f64,
    /// Print one JSON object instead of the table
    #[arg(long)]
    json: bool,
}

/// Author of the honest writes (the hostile's posts are by `rogue`).
const AUTHOR: &str = "bench";
/// Bound of the waits for links and subscriptions.
const LINK_WAIT: Duration = Duration::from_secs(30);
/// Words of the counters whose growth during the flood is reported.
const COUNTER_WORDS: [&str; 6] = [
    "refused",
    "dropped",
    "disconnect",
    "rejected",
    "duplicate",
    "applied",
];

/// The nodes of the bench and their data directory.
struct Mesh {
    nodes: Vec<NodeProcess>,
    operator: Option<hearsay_admission::OperatorKey>,
    _dir: tempfile::TempDir,
}

pub async fn run(args: FloodArgs) -> anyhow::Result<()> {
    let valid = args.nodes >= 2
        && args.nodes <= 64
        && args.rate > 0.0
        && args.rate <= 100_000.0
        && args.duration.is_finite()
        && args.duration > 0.0
        && args.flood_rate.is_finite()
        && args.flood_rate >= 0.0
        && args.settle.is_finite()
        && args.settle >= 0.0;
    if !valid {
        bail!(
            "--nodes must be in 2..=64, --rate in (0, 100000], --duration above 0, --flood-rate and --settle at least 0"
        );
    }
    let mesh = start_mesh(args.nodes, !args.open).await?;
    let n = mesh.nodes.len();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(30))
        .build()?;
    let clients: Vec<Client> = mesh
        .nodes
        .iter()
        .map(|p| Client::with_http(&p.announcement().url(), http.clone()))
        .collect();
    let pids: Vec<Option<u32>> = mesh.nodes.iter().map(NodeProcess::pid).collect();
    let seen: Seen = Arc::default();
    let (ready_tx, mut ready) = mpsc::channel(n);
    for (i, c) in clients.iter().enumerate() {
        follow(
            i,
            n,
            c.clone(),
            &[("kind", "post"), ("author", AUTHOR)],
            seen.clone(),
            ready_tx.clone(),
        );
    }
    for _ in 0..n {
        tokio::time::timeout(LINK_WAIT, ready.recv())
            .await
            .context("an event stream did not open within 30 s")?;
    }
    warm_up(&clients[0], &seen).await?;

    if !args.json {
        eprintln!(
            "phase 1 (baseline): {} writes/s for {} s",
            args.rate, args.duration
        );
    }
    let baseline = phase(&args, "baseline", &clients, &seen, &pids).await?;

    // The hostile: its own runtime, so that its work does not slow the
    // followers measuring the honest writes.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("hostile")
        .enable_all()
        .build()?;
    let key = Keypair::generate();
    let certificate = match &mesh.operator {
        Some(op) => Some(
            op.admit(key.id(), "hostile", hearsay_node::core::now_ms(), None)?
                .encode(),
        ),
        None => None,
    };
    let mut dial = Vec::new();
    let mut peers = Vec::new();
    for node in &mesh.nodes {
        let a = node.announcement();
        dial.push(a.addr("tcp").context("tcp address")?.parse()?);
        peers.push(a.peer_id.parse::<libp2p::PeerId>()?);
    }
    let hostile = {
        let _runtime = runtime.enter();
        Hostile::start(key, certificate, &dial)
    };
    for (i, peer) in peers.iter().enumerate() {
        if !hostile.wait_subscribed(*peer, LINK_WAIT).await {
            bail!("node {i} did not link with the hostile peer within {LINK_WAIT:?}");
        }
    }
    let counters_before = scrape(&clients).await;
    if !args.json {
        eprintln!(
            "phase 2 (flood): the same writes, and a hostile peer linked to every node flooding {}",
            if args.flood_rate > 0.0 {
                format!("{} messages/s", args.flood_rate)
            } else {
                "as fast as it can".to_owned()
            }
        );
    }
    let kinds = Kinds::default();
    let flood = hostile
        .flood(FloodPlan {
            kinds,
            rate: (args.flood_rate > 0.0).then_some(args.flood_rate),
            // It stops by itself if the bench is stuck.
            max_duration: Duration::from_secs_f64(args.duration + args.settle + 60.0),
            ..FloodPlan::default()
        })
        .await;
    // A real attacker comes back: the hostile redials every node every
    // second (a banned peer's redial is closed at once).
    let redial = async {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            hostile.redial().await;
        }
    };
    let flooded = tokio::select! {
        flooded = phase(&args, "flood", &clients, &seen, &pids) => flooded,
        () = redial => unreachable!("the redial loop never ends"),
    };
    let sent = flood.stop().await;
    let counters_after = scrape(&clients).await;
    let disconnections = hostile.disconnections();
    let still_linked = hostile.connected().len();
    drop(hostile);
    runtime.shutdown_background();
    let flooded = flooded?;

    let report = report(
        &args,
        n,
        &baseline,
        &flooded,
        &sent,
        kinds,
        (disconnections, still_linked),
        &counters_before,
        &counters_after,
    );
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    drop(mesh);
    Ok(())
}

/// Starts `n` nodes, every one joining every earlier one; closed: with an
/// operator, each node's key and certificate written before it starts.
async fn start_mesh(n: usize, closed: bool) -> anyhow::Result<Mesh> {
    let dir = tempfile::Builder::new()
        .prefix("hearsay-bench-")
        .tempdir()?;
    let binary = std::env::current_exe().context("path of the hearsay binary")?;
    let operator = closed.then(hearsay_admission::OperatorKey::generate);
    let mut nodes: Vec<NodeProcess> = Vec::new();
    for i in 0..n {
        let data_dir = dir.path().join(format!("n{i}"));
        let region = format!("bench-{i}");
        let mut launch = Launch::new(&binary, &data_dir)
            .set("listen", "/ip4/127.0.0.1/tcp/0")
            .set("http", "127.0.0.1:0")
            .set("region", &region)
            // Exactly the links of the bench: no discovery, no topology
            // dials.
            .set("target_peers", "0")
            .set("degree", "0")
            .start_timeout(Duration::from_secs(600))
            .env("RUST_LOG", "warn");
        if let Some(op) = &operator {
            std::fs::create_dir_all(&data_dir)?;
            let key = Keypair::generate();
            key.save(&data_dir.join(hearsay_node::node::KEY_FILE))?;
            let cert = op.admit(key.id(), &region, hearsay_node::core::now_ms(), None)?;
            std::fs::write(
                data_dir.join(hearsay_node::config::CERTIFICATE_FILE),
                cert.to_text(),
            )?;
            launch = launch.set("operator", op.id().to_string());
        }
        let join: Vec<String> = nodes
            .iter()
            .filter_map(|p| p.announcement().addr("tcp").map(str::to_owned))
            .collect();
        if !join.is_empty() {
            launch = launch.set("join", join.join(","));
        }
        nodes.push(launch.start().await?);
    }
    Ok(Mesh {
        nodes,
        operator,
        _dir: dir,
    })
}

async fn warm_up(writer: &Client, seen: &Seen) -> anyhow::Result<()> {
    let id = writer
        .create_post(Some(AUTHOR), "warm-up", None)
        .await?
        .id
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let all = seen
            .lock()
            .await
            .get(&id)
            .is_some_and(|row| row.iter().all(Option::is_some));
        if all {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the warm-up post did not reach every node within 60 s: is the mesh linked?");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What one phase measured.
struct Phase {
    writes: usize,
    errors: usize,
    /// (write, node) pairs that never arrived.
    missing: usize,
    /// Delay of every write at each node, ms.
    per_node: Vec<Vec<f64>>,
    rss_end: Vec<u64>,
    rss_peak: Vec<u64>,
}

/// Writes to node 0 at `--rate` for `--duration` (open loop), waits up to
/// `--settle` for them to arrive everywhere, and samples memory meanwhile.
async fn phase(
    args: &FloodArgs,
    tag: &str,
    clients: &[Client],
    seen: &Seen,
    pids: &[Option<u32>],
) -> anyhow::Result<Phase> {
    let n = clients.len();
    let mut rss_peak = vec![0u64; n];
    let sample = |peak: &mut Vec<u64>| {
        for (p, pid) in peak.iter_mut().zip(pids) {
            *p = (*p).max(rss_bytes(*pid).unwrap_or(0));
        }
    };
    let total = (args.rate * args.duration).round().max(1.0) as usize;
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    // (id, scheduled)
    let written: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let in_flight = Arc::new(Semaphore::new(1024));
    let start = Instant::now() + Duration::from_millis(100);
    let (mut last_sample, mut last_progress) = (Instant::now(), Instant::now());
    let mut tasks = Vec::with_capacity(total);
    for k in 0..total {
        let scheduled = start + interval.mul_f64(k as f64);
        tokio::time::sleep_until(scheduled.into()).await;
        if last_sample.elapsed() >= Duration::from_millis(250) {
            last_sample = Instant::now();
            sample(&mut rss_peak);
        }
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            // 1024 writes unanswered: the node is far behind; count it.
            errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            continue;
        };
        let (client, record, failed) = (clients[0].clone(), written.clone(), errors.clone());
        let body = format!("{tag} write {k}");
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            match client.create_post(Some(AUTHOR), &body, None).await {
                Ok(post) => record.lock().await.push((post.id.to_string(), scheduled)),
                Err(_) => {
                    failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
        if !args.json && last_progress.elapsed() > Duration::from_millis(500) {
            last_progress = Instant::now();
            eprint!(
                "\r  {tag}: {}/{total} writes sent, {} errors",
                k + 1,
                errors.load(std::sync::atomic::Ordering::Relaxed)
            );
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let written = written.lock().await.clone();
    let settle_until = Instant::now() + Duration::from_secs_f64(args.settle);
    loop {
        sample(&mut rss_peak);
        let done = {
            let seen = seen.lock().await;
            written.iter().all(|(id, _)| {
                seen.get(id)
                    .is_some_and(|row| row.iter().all(Option::is_some))
            })
        };
        if done || Instant::now() > settle_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !args.json {
        eprintln!("\r{:70}", "");
    }
    let rss_end: Vec<u64> = pids.iter().map(|p| rss_bytes(*p).unwrap_or(0)).collect();
    let seen = seen.lock().await;
    let mut per_node: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut missing = 0;
    for (id, scheduled) in &written {
        let row = seen.get(id);
        for (i, node) in per_node.iter_mut().enumerate() {
            match row.and_then(|r| r[i]) {
                Some(at) => node.push(at.saturating_duration_since(*scheduled).as_secs_f64() * 1e3),
                None => missing += 1,
            }
        }
    }
    Ok(Phase {
        writes: written.len(),
        errors: errors.load(std::sync::atomic::Ordering::Relaxed),
        missing,
        per_node,
        rss_end,
        rss_peak,
    })
}

/// Per node, the counters of interest ([`COUNTER_WORDS`]): series → value.
type Counters = Vec<BTreeMap<String, f64>>;

async fn scrape(clients: &[Client]) -> Counters {
    let mut out = Vec::with_capacity(clients.len());
    for c in clients {
        out.push(
            c.metrics()
                .await
                .map(|text| counters(&text))
                .unwrap_or_default(),
        );
    }
    out
}

/// The `hearsay_` series of a `/metrics` text whose names hold one of
/// [`COUNTER_WORDS`].
fn counters(metrics: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        if name.starts_with("hearsay_") && COUNTER_WORDS.iter().any(|w| name.contains(w)) {
            out.insert(series.to_owned(), value);
        }
    }
    out
}

/// The series that grew between two scrapes, and by how much.
fn increases(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for (series, v) in after {
        let grown = v - before.get(series).copied().unwrap_or(0.0);
        if grown > 0.0 {
            out.insert(series.clone(), json!(grown));
        }
    }
    serde_json::Value::Object(out)
}

/// Delays at the nodes that did not take the write (1..n), pooled.
fn others(phase: &Phase) -> Vec<f64> {
    phase.per_node.iter().skip(1).flatten().copied().collect()
}

#[allow(clippy::too_many_arguments)]
fn report(
    args: &FloodArgs,
    n: usize,
    baseline: &Phase,
    flooded: &Phase,
    sent: &Sent,
    kinds: Kinds,
    (disconnections, still_linked): (usize, usize),
    before: &Counters,
    after: &Counters,
) -> serde_json::Value {
    let phase_json = |name: &str, p: &Phase| {
        json!({
            "phase": name,
            "writes": p.writes,
            "errors": p.errors,
            "missing": p.missing,
            "delay_ms": summary(others(p)),
            "per_node": (0..n).map(|i| json!({
                "node": i,
                "delay_ms": summary(p.per_node[i].clone()),
                "rss_mib": mib(p.rss_end[i]),
                "rss_peak_mib": mib(p.rss_peak[i]),
            })).collect::<Vec<_>>(),
        })
    };
    let p99 = |p: &Phase| summary(others(p))["p99"].as_f64().unwrap_or(f64::NAN);
    let ratio = |a: f64, b: f64| ((a / b) * 100.0).round() / 100.0;
    let per_s = sent.total() as f64 / (sent.elapsed_ms.max(1) as f64 / 1e3);
    json!({
        "nodes": n,
        "mesh": if args.open { "open" } else { "closed" },
        "rate": args.rate,
        "duration_s": args.duration,
        "phases": [phase_json("baseline", baseline), phase_json("flood", flooded)],
        "p99_ratio": ratio(p99(flooded), p99(baseline)),
        "per_node_p99_ratio": (0..n).map(|i| {
            let p = |ph: &Phase| summary(ph.per_node[i].clone())["p99"].as_f64().unwrap_or(f64::NAN);
            ratio(p(flooded), p(baseline))
        }).collect::<Vec<_>>(),
        "rss_growth_mib": (0..n)
            .map(|i| mib(flooded.rss_end[i]) - mib(baseline.rss_end[i]))
            .map(|g| (g * 10.0).round() / 10.0)
            .collect::<Vec<_>>(),
        "hostile": {
            "weights": kinds,
            "sent": sent,
            "messages_per_s": per_s.round(),
            "disconnections": disconnections,
            "linked_at_end": still_linked,
        },
        "counters_increase": (0..n)
            .map(|i| increases(
                before.get(i).unwrap_or(&BTreeMap::new()),
                after.get(i).unwrap_or(&BTreeMap::new()),
            ))
            .collect::<Vec<_>>(),
    })
}

fn print_table(r: &serde_json::Value) {
    println!(
        "{} nodes, {} mesh, {} honest writes/s to node 0, {} s per phase",
        r["nodes"],
        r["mesh"].as_str().unwrap_or_default(),
        r["rate"],
        r["duration_s"]
    );
    println!(
        "delay of the honest writes at the other nodes, ms; resident memory at the end of the phase (peak), MiB:"
    );
    println!("| phase | where | n | p50 | p90 | p99 | max | RSS (peak) |");
    println!("|---|---|---|---|---|---|---|---|");
    for p in r["phases"].as_array().into_iter().flatten() {
        let name = p["phase"].as_str().unwrap_or_default();
        let d = &p["delay_ms"];
        println!(
            "| {name} | nodes 1.. | {} | {} | {} | {} | {} | |",
            d["n"], d["p50"], d["p90"], d["p99"], d["max"]
        );
        for node in p["per_node"].as_array().into_iter().flatten() {
            let d = &node["delay_ms"];
            println!(
                "| {name} | node {} | {} | {} | {} | {} | {} | {} ({}) |",
                node["node"],
                d["n"],
                d["p50"],
                d["p90"],
                d["p99"],
                d["max"],
                node["rss_mib"],
                node["rss_peak_mib"]
            );
        }
        println!(
            "| {name} | writes {}, errors {}, (write, node) pairs missing {} | | | | | | |",
            p["writes"], p["errors"], p["missing"]
        );
    }
    println!(
        "p99 flood / baseline: {} (per node {}); RSS growth per node, MiB: {}",
        r["p99_ratio"], r["per_node_p99_ratio"], r["rss_growth_mib"]
    );
    let h = &r["hostile"];
    let s = &h["sent"];
    println!(
        "hostile sent {} messages/s: valid_new {}, replay {}, bad_signature {}, garbage {}, far_ahead {}; refused by its own gossipsub: {} queue full, {} duplicates (replays), {} other; its links closed {} times, linked to {} nodes at the end",
        h["messages_per_s"],
        s["valid_new"],
        s["replay"],
        s["bad_signature"],
        s["garbage"],
        s["far_ahead"],
        s["queue_full"],
        s["duplicate"],
        s["refused"],
        h["disconnections"],
        h["linked_at_end"]
    );
    println!("counters grown during the flood:");
    for (i, c) in r["counters_increase"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let cells: Vec<String> = c
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k} +{v}"))
            .collect();
        println!("  node {i}: {}", cells.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_of_interest_and_their_growth() {
        let text = r#"# TYPE hearsay_deltas_rejected_total counter
hearsay_deltas_rejected_total{reason="bad_signature",source="gossip"} 5
hearsay_peer_messages_dropped_total{reason="rate"} 2
hearsay_revision 10
other_refused_total 3
"#;
        let before = counters(text);
        assert_eq!(before.len(), 2, "{before:?}");
        let mut after = before.clone();
        *after
            .get_mut(r#"hearsay_deltas_rejected_total{reason="bad_signature",source="gossip"}"#)
            .expect("series") += 4.0;
        let grown = increases(&before, &after);
        assert_eq!(
            grown,
            json!({r#"hearsay_deltas_rejected_total{reason="bad_signature",source="gossip"}"#: 4.0})
        );
    }
}
