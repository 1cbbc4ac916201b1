//! Tests of the core state and its thread, over in-memory stores with an
//! injected clock.

use super::*;
use crate::store::{FaultyStore, MemoryStore};
use hearsay_crdt::UserName;

const T0: u64 = 1_700_000_000_000;
const CONFIG: CoreConfig = CoreConfig {
    cache_docs: 64,
    checkpoint_interval_ms: 60_000,
    checkpoint_deltas: 10,
};

fn metrics() -> Metrics {
    Metrics::new("test", None)
}

fn new_post(body: &str) -> NewPost {
    NewPost {
        author: UserName::new("ann").unwrap(),
        body: body.into(),
        reply_to: None,
    }
}

fn open<S: Store>(store: S, secret: u8) -> CoreState<S> {
    CoreState::open(
        store,
        Keypair::from_secret([secret; 32]),
        CONFIG,
        metrics(),
        T0,
    )
    .unwrap()
}

/// Deltas of another node: `posts` posts, one delta each.
fn remote_deltas(secret: u8, posts: usize) -> Vec<Delta> {
    let mut other = open(MemoryStore::default(), secret);
    let mut deltas = Vec::new();
    for i in 0..posts {
        other
            .write(
                Write::CreatePost(new_post(&format!("remote {i}"))),
                T0 + i as u64,
            )
            .unwrap();
        deltas.extend(other.commit().unwrap().publish);
    }
    deltas
}

#[test]
fn a_commit_makes_writes_durable_and_publishable() {
    let mut core = open(MemoryStore::default(), 1);
    let post = core
        .write(Write::CreatePost(new_post("hello")), T0)
        .unwrap()
        .into_post()
        .unwrap();
    // Applied and readable, not durable yet.
    assert_eq!(core.version_vector().get(&core.id()), 1);
    assert!(core.durable().is_empty());
    assert!(core.status().version_vector.is_empty());
    assert_eq!(core.store().crashed().log_len().unwrap(), 0);
    let commit = core.commit().unwrap();
    assert_eq!(commit.publish.len(), 1);
    assert_eq!(commit.durable.get(&core.id()), 1);
    assert_eq!(core.durable(), core.version_vector());
    assert_eq!(core.status().version_vector, commit.durable);
    assert_eq!(core.store().crashed().log_len().unwrap(), 1);
    // Nothing staged: no flush, nothing to publish.
    let again = core.commit().unwrap();
    assert!(again.publish.is_empty());
    assert_eq!(again.durable, commit.durable);
    // Edit, read, delete.
    let edited = core
        .write(
            Write::EditPost {
                id: post.id,
                pos: 5,
                delete: 0,
                insert: ", world".into(),
            },
            T0 + 1,
        )
        .unwrap()
        .into_post()
        .unwrap();
    assert_eq!(edited.body, "hello, world");
    assert_eq!(
        core.post(post.id).unwrap().unwrap().post.body,
        "hello, world"
    );
    core.write(Write::DeletePost(post.id), T0 + 2).unwrap();
    assert!(core.posts(10, None).unwrap().is_empty());
    assert_eq!(core.commit().unwrap().publish.len(), 2);
}

#[test]
fn the_newest_snapshot_follows_durable_commits_only() {
    let ids = |core: &CoreState<MemoryStore>| -> Vec<PostId> {
        let newest = core.status().newest.expect("a snapshot");
        newest.iter().map(|p| p.id).collect()
    };
    let mut core = open(MemoryStore::default(), 1);
    assert!(ids(&core).is_empty());
    let write = |core: &mut CoreState<MemoryStore>, body: &str, at: u64| {
        core.write(Write::CreatePost(new_post(body)), at)
            .unwrap()
            .into_post()
            .unwrap()
            .id
    };
    let first = write(&mut core, "first", T0);
    // Applied but not durable: the snapshot (like the token) waits.
    assert!(ids(&core).is_empty());
    core.commit().unwrap();
    assert_eq!(ids(&core), vec![first]);
    // Remote posts enter it at their commit too.
    let remote = remote_deltas(2, 2);
    core.receive(vec![(remote, Source::Gossip)], T0 + 5);
    core.commit().unwrap();
    let listed = ids(&core);
    assert_eq!(listed.len(), 3);
    assert_eq!(
        listed,
        core.posts(64, None)
            .unwrap()
            .iter()
            .map(|p| p.id)
            .collect::<Vec<_>>()
    );
    // A deletion leaves it; it holds at most NEWEST_SNAPSHOT posts, the
    // newest, exactly as the core answers the same page.
    core.write(Write::DeletePost(first), T0 + 6).unwrap();
    for i in 0..NEWEST_SNAPSHOT as u64 {
        write(&mut core, &format!("more {i}"), T0 + 10 + i);
    }
    core.commit().unwrap();
    let listed = ids(&core);
    assert_eq!(listed.len(), NEWEST_SNAPSHOT);
    assert!(!listed.contains(&first));
    let page: Vec<PostId> = core
        .posts(NEWEST_SNAPSHOT, None)
        .unwrap()
        .iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(listed, page);

    // Which pages the snapshot answers: any up to its size; a larger one
    // only when the snapshot is the whole list.
    let full = core.status().newest.unwrap();
    assert_eq!(first_page(&full, 10).map(<[Post]>::len), Some(10));
    assert_eq!(
        first_page(&full, NEWEST_SNAPSHOT).map(<[Post]>::len),
        Some(NEWEST_SNAPSHOT)
    );
    assert!(first_page(&full, NEWEST_SNAPSHOT + 1).is_none());
    let few = &full[..3];
    assert_eq!(first_page(few, 500).map(<[Post]>::len), Some(3));
}

