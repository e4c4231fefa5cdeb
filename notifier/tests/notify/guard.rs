//! The notifier's defences: its API wants an `ops` key; endpoints on private networks are
//! refused when subscribed and again when connecting (a name that changed to a private address
//! since); a namespace's subscriptions are capped; signing secrets never reach the logs.

use std::process::Stdio;

use serde_json::{Value, json};
use shared::auth::Scope;
use testkit::{http::answer, webhooks::Receiver};

use crate::helpers::{Notifier, WAIT, spawn_notifier, spawn_notifier_with};

#[tokio::test(flavor = "multi_thread")]
async fn the_api_wants_an_ops_key() {
    let notifier = spawn_notifier(5).await;
    let anonymous = reqwest::Client::new();
    let reader = testkit::keys::client_with_key(
        &testkit::keys::api_key(
            &notifier.backends.namespace,
            [Scope::ProductsRead, Scope::OrdersRead]
                .into_iter()
                .collect(),
        )
        .await,
    );
    let body = json!({ "url": "https://shop.example/hook", "event_types": ["stock.low"] });
    for (method, path) in [
        ("POST", "/subscriptions"),
        ("GET", "/subscriptions"),
        ("GET", "/subscriptions/0190d0a4-0000-7000-8000-000000000000"),
        (
            "DELETE",
            "/subscriptions/0190d0a4-0000-7000-8000-000000000000",
        ),
        (
            "POST",
            "/subscriptions/0190d0a4-0000-7000-8000-000000000000/rotate-secret",
        ),
        ("GET", "/notifications/msg_1"),
        ("GET", "/deliveries"),
        ("POST", "/deliveries/1/retry"),
    ] {
        let request = |client: &reqwest::Client| {
            client
                .request(method.parse().expect("a method"), notifier.url(path))
                .json(&body)
        };
        let response = request(&anonymous).send().await.expect("sent");
        assert_eq!(response.status(), 401, "{method} {path}");
        let response = request(&reader).send().await.expect("sent");
        assert_eq!(response.status(), 403, "{method} {path}");
        let refused: Value = response.json().await.expect("JSON");
        assert_eq!(refused["scope"], "ops");
    }
    let (status, listed) = notifier.get("/subscriptions").await;
    assert_eq!(status, 200);
    assert_eq!(listed["items"], json!([]), "nothing was created");
    for (path, field) in [
        ("/deliveries?status=%00", "status"),
        ("/notifications/a%0Ab", "event_id"),
    ] {
        let (status, body) = notifier.get(path).await;
        testkit::http::assert_names_field(status, &body, field, path);
    }
    notifier.stop().await;
}

/// A notifier that refuses endpoints on private networks, a receiver on this machine, and the
/// URL that reaches that receiver by name (`http://localhost:{port}`).
async fn refusing_private_networks_with_a_local_receiver() -> (Notifier, Receiver, String) {
    let notifier = spawn_notifier_with(|c| c.allow_private_networks = false).await;
    let receiver = Receiver::start(&[]).await;
    let by_name = format!("http://localhost:{}", receiver.port());
    (notifier, receiver, by_name)
}

