//! Traces as an operator's collector gets them: the services export over OTLP/HTTP (protobuf)
//! and OTLP/gRPC at once, each to a local collector, and in both one trace runs from the
//! gateway's HTTP request through the processor to the notifier's webhook attempt. (Its own
//! test binary: the tracer provider is the process's.)

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
};

use axum::{body::Bytes, extract::State, http::StatusCode};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    trace::v1::span::SpanKind,
};
use opentelemetry_sdk::trace::SdkTracerProvider;
use prost::Message;
use shared::trace::{Exporter, Protocol};
use stack::{Stack, WAIT};

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
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            keep(&spans, request);
            StatusCode::OK
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

/// The OTLP/gRPC collector: keeps the spans of each export call.
struct GrpcCollector(Spans);

#[tonic::async_trait]
impl TraceService for GrpcCollector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        keep(&self.0, request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Keeps the spans of an export request.
fn keep(spans: &Spans, request: ExportTraceServiceRequest) {
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
}

/// The spans of the trace `trace_id` that `spans` holds.
fn of_trace(spans: &Spans, trace_id: &str) -> Vec<Received> {
    spans
        .lock()
        .expect("not poisoned")
        .iter()
        .filter(|s| s.trace_id == trace_id)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_trace_reaches_otlp_http_and_grpc_collectors_from_the_request_to_the_webhook() {
    let (http_spans, grpc_spans): (Spans, Spans) = (Arc::default(), Arc::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let http_collector = listener.local_addr().expect("bound");
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(collect))
        .with_state(Arc::clone(&http_spans));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let incoming =
        tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().expect("an address"))
            .expect("a free port");
    let grpc_collector = incoming.local_addr().expect("bound");
    let service = TraceServiceServer::new(GrpcCollector(Arc::clone(&grpc_spans)));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming),
    );
    // Every span goes to both, each by the exporter the services build from
    // OTEL_EXPORTER_OTLP_PROTOCOL.
    let http = Exporter::new(
        Protocol::HttpProtobuf,
        Some(&format!("http://{http_collector}/v1/traces")),
    )
    .expect("an OTLP/HTTP exporter");
    let grpc = Exporter::new(Protocol::Grpc, Some(&format!("http://{grpc_collector}")))
        .expect("an OTLP/gRPC exporter");
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(http)
        .with_batch_exporter(grpc)
        .build();
    shared::trace::install(provider.clone());

    let stack = Stack::start(None).await;
    let (receiver, _) = stack.subscriber(&["product.updated"]).await;
    let client_trace = "6cf92f3577b34da6a3ce929d0e0e4736";
    let response = stack
        .post_json("/api/v1/events")
        .header("traceparent", stack::traceparent(client_trace))
        .body(r#"{"product_id": "otlp-1", "price": 5}"#)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 202);
    receiver.wait_for(1, WAIT).await;

    // Everything ended so far goes out now; the webhook attempt's span may end just after the
    // receiver answered, so flush until it has arrived.
    let ns = stack.backends.namespace.as_str().to_owned();
    let traces: Vec<Vec<Received>> =
        testkit::wait::eventually("the webhook attempt's span", WAIT, || {
            let (provider, http_spans, grpc_spans) = (
                provider.clone(),
                Arc::clone(&http_spans),
                Arc::clone(&grpc_spans),
            );
            async move {
                tokio::task::spawn_blocking(move || provider.force_flush())
                    .await
                    .ok()?
                    .ok()?;
                let traces = [&http_spans, &grpc_spans].map(|spans| of_trace(spans, client_trace));
                traces
                    .iter()
                    .all(|trace| trace.iter().any(|s| s.kind == SpanKind::Client as i32))
                    .then(|| traces.to_vec())
            }
        })
        .await;
    for trace in traces {
        check(&trace, &ns);
    }
    stack.stop().await;
    let _ = provider.shutdown();
}

/// One trace holds the gateway's request, the processor's publish and process, the notifier's
/// process and its webhook attempt.
fn check(trace: &[Received], ns: &str) {
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
}