#[test]
fn errors_are_typed() {
    let mut core = open(MemoryStore::default(), 1);
    let missing: PostId = "00000000000000000000000000000001".parse().unwrap();
    assert!(matches!(
        core.write(Write::DeletePost(missing), T0),
        Err(CoreError::NotFound(_))
    ));
    let post = core
        .write(Write::CreatePost(new_post("x")), T0)
        .unwrap()
        .into_post()
        .unwrap();
    let out_of_range = Write::EditPost {
        id: post.id,
        pos: 100,
        delete: 0,
        insert: "y".into(),
    };
    assert!(matches!(
        core.write(out_of_range, T0),
        Err(CoreError::Invalid(_))
    ));
    // Internal failures are not the client's fault.
    let e = CoreError::from(hearsay_crdt::Error::Store("disk on fire".into()));
    assert!(matches!(e, CoreError::Internal(_)));
    let e = CoreError::from(hearsay_crdt::Error::Malformed {
        what: "x",
        why: "y".into(),
    });
    assert!(matches!(e, CoreError::Internal(_)));
}

#[test]
fn a_failed_commit_publishes_nothing_acknowledges_nothing_and_refuses_writes() {
    let store = FaultyStore::new(MemoryStore::default());
    let mut core = open(store.clone(), 1);
    let first = core
        .write(Write::CreatePost(new_post("one")), T0)
        .unwrap()
        .into_post()
        .unwrap();
    let durable = core.commit().unwrap().durable;

    // Through the thread's batch runner: the write's reply is an error, no
    // delta goes to the network, the status keeps the old durable vector.
    store.fail_flushes(1);
    let (events_tx, mut events_rx) = mpsc::channel(8);
    let (status_tx, status_rx) = watch::channel(core.status());
    let (reply, mut answer) = oneshot::channel();
    let batch = Batch {
        clients: vec![ClientCommand::Write {
            op: Write::CreatePost(new_post("two")),
            reply,
        }],
        peers: Vec::new(),
    };
    run_batch(&mut core, batch, T0 + 1, &events_tx, &status_tx);
    assert!(matches!(answer.try_recv(), Ok(Err(CoreError::Failed(_)))));
    assert!(events_rx.try_recv().is_err(), "nothing published");
    let status = status_rx.borrow().clone();
    assert_eq!(status.version_vector, durable, "durable did not advance");
    assert!(status.failed.is_some());
    assert_eq!(core.durable(), &durable);
    assert!(core.failed().unwrap().contains("flush"));
    assert_eq!(store.failed_flushes(), 1);

    // From then on: writes refused, commits fail, peers' deltas not stored.
    assert!(matches!(
        core.write(Write::CreatePost(new_post("three")), T0 + 2),
        Err(CoreError::Failed(_))
    ));
    assert!(core.commit().is_err());
    let remote = remote_deltas(9, 1);
    let verdicts = core.receive(vec![(remote, Source::Gossip)], T0 + 3);
    assert_eq!(verdicts, vec![vec![Verdict::Rejected(ErrorKind::Store)]]);
    assert!(!verdicts[0][0].blames_sender());
    assert_eq!(core.durable(), &durable);

    // A crash keeps exactly what was acknowledged.
    let mut restarted = open(store.crashed(), 1);
    assert_eq!(restarted.version_vector(), &durable);
    assert_eq!(restarted.posts(10, None).unwrap().len(), 1);
    assert!(restarted.post(first.id).unwrap().is_some());
    assert!(restarted.failed().is_none());
}

