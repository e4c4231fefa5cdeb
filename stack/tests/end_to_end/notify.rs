//! Through to the subscriber: an order placed at the gateway reaches a webhook, signed; ids of 1
//! and 255 characters travel end to end; the notifier's dead letters are recorded truthfully
//! and replay to it; and a processor killed between its commit and its publish still gets the
//! event delivered.

use std::{net::SocketAddr, time::Duration};

use serde_json::{Value, json};
use shared::config::Backends;
use stack::{KEY_NAME, Stack, WAIT};
use testkit::{
    fault_proxy::{Fault, Faulty},
    in_process::{InProcess, Killable},
    keys::TEST_KEY_NAME,
    sandbox::Sandbox,
    webhooks::{Receiver, subscribe},
};

use crate::helpers::{
    TEST_LEASE, accept_keyed, downstream_of_order, downstream_of_update, inbox_count, product_when,
    settled, wait_inbox,
};

/// The whole stack, and a receiver subscribed to `types`: the receiver and the subscription's
/// secret.
async fn with_subscriber(types: &[&str]) -> (Stack, Receiver, String) {
    let stack = Stack::start(None).await;
    let (receiver, secret) = stack.subscriber(types).await;
    (stack, receiver, secret)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_reaches_its_subscriber_as_one_signed_webhook() {
    let (stack, receiver, secret) = with_subscriber(&["order.created"]).await;

    stack
        .send("/events", r#"{"product_id": "hook-1", "stock": 5}"#)
        .await;
    product_when(&stack.client, stack.gateway, "hook-1", |p| p["stock"] == 5).await;
    stack
        .send("/orders", r#"{"id": "hook-o1", "sku": "hook-1", "qty": 2}"#)
        .await;

    let got = receiver.wait_for(1, WAIT).await;
    let webhook_id = downstream_of_order(KEY_NAME, "hook-o1", "order.created");
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

    let notification = settled(&stack.client, stack.notifier, &webhook_id).await;
    assert_eq!(notification["deliveries"][0]["status"], "sent");
    assert_eq!(
        receiver.received().len(),
        1,
        "one webhook: the subscription wants orders only"
    );
    stack.stop().await;
}

/// The gateway's test configuration on `backends`.
fn gateway(backends: &Backends) -> gateway::Config {
    let mut config = testkit::test_config!(gateway::Config, backends.clone());
    config.confirm_timeout = Duration::from_secs(2);
    config
}

/// The processor's test configuration on `backends`, with a short shard lease.
fn processor(backends: Backends) -> processor::Config {
    let mut config = stack::processor_config(backends);
    config.prefetch = 16;
    config.shard_lease = TEST_LEASE;
    config
}

#[tokio::test(flavor = "multi_thread")]
async fn a_processor_killed_between_commit_and_publish_still_gets_the_event_delivered() {
    let sandbox = Sandbox::new();
    let backends = sandbox.backends();
    let mut running = InProcess::default();
    let gateway_addr = running.launch(gateway::Application::build(gateway(&backends)).await);
    let notifier_addr = running
        .launch(notifier::Application::build(stack::notifier_config(backends.clone())).await);
    let client = testkit::keys::authorized_client(&backends.namespace).await;
    for addr in [gateway_addr, notifier_addr] {
        testkit::wait::until_ready(&client, &format!("http://{addr}"), WAIT).await;
    }
    let receiver = Receiver::start(&[]).await;
    let base = format!("http://{notifier_addr}");
    subscribe(&client, &base, &receiver.url(), &["product.updated"]).await;

    // The processor reaches Redis through a proxy: once Redis stops answering, a batch is
    // committed and then held refreshing the product cache, before its publish.
    let faulty = Faulty::start(&backends).await;
    let mut proxied = processor(backends.clone());
    proxied.backends.redis = faulty.backends.redis.clone();
    let killable = Killable::launch(move || processor::Application::build(proxied)).await;
    // Accepted, then committed as the inbox's `n`th event.
    let committed = async |key: &str, body: &str, n: i64| {
        accept_keyed(&client, gateway_addr, key, body).await;
        wait_inbox(&backends, n).await;
    };
    committed("kill-warm", r#"{"product_id": "kill-1", "stock": 40}"#, 1).await;

    // Redis now forwards nothing: the commit lands, and the processor is still refreshing the
    // cache, its publish not yet made, when it is killed.
    faulty.redis.set(Fault::Blackhole);
    committed("kill-evt", r#"{"product_id": "kill-1", "stock": 30}"#, 2).await;
    // Committed, then held refreshing the cache: its publish is not made.
    let metrics = format!("http://{}", killable.addr());
    testkit::wait::eventually("the processor to hold its batch", WAIT, || async {
        let text = testkit::metrics::scrape(&client, &metrics).await;
        let holds = testkit::metrics::counter(&text, shared::metric::HOLDS_TOTAL, "");
        (holds >= 1.0).then_some(())
    })
    .await;
    killable.kill().await;

    let pool = testkit::postgres::pool(&backends).await;
    let webhook_id = downstream_of_update(TEST_KEY_NAME, "kill-evt", "product.updated");
    let kept: Vec<String> = sqlx::query_scalar(
        "SELECT a::jsonb ->> 'type' FROM processed_events, unnest(announcements) a
         WHERE event_id = 'kill-evt'",
    )
    .fetch_all(&pool)
    .await
    .expect("read");
    assert_eq!(
        kept,
        ["product.updated"],
        "killed after the commit (which keeps the event on its inbox row) and before the publish"
    );
    assert!(
        receiver
            .received()
            .iter()
            .all(|r| r.header("webhook-id") != webhook_id)
    );

    // A processor comes back; the unacknowledged event is redelivered, recognised as applied,
    // and its downstream event published: the subscriber gets it once.
    running.launch(processor::Application::build(processor(backends.clone())).await);
    let notification = settled(&client, notifier_addr, &webhook_id).await;
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
    assert_eq!(inbox_count(&backends).await, 2, "applied once");
    while !running.is_empty() {
        running.stop_last().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn event_ids_of_1_and_255_characters_travel_end_to_end_to_the_webhook() {
    let (stack, receiver, secret) = with_subscriber(&["product.updated"]).await;
    // Every visible ASCII character, over and over: the longest key a client may send.
    let longest: String = (b'!'..=b'~').map(char::from).cycle().take(255).collect();
    for (key, stock) in [(longest.as_str(), 3), ("x", 4)] {
        let body = format!(r#"{{"product_id": "long-1", "stock": {stock}}}"#);
        accept_keyed(&stack.client, stack.gateway, key, &body).await;
    }
    product_when(&stack.client, stack.gateway, "long-1", |p| p["stock"] == 4).await;
    let got = receiver.wait_for(2, WAIT).await;
    for key in [longest.as_str(), "x"] {
        let webhook_id = downstream_of_update(KEY_NAME, key, "product.updated");
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
            settled(&stack.client, stack.notifier, &webhook_id).await["deliveries"][0]["status"],
            "sent"
        );
    }
    assert_eq!(inbox_count(&stack.backends).await, 2);
    stack.stop().await;
}

/// Waits until the processor at `processor` lists exactly `n` dead letters; them.
async fn dead_letters(client: &reqwest::Client, processor: SocketAddr, n: usize) -> Vec<Value> {
    let url = format!("http://{processor}/dead-letters");
    testkit::wait::eventually(&format!("{n} dead letters"), WAIT, || async {
        let (status, body) = testkit::http::get_json(client, &url).await;
        let items = body["items"].as_array()?.clone();
        (status == 200 && items.len() == n).then_some(items)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_notifiers_dead_letters_are_recorded_truthfully_and_replay_to_the_notifier() {
    let stack = Stack::start(None).await;
    let broker = testkit::broker::Broker::connect(&stack.backends).await;
    let queue = stack.topology.notifier_queue();

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
            &stack.topology.dead_letter_exchange(),
            "stock.low",
            body,
            lapin::BasicProperties::default()
                .with_message_id("msg_crashed".into())
                .with_type("stock.low".into())
                .with_headers(headers),
        )
        .await;

    let dead = dead_letters(&stack.client, stack.processor, 2).await;
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
    let response = stack
        .client
        .post(format!("http://{}/dead-letters/replay", stack.processor))
        .json(&json!({ "ids": [crashed["id"].clone()] }))
        .send()
        .await
        .expect("sent");
    let status = response.status();
    let replayed: Value = response.json().await.unwrap_or_default();
    assert_eq!(status, 200, "{replayed}");
    assert_eq!(replayed["results"][0]["outcome"], "replayed");
    testkit::wait::until_status(
        &stack.client,
        &format!("http://{}/notifications/msg_crashed", stack.notifier),
        200,
        "the notifier to take the replay in",
        WAIT,
    )
    .await;
    stack.stop().await;
}
