//! The cluster run: a three-node RabbitMQ cluster of the harness's own; two gateways, three
//! processors and the notifier, each trying a different node first; and these faults one after
//! another, each while the load runs: SIGKILL of the node leading most shard queues, a minority
//! node stopped and restarted, a rolling restart of all three nodes, a node frozen with SIGSTOP
//! for 20 s, a processor SIGKILLed in the middle of a rebalance, and a node cut from the other
//! two by the network for longer than the Erlang distribution takes to call it down (the nodes
//! pause the minority side).

use std::time::{Duration, Instant};

use anyhow::Context;
use shared::topology::Topology;
use testkit::{
    cluster::Cluster,
    ports::free_addr,
    sandbox::Sandbox,
    services::{Services, env_urls, sigterm},
};
use tokio::process::Child;

use crate::{Args, load::Load};

/// Shards: enough for three processors to own four each.
const SHARDS: u16 = 12;
/// How long the frozen node stays frozen.
const FROZEN: Duration = Duration::from_secs(20);
/// How long a rebalance may take (the bound).
const REBALANCE_BOUND: Duration = Duration::from_secs(30);
/// How long a node stays cut from the others: past Erlang's `net_ticktime` (60 s, and up to a
/// quarter more), so both sides call the other down and the minority pauses.
const PARTITIONED: Duration = Duration::from_secs(90);

