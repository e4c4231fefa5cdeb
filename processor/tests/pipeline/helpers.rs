//! `spawn_pipeline()`: a gateway and a processor, built through their production
//! `Application::build`, on port 0, sharing one fresh namespace.

use std::{net::SocketAddr, process::Stdio, time::Duration};

use lapin::BasicProperties;
use processor::shards::{Fence, leases};
use shared::{
    config::Backends,
    connect::postgres::{Tables, migrated},
    topology::Topology,
};
use sqlx::PgPool;
use testkit::sandbox::Sandbox;

pub const WAIT: Duration = Duration::from_secs(30);

/// The processors' shard lease in tests: a killed replica's shards are taken over within it.
pub const TEST_LEASE: Duration = Duration::from_secs(4);

pub struct Pipeline {
    pub backends: Backends,
    pub topology: Topology,
    pub client: reqwest::Client,
    pub gateway: SocketAddr,
    pub processor: Option<SocketAddr>,
    running: testkit::in_process::InProcess,
    /// The namespace, when the pipeline made it ([`spawn_pipeline`]).
    sandbox: Option<Sandbox>,
}

/// A gateway and an in-process processor on healthy backends in a namespace of their own, both
/// ready.
pub async fn spawn_pipeline() -> Pipeline {
    let sandbox = Sandbox::new();
    let mut pipeline = spawn_gateway_only(sandbox.backends()).await;
    pipeline.sandbox = Some(sandbox);
    let backends = pipeline.backends.clone();
    pipeline.start_processor(backends).await;
    pipeline
        .wait_ready(pipeline.processor.expect("started"))
        .await;
    pipeline
}

/// A ready gateway and no processor, in `backends`' namespace (the caller's).
pub async fn spawn_gateway_only(backends: Backends) -> Pipeline {
    let mut config = testkit::test_config!(gateway::Config, backends.clone());
    config.confirm_timeout = Duration::from_secs(2);
    let mut running = testkit::in_process::InProcess::default();
    let addr = running.launch(gateway::Application::build(config).await);
    let namespace = backends.namespace.clone();
    let pipeline = Pipeline {
        topology: Topology::new(backends.namespace.clone(), backends.ingest_shards),
        backends,
        client: testkit::keys::authorized_client(&namespace).await,
        gateway: addr,
        processor: None,
        running,
        sandbox: None,
    };
    pipeline.wait_ready(addr).await;
    pipeline
}

impl Pipeline {
    /// Starts an in-process processor on `backends` (some may be unreachable).
    pub async fn start_processor(&mut self, backends: Backends) -> SocketAddr {
        let mut config = testkit::test_config!(processor::Config, backends);
        config.prefetch = 16;
        config.retry_delays = testkit::sandbox::RETRY_DELAYS.to_vec();
        config.shard_lease = TEST_LEASE;
        let addr = self
            .running
            .launch(processor::Application::build(config).await);
        self.processor = Some(addr);
        addr
    }

    /// Stops the most recently started service, waiting for its drain.
    pub async fn stop_last(&mut self) {
        self.running.stop_last().await;
    }

    pub async fn wait_ready(&self, addr: SocketAddr) {
        testkit::wait::until_ready(&self.client, &format!("http://{addr}"), WAIT).await;
    }

    /// Waits until the service at `addr` answers `/ready` with 503 naming only `dependency`.
    pub async fn wait_down(&self, addr: SocketAddr, dependency: &str) {
        testkit::wait::eventually(&format!("/ready to name {dependency}"), WAIT, || async {
            let r = self
                .client
                .get(format!("http://{addr}/ready"))
                .send()
                .await
                .ok()?;
            let body: serde_json::Value = (r.status() == 503).then_some(r.json().await.ok()?)?;
            (body["down"] == serde_json::json!([dependency])).then_some(())
        })
        .await;
    }

    pub async fn post_event(&self, body: &str, key: Option<&str>) -> reqwest::Response {
        let mut request = self
            .client
            .post(format!("http://{}/events", self.gateway))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request.send().await.expect("request sent")
    }

    /// Posts with an `Idempotency-Key` until it is accepted, as a client retries after an
    /// outage, then waits until the inbox holds `inbox` events.
    pub async fn retry_until_applied(&self, key: &str, body: &str, inbox: i64) {
        testkit::wait::eventually(&format!("{key} to be accepted again"), WAIT, || async {
            let r = self.post_event(body, Some(key)).await;
            (r.status() == 202).then_some(())
        })
        .await;
        wait_inbox(self, inbox).await;
    }

