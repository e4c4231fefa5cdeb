//! Dependencies that are down: the processor says so and holds events rather than losing or
//! dead-lettering them.

use crate::helpers::{WAIT, spawn_gateway_only, wait_inbox};

#[tokio::test(flavor = "multi_thread")]
async fn with_postgres_unreachable_the_processor_is_not_ready_and_holds_events() {
    let mut pipeline = spawn_gateway_only(testkit::backends()).await;
    let mut broken = pipeline.backends.clone();
    broken.database = format!("{}/pipeline", testkit::closed_port_url("postgres"))
        .parse()
        .expect("valid URL");
    let processor = pipeline.start_processor(broken).await;
    pipeline.wait_down(processor, "postgres").await;

    pipeline
        .accept_keyed("held-evt", r#"{"product_id": "held-1", "stock": 3}"#)
        .await;
    // The processor holds the event (returns it to its shard) again and again: it must not be
    // dead-lettered, however often that happens.
    testkit::eventually("the event to be held three times", WAIT, || async {
        let metrics = pipeline.metrics_of(processor).await;
        let holds = metrics
            .lines()
            .find_map(|l| l.strip_prefix("pipeline_holds_total "))
            .and_then(|n| n.trim().parse::<f64>().ok())?;
        (holds >= 3.0).then_some(())
    })
    .await;
    let broker = testkit::Broker::connect(&pipeline.backends).await;
    assert_eq!(
        broker.depth(&pipeline.topology.dead_letter_queue()).await,
        0
    );

    // Stopping the broken processor returns the held event to its shard; a healthy one applies it.
    pipeline.stop_last().await;
    let healthy = pipeline.backends.clone();
    pipeline.start_processor(healthy).await;
    wait_inbox(&pipeline, 1).await;
    pipeline.product_when("held-1", |p| p["stock"] == 3).await;
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_redis_unreachable_the_processor_is_not_ready() {
    let mut pipeline = spawn_gateway_only(testkit::backends()).await;
    let mut broken = pipeline.backends.clone();
    let url = testkit::closed_port_url("redis");
    broken.redis =
        redis::IntoConnectionInfo::into_connection_info(url.as_str()).expect("valid URL");
    let processor = pipeline.start_processor(broken).await;
    pipeline.wait_down(processor, "redis").await;
    pipeline.stop().await;
}
