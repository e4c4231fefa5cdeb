//! Through to the subscriber: an order placed at the gateway reaches a webhook, and a processor
//! killed between its commit and its publish still gets the event delivered.

use serde_json::{Value, json};
use testkit::{
    fault_proxy::{Fault, Faulty},
    services::{env_urls, through},
    webhooks::{Receiver, subscribe},
};

use crate::helpers::{self, Pipeline, WAIT, spawn_gateway_only, spawn_pipeline, wait_inbox};

/// A whole pipeline with a notifier, and a receiver subscribed to `types`: the notifier's
/// address, the receiver and the subscription's secret.
async fn with_subscriber(types: &[&str]) -> (Pipeline, std::net::SocketAddr, Receiver, String) {
    let mut pipeline = spawn_pipeline().await;
    let backends = pipeline.backends.clone();
    let notifier = pipeline.start_notifier(backends).await;
    let receiver = Receiver::start(&[]).await;
    let base = format!("http://{notifier}");
    let (_, secret) = subscribe(&pipeline.client, &base, &receiver.url(), types).await;
    (pipeline, notifier, receiver, secret)
}

/// The notification of `event_id` once its deliveries are settled.
async fn settled(
    client: &reqwest::Client,
    notifier: std::net::SocketAddr,
    event_id: &str,
) -> Value {
    testkit::eventually(&format!("{event_id} to be delivered"), WAIT, || async {
        let response = client
            .get(format!("http://{notifier}/notifications/{event_id}"))
            .send()
            .await
            .ok()?;
        let body: Value = (response.status() == 200).then_some(response.json().await.ok()?)?;
        let deliveries = body["deliveries"].as_array()?;
        (!deliveries.is_empty() && deliveries.iter().all(|d| d["status"] != "pending"))
            .then_some(body)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_reaches_its_subscriber_as_one_signed_webhook() {
    let (pipeline, notifier, receiver, secret) = with_subscriber(&["order.created"]).await;

    pipeline
        .accept(r#"{"product_id": "hook-1", "stock": 5}"#)
        .await;
    pipeline.product_when("hook-1", |p| p["stock"] == 5).await;
    let response = pipeline
        .client
        .post(format!("http://{}/orders", pipeline.gateway))
        .header("content-type", "application/json")
        .body(r#"{"id": "hook-o1", "sku": "hook-1", "qty": 2}"#)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 202);

    let got = receiver.wait_for(1, WAIT).await;
    let webhook_id = helpers::downstream_of_order("hook-o1", "order.created");
    assert_eq!(got[0].header("webhook-id"), webhook_id);
    let body: Value = serde_json::from_slice(&got[0].body).expect("JSON");
    assert_eq!(
        (
            body["data"]["order_id"].as_str(),
            body["data"]["qty"].as_i64()
        ),
        (Some("hook-o1"), Some(2))
    );
    let timestamp: i64 = got[0].header("webhook-timestamp").parse().expect("seconds");
    let expected = notifier::signing::sign(&secret, &webhook_id, timestamp, &got[0].body);
    assert_eq!(got[0].header("webhook-signature"), expected);

    let notification = settled(&pipeline.client, notifier, &webhook_id).await;
    assert_eq!(notification["deliveries"][0]["status"], "sent");
    assert_eq!(
        receiver.received().len(),
        1,
        "one webhook: the subscription wants orders only"
    );
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_processor_killed_between_commit_and_publish_still_gets_the_event_delivered() {
    let backends = testkit::backends();
    let mut pipeline = spawn_gateway_only(backends.clone()).await;
    let notifier = pipeline.start_notifier(backends.clone()).await;
    let receiver = Receiver::start(&[]).await;
    let base = format!("http://{notifier}");
    subscribe(
        &pipeline.client,
        &base,
        &receiver.url(),
        &["product.updated"],
    )
    .await;

    // The processor reaches PostgreSQL through a proxy, so its replies can be slowed down.
    let faulty = Faulty::start(&backends).await;
    let database_url = through(&env_urls()[2], faulty.postgres.addr());
    let mut child = helpers::processor_process_with(&backends, &[("DATABASE_URL", database_url)]);
    pipeline
        .accept_keyed("kill-warm", r#"{"product_id": "kill-1", "stock": 40}"#)
        .await;
    wait_inbox(&pipeline, 1).await;

    // Every reply now takes 400 ms: the commit lands, and the processor is still waiting to
    // read what to publish when it is killed.
    faulty
        .postgres
        .set(Fault::Latency(std::time::Duration::from_millis(400)));
    pipeline
        .accept_keyed("kill-evt", r#"{"product_id": "kill-1", "stock": 30}"#)
        .await;
    wait_inbox(&pipeline, 2).await;
    child.start_kill().expect("SIGKILL");
    child.wait().await.expect("reaped");

    let pool = testkit::database(&backends).await;
    let webhook_id = helpers::downstream_of_update("kill-evt", "product.updated");
    let unpublished: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE event_id = $1")
        .bind(&webhook_id)
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(
        unpublished, 1,
        "killed after the commit and before the publish"
    );
    assert!(
        receiver
            .received()
            .iter()
            .all(|r| r.header("webhook-id") != webhook_id)
    );

    // A processor comes back; the unacknowledged event is redelivered, recognised as applied,
    // and its downstream event published: the subscriber gets it once.
    let direct = pipeline.backends.clone();
    pipeline.start_processor(direct).await;
    let notification = settled(&pipeline.client, notifier, &webhook_id).await;
    assert_eq!(notification["deliveries"][0]["status"], "sent");
    let delivered: Vec<_> = receiver
        .received()
        .into_iter()
        .filter(|r| r.header("webhook-id") == webhook_id)
        .collect();
    assert_eq!(delivered.len(), 1);
    let body: Value = serde_json::from_slice(&delivered[0].body).expect("JSON");
    assert_eq!(
        (
            body["data"]["old"]["stock"].as_i64(),
            body["data"]["new"]["stock"].as_i64()
        ),
        (Some(40), Some(30))
    );
    assert_eq!(pipeline.inbox_count().await, 2, "applied once");
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn event_ids_of_1_and_255_characters_travel_end_to_end_to_the_webhook() {
    let (pipeline, notifier, receiver, secret) = with_subscriber(&["product.updated"]).await;
    // Every visible ASCII character, over and over: the longest key a client may send.
    let longest: String = (b'!'..=b'~').map(char::from).cycle().take(255).collect();
    for (key, stock) in [(longest.as_str(), 3), ("x", 4)] {
        pipeline
            .accept_keyed(
                key,
                &format!(r#"{{"product_id": "long-1", "stock": {stock}}}"#),
            )
            .await;
    }
    pipeline.product_when("long-1", |p| p["stock"] == 4).await;
    let got = receiver.wait_for(2, WAIT).await;
    for key in [longest.as_str(), "x"] {
        let webhook_id = helpers::downstream_of_update(key, "product.updated");
        let request = got
            .iter()
            .find(|r| r.header("webhook-id") == webhook_id)
            .expect("delivered under its id");
        let body: Value = serde_json::from_slice(&request.body).expect("JSON");
        assert_eq!(body["data"]["source_event_id"], key);
        assert_eq!(body["type"], "product.updated");
        let timestamp: i64 = request
            .header("webhook-timestamp")
            .parse()
            .expect("seconds");
        assert_eq!(
            request.header("webhook-signature"),
            notifier::signing::sign(&secret, &webhook_id, timestamp, &request.body)
        );
        assert_eq!(
            settled(&pipeline.client, notifier, &webhook_id).await["deliveries"][0]["status"],
            "sent"
        );
    }
    assert_eq!(pipeline.inbox_count().await, 2);
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_notifiers_dead_letters_are_recorded_truthfully_and_replay_to_the_notifier() {
    let mut pipeline = spawn_pipeline().await;
    let backends = pipeline.backends.clone();
    let notifier = pipeline.start_notifier(backends).await;
    let broker = testkit::Broker::connect(&pipeline.backends).await;
    let queue = pipeline.topology.notifier_queue();

    // What the notifier cannot read, it sets aside itself, saying why. (Published straight to
    // its queue: no subscription can want an unknown type, so the events exchange drops it.)
    broker
        .publish(
            "",
            &queue,
            br#"{"type":"order.shipped","timestamp":"2026-01-01T00:00:00Z","data":{}}"#,
            lapin::BasicProperties::default().with_message_id("msg_unknown".into()),
        )
        .await;
    // What crashed the notifier's consumer too often, the broker sets aside from its queue.
    let body = br#"{"type":"stock.low","timestamp":"2026-01-01T00:00:00Z","data":{"source_event_id":"e1","product_id":"p1","stock":2,"threshold":10}}"#;
    let mut headers = lapin::types::FieldTable::default();
    for (name, value) in [
        ("x-first-death-reason", "delivery_limit"),
        ("x-first-death-queue", queue.as_str()),
    ] {
        headers.insert(
            name.into(),
            lapin::types::AMQPValue::LongString(value.into()),
        );
    }
    broker
        .publish(
            &pipeline.topology.dead_letter_exchange(),
            "stock.low",
            body,
            lapin::BasicProperties::default()
                .with_message_id("msg_crashed".into())
                .with_type("stock.low".into())
                .with_headers(headers),
        )
        .await;

    let dead = pipeline.dead_letters(2).await;
    let by_event = |id: &str| {
        dead.iter()
            .find(|d| d["event_id"] == id)
            .unwrap_or_else(|| panic!("{id} is a dead letter: {dead:?}"))
            .clone()
    };
    // Each with the truthful reason, who set it aside, and the notifier's queue to go back to.
    for (id, reason, service) in [
        ("msg_unknown", "unparseable", "notifier"),
        ("msg_crashed", "delivery_limit", "rabbitmq"),
    ] {
        let dead = by_event(id);
        let recorded = (&dead["reason"], &dead["service"], &dead["source_queue"]);
        assert_eq!(
            recorded,
            (&json!(reason), &json!(service), &json!(queue)),
            "{id}"
        );
    }
    let crashed = by_event("msg_crashed");
    assert!(
        crashed["error"]
            .as_str()
            .is_some_and(|e| e.contains(&queue)),
        "{crashed}"
    );

    // Replayed, it goes back to the notifier, which takes it in.
    let (status, replayed) = pipeline
        .processor_post(
            "/dead-letters/replay",
            json!({ "ids": [crashed["id"].clone()] }),
        )
        .await;
    assert_eq!(status, 200, "{replayed}");
    assert_eq!(replayed["results"][0]["outcome"], "replayed");
    testkit::until_status(
        &pipeline.client,
        &format!("http://{notifier}/notifications/msg_crashed"),
        200,
        "the notifier to take the replay in",
        WAIT,
    )
    .await;
    pipeline.stop().await;
}
