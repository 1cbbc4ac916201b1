//! Benchmarks of running nodes (real processes, loopback, sled on disk).
//!
//! ```text
//! cargo build --release -p hearsay-cli
//! cargo run --release --example bench -- replication [--rate 50] [--secs 20] [--link-delay-ms 0]
//! cargo run --release --example bench -- writes [--secs 10] [--clients 1,16,64]
//! cargo run --release --example bench -- events [--posts 5000] [--rate 50] [--secs 20]
//! cargo run --release --example bench -- heal [--nodes 5] [--degree 2] [--rate 20] [--secs 10]
//! cargo run --release --example bench -- router [--requests 2000]
//! ```
//!
//! `replication`: a chain A–B–C (B joins A, C joins B, discovery off so the
//! chain stays a chain). A client posts at A at a steady rate; pollers read
//! the newest posts at B and at C every millisecond and note when each id is
//! first seen. Reports the delay from A's acknowledgement of the POST to
//! first sight at B (one hop, the baseline) and at C (two hops), as median,
//! p90, p99 and max, plus each node's own measurement (origin clock to apply;
//! all nodes share this machine's clock). `--link-delay-ms D` runs each link
//! of the chain through a user-space TCP proxy that delays every byte by D ms
//! each way (a WAN stand-in: kernel netem is not available here).
//!
//! `writes`: one node; N concurrent clients POST for a fixed time; reports
//! acknowledged writes per second and the latency distribution, per N.
//!
//! `events`: two nodes A–B. Replay: `--posts` posts at A, then one stream
//! `from=start` at A read to its `ready` event, against paging the same posts
//! with `GET /api/v0/p?limit=500` (the baseline, same run). Live: streams at
//! A and at B follow the head while a client posts at A at `--rate` for
//! `--secs`; reports the delay from A's acknowledgement to the event at A
//! (the stream's own cost) and at B (replication plus the stream).
//!
//! `heal`: a ring of `--nodes` (each joins its predecessor, the last also
//! the first; discovery off; topology at `--degree`). Writes go round-robin
//! to the nodes at `--rate` for `--secs` with every node alive (the
//! baseline), then one node is killed with SIGKILL and the same writes go
//! to the survivors for `--secs` more. Reports how long each survivor took
//! to mark the dead node suspect and down (from `GET /api/v0/nodes`), and
//! the delay from each write's acknowledgement to its visibility at every
//! survivor, before and after the kill.
//!
//! `router`: two nodes and a `hearsay router` joined to them. One client
//! reads `GET /api/v0/p?limit=20` `--requests` times directly from the node
//! the router picks, then the same through the router (the baseline and
//! the router, same run, interleaved in blocks of 100), and reports the
//! latency of each.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hearsay_node::client::Client;
use hearsay_node::launch::{Launch, NodeProcess};
use tokio::sync::Mutex;

use hearsay_node::proxy;

fn binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/examples/bench -> target/<profile>/hearsay
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .context("exe path")?
        .join("hearsay");
    if !bin.exists() {
        bail!(
            "{} not found: run `cargo build --release -p hearsay-cli` first",
            bin.display()
        );
    }
    Ok(bin)
}

/// Starts a node in `DIR/region`, discovery off, its client pooling up to 256
/// idle connections (the write benchmark's clients share it).
async fn start(
    dir: &Path,
    region: &str,
    join: Option<&str>,
) -> anyhow::Result<(NodeProcess, Client)> {
    // No topology dials either: the chain must stay a chain.
    start_with_degree(dir, region, join, 0).await
}

/// [`start`] with the topology machine keeping `degree` links.
async fn start_with_degree(
    dir: &Path,
    region: &str,
    join: Option<&str>,
    degree: usize,
) -> anyhow::Result<(NodeProcess, Client)> {
    let mut launch = Launch::new(binary()?, dir.join(region))
        .set("listen", "/ip4/127.0.0.1/tcp/0")
        .set("http", "127.0.0.1:0")
        .set("region", region)
        .set("target_peers", "0")
        .set("degree", degree.to_string())
        .env("RUST_LOG", "warn");
    if let Some(j) = join {
        launch = launch.set("join", j);
    }
    let node = launch.start().await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(10))
        .build()?;
    let client = Client::with_http(&node.announcement().url(), http);
    Ok((node, client))
}

