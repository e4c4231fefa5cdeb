//! [`Stack::start`] (and [`Stack::start_with`]): every service of the pipeline, built through its production
//! `Application::build` on port 0 in one process, in one fresh namespace on the real RabbitMQ,
//! Redis and PostgreSQL, with the dashboard pointed at the others and a key holding every
//! scope, each service logged in to PostgreSQL as its own role (as a deployment runs them). For
//! tests that need the whole stack (the dashboard's, the API contract run, what travels from
//! the gateway through the processor to the notifier's webhooks).
#![forbid(unsafe_code)]

use std::{net::SocketAddr, time::Duration};

use lapin::{
    BasicProperties,
    types::{AMQPValue, FieldTable},
};
use serde_json::Value;
use shared::{
    config::Backends, connect::postgres::roles::Role, contract, objects::Objects,
    topology::Topology,
};
use testkit::{in_process::InProcess, sandbox::Sandbox, webhooks::Receiver};

/// How long a test waits for something to happen before giving up.
pub const WAIT: Duration = Duration::from_secs(30);

/// The name of [`Stack::key`]: the owner of what [`Stack::client`] sends.
pub const KEY_NAME: &str = "stack";

/// The running services.
pub struct Stack {
    /// The backends and the namespace.
    pub backends: Backends,
    /// The namespace's exchanges and queues.
    pub topology: Topology,
    /// A client sending the key.
    pub client: reqwest::Client,
    /// A key with every scope.
    pub key: String,
    /// Where the gateway listens.
    pub gateway: SocketAddr,
    /// Where the processor listens.
    pub processor: SocketAddr,
    /// Where the notifier listens.
    pub notifier: SocketAddr,
    /// Where the dashboard listens.
    pub dashboard: SocketAddr,
    /// Where the imager listens.
    pub imager: SocketAddr,
    /// Where the gateway and the imager keep image bytes.
    pub objects: Objects,
    /// The folder of the default local store, removed on stop.
    folder: Option<std::path::PathBuf>,
    running: InProcess,
    /// The namespace, when the stack made it (no [`Options::backends`]): removed once the
    /// services are stopped (or told to, when a test panics).
    sandbox: Option<Sandbox>,
}

/// How a [`Stack`] is started.
#[derive(Default)]
pub struct Options {
    /// Where the dashboard looks for the processor (to show it unreachable); default: the
    /// processor started.
    pub processor_url: Option<String>,
    /// The object store; default: a folder of its own under the temporary directory.
    pub objects: Option<Objects>,
    /// Whether the imager may fetch source URLs on private networks (a local server).
    pub fetch_private: bool,
    /// The backends (their namespace is the caller's to remove); default: the environment's,
    /// in a new namespace of the stack's own.
    pub backends: Option<Backends>,
}

/// The span id of the client's span in [`traceparent`]: the parent of the gateway's first span.
pub const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// A W3C `traceparent` of a sampled trace `trace_id` (32 hex digits) that a client started in
/// its span [`CLIENT_SPAN`]: what a client sends to have the services continue its trace.
pub fn traceparent(trace_id: &str) -> String {
    format!("00-{trace_id}-{CLIENT_SPAN}-01")
}

/// `backends` with PostgreSQL reached as `role`'s login user ([`testkit::postgres::role_logins`]).
fn as_own_role(backends: &Backends, role: Role) -> Backends {
    let mut backends = backends.clone();
    backends.database = backends
        .database
        .username(&format!("stack_{}", role.service()))
        .password(&format!("stack-{}", role.service()));
    backends
}

/// The processor's test configuration on `backends`, with the sandbox's short retry ladder
/// ([`testkit::sandbox::RETRY_DELAYS`]), as the stack runs it.
pub fn processor_config(backends: Backends) -> processor::Config {
    let mut config = testkit::test_config!(processor::Config, backends);
    config.retry_delays = testkit::sandbox::RETRY_DELAYS.to_vec();
    config
}

/// The notifier's test configuration on `backends`, as the stack runs it: a quick webhook
/// timeout, retry schedule and poll, and webhooks to private networks allowed (the tests'
/// receivers listen on 127.0.0.1).
pub fn notifier_config(backends: Backends) -> notifier::Config {
    let mut config = testkit::test_config!(notifier::Config, backends);
    config.webhook_timeout = Duration::from_secs(2);
    config.retry_schedule = vec![Duration::from_millis(100)];
    config.poll_interval = Duration::from_millis(50);
    config.allow_private_networks = true;
    config
}

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().expect("valid address")
}

impl Stack {
    /// Gateway, processor, notifier, imager and dashboard; `processor_url` overrides where the
    /// dashboard looks for the processor (to show it unreachable).
    pub async fn start(processor_url: Option<String>) -> Self {
        Self::start_with(Options {
            processor_url,
            ..Options::default()
        })
        .await
    }

