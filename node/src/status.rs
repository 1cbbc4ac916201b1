//! Signed node statuses: the heartbeat and routing signals of the mesh.
//!
//! Every node publishes a [`StatusBody`] about once a second on the gossipsub
//! topic [`STATUS_TOPIC`]: who it is, where (HTTP address, region,
//! position), how far it has got (version vector, its sum and a short hash),
//! how well it serves (mean response time and error rate of recent
//! requests), how fresh its data is (replication delay p50/p99), its
//! neighbours, uptime, and its clock (`timestamp_ms`, the heartbeat).
//!
//! Wire format: `"HSS1" | signature (64) | body (JSON)`, the signature by
//! the node's ed25519 key over [`SIGNING_DOMAIN`] followed by the body.
//! The key is the one inside the node's peer id (an ed25519 peer id embeds
//! its public key), so a status verifies without any key exchange:
//!
//! - **unknown key**: the claimed peer id does not embed an ed25519 key
//!   (the only kind a hearsay node has);
//! - **forged**: the signature does not verify, or the status names a
//!   gossipsub author other than the peer it describes (the mesh runs
//!   gossipsub anonymously, so a status normally names none: its own
//!   signature is what binds it to its peer);
//! - **malformed**: anything else out of bounds (sizes, counts, numbers,
//!   addresses), or a revision that is not the sum of the vector.
//!
//! A verified status becomes a [`hearsay_topology::Status`] for the
//! topology machine (peer table, failure detection, degree, router score)
//! plus the facts only the node and the router use ([`Verified`]).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use hearsay_crdt::{NodeId, VersionVector};
use hearsay_topology::{Geo, MAX_NEIGHBOURS, Status};
use libp2p::{Multiaddr, PeerId, identity};
use serde::{Deserialize, Serialize};
use sha2::Digest;

/// The gossipsub topic statuses are published on.
pub const STATUS_TOPIC: &str = "hearsay/status/1";
/// Prefix of every signed status.
pub const MAGIC: &[u8; 4] = b"HSS1";
/// Signed before the body, so a status signature is never mistaken for
/// another message's.
pub const SIGNING_DOMAIN: &[u8] = b"hearsay-status-v1\0";
/// Largest encoded status.
pub const MAX_STATUS_BYTES: usize = 48 * 1024;
/// Most origins whose version vector a status carries; a node holding
/// deltas of more origins publishes only the sum and hash.
pub const MAX_STATUS_ORIGINS: usize = 512;
/// Most listen addresses in a status.
pub const MAX_LISTEN_ADDRS: usize = 8;
/// Longest HTTP address, listen address or region.
const MAX_TEXT: usize = 256;
const SIGNATURE_LEN: usize = 64;

/// What a node says about itself (JSON inside the signed envelope).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusBody {
    pub peer_id: String,
    /// Base URL of its HTTP API, e.g. `http://10.0.0.5:8080`.
    pub http: String,
    pub region: String,
    pub geo: Option<Geo>,
    /// Its libp2p listen addresses, for dialling it directly.
    pub listen_addrs: Vec<String>,
    /// Sum of its durable version vector.
    pub revision: u64,
    /// [`revision_hash`] of its durable version vector, 16 hex digits.
    pub revision_hash: String,
    /// The durable version vector as a token
    /// ([`VersionVector::to_token`]), when it has at most
    /// [`MAX_STATUS_ORIGINS`] origins.
    pub version_vector: Option<String>,
    /// Mean HTTP response time over the last few seconds, ms.
    pub mean_response_ms: f64,
    /// Share of recent HTTP requests that failed on the server's side
    /// (5xx, overload), 0..1.
    pub error_rate: f64,
    pub replication_delay_p50_ms: f64,
    pub replication_delay_p99_ms: f64,
    /// Peer ids of the mesh members it has links to.
    pub neighbours: Vec<String>,
    pub uptime_s: u64,
    /// Its wall clock (Unix ms) when it signed this status.
    pub timestamp_ms: u64,
    /// Its certificate ([`hearsay_admission::Certificate::to_text`]) in a
    /// mesh with an operator, so every node learns which origins were
    /// admitted, also those it has no link to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
}

/// Why a status was refused; [`Rejection::reason`] is the metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("malformed status: {0}")]
    Malformed(String),
    #[error("forged status: {0}")]
    Forged(String),
    #[error("status from an unknown key: {0}")]
    UnknownKey(String),
}

impl Rejection {
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::Malformed(_) => "malformed",
            Rejection::Forged(_) => "forged",
            Rejection::UnknownKey(_) => "unknown_key",
        }
    }
}

