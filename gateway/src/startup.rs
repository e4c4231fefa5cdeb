//! `Application`: all I/O set-up (listener, connections, topology, migrations) in `build`, and
//! the server with its drain in `run_until` (the shared [`Service`] shape).

use std::sync::Arc;

use anyhow::Context;
use serde_json::json;
use shared::{
    connect::{postgres::Tables, redis},
    service::{App, Checks, Service},
};

use crate::{
    config::Config,
    idempotency::Idempotency,
    publisher::{Channels, Publisher},
    routes::{AppState, Parts, router},
};

/// The gateway: [`Application::build`] binds and connects it.
pub struct Application;

impl Application {
    /// Binds the listener and starts the connections. Dependencies that are down do not stop
    /// start-up: the gateway reports them in `/ready`, answers 503, and recovers by itself.
    ///
    /// [`App::run_until`] then serves until its shutdown signal, stops accepting, lets in-flight
    /// requests finish (each waits for its own confirm) and closes the broker connection, all
    /// under the drain deadline.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let service = Service::bind("gateway", &config.serving).await?;
        let backends = &config.backends;
        let topology = Arc::new(backends.topology());
        let channels = config.publish_channels;
        let setup_topology = Arc::clone(&topology);
        let broker = service.broker(backends, move |connection| {
            let topology = Arc::clone(&setup_topology);
            async move { Channels::open(&connection, &topology, channels).await }
        });
        let redis = redis::connect(backends.redis.clone(), backends.tls_ca.as_ref())
            .context("invalid REDIS_URL")?;
        // Its keys, and the products and orders it reads.
        let database = service.database(
            backends,
            &[Tables::Keys, Tables::Processor, Tables::Catalog],
            8,
        );
        let auth = service.auth(&database);
        // Accepting events needs RabbitMQ (and Redis for keyed requests) and the API keys read
        // once; with PostgreSQL down only reads that miss the cache fail, so the gateway stays
        // ready (and in its Service) and reports PostgreSQL under `degraded`.
        let keys = auth.clone();
        let checks = Checks::default()
            .broker(&broker)
            .redis(&redis)
            .postgres(&database)
            .optional("postgres")
            .detail(
                "api_keys",
                Arc::new(move || {
                    let loaded = keys.loaded();
                    (loaded, json!(if loaded { "read" } else { "not read yet" }))
                }),
            );
        service.watch(&checks);
        let state = AppState::from(Parts {
            publisher: Publisher::new(broker, topology, config.confirm_timeout),
            idempotency: Idempotency::new(
                redis.clone(),
                backends.namespace.clone(),
                config.idempotency_lease,
                config.idempotency_retention,
            ),
            catalog: shared::gateway::catalog::Cache::new(
                redis.clone(),
                backends.namespace.clone(),
                backends.cache_ttl_seconds,
            ),
            objects: config.objects,
            uploads: std::sync::Arc::new(tokio::sync::Semaphore::new(config.upload_memory)),
            images_per_product: config.images_per_product,
            redis,
            auth,
            database,
            namespace: backends.namespace.clone(),
            pending_order_ttl_seconds: config.idempotency_retention.as_secs().max(1),
        });
        Ok(service.app(router(state), checks))
    }
}
