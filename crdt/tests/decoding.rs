//! Bytes at the edges: saved documents, delta envelopes, tokens and ids.
//!
//! Whatever a peer, a client or a disk hands over is either decoded exactly
//! or refused with a typed error; it never panics, and a refused delta leaves
//! the replica as it was.

use std::str::FromStr;

use automerge::Automerge;
use hearsay_crdt::{
    Delta, DocId, Error, ErrorKind, Keypair, MemoryDocs, NewPost, PostId, PostSignature, Replica,
    ReplicaConfig, Signatures, UserName, Verdict, VersionVector,
};
mod common;

use common::observe;
use proptest::prelude::*;
use proptest::sample::Index;

const T0: u64 = 1_700_000_000_000;

fn key(b: u8) -> Keypair {
    Keypair::from_secret([b; 32])
}

fn name(s: &str) -> UserName {
    UserName::new(s).unwrap()
}

fn new_post(author: &str, body: &str, reply_to: Option<PostId>) -> NewPost {
    NewPost {
        author: name(author),
        body: body.into(),
        reply_to,
    }
}

/// `author`'s signature of `post` under a client-made id of time `at_ms`.
fn signed(author: &Keypair, post: &NewPost, at_ms: u64) -> PostSignature {
    PostSignature::sign(author, PostId::client(at_ms, [0x5a; 10]), post)
}

fn assert_untouched(r: &mut Replica<MemoryDocs>) {
    assert!(r.version_vector().is_empty());
    assert!(r.applied_version_vector().is_empty());
    assert_eq!(r.buffered(), 0);
    assert!(r.doc_ids().unwrap().is_empty());
    assert!(r.newest_posts(10, None).unwrap().is_empty());
    assert!(!r.has_held());
}

/// A replica that has done a bit of everything, with a second origin's
/// changes merged into its documents. Returns it and the post ids.
fn busy_replica(config: ReplicaConfig) -> (Replica<MemoryDocs>, Vec<PostId>) {
    let mut a = Replica::open(key(1), MemoryDocs::default(), VersionVector::new(), config).unwrap();
    let mut b = Replica::new(key(2), MemoryDocs::default()).unwrap();
    let ann = key(0xa1);
    let first = new_post("ann", "héllo wörld 🦀", None);
    let (p1, d1) = a
        .create_post(&first, Some(&signed(&ann, &first, T0)), T0)
        .unwrap();
    assert!(p1.signed);
    let (p2, _) = a
        .create_post(&new_post("bob", "second", Some(p1.id)), None, T0 + 61_000)
        .unwrap();
    let (p3, d3) = b
        .create_post(&new_post("ann", "from b 漢字", None), None, T0 + 5)
        .unwrap();
    assert!(b.receive([d1.clone()]).rejected.is_empty());
    assert!(a.receive([d3]).rejected.is_empty());
    // Concurrent edits of the same post at both replicas.
    let e1 = a.edit_post(p1.id, 0, 1, "H", T0 + 10).unwrap();
    let e2 = b.edit_post(p1.id, 13, 0, "!", T0 + 11).unwrap();
    assert!(a.receive([e2]).rejected.is_empty());
    assert!(b.receive([e1]).rejected.is_empty());
    a.delete_post(p2.id, T0 + 62_000).unwrap();
    a.set_profile(&name("ann"), Some("Ann Ö"), Some(ann.id()), T0 + 20)
        .unwrap();
    a.follow(&name("ann"), &name("bob"), T0 + 21).unwrap();
    a.follow(&name("bob"), &name("ann"), T0 + 22).unwrap();
    let f = b.follow(&name("bob"), &name("ann"), T0 + 23).unwrap();
    let u = b.unfollow(&name("bob"), &name("ann"), T0 + 24).unwrap();
    assert!(a.receive([f, u]).rejected.is_empty());
    assert_eq!(a.post(p1.id).unwrap().unwrap().body, "Héllo wörld 🦀!");
    assert!(a.post(p1.id).unwrap().unwrap().signed);
    (a, vec![p1.id, p2.id, p3.id])
}

