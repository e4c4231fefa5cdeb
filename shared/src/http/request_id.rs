//! Every request's id: the client's `X-Request-Id` when it sends a usable one (1-128 visible
//! ASCII characters), else a new UUIDv7. It is answered in the `Request-Id` header of every
//! response, carried by every log line written while the request is handled (a `request` span
//! with `request_id`, and `trace_id` and `span_id` when tracing), and put in every error body
//! ([`crate::api::Problem`]).

use std::sync::Arc;

use axum::{
    extract::Request,
    http::{HeaderName, HeaderValue},
    middleware::Next,
    response::Response,
};
use tracing::Instrument;

/// The response header naming the request's id.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("request-id");

/// The request header a client names its own id in.
pub const CLIENT_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What an error body says of the request it answers.
#[derive(Clone, Debug)]
pub struct RequestContext {
    /// The request's id.
    pub id: Arc<str>,
    /// Its path (without the query, which may hold what should not be echoed).
    pub path: Arc<str>,
}

tokio::task_local! {
    static CURRENT: RequestContext;
}

/// The request being handled by this task, if any.
pub fn current() -> Option<RequestContext> {
    CURRENT.try_with(Clone::clone).ok()
}

/// The id a request is known by: the client's, if usable, else a new one.
fn id_of(request: &Request) -> Arc<str> {
    request
        .headers()
        .get(&CLIENT_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| (1..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(
            || uuid::Uuid::now_v7().simple().to_string().into(),
            Arc::from,
        )
}

/// Middleware: names the request, handles it in its context and span, and answers its id.
pub async fn assign(request: Request, next: Next) -> Response {
    let context = RequestContext {
        id: id_of(&request),
        path: request.uri().path().into(),
    };
    // The trace and span ids are recorded once the request's server span exists
    // (`ops::track_requests`), so every log line of the request can be found in its trace.
    let span = tracing::info_span!(
        "request",
        request_id = %context.id,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    let id = HeaderValue::from_str(&context.id).ok();
    let mut response = CURRENT
        .scope(context, next.run(request).instrument(span))
        .await;
    if let Some(id) = id {
        response.headers_mut().insert(REQUEST_ID, id);
    }
    response
}
