//! hearsay-cli: the `hearsay` command.
//!
//! `hearsay node` runs a node; `init` prepares a data directory; `post`,
//! `get`, `posts` and `status` are small HTTP clients of a node's API; `demo`
//! starts a three-region mesh on loopback and shows a post replicate.

mod client;
mod demo;
mod flags;
mod tail;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use flags::NodeFlags;
use hearsay_node::Config;
use hearsay_node::client::ClientError;

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
    /// Print a node's events as they arrive, reconnecting with the last token
    Tail(tail::TailArgs),
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

fn load_config(data_dir: &std::path::Path, flags: &NodeFlags) -> anyhow::Result<Config> {
    let mut config = Config::load(data_dir)?;
    config.apply_env(|k| std::env::var(k).ok())?;
    flags.apply(&mut config)?;
    Ok(config)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Init { data_dir, flags } => {
            let key = hearsay_node::init(&data_dir)?;
            let config = load_config(&data_dir, &flags)?;
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
            let config = load_config(&data_dir, &flags)?;
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
            let created = node
                .client()
                .create_post(author.as_deref(), &text, reply_to.as_deref())
                .await;
            match created {
                Ok(post) => client::print(&post),
                // Nothing was stored: say so plainly, with the wait asked for.
                Err(ClientError::SlowDown { retry_after_ms, .. }) => {
                    anyhow::bail!("node overloaded, retry in {retry_after_ms} ms")
                }
                Err(e) => return Err(e.into()),
            }
        }
        Cmd::Get { node, id } => match node.client().post(&id).await? {
            Some(found) => client::print(&found),
            None => anyhow::bail!("no post {id} at {}", node.url),
        },
        Cmd::Posts { node, limit } => client::print(&node.client().posts(limit, None).await?),
        Cmd::Status { node } => client::print(&node.client().stats().await?),
        Cmd::Tail(args) => tail::run(args).await?,
        Cmd::Demo { dir } => demo::run(dir).await?,
    }
    Ok(())
}