#[test]
fn every_document_kind_round_trips_through_save_and_load() {
    for cache_docs in [4096, 2] {
        let config = ReplicaConfig {
            cache_docs,
            ..Default::default()
        };
        let (mut a, posts) = busy_replica(config.clone());
        let vv = a.checkpoint().unwrap();
        assert_eq!(&vv, a.version_vector());
        let before = observe(&mut a, &posts);
        let kinds: Vec<&str> = before
            .doc_ids
            .iter()
            .map(|d| match d {
                DocId::Post(_) => "post",
                DocId::Public(_) => "public",
                DocId::Timeline(..) => "timeline",
                DocId::Profile(_) => "profile",
            })
            .collect();
        for kind in ["post", "profile"] {
            assert!(kinds.contains(&kind), "no {kind} document in {kinds:?}");
        }
        // Lists are derived from the posts, not documents of their own.
        for kind in ["public", "timeline"] {
            assert!(!kinds.contains(&kind), "a {kind} document in {kinds:?}");
        }

        // Every saved document loads on its own to the same heads.
        let store = a.store().clone();
        assert_eq!(store.docs.len(), before.doc_ids.len());
        for (id, heads) in &before.heads {
            let bytes = &store.docs[&id.to_string()];
            let doc = Automerge::load(bytes).unwrap();
            assert_eq!(&doc.get_heads(), heads, "{id}");
            assert!(!heads.is_empty(), "{id}");
        }

        // A replica opened on the saved documents reads the same, with or
        // without a roomy cache.
        for reopen_cache in [4096, 1] {
            let config = ReplicaConfig {
                cache_docs: reopen_cache,
                ..Default::default()
            };
            let mut b = Replica::open(key(1), store.clone(), vv.clone(), config).unwrap();
            assert_eq!(observe(&mut b, &posts), before);
            // ... and goes on with the next seq.
            let d = b.follow(&name("ann"), &name("cy"), T0 + 99).unwrap();
            assert_eq!(d.seq, vv.get(&a.id()) + 1);
        }
    }
}

#[test]
fn a_corrupt_stored_document_is_a_store_error() {
    let (mut a, posts) = busy_replica(ReplicaConfig::default());
    let vv = a.checkpoint().unwrap();
    let mut store = a.store().clone();
    let id = DocId::Post(posts[0]).to_string();
    let bytes = store.docs.get_mut(&id).unwrap();
    let n = bytes.len();
    bytes.truncate(n / 2);
    let mut b = Replica::open(key(1), store, vv, ReplicaConfig::default()).unwrap();
    assert!(matches!(b.post(posts[0]), Err(Error::Store(_))));
    // Other documents still read.
    assert!(b.post(posts[2]).unwrap().is_some());
}

/// Deltas of every kind: post creation, an edit with dependencies, a
/// profile change.
fn sample_deltas() -> Vec<Delta> {
    let mut a = Replica::new(key(3), MemoryDocs::default()).unwrap();
    let new = new_post("ann", "flip me ✓", None);
    let (p, created) = a
        .create_post(&new, Some(&signed(&key(4), &new, T0)), T0)
        .unwrap();
    let mut deltas = vec![created];
    deltas.push(a.edit_post(p.id, 2, 2, "FL", T0 + 1).unwrap());
    deltas.push(
        a.set_profile(&name("ann"), Some("A"), Some(key(4).id()), T0 + 2)
            .unwrap(),
    );
    deltas
}

