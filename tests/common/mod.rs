//! Harness of the integration tests: real `hearsay node` processes on
//! loopback, driven over their HTTP API.
//!
//! - [`binary`] builds the `hearsay` binary once per test process and finds it
//!   next to the test executable (`target/<profile>/hearsay`).
//! - [`TestNode`] runs one node in its own temporary data directory (stderr
//!   to `DIR/node.log`, printed when a test panics), can kill it (SIGKILL),
//!   stop it (SIGTERM) and restart it on the same directory (same identity),
//!   and wraps the API, unwrapping the `{"status": "OK", "body": ...}`
//!   envelope.
//! - [`wait_until`] polls a condition, bounded in time and in count.
//! - [`proxy::Proxy`] adds latency to a link, or cuts it (a partition).

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod proxy;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hearsay_node::node::{ANNOUNCE_FILE, Announcement};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;

/// How long a node may take to start (write `node.json` and answer health).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout of one HTTP request.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Poll period of [`wait_until`].
pub const POLL: Duration = Duration::from_millis(50);
/// Lines of a node's log printed when a test fails.
const LOG_TAIL_LINES: usize = 80;

/// Environment variables the node reads as configuration: removed so that
/// the caller's environment cannot change the cluster under test.
pub const NODE_ENV: [&str; 6] = [
    "HEARSAY_LISTEN",
    "HEARSAY_HTTP",
    "HEARSAY_REGION",
    "HEARSAY_GEO",
    "HEARSAY_JOIN",
    "HEARSAY_TARGET_PEERS",
];

/// The `hearsay` binary, built once per test process.
///
/// The test executable lives in `target/<profile>/deps/`; the binary is
/// `target/<profile>/hearsay`. `cargo build` makes it up to date (a no-op
/// when it already is).
pub fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
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

/// An HTTP answer: status code and the JSON body (a JSON string holding the
/// text when the body is not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub json: Value,
}

impl Answer {
    /// The `body` of an `{"status": "OK"}` envelope of a 200 answer.
    pub fn ok_body(self) -> anyhow::Result<Value> {
        if self.status != StatusCode::OK || self.json["status"] != "OK" {
            bail!("expected 200 OK, got {}: {}", self.status, self.json);
        }
        Ok(self.json["body"].clone())
    }

    /// Asserts an error answer: the expected code and the error envelope
    /// `{"status": "ERROR", "error": "<non-empty message>"}`.
    pub fn assert_error(&self, expected: StatusCode, what: &str) {
        assert_eq!(
            self.status, expected,
            "{what}: expected {expected}, got {}: {}",
            self.status, self.json
        );
        assert_eq!(
            self.json["status"], "ERROR",
            "{what}: not an error envelope: {}",
            self.json
        );
        let message = self.json["error"].as_str().unwrap_or_default();
        assert!(
            !message.trim().is_empty(),
            "{what}: error envelope without a message: {}",
            self.json
        );
    }
}

/// One `hearsay node` process with its own data directory.
pub struct TestNode {
    pub name: String,
    dir: TempDir,
    join: Vec<String>,
    listen: Vec<String>,
    child: Option<Child>,
    announce: Option<Announcement>,
    http: reqwest::Client,
    starts: usize,
}

