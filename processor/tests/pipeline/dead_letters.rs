//! The retry ladder, dead letters you can act on (list, filter, inspect, replay, purge), and the
//! delivery limit as the safety net.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::{
    BasicProperties,
    options::{BasicConsumeOptions, BasicRejectOptions},
    types::FieldTable,
};
use serde_json::json;

use crate::helpers::{Pipeline, spawn_gateway_only, spawn_pipeline, wait_inbox};

/// Makes every write of `product` fail in PostgreSQL with `errcode` (`P0001`: a failure that
/// may pass later; `check_violation`: a refusal), then sends an update of it keyed
/// `{product}-evt`; the pool it sabotaged through.
async fn send_sabotaged(pipeline: &Pipeline, product: &str, errcode: &str) -> sqlx::PgPool {
    let pool = testkit::postgres::pool(&pipeline.backends).await;
    testkit::sabotage::writes(
        &pool,
        &format!("sabotage_{product}"),
        "BEFORE INSERT OR UPDATE ON products",
        &format!("NEW.product_id = '{product}'"),
        errcode,
        &format!("sabotaged {product}"),
    )
    .await;
    let body = format!(r#"{{"product_id": "{product}", "stock": 1}}"#);
    pipeline
        .accept_keyed(&format!("{product}-evt"), &body)
        .await;
    pool
}

async fn repair(pool: &sqlx::PgPool, product: &str) {
    let drop = format!("DROP TRIGGER sabotage_{product} ON products");
    sqlx::query(sqlx::AssertSqlSafe(drop))
        .execute(pool)
        .await
        .expect("drop trigger");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_event_climbs_the_retry_ladder_without_blocking_its_shard_then_replays() {
    let pipeline = spawn_pipeline().await;
    let pool = send_sabotaged(&pipeline, "flaky", "P0001").await;
    // Another product on the same shard is applied while the failing one waits on the ladder.
    let flaky_shard = pipeline
        .topology
        .shard_for(&"flaky".parse().expect("valid"));
    let neighbour = (0..100)
        .map(|i| format!("neighbour-{i}"))
        .find(|p| pipeline.topology.shard_for(&p.parse().expect("valid")) == flaky_shard)
        .expect("some product shares the shard");
    pipeline
        .accept(&format!(r#"{{"product_id": "{neighbour}", "stock": 2}}"#))
        .await;
    pipeline.product_when(&neighbour, |p| p["stock"] == 2).await;

    let dead = pipeline.dead_letters(1).await;
    assert_eq!(dead[0]["reason"], "attempts_exhausted");
    assert_eq!(dead[0]["attempts"], 4, "first try plus three retries");
    let (retries, last_error): (i32, String) =
        sqlx::query_as("SELECT attempts, last_error FROM retries WHERE event_id = 'flaky-evt'")
            .fetch_one(&pool)
            .await
            .expect("the retries are on record for lookups");
    assert_eq!(retries, 3);
    assert!(last_error.contains("sabotaged flaky"));
    assert_eq!(dead[0]["event_id"], "flaky-evt");
    assert!(
        dead[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("sabotaged flaky"))
    );
    let id = dead[0]["id"].as_str().expect("id").to_owned();
    let (status, detail) = pipeline.processor_get(&format!("/dead-letters/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(detail["payload"]["product_id"], "flaky");

    // Fixed; a dry run says what would happen and changes nothing.
    repair(&pool, "flaky").await;
    let (status, dry) = pipeline.replay(json!({"ids": [id], "dry_run": true})).await;
    assert_eq!(status, 200);
    assert_eq!(dry["results"][0]["outcome"], "would_replay");
    assert_eq!(dry["results"][0]["already_applied"], false);
    assert!(pipeline.product("flaky").await.is_none());
    let (status, done) = pipeline.replay(json!({"ids": [id]})).await;
    assert_eq!(status, 200);
    assert_eq!(done["results"][0]["outcome"], "replayed");
    pipeline.product_when("flaky", |p| p["stock"] == 1).await;
    pipeline.dead_letters(0).await;
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replaying_an_event_that_was_already_applied_does_not_apply_it_again() {
    let pipeline = spawn_pipeline().await;
    pipeline
        .accept_keyed("once-evt", r#"{"product_id": "once", "stock": 5}"#)
        .await;
    wait_inbox(&pipeline, 1).await;
    // The same event (sent with the test's key) reaches the dead-letter queue (as if set aside
    // after it was applied).
    let broker = testkit::broker::Broker::connect(&pipeline.backends).await;
    let body = format!(
        r#"{{"event_id":"once-evt","owner":"tester","product_id":"once","stock":5,"occurred_at":"{0}","received_at":"{0}"}}"#,
        "2026-01-01T00:00:00Z"
    );
    let shard = pipeline.topology.shard_for(&"once".parse().expect("valid"));
    broker
        .publish(
            &pipeline.topology.dead_letter_exchange(),
            &shared::topology::Topology::routing_key(shard),
            body.as_bytes(),
            BasicProperties::default()
                .with_type("product.update".into())
                .with_message_id("once-evt".into()),
        )
        .await;
    let dead = pipeline.dead_letters(1).await;
    assert_eq!(
        dead[0]["reason"], "delivery_limit",
        "no pipeline headers: the broker's reason"
    );
    let (_, dry) = pipeline.replay(json!({"all": true, "dry_run": true})).await;
    assert_eq!(dry["results"][0]["already_applied"], true);

    let before = pipeline.duplicates().await;
    let (_, done) = pipeline.replay(json!({"all": true})).await;
    assert_eq!(done["count"], 1);
    pipeline.wait_duplicate(before).await;
    assert_eq!(pipeline.inbox_count().await, 1);
    assert_eq!(pipeline.product("once").await.expect("exists")["stock"], 5);
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_can_be_filtered_purged_and_bad_requests_are_named() {
    let pipeline = spawn_pipeline().await;
    send_sabotaged(&pipeline, "refused", "check_violation").await;
    let broker = testkit::broker::Broker::connect(&pipeline.backends).await;
    broker
        .publish(
            &pipeline.topology.ingest_exchange(),
            "0",
            b"garbage",
            BasicProperties::default(),
        )
        .await;
    let dead = pipeline.dead_letters(2).await;
    let refused = dead
        .iter()
        .find(|d| d["event_id"] == "refused-evt")
        .expect("refused one");
    assert_eq!(refused["reason"], "invalid", "a refusal is not retried");
    assert_eq!(refused["attempts"], 0);

    let (_, only) = pipeline.processor_get("/dead-letters?reason=invalid").await;
    assert_eq!(only["items"].as_array().map(Vec::len), Some(1));
    let (_, only) = pipeline
        .processor_get("/dead-letters?product_id=refused")
        .await;
    assert_eq!(only["items"].as_array().map(Vec::len), Some(1));
    let (_, none) = pipeline
        .processor_get("/dead-letters?since=2999-01-01T00:00:00Z")
        .await;
    assert_eq!(none["items"].as_array().map(Vec::len), Some(0));
    let (_, all) = pipeline
        .processor_get("/dead-letters?until=2999-01-01T00:00:00Z&limit=10")
        .await;
    assert_eq!(all["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        all["next_cursor"],
        serde_json::Value::Null,
        "one page holds both"
    );

    pipeline
        .assert_names_fields(&[
            ("/dead-letters?limit=0", "limit"),
            ("/dead-letters?since=yesterday", "since"),
            ("/dead-letters?colour=red", "colour"),
            ("/dead-letters?cursor=made-up", "cursor"),
            ("/dead-letters?limit=1001", "limit"),
        ])
        .await;
    let (status, _) = pipeline.processor_get("/dead-letters/no-such-id").await;
    assert_eq!(status, 404);
    let (status, body) = pipeline.replay(json!({})).await;
    assert_eq!((status, body["field"].as_str()), (400, Some("ids")));
    let (status, _) = pipeline
        .processor_post("/dead-letters/purge", json!({"everything": true}))
        .await;
    assert_eq!(status, 400);

    assert_eq!(pipeline.purgeable("unparseable").await, 1);
    pipeline.dead_letters(2).await;
    let (_, purged) = pipeline
        .processor_post(
            "/dead-letters/purge",
            json!({"all": true, "reason": "unparseable"}),
        )
        .await;
    assert_eq!(purged["purged"], 1);
    let left = pipeline.dead_letters(1).await;
    assert_eq!(left[0]["reason"], "invalid");
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_that_keeps_crashing_its_consumer_is_dead_lettered_by_the_delivery_limit() {
    let sandbox = testkit::sandbox::Sandbox::new();
    let mut pipeline = spawn_gateway_only(sandbox.backends()).await;
    pipeline
        .accept_keyed("crashy-evt", r#"{"product_id": "crashy", "stock": 1}"#)
        .await;
    let shard = pipeline
        .topology
        .shard_for(&"crashy".parse().expect("valid"));
    // A consumer that dies on the message every time: it is returned to the queue unacked.
    let broker = testkit::broker::Broker::connect(&pipeline.backends).await;
    let channel = broker.channel().await;
    let mut consumer = channel
        .basic_consume(
            pipeline.topology.shard_queue(shard).into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let mut deliveries = 0;
    while let Ok(Some(Ok(delivery))) =
        tokio::time::timeout(Duration::from_secs(2), consumer.next()).await
    {
        deliveries += 1;
        delivery
            .acker
            .reject(BasicRejectOptions { requeue: true })
            .await
            .expect("reject");
    }
    assert!(deliveries > 1, "the message was redelivered");
    channel.close(200, "done".into()).await.expect("close");

    let backends = pipeline.backends.clone();
    pipeline.start_processor(backends).await;
    let dead = pipeline.dead_letters(1).await;
    assert_eq!(dead[0]["reason"], "delivery_limit");
    assert_eq!(dead[0]["service"], "rabbitmq");
    assert_eq!(dead[0]["event_id"], "crashy-evt");
    assert_eq!(pipeline.inbox_count().await, 0, "never applied");
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_postgres_refuses_are_kept_and_the_dead_letter_queue_moves_on() {
    let pipeline = spawn_pipeline().await;
    // Whatever else PostgreSQL may refuse in a dead letter's fields, stood in for by a trigger.
    let pool = testkit::postgres::pool(&pipeline.backends).await;
    testkit::sabotage::writes(
        &pool,
        "refuse_dead_letter",
        "BEFORE INSERT ON dead_letters",
        "NEW.product_id = 'refused-dl'",
        "check_violation",
        "refused",
    )
    .await;
    let broker = testkit::broker::Broker::connect(&pipeline.backends).await;
    let dead_letter = |message_id: &str, body: &str| {
        let properties = BasicProperties::default().with_message_id(message_id.into());
        let (broker, exchange, body) = (
            &broker,
            pipeline.topology.dead_letter_exchange(),
            body.as_bytes().to_vec(),
        );
        async move { broker.publish(&exchange, "0", &body, properties).await }
    };
    // A NUL byte, which PostgreSQL's text refuses, in the message id and the body's product id.
    dead_letter(
        "nul\0evt",
        r#"{"event_id": "nul", "product_id": "nul\u0000p"}"#,
    )
    .await;
    dead_letter(
        "refused-evt",
        r#"{"event_id": "refused-evt", "product_id": "refused-dl"}"#,
    )
    .await;
    dead_letter(
        "after-evt",
        r#"{"event_id": "after-evt", "product_id": "after"}"#,
    )
    .await;

    let dead = pipeline.dead_letters(3).await;
    let by_event = |event: &str| dead.iter().find(|d| d["event_id"] == event).cloned();
    let nul = by_event("nul\u{FFFD}evt").expect("the NUL bytes replaced, the rest kept");
    assert_eq!(nul["product_id"], "nul\u{FFFD}p");
    assert!(by_event("after-evt").is_some(), "the queue moved on");
    let refused = dead
        .iter()
        .find(|d| d["event_id"].is_null())
        .expect("the refused one, kept without the fields read from it");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("refused by PostgreSQL")),
        "{refused}"
    );
    let id = refused["id"].as_str().expect("id");
    let (status, detail) = pipeline.processor_get(&format!("/dead-letters/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(
        detail["payload"]["product_id"], "refused-dl",
        "its body kept as it came"
    );
    pipeline.stop().await;
}
