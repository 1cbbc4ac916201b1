//! Unit tests of [`Topology`], the peer table, the articulation points and
//! the router score: for given events, the exact commands.
//!
//! [`dials`] keeps only the [`Command::Dial`]s of an event; tests about
//! state reports and timers look at every command.

use super::*;

type T = Topology<u32>;
type Cmd = Command<u32>;

/// This node in every test.
const ME: u32 = 1;

fn http(peer: u32) -> String {
    format!("http://10.0.0.{peer}:8080")
}

/// A healthy status of `peer`, sent at `ts`, on the equator at `lon`.
fn status(peer: u32, ts: u64, lon: f64, neighbours: &[u32]) -> Status<u32> {
    Status {
        peer,
        http: http(peer),
        region: "eu".into(),
        geo: Some(Geo { lat: 0.0, lon }),
        revision: 10,
        revision_hash: 0xabcd,
        mean_response_ms: 5.0,
        error_rate: 0.0,
        replication_delay_p50_ms: 50.0,
        replication_delay_p99_ms: 200.0,
        neighbours: neighbours.to_vec(),
        uptime_s: 60,
        timestamp_ms: ts,
    }
}

fn heard(peer: u32, ts: u64, lon: f64, neighbours: &[u32]) -> Event<u32> {
    Event::Status {
        from: peer,
        status: status(peer, ts, lon, neighbours),
    }
}

fn dial(peer: u32) -> Cmd {
    Command::Dial {
        peer,
        http: http(peer),
    }
}

fn changed(peer: u32, state: State) -> Cmd {
    Command::StateChanged { peer, state }
}

fn config(degree: usize, max_bridge_links: usize) -> Config {
    Config {
        degree,
        max_bridge_links,
        ..Config::default()
    }
}

/// This node, at longitude 0.
fn node(config: Config) -> T {
    Topology::new(ME, Some(Geo { lat: 0.0, lon: 0.0 }), config, 42)
}

/// The dials of one event.
fn dials(t: &mut T, now: Millis, event: Event<u32>) -> Vec<Cmd> {
    t.handle(now, event)
        .into_iter()
        .filter(|c| matches!(c, Command::Dial { .. }))
        .collect()
}

// ---- failure detection and healing -----------------------------------------

/// Chain a–c–b–d (a = this node, c = 3, b = 2, d = 4), degree 1 and no
/// bridge repair: when c goes silent, a waits for Down, then dials the
/// other side (b, the nearer). With c gone a hears nothing from b and d
/// either, so they go Down too, and are still dialled.
#[test]
fn chain_heals_when_the_middle_node_goes_down() {
    let mut t = node(config(1, 0));
    assert_eq!(t.handle(0, Event::Connected { peer: 3 }), vec![]);
    assert_eq!(
        t.handle(0, heard(3, 100, 0.5, &[ME, 2])),
        vec![changed(3, State::Alive), Command::ArmTimer { at: 3_000 }]
    );
    assert_eq!(
        t.handle(0, heard(2, 100, 1.0, &[3, 4])),
        vec![changed(2, State::Alive)]
    );
    assert_eq!(
        t.handle(0, heard(4, 100, 2.0, &[2])),
        vec![changed(4, State::Alive)]
    );
    assert_eq!(t.handle(2_999, Event::Tick), vec![]);
    assert_eq!(
        t.handle(3_000, Event::Tick),
        vec![
            changed(2, State::Suspect),
            changed(3, State::Suspect),
            changed(4, State::Suspect),
            Command::ArmTimer { at: 6_000 },
        ]
    );
    assert_eq!(
        t.handle(6_000, Event::Tick),
        vec![
            changed(2, State::Down),
            changed(3, State::Down),
            changed(4, State::Down),
            dial(2),
            // the dial's timeout
            Command::ArmTimer { at: 16_000 },
        ]
    );
    assert_eq!(dials(&mut t, 6_100, Event::Connected { peer: 2 }), vec![]);
    assert_eq!(t.connected().collect::<Vec<_>>(), vec![2, 3]);
    // b's statuses flow again through the new link: alive, degree met.
    assert_eq!(
        t.handle(6_200, heard(2, 6_150, 1.0, &[ME, 4])),
        vec![changed(2, State::Alive), Command::ArmTimer { at: 9_200 }]
    );
}

