//! `Application`: all I/O set-up in `build`; consumption, delivery, the API and the drain in
//! `run_until`.

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context;
use axum::{Router, middleware};
use lapin::Connection;
use shared::{
    connect::{
        amqp::{self, Broker},
        postgres::Database,
    },
    consume::{self, Source},
    ops,
    shutdown::with_deadline,
    topology::Topology,
};
use tokio::{net::TcpListener, sync::Notify};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    api,
    config::Config,
    delivery::{Policy, Worker},
    intake::Intake,
};

/// A built notifier: listener bound, connections starting.
pub struct Application {
    listener: TcpListener,
    readiness: Readiness,
    config: Config,
    worker: Arc<Worker>,
    consuming: CancellationToken,
    background: CancellationToken,
    consumers: TaskTracker,
    broker_task: tokio::task::JoinHandle<()>,
}

/// The notifier's dependencies, for `/ready`.
#[derive(Clone)]
struct Readiness {
    broker: Broker<()>,
    database: Database,
}

impl ops::Readiness for Readiness {
    async fn dependencies(&self) -> Vec<(&'static str, bool)> {
        vec![
            ("rabbitmq", self.broker.is_up()),
            ("postgres", self.database.is_up().await),
        ]
    }
}

impl Application {
    /// Binds the listener and starts the connections; the consumer starts as soon as the
    /// broker is reachable. Dependencies that are down do not stop start-up.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(config.addr)
            .await
            .with_context(|| format!("cannot listen on NOTIFIER_ADDR {}", config.addr))?;
        let backends = &config.backends;
        let consuming = CancellationToken::new();
        let background = CancellationToken::new();
        let pool_size = u32::try_from(config.concurrency)
            .unwrap_or(u32::MAX)
            .saturating_add(4);
        let database = Database::start(
            backends.database.clone(),
            &backends.namespace,
            pool_size,
            background.clone(),
        );
        let wake = Arc::new(Notify::new());
        let worker = Arc::new(Worker::new(
            database.clone(),
            Policy {
                timeout: config.webhook_timeout,
                retry_schedule: config.retry_schedule.clone(),
                concurrency: config.concurrency,
                disable_after: config.disable_after,
                poll_interval: config.poll_interval,
            },
            Arc::clone(&wake),
        )?);
        let topology = Arc::new(Topology::new(
            backends.namespace.clone(),
            backends.ingest_shards,
        ));
        let consumers = TaskTracker::new();
        let setup = {
            let consuming = consuming.clone();
            let consumers = consumers.clone();
            let database = database.clone();
            let prefetch = config.prefetch;
            move |connection: Arc<Connection>| {
                let (consuming, consumers) = (consuming.clone(), consumers.clone());
                let (topology, database, wake) =
                    (Arc::clone(&topology), database.clone(), Arc::clone(&wake));
                async move {
                    anyhow::ensure!(!consuming.is_cancelled(), "shutting down");
                    let channel = connection.create_channel().await?;
                    topology.declare(&channel).await?;
                    channel.close(200, "topology declared".into()).await?;
                    let source =
                        Source::open(&connection, &topology.notifier_queue(), prefetch).await?;
                    let intake = Intake {
                        database,
                        wake,
                        queue: topology.notifier_queue(),
                    };
                    consumers.spawn(consume::run(source, intake, consuming));
                    Ok(())
                }
            }
        };
        let (broker, broker_task) =
            amqp::supervise("notifier", backends.amqp.clone(), setup, background.clone());
        let readiness = Readiness { broker, database };
        ops::watch_dependencies(
            readiness.clone(),
            std::time::Duration::from_secs(5),
            background.clone(),
        );
        Ok(Self {
            listener,
            readiness,
            config,
            worker,
            consuming,
            background,
            consumers,
            broker_task,
        })
    }

    /// The address of the listener.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves, consumes and delivers until `shutdown` completes, then drains: stop taking
    /// events (the one in hand is recorded and acked), let the deliveries in flight finish and
    /// record their outcome, close the connection, all under the deadline.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr(), "Notifier listening.");
        let router = Router::new()
            .merge(ops::routes(self.readiness.clone()))
            .merge(api::routes(self.readiness.database.clone()))
            .layer(middleware::from_fn(ops::track_requests));
        let stop_serving = self.background.clone();
        let server = tokio::spawn(
            axum::serve(self.listener, router)
                .with_graceful_shutdown(async move { stop_serving.cancelled().await })
                .into_future(),
        );
        let delivering = CancellationToken::new();
        let worker = tokio::spawn(Arc::clone(&self.worker).run(delivering.clone()));
        shutdown.await;
        tracing::info!(
            "Notifier draining: finishing the event in hand and the deliveries in flight."
        );
        self.consuming.cancel();
        delivering.cancel();
        self.consumers.close();
        with_deadline("notifier drain", self.config.shutdown_deadline, async {
            self.consumers.wait().await;
            let _ = worker.await;
        })
        .await;
        self.background.cancel();
        let _ = with_deadline(
            "broker close",
            self.config.shutdown_deadline,
            self.broker_task,
        )
        .await;
        let _ = server.await;
        tracing::info!("Notifier stopped.");
        Ok(())
    }
}
