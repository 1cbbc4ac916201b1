//! hearsay-admission: who may be part of a mesh, decided without IO.
//!
//! [`Admission`] decides which peers a node serves and whose deltas it
//! accepts; the libp2p actor only translates. Events go in with the current
//! time in unix milliseconds ([`Admission::handle`]), commands come out;
//! there is no clock, no randomness and no socket in here, and timers are
//! commands ([`Command::ArmTimer`]). So every rule below is unit-tested by
//! asserting the exact commands it emits.
//!
//! What it decides:
//! - **Membership.** A mesh is open (any key may join) or closed by an
//!   operator key ([`Config::operator`]). In a closed mesh the operator
//!   signs a [`Certificate`] for each node key, offline
//!   ([`OperatorKey::admit`]); a newly connected peer is sent this node's
//!   certificate ([`Command::Present`]) and must present its own, naming
//!   its own key, within `handshake_timeout_ms`, or it is disconnected.
//!   Until then only its hello gets through [`Admission::check`]. A peer
//!   whose certificate is bad, for another key, expired or revoked is
//!   disconnected and banned for `ban_ms`; an admitted peer is
//!   disconnected when its certificate expires.
//! - **Revocation.** An operator-signed [`Revocation`] names a node key for
//!   good. A new one is persisted, gossiped on and applied at once (every
//!   connection of that key is closed); it applies as well to a certificate
//!   that arrives after it. Revocations are never evicted, so they are
//!   bounded by refusing new ones past `max_revocations`.
//! - **Origins.** Deltas travel through relays, so membership is checked on
//!   the origin too ([`Admission::origin_allowed`]): a closed mesh takes
//!   deltas only from keys with a known valid certificate (presented,
//!   learnt from a signed status, or this node's own), and no mesh takes
//!   them from a key proven to equivocate.
//! - **Budgets.** Every message a peer sends spends from token buckets
//!   (messages, bytes, and sync requests, which cost a store read); over
//!   budget it is dropped with a strike, and so is every message no honest
//!   node sends ([`Event::Misbehaved`]). `limits.strikes` strikes within
//!   `strike_window_ms` disconnect and ban the peer.
//!
//! Everything a peer controls is bounded: peers by the connections the
//! caller reports, certificates, revocations, equivocators and bans by
//! [`Limits`] and [`MAX_BANS`]/[`MAX_EQUIVOCATORS`].
//!
//! Wire formats (details in [`cert`]): a certificate is `HSC1`, operator
//! key, node key, issued and expiry (unix ms, big-endian, 0 = never),
//! region (length byte, at most 64 bytes of UTF-8), then the operator's
//! ed25519 signature over `hearsay certificate v1\0` and all the bytes
//! before it: 149 to 213 bytes. A revocation is `HSR1`, operator key, node
//! key, issued, signature over `hearsay revocation v1\0` and the rest: 140
//! bytes. Their text form, for configs and the operator's tools, is
//! base64url without padding.
//!
//! ```
//! use hearsay_admission::{Admission, Command, Config, Event, OperatorKey};
//! use hearsay_crdt::Keypair;
//!
//! let operator = OperatorKey::generate();
//! let (me, peer) = (Keypair::generate().id(), Keypair::generate().id());
//! let mine = operator.admit(me, "eu-west", 0, None).unwrap();
//! let theirs = operator.admit(peer, "us-east", 0, Some(86_400_000)).unwrap();
//!
//! // Peers are any ordered id (the node uses libp2p's PeerId).
//! let config = Config { operator: Some(operator.id()), ..Config::default() };
//! let mut m: Admission<u32> = Admission::new(config, me, Some(mine));
//! let out = m.handle(1_000, Event::Connected { peer: 2, node: peer });
//! assert_eq!(out, [Command::Present { peer: 2 }, Command::ArmTimer { at: 6_000 }]);
//!
//! // Certificates travel as bytes; the machine decodes and verifies them.
//! let out = m.handle(1_200, Event::Presented { peer: 2, certificate: theirs.encode() });
//! assert_eq!(out[0], Command::Admit { peer: 2 });
//! assert!(m.origin_allowed(1_300, &peer).is_ok());
//! ```

pub mod cert;
mod machine;

#[cfg(test)]
mod tests;

pub use cert::{
    CertError, Certificate, MAX_CERTIFICATE_BYTES, MAX_REGION_BYTES, OperatorId, OperatorKey,
    Revocation,
};
pub use machine::{
    Admission, Check, Command, Config, Event, Kind, Limits, MAX_BANS, MAX_EQUIVOCATORS, PeerView,
    Reason,
};
