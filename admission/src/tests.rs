//! Unit tests of the certificate codec and of [`Admission`]: for given
//! events, the exact commands.
//!
//! Most machine tests look at the commands without [`Command::ArmTimer`]
//! (see [`step`]); the timer rules have tests of their own. Peer `p`
//! connects with the key `key(p)`; node 1 is this node.

use hearsay_crdt::{Keypair, NodeId};

use crate::cert::{
    CertError, Certificate, MAX_CERTIFICATE_BYTES, MAX_CERTIFICATE_TEXT, MIN_CERTIFICATE_BYTES,
    OperatorId, OperatorKey, REVOCATION_BYTES, Revocation,
};
use crate::machine::{
    Admission, Check, Command, Config, Event, Kind, Limits, MAX_BANS, PeerView, Reason,
};

type M = Admission<u32>;
type Cmd = Command<u32>;

const ME: u32 = 1;
const DAY: u64 = 86_400_000;

fn operator() -> OperatorKey {
    OperatorKey::from_keypair(Keypair::from_secret([200; 32]))
}

fn stranger() -> OperatorKey {
    OperatorKey::from_keypair(Keypair::from_secret([201; 32]))
}

fn key(i: u32) -> NodeId {
    Keypair::from_secret([i as u8; 32]).id()
}

/// The operator's certificate for node `i`, issued at 0.
fn cert(i: u32, expires_ms: Option<u64>) -> Certificate {
    operator().admit(key(i), "eu-west", 0, expires_ms).unwrap()
}

fn cert_bytes(i: u32, expires_ms: Option<u64>) -> Vec<u8> {
    cert(i, expires_ms).encode()
}

fn revocation(i: u32) -> Vec<u8> {
    operator().revoke(key(i), 10).encode()
}

fn closed_config() -> Config {
    Config {
        operator: Some(operator().id()),
        ..Config::default()
    }
}

fn closed_with(config: Config) -> M {
    Admission::new(config, key(ME), Some(cert(ME, None)))
}

fn closed() -> M {
    closed_with(closed_config())
}

fn open() -> M {
    Admission::new(Config::default(), key(ME), None)
}

/// The commands of one event, without timer updates.
fn step(m: &mut M, now: u64, event: Event<u32>) -> Vec<Cmd> {
    m.handle(now, event)
        .into_iter()
        .filter(|c| !matches!(c, Command::ArmTimer { .. }))
        .collect()
}

fn connect(m: &mut M, now: u64, peer: u32) -> Vec<Cmd> {
    step(
        m,
        now,
        Event::Connected {
            peer,
            node: key(peer),
        },
    )
}

fn present(m: &mut M, now: u64, peer: u32, certificate: Vec<u8>) -> Vec<Cmd> {
    step(m, now, Event::Presented { peer, certificate })
}

/// A closed-mesh machine with `peers` admitted at 0 (certificates that
/// never expire).
fn admitted(peers: &[u32]) -> M {
    let mut m = closed();
    for &p in peers {
        connect(&mut m, 0, p);
        assert_eq!(present(&mut m, 0, p, cert_bytes(p, None)), admit(p));
    }
    m
}

fn admit(peer: u32) -> Vec<Cmd> {
    vec![Command::Admit { peer }]
}

fn disconnect(peer: u32, reason: Reason) -> Vec<Cmd> {
    vec![Command::Disconnect { peer, reason }]
}

fn from_peer(peer: u32, revocation: Vec<u8>) -> Event<u32> {
    Event::Revocation {
        from: Some(peer),
        revocation,
    }
}

fn misbehaved(peer: u32) -> Event<u32> {
    Event::Misbehaved {
        peer,
        what: "bad signature",
    }
}

fn with_limits(limits: Limits) -> Config {
    Config {
        limits,
        ..closed_config()
    }
}

// ---- certificates and revocations -----------------------------------------

#[test]
fn certificates_round_trip_in_binary_and_text() {
    let op = operator();
    let long_region = "r".repeat(64);
    for (region, expires) in [
        ("eu-west", None),
        ("", Some(5)),
        (long_region.as_str(), Some(u64::MAX)),
        ("Zürich – 北", Some(DAY)),
    ] {
        let c = op.admit(key(7), region, 3, expires).unwrap();
        let bytes = c.encode();
        assert_eq!(bytes.len(), MIN_CERTIFICATE_BYTES + region.len());
        assert_eq!(&bytes[..4], b"HSC1");
        assert_eq!(Certificate::decode(&bytes).unwrap(), c);
        assert_eq!(Certificate::from_text(&c.to_text()).unwrap(), c);
        assert_eq!(c.verify(&op.id()), Ok(()));
    }
    let full = op.admit(key(7), &long_region, 3, None).unwrap();
    assert_eq!(full.encode().len(), MAX_CERTIFICATE_BYTES);
    assert!(full.to_text().len() <= MAX_CERTIFICATE_TEXT);
}

#[test]
fn revocations_round_trip_in_binary_and_text() {
    let r = operator().revoke(key(7), 42);
    let bytes = r.encode();
    assert_eq!(bytes.len(), REVOCATION_BYTES);
    assert_eq!(&bytes[..4], b"HSR1");
    assert_eq!(Revocation::decode(&bytes).unwrap(), r);
    assert_eq!(Revocation::from_text(&r.to_text()).unwrap(), r);
    assert_eq!(r.verify(&operator().id()), Ok(()));
    assert!(matches!(
        r.verify(&stranger().id()),
        Err(CertError::WrongOperator { .. })
    ));
}

