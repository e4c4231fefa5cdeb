//! Webhook subscriptions: an endpoint URL, the event types it wants and its signing secret.
//! The secret is shown when the subscription is created and when it is rotated, never in
//! listings. Deleting keeps the subscription's delivery history and cancels what was pending.

use std::collections::HashMap;

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use shared::{
    api::{ApiError, JsonBody, bad, db, found, list_page, only_params, pool},
    connect::postgres::Database,
    contract::EventType,
};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Api, event_types};
use crate::{
    bindings::Bindings,
    signing::new_secret,
    store::{
        deliveries, notifications,
        subscriptions::{self, Subscription},
    },
};

/// How long deliveries are also signed with the secret a rotation replaced.
pub const ROTATION_OVERLAP_HOURS: i64 = 24;
/// Longest URL accepted.
pub const MAX_URL_LENGTH: usize = 2048;
const NOT_FOUND: &str = "no subscription with this id";

pub(super) fn routes() -> Router<Api> {
    Router::new()
        .route("/subscriptions", post(create).get(list))
        .route("/subscriptions/{id}", get(show).delete(remove))
        .route("/subscriptions/{id}/rotate-secret", post(rotate))
        .route("/subscriptions/{id}/enable", post(enable))
        .route("/subscriptions/{id}/test", post(send_test))
        .route("/subscriptions/{id}/recover", post(recover))
}

/// A `POST /subscriptions` body, validated.
#[derive(Debug, PartialEq, Eq, ToSchema)]
#[schema(example = json!({"url": "https://shop.example/hooks", "event_types": ["order.created"]}))]
pub struct NewSubscription {
    /// An `http(s)` URL with a host, no credentials, not on a private network.
    pub url: String,
    /// One or more of `product.updated`, `stock.low`, `order.created`, `order.rejected`
    /// (repeats are dropped).
    pub event_types: Vec<String>,
}

/// A subscription just made, with its signing secret (shown this once).
#[derive(Serialize, ToSchema)]
pub struct Created {
    #[serde(flatten)]
    subscription: Subscription,
    /// The signing secret (`whsec_...`).
    secret: String,
}

/// `GET /subscriptions`.
#[derive(Serialize, ToSchema)]
pub struct SubscriptionList {
    /// Oldest first; secrets are never listed.
    items: Vec<Subscription>,
    /// Pass as `cursor` for the next page; `null` on the last.
    next_cursor: Option<String>,
}

/// A new secret; the old one also signs until `previous_secret_expires_at`.
#[derive(Serialize, ToSchema)]
pub struct RotatedSecret {
    /// The subscription.
    id: Uuid,
    /// The new secret, shown once.
    secret: String,
    /// Until when the old secret also signs.
    #[serde(with = "time::serde::rfc3339")]
    previous_secret_expires_at: OffsetDateTime,
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
            .filter(|k| EventType::parse(k).is_some())
            .ok_or_else(|| {
                bad(
                    "event_types",
                    format!(
                        "unknown event type {kind}; known: {}",
                        EventType::ALL.map(EventType::as_str).join(", ")
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

/// Brings the notifier queue's bindings in step with a change just committed, so the events
/// after the answer reach the queue; if the broker is away, the periodic reconciliation does it
/// within [`crate::bindings::EVERY`] of its return.
async fn rebind(bindings: &Bindings) {
    if let Err(e) = bindings.reconcile().await {
        tracing::warn!(error = %e, "The notifier queue's bindings were not reconciled; the periodic reconciliation will.");
    }
}

fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    id.parse()
        .map_err(|_| bad("id", "the subscription id must be a UUID"))
}

/// Subscribes an endpoint; the answer holds its signing secret, shown this once.
#[utoipa::path(post, path = "/subscriptions", operation_id = "create_subscription", tag = "subscriptions",
    request_body(content = NewSubscription, content_type = "application/json"),
    responses(
        (status = 201, description = "Subscribed", body = Created),
        (status = 409, description = "The namespace holds the most subscriptions allowed", body = shared::openapi::ErrorBody, content_type = "application/problem+json"),
    ))]
pub(crate) async fn create(
    State(api): State<Api>,
    JsonBody(body): JsonBody<Value>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let new = validate(&body)?;
    let url = reqwest::Url::parse(&new.url).map_err(|e| bad("url", e.to_string()))?;
    api.egress
        .check_url(&url)
        .await
        .map_err(|e| bad("url", format!("url refused: {e}")))?;
    let secret = new_secret();
    let created = subscriptions::create(
        pool(&api.database)?,
        &new.url,
        &new.event_types,
        &secret,
        api.max_subscriptions,
    )
    .await
    .map_err(db)?;
    let row = created.map_err(|count| {
        ApiError::Conflict(
            format!(
                "this namespace already has {count} subscriptions, the most allowed \
                 (WEBHOOK_MAX_SUBSCRIPTIONS); delete one first"
            )
            .into(),
        )
    })?;
    tracing::info!(
        subscription_id = %row.id,
        url = %shared::egress::redacted_str(&row.url),
        "Subscription created."
    );
    rebind(&api.bindings).await;
    Ok((
        StatusCode::CREATED,
        Json(Created {
            subscription: row,
            secret,
        }),
    ))
}

/// Subscriptions (without secrets), oldest first, a page at a time.
#[utoipa::path(get, path = "/subscriptions", operation_id = "list_subscriptions", tag = "subscriptions",
    params(
        ("limit" = Option<i64>, Query, description = "1 to 1000, default 100"),
        ("cursor" = Option<String>, Query, description = "The previous page's next_cursor"),
    ),
    responses((status = 200, description = "A page of subscriptions", body = SubscriptionList)))]
