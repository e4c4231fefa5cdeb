//! Downstream events on the `{ns}.events` topic exchange, and their emission surviving a
//! processor that dies between commit and publish.

use std::time::Duration;

use lapin::Consumer;
use processor::{
    shards::Fence,
    store::{self, StoreError},
};
use shared::{config::Backends, contract::Ingest};
use sqlx::PgPool;

use crate::helpers::{
    Pipeline, WAIT, announcements, claim_the_shard, downstream_of_order, downstream_of_update,
    one_shard, spawn_pipeline,
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

/// The next event as it was sent: its message id and its body's bytes.
async fn next_as_sent(consumer: &mut Consumer) -> (String, Vec<u8>) {
    let delivery = testkit::broker::Broker::next(consumer, WAIT).await;
    let id = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|m| m.to_string());
    (id.unwrap_or_default(), delivery.data)
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
async fn applied_and_not_published(pipeline: &Pipeline, announcements: &[&str]) {
    let pool = testkit::postgres::pool(&pipeline.backends).await;
    sqlx::query(
        "INSERT INTO processed_events (event_id, kind, owner, product_id, occurred_at,
                                       received_at, announcements)
         VALUES ('crash-evt', 'product.update', 'tester', 'crash-1', now(), now(), $1)",
    )
    .bind(announcements)
    .execute(&pool)
    .await
    .expect("insert");
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn events_left_unpublished_by_a_crash_are_emitted_when_the_source_comes_back() {
    let pipeline = spawn_pipeline().await;
    let (_connection, mut consumer) = listen(&pipeline).await;
    // Spaced as this version would not write it: what is published is what was kept.
    let kept = r#"{"type": "product.updated", "timestamp": "2026-01-01T00:00:00Z", "data": {"source_event_id": "crash-evt", "product_id": "crash-1", "old": {"price": null, "stock": null}, "new": {"price": null, "stock": 7}}}"#;
    applied_and_not_published(&pipeline, &[kept]).await;
    // The unacknowledged source (sent with the test's key) is redelivered: a duplicate, which
    // publishes what its row keeps, byte for byte, under the id it was first published with.
    let broker = testkit::broker::Broker::connect(&pipeline.backends).await;
    pipeline
        .publish_update(&broker, "crash-1", CRASH_SOURCE)
        .await;
    let first = downstream_of_update("crash-evt", "product.updated");
    let (id, sent) = next_as_sent(&mut consumer).await;
    assert_eq!(id, first.as_str());
    assert_eq!(String::from_utf8_lossy(&sent), kept);
    assert_eq!(pipeline.inbox_count().await, 1, "applied once");
    // And so does every later duplicate (consumers drop an id they have seen).
    pipeline
        .publish_update(&broker, "crash-1", CRASH_SOURCE)
        .await;
    let again = next_events(&mut consumer, 1).await;
    assert_eq!(again[0]["id"], first.as_str());
    assert_eq!(pipeline.inbox_count().await, 1, "applied once");
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kept_event_this_version_cannot_read_is_dead_lettered_and_the_shard_moves_on() {
    let pipeline = spawn_pipeline().await;
    applied_and_not_published(&pipeline, &[r#"{"type":"product.renamed","data":{}}"#]).await;
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
    // Set aside once, not once per return of a source that was never settled.
    pipeline.dead_letters(1).await;
    pipeline.stop().await;
}

/// The sandbox's schema with its one shard, and this test's fence on it: batches applied
/// straight through the store.
async fn fenced(backends: &Backends) -> (PgPool, Fence) {
    let pool = one_shard(backends).await;
    let fence = claim_the_shard(&pool, "me", Duration::from_secs(60)).await;
    (pool, fence)
}

/// A product update by the test's key with these fields, occurred at that minute.
fn update(id: &str, fields: &str, minute: u8) -> Ingest {
    let at = format!("2026-01-01T00:{minute:02}:00Z");
    let body = format!(
        r#"{{"event_id": "{id}", "owner": "tester", {fields}, "occurred_at": "{at}", "received_at": "{at}"}}"#
    );
    Ingest::decode(Some("product.update"), body.as_bytes()).expect("valid")
}

#[tokio::test(flavor = "multi_thread")]
async fn each_inbox_row_of_a_batch_keeps_exactly_the_events_its_event_caused() {
    let sandbox = testkit::sandbox::Sandbox::new();
    let (pool, fence) = fenced(&sandbox.backends()).await;
    // Two events, one, none (stale) and one, in one batch: the rows' slices of one array.
    let items = [
        update("mix-1", r#""product_id": "mix-a", "stock": 20"#, 1),
        update("mix-2", r#""product_id": "mix-a", "stock": 5"#, 3),
        update("mix-3", r#""product_id": "mix-a", "stock": 9"#, 2),
        update("mix-4", r#""product_id": "mix-b", "price": 4.5"#, 1),
    ];
    let batch = store::apply(&pool, &items, 10, &fence)
        .await
        .expect("applied");
    let kept = announcements(&pool).await;
    let caused = |id: &str| -> Option<Vec<String>> {
        let bodies: Vec<String> = batch
            .emitted
            .iter()
            .filter(|e| e.source.id.as_str() == id)
            .map(|e| String::from_utf8(e.announcement.body()).expect("UTF-8"))
            .collect();
        (!bodies.is_empty()).then_some(bodies)
    };
    let types = |bodies: &Option<Vec<String>>| -> Vec<String> {
        bodies
            .iter()
            .flatten()
            .map(|b| {
                serde_json::from_str::<serde_json::Value>(b).expect("JSON")["type"].to_string()
            })
            .collect()
    };
    assert_eq!(
        kept.iter()
            .map(|(id, bodies)| (id.as_str(), types(bodies)))
            .collect::<Vec<_>>(),
        [
            ("mix-1", vec![r#""product.updated""#.to_owned()]),
            (
                "mix-2",
                vec![
                    r#""product.updated""#.to_owned(),
                    r#""stock.low""#.to_owned()
                ]
            ),
            ("mix-3", vec![]),
            ("mix-4", vec![r#""product.updated""#.to_owned()]),
        ]
    );
    for (id, bodies) in &kept {
        assert_eq!(*bodies, caused(id), "{id}: the bytes published");
    }
    // Again: every event a duplicate, nothing written, nothing new caused.
    let again = store::apply(&pool, &items, 10, &fence)
        .await
        .expect("applied");
    assert!(
        again
            .outcomes
            .iter()
            .all(|o| *o == store::Outcome::Duplicate)
    );
    assert!(again.emitted.is_empty());
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_another_transaction_records_meanwhile_leaves_the_batch_unwritten() {
    let sandbox = testkit::sandbox::Sandbox::new();
    let backends = sandbox.backends();
    let (pool, fence) = fenced(&backends).await;
    // Another transaction records the event (as one on another shard would, for the same id
    // sent for another product) and has not committed yet.
    let mut other = pool.begin().await.expect("begin");
    sqlx::query(
        "INSERT INTO processed_events (event_id, kind, owner, product_id, occurred_at,
                                       received_at)
         VALUES ('same', 'product.update', 'tester', 'elsewhere', now(), now())",
    )
    .execute(&mut *other)
    .await
    .expect("recorded");
    let items = [update("same", r#""product_id": "race-a", "stock": 3"#, 1)];
    let applying = tokio::spawn({
        let (pool, items, fence) = (pool.clone(), items.clone(), fence.clone());
        async move { store::apply(&pool, &items, 10, &fence).await }
    });
    // The batch found the event new, and its insert waits on the other's row.
    testkit::wait::eventually("the batch to wait on the other's row", WAIT, || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE application_name = $1 AND wait_event_type = 'Lock'
               AND query LIKE 'INSERT INTO processed_events%'",
        )
        .bind(backends.namespace.as_str())
        .fetch_one(&pool)
        .await
        .ok()?;
        (waiting == 1).then_some(())
    })
    .await;
    other.commit().await.expect("committed");
    let raced = applying.await.expect("joined");
    assert!(matches!(raced, Err(StoreError::Raced)), "{raced:?}");
    let created: i64 =
        sqlx::query_scalar("SELECT count(*) FROM products WHERE product_id = 'race-a'")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(created, 0, "nothing of the batch written");
    // Retried, as a hold does, it is a duplicate.
    let again = store::apply(&pool, &items, 10, &fence)
        .await
        .expect("applied");
    assert_eq!(again.outcomes, [store::Outcome::Duplicate]);
    pool.close().await;
}
