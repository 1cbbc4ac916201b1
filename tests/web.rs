//! The node's web page in a real browser (headless Chromium over DevTools),
//! and the mesh view it shows, against real node processes on loopback.

mod common;

use std::time::Duration;

use common::browser::{Browser, Page};
use common::{TestNode, wait_until};
use serde_json::Value;

/// Bound of each step: a page loading, a change reaching a page, a node
/// noticing a link.
const STEP: Duration = Duration::from_secs(30);

/// A string as a JavaScript literal.
fn js(s: &str) -> String {
    serde_json::to_string(s).expect("a string is JSON")
}

/// An expression: the card of post `id` on the page, or null.
fn card(id: &str) -> String {
    format!(
        "document.querySelector('#posts article[data-id=' + {} + ']')",
        js(&format!("\"{id}\""))
    )
}

/// An expression: the body text shown for post `id`, or null.
fn shown_body(id: &str) -> String {
    format!(
        "({}?.querySelector('.post-body')?.textContent ?? null)",
        card(id)
    )
}

/// Waits until the page's event stream is live.
async fn wait_live(page: &Page, what: &str) {
    page.wait_for(
        STEP,
        &format!("{what} shows its stream live"),
        "document.body.dataset.loaded === '1' && \
         document.getElementById('conn').dataset.state === 'live'",
    )
    .await;
}

