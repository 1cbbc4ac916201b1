//! Atom 1.0 feeds (RFC 4287) of the public timeline and of one user's posts:
//! `GET /api/v0/feed.atom` and `GET /api/v0/users/{name}/feed.atom`, newest
//! first, `?limit=N` (default [`DEFAULT_LIMIT`], at most [`MAX_LIMIT`]).
//!
//! The handlers read through the core like every other route (the same
//! [`ClientCommand::Posts`] and [`ClientCommand::UserPosts`] the JSON API
//! uses, so deleted posts leave the feed as they leave the listing) and only
//! translate posts into entries. The XML is written by `atom_syndication`,
//! which escapes text and attributes; what it cannot do is make a string
//! legal XML, so [`xml_text`] replaces the characters XML 1.0 forbids
//! (control characters a post body may hold) before they reach it.
//!
//! An entry is one post:
//! - `id`: `urn:hearsay:post:<id>`, the same on every node of a mesh, so a
//!   reader that moves between nodes sees the same entries;
//! - `title`: the body's first non-blank line, cut to [`TITLE_CHARS`];
//! - `content` (`type="text"`): the body;
//! - `author`: the post's author name;
//! - `published` / `updated`: `created_at` / `edited_at` (else `created_at`),
//!   RFC 3339;
//! - `link rel="alternate"`: the permalink `{base}/p/<id>` (the web page).
//!
//! `{base}` is where the client reached this node: `X-Forwarded-Proto`
//! (`http` or `https`, else `http`) and the request's authority (`Host`),
//! falling back to the node's HTTP address when the request names none or
//! one that is not a plain host name or address.

use std::net::SocketAddr;

use atom_syndication::{Content, Entry, Feed, FixedDateTime, Generator, Link, Person, Text};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Uri, header};
use axum::response::{IntoResponse, Response};
use hearsay_crdt::{Post, UserName};
use serde::Deserialize;

use crate::api::{ApiError, ApiState, ask};
use crate::core::{ClientCommand, now_ms};

/// Entries in a feed when the request names no `limit`.
pub const DEFAULT_LIMIT: usize = 64;
/// Most entries a feed may be asked for.
pub const MAX_LIMIT: usize = crate::api::MAX_LIMIT;
/// Longest entry title, in characters (an ellipsis marks a cut).
pub const TITLE_CHARS: usize = 80;
/// The feeds' content type.
pub const CONTENT_TYPE: &str = "application/atom+xml; charset=utf-8";
/// Longest `Host` taken as the base of links.
const MAX_HOST_LEN: usize = 255;

#[derive(Deserialize)]
pub(crate) struct FeedQuery {
    limit: Option<String>,
}

fn parse_limit(raw: Option<&str>) -> Result<usize, ApiError> {
    match raw {
        None => Ok(DEFAULT_LIMIT),
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "limit {l:?} must be a number from 1 to {MAX_LIMIT}"
            ))),
        },
    }
}

/// `GET /api/v0/feed.atom`: the public timeline.
pub(crate) async fn public_feed(
    State(state): State<ApiState>,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<FeedQuery>,
) -> Result<Response, ApiError> {
    let limit = parse_limit(q.limit.as_deref())?;
    let posts = ask(&state, |reply| ClientCommand::Posts {
        limit,
        before: None,
        reply,
    })
    .await?;
    let base = base_url(&uri, &headers, state.info.http);
    let about = About {
        id: "urn:hearsay:feed:public".into(),
        title: "hearsay: public timeline".into(),
        self_path: "/api/v0/feed.atom".into(),
        page_path: Some("/".into()),
    };
    Ok(atom_response(render(&about, &posts, &base, now_ms())))
}

/// `GET /api/v0/users/{name}/feed.atom`: one user's posts (an empty feed for
/// a name that has none).
pub(crate) async fn user_feed(
    State(state): State<ApiState>,
    Path(name): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<FeedQuery>,
) -> Result<Response, ApiError> {
    let user =
        UserName::new(&name).map_err(|e| ApiError::bad_request(format!("user name: {e}")))?;
    let limit = parse_limit(q.limit.as_deref())?;
    let posts = ask(&state, |reply| ClientCommand::UserPosts {
        user: user.clone(),
        limit,
        before: None,
        reply,
    })
    .await?;
    let base = base_url(&uri, &headers, state.info.http);
    let about = About {
        id: format!("urn:hearsay:feed:user:{user}"),
        title: format!("hearsay: posts by {user}"),
        self_path: format!("/api/v0/users/{user}/feed.atom"),
        page_path: None,
    };
    Ok(atom_response(render(&about, &posts, &base, now_ms())))
}

