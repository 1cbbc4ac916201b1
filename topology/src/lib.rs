//! hearsay-topology: the IO-less mesh logic of hearsay.
//!
//! This crate will hold the peer table built from signed node statuses,
//! failure detection, degree maintenance and the router score
//! `s = 1 / (i*replication_delay + j*mean_response_time + k*distance + l*error_rate)`.
//! Like `hearsay-crdt` it depends on no runtime, socket or clock: time comes
//! in as arguments, decisions go out as values. Today it provides the
//! geographic distance the router score uses.

/// A point on the Earth, in degrees.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Geo {
    pub lat: f64,
    pub lon: f64,
}

impl Geo {
    /// Parses `LAT,LON` in degrees, checking the ranges.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (lat, lon) = s
            .split_once(',')
            .ok_or_else(|| format!("{s:?} is not LAT,LON"))?;
        let lat: f64 = lat
            .trim()
            .parse()
            .map_err(|_| format!("latitude {lat:?} is not a number"))?;
        let lon: f64 = lon
            .trim()
            .parse()
            .map_err(|_| format!("longitude {lon:?} is not a number"))?;
        if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
            return Err(format!("{lat},{lon} is outside -90..90, -180..180"));
        }
        Ok(Geo { lat, lon })
    }

    /// Great-circle distance in kilometres (haversine).
    pub fn distance_km(&self, other: &Geo) -> f64 {
        const EARTH_RADIUS_KM: f64 = 6371.0;
        let (p1, p2) = (self.lat.to_radians(), other.lat.to_radians());
        let dp = p2 - p1;
        let dl = (other.lon - self.lon).to_radians();
        let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * a.sqrt().asin()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haversine_matches_known_distance() {
        let london = Geo::parse("51.5074,-0.1278").unwrap();
        let paris = Geo::parse("48.8566,2.3522").unwrap();
        let d = london.distance_km(&paris);
        assert!((d - 343.5).abs() < 2.0, "{d}");
        assert_eq!(london.distance_km(&london), 0.0);
    }

    #[test]
    fn bad_geo_is_an_error() {
        assert!(Geo::parse("91,0").is_err());
        assert!(Geo::parse("north").is_err());
        assert!(Geo::parse("1,x").is_err());
    }
}
