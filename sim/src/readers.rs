//! Event-stream readers that hop between nodes.
//!
//! Each reader holds a version-vector token, as a client of
//! `GET /api/v0/events` does, and every so often reads, at a node picked at
//! random among the live ones, everything its token lacks of that node's
//! durable vector — through the node's own [`Cursor`] and log pages
//! ([`read_all`]), the code the HTTP stream runs. Hops land on nodes that are
//! behind the token (partitions, crashes, slow links), so the token's
//! promise is checked where it is hardest: a change is never sent twice, a
//! node never skips one, and at the end each reader has seen every change
//! exactly once.

use std::collections::BTreeSet;

use hearsay_crdt::{NodeId, VersionVector};
use hearsay_node::events::{Cursor, DeltaLog, Filter, ReadError, read_all};
use rand::SeedableRng;
use rand::rngs::StdRng;

#[derive(Debug)]
struct Reader {
    cursor: Cursor,
    /// (origin, seq) of every change received.
    seen: BTreeSet<(NodeId, u64)>,
}

/// The readers of one run, with their own random source (so adding them
/// leaves the rest of the run's choices unchanged).
#[derive(Debug)]
pub(crate) struct Readers {
    pub rng: StdRng,
    readers: Vec<Reader>,
    pub hops: u64,
    /// Hops to a node that was behind the reader's token.
    pub ahead_hops: u64,
    pub events: u64,
}

impl Readers {
    pub fn new(seed: u64, count: usize) -> Readers {
        Readers {
            rng: StdRng::seed_from_u64(seed ^ 0x5eed_4ead_e125),
            readers: (0..count)
                .map(|_| Reader {
                    cursor: Cursor::new(VersionVector::new(), Filter::default()),
                    seen: BTreeSet::new(),
                })
                .collect(),
            hops: 0,
            ahead_hops: 0,
            events: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.readers.len()
    }

    /// Reader `r` reads at `node` everything its token lacks of `head`.
    pub fn hop(
        &mut self,
        r: usize,
        node: usize,
        log: &dyn DeltaLog,
        head: &VersionVector,
        violations: &mut Vec<String>,
    ) {
        let reader = &mut self.readers[r];
        self.hops += 1;
        if !reader.cursor.ahead_of(head).is_empty() {
            self.ahead_hops += 1;
        }
        match read_all(log, &mut reader.cursor, head) {
            Ok(changes) => {
                for (delta, _, _) in changes {
                    self.events += 1;
                    if !reader.seen.insert((delta.origin, delta.seq)) {
                        violations.push(format!(
                            "reader {r} at node {node}: change {:?}/{} sent twice",
                            delta.origin, delta.seq
                        ));
                    }
                }
            }
            Err(ReadError::Gap(m)) => violations.push(format!(
                "reader {r} at node {node}: the log lacks {}..={} of {} below the durable vector",
                m.from, m.to, m.origin
            )),
            Err(ReadError::Store(e)) => {
                violations.push(format!("reader {r} at node {node}: store: {e}"))
            }
        }
    }

    /// After the run: each reader catches up at `node` (converged), and must
    /// then hold exactly the changes a fresh read of the whole log finds,
    /// but for those of the `ignored` origins (which nodes may hold in
    /// part: a revoked node's, an equivocator's).
    pub fn finish(
        &mut self,
        node: usize,
        log: &dyn DeltaLog,
        head: &VersionVector,
        ignored: &BTreeSet<NodeId>,
        violations: &mut Vec<String>,
    ) {
        let mut fresh = Cursor::new(VersionVector::new(), Filter::default());
        let everything: BTreeSet<(NodeId, u64)> = match read_all(log, &mut fresh, head) {
            Ok(changes) => changes
                .into_iter()
                .map(|(d, _, _)| (d.origin, d.seq))
                .filter(|(origin, _)| !ignored.contains(origin))
                .collect(),
            Err(e) => {
                violations.push(format!("node {node}: reading its whole log: {e:?}"));
                return;
            }
        };
        for r in 0..self.readers.len() {
            self.hop(r, node, log, head, violations);
            let mut seen = self.readers[r].seen.clone();
            seen.retain(|(origin, _)| !ignored.contains(origin));
            let seen = &seen;
            if *seen != everything {
                violations.push(format!(
                    "reader {r}: saw {} changes, the log holds {} ({} missed, {} extra)",
                    seen.len(),
                    everything.len(),
                    everything.difference(seen).count(),
                    seen.difference(&everything).count()
                ));
            }
        }
    }
}
