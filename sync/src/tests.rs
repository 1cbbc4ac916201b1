//! Unit tests of [`SyncMachine`]: for given events, the exact commands.
//!
//! Most tests look at the commands without [`Command::ArmTimer`] (see
//! [`step`]); the timer rules have tests of their own.

use hearsay_crdt::{Delta, DocId, ErrorKind, Keypair, NodeId, Verdict, VersionVector};

use super::*;

type M = SyncMachine<u32, u64>;
type Cmd = Command<u32, u64>;

/// A static mesh (no discovery) with the default timings, except that
/// links are not closed for silence (the failure detector has tests of
/// its own, with the default timeout).
fn config() -> Config {
    Config {
        target_peers: 0,
        link_timeout_ms: 3_600_000,
        ..Config::default()
    }
}

fn machine() -> M {
    SyncMachine::new(config(), 1, vec![], 0)
}

/// The commands of one event, without timer updates.
fn step(m: &mut M, now: Millis, event: Event<u32, u64>) -> Vec<Cmd> {
    m.handle(now, event)
        .into_iter()
        .filter(|c| !matches!(c, Command::ArmTimer { .. }))
        .collect()
}

fn origin(i: u8) -> Keypair {
    Keypair::from_secret([i; 32])
}

fn id(i: u8) -> NodeId {
    origin(i).id()
}

fn delta(o: u8, seq: u64) -> Delta {
    Delta::sign(&origin(o), seq, DocId::Public(1), vec![seq as u8; 8], 0).unwrap()
}

fn vv(entries: &[(u8, u64)]) -> VersionVector {
    let mut v = VersionVector::new();
    for (o, s) in entries {
        v.set(id(*o), *s);
    }
    v
}

/// A machine connected to `peers` (none of them dialled by it).
fn connected(peers: &[u32]) -> M {
    let mut m = machine();
    for p in peers {
        step(
            &mut m,
            0,
            Event::PeerUp {
                peer: *p,
                dialer: false,
            },
        );
    }
    m
}

fn request(to: u32, have: &VersionVector) -> Cmd {
    Command::SendSyncRequest {
        to,
        have: have.clone(),
    }
}

// ---- links ------------------------------------------------------------------

#[test]
fn join_peers_are_dialled_at_once_then_with_capped_backoff() {
    let mut m: M = SyncMachine::new(config(), 1, vec![7], 0);
    let dial = vec![Command::Dial { peer: 7 }];
    assert_eq!(step(&mut m, 0, Event::Tick), dial);
    // No answer: dial again after 250, 500, then every 1000 ms (the cap).
    for (at, expect) in [
        (249, vec![]),
        (250, dial.clone()),
        (749, vec![]),
        (750, dial.clone()),
        (1750, dial.clone()),
        (2749, vec![]),
        (2750, dial.clone()),
        (3750, dial.clone()),
    ] {
        assert_eq!(step(&mut m, at, Event::Tick), expect, "at {at} ms");
    }
    // A failed dial does not add dials: the next one is already scheduled.
    assert_eq!(step(&mut m, 3760, Event::DialFailed { peer: 7 }), vec![]);
    assert_eq!(step(&mut m, 3800, Event::Tick), vec![]);
}

#[test]
fn a_lost_join_peer_is_redialled_at_once_with_a_fresh_backoff() {
    let mut m: M = SyncMachine::new(config(), 1, vec![7], 0);
    step(&mut m, 0, Event::Tick);
    step(&mut m, 250, Event::Tick);
    step(
        &mut m,
        300,
        Event::PeerUp {
            peer: 7,
            dialer: true,
        },
    );
    // Connected: no dials however long.
    assert_eq!(
        step(&mut m, 10_000, Event::Tick).len(),
        1,
        "only a sync round"
    );
    let cmds = step(&mut m, 20_000, Event::PeerDown { peer: 7 });
    assert_eq!(cmds, vec![], "the round had ended; nothing to retry");
    assert_eq!(
        step(&mut m, 20_000, Event::Tick),
        vec![Command::Dial { peer: 7 }]
    );
    assert_eq!(step(&mut m, 20_249, Event::Tick), vec![]);
    assert_eq!(
        step(&mut m, 20_250, Event::Tick),
        vec![Command::Dial { peer: 7 }]
    );
}

