//! Harness of the integration tests: real `hearsay node` processes on
//! loopback, driven over their HTTP API.
//!
//! - [`binary`] builds the `hearsay` binary once per test process and finds it
//!   next to the test executable (`target/<profile>/hearsay`).
//! - [`TestNode`] is a thin wrapper over the node launcher
//!   ([`hearsay_node::launch`]) and the typed client
//!   ([`hearsay_node::client`]): one node in its own temporary data directory
//!   (its log printed when a test panics), killed, stopped and restarted on
//!   the same directory, with helpers that panic naming the node.
//! - Convergence is checked by content: [`TestNode::version_vector`] refuses a
//!   missing or empty vector, and [`TestNode::contents`] reads every post.
//! - [`wait_until`] polls a condition, bounded in time and in count.
//! - [`proxy::Proxy`] adds latency to a link, or cuts it (a partition).
//! - [`browser::Browser`] drives headless Chromium over DevTools (the web
//!   page's tests).

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod browser;
pub mod netns;
pub use hearsay_node::proxy;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hearsay_crdt::Post;
pub use hearsay_node::client::Answer;
use hearsay_node::client::{Client, ClientError, StatusCode};
use hearsay_node::launch::{Launch, NodeProcess};
use hearsay_node::node::Announcement;
use serde_json::Value;
use tempfile::TempDir;

/// Timeout of one HTTP request.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Poll period of [`wait_until`].
pub const POLL: Duration = Duration::from_millis(50);
/// Lines of a node's log printed when a test fails.
const LOG_TAIL_LINES: usize = 80;

/// Removes the node's configuration variables (`HEARSAY_*`, from the key
/// table) from `cmd`, so the caller's environment cannot change the nodes.
pub fn clear_node_env(cmd: &mut Command) {
    for key in hearsay_node::config::KEYS {
        cmd.env_remove(key.env_var());
    }
}

/// The `hearsay` binary, built once per test process.
///
/// The test executable lives in `target/<profile>/deps/`; the binary is
/// `target/<profile>/hearsay`. `cargo build` makes it up to date (a no-op
/// when it already is).
pub fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        // Another build under test (e.g. an older one, for a baseline).
        if let Some(other) = std::env::var_os("HEARSAY_TEST_BINARY") {
            let other = PathBuf::from(other);
            eprintln!("hearsay binary {} (HEARSAY_TEST_BINARY)", other.display());
            return other;
        }
        let exe = std::env::current_exe().expect("path of the test executable");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test executable is in target/<profile>/deps/")
            .to_path_buf();
        let binary = profile_dir.join(format!("hearsay{}", std::env::consts::EXE_SUFFIX));
        let mut build = Command::new(env!("CARGO"));
        build
            .args(["build", "-p", "hearsay-cli", "--bin", "hearsay"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null());
        // Cargo runs tests with variables describing the test crate
        // (CARGO_MANIFEST_DIR, CARGO_PKG_NAME, ...). Build scripts that watch
        // them (ring's does) would see them change and rebuild, and rebuild
        // again on the next plain `cargo build`: build in a clean environment.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if is_test_crate_var(&name) {
                build.env_remove(&*name);
            }
        }
        match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => {}
            Some("release") => {
                build.arg("--release");
            }
            Some(other) => {
                build.args(["--profile", other]);
            }
        }
        let started = Instant::now();
        let out = build.output().expect("running cargo build");
        assert!(
            out.status.success(),
            "cargo build -p hearsay-cli failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            binary.is_file(),
            "cargo build succeeded but {} does not exist",
            binary.display()
        );
        eprintln!(
            "hearsay binary {} (cargo build took {:?})",
            binary.display(),
            started.elapsed()
        );
        binary
    })
}

/// Whether `name` is one of the variables Cargo sets for a test process
/// (rather than configuration a user set for Cargo).
fn is_test_crate_var(name: &str) -> bool {
    const PREFIXES: [&str; 5] = [
        "CARGO_PKG_",
        "CARGO_MANIFEST_",
        "CARGO_CRATE_",
        "CARGO_BIN_",
        "CARGO_CFG_",
    ];
    const NAMES: [&str; 4] = [
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
        "OUT_DIR",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p)) || NAMES.contains(&name)
}