    /// Posts with an `Idempotency-Key` and asserts that the gateway refuses it for now, saying
    /// `why` if not: 503 with `Retry-After`, for the client to send it again.
    pub async fn refused_for_now(&self, key: &str, body: &str, why: &str) {
        let response = self.post_event(body, Some(key)).await;
        assert_eq!(response.status(), 503, "{why}");
        assert!(response.headers().contains_key("retry-after"));
    }

    /// Posts without a key and asserts 202.
    pub async fn accept(&self, body: &str) {
        self.accepted(self.post_event(body, None).await).await;
    }

    /// Posts with an `Idempotency-Key` and asserts 202.
    pub async fn accept_keyed(&self, key: &str, body: &str) {
        self.accepted(self.post_event(body, Some(key)).await).await;
    }

    async fn accepted(&self, response: reqwest::Response) {
        assert_eq!(
            response.status(),
            202,
            "{}",
            response.text().await.unwrap_or_default()
        );
    }

    /// `GET /products/{id}` as JSON, `None` on 404.
    pub async fn product(&self, id: &str) -> Option<serde_json::Value> {
        let response = self
            .client
            .get(format!("http://{}/products/{id}", self.gateway))
            .send()
            .await
            .expect("request sent");
        if response.status() == 404 {
            return None;
        }
        assert_eq!(response.status(), 200);
        Some(response.json().await.expect("JSON"))
    }

    /// Waits until the product's state satisfies `check`, and returns it.
    pub async fn product_when(
        &self,
        id: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        testkit::wait::eventually(
            &format!("product {id} to reach the expected state"),
            WAIT,
            || async { self.product(id).await.filter(|p| check(p)) },
        )
        .await
    }

    /// Publishes a `product.update` body straight to the shard of `product`, past the gateway;
    /// the shard.
    pub async fn publish_update(
        &self,
        broker: &testkit::broker::Broker,
        product: &str,
        body: &str,
    ) -> u16 {
        let shard = self.topology.shard_for(&product.parse().expect("valid"));
        let routing_key = Topology::routing_key(shard);
        let properties = BasicProperties::default().with_type("product.update".into());
        let exchange = self.topology.ingest_exchange();
        broker
            .publish(&exchange, &routing_key, body.as_bytes(), properties)
            .await;
        shard
    }

    /// Events recorded in the processor's inbox.
    pub async fn inbox_count(&self) -> i64 {
        testkit::postgres::inbox_count(&self.backends).await
    }

    /// Runs `statement` on the namespace's schema.
    pub async fn execute(&self, statement: &'static str) {
        testkit::postgres::execute(&self.backends, statement).await;
    }

    /// `GET` on the processor's API, as JSON with its status.
    pub async fn processor_get(&self, path: &str) -> (u16, serde_json::Value) {
        let addr = self.processor.expect("a processor is running");
        testkit::http::get_json(&self.client, &format!("http://{addr}{path}")).await
    }

    /// `POST /dead-letters/replay` of `selection` on the processor's API.
    pub async fn replay(&self, selection: serde_json::Value) -> (u16, serde_json::Value) {
        self.processor_post("/dead-letters/replay", selection).await
    }

    /// How many dead letters of `reason` a dry-run purge counts.
    pub async fn purgeable(&self, reason: &str) -> serde_json::Value {
        let selection = serde_json::json!({"all": true, "reason": reason, "dry_run": true});
        self.processor_post("/dead-letters/purge", selection)
            .await
            .1["purged"]
            .clone()
    }

