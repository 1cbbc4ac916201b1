//! Fuzzing the admission decoders: [`Certificate::decode`],
//! [`Revocation::decode`], their `from_text`, and the machine events that
//! carry peer bytes ([`Event::Presented`], [`Event::Learned`],
//! [`Event::Revocation`]).
//!
//! Property-based (proptest, no nightly): arbitrary bytes and strings, and
//! single-byte flips, truncations and extensions of valid encodings. Nothing
//! panics; whatever decodes re-encodes to the same bytes; any change to a
//! valid encoding is refused by decode or by verify; the machine never
//! admits a peer on bytes the operator did not sign.
//!
//! Cases per test default to 256; run longer with HEARSAY_FUZZ_CASES=100000
//! (e.g. `HEARSAY_FUZZ_CASES=100000 cargo test -p hearsay-admission --test fuzz`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hearsay_admission::cert::MAX_CERTIFICATE_TEXT;
use hearsay_admission::{
    Admission, Certificate, Command, Config, Event, MAX_CERTIFICATE_BYTES, OperatorKey, Revocation,
};
use hearsay_crdt::{Keypair, NodeId};
use proptest::prelude::*;
use proptest::sample::Index;

fn cases() -> u32 {
    std::env::var("HEARSAY_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        // Nothing written next to the sources: a failure prints its minimal
        // input instead.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn operator() -> OperatorKey {
    OperatorKey::from_keypair(Keypair::from_secret([200; 32]))
}

fn node(seed: u8) -> NodeId {
    Keypair::from_secret([seed; 32]).id()
}

/// A valid certificate of the test operator.
fn certificate() -> impl Strategy<Value = Certificate> {
    (
        any::<u8>(),
        "[a-zA-Z0-9 _.-]{0,64}",
        0..u64::MAX / 2,
        proptest::option::of(1..u64::MAX / 2),
    )
        .prop_map(|(seed, region, issued, expires)| {
            let expires = expires.map(|e| issued + e);
            operator()
                .admit(node(seed), &region, issued, expires)
                .unwrap()
        })
}

fn revocation() -> impl Strategy<Value = Revocation> {
    (any::<u8>(), any::<u64>()).prop_map(|(seed, issued)| operator().revoke(node(seed), issued))
}

/// What a decoded certificate may be: refused by decode or by verify.
fn refused_certificate(bytes: &[u8]) -> bool {
    refused(Certificate::decode(bytes), |c| {
        c.verify(&operator().id()).is_err()
    })
}

fn refused_revocation(bytes: &[u8]) -> bool {
    refused(Revocation::decode(bytes), |r| {
        r.verify(&operator().id()).is_err()
    })
}

/// Err, or Ok and refused by `check`.
fn refused<T, E>(result: Result<T, E>, check: impl FnOnce(T) -> bool) -> bool {
    result.map_or(true, check)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic_and_never_verify(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        if let Ok(c) = Certificate::decode(&bytes) {
            prop_assert_eq!(c.encode(), bytes.clone());
            prop_assert!(c.verify(&operator().id()).is_err());
        }
        if let Ok(r) = Revocation::decode(&bytes) {
            prop_assert_eq!(r.encode(), bytes.clone());
            prop_assert!(r.verify(&operator().id()).is_err());
        }
    }

    #[test]
    fn arbitrary_bytes_with_a_magic_never_panic(
        revocation in any::<bool>(),
        rest in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut bytes = if revocation { b"HSR1".to_vec() } else { b"HSC1".to_vec() };
        bytes.extend(rest);
        prop_assert!(refused_certificate(&bytes));
        prop_assert!(refused_revocation(&bytes));
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        if let Ok(c) = Certificate::from_text(&text) {
            prop_assert!(c.verify(&operator().id()).is_err());
        }
        if let Ok(r) = Revocation::from_text(&text) {
            prop_assert!(r.verify(&operator().id()).is_err());
        }
    }

    #[test]
    fn arbitrary_base64_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let text = URL_SAFE_NO_PAD.encode(&bytes);
        let decoded = Certificate::from_text(&text);
        if bytes.len() > MAX_CERTIFICATE_BYTES || text.len() > MAX_CERTIFICATE_TEXT {
            prop_assert!(decoded.is_err());
        }
        prop_assert!(refused(decoded, |c| c.verify(&operator().id()).is_err()));
        prop_assert!(refused(Revocation::from_text(&text), |r| r.verify(&operator().id()).is_err()));
    }

    #[test]
    fn valid_encodings_round_trip(c in certificate(), r in revocation()) {
        prop_assert_eq!(Certificate::decode(&c.encode()).unwrap(), c.clone());
        prop_assert_eq!(Certificate::from_text(&c.to_text()).unwrap(), c.clone());
        prop_assert!(c.verify(&operator().id()).is_ok());
        prop_assert_eq!(Revocation::decode(&r.encode()).unwrap(), r.clone());
        prop_assert_eq!(Revocation::from_text(&r.to_text()).unwrap(), r.clone());
        prop_assert!(r.verify(&operator().id()).is_ok());
    }

    #[test]
    fn a_flipped_certificate_byte_is_refused(c in certificate(), at in any::<Index>(), mask in 1..=255u8) {
        let mut bytes = c.encode();
        let i = at.index(bytes.len());
        bytes[i] ^= mask;
        prop_assert!(refused_certificate(&bytes), "flip at {}", i);
    }

    #[test]
    fn a_truncated_or_extended_certificate_is_refused(
        c in certificate(),
        cut in any::<Index>(),
        extra in proptest::collection::vec(any::<u8>(), 1..64),
    ) {
        let bytes = c.encode();
        let cut = cut.index(bytes.len());
        prop_assert!(Certificate::decode(&bytes[..cut]).is_err());
        let mut longer = bytes.clone();
        longer.extend(extra);
        prop_assert!(Certificate::decode(&longer).is_err());
    }

    #[test]
    fn a_flipped_revocation_byte_is_refused(r in revocation(), at in any::<Index>(), mask in 1..=255u8) {
        let mut bytes = r.encode();
        let i = at.index(bytes.len());
        bytes[i] ^= mask;
        prop_assert!(refused_revocation(&bytes), "flip at {}", i);
    }

    #[test]
    fn a_truncated_or_extended_revocation_is_refused(
        r in revocation(),
        cut in any::<Index>(),
        extra in proptest::collection::vec(any::<u8>(), 1..64),
    ) {
        let bytes = r.encode();
        prop_assert!(Revocation::decode(&bytes[..cut.index(bytes.len())]).is_err());
        let mut longer = bytes.clone();
        longer.extend(extra);
        prop_assert!(Revocation::decode(&longer).is_err());
    }

    #[test]
    fn a_changed_text_character_is_refused(
        c in certificate(),
        at in any::<Index>(),
        with in proptest::sample::select(
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/ .".to_vec(),
        ),
    ) {
        let text = c.to_text();
        let mut bytes = text.clone().into_bytes();
        let i = at.index(bytes.len());
        prop_assume!(bytes[i] != with);
        bytes[i] = with;
        let changed = String::from_utf8(bytes).unwrap();
        // Whitespace at either end is trimmed, so a space that replaces the
        // first or last character is a truncation: refused all the same.
        prop_assert!(
            refused(Certificate::from_text(&changed), |d| d != c && d.verify(&operator().id()).is_err()),
            "changed {} at {}", text, i
        );
    }

    /// The machine on peer bytes: never panics, never admits on a
    /// certificate the operator did not sign for the peer's key.
    #[test]
    fn the_machine_admits_only_on_valid_certificates(
        valid in certificate(),
        at in any::<Index>(),
        mask in 1..=255u8,
        junk in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let config = Config { operator: Some(operator().id()), ..Config::default() };
        let mut m: Admission<u32> = Admission::new(config, node(0), None);
        let mut flipped = valid.encode();
        let i = at.index(flipped.len());
        flipped[i] ^= mask;
        // Within the valid certificate's lifetime.
        let now = valid.issued_ms;
        for (peer, bytes) in [(1u32, flipped.clone()), (2, junk.clone())] {
            m.handle(now, Event::Connected { peer, node: valid.node });
            let out = m.handle(now, Event::Presented { peer, certificate: bytes.clone() });
            let admitted = out.contains(&Command::Admit { peer });
            prop_assert!(!admitted, "admitted on {:?}", bytes);
            m.handle(now, Event::Learned { certificate: bytes.clone() });
            m.handle(now, Event::Revocation { from: Some(peer), revocation: bytes });
        }
        prop_assert_eq!(m.revocations().count(), 0);
        m.handle(now, Event::Connected { peer: 3, node: valid.node });
        let out = m.handle(now, Event::Presented { peer: 3, certificate: valid.encode() });
        let admitted = out.contains(&Command::Admit { peer: 3 });
        prop_assert!(admitted);
    }
}
