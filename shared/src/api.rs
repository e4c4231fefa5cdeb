//! What every service answers when a request fails: an RFC 9457 problem
//! (`application/problem+json`: `type`, `title`, `status`, `detail`, `instance`) with a stable
//! `code` a program can act on, the request's id, and what applies (`field` naming the input at
//! fault, `scope`, `dependency` with `Retry-After`).

use std::{borrow::Cow, collections::HashMap};

use axum::{
    Json,
    extract::{FromRequest, Request, rejection::JsonRejection},
    http::{HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use sqlx::PgPool;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::connect::postgres::Database;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error answer (RFC 9457): its status, a stable `code` (its `type` is `/problems/{code}`),
/// a sentence for people (`detail`), the request it answers (`instance`, `request_id`), and
/// members of its own (`field`, `scope`, `dependency`, ...). `error` repeats `detail` for
/// clients written before problems were adopted.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    code: &'static str,
    detail: String,
    members: serde_json::Map<String, Value>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Problem {
    /// A problem of `status`, known by `code`, described by `detail`.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            members: serde_json::Map::new(),
            headers: Vec::new(),
        }
    }

    /// With the member `name` (`field`, `scope`, `dependency`, ...).
    pub fn member(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.members.insert(name.to_owned(), value.into());
        self
    }

    /// With the response header `name`.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": format!("/problems/{}", self.code),
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
            "code": self.code,
            "error": self.detail,
        });
        if let Some(request) = crate::http::request_id::current() {
            body["instance"] = json!(&*request.path);
            body["request_id"] = json!(&*request.id);
        }
        for (name, value) in self.members {
            body[name] = value;
        }
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))],
            body.to_string(),
        )
            .into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

