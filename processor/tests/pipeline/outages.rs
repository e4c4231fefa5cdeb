//! Dependencies that are down from the start: the processor says so, and loses or
//! dead-letters nothing (outages while it runs: `recovery`).

use crate::helpers::{spawn_gateway_only, wait_inbox};

#[tokio::test(flavor = "multi_thread")]
async fn with_postgres_unreachable_from_the_start_the_processor_takes_no_shard_and_loses_nothing() {
    let sandbox = testkit::sandbox::Sandbox::new();
    let mut pipeline = spawn_gateway_only(sandbox.backends()).await;
    let mut broken = pipeline.backends.clone();
    broken.database = format!("{}/pipeline", testkit::ports::closed_port_url("postgres"))
        .parse()
        .expect("valid URL");
    let processor = pipeline.start_processor(broken).await;
    pipeline.wait_down(processor, "postgres").await;

    pipeline
        .accept_keyed("held-evt", r#"{"product_id": "held-1", "stock": 3}"#)
        .await;
    // The leases are in PostgreSQL: without it the processor claims no shard, so the event
    // waits in its shard queue; it is neither taken nor dead-lettered.
    let (_, ready) = pipeline.processor_get("/ready").await;
    assert_eq!(ready["shards"]["owned"], serde_json::json!([]), "{ready}");
    let broker = testkit::broker::Broker::connect(&pipeline.backends).await;
    let product = "held-1".parse().expect("valid");
    let queue = pipeline
        .topology
        .shard_queue(pipeline.topology.shard_for(&product));
    assert_eq!(
        broker.depth(&queue).await,
        1,
        "the event waits on its shard"
    );
    assert_eq!(
        broker.depth(&pipeline.topology.dead_letter_queue()).await,
        0
    );

    // A healthy processor applies it.
    pipeline.stop_last().await;
    let healthy = pipeline.backends.clone();
    pipeline.start_processor(healthy).await;
    wait_inbox(&pipeline, 1).await;
    pipeline.product_when("held-1", |p| p["stock"] == 3).await;
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_redis_unreachable_the_processor_is_not_ready() {
    let sandbox = testkit::sandbox::Sandbox::new();
    let mut pipeline = spawn_gateway_only(sandbox.backends()).await;
    let mut broken = pipeline.backends.clone();
    let url = testkit::ports::closed_port_url("redis");
    broken.redis =
        redis::IntoConnectionInfo::into_connection_info(url.as_str()).expect("valid URL");
    let processor = pipeline.start_processor(broken).await;
    pipeline.wait_down(processor, "redis").await;
    pipeline.stop().await;
}
