//! `Application`: all I/O set-up in `build`; consumption (the shards this replica's
//! [`Coordinator`] claims, and the dead-letter queue), the ops and dead-letter endpoints and the
//! drain in `run_until` (the shared [`Service`] shape).

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use lapin::{Connection, options::ConfirmSelectOptions, types::FieldTable};
use shared::{
    auth::{Auth, Scope, protect},
    connect::{
        amqp::Broker,
        postgres::{Database, Tables},
        redis,
    },
    consume::{self, Consumers},
    processor::products::StateCache,
    service::{App, Checks, Detail, Service, Tasks},
    topology::Topology,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    consumer::{Intake, ShardHandler},
    dead_letters::{
        api::{self as dead_letter_api, DeadLetterApi, ReplayChannel},
        replay::Jobs,
    },
    handler::Deps,
    shards::{Coordinator, Fence, Owned},
};

/// The processor: [`Application::build`] binds and connects it.
pub struct Application;

impl Application {
    /// Binds the ops listener and starts the connections; it consumes the dead-letter queue as
    /// soon as the broker is reachable, and its share of the shards as soon as PostgreSQL is
    /// too (the leases are there). Dependencies that are down do not stop start-up.
    ///
    /// [`App::run_until`] then consumes until its shutdown signal and drains: stop taking
    /// deliveries, let each shard's applied batches publish their downstream events and be
    /// acked (a batch still being applied returns to its queue), close the channels and the
    /// connection, under the deadline.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let service = Service::bind("processor", &config.serving).await?;
        let backends = &config.backends;
        let database = service.database(
            backends,
            &[Tables::Keys, Tables::Processor],
            u32::from(backends.ingest_shards) + 4,
        );
        let redis = redis::connect(backends.redis.clone(), backends.tls_ca.as_ref())
            .context("invalid REDIS_URL")?;
        let topology = Arc::new(backends.topology());
        let owned = Owned::default();
        let plan = Arc::new(Plan {
            topology: Arc::clone(&topology),
            retry_delays: config.retry_delays.clone(),
            work: service.work.clone(),
            owned: owned.clone(),
        });
        let broker = service.broker(backends, move |connection| {
            let plan = Arc::clone(&plan);
            async move { plan.start(connection, &plan.work).await }
        });
        let live = Consumers::default();
        let shards = Shards {
            topology: Arc::clone(&topology),
            deps: Arc::new(Deps {
                database: database.clone(),
                cache: StateCache::new(
                    redis.clone(),
                    backends.namespace.clone(),
                    backends.cache_ttl_seconds,
                ),
                stock_low_threshold: config.stock_low_threshold,
            }),
            retry_delays: Arc::new(config.retry_delays.clone()),
            broker: broker.clone(),
            live: live.clone(),
            prefetch: config.prefetch,
        };
        let shards = shards.share(owned, &service.work, &database, config.shard_lease);
        service.after_migrations(
            &database,
            consume::supervise(
                broker.clone(),
                topology.dead_letter_queue(),
                config.prefetch,
                Arc::new(Intake {
                    database: database.clone(),
                }),
                live.clone(),
                service.work.stopping(),
            ),
        );
        let windows = config.retention;
        service.keep_pruning(&database, config.prune_every, move |pool| {
            crate::store::retention::prune(pool, windows)
        });
        let checks = Checks::default()
            .broker(&broker)
            .redis(&redis)
            .postgres(&database)
            .consumers(&live)
            .detail("shards", shards);
        service.watch(&checks);
        let auth = service.auth(&database);
        let dead_letters = DeadLetterApi {
            database,
            broker,
            jobs: Jobs {
                tasks: service.work.clone(),
            },
            topology,
        };
        Ok(service.app(routes(dead_letters, &auth), checks))
    }
}

/// The processor's own routes: its OpenAPI document, and the dead-letter API for `ops` keys.
fn routes(dead_letters: DeadLetterApi, auth: &Auth) -> axum::Router {
    shared::openapi::route(crate::openapi::document).merge(protect(
        dead_letter_api::routes(dead_letters),
        auth,
        Scope::Ops,
    ))
}

/// This replica's name among the processors: its broker connection's name and a random
/// suffix, new at every start.
fn member() -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!(
        "{}#{}",
        shared::connect::amqp::connection_name("processor"),
        &id[id.len() - 8..]
    )
}

/// What a shard's consumer is made of, but its lease.
struct Shards {
    topology: Arc<Topology>,
    deps: Arc<Deps>,
    retry_delays: Arc<Vec<Duration>>,
    broker: Broker<ReplayChannel>,
    live: Consumers,
    prefetch: u16,
}

