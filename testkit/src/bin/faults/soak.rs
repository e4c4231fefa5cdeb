//! The soak: the gateway, the processor and the notifier behind fault proxies run for a given
//! time under the load, with a fault on a schedule (a backend's connections dropped, a service
//! killed or stopped and started again), while the run samples, every ten seconds, what could
//! grow: each service's resident memory, open files and sockets, the namespace's queue depths,
//! its PostgreSQL tables and indexes, and its Redis keys and the server's memory. The samples go
//! to `soak.csv` beside the services' logs (plot them with `bench/soak/plot.py`); the run
//! prints how each measure moved between the first and the last quarter, and fails as the
//! others do on anything lost or doubled.

use std::{path::Path, time::Duration};

use shared::topology::Topology;
use testkit::{
    fault_proxy::{Fault, Faulty},
    sandbox::Sandbox,
    services::{Services, sigterm},
};
use tokio::{process::Child, time::Instant};

use crate::{Args, load::Load};

/// How often the run samples.
const SAMPLE: Duration = Duration::from_secs(10);
/// The services it runs, in the order of the columns.
const SERVICES: [&str; 3] = ["gateway", "processor", "notifier"];
/// A fault of the schedule.
#[derive(Clone, Copy)]
enum Soaked {
    /// A backend's connections dropped for 2 s.
    Drop(&'static str, Backend),
    /// The service at this index of [`SERVICES`] SIGKILLed (or SIGTERMed) and started again.
    Restart(&'static str, usize, bool),
}

#[derive(Clone, Copy)]
enum Backend {
    RabbitMq,
    Redis,
    Postgres,
}

/// The faults, one after another, each `period` apart.
const FAULTS: [Soaked; 6] = [
    Soaked::Drop("rabbitmq_drop", Backend::RabbitMq),
    Soaked::Drop("redis_drop", Backend::Redis),
    Soaked::Drop("postgres_drop", Backend::Postgres),
    Soaked::Restart("processor_sigkill", 1, true),
    Soaked::Restart("gateway_sigterm", 0, false),
    Soaked::Restart("notifier_sigterm", 2, false),
];

pub async fn run(args: &Args, length: Duration) -> anyhow::Result<()> {
    let sandbox = Sandbox::new();
    let backends = sandbox.backends();
    let faulty = Faulty::start(&backends).await;
    let services = crate::services_through(&faulty, &backends, "soak").await?;
    let mut children: Vec<Child> = SERVICES.iter().map(|name| services.spawn(name)).collect();
    let client = crate::client(&backends).await?;
    let gateway_url = format!("http://{}", services.gateway_addr);
    for addr in [
        &services.gateway_addr,
        &services.processor_addr,
        &services.notifier_addr,
    ] {
        testkit::wait::until_ready(&client, &format!("http://{addr}"), Duration::from_secs(60))
            .await;
    }
    let mut load = Load::start(client, &[gateway_url], args.rate, &backends).await;
    let mut samples = Samples::start(&backends, &services.logs).await?;

    // A fault every tenth of the run (at least every 20 s), the first after one period.
    let period = (length / 10).max(Duration::from_secs(20));
    let started = Instant::now();
    let mut next_fault = started + period;
    let mut fault = 0;
    while started.elapsed() < length {
        samples.take(&children).await?;
        let now = Instant::now();
        if now >= next_fault {
            let name = inject(
                FAULTS[fault % FAULTS.len()],
                &faulty,
                &services,
                &mut children,
            )
            .await;
            load.probe(name).await;
            fault += 1;
            next_fault = now + period;
        }
        tokio::time::sleep(SAMPLE.saturating_sub(now.elapsed())).await;
    }
    samples.take(&children).await?;

    let verdict = load.verdict().await?;
    println!("soak: {} s, {fault} faults", length.as_secs());
    println!("soak:\n{}", samples.growth());
    println!("soak: {verdict}");
    println!("soak: samples in {}", samples.path.display());
    for child in &mut children {
        sigterm(child).await;
    }
    sandbox.remove().await?;
    // The samples are the run's result: kept with the logs whatever the verdict.
    let kept = verdict.kept_promise();
    if !kept {
        crate::conclude(kept, &services.logs)?;
    }
    Ok(())
}

/// Injects `fault` and lifts it; its name.
async fn inject(
    fault: Soaked,
    faulty: &Faulty,
    services: &Services,
    children: &mut [Child],
) -> &'static str {
    match fault {
        Soaked::Drop(name, backend) => {
            let proxy = match backend {
                Backend::RabbitMq => &faulty.amqp,
                Backend::Redis => &faulty.redis,
                Backend::Postgres => &faulty.postgres,
            };
            proxy.set(Fault::Drop);
            tokio::time::sleep(Duration::from_secs(2)).await;
            proxy.set(Fault::Pass);
            name
        }
        Soaked::Restart(name, service, kill) => {
            let child = &mut children[service];
            if kill {
                let _ = child.start_kill();
                let _ = child.wait().await;
            } else {
                sigterm(child).await;
            }
            *child = services.spawn(SERVICES[service]);
            name
        }
    }
}

/// The samples so far, written to a CSV file as they are taken.
struct Samples {
    path: std::path::PathBuf,
    file: std::fs::File,
    started: Instant,
    topology: Topology,
    broker: testkit::broker::Broker,
    pool: sqlx::PgPool,
    redis: redis::aio::MultiplexedConnection,
    namespace: String,
    /// Every row taken, for the summary.
    rows: Vec<Vec<f64>>,
}

impl Samples {
    async fn start(backends: &shared::config::Backends, logs: &Path) -> anyhow::Result<Self> {
        use std::io::Write;
        let path = logs.join("soak.csv");
        let mut file = std::fs::File::create(&path)?;
        writeln!(file, "{}", Self::columns().join(","))?;
        Ok(Self {
            path,
            file,
            started: Instant::now(),
            topology: Topology::new(backends.namespace.clone(), backends.ingest_shards),
            broker: testkit::broker::Broker::connect(backends).await,
            pool: testkit::postgres::pool(backends).await,
            redis: testkit::redis::connect(backends).await,
            namespace: backends.namespace.as_str().to_owned(),
            rows: Vec::new(),
        })
    }