fn atom_response(xml: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], xml).into_response()
}

/// What a feed is, apart from its entries.
#[derive(Debug, Clone)]
pub struct About {
    /// The feed's permanent id (a URN).
    pub id: String,
    pub title: String,
    /// Path of the feed itself (`link rel="self"`).
    pub self_path: String,
    /// Path of the web page showing the same posts (`link rel="alternate"`).
    pub page_path: Option<String>,
}

/// The Atom document of `posts` (newest first), links under `base`
/// (`scheme://authority`, no trailing slash). `now_ms` is the feed's
/// `updated` when it has no entry.
pub fn render(about: &About, posts: &[Post], base: &str, now_ms: u64) -> Vec<u8> {
    let entries: Vec<Entry> = posts.iter().map(|p| entry(p, base)).collect();
    let updated = entries
        .iter()
        .map(|e| e.updated)
        .max()
        .unwrap_or_else(|| timestamp(now_ms));
    let mut links = vec![Link {
        href: format!("{base}{}", about.self_path),
        rel: "self".into(),
        mime_type: Some("application/atom+xml".into()),
        ..Link::default()
    }];
    if let Some(page) = &about.page_path {
        links.push(Link {
            href: format!("{base}{page}"),
            rel: "alternate".into(),
            ..Link::default()
        });
    }
    let feed = Feed {
        id: about.id.clone(),
        title: Text::plain(xml_text(&about.title)),
        updated,
        links,
        generator: Some(Generator {
            value: "hearsay".into(),
            uri: None,
            version: Some(env!("CARGO_PKG_VERSION").into()),
        }),
        entries,
        ..Feed::default()
    };
    // Writing to a Vec fails only on an I/O error, which a Vec never has.
    feed.write_to(Vec::new()).unwrap_or_default()
}

fn entry(post: &Post, base: &str) -> Entry {
    let published = timestamp(post.created_at);
    Entry {
        id: format!("urn:hearsay:post:{}", post.id),
        title: Text::plain(xml_text(&title(&post.body))),
        updated: post.edited_at.map_or(published, timestamp),
        published: Some(published),
        authors: vec![Person {
            name: post.author.to_string(),
            ..Person::default()
        }],
        links: vec![Link {
            href: format!("{base}/p/{}", post.id),
            rel: "alternate".into(),
            ..Link::default()
        }],
        content: Some(Content {
            value: Some(xml_text(&post.body)),
            content_type: Some("text".into()),
            ..Content::default()
        }),
        ..Entry::default()
    }
}

/// Milliseconds since the epoch as an RFC 3339 time in UTC (the epoch for a
/// value out of range).
fn timestamp(ms: u64) -> FixedDateTime {
    i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .unwrap_or_default()
        .fixed_offset()
}

/// An entry title: the body's first non-blank line, trimmed, cut to
/// [`TITLE_CHARS`] characters with an ellipsis.
pub fn title(body: &str) -> String {
    let line = body
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    if line.is_empty() {
        return "(no text)".into();
    }
    if line.chars().count() <= TITLE_CHARS {
        return line.to_owned();
    }
    let mut cut: String = line.chars().take(TITLE_CHARS - 1).collect();
    cut.truncate(cut.trim_end().len());
    cut.push('…');
    cut
}

/// `s` with every character XML 1.0 does not allow (control characters
/// other than tab, newline and carriage return; U+FFFE, U+FFFF) replaced by
/// U+FFFD, so the document stays well-formed whatever a body holds.
pub fn xml_text(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => c,
            c if c < ' ' || c == '\u{FFFE}' || c == '\u{FFFF}' => '\u{FFFD}',
            c => c,
        })
        .collect()
}

/// `scheme://authority` of this node as the client reached it: the
/// request's authority (HTTP/2) or `Host` header, with `X-Forwarded-Proto`'s
/// first value when it is `http` or `https`; `fallback` (the node's own HTTP
/// address) when the request names no usable host.
pub fn base_url(uri: &Uri, headers: &HeaderMap, fallback: SocketAddr) -> String {
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| v == "http" || v == "https")
        .unwrap_or_else(|| "http".into());
    let host = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .filter(|h| is_plain_host(h))
        .unwrap_or_else(|| fallback.to_string());
    format!("{scheme}://{host}")
}

