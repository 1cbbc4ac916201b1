//! Benchmarks of hearsay-crdt: local operations, delta signatures, and
//! remote posts applied to a replica holding 1,000, one delta per `receive`
//! call against one batched call.
//!
//! Run with `cargo bench -p hearsay-crdt --bench crdt`; BENCHMARKS.md at the
//! workspace root records the figures and how they were produced.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use hearsay_crdt::{
    Delta, DocId, Keypair, MemoryDocs, NewPost, Replica, ReplicaConfig, UserName, VersionVector,
};

/// All posts of the fixture are created at this instant: the lists hold
/// them in one run of equal times, the way a busy minute does.
const T0: u64 = 1_700_000_000_000;
/// Posts held before the measured deltas arrive.
const HELD: usize = 1_000;
/// Post deltas applied per measured iteration.
const N: usize = 100;

fn key(b: u8) -> Keypair {
    Keypair::from_secret([b; 32])
}

fn post(i: usize) -> NewPost {
    NewPost {
        author: UserName::new("ann").unwrap(),
        body: format!("post number {i}: a short body, as most are ✓"),
        reply_to: None,
    }
}

/// A saved replica: its documents and the version vector they contain.
#[derive(Clone)]
struct Saved {
    key: Keypair,
    docs: MemoryDocs,
    vv: VersionVector,
}

impl Saved {
    fn save(r: &mut Replica<MemoryDocs>) -> Self {
        let vv = r.checkpoint().unwrap();
        Saved {
            key: r.key().clone(),
            docs: r.store().clone(),
            vv,
        }
    }

    /// Reopens the replica with `warm` already loaded in its cache, so that
    /// a measurement does not include loading a document from the store.
    fn open(&self, warm: &[DocId]) -> Replica<MemoryDocs> {
        let mut r = Replica::open(
            self.key.clone(),
            self.docs.clone(),
            self.vv.clone(),
            ReplicaConfig::default(),
        )
        .unwrap();
        for doc in warm {
            assert!(!r.heads(doc).unwrap().is_empty(), "{doc} is empty");
        }
        r
    }
}

struct Fixture {
    /// Replica A after creating `HELD` posts.
    a: Saved,
    /// Replica B holding everything A created.
    b: Saved,
    /// `N` further posts by A, next in A's sequence.
    post_deltas: Vec<Delta>,
}

fn fixture() -> Fixture {
    let mut a = Replica::new(key(1), MemoryDocs::default()).unwrap();
    let all: Vec<Delta> = (0..HELD)
        .map(|i| a.create_post(&post(i), None, T0).unwrap().1)
        .collect();
    let saved_a = Saved::save(&mut a);

    let mut b = Replica::new(key(2), MemoryDocs::default()).unwrap();
    let out = b.receive(all);
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    assert_eq!(b.newest_posts(2 * HELD, None).unwrap().len(), HELD);
    let saved_b = Saved::save(&mut b);

    let post_deltas: Vec<Delta> = (0..N)
        .map(|i| a.create_post(&post(HELD + i), None, T0).unwrap().1)
        .collect();

    // The deltas apply, one at a time or together, to the same state.
    let mut one = saved_b.open(&[]);
    for d in &post_deltas {
        assert_eq!(one.receive([d.clone()]).accepted.len(), 1);
    }
    let mut all_at_once = saved_b.open(&[]);
    assert_eq!(all_at_once.receive(post_deltas.clone()).accepted.len(), N);
    assert_eq!(
        one.newest_posts(N, None).unwrap(),
        all_at_once.newest_posts(N, None).unwrap()
    );
    assert_eq!(
        one.newest_posts(N, None).unwrap(),
        a.newest_posts(N, None).unwrap()
    );

    Fixture {
        a: saved_a,
        b: saved_b,
        post_deltas,
    }
}

fn local(c: &mut Criterion, f: &Fixture) {
    let mut g = c.benchmark_group("local");
    g.sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    let new = post(0);
    g.bench_function("create_post/empty_replica", |bench| {
        bench.iter_batched(
            || Replica::new(key(3), MemoryDocs::default()).unwrap(),
            |mut r| {
                let (_, deltas) = r.create_post(&new, None, T0).unwrap();
                (r, deltas)
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("create_post/holding_1000", |bench| {
        bench.iter_batched(
            || f.a.open(&[]),
            |mut r| {
                let (_, deltas) = r.create_post(&new, None, T0).unwrap();
                (r, deltas)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn signatures(c: &mut Criterion, f: &Fixture) {
    let mut g = c.benchmark_group("delta");
    g.sample_size(50)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let d = &f.post_deltas[0];
    let k = key(1);
    g.bench_function("sign", |bench| {
        bench.iter(|| {
            Delta::sign(
                &k,
                black_box(d.seq),
                d.doc.clone(),
                d.change.clone(),
                d.origin_time_ms,
            )
            .unwrap()
        })
    });
    g.bench_function("verify", |bench| {
        bench.iter(|| black_box(d).verify().unwrap())
    });
    g.finish();
}

fn remote_apply(c: &mut Criterion, f: &Fixture) {
    let mut g = c.benchmark_group("apply_100_posts_holding_1000");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6))
        .throughput(Throughput::Elements(N as u64));
    let setup = || (f.b.open(&[]), f.post_deltas.clone());
    // `receive`: signature check, ordering, apply.
    g.bench_function("receive/one_at_a_time", |bench| {
        bench.iter_batched(
            setup,
            |(mut r, deltas)| {
                for d in deltas {
                    r.receive([d]);
                }
                r
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("receive/batched", |bench| {
        bench.iter_batched(
            setup,
            |(mut r, deltas)| {
                r.receive(deltas);
                r
            },
            BatchSize::PerIteration,
        )
    });
    // `replay` skips the signature check: the automerge apply alone.
    g.bench_function("replay/one_at_a_time", |bench| {
        bench.iter_batched(
            setup,
            |(mut r, deltas)| {
                for d in deltas {
                    r.replay([d]);
                }
                r
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("replay/batched", |bench| {
        bench.iter_batched(
            setup,
            |(mut r, deltas)| {
                r.replay(deltas);
                r
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    let f = fixture();
    local(c, &f);
    signatures(c, &f);
    remote_apply(c, &f);
}

criterion_group!(crdt, benches);
criterion_main!(crdt);