/// Two nodes A and B; a post made through A's page form appears on B's open
/// page without a reload; B restarts on the same HTTP port while a post is
/// made on A, and B's still-open page shows it once B is back (the event
/// stream resumed from its token); an edit and a delete made on A show on
/// B's page in place; the same after B crashes; B's permalink page shows
/// the edited post.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_follows_posts_edits_and_deletes_live_across_nodes_and_a_restart() {
    let test = "the_page_follows_posts_edits_and_deletes_live_across_nodes_and_a_restart";
    let Some(browser) = Browser::launch_or_skip(test).await else {
        return;
    };
    let a = TestNode::start("a", &[]).await;
    let mut b = TestNode::start("b", &[&a.tcp_addr()]).await;
    wait_until(STEP, "B's mesh shows A connected", async || {
        let mesh = b.client().mesh().await.expect("B's mesh");
        mesh.peers
            .iter()
            .any(|p| p.peer_id == a.peer_id() && p.connected)
    })
    .await;

    let page_a = browser.new_page("A /").await;
    page_a.goto(&a.url("/")).await;
    let page_b = browser.new_page("B /").await;
    page_b.goto(&b.url("/")).await;
    wait_live(&page_a, "A's page").await;
    wait_live(&page_b, "B's page").await;
    // Set on B's page now: still there later means the page never reloaded.
    page_b.run("window.hearsayTestMark = 'no reload'").await;

    // B's mesh panel lists A, connected.
    page_b
        .wait_for(
            STEP,
            "B's mesh panel lists A as connected",
            &format!(
                "document.querySelector('#mesh-peers li[data-peer=' + {} + '][data-connected=\"1\"]') !== null",
                js(&format!("\"{}\"", a.peer_id()))
            ),
        )
        .await;

    // A post through A's form: fill the inputs, click the button.
    let text = "Hello from A's form <b>not bold</b> & ünïcödé";
    page_a
        .run(&format!(
            "document.getElementById('author').value = 'ann';
             document.getElementById('body').value = {};
             document.getElementById('submit').click();",
            js(text)
        ))
        .await;
    let mut id = String::new();
    wait_until(STEP, "A lists the post made through its page", async || {
        let posts = a.client().posts(10, None).await.expect("A's posts");
        match posts.iter().find(|p| p.body == text) {
            Some(p) => {
                assert_eq!(p.author.as_str(), "ann", "author from the form");
                id = p.id.to_string();
                true
            }
            None => false,
        }
    })
    .await;
    let want = Value::String(text.to_owned());
    for page in [&page_a, &page_b] {
        let shown = page
            .wait_for(STEP, "the form's post is shown", &shown_body(&id))
            .await;
        // Shown as text: the markup in it was not interpreted.
        assert_eq!(shown, want);
    }
    assert_eq!(
        page_b
            .run(&format!("{}.querySelector('.post-body b')", card(&id)))
            .await,
        Value::Null,
        "user text became markup on B's page"
    );
    assert_eq!(
        page_b
            .run(&format!(
                "{}.querySelector('.author').textContent",
                card(&id)
            ))
            .await,
        Value::String("ann".into())
    );

    // B restarts on the same HTTP port; A takes a post meanwhile.
    let status = b.stop().await;
    assert!(status.success(), "B stopped with {status}");
    page_b
        .wait_for(
            STEP,
            "B's page shows the lost connection",
            "document.getElementById('conn').dataset.state === 'reconnecting'",
        )
        .await;
    let while_down = a.create_post("posted on A while B was down").await;
    b.restart_same_http().await;
    let shown = page_b
        .wait_for(
            STEP,
            "B's open page shows the post made while B was down",
            &shown_body(&while_down),
        )
        .await;
    assert_eq!(shown, Value::String("posted on A while B was down".into()));
    wait_live(&page_b, "B's page after B's restart").await;

    // An edit on A: the whole body replaced, shown in place on B's page.
    let edited = "Edited on A: ünïcödé still counts in characters";
    a.edit(&id, 0, text.chars().count(), edited).await;
    let shown = page_b
        .wait_for(
            STEP,
            "B's page shows the edit",
            &format!(
                "{} === {} && {}",
                shown_body(&id),
                js(edited),
                format_args!("{}.querySelector('.edited') !== null", card(&id))
            ),
        )
        .await;
    assert_eq!(shown, Value::Bool(true));

    // A delete on A: B's page marks the post, in place.
    a.client().delete(&while_down).await.expect("deleting on A");
    page_b
        .wait_for(
            STEP,
            "B's page marks the deleted post",
            &format!(
                "{0}?.classList.contains('deleted') && {0}.querySelector('.tombstone') !== null",
                card(&while_down)
            ),
        )
        .await;
    // Still one card per post, and the same page all along.
    let cards = page_b
        .run(&format!(
            "[...document.querySelectorAll('#posts article')].filter(c => c.dataset.id === {} || c.dataset.id === {}).length",
            js(&id),
            js(&while_down)
        ))
        .await;
    assert_eq!(cards, Value::from(2));
    assert_eq!(
        page_b.run("window.hearsayTestMark").await,
        Value::String("no reload".into())
    );

    // B crashes (SIGKILL) and comes back: the same page resumes again.
    b.kill();
    page_b
        .wait_for(
            STEP,
            "B's page shows the lost connection after the crash",
            "document.getElementById('conn').dataset.state === 'reconnecting'",
        )
        .await;
    let after_crash = a.create_post("posted on A while B was crashed").await;
    b.restart_same_http().await;
    let shown = page_b
        .wait_for(
            STEP,
            "B's open page shows the post made while B was crashed",
            &shown_body(&after_crash),
        )
        .await;
    assert_eq!(
        shown,
        Value::String("posted on A while B was crashed".into())
    );

    // The permalink page on B shows that one post.
    let permalink = browser.new_page("B /p/{id}").await;
    permalink.goto(&b.url(&format!("/p/{id}"))).await;
    let shown = permalink
        .wait_for(STEP, "the permalink shows the post", &shown_body(&id))
        .await;
    assert_eq!(shown, Value::String(edited.into()));
    assert_eq!(
        permalink
            .run("document.querySelectorAll('#posts article').length")
            .await,
        Value::from(1)
    );
}

