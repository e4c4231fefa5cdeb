//! The one shape every service starts and stops in, so that each `Application::build` only adds
//! its own routes and workers:
//!
//! - [`Service::bind`] binds the listener (port 0 in tests) and holds two groups of [`Tasks`]:
//!   the **work** (consumers, workers, jobs, the dashboard's refresher) and the **background**
//!   the work needs (the broker's supervisor, the migrations, the key refresher, the dependency
//!   watch). Every task a service spawns is in one of them.
//! - [`Service::broker`] supervises the RabbitMQ connection as a background task.
//! - [`Service::app`] makes the built service, an [`App`]; [`App::run_until`] serves the
//!   service's routes beside `/health`, `/ready` (from [`Checks`])
//!   and `/metrics` on the hardened server until the shutdown signal, then drains: the work is
//!   told to stop and the server stops accepting; the work finishes what it holds and in-flight
//!   requests are answered, under the drain deadline; then the background stops, under the
//!   deadline again. A deadline exceeded is a warning, and the service stops anyway.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::Router;
use lapin::{Connection, uri::AMQPUri};
use redis::aio::ConnectionManager;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    config::{Backends, ConfigError, seconds, var},
    connect::{
        amqp::{self, Broker},
        postgres::{Database, Tables},
    },
    consume::Consumers,
    http::Limits,
    ops,
    shutdown::with_deadline,
};

/// A service's whole run, as its binary makes it: telemetry, the configuration from the
/// environment (`load`), [`Service`]-built application (`build`), then serving until SIGTERM or
/// Ctrl-C, and the drain.
pub async fn serve<C, Built>(
    name: &'static str,
    load: fn() -> Result<C, ConfigError>,
    build: fn(C) -> Built,
) -> anyhow::Result<()>
where
    Built: Future<Output = anyhow::Result<App>>,
{
    let _telemetry = crate::telemetry::init(name)?;
    let app = build(load()?).await?;
    app.run_until(crate::shutdown::signal()).await
}