impl Shards {
    /// Starts this replica's [`Coordinator`] (leases of `lease` time), which consumes its share
    /// of the shards through [`Shards::start`]; what `/ready` says of them.
    fn share(self, owned: Owned, work: &Tasks, database: &Database, lease: Duration) -> Detail {
        let member: Arc<str> = member().into();
        let topology = Arc::clone(&self.topology);
        let broker = self.broker.clone();
        let coordinator = Coordinator {
            broker_unheard: Arc::new(move || broker.unheard_since()),
            member: Arc::clone(&member),
            database: database.clone(),
            shards: topology.shards(),
            lease,
            start: Arc::new(move |fence, stop| self.start(fence, stop)),
            owned: owned.clone(),
        };
        work.spawn(coordinator.run(work.stopping()));
        Arc::new(move || {
            let current = owned.current(lease);
            let shards = serde_json::json!({
                "member": &*member, "owned": owned.shards(), "current": current,
            });
            (current, shards)
        })
    }

    /// Consumes the fenced shard, supervised, until `stop`; then no longer reports its queue.
    fn start(&self, fence: Fence, stop: CancellationToken) -> JoinHandle<()> {
        let queue = self.topology.shard_queue(fence.lease.shard);
        let handler = ShardHandler {
            topology: Arc::clone(&self.topology),
            deps: Arc::clone(&self.deps),
            retry_delays: Arc::clone(&self.retry_delays),
            fence,
            stop: stop.clone(),
        };
        let consuming = consume::supervise(
            self.broker.clone(),
            queue.clone(),
            self.prefetch,
            Arc::new(handler),
            self.live.clone(),
            stop,
        );
        let live = self.live.clone();
        tokio::spawn(async move {
            consuming.await;
            live.forget(&queue);
        })
    }
}

/// What to set up on every new broker connection (the consumers follow by themselves).
struct Plan {
    topology: Arc<Topology>,
    retry_delays: Vec<Duration>,
    work: Tasks,
    /// The shards this replica owns: the ones whose lag it reports.
    owned: Owned,
}

impl Plan {
    /// Declares the topology and the retry ladder (exported as
    /// `pipeline_retry_delay_seconds{queue}`, which the dashboard reads for the retry queues),
    /// starts the lag report, and opens the channel replays are published on.
    async fn start(
        &self,
        connection: Arc<Connection>,
        work: &Tasks,
    ) -> anyhow::Result<ReplayChannel> {
        self.topology.declare(&connection).await?;
        let setup = connection.create_channel().await?;
        self.topology
            .declare_retry_ladder(&setup, &self.retry_delays)
            .await?;
        for delay in &self.retry_delays {
            metrics::gauge!(shared::metric::RETRY_DELAY_SECONDS, "queue" => self.topology.retry_queue(*delay))
                .set(delay.as_secs_f64());
        }
        setup.close(200, "topology declared".into()).await?;
        let lag = connection.create_channel().await?;
        work.spawn(report_lag(
            lag,
            Arc::clone(&self.topology),
            self.owned.clone(),
            work.stopping(),
        ));
        let replay = connection.create_channel().await?;
        replay
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(ReplayChannel(replay))
    }
}

/// How often the shards' backlog is read for `pipeline_consumer_lag_messages`.
const LAG_EVERY: Duration = Duration::from_secs(5);

/// Sets `pipeline_consumer_lag_messages{shard}` (messages waiting in each shard queue) every
/// [`LAG_EVERY`], until the channel closes or consumption stops: for the shards this replica
/// owns, and 0 for the others, so that summed across replicas each shard counts once.
async fn report_lag(
    channel: lapin::Channel,
    topology: Arc<Topology>,
    owned: Owned,
    consuming: CancellationToken,
) {
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..lapin::options::QueueDeclareOptions::default()
    };
    loop {
        let mine = owned.shards();
        for shard in 0..topology.shards() {
            let lag = metrics::gauge!(shared::metric::CONSUMER_LAG_MESSAGES, "shard" => shard.to_string());
            if !mine.contains(&shard) {
                lag.set(0.0);
                continue;
            }
            let declared = channel
                .queue_declare(
                    topology.shard_queue(shard).into(),
                    passive,
                    FieldTable::default(),
                )
                .await;
            let Ok(queue) = declared else {
                return;
            };
            lag.set(f64::from(queue.message_count()));
        }
        tokio::select! {
            () = consuming.cancelled() => return,
            () = tokio::time::sleep(LAG_EVERY) => {}
        }
    }
}
