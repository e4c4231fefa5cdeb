//! Webhook subscriptions: an endpoint URL, the event types it wants and its signing secret.
//! The secret is shown when the subscription is created and when it is rotated, never in
//! listings. Deleting keeps the subscription's delivery history and cancels what was pending.

use axum::{
    Json, Router,
    extract::{Path, State, rejection::JsonRejection},
    http::StatusCode,
    routing::{get, post},
};
use serde_json::{Map, Value, json};
use shared::{
    api::{ApiError, bad, bad_body, db, pool},
    connect::postgres::Database,
    contract::DOWNSTREAM_TYPES,
};
use time::OffsetDateTime;
use uuid::Uuid;

use super::timestamp;
use crate::signing::new_secret;

/// How long deliveries are also signed with the secret a rotation replaced.
pub const ROTATION_OVERLAP_HOURS: i64 = 24;
/// Longest URL accepted.
pub const MAX_URL_LENGTH: usize = 2048;
const NOT_FOUND: &str = "no subscription with this id";

pub(super) fn routes() -> Router<Database> {
    Router::new()
        .route("/subscriptions", post(create).get(list))
        .route("/subscriptions/{id}", get(show).delete(remove))
        .route("/subscriptions/{id}/rotate-secret", post(rotate))
        .route("/subscriptions/{id}/enable", post(enable))
}

/// A subscription as the API shows it.
#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    url: String,
    event_types: Vec<String>,
    created_at: OffsetDateTime,
    consecutive_failures: i32,
    disabled_at: Option<OffsetDateTime>,
    disabled_reason: Option<String>,
}

/// The columns of [`Row`], for `concat!` into static queries.
macro_rules! columns {
    () => {
        "id, url, event_types, created_at, consecutive_failures, disabled_at, disabled_reason"
    };
}

impl Row {
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "url": self.url,
            "event_types": self.event_types,
            "status": if self.disabled_at.is_some() { "disabled" } else { "enabled" },
            "disabled_at": timestamp(self.disabled_at),
            "disabled_reason": self.disabled_reason,
            "consecutive_failures": self.consecutive_failures,
            "created_at": timestamp(Some(self.created_at)),
        })
    }
}

/// A validated `POST /subscriptions` body.
#[derive(Debug, PartialEq, Eq)]
pub struct NewSubscription {
    /// The endpoint.
    pub url: String,
    /// The event types it wants, without repeats, in the order given.
    pub event_types: Vec<String>,
}

/// Validates a subscription body, naming the field at fault.
pub fn validate(body: &Value) -> Result<NewSubscription, ApiError> {
    let object: &Map<String, Value> = body
        .as_object()
        .ok_or_else(|| bad("body", "the body must be a JSON object"))?;
    if let Some(unknown) = object
        .keys()
        .find(|k| !["url", "event_types"].contains(&k.as_str()))
    {
        return Err(bad(unknown, format!("unknown field `{unknown}`")));
    }
    let url = match object.get("url") {
        None => return Err(bad("url", "url is required")),
        Some(Value::String(url)) => url,
        Some(_) => return Err(bad("url", "url must be a string")),
    };
    if url.len() > MAX_URL_LENGTH {
        return Err(bad(
            "url",
            format!("url must be at most {MAX_URL_LENGTH} characters"),
        ));
    }
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| bad("url", format!("url is not a valid absolute URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
        return Err(bad(
            "url",
            "url must be an http:// or https:// URL with a host",
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad(
            "url",
            "url must not carry credentials; the signature authenticates",
        ));
    }
    let listed = match object.get("event_types") {
        None => return Err(bad("event_types", "event_types is required")),
        Some(Value::Array(types)) if !types.is_empty() => types,
        Some(_) => {
            return Err(bad(
                "event_types",
                "event_types must be a non-empty array of event types",
            ));
        }
    };
    let mut event_types = Vec::with_capacity(listed.len());
    for kind in listed {
        let kind = kind
            .as_str()
            .filter(|k| DOWNSTREAM_TYPES.contains(k))
            .ok_or_else(|| {
                bad(
                    "event_types",
                    format!(
                        "unknown event type {kind}; known: {}",
                        DOWNSTREAM_TYPES.join(", ")
                    ),
                )
            })?;
        if !event_types.iter().any(|k| k == kind) {
            event_types.push(kind.to_owned());
        }
    }
    Ok(NewSubscription {
        url: url.clone(),
        event_types,
    })
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    id.parse()
        .map_err(|_| bad("id", "the subscription id must be a UUID"))
}

async fn create(
    State(database): State<Database>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(body) = body.map_err(|e| bad_body(&e))?;
    let new = validate(&body)?;
    let secret = new_secret();
    let row: Row = sqlx::query_as(concat!(
        "INSERT INTO subscriptions (id, url, event_types, secret) VALUES ($1, $2, $3, $4)
         RETURNING ",
        columns!(),
        ""
    ))
    .bind(Uuid::now_v7())
    .bind(&new.url)
    .bind(&new.event_types)
    .bind(&secret)
    .fetch_one(pool(&database)?)
    .await
    .map_err(db)?;
    tracing::info!(subscription_id = %row.id, url = %row.url, "Subscription created.");
    let mut shown = row.json();
    shown["secret"] = json!(secret);
    Ok((StatusCode::CREATED, Json(shown)))
}

async fn list(State(database): State<Database>) -> Result<Json<Value>, ApiError> {
    let rows: Vec<Row> = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM subscriptions WHERE deleted_at IS NULL ORDER BY created_at"
    ))
    .fetch_all(pool(&database)?)
    .await
    .map_err(db)?;
    Ok(Json(json!({
        "subscriptions": rows.iter().map(Row::json).collect::<Vec<_>>()
    })))
}

