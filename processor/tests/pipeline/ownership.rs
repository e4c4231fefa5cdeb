//! Identifiers live in the space of the API key that sent them: two keys' identical
//! `Idempotency-Key`s, event ids and order ids never meet (no `422` for another key's key, no
//! pre-claiming another's event id, each order readable by the key that placed it and by keys
//! with `orders:read_all` or `ops` only); what the inbox held from before ids were scoped
//! (the legacy space) keeps meaning what it meant.

use serde_json::json;
use shared::auth::{Scope, Scopes};

use crate::helpers::{WAIT, spawn_pipeline, wait_inbox};

/// A client of a new key named `name` with `scopes`, in the pipeline's namespace.
async fn client_of(
    pipeline: &crate::helpers::Pipeline,
    name: &str,
    scopes: &[Scope],
) -> reqwest::Client {
    let scopes: Scopes = scopes.iter().copied().collect();
    let key = testkit::keys::named_api_key(&pipeline.backends.namespace, name, scopes, None).await;
    testkit::keys::client_with_key(&key)
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    idempotency_key: Option<&str>,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let mut request = client.post(url).json(&body);
    if let Some(key) = idempotency_key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await.expect("sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn two_keys_using_one_idempotency_key_or_event_id_never_meet() {
    let pipeline = spawn_pipeline().await;
    let events = format!("http://{}/events", pipeline.gateway);
    let erp = client_of(&pipeline, "erp", &[Scope::EventsWrite]).await;
    let feed = client_of(&pipeline, "supplier-feed", &[Scope::EventsWrite]).await;

    // The same Idempotency-Key from two keys, for two products: two events, both applied.
    for (client, product, stock) in [(&erp, "own-a", 5), (&feed, "own-b", 7)] {
        let body = json!({"product_id": product, "stock": stock});
        let (status, body) = post(client, &events, Some("shared-1"), body).await;
        assert_eq!(
            status, 202,
            "each key's idempotency keys are its own: {body}"
        );
        assert!(body.get("error").is_none(), "{body}");
    }

    // A key pre-claiming an event id another key will use does not make the real event a
    // duplicate.
    for (client, product, stock) in [(&feed, "own-c", 1), (&erp, "own-d", 9)] {
        let body = json!({"event_id": "po-77", "product_id": product, "stock": stock});
        let (status, _) = post(client, &events, None, body).await;
        assert_eq!(status, 202);
        pipeline
            .product_when(product, |p| p["stock"] == stock)
            .await;
    }
    pipeline.product_when("own-a", |p| p["stock"] == 5).await;
    pipeline.product_when("own-b", |p| p["stock"] == 7).await;

    // Each key's own repeat is still recognised: a replay for the same body, 422 for another.
    let body = json!({"product_id": "own-a", "stock": 1});
    let (status, body) = post(&feed, &events, Some("shared-1"), body).await;
    assert_eq!(status, 422, "{body}");
    wait_inbox(&pipeline, 4).await;
    let pool = testkit::postgres::pool(&pipeline.backends).await;
    let owners: Vec<(String, String)> = sqlx::query_as(
        "SELECT event_id, owner FROM processed_events WHERE event_id IN ('shared-1', 'po-77')
         ORDER BY event_id, owner",
    )
    .fetch_all(&pool)
    .await
    .expect("the inbox");
    assert_eq!(
        owners,
        [
            ("po-77".to_owned(), "erp".to_owned()),
            ("po-77".to_owned(), "supplier-feed".to_owned()),
            ("shared-1".to_owned(), "erp".to_owned()),
            ("shared-1".to_owned(), "supplier-feed".to_owned()),
        ]
    );
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_id_applied_before_ids_were_scoped_stays_applied_for_every_key() {
    let pipeline = spawn_pipeline().await;
    // The inbox row of an event applied by an earlier version: no owner.
    pipeline
        .execute(
            "INSERT INTO processed_events (event_id, kind, product_id, occurred_at, received_at)
             VALUES ('legacy-1', 'product.update', 'old-1', now(), now())",
        )
        .await;
    pipeline
        .accept_keyed("legacy-1", r#"{"product_id": "old-1", "stock": 3}"#)
        .await;
    pipeline
        .accept_keyed("legacy-2", r#"{"product_id": "old-1", "price": 2}"#)
        .await;
    // The second is applied; the first was, before: a duplicate, not applied again.
    pipeline.product_when("old-1", |p| p["price"] == 2).await;
    let product = pipeline.product("old-1").await.expect("the product");
    assert_eq!(product["stock"], serde_json::Value::Null, "{product}");
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_is_its_placers_to_read_and_another_keys_order_is_404() {
    let pipeline = spawn_pipeline().await;
    pipeline
        .accept(r#"{"product_id": "mug-9", "stock": 10}"#)
        .await;
    pipeline.product_when("mug-9", |p| p["stock"] == 10).await;
    let shop = client_of(&pipeline, "shop", &[Scope::OrdersWrite, Scope::OrdersRead]).await;
    let other = client_of(
        &pipeline,
        "other-shop",
        &[Scope::OrdersWrite, Scope::OrdersRead],
    )
    .await;
    let support = client_of(&pipeline, "support", &[Scope::OrdersReadAll]).await;
    let orders = format!("http://{}/orders", pipeline.gateway);
    let order = |id: &str| json!({"id": id, "sku": "mug-9", "qty": 1, "email": "c@example.com"});
    let (status, _) = post(&shop, &orders, None, order("o-1")).await;
    assert_eq!(status, 202);

    let read = |client: &reqwest::Client, query: &str| {
        let url = format!("{orders}/o-1{query}");
        let client = client.clone();
        async move {
            let response = client.get(url).send().await.expect("sent");
            let status = response.status().as_u16();
            (
                status,
                response
                    .json::<serde_json::Value>()
                    .await
                    .unwrap_or_default(),
            )
        }
    };
    let decided = testkit::wait::eventually("the order decided", WAIT, || async {
        let (status, body) = read(&shop, "").await;
        (status == 200 && body["status"] == "created").then_some(body)
    })
    .await;
    assert_eq!(decided["placed_by"], "shop");
    // Another key with orders:read cannot read it, nor ask for it by its placer.
    let (status, body) = read(&other, "").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = read(&other, "?placed_by=shop").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["scope"], "orders:read_all");
    // A key with orders:read_all reads any key's order.
    let (status, body) = read(&support, "").await;
    assert_eq!(
        (status, body["placed_by"].clone()),
        (200, json!("shop")),
        "{body}"
    );

    // The other key's own o-1 is another order: both decided, each its placer's.
    let (status, _) = post(&other, &orders, None, order("o-1")).await;
    assert_eq!(status, 202);
    testkit::wait::eventually("the second o-1 decided", WAIT, || async {
        let (status, body) = read(&other, "").await;
        (status == 200 && body["placed_by"] == "other-shop" && body["status"] == "created")
            .then_some(())
    })
    .await;
    let stock = pipeline.product_when("mug-9", |p| p["stock"] == 8).await;
    assert_eq!(stock["stock"], 8, "two orders, each applied once");
    let (status, body) = read(&support, "").await;
    assert_eq!(status, 409, "two keys' o-1: {body}");
    let (status, body) = read(&support, "?placed_by=other-shop").await;
    assert_eq!(
        (status, body["placed_by"].clone()),
        (200, json!("other-shop")),
        "{body}"
    );
    pipeline.stop().await;
}
