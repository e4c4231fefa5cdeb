//! What every write endpoint shares: the JSON body checks, the `Idempotency-Key` header, and
//! the idempotent publish (claim the key, publish with confirm, record the answer, or release
//! the key if the publish failed); a creation claims, stores its entry, then publishes.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request, rejection::BytesRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use shared::{
    api::ApiError,
    contract::{EventKey, IngestMessage},
    model::EventId,
};
use time::OffsetDateTime;

use super::AppState;
use crate::idempotency::{Answer, Begin, Lease};

/// The request header carrying the client's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The response header marking a replayed answer.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// A write refused: its error, counted by reason when it is answered.
pub struct Refused(ApiError);

impl<E: Into<ApiError>> From<E> for Refused {
    fn from(error: E) -> Self {
        Self(error.into())
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        metrics::counter!(shared::metric::EVENTS_REJECTED_TOTAL, "reason" => self.0.reason())
            .increment(1);
        self.0.into_response()
    }
}

/// A write request as received: when, its headers, and its body, declared as JSON and within
/// the size limit (else the request is answered 415 or 413, counted like any refusal).
pub struct Ingest {
    /// When the gateway received it.
    pub received_at: OffsetDateTime,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for Ingest {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let received_at = OffsetDateTime::now_utc();
        let headers = request.headers().clone();
        let body = Bytes::from_request(request, state).await;
        let body = json_body(&headers, body).map_err(|e| Refused(e).into_response())?;
        Ok(Self {
            received_at,
            headers,
            body,
        })
    }
}

/// The body, if it is declared as JSON (415) and within the size limit (413).
fn json_body(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .is_some_and(|media| media == "application/json" || media.ends_with("+json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType(
            "JSON (Content-Type: application/json)",
        ));
    }
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge("64 KiB")
        } else {
            ApiError::BadRequest {
                message: rejection.body_text(),
                field: None,
            }
        }
    })
}

/// The `Idempotency-Key` header, bare or as a structured-field string (`"..."`).
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<EventId>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let bad = |why: String| shared::api::bad("Idempotency-Key", format!("Idempotency-Key {why}"));
    let text = value
        .to_str()
        .map_err(|_| bad("may contain only visible ASCII characters".into()))?;
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    text.parse().map(Some).map_err(|e| bad(format!("{e}")))
}

/// Publishes `message` at most once per `key`: a repeat with the same `fingerprint` replays the
/// first answer, another body is 422, a repeat in flight 409. Answers `202` with `accepted`
/// once the broker confirmed. A publish that certainly failed releases the key (503); one whose
/// outcome is unknown (no confirm in time, the connection lost after the publish) keeps the
/// key's fingerprint (503 saying so): the same body may be sent again, another body is 422.
pub async fn publish_once<M: IngestMessage>(
    state: &AppState,
    key: Option<&EventId>,
    fingerprint: &str,
    message: &M,
    accepted: serde_json::Value,
    trace: &opentelemetry::Context,
) -> Result<Response, ApiError> {
    let key = key.map(|id| EventKey {
        kind: M::KIND,
        owner: message.owner().clone(),
        id: id.clone(),
    });
    let lease = match claim(state, key.as_ref(), fingerprint).await? {
        Claim::Replay(response) => return Ok(response),
        Claim::Lease(lease) => lease,
    };
    let answer = Answer::Accepted {
        body: accepted.to_string(),
    };
    publish_claimed(state, lease, message, answer, trace).await
}

/// What claiming an idempotency key gave.
pub enum Claim {
    /// The key's first answer, to send again.
    Replay(Response),
    /// The right to go on (`None`: the request has no key).
    Lease(Option<Lease>),
}

/// Claims `key` (an event's kind, its API key and idempotency key) for a request with
/// `fingerprint`: its first answer again (same body), 422 (another body), 409 (the first is
/// still in flight), or the lease to go on.
pub async fn claim(
    state: &AppState,
    key: Option<&EventKey>,
    fingerprint: &str,
) -> Result<Claim, ApiError> {
    let Some(key) = key else {
        return Ok(Claim::Lease(None));
    };
    match state
        .idempotency
        .begin(key, fingerprint)
        .await
        .map_err(|e| ApiError::unavailable("redis", e))?
    {
        Begin::Acquired(lease) => Ok(Claim::Lease(Some(lease))),
        Begin::Replay(stored) => {
            metrics::counter!(shared::metric::EVENTS_REPLAYED_TOTAL).increment(1);
            Ok(Claim::Replay(respond(stored, true)))
        }
        Begin::Mismatch => Err(ApiError::Unprocessable(
            "this idempotency key was already used with a different body".into(),
        )),
        Begin::InFlight => Err(ApiError::InProgress(
            "a request with this idempotency key is still in progress; retry shortly".into(),
        )),
    }
}

/// Gives a claimed key back (the request did nothing), so it may be sent again at once.
pub async fn release(state: &AppState, lease: Option<Lease>) {
    if let Some(lease) = lease
        && let Err(e) = state.idempotency.release(lease).await
    {
        // The lease expires by itself; until then a retry gets 409.
        tracing::warn!(error = %e, "Could not release the idempotency lease.");
    }
}

/// Publishes `message` under a claimed key and answers `answer` once the broker confirmed,
/// recording it as the key's answer (see [`publish_once`] for the failures).
pub async fn publish_claimed<M: IngestMessage>(
    state: &AppState,
    lease: Option<Lease>,
    message: &M,
    answer: Answer,
    trace: &opentelemetry::Context,
) -> Result<Response, ApiError> {
    let event_id = message.event_id();
    if let Err(error) = state.publisher.publish(message, trace).await {
        let unclear = error.is_unclear();
        tracing::debug!(event_id = %event_id, unclear, error = %error, "Publish not confirmed.");
        if let Some(lease) = lease {
            let settled = if unclear {
                state.idempotency.unclear(lease).await
            } else {
                state.idempotency.release(lease).await
            };
            if let Err(e) = settled {
                // The lease expires by itself; until then a retry gets 409.
                tracing::warn!(event_id = %event_id, error = %e, "Could not settle the idempotency lease.");
            }
        }
        return Err(if unclear {
            ApiError::OutcomeUnknown(error.to_string())
        } else {
            ApiError::unavailable("rabbitmq", error)
        });
    }
    if let Some(lease) = lease
        && let Err(e) = state.idempotency.complete(lease, &answer).await
    {
        // Accepted all the same: a retry after the lease expires publishes the same event id
        // again, and the processor's inbox applies it once.
        tracing::warn!(event_id = %event_id, error = %e, "Could not record the idempotent response.");
    }
    metrics::counter!(shared::metric::EVENTS_ACCEPTED_TOTAL, "kind" => M::KIND.as_str())
        .increment(1);
    tracing::debug!(event_id = %event_id, "Published and confirmed.");
    Ok(respond(answer, false))
}

/// The response of an answer, first or `replayed`; a `201` names what it created in
/// `Location`.
fn respond(answer: Answer, replayed: bool) -> Response {
    let json = [(header::CONTENT_TYPE, "application/json")];
    let mut response = match answer {
        Answer::Accepted { body } => (StatusCode::ACCEPTED, json, body).into_response(),
        Answer::Created { product_id, body } => {
            // A product id is visible ASCII: always a valid header value.
            let location = format!("/products/{product_id}");
            let location = [(header::LOCATION, location)];
            (StatusCode::CREATED, json, location, body).into_response()
        }
    };
    if replayed {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    response
}
