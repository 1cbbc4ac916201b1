//! Fuzzing the registry's peer-facing decoder, [`Registry::handle`]: every
//! message a peer of the mesh can send (serde_json of the service's `Rpc`).
//!
//! Property-based (proptest, no nightly): arbitrary bytes, arbitrary JSON
//! values, and mutations (byte flips, truncations, splices, field
//! replacements) of valid encodings of every request kind are fed to one
//! single-voter registry that holds a name claimed before the barrage. The
//! node never panics, always answers JSON, counts what it could not decode,
//! refuses oversized names and owners, and afterwards still holds the name
//! with its owner and grants and reads new claims.
//!
//! Cases per test default to 64; run longer with HEARSAY_FUZZ_CASES=100000
//! (e.g. `HEARSAY_FUZZ_CASES=100000 cargo test -p hearsay-registry --test fuzz`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use hearsay_registry::{
    ClaimAnswer, MAX_NAME_BYTES, MAX_OWNER_BYTES, ReadAnswer, Registry, RegistryConfig, Transport,
    raft_id,
};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Value, json};

/// The node under test.
const ME: &str = "node-under-test";
/// The peer every fuzzed message claims to come from (not a voter).
const INTRUDER: &str = "intruder";
/// A name claimed before the barrage, and its owner (a string no template
/// holds, so no mutation releases it by chance).
const PRECIOUS: &str = "precious";
const PRECIOUS_OWNER: &str = "k-precious-3f9a1c";
/// Longest a single message may take to be answered (a write waits at most
/// the attempt timeout).
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

fn cases() -> u32 {
    std::env::var("HEARSAY_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        // Nothing written next to the sources: a failure prints its minimal
        // input instead.
        failure_persistence: None,
        ..Config::default()
    })
}

/// A transport to nowhere: the node is alone.
#[derive(Debug)]
struct Alone;

impl Transport for Alone {
    fn call(
        &self,
        peer: &str,
        _body: Vec<u8>,
        _timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        let why = format!("{peer} is unreachable");
        Box::pin(async move { Err(why) })
    }

    fn peers(&self) -> Vec<String> {
        Vec::new()
    }
}

struct Fixture {
    rt: tokio::runtime::Runtime,
    registry: Registry,
    _dir: tempfile::TempDir,
    fresh: AtomicU64,
}

impl Fixture {
    /// A single-voter registry that leads and holds [`PRECIOUS`].
    fn start() -> Fixture {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = RegistryConfig {
            heartbeat_interval: Duration::from_millis(50),
            election_timeout_min: Duration::from_millis(150),
            election_timeout_max: Duration::from_millis(300),
            client_timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(1),
            ..RegistryConfig::default()
        };
        let registry = rt.block_on(async {
            let registry = Registry::open(
                dir.path(),
                ME.into(),
                vec![ME.into()],
                Arc::new(Alone),
                config,
            )
            .await
            .unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            while registry.status().state != "Leader" {
                assert!(Instant::now() < deadline, "no leader elected");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(
                registry.claim(PRECIOUS, PRECIOUS_OWNER).await,
                ClaimAnswer::Claimed {
                    owner: PRECIOUS_OWNER.into()
                }
            );
            registry
        });
        Fixture {
            rt,
            registry,
            _dir: dir,
            fresh: AtomicU64::new(0),
        }
    }

    fn bad_messages(&self) -> u64 {
        self.registry.status().counters.bad_messages
    }

    /// Feeds one message; checks the answer is JSON and returns it.
    fn feed(&self, body: &[u8]) -> Result<Value, TestCaseError> {
        let answer = self.rt.block_on(async {
            tokio::time::timeout(ANSWER_WITHIN, self.registry.handle(INTRUDER, body)).await
        });
        let answer =
            answer.map_err(|_| TestCaseError::fail(format!("no answer in {ANSWER_WITHIN:?}")))?;
        serde_json::from_slice::<Value>(&answer).map_err(|e| {
            TestCaseError::fail(format!(
                "answer is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&answer)
            ))
        })
    }

    /// Feeds one message; if it was refused as undecodable, the bad-message
    /// counter must have grown.
    fn feed_counted(&self, body: &[u8]) -> Result<Value, TestCaseError> {
        let before = self.bad_messages();
        let answer = self.feed(body)?;
        if is_bad_message(&answer) {
            let after = self.bad_messages();
            prop_assert!(
                after > before,
                "undecodable message not counted ({before} -> {after}): {answer}"
            );
        }
        Ok(answer)
    }

    /// The node still holds [`PRECIOUS`] with its owner, and grants and
    /// reads a new name.
    fn still_sound(&self) -> Result<(), TestCaseError> {
        let n = self.fresh.fetch_add(1, Ordering::Relaxed);
        let fresh = format!("fresh-{n}");
        let (taken, read, claimed, read_fresh) = self.rt.block_on(async {
            let r = &self.registry;
            (
                r.claim(PRECIOUS, "someone-else").await,
                r.read(PRECIOUS).await,
                r.claim(&fresh, "k-fresh").await,
                r.read(&fresh).await,
            )
        });
        prop_assert_eq!(
            taken,
            ClaimAnswer::Taken {
                owner: PRECIOUS_OWNER.into()
            }
        );
        prop_assert!(
            matches!(&read, ReadAnswer::Owner { owner: Some(o), .. } if o == PRECIOUS_OWNER),
            "{} reads {:?}",
            PRECIOUS,
            read
        );
        prop_assert_eq!(
            claimed,
            ClaimAnswer::Claimed {
                owner: "k-fresh".into()
            }
        );
        prop_assert!(
            matches!(&read_fresh, ReadAnswer::Owner { owner: Some(o), .. } if o == "k-fresh"),
            "{} reads {:?}",
            fresh,
            read_fresh
        );
        Ok(())
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.rt.block_on(self.registry.shutdown());
    }
}

/// `{"Error": "bad message: ..."}`: the node could not decode the message.
fn is_bad_message(answer: &Value) -> bool {
    answer
        .get("Error")
        .and_then(Value::as_str)
        .is_some_and(|e| e.starts_with("bad message"))
}

fn run<S: Strategy>(strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let started = Instant::now();
    let mut runner = runner();
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}");
    }
    eprintln!("{} cases in {:?}", cases(), started.elapsed());
}

