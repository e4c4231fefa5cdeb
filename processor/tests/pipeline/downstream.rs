//! Downstream events on the `{ns}.events` topic exchange, and their emission surviving a
//! processor that dies between commit and publish.

use std::time::Duration;

use lapin::Consumer;

use crate::helpers::{
    Pipeline, WAIT, downstream_of_order, downstream_of_update, spawn_pipeline, wait_inbox,
};

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

    // An event reaches its consumer once the broker has it; the processor forgets it on the
    // broker's confirm, a moment later.
    let pool = testkit::postgres::pool(&pipeline.backends).await;
    testkit::wait::eventually(
        "published events to leave the outbox",
        Duration::from_secs(10),
        || async {
            let left: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
                .fetch_one(&pool)
                .await
                .expect("count");
            (left == 0).then_some(())
        },
    )
    .await;
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn events_left_unpublished_by_a_crash_are_emitted_when_the_source_comes_back() {
    let pipeline = spawn_pipeline().await;
    pipeline
        .accept_keyed("crash-evt", r#"{"product_id": "crash-1", "stock": 7}"#)
        .await;
    wait_inbox(&pipeline, 1).await;
    let (_connection, mut consumer) = listen(&pipeline).await;
    // As a processor that died after its commit and before its publish would have left it.
    let pool = testkit::postgres::pool(&pipeline.backends).await;
    let id = downstream_of_update("crash-evt", "product.updated");
    sqlx::query(
        r#"INSERT INTO outbox (event_id, source_kind, source_owner, source_event_id, routing_key,
                             payload)
         VALUES ($1, 'product.update', 'tester', 'crash-evt', 'product.updated',
                 '{"type": "product.updated", "timestamp": "2026-01-01T00:00:00Z",
                   "data": {"source_event_id": "crash-evt", "product_id": "crash-1",
                            "old": {"price": null, "stock": null},
                            "new": {"price": null, "stock": 7}}}')"#,
    )
    .bind(&id)
    .execute(&pool)
    .await
    .expect("insert");
    // The unacknowledged source (sent with the test's key) is redelivered: a duplicate, which
    // still publishes.
    let broker = testkit::broker::Broker::connect(&pipeline.backends).await;
    let body = r#"{"event_id":"crash-evt","owner":"tester","product_id":"crash-1","stock":7,"occurred_at":"2026-01-01T00:00:00Z","received_at":"2026-01-01T00:00:00Z"}"#;
    pipeline.publish_update(&broker, "crash-1", body).await;
    let events = next_events(&mut consumer, 1).await;
    assert_eq!(events[0]["id"], id.as_str());
    testkit::wait::eventually("the outbox to drain", Duration::from_secs(10), || async {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&pool)
            .await
            .ok()?;
        (left == 0).then_some(())
    })
    .await;
    assert_eq!(pipeline.inbox_count().await, 1, "applied once");
    pipeline.stop().await;
}