/// The same chain with everything alive and one bridge link allowed: c is
/// an articulation point next to a, so a links to b (the nearest node on
/// the other side) before anything fails, and to nothing more.
#[test]
fn bridge_repair_links_around_an_articulation_point() {
    let mut t = node(config(1, 1));
    assert_eq!(dials(&mut t, 0, Event::Connected { peer: 3 }), vec![]);
    // b is not in the table yet: nothing to dial.
    assert_eq!(dials(&mut t, 0, heard(3, 100, 0.5, &[ME, 2])), vec![]);
    assert_eq!(dials(&mut t, 0, heard(2, 100, 1.0, &[3, 4])), vec![dial(2)]);
    // One bridge dial at a time.
    assert_eq!(dials(&mut t, 0, heard(4, 100, 2.0, &[2])), vec![]);
    assert_eq!(dials(&mut t, 10, Event::Connected { peer: 2 }), vec![]);
    // b is still an articulation point (for d), but the budget is spent.
    assert_eq!(dials(&mut t, 1_000, heard(4, 1_000, 2.0, &[2])), vec![]);
}

/// A failed bridge dial moves on to the next node on the other side; the
/// failed one waits out its backoff.
#[test]
fn bridge_repair_moves_on_after_a_failed_dial() {
    let mut t = node(config(1, 1));
    dials(&mut t, 0, Event::Connected { peer: 3 });
    dials(&mut t, 0, heard(3, 100, 0.5, &[ME, 2]));
    assert_eq!(dials(&mut t, 0, heard(2, 100, 1.0, &[3, 4])), vec![dial(2)]);
    assert_eq!(dials(&mut t, 0, heard(4, 100, 2.0, &[2])), vec![]);
    assert_eq!(
        dials(&mut t, 10, Event::DialFailed { peer: 2 }),
        vec![dial(4)]
    );
    assert_eq!(dials(&mut t, 20, Event::DialFailed { peer: 4 }), vec![]);
    // Unchanged statuses do not dial while both back off.
    assert_eq!(dials(&mut t, 500, heard(2, 500, 1.0, &[3, 4])), vec![]);
    assert_eq!(dials(&mut t, 1_010, Event::Tick), vec![dial(2)]);
}

/// Without bridge repair, the same statuses dial nothing: degree 1 is met.
#[test]
fn no_bridge_links_when_turned_off() {
    let mut t = node(config(1, 0));
    dials(&mut t, 0, Event::Connected { peer: 3 });
    for (p, lon, ns) in [(3, 0.5, &[ME, 2][..]), (2, 1.0, &[3, 4]), (4, 2.0, &[2])] {
        assert_eq!(dials(&mut t, 0, heard(p, 100, lon, ns)), vec![]);
    }
}

/// A node in a ring is next to no articulation point: no bridge link.
#[test]
fn no_bridge_links_in_a_ring() {
    let mut t = node(config(2, 2));
    dials(&mut t, 0, Event::Connected { peer: 2 });
    dials(&mut t, 0, Event::Connected { peer: 4 });
    // ring 1-2-3-4-1
    for (p, ns) in [(2, &[ME, 3][..]), (3, &[2, 4]), (4, &[3, ME])] {
        assert_eq!(dials(&mut t, 0, heard(p, 100, p as f64, ns)), vec![]);
    }
}

