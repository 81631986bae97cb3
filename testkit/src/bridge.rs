//! An L2 segment: a Linux bridge in a namespace of its own, with one port
//! per attached node, as a switch between machines. Its netfilter hooks are
//! off (this kernel builds them in, and they would send bridged frames
//! through the bridge namespace's iptables), and it can cut the segment
//! between two nodes while every other pair keeps talking ([`Bridge::partition`]).
//!
//! A partition is an nftables `bridge` table in the bridge namespace that
//! drops frames forwarded between the two nodes' ports, broadcast and
//! multicast included (the forward hook sees each flooded copy per port).

use crate::error::Result;
use crate::netns::{Lab, Netns, Veth};

/// The bridge device inside the bridge namespace.
pub const BRIDGE_DEV: &str = "br0";

/// The nftables table holding partitions.
const TABLE: &str = "xlbt_partition";

/// A bridge namespace and the ports plugged into it.
#[derive(Debug)]
pub struct Bridge {
    ns: Netns,
    /// (port in the bridge namespace, namespace of the node behind it).
    ports: Vec<(String, String)>,
    partition_table: bool,
}

impl Lab {
    /// A new namespace `role` holding bridge [`BRIDGE_DEV`], up, with the
    /// bridge's netfilter hooks off.
    pub fn bridge(&mut self, role: &str) -> Result<Bridge> {
        let ns = self.ns(role)?;
        ns.ip(&["link", "add", BRIDGE_DEV, "type", "bridge"])?;
        // The sysctls exist only once br_netfilter is loaded: none to turn
        // off otherwise.
        for k in ["iptables", "ip6tables", "arptables"] {
            let _ = ns.sysctl(&format!("net.bridge.bridge-nf-call-{k}"), "0");
        }
        ns.link_up(BRIDGE_DEV)?;
        Ok(Bridge {
            ns,
            ports: Vec::new(),
            partition_table: false,
        })
    }
}

impl Bridge {
    /// The bridge's namespace.
    pub fn ns(&self) -> &Netns {
        &self.ns
    }

    /// Plug `port`, an interface already in the bridge namespace that leads
    /// to namespace `node`, into the bridge.
    pub fn plug(&mut self, port: &str, node: &str) -> Result<()> {
        self.ns.ip(&["link", "set", port, "master", BRIDGE_DEV])?;
        self.ports.push((port.to_string(), node.to_string()));
        Ok(())
    }

    /// Connect namespace `node` to the segment: a veth `port` (bridge side)
    /// ↔ `node_if` (node side) with `queues` queues, plugged in.
    pub fn attach(&mut self, port: &str, node: &str, node_if: &str, queues: u32) -> Result<()> {
        Veth::new(&self.ns, port, node, node_if)
            .queues(queues)
            .create()?;
        self.plug(port, node)
    }

    /// A static forwarding entry: frames to `mac` leave through `port`. For
    /// nodes that only receive, which the bridge would never learn and so
    /// flood every frame to.
    pub fn static_fdb(&self, port: &str, mac: &str) -> Result<()> {
        self.ns
            .exec(&[
                "bridge", "fdb", "replace", mac, "dev", port, "master", "static",
            ])
            .map(drop)
    }

    /// The ports behind which namespace `node` sits.
    pub fn ports_of(&self, node: &str) -> Vec<&str> {
        self.ports
            .iter()
            .filter(|(_, n)| n == node)
            .map(|(p, _)| p.as_str())
            .collect()
    }

    /// Ordered port pairs between nodes `a` and `b`, both ways, as nftables
    /// set elements.
    fn pairs(&self, a: &str, b: &str) -> String {
        let mut v = Vec::new();
        for pa in self.ports_of(a) {
            for pb in self.ports_of(b) {
                v.push(format!("\"{pa}\" . \"{pb}\""));
                v.push(format!("\"{pb}\" . \"{pa}\""));
            }
        }
        v.join(", ")
    }

    /// Cut the segment between nodes `a` and `b`: no frame crosses between
    /// their ports, while both still reach every other node.
    pub fn partition(&mut self, a: &str, b: &str) -> Result<()> {
        if !self.partition_table {
            self.ns.nft(&format!(
                "table bridge {TABLE} {{\n  set cut {{ type ifname . ifname; }}\n  chain forward {{\n    type filter hook forward priority 0; policy accept;\n    iifname . oifname @cut drop\n  }}\n}}\n"
            ))?;
            self.partition_table = true;
        }
        let pairs = self.pairs(a, b);
        if pairs.is_empty() {
            return Ok(());
        }
        self.ns
            .nft(&format!("add element bridge {TABLE} cut {{ {pairs} }}\n"))
    }

    /// Undo [`Bridge::partition`] between `a` and `b`.
    pub fn heal(&mut self, a: &str, b: &str) -> Result<()> {
        let pairs = self.pairs(a, b);
        if !self.partition_table || pairs.is_empty() {
            return Ok(());
        }
        self.ns.nft(&format!(
            "delete element bridge {TABLE} cut {{ {pairs} }}\n"
        ))
    }
}
