//! `Application`: all I/O set-up in `build`; the refresher, the page and its API in
//! `run_until`.

use std::{convert::Infallible, future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context;
use axum::{
    Json, Router,
    extract::State,
    middleware,
    response::{
        Html,
        sse::{Event, KeepAlive, Sse},
    },
    routing::get,
};
use futures_util::Stream;
use serde_json::Value;
use shared::{
    connect::{amqp, postgres::Database},
    ops,
    topology::Topology,
};
use tokio::{net::TcpListener, sync::watch};
use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    dead_letters::{self, Processor},
    lookup::{self, Lookups},
    snapshot::{self, Sources},
};

/// The page, served as is: no build step, no external assets.
const PAGE: &str = include_str!("page.html");

/// A built dashboard: listener bound, sources connecting.
pub struct Application {
    listener: TcpListener,
    config: Config,
    sources: Arc<Sources>,
    lookups: Lookups,
    background: CancellationToken,
}

/// The dashboard is ready whenever it serves: a source that is down is shown on the page, not
/// a reason to take the page away.
#[derive(Clone)]
struct AlwaysReady;

impl ops::Readiness for AlwaysReady {
    async fn dependencies(&self) -> Vec<(&'static str, bool)> {
        Vec::new()
    }
}

impl Application {
    /// Binds the listener and starts the connections (none of them needs to be up).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(config.addr)
            .await
            .with_context(|| format!("cannot listen on DASHBOARD_ADDR {}", config.addr))?;
        let background = CancellationToken::new();
        let backends = &config.backends;
        let database = Database::start(
            backends.database.clone(),
            &backends.namespace,
            4,
            background.clone(),
        );
        let (broker, _task) = amqp::supervise(
            "dashboard",
            backends.amqp.clone(),
            |_connection| async { Ok(()) },
            background.clone(),
        );
        let redis =
            shared::connect::redis::connect(backends.redis.clone()).context("invalid REDIS_URL")?;
        let lookups = Lookups {
            database: database.clone(),
            redis,
            namespace: backends.namespace.clone(),
        };
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(2))
            .build()?;
        let sources = Arc::new(Sources {
            client,
            services: config.services.clone(),
            broker,
            database,
            topology: Topology::new(backends.namespace.clone(), backends.ingest_shards),
            retry_delays: config.retry_delays.clone(),
        });
        Ok(Self {
            listener,
            config,
            sources,
            lookups,
            background,
        })
    }

    /// The address of the listener.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr(), "Dashboard listening.");
        let (publish, snapshots) = watch::channel(Arc::new(Value::Null));
        tokio::spawn(snapshot::run(
            Arc::clone(&self.sources),
            self.config.refresh,
            publish,
            self.background.clone(),
        ));
        let processor = Processor {
            client: self.sources.client.clone(),
            url: self
                .config
                .services
                .iter()
                .find(|(name, _)| *name == "processor")
                .map(|(_, url)| url.clone())
                .unwrap_or_default(),
        };
        let router = Router::new()
            .route("/", get(|| async { Html(PAGE) }))
            .route("/api/v1/snapshot", get(current))
            .route("/api/v1/stream", get(stream))
            .with_state(snapshots)
            .merge(lookup::routes().with_state(self.lookups))
            .merge(dead_letters::routes(processor))
            .merge(ops::routes(AlwaysReady))
            .layer(middleware::from_fn(ops::track_requests));
        let background = self.background.clone();
        axum::serve(self.listener, router)
            .with_graceful_shutdown(async move {
                shutdown.await;
                background.cancel();
            })
            .await?;
        tracing::info!("Dashboard stopped.");
        Ok(())
    }
}

type Snapshots = watch::Receiver<Arc<Value>>;

async fn current(State(snapshots): State<Snapshots>) -> Json<Value> {
    Json(snapshots.borrow().as_ref().clone())
}

/// Server-sent events: the current snapshot at once, then each new one.
async fn stream(
    State(mut snapshots): State<Snapshots>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    snapshots.mark_changed();
    let events = futures_util::stream::unfold(snapshots, |mut snapshots| async move {
        snapshots.changed().await.ok()?;
        let data = snapshots.borrow_and_update().to_string();
        Some((Ok(Event::default().event("snapshot").data(data)), snapshots))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}