/// Tasks that stop together: tracked, and told to stop by one token (each task watches
/// [`Tasks::stopping`] and ends by itself).
#[derive(Clone, Debug, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl Tasks {
    /// A new, empty group.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `task` as one of the group.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(task);
    }

    /// Fires when the group is asked to stop.
    pub fn stopping(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Asks the group to stop and waits for every task of it, at most `deadline` (a warning
    /// naming `what` if exceeded).
    pub async fn stop(&self, what: &'static str, deadline: Duration) {
        self.stop.cancel();
        self.tracker.close();
        with_deadline(what, deadline, self.tracker.wait()).await;
    }
}

/// What a service depends on and consumes, checked for `/ready` and the
/// `pipeline_dependency_up` and `pipeline_consumer_up` gauges. Each part is optional.
#[derive(Clone, Default)]
pub struct Checks {
    broker: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
    redis: Option<ConnectionManager>,
    database: Option<Database>,
    consumers: Option<Consumers>,
    details: Vec<(&'static str, Detail)>,
    /// Dependencies reported in `/ready` that the service can work without.
    optional: Vec<&'static str>,
}

/// A part a service adds to its `/ready` answer (the processor: the shards it owns): whether it
/// is ready, and what to show.
pub type Detail = Arc<dyn Fn() -> (bool, serde_json::Value) + Send + Sync>;

impl Checks {
    /// Checks RabbitMQ: up when `broker` has a session.
    pub fn broker<T: Send + Sync + 'static>(mut self, broker: &Broker<T>) -> Self {
        let broker = broker.clone();
        self.broker = Some(Arc::new(move || broker.is_up()));
        self
    }

    /// Checks Redis.
    pub fn redis(mut self, redis: &ConnectionManager) -> Self {
        self.redis = Some(redis.clone());
        self
    }

    /// Checks PostgreSQL (reachable and migrated).
    pub fn postgres(mut self, database: &Database) -> Self {
        self.database = Some(database.clone());
        self
    }

    /// Reports `dependency` (`rabbitmq`, `redis`, `postgres`) in `/ready` without making the
    /// service unready when it is down (listed under `degraded` then): for a service that
    /// still does its main job without it.
    pub fn optional(mut self, dependency: &'static str) -> Self {
        self.optional.push(dependency);
        self
    }

    /// Whether `dependency` was marked [`Self::optional`].
    pub fn is_optional(&self, dependency: &str) -> bool {
        self.optional.contains(&dependency)
    }

    /// Checks that every queue the service consumes has a live consumer.
    pub fn consumers(mut self, consumers: &Consumers) -> Self {
        self.consumers = Some(consumers.clone());
        self
    }

    /// Adds `name` to the `/ready` answer, with what `detail` says at the time; while it says
    /// not ready, neither is the service.
    pub fn detail(mut self, name: &'static str, detail: Detail) -> Self {
        self.details.push((name, detail));
        self
    }

    /// The details for `/ready`, by name: ready or not, and what to show.
    pub fn details(&self) -> impl Iterator<Item = (&'static str, (bool, serde_json::Value))> + '_ {
        self.details.iter().map(|(name, detail)| (*name, detail()))
    }

    /// Each dependency by name and whether it is up.
    pub async fn dependencies(&self) -> Vec<(&'static str, bool)> {
        let redis = async {
            match &self.redis {
                Some(redis) => Some(crate::connect::redis::is_up(redis).await),
                None => None,
            }
        };
        let postgres = async {
            match &self.database {
                Some(database) => Some(database.is_up().await),
                None => None,
            }
        };
        let (redis, postgres) = tokio::join!(redis, postgres);
        let rabbitmq = self.broker.as_ref().map(|up| up());
        [
            ("rabbitmq", rabbitmq),
            ("redis", redis),
            ("postgres", postgres),
        ]
        .into_iter()
        .filter_map(|(name, up)| up.map(|up| (name, up)))
        .collect()
    }

    /// Each consumed queue and whether it has a live consumer.
    pub fn queues(&self) -> Vec<(String, bool)> {
        self.consumers
            .as_ref()
            .map_or_else(Vec::new, Consumers::all)
    }
}

/// How often the dependency gauges are refreshed when nobody asks `/ready`.
const WATCH_EVERY: Duration = Duration::from_secs(5);

/// Where a service listens, how its HTTP server protects itself, and how long it may drain.
#[derive(Clone, Debug)]
pub struct Serving {
    /// The listening address (port 0 in tests).
    pub addr: SocketAddr,
    /// The variable the address was read from, named if binding fails.
    pub variable: &'static str,
    /// How the HTTP server protects itself from slow and greedy clients.
    pub http: Limits,
    /// How long a drain may take on SIGTERM before the service stops anyway.
    pub shutdown_deadline: Duration,
}

impl Serving {
    /// Reads the address from `variable` (`default` when unset), the HTTP limits, and
    /// `SHUTDOWN_DEADLINE_SECS` (30).
    pub fn from_env(variable: &'static str, default: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            addr: var(variable, default)?,
            variable,
            http: Limits::from_env()?,
            shutdown_deadline: seconds("SHUTDOWN_DEADLINE_SECS", 30)?,
        })
    }
}

/// A service being built and then run.
pub struct Service {
    name: &'static str,
    listener: TcpListener,
    limits: Limits,
    deadline: Duration,
    /// The service's work: stopped first on shutdown, so it finishes what it holds.
    pub work: Tasks,
    /// What the work needs: stopped once the work and the HTTP server have drained.
    pub background: Tasks,
}

impl Service {
    /// Binds the listener of `serving` for the service `name`.
    pub async fn bind(name: &'static str, serving: &Serving) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(serving.addr)
            .await
            .with_context(|| format!("cannot listen on {} {}", serving.variable, serving.addr))?;
        Ok(Self {
            name,
            listener,
            limits: serving.http.clone(),
            deadline: serving.shutdown_deadline,
            work: Tasks::new(),
            background: Tasks::new(),
        })
    }

    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// PostgreSQL in `backends`' namespace, at most `max_connections` at a time, with the
    /// migrations of `tables` run in the background (see [`Database::start`]).
    pub fn database(
        &self,
        backends: &Backends,
        tables: &'static [Tables],
        max_connections: u32,
    ) -> Database {
        let options = backends.database.clone();
        Database::start(
            options,
            &backends.namespace,
            tables,
            max_connections,
            &self.background,
        )
    }