#[test]
fn dialled_peers_are_kept_and_forgotten_inbound_peers_are_not_redialled() {
    let mut m = machine();
    step(
        &mut m,
        0,
        Event::PeerUp {
            peer: 1,
            dialer: true,
        },
    );
    step(
        &mut m,
        0,
        Event::PeerUp {
            peer: 2,
            dialer: false,
        },
    );
    step(&mut m, 100, Event::PeerDown { peer: 1 });
    step(&mut m, 100, Event::PeerDown { peer: 2 });
    assert_eq!(
        step(&mut m, 100, Event::Tick),
        vec![Command::Dial { peer: 1 }]
    );
    // Forgotten after forget_after_ms without a connection.
    let forget = config().forget_after_ms;
    let late = step(&mut m, 100 + forget - 1, Event::Tick);
    assert_eq!(late, vec![Command::Dial { peer: 1 }]);
    assert_eq!(step(&mut m, 100 + forget, Event::Tick), vec![]);
    assert_eq!(step(&mut m, 100 + 3 * forget, Event::Tick), vec![]);
}

#[test]
fn discovered_peers_are_dialled_only_below_the_target() {
    let mut m: M = SyncMachine::new(
        Config {
            target_peers: 2,
            ..config()
        },
        1,
        vec![],
        0,
    );
    assert_eq!(
        step(&mut m, 0, Event::Discovered { peer: 1 }),
        vec![Command::Dial { peer: 1 }]
    );
    step(
        &mut m,
        0,
        Event::PeerUp {
            peer: 1,
            dialer: true,
        },
    );
    assert_eq!(step(&mut m, 0, Event::Discovered { peer: 1 }), vec![]);
    assert_eq!(
        step(&mut m, 0, Event::Discovered { peer: 2 }),
        vec![Command::Dial { peer: 2 }]
    );
    step(
        &mut m,
        0,
        Event::PeerUp {
            peer: 2,
            dialer: true,
        },
    );
    assert_eq!(step(&mut m, 0, Event::Discovered { peer: 3 }), vec![]);
    // Discovery off: never.
    let mut off = machine();
    assert_eq!(step(&mut off, 0, Event::Discovered { peer: 1 }), vec![]);
}

#[test]
fn bootstrap_runs_while_connected_with_discovery_on() {
    let mut m: M = SyncMachine::new(
        Config {
            target_peers: 2,
            ..config()
        },
        1,
        vec![],
        0,
    );
    assert_eq!(step(&mut m, 0, Event::Tick), vec![]);
    step(
        &mut m,
        10,
        Event::PeerUp {
            peer: 1,
            dialer: true,
        },
    );
    assert_eq!(step(&mut m, 10, Event::Tick), vec![Command::Bootstrap]);
    assert_eq!(
        step(&mut m, 29_999, Event::Tick).len(),
        1,
        "a sync round only"
    );
    assert_eq!(step(&mut m, 30_010, Event::Tick), vec![Command::Bootstrap]);
}

#[test]
fn a_silent_link_is_closed_after_the_link_timeout() {
    let detector = Config {
        link_timeout_ms: Config::default().link_timeout_ms,
        sync_interval_ms: 3_600_000,
        ..config()
    };
    let mut m: M = SyncMachine::new(detector.clone(), 1, vec![], 0);
    let timeout = detector.link_timeout_ms;
    step(
        &mut m,
        0,
        Event::PeerUp {
            peer: 1,
            dialer: false,
        },
    );
    // Answered pings and arriving messages keep it open.
    step(&mut m, 1000, Event::PingOk { peer: 1 });
    step(
        &mut m,
        2000,
        Event::Gossip {
            from: 1,
            id: 9,
            delta: delta(4, 1),
        },
    );
    assert_eq!(step(&mut m, 2000 + timeout - 1, Event::Tick), vec![]);
    assert_eq!(
        step(&mut m, 2000 + timeout, Event::Tick),
        vec![Command::Disconnect { peer: 1 }]
    );
    // Once, not at every tick while the close is under way.
    assert_eq!(step(&mut m, 2000 + timeout + 10, Event::Tick), vec![]);
    // The silence deadline is a timer of its own.
    let mut m: M = SyncMachine::new(detector, 1, vec![], 0);
    let out = m.handle(
        0,
        Event::PeerUp {
            peer: 1,
            dialer: false,
        },
    );
    assert_eq!(out, vec![Command::ArmTimer { at: timeout }]);
    let out = m.handle(500, Event::PingOk { peer: 1 });
    assert_eq!(out, vec![Command::ArmTimer { at: 500 + timeout }]);
}

