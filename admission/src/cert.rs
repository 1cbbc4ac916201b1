//! The operator's key, the certificates it signs for nodes, and the
//! revocations that withdraw them.
//!
//! Both are small fixed-layout binary messages, signed by the operator over
//! a domain-separated prefix of their own encoding, so a certificate can
//! never be replayed as a revocation (or as anything else hearsay signs)
//! and the bytes that travel are exactly the bytes that were signed. The
//! decoders check the layout only (lengths, magic, region text, no trailing
//! bytes) and refuse anything longer than the largest valid encoding before
//! reading a byte of it; [`Certificate::verify`] and [`Revocation::verify`]
//! then check the operator and the signature.
//!
//! Certificate (`HSC1`), 149 to 213 bytes:
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `HSC1` |
//! | 32 | operator public key |
//! | 32 | node public key (its [`NodeId`]) |
//! | 8 | issued, unix ms, big-endian |
//! | 8 | expires, unix ms, big-endian; 0 = never |
//! | 1 | region length, at most 64 |
//! | 0..=64 | region, UTF-8 without control characters |
//! | 64 | ed25519 signature over `hearsay certificate v1\0` and every byte above |
//!
//! Revocation (`HSR1`), 140 bytes: magic `HSR1`, operator 32, node 32,
//! issued 8 (big-endian unix ms), then the signature over
//! `hearsay revocation v1\0` and every byte before it.
//!
//! Text form of both: base64url without padding of the binary encoding
//! (what an operator pastes into a node's config or the revoke API).

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hearsay_crdt::identity::verify;
use hearsay_crdt::{Keypair, NodeId};

/// Magic of a certificate encoding.
pub const CERTIFICATE_MAGIC: &[u8; 4] = b"HSC1";
/// Magic of a revocation encoding.
pub const REVOCATION_MAGIC: &[u8; 4] = b"HSR1";
/// Longest region name, in bytes.
pub const MAX_REGION_BYTES: usize = 64;
/// Shortest certificate encoding (empty region).
pub const MIN_CERTIFICATE_BYTES: usize = 4 + 32 + 32 + 8 + 8 + 1 + 64;
/// Longest certificate encoding (a 64-byte region); anything longer is
/// refused before it is parsed.
pub const MAX_CERTIFICATE_BYTES: usize = 4 + 32 + 32 + 8 + 8 + 1 + 64 + 64;
/// The (only) length of a revocation encoding.
pub const REVOCATION_BYTES: usize = 4 + 32 + 32 + 8 + 64;
/// Longest text form of a certificate (base64url of
/// [`MAX_CERTIFICATE_BYTES`]), after trimming whitespace.
pub const MAX_CERTIFICATE_TEXT: usize = base64_len(MAX_CERTIFICATE_BYTES);
/// Length of the text form of a revocation, after trimming whitespace.
pub const MAX_REVOCATION_TEXT: usize = base64_len(REVOCATION_BYTES);

const CERTIFICATE_DOMAIN: &[u8] = b"hearsay certificate v1\0";
const REVOCATION_DOMAIN: &[u8] = b"hearsay revocation v1\0";
const SIGNATURE_BYTES: usize = 64;

/// Length of unpadded base64 of `n` bytes.
const fn base64_len(n: usize) -> usize {
    (n * 4).div_ceil(3)
}

