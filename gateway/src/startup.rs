//! `Application`: all I/O set-up (listener, connections, topology, migrations) in `build`, and
//! the server with its drain in `run_until`.

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context;
use shared::{
    connect::{amqp, postgres::Database, redis},
    shutdown::with_deadline,
    topology::Topology,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    idempotency::Idempotency,
    publisher::{Channels, Publisher},
    routes::{AppState, router},
};

/// A built gateway, bound to its port, ready to serve.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    config: Config,
    background: CancellationToken,
    broker_task: tokio::task::JoinHandle<()>,
}

impl Application {
    /// Binds the listener and starts the connections. Dependencies that are down do not stop
    /// start-up: the gateway reports them in `/ready`, answers 503, and recovers by itself.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(config.addr)
            .await
            .with_context(|| format!("cannot listen on GATEWAY_ADDR {}", config.addr))?;
        let background = CancellationToken::new();
        let backends = &config.backends;
        let topology = Arc::new(Topology::new(
            backends.namespace.clone(),
            backends.ingest_shards,
        ));
        let channels = config.publish_channels;
        let setup_topology = Arc::clone(&topology);
        let (broker, broker_task) = amqp::supervise(
            "gateway",
            backends.amqp.clone(),
            move |connection| {
                let topology = Arc::clone(&setup_topology);
                async move { Channels::open(&connection, &topology, channels).await }
            },
            background.clone(),
        );
        let redis = redis::connect(backends.redis.clone()).context("invalid REDIS_URL")?;
        let database = Database::start(
            backends.database.clone(),
            &backends.namespace,
            8,
            background.clone(),
        );
        let state = AppState {
            publisher: Publisher::new(broker, topology, config.confirm_timeout),
            idempotency: Idempotency::new(
                redis.clone(),
                backends.namespace.clone(),
                config.idempotency_lease,
                config.idempotency_retention,
            ),
            redis,
            database,
            namespace: backends.namespace.clone(),
            pending_order_ttl_seconds: config.idempotency_retention.as_secs().max(1),
        };
        shared::ops::watch_dependencies(
            state.clone(),
            std::time::Duration::from_secs(5),
            background.clone(),
        );
        Ok(Self {
            listener,
            state,
            config,
            background,
            broker_task,
        })
    }

    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight requests finish
    /// (each waits for its own confirm), and closes the broker connection, all under the drain
    /// deadline.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr(), "Gateway listening.");
        let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
        let server =
            axum::serve(self.listener, router(self.state)).with_graceful_shutdown(async move {
                let _ = drain_rx.await;
            });
        let mut server = std::pin::pin!(server.into_future());
        tokio::select! {
            result = &mut server => result.context("HTTP server failed")?,
            () = shutdown => {
                tracing::info!("Gateway draining: no new requests; finishing in-flight ones.");
                let _ = drain_tx.send(());
                with_deadline("gateway drain", self.config.shutdown_deadline, &mut server).await;
            }
        }
        self.background.cancel();
        let _ = with_deadline(
            "broker close",
            self.config.shutdown_deadline,
            self.broker_task,
        )
        .await;
        tracing::info!("Gateway stopped.");
        Ok(())
    }
}
