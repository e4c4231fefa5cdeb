//! A dependency that is down: `/ready` names it, writes get 503 with `Retry-After`, and the
//! gateway still starts and stays alive.

use crate::helpers::{WAIT, json, spawn_with};

async fn ready_names_down(app: &crate::helpers::TestApp, dependency: &str) {
    testkit::eventually(&format!("/ready to name {dependency}"), WAIT, || async {
        let response = app.client.get(app.url("/ready")).send().await.ok()?;
        if response.status() != 503 || !response.headers().contains_key("retry-after") {
            return None;
        }
        let body: serde_json::Value = response.json().await.ok()?;
        let down = body["down"].as_array()?;
        (down.len() == 1 && down[0] == dependency).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_rabbitmq_unreachable_ready_is_503_and_events_are_503() {
    let mut backends = testkit::backends();
    backends.amqp = vec![testkit::closed_port_url("amqp").parse().expect("valid URL")];
    let app = spawn_with(backends).await;
    ready_names_down(&app, "rabbitmq").await;
    let response = app
        .post_event(r#"{"product_id": "p1", "stock": 1}"#, None)
        .await;
    assert_eq!(response.headers()["retry-after"], "5");
    assert_eq!(json(response, 503).await["dependency"], "rabbitmq");
    let health = app.get("/health").await;
    assert_eq!(json(health, 200).await["status"], "healthy");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_redis_unreachable_ready_is_503_and_keyed_events_are_503() {
    let mut backends = testkit::backends();
    let url = testkit::closed_port_url("redis");
    backends.redis =
        ::redis::IntoConnectionInfo::into_connection_info(url.as_str()).expect("valid URL");
    let app = spawn_with(backends).await;
    ready_names_down(&app, "redis").await;
    let response = app
        .post_event(r#"{"product_id": "p1", "stock": 1}"#, Some("k1"))
        .await;
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(json(response, 503).await["dependency"], "redis");
    assert_eq!(
        app.queued().await,
        0,
        "nothing may be published without its idempotency record"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_postgres_unreachable_ready_is_503_and_uncached_reads_are_503() {
    let mut backends = testkit::backends();
    let url = format!("{}/pipeline", testkit::closed_port_url("postgres"));
    backends.database = url.parse().expect("valid URL");
    let app = spawn_with(backends).await;
    ready_names_down(&app, "postgres").await;
    let response = app.get("/products/p1").await;
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(json(response, 503).await["dependency"], "postgres");
    app.stop().await;
}