/// Whether `host` is `name[:port]`, `v4[:port]` or `[v6][:port]`: no user
/// info, path, or anything else a link must not carry.
fn is_plain_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= MAX_HOST_LEN
        && host.bytes().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_' | b':' | b'[' | b']')
        })
        && host.parse::<axum::http::uri::Authority>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use hearsay_crdt::PostId;

    fn post(n: u64, author: &str, body: &str) -> Post {
        Post {
            id: PostId::new(1_700_000_000_000 + n, &hearsay_crdt::NodeId([7; 32]), n),
            author: UserName::new(author).unwrap(),
            author_key: None,
            signed: false,
            body: body.into(),
            reply_to: None,
            created_at: 1_700_000_000_000 + n,
            edited_at: None,
            deleted: false,
        }
    }

    #[test]
    fn titles_take_the_first_line_and_cut_long_ones() {
        assert_eq!(title("hello\nworld"), "hello");
        assert_eq!(title("\n  \n  second line  \nthird"), "second line");
        assert_eq!(title(" \n\t"), "(no text)");
        let long = "a".repeat(200);
        let t = title(&long);
        assert_eq!(t.chars().count(), TITLE_CHARS);
        assert!(t.ends_with('…'));
        let exact = "é".repeat(TITLE_CHARS);
        assert_eq!(title(&exact), exact);
    }

    #[test]
    fn characters_xml_forbids_are_replaced() {
        assert_eq!(
            xml_text("a\u{0}b\u{1b}c\td\ne\rf"),
            "a\u{FFFD}b\u{FFFD}c\td\ne\rf"
        );
        assert_eq!(xml_text("\u{FFFE}\u{FFFF}é😀"), "\u{FFFD}\u{FFFD}é😀");
    }

    #[test]
    fn the_base_comes_from_the_request_when_it_is_a_plain_host() {
        let fallback: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let path: Uri = "/api/v0/feed.atom".parse().unwrap();
        let with = |pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_str(v).unwrap());
            }
            base_url(&path, &h, fallback)
        };
        assert_eq!(with(&[]), "http://127.0.0.1:8080");
        assert_eq!(with(&[("host", "example.org")]), "http://example.org");
        assert_eq!(
            with(&[
                ("host", "example.org:81"),
                ("x-forwarded-proto", "HTTPS, http")
            ]),
            "https://example.org:81"
        );
        assert_eq!(with(&[("host", "[::1]:9000")]), "http://[::1]:9000");
        assert_eq!(
            with(&[("host", "h"), ("x-forwarded-proto", "javascript")]),
            "http://h"
        );
        for bad in [
            "",
            "evil.org/path",
            "user@evil.org",
            "a b",
            "x\"><script>",
            &"a".repeat(300),
        ] {
            assert_eq!(with(&[("host", bad)]), "http://127.0.0.1:8080", "{bad:?}");
        }
        let absolute: Uri = "http://node.example:7000/api/v0/feed.atom".parse().unwrap();
        assert_eq!(
            base_url(&absolute, &HeaderMap::new(), fallback),
            "http://node.example:7000"
        );
    }

    #[test]
    fn a_feed_is_atom_with_escaped_text() {
        let about = About {
            id: "urn:hearsay:feed:public".into(),
            title: "t".into(),
            self_path: "/api/v0/feed.atom".into(),
            page_path: Some("/".into()),
        };
        let mut edited = post(2, "bob", "<b>&amp;</b> \"q\" ]]> \u{1}");
        edited.edited_at = Some(1_700_000_009_000);
        let posts = [edited, post(1, "ann", "first\nsecond")];
        let xml = String::from_utf8(render(&about, &posts, "http://h:1", 5)).unwrap();
        assert!(xml.starts_with("<?xml"), "{xml}");
        assert!(xml.contains(r#"<feed xmlns="http://www.w3.org/2005/Atom">"#));
        assert!(xml.contains("&lt;b&gt;&amp;amp;&lt;/b&gt;"), "{xml}");
        assert!(!xml.contains('\u{1}'));
        assert!(xml.contains(&format!(r#"href="http://h:1/p/{}""#, posts[1].id)));
        assert!(xml.contains(r#"<link href="http://h:1/api/v0/feed.atom" rel="self""#));
        // The feed's `updated` is its newest entry's.
        assert!(
            xml.contains("<updated>2023-11-14T22:13:29+00:00</updated>"),
            "{xml}"
        );
        assert!(xml.contains("<published>2023-11-14T22:13:20.002+00:00</published>"));
        let empty = String::from_utf8(render(&about, &[], "http://h:1", 5)).unwrap();
        assert!(
            empty.contains("<updated>1970-01-01T00:00:00.005+00:00</updated>"),
            "{empty}"
        );
    }
}
