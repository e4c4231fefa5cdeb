//! Slow and greedy clients: a trickled request head is cut off, an oversized head is 431, a
//! saturated server sheds load with 503, a request that takes too long is 408 (each with a rated
//! key's `RateLimit` headers), and dirty bytes in a path or query are a 400 naming the parameter.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::{TestApp, WAIT, json, spawn_adjusted};

async fn gateway_with(limits: impl FnOnce(&mut shared::http::Limits)) -> TestApp {
    let app = spawn_adjusted(|config| limits(&mut config.serving.http)).await;
    app.wait_ready().await;
    app
}

/// A gateway whose image bytes are kept in a folder of its own (removed by
/// [`ImageGateway::stop`]), changed by `adjust`, with the product `product` made.
async fn image_gateway(
    product: &str,
    adjust: impl FnOnce(&mut gateway::config::Config),
) -> ImageGateway {
    let mut folder = std::path::PathBuf::new();
    let app = spawn_adjusted(|config| {
        adjust(config);
        folder =
            std::env::temp_dir().join(format!("images-{}", config.backends.namespace.as_str()));
        config.objects = shared::objects::Objects::open(
            &format!("file://{}", folder.display()),
            None,
            Duration::from_secs(60),
            &[],
        )
        .expect("a local store");
    })
    .await;
    app.wait_ready().await;
    let body = serde_json::json!({"product_id": product, "name": "Lamp", "category": "lighting", "price": 1, "stock": 1});
    let created = app.post_json("/products", body.to_string()).await;
    assert_eq!(created.status(), 201);
    ImageGateway { app, folder }
}

/// A gateway keeping image bytes in `folder`.
struct ImageGateway {
    app: TestApp,
    folder: std::path::PathBuf,
}

impl ImageGateway {
    /// Uploads `bytes` as a PNG image of `product`.
    async fn upload(&self, product: &str, bytes: usize) -> reqwest::Response {
        self.app
            .client
            .post(self.app.url(&format!("/products/{product}/images")))
            .header("content-type", "image/png")
            .body(vec![7u8; bytes])
            .send()
            .await
            .expect("sent")
    }

