//! Delivering downstream events: signed, retried, dead-lettered, never twice.

use serde_json::json;
use testkit::webhooks::Receiver;

use shared::contract::headers;

use crate::helpers::{WAIT, signed_with, spawn_notifier, spawn_notifier_on, spawn_notifier_with};

#[tokio::test(flavor = "multi_thread")]
async fn an_event_is_delivered_signed_with_the_subscription_secret() {
    let notifier = spawn_notifier(5).await;
    let receiver = Receiver::start(&[]).await;
    let (id, secret) = notifier
        .subscribe(&receiver.url(), &["order.created"])
        .await;

    let body = notifier
        .emit("order:o1:order.created", "order.created")
        .await;
    let got = receiver.wait_for(1, WAIT).await;
    let request = &got[0];
    assert_eq!(request.header("webhook-id"), "order:o1:order.created");
    assert_eq!(request.header("content-type"), "application/json");
    assert_eq!(
        request.body.as_ref(),
        body.as_bytes(),
        "the body as published"
    );
    let timestamp: i64 = request
        .header("webhook-timestamp")
        .parse()
        .expect("seconds");
    assert!((time::OffsetDateTime::now_utc().unix_timestamp() - timestamp).abs() < 60);
    assert!(request.header("webhook-signature").starts_with("v1,"));
    assert!(signed_with(request, &secret), "verifies with the secret");
    let other = notifier::signing::new_secret();
    assert!(!signed_with(request, &other), "fails with another secret");

    let notification = notifier.settled("order:o1:order.created").await;
    let delivery = &notification["deliveries"][0];
    assert_eq!(delivery["status"], "sent");
    assert_eq!(delivery["attempts"], 1);
    assert_eq!(delivery["attempt_log"][0]["status_code"], 200);
    assert!(
        delivery["attempt_log"][0]["latency_seconds"]
            .as_f64()
            .is_some()
    );

    // After a rotation, deliveries carry a signature for each secret until the old expires.
    let (_, rotated) = notifier
        .post(&format!("/subscriptions/{id}/rotate-secret"))
        .await;
    let new_secret = rotated["secret"].as_str().expect("secret");
    notifier
        .emit("order:o2:order.created", "order.created")
        .await;
    let got = receiver.wait_for(2, WAIT).await;
    assert!(signed_with(&got[1], new_secret) && signed_with(&got[1], &secret));
    notifier.stop().await;
}

