//! Every service's HTTP server, hardened the same way against slow and greedy clients:
//!
//! - [`serve`]: HTTP/1.1 with a header read timeout (a client trickling its headers is cut off)
//!   and a cap on the bytes it buffers for a request head, draining open connections on
//!   shutdown.
//! - [`harden`]: the request head's size, exactly ([`MAX_HEAD_BYTES`], 431 beyond), a cap on
//!   requests in flight (503 with `Retry-After` when saturated: load
//!   shedding, not queueing), a request timeout (408), a default body limit
//!   ([`MAX_BODY_BYTES`]), the request metrics, and [`inputs`]: path segments and query
//!   parameters that are not valid UTF-8 or hold control characters are a 400 naming them.

mod body_rate;
pub mod inputs;
pub mod request_id;
mod serve;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{DefaultBodyLimit, Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use tokio::sync::Semaphore;

use crate::{
    api::Problem,
    config::{ConfigError, seconds},
};

pub use body_rate::BODY_GRACE;
pub use serve::serve;

/// Largest request head (request line and headers, as sent) accepted; a larger one is answered
/// 431. hyper stops buffering a head at this size too, but may parse a longer one read in one
/// go, so [`harden`] counts it exactly.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;

/// The size of `request`'s head as sent over HTTP/1.1: the request line, each header line and
/// the blank line.
fn head_bytes(request: &Request) -> usize {
    let target = request
        .uri()
        .path_and_query()
        .map_or(1, |p| p.as_str().len());
    let line = request.method().as_str().len() + 1 + target + " HTTP/1.1\r\n".len();
    let headers: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + 2 + value.len() + 2)
        .sum();
    line + headers + 2
}

async fn limit_head(request: Request, next: Next) -> Response {
    let size = head_bytes(&request);
    if size > MAX_HEAD_BYTES {
        return Problem::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "the request line and headers are {size} bytes; at most {MAX_HEAD_BYTES} are taken"
            ),
        )
        .into_response();
    }
    next.run(request).await
}

/// Largest request body a route takes unless it sets its own limit (413 beyond).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How an HTTP server protects itself.
#[derive(Clone, Debug)]
pub struct Limits {
    /// A client must send its whole request head within this (`HTTP_HEADER_READ_TIMEOUT_SECS`,
    /// 30); an idle keep-alive connection is closed after it too.
    pub header_read_timeout: Duration,
    /// A request must be answered within this, its body read included
    /// (`HTTP_REQUEST_TIMEOUT_SECS`, 30); 408 otherwise.
    pub request_timeout: Duration,
    /// Requests handled at once (`HTTP_MAX_CONCURRENT_REQUESTS`, 512); more are answered 503
    /// with `Retry-After` at once.
    pub max_concurrent_requests: usize,
    /// Requests one API key may have in progress at once (`HTTP_MAX_CONCURRENT_REQUESTS_PER_KEY`,
    /// 64); more are answered 429 with `Retry-After` at once.
    pub max_requests_per_key: usize,
    /// A request body must arrive at this many bytes per second on average, counted from
    /// [`BODY_GRACE`] after the head (`HTTP_MIN_BODY_RATE_BYTES`, 1024); slower, the request is
    /// answered 408 and its slot freed.
    pub min_body_rate: u32,
}

impl Limits {
    /// Reads `HTTP_HEADER_READ_TIMEOUT_SECS`, `HTTP_REQUEST_TIMEOUT_SECS`,
    /// `HTTP_MAX_CONCURRENT_REQUESTS`, `HTTP_MAX_CONCURRENT_REQUESTS_PER_KEY` and
    /// `HTTP_MIN_BODY_RATE_BYTES`.
    pub fn from_env() -> Result<Self, ConfigError> {
        let at_least_one = |variable: &'static str, value: Duration| {
            if value.is_zero() {
                Err(ConfigError {
                    variable,
                    message: "must be at least 1".into(),
                })
            } else {
                Ok(value)
            }
        };
        let max_concurrent_requests: usize =
            crate::config::at_least_one("HTTP_MAX_CONCURRENT_REQUESTS", "512")?;
        let max_requests_per_key: usize =
            crate::config::at_least_one("HTTP_MAX_CONCURRENT_REQUESTS_PER_KEY", "64")?;
        let min_body_rate: u32 = crate::config::at_least_one("HTTP_MIN_BODY_RATE_BYTES", "1024")?;
        Ok(Self {
            header_read_timeout: at_least_one(
                "HTTP_HEADER_READ_TIMEOUT_SECS",
                seconds("HTTP_HEADER_READ_TIMEOUT_SECS", 30)?,
            )?,
            request_timeout: at_least_one(
                "HTTP_REQUEST_TIMEOUT_SECS",
                seconds("HTTP_REQUEST_TIMEOUT_SECS", 30)?,
            )?,
            max_concurrent_requests,
            max_requests_per_key,
            min_body_rate,
        })
    }
}

