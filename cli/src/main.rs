//! hearsay-cli: the `hearsay` command.
//!
//! `hearsay node` runs a node; `init` prepares a data directory; `post`,
//! `get`, `posts` and `status` are small HTTP clients of a node's API; `demo`
//! starts a three-region mesh on loopback and shows a post replicate.

mod client;
mod demo;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hearsay_node::Config;

#[derive(Parser, Debug)]
#[command(
    name = "hearsay",
    version,
    about = "Peer-to-peer gossip replication node"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

/// Settings a flag may override (over the config file and `HEARSAY_*`).
#[derive(clap::Args, Debug, Default)]
struct NodeFlags {
    /// libp2p listen address (repeatable), e.g. /ip4/0.0.0.0/tcp/4001 or /ip4/0.0.0.0/udp/4001/quic-v1
    #[arg(long = "listen", value_name = "MULTIADDR")]
    listen: Vec<String>,
    /// HTTP API address, e.g. 127.0.0.1:8080 (port 0 picks a free port)
    #[arg(long, value_name = "ADDR")]
    http: Option<String>,
    /// Region name reported to peers and routers
    #[arg(long, value_name = "NAME")]
    region: Option<String>,
    /// Location of this node in degrees
    #[arg(long, value_name = "LAT,LON")]
    geo: Option<String>,
    /// Peer to join, a multiaddr ending in /p2p/<peer id> (repeatable)
    #[arg(long = "join", value_name = "MULTIADDR")]
    join: Vec<String>,
}

impl NodeFlags {
    fn apply(self, config: &mut Config) {
        if !self.listen.is_empty() {
            config.listen = self.listen;
        }
        if let Some(h) = self.http {
            config.http = h;
        }
        if let Some(r) = self.region {
            config.region = r;
        }
        if self.geo.is_some() {
            config.geo = self.geo;
        }
        if !self.join.is_empty() {
            config.join = self.join;
        }
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a node key and a default config in DIR, and print the peer id
    Init {
        /// Data directory: node key, hearsay.toml, the sled store, node.json
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        #[command(flatten)]
        flags: NodeFlags,
    },
    /// Run a node (initialising DIR when empty) until SIGINT or SIGTERM
    Node {
        /// Data directory: node key, hearsay.toml, the sled store, node.json
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        #[command(flatten)]
        flags: NodeFlags,
    },
    /// Create a post and print it as JSON
    Post {
        #[command(flatten)]
        node: client::NodeUrl,
        #[arg(long)]
        author: Option<String>,
        #[arg(long, value_name = "ID")]
        reply_to: Option<String>,
        /// The post body
        text: String,
    },
    /// Print one post and the id of the previous one
    Get {
        #[command(flatten)]
        node: client::NodeUrl,
        id: String,
    },
    /// Print the newest posts
    Posts {
        #[command(flatten)]
        node: client::NodeUrl,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Print a node's stats
    Status {
        #[command(flatten)]
        node: client::NodeUrl,
    },
    /// Start a three-region mesh on loopback and show a post replicate
    Demo {
        /// Keep node data here instead of a temporary directory
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,libp2p=warn,libp2p_gossipsub=error")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn load_config(data_dir: &std::path::Path, flags: NodeFlags) -> anyhow::Result<Config> {
    let mut config = Config::load(data_dir)?;
    config.apply_env(|k| std::env::var(k).ok());
    flags.apply(&mut config);
    Ok(config)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Init { data_dir, flags } => {
            let key = hearsay_node::init(&data_dir)?;
            let config = load_config(&data_dir, flags)?;
            config.validate(&data_dir)?;
            config.save(&data_dir)?;
            println!(
                "{}",
                hearsay_node::node::libp2p_identity(&key)
                    .public()
                    .to_peer_id()
            );
        }
        Cmd::Node { data_dir, flags } => {
            init_tracing();
            hearsay_node::init(&data_dir)?;
            if !data_dir.join(hearsay_node::config::CONFIG_FILE).exists() {
                // Leave the defaults where an operator will look for them.
                Config::default().save(&data_dir)?;
            }
            let config = load_config(&data_dir, flags)?;
            let settings = config.validate(&data_dir)?;
            hearsay_node::run(settings, hearsay_node::shutdown_signal())
                .await
                .context("node failed")?;
        }
        Cmd::Post {
            node,
            author,
            reply_to,
            text,
        } => {
            let body = serde_json::json!({"author": author, "reply_to": reply_to, "body": text});
            client::print(node.client().post("/api/v0/p", &body).await?);
        }
        Cmd::Get { node, id } => {
            client::print(node.client().get(&format!("/api/v0/p/{id}")).await?)
        }
        Cmd::Posts { node, limit } => client::print(
            node.client()
                .get(&format!("/api/v0/p?limit={limit}"))
                .await?,
        ),
        Cmd::Status { node } => client::print(node.client().get("/api/v0/stats").await?),
        Cmd::Demo { dir } => demo::run(dir).await?,
    }
    Ok(())
}
