//! `spawn_notifier()`: a notifier built through its production `Application::build` on port
//! 0, in a fresh namespace, with a short retry schedule; and what the tests do with it.

use std::{net::SocketAddr, time::Duration};

use lapin::BasicProperties;
use serde_json::{Value, json};
use shared::{config::Backends, contract::headers, topology::Topology};
use testkit::{http::answer, in_process::InProcess, sandbox::Sandbox, webhooks::Receiver};

pub const WAIT: Duration = Duration::from_secs(30);
/// The retry schedule of the tests: two retries, quickly.
pub const SCHEDULE: [Duration; 2] = [Duration::from_millis(100), Duration::from_millis(200)];

pub struct Notifier {
    pub backends: Backends,
    pub topology: Topology,
    pub client: reqwest::Client,
    pub addr: SocketAddr,
    pub broker: testkit::broker::Broker,
    running: InProcess,
    /// The namespace, when the notifier made it ([`spawn_notifier_with`]).
    sandbox: Option<Sandbox>,
}

/// A ready notifier that disables a subscription after `disable_after` failed deliveries
/// (webhooks may reach this machine, where the test receivers are).
pub async fn spawn_notifier(disable_after: i32) -> Notifier {
    spawn_notifier_with(|config| config.disable_after = disable_after).await
}

/// A ready notifier in a namespace of its own, with the test configuration changed by `adjust`.
pub async fn spawn_notifier_with(adjust: impl FnOnce(&mut notifier::Config)) -> Notifier {
    let sandbox = Sandbox::new();
    let mut notifier = spawn_notifier_on(sandbox.backends(), adjust).await;
    notifier.sandbox = Some(sandbox);
    notifier
}

/// A ready notifier on `backends` (and their namespace, the caller's), the test configuration
/// changed by `adjust`.
pub async fn spawn_notifier_on(
    backends: Backends,
    adjust: impl FnOnce(&mut notifier::Config),
) -> Notifier {
    let mut config = testkit::test_config!(notifier::Config, backends.clone());
    config.webhook_timeout = Duration::from_secs(2);
    config.retry_schedule = SCHEDULE.to_vec();
    config.poll_interval = Duration::from_millis(50);
    config.allow_private_networks = true;
    adjust(&mut config);
    let mut running = InProcess::default();
    let addr = running.launch(notifier::Application::build(config).await);
    let client = testkit::keys::authorized_client(&backends.namespace).await;
    testkit::wait::until_ready(&client, &format!("http://{addr}"), WAIT).await;
    Notifier {
        topology: Topology::new(backends.namespace.clone(), backends.ingest_shards),
        broker: testkit::broker::Broker::connect(&backends).await,
        backends,
        client,
        addr,
        running,
        sandbox: None,
    }
}

impl Notifier {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Subscribes `url` to `types`; the subscription's id and secret.
    pub async fn subscribe(&self, url: &str, types: &[&str]) -> (String, String) {
        testkit::webhooks::subscribe(&self.client, &self.url(""), url, types).await
    }

    /// A new receiver, subscribed to `types`.
    pub async fn receiver_for(&self, types: &[&str]) -> Receiver {
        let receiver = Receiver::start(&[]).await;
        self.subscribe(&receiver.url(), types).await;
        receiver
    }

    /// Publishes a downstream event of type `kind` with id `id` as the processor does; its body.
    pub async fn emit(&self, id: &str, kind: &str) -> String {
        self.try_emit(id, kind)
            .await
            .expect("the notifier queue took the event")
    }

    /// [`Self::emit`], but `Err` if no queue took the event.
    pub async fn try_emit(&self, id: &str, kind: &str) -> anyhow::Result<String> {
        let order = |reason: Value| {
            json!({ "source_event_id": "order:o-1", "order_id": "o-1", "sku": "s-1", "qty": 1,
                    "email": null, "reason": reason })
        };
        let data = match kind {
            "product.updated" => json!({ "source_event_id": "src", "product_id": "s-1",
                "old": { "price": null, "stock": null }, "new": { "price": 1.5, "stock": 3 } }),
            "stock.low" => json!({ "source_event_id": "src", "product_id": "s-1", "stock": 3,
                "threshold": 10 }),
            "order.rejected" => order(json!("insufficient_stock")),
            _ => order(Value::Null),
        };
        let body =
            json!({ "type": kind, "timestamp": "2026-01-01T00:00:00Z", "data": data }).to_string();
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_message_id(id.into());
        self.broker
            .try_publish(
                &self.topology.events_exchange(),
                kind,
                body.as_bytes(),
                properties,
            )
            .await?;
        Ok(body)
    }

