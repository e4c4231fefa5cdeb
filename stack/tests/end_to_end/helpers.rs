//! What the end-to-end tests share: sending through the gateway and waiting for what follows,
//! and the ids the downstream events of a source get.

use std::{net::SocketAddr, time::Duration};

use serde_json::Value;
use shared::config::Backends;
use stack::WAIT;

/// The processors' shard lease in these tests: a killed replica's shards are taken over within
/// it.
pub const TEST_LEASE: Duration = Duration::from_secs(4);

/// Posts `body` to the gateway at `gateway` with `Idempotency-Key: key`, and expects 202.
pub async fn accept_keyed(client: &reqwest::Client, gateway: SocketAddr, key: &str, body: &str) {
    let response = client
        .post(format!("http://{gateway}/events"))
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(body.to_owned())
        .send()
        .await
        .expect("sent");
    let status = response.status();
    assert_eq!(status, 202, "{}", response.text().await.unwrap_or_default());
}

/// Waits until product `id`, read through the gateway at `gateway`, satisfies `check`; the
/// product.
pub async fn product_when(
    client: &reqwest::Client,
    gateway: SocketAddr,
    id: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let url = format!("http://{gateway}/products/{id}");
    testkit::wait::eventually(
        &format!("product {id} to reach the expected state"),
        WAIT,
        || async {
            let (status, product) = testkit::http::get_json(client, &url).await;
            (status == 200 && check(&product)).then_some(product)
        },
    )
    .await
}

/// Events recorded in the processor's inbox.
pub async fn inbox_count(backends: &Backends) -> i64 {
    testkit::postgres::inbox_count(backends).await
}

/// Waits until the inbox holds exactly `n` events.
pub async fn wait_inbox(backends: &Backends, n: i64) {
    testkit::wait::eventually(&format!("{n} events in the inbox"), WAIT, || async {
        (inbox_count(backends).await == n).then_some(())
    })
    .await;
}

/// The notification of `event_id` at the notifier at `notifier`, once its deliveries are
/// settled.
pub async fn settled(client: &reqwest::Client, notifier: SocketAddr, event_id: &str) -> Value {
    let url = format!("http://{notifier}/notifications/{event_id}");
    testkit::wait::eventually(&format!("{event_id} to be delivered"), WAIT, || async {
        let (status, body) = testkit::http::get_json(client, &url).await;
        let deliveries = body["deliveries"].as_array()?;
        let done = !deliveries.is_empty() && deliveries.iter().all(|d| d["status"] != "pending");
        (status == 200 && done).then_some(body)
    })
    .await
}

/// The id of the downstream event of `event_type` caused by the `kind` event `id` that the key
/// named `owner` sent.
fn downstream_of(
    owner: &str,
    kind: shared::contract::IngestKind,
    id: String,
    event_type: &str,
) -> String {
    let source = shared::contract::EventKey {
        kind,
        owner: owner.parse().expect("a valid owner"),
        id: id.parse().expect("a valid event id"),
    };
    let event_type = shared::contract::EventType::parse(event_type).expect("a known event type");
    shared::contract::DownstreamId::of(&source, event_type).to_string()
}

/// The id of the downstream event of `event_type` caused by the product update `source` that
/// the key named `owner` sent.
pub fn downstream_of_update(owner: &str, source: &str, event_type: &str) -> String {
    use shared::contract::IngestKind::ProductUpdate;
    downstream_of(owner, ProductUpdate, source.to_owned(), event_type)
}

/// The id of the downstream event of `event_type` caused by the order `order_id` that the key
/// named `owner` placed.
pub fn downstream_of_order(owner: &str, order_id: &str, event_type: &str) -> String {
    use shared::contract::IngestKind::OrderCreate;
    downstream_of(owner, OrderCreate, format!("order:{order_id}"), event_type)
}
