//! `spawn_app()`: a gateway built through the production `Application::build`, on port 0, in a
//! namespace of its own, with request helpers.

use std::{net::SocketAddr, time::Duration};

use gateway::{Application, Config};
use shared::{config::Backends, topology::Topology};
use testkit::{broker::Broker, fault_proxy::Faulty, in_process::InProcess, sandbox::Sandbox};

pub const WAIT: Duration = Duration::from_secs(20);

/// The name of the key every test app's client sends: the owner of what it sends.
pub const KEY_NAME: &str = testkit::keys::TEST_KEY_NAME;

pub struct TestApp {
    pub addr: SocketAddr,
    /// Sends a key with every scope.
    pub client: reqwest::Client,
    /// That key.
    pub key: String,
    pub backends: Backends,
    pub topology: Topology,
    running: InProcess,
    /// The namespace, when the app made it ([`spawn_adjusted`]).
    sandbox: Option<Sandbox>,
}

/// A gateway on healthy backends in a namespace of its own, ready to accept.
pub async fn spawn_app() -> TestApp {
    let app = spawn_adjusted(|_| {}).await;
    app.wait_ready().await;
    app
}

/// A gateway in a namespace of its own (removed with the app), its test configuration changed
/// by `adjust`; not waited for.
pub async fn spawn_adjusted(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let sandbox = Sandbox::new();
    let mut config = config(sandbox.backends());
    adjust(&mut config);
    let mut app = spawn_config(config).await;
    app.sandbox = Some(sandbox);
    app
}

/// The gateway's configuration from the environment (its defaults), on port 0 in `backends`,
/// with a short confirm timeout and drain.
pub fn config(backends: Backends) -> Config {
    let mut config = testkit::test_config!(Config, backends);
    config.idempotency_retention = Duration::from_secs(600);
    config.idempotency_lease = Duration::from_secs(10);
    config.confirm_timeout = Duration::from_secs(2);
    config.publish_channels = 2;
    config
}

/// A gateway on the given backends (some may be unreachable; their namespace is the
/// caller's); not waited for.
pub async fn spawn_with(backends: Backends) -> TestApp {
    spawn_config(config(backends)).await
}

/// A gateway in a namespace of its own (the sandbox's) with fault proxies in front of its
/// backends: `route` is given the direct backends to change and the proxied ones (set a field
/// from them to go through its proxy); its configuration changed by `adjust`; ready.
pub async fn spawn_proxied(
    route: impl FnOnce(&mut Backends, &Backends),
    adjust: impl FnOnce(&mut Config),
) -> (Sandbox, Faulty, TestApp) {
    let sandbox = Sandbox::new();
    let backends = sandbox.backends();
    let faulty = Faulty::start(&backends).await;
    let mut through = backends;
    route(&mut through, &faulty.backends);
    let mut config = config(through);
    adjust(&mut config);
    let app = spawn_config(config).await;
    app.wait_ready().await;
    (sandbox, faulty, app)
}

/// A gateway with this configuration; not waited for.
pub async fn spawn_config(config: Config) -> TestApp {
    let backends = config.backends.clone();
    let key = testkit::keys::tester_key(&backends.namespace).await;
    let mut running = InProcess::default();
    let addr = running.launch(Application::build(config).await);
    TestApp {
        addr,
        client: testkit::keys::client_with_key(&key),
        key,
        topology: Topology::new(backends.namespace.clone(), backends.ingest_shards),
        backends,
        running,
        sandbox: None,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// GETs `path` with the test's key.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.send(reqwest::Method::GET, path).await
    }

    /// Sends a `method` request without a body to `path` with the test's key.
    pub async fn send(&self, method: reqwest::Method, path: &str) -> reqwest::Response {
        self.client
            .request(method, self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    /// POSTs `body` to `path` as `content_type` with the test's key.
    pub async fn post(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request sent")
    }

    /// POSTs `body` to `path` as JSON with the test's key.
    pub async fn post_json(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.post(path, "application/json", body).await
    }

    pub async fn wait_ready(&self) {
        testkit::wait::until_ready(&self.client, &self.url(""), WAIT).await;
    }

    /// POSTs `body` as JSON to `/events`, with an `Idempotency-Key` if given.
    pub async fn post_event(&self, body: &str, key: Option<&str>) -> reqwest::Response {
        let mut request = self
            .client
            .post(self.url("/events"))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request.send().await.expect("request sent")
    }

    /// Messages waiting in all shard queues.
    pub async fn queued(&self) -> u32 {
        let broker = Broker::connect(&self.backends).await;
        let mut total = 0;
        for shard in 0..self.topology.shards() {
            total += broker.depth(&self.topology.shard_queue(shard)).await;
        }
        total
    }

    /// Asserts that refused requests left nothing behind: no message in any shard queue, no
    /// key (an idempotency record) in Redis.
    pub async fn assert_left_nothing(&self) {
        assert_eq!(
            self.queued().await,
            0,
            "a refused request published something"
        );
        let keys = testkit::redis::namespace_keys(&self.backends).await;
        assert!(keys.is_empty(), "a refused request left {keys:?}");
    }

    /// Stops the gateway (graceful drain), then removes the namespace if the app made it.
    pub async fn stop(mut self) {
        self.running.stop_last().await;
        if let Some(sandbox) = self.sandbox.take() {
            sandbox.remove().await.expect("the namespace removed");
        }
    }
}

/// `backends` with RabbitMQ where nothing listens: every publish fails.
pub fn without_broker(mut backends: Backends) -> Backends {
    backends.amqp = vec![
        testkit::ports::closed_port_url("amqp")
            .parse()
            .expect("valid URL"),
    ];
    backends
}

/// Asserts that `response` is a `503` naming RabbitMQ, with a `Retry-After`; its `Retry-After`.
pub async fn broker_down(response: reqwest::Response) -> String {
    let retry_after = response.headers()["retry-after"]
        .to_str()
        .expect("ASCII")
        .to_owned();
    assert_eq!(json(response, 503).await["dependency"], "rabbitmq");
    retry_after
}

/// Asserts the status and returns the JSON body.
pub async fn json(response: reqwest::Response, status: u16) -> serde_json::Value {
    let got = response.status().as_u16();
    let body: serde_json::Value = response.json().await.expect("JSON body");
    assert_eq!(got, status, "unexpected status: {body}");
    body
}