#[test]
fn a_stored_change_automerge_refuses_is_accepted_and_counted_inert() {
    // An origin that signs a corrupted change with a recomputed checksum:
    // the change parses, automerge refuses it. Search for one such flip.
    let origin = Keypair::from_secret([7; 32]);
    let deltas = remote_deltas(7, 3);
    let good = &deltas[0];
    let mut found = None;
    'search: for byte in 8..good.change.len() {
        for mask in [0x01u8, 0x80] {
            let mut change = good.change.clone();
            change[byte] ^= mask;
            let Ok(c) = automerge::Change::from_bytes(change.clone()) else {
                continue;
            };
            let hash = c.hash();
            change[4..8].copy_from_slice(&hash.0[..4]);
            let bad =
                Delta::sign(&origin, 1, good.doc.clone(), change, good.origin_time_ms).unwrap();
            let mut probe = Replica::new(
                Keypair::from_secret([8; 32]),
                hearsay_crdt::MemoryDocs::default(),
            )
            .unwrap();
            if !probe.receive([bad.clone()]).inert.is_empty() {
                found = Some(bad);
                break 'search;
            }
        }
    }
    let bad = found.expect("some corrupted change that automerge refuses");
    let mut core = open(MemoryStore::default(), 1);
    let verdicts = core.receive(vec![(vec![bad.clone()], Source::Gossip)], T0 + 5);
    assert_eq!(verdicts, vec![vec![Verdict::Accepted]]);
    assert!(!verdicts[0][0].blames_sender());
    assert_eq!(core.version_vector().get(&bad.origin), 1);
    assert_eq!(core.metrics.deltas_inert.get(), 1);
    assert!(core.metrics.rejections().is_empty(), "not a rejection");
    // Stored: in the log once committed, and the next seq follows it.
    assert_eq!(core.commit().unwrap().durable.get(&bad.origin), 1);
    assert_eq!(core.store().log_len().unwrap(), 1);
    let verdicts = core.receive(vec![(deltas[1..].to_vec(), Source::Sync)], T0 + 6);
    assert_eq!(verdicts, vec![vec![Verdict::Accepted, Verdict::Accepted]]);
}

#[test]
fn verdicts_come_per_delta_in_input_order_per_group() {
    let deltas = remote_deltas(5, 6);
    let mut core = open(MemoryStore::default(), 1);
    let mut forged = deltas[4].clone();
    forged.change.push(0);
    let verdicts = core.receive(
        vec![
            // 3 waits, 1 arrives, 2 releases 3; 6 still waits at the end.
            (
                vec![
                    deltas[2].clone(),
                    deltas[0].clone(),
                    deltas[5].clone(),
                    deltas[1].clone(),
                ],
                Source::Gossip,
            ),
            (vec![deltas[0].clone(), forged], Source::Sync),
            (Vec::new(), Source::Gossip),
        ],
        T0 + 100,
    );
    assert_eq!(
        verdicts,
        vec![
            vec![
                Verdict::Accepted,
                Verdict::Accepted,
                Verdict::Buffered,
                Verdict::Accepted,
            ],
            vec![
                Verdict::Duplicate,
                Verdict::Rejected(ErrorKind::BadSignature),
            ],
            vec![],
        ]
    );
    assert!(verdicts[0][2].is_gap());
    assert_eq!(core.status().buffered, 1);
    assert_eq!(
        core.metrics.rejections().get("bad_signature").copied(),
        Some(1)
    );
    assert_eq!(core.metrics.deltas_duplicate.get(), 1);
    // Replication delay is measured on the injected clock.
    core.tick(T0 + 100);
    assert!(core.status().delay_p50_ms.is_some_and(|d| d <= 100));
    // Remote deltas become durable at the next commit; nothing to publish.
    let commit = core.commit().unwrap();
    assert!(commit.publish.is_empty());
    assert_eq!(commit.durable.get(&deltas[0].origin), 3);
}

#[test]
fn checkpoints_follow_the_injected_clock_and_survive_a_crash() {
    let mut core = open(MemoryStore::default(), 1);
    core.write(Write::CreatePost(new_post("one")), T0).unwrap();
    core.commit().unwrap();
    core.tick(T0 + CONFIG.checkpoint_interval_ms - 1);
    assert_eq!(core.store().get_meta(SNAPSHOT_VV).unwrap(), None);
    core.tick(T0 + CONFIG.checkpoint_interval_ms);
    assert!(core.store().get_meta(SNAPSHOT_VV).unwrap().is_some());
    // Not durable until the commit.
    assert_eq!(core.store().crashed().get_meta(SNAPSHOT_VV).unwrap(), None);
    core.commit().unwrap();
    let mut restarted = open(core.store().crashed(), 1);
    assert_eq!(restarted.version_vector(), core.durable());
    assert_eq!(restarted.posts(10, None).unwrap().len(), 1);
}

#[test]
fn a_checkpoint_is_also_due_after_enough_deltas() {
    let mut core = open(MemoryStore::default(), 1);
    let snapshot = |core: &CoreState<MemoryStore>| {
        core.store()
            .get_meta(SNAPSHOT_VV)
            .unwrap()
            .map(|b| VersionVector::from_bytes(&b).unwrap())
    };
    // One delta short of the count: a tick (long before the interval) does
    // not checkpoint.
    for i in 0..CONFIG.checkpoint_deltas - 1 {
        core.write(Write::CreatePost(new_post(&format!("{i}"))), T0 + i)
            .unwrap();
    }
    core.receive(vec![(Vec::new(), Source::Gossip)], T0 + 20);
    core.tick(T0 + 20);
    assert_eq!(snapshot(&core), None);
    // Remote deltas count too: the count is reached, the tick checkpoints.
    core.receive(vec![(remote_deltas(3, 1), Source::Gossip)], T0 + 21);
    core.tick(T0 + 21);
    assert_eq!(
        snapshot(&core).map(|vv| vv.sum()),
        Some(CONFIG.checkpoint_deltas)
    );
    // And the count starts again from there.
    core.write(Write::CreatePost(new_post("one more")), T0 + 22)
        .unwrap();
    core.tick(T0 + 22);
    assert_eq!(
        snapshot(&core).map(|vv| vv.sum()),
        Some(CONFIG.checkpoint_deltas)
    );
}

