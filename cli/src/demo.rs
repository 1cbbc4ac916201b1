//! `hearsay demo`: three node processes in three regions on loopback, joined
//! as a chain (eu-west <- us-east <- ap-south), a first post at one end and
//! its measured arrival at the other two.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hearsay_node::client::Client;
use hearsay_node::launch::{Launch, NodeProcess};
use hearsay_node::node::Announcement;

const REGIONS: [(&str, &str); 3] = [
    ("eu-west", "53.35,-6.26"),
    ("us-east", "38.90,-77.04"),
    ("ap-south", "19.08,72.88"),
];

struct DemoNode {
    region: &'static str,
    process: NodeProcess,
}

impl DemoNode {
    fn announce(&self) -> &Announcement {
        self.process.announcement()
    }
}

async fn start(
    dir: &Path,
    region: &'static str,
    geo: &str,
    join: Option<&str>,
) -> anyhow::Result<DemoNode> {
    let mut launch = Launch::new(std::env::current_exe()?, dir.join(region))
        .set(
            "listen",
            "/ip4/127.0.0.1/tcp/0,/ip4/127.0.0.1/udp/0/quic-v1",
        )
        .set("http", "127.0.0.1:0")
        .set("region", region)
        .set("geo", geo);
    if let Some(peer) = join {
        launch = launch.set("join", peer);
    }
    let process = launch
        .start()
        .await
        .with_context(|| format!("starting node {region}"))?;
    Ok(DemoNode { region, process })
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
            .map(|n: &DemoNode| n.announce().addr("tcp").expect("tcp").to_owned());
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
            n.announce().url(),
            n.announce().peer_id
        );
    }

    // Wait until the chain is connected end to end.
    let clients: Vec<Client> = nodes.iter().map(|n| n.process.client().clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut peers = Vec::new();
        for c in &clients {
            peers.push(c.stats().await.map_or(0, |s| s.peers));
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
        .create_post(Some("demo"), &text, None)
        .await
        .context("posting the first message")?;
    let acked = started.elapsed();
    let id = post.id.to_string();
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
            if matches!(clients[i].post(&id).await, Ok(Some(_))) {
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
        nodes[2].announce().url(),
        nodes[2].region
    );
    println!("  {exe} posts --node {}", nodes[0].announce().url());
    println!("  {exe} status --node {}", nodes[1].announce().url());
    println!("  curl {}/api/v0/p", nodes[1].announce().url());
    println!("\nRunning; Ctrl-C stops the mesh.");
    hearsay_node::shutdown_signal().await;
    println!("stopping the nodes...");
    // A terminal's Ctrl-C reaches the nodes too; a SIGTERM to the demo does
    // not, so pass it on. Either way each node flushes and exits.
    for n in &mut nodes {
        if let Err(e) = n.process.stop().await {
            eprintln!("{}: {e}", n.region);
        }
    }
    Ok(())
}
