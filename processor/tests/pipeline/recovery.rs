//! Real outages between the services and their backends, through the fault proxy: each one is
//! survived with nothing lost, nothing doubled, and recovery without a restart.

use std::{net::SocketAddr, time::Duration};

use shared::config::Backends;
use testkit::{
    fault_proxy::{Fault, Faulty},
    sandbox::Sandbox,
};

use crate::helpers::{Pipeline, WAIT, spawn_gateway_only, wait_inbox};

/// A gateway and a processor in a namespace of their own, the two reaching their backends
/// through the backends `through` makes of the direct ones and the fault proxy's (the gateway's
/// first, the processor's second); the processor ready. The sandbox lives as long as the test.
struct Faulted {
    _sandbox: Sandbox,
    faulty: Faulty,
    pipeline: Pipeline,
    processor: SocketAddr,
}

async fn faulted(through: impl FnOnce(&Backends, &Backends) -> (Backends, Backends)) -> Faulted {
    let sandbox = Sandbox::new();
    let backends = sandbox.backends();
    let faulty = Faulty::start(&backends).await;
    let (gateway, processor) = through(&backends, &faulty.backends);
    let mut pipeline = spawn_gateway_only(gateway).await;
    let processor = pipeline.start_processor(processor).await;
    pipeline.wait_ready(processor).await;
    Faulted {
        _sandbox: sandbox,
        faulty,
        pipeline,
        processor,
    }
}

impl Faulted {
    /// With the gateway's broker link failing as `fault` says, the stock update `body` sent with
    /// `key` is refused for now; once the link is cut and back, the client's retry with the same
    /// key is applied: the inbox comes to hold `inbox` events, and the product the new stock.
    async fn refused_while_cut_then_applied(
        &self,
        fault: Fault,
        key: &str,
        body: &str,
        inbox: i64,
    ) {
        self.faulty.amqp.set(fault);
        self.pipeline
            .refused_for_now(key, body, "never a 202 without a confirm")
            .await;
        // Dropped first, so that no connection is left hanging from the fault.
        self.faulty.amqp.set(Fault::Drop);
        self.faulty.amqp.set(Fault::Pass);
        self.pipeline.retry_until_applied(key, body, inbox).await;
        let update: serde_json::Value = serde_json::from_str(body).expect("JSON");
        let product = update["product_id"].as_str().expect("a product id");
        self.pipeline
            .product_when(product, |p| p["stock"] == update["stock"])
            .await;
    }
}

/// The gateway behind the fault proxy.
fn gateway_faulted(direct: &Backends, faulted: &Backends) -> (Backends, Backends) {
    (faulted.clone(), direct.clone())
}