pub async fn run(args: &Args, pause: Duration) -> anyhow::Result<()> {
    let cluster = Cluster::start("faults", 3).await?;
    // Interrupted, the run is dropped, and with it the cluster's nodes.
    let outcome = tokio::select! {
        outcome = drive(&cluster, args, pause) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    cluster.stop().await;
    outcome
}

/// A running service and the address it listens on.
struct Replica {
    child: Child,
    url: String,
}

/// Starts `binary` on a free address, trying node `node` first; its output in `<log>.log`.
fn replica(
    services: &Services,
    binary: &str,
    log: &str,
    node: usize,
    cluster: &Cluster,
) -> Replica {
    let addr = free_addr();
    let addr_var = format!("{}_ADDR", binary.to_uppercase());
    let nodes = cluster.url_list(node);
    let env = [(addr_var.as_str(), addr.as_str()), ("AMQP_URL", &nodes)];
    Replica {
        child: services.spawn_as(binary, log, &env),
        url: format!("http://{addr}"),
    }
}

/// The services on the cluster: `gateways[i]` and `processors[i]` try node `i` first, the
/// notifier node 2.
struct Fleet {
    gateways: Vec<Replica>,
    processors: Vec<Replica>,
    notifier: Replica,
}

impl Fleet {
    /// Starts them, the first gateway alone until it is ready: it declares the shard queues, so
    /// their leaders start on node 0.
    async fn start(
        services: &Services,
        cluster: &Cluster,
        client: &reqwest::Client,
    ) -> anyhow::Result<Self> {
        let first = replica(services, "gateway", "gateway-0", 0, cluster);
        testkit::wait::until_ready(client, &first.url, Duration::from_secs(120)).await;
        let fleet = Self {
            gateways: vec![first, replica(services, "gateway", "gateway-1", 1, cluster)],
            processors: (0..3)
                .map(|n| replica(services, "processor", &format!("processor-{n}"), n, cluster))
                .collect(),
            notifier: replica(services, "notifier", "notifier", 2, cluster),
        };
        fleet.ready(client).await;
        Ok(fleet)
    }

    /// Every service's `/ready` answers 200.
    async fn ready(&self, client: &reqwest::Client) {
        let all = self.gateways.iter().chain(&self.processors);
        for replica in all.chain([&self.notifier]) {
            testkit::wait::until_ready(client, &replica.url, Duration::from_secs(120)).await;
        }
    }

    async fn stop(mut self) {
        let all = self.gateways.iter_mut().chain(&mut self.processors);
        for replica in all.chain([&mut self.notifier]) {
            sigterm(&mut replica.child).await;
        }
    }
}

async fn drive(cluster: &Cluster, args: &Args, pause: Duration) -> anyhow::Result<()> {
    let mut sandbox = Sandbox::with_shards(SHARDS);
    let mut backends = sandbox.backends();
    backends.amqp = cluster
        .url_list(0)
        .split(',')
        .map(|u| u.parse().map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<_>>()?;
    let [_, redis, database] = env_urls();
    let urls = [cluster.url_list(0), redis, database];
    let mut services = Services::new(&backends, urls, &crate::log_filter(), "faults-cluster")?;
    services.env.extend(crate::service_env());
    services.own_roles(&backends).await?;
    let client = crate::client(&backends).await?;
    let pool = testkit::postgres::pool(&backends).await;
    let mut fleet = Fleet::start(&services, cluster, &client).await?;
    balanced(&pool, &fleet.processors, Duration::from_secs(60)).await?;

    let gateway_urls: Vec<String> = fleet.gateways.iter().map(|g| g.url.clone()).collect();
    let mut load = Load::start(client.clone(), &gateway_urls, args.rate, &backends).await;
    let gateways = std::sync::Arc::clone(&load.gateways);
    let run = Run {
        cluster,
        pool: &pool,
        queues: (0..SHARDS)
            .map(|s| Topology::new(backends.namespace.clone(), SHARDS).shard_queue(s))
            .collect(),
        pause,
        leader_kills: args.leader_kills,
    };
    let figures = run.faults(&services, &mut fleet, &mut load).await;
    // Every service came back, whatever the faults did.
    fleet.ready(&client).await;
    let verdict = load.verdict().await?;
    let figures = figures?;
    let unanswered: u64 = gateways
        .iter()
        .map(|g| g.unanswered.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    println!(
        "faults (cluster): {verdict} | {} | unanswered={unanswered}",
        figures.line.join(" | ")
    );
    if !verdict.kept_promise() {
        let namespace = backends.namespace.as_str();
        let lost = verdict.missing();
        trace_missing(cluster, &services, namespace, &mut fleet, &pool, &lost).await;
    }
    fleet.stop().await;
    pool.close().await;
    let kept = verdict.kept_promise() && unanswered == 0 && figures.rebalanced;
    if !kept {
        sandbox.keep_schema();
        eprintln!(
            "faults: the run's tables are kept for a look, in schema {} of the database",
            backends.namespace.as_str()
        );
    }
    sandbox.remove().await?;
    crate::conclude(kept, &services.logs)
}

/// After a broken promise: where the lost events may be. Prints which queues still hold
/// messages (and whether any channel claims the unacknowledged ones), the log lines naming each
/// lost event, and whether fresh processors (on new channels) apply them: if they do, the
/// events were in the broker, held for a consumer that never got them.
async fn trace_missing(
    cluster: &Cluster,
    services: &Services,
    namespace: &str,
    fleet: &mut Fleet,
    pool: &sqlx::PgPool,
    missing: &[String],
) {
    for via in 0..cluster.nodes.len() {
        if let Ok(lines) = cluster.census(via, &format!("{namespace}.")).await {
            lines.iter().for_each(|l| eprintln!("faults: broker: {l}"));
            break;
        }
    }
    if let Err(e) = cluster.copy_logs(&services.logs) {
        eprintln!("faults: the nodes' logs could not be kept: {e}");
    }
    let logs: Vec<(String, String)> = std::fs::read_dir(&services.logs)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let text = std::fs::read_to_string(entry.path()).ok()?;
            Some((entry.file_name().to_string_lossy().into_owned(), text))
        })
        .collect();
    for id in missing {
        let quoted = format!("{id}\"");
        let spaced = format!("{id} ");
        let last = format!("={id}");
        let naming = logs.iter().flat_map(|(file, text)| {
            // The id quoted, followed by another field, or the line's last value.
            text.lines()
                .filter(|line| {
                    line.contains(&quoted) || line.contains(&spaced) || line.ends_with(&last)
                })
                .map(move |line| format!("{file}: {line}"))
        });
        for line in naming.take(10) {
            eprintln!("faults: {id}: {line}");
        }
    }
    for processor in &mut fleet.processors {
        sigterm(&mut processor.child).await;
    }
    fleet.processors = (0..3)
        .map(|n| {
            replica(
                services,
                "processor",
                &format!("processor-fresh-{n}"),
                n,
                cluster,
            )
        })
        .collect();
    let applied = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM processed_events WHERE event_id = ANY($1)",
        )
        .bind(missing)
        .fetch_one(pool)
        .await
        .ok()
    };
    let all = i64::try_from(missing.len()).unwrap_or(i64::MAX);
    testkit::wait::eventually_or(Duration::from_secs(60), || async {
        (applied().await? == all).then_some(())
    })
    .await;
    let applied = applied().await.unwrap_or(0);
    eprintln!(
        "faults: fresh processors applied {applied} of the {} lost events named within 60 s",
        missing.len()
    );
}

