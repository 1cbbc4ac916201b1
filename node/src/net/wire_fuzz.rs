//! Fuzzing the framing every peer reaches first: the request-response
//! codecs with the node's own size limits (a sync request and page, a
//! hello, a registry message) and the admission notice, each followed by
//! the decoders of what it carries (version vector, deltas, certificate,
//! revocations, equivocation proofs), as the network actor runs them.
//!
//! Property-based (proptest, no nightly): arbitrary bytes, and truncations,
//! flips, splices and extensions of valid encodings. Nothing panics, a
//! stream is never read past the codec's limit, and whatever decodes holds
//! no more bytes than were read.
//!
//! Cases default to 64; run longer with HEARSAY_FUZZ_CASES=100000
//! (`HEARSAY_FUZZ_CASES=100000 cargo test -p hearsay-node --lib net::wire_fuzz`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::AsyncRead;
use futures::executor::block_on;
use hearsay_admission::{Certificate, OperatorKey, Revocation};
use hearsay_crdt::{Delta, Equivocation, Keypair, VersionVector};
use libp2p::request_response::Codec;
use proptest::prelude::*;
use proptest::sample::Index;

use super::*;

/// A peer's stream: the bytes it sends, then (if `endless`) the same bytes
/// again forever. Counts what the codec read.
struct PeerStream {
    bytes: Vec<u8>,
    at: usize,
    endless: bool,
    read: u64,
}

impl PeerStream {
    fn new(bytes: &[u8], endless: bool) -> Self {
        PeerStream {
            bytes: bytes.to_vec(),
            at: 0,
            endless,
            read: 0,
        }
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut n = 0;
        while n < buf.len() {
            if self.at == self.bytes.len() {
                if !self.endless || self.bytes.is_empty() {
                    break;
                }
                self.at = 0;
            }
            let k = (buf.len() - n).min(self.bytes.len() - self.at);
            buf[n..n + k].copy_from_slice(&self.bytes[self.at..self.at + k]);
            self.at += k;
            n += k;
        }
        self.read += n as u64;
        Poll::Ready(Ok(n))
    }
}

/// The bytes a decoded message holds.
fn held(parts: impl IntoIterator<Item = usize>) -> u64 {
    parts.into_iter().sum::<usize>() as u64
}

/// Reads `bytes` as every message a peer can send, and runs the decoders
/// of what each carries. Returns nothing: the point is that nothing panics
/// and the limits hold (asserted inside).
fn read_everything(bytes: &[u8], endless: bool) -> Result<(), TestCaseError> {
    let mut stream = PeerStream::new(bytes, endless);
    if let Ok(request) = block_on(sync_codec().read_request(&SYNC_PROTOCOL, &mut stream)) {
        prop_assert!(request.version_vector.len() as u64 <= stream.read);
        let _ = VersionVector::from_bytes(&request.version_vector);
    }
    prop_assert!(stream.read <= SYNC_REQUEST_MAX);

    let mut stream = PeerStream::new(bytes, endless);
    if let Ok(page) = block_on(sync_codec().read_response(&SYNC_PROTOCOL, &mut stream)) {
        prop_assert!(held(page.deltas.iter().map(|d| d.len())) <= stream.read);
        for delta in &page.deltas {
            let _ = Delta::decode_verified(delta);
        }
    }
    prop_assert!(stream.read <= SYNC_RESPONSE_MAX);

    for response in [false, true] {
        let mut stream = PeerStream::new(bytes, endless);
        let hello = if response {
            block_on(hello_codec().read_response(&ADMISSION_PROTOCOL, &mut stream))
        } else {
            block_on(hello_codec().read_request(&ADMISSION_PROTOCOL, &mut stream))
        };
        if let Ok(hello) = hello {
            let carried = hello.certificate.iter().map(|c| c.len());
            let carried = carried.chain(hello.revocations.iter().map(|r| r.len()));
            prop_assert!(held(carried.chain(hello.proofs.iter().map(|p| p.len()))) <= stream.read);
            if let Some(c) = &hello.certificate {
                let _ = Certificate::decode(c);
            }
            for r in &hello.revocations {
                let _ = Revocation::decode(r);
            }
            for p in &hello.proofs {
                let _ = Equivocation::decode(p);
            }
        }
        prop_assert!(stream.read <= HELLO_WIRE_MAX);

        let mut stream = PeerStream::new(bytes, endless);
        let registry = if response {
            block_on(registry_codec().read_response(&REGISTRY_PROTOCOL, &mut stream))
        } else {
            block_on(registry_codec().read_request(&REGISTRY_PROTOCOL, &mut stream))
        };
        if let Ok(RegistryMessage(body)) = registry {
            prop_assert!(body.len() as u64 <= stream.read);
        }
        prop_assert!(stream.read <= REGISTRY_WIRE_MAX);
    }

    match Notice::decode(bytes) {
        Some(Notice::Revocation(b)) => drop(Revocation::decode(&b)),
        Some(Notice::Equivocation(b)) => drop(Equivocation::decode(&b)),
        Some(Notice::Certificate(b)) => drop(Certificate::decode(&b)),
        None => {}
    }
    Ok(())
}