/// Why a certificate or revocation was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("{what} of {len} bytes is longer than the {max} bytes allowed")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{what} is truncated: {len} bytes, at least {need} needed")]
    Truncated {
        what: &'static str,
        len: usize,
        need: usize,
    },
    #[error("{what} does not start with its magic {expected:?}")]
    BadMagic {
        what: &'static str,
        expected: &'static str,
    },
    #[error("region {why}")]
    BadRegion { why: String },
    #[error("certificate expiry {expires_ms} ms is not after its issue time {issued_ms} ms")]
    BadExpiry { issued_ms: u64, expires_ms: u64 },
    #[error("{what} has {extra} bytes after its signature")]
    TrailingBytes { what: &'static str, extra: usize },
    #[error("{what} is signed by operator {found}, not by this mesh's operator {expected}")]
    WrongOperator {
        what: &'static str,
        expected: OperatorId,
        found: OperatorId,
    },
    #[error("{what} signature does not verify against operator {operator}")]
    BadSignature {
        what: &'static str,
        operator: OperatorId,
    },
    #[error("{what} text is not base64url without padding: {why}")]
    BadText { what: &'static str, why: String },
    #[error("operator id {why}")]
    BadOperatorId { why: String },
}

/// An operator's public key: the one key whose certificates admit nodes to
/// a closed mesh.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OperatorId(pub [u8; 32]);

impl OperatorId {
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The same key as a [`NodeId`] (what signatures are checked against).
    fn key(&self) -> NodeId {
        NodeId(self.0)
    }
}

impl fmt::Display for OperatorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.key(), f)
    }
}

impl fmt::Debug for OperatorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.key().to_string();
        write!(f, "OperatorId({})", &hex[..12])
    }
}

impl FromStr for OperatorId {
    type Err = CertError;

    /// 64 lowercase hex digits (surrounding whitespace ignored).
    fn from_str(s: &str) -> Result<Self, CertError> {
        s.trim()
            .parse::<NodeId>()
            .map(|n| OperatorId(n.0))
            .map_err(|e| CertError::BadOperatorId { why: e.to_string() })
    }
}

/// The operator's signing key. Kept offline by the operator: nodes only
/// need its [`OperatorId`].
#[derive(Clone, Debug)]
pub struct OperatorKey {
    keypair: Keypair,
}

impl OperatorKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        Self::from_keypair(Keypair::generate())
    }

    pub fn from_keypair(keypair: Keypair) -> Self {
        OperatorKey { keypair }
    }

    pub fn id(&self) -> OperatorId {
        OperatorId(self.keypair.id().0)
    }

    /// Reads a key file (the format of [`Keypair::load`]).
    pub fn load(path: &Path) -> hearsay_crdt::Result<Self> {
        Keypair::load(path).map(Self::from_keypair)
    }

    /// Writes the key file with mode 0600, refusing to overwrite
    /// ([`Keypair::save`]).
    pub fn save(&self, path: &Path) -> hearsay_crdt::Result<()> {
        self.keypair.save(path)
    }

    /// Admits `node` to the mesh: a certificate naming it, its region, and
    /// when it stops being valid (`None`: never; revoke it to withdraw).
    pub fn admit(
        &self,
        node: NodeId,
        region: &str,
        issued_ms: u64,
        expires_ms: Option<u64>,
    ) -> Result<Certificate, CertError> {
        check_region(region.as_bytes())?;
        if let Some(expires_ms) = expires_ms
            && expires_ms <= issued_ms
        {
            return Err(CertError::BadExpiry {
                issued_ms,
                expires_ms,
            });
        }
        let mut cert = Certificate {
            operator: self.id(),
            node,
            region: region.to_owned(),
            issued_ms,
            expires_ms,
            signature: [0; 64],
        };
        cert.signature = self.keypair.sign(&cert.signed_bytes());
        Ok(cert)
    }

    /// Withdraws `node` from the mesh, for good: every node that learns the
    /// revocation refuses that key whatever certificate it shows.
    pub fn revoke(&self, node: NodeId, issued_ms: u64) -> Revocation {
        let mut rev = Revocation {
            operator: self.id(),
            node,
            issued_ms,
            signature: [0; 64],
        };
        rev.signature = self.keypair.sign(&rev.signed_bytes());
        rev
    }
}

/// Region names: at most [`MAX_REGION_BYTES`] bytes of UTF-8 without
/// control characters (they end up in logs, metrics and the web UI).
fn check_region(bytes: &[u8]) -> Result<&str, CertError> {
    if bytes.len() > MAX_REGION_BYTES {
        return Err(CertError::BadRegion {
            why: format!(
                "is {} bytes, at most {MAX_REGION_BYTES} allowed",
                bytes.len()
            ),
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|_| CertError::BadRegion {
        why: "is not valid UTF-8".into(),
    })?;
    if text.chars().any(char::is_control) {
        return Err(CertError::BadRegion {
            why: "contains control characters".into(),
        });
    }
    Ok(text)
}

/// Reads fixed-size fields off a buffer whose length was checked first.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        head
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N));
        out
    }

    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.array())
    }
}

