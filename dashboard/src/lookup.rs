//! Lookups over PostgreSQL (and the gateway's idempotency records in Redis): where an event is,
//! a product with its 20 most recent events and orders, an order with its notifications, and
//! the summary (order count, a sku's inventory, notification status).

use std::collections::HashMap;

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    routing::get,
};
use redis::aio::ConnectionManager;
use serde_json::{Value, json};
use shared::{
    api::{ApiError, db, only_params, pool},
    connect::postgres::Database,
    contract::{DOWNSTREAM_TYPES, idempotency_key},
    topology::Namespace,
};
use sqlx::PgPool;

/// What the lookups read: PostgreSQL, and Redis for the gateway's idempotency records.
#[derive(Clone)]
pub struct Lookups {
    /// The pipeline's tables.
    pub database: Database,
    /// The gateway's Redis.
    pub redis: ConnectionManager,
    /// The namespace of the Redis keys.
    pub namespace: Namespace,
}

pub(crate) fn routes() -> Router<Lookups> {
    Router::new()
        .route("/api/v1/events/{id}", get(event))
        .route("/api/v1/products/{id}", get(product))
        .route("/api/v1/orders/{id}", get(order))
        .route("/api/v1/summary", get(summary))
}

/// Rows of `query` (bound to `id`) as a JSON array, built by PostgreSQL.
async fn rows(pool: &PgPool, query: &'static str, id: &str) -> Result<Value, ApiError> {
    sqlx::query_scalar::<_, Value>(query)
        .bind(id)
        .fetch_one(pool)
        .await
        .map_err(db)
}

/// The row of `query` (bound to `id`) as a JSON object, if there is one.
async fn row(pool: &PgPool, query: &'static str, id: &str) -> Result<Option<Value>, ApiError> {
    sqlx::query_scalar::<_, Value>(query)
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(db)
}

/// Each subscriber's delivery of the downstream events with these ids.
async fn notifications(pool: &PgPool, ids: &[String]) -> Result<Value, ApiError> {
    sqlx::query_scalar(
        "SELECT coalesce(json_agg(t ORDER BY t.event_id, t.delivery_id), '[]') FROM (
             SELECT n.event_id, n.event_type, n.received_at, d.id AS delivery_id,
                    d.subscription_id, s.url, d.status, d.attempts, d.sent_at, d.failed_at,
                    d.last_error
             FROM notifications n
             LEFT JOIN deliveries d ON d.event_id = n.event_id
             LEFT JOIN subscriptions s ON s.id = d.subscription_id
             WHERE n.event_id = ANY ($1)) t",
    )
    .bind(ids)
    .fetch_one(pool)
    .await
    .map_err(db)
}

fn downstream_ids(source: &str) -> Vec<String> {
    DOWNSTREAM_TYPES
        .iter()
        .map(|t| format!("{source}:{t}"))
        .collect()
}

/// Whether the gateway accepted `id` (from its idempotency record; only events sent with a key
/// have one, and records expire): `None` when Redis cannot say.
async fn accepted(lookups: &Lookups, id: &str) -> Option<bool> {
    let mut redis = lookups.redis.clone();
    let state: Option<String> = redis::cmd("HGET")
        .arg(idempotency_key(&lookups.namespace, id))
        .arg("state")
        .query_async(&mut redis)
        .await
        .ok()?;
    state.map(|s| s == "done")
}

