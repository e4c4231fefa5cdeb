//! What the services' operator APIs answer when a request fails: JSON naming the field, 404
//! saying what was not found, 503 naming the dependency with `Retry-After`.

use axum::{
    Json,
    extract::rejection::JsonRejection,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;
use sqlx::PgPool;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::connect::postgres::Database;

/// A failed operator API request.
#[derive(Debug)]
pub enum ApiError {
    /// A parameter or body field is invalid.
    BadRequest {
        /// What is wrong.
        message: String,
        /// The parameter or field.
        field: Option<String>,
    },
    /// Nothing with that id; says what was looked for.
    NotFound(&'static str),
    /// A dependency (PostgreSQL, RabbitMQ) is down.
    Unavailable(&'static str, String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::BadRequest { message, field } => (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": message, "field": field })),
            )
                .into_response(),
            Self::NotFound(what) => {
                (StatusCode::NOT_FOUND, Json(json!({ "error": what }))).into_response()
            }
            Self::Unavailable(dependency, cause) => {
                tracing::warn!(dependency, cause = %cause, "Dependency unavailable; answering 503.");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, crate::ops::RETRY_AFTER_SECONDS)],
                    Json(json!({ "error": format!("{dependency} is unavailable; retry later"), "dependency": dependency })),
                )
                    .into_response()
            }
        }
    }
}

/// A 400 naming `field`.
pub fn bad(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::BadRequest {
        message: message.into(),
        field: Some(field.to_owned()),
    }
}

/// A 400 for a body that is not the JSON the route takes, with the parser's explanation.
pub fn bad_body(rejection: &JsonRejection) -> ApiError {
    ApiError::BadRequest {
        message: rejection.body_text(),
        field: None,
    }
}

/// A 503 for a PostgreSQL error.
pub fn db(e: sqlx::Error) -> ApiError {
    ApiError::Unavailable("postgres", e.to_string())
}

/// The pool, once the schema is migrated; a 503 before.
pub fn pool(database: &Database) -> Result<&PgPool, ApiError> {
    if database.is_migrated() {
        Ok(database.pool())
    } else {
        Err(ApiError::Unavailable("postgres", "schema not ready".into()))
    }
}

/// An optional RFC 3339 timestamp parameter.
pub fn time_param(field: &str, value: Option<&String>) -> Result<Option<OffsetDateTime>, ApiError> {
    value
        .map(|v| {
            OffsetDateTime::parse(v, &Rfc3339)
                .map_err(|_| bad(field, format!("{field} must be an RFC 3339 timestamp")))
        })
        .transpose()
}

/// Rejects query parameters other than `known`.
pub fn only_params<'a>(
    params: impl IntoIterator<Item = &'a String>,
    known: &[&str],
) -> Result<(), ApiError> {
    match params.into_iter().find(|k| !known.contains(&k.as_str())) {
        Some(unknown) => Err(bad(unknown, format!("unknown parameter `{unknown}`"))),
        None => Ok(()),
    }
}

/// A `limit` parameter: `default` when absent, else a whole number from 1 to `max`.
pub fn limit_param(value: Option<&String>, default: i64, max: i64) -> Result<i64, ApiError> {
    match value {
        None => Ok(default),
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=max).contains(l))
            .ok_or_else(|| {
                bad(
                    "limit",
                    format!("limit must be a whole number from 1 to {max}"),
                )
            }),
    }
}
