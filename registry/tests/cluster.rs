//! Registries of one process talking through an in-memory transport that can
//! cut nodes off: elections, forwarding, the answers under failures. (The
//! same service between real node processes over libp2p is tested in the
//! workspace's `tests/registry.rs`.)

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use hearsay_registry::linearizability::{self, Event, Op, Outcome};
use hearsay_registry::{ClaimAnswer, ReadAnswer, Registry, RegistryConfig, Transport};

#[derive(Debug, Default, Clone)]
struct Net {
    nodes: Arc<Mutex<HashMap<String, Registry>>>,
    /// Nodes cut off from every other node.
    cut: Arc<Mutex<HashSet<String>>>,
}

#[derive(Debug)]
struct Port {
    net: Net,
    me: String,
}

impl Transport for Port {
    fn call(
        &self,
        peer: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        let (net, me, peer) = (self.net.clone(), self.me.clone(), peer.to_string());
        Box::pin(async move {
            let cut = {
                let cut = net.cut.lock().unwrap();
                cut.contains(&me) || cut.contains(&peer)
            };
            if cut {
                tokio::time::sleep(timeout.min(Duration::from_millis(200))).await;
                return Err("unreachable".into());
            }
            let node = net.nodes.lock().unwrap().get(&peer).cloned();
            let node = node.ok_or_else(|| format!("{peer} is down"))?;
            tokio::time::timeout(timeout, node.handle(&me, &body))
                .await
                .map_err(|_| "timed out".to_string())
        })
    }

    fn peers(&self) -> Vec<String> {
        let nodes = self.net.nodes.lock().unwrap();
        nodes.keys().filter(|p| **p != self.me).cloned().collect()
    }
}

fn config() -> RegistryConfig {
    RegistryConfig {
        heartbeat_interval: Duration::from_millis(50),
        election_timeout_min: Duration::from_millis(300),
        election_timeout_max: Duration::from_millis(600),
        client_timeout: Duration::from_secs(4),
        attempt_timeout: Duration::from_secs(1),
        ..RegistryConfig::default()
    }
}

struct Cluster {
    net: Net,
    dirs: Vec<tempfile::TempDir>,
    names: Vec<String>,
}

