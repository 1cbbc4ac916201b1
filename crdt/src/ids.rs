//! Identifiers and their stable text forms.
//!
//! Every id has one canonical text form that round-trips exactly, so ids can
//! travel in URLs, JSON, sled keys and document ids without escaping:
//! node ids and post ids are lowercase hex, user names a restricted alphabet,
//! document ids `kind/part[/part]`.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Width of a public-timeline and user-timeline bucket, in milliseconds.
///
/// A bucket document holds the ids of the posts created in one minute; this
/// keeps documents small (automerge applies cost time linear in document size,
/// see BENCHMARKS.md) at any sustained rate below ~16 posts per second per
/// bucket, while a page of 64 newest posts touches few buckets.
pub const BUCKET_MS: u64 = 60_000;

/// Longest user name accepted.
pub const MAX_USER_NAME: usize = 32;

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

pub(crate) fn unhex<const N: usize>(what: &'static str, s: &str) -> Result<[u8; N]> {
    let b = s.as_bytes();
    if b.len() != N * 2 {
        return Err(Error::malformed(
            what,
            format!("expected {} hex digits, got {}", N * 2, b.len()),
        ));
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(Error::malformed(what, "expected lowercase hex digits")),
    };
    let mut out = [0u8; N];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Ok(out)
}

/// A node's identity: its ed25519 public key (the same key as its libp2p
/// PeerId). Deltas name their origin by it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub [u8; 32]);

impl NodeId {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", &hex(&self.0[..6]))
    }
}

impl FromStr for NodeId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        unhex::<32>("node id", s).map(NodeId)
    }
}

/// A user name: 1 to 32 characters of `A-Z a-z 0-9 _ . -`.
///
/// The restricted alphabet makes it safe inside document ids and URLs.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct UserName(String);

impl UserName {
    pub fn new(s: &str) -> Result<Self> {
        if s.is_empty() || s.len() > MAX_USER_NAME {
            return Err(Error::invalid(format!(
                "user name must be 1 to {MAX_USER_NAME} characters, got {}",
                s.chars().count()
            )));
        }
        if !s
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
        {
            return Err(Error::invalid(format!(
                "user name {s:?} may only contain letters, digits, '_', '.' and '-'"
            )));
        }
        Ok(UserName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for UserName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        UserName::new(s)
    }
}

/// A post id: 16 bytes, a 6-byte creation-time prefix and 10 bytes that make
/// it unique.
///
/// - Made by a node ([`PostId::new`]): `created_at_ms (6) | origin prefix (4)
///   | origin seq (6)`: unique without coordination (an origin never reuses a
///   seq).
/// - Made by a client ([`PostId::client`]): `created_at_ms (6) | random (10)`.
///   A signed post needs its id before any node sees it (the author signs
///   the id with the content), so the client makes it; 80 random bits make a
///   collision negligible, and a node refuses an id that already exists or
///   whose time is far from its own clock.
///
/// Either way ids sort by creation time (bytewise and in their hex text form
/// alike) and carry the time bucket they belong to.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PostId(pub [u8; 16]);

impl PostId {
    pub fn new(created_at_ms: u64, origin: &NodeId, seq: u64) -> Self {
        let mut b = [0u8; 16];
        b[..6].copy_from_slice(&created_at_ms.to_be_bytes()[2..]);
        b[6..10].copy_from_slice(&origin.0[..4]);
        b[10..].copy_from_slice(&seq.to_be_bytes()[2..]);
        PostId(b)
    }

    /// A client-made id: the creation time and 10 random bytes (the caller's
    /// randomness; see [`PostId::generate`]).
    pub fn client(created_at_ms: u64, random: [u8; 10]) -> Self {
        let mut b = [0u8; 16];
        b[..6].copy_from_slice(&created_at_ms.to_be_bytes()[2..]);
        b[6..].copy_from_slice(&random);
        PostId(b)
    }

    /// [`PostId::client`] with random bytes from the operating system.
    pub fn generate(created_at_ms: u64) -> Self {
        let mut random = [0u8; 10];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut random);
        Self::client(created_at_ms, random)
    }

    /// Milliseconds since the Unix epoch at which the post was created.
    pub fn created_at_ms(&self) -> u64 {
        let mut t = [0u8; 8];
        t[2..].copy_from_slice(&self.0[..6]);
        u64::from_be_bytes(t)
    }

    /// The time bucket of the post (see [`BUCKET_MS`]).
    pub fn bucket(&self) -> u64 {
        self.created_at_ms() / BUCKET_MS
    }
}

impl fmt::Display for PostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for PostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostId({self})")
    }
}

impl FromStr for PostId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        unhex::<16>("post id", s).map(PostId)
    }
}