    fn columns() -> Vec<String> {
        let mut columns = vec!["seconds".to_owned()];
        for service in SERVICES {
            for measure in ["rss_kib", "open_files", "sockets"] {
                columns.push(format!("{service}_{measure}"));
            }
        }
        columns.extend(
            [
                "queued_messages",
                "postgres_bytes",
                "redis_keys",
                "redis_used_bytes",
            ]
            .map(str::to_owned),
        );
        columns
    }

    /// Takes a sample of every measure and appends it to the file.
    async fn take(&mut self, children: &[Child]) -> anyhow::Result<()> {
        use std::io::Write;
        let mut row = vec![self.started.elapsed().as_secs_f64().round()];
        for child in children {
            let (rss, files, sockets) = child.id().map_or((0, 0, 0), process);
            row.extend([rss, files, sockets].map(|n| n as f64));
        }
        let mut queued = 0u64;
        let queues = (0..self.topology.shards())
            .map(|shard| self.topology.shard_queue(shard))
            .chain([
                self.topology.notifier_queue(),
                self.topology.dead_letter_queue(),
            ]);
        for queue in queues {
            queued += u64::from(self.broker.depth(&queue).await);
        }
        let postgres: i64 = sqlx::query_scalar(
            "SELECT COALESCE(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relkind = 'r'",
        )
        .bind(&self.namespace)
        .fetch_one(&self.pool)
        .await?;
        let keys = testkit::redis::namespace_keys_count(&mut self.redis, &self.namespace).await;
        let info: String = redis::cmd("INFO")
            .arg("memory")
            .query_async(&mut self.redis)
            .await?;
        let used = info
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        row.extend([queued as f64, postgres as f64, keys as f64, used]);
        let line: Vec<String> = row.iter().map(|v| format!("{v}")).collect();
        writeln!(self.file, "{}", line.join(","))?;
        self.rows.push(row);
        Ok(())
    }

    /// Each measure's mean over the first and the last quarter of the samples, and the change.
    fn growth(&self) -> String {
        let quarter = (self.rows.len() / 4).max(1);
        let mean = |rows: &[Vec<f64>], column: usize| {
            rows.iter().map(|r| r[column]).sum::<f64>() / rows.len().max(1) as f64
        };
        let first = &self.rows[..quarter.min(self.rows.len())];
        let last = &self.rows[self.rows.len().saturating_sub(quarter)..];
        let mut table = format!(
            "{:<28} {:>16} {:>16} {:>8}\n",
            "measure", "first quarter", "last quarter", "change"
        );
        for (column, name) in Self::columns().iter().enumerate().skip(1) {
            let (before, after) = (mean(first, column), mean(last, column));
            let change = if before > 0.0 {
                format!("{:+.0}%", (after - before) / before * 100.0)
            } else {
                "-".to_owned()
            };
            table.push_str(&format!(
                "{name:<28} {before:>16.0} {after:>16.0} {change:>8}\n"
            ));
        }
        table
    }
}

/// A process's resident memory (KiB), open files and, of those, sockets, from `/proc`.
fn process(pid: u32) -> (u64, u64, u64) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0);
    let (mut files, mut sockets) = (0, 0);
    if let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for entry in entries.flatten() {
            files += 1;
            let target = std::fs::read_link(entry.path()).unwrap_or_default();
            if target.to_string_lossy().starts_with("socket:") {
                sockets += 1;
            }
        }
    }
    (rss, files, sockets)
}
