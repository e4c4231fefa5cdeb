//! A dependency that is down: `/ready` names it, writes get 503 with `Retry-After`, and the
//! gateway still starts and stays alive. PostgreSQL is the exception: once the API keys are
//! read, the gateway accepts events without it and stays ready, reporting it as degraded.

use testkit::{fault_proxy::Fault, postgres::execute};

use crate::helpers::{WAIT, broker_down, json, spawn_proxied, spawn_with, without_broker};

async fn ready_names_down(app: &crate::helpers::TestApp, dependency: &str) {
    testkit::wait::eventually(&format!("/ready to name {dependency}"), WAIT, || async {
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
    let sandbox = testkit::sandbox::Sandbox::new();
    let app = spawn_with(without_broker(sandbox.backends())).await;
    ready_names_down(&app, "rabbitmq").await;
    let response = app
        .post_event(r#"{"product_id": "p1", "stock": 1}"#, None)
        .await;
    assert_eq!(broker_down(response).await, "5");
    let health = app.get("/health").await;
    assert_eq!(json(health, 200).await["status"], "healthy");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_redis_unreachable_ready_is_503_and_keyed_events_are_503() {
    let sandbox = testkit::sandbox::Sandbox::new();
    let mut backends = sandbox.backends();
    let url = testkit::ports::closed_port_url("redis");
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
async fn with_postgres_unreachable_from_the_start_ready_waits_for_the_api_keys_and_reads_are_503() {
    let sandbox = testkit::sandbox::Sandbox::new();
    let mut backends = sandbox.backends();
    let url = format!("{}/pipeline", testkit::ports::closed_port_url("postgres"));
    backends.database = url.parse().expect("valid URL");
    let app = spawn_with(backends).await;
    // It has never read the API keys: it cannot tell a caller's key, so it is not ready.
    let ready = testkit::wait::eventually("/ready to wait for the API keys", WAIT, || async {
        let response = app.client.get(app.url("/ready")).send().await.ok()?;
        let body: serde_json::Value = response.json().await.ok()?;
        let settled =
            body["dependencies"]["rabbitmq"] == "up" && body["dependencies"]["redis"] == "up";
        (settled && body["degraded"] == serde_json::json!(["postgres"])).then_some(body)
    })
    .await;
    assert_eq!(ready["status"], "unavailable", "{ready}");
    assert_eq!(
        ready["waiting_for"],
        serde_json::json!(["api_keys"]),
        "{ready}"
    );
    assert_eq!(ready["down"], serde_json::json!([]), "{ready}");
    let response = app.get("/products/p1").await;
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(json(response, 503).await["dependency"], "postgres");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_postgres_cut_after_start_the_gateway_stays_ready_and_accepts_events() {
    let (_sandbox, faulty, app) = spawn_proxied(
        |direct, proxied| direct.database = proxied.database.clone(),
        |_| {},
    )
    .await;
    faulty.postgres.set(Fault::Drop);

    // Still ready (so still in its Service), PostgreSQL reported as degraded.
    let ready = testkit::wait::eventually("/ready to report postgres degraded", WAIT, || async {
        let response = app.client.get(app.url("/ready")).send().await.ok()?;
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.ok()?;
        (body["degraded"] == serde_json::json!(["postgres"])).then_some((status, body))
    })
    .await;
    assert_eq!(ready.0, 200, "{}", ready.1);
    assert_eq!(ready.1["status"], "ready");
    assert_eq!(ready.1["dependencies"]["postgres"], "down");

    // Events, keyed or not, are accepted and queued; a read that misses the cache is 503.
    for (body, key) in [
        (r#"{"product_id": "p1", "stock": 1}"#, Some("while-pg-down")),
        (r#"{"product_id": "p2", "stock": 2}"#, None),
    ] {
        json(app.post_event(body, key).await, 202).await;
    }
    assert_eq!(app.queued().await, 2);
    let response = app.get("/products/p9").await;
    assert_eq!(json(response, 503).await["dependency"], "postgres");

    faulty.postgres.set(Fault::Pass);
    testkit::wait::eventually("postgres to be reported up again", WAIT, || async {
        let response = app.client.get(app.url("/ready")).send().await.ok()?;
        let body: serde_json::Value = response.json().await.ok()?;
        (body["dependencies"]["postgres"] == "up" && body.get("degraded").is_none()).then_some(())
    })
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_answers_at_once_while_postgres_and_redis_hang() {
    let (_sandbox, faulty, app) =
        spawn_proxied(|direct, proxied| *direct = proxied.clone(), |_| {}).await;
    // Connections held open, nothing answered: each probe waits out its whole timeout (2 s
    // for Redis, 3 s for PostgreSQL), which /ready must never do.
    faulty.postgres.set(Fault::Blackhole);
    faulty.redis.set(Fault::Blackhole);
    let impatient = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(1))
        .build()
        .expect("client");
    let body = testkit::wait::eventually("/ready to report redis down", WAIT, || async {
        let response = impatient
            .get(app.url("/ready"))
            .send()
            .await
            .expect("/ready answers within 1 s while its dependencies hang");
        let body: serde_json::Value = response.json().await.ok()?;
        (body["dependencies"]["redis"] == "down").then_some(body)
    })
    .await;
    assert_eq!(body["down"], serde_json::json!(["redis"]), "{body}");
    for _ in 0..5 {
        let response = impatient.get(app.url("/ready")).send().await;
        assert!(response.is_ok(), "/ready answers within 1 s: {response:?}");
    }
    faulty.postgres.set(Fault::Pass);
    faulty.redis.set(Fault::Pass);
    app.wait_ready().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_cut_from_postgres_stops_trusting_its_keys_after_the_staleness_bound() {
    let (sandbox, faulty, app) = spawn_proxied(
        |direct, proxied| direct.database = proxied.database.clone(),
        |config| config.serving.keys_max_staleness = std::time::Duration::from_secs(3),
    )
    .await;
    json(
        app.post_event(r#"{"product_id": "p1", "stock": 1}"#, None)
            .await,
        202,
    )
    .await;

    // Cut from PostgreSQL, its key is revoked where it cannot see.
    faulty.postgres.set(Fault::Drop);
    execute(
        &sandbox.backends(),
        "UPDATE api_keys SET revoked_at = now()",
    )
    .await;
    // Once its keys are older than the bound, it refuses rather than trust them.
    let refused = testkit::wait::eventually("the stale keys to be distrusted", WAIT, || async {
        let response = app
            .post_event(r#"{"product_id": "p1", "stock": 2}"#, None)
            .await;
        (response.status() == 503).then_some(response)
    })
    .await;
    let body = json(refused, 503).await;
    assert_eq!(body["dependency"], "postgres", "{body}");

    // Back in touch, it reads the revocation: 401.
    faulty.postgres.set(Fault::Pass);
    testkit::wait::eventually("the revoked key to be refused", WAIT, || async {
        let response = app
            .post_event(r#"{"product_id": "p1", "stock": 3}"#, None)
            .await;
        (response.status() == 401).then_some(())
    })
    .await;
    app.stop().await;
}