/// A status whose signature and bounds were checked.
#[derive(Clone, Debug)]
pub struct Verified {
    pub peer: PeerId,
    pub body: StatusBody,
    /// The body as the topology machine takes it.
    pub status: Status<PeerId>,
    pub listen_addrs: Vec<Multiaddr>,
    pub version_vector: Option<VersionVector>,
}

/// A short hash of a version vector: equal hashes, same data (with
/// overwhelming probability). The first 8 bytes of SHA-256 of its bytes.
pub fn revision_hash(vv: &VersionVector) -> u64 {
    let digest = sha2::Sha256::digest(vv.to_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// The body's fields for a version vector: sum, hash, and the token when
/// small enough.
pub fn revision_fields(vv: &VersionVector) -> (u64, String, Option<String>) {
    let token = (vv.len() <= MAX_STATUS_ORIGINS).then(|| vv.to_token());
    (vv.sum(), format!("{:016x}", revision_hash(vv)), token)
}

/// Signs `body` with `key` (the node's libp2p identity).
pub fn encode(key: &identity::Keypair, body: &StatusBody) -> Vec<u8> {
    let json = serde_json::to_vec(body).expect("a status serialises");
    let mut signed = Vec::with_capacity(SIGNING_DOMAIN.len() + json.len());
    signed.extend_from_slice(SIGNING_DOMAIN);
    signed.extend_from_slice(&json);
    let signature = key.sign(&signed).expect("ed25519 signing does not fail");
    let mut out = Vec::with_capacity(MAGIC.len() + SIGNATURE_LEN + json.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&signature);
    out.extend_from_slice(&json);
    out
}

/// The ed25519 public key inside `peer`, if it is an ed25519 peer id.
pub fn public_key(peer: &PeerId) -> Option<identity::PublicKey> {
    let mh = peer.as_ref();
    // 0x00: the identity multihash, whose digest is the key itself.
    if mh.code() != 0 {
        return None;
    }
    let key = identity::PublicKey::try_decode_protobuf(mh.digest()).ok()?;
    key.clone().try_into_ed25519().ok()?;
    Some(key)
}

/// Checks a received status. `author` is the gossipsub author of the
/// message (verified by gossipsub), which must be the peer described.
pub fn verify(author: Option<&PeerId>, data: &[u8]) -> Result<Verified, Rejection> {
    let malformed = |why: &str| Rejection::Malformed(why.to_owned());
    if data.len() > MAX_STATUS_BYTES {
        return Err(Rejection::Malformed(format!(
            "{} bytes, most {MAX_STATUS_BYTES}",
            data.len()
        )));
    }
    let rest = data
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| malformed("no HSS1 prefix"))?;
    if rest.len() < SIGNATURE_LEN {
        return Err(malformed("shorter than a signature"));
    }
    let (signature, json) = rest.split_at(SIGNATURE_LEN);
    let body: StatusBody =
        serde_json::from_slice(json).map_err(|e| Rejection::Malformed(format!("body: {e}")))?;
    let peer: PeerId = body
        .peer_id
        .parse()
        .map_err(|_| malformed("peer_id is not a peer id"))?;
    let key = public_key(&peer)
        .ok_or_else(|| Rejection::UnknownKey(format!("{peer} does not embed an ed25519 key")))?;
    let mut signed = Vec::with_capacity(SIGNING_DOMAIN.len() + json.len());
    signed.extend_from_slice(SIGNING_DOMAIN);
    signed.extend_from_slice(json);
    if !key.verify(&signed, signature) {
        return Err(Rejection::Forged(format!(
            "signature does not verify for {peer}"
        )));
    }
    if let Some(author) = author
        && *author != peer
    {
        return Err(Rejection::Forged(format!(
            "status of {peer} published by {author}"
        )));
    }
    check_bounds(&body)?;
    let listen_addrs = body
        .listen_addrs
        .iter()
        .map(|a| a.parse::<Multiaddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| malformed("a listen address is not a multiaddr"))?;
    let neighbours = body
        .neighbours
        .iter()
        .map(|n| n.parse::<PeerId>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| malformed("a neighbour is not a peer id"))?;
    let version_vector = match &body.version_vector {
        None => None,
        Some(token) => {
            let vv = VersionVector::from_token(token)
                .map_err(|e| Rejection::Malformed(format!("version_vector: {e}")))?;
            if vv.len() > MAX_STATUS_ORIGINS {
                return Err(malformed("version_vector has too many origins"));
            }
            if vv.sum() != body.revision {
                return Err(malformed("revision is not the sum of version_vector"));
            }
            if format!("{:016x}", revision_hash(&vv)) != body.revision_hash {
                return Err(malformed("revision_hash is not the hash of version_vector"));
            }
            Some(vv)
        }
    };
    let hash = u64::from_str_radix(&body.revision_hash, 16)
        .map_err(|_| malformed("revision_hash is not 16 hex digits"))?;
    let status = Status {
        peer,
        http: body.http.clone(),
        region: body.region.clone(),
        geo: body.geo,
        revision: body.revision,
        revision_hash: hash,
        mean_response_ms: body.mean_response_ms,
        error_rate: body.error_rate,
        replication_delay_p50_ms: body.replication_delay_p50_ms,
        replication_delay_p99_ms: body.replication_delay_p99_ms,
        neighbours,
        uptime_s: body.uptime_s,
        timestamp_ms: body.timestamp_ms,
    };
    Ok(Verified {
        peer,
        body,
        status,
        listen_addrs,
        version_vector,
    })
}

fn check_bounds(b: &StatusBody) -> Result<(), Rejection> {
    let bad = |why: String| Err(Rejection::Malformed(why));
    let text_ok = |s: &str| s.len() <= MAX_TEXT && s.bytes().all(|c| c.is_ascii_graphic());
    if !text_ok(&b.http) {
        return bad("http is not a short printable address".into());
    }
    if b.region.is_empty() || b.region.len() > 64 || !text_ok(&b.region) {
        return bad("region is not 1 to 64 printable characters".into());
    }
    if let Some(g) = b.geo
        && !((-90.0..=90.0).contains(&g.lat) && (-180.0..=180.0).contains(&g.lon))
    {
        return bad("geo is outside -90..90, -180..180".into());
    }
    if b.listen_addrs.len() > MAX_LISTEN_ADDRS || b.listen_addrs.iter().any(|a| !text_ok(a)) {
        return bad(format!(
            "more than {MAX_LISTEN_ADDRS} listen addresses, or one too long"
        ));
    }
    if b.neighbours.len() > MAX_NEIGHBOURS {
        return bad(format!("more than {MAX_NEIGHBOURS} neighbours"));
    }
    if b.revision_hash.len() != 16 {
        return bad("revision_hash is not 16 hex digits".into());
    }
    let figures = [
        ("mean_response_ms", b.mean_response_ms),
        ("replication_delay_p50_ms", b.replication_delay_p50_ms),
        ("replication_delay_p99_ms", b.replication_delay_p99_ms),
    ];
    for (name, v) in figures {
        if !v.is_finite() || v < 0.0 {
            return bad(format!("{name} is not a finite number >= 0"));
        }
    }
    if !(0.0..=1.0).contains(&b.error_rate) {
        return bad("error_rate is outside 0..1".into());
    }
    Ok(())
}

/// What a node knows of each origin from its statuses: the region (as a
/// metric label) and the clock offset (`their clock - mine`, ms), shared
/// by the network actor (which writes it) and the core (which reads it to
/// label and correct replication delays). Bounded by the actor's peer
/// table.
#[derive(Clone, Debug, Default)]
pub struct Origins(Arc<RwLock<HashMap<NodeId, OriginInfo>>>);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OriginInfo {
    pub region: &'static str,
    pub offset_ms: i64,
}

impl Origins {
    pub fn get(&self, origin: &NodeId) -> Option<OriginInfo> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(origin)
            .copied()
    }

    pub fn set(&self, origin: NodeId, info: OriginInfo) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(origin, info);
    }

    /// Keeps only the origins `keep` says yes to.
    pub fn retain(&self, mut keep: impl FnMut(&NodeId) -> bool) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| keep(k));
    }

    /// The region label of `origin`, or [`crate::metrics::UNKNOWN_REGION`].
    pub fn region(&self, origin: &NodeId) -> &'static str {
        self.get(origin)
            .map_or(crate::metrics::UNKNOWN_REGION, |i| i.region)
    }
}