#[test]
fn missed_pings_close_the_link() {
    let mut m = connected(&[1]);
    assert_eq!(step(&mut m, 1000, Event::PingFailed { peer: 1 }), vec![]);
    assert_eq!(step(&mut m, 1500, Event::PingOk { peer: 1 }), vec![]);
    assert_eq!(step(&mut m, 2000, Event::PingFailed { peer: 1 }), vec![]);
    assert_eq!(
        step(&mut m, 3000, Event::PingFailed { peer: 1 }),
        vec![Command::Disconnect { peer: 1 }]
    );
    // Unknown peers are ignored.
    assert_eq!(step(&mut m, 3000, Event::PingFailed { peer: 9 }), vec![]);
}

// ---- anti-entropy -------------------------------------------------------------

#[test]
fn a_subscribed_peer_gets_a_round_at_once_with_the_durable_vector() {
    let mut m = connected(&[1]);
    let durable = vv(&[(1, 5)]);
    step(&mut m, 0, Event::Durable(durable.clone()));
    assert_eq!(
        step(&mut m, 10, Event::Subscribed { peer: 1 }),
        vec![request(1, &durable)]
    );
    // Not twice while the round is in flight, nor with strangers.
    assert_eq!(step(&mut m, 11, Event::Subscribed { peer: 1 }), vec![]);
    assert_eq!(step(&mut m, 11, Event::Subscribed { peer: 9 }), vec![]);
}

#[test]
fn periodic_rounds_pick_a_free_peer_up_to_max_rounds() {
    let mut m = connected(&[1, 2, 3]);
    assert_eq!(step(&mut m, 1999, Event::Tick), vec![]);
    let first = step(&mut m, 2000, Event::Tick);
    let second = step(&mut m, 4000, Event::Tick);
    let (Command::SendSyncRequest { to: a, .. }, Command::SendSyncRequest { to: b, .. }) =
        (&first[0], &second[0])
    else {
        panic!("expected two requests: {first:?} {second:?}");
    };
    assert_ne!(a, b, "a peer with a round in flight is not picked");
    assert_eq!(m.syncing().count(), 2);
    // max_rounds (2) reached: the third tick starts nothing.
    assert_eq!(step(&mut m, 6000, Event::Tick), vec![]);
}

#[test]
fn pages_are_requested_again_while_full_and_useful() {
    let mut m = connected(&[1]);
    step(&mut m, 0, Event::Subscribed { peer: 1 });
    let page = vec![delta(5, 1), delta(5, 2)];
    assert_eq!(
        step(
            &mut m,
            10,
            Event::SyncPage {
                from: 1,
                deltas: page.clone(),
                more: true
            }
        ),
        vec![Command::Deliver {
            batch: Batch::Page { from: 1 },
            deltas: page
        }]
    );
    let grown = vv(&[(5, 2)]);
    step(&mut m, 20, Event::Durable(grown.clone()));
    assert_eq!(
        step(
            &mut m,
            20,
            Event::Verdicts {
                batch: Batch::Page { from: 1 },
                verdicts: vec![Verdict::Accepted, Verdict::Duplicate],
            }
        ),
        vec![request(1, &grown)]
    );
    // The last page (not full) ends the round.
    step(
        &mut m,
        30,
        Event::SyncPage {
            from: 1,
            deltas: vec![delta(5, 3)],
            more: false,
        },
    );
    let end = step(
        &mut m,
        40,
        Event::Verdicts {
            batch: Batch::Page { from: 1 },
            verdicts: vec![Verdict::Accepted],
        },
    );
    assert_eq!(end, vec![]);
    assert_eq!(m.syncing().count(), 0);
}

#[test]
fn a_full_page_of_nothing_useful_ends_the_round() {
    let mut m = connected(&[1]);
    step(&mut m, 0, Event::Subscribed { peer: 1 });
    step(
        &mut m,
        10,
        Event::SyncPage {
            from: 1,
            deltas: vec![delta(5, 1)],
            more: true,
        },
    );
    let bad = Verdict::Rejected(ErrorKind::BadSignature);
    let out = step(
        &mut m,
        20,
        Event::Verdicts {
            batch: Batch::Page { from: 1 },
            verdicts: vec![bad],
        },
    );
    assert_eq!(out, vec![]);
    assert_eq!(m.syncing().count(), 0);
}