#[test]
fn any_single_byte_flip_is_rejected() {
    let deltas = sample_deltas();
    let mut r = Replica::new(key(5), MemoryDocs::default()).unwrap();
    let mut tried = 0;
    for delta in &deltas {
        let bytes = delta.encode();
        for i in 0..bytes.len() {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut flipped = bytes.clone();
                flipped[i] ^= mask;
                assert!(
                    Delta::decode_verified(&flipped).is_err(),
                    "flip {mask:#x} at byte {i} of {} accepted",
                    delta.doc
                );
                // What still decodes must be refused by the replica.
                if let Ok(d) = Delta::decode(&flipped) {
                    tried += 1;
                    let out = r.receive([d]);
                    assert!(out.accepted.is_empty(), "flip at {i} accepted");
                    assert_eq!(out.rejected.len(), 1, "flip at {i}: {out:?}");
                    assert_eq!(out.buffered(), 0);
                    assert_eq!(out.duplicates(), 0);
                    assert!(matches!(
                        out.rejected[0],
                        Error::BadSignature { .. } | Error::SeqGap { .. }
                    ));
                    assert!(matches!(
                        out.verdicts.as_slice(),
                        [Verdict::Rejected(
                            ErrorKind::BadSignature | ErrorKind::SeqGap
                        )]
                    ));
                }
            }
        }
    }
    assert!(tried > 100, "only {tried} flipped deltas decoded");
    assert_untouched(&mut r);
    // The same replica still takes the genuine deltas.
    let out = r.receive(deltas.clone());
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    assert_eq!(out.accepted.len(), deltas.len());
}

#[test]
fn a_forged_origin_is_a_bad_signature() {
    let x = key(6);
    let y = key(7);
    let mut deltas = sample_deltas();
    for d in &mut deltas {
        // Re-signed by X, but claiming to come from Y.
        let mut forged = Delta::sign(&x, d.seq, d.doc.clone(), d.change.clone(), 5).unwrap();
        forged.origin = y.id();
        let bytes = forged.encode();
        match Delta::decode_verified(&bytes) {
            Err(Error::BadSignature { origin, seq }) => {
                assert_eq!(origin, y.id());
                assert_eq!(seq, d.seq);
            }
            other => panic!("forged delta: {other:?}"),
        }
        let mut r = Replica::new(key(8), MemoryDocs::default()).unwrap();
        let out = r.receive([Delta::decode(&bytes).unwrap()]);
        assert!(out.accepted.is_empty());
        assert!(
            matches!(out.rejected.as_slice(), [Error::BadSignature { origin, .. }] if *origin == y.id()),
            "{:?}",
            out.rejected
        );
        assert_untouched(&mut r);
        // Y's genuine signature on other content does not transfer either.
        d.change.push(0);
        assert!(matches!(d.verify(), Err(Error::BadSignature { .. })));
    }
}

// ---- nothing panics ----------------------------------------------------------

fn try_everything(bytes: &[u8]) {
    let _ = hearsay_crdt::Equivocation::decode(bytes);
    let _ = Delta::decode(bytes);
    let _ = Delta::decode_verified(bytes);
    let _ = VersionVector::from_bytes(bytes);
    let text = String::from_utf8_lossy(bytes);
    let _ = VersionVector::from_token(&text);
    let _ = DocId::from_str(&text);
    let _ = PostId::from_str(&text);
}

#[derive(Clone, Debug)]
enum Mutation {
    Truncate(Index),
    Extend(Vec<u8>),
    Overwrite(Index, u8),
    Splice(Index, Index, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<Index>().prop_map(Mutation::Truncate),
        proptest::collection::vec(any::<u8>(), 1..64).prop_map(Mutation::Extend),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Overwrite(i, b)),
        (
            any::<Index>(),
            any::<Index>(),
            proptest::collection::vec(any::<u8>(), 0..16)
        )
            .prop_map(|(a, b, v)| Mutation::Splice(a, b, v)),
    ]
}

