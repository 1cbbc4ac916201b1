//! Users, signed posts, follows, timelines, edits and deletes across real
//! node processes on loopback, joined as a chain A – B – C (B starts first;
//! A and C each join only B). Reads on other nodes wait for the writer's
//! token (`?after=`) where one is at hand.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{TestNode, assert_error, binary, proxy_to, wait_until};
use hearsay_crdt::signing::{self, Action};
use hearsay_crdt::{Keypair, NewPost, Post, PostId, PostSignature, Profile, UserName};
use hearsay_node::client::{StatusCode, now_ms};
use serde_json::{Value, json};

/// How long a write may take to reach every node (generous: anti-entropy
/// repairs anything gossip missed within seconds).
const REPLICATION: Duration = Duration::from_secs(30);
/// `wait_ms` of the `?after=` reads.
const WAIT_MS: u64 = 20_000;
/// No kad-driven dials: a node reaches only the peers it joined.
const ONLY_JOINED: &str = "target_peers = 0\nsync_interval_ms = 500\n";

async fn peers(node: &TestNode) -> u64 {
    node.stats().await["peers"].as_u64().unwrap_or(0)
}

fn name(s: &str) -> UserName {
    UserName::new(s).unwrap()
}

/// Starts B, then A and C, each joining only B.
async fn chain() -> (TestNode, TestNode, TestNode) {
    let b = TestNode::start("b", &[]).await;
    let b_addr = b.tcp_addr();
    let a = TestNode::start("a", &[&b_addr]).await;
    let c = TestNode::start("c", &[&b_addr]).await;
    (a, b, c)
}

/// `GET path` on `node` once it holds what `token` names (the body).
async fn read_after_value(node: &TestNode, path: &str, token: &str) -> Value {
    node.client()
        .get_after(path, token, WAIT_MS)
        .await
        .unwrap_or_else(|e| panic!("{}: GET {path} after the token: {e}", node.name))
}

/// [`read_after_value`], as the type asked for.
macro_rules! read_after {
    ($node:expr, $path:expr, $token:expr) => {{
        let (node, path): (&TestNode, &str) = ($node, $path);
        let body = read_after_value(node, path, $token).await;
        serde_json::from_value(body).unwrap_or_else(|e| panic!("{}: GET {path}: {e}", node.name))
    }};
}