/// The hearsay node id (delta origin) of an ed25519 peer id.
pub fn node_id(peer: &PeerId) -> Option<NodeId> {
    let key = public_key(peer)?.try_into_ed25519().ok()?;
    Some(NodeId(key.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(peer: &PeerId) -> StatusBody {
        let mut vv = VersionVector::new();
        vv.set(hearsay_crdt::NodeId([7; 32]), 5);
        let (revision, revision_hash, version_vector) = revision_fields(&vv);
        StatusBody {
            peer_id: peer.to_string(),
            http: "http://127.0.0.1:8080".into(),
            region: "eu-west".into(),
            geo: Some(Geo {
                lat: 50.1,
                lon: 8.7,
            }),
            listen_addrs: vec![format!("/ip4/127.0.0.1/tcp/4001/p2p/{peer}")],
            revision,
            revision_hash,
            version_vector,
            mean_response_ms: 1.5,
            error_rate: 0.0,
            replication_delay_p50_ms: 20.0,
            replication_delay_p99_ms: 80.0,
            neighbours: vec![PeerId::random().to_string()],
            uptime_s: 12,
            timestamp_ms: 1_700_000_000_000,
            certificate: None,
        }
    }

    #[test]
    fn a_signed_status_verifies_into_a_topology_status() {
        let key = identity::Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let b = body(&peer);
        let v = verify(Some(&peer), &encode(&key, &b)).unwrap();
        assert_eq!(v.peer, peer);
        assert_eq!(v.body, b);
        assert_eq!(v.status.revision, 5);
        assert_eq!(v.status.neighbours.len(), 1);
        assert_eq!(v.version_vector.unwrap().sum(), 5);
        assert_eq!(v.listen_addrs.len(), 1);
        // Relayed outside gossipsub (no author): the signature suffices.
        assert!(verify(None, &encode(&key, &b)).is_ok());
    }

    #[test]
    fn forged_and_unknown_statuses_are_refused_with_their_reason() {
        let key = identity::Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let other = identity::Keypair::generate_ed25519();
        // Signed by another key than the one the peer id embeds.
        let claimed = encode(&other, &body(&peer));
        assert_eq!(verify(None, &claimed).unwrap_err().reason(), "forged");
        // Properly signed, but published by someone else.
        let relayed = encode(&key, &body(&peer));
        let author = other.public().to_peer_id();
        assert_eq!(
            verify(Some(&author), &relayed).unwrap_err().reason(),
            "forged"
        );
        // A body altered after signing.
        let mut tampered = encode(&key, &body(&peer));
        let n = tampered.len();
        tampered[n - 2] ^= 1;
        assert!(verify(None, &tampered).is_err());
        // A peer id that is a hash, not a key.
        let mut b = body(&peer);
        b.peer_id = PeerId::random().to_string();
        let hashed = encode(&key, &b);
        let err = verify(None, &hashed).unwrap_err();
        assert!(matches!(err.reason(), "unknown_key" | "forged"), "{err}");
    }

    #[test]
    fn out_of_bounds_statuses_are_malformed() {
        let key = identity::Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        type Mutation = Box<dyn Fn(&mut StatusBody)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("nan", Box::new(|b| b.mean_response_ms = f64::NAN)),
            ("rate", Box::new(|b| b.error_rate = 2.0)),
            (
                "geo",
                Box::new(|b| {
                    b.geo = Some(Geo {
                        lat: 95.0,
                        lon: 0.0,
                    })
                }),
            ),
            ("region", Box::new(|b| b.region = String::new())),
            ("sum", Box::new(|b| b.revision += 1)),
            ("hash", Box::new(|b| b.revision_hash = "00".repeat(8))),
            (
                "neighbours",
                Box::new(|b| {
                    b.neighbours = (0..=MAX_NEIGHBOURS)
                        .map(|_| PeerId::random().to_string())
                        .collect()
                }),
            ),
            ("addr", Box::new(|b| b.listen_addrs = vec!["nope".into()])),
        ];
        for (name, mutate) in cases {
            let mut b = body(&peer);
            mutate(&mut b);
            let err = verify(Some(&peer), &encode(&key, &b)).unwrap_err();
            assert_eq!(err.reason(), "malformed", "{name}: {err}");
        }
        for junk in [&b""[..], b"HSS1", b"HSS1short", &[0u8; 100]] {
            assert_eq!(verify(None, junk).unwrap_err().reason(), "malformed");
        }
        let huge = vec![b'x'; MAX_STATUS_BYTES + 1];
        assert_eq!(verify(None, &huge).unwrap_err().reason(), "malformed");
    }
}

/// Fuzzing [`verify`], the decoder of every status a peer gossips: random
/// bytes, and signed statuses flipped, truncated or re-signed with fields
/// replaced. Cases default to 64; run longer with HEARSAY_FUZZ_CASES=100000
/// (`HEARSAY_FUZZ_CASES=100000 cargo test -p hearsay-node --lib status::fuzz`).
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::Index;
    use proptest::test_runner::Config;
    use serde_json::Value;

    fn config() -> Config {
        crate::fuzz_config()
    }

    fn key() -> identity::Keypair {
        identity::Keypair::ed25519_from_bytes([0x5a; 32]).expect("32 bytes")
    }

    fn body(peer: &PeerId) -> StatusBody {
        let mut vv = VersionVector::new();
        vv.set(NodeId([7; 32]), 5);
        vv.set(NodeId([9; 32]), 2);
        let (revision, revision_hash, version_vector) = revision_fields(&vv);
        StatusBody {
            peer_id: peer.to_string(),
            http: "http://127.0.0.1:8080".into(),
            region: "eu-west".into(),
            geo: Some(Geo {
                lat: 50.1,
                lon: 8.7,
            }),
            listen_addrs: vec![format!("/ip4/127.0.0.1/tcp/4001/p2p/{peer}")],
            revision,
            revision_hash,
            version_vector,
            mean_response_ms: 1.5,
            error_rate: 0.01,
            replication_delay_p50_ms: 20.0,
            replication_delay_p99_ms: 80.0,
            neighbours: vec![
                identity::Keypair::ed25519_from_bytes([3; 32])
                    .expect("32 bytes")
                    .public()
                    .to_peer_id()
                    .to_string(),
            ],
            uptime_s: 12,
            timestamp_ms: 1_700_000_000_000,
            certificate: None,
        }
    }

    fn signed() -> (PeerId, StatusBody, Vec<u8>) {
        let key = key();
        let peer = key.public().to_peer_id();
        let b = body(&peer);
        let bytes = encode(&key, &b);
        assert!(verify(Some(&peer), &bytes).is_ok(), "the sample verifies");
        (peer, b, bytes)
    }

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| {
                serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
            }),
            ".{0,24}".prop_map(Value::from),
            (1usize..=8192).prop_map(|n| Value::from("a".repeat(n))),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                proptest::collection::btree_map(".{0,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn random_bytes_are_refused(
            bytes in proptest::collection::vec(any::<u8>(), 0..2048),
            prefixed in any::<bool>(),
        ) {
            let mut data = Vec::new();
            if prefixed {
                data.extend_from_slice(MAGIC);
            }
            data.extend_from_slice(&bytes);
            prop_assert!(verify(None, &data).is_err());
        }

        #[test]
        fn random_bodies_behind_a_random_signature_are_refused(
            signature in proptest::collection::vec(any::<u8>(), SIGNATURE_LEN),
            body in any_json(),
        ) {
            let mut data = MAGIC.to_vec();
            data.extend_from_slice(&signature);
            data.extend_from_slice(&serde_json::to_vec(&body).unwrap());
            prop_assert!(verify(None, &data).is_err());
        }

        #[test]
        fn a_flipped_byte_is_refused(at in any::<Index>(), x in 1u8..=255) {
            let (peer, _, mut data) = signed();
            let i = at.index(data.len());
            data[i] ^= x;
            let verdict = verify(Some(&peer), &data);
            prop_assert!(verdict.is_err(), "byte {} ^ {:#04x} accepted: {:?}", i, x, verdict);
            prop_assert!(verify(None, &data).is_err());
        }

        #[test]
        fn a_truncated_status_is_refused(at in any::<Index>()) {
            let (peer, _, data) = signed();
            let cut = at.index(data.len());
            prop_assert!(verify(Some(&peer), &data[..cut]).is_err());
            prop_assert!(verify(None, &data[..cut]).is_err());
        }

        /// Properly signed, any field replaced by any JSON value: refused,
        /// or accepted only within the bounds and exactly as signed.
        #[test]
        fn a_signed_body_with_a_field_replaced_is_checked(
            field in any::<Index>(),
            value in any_json(),
        ) {
            let (peer, b, _) = signed();
            let mut json = serde_json::to_value(&b).unwrap();
            let object = json.as_object_mut().unwrap();
            let name = object.keys().nth(field.index(object.len())).unwrap().clone();
            object.insert(name, value);
            let raw = serde_json::to_vec(&json).unwrap();
            let mut signed_bytes = SIGNING_DOMAIN.to_vec();
            signed_bytes.extend_from_slice(&raw);
            let mut data = MAGIC.to_vec();
            data.extend_from_slice(&key().sign(&signed_bytes).unwrap());
            data.extend_from_slice(&raw);
            if let Ok(v) = verify(Some(&peer), &data) {
                prop_assert_eq!(v.peer, peer);
                // What the signed bytes say (serde_json's default float parsing
                // may differ from the value in the last bit: compare bytes' meaning).
                let sent: StatusBody = serde_json::from_slice(&raw).unwrap();
                prop_assert_eq!(&v.body, &sent);
                prop_assert!(check_bounds(&v.body).is_ok());
                prop_assert!(v.listen_addrs.len() <= MAX_LISTEN_ADDRS);
                prop_assert!(v.status.neighbours.len() <= MAX_NEIGHBOURS);
            }
        }
    }
}
