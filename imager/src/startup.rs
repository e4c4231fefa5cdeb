//! `Application`: all I/O set-up in `build`; consumption and the drain in `run_until` (the
//! shared [`Service`] shape).

use std::sync::Arc;

use anyhow::Context;
use shared::{
    connect::{postgres::Tables, redis},
    consume::{self, Consumers},
    gateway::catalog::Cache,
    service::{App, Checks, Service},
};

use crate::{
    config::Config,
    job::{Imager, Jobs},
};

/// The imager: [`Application::build`] binds and connects it.
pub struct Application;

impl Application {
    /// Binds the listener and starts the connections and the consumer (as soon as the broker is
    /// reachable). Dependencies that are down do not stop start-up.
    ///
    /// [`App::run_until`] then consumes until its shutdown signal and drains: the job in hand
    /// is finished (or, interrupted, left to return to its queue), then the connections close,
    /// all under the deadline.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let service = Service::bind("imager", &config.serving).await?;
        let backends = &config.backends;
        let database = service.database(backends, &[Tables::Keys, Tables::Catalog], 4);
        let redis = redis::connect(backends.redis.clone(), backends.tls_ca.as_ref())
            .context("invalid REDIS_URL")?;
        let topology = Arc::new(backends.topology());
        let rungs = crate::decide::rungs(config.backoff, config.max_attempts);
        let declared = Arc::clone(&topology);
        let broker = service.broker(backends, move |connection| {
            let (topology, rungs) = (Arc::clone(&declared), rungs.clone());
            async move {
                topology.declare(&connection).await?;
                let channel = connection.create_channel().await?;
                topology.declare_images_retry(&channel, &rungs).await?;
                channel.close(200, "topology declared".into()).await?;
                anyhow::Ok(())
            }
        });
        let cache = Cache::new(
            redis.clone(),
            backends.namespace.clone(),
            backends.cache_ttl_seconds,
        );
        let imager = Imager::new(&config, database.clone(), cache, Arc::clone(&topology))?;
        let live = Consumers::default();
        service.after_migrations(
            &database,
            consume::supervise(
                broker.clone(),
                topology.images_queue(),
                config.prefetch,
                Arc::new(Jobs::new(imager, service.work.clone())),
                live.clone(),
                service.work.stopping(),
            ),
        );
        let checks = Checks::default()
            .broker(&broker)
            .redis(&redis)
            .postgres(&database)
            .consumers(&live);
        service.watch(&checks);
        let routes = shared::openapi::route(crate::openapi::document);
        Ok(service.app(routes, checks))
    }
}