/// What the faults showed beyond the verdict: which node each hit, how long the rolling restart
/// and the rebalance took.
struct Figures {
    line: Vec<String>,
    rebalanced: bool,
}

/// The faults' surroundings.
struct Run<'a> {
    cluster: &'a Cluster,
    pool: &'a sqlx::PgPool,
    queues: Vec<String>,
    pause: Duration,
    leader_kills: u64,
}

impl Run<'_> {
    async fn faults(
        &self,
        services: &Services,
        fleet: &mut Fleet,
        load: &mut Load,
    ) -> anyhow::Result<Figures> {
        let cluster = self.cluster;
        let mut line = Vec::new();

        let mut node = 0;
        for _ in 0..self.leader_kills.max(1) {
            node = self.leading(true, None).await?;
            eprintln!("faults: SIGKILL of node {node}, which leads the most shard queues");
            refusals(load);
            cluster.signal(node, "KILL").await?;
            load.probe("leader_sigkill").await;
            cluster.start_node(node).await?;
            line.push(format!("leader_sigkill: node={node} {}", refusals(load)));
        }

        // Another node than the one just killed (which now leads nothing).
        let node = self.leading(false, Some(node)).await?;
        eprintln!("faults: node {node} stopped");
        refusals(load);
        cluster.stop_node(node).await?;
        load.probe("minority_stop").await;
        cluster.start_node(node).await?;
        line.push(format!("minority_stop: node={node} {}", refusals(load)));

        tokio::time::sleep(self.pause).await;
        refusals(load);
        let started = Instant::now();
        for node in 0..cluster.nodes.len() {
            cluster.await_quorum_plus_one(node).await?;
            eprintln!("faults: rolling restart, node {node}");
            cluster.stop_node(node).await?;
            cluster.start_node(node).await?;
        }
        let took = started.elapsed().as_secs_f64();
        load.probe("rolling_restart").await;
        line.push(format!(
            "rolling_restart: took={took:.2}s {}",
            refusals(load)
        ));

        let node = self.leading(true, None).await?;
        eprintln!("faults: node {node} frozen (SIGSTOP) for {FROZEN:?}");
        refusals(load);
        cluster.signal(node, "STOP").await?;
        let thaw = async {
            tokio::time::sleep(FROZEN).await;
            cluster.signal(node, "CONT").await
        };
        let (_, thawed) = tokio::join!(load.probe("node_sigstop_20s"), thaw);
        thawed?;
        line.push(format!("node_sigstop: node={node} {}", refusals(load)));

        tokio::time::sleep(self.pause).await;
        refusals(load);
        let rebalance = self
            .processor_sigkill_mid_rebalance(services, fleet, load)
            .await?;
        line.push(format!(
            "processor_sigkill_mid_rebalance: rebalanced_in={:.2}s {}",
            rebalance.as_secs_f64(),
            refusals(load)
        ));

        // Gateway 1's first node, cut from the other two.
        let node = 1;
        tokio::time::sleep(self.pause).await;
        eprintln!("faults: node {node} cut from the others for {PARTITIONED:?}");
        refusals(load);
        let isolation = cluster.isolate(node)?;
        let heal = async {
            tokio::time::sleep(PARTITIONED).await;
            drop(isolation);
        };
        tokio::join!(load.probe("node_partitioned"), heal);
        let started = Instant::now();
        for node in 0..cluster.nodes.len() {
            cluster.await_quorum_plus_one(node).await?;
        }
        line.push(format!(
            "node_partitioned: node={node} whole_again_in={:.2}s {}",
            started.elapsed().as_secs_f64(),
            refusals(load)
        ));
        Ok(Figures {
            line,
            rebalanced: rebalance <= REBALANCE_BOUND,
        })
    }

    /// After the pause, with every node's quorum members online again: the node leading the
    /// most shard queues (`most`) or, other than `not`, the fewest.
    async fn leading(&self, most: bool, not: Option<usize>) -> anyhow::Result<usize> {
        tokio::time::sleep(self.pause).await;
        let cluster = self.cluster;
        for node in 0..cluster.nodes.len() {
            cluster.await_quorum_plus_one(node).await?;
        }
        let leaders = cluster.leaders(0, &self.queues).await?;
        let count = |node: &usize| leaders.iter().filter(|l| *l == node).count();
        let nodes = (0..cluster.nodes.len()).filter(|n| Some(*n) != not);
        let node = if most {
            nodes.max_by_key(count)
        } else {
            nodes.min_by_key(count)
        };
        node.context("a cluster has nodes")
    }

    /// A fourth processor joins; as soon as it owns a shard (the others releasing theirs), the
    /// first processor is SIGKILLed. Returns how long until the three live ones own four
    /// shards each.
    async fn processor_sigkill_mid_rebalance(
        &self,
        services: &Services,
        fleet: &mut Fleet,
        load: &mut Load,
    ) -> anyhow::Result<Duration> {
        let newcomer = replica(services, "processor", "processor-3", 1, self.cluster);
        let pid = newcomer.child.id().context("the newcomer runs")?;
        fleet.processors.push(newcomer);
        testkit::wait::eventually_or(Duration::from_secs(60), || async {
            let owners = owners(self.pool).await.ok()?;
            owners.contains(&Some(pid)).then_some(())
        })
        .await
        .context("the new processor never claimed a shard")?;
        eprintln!("faults: processor 0 SIGKILLed while processor 3 joins");
        let mut victim = fleet.processors.remove(0);
        victim.child.start_kill()?;
        let started = Instant::now();
        victim.child.wait().await?;
        load.probe("processor_sigkill_mid_rebalance").await;
        balanced(self.pool, &fleet.processors, Duration::from_secs(60)).await?;
        Ok(started.elapsed())
    }
}

