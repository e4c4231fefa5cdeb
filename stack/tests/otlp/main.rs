//! Traces as an operator's collector gets them: the services export over OTLP/HTTP (protobuf)
//! to a local receiver, and one trace runs from the gateway's HTTP request through the
//! processor to the notifier's webhook attempt. (Its own test binary: the tracer provider is
//! the process's.)

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
};

use axum::{body::Bytes, extract::State, http::StatusCode};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest, trace::v1::span::SpanKind,
};
use opentelemetry_sdk::trace::SdkTracerProvider;
use prost::Message;
use stack::{Stack, WAIT};
use testkit::webhooks::Receiver;

/// One span as received: its service (instrumentation scope), name, kind and trace id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Received {
    scope: String,
    name: String,
    kind: i32,
    trace_id: String,
}

type Spans = Arc<Mutex<Vec<Received>>>;

/// Takes an OTLP/HTTP export request and keeps its spans.
async fn collect(State(spans): State<Spans>, body: Bytes) -> StatusCode {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut kept = spans.lock().expect("not poisoned");
    for resource in request.resource_spans {
        for scope in resource.scope_spans {
            let name = scope.scope.map(|s| s.name).unwrap_or_default();
            for span in scope.spans {
                kept.push(Received {
                    scope: name.clone(),
                    name: span.name,
                    kind: span.kind,
                    trace_id: span.trace_id.iter().map(|b| format!("{b:02x}")).collect(),
                });
            }
        }
    }
    StatusCode::OK
}

#[tokio::test(flavor = "multi_thread")]
async fn one_trace_reaches_an_otlp_http_collector_from_the_request_to_the_webhook() {
    let spans: Spans = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let collector = listener.local_addr().expect("bound");
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(collect))
        .with_state(Arc::clone(&spans));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("http://{collector}/v1/traces"))
        .build()
        .expect("an OTLP/HTTP exporter");
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .build();
    shared::trace::install(provider.clone());

    let stack = Stack::start(None).await;
    let receiver = Receiver::start(&[]).await;
    receiver
        .subscribe(
            &stack.client,
            &format!("http://{}", stack.notifier),
            &["product.updated"],
        )
        .await;
    let client_trace = "6cf92f3577b34da6a3ce929d0e0e4736";
    let response = stack
        .client
        .post(format!("http://{}/api/v1/events", stack.gateway))
        .header("content-type", "application/json")
        .header(
            "traceparent",
            format!("00-{client_trace}-00f067aa0ba902b7-01"),
        )
        .body(r#"{"product_id": "otlp-1", "price": 5}"#)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 202);
    receiver.wait_for(1, WAIT).await;

    // Everything ended so far goes out now; the webhook attempt's span may end just after the
    // receiver answered, so flush until it has arrived.
    let ns = stack.backends.namespace.as_str().to_owned();
    let trace: Vec<Received> = testkit::eventually("the webhook attempt's span", WAIT, || {
        let (provider, spans) = (provider.clone(), Arc::clone(&spans));
        async move {
            tokio::task::spawn_blocking(move || provider.force_flush())
                .await
                .ok()?
                .ok()?;
            let trace: Vec<Received> = spans
                .lock()
                .expect("not poisoned")
                .iter()
                .filter(|s| s.trace_id == client_trace)
                .cloned()
                .collect();
            trace
                .iter()
                .any(|s| s.kind == SpanKind::Client as i32)
                .then_some(trace)
        }
    })
    .await;
    let seen: BTreeSet<(String, String)> = trace
        .iter()
        .map(|s| (s.scope.clone(), s.name.clone()))
        .collect();
    for (scope, name) in [
        ("gateway", "POST /api/v1/events".to_owned()),
        ("processor", format!("publish {ns}.events:product.updated")),
        (
            "notifier",
            format!("process {ns}.events:product.updated:{ns}.notifier"),
        ),
        ("notifier", "POST".to_owned()),
    ] {
        assert!(
            seen.contains(&(scope.to_owned(), name.clone())),
            "{scope} {name} in {seen:?}"
        );
    }
    assert!(
        seen.iter()
            .any(|(scope, name)| scope == "processor" && name.starts_with("process ")),
        "{seen:?}"
    );
    stack.stop().await;
    let _ = provider.shutdown();
}
