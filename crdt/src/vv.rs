//! Version vectors: `origin -> highest contiguous seq`.
//!
//! One structure serves as the anti-entropy digest (what do I have), the
//! resume token of client streams and the read-your-writes token. Because
//! seqs are gapless per origin, a vector names an exact set of deltas, and
//! the deltas one vector lacks against another are a list of seq ranges.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::{Error, Result};
use crate::ids::NodeId;

/// Most origins a token may name (bounds decoding of client input).
pub const MAX_TOKEN_ORIGINS: usize = 4096;
const TOKEN_VERSION: u8 = 1;

/// `origin -> highest seq such that every seq up to it is held`.
#[derive(Clone, Default, PartialEq, Eq, Debug)]
pub struct VersionVector(BTreeMap<NodeId, u64>);

impl VersionVector {
    pub fn new() -> Self {
        Self::default()
    }

    /// Highest contiguous seq held from `origin` (0 when none).
    pub fn get(&self, origin: &NodeId) -> u64 {
        self.0.get(origin).copied().unwrap_or(0)
    }

    /// Raises `origin` to `seq` (never lowers it).
    pub fn advance(&mut self, origin: NodeId, seq: u64) {
        if seq > 0 {
            let entry = self.0.entry(origin).or_insert(0);
            *entry = (*entry).max(seq);
        }
    }

    /// Sets `origin` to exactly `seq` (0 removes it).
    pub fn set(&mut self, origin: NodeId, seq: u64) {
        if seq == 0 {
            self.0.remove(&origin);
        } else {
            self.0.insert(origin, seq);
        }
    }

    /// Pointwise maximum.
    pub fn merge(&mut self, other: &VersionVector) {
        for (origin, seq) in &other.0 {
            self.advance(*origin, *seq);
        }
    }

    /// Whether every delta named by `other` is named by `self`.
    pub fn covers(&self, other: &VersionVector) -> bool {
        other.0.iter().all(|(o, s)| self.get(o) >= *s)
    }

    /// Partial order: `None` when the vectors are concurrent.
    pub fn compare(&self, other: &VersionVector) -> Option<Ordering> {
        match (self.covers(other), other.covers(self)) {
            (true, true) => Some(Ordering::Equal),
            (true, false) => Some(Ordering::Greater),
            (false, true) => Some(Ordering::Less),
            (false, false) => None,
        }
    }

    /// The seq ranges that `self` holds and `other` lacks, per origin.
    pub fn missing_from(&self, other: &VersionVector) -> Vec<(NodeId, RangeInclusive<u64>)> {
        self.0
            .iter()
            .filter_map(|(origin, &mine)| {
                let theirs = other.get(origin);
                (mine > theirs).then(|| (*origin, theirs + 1..=mine))
            })
            .collect()
    }

    /// Total number of deltas named: the node's revision.
    pub fn sum(&self) -> u64 {
        self.0.values().sum()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, &u64)> {
        self.0.iter()
    }

    /// Compact binary form: version byte, then per origin 32 key bytes and a
    /// LEB128 seq.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.0.len() * 36);
        out.push(TOKEN_VERSION);
        for (origin, seq) in &self.0 {
            out.extend_from_slice(origin.as_bytes());
            let mut v = *seq;
            loop {
                let byte = (v & 0x7f) as u8;
                v >>= 7;
                if v == 0 {
                    out.push(byte);
                    break;
                }
                out.push(byte | 0x80);
            }
        }
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let bad = |why: &str| Error::malformed("version vector", why.to_owned());
        let (&version, mut rest) = bytes.split_first().ok_or_else(|| bad("empty"))?;
        if version != TOKEN_VERSION {
            return Err(bad("unknown version"));
        }
        let mut vv = BTreeMap::new();
        while !rest.is_empty() {
            if vv.len() >= MAX_TOKEN_ORIGINS {
                return Err(Error::Oversized {
                    what: "version vector",
                    len: bytes.len(),
                    max: MAX_TOKEN_ORIGINS * 42,
                });
            }
            if rest.len() < 33 {
                return Err(bad("truncated entry"));
            }
            let origin = NodeId(rest[..32].try_into().expect("32 bytes"));
            rest = &rest[32..];
            let mut seq: u64 = 0;
            let mut shift = 0;
            loop {
                let (&byte, tail) = rest.split_first().ok_or_else(|| bad("truncated seq"))?;
                rest = tail;
                if shift == 63 && byte > 1 || shift > 63 {
                    return Err(bad("seq overflows u64"));
                }
                seq |= u64::from(byte & 0x7f) << shift;
                shift += 7;
                if byte & 0x80 == 0 {
                    break;
                }
            }
            if seq == 0 {
                return Err(bad("zero seq (origins at zero are omitted)"));
            }
            if vv.insert(origin, seq).is_some() {
                return Err(bad("origin named twice"));
            }
        }
        Ok(VersionVector(vv))
    }

    /// URL-safe token (base64url, no padding) of [`VersionVector::to_bytes`].
    pub fn to_token(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.to_bytes())
    }

    pub fn from_token(token: &str) -> Result<Self> {
        let max = 4 * (1 + MAX_TOKEN_ORIGINS * 42) / 3 + 4;
        if token.len() > max {
            return Err(Error::Oversized {
                what: "version vector token",
                len: token.len(),
                max,
            });
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|e| Error::malformed("version vector token", e.to_string()))?;
        Self::from_bytes(&bytes)
    }
}

impl FromIterator<(NodeId, u64)> for VersionVector {
    fn from_iter<I: IntoIterator<Item = (NodeId, u64)>>(iter: I) -> Self {
        let mut vv = VersionVector::new();
        for (o, s) in iter {
            vv.advance(o, s);
        }
        vv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(b: u8) -> NodeId {
        NodeId([b; 32])
    }

    #[test]
    fn merge_compare_missing() {
        let a: VersionVector = [(n(1), 5), (n(2), 3)].into_iter().collect();
        let b: VersionVector = [(n(1), 2), (n(3), 4)].into_iter().collect();
        assert_eq!(a.compare(&b), None);
        let mut m = a.clone();
        m.merge(&b);
        assert_eq!(m.compare(&a), Some(Ordering::Greater));
        assert_eq!(a.compare(&m), Some(Ordering::Less));
        assert_eq!(m.compare(&m.clone()), Some(Ordering::Equal));
        assert_eq!(a.missing_from(&b), vec![(n(1), 3..=5), (n(2), 1..=3)]);
        assert_eq!(m.sum(), 5 + 3 + 4);
    }

    #[test]
    fn token_round_trip() {
        let vv: VersionVector = [(n(1), 1), (n(2), 300), (n(3), u64::MAX)]
            .into_iter()
            .collect();
        let token = vv.to_token();
        assert!(
            token
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_eq!(VersionVector::from_token(&token).unwrap(), vv);
        assert_eq!(
            VersionVector::from_token(&VersionVector::new().to_token()).unwrap(),
            VersionVector::new()
        );
    }

    #[test]
    fn malformed_tokens_are_errors() {
        for bad in ["", "!!!", "AA", "AgAAAA", "AQE"] {
            assert!(VersionVector::from_token(bad).is_err(), "{bad:?}");
        }
        let mut bytes = VersionVector::from_iter([(n(1), 7)]).to_bytes();
        bytes.pop();
        assert!(VersionVector::from_bytes(&bytes).is_err());
        let mut overflow = vec![TOKEN_VERSION];
        overflow.extend_from_slice(&[9; 32]);
        overflow.extend_from_slice(&[0xff; 11]);
        assert!(VersionVector::from_bytes(&overflow).is_err());
    }
}
