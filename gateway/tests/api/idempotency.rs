//! IETF `Idempotency-Key` semantics: replay, 422 on another body, 409 while in flight, a
//! failed publish that releases the key, an unconfirmed one that keeps it for its body, and
//! separate key spaces for events and orders.

use gateway::{idempotency::Idempotency, request::parse_event};
use shared::{
    connect::redis,
    contract::{EventKey, IngestKind},
};
use std::time::Duration;
use testkit::fault_proxy::Fault;

use crate::helpers::{broker_down, json, spawn_app, spawn_proxied, spawn_with, without_broker};

const BODY: &str = r#"{"product_id": "p1", "price": 10.5}"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_repeat_with_the_same_body_replays_the_first_answer_and_publishes_once() {
    let app = spawn_app().await;
    let first = app.post_event(BODY, Some("same-key")).await;
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first = json(first, 202).await;
    // Same content, other key order and spacing: the same body.
    let again = app
        .post_event(r#"{ "price": 10.5, "product_id": "p1" }"#, Some("same-key"))
        .await;
    assert_eq!(
        again
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    assert_eq!(json(again, 202).await, first);
    assert_eq!(app.queued().await, 1, "a replay must not publish again");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_body_event_id_is_an_idempotency_key_too() {
    let app = spawn_app().await;
    let body = r#"{"product_id": "p1", "stock": 4, "event_id": "body-key"}"#;
    json(app.post_event(body, None).await, 202).await;
    let again = app.post_event(body, None).await;
    assert!(again.headers().contains_key("idempotent-replayed"));
    assert_eq!(app.queued().await, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_key_with_another_body_is_422() {
    let app = spawn_app().await;
    json(app.post_event(BODY, Some("k-422")).await, 202).await;
    let other = app
        .post_event(r#"{"product_id": "p1", "price": 11}"#, Some("k-422"))
        .await;
    let body = json(other, 422).await;
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("different body"))
    );
    assert_eq!(app.queued().await, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeat_while_the_first_is_still_publishing_is_409() {
    let app = spawn_app().await;
    // Hold the lease as the first request would while it waits for its confirm.
    let store = Idempotency::new(
        redis::connect(app.backends.redis.clone(), None).expect("valid URL"),
        app.backends.namespace.clone(),
        Duration::from_secs(10),
        Duration::from_secs(60),
    );
    let request = parse_event(BODY.as_bytes(), time::OffsetDateTime::now_utc()).expect("valid");
    let key = EventKey {
        kind: IngestKind::ProductUpdate,
        owner: crate::helpers::KEY_NAME.parse().expect("valid owner"),
        id: "in-flight".parse().expect("valid key"),
    };
    let _lease = store
        .begin(&key, &request.fingerprint)
        .await
        .expect("Redis up");
    let response = app.post_event(BODY, Some("in-flight")).await;
    assert!(response.headers().contains_key("retry-after"));
    json(response, 409).await;
    assert_eq!(app.queued().await, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_publish_releases_the_key_so_the_retry_succeeds() {
    // A gateway whose broker is unreachable: its publish fails.
    let sandbox = testkit::sandbox::Sandbox::new();
    let backends = sandbox.backends();
    let broken = spawn_with(without_broker(backends.clone())).await;
    broker_down(broken.post_event(BODY, Some("retry-me")).await).await;
    let mut redis = testkit::redis::connect(&backends).await;
    let key = EventKey {
        kind: IngestKind::ProductUpdate,
        owner: crate::helpers::KEY_NAME.parse().expect("valid owner"),
        id: "retry-me".parse().expect("valid key"),
    };
    let record = shared::gateway::idempotency::state(&mut redis, &backends.namespace, &key)
        .await
        .expect("HGET");
    assert_eq!(record, None, "the lease must be released");

    // The client's retry, on a healthy gateway in the same namespace, is accepted.
    let healthy = crate::helpers::spawn_with(sandbox.backends()).await;
    healthy.wait_ready().await;
    json(healthy.post_event(BODY, Some("retry-me")).await, 202).await;
    assert_eq!(healthy.queued().await, 1);
    broken.stop().await;
    healthy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unconfirmed_publish_keeps_the_key_for_the_same_body_only() {
    // A gateway whose broker stops answering after the publish: no confirm comes.
    let (sandbox, faulty, stalled) =
        spawn_proxied(|direct, proxied| direct.amqp = proxied.amqp.clone(), |_| {}).await;
    faulty.amqp.set(Fault::Blackhole);
    let response = stalled.post_event(BODY, Some("unclear")).await;
    assert!(response.headers().contains_key("retry-after"));
    let body = json(response, 503).await;
    assert_eq!(body["outcome"], "unknown", "{body}");

    // The key is not free for another body...
    let healthy = spawn_with(sandbox.backends()).await;
    healthy.wait_ready().await;
    let other = healthy
        .post_event(r#"{"product_id": "p1", "price": 99}"#, Some("unclear"))
        .await;
    json(other, 422).await;
    // ...but the same body may be sent again, and is accepted.
    json(healthy.post_event(BODY, Some("unclear")).await, 202).await;
    let replay = healthy.post_event(BODY, Some("unclear")).await;
    assert!(replay.headers().contains_key("idempotent-replayed"));
    faulty.amqp.set(Fault::Pass);
    stalled.stop().await;
    healthy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_keyed_like_an_order_does_not_touch_the_order() {
    let app = spawn_app().await;
    json(
        app.post_event(r#"{"product_id": "p1", "stock": 5}"#, Some("order:o1"))
            .await,
        202,
    )
    .await;
    let order = app
        .post_json("/orders", r#"{"id": "o1", "sku": "p1", "qty": 1}"#)
        .await;
    assert_eq!(json(order, 202).await["status"], "pending");
    assert_eq!(app.queued().await, 2, "both published");
    app.stop().await;
}