    async fn stop(self) {
        self.app.stop().await;
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

/// Sends a request head and the start of its body, and never the rest.
async fn slow_request(app: &TestApp) -> TcpStream {
    slow_request_with(app, &app.key).await
}

/// [`slow_request`] with `key`.
async fn slow_request_with(app: &TestApp, key: &str) -> TcpStream {
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    let head = format!(
        "POST /events HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"product_id\""
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    stream
}

/// Reads a held request's answer until the server closes the connection, and checks that it is
/// a `408`; the answer.
async fn timed_out(stream: &mut TcpStream) -> String {
    let answer = String::from_utf8_lossy(&until_closed(stream).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    answer
}

/// Reads until the server closes the connection; what it sent.
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
    let accepted = std::cell::Cell::new(0);
    let (shed, mut slow) = holding(
        "request shed",
        Duration::from_secs(10),
        || slow_request(&app),
        || async {
            let probe = app
                .post_json("/events", r#"{"product_id": "p1", "stock": 1}"#)
                .await;
            if probe.status() == 503 {
                return Some(probe);
            }
            assert_eq!(probe.status(), 202);
            accepted.set(accepted.get() + 1);
            None
        },
    )
    .await;
    assert_eq!(shed.headers()["retry-after"], "1");
    assert!(json(shed, 503).await["error"].is_string());
    // The health check is never shed.
    let health = app.get("/health").await;
    assert_eq!(health.status(), 200);

    // The slow request runs out of time: 408, and the slot is free again.
    timed_out(&mut slow).await;
    let after = app
        .post_event(r#"{"product_id": "p1", "stock": 1}"#, None)
        .await;
    json(after, 202).await;
    assert_eq!(
        app.queued().await,
        accepted.get() + 1,
        "only the complete requests"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_key_trickling_bodies_holds_only_its_own_slots_and_never_readiness() {
    let app = gateway_with(|l| {
        l.max_concurrent_requests = 6;
        l.max_requests_per_key = 2;
        // The held requests' 13 bytes keep them in time for 6.5 s past the grace: the refusals
        // below happen well within that, however loaded the machine.
        l.min_body_rate = 2;
    })
    .await;
    let greedy = testkit::keys::api_key(&app.backends.namespace, shared::auth::Scopes::all()).await;
    // Its first two trickling requests are admitted and held; the rest are refused at once.
    let mut held = vec![
        slow_request_with(&app, &greedy).await,
        slow_request_with(&app, &greedy).await,
    ];
    // The server takes connections in no set order: both are held once a complete request of
    // the key is refused for want of slots. (One that reached the server while a probe held a
    // slot was refused itself: it is sent again.)
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        for stream in &mut held {
            if closed(stream) {
                *stream = slow_request_with(&app, &greedy).await;
            }
        }
        let probe = post_as(&app, &greedy, "probe").await;
        if probe.status() == 429 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the two trickling requests were not both held"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut refused = 0;
    let mut others = Vec::new();
    for _ in 0..10 {
        let mut stream = slow_request_with(&app, &greedy).await;
        let mut first = vec![0u8; 4096];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut first)).await;
        match read {
            // The server answers 429 and closes without reading the body sent so far, which can
            // make the kernel reset the connection before the answer is read: refused all the
            // same (the connection is gone, it holds no slot).
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => refused += 1,
            Ok(Ok(read)) if first[..read].starts_with(b"HTTP/1.1 429") => {
                let answer = String::from_utf8_lossy(&first[..read]);
                assert!(answer.contains("requests in progress"), "{answer}");
                refused += 1;
            }
            // Admitted (no answer within 10 s), or anything else: what it was is told below.
            other => {
                let seen = other.map(|read| read.map(|n| String::from_utf8_lossy(&first[..n])));
                others.push(format!("{seen:?}"));
                held.push(stream);
            }
        }
    }
    assert_eq!(
        refused, 10,
        "beyond its 2 slots, every request of the key is refused; the others: {others:?}"
    );
    // Another key is served, and readiness and metrics answer, while the two are held.
    json(
        app.post_event(r#"{"product_id": "p1", "stock": 1}"#, None)
            .await,
        202,
    )
    .await;
    for open in ["/ready", "/metrics", "/health"] {
        assert_eq!(app.get(open).await.status(), 200, "{open}");
    }
    // The trickle falls behind the minimum rate (2 bytes/s after 5 s): 408, and the slots free.
    for mut stream in held.drain(..) {
        let answer = timed_out(&mut stream).await;
        assert!(answer.contains("bytes per second"), "{answer}");
    }
    let again = post_as(&app, &greedy, "p2").await;
    assert_eq!(again.status(), 202, "the key's slots are free again");
    app.stop().await;
}

/// A stock update of `product`, sent complete with `key`.
async fn post_as(app: &TestApp, key: &str, product: &str) -> reqwest::Response {
    testkit::keys::client_with_key(key)
        .post(app.url("/events"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"product_id": "{product}", "stock": 1}}"#))
        .send()
        .await
        .expect("sent")
}

/// Whether the server has answered (and so closed) a request held open.
fn closed(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    !matches!(stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// Holds a request of `hold`'s open, sending it again whenever the server has answered it (one
/// that reached the server while a probe held the slot was refused itself), and probes every
/// 50 ms until `probe` yields an answer, for at most `within`; the answer and the request held.
async fn holding<T, H, HF, P, PF>(
    what: &str,
    within: Duration,
    hold: H,
    mut probe: P,
) -> (T, TcpStream)
where
    H: Fn() -> HF,
    HF: Future<Output = TcpStream>,
    P: FnMut() -> PF,
    PF: Future<Output = Option<T>>,
{
    let mut held = hold().await;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(answer) = probe().await {
            return (answer, held);
        }
        if closed(&held) {
            held = hold().await;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {what} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `RateLimit` headers of a key allowed 100 requests a second, as an answer's head shows
/// them.
fn carries_the_rate(head: &str) -> bool {
    head.contains("ratelimit-policy: \"key\";q=100;w=1") && head.contains("ratelimit: \"key\";r=")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_refusal_of_a_rated_key_carries_its_ratelimit_headers() {
    let app = gateway_with(|l| {
        l.max_concurrent_requests = 2;
        l.max_requests_per_key = 1;
        l.request_timeout = Duration::from_secs(5);
        // The held requests' 13 bytes keep them in time for 13 s past the grace: the request
        // timeout ends them.
        l.min_body_rate = 1;
    })
    .await;
    let rated = testkit::keys::named_api_key(
        &app.backends.namespace,
        "rated",
        shared::auth::Scopes::all(),
        Some(100),
    )
    .await;
    let client = testkit::keys::client_with_key(&rated);
    // Every answer, whatever its status, carries the key's headers; `wanted` ends the probing.
    let probe = |wanted: u16| {
        let (client, app) = (&client, &app);
        async move {
            let answer = client
                .get(app.url("/products/rated-1"))
                .send()
                .await
                .expect("sent");
            let headers = answer.headers();
            let rated = headers
                .get("ratelimit-policy")
                .is_some_and(|v| v == "\"key\";q=100;w=1")
                && headers
                    .get("ratelimit")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("\"key\";r="));
            assert!(rated, "{} {:?}", answer.status(), headers);
            (answer.status() == wanted).then_some(answer)
        }
    };
    // The key's one slot is held: its next request is 429 (too many in progress). (If the held
    // request reached the server while a probe held the slot, it was refused itself: send it
    // again.)
    let (busy, mut held) = holding(
        "429",
        WAIT,
        || slow_request_with(&app, &rated),
        || probe(429),
    )
    .await;
    assert_eq!(json(busy, 429).await["code"], "too_many_in_progress");
    // Both of the server's slots are held: the key's request is shed, 503.
    let (shed, mut other) = holding("503", WAIT, || slow_request(&app), || probe(503)).await;
    assert_eq!(json(shed, 503).await["code"], "overloaded");
    // The held request runs out of time: 408, with the key's headers too.
    let answer = timed_out(&mut held).await;
    assert!(carries_the_rate(&answer), "{answer}");
    let unrated = timed_out(&mut other).await;
    assert!(
        !unrated.contains("ratelimit"),
        "a key without a rate: {unrated}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_saturated_server_still_answers_readiness_and_metrics() {
    let app = gateway_with(|l| {
        l.max_concurrent_requests = 1;
        l.request_timeout = Duration::from_secs(20);
        // The held request's 13 bytes keep it in time for 13 s past the grace.
        l.min_body_rate = 1;
    })
    .await;
    // The one slot is held: data requests are shed, but never the operator's endpoints. (If
    // the slow request reached the server while a probe held the slot, it was shed itself:
    // send it again.)
    let ((), mut slow) = holding(
        "data request shed",
        Duration::from_secs(10),
        || slow_request(&app),
        || async { (app.get("/products/p1").await.status() == 503).then_some(()) },
    )
    .await;
    for open in ["/ready", "/metrics", "/health"] {
        assert_eq!(app.get(open).await.status(), 200, "{open}");
    }
    timed_out(&mut slow).await;
    // Shed and timed-out requests are counted with the others, so alerts on 5xx see overload.
    let metrics = testkit::metrics::scrape(&app.client, &app.url("")).await;
    for status in ["503", "408"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("pipeline_http_requests_total")
                    && l.contains(&format!("status=\"{status}\""))),
            "no {status} counted in\n{metrics}"
        );
    }
    app.stop().await;
}

/// The first bytes the server sends (an answer to a request it refused before its body).
async fn until_first_bytes(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut got))
        .await
        .map_or(0, |r| r.unwrap_or(0));
    got.truncate(read);
    got
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

#[tokio::test(flavor = "multi_thread")]
async fn uploads_beyond_their_memory_are_503_until_room_frees() {
    let gateway = image_gateway("up-1", |config| config.upload_memory = 1024 * 1024).await;
    let app = &gateway.app;
    // One upload declaring 900,000 bytes and sending a few holds that much room.
    let slow_upload = || async {
        let mut slow = TcpStream::connect(app.addr).await.expect("connect");
        let head = format!(
            "POST /products/up-1/images HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {}\r\nContent-Type: image/png\r\nContent-Length: 900000\r\n\r\nPNG",
            app.key
        );
        slow.write_all(head.as_bytes()).await.expect("write");
        slow
    };
    // Another upload of 300,000 bytes, its head sent alone: refused at once for want of room
    // (before its body is read), or admitted (then it waits for a body that never comes, and is
    // dropped).
    let probe = || async {
        let mut stream = TcpStream::connect(app.addr).await.expect("connect");
        let head = format!(
            "POST /products/up-1/images HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {}\r\nContent-Type: image/png\r\nContent-Length: 300000\r\n\r\n",
            app.key
        );
        stream.write_all(head.as_bytes()).await.expect("write");
        let mut got = vec![0u8; 4096];
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut got)).await {
            Ok(Ok(n)) => Some(String::from_utf8_lossy(&got[..n]).into_owned()),
            _ => None,
        }
    };
    // (The slow upload may not have reached its handler yet, or found no room itself: then it
    // is answered, and started again.)
    let (refused, slow) = holding(
        "upload refused",
        Duration::from_secs(20),
        slow_upload,
        || async {
            probe()
                .await
                .filter(|answer| answer.starts_with("HTTP/1.1 503"))
        },
    )
    .await;
    assert!(
        refused.to_ascii_lowercase().contains("retry-after"),
        "{refused}"
    );
    assert!(refused.contains("upload_memory"), "{refused}");
    // Declaring more than an image may be is 413 before anything is read.
    let mut too_big = TcpStream::connect(app.addr).await.expect("connect");
    let head = format!(
        "POST /products/up-1/images HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {}\r\nContent-Type: image/png\r\nContent-Length: {}\r\n\r\n",
        app.key,
        10 * 1024 * 1024 + 1
    );
    too_big.write_all(head.as_bytes()).await.expect("write");
    let answer = String::from_utf8_lossy(&until_first_bytes(&mut too_big).await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // The slow one gives up: its room is free again.
    drop(slow);
    testkit::wait::eventually(
        "the upload to be taken once room frees",
        Duration::from_secs(10),
        || async { (gateway.upload("up-1", 300_000).await.status() == 202).then_some(()) },
    )
    .await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_product_takes_at_most_images_per_product_images() {
    let gateway = image_gateway("many-1", |config| config.images_per_product = 2).await;
    for _ in 0..2 {
        assert_eq!(gateway.upload("many-1", 100).await.status(), 202);
    }
    let refused = json(gateway.upload("many-1", 100).await, 409).await;
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("IMAGES_PER_PRODUCT")),
        "{refused}"
    );
    // Nothing of the refused upload stays: only the two accepted ones are stored.
    let images = gateway
        .folder
        .join(gateway.app.backends.namespace.as_str())
        .join("images");
    let stored: usize = std::fs::read_dir(&images)
        .expect("the images folder")
        .filter_map(|image| std::fs::read_dir(image.ok()?.path()).ok())
        .map(Iterator::count)
        .sum();
    assert_eq!(stored, 2, "one original for each accepted upload");
    gateway.stop().await;
}