fn mutate(bytes: &[u8], m: &Mutation) -> Vec<u8> {
    let mut out = bytes.to_vec();
    match m {
        Mutation::Truncate(i) => out.truncate(i.index(bytes.len())),
        Mutation::Extend(tail) => out.extend_from_slice(tail),
        Mutation::Overwrite(i, b) => out[i.index(bytes.len())] = *b,
        Mutation::Splice(a, b, with) => {
            let (a, b) = (a.index(bytes.len() + 1), b.index(bytes.len() + 1));
            let (a, b) = (a.min(b), a.max(b));
            out.splice(a..b, with.iter().copied());
        }
    }
    out
}

fn doc_id() -> impl Strategy<Value = DocId> {
    prop_oneof![
        any::<[u8; 16]>().prop_map(|b| DocId::Post(PostId(b))),
        any::<u64>().prop_map(DocId::Public),
        ("[a-zA-Z0-9_.-]{1,32}", any::<u64>())
            .prop_map(|(u, b)| DocId::Timeline(UserName::new(&u).unwrap(), b)),
        "[a-zA-Z0-9_.-]{1,32}".prop_map(|u| DocId::Profile(UserName::new(&u).unwrap())),
    ]
}

fn version_vector() -> impl Strategy<Value = VersionVector> {
    proptest::collection::vec((any::<[u8; 32]>(), 1u64..=u64::MAX), 0..6).prop_map(|v| {
        v.into_iter()
            .map(|(k, s)| (hearsay_crdt::NodeId(k), s))
            .collect()
    })
}

/// `HEARSAY_FUZZ_CASES` raises the case count of the decoder fuzzing
/// (`HEARSAY_FUZZ_CASES=100000 cargo test -p hearsay-crdt --test decoding`).
fn cases(default: u32) -> u32 {
    std::env::var("HEARSAY_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(default, |n: u32| n.max(default))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(2000), ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        try_everything(&bytes);
        // With a valid magic the decoder goes further in.
        let mut magic = b"HSD1".to_vec();
        magic.extend_from_slice(&bytes);
        try_everything(&magic);
        prop_assert!(Delta::decode_verified(&magic).is_err());
        // And behind the proof magic, with a length that claims more.
        let mut proof = b"HSE1".to_vec();
        proof.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        proof.extend_from_slice(&bytes);
        prop_assert!(hearsay_crdt::Equivocation::decode(&proof).is_err());
    }

    #[test]
    fn random_text_never_panics(
        any_text in ".{0,200}",
        token in "[A-Za-z0-9_-]{0,200}",
        doc in "(post|public|timeline|profile|blob|)(/[a-z0-9.]{0,34}){0,3}",
    ) {
        for s in [&any_text, &token, &doc] {
            try_everything(s.as_bytes());
        }
        // Every id that parses has exactly one text form.
        if let Ok(id) = DocId::from_str(&doc) {
            prop_assert_eq!(id.to_string(), doc);
        }
        if let Ok(vv) = VersionVector::from_token(&token) {
            prop_assert_eq!(VersionVector::from_token(&vv.to_token()).unwrap(), vv);
        }
    }

    #[test]
    fn damaged_valid_encodings_never_panic(
        which in any::<Index>(),
        m in mutation(),
        vv in version_vector(),
        doc in doc_id(),
        post in any::<[u8; 16]>(),
    ) {
        let deltas = sample_deltas();
        let delta = &deltas[which.index(deltas.len())];
        let bytes = delta.encode();
        let damaged = mutate(&bytes, &m);
        try_everything(&damaged);
        if damaged != bytes {
            prop_assert!(Delta::decode_verified(&damaged).is_err(), "{:?}", m);
        }
        if matches!(m, Mutation::Truncate(_) | Mutation::Extend(_)) {
            prop_assert!(Delta::decode(&damaged).is_err());
        }

        // Version vectors: exact round trip, damaged forms never panic.
        let vbytes = vv.to_bytes();
        prop_assert_eq!(VersionVector::from_bytes(&vbytes).unwrap(), vv.clone());
        prop_assert_eq!(VersionVector::from_token(&vv.to_token()).unwrap(), vv.clone());
        try_everything(&mutate(&vbytes, &m));
        try_everything(&mutate(vv.to_token().as_bytes(), &m));

        // Ids: exact round trip, damaged forms never panic.
        let text = doc.to_string();
        prop_assert_eq!(DocId::from_str(&text).unwrap(), doc);
        try_everything(&mutate(text.as_bytes(), &m));
        let text = PostId(post).to_string();
        prop_assert_eq!(PostId::from_str(&text).unwrap(), PostId(post));
        try_everything(&mutate(text.as_bytes(), &m));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(500), ..ProptestConfig::default() })]

    /// A delta validly signed by its origin whose change is not an automerge
    /// change is refused as malformed and changes nothing, whether it is next
    /// in line or would have waited in the buffer.
    #[test]
    fn garbage_change_bytes_are_malformed(
        garbage in proptest::collection::vec(any::<u8>(), 0..400),
        chunk_magic in any::<bool>(),
        doc in doc_id(),
        seq in 1u64..=3,
    ) {
        let mut change = Vec::new();
        if chunk_magic {
            // automerge's chunk magic, so the parser gets past the first check.
            change.extend_from_slice(&[0x85, 0x6f, 0x4a, 0x83]);
        }
        change.extend_from_slice(&garbage);
        let delta = Delta::sign(&key(9), seq, doc, change, T0).unwrap();
        let wire = delta.encode();
        let delta = Delta::decode_verified(&wire).unwrap();
        let mut r = Replica::new(key(10), MemoryDocs::default()).unwrap();
        let out = r.receive([delta]);
        prop_assert!(out.accepted.is_empty());
        prop_assert_eq!(out.buffered(), 0);
        prop_assert!(
            matches!(out.rejected.as_slice(), [Error::Malformed { .. }]),
            "{:?}",
            out.rejected
        );
        assert_untouched(&mut r);
    }
}

