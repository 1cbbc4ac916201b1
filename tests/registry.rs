//! The name registry (a Raft group of three voters) against real node
//! processes: one owner per name whatever the concurrency, claims and reads
//! that stay linearizable through a leader's crash and through a partition
//! that isolates the leader, and no committed claim lost when a voter is
//! killed.
//!
//! Peer ids are only known once a node runs, so each test starts its nodes
//! as a full mesh (every node joins every earlier one), then sets the group
//! up with `POST /api/v0/registry/init` on one node, and waits until the
//! voters agree on a leader before the workload starts. Nodes that are
//! killed and restarted listen on a fixed libp2p port, so that their peers'
//! redials find them again.
//!
//! The histories of claims and reads are checked with
//! [`hearsay_registry::linearizability::check`]: a 201 is `Granted`, a 409
//! is `Taken` by the owner it names, a 200 read is what it read, and
//! anything else (503, 504, no answer) is `Unknown`. Figures (time from a
//! leader's crash or isolation to the next granted claim) are printed;
//! their assertions are generous, timing belongs to benchmarks.
//!
//! The partition test needs root for its network namespaces (see
//! `common/netns.rs`): where they cannot be made, it says why and skips.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::netns::Lab;
use common::{TestNode, wait_until};
use hearsay_node::client::Client;
use hearsay_registry::linearizability::{self, Event, Op, Outcome};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};

/// How long a mesh may take to form.
const CONNECT: Duration = Duration::from_secs(60);
/// How long the voters may take to agree on a leader (elections start
/// after 1 to 2 s of silence).
const ELECTION: Duration = Duration::from_secs(30);
/// How long a restarted voter may take to catch up, and a healed group to
/// agree again.
const CONVERGE: Duration = Duration::from_secs(60);
/// Generous bound on the time from losing a leader (crash, isolation) to
/// the next granted claim.
const FIRST_GRANT_LIMIT: Duration = Duration::from_secs(15);
/// A static mesh in the lab: each node dials only the peers it joined.
const STATIC_MESH: &str = "target_peers = 0\n";

// ---- answers --------------------------------------------------------------

/// What the node answered to a claim or a read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    /// 201: the claim was granted to this owner (final).
    Claimed(String),
    /// 409: the name is held by this owner (final).
    Taken(String),
    /// 200 to a read: the owner (`None`: free).
    Owner(Option<String>),
    /// 503 `UNAVAILABLE`: nothing was written.
    Unavailable,
    /// 504 `UNKNOWN`: the claim may or may not be applied.
    Unknown,
    /// No answer: connection refused or reset, timeout.
    NoAnswer(String),
    /// Anything else (a status or an envelope the API does not promise).
    Unexpected(u16, String),
}

/// Reads a node's answer to a claim (`claim` true) or a read of `name`.
fn classify(status: u16, json: &Value, name: &str, claim: bool) -> Reply {
    let body = &json["body"];
    let unexpected = || Reply::Unexpected(status, json.to_string());
    match status {
        201 if claim && json["status"] == "OK" && body["name"] == name => {
            match body["owner"].as_str() {
                Some(owner) => Reply::Claimed(owner.to_owned()),
                None => unexpected(),
            }
        }
        409 if claim && json["status"] == "ERROR" && body["name"] == name => {
            match body["owner"].as_str() {
                Some(owner) => Reply::Taken(owner.to_owned()),
                None => unexpected(),
            }
        }
        200 if !claim && json["status"] == "OK" && body["name"] == name => {
            let owner = match &body["owner"] {
                Value::Null => None,
                Value::String(owner) => Some(owner.clone()),
                _ => return unexpected(),
            };
            if body["free"].as_bool() != Some(owner.is_none()) || !body["index"].is_u64() {
                return unexpected();
            }
            Reply::Owner(owner)
        }
        503 if json["status"] == "UNAVAILABLE" => Reply::Unavailable,
        504 if claim && json["status"] == "UNKNOWN" => Reply::Unknown,
        _ => unexpected(),
    }
}

/// `POST /api/v0/names {"name", "owner"}`.
async fn claim(client: &Client, name: &str, owner: &str) -> Reply {
    let request = client
        .http()
        .post(client.url("/api/v0/names"))
        .json(&json!({"name": name, "owner": owner}));
    match client.send(request).await {
        Ok(answer) => classify(answer.status.as_u16(), &answer.json, name, true),
        Err(e) => Reply::NoAnswer(e.to_string()),
    }
}