pub(crate) async fn list(
    State(database): State<Database>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<SubscriptionList>, ApiError> {
    only_params(params.keys(), &["limit", "cursor"])?;
    let fetch = async |after, limit| {
        subscriptions::list(pool(&database)?, after, limit)
            .await
            .map_err(db)
    };
    let (items, next_cursor) = list_page(&params, fetch, Subscription::list_key).await?;
    Ok(Json(SubscriptionList { items, next_cursor }))
}

/// One subscription.
#[utoipa::path(get, path = "/subscriptions/{id}", operation_id = "get_subscription", tag = "subscriptions", params(("id" = String, Path, description = "The subscription's id (a UUID)")),
    responses((status = 200, description = "The subscription", body = Subscription)))]
pub(crate) async fn show(
    State(database): State<Database>,
    Path(id): Path<String>,
) -> Result<Json<Subscription>, ApiError> {
    let row = subscriptions::get(pool(&database)?, parse_id(&id)?).await;
    found(row, NOT_FOUND).map(Json)
}

/// Deletes a subscription (its history stays; what was pending is cancelled).
#[utoipa::path(delete, path = "/subscriptions/{id}", operation_id = "delete_subscription", tag = "subscriptions", params(("id" = String, Path, description = "The subscription's id (a UUID)")),
    responses((status = 204, description = "Deleted")))]
pub(crate) async fn remove(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    let pool = pool(&api.database)?;
    let mut tx = pool.begin().await.map_err(db)?;
    if !subscriptions::delete(&mut tx, id).await.map_err(db)? {
        return Err(ApiError::NotFound(NOT_FOUND.into()));
    }
    let cancelled = deliveries::cancel_pending(&mut tx, id).await.map_err(db)?;
    tx.commit().await.map_err(db)?;
    tracing::info!(subscription_id = %id, cancelled, "Subscription deleted.");
    rebind(&api.bindings).await;
    Ok(StatusCode::NO_CONTENT)
}

/// A new signing secret; the old one also signs for 24 h.
#[utoipa::path(post, path = "/subscriptions/{id}/rotate-secret", operation_id = "rotate_subscription_secret", tag = "subscriptions", params(("id" = String, Path, description = "The subscription's id (a UUID)")),
    responses((status = 200, description = "Rotated", body = RotatedSecret)))]
pub(crate) async fn rotate(
    State(database): State<Database>,
    Path(id): Path<String>,
) -> Result<Json<RotatedSecret>, ApiError> {
    let id = parse_id(&id)?;
    let secret = new_secret();
    let overlap = i32::try_from(ROTATION_OVERLAP_HOURS).unwrap_or(24);
    let expires = subscriptions::rotate(pool(&database)?, id, &secret, overlap).await;
    let previous_secret_expires_at = found(expires, NOT_FOUND)?;
    tracing::info!(subscription_id = %id, "Subscription secret rotated.");
    Ok(Json(RotatedSecret {
        id,
        secret,
        previous_secret_expires_at,
    }))
}

/// Enables a subscription that was disabled for failing.
#[utoipa::path(post, path = "/subscriptions/{id}/enable", operation_id = "enable_subscription", tag = "subscriptions", params(("id" = String, Path, description = "The subscription's id (a UUID)")),
    responses((status = 200, description = "Enabled", body = Subscription)))]
pub(crate) async fn enable(
    State(database): State<Database>,
    Path(id): Path<String>,
) -> Result<Json<Subscription>, ApiError> {
    let row = subscriptions::enable(pool(&database)?, parse_id(&id)?).await;
    let row = found(row, NOT_FOUND)?;
    tracing::info!(subscription_id = %row.id, "Subscription enabled.");
    Ok(Json(row))
}

/// The subscription `id`, refused (409) when it is disabled: what a test event and a recovery
/// need.
async fn enabled(database: &Database, id: Uuid) -> Result<Subscription, ApiError> {
    let row = found(subscriptions::get(pool(database)?, id).await, NOT_FOUND)?;
    if !row.is_enabled() {
        return Err(ApiError::Conflict(
            format!(
                "the subscription is disabled; enable it first (POST /subscriptions/{id}/enable)"
            )
            .into(),
        ));
    }
    Ok(row)
}

