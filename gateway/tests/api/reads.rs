//! `GET /products/{id}`: cache first, PostgreSQL behind it.

use redis::AsyncCommands;
use testkit::postgres::execute;

use crate::helpers::{WAIT, json, spawn_app};

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_id_is_400_and_an_unknown_one_404() {
    let app = spawn_app().await;
    let bad = app.get("/products/bad%20id").await;
    assert_eq!(json(bad, 400).await["field"], "product_id");
    let unknown = app.get("/products/nobody").await;
    json(unknown, 404).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cache_miss_reads_postgres_and_fills_the_cache() {
    let app = spawn_app().await;
    execute(
        &app.backends,
        "INSERT INTO products (product_id, price, updated_at) VALUES ('db-only', 12.3400, now())",
    )
    .await;
    let response = app.get("/api/v1/products/db-only").await;
    let body = json(response, 200).await;
    assert_eq!(body["price"].to_string(), "12.3400");
    assert_eq!(body["stock"], serde_json::Value::Null);

    let key = format!("{}:product:db-only", app.backends.namespace.as_str());
    let mut redis = testkit::redis::connect(&app.backends).await;
    let cached: String = testkit::wait::eventually("the cache to be filled", WAIT, || {
        let mut redis = redis.clone();
        let key = key.clone();
        async move { redis.get::<_, Option<String>>(&key).await.ok().flatten() }
    })
    .await;
    assert!(cached.contains("12.3400"), "{cached}");

    // The next read is served from the cache: change the cache and see it.
    let _: () = redis
        .set(&key, cached.replace("12.3400", "99.1"))
        .await
        .expect("SET");
    let body = json(app.get("/products/db-only").await, 200).await;
    assert_eq!(body["price"].to_string(), "99.1");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_after_a_creation_shows_what_the_creation_answered() {
    // No processor runs here: the creation's event waits in its shard, and the read must still
    // show the price and stock the 201 showed.
    let app = spawn_app().await;
    let created = app
        .post_json("/products", r#"{"product_id": "ryw-1", "name": "Lamp", "category": "lighting", "price": 19.5, "stock": 4}"#)
        .await;
    let created = json(created, 201).await;
    let read = json(app.get("/products/ryw-1").await, 200).await;
    for field in ["price", "stock", "name", "category"] {
        assert_eq!(read[field], created[field], "{field}: {read} vs {created}");
    }
    assert_eq!(read["price"], 19.5);
    app.stop().await;
}
