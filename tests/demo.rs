//! The main job of the README, `hearsay demo`, and the CLI's client commands
//! against the mesh it starts.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::binary;

const DEMO_START: Duration = Duration::from_secs(90);

fn hearsay(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(binary())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run hearsay");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_demo_shows_a_post_replicate_and_the_cli_talks_to_its_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(binary());
    cmd.arg("demo")
        .arg("--dir")
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    common::clear_node_env(&mut cmd);
    let mut demo = cmd.spawn().expect("start the demo");
    let (tx, rx) = mpsc::channel();
    let stdout = demo.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + DEMO_START;
    let mut output = Vec::new();
    while !output.iter().any(|l: &String| l.starts_with("Running;")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => output.push(line),
            Err(_) => {
                let _ = demo.kill();
                panic!(
                    "the demo did not get running within {DEMO_START:?}:\n{}",
                    output.join("\n")
                );
            }
        }
    }
    let text = output.join("\n");
    for region in ["us-east", "ap-south"] {
        assert!(
            text.contains(&format!("arrived at {region}")),
            "no arrival at {region}:\n{text}"
        );
    }
    assert!(!text.contains("NOT arrived"), "{text}");
    let urls: Vec<&str> = output
        .iter()
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with("http://127.0.0.1:"))
        })
        .take(3)
        .collect();
    assert_eq!(urls.len(), 3, "three node URLs in:\n{text}");

    // The client commands, against two different nodes of the mesh.
    let (ok, out, err) = hearsay(&["post", "--node", urls[2], "--author", "cli", "from the cli"]);
    assert!(ok, "post failed: {err}");
    let post: serde_json::Value = serde_json::from_str(&out).expect("post prints JSON");
    let id = post["id"].as_str().expect("an id").to_owned();
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, out, _) = hearsay(&["get", "--node", urls[0], &id]);
        if ok {
            let got: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(got["post"]["body"], "from the cli");
            break;
        }
        assert!(
            Instant::now() < until,
            "the CLI's post did not reach the first node"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, out, err) = hearsay(&["posts", "--node", urls[1], "--limit", "5"]);
    assert!(ok, "{err}");
    assert!(
        serde_json::from_str::<serde_json::Value>(&out)
            .unwrap()
            .as_array()
            .is_some_and(|a| !a.is_empty())
    );
    let (ok, out, err) = hearsay(&["status", "--node", urls[1]]);
    assert!(ok, "{err}");
    let stats: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(stats["region"], "us-east");
    let (ok, _, err) = hearsay(&["get", "--node", urls[0], "not-an-id"]);
    assert!(!ok && err.contains("not a valid post id"), "{err}");

    // SIGTERM: the demo stops its nodes and exits.
    let _ = Command::new("kill")
        .args(["-TERM", &demo.id().to_string()])
        .status();
    let until = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = demo.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < until, "the demo did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "demo exited with {status}");
}
