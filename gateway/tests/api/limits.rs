//! Slow and greedy clients: a trickled request head is cut off, an oversized head is 431, a
//! saturated server sheds load with 503, a request that takes too long is 408, and dirty bytes
//! in a path or query are a 400 naming the parameter.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::{TestApp, config, json, spawn_config};

async fn gateway_with(limits: impl FnOnce(&mut shared::http::Limits)) -> TestApp {
    let mut config = config(testkit::backends());
    limits(&mut config.serving.http);
    let app = spawn_config(config).await;
    app.wait_ready().await;
    app
}

/// Reads until the server closes the connection; what it sent.
/// Sends a request head and the start of its body, and never the rest.
async fn slow_request(app: &TestApp) -> TcpStream {
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    let head = format!(
        "POST /events HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"product_id\"",
        app.key
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    stream
}

async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got).await;
    got
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_trickling_its_request_head_is_cut_off() {
    let app = gateway_with(|l| l.header_read_timeout = Duration::from_secs(1)).await;
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    stream
        .write_all(b"POST /events HTTP/1.1\r\nHost: gateway\r\n")
        .await
        .expect("write");
    let trickle = async {
        for i in 0.. {
            let line = format!("X-Slow-{i}: a\r\n");
            if stream.write_all(line.as_bytes()).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    // Well past the 1 s limit, the server must have hung up on the trickle.
    let cut = tokio::time::timeout(Duration::from_secs(10), trickle).await;
    assert!(cut.is_ok(), "the connection was still open after 10 s");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_head_over_32_kib_is_431_and_nothing_is_published() {
    let app = gateway_with(|_| {}).await;
    // 200 KiB (past what hyper buffers) and 40,000 bytes (which hyper may parse whole).
    for padding in [200 * 1024, 40_000] {
        let response = app
            .client
            .post(app.url("/events"))
            .header("content-type", "application/json")
            .header("x-padding", "a".repeat(padding))
            .body(r#"{"product_id": "p1", "stock": 1}"#)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 431, "{padding}");
    }
    // Just under the limit is taken.
    let response = app
        .client
        .post(app.url("/events"))
        .header("content-type", "application/json")
        .header("x-padding", "a".repeat(30 * 1024))
        .body(r#"{"product_id": "p1", "stock": 1}"#)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 202);
    assert_eq!(app.queued().await, 1, "only the request within the limit");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_saturated_server_sheds_load_with_503_and_a_slow_body_is_408() {
    let app = gateway_with(|l| {
        l.max_concurrent_requests = 1;
        l.request_timeout = Duration::from_secs(2);
    })
    .await;
    // A request whose body never completes holds the one slot. (If it reached the server while
    // a probe held the slot, it was shed itself: send it again.)
    let mut slow = slow_request(&app).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut accepted = 0;
    let shed = loop {
        let probe = app
            .post_json("/events", r#"{"product_id": "p1", "stock": 1}"#)
            .await;
        if probe.status() == 503 {
            break probe;
        }
        assert_eq!(probe.status(), 202);
        accepted += 1;
        let mut byte = [0u8; 1];
        if !matches!(slow.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        {
            slow = slow_request(&app).await;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no request was shed within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(shed.headers()["retry-after"], "1");
    assert!(json(shed, 503).await["error"].is_string());
    // The health check is never shed.
    let health = app.get("/health").await;
    assert_eq!(health.status(), 200);

    // The slow request runs out of time: 408, and the slot is free again.
    let answer = String::from_utf8_lossy(&until_closed(&mut slow).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let after = app
        .post_event(r#"{"product_id": "p1", "stock": 1}"#, None)
        .await;
    json(after, 202).await;
    assert_eq!(
        app.queued().await,
        accepted + 1,
        "only the complete requests"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn control_characters_and_bad_utf8_in_paths_and_queries_are_400_naming_them() {
    let app = gateway_with(|_| {}).await;
    for (path, field) in [
        ("/products/a%00b", "id"),
        ("/products/%FF%FE", "id"),
        ("/api/v1/orders/o%0A1", "id"),
        ("/products/p1?x=%07", "x"),
        ("/orders/o1?%FF=1", "query"),
    ] {
        let response = app.get(path).await;
        let body = json(response, 400).await;
        assert_eq!(body["field"], field, "{path}: {body}");
    }
    app.stop().await;
}
