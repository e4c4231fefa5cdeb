//! Managing subscriptions: create, list, show, rotate, delete, and the 400s for bad input.

use serde_json::{Value, json};

use crate::helpers::spawn_notifier;

#[tokio::test(flavor = "multi_thread")]
async fn invalid_subscriptions_are_refused_naming_the_field_and_leave_nothing() {
    let notifier = spawn_notifier(5).await;
    for (body, field) in [
        (
            json!({"url": "not a url", "event_types": ["order.created"]}),
            "url",
        ),
        (
            json!({"url": "ftp://shop.example/", "event_types": ["order.created"]}),
            "url",
        ),
        (
            json!({"url": "https://shop.example/", "event_types": ["order.shipped"]}),
            "event_types",
        ),
        (
            json!({"url": "https://shop.example/", "event_types": []}),
            "event_types",
        ),
        (json!({"url": "https://shop.example/"}), "event_types"),
        (
            json!({"url": "https://shop.example/", "event_types": ["stock.low"], "secret": "x"}),
            "secret",
        ),
    ] {
        let response = notifier
            .client
            .post(notifier.url("/subscriptions"))
            .json(&body)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.expect("JSON");
        assert_eq!(error["field"], field, "{body}");
        assert!(error["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    let not_json = notifier
        .client
        .post(notifier.url("/subscriptions"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .expect("sent");
    assert_eq!(not_json.status(), 400);
    let (status, listed) = notifier.get("/subscriptions").await;
    assert_eq!(status, 200);
    assert_eq!(listed["subscriptions"], json!([]), "nothing was stored");
    notifier.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscription_is_created_listed_rotated_and_deleted() {
    let notifier = spawn_notifier(5).await;
    let (id, secret) = notifier
        .subscribe(
            "https://shop.example/hooks",
            &["order.created", "stock.low"],
        )
        .await;
    assert!(secret.starts_with("whsec_"), "{secret}");

    let (status, listed) = notifier.get("/subscriptions").await;
    assert_eq!(status, 200);
    let only = &listed["subscriptions"][0];
    assert_eq!(only["id"], id.as_str());
    assert_eq!(only["event_types"], json!(["order.created", "stock.low"]));
    assert_eq!(only["status"], "enabled");
    assert!(
        only.get("secret").is_none(),
        "listings never show the secret"
    );

    let (status, rotated) = notifier
        .post(&format!("/subscriptions/{id}/rotate-secret"))
        .await;
    assert_eq!(status, 200);
    let new_secret = rotated["secret"].as_str().expect("secret");
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);
    assert!(rotated["previous_secret_expires_at"].is_string());

    let delete = |id: String| {
        let request = notifier
            .client
            .delete(notifier.url(&format!("/subscriptions/{id}")));
        async move { request.send().await.expect("sent").status().as_u16() }
    };
    assert_eq!(delete(id.clone()).await, 204);
    assert_eq!(delete(id.clone()).await, 404);
    assert_eq!(notifier.get(&format!("/subscriptions/{id}")).await.0, 404);
    assert_eq!(notifier.get("/subscriptions/not-a-uuid").await.0, 400);
    let (_, listed) = notifier.get("/subscriptions").await;
    assert_eq!(listed["subscriptions"], json!([]));
    notifier.stop().await;
}
