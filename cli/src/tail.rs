//! `hearsay tail`: prints a node's events as they arrive and, when the
//! stream drops (the node restarts, the consumer was cut off, the node
//! cannot serve the token), reconnects from the last token it received, so
//! nothing is missed and nothing printed twice.

use std::time::Duration;

use hearsay_node::client::{Client, StreamEvent};
use serde_json::Value;

/// First and longest pause before reconnecting.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(5));

#[derive(clap::Args, Debug)]
pub struct TailArgs {
    #[command(flatten)]
    pub node: crate::client::NodeUrl,
    /// Resume from this token (`start`: from the beginning); without it,
    /// only new events
    #[arg(long, value_name = "TOKEN")]
    pub from: Option<String>,
    /// Only this user's events
    #[arg(long, value_name = "NAME")]
    pub author: Option<String>,
    /// Only these kinds: post, edit, delete, follow, unfollow, profile
    #[arg(long, value_name = "KIND,...")]
    pub kind: Option<String>,
    /// Print each event as one JSON line (id, event, data)
    #[arg(long)]
    pub json: bool,
}

/// Runs until interrupted (or the node refuses the request itself).
pub async fn run(args: TailArgs) -> anyhow::Result<()> {
    let client: Client = args.node.client();
    let mut filters = Vec::new();
    if let Some(a) = &args.author {
        filters.push(("author", a.as_str()));
    }
    if let Some(k) = &args.kind {
        filters.push(("kind", k.as_str()));
    }
    let mut from = args.from.clone();
    let mut backoff = BACKOFF.0;
    loop {
        match client.events(from.as_deref(), &filters).await {
            Ok(mut stream) => {
                backoff = BACKOFF.0;
                loop {
                    match stream.next().await {
                        Ok(Some(event)) => {
                            print(&event, args.json);
                            if let Some(token) = event.json()["token"].as_str()
                                && matches!(event.event.as_str(), "lagged" | "unavailable")
                            {
                                from = Some(token.to_owned());
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            eprintln!("hearsay tail: {e}");
                            break;
                        }
                    }
                    if let Some(id) = stream.last_id() {
                        from = Some(id.to_owned());
                    }
                }
                if let Some(id) = stream.last_id() {
                    from = Some(id.to_owned());
                }
            }
            // A refusal (a malformed token or filter) will not get better.
            Err(e) if e.status().is_some_and(|s| s.is_client_error()) => return Err(e.into()),
            Err(e) => eprintln!("hearsay tail: {e}; retrying in {backoff:?}"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF.1);
    }
}

fn print(event: &StreamEvent, json: bool) {
    let data = event.json();
    if json {
        let line = serde_json::json!({"id": event.id, "event": event.event, "data": data});
        println!("{line}");
        return;
    }
    let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let line = match event.event.as_str() {
        "post" | "edit" | "delete" => {
            let post = &data["post"];
            format!(
                "{:<8} {} @{}: {}",
                event.event,
                text(&post["id"]),
                text(&post["author"]),
                text(&post["body"]).replace('\n', " ")
            )
        }
        "follow" | "unfollow" => format!(
            "{:<8} @{} -> @{}",
            event.event,
            text(&data["user"]),
            text(&data["whom"])
        ),
        "profile" => format!("{:<8} @{}", event.event, text(&data["user"])),
        other => match data["message"].as_str() {
            Some(message) => format!("-- {other}: {message}"),
            None => format!("-- {other} at {}", text(&data["token"])),
        },
    };
    println!("{line}");
}
