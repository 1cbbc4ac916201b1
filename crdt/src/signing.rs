//! What users sign, and how their signatures travel.
//!
//! A user's ed25519 key (see [`Keypair`]) signs three kinds of message. Each
//! starts with its own domain tag, so a signature made for one can never pass
//! for another, nor for a node's delta signature (whose codec has its own):
//!
//! - a post's original content, [`post_signing_message`], carried by a
//!   [`PostSignature`] and kept in the post document so that every reader can
//!   check it (`Post::signed`);
//! - a name registration, [`registration_message`]: proof that whoever
//!   registers a name with a public key holds the matching secret;
//! - an action on the user's own data ([`Action`]: follow, unfollow) or on the
//!   author's own post (edit, delete), stamped with the signer's clock
//!   (`at_ms`) so that a node can refuse a stale or replayed request.
//!
//! Fields are encoded so that no two messages share bytes: text as a 4-byte
//! big-endian length and its UTF-8 bytes, numbers as 8 bytes big-endian,
//! keys and ids as their fixed-size bytes. Signatures travel as 128
//! lowercase hex digits.

use crate::docs::{NewPost, post_signing_message};
use crate::error::Result;
use crate::identity::{Keypair, verify};
use crate::ids::{NodeId, PostId, UserName, hex, unhex};

const REGISTER_TAG: &[u8] = b"hearsay-register-v1\0";
const ACTION_TAG: &[u8] = b"hearsay-action-v1\0";

fn put_text(m: &mut Vec<u8>, s: &str) {
    // Every text signed is bounded far below 4 GiB (names, bodies).
    m.extend_from_slice(&(s.len() as u32).to_be_bytes());
    m.extend_from_slice(s.as_bytes());
}

/// A signature in its text form: 128 lowercase hex digits.
pub fn signature_to_hex(signature: &[u8; 64]) -> String {
    hex(signature)
}

/// Parses a signature from its text form.
pub fn signature_from_hex(s: &str) -> Result<[u8; 64]> {
    unhex::<64>("signature", s)
}

/// An author's signature of a post, made before any node sees the post: the
/// client chooses the id ([`PostId::client`]) and signs
/// [`post_signing_message`] of the id and the content.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PostSignature {
    pub id: PostId,
    /// The author's public key.
    pub author_key: NodeId,
    pub signature: [u8; 64],
}

impl PostSignature {
    /// Signs `post` under `id` with the author's key.
    pub fn sign(key: &Keypair, id: PostId, post: &NewPost) -> Self {
        PostSignature {
            id,
            author_key: key.id(),
            signature: key.sign(&post_signing_message(&id, post)),
        }
    }

    /// Whether the signature is `author_key`'s over `post` under `id`.
    pub fn verify(&self, post: &NewPost) -> bool {
        verify(
            &self.author_key,
            &post_signing_message(&self.id, post),
            &self.signature,
        )
    }
}

/// The message a user signs to register `name` with `key` (and, if given,
/// the display name that goes with it): proof of possession of the key.
pub fn registration_message(name: &UserName, key: &NodeId, display_name: Option<&str>) -> Vec<u8> {
    let mut m = REGISTER_TAG.to_vec();
    put_text(&mut m, name.as_str());
    m.extend_from_slice(key.as_bytes());
    match display_name {
        None => m.push(0),
        Some(d) => {
            m.push(1);
            put_text(&mut m, d);
        }
    }
    m
}

/// Signs a registration of `name` with the key itself.
pub fn sign_registration(key: &Keypair, name: &UserName, display_name: Option<&str>) -> [u8; 64] {
    key.sign(&registration_message(name, &key.id(), display_name))
}

/// Whether `signature` is `key`'s over the registration of `name`.
pub fn verify_registration(
    name: &UserName,
    key: &NodeId,
    display_name: Option<&str>,
    signature: &[u8; 64],
) -> bool {
    verify(
        key,
        &registration_message(name, key, display_name),
        signature,
    )
}

/// An action a user signs, with the time they signed it (`at_ms`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Action<'a> {
    /// `user` follows `whom` (signed by `user`).
    Follow {
        user: &'a UserName,
        whom: &'a UserName,
    },
    /// `user` stops following `whom` (signed by `user`).
    Unfollow {
        user: &'a UserName,
        whom: &'a UserName,
    },
    /// At character `pos` of the post's body, remove `delete` characters and
    /// insert `insert` (signed by the post's author).
    Edit {
        post: PostId,
        pos: u64,
        delete: u64,
        insert: &'a str,
    },
    /// Tombstone the post (signed by its author).
    Delete { post: PostId },
}

impl<'a> Action<'a> {
    /// `Follow` when `follow`, else `Unfollow`.
    pub fn follow(follow: bool, user: &'a UserName, whom: &'a UserName) -> Self {
        if follow {
            Action::Follow { user, whom }
        } else {
            Action::Unfollow { user, whom }
        }
    }

