//! The delta envelope: the unit of replication.
//!
//! A delta is one automerge change of one document, stamped by its origin
//! node with a gapless per-origin sequence number and signed over a canonical
//! binary encoding:
//!
//! ```text
//! magic "HSD1" | origin (32) | seq (u64 BE) | origin_time_ms (u64 BE)
//! | doc id len (u16 BE) | doc id (utf-8) | change len (u32 BE) | change
//! | signature (64, ed25519 by origin over every byte before it)
//! ```
//!
//! The encoding is the signed message, so a relay forwards the exact bytes it
//! received and nothing can be re-encoded differently. Decoding checks the
//! total size first and every length against the bytes actually present, so
//! a decoder never allocates more than its input.

use crate::error::{Error, Result};
use crate::identity::{Keypair, verify};
use crate::ids::{DocId, MAX_DOC_ID, NodeId};

/// Largest encoded delta accepted or produced (gossipsub's message limit).
pub const MAX_DELTA_BYTES: usize = 64 * 1024;

const MAGIC: &[u8; 4] = b"HSD1";
const SIGNATURE_LEN: usize = 64;
const HEADER_LEN: usize = 4 + 32 + 8 + 8 + 2;
/// Smallest possible encoding: header, empty doc id, change length, signature.
const MIN_LEN: usize = HEADER_LEN + 4 + SIGNATURE_LEN;

/// A signed change of one document by one origin.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Delta {
    pub origin: NodeId,
    /// Gapless per origin, starting at 1.
    pub seq: u64,
    pub doc: DocId,
    /// automerge change bytes.
    pub change: Vec<u8>,
    /// The origin's wall clock when it made the change (replication delay).
    pub origin_time_ms: u64,
    pub signature: [u8; 64],
}

impl Delta {
    /// Builds and signs a delta; fails if it would exceed [`MAX_DELTA_BYTES`].
    pub fn sign(
        key: &Keypair,
        seq: u64,
        doc: DocId,
        change: Vec<u8>,
        origin_time_ms: u64,
    ) -> Result<Self> {
        let mut delta = Delta {
            origin: key.id(),
            seq,
            doc,
            change,
            origin_time_ms,
            signature: [0; 64],
        };
        let unsigned = delta.unsigned_bytes()?;
        delta.signature = key.sign(&unsigned);
        Ok(delta)
    }

    fn unsigned_bytes(&self) -> Result<Vec<u8>> {
        let doc = self.doc.to_string();
        let len = MIN_LEN + doc.len() + self.change.len();
        if len > MAX_DELTA_BYTES {
            return Err(Error::Oversized {
                what: "delta",
                len,
                max: MAX_DELTA_BYTES,
            });
        }
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(self.origin.as_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.origin_time_ms.to_be_bytes());
        out.extend_from_slice(&(doc.len() as u16).to_be_bytes());
        out.extend_from_slice(doc.as_bytes());
        out.extend_from_slice(&(self.change.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.change);
        Ok(out)
    }

    /// The canonical encoding (what is signed, stored and sent).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self
            .unsigned_bytes()
            .expect("a constructed delta is within bounds");
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes without checking the signature (see [`Delta::verify`]).
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_DELTA_BYTES {
            return Err(Error::Oversized {
                what: "delta",
                len: bytes.len(),
                max: MAX_DELTA_BYTES,
            });
        }
        if bytes.len() < MIN_LEN {
            return Err(Error::malformed(
                "delta",
                format!("{} bytes is too short", bytes.len()),
            ));
        }
        let mut r = Reader(bytes);
        if r.take(4)? != MAGIC {
            return Err(Error::malformed("delta", "bad magic (not a hearsay delta)"));
        }
        let origin = NodeId(r.array()?);
        let seq = u64::from_be_bytes(r.array()?);
        if seq == 0 {
            return Err(Error::malformed("delta", "seq 0 (sequences start at 1)"));
        }
        let origin_time_ms = u64::from_be_bytes(r.array()?);
        let doc_len = u16::from_be_bytes(r.array()?) as usize;
        if doc_len > MAX_DOC_ID {
            return Err(Error::Oversized {
                what: "document id",
                len: doc_len,
                max: MAX_DOC_ID,
            });
        }
        let doc = std::str::from_utf8(r.take(doc_len)?)
            .map_err(|_| Error::malformed("delta", "document id is not utf-8"))?
            .parse::<DocId>()?;
        let change_len = u32::from_be_bytes(r.array()?) as usize;
        let change = r.take(change_len)?.to_vec();
        let signature = r.array()?;
        if !r.0.is_empty() {
            return Err(Error::malformed(
                "delta",
                format!("{} trailing bytes", r.0.len()),
            ));
        }
        Ok(Delta {
            origin,
            seq,
            doc,
            change,
            origin_time_ms,
            signature,
        })
    }

    /// Checks the origin's signature.
    pub fn verify(&self) -> Result<()> {
        let unsigned = self.unsigned_bytes()?;
        if verify(&self.origin, &unsigned, &self.signature) {
            Ok(())
        } else {
            Err(Error::BadSignature {
                origin: self.origin,
                seq: self.seq,
            })
        }
    }

    /// Decodes and verifies: the only way peer bytes should become a delta.
    pub fn decode_verified(bytes: &[u8]) -> Result<Self> {
        let delta = Self::decode(bytes)?;
        delta.verify()?;
        Ok(delta)
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.0.len() {
            return Err(Error::malformed(
                "delta",
                format!("length {n} runs past the end ({} bytes left)", self.0.len()),
            ));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("take returned N bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Keypair, Delta) {
        let key = Keypair::generate();
        let delta = Delta::sign(&key, 3, DocId::Public(7), b"change-bytes".to_vec(), 1234).unwrap();
        (key, delta)
    }

    #[test]
    fn round_trip_and_verify() {
        let (_, delta) = sample();
        let bytes = delta.encode();
        let back = Delta::decode_verified(&bytes).unwrap();
        assert_eq!(back, delta);
    }

    #[test]
    fn every_single_byte_flip_is_rejected() {
        let (_, delta) = sample();
        let bytes = delta.encode();
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut b = bytes.clone();
                b[i] ^= bit;
                assert!(
                    Delta::decode_verified(&b).is_err(),
                    "flip at byte {i} accepted"
                );
            }
        }
    }

    #[test]
    fn oversized_is_refused_both_ways() {
        let key = Keypair::generate();
        let big = vec![0u8; MAX_DELTA_BYTES];
        assert!(matches!(
            Delta::sign(&key, 1, DocId::Public(1), big.clone(), 0),
            Err(Error::Oversized { .. })
        ));
        let bigger = vec![0u8; MAX_DELTA_BYTES + 1];
        assert!(matches!(
            Delta::decode(&bigger),
            Err(Error::Oversized { .. })
        ));
    }

    #[test]
    fn truncations_never_panic() {
        let (_, delta) = sample();
        let bytes = delta.encode();
        for n in 0..bytes.len() {
            assert!(Delta::decode(&bytes[..n]).is_err());
        }
    }
}