impl Cluster {
    /// `voters` voters and `others` nodes outside the group.
    async fn start(voters: usize, others: usize) -> Cluster {
        let net = Net::default();
        let names: Vec<String> = (0..voters + others).map(|i| format!("node-{i}")).collect();
        let voter_names: Vec<String> = names[..voters].to_vec();
        let mut dirs = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let registry = open(
                &net,
                dir.path(),
                name,
                if i < voters {
                    voter_names.clone()
                } else {
                    Vec::new()
                },
            )
            .await;
            net.nodes.lock().unwrap().insert(name.clone(), registry);
            dirs.push(dir);
        }
        Cluster { net, dirs, names }
    }

    fn node(&self, i: usize) -> Registry {
        self.net.nodes.lock().unwrap()[&self.names[i]].clone()
    }

    async fn leader(&self, among: &[usize]) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for &i in among {
                let status = self.node(i).status();
                if status.state == "Leader" {
                    return i;
                }
            }
            assert!(Instant::now() < deadline, "no leader elected");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn open(net: &Net, dir: &std::path::Path, name: &str, voters: Vec<String>) -> Registry {
    let port = Arc::new(Port {
        net: net.clone(),
        me: name.to_string(),
    });
    Registry::open(dir, name.to_string(), voters, port, config())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_name_goes_to_one_owner_whichever_node_is_asked() {
    let cluster = Cluster::start(3, 2).await;
    cluster.leader(&[0, 1, 2]).await;
    // Every node, voters and the two outside the group, claims the same
    // names for owners of its own, all at once.
    let mut tasks = Vec::new();
    for i in 0..5 {
        let node = cluster.node(i);
        tasks.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for n in 0..10 {
                answers.push((
                    n,
                    node.claim(&format!("name-{n}"), &format!("owner-{i}"))
                        .await,
                ));
            }
            answers
        }));
    }
    let mut winners: HashMap<usize, String> = HashMap::new();
    for (i, task) in tasks.into_iter().enumerate() {
        for (n, answer) in task.await.unwrap() {
            match answer {
                ClaimAnswer::Claimed { owner } => {
                    assert_eq!(owner, format!("owner-{i}"));
                    assert!(winners.insert(n, owner).is_none(), "name-{n} granted twice");
                }
                ClaimAnswer::Taken { owner } => assert_ne!(owner, format!("owner-{i}")),
                other => panic!("a healthy group answers: {other:?}"),
            }
        }
    }
    assert_eq!(winners.len(), 10, "every name has an owner");
    // Every node reads the same owners, linearizably.
    for i in 0..5 {
        for (n, owner) in &winners {
            match cluster.node(i).read(&format!("name-{n}")).await {
                ReadAnswer::Owner { owner: Some(o), .. } => assert_eq!(&o, owner),
                other => panic!("node {i} reads name-{n}: {other:?}"),
            }
        }
    }
    // The node outside the group learned the voters from a peer.
    assert_eq!(cluster.node(4).voters().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_isolated_leader_never_grants_and_the_majority_carries_on() {
    let cluster = Cluster::start(3, 0).await;
    let leader = cluster.leader(&[0, 1, 2]).await;
    assert!(matches!(
        cluster.node(leader).claim("before", "k0").await,
        ClaimAnswer::Claimed { .. }
    ));
    cluster
        .net
        .cut
        .lock()
        .unwrap()
        .insert(cluster.names[leader].clone());
    // The old leader cannot commit: unknown or unavailable, never an answer.
    let answer = cluster.node(leader).claim("during", "k-minority").await;
    assert!(
        matches!(
            answer,
            ClaimAnswer::Unknown { .. } | ClaimAnswer::Unavailable { .. }
        ),
        "a leader without a quorum answered {answer:?}"
    );
    assert!(matches!(
        cluster.node(leader).read("before").await,
        ReadAnswer::Unavailable { .. }
    ));
    // The majority elects a new leader and grants the name to someone else.
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let started = Instant::now();
    let answer = cluster.node(others[0]).claim("during", "k-majority").await;
    assert_eq!(
        answer,
        ClaimAnswer::Claimed {
            owner: "k-majority".into()
        },
        "the majority side accepts claims (after {:?})",
        started.elapsed()
    );
    // Healed: the old leader follows, and its unknown claim, had it landed,
    // could only have landed as taken.
    cluster.net.cut.lock().unwrap().clear();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let ReadAnswer::Owner { owner, .. } = cluster.node(leader).read("during").await {
            assert_eq!(owner.as_deref(), Some("k-majority"));
            break;
        }
        assert!(Instant::now() < deadline, "the old leader never caught up");
    }
    assert_eq!(
        cluster.node(leader).claim("during", "k-minority").await,
        ClaimAnswer::Taken {
            owner: "k-majority".into()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_voter_keeps_what_was_committed() {
    let cluster = Cluster::start(3, 0).await;
    let leader = cluster.leader(&[0, 1, 2]).await;
    for n in 0..50 {
        let answer = cluster.node(leader).claim(&format!("n{n}"), "k").await;
        assert!(matches!(answer, ClaimAnswer::Claimed { .. }), "{answer:?}");
    }
    // Stop every node and start them again from their directories.
    let voters: Vec<String> = cluster.names.clone();
    for i in 0..3 {
        let node = cluster.node(i);
        node.shutdown().await;
    }
    cluster.net.nodes.lock().unwrap().clear();
    for (i, name) in cluster.names.iter().enumerate() {
        let registry = open(&cluster.net, cluster.dirs[i].path(), name, voters.clone()).await;
        cluster
            .net
            .nodes
            .lock()
            .unwrap()
            .insert(name.clone(), registry);
    }
    cluster.leader(&[0, 1, 2]).await;
    for n in 0..50 {
        match cluster.node(n % 3).read(&format!("n{n}")).await {
            ReadAnswer::Owner { owner, .. } => assert_eq!(owner.as_deref(), Some("k")),
            other => panic!("n{n}: {other:?}"),
        }
    }
    assert_eq!(
        cluster.node(1).claim("n7", "other").await,
        ClaimAnswer::Taken { owner: "k".into() }
    );
}

/// Clients on every node claim and read a few names while the leader is cut
/// off and later let back; the recorded history must be linearizable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_and_reads_through_a_leader_partition_are_linearizable() {
    let cluster = Arc::new(Cluster::start(3, 1).await);
    cluster.leader(&[0, 1, 2]).await;
    let epoch = Instant::now();
    let history = Arc::new(Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for process in 0..8u64 {
        let (cluster, history) = (cluster.clone(), history.clone());
        clients.push(tokio::spawn(async move {
            let node = cluster.node(process as usize % 4);
            for step in 0..12u64 {
                let name = format!("n{}", (process + step) % 4);
                let invoked = epoch.elapsed().as_micros() as u64;
                let (op, outcome) = if (process + step) % 3 == 0 {
                    let outcome = match node.read(&name).await {
                        ReadAnswer::Owner { owner, .. } => Outcome::Read(owner),
                        ReadAnswer::Unavailable { .. } => Outcome::Unknown,
                    };
                    (Op::Read, outcome)
                } else {
                    let owner = format!("p{process}");
                    let outcome = match node.claim(&name, &owner).await {
                        ClaimAnswer::Claimed { .. } => Outcome::Granted,
                        ClaimAnswer::Taken { owner } => Outcome::Taken { owner },
                        _ => Outcome::Unknown,
                    };
                    (Op::Claim { owner }, outcome)
                };
                let returned = epoch.elapsed().as_micros() as u64;
                history.lock().unwrap().push(Event {
                    process,
                    name,
                    op,
                    invoked,
                    returned: Some(returned),
                    outcome,
                });
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let leader = cluster.leader(&[0, 1, 2]).await;
    cluster
        .net
        .cut
        .lock()
        .unwrap()
        .insert(cluster.names[leader].clone());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    cluster.net.cut.lock().unwrap().clear();
    for client in clients {
        client.await.unwrap();
    }
    let history = history.lock().unwrap().clone();
    let report = linearizability::check(&history).expect("linearizable");
    assert_eq!(report.operations, history.len());
    assert!(
        history
            .iter()
            .any(|e| matches!(e.outcome, Outcome::Granted)),
        "some claims were granted"
    );
}

/// A voter that missed more than the log kept behind a snapshot is sent the
/// snapshot, and holds every name afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_voter_far_behind_is_sent_a_snapshot() {
    let net = Net::default();
    let names: Vec<String> = (0..3).map(|i| format!("node-{i}")).collect();
    let small = RegistryConfig {
        snapshot_every: 40,
        logs_kept: 10,
        ..config()
    };
    let mut dirs = Vec::new();
    for name in &names {
        let dir = tempfile::tempdir().unwrap();
        let port = Arc::new(Port {
            net: net.clone(),
            me: name.clone(),
        });
        let registry = Registry::open(dir.path(), name.clone(), names.clone(), port, small.clone())
            .await
            .unwrap();
        net.nodes.lock().unwrap().insert(name.clone(), registry);
        dirs.push(dir);
    }
    let cluster = Cluster {
        net,
        dirs,
        names: names.clone(),
    };
    let leader = cluster.leader(&[0, 1, 2]).await;
    let behind = (leader + 1) % 3;
    cluster
        .net
        .cut
        .lock()
        .unwrap()
        .insert(names[behind].clone());
    for n in 0..150 {
        let answer = cluster.node(leader).claim(&format!("s{n}"), "k").await;
        assert!(matches!(answer, ClaimAnswer::Claimed { .. }), "{answer:?}");
    }
    let status = cluster.node(leader).status();
    let snapshot = status.snapshot_index.expect("the leader took a snapshot");
    assert!(snapshot >= 40, "{status:?}");
    cluster.net.cut.lock().unwrap().clear();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (lagging, ahead) = (cluster.node(behind).status(), cluster.node(leader).status());
        if lagging.applied_index == ahead.applied_index && lagging.names == 150 {
            assert!(
                lagging.snapshot_index.is_some(),
                "the voter caught up through a snapshot: {lagging:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "never caught up: {lagging:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Once set up, the group's voters cannot be replaced by another init, from
/// the API or from a peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_set_up_group_refuses_other_voters() {
    let cluster = Cluster::start(3, 1).await;
    cluster.leader(&[0, 1, 2]).await;
    let others = vec![
        "node-1".to_string(),
        "node-2".to_string(),
        "node-3".to_string(),
    ];
    assert!(cluster.node(0).init(others.clone()).await.is_err());
    // A node outside the group that already knows the voters refuses too.
    assert_eq!(cluster.node(3).discover_voters().await.len(), 3);
    assert!(cluster.node(3).init(others).await.is_err());
    // The same voters again are fine.
    let same: Vec<String> = (0..3).map(|i| format!("node-{i}")).collect();
    assert!(cluster.node(1).init(same).await.is_ok());
    assert!(matches!(
        cluster.node(3).claim("still", "k").await,
        ClaimAnswer::Claimed { .. }
    ));
}

/// Raft messages from outside the group, or from a voter speaking as
/// another, are refused and counted; the group's term does not move.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn raft_messages_from_outside_the_group_are_refused() {
    use openraft::Vote;
    use openraft::raft::VoteRequest;
    let cluster = Cluster::start(3, 1).await;
    let leader = cluster.leader(&[0, 1, 2]).await;
    let follower = cluster.node((leader + 1) % 3);
    let term = follower.status().term;
    let vote_as = |peer: &str| {
        let request =
            VoteRequest::<u64>::new(Vote::new(term + 100, hearsay_registry::raft_id(peer)), None);
        serde_json::to_vec(&serde_json::json!({ "Vote": request })).unwrap()
    };
    // node-3 is outside the group; mallory is unknown; node-3 claims to be node-0.
    for (peer, body) in [
        ("node-3", vote_as("node-3")),
        ("mallory", vote_as("mallory")),
        ("node-3", vote_as("node-0")),
    ] {
        let answer: serde_json::Value =
            serde_json::from_slice(&follower.handle(peer, &body).await).unwrap();
        assert!(answer.get("Error").is_some(), "{peer}: {answer}");
    }
    assert_eq!(follower.status().counters.bad_messages, 3);
    assert_eq!(
        follower.status().term,
        term,
        "no forged election moved the term"
    );
    assert!(matches!(
        cluster.node(3).claim("after", "k").await,
        ClaimAnswer::Claimed { .. }
    ));
}
