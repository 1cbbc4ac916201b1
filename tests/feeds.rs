//! The Atom feeds against a real node, parsed with `feed-rs`: the public
//! timeline and one user's posts, newest first, with permalinks under the
//! base URL the client used, and bodies that survive the round trip through
//! XML whatever characters they hold.

mod common;

use common::TestNode;
use feed_rs::model::{Entry, Feed};
use hearsay_crdt::Post;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HOST};

const ATOM: &str = "application/atom+xml; charset=utf-8";

/// Bodies made of what XML escapes or forbids.
const TRICKY: &[&str] = &[
    "<b>bold</b> & \"double\" 'single' ]]> <![CDATA[x]]> &amp; &#x41; <!-- c -->",
    "first line <i>\nsecond line & more\n\tthird",
    "<?xml version=\"1.0\"?><feed xmlns=\"http://www.w3.org/2005/Atom\"></feed>",
    "emoji 😀 and accents é ñ 中文 and a right-to-left mark \u{200f}",
];

/// `GET path` with extra headers; the status, content type and body.
async fn fetch(
    node: &TestNode,
    path: &str,
    headers: &[(reqwest::header::HeaderName, &str)],
) -> (StatusCode, String, String) {
    let mut request = node.http().get(node.url(path));
    for (name, value) in headers {
        request = request.header(name, *value);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = response.status();
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = response.text().await.expect("a body");
    (status, content_type, text)
}

/// `GET path` as an Atom feed, parsed.
async fn feed(node: &TestNode, path: &str) -> Feed {
    feed_with(node, path, &[]).await
}

async fn feed_with(
    node: &TestNode,
    path: &str,
    headers: &[(reqwest::header::HeaderName, &str)],
) -> Feed {
    let (status, content_type, text) = fetch(node, path, headers).await;
    assert_eq!(status, StatusCode::OK, "{path}: {text}");
    assert_eq!(content_type, ATOM, "{path}: content type");
    let parsed = feed_rs::parser::parse(text.as_bytes())
        .unwrap_or_else(|e| panic!("{path}: not a feed: {e}\n{text}"));
    assert_eq!(parsed.feed_type, feed_rs::model::FeedType::Atom, "{path}");
    parsed
}

fn link<'a>(links: &'a [feed_rs::model::Link], rel: &str) -> Option<&'a str> {
    links
        .iter()
        .find(|l| l.rel.as_deref() == Some(rel))
        .map(|l| l.href.as_str())
}

/// Asserts that `entry` is `post`, its permalink under `base`.
fn assert_entry(entry: &Entry, post: &Post, base: &str) {
    let id = post.id.to_string();
    assert_eq!(entry.id, format!("urn:hearsay:post:{id}"));
    let body = entry
        .content
        .as_ref()
        .and_then(|c| c.body.as_deref())
        .unwrap_or_else(|| panic!("entry {id} has no content"));
    assert_eq!(body, post.body, "content of {id}");
    let title = &entry.title.as_ref().expect("a title").content;
    assert_eq!(
        *title,
        hearsay_node::feeds::title(&post.body),
        "title of {id}"
    );
    assert!(
        post.body
            .trim_start()
            .starts_with(title.trim_end_matches('…')),
        "title of {id}: {title:?} does not start the body"
    );
    let authors: Vec<_> = entry.authors.iter().map(|a| a.name.as_deref()).collect();
    assert_eq!(authors, [Some(post.author.as_str())], "author of {id}");
    let published = entry.published.map(|t| t.timestamp_millis() as u64);
    assert_eq!(published, Some(post.created_at), "published of {id}");
    assert_eq!(
        entry.updated.map(|t| t.timestamp_millis() as u64),
        Some(post.edited_at.unwrap_or(post.created_at)),
        "updated of {id}"
    );
    assert_eq!(
        link(&entry.links, "alternate"),
        Some(format!("{base}/p/{id}").as_str()),
        "permalink of {id}"
    );
}