// ---- admission: two queues, served fairly ---------------------------------

fn queues() -> (
    mpsc::Sender<ClientCommand>,
    mpsc::Sender<PeerCommand>,
    Queues,
) {
    let (client_tx, clients) = mpsc::channel(CLIENT_QUEUE);
    let (peer_tx, peers) = mpsc::channel(PEER_QUEUE);
    (client_tx, peer_tx, Queues { clients, peers })
}

fn remote(deltas: Vec<Delta>) -> (PeerCommand, oneshot::Receiver<Vec<Verdict>>) {
    let (reply, rx) = oneshot::channel();
    let command = PeerCommand::Remote {
        deltas,
        source: Source::Gossip,
        signatures: Signatures::Unchecked,
        reply,
    };
    (command, rx)
}

fn create(body: &str) -> (ClientCommand, oneshot::Receiver<Result<Ack, CoreError>>) {
    let (reply, rx) = oneshot::channel();
    let command = ClientCommand::Write {
        op: Write::CreatePost(new_post(body)),
        reply,
    };
    (command, rx)
}

#[test]
fn a_batch_takes_its_share_of_each_queue() {
    let (client_tx, peer_tx, mut q) = queues();
    // A peer flood: the peer queue is full.
    let mut peer_replies = Vec::new();
    loop {
        let (c, rx) = remote(Vec::new());
        if peer_tx.try_send(c).is_err() {
            break;
        }
        peer_replies.push(rx);
    }
    assert_eq!(peer_replies.len(), PEER_QUEUE);
    for _ in 0..10 {
        client_tx.try_send(ClientCommand::Tick).unwrap();
    }
    let batch = q.take_ready(MAX_BATCH);
    assert_eq!(batch.clients.len(), 10, "every waiting client is served");
    assert_eq!(batch.peers.len(), MAX_BATCH - 10, "the rest goes to peers");

    // A client flood: the client queue is full; peers still get their half.
    let (client_tx, peer_tx, mut q) = queues();
    while client_tx.try_send(ClientCommand::Tick).is_ok() {}
    for _ in 0..10 {
        peer_tx.try_send(remote(Vec::new()).0).unwrap();
    }
    let batch = q.take_ready(MAX_BATCH);
    assert_eq!(
        batch.peers.len(),
        10,
        "every waiting peer message is served"
    );
    assert_eq!(batch.clients.len(), MAX_BATCH - 10);

    // Both flooded: half each.
    let (client_tx, peer_tx, mut q) = queues();
    while client_tx.try_send(ClientCommand::Tick).is_ok() {}
    while peer_tx.try_send(remote(Vec::new()).0).is_ok() {}
    let batch = q.take_ready(MAX_BATCH);
    assert_eq!(batch.clients.len(), MAX_BATCH / 2);
    assert_eq!(batch.peers.len(), MAX_BATCH / 2);
}

/// Starts the core thread over `core` with a fixed clock.
fn spawn_core(
    core: CoreState<MemoryStore>,
    q: Queues,
) -> (
    std::thread::JoinHandle<()>,
    mpsc::Receiver<CoreEvent>,
    watch::Receiver<CoreStatus>,
) {
    let (events_tx, events_rx) = mpsc::channel(1024);
    let (status_tx, status_rx) = watch::channel(core.status());
    let thread = std::thread::spawn(move || run_core(core, q, events_tx, status_tx, || T0));
    (thread, events_rx, status_rx)
}

#[test]
fn a_peer_flood_never_turns_into_client_refusals() {
    let (client_tx, peer_tx, q) = queues();
    let mut peer_replies = Vec::new();
    let flood = remote_deltas(3, 1);
    loop {
        let (c, rx) = remote(flood.clone());
        if peer_tx.try_send(c).is_err() {
            break;
        }
        peer_replies.push(rx);
    }
    // The peer queue is full, yet a client's whole queue worth of writes is
    // admitted (no 503).
    let mut acks = Vec::new();
    for i in 0..CLIENT_QUEUE {
        let (c, rx) = create(&format!("write {i}"));
        client_tx
            .try_send(c)
            .expect("client queue has room during a peer flood");
        acks.push(rx);
    }
    let (thread, mut events, status) = spawn_core(open(MemoryStore::default(), 1), q);
    for ack in acks {
        futures::executor::block_on(ack).unwrap().unwrap();
    }
    for rx in peer_replies {
        let verdicts = futures::executor::block_on(rx).unwrap();
        assert_eq!(verdicts.len(), 1);
    }
    drop((client_tx, peer_tx));
    thread.join().unwrap();
    let published: usize = std::iter::from_fn(|| events.try_recv().ok())
        .map(|e| match e {
            CoreEvent::Publish(d) => d.len(),
            CoreEvent::Equivocation(_) => 0,
        })
        .sum();
    assert_eq!(published, CLIENT_QUEUE);
    assert_eq!(
        status.borrow().version_vector.sum(),
        CLIENT_QUEUE as u64 + 1
    );
}

