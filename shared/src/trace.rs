//! Traces: OpenTelemetry spans from the HTTP request through the publish, the queue, the
//! processing, the downstream event and each webhook delivery, joined into one trace by W3C
//! `traceparent`, carried in AMQP message headers (and in the notifier's table between taking
//! an event in and delivering it).
//!
//! Spans follow the OpenTelemetry messaging conventions for RabbitMQ (attribute names from
//! `opentelemetry-semantic-conventions`): `publish {exchange}:{routing key}` (producer,
//! operation type `send`) and `process {exchange}:{routing key}:{queue}` (consumer; empty parts
//! left out, and the queue when it equals the routing key), the same as
//! `messaging.destination.name`, with `messaging.system`, `messaging.operation.*`,
//! `messaging.rabbitmq.destination.routing_key`, `messaging.message.id`, and the event id as
//! `pipeline.event_id` on every span. Every HTTP request has a server span
//! (`{method} {route}`), which the handler's spans continue.
//!
//! Exported over OTLP/HTTP (protobuf) or OTLP/gRPC, as `OTEL_EXPORTER_OTLP_PROTOCOL` says. Off
//! unless `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set:
//! then nothing is created, injected or extracted, and the cost is one atomic load per call.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicBool, Ordering},
};

use lapin::{
    BasicProperties,
    types::{AMQPValue, FieldTable},
};
use opentelemetry::{
    Context, KeyValue, global,
    propagation::{Extractor, Injector},
    trace::{SpanKind, Status, TraceContextExt, Tracer as _},
};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use opentelemetry_semantic_conventions::attribute as semconv;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// The W3C header, in AMQP headers and HTTP requests alike.
pub const TRACEPARENT: &str = "traceparent";

/// The W3C header carrying vendors' trace state beside `traceparent`.
pub const TRACESTATE: &str = "tracestate";

/// Starts exporting spans over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` or
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, by the [`Protocol`] the environment names; the
/// provider to shut down at exit, or `None` (tracing off).
pub fn init(service: &'static str) -> anyhow::Result<Option<SdkTracerProvider>> {
    if first_set(&ENDPOINT).is_none() {
        return Ok(None);
    }
    let exporter = Exporter::new(Protocol::from_env()?, None)?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource(service))
        .build();
    install(provider.clone());
    Ok(Some(provider))
}

/// Where spans go, the traces' own variable first.
const ENDPOINT: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// The first of `names` set to something, with its value.
fn first_set(names: &[&'static str]) -> Option<(&'static str, String)> {
    names.iter().find_map(|&name| {
        let value = std::env::var(name).ok()?;
        (!value.trim().is_empty()).then_some((name, value))
    })
}

/// How spans travel to the collector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/HTTP with protobuf bodies (`http/protobuf`, the default; port 4318).
    HttpProtobuf,
    /// OTLP/gRPC (`grpc`; port 4317).
    Grpc,
}

impl Protocol {
    /// `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, else `OTEL_EXPORTER_OTLP_PROTOCOL`, else
    /// `http/protobuf`; an error naming the variable for any other value.
    pub fn from_env() -> anyhow::Result<Self> {
        let named = first_set(&[
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ]);
        match named {
            None => Ok(Self::HttpProtobuf),
            Some((name, value)) => Self::parse(value.trim()).ok_or_else(|| {
                anyhow::anyhow!("{name}={value} is not supported: use grpc or http/protobuf")
            }),
        }
    }

    /// The protocol the OpenTelemetry variables call `value`.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "http/protobuf" => Some(Self::HttpProtobuf),
            "grpc" => Some(Self::Grpc),
            _ => None,
        }
    }
}