/// `GET /api/v0/names/{name}`.
async fn read(client: &Client, name: &str) -> Reply {
    match client.get_raw(&format!("/api/v0/names/{name}")).await {
        Ok(answer) => classify(answer.status.as_u16(), &answer.json, name, false),
        Err(e) => Reply::NoAnswer(e.to_string()),
    }
}

// ---- histories ------------------------------------------------------------

/// Microseconds since the test's common start.
#[derive(Debug, Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn new() -> Clock {
        Clock(Instant::now())
    }

    fn now(&self) -> u64 {
        self.0.elapsed().as_micros() as u64
    }

    fn at(&self, micros: u64) -> Duration {
        Duration::from_micros(micros)
    }
}

/// One recorded operation: the checker's event, the node asked and the
/// answer as it came.
#[derive(Debug, Clone)]
struct Done {
    event: Event,
    node: usize,
    reply: Reply,
}

impl Done {
    fn is_claim(&self) -> bool {
        matches!(self.event.op, Op::Claim { .. })
    }

    fn granted(&self) -> bool {
        self.event.outcome == Outcome::Granted
    }
}

/// Issues one claim (`Some(owner)`) or read of `name` at `nodes[node]`
/// and records it.
async fn operate(
    clock: &Clock,
    process: u64,
    clients: &[Client],
    node: usize,
    name: &str,
    owner: Option<&str>,
) -> Done {
    let invoked = clock.now();
    let reply = match owner {
        Some(owner) => claim(&clients[node], name, owner).await,
        None => read(&clients[node], name).await,
    };
    let returned = clock.now();
    let (op, outcome) = match (owner, &reply) {
        (Some(owner), Reply::Claimed(_)) => (
            Op::Claim {
                owner: owner.into(),
            },
            Outcome::Granted,
        ),
        (Some(owner), Reply::Taken(holder)) => (
            Op::Claim {
                owner: owner.into(),
            },
            Outcome::Taken {
                owner: holder.clone(),
            },
        ),
        (Some(owner), _) => (
            Op::Claim {
                owner: owner.into(),
            },
            Outcome::Unknown,
        ),
        (None, Reply::Owner(holder)) => (Op::Read, Outcome::Read(holder.clone())),
        (None, _) => (Op::Read, Outcome::Unknown),
    };
    Done {
        event: Event {
            process,
            name: name.to_owned(),
            op,
            invoked,
            returned: Some(returned),
            outcome,
        },
        node,
        reply,
    }
}

/// Answers no correct node gives: a 201 naming another owner than the
/// claimant, a status or envelope outside the API.
fn anomalies(history: &[Done]) -> Vec<String> {
    history
        .iter()
        .filter(|d| match (&d.event.op, &d.reply) {
            (Op::Claim { owner }, Reply::Claimed(granted)) => owner != granted,
            (_, Reply::Unexpected(..)) => true,
            _ => false,
        })
        .map(|d| format!("node {}: {:?} -> {:?}", d.node, d.event, d.reply))
        .collect()
}

/// Checks `history` with the linearizability checker; panics with the
/// violation (and the answers as they came for its name).
fn assert_linearizable(history: &[Done]) -> linearizability::Report {
    let events: Vec<Event> = history.iter().map(|d| d.event.clone()).collect();
    match linearizability::check(&events) {
        Ok(report) => report,
        Err(error) => {
            let name = match &error {
                linearizability::CheckError::Violation(v) => Some(v.name.clone()),
                linearizability::CheckError::Undecided { name, .. }
                | linearizability::CheckError::Malformed { name, .. } => Some(name.clone()),
            };
            let about: Vec<String> = history
                .iter()
                .filter(|d| Some(&d.event.name) == name.as_ref())
                .map(|d| {
                    format!(
                        "  p{} node {} [{} us .. {:?} us] {:?} -> {:?}",
                        d.event.process,
                        d.node,
                        d.event.invoked,
                        d.event.returned,
                        d.event.op,
                        d.reply
                    )
                })
                .collect();
            panic!(
                "the history of {} operations is not linearizable: {error}\nanswers for {name:?}:\n{}",
                history.len(),
                about.join("\n")
            );
        }
    }
}