    /// `POST` JSON to the processor's API.
    pub async fn processor_post(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let addr = self.processor.expect("a processor is running");
        let response = self
            .client
            .post(format!("http://{addr}{path}"))
            .json(&body)
            .send()
            .await
            .expect("sent");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_default())
    }

    /// Asserts that `GET` on each `(path, field)`'s path is a 400 naming the field.
    pub async fn assert_names_fields(&self, cases: &[(&str, &str)]) {
        for (path, field) in cases {
            let (status, body) = self.processor_get(path).await;
            testkit::http::assert_names_field(status, &body, field, path);
        }
    }

    /// Waits until the dead-letter API lists exactly `n` dead letters, and returns them.
    pub async fn dead_letters(&self, n: usize) -> Vec<serde_json::Value> {
        testkit::wait::eventually(&format!("{n} dead letters"), WAIT, || async {
            let (status, body) = self.processor_get("/dead-letters").await;
            let items = body["items"].as_array()?.clone();
            (status == 200 && items.len() == n).then_some(items)
        })
        .await
    }

    pub async fn metrics_of(&self, addr: SocketAddr) -> String {
        testkit::metrics::scrape(&self.client, &format!("http://{addr}")).await
    }

    /// Events the running processor has recognised as already applied.
    pub async fn duplicates(&self) -> f64 {
        let processor = self.processor.expect("running");
        let metrics = self.metrics_of(processor).await;
        counter(&metrics, "pipeline_events_processed_total", "duplicate")
    }

    /// Waits until the processor has recognised more duplicates than `before`.
    pub async fn wait_duplicate(&self, before: f64) {
        testkit::wait::eventually("a duplicate to be recognised", WAIT, || async {
            (self.duplicates().await > before).then_some(())
        })
        .await;
    }

    /// Stops everything (each service drains), then removes the namespace if the pipeline made
    /// it.
    pub async fn stop(mut self) {
        while !self.running.is_empty() {
            self.stop_last().await;
        }
        if let Some(sandbox) = self.sandbox.take() {
            sandbox.remove().await.expect("the namespace removed");
        }
    }
}

/// The processor binary as a child process in `backends`' namespace (inherits the environment's
/// URLs), so a test can SIGKILL it.
pub fn processor_process(backends: &Backends) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_processor"))
        .env("PIPELINE_NAMESPACE", backends.namespace.as_str())
        .env("INGEST_SHARDS", backends.ingest_shards.to_string())
        .env("PROCESSOR_ADDR", "127.0.0.1:0")
        .env("SHARD_LEASE_SECS", TEST_LEASE.as_secs().to_string())
        .env("RETRY_DELAYS_MS", testkit::sandbox::retry_delays_ms())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("the processor binary starts")
}

/// The id of the downstream event of `event_type` caused by the `kind` event `id` the test's
/// client sent.
fn downstream_of(kind: shared::contract::IngestKind, id: String, event_type: &str) -> String {
    let source = shared::contract::EventKey {
        kind,
        owner: testkit::keys::TEST_KEY_NAME.parse().expect("a valid owner"),
        id: id.parse().expect("a valid event id"),
    };
    let event_type = shared::contract::EventType::parse(event_type).expect("a known event type");
    shared::contract::DownstreamId::of(&source, event_type).to_string()
}

/// The id of the downstream event of `event_type` caused by the product update `source`.
pub fn downstream_of_update(source: &str, event_type: &str) -> String {
    use shared::contract::IngestKind::ProductUpdate;
    downstream_of(ProductUpdate, source.to_owned(), event_type)
}

/// The id of the downstream event of `event_type` caused by the order `order_id`.
pub fn downstream_of_order(order_id: &str, event_type: &str) -> String {
    use shared::contract::IngestKind::OrderCreate;
    downstream_of(OrderCreate, format!("order:{order_id}"), event_type)
}

pub use testkit::metrics::counter;

/// Waits until the inbox holds exactly `n` events.
pub async fn wait_inbox(pipeline: &Pipeline, n: i64) {
    testkit::wait::eventually(&format!("{n} events in the inbox"), WAIT, || async {
        (pipeline.inbox_count().await == n).then_some(())
    })
    .await;
}

/// Each inbox row's event id and the downstream events it keeps, by event id.
pub async fn announcements(pool: &PgPool) -> Vec<(String, Option<Vec<String>>)> {
    sqlx::query_as("SELECT event_id, announcements FROM processed_events ORDER BY event_id")
        .fetch_all(pool)
        .await
        .expect("the inbox is readable")
}

/// The sandbox's schema, migrated, with the lease row of its one shard, for batches applied
/// straight through the store. The pool's connections are named after the namespace.
pub async fn one_shard(backends: &Backends) -> PgPool {
    let options = backends
        .database
        .clone()
        .application_name(backends.namespace.as_str());
    let pool = migrated(&options, &backends.namespace, &Tables::ALL, 4)
        .await
        .expect("PostgreSQL is reachable");
    leases::prepare(&pool, 1).await.expect("lease rows");
    pool
}

/// `member`'s claim of the one shard of [`one_shard`]'s schema for `lease`, as its fence.
pub async fn claim_the_shard(pool: &PgPool, member: &str, lease: Duration) -> Fence {
    let claimed = leases::claim(pool, member, 1, 1, lease)
        .await
        .expect("claimed");
    Fence {
        member: member.into(),
        lease: claimed[0],
    }
}
