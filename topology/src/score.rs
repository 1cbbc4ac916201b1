//! The router score: which host should serve a client.
//!
//! `score = 1 / (i*replication_delay + j*mean_response_time + k*distance + l*error_rate)`
//!
//! Every term is expressed in "milliseconds of badness" by its weight, so
//! the weights say how many milliseconds one unit of each figure is worth
//! (see [`Weights`]). Higher is better; Suspect and Down hosts are left out.

use serde::{Deserialize, Serialize};

use crate::table::{PeerTable, State};
use crate::{Geo, Millis, Status};

/// Distance charged to a host whose position is unknown while the client's
/// is known: half the Earth's circumference, so it ranks as the farthest.
pub const UNKNOWN_DISTANCE_KM: f64 = 20_015.0;

/// Smallest denominator of the score: a host whose every term is zero
/// scores `1 / MIN_COST` instead of dividing by zero.
pub const MIN_COST: f64 = 1e-3;

/// Weights of the score terms. Each is "milliseconds per unit".
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Weights {
    /// Per millisecond of replication delay (the host's p50): how stale a
    /// read from it is likely to be.
    pub i: f64,
    /// Per millisecond of the host's mean HTTP response time.
    pub j: f64,
    /// Per kilometre between client and host (great circle). The default,
    /// 0.02, is about the round trip light in fibre takes over routed paths
    /// (1000 km ≈ 20 ms).
    pub k: f64,
    /// Per unit of error rate (0..1). The default, 1000, makes a 1 % error
    /// rate cost as much as 10 ms.
    pub l: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            i: 1.0,
            j: 1.0,
            k: 0.02,
            l: 1000.0,
        }
    }
}

impl Weights {
    /// Parses `I,J,K,L` (each finite and not negative).
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        let [i, j, k, l] = parts[..] else {
            return Err(format!("{s:?} is not I,J,K,L"));
        };
        let num = |name: &str, v: &str| -> Result<f64, String> {
            match v.parse::<f64>() {
                Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
                _ => Err(format!("weight {name} = {v:?} is not a number >= 0")),
            }
        };
        Ok(Weights {
            i: num("i", i)?,
            j: num("j", j)?,
            k: num("k", k)?,
            l: num("l", l)?,
        })
    }
}

/// The four weighted terms of a score (their sum is `1 / score`, unless
/// below [`MIN_COST`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Terms {
    /// `i * replication_delay_p50_ms`
    pub delay: f64,
    /// `j * mean_response_ms`
    pub response: f64,
    /// `k * distance_km`
    pub distance: f64,
    /// `l * error_rate`
    pub error: f64,
}

/// One host's place in a ranking.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ranked<P> {
    pub peer: P,
    pub score: f64,
    /// Client to host, when both positions are known.
    pub distance_km: Option<f64>,
    pub terms: Terms,
}

/// The score of the host that sent `status`, for a client at `client`
/// (no client position: distance counts for nothing).
pub fn score<P: Copy>(status: &Status<P>, client: Option<Geo>, w: &Weights) -> Ranked<P> {
    let distance_km = client.zip(status.geo).map(|(c, h)| c.distance_km(&h));
    let km = match (client, distance_km) {
        (None, _) => 0.0,
        (Some(_), Some(d)) => d,
        (Some(_), None) => UNKNOWN_DISTANCE_KM,
    };
    let terms = Terms {
        delay: w.i * status.replication_delay_p50_ms,
        response: w.j * status.mean_response_ms,
        distance: w.k * km,
        error: w.l * status.error_rate,
    };
    let cost = terms.delay + terms.response + terms.distance + terms.error;
    let cost = if cost.is_nan() { f64::INFINITY } else { cost };
    Ranked {
        peer: status.peer,
        score: 1.0 / cost.max(MIN_COST),
        distance_km,
        terms,
    }
}

/// The Alive hosts of `table`, best first (equal scores in id order).
pub fn rank<P: Copy + Ord>(
    table: &PeerTable<P>,
    client: Option<Geo>,
    weights: &Weights,
    now: Millis,
) -> Vec<Ranked<P>> {
    let mut out: Vec<Ranked<P>> = table
        .iter()
        .filter(|e| table.state(&e.status.peer, now) == Some(State::Alive))
        .map(|e| score(&e.status, client, weights))
        .collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.peer.cmp(&b.peer)));
    out
}