    /// Publishes `body` to the events exchange, with `message_id` if given.
    pub async fn emit_raw(&self, routing_key: &str, message_id: Option<&str>, body: &[u8]) {
        let mut properties =
            BasicProperties::default().with_content_type("application/json".into());
        if let Some(id) = message_id {
            properties = properties.with_message_id(id.into());
        }
        self.broker
            .publish(
                &self.topology.events_exchange(),
                routing_key,
                body,
                properties,
            )
            .await;
    }

    /// Binds the notifier queue to `routing_key` behind the notifier's back.
    pub async fn bind(&self, routing_key: &str) {
        self.broker
            .channel()
            .await
            .queue_bind(
                self.topology.notifier_queue().into(),
                self.topology.events_exchange().into(),
                routing_key.into(),
                lapin::options::QueueBindOptions::default(),
                lapin::types::FieldTable::default(),
            )
            .await
            .expect("bound");
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        answer(self.client.get(self.url(path))).await
    }

    pub async fn post(&self, path: &str) -> (u16, Value) {
        answer(self.client.post(self.url(path))).await
    }

    /// `POST path` with the JSON `body`: the status and the answer.
    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        answer(self.client.post(self.url(path)).json(body)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        answer(self.client.delete(self.url(path))).await
    }

    /// Subscribes an endpoint nothing listens on to `kind`, emits the event `id` of that type
    /// and waits until its delivery has failed: the subscription's id and that delivery.
    pub async fn failed_at_unreachable(&self, id: &str, kind: &str) -> (String, Value) {
        let down = testkit::ports::closed_port_url("http");
        let (subscription, _) = self.subscribe(&down, &[kind]).await;
        self.emit(id, kind).await;
        let notification = self.settled(id).await;
        let delivery = &notification["deliveries"][0];
        assert_eq!(delivery["status"], "failed", "{notification}");
        (subscription, delivery.clone())
    }

    /// Asserts that the subscription `id` is disabled, saying why; why.
    pub async fn assert_disabled(&self, id: &str) -> String {
        let (_, subscription) = self.get(&format!("/subscriptions/{id}")).await;
        assert_eq!(subscription["status"], "disabled", "{subscription}");
        subscription["disabled_reason"]
            .as_str()
            .expect("a reason")
            .to_owned()
    }

    /// Takes the next dead letter, asserting that it holds `body` and was dead-lettered for
    /// `reason`; its properties (read a header with [`shared::dead_letter::text_header`]).
    pub async fn take_dead_letter(&self, body: &[u8], reason: &str) -> BasicProperties {
        let dead = self.topology.dead_letter_queue();
        let message = self.broker.take(&dead).await.expect("dead letter");
        assert_eq!(message.data, body);
        let why = shared::dead_letter::text_header(&message.properties, headers::DEAD_REASON);
        assert_eq!(why.as_deref(), Some(reason));
        message.properties
    }

    /// Waits until the notification of `event_id` is recorded and every delivery of it is
    /// settled (not pending); the notification.
    pub async fn settled(&self, event_id: &str) -> Value {
        testkit::wait::eventually(&format!("{event_id} to be settled"), WAIT, || async {
            let (status, body) = self.get(&format!("/notifications/{event_id}")).await;
            let settled = status == 200
                && body["deliveries"]
                    .as_array()?
                    .iter()
                    .all(|d| d["status"] != "pending");
            settled.then_some(body)
        })
        .await
    }

    /// Asks it to stop and waits until it has drained, then removes the namespace if the
    /// notifier made it.
    pub async fn stop(mut self) {
        self.running.stop_last().await;
        if let Some(sandbox) = self.sandbox.take() {
            sandbox.remove().await.expect("the namespace removed");
        }
    }
}

/// True when `received`'s `webhook-signature` holds a signature made with `secret`.
pub fn signed_with(received: &testkit::webhooks::Received, secret: &str) -> bool {
    let id = received.header("webhook-id");
    let Ok(timestamp) = received.header("webhook-timestamp").parse::<i64>() else {
        return false;
    };
    let expected = notifier::signing::sign(secret, id, timestamp, &received.body);
    received
        .header("webhook-signature")
        .split(' ')
        .any(|s| s == expected)
}
