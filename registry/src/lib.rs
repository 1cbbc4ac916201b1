//! The name registry of a hearsay mesh: which names are taken, and by whom,
//! decided by consensus.
//!
//! Everything else in hearsay is eventually consistent: a write is accepted
//! by one node and merged everywhere later. Names cannot work that way (two
//! regions would each hand `ann` to a different person during a partition),
//! so claims go through a Raft group of 3 or 5 voter nodes
//! ([openraft](https://docs.rs/openraft)), and a claim is answered only
//! after it is committed by a majority and applied.
//!
//! - [`Names`] is the state machine's data and its one rule, pure and
//!   tested on its own: claim a free name, claim again idempotently,
//!   release by the owner.
//! - [`store`] keeps the Raft log, the vote and snapshots of the name set in
//!   the registry's own sled database, durable before openraft is told so
//!   (checked by openraft's storage test suite).
//! - [`service::Registry`] runs the Raft node over a [`Transport`] (the node
//!   carries its messages on their own libp2p request-response protocol),
//!   forwards claims and reads to the leader, and turns every outcome into a
//!   [`ClaimAnswer`] or [`ReadAnswer`], where "unknown" is an answer of its
//!   own and never reported as success or failure.
//! - [`linearizability`] checks recorded histories of claims and reads (a
//!   Wing–Gong search), for the tests.

pub mod linearizability;
pub mod service;
pub mod store;

use std::collections::BTreeMap;
use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

pub use service::{ClaimAnswer, ReadAnswer, Registry, RegistryConfig, RegistryStatus, Transport};

/// Longest name, in bytes.
pub const MAX_NAME_BYTES: usize = 200;
/// Longest owner, in bytes (a public key, a post id: opaque to the registry).
pub const MAX_OWNER_BYTES: usize = 128;

/// A Raft node's id: derived from the node's libp2p peer id, see [`raft_id`].
pub type RaftId = u64;

/// What the registry knows of a member: the peer id messages go to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub peer: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.peer)
    }
}

/// The Raft id of a peer: the first 8 bytes of SHA-256 of its peer id.
/// Operators name voters by peer id; Raft wants small copyable ids. Two
/// voters of one group colliding is checked when the group is set up.
pub fn raft_id(peer: &str) -> RaftId {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(peer.as_bytes());
    let mut id = [0; 8];
    id.copy_from_slice(&digest[..8]);
    RaftId::from_be_bytes(id)
}

/// A write to the name set: an entry of the Raft log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Take `name` for `owner` if it is free.
    Claim { name: String, owner: String },
    /// Free `name` if `owner` holds it.
    Release { name: String, owner: String },
}

/// What applying a [`Command`] decided.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// `owner` holds the name (now, or already held it).
    Claimed { owner: String },
    /// Another owner holds the name.
    Taken { owner: String },
    /// The name was freed.
    Released,
    /// A release by someone who does not hold the name (`owner` is the
    /// holder, if any): nothing changed.
    NotHeld { owner: Option<String> },
    /// Not a claim or release (blank and membership entries).
    #[default]
    None,
}

/// Why a name or an owner is refused before it reaches the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidName {
    #[error("a name is 1 to {MAX_NAME_BYTES} bytes")]
    NameLength,
    #[error("a name has no control characters or whitespace")]
    NameCharacters,
    #[error("an owner is 1 to {MAX_OWNER_BYTES} bytes")]
    OwnerLength,
}

/// Checks a name and an owner before they are proposed.
pub fn validate(name: &str, owner: &str) -> Result<(), InvalidName> {
    validate_name(name)?;
    if owner.is_empty() || owner.len() > MAX_OWNER_BYTES {
        return Err(InvalidName::OwnerLength);
    }
    Ok(())
}

/// Checks a name.
pub fn validate_name(name: &str) -> Result<(), InvalidName> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(InvalidName::NameLength);
    }
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(InvalidName::NameCharacters);
    }
    Ok(())
}

/// The name set: the data of the registry's state machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Names {
    owners: BTreeMap<String, String>,
}

