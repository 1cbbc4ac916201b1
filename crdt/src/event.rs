//! What a delta means to a reader: the change events of the event stream.
//!
//! A delta is one automerge change of one document; clients want "a post was
//! created, edited, deleted; a user followed or unfollowed someone; a profile
//! changed". [`Change::of`] reads that off the delta itself — its document
//! id and the operations of its change — so the node derives events from its
//! log without loading documents, and a peer cannot make an event say
//! something its change did not do. Bucket deltas (the public and per-user
//! timeline indexes) are bookkeeping and are no event.

use std::fmt;
use std::str::FromStr;

use automerge::ScalarValue;
use automerge::legacy::{Key, ObjectId, OpType};

use crate::delta::Delta;
use crate::error::{Error, Result};
use crate::ids::{DocId, PostId, UserName};

/// The kinds of change event, as named in the stream (`event:` field) and in
/// `?kind=` filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Post,
    Edit,
    Delete,
    Follow,
    Unfollow,
    Profile,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Post,
        Kind::Edit,
        Kind::Delete,
        Kind::Follow,
        Kind::Unfollow,
        Kind::Profile,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Post => "post",
            Kind::Edit => "edit",
            Kind::Delete => "delete",
            Kind::Follow => "follow",
            Kind::Unfollow => "unfollow",
            Kind::Profile => "profile",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown event kind {:?} (one of post, edit, delete, follow, unfollow, profile)",
                    s.chars().take(32).collect::<String>()
                ))
            })
    }
}

/// One change event, derived from one delta.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The first change of a post document: the post was created.
    Post(PostId),
    /// A later change of a post's body.
    Edit(PostId),
    /// The post was tombstoned.
    Delete(PostId),
    Follow {
        user: UserName,
        whom: UserName,
    },
    Unfollow {
        user: UserName,
        whom: UserName,
    },
    /// Display name or public key set.
    Profile(UserName),
}

impl Change {
    /// The event `delta` is, if any; `None` for the list documents of older
    /// versions and for
    /// a change whose bytes do not decode (the replica refuses those anyway).
    pub fn of(delta: &Delta) -> Option<Change> {
        match &delta.doc {
            DocId::Post(id) => Some(Self::of_post(*id, &delta.change)?),
            DocId::Profile(user) => Self::of_profile(user, &delta.change),
            DocId::Public(_) | DocId::Timeline(..) => None,
        }
    }

    fn of_post(id: PostId, bytes: &[u8]) -> Option<Change> {
        let change = automerge::Change::try_from(bytes).ok()?;
        // Only a post's creator writes a change with no dependencies; its
        // ops (the whole body, character by character) need no decoding.
        if change.deps().is_empty() {
            return Some(Change::Post(id));
        }
        let deleted = change.decode().operations.iter().any(|op| {
            matches!(op.obj, ObjectId::Root)
                && matches!(&op.key, Key::Map(k) if k.as_str() == "deleted")
                && matches!(op.action, OpType::Put(ScalarValue::Boolean(true)))
        });
        Some(if deleted {
            Change::Delete(id)
        } else {
            Change::Edit(id)
        })
    }

    fn of_profile(user: &UserName, bytes: &[u8]) -> Option<Change> {
        let change = automerge::Change::try_from(bytes).ok()?;
        let mut profile = false;
        for op in change.decode().operations {
            let (ObjectId::Root, Key::Map(key)) = (&op.obj, &op.key) else {
                continue;
            };
            if let Some(whom) = key
                .strip_prefix(crate::docs::FOLLOW_PREFIX)
                .and_then(|w| UserName::new(w).ok())
            {
                let user = user.clone();
                return Some(match op.action {
                    OpType::Delete => Change::Unfollow { user, whom },
                    _ => Change::Follow { user, whom },
                });
            }
            profile |= matches!(key.as_str(), "display_name" | "public_key");
        }
        profile.then(|| Change::Profile(user.clone()))
    }

    pub fn kind(&self) -> Kind {
        match self {
            Change::Post(_) => Kind::Post,
            Change::Edit(_) => Kind::Edit,
            Change::Delete(_) => Kind::Delete,
            Change::Follow { .. } => Kind::Follow,
            Change::Unfollow { .. } => Kind::Unfollow,
            Change::Profile(_) => Kind::Profile,
        }
    }

    /// The post the event is about.
    pub fn post(&self) -> Option<PostId> {
        match self {
            Change::Post(id) | Change::Edit(id) | Change::Delete(id) => Some(*id),
            _ => None,
        }
    }

    /// The user whose profile changed (the author of a follow).
    pub fn user(&self) -> Option<&UserName> {
        match self {
            Change::Follow { user, .. } | Change::Unfollow { user, .. } | Change::Profile(user) => {
                Some(user)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Keypair, MemoryDocs, NewPost, Replica};

    fn name(s: &str) -> UserName {
        UserName::new(s).unwrap()
    }

    #[test]
    fn every_local_operation_is_the_event_it_did() {
        let mut r = Replica::new(Keypair::from_secret([7; 32]), MemoryDocs::default()).unwrap();
        let new = NewPost {
            author: name("ann"),
            body: "hello".into(),
            reply_to: None,
        };
        let (post, created) = r.create_post(&new, None, 1_700_000_000_000).unwrap();
        assert_eq!(Change::of(&created), Some(Change::Post(post.id)));

        let edit = r.edit_post(post.id, 5, 0, ", world", 1).unwrap();
        assert_eq!(Change::of(&edit), Some(Change::Edit(post.id)));
        let follow = r.follow(&name("ann"), &name("bob"), 2).unwrap();
        assert_eq!(
            Change::of(&follow),
            Some(Change::Follow {
                user: name("ann"),
                whom: name("bob")
            })
        );
        let unfollow = r.unfollow(&name("ann"), &name("bob"), 3).unwrap();
        assert_eq!(
            Change::of(&unfollow),
            Some(Change::Unfollow {
                user: name("ann"),
                whom: name("bob")
            })
        );
        let profile = r.set_profile(&name("ann"), Some("Ann"), None, 4).unwrap();
        assert_eq!(Change::of(&profile), Some(Change::Profile(name("ann"))));
        let delete = r.delete_post(post.id, 5).unwrap();
        assert_eq!(Change::of(&delete), Some(Change::Delete(post.id)));
        assert_eq!(Change::of(&delete).unwrap().kind(), Kind::Delete);
    }

    #[test]
    fn undecodable_change_bytes_are_no_event() {
        let mut r = Replica::new(Keypair::from_secret([7; 32]), MemoryDocs::default()).unwrap();
        let mut follow = r.follow(&name("ann"), &name("bob"), 2).unwrap();
        follow.change = b"not an automerge change".to_vec();
        assert_eq!(Change::of(&follow), None);
    }

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in Kind::ALL {
            assert_eq!(kind.as_str().parse::<Kind>().unwrap(), kind);
        }
        assert!("posts".parse::<Kind>().is_err());
    }
}
