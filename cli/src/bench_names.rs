//! `hearsay bench names`: the mesh's name registry (a Raft group of voters
//! inside the nodes) under load, and through the loss of its leader.
//!
//! The bench starts `--voters` node processes on loopback, links every pair
//! (through a user-space proxy that delays every byte by `--link-delay` ms
//! each way, as `bench replication` does), makes them all voters of the
//! registry (`POST /api/v0/registry/init`) and waits until they agree on a
//! leader. Then:
//!
//! - claims: `--clients` clients each claim fresh names
//!   (`bench-{client}-{i}`) in a closed loop for `--duration` seconds,
//!   sending to the nodes in turn (a follower forwards a claim to the
//!   leader); the latency of every 201, and the 409s, 503s, 504s and other
//!   failures, each counted apart;
//! - reads: for [`READ_SECS`] seconds, the same clients read the names they
//!   claimed (`GET /api/v0/names/{name}`, linearizable), the owner checked;
//! - with `--kill-leader`, `--elections` rounds: the leader is killed with
//!   SIGKILL; then (a) the time until a surviving node reports a leader at a
//!   higher term (`GET /api/v0/registry`, polled every 10 ms) and (b) the
//!   time until a claim through a survivor is first answered 201 (claims
//!   sent one after the other, to the survivors in turn); then the killed
//!   node restarts on its data and the bench waits until every node follows
//!   one leader and the restarted node has applied what that leader had.
//!
//! A restarted node listens on new ports and dials every survivor itself,
//! through fresh proxies: the survivors cannot reach it at an address they
//! learned before (that port is gone), so its links are delayed too. Every
//! link's ping round trip is checked before each measurement (a link under
//! twice the delay went around the proxies, and is reported).
//!
//! `HEARSAY_REGISTRY_HEARTBEAT_MS` and `HEARSAY_REGISTRY_ELECTION_MS`, if
//! set where the bench runs, are passed on to the nodes it starts (the
//! launcher hides the rest of the caller's `HEARSAY_*` variables from them).
//! Every loop is bounded in time; every node is killed when the bench ends,
//! fails or is interrupted.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hearsay_node::Config;
use hearsay_node::config::Key;
use hearsay_node::launch::{Launch, NodeProcess};
use hearsay_node::proxy::Proxy;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::bench::summary;

/// Owner of every name the bench claims.
const OWNER: &str = "bench";
/// Seconds of the read phase.
const READ_SECS: f64 = 3.0;
/// Poll period of the new-leader measurement.
const POLL: Duration = Duration::from_millis(10);
/// Most time for the mesh to link up, elect a leader, or take a restarted
/// node back.
const SETTLE: Duration = Duration::from_secs(120);
/// Most time for one kill measurement (new leader, first claim).
const KILL_WAIT: Duration = Duration::from_secs(60);
/// Most time for one claim or read beyond the registry's own budget for
/// it (`client_timeout`, retries included).
const REQUEST_MARGIN: Duration = Duration::from_secs(5);
/// Most time for one `GET /api/v0/registry` or `/api/v0/mesh`.
const STATUS_TIMEOUT: Duration = Duration::from_millis(1000);
/// Most requests one client sends in a phase (the phases are bounded in
/// time too).
const MAX_REQUESTS_PER_CLIENT: usize = 10_000_000;
/// The registry timings a caller may set for the nodes, by config key.
const TIMING_KEYS: [&str; 2] = ["registry_heartbeat_ms", "registry_election_ms"];

#[derive(clap::Args, Debug)]
pub struct NamesArgs {
    /// Nodes to start, every one a voter of the registry: 3 or 5
    #[arg(long, value_name = "N", default_value_t = 3)]
    voters: usize,
    /// One-way delay added to every link between nodes, ms
    #[arg(long, value_name = "MS", default_value_t = 0)]
    link_delay: u64,
    /// Clients claiming at once, each in a closed loop
    #[arg(long, value_name = "N", default_value_t = 16)]
    clients: usize,
    /// Seconds of claiming
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    duration: f64,
    /// Then kill the leader (SIGKILL), time the election and the first
    /// successful claim, restart it; --elections times
    #[arg(long)]
    kill_leader: bool,
    /// Rounds of --kill-leader
    #[arg(long, value_name = "N", default_value_t = 5)]
    elections: usize,
    /// Print one JSON object instead of the tables
    #[arg(long)]
    json: bool,
}

