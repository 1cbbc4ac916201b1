//! `hearsay name claim|show` and `hearsay registry status|init`: clients of
//! a node's name registry endpoints.

use anyhow::{Context, bail};
use clap::Subcommand;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::client::{self, NodeUrl};

#[derive(Subcommand, Debug)]
pub enum NameCmd {
    /// Claim NAME for OWNER: prints the owner when claimed (final), fails
    /// with the holder when taken (final), and says so when the outcome is
    /// unknown (claim again with the same owner to settle it)
    Claim {
        #[command(flatten)]
        node: NodeUrl,
        /// Who the name is for (an opaque string of at most 128 bytes:
        /// a public key, a post id) [default: this node's peer id]
        #[arg(long)]
        owner: Option<String>,
        name: String,
    },
    /// Who holds NAME (a linearizable read, through the registry's leader)
    Show {
        #[command(flatten)]
        node: NodeUrl,
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum RegistryCmd {
    /// Members, leader, term, commit index and last contact, as this node
    /// sees them
    Status {
        #[command(flatten)]
        node: NodeUrl,
    },
    /// Set up the registry on a running mesh: VOTERS (3 or 5 peer ids,
    /// comma-separated) become its voters
    Init {
        #[command(flatten)]
        node: NodeUrl,
        #[arg(
            long,
            value_delimiter = ',',
            required = true,
            value_name = "PEER_ID,..."
        )]
        voters: Vec<String>,
    },
}

pub async fn name(command: NameCmd) -> anyhow::Result<()> {
    match command {
        NameCmd::Claim { node, owner, name } => {
            let client = node.client();
            let owner = match owner {
                Some(owner) => owner,
                None => client.stats().await?.peer_id,
            };
            let answer = client
                .send(
                    client
                        .http()
                        .post(client.url("/api/v0/names"))
                        .json(&json!({"name": name, "owner": owner})),
                )
                .await?;
            match answer.status {
                StatusCode::CREATED => client::print(&answer.json["body"]),
                StatusCode::CONFLICT => bail!(
                    "{name} is taken by {}",
                    answer.json["body"]["owner"].as_str().unwrap_or("?")
                ),
                StatusCode::GATEWAY_TIMEOUT => bail!(
                    "the outcome is unknown: {}",
                    answer.json["error"].as_str().unwrap_or("")
                ),
                _ => return Err(answer.into_error().into()),
            }
        }
        NameCmd::Show { node, name } => {
            let client = node.client();
            let path = format!("/api/v0/names/{}", encode(&name));
            let body: Value = client.get_body(&path).await?;
            client::print(&body);
        }
    }
    Ok(())
}

pub async fn registry(command: RegistryCmd) -> anyhow::Result<()> {
    match command {
        RegistryCmd::Status { node } => {
            let body = node.client().get_body("/api/v0/registry").await?;
            client::print(&body);
        }
        RegistryCmd::Init { node, voters } => {
            let client = node.client();
            let answer = client
                .send(
                    client
                        .http()
                        .post(client.url("/api/v0/registry/init"))
                        .json(&json!({ "voters": voters })),
                )
                .await?;
            let body = answer.ok_body().context("setting up the registry")?;
            client::print(&body);
        }
    }
    Ok(())
}

/// Percent-encodes a name for a URL path segment.
fn encode(name: &str) -> String {
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