fn summary(name: &str, mut xs: Vec<f64>) -> String {
    if xs.is_empty() {
        return format!("{name}: no samples");
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| xs[((xs.len() - 1) as f64 * p).round() as usize];
    format!(
        "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
        xs.len(),
        q(0.5),
        q(0.9),
        q(0.99),
        xs[xs.len() - 1]
    )
}

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.into())
}

async fn wait_peers(clients: &[&Client]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut ok = true;
        for c in clients {
            ok &= c.stats().await?.peers >= 1;
        }
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("mesh did not connect");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn replication(args: &[String]) -> anyhow::Result<()> {
    let rate: f64 = arg(args, "--rate", "50").parse()?;
    let secs: f64 = arg(args, "--secs", "20").parse()?;
    let dir = tempfile::tempdir()?;
    let link_delay = Duration::from_millis(arg(args, "--link-delay-ms", "0").parse()?);
    // With a link delay, each link of the chain runs through a delaying proxy.
    let mut proxies = Vec::new();
    let mut join_addr = async |p: &NodeProcess| -> anyhow::Result<String> {
        let addr = p
            .announcement()
            .addr("tcp")
            .context("tcp address")?
            .to_owned();
        if link_delay.is_zero() {
            return Ok(addr);
        }
        let parts: Vec<&str> = addr.split('/').collect();
        let target: std::net::SocketAddr = format!("{}:{}", parts[2], parts[4]).parse()?;
        let proxy = proxy::Proxy::start(target, link_delay).await?;
        let via = format!(
            "/ip4/127.0.0.1/tcp/{}/p2p/{}",
            proxy.addr.port(),
            p.announcement().peer_id
        );
        proxies.push(proxy);
        Ok(via)
    };
    let (a, a_client) = start(dir.path(), "a", None).await?;
    let (b, b_client) = start(dir.path(), "b", Some(&join_addr(&a).await?)).await?;
    let (_c, c_client) = start(dir.path(), "c", Some(&join_addr(&b).await?)).await?;
    let clients = [&a_client, &b_client, &c_client];
    wait_peers(&clients).await?;
    let mut peers = Vec::new();
    for c in clients {
        peers.push(c.stats().await?.peers);
    }
    eprintln!(
        "chain up (peers: A {}, B {}, C {}); posting at {rate}/s for {secs} s",
        peers[0], peers[1], peers[2]
    );
    if peers[0] != 1 || peers[2] != 1 {
        bail!("not a chain: A and C must each have exactly one peer (B)");
    }
    // Warm-up, not measured: one post must reach C, so that gossipsub has
    // exchanged subscriptions along the chain before the clock starts.
    let warm_id = a_client
        .create_post(None, "warm-up", None)
        .await?
        .id
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while c_client.post(&warm_id).await?.is_none() {
        if Instant::now() > deadline {
            bail!("the warm-up post did not reach C");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // id -> (sent, acked) at A; id -> first seen at B / C.
    let sent: Arc<Mutex<HashMap<String, (Instant, Instant)>>> = Arc::default();
    let seen: [Arc<Mutex<HashMap<String, Instant>>>; 2] = [Arc::default(), Arc::default()];
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut pollers = Vec::new();
    for (i, client) in clients[1..].iter().enumerate() {
        let (client, seen, stop) = ((*client).clone(), seen[i].clone(), stop.clone());
        pollers.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(page) = client.posts(8, None).await {
                    let now = Instant::now();
                    let mut seen = seen.lock().await;
                    for p in page {
                        seen.entry(p.id.to_string()).or_insert(now);
                    }
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }));
    }
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut tick = tokio::time::interval(interval);
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut n = 0;
    while Instant::now() < end {
        tick.tick().await;
        n += 1;
        let t0 = Instant::now();
        let post = a_client
            .create_post(Some("bench"), &format!("m{n}"), None)
            .await?;
        let acked = Instant::now();
        sent.lock().await.insert(post.id.to_string(), (t0, acked));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for p in pollers {
        p.await?;
    }
    let sent = sent.lock().await;
    let mut ack = Vec::new();
    let mut hop: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut missing = [0usize; 2];
    for (id, (t0, acked)) in sent.iter() {
        ack.push((*acked - *t0).as_secs_f64() * 1e3);
        for i in 0..2 {
            match seen[i].lock().await.get(id) {
                Some(t) => hop[i].push(t.saturating_duration_since(*acked).as_secs_f64() * 1e3),
                None => missing[i] += 1,
            }
        }
    }
    println!(
        "writes: {} at {rate}/s; not seen within 2 s of the end: B {}, C {}",
        sent.len(),
        missing[0],
        missing[1]
    );
    println!("| measure (ms) | n | median | p90 | p99 | max |");
    println!("|---|---|---|---|---|---|");
    println!("{}", summary("POST acknowledged at A", ack));
    println!(
        "{}",
        summary("ack at A -> visible at B (1 hop, baseline)", hop[0].clone())
    );
    println!(
        "{}",
        summary("ack at A -> visible at C (2 hops)", hop[1].clone())
    );
    for (name, client) in [("B", &b_client), ("C", &c_client)] {
        let s = client.stats().await?;
        let metrics = client.metrics().await?;
        let applied: Vec<&str> = metrics
            .lines()
            .filter(|l| {
                l.starts_with("hearsay_deltas_applied_total")
                    || l.starts_with("hearsay_deltas_duplicate_total")
            })
            .collect();
        println!(
            "node {name} own replication delay (origin clock to apply, last 2048): {}; {}",
            s.other["replication_delay_ms"],
            applied.join(", ")
        );
    }
    Ok(())
}

async fn writes(args: &[String]) -> anyhow::Result<()> {
    let secs: f64 = arg(args, "--secs", "10").parse()?;
    let clients: Vec<usize> = arg(args, "--clients", "1,16,64")
        .split(',')
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    println!(
        "| concurrent clients | acknowledged writes/s | median ms | p90 ms | p99 ms | max ms | writes per flush (mean) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for n in clients {
        let dir = tempfile::tempdir()?;
        let (_node, client) = start(dir.path(), "w", None).await?;
        let end = Instant::now() + Duration::from_secs_f64(secs);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..n {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut i = 0;
                while Instant::now() < end {
                    i += 1;
                    let t0 = Instant::now();
                    let r = client.create_post(None, &format!("c{c} m{i}"), None).await;
                    if r.is_ok() {
                        lat.push(t0.elapsed().as_secs_f64() * 1e3);
                    }
                }
                lat
            }));
        }
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await?);
        }
        let elapsed = started.elapsed().as_secs_f64();
        let metrics = client.metrics().await?;
        let metric = |name: &str| {
            metrics
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        };
        let per_flush = match (
            metric("hearsay_group_commit_size_sum"),
            metric("hearsay_group_commit_size_count"),
        ) {
            (Some(s), Some(c)) if c > 0.0 => format!("{:.1}", s / c),
            _ => "-".into(),
        };
        let count = lat.len();
        let row = summary("", lat);
        let cols: Vec<&str> = row.split('|').map(str::trim).collect();
        println!(
            "| {n} | {:.0} | {} | {} | {} | {} | {per_flush} |",
            count as f64 / elapsed,
            cols[3],
            cols[4],
            cols[5],
            cols[6]
        );
    }
    Ok(())
}