/// `hearsay_user_refusals_total{reason=...}` from the node's metrics.
async fn refusals(node: &TestNode, reason: &str) -> u64 {
    let text = node.client().metrics().await.expect("metrics");
    let prefix = format!("hearsay_user_refusals_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

async fn version_vectors_equal(nodes: &[&TestNode]) -> bool {
    let first = nodes[0].version_vector().await;
    for n in &nodes[1..] {
        if n.version_vector().await != first {
            return false;
        }
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_posts_verify_on_every_node_and_forgeries_are_refused() {
    let (a, b, c) = chain().await;
    let (ann, ann_key, mallory) = (name("ann"), Keypair::generate(), Keypair::generate());

    // Register ann at A; C sees her key once it holds the token.
    let registered = a
        .client()
        .register_user(&ann, &ann_key, Some("Ann"))
        .await
        .expect("registering ann");
    assert_eq!(registered.value.public_key, Some(ann_key.id()));
    let at_c: Profile = read_after!(&c, "/api/v0/users/ann", &registered.token);
    assert_eq!(at_c.public_key, Some(ann_key.id()));
    assert_eq!(at_c.display_name.as_deref(), Some("Ann"));

    // The name is taken for any other key, on any node; the same key may
    // register again.
    let taken = c.client().register_user(&ann, &mallory, None).await;
    assert_eq!(
        taken.as_ref().err().and_then(|e| e.status()),
        Some(StatusCode::CONFLICT),
        "{taken:?}"
    );
    c.client()
        .register_user(&ann, &ann_key, Some("Ann"))
        .await
        .expect("registering again with the same key");
    assert_eq!(refusals(&c, "name_taken").await, 1);
    // A registration signed by another key than the one it names.
    let forged = json!({
        "name": "eve",
        "public_key": ann_key.id(),
        "signature": signing::signature_to_hex(&signing::sign_registration(&mallory, &name("eve"), None)),
    });
    let answer = b.post_json("/api/v0/users", &forged).await.unwrap();
    assert_error(&answer, StatusCode::BAD_REQUEST, "forged registration");
    let reserved = json!({
        "name": "anonymous",
        "public_key": mallory.id(),
        "signature": signing::signature_to_hex(&signing::sign_registration(&mallory, &name("anonymous"), None)),
    });
    let answer = b.post_json("/api/v0/users", &reserved).await.unwrap();
    assert_error(&answer, StatusCode::BAD_REQUEST, "the reserved name");

    // A signed post at A verifies on every node.
    let posted = a
        .client()
        .create_signed_post(&ann, "signed at A", None, &ann_key)
        .await
        .expect("a signed post");
    let id = posted.value.id;
    assert!(posted.value.signed);
    for node in [&a, &b, &c] {
        let read: Value = read_after!(node, &format!("/api/v0/p/{id}"), &posted.token);
        let post: Post = serde_json::from_value(read["post"].clone()).unwrap();
        assert!(post.signed, "{}: {post:?}", node.name);
        assert_eq!(post.author_key, Some(ann_key.id()), "{}", node.name);
        assert_eq!(post.body, "signed at A");
    }
    // Her timeline at C has it.
    let timeline: Vec<Post> = read_after!(&c, "/api/v0/users/ann/timeline", &posted.token);
    assert_eq!(timeline.iter().map(|p| p.id).collect::<Vec<_>>(), [id]);

    // ann's key, but signed over other words: forged.
    let said = NewPost {
        author: ann.clone(),
        body: "what ann said".into(),
        reply_to: None,
    };
    let signature = PostSignature::sign(&ann_key, PostId::generate(now_ms()), &said);
    let not_said = NewPost {
        body: "what ann did not say".into(),
        ..said.clone()
    };
    let e = c
        .client()
        .create_post_signed_as(&not_said, &signature)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::BAD_REQUEST), "{e}");
    assert!(e.to_string().contains("does not verify"), "{e}");
    assert_eq!(refusals(&c, "bad_signature").await, 1);
    // A true signature by a key that is not ann's.
    let e = c
        .client()
        .create_signed_post(&ann, "mallory as ann", None, &mallory)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::BAD_REQUEST), "{e}");
    assert!(e.to_string().contains("not the key registered"), "{e}");
    // Unsigned, under her name.
    let answer = c
        .post_json("/api/v0/p", &json!({"author": "ann", "body": "impostor"}))
        .await
        .unwrap();
    assert_error(&answer, StatusCode::BAD_REQUEST, "unsigned post as ann");
    // The same signed post again: a replay.
    let signature = PostSignature::sign(&ann_key, PostId::generate(now_ms()), &said);
    c.client()
        .create_post_signed_as(&said, &signature)
        .await
        .expect("the first time");
    let e = c
        .client()
        .create_post_signed_as(&said, &signature)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::CONFLICT), "{e}");
    // An id an hour old.
    let old = PostSignature::sign(&ann_key, PostId::generate(now_ms() - 3_600_000), &said);
    let e = c
        .client()
        .create_post_signed_as(&said, &old)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::BAD_REQUEST), "{e}");
    assert!(e.to_string().contains("clock"), "{e}");
    // Half the signature fields, or junk in them.
    for body in [
        json!({"author": "ann", "body": "x", "id": id}),
        json!({"author": "ann", "body": "x", "id": "zz", "author_key": ann_key.id(), "signature": "00"}),
    ] {
        let answer = c.post_json("/api/v0/p", &body).await.unwrap();
        assert_error(&answer, StatusCode::BAD_REQUEST, &body.to_string());
    }
    // Malformed requests on the user routes: 400 with a message.
    let junk = [
        ("/api/v0/users", "{nope"),
        ("/api/v0/users", r#"{"name": "x"}"#),
        (
            "/api/v0/users",
            r#"{"name": "x", "public_key": "00", "signature": "00"}"#,
        ),
        ("/api/v0/users/ann/follows/bob", "{nope"),
        ("/api/v0/users/ann/follows/bob", r#"{"at_ms": 1}"#),
        (
            "/api/v0/users/ann/follows/bob",
            r#"{"at_ms": -1, "signature": "00"}"#,
        ),
        ("/api/v0/users/ann/follows/b%20b", ""),
    ];
    for (path, body) in junk {
        let answer = c.post_raw(path, "application/json", body).await.unwrap();
        assert_error(&answer, StatusCode::BAD_REQUEST, &format!("{path} {body}"));
    }
    let answer = c
        .send(
            c.http()
                .delete(c.url(&format!("/api/v0/p/{id}")))
                .body(r#"{"signature": "00"}"#),
        )
        .await
        .unwrap();
    assert_error(
        &answer,
        StatusCode::BAD_REQUEST,
        "a delete with half a signature",
    );

    // Nothing refused was stored: ann has two posts everywhere.
    wait_until(REPLICATION, "equal version vectors", async || {
        version_vectors_equal(&[&a, &b, &c]).await
    })
    .await;
    for node in [&a, &b, &c] {
        let posts = node.client().timeline(&ann, 10, None).await.unwrap();
        assert_eq!(posts.len(), 2, "{}", node.name);
        assert!(posts.iter().all(|p| p.signed), "{}", node.name);
    }
}

/// Waits until `user`'s profile and home timeline read the same on every
/// node (with equal version vectors), and returns them.
async fn converged_home(nodes: &[&TestNode], user: &UserName) -> (Profile, Vec<Post>) {
    let mut seen = None;
    wait_until(
        REPLICATION,
        &format!("{user}'s profile and home are equal on every node"),
        async || {
            if !version_vectors_equal(nodes).await {
                return false;
            }
            let mut answers = Vec::new();
            for n in nodes {
                let profile = n.client().user(user).await.unwrap();
                let home = n.client().home(user, 500, None).await.unwrap();
                answers.push((profile, home));
            }
            let equal = answers.iter().all(|x| *x == answers[0]);
            seen = answers.pop();
            equal
        },
    )
    .await;
    seen.expect("an answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_and_home_timelines_converge_including_concurrent_follow_and_unfollow() {
    // No kad-driven dials: C's only link (to B) runs through a proxy, so
    // cutting the proxy isolates C.
    let b = TestNode::start_with_config("b", &[], ONLY_JOINED).await;
    let a = TestNode::start_with_config("a", &[&b.tcp_addr()], ONLY_JOINED).await;
    let (proxy, b_via_proxy) = proxy_to(&b, Duration::ZERO).await;
    let c = TestNode::start_with_config("c", &[&b_via_proxy], ONLY_JOINED).await;
    let (ann, bob, cy, dee) = (name("ann"), name("bob"), name("cy"), name("dee"));
    let ann_key = Keypair::generate();
    let registered = a
        .client()
        .register_user(&ann, &ann_key, None)
        .await
        .unwrap();
    let _: Profile = read_after!(&c, "/api/v0/users/ann", &registered.token);
    let _: Profile = read_after!(&b, "/api/v0/users/ann", &registered.token);

    // bob, cy and dee are users without keys; they post unsigned.
    let mut posts = Vec::new();
    for (node, who) in [
        (&b, "bob"),
        (&c, "cy"),
        (&a, "dee"),
        (&b, "bob"),
        (&c, "cy"),
    ] {
        let p = node
            .client()
            .create_post_acked(Some(who), &format!("{who} at {}", node.name), None)
            .await
            .unwrap();
        posts.push(p.value);
    }

    // ann follows bob at A and cy at C, signed.
    let f1 = a.client().follow(&ann, &bob, Some(&ann_key)).await.unwrap();
    assert_eq!(f1.value.follows, std::slice::from_ref(&bob));
    let _: Profile = read_after!(&c, "/api/v0/users/ann", &f1.token);
    let f2 = c.client().follow(&ann, &cy, Some(&ann_key)).await.unwrap();
    assert_eq!(f2.value.follows, [bob.clone(), cy.clone()]);
    // Her home at B, once B holds the follow: bob's and cy's posts.
    let home: Vec<Post> = read_after!(&b, "/api/v0/users/ann/home", &f2.token);
    let mut want: Vec<PostId> = posts
        .iter()
        .filter(|p| p.author == bob || p.author == cy)
        .map(|p| p.id)
        .collect();
    want.sort_unstable_by(|x, y| y.cmp(x));
    assert_eq!(home.iter().map(|p| p.id).collect::<Vec<_>>(), want);
    // Pages of one, following `before`, give the same list.
    let mut paged = Vec::new();
    loop {
        let page = b
            .client()
            .home(&ann, 1, paged.last().copied())
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        paged.extend(page.iter().map(|p| p.id));
    }
    assert_eq!(paged, want);

    // Forged and unsigned follows of a user with a key: refused.
    let mallory = Keypair::generate();
    let e = b
        .client()
        .follow(&ann, &dee, Some(&mallory))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::BAD_REQUEST), "{e}");
    assert!(e.to_string().contains("does not verify"), "{e}");
    assert_eq!(refusals(&b, "bad_signature").await, 1);
    let e = b.client().follow(&ann, &dee, None).await.unwrap_err();
    assert_eq!(e.status(), Some(StatusCode::BAD_REQUEST), "{e}");
    // A signature over a follow of someone else, sent for dee.
    let at_ms = now_ms();
    let other = Action::Follow {
        user: &ann,
        whom: &cy,
    };
    let body = json!({"at_ms": at_ms, "signature": signing::signature_to_hex(&other.sign(&ann_key, at_ms))});
    let answer = b
        .post_json("/api/v0/users/ann/follows/dee", &body)
        .await
        .unwrap();
    assert_error(&answer, StatusCode::BAD_REQUEST, "a moved signature");
    // The same signed request twice: the second is a replay.
    let at_ms = now_ms();
    let follow_dee = Action::Follow {
        user: &ann,
        whom: &dee,
    };
    let body = json!({"at_ms": at_ms, "signature": signing::signature_to_hex(&follow_dee.sign(&ann_key, at_ms))});
    let first = b
        .post_json("/api/v0/users/ann/follows/dee", &body)
        .await
        .unwrap();
    assert_eq!(first.status, StatusCode::OK, "{}", first.json);
    let again = b
        .post_json("/api/v0/users/ann/follows/dee", &body)
        .await
        .unwrap();
    assert_error(&again, StatusCode::CONFLICT, "a replayed follow");
    // Bad input on the read routes.
    for path in [
        "/api/v0/users/ann/home?limit=0",
        "/api/v0/users/ann/timeline?limit=501",
        "/api/v0/users/ann/home?before=nope",
        "/api/v0/users/a%20b/timeline",
    ] {
        let answer = a.get(path).await.unwrap();
        assert_error(&answer, StatusCode::BAD_REQUEST, path);
    }

    // Races: at A a follow, at C an unfollow of the same pair, neither
    // seeing the other (C is cut off: its only link runs through a proxy),
    // for a user without a key (bob -> dee) and for ann (-> dee), signed.
    // C follows first, so that it has a follow to remove.
    let eve = name("eve");
    proxy.partition();
    wait_until(REPLICATION, "C and B notice the cut link", async || {
        peers(&c).await == 0 && peers(&b).await == 1
    })
    .await;
    for (user, key) in [(&bob, None), (&ann, Some(&ann_key))] {
        c.client().follow(user, &eve, key).await.unwrap();
    }
    let (at_a, at_c, ann_at_a, ann_at_c) = tokio::join!(
        a.client().follow(&bob, &eve, None),
        c.client().unfollow(&bob, &eve, None),
        a.client().follow(&ann, &eve, Some(&ann_key)),
        c.client().unfollow(&ann, &eve, Some(&ann_key)),
    );
    assert!(at_a.unwrap().value.follows.contains(&eve));
    assert!(!at_c.unwrap().value.follows.contains(&eve));
    assert!(ann_at_a.unwrap().value.follows.contains(&eve));
    assert!(!ann_at_c.unwrap().value.follows.contains(&eve));
    // eve posts at A, so that the outcome shows in the home timelines.
    a.client()
        .create_post(Some("eve"), "eve at A", None)
        .await
        .unwrap();
    proxy.heal();
    let (bob_profile, bob_home) = converged_home(&[&a, &b, &c], &bob).await;
    let (ann_profile, ann_home) = converged_home(&[&a, &b, &c], &ann).await;
    // Whatever the outcome, every node agrees, and the home timeline
    // follows the profile.
    for (profile, home) in [(&bob_profile, &bob_home), (&ann_profile, &ann_home)] {
        for p in home {
            assert!(profile.follows.contains(&p.author), "{profile:?} {home:?}");
        }
        assert_eq!(
            profile.follows.contains(&eve),
            home.iter().any(|p| p.author == eve),
            "{profile:?} {home:?}"
        );
    }
    assert!(ann_profile.follows.contains(&bob) && ann_profile.follows.contains(&cy));

    // Unfollow, signed: bob's posts leave her home on every node.
    let gone = a
        .client()
        .unfollow(&ann, &bob, Some(&ann_key))
        .await
        .unwrap();
    for node in [&a, &b, &c] {
        let home: Vec<Post> = read_after!(node, "/api/v0/users/ann/home", &gone.token);
        assert!(home.iter().all(|p| p.author != bob), "{}", node.name);
        assert!(home.iter().any(|p| p.author == cy), "{}", node.name);
    }
}

/// Runs `hearsay ARGS` with `home` as `HEARSAY_HOME`: success, stdout,
/// stderr.
fn hearsay(home: &Path, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(binary());
    cmd.args(args)
        .env("HEARSAY_HOME", home)
        .env_remove("HEARSAY_NODE")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null());
    let out = cmd.output().expect("run hearsay");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`hearsay`], panicking unless it succeeds; its stdout as JSON.
