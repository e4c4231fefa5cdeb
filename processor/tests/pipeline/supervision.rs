//! Consumers under supervision: a handler that panics, and a consumer the broker cancels, are
//! restarted; nothing is lost meanwhile, and `/ready` names a queue left without a consumer.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use processor::{
    consumer::ShardHandler,
    handler::Deps,
    shards::{Fence, leases},
};
use shared::{
    connect::{
        amqp,
        postgres::{Database, Tables},
        redis,
    },
    consume::{self, Consumers, Consuming, DeliveryHandler, Received},
    service::Tasks,
};

use crate::helpers::{WAIT, counter, spawn_gateway_only, spawn_pipeline, wait_inbox};

/// The real shard handler, with a bug that makes its first call panic.
struct PanicsOnce {
    inner: ShardHandler,
    armed: Arc<AtomicBool>,
}

impl PanicsOnce {
    fn trip(&self) {
        assert!(!self.armed.swap(false, Ordering::SeqCst), "a handler bug");
    }
}

impl DeliveryHandler for PanicsOnce {
    async fn on_delivery(&self, delivery: Received, at: Consuming<'_>) -> bool {
        self.trip();
        self.inner.on_delivery(delivery, at).await
    }

    async fn on_batch(&self, batch: Vec<Received>, at: Consuming<'_>) -> bool {
        self.trip();
        self.inner.on_batch(batch, at).await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handler_that_panics_is_restarted_and_its_shard_loses_nothing() {
    let sandbox = testkit::sandbox::Sandbox::new();
    let pipeline = spawn_gateway_only(sandbox.backends()).await;
    let backends = pipeline.backends.clone();
    // Events wait in their shard queue until the consumer comes.
    for i in 0..40 {
        pipeline
            .accept_keyed(
                &format!("panic-evt-{i}"),
                &format!(r#"{{"product_id": "panic-{}", "stock": {i}}}"#, i % 4),
            )
            .await;
    }
    let tasks = Tasks::new();
    let stop = tasks.stopping();
    let database = Database::start(
        backends.database.clone(),
        &backends.namespace,
        &Tables::ALL,
        4,
        &tasks,
    );
    let deps = Arc::new(Deps {
        database,
        cache: shared::processor::products::StateCache::new(
            redis::connect(backends.redis.clone(), None).expect("valid URL"),
            backends.namespace.clone(),
            backends.cache_ttl_seconds,
        ),
        stock_low_threshold: 10,
    });
    let (broker, supervisor) = amqp::supervise(
        "test",
        backends.amqp.clone(),
        None,
        |_| async { Ok(()) },
        stop.clone(),
    );
    tasks.spawn(supervisor);
    let armed = Arc::new(AtomicBool::new(true));
    let live = Consumers::default();
    let member: Arc<str> = "supervision-test".into();
    let pool = shared::connect::postgres::migrated(
        &backends.database,
        &backends.namespace,
        &Tables::ALL,
        2,
    )
    .await
    .expect("PostgreSQL is reachable");
    leases::prepare(&pool, pipeline.topology.shards())
        .await
        .expect("lease rows");
    let claimed = leases::claim(
        &pool,
        &member,
        usize::from(pipeline.topology.shards()),
        pipeline.topology.shards(),
        Duration::from_secs(60),
    )
    .await
    .expect("the shards are free");
    let supervisors: Vec<_> = claimed
        .into_iter()
        .map(|lease| {
            let handler = PanicsOnce {
                inner: ShardHandler {
                    topology: Arc::new(pipeline.topology.clone()),
                    deps: Arc::clone(&deps),
                    retry_delays: Arc::new(testkit::sandbox::RETRY_DELAYS.to_vec()),
                    fence: Fence {
                        member: Arc::clone(&member),
                        lease,
                    },
                    stop: stop.child_token(),
                },
                armed: Arc::clone(&armed),
            };
            tokio::spawn(consume::supervise(
                broker.clone(),
                pipeline.topology.shard_queue(lease.shard),
                16,
                Arc::new(handler),
                live.clone(),
                stop.clone(),
            ))
        })
        .collect();

    wait_inbox(&pipeline, 40).await;
    for product in 0..4 {
        let last = 36 + product;
        pipeline
            .product_when(&format!("panic-{product}"), |p| p["stock"] == last)
            .await;
    }
    assert!(!armed.load(Ordering::SeqCst), "the handler panicked");
    let metrics = shared::telemetry::metrics().render();
    assert!(
        counter(
            &metrics,
            "pipeline_consumer_restarts_total",
            "reason=\"panic\""
        ) >= 1.0,
        "{metrics}"
    );
    testkit::wait::eventually("every shard to have a live consumer", WAIT, || async {
        live.all().iter().all(|(_, up)| *up).then_some(())
    })
    .await;
    stop.cancel();
    for supervisor in supervisors {
        supervisor.await.expect("the supervisor ends on shutdown");
    }
    tasks.stop("test", WAIT).await;
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shard_without_a_consumer_makes_ready_503_naming_it_until_it_is_back() {
    let pipeline = spawn_pipeline().await;
    let processor = pipeline.processor.expect("started");
    let broker = testkit::broker::Broker::connect(&pipeline.backends).await;
    let queue = pipeline.topology.shard_queue(1);
    broker.delete_queue(&queue).await;
    testkit::wait::eventually("/ready to name the shard", WAIT, || async {
        let (status, body) = pipeline.processor_get("/ready").await;
        (status == 503 && body["without_consumer"] == serde_json::json!([queue.clone()]))
            .then_some(())
    })
    .await;

    broker.declare(&pipeline.backends).await;
    pipeline.wait_ready(processor).await;
    let (_, body) = pipeline.processor_get("/ready").await;
    assert_eq!(body["consumers"][&queue], "live", "{body}");
    let on_shard_1 = (0..100)
        .map(|i| format!("back-{i}"))
        .find(|p| pipeline.topology.shard_for(&p.parse().expect("valid")) == 1)
        .expect("some product lands on shard 1");
    pipeline
        .accept(&format!(r#"{{"product_id": "{on_shard_1}", "stock": 9}}"#))
        .await;
    pipeline
        .product_when(&on_shard_1, |p| p["stock"] == 9)
        .await;
    let metrics = pipeline.metrics_of(processor).await;
    assert!(
        counter(
            &metrics,
            "pipeline_consumer_restarts_total",
            "reason=\"cancelled\""
        ) >= 1.0,
        "{metrics}"
    );
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_first_start_on_an_empty_namespace_logs_no_warning_or_error() {
    testkit::services::first_start_is_quiet(
        "processor",
        env!("CARGO_BIN_EXE_processor"),
        "PROCESSOR_ADDR",
        &[("RETRY_DELAYS_MS", testkit::sandbox::retry_delays_ms())],
        async |backends| testkit::keys::authorized_client(&backends.namespace).await,
        crate::helpers::WAIT,
    )
    .await;
}

/// A batch settled together never settles a delivery before it that is still in hand: with
/// the first of three deliveries held, a run of the other two is acknowledged one by one (a
/// `multiple` ack of the third would take the first along), and the held one returns to its
/// queue when its channel closes.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_never_settles_an_earlier_delivery_still_in_hand() {
    use futures_util::StreamExt;
    use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};

    let sandbox = testkit::sandbox::Sandbox::new();
    let backends = sandbox.backends();
    let broker = testkit::broker::Broker::connect(&backends).await;
    let queue = format!("{}.settling", backends.namespace.as_str());
    let channel = broker.channel().await;
    // Exclusive: gone with the test's connection (not when its consumer goes, as it must outlive
    // the first channel).
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.as_str().into(), exclusive, Default::default())
        .await
        .expect("declare");
    for body in ["first", "second", "third"] {
        broker
            .publish("", &queue, body.as_bytes(), Default::default())
            .await;
    }
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            Default::default(),
        )
        .await
        .expect("consume");
    let ledger = consume::Ledger::default();
    let mut deliveries = Vec::new();
    for _ in 0..3 {
        let delivery = consumer
            .next()
            .await
            .expect("a delivery")
            .expect("no error");
        deliveries.push(delivery);
    }
    let mut received = ledger.receive_all(deliveries);
    let held = received.remove(0);
    assert_eq!(held.data, b"first");
    let mut run = consume::Run::default();
    for delivery in received {
        run.push(delivery.pending);
    }
    run.settle().await;
    channel.close(200, "done".into()).await.expect("close");
    drop(held);

    let back = testkit::wait::eventually("the held delivery back in its queue", WAIT, || async {
        (broker.depth(&queue).await == 1).then_some(())
    });
    back.await;
    let again = broker.take(&queue).await.expect("the held delivery");
    assert_eq!(again.data, b"first", "only the held delivery came back");
    assert!(again.redelivered);
    assert_eq!(broker.depth(&queue).await, 0, "the run was acknowledged");
}
