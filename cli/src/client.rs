//! The `--node URL` option of the client commands; the client itself is
//! [`hearsay_node::client::Client`].

use hearsay_node::client::Client;

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

/// Prints an answer as pretty JSON.
pub fn print(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).expect("json"));
}
