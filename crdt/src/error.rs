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
    /// A delta of an origin proven to have equivocated (signed two
    /// different deltas with one seq): its deltas are refused from then on.
    #[error("delta {origin}:{seq} of an origin that equivocated")]
    Equivocated { origin: NodeId, seq: u64 },
    /// A document id whose kind this version does not know.
    #[error("unknown document kind in id {0:?}")]
    UnknownDocKind(String),
    /// A user's signature (of a post, a registration, an action) that does
    /// not verify with the key it names.
    #[error("bad user signature: {0}")]
    BadUserSignature(String),
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

    /// The typed reason: what callers count, report and decide on.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::BadSignature { .. } | Error::BadUserSignature(_) => ErrorKind::BadSignature,
            Error::Malformed { .. } => ErrorKind::Malformed,
            Error::Oversized { .. } => ErrorKind::Oversized,
            Error::SeqGap { .. } => ErrorKind::SeqGap,
            Error::Equivocated { .. } => ErrorKind::Equivocated,
            Error::UnknownDocKind(_) => ErrorKind::UnknownDocKind,
            Error::InvalidOperation(_) => ErrorKind::InvalidOperation,
            Error::KeyFile { .. } => ErrorKind::KeyFile,
            Error::Store(_) => ErrorKind::Store,
            Error::Automerge(_) => ErrorKind::Automerge,
        }
    }
}

/// The kind of an [`Error`], without its details: a bounded set, so it can
/// label metrics and drive decisions (is the sender at fault? is it a gap?).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    BadSignature,
    Malformed,
    Oversized,
    SeqGap,
    Equivocated,
    UnknownDocKind,
    InvalidOperation,
    KeyFile,
    Store,
    Automerge,
}

impl ErrorKind {
    /// Every kind, in a fixed order (for metrics and stats).
    pub const ALL: [ErrorKind; 10] = [
        ErrorKind::BadSignature,
        ErrorKind::Malformed,
        ErrorKind::Oversized,
        ErrorKind::SeqGap,
        ErrorKind::Equivocated,
        ErrorKind::UnknownDocKind,
        ErrorKind::InvalidOperation,
        ErrorKind::KeyFile,
        ErrorKind::Store,
        ErrorKind::Automerge,
    ];

    /// A short, stable label (metrics, `/stats`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadSignature => "bad_signature",
            ErrorKind::Malformed => "malformed",
            ErrorKind::Oversized => "oversized",
            ErrorKind::SeqGap => "seq_gap",
            ErrorKind::Equivocated => "equivocated",
            ErrorKind::UnknownDocKind => "unknown_doc_kind",
            ErrorKind::InvalidOperation => "invalid_operation",
            ErrorKind::KeyFile => "key_file",
            ErrorKind::Store => "store",
            ErrorKind::Automerge => "automerge",
        }
    }

    /// Whether a peer that sent input refused with this kind sent something
    /// no honest node produces (bad signature, malformed, oversized, unknown
    /// document kind). A seq gap or a local storage failure is not the
    /// sender's fault.
    pub fn blames_sender(self) -> bool {
        matches!(
            self,
            ErrorKind::BadSignature
                | ErrorKind::Malformed
                | ErrorKind::Oversized
                | ErrorKind::UnknownDocKind
        )
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
