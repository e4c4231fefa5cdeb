//! A RabbitMQ cluster of the harness's own: nodes on this machine with their own names, ports,
//! data and log directories, joined with `rabbitmqctl join_cluster`. It never touches the shared
//! broker on 5672: every node reads a `rabbitmq.conf` that pins its listener to a free loopback
//! port, through a per-node env file (`RABBITMQ_CONF_ENV_FILE`), so `/etc/rabbitmq`'s settings
//! do not apply. The nodes run as the `rabbitmq` user (the packaged scripts switch to it), which
//! also gives them and the CLI one Erlang cookie. The nodes handle a partition by pausing the
//! minority side (`cluster_partition_handling = pause_minority`), and each connects to the
//! others from a loopback address of its own (`127.0.0.{11 + i}`), so that [`Cluster::isolate`]
//! can cut one node from the others with nftables while clients and the CLI still reach it.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use tokio::process::Command;

use crate::ports::free_port;

/// One node: its Erlang name, AMQP (or AMQPS) port and directory.
pub struct Node {
    /// `<name>@localhost`.
    pub name: String,
    /// The AMQP listener (TLS for [`Cluster::start_tls`]), on 127.0.0.1.
    pub port: u16,
    /// The Erlang distribution's listener, on 127.0.0.1.
    dist_port: u16,
    /// The address it connects to the other nodes from.
    source: std::net::Ipv4Addr,
    dir: PathBuf,
}

/// A node cut from the others (the packets of their distribution links dropped, both ways);
/// healed when dropped.
pub struct Isolation {
    table: String,
}

impl Drop for Isolation {
    fn drop(&mut self) {
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", "inet", &self.table])
            .status();
    }
}

/// The running cluster; [`Cluster::stop`] stops every node and removes the directories.
pub struct Cluster {
    dir: PathBuf,
    /// The nodes, the first one the seed the others joined.
    pub nodes: Vec<Node>,
}

/// How long a node may take to boot or to stop.
const NODE_TIMEOUT: Duration = Duration::from_secs(120);

impl Cluster {
    /// Starts `size` nodes under a new directory in the system's temporary directory, named
    /// `<prefix>-<pid>-<i>@localhost`, and joins them into one cluster.
    pub async fn start(prefix: &str, size: usize) -> anyhow::Result<Self> {
        Self::start_with(prefix, size, None).await
    }

    /// A single node whose only listener is AMQP over TLS (`amqps://`, on [`Node::port`]),
    /// presenting the server certificate of `certs`.
    pub async fn start_tls(prefix: &str, certs: &crate::tls::Certs) -> anyhow::Result<Self> {
        Self::start_with(prefix, 1, Some(certs)).await
    }

    async fn start_with(
        prefix: &str,
        size: usize,
        tls: Option<&crate::tls::Certs>,
    ) -> anyhow::Result<Self> {
        let name = format!("{prefix}-{}", std::process::id());
        let dir = std::env::temp_dir().join(&name);
        let mut nodes = Vec::new();
        for i in 1..=size {
            let source = std::net::Ipv4Addr::new(127, 0, 0, u8::try_from(10 + i)?);
            nodes.push(Node::write(&dir, &format!("{name}-{i}"), source, tls)?);
        }
        run(
            "chown",
            &["-R", "rabbitmq:rabbitmq", &dir.to_string_lossy()],
        )
        .await?;
        let cluster = Self { dir, nodes };
        for i in 0..size {
            cluster.nodes[i].launch().await?;
        }
        for i in 0..size {
            cluster.await_node(i).await?;
        }
        let seed = cluster.nodes[0].name.clone();
        for node in &cluster.nodes[1..] {
            ctl(&node.name, &["stop_app"]).await?;
            ctl(&node.name, &["join_cluster", &seed]).await?;
            ctl(&node.name, &["start_app"]).await?;
        }
        Ok(cluster)
    }

