//! Which host serves a request: a pure function of the statuses the router
//! holds, the client's position, the request's read-your-writes token and
//! the hosts the router saw fail a moment ago.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hearsay_crdt::VersionVector;
use hearsay_topology::{Geo, Ranked, State, Timeouts, Weights, score};
use libp2p::PeerId;

use crate::status::Verified;

/// How long a host that failed a request is tried last.
pub const FAILURE_PENALTY: Duration = Duration::from_secs(5);

/// A host as the router knows it: its latest verified status.
#[derive(Clone, Debug)]
pub struct Host {
    pub status: std::sync::Arc<Verified>,
    /// When the status arrived.
    pub received: Instant,
}

impl Host {
    pub fn state(&self, timeouts: &Timeouts, now: Instant) -> State {
        timeouts.state(now.saturating_duration_since(self.received).as_millis() as u64)
    }
}

/// One host in a ranking.
#[derive(Clone, Debug)]
pub struct Choice {
    pub host: Host,
    pub ranked: Ranked<PeerId>,
    /// Its status's version vector covers the request's token.
    pub covers: Option<bool>,
    /// It failed a request less than [`FAILURE_PENALTY`] ago.
    pub failing: bool,
}

/// The Alive hosts, best first: hosts that failed recently last; among the
/// rest, for a request with a token, those whose status covers it first
/// (a host that does not still answers, after waiting up to `wait_ms`);
/// then by score (equal scores in peer id order).
pub fn rank(
    hosts: &[Host],
    timeouts: &Timeouts,
    client: Option<Geo>,
    weights: &Weights,
    token: Option<&VersionVector>,
    failed: &BTreeMap<PeerId, Instant>,
    now: Instant,
) -> Vec<Choice> {
    let mut out: Vec<Choice> = hosts
        .iter()
        .filter(|h| h.state(timeouts, now) == State::Alive && !h.status.body.http.is_empty())
        .map(|h| Choice {
            ranked: score(&h.status.status, client, weights),
            covers: token.map(|t| {
                h.status
                    .version_vector
                    .as_ref()
                    .is_some_and(|vv| vv.covers(t))
            }),
            failing: failed
                .get(&h.status.peer)
                .is_some_and(|at| now.saturating_duration_since(*at) < FAILURE_PENALTY),
            host: h.clone(),
        })
        .collect();
    out.sort_by(|a, b| {
        a.failing
            .cmp(&b.failing)
            .then(b.covers.cmp(&a.covers))
            .then(b.ranked.score.total_cmp(&a.ranked.score))
            .then(a.ranked.peer.cmp(&b.ranked.peer))
    });
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use hearsay_crdt::NodeId;
    use libp2p::identity;

    use super::*;
    use crate::status::{StatusBody, encode, revision_fields, verify};

    fn host(region: &str, geo: Geo, vv: &VersionVector, age: Duration, now: Instant) -> Host {
        let key = identity::Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let (revision, revision_hash, version_vector) = revision_fields(vv);
        let body = StatusBody {
            peer_id: peer.to_string(),
            http: format!("http://{region}.example"),
            region: region.into(),
            geo: Some(geo),
            listen_addrs: vec![],
            revision,
            revision_hash,
            version_vector,
            mean_response_ms: 1.0,
            error_rate: 0.0,
            replication_delay_p50_ms: 5.0,
            replication_delay_p99_ms: 9.0,
            neighbours: vec![],
            uptime_s: 1,
            timestamp_ms: 1,
            certificate: None,
        };
        Host {
            status: Arc::new(verify(Some(&peer), &encode(&key, &body)).unwrap()),
            received: now - age,
        }
    }

    const FRANKFURT: Geo = Geo {
        lat: 50.1,
        lon: 8.7,
    };
    const VIRGINIA: Geo = Geo {
        lat: 38.9,
        lon: -77.0,
    };
    const TOKYO: Geo = Geo {
        lat: 35.7,
        lon: 139.7,
    };

    fn regions(choices: &[Choice]) -> Vec<String> {
        choices
            .iter()
            .map(|c| c.host.status.body.region.clone())
            .collect()
    }

    #[test]
    fn the_nearest_alive_host_comes_first_and_silent_ones_are_left_out() {
        let now = Instant::now();
        let vv = VersionVector::new();
        let fresh = Duration::from_millis(500);
        let hosts = vec![
            host("eu", FRANKFURT, &vv, fresh, now),
            host("us", VIRGINIA, &vv, fresh, now),
            host("asia", TOKYO, &vv, fresh, now),
            host("gone", TOKYO, &vv, Duration::from_secs(4), now),
        ];
        let t = Timeouts::default();
        let w = Weights::default();
        let near_tokyo = Some(Geo {
            lat: 34.7,
            lon: 135.5,
        });
        let r = rank(&hosts, &t, near_tokyo, &w, None, &BTreeMap::new(), now);
        assert_eq!(regions(&r), ["asia", "eu", "us"]);
        let near_ny = Some(Geo {
            lat: 40.7,
            lon: -74.0,
        });
        let r = rank(&hosts, &t, near_ny, &w, None, &BTreeMap::new(), now);
        assert_eq!(regions(&r), ["us", "eu", "asia"]);
    }

    #[test]
    fn failing_hosts_go_last_and_covering_hosts_go_first() {
        let now = Instant::now();
        let fresh = Duration::from_millis(100);
        let mut ahead = VersionVector::new();
        ahead.set(NodeId([1; 32]), 7);
        let hosts = vec![
            host("asia", TOKYO, &VersionVector::new(), fresh, now),
            host("eu", FRANKFURT, &ahead, fresh, now),
            host("us", VIRGINIA, &ahead, fresh, now),
        ];
        let t = Timeouts::default();
        let w = Weights::default();
        let client = Some(TOKYO);
        // The write's token: only eu and us hold it.
        let mut token = VersionVector::new();
        token.set(NodeId([1; 32]), 7);
        let r = rank(&hosts, &t, client, &w, Some(&token), &BTreeMap::new(), now);
        assert_eq!(regions(&r), ["eu", "us", "asia"]);
        assert_eq!(r[2].covers, Some(false));
        // eu failed a moment ago: tried last; once the penalty is over,
        // first again.
        let failed = BTreeMap::from([(hosts[1].status.peer, now)]);
        let r = rank(&hosts, &t, client, &w, Some(&token), &failed, now);
        assert_eq!(regions(&r), ["us", "asia", "eu"]);
        assert!(r[2].failing);
        let long_ago = now - FAILURE_PENALTY - Duration::from_millis(1);
        let failed = BTreeMap::from([(hosts[1].status.peer, long_ago)]);
        let r = rank(&hosts, &t, client, &w, Some(&token), &failed, now);
        assert_eq!(regions(&r), ["eu", "us", "asia"]);
    }
}
