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
use lapin::Connection;
use redis::aio::ConnectionManager;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    cli::Command,
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

/// A service's configuration, as [`serve`] needs it.
pub trait ServiceConfig {
    /// Where the service listens and how it drains.
    fn serving(&self) -> &Serving;
}

/// A service's whole run, as its binary makes it. With no arguments: telemetry, the
/// configuration from the environment (`load`), [`Service`]-built application (`build`), then
/// serving until SIGTERM or Ctrl-C, and the drain. With `healthcheck`: asks the running
/// service's own `/ready` (on loopback, at the port of its address variable) and exits 0 when it
/// answers 200, 1 otherwise: the health check of a container image without an HTTP client.
/// `--help` and `--version` print and exit 0; anything else exits 2 ([`crate::cli`]).
pub async fn serve<C: ServiceConfig, Built>(
    name: &'static str,
    load: fn() -> Result<C, ConfigError>,
    build: fn(C) -> Built,
) -> anyhow::Result<()>
where
    Built: Future<Output = anyhow::Result<App>>,
{
    match crate::cli::parse(name, std::env::args_os().skip(1)) {
        Ok(Command::Serve) => {}
        Ok(Command::Print(text)) => {
            println!("{}", text.trim_end());
            return Ok(());
        }
        Ok(Command::Healthcheck) => {
            let addr = load()?.serving().addr;
            match healthcheck(addr).await {
                Ok(()) => std::process::exit(0),
                Err(e) => {
                    eprintln!("{name} at {addr} is not ready: {e}");
                    std::process::exit(1);
                }
            }
        }
        Err(refused) => {
            eprintln!("{refused}");
            std::process::exit(2);
        }
    }
    let _telemetry = crate::telemetry::init(name)?;
    crate::config::environment::report(name);
    let app = build(load()?).await?;
    app.run_until(crate::shutdown::signal()).await
}

/// How long [`healthcheck`] waits for an answer.
const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks `GET /ready` of the service listening on `addr` (an unspecified address, `0.0.0.0` or
/// `::`, is asked on loopback): `Ok` for a `200`.
pub async fn healthcheck(addr: SocketAddr) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let ask = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        anyhow::Ok(head)
    };
    let head = tokio::time::timeout(HEALTHCHECK_TIMEOUT, ask)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {HEALTHCHECK_TIMEOUT:?}"))??;
    let status = String::from_utf8_lossy(&head[9..12]).into_owned();
    anyhow::ensure!(
        head.starts_with(b"HTTP/1.") && status == "200",
        "/ready answered {status}"
    );
    Ok(())
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
/// `pipeline_dependency_up` and `pipeline_consumer_up` gauges. Each part is optional. Redis and
/// PostgreSQL are probed in the background ([`Service::watch`]) and `/ready` answers from the
/// last probe, so it never waits on a dependency; the broker's state, the consumers and the
/// details are read as they are.
#[derive(Clone, Default)]
pub struct Checks {
    /// The last background probe of Redis and PostgreSQL; none yet counts as down.
    probed: Arc<std::sync::RwLock<Option<Probed>>>,
    broker: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
    redis: Option<ConnectionManager>,
    database: Option<Database>,
    consumers: Option<Consumers>,
    details: Vec<(&'static str, Detail)>,
    /// Dependencies reported in `/ready` that the service can work without.
    optional: Vec<&'static str>,
}

/// Whether Redis and PostgreSQL answered the last probe (`None`: not checked).
#[derive(Clone, Copy, Debug)]
struct Probed {
    redis: Option<bool>,
    postgres: Option<bool>,
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

    /// Each dependency by name and whether it was up at the last probe (the broker: now),
    /// without waiting on any of them.
    pub fn dependencies(&self) -> Vec<(&'static str, bool)> {
        let probed = *self
            .probed
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (redis, postgres) = match probed {
            Some(Probed { redis, postgres }) => (redis, postgres),
            None => (
                self.redis.as_ref().map(|_| false),
                self.database.as_ref().map(|_| false),
            ),
        };
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

    /// Probes Redis and PostgreSQL (each within its own timeout) and keeps the result for
    /// [`Self::dependencies`].
    async fn probe(&self) {
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
        *self
            .probed
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Probed { redis, postgres });
    }