async fn show(
    State(database): State<Database>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let row: Option<Row> = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM subscriptions WHERE id = $1 AND deleted_at IS NULL"
    ))
    .bind(parse_id(&id)?)
    .fetch_optional(pool(&database)?)
    .await
    .map_err(db)?;
    row.map(|r| Json(r.json()))
        .ok_or(ApiError::NotFound(NOT_FOUND))
}

async fn remove(
    State(database): State<Database>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    let pool = pool(&database)?;
    let mut tx = pool.begin().await.map_err(db)?;
    let deleted = sqlx::query(
        "UPDATE subscriptions SET deleted_at = now() WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id)
    .execute(&mut *tx)
    .await
    .map_err(db)?
    .rows_affected();
    if deleted == 0 {
        return Err(ApiError::NotFound(NOT_FOUND));
    }
    sqlx::query(
        "UPDATE deliveries SET status = 'cancelled', last_error = 'subscription deleted'
         WHERE subscription_id = $1 AND status = 'pending'",
    )
    .bind(id)
    .execute(&mut *tx)
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)?;
    tracing::info!(subscription_id = %id, "Subscription deleted.");
    Ok(StatusCode::NO_CONTENT)
}

async fn rotate(
    State(database): State<Database>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let secret = new_secret();
    let expires: Option<(OffsetDateTime,)> = sqlx::query_as(
        "UPDATE subscriptions
         SET previous_secret = secret, secret = $2,
             previous_secret_expires_at = now() + make_interval(hours => $3)
         WHERE id = $1 AND deleted_at IS NULL
         RETURNING previous_secret_expires_at",
    )
    .bind(parse_id(&id)?)
    .bind(&secret)
    .bind(i32::try_from(ROTATION_OVERLAP_HOURS).unwrap_or(24))
    .fetch_optional(pool(&database)?)
    .await
    .map_err(db)?;
    let (expires,) = expires.ok_or(ApiError::NotFound(NOT_FOUND))?;
    tracing::info!(subscription_id = %id, "Subscription secret rotated.");
    Ok(Json(json!({
        "id": id,
        "secret": secret,
        "previous_secret_expires_at": timestamp(Some(expires)),
    })))
}

async fn enable(
    State(database): State<Database>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let row: Option<Row> = sqlx::query_as(concat!(
        "UPDATE subscriptions
         SET disabled_at = NULL, disabled_reason = NULL, consecutive_failures = 0
         WHERE id = $1 AND deleted_at IS NULL
         RETURNING ",
        columns!(),
        ""
    ))
    .bind(parse_id(&id)?)
    .fetch_optional(pool(&database)?)
    .await
    .map_err(db)?;
    let row = row.ok_or(ApiError::NotFound(NOT_FOUND))?;
    tracing::info!(subscription_id = %row.id, "Subscription enabled.");
    Ok(Json(row.json()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(body: Value) -> Option<String> {
        match validate(&body) {
            Err(ApiError::BadRequest { field, .. }) => field,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn accepts_a_url_and_known_types_dropping_repeats() {
        let new = validate(&json!({
            "url": "https://shop.example/hooks",
            "event_types": ["order.created", "stock.low", "order.created"],
        }))
        .expect("valid");
        assert_eq!(new.event_types, ["order.created", "stock.low"]);
    }

    #[test]
    fn names_the_field_at_fault() {
        let types = json!(["order.created"]);
        for (body, field) in [
            (json!([]), "body"),
            (json!({"event_types": types}), "url"),
            (json!({"url": 5, "event_types": types}), "url"),
            (json!({"url": "not a url", "event_types": types}), "url"),
            (
                json!({"url": "ftp://x.example/", "event_types": types}),
                "url",
            ),
            (
                json!({"url": "https://u:p@x.example/", "event_types": types}),
                "url",
            ),
            (json!({"url": "https://x.example/"}), "event_types"),
            (
                json!({"url": "https://x.example/", "event_types": []}),
                "event_types",
            ),
            (
                json!({"url": "https://x.example/", "event_types": ["order.exploded"]}),
                "event_types",
            ),
            (
                json!({"url": "https://x.example/", "event_types": types, "extra": 1}),
                "extra",
            ),
        ] {
            assert_eq!(field_of(body.clone()).as_deref(), Some(field), "{body}");
        }
    }
}