/// The status code of each of a delivery's attempts, in order.
fn status_codes(delivery: &serde_json::Value) -> Vec<serde_json::Value> {
    delivery["attempt_log"]
        .as_array()
        .expect("log")
        .iter()
        .map(|a| a["status_code"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_endpoint_is_retried_until_it_succeeds_once() {
    let notifier = spawn_notifier(5).await;
    let receiver = Receiver::start(&[500]).await;
    notifier.subscribe(&receiver.url(), &["stock.low"]).await;

    notifier.emit("e2:stock.low", "stock.low").await;
    let notification = notifier.settled("e2:stock.low").await;
    let delivery = &notification["deliveries"][0];
    assert_eq!(delivery["status"], "sent");
    assert_eq!(delivery["attempts"], 2);
    assert_eq!(status_codes(delivery), [json!(500), json!(200)]);
    let got = receiver.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    assert_eq!(
        got.iter().filter(|r| r.answered == 200).count(),
        1,
        "exactly one success"
    );
    notifier.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_that_answers_410_gone_is_disabled_at_once() {
    // Far from the disabling count: 410 alone disables.
    let notifier = spawn_notifier(5).await;
    let receiver = Receiver::start(&[410]).await;
    let (id, _) = notifier
        .subscribe(&receiver.url(), &["order.created"])
        .await;

    notifier.emit("g1:order.created", "order.created").await;
    let notification = notifier.settled("g1:order.created").await;
    let delivery = &notification["deliveries"][0];
    assert_eq!(delivery["status"], "failed", "{delivery}");
    assert_eq!(delivery["attempts"], 1, "no retry after 410");
    assert_eq!(receiver.count(), 1);
    let reason = notifier.assert_disabled(&id).await;
    assert!(reason.contains("410"), "{reason}");
    // Later events are skipped for it, and nothing more is sent.
    notifier.emit("g2:order.created", "order.created").await;
    let skipped = notifier.settled("g2:order.created").await;
    assert_eq!(skipped["deliveries"][0]["status"], "skipped");
    assert_eq!(receiver.count(), 1);
    notifier.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_after_on_503_holds_the_retry_back_that_long() {
    use time::{OffsetDateTime, format_description::well_known::Rfc3339};

    let notifier = spawn_notifier(5).await;
    // The schedule retries after 100 ms; the endpoint asks for 3 s.
    let receiver = Receiver::start_asking(&[503], Some("3")).await;
    notifier.subscribe(&receiver.url(), &["stock.low"]).await;
    notifier.emit("g3:stock.low", "stock.low").await;
    let time = |value: &serde_json::Value| {
        OffsetDateTime::parse(value.as_str().expect("a time"), &Rfc3339).expect("RFC 3339")
    };
    let waiting = testkit::wait::eventually("the first attempt recorded", WAIT, || async {
        let (_, body) = notifier.get("/notifications/g3:stock.low").await;
        let delivery = body["deliveries"][0].clone();
        (delivery["attempts"] == 1 && delivery["next_attempt_at"].is_string()).then_some(delivery)
    })
    .await;
    let asked =
        time(&waiting["next_attempt_at"]) - time(&waiting["attempt_log"][0]["attempted_at"]);
    assert!(asked >= time::Duration::seconds(3), "{waiting}");
    let notification = notifier.settled("g3:stock.low").await;
    let delivery = &notification["deliveries"][0];
    assert_eq!(delivery["status"], "sent");
    assert_eq!(status_codes(delivery), [json!(503), json!(200)]);
    notifier.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_endpoint_fails_is_dead_lettered_disabled_and_can_be_retried() {
    let notifier = spawn_notifier(1).await;
    let (id, delivery) = notifier
        .failed_at_unreachable("e3:order.rejected", "order.rejected")
        .await;
    assert_eq!(delivery["attempts"], 3, "the first try and both retries");
    assert!(delivery["failed_at"].is_string());
    assert!(
        delivery["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("connect"))
    );
    assert!(
        delivery["attempt_log"]
            .as_array()
            .expect("log")
            .iter()
            .all(|a| a["status_code"].is_null() && a["error"].is_string())
    );

    let (_, failed) = notifier.get("/deliveries?status=failed").await;
    assert_eq!(failed["items"][0]["event_id"], "e3:order.rejected");

    notifier.assert_disabled(&id).await;

    // While disabled, new events are recorded as skipped for it.
    notifier.emit("e4:order.rejected", "order.rejected").await;
    let skipped = notifier.settled("e4:order.rejected").await;
    assert_eq!(skipped["deliveries"][0]["status"], "skipped");

    // Once the endpoint is back, the operator re-enables it and retries the dead letter.
    let receiver = Receiver::start(&[]).await;
    let pool = testkit::postgres::pool(&notifier.backends).await;
    sqlx::query("UPDATE subscriptions SET url = $1")
        .bind(receiver.url())
        .execute(&pool)
        .await
        .expect("point at the receiver");
    let (status, enabled) = notifier.post(&format!("/subscriptions/{id}/enable")).await;
    assert_eq!((status, enabled["status"].as_str()), (200, Some("enabled")));
    let delivery_id = delivery["id"].as_i64().expect("id");
    assert_eq!(
        notifier
            .post(&format!("/deliveries/{delivery_id}/retry"))
            .await
            .0,
        202
    );
    receiver.wait_for(1, WAIT).await;
    let notification = notifier.settled("e3:order.rejected").await;
    assert_eq!(notification["deliveries"][0]["status"], "sent");
    assert_eq!(
        notifier
            .post(&format!("/deliveries/{delivery_id}/retry"))
            .await
            .0,
        409
    );
    notifier.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redelivered_event_is_never_delivered_twice() {
    let notifier = spawn_notifier(5).await;
    let receiver = notifier.receiver_for(&["product.updated"]).await;

    notifier.emit("e5:product.updated", "product.updated").await;
    notifier.settled("e5:product.updated").await;
    // The processor emits again after a crash: same id, same body.
    notifier.emit("e5:product.updated", "product.updated").await;
    // Events are taken in order: once a later one is settled, the repeat was handled.
    notifier.emit("e6:product.updated", "product.updated").await;
    notifier.settled("e6:product.updated").await;
    let ids: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect();
    assert_eq!(ids, ["e5:product.updated", "e6:product.updated"]);
    let notification = notifier.settled("e5:product.updated").await;
    assert_eq!(notification["deliveries"].as_array().map(Vec::len), Some(1));
    notifier.stop().await;
}

/// True if publishing a `kind` event found no queue bound for it.
async fn unrouted(notifier: &crate::helpers::Notifier, id: &str, kind: &str) -> bool {
    notifier
        .try_emit(id, kind)
        .await
        .is_err_and(|e| e.to_string().contains("no queue is bound"))
}

#[tokio::test(flavor = "multi_thread")]
async fn events_nobody_subscribed_to_never_reach_the_notifier() {
    let notifier = spawn_notifier(5).await;
    let receiver = notifier.receiver_for(&["order.created"]).await;

    assert!(
        unrouted(&notifier, "e7:stock.low", "stock.low").await,
        "nobody wants stock.low: the broker has no queue for it"
    );
    notifier.emit("e8:order.created", "order.created").await;
    notifier.settled("e8:order.created").await;
    assert_eq!(notifier.get("/notifications/e7:stock.low").await.0, 404);
    assert_eq!(
        notifier
            .broker
            .depth(&notifier.topology.notifier_queue())
            .await,
        0
    );
    assert_eq!(receiver.received().len(), 1);
    assert_eq!(notifier.get("/notifications/never-sent").await.0, 404);
    notifier.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_types_reaching_the_notifier_follow_the_subscriptions() {
    let notifier = spawn_notifier(5).await;
    let low = Receiver::start(&[]).await;
    let (id, _) = notifier.subscribe(&low.url(), &["stock.low"]).await;
    let (status, _) = notifier.delete(&format!("/subscriptions/{id}")).await;
    assert_eq!(status, 204);
    assert!(
        unrouted(&notifier, "e9:stock.low", "stock.low").await,
        "its only subscription was deleted"
    );

    let again = notifier.receiver_for(&["stock.low"]).await;
    notifier.emit("e10:stock.low", "stock.low").await;
    let notification = notifier.settled("e10:stock.low").await;
    assert_eq!(notification["deliveries"].as_array().map(Vec::len), Some(1));
    assert_eq!(again.wait_for(1, WAIT).await.len(), 1);
    assert!(low.received().is_empty());
    notifier.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_catch_all_binding_left_by_an_earlier_version_is_removed() {
    let notifier = spawn_notifier(5).await;
    notifier.bind("#").await;
    let mut round = 0;
    testkit::wait::eventually("the catch-all binding to be removed", WAIT, || {
        round += 1;
        let id = format!("r{round}:stock.low");
        let notifier = &notifier;
        async move { unrouted(notifier, &id, "stock.low").await.then_some(()) }
    })
    .await;
    notifier.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_that_is_not_a_downstream_event_is_dead_lettered_with_why() {
    let notifier = spawn_notifier(5).await;
    let _receiver = notifier.receiver_for(&["order.created"]).await;
    let dead = notifier.topology.dead_letter_queue();
    for (id, body) in [
        (Some("msg_bad_1"), &b"not json"[..]),
        (
            Some("msg_bad_2"),
            br#"{"type":"order.shipped","timestamp":"2026-01-01T00:00:00Z","data":{}}"#,
        ),
        (
            None,
            br#"{"type":"stock.low","timestamp":"2026-01-01T00:00:00Z","data":{"source_event_id":"e","product_id":"p","stock":1,"threshold":10}}"#,
        ),
    ] {
        notifier.emit_raw("order.created", id, body).await;
        testkit::wait::eventually("the message to be dead-lettered", WAIT, || async {
            (notifier.broker.depth(&dead).await == 1).then_some(())
        })
        .await;
        let properties = notifier.take_dead_letter(body, "unparseable").await;
        let header = |name| shared::dead_letter::text_header(&properties, name);
        assert_eq!(header(headers::DEAD_SERVICE).as_deref(), Some("notifier"));
        assert_eq!(
            header(headers::SOURCE_QUEUE),
            Some(notifier.topology.notifier_queue())
        );
        assert!(header(headers::DEAD_ERROR).is_some_and(|e| !e.is_empty()));
    }
    assert_eq!(
        notifier
            .broker
            .depth(&notifier.topology.notifier_queue())
            .await,
        0
    );
    notifier.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_postgres_refuses_to_record_is_dead_lettered_and_the_queue_moves_on() {
    let notifier = spawn_notifier(5).await;
    let _receiver = notifier.receiver_for(&["stock.low"]).await;
    let pool = testkit::postgres::pool(&notifier.backends).await;
    testkit::sabotage::writes(
        &pool,
        "sabotage_notifications",
        "BEFORE INSERT ON notifications",
        "NEW.event_id = 'msg_refused'",
        "check_violation",
        "refused by the test",
    )
    .await;
    let body = br#"{"type":"stock.low","timestamp":"2026-01-01T00:00:00Z","data":{"source_event_id":"e","product_id":"p","stock":1,"threshold":10}}"#;
    // A NUL byte in the id: not an id a downstream event can have, refused before PostgreSQL.
    notifier
        .emit_raw("stock.low", Some("msg_nul\0"), body)
        .await;
    // A row PostgreSQL refuses.
    notifier
        .emit_raw("stock.low", Some("msg_refused"), body)
        .await;
    notifier
        .emit_raw("stock.low", Some("msg_after"), body)
        .await;
    let notification = notifier.settled("msg_after").await;
    assert_eq!(
        notification["deliveries"][0]["status"], "sent",
        "the queue moved on"
    );
    for (reason, error) in [
        ("unparseable", "visible ASCII"),
        ("invalid", "PostgreSQL refused"),
    ] {
        let properties = notifier.take_dead_letter(body, reason).await;
        let header = |name| shared::dead_letter::text_header(&properties, name);
        assert!(
            header(headers::DEAD_ERROR).is_some_and(|e| e.contains(error)),
            "{:?}",
            header(headers::DEAD_ERROR)
        );
    }
    notifier.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_while_an_attempt_cannot_be_recorded_stops_and_loses_nothing() {
    let sandbox = testkit::sandbox::Sandbox::new();
    let backends = sandbox.backends();
    let faulty = testkit::fault_proxy::Faulty::start(&backends).await;
    let through = faulty.backends.clone();
    let notifier = spawn_notifier_on(backends.clone(), |config| {
        config.backends = through;
        config.webhook_timeout = std::time::Duration::from_millis(500);
        // Far beyond the test's patience: the notifier must stop because its work ends, not
        // because a deadline cut it off.
        config.serving.shutdown_deadline = std::time::Duration::from_secs(600);
    })
    .await;
    // An endpoint that takes the request and never answers.
    let endpoint = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", endpoint.local_addr().expect("bound"));
    notifier.subscribe(&url, &["stock.low"]).await;
    notifier.emit("stuck:stock.low", "stock.low").await;
    let (held, _) = tokio::time::timeout(WAIT, endpoint.accept())
        .await
        .expect("the delivery was sent")
        .expect("accepted");

    // While the attempt waits for an answer, PostgreSQL goes: the attempt cannot be recorded,
    // and the notifier is asked to stop while it keeps trying.
    faulty.postgres.set(testkit::fault_proxy::Fault::Drop);
    tokio::time::timeout(WAIT, notifier.stop())
        .await
        .expect("the notifier stopped while PostgreSQL was away");
    drop(held);
    faulty.postgres.set(testkit::fault_proxy::Fault::Pass);

    // Nothing is lost: the delivery is still pending, unrecorded, under its lease...
    let pool = testkit::postgres::pool(&backends).await;
    let (status, attempts): (String, i32) =
        sqlx::query_as("SELECT status, attempts FROM deliveries WHERE event_id = $1")
            .bind("stuck:stock.low")
            .fetch_one(&pool)
            .await
            .expect("the delivery");
    assert_eq!((status.as_str(), attempts), ("pending", 0));
    // ...and once the lease ends (brought forward here), a notifier sends it again.
    let receiver = Receiver::start(&[]).await;
    sqlx::query("UPDATE deliveries SET lease_until = now() - interval '1 second'")
        .execute(&pool)
        .await
        .expect("lease ended");
    sqlx::query("UPDATE subscriptions SET url = $1")
        .bind(receiver.url())
        .execute(&pool)
        .await
        .expect("endpoint answers now");
    let again = spawn_notifier_on(backends, |_| {}).await;
    receiver.wait_for(1, WAIT).await;
    let notification = again.settled("stuck:stock.low").await;
    assert_eq!(notification["deliveries"][0]["status"], "sent");
    again.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_endpoint_holds_up_only_its_own_deliveries() {
    let notifier = spawn_notifier_with(|config| {
        config.per_endpoint = 2;
        config.webhook_timeout = std::time::Duration::from_secs(20);
    })
    .await;
    // An endpoint that takes requests and never answers.
    let slow = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", slow.local_addr().expect("bound"));
    let (slow_id, _) = notifier.subscribe(&url, &["stock.low"]).await;
    let fast = notifier.receiver_for(&["stock.low"]).await;
    for i in 0..6 {
        notifier
            .emit(&format!("slow{i}:stock.low"), "stock.low")
            .await;
    }

    // Every event reaches the endpoint that answers...
    fast.wait_for(6, WAIT).await;
    // ...while the slow one has two requests in flight and the rest wait their turn.
    let pool = testkit::postgres::pool(&notifier.backends).await;
    let (in_flight, pending): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE lease_until >= now()), count(*) FROM deliveries
         WHERE subscription_id = $1::uuid AND status = 'pending'",
    )
    .bind(&slow_id)
    .fetch_one(&pool)
    .await
    .expect("counted");
    assert_eq!((in_flight, pending), (2, 6));
    // Its connections closed, its attempts end and the notifier can drain.
    drop(slow);
    notifier.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sample_receiver_verifies_deliveries_with_the_standard_webhooks_library() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let notifier = spawn_notifier(5).await;
    let url = testkit::ports::closed_port_url("http");
    let port = url.rsplit(':').next().expect("a port").to_owned();
    let (_, secret) = notifier
        .subscribe(&format!("{url}/hook"), &["order.created"])
        .await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/webhook-receiver.py"
    );
    let mut receiver = tokio::process::Command::new("python3")
        .args([script, &port, &secret])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs the sample receiver");
    let mut lines = BufReader::new(receiver.stdout.take().expect("its output")).lines();
    let listening = lines
        .next_line()
        .await
        .expect("its output")
        .unwrap_or_default();
    assert!(
        listening.starts_with("Listening"),
        "the sample receiver needs the Standard Webhooks library \
         (python3 -m pip install --user --break-system-packages standardwebhooks): {listening:?}"
    );

    notifier.emit("sw1:order.created", "order.created").await;
    let notification = notifier.settled("sw1:order.created").await;
    assert_eq!(
        notification["deliveries"][0]["status"], "sent",
        "{notification}"
    );
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("in time")
        .expect("its output")
        .unwrap_or_default();
    assert_eq!(line, "webhook-id: sw1:order.created verified");
    notifier.stop().await;
}
