//! `ApiError`: every way a gateway request can fail, mapped to a status in one `match`, with a
//! JSON body `{"error": "...", "field": "..."}` that names the offending field.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::request::FieldError;

/// A failed request, as the client will see it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or breaks a rule; `field` names the culprit when there is one.
    #[error("{message}")]
    BadRequest {
        /// What is wrong.
        message: String,
        /// The field, header or path segment at fault.
        field: Option<String>,
    },
    /// Nothing is known under this id.
    #[error("{0}")]
    NotFound(String),
    /// The route exists but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The body is over the limit.
    #[error("the body must be at most 64 KiB")]
    PayloadTooLarge,
    /// The body is not declared as JSON.
    #[error("the body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    /// The idempotency key was used before with a different body.
    #[error("this idempotency key was already used with a different body")]
    KeyReused,
    /// The first request with this idempotency key is still being processed.
    #[error("a request with this idempotency key is still in progress; retry shortly")]
    KeyInFlight,
    /// A dependency is down or too slow; nothing was accepted and the request can be retried.
    #[error("{dependency} is unavailable; retry later")]
    Unavailable {
        /// `rabbitmq`, `redis` or `postgres`.
        dependency: &'static str,
        /// What went wrong, for the log only.
        cause: String,
    },
}

impl ApiError {
    /// A 400 naming `field`.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::BadRequest {
            message: message.into(),
            field: Some(field.into()),
        }
    }

    /// A 503 blaming `dependency`.
    pub fn unavailable(dependency: &'static str, cause: impl std::fmt::Display) -> Self {
        Self::Unavailable {
            dependency,
            cause: cause.to_string(),
        }
    }

    /// A short, stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BadRequest { .. } => "invalid",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PayloadTooLarge => "too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::KeyReused => "key_reused",
            Self::KeyInFlight => "key_in_flight",
            Self::Unavailable { .. } => "unavailable",
        }
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        Self::BadRequest {
            message: e.message,
            field: e.field,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::KeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::KeyInFlight => StatusCode::CONFLICT,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        };
        let body = match &self {
            Self::BadRequest {
                field: Some(field), ..
            } => json!({ "error": self.to_string(), "field": field }),
            Self::Unavailable {
                dependency, cause, ..
            } => {
                tracing::warn!(dependency, cause = %cause, "Dependency unavailable; answering 503.");
                json!({ "error": self.to_string(), "dependency": dependency })
            }
            _ => json!({ "error": self.to_string() }),
        };
        let mut response = (status, Json(body)).into_response();
        if matches!(self, Self::Unavailable { .. } | Self::KeyInFlight) {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(shared::ops::RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}