    /// Every service, started as `options` say.
    pub async fn start_with(options: Options) -> Self {
        let (backends, sandbox) = match options.backends {
            Some(backends) => (backends, None),
            None => {
                let sandbox = Sandbox::new();
                (sandbox.backends(), Some(sandbox))
            }
        };
        // Each service as its own role, as a deployment runs them.
        testkit::postgres::role_logins(&backends, "stack", true)
            .await
            .expect("the schema migrated and a login user per role");
        let key =
            testkit::keys::api_key_at(&backends, KEY_NAME, shared::auth::Scopes::all(), None).await;
        let (objects, folder) = match options.objects {
            Some(objects) => (objects, None),
            None => {
                let folder = std::env::temp_dir()
                    .join("pipeline-objects")
                    .join(backends.namespace.as_str());
                let url = format!("file://{}", folder.display());
                let objects = Objects::open(&url, None, Duration::from_secs(60), &[])
                    .expect("a local object store");
                (objects, Some(folder))
            }
        };
        let mut stack = Self {
            topology: Topology::new(backends.namespace.clone(), backends.ingest_shards),
            backends: backends.clone(),
            client: testkit::keys::client_with_key(&key),
            key,
            gateway: local(),
            processor: local(),
            notifier: local(),
            dashboard: local(),
            imager: local(),
            objects,
            folder,
            running: InProcess::default(),
            sandbox,
        };
        stack.start_gateway().await;
        stack.start_processor().await;
        stack.start_notifier().await;
        stack.start_imager(options.fetch_private).await;
        let processor_url = options
            .processor_url
            .unwrap_or_else(|| format!("http://{}", stack.processor));
        stack.start_dashboard(processor_url).await;
        for addr in [
            stack.gateway,
            stack.processor,
            stack.notifier,
            stack.imager,
            stack.dashboard,
        ] {
            testkit::wait::until_ready(&stack.client, &format!("http://{addr}"), WAIT).await;
        }
        stack
    }

    async fn start_gateway(&mut self) {
        let mut config =
            testkit::test_config!(gateway::Config, as_own_role(&self.backends, Role::Gateway));
        config.objects = self.objects.clone();
        self.gateway = self
            .running
            .launch(gateway::Application::build(config).await);
    }

    async fn start_processor(&mut self) {
        let config = processor_config(as_own_role(&self.backends, Role::Processor));
        self.processor = self
            .running
            .launch(processor::Application::build(config).await);
    }

    async fn start_notifier(&mut self) {
        let config = notifier_config(as_own_role(&self.backends, Role::Notifier));
        self.notifier = self
            .running
            .launch(notifier::Application::build(config).await);
    }

    async fn start_imager(&mut self, fetch_private: bool) {
        let mut config =
            testkit::test_config!(imager::Config, as_own_role(&self.backends, Role::Imager));
        config.objects = self.objects.clone();
        config.allow_private_networks = fetch_private;
        config.backoff = testkit::sandbox::IMAGE_RETRY_DELAYS[0];
        config.fetch_timeout = Duration::from_secs(2);
        self.imager = self
            .running
            .launch(imager::Application::build(config).await);
    }

    async fn start_dashboard(&mut self, processor_url: String) {
        let mut config = testkit::test_config!(
            dashboard::Config,
            as_own_role(&self.backends, Role::Dashboard)
        );
        config.services = vec![
            ("gateway", format!("http://{}", self.gateway)),
            ("processor", processor_url),
            ("notifier", format!("http://{}", self.notifier)),
            ("imager", format!("http://{}", self.imager)),
        ];
        config.refresh = Duration::from_millis(250);
        self.dashboard = self
            .running
            .launch(dashboard::Application::build(config).await);
    }