#[test]
fn an_empty_page_ends_the_round() {
    let mut m = connected(&[1]);
    step(&mut m, 0, Event::Subscribed { peer: 1 });
    let out = step(
        &mut m,
        10,
        Event::SyncPage {
            from: 1,
            deltas: vec![],
            more: false,
        },
    );
    assert_eq!(out, vec![]);
    assert_eq!(m.syncing().count(), 0);
}

#[test]
fn a_failed_request_is_retried_on_another_peer() {
    let mut m = connected(&[1, 2]);
    step(&mut m, 0, Event::Subscribed { peer: 1 });
    assert_eq!(
        step(&mut m, 50, Event::RequestFailed { peer: 1 }),
        vec![request(2, &VersionVector::new())]
    );
    // A retry that fails too waits for the next periodic round: two dead
    // peers do not bounce requests back and forth.
    assert_eq!(step(&mut m, 60, Event::RequestFailed { peer: 2 }), vec![]);
    assert_eq!(m.syncing().count(), 0);
    // With no other peer at all, a failure is not retried either.
    let mut alone = connected(&[1]);
    step(&mut alone, 0, Event::Subscribed { peer: 1 });
    assert_eq!(
        step(&mut alone, 50, Event::RequestFailed { peer: 1 }),
        vec![]
    );
}

#[test]
fn an_unanswered_request_times_out_and_moves_on() {
    // No periodic rounds in the way.
    let quiet = Config {
        sync_interval_ms: 60_000,
        ..config()
    };
    let mut m: M = SyncMachine::new(quiet, 1, vec![], 0);
    step(
        &mut m,
        0,
        Event::PeerUp {
            peer: 1,
            dialer: false,
        },
    );
    step(
        &mut m,
        0,
        Event::PeerUp {
            peer: 2,
            dialer: false,
        },
    );
    step(&mut m, 0, Event::Subscribed { peer: 1 });
    let timeout = config().request_timeout_ms;
    assert_eq!(step(&mut m, timeout - 1, Event::Tick), vec![]);
    assert_eq!(
        step(&mut m, timeout, Event::Tick),
        vec![request(2, &VersionVector::new())]
    );
}

#[test]
fn a_lost_link_ends_its_round_and_retries_elsewhere() {
    let mut m = connected(&[1, 2]);
    step(&mut m, 0, Event::Subscribed { peer: 1 });
    assert_eq!(
        step(&mut m, 10, Event::PeerDown { peer: 1 }),
        vec![request(2, &VersionVector::new())]
    );
}

// ---- gaps -------------------------------------------------------------------

#[test]
fn a_gap_starts_a_round_at_once_then_at_most_every_gap_retry() {
    let mut m = connected(&[1, 2]);
    let gossip = Batch::Gossip { from: 1, id: 77 };
    let out = step(
        &mut m,
        100,
        Event::Verdicts {
            batch: gossip.clone(),
            verdicts: vec![Verdict::Buffered],
        },
    );
    assert_eq!(out.len(), 1, "{out:?}");
    let Command::SendSyncRequest { to: first, .. } = out[0] else {
        panic!("no gap round: {out:?}");
    };
    // Another gap while the gap round is in flight waits for it.
    let out = step(&mut m, 110, Event::GapSeen);
    assert_eq!(out, vec![]);
    assert!(m.gap_pending());
    // The round ends before gap_retry_ms: the next gap round waits for it.
    step(
        &mut m,
        150,
        Event::SyncPage {
            from: first,
            deltas: vec![],
            more: false,
        },
    );
    assert!(m.gap_pending());
    assert_eq!(step(&mut m, 199, Event::Tick), vec![]);
    let out = step(&mut m, 200, Event::Tick);
    assert!(
        matches!(out[..], [Command::SendSyncRequest { .. }]),
        "{out:?}"
    );
    assert!(!m.gap_pending());
}

#[test]
fn a_gap_with_no_peer_waits_for_one() {
    let mut m = machine();
    assert_eq!(step(&mut m, 0, Event::GapSeen), vec![]);
    assert!(m.gap_pending());
    step(
        &mut m,
        10,
        Event::PeerUp {
            peer: 3,
            dialer: false,
        },
    );
    assert_eq!(
        step(&mut m, 10, Event::Tick),
        vec![request(3, &VersionVector::new())]
    );
}

// ---- gossip validation ---------------------------------------------------------

fn gossip_verdict(m: &mut M, verdict: Verdict) -> Vec<Cmd> {
    step(
        m,
        10,
        Event::Verdicts {
            batch: Batch::Gossip { from: 1, id: 5 },
            verdicts: vec![verdict],
        },
    )
}