/// The OTLP span exporter. The gRPC client needs a Tokio reactor in every call, and the batch
/// processor exports from a thread of its own that has none, so a gRPC exporter carries a
/// one-thread runtime and runs each export in its context (the HTTP client is blocking and
/// needs none).
#[derive(Debug)]
pub struct Exporter {
    inner: opentelemetry_otlp::SpanExporter,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Exporter {
    /// An exporter by `protocol`, to `endpoint` when given, else where the
    /// `OTEL_EXPORTER_OTLP_*` variables say (headers and timeout too).
    pub fn new(protocol: Protocol, endpoint: Option<&str>) -> anyhow::Result<Self> {
        use opentelemetry_otlp::WithExportConfig;
        Ok(match protocol {
            Protocol::HttpProtobuf => {
                let mut builder = opentelemetry_otlp::SpanExporter::builder().with_http();
                if let Some(endpoint) = endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                Self {
                    inner: builder.build()?,
                    runtime: None,
                }
            }
            Protocol::Grpc => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("otlp-grpc")
                    .enable_all()
                    .build()?;
                let built = {
                    use opentelemetry_otlp::{
                        WithTonicConfig, tonic_types::transport::ClientTlsConfig,
                    };
                    let _context = runtime.enter();
                    let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic();
                    if let Some(endpoint) = endpoint {
                        builder = builder.with_endpoint(endpoint);
                    }
                    // tonic trusts no root unless told: an https collector is checked against
                    // the system's roots (SSL_CERT_FILE's when set).
                    let secure = endpoint
                        .map(str::to_owned)
                        .or_else(|| first_set(&ENDPOINT).map(|(_, url)| url));
                    if secure.is_some_and(|url| url.trim().starts_with("https://")) {
                        builder =
                            builder.with_tls_config(ClientTlsConfig::new().with_native_roots());
                    }
                    builder.build()
                };
                match built {
                    Ok(inner) => Self {
                        inner,
                        runtime: Some(runtime),
                    },
                    Err(error) => {
                        runtime.shutdown_background();
                        return Err(error.into());
                    }
                }
            }
        })
    }
}

impl Drop for Exporter {
    /// Stops the runtime without waiting (a runtime may not block a thread of another).
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl opentelemetry_sdk::trace::SpanExporter for Exporter {
    fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> impl Future<Output = opentelemetry_sdk::error::OTelSdkResult> + Send {
        let context = self.runtime.as_ref().map(|r| r.handle().clone());
        let mut export = Box::pin(self.inner.export(batch));
        std::future::poll_fn(move |cx| {
            let _entered = context.as_ref().map(tokio::runtime::Handle::enter);
            export.as_mut().poll(cx)
        })
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Who exports: `service.name` (the binary's, unless `OTEL_SERVICE_NAME` says otherwise),
/// `service.version`, `service.namespace` (`product-event-pipeline`), `service.instance.id`
/// (`{host}/{pid}`), the SDK's own attributes, and whatever `OTEL_RESOURCE_ATTRIBUTES` sets,
/// which wins over all but `OTEL_SERVICE_NAME`.
pub fn resource(service: &'static str) -> Resource {
    use opentelemetry_sdk::resource::{EnvResourceDetector, TelemetryResourceDetector};
    let instance = crate::connect::amqp::connection_name(service);
    let ours = [
        KeyValue::new(semconv::SERVICE_NAME, service),
        KeyValue::new(semconv::SERVICE_VERSION, env!("CARGO_PKG_VERSION")),
        KeyValue::new(semconv::SERVICE_NAMESPACE, "product-event-pipeline"),
        KeyValue::new(
            semconv::SERVICE_INSTANCE_ID,
            instance
                .split_once('@')
                .map_or(instance.as_str(), |(_, at)| at)
                .to_owned(),
        ),
    ];
    let builder = Resource::builder_empty()
        .with_attributes(ours)
        .with_detector(Box::new(TelemetryResourceDetector))
        .with_detector(Box::new(EnvResourceDetector::new()));
    match std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|n| !n.trim().is_empty())
    {
        Some(name) => builder.with_service_name(name).build(),
        None => builder.build(),
    }
}

/// Makes `provider` the process's tracer provider, with the W3C propagator, and turns
/// tracing on (tests install one with an in-memory exporter).
pub fn install(provider: SdkTracerProvider) {
    global::set_text_map_propagator(TraceContextPropagator::new());
    global::set_tracer_provider(provider);
    ENABLED.store(true, Ordering::Release);
}

/// True when spans are recorded.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Acquire)
}

/// What a messaging span is about.
pub struct Messaging<'a> {
    /// `send` (publish) or `process` (consume).
    pub operation: Operation,
    /// The exchange published to or delivered from (`""`: the default exchange).
    pub exchange: &'a str,
    /// The routing key.
    pub routing_key: &'a str,
    /// The queue consumed from (`None` when publishing).
    pub queue: Option<&'a str>,
    /// The message id (the event id, or a downstream event's id).
    pub message_id: &'a str,
    /// The pipeline event the message is about.
    pub event_id: &'a str,
}

/// The two messaging operations the pipeline traces.
#[derive(Clone, Copy, Debug)]
pub enum Operation {
    /// Publishing a message.
    Send,
    /// Handling a delivered message.
    Process,
}

/// A span that ends when dropped; `context()` is where children attach.
pub struct Traced(Context);

impl Traced {
    /// The context carrying this span.
    pub fn context(&self) -> &Context {
        &self.0
    }