/// Polls `check` every [`POLL`] until it returns true; panics naming `what`
/// after `timeout`. Bounded in time and in the number of polls.
pub async fn wait_until(timeout: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    let max_polls = timeout.as_millis() / POLL.as_millis() + 2;
    for _ in 0..max_polls {
        if check().await {
            return;
        }
        if started.elapsed() >= timeout {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    panic!("timed out after {timeout:?} waiting until {what}");
}

/// Asserts an error answer: the expected code and the error envelope
/// `{"status": "ERROR", "error": "<non-empty message>"}`.
pub fn assert_error(answer: &Answer, expected: StatusCode, what: &str) {
    assert_eq!(
        answer.status, expected,
        "{what}: expected {expected}, got {}: {}",
        answer.status, answer.json
    );
    assert!(
        answer.error_message().is_some(),
        "{what}: not an error envelope with a message: {}",
        answer.json
    );
}

/// One `hearsay node` process with its own data directory.
pub struct TestNode {
    pub name: String,
    process: NodeProcess,
    dir: TempDir,
}

impl std::fmt::Debug for TestNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNode")
            .field("name", &self.name)
            .field("dir", &self.dir.path())
            .field("pid", &self.process.pid())
            .finish_non_exhaustive()
    }
}

impl TestNode {
    /// Starts a node in region `name`, joining the given multiaddrs, and
    /// waits until it has announced its addresses and answers health.
    pub async fn start(name: &str, join: &[&str]) -> TestNode {
        TestNode::start_with_config(name, join, "").await
    }

    /// Like [`TestNode::start`], with `config` (TOML) as the node's
    /// `hearsay.toml`; flags still set the addresses, region and joins.
    pub async fn start_with_config(name: &str, join: &[&str], config: &str) -> TestNode {
        TestNode::start_full(name, join, config, &["/ip4/127.0.0.1/tcp/0"], |l| l).await
    }

    /// Starts a node of the mesh of `operator` with node key `key` (so
    /// that two processes can share one, or a test knows it beforehand):
    /// its certificate is signed for its region and written to its data
    /// directory, and `operator` set in its `hearsay.toml` (with `config`).
    /// `operator: None` starts a node of an open mesh with that key.
    pub async fn start_admitted(
        name: &str,
        join: &[&str],
        operator: Option<&hearsay_admission::OperatorKey>,
        key: &hearsay_crdt::Keypair,
        config: &str,
    ) -> TestNode {
        let mut config = config.to_owned();
        if let Some(op) = operator {
            config.push_str(&format!("\noperator = \"{}\"\n", op.id()));
        }
        let prepare = |dir: &Path| {
            key.save(&dir.join(hearsay_node::node::KEY_FILE))
                .expect("writing the node key");
            if let Some(op) = operator {
                let cert = op
                    .admit(key.id(), name, hearsay_node::core::now_ms(), None)
                    .expect("signing a certificate");
                std::fs::write(
                    dir.join(hearsay_node::config::CERTIFICATE_FILE),
                    cert.to_text(),
                )
                .expect("writing the certificate");
            }
        };
        TestNode::start_prepared(
            name,
            join,
            &config,
            &["/ip4/127.0.0.1/tcp/0"],
            |l| l,
            prepare,
        )
        .await
    }

    /// Like [`TestNode::start`], listening on the given multiaddrs (for
    /// QUIC, or a fixed port that must survive a restart).
    pub async fn start_listening(name: &str, join: &[&str], listen: &[&str]) -> TestNode {
        TestNode::start_full(name, join, "", listen, |l| l).await
    }

    /// Like [`TestNode::start_with_config`], inside network namespace `ns`
    /// (see `netns.rs`), listening for peers and HTTP on `ip` (OS-chosen
    /// ports), which the test process must be able to reach.
    pub async fn start_in_namespace(
        name: &str,
        ns: &str,
        ip: std::net::Ipv4Addr,
        join: &[&str],
        config: &str,
    ) -> TestNode {
        let launch = |l: Launch| l.netns(ns).set("http", format!("{ip}:0"));
        let listen = format!("/ip4/{ip}/tcp/0");
        TestNode::start_full(name, join, config, &[&listen], launch).await
    }

