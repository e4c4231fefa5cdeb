//! What the notifier logs: a first start says nothing an operator must look at, and the lines
//! written while a message is taken in carry its trace.

use std::sync::{Arc, Mutex, OnceLock};

use lapin::{
    BasicProperties,
    types::{AMQPValue, FieldTable},
};
use opentelemetry::trace::SpanKind;
use serde_json::Value;

use crate::helpers::{WAIT, spawn_notifier};

/// The notifier's log lines (to debug, and the shared crate's spans) of every test in this process from the first call on,
/// as JSON.
fn captured() -> Arc<Mutex<Vec<u8>>> {
    static LINES: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LINES
        .get_or_init(|| {
            use tracing_subscriber::prelude::*;
            let lines = Arc::new(Mutex::new(Vec::new()));
            let writer = Captured(Arc::clone(&lines));
            tracing_subscriber::registry()
                .with(tracing_subscriber::EnvFilter::new(
                    "notifier=debug,shared=info",
                ))
                .with(
                    tracing_subscriber::fmt::layer()
                        .json()
                        .with_writer(move || writer.clone()),
                )
                .init();
            lines
        })
        .clone()
}

#[derive(Clone)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .expect("not poisoned")
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_line_logged_while_a_message_is_taken_in_carries_its_trace_and_span_ids() {
    testkit::spans::exporter();
    let lines = captured();
    let notifier = spawn_notifier(5).await;
    let _receiver = notifier.receiver_for(&["stock.low"]).await;
    let trace = "5af7183fc1c2e1b9a1e3c0f6d2b4a817";
    let id = format!("msg_logged_{}", notifier.backends.namespace.as_str());
    let body = r#"{"type":"stock.low","timestamp":"2026-01-01T00:00:00Z","data":{"source_event_id":"src","product_id":"s-1","stock":3,"threshold":10}}"#;
    let mut headers = FieldTable::default();
    headers.insert(
        "traceparent".into(),
        AMQPValue::LongString(format!("00-{trace}-b7ad6b7169203331-01").into()),
    );
    notifier
        .broker
        .publish(
            &notifier.topology.events_exchange(),
            "stock.low",
            body.as_bytes(),
            BasicProperties::default()
                .with_content_type("application/json".into())
                .with_message_id(id.as_str().into())
                .with_headers(headers),
        )
        .await;
    let line = testkit::wait::eventually("the intake's line about the event", WAIT, || async {
        let text = String::from_utf8_lossy(&lines.lock().expect("not poisoned")).into_owned();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["fields"]["event_id"] == id.as_str())
    })
    .await;
    assert_eq!(
        line["fields"]["message"], "Downstream event taken in.",
        "{line}"
    );
    assert_eq!(line["span"]["trace_id"], trace, "{line}");
    // The span id is the notifier's process span's, the message's own.
    let spans = testkit::spans::of_trace(trace, SpanKind::Consumer, WAIT).await;
    let process = spans
        .iter()
        .find(|s| s.span_kind == SpanKind::Consumer)
        .expect("the process span");
    assert_eq!(
        line["span"]["span_id"],
        process.span_context.span_id().to_string(),
        "{line}"
    );
    notifier.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_first_start_on_an_empty_namespace_logs_no_warning_or_error() {
    // `/ready` is open: no key is made, so the notifier itself finds the namespace empty.
    testkit::services::first_start_is_quiet(
        "notifier",
        env!("CARGO_BIN_EXE_notifier"),
        "NOTIFIER_ADDR",
        &[],
        async |_| reqwest::Client::new(),
        WAIT,
    )
    .await;
}
