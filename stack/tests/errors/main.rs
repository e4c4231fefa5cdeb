//! Errors a program can act on, the same on every service: RFC 9457 problems
//! (`application/problem+json`) with a stable `code`, the offending `field`, and the request's
//! id (the client's `X-Request-Id` echoed, or one made up) in the body and the `Request-Id`
//! header; framework rejections (broken JSON, a missing content type, no such route or method)
//! go through the same shape.

use serde_json::{Value, json};
use stack::Stack;

/// The problem a response carries, after checking its shape and that it names `request_id`.
async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status, "{}", response.url());
    let headers = response.headers().clone();
    assert_eq!(
        headers["content-type"],
        "application/problem+json",
        "{}",
        response.url()
    );
    let id = headers["request-id"].to_str().expect("ASCII").to_owned();
    let body: Value = response.json().await.expect("JSON");
    for member in ["type", "title", "status", "detail", "code", "instance"] {
        assert!(!body[member].is_null(), "{member} in {body}");
    }
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(
        body["type"],
        format!("/problems/{}", body["code"].as_str().expect("code"))
    );
    assert_eq!(body["request_id"], id, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn every_service_answers_problems_with_a_code_the_field_and_the_request_id() {
    let stack = Stack::start(None).await;
    let services = [
        ("gateway", stack.gateway),
        ("processor", stack.processor),
        ("notifier", stack.notifier),
        ("imager", stack.imager),
        ("dashboard", stack.dashboard),
    ];
    for (service, addr) in services {
        let base = format!("http://{addr}");
        // No such route; the client's request id comes back.
        let missing = stack
            .client
            .get(format!("{base}/no-such-route"))
            .header("x-request-id", "client-req-42")
            .send()
            .await
            .expect("sent");
        assert_eq!(
            missing.headers()["request-id"],
            "client-req-42",
            "{service}"
        );
        let body = problem(missing, 404).await;
        assert_eq!(body["code"], "not_found", "{service}: {body}");
        assert_eq!(body["instance"], "/no-such-route", "{service}");
        // Without a key: 401 with its own code, and a request id of the service's making.
        let anonymous = reqwest::Client::new()
            .get(format!("{base}/no-such-route"))
            .send()
            .await
            .expect("sent");
        let id = anonymous.headers()["request-id"]
            .to_str()
            .expect("ASCII")
            .to_owned();
        assert!(!id.is_empty() && id != "client-req-42");
        problem(anonymous, 404).await;
    }

    // The gateway: a missing content type is 415, a broken body 400 naming the field, a method
    // the route does not take 405.
    let gateway = format!("http://{}", stack.gateway);
    let unsupported = stack
        .client
        .post(format!("{gateway}/events"))
        .body(r#"{"product_id": "p1", "stock": 1}"#)
        .send()
        .await
        .expect("sent");
    assert_eq!(
        problem(unsupported, 415).await["code"],
        "unsupported_media_type"
    );
    let invalid = stack
        .client
        .post(format!("{gateway}/events"))
        .json(&json!({"product_id": "p1", "stock": -1}))
        .send()
        .await
        .expect("sent");
    let body = problem(invalid, 400).await;
    assert_eq!(
        (body["code"].clone(), body["field"].clone()),
        (json!("invalid"), json!("stock"))
    );
    let method = stack
        .client
        .delete(format!("{gateway}/events"))
        .send()
        .await
        .expect("sent");
    assert_eq!(problem(method, 405).await["code"], "method_not_allowed");

    // The notifier and the processor take JSON bodies the same way as the gateway.
    let notifier = format!("http://{}/subscriptions", stack.notifier);
    let unsupported = stack
        .client
        .post(&notifier)
        .body(r#"{"url": "https://hooks.example.com/in", "event_types": ["order.created"]}"#)
        .send()
        .await
        .expect("sent");
    assert_eq!(
        problem(unsupported, 415).await["code"],
        "unsupported_media_type"
    );
    let broken = stack
        .client
        .post(&notifier)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .expect("sent");
    let body = problem(broken, 400).await;
    assert_eq!(body["field"], "body", "{body}");
    let replay = format!("http://{}/dead-letters/replay", stack.processor);
    let unsupported = stack
        .client
        .post(&replay)
        .body("{}")
        .send()
        .await
        .expect("sent");
    assert_eq!(
        problem(unsupported, 415).await["code"],
        "unsupported_media_type"
    );
    let wrong = stack
        .client
        .post(&replay)
        .json(&json!({"all": "yes"}))
        .send()
        .await
        .expect("sent");
    let body = problem(wrong, 400).await;
    assert_eq!(body["field"], "all", "{body}");
    stack.stop().await;
}