#[test]
fn admit_refuses_bad_regions_and_expiries() {
    let op = operator();
    for region in ["r".repeat(65), "eu\nwest".into(), "\u{7f}".into()] {
        let e = op.admit(key(7), &region, 0, None).unwrap_err();
        assert!(matches!(e, CertError::BadRegion { .. }), "{region:?}: {e}");
    }
    let e = op.admit(key(7), "eu", 10, Some(10)).unwrap_err();
    assert_eq!(
        e,
        CertError::BadExpiry {
            issued_ms: 10,
            expires_ms: 10
        }
    );
    assert!(e.to_string().contains("not after its issue time"), "{e}");
}

#[test]
fn verify_refuses_other_operators_and_any_changed_field() {
    let c = cert(7, Some(DAY));
    let e = c.verify(&stranger().id()).unwrap_err();
    assert!(matches!(e, CertError::WrongOperator { .. }));
    assert!(e.to_string().contains("not by this mesh's operator"), "{e}");
    // Signed by a stranger but claiming the operator: the signature fails.
    let mut forged = stranger().admit(key(7), "eu-west", 0, None).unwrap();
    forged.operator = operator().id();
    assert!(matches!(
        forged.verify(&operator().id()),
        Err(CertError::BadSignature { .. })
    ));
    let changes: [fn(&mut Certificate); 5] = [
        |c| c.node = key(8),
        |c| c.region = "us-east".into(),
        |c| c.issued_ms += 1,
        |c| c.expires_ms = None,
        |c| c.signature[0] ^= 1,
    ];
    for change in changes {
        let mut changed = c.clone();
        change(&mut changed);
        assert!(matches!(
            changed.verify(&operator().id()),
            Err(CertError::BadSignature { .. })
        ));
    }
    // A region set by hand past the bound never verifies (nor panics).
    let mut long = c.clone();
    long.region = "r".repeat(300);
    assert!(long.verify(&operator().id()).is_err());
    assert!(
        Certificate::decode(&long.encode())
            .unwrap()
            .verify(&operator().id())
            .is_err()
    );
}

#[test]
fn decode_refuses_every_bad_shape() {
    let good = cert_bytes(7, None); // region "eu-west", 7 bytes
    let region_at = 4 + 32 + 32 + 8 + 8;
    let what = |bytes: &[u8]| Certificate::decode(bytes).unwrap_err();

    let mut long = good.clone();
    long.resize(MAX_CERTIFICATE_BYTES + 1, 0);
    assert!(matches!(
        what(&long),
        CertError::TooLong {
            len: 214,
            max: 213,
            ..
        }
    ));
    assert!(matches!(what(&good[..100]), CertError::Truncated { .. }));
    assert!(matches!(what(&[]), CertError::Truncated { .. }));
    let mut magic = good.clone();
    magic[3] = b'2';
    assert!(matches!(what(&magic), CertError::BadMagic { .. }));
    let mut region_len = good.clone();
    region_len[region_at] = 65;
    assert!(matches!(what(&region_len), CertError::BadRegion { .. }));
    region_len[region_at] = 8;
    assert!(matches!(what(&region_len), CertError::Truncated { .. }));
    let mut trailing = good.clone();
    trailing.push(0);
    assert!(matches!(
        what(&trailing),
        CertError::TrailingBytes { extra: 1, .. }
    ));
    let mut utf8 = good.clone();
    utf8[region_at + 1] = 0xff;
    assert!(matches!(what(&utf8), CertError::BadRegion { .. }));
    let mut control = good.clone();
    control[region_at + 1] = b'\t';
    assert!(matches!(what(&control), CertError::BadRegion { .. }));
    // A revocation is not a certificate, nor the other way round.
    assert!(Certificate::decode(&revocation(7)).is_err());
    assert!(Revocation::decode(&good).is_err());
}

#[test]
fn revocation_decode_refuses_bad_shapes() {
    let good = revocation(7);
    let e = Revocation::decode(&good[..REVOCATION_BYTES - 1]).unwrap_err();
    assert!(matches!(e, CertError::Truncated { .. }));
    let mut long = good.clone();
    long.push(0);
    assert!(matches!(
        Revocation::decode(&long),
        Err(CertError::TooLong { .. })
    ));
    let mut magic = good.clone();
    magic[0] = b'X';
    assert!(matches!(
        Revocation::decode(&magic),
        Err(CertError::BadMagic { .. })
    ));
    let mut flipped = good.clone();
    flipped[50] ^= 1;
    let decoded = Revocation::decode(&flipped).unwrap();
    assert!(matches!(
        decoded.verify(&operator().id()),
        Err(CertError::BadSignature { .. })
    ));
}

#[test]
fn text_forms_trim_whitespace_and_are_bounded() {
    let c = cert(7, Some(DAY));
    let padded = format!("  {}\n", c.to_text());
    assert_eq!(Certificate::from_text(&padded).unwrap(), c);
    let e = Certificate::from_text(&"A".repeat(MAX_CERTIFICATE_TEXT + 1)).unwrap_err();
    assert!(matches!(e, CertError::TooLong { .. }), "{e}");
    let e = Certificate::from_text("not base64!").unwrap_err();
    assert!(matches!(e, CertError::BadText { .. }), "{e}");
    assert!(e.to_string().contains("base64url"), "{e}");
    // Padding is refused: one canonical text per certificate.
    let e = Certificate::from_text(&format!("{}=", c.to_text())).unwrap_err();
    assert!(matches!(e, CertError::BadText { .. }), "{e}");
    let r = operator().revoke(key(7), 1);
    assert_eq!(
        Revocation::from_text(&format!("\t{}  ", r.to_text())).unwrap(),
        r
    );
    assert!(Revocation::from_text(&c.to_text()).is_err());
}

#[test]
fn operator_ids_have_a_hex_text_form() {
    let id = operator().id();
    let text = id.to_string();
    assert_eq!(text.len(), 64);
    assert_eq!(text, key(200).to_string());
    assert_eq!(text.parse::<OperatorId>().unwrap(), id);
    assert_eq!(format!(" {text}\n").parse::<OperatorId>().unwrap(), id);
    assert!(text.to_uppercase().parse::<OperatorId>().is_err());
    let e = "abcd".parse::<OperatorId>().unwrap_err();
    assert!(e.to_string().starts_with("operator id"), "{e}");
    assert_eq!(format!("{id:?}"), format!("OperatorId({})", &text[..12]));
}