fn report(acceptance: Acceptance) -> Cmd {
    Command::ReportGossip {
        id: 5,
        from: 1,
        acceptance,
    }
}

#[test]
fn gossip_is_forwarded_on_arrival_and_delivered_in_parallel() {
    let mut m = connected(&[1]);
    let d = delta(4, 1);
    assert_eq!(
        step(
            &mut m,
            0,
            Event::Gossip {
                from: 1,
                id: 5,
                delta: d.clone()
            }
        ),
        vec![
            report(Acceptance::Accept),
            Command::Deliver {
                batch: Batch::Gossip { from: 1, id: 5 },
                deltas: vec![d]
            }
        ]
    );
    // The verdict comes later and reports nothing more, whatever it is.
    for verdict in [
        Verdict::Accepted,
        Verdict::Duplicate,
        Verdict::Rejected(ErrorKind::Malformed),
        Verdict::Rejected(ErrorKind::Store),
    ] {
        assert_eq!(gossip_verdict(&mut m, verdict), vec![], "{verdict:?}");
    }
    // What does not decode or verify is rejected, penalising the sender.
    assert_eq!(
        step(&mut m, 0, Event::GossipMalformed { from: 1, id: 5 }),
        vec![report(Acceptance::Reject)]
    );
}

#[test]
fn gossip_this_node_holds_durably_is_not_forwarded_but_compared_by_the_core() {
    let mut m = connected(&[1]);
    let d = delta(4, 3);
    let durable: VersionVector = [(d.origin, 3)].into_iter().collect();
    step(&mut m, 0, Event::Durable(durable));
    let gossip = |m: &mut M, delta: Delta| {
        step(
            m,
            0,
            Event::Gossip {
                from: 1,
                id: 5,
                delta,
            },
        )
    };
    assert_eq!(
        gossip(&mut m, d.clone()),
        vec![
            report(Acceptance::Ignore),
            Command::Deliver {
                batch: Batch::Gossip { from: 1, id: 5 },
                deltas: vec![d],
            }
        ]
    );
    // The next seq is new: forwarded and delivered.
    let next = delta(4, 4);
    assert_eq!(gossip(&mut m, next.clone())[0], report(Acceptance::Accept));
}

#[test]
fn a_seq_gap_is_repaired() {
    let mut m = connected(&[1]);
    assert_eq!(
        gossip_verdict(&mut m, Verdict::Rejected(ErrorKind::SeqGap)),
        vec![request(1, &VersionVector::new())]
    );
}

#[test]
fn a_busy_core_drops_the_message_and_repairs_later() {
    let mut m = connected(&[1]);
    let out = step(
        &mut m,
        1000,
        Event::CoreBusy {
            batch: Batch::Gossip { from: 1, id: 5 },
        },
    );
    assert_eq!(out, vec![]);
    assert_eq!(step(&mut m, 1099, Event::Tick), vec![]);
    assert_eq!(
        step(&mut m, 1100, Event::Tick),
        vec![request(1, &VersionVector::new())]
    );
}

// ---- serving ----------------------------------------------------------------------

fn sync_request(m: &mut M, from: u32, request: u64, theirs: Option<VersionVector>) -> Vec<Cmd> {
    step(
        m,
        0,
        Event::SyncRequest {
            from,
            request: RequestId(request),
            theirs,
        },
    )
}

#[test]
fn pages_are_served_up_to_the_durable_vector_only() {
    let mut m = connected(&[1]);
    let durable = vv(&[(1, 10), (2, 3)]);
    step(&mut m, 0, Event::Durable(durable.clone()));
    let theirs = vv(&[(1, 4)]);
    assert_eq!(
        sync_request(&mut m, 1, 9, Some(theirs.clone())),
        vec![Command::ServePage {
            request: RequestId(9),
            to: 1,
            theirs,
            up_to: durable,
            bounds: PageBounds {
                max_deltas: 1024,
                max_bytes: 4 << 20
            },
        }]
    );
    assert_eq!(m.serving(), 1);
    step(
        &mut m,
        0,
        Event::Served {
            request: RequestId(9),
        },
    );
    assert_eq!(m.serving(), 0);
}

