//! The minimum data rate of a request body: a client that trickles its body holds a request
//! slot (and, with many connections, every slot) unless the server notices. Each request's body
//! is counted as the handler reads it; a watchdog beside the handler answers `408` once the bytes
//! received fall behind [`Limits::min_body_rate`](super::Limits::min_body_rate) per second,
//! counted from [`BODY_GRACE`] after the head, and the handler (and its slot) is dropped.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    extract::{Request, State},
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse, Response},
};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Instant;

/// How long a body may take before the rate counts: a client's first bytes may lag its head.
pub const BODY_GRACE: Duration = Duration::from_secs(5);

/// How much of a body has arrived, and whether all of it.
#[derive(Default)]
struct Progress {
    received: AtomicU64,
    complete: AtomicBool,
}

/// A body that records its [`Progress`] as it is read.
struct Counted {
    inner: Body,
    progress: Arc<Progress>,
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.progress
                        .received
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                }
            }
            Poll::Ready(None) => self.progress.complete.store(true, Ordering::Relaxed),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Middleware: runs the request with its body counted, beside a watchdog that answers `408` when
/// the body falls behind `rate` bytes per second. A request without a body is not watched.
pub async fn enforce(State(rate): State<u32>, request: Request, next: Next) -> Response {
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let progress = Arc::new(Progress::default());
    let counted = Arc::clone(&progress);
    let request = request.map(|inner| {
        Body::new(Counted {
            inner,
            progress: counted,
        })
    });
    tokio::select! {
        response = next.run(request) => response,
        () = fallen_behind(&progress, rate, Instant::now()) => {
            metrics::counter!(crate::metric::HTTP_TIMEOUTS_TOTAL).increment(1);
            crate::api::Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_too_slow",
                format!(
                    "the request body arrived slower than {rate} bytes per second; send it faster"
                ),
            )
            .into_response()
        }
    }
}

/// Completes when the body, not yet complete, has fewer bytes than `rate` per second since
/// `BODY_GRACE` after `started`; never once it is complete.
async fn fallen_behind(progress: &Progress, rate: u32, started: Instant) {
    let mut check_at = started + BODY_GRACE;
    loop {
        tokio::time::sleep_until(check_at).await;
        if progress.complete.load(Ordering::Relaxed) {
            return std::future::pending().await;
        }
        let received = progress.received.load(Ordering::Relaxed);
        let due = due(started.elapsed(), rate);
        if received < due {
            return;
        }
        // Next look when what has arrived stops being enough.
        let enough_until = BODY_GRACE + Duration::from_secs_f64(received as f64 / f64::from(rate));
        check_at = started + enough_until.max(started.elapsed() + Duration::from_millis(100));
    }
}

/// The bytes a body must have delivered `elapsed` after the head.
fn due(elapsed: Duration, rate: u32) -> u64 {
    let counted = elapsed.saturating_sub(BODY_GRACE).as_secs_f64();
    (counted * f64::from(rate)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_due_in_the_grace_then_the_rate_per_second() {
        assert_eq!(due(Duration::from_secs(4), 1024), 0);
        assert_eq!(due(BODY_GRACE, 1024), 0);
        assert_eq!(due(BODY_GRACE + Duration::from_secs(3), 1024), 3 * 1024);
        assert_eq!(due(BODY_GRACE + Duration::from_millis(500), 1000), 500);
    }
}