#[test]
fn operator_keys_save_and_load() {
    let path =
        std::env::temp_dir().join(format!("hearsay-admission-test-{}.key", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let op = OperatorKey::generate();
    op.save(&path).unwrap();
    let loaded = OperatorKey::load(&path);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(loaded.unwrap().id(), op.id());
}

#[test]
fn validity_ends_at_the_expiry_exactly() {
    let c = cert(7, Some(1_000));
    assert!(c.valid_at(0));
    assert!(c.valid_at(999));
    assert!(!c.valid_at(1_000));
    assert!(cert(7, None).valid_at(u64::MAX));
}

#[test]
fn reasons_have_distinct_snake_case_labels() {
    let labels: std::collections::BTreeSet<_> = Reason::ALL.iter().map(Reason::as_str).collect();
    assert_eq!(labels.len(), Reason::ALL.len());
    for l in labels {
        assert!(
            l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{l}"
        );
    }
    assert_eq!(Reason::NotAdmitted.to_string(), "not_admitted");
}

// ---- open mesh --------------------------------------------------------------

#[test]
fn an_open_mesh_admits_at_once() {
    let mut m = open();
    assert!(m.is_open());
    assert_eq!(
        m.handle(
            0,
            Event::Connected {
                peer: 2,
                node: key(2)
            }
        ),
        admit(2)
    );
    assert!(m.is_admitted(&2));
    assert_eq!(m.check(0, &2, Kind::Gossip, 100), Check::Pass);
    assert_eq!(m.origin_allowed(0, &key(9)), Ok(()));
    // A second report of the same connection changes nothing.
    assert_eq!(connect(&mut m, 1, 2), vec![]);
}

#[test]
fn an_open_mesh_refuses_equivocators_and_banned_peers() {
    let mut m = open();
    assert_eq!(step(&mut m, 0, Event::Equivocated { node: key(2) }), vec![]);
    assert_eq!(connect(&mut m, 0, 2), disconnect(2, Reason::Equivocated));
    assert_eq!(m.origin_allowed(0, &key(2)), Err(Reason::Equivocated));
    let mut m = Admission::new(
        Config {
            limits: Limits {
                strikes: 1,
                ..Limits::default()
            },
            ..Config::default()
        },
        key(ME),
        None,
    );
    connect(&mut m, 0, 3);
    assert_eq!(
        step(&mut m, 0, misbehaved(3)),
        disconnect(3, Reason::Misbehaved)
    );
    assert_eq!(connect(&mut m, 10, 3), disconnect(3, Reason::Banned));
}

#[test]
fn an_open_mesh_ignores_certificates_and_revocations() {
    let mut m = open();
    connect(&mut m, 0, 2);
    assert_eq!(present(&mut m, 0, 2, b"junk".to_vec()), vec![]);
    assert_eq!(present(&mut m, 0, 2, cert_bytes(2, None)), vec![]);
    let learned = Event::Learned {
        certificate: b"junk".to_vec(),
    };
    assert_eq!(step(&mut m, 0, learned), vec![]);
    assert_eq!(step(&mut m, 0, from_peer(2, revocation(2))), vec![]);
    assert_eq!(step(&mut m, 0, from_peer(2, b"junk".to_vec())), vec![]);
    let restored = Event::Restored {
        revocations: vec![revocation(2)],
        equivocators: vec![],
    };
    assert_eq!(step(&mut m, 0, restored), vec![]);
    assert!(m.is_admitted(&2));
    assert_eq!(m.revocations().count(), 0);
    assert_eq!(m.peers().next().unwrap().1.strikes, 0);
}

// ---- closed mesh: handshake -------------------------------------------------

#[test]
fn a_closed_mesh_presents_and_waits_for_a_certificate() {
    let mut m = closed();
    assert!(!m.is_open());
    assert_eq!(
        m.handle(
            100,
            Event::Connected {
                peer: 2,
                node: key(2)
            }
        ),
        vec![
            Command::Present { peer: 2 },
            Command::ArmTimer { at: 5_100 }
        ]
    );
    assert!(!m.is_admitted(&2));
    assert_eq!(step(&mut m, 5_099, Event::Tick), vec![]);
    assert_eq!(
        step(&mut m, 5_100, Event::Tick),
        disconnect(2, Reason::NotAdmitted)
    );
    // Slow is not malicious: no ban.
    assert_eq!(m.banned(5_100), 0);
    assert_eq!(
        connect(&mut m, 5_200, 2),
        vec![Command::Present { peer: 2 }]
    );
}

#[test]
fn a_valid_certificate_admits_once() {
    let mut m = closed();
    connect(&mut m, 0, 2);
    assert_eq!(present(&mut m, 10, 2, cert_bytes(2, None)), admit(2));
    assert!(m.is_admitted(&2));
    assert_eq!(present(&mut m, 20, 2, cert_bytes(2, None)), vec![]);
    // The handshake deadline no longer applies.
    assert_eq!(step(&mut m, 10_000, Event::Tick), vec![]);
    assert!(m.is_admitted(&2));
    assert_eq!(m.origin_allowed(10_000, &key(2)), Ok(()));
}

#[test]
fn a_bad_certificate_disconnects_and_bans() {
    let mut tampered = cert_bytes(2, None);
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let cases = [
        (b"junk".to_vec(), Reason::BadCertificate),
        (tampered, Reason::BadCertificate),
        (
            stranger().admit(key(2), "eu", 0, None).unwrap().encode(),
            Reason::WrongOperator,
        ),
        (cert_bytes(3, None), Reason::WrongNode),
        (cert_bytes(2, Some(1_000)), Reason::Expired),
    ];
    for (certificate, reason) in cases {
        let mut m = closed();
        connect(&mut m, 0, 2);
        assert_eq!(
            present(&mut m, 1_000, 2, certificate),
            disconnect(2, reason),
            "{reason}"
        );
        assert!(!m.is_admitted(&2));
        assert_eq!(m.banned(1_000), 1);
        assert_eq!(connect(&mut m, 2_000, 2), disconnect(2, Reason::Banned));
        // Messages of the closed connection still in flight are dropped.
        assert_eq!(
            m.check(2_000, &2, Kind::Gossip, 10),
            Check::Drop(Reason::Banned)
        );
    }
}

#[test]
fn a_presentation_from_an_unknown_peer_is_ignored() {
    let mut m = closed();
    assert_eq!(present(&mut m, 0, 2, cert_bytes(2, None)), vec![]);
    assert_eq!(present(&mut m, 0, 2, b"junk".to_vec()), vec![]);
    assert_eq!(m.banned(0), 0);
    // Nor does it count as a learnt certificate.
    assert_eq!(m.origin_allowed(0, &key(2)), Err(Reason::NotAdmitted));
}

#[test]
fn an_admitted_peer_is_disconnected_when_its_certificate_expires() {
    let mut m = closed();
    connect(&mut m, 0, 2);
    assert_eq!(
        m.handle(
            10,
            Event::Presented {
                peer: 2,
                certificate: cert_bytes(2, Some(DAY))
            }
        ),
        vec![Command::Admit { peer: 2 }, Command::ArmTimer { at: DAY }]
    );
    assert_eq!(step(&mut m, DAY - 1, Event::Tick), vec![]);
    assert_eq!(
        step(&mut m, DAY, Event::Tick),
        disconnect(2, Reason::Expired)
    );
    assert_eq!(m.origin_allowed(DAY, &key(2)), Err(Reason::Expired));
}

#[test]
fn a_renewed_certificate_pushes_the_expiry_back() {
    let mut m = closed();
    connect(&mut m, 0, 2);
    present(&mut m, 10, 2, cert_bytes(2, Some(DAY)));
    let renewed = operator()
        .admit(key(2), "eu-west", 5, Some(2 * DAY))
        .unwrap();
    assert_eq!(
        m.handle(
            100,
            Event::Presented {
                peer: 2,
                certificate: renewed.encode()
            }
        ),
        vec![Command::ArmTimer { at: 2 * DAY }]
    );
    assert_eq!(step(&mut m, DAY, Event::Tick), vec![]);
    assert_eq!(m.origin_allowed(DAY, &key(2)), Ok(()));
    // An older certificate does not shorten it.
    assert_eq!(
        present(&mut m, DAY + 1, 2, cert_bytes(2, Some(DAY + 10))),
        vec![]
    );
    assert_eq!(m.peers().next().unwrap().1.expires_ms, Some(2 * DAY));
}

// ---- origins and learnt certificates ----------------------------------------

#[test]
fn origins_of_a_closed_mesh_need_a_known_valid_certificate() {
    let mut m = closed();
    assert_eq!(m.origin_allowed(0, &key(ME)), Ok(()));
    assert_eq!(m.origin_allowed(0, &key(2)), Err(Reason::NotAdmitted));
    let learned = Event::Learned {
        certificate: cert_bytes(2, Some(1_000)),
    };
    assert_eq!(step(&mut m, 0, learned), vec![]);
    assert_eq!(m.origin_allowed(999, &key(2)), Ok(()));
    assert_eq!(m.origin_allowed(1_000, &key(2)), Err(Reason::Expired));
    // Learning is not admitting: no connection changes.
    assert_eq!(m.peers().count(), 0);
}

#[test]
fn this_node_without_a_valid_own_certificate_is_not_admitted() {
    let m: M = Admission::new(closed_config(), key(ME), None);
    assert_eq!(m.origin_allowed(0, &key(ME)), Err(Reason::NotAdmitted));
    assert!(m.own_certificate().is_none());
    // Another node's certificate, or another operator's, is not its own.
    let m: M = Admission::new(closed_config(), key(ME), Some(cert(2, None)));
    assert!(m.own_certificate().is_none());
    let foreign = stranger().admit(key(ME), "eu", 0, None).unwrap();
    let m: M = Admission::new(closed_config(), key(ME), Some(foreign));
    assert_eq!(m.origin_allowed(0, &key(ME)), Err(Reason::NotAdmitted));
    let m: M = Admission::new(closed_config(), key(ME), Some(cert(ME, Some(50))));
    assert_eq!(m.own_certificate(), Some(&cert(ME, Some(50))));
    assert_eq!(m.origin_allowed(49, &key(ME)), Ok(()));
    assert_eq!(m.origin_allowed(50, &key(ME)), Err(Reason::Expired));
}

#[test]
fn invalid_learnt_certificates_are_refused() {
    let mut m = closed();
    let mut revoked = closed();
    step(
        &mut revoked,
        0,
        Event::Revocation {
            from: None,
            revocation: revocation(2),
        },
    );
    let cases = [
        (&mut m, b"junk".to_vec(), Reason::BadCertificate),
        (
            &mut closed(),
            stranger().admit(key(2), "eu", 0, None).unwrap().encode(),
            Reason::WrongOperator,
        ),
        (&mut closed(), cert_bytes(2, Some(5)), Reason::Expired),
        (&mut revoked, cert_bytes(2, None), Reason::Revoked),
    ];
    for (m, certificate, reason) in cases {
        assert_eq!(
            step(m, 10, Event::Learned { certificate }),
            vec![Command::Refused { reason }]
        );
        assert!(m.origin_allowed(10, &key(2)).is_err());
    }
}

#[test]
fn learnt_certificates_are_bounded_expired_then_soonest_evicted() {
    let mut m = closed_with(with_limits(Limits {
        max_certificates: 2,
        ..Limits::default()
    }));
    let learn = |m: &mut M, now, i, expires| {
        let certificate = cert_bytes(i, expires);
        assert_eq!(step(m, now, Event::Learned { certificate }), vec![]);
    };
    learn(&mut m, 0, 2, Some(100));
    learn(&mut m, 0, 3, Some(1_000));
    // Full: 2 has expired by 200, so it goes.
    learn(&mut m, 200, 4, None);
    assert_eq!(m.origin_allowed(200, &key(3)), Ok(()));
    assert_eq!(m.origin_allowed(200, &key(4)), Ok(()));
    // Full, nothing expired: 3 expires soonest, so it goes.
    learn(&mut m, 300, 5, Some(5_000));
    assert_eq!(m.origin_allowed(300, &key(3)), Err(Reason::NotAdmitted));
    assert_eq!(m.origin_allowed(300, &key(4)), Ok(()));
    assert_eq!(m.origin_allowed(300, &key(5)), Ok(()));
    // The same node again takes no room, and keeps the later expiry.
    learn(&mut m, 300, 5, Some(4_000));
    assert_eq!(m.origin_allowed(4_500, &key(5)), Ok(()));
    assert_eq!(m.origin_allowed(4_500, &key(4)), Ok(()));
}

// ---- revocations ------------------------------------------------------------

#[test]
fn a_new_revocation_is_kept_published_and_applied() {
    let mut m = admitted(&[2, 3]);
    let rev = revocation(2);
    assert_eq!(
        step(&mut m, 50, from_peer(3, rev.clone())),
        vec![
            Command::Persist {
                revocation: rev.clone()
            },
            Command::Publish {
                revocation: rev.clone()
            },
            Command::Disconnect {
                peer: 2,
                reason: Reason::Revoked
            },
        ]
    );
    assert_eq!(m.origin_allowed(50, &key(2)), Err(Reason::Revoked));
    assert_eq!(
        m.revocations().map(Revocation::encode).collect::<Vec<_>>(),
        vec![rev.clone()]
    );
    // Known: nothing to do, whoever sends it.
    assert_eq!(step(&mut m, 60, from_peer(3, rev.clone())), vec![]);
    let again = Event::Revocation {
        from: None,
        revocation: rev,
    };
    assert_eq!(step(&mut m, 60, again), vec![]);
    // A later revocation of the same node is not new either.
    let later = operator().revoke(key(2), 99).encode();
    assert_eq!(step(&mut m, 70, from_peer(3, later)), vec![]);
    assert_eq!(connect(&mut m, 80, 2), disconnect(2, Reason::Revoked));
    assert!(m.is_admitted(&3));
}

#[test]
fn a_revocation_from_the_operator_api_is_published() {
    let mut m = admitted(&[2]);
    let rev = revocation(4);
    let event = Event::Revocation {
        from: None,
        revocation: rev.clone(),
    };
    assert_eq!(
        step(&mut m, 0, event),
        vec![
            Command::Persist {
                revocation: rev.clone()
            },
            Command::Publish { revocation: rev },
        ]
    );
}

#[test]
fn a_revocation_before_the_certificate_still_applies() {
    let mut m = closed();
    step(
        &mut m,
        0,
        Event::Revocation {
            from: None,
            revocation: revocation(2),
        },
    );
    assert_eq!(m.origin_allowed(0, &key(2)), Err(Reason::Revoked));
    let learned = Event::Learned {
        certificate: cert_bytes(2, None),
    };
    assert_eq!(
        step(&mut m, 0, learned),
        vec![Command::Refused {
            reason: Reason::Revoked
        }]
    );
    assert_eq!(m.origin_allowed(0, &key(2)), Err(Reason::Revoked));
    // A connection of the key is refused outright.
    assert_eq!(connect(&mut m, 0, 2), disconnect(2, Reason::Revoked));
}

#[test]
fn a_revocation_during_the_handshake_refuses_the_certificate() {
    let mut m = closed();
    connect(&mut m, 0, 2);
    connect(&mut m, 0, 3);
    let rev = revocation(2);
    assert_eq!(
        step(&mut m, 5, from_peer(3, rev.clone())),
        vec![
            Command::Persist {
                revocation: rev.clone()
            },
            Command::Publish { revocation: rev },
            Command::Disconnect {
                peer: 2,
                reason: Reason::Revoked
            },
        ]
    );
    // The pending peer is gone, so a late presentation is ignored.
    assert_eq!(present(&mut m, 6, 2, cert_bytes(2, None)), vec![]);
    // A revoked key's certificate shown by another key is not its own.
    connect(&mut m, 7, 4);
    assert_eq!(
        present(&mut m, 8, 4, cert_bytes(2, None)),
        disconnect(4, Reason::WrongNode)
    );
}

#[test]
fn an_invalid_revocation_from_a_peer_is_a_strike() {
    let mut m = closed_with(with_limits(Limits {
        strikes: 3,
        ..Limits::default()
    }));
    connect(&mut m, 0, 2);
    let mut forged = revocation(3);
    forged[100] ^= 1;
    let foreign = stranger().revoke(key(3), 1).encode();
    let refused = |reason| vec![Command::Refused { reason }];
    assert_eq!(
        step(&mut m, 1, from_peer(2, forged.clone())),
        refused(Reason::BadCertificate)
    );
    assert_eq!(
        step(&mut m, 2, from_peer(2, foreign.clone())),
        refused(Reason::WrongOperator)
    );
    assert_eq!(m.peers().next().unwrap().1.strikes, 2);
    // From the operator API: refused, no strike.
    let local = Event::Revocation {
        from: None,
        revocation: b"junk".to_vec(),
    };
    assert_eq!(step(&mut m, 3, local), refused(Reason::BadCertificate));
    assert_eq!(m.peers().next().unwrap().1.strikes, 2);
    let mut third = refused(Reason::BadCertificate);
    third.extend(disconnect(2, Reason::Misbehaved));
    assert_eq!(step(&mut m, 4, from_peer(2, b"junk".to_vec())), third);
    assert_eq!(m.banned(4), 1);
    assert_eq!(m.revocations().count(), 0);
    assert_eq!(m.origin_allowed(4, &key(3)), Err(Reason::NotAdmitted));
}

#[test]
fn revocations_are_bounded_and_never_evicted() {
    let mut m = closed_with(with_limits(Limits {
        max_revocations: 2,
        ..Limits::default()
    }));
    connect(&mut m, 0, 9);
    for i in [2, 3] {
        assert_eq!(step(&mut m, 0, from_peer(9, revocation(i))).len(), 2);
    }
    assert_eq!(
        step(&mut m, 0, from_peer(9, revocation(4))),
        vec![Command::Refused {
            reason: Reason::Revoked
        }]
    );
    assert_eq!(m.revocations().count(), 2);
    assert_eq!(step(&mut m, 0, from_peer(9, revocation(2))), vec![]);
    assert_eq!(m.origin_allowed(0, &key(2)), Err(Reason::Revoked));
    assert_eq!(m.origin_allowed(0, &key(3)), Err(Reason::Revoked));
    // A valid revocation past the bound is not the peer's fault.
    assert_eq!(m.peers().next().unwrap().1.strikes, 0);
}

#[test]
fn restored_state_applies_without_persisting_again() {
    let mut m = admitted(&[3]);
    let restored = Event::Restored {
        revocations: vec![revocation(2), b"junk".to_vec(), revocation(3)],
        equivocators: vec![key(4)],
    };
    assert_eq!(
        step(&mut m, 0, restored),
        vec![
            Command::Refused {
                reason: Reason::BadCertificate
            },
            Command::Disconnect {
                peer: 3,
                reason: Reason::Revoked
            },
        ]
    );
    assert_eq!(m.revocations().count(), 2);
    assert_eq!(m.origin_allowed(0, &key(2)), Err(Reason::Revoked));
    assert_eq!(m.origin_allowed(0, &key(4)), Err(Reason::Equivocated));
    assert_eq!(m.equivocators().collect::<Vec<_>>(), vec![&key(4)]);
    // Already known when it comes round by gossip: not published again.
    assert_eq!(
        step(
            &mut m,
            1,
            Event::Revocation {
                from: None,
                revocation: revocation(2)
            }
        ),
        vec![]
    );
}

// ---- equivocation and strikes -----------------------------------------------

#[test]
fn an_equivocator_is_disconnected_and_its_deltas_refused() {
    let mut m = admitted(&[2, 3]);
    assert_eq!(
        step(&mut m, 0, Event::Equivocated { node: key(2) }),
        disconnect(2, Reason::Equivocated)
    );
    assert_eq!(m.origin_allowed(0, &key(2)), Err(Reason::Equivocated));
    assert_eq!(connect(&mut m, 1, 2), disconnect(2, Reason::Equivocated));
    // Its certificate no longer admits it either, on any connection.
    assert_eq!(step(&mut m, 1, Event::Equivocated { node: key(2) }), vec![]);
    assert!(m.is_admitted(&3));

    let mut m = open();
    connect(&mut m, 0, 5);
    assert_eq!(
        step(&mut m, 0, Event::Equivocated { node: key(5) }),
        disconnect(5, Reason::Equivocated)
    );
}

#[test]
fn strikes_within_the_window_disconnect_and_ban() {
    let mut m = closed_with(with_limits(Limits {
        strikes: 3,
        strike_window_ms: 1_000,
        ..Limits::default()
    }));
    connect(&mut m, 0, 2);
    // Spread wider than the window: never three at once.
    for at in [0, 600, 1_200, 1_800] {
        assert_eq!(step(&mut m, at, misbehaved(2)), vec![], "at {at}");
    }
    assert_eq!(m.peers().next().unwrap().1.strikes, 2);
    assert_eq!(
        step(&mut m, 1_900, misbehaved(2)),
        disconnect(2, Reason::Misbehaved)
    );
    assert_eq!(m.banned(1_900), 1);
    assert!(m.peers().next().is_none());
    // Strikes against a peer not connected are ignored.
    assert_eq!(step(&mut m, 1_900, misbehaved(7)), vec![]);
}

#[test]
fn a_disconnection_forgets_strikes_but_not_bans() {
    let mut m = closed_with(with_limits(Limits {
        strikes: 2,
        ..Limits::default()
    }));
    connect(&mut m, 0, 2);
    step(&mut m, 0, misbehaved(2));
    step(&mut m, 0, Event::Disconnected { peer: 2 });
    connect(&mut m, 1, 2);
    assert_eq!(step(&mut m, 1, misbehaved(2)), vec![]);
    assert_eq!(
        step(&mut m, 2, misbehaved(2)),
        disconnect(2, Reason::Misbehaved)
    );
    step(&mut m, 3, Event::Disconnected { peer: 2 });
    assert_eq!(connect(&mut m, 4, 2), disconnect(2, Reason::Banned));
}

#[test]
fn a_ban_ends_after_ban_ms() {
    let mut m = closed();
    connect(&mut m, 0, 2);
    assert_eq!(
        m.handle(
            100,
            Event::Presented {
                peer: 2,
                certificate: b"junk".to_vec()
            }
        ),
        vec![
            Command::Disconnect {
                peer: 2,
                reason: Reason::BadCertificate
            },
            Command::ArmTimer { at: 60_100 },
        ]
    );
    assert_eq!(connect(&mut m, 60_099, 2), disconnect(2, Reason::Banned));
    assert_eq!(m.banned(60_099), 1);
    assert_eq!(m.handle(60_100, Event::Tick), vec![]);
    assert_eq!(m.banned(60_100), 0);
    assert_eq!(
        connect(&mut m, 60_100, 2),
        vec![Command::Present { peer: 2 }]
    );
    assert_eq!(present(&mut m, 60_200, 2, cert_bytes(2, None)), admit(2));
}

#[test]
fn bans_are_bounded_soonest_ending_evicted() {
    let mut m = closed();
    let n = MAX_BANS as u32 + 1;
    // Peer 10 is banned first and its ban ends first; the rest end
    // together a millisecond later.
    for p in 10..10 + n {
        let now = u64::from(p > 10);
        m.handle(
            now,
            Event::Connected {
                peer: p,
                // Any key will do (deriving 65k real ones is slow).
                node: NodeId([p as u8; 32]),
            },
        );
        m.handle(
            now,
            Event::Presented {
                peer: p,
                certificate: vec![],
            },
        );
    }
    assert_eq!(m.banned(1), MAX_BANS);
    // The ban ending soonest made room for the last.
    assert_eq!(connect(&mut m, 2, 10), vec![Command::Present { peer: 10 }]);
    assert_eq!(connect(&mut m, 2, 11), disconnect(11, Reason::Banned));
    assert_eq!(connect(&mut m, 2, 9 + n), disconnect(9 + n, Reason::Banned));
}

// ---- budgets ----------------------------------------------------------------

fn budget(limits: Limits) -> M {
    let mut m = closed_with(with_limits(limits));
    connect(&mut m, 0, 2);
    present(&mut m, 0, 2, cert_bytes(2, None));
    m
}

#[test]
fn the_message_budget_is_a_token_bucket() {
    let mut m = budget(Limits {
        messages_per_s: 10,
        burst_s: 1,
        ..Limits::default()
    });
    for i in 0..10 {
        assert_eq!(
            m.check(0, &2, Kind::Gossip, 100),
            Check::Pass,
            "message {i}"
        );
    }
    assert_eq!(
        m.check(0, &2, Kind::Gossip, 100),
        Check::Drop(Reason::MessageRate)
    );
    // 100 ms refill one token.
    assert_eq!(m.check(100, &2, Kind::Status, 100), Check::Pass);
    assert_eq!(
        m.check(100, &2, Kind::Status, 100),
        Check::Drop(Reason::MessageRate)
    );
    // A second refills the bucket...
    for i in 0..10 {
        assert_eq!(
            m.check(1_100, &2, Kind::Registry, 1),
            Check::Pass,
            "message {i}"
        );
    }
    assert_eq!(
        m.check(1_100, &2, Kind::Registry, 1),
        Check::Drop(Reason::MessageRate)
    );
    // ...and no more than the bucket.
    let passed = (0..20)
        .filter(|_| m.check(60_000, &2, Kind::Gossip, 1) == Check::Pass)
        .count();
    assert_eq!(passed, 10);
    // One strike per drop; the three earlier ones left the window.
    assert_eq!(m.peers().next().unwrap().1.strikes, 10);
}

#[test]
fn the_burst_is_seconds_of_rate() {
    let mut m = budget(Limits {
        messages_per_s: 10,
        burst_s: 3,
        ..Limits::default()
    });
    let passed = (0..40)
        .filter(|_| m.check(0, &2, Kind::Gossip, 1) == Check::Pass)
        .count();
    assert_eq!(passed, 30);
}

#[test]
fn the_byte_budget_is_a_token_bucket() {
    let mut m = budget(Limits {
        bytes_per_s: 1_000,
        burst_s: 1,
        ..Limits::default()
    });
    assert_eq!(m.check(0, &2, Kind::Gossip, 600), Check::Pass);
    assert_eq!(
        m.check(0, &2, Kind::Gossip, 600),
        Check::Drop(Reason::ByteRate)
    );
    assert_eq!(m.check(0, &2, Kind::Gossip, 400), Check::Pass);
    assert_eq!(
        m.check(0, &2, Kind::Gossip, 1),
        Check::Drop(Reason::ByteRate)
    );
    assert_eq!(m.check(500, &2, Kind::Gossip, 500), Check::Pass);
    // Bigger than the bucket: never passes.
    assert_eq!(
        m.check(60_000, &2, Kind::Gossip, 1_001),
        Check::Drop(Reason::ByteRate)
    );
}

#[test]
fn sync_requests_have_their_own_budget() {
    let mut m = budget(Limits {
        sync_requests_per_s: 2,
        burst_s: 1,
        ..Limits::default()
    });
    assert_eq!(m.check(0, &2, Kind::SyncRequest, 50), Check::Pass);
    assert_eq!(m.check(0, &2, Kind::SyncRequest, 50), Check::Pass);
    assert_eq!(
        m.check(0, &2, Kind::SyncRequest, 50),
        Check::Drop(Reason::SyncRate)
    );
    assert_eq!(m.check(0, &2, Kind::Gossip, 50), Check::Pass);
    assert_eq!(m.check(500, &2, Kind::SyncRequest, 50), Check::Pass);
}

#[test]
fn only_the_hello_passes_before_admission() {
    let mut m = closed();
    connect(&mut m, 0, 2);
    assert_eq!(
        m.check(0, &2, Kind::Gossip, 10),
        Check::Drop(Reason::NotAdmitted)
    );
    assert_eq!(
        m.check(0, &2, Kind::SyncRequest, 10),
        Check::Drop(Reason::NotAdmitted)
    );
    assert_eq!(m.check(0, &2, Kind::Admission, 10), Check::Pass);
    assert_eq!(m.peers().next().unwrap().1.strikes, 0);
    // Never connected.
    assert_eq!(
        m.check(0, &5, Kind::Admission, 10),
        Check::Drop(Reason::NotAdmitted)
    );
    present(&mut m, 1, 2, cert_bytes(2, None));
    assert_eq!(m.check(1, &2, Kind::Gossip, 10), Check::Pass);
}

#[test]
fn being_over_budget_too_often_disconnects_and_bans() {
    let mut m = budget(Limits {
        messages_per_s: 1,
        burst_s: 1,
        strikes: 3,
        ..Limits::default()
    });
    assert_eq!(m.check(0, &2, Kind::Gossip, 1), Check::Pass);
    assert_eq!(
        m.check(0, &2, Kind::Gossip, 1),
        Check::Drop(Reason::MessageRate)
    );
    assert_eq!(
        m.check(0, &2, Kind::Gossip, 1),
        Check::Drop(Reason::MessageRate)
    );
    assert_eq!(
        m.check(0, &2, Kind::Gossip, 1),
        Check::Disconnect(Reason::MessageRate)
    );
    assert!(!m.is_admitted(&2));
    assert_eq!(m.check(0, &2, Kind::Gossip, 1), Check::Drop(Reason::Banned));
    // The next event arms the ban's end.
    assert_eq!(
        m.handle(10, Event::Tick),
        vec![Command::ArmTimer { at: 60_000 }]
    );
    assert_eq!(connect(&mut m, 10, 2), disconnect(2, Reason::Banned));
}

#[test]
fn budgets_apply_in_an_open_mesh() {
    let mut m = Admission::new(
        Config {
            limits: Limits {
                sync_requests_per_s: 1,
                burst_s: 1,
                strikes: 1,
                ..Limits::default()
            },
            ..Config::default()
        },
        key(ME),
        None,
    );
    connect(&mut m, 0, 2);
    assert_eq!(m.check(0, &2, Kind::SyncRequest, 1), Check::Pass);
    assert_eq!(
        m.check(0, &2, Kind::SyncRequest, 1),
        Check::Disconnect(Reason::SyncRate)
    );
    assert_eq!(connect(&mut m, 1, 2), disconnect(2, Reason::Banned));
    // Unknown peers are not admitted in an open mesh either.
    assert_eq!(
        m.check(1, &3, Kind::Gossip, 1),
        Check::Drop(Reason::NotAdmitted)
    );
}

// ---- timers and views ---------------------------------------------------------

#[test]
fn the_timer_is_armed_for_the_earliest_deadline_when_it_changes() {
    let mut m = closed();
    let c = |peer| Event::Connected {
        peer,
        node: key(peer),
    };
    assert_eq!(
        m.handle(0, c(2)),
        vec![
            Command::Present { peer: 2 },
            Command::ArmTimer { at: 5_000 }
        ]
    );
    // A later deadline does not move the timer.
    assert_eq!(m.handle(1_000, c(3)), vec![Command::Present { peer: 3 }]);
    // Admitting the first moves it to the second's deadline.
    assert_eq!(
        m.handle(
            2_000,
            Event::Presented {
                peer: 2,
                certificate: cert_bytes(2, None)
            }
        ),
        vec![Command::Admit { peer: 2 }, Command::ArmTimer { at: 6_000 }]
    );
    assert_eq!(
        m.handle(6_000, Event::Tick),
        vec![Command::Disconnect {
            peer: 3,
            reason: Reason::NotAdmitted
        }]
    );
    // Nothing due: no timer, and the next deadline is armed afresh.
    assert_eq!(m.handle(7_000, Event::Tick), vec![]);
    assert_eq!(
        m.handle(8_000, c(4)),
        vec![
            Command::Present { peer: 4 },
            Command::ArmTimer { at: 13_000 }
        ]
    );
}

#[test]
fn a_late_tick_arms_at_now_at_the_earliest() {
    let mut m = closed();
    m.handle(
        0,
        Event::Connected {
            peer: 2,
            node: key(2),
        },
    );
    // Two handshakes overdue: the first tick handles both.
    m.handle(
        1,
        Event::Connected {
            peer: 3,
            node: key(3),
        },
    );
    assert_eq!(
        m.handle(9_000, Event::Tick),
        vec![
            Command::Disconnect {
                peer: 2,
                reason: Reason::NotAdmitted
            },
            Command::Disconnect {
                peer: 3,
                reason: Reason::NotAdmitted
            },
        ]
    );
}

#[test]
fn peers_are_shown_with_their_certificates() {
    let mut m = closed();
    connect(&mut m, 0, 3);
    connect(&mut m, 0, 2);
    present(&mut m, 0, 2, cert_bytes(2, Some(DAY)));
    step(&mut m, 0, misbehaved(3));
    let views: Vec<(u32, PeerView)> = m.peers().map(|(p, v)| (*p, v)).collect();
    assert_eq!(
        views,
        vec![
            (
                2,
                PeerView {
                    node: key(2),
                    admitted: true,
                    region: Some("eu-west".into()),
                    expires_ms: Some(DAY),
                    strikes: 0,
                }
            ),
            (
                3,
                PeerView {
                    node: key(3),
                    admitted: false,
                    region: None,
                    expires_ms: None,
                    strikes: 1,
                }
            ),
        ]
    );
    step(&mut m, 1, Event::Disconnected { peer: 2 });
    assert_eq!(m.peers().count(), 1);
}

#[test]
fn a_graylisted_peer_is_closed_and_banned_at_once() {
    let mut m = closed();
    connect(&mut m, 0, 2);
    assert_eq!(
        step(&mut m, 10, Event::Graylisted { peer: 2 }),
        disconnect(2, Reason::Misbehaved)
    );
    assert_eq!(m.banned(10), 1);
    // Once: the disconnection that follows changes nothing.
    assert_eq!(step(&mut m, 11, Event::Graylisted { peer: 2 }), vec![]);
    step(&mut m, 12, Event::Disconnected { peer: 2 });
    assert_eq!(connect(&mut m, 13, 2), disconnect(2, Reason::Banned));
}
