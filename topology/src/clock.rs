//! Clock offsets to other nodes, from the timestamps of their statuses.
//!
//! A delta carries its origin's wall-clock time; the replication delay a
//! node reports is its own clock at apply time minus that, which is off by
//! however far the two clocks disagree. [`ClockOffsets`] estimates, per
//! node, `offset = their clock - my clock` from the statuses it receives:
//!
//! - a status sent at their time `ts` and received at my time `rx` gives
//!   the sample `ts - rx = offset - transit`, where `transit >= 0` is how
//!   long the status took to arrive (over one hop or several);
//! - so every sample is at most the offset, and the largest sample of a
//!   window, the one that travelled fastest, is the best estimate. Like
//!   NTP's minimum-delay filter, but one-way: the estimate errs low by the
//!   fastest transit seen in the window (a millisecond on a LAN, a one-way
//!   network delay across regions), never by queueing delays.
//! - The window is the last [`WINDOW`] samples, so a clock that is stepped
//!   is followed within that many statuses.
//!
//! The corrected delay is `local_now - origin_time + offset`.

use std::collections::{BTreeMap, VecDeque};

/// Samples kept per node.
pub const WINDOW: usize = 16;

/// Offset estimates per node (see the module docs). Bounded by `max_nodes`:
/// a new node beyond it replaces the one updated longest ago.
#[derive(Clone, Debug)]
pub struct ClockOffsets<P> {
    max_nodes: usize,
    nodes: BTreeMap<P, Samples>,
    /// Update counter, to find the node updated longest ago.
    clock: u64,
}

#[derive(Clone, Debug, Default)]
struct Samples {
    window: VecDeque<i64>,
    updated: u64,
}

impl<P: Copy + Ord> ClockOffsets<P> {
    pub fn new(max_nodes: usize) -> Self {
        ClockOffsets {
            max_nodes: max_nodes.max(1),
            nodes: BTreeMap::new(),
            clock: 0,
        }
    }

    /// Records a status of `peer` stamped `sent_ms` by its clock and
    /// received at `received_ms` by this node's clock.
    pub fn sample(&mut self, peer: P, sent_ms: u64, received_ms: u64) {
        let sample = sent_ms as i64 - received_ms as i64;
        if !self.nodes.contains_key(&peer) && self.nodes.len() >= self.max_nodes {
            let oldest = self
                .nodes
                .iter()
                .min_by_key(|(_, s)| s.updated)
                .map(|(p, _)| *p);
            if let Some(p) = oldest {
                self.nodes.remove(&p);
            }
        }
        self.clock += 1;
        let s = self.nodes.entry(peer).or_default();
        if s.window.len() == WINDOW {
            s.window.pop_front();
        }
        s.window.push_back(sample);
        s.updated = self.clock;
    }

    /// `their clock - my clock` in ms, if any status of `peer` arrived.
    pub fn offset(&self, peer: &P) -> Option<i64> {
        self.nodes.get(peer)?.window.iter().copied().max()
    }

    pub fn forget(&mut self, peer: &P) {
        self.nodes.remove(peer);
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// The replication delay of a delta stamped `origin_ms` by its origin's
/// clock and applied at `now_ms` by this node's, given the origin's
/// `offset` (their clock - mine). Never below 0.
pub fn corrected_delay_ms(now_ms: u64, origin_ms: u64, offset_ms: i64) -> u64 {
    let delay = now_ms as i128 - origin_ms as i128 + offset_ms as i128;
    delay.clamp(0, u64::MAX as i128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fastest_sample_gives_the_offset() {
        let mut c = ClockOffsets::new(8);
        // Their clock is 3000 ms ahead; transits of 40, 5 and 300 ms.
        for (sent_local, transit) in [(1_000u64, 40u64), (2_000, 5), (3_000, 300)] {
            c.sample(1u32, sent_local + 3_000, sent_local + transit);
        }
        assert_eq!(c.offset(&1), Some(2_995));
        assert_eq!(c.offset(&2), None);
        // A clock 3 s behind gives a negative offset.
        c.sample(2, 10_000 - 3_000, 10_000 + 2);
        assert_eq!(c.offset(&2), Some(-3_002));
    }

    #[test]
    fn a_stepped_clock_is_followed_within_the_window() {
        let mut c = ClockOffsets::new(8);
        c.sample(1u32, 10_000, 1_000);
        assert_eq!(c.offset(&1), Some(9_000));
        for i in 0..WINDOW as u64 {
            c.sample(1, 2_000 + i, 2_000 + i + 1);
        }
        assert_eq!(c.offset(&1), Some(-1));
    }

    #[test]
    fn the_table_is_bounded_and_evicts_the_stalest() {
        let mut c = ClockOffsets::new(2);
        c.sample(1u32, 0, 0);
        c.sample(2, 0, 0);
        c.sample(1, 0, 0);
        c.sample(3, 5, 0);
        assert_eq!(c.len(), 2);
        assert_eq!(c.offset(&2), None);
        assert_eq!(c.offset(&3), Some(5));
    }

    #[test]
    fn corrected_delays() {
        // Origin 3 s ahead stamped 13_000 when my clock said 10_000; applied
        // at my 10_050: 50 ms.
        assert_eq!(corrected_delay_ms(10_050, 13_000, 3_000), 50);
        // Origin 3 s behind.
        assert_eq!(corrected_delay_ms(10_050, 7_000, -3_000), 50);
        assert_eq!(corrected_delay_ms(0, 5, 0), 0);
    }
}
