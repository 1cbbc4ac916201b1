//! Headless Chromium driven over the DevTools protocol, for tests of the
//! node's web page.
//!
//! [`Browser::launch`] starts `chromium --headless` with a throwaway profile
//! and `--remote-debugging-port=0`, reads the `DevTools listening on ws://…`
//! line from its stderr (written to a file in the profile, which also serves
//! as the browser's log on failure) and connects one WebSocket to it. One
//! task owns that socket: calls arrive on a bounded channel with a oneshot
//! reply and leave with an id; answers are matched back by id. Pages are
//! targets attached in flat mode, so every page shares the socket and is
//! addressed by its session id.
//!
//! A [`Page`] navigates, evaluates JavaScript (promises awaited, values
//! returned as JSON), waits, bounded, for an expression to turn truthy, and
//! takes screenshots. What the pages print to their console, and exceptions
//! they throw, are kept (bounded) and shown when a wait fails, with a
//! screenshot of the page.
//!
//! The browser's process group is killed when the [`Browser`] is dropped.

use std::collections::{HashMap, VecDeque};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// The browser binary (Debian's package name).
pub const CHROMIUM: &str = "chromium";
/// How long the browser may take to start and print its DevTools address.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one protocol call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Poll period of [`Page::wait_for`] and of the start-up wait.
const POLL: Duration = Duration::from_millis(100);
/// Calls queued for the socket task.
const CALL_QUEUE: usize = 64;
/// Console lines kept for failure messages.
const CONSOLE_LINES: usize = 200;
/// Lines of the browser's own log shown on failure.
const LOG_TAIL_LINES: usize = 40;

/// A request to the socket task.
enum Call {
    /// A protocol command, to the browser (`session: None`) or to a page.
    Command {
        session: Option<String>,
        method: String,
        params: Value,
        reply: oneshot::Sender<Result<Value, String>>,
    },
    /// The console lines kept so far.
    Console { reply: oneshot::Sender<Vec<String>> },
}

/// A headless Chromium process and the socket to its DevTools endpoint.
pub struct Browser {
    child: Child,
    calls: mpsc::Sender<Call>,
    profile: TempDir,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser")
            .field("pid", &self.child.id())
            .field("profile", &self.profile.path())
            .finish_non_exhaustive()
    }
}

/// Whether `name` is an executable on `PATH`.
fn on_path(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            let file = dir.join(name);
            file.is_file()
                && std::fs::metadata(&file)
                    .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0)
                    .unwrap_or(false)
        })
    })
}