fn hearsay_json(home: &Path, args: &[&str]) -> Value {
    let (ok, out, err) = hearsay(home, args);
    assert!(ok, "hearsay {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("hearsay {args:?}: {e}: {out}"))
}

async fn body_everywhere(nodes: &[&TestNode], id: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    for n in nodes {
        bodies.push(n.post_body(id).await.unwrap_or_default());
    }
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_registers_posts_signed_edits_and_deletes_and_edits_merge() {
    let (a, b, c) = chain().await;
    let home = tempfile::tempdir().unwrap();
    let (ua, ub, uc) = (
        a.client().base_url().to_owned(),
        b.client().base_url().to_owned(),
        c.client().base_url().to_owned(),
    );

    let created = hearsay_json(
        home.path(),
        &["user", "new", "ann", "--node", &ua, "--display-name", "Ann"],
    );
    let key_file = home.path().join("users/ann.key");
    assert_eq!(created["key_file"], json!(key_file));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the key file is private");
    }
    assert_eq!(created["registered"]["profile"]["display_name"], "Ann");
    let token = created["registered"]["token"].as_str().unwrap().to_owned();
    let _: Profile = read_after!(&c, "/api/v0/users/ann", &token);
    // Another HEARSAY_HOME, another key: the name is taken.
    let elsewhere = tempfile::tempdir().unwrap();
    let (ok, _, err) = hearsay(elsewhere.path(), &["user", "new", "ann", "--node", &uc]);
    assert!(!ok && err.contains("taken"), "{err}");

    let post = hearsay_json(
        home.path(),
        &["post", "--node", &ua, "--as", "ann", "hello world"],
    );
    assert_eq!(post["signed"], true);
    let id = post["id"].as_str().unwrap().to_owned();
    wait_until(REPLICATION, "C holds ann's post", async || {
        c.post(&id).await.is_some()
    })
    .await;

    // A signed post edited from the CLI at C: signed with ann's key, found
    // in HEARSAY_HOME from the post's author.
    let edited = hearsay_json(
        home.path(),
        &["edit", "--node", &uc, "--body", "hello brave world", &id],
    );
    assert_eq!(edited["body"], "hello brave world");
    assert_eq!(edited["signed"], true);
    // Without the key, the CLI says why it cannot.
    let no_keys = tempfile::tempdir().unwrap();
    let (ok, _, err) = hearsay(
        no_keys.path(),
        &["edit", "--node", &uc, "--pos", "0", "--insert", "x", &id],
    );
    assert!(!ok && err.contains("signed by ann"), "{err}");
    // Unsigned over HTTP: refused by the node.
    let answer = c
        .patch_json(
            &format!("/api/v0/p/{id}"),
            &json!({"pos": 0, "insert": "x"}),
        )
        .await
        .unwrap();
    assert_error(
        &answer,
        StatusCode::BAD_REQUEST,
        "an unsigned edit of a signed post",
    );

    // Two CLI edits at once, at A and at C: both land, merged as text.
    wait_until(REPLICATION, "every node has the edit", async || {
        body_everywhere(&[&a, &b, &c], &id)
            .await
            .iter()
            .all(|b| b == "hello brave world")
    })
    .await;
    let end = "hello brave world".chars().count().to_string();
    let mut at_a = Command::new(binary());
    at_a.args(["edit", "--node", &ua, "--pos", "0", "--insert", "[A] ", &id]);
    let mut at_c = Command::new(binary());
    at_c.args([
        "edit", "--node", &uc, "--pos", &end, "--insert", " [C]", &id,
    ]);
    let mut running = Vec::new();
    for cmd in [&mut at_a, &mut at_c] {
        cmd.env("HEARSAY_HOME", home.path())
            .env_remove("HEARSAY_NODE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        running.push(cmd.spawn().expect("run hearsay edit"));
    }
    for child in running {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut bodies = Vec::new();
    wait_until(
        REPLICATION,
        "one body with both edits everywhere",
        async || {
            bodies = body_everywhere(&[&a, &b, &c], &id).await;
            bodies.iter().all(|x| *x == bodies[0])
                && bodies[0].contains("[A] ")
                && bodies[0].contains(" [C]")
        },
    )
    .await;
    assert!(bodies[0].contains("hello brave"), "{}", bodies[0]);

    // Concurrent edits of an unsigned post over HTTP merge too.
    let plain = a.create_post("plain text").await;
    wait_until(REPLICATION, "C holds the plain post", async || {
        c.post(&plain).await.is_some()
    })
    .await;
    let (ea, ec) = tokio::join!(
        a.client().edit(&plain, 0, 0, "<"),
        c.client().edit(&plain, 10, 0, ">")
    );
    ea.unwrap();
    ec.unwrap();
    wait_until(
        REPLICATION,
        "the plain post merges everywhere",
        async || {
            let bodies = body_everywhere(&[&a, &b, &c], &plain).await;
            bodies.iter().all(|x| *x == bodies[0])
                && bodies[0].contains('<')
                && bodies[0].contains('>')
        },
    )
    .await;

    // Follows, timelines and home from the CLI.
    hearsay_json(home.path(), &["user", "new", "bob", "--node", &ub]);
    let bobs = hearsay_json(
        home.path(),
        &["post", "--node", &ub, "--as", "bob", "bob's"],
    );
    let bob_id = bobs["id"].as_str().unwrap().to_owned();
    wait_until(REPLICATION, "A holds bob's post and key", async || {
        a.post(&bob_id).await.is_some()
    })
    .await;
    let profile = hearsay_json(home.path(), &["follow", "--node", &ua, "ann", "bob"]);
    assert_eq!(profile["follows"], json!(["bob"]));
    let shown = hearsay_json(home.path(), &["user", "show", "--node", &ua, "ann"]);
    assert_eq!(shown["follows"], json!(["bob"]));
    let home_posts = hearsay_json(home.path(), &["home", "--node", &ua, "ann"]);
    assert_eq!(home_posts[0]["id"], json!(bob_id));
    let timeline = hearsay_json(home.path(), &["timeline", "--node", &ua, "ann"]);
    assert_eq!(timeline[0]["id"], json!(id));
    let profile = hearsay_json(home.path(), &["unfollow", "--node", &ua, "ann", "bob"]);
    assert_eq!(profile["follows"], json!([]));

    // Delete from the CLI at B: deleted on every node, gone from listings.
    let deleted = hearsay_json(home.path(), &["delete", "--node", &ub, &id]);
    assert_eq!(deleted["deleted"], true);
    for node in [&a, &b, &c] {
        wait_until(
            REPLICATION,
            &format!("{} shows the post deleted", node.name),
            async || node.post(&id).await.is_some_and(|p| p["deleted"] == true),
        )
        .await;
        let listed = node.client().posts(500, None).await.unwrap();
        assert!(
            listed.iter().all(|p| p.id.to_string() != id),
            "{}",
            node.name
        );
        let timeline = node
            .client()
            .timeline(&name("ann"), 500, None)
            .await
            .unwrap();
        assert!(timeline.is_empty(), "{}: {timeline:?}", node.name);
    }
    // Bad input from the CLI is a clear error, not a panic.
    let (ok, _, err) = hearsay(home.path(), &["delete", "--node", &ua, "not-an-id"]);
    assert!(!ok && err.contains("not a valid post id"), "{err}");
    let (ok, _, err) = hearsay(home.path(), &["user", "new", "a b"]);
    assert!(!ok && err.contains("user name"), "{err}");
}
