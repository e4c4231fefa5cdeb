//! `Application`: all I/O set-up in `build`; consumption, delivery, the API and the drain in
//! `run_until` (the shared [`Service`] shape).

use std::sync::Arc;

use lapin::Connection;
use shared::{
    auth::{Scope, protect},
    connect::postgres::{Database, Tables},
    consume::{self, Consumers},
    egress::Egress,
    service::{App, Checks, Service},
    topology::Topology,
};
use tokio::sync::Notify;

use crate::{
    api,
    bindings::{self, Bindings},
    config::Config,
    delivery::Worker,
    intake::Intake,
};

/// The notifier: [`Application::build`] binds and connects it.
pub struct Application;

impl Application {
    /// Binds the listener and starts the connections, the consumer (as soon as the broker is
    /// reachable) and the delivery worker. Dependencies that are down do not stop start-up.
    ///
    /// [`App::run_until`] then serves, consumes and delivers until its shutdown signal and
    /// drains: stop taking events (the one in hand is recorded and acked), let the deliveries in
    /// flight finish and record their outcome, close the connection, all under the deadline.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let service = Service::bind("notifier", &config.serving).await?;
        let backends = &config.backends;
        let pool_size = u32::try_from(config.concurrency)
            .unwrap_or(u32::MAX)
            .saturating_add(4);
        let database = service.database(backends, &[Tables::Keys, Tables::Notifier], pool_size);
        let egress = Egress::new(config.allow_private_networks);
        let wake = Arc::new(Notify::new());
        let worker = Arc::new(Worker::new(
            database.clone(),
            config.policy(),
            egress,
            Arc::clone(&wake),
        )?);
        service.work.spawn(worker.run(service.work.stopping()));
        let window = config.retention;
        service.keep_pruning(&database, config.prune_every, move |pool| {
            crate::store::retention::prune(pool, window)
        });
        let topology = Arc::new(backends.topology());
        let (declared, subscriptions) = (Arc::clone(&topology), database.clone());
        let broker = service.broker(backends, move |connection| {
            prepare(connection, Arc::clone(&declared), subscriptions.clone())
        });
        let bindings = Bindings {
            database: database.clone(),
            broker: broker.clone(),
            topology: Arc::clone(&topology),
        };
        service
            .background
            .spawn(bindings.clone().keep(service.background.stopping()));
        let live = Consumers::default();
        service.after_migrations(
            &database,
            consume::supervise(
                broker.clone(),
                topology.notifier_queue(),
                config.prefetch,
                Arc::new(Intake {
                    database: database.clone(),
                    wake,
                    queue: topology.notifier_queue(),
                    topology: Arc::clone(&topology),
                }),
                live.clone(),
                service.work.stopping(),
            ),
        );
        let checks = Checks::default()
            .broker(&broker)
            .postgres(&database)
            .consumers(&live);
        service.watch(&checks);
        let auth = service.auth(&database);
        let api = api::routes(api::Api {
            database,
            egress,
            max_subscriptions: config.max_subscriptions,
            bindings,
        });
        let routes =
            shared::openapi::route(crate::openapi::document).merge(protect(api, &auth, Scope::Ops));
        Ok(service.app(routes, checks))
    }
}

/// Readies a new broker connection: the topology, and the notifier queue's bindings to the types
/// the subscriptions want (before the subscriptions table exists there is nothing to bind; the
/// keeper reconciles once it does).
async fn prepare(
    connection: Arc<Connection>,
    topology: Arc<Topology>,
    database: Database,
) -> anyhow::Result<()> {
    topology.declare(&connection).await?;
    if !database.is_migrated() {
        return Ok(());
    }
    if let Err(e) = bindings::reconcile(&database, &connection, &topology).await {
        tracing::warn!(error = %e, "The notifier queue's bindings were not reconciled; trying again shortly.");
    }
    Ok(())
}