// ---- valid encodings ----------------------------------------------------------

fn vote(term: u64, node: u64, committed: bool) -> Value {
    json!({"leader_id": {"term": term, "node_id": node}, "committed": committed})
}

fn log_id(term: u64, node: u64, index: u64) -> Value {
    json!({"leader_id": {"term": term, "node_id": node}, "index": index})
}

/// Valid encodings of every request kind (openraft 0.9.25's serde shapes
/// for the Raft messages), from [`INTRUDER`]'s point of view.
fn templates() -> Vec<Value> {
    let x = raft_id(INTRUDER);
    let me = raft_id(ME);
    vec![
        json!({"Write": {"Claim": {"name": "n", "owner": "o"}}}),
        json!({"Write": {"Release": {"name": PRECIOUS, "owner": "o"}}}),
        json!({"Read": {"name": "n"}}),
        json!({"Init": {"voters": ["a"]}}),
        json!({"Init": {"voters": [ME, "b", "c"]}}),
        json!("Voters"),
        json!({"Vote": {"vote": vote(1, x, false), "last_log_id": log_id(1, me, 1)}}),
        json!({"Vote": {"vote": vote(0, x, false), "last_log_id": null}}),
        json!({"AppendEntries": {
            "vote": vote(0, x, true),
            "prev_log_id": null,
            "entries": [],
            "leader_commit": null,
        }}),
        json!({"AppendEntries": {
            "vote": vote(1, x, true),
            "prev_log_id": log_id(1, me, 2),
            "entries": [
                {"log_id": log_id(1, x, 3), "payload": "Blank"},
                {"log_id": log_id(1, x, 4),
                 "payload": {"Normal": {"Claim": {"name": "n", "owner": "o"}}}},
            ],
            "leader_commit": log_id(1, x, 4),
        }}),
        json!({"InstallSnapshot": {
            "vote": vote(0, x, true),
            "meta": {
                "last_log_id": log_id(0, x, 1),
                "last_membership": {
                    "log_id": log_id(0, x, 0),
                    "membership": {"configs": [[x]], "nodes": {x.to_string(): {"peer": INTRUDER}}},
                },
                "snapshot_id": "s-1",
            },
            "offset": 0,
            "data": [123, 125],
            "done": true,
        }}),
    ]
}

// ---- strategies -------------------------------------------------------------------

