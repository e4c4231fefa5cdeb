//! Spans kept in memory: a tracer provider installed for the whole test process, and the
//! finished spans of one trace.

use std::{sync::OnceLock, time::Duration};

use opentelemetry::trace::{SpanKind, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};

/// The process's in-memory exporter, installed (as the tracer provider, turning tracing on) the
/// first time it is asked for.
pub fn exporter() -> InMemorySpanExporter {
    static EXPORTER: OnceLock<InMemorySpanExporter> = OnceLock::new();
    EXPORTER
        .get_or_init(|| {
            let exporter = InMemorySpanExporter::default();
            shared::trace::install(
                SdkTracerProvider::builder()
                    .with_simple_exporter(exporter.clone())
                    .build(),
            );
            exporter
        })
        .clone()
}

/// The finished spans of trace `trace` (hexadecimal), once one of them is of `kind`.
pub async fn of_trace(trace: &str, kind: SpanKind, wait: Duration) -> Vec<SpanData> {
    let trace = TraceId::from_hex(trace).expect("a hexadecimal trace id");
    let exporter = exporter();
    crate::wait::eventually(
        &format!("a {kind:?} span of trace {trace}"),
        wait,
        || async {
            let spans: Vec<SpanData> = exporter
                .get_finished_spans()
                .ok()?
                .into_iter()
                .filter(|s| s.span_context.trace_id() == trace)
                .collect();
            spans.iter().any(|s| s.span_kind == kind).then_some(spans)
        },
    )
    .await
}