fn check_length(what: &'static str, bytes: &[u8], min: usize, max: usize) -> Result<(), CertError> {
    if bytes.len() > max {
        return Err(CertError::TooLong {
            what,
            len: bytes.len(),
            max,
        });
    }
    if bytes.len() < min {
        return Err(CertError::Truncated {
            what,
            len: bytes.len(),
            need: min,
        });
    }
    Ok(())
}

fn check_magic(what: &'static str, bytes: &[u8], magic: &'static [u8; 4]) -> Result<(), CertError> {
    if bytes.get(..4) != Some(&magic[..]) {
        return Err(CertError::BadMagic {
            what,
            expected: std::str::from_utf8(magic).unwrap_or("?"),
        });
    }
    Ok(())
}

fn from_text(what: &'static str, text: &str, max: usize) -> Result<Vec<u8>, CertError> {
    let text = text.trim();
    if text.len() > max {
        return Err(CertError::TooLong {
            what,
            len: text.len(),
            max,
        });
    }
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|e| CertError::BadText {
            what,
            why: e.to_string(),
        })
}

fn signed_message(domain: &[u8], body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(domain.len() + body.len());
    message.extend_from_slice(domain);
    message.extend_from_slice(body);
    message
}

/// The operator's statement that `node` belongs to the mesh, in `region`,
/// from `issued_ms` until `expires_ms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    pub operator: OperatorId,
    pub node: NodeId,
    /// Where the node runs (free text chosen by the operator, shown in
    /// metrics and the UI).
    pub region: String,
    /// When the operator signed it, unix ms (informational: validity does
    /// not depend on it, so clock skew between the operator's machine and
    /// the nodes cannot make a fresh certificate invalid).
    pub issued_ms: u64,
    /// Not valid from this unix ms on; `None`: never expires.
    pub expires_ms: Option<u64>,
    pub signature: [u8; 64],
}

impl Certificate {
    const WHAT: &'static str = "certificate";

    /// Every byte before the signature.
    fn body(&self) -> Vec<u8> {
        // A region set by hand past the bound is cut (and then fails to
        // verify): encoding never panics and never overflows the length byte.
        let region = &self.region.as_bytes()[..self.region.len().min(MAX_REGION_BYTES)];
        let mut out = Vec::with_capacity(MAX_CERTIFICATE_BYTES);
        out.extend_from_slice(CERTIFICATE_MAGIC);
        out.extend_from_slice(&self.operator.0);
        out.extend_from_slice(&self.node.0);
        out.extend_from_slice(&self.issued_ms.to_be_bytes());
        out.extend_from_slice(&self.expires_ms.unwrap_or(0).to_be_bytes());
        out.push(region.len() as u8);
        out.extend_from_slice(region);
        out
    }

    fn signed_bytes(&self) -> Vec<u8> {
        signed_message(CERTIFICATE_DOMAIN, &self.body())
    }

