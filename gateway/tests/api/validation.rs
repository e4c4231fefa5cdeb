//! Every way a `POST /events` can be refused: a clear status, a JSON body naming the field, and
//! nothing left behind (no message, no idempotency record).

use reqwest::Method;

use crate::helpers::{json, spawn_app};

/// (body, expected field or null) pairs that must each be a 400.
const BAD_BODIES: &[(&str, Option<&str>)] = &[
    (r#"{"product_id": "p1", "price": 1"#, None),
    (r#"not json at all"#, None),
    (r#"[{"product_id": "p1"}]"#, None),
    (r#"{"product_id": "p1", "stock": 1.5}"#, Some("stock")),
    (r#"{"product_id": "p1", "price": "x"}"#, Some("price")),
    (r#"{"price": 1}"#, Some("product_id")),
    (r#"{"product_id": "", "price": 1}"#, Some("product_id")),
    (
        r#"{"product_id": "has space", "price": 1}"#,
        Some("product_id"),
    ),
    (r#"{"product_id": 42, "price": 1}"#, Some("product_id")),
    (r#"{"product_id": "p1", "price": -0.01}"#, Some("price")),
    (
        r#"{"product_id": "p1", "price": 1000000000.01}"#,
        Some("price"),
    ),
    (r#"{"product_id": "p1", "price": 1.00001}"#, Some("price")),
    (r#"{"product_id": "p1", "price": 1e400}"#, Some("price")),
    (r#"{"product_id": "p1", "stock": -1}"#, Some("stock")),
    (
        r#"{"product_id": "p1", "stock": 2147483648}"#,
        Some("stock"),
    ),
    (r#"{"product_id": "p1"}"#, None),
    (
        r#"{"product_id": "p1", "stock": 1, "colour": "red"}"#,
        Some("colour"),
    ),
    (
        r#"{"product_id": "p1", "stock": 1, "stock": 2}"#,
        Some("stock"),
    ),
    (
        r#"{"product_id": "p1", "stock": 1, "occurred_at": "last tuesday"}"#,
        Some("occurred_at"),
    ),
    (
        r#"{"product_id": "p1", "stock": 1, "occurred_at": "2999-01-01T00:00:00Z"}"#,
        Some("occurred_at"),
    ),
    (
        r#"{"product_id": "p1", "stock": 1, "event_id": ""}"#,
        Some("event_id"),
    ),
];

#[tokio::test(flavor = "multi_thread")]
async fn each_invalid_body_is_a_400_naming_the_field_and_leaves_nothing_behind() {
    let app = spawn_app().await;
    for (body, field) in BAD_BODIES {
        let response = app.post_event(body, Some("key-of-a-bad-request")).await;
        let body_json = json(response, 400).await;
        assert_eq!(body_json["field"].as_str(), *field, "{body} -> {body_json}");
        assert!(body_json["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    app.assert_left_nothing().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_in_header_and_body_that_differ_is_a_400() {
    let app = spawn_app().await;
    let response = app
        .post_event(
            r#"{"product_id": "p1", "stock": 1, "event_id": "b"}"#,
            Some("a"),
        )
        .await;
    assert_eq!(json(response, 400).await["field"], "event_id");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_idempotency_key_is_a_400_naming_the_header() {
    let app = spawn_app().await;
    let long = "k".repeat(256);
    for key in [long.as_str(), "has space"] {
        let response = app
            .post_event(r#"{"product_id": "p1", "stock": 1}"#, Some(key))
            .await;
        assert_eq!(
            json(response, 400).await["field"],
            "Idempotency-Key",
            "{key}"
        );
    }
    assert_eq!(app.queued().await, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_64_kib_is_a_413() {
    let app = spawn_app().await;
    let body = format!(
        r#"{{"product_id": "p1", "stock": 1, "pad": "{}"}}"#,
        "x".repeat(70_000)
    );
    let response = app.post_event(&body, None).await;
    json(response, 413).await;
    assert_eq!(app.queued().await, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_not_declared_as_json_is_a_415() {
    let app = spawn_app().await;
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut request = app
            .client
            .post(app.url("/events"))
            .body(r#"{"product_id": "p1", "stock": 1}"#);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let response = request.send().await.expect("sent");
        json(response, 415).await;
    }
    assert_eq!(app.queued().await, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_method_is_a_405_and_an_unknown_path_a_404() {
    let app = spawn_app().await;
    for (method, path, status) in [
        (Method::PUT, "/events", 405),
        (Method::PUT, "/api/v1/events", 405),
        (Method::POST, "/products/p1", 405),
        (Method::GET, "/nowhere", 404),
    ] {
        json(app.send(method, path).await, status).await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_valid_event_is_202_with_its_id_after_the_message_is_in_its_shard() {
    let app = spawn_app().await;
    let response = app
        .post_event(
            r#"{"product_id": "p1", "price": 49.99, "stock": 100}"#,
            Some("evt-1"),
        )
        .await;
    let body = json(response, 202).await;
    assert_eq!(
        body,
        serde_json::json!({"event_id": "evt-1", "status": "accepted"})
    );
    let shard = app.topology.shard_for(&"p1".parse().expect("valid id"));
    let broker = testkit::broker::Broker::connect(&app.backends).await;
    let message = broker
        .take(&app.topology.shard_queue(shard))
        .await
        .expect("the message is in the product's shard");
    let properties = &message.properties;
    assert_eq!(
        properties.message_id().as_ref().map(|m| m.as_str()),
        Some("evt-1")
    );
    assert_eq!(*properties.delivery_mode(), Some(2), "persistent");
    let wire: serde_json::Value = serde_json::from_slice(&message.data).expect("JSON");
    assert_eq!(wire["price"].to_string(), "49.99");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_key_the_event_gets_a_uuidv7_and_the_versioned_path_works() {
    let app = spawn_app().await;
    let response = app
        .post_json("/api/v1/events", r#"{"product_id": "p1", "stock": 3}"#)
        .await;
    let body = json(response, 202).await;
    let id = uuid::Uuid::parse_str(body["event_id"].as_str().expect("id")).expect("a UUID");
    assert_eq!(id.get_version_num(), 7);
    assert_eq!(app.queued().await, 1);
    app.stop().await;
}