/// Runs the bench; SIGINT or SIGTERM stops it (and its nodes).
pub async fn run(args: NamesArgs) -> anyhow::Result<()> {
    tokio::select! {
        result = bench(args) => result,
        () = hearsay_node::shutdown_signal() => {
            // End a progress line first.
            eprintln!();
            bail!("interrupted: the bench's nodes were killed")
        }
    }
}

/// The nodes of the bench and the proxies on their links.
struct Mesh {
    /// By index; `None` while killed. Declared first: the nodes are killed
    /// before their directory is removed.
    nodes: Vec<Option<NodeProcess>>,
    /// Peer ids, by index (a node keeps its id across restarts).
    peers: Vec<String>,
    proxies: Vec<Proxy>,
    binary: PathBuf,
    delay: Duration,
    /// Config keys passed to every node.
    timing: Vec<(&'static str, String)>,
    dir: tempfile::TempDir,
}

impl Mesh {
    /// Starts `n` nodes, node i linked to every node before it.
    async fn start(
        n: usize,
        delay: Duration,
        timing: Vec<(&'static str, String)>,
    ) -> anyhow::Result<Mesh> {
        let mut mesh = Mesh {
            nodes: Vec::with_capacity(n),
            peers: Vec::with_capacity(n),
            proxies: Vec::new(),
            binary: std::env::current_exe().context("path of the hearsay binary")?,
            delay,
            timing,
            dir: tempfile::Builder::new()
                .prefix("hearsay-bench-names-")
                .tempdir()?,
        };
        for i in 0..n {
            let joins: Vec<usize> = (0..i).collect();
            let node = mesh.launch(i, &joins).await?;
            mesh.peers.push(node.announcement().peer_id.clone());
            mesh.nodes.push(Some(node));
        }
        Ok(mesh)
    }

    /// Starts node `i` on its data directory (new ports), dialling the
    /// nodes `joins`, each through a fresh proxy when links are delayed.
    async fn launch(&mut self, i: usize, joins: &[usize]) -> anyhow::Result<NodeProcess> {
        let mut addrs = Vec::new();
        for &j in joins {
            let announced = self.nodes[j]
                .as_ref()
                .context("a join to a node that is not running")?
                .announcement();
            let addr = announced.addr("tcp").context("tcp address")?.to_owned();
            let peer = announced.peer_id.clone();
            if self.delay.is_zero() {
                addrs.push(addr);
                continue;
            }
            // /ip4/127.0.0.1/tcp/PORT/p2p/PEER
            let parts: Vec<&str> = addr.split('/').collect();
            let (Some(host), Some(port)) = (parts.get(2), parts.get(4)) else {
                bail!("unexpected listen address {addr}");
            };
            let target = format!("{host}:{port}").parse()?;
            let proxy = Proxy::start(target, self.delay).await?;
            addrs.push(format!(
                "/ip4/127.0.0.1/tcp/{}/p2p/{peer}",
                proxy.addr.port()
            ));
            self.proxies.push(proxy);
        }
        let mut launch = Launch::new(&self.binary, self.dir.path().join(format!("n{i}")))
            .set("listen", "/ip4/127.0.0.1/tcp/0")
            .set("http", "127.0.0.1:0")
            .set("region", format!("bench-{i}"))
            // The links are the ones made here: no discovery, no topology
            // dials.
            .set("target_peers", "0")
            .set("degree", "0")
            .start_timeout(Duration::from_secs(120))
            .env("RUST_LOG", "warn");
        for (key, value) in &self.timing {
            launch = launch.set(key, value.clone());
        }
        if !addrs.is_empty() {
            launch = launch.set("join", addrs.join(","));
        }
        Ok(launch.start().await?)
    }

    fn url(&self, i: usize) -> Option<String> {
        self.nodes[i].as_ref().map(|n| n.announcement().url())
    }

    fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_some())
            .collect()
    }

