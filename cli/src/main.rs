//! hearsay-cli: the `hearsay` command.
//!
//! `hearsay node` runs a node; `init` prepares a data directory; `post`,
//! `get`, `posts` and `status` are small HTTP clients of a node's API; `user`,
//! `follow`, `unfollow`, `timeline`, `home`, `edit` and `delete` act for users
//! (signing with their keys, see `users.rs`); `demo` starts a three-region
//! mesh on loopback and shows a post replicate.

mod bench;
mod bench_flood;
mod bench_names;
mod client;
mod demo;
mod flags;
mod mesh;
mod names;
mod operator;
mod plot;
mod router;
mod tail;
mod users;

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
        /// Author name of an unsigned post (refused for a registered name)
        #[arg(long, conflicts_with = "as_user")]
        author: Option<String>,
        /// Sign the post as this user, with their key
        #[arg(long = "as", value_name = "NAME")]
        as_user: Option<String>,
        #[command(flatten)]
        key: users::KeyFile,
        #[arg(long, value_name = "ID")]
        reply_to: Option<String>,
        /// The post body
        text: String,
    },
    /// Create a user key, register a name, show a profile
    User {
        #[command(subcommand)]
        command: UserCmd,
    },
    /// NAME follows OTHER (signed with NAME's key when there is one)
    Follow {
        #[command(flatten)]
        node: client::NodeUrl,
        #[command(flatten)]
        key: users::KeyFile,
        name: String,
        other: String,
    },
    /// NAME stops following OTHER (signed with NAME's key when there is one)
    Unfollow {
        #[command(flatten)]
        node: client::NodeUrl,
        #[command(flatten)]
        key: users::KeyFile,
        name: String,
        other: String,
    },
    /// Print a user's posts, newest first
    Timeline {
        #[command(flatten)]
        node: client::NodeUrl,
        #[command(flatten)]
        page: Page,
        name: String,
    },
    /// Print the posts of the users NAME follows, newest first
    Home {
        #[command(flatten)]
        node: client::NodeUrl,
        #[command(flatten)]
        page: Page,
        name: String,
    },
    /// Edit a post's body: a splice (--pos, --delete, --insert) or a new
    /// body (--body); signed with the author's key for a signed post
    Edit {
        #[command(flatten)]
        node: client::NodeUrl,
        /// Character offset of the change
        #[arg(long, required_unless_present = "body")]
        pos: Option<usize>,
        /// Characters to remove at --pos
        #[arg(long, default_value_t = 0, requires = "pos")]
        delete: usize,
        /// Text to insert at --pos
        #[arg(long, default_value = "", requires = "pos")]
        insert: String,
        /// The whole new body (sent as the smallest change that makes it)
        #[arg(long, conflicts_with = "pos")]
        body: Option<String>,
        /// Sign as this user [default: the post's author]
        #[arg(long = "as", value_name = "NAME")]
        as_user: Option<String>,
        #[command(flatten)]
        key: users::KeyFile,
        id: String,
    },
    /// Delete a post (a tombstone); signed with the author's key for a
    /// signed post
    Delete {
        #[command(flatten)]
        node: client::NodeUrl,
        /// Sign as this user [default: the post's author]
        #[arg(long = "as", value_name = "NAME")]
        as_user: Option<String>,
        #[command(flatten)]
        key: users::KeyFile,
        id: String,
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
    /// Print the nodes a node knows (signed statuses) with their router scores
    Mesh(mesh::MeshArgs),
    /// Run an HTTP front end that sends each client to the best host
    Router(router::RouterArgs),
    /// Measure a mesh: replication delay to every node
    Bench {
        #[command(subcommand)]
        command: bench::BenchCmd,
    },
    /// Claim a name in the mesh's registry, or show who holds one
    Name {
        #[command(subcommand)]
        command: names::NameCmd,
    },
    /// The mesh operator: its key, node certificates, revocations
    Operator {
        #[command(subcommand)]
        command: operator::OperatorCmd,
    },
    /// The name registry's state, or set it up on a running mesh
    Registry {
        #[command(subcommand)]
        command: names::RegistryCmd,
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

#[derive(Subcommand, Debug)]
enum UserCmd {
    /// Create NAME's key file (or reuse it) and, with --node, register the
    /// name with the key there
    New {
        /// Where the key goes [default: $HEARSAY_HOME/users/NAME.key]
        #[arg(long, value_name = "FILE")]
        key_file: Option<std::path::PathBuf>,
        /// Register the name on this node (base URL of its HTTP API)
        #[arg(long = "node", env = "HEARSAY_NODE", value_name = "URL")]
        node: Option<String>,
        #[arg(long)]
        display_name: Option<String>,
        name: String,
    },
    /// Print a profile: display name, public key, follows
    Show {
        #[command(flatten)]
        node: client::NodeUrl,
        name: String,
    },
}

/// `--limit` and `--before` of a listing.
#[derive(clap::Args, Debug)]
struct Page {
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Only posts older than this post id
    #[arg(long, value_name = "ID")]
    before: Option<String>,
}

impl Page {
    fn before(&self) -> anyhow::Result<Option<hearsay_crdt::PostId>> {
        self.before
            .as_deref()
            .map(|b| {
                b.parse().map_err(|_| {
                    anyhow::anyhow!(
                        "--before {b:?} is not a valid post id (32 lowercase hex digits)"
                    )
                })
            })
            .transpose()
    }
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
            // clap refuses --author with --as.
            author: _,
            as_user: Some(name),
            key,
            reply_to,
            text,
        } => users::signed_post(&node, &name, &key, &text, reply_to.as_deref()).await?,
        Cmd::Post {
            node,
            author,
            as_user: None,
            key,
            reply_to,
            text,
        } => {
            if key.key_file.is_some() {
                anyhow::bail!("--key-file signs a post as a user: give --as NAME too");
            }
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
        Cmd::User { command } => match command {
            UserCmd::New {
                key_file,
                node,
                display_name,
                name,
            } => users::new_user(&name, key_file, node, display_name).await?,
            UserCmd::Show { node, name } => {
                let profile = node.client().user(&users::parse_name(&name)?).await?;
                client::print(&profile);
            }
        },
        Cmd::Follow {
            node,
            key,
            name,
            other,
        } => users::follow(&node, &name, &other, &key, true).await?,
        Cmd::Unfollow {
            node,
            key,
            name,
            other,
        } => users::follow(&node, &name, &other, &key, false).await?,
        Cmd::Timeline { node, page, name } => {
            let name = users::parse_name(&name)?;
            let posts = node
                .client()
                .timeline(&name, page.limit, page.before()?)
                .await?;
            client::print(&posts);
        }
        Cmd::Home { node, page, name } => {
            let name = users::parse_name(&name)?;
            let posts = node
                .client()
                .home(&name, page.limit, page.before()?)
                .await?;
            client::print(&posts);
        }
        Cmd::Edit {
            node,
            pos,
            delete,
            insert,
            body,
            as_user,
            key,
            id,
        } => {
            let spec = match (body, pos) {
                (Some(body), _) => users::EditSpec::Body(body),
                (None, Some(pos)) => {
                    if delete == 0 && insert.is_empty() {
                        anyhow::bail!("nothing to change: give --delete and/or --insert");
                    }
                    users::EditSpec::Splice {
                        pos,
                        delete,
                        insert,
                    }
                }
                (None, None) => anyhow::bail!("give --body, or --pos with --delete/--insert"),
            };
            users::edit(&node, &id, spec, as_user.as_deref(), &key).await?;
        }
        Cmd::Delete {
            node,
            as_user,
            key,
            id,
        } => users::delete(&node, &id, as_user.as_deref(), &key).await?,
        Cmd::Get { node, id } => match node.client().post(&id).await? {
            Some(found) => client::print(&found),
            None => anyhow::bail!("no post {id} at {}", node.url),
        },
        Cmd::Posts { node, limit } => client::print(&node.client().posts(limit, None).await?),
        Cmd::Name { command } => names::name(command).await?,
        Cmd::Registry { command } => names::registry(command).await?,
        Cmd::Operator { command } => operator::run(command).await?,
        Cmd::Status { node } => client::print(&node.client().stats().await?),
        Cmd::Tail(args) => tail::run(args).await?,
        Cmd::Mesh(args) => mesh::run(args).await?,
        Cmd::Bench { command } => bench::run(command).await?,
        Cmd::Router(args) => {
            init_tracing();
            router::run_router(args).await?;
        }
        Cmd::Demo { dir } => demo::run(dir).await?,
    }
    Ok(())
}