// ---- corrupted automerge changes under a valid signature --------------------

/// Flips one bit of the change inside `deltas[which]` and re-signs it with
/// the origin's key (`key(3)`, see `sample_deltas`), optionally recomputing
/// the automerge checksum as a malicious origin could; then delivers the
/// deltas before it honestly and the corrupted one last.
fn corrupted_change_outcome(
    deltas: &[Delta],
    which: usize,
    byte: usize,
    mask: u8,
    fix_checksum: bool,
) -> (Replica<MemoryDocs>, hearsay_crdt::ReceiveOutcome) {
    let d = &deltas[which];
    let mut change = d.change.clone();
    change[byte] ^= mask;
    if fix_checksum && let Ok(c) = automerge::Change::from_bytes(change.clone()) {
        let hash = c.hash();
        change[4..8].copy_from_slice(&hash.0[..4]);
    }
    let bad = Delta::sign(&key(3), d.seq, d.doc.clone(), change, d.origin_time_ms).unwrap();
    let mut r = Replica::new(key(11), MemoryDocs::default()).unwrap();
    let out = r.receive(deltas[..which].iter().cloned());
    assert!(out.rejected.is_empty());
    let out = r.receive([bad]);
    (r, out)
}

/// automerge does not check a change's checksum when parsing it; the replica
/// does, so a change corrupted at its origin (bit rot in the origin's log,
/// a buggy encoder) is refused before it can reach a document.
#[test]
fn a_corrupted_change_is_malformed_even_when_validly_signed() {
    let deltas = sample_deltas();
    // The post's creation (no dependencies) and an edit (with dependencies).
    for which in [0, 1] {
        let len = deltas[which].change.len();
        for byte in 0..len {
            for mask in [0x01u8, 0x80] {
                let (mut r, out) = corrupted_change_outcome(&deltas, which, byte, mask, false);
                assert!(
                    out.accepted.is_empty(),
                    "flip at {byte} of {which} accepted"
                );
                assert!(
                    matches!(out.rejected.as_slice(), [Error::Malformed { .. }]),
                    "flip at {byte} of {which}: {:?}",
                    out.rejected
                );
                assert_eq!(r.version_vector().sum(), which as u64);
                assert_eq!(r.buffered(), 0);
                assert!(!r.has_held());
                // The genuine delta is still taken afterwards.
                let out = r.receive([deltas[which].clone()]);
                assert_eq!(out.accepted.len(), 1, "{:?}", out.rejected);
            }
        }
    }
}

