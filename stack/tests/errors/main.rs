//! Errors a program can act on, the same on every service: RFC 9457 problems
//! (`application/problem+json`) with a stable `code`, the offending `field`, and the request's
//! id (the client's `X-Request-Id` echoed, or one made up) in the body and the `Request-Id`
//! header; framework rejections (broken JSON, a missing content type, no such route or method)
//! go through the same shape.

use serde_json::Value;
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

    // Every service that takes a JSON body: a missing content type is 415, a broken or invalid
    // body 400 naming the field; a method the route does not take 405.
    let post = async |url: String, content_type: Option<&str>, body: &str| {
        let request = stack.client.post(url).body(body.to_owned());
        let request = match content_type {
            Some(content_type) => request.header("content-type", content_type),
            None => request,
        };
        request.send().await.expect("sent")
    };
    let json_type = Some("application/json");
    let gateway = format!("http://{}/events", stack.gateway);
    let notifier = format!("http://{}/subscriptions", stack.notifier);
    let replay = format!("http://{}/dead-letters/replay", stack.processor);
    for (url, body) in [
        (&gateway, r#"{"product_id": "p1", "stock": 1}"#),
        (
            &notifier,
            r#"{"url": "https://hooks.example.com/in", "event_types": ["order.created"]}"#,
        ),
        (&replay, "{}"),
    ] {
        let unsupported = post(url.clone(), None, body).await;
        assert_eq!(
            problem(unsupported, 415).await["code"],
            "unsupported_media_type",
            "{url}"
        );
    }
    for (url, body, field) in [
        (&gateway, r#"{"product_id": "p1", "stock": -1}"#, "stock"),
        (&notifier, "{", "body"),
        (&replay, r#"{"all": "yes"}"#, "all"),
    ] {
        let body = problem(post(url.clone(), json_type, body).await, 400).await;
        assert_eq!(body["field"], field, "{url}: {body}");
        if field == "stock" {
            assert_eq!(body["code"], "invalid", "{body}");
        }
    }
    let method = stack.client.delete(&gateway).send().await.expect("sent");
    assert_eq!(problem(method, 405).await["code"], "method_not_allowed");
    stack.stop().await;
}