/// A failed request, as the client sees it: every service answers with this one type, so each
/// status has one body shape.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A parameter, header or body field is invalid; `field` names it when there is one.
    #[error("{message}")]
    BadRequest {
        /// What is wrong.
        message: String,
        /// The field, header, parameter or path segment at fault.
        field: Option<String>,
    },
    /// Nothing with that id; says what was looked for.
    #[error("{0}")]
    NotFound(Cow<'static, str>),
    /// The route exists but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The body is over the limit (which the message names: `64 KiB`).
    #[error("the body must be at most {0}")]
    PayloadTooLarge(&'static str),
    /// The body is not of a type the route takes (which the message names:
    /// `JSON (Content-Type: application/json)`).
    #[error("the body must be {0}")]
    UnsupportedMediaType(&'static str),
    /// The key may call the endpoint, but not do this with it: it also needs `scope`; says why.
    #[error("{message}")]
    Forbidden {
        /// Why this needs the scope.
        message: Cow<'static, str>,
        /// The scope it also needs.
        scope: &'static str,
    },
    /// The request conflicts with the state of what it acts on; says why.
    #[error("{0}")]
    Conflict(Cow<'static, str>),
    /// The same request is still being handled; it can be sent again shortly (409 with
    /// `Retry-After`).
    #[error("{0}")]
    InProgress(Cow<'static, str>),
    /// The request is well formed but cannot be applied as it is; says why.
    #[error("{0}")]
    Unprocessable(Cow<'static, str>),
    /// A dependency is down or too slow; nothing was done and the request can be retried.
    #[error("{dependency} is unavailable; retry later")]
    Unavailable {
        /// `rabbitmq`, `redis`, `postgres` or a peer service.
        dependency: &'static str,
        /// What went wrong, for the log only.
        cause: String,
    },
    /// The message was published but the broker's confirm never came: it may or may not be
    /// accepted. The same request (same key, same body) may be sent again; it is applied once.
    #[error(
        "RabbitMQ did not confirm in time: the request may or may not have been accepted; send it again with the same Idempotency-Key and body (it is applied once)"
    )]
    OutcomeUnknown(String),
}

impl ApiError {
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
            Self::PayloadTooLarge(_) => "too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::Forbidden { .. } => "forbidden",
            Self::Conflict(_) => "conflict",
            Self::InProgress(_) => "in_progress",
            Self::Unprocessable(_) => "unprocessable",
            Self::Unavailable { .. } => "unavailable",
            Self::OutcomeUnknown(_) => "outcome_unknown",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::Conflict(_) | Self::InProgress(_) => StatusCode::CONFLICT,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable { .. } | Self::OutcomeUnknown(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut problem = Problem::new(self.status(), self.reason(), self.to_string());
        match &self {
            Self::BadRequest {
                field: Some(field), ..
            } => problem = problem.member("field", field.as_str()),
            Self::Forbidden { scope, .. } => problem = problem.member("scope", *scope),
            Self::Unavailable { dependency, cause } => {
                tracing::warn!(dependency, cause = %cause, "Dependency unavailable; answering 503.");
                problem = problem.member("dependency", *dependency);
            }
            Self::OutcomeUnknown(cause) => {
                tracing::warn!(cause = %cause, "Publish outcome unknown; answering 503.");
                problem = problem
                    .member("dependency", "rabbitmq")
                    .member("outcome", "unknown");
            }
            _ => {}
        }
        if matches!(
            self,
            Self::Unavailable { .. } | Self::OutcomeUnknown(_) | Self::InProgress(_)
        ) {
            problem = problem.header(
                header::RETRY_AFTER,
                HeaderValue::from_static(crate::ops::RETRY_AFTER_SECONDS),
            );
        }
        problem.into_response()
    }
}

/// A 400 naming `field`.
pub fn bad(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::BadRequest {
        message: message.into(),
        field: Some(field.to_owned()),
    }
}

/// A request's JSON body as `T`; one that is not is refused as [`bad_body`] answers it.
pub struct JsonBody<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let Json(body) = Json::from_request(request, state)
            .await
            .map_err(|rejection| bad_body(&rejection))?;
        Ok(Self(body))
    }
}

/// The answer to a body that is not the JSON the route takes: 415 without a JSON content type,
/// 413 over the size limit, else 400 naming the field at fault (from the parser's path to it;
/// `body` when the JSON itself is broken).
pub fn bad_body(rejection: &JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::UnsupportedMediaType("JSON (Content-Type: application/json)")
        }
        JsonRejection::BytesRejection(bytes) if bytes.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge("64 KiB")
        }
        JsonRejection::JsonDataError(_) => {
            let text = rejection.body_text();
            // "Failed to deserialize the JSON body into the target type: {path}: {why}"
            let reason = text
                .split_once("target type: ")
                .map_or(text.as_str(), |(_, r)| r);
            let named = |prefix: &str| {
                reason
                    .strip_prefix(prefix)?
                    .split('`')
                    .next()
                    .map(str::to_owned)
            };
            if let Some(field) = named("missing field `").or_else(|| named("unknown field `")) {
                return bad(&field, reason.to_owned());
            }
            match reason.split_once(": ") {
                Some((path, why)) if !path.contains(' ') && !path.is_empty() => {
                    bad(path, format!("{path}: {why}"))
                }
                _ => bad("body", reason.to_owned()),
            }
        }
        _ => {
            let text = rejection.body_text();
            let reason = text.split_once(": ").map_or(text.as_str(), |(_, r)| r);
            bad("body", format!("the body is not valid JSON: {reason}"))
        }
    }
}

/// A 503 for a PostgreSQL error.
pub fn db(e: sqlx::Error) -> ApiError {
    ApiError::unavailable("postgres", e)
}

/// What a lookup found, or a 404 saying `missing`; a database error is a 503.
pub fn found<T>(row: Result<Option<T>, sqlx::Error>, missing: &'static str) -> Result<T, ApiError> {
    row.map_err(db)?
        .ok_or(ApiError::NotFound(Cow::Borrowed(missing)))
}