/// The processor behind the fault proxy.
fn processor_faulted(direct: &Backends, faulted: &Backends) -> (Backends, Backends) {
    (direct.clone(), faulted.clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_answers_503_while_the_broker_is_cut_and_accepts_again_by_itself() {
    let run = faulted(gateway_faulted).await;

    run.pipeline
        .accept_keyed("before-cut", r#"{"product_id": "cut-1", "stock": 1}"#)
        .await;
    // The client retries with the same key until the gateway is back.
    let during = r#"{"product_id": "cut-1", "stock": 2}"#;
    run.refused_while_cut_then_applied(Fault::Drop, "during-cut", during, 2)
        .await;
    run.pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_publish_whose_confirm_is_lost_is_503_and_the_retry_applies_once() {
    let run = faulted(gateway_faulted).await;

    // The broker may get the message, but its confirm never comes back.
    let body = r#"{"product_id": "lost-1", "stock": 4}"#;
    run.refused_while_cut_then_applied(Fault::Blackhole, "lost-confirm", body, 1)
        .await;
    // A later event on the same product travels the same shard behind any second copy: once it
    // is applied, every copy of the first has been through the processor.
    run.pipeline
        .accept_keyed("lost-barrier", r#"{"product_id": "lost-1", "price": 1}"#)
        .await;
    run.pipeline
        .product_when("lost-1", |p| p["price"] == 1)
        .await;
    assert_eq!(
        run.pipeline.inbox_count().await,
        2,
        "the first applied once"
    );
    run.pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_processor_holds_events_through_postgres_and_redis_outages_and_resumes_by_itself() {
    let run = faulted(processor_faulted).await;

    for (proxy, dependency, product) in [
        (&run.faulty.postgres, "postgres", "pg-out"),
        (&run.faulty.redis, "redis", "redis-out"),
    ] {
        proxy.set(Fault::Drop);
        run.pipeline
            .accept(&format!(r#"{{"product_id": "{product}", "stock": 8}}"#))
            .await;
        run.pipeline.wait_down(run.processor, dependency).await;
        proxy.set(Fault::Pass);
        run.pipeline
            .product_when(product, |p| p["stock"] == 8)
            .await;
    }
    wait_inbox(&run.pipeline, 2).await;
    let (_, dead) = run.pipeline.processor_get("/dead-letters").await;
    assert_eq!(
        dead["items"].as_array().map(Vec::len),
        Some(0),
        "an outage is never the message's fault"
    );
    run.pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_processor_reconnects_to_the_broker_after_a_cut_and_keeps_consuming() {
    let run = faulted(processor_faulted).await;
    run.pipeline
        .accept(r#"{"product_id": "rc-1", "stock": 1}"#)
        .await;
    run.pipeline.product_when("rc-1", |p| p["stock"] == 1).await;

    run.faulty.amqp.set(Fault::Drop);
    run.pipeline
        .accept(r#"{"product_id": "rc-1", "stock": 2}"#)
        .await;
    run.pipeline.wait_down(run.processor, "rabbitmq").await;
    run.faulty.amqp.set(Fault::Pass);
    run.pipeline.product_when("rc-1", |p| p["stock"] == 2).await;
    run.pipeline.wait_ready(run.processor).await;
    run.pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_redis_cut_at_the_gateway_keyed_events_are_503_keyless_accepted_and_it_recovers() {
    // Only the gateway's Redis behind the proxy.
    let run = faulted(|direct, faulted| {
        let mut gateway = direct.clone();
        gateway.redis = faulted.redis.clone();
        (gateway, direct.clone())
    })
    .await;

    run.faulty.redis.set(Fault::Drop);
    let keyed = r#"{"product_id": "rd-1", "stock": 1}"#;
    run.pipeline
        .refused_for_now(
            "rd-key",
            keyed,
            "fail closed: a repeat could not be recognised",
        )
        .await;
    run.pipeline
        .accept(r#"{"product_id": "rd-2", "stock": 1}"#)
        .await;
    let metrics = run.pipeline.metrics_of(run.pipeline.gateway).await;
    assert!(metrics.contains("pipeline_events_rejected_total{reason=\"unavailable\"}"));

    run.faulty.redis.set(Fault::Pass);
    run.pipeline.retry_until_applied("rd-key", keyed, 2).await;
    run.pipeline.stop().await;
}

/// A broker that falls silent (a cut link: nothing comes back, nothing is reset) is known lost
/// only after two heartbeats, and then counted as unheard since before them, so that a replica
/// cut off steps aside as soon as the loss is known rather than a quarter of a lease later.
#[tokio::test(flavor = "multi_thread")]
async fn a_broker_fallen_silent_is_unheard_since_two_heartbeats_before_the_loss_is_known() {
    let sandbox = Sandbox::new();
    let faulty = Faulty::start(&sandbox.backends()).await;
    let mut uri = faulty.backends.amqp[0].clone();
    uri.query.heartbeat = Some(1);
    let stop = tokio_util::sync::CancellationToken::new();
    let (broker, supervisor) = shared::connect::amqp::supervise(
        "silence-test",
        vec![uri],
        None,
        |_| async { Ok(()) },
        stop.clone(),
    );
    let supervisor = tokio::spawn(supervisor);
    testkit::wait::eventually("a connection", WAIT, || async {
        broker.is_up().then_some(())
    })
    .await;
    assert_eq!(broker.unheard_since(), None, "heard while connected");

    let cut = tokio::time::Instant::now();
    faulty.amqp.set(Fault::Blackhole);
    // Lost once nothing has come for two heartbeats (2 s), and unheard since about the cut: a
    // loss taken as a close would be unheard only since it was noticed, 2 s or more after it.
    let since = testkit::wait::eventually("the loss to be known", WAIT, || async {
        broker
            .unheard_since()
            .filter(|since| *since < cut + std::time::Duration::from_secs(1))
    })
    .await;
    assert!(!broker.is_up(), "unheard since {since:?}, so not up");
    stop.cancel();
    supervisor.await.expect("the supervisor ends");
}

#[tokio::test(flavor = "multi_thread")]
async fn after_an_outage_a_processor_consumes_again_behind_a_database_slower_than_a_quarter_lease()
{
    let run = faulted(processor_faulted).await;
    let owned = || async {
        let (_, ready) = run.pipeline.processor_get("/ready").await;
        ready["shards"]["owned"].as_array().map(Vec::len)
    };

    // Unanswered for more than twice the lease, the processor stops consuming.
    run.faulty.postgres.set(Fault::Blackhole);
    testkit::wait::eventually("the processor to stop consuming", WAIT, || async {
        (owned().await == Some(0)).then_some(())
    })
    .await;

    // The database answers again, but a beat (eight round trips of 300 ms) now takes longer
    // than a quarter of the 4 s lease: the beat is seen through, and the event applied.
    run.faulty
        .postgres
        .set(Fault::Latency(Duration::from_millis(150)));
    run.pipeline
        .accept_keyed("slow-db", r#"{"product_id": "slow-1", "stock": 6}"#)
        .await;
    run.pipeline
        .product_when("slow-1", |p| p["stock"] == 6)
        .await;
    assert_eq!(run.pipeline.inbox_count().await, 1, "applied once");
    run.pipeline.stop().await;
}