    /// Marks the span failed.
    pub fn fail(&self, why: impl std::fmt::Display) {
        self.0.span().set_status(Status::error(why.to_string()));
    }

    /// Records an attribute.
    pub fn set(&self, attribute: KeyValue) {
        self.0.span().set_attribute(attribute);
    }

    /// The trace id, for log lines (`None` when tracing is off).
    pub fn trace_id(&self) -> Option<String> {
        let span = self.0.span();
        let context = span.span_context();
        context.is_valid().then(|| context.trace_id().to_string())
    }

    /// The span's id (hexadecimal), when tracing is on.
    pub fn span_id(&self) -> Option<String> {
        let span = self.0.span();
        let context = span.span_context();
        context.is_valid().then(|| context.span_id().to_string())
    }

    /// A `tracing` span, `message`, with this span's `trace_id` and `span_id` (none when
    /// tracing is off), to instrument a message's handling with: every log line written inside
    /// it can be found in the trace, as a request's lines can (`http::request_id`).
    pub fn log_span(&self) -> tracing::Span {
        tracing::info_span!(
            "message",
            trace_id = self.trace_id().as_deref(),
            span_id = self.span_id().as_deref()
        )
    }

    /// The W3C headers of this span: `traceparent`, and `tracestate` when the trace has one
    /// (empty when off).
    pub fn carrier(&self) -> HashMap<String, String> {
        let mut carrier = HashMap::new();
        if enabled() {
            global::get_text_map_propagator(|p| p.inject_context(&self.0, &mut carrier));
        }
        carrier
    }

