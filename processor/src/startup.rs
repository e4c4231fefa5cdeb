//! `Application`: all I/O set-up in `build`; consumption, the ops and dead-letter endpoints and
//! the drain in `run_until` (the shared [`Service`] shape).

use std::sync::Arc;

use anyhow::Context;
use lapin::{Connection, options::ConfirmSelectOptions, types::FieldTable};
use shared::{
    auth::{Auth, Scope, protect},
    connect::{amqp::Broker, postgres::Tables, redis},
    consume::{self, Consumers},
    service::{App, Checks, Service, Tasks},
    topology::Topology,
};
use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    consumer::{Intake, ShardHandler},
    dead_letters::{
        api::{self as dead_letter_api, DeadLetterApi, ReplayChannel},
        replay::Jobs,
    },
    handler::Deps,
};

/// The processor: [`Application::build`] binds and connects it.
pub struct Application;

impl Application {
    /// Binds the ops listener and starts the connections; consumers start on every shard as
    /// soon as the broker is reachable. Dependencies that are down do not stop start-up.
    ///
    /// [`App::run_until`] then consumes until its shutdown signal and drains: stop taking
    /// deliveries, finish and ack the one in hand on each shard, close the channels and the
    /// connection, under the deadline.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let service = Service::bind("processor", &config.serving).await?;
        let backends = &config.backends;
        let database = service.database(
            backends,
            &[Tables::Keys, Tables::Processor],
            u32::from(backends.ingest_shards) + 2,
        );
        let redis = redis::connect(backends.redis.clone()).context("invalid REDIS_URL")?;
        let topology = Arc::new(Topology::new(
            backends.namespace.clone(),
            backends.ingest_shards,
        ));
        let plan = Arc::new(Plan {
            topology: Arc::clone(&topology),
            retry_delays: config.retry_delays.clone(),
            work: service.work.clone(),
        });
        let broker = service.broker(backends.amqp.clone(), move |connection| {
            let plan = Arc::clone(&plan);
            async move { plan.start(connection, &plan.work).await }
        });
        let live = Consumers::default();
        let shard = ShardHandler {
            topology: Arc::clone(&topology),
            deps: Arc::new(Deps {
                database: database.clone(),
                redis: redis.clone(),
                namespace: backends.namespace.clone(),
                stock_low_threshold: config.stock_low_threshold,
            }),
            retry_delays: Arc::new(config.retry_delays.clone()),
        };
        let intake = Intake {
            database: database.clone(),
        };
        consume_all(
            &service.work,
            &broker,
            &live,
            config.prefetch,
            shard,
            intake,
        );
        let checks = Checks::default()
            .broker(&broker)
            .redis(&redis)
            .postgres(&database)
            .consumers(&live);
        service.watch(&checks);
        let auth = Auth::start(database.clone(), &service.background);
        let dead_letters = DeadLetterApi {
            database,
            broker,
            jobs: Jobs {
                tasks: service.work.clone(),
            },
            topology,
        };
        let routes = shared::openapi::route(crate::openapi::document).merge(protect(
            dead_letter_api::routes(dead_letters),
            &auth,
            Scope::Ops,
        ));
        Ok(service.app(routes, checks))
    }
}

/// Supervised consumers on every shard queue and on the dead-letter queue.
fn consume_all(
    work: &Tasks,
    broker: &Broker<ReplayChannel>,
    live: &Consumers,
    prefetch: u16,
    shard: ShardHandler,
    intake: Intake,
) {
    let topology = Arc::clone(&shard.topology);
    let shard = Arc::new(shard);
    for queue in (0..topology.shards()).map(|s| topology.shard_queue(s)) {
        work.spawn(consume::supervise(
            broker.clone(),
            queue,
            prefetch,
            Arc::clone(&shard),
            live.clone(),
            work.stopping(),
        ));
    }
    work.spawn(consume::supervise(
        broker.clone(),
        topology.dead_letter_queue(),
        prefetch,
        Arc::new(intake),
        live.clone(),
        work.stopping(),
    ));
}

/// What to set up on every new broker connection (the consumers follow by themselves).
struct Plan {
    topology: Arc<Topology>,
    retry_delays: Vec<std::time::Duration>,
    work: Tasks,
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
        work.spawn(report_lag(lag, Arc::clone(&self.topology), work.stopping()));
        let replay = connection.create_channel().await?;
        replay
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(ReplayChannel(replay))
    }
}

/// How often the shards' backlog is read for `pipeline_consumer_lag_messages`.
const LAG_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Sets `pipeline_consumer_lag_messages{shard}` (messages waiting in each shard queue) every
/// [`LAG_EVERY`], until the channel closes or consumption stops.
async fn report_lag(
    channel: lapin::Channel,
    topology: Arc<Topology>,
    consuming: CancellationToken,
) {
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..lapin::options::QueueDeclareOptions::default()
    };
    loop {
        for shard in 0..topology.shards() {
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
            metrics::gauge!(shared::metric::CONSUMER_LAG_MESSAGES, "shard" => shard.to_string())
                .set(f64::from(queue.message_count()));
        }
        tokio::select! {
            () = consuming.cancelled() => return,
            () = tokio::time::sleep(LAG_EVERY) => {}
        }
    }
}
