//! What lands in the source of truth: exact decimals, partial updates, per-field
//! last-writer-wins whatever the arrival order.

use crate::helpers::spawn_pipeline;

#[tokio::test(flavor = "multi_thread")]
async fn a_price_round_trips_exactly_and_a_partial_update_keeps_the_other_field() {
    let pipeline = spawn_pipeline().await;
    pipeline
        .accept(r#"{"product_id": "abc123", "price": 49.99, "stock": 100}"#)
        .await;
    let product = pipeline.product_when("abc123", |p| p["stock"] == 100).await;
    assert_eq!(product["price"].to_string(), "49.99", "exact, not a float");

    pipeline
        .accept(r#"{"product_id": "abc123", "stock": 7}"#)
        .await;
    let product = pipeline.product_when("abc123", |p| p["stock"] == 7).await;
    assert_eq!(product["price"].to_string(), "49.99", "price untouched");

    pipeline
        .accept(r#"{"product_id": "abc123", "price": 0.1}"#)
        .await;
    let product = pipeline
        .product_when("abc123", |p| {
            p["price"].as_number().map(ToString::to_string).as_deref() == Some("0.1")
        })
        .await;
    assert_eq!(product["stock"], 7, "stock untouched");

    let pool = testkit::postgres::pool(&pipeline.backends).await;
    let stored: String =
        sqlx::query_scalar("SELECT price::text FROM products WHERE product_id = 'abc123'")
            .fetch_one(&pool)
            .await
            .expect("row");
    assert_eq!(stored, "0.1", "NUMERIC keeps the exact digits");
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn events_sent_out_of_order_converge_per_field_to_the_latest() {
    let pipeline = spawn_pipeline().await;
    // Sent newest-first and interleaved; the final state must be what their occurred_at says.
    let events = [
        (
            "e4",
            r#""price": 40, "occurred_at": "2026-01-01T00:00:04Z""#,
        ),
        (
            "e1",
            r#""price": 10, "stock": 1, "occurred_at": "2026-01-01T00:00:01Z""#,
        ),
        ("e3", r#""stock": 3, "occurred_at": "2026-01-01T00:00:03Z""#),
        (
            "e2",
            r#""price": 20, "stock": 2, "occurred_at": "2026-01-01T00:00:02Z""#,
        ),
        // Same instant as e4: the larger event id wins the tie.
        (
            "e0",
            r#""price": 39, "occurred_at": "2026-01-01T00:00:04Z""#,
        ),
        (
            "e5",
            r#""price": 41, "occurred_at": "2026-01-01T00:00:04Z""#,
        ),
    ];
    for (id, fields) in events {
        let body = format!(r#"{{"product_id": "lww-1", {fields}}}"#);
        pipeline.accept_keyed(id, &body).await;
    }
    crate::helpers::wait_inbox(&pipeline, 6).await;
    let product = pipeline.product("lww-1").await.expect("exists");
    assert_eq!(product["price"], 41);
    assert_eq!(product["stock"], 3);
    pipeline.stop().await;
}