    /// Records an HTTP server span's answer: its status code, and an error from 500 on.
    pub fn answered(&self, status: u16) {
        if !enabled() {
            return;
        }
        self.set(KeyValue::new(
            semconv::HTTP_RESPONSE_STATUS_CODE,
            i64::from(status),
        ));
        if status >= 500 {
            self.set(KeyValue::new(semconv::ERROR_TYPE, status.to_string()));
            self.fail(status);
        }
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        self.0.span().end();
    }
}

/// Starts a messaging span under `parent` (from [`extract`], [`from_stored`] or another
/// span's context).
pub fn messaging(service: &'static str, about: &Messaging<'_>, parent: &Context) -> Traced {
    if !enabled() {
        return Traced(Context::new());
    }
    let (verb, kind, operation_type) = match about.operation {
        Operation::Send => ("publish", SpanKind::Producer, "send"),
        Operation::Process => ("process", SpanKind::Consumer, "process"),
    };
    let name = destination(about.exchange, about.routing_key, about.queue);
    let tracer = global::tracer(service);
    let span = tracer
        .span_builder(format!("{verb} {name}"))
        .with_kind(kind)
        .with_attributes([
            KeyValue::new(semconv::MESSAGING_SYSTEM, "rabbitmq"),
            KeyValue::new(semconv::MESSAGING_OPERATION_NAME, verb),
            KeyValue::new(semconv::MESSAGING_OPERATION_TYPE, operation_type),
            KeyValue::new(semconv::MESSAGING_DESTINATION_NAME, name),
            KeyValue::new(
                semconv::MESSAGING_RABBITMQ_DESTINATION_ROUTING_KEY,
                about.routing_key.to_owned(),
            ),
            KeyValue::new(semconv::MESSAGING_MESSAGE_ID, about.message_id.to_owned()),
            KeyValue::new("pipeline.event_id", about.event_id.to_owned()),
        ])
        .start_with_context(&tracer, parent);
    Traced(parent.with_span(span))
}

/// Starts the HTTP server span of `request` (`{method} {route}`, the HTTP semantic conventions'
/// attributes) under the context its `traceparent` and `tracestate` carry, and puts the span's
/// own headers on the request, so the handler's spans (which read the headers) continue it.
pub fn server(
    service: &'static str,
    request: &mut axum::extract::Request,
    route: Option<&str>,
) -> Traced {
    if !enabled() {
        return Traced(Context::new());
    }
    let parent = from_http(request.headers());
    let method = crate::http::known_method(request.method());
    let mut attributes = vec![
        KeyValue::new(semconv::HTTP_REQUEST_METHOD, method),
        KeyValue::new(semconv::URL_PATH, request.uri().path().to_owned()),
        KeyValue::new(semconv::URL_SCHEME, "http"),
        KeyValue::new(
            semconv::NETWORK_PROTOCOL_VERSION,
            match request.version() {
                axum::http::Version::HTTP_2 => "2",
                axum::http::Version::HTTP_10 => "1.0",
                _ => "1.1",
            },
        ),
    ];
    if method == "_OTHER" {
        // The conventions keep the original beside it, on the span only (bounded by the head
        // size limit), never in a name or a metric.
        attributes.push(KeyValue::new(
            semconv::HTTP_REQUEST_METHOD_ORIGINAL,
            request.method().as_str().to_owned(),
        ));
    }
    if let Some(route) = route {
        attributes.push(KeyValue::new(semconv::HTTP_ROUTE, route.to_owned()));
    }
    if let Some(agent) = request
        .headers()
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        attributes.push(KeyValue::new(
            semconv::USER_AGENT_ORIGINAL,
            agent.to_owned(),
        ));
    }
    let tracer = global::tracer(service);
    let span = tracer
        .span_builder(match (method, route) {
            ("_OTHER", _) | (_, None) => method.replace("_OTHER", "HTTP"),
            (method, Some(route)) => format!("{method} {route}"),
        })
        .with_kind(SpanKind::Server)
        .with_attributes(attributes)
        .start_with_context(&tracer, &parent);
    let traced = Traced(parent.with_span(span));
    for (name, value) in traced.carrier() {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::try_from(name),
            axum::http::HeaderValue::try_from(value),
        ) {
            request.headers_mut().insert(name, value);
        }
    }
    traced
}

/// `messaging.destination.name` as the RabbitMQ conventions put it: `{exchange}:{routing key}`
/// for a producer, `{exchange}:{routing key}:{queue}` for a consumer, leaving out what is empty
/// (the default exchange) and the queue when it equals the routing key; `amq.default` when
/// nothing is left.
fn destination(exchange: &str, routing_key: &str, queue: Option<&str>) -> String {
    let queue = queue.filter(|q| *q != routing_key);
    let parts: Vec<&str> = [Some(exchange), Some(routing_key), queue]
        .into_iter()
        .flatten()
        .filter(|part| !part.is_empty())
        .collect();
    if parts.is_empty() {
        "amq.default".to_owned()
    } else {
        parts.join(":")
    }
}