const KEYS: &[&str] = &[
    "AppendEntries",
    "Vote",
    "InstallSnapshot",
    "Write",
    "Read",
    "Init",
    "Voters",
    "Claim",
    "Release",
    "name",
    "owner",
    "voters",
    "vote",
    "leader_id",
    "term",
    "node_id",
    "committed",
    "prev_log_id",
    "entries",
    "leader_commit",
    "log_id",
    "index",
    "payload",
    "Normal",
    "Blank",
    "Membership",
    "meta",
    "offset",
    "data",
    "done",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(KEYS).prop_map(str::to_owned),
        1 => ".{0,8}",
    ]
}

/// Any JSON value: scalars at the edges, long strings, deep nesting, and
/// objects keyed by the protocol's own field and variant names.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop_oneof![
            Just(0u64),
            Just(1),
            Just(u64::MAX),
            Just(i64::MAX as u64 + 1)
        ]
        .prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,24}".prop_map(Value::from),
        proptest::sample::select(KEYS).prop_map(Value::from),
        (1usize..=4096).prop_map(|n| Value::from("x".repeat(n))),
    ];
    leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(key(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Replace the value at a path with another.
    Replace(Vec<Index>, Value),
    /// Remove the field or element at a path.
    Remove(Vec<Index>),
    /// Add a field to the object at a path.
    Insert(Vec<Index>, String, Value),
    /// On the encoded bytes.
    Flip(Index, u8),
    Truncate(Index),
    Splice(Index, Vec<u8>),
    Duplicate(Index, Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let path = proptest::collection::vec(any::<Index>(), 0..6);
    prop_oneof![
        4 => (path.clone(), any_json()).prop_map(|(p, v)| Mutation::Replace(p, v)),
        1 => path.clone().prop_map(Mutation::Remove),
        1 => (path, key(), any_json()).prop_map(|(p, k, v)| Mutation::Insert(p, k, v)),
        2 => (any::<Index>(), 1u8..=255).prop_map(|(i, x)| Mutation::Flip(i, x)),
        2 => any::<Index>().prop_map(Mutation::Truncate),
        1 => (any::<Index>(), proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, b)| Mutation::Splice(i, b)),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::Duplicate(a, b)),
    ]
}

/// The value at a path (each step picks among a container's children;
/// stops at a scalar).
fn walk<'a>(mut v: &'a mut Value, path: &[Index]) -> &'a mut Value {
    for step in path {
        let len = match v {
            Value::Array(a) => a.len(),
            Value::Object(o) => o.len(),
            _ => 0,
        };
        if len == 0 {
            break;
        }
        let i = step.index(len);
        v = match v {
            Value::Array(a) => &mut a[i],
            Value::Object(o) => o.values_mut().nth(i).expect("in range"),
            _ => unreachable!(),
        };
    }
    v
}

fn apply(template: &Value, m: &Mutation) -> Vec<u8> {
    let mut v = template.clone();
    match m {
        Mutation::Replace(path, new) => *walk(&mut v, path) = new.clone(),
        Mutation::Remove(path) => {
            let (last, parent) = match path.split_last() {
                Some((last, rest)) => (last, walk(&mut v, rest)),
                None => return Vec::new(),
            };
            match parent {
                Value::Array(a) if !a.is_empty() => {
                    a.remove(last.index(a.len()));
                }
                Value::Object(o) if !o.is_empty() => {
                    let k = o
                        .keys()
                        .nth(last.index(o.len()))
                        .cloned()
                        .expect("in range");
                    o.remove(&k);
                }
                _ => {}
            }
        }
        Mutation::Insert(path, key, new) => match walk(&mut v, path) {
            Value::Object(o) => {
                o.insert(key.clone(), new.clone());
            }
            Value::Array(a) => a.push(new.clone()),
            other => *other = new.clone(),
        },
        _ => {}
    }
    let mut bytes = serde_json::to_vec(&v).unwrap();
    match m {
        Mutation::Flip(i, x) if !bytes.is_empty() => {
            let i = i.index(bytes.len());
            bytes[i] ^= x;
        }
        Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len().max(1))),
        Mutation::Splice(i, junk) => {
            let at = i.index(bytes.len() + 1);
            bytes.splice(at..at, junk.iter().copied());
        }
        Mutation::Duplicate(a, b) if !bytes.is_empty() => {
            let (a, b) = (a.index(bytes.len()), b.index(bytes.len()));
            let (from, to) = (a.min(b), a.max(b));
            let piece = bytes[from..=to].to_vec();
            bytes.splice(to..to, piece);
        }
        _ => {}
    }
    bytes
}

