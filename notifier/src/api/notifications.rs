//! What happened to each downstream event: its deliveries, one per subscriber, each with its
//! status (`pending`, `sent`, `failed`, `skipped`, `cancelled`) and every attempt; the list of
//! deliveries by status (the failed ones are the notifier's dead letters) and their retry.

use std::collections::HashMap;

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    routing::{get, post},
};
use serde_json::{Value, json};
use shared::{
    api::{ApiError, bad, db, limit_param, only_params, pool},
    connect::postgres::Database,
};
use time::OffsetDateTime;
use uuid::Uuid;

use super::timestamp;

/// Most deliveries one list call returns.
pub const MAX_LIST: i64 = 1000;
const STATUSES: [&str; 5] = ["pending", "sent", "failed", "skipped", "cancelled"];

pub(super) fn routes() -> Router<Database> {
    Router::new()
        .route("/notifications/{event_id}", get(show))
        .route("/deliveries", get(list))
        .route("/deliveries/{id}/retry", post(retry))
}

#[derive(sqlx::FromRow)]
struct Delivery {
    id: i64,
    event_id: String,
    event_type: String,
    subscription_id: Uuid,
    url: String,
    status: String,
    attempts: i32,
    next_attempt_at: OffsetDateTime,
    sent_at: Option<OffsetDateTime>,
    failed_at: Option<OffsetDateTime>,
    last_error: Option<String>,
}

/// The columns of [`Delivery`], for `concat!` into static queries.
macro_rules! delivery_columns {
    () => {
        "d.id, d.event_id, n.event_type, d.subscription_id, s.url, d.status, d.attempts,
         d.next_attempt_at, d.sent_at, d.failed_at, d.last_error
         FROM deliveries d
         JOIN notifications n ON n.event_id = d.event_id
         JOIN subscriptions s ON s.id = d.subscription_id"
    };
}

impl Delivery {
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "subscription_id": self.subscription_id,
            "url": self.url,
            "status": self.status,
            "attempts": self.attempts,
            "next_attempt_at": timestamp((self.status == "pending").then_some(self.next_attempt_at)),
            "sent_at": timestamp(self.sent_at),
            "failed_at": timestamp(self.failed_at),
            "last_error": self.last_error,
        })
    }
}

#[derive(sqlx::FromRow)]
struct AttemptRow {
    delivery_id: i64,
    attempted_at: OffsetDateTime,
    status_code: Option<i32>,
    latency_seconds: f64,
    error: Option<String>,
}

async fn show(
    State(database): State<Database>,
    Path(event_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let pool = pool(&database)?;
    let notification: Option<(String, OffsetDateTime)> =
        sqlx::query_as("SELECT event_type, received_at FROM notifications WHERE event_id = $1")
            .bind(&event_id)
            .fetch_optional(pool)
            .await
            .map_err(db)?;
    let (event_type, received_at) = notification.ok_or(ApiError::NotFound(
        "no downstream event with this id was received",
    ))?;
    let deliveries: Vec<Delivery> = sqlx::query_as(concat!(
        "SELECT ",
        delivery_columns!(),
        " WHERE d.event_id = $1 ORDER BY d.id"
    ))
    .bind(&event_id)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    let ids: Vec<i64> = deliveries.iter().map(|d| d.id).collect();
    let attempts: Vec<AttemptRow> = sqlx::query_as(
        "SELECT delivery_id, attempted_at, status_code, latency_seconds, error
         FROM delivery_attempts WHERE delivery_id = ANY ($1) ORDER BY id",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    let mut log: HashMap<i64, Vec<Value>> = HashMap::new();
    for a in attempts {
        log.entry(a.delivery_id).or_default().push(json!({
            "attempted_at": timestamp(Some(a.attempted_at)),
            "status_code": a.status_code,
            "latency_seconds": a.latency_seconds,
            "error": a.error,
        }));
    }
    let deliveries: Vec<Value> = deliveries
        .iter()
        .map(|d| {
            let mut shown = d.json();
            shown["attempt_log"] = json!(log.remove(&d.id).unwrap_or_default());
            shown
        })
        .collect();
    Ok(Json(json!({
        "event_id": event_id,
        "event_type": event_type,
        "received_at": timestamp(Some(received_at)),
        "handled": true,
        "deliveries": deliveries,
    })))
}

async fn list(
    State(database): State<Database>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    only_params(params.keys(), &["status", "subscription_id", "limit"])?;
    let status = params
        .get("status")
        .map(|s| {
            STATUSES
                .contains(&s.as_str())
                .then_some(s.as_str())
                .ok_or_else(|| {
                    bad(
                        "status",
                        format!("status must be one of {}", STATUSES.join(", ")),
                    )
                })
        })
        .transpose()?;
    let subscription: Option<Uuid> = params
        .get("subscription_id")
        .map(|s| {
            s.parse()
                .map_err(|_| bad("subscription_id", "subscription_id must be a UUID"))
        })
        .transpose()?;
    let limit = limit_param(params.get("limit"), 100, MAX_LIST)?;
    let deliveries: Vec<Delivery> = sqlx::query_as(concat!(
        "SELECT ",
        delivery_columns!(),
        " WHERE ($1::text IS NULL OR d.status = $1)
            AND ($2::uuid IS NULL OR d.subscription_id = $2)
          ORDER BY d.id DESC LIMIT $3"
    ))
    .bind(status)
    .bind(subscription)
    .bind(limit)
    .fetch_all(pool(&database)?)
    .await
    .map_err(db)?;
    Ok(Json(json!({
        "deliveries": deliveries.iter().map(Delivery::json).collect::<Vec<_>>()
    })))
}

/// Sends a failed, skipped or cancelled delivery again, with a fresh retry schedule.
async fn retry(
    State(database): State<Database>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| bad("id", "the delivery id must be a whole number"))?;
    let pool = pool(&database)?;
    let status: Option<(String,)> = sqlx::query_as("SELECT status FROM deliveries WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(db)?;
    let (status,) = status.ok_or(ApiError::NotFound("no delivery with this id"))?;
    if matches!(status.as_str(), "sent" | "pending") {
        return Ok((
            StatusCode::CONFLICT,
            Json(json!({
                "error": format!("the delivery is {status}; only failed, skipped or cancelled deliveries are retried"),
                "status": status,
            })),
        ));
    }
    sqlx::query(
        "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = now(),
                failed_at = NULL
         WHERE id = $1 AND status IN ('failed', 'skipped', 'cancelled')",
    )
    .bind(id)
    .execute(pool)
    .await
    .map_err(db)?;
    tracing::info!(delivery_id = id, "Delivery retried by an operator.");
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "id": id, "status": "pending" })),
    ))
}
