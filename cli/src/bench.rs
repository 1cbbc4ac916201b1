//! `hearsay bench replication`: how long a write takes to reach every node,
//! measured the way a user meets it.
//!
//! The bench starts N node processes on loopback (or uses a running mesh,
//! `--targets`), links them as a chain, a ring or fully, each link through a
//! user-space proxy that delays every byte by `--link-delay` ms, follows the
//! event stream of every node, and writes at a fixed rate with an open loop:
//! write k is sent at `start + k / rate` whether or not earlier ones were
//! answered, and its delay at a node counts from that scheduled time to the
//! node's event for it (no coordinated omission: a slow node cannot hide
//! latency by slowing the writer down).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hearsay_node::client::Client;
use hearsay_node::launch::{Launch, NodeProcess};
use hearsay_node::proxy::Proxy;
use serde_json::json;

use crate::plot;
use tokio::sync::{Mutex, Semaphore, mpsc};

#[derive(clap::Subcommand, Debug)]
pub enum BenchCmd {
    /// Delay from a write to its arrival at every node
    Replication(ReplicationArgs),
    /// Acknowledged durable writes per second on one node, and reads of the
    /// newest posts while they run
    Ingest(IngestArgs),
    /// Time for a node that was offline while others wrote to catch up
    Catchup(PostsArgs),
    /// Time from start to serving for a node holding many posts; memory and
    /// disk per post
    Restart(PostsArgs),
    /// Claims per second and claim latency of the name registry, and the
    /// time to elect a new leader after the leader is killed
    Names(crate::bench_names::NamesArgs),
    /// Replication delay and memory of a mesh while a hostile peer floods
    /// it with valid, replayed, forged and garbage deltas
    Flood(crate::bench_flood::FloodArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// Node i joins node i-1
    Chain,
    /// A chain whose last node also joins the first
    Ring,
    /// Every node joins every earlier one
    Full,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Writers {
    /// Every write goes to the first node
    One,
    /// Writes go to the nodes in turn
    All,
}

#[derive(clap::Args, Debug)]
pub struct ReplicationArgs {
    /// Nodes to start (ignored with --targets)
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    #[arg(long, value_enum, default_value = "chain")]
    topology: Shape,
    /// One-way delay added to every link, ms
    #[arg(long, value_name = "MS", default_value_t = 0)]
    link_delay: u64,
    /// Writes per second
    #[arg(long, value_name = "WRITES_PER_S", default_value_t = 50.0)]
    rate: f64,
    /// Seconds of writing
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    duration: f64,
    #[arg(long, value_enum, default_value = "one")]
    writers: Writers,
    /// Use a running mesh: base URLs of its nodes' HTTP APIs
    #[arg(long, value_name = "URL,URL,...", value_delimiter = ',')]
    targets: Vec<String>,
    /// How long to wait, after the last write, for writes to arrive
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    settle: f64,
    /// Print one JSON object instead of the table
    #[arg(long)]
    json: bool,
    /// Also draw the delay distribution of every node into this SVG file
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<std::path::PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct IngestArgs {
    /// Clients writing at once, each in a closed loop
    #[arg(long, value_name = "C", default_value_t = 64)]
    concurrency: usize,
    /// Seconds of writing
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    duration: f64,
    /// Use a running node: base URL of its HTTP API
    #[arg(long, value_name = "URL")]
    target: Option<String>,
    /// Print one JSON object instead of the table
    #[arg(long)]
    json: bool,
}

pub async fn run(command: BenchCmd) -> anyhow::Result<()> {
    match command {
        BenchCmd::Replication(args) => replication(args).await,
        BenchCmd::Ingest(args) => ingest(args).await,
        BenchCmd::Catchup(args) => catchup(args).await,
        BenchCmd::Restart(args) => restart(args).await,
        BenchCmd::Names(args) => crate::bench_names::run(args).await,
        BenchCmd::Flood(args) => crate::bench_flood::run(args).await,
    }
}

#[derive(clap::Args, Debug)]
pub struct PostsArgs {
    /// Posts to write (each is one delta): while the node is offline
    /// (catchup), or before it restarts (restart)
    #[arg(long, value_name = "P", default_value_t = 10_000)]
    posts: usize,
    /// Clients writing them
    #[arg(long, value_name = "C", default_value_t = 64)]
    concurrency: usize,
    /// Print one JSON object instead of the text
    #[arg(long)]
    json: bool,
}

/// Starts one node of the bench in `dir/name`, joining `join` if given.
async fn start_node(
    dir: &std::path::Path,
    name: &str,
    join: Option<String>,
) -> anyhow::Result<NodeProcess> {
    let binary = std::env::current_exe().context("path of the hearsay binary")?;
    let mut launch = Launch::new(&binary, dir.join(name))
        .set("listen", "/ip4/127.0.0.1/tcp/0")
        .set("http", "127.0.0.1:0")
        .set("region", format!("bench-{name}"))
        .set("target_peers", "0")
        .set("degree", "0")
        .start_timeout(Duration::from_secs(600))
        .env("RUST_LOG", "warn");
    if let Some(j) = join {
        launch = launch.set("join", j);
    }
    Ok(launch.start().await?)
}

/// Writes `count` posts of about 100 bytes with `concurrency` clients in
/// closed loops; calls `sample` every 200 ms meanwhile. The number of
/// failed writes.
async fn write_posts(
    client: &Client,
    count: usize,
    concurrency: usize,
    json: bool,
    mut sample: impl FnMut(),
) -> anyhow::Result<usize> {
    if !(1..=4096).contains(&concurrency) {
        bail!("--concurrency must be in 1..=4096");
    }
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, next) = (client.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut errors = 0;
            loop {
                let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if k >= count {
                    return errors;
                }
                let body = format!("post {k}: about a hundred bytes, as people write them, neither more nor less than that.");
                if client.create_post(Some("bench"), &body, None).await.is_err() {
                    errors += 1;
                }
            }
        }));
    }
    while !tasks.iter().all(|t| t.is_finished()) {
        sample();
        if !json {
            eprint!(
                "\r  writing: {}/{count}",
                next.load(std::sync::atomic::Ordering::Relaxed).min(count)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if !json {
        eprintln!("\r{:60}", "");
    }
    let mut errors = 0;
    for t in tasks {
        errors += t.await?;
    }
    Ok(errors)
}

/// Resident memory of a process, bytes (Linux `/proc`).
pub(crate) fn rss_bytes(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Bytes of the files under `dir`.
fn disk_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

pub(crate) fn mib(bytes: u64) -> f64 {
    (bytes as f64 / (1 << 20) as f64 * 10.0).round() / 10.0
}

/// `hearsay bench catchup`: two nodes, B joined to A; B is killed, A takes
/// `--posts` posts, B restarts; the time from B's restart until its version
/// vector covers A's.
async fn catchup(args: PostsArgs) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("hearsay-bench-")
        .tempdir()?;
    let a = start_node(dir.path(), "a", None).await?;
    let addr = a
        .announcement()
        .addr("tcp")
        .context("tcp address")?
        .to_owned();
    let mut b = start_node(dir.path(), "b", Some(addr)).await?;
    let (ca, cb) = (a.client().clone(), b.client().clone());
    let warm = ca.create_post(Some("bench"), "warm-up", None).await?;
    let until = Instant::now() + Duration::from_secs(60);
    while cb.post(&warm.id.to_string()).await?.is_none() {
        if Instant::now() > until {
            bail!("the warm-up post did not reach the second node within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let held = cb.stats().await?.revision;
    b.kill();
    let errors = write_posts(&ca, args.posts, args.concurrency, args.json, || {}).await?;
    let target = ca.stats().await?;
    let behind = target.revision.saturating_sub(held);
    let started = Instant::now();
    b.restart().await?;
    let serving_ms = started.elapsed().as_secs_f64() * 1e3;
    let cb = b.client().clone();
    let until = Instant::now() + Duration::from_secs(600);
    let caught_up = loop {
        let s = cb.stats().await?;
        let covers = target
            .version_vector
            .iter()
            .all(|(o, seq)| s.version_vector.get(o).is_some_and(|h| h >= seq));
        if covers {
            break started.elapsed().as_secs_f64() * 1e3;
        }
        if Instant::now() > until {
            bail!("the restarted node did not catch up within 600 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let report = json!({
        "posts": args.posts,
        "errors": errors,
        "deltas_behind": behind,
        "restart_to_serving_ms": serving_ms.round(),
        "restart_to_caught_up_ms": caught_up.round(),
        "catchup_after_serving_ms": (caught_up - serving_ms).round(),
    });
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "node B was {} deltas behind ({} posts, {} errors): serving {} ms after its restart, caught up {} ms after it",
            behind,
            args.posts,
            errors,
            report["restart_to_serving_ms"],
            report["restart_to_caught_up_ms"]
        );
    }
    Ok(())
}

/// `hearsay bench restart`: one node takes `--posts` posts (resident
/// memory sampled throughout), is killed with SIGKILL, and restarts on the
/// same data; the time from the restart until it serves the newest posts,
/// its resident memory then, and the bytes on disk per post.
async fn restart(args: PostsArgs) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("hearsay-bench-")
        .tempdir()?;
    let mut node = start_node(dir.path(), "n", None).await?;
    let client = node.client().clone();
    let pid = node.pid();
    let mut peak = 0u64;
    let errors = write_posts(&client, args.posts, args.concurrency, args.json, || {
        peak = peak.max(rss_bytes(pid).unwrap_or(0));
    })
    .await?;
    let rss_after_ingest = rss_bytes(pid).unwrap_or(0);
    let held = client.stats().await?.revision;
    node.kill();
    let disk = disk_bytes(&dir.path().join("n"));
    let started = Instant::now();
    node.restart().await?;
    let client = node.client().clone();
    let until = Instant::now() + Duration::from_secs(600);
    loop {
        if client.posts(64, None).await.is_ok_and(|p| !p.is_empty()) {
            break;
        }
        if Instant::now() > until {
            bail!("the restarted node did not serve posts within 600 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let serving_ms = started.elapsed().as_secs_f64() * 1e3;
    let rss_restarted = rss_bytes(node.pid()).unwrap_or(0);
    let stored = args.posts.saturating_sub(errors).max(1) as u64;
    let report = json!({
        "posts": args.posts,
        "errors": errors,
        "revision": held,
        "restart_to_serving_ms": serving_ms.round(),
        "rss_peak_during_ingest_mib": mib(peak),
        "rss_after_ingest_mib": mib(rss_after_ingest),
        "rss_after_restart_mib": mib(rss_restarted),
        "disk_mib": mib(disk),
        "disk_bytes_per_post": disk / stored,
    });
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} posts ({} errors): serving {} ms after a SIGKILL and restart; resident memory peak {} MiB during the ingest, {} MiB after it, {} MiB after the restart; {} MiB on disk, {} bytes per post",
            args.posts,
            errors,
            report["restart_to_serving_ms"],
            report["rss_peak_during_ingest_mib"],
            report["rss_after_ingest_mib"],
            report["rss_after_restart_mib"],
            report["disk_mib"],
            report["disk_bytes_per_post"]
        );
    }
    Ok(())
}

/// `hearsay bench ingest`: `--concurrency` clients each write posts in a
/// closed loop for `--duration` seconds (a write is counted once the node
/// acknowledged it, which it does only after its flush: durable), while one
/// more client reads the newest 64 posts over and over.
async fn ingest(args: IngestArgs) -> anyhow::Result<()> {
    if !(1..=4096).contains(&args.concurrency) || !args.duration.is_finite() || args.duration <= 0.0
    {
        bail!("--concurrency must be in 1..=4096 and --duration above 0");
    }
    let mut _node = None;
    let mut _dir = None;
    let url = match &args.target {
        Some(u) => u.clone(),
        None => {
            let dir = tempfile::Builder::new()
                .prefix("hearsay-bench-")
                .tempdir()?;
            let node = start_node(dir.path(), "0", None).await?;
            let url = node.announcement().url();
            _node = Some(node);
            _dir = Some(dir);
            url
        }
    };
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency + 1)
        .timeout(Duration::from_secs(30))
        .build()?;
    let client = Client::with_http(&url, http);
    // Warm-up, not measured.
    client.create_post(Some("bench"), "warm-up", None).await?;
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(args.duration);
    let stages_before = scrape_stages(std::slice::from_ref(&client)).await;
    let mut writers = Vec::new();
    for c in 0..args.concurrency {
        let client = client.clone();
        writers.push(tokio::spawn(async move {
            let (mut lat, mut errors, mut k) = (Vec::new(), 0usize, 0usize);
            while Instant::now() < end {
                let sent = Instant::now();
                let body = format!("ingest {c}/{k}: a post of about a hundred bytes, as people write them, no more and no less.");
                match client.create_post(Some("bench"), &body, None).await {
                    Ok(_) => lat.push(sent.elapsed().as_secs_f64() * 1e3),
                    Err(_) => errors += 1,
                }
                k += 1;
            }
            (lat, errors)
        }));
    }
    let reader = {
        let client = client.clone();
        tokio::spawn(async move {
            let (mut lat, mut errors) = (Vec::new(), 0usize);
            while Instant::now() < end {
                let sent = Instant::now();
                match client.posts(64, None).await {
                    Ok(_) => lat.push(sent.elapsed().as_secs_f64() * 1e3),
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        })
    };
    if !args.json {
        while Instant::now() < end {
            eprint!(
                "\r  writing: {:.0} of {:.0} s",
                start.elapsed().as_secs_f64(),
                args.duration
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        eprintln!("\r{:60}", "");
    }
    let (mut writes, mut errors) = (Vec::new(), 0);
    for w in writers {
        let (lat, e) = w.await?;
        writes.extend(lat);
        errors += e;
    }
    let (reads, read_errors) = reader.await?;
    let elapsed = start.elapsed().as_secs_f64();
    let stages_after = scrape_stages(std::slice::from_ref(&client)).await;
    let report = json!({
        "concurrency": args.concurrency,
        "duration_s": (elapsed * 1000.0).round() / 1000.0,
        "writes": writes.len(),
        "errors": errors,
        "writes_per_s": (writes.len() as f64 / elapsed * 10.0).round() / 10.0,
        "write_ms": summary(writes),
        "read_errors": read_errors,
        "read_newest_64_ms": summary(reads),
        "stages_us": stage_means(&stages_before[0], &stages_after[0]),
    });
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    println!(
        "{} clients for {} s: {} acknowledged durable writes ({}/s), {} errors",
        args.concurrency, report["duration_s"], report["writes"], report["writes_per_s"], errors
    );
    println!("| what | n | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|---|");
    for (name, s) in [
        ("write, ms", &report["write_ms"]),
        ("read newest 64, ms", &report["read_newest_64_ms"]),
    ] {
        println!(
            "| {name} | {} | {} | {} | {} | {} |",
            s["n"], s["p50"], s["p90"], s["p99"], s["max"]
        );
    }
    println!("where the time goes: mean µs per step (and how many):");
    if let Some(stages) = report["stages_us"].as_object() {
        for (name, s) in stages {
            println!("  {name}: {} ({})", s["mean_us"], s["n"]);
        }
    }
    Ok(())
}

/// Nodes started by the bench, with the proxies on their links.
struct LocalMesh {
    nodes: Vec<NodeProcess>,
    _proxies: Vec<Proxy>,
    _dir: tempfile::TempDir,
}

/// The peers node `i` joins in `shape`.
fn joins(shape: Shape, n: usize, i: usize) -> Vec<usize> {
    match shape {
        Shape::Chain => (i > 0).then(|| i - 1).into_iter().collect(),
        Shape::Ring => {
            let mut j: Vec<usize> = (i > 0).then(|| i - 1).into_iter().collect();
            if n >= 3 && i == n - 1 {
                j.push(0);
            }
            j
        }
        Shape::Full => (0..i).collect(),
    }
}

async fn start_mesh(args: &ReplicationArgs) -> anyhow::Result<LocalMesh> {
    if args.nodes < 2 {
        bail!("--nodes must be at least 2");
    }
    let dir = tempfile::Builder::new()
        .prefix("hearsay-bench-")
        .tempdir()?;
    let binary = std::env::current_exe().context("path of the hearsay binary")?;
    let delay = Duration::from_millis(args.link_delay);
    let (mut nodes, mut proxies) = (Vec::<NodeProcess>::new(), Vec::new());
    for i in 0..args.nodes {
        let mut join = Vec::new();
        for j in joins(args.topology, args.nodes, i) {
            let a = nodes[j].announcement();
            let addr = a.addr("tcp").context("tcp address")?;
            if delay.is_zero() {
                join.push(addr.to_owned());
            } else {
                let parts: Vec<&str> = addr.split('/').collect();
                let target = format!("{}:{}", parts[2], parts[4]).parse()?;
                let proxy = Proxy::start(target, delay).await?;
                join.push(format!(
                    "/ip4/127.0.0.1/tcp/{}/p2p/{}",
                    proxy.addr.port(),
                    a.peer_id
                ));
                proxies.push(proxy);
            }
        }
        let mut launch = Launch::new(&binary, dir.path().join(format!("n{i}")))
            .set("listen", "/ip4/127.0.0.1/tcp/0")
            .set("http", "127.0.0.1:0")
            .set("region", format!("bench-{i}"))
            // The links are the shape asked for: no discovery, no topology
            // dials.
            .set("target_peers", "0")
            .set("degree", "0")
            .env("RUST_LOG", "warn");
        if !join.is_empty() {
            launch = launch.set("join", join.join(","));
        }
        nodes.push(launch.start().await?);
    }
    Ok(LocalMesh {
        nodes,
        _proxies: proxies,
        _dir: dir,
    })
}

/// What the followers saw: per post id, per node, when.
pub(crate) type Seen = Arc<Mutex<HashMap<String, Vec<Option<Instant>>>>>;

/// Follows node `i`'s event stream of posts (narrowed by `filters`) from
/// its head, noting when each post appears; reconnects from the last id if
/// the stream breaks.
pub(crate) fn follow(
    i: usize,
    n: usize,
    client: Client,
    filters: &'static [(&'static str, &'static str)],
    seen: Seen,
    ready: mpsc::Sender<usize>,
) {
    tokio::spawn(async move {
        let mut from: Option<String> = None;
        let mut announced = false;
        for _attempt in 0..100 {
            let Ok(mut stream) = client.events(from.as_deref(), filters).await else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            if !announced {
                announced = true;
                let _ = ready.send(i).await;
            }
            while let Ok(Some(event)) = stream.next().await {
                if event.event != "post" {
                    continue;
                }
                let at = Instant::now();
                let id = serde_json::from_str::<serde_json::Value>(&event.data)
                    .ok()
                    .and_then(|v| v["post"]["id"].as_str().map(str::to_owned));
                if let Some(id) = id {
                    let mut seen = seen.lock().await;
                    let row = seen.entry(id).or_insert_with(|| vec![None; n]);
                    row[i].get_or_insert(at);
                }
            }
            from = stream.last_id().map(str::to_owned);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

/// Sum (seconds) and count of every `hearsay_stage_seconds` series, and of
/// the HTTP write route's duration, from a node's `/metrics` text.
type StageTotals = HashMap<String, (f64, f64)>;

fn stage_totals(metrics: &str) -> StageTotals {
    let mut out: StageTotals = HashMap::new();
    for line in metrics.lines() {
        // `name{labels} value`
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (step, is_sum) = match series.split_once('{') {
            Some(("hearsay_stage_seconds_sum", labels)) => (labels, true),
            Some(("hearsay_stage_seconds_count", labels)) => (labels, false),
            Some(("hearsay_http_request_duration_seconds_sum", r#"route="/api/v0/p"}"#)) => {
                ("stage=\"http\"}", true)
            }
            Some(("hearsay_http_request_duration_seconds_count", r#"route="/api/v0/p"}"#)) => {
                ("stage=\"http\"}", false)
            }
            _ => continue,
        };
        let Some(name) = step
            .strip_prefix("stage=\"")
            .and_then(|r| r.strip_suffix("\"}"))
        else {
            continue;
        };
        let entry = out.entry(name.to_owned()).or_default();
        if is_sum {
            entry.0 = value;
        } else {
            entry.1 = value;
        }
    }
    out
}

/// Mean microseconds and count per stage between two scrapes.
fn stage_means(before: &StageTotals, after: &StageTotals) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    let mut names: Vec<&String> = after.keys().collect();
    names.sort();
    for name in names {
        let (s1, c1) = after[name];
        let (s0, c0) = before.get(name).copied().unwrap_or_default();
        let n = c1 - c0;
        if n > 0.0 {
            let mean_us = ((s1 - s0) / n * 1e6 * 10.0).round() / 10.0;
            out.insert(name.clone(), json!({"n": n as u64, "mean_us": mean_us}));
        }
    }
    serde_json::Value::Object(out)
}

async fn scrape_stages(clients: &[Client]) -> Vec<StageTotals> {
    let mut out = Vec::with_capacity(clients.len());
    for c in clients {
        out.push(
            c.metrics()
                .await
                .map(|m| stage_totals(&m))
                .unwrap_or_default(),
        );
    }
    out
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub(crate) fn summary(mut xs: Vec<f64>) -> serde_json::Value {
    xs.sort_by(|a, b| a.total_cmp(b));
    let r = |x: f64| (x * 1000.0).round() / 1000.0;
    json!({
        "n": xs.len(),
        "p50": r(percentile(&xs, 0.5)),
        "p90": r(percentile(&xs, 0.9)),
        "p99": r(percentile(&xs, 0.99)),
        "max": r(xs.last().copied().unwrap_or(f64::NAN)),
    })
}

async fn replication(args: ReplicationArgs) -> anyhow::Result<()> {
    let valid = (0.0..=100_000.0).contains(&args.rate)
        && args.rate > 0.0
        && args.duration.is_finite()
        && args.duration > 0.0;
    if !valid {
        bail!("--rate must be in (0, 100000] and --duration above 0");
    }
    let local = if args.targets.is_empty() {
        Some(start_mesh(&args).await?)
    } else {
        None
    };
    let urls: Vec<String> = match &local {
        Some(m) => m.nodes.iter().map(|p| p.announcement().url()).collect(),
        None => args.targets.clone(),
    };
    let n = urls.len();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(30))
        .build()?;
    let clients: Vec<Client> = urls
        .iter()
        .map(|u| Client::with_http(u, http.clone()))
        .collect();
    let seen: Seen = Arc::default();
    let (ready_tx, mut ready) = mpsc::channel(n);
    for (i, c) in clients.iter().enumerate() {
        follow(
            i,
            n,
            c.clone(),
            &[("kind", "post")],
            seen.clone(),
            ready_tx.clone(),
        );
    }
    for _ in 0..n {
        tokio::time::timeout(Duration::from_secs(30), ready.recv())
            .await
            .context("an event stream did not open within 30 s")?;
    }
    // Warm-up, not measured: a post must reach every node.
    let warm = clients[0]
        .create_post(Some("bench"), "warm-up", None)
        .await?
        .id
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let all = seen
            .lock()
            .await
            .get(&warm)
            .is_some_and(|row| row.iter().all(Option::is_some));
        if all {
            break;
        }
        if Instant::now() > deadline {
            bail!("the warm-up post did not reach every node within 60 s: is the mesh connected?");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let stages_before = scrape_stages(&clients).await;
    let total = (args.rate * args.duration).round().max(1.0) as usize;
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    // id -> (scheduled, acked); errors.
    let written: Arc<Mutex<Vec<(String, Instant, Instant)>>> = Arc::default();
    let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let in_flight = Arc::new(Semaphore::new(1024));
    let start = Instant::now() + Duration::from_millis(100);
    let mut last_progress = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for k in 0..total {
        let scheduled = start + interval.mul_f64(k as f64);
        tokio::time::sleep_until(scheduled.into()).await;
        let writer = match args.writers {
            Writers::One => 0,
            Writers::All => k % n,
        };
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            // 1024 writes unanswered: the node is far behind; count it.
            errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            continue;
        };
        let (client, record, failed) = (clients[writer].clone(), written.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            match client
                .create_post(Some("bench"), &format!("bench write {k}"), None)
                .await
            {
                Ok(post) => {
                    record
                        .lock()
                        .await
                        .push((post.id.to_string(), scheduled, Instant::now()))
                }
                Err(_) => {
                    failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
        if !args.json && last_progress.elapsed() > Duration::from_millis(500) {
            last_progress = Instant::now();
            eprint!(
                "\r  writing: {}/{total} sent, {} errors",
                k + 1,
                errors.load(std::sync::atomic::Ordering::Relaxed)
            );
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let last_scheduled = start + interval.mul_f64((total - 1) as f64);
    // Wait for every acknowledged write at every node, bounded.
    let settle_until = Instant::now() + Duration::from_secs_f64(args.settle);
    let written = written.lock().await.clone();
    loop {
        let done = {
            let seen = seen.lock().await;
            written.iter().all(|(id, _, _)| {
                seen.get(id)
                    .is_some_and(|row| row.iter().all(Option::is_some))
            })
        };
        if done || Instant::now() > settle_until {
            break;
        }
        if !args.json {
            eprint!("\r  waiting for the last writes to arrive...            ");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !args.json {
        eprintln!("\r{:60}", "");
    }

    let stages_after = scrape_stages(&clients).await;
    let seen = seen.lock().await;
    let mut per_node: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut all = Vec::new();
    let (mut missing, mut last_arrival) = (0usize, last_scheduled);
    for (id, scheduled, _) in &written {
        let row = seen.get(id);
        for (i, node) in per_node.iter_mut().enumerate() {
            match row.and_then(|r| r[i]) {
                Some(at) => {
                    let ms = at.saturating_duration_since(*scheduled).as_secs_f64() * 1e3;
                    node.push(ms);
                    all.push(ms);
                    last_arrival = last_arrival.max(at);
                }
                None => missing += 1,
            }
        }
    }
    let acks: Vec<f64> = written
        .iter()
        .map(|(_, s, a)| a.saturating_duration_since(*s).as_secs_f64() * 1e3)
        .collect();
    let last_ack = written.iter().map(|w| w.2).max().unwrap_or(start);
    let achieved = written.len() as f64
        / last_ack
            .saturating_duration_since(start)
            .as_secs_f64()
            .max(1e-9);
    if let Some(path) = &args.plot {
        let series: Vec<plot::Series> = per_node
            .iter()
            .enumerate()
            .map(|(i, ms)| {
                let s = summary(ms.clone());
                plot::Series {
                    label: format!(
                        "node {i}: p50 {:.1} ms, p99 {:.1} ms",
                        s["p50"].as_f64().unwrap_or(f64::NAN),
                        s["p99"].as_f64().unwrap_or(f64::NAN)
                    ),
                    ms: ms.clone(),
                }
            })
            .collect();
        let title = format!(
            "{n} nodes, {:?}, link delay {} ms, {} writes/s",
            args.topology, args.link_delay, args.rate
        )
        .to_lowercase();
        plot::delay_cdf(path, &title, &series)?;
    }
    let report = json!({
        "nodes": n,
        "topology": format!("{:?}", args.topology).to_lowercase(),
        "link_delay_ms": args.link_delay,
        "rate": args.rate,
        "writes": written.len(),
        "errors": errors.load(std::sync::atomic::Ordering::Relaxed),
        "missing": missing,
        "ack_ms": summary(acks),
        "delay_ms": summary(all),
        "per_node": per_node
            .into_iter()
            .enumerate()
            .map(|(i, d)| json!({
                "node": i,
                "url": urls[i],
                "delay_ms": summary(d),
                "stages_us": stage_means(&stages_before[i], &stages_after[i]),
            }))
            .collect::<Vec<_>>(),
        "converge_ms": (last_arrival.saturating_duration_since(last_scheduled).as_secs_f64() * 1e3).round(),
        "achieved_rate": (achieved * 10.0).round() / 10.0,
    });
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    println!(
        "{} nodes ({}, link delay {} ms), {} writes at {}/s ({} achieved), {} errors, {} (write, node) pairs missing; converged {} ms after the last scheduled write",
        n,
        report["topology"].as_str().unwrap_or_default(),
        args.link_delay,
        report["writes"],
        args.rate,
        report["achieved_rate"],
        report["errors"],
        missing,
        report["converge_ms"]
    );
    println!("delay from the scheduled send time, ms:");
    println!("| where | n | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|---|");
    let row = |name: String, s: &serde_json::Value| {
        println!(
            "| {name} | {} | {} | {} | {} | {} |",
            s["n"], s["p50"], s["p90"], s["p99"], s["max"]
        );
    };
    row("acknowledged (writer)".into(), &report["ack_ms"]);
    for (i, node) in report["per_node"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        row(format!("node {i}"), &node["delay_ms"]);
    }
    row("every node".into(), &report["delay_ms"]);
    println!();
    println!("where the time goes: mean µs per step (and how many), by node:");
    let names = [
        "http", "write", "commit", "publish", "deliver", "receive", "read",
    ];
    println!("| node | {} |", names.join(" | "));
    println!("|---|{}", "---|".repeat(names.len()));
    for (i, node) in report["per_node"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let cells: Vec<String> = names
            .iter()
            .map(|name| match &node["stages_us"][name] {
                serde_json::Value::Null => "-".to_owned(),
                s => format!("{} ({})", s["mean_us"], s["n"]),
            })
            .collect();
        println!("| {i} | {} |", cells.join(" | "));
    }
    drop(local);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_link_the_nodes_as_named() {
        let links = |shape| (0..4).map(|i| joins(shape, 4, i)).collect::<Vec<_>>();
        assert_eq!(links(Shape::Chain), vec![vec![], vec![0], vec![1], vec![2]]);
        assert_eq!(
            links(Shape::Ring),
            vec![vec![], vec![0], vec![1], vec![2, 0]]
        );
        assert_eq!(
            links(Shape::Full),
            vec![vec![], vec![0], vec![0, 1], vec![0, 1, 2]]
        );
    }

    #[test]
    fn stage_totals_come_from_the_metrics_text() {
        let text = r#"# TYPE hearsay_stage_seconds histogram
hearsay_stage_seconds_sum{stage="write"} 0.5
hearsay_stage_seconds_count{stage="write"} 100
hearsay_stage_seconds_bucket{stage="write",le="0.001"} 90
hearsay_http_request_duration_seconds_sum{route="/api/v0/p"} 2.0
hearsay_http_request_duration_seconds_count{route="/api/v0/p"} 400
hearsay_http_request_duration_seconds_sum{route="/metrics"} 9.0
"#;
        let totals = stage_totals(text);
        assert_eq!(totals.len(), 2, "{totals:?}");
        assert_eq!(totals["write"], (0.5, 100.0));
        assert_eq!(totals["http"], (2.0, 400.0));
        let before = StageTotals::from([("write".to_owned(), (0.25, 50.0))]);
        let means = stage_means(&before, &totals);
        assert_eq!(means["write"]["n"], 50);
        assert_eq!(means["write"]["mean_us"], 5000.0);
        assert_eq!(means["http"]["mean_us"], 5000.0);
    }

    #[test]
    fn percentiles_of_a_summary() {
        let s = summary((1..=100).map(f64::from).collect());
        assert_eq!(s["n"], 100);
        assert_eq!(s["p50"], 51.0);
        assert_eq!(s["p99"], 99.0);
        assert_eq!(s["max"], 100.0);
    }
}