#[test]
fn a_suspect_neighbour_still_counts_a_down_one_does_not() {
    let mut t = node(config(1, 0));
    dials(&mut t, 0, Event::Connected { peer: 3 });
    dials(&mut t, 0, heard(3, 1, 3.0, &[]));
    dials(&mut t, 0, heard(2, 1, 2.0, &[]));
    // 2 keeps beating, 3 does not.
    assert_eq!(dials(&mut t, 2_500, heard(2, 2_500, 2.0, &[])), vec![]);
    assert_eq!(dials(&mut t, 3_000, Event::Tick), vec![]);
    assert_eq!(dials(&mut t, 5_000, heard(2, 5_000, 2.0, &[])), vec![]);
    assert_eq!(dials(&mut t, 6_000, Event::Tick), vec![dial(2)]);
}

// ---- degree ----------------------------------------------------------------

#[test]
fn degree_is_kept_with_the_nearest_peers() {
    let mut t = node(Config::default());
    // Three links up to peers that sent no status yet: degree met.
    for p in [7, 8, 9] {
        assert_eq!(dials(&mut t, 0, Event::Connected { peer: p }), vec![]);
    }
    // Farthest first, to show the order is by distance.
    for p in [6, 5, 4, 3, 2] {
        assert_eq!(dials(&mut t, 0, heard(p, 100, p as f64, &[])), vec![]);
    }
    assert_eq!(
        dials(&mut t, 10, Event::Disconnected { peer: 7 }),
        vec![dial(2)]
    );
    assert_eq!(
        dials(&mut t, 20, Event::Disconnected { peer: 8 }),
        vec![dial(3)]
    );
    assert_eq!(dials(&mut t, 30, Event::Connected { peer: 2 }), vec![]);
    assert_eq!(
        dials(&mut t, 40, Event::Disconnected { peer: 9 }),
        vec![dial(4)]
    );
    assert_eq!(dials(&mut t, 50, Event::Connected { peer: 3 }), vec![]);
    assert_eq!(dials(&mut t, 60, Event::Connected { peer: 4 }), vec![]);
    assert_eq!(dials(&mut t, 1_000, Event::Tick), vec![]);
    assert_eq!(t.connected().collect::<Vec<_>>(), vec![2, 3, 4]);
}

#[test]
fn dials_fill_the_degree_at_once() {
    let mut t = node(config(2, 0));
    assert_eq!(dials(&mut t, 0, heard(2, 1, 2.0, &[])), vec![dial(2)]);
    assert_eq!(dials(&mut t, 0, heard(3, 1, 3.0, &[])), vec![dial(3)]);
    // Two dials in flight: the degree is met.
    assert_eq!(dials(&mut t, 0, heard(4, 1, 4.0, &[])), vec![]);
    assert_eq!(
        dials(&mut t, 5, Event::DialFailed { peer: 3 }),
        vec![dial(4)]
    );
}

/// Without positions the order is random, from the seed.
#[test]
fn without_positions_the_seed_decides() {
    let picks = |seed| {
        let mut t: T = Topology::new(ME, None, config(2, 0), seed);
        dials(&mut t, 0, Event::Connected { peer: 50 });
        dials(&mut t, 0, Event::Connected { peer: 51 });
        for p in 2..12 {
            dials(&mut t, 0, heard(p, 1, 0.0, &[]));
        }
        let mut out = dials(&mut t, 1, Event::Disconnected { peer: 50 });
        out.extend(dials(&mut t, 2, Event::Disconnected { peer: 51 }));
        out
    };
    assert_eq!(picks(5), picks(5));
    assert_eq!(picks(5).len(), 2);
    let distinct: BTreeSet<_> = (0..20).map(|s| format!("{:?}", picks(s))).collect();
    assert!(distinct.len() > 1, "the seed changes the picks");
}

// ---- backoff ---------------------------------------------------------------

