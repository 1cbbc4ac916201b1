//! Signed client writes: the rules a node applies around user keys.
//!
//! No node holds a user's secret. A user's key signs on the client (the
//! messages are in [`hearsay_crdt::signing`]), and the node checks, on the
//! core thread with the core's clock (so the rules are tested with an
//! injected time):
//!
//! | write | signed by | checked by the node |
//! |---|---|---|
//! | register a name (`POST /api/v0/users`) | the key registered | signature (proof of possession); the name is free or already this key's ([`crate::names`]) |
//! | signed post (`POST /api/v0/p` with `id`, `author_key`, `signature`) | the author | signature (by the replica); key = the name's registered key; id time within the clock window; id not taken |
//! | unsigned post | nobody | author name has no registered key (else refused: sign, or post anonymously) |
//! | follow, unfollow | the user | when the user has a registered key: signature by it, `at_ms` within the window, not a replay; without a key, unsigned |
//! | edit, delete of a signed post | the post's author key | signature, `at_ms` within the window, not a replay |
//! | edit, delete of an unsigned post | nobody | nothing: anyone may edit or delete it |
//!
//! What is not checked, and why:
//! - Only the original content of a post is signed and kept in the post
//!   document, so any reader can verify it (`Post::signed`). Edits and
//!   deletes are authorised by the node that accepts them; their signature
//!   is not stored, and a peer's delta is trusted on its origin's signature.
//!   So `signed: true` says the author wrote the original body, not every
//!   edit after it.
//! - Replays are refused per node, for as long as the clock window lasts:
//!   a signed request captured in transit can be applied once more on
//!   another node within that time (a follow or a delete then changes
//!   nothing; an edit would be applied twice).
//! - `Post::signed` checks the key kept in the post. Whether that key is
//!   still the name's key is a separate question (the registry can change
//!   its answer after a partition, see [`crate::names`]): compare
//!   `author_key` with the profile's `public_key`.

use std::collections::{BTreeSet, HashMap};

/// How far a client-stated time (the time prefix of a client-made post id,
/// an action's `at_ms`) may be from the node's clock, either way.
pub const CLOCK_WINDOW_MS: u64 = 5 * 60_000;

/// Signed actions remembered for replay refusal. An action leaves the memory
/// once its `at_ms` is outside the clock window (it would be refused as stale
/// anyway); more than this many within one window are refused as busy.
pub const MAX_REMEMBERED: usize = 65_536;

/// A user's signature of an action at their time `at_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserProof {
    pub at_ms: u64,
    pub signature: [u8; 64],
}

/// Checks a client-stated time against the node's clock.
pub fn check_clock(what: &str, at_ms: u64, now_ms: u64) -> Result<(), String> {
    let off = at_ms.abs_diff(now_ms);
    if off > CLOCK_WINDOW_MS {
        let side = if at_ms > now_ms { "ahead of" } else { "behind" };
        return Err(format!(
            "{what} is {}s {side} this node's clock; the limit is {}s either way (check the client's clock, and sign again)",
            off / 1000,
            CLOCK_WINDOW_MS / 1000
        ));
    }
    Ok(())
}

/// Why a signed action cannot be remembered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unfit {
    /// The same signature was already used on this node.
    Replayed,
    /// The memory is full of actions still inside the window.
    Full,
}

/// The signed actions this node accepted within the clock window.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    seen: HashMap<[u8; 64], u64>,
    by_time: BTreeSet<(u64, [u8; 64])>,
}

impl ReplayGuard {
    /// Whether `signature` may be used now: forgets what has left the window,
    /// then refuses a signature already used, or any when the memory is full.
    pub fn check(&mut self, signature: &[u8; 64], now_ms: u64) -> Result<(), Unfit> {
        let expired = now_ms.saturating_sub(CLOCK_WINDOW_MS);
        while let Some(&(at, sig)) = self.by_time.first()
            && at < expired
        {
            self.by_time.pop_first();
            self.seen.remove(&sig);
        }
        if self.seen.contains_key(signature) {
            return Err(Unfit::Replayed);
        }
        if self.seen.len() >= MAX_REMEMBERED {
            return Err(Unfit::Full);
        }
        Ok(())
    }

    /// Remembers a signature just used (after [`ReplayGuard::check`] and the
    /// write it authorised succeeded).
    pub fn remember(&mut self, signature: [u8; 64], at_ms: u64) {
        if self.seen.insert(signature, at_ms).is_none() {
            self.by_time.insert((at_ms, signature));
        }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_700_000_000_000;

    #[test]
    fn the_clock_window_is_five_minutes_either_way() {
        assert!(check_clock("at_ms", T, T).is_ok());
        assert!(check_clock("at_ms", T + CLOCK_WINDOW_MS, T).is_ok());
        assert!(check_clock("at_ms", T - CLOCK_WINDOW_MS, T).is_ok());
        let e = check_clock("at_ms", T + CLOCK_WINDOW_MS + 1, T).unwrap_err();
        assert!(e.contains("ahead of") && e.contains("300s"), "{e}");
        let e = check_clock("the post id's time", 0, T).unwrap_err();
        assert!(
            e.starts_with("the post id's time") && e.contains("behind"),
            "{e}"
        );
    }

    #[test]
    fn a_signature_is_used_once_within_the_window() {
        let mut g = ReplayGuard::default();
        assert_eq!(g.check(&[1; 64], T), Ok(()));
        g.remember([1; 64], T);
        assert_eq!(g.check(&[1; 64], T + 1), Err(Unfit::Replayed));
        assert_eq!(g.check(&[2; 64], T + 1), Ok(()));
        // Once out of the window it is forgotten (the clock check refuses
        // it from then on).
        assert_eq!(g.check(&[1; 64], T + CLOCK_WINDOW_MS + 1), Ok(()));
        assert!(g.is_empty());
    }

    #[test]
    fn a_full_memory_refuses_rather_than_forgets() {
        let mut g = ReplayGuard::default();
        for i in 0..MAX_REMEMBERED {
            let mut sig = [0u8; 64];
            sig[..8].copy_from_slice(&(i as u64).to_be_bytes());
            g.remember(sig, T);
        }
        assert_eq!(g.len(), MAX_REMEMBERED);
        assert_eq!(g.check(&[0xff; 64], T), Err(Unfit::Full));
        assert_eq!(g.check(&[0xff; 64], T + CLOCK_WINDOW_MS + 1), Ok(()));
    }
}