#[test]
fn a_client_flood_never_starves_peer_deltas() {
    let (client_tx, peer_tx, q) = queues();
    let mut acks = Vec::new();
    loop {
        let (c, rx) = create("flood");
        if client_tx.try_send(c).is_err() {
            break;
        }
        acks.push(rx);
    }
    let deltas = remote_deltas(4, 1);
    let (c, verdicts) = remote(deltas);
    peer_tx
        .try_send(c)
        .expect("peer queue has room during a client flood");
    // The first batch (the one the thread would take) serves the peer.
    let mut q = q;
    let first = q.next_batch(MAX_BATCH).unwrap();
    assert_eq!(
        first.peers.len(),
        1,
        "the peer is served in the first batch"
    );
    assert_eq!(first.clients.len(), MAX_BATCH - 1);
    let mut core = open(MemoryStore::default(), 1);
    let (events_tx, _events_rx) = mpsc::channel(1024);
    let (status_tx, _status_rx) = watch::channel(core.status());
    run_batch(&mut core, first, T0, &events_tx, &status_tx);
    let verdicts = futures::executor::block_on(verdicts).unwrap();
    assert_eq!(verdicts, vec![Verdict::Accepted]);
    // The rest of the flood is served by the thread, every write acknowledged.
    let (thread, _events, _status) = spawn_core(core, q);
    for ack in acks {
        futures::executor::block_on(ack).unwrap().unwrap();
    }
    drop((client_tx, peer_tx));
    thread.join().unwrap();
}

#[test]
fn an_acknowledgement_carries_the_durable_token_covering_the_write() {
    let mut core = open(MemoryStore::default(), 1);
    let (events_tx, _events_rx) = mpsc::channel(8);
    let (status_tx, status_rx) = watch::channel(core.status());
    let (post, post_ack) = create("first");
    let (reply, follow_ack) = oneshot::channel();
    let follow = ClientCommand::Write {
        op: Write::Follow {
            user: UserName::new("ann").unwrap(),
            whom: UserName::new("bob").unwrap(),
        },
        reply,
    };
    let batch = Batch {
        clients: vec![post, follow],
        peers: Vec::new(),
    };
    run_batch(&mut core, batch, T0, &events_tx, &status_tx);
    let durable = status_rx.borrow().version_vector.clone();
    // One delta for the post, one for the follow, both in one flush.
    assert_eq!(durable.get(&core.id()), 2);
    let post_ack = post_ack.blocking_recv().unwrap().unwrap();
    assert_eq!(post_ack.token, durable);
    assert!(matches!(post_ack.written, Written::Post(ref p) if p.body == "first"));
    let follow_ack = follow_ack.blocking_recv().unwrap().unwrap();
    assert_eq!(follow_ack.token, durable);
    match follow_ack.written {
        Written::Profile(p) => assert_eq!(p.follows, vec![UserName::new("bob").unwrap()]),
        other => panic!("a follow answers with the profile, got {other:?}"),
    }
}

// ---- user keys: registration, signed posts, follows, edits ----------------

mod user_keys {
    use hearsay_crdt::{Action, PostSignature};

    use super::*;
    use crate::metrics::{Refusal, RefusalLabels};
    use crate::signed::{CLOCK_WINDOW_MS, UserProof};

    fn name(s: &str) -> UserName {
        UserName::new(s).unwrap()
    }

    fn refusals(core: &CoreState<MemoryStore>, reason: Refusal) -> u64 {
        core.metrics
            .user_refusals
            .get_or_create(&RefusalLabels { reason })
            .get()
    }

    /// A core where `ann` is registered with the returned key.
    fn with_ann() -> (CoreState<MemoryStore>, Keypair) {
        let mut core = open(MemoryStore::default(), 1);
        let ann = Keypair::from_secret([0xa1; 32]);
        core.write(
            Write::ClaimName {
                user: name("ann"),
                key: ann.id(),
            },
            T0,
        )
        .unwrap();
        core.commit().unwrap();
        (core, ann)
    }

    fn signed_post(key: &Keypair, body: &str, at_ms: u64) -> Write {
        let new = new_post(body);
        let signature = PostSignature::sign(key, PostId::generate(at_ms), &new);
        Write::CreateSignedPost { new, signature }
    }

    fn follow_proof(key: &Keypair, follow: bool, whom: &str, at_ms: u64) -> Write {
        let (user, whom) = (name("ann"), name(whom));
        let action = Action::follow(follow, &user, &whom);
        let proof = UserProof {
            at_ms,
            signature: action.sign(key, at_ms),
        };
        Write::SignedFollow {
            user,
            whom,
            follow,
            proof,
        }
    }

