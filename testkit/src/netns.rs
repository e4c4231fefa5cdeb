//! Hosts of a run's own, each in a network namespace with a veth into a bridge the run makes, so
//! that a link between a host and a peer can be cut (its packets dropped, never refused or reset),
//! cut one way only, made lossy, and healed, as a network fails. The run's own process stays
//! outside, on the bridge's address; a peer is an address and port there (a forwarder to a
//! backend, say) or on another host.
//!
//! Needs root, iproute2 (`ip`) and nftables (`nft`). The kernel's `netem` queueing discipline is
//! not assumed (it is absent on some kernels): delay is for the forwarder in front of a peer
//! ([`crate::fault_proxy::Fault::Jitter`]), loss is dropped here by nftables.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    process::Command as StdCommand,
};

use anyhow::Context;
use tokio::process::Command;

/// The nftables table each host keeps its faults in, with an `input` and an `output` chain.
const TABLE: &str = "links";

/// A bridge with an address of its own and the hosts on it; everything it made is removed when
/// it is dropped.
pub struct Network {
    bridge: String,
    /// The /24 the bridge and its hosts are in: `10.{subnet}.0.0/24`.
    subnet: u8,
    hosts: Vec<String>,
}

/// Which way a cut link drops packets, as the host sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Way {
    /// Both: nothing passes.
    Both,
    /// What the host sends is dropped; what the peer sends arrives.
    Outgoing,
    /// What the peer sends is dropped; what the host sends arrives.
    Incoming,
}

/// One host: a network namespace with one interface on the bridge.
pub struct Host {
    namespace: String,
    address: Ipv4Addr,
}

/// Runs `ip`, `nft` or another command; fails with what it printed.
fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = StdCommand::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program} (is it installed?)"))?;
    anyhow::ensure!(
        output.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

impl Network {
    /// Makes a bridge named after this process, at `10.x.0.1/24`.
    pub fn create() -> anyhow::Result<Self> {
        let id = std::process::id() % 10_000;
        let network = Self {
            bridge: format!("pl{id}"),
            subnet: u8::try_from(100 + id % 150).unwrap_or(100),
            hosts: Vec::new(),
        };
        // What an interrupted run of the same process id left behind.
        let _ = run("ip", &["link", "del", &network.bridge]);
        run("ip", &["link", "add", &network.bridge, "type", "bridge"])?;
        let address = format!("{}/24", network.address());
        run("ip", &["addr", "add", &address, "dev", &network.bridge])?;
        run("ip", &["link", "set", &network.bridge, "up"])?;
        Ok(network)
    }

    /// The run's own address on the bridge, where its forwarders listen.
    pub fn address(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.subnet, 0, 1)
    }

    /// Adds a host named `name` (a few letters) at the next address.
    pub fn host(&mut self, name: &str) -> anyhow::Result<Host> {
        let number = u8::try_from(self.hosts.len() + 2).context("too many hosts")?;
        let namespace = format!("{}-{name}", self.bridge);
        anyhow::ensure!(namespace.len() <= 15, "host name {name} is too long");
        let _ = run("ip", &["netns", "del", &namespace]);
        run("ip", &["netns", "add", &namespace])?;
        self.hosts.push(namespace.clone());
        let address = Ipv4Addr::new(10, self.subnet, 0, number);
        let cidr = format!("{address}/24");
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &namespace];
            all.extend_from_slice(args);
            run("ip", &all)
        };
        run(
            "ip",
            &[
                "link", "add", &namespace, "type", "veth", "peer", "name", "eth0", "netns",
                &namespace,
            ],
        )?;
        run("ip", &["link", "set", &namespace, "master", &self.bridge])?;
        run("ip", &["link", "set", &namespace, "up"])?;
        inside(&["ip", "addr", "add", &cidr, "dev", "eth0"])?;
        inside(&["ip", "link", "set", "eth0", "up"])?;
        inside(&["ip", "link", "set", "lo", "up"])?;
        let host = Host { namespace, address };
        host.nft(&["add", "table", "inet", TABLE])?;
        for (chain, hook) in [("input", "input"), ("output", "output")] {
            let spec = format!("{{ type filter hook {hook} priority 0; }}");
            host.nft(&["add", "chain", "inet", TABLE, chain, &spec])?;
        }
        Ok(host)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for namespace in &self.hosts {
            let _ = run("ip", &["netns", "del", namespace]);
        }
        let _ = run("ip", &["link", "del", &self.bridge]);
    }
}

impl Host {
    /// Its address on the bridge.
    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    /// `program` to be run inside the host (`ip netns exec`, which runs it in place: its
    /// process id is the program's).
    pub fn command(&self, program: &Path) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.namespace])
            .arg(program);
        command
    }

    fn nft(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut all = vec!["netns", "exec", &self.namespace, "nft"];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Adds `verdict` (a statement such as `drop`) for the packets of the link to `peer`,
    /// `way` as the host sees it.
    fn rule(&self, peer: SocketAddr, way: Way, verdict: &str) -> anyhow::Result<()> {
        let (ip, port) = (peer.ip().to_string(), peer.port().to_string());
        if way != Way::Incoming {
            self.nft(&[
                "add", "rule", "inet", TABLE, "output", "ip", "daddr", &ip, "tcp", "dport", &port,
                verdict,
            ])?;
        }
        if way != Way::Outgoing {
            self.nft(&[
                "add", "rule", "inet", TABLE, "input", "ip", "saddr", &ip, "tcp", "sport", &port,
                verdict,
            ])?;
        }
        Ok(())
    }

    /// Cuts the link to `peer`: its packets are dropped (`way` as the host sees it), so open
    /// connections hang until a timeout notices, and new ones are never answered.
    pub fn cut(&self, peer: SocketAddr, way: Way) -> anyhow::Result<()> {
        self.rule(peer, way, "drop")
    }

    /// Drops `percent` of the link's packets at random, both ways.
    pub fn lossy(&self, peer: SocketAddr, percent: u8) -> anyhow::Result<()> {
        let drop = format!("numgen random mod 100 < {percent} drop");
        self.rule(peer, Way::Both, &drop)
    }

    /// Lifts every cut and loss.
    pub fn heal(&self) -> anyhow::Result<()> {
        for chain in ["input", "output"] {
            self.nft(&["flush", "chain", "inet", TABLE, chain])?;
        }
        Ok(())
    }
}
