//! Proof that an origin equivocated: two different deltas it signed with
//! the same seq.
//!
//! Seqs are the backbone of replication: a version vector says "I hold
//! origin O up to seq n", and anti-entropy trusts that every replica's seq
//! n of O is the same delta. An origin that signs two different deltas with
//! one seq breaks that: replicas that saw different copies keep different
//! documents forever behind equal version vectors. Honest nodes never do it
//! (a seq is taken only after the delta is durable at its origin), so the
//! two signed envelopes are a proof anyone can check, without trusting
//! whoever relays it: both carry the origin's signature.
//!
//! Wire form (bounded: each delta at most [`MAX_DELTA_BYTES`]):
//!
//! ```text
//! magic "HSE1" | len a (u32 BE) | delta a | len b (u32 BE) | delta b
//! ```
//!
//! The two deltas are kept in a canonical order (the smaller signature
//! first), so every node that holds a proof of the same pair holds the same
//! bytes.

use crate::delta::{Delta, MAX_DELTA_BYTES};
use crate::error::{Error, Result};
use crate::ids::NodeId;

const MAGIC: &[u8; 4] = b"HSE1";
/// Largest encoded proof.
pub const MAX_PROOF_BYTES: usize = 4 + 2 * (4 + MAX_DELTA_BYTES);

/// Two different deltas signed by one origin with the same seq.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Equivocation {
    a: Delta,
    b: Delta,
}

impl Equivocation {
    /// Builds a proof from two deltas, checking everything a receiver will:
    /// same origin and seq, different envelopes, both signatures valid.
    pub fn new(one: Delta, other: Delta) -> Result<Self> {
        if one.origin != other.origin || one.seq != other.seq {
            return Err(Error::malformed(
                "equivocation proof",
                "the deltas are not of the same origin and seq",
            ));
        }
        if one == other {
            return Err(Error::malformed(
                "equivocation proof",
                "the two deltas are the same",
            ));
        }
        one.verify()?;
        other.verify()?;
        let (a, b) = if one.signature <= other.signature {
            (one, other)
        } else {
            (other, one)
        };
        Ok(Equivocation { a, b })
    }

    /// The origin that equivocated.
    pub fn origin(&self) -> NodeId {
        self.a.origin
    }

    /// The seq it signed twice.
    pub fn seq(&self) -> u64 {
        self.a.seq
    }

    /// The two signed envelopes.
    pub fn deltas(&self) -> (&Delta, &Delta) {
        (&self.a, &self.b)
    }

    pub fn encode(&self) -> Vec<u8> {
        let (a, b) = (self.a.encode(), self.b.encode());
        let mut out = Vec::with_capacity(4 + 8 + a.len() + b.len());
        out.extend_from_slice(MAGIC);
        for d in [a, b] {
            out.extend_from_slice(&(d.len() as u32).to_be_bytes());
            out.extend_from_slice(&d);
        }
        out
    }

    /// Decodes and checks a proof (both signatures included): what comes
    /// out of here is proof that the origin equivocated.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_PROOF_BYTES {
            return Err(Error::Oversized {
                what: "equivocation proof",
                len: bytes.len(),
                max: MAX_PROOF_BYTES,
            });
        }
        let rest = bytes.strip_prefix(MAGIC.as_slice()).ok_or_else(|| {
            Error::malformed("equivocation proof", "bad magic (not a hearsay proof)")
        })?;
        let (a, rest) = take_delta(rest)?;
        let (b, rest) = take_delta(rest)?;
        if !rest.is_empty() {
            return Err(Error::malformed(
                "equivocation proof",
                format!("{} trailing bytes", rest.len()),
            ));
        }
        Equivocation::new(a, b)
    }
}

fn take_delta(bytes: &[u8]) -> Result<(Delta, &[u8])> {
    let truncated = || Error::malformed("equivocation proof", "truncated");
    let (len, rest) = bytes.split_first_chunk::<4>().ok_or_else(truncated)?;
    let len = u32::from_be_bytes(*len) as usize;
    if len > rest.len() {
        return Err(truncated());
    }
    let (delta, rest) = rest.split_at(len);
    Ok((Delta::decode(delta)?, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DocId, Keypair};

    fn delta(key: &Keypair, seq: u64, change: &[u8]) -> Delta {
        let doc: DocId = "profile/ann".parse().expect("doc id");
        Delta::sign(key, seq, doc, change.to_vec(), 1).expect("signed")
    }

    #[test]
    fn two_signed_deltas_with_one_seq_are_a_proof_that_round_trips() {
        let key = Keypair::from_secret([7; 32]);
        let proof = Equivocation::new(delta(&key, 3, b"one"), delta(&key, 3, b"two")).unwrap();
        assert_eq!(proof.origin(), key.id());
        assert_eq!(proof.seq(), 3);
        let bytes = proof.encode();
        assert_eq!(Equivocation::decode(&bytes).unwrap(), proof);
        // Canonical: the order the deltas came in does not matter.
        let swapped = Equivocation::new(delta(&key, 3, b"two"), delta(&key, 3, b"one")).unwrap();
        assert_eq!(swapped.encode(), bytes);
    }

    #[test]
    fn anything_else_is_not_a_proof() {
        let key = Keypair::from_secret([7; 32]);
        let other = Keypair::from_secret([8; 32]);
        let same = delta(&key, 3, b"one");
        assert!(Equivocation::new(same.clone(), same.clone()).is_err());
        assert!(Equivocation::new(same.clone(), delta(&key, 4, b"two")).is_err());
        assert!(Equivocation::new(same.clone(), delta(&other, 3, b"two")).is_err());
        // A forged second copy (not signed by the origin) proves nothing.
        let mut forged = delta(&key, 3, b"two");
        forged.change = b"three".to_vec();
        assert!(Equivocation::new(same.clone(), forged).is_err());
        // Any flipped byte of a real proof is refused.
        let bytes = Equivocation::new(same, delta(&key, 3, b"two"))
            .unwrap()
            .encode();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(Equivocation::decode(&bad).is_err(), "flip at {i} accepted");
        }
        assert!(Equivocation::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(Equivocation::decode(&[]).is_err());
    }
}
