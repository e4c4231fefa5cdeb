//! The whole pipeline under test: the release binaries of the gateway, the processor and the
//! notifier in a fresh namespace of a given shard count, a key holding every scope, a notifier
//! subscriber as in production, and the search for the maximum rate it sustains.

use std::time::Duration;

use shared::{config::Backends, topology::Topology};
use testkit::{
    broker::Broker,
    sandbox::Sandbox,
    services::{Services, env_urls, sigterm},
    webhooks::Receiver,
};
use tokio::process::Child;

use crate::load::{Mix, Step, offer};

/// A running pipeline in its own namespace.
pub struct Pipeline {
    pub backends: Backends,
    /// A client sending a key with every scope.
    pub client: reqwest::Client,
    pub key: String,
    /// The services' base URLs: gateway, processor, notifier.
    pub gateway: String,
    pub processor: String,
    pub notifier: String,
    /// The process ids: gateway, processor, notifier.
    pub pids: [u32; 3],
    children: [Child; 3],
    services: Services,
    broker: Broker,
    topology: Topology,
    _low_stock: Receiver,
    /// The namespace, removed after the services stop.
    sandbox: Sandbox,
}

impl Pipeline {
    /// Starts the three services in a new namespace with `shards` shards, once they are ready,
    /// with a subscriber to `stock.low` (which few events cause, so nearly every downstream
    /// event is one nobody wants).
    pub async fn start(shards: u16) -> anyhow::Result<Self> {
        let sandbox = Sandbox::with_shards(shards);
        let backends = sandbox.backends();
        let mut services = Services::new(&backends, env_urls(), "warn", "bench")?;
        // The webhook receivers are on this machine.
        services
            .env
            .push(("WEBHOOK_ALLOW_PRIVATE_NETWORKS".into(), "true".into()));
        // The load generator's one key stands for the many clients a gateway serves: the cap on
        // one key's requests in progress (64 by default, fairness between keys) would bound the
        // run before the pipeline does (run L), so it is the gateway's whole in-flight limit.
        services
            .env
            .push(("HTTP_MAX_CONCURRENT_REQUESTS_PER_KEY".into(), "512".into()));
        let children = ["gateway", "processor", "notifier"].map(|name| services.spawn(name));
        let pids = [0, 1, 2].map(|i| children[i].id().expect("running"));
        let key = testkit::keys::api_key(&backends.namespace, shared::auth::Scopes::all()).await;
        let client = reqwest::Client::builder()
            .default_headers(testkit::keys::header(&key))
            .pool_max_idle_per_host(4096)
            .timeout(Duration::from_secs(30))
            .build()?;
        let [gateway, processor, notifier] = [
            &services.gateway_addr,
            &services.processor_addr,
            &services.notifier_addr,
        ]
        .map(|addr| format!("http://{addr}"));
        for ready in [&gateway, &processor, &notifier] {
            testkit::wait::eventually(
                "the services to be ready",
                Duration::from_secs(60),
                || async {
                    let r = client.get(format!("{ready}/ready")).send().await.ok()?;
                    r.status().is_success().then_some(())
                },
            )
            .await;
        }
        let low_stock = Receiver::start(&[]).await;
        low_stock
            .subscribe(&client, &notifier, &["stock.low"])
            .await;
        let broker = Broker::connect(&backends).await;
        let topology = Topology::new(backends.namespace.clone(), shards);
        eprintln!(
            "{shards} shards: namespace {}, logs in {}",
            backends.namespace.as_str(),
            services.logs.display()
        );
        Ok(Self {
            backends,
            client,
            key,
            gateway,
            processor,
            notifier,
            pids,
            children,
            services,
            broker,
            topology,
            _low_stock: low_stock,
            sandbox,
        })
    }

    /// Deliveries waiting in the shard queues.
    pub async fn backlog(&self) -> i64 {
        let mut total = 0i64;
        for shard in 0..self.topology.shards() {
            total += i64::from(self.broker.depth(&self.topology.shard_queue(shard)).await);
        }
        total
    }

    /// Waits (up to two minutes) for the shard queues to empty.
    pub async fn drained(&self) {
        testkit::wait::eventually_or(Duration::from_secs(120), || async {
            (self.backlog().await == 0).then_some(())
        })
        .await;
    }

    /// Offers `rate` events per second for `duration` to the gateway.
    pub async fn offer(&self, mix: &mut Mix, rate: u64, duration: Duration) -> Step {
        offer(&self.client, &self.gateway, mix, rate, duration).await
    }

    /// The events in the processor's inbox, once it holds at least `expected` (or after two
    /// minutes); -1 when it cannot be read.
    pub async fn applied(&self, expected: u64) -> i64 {
        let pool = testkit::postgres::pool(&self.backends).await;
        let applied = testkit::wait::eventually_or(Duration::from_secs(120), || async {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM processed_events")
                .fetch_one(&pool)
                .await
                .ok()?;
            (u64::try_from(n).ok()? >= expected).then_some(n)
        })
        .await
        .unwrap_or(-1);
        pool.close().await;
        applied
    }