    /// The message signed for this action at `at_ms`.
    pub fn message(&self, at_ms: u64) -> Vec<u8> {
        let mut m = ACTION_TAG.to_vec();
        match self {
            Action::Follow { user, whom } | Action::Unfollow { user, whom } => {
                let tag = if matches!(self, Action::Follow { .. }) {
                    "follow"
                } else {
                    "unfollow"
                };
                put_text(&mut m, tag);
                put_text(&mut m, user.as_str());
                put_text(&mut m, whom.as_str());
            }
            Action::Edit {
                post,
                pos,
                delete,
                insert,
            } => {
                put_text(&mut m, "edit");
                m.extend_from_slice(&post.0);
                m.extend_from_slice(&pos.to_be_bytes());
                m.extend_from_slice(&delete.to_be_bytes());
                put_text(&mut m, insert);
            }
            Action::Delete { post } => {
                put_text(&mut m, "delete");
                m.extend_from_slice(&post.0);
            }
        }
        m.extend_from_slice(&at_ms.to_be_bytes());
        m
    }

    /// Signs the action at `at_ms`.
    pub fn sign(&self, key: &Keypair, at_ms: u64) -> [u8; 64] {
        key.sign(&self.message(at_ms))
    }

    /// Whether `signature` is `key`'s over the action at `at_ms`.
    pub fn verify(&self, key: &NodeId, at_ms: u64, signature: &[u8; 64]) -> bool {
        verify(key, &self.message(at_ms), signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> UserName {
        UserName::new(s).unwrap()
    }

    const T: u64 = 1_700_000_000_000;

    #[test]
    fn a_post_signature_covers_id_author_reply_and_body() {
        let key = Keypair::from_secret([1; 32]);
        let post = NewPost {
            author: name("ann"),
            body: "hello".into(),
            reply_to: None,
        };
        let id = PostId::client(T, [7; 10]);
        let sig = PostSignature::sign(&key, id, &post);
        assert!(sig.verify(&post));
        let changed = [
            NewPost {
                body: "hellp".into(),
                ..post.clone()
            },
            NewPost {
                author: name("bob"),
                ..post.clone()
            },
            NewPost {
                reply_to: Some(id),
                ..post.clone()
            },
        ];
        for other in &changed {
            assert!(!sig.verify(other), "{other:?}");
        }
        let moved = PostSignature {
            id: PostId::client(T, [8; 10]),
            ..sig
        };
        assert!(!moved.verify(&post), "the id is signed");
        let other_key = PostSignature {
            author_key: Keypair::from_secret([2; 32]).id(),
            ..sig
        };
        assert!(!other_key.verify(&post), "the key must be the signer's");
    }

    #[test]
    fn a_registration_names_the_name_the_key_and_the_display_name() {
        let key = Keypair::from_secret([3; 32]);
        let sig = sign_registration(&key, &name("ann"), Some("Ann"));
        assert!(verify_registration(
            &name("ann"),
            &key.id(),
            Some("Ann"),
            &sig
        ));
        assert!(!verify_registration(
            &name("anne"),
            &key.id(),
            Some("Ann"),
            &sig
        ));
        assert!(!verify_registration(&name("ann"), &key.id(), None, &sig));
        assert!(!verify_registration(
            &name("ann"),
            &key.id(),
            Some("Anne"),
            &sig
        ));
        let other = Keypair::from_secret([4; 32]);
        assert!(!verify_registration(
            &name("ann"),
            &other.id(),
            Some("Ann"),
            &sig
        ));
        // No display name and an empty one are different messages.
        assert_ne!(
            registration_message(&name("ann"), &key.id(), None),
            registration_message(&name("ann"), &key.id(), Some(""))
        );
    }

    #[test]
    fn actions_are_domain_separated_and_time_stamped() {
        let key = Keypair::from_secret([5; 32]);
        let (ann, bob) = (name("ann"), name("bob"));
        let post = PostId::client(T, [1; 10]);
        let actions = [
            Action::Follow {
                user: &ann,
                whom: &bob,
            },
            Action::Unfollow {
                user: &ann,
                whom: &bob,
            },
            Action::Follow {
                user: &bob,
                whom: &ann,
            },
            Action::Edit {
                post,
                pos: 0,
                delete: 1,
                insert: "x",
            },
            Action::Edit {
                post,
                pos: 1,
                delete: 0,
                insert: "x",
            },
            Action::Delete { post },
        ];
        let messages: Vec<Vec<u8>> = actions.iter().map(|a| a.message(T)).collect();
        for (i, a) in messages.iter().enumerate() {
            for b in &messages[i + 1..] {
                assert_ne!(a, b);
            }
            // No action message is a registration or a post message.
            assert!(a.starts_with(ACTION_TAG));
        }
        for action in &actions {
            let sig = action.sign(&key, T);
            assert!(action.verify(&key.id(), T, &sig));
            assert!(!action.verify(&key.id(), T + 1, &sig), "at_ms is signed");
            assert!(!action.verify(&Keypair::from_secret([6; 32]).id(), T, &sig));
        }
        // Length prefixes keep field boundaries: "ab"+"c" is not "a"+"bc".
        let (a, bc, ab, c) = (name("a"), name("bc"), name("ab"), name("c"));
        assert_ne!(
            Action::Follow {
                user: &a,
                whom: &bc
            }
            .message(T),
            Action::Follow {
                user: &ab,
                whom: &c
            }
            .message(T)
        );
    }

    #[test]
    fn signatures_round_trip_as_hex() {
        let sig = Keypair::from_secret([9; 32]).sign(b"x");
        assert_eq!(signature_from_hex(&signature_to_hex(&sig)).unwrap(), sig);
        assert!(signature_from_hex("abcd").is_err());
        assert!(signature_from_hex(&"Z".repeat(128)).is_err());
    }
}