    async fn start_full(
        name: &str,
        join: &[&str],
        config: &str,
        listen: &[&str],
        adjust: impl FnOnce(Launch) -> Launch,
    ) -> TestNode {
        TestNode::start_prepared(name, join, config, listen, adjust, |_| {}).await
    }

    /// [`TestNode::start_full`], with `prepare` run on the data directory
    /// before the node starts.
    async fn start_prepared(
        name: &str,
        join: &[&str],
        config: &str,
        listen: &[&str],
        adjust: impl FnOnce(Launch) -> Launch,
        prepare: impl FnOnce(&Path),
    ) -> TestNode {
        let dir = tempfile::Builder::new()
            .prefix(&format!("hearsay-test-{name}-"))
            .tempdir()
            .expect("temporary data directory");
        prepare(dir.path());
        if !config.is_empty() {
            std::fs::write(dir.path().join(hearsay_node::config::CONFIG_FILE), config)
                .expect("writing hearsay.toml");
        }
        let mut launch = Launch::new(binary(), dir.path())
            .set("http", "127.0.0.1:0")
            .set("region", name)
            .set("listen", listen.join(","))
            .env("NO_COLOR", "1");
        if !join.is_empty() {
            launch = launch.set("join", join.join(","));
        }
        launch = adjust(launch);
        if std::env::var_os("RUST_LOG").is_none() {
            launch = launch.env(
                "RUST_LOG",
                "info,hearsay_node=debug,libp2p=warn,libp2p_gossipsub=error",
            );
        }
        let log = dir.path().join(hearsay_node::launch::LOG_FILE);
        let process = launch.start().await.unwrap_or_else(|e| {
            panic!("{name}: {e}\n{}", log_tail(name, &log));
        });
        TestNode {
            name: name.to_owned(),
            process,
            dir,
        }
    }

    /// Restarts a stopped or killed node on the same data directory (same
    /// identity, same join list; the HTTP and libp2p ports change).
    pub async fn restart(&mut self) {
        assert!(
            !self.is_running(),
            "{}: restart of a running node",
            self.name
        );
        if let Err(e) = self.process.restart().await {
            panic!("{}: {e}\n{}", self.name, self.log_tail());
        }
    }

    /// Like [`TestNode::restart`], keeping the HTTP address of the last
    /// start, so clients holding the URL (an open web page) find the node
    /// again.
    pub async fn restart_same_http(&mut self) {
        assert!(
            !self.is_running(),
            "{}: restart of a running node",
            self.name
        );
        if let Err(e) = self.process.restart_same_http().await {
            panic!("{}: {e}\n{}", self.name, self.log_tail());
        }
    }

    /// Kills the process with SIGKILL (a crash) and reaps it.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Stops the process with SIGTERM and waits for it to exit.
    pub async fn stop(&mut self) -> ExitStatus {
        match self.process.stop().await {
            Ok(status) => status,
            Err(e) => panic!("{}: {e}\n{}", self.name, self.log_tail()),
        }
    }

    pub fn is_running(&self) -> bool {
        self.process.is_running()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_path(&self) -> PathBuf {
        self.process.log_path()
    }

    /// The last lines of the node's log, headed by the node's name.
    pub fn log_tail(&self) -> String {
        log_tail(&self.name, &self.log_path())
    }

    /// What the running node announced in `node.json`.
    pub fn announcement(&self) -> &Announcement {
        self.process.announcement()
    }

    /// The node's TCP multiaddr, ending in `/p2p/<peer id>`.
    pub fn tcp_addr(&self) -> String {
        self.announcement()
            .addr("tcp")
            .expect("a TCP listen address")
            .to_owned()
    }

    /// The node's TCP listen address as a socket address (for a proxy).
    pub fn tcp_socket_addr(&self) -> SocketAddr {
        let addr = self.tcp_addr();
        let parts: Vec<&str> = addr.split('/').collect();
        format!("{}:{}", parts[2], parts[4])
            .parse()
            .unwrap_or_else(|e| panic!("{}: {addr} as a socket address: {e}", self.name))
    }

    /// The process id of the running node.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    pub fn peer_id(&self) -> String {
        self.announcement().peer_id.clone()
    }

