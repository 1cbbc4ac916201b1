//! A small client of the HTTP API: unwraps the `{status, body}` envelope.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

#[derive(clap::Args, Debug)]
pub struct NodeUrl {
    /// Base URL of a node's HTTP API
    #[arg(
        long = "node",
        env = "HEARSAY_NODE",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    pub url: String,
}

impl NodeUrl {
    pub fn client(&self) -> Client {
        Client::new(&self.url)
    }
}

#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client");
        Client {
            base: base.trim_end_matches('/').to_owned(),
            http,
        }
    }

    async fn unwrap(response: reqwest::Response) -> anyhow::Result<Value> {
        let status = response.status();
        let envelope: Value = response
            .json()
            .await
            .with_context(|| format!("HTTP {status}: not a hearsay answer"))?;
        if envelope["status"] == "OK" {
            Ok(envelope["body"].clone())
        } else {
            bail!(
                "HTTP {status}: {}",
                envelope["error"].as_str().unwrap_or("unknown error")
            )
        }
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        Self::unwrap(response).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let response = self
            .http
            .post(&url)
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        Self::unwrap(response).await
    }
}

pub fn print(v: Value) {
    println!("{}", serde_json::to_string_pretty(&v).expect("json"));
}
