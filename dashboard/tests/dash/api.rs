//! The dashboard's JSON: the live snapshot, the summary, lookups, and degrading when a source
//! is unreachable.

use serde_json::{Value, json};
use shared::contract::{DownstreamId, EventKey, EventType, IngestKind};

use crate::helpers::Stack;

#[tokio::test(flavor = "multi_thread")]
async fn the_snapshot_follows_traffic_and_lookups_find_events_products_and_orders() {
    let stack = Stack::start(None).await;
    // A subscriber to orders, so the notifier takes the order's events in.
    let (_receiver, _) = stack.subscriber(&["order.created"]).await;
    stack
        .send(
            "/events",
            r#"{"product_id": "dash-1", "price": 9.99, "stock": 20, "event_id": "dash-evt-1"}"#,
        )
        .await;
    stack
        .send("/orders", r#"{"id": "dash-o1", "sku": "dash-1", "qty": 3}"#)
        .await;
    let snapshot = stack
        .snapshot_when(|s| s["totals"]["applied"].as_f64() >= Some(2.0))
        .await;
    assert!(snapshot["totals"]["accepted"].as_f64() >= Some(2.0));
    assert_eq!(snapshot["services"]["gateway"]["ready"], true);
    assert_eq!(snapshot["services"]["imager"]["ready"], true);
    assert_eq!(snapshot["queues"]["up"], true);
    let queues = snapshot["queues"]["queues"].as_array().expect("queues");
    // The imager's queue, with its consumer.
    let images = stack.topology.images_queue();
    assert!(
        queues
            .iter()
            .any(|q| q["kind"] == "images" && q["name"] == images.as_str() && q["consumers"] == 1),
        "{queues:?}"
    );
    assert!(
        queues
            .iter()
            .any(|q| q["kind"] == "shard" && q["consumers"] == 1)
    );
    // Each shard names the processor replica that owns it (its broker connection's name).
    for shard in queues.iter().filter(|q| q["kind"] == "shard") {
        let owner = shard["owner"].as_str().unwrap_or_default();
        assert!(owner.starts_with("processor@"), "{shard}");
    }
    // The retry queues are the processor's ladder, read from its metrics, shortest first.
    let retry: Vec<&str> = queues
        .iter()
        .filter(|q| q["kind"] == "retry")
        .filter_map(|q| q["name"].as_str())
        .collect();
    let ladder: Vec<String> = testkit::sandbox::RETRY_DELAYS
        .iter()
        .map(|d| stack.topology.retry_queue(*d))
        .collect();
    assert_eq!(retry, ladder);
    assert!(snapshot["latency"]["end_to_end_seconds"]["p50"].is_number());

    let (status, event) = stack.get("/api/v1/events/dash-evt-1").await;
    assert_eq!(status, 200);
    assert_eq!(event["status"], "applied");
    assert_eq!(
        event["accepted"], true,
        "sent with a key: the gateway's record says so"
    );
    assert_eq!(event["applied"]["product_id"], "dash-1");
    // The downstream event it caused, under the id it was published with.
    let source = EventKey {
        kind: IngestKind::ProductUpdate,
        owner: stack::KEY_NAME.parse().expect("a valid owner"),
        id: "dash-evt-1".parse().expect("a valid id"),
    };
    let id = DownstreamId::of(&source, EventType::ProductUpdated);
    assert_eq!(
        event["downstream"],
        json!([{"id": id.as_str(), "type": "product.updated"}]),
        "{event}"
    );

    let (_, product) = stack.get("/api/v1/products/dash-1").await;
    assert_eq!(product["product"]["stock"], 17);
    assert_eq!(product["product"]["price"].to_string(), "9.99");
    assert_eq!(product["recent_orders"][0]["order_id"], "dash-o1");

    let (_, order) = stack.get("/api/v1/orders/dash-o1").await;
    assert_eq!(order["order"]["status"], "created");
    let types: Vec<&Value> = order["notifications"]
        .as_array()
        .expect("notifications")
        .iter()
        .map(|n| &n["event_type"])
        .collect();
    assert!(types.iter().any(|t| *t == "order.created"), "{order}");

    let (_, summary) = stack.get("/api/v1/summary?sku=dash-1").await;
    assert_eq!(summary["orders"]["total"], 1);
    assert_eq!(summary["orders"]["created"], 1);
    assert_eq!(summary["inventory"]["stock"], 17);

    assert_eq!(stack.get("/api/v1/products/never").await.0, 404);
    assert_eq!(stack.get("/api/v1/orders/never").await.0, 404);
    let (status, unknown) = stack.get("/api/v1/events/never").await;
    assert_eq!((status, unknown["status"].as_str()), (200, Some("unknown")));
    let (status, bad) = stack.get("/api/v1/summary?skew=1").await;
    assert_eq!((status, bad["field"].as_str()), (400, Some("skew")));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_service_is_named_and_the_rest_still_shows() {
    let stack = Stack::start(Some(testkit::ports::closed_port_url("http"))).await;
    let snapshot = stack
        .snapshot_when(|s| s["services"]["processor"]["up"] == false && s["queues"]["up"] == true)
        .await;
    assert!(snapshot["services"]["processor"]["error"].is_string());
    assert_eq!(snapshot["services"]["gateway"]["up"], true);
    assert!(snapshot["totals"]["applied"].is_null(), "unknown, not zero");
    let (status, body) = stack.get("/api/v1/dead-letters").await;
    assert_eq!(
        (status, body["dependency"].as_str()),
        (503, Some("processor"))
    );
    let page = stack.client.get(stack.url("/")).send().await.expect("sent");
    assert_eq!(page.status(), 200);
    assert!(page.text().await.expect("text").contains("Dead letters"));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn started_before_every_other_service_the_dashboard_finds_every_queue() {
    // A fresh namespace nothing has declared yet: the dashboard declares the topology itself,
    // so its queue readings are depths (0), never a missing queue (and no channel error).
    let sandbox = testkit::sandbox::Sandbox::new();
    let backends = sandbox.backends();
    let mut running = testkit::in_process::InProcess::default();
    let mut config = testkit::test_config!(dashboard::Config, backends.clone());
    config.refresh = std::time::Duration::from_millis(250);
    let addr = running.launch(dashboard::Application::build(config).await);
    let client = testkit::keys::authorized_client(&backends.namespace).await;
    let url = format!("http://{addr}/api/v1/snapshot");
    let queues = testkit::wait::eventually(
        "a snapshot with the queues",
        crate::helpers::WAIT,
        || async {
            let (status, snapshot) = testkit::http::get_json(&client, &url).await;
            (status == 200 && snapshot["queues"]["up"] == true)
                .then(|| snapshot["queues"]["queues"].clone())
        },
    )
    .await;
    let queues = queues.as_array().expect("queues");
    for kind in ["shard", "dead", "notifier", "images"] {
        assert!(
            queues.iter().any(|q| q["kind"] == kind),
            "{kind}: {queues:?}"
        );
    }
    for queue in queues {
        assert_eq!(queue["messages"], 0, "{queue}");
    }
    while !running.is_empty() {
        running.stop_last().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_processors_problems_come_back_as_answers_to_the_dashboards_request() {
    let stack = Stack::start(None).await;
    for (path, status, client_id) in [
        ("/api/v1/dead-letters/never", 404, None),
        ("/api/v1/dead-letters?limit=0", 400, Some("operator-7")),
    ] {
        let mut request = stack.client.get(stack.url(path));
        if let Some(id) = client_id {
            request = request.header("x-request-id", id);
        }
        let response = request.send().await.expect("sent");
        assert_eq!(response.status(), status, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
        let id = response.headers()["request-id"]
            .to_str()
            .expect("ASCII")
            .to_owned();
        if let Some(client_id) = client_id {
            assert_eq!(id, client_id);
        }
        let problem: Value = response.json().await.expect("JSON");
        assert_eq!(problem["request_id"], id.as_str(), "{problem}");
        assert_eq!(
            problem["instance"],
            path.split('?').next().expect("a path"),
            "{problem}"
        );
        assert_eq!(
            problem["status"], status,
            "the processor's problem: {problem}"
        );
    }
    // An answer that is no problem keeps its own type.
    let response = stack
        .client
        .get(stack.url("/api/v1/dead-letters"))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    stack.stop().await;
}
