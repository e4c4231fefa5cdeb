//! Managing subscriptions: create, list, show, rotate, delete, and the 400s for bad input.

use serde_json::{Value, json};

use testkit::webhooks::Receiver;

use crate::helpers::{Notifier, spawn_notifier};

/// Every item of the list at `path` (which sets a `limit`), following `next_cursor` to the last
/// page; how many pages that took.
async fn every_page(notifier: &Notifier, path: &str) -> (Vec<Value>, usize) {
    let (mut items, mut pages, mut next) = (Vec::new(), 0, path.to_owned());
    loop {
        let (status, page) = notifier.get(&next).await;
        assert_eq!(status, 200, "{page}");
        items.extend(page["items"].as_array().expect("items").iter().cloned());
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(cursor) => next = format!("{path}&cursor={cursor}"),
            None => return (items, pages),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn subscriptions_and_deliveries_are_listed_a_page_at_a_time() {
    let notifier = spawn_notifier(5).await;
    let receiver = Receiver::start(&[]).await;
    let mut made = Vec::new();
    for _ in 0..3 {
        made.push(Value::from(
            notifier.subscribe(&receiver.url(), &["stock.low"]).await.0,
        ));
    }
    notifier.emit("paged:stock.low", "stock.low").await;
    let notification = notifier.settled("paged:stock.low").await;
    let mut delivered: Vec<Value> = notification["deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .map(|d| d["id"].clone())
        .collect();
    delivered.sort_by_key(|id| std::cmp::Reverse(id.as_i64()));

    let (subscriptions, pages) = every_page(&notifier, "/subscriptions?limit=2").await;
    let ids: Vec<Value> = subscriptions.iter().map(|s| s["id"].clone()).collect();
    assert_eq!((ids, pages), (made, 2), "oldest first, each once");
    let (deliveries, pages) = every_page(&notifier, "/deliveries?limit=2").await;
    let ids: Vec<Value> = deliveries.iter().map(|d| d["id"].clone()).collect();
    assert_eq!((ids, pages), (delivered, 2), "newest first, each once");

    for path in [
        "/subscriptions?cursor=made-up",
        "/deliveries?cursor=e30",
        "/subscriptions?limit=0",
    ] {
        let (status, body) = notifier.get(path).await;
        testkit::http::assert_names_field(
            status,
            &body,
            path.split(['?', '=']).nth(1).expect("a parameter"),
            path,
        );
    }
    notifier.stop().await;
}

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
    assert_eq!(listed["items"], json!([]), "nothing was stored");
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
    let only = &listed["items"][0];
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
    assert_eq!(listed["items"], json!([]));
    notifier.stop().await;
}