    #[test]
    fn a_signed_post_needs_the_registered_key_a_fresh_id_and_a_true_signature() {
        let (mut core, ann) = with_ann();
        let write = signed_post(&ann, "signed", T0);
        let post = core.write(write.clone(), T0).unwrap().into_post().unwrap();
        assert!(post.signed);
        assert_eq!(post.author_key, Some(ann.id()));
        // The same signed post again: refused as a replay (409).
        assert!(matches!(
            core.write(write, T0 + 1),
            Err(CoreError::Conflict(_))
        ));
        assert_eq!(refusals(&core, Refusal::Replay), 1);

        // Signed by a key that is not ann's.
        let mallory = Keypair::from_secret([0x66; 32]);
        let e = core.write(signed_post(&mallory, "x", T0), T0).unwrap_err();
        assert!(
            matches!(&e, CoreError::Invalid(m) if m.contains("not the key registered")),
            "{e}"
        );
        assert_eq!(refusals(&core, Refusal::WrongKey), 1);

        // ann's key, but the signature is over other content: forged.
        let Write::CreateSignedPost { signature, .. } = signed_post(&ann, "what ann said", T0)
        else {
            unreachable!()
        };
        let forged = Write::CreateSignedPost {
            new: new_post("what ann did not say"),
            signature,
        };
        let e = core.write(forged, T0).unwrap_err();
        assert!(
            matches!(&e, CoreError::Invalid(m) if m.contains("does not verify")),
            "{e}"
        );
        assert_eq!(refusals(&core, Refusal::BadSignature), 1);

        // An id whose time is far from the node's clock.
        let e = core
            .write(signed_post(&ann, "late", T0 - CLOCK_WINDOW_MS - 1), T0)
            .unwrap_err();
        assert!(
            matches!(&e, CoreError::Invalid(m) if m.contains("clock")),
            "{e}"
        );
        let early = signed_post(&ann, "early", T0 + CLOCK_WINDOW_MS + 1);
        assert!(core.write(early, T0).is_err());
        assert_eq!(refusals(&core, Refusal::Clock), 2);

        // Unsigned under ann's name: refused. Other names stay open.
        let e = core
            .write(Write::CreatePost(new_post("impostor")), T0)
            .unwrap_err();
        assert!(
            matches!(&e, CoreError::Invalid(m) if m.contains("must be signed")),
            "{e}"
        );
        assert_eq!(refusals(&core, Refusal::Unsigned), 1);
        let bob = NewPost {
            author: name("bob"),
            ..new_post("unsigned")
        };
        assert!(
            !core
                .write(Write::CreatePost(bob), T0)
                .unwrap()
                .into_post()
                .unwrap()
                .signed
        );
        // A signed post for a name nobody registered.
        let cy_key = Keypair::from_secret([0xc1; 32]);
        let new = NewPost {
            author: name("cy"),
            ..new_post("cy")
        };
        let signature = PostSignature::sign(&cy_key, PostId::generate(T0), &new);
        let e = core
            .write(Write::CreateSignedPost { new, signature }, T0)
            .unwrap_err();
        assert!(
            matches!(&e, CoreError::Invalid(m) if m.contains("no registered key")),
            "{e}"
        );
        assert_eq!(refusals(&core, Refusal::Unregistered), 1);
        // Nothing refused was written: one post each for ann and bob.
        assert_eq!(core.posts(10, None).unwrap().len(), 2);
    }

    #[test]
    fn a_registered_user_follows_only_with_fresh_signatures() {
        let (mut core, ann) = with_ann();
        let e = core
            .write(
                Write::Follow {
                    user: name("ann"),
                    whom: name("bob"),
                },
                T0,
            )
            .unwrap_err();
        assert!(
            matches!(&e, CoreError::Invalid(m) if m.contains("must be signed")),
            "{e}"
        );

        let follow = follow_proof(&ann, true, "bob", T0);
        let written = core.write(follow.clone(), T0 + 10).unwrap();
        let Written::Profile(p) = written else {
            panic!("a follow answers with the profile")
        };
        assert_eq!(p.follows, vec![name("bob")]);
        // The same request again: a replay.
        assert!(matches!(
            core.write(follow, T0 + 20),
            Err(CoreError::Conflict(_))
        ));
        // A follow signed for bob, sent as a follow of cy: does not verify.
        let Write::SignedFollow { proof, .. } = follow_proof(&ann, true, "bob", T0 + 1) else {
            unreachable!()
        };
        let moved = Write::SignedFollow {
            user: name("ann"),
            whom: name("cy"),
            follow: true,
            proof,
        };
        assert!(matches!(core.write(moved, T0), Err(CoreError::Invalid(_))));
        // Someone else's key.
        let other = Keypair::from_secret([0x66; 32]);
        assert!(
            core.write(follow_proof(&other, true, "cy", T0), T0)
                .is_err()
        );
        assert_eq!(refusals(&core, Refusal::BadSignature), 2);
        // Stale.
        let stale = follow_proof(&ann, true, "cy", T0 - CLOCK_WINDOW_MS - 1);
        assert!(core.write(stale, T0).is_err());
        assert_eq!(refusals(&core, Refusal::Clock), 1);
        // Unfollow, signed.
        let Written::Profile(p) = core
            .write(follow_proof(&ann, false, "bob", T0 + 2), T0 + 30)
            .unwrap()
        else {
            panic!()
        };
        assert!(p.follows.is_empty());
        // A user without a key follows unsigned, and cannot sign.
        core.write(
            Write::Follow {
                user: name("bob"),
                whom: name("ann"),
            },
            T0,
        )
        .unwrap();
        let bob_signed = Write::SignedFollow {
            user: name("bob"),
            whom: name("cy"),
            follow: true,
            proof: UserProof {
                at_ms: T0,
                signature: [0; 64],
            },
        };
        assert!(
            matches!(core.write(bob_signed, T0), Err(CoreError::Invalid(m)) if m.contains("no registered key"))
        );
    }