    /// A URL of the dashboard.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.dashboard)
    }

    /// `GET` on the dashboard, with the key: the status and the JSON body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        testkit::http::get_json(&self.client, &self.url(path)).await
    }

    /// A webhook receiver (answering 200 to everything) subscribed at the notifier to `types`,
    /// and the subscription's signing secret.
    pub async fn subscriber(&self, types: &[&str]) -> (Receiver, String) {
        let receiver = Receiver::start(&[]).await;
        let notifier = format!("http://{}", self.notifier);
        let (_, secret) = receiver.subscribe(&self.client, &notifier, types).await;
        (receiver, secret)
    }

    /// A `POST` to `path` on the gateway with the key, of a JSON body the caller adds.
    pub fn post_json(&self, path: &str) -> reqwest::RequestBuilder {
        self.client
            .post(format!("http://{}{path}", self.gateway))
            .header("content-type", "application/json")
    }

    /// Sends a product update or an order to the gateway and expects 202.
    pub async fn send(&self, path: &str, body: &str) {
        let response = self
            .post_json(path)
            .body(body.to_owned())
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 202);
    }

    /// A product update for `product` set aside on the dead-letter queue, as one that failed
    /// every retry would be; replaying it applies it.
    pub async fn plant_dead_letter(&self, product: &str, event_id: &str) {
        let broker = testkit::broker::Broker::connect(&self.backends).await;
        let body = format!(
            r#"{{"event_id":"{event_id}","product_id":"{product}","stock":42,"occurred_at":"2026-01-01T00:00:00Z","received_at":"2026-01-01T00:00:00Z"}}"#
        );
        let shard = self.topology.shard_for(&product.parse().expect("valid"));
        broker
            .publish(
                &self.topology.dead_letter_exchange(),
                &Topology::routing_key(shard),
                body.as_bytes(),
                BasicProperties::default()
                    .with_type("product.update".into())
                    .with_message_id(event_id.into())
                    .with_headers(dead_letter_headers()),
            )
            .await;
    }

    /// A snapshot satisfying `check`.
    pub async fn snapshot_when(&self, check: impl Fn(&Value) -> bool) -> Value {
        testkit::wait::eventually("a snapshot in the expected state", WAIT, || async {
            let (status, snapshot) = self.get("/api/v1/snapshot").await;
            (status == 200 && check(&snapshot)).then_some(snapshot)
        })
        .await
    }

    /// Stops every service (each drains), then removes the namespace if the stack made it.
    pub async fn stop(mut self) {
        while !self.running.is_empty() {
            self.running.stop_last().await;
        }
        if let Some(sandbox) = self.sandbox.take() {
            sandbox.remove().await.expect("the namespace removed");
        }
        if let Some(folder) = &self.folder {
            let _ = std::fs::remove_dir_all(folder);
        }
    }
}

/// The headers the processor puts on an event that failed every rung of its retry ladder.
fn dead_letter_headers() -> FieldTable {
    let text = |s: &str| AMQPValue::LongString(s.into());
    let mut headers = FieldTable::default();
    headers.insert(
        contract::headers::DEAD_REASON.into(),
        text("attempts_exhausted"),
    );
    headers.insert(
        contract::headers::DEAD_ERROR.into(),
        text("could not serialize access due to concurrent update"),
    );
    headers.insert(contract::headers::DEAD_SERVICE.into(), text("processor"));
    headers.insert(
        contract::headers::ATTEMPTS.into(),
        AMQPValue::LongLongInt(4),
    );
    headers
}

#[cfg(test)]
mod tests {
    /// Asserts that every `$ref` in an OpenAPI document names a component it defines.
    fn assert_references_resolve(document: &serde_json::Value) {
        fn walk<'a>(value: &'a serde_json::Value, found: &mut Vec<&'a str>) {
            match value {
                serde_json::Value::Object(map) => {
                    if let Some(serde_json::Value::String(target)) = map.get("$ref") {
                        found.push(target);
                    }
                    map.values().for_each(|v| walk(v, found));
                }
                serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, found)),
                _ => {}
            }
        }
        let mut references = Vec::new();
        walk(document, &mut references);
        assert!(
            !references.is_empty(),
            "the document refers to no component"
        );
        for target in references {
            let pointer = target.strip_prefix('#').expect("a local reference");
            assert!(
                document.pointer(pointer).is_some(),
                "{target} is not defined"
            );
        }
    }

    /// Each service's OpenAPI document, as JSON.
    fn documents() -> [serde_json::Value; 4] {
        [
            gateway::openapi::document(),
            processor::openapi::document(),
            notifier::openapi::document(),
            imager::openapi::document(),
        ]
        .map(|document| serde_json::json!(document))
    }

    #[test]
    fn every_operation_of_each_document_has_an_id_of_its_own() {
        for value in documents() {
            let mut ids = Vec::new();
            for (path, item) in value["paths"].as_object().expect("paths") {
                let methods = ["get", "put", "post", "delete", "patch", "head", "options"];
                let item = item.as_object().expect("a path item");
                for (method, operation) in
                    item.iter().filter(|(m, _)| methods.contains(&m.as_str()))
                {
                    let id = operation["operationId"].as_str();
                    let id = id.unwrap_or_else(|| panic!("{method} {path} has no operationId"));
                    ids.push(id.to_owned());
                }
            }
            let mut unique = ids.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(
                unique.len(),
                ids.len(),
                "{}: {ids:?}",
                value["info"]["title"]
            );
        }
    }

    #[test]
    fn every_schema_and_answer_each_document_refers_to_is_in_it() {
        for document in documents() {
            let title = document["info"]["title"].as_str().unwrap_or_default();
            assert!(title.starts_with("Product event pipeline: "), "{title}");
            assert_references_resolve(&document);
        }
    }
}