    /// `AMQP_URL` for a client that tries node `first` first, then the others in turn.
    pub fn url_list(&self, first: usize) -> String {
        let n = self.nodes.len();
        (0..n)
            .map(|k| {
                let port = self.nodes[(first + k) % n].port;
                format!("amqp://guest:guest@127.0.0.1:{port}/%2f")
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts node `i` again (after a stop or a kill) and waits until it runs.
    pub async fn start_node(&self, i: usize) -> anyhow::Result<()> {
        self.nodes[i].launch().await?;
        self.await_node(i).await
    }

    /// Stops node `i` cleanly and waits for its process to exit.
    pub async fn stop_node(&self, i: usize) -> anyhow::Result<()> {
        let node = &self.nodes[i];
        ctl(&node.name, &["stop", &node.pid_file().to_string_lossy()]).await
    }

    /// Cuts node `i` from the other nodes: every packet between its distribution and theirs is
    /// dropped (nftables, on this host's loopback), as a network partition does; clients and the
    /// CLI still reach it. Lifted when the [`Isolation`] is dropped. Needs `nft` and root.
    pub fn isolate(&self, i: usize) -> anyhow::Result<Isolation> {
        let node = &self.nodes[i];
        let others: Vec<&Node> = (0..self.nodes.len())
            .filter(|j| *j != i)
            .map(|j| &self.nodes[j])
            .collect();
        let set = |items: Vec<String>| format!("{{ {} }}", items.join(", "));
        let their_sources = set(others.iter().map(|n| n.source.to_string()).collect());
        let their_ports = set(others.iter().map(|n| n.dist_port.to_string()).collect());
        let table = format!("cluster{}", std::process::id());
        let rules = [
            format!("ip saddr {their_sources} tcp dport {} drop", node.dist_port),
            format!("ip daddr {their_sources} tcp sport {} drop", node.dist_port),
            format!("ip saddr {} tcp dport {their_ports} drop", node.source),
            format!("ip daddr {} tcp sport {their_ports} drop", node.source),
        ];
        let script = format!(
            "table inet {table} {{\n chain out {{\n  type filter hook output priority 0;\n  {}\n }}\n}}\n",
            rules.join("\n  ")
        );
        let path = self.dir.join("isolate.nft");
        std::fs::write(&path, script)?;
        let status = std::process::Command::new("nft")
            .arg("-f")
            .arg(&path)
            .status()
            .context("cannot run nft (is nftables installed?)")?;
        anyhow::ensure!(
            status.success(),
            "nft refused the rules in {}",
            path.display()
        );
        Ok(Isolation { table })
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT`) to node `i`'s Erlang VM.
    pub async fn signal(&self, i: usize, signal: &str) -> anyhow::Result<()> {
        let pid = std::fs::read_to_string(self.nodes[i].pid_file())?;
        run("kill", &[&format!("-{signal}"), pid.trim()]).await
    }

    /// Waits until node `i` has written its pid file and booted.
    pub async fn await_node(&self, i: usize) -> anyhow::Result<()> {
        let node = &self.nodes[i];
        let timeout = NODE_TIMEOUT.as_millis().to_string();
        let pid_file = node.pid_file();
        // The node writes its pid file a moment after `rabbitmq-server -detached` returns, and
        // `rabbitmqctl wait` gives up on one it reads before the pid is in it
        // (`garbage_in_pid_file`, seen in CI): it is asked once the file holds a pid.
        crate::wait::eventually_or(NODE_TIMEOUT, || async {
            std::fs::read_to_string(&pid_file)
                .ok()?
                .trim()
                .parse::<u32>()
                .ok()
        })
        .await
        .ok_or_else(|| anyhow::anyhow!("node {} wrote no pid file in time", node.name))?;
        let wait = ["wait", &pid_file.to_string_lossy(), "--timeout", &timeout];
        ctl(&node.name, &wait).await
    }

    /// Waits until stopping node `i` would leave every quorum queue with a majority online
    /// (what a rolling restart waits for before it stops the next node).
    pub async fn await_quorum_plus_one(&self, i: usize) -> anyhow::Result<()> {
        let timeout = NODE_TIMEOUT.as_secs().to_string();
        let output = bounded(
            Command::new("rabbitmq-upgrade")
                .args(["-q", "-n", &self.nodes[i].name])
                .args(["await_online_quorum_plus_one", "-t", &timeout]),
        )
        .await?;
        check("rabbitmq-upgrade await_online_quorum_plus_one", &output)
    }

    /// The node index leading each of `queues`, asked of running node `via`.
    pub async fn leaders(&self, via: usize, queues: &[String]) -> anyhow::Result<Vec<usize>> {
        let args = ["list_queues", "--no-table-headers", "name", "leader"];
        let output = ctl_output(&self.nodes[via].name, &args).await?;
        let by_queue: BTreeMap<&str, &str> = std::str::from_utf8(&output.stdout)?
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .collect();
        queues
            .iter()
            .map(|queue| {
                let leader = by_queue
                    .get(queue.as_str())
                    .with_context(|| format!("no queue {queue}"))?;
                self.nodes
                    .iter()
                    .position(|n| n.name == leader.trim())
                    .with_context(|| format!("{queue} led by {leader}, not a node of ours"))
            })
            .collect()
    }

    /// Where the messages of the queues whose names start with `prefix` are, asked of running
    /// node `via`: one `queue messages=<n> ready=<n> unacked=<n> consumers=<n>` line per queue
    /// holding any (more messages than ready and unacknowledged together: some wait to be
    /// dead-lettered), then the unacknowledged deliveries the channels know of, summed. A
    /// queue's unacknowledged messages no channel claims are held for a consumer that will
    /// never settle them.
    pub async fn census(&self, via: usize, prefix: &str) -> anyhow::Result<Vec<String>> {
        let name = &self.nodes[via].name;
        let args = [
            "list_queues",
            "--no-table-headers",
            "name",
            "messages",
            "messages_ready",
            "messages_unacknowledged",
            "consumers",
        ];
        let output = ctl_output(name, &args).await?;
        let mut lines: Vec<String> = std::str::from_utf8(&output.stdout)?
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split('\t').map(str::trim).collect();
                let [queue, messages, ready, unacked, consumers] = fields[..] else {
                    return None;
                };
                (queue.starts_with(prefix) && messages != "0").then(|| {
                    format!(
                        "{queue} messages={messages} ready={ready} unacked={unacked} \
                         consumers={consumers}"
                    )
                })
            })
            .collect();
        let args = [
            "list_channels",
            "--no-table-headers",
            "messages_unacknowledged",
        ];
        let output = ctl_output(name, &args).await?;
        let held: u64 = std::str::from_utf8(&output.stdout)?
            .lines()
            .filter_map(|line| line.trim().parse::<u64>().ok())
            .sum();
        lines.push(format!("channels hold {held} unacknowledged"));
        Ok(lines)
    }

    /// Copies every node's log directory to `<to>/rabbitmq-<i>/`, to keep it past the cluster.
    pub fn copy_logs(&self, to: &Path) -> std::io::Result<()> {
        for (i, node) in self.nodes.iter().enumerate() {
            let into = to.join(format!("rabbitmq-{i}"));
            std::fs::create_dir_all(&into)?;
            for entry in std::fs::read_dir(node.dir.join("log"))? {
                let entry = entry?;
                if entry.file_type()?.is_file() {
                    std::fs::copy(entry.path(), into.join(entry.file_name()))?;
                }
            }
        }
        Ok(())
    }

    /// Stops every node cleanly (a frozen one is thawed first); dropping the cluster then
    /// removes their directories.
    pub async fn stop(self) {
        for i in 0..self.nodes.len() {
            let _ = self.signal(i, "CONT").await;
            let _ = self.stop_node(i).await;
        }
    }
}

impl Drop for Cluster {
    /// Kills whatever node still runs (a harness that panicked leaves none behind) and removes
    /// the directories.
    fn drop(&mut self) {
        for node in &self.nodes {
            let Ok(pid) = std::fs::read_to_string(node.pid_file()) else {
                continue;
            };
            // Only if that process is still this node's VM (not a later one with its pid).
            let environ =
                std::fs::read(format!("/proc/{}/environ", pid.trim())).unwrap_or_default();
            if String::from_utf8_lossy(&environ).contains(&*node.dir.to_string_lossy()) {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", pid.trim()])
                    .status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Node {
    /// Writes the node's configuration, env file and empty plugin list under `<dir>/<name>/`;
    /// with `tls`, its one listener speaks TLS only.
    fn write(
        dir: &Path,
        name: &str,
        source: std::net::Ipv4Addr,
        tls: Option<&crate::tls::Certs>,
    ) -> anyhow::Result<Self> {
        let home = dir.join(name);
        for sub in ["mnesia", "log"] {
            std::fs::create_dir_all(home.join(sub))?;
        }
        let port = free_port();
        let listeners = match tls {
            None => format!("listeners.tcp.local = 127.0.0.1:{port}\n"),
            Some(certs) => {
                let (ca, cert, key) = certs.install(&home)?;
                format!(
                    "listeners.tcp = none\nlisteners.ssl.local = 127.0.0.1:{port}\n\
                     ssl_options.cacertfile = {}\nssl_options.certfile = {}\n\
                     ssl_options.keyfile = {}\nssl_options.verify = verify_none\n\
                     ssl_options.fail_if_no_peer_cert = false\n",
                    ca.display(),
                    cert.display(),
                    key.display()
                )
            }
        };
        std::fs::write(
            home.join("rabbitmq.conf"),
            format!("{listeners}cluster_partition_handling = pause_minority\n"),
        )?;
        std::fs::write(home.join("enabled_plugins"), "[].\n")?;
        let path = |p: &str| home.join(p).to_string_lossy().into_owned();
        let node = Self {
            name: format!("{name}@localhost"),
            port,
            dist_port: free_port(),
            source,
            dir: home.clone(),
        };
        let source = source.octets().map(|o| o.to_string()).join(",");
        std::fs::write(
            home.join("rabbitmq-env.conf"),
            format!(
                "NODENAME={}\nDIST_PORT={}\nCONFIG_FILE={}\nMNESIA_BASE={}\nLOG_BASE={}\n\
                 ENABLED_PLUGINS_FILE={}\nPID_FILE={}\nERL_EPMD_ADDRESS=127.0.0.1\n\
                 SERVER_ADDITIONAL_ERL_ARGS=\"-kernel inet_dist_use_interface {{127,0,0,1}} \
                 -kernel inet_dist_connect_options [{{ip,{{{source}}}}}]\"\n",
                node.name,
                node.dist_port,
                path("rabbitmq.conf"),
                path("mnesia"),
                path("log"),
                path("enabled_plugins"),
                node.pid_file().to_string_lossy(),
            ),
        )?;
        Ok(node)
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("pid")
    }

    /// Starts the node's VM in the background (`rabbitmq-server -detached`).
    async fn launch(&self) -> anyhow::Result<()> {
        // A killed node leaves its pid file behind: waiting must not find the old one.
        let _ = std::fs::remove_file(self.pid_file());
        let output = bounded(
            Command::new("rabbitmq-server")
                .arg("-detached")
                .env("RABBITMQ_CONF_ENV_FILE", self.dir.join("rabbitmq-env.conf")),
        )
        .await?;
        check("rabbitmq-server -detached", &output)
    }
}

/// `rabbitmqctl -q -n <node> <args>`, failing with its output.
async fn ctl(node: &str, args: &[&str]) -> anyhow::Result<()> {
    ctl_output(node, args).await.map(drop)
}

/// `rabbitmqctl -q -n <node> <args>`'s output, failing with it unless the command succeeded.
async fn ctl_output(node: &str, args: &[&str]) -> anyhow::Result<std::process::Output> {
    let output = bounded(
        Command::new("rabbitmqctl")
            .args(["-q", "-n", node])
            .args(args),
    )
    .await?;
    check(&format!("rabbitmqctl {}", args.join(" ")), &output)?;
    Ok(output)
}

async fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = bounded(Command::new(program).args(args)).await?;
    check(program, &output)
}

/// How long any one command the harness runs may take: past the longest wait it is told of
/// ([`NODE_TIMEOUT`]), so a node that stopped answering fails the run instead of holding it.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(NODE_TIMEOUT.as_secs() + 60);

/// Runs `command` to its end, or kills it after [`COMMAND_TIMEOUT`] and says so.
async fn bounded(command: &mut Command) -> anyhow::Result<std::process::Output> {
    let what = format!("{:?}", command.as_std());
    let running = command.kill_on_drop(true).output();
    tokio::time::timeout(COMMAND_TIMEOUT, running)
        .await
        .with_context(|| format!("{what} took over {COMMAND_TIMEOUT:?}"))?
        .with_context(|| format!("{what} could not run"))
}

/// `Ok` if the command `what` that gave `output` succeeded; else an error with its status and
/// what it printed.
pub(crate) fn check(what: &str, output: &std::process::Output) -> anyhow::Result<()> {
    anyhow::ensure!(
        output.status.success(),
        "{what} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}
