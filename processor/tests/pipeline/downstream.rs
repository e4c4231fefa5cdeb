//! Downstream events on the `{ns}.events` topic exchange, and their emission surviving a
//! processor that dies between commit and publish.

use lapin::Consumer;

use crate::helpers::{Pipeline, WAIT, downstream_of_order, downstream_of_update, spawn_pipeline};

/// A private queue bound to every downstream event.
async fn listen(pipeline: &Pipeline) -> (testkit::broker::Broker, Consumer) {
    let broker = testkit::broker::Broker::connect(&pipeline.backends).await;
    let consumer = broker
        .listen(&pipeline.topology.events_exchange(), "#")
        .await;
    (broker, consumer)
}

async fn next_events(consumer: &mut Consumer, n: usize) -> Vec<serde_json::Value> {
    let mut events = Vec::new();
    while events.len() < n {
        events.push(testkit::broker::Broker::next_json(consumer, WAIT).await);
    }
    events
}

/// A received event's body (the message id taken out).
fn without_id(event: &serde_json::Value) -> serde_json::Value {
    let mut body = event.clone();
    if let Some(fields) = body.as_object_mut() {
        fields.remove("id");
    }
    body
}

fn kinds(events: &[serde_json::Value]) -> Vec<&str> {
    let mut kinds: Vec<&str> = events
        .iter()
        .map(|e| e["type"].as_str().expect("type"))
        .collect();
    kinds.sort_unstable();
    kinds
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_and_orders_emit_downstream_events_with_old_and_new_values() {
    let pipeline = spawn_pipeline().await;
    let (_connection, mut consumer) = listen(&pipeline).await;

    pipeline
        .accept_keyed(
            "ds-a",
            r#"{"product_id": "ds-1", "price": 9.5, "stock": 12}"#,
        )
        .await;
    let first = next_events(&mut consumer, 1).await;
    assert_eq!(first[0]["type"], "product.updated");
    assert_eq!(
        first[0]["id"],
        downstream_of_update("ds-a", "product.updated").as_str()
    );
    assert_eq!(first[0]["data"]["old"]["stock"], serde_json::Value::Null);
    assert_eq!(first[0]["data"]["new"]["stock"], 12);
    assert_eq!(first[0]["data"]["new"]["price"].to_string(), "9.5");

    pipeline
        .accept_keyed("ds-b", r#"{"product_id": "ds-1", "stock": 5}"#)
        .await;
    let crossing = next_events(&mut consumer, 2).await;
    assert_eq!(kinds(&crossing), ["product.updated", "stock.low"]);
    let updated = crossing
        .iter()
        .find(|e| e["type"] == "product.updated")
        .expect("updated");
    assert_eq!(
        (
            updated["data"]["old"]["stock"].clone(),
            updated["data"]["new"]["stock"].clone()
        ),
        (12.into(), 5.into())
    );

    let order = |id: &str, qty: i64| format!(r#"{{"id": "{id}", "sku": "ds-1", "qty": {qty}}}"#);
    for (id, qty) in [("ds-o1", 2), ("ds-o2", 100)] {
        let response = pipeline
            .client
            .post(format!("http://{}/orders", pipeline.gateway))
            .header("content-type", "application/json")
            .body(order(id, qty))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 202);
    }
    let orders = next_events(&mut consumer, 3).await;
    assert_eq!(
        kinds(&orders),
        ["order.created", "order.rejected", "product.updated"]
    );
    let rejected = orders
        .iter()
        .find(|e| e["type"] == "order.rejected")
        .expect("rejected");
    assert_eq!(rejected["data"]["reason"], "insufficient_stock");
    assert_eq!(
        rejected["id"],
        downstream_of_order("ds-o2", "order.rejected").as_str()
    );

    // Each event's inbox row keeps what it caused, as it was published, to publish again if
    // the event comes back.
    let pool = testkit::postgres::pool(&pipeline.backends).await;
    let kept: Vec<String> = sqlx::query_scalar(
        "SELECT a FROM processed_events, unnest(announcements) a WHERE event_id = 'ds-b'",
    )
    .fetch_all(&pool)
    .await
    .expect("read");
    let published: Vec<serde_json::Value> = crossing.iter().map(without_id).collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    for body in &kept {
        let body: serde_json::Value = serde_json::from_str(body).expect("JSON");
        assert!(published.contains(&body), "{body} in {published:?}");
    }
    pipeline.stop().await;
}

/// The source of a product update by the test's key, as the gateway publishes it.
const CRASH_SOURCE: &str = r#"{"event_id":"crash-evt","owner":"tester","product_id":"crash-1","stock":7,"occurred_at":"2026-01-01T00:00:00Z","received_at":"2026-01-01T00:00:00Z"}"#;

/// Records `crash-evt` in the inbox with `announcements` kept, as a processor that died after
/// its commit and before its publish would have left it.
async fn applied_and_not_published(pool: &sqlx::PgPool, announcements: &[&str]) {
    sqlx::query(
        "INSERT INTO processed_events (event_id, kind, owner, product_id, occurred_at,
                                       received_at, announcements)
         VALUES ('crash-evt', 'product.update', 'tester', 'crash-1', now(), now(), $1)",
    )
    .bind(announcements)
    .execute(pool)
    .await
    .expect("insert");
}

#[tokio::test(flavor = "multi_thread")]
async fn events_left_unpublished_by_a_crash_are_emitted_when_the_source_comes_back() {
    let pipeline = spawn_pipeline().await;
    let (_connection, mut consumer) = listen(&pipeline).await;
    let pool = testkit::postgres::pool(&pipeline.backends).await;
    let kept = r#"{"type":"product.updated","timestamp":"2026-01-01T00:00:00Z","data":{"source_event_id":"crash-evt","product_id":"crash-1","old":{"price":null,"stock":null},"new":{"price":null,"stock":7}}}"#;
    applied_and_not_published(&pool, &[kept]).await;
    // The unacknowledged source (sent with the test's key) is redelivered: a duplicate, which
    // publishes what its row keeps, under the id it was first published with.
    let broker = testkit::broker::Broker::connect(&pipeline.backends).await;
    pipeline
        .publish_update(&broker, "crash-1", CRASH_SOURCE)
        .await;
    let events = next_events(&mut consumer, 1).await;
    assert_eq!(
        events[0]["id"],
        downstream_of_update("crash-evt", "product.updated").as_str()
    );
    let body: serde_json::Value = serde_json::from_str(kept).expect("JSON");
    assert_eq!(without_id(&events[0]), body);
    assert_eq!(pipeline.inbox_count().await, 1, "applied once");
    // And so does every later duplicate (consumers drop an id they have seen).
    pipeline
        .publish_update(&broker, "crash-1", CRASH_SOURCE)
        .await;
    let again = next_events(&mut consumer, 1).await;
    assert_eq!(again[0]["id"], events[0]["id"]);
    assert_eq!(pipeline.inbox_count().await, 1, "applied once");
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kept_event_this_version_cannot_read_is_dead_lettered_and_the_shard_moves_on() {
    let pipeline = spawn_pipeline().await;
    let pool = testkit::postgres::pool(&pipeline.backends).await;
    applied_and_not_published(&pool, &[r#"{"type":"product.renamed","data":{}}"#]).await;
    let broker = testkit::broker::Broker::connect(&pipeline.backends).await;
    pipeline
        .publish_update(&broker, "crash-1", CRASH_SOURCE)
        .await;
    let dead = pipeline.dead_letters(1).await;
    assert_eq!(dead[0]["reason"], "unparseable", "{dead:?}");
    assert_eq!(dead[0]["routing_key"], "product.renamed");
    // The source was settled: the shard applies what comes next.
    pipeline
        .accept(r#"{"product_id": "crash-1", "stock": 8}"#)
        .await;
    pipeline.product_when("crash-1", |p| p["stock"] == 8).await;
    pipeline.stop().await;
}
