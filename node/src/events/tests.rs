use super::*;
use hearsay_crdt::{DocId, Keypair, MemoryDocs, NewPost, Replica};

fn name(s: &str) -> UserName {
    UserName::new(s).unwrap()
}

/// A replica's post and its delta.
fn post(r: &mut Replica<MemoryDocs>, author: &str, body: &str) -> (Post, Delta) {
    let new = NewPost {
        author: name(author),
        body: body.into(),
        reply_to: None,
    };
    r.create_post(&new, None, 1_700_000_000_000).unwrap()
}

/// A change to a list document of an older version (`public/<bucket>`), as
/// a log written by one still holds: bookkeeping, no event.
fn legacy_list_delta(r: &Replica<MemoryDocs>, seq: u64) -> Delta {
    Delta::sign(r.key(), seq, DocId::Public(1), vec![1, 2, 3], 0).unwrap()
}

fn replica(secret: u8) -> Replica<MemoryDocs> {
    Replica::new(Keypair::from_secret([secret; 32]), MemoryDocs::default()).unwrap()
}

#[test]
fn a_cursor_sends_each_change_once_and_covers_bookkeeping() {
    let mut r = replica(1);
    let (p, created) = post(&mut r, "ann", "hello");
    let deltas = [created, legacy_list_delta(&r, 2)];
    let mut cursor = Cursor::new(VersionVector::new(), Filter::default());
    let steps: Vec<Step> = deltas.iter().map(|d| cursor.step(d)).collect();
    assert_eq!(steps, vec![Step::Send(Change::Post(p.id)), Step::Skip]);
    assert_eq!(cursor.position().get(&r.id()), 2);
    // The same deltas again (a replay overlapping what was sent): nothing.
    let again: Vec<Step> = deltas.iter().map(|d| cursor.step(d)).collect();
    assert_eq!(again, vec![Step::Seen; 2]);
    assert_eq!(cursor.position().get(&r.id()), 2);
}

#[test]
fn a_cursor_refuses_to_skip_a_seq() {
    let mut r = replica(1);
    let (_, first) = post(&mut r, "ann", "one");
    post(&mut r, "ann", "two");
    post(&mut r, "ann", "three");
    let (_, fourth) = post(&mut r, "ann", "four");
    let mut cursor = Cursor::new(VersionVector::new(), Filter::default());
    cursor.step(&first);
    // Seq 2 and 3 are missing from what was read: a gap, named exactly.
    assert_eq!(
        cursor.step(&fourth),
        Step::Gap(Missing {
            origin: r.id().to_string(),
            from: 2,
            to: 3
        })
    );
    assert_eq!(
        cursor.position().get(&r.id()),
        1,
        "the position did not move"
    );
}

#[test]
fn a_resumed_cursor_reads_only_what_its_token_lacks() {
    let (mut a, mut b) = (replica(1), replica(2));
    post(&mut a, "ann", "one");
    post(&mut b, "bob", "two");
    let head: VersionVector = [(a.id(), 3), (b.id(), 3)].into_iter().collect();
    let token: VersionVector = [(a.id(), 2)].into_iter().collect();
    let cursor = Cursor::new(token, Filter::default());
    let mut wanted = cursor.wanted(&head);
    wanted.sort();
    let mut expected = vec![(a.id(), 3, 3), (b.id(), 1, 3)];
    expected.sort();
    assert_eq!(wanted, expected);
    assert!(cursor.ahead_of(&head).is_empty());
}

#[test]
fn a_token_ahead_of_the_node_is_named_origin_by_origin() {
    let (a, b) = (replica(1), replica(2));
    let head: VersionVector = [(a.id(), 5)].into_iter().collect();
    let token: VersionVector = [(a.id(), 4), (b.id(), 7)].into_iter().collect();
    let cursor = Cursor::new(token, Filter::default());
    assert_eq!(
        cursor.ahead_of(&head),
        vec![Ahead {
            origin: b.id().to_string(),
            token_seq: 7,
            node_seq: 0
        }]
    );
    // The rest is still served: origin a from 5; nothing of b.
    assert_eq!(cursor.wanted(&head), vec![(a.id(), 5, 5)]);
}