/// Counts of a history's answers, for the figures printed.
fn tally(history: &[Done]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for d in history {
        let kind = match (&d.event.op, &d.reply) {
            (Op::Claim { .. }, Reply::Claimed(_)) => "claim 201",
            (Op::Claim { .. }, Reply::Taken(_)) => "claim 409",
            (Op::Claim { .. }, Reply::Unavailable) => "claim 503",
            (Op::Claim { .. }, Reply::Unknown) => "claim 504",
            (Op::Claim { .. }, Reply::NoAnswer(_)) => "claim no answer",
            (Op::Read, Reply::Owner(_)) => "read 200",
            (Op::Read, Reply::Unavailable) => "read 503",
            (Op::Read, Reply::NoAnswer(_)) => "read no answer",
            _ => "unexpected",
        };
        *counts.entry(kind).or_default() += 1;
    }
    counts
        .iter()
        .map(|(kind, n)| format!("{kind}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---- nodes and the group --------------------------------------------------

/// A port free now, for a node whose address must survive a restart.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Waits until every node is connected to every other one.
async fn wait_mesh(nodes: &[TestNode]) {
    let want = nodes.len() as u64 - 1;
    wait_until(CONNECT, "a full mesh", async || {
        for node in nodes {
            if node.stats().await["peers"].as_u64().unwrap_or(0) < want {
                return false;
            }
        }
        true
    })
    .await;
}

/// `count` nodes on loopback, each joining every earlier one, each on a
/// fixed libp2p port (kept across restarts), connected as a full mesh.
async fn start_mesh(prefix: &str, count: usize) -> Vec<TestNode> {
    let mut nodes: Vec<TestNode> = Vec::new();
    for i in 0..count {
        let joins: Vec<String> = nodes.iter().map(TestNode::tcp_addr).collect();
        let joins: Vec<&str> = joins.iter().map(String::as_str).collect();
        let listen = format!("/ip4/127.0.0.1/tcp/{}", free_port());
        let node = TestNode::start_listening(&format!("{prefix}-{i}"), &joins, &[&listen]).await;
        nodes.push(node);
    }
    wait_mesh(&nodes).await;
    nodes
}

/// `GET /api/v0/registry` of a running node (None if it does not answer).
async fn registry_status(node: &TestNode) -> Option<Value> {
    if !node.is_running() {
        return None;
    }
    node.client().get_body("/api/v0/registry").await.ok()
}

/// The voter (index in `nodes`) that every running voter names as leader
/// and that says it leads, when a majority of the voters runs and agrees.
async fn agreed_leader(nodes: &[TestNode], voters: &[usize]) -> Option<usize> {
    let mut leader: Option<String> = None;
    let mut agreeing = 0;
    for &v in voters {
        let Some(status) = registry_status(&nodes[v]).await else {
            continue;
        };
        let named = status["leader"].as_str()?.to_owned();
        if leader.as_ref().is_some_and(|l| *l != named) {
            return None;
        }
        leader = Some(named);
        agreeing += 1;
    }
    if agreeing * 2 <= voters.len() {
        return None;
    }
    let leader = leader?;
    let index = voters
        .iter()
        .copied()
        .find(|&v| nodes[v].peer_id() == leader)?;
    let status = registry_status(&nodes[index]).await?;
    (status["state"] == "Leader").then_some(index)
}

/// Waits until the running voters agree on a leader; its index.
async fn wait_leader(nodes: &[TestNode], voters: &[usize], what: &str) -> usize {
    let mut leader = None;
    wait_until(ELECTION, what, async || {
        leader = agreed_leader(nodes, voters).await;
        leader.is_some()
    })
    .await;
    leader.expect("a leader once the wait succeeded")
}

/// Sets the group up with `voters` through `nodes[voters[0]]` and waits
/// for a leader; its index.
async fn init_registry(nodes: &[TestNode], voters: &[usize]) -> usize {
    let ids: Vec<String> = voters.iter().map(|&v| nodes[v].peer_id()).collect();
    let setup = &nodes[voters[0]];
    let answer = setup
        .post_json("/api/v0/registry/init", &json!({"voters": ids}))
        .await
        .expect("POST /api/v0/registry/init");
    assert_eq!(
        answer.status, 200,
        "{}: registry init answered {}: {}",
        setup.name, answer.status, answer.json
    );
    let started = Instant::now();
    let leader = wait_leader(nodes, voters, "the voters agree on a registry leader").await;
    println!(
        "registry set up: leader {} elected {} ms after init",
        nodes[leader].name,
        started.elapsed().as_millis()
    );
    leader
}

/// The registry's `applied_index` at a running node.
async fn applied_index(node: &TestNode) -> Option<u64> {
    registry_status(node).await?["applied_index"].as_u64()
}

/// Reads every name in `names` from every running node in `nodes`, once a
/// leader is agreed on, appending the reads to `history` as processes
/// `1000 + node`; panics unless every read answers 200 and the nodes agree.
/// Returns the owners read.
async fn read_everywhere(
    nodes: &[TestNode],
    clock: &Clock,
    names: &BTreeSet<String>,
    history: &mut Vec<Done>,
    when: &str,
) -> BTreeMap<String, Option<String>> {
    let clients: Vec<Client> = nodes.iter().map(|n| n.client().clone()).collect();
    let mut owners: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut failures = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        if !node.is_running() {
            continue;
        }
        for name in names {
            let done = operate(clock, 1000 + i as u64, &clients, i, name, None).await;
            match &done.reply {
                Reply::Owner(owner) => {
                    let first = owners.entry(name.clone()).or_insert_with(|| owner.clone());
                    if first != owner {
                        failures.push(format!(
                            "{}: {name} owned by {owner:?}, another node read {first:?}",
                            node.name
                        ));
                    }
                }
                other => failures.push(format!("{}: read of {name} -> {other:?}", node.name)),
            }
            history.push(done);
        }
    }
    assert!(
        failures.is_empty(),
        "{when}: {} reads failed or disagree:\n{}",
        failures.len(),
        failures.join("\n")
    );
    owners
}

// ---- 1. one owner per name ------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_from_every_node_leave_one_owner_per_name() {
    const NODES: usize = 5;
    const NAMES: usize = 20;
    let voters = [0, 1, 2];
    let mut nodes = start_mesh("one-owner", NODES).await;
    init_registry(&nodes, &voters).await;

    // Every node claims every name at once, each for its own owner.
    let names: Vec<String> = (0..NAMES).map(|i| format!("name-{i}")).collect();
    let clock = Clock::new();
    let clients: Vec<Client> = nodes.iter().map(|n| n.client().clone()).collect();
    let tasks: Vec<_> = (0..NODES)
        .map(|i| {
            let (clients, names) = (clients.clone(), names.clone());
            tokio::spawn(async move {
                let owner = format!("owner-{i}");
                // Each node in its own order.
                let order = names.iter().cycle().skip(i * 3).take(names.len());
                let claims =
                    order.map(|name| operate(&clock, i as u64, &clients, i, name, Some(&owner)));
                futures::future::join_all(claims).await
            })
        })
        .collect();
    let mut history: Vec<Done> = Vec::new();
    for task in tasks {
        history.extend(task.await.expect("a claiming task"));
    }
    println!(
        "{} concurrent claims ({NODES} nodes x {NAMES} names) answered in {} ms ({})",
        NODES * NAMES,
        clock.now() / 1000,
        tally(&history)
    );
    let mut replies: BTreeMap<String, Vec<(usize, Reply)>> = BTreeMap::new();
    for done in &history {
        replies
            .entry(done.event.name.clone())
            .or_default()
            .push((done.node, done.reply.clone()));
    }

    let mut failures = Vec::new();
    let mut winners: BTreeMap<String, String> = BTreeMap::new();
    for name in &names {
        let answers = replies.get(name).cloned().unwrap_or_default();
        assert_eq!(answers.len(), NODES, "answers for {name}: {answers:?}");
        let granted: Vec<&(usize, Reply)> = answers
            .iter()
            .filter(|(_, r)| matches!(r, Reply::Claimed(_)))
            .collect();
        let [(winner_node, Reply::Claimed(winner))] = granted.as_slice() else {
            failures.push(format!(
                "{name}: {} claims granted (want exactly 1): {answers:?}",
                granted.len()
            ));
            continue;
        };
        if *winner != format!("owner-{winner_node}") {
            failures.push(format!(
                "{name}: node {winner_node}'s claim granted to {winner}"
            ));
        }
        for (i, reply) in &answers {
            match reply {
                Reply::Claimed(_) => {}
                Reply::Taken(holder) if holder == winner => {}
                other => failures.push(format!(
                    "{name}: node {i} got {other:?}, want 409 naming {winner}"
                )),
            }
        }
        winners.insert(name.clone(), winner.clone());
    }
    assert!(
        failures.is_empty(),
        "{} wrong answers:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let per_owner: BTreeMap<&String, usize> = winners.values().fold(BTreeMap::new(), |mut m, o| {
        *m.entry(o).or_default() += 1;
        m
    });
    println!("names won per owner: {per_owner:?}");

    // Every node reads the same owners.
    let name_set: BTreeSet<String> = names.iter().cloned().collect();
    let want: BTreeMap<String, Option<String>> = winners
        .iter()
        .map(|(n, o)| (n.clone(), Some(o.clone())))
        .collect();
    let read = read_everywhere(&nodes, &clock, &name_set, &mut history, "after the claims").await;
    assert_eq!(read, want, "owners read after the claims");

    // Honoured forever after: the leader crashes; the others still read the
    // same owners, and so does everyone once it is back.
    let leader = wait_leader(&nodes, &voters, "a leader before the crash").await;
    nodes[leader].kill();
    let killed_at = Instant::now();
    let new_leader = wait_leader(&nodes, &voters, "a new leader after the crash").await;
    println!(
        "leader {} killed; {} leads {} ms later",
        nodes[leader].name,
        nodes[new_leader].name,
        killed_at.elapsed().as_millis()
    );
    let read = read_everywhere(
        &nodes,
        &clock,
        &name_set,
        &mut history,
        "while a voter is down",
    )
    .await;
    assert_eq!(read, want, "owners read while a voter is down");
    nodes[leader].restart().await;
    wait_leader(&nodes, &voters, "a leader after the restart").await;
    let read = read_everywhere(&nodes, &clock, &name_set, &mut history, "after the restart").await;
    assert_eq!(read, want, "owners read after the restart");

    // Claims are still decided the same way: refused for anyone else,
    // granted again to the owner, at the restarted node too.
    let restarted = nodes[leader].client().clone();
    for (name, winner) in &winners {
        match claim(&restarted, name, "latecomer").await {
            Reply::Taken(holder) if holder == *winner => {}
            other => panic!("{name} claimed by a latecomer after the restart: {other:?}"),
        }
        match claim(&restarted, name, winner).await {
            Reply::Claimed(owner) if owner == *winner => {}
            other => panic!("{name} claimed again by its owner {winner}: {other:?}"),
        }
    }
    assert_linearizable(&history);
}