/// Reads `stream` until `ready`, counting post events.
async fn until_ready(stream: &mut hearsay_node::client::EventStream) -> anyhow::Result<usize> {
    let mut posts = 0;
    while let Some(e) = stream.next().await? {
        match e.event.as_str() {
            "post" => posts += 1,
            "ready" => return Ok(posts),
            _ => {}
        }
    }
    bail!("stream ended before ready")
}

async fn events(args: &[String]) -> anyhow::Result<()> {
    let posts: usize = arg(args, "--posts", "5000").parse()?;
    let rate: f64 = arg(args, "--rate", "50").parse()?;
    let secs: f64 = arg(args, "--secs", "20").parse()?;
    let dir = tempfile::tempdir()?;
    let (a_proc, a) = start(dir.path(), "a", None).await?;
    let a_addr = a_proc.announcement().addr("tcp").context("tcp address")?;
    let (_b_proc, b) = start(dir.path(), "b", Some(a_addr)).await?;
    wait_peers(&[&a, &b]).await?;

    // Replay.
    let writers = 16;
    let per = posts.div_ceil(writers);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                a.create_post(Some("bench"), &format!("replay {w}/{i}"), None)
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let total = per * writers;
    let started = Instant::now();
    let mut stream = a.events(Some("start"), &[]).await?;
    let streamed = until_ready(&mut stream).await?;
    let stream_s = started.elapsed().as_secs_f64();
    drop(stream);
    let started = Instant::now();
    let mut paged = 0;
    let mut before: Option<String> = None;
    loop {
        let page = a.posts(500, before.as_deref()).await?;
        paged += page.len();
        match page.last() {
            Some(p) => before = Some(p.id.to_string()),
            None => break,
        }
    }
    let page_s = started.elapsed().as_secs_f64();
    println!("replay of {total} posts at one node:");
    println!("| read | posts | seconds | posts/s |");
    println!("|---|---|---|---|");
    println!(
        "| event stream from=start to `ready` | {streamed} | {stream_s:.2} | {:.0} |",
        streamed as f64 / stream_s
    );
    println!(
        "| GET /api/v0/p, pages of 500 (baseline) | {paged} | {page_s:.2} | {:.0} |",
        paged as f64 / page_s
    );

    // Live.
    let seen: Arc<Mutex<HashMap<(char, String), Instant>>> = Arc::default();
    let mut readers = Vec::new();
    for (name, client) in [('a', a.clone()), ('b', b.clone())] {
        let mut stream = client.events(None, &[("kind", "post")]).await?;
        until_ready(&mut stream).await?;
        let seen = seen.clone();
        readers.push(tokio::spawn(async move {
            while let Ok(Some(e)) = stream.next().await {
                if e.event == "post"
                    && let Some(id) = e.json()["post"]["id"].as_str()
                {
                    seen.lock()
                        .await
                        .insert((name, id.to_owned()), Instant::now());
                }
            }
        }));
    }
    let mut acked: Vec<(String, Instant)> = Vec::new();
    let n = (rate * secs) as usize;
    let period = Duration::from_secs_f64(1.0 / rate);
    let start_at = Instant::now();
    for i in 0..n {
        tokio::time::sleep_until((start_at + period * i as u32).into()).await;
        let post = a
            .create_post(Some("bench"), &format!("live {i}"), None)
            .await?;
        acked.push((post.id.to_string(), Instant::now()));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen = seen.lock().await;
    let mut missing = 0;
    let mut delays = (Vec::new(), Vec::new());
    for (id, at) in &acked {
        for (name, out) in [('a', &mut delays.0), ('b', &mut delays.1)] {
            match seen.get(&(name, id.clone())) {
                Some(t) => out.push(t.saturating_duration_since(*at).as_secs_f64() * 1e3),
                None => missing += 1,
            }
        }
    }
    println!("\nlive: {n} posts at A, {rate}/s; delay from A's acknowledgement to the event (ms):");
    println!("{}", summary("stream at A (same node)", delays.0));
    println!("{}", summary("stream at B (one hop)", delays.1));
    if missing > 0 {
        bail!("{missing} events never arrived");
    }
    for r in readers {
        r.abort();
    }
    Ok(())
}

/// Writes round-robin to `clients` at `rate` for `secs`; returns each
/// post's id and acknowledgement time.
async fn write_round_robin(
    clients: &[Client],
    rate: f64,
    secs: f64,
    tag: &str,
) -> anyhow::Result<Vec<(String, Instant)>> {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut out = Vec::new();
    let mut n = 0;
    while Instant::now() < end {
        tick.tick().await;
        let client = &clients[n % clients.len()];
        n += 1;
        let post = client
            .create_post(Some("bench"), &format!("{tag} {n}"), None)
            .await?;
        out.push((post.id.to_string(), Instant::now()));
    }
    Ok(out)
}

/// Delays (ms) from acknowledgement to visibility at the last of `seen`'s
/// nodes, and how many posts some node never showed.
async fn everywhere(
    posts: &[(String, Instant)],
    seen: &[Arc<Mutex<HashMap<String, Instant>>>],
) -> (Vec<f64>, usize) {
    let (mut delays, mut missing) = (Vec::new(), 0);
    for (id, acked) in posts {
        let mut last = Some(*acked);
        for s in seen {
            last = match (last, s.lock().await.get(id)) {
                (Some(l), Some(t)) => Some(l.max(*t)),
                _ => None,
            };
        }
        match last {
            Some(t) => delays.push(t.saturating_duration_since(*acked).as_secs_f64() * 1e3),
            None => missing += 1,
        }
    }
    (delays, missing)
}

async fn heal(args: &[String]) -> anyhow::Result<()> {
    let n: usize = arg(args, "--nodes", "5").parse()?;
    let degree: usize = arg(args, "--degree", "2").parse()?;
    let rate: f64 = arg(args, "--rate", "20").parse()?;
    let secs: f64 = arg(args, "--secs", "10").parse()?;
    if n < 3 {
        bail!("--nodes must be at least 3");
    }
    let dir = tempfile::tempdir()?;
    let mut nodes: Vec<(NodeProcess, Client)> = Vec::new();
    for i in 0..n {
        let mut join = Vec::new();
        if i > 0 {
            join.push(
                nodes[i - 1]
                    .0
                    .announcement()
                    .addr("tcp")
                    .context("tcp")?
                    .to_owned(),
            );
        }
        if i == n - 1 {
            join.push(
                nodes[0]
                    .0
                    .announcement()
                    .addr("tcp")
                    .context("tcp")?
                    .to_owned(),
            );
        }
        let join = join.join(",");
        let region = format!("ring-{i}");
        nodes.push(
            start_with_degree(
                dir.path(),
                &region,
                (!join.is_empty()).then_some(join.as_str()),
                degree,
            )
            .await?,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut all = true;
        for (_, c) in &nodes {
            let alive = c
                .nodes()
                .await
                .map_or(0, |v| v.nodes.iter().filter(|e| e.state == "alive").count());
            all &= alive == n - 1;
        }
        if all {
            break;
        }
        if Instant::now() > deadline {
            bail!("the ring did not learn itself from statuses within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("ring of {n} up (degree {degree}); baseline writes for {secs} s");

    let victim = n / 2;
    let survivors: Vec<Client> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, (_, c))| c.clone())
        .collect();
    // One poller per survivor notes when each post first shows.
    let seen: Vec<Arc<Mutex<HashMap<String, Instant>>>> =
        survivors.iter().map(|_| Arc::default()).collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut pollers = Vec::new();
    for (client, seen) in survivors.iter().zip(&seen) {
        let (client, seen, stop) = (client.clone(), seen.clone(), stop.clone());
        pollers.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(page) = client.posts(16, None).await {
                    let now = Instant::now();
                    let mut seen = seen.lock().await;
                    for p in page {
                        seen.entry(p.id.to_string()).or_insert(now);
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    let before = write_round_robin(&survivors, rate, secs, "before").await?;

    let victim_id = nodes[victim].0.announcement().peer_id.clone();
    let killed = Instant::now();
    nodes[victim].0.kill();
    // Detection: poll each survivor's view of the victim.
    let mut detectors = Vec::new();
    for client in &survivors {
        let (client, victim_id) = (client.clone(), victim_id.clone());
        detectors.push(tokio::spawn(async move {
            let (mut suspect, mut down) = (None, None);
            let end = killed + Duration::from_secs(30);
            while down.is_none() && Instant::now() < end {
                if let Ok(v) = client.nodes().await {
                    let state = v
                        .nodes
                        .iter()
                        .find(|e| e.status.peer_id == victim_id)
                        .map(|e| e.state.clone());
                    let at = killed.elapsed().as_secs_f64() * 1e3;
                    if suspect.is_none() && matches!(state.as_deref(), Some("suspect" | "down")) {
                        suspect = Some(at);
                    }
                    if state.as_deref() == Some("down") {
                        down = Some(at);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (suspect, down)
        }));
    }
    let after = write_round_robin(&survivors, rate, secs, "after").await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for p in pollers {
        p.await?;
    }
    let (mut suspect, mut down) = (Vec::new(), Vec::new());
    for d in detectors {
        let (s, dn) = d.await?;
        suspect.extend(s);
        down.extend(dn);
    }
    let (base, base_missing) = everywhere(&before, &seen).await;
    let (post, post_missing) = everywhere(&after, &seen).await;
    let mut links = Vec::new();
    for c in &survivors {
        let v = c.nodes().await?;
        links.push(
            v.nodes
                .iter()
                .filter(|e| e.linked && e.state == "alive")
                .count(),
        );
    }
    println!(
        "ring of {n}, degree {degree}, node {victim} killed; {} survivors; writes {} before, {} after; \
         never visible everywhere: {base_missing} before, {post_missing} after; live links per survivor at the end: {links:?}",
        survivors.len(),
        before.len(),
        after.len()
    );
    println!("| measure (ms) | n | median | p90 | p99 | max |");
    println!("|---|---|---|---|---|---|");
    println!("{}", summary("kill -> survivor marks it suspect", suspect));
    println!("{}", summary("kill -> survivor marks it down", down));
    println!(
        "{}",
        summary(
            "ack -> visible at every survivor, all alive (baseline)",
            base
        )
    );
    println!(
        "{}",
        summary("ack -> visible at every survivor, after the kill", post)
    );
    Ok(())
}

async fn router(args: &[String]) -> anyhow::Result<()> {
    let requests: usize = arg(args, "--requests", "2000").parse()?;
    let dir = tempfile::tempdir()?;
    let (a, a_client) = start_with_degree(dir.path(), "a", None, 3).await?;
    let join = a.announcement().addr("tcp").context("tcp")?.to_owned();
    let (_b, _b_client) = start_with_degree(dir.path(), "b", Some(&join), 3).await?;
    for i in 0..50 {
        a_client
            .create_post(Some("bench"), &format!("page {i}"), None)
            .await?;
    }
    let router_dir = dir.path().join("router");
    let mut child = std::process::Command::new(binary()?)
        .args(["router", "--http", "127.0.0.1:0", "--join", &join])
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--data-dir"])
        .arg(&router_dir)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let http = reqwest::Client::new();
    let router_url = loop {
        if let Ok(bytes) = std::fs::read(router_dir.join("router.json")) {
            let v: serde_json::Value = serde_json::from_slice(&bytes)?;
            let url = v["http"].as_str().unwrap_or_default().to_owned();
            // Ready once it ranks both nodes.
            let route: serde_json::Value = http
                .get(format!("{url}/api/v0/route"))
                .send()
                .await?
                .json()
                .await?;
            if route["body"]["hosts"]
                .as_array()
                .is_some_and(|h| h.len() == 2)
            {
                break url;
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("the router did not come up with both hosts");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The host the router picks, to read from directly.
    let first = http
        .get(format!("{router_url}/api/v0/p?limit=20"))
        .send()
        .await?;
    let host = first
        .headers()
        .get("x-hearsay-host-url")
        .and_then(|v| v.to_str().ok())
        .context("x-hearsay-host-url")?
        .to_owned();
    let (mut direct, mut routed) = (Vec::new(), Vec::new());
    for block in 0..requests.div_ceil(100) {
        for (base, out) in [(&host, &mut direct), (&router_url, &mut routed)] {
            for _ in 0..100.min(requests - block * 100) {
                let t = Instant::now();
                let r = http.get(format!("{base}/api/v0/p?limit=20")).send().await?;
                let status = r.status();
                r.bytes().await?;
                if !status.is_success() {
                    bail!("{base}: {status}");
                }
                out.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    println!("{requests} reads of GET /api/v0/p?limit=20 each way, one client, keep-alive");
    println!("| measure (ms) | n | median | p90 | p99 | max |");
    println!("|---|---|---|---|---|---|");
    println!("{}", summary("direct to the host (baseline)", direct));
    println!("{}", summary("through the router", routed));
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("replication") => replication(&args).await,
        Some("writes") => writes(&args).await,
        Some("events") => events(&args).await,
        Some("heal") => heal(&args).await,
        Some("router") => router(&args).await,
        _ => bail!(
            "usage: bench replication [--rate N] [--secs S] | bench writes [--secs S] [--clients 1,16,64] \
             | bench events [--posts N] [--rate N] [--secs S] \
             | bench heal [--nodes N] [--degree D] [--rate N] [--secs S] | bench router [--requests N]"
        ),
    }
}
