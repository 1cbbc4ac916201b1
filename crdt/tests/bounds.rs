//! The replica's bounds on what one origin can make it hold: out-of-order
//! deltas (per origin, with eviction) and changes automerge holds back for
//! missing dependencies.

use hearsay_crdt::{
    Delta, ErrorKind, Keypair, MemoryDocs, NewPost, Replica, ReplicaConfig, UserName, Verdict,
    VersionVector,
};

const T0: u64 = 1_700_000_000_000;

fn replica(secret: u8, config: ReplicaConfig) -> Replica<MemoryDocs> {
    Replica::open(
        Keypair::from_secret([secret; 32]),
        MemoryDocs::default(),
        VersionVector::new(),
        config,
    )
    .unwrap()
}

fn post(body: &str) -> NewPost {
    NewPost {
        author: UserName::new("ann").unwrap(),
        body: body.into(),
        reply_to: None,
    }
}

/// `n` posts of one origin: its deltas seq 1..=n.
fn posts(secret: u8, n: usize) -> Vec<Delta> {
    let mut r = replica(secret, ReplicaConfig::default());
    (0..n)
        .map(|i| {
            r.create_post(&post(&format!("post {i}")), None, T0 + i as u64)
                .unwrap()
                .1
        })
        .collect()
}

fn verdicts(r: &mut Replica<MemoryDocs>, deltas: &[Delta]) -> Vec<Verdict> {
    r.receive(deltas.iter().cloned()).verdicts
}

#[test]
fn a_full_origin_buffer_takes_a_nearer_delta_in_place_of_the_farthest() {
    let d = posts(7, 6);
    let mut r = replica(
        1,
        ReplicaConfig {
            max_buffered_per_origin: 3,
            ..ReplicaConfig::default()
        },
    );
    let gap = Verdict::Rejected(ErrorKind::SeqGap);
    // Seq 1 and 2 missing: 3, 4, 5 wait; 6 is beyond the full buffer.
    assert_eq!(
        verdicts(&mut r, &d[2..6]),
        vec![Verdict::Buffered, Verdict::Buffered, Verdict::Buffered, gap]
    );
    assert_eq!(r.buffered(), 3);
    // Seq 2 is nearer: it evicts 5 (anti-entropy brings it again).
    assert_eq!(verdicts(&mut r, &d[1..2]), vec![Verdict::Buffered]);
    assert_eq!(r.buffered(), 3);
    assert!(r.buffered_delta(&d[4].origin, 5).is_none());
    // Seq 1 releases 2, 3, 4.
    assert_eq!(verdicts(&mut r, &d[0..1]), vec![Verdict::Accepted]);
    assert_eq!(r.version_vector().get(&d[0].origin), 4);
    assert_eq!(r.buffered(), 0);
    assert_eq!(
        verdicts(&mut r, &d[4..6]),
        vec![Verdict::Accepted, Verdict::Accepted]
    );
    // Other origins are not held back by a full one.
    let other = posts(8, 3);
    let mut r = replica(
        1,
        ReplicaConfig {
            max_buffered_per_origin: 1,
            ..ReplicaConfig::default()
        },
    );
    assert_eq!(verdicts(&mut r, &d[2..3]), vec![Verdict::Buffered]);
    assert_eq!(verdicts(&mut r, &d[3..4]), vec![gap]);
    assert_eq!(verdicts(&mut r, &other[1..2]), vec![Verdict::Buffered]);
}

#[test]
fn an_origin_with_too_many_held_changes_waits_until_they_apply() {
    // A writes a post; B edits it twice. A replica that gets B's edits
    // before A's post holds them (their dependency is missing).
    let mut a = replica(7, ReplicaConfig::default());
    let (p, a1) = a.create_post(&post("hello"), None, T0).unwrap();
    let mut b = replica(8, ReplicaConfig::default());
    b.receive([a1.clone()]);
    let b1 = b.edit_post(p.id, 0, 0, "oh, ", T0 + 1).unwrap();
    let b2 = b.edit_post(p.id, 0, 0, "well ", T0 + 2).unwrap();
    let mut r = replica(
        1,
        ReplicaConfig {
            max_held_per_origin: 1,
            ..ReplicaConfig::default()
        },
    );
    assert_eq!(verdicts(&mut r, &[b1]), vec![Verdict::Accepted]);
    assert_eq!(r.held_of(&b.id()), 1);
    // B has one change held: its next delta is refused as a gap, not
    // piled up behind it.
    assert_eq!(
        verdicts(&mut r, std::slice::from_ref(&b2)),
        vec![Verdict::Rejected(ErrorKind::SeqGap)]
    );
    assert_eq!(r.version_vector().get(&b.id()), 1);
    // A's post arrives: B's held edit applies, and B is taken again.
    assert_eq!(verdicts(&mut r, &[a1]), vec![Verdict::Accepted]);
    assert_eq!(r.held_of(&b.id()), 0);
    assert_eq!(verdicts(&mut r, &[b2]), vec![Verdict::Accepted]);
    assert_eq!(r.post(p.id).unwrap().unwrap().body, "well oh, hello");
}

#[test]
fn duplicates_come_back_to_the_caller_with_their_position() {
    let d = posts(7, 2);
    let mut r = replica(1, ReplicaConfig::default());
    r.receive([d[0].clone()]);
    let out = r.receive([d[1].clone(), d[0].clone()]);
    assert_eq!(out.verdicts, vec![Verdict::Accepted, Verdict::Duplicate]);
    assert_eq!(out.duplicates, vec![(1, d[0].clone())]);
}