    /// Stops the services and removes the namespace; the logs stay when `keep_logs`. A clean-up
    /// that fails is a warning: the figures measured stand.
    pub async fn stop(mut self, keep_logs: bool) -> anyhow::Result<()> {
        for child in &mut self.children {
            sigterm(child).await;
        }
        if let Err(e) = self.sandbox.remove().await {
            eprintln!(
                "warning: the namespace {} was not fully removed: {e}",
                self.backends.namespace.as_str()
            );
        }
        if keep_logs {
            eprintln!("logs in {}", self.services.logs.display());
        } else {
            std::fs::remove_dir_all(&self.services.logs)?;
        }
        Ok(())
    }
}

/// What a search for the maximum sustained rate found.
pub struct Search {
    /// The highest rate sustained (0 when none was).
    pub max: u64,
    /// New events accepted over every step.
    pub accepted_new: u64,
    /// Requests that did not get a `202`.
    pub errors: u64,
}

/// A step is sustained when every request got a 202, the offered rate was met, and the shard
/// backlog did not grow.
fn sustained(step: &Step, backlog_growth: i64) -> bool {
    step.clean()
        && step.elapsed.as_secs_f64() <= step.offered as f64 / step.rate as f64 * 1.1 + 0.5
        && backlog_growth <= (step.offered as i64 / 50).max(200)
}

/// The search for the maximum sustained rate from `rate`: up by half until a step fails, then
/// bisect; at most `steps` steps of `step` each.
pub async fn search(
    pipeline: &Pipeline,
    mix: &mut Mix,
    mut rate: u64,
    steps: u32,
    step: Duration,
) -> Search {
    let mut found = Search {
        max: 0,
        accepted_new: 0,
        errors: 0,
    };
    let (mut best, mut failed) = (None::<u64>, None::<u64>);
    for _ in 0..steps {
        let before = pipeline.backlog().await;
        let measured = pipeline.offer(mix, rate, step).await;
        found.accepted_new += measured.accepted_new;
        found.errors += measured.errors;
        // Give the processor one second to drain what is in hand before reading the backlog.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let growth = pipeline.backlog().await - before;
        let ok = sustained(&measured, growth);
        eprintln!(
            "{} shards, offered {rate}/s: {} new + {} replays, {} errors {:?}, p99 {:.1} ms, backlog {growth:+} -> {}",
            pipeline.topology.shards(),
            measured.accepted_new,
            measured.replays,
            measured.errors,
            measured.failures,
            measured.latency.value_at_quantile(0.99) as f64 / 1000.0,
            if ok { "sustained" } else { "not sustained" }
        );
        // Let any backlog drain before the next step.
        pipeline.drained().await;
        if ok {
            best = Some(rate);
        } else {
            failed = Some(rate);
        }
        rate = match (best, failed) {
            (Some(b), Some(f)) if f - b <= b / 10 => break,
            (Some(b), Some(f)) => (b + f) / 2,
            (Some(b), None) => b * 3 / 2,
            (None, _) => rate / 2,
        };
        if rate < 50 {
            break;
        }
    }
    found.max = best.unwrap_or(0);
    found
}

/// Every accepted new event applied, exactly once. A request the client gave up on may still
/// have been accepted, so outside the smoke (`exact`) the inbox may hold more than the client
/// counted; it may never hold less, and the smoke allows no failed request.
pub fn complete(exact: bool, accepted: u64, applied: i64, errors: u64) -> bool {
    let accepted = i64::try_from(accepted).unwrap_or(i64::MAX);
    if exact {
        applied == accepted && errors == 0
    } else {
        applied >= accepted
    }
}

/// One shard count's maximum, from a pipeline of its own.
pub struct Swept {
    pub shards: u16,
    pub max: u64,
    pub accepted_new: u64,
    pub applied: i64,
    pub errors: u64,
}

/// Starts a pipeline with `shards` shards in a namespace of its own, searches for its maximum
/// from `rate` (at most `steps` steps of `step`), checks every accepted event was applied, and
/// stops it.
pub async fn sweep(
    shards: u16,
    rate: u64,
    (steps, step): (u32, Duration),
    exact: bool,
) -> anyhow::Result<Swept> {
    let pipeline = Pipeline::start(shards).await?;
    let mut mix = Mix::new(pipeline.backends.namespace.as_str(), 7);
    let warm = pipeline.offer(&mut mix, 100, Duration::from_secs(2)).await;
    let found = search(&pipeline, &mut mix, rate, steps, step).await;
    let accepted_new = warm.accepted_new + found.accepted_new;
    let errors = warm.errors + found.errors;
    let applied = pipeline.applied(accepted_new).await;
    pipeline
        .stop(!complete(exact, accepted_new, applied, errors))
        .await?;
    Ok(Swept {
        shards,
        max: found.max,
        accepted_new,
        applied,
        errors,
    })
}