/// Each gateway's longest stretch of answering only 503 (or nothing) since the last call:
/// `longest_503=<gateway 0>s/<gateway 1>s`.
fn refusals(load: &Load) -> String {
    let longest: Vec<String> = load
        .gateways
        .iter()
        .map(|g| format!("{:.2}s", g.take_longest_refusal().as_secs_f64()))
        .collect();
    format!("longest_503={}", longest.join("/"))
}

/// Each shard's owner's process id (`None`: released).
async fn owners(pool: &sqlx::PgPool) -> Result<Vec<Option<u32>>, sqlx::Error> {
    let owners: Vec<Option<String>> =
        sqlx::query_scalar("SELECT owner FROM shard_leases WHERE expires_at > now()")
            .fetch_all(pool)
            .await?;
    Ok(owners
        .into_iter()
        .map(|owner| {
            // processor@{host}/{pid}#{suffix}
            let owner = owner?;
            let (_, rest) = owner.split_once('/')?;
            rest.split('#').next()?.parse().ok()
        })
        .collect())
}

/// Waits until every shard is owned by one of `processors`, each owning ⌊N/R⌋ or ⌈N/R⌉.
async fn balanced(
    pool: &sqlx::PgPool,
    processors: &[Replica],
    timeout: Duration,
) -> anyhow::Result<()> {
    let pids: Vec<u32> = processors.iter().filter_map(|p| p.child.id()).collect();
    let share = usize::from(SHARDS) / pids.len();
    testkit::wait::eventually_or(timeout, || async {
        let owners = owners(pool).await.ok()?;
        let counts: Vec<usize> = pids
            .iter()
            .map(|pid| owners.iter().filter(|o| **o == Some(*pid)).count())
            .collect();
        let spread = counts.iter().all(|c| *c == share || *c == share + 1);
        (spread && counts.iter().sum::<usize>() == usize::from(SHARDS)).then_some(())
    })
    .await
    .with_context(|| format!("the shards were not spread over {} processors", pids.len()))
}