#[test]
fn a_failed_dial_waits_a_doubling_backoff() {
    let mut t = node(config(1, 0));
    assert_eq!(dials(&mut t, 0, heard(2, 1, 2.0, &[])), vec![dial(2)]);
    assert_eq!(
        t.handle(100, Event::DialFailed { peer: 2 }),
        vec![Command::ArmTimer { at: 1_100 }]
    );
    assert_eq!(dials(&mut t, 101, heard(2, 2, 2.0, &[])), vec![]);
    assert_eq!(dials(&mut t, 1_099, Event::Tick), vec![]);
    assert_eq!(dials(&mut t, 1_100, Event::Tick), vec![dial(2)]);
    assert_eq!(dials(&mut t, 1_200, Event::DialFailed { peer: 2 }), vec![]);
    assert_eq!(dials(&mut t, 3_199, Event::Tick), vec![]);
    assert_eq!(dials(&mut t, 3_200, Event::Tick), vec![dial(2)]);
    // A link that comes up resets the backoff; a lost one waits the minimum.
    dials(&mut t, 3_300, Event::Connected { peer: 2 });
    assert_eq!(
        dials(&mut t, 3_400, Event::Disconnected { peer: 2 }),
        vec![]
    );
    assert_eq!(dials(&mut t, 4_400, Event::Tick), vec![dial(2)]);
}

#[test]
fn a_failed_dial_moves_on_to_another_peer() {
    let mut t = node(config(1, 0));
    assert_eq!(dials(&mut t, 0, heard(2, 1, 2.0, &[])), vec![dial(2)]);
    dials(&mut t, 0, heard(3, 1, 3.0, &[]));
    assert_eq!(
        dials(&mut t, 10, Event::DialFailed { peer: 2 }),
        vec![dial(3)]
    );
    assert_eq!(dials(&mut t, 20, Event::DialFailed { peer: 3 }), vec![]);
    // Both backing off: the next dial waits for the first backoff to end.
    assert_eq!(dials(&mut t, 500, Event::Tick), vec![]);
    assert_eq!(dials(&mut t, 1_010, Event::Tick), vec![dial(2)]);
}

#[test]
fn an_unanswered_dial_times_out_and_backs_off() {
    let mut t = node(config(1, 0));
    assert_eq!(dials(&mut t, 0, heard(2, 1, 2.0, &[])), vec![dial(2)]);
    assert_eq!(dials(&mut t, 9_999, Event::Tick), vec![]);
    assert_eq!(dials(&mut t, 10_000, Event::Tick), vec![]);
    assert_eq!(dials(&mut t, 11_000, Event::Tick), vec![dial(2)]);
}

// ---- the table -------------------------------------------------------------

#[test]
fn older_and_duplicate_statuses_are_ignored() {
    let mut t = node(config(0, 0));
    t.handle(0, heard(2, 100, 2.0, &[]));
    // Replayed or reordered statuses do not refresh the heartbeat.
    assert_eq!(t.handle(2_000, heard(2, 50, 9.0, &[])), vec![]);
    assert_eq!(t.handle(2_500, heard(2, 100, 9.0, &[])), vec![]);
    assert_eq!(t.table().get(&2).unwrap().received_ms, 0);
    assert_eq!(t.table().get(&2).unwrap().status.geo.unwrap().lon, 2.0);
    assert_eq!(
        t.handle(3_000, Event::Tick),
        vec![changed(2, State::Suspect), Command::ArmTimer { at: 6_000 }]
    );
    // A newer one does. The timer armed for 6 000 stays: a status only
    // moves its node's next verdict later, so the early tick re-arms.
    assert_eq!(
        t.handle(3_100, heard(2, 101, 9.0, &[])),
        vec![changed(2, State::Alive)]
    );
    assert_eq!(t.table().get(&2).unwrap().status.geo.unwrap().lon, 9.0);
    assert_eq!(
        t.handle(6_000, Event::Tick),
        vec![Command::ArmTimer { at: 6_100 }]
    );
    assert_eq!(
        t.handle(6_100, Event::Tick),
        vec![changed(2, State::Suspect), Command::ArmTimer { at: 9_100 }]
    );
}