    /// `http://host:port` + `path`.
    pub fn url(&self, path: &str) -> String {
        self.client().url(path)
    }

    /// The typed client of the running node's API.
    pub fn client(&self) -> &Client {
        self.process.client()
    }

    /// The HTTP client, for requests the helpers do not cover.
    pub fn http(&self) -> &reqwest::Client {
        self.client().http()
    }

    // ---- HTTP -------------------------------------------------------------

    /// Sends a request and reads the answer; errors only on transport failure.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Answer> {
        self.client()
            .send(request)
            .await
            .with_context(|| format!("{}: HTTP request", self.name))
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        self.send(self.http().get(self.url(path))).await
    }

    /// A POST with a raw body and content type.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> anyhow::Result<Answer> {
        self.send(
            self.http()
                .post(self.url(path))
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body),
        )
        .await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<Answer> {
        self.send(self.http().post(self.url(path)).json(body)).await
    }

    pub async fn patch_json(&self, path: &str, body: &Value) -> anyhow::Result<Answer> {
        self.send(self.http().patch(self.url(path)).json(body))
            .await
    }

    /// Unwraps `result`, panicking with the node's name and `what`.
    fn expect<T>(&self, what: &str, result: Result<T, ClientError>) -> T {
        result.unwrap_or_else(|e| panic!("{}: {what}: {e}", self.name))
    }

    /// `GET /api/v0/stats`, unwrapped, every field.
    pub async fn stats(&self) -> Value {
        self.expect("stats", self.client().get_body("/api/v0/stats").await)
    }

    /// A counter or gauge of `/metrics`, summed over its series whose
    /// labels contain `labels` (e.g. `reason="revoked"`; empty: all).
    pub async fn metric(&self, name: &str, labels: &str) -> f64 {
        let text = match self.http().get(self.url("/metrics")).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => panic!("{}: /metrics: {e}", self.name),
        };
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
                (metric == name && rest.contains(labels)).then(|| value.parse::<f64>().ok())?
            })
            .sum()
    }

    /// The revision (version vector sum) from stats.
    pub async fn revision(&self) -> u64 {
        self.expect("stats", self.client().stats().await).revision
    }

    /// The version vector from stats: origin (hex) -> highest contiguous
    /// seq. Panics when stats have none or it is empty: call it only on a
    /// node that holds writes, so that comparing vectors can fail.
    pub async fn version_vector(&self) -> BTreeMap<String, u64> {
        let vv = self
            .expect("stats", self.client().stats().await)
            .version_vector;
        assert!(
            !vv.is_empty() && vv.values().all(|seq| *seq > 0),
            "{}: empty version vector {vv:?}",
            self.name
        );
        vv
    }

    /// Rejections by kind from stats (0 when absent).
    pub async fn rejected(&self, kind: &str) -> u64 {
        let stats = self.expect("stats", self.client().stats().await);
        stats.rejected.get(kind).copied().unwrap_or(0)
    }

    /// Creates a post; the answer as is (for writers that tolerate failures).
    pub async fn try_create_post(&self, body: &str) -> anyhow::Result<Answer> {
        self.post_json(
            "/api/v0/p",
            &serde_json::json!({"author": "tester", "body": body}),
        )
        .await
    }

    /// Creates a post and returns its id; panics unless the node answers 200.
    pub async fn create_post(&self, body: &str) -> String {
        let created = self.client().create_post(Some("tester"), body, None).await;
        self.expect("creating a post", created).id.to_string()
    }

    /// `GET /api/v0/p/{id}`: the post, `None` on 404; panics otherwise.
    pub async fn post(&self, id: &str) -> Option<Value> {
        let found = self.client().post(id).await;
        let found = self.expect(&format!("reading post {id}"), found)?;
        Some(serde_json::to_value(found.post).expect("a post is JSON"))
    }

    /// The body text of post `id`, if the node has it.
    pub async fn post_body(&self, id: &str) -> Option<String> {
        let found = self.client().post(id).await;
        Some(self.expect(&format!("reading post {id}"), found)?.post.body)
    }

    /// `GET /api/v0/p?limit=N`: the newest posts.
    pub async fn posts(&self, limit: usize) -> Vec<Value> {
        let posts = self.client().posts(limit, None).await;
        self.expect("listing posts", posts)
            .into_iter()
            .map(|p| serde_json::to_value(p).expect("a post is JSON"))
            .collect()
    }

    /// Every post in the listing, newest first, following `before` pages.
    pub async fn all_posts(&self) -> Vec<Post> {
        let mut posts: Vec<Post> = Vec::new();
        for _ in 0..10_000 {
            let before = posts.last().map(|p| p.id.to_string());
            let page = self.client().posts(500, before.as_deref()).await;
            let page = self.expect("listing posts", page);
            if page.is_empty() {
                return posts;
            }
            posts.extend(page);
        }
        panic!("{}: listing did not end after 10,000 pages", self.name);
    }

    /// Every post id in the listing, following `before` pages.
    pub async fn all_post_ids(&self) -> Vec<String> {
        self.all_posts()
            .await
            .iter()
            .map(|p| p.id.to_string())
            .collect()
    }

    /// The node's documents as a client sees them: every listed post, by id,
    /// with its body, author, edit time and tombstone. Two converged nodes
    /// answer the same.
    pub async fn contents(&self) -> BTreeMap<String, Post> {
        self.all_posts()
            .await
            .into_iter()
            .map(|p| (p.id.to_string(), p))
            .collect()
    }

    /// `PATCH /api/v0/p/{id}`: the edited post; panics unless 200.
    pub async fn edit(&self, id: &str, pos: usize, delete: usize, insert: &str) -> Value {
        let edited = self.client().edit(id, pos, delete, insert).await;
        let post = self.expect(&format!("editing post {id}"), edited);
        serde_json::to_value(post).expect("a post is JSON")
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
    }
}