impl Browser {
    /// Starts headless Chromium, or returns `None` (after saying so) when
    /// it is not installed. Under CI (`CI` set) a missing browser is a
    /// failure: CI must install it (`.ci/run` does).
    pub async fn launch_or_skip(test: &str) -> Option<Browser> {
        if !on_path(CHROMIUM) {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "{test}: `{CHROMIUM}` is not installed and CI is set: CI must install it \
                     (apt-get install chromium; .ci/run does)"
                );
            }
            eprintln!("SKIPPED {test}: `{CHROMIUM}` is not installed (apt-get install chromium)");
            return None;
        }
        Some(Browser::launch().await)
    }

    /// Starts headless Chromium and connects to it; panics on failure.
    pub async fn launch() -> Browser {
        let profile = tempfile::Builder::new()
            .prefix("hearsay-chromium-")
            .tempdir()
            .expect("a temporary browser profile");
        let log_path = profile.path().join("chromium.log");
        let log = std::fs::File::create(&log_path).expect("creating the browser log");
        let child = Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            // Its own process group: dropping the browser kills its renderers too.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {CHROMIUM}: {e}"));
        let mut browser_child = Some(child);
        let url = wait_for_devtools(&log_path, browser_child.as_mut().expect("just started")).await;
        let url = match url {
            Ok(url) => url,
            Err(why) => {
                let mut child = browser_child.take().expect("started");
                kill_group(&mut child);
                panic!("{why}\n{}", log_tail(&log_path));
            }
        };
        let child = browser_child.take().expect("started");
        let (socket, _) = match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok(connected) => connected,
            Err(e) => {
                let mut child = child;
                kill_group(&mut child);
                panic!("connecting to {url}: {e}\n{}", log_tail(&log_path));
            }
        };
        let (calls, rx) = mpsc::channel(CALL_QUEUE);
        tokio::spawn(run_socket(socket, rx));
        Browser {
            child,
            calls,
            profile,
        }
    }

    /// Sends one protocol command and waits for its result.
    async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Value {
        call(&self.calls, session, method, params)
            .await
            .unwrap_or_else(|e| panic!("{method}: {e}\n{}", self.log_tail()))
    }

    /// Opens a new page (a tab), named `name` in failure messages.
    pub async fn new_page(&self, name: &str) -> Page {
        let target = self
            .call(None, "Target.createTarget", json!({"url": "about:blank"}))
            .await["targetId"]
            .as_str()
            .expect("Target.createTarget answers a targetId")
            .to_owned();
        let session = self
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target, "flatten": true}),
            )
            .await["sessionId"]
            .as_str()
            .expect("Target.attachToTarget answers a sessionId")
            .to_owned();
        let page = Page {
            name: name.to_owned(),
            session,
            calls: self.calls.clone(),
            log: self.profile.path().join("chromium.log"),
        };
        page.command("Runtime.enable", json!({})).await;
        page.command("Page.enable", json!({})).await;
        page
    }

    /// The last lines of the browser's own log.
    pub fn log_tail(&self) -> String {
        log_tail(&self.profile.path().join("chromium.log"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

/// Kills the process group led by `child` (the browser and its helpers) and
/// reaps the leader.
fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// Polls the browser's log for its DevTools address, bounded.
async fn wait_for_devtools(log: &Path, child: &mut Child) -> Result<String, String> {
    const PREFIX: &str = "DevTools listening on ";
    let started = Instant::now();
    let max_polls = START_TIMEOUT.as_millis() / POLL.as_millis() + 2;
    for _ in 0..max_polls {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find_map(|l| l.strip_prefix(PREFIX)) {
            return Ok(line.trim().to_owned());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{CHROMIUM} exited with {status} before listening"));
        }
        if started.elapsed() >= START_TIMEOUT {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    Err(format!(
        "{CHROMIUM} printed no `{PREFIX}ws://…` line within {START_TIMEOUT:?}"
    ))
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // Without a system bus the browser complains at every start: not news.
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains(":ERROR:dbus/") && !l.trim().is_empty())
        .collect();
    let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
    format!(
        "---- browser log ({}), last {} lines ----\n{}\n---- end of browser log ----",
        path.display(),
        tail.len(),
        tail.join("\n")
    )
}

async fn call(
    calls: &mpsc::Sender<Call>,
    session: Option<&str>,
    method: &str,
    params: Value,
) -> Result<Value, String> {
    let (reply, answer) = oneshot::channel();
    calls
        .send(Call::Command {
            session: session.map(str::to_owned),
            method: method.to_owned(),
            params,
            reply,
        })
        .await
        .map_err(|_| "the DevTools connection is gone".to_owned())?;
    match tokio::time::timeout(CALL_TIMEOUT, answer).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err("the DevTools connection closed before answering".to_owned()),
        Err(_) => Err(format!("no answer within {CALL_TIMEOUT:?}")),
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The task owning the DevTools socket: sends calls, routes answers by id,
/// keeps console lines. Ends when every sender is dropped or the socket
/// closes (pending calls then fail).
async fn run_socket(mut socket: Socket, mut calls: mpsc::Receiver<Call>) {
    let mut next_id: u64 = 1;
    let mut pending: HashMap<u64, oneshot::Sender<Result<Value, String>>> = HashMap::new();
    let mut console: VecDeque<String> = VecDeque::new();
    loop {
        tokio::select! {
            biased;
            call = calls.recv() => match call {
                None => break,
                Some(Call::Console { reply }) => {
                    let _ = reply.send(console.iter().cloned().collect());
                }
                Some(Call::Command { session, method, params, reply }) => {
                    let id = next_id;
                    next_id += 1;
                    let mut message = json!({"id": id, "method": method, "params": params});
                    if let Some(session) = session {
                        message["sessionId"] = Value::String(session);
                    }
                    match socket.send(Message::text(message.to_string())).await {
                        Ok(()) => {
                            pending.insert(id, reply);
                        }
                        Err(e) => {
                            let _ = reply.send(Err(format!("sending: {e}")));
                        }
                    }
                }
            },
            message = socket.next() => {
                let text = match message {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => break,
                };
                let Ok(message) = serde_json::from_str::<Value>(text.as_str()) else {
                    continue;
                };
                if let Some(id) = message["id"].as_u64() {
                    if let Some(reply) = pending.remove(&id) {
                        let result = match message.get("error") {
                            Some(error) => Err(error.to_string()),
                            None => Ok(message["result"].clone()),
                        };
                        let _ = reply.send(result);
                    }
                } else if let Some(line) = console_line(&message) {
                    if console.len() >= CONSOLE_LINES {
                        console.pop_front();
                    }
                    console.push_back(line);
                }
            }
        }
    }
    for (_, reply) in pending {
        let _ = reply.send(Err("the DevTools connection closed".to_owned()));
    }
}

/// A console call or an uncaught exception of a page, as one line.
fn console_line(message: &Value) -> Option<String> {
    let session = message["sessionId"].as_str().unwrap_or("browser");
    let session = &session[..session.len().min(8)];
    let params = &message["params"];
    match message["method"].as_str()? {
        "Runtime.consoleAPICalled" => {
            let args: Vec<String> = params["args"]
                .as_array()
                .map(|args| {
                    args.iter()
                        .map(|a| match &a["value"] {
                            Value::String(s) => s.clone(),
                            Value::Null => a["description"].as_str().unwrap_or("").to_owned(),
                            v => v.to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            Some(format!(
                "[{session}] console.{}: {}",
                params["type"].as_str().unwrap_or("log"),
                args.join(" ")
            ))
        }
        "Runtime.exceptionThrown" => {
            let details = &params["exceptionDetails"];
            let text = details["exception"]["description"]
                .as_str()
                .or(details["text"].as_str())
                .unwrap_or("exception");
            Some(format!("[{session}] uncaught: {text}"))
        }
        _ => None,
    }
}

/// One page (tab) of the browser.
#[derive(Debug)]
pub struct Page {
    name: String,
    session: String,
    calls: mpsc::Sender<Call>,
    log: PathBuf,
}

impl Page {
    async fn command(&self, method: &str, params: Value) -> Value {
        call(&self.calls, Some(&self.session), method, params)
            .await
            .unwrap_or_else(|e| panic!("page {}: {method}: {e}", self.name))
    }

    /// The console lines and exceptions of every page so far, and the
    /// browser's log: context for a failure.
    pub async fn diagnostics(&self) -> String {
        let (reply, lines) = oneshot::channel();
        let console = match self.calls.send(Call::Console { reply }).await {
            Ok(()) => lines.await.unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        format!(
            "---- page console ({} lines) ----\n{}\n{}",
            console.len(),
            console.join("\n"),
            log_tail(&self.log)
        )
    }

    /// Navigates to `url` and waits until the document has loaded.
    pub async fn goto(&self, url: &str) {
        let answer = self.command("Page.navigate", json!({"url": url})).await;
        if let Some(error) = answer["errorText"].as_str() {
            panic!("page {}: navigating to {url}: {error}", self.name);
        }
        self.wait_for(
            CALL_TIMEOUT,
            &format!("{url} has loaded"),
            "document.readyState === 'complete' && location.href !== 'about:blank'",
        )
        .await;
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns
    /// its value as JSON; an exception is an error carrying its text.
    pub async fn eval(&self, expression: &str) -> Result<Value, String> {
        let answer = call(
            &self.calls,
            Some(&self.session),
            "Runtime.evaluate",
            json!({
                "expression": expression,
                "awaitPromise": true,
                "returnByValue": true,
            }),
        )
        .await?;
        if let Some(details) = answer.get("exceptionDetails") {
            let text = details["exception"]["description"]
                .as_str()
                .or(details["text"].as_str())
                .unwrap_or("exception");
            return Err(text.to_owned());
        }
        Ok(answer["result"]["value"].clone())
    }

    /// [`Page::eval`] that panics, naming the page, on an exception.
    pub async fn run(&self, expression: &str) -> Value {
        match self.eval(expression).await {
            Ok(v) => v,
            Err(e) => panic!(
                "page {}: {expression}: {e}\n{}",
                self.name,
                self.diagnostics().await
            ),
        }
    }

    /// Polls `expression` until it evaluates to a truthy value, which it
    /// returns; panics naming `what` after `timeout`, with the last value or
    /// error and the console. Bounded in time and in count.
    pub async fn wait_for(&self, timeout: Duration, what: &str, expression: &str) -> Value {
        let started = Instant::now();
        let max_polls = timeout.as_millis() / POLL.as_millis() + 2;
        let mut last = Ok(Value::Null);
        for _ in 0..max_polls {
            last = self.eval(expression).await;
            if let Ok(v) = &last
                && truthy(v)
            {
                return v.clone();
            }
            if started.elapsed() >= timeout {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        // What the page showed, kept after the browser's profile is gone.
        let name: String = self
            .name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let png =
            std::env::temp_dir().join(format!("hearsay-page-{name}-{}.png", std::process::id()));
        self.screenshot(&png).await;
        panic!(
            "page {}: timed out after {timeout:?} waiting until {what}\n\
             expression: {expression}\nlast result: {last:?}\nscreenshot: {}\n{}",
            self.name,
            png.display(),
            self.diagnostics().await
        );
    }
}

impl Page {
    /// Sets the viewport to `width` x `height` CSS pixels, without
    /// scrollbars.
    pub async fn set_viewport(&self, width: u32, height: u32) {
        self.command(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await;
        self.command("Emulation.setScrollbarsHidden", json!({"hidden": true}))
            .await;
    }

    /// Writes a PNG of the viewport to `path` (to look at a failing page).
    pub async fn screenshot(&self, path: &Path) {
        use base64::Engine as _;
        let shot = self
            .command("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("screenshot data"))
            .expect("screenshot data is base64");
        std::fs::write(path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
}

/// JavaScript truthiness of a JSON value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}