/// An origin that signs a corrupted change with a *recomputed* checksum can
/// make automerge 0.12 panic inside `apply_changes`, or refuse the change
/// with an error. The replica must survive both: the change is refused
/// (rejected when it does not parse; when it parses but automerge refuses it,
/// its delta is stored, reported `Accepted` and listed as inert), the
/// document is exactly as before it, two replicas given the same bad change
/// stay identical, and the replica keeps working afterwards.
#[test]
fn a_malicious_origin_cannot_panic_the_replica() {
    let deltas = sample_deltas();
    let (mut refused, mut inert) = (0, 0);
    for which in [0, 1] {
        let doc = deltas[which].doc.clone();
        for byte in 0..deltas[which].change.len() {
            for mask in [0x01u8, 0x80] {
                let (mut r, out) = corrupted_change_outcome(&deltas, which, byte, mask, true);
                let (mut twin, twin_out) =
                    corrupted_change_outcome(&deltas, which, byte, mask, true);
                let refusals = |o: &hearsay_crdt::ReceiveOutcome| o.rejected.len() + o.inert.len();
                assert_eq!(refusals(&out), refusals(&twin_out));
                assert_eq!(out.verdicts, twin_out.verdicts);
                assert_eq!(r.heads(&doc).unwrap(), twin.heads(&doc).unwrap());
                inert += out.inert.len();
                for (origin, seq, _) in &out.inert {
                    // Stored: accepted, in the vector, never blamed on the sender.
                    assert_eq!(out.verdicts, vec![Verdict::Accepted]);
                    assert_eq!(r.version_vector().get(origin), *seq);
                }
                if refusals(&out) > 0 {
                    refused += 1;
                    let mut clean = Replica::new(key(12), MemoryDocs::default()).unwrap();
                    clean.receive(deltas[..which].iter().cloned());
                    assert_eq!(
                        r.heads(&doc).unwrap(),
                        clean.heads(&doc).unwrap(),
                        "a refused change left a trace (flip at {byte} of {which})"
                    );
                }
                // The replica still takes valid deltas from other origins.
                let mut other = Replica::new(key(13), MemoryDocs::default()).unwrap();
                let (_, fresh) = other
                    .create_post(&new_post("bob", "still alive", None), None, T0 + 9)
                    .unwrap();
                let after = r.receive([fresh]);
                assert_eq!(after.accepted.len(), 1, "{:?}", after.rejected);
            }
        }
    }
    assert!(
        refused > 0,
        "no corrupted change was refused: the test exercised nothing"
    );
    assert!(inert > 0, "no change parsed and was refused by automerge");
}

/// Signatures are checked once: a group the caller marks as checked (the
/// node's network thread verified it on arrival) is not checked again, and
/// an unchecked one is.
#[test]
fn only_unchecked_groups_pay_for_the_signature_check() {
    let deltas = sample_deltas();
    let mut forged = deltas[0].clone();
    forged.origin_time_ms += 1;
    assert!(forged.verify().is_err());
    let mut r = Replica::new(key(12), MemoryDocs::default()).unwrap();
    let outs = r.receive_groups_with(vec![(vec![forged.clone()], Signatures::Unchecked)]);
    assert_eq!(
        outs[0].verdicts,
        vec![Verdict::Rejected(ErrorKind::BadSignature)]
    );
    let outs = r.receive_groups_with(vec![(vec![forged], Signatures::Checked)]);
    assert_eq!(outs[0].verdicts, vec![Verdict::Accepted]);
}