// ---- 2. linearizable through a leader crash ------------------------------

/// Concurrent clients in test 2.
const CLIENTS: usize = 8;
/// Operations of each client.
const OPS_PER_CLIENT: usize = 40;
/// Names contended for at any moment: a fresh set every epoch, so that
/// some are still free after the crash.
const NAMES_PER_EPOCH: u64 = 4;
const EPOCH: Duration = Duration::from_secs(1);

/// A client of test 2 (and of the minority and majority sides in test 3):
/// `ops` claims (owner `p{id}`) and reads of the current epoch's names,
/// starting at `nodes[home]`, moving to the next node of `nodes` when one
/// does not answer. Stops early once `until` (micros) has passed.
async fn client_loop(
    id: usize,
    clients: Vec<Client>,
    nodes: Vec<usize>,
    clock: Clock,
    ops: usize,
    until: Option<u64>,
    prefix: &'static str,
) -> Vec<Done> {
    let mut rng = StdRng::seed_from_u64(0x5eed + id as u64);
    let owner = format!("p{id}");
    let mut at = id % nodes.len();
    let mut history = Vec::new();
    for _ in 0..ops {
        if until.is_some_and(|until| clock.now() >= until) {
            break;
        }
        let epoch = clock.now() / EPOCH.as_micros() as u64;
        let name = format!("{prefix}{epoch}-{}", rng.random_range(0..NAMES_PER_EPOCH));
        let owner = rng.random_bool(0.65).then_some(owner.as_str());
        let done = operate(&clock, id as u64, &clients, nodes[at], &name, owner).await;
        if matches!(done.reply, Reply::NoAnswer(_)) {
            at = (at + 1) % nodes.len();
        }
        history.push(done);
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..250))).await;
    }
    history
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_and_reads_through_a_leader_kill_are_linearizable() {
    const NODES: usize = 4;
    /// When the leader is killed, after the workload starts.
    const KILL_AFTER: Duration = Duration::from_millis(1500);
    /// How long it stays down.
    const DOWN_FOR: Duration = Duration::from_secs(5);
    let voters = [0, 1, 2];
    let mut nodes = start_mesh("lin", NODES).await;
    init_registry(&nodes, &voters).await;

    let clock = Clock::new();
    let clients: Vec<Client> = nodes.iter().map(|n| n.client().clone()).collect();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|id| {
            tokio::spawn(client_loop(
                id,
                clients.clone(),
                (0..NODES).collect(),
                clock,
                OPS_PER_CLIENT,
                None,
                "e",
            ))
        })
        .collect();

    tokio::time::sleep(KILL_AFTER).await;
    let leader = wait_leader(&nodes, &voters, "a leader to kill").await;
    nodes[leader].kill();
    let killed_at = clock.now();
    println!(
        "killed the leader {} at {} ms",
        nodes[leader].name,
        killed_at / 1000
    );
    tokio::time::sleep(DOWN_FOR).await;
    // The same HTTP address, so that the clients find it again.
    nodes[leader].restart_same_http().await;
    let restarted_at = clock.now();
    println!(
        "restarted {} at {} ms",
        nodes[leader].name,
        restarted_at / 1000
    );

    let mut history = Vec::new();
    for task in tasks {
        history.extend(task.await.expect("a client task"));
    }
    let workload_ended = clock.now();
    println!(
        "workload: {} operations in {} ms ({})",
        history.len(),
        workload_ended / 1000,
        tally(&history)
    );

    // After the crash, the two other voters kept granting claims.
    let grants_after_kill: Vec<&Done> = history
        .iter()
        .filter(|d| d.granted() && d.event.invoked >= killed_at)
        .collect();
    let while_down = grants_after_kill
        .iter()
        .filter(|d| d.event.invoked < restarted_at)
        .count();
    let first = grants_after_kill
        .iter()
        .filter_map(|d| d.event.returned)
        .min();
    let Some(first) = first else {
        panic!(
            "no claim invoked after the leader's crash was granted ({})",
            tally(&history)
        );
    };
    let to_first_grant = clock.at(first - killed_at);
    println!(
        "first 201 after the leader kill: {} ms after it; {} claims invoked after it granted, {while_down} of them while it was down",
        to_first_grant.as_millis(),
        grants_after_kill.len()
    );
    assert!(
        while_down > 0,
        "no claim was granted while the old leader was down"
    );
    assert!(
        to_first_grant < FIRST_GRANT_LIMIT,
        "the first claim granted after the crash took {to_first_grant:?}"
    );

    // Everyone reads the same owners once the old leader is back.
    wait_leader(&nodes, &voters, "a leader once the old one is back").await;
    let names: BTreeSet<String> = history.iter().map(|d| d.event.name.clone()).collect();
    read_everywhere(&nodes, &clock, &names, &mut history, "after the restart").await;

    let wrong = anomalies(&history);
    assert!(
        wrong.is_empty(),
        "answers outside the API:\n{}",
        wrong.join("\n")
    );
    let report = assert_linearizable(&history);
    println!(
        "linearizable: {} operations on {} names, {} unknown, {} states explored",
        report.operations, report.names, report.unknown, report.states_explored
    );
}

