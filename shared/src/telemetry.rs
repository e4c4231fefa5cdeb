//! Logs (pretty on a terminal, JSON with `LOG_FORMAT=json`), the process-wide Prometheus
//! metrics recorder, and trace export ([`crate::trace`]).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Latency buckets (seconds) for every `_seconds` histogram: 0.5 ms to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
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
            .with(fmt::layer().json().flatten_event(true))
            .try_init()
    } else {
        registry.with(fmt::layer()).try_init()
    };
    metrics();
    let traces = crate::trace::init(service)?;
    if installed.is_ok() {
        tracing::info!(service, traces = traces.is_some(), "Telemetry ready.");
    }
    Ok(Telemetry { traces })
}

/// The process's metrics recorder, installed on first use.
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .expect("the bucket list is not empty")
            .install_recorder()
            .expect("no other metrics recorder is installed in this process")
    })
}
