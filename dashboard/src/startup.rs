//! `Application`: all I/O set-up in `build` (the refresher, the page and its API); serving and
//! the drain in `run_until` (the shared [`Service`] shape).

use std::{convert::Infallible, sync::Arc};

use anyhow::Context;
use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::{
        Html, IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::get,
};
use futures_util::Stream;
use serde_json::Value;
use shared::{
    connect::postgres::Tables,
    service::{App, Checks, Service},
    topology::Topology,
};
use tokio::sync::{Semaphore, watch};

use crate::{
    config::Config,
    dead_letters::{self, Processor},
    lookup::{self, Lookups},
    session::{self, Gate},
    snapshot::{self, Sources},
};

/// The page, served as is: no build step, no external assets.
const PAGE: &str = include_str!("page.html");

/// The dashboard: [`Application::build`] binds and connects it.
pub struct Application;

impl Application {
    /// Binds the listener and starts the connections (none of them needs to be up) and the
    /// refresher of the live numbers. The dashboard is ready whenever it serves: a source that
    /// is down is shown on the page, not a reason to take the page away.
    ///
    /// [`App::run_until`] then serves until its shutdown signal and drains: the refresher stops
    /// (ending the live streams), open requests finish, the connections close, under the
    /// deadline.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let service = Service::bind("dashboard", &config.serving).await?;
        let backends = &config.backends;
        // The operators' view reads every owner's tables (through their modules).
        let database = service.database(backends, &Tables::ALL, 4);
        let gate = Gate::new(service.auth(&database), config.secure_cookies);
        let topology = Arc::new(Topology::new(
            backends.namespace.clone(),
            backends.ingest_shards,
        ));
        // Declared like every service does at start, so the queues it reads exist even before
        // their consumers have started (a passive declaration of a missing queue is an error).
        let broker = service.declaring_broker(backends, &topology);
        let redis =
            shared::connect::redis::connect(backends.redis.clone(), backends.tls_ca.as_ref())
                .context("invalid REDIS_URL")?;
        let lookups = Lookups {
            database: database.clone(),
            redis,
            namespace: backends.namespace.clone(),
        };
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(2))
            .build()?;
        let processor = Processor {
            client: client.clone(),
            url: config
                .services
                .iter()
                .find(|(name, _)| *name == "processor")
                .map(|(_, url)| url.clone())
                .unwrap_or_default(),
        };
        let sources = Arc::new(Sources {
            client,
            services: config.services.clone(),
            broker,
            database,
            topology,
            retry_queues: std::sync::Mutex::default(),
        });
        // The refresher is work: once it stops, open pages' streams end and the server drains.
        let (publish, snapshots) = watch::channel(Arc::new(Value::Null));
        service.work.spawn(snapshot::run(
            sources,
            config.refresh,
            publish,
            service.work.stopping(),
        ));
        let live = Live {
            snapshots,
            streams: Arc::new(Semaphore::new(config.max_streams)),
        };
        let operators = Router::new()
            .route("/api/v1/snapshot", get(current))
            .route("/api/v1/stream", get(stream))
            .with_state(live)
            .merge(lookup::routes().with_state(lookups))
            .merge(dead_letters::routes(processor));
        let routes = Router::new()
            .route("/", get(|| async { Html(PAGE) }))
            .merge(session::protect(operators, &gate))
            .merge(session::routes(gate))
            .layer(axum::middleware::map_response(unframed));
        Ok(service.app(routes, Checks::default()))
    }
}

/// Every answer of the dashboard may not be shown inside another site's frame (no clickjacking
/// of a signed-in operator), is taken as the type it says, and sends no referrer.
async fn unframed(mut response: axum::response::Response) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let headers = response.headers_mut();
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("frame-ancestors 'none'"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

type Snapshots = watch::Receiver<Arc<Value>>;

/// The live numbers and the cap on open streams.
#[derive(Clone)]
struct Live {
    snapshots: Snapshots,
    streams: Arc<Semaphore>,
}

async fn current(State(live): State<Live>) -> Json<Value> {
    Json(live.snapshots.borrow().as_ref().clone())
}

/// Server-sent events: the current snapshot at once, then each new one; 503 when
/// `DASHBOARD_MAX_STREAMS` pages are already open.
async fn stream(
    State(live): State<Live>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Response> {
    let Ok(slot) = Arc::clone(&live.streams).try_acquire_owned() else {
        return Err(shared::api::Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            "too many open live streams; retry later",
        )
        .header(
            header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("10"),
        )
        .into_response());
    };
    let mut snapshots = live.snapshots;
    snapshots.mark_changed();
    let events =
        futures_util::stream::unfold((snapshots, slot), |(mut snapshots, slot)| async move {
            snapshots.changed().await.ok()?;
            let data = snapshots.borrow_and_update().to_string();
            Some((
                Ok(Event::default().event("snapshot").data(data)),
                (snapshots, slot),
            ))
        });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
