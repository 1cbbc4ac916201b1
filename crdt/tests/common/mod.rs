//! What the crdt integration tests share: the users they use and a full
//! observation of a replica, to compare replicas with one `assert_eq!`.

#![allow(dead_code)] // each test binary uses a different part

use automerge::ChangeHash;
use hearsay_crdt::{DocId, MemoryDocs, Post, PostId, Profile, Replica, UserName, VersionVector};

/// The users the tests' operations pick from.
pub const USERS: [&str; 3] = ["ann", "bob", "cy"];

/// Everything a client can read from a replica, plus its document heads.
#[derive(Debug, PartialEq)]
pub struct State {
    pub vv: VersionVector,
    pub doc_ids: Vec<DocId>,
    pub heads: Vec<(DocId, Vec<ChangeHash>)>,
    pub newest: Vec<Post>,
    pub posts: Vec<Option<Post>>,
    pub profiles: Vec<Profile>,
    pub user_posts: Vec<Vec<Post>>,
    pub home: Vec<Vec<Post>>,
    pub has_held: bool,
}

/// Reads everything from `r`, including the posts `posts` by id.
pub fn observe(r: &mut Replica<MemoryDocs>, posts: &[PostId]) -> State {
    let doc_ids = r.doc_ids().unwrap();
    let heads = doc_ids
        .iter()
        .map(|d| (d.clone(), r.heads(d).unwrap()))
        .collect();
    let users: Vec<UserName> = USERS.iter().map(|u| UserName::new(u).unwrap()).collect();
    State {
        vv: r.version_vector().clone(),
        doc_ids,
        heads,
        newest: r.newest_posts(500, None).unwrap(),
        posts: posts.iter().map(|p| r.post(*p).unwrap()).collect(),
        profiles: users.iter().map(|u| r.profile(u).unwrap()).collect(),
        user_posts: users
            .iter()
            .map(|u| r.user_posts(u, 500, None).unwrap())
            .collect(),
        home: users
            .iter()
            .map(|u| r.home_timeline(u, 500, None).unwrap())
            .collect(),
        has_held: r.has_held(),
    }
}