    /// SIGKILL, and the process reaped.
    fn kill(&mut self, i: usize) {
        if let Some(mut node) = self.nodes[i].take() {
            node.kill();
        }
    }

    /// Restarts killed node `i`, linked to every running node.
    async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        let joins = self.running();
        let node = self.launch(i, &joins).await?;
        if node.announcement().peer_id != self.peers[i] {
            bail!("node {i} restarted with another peer id");
        }
        self.nodes[i] = Some(node);
        Ok(())
    }

    /// Waits until every running node has a link to every other one with
    /// a ping answered on it; the round trips, ms.
    async fn links(&self, http: &reqwest::Client) -> anyhow::Result<Vec<f64>> {
        let running = self.running();
        let started = Instant::now();
        let mut missing = String::new();
        while started.elapsed() < SETTLE {
            let mut rtts = Vec::new();
            missing.clear();
            for &i in &running {
                let url = self.url(i).unwrap_or_default();
                let peers = match get_body(http, &url, "/api/v0/mesh").await {
                    Ok(body) => body["peers"].as_array().cloned().unwrap_or_default(),
                    Err(e) => {
                        missing = format!("node {i}: {e:#}");
                        break;
                    }
                };
                for &j in running.iter().filter(|&&j| j != i) {
                    let rtt = peers
                        .iter()
                        .find(|p| p["peer_id"] == self.peers[j].as_str() && p["connected"] == true)
                        .and_then(|p| p["rtt_ms"].as_f64());
                    match rtt {
                        Some(ms) => rtts.push(ms),
                        None => missing = format!("no link with a ping answered from {i} to {j}"),
                    }
                }
            }
            if missing.is_empty() {
                return Ok(rtts);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("the nodes did not link up within {SETTLE:?}: {missing}")
    }

    /// Waits until every running node names the same leader at the same
    /// term, and the leader says it leads; its index and the term.
    async fn leader(&self, http: &reqwest::Client) -> anyhow::Result<(usize, u64)> {
        let started = Instant::now();
        let mut seen = String::new();
        while started.elapsed() < SETTLE {
            let mut views = Vec::new();
            for i in self.running() {
                let url = self.url(i).unwrap_or_default();
                match registry_view(http, &url).await {
                    Ok(v) => views.push((i, v)),
                    Err(e) => seen = format!("node {i}: {e:#}"),
                }
            }
            if views.len() == self.running().len() {
                seen = format!("{views:?}");
                let first = &views[0].1;
                let agreed = views.iter().all(|(_, v)| {
                    v.leader.is_some() && v.leader == first.leader && v.term == first.term
                });
                let leader = first
                    .leader
                    .as_ref()
                    .and_then(|l| self.peers.iter().position(|p| p == l));
                if let (true, Some(l)) = (agreed, leader)
                    && views.iter().any(|(i, v)| *i == l && v.state == "Leader")
                {
                    return Ok((l, first.term));
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("the voters did not agree on a leader within {SETTLE:?}; last seen: {seen}")
    }

    /// Waits until node `i` has applied `index`.
    async fn caught_up(&self, http: &reqwest::Client, i: usize, index: u64) -> anyhow::Result<()> {
        let url = self.url(i).context("node not running")?;
        let started = Instant::now();
        while started.elapsed() < SETTLE {
            if let Ok(v) = registry_view(http, &url).await
                && v.applied.is_some_and(|a| a >= index)
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("node {i} did not apply index {index} within {SETTLE:?}")
    }
}

/// What `GET /api/v0/registry` says.
#[derive(Debug)]
struct View {
    state: String,
    leader: Option<String>,
    term: u64,
    applied: Option<u64>,
}

async fn get_body(http: &reqwest::Client, url: &str, path: &str) -> anyhow::Result<Value> {
    let response = http
        .get(format!("{url}{path}"))
        .timeout(STATUS_TIMEOUT)
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    if !status.is_success() {
        bail!("{path}: {status}: {body}");
    }
    Ok(body["body"].clone())
}

async fn registry_view(http: &reqwest::Client, url: &str) -> anyhow::Result<View> {
    let body = get_body(http, url, "/api/v0/registry").await?;
    Ok(View {
        state: body["state"].as_str().unwrap_or_default().to_owned(),
        leader: body["leader"].as_str().map(str::to_owned),
        term: body["term"].as_u64().unwrap_or(0),
        applied: body["applied_index"].as_u64(),
    })
}

/// The answer to one claim, by status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// 201
    Claimed,
    /// 409
    Taken,
    /// 503
    Unavailable,
    /// 504
    Unknown,
    /// Any other status, or no answer.
    Failed,
}

async fn claim(http: &reqwest::Client, url: &str, name: &str) -> Answer {
    let sent = http
        .post(format!("{url}/api/v0/names"))
        .json(&json!({"name": name, "owner": OWNER}))
        .send()
        .await;
    let Ok(response) = sent else {
        return Answer::Failed;
    };
    let status = response.status();
    // Read the body so that the connection goes back to the pool.
    if response.bytes().await.is_err() {
        return Answer::Failed;
    }
    match status {
        StatusCode::CREATED => Answer::Claimed,
        StatusCode::CONFLICT => Answer::Taken,
        StatusCode::SERVICE_UNAVAILABLE => Answer::Unavailable,
        StatusCode::GATEWAY_TIMEOUT => Answer::Unknown,
        _ => Answer::Failed,
    }
}

/// One client's claims.
#[derive(Debug, Default)]
struct Claims {
    /// Latency of each 201, ms.
    ms: Vec<f64>,
    names: Vec<String>,
    taken: usize,
    unavailable: usize,
    unknown: usize,
    failed: usize,
}

/// One client's reads.
#[derive(Debug, Default)]
struct Reads {
    ms: Vec<f64>,
    wrong_owner: usize,
    unavailable: usize,
    failed: usize,
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Shows the time left of a phase on stderr until `end`.
async fn progress(what: &str, start: Instant, end: Instant, secs: f64) {
    while Instant::now() < end {
        eprint!(
            "\r  {what}: {:.0} of {secs:.0} s",
            start.elapsed().as_secs_f64()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprint!("\r{:60}\r", "");
}

/// `clients` closed loops of claims of fresh names for `secs`, client c's
/// i-th to node `(c + i) % n`; per client, and the wall time.
async fn claim_phase(
    http: &reqwest::Client,
    urls: &Arc<Vec<String>>,
    clients: usize,
    secs: f64,
    quiet: bool,
) -> anyhow::Result<(Vec<Claims>, f64)> {
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let (http, urls) = (http.clone(), urls.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Claims::default();
            for i in 0..MAX_REQUESTS_PER_CLIENT {
                if Instant::now() >= end {
                    break;
                }
                let name = format!("bench-{c}-{i}");
                let sent = Instant::now();
                match claim(&http, &urls[(c + i) % urls.len()], &name).await {
                    Answer::Claimed => {
                        out.ms.push(ms_since(sent));
                        out.names.push(name);
                    }
                    Answer::Taken => out.taken += 1,
                    Answer::Unavailable => out.unavailable += 1,
                    Answer::Unknown => out.unknown += 1,
                    Answer::Failed => {
                        out.failed += 1;
                        // No hot loop against a node that refuses.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            out
        }));
    }
    if !quiet {
        progress("claiming", start, end, secs).await;
    }
    let mut out = Vec::with_capacity(clients);
    for t in tasks {
        out.push(t.await?);
    }
    Ok((out, start.elapsed().as_secs_f64()))
}

/// Each client reads the names it claimed, in turn, from the nodes in
/// turn, for `secs`; the owner must be [`OWNER`].
async fn read_phase(
    http: &reqwest::Client,
    urls: &Arc<Vec<String>>,
    claimed: Vec<Vec<String>>,
    secs: f64,
    quiet: bool,
) -> anyhow::Result<(Vec<Reads>, f64)> {
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let mut tasks = Vec::with_capacity(claimed.len());
    for (c, names) in claimed.into_iter().enumerate() {
        let (http, urls) = (http.clone(), urls.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Reads::default();
            if names.is_empty() {
                return out;
            }
            for i in 0..MAX_REQUESTS_PER_CLIENT {
                if Instant::now() >= end {
                    break;
                }
                let url = &urls[(c + i) % urls.len()];
                let name = &names[i % names.len()];
                let sent = Instant::now();
                let answer = http.get(format!("{url}/api/v0/names/{name}")).send().await;
                let (status, body) = match answer {
                    Ok(r) => (r.status(), r.json::<Value>().await),
                    Err(_) => {
                        out.failed += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let took = ms_since(sent);
                match (status, body) {
                    (StatusCode::OK, Ok(body)) if body["body"]["owner"] == OWNER => {
                        out.ms.push(took)
                    }
                    (StatusCode::OK, _) => out.wrong_owner += 1,
                    (StatusCode::SERVICE_UNAVAILABLE, _) => out.unavailable += 1,
                    _ => out.failed += 1,
                }
            }
            out
        }));
    }
    if !quiet {
        progress("reading", start, end, secs).await;
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await?);
    }
    Ok((out, start.elapsed().as_secs_f64()))
}

/// (a): polls the survivors every 10 ms until one names a leader other
/// than `killed` at a term above `term`; ms since `t0`, that leader, term.
async fn new_leader(
    http: &reqwest::Client,
    survivors: &[String],
    killed: &str,
    term: u64,
    t0: Instant,
) -> anyhow::Result<(f64, String, u64)> {
    let mut next = t0;
    let most = (KILL_WAIT.as_millis() / POLL.as_millis()) as usize + 1;
    for _ in 0..most {
        for url in survivors {
            if let Ok(v) = registry_view(http, url).await
                && v.term > term
                && let Some(leader) = v.leader.filter(|l| l != killed)
            {
                return Ok((ms_since(t0), leader, v.term));
            }
        }
        if t0.elapsed() >= KILL_WAIT {
            break;
        }
        next += POLL;
        tokio::time::sleep_until(next.into()).await;
    }
    bail!("no survivor reported a new leader within {KILL_WAIT:?} of the kill")
}

/// (b): claims fresh names (`{prefix}-{k}`) through the survivors in turn,
/// one after the other, until one is answered 201; ms since `t0`, claims
/// sent.
async fn first_claim(
    http: &reqwest::Client,
    survivors: &[String],
    prefix: &str,
    t0: Instant,
) -> anyhow::Result<(f64, usize)> {
    for k in 0..MAX_REQUESTS_PER_CLIENT {
        if t0.elapsed() >= KILL_WAIT {
            break;
        }
        let name = format!("{prefix}-{k}");
        match claim(http, &survivors[k % survivors.len()], &name).await {
            Answer::Claimed => return Ok((ms_since(t0), k + 1)),
            Answer::Failed => tokio::time::sleep(Duration::from_millis(10)).await,
            _ => {}
        }
    }
    bail!("no claim through a survivor succeeded within {KILL_WAIT:?} of the kill")
}

/// `{"n", "min", "median", "max"}` of `xs`.
fn min_median_max(xs: &[f64]) -> Value {
    let mut xs = xs.to_vec();
    xs.sort_by(|a, b| a.total_cmp(b));
    let median = match xs.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    };
    json!({
        "n": xs.len(),
        "min": round1(xs.first().copied().unwrap_or(f64::NAN)),
        "median": round1(median),
        "max": round1(xs.last().copied().unwrap_or(f64::NAN)),
    })
}

/// The end of a peer id, enough to tell the nodes apart.
fn short(peer: &str) -> String {
    format!("…{}", &peer[peer.len().saturating_sub(6)..])
}

/// Links whose ping round trip is under twice the one-way delay went
/// around the proxies: counts them (and warns).
fn undelayed(rtts: &[f64], delay_ms: u64, quiet: bool, when: &str) -> usize {
    if delay_ms == 0 {
        return 0;
    }
    let bad = rtts
        .iter()
        .filter(|&&r| r < 2.0 * delay_ms as f64 * 0.95)
        .count();
    if bad > 0 && !quiet {
        eprintln!(
            "warning ({when}): {bad} link(s) with a ping round trip under twice the link delay: they bypass the proxies"
        );
    }
    bad
}

fn command_line() -> String {
    std::env::args()
        .map(|a| {
            if a.is_empty() || a.contains(char::is_whitespace) {
                format!("'{a}'")
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

async fn bench(args: NamesArgs) -> anyhow::Result<()> {
    let valid = matches!(args.voters, 3 | 5)
        && (1..=1024).contains(&args.clients)
        && args.duration.is_finite()
        && args.duration > 0.0
        && args.duration <= 3600.0
        && args.link_delay <= 10_000
        && (1..=100).contains(&args.elections);
    if !valid {
        bail!(
            "--voters must be 3 or 5, --clients in 1..=1024, --duration in (0, 3600], --link-delay at most 10000 and --elections in 1..=100"
        );
    }
    let quiet = args.json;
    let command = command_line();
    // The registry's timings: the caller's HEARSAY_REGISTRY_* for these
    // keys, passed on as flags (checked here), else the nodes' defaults.
    let mut config = Config::default();
    let mut timing = Vec::new();
    for key in TIMING_KEYS {
        let var = Key::find(key)?.env_var();
        if let Ok(value) = std::env::var(&var) {
            config
                .set(key, &value)
                .with_context(|| format!("{var}={value}"))?;
            timing.push((key, value));
        }
    }
    // The registry's timings as the nodes (this same binary) derive them.
    let registry = config
        .validate(std::path::Path::new("."))
        .context("the registry timings")?
        .registry;
    let ms = |d: Duration| d.as_millis() as u64;

    if !quiet {
        eprintln!("  starting {} nodes...", args.voters);
    }
    let mut mesh = Mesh::start(args.voters, Duration::from_millis(args.link_delay), timing).await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients + 8)
        .timeout(registry.client_timeout + REQUEST_MARGIN)
        .build()?;
    let setup_rtts = mesh.links(&http).await?;
    let mut undelayed_links = undelayed(&setup_rtts, args.link_delay, quiet, "set-up");
    let first = mesh.url(0).context("node 0")?;
    let voters: Vec<String> = mesh.peers.clone();
    let answer = http
        .post(format!("{first}/api/v0/registry/init"))
        .json(&json!({ "voters": voters }))
        .send()
        .await?;
    if !answer.status().is_success() {
        let status = answer.status();
        bail!(
            "setting up the registry: {status}: {}",
            answer.text().await.unwrap_or_default()
        );
    }
    let (_, _) = mesh.leader(&http).await?;
    // Warm-up, not measured: a claim through every node.
    for i in 0..args.voters {
        let url = mesh.url(i).context("node")?;
        let (_, sent) = first_claim(
            &http,
            std::slice::from_ref(&url),
            &format!("bench-warmup-{i}"),
            Instant::now(),
        )
        .await
        .with_context(|| format!("warm-up claim through node {i}"))?;
        if sent > 1 && !quiet {
            eprintln!("  warm-up through node {i}: {sent} claims sent before a 201");
        }
    }

    let urls: Arc<Vec<String>> = Arc::new((0..args.voters).filter_map(|i| mesh.url(i)).collect());
    let (claims, claim_secs) =
        claim_phase(&http, &urls, args.clients, args.duration, quiet).await?;
    let mut claim_ms = Vec::new();
    let (mut taken, mut unavailable, mut unknown, mut failed) = (0, 0, 0, 0);
    let mut claimed_names = Vec::with_capacity(claims.len());
    for c in claims {
        claim_ms.extend(c.ms);
        taken += c.taken;
        unavailable += c.unavailable;
        unknown += c.unknown;
        failed += c.failed;
        claimed_names.push(c.names);
    }
    let claimed = claim_ms.len();
    let (reads, read_secs) = read_phase(&http, &urls, claimed_names, READ_SECS, quiet).await?;
    let mut read_ms = Vec::new();
    let (mut wrong_owner, mut read_unavailable, mut read_failed) = (0, 0, 0);
    for r in reads {
        read_ms.extend(r.ms);
        wrong_owner += r.wrong_owner;
        read_unavailable += r.unavailable;
        read_failed += r.failed;
    }
    let reads_done = read_ms.len();

    let mut rounds = Vec::new();
    if args.kill_leader {
        for round in 1..=args.elections {
            let (leader, term) = mesh.leader(&http).await?;
            let rtts = mesh.links(&http).await?;
            let bad = undelayed(&rtts, args.link_delay, quiet, &format!("round {round}"));
            undelayed_links += bad;
            let killed = mesh.peers[leader].clone();
            if !quiet {
                eprint!(
                    "\r  round {round}/{}: killing the leader {}...",
                    args.elections,
                    short(&killed)
                );
            }
            mesh.kill(leader);
            let t0 = Instant::now();
            let survivors: Vec<String> = mesh
                .running()
                .into_iter()
                .filter_map(|i| mesh.url(i))
                .collect();
            let prefix = format!("bench-elect-{round}");
            let (elected, first) = tokio::join!(
                new_leader(&http, &survivors, &killed, term, t0),
                first_claim(&http, &survivors, &prefix, t0)
            );
            let (elected_ms, new_leader_peer, new_term) = elected?;
            let (first_claim_ms, claims_sent) = first?;
            if !quiet {
                eprint!(
                    "\r  round {round}/{}: restarting the killed node...     ",
                    args.elections
                );
            }
            let restarted = Instant::now();
            mesh.restart(leader).await?;
            let (now_leader, _) = mesh.leader(&http).await?;
            let target = registry_view(&http, &mesh.url(now_leader).context("leader")?)
                .await?
                .applied
                .unwrap_or(0);
            mesh.caught_up(&http, leader, target).await?;
            let rejoin_ms = ms_since(restarted);
            rounds.push(json!({
                "round": round,
                "killed": killed,
                "term_before": term,
                "new_leader": new_leader_peer,
                "term_after": new_term,
                "new_leader_ms": round1(elected_ms),
                "first_claim_ms": round1(first_claim_ms),
                "claims_sent": claims_sent,
                "link_rtt_ms_min": round1(rtts.iter().copied().fold(f64::INFINITY, f64::min)),
                "undelayed_links": bad,
                "restart_to_caught_up_ms": round1(rejoin_ms),
            }));
        }
        if !quiet {
            eprint!("\r{:70}\r", "");
        }
    }
    let column =
        |key: &str| -> Vec<f64> { rounds.iter().filter_map(|r| r[key].as_f64()).collect() };
    let elections = args.kill_leader.then(|| {
        json!({
            "rounds": rounds,
            "new_leader_ms": min_median_max(&column("new_leader_ms")),
            "first_claim_ms": min_median_max(&column("first_claim_ms")),
            "restart_to_caught_up_ms": min_median_max(&column("restart_to_caught_up_ms")),
        })
    });
    let report = json!({
        "command": command,
        "voters": args.voters,
        "link_delay_ms": args.link_delay,
        "registry_heartbeat_ms": ms(registry.heartbeat_interval),
        "registry_election_timeout_ms": [
            ms(registry.election_timeout_min),
            ms(registry.election_timeout_max),
        ],
        "link_rtt_ms": summary(setup_rtts),
        "undelayed_links": undelayed_links,
        "clients": args.clients,
        "claims": {
            "duration_s": (claim_secs * 1000.0).round() / 1000.0,
            "claimed": claimed,
            "taken": taken,
            "unavailable": unavailable,
            "unknown": unknown,
            "failed": failed,
            "claims_per_s": round1(claimed as f64 / claim_secs.max(1e-9)),
            "ms": summary(claim_ms),
        },
        "reads": {
            "duration_s": (read_secs * 1000.0).round() / 1000.0,
            "read": reads_done,
            "wrong_owner": wrong_owner,
            "unavailable": read_unavailable,
            "failed": read_failed,
            "reads_per_s": round1(reads_done as f64 / read_secs.max(1e-9)),
            "ms": summary(read_ms),
        },
        "elections": elections,
    });
    drop(mesh);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    print_report(&report);
    Ok(())
}

fn print_report(report: &Value) {
    let (c, r) = (&report["claims"], &report["reads"]);
    println!(
        "command: {}",
        report["command"].as_str().unwrap_or_default()
    );
    println!(
        "{} voters on loopback, link delay {} ms each way (ping round trip between nodes p50 {} ms, max {} ms; {} links under twice the delay); registry heartbeat {} ms, election timeout {}-{} ms",
        report["voters"],
        report["link_delay_ms"],
        report["link_rtt_ms"]["p50"],
        report["link_rtt_ms"]["max"],
        report["undelayed_links"],
        report["registry_heartbeat_ms"],
        report["registry_election_timeout_ms"][0],
        report["registry_election_timeout_ms"][1],
    );
    println!(
        "claims: {} clients for {} s, nodes in turn: {} claimed ({}/s); {} taken (409), {} unavailable (503), {} unknown (504), {} failed",
        report["clients"],
        c["duration_s"],
        c["claimed"],
        c["claims_per_s"],
        c["taken"],
        c["unavailable"],
        c["unknown"],
        c["failed"]
    );
    println!(
        "reads: {} clients for {} s, nodes in turn: {} linearizable reads ({}/s); {} wrong owner, {} unavailable (503), {} failed",
        report["clients"],
        r["duration_s"],
        r["read"],
        r["reads_per_s"],
        r["wrong_owner"],
        r["unavailable"],
        r["failed"]
    );
    println!("| what | n | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|---|");
    for (name, s) in [
        ("claim (201), ms", &c["ms"]),
        ("linearizable read (200), ms", &r["ms"]),
    ] {
        println!(
            "| {name} | {} | {} | {} | {} | {} |",
            s["n"], s["p50"], s["p90"], s["p99"], s["max"]
        );
    }
    let e = &report["elections"];
    let Some(rounds) = e["rounds"].as_array() else {
        return;
    };
    println!();
    println!(
        "leader killed with SIGKILL, {} rounds: time from the kill until a survivor reports a new leader at a higher term (polled every 10 ms), and until a claim through a survivor is first answered 201; then the killed node restarts and catches up",
        rounds.len()
    );
    println!(
        "| round | killed | term | new leader seen, ms | first claim 201, ms | claims sent | link rtt min, ms | restart to caught up, ms |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for round in rounds {
        println!(
            "| {} | {} | {} → {} | {} | {} | {} | {} | {} |",
            round["round"],
            short(round["killed"].as_str().unwrap_or_default()),
            round["term_before"],
            round["term_after"],
            round["new_leader_ms"],
            round["first_claim_ms"],
            round["claims_sent"],
            round["link_rtt_ms_min"],
            round["restart_to_caught_up_ms"]
        );
    }
    let mmm = |s: &Value| format!("{} / {} / {}", s["min"], s["median"], s["max"]);
    println!(
        "| min / median / max | | | {} | {} | | | {} |",
        mmm(&e["new_leader_ms"]),
        mmm(&e["first_claim_ms"]),
        mmm(&e["restart_to_caught_up_ms"])
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_median_max_of_odd_even_and_none() {
        let s = min_median_max(&[5.0, 1.0, 3.0]);
        assert_eq!(
            (s["min"].clone(), s["median"].clone(), s["max"].clone()),
            (json!(1.0), json!(3.0), json!(5.0))
        );
        assert_eq!(min_median_max(&[4.0, 1.0, 2.0, 3.0])["median"], 2.5);
        assert_eq!(min_median_max(&[])["n"], 0);
    }

    #[test]
    fn links_under_twice_the_delay_are_counted() {
        assert_eq!(undelayed(&[0.2, 0.3], 0, true, "t"), 0);
        assert_eq!(undelayed(&[101.0, 0.4, 99.0], 50, true, "t"), 1);
    }
}
