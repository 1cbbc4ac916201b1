//! The peer table: the newest status of every known node, when it arrived,
//! and the failure detector that turns that arrival time into a [`State`].
//!
//! Liveness is judged on the **local receive time** of the newest status,
//! never on the sender's `timestamp_ms`: clocks differ between nodes, and a
//! node whose clock runs ahead must not look alive for longer. The sender's
//! timestamp only orders statuses of one sender (newest wins), so a status
//! replayed or delayed by gossip never overwrites a newer one and never
//! refreshes the heartbeat.
//!
//! The table is bounded ([`PeerTable::new`]'s capacity): a status from an
//! unknown node, when the table is full, evicts the node silent longest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Millis, Status};

/// Longest neighbour list a status carries. Publishers send at most this
/// many (their connection target is far below it); on receipt the list is
/// sorted, deduplicated and cut to this length, so one status costs the
/// graph a bounded amount.
pub const MAX_NEIGHBOURS: usize = 32;

/// Ceiling of the millisecond figures of a status (about 11.5 days): a
/// negative, infinite or NaN figure is read as this, so a broken host ranks
/// last instead of poisoning the ordering.
pub const MAX_FIGURE_MS: f64 = 1e9;

/// What the failure detector says of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// A status arrived less than `suspect_after_ms` ago.
    Alive,
    /// Silent for `suspect_after_ms`: not routed to, still a neighbour.
    Suspect,
    /// Silent for `down_after_ms`: replaced as a neighbour.
    Down,
}

/// The failure detector's thresholds, since the last status received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Silence after which a node is [`State::Suspect`] (three missed
    /// one-second heartbeats by default).
    pub suspect_after_ms: Millis,
    /// Silence after which a node is [`State::Down`].
    pub down_after_ms: Millis,
    /// Silence after which a node leaves the table (and is no longer
    /// redialled).
    pub forget_after_ms: Millis,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            suspect_after_ms: 3_000,
            down_after_ms: 6_000,
            forget_after_ms: 10 * 60 * 1000,
        }
    }
}

impl Timeouts {
    /// The state of a node silent for `silent_ms`.
    pub fn state(&self, silent_ms: Millis) -> State {
        if silent_ms < self.suspect_after_ms {
            State::Alive
        } else if silent_ms < self.down_after_ms {
            State::Suspect
        } else {
            State::Down
        }
    }

    /// When a node last heard at `received` changes state (or is forgotten)
    /// next, if that is after `now`.
    pub(crate) fn next_change(&self, received: Millis, now: Millis) -> Option<Millis> {
        [
            self.suspect_after_ms,
            self.down_after_ms,
            self.forget_after_ms,
        ]
        .into_iter()
        .map(|t| received.saturating_add(t))
        .find(|&at| at > now)
    }
}

/// One known node.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry<P> {
    /// Its newest status (by the sender's timestamp), sanitised.
    pub status: Status<P>,
    /// Local time that status arrived: the heartbeat the detector reads.
    pub received_ms: Millis,
}

/// What [`PeerTable::insert`] did with a status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insert<P> {
    /// Not newer than the status held: ignored, heartbeat not refreshed.
    Stale,
    /// Replaced the status of a known node.
    Updated,
    /// A node not known before; `evicted` left to make room.
    New { evicted: Option<P> },
}

/// The newest status of each known node, bounded in size.
#[derive(Clone, Debug)]
pub struct PeerTable<P> {
    entries: BTreeMap<P, Entry<P>>,
    capacity: usize,
    timeouts: Timeouts,
}

impl<P: Copy + Ord> PeerTable<P> {
    /// An empty table holding at most `capacity` nodes (at least one).
    pub fn new(capacity: usize, timeouts: Timeouts) -> Self {
        PeerTable {
            entries: BTreeMap::new(),
            capacity: capacity.max(1),
            timeouts,
        }
    }

    /// Takes `status`, received at `now`, if it is newer than the one held.
    pub fn insert(&mut self, now: Millis, mut status: Status<P>) -> Insert<P> {
        sanitise(&mut status);
        match self.entries.get_mut(&status.peer) {
            Some(e) if e.status.timestamp_ms >= status.timestamp_ms => Insert::Stale,
            Some(e) => {
                e.status = status;
                e.received_ms = now;
                Insert::Updated
            }
            None => {
                let evicted = if self.entries.len() >= self.capacity {
                    // Silent longest; among equals the smallest id, so the
                    // choice is deterministic.
                    let oldest = self
                        .entries
                        .values()
                        .min_by_key(|e| (e.received_ms, e.status.peer))
                        .map(|e| e.status.peer);
                    if let Some(p) = oldest {
                        self.entries.remove(&p);
                    }
                    oldest
                } else {
                    None
                };
                let peer = status.peer;
                self.entries.insert(
                    peer,
                    Entry {
                        status,
                        received_ms: now,
                    },
                );
                Insert::New { evicted }
            }
        }
    }

    /// Drops the nodes silent for `forget_after_ms`; returns them.
    pub fn forget(&mut self, now: Millis) -> Vec<P> {
        let after = self.timeouts.forget_after_ms;
        let gone: Vec<P> = self
            .entries
            .values()
            .filter(|e| now.saturating_sub(e.received_ms) >= after)
            .map(|e| e.status.peer)
            .collect();
        for p in &gone {
            self.entries.remove(p);
        }
        gone
    }

    pub fn get(&self, peer: &P) -> Option<&Entry<P>> {
        self.entries.get(peer)
    }

    /// The detector's verdict on `peer` at `now`; `None` if unknown.
    pub fn state(&self, peer: &P, now: Millis) -> Option<State> {
        self.entries
            .get(peer)
            .map(|e| self.timeouts.state(now.saturating_sub(e.received_ms)))
    }

    /// Every known node, in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry<P>> {
        self.entries.values()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }
}

/// Bounds the neighbour list and clamps the figures a score is made of.
fn sanitise<P: Copy + Ord>(s: &mut Status<P>) {
    let me = s.peer;
    s.neighbours.retain(|n| *n != me);
    s.neighbours.sort();
    s.neighbours.dedup();
    s.neighbours.truncate(MAX_NEIGHBOURS);
    for ms in [
        &mut s.mean_response_ms,
        &mut s.replication_delay_p50_ms,
        &mut s.replication_delay_p99_ms,
    ] {
        *ms = if ms.is_nan() || *ms < 0.0 {
            MAX_FIGURE_MS
        } else {
            ms.min(MAX_FIGURE_MS)
        };
    }
    s.error_rate = if s.error_rate.is_nan() {
        1.0
    } else {
        s.error_rate.clamp(0.0, 1.0)
    };
}
