//! Every request's id: the client's `X-Request-Id` when it sends a usable one (1-128 visible
//! ASCII characters), else the trace id of a W3C `traceparent` it sends (so the id names the
//! client's trace, whether or not this service exports spans), else a new UUIDv7. It is answered in the `Request-Id` header of every
//! response, carried by every log line written while the request is handled (a `request` span
//! with `request_id`, and `trace_id` and `span_id` when tracing), and put in every error body
//! ([`crate::api::Problem`]). What a layer learns of the request that every answer must say
//! (its key's rate) is put on the answer here too ([`answer_with`]), whichever layer answers: a
//! handler, a refusal, load shedding or a timeout.

use std::sync::{Arc, Mutex};

use axum::{
    extract::Request,
    http::{HeaderMap, HeaderName, HeaderValue},
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
    /// Headers every answer to it carries ([`answer_with`]).
    answer: Arc<Mutex<HeaderMap>>,
}

tokio::task_local! {
    static CURRENT: RequestContext;
}

/// The request being handled by this task, if any.
pub fn current() -> Option<RequestContext> {
    CURRENT.try_with(Clone::clone).ok()
}

/// Puts `headers` on the answer to the request this task handles, whichever layer makes the
/// answer (replacing those of the same names it has); nothing outside a request.
pub fn answer_with(headers: HeaderMap) {
    let _ = CURRENT.try_with(|request| {
        request
            .answer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(headers);
    });
}

/// The id a request is known by: the client's, if usable, else its trace's, else a new one.
fn id_of(request: &Request) -> Arc<str> {
    let header = |name: &HeaderName| request.headers().get(name).and_then(|v| v.to_str().ok());
    header(&CLIENT_REQUEST_ID)
        .filter(|v| (1..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(Arc::from)
        .or_else(|| {
            header(&TRACEPARENT_HEADER)
                .and_then(trace_id)
                .map(Arc::from)
        })
        .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string().into())
}

/// The `traceparent` request header (W3C Trace Context).
const TRACEPARENT_HEADER: HeaderName = HeaderName::from_static(crate::trace::TRACEPARENT);

/// The trace id of a W3C `traceparent` value (`{version}-{trace id}-{parent id}-{flags}`, each
/// lowercase hexadecimal), if it is a valid one: 32 digits, not all zero, under a known version
/// (`00`, or a later one, whose first four fields keep this shape).
fn trace_id(traceparent: &str) -> Option<&str> {
    let mut fields = traceparent.trim().split('-');
    let (version, trace, parent, flags) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    let hex = |field: &str, digits: usize| {
        field.len() == digits
            && field
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let known = hex(version, 2)
        && version != "ff"
        && (version != "00" || fields.next().is_none())
        && hex(parent, 16)
        && hex(flags, 2)
        && parent.bytes().any(|b| b != b'0');
    (known && hex(trace, 32) && trace.bytes().any(|b| b != b'0')).then_some(trace)
}

/// Middleware: names the request, handles it in its context and span, and answers its id.
pub async fn assign(request: Request, next: Next) -> Response {
    let context = RequestContext {
        id: id_of(&request),
        path: request.uri().path().into(),
        answer: Arc::default(),
    };
    let answer = Arc::clone(&context.answer);
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
    let answer = std::mem::take(
        &mut *answer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    response.headers_mut().extend(answer);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request {
        let mut request = axum::http::Request::get("/work");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(axum::body::Body::empty()).expect("a request")
    }

    const CLIENT_TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_request_with_a_traceparent_and_no_request_id_is_known_by_its_trace_id() {
        let id = id_of(&request(&[("traceparent", CLIENT_TRACE)]));
        assert_eq!(&*id, "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn the_clients_request_id_wins_over_its_trace() {
        let id = id_of(&request(&[
            ("traceparent", CLIENT_TRACE),
            ("x-request-id", "req-7"),
        ]));
        assert_eq!(&*id, "req-7");
    }

    #[test]
    fn without_either_or_with_an_invalid_traceparent_the_id_is_new() {
        for headers in [
            &[][..],
            &[(
                "traceparent",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            )],
            &[(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            )],
            &[(
                "traceparent",
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            )],
            &[(
                "traceparent",
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )],
            &[(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            )],
            &[(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            )],
            &[("traceparent", "not a traceparent")],
        ] {
            let id = id_of(&request(headers));
            assert_eq!(id.len(), 32, "{headers:?}");
            assert!(
                uuid::Uuid::try_parse(&id).is_ok_and(|u| u.get_version_num() == 7),
                "{headers:?}: {id}"
            );
        }
        // A later version may add fields after the flags.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
        assert_eq!(
            &*id_of(&request(&[("traceparent", later)])),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }
}
