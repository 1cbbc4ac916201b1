//! What a replica did with one remote delta.
//!
//! One typed answer per delta, from [`Replica::receive_groups`](crate::Replica::receive_groups)
//! to everything that acts on it: gossip acceptance (forward, ignore, or
//! penalise the sender), metrics, `/stats` and the anti-entropy trigger all
//! derive from this enum, so they cannot disagree.

use crate::error::ErrorKind;

/// The fate of one remote delta.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Stored: the delta is in the version vector and goes to the log. Its
    /// change is applied, or held by automerge until its dependencies
    /// arrive, or (a validly signed change automerge refuses) kept inert;
    /// every replica treats it the same way, so replicas still converge.
    Accepted,
    /// Waiting in the bounded out-of-order buffer for an earlier seq of its
    /// origin: a gap, to repair by anti-entropy.
    Buffered,
    /// Already held or already buffered.
    Duplicate,
    /// Refused, nothing stored.
    Rejected(ErrorKind),
}

impl Verdict {
    /// Whether this delta shows that an earlier one is missing.
    pub fn is_gap(self) -> bool {
        matches!(
            self,
            Verdict::Buffered | Verdict::Rejected(ErrorKind::SeqGap)
        )
    }

    /// Whether the sender sent something no honest node produces.
    pub fn blames_sender(self) -> bool {
        matches!(self, Verdict::Rejected(k) if k.blames_sender())
    }

    /// Whether the delta is now held (stored or buffered): worth forwarding.
    pub fn is_new(self) -> bool {
        matches!(self, Verdict::Accepted | Verdict::Buffered)
    }
}