/// `message` as `codec` writes it on a request stream.
fn request_bytes<C: Codec<Protocol = StreamProtocol>>(
    mut codec: C,
    message: C::Request,
) -> Vec<u8> {
    let mut out = futures::io::Cursor::new(Vec::new());
    block_on(codec.write_request(&SYNC_PROTOCOL, &mut out, message)).expect("writing into memory");
    out.into_inner()
}

/// `message` as `codec` writes it on a response stream.
fn response_bytes<C: Codec<Protocol = StreamProtocol>>(
    mut codec: C,
    message: C::Response,
) -> Vec<u8> {
    let mut out = futures::io::Cursor::new(Vec::new());
    block_on(codec.write_response(&SYNC_PROTOCOL, &mut out, message)).expect("writing into memory");
    out.into_inner()
}

/// Valid messages of every kind, encoded as a peer would send them.
fn samples() -> Vec<Vec<u8>> {
    let key = Keypair::from_secret([7; 32]);
    let delta = crate::hostile::signed_delta(&key, 1, "hello");
    let other = crate::hostile::signed_delta(&key, 1, "goodbye");
    let proof = Equivocation::new(delta.clone(), other).expect("two copies of seq 1");
    let operator = OperatorKey::from_keypair(Keypair::from_secret([9; 32]));
    let certificate = operator
        .admit(key.id(), "eu-west", 1, Some(1 << 40))
        .expect("a certificate");
    let vv: VersionVector = [(key.id(), 3), (Keypair::from_secret([8; 32]).id(), 9)]
        .into_iter()
        .collect();
    vec![
        request_bytes(
            sync_codec(),
            SyncRequest {
                version_vector: vv.to_bytes(),
            },
        ),
        response_bytes(
            sync_codec(),
            SyncResponse {
                deltas: vec![ByteBuf::from(delta.encode()); 3],
                more: true,
            },
        ),
        request_bytes(
            hello_codec(),
            Hello {
                certificate: Some(ByteBuf::from(certificate.encode())),
                revocations: vec![ByteBuf::from(operator.revoke(key.id(), 5).encode())],
                proofs: vec![ByteBuf::from(proof.encode())],
            },
        ),
        request_bytes(
            registry_codec(),
            RegistryMessage(b"a registry message".to_vec()),
        ),
        Notice::Equivocation(proof.encode()).encode(),
        Notice::Certificate(certificate.encode()).encode(),
    ]
}