    #[test]
    fn a_signed_post_is_edited_and_deleted_only_by_its_author_key() {
        let (mut core, ann) = with_ann();
        let post = core
            .write(signed_post(&ann, "hello", T0), T0)
            .unwrap()
            .into_post()
            .unwrap();
        let id = post.id;
        let unsigned = Write::EditPost {
            id,
            pos: 0,
            delete: 0,
            insert: "x".into(),
        };
        assert!(
            matches!(core.write(unsigned, T0), Err(CoreError::Invalid(m)) if m.contains("must be signed"))
        );
        assert!(core.write(Write::DeletePost(id), T0).is_err());

        let edit = |key: &Keypair, at_ms| {
            let action = Action::Edit {
                post: id,
                pos: 5,
                delete: 0,
                insert: " world",
            };
            Write::SignedEdit {
                id,
                pos: 5,
                delete: 0,
                insert: " world".into(),
                proof: UserProof {
                    at_ms,
                    signature: action.sign(key, at_ms),
                },
            }
        };
        let mallory = Keypair::from_secret([0x66; 32]);
        assert!(core.write(edit(&mallory, T0), T0).is_err());
        let edited = core
            .write(edit(&ann, T0 + 1), T0 + 1)
            .unwrap()
            .into_post()
            .unwrap();
        assert_eq!(edited.body, "hello world");
        assert!(edited.signed, "the original content is still the author's");
        // Replayed: not applied twice.
        assert!(matches!(
            core.write(edit(&ann, T0 + 1), T0 + 2),
            Err(CoreError::Conflict(_))
        ));

        let delete = Action::Delete { post: id };
        let proof = UserProof {
            at_ms: T0 + 3,
            signature: delete.sign(&ann, T0 + 3),
        };
        let gone = core
            .write(Write::SignedDelete { id, proof }, T0 + 3)
            .unwrap()
            .into_post()
            .unwrap();
        assert!(gone.deleted);
        assert!(core.posts(10, None).unwrap().is_empty());

        // An unsigned post has no key to check a signed edit against.
        let bob = NewPost {
            author: name("bob"),
            ..new_post("bob's")
        };
        let bobs = core
            .write(Write::CreatePost(bob), T0)
            .unwrap()
            .into_post()
            .unwrap();
        let proof = UserProof {
            at_ms: T0,
            signature: Action::Delete { post: bobs.id }.sign(&ann, T0),
        };
        assert!(matches!(
            core.write(Write::SignedDelete { id: bobs.id, proof }, T0),
            Err(CoreError::Invalid(m)) if m.contains("not signed")
        ));
    }

    #[test]
    fn follows_and_profile_changes_already_in_place_write_nothing() {
        let (mut core, ann) = with_ann();
        let bob = |follow| {
            let (user, whom) = (name("bob"), name("cy"));
            if follow {
                Write::Follow { user, whom }
            } else {
                Write::Unfollow { user, whom }
            }
        };
        core.write(bob(true), T0).unwrap();
        let revision = core.version_vector().sum();
        for write in [
            bob(true),
            bob(false),
            bob(false),
            bob(true),
            Write::SetProfile {
                user: name("ann"),
                display_name: None,
                public_key: Some(ann.id()),
            },
        ] {
            core.write(write, T0).unwrap();
        }
        // One unfollow and one follow wrote; the repeats and the key already
        // held did not.
        assert_eq!(core.version_vector().sum(), revision + 2);
        let Written::Profile(p) = core.write(bob(true), T0).unwrap() else {
            panic!()
        };
        assert_eq!(p.follows, vec![name("cy")]);
        // A signed follow already in place: verified, nothing written, and
        // not remembered (sending it again is not a replay).
        let follow = follow_proof(&ann, true, "bob", T0);
        core.write(follow.clone(), T0).unwrap();
        let revision = core.version_vector().sum();
        let again = follow_proof(&ann, true, "bob", T0 + 1);
        core.write(again.clone(), T0 + 1).unwrap();
        core.write(again, T0 + 2).unwrap();
        assert_eq!(core.version_vector().sum(), revision);
        // Following oneself stays refused.
        assert!(
            core.write(
                Write::Follow {
                    user: name("bob"),
                    whom: name("bob"),
                },
                T0
            )
            .is_err()
        );
    }

