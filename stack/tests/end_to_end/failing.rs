//! A test that fails while every service runs leaves nothing of its namespace: as the stack is
//! dropped its services are told to stop and its sandbox removes the queues, exchanges, Redis
//! keys and schema, and nothing comes back once the services are gone.

use std::net::SocketAddr;

use shared::{config::Backends, topology::Topology};
use stack::{Stack, WAIT};

use crate::helpers::{accept_keyed, product_when};

/// What is left of `backends`' namespace: its queues, Redis keys and schema.
async fn left(backends: &Backends) -> (Vec<String>, Vec<String>, bool) {
    let topology = Topology::new(backends.namespace.clone(), backends.ingest_shards);
    let broker = testkit::broker::Broker::connect(backends).await;
    let mut queues = vec![
        topology.notifier_queue(),
        topology.images_queue(),
        topology.dead_letter_queue(),
        topology.shard_count_queue(),
    ];
    queues.extend((0..topology.shards()).map(|s| topology.shard_queue(s)));
    queues.extend(
        testkit::sandbox::RETRY_DELAYS
            .iter()
            .map(|d| topology.retry_queue(*d)),
    );
    let mut queues_left = Vec::new();
    for queue in queues {
        if broker.exists(&queue).await {
            queues_left.push(queue);
        }
    }
    let pool = testkit::postgres::pool(backends).await;
    let schema: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(backends.namespace.as_str())
            .fetch_one(&pool)
            .await
            .expect("the catalog is readable");
    pool.close().await;
    (
        queues_left,
        testkit::redis::namespace_keys(backends).await,
        schema,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_test_that_panics_with_every_service_running_leaves_nothing_of_its_namespace() {
    let (made, seen) = tokio::sync::oneshot::channel::<(Backends, Vec<SocketAddr>)>();
    let failing = tokio::spawn(async move {
        let stack = Stack::start(None).await;
        accept_keyed(
            &stack.client,
            stack.gateway,
            "doomed",
            r#"{"product_id": "doomed-1", "stock": 1}"#,
        )
        .await;
        product_when(&stack.client, stack.gateway, "doomed-1", |p| {
            p["stock"] == 1
        })
        .await;
        let (queues, keys, schema) = left(&stack.backends).await;
        assert!(!queues.is_empty() && !keys.is_empty() && schema, "all made");
        let addrs = vec![
            stack.gateway,
            stack.processor,
            stack.notifier,
            stack.imager,
            stack.dashboard,
        ];
        made.send((stack.backends.clone(), addrs)).expect("sent");
        panic!("a failing test");
    });
    assert!(failing.await.expect_err("the test panicked").is_panic());
    let (backends, addrs) = seen.await.expect("the stack started");

    let nothing = (Vec::new(), Vec::new(), false);
    assert_eq!(
        left(&backends).await,
        nothing,
        "removed as the stack dropped"
    );
    // Told to stop, the services drain and go; nothing of the namespace comes back meanwhile.
    testkit::wait::eventually("every service to stop listening", WAIT, || async {
        let mut listening = false;
        for addr in &addrs {
            listening |= tokio::net::TcpStream::connect(addr).await.is_ok();
        }
        (!listening).then_some(())
    })
    .await;
    assert_eq!(left(&backends).await, nothing, "nothing came back");
}