/// `GET /api/v0/mesh`: each node lists itself and the other, with the link's
/// address, a ping RTT and the revision the peer sent in its last sync
/// request; a peer whose link dropped stays listed, disconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mesh_shows_linked_peers_with_rtt_and_revision() {
    const FAST_SYNC: &str = "sync_interval_ms = 500\n";
    let a = TestNode::start_with_config("a", &[], FAST_SYNC).await;
    let mut b = TestNode::start_with_config("b", &[&a.tcp_addr()], FAST_SYNC).await;
    b.create_post("one post on B").await;
    let b_revision = b.revision().await;
    assert_eq!(b_revision, 1, "a post is one delta");

    let a_id = a.peer_id();
    let b_id = b.peer_id();
    wait_until(
        STEP,
        "A's mesh shows B connected, with an RTT and B's revision",
        async || {
            let mesh = a.client().mesh().await.expect("A's mesh");
            mesh.peers.iter().any(|p| {
                p.peer_id == b_id
                    && p.connected
                    && p.rtt_ms.is_some_and(|ms| ms > 0.0 && ms < 1000.0)
                    && p.revision == Some(b_revision)
            })
        },
    )
    .await;

    let mesh = a.client().mesh().await.expect("A's mesh");
    assert_eq!(mesh.this.peer_id, a_id);
    assert_eq!(mesh.this.region, "a");
    assert_eq!(format!("http://{}", mesh.this.http), a.url(""));
    let stats = a.stats().await;
    assert_eq!(
        Value::from(mesh.this.revision),
        stats["revision"],
        "self revision as in stats"
    );
    assert_eq!(mesh.peers.len(), 1, "A knows only B: {mesh:?}");
    let peer = &mesh.peers[0];
    assert_eq!(peer.region, None, "regions come with signed statuses");
    assert!(
        peer.addrs
            .iter()
            .any(|addr| addr.starts_with("/ip4/127.0.0.1/tcp/")),
        "B's link address: {peer:?}"
    );

    // B knows A as its join peer, connected.
    let mesh = b.client().mesh().await.expect("B's mesh");
    let peer = mesh
        .peers
        .iter()
        .find(|p| p.peer_id == a_id)
        .expect("B lists A");
    assert!(peer.connected, "{peer:?}");

    // B goes away: A keeps it listed, disconnected, without an RTT.
    b.kill();
    wait_until(STEP, "A's mesh shows B disconnected", async || {
        let mesh = a.client().mesh().await.expect("A's mesh");
        mesh.peers
            .iter()
            .any(|p| p.peer_id == b_id && !p.connected && p.rtt_ms.is_none())
    })
    .await;
}

/// An open event stream (every open page holds one) does not hold a node's
/// graceful stop: SIGTERM ends the stream and the node exits promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_an_open_event_stream_stops_promptly() {
    let mut node = TestNode::start("stream", &[]).await;
    let token = node.stats().await["token"]
        .as_str()
        .expect("stats token")
        .to_owned();
    let mut stream = node
        .http()
        .get(node.url(&format!("/api/v0/events?from={token}")))
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .expect("opening the event stream");
    assert_eq!(stream.status(), 200);
    let first = tokio::time::timeout(STEP, stream.chunk())
        .await
        .expect("a first chunk in time")
        .expect("reading the stream");
    assert!(first.is_some(), "the stream ended at once");

    let started = std::time::Instant::now();
    let status = node.stop().await;
    assert!(status.success(), "stopped with {status}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the stop took {:?}",
        started.elapsed()
    );
    // The stream ended with the node.
    let rest = tokio::time::timeout(STEP, async {
        let mut chunks = 0;
        while let Ok(Some(_)) = stream.chunk().await {
            chunks += 1;
            assert!(chunks < 10_000, "the stream goes on after the stop");
        }
    })
    .await;
    assert!(rest.is_ok(), "the stream still open after the node stopped");
}

/// Regenerates `docs/web.png` (the README's picture) from a running node's
/// page: `HEARSAY_SCREENSHOT_URL=http://127.0.0.1:8080/ cargo test --test web
/// -- --ignored docs_screenshot`. A page with an open event stream never lets
/// `chromium --screenshot --virtual-time-budget` finish, hence DevTools.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run on purpose, against a node with posts and peers"]
async fn docs_screenshot() {
    let url = std::env::var("HEARSAY_SCREENSHOT_URL")
        .expect("HEARSAY_SCREENSHOT_URL: the page to photograph, e.g. http://127.0.0.1:8080/");
    let browser = Browser::launch().await;
    let page = browser.new_page("screenshot").await;
    page.set_viewport(1200, 800).await;
    page.goto(&url).await;
    wait_live(&page, "the page").await;
    page.wait_for(
        STEP,
        "the mesh panel is filled",
        "document.querySelectorAll('#mesh-peers li.peer').length > 0",
    )
    .await;
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/web.png");
    page.screenshot(&out).await;
    eprintln!("wrote {}", out.display());
}