    #[test]
    fn a_claim_writes_only_for_a_free_name() {
        let (mut core, ann) = with_ann();
        let revision = core.version_vector().sum();
        for key in [ann.id(), Keypair::from_secret([2; 32]).id()] {
            let Written::Profile(p) = core
                .write(
                    Write::ClaimName {
                        user: name("ann"),
                        key,
                    },
                    T0,
                )
                .unwrap()
            else {
                panic!()
            };
            assert_eq!(p.public_key, Some(ann.id()));
        }
        assert_eq!(core.version_vector().sum(), revision, "nothing written");
    }
}

/// Two different deltas with one origin and seq: two replicas of the same
/// key that each wrote once.
fn equivocating_pair(secret: u8) -> (Delta, Delta) {
    let a = remote_deltas(secret, 1).remove(0);
    let mut other = open(MemoryStore::default(), secret);
    other
        .write(Write::CreatePost(new_post("the other story")), T0 + 7)
        .unwrap();
    let b = other.commit().unwrap().publish.remove(0);
    assert_eq!((a.origin, a.seq), (b.origin, b.seq));
    assert_ne!(a, b);
    (a, b)
}

#[test]
fn a_second_delta_with_a_held_seq_is_proof_of_equivocation() {
    let (a, b) = equivocating_pair(9);
    let origin = a.origin;
    let mut core = open(MemoryStore::default(), 1);
    assert_eq!(
        core.receive(vec![(vec![a.clone()], Source::Gossip)], T0),
        vec![vec![Verdict::Accepted]]
    );
    // The same bytes again: a plain duplicate.
    assert_eq!(
        core.receive(vec![(vec![a.clone()], Source::Sync)], T0),
        vec![vec![Verdict::Duplicate]]
    );
    // Another delta the origin signed with seq 1 (in the same batch as
    // a copy of the first, still a plain duplicate).
    assert_eq!(
        core.receive(vec![(vec![b.clone(), a.clone()], Source::Gossip)], T0 + 1),
        vec![vec![
            Verdict::Rejected(ErrorKind::Equivocated),
            Verdict::Duplicate
        ]]
    );
    let listed = core.equivocators();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].origin, listed[0].seq), (origin, 1));
    // Published only once durable, then never again for the same origin.
    let commit = core.commit().unwrap();
    assert_eq!(commit.proofs.len(), 1);
    let proof = Equivocation::decode(&commit.proofs[0]).unwrap();
    assert_eq!(
        proof.deltas(),
        if a.signature < b.signature {
            (&a, &b)
        } else {
            (&b, &a)
        }
    );
    assert!(core.receive_proof(&commit.proofs[0], T0 + 2).is_ok());
    assert!(core.commit().unwrap().proofs.is_empty());
    // The proof survives a restart and keeps refusing the origin.
    let store = core.store().crashed();
    let mut again = open(store, 1);
    assert_eq!(again.equivocators().len(), 1);
    let later = remote_deltas(9, 2).remove(1);
    assert_eq!(
        again.receive(vec![(vec![later], Source::Sync)], T0 + 3),
        vec![vec![Verdict::Rejected(ErrorKind::Equivocated)]]
    );
}

#[test]
fn a_forged_copy_of_a_held_delta_is_blamed_not_proof() {
    let (a, _) = equivocating_pair(9);
    let mut core = open(MemoryStore::default(), 1);
    core.receive(vec![(vec![a.clone()], Source::Gossip)], T0);
    core.commit().unwrap();
    let mut forged = a.clone();
    forged.origin_time_ms += 1;
    let verdicts = core.receive(vec![(vec![forged], Source::Gossip)], T0 + 1);
    assert_eq!(
        verdicts,
        vec![vec![Verdict::Rejected(ErrorKind::BadSignature)]]
    );
    assert!(verdicts[0][0].blames_sender());
    assert!(core.equivocators().is_empty());
    assert!(core.commit().unwrap().proofs.is_empty());
}

#[test]
fn an_equivocation_against_the_buffer_is_caught_too() {
    // Seq 2 of the origin waits in the buffer (seq 1 missing); another
    // seq 2 arrives.
    let first = remote_deltas(9, 2).remove(1);
    let mut other = open(MemoryStore::default(), 9);
    for body in ["another", "story"] {
        other
            .write(Write::CreatePost(new_post(body)), T0 + 9)
            .unwrap();
    }
    let second = other.commit().unwrap().publish.remove(1);
    assert_eq!((first.seq, second.seq), (2, 2));
    let mut core = open(MemoryStore::default(), 1);
    assert_eq!(
        core.receive(vec![(vec![first], Source::Gossip)], T0),
        vec![vec![Verdict::Buffered]]
    );
    assert_eq!(
        core.receive(vec![(vec![second], Source::Gossip)], T0),
        vec![vec![Verdict::Rejected(ErrorKind::Equivocated)]]
    );
    assert_eq!(core.equivocators().len(), 1);
}

#[test]
fn proofs_that_do_not_check_out_are_refused() {
    let mut core = open(MemoryStore::default(), 1);
    assert!(core.receive_proof(b"HSE1garbage", T0).is_err());
    let (a, b) = equivocating_pair(9);
    let mut bytes = Equivocation::new(a, b).unwrap().encode();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    assert!(core.receive_proof(&bytes, T0).is_err());
    assert!(core.equivocators().is_empty());
}
