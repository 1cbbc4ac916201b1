//! The one error type of the crate: every way a delta, a token, a key file or
//! an operation can be refused, each a variant a caller can count and report.

use crate::ids::NodeId;

/// Why the data model refused something.
///
/// Rejections of peer input (`BadSignature`, `Malformed`, `Oversized`,
/// `SeqGap`, `UnknownDocKind`) leave the replica untouched.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The origin's ed25519 signature does not match the delta.
    #[error("bad signature on delta {origin}:{seq}")]
    BadSignature { origin: NodeId, seq: u64 },
    /// Bytes that do not decode as what they claim to be.
    #[error("malformed {what}: {why}")]
    Malformed { what: &'static str, why: String },
    /// An input over its hard size bound.
    #[error("{what} of {len} bytes exceeds the limit of {max} bytes")]
    Oversized {
        what: &'static str,
        len: usize,
        max: usize,
    },
    /// A delta too far ahead of the origin's contiguous sequence to buffer.
    #[error("delta {origin}:{got} is too far ahead of {have} (buffer bound {bound})")]
    SeqGap {
        origin: NodeId,
        have: u64,
        got: u64,
        bound: u64,
    },
    /// A document id whose kind this version does not know.
    #[error("unknown document kind in id {0:?}")]
    UnknownDocKind(String),
    /// An operation that is not valid for the current state or its arguments.
    #[error("invalid operation: {0}")]
    InvalidOperation(String),
    /// A key file that is missing, unreadable or not a hearsay key.
    #[error("key file {path}: {why}")]
    KeyFile { path: String, why: String },
    /// The document provider failed to load or save.
    #[error("document store: {0}")]
    Store(String),
    /// automerge refused a change or a saved document.
    #[error("automerge: {0}")]
    Automerge(#[from] automerge::AutomergeError),
}

impl Error {
    pub(crate) fn malformed(what: &'static str, why: impl Into<String>) -> Self {
        Error::Malformed {
            what,
            why: why.into(),
        }
    }

    pub(crate) fn invalid(why: impl Into<String>) -> Self {
        Error::InvalidOperation(why.into())
    }

    /// A short, stable label for metrics (bounded label set).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::BadSignature { .. } => "bad_signature",
            Error::Malformed { .. } => "malformed",
            Error::Oversized { .. } => "oversized",
            Error::SeqGap { .. } => "seq_gap",
            Error::UnknownDocKind(_) => "unknown_doc_kind",
            Error::InvalidOperation(_) => "invalid_operation",
            Error::KeyFile { .. } => "key_file",
            Error::Store(_) => "store",
            Error::Automerge(_) => "automerge",
        }
    }
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