    /// Each consumed queue and whether it has a live consumer.
    pub fn queues(&self) -> Vec<(String, bool)> {
        self.consumers
            .as_ref()
            .map_or_else(Vec::new, Consumers::all)
    }
}

/// How often Redis and PostgreSQL are probed for `/ready` and the dependency gauges.
pub const PROBE_EVERY: Duration = Duration::from_secs(2);

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
    /// How long API keys are trusted when they cannot be read again from PostgreSQL
    /// (`API_KEYS_MAX_STALENESS_SECS`, 300): past it, requests are `503` until it answers, so a
    /// revocation holds on a replica cut from PostgreSQL too. Longer than the 10 s refresh on
    /// purpose: a PostgreSQL restart or failover must not stop the gateway accepting events.
    pub keys_max_staleness: Duration,
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
            keys_max_staleness: seconds("API_KEYS_MAX_STALENESS_SECS", 300)?,
        })
    }
}

/// A service being built and then run.
pub struct Service {
    name: &'static str,
    listener: TcpListener,
    limits: Limits,
    keys_max_staleness: Duration,
    deadline: Duration,
    /// The API keys the service checks, once [`Self::auth`] made them.
    keys: std::sync::OnceLock<crate::auth::Auth>,
    /// The service's work: stopped first on shutdown, so it finishes what it holds.
    pub work: Tasks,
    /// What the work needs: stopped once the work and the HTTP server have drained.
    pub background: Tasks,
}

impl Service {
    /// Binds the listener of `serving` for the service `name`.
    pub async fn bind(name: &'static str, serving: &Serving) -> anyhow::Result<Self> {
        crate::telemetry::metrics();
        metrics::gauge!(
            crate::metric::BUILD_INFO,
            "service" => name,
            "version" => env!("CARGO_PKG_VERSION"),
            "revision" => option_env!("PIPELINE_REVISION").unwrap_or("unknown"),
        )
        .set(1.0);
        let listener = TcpListener::bind(serving.addr)
            .await
            .with_context(|| format!("cannot listen on {} {}", serving.variable, serving.addr))?;
        Ok(Self {
            name,
            listener,
            limits: serving.http.clone(),
            keys_max_staleness: serving.keys_max_staleness,
            deadline: serving.shutdown_deadline,
            keys: std::sync::OnceLock::new(),
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

    /// The API keys of `database`, read in the background, each key allowed the requests in
    /// progress the HTTP limits give it; made once (later calls answer the same keys), and
    /// counted by the load shedding too ([`crate::http::harden`]).
    pub fn auth(&self, database: &Database) -> crate::auth::Auth {
        self.keys
            .get_or_init(|| {
                crate::auth::Auth::start(
                    database.clone(),
                    &self.background,
                    self.limits.max_requests_per_key,
                    self.keys_max_staleness,
                )
            })
            .clone()
    }

    /// Supervises the connection to `backends`' RabbitMQ nodes ([`amqp::supervise`]) as a
    /// background task; `setup` runs on every new connection, unless the work is stopping.
    pub fn broker<T, F, Fut>(&self, backends: &Backends, setup: F) -> Broker<T>
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
        let (broker, supervisor) = amqp::supervise(
            self.name,
            backends.amqp.clone(),
            backends.tls_ca.clone(),
            setup,
            self.background.stopping(),
        );
        self.background.spawn(supervisor);
        broker
    }

    /// [`Self::broker`] whose set-up declares `topology` (every exchange and queue), for a
    /// service that needs nothing else on a new connection.
    pub fn declaring_broker(
        &self,
        backends: &Backends,
        topology: &Arc<crate::topology::Topology>,
    ) -> Broker<()> {
        let topology = Arc::clone(topology);
        self.broker(backends, move |connection| {
            let topology = Arc::clone(&topology);
            async move { topology.declare(&connection).await }
        })
    }

    /// Runs `work` (a consumer whose handler writes to PostgreSQL) once `database`'s schema is
    /// migrated, as work: what it takes off its queue never waits on a table not made yet, and a
    /// first start logs no outage.
    pub fn after_migrations<F>(&self, database: &Database, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (database, stop) = (database.clone(), self.work.stopping());
        self.work.spawn(async move {
            tokio::select! {
                () = database.migrated() => work.await,
                () = stop.cancelled() => {}
            }
        });
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

    /// Probes the dependencies of `checks` every [`PROBE_EVERY`] (a probe that hangs delays
    /// only the next one, never `/ready`) and keeps the dependency gauges current, as a
    /// background task.
    pub fn watch(&self, checks: &Checks) {
        let (checks, stop) = (checks.clone(), self.background.stopping());
        self.background.spawn(async move {
            let mut tick = tokio::time::interval(PROBE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        checks.probe().await;
                        ops::record(&checks.dependencies());
                    }
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
        let router = crate::http::harden(
            routes.merge(ops::routes(checks)),
            &self.limits,
            name,
            self.keys.get().cloned(),
        );
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
