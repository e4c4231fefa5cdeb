//! `/health`, `/metrics` and `/openapi.json`.

use crate::helpers::{json, spawn_app};

#[tokio::test(flavor = "multi_thread")]
async fn health_ready_metrics_and_openapi_answer() {
    let app = spawn_app().await;
    let health = app.get("/health").await;
    assert_eq!(
        json(health, 200).await,
        serde_json::json!({"status": "healthy"})
    );
    // PostgreSQL is optional to the gateway's readiness; the background probe finds it up
    // within a beat.
    let ready = testkit::wait::eventually("postgres reported up", crate::helpers::WAIT, || async {
        let ready = json(app.get("/ready").await, 200).await;
        (ready["dependencies"]["postgres"] == "up").then_some(ready)
    })
    .await;
    assert_eq!(ready["dependencies"]["rabbitmq"], "up");
    assert_eq!(ready["dependencies"]["redis"], "up");
    assert_eq!(ready["dependencies"]["postgres"], "up");

    json(
        app.post_event(r#"{"product_id": "m1", "stock": 1}"#, None)
            .await,
        202,
    )
    .await;
    let metrics = testkit::metrics::scrape(&app.client, &app.url("")).await;
    for name in [
        "pipeline_build_info{service=\"gateway\",version=",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "pipeline_events_accepted_total",
        "pipeline_publish_confirm_duration_seconds_bucket",
        "pipeline_http_requests_total{route=\"/events\",method=\"POST\",status=\"202\"}",
    ] {
        assert!(metrics.contains(name), "missing {name} in\n{metrics}");
    }
    // Every metric exported says what it is.
    for line in metrics.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split(' ').nth(2).expect("# TYPE name kind");
        assert!(
            metrics.contains(&format!("# HELP {name} ")),
            "no # HELP for {name} in\n{metrics}"
        );
    }
    assert!(metrics.contains(
        "# HELP pipeline_events_accepted_total Events the gateway accepted (published and confirmed), by kind."
    ));

    for path in ["/openapi.json", "/api/v1/openapi.json"] {
        let doc = json(app.get(path).await, 200).await;
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
        assert!(doc["paths"]["/events"]["post"].is_object());
        assert!(doc["paths"]["/products/{id}"]["get"].is_object());
    }
    // The same document as a page to read (Scalar's), carrying the document itself.
    for path in ["/docs", "/api/v1/docs"] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "text/html; charset=utf-8",
            "{path}"
        );
        let page = response.text().await.expect("a page");
        let title = gateway::openapi::document().info.title;
        assert!(page.contains(&format!("<title>{title}</title>")), "{page}");
        assert!(page.contains(r#"id="api-reference""#), "{page}");
        assert!(
            page.contains(r#""/products/{id}""#),
            "the document is not in the page"
        );
    }
    app.stop().await;
}
