//! `hearsay router` against real processes: three nodes at Frankfurt,
//! Virginia and Tokyo, and routers joined to the mesh as light members;
//! and a mesh with an operator, which takes in only a router it admitted.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestNode, binary, clear_node_env, wait_until};
use hearsay_admission::OperatorKey;
use hearsay_crdt::Keypair;
use hearsay_node::client::Client;
use hearsay_node::router::{ANNOUNCE_FILE, HOST_HEADER, RouterAnnouncement};
use serde_json::Value;

const SETTLE: Duration = Duration::from_secs(30);
const TOKYO: &str = "35.68,139.69";
const FRANKFURT: &str = "50.11,8.68";
const VIRGINIA: &str = "38.9,-77.0";
/// A client in Osaka: Tokyo is nearest, then Frankfurt, then Virginia.
const OSAKA: &str = "34.69,135.50";

/// A `hearsay router` process, killed when dropped.
struct TestRouter {
    child: Child,
    url: String,
    /// From `router.json`.
    peer_id: String,
    dir: tempfile::TempDir,
}

impl TestRouter {
    async fn start(join: &str) -> TestRouter {
        TestRouter::start_in(tempfile::tempdir().expect("router dir"), join).await
    }

    /// Starts a router on `dir`, which may hold its key and certificate
    /// already.
    async fn start_in(dir: tempfile::TempDir, join: &str) -> TestRouter {
        let mut cmd = Command::new(binary());
        clear_node_env(&mut cmd);
        cmd.args(["router", "--http", "127.0.0.1:0", "--join", join])
            .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--geo", FRANKFURT])
            .arg("--data-dir")
            .arg(dir.path())
            .env("RUST_LOG", "info,libp2p=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("router.log")).expect("log"),
            ));
        let child = cmd.spawn().expect("spawning hearsay router");
        let file: PathBuf = dir.path().join(ANNOUNCE_FILE);
        let deadline = Instant::now() + SETTLE;
        let announcement = loop {
            if let Some(a) = std::fs::read(&file)
                .ok()
                .and_then(|b| serde_json::from_slice::<RouterAnnouncement>(&b).ok())
            {
                break a;
            }
            assert!(
                Instant::now() < deadline,
                "the router wrote no {ANNOUNCE_FILE}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let url = announcement.http;
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        TestRouter {
            child,
            url,
            peer_id: announcement.peer_id,
            dir,
        }
    }

    /// A counter of the router's `/metrics` (0 when absent).
    async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.url))
            .await
            .expect("router metrics")
            .text()
            .await
            .expect("text");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    /// `GET path` with the client at `geo`: (status, serving host, body).
    async fn get(&self, path: &str, geo: &str) -> anyhow::Result<(u16, String, Value)> {
        let r = reqwest::Client::new()
            .get(format!("{}{path}", self.url))
            .header("x-client-geo", geo)
            .timeout(Duration::from_secs(40))
            .send()
            .await?;
        let status = r.status().as_u16();
        let host = r
            .headers()
            .get(HOST_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Ok((status, host, r.json().await?))
    }

    /// Peer ids of the ranking for a client at `lat,lon`.
    async fn ranking(&self, lat: &str, lon: &str) -> Vec<String> {
        let url = format!("{}/api/v0/route?lat={lat}&lon={lon}", self.url);
        let body: Value = reqwest::get(url)
            .await
            .expect("route")
            .json()
            .await
            .expect("json");
        body["body"]["hosts"]
            .as_array()
            .map(|hosts| {
                hosts
                    .iter()
                    .map(|h| h["peer_id"].as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for TestRouter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Three nodes at Frankfurt, Virginia, Tokyo, discovery off.
async fn mesh(prefix: &str) -> (TestNode, TestNode, TestNode) {
    let cfg = |geo: &str| format!("target_peers = 0\ngeo = \"{geo}\"\n");
    let fra = TestNode::start_with_config(&format!("{prefix}-fra"), &[], &cfg(FRANKFURT)).await;
    let join = fra.tcp_addr();
    let iad = TestNode::start_with_config(&format!("{prefix}-iad"), &[&join], &cfg(VIRGINIA)).await;
    let nrt = TestNode::start_with_config(&format!("{prefix}-nrt"), &[&join], &cfg(TOKYO)).await;
    (fra, iad, nrt)
}

async fn knows_all(router: &TestRouter) -> bool {
    router.ranking("0", "0").await.len() == 3
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_go_to_the_nearest_healthy_host_and_fail_over_without_errors() {
    let (fra, iad, mut nrt) = mesh("route").await;
    // Join through Virginia: the router finds the rest from statuses.
    let router = TestRouter::start(&iad.tcp_addr()).await;
    let second = TestRouter::start(&fra.tcp_addr()).await;
    wait_until(SETTLE, "both routers know the three hosts", async || {
        knows_all(&router).await && knows_all(&second).await
    })
    .await;

    let ranking = router.ranking("34.69", "135.50").await;
    assert_eq!(
        ranking,
        [nrt.peer_id(), fra.peer_id(), iad.peer_id()],
        "an Osaka client's ranking"
    );
    assert_eq!(
        second.ranking("34.69", "135.50").await,
        ranking,
        "a second router ranks the same"
    );
    assert_eq!(router.ranking("40.7", "-74.0").await[0], iad.peer_id());
    let (status, host, _) = router.get("/api/v0/stats", OSAKA).await.expect("GET");
    assert_eq!((status, host), (200, nrt.peer_id()));
    let (status, host, _) = router
        .get("/api/v0/stats", "40.7,-74.0")
        .await
        .expect("GET");
    assert_eq!((status, host), (200, iad.peer_id()));

    // A write through the router carries its token; a read with it, sent
    // anywhere, sees the write.
    let written = reqwest::Client::new()
        .post(format!("{}/api/v0/p", router.url))
        .header("x-client-geo", OSAKA)
        .json(&serde_json::json!({"author": "ann", "body": "via the router"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(written.status().as_u16(), 200);
    let token = written
        .headers()
        .get("x-hearsay-token")
        .and_then(|v| v.to_str().ok())
        .expect("token header")
        .to_owned();
    let post: Value = written.json().await.expect("json");
    let id = post["body"]["id"].as_str().expect("id").to_owned();
    let (status, _, read) = router
        .get(&format!("/api/v0/p/{id}?after={token}"), "40.7,-74.0")
        .await
        .expect("GET");
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["body"]["post"]["body"], "via the router", "{read}");

    // Tokyo dies. Every GET from then on succeeds, served by Frankfurt
    // (the next best for Osaka), the first ones after a retry.
    nrt.kill();
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut served = 0;
    while Instant::now() < deadline {
        let (status, host, body) = router.get("/api/v0/stats", OSAKA).await.expect("GET");
        assert_eq!(status, 200, "a GET failed after the host died: {body}");
        assert_eq!(host, fra.peer_id(), "served by the next best");
        served += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served > 20, "{served} requests in 4 s");
    // Once suspect (3 s of silence) Tokyo leaves the ranking.
    wait_until(SETTLE, "the dead host leaves the ranking", async || {
        !router
            .ranking("34.69", "135.50")
            .await
            .contains(&nrt.peer_id())
    })
    .await;
    let metrics = reqwest::get(format!("{}/metrics", router.url))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("hearsay_router_retries_total"),
        "router metrics: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_through_the_router_survives_its_hosts_death() {
    let (fra, iad, mut nrt) = mesh("sse").await;
    let router = TestRouter::start(&fra.tcp_addr()).await;
    wait_until(SETTLE, "the router knows the three hosts", async || {
        knows_all(&router).await
    })
    .await;
    // Opened for an Osaka client: served by Tokyo.
    let client = Client::new(&router.url);
    let mut stream = client
        .events(None, &[("lat", "34.69"), ("lon", "135.50")])
        .await
        .expect("event stream through the router");
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(iad.create_post(&format!("before {i}")).await);
    }
    nrt.kill();
    for i in 0..3 {
        ids.push(fra.create_post(&format!("after {i}")).await);
    }
    // Every post arrives once, in one stream, across the host's death.
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + SETTLE;
    while seen.len() < ids.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "posts seen: {seen:?} of {ids:?}");
        let event = tokio::time::timeout(left, stream.next())
            .await
            .expect("an event before the deadline")
            .expect("the stream continues")
            .expect("the stream is not closed");
        if event.event == "post" {
            let data: Value = serde_json::from_str(&event.data).expect("event json");
            let id = data["post"]["id"].as_str().expect("post id").to_owned();
            assert!(!seen.contains(&id), "{id} delivered twice");
            seen.push(id);
        }
    }
    let mut expected = ids.clone();
    expected.sort();
    seen.sort();
    assert_eq!(seen, expected);
    let metrics = reqwest::get(format!("{}/metrics", router.url))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("hearsay_router_sse_resumes_total ") && !l.ends_with(" 0")),
        "the stream was resumed once at least: {metrics}"
    );
}

/// The peer id of a node key, as libp2p shows it.
fn peer_id_of(key: &Keypair) -> String {
    hearsay_node::node::libp2p_identity(key)
        .public()
        .to_peer_id()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_mesh_with_an_operator_only_an_admitted_router_sees_the_hosts() {
    let work = tempfile::tempdir().expect("operator dir");
    let op = OperatorKey::generate();
    let op_file = work.path().join("operator.key");
    op.save(&op_file).expect("writing the operator key");
    let cfg = |geo: &str| format!("target_peers = 0\ngeo = \"{geo}\"\n");
    let (kf, kt) = (Keypair::generate(), Keypair::generate());
    let fra = TestNode::start_admitted("op-fra", &[], Some(&op), &kf, &cfg(FRANKFURT)).await;
    let nrt =
        TestNode::start_admitted("op-nrt", &[&fra.tcp_addr()], Some(&op), &kt, &cfg(TOKYO)).await;

    // The operator admits a router by its data directory, as a node:
    // `hearsay operator admit --data-dir DIR --out DIR/node.cert`, which
    // the router then reads by default.
    let admitted_dir = tempfile::tempdir().expect("router dir");
    let router_key = Keypair::generate();
    router_key
        .save(&admitted_dir.path().join(hearsay_node::node::KEY_FILE))
        .expect("writing the router key");
    let mut admit = Command::new(binary());
    clear_node_env(&mut admit);
    let out = admit
        .args(["operator", "admit", "--region", "router", "--key"])
        .arg(&op_file)
        .arg("--data-dir")
        .arg(admitted_dir.path())
        .arg("--out")
        .arg(
            admitted_dir
                .path()
                .join(hearsay_node::config::CERTIFICATE_FILE),
        )
        .stdin(Stdio::null())
        .output()
        .expect("running hearsay operator admit");
    assert!(
        out.status.success(),
        "hearsay operator admit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let admitted = TestRouter::start_in(admitted_dir, &fra.tcp_addr()).await;
    assert_eq!(
        admitted.peer_id,
        peer_id_of(&router_key),
        "the router runs with the key in its data directory"
    );
    // A router with no certificate, on the same mesh: it makes its own key
    // and keeps it in its data directory.
    let outsider = TestRouter::start(&fra.tcp_addr()).await;
    let kept = Keypair::load(&outsider.dir.path().join(hearsay_node::node::KEY_FILE))
        .expect("the router keeps its key");
    assert_eq!(outsider.peer_id, peer_id_of(&kept));

    wait_until(SETTLE, "the admitted router ranks both hosts", async || {
        admitted.ranking("34.69", "135.50").await == [nrt.peer_id(), fra.peer_id()]
    })
    .await;
    let (status, host, _) = admitted.get("/api/v0/stats", OSAKA).await.expect("GET");
    assert_eq!((status, host), (200, nrt.peer_id()));

    // The node it joined through refuses the outsider: pending, it is sent
    // nothing, and its link is closed when the handshake times out.
    wait_until(
        SETTLE,
        "Frankfurt closes the outsider router's link (no certificate)",
        async || {
            fra.metric("hearsay_peer_disconnects_total", "reason=\"not_admitted\"")
                .await
                >= 1.0
        },
    )
    .await;
    assert!(
        outsider.ranking("0", "0").await.is_empty(),
        "a router without a certificate knows no host"
    );
    assert_eq!(
        outsider
            .metric("hearsay_router_statuses_received_total")
            .await,
        0.0,
        "a router without a certificate receives no status"
    );
    let (status, _, body) = outsider.get("/api/v0/stats", OSAKA).await.expect("GET");
    assert_eq!(status, 503, "{body}");
    assert!(
        admitted
            .metric("hearsay_router_statuses_received_total")
            .await
            > 0.0
    );
}
