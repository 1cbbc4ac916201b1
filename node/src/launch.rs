//! The one node launcher: starts a `hearsay node` process and manages its
//! life, for the cluster tests, the benchmark and `hearsay demo`.
//!
//! A [`Launch`] names the binary, the data directory, config keys to pass as
//! flags (by key name, checked against [`crate::config::KEYS`]), extra
//! environment variables and, optionally, a network namespace (the node then
//! runs under `ip netns exec NS`, for tests that split a mesh with real
//! links). The caller's `HEARSAY_*` configuration variables are removed (the
//! list is derived from the key table), so the environment a test or
//! benchmark runs in cannot change the nodes it starts.
//!
//! [`Launch::start`] spawns the process (stderr appended to `DIR/node.log`)
//! and waits, bounded, until the node has written `DIR/node.json` (with an
//! address for each transport it was asked to listen on) and answers health
//! with 200. A [`NodeProcess`] can then be killed (SIGKILL, a crash), stopped
//! (SIGTERM, bounded wait) and restarted on the same directory (same
//! identity). Dropping it kills the process.
//!
//! ```no_run
//! # async fn demo() -> Result<(), hearsay_node::launch::LaunchError> {
//! use hearsay_node::launch::Launch;
//! let node = Launch::new("target/debug/hearsay", "/tmp/n1")
//!     .set("http", "10.0.0.1:8080")
//!     .set("listen", "/ip4/10.0.0.1/tcp/4001")
//!     .netns("hearsay-a")
//!     .start()
//!     .await?;
//! println!("{} at {}", node.announcement().peer_id, node.announcement().url());
//! # Ok(())
//! # }
//! ```

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::client::Client;
use crate::config::{KEYS, Key};
use crate::node::{ANNOUNCE_FILE, Announcement};

/// How long a node may take to start (write `node.json` and answer health).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Poll period while waiting for a node.
const POLL: Duration = Duration::from_millis(50);
/// Name of the node's log in its data directory.
pub const LOG_FILE: &str = "node.log";

/// Why a node could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("no config key `{0}` to pass as a flag")]
    UnknownKey(String),
    #[error("{dir}: {what}: {source}")]
    Io {
        dir: String,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{dir}: node exited during start-up with {status}; see {log}")]
    Exited {
        dir: String,
        status: ExitStatus,
        log: String,
    },
    #[error("{dir}: {what} within {timeout:?}; see {log}")]
    Timeout {
        dir: String,
        what: &'static str,
        timeout: Duration,
        log: String,
    },
}

/// How to start a node. Build with [`Launch::new`] and the setters.
#[derive(Clone, Debug)]
pub struct Launch {
    binary: PathBuf,
    data_dir: PathBuf,
    flags: Vec<(&'static Key, String)>,
    env: Vec<(String, String)>,
    netns: Option<String>,
    start_timeout: Duration,
    unknown: Option<String>,
}

impl Launch {
    /// `binary node --data-dir DIR`, nothing else set.
    pub fn new(binary: impl Into<PathBuf>, data_dir: impl Into<PathBuf>) -> Launch {
        Launch {
            binary: binary.into(),
            data_dir: data_dir.into(),
            flags: Vec::new(),
            env: Vec::new(),
            netns: None,
            start_timeout: START_TIMEOUT,
            unknown: None,
        }
    }

    /// Passes config `key` (a name of [`KEYS`]) as its flag, `raw` in the
    /// form [`crate::Config::set`] reads (lists comma-separated); replaces
    /// an earlier value of the same key.
    pub fn set(mut self, key: &str, raw: impl Into<String>) -> Launch {
        match Key::find(key) {
            Ok(key) => {
                self.flags.retain(|(k, _)| k.name != key.name);
                self.flags.push((key, raw.into()));
            }
            Err(_) => self.unknown = Some(key.to_owned()),
        }
        self
    }

    /// Sets an environment variable of the node process.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Launch {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Runs the node in network namespace `ns` (`ip netns exec NS`). Its
    /// HTTP address must then be one this process can reach.
    pub fn netns(mut self, ns: impl Into<String>) -> Launch {
        self.netns = Some(ns.into());
        self
    }

    /// How long [`Launch::start`] waits for the node (default [`START_TIMEOUT`]).
    pub fn start_timeout(mut self, timeout: Duration) -> Launch {
        self.start_timeout = timeout;
        self
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Starts the node and waits until it is up.
    pub async fn start(self) -> Result<NodeProcess, LaunchError> {
        if let Some(key) = &self.unknown {
            return Err(LaunchError::UnknownKey(key.clone()));
        }
        let mut node = NodeProcess {
            launch: self,
            child: None,
            announce: None,
            client: None,
            starts: 0,
        };
        node.spawn().await?;
        Ok(node)
    }

    fn io(&self, what: &'static str) -> impl FnOnce(std::io::Error) -> LaunchError {
        let dir = self.data_dir.display().to_string();
        move |source| LaunchError::Io { dir, what, source }
    }

    fn log_path(&self) -> PathBuf {
        self.data_dir.join(LOG_FILE)
    }

    /// The transports (`tcp`, `quic-v1`) the node was asked to listen on.
    fn transports(&self) -> Vec<&'static str> {
        let listen = self.flags.iter().find(|(k, _)| k.name == "listen");
        let Some((_, raw)) = listen else {
            return Vec::new();
        };
        ["tcp", "quic-v1"]
            .into_iter()
            .filter(|t| raw.contains(&format!("/{t}")))
            .collect()
    }