impl std::fmt::Debug for TestNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNode")
            .field("name", &self.name)
            .field("dir", &self.dir.path())
            .field("pid", &self.child.as_ref().map(Child::id))
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
        TestNode::start_full(name, join, config, &["/ip4/127.0.0.1/tcp/0"]).await
    }

    /// Like [`TestNode::start`], listening on the given multiaddrs (for
    /// QUIC, or a fixed port that must survive a restart).
    pub async fn start_listening(name: &str, join: &[&str], listen: &[&str]) -> TestNode {
        TestNode::start_full(name, join, "", listen).await
    }

    async fn start_full(name: &str, join: &[&str], config: &str, listen: &[&str]) -> TestNode {
        let dir = tempfile::Builder::new()
            .prefix(&format!("hearsay-test-{name}-"))
            .tempdir()
            .expect("temporary data directory");
        if !config.is_empty() {
            std::fs::write(dir.path().join(hearsay_node::config::CONFIG_FILE), config)
                .expect("writing hearsay.toml");
        }
        let mut node = TestNode {
            name: name.to_owned(),
            dir,
            join: join.iter().map(|s| (*s).to_owned()).collect(),
            listen: listen.iter().map(|s| (*s).to_owned()).collect(),
            child: None,
            announce: None,
            http: reqwest::Client::builder()
                .timeout(HTTP_TIMEOUT)
                .build()
                .expect("HTTP client"),
            starts: 0,
        };
        node.spawn().await;
        node
    }

    /// Restarts a stopped or killed node on the same data directory (same
    /// identity, same join list; the HTTP and libp2p ports change).
    pub async fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "{}: restart of a running node",
            self.name
        );
        self.spawn().await;
    }

    async fn spawn(&mut self) {
        let dir = self.dir.path().to_path_buf();
        // A killed node leaves its node.json behind: never read a stale one.
        match std::fs::remove_file(dir.join(ANNOUNCE_FILE)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("{}: removing the old node.json: {e}", self.name),
        }
        self.announce = None;
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("node log file");
        writeln!(log, "==== test harness: start #{} ====", self.starts).expect("log");
        let mut cmd = Command::new(binary());
        cmd.arg("node")
            .arg("--data-dir")
            .arg(&dir)
            .args(["--http", "127.0.0.1:0"])
            .args(["--region", &self.name]);
        for l in &self.listen {
            cmd.args(["--listen", l]);
        }
        for j in &self.join {
            cmd.args(["--join", j]);
        }
        for var in NODE_ENV {
            cmd.env_remove(var);
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env(
                "RUST_LOG",
                "info,hearsay_node=debug,libp2p=warn,libp2p_gossipsub=error",
            );
        }
        cmd.env("NO_COLOR", "1");
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{}: spawning {}: {e}", self.name, binary().display()));
        self.child = Some(child);

        let started = Instant::now();
        let max_polls = START_TIMEOUT.as_millis() / POLL.as_millis() + 2;
        for _ in 0..max_polls {
            if let Some(a) = Announcement::read(&dir).filter(|a| a.addr("tcp").is_some()) {
                self.announce = Some(a);
                break;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "{}: node exited during start-up with {status}\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if started.elapsed() >= START_TIMEOUT {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        assert!(
            self.announce.is_some(),
            "{}: no node.json within {START_TIMEOUT:?}\n{}",
            self.name,
            self.log_tail()
        );
        for _ in 0..max_polls {
            if let Ok(a) = self.get("/api/v0/health").await
                && a.status == StatusCode::OK
            {
                return;
            }
            if started.elapsed() >= START_TIMEOUT {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        panic!(
            "{}: health did not answer 200 within {START_TIMEOUT:?}\n{}",
            self.name,
            self.log_tail()
        );
    }

    /// Kills the process with SIGKILL (a crash) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process with SIGTERM and waits for it to exit.
    pub async fn stop(&mut self) -> ExitStatus {
        let mut child = self
            .child
            .take()
            .expect("stop of a node that is not running");
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("running kill -TERM");
        assert!(sent.success(), "{}: kill -TERM failed: {sent}", self.name);
        let started = Instant::now();
        let max_polls = STOP_TIMEOUT.as_millis() / POLL.as_millis() + 2;
        for _ in 0..max_polls {
            if let Some(status) = child.try_wait().expect("waiting for the node") {
                return status;
            }
            if started.elapsed() >= STOP_TIMEOUT {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{}: no exit within {STOP_TIMEOUT:?} of SIGTERM\n{}",
            self.name,
            self.log_tail()
        );
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("node.log")
    }

    /// The last lines of the node's log, headed by the node's name.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
        format!(
            "---- log of node {} ({}), last {} lines ----\n{}\n---- end of log of {} ----",
            self.name,
            self.log_path().display(),
            tail.len(),
            tail.join("\n"),
            self.name
        )
    }

    /// What the running node announced in `node.json`.
    pub fn announcement(&self) -> &Announcement {
        self.announce.as_ref().expect("the node has started")
    }

    /// The node's TCP multiaddr, ending in `/p2p/<peer id>`.
    pub fn tcp_addr(&self) -> String {
        self.announcement()
            .addr("tcp")
            .expect("a TCP listen address")
            .to_owned()
    }

    pub fn peer_id(&self) -> String {
        self.announcement().peer_id.clone()
    }

    /// `http://host:port` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.announcement().url())
    }

    /// The HTTP client, for requests the helpers do not cover.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    // ---- HTTP -------------------------------------------------------------

    /// Sends a request and reads the answer; errors only on transport failure.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Answer> {
        let response = request
            .send()
            .await
            .with_context(|| format!("{}: HTTP request", self.name))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .with_context(|| format!("{}: reading the HTTP answer", self.name))?;
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Answer { status, json })
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        self.send(self.http.get(self.url(path))).await
    }

    /// A POST with a raw body and content type.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> anyhow::Result<Answer> {
        self.send(
            self.http
                .post(self.url(path))
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body),
        )
        .await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<Answer> {
        self.send(self.http.post(self.url(path)).json(body)).await
    }

    pub async fn patch_json(&self, path: &str, body: &Value) -> anyhow::Result<Answer> {
        self.send(self.http.patch(self.url(path)).json(body)).await
    }

    /// `GET /api/v0/stats`, unwrapped.
    pub async fn stats(&self) -> Value {
        self.get("/api/v0/stats")
            .await
            .and_then(Answer::ok_body)
            .unwrap_or_else(|e| panic!("{}: stats: {e:#}", self.name))
    }

    /// The revision (version vector sum) from stats.
    pub async fn revision(&self) -> u64 {
        self.stats().await["revision"]
            .as_u64()
            .unwrap_or_else(|| panic!("{}: stats without a revision", self.name))
    }

    /// The version vector from stats: origin (hex) -> highest contiguous seq.
    pub async fn version_vector(&self) -> BTreeMap<String, u64> {
        version_vector(&self.stats().await)
    }

    /// Rejections by kind from stats (0 when absent).
    pub async fn rejected(&self, kind: &str) -> u64 {
        self.stats().await["rejected"][kind].as_u64().unwrap_or(0)
    }

    /// Creates a post; the answer as is (for writers that tolerate failures).
    pub async fn try_create_post(&self, body: &str) -> anyhow::Result<Answer> {
        self.post_json("/api/v0/p", &json!({"author": "tester", "body": body}))
            .await
    }

    /// Creates a post and returns its id; panics unless the node answers 200.
    pub async fn create_post(&self, body: &str) -> String {
        let post = self
            .try_create_post(body)
            .await
            .and_then(Answer::ok_body)
            .unwrap_or_else(|e| panic!("{}: creating a post: {e:#}", self.name));
        post["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: created post without an id: {post}", self.name))
            .to_owned()
    }

    /// `GET /api/v0/p/{id}`: the post, `None` on 404; panics otherwise.
    pub async fn post(&self, id: &str) -> Option<Value> {
        let answer = self
            .get(&format!("/api/v0/p/{id}"))
            .await
            .unwrap_or_else(|e| panic!("{}: reading post {id}: {e:#}", self.name));
        if answer.status == StatusCode::NOT_FOUND {
            return None;
        }
        let body = answer
            .ok_body()
            .unwrap_or_else(|e| panic!("{}: reading post {id}: {e:#}", self.name));
        Some(body["post"].clone())
    }

    /// The body text of post `id`, if the node has it.
    pub async fn post_body(&self, id: &str) -> Option<String> {
        self.post(id)
            .await
            .map(|p| p["body"].as_str().unwrap_or_default().to_owned())
    }

    /// `GET /api/v0/p?limit=N`: the newest posts.
    pub async fn posts(&self, limit: usize) -> Vec<Value> {
        let body = self
            .get(&format!("/api/v0/p?limit={limit}"))
            .await
            .and_then(Answer::ok_body)
            .unwrap_or_else(|e| panic!("{}: listing posts: {e:#}", self.name));
        body.as_array()
            .unwrap_or_else(|| panic!("{}: listing is not an array: {body}", self.name))
            .clone()
    }

    /// Every post id in the listing, following `before` pages.
    pub async fn all_post_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        for _ in 0..10_000 {
            let path = match ids.last() {
                None => "/api/v0/p?limit=500".to_owned(),
                Some(last) => format!("/api/v0/p?limit=500&before={last}"),
            };
            let body = self
                .get(&path)
                .await
                .and_then(Answer::ok_body)
                .unwrap_or_else(|e| panic!("{}: listing posts: {e:#}", self.name));
            let page = body.as_array().cloned().unwrap_or_default();
            if page.is_empty() {
                return ids;
            }
            ids.extend(
                page.iter()
                    .map(|p| p["id"].as_str().unwrap_or_default().to_owned()),
            );
        }
        panic!("{}: listing did not end after 10,000 pages", self.name);
    }

    /// `PATCH /api/v0/p/{id}`: the edited post; panics unless 200.
    pub async fn edit(&self, id: &str, pos: usize, delete: usize, insert: &str) -> Value {
        self.patch_json(
            &format!("/api/v0/p/{id}"),
            &json!({"pos": pos, "delete": delete, "insert": insert}),
        )
        .await
        .and_then(Answer::ok_body)
        .unwrap_or_else(|e| panic!("{}: editing post {id}: {e:#}", self.name))
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

/// The version vector of a stats body.
pub fn version_vector(stats: &Value) -> BTreeMap<String, u64> {
    stats["version_vector"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `have` covers `want`: every origin's seq in `have` is at least
/// the one in `want`.
pub fn covers(have: &BTreeMap<String, u64>, want: &BTreeMap<String, u64>) -> bool {
    want.iter()
        .all(|(origin, seq)| have.get(origin).copied().unwrap_or(0) >= *seq)
}