async fn event(
    State(lookups): State<Lookups>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let pool = pool(&lookups.database)?;
    let applied = row(
        pool,
        "SELECT row_to_json(t) FROM (
             SELECT product_id, occurred_at, received_at, processed_at
             FROM processed_events WHERE event_id = $1) t",
        &id,
    )
    .await?;
    let dead = rows(
        pool,
        "SELECT coalesce(json_agg(t ORDER BY t.dead_lettered_at), '[]') FROM (
             SELECT id, reason, error, attempts, service, dead_lettered_at
             FROM dead_letters WHERE event_id = $1) t",
        &id,
    )
    .await?;
    let unpublished = rows(
        pool,
        "SELECT coalesce(json_agg(event_id), '[]') FROM outbox WHERE source_event_id = $1",
        &id,
    )
    .await?;
    let retries = row(
        pool,
        "SELECT row_to_json(t) FROM (
             SELECT attempts, last_error, retry_at FROM retries WHERE event_id = $1) t",
        &id,
    )
    .await?;
    let notified = notifications(pool, &downstream_ids(&id)).await?;
    let accepted = accepted(&lookups, &id).await;
    let is_empty = |v: &Value| v.as_array().is_none_or(Vec::is_empty);
    let status = if applied.is_some() {
        "applied"
    } else if !is_empty(&dead) {
        "dead_lettered"
    } else if retries.is_some() {
        "retrying"
    } else if accepted == Some(true) {
        "accepted"
    } else {
        "unknown"
    };
    Ok(Json(json!({
        "event_id": id,
        "status": status,
        "explanation": match status {
            "applied" => "in the inbox: applied exactly once",
            "dead_lettered" => "set aside: see its dead letter; replay it once the cause is fixed",
            "retrying" => "failed and waiting on the retry ladder for another attempt",
            "accepted" => "accepted by the gateway and on its way: in its shard queue",
            _ => "no record: not sent with a key, its record expired, or never accepted",
        },
        "accepted": accepted,
        "applied": applied,
        "retries": retries,
        "dead_letters": dead,
        "downstream_unpublished": unpublished,
        "notifications": notified,
    })))
}

async fn product(
    State(lookups): State<Lookups>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let pool = pool(&lookups.database)?;
    let state = row(
        pool,
        "SELECT row_to_json(t) FROM (
             SELECT product_id, price, stock, updated_at FROM products WHERE product_id = $1) t",
        &id,
    )
    .await?
    .ok_or(ApiError::NotFound("no product with this id"))?;
    let events = rows(
        pool,
        "SELECT coalesce(json_agg(t), '[]') FROM (
             SELECT event_id, occurred_at, processed_at FROM processed_events
             WHERE product_id = $1 ORDER BY processed_at DESC LIMIT 20) t",
        &id,
    )
    .await?;
    let orders = rows(
        pool,
        "SELECT coalesce(json_agg(t), '[]') FROM (
             SELECT order_id, qty, status, reason, created_at FROM orders
             WHERE sku = $1 ORDER BY created_at DESC LIMIT 20) t",
        &id,
    )
    .await?;
    Ok(Json(json!({
        "product": state,
        "recent_events": events,
        "recent_orders": orders,
    })))
}

async fn order(
    State(lookups): State<Lookups>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let pool = pool(&lookups.database)?;
    let state = row(
        pool,
        "SELECT row_to_json(t) FROM (
             SELECT order_id, sku, qty, email, status, reason, created_at, updated_at
             FROM orders WHERE order_id = $1) t",
        &id,
    )
    .await?
    .ok_or(ApiError::NotFound(
        "no decided order with this id (a pending one is at the gateway's GET /orders/{id})",
    ))?;
    let notified = notifications(pool, &downstream_ids(&format!("order:{id}"))).await?;
    Ok(Json(json!({ "order": state, "notifications": notified })))
}

async fn summary(
    State(lookups): State<Lookups>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    only_params(params.keys(), &["sku"])?;
    let pool = pool(&lookups.database)?;
    let counts: Value = sqlx::query_scalar(
        "SELECT json_build_object(
             'orders', (SELECT json_build_object(
                 'total', count(*),
                 'created', count(*) FILTER (WHERE status = 'created'),
                 'rejected', count(*) FILTER (WHERE status = 'rejected')) FROM orders),
             'products', (SELECT count(*) FROM products),
             'notifications', (SELECT coalesce(json_object_agg(status, n), '{}')
                               FROM (SELECT status, count(*) AS n FROM deliveries GROUP BY status) d),
             'dead_letters', (SELECT count(*) FROM dead_letters))",
    )
    .fetch_one(pool)
    .await
    .map_err(db)?;
    let mut summary = counts;
    if let Some(sku) = params.get("sku") {
        let inventory = row(
            pool,
            "SELECT row_to_json(t) FROM (
                 SELECT product_id AS sku, stock, price, updated_at FROM products
                 WHERE product_id = $1) t",
            sku,
        )
        .await?;
        summary["inventory"] = inventory.unwrap_or(Value::Null);
    }
    Ok(Json(summary))
}
