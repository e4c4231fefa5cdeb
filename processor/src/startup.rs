//! `Application`: all I/O set-up in `build`; consumption, the ops endpoints and the drain in
//! `run_until`.

use std::{future::Future, net::SocketAddr, sync::Arc};

use ::redis::aio::ConnectionManager;
use anyhow::Context;
use axum::{Router, middleware};
use lapin::{
    Connection,
    options::{BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions},
    types::FieldTable,
};
use shared::{
    connect::{
        amqp::{self, Broker},
        postgres::Database,
        redis,
    },
    ops,
    shutdown::with_deadline,
    topology::Topology,
};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    config::Config,
    consumer::{self, Shard},
    handler::Deps,
};

/// A built processor: ops listener bound, connections starting.
pub struct Application {
    listener: TcpListener,
    readiness: Readiness,
    config: Config,
    consuming: CancellationToken,
    background: CancellationToken,
    consumers: TaskTracker,
    broker_task: tokio::task::JoinHandle<()>,
}

/// The processor's dependencies, for `/ready`.
#[derive(Clone)]
struct Readiness {
    broker: Broker<()>,
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
        });
        let topology = Arc::new(Topology::new(
            backends.namespace.clone(),
            backends.ingest_shards,
        ));
        let consumers = TaskTracker::new();
        let setup = {
            let consuming = consuming.clone();
            let consumers = consumers.clone();
            let prefetch = config.prefetch;
            move |connection: Arc<Connection>| {
                let (consuming, consumers) = (consuming.clone(), consumers.clone());
                let (topology, deps) = (Arc::clone(&topology), Arc::clone(&deps));
                async move {
                    anyhow::ensure!(!consuming.is_cancelled(), "shutting down");
                    start_consumers(connection, topology, deps, prefetch, &consumers, consuming)
                        .await
                }
            }
        };
        let (broker, broker_task) = amqp::supervise(
            "processor",
            backends.amqp.clone(),
            setup,
            background.clone(),
        );
        Ok(Self {
            listener,
            readiness: Readiness {
                broker,
                redis,
                database,
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

async fn start_consumers(
    connection: Arc<Connection>,
    topology: Arc<Topology>,
    deps: Arc<Deps>,
    prefetch: u16,
    consumers: &TaskTracker,
    consuming: CancellationToken,
) -> anyhow::Result<()> {
    let setup = connection.create_channel().await?;
    topology.declare(&setup).await?;
    setup.close(200, "topology declared".into()).await?;
    for shard in 0..topology.shards() {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                topology.shard_queue(shard).into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let shard = Shard {
            channel,
            consumer,
            connection: Arc::clone(&connection),
            topology: Arc::clone(&topology),
            deps: Arc::clone(&deps),
        };
        consumers.spawn(consumer::run(shard, consuming.clone()));
    }
    Ok(())
}
