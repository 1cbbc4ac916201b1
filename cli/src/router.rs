//! `hearsay router`: the HTTP front end that sends each client to the best
//! host of the mesh (see `hearsay_node::router`).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use hearsay_admission::Certificate;
use hearsay_node::router::{RouterConfig, run};
use hearsay_topology::{Geo, Weights};
use libp2p::Multiaddr;

#[derive(clap::Args, Debug)]
pub struct RouterArgs {
    /// HTTP address to serve clients on; port 0 picks a free port (the
    /// bound address is printed as `http://HOST:PORT`)
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:0")]
    http: SocketAddr,
    /// A mesh node to join through, a multiaddr ending in /p2p/<peer id>
    /// (repeatable)
    #[arg(long, value_name = "MULTIADDR", required = true)]
    join: Vec<Multiaddr>,
    /// libp2p listen address of the router
    #[arg(long, value_name = "MULTIADDR", default_value = "/ip4/0.0.0.0/tcp/0")]
    listen: Vec<Multiaddr>,
    /// Score weights I,J,K,L: ms per ms of replication delay, per ms of
    /// response time, per km, per unit of error rate
    #[arg(long, value_name = "I,J,K,L", default_value = "1,1,0.02,1000")]
    weights: String,
    /// The router's own position, used for clients that send none
    #[arg(long, value_name = "LAT,LON")]
    geo: Option<String>,
    /// Where router.json and the router's key (node.key, so `hearsay
    /// operator admit --data-dir DIR` admits it) go [default:
    /// $HEARSAY_HOME/router]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The router's certificate (`hearsay operator admit <router peer
    /// id>`), for a mesh with an operator [default: node.cert in the data
    /// directory, if it exists]
    #[arg(long, value_name = "FILE")]
    certificate: Option<PathBuf>,
}

pub async fn run_router(args: RouterArgs) -> anyhow::Result<()> {
    let weights = Weights::parse(&args.weights).map_err(anyhow::Error::msg)?;
    let geo = args
        .geo
        .as_deref()
        .map(Geo::parse)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let data_dir = match args.data_dir {
        Some(d) => d,
        None => crate::users::home()?.join("router"),
    };
    let certificate = args.certificate.or_else(|| {
        Some(data_dir.join(hearsay_node::config::CERTIFICATE_FILE)).filter(|p| p.exists())
    });
    let certificate = certificate
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading the certificate {}", path.display()))?;
            Certificate::from_text(&text)
                .with_context(|| format!("the certificate {}", path.display()))
        })
        .transpose()?;
    let config = RouterConfig {
        http: args.http,
        listen: args.listen,
        join: args.join,
        weights,
        geo,
        data_dir,
        certificate,
    };
    run(config, hearsay_node::shutdown_signal(), |url| {
        println!("{url}");
        let _ = std::io::stdout().flush();
    })
    .await
    .context("router failed")
}
