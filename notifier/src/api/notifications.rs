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
use serde::Serialize;
use shared::{
    api::{ApiError, bad, db, found, list_page, only_params, pool},
    connect::postgres::Database,
    contract::EventType,
};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::store::{
    deliveries::{self, Attempt, Delivery, DeliveryStatus, Retry},
    notifications,
};

/// A downstream event the notifier took in, with its deliveries.
#[derive(Serialize, ToSchema)]
pub struct Notification {
    /// The event's id.
    event_id: String,
    /// Its type.
    event_type: EventType,
    /// When the notifier took it in.
    #[serde(with = "time::serde::rfc3339")]
    received_at: OffsetDateTime,
    /// Always true.
    handled: bool,
    /// One per subscriber that wanted it.
    deliveries: Vec<DeliveryLog>,
}

/// A delivery with every attempt.
#[derive(Serialize, ToSchema)]
pub struct DeliveryLog {
    #[serde(flatten)]
    delivery: Delivery,
    /// Every attempt, in order.
    attempt_log: Vec<Attempt>,
}

/// `GET /deliveries`: a page.
#[derive(Serialize, ToSchema)]
pub struct DeliveryList {
    /// Newest first.
    items: Vec<Delivery>,
    /// Pass as `cursor` for the next page; `null` on the last.
    next_cursor: Option<String>,
}

/// A delivery sent again.
#[derive(Serialize, ToSchema)]
pub struct Retried {
    /// The delivery.
    id: i64,
    /// `pending`.
    status: DeliveryStatus,
}

pub(super) fn routes() -> Router<super::Api> {
    Router::new()
        .route("/notifications/{event_id}", get(show))
        .route("/deliveries", get(list))
        .route("/deliveries/{id}/retry", post(retry))
}

/// A downstream event's deliveries, each with every attempt.
#[utoipa::path(get, path = "/notifications/{event_id}", operation_id = "get_notification", tag = "deliveries",
    params(("event_id" = String, Path, description = "The downstream event's id (the webhook-id)")),
    responses((status = 200, description = "The event and its deliveries", body = Notification)))]
pub(crate) async fn show(
    State(database): State<Database>,
    Path(event_id): Path<String>,
) -> Result<Json<Notification>, ApiError> {
    let pool = pool(&database)?;
    let (event_type, received_at) = found(
        notifications::get(pool, &event_id).await,
        "no downstream event with this id was received",
    )?;
    let of_event = deliveries::of_event(pool, &event_id).await.map_err(db)?;
    let ids: Vec<i64> = of_event.iter().map(|d| d.id).collect();
    let mut log = deliveries::attempts(pool, &ids).await.map_err(db)?;
    let deliveries = of_event
        .into_iter()
        .map(|delivery| DeliveryLog {
            attempt_log: log.remove(&delivery.id).unwrap_or_default(),
            delivery,
        })
        .collect();
    Ok(Json(Notification {
        event_id,
        event_type,
        received_at,
        handled: true,
        deliveries,
    }))
}

/// Deliveries, newest first (`status=failed`: the notifier's dead letters).
#[utoipa::path(get, path = "/deliveries", operation_id = "list_deliveries", tag = "deliveries",
    params(
        ("status" = Option<String>, Query, description = "pending, sent, failed, skipped or cancelled"),
        ("subscription_id" = Option<String>, Query, description = "Only this subscription's (a UUID)"),
        ("limit" = Option<i64>, Query, description = "1 to 1000, default 100"),
        ("cursor" = Option<String>, Query, description = "The previous page's next_cursor (with the same filters)"),
    ),
    responses((status = 200, description = "A page of deliveries", body = DeliveryList)))]
pub(crate) async fn list(
    State(database): State<Database>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<DeliveryList>, ApiError> {
    only_params(
        params.keys(),
        &["status", "subscription_id", "limit", "cursor"],
    )?;
    let status = params
        .get("status")
        .map(|s| {
            DeliveryStatus::parse(s).ok_or_else(|| {
                bad(
                    "status",
                    format!(
                        "status must be one of {}",
                        DeliveryStatus::ALL.map(DeliveryStatus::as_str).join(", ")
                    ),
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
    let fetch = async |before, limit| {
        deliveries::list(pool(&database)?, status, subscription, before, limit)
            .await
            .map_err(db)
    };
    let (items, next_cursor) = list_page(&params, fetch, |delivery| delivery.id).await?;
    Ok(Json(DeliveryList { items, next_cursor }))
}

/// Sends a failed, skipped or cancelled delivery again, with a fresh retry schedule.
#[utoipa::path(post, path = "/deliveries/{id}/retry", operation_id = "retry_delivery", tag = "deliveries",
    params(("id" = i64, Path, description = "The delivery's id")),
    responses(
        (status = 202, description = "Pending again", body = Retried),
        (status = 409, description = "The delivery is sent or pending", body = shared::openapi::ErrorBody, content_type = "application/problem+json"),
    ))]
pub(crate) async fn retry(
    State(database): State<Database>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Retried>), ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| bad("id", "the delivery id must be a whole number"))?;
    match deliveries::retry(pool(&database)?, id).await.map_err(db)? {
        Retry::Pending => {}
        Retry::NotFound => return Err(ApiError::NotFound("no delivery with this id".into())),
        Retry::Refused(status) => {
            return Err(ApiError::Conflict(
                format!(
                    "the delivery is {status}; only failed, skipped or cancelled deliveries are retried"
                )
                .into(),
            ));
        }
    }
    tracing::info!(delivery_id = id, "Delivery retried by an operator.");
    Ok((
        StatusCode::ACCEPTED,
        Json(Retried {
            id,
            status: DeliveryStatus::Pending,
        }),
    ))
}
