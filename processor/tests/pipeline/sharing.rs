//! Processor replicas share the shards: evenly, handing them over when a replica joins or dies,
//! and fenced, so a replica that lost a shard cannot commit a late batch for it.

use std::time::Duration;

use processor::{
    shards::leases,
    store::{self, StoreError},
};
use shared::contract::Ingest;

use crate::helpers::{
    self, Pipeline, WAIT, claim_the_shard, one_shard, spawn_gateway_only, spawn_pipeline,
    wait_inbox,
};

/// How many live shards each replica holds, fewest first.
async fn shares(pipeline: &Pipeline) -> Vec<i64> {
    let pool = testkit::postgres::pool(&pipeline.backends).await;
    let shares = sqlx::query_scalar(
        "SELECT count(*) FROM shard_leases WHERE owner IS NOT NULL AND expires_at > now()
         GROUP BY owner ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap_or_default();
    pool.close().await;
    shares
}

/// Waits until the replicas' shares are `expected` (fewest first).
async fn until_shares(pipeline: &Pipeline, expected: &[i64], within: Duration) {
    testkit::wait::eventually(&format!("shares of {expected:?}"), within, || async {
        (shares(pipeline).await == expected).then_some(())
    })
    .await;
}

/// The shards a processor's `/ready` says it owns.
async fn owned(pipeline: &Pipeline, processor: std::net::SocketAddr) -> Vec<u64> {
    let (_, ready) =
        testkit::http::get_json(&pipeline.client, &format!("http://{processor}/ready")).await;
    ready["shards"]["owned"]
        .as_array()
        .map(|a| a.iter().filter_map(serde_json::Value::as_u64).collect())
        .unwrap_or_default()
}

/// One order of one unit for each product, with ids unique to `round`.
async fn order_round(pipeline: &Pipeline, products: &[String], round: usize) {
    for (i, product) in products.iter().enumerate() {
        let response = pipeline
            .client
            .post(format!("http://{}/orders", pipeline.gateway))
            .header("content-type", "application/json")
            .body(format!(
                r#"{{"id": "share-o{round}-{i}", "sku": "{product}", "qty": 1}}"#
            ))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 202);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_share_the_shards_evenly_and_take_over_a_killed_ones_losing_and_doubling_nothing()
{
    const ROUNDS: usize = 20;
    let sandbox = testkit::sandbox::Sandbox::with_shards(12);
    let mut pipeline = spawn_gateway_only(sandbox.backends()).await;
    let products: Vec<String> = (0..24).map(|i| format!("share-{i}")).collect();
    for product in &products {
        pipeline
            .accept(&format!(r#"{{"product_id": "{product}", "stock": 1000}}"#))
            .await;
    }

    // The first replica alone owns every shard.
    let mut first = helpers::processor_process(&pipeline.backends);
    until_shares(&pipeline, &[12], WAIT).await;
    wait_inbox(&pipeline, 24).await;

    // Two more join: four each. Orders flow while the shards move.
    let backends = pipeline.backends.clone();
    let second = pipeline.start_processor(backends.clone()).await;
    let third = pipeline.start_processor(backends).await;
    for round in 0..ROUNDS / 2 {
        order_round(&pipeline, &products, round).await;
    }
    until_shares(&pipeline, &[4, 4, 4], WAIT).await;
    assert_eq!(owned(&pipeline, second).await.len(), 4);
    assert_eq!(owned(&pipeline, third).await.len(), 4);

    // The first is killed: its shards go to the other two within the lease and a few beats.
    first.start_kill().expect("SIGKILL");
    first.wait().await.expect("reaped");
    for round in ROUNDS / 2..ROUNDS {
        order_round(&pipeline, &products, round).await;
    }
    until_shares(&pipeline, &[6, 6], Duration::from_secs(30)).await;
    let mut all = owned(&pipeline, second).await;
    all.extend(owned(&pipeline, third).await);
    all.sort_unstable();
    assert_eq!(all, (0..12).collect::<Vec<u64>>(), "every shard once");

    // Every order applied once: each product lost exactly one unit per round.
    wait_inbox(&pipeline, 24 + (products.len() * ROUNDS) as i64).await;
    let left = 1000 - ROUNDS as i64;
    for product in &products {
        let state = pipeline.product_when(product, |p| p["stock"] == left).await;
        assert_eq!(state["stock"], left, "{product}");
    }
    let (_, dead) = pipeline.processor_get("/dead-letters").await;
    assert_eq!(dead["items"].as_array().map(Vec::len), Some(0));
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_on_a_shard_another_replica_took_is_returned_and_applied_once_by_the_owner() {
    let pipeline = spawn_pipeline().await;
    let processor = pipeline.processor.expect("running");
    testkit::wait::eventually("the replica to own every shard", WAIT, || async {
        (owned(&pipeline, processor).await.len() == usize::from(pipeline.topology.shards()))
            .then_some(())
    })
    .await;
    let product = "stolen-1";
    let shard = pipeline
        .topology
        .shard_for(&product.parse().expect("valid"));
    let pool = testkit::postgres::pool(&pipeline.backends).await;
    // Another replica claims the shard, as it would once this one's lease ran out.
    sqlx::query(
        "UPDATE shard_leases SET owner = 'another', epoch = epoch + 1,
         expires_at = now() + interval '1 hour' WHERE shard = $1",
    )
    .bind(i32::from(shard))
    .execute(&pool)
    .await
    .expect("claimed");
    pipeline
        .accept_keyed("stolen-evt", r#"{"product_id": "stolen-1", "stock": 5}"#)
        .await;
    testkit::wait::eventually("the replica to let the shard go", WAIT, || async {
        (!owned(&pipeline, processor)
            .await
            .contains(&u64::from(shard)))
        .then_some(())
    })
    .await;
    assert_eq!(
        pipeline.inbox_count().await,
        0,
        "nothing committed under a lost lease"
    );

    // The other replica lets go; this one claims the shard again and applies the event once.
    sqlx::query("UPDATE shard_leases SET owner = NULL, expires_at = NULL WHERE shard = $1")
        .bind(i32::from(shard))
        .execute(&pool)
        .await
        .expect("released");
    pipeline.product_when(product, |p| p["stock"] == 5).await;
    wait_inbox(&pipeline, 1).await;
    let metrics = pipeline.metrics_of(processor).await;
    assert!(
        testkit::metrics::counter(&metrics, "pipeline_shard_handovers_total", "lost") >= 1.0,
        "{metrics}"
    );
    pool.close().await;
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claim_waits_for_the_batch_in_flight_and_then_the_old_owner_cannot_commit() {
    let sandbox = testkit::sandbox::Sandbox::new();
    let pool = one_shard(&sandbox.backends()).await;
    // The old owner's lease has already run out, but a batch of its is in flight.
    let old = claim_the_shard(&pool, "old", Duration::from_millis(1)).await;
    let mut in_flight = pool.begin().await.expect("begin");
    assert!(old.holds(&mut in_flight).await.expect("checked"));
    let taken = leases::claim(&pool, "new", 1, 1, Duration::from_secs(60))
        .await
        .expect("tried");
    assert!(taken.is_empty(), "no claim while a batch holds the shard");
    in_flight.commit().await.expect("the batch commits");

    let new = claim_the_shard(&pool, "new", Duration::from_secs(60)).await;
    assert_eq!(new.lease.epoch, old.lease.epoch + 1);
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formats");
    let update = |id: &str| {
        let body = format!(
            r#"{{"event_id": "{id}", "product_id": "fenced-1", "stock": 7, "occurred_at": "{now}", "received_at": "{now}"}}"#
        );
        Ingest::decode(Some("product.update"), body.as_bytes()).expect("valid")
    };
    let late = store::apply(&pool, &[update("late")], 10, &old).await;
    assert!(matches!(late, Err(StoreError::Fenced)), "{late:?}");
    store::apply(&pool, &[update("current")], 10, &new)
        .await
        .expect("the owner commits");
    let applied: Vec<String> =
        sqlx::query_scalar("SELECT event_id FROM processed_events ORDER BY event_id")
            .fetch_all(&pool)
            .await
            .expect("inbox");
    assert_eq!(applied, ["current"]);
    pool.close().await;
}