#[test]
fn a_steady_stream_of_statuses_arms_no_timer_once_one_is_armed() {
    let mut t = node(config(0, 0));
    assert_eq!(
        t.handle(0, heard(2, 1, 2.0, &[])),
        vec![changed(2, State::Alive), Command::ArmTimer { at: 3_000 }]
    );
    // A new node whose verdict is due later than the armed timer: nothing.
    assert_eq!(
        t.handle(500, heard(3, 1, 2.0, &[])),
        vec![changed(3, State::Alive)]
    );
    assert_eq!(t.handle(1_000, heard(2, 2, 2.0, &[])), vec![]);
    // The early tick finds nothing due and arms for the next verdict.
    assert_eq!(
        t.handle(3_000, Event::Tick),
        vec![Command::ArmTimer { at: 3_500 }]
    );
    assert_eq!(
        t.handle(3_500, Event::Tick),
        vec![changed(3, State::Suspect), Command::ArmTimer { at: 4_000 }]
    );
}

#[test]
fn own_status_is_not_in_the_table() {
    let mut t = node(config(3, 0));
    assert_eq!(t.handle(0, heard(ME, 1, 0.0, &[2])), vec![]);
    assert!(t.table().is_empty());
}

#[test]
fn the_table_is_bounded_and_evicts_the_longest_silent() {
    let mut table = PeerTable::new(3, Timeouts::default());
    assert_eq!(
        table.insert(0, status(2, 1, 0.0, &[])),
        Insert::New { evicted: None }
    );
    table.insert(10, status(3, 1, 0.0, &[]));
    table.insert(20, status(4, 1, 0.0, &[]));
    assert_eq!(table.insert(30, status(2, 2, 0.0, &[])), Insert::Updated);
    assert_eq!(table.insert(31, status(2, 2, 0.0, &[])), Insert::Stale);
    assert_eq!(
        table.insert(40, status(5, 1, 0.0, &[])),
        Insert::New { evicted: Some(3) }
    );
    assert_eq!(
        table.insert(50, status(6, 1, 0.0, &[])),
        Insert::New { evicted: Some(4) }
    );
    assert_eq!(table.len(), 3);
    let peers: Vec<u32> = table.iter().map(|e| e.status.peer).collect();
    assert_eq!(peers, vec![2, 5, 6]);
}

#[test]
fn the_machine_table_is_bounded_by_max_peers() {
    let mut t = node(Config {
        max_peers: 2,
        ..config(0, 0)
    });
    for p in 2..10 {
        t.handle(p as u64, heard(p, 1, 0.0, &[]));
    }
    assert_eq!(t.table().len(), 2);
    let peers: Vec<u32> = t.table().iter().map(|e| e.status.peer).collect();
    assert_eq!(peers, vec![8, 9]);
}

#[test]
fn long_silent_nodes_are_forgotten() {
    let mut t = node(config(0, 0));
    t.handle(0, heard(2, 1, 0.0, &[]));
    assert_eq!(
        t.handle(6_000, Event::Tick),
        vec![changed(2, State::Down), Command::ArmTimer { at: 600_000 }]
    );
    assert_eq!(t.handle(600_000, Event::Tick), vec![]);
    assert!(t.table().is_empty());
}

#[test]
fn statuses_are_sanitised() {
    let mut table = PeerTable::new(8, Timeouts::default());
    let mut s = status(2, 1, 0.0, &[]);
    s.neighbours = (0..100).rev().collect();
    s.mean_response_ms = f64::NAN;
    s.replication_delay_p50_ms = -5.0;
    s.error_rate = 7.0;
    table.insert(0, s);
    let s = &table.get(&2).unwrap().status;
    let mut want: Vec<u32> = (0..100).filter(|n| *n != 2).collect();
    want.truncate(MAX_NEIGHBOURS);
    assert_eq!(s.neighbours, want, "sorted, own id dropped, bounded");
    assert_eq!(s.mean_response_ms, MAX_FIGURE_MS);
    assert_eq!(s.replication_delay_p50_ms, MAX_FIGURE_MS);
    assert_eq!(s.error_rate, 1.0);
}

