//! The processor's operator API wants an `ops` key; its health, readiness and metrics do not;
//! dirty bytes in its paths and queries are a 400 naming the parameter.

use shared::auth::Scope;

use crate::helpers::spawn_pipeline;

#[tokio::test(flavor = "multi_thread")]
async fn the_dead_letter_api_wants_an_ops_key() {
    let pipeline = spawn_pipeline().await;
    let base = format!("http://{}", pipeline.processor.expect("started"));
    let anonymous = reqwest::Client::new();
    let writer = testkit::keys::client_with_key(
        &testkit::keys::api_key(
            &pipeline.backends.namespace,
            [Scope::EventsWrite].into_iter().collect(),
        )
        .await,
    );
    let selection = serde_json::json!({ "all": true, "dry_run": true });
    for (method, path) in [
        ("GET", "/dead-letters"),
        ("GET", "/dead-letters/some-id"),
        ("POST", "/dead-letters/replay"),
        ("POST", "/dead-letters/purge"),
        ("DELETE", "/dead-letters/some-id"),
    ] {
        let request = |client: &reqwest::Client| {
            client
                .request(method.parse().expect("a method"), format!("{base}{path}"))
                .json(&selection)
        };
        let response = request(&anonymous).send().await.expect("sent");
        assert_eq!(response.status(), 401, "{method} {path}");
        assert!(response.headers().contains_key("www-authenticate"));
        let response = request(&writer).send().await.expect("sent");
        assert_eq!(response.status(), 403, "{method} {path}");
        let body: serde_json::Value = response.json().await.expect("JSON");
        assert_eq!(body["scope"], "ops");
    }
    for open in ["/health", "/ready", "/metrics"] {
        let (status, _) = testkit::http::get_json(&anonymous, &format!("{base}{open}")).await;
        assert_eq!(status, 200, "{open}");
    }
    let (status, _) = pipeline.processor_get("/dead-letters").await;
    assert_eq!(status, 200, "an ops key is let in");
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn control_characters_in_dead_letter_parameters_are_400_naming_them() {
    let pipeline = spawn_pipeline().await;
    pipeline
        .assert_names_fields(&[
            ("/dead-letters?reason=%00", "reason"),
            ("/dead-letters?product_id=a%0Ab", "product_id"),
            ("/dead-letters/a%00b", "id"),
            ("/dead-letters/%C3%28", "id"),
        ])
        .await;
    pipeline.stop().await;
}
