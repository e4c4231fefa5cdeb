//! What a subscriber's operator reaches for: the event catalog, a test event sent to one
//! subscription, and the deliveries an outage failed sent again from a time on.

use std::time::Duration;

use serde_json::{Value, json};
use testkit::webhooks::Receiver;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::helpers::{WAIT, signed_with, spawn_notifier};

#[tokio::test(flavor = "multi_thread")]
async fn the_event_catalog_lists_every_type_with_its_meaning_and_payload() {
    let notifier = spawn_notifier(5).await;
    let (status, catalog) = notifier.get("/event-types").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = catalog["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|t| t["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(
        names,
        shared::contract::EventType::ALL.map(shared::contract::EventType::as_str)
    );
    assert_eq!(catalog["next_cursor"], Value::Null);
    let order = &catalog["items"][3];
    assert_eq!(order["data_schema"], "OrderDecided", "{order}");
    assert!(order["description"].as_str().is_some_and(|d| !d.is_empty()));
    notifier.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_test_event_reaches_its_subscription_only_signed_and_recorded() {
    let notifier = spawn_notifier(5).await;
    let tested = Receiver::start(&[]).await;
    let (id, secret) = notifier
        .subscribe(&tested.url(), &["order.created", "stock.low"])
        .await;
    let other = notifier.receiver_for(&["stock.low"]).await;

    // Refused, each naming what is wrong, and nothing sent.
    let path = format!("/subscriptions/{id}/test");
    for (body, field) in [
        (json!({"event_type": "order.rejected"}), "event_type"),
        (json!({"event_type": "order.shipped"}), "event_type"),
        (json!({"event_type": "stock.low", "url": "x"}), "url"),
    ] {
        let (status, problem) = notifier.post_json(&path, &body).await;
        testkit::http::assert_names_field(status, &problem, field, &body.to_string());
    }
    let (status, _) = notifier
        .post_json("/subscriptions/nope/test", &json!({}))
        .await;
    assert_eq!(status, 400);
    let unknown = format!("/subscriptions/{}/test", uuid::Uuid::now_v7());
    assert_eq!(notifier.post_json(&unknown, &json!({})).await.0, 404);

    let (status, sent) = notifier
        .post_json(&path, &json!({"event_type": "stock.low"}))
        .await;
    assert_eq!(status, 202, "{sent}");
    assert_eq!(sent["event_type"], "stock.low");
    let event_id = sent["event_id"].as_str().expect("an id").to_owned();
    assert!(
        event_id.len() == 36 && event_id.starts_with("msg_"),
        "{event_id}"
    );
    let received = tested.wait_for(1, WAIT).await;
    let webhook = &received[0];
    assert_eq!(webhook.header("webhook-id"), event_id);
    assert!(signed_with(webhook, &secret));
    let body: Value = serde_json::from_slice(&webhook.body).expect("JSON");
    assert_eq!(body["type"], "stock.low");
    assert!(
        body["data"]["product_id"]
            .as_str()
            .is_some_and(|p| p.starts_with("test-")),
        "{body}"
    );
    let notification = notifier.settled(&event_id).await;
    let deliveries = notification["deliveries"].as_array().expect("deliveries");
    assert_eq!(deliveries.len(), 1, "{notification}");
    assert_eq!(deliveries[0]["subscription_id"], id.as_str());
    assert_eq!(deliveries[0]["status"], "sent");
    // Without an event type, the subscription's first.
    let (status, sent) = notifier.post_json(&path, &json!({})).await;
    assert_eq!(
        (status, sent["event_type"].as_str()),
        (202, Some("order.created"))
    );
    tested.wait_for(2, WAIT).await;
    assert_eq!(other.count(), 0, "another subscription got a test event");

    // A disabled subscription gets none.
    let pool = testkit::postgres::pool(&notifier.backends).await;
    sqlx::query("UPDATE subscriptions SET disabled_at = now() WHERE id = $1::uuid")
        .bind(&id)
        .execute(&pool)
        .await
        .expect("disabled");
    let (status, problem) = notifier.post_json(&path, &json!({})).await;
    assert_eq!(status, 409, "{problem}");
    notifier.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deliveries_failed_since_a_time_are_sent_again_and_earlier_ones_are_not() {
    let notifier = spawn_notifier(5).await;
    let (id, first) = notifier
        .failed_at_unreachable("r1:order.created", "order.created")
        .await;
    let first_failed =
        OffsetDateTime::parse(first["failed_at"].as_str().expect("a time"), &Rfc3339)
            .expect("RFC 3339");
    let since = first_failed + Duration::from_millis(1);
    notifier.emit("r2:order.created", "order.created").await;
    let second = notifier.settled("r2:order.created").await;
    assert_eq!(second["deliveries"][0]["status"], "failed");

    let path = format!("/subscriptions/{id}/recover");
    for (body, field) in [
        (json!({"since": "yesterday"}), "since"),
        (json!({}), "since"),
        (
            json!({"since": "2026-01-01T00:00:00Z", "until": "x"}),
            "until",
        ),
    ] {
        let (status, problem) = notifier.post_json(&path, &body).await;
        testkit::http::assert_names_field(status, &problem, field, &body.to_string());
    }

    // The endpoint is back.
    let receiver = Receiver::start(&[]).await;
    let pool = testkit::postgres::pool(&notifier.backends).await;
    sqlx::query("UPDATE subscriptions SET url = $1 WHERE id = $2::uuid")
        .bind(receiver.url())
        .bind(&id)
        .execute(&pool)
        .await
        .expect("pointed at the receiver");
    let since = since.format(&Rfc3339).expect("formats");
    let (status, recovered) = notifier.post_json(&path, &json!({ "since": since })).await;
    assert_eq!((status, recovered["recovered"].as_u64()), (202, Some(1)));
    let received = receiver.wait_for(1, WAIT).await;
    assert_eq!(received[0].header("webhook-id"), "r2:order.created");
    let second = notifier.settled("r2:order.created").await;
    assert_eq!(second["deliveries"][0]["status"], "sent");
    let (_, first) = notifier.get("/notifications/r1:order.created").await;
    assert_eq!(
        first["deliveries"][0]["status"], "failed",
        "failed before since"
    );
    // Nothing failed since then any more.
    let (status, again) = notifier.post_json(&path, &json!({ "since": since })).await;
    assert_eq!((status, again["recovered"].as_u64()), (202, Some(0)));
    assert_eq!(receiver.count(), 1);
    notifier.stop().await;
}