// ---- articulation points ---------------------------------------------------

fn graph(edges: &[(u32, u32)]) -> Graph<u32> {
    let mut g = Graph::new();
    for (a, b) in edges {
        graph::add_edge(&mut g, *a, *b);
    }
    g
}

#[test]
fn articulation_points_of_small_graphs() {
    let path = graph(&[(1, 2), (2, 3), (3, 4)]);
    assert_eq!(articulation_points(&path), BTreeSet::from([2, 3]));
    let ring = graph(&[(1, 2), (2, 3), (3, 4), (4, 5), (5, 1)]);
    assert_eq!(articulation_points(&ring), BTreeSet::new());
    let star = graph(&[(0, 1), (0, 2), (0, 3), (0, 4)]);
    assert_eq!(articulation_points(&star), BTreeSet::from([0]));
    let bowtie = graph(&[(1, 2), (2, 3), (3, 1), (3, 4), (4, 5), (5, 3)]);
    assert_eq!(articulation_points(&bowtie), BTreeSet::from([3]));
    // Two components, each a path of three.
    let two = graph(&[(1, 2), (2, 3), (7, 8), (8, 9)]);
    assert_eq!(articulation_points(&two), BTreeSet::from([2, 8]));
    assert_eq!(articulation_points(&Graph::<u32>::new()), BTreeSet::new());
    assert_eq!(articulation_points(&graph(&[(1, 2)])), BTreeSet::new());
}

#[test]
fn a_long_chain_does_not_overflow_the_stack() {
    let edges: Vec<(u32, u32)> = (0..200_000).map(|i| (i, i + 1)).collect();
    assert_eq!(articulation_points(&graph(&edges)).len(), 199_999);
}

#[test]
fn other_sides_are_the_nodes_behind_an_adjacent_articulation_point() {
    // 1 - 2 - 3 - 4, and 5 hanging off 1
    let g = graph(&[(1, 2), (2, 3), (3, 4), (1, 5)]);
    assert_eq!(graph::other_sides(&g, 1), BTreeSet::from([3, 4]));
    assert_eq!(graph::other_sides(&g, 4), BTreeSet::from([1, 2, 5]));
    // In a ring nothing is behind anything.
    let ring = graph(&[(1, 2), (2, 3), (3, 1)]);
    assert_eq!(graph::other_sides(&ring, 1), BTreeSet::new());
}

// ---- router score ----------------------------------------------------------

const LONDON: Geo = Geo {
    lat: 51.5074,
    lon: -0.1278,
};

fn host(peer: u32, lat: f64, lon: f64) -> Status<u32> {
    Status {
        geo: Some(Geo { lat, lon }),
        ..status(peer, 1, 0.0, &[])
    }
}

fn order(r: &[Ranked<u32>]) -> Vec<u32> {
    r.iter().map(|r| r.peer).collect()
}

#[test]
fn the_nearest_healthy_host_ranks_first() {
    let mut table = PeerTable::new(8, Timeouts::default());
    table.insert(0, host(4, 35.68, 139.69)); // Tokyo
    table.insert(0, host(3, 40.71, -74.01)); // New York
    table.insert(0, host(2, 48.86, 2.35)); // Paris
    let w = Weights::default();
    let r = rank(&table, Some(LONDON), &w, 0);
    assert_eq!(order(&r), vec![2, 3, 4]);
    let paris = &r[0];
    let km = paris.distance_km.unwrap();
    assert!((km - 343.5).abs() < 2.0, "{km}");
    assert_eq!(paris.terms.delay, 50.0);
    assert_eq!(paris.terms.response, 5.0);
    assert_eq!(paris.terms.distance, 0.02 * km);
    assert_eq!(paris.terms.error, 0.0);
    assert_eq!(paris.score, 1.0 / (55.0 + 0.02 * km));
    // From Tokyo, the order turns.
    let tokyo = Geo {
        lat: 35.0,
        lon: 139.0,
    };
    assert_eq!(order(&rank(&table, Some(tokyo), &w, 0)), vec![4, 2, 3]);
}