#[test]
fn an_up_to_date_peer_gets_an_empty_page_without_a_store_read() {
    let mut m = connected(&[1]);
    step(&mut m, 0, Event::Durable(vv(&[(1, 10)])));
    assert_eq!(
        sync_request(&mut m, 1, 1, Some(vv(&[(1, 10)]))),
        vec![Command::RespondEmpty {
            request: RequestId(1),
            to: 1,
            why: Empty::UpToDate
        }]
    );
    assert_eq!(
        sync_request(&mut m, 1, 2, None),
        vec![Command::RespondEmpty {
            request: RequestId(2),
            to: 1,
            why: Empty::Malformed
        }]
    );
}

#[test]
fn serving_is_bounded_overall_and_per_peer() {
    let peers: Vec<u32> = (1..=10).collect();
    let mut m = connected(&peers);
    step(&mut m, 0, Event::Durable(vv(&[(1, 10)])));
    let empty = || Some(VersionVector::new());
    let busy = |request: u64, to: u32| Command::RespondEmpty {
        request: RequestId(request),
        to,
        why: Empty::Busy,
    };
    // Two pages at once for one peer, not three.
    assert!(matches!(
        sync_request(&mut m, 1, 1, empty())[..],
        [Command::ServePage { .. }]
    ));
    assert!(matches!(
        sync_request(&mut m, 1, 2, empty())[..],
        [Command::ServePage { .. }]
    ));
    assert_eq!(sync_request(&mut m, 1, 3, empty()), vec![busy(3, 1)]);
    // Eight at once overall.
    for p in 2..=7 {
        assert!(matches!(
            sync_request(&mut m, p, 10 + u64::from(p), empty())[..],
            [Command::ServePage { .. }]
        ));
    }
    assert_eq!(m.serving(), 8);
    assert_eq!(sync_request(&mut m, 8, 20, empty()), vec![busy(20, 8)]);
    step(
        &mut m,
        0,
        Event::Served {
            request: RequestId(1),
        },
    );
    assert!(matches!(
        sync_request(&mut m, 8, 21, empty())[..],
        [Command::ServePage { .. }]
    ));
}

#[test]
fn a_request_showing_deltas_this_node_lacks_starts_a_round_back() {
    let mut m = connected(&[1]);
    step(&mut m, 0, Event::Durable(vv(&[(1, 10)])));
    let theirs = vv(&[(1, 10), (2, 4)]);
    assert_eq!(
        sync_request(&mut m, 1, 1, Some(theirs)),
        vec![
            Command::RespondEmpty {
                request: RequestId(1),
                to: 1,
                why: Empty::UpToDate
            },
            request(1, &vv(&[(1, 10)]))
        ]
    );
}

// ---- timers and determinism ---------------------------------------------------------

#[test]
fn the_timer_is_armed_for_the_earliest_deadline_once() {
    let mut m: M = SyncMachine::new(config(), 1, vec![7], 0);
    assert_eq!(
        m.handle(0, Event::Tick),
        vec![Command::Dial { peer: 7 }, Command::ArmTimer { at: 250 }]
    );
    // Nothing changed: no new timer.
    assert_eq!(m.handle(100, Event::PingOk { peer: 7 }), vec![]);
    // Connected: the next deadline is the periodic round.
    assert_eq!(
        m.handle(
            200,
            Event::PeerUp {
                peer: 7,
                dialer: true
            }
        ),
        vec![Command::ArmTimer { at: 2000 }]
    );
    // A request due by 5300 does not move the earlier deadline.
    let out = m.handle(300, Event::Subscribed { peer: 7 });
    assert_eq!(out, vec![request(7, &VersionVector::new())]);
    // After the periodic round (no free peer for it), the next one is due.
    let out = m.handle(2000, Event::Tick);
    assert_eq!(out, vec![Command::ArmTimer { at: 4000 }]);
}

#[test]
fn the_same_seed_picks_the_same_peers() {
    let picks = |seed: u64| {
        let mut m: M = SyncMachine::new(config(), seed, vec![], 0);
        for p in 0..20 {
            m.handle(
                0,
                Event::PeerUp {
                    peer: p,
                    dialer: false,
                },
            );
        }
        let mut picked = Vec::new();
        for i in 1..=10u64 {
            for c in m.handle(i * 2000, Event::Tick) {
                if let Command::SendSyncRequest { to, .. } = c {
                    picked.push(to);
                    let done = Event::SyncPage {
                        from: to,
                        deltas: vec![],
                        more: false,
                    };
                    m.handle(i * 2000, done);
                }
            }
        }
        picked
    };
    assert_eq!(picks(3), picks(3));
    assert_ne!(picks(3), picks(4));
}
