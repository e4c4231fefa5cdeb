//! One trace per event across the services: the gateway's publish, the processor's process and
//! its downstream publish, the notifier's process and its webhook delivery share one trace id,
//! carried by `traceparent` in the AMQP headers (spans kept by an in-memory exporter).

use std::collections::BTreeSet;

use opentelemetry::trace::SpanKind;
use opentelemetry_sdk::trace::SpanData;
use stack::{KEY_NAME, Stack, WAIT};

use crate::helpers::downstream_of_update;

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn one_trace_id_spans_gateway_processor_and_notifier_for_one_event() {
    testkit::spans::exporter();
    let stack = Stack::start(None).await;
    let (receiver, _) = stack.subscriber(&["product.updated"]).await;

    // The client starts the trace; the gateway continues it.
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = stack
        .post_json("/events")
        .header("idempotency-key", "traced-evt")
        .header("traceparent", stack::traceparent(client_trace))
        .header("tracestate", "shop=checkout")
        .body(r#"{"product_id": "traced-1", "stock": 3}"#)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 202);
    let got = receiver.wait_for(1, WAIT).await;
    assert!(
        got[0].header("traceparent").contains(client_trace),
        "the webhook request carries the trace: {:?}",
        got[0].header("traceparent")
    );

    // Once the webhook attempt's span has ended.
    let spans = testkit::spans::of_trace(client_trace, SpanKind::Client, WAIT).await;
    let services: BTreeSet<String> = spans
        .iter()
        .map(|s| s.instrumentation_scope.name().to_owned())
        .collect();
    assert_eq!(
        services,
        BTreeSet::from(["gateway".into(), "notifier".into(), "processor".into()])
    );
    let ns = stack.backends.namespace.as_str().to_owned();
    let product: shared::model::ProductId = "traced-1".parse().expect("a product id");
    let shard = stack.topology.shard_for(&product);
    let names: BTreeSet<String> = spans.iter().map(|s| s.name.to_string()).collect();
    for expected in [
        format!("publish {ns}.ingest:{shard}"),
        format!("publish {ns}.events:product.updated"),
        format!("process {ns}.events:product.updated:{ns}.notifier"),
        "POST".to_owned(),
    ] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }
    assert!(
        names
            .iter()
            .any(|n| *n == format!("process {ns}.ingest:{shard}:{ns}.ingest.{shard}")),
        "{names:?}"
    );
    // The webhook attempt's span names the server it called.
    let client = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Client)
        .expect("a client span");
    assert_eq!(
        attribute(client, "server.address").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        attribute(client, "server.port"),
        Some(receiver.port().to_string())
    );
    assert_eq!(attribute(client, "url.full"), Some(receiver.url()));
    // The notifier's spans carry the downstream events' ids, the others the source's.
    let ids = [
        "traced-evt".to_owned(),
        downstream_of_update(KEY_NAME, "traced-evt", "product.updated"),
        downstream_of_update(KEY_NAME, "traced-evt", "stock.low"),
    ];
    // The gateway's HTTP server span is the client's child and the publish's parent.
    let server = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Server)
        .expect("the gateway's server span");
    assert_eq!(server.name, "POST /events");
    assert_eq!(server.instrumentation_scope.name(), "gateway");
    assert_eq!(attribute(server, "http.route").as_deref(), Some("/events"));
    assert_eq!(
        attribute(server, "http.response.status_code").as_deref(),
        Some("202")
    );
    assert_eq!(server.parent_span_id.to_string(), stack::CLIENT_SPAN);
    let publish = spans
        .iter()
        .find(|s| s.name == format!("publish {ns}.ingest:{shard}"))
        .expect("the gateway's publish");
    assert_eq!(publish.parent_span_id, server.span_context.span_id());
    // The client's trace state travels with the trace through the broker and the notifier's
    // table to the webhook request.
    assert_eq!(got[0].header("tracestate"), "shop=checkout");
    for span in &spans {
        assert_eq!(
            span.span_context.trace_state().header(),
            "shop=checkout",
            "{}",
            span.name
        );
    }
    for span in spans.iter().filter(|s| s.span_kind != SpanKind::Server) {
        assert!(
            attribute(span, "pipeline.event_id").is_some_and(|id| ids.contains(&id)),
            "{} carries the event id: {:?}",
            span.name,
            attribute(span, "pipeline.event_id")
        );
        if span.span_kind != SpanKind::Client {
            assert_eq!(
                attribute(span, "messaging.system").as_deref(),
                Some("rabbitmq")
            );
        }
    }
    stack.stop().await;
}