/// `POST /subscriptions/{id}/test`: which event type to send.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestEvent {
    /// One of the subscription's event types; its first when absent.
    event_type: Option<String>,
}

/// A test event on its way.
#[derive(Serialize, ToSchema)]
pub struct TestSent {
    /// Its id, the `webhook-id`: `GET /notifications/{event_id}` shows its delivery.
    event_id: String,
    /// Its type.
    event_type: EventType,
}

/// Sends this subscription, and no other, a test event: an example of one of its types whose
/// ids all start with `test-`, signed and delivered (retries included) as any event, and
/// recorded among the notifications.
#[utoipa::path(post, path = "/subscriptions/{id}/test", operation_id = "send_test_event", tag = "subscriptions",
    params(("id" = String, Path, description = "The subscription's id (a UUID)")),
    request_body(content = TestEvent, content_type = "application/json"),
    responses(
        (status = 202, description = "Queued for delivery", body = TestSent),
        (status = 409, description = "The subscription is disabled", body = shared::openapi::ErrorBody, content_type = "application/problem+json"),
    ))]
pub(crate) async fn send_test(
    State(api): State<Api>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<TestEvent>,
) -> Result<(StatusCode, Json<TestSent>), ApiError> {
    let id = parse_id(&id)?;
    let subscription = enabled(&api.database, id).await?;
    let wanted = body
        .event_type
        .as_deref()
        .or(subscription.event_types.first().map(String::as_str))
        .unwrap_or_default();
    let kind = EventType::parse(wanted)
        .filter(|_| subscription.event_types.iter().any(|t| t == wanted))
        .ok_or_else(|| {
            bad(
                "event_type",
                format!(
                    "event_type must be one of the subscription's: {}",
                    subscription.event_types.join(", ")
                ),
            )
        })?;
    let tag = Uuid::now_v7();
    let announcement = shared::contract::Announcement {
        id: shared::contract::DownstreamId::tagged(tag),
        timestamp: OffsetDateTime::now_utc(),
        event: event_types::example(kind, tag),
    };
    // serde_json writes UTF-8.
    let payload = String::from_utf8_lossy(&announcement.body()).into_owned();
    let mut tx = pool(&api.database)?.begin().await.map_err(db)?;
    notifications::insert(
        &mut tx,
        &announcement.id,
        kind,
        &payload,
        &Default::default(),
    )
    .await
    .map_err(db)?;
    deliveries::create_one(&mut tx, &announcement.id, id)
        .await
        .map_err(db)?;
    tx.commit().await.map_err(db)?;
    tracing::info!(subscription_id = %id, event_id = %announcement.id, event_type = %kind, "Test event queued.");
    Ok((
        StatusCode::ACCEPTED,
        Json(TestSent {
            event_id: announcement.id.to_string(),
            event_type: kind,
        }),
    ))
}

/// `POST /subscriptions/{id}/recover`: from when.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoverFrom {
    /// Deliveries that failed at or after this time (RFC 3339) are sent again.
    since: String,
}

/// How many failed deliveries are sent again.
#[derive(Serialize, ToSchema)]
pub struct Recovered {
    /// Their number.
    recovered: u64,
}

/// Sends again every delivery to this subscription that failed (after its last retry) at or
/// after `since`: after an endpoint's outage, what it missed, each with its retries anew.
#[utoipa::path(post, path = "/subscriptions/{id}/recover", operation_id = "recover_subscription_deliveries", tag = "subscriptions",
    params(("id" = String, Path, description = "The subscription's id (a UUID)")),
    request_body(content = RecoverFrom, content_type = "application/json"),
    responses(
        (status = 202, description = "Queued for delivery again", body = Recovered),
        (status = 409, description = "The subscription is disabled", body = shared::openapi::ErrorBody, content_type = "application/problem+json"),
    ))]
pub(crate) async fn recover(
    State(api): State<Api>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<RecoverFrom>,
) -> Result<(StatusCode, Json<Recovered>), ApiError> {
    let id = parse_id(&id)?;
    let since = OffsetDateTime::parse(&body.since, &time::format_description::well_known::Rfc3339)
        .map_err(|_| {
            bad(
                "since",
                "since must be an RFC 3339 time, such as 2026-12-05T10:00:00Z",
            )
        })?;
    enabled(&api.database, id).await?;
    let recovered = deliveries::recover(pool(&api.database)?, id, since)
        .await
        .map_err(db)?;
    tracing::info!(subscription_id = %id, recovered, "Failed deliveries sent again.");
    Ok((StatusCode::ACCEPTED, Json(Recovered { recovered })))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

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