#[test]
fn a_suspect_host_leaves_the_ranking() {
    let mut table = PeerTable::new(8, Timeouts::default());
    table.insert(0, host(2, 48.86, 2.35));
    table.insert(0, host(3, 40.71, -74.01));
    let w = Weights::default();
    assert_eq!(order(&rank(&table, Some(LONDON), &w, 2_999)), vec![2, 3]);
    // 3 keeps beating, 2 falls silent.
    table.insert(
        2_000,
        Status {
            timestamp_ms: 2,
            ..host(3, 40.71, -74.01)
        },
    );
    assert_eq!(order(&rank(&table, Some(LONDON), &w, 3_000)), vec![3]);
    assert_eq!(order(&rank(&table, Some(LONDON), &w, 8_000)), vec![]);
}

#[test]
fn errors_lower_a_host() {
    let mut table = PeerTable::new(8, Timeouts::default());
    table.insert(
        0,
        Status {
            error_rate: 0.1,
            ..host(2, 48.86, 2.35)
        },
    );
    table.insert(0, host(3, 48.86, 2.35));
    let r = rank(&table, Some(LONDON), &Weights::default(), 0);
    assert_eq!(order(&r), vec![3, 2]);
    assert_eq!(r[1].terms.error, 100.0);
}

#[test]
fn scores_without_positions_and_without_cost() {
    let w = Weights::default();
    // No client position: distance counts for nothing.
    let r = score(&host(2, 48.86, 2.35), None, &w);
    assert_eq!((r.distance_km, r.terms.distance), (None, 0.0));
    // Host position unknown: charged as the farthest.
    let r = score(
        &Status {
            geo: None,
            ..host(2, 0.0, 0.0)
        },
        Some(LONDON),
        &w,
    );
    assert_eq!(r.terms.distance, 0.02 * UNKNOWN_DISTANCE_KM);
    // Nothing to pay: no division by zero.
    let free = Weights {
        i: 0.0,
        j: 0.0,
        k: 0.0,
        l: 0.0,
    };
    assert_eq!(
        score(&host(2, 0.0, 0.0), Some(LONDON), &free).score,
        1.0 / MIN_COST
    );
}

#[test]
fn weights_parse() {
    assert_eq!(
        Weights::parse("1, 2,0.5,100").unwrap(),
        Weights {
            i: 1.0,
            j: 2.0,
            k: 0.5,
            l: 100.0
        }
    );
    assert!(Weights::parse("1,2,3").is_err());
    assert!(Weights::parse("1,2,3,-1").is_err());
    assert!(Weights::parse("1,2,3,x").is_err());
    assert!(Weights::parse("1,2,3,inf").is_err());
}

#[test]
fn config_validation_names_the_key() {
    assert_eq!(Config::default().validate(), Ok(()));
    let bad = |f: fn(&mut Config)| {
        let mut c = Config::default();
        f(&mut c);
        c.validate().unwrap_err()
    };
    assert!(bad(|c| c.timeouts.down_after_ms = 3_000).starts_with("down_after_ms"));
    assert!(bad(|c| c.timeouts.suspect_after_ms = 0).starts_with("suspect_after_ms"));
    assert!(bad(|c| c.timeouts.forget_after_ms = 1).starts_with("forget_after_ms"));
    assert!(bad(|c| c.max_peers = 0).starts_with("max_peers"));
    assert!(bad(|c| c.dial_timeout_ms = 0).starts_with("dial_timeout_ms"));
    assert!(bad(|c| c.backoff_max_ms = 10).starts_with("backoff_min_ms"));
}