    fn command(&self) -> Command {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns]).arg(&self.binary);
                cmd
            }
            None => Command::new(&self.binary),
        };
        cmd.arg("node").arg("--data-dir").arg(&self.data_dir);
        for (key, raw) in &self.flags {
            cmd.arg(format!("--{}", key.flag())).arg(raw);
        }
        for key in KEYS {
            cmd.env_remove(key.env_var());
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        cmd
    }
}

/// A running (or stopped) node process started by [`Launch::start`].
#[derive(Debug)]
pub struct NodeProcess {
    launch: Launch,
    child: Option<Child>,
    announce: Option<Announcement>,
    client: Option<Client>,
    starts: usize,
}

impl NodeProcess {
    async fn spawn(&mut self) -> Result<(), LaunchError> {
        let launch = &self.launch;
        std::fs::create_dir_all(&launch.data_dir)
            .map_err(launch.io("creating the data directory"))?;
        // A killed node leaves its node.json behind: never read a stale one.
        match std::fs::remove_file(launch.data_dir.join(ANNOUNCE_FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(launch.io("removing the old node.json")(e));
            }
            _ => {}
        }
        self.announce = None;
        self.client = None;
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(launch.log_path())
            .map_err(launch.io("opening node.log"))?;
        writeln!(log, "==== launcher: start #{} ====", self.starts)
            .map_err(launch.io("writing node.log"))?;
        let child = launch
            .command()
            .stderr(log)
            .spawn()
            .map_err(launch.io("spawning the node"))?;
        self.child = Some(child);
        let started = Instant::now();
        let timeout = launch.start_timeout;
        let transports = launch.transports();
        let dir = launch.data_dir.clone();
        let announce = self
            .wait(started, "no node.json", || {
                Announcement::read(&dir).filter(|a| {
                    !a.listen_addrs.is_empty() && transports.iter().all(|t| a.addr(t).is_some())
                })
            })
            .await?;
        let client = Client::new(&announce.url());
        let max_polls = timeout.as_millis() / POLL.as_millis() + 2;
        for _ in 0..max_polls {
            if client.health().await.is_ok() {
                self.announce = Some(announce);
                self.client = Some(client);
                return Ok(());
            }
            self.check_running()?;
            if started.elapsed() >= timeout {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        Err(self.timeout("health did not answer 200"))
    }

    /// Polls `ready` until it gives a value, the process exits or the start
    /// timeout passes.
    async fn wait<T>(
        &mut self,
        started: Instant,
        what: &'static str,
        mut ready: impl FnMut() -> Option<T>,
    ) -> Result<T, LaunchError> {
        let timeout = self.launch.start_timeout;
        let max_polls = timeout.as_millis() / POLL.as_millis() + 2;
        for _ in 0..max_polls {
            if let Some(v) = ready() {
                return Ok(v);
            }
            self.check_running()?;
            if started.elapsed() >= timeout {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        Err(self.timeout(what))
    }

    fn check_running(&mut self) -> Result<(), LaunchError> {
        let exited = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        match exited {
            Some(status) => {
                self.child = None;
                Err(LaunchError::Exited {
                    dir: self.launch.data_dir.display().to_string(),
                    status,
                    log: self.launch.log_path().display().to_string(),
                })
            }
            None => Ok(()),
        }
    }

    fn timeout(&mut self, what: &'static str) -> LaunchError {
        self.kill();
        LaunchError::Timeout {
            dir: self.launch.data_dir.display().to_string(),
            what,
            timeout: self.launch.start_timeout,
            log: self.launch.log_path().display().to_string(),
        }
    }

    /// Restarts a stopped or killed node on the same data directory (same
    /// identity and flags; ports chosen by the OS may change).
    pub async fn restart(&mut self) -> Result<(), LaunchError> {
        assert!(self.child.is_none(), "restart of a running node");
        self.spawn().await
    }

    /// Like [`NodeProcess::restart`], on the HTTP address the node
    /// announced when it last started (kept for later restarts too), so
    /// clients holding its URL, such as an open web page, find it again.
    pub async fn restart_same_http(&mut self) -> Result<(), LaunchError> {
        if let Some(announce) = &self.announce {
            self.launch = self.launch.clone().set("http", announce.http.clone());
        }
        self.restart().await
    }

    /// Kills the process with SIGKILL (a crash) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits up to [`STOP_TIMEOUT`] for the exit; after
    /// that, kills the process and answers `Timeout`.
    pub async fn stop(&mut self) -> Result<ExitStatus, LaunchError> {
        let Some(mut child) = self.child.take() else {
            panic!("stop of a node that is not running");
        };
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .map_err(self.launch.io("running kill -TERM"))?;
        let started = Instant::now();
        let max_polls = STOP_TIMEOUT.as_millis() / POLL.as_millis() + 2;
        for _ in 0..max_polls {
            if let Some(status) = child
                .try_wait()
                .map_err(self.launch.io("waiting for the node"))?
            {
                return Ok(status);
            }
            if !sent.success() || started.elapsed() >= STOP_TIMEOUT {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(LaunchError::Timeout {
            dir: self.launch.data_dir.display().to_string(),
            what: "no exit after SIGTERM",
            timeout: STOP_TIMEOUT,
            log: self.launch.log_path().display().to_string(),
        })
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn data_dir(&self) -> &Path {
        &self.launch.data_dir
    }

    /// `DIR/node.log`: the node's stderr, every start appended.
    pub fn log_path(&self) -> PathBuf {
        self.launch.log_path()
    }

    /// What the node announced in `node.json` when it last started.
    pub fn announcement(&self) -> &Announcement {
        self.announce.as_ref().expect("the node has started")
    }

    /// A client of the node's HTTP API (as of its last start).
    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("the node has started")
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