/// The last lines of the log at `path`, headed by the node's name.
fn log_tail(name: &str, path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
    format!(
        "---- log of node {name} ({}), last {} lines ----\n{}\n---- end of log of {name} ----",
        path.display(),
        tail.len(),
        tail.join("\n"),
    )
}

/// Whether `have` covers `want`: every origin's seq in `have` is at least
/// the one in `want`. An empty `want` is a mistake (it covers anything).
pub fn covers(have: &BTreeMap<String, u64>, want: &BTreeMap<String, u64>) -> bool {
    assert!(!want.is_empty(), "covers: an empty version vector to cover");
    want.iter()
        .all(|(origin, seq)| have.get(origin).copied().unwrap_or(0) >= *seq)
}

/// A proxy in front of `node`'s TCP address, delaying each direction by
/// `delay`, and the multiaddr to join `node` through it.
pub async fn proxy_to(node: &TestNode, delay: Duration) -> (proxy::Proxy, String) {
    let proxy = proxy::Proxy::start(node.tcp_socket_addr(), delay)
        .await
        .expect("starting a proxy");
    let via = format!(
        "/ip4/127.0.0.1/tcp/{}/p2p/{}",
        proxy.addr.port(),
        node.peer_id()
    );
    (proxy, via)
}

/// Asserts that `nodes` hold the same documents: equal version vectors
/// (never empty) and the same posts with the same contents.
pub async fn assert_converged(nodes: &[&TestNode]) {
    let (first, rest) = nodes.split_first().expect("at least one node");
    let (vv, contents) = (first.version_vector().await, first.contents().await);
    assert!(!contents.is_empty(), "{}: no posts to compare", first.name);
    for node in rest {
        assert_eq!(
            node.version_vector().await,
            vv,
            "version vectors of {} and {}",
            node.name,
            first.name
        );
        assert_eq!(
            node.contents().await,
            contents,
            "posts of {} and {}",
            node.name,
            first.name
        );
    }
}