/// The pool, once the schema is migrated; a 503 before.
pub fn pool(database: &Database) -> Result<&PgPool, ApiError> {
    database
        .ready()
        .map_err(|_| ApiError::unavailable("postgres", "schema not ready"))
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

/// The `limit` of an operator's list: 1 to 1000, 100 when not given.
pub fn page_limit(value: Option<&String>) -> Result<i64, ApiError> {
    limit_param(value, 100, 1000)
}

/// A page of a list as every list answers it: `items`, and `next_cursor` to pass as `cursor`
/// for the next page (`None` on the last). Rows are fetched with [`fetch_limit`] (one more
/// than asked): the extra row says there is more, and the cursor is the last kept row's sort
/// key, so a page is a keyset query that neither repeats nor skips a row that stays put.
pub fn paginate<T, K: serde::Serialize>(
    mut rows: Vec<T>,
    limit: i64,
    key: impl Fn(&T) -> K,
) -> (Vec<T>, Option<String>) {
    let keep = usize::try_from(limit).unwrap_or(usize::MAX);
    if rows.len() <= keep {
        return (rows, None);
    }
    rows.truncate(keep);
    let next = rows.last().map(|last| encode_cursor(&key(last)));
    (rows, next)
}

/// How many rows to fetch for a page of `limit`: one more, to know whether another follows.
pub fn fetch_limit(limit: i64) -> i64 {
    limit.saturating_add(1)
}

/// A keyset cursor as the API hands it out: the URL-safe base64 of its JSON, opaque to clients.
pub fn encode_cursor<K: serde::Serialize>(key: &K) -> String {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(key).expect("a cursor key always serialises"))
}

/// The `cursor` parameter read back, or a `400` naming it when this API did not give it.
pub fn cursor_param<K: serde::de::DeserializeOwned>(
    value: Option<&String>,
) -> Result<Option<K>, ApiError> {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    value
        .map(|text| {
            URL_SAFE_NO_PAD
                .decode(text)
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                .ok_or_else(|| bad("cursor", "cursor is not one this API gave"))
        })
        .transpose()
}

/// One page of a keyset-paged list, read as every list reads it: `limit` ([`page_limit`]) and
/// `cursor` ([`cursor_param`]) from `params` (a `400` naming the one at fault), then
/// `fetch(after, limit)` for [`fetch_limit`] rows after the cursor's key, cut by [`paginate`]
/// on `key`. Other parameters are the caller's to check, before or inside `fetch`.
pub async fn list_page<T, K: serde::Serialize + serde::de::DeserializeOwned>(
    params: &HashMap<String, String>,
    fetch: impl AsyncFnOnce(Option<K>, i64) -> Result<Vec<T>, ApiError>,
    key: impl Fn(&T) -> K,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let limit = page_limit(params.get("limit"))?;
    let after = cursor_param(params.get("cursor"))?;
    let rows = fetch(after, fetch_limit(limit)).await?;
    Ok(paginate(rows, limit, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_with_more_after_it_ends_at_the_limit_with_its_last_key_as_the_cursor() {
        let (page, next) = paginate(vec![1, 2, 3], 2, |n| *n);
        assert_eq!(page, [1, 2]);
        let next = next.expect("a cursor");
        assert_eq!(cursor_param::<i32>(Some(&next)).ok().flatten(), Some(2));
    }

    #[test]
    fn the_last_page_has_no_cursor() {
        assert_eq!(paginate(vec![1, 2], 2, |n| *n), (vec![1, 2], None));
        assert_eq!(paginate(Vec::<i32>::new(), 5, |n| *n), (vec![], None));
    }

    #[test]
    fn a_cursor_this_api_did_not_give_names_the_parameter() {
        for made_up in ["not base64!", "e30", &encode_cursor(&"text")] {
            let error = cursor_param::<(i64, String)>(Some(&made_up.to_owned()))
                .expect_err("refused")
                .into_response();
            assert_eq!(error.status(), StatusCode::BAD_REQUEST, "{made_up}");
        }
        assert!(matches!(cursor_param::<i64>(None), Ok(None)));
    }
}
