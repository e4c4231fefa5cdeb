//! The shard count is the namespace's: every service declares the topology at start, and a
//! count other than the one the namespace's queues were made with is refused, saying what to do.

use shared::topology::Topology;

#[tokio::test(flavor = "multi_thread")]
async fn a_shard_count_other_than_the_namespaces_is_refused_with_what_to_do() {
    let sandbox = testkit::sandbox::Sandbox::new();
    let backends = sandbox.backends();
    let broker = testkit::broker::Broker::connect(&backends).await;
    let topology = |shards| Topology::new(backends.namespace.clone(), shards);
    broker
        .try_declare(&topology(4))
        .await
        .expect("a new namespace takes any count");
    broker
        .try_declare(&topology(4))
        .await
        .expect("the same count again");
    for shards in [6, 2] {
        let refused = broker
            .try_declare(&topology(shards))
            .await
            .expect_err("another count is refused")
            .to_string();
        for expected in [
            format!("INGEST_SHARDS is {shards}"),
            "was started with another shard count".to_owned(),
            "current is '4'".to_owned(),
            "let the processors drain".to_owned(),
        ] {
            assert!(refused.contains(&expected), "{expected:?} in {refused:?}");
        }
    }
    // A refused declaration made nothing: the namespace still has its four shard queues.
    assert!(broker.exists(&topology(4).shard_queue(3)).await);
    assert!(!broker.exists(&topology(6).shard_queue(4)).await);
}
