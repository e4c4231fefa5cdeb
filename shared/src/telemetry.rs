//! Logs (pretty on a terminal, JSON with `LOG_FORMAT=json`), the process-wide Prometheus
//! metrics recorder, and trace export ([`crate::trace`]).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::{Event, Subscriber};
use tracing_subscriber::{
    EnvFilter, Layer, fmt,
    fmt::{
        FmtContext, FormatEvent, FormatFields, MakeWriter,
        format::{Format, Json, Writer},
    },
    prelude::*,
    registry::LookupSpan,
};

/// Latency buckets (seconds) for a `_seconds` histogram of work done in a request or a batch
/// (HTTP requests, publish confirms, processor stages): 0.5 ms to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// From the gateway's receipt to applied, which takes the retry ladder's minutes for an event
/// that was retried: 1 ms to 10 minutes.
pub const END_TO_END_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

/// A webhook attempt, bounded by `WEBHOOK_TIMEOUT_MS` (15 s): 5 ms to 30 s.
pub const WEBHOOK_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0,
];

/// Making an image's variants (fetch, decode, encode, store): 10 ms to 2 minutes.
pub const IMAGE_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// What must outlive the service: the trace exporter, flushed and shut down when dropped.
pub struct Telemetry {
    traces: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.traces.take()
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "Spans could not all be exported at shutdown.");
        }
    }
}

/// Installs the log subscriber (filter from `RUST_LOG`, default `info,sqlx=warn`), the metrics
/// recorder, and the trace exporter when `OTEL_EXPORTER_OTLP_ENDPOINT` is set; keep the result
/// until the service stops. An invalid OTLP setting is an error.
pub fn init(service: &'static str) -> anyhow::Result<Telemetry> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let registry = tracing_subscriber::registry().with(filter);
    let installed = if json {
        registry
            .with(json_layer(service, std::io::stdout))
            .try_init()
    } else {
        registry.with(fmt::layer()).try_init()
    };
    metrics();
    let traces = crate::trace::init(service)?;
    if installed.is_ok() {
        tracing::info!(
            traces = traces.is_some(),
            "Telemetry ready for the {service}."
        );
    }
    Ok(Telemetry { traces })
}

/// The process's own metrics (CPU seconds, resident memory, open file descriptors, threads),
/// read at each scrape.
pub fn process() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(|| {
        let collector = metrics_process::Collector::default();
        collector.describe();
        collector
    })
}

/// The process's metrics recorder, installed on first use.
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        // A full name's buckets win over the suffix's (the exporter tries full names first).
        let buckets = [
            (Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS),
            (
                Matcher::Full(crate::metric::END_TO_END_DURATION_SECONDS.into()),
                END_TO_END_BUCKETS,
            ),
            (
                Matcher::Full(crate::metric::WEBHOOK_DELIVERY_DURATION_SECONDS.into()),
                WEBHOOK_BUCKETS,
            ),
            (
                Matcher::Full(crate::metric::IMAGE_PROCESSING_DURATION_SECONDS.into()),
                IMAGE_BUCKETS,
            ),
        ];
        let handle = buckets
            .into_iter()
            .fold(PrometheusBuilder::new(), |builder, (matcher, buckets)| {
                builder
                    .set_buckets_for_metric(matcher, buckets)
                    .expect("no bucket list is empty")
            })
            .install_recorder()
            .expect("no other metrics recorder is installed in this process");
        crate::metric::describe();
        handle
    })
}

/// One JSON object per line, each naming the service first, then the level, the message, the
/// event's fields (`event_id`, `trace_id`, ...) and those of the spans it happened in.
fn json_layer<S, W>(service: &'static str, writer: W) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    fmt::layer()
        .json()
        .with_writer(writer)
        .event_format(WithService {
            service,
            inner: fmt::format().json().flatten_event(true),
        })
}

/// A JSON event format with `"service"` added to every line.
struct WithService {
    service: &'static str,
    inner: Format<Json>,
}

impl<S, N> FormatEvent<S, N> for WithService
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.inner
            .format_event(context, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(writer, "{{\"service\":\"{}\",{rest}", self.service),
            None => writer.write_str(&line),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::Write,
        sync::{Arc, Mutex},
    };

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("not poisoned").write(bytes)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_name_the_service_and_carry_the_event_fields() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber =
            tracing_subscriber::registry().with(json_layer("notifier", move || writer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                event_id = "e1",
                trace_id = "abc",
                "Webhook delivery attempted."
            );
        });
        let text =
            String::from_utf8(captured.0.lock().expect("not poisoned").clone()).expect("UTF-8");
        let line: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON line");
        assert_eq!(line["service"], "notifier");
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["event_id"], "e1");
        assert_eq!(line["trace_id"], "abc");
        assert_eq!(line["message"], "Webhook delivery attempted.");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn every_line_of_a_request_carries_its_request_id() {
        use tower::ServiceExt;
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber =
            tracing_subscriber::registry().with(json_layer("gateway", move || writer.clone()));
        let _guard = tracing::subscriber::set_default(subscriber);
        let router = axum::Router::new().route(
            "/work",
            axum::routing::get(|| async {
                tracing::info!("Handling it.");
                "done"
            }),
        );
        let response = axum::Router::new()
            .merge(router)
            .layer(axum::middleware::from_fn(crate::http::request_id::assign))
            .oneshot(
                axum::http::Request::get("/work")
                    .header("x-request-id", "req-7")
                    .body(axum::body::Body::empty())
                    .expect("a request"),
            )
            .await
            .expect("answered");
        assert_eq!(response.headers()["request-id"], "req-7");
        let text =
            String::from_utf8(captured.0.lock().expect("not poisoned").clone()).expect("UTF-8");
        let line: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON line");
        assert_eq!(line["message"], "Handling it.");
        assert_eq!(line["span"]["request_id"], "req-7", "{line}");
    }

    #[test]
    fn the_resource_names_the_service_its_version_namespace_and_instance() {
        let resource = crate::trace::resource("gateway");
        let get = |key: &'static str| {
            resource
                .get(&opentelemetry::Key::from_static_str(key))
                .map(|v| v.to_string())
        };
        // OTEL_SERVICE_NAME is not set in tests.
        assert_eq!(get("service.name").as_deref(), Some("gateway"));
        assert_eq!(
            get("service.version").as_deref(),
            Some(env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(
            get("service.namespace").as_deref(),
            Some("product-event-pipeline")
        );
        assert!(get("service.instance.id").is_some_and(|id| id.contains('/')));
        assert!(get("telemetry.sdk.name").is_some());
    }
}