/// Starts a client span (a webhook delivery) under `parent`.
pub fn client(
    service: &'static str,
    name: &'static str,
    attributes: Vec<KeyValue>,
    parent: &Context,
) -> Traced {
    if !enabled() {
        return Traced(Context::new());
    }
    let tracer = global::tracer(service);
    let span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Client)
        .with_attributes(attributes)
        .start_with_context(&tracer, parent);
    Traced(parent.with_span(span))
}

/// `properties` with `context`'s `traceparent` added to its headers.
pub fn inject(context: &Context, properties: BasicProperties) -> BasicProperties {
    if !enabled() {
        return properties;
    }
    let mut headers = properties.headers().clone().unwrap_or_default();
    global::get_text_map_propagator(|p| p.inject_context(context, &mut AmqpHeaders(&mut headers)));
    properties.with_headers(headers)
}

/// The context a message's headers carry (empty when none, or tracing is off).
pub fn extract(properties: &BasicProperties) -> Context {
    match properties.headers() {
        Some(headers) if enabled() => global::get_text_map_propagator(|p| {
            p.extract_with_context(&Context::new(), &ReadAmqpHeaders(headers))
        }),
        _ => Context::new(),
    }
}

/// The context of a stored `traceparent` and `tracestate` (empty when none, or tracing is
/// off).
pub fn from_stored(traceparent: Option<&str>, tracestate: Option<&str>) -> Context {
    if !enabled() || traceparent.is_none() {
        return Context::new();
    }
    let carrier: HashMap<String, String> = [(TRACEPARENT, traceparent), (TRACESTATE, tracestate)]
        .into_iter()
        .filter_map(|(name, value)| Some((name.to_owned(), value?.to_owned())))
        .collect();
    global::get_text_map_propagator(|p| p.extract_with_context(&Context::new(), &carrier))
}

/// The context of an HTTP request's `traceparent` and `tracestate` headers (empty when none,
/// or tracing is off).
pub fn from_http(headers: &axum::http::HeaderMap) -> Context {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    from_stored(header(TRACEPARENT), header(TRACESTATE))
}

struct AmqpHeaders<'a>(&'a mut FieldTable);

impl Injector for AmqpHeaders<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0
            .insert(key.into(), AMQPValue::LongString(value.into()));
    }
}

struct ReadAmqpHeaders<'a>(&'a FieldTable);

impl Extractor for ReadAmqpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match self.0.inner().get(key)? {
            AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
            AMQPValue::ShortString(s) => Some(s.as_str()),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0.inner().keys().map(|k| k.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{Protocol, destination};

    #[test]
    fn the_protocols_are_named_as_the_opentelemetry_variables_name_them() {
        assert_eq!(Protocol::parse("grpc"), Some(Protocol::Grpc));
        assert_eq!(
            Protocol::parse("http/protobuf"),
            Some(Protocol::HttpProtobuf)
        );
        assert_eq!(Protocol::parse("http/json"), None, "not built in");
        assert_eq!(Protocol::parse("GRPC"), None);
    }

    #[test]
    fn destinations_are_named_as_the_rabbitmq_conventions_say() {
        // Producers: exchange and routing key; the default exchange left out.
        assert_eq!(destination("ns.ingest", "3", None), "ns.ingest:3");
        assert_eq!(destination("", "ns.images", None), "ns.images");
        assert_eq!(destination("", "", None), "amq.default");
        // Consumers: the queue too, unless it is the routing key.
        assert_eq!(
            destination("ns.events", "stock.low", Some("ns.notifier")),
            "ns.events:stock.low:ns.notifier"
        );
        assert_eq!(destination("", "ns.images", Some("ns.images")), "ns.images");
    }
}
