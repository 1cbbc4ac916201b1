//! `hearsay demo`: three node processes in three regions on loopback, joined
//! as a chain (eu-west <- us-east <- ap-south), a first post at one end and
//! its measured arrival at the other two.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hearsay_node::node::Announcement;
use tokio::process::{Child, Command};

use crate::client::Client;

const REGIONS: [(&str, &str); 3] = [
    ("eu-west", "53.35,-6.26"),
    ("us-east", "38.90,-77.04"),
    ("ap-south", "19.08,72.88"),
];

struct DemoNode {
    region: &'static str,
    child: Child,
    announce: Announcement,
}

async fn start(
    dir: &Path,
    region: &'static str,
    geo: &str,
    join: Option<&str>,
) -> anyhow::Result<DemoNode> {
    let data = dir.join(region);
    std::fs::create_dir_all(&data)?;
    let log = std::fs::File::create(data.join("node.log"))?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("node")
        .arg("--data-dir")
        .arg(&data)
        .args([
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
        ])
        .args(["--http", "127.0.0.1:0", "--region", region, "--geo", geo])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true);
    if let Some(peer) = join {
        cmd.args(["--join", peer]);
    }
    let mut child = cmd.spawn().context("starting a node")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(a) = Announcement::read(&data).filter(|a| a.addr("tcp").is_some()) {
            return Ok(DemoNode {
                region,
                child,
                announce: a,
            });
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "node {region} exited with {status}; see {}",
                data.join("node.log").display()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "node {region} did not start within 30 s; see {}",
                data.join("node.log").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn run(dir: Option<PathBuf>) -> anyhow::Result<()> {
    let temp;
    let dir = match dir {
        Some(d) => d,
        None => {
            temp = tempfile::Builder::new().prefix("hearsay-demo-").tempdir()?;
            temp.path().to_path_buf()
        }
    };
    println!(
        "hearsay demo: three nodes on loopback, data in {}\n",
        dir.display()
    );
    let mut nodes: Vec<DemoNode> = Vec::new();
    for (region, geo) in REGIONS {
        let join = nodes
            .last()
            .map(|n: &DemoNode| n.announce.addr("tcp").expect("tcp").to_owned());
        nodes.push(start(&dir, region, geo, join.as_deref()).await?);
    }
    for (i, n) in nodes.iter().enumerate() {
        let joins = if i == 0 {
            String::new()
        } else {
            format!(" (joined {})", nodes[i - 1].region)
        };
        println!(
            "  {:<9} {}  peer {}{joins}",
            n.region,
            n.announce.url(),
            n.announce.peer_id
        );
    }

    // Wait until the chain is connected end to end.
    let clients: Vec<Client> = nodes
        .iter()
        .map(|n| Client::new(&n.announce.url()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut peers = Vec::new();
        for c in &clients {
            peers.push(
                c.get("/api/v0/stats")
                    .await
                    .ok()
                    .and_then(|s| s["peers"].as_u64())
                    .unwrap_or(0),
            );
        }
        if peers.iter().all(|p| *p >= 1) {
            break;
        }
        if Instant::now() > deadline {
            bail!("the mesh did not connect within 20 s (peers: {peers:?})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let first = &nodes[0];
    let text = format!("hello from {}", first.region);
    let started = Instant::now();
    let post = clients[0]
        .post(
            "/api/v0/p",
            &serde_json::json!({"author": "demo", "body": text}),
        )
        .await
        .context("posting the first message")?;
    let acked = started.elapsed();
    let id = post["id"].as_str().context("post has an id")?.to_owned();
    println!(
        "\nposted {text:?} at {} (id {id}), acknowledged in {:.1} ms",
        first.region,
        acked.as_secs_f64() * 1e3
    );
    let mut pending: Vec<usize> = vec![1, 2];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pending.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for i in pending {
            if clients[i].get(&format!("/api/v0/p/{id}")).await.is_ok() {
                println!(
                    "  arrived at {:<9} after {:.1} ms",
                    nodes[i].region,
                    started.elapsed().as_secs_f64() * 1e3
                );
            } else {
                still.push(i);
            }
        }
        pending = still;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for i in pending {
        println!("  NOT arrived at {} within 10 s", nodes[i].region);
    }

    let exe = std::env::current_exe()?;
    let exe = exe.display();
    println!("\nTry it from another terminal:");
    println!(
        "  {exe} post --node {} 'hi from {}'",
        nodes[2].announce.url(),
        nodes[2].region
    );
    println!("  {exe} posts --node {}", nodes[0].announce.url());
    println!("  {exe} status --node {}", nodes[1].announce.url());
    println!("  curl {}/api/v0/p", nodes[1].announce.url());
    println!("\nRunning; Ctrl-C stops the mesh.");
    hearsay_node::shutdown_signal().await;
    println!("stopping the nodes...");
    for n in &nodes {
        // A terminal's Ctrl-C reaches the nodes too; a SIGTERM to the demo
        // does not, so pass it on. Either way each node flushes and exits.
        if let Some(pid) = n.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
    for n in &mut nodes {
        if tokio::time::timeout(Duration::from_secs(10), n.child.wait())
            .await
            .is_err()
        {
            let _ = n.child.kill().await;
        }
    }
    Ok(())
}