/// The request method as a label or attribute value: one of the methods HTTP defines, or
/// `_OTHER` (as the OpenTelemetry HTTP conventions name it) for any other string, so that a
/// client sending made-up methods cannot make new metric series or span names.
pub fn known_method(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

/// Seconds a client is asked to wait when the server is saturated.
const SATURATED_RETRY_AFTER: &str = "1";

#[derive(Clone)]
struct Shedding {
    slots: Arc<Semaphore>,
    timeout: Duration,
    /// The service's API keys, if it checks any: a shed request still counts against its key's
    /// rate, and says what is left.
    keys: Option<crate::auth::Auth>,
}

/// `router` with one answer for what it has no route for (404) or no method for (405), and the
/// limits applied to every route: the request's id, the inputs check, the default body limit,
/// the minimum body data rate, the request metrics and the `service`'s HTTP server span, the
/// cap on requests in flight and the request timeout, and (outermost) the head size. `/health`,
/// `/ready` and `/metrics` are never shed, so a busy service is neither taken for a dead one
/// nor pulled from its load balancer, and stays observable. A shed request naming one of `keys`
/// counts against that key's rate ([`crate::auth::Auth::count`]).
pub fn harden(
    router: Router,
    limits: &Limits,
    service: &'static str,
    keys: Option<crate::auth::Auth>,
) -> Router {
    let shedding = Shedding {
        slots: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
        timeout: limits.request_timeout,
        keys,
    };
    router
        .fallback(|| async { crate::api::ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { crate::api::ApiError::MethodNotAllowed })
        .layer(middleware::from_fn(inputs::check))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(
            limits.min_body_rate,
            body_rate::enforce,
        ))
        .layer(middleware::from_fn_with_state(shedding, shed))
        // Outside the shedding and the timeout, so shed (503) and timed-out (408) requests are
        // counted like any other.
        .layer(middleware::from_fn_with_state(
            service,
            crate::ops::track_requests,
        ))
        .layer(middleware::from_fn(limit_head))
        .layer(middleware::from_fn(request_id::assign))
}

async fn shed(State(shedding): State<Shedding>, request: Request, next: Next) -> Response {
    if matches!(request.uri().path(), "/health" | "/ready" | "/metrics") {
        return next.run(request).await;
    }
    let Ok(_slot) = shedding.slots.try_acquire_owned() else {
        metrics::counter!(crate::metric::HTTP_SHED_TOTAL).increment(1);
        if let Some(keys) = &shedding.keys {
            keys.count(request.headers().get(header::AUTHORIZATION));
        }
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the service is handling as many requests as it takes; retry shortly",
        )
        .header(
            header::RETRY_AFTER,
            HeaderValue::from_static(SATURATED_RETRY_AFTER),
        )
        .into_response();
    };
    match tokio::time::timeout(shedding.timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            metrics::counter!(crate::metric::HTTP_TIMEOUTS_TOTAL).increment(1);
            Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request was not completed within {} s",
                    shedding.timeout.as_secs()
                ),
            )
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_defined_methods_name_themselves() {
        for (method, label) in [("GET", "GET"), ("PATCH", "PATCH"), ("TRACE", "TRACE")] {
            let method = axum::http::Method::from_bytes(method.as_bytes()).expect("a method");
            assert_eq!(known_method(&method), label);
        }
        for made_up in ["FOO", "get", &"X".repeat(2048)] {
            let method = axum::http::Method::from_bytes(made_up.as_bytes()).expect("a token");
            assert_eq!(known_method(&method), "_OTHER", "{made_up}");
        }
    }
}