impl Names {
    /// Applies one command: the registry's whole rule. Deterministic, so
    /// every voter that applies the same log holds the same set.
    pub fn apply(&mut self, command: &Command) -> Outcome {
        match command {
            Command::Claim { name, owner } => match self.owners.get(name) {
                Some(holder) if holder != owner => Outcome::Taken {
                    owner: holder.clone(),
                },
                Some(_) => Outcome::Claimed {
                    owner: owner.clone(),
                },
                None => {
                    self.owners.insert(name.clone(), owner.clone());
                    Outcome::Claimed {
                        owner: owner.clone(),
                    }
                }
            },
            Command::Release { name, owner } => match self.owners.get(name) {
                Some(holder) if holder == owner => {
                    self.owners.remove(name);
                    Outcome::Released
                }
                holder => Outcome::NotHeld {
                    owner: holder.cloned(),
                },
            },
        }
    }

    /// Who holds `name`.
    pub fn owner(&self, name: &str) -> Option<&str> {
        self.owners.get(name).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.owners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }
}

openraft::declare_raft_types!(
    /// The registry's Raft types.
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = RaftId,
        Node = Member,
        SnapshotData = Cursor<Vec<u8>>,
);

/// The registry's Raft node.
pub type Raft = openraft::Raft<TypeConfig>;

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(name: &str, owner: &str) -> Command {
        Command::Claim {
            name: name.into(),
            owner: owner.into(),
        }
    }

    fn release(name: &str, owner: &str) -> Command {
        Command::Release {
            name: name.into(),
            owner: owner.into(),
        }
    }

    #[test]
    fn a_free_name_is_claimed_once_and_the_holder_may_claim_again() {
        let mut names = Names::default();
        assert_eq!(
            names.apply(&claim("ann", "k1")),
            Outcome::Claimed { owner: "k1".into() }
        );
        assert_eq!(
            names.apply(&claim("ann", "k2")),
            Outcome::Taken { owner: "k1".into() }
        );
        assert_eq!(
            names.apply(&claim("ann", "k1")),
            Outcome::Claimed { owner: "k1".into() }
        );
        assert_eq!(names.owner("ann"), Some("k1"));
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn only_the_holder_releases_and_a_released_name_is_free_again() {
        let mut names = Names::default();
        names.apply(&claim("ann", "k1"));
        assert_eq!(
            names.apply(&release("ann", "k2")),
            Outcome::NotHeld {
                owner: Some("k1".into())
            }
        );
        assert_eq!(names.owner("ann"), Some("k1"));
        assert_eq!(names.apply(&release("ann", "k1")), Outcome::Released);
        assert_eq!(names.owner("ann"), None);
        assert_eq!(
            names.apply(&release("ann", "k1")),
            Outcome::NotHeld { owner: None }
        );
        assert_eq!(
            names.apply(&claim("ann", "k2")),
            Outcome::Claimed { owner: "k2".into() }
        );
    }

    #[test]
    fn names_and_owners_are_bounded_and_printable() {
        assert_eq!(validate("ann", "k"), Ok(()));
        assert_eq!(validate("", "k"), Err(InvalidName::NameLength));
        let long = "a".repeat(MAX_NAME_BYTES + 1);
        assert_eq!(validate(&long, "k"), Err(InvalidName::NameLength));
        assert_eq!(validate("a b", "k"), Err(InvalidName::NameCharacters));
        assert_eq!(validate("a\u{0}", "k"), Err(InvalidName::NameCharacters));
        assert_eq!(validate("ann", ""), Err(InvalidName::OwnerLength));
        let owner = "k".repeat(MAX_OWNER_BYTES + 1);
        assert_eq!(validate("ann", &owner), Err(InvalidName::OwnerLength));
    }

    #[test]
    fn raft_ids_are_stable_and_distinct() {
        let a = raft_id("12D3KooWA");
        assert_eq!(a, raft_id("12D3KooWA"));
        assert_ne!(a, raft_id("12D3KooWB"));
    }
}