fn entry_ids(feed: &Feed) -> Vec<String> {
    feed.entries
        .iter()
        .map(|e| e.id.trim_start_matches("urn:hearsay:post:").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds_list_the_newest_posts_with_permalinks() {
    let node = TestNode::start("feeds", &[]).await;
    let client = node.client();
    let base = node.client().base_url().to_owned();

    // An empty node has empty, valid feeds.
    assert!(feed(&node, "/api/v0/feed.atom").await.entries.is_empty());
    assert!(
        feed(&node, "/api/v0/users/ann/feed.atom")
            .await
            .entries
            .is_empty()
    );

    // 70 posts: more than a default feed holds, by three authors, some of
    // them made of characters XML escapes.
    let authors = ["ann", "bob", "cy"];
    for i in 0..70 {
        let author = authors[i % authors.len()];
        let body = match TRICKY.get(i % 10) {
            Some(tricky) if i >= 60 => format!("{tricky} #{i}"),
            _ => format!("post {i} by {author}"),
        };
        client
            .create_post(Some(author), &body, None)
            .await
            .unwrap_or_else(|e| panic!("post {i}: {e}"));
    }
    let all = node.all_posts().await;
    assert_eq!(all.len(), 70);

    // The public feed: the newest 64 by default, in the listing's order.
    let public = feed(&node, "/api/v0/feed.atom").await;
    assert_eq!(public.id, "urn:hearsay:feed:public");
    assert_eq!(
        link(&public.links, "self"),
        Some(format!("{base}/api/v0/feed.atom").as_str())
    );
    assert_eq!(public.entries.len(), 64, "default limit");
    for (entry, post) in public.entries.iter().zip(&all) {
        assert_entry(entry, post, &base);
    }
    let newest = public.entries[0].updated.expect("updated");
    assert_eq!(
        public.updated,
        Some(newest),
        "the feed's updated is its newest entry's"
    );
    let five = feed(&node, "/api/v0/feed.atom?limit=5").await;
    assert_eq!(entry_ids(&five), entry_ids(&public)[..5]);
    let every = feed(&node, "/api/v0/feed.atom?limit=500").await;
    assert_eq!(every.entries.len(), 70);

    // A user's feed: only theirs, newest first.
    for author in authors {
        let theirs: Vec<&Post> = all.iter().filter(|p| p.author.as_str() == author).collect();
        let path = format!("/api/v0/users/{author}/feed.atom");
        let user = feed(&node, &path).await;
        assert_eq!(user.id, format!("urn:hearsay:feed:user:{author}"));
        assert_eq!(
            link(&user.links, "self"),
            Some(format!("{base}{path}").as_str())
        );
        assert_eq!(user.entries.len(), theirs.len(), "{author}");
        for (entry, post) in user.entries.iter().zip(&theirs) {
            assert_entry(entry, post, &base);
        }
    }
    assert!(
        feed(&node, "/api/v0/users/nobody/feed.atom")
            .await
            .entries
            .is_empty()
    );

    // Links follow the host and scheme the client used.
    let proxied = feed_with(
        &node,
        "/api/v0/users/ann/feed.atom?limit=3",
        &[
            (HOST, "feeds.example.org"),
            ("x-forwarded-proto".parse().unwrap(), "https"),
        ],
    )
    .await;
    assert_eq!(
        link(&proxied.links, "self"),
        Some("https://feeds.example.org/api/v0/users/ann/feed.atom")
    );
    let ann: Vec<&Post> = all.iter().filter(|p| p.author.as_str() == "ann").collect();
    for (entry, post) in proxied.entries.iter().zip(&ann) {
        assert_entry(entry, post, "https://feeds.example.org");
    }

    // An edit shows as `updated`; a deleted post leaves both feeds.
    let (edited, deleted) = (&all[0], &all[1]);
    client
        .edit(&edited.id.to_string(), 0, 0, "edited: ")
        .await
        .expect("edit");
    client
        .delete(&deleted.id.to_string())
        .await
        .expect("delete");
    let after = feed(&node, "/api/v0/feed.atom").await;
    assert_eq!(after.entries.len(), 64);
    assert!(!entry_ids(&after).contains(&deleted.id.to_string()));
    let now = client
        .post(&edited.id.to_string())
        .await
        .expect("read")
        .expect("held")
        .post;
    assert!(now.edited_at.is_some() && now.body.starts_with("edited: "));
    assert_entry(&after.entries[0], &now, &base);
    let deleted_author = format!("/api/v0/users/{}/feed.atom", deleted.author);
    assert!(!entry_ids(&feed(&node, &deleted_author).await).contains(&deleted.id.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_survive_the_round_trip_through_xml() {
    let node = TestNode::start("feeds-xml", &[]).await;
    let client = node.client();
    let base = client.base_url().to_owned();
    let mut bodies: Vec<String> = TRICKY.iter().map(|s| (*s).to_owned()).collect();
    bodies.push(format!("{}>", "<&\"'".repeat(1000)));
    // Characters XML 1.0 cannot carry at all are replaced, and the feed
    // stays well-formed.
    bodies.push("bell \u{7} escape \u{1b} nul \u{0} end".to_owned());
    for body in &bodies {
        client
            .create_post(Some("xml"), body, None)
            .await
            .unwrap_or_else(|e| panic!("{body:?}: {e}"));
    }
    let posts = node.all_posts().await;
    for path in ["/api/v0/feed.atom", "/api/v0/users/xml/feed.atom"] {
        let parsed = feed(&node, path).await;
        assert_eq!(parsed.entries.len(), bodies.len(), "{path}");
        let (forbidden, rest) = parsed.entries.split_first().expect("entries");
        assert_eq!(
            forbidden.content.as_ref().and_then(|c| c.body.as_deref()),
            Some("bell \u{FFFD} escape \u{FFFD} nul \u{FFFD} end"),
            "{path}"
        );
        for (entry, post) in rest.iter().zip(&posts[1..]) {
            assert_entry(entry, post, &base);
        }
    }
    // The long title was cut.
    let titles: Vec<String> = feed(&node, "/api/v0/feed.atom")
        .await
        .entries
        .iter()
        .map(|e| e.title.as_ref().expect("title").content.clone())
        .collect();
    assert!(
        titles[1].chars().count() <= 80 && titles[1].ends_with('…'),
        "{}",
        titles[1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_feed_requests_are_refused() {
    let node = TestNode::start("feeds-bad", &[]).await;
    for (path, code) in [
        ("/api/v0/feed.atom?limit=0", StatusCode::BAD_REQUEST),
        ("/api/v0/feed.atom?limit=501", StatusCode::BAD_REQUEST),
        ("/api/v0/feed.atom?limit=x", StatusCode::BAD_REQUEST),
        ("/api/v0/feed.atom?limit=", StatusCode::BAD_REQUEST),
        ("/api/v0/users/a%20b/feed.atom", StatusCode::BAD_REQUEST),
        (
            &format!("/api/v0/users/{}/feed.atom", "a".repeat(33)),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v0/users/ann/feed.atom?limit=-1",
            StatusCode::BAD_REQUEST,
        ),
        ("/api/v0/users/ann/feeds.atom", StatusCode::NOT_FOUND),
    ] {
        let answer = node.get(path).await.expect("an answer");
        common::assert_error(&answer, code, path);
    }
    let answer = node
        .send(node.http().post(node.url("/api/v0/feed.atom")))
        .await
        .expect("an answer");
    common::assert_error(&answer, StatusCode::METHOD_NOT_ALLOWED, "POST to a feed");
    // A Host that is not a plain host name falls back to the node's address.
    let fallback = feed_with(&node, "/api/v0/feed.atom", &[(HOST, "evil.org/x?")]).await;
    assert_eq!(
        link(&fallback.links, "self"),
        Some(node.url("/api/v0/feed.atom").as_str())
    );
}