#[test]
fn filters_drop_kinds_and_authors_but_the_position_moves_on() {
    let mut r = replica(1);
    let follow = r.follow(&name("ann"), &name("bob"), 1).unwrap();
    let other = r.follow(&name("cid"), &name("bob"), 2).unwrap();
    let (p, created) = post(&mut r, "ann", "hello");
    let filter = Filter {
        author: Some(name("ann")),
        kinds: [Kind::Follow].into_iter().collect(),
    };
    let mut cursor = Cursor::new(VersionVector::new(), filter);
    assert_eq!(
        cursor.step(&follow),
        Step::Send(Change::Follow {
            user: name("ann"),
            whom: name("bob")
        })
    );
    assert_eq!(cursor.step(&other), Step::Skip, "another author");
    assert_eq!(cursor.step(&created), Step::Skip, "another kind");
    assert_eq!(cursor.position().get(&r.id()), 3);
    // Post events are checked against their author once the post is read.
    let by_author = Cursor::new(
        VersionVector::new(),
        Filter {
            author: Some(name("bob")),
            kinds: BTreeSet::new(),
        },
    );
    assert!(!by_author.wants_post(Some(&p)));
    assert!(!by_author.wants_post(None));
    assert!(Cursor::new(VersionVector::new(), Filter::default()).wants_post(None));
}

#[test]
fn requests_parse_tokens_and_filters_with_clear_refusals() {
    let q = |from: Option<&str>, author: Option<&str>, kind: Option<&str>| EventsQuery {
        from: from.map(str::to_owned),
        author: author.map(str::to_owned),
        kind: kind.map(str::to_owned),
    };
    let none = HeaderMap::new();
    let (from, filter) = parse_request(&none, &q(None, None, None)).unwrap();
    assert_eq!(from, None, "live only");
    assert_eq!(filter, Filter::default());
    let (from, _) = parse_request(&none, &q(Some("start"), None, None)).unwrap();
    assert_eq!(from, Some(VersionVector::new()));
    let token: VersionVector = [(NodeId([3; 32]), 9)].into_iter().collect();
    let mut headers = HeaderMap::new();
    headers.insert("last-event-id", token.to_token().parse().unwrap());
    // Last-Event-Id (what a reconnecting browser sends) wins over `from`.
    let (from, _) = parse_request(&headers, &q(Some("start"), None, None)).unwrap();
    assert_eq!(from, Some(token));
    let (_, filter) = parse_request(&none, &q(None, Some("ann"), Some("post, follow"))).unwrap();
    assert_eq!(filter.author, Some(name("ann")));
    assert_eq!(
        filter.kinds,
        [Kind::Post, Kind::Follow].into_iter().collect()
    );
    for bad in [
        q(Some("!!"), None, None),
        q(None, Some("no spaces"), None),
        q(None, None, Some("posts")),
    ] {
        assert!(parse_request(&none, &bad).is_err());
    }
}

#[test]
fn read_all_serves_the_log_from_a_token_and_names_a_hole() {
    use crate::store::MemoryStore;
    let mut r = replica(1);
    let log = MemoryStore::default();
    let mut ids = Vec::new();
    for body in ["one", "two", "three"] {
        let (p, delta) = post(&mut r, "ann", body);
        log.append(&[delta]).unwrap();
        ids.push(p.id);
    }
    let head = r.version_vector().clone();
    // From a token that saw the first post: the other two, in order.
    let token: VersionVector = [(r.id(), 1)].into_iter().collect();
    let mut cursor = Cursor::new(token, Filter::default());
    let read = read_all(&log, &mut cursor, &head).unwrap();
    let changes: Vec<Change> = read.iter().map(|(_, c, _)| c.clone()).collect();
    assert_eq!(changes, vec![Change::Post(ids[1]), Change::Post(ids[2])]);
    assert_eq!(read[0].2.get(&r.id()), 2, "each change's token covers it");
    assert_eq!(cursor.position(), &head);
    assert!(read_all(&log, &mut cursor, &head).unwrap().is_empty());

    // A log that lacks seqs 2..=3: an explicit gap, never a skip.
    let holed = MemoryStore::default();
    let mut r2 = replica(2);
    let all: Vec<Delta> = ["one", "two", "three", "four"]
        .iter()
        .map(|body| post(&mut r2, "bob", body).1)
        .collect();
    holed.append(&all[..1]).unwrap();
    holed.append(&all[3..]).unwrap();
    let mut cursor = Cursor::new(VersionVector::new(), Filter::default());
    match read_all(&holed, &mut cursor, r2.version_vector()) {
        Err(ReadError::Gap(missing)) => assert_eq!((missing.from, missing.to), (2, 3)),
        other => panic!("expected a gap, got {other:?}"),
    }
    assert_eq!(
        cursor.position().get(&r2.id()),
        1,
        "stopped before the hole"
    );
}