#[derive(Clone, Debug)]
enum Damage {
    Truncate(Index),
    Flip(Index, u8),
    Splice(Index, Index, Vec<u8>),
    Extend(Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    let junk = || proptest::collection::vec(any::<u8>(), 0..64);
    prop_oneof![
        any::<Index>().prop_map(Damage::Truncate),
        (any::<Index>(), 1..=u8::MAX).prop_map(|(i, x)| Damage::Flip(i, x)),
        (any::<Index>(), any::<Index>(), junk()).prop_map(|(a, b, j)| Damage::Splice(a, b, j)),
        junk().prop_map(Damage::Extend),
    ]
}

fn apply(bytes: &[u8], damage: &Damage) -> Vec<u8> {
    let mut out = bytes.to_vec();
    match damage {
        Damage::Truncate(at) => out.truncate(at.index(bytes.len() + 1)),
        Damage::Flip(at, x) => {
            let i = at.index(out.len());
            out[i] ^= x;
        }
        Damage::Splice(a, b, junk) => {
            let (a, b) = (a.index(out.len() + 1), b.index(out.len() + 1));
            out.splice(a.min(b)..a.max(b), junk.iter().copied());
        }
        Damage::Extend(junk) => out.extend_from_slice(junk),
    }
    out
}

proptest! {
    #![proptest_config(crate::fuzz_config())]

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        endless in any::<bool>(),
    ) {
        read_everything(&bytes, endless)?;
    }

    #[test]
    fn damaged_valid_messages_never_panic(
        which in any::<Index>(),
        damages in proptest::collection::vec(damage(), 1..4),
        endless in any::<bool>(),
    ) {
        let samples = samples();
        let mut bytes = samples[which.index(samples.len())].clone();
        for d in &damages {
            bytes = apply(&bytes, d);
        }
        read_everything(&bytes, endless)?;
    }
}

#[test]
fn valid_messages_decode_to_what_was_sent() {
    let samples = samples();
    let mut stream = PeerStream::new(&samples[0], false);
    let request = block_on(sync_codec().read_request(&SYNC_PROTOCOL, &mut stream)).unwrap();
    assert_eq!(
        VersionVector::from_bytes(&request.version_vector)
            .unwrap()
            .len(),
        2
    );
    let mut stream = PeerStream::new(&samples[1], false);
    let page = block_on(sync_codec().read_response(&SYNC_PROTOCOL, &mut stream)).unwrap();
    assert!(page.more);
    assert_eq!(page.deltas.len(), 3);
    assert!(
        page.deltas
            .iter()
            .all(|d| Delta::decode_verified(d).is_ok())
    );
    let mut stream = PeerStream::new(&samples[2], false);
    let hello = block_on(hello_codec().read_request(&ADMISSION_PROTOCOL, &mut stream)).unwrap();
    assert!(Certificate::decode(hello.certificate.as_deref().unwrap()).is_ok());
    assert!(Revocation::decode(&hello.revocations[0]).is_ok());
    assert!(Equivocation::decode(&hello.proofs[0]).is_ok());
}

/// A peer that never stops sending is read no further than the codec's
/// limit (what follows the first message in it is ignored); a message that
/// declares four billion entries is refused without reserving room for
/// them.
#[test]
fn endless_and_boastful_messages_are_read_within_the_limit() {
    for sample in samples() {
        let mut stream = PeerStream::new(&sample, true);
        let _ = block_on(sync_codec().read_request(&SYNC_PROTOCOL, &mut stream));
        assert_eq!(stream.read, SYNC_REQUEST_MAX);
        let mut stream = PeerStream::new(&sample, true);
        let _ = block_on(hello_codec().read_response(&ADMISSION_PROTOCOL, &mut stream));
        assert_eq!(stream.read, HELLO_WIRE_MAX);
    }
    // A CBOR map {"deltas": array of 2^32 - 1 byte strings}, then nothing.
    let mut boast = vec![0xa2, 0x66];
    boast.extend_from_slice(b"deltas");
    boast.extend_from_slice(&[0x9a, 0xff, 0xff, 0xff, 0xff]);
    let mut stream = PeerStream::new(&boast, false);
    assert!(block_on(sync_codec().read_response(&SYNC_PROTOCOL, &mut stream)).is_err());
    // A byte string of 2^64 - 1 bytes declared, eight sent.
    let mut boast = vec![0xa1, 0x6e];
    boast.extend_from_slice(b"version_vector");
    boast.extend_from_slice(&[0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    boast.extend_from_slice(&[0; 8]);
    let mut stream = PeerStream::new(&boast, false);
    assert!(block_on(sync_codec().read_request(&SYNC_PROTOCOL, &mut stream)).is_err());
}