// ---- the harnesses ----------------------------------------------------------------

/// Every template decodes: a client request is served, and a Raft message
/// from [`INTRUDER`] (no voter) reaches the sender check, which comes after
/// decoding.
#[test]
fn the_templates_are_valid_encodings() {
    let f = Fixture::start();
    for t in templates() {
        let answer = f.feed(&serde_json::to_vec(&t).unwrap()).unwrap();
        assert!(!is_bad_message(&answer), "{t} was not decoded: {answer}");
        let raft = ["AppendEntries", "Vote", "InstallSnapshot"];
        if raft.iter().any(|k| t.get(k).is_some()) {
            assert_eq!(
                answer,
                json!({"Error": format!("{INTRUDER} is not a voter of this registry")})
            );
        }
    }
    f.still_sound().unwrap();
}

#[test]
fn arbitrary_bytes_are_refused_and_counted() {
    let f = Fixture::start();
    run(proptest::collection::vec(any::<u8>(), 0..600), |bytes| {
        let before = f.bad_messages();
        let answer = f.feed(&bytes)?;
        if serde_json::from_slice::<Value>(&bytes).is_err() {
            prop_assert!(is_bad_message(&answer), "not refused: {answer}");
            prop_assert_eq!(f.bad_messages(), before + 1);
        }
        Ok(())
    });
    f.still_sound().unwrap();
}

#[test]
fn arbitrary_json_is_answered_and_leaves_the_names_alone() {
    let f = Fixture::start();
    run(any_json(), |value| {
        f.feed_counted(&serde_json::to_vec(&value).unwrap())?;
        Ok(())
    });
    f.still_sound().unwrap();
}

#[test]
fn mutated_requests_are_answered_and_leave_the_names_alone() {
    let f = Fixture::start();
    let templates = templates();
    let n = templates.len();
    run((0..n, mutation()), |(t, m)| {
        let bytes = apply(&templates[t], &m);
        f.feed_counted(&bytes)?;
        f.still_sound()
    });
}

/// Valid writes and reads with names and owners around their bounds: only
/// those within them reach the log.
#[test]
fn oversized_names_and_owners_are_refused() {
    let f = Fixture::start();
    let name = prop_oneof![
        (1usize..=MAX_NAME_BYTES).prop_map(|n| "n".repeat(n)),
        (MAX_NAME_BYTES + 1..=MAX_NAME_BYTES * 40).prop_map(|n| "n".repeat(n)),
        (MAX_NAME_BYTES / 2..=MAX_NAME_BYTES).prop_map(|n| "é".repeat(n)),
        Just(String::new()),
        ".{1,12}",
    ];
    let owner = prop_oneof![
        (1usize..=MAX_OWNER_BYTES).prop_map(|n| "o".repeat(n)),
        (MAX_OWNER_BYTES + 1..=MAX_OWNER_BYTES * 40).prop_map(|n| "o".repeat(n)),
        (MAX_OWNER_BYTES / 2..=MAX_OWNER_BYTES).prop_map(|n| "ö".repeat(n)),
        Just(String::new()),
    ];
    run((name, owner, any::<bool>()), |(name, owner, release)| {
        let kind = if release { "Release" } else { "Claim" };
        let body = json!({"Write": {kind: {"name": name, "owner": owner}}});
        let before = f.bad_messages();
        let answer = f.feed(&serde_json::to_vec(&body).unwrap())?;
        let valid = hearsay_registry::validate(&name, &owner).is_ok();
        if valid {
            prop_assert!(answer.get("Decided").is_some(), "{answer}");
        } else {
            prop_assert!(answer.get("Error").is_some(), "accepted: {answer}");
            prop_assert_eq!(f.bad_messages(), before + 1);
            // Nothing of it reached the names (a read of an invalid name is
            // refused too).
            let read = f.feed(&serde_json::to_vec(&json!({"Read": {"name": name}})).unwrap())?;
            if hearsay_registry::validate_name(&name).is_err() {
                prop_assert!(read.get("Error").is_some(), "{read}");
            } else {
                // (It may hold a valid owner from an earlier case.)
                let held = &read["Read"]["owner"];
                prop_assert!(read.get("Read").is_some(), "{}", read);
                prop_assert!(held.as_str() != Some(owner.as_str()), "{}", read);
            }
        }
        Ok(())
    });
    f.still_sound().unwrap();
}
