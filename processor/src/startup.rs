//! `Application`: all I/O set-up in `build`; consumption, the ops endpoints and the drain in
//! `run_until`.

use std::{future::Future, net::SocketAddr, sync::Arc};

use ::redis::aio::ConnectionManager;
use anyhow::Context;
use axum::{Router, middleware};
use lapin::{Connection, options::ConfirmSelectOptions, types::FieldTable};
use shared::{
    connect::{
        amqp::{self, Broker},
        postgres::Database,
        redis,
    },
    consume::{self, Source},
    ops,
    shutdown::with_deadline,
    topology::Topology,
};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    config::Config,
    consumer::{Intake, ShardHandler},
    dead_letters::api::{self as dead_letter_api, DeadLetterApi, ReplayChannel},
    handler::Deps,
};

/// A built processor: ops listener bound, connections starting.
pub struct Application {
    listener: TcpListener,
    readiness: Readiness,
    dead_letters: DeadLetterApi,
    config: Config,
    consuming: CancellationToken,
    background: CancellationToken,
    consumers: TaskTracker,
    broker_task: tokio::task::JoinHandle<()>,
}

/// The processor's dependencies, for `/ready`.
#[derive(Clone)]
struct Readiness {
    broker: Broker<ReplayChannel>,
    redis: ConnectionManager,
    database: Database,
}

impl ops::Readiness for Readiness {
    async fn dependencies(&self) -> Vec<(&'static str, bool)> {
        let (redis, postgres) = tokio::join!(
            shared::connect::redis::is_up(&self.redis),
            self.database.is_up()
        );
        vec![
            ("rabbitmq", self.broker.is_up()),
            ("redis", redis),
            ("postgres", postgres),
        ]
    }
}

impl Application {
    /// Binds the ops listener and starts the connections; consumers start on every shard as
    /// soon as the broker is reachable. Dependencies that are down do not stop start-up.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(config.addr)
            .await
            .with_context(|| format!("cannot listen on PROCESSOR_ADDR {}", config.addr))?;
        let backends = &config.backends;
        let consuming = CancellationToken::new();
        let background = CancellationToken::new();
        let database = Database::start(
            backends.database.clone(),
            &backends.namespace,
            u32::from(backends.ingest_shards) + 2,
            background.clone(),
        );
        let redis = redis::connect(backends.redis.clone()).context("invalid REDIS_URL")?;
        let deps = Arc::new(Deps {
            database: database.clone(),
            redis: redis.clone(),
            namespace: backends.namespace.clone(),
            stock_low_threshold: config.stock_low_threshold,
        });
        let topology = Arc::new(Topology::new(
            backends.namespace.clone(),
            backends.ingest_shards,
        ));
        let consumers = TaskTracker::new();
        let plan = Arc::new(Plan {
            topology: Arc::clone(&topology),
            deps,
            retry_delays: Arc::new(config.retry_delays.clone()),
            prefetch: config.prefetch,
        });
        let setup = {
            let consuming = consuming.clone();
            let consumers = consumers.clone();
            move |connection: Arc<Connection>| {
                let (consuming, consumers) = (consuming.clone(), consumers.clone());
                let plan = Arc::clone(&plan);
                async move {
                    anyhow::ensure!(!consuming.is_cancelled(), "shutting down");
                    plan.start(connection, &consumers, consuming).await
                }
            }
        };
        let (broker, broker_task) = amqp::supervise(
            "processor",
            backends.amqp.clone(),
            setup,
            background.clone(),
        );
        let readiness = Readiness {
            broker: broker.clone(),
            redis,
            database: database.clone(),
        };
        ops::watch_dependencies(
            readiness.clone(),
            std::time::Duration::from_secs(5),
            background.clone(),
        );
        Ok(Self {
            listener,
            readiness,
            dead_letters: DeadLetterApi {
                database: database.clone(),
                broker: broker.clone(),
                topology,
            },
            config,
            consuming,
            background,
            consumers,
            broker_task,
        })
    }

    /// The address of the ops listener.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Consumes until `shutdown` completes, then drains: stop taking deliveries, finish and ack
    /// the one in hand on each shard, close the channels and the connection, under the deadline.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr(), "Processor ops endpoints listening.");
        let router = Router::new()
            .merge(ops::routes(self.readiness))
            .merge(dead_letter_api::routes(self.dead_letters))
            .layer(middleware::from_fn(ops::track_requests));
        let stop_serving = self.background.clone();
        let server = tokio::spawn(
            axum::serve(self.listener, router)
                .with_graceful_shutdown(async move { stop_serving.cancelled().await })
                .into_future(),
        );
        shutdown.await;
        tracing::info!("Processor draining: finishing the event in hand on each shard.");
        self.consuming.cancel();
        self.consumers.close();
        with_deadline(
            "processor drain",
            self.config.shutdown_deadline,
            self.consumers.wait(),
        )
        .await;
        self.background.cancel();
        let _ = with_deadline(
            "broker close",
            self.config.shutdown_deadline,
            self.broker_task,
        )
        .await;
        let _ = server.await;
        tracing::info!("Processor stopped.");
        Ok(())
    }
}

/// What to start on every new broker connection.
struct Plan {
    topology: Arc<Topology>,
    deps: Arc<Deps>,
    retry_delays: Arc<Vec<std::time::Duration>>,
    prefetch: u16,
}

impl Plan {
    /// Declares the topology and the retry ladder, starts a consumer on every shard and on the
    /// dead-letter queue, and opens the channel replays are published on.
    async fn start(
        &self,
        connection: Arc<Connection>,
        consumers: &TaskTracker,
        consuming: CancellationToken,
    ) -> anyhow::Result<ReplayChannel> {
        let setup = connection.create_channel().await?;
        self.topology.declare(&setup).await?;
        self.topology
            .declare_retry_ladder(&setup, &self.retry_delays)
            .await?;
        setup.close(200, "topology declared".into()).await?;
        for shard in 0..self.topology.shards() {
            let source = Source::open(
                &connection,
                &self.topology.shard_queue(shard),
                self.prefetch,
            )
            .await?;
            let handler = ShardHandler {
                topology: Arc::clone(&self.topology),
                deps: Arc::clone(&self.deps),
                retry_delays: Arc::clone(&self.retry_delays),
            };
            consumers.spawn(consume::run(source, handler, consuming.clone()));
        }
        let source = Source::open(
            &connection,
            &self.topology.dead_letter_queue(),
            self.prefetch,
        )
        .await?;
        let intake = Intake {
            database: self.deps.database.clone(),
        };
        let lag = connection.create_channel().await?;
        tokio::spawn(report_lag(
            lag,
            Arc::clone(&self.topology),
            consuming.clone(),
        ));
        consumers.spawn(consume::run(source, intake, consuming));
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
            metrics::gauge!("pipeline_consumer_lag_messages", "shard" => shard.to_string())
                .set(f64::from(queue.message_count()));
        }
        tokio::select! {
            () = consuming.cancelled() => return,
            () = tokio::time::sleep(LAG_EVERY) => {}
        }
    }
}
