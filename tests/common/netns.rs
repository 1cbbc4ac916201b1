//! A small network lab of Linux network namespaces, for splits as a user
//! meets them: every node runs in a namespace of its own with one veth link
//! to a bridge in the test's namespace, and a split moves one group's links
//! to a second bridge. Frames across the split then go nowhere, silently,
//! as when a switch or a WAN link fails: no reset, no ICMP, so the nodes
//! must notice the dead links themselves.
//!
//! The test process reaches every node through the bridges (the first
//! bridge holds the lab's gateway address; a split adds host routes to the
//! moved nodes through the second bridge, which has the same MAC, so the
//! nodes' ARP entries for the gateway stay right), so it can keep writing on
//! both sides of a split.
//!
//! Every name and the /24 subnet are unique to the lab, which removes all it
//! created when dropped. Creating namespaces needs root (CAP_NET_ADMIN);
//! [`Lab::create`] says why it cannot when it cannot, so a test can skip
//! with that reason.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Runs `ip ARGS`; the error holds the command and its stderr.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Namespaces, links and bridges of one test.
#[derive(Debug)]
pub struct Lab {
    /// Short unique prefix of every name (interface names are capped at 15
    /// bytes).
    tag: String,
    /// Third octet of the lab's 10.231.X.0/24.
    subnet: u8,
    nodes: usize,
    /// Nodes moved to the second bridge by the current split.
    split: Vec<usize>,
}

impl Lab {
    /// Creates `nodes` namespaces linked to one bridge, or says why it
    /// cannot (not root, no namespace support).
    pub fn create(nodes: usize) -> Result<Lab, String> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        assert!(nodes < 200, "a /24 per lab");
        let n = std::process::id().wrapping_mul(31) + NEXT.fetch_add(1, Ordering::Relaxed);
        let lab = Lab {
            tag: format!("hs{:04x}", n & 0xffff),
            subnet: 20 + (n % 200) as u8,
            nodes,
            split: Vec::new(),
        };
        // Dropped on failure, which removes whatever was made.
        lab.build()?;
        Ok(lab)
    }

    fn build(&self) -> Result<(), String> {
        let (a, b) = (self.bridge(0), self.bridge(1));
        ip(&["link", "add", &a, "type", "bridge"])?;
        ip(&["link", "add", &b, "type", "bridge"])?;
        // One fixed MAC for the gateway on both bridges: a bridge otherwise
        // takes the lowest MAC of its ports, which changes as a split moves
        // ports, and the nodes' ARP entries for the gateway would then point
        // at a MAC their bridge no longer has (answers to the test lost).
        let mac = format!("02:48:53:00:{:02x}:01", self.subnet);
        ip(&["link", "set", &a, "address", &mac])?;
        ip(&["link", "set", &b, "address", &mac])?;
        ip(&["link", "set", &a, "up"])?;
        ip(&["link", "set", &b, "up"])?;
        ip(&["addr", "add", &format!("{}/24", self.gateway()), "dev", &a])?;
        for i in 0..self.nodes {
            let (ns, outer, inner) = (self.ns(i), self.outer(i), self.inner(i));
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ])?;
            ip(&["link", "set", &inner, "netns", &ns])?;
            ip(&["link", "set", &outer, "master", &a])?;
            ip(&["link", "set", &outer, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", self.ip(i)),
                "dev",
                &inner,
            ])?;
            ip(&["-n", &ns, "link", "set", &inner, "up"])?;
        }
        Ok(())
    }

    fn bridge(&self, which: usize) -> String {
        format!("{}b{which}", self.tag)
    }

    fn outer(&self, i: usize) -> String {
        format!("{}v{i}", self.tag)
    }

    fn inner(&self, i: usize) -> String {
        format!("{}p{i}", self.tag)
    }

    /// The namespace of node `i` (for `ip netns exec`).
    pub fn ns(&self, i: usize) -> String {
        format!("{}n{i}", self.tag)
    }

    /// The address of node `i`.
    pub fn ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 231, self.subnet, 10 + i as u8)
    }

    /// The test's own address in the lab.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 231, self.subnet, 1)
    }

    /// Cuts `group` off from the other nodes (not from the test).
    pub fn split(&mut self, group: &[usize]) -> Result<(), String> {
        assert!(self.split.is_empty(), "already split");
        for &i in group {
            ip(&["link", "set", &self.outer(i), "master", &self.bridge(1)])?;
            let host = format!("{}/32", self.ip(i));
            let src = self.gateway().to_string();
            ip(&["route", "add", &host, "dev", &self.bridge(1), "src", &src])?;
            self.split.push(i);
        }
        Ok(())
    }

    /// Joins the groups again.
    pub fn heal(&mut self) -> Result<(), String> {
        for i in std::mem::take(&mut self.split) {
            ip(&["route", "del", &format!("{}/32", self.ip(i))])?;
            ip(&["link", "set", &self.outer(i), "master", &self.bridge(0)])?;
        }
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for i in std::mem::take(&mut self.split) {
            let _ = ip(&["route", "del", &format!("{}/32", self.ip(i))]);
        }
        for i in 0..self.nodes {
            // Deleting the namespace deletes its end of the veth, and so both.
            let _ = ip(&["netns", "del", &self.ns(i)]);
            let _ = ip(&["link", "del", &self.outer(i)]);
        }
        let _ = ip(&["link", "del", &self.bridge(0)]);
        let _ = ip(&["link", "del", &self.bridge(1)]);
    }
}
