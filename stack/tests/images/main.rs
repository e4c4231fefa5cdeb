//! Product images against the real services and a real object store (a local folder, and an
//! S3 API server): an upload made into variants that are readable, decodable and of the right
//! sizes, and listed on the product; every bad request refused by name with nothing left; a
//! broken image and a private source address failed at once and dead-lettered as `invalid`; a
//! source that keeps failing dead-lettered after 3 attempts, then replayed; an object-store
//! outage held and recovered; one trace from the upload request to the stored variants.

use std::{
    io::Cursor,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use image::{DynamicImage, ImageBuffer, ImageFormat, Rgb};
use serde_json::{Value, json};
use shared::objects::Objects;
use stack::{Options, Stack, WAIT};
use testkit::fault_proxy::{Fault, FaultProxy};

/// A photo-like picture of `width`×`height` in `format`.
fn picture(width: u32, height: u32, format: ImageFormat) -> Vec<u8> {
    let image = ImageBuffer::from_fn(width, height, |x, y| {
        Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    });
    let mut bytes = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(image)
        .write_to(&mut bytes, format)
        .expect("encodes");
    bytes.into_inner()
}

fn gateway(stack: &Stack, path: &str) -> String {
    format!("http://{}{path}", stack.gateway)
}

/// Creates the catalog entry `id`.
async fn create(stack: &Stack, id: &str) {
    let body =
        json!({"product_id": id, "name": "Lamp", "category": "home", "price": 20, "stock": 3});
    let response = stack
        .client
        .post(gateway(stack, "/api/v1/products"))
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 201);
}

/// Posts `body` as `content_type` to `id`'s images: the status, `Location` and the JSON body.
async fn upload(
    stack: &Stack,
    id: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Option<String>, Value) {
    let response = stack
        .client
        .post(gateway(stack, &format!("/api/v1/products/{id}/images")))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, location, response.json().await.unwrap_or_default())
}

/// Uploads `body` as `content_type` to `id`'s images and expects 202: the new image's id.
async fn accepted(stack: &Stack, id: &str, content_type: &str, body: Vec<u8>) -> String {
    let (status, _, accepted) = upload(stack, id, content_type, body).await;
    assert_eq!(status, 202, "{accepted}");
    accepted["image_id"].as_str().expect("an id").to_owned()
}

/// Asks for `id`'s image to be fetched from `source_url` and expects 202: the new image's id.
async fn accepted_from(stack: &Stack, id: &str, source_url: &str) -> String {
    let body = json!({ "source_url": source_url }).to_string().into_bytes();
    accepted(stack, id, "application/json", body).await
}

/// The image's status once it is no longer processing.
async fn settled(stack: &Stack, id: &str, image: &str) -> Value {
    testkit::wait::eventually(&format!("image {image} processed"), WAIT, || async {
        let path = format!("/api/v1/products/{id}/images/{image}");
        let (status, body) = testkit::http::get_json(&stack.client, &gateway(stack, &path)).await;
        (status == 200 && body["status"] != "processing").then_some(body)
    })
    .await
}

/// Reads a variant's URL (following a presigned redirect): its status, type and bytes.
async fn read(stack: &Stack, url: &str) -> (u16, String, Vec<u8>) {
    let url = if url.starts_with('/') {
        gateway(stack, url)
    } else {
        url.to_owned()
    };
    // No key: a variant's URL is enough.
    let response = reqwest::get(&url).await.expect("read");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (
        status,
        content_type,
        response.bytes().await.expect("body").to_vec(),
    )
}

/// Checks every variant of a ready image: readable without a key, decodable, of the sizes it
/// claims and the expected ones.
async fn assert_variants(stack: &Stack, variants: &Value, expected: [(u32, u32); 3]) {
    for (name, (width, height)) in ["original", "thumbnail", "medium"]
        .into_iter()
        .zip(expected)
    {
        let variant = &variants[name];
        assert_eq!(
            (variant["width"].as_u64(), variant["height"].as_u64()),
            (Some(u64::from(width)), Some(u64::from(height))),
            "{name}: {variant}"
        );
        let (status, content_type, bytes) =
            read(stack, variant["url"].as_str().expect("a URL")).await;
        assert_eq!(status, 200, "{name}");
        assert_eq!(content_type, variant["content_type"], "{name}");
        assert_eq!(
            Some(bytes.len() as u64),
            variant["bytes"].as_u64(),
            "{name}"
        );
        let decoded = image::load_from_memory(&bytes).expect("decodable");
        assert_eq!(
            (decoded.width(), decoded.height()),
            (width, height),
            "{name}"
        );
    }
}

