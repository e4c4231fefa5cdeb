//! `spawn_notifier()`: a notifier built through its production `Application::build` on port
//! 0, in a fresh namespace, with a short retry schedule; and what the tests do with it.

use std::{net::SocketAddr, time::Duration};

use lapin::BasicProperties;
use serde_json::{Value, json};
use shared::{config::Backends, topology::Topology};
use tokio::{sync::oneshot, task::JoinHandle};

pub const WAIT: Duration = Duration::from_secs(30);
/// The retry schedule of the tests: two retries, quickly.
pub const SCHEDULE: [Duration; 2] = [Duration::from_millis(100), Duration::from_millis(200)];

pub struct Notifier {
    pub backends: Backends,
    pub topology: Topology,
    pub client: reqwest::Client,
    pub addr: SocketAddr,
    pub broker: testkit::Broker,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

/// A ready notifier that disables a subscription after `disable_after` failed deliveries.
pub async fn spawn_notifier(disable_after: i32) -> Notifier {
    let backends = testkit::backends();
    let config = notifier::Config {
        addr: "127.0.0.1:0".parse().expect("valid address"),
        backends: backends.clone(),
        prefetch: 8,
        shutdown_deadline: Duration::from_secs(5),
        webhook_timeout: Duration::from_secs(2),
        retry_schedule: SCHEDULE.to_vec(),
        concurrency: 4,
        disable_after,
        poll_interval: Duration::from_millis(50),
    };
    let app = notifier::Application::build(config)
        .await
        .expect("notifier builds");
    let addr = app.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    testkit::eventually("the notifier to be ready", WAIT, || async {
        let r = client
            .get(format!("http://{addr}/ready"))
            .send()
            .await
            .ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    Notifier {
        topology: Topology::new(backends.namespace.clone(), backends.ingest_shards),
        broker: testkit::Broker::connect(&backends).await,
        backends,
        client,
        addr,
        stop,
        task,
    }
}

impl Notifier {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Subscribes `url` to `types`; the subscription's id and secret.
    pub async fn subscribe(&self, url: &str, types: &[&str]) -> (String, String) {
        let response = self
            .client
            .post(self.url("/subscriptions"))
            .json(&json!({ "url": url, "event_types": types }))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.expect("JSON");
        (
            body["id"].as_str().expect("id").to_owned(),
            body["secret"].as_str().expect("secret").to_owned(),
        )
    }

    /// Publishes a downstream event as the processor does; its body.
    pub async fn emit(&self, id: &str, kind: &str) -> String {
        let body =
            json!({ "id": id, "type": kind, "source_event_id": "src", "sku": "s-1" }).to_string();
        self.emit_raw(kind, body.as_bytes()).await;
        body
    }

    pub async fn emit_raw(&self, routing_key: &str, body: &[u8]) {
        self.broker
            .publish(
                &self.topology.events_exchange(),
                routing_key,
                body,
                BasicProperties::default().with_content_type("application/json".into()),
            )
            .await;
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(self.url(path)).send().await.expect("sent");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str) -> (u16, Value) {
        let response = self.client.post(self.url(path)).send().await.expect("sent");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Waits until the notification of `event_id` is recorded and every delivery of it is
    /// settled (not pending); the notification.
    pub async fn settled(&self, event_id: &str) -> Value {
        testkit::eventually(&format!("{event_id} to be settled"), WAIT, || async {
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

    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("task").expect("stops cleanly");
        testkit::cleanup(&self.backends).await.expect("clean-up");
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
