//! Exactly once under redelivery: duplicates straight to the broker, poison messages, and a
//! processor killed mid-stream.

use std::collections::HashMap;

use lapin::BasicProperties;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::helpers::{self, WAIT, spawn_pipeline, wait_inbox};

fn update(event_id: &str, product: &str, stock: i64) -> String {
    let now = OffsetDateTime::now_utc().format(&Rfc3339).expect("formats");
    format!(
        r#"{{"event_id":"{event_id}","product_id":"{product}","stock":{stock},"occurred_at":"{now}","received_at":"{now}"}}"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_duplicate_published_twice_straight_to_the_broker_applies_once() {
    let pipeline = spawn_pipeline().await;
    let before = pipeline.duplicates().await;
    let broker = testkit::broker::Broker::connect(&pipeline.backends).await;
    let body = update("dup-event", "dup-1", 5);
    let mut shard = 0;
    for _ in 0..2 {
        shard = pipeline.publish_update(&broker, "dup-1", &body).await;
    }
    pipeline.wait_duplicate(before).await;
    wait_inbox(&pipeline, 1).await;
    assert_eq!(pipeline.product("dup-1").await.expect("exists")["stock"], 5);
    assert_eq!(broker.depth(&pipeline.topology.shard_queue(shard)).await, 0);
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poison_message_is_set_aside_with_its_reason_and_its_shard_keeps_flowing() {
    let pipeline = spawn_pipeline().await;
    let broker = testkit::broker::Broker::connect(&pipeline.backends).await;
    let shard = pipeline
        .topology
        .shard_for(&"after-poison".parse().expect("valid"));
    let routing_key = shared::topology::Topology::routing_key(shard);
    let exchange = pipeline.topology.ingest_exchange();
    broker
        .publish(
            &exchange,
            &routing_key,
            b"\x00not json{",
            BasicProperties::default(),
        )
        .await;
    let negative = update("bad-stock", "after-poison", -5);
    broker
        .publish(
            &exchange,
            &routing_key,
            negative.as_bytes(),
            BasicProperties::default(),
        )
        .await;
    pipeline
        .accept(r#"{"product_id": "after-poison", "stock": 9}"#)
        .await;
    pipeline
        .product_when("after-poison", |p| p["stock"] == 9)
        .await;

    let dead = pipeline.dead_letters(2).await;
    let mut reasons: Vec<&str> = dead
        .iter()
        .map(|d| d["reason"].as_str().expect("reason"))
        .collect();
    reasons.sort_unstable();
    assert_eq!(reasons, ["invalid", "unparseable"]);
    for item in &dead {
        assert_eq!(item["routing_key"], routing_key.as_str());
        assert_eq!(item["service"], "processor");
        assert_eq!(item["attempts"], 0);
        assert!(item["error"].as_str().is_some_and(|e| !e.is_empty()));
        assert!(
            OffsetDateTime::parse(item["first_failed_at"].as_str().expect("time"), &Rfc3339)
                .is_ok()
        );
    }
    let invalid = dead
        .iter()
        .find(|d| d["reason"] == "invalid")
        .expect("invalid one");
    assert_eq!(invalid["event_id"], "bad-stock");
    assert_eq!(invalid["product_id"], "after-poison");
    assert_eq!(
        broker.depth(&pipeline.topology.dead_letter_queue()).await,
        0,
        "taken off the queue"
    );
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_processor_killed_mid_stream_and_restarted_loses_and_doubles_nothing() {
    const EVENTS: i64 = 2000;
    const PRODUCTS: i64 = 20;
    let sandbox = testkit::sandbox::Sandbox::new();
    let pipeline = helpers::spawn_gateway_only(sandbox.backends()).await;
    // The model: each product's last stock by occurred_at (events are numbered in time order).
    let mut expected = HashMap::new();
    let base = OffsetDateTime::now_utc() - time::Duration::hours(1);
    for i in 0..EVENTS {
        let product = format!("kill-{}", i % PRODUCTS);
        let at = (base + time::Duration::milliseconds(i))
            .format(&Rfc3339)
            .expect("formats");
        let body = format!(r#"{{"product_id": "{product}", "stock": {i}, "occurred_at": "{at}"}}"#);
        pipeline.accept_keyed(&format!("kill-evt-{i}"), &body).await;
        expected.insert(product, i);
    }

    let mut child = helpers::processor_process(&pipeline.backends);
    testkit::wait::eventually("the processor to apply some events", WAIT, || async {
        (pipeline.inbox_count().await >= 50).then_some(())
    })
    .await;
    child.start_kill().expect("SIGKILL");
    child.wait().await.expect("reaped");
    let applied_at_kill = pipeline.inbox_count().await;
    assert!(
        applied_at_kill < EVENTS,
        "killed too late to prove anything"
    );

    let mut restarted = helpers::processor_process(&pipeline.backends);
    wait_inbox(&pipeline, EVENTS).await;
    for (product, stock) in &expected {
        let state = pipeline
            .product_when(product, |p| p["stock"] == *stock)
            .await;
        assert_eq!(state["stock"], *stock, "{product}");
    }
    let pool = testkit::postgres::pool(&pipeline.backends).await;
    let doubled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT event_id FROM processed_events GROUP BY event_id HAVING count(*) > 1) d",
    )
    .fetch_one(&pool)
    .await
    .expect("query");
    assert_eq!(doubled, 0);
    restarted.start_kill().expect("stop the processor");
    restarted.wait().await.expect("reaped");
    pipeline.stop().await;
}