// ---- 3. a partition isolating the leader ---------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_that_isolates_the_leader_never_yields_a_wrong_answer() {
    /// Three voters and a non-voter that stays on the majority side.
    const NODES: usize = 4;
    /// Clients keep invoking operations this long after the split.
    const SPLIT_WINDOW: Duration = Duration::from_secs(12);
    const MAJORITY_CLIENTS: usize = 3;
    const MINORITY_CLIENTS: usize = 2;
    let mut lab = match Lab::create(NODES) {
        Ok(lab) => lab,
        Err(why) => {
            eprintln!("SKIPPED: cannot create network namespaces here: {why}");
            return;
        }
    };
    let voters = [0, 1, 2];
    let mut nodes: Vec<TestNode> = Vec::new();
    for i in 0..NODES {
        let joins: Vec<String> = nodes.iter().map(TestNode::tcp_addr).collect();
        let joins: Vec<&str> = joins.iter().map(String::as_str).collect();
        let name = format!("reg-split-{i}");
        let node =
            TestNode::start_in_namespace(&name, &lab.ns(i), lab.ip(i), &joins, STATIC_MESH).await;
        nodes.push(node);
    }
    wait_mesh(&nodes).await;
    let leader = init_registry(&nodes, &voters).await;

    let clock = Clock::new();
    let clients: Vec<Client> = nodes.iter().map(|n| n.client().clone()).collect();
    let mut history = Vec::new();
    // A claim before the split, through the non-voter.
    let before = operate(&clock, 999, &clients, 3, "before-split", Some("early")).await;
    assert_eq!(
        before.reply,
        Reply::Claimed("early".into()),
        "a claim before the split"
    );
    history.push(before);

    lab.split(&[leader]).expect("isolating the leader");
    let split_at = clock.now();
    let majority: Vec<usize> = (0..NODES).filter(|&i| i != leader).collect();
    println!(
        "isolated the leader {}; majority side: {:?}",
        nodes[leader].name,
        majority.iter().map(|&i| &nodes[i].name).collect::<Vec<_>>()
    );
    let until = split_at + SPLIT_WINDOW.as_micros() as u64;
    // Both sides contend for the same names (epoch names, "s<epoch>-<k>").
    let mut tasks = Vec::new();
    for id in 0..MAJORITY_CLIENTS {
        tasks.push(tokio::spawn(client_loop(
            id,
            clients.clone(),
            majority.clone(),
            clock,
            1000,
            Some(until),
            "s",
        )));
    }
    for id in MAJORITY_CLIENTS..MAJORITY_CLIENTS + MINORITY_CLIENTS {
        tasks.push(tokio::spawn(client_loop(
            id,
            clients.clone(),
            vec![leader],
            clock,
            1000,
            Some(until),
            "s",
        )));
    }
    let mut during = Vec::new();
    for task in tasks {
        during.extend(task.await.expect("a client task"));
    }
    // Every answer of the split came while split.
    let healed_at = clock.now();
    lab.heal().expect("healing the lab");
    println!(
        "healed {} ms after the split; during it: {}",
        (healed_at - split_at) / 1000,
        tally(&during)
    );

    let (minority_ops, majority_ops): (Vec<&Done>, Vec<&Done>) =
        during.iter().partition(|d| d.node == leader);
    println!("minority side (the old leader): {}", {
        let ops: Vec<Done> = minority_ops.iter().map(|&d| d.clone()).collect();
        tally(&ops)
    });
    let minority_claims: Vec<&&Done> = minority_ops.iter().filter(|d| d.is_claim()).collect();
    assert!(
        !minority_claims.is_empty(),
        "no claim was made on the minority side"
    );
    let wrong_minority: Vec<String> = minority_claims
        .iter()
        .filter(|d| !matches!(d.reply, Reply::Unavailable | Reply::Unknown))
        .map(|d| format!("{:?} -> {:?}", d.event, d.reply))
        .collect();
    assert!(
        wrong_minority.is_empty(),
        "claims at the isolated old leader answered other than 503/504:\n{}",
        wrong_minority.join("\n")
    );
    let first_majority_grant = majority_ops
        .iter()
        .filter(|d| d.granted())
        .filter_map(|d| d.event.returned)
        .min();
    let Some(first) = first_majority_grant else {
        panic!(
            "the majority side granted no claim during the split ({})",
            tally(&during)
        );
    };
    let to_first_grant = clock.at(first - split_at);
    println!(
        "first 201 on the majority side: {} ms after the split",
        to_first_grant.as_millis()
    );
    assert!(
        to_first_grant < FIRST_GRANT_LIMIT,
        "the majority side took {to_first_grant:?} to grant a claim"
    );
    history.extend(during);

    // After the heal: one leader, every voter applied as far, and every
    // node reads the same owners.
    let leader_after = wait_leader(&nodes, &voters, "one leader after the heal").await;
    let healed = Instant::now();
    let mut indexes = Vec::new();
    wait_until(
        CONVERGE,
        "the voters apply as far as each other",
        async || {
            indexes.clear();
            for &v in &voters {
                indexes.push(applied_index(&nodes[v]).await);
            }
            indexes.iter().all(|i| i.is_some() && *i == indexes[0])
        },
    )
    .await;
    println!(
        "after the heal: {} leads, voters applied {:?} ({} ms)",
        nodes[leader_after].name,
        indexes,
        healed.elapsed().as_millis()
    );
    let names: BTreeSet<String> = history.iter().map(|d| d.event.name.clone()).collect();
    read_everywhere(&nodes, &clock, &names, &mut history, "after the heal").await;

    let wrong = anomalies(&history);
    assert!(
        wrong.is_empty(),
        "answers outside the API:\n{}",
        wrong.join("\n")
    );
    let report = assert_linearizable(&history);
    println!(
        "linearizable: {} operations on {} names, {} unknown, {} states explored",
        report.operations, report.names, report.unknown, report.states_explored
    );
}

