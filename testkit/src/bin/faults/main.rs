//! The fault-injection harness: runs the real service binaries, drives a steady keyed load (with
//! duplicates, out-of-order times and poison), injects faults one after another, and checks the
//! result against a model of what was accepted.
//!
//! `cargo build --bins && target/debug/faults --seconds 60 --rate 100` runs one gateway and one
//! processor behind fault proxies on the shared backends; `--cluster` runs two gateways, three
//! processors and the notifier on a three-node RabbitMQ cluster of the harness's own (see
//! `fault-test.sh`; `--leader-kills N` repeats its first fault). Prints one line of figures and exits non-zero if anything accepted was lost
//! or doubled, the final state differs from the model, or the dead letters are not exactly the
//! poison sent.

mod cluster;
mod load;
mod partitions;
mod proxies;
mod soak;

use std::{path::Path, time::Duration};

/// The command line.
pub struct Args {
    /// The single-broker run's length (`--seconds`, 60).
    seconds: u64,
    /// Events per second (`--rate`, 100).
    rate: u64,
    /// The cluster run (`--cluster`), with this pause between faults (`--pause`, 5 s).
    cluster: Option<Duration>,
    /// How many times the cluster run SIGKILLs the node leading most shard queues
    /// (`--leader-kills`, 1).
    leader_kills: u64,
    /// The partitions run (`--partitions`), each fault lasting this long (`--fault-secs`, 30).
    partitions: Option<Duration>,
    /// With the partitions run: only the scenarios named here (`--only a,b`; all when absent).
    only: Option<Vec<String>>,
    /// The soak (`--soak MINUTES`), this long.
    soak: Option<Duration>,
}

impl Args {
    fn parse() -> anyhow::Result<Self> {
        let value = |flag: &str, default: u64| {
            std::env::args()
                .skip_while(|a| a != flag)
                .nth(1)
                .map_or(Ok(default), |s| s.parse())
        };
        let flag = |name: &str| std::env::args().any(|a| a == name);
        let cluster = flag("--cluster");
        let partitions = flag("--partitions");
        Ok(Self {
            seconds: value("--seconds", 60)?,
            rate: value("--rate", 100)?,
            leader_kills: value("--leader-kills", 1)?,
            cluster: cluster
                .then(|| value("--pause", 5).map(Duration::from_secs))
                .transpose()?,
            partitions: partitions
                .then(|| value("--fault-secs", 30).map(Duration::from_secs))
                .transpose()?,
            only: std::env::args()
                .skip_while(|a| a != "--only")
                .nth(1)
                .map(|names| names.split(',').map(str::to_owned).collect()),
            soak: flag("--soak")
                .then(|| value("--soak", 60).map(|m| Duration::from_secs(m * 60)))
                .transpose()?,
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse()?;
    if let Some(length) = args.soak {
        return soak::run(&args, length).await;
    }
    match (args.cluster, args.partitions) {
        (Some(pause), _) => cluster::run(&args, pause).await,
        (None, Some(fault)) => partitions::run(&args, fault).await,
        (None, None) => proxies::run(&args).await,
    }
}

/// The services' log filter (`FAULTS_RUST_LOG`, `warn`).
fn log_filter() -> String {
    std::env::var("FAULTS_RUST_LOG").unwrap_or_else(|_| "warn".into())
}

/// Settings every run gives the services: quick confirm timeouts and idempotency leases, time
/// to drain on SIGTERM.
fn service_env() -> impl Iterator<Item = (String, String)> {
    [
        ("PUBLISH_CONFIRM_TIMEOUT_MS", "2000"),
        ("IDEMPOTENCY_LEASE_SECS", "5"),
        ("SHUTDOWN_DEADLINE_SECS", "20"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
}

/// The services of a run whose backends are reached through `faulty`'s proxies, each logging in
/// to PostgreSQL as a user of its own, logging into `<label>-<namespace>/`.
async fn services_through(
    faulty: &testkit::fault_proxy::Faulty,
    backends: &shared::config::Backends,
    label: &str,
) -> anyhow::Result<testkit::services::Services> {
    use testkit::services::{Services, env_urls, through};
    let [amqp, redis, database] = env_urls();
    let urls = [
        through(&amqp, faulty.amqp.addr()),
        through(&redis, faulty.redis.addr()),
        through(&database, faulty.postgres.addr()),
    ];
    let mut services = Services::new(backends, urls, &log_filter(), label)?;
    services.env.extend(service_env());
    services.own_roles(backends).await?;
    Ok(services)
}

/// A client with a key of every scope in the namespace, and a 10 s timeout.
async fn client(backends: &shared::config::Backends) -> anyhow::Result<reqwest::Client> {
    let key = testkit::keys::api_key(&backends.namespace, shared::auth::Scopes::all()).await;
    Ok(reqwest::Client::builder()
        .default_headers(testkit::keys::header(&key))
        .timeout(Duration::from_secs(10))
        .build()?)
}

/// Succeeds (removing the services' logs unless `FAULTS_KEEP_LOGS` is set) when the run kept
/// the promise; fails pointing at the logs otherwise.
fn conclude(kept: bool, logs: &Path) -> anyhow::Result<()> {
    if !kept {
        anyhow::bail!(
            "the pipeline broke its promise; service logs are in {}",
            logs.display()
        )
    }
    if std::env::var_os("FAULTS_KEEP_LOGS").is_none() {
        std::fs::remove_dir_all(logs)?;
    }
    Ok(())
}
