//! `hearsay operator`: the mesh operator's key, node certificates and
//! revocations.
//!
//! The operator key never leaves the operator's machine: a certificate or a
//! revocation is signed here and printed (or written to a file, or posted
//! to a node), and a node needs only the operator's public id (config key
//! `operator`) and its own certificate (`node.cert` in its data
//! directory).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use hearsay_admission::{OperatorKey, Revocation};
use hearsay_crdt::NodeId;

#[derive(clap::Subcommand, Debug)]
pub enum OperatorCmd {
    /// Create the operator key and print the operator id (the nodes'
    /// `operator` setting)
    Init {
        #[command(flatten)]
        key: OperatorKeyFile,
    },
    /// Print the operator id of an existing key
    Id {
        #[command(flatten)]
        key: OperatorKeyFile,
    },
    /// Sign a certificate admitting a node and print it (or write it with
    /// --out, e.g. to DIR/node.cert)
    Admit {
        #[command(flatten)]
        key: OperatorKeyFile,
        /// The node's peer id (`hearsay init` prints it) or 64-hex node id
        #[arg(required_unless_present = "data_dir")]
        peer_id: Option<String>,
        /// Admit the node whose key is in this data directory
        #[arg(long, value_name = "DIR", conflicts_with = "peer_id")]
        data_dir: Option<PathBuf>,
        /// The node's region, as written in its certificate
        #[arg(long, default_value = "local")]
        region: String,
        /// How long the certificate is valid, e.g. 30d, 12h [default: no
        /// expiry]
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        expires: Option<Duration>,
        /// Write the certificate to this file instead of printing it
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Sign a revocation of a node and print it; with --node, hand it to
    /// that node, which applies it and gossips it to the whole mesh
    Revoke {
        #[command(flatten)]
        key: OperatorKeyFile,
        /// The node's peer id or 64-hex node id
        peer_id: String,
        /// Base URL of a node of the mesh to publish the revocation at
        #[arg(long = "node", value_name = "URL")]
        node: Option<String>,
    },
}

#[derive(clap::Args, Debug)]
pub struct OperatorKeyFile {
    /// The operator key file
    #[arg(
        long = "key",
        env = "HEARSAY_OPERATOR_KEY",
        default_value = "operator.key",
        value_name = "FILE"
    )]
    pub path: PathBuf,
}

impl OperatorKeyFile {
    fn load(&self) -> anyhow::Result<OperatorKey> {
        OperatorKey::load(&self.path).with_context(|| {
            format!(
                "reading the operator key {} (`hearsay operator init` makes one)",
                self.path.display()
            )
        })
    }
}

fn now_ms() -> u64 {
    hearsay_node::core::now_ms()
}

/// A node id from a libp2p peer id or 64 hex digits.
pub fn parse_node(s: &str) -> anyhow::Result<NodeId> {
    let s = s.trim();
    if let Ok(id) = s.parse::<NodeId>() {
        return Ok(id);
    }
    let peer: libp2p::PeerId = s
        .parse()
        .with_context(|| format!("{s:?} is neither a peer id nor a 64-hex node id"))?;
    hearsay_node::status::node_id(&peer)
        .with_context(|| format!("{s} is not the peer id of an ed25519 key (not a hearsay node)"))
}

fn node_of_dir(dir: &Path) -> anyhow::Result<NodeId> {
    let path = dir.join(hearsay_node::node::KEY_FILE);
    let key = hearsay_crdt::Keypair::load(&path)
        .with_context(|| format!("reading the node key {}", path.display()))?;
    Ok(key.id())
}

pub async fn run(command: OperatorCmd) -> anyhow::Result<()> {
    match command {
        OperatorCmd::Init { key } => {
            if key.path.exists() {
                bail!(
                    "{} exists already; its id: {}",
                    key.path.display(),
                    key.load()?.id()
                );
            }
            let operator = OperatorKey::generate();
            operator
                .save(&key.path)
                .with_context(|| format!("writing {}", key.path.display()))?;
            eprintln!(
                "operator key written to {} (keep it off the nodes); set `operator` on every node to:",
                key.path.display()
            );
            println!("{}", operator.id());
        }
        OperatorCmd::Id { key } => println!("{}", key.load()?.id()),
        OperatorCmd::Admit {
            key,
            peer_id,
            data_dir,
            region,
            expires,
            out,
        } => {
            let operator = key.load()?;
            let node = match (&peer_id, &data_dir) {
                (Some(p), _) => parse_node(p)?,
                (None, Some(dir)) => node_of_dir(dir)?,
                (None, None) => bail!("name the node: a peer id or --data-dir"),
            };
            let now = now_ms();
            let expires_ms = expires.map(|d| now.saturating_add(d.as_millis() as u64));
            let cert = operator
                .admit(node, &region, now, expires_ms)
                .context("signing the certificate")?;
            let text = cert.to_text();
            match out {
                Some(path) => {
                    std::fs::write(&path, format!("{text}\n"))
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!("certificate of {node} written to {}", path.display());
                }
                None => println!("{text}"),
            }
        }
        OperatorCmd::Revoke { key, peer_id, node } => {
            let operator = key.load()?;
            let revocation: Revocation = operator.revoke(parse_node(&peer_id)?, now_ms());
            let text = revocation.to_text();
            match node {
                None => println!("{text}"),
                Some(url) => {
                    let url = format!("{}/api/v0/admission/revocations", url.trim_end_matches('/'));
                    let answer = reqwest::Client::new()
                        .post(&url)
                        .body(text)
                        .send()
                        .await
                        .with_context(|| format!("posting to {url}"))?;
                    let status = answer.status();
                    let body = answer.text().await.unwrap_or_default();
                    if !status.is_success() {
                        bail!("{url} answered {status}: {body}");
                    }
                    println!("{body}");
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_are_named_by_peer_id_or_hex() {
        let key = hearsay_crdt::Keypair::from_secret([3; 32]);
        let peer = hearsay_node::node::libp2p_identity(&key)
            .public()
            .to_peer_id();
        assert_eq!(parse_node(&peer.to_string()).unwrap(), key.id());
        assert_eq!(parse_node(&key.id().to_string()).unwrap(), key.id());
        assert!(parse_node("nope").is_err());
    }
}
