//! A TCP proxy on loopback for network tests and `hearsay bench`: adds
//! one-way latency to every byte it forwards, and can cut every connection
//! and refuse new ones (a partition) until healed. Kernel netem is not
//! always available, so latency and partitions are made here, in user
//! space.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Chunks in flight per direction of one connection.
const IN_FLIGHT: usize = 1024;

#[derive(Debug)]
pub struct Proxy {
    /// Where to connect instead of the target.
    pub addr: SocketAddr,
    partitioned: Arc<AtomicBool>,
    /// Bumped to cut every open connection.
    cut: watch::Sender<u64>,
    accept: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut.send_modify(|g| *g += 1);
        self.accept.abort();
    }
}

impl Proxy {
    /// Proxies `127.0.0.1:<new port>` to `target`, delaying each direction by `delay`.
    pub async fn start(target: SocketAddr, delay: Duration) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let partitioned = Arc::new(AtomicBool::new(false));
        let (cut, _) = watch::channel(0u64);
        let accept = {
            let (partitioned, cut) = (partitioned.clone(), cut.clone());
            tokio::spawn(async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    if partitioned.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        continue;
                    };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    tokio::spawn(pump(ri, wo, delay, cut.subscribe()));
                    tokio::spawn(pump(ro, wi, delay, cut.subscribe()));
                }
            })
        };
        Ok(Proxy {
            addr,
            partitioned,
            cut,
            accept,
        })
    }

    /// Cuts every connection and refuses new ones.
    pub fn partition(&self) {
        self.partitioned.store(true, Ordering::SeqCst);
        self.cut.send_modify(|g| *g += 1);
    }

    /// Accepts connections again.
    pub fn heal(&self) {
        self.partitioned.store(false, Ordering::SeqCst);
    }
}

/// Copies `from` to `to`, each chunk released `delay` after it was read,
/// until either side closes or the connection is cut.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    mut cut: watch::Receiver<u64>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(IN_FLIGHT);
    let mut cut_writer = cut.clone();
    let writer = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = cut_writer.changed() => break,
                item = rx.recv() => {
                    let Some((at, bytes)) = item else { break };
                    tokio::time::sleep_until(at + delay).await;
                    if to.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            _ = cut.changed() => break,
            n = from.read(&mut buf) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send((Instant::now(), buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            },
        }
    }
    drop(tx);
    let _ = writer.await;
}
