//! Hostile input: each gets a clear 4xx, never a 5xx, and leaves nothing behind.

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::spawn_app;

#[tokio::test(flavor = "multi_thread")]
async fn hostile_bodies_get_a_clear_4xx_and_leave_nothing_behind() {
    let app = spawn_app().await;
    let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_object = format!(
        r#"{{"product_id": "p", "stock": 1, "x": {}1{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let long_key = format!(
        r#"{{"product_id": "p", "stock": 1, "{}": 1}}"#,
        "k".repeat(256)
    );
    // Bodies refused with a 400 naming the field at fault.
    let named = [
        (r#"{"product_id": "p", "price": 1e400}"#, "price"),
        (r#"{"product_id": "p", "stock": 1e400}"#, "stock"),
        (
            r#"{"product_id": "p", "price": 123456789012345678901234567890}"#,
            "price",
        ),
        (r#"{"product_id": "p", "price": -0}"#, "price"),
        (r#"{"product_id": "p", "stock": -0}"#, "stock"),
        (
            r#"{"product_id": "p", "product_id": "q", "stock": 1}"#,
            "product_id",
        ),
        (r#"{"product_id": "p\u0000", "stock": 1}"#, "product_id"),
        (r#"{"product_id": "p\n", "stock": 1}"#, "product_id"),
        (
            r#"{"product_id": "p", "stock": 1, "event_id": "e\u0007"}"#,
            "event_id",
        ),
    ];
    // The unknown field is named, its name cut to 64 characters.
    let unknown = "k".repeat(64);
    let mut cases: Vec<(Vec<u8>, u16, Option<String>)> = vec![
        (nested.into_bytes(), 400, None),
        (deep_object.into_bytes(), 400, None),
        (
            b"{\"product_id\": \"p\xff\xfe\", \"stock\": 1}".to_vec(),
            400,
            None,
        ),
        (long_key.into_bytes(), 400, Some(unknown)),
        (vec![b' '; 70 * 1024], 413, None),
    ];
    cases
        .extend(named.map(|(body, field)| (body.as_bytes().to_vec(), 400, Some(field.to_owned()))));
    for (body, status, field) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
        let response = app
            .client
            .post(app.url("/events"))
            .header("content-type", "application/json")
            .header("idempotency-key", "hostile")
            .body(body)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status().as_u16(), status, "{shown}");
        let json: serde_json::Value = response.json().await.expect("a JSON error body");
        assert!(
            json["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{shown}"
        );
        // Every answer says what it is, and names the field when one is at fault (and only then).
        let code = if status == 413 {
            "too_large"
        } else {
            "invalid"
        };
        assert_eq!(
            (json["code"].as_str(), json["field"].as_str()),
            (Some(code), field.as_deref()),
            "{shown}"
        );
    }
    let response = app
        .client
        .post(app.url("/events"))
        .header("content-type", "application/json")
        .header("idempotency-key", "k".repeat(256))
        .body(r#"{"product_id": "p", "stock": 1}"#)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 400, "an over-long idempotency key");
    let json: serde_json::Value = response.json().await.expect("a JSON error body");
    assert_eq!(json["field"], "Idempotency-Key", "{json}");
    // Control characters no HTTP client library lets through, so written on the wire.
    for key in [&b"a\x01b"[..], b"a\x7fb"] {
        let mut stream = TcpStream::connect(app.addr).await.expect("connect");
        let body = br#"{"product_id": "p", "stock": 1}"#;
        let mut request = format!(
            "POST /events HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nIdempotency-Key: ",
            app.key,
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(key);
        request.extend_from_slice(b"\r\n\r\n");
        request.extend_from_slice(body);
        stream.write_all(&request).await.expect("write");
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 400"), "{key:?}: {answer}");
    }
    app.assert_left_nothing().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn made_up_methods_without_a_key_make_no_new_metric_series() {
    let app = spawn_app().await;
    let anonymous = reqwest::Client::new();
    for i in 0..50 {
        let method = format!("M{i}{}", "X".repeat(2000));
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a token");
        for path in ["/events", "/no-such-route"] {
            let response = anonymous
                .request(method.clone(), app.url(path))
                .send()
                .await
                .expect("answered");
            assert!(response.status().is_client_error(), "{}", response.status());
        }
    }
    let metrics = testkit::metrics::scrape(&app.client, &app.url("")).await;
    assert!(
        !metrics.contains("XXXX"),
        "a made-up method reached the metrics"
    );
    assert!(
        !metrics.contains("no-such-route"),
        "an unmatched path reached the metrics"
    );
    let defined = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
    ];
    for line in metrics.lines().filter(|l| l.contains("method=\"")) {
        let method = line
            .split("method=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("a label value");
        assert!(
            defined.contains(&method) || method == "_OTHER",
            "{method:?} in {line}"
        );
    }
    assert!(
        metrics.contains("method=\"_OTHER\""),
        "made-up methods are counted as _OTHER"
    );
    app.stop().await;
}
