//! `POST /orders` and `GET /orders/{id}` at the gateway: validation, idempotency by order id,
//! and the pending state before the processor has the order.

use crate::helpers::{json, spawn_app};

async fn post_order(app: &crate::helpers::TestApp, body: &str) -> reqwest::Response {
    app.post_json("/orders", body.to_owned()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_orders_are_400_naming_the_field_and_leave_nothing_behind() {
    let app = spawn_app().await;
    for (body, field) in [
        (r#"{"sku": "s1", "qty": 1}"#, "id"),
        (r#"{"id": "o 1", "sku": "s1", "qty": 1}"#, "id"),
        (r#"{"id": "o1", "qty": 1}"#, "sku"),
        (r#"{"id": "o1", "sku": "s1", "qty": 0}"#, "qty"),
        (r#"{"id": "o1", "sku": "s1", "qty": 2.5}"#, "qty"),
        (
            r#"{"id": "o1", "sku": "s1", "qty": 1, "email": "not-an-address"}"#,
            "email",
        ),
        (
            r#"{"id": "o1", "sku": "s1", "qty": 1, "gift": true}"#,
            "gift",
        ),
    ] {
        assert_eq!(
            json(post_order(&app, body).await, 400).await["field"],
            field,
            "{body}"
        );
    }
    let response = app
        .post(
            "/api/v1/orders",
            "text/plain",
            r#"{"id": "o1", "sku": "s1", "qty": 1}"#,
        )
        .await;
    json(response, 415).await;
    assert_eq!(app.queued().await, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_id_is_its_idempotency_key_and_reads_as_pending_until_applied() {
    let app = spawn_app().await;
    let body = r#"{"id": "order123", "sku": "mag-safe-phone-case", "qty": 2, "email": "a@b.co"}"#;
    let first = json(post_order(&app, body).await, 202).await;
    assert_eq!(
        first,
        serde_json::json!({"order_id": "order123", "status": "pending"})
    );
    let again = post_order(&app, body).await;
    assert!(again.headers().contains_key("idempotent-replayed"));
    assert_eq!(json(again, 202).await, first);
    let other = post_order(
        &app,
        r#"{"id": "order123", "sku": "mag-safe-phone-case", "qty": 3}"#,
    )
    .await;
    json(other, 422).await;
    assert_eq!(app.queued().await, 1, "published once");

    let pending = json(app.get("/orders/order123").await, 200).await;
    assert_eq!(pending["status"], "pending");
    assert_eq!(pending["qty"], 2);
    let unknown = app.get("/orders/nobody").await;
    json(unknown, 404).await;
    let bad = app.get("/orders/bad%20id").await;
    assert_eq!(json(bad, 400).await["field"], "id");
    app.stop().await;
}
