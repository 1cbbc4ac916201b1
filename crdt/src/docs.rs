//! Typed documents on top of automerge.
//!
//! Each document keeps its fields as keys of the root map and never creates a
//! nested object concurrently (only a post's creator makes its body Text), so
//! that replicas initialising the same profile independently merge
//! key by key instead of one object shadowing the other.

use automerge::transaction::Transactable;
use automerge::{Automerge, ObjType, ROOT, ReadDoc, ScalarValue, Value};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::identity::verify;
use crate::ids::{NodeId, PostId, UserName, hex, unhex};
use crate::signing::PostSignature;

/// Longest post body, in characters (Unicode scalar values).
pub const MAX_BODY_CHARS: usize = 4096;
/// Longest profile display name, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 64;

pub(crate) const FOLLOW_PREFIX: &str = "follows/";

macro_rules! serde_via_text {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}
serde_via_text!(PostId, NodeId, UserName, crate::ids::DocId);

/// What a client asks for when it creates a post.
#[derive(Clone, Debug)]
pub struct NewPost {
    pub author: UserName,
    pub body: String,
    pub reply_to: Option<PostId>,
}

/// A post as read from its document.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Post {
    pub id: PostId,
    pub author: UserName,
    /// The author's public key, when the post is signed.
    pub author_key: Option<NodeId>,
    /// Whether `author_key` signed the post's original content.
    pub signed: bool,
    pub body: String,
    pub reply_to: Option<PostId>,
    pub created_at: u64,
    pub edited_at: Option<u64>,
    pub deleted: bool,
}

/// A user's profile as read from its document.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Profile {
    pub user: UserName,
    pub display_name: Option<String>,
    pub public_key: Option<NodeId>,
    /// Users followed, sorted.
    pub follows: Vec<UserName>,
}

pub(crate) fn check_body_len(body: &str) -> Result<()> {
    let chars = body.chars().count();
    if chars > MAX_BODY_CHARS {
        return Err(Error::invalid(format!(
            "post body of {chars} characters exceeds the limit of {MAX_BODY_CHARS}"
        )));
    }
    Ok(())
}

/// The message an author signs: the post's original content.
pub fn post_signing_message(id: &PostId, post: &NewPost) -> Vec<u8> {
    let mut m = b"hearsay-post-v1\0".to_vec();
    m.extend_from_slice(&id.0);
    m.extend_from_slice(post.author.as_str().as_bytes());
    m.push(0);
    m.extend_from_slice(&post.reply_to.map(|r| r.0).unwrap_or([0; 16]));
    m.extend_from_slice(post.body.as_bytes());
    m
}

fn get_str(doc: &Automerge, key: &str) -> Option<String> {
    match doc.get(ROOT, key).ok()?? {
        (Value::Scalar(s), _) => s.as_str().map(str::to_owned),
        _ => None,
    }
}

fn get_u64(doc: &Automerge, key: &str) -> Option<u64> {
    match doc.get(ROOT, key).ok()?? {
        (Value::Scalar(s), _) => match s.as_ref() {
            ScalarValue::Uint(u) => Some(*u),
            ScalarValue::Int(i) => u64::try_from(*i).ok(),
            _ => None,
        },
        _ => None,
    }
}

fn get_bool(doc: &Automerge, key: &str) -> bool {
    matches!(doc.get(ROOT, key), Ok(Some((Value::Scalar(s), _))) if matches!(s.as_ref(), ScalarValue::Boolean(true)))
}

/// Post documents: `post/<id>`.
pub mod post {
    use super::*;

    /// Writes a new post into an empty document, with the author's
    /// signature when there is one. The signature is kept as given: checking
    /// it is the caller's business ([`crate::Replica::create_post`] does),
    /// and every reader checks it again (`Post::signed`).
    pub fn create(
        doc: &mut Automerge,
        id: PostId,
        post: &NewPost,
        signature: Option<&PostSignature>,
    ) -> Result<()> {
        check_body_len(&post.body)?;
        if doc.get(ROOT, "created_at")?.is_some() {
            return Err(Error::invalid(format!("post {id} already exists")));
        }
        if let Some(sig) = signature
            && sig.id != id
        {
            return Err(Error::invalid(format!(
                "the signature is for post {}, not {id}",
                sig.id
            )));
        }
        let mut tx = doc.transaction();
        tx.put(ROOT, "author", post.author.as_str())?;
        if let Some(sig) = signature {
            tx.put(ROOT, "author_key", sig.author_key.to_string())?;
            tx.put(ROOT, "signature", hex(&sig.signature))?;
        }
        let body = tx.put_object(ROOT, "body", ObjType::Text)?;
        tx.splice_text(&body, 0, 0, &post.body)?;
        if let Some(r) = post.reply_to {
            tx.put(ROOT, "reply_to", r.to_string())?;
        }
        tx.put(ROOT, "created_at", id.created_at_ms())?;
        tx.put(ROOT, "deleted", false)?;
        tx.commit();
        Ok(())
    }

    fn body_obj(doc: &Automerge) -> Result<automerge::ObjId> {
        match doc.get(ROOT, "body")? {
            Some((Value::Object(ObjType::Text), obj)) => Ok(obj),
            _ => Err(Error::invalid("post has no body (unknown post)")),
        }
    }