    /// The binary encoding (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.body();
        out.extend_from_slice(&self.signature);
        out
    }

    /// Parses an encoding, checking its layout only (not the signature: see
    /// [`Certificate::verify`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, CertError> {
        let what = Self::WHAT;
        check_length(what, bytes, MIN_CERTIFICATE_BYTES, MAX_CERTIFICATE_BYTES)?;
        check_magic(what, bytes, CERTIFICATE_MAGIC)?;
        let mut r = Reader { bytes: &bytes[4..] };
        let operator = OperatorId(r.array());
        let node = NodeId(r.array());
        let issued_ms = r.u64();
        let expires_ms = Some(r.u64()).filter(|&e| e != 0);
        let region_len = usize::from(r.take(1)[0]);
        if region_len > MAX_REGION_BYTES {
            return Err(CertError::BadRegion {
                why: format!("length {region_len} exceeds {MAX_REGION_BYTES} bytes"),
            });
        }
        let need = MIN_CERTIFICATE_BYTES + region_len;
        if bytes.len() < need {
            return Err(CertError::Truncated {
                what,
                len: bytes.len(),
                need,
            });
        }
        if bytes.len() > need {
            return Err(CertError::TrailingBytes {
                what,
                extra: bytes.len() - need,
            });
        }
        let region = check_region(r.take(region_len))?.to_owned();
        let signature = r.array();
        Ok(Certificate {
            operator,
            node,
            region,
            issued_ms,
            expires_ms,
            signature,
        })
    }

    /// Whether `operator` signed exactly this certificate.
    pub fn verify(&self, operator: &OperatorId) -> Result<(), CertError> {
        if self.operator != *operator {
            return Err(CertError::WrongOperator {
                what: Self::WHAT,
                expected: *operator,
                found: self.operator,
            });
        }
        check_region(self.region.as_bytes())?;
        if !verify(&operator.key(), &self.signed_bytes(), &self.signature) {
            return Err(CertError::BadSignature {
                what: Self::WHAT,
                operator: *operator,
            });
        }
        Ok(())
    }

    /// Not expired at `now` (unix ms).
    pub fn valid_at(&self, now: u64) -> bool {
        self.expires_ms.is_none_or(|e| now < e)
    }

    /// base64url (no padding) of [`Certificate::encode`].
    pub fn to_text(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.encode())
    }

    /// Parses [`Certificate::to_text`] (surrounding whitespace ignored).
    pub fn from_text(text: &str) -> Result<Self, CertError> {
        Self::decode(&from_text(Self::WHAT, text, MAX_CERTIFICATE_TEXT)?)
    }
}

/// The operator's statement that `node` no longer belongs to the mesh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    pub operator: OperatorId,
    pub node: NodeId,
    /// When the operator signed it, unix ms (informational).
    pub issued_ms: u64,
    pub signature: [u8; 64],
}

impl Revocation {
    const WHAT: &'static str = "revocation";

    fn body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(REVOCATION_BYTES);
        out.extend_from_slice(REVOCATION_MAGIC);
        out.extend_from_slice(&self.operator.0);
        out.extend_from_slice(&self.node.0);
        out.extend_from_slice(&self.issued_ms.to_be_bytes());
        out
    }

    fn signed_bytes(&self) -> Vec<u8> {
        signed_message(REVOCATION_DOMAIN, &self.body())
    }

    /// The binary encoding (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.body();
        out.extend_from_slice(&self.signature);
        out
    }

    /// Parses an encoding, checking its layout only (not the signature: see
    /// [`Revocation::verify`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, CertError> {
        let what = Self::WHAT;
        check_length(what, bytes, REVOCATION_BYTES, REVOCATION_BYTES)?;
        check_magic(what, bytes, REVOCATION_MAGIC)?;
        let mut r = Reader { bytes: &bytes[4..] };
        let rev = Revocation {
            operator: OperatorId(r.array()),
            node: NodeId(r.array()),
            issued_ms: r.u64(),
            signature: r.array::<SIGNATURE_BYTES>(),
        };
        debug_assert!(r.bytes.is_empty());
        Ok(rev)
    }

    /// Whether `operator` signed exactly this revocation.
    pub fn verify(&self, operator: &OperatorId) -> Result<(), CertError> {
        if self.operator != *operator {
            return Err(CertError::WrongOperator {
                what: Self::WHAT,
                expected: *operator,
                found: self.operator,
            });
        }
        if !verify(&operator.key(), &self.signed_bytes(), &self.signature) {
            return Err(CertError::BadSignature {
                what: Self::WHAT,
                operator: *operator,
            });
        }
        Ok(())
    }

    /// base64url (no padding) of [`Revocation::encode`].
    pub fn to_text(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.encode())
    }

    /// Parses [`Revocation::to_text`] (surrounding whitespace ignored).
    pub fn from_text(text: &str) -> Result<Self, CertError> {
        Self::decode(&from_text(Self::WHAT, text, MAX_REVOCATION_TEXT)?)
    }
}
