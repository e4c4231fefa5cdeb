//! Orders end to end: stock reserved atomically, rejections with reasons, applied once, in
//! order with the product's updates.

use crate::helpers::{Pipeline, WAIT, spawn_pipeline};

async fn order(pipeline: &Pipeline, id: &str, sku: &str, qty: i64) {
    let response = pipeline
        .client
        .post(format!("http://{}/orders", pipeline.gateway))
        .header("content-type", "application/json")
        .body(format!(r#"{{"id": "{id}", "sku": "{sku}", "qty": {qty}}}"#))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 202);
}

async fn order_status(pipeline: &Pipeline, id: &str) -> serde_json::Value {
    testkit::wait::eventually(&format!("order {id} to be applied"), WAIT, || async {
        let r = pipeline
            .client
            .get(format!("http://{}/orders/{id}", pipeline.gateway))
            .send()
            .await
            .ok()?;
        let body: serde_json::Value = r.json().await.ok()?;
        (body["status"] != "pending").then_some(body)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_reserves_stock_or_is_rejected_with_a_reason() {
    let pipeline = spawn_pipeline().await;
    pipeline
        .accept(r#"{"product_id": "case-1", "price": 19.99, "stock": 5}"#)
        .await;
    pipeline.product_when("case-1", |p| p["stock"] == 5).await;

    order(&pipeline, "o-1", "case-1", 2).await;
    let created = order_status(&pipeline, "o-1").await;
    assert_eq!(created["status"], "created");
    assert_eq!(created["sku"], "case-1");
    pipeline.product_when("case-1", |p| p["stock"] == 3).await;

    order(&pipeline, "o-2", "case-1", 4).await;
    let rejected = order_status(&pipeline, "o-2").await;
    assert_eq!(rejected["status"], "rejected");
    assert_eq!(rejected["reason"], "insufficient_stock");

    order(&pipeline, "o-3", "no-such-product", 1).await;
    assert_eq!(
        order_status(&pipeline, "o-3").await["reason"],
        "unknown_product"
    );
    assert_eq!(
        pipeline.product("case-1").await.expect("exists")["stock"],
        3,
        "never negative"
    );
    assert!(
        pipeline.product("no-such-product").await.is_none(),
        "an order creates no product"
    );

    // The same order again: replayed by the gateway, applied once.
    order(&pipeline, "o-1", "case-1", 2).await;
    crate::helpers::wait_inbox(&pipeline, 4).await;
    assert_eq!(
        pipeline.product("case-1").await.expect("exists")["stock"],
        3
    );
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn orders_and_updates_on_one_product_apply_in_order_with_lww_for_stock_sets() {
    let pipeline = spawn_pipeline().await;
    let set = |stock: i64, at: &str| {
        format!(r#"{{"product_id": "mix-1", "stock": {stock}, "occurred_at": "{at}"}}"#)
    };
    pipeline
        .accept_keyed("s-10", &set(10, "2026-01-01T00:00:10Z"))
        .await;
    order(&pipeline, "m-1", "mix-1", 3).await;
    // An older stock count arriving late does not overwrite: stock stays 7.
    pipeline
        .accept_keyed("s-old", &set(100, "2026-01-01T00:00:05Z"))
        .await;
    order(&pipeline, "m-2", "mix-1", 5).await;
    crate::helpers::wait_inbox(&pipeline, 4).await;
    assert_eq!(order_status(&pipeline, "m-2").await["status"], "created");
    assert_eq!(pipeline.product("mix-1").await.expect("exists")["stock"], 2);
    // A newer count sets the stock outright.
    pipeline
        .accept_keyed("s-new", &set(20, "2026-01-01T00:00:20Z"))
        .await;
    pipeline.product_when("mix-1", |p| p["stock"] == 20).await;
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_update_keyed_like_an_order_and_that_order_are_both_applied() {
    let pipeline = spawn_pipeline().await;
    pipeline
        .accept_keyed("order:twin-o1", r#"{"product_id": "twin-1", "stock": 5}"#)
        .await;
    pipeline.product_when("twin-1", |p| p["stock"] == 5).await;
    order(&pipeline, "twin-o1", "twin-1", 2).await;
    assert_eq!(
        order_status(&pipeline, "twin-o1").await["status"],
        "created"
    );
    pipeline.product_when("twin-1", |p| p["stock"] == 3).await;
    assert_eq!(pipeline.inbox_count().await, 2, "two events, each applied");
    pipeline.stop().await;
}