    /// Replaces `delete` characters at `pos` with `insert`.
    pub fn edit(
        doc: &mut Automerge,
        pos: usize,
        delete: usize,
        insert: &str,
        now_ms: u64,
    ) -> Result<()> {
        let body = body_obj(doc)?;
        if get_bool(doc, "deleted") {
            return Err(Error::invalid("cannot edit a deleted post"));
        }
        let len = doc.length(&body);
        if pos.checked_add(delete).is_none_or(|end| end > len) {
            return Err(Error::invalid(format!(
                "edit range {pos}..{} is outside the body of {len} characters",
                pos.saturating_add(delete)
            )));
        }
        let new_len = len - delete + insert.chars().count();
        if new_len > MAX_BODY_CHARS {
            return Err(Error::invalid(format!(
                "edited body of {new_len} characters exceeds the limit of {MAX_BODY_CHARS}"
            )));
        }
        let mut tx = doc.transaction();
        tx.splice_text(&body, pos, delete as isize, insert)?;
        tx.put(ROOT, "edited_at", now_ms)?;
        tx.commit();
        Ok(())
    }

    /// Tombstones the post: it stays addressable but leaves listings.
    pub fn delete(doc: &mut Automerge, now_ms: u64) -> Result<()> {
        body_obj(doc)?;
        let mut tx = doc.transaction();
        tx.put(ROOT, "deleted", true)?;
        tx.put(ROOT, "edited_at", now_ms)?;
        tx.commit();
        Ok(())
    }

    /// The post's author, `None` when the document holds no post yet: what
    /// the post lists ([`crate::lists`]) need, without reading the body.
    pub fn author(doc: &Automerge) -> Option<UserName> {
        get_u64(doc, "created_at")?;
        get_str(doc, "author").and_then(|a| UserName::new(&a).ok())
    }

    /// Reads the post, `None` when the document holds no post yet.
    pub fn read(doc: &Automerge, id: PostId) -> Option<Post> {
        let created_at = get_u64(doc, "created_at")?;
        let author = get_str(doc, "author").and_then(|a| UserName::new(&a).ok())?;
        let body = body_obj(doc)
            .ok()
            .and_then(|b| doc.text(&b).ok())
            .unwrap_or_default();
        let reply_to = get_str(doc, "reply_to").and_then(|r| r.parse().ok());
        let author_key: Option<NodeId> = get_str(doc, "author_key").and_then(|k| k.parse().ok());
        let signed = match (author_key, get_str(doc, "signature")) {
            (Some(key), Some(sig)) => unhex::<64>("signature", &sig).is_ok_and(|sig| {
                // The signature covers the original body: the creating change.
                original_bodies(doc).into_iter().any(|original| {
                    let content = NewPost {
                        author: author.clone(),
                        body: original,
                        reply_to,
                    };
                    verify(&key, &post_signing_message(&id, &content), &sig)
                })
            }),
            _ => false,
        };
        Some(Post {
            id,
            author,
            author_key,
            signed,
            body,
            reply_to,
            created_at,
            edited_at: get_u64(doc, "edited_at"),
            deleted: get_bool(doc, "deleted"),
        })
    }

    /// The body as each creating change (a change without dependencies)
    /// wrote it. Usually one; two when two nodes accepted the same
    /// client-made post concurrently (a client retrying on another node),
    /// and then the body object of only one of them survives the merge.
    fn original_bodies(doc: &Automerge) -> Vec<String> {
        let Ok(body) = body_obj(doc) else {
            return Vec::new();
        };
        doc.get_changes(&[])
            .into_iter()
            .filter(|c| c.deps().is_empty())
            .filter_map(|c| doc.text_at(&body, &[c.hash()]).ok())
            .collect()
    }
}

/// Profile documents: `profile/<user>`.
pub mod profile {
    use super::*;

    pub fn set(
        doc: &mut Automerge,
        display_name: Option<&str>,
        public_key: Option<NodeId>,
    ) -> Result<()> {
        if let Some(name) = display_name {
            let chars = name.chars().count();
            if chars > MAX_DISPLAY_NAME_CHARS {
                return Err(Error::invalid(format!(
                    "display name of {chars} characters exceeds the limit of {MAX_DISPLAY_NAME_CHARS}"
                )));
            }
        }
        let mut tx = doc.transaction();
        if let Some(name) = display_name {
            tx.put(ROOT, "display_name", name)?;
        }
        if let Some(key) = public_key {
            tx.put(ROOT, "public_key", key.to_string())?;
        }
        tx.commit();
        Ok(())
    }

    pub fn follow(doc: &mut Automerge, whom: &UserName) -> Result<()> {
        let mut tx = doc.transaction();
        tx.put(ROOT, format!("{FOLLOW_PREFIX}{whom}"), true)?;
        tx.commit();
        Ok(())
    }

    pub fn unfollow(doc: &mut Automerge, whom: &UserName) -> Result<()> {
        let key = format!("{FOLLOW_PREFIX}{whom}");
        if doc.get(ROOT, &key)?.is_none() {
            return Err(Error::invalid(format!("not following {whom}")));
        }
        let mut tx = doc.transaction();
        tx.delete(ROOT, key)?;
        tx.commit();
        Ok(())
    }

    pub fn read(doc: &Automerge, user: &UserName) -> Profile {
        let follows = doc
            .keys(ROOT)
            .filter_map(|k| {
                k.strip_prefix(FOLLOW_PREFIX)
                    .and_then(|u| UserName::new(u).ok())
            })
            .collect();
        Profile {
            user: user.clone(),
            display_name: get_str(doc, "display_name"),
            public_key: get_str(doc, "public_key").and_then(|k| k.parse().ok()),
            follows,
        }
    }
}