/// Which document a delta changes.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum DocId {
    /// `post/<post id>`
    Post(PostId),
    /// `timeline/<author>/<bucket>`: where older versions listed one
    /// author's posts of a time bucket. Still decoded and applied, no longer
    /// written or read: lists are derived from posts ([`crate::lists`]).
    Timeline(UserName, u64),
    /// `public/<bucket>`: where older versions listed every post of a time
    /// bucket; like `Timeline`, decoded and applied, not written or read.
    Public(u64),
    /// `profile/<user>`: display name, public key, follows.
    Profile(UserName),
}

/// Longest document id text accepted from a peer.
pub const MAX_DOC_ID: usize = 128;

impl fmt::Display for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DocId::Post(id) => write!(f, "post/{id}"),
            DocId::Timeline(user, bucket) => write!(f, "timeline/{user}/{bucket}"),
            DocId::Public(bucket) => write!(f, "public/{bucket}"),
            DocId::Profile(user) => write!(f, "profile/{user}"),
        }
    }
}

impl FromStr for DocId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        if s.len() > MAX_DOC_ID {
            return Err(Error::Oversized {
                what: "document id",
                len: s.len(),
                max: MAX_DOC_ID,
            });
        }
        let bucket = |b: &str| {
            // Canonical decimal only, so that every id has one text form.
            if b.is_empty() || (b.len() > 1 && b.starts_with('0')) {
                return Err(Error::malformed("document id", "bad bucket number"));
            }
            b.parse::<u64>()
                .map_err(|_| Error::malformed("document id", "bad bucket number"))
        };
        let mut parts = s.split('/');
        let kind = parts.next().unwrap_or_default();
        let parts: Vec<&str> = parts.collect();
        let id = match (kind, parts.as_slice()) {
            ("post", [id]) => DocId::Post(id.parse()?),
            ("timeline", [user, b]) => DocId::Timeline(UserName::new(user)?, bucket(b)?),
            ("public", [b]) => DocId::Public(bucket(b)?),
            ("profile", [user]) => DocId::Profile(UserName::new(user)?),
            ("post" | "timeline" | "public" | "profile", _) => {
                return Err(Error::malformed(
                    "document id",
                    format!("{s:?} has the wrong parts"),
                ));
            }
            _ => return Err(Error::UnknownDocKind(s.chars().take(MAX_DOC_ID).collect())),
        };
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip() {
        let node = NodeId([7; 32]);
        assert_eq!(node.to_string().parse::<NodeId>().unwrap(), node);
        let post = PostId::new(1_700_000_000_123, &node, 42);
        assert_eq!(post.created_at_ms(), 1_700_000_000_123);
        assert_eq!(post.to_string().parse::<PostId>().unwrap(), post);
        for doc in [
            DocId::Post(post),
            DocId::Timeline(UserName::new("ann").unwrap(), 9),
            DocId::Public(0),
            DocId::Profile(UserName::new("b.o-b_1").unwrap()),
        ] {
            assert_eq!(doc.to_string().parse::<DocId>().unwrap(), doc);
        }
    }

    #[test]
    fn client_ids_carry_their_time_and_differ() {
        let t = 1_700_000_000_123;
        let a = PostId::generate(t);
        let b = PostId::generate(t);
        assert_ne!(a, b);
        assert_eq!(a.created_at_ms(), t);
        assert_eq!(PostId::client(t, [9; 10]).0[6..], [9; 10]);
        assert!(PostId::generate(t + 1) > PostId::client(t, [0xff; 10]));
        assert_eq!(a.to_string().parse::<PostId>().unwrap(), a);
    }

    #[test]
    fn post_ids_sort_by_time() {
        let a = NodeId([0xff; 32]);
        let b = NodeId([0; 32]);
        let older = PostId::new(1000, &a, 99);
        let newer = PostId::new(1001, &b, 1);
        assert!(older < newer);
        assert!(older.to_string() < newer.to_string());
    }

    #[test]
    fn bad_ids_are_errors() {
        assert!(matches!(
            "blob/1".parse::<DocId>(),
            Err(Error::UnknownDocKind(_))
        ));
        assert!(matches!(
            "public/01".parse::<DocId>(),
            Err(Error::Malformed { .. })
        ));
        assert!(matches!(
            "public/1/2".parse::<DocId>(),
            Err(Error::Malformed { .. })
        ));
        assert!("profile/a b".parse::<DocId>().is_err());
        assert!("post/XYZ".parse::<DocId>().is_err());
        assert!(UserName::new("").is_err());
        assert!(UserName::new(&"x".repeat(33)).is_err());
        assert!("ABCDEF".parse::<NodeId>().is_err());
    }
}