    /// Supervises the connection to the RabbitMQ `nodes` ([`amqp::supervise`]) as a background
    /// task; `setup` runs on every new connection, unless the work is stopping.
    pub fn broker<T, F, Fut>(&self, nodes: Vec<AMQPUri>, setup: F) -> Broker<T>
    where
        T: Send + Sync + 'static,
        F: Fn(Arc<Connection>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<T>> + Send,
    {
        let working = self.work.stopping();
        let setup = move |connection| {
            let working = working.clone();
            let set_up = setup(connection);
            async move {
                anyhow::ensure!(!working.is_cancelled(), "shutting down");
                set_up.await
            }
        };
        let (broker, supervisor) =
            amqp::supervise(self.name, nodes, setup, self.background.stopping());
        self.background.spawn(supervisor);
        broker
    }

    /// [`Self::broker`] whose set-up declares `topology` (every exchange and queue), for a
    /// service that needs nothing else on a new connection.
    pub fn declaring_broker(
        &self,
        nodes: Vec<AMQPUri>,
        topology: &Arc<crate::topology::Topology>,
    ) -> Broker<()> {
        let topology = Arc::clone(topology);
        self.broker(nodes, move |connection| {
            let topology = Arc::clone(&topology);
            async move { topology.declare(&connection).await }
        })
    }

    /// Prunes expired rows with `prune` every `every` ([`crate::retention::run`]), as work.
    pub fn keep_pruning<F, Fut>(&self, database: &Database, every: Duration, prune: F)
    where
        F: Fn(sqlx::PgPool) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<(&'static str, u64)>, sqlx::Error>> + Send + 'static,
    {
        self.work.spawn(crate::retention::run(
            database.clone(),
            every,
            prune,
            self.work.stopping(),
        ));
    }

    /// Keeps the dependency and consumer gauges current every few seconds, as a background
    /// task.
    pub fn watch(&self, checks: &Checks) {
        let (checks, stop) = (checks.clone(), self.background.stopping());
        self.background.spawn(async move {
            let mut tick = tokio::time::interval(WATCH_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => ops::record(&checks.dependencies().await),
                    () = stop.cancelled() => return,
                }
            }
        });
    }

    /// The built service: its `routes` (beside the ops routes, answering `/ready` from
    /// `checks`), ready to [`App::run_until`] its shutdown.
    pub fn app(self, routes: Router, checks: Checks) -> App {
        App {
            service: self,
            routes,
            checks,
        }
    }

    /// Serves `routes` beside the ops routes until `shutdown`, then drains (see the module).
    async fn run(
        self,
        routes: Router,
        checks: Checks,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let name = self.name;
        tracing::info!(addr = %self.local_addr(), "{name} listening.");
        let router = crate::http::harden(routes.merge(ops::routes(checks)), &self.limits, name);
        let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
        let server = crate::http::serve(self.listener, router, &self.limits, async move {
            let _ = drain_rx.await;
        });
        let mut server = std::pin::pin!(server);
        tokio::select! {
            () = &mut server => self.work.stop("work drain", self.deadline).await,
            () = shutdown => {
                tracing::info!("{name} draining: no new requests or work; finishing what is in hand.");
                let _ = drain_tx.send(());
                let work = self.work.stop("work drain", self.deadline);
                let http = with_deadline("http drain", self.deadline, &mut server);
                tokio::join!(work, http);
            }
        }
        self.background.stop("background stop", self.deadline).await;
        tracing::info!("{name} stopped.");
        Ok(())
    }
}

/// A built service: listener bound, work and connections starting.
pub struct App {
    service: Service,
    routes: Router,
    checks: Checks,
}

impl App {
    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.service.local_addr()
    }

    /// Serves until `shutdown` completes, then drains under the deadline (see the module).
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        self.service.run(self.routes, self.checks, shutdown).await
    }
}