/// The dead letters the processor lists for `reason`, once there are `n`.
async fn dead_letters(stack: &Stack, reason: &str, n: usize) -> Vec<Value> {
    let url = format!("http://{}/dead-letters?reason={reason}", stack.processor);
    testkit::wait::eventually(&format!("{n} dead letters {reason}"), WAIT, || async {
        let (status, body) = testkit::http::get_json(&stack.client, &url).await;
        let listed = body["items"].as_array().cloned().unwrap_or_default();
        (status == 200 && listed.len() >= n).then_some(listed)
    })
    .await
}

/// The whole path on one store: upload → variants stored, readable, decodable and of the
/// right sizes → the product lists them → `product.images_ready` announced.
async fn upload_to_ready(stack: &Stack) {
    let broker = testkit::broker::Broker::connect(&stack.backends).await;
    let mut announced = broker
        .listen(&stack.topology.events_exchange(), "product.images_ready")
        .await;
    create(stack, "lamp-1").await;
    let png = picture(1600, 1000, ImageFormat::Png);
    let (status, location, accepted) = upload(stack, "lamp-1", "image/png", png).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["status"], "processing");
    let image = accepted["image_id"].as_str().expect("an id").to_owned();
    assert_eq!(
        location.as_deref(),
        Some(format!("/products/lamp-1/images/{image}").as_str())
    );

    let done = settled(stack, "lamp-1", &image).await;
    assert_eq!(done["status"], "ready", "{done}");
    assert_eq!(done["error"], Value::Null);
    assert_variants(
        stack,
        &done["variants"],
        [(1600, 1000), (200, 125), (800, 500)],
    )
    .await;
    assert_eq!(done["variants"]["thumbnail"]["content_type"], "image/jpeg");

    // The imager refreshes the product's cached view right after it marks the image ready.
    let product = testkit::wait::eventually("the product lists its image", WAIT, || async {
        let (_, product) =
            testkit::http::get_json(&stack.client, &gateway(stack, "/api/v1/products/lamp-1"))
                .await;
        (product["images"][0]["image_id"] == image.as_str()).then_some(product)
    })
    .await;
    assert_eq!(product["images"][0]["variants"], done["variants"]);
    let (_, page) = testkit::http::get_json(
        &stack.client,
        &gateway(stack, "/api/v1/products?category=home"),
    )
    .await;
    assert_eq!(page["items"][0]["images"][0]["image_id"], image.as_str());

    let body = testkit::broker::Broker::next_json(&mut announced, WAIT).await;
    assert_eq!(body["type"], "product.images_ready");
    assert_eq!(body["data"]["product_id"], "lamp-1");
    assert_eq!(body["data"]["image_id"], image.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_becomes_variants_in_a_local_store_listed_on_the_product() {
    let stack = Stack::start(None).await;
    upload_to_ready(&stack).await;
    // The gateway serves a local store's bytes: cacheable for good, never sniffed as another type.
    let (_, product) =
        testkit::http::get_json(&stack.client, &gateway(&stack, "/api/v1/products/lamp-1")).await;
    let url = product["images"][0]["variants"]["original"]["url"]
        .as_str()
        .expect("a URL");
    assert!(url.starts_with("/images/"), "{url}");
    let response = reqwest::get(gateway(&stack, url)).await.expect("read");
    let headers = response.headers();
    assert_eq!(
        headers["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(headers["x-content-type-options"], "nosniff");
    // A key that is not an image of this namespace is not served.
    for key in [
        "/images/elsewhere/images/x/original.png",
        "/images/../Cargo.toml",
    ] {
        let response = reqwest::get(gateway(&stack, key)).await.expect("read");
        assert_eq!(response.status(), 404, "{key}");
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_becomes_variants_in_an_s3_bucket_read_through_presigned_urls() {
    let s3 = testkit::s3::S3Server::start("images").await;
    let options = testkit::s3::S3Server::options(s3.addr);
    let options: Vec<(&str, &str)> = options.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let objects = Objects::open(
        "s3://images/catalog",
        None,
        Duration::from_secs(60),
        &options,
    )
    .expect("an S3 store");
    let stack = Stack::start_with(Options {
        objects: Some(objects),
        ..Options::default()
    })
    .await;
    upload_to_ready(&stack).await;
    // The bytes are in the bucket, under the prefix.
    let listing = reqwest::get(format!("http://{}/images?prefix=catalog/", s3.addr))
        .await
        .expect("listed")
        .text()
        .await
        .expect("text");
    assert_eq!(listing.matches("<Key>catalog/").count(), 3, "{listing}");
    // The gateway's URL redirects to a presigned one.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let (_, product) =
        testkit::http::get_json(&stack.client, &gateway(&stack, "/api/v1/products/lamp-1")).await;
    let url = product["images"][0]["variants"]["thumbnail"]["url"]
        .as_str()
        .expect("a URL");
    let response = no_redirects
        .get(gateway(&stack, url))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 302);
    let to = response.headers()["location"].to_str().expect("text");
    assert!(to.contains("X-Amz-Signature="), "{to}");
    stack.stop().await;
    s3.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_uploads_are_refused_by_name_and_leave_nothing_behind() {
    let stack = Stack::start(None).await;
    create(&stack, "lamp-2").await;
    let png = picture(64, 64, ImageFormat::Png);
    // (product id, content type, body, expected status, the field the error names)
    type Case<'a> = (&'a str, &'a str, Vec<u8>, u16, Option<&'a str>);
    let cases: Vec<Case> = vec![
        ("lamp-2", "text/plain", b"hello".to_vec(), 415, None),
        ("lamp-2", "image/gif", png.clone(), 415, None),
        ("lamp-2", "image/png", Vec::new(), 400, Some("body")),
        ("nobody", "image/png", png.clone(), 404, None),
        ("bad id!", "image/png", png.clone(), 400, Some("product_id")),
        (
            "lamp-2",
            "application/json",
            br#"{"source_url": "ftp://x/y.png"}"#.to_vec(),
            400,
            Some("source_url"),
        ),
        (
            "lamp-2",
            "application/json",
            br#"{"source_url": "not a url"}"#.to_vec(),
            400,
            Some("source_url"),
        ),
        (
            "lamp-2",
            "application/json",
            br#"{"url": "https://x/y.png"}"#.to_vec(),
            400,
            Some("source_url"),
        ),
        (
            "lamp-2",
            "application/json",
            b"{".to_vec(),
            400,
            Some("body"),
        ),
    ];
    // Declaring more than an image may be is 413 at once, before any of the body is read (a
    // client still sending it then finds the connection closed).
    let mut too_large = tokio::net::TcpStream::connect(stack.gateway)
        .await
        .expect("connect");
    let head = format!(
        "POST /api/v1/products/lamp-2/images HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {}\r\nContent-Type: image/png\r\nContent-Length: {}\r\n\r\n",
        stack.key,
        10 * 1024 * 1024 + 1
    );
    tokio::io::AsyncWriteExt::write_all(&mut too_large, head.as_bytes())
        .await
        .expect("write");
    let mut answer = vec![0u8; 1024];
    let read = tokio::time::timeout(
        WAIT,
        tokio::io::AsyncReadExt::read(&mut too_large, &mut answer),
    )
    .await
    .expect("answered in time")
    .expect("read");
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    for (id, content_type, body, expected, field) in cases {
        let id_path = id.replace(' ', "%20").replace('!', "%21");
        let (status, _, answer) = upload(&stack, &id_path, content_type, body).await;
        let context = format!("{id} {content_type}");
        assert_eq!(status, expected, "{context}: {answer}");
        assert!(answer["error"].is_string(), "{context}: {answer}");
        if let Some(field) = field {
            testkit::http::assert_names_field(status, &answer, field, &context);
        }
    }
    // The wrong scope.
    let reader = testkit::keys::api_key(
        &stack.backends.namespace,
        [shared::auth::Scope::ProductsRead].into_iter().collect(),
    )
    .await;
    let response = testkit::keys::client_with_key(&reader)
        .post(gateway(&stack, "/api/v1/products/lamp-2/images"))
        .header("content-type", "image/png")
        .body(png)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 403);
    // Nothing recorded, nothing stored, nothing queued.
    let pool = testkit::postgres::pool(&stack.backends).await;
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM product_images")
        .fetch_one(&pool)
        .await
        .expect("counted");
    assert_eq!(recorded, 0);
    let stored = std::fs::read_dir(
        std::env::temp_dir()
            .join("pipeline-objects")
            .join(stack.backends.namespace.as_str()),
    )
    .map(|entries| entries.count())
    .unwrap_or(0);
    assert_eq!(stored, 0);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_image_and_a_private_source_fail_at_once_as_invalid() {
    let stack = Stack::start(None).await;
    create(&stack, "lamp-3").await;
    // Declared a PNG, but not one.
    let (status, _, broken) = upload(
        &stack,
        "lamp-3",
        "image/png",
        b"\x89PNG\r\n\x1a\nbroken".to_vec(),
    )
    .await;
    assert_eq!(status, 202);
    // A JPEG declared a PNG.
    let (_, _, mislabelled) = upload(
        &stack,
        "lamp-3",
        "image/png",
        picture(50, 50, ImageFormat::Jpeg),
    )
    .await;
    // On a private address (the imager refuses them by default), a token in its query.
    let source = json!({"source_url": "http://localhost:9/lamp.png?token=s3cret-in-url"})
        .to_string()
        .into_bytes();
    let (_, _, private) = upload(&stack, "lamp-3", "application/json", source).await;
    for (accepted, why) in [
        (&broken, "undecodable"),
        (
            &mislabelled,
            "declared as image/png but the content is image/jpeg",
        ),
        (&private, "loopback"),
    ] {
        let image = accepted["image_id"].as_str().expect("an id");
        let done = settled(&stack, "lamp-3", image).await;
        assert_eq!(done["status"], "failed", "{done}");
        let error = done["error"].as_str().expect("why");
        assert!(error.contains(why), "{done}");
        // A failed image is not kept: nothing of it stays in the store.
        for name in [
            "original.png",
            "original.jpg",
            "thumbnail.webp",
            "medium.webp",
        ] {
            let key = shared::gateway::images::key(
                &stack.backends.namespace,
                image.parse().expect("a UUID"),
                name,
            );
            assert!(stack.objects.get(&key).await.is_err(), "{key} left behind");
        }
        // Neither the URL's secret nor where the name points is told to the reader.
        assert!(
            !error.contains("s3cret") && !error.contains("127.0.0.1"),
            "{done}"
        );
        assert_eq!(done["variants"], Value::Null);
    }
    let listed = dead_letters(&stack, "invalid", 3).await;
    assert_eq!(listed.len(), 3, "{listed:?}");
    let (_, product) =
        testkit::http::get_json(&stack.client, &gateway(&stack, "/api/v1/products/lamp-3")).await;
    assert_eq!(product["images"], json!([]));
    stack.stop().await;
}

/// A listener on a free port of 127.0.0.1, and its address.
async fn local_listener() -> (tokio::net::TcpListener, std::net::SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bound");
    let addr = listener.local_addr().expect("address");
    (listener, addr)
}

/// The stack with `objects` as its store (default: a folder) and its imager allowed to fetch
/// from local sources (private addresses), holding the catalog entry `id`.
async fn fetching_locally(objects: Option<Objects>, id: &str) -> Stack {
    let stack = Stack::start_with(Options {
        objects,
        fetch_private: true,
        ..Options::default()
    })
    .await;
    create(&stack, id).await;
    stack
}

/// A local source that answers 503 while `failing`, else a 900×900 PNG.
async fn source(failing: Arc<AtomicBool>) -> std::net::SocketAddr {
    let png = picture(900, 900, ImageFormat::Png);
    let app = axum::Router::new().route(
        "/lamp.png",
        axum::routing::get(move || {
            let (failing, png) = (Arc::clone(&failing), png.clone());
            async move {
                if failing.load(Ordering::SeqCst) {
                    (axum::http::StatusCode::SERVICE_UNAVAILABLE, Vec::new())
                } else {
                    (axum::http::StatusCode::OK, png)
                }
            }
        }),
    );
    let (listener, addr) = local_listener().await;
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_source_is_dead_lettered_after_3_attempts_then_replayed() {
    let stack = fetching_locally(None, "lamp-4").await;
    let failing = Arc::new(AtomicBool::new(true));
    let addr = source(Arc::clone(&failing)).await;
    let image = accepted_from(&stack, "lamp-4", &format!("http://{addr}/lamp.png")).await;
    let done = settled(&stack, "lamp-4", &image).await;
    assert_eq!(done["status"], "failed");
    let why = done["error"].as_str().expect("why");
    assert!(why.contains("3 attempts") && why.contains("503"), "{why}");
    let listed = dead_letters(&stack, "attempts_exhausted", 1).await;
    let dead = listed[0]["id"].as_str().expect("an id").to_owned();

    failing.store(false, Ordering::SeqCst);
    let replayed = stack
        .client
        .post(format!("http://{}/dead-letters/replay", stack.processor))
        .json(&json!({"ids": [dead]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(replayed.status(), 200);
    let done = testkit::wait::eventually("the replayed image ready", WAIT, || async {
        let path = format!("/api/v1/products/lamp-4/images/{image}");
        let (_, body) = testkit::http::get_json(&stack.client, &gateway(&stack, &path)).await;
        (body["status"] == "ready").then_some(body)
    })
    .await;
    assert_variants(
        &stack,
        &done["variants"],
        [(900, 900), (200, 200), (800, 800)],
    )
    .await;
    stack.stop().await;
}

/// A source that takes connections and never answers.
async fn silent_source() -> std::net::SocketAddr {
    let (listener, addr) = local_listener().await;
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn sources_that_never_answer_do_not_hold_up_other_images() {
    let stack = fetching_locally(None, "lamp-6").await;
    let silent = silent_source().await;
    // Five jobs whose sources never answer (each attempt waits out the 2 s fetch timeout, three
    // attempts each), then an upload.
    let mut stuck = Vec::new();
    for i in 0..5 {
        let source = format!("http://{silent}/lamp-{i}.png");
        stuck.push(accepted_from(&stack, "lamp-6", &source).await);
    }
    let png = picture(300, 200, ImageFormat::Png);
    let image = accepted(&stack, "lamp-6", "image/png", png).await;
    let done = settled(&stack, "lamp-6", &image).await;
    assert_eq!(done["status"], "ready", "{done}");
    // Ready while the silent sources are still being tried: it did not wait behind them.
    let mut still_trying = 0;
    for id in &stuck {
        let path = format!("/api/v1/products/lamp-6/images/{id}");
        let (_, body) = testkit::http::get_json(&stack.client, &gateway(&stack, &path)).await;
        if body["status"] == "processing" {
            still_trying += 1;
        }
    }
    assert!(
        still_trying > 0,
        "the upload waited until every silent source had failed"
    );
    // Each silent source fails in the end, after its attempts.
    for id in &stuck {
        let done = settled(&stack, "lamp-6", id).await;
        assert_eq!(done["status"], "failed", "{done}");
        let why = done["error"].as_str().expect("why");
        assert!(why.contains("3 attempts"), "{why}");
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_object_store_outage_is_held_and_recovered() {
    let s3 = testkit::s3::S3Server::start("held").await;
    let proxy = FaultProxy::start(s3.addr).await.expect("proxy");
    let options = testkit::s3::S3Server::options(proxy.addr());
    let options: Vec<(&str, &str)> = options.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let objects =
        Objects::open("s3://held", None, Duration::from_secs(60), &options).expect("an S3 store");
    let stack = fetching_locally(Some(objects), "lamp-5").await;
    let addr = source(Arc::new(AtomicBool::new(false))).await;
    proxy.set(Fault::Drop);
    let image = accepted_from(&stack, "lamp-5", &format!("http://{addr}/lamp.png")).await;
    // Held: the imager says so, and the image is still processing, no attempt counted.
    testkit::wait::eventually("the imager holding the job", WAIT, || async {
        let metrics =
            testkit::metrics::scrape(&stack.client, &format!("http://{}", stack.imager)).await;
        (testkit::metrics::counter(&metrics, "pipeline_holds_total", "") > 0.0).then_some(())
    })
    .await;
    let path = format!("/api/v1/products/lamp-5/images/{image}");
    let (_, held) = testkit::http::get_json(&stack.client, &gateway(&stack, &path)).await;
    assert_eq!(held["status"], "processing", "{held}");
    proxy.set(Fault::Pass);
    let done = settled(&stack, "lamp-5", &image).await;
    assert_eq!(done["status"], "ready", "{done}");
    stack.stop().await;
    s3.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_is_traced_from_the_request_to_the_stored_variants() {
    use opentelemetry::trace::{SpanKind, Status};

    testkit::spans::exporter();
    let stack = Stack::start(None).await;
    create(&stack, "lamp-t").await;
    // The client starts the trace; the gateway continues it into the job.
    let client_trace = "5cf92f3577b34da6a3ce929d0e0e4736";
    let response = stack
        .client
        .post(gateway(&stack, "/api/v1/products/lamp-t/images"))
        .header("content-type", "image/png")
        .header("traceparent", stack::traceparent(client_trace))
        .body(picture(300, 200, ImageFormat::Png))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.expect("JSON");
    let image = accepted["image_id"].as_str().expect("an id").to_owned();
    assert_eq!(settled(&stack, "lamp-t", &image).await["status"], "ready");

    let ns = stack.backends.namespace.as_str().to_owned();
    let spans = testkit::spans::of_trace(client_trace, SpanKind::Consumer, WAIT).await;
    // The trace's span of `kind`, checked to be `name`, made by the service `scope`.
    let span = |kind: SpanKind, name: String, scope: &str| {
        let span = spans
            .iter()
            .find(|s| s.span_kind == kind)
            .unwrap_or_else(|| panic!("the {scope}'s {kind:?} span: {spans:?}"));
        assert_eq!(span.name, name);
        assert_eq!(span.instrumentation_scope.name(), scope);
        span
    };
    let publish = span(
        SpanKind::Producer,
        format!("publish {ns}.images"),
        "gateway",
    );
    // The imager's span is the publish's child, and ends once the variants are stored and
    // recorded, without error.
    let process = span(SpanKind::Consumer, format!("process {ns}.images"), "imager");
    assert_eq!(
        process.parent_span_id,
        publish.span_context.span_id(),
        "{spans:?}"
    );
    assert_eq!(process.status, Status::Unset);
    let (_, done) = testkit::http::get_json(
        &stack.client,
        &gateway(&stack, &format!("/api/v1/products/lamp-t/images/{image}")),
    )
    .await;
    assert!(done["variants"]["thumbnail"]["url"].is_string(), "{done}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_whose_record_postgres_refuses_fails_as_invalid_and_the_queue_moves_on() {
    let stack = Stack::start(None).await;
    // A refusal of the ready image's record (a constraint a row breaks), stood in for by a
    // trigger: trying again would give the same answer.
    let pool = testkit::postgres::pool(&stack.backends).await;
    testkit::sabotage::writes(
        &pool,
        "refuse_ready",
        "BEFORE UPDATE ON product_images",
        "NEW.status = 'ready' AND NEW.product_id = 'lamp-refused'",
        "check_violation",
        "refused",
    )
    .await;
    let mut images = Vec::new();
    for product in ["lamp-refused", "lamp-after"] {
        create(&stack, product).await;
        let png = picture(40, 30, ImageFormat::Png);
        images.push(accepted(&stack, product, "image/png", png).await);
    }
    let refused = settled(&stack, "lamp-refused", &images[0]).await;
    assert_eq!(refused["status"], "failed", "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("PostgreSQL refused")),
        "{refused}"
    );
    let after = settled(&stack, "lamp-after", &images[1]).await;
    assert_eq!(after["status"], "ready", "the queue moved on: {after}");
    let dead = dead_letters(&stack, "invalid", 1).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["product_id"], "lamp-refused");
    stack.stop().await;
}
