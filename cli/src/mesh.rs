//! `hearsay mesh --node URL`: the nodes a node knows from their signed
//! statuses, as a table, with the score a router would give each one for a
//! client at `--geo` (default: the queried node's own position).

use std::fmt::Write as _;

use hearsay_node::mesh::{NodeEntry, Nodes};
use hearsay_topology::{Geo, Weights, score};

use crate::client::NodeUrl;

#[derive(clap::Args, Debug)]
pub struct MeshArgs {
    #[command(flatten)]
    node: NodeUrl,
    /// Client position for the distance term [default: the node's own]
    #[arg(long, value_name = "LAT,LON")]
    geo: Option<String>,
    /// Score weights I,J,K,L (delay, response, distance, error rate)
    #[arg(long, value_name = "I,J,K,L")]
    weights: Option<String>,
    /// Print `/api/v0/nodes` as JSON instead of the table
    #[arg(long)]
    json: bool,
}

pub async fn run(args: MeshArgs) -> anyhow::Result<()> {
    let nodes = args.node.client().nodes().await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&nodes)?);
        return Ok(());
    }
    let client = match &args.geo {
        Some(g) => Some(Geo::parse(g).map_err(anyhow::Error::msg)?),
        None => nodes.this.as_ref().and_then(|n| n.status.geo),
    };
    let weights = match &args.weights {
        Some(w) => Weights::parse(w).map_err(anyhow::Error::msg)?,
        None => Weights::default(),
    };
    print!("{}", render(&nodes, client, &weights));
    Ok(())
}

/// The table: the node answering first, then the others best score first
/// (nodes a router would not pick, suspect or down, last with no score).
pub fn render(nodes: &Nodes, client: Option<Geo>, weights: &Weights) -> String {
    let mut rows: Vec<(&NodeEntry, Option<f64>)> = nodes
        .this
        .iter()
        .chain(&nodes.nodes)
        .map(|n| {
            let usable = n.state == "self" || n.state == "alive";
            (
                n,
                usable.then(|| score(&n.as_status(), client, weights).score),
            )
        })
        .collect();
    rows.sort_by(|a, b| {
        let own = |n: &NodeEntry| n.state != "self";
        own(a.0)
            .cmp(&own(b.0))
            .then(b.1.unwrap_or(-1.0).total_cmp(&a.1.unwrap_or(-1.0)))
    });
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<14} {:<12} {:<7} {:>7} {:>8} {:<8} {:>15} {:>8} {:>6} {:>8} {:>5} {:>8}  HTTP",
        "PEER",
        "REGION",
        "STATE",
        "AGE",
        "REVISION",
        "HASH",
        "DELAY p50/p99",
        "RESP",
        "ERR",
        "DIST",
        "LINKS",
        "SCORE"
    );
    for (n, s) in rows {
        let peer = n
            .status
            .peer_id
            .get(n.status.peer_id.len().saturating_sub(12)..)
            .unwrap_or(&n.status.peer_id);
        let distance = client.zip(n.status.geo).map_or("-".to_owned(), |(c, g)| {
            format!("{:.0}km", c.distance_km(&g))
        });
        let age = if n.state == "self" {
            "-".to_owned()
        } else {
            format!("{:.1}s", n.heartbeat_age_ms as f64 / 1000.0)
        };
        let _ = writeln!(
            out,
            "…{:<13} {:<12} {:<7} {:>7} {:>8} {:<8} {:>15} {:>8} {:>6} {:>8} {:>5} {:>8}  {}",
            peer,
            truncate(&n.status.region, 12),
            n.state,
            age,
            n.status.revision,
            n.status
                .revision_hash
                .get(..8)
                .unwrap_or(&n.status.revision_hash),
            format!(
                "{:.0}/{:.0}ms",
                n.status.replication_delay_p50_ms, n.status.replication_delay_p99_ms
            ),
            format!("{:.2}ms", n.status.mean_response_ms),
            format!("{:.1}%", n.status.error_rate * 100.0),
            distance,
            n.status.neighbours.len(),
            s.map_or("-".to_owned(), |s| format!("{s:.4}")),
            n.status.http
        );
    }
    out
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(peer: &str, region: &str, state: &str, geo: Geo, delay: f64) -> NodeEntry {
        NodeEntry {
            status: hearsay_node::status::StatusBody {
                peer_id: peer.into(),
                http: format!("http://{region}.example:8080"),
                region: region.into(),
                geo: Some(geo),
                listen_addrs: vec![],
                revision: 12,
                revision_hash: "0123456789abcdef".into(),
                version_vector: None,
                mean_response_ms: 0.5,
                error_rate: 0.0,
                replication_delay_p50_ms: delay,
                replication_delay_p99_ms: 2.0 * delay,
                neighbours: vec!["x".into(), "y".into()],
                uptime_s: 10,
                timestamp_ms: 0,
                certificate: None,
            },
            state: state.into(),
            heartbeat_age_ms: 400,
            clock_offset_ms: Some(0),
            linked: true,
        }
    }

    #[test]
    fn the_table_ranks_alive_nodes_by_score_and_leaves_the_rest_unscored() {
        let frankfurt = Geo {
            lat: 50.1,
            lon: 8.7,
        };
        let tokyo = Geo {
            lat: 35.7,
            lon: 139.7,
        };
        let virginia = Geo {
            lat: 38.9,
            lon: -77.0,
        };
        let nodes = Nodes {
            this: Some(entry("12D3KooWself00000001", "eu", "self", frankfurt, 5.0)),
            nodes: vec![
                entry("12D3KooWtokyo0000002", "asia", "alive", tokyo, 5.0),
                entry("12D3KooWvirginia0003", "us", "alive", virginia, 5.0),
                entry("12D3KooWdead00000004", "eu2", "down", frankfurt, 5.0),
            ],
            equivocators: Vec::new(),
        };
        let table = render(&nodes, Some(frankfurt), &Weights::default());
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{table}");
        assert!(lines[0].starts_with("PEER"));
        // Self first; then Virginia (nearer Frankfurt than Tokyo); the down
        // node last, unscored.
        assert!(
            lines[1].contains("self") && lines[1].contains("0km"),
            "{table}"
        );
        assert!(lines[2].contains("us "), "{table}");
        assert!(lines[3].contains("asia"), "{table}");
        assert!(
            lines[4].contains("down") && lines[4].contains(" -  "),
            "{table}"
        );
        // The score is the topology crate's: 1 / (5 + 0.5 + 0.02 * km).
        let km = frankfurt.distance_km(&virginia);
        let expected = format!("{:.4}", 1.0 / (5.0 + 0.5 + 0.02 * km));
        assert!(lines[2].contains(&expected), "{expected} in {}", lines[2]);
    }
}