#[tokio::test(flavor = "multi_thread")]
async fn endpoints_on_private_networks_are_refused_by_class() {
    let (notifier, _receiver, by_name) = refusing_private_networks_with_a_local_receiver().await;
    for (url, class) in [
        ("http://127.0.0.1:8082/dead-letters", "loopback"),
        ("http://10.0.0.5/hook", "private"),
        ("http://172.20.1.1/hook", "private"),
        ("http://192.168.0.10/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://100.64.0.1/hook", "carrier-grade NAT"),
        ("http://224.0.0.1/hook", "multicast"),
        ("http://0.0.0.0:8083/hook", "unspecified"),
        ("http://[::1]:8083/hook", "loopback"),
        ("http://[fd00::1]/hook", "private"),
        ("http://[fe80::1]/hook", "link-local"),
        ("http://[::ffff:127.0.0.1]/hook", "loopback"),
        ("http://[::ffff:169.254.169.254]/hook", "link-local"),
        (by_name.as_str(), "loopback"),
    ] {
        let subscription = json!({ "url": url, "event_types": ["stock.low"] });
        let (status, body) = notifier.post_json("/subscriptions", &subscription).await;
        assert_eq!(status, 400, "{url}");
        assert_eq!(body["field"], "url", "{url}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains(class)),
            "{url}: {body}"
        );
    }
    let (_, listed) = notifier.get("/subscriptions").await;
    assert_eq!(listed["items"], json!([]), "nothing was stored");
    notifier.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_that_resolves_to_a_private_address_at_delivery_is_not_connected_to() {
    let (notifier, receiver, by_name) = refusing_private_networks_with_a_local_receiver().await;
    // As if the name had resolved to a public address when it was subscribed, and to this
    // machine now (DNS rebinding).
    let pool = testkit::postgres::pool(&notifier.backends).await;
    sqlx::query(
        "INSERT INTO subscriptions (id, url, event_types, secret)
         VALUES ('0190d0a4-0000-7000-8000-000000000001', $1, '{stock.low}', 'whsec_AAAA')",
    )
    .bind(format!("{by_name}/hook"))
    .execute(&pool)
    .await
    .expect("insert");
    // What the notifier's periodic reconciliation does for a subscription written behind its
    // back, at once.
    notifier.bind("stock.low").await;
    notifier.emit("msg_rebind", "stock.low").await;
    let notification = notifier.settled("msg_rebind").await;
    let delivery = &notification["deliveries"][0];
    let error = delivery["attempt_log"][0]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(error.contains("loopback"), "{notification}");
    assert!(
        receiver.received().is_empty(),
        "nothing reached the address"
    );
    notifier.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_holds_at_most_its_cap_of_subscriptions() {
    let notifier = spawn_notifier_with(|c| c.max_subscriptions = 2).await;
    let receiver = Receiver::start(&[]).await;
    let (first, _) = notifier.subscribe(&receiver.url(), &["stock.low"]).await;
    notifier.subscribe(&receiver.url(), &["stock.low"]).await;
    let third = json!({ "url": receiver.url(), "event_types": ["stock.low"] });
    assert_eq!(notifier.post_json("/subscriptions", &third).await.0, 409);
    let deleted = notifier.delete(&format!("/subscriptions/{first}")).await.0;
    assert_eq!(deleted, 204);
    notifier.subscribe(&receiver.url(), &["stock.low"]).await;
    notifier.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn signing_secrets_and_tokens_in_webhook_urls_never_appear_in_the_logs() {
    let sandbox = testkit::sandbox::Sandbox::new();
    let backends = sandbox.backends();
    let key = testkit::keys::api_key(&backends.namespace, shared::auth::Scopes::all()).await;
    let client = testkit::keys::client_with_key(&key);
    let addr = testkit::ports::free_addr();
    let log_path = std::env::temp_dir().join(format!("{}.log", backends.namespace.as_str()));
    let log = std::fs::File::create(&log_path).expect("a log file");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_notifier"))
        .env("PIPELINE_NAMESPACE", backends.namespace.as_str())
        .env("NOTIFIER_ADDR", &addr)
        .env("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true")
        .env("RUST_LOG", "trace")
        .env("LOG_FORMAT", "json")
        .stdout(log.try_clone().expect("a file handle"))
        .stderr(log)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the notifier starts");
    let base = format!("http://{addr}");
    testkit::wait::until_ready(&client, &base, WAIT).await;
    let receiver = Receiver::start(&[]).await;
    let subscription = json!({
        "url": format!("{}?token=tok-in-the-url-5ecret", receiver.url()),
        "event_types": ["stock.low"],
    });
    let subscribe = client
        .post(format!("{base}/subscriptions"))
        .json(&subscription);
    let (status, created) = answer(subscribe).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("id");
    let (status, rotated) =
        answer(client.post(format!("{base}/subscriptions/{id}/rotate-secret"))).await;
    assert_eq!(status, 200, "{rotated}");
    let broker = testkit::broker::Broker::connect(&backends).await;
    let topology = shared::topology::Topology::new(backends.namespace.clone(), 2);
    broker
        .publish(
            &topology.events_exchange(),
            "stock.low",
            br#"{"type":"stock.low","timestamp":"2026-01-01T00:00:00Z","data":{"source_event_id":"e","product_id":"p","stock":1,"threshold":10}}"#,
            lapin::BasicProperties::default().with_message_id("msg_logged".into()),
        )
        .await;
    receiver.wait_for(1, WAIT).await;
    testkit::services::sigterm(&mut child).await;
    let logs = std::fs::read_to_string(&log_path).expect("the log");
    let _ = std::fs::remove_file(&log_path);
    assert!(logs.contains("notifier listening"), "captured: {logs}");
    assert!(
        logs.contains("Subscription created") && logs.contains("token=REDACTED"),
        "the URL is logged redacted: {logs}"
    );
    assert!(
        !logs.contains("tok-in-the-url-5ecret"),
        "a URL's token was logged"
    );
    for secret in [&created["secret"], &rotated["secret"]] {
        let secret = secret.as_str().expect("a secret");
        let encoded = secret.trim_start_matches("whsec_");
        assert!(!logs.contains(encoded), "a signing secret was logged");
    }
    assert!(!logs.contains(&key), "an API key was logged");
}
