//! Retention: what is past its window is pruned, in batches, counted by table; what is not,
//! and what must stay (orders' inbox rows, dead letters being replayed, notifications with a
//! pending delivery), stays.

use std::time::Duration;

use stack::WAIT;
use testkit::in_process::InProcess;

use crate::helpers::TEST_LEASE;

/// The processor and the notifier, pruning every 100 ms with windows of an hour.
async fn start(backends: &shared::config::Backends) -> (InProcess, String, String) {
    let mut running = InProcess::default();
    let mut processor = testkit::test_config!(processor::Config, backends.clone());
    processor.retry_delays = testkit::sandbox::RETRY_DELAYS.to_vec();
    processor.shard_lease = TEST_LEASE;
    processor.retention = processor::store::retention::Windows {
        processed_events: Duration::from_secs(3600),
        dead_letters: Duration::from_secs(3600),
    };
    processor.prune_every = Duration::from_millis(100);
    let processor = running.launch(processor::Application::build(processor).await);
    let mut notifier = testkit::test_config!(notifier::Config, backends.clone());
    notifier.retention = Duration::from_secs(3600);
    notifier.prune_every = Duration::from_millis(100);
    let notifier = running.launch(notifier::Application::build(notifier).await);
    (
        running,
        format!("http://{processor}"),
        format!("http://{notifier}"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_past_their_window_are_pruned_and_the_rest_kept() {
    let sandbox = testkit::sandbox::Sandbox::new();
    let backends = sandbox.backends();
    let client = testkit::keys::authorized_client(&backends.namespace).await;
    // The tables first (a service migrates them at start), with rows old and new.
    let (mut running, processor, notifier) = start(&backends).await;
    testkit::wait::until_ready(&client, &processor, WAIT).await;
    testkit::wait::until_ready(&client, &notifier, WAIT).await;
    while !running.is_empty() {
        running.stop_last().await;
    }
    let db = testkit::postgres::pool(&backends).await;
    let rows: [(&str, &str); 6] = [
        (
            "inbox rows",
            "INSERT INTO processed_events (event_id, kind, product_id, occurred_at, received_at,
                                       processed_at)
         VALUES ('old-update', 'product.update', 'p', now(), now(), now() - interval '2 hours'),
                ('new-update', 'product.update', 'p', now(), now(), now()),
                ('old-order', 'order.create', 'p', now(), now(), now() - interval '2 hours')",
        ),
        (
            "dead letters",
            "INSERT INTO dead_letters (id, reason, error, attempts, service, routing_key,
                                   first_failed_at, dead_lettered_at, payload, replay_job,
                                   replay_claimed_until)
         VALUES ('dl-old', 'invalid', 'e', 1, 'processor', '0', now(),
                 now() - interval '2 hours', '\\x00', NULL, NULL),
                ('dl-new', 'invalid', 'e', 1, 'processor', '0', now(), now(), '\\x00', NULL, NULL),
                ('dl-replaying', 'invalid', 'e', 1, 'processor', '0', now(),
                 now() - interval '2 hours', '\\x00', gen_random_uuid(),
                 now() + interval '1 hour')",
        ),
        (
            "a subscription",
            "INSERT INTO subscriptions (id, url, event_types, secret)
         VALUES ('00000000-0000-0000-0000-000000000001', 'http://127.0.0.1:9/hook',
                 '{stock.low}', 'whsec_x')",
        ),
        (
            "notifications",
            "INSERT INTO notifications (event_id, event_type, body, received_at)
         VALUES ('n-old', 'stock.low', '{}', now() - interval '2 hours'),
                ('n-old-pending', 'stock.low', '{}', now() - interval '2 hours'),
                ('n-new', 'stock.low', '{}', now())",
        ),
        (
            "deliveries",
            "INSERT INTO deliveries (event_id, subscription_id, status, next_attempt_at)
         VALUES ('n-old', '00000000-0000-0000-0000-000000000001', 'sent', now()),
                ('n-old-pending', '00000000-0000-0000-0000-000000000001', 'pending',
                 now() + interval '1 day')",
        ),
        (
            "an attempt",
            "INSERT INTO delivery_attempts (delivery_id, attempted_at, status_code, latency_seconds)
         SELECT id, now(), 200, 0.01 FROM deliveries WHERE event_id = 'n-old'",
        ),
    ];
    for (what, sql) in rows {
        sqlx::query(sql).execute(&db).await.expect(what);
    }

    let (mut running, processor, notifier) = start(&backends).await;
    let ids = |table: &'static str, column: &'static str| {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!(
                "SELECT {column} FROM {table} ORDER BY 1"
            )))
            .fetch_all(&db)
            .await
            .expect("readable")
        }
    };
    testkit::wait::eventually("the expired rows pruned", WAIT, || async {
        let inbox = ids("processed_events", "event_id").await;
        let dead = ids("dead_letters", "id").await;
        let notes = ids("notifications", "event_id").await;
        (inbox == ["new-update", "old-order"]
            && dead == ["dl-new", "dl-replaying"]
            && notes == ["n-new", "n-old-pending"])
        .then_some(())
    })
    .await;
    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM delivery_attempts")
        .fetch_one(&db)
        .await
        .expect("readable");
    assert_eq!(attempts, 0, "the attempts went with their notification");
    let pruned = |text: &str, table: &str| {
        testkit::metrics::counter(
            text,
            "pipeline_pruned_rows_total",
            &format!("table=\"{table}\""),
        )
    };
    let text = testkit::metrics::scrape(&client, &processor).await;
    assert_eq!(pruned(&text, "processed_events"), 1.0, "{text}");
    assert_eq!(pruned(&text, "dead_letters"), 1.0);
    let text = testkit::metrics::scrape(&client, &notifier).await;
    assert_eq!(pruned(&text, "notifications"), 1.0, "{text}");
    assert_eq!(pruned(&text, "deliveries"), 1.0);
    assert_eq!(pruned(&text, "delivery_attempts"), 1.0);
    while !running.is_empty() {
        running.stop_last().await;
    }
}