// ---- 4. nothing committed is lost ---------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_killed_during_claims_loses_nothing_committed() {
    const CLAIMS: usize = 200;
    /// The victim is killed once this many claims were answered.
    const KILL_AT: usize = 70;
    const DOWN_FOR: Duration = Duration::from_secs(4);
    let voters = [0, 1, 2];
    let mut nodes = start_mesh("lose-nothing", 3).await;
    let leader = init_registry(&nodes, &voters).await;
    // The client talks to a follower; the leader is the one killed.
    let via = voters
        .iter()
        .copied()
        .find(|&v| v != leader)
        .expect("a follower");
    let victim = leader;
    println!(
        "claims through {}; the leader {} will be killed",
        nodes[via].name, nodes[victim].name
    );

    let progress = Arc::new(AtomicUsize::new(0));
    let client = nodes[via].client().clone();
    let writer = {
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut replies = Vec::with_capacity(CLAIMS);
            for i in 0..CLAIMS {
                let (name, owner) = (format!("n{i}"), format!("o{i}"));
                let started = Instant::now();
                let reply = claim(&client, &name, &owner).await;
                replies.push((name, owner, reply, started.elapsed()));
                progress.store(i + 1, Ordering::SeqCst);
            }
            replies
        })
    };
    wait_until(
        Duration::from_secs(120),
        &format!("{KILL_AT} claims answered"),
        async || progress.load(Ordering::SeqCst) >= KILL_AT,
    )
    .await;
    nodes[victim].kill();
    let killed_at = Instant::now();
    let answered_at_kill = progress.load(Ordering::SeqCst);
    tokio::time::sleep(DOWN_FOR).await;
    nodes[victim].restart().await;
    println!(
        "killed {} after {answered_at_kill} claims; restarted it {} ms later",
        nodes[victim].name,
        killed_at.elapsed().as_millis()
    );
    let replies = writer.await.expect("the claiming task");

    let mut committed: BTreeMap<String, String> = BTreeMap::new();
    let mut unsettled = Vec::new();
    let mut wrong = Vec::new();
    let slowest = replies
        .iter()
        .max_by_key(|r| r.3)
        .map(|r| (r.0.clone(), r.3))
        .expect("claims were made");
    println!(
        "slowest claim: {} took {} ms (the one that waited for the new leader)",
        slowest.0,
        slowest.1.as_millis()
    );
    for (name, owner, reply, _) in &replies {
        match reply {
            Reply::Claimed(granted) if granted == owner => {
                committed.insert(name.clone(), owner.clone());
            }
            Reply::Unavailable | Reply::Unknown | Reply::NoAnswer(_) => {
                unsettled.push(format!("{name}: {reply:?}"));
            }
            // A fresh name claimed once: nothing else may hold it.
            other => wrong.push(format!("{name} for {owner}: {other:?}")),
        }
    }
    println!(
        "{} claims: {} granted, {} unsettled (503/504/no answer){}",
        replies.len(),
        committed.len(),
        unsettled.len(),
        if unsettled.is_empty() {
            String::new()
        } else {
            format!(": {}", unsettled.join("; "))
        }
    );
    assert!(
        wrong.is_empty(),
        "fresh names answered other than 201/503/504:\n{}",
        wrong.join("\n")
    );
    assert!(
        committed.len() > KILL_AT,
        "only {} of {CLAIMS} claims were granted: the two other voters did not carry on",
        committed.len()
    );

    // The restarted voter catches up with the leader.
    let leader = wait_leader(&nodes, &voters, "a leader after the restart").await;
    let target = applied_index(&nodes[leader])
        .await
        .expect("the leader's applied index");
    let mut caught_up = None;
    wait_until(
        CONVERGE,
        &format!(
            "the restarted {} applies up to the leader's index {target}",
            nodes[victim].name
        ),
        async || {
            caught_up = applied_index(&nodes[victim]).await;
            caught_up.is_some_and(|i| i >= target)
        },
    )
    .await;
    println!(
        "{} leads at applied index {target}; the restarted {} applied {caught_up:?}",
        nodes[leader].name, nodes[victim].name
    );

    // Every granted claim is read back, with its owner, from every node.
    let clock = Clock::new();
    let names: BTreeSet<String> = committed.keys().cloned().collect();
    let mut history = Vec::new();
    let read = read_everywhere(&nodes, &clock, &names, &mut history, "after the restart").await;
    let lost: Vec<String> = committed
        .iter()
        .filter(|(name, owner)| read.get(*name) != Some(&Some((*owner).clone())))
        .map(|(name, owner)| format!("{name}: granted to {owner}, read {:?}", read.get(name)))
        .collect();
    assert!(
        lost.is_empty(),
        "{} granted claims lost:\n{}",
        lost.len(),
        lost.join("\n")
    );
    if std::env::var_os("HEARSAY_REGISTRY_LOGS").is_some() {
        for node in &nodes {
            println!("{}", node.log_tail());
        }
    }
    let status = registry_status(&nodes[victim])
        .await
        .expect("the restarted node's status");
    assert!(
        status["names"].as_u64().unwrap_or(0) >= committed.len() as u64,
        "the restarted node holds fewer names than were granted: {status}"
    );
}
