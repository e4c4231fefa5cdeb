//! Lookups: where an event is, a product with its 20 most recent events and orders, an order
//! with its notifications, and the summary (order count, a sku's inventory, notification
//! status). Each table is read through the module of `shared` that its owner keeps for others
//! (`shared::processor`'s inbox, retries, dead letters, products and orders;
//! `shared::notifier`'s deliveries; `shared::gateway`'s idempotency records), so a change of
//! layout is made in one place.

use std::collections::HashMap;

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    routing::get,
};
use redis::aio::ConnectionManager;
use serde_json::{Value, json};
use shared::{
    api::{ApiError, db, found, only_params, pool},
    connect::postgres::Database,
    contract::{DownstreamId, EventKey, EventType, IngestKind},
    model::{EventId, OrderId, Owner, ProductId},
    processor::orders,
    processor::products,
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

/// How many recent events and orders a product's lookup shows.
const RECENT: i64 = 20;

pub(crate) fn routes() -> Router<Lookups> {
    Router::new()
        .route("/api/v1/events/{id}", get(event))
        .route("/api/v1/products/{id}", get(product))
        .route("/api/v1/orders/{id}", get(order))
        .route("/api/v1/summary", get(summary))
}

/// Each subscriber's delivery of every downstream event the event `source` of one of `kinds`,
/// in the space of one of `owners`, may have caused.
async fn notifications(
    pool: &PgPool,
    kinds: &[IngestKind],
    owners: &[Owner],
    source: &str,
) -> Result<Value, ApiError> {
    let Ok(source) = source.parse::<EventId>() else {
        return Ok(json!([]));
    };
    let mut ids = Vec::new();
    for kind in kinds {
        for owner in owners {
            let key = EventKey {
                kind: *kind,
                owner: owner.clone(),
                id: source.clone(),
            };
            ids.extend(EventType::ALL.iter().map(|t| DownstreamId::of(&key, *t)));
        }
    }
    shared::notifier::deliveries::of_events(pool, &ids)
        .await
        .map_err(db)
}

/// The downstream events an inbox row of the event `id` (as
/// [`shared::processor::inbox::applied`] reads it) says the event caused: each one's id and type.
fn announced(row: &Value, id: &str) -> Vec<Value> {
    let key = (|| {
        Some(EventKey {
            kind: IngestKind::parse(row["kind"].as_str()?)?,
            owner: row["owner"].as_str()?.parse().ok()?,
            id: id.parse().ok()?,
        })
    })();
    let bodies = row["announcements"].as_array().into_iter().flatten();
    bodies
        .filter_map(|body| {
            let body: Value = serde_json::from_str(body.as_str()?).ok()?;
            let kind = EventType::parse(body["type"].as_str()?)?;
            let id = key
                .as_ref()
                .map(|key| DownstreamId::of(key, kind).to_string());
            Some(json!({"id": id, "type": kind.as_str()}))
        })
        .collect()
}

/// Whether the gateway accepted the product update `id` from the key `owner` (from its
/// idempotency record; only events sent with a key have one, and records expire): `None` when
/// Redis cannot say.
async fn accepted(lookups: &Lookups, owner: &Owner, id: &str) -> Option<bool> {
    let event = EventKey {
        kind: IngestKind::ProductUpdate,
        owner: owner.clone(),
        id: id.parse().ok()?,
    };
    let mut redis = lookups.redis.clone();
    let state = shared::gateway::idempotency::state(&mut redis, &lookups.namespace, &event)
        .await
        .ok()?;
    Some(state == Some(shared::gateway::idempotency::State::Done))
}

/// The key a lookup is about (`?key=NAME`), if named.
fn named_key(params: &HashMap<String, String>, name: &str) -> Result<Option<Owner>, ApiError> {
    params
        .get(name)
        .map(|key| {
            key.parse::<Owner>()
                .map_err(|e| shared::api::bad(name, format!("{name}: {e}")))
        })
        .transpose()
}

/// Where the event stands, and what that means for its sender.
fn status(
    applied: bool,
    dead: &Value,
    retrying: bool,
    accepted: Option<bool>,
) -> [&'static str; 2] {
    if applied {
        ["applied", "in the inbox: applied exactly once"]
    } else if dead.as_array().is_some_and(|d| !d.is_empty()) {
        [
            "dead_lettered",
            "set aside: see its dead letter; replay it once the cause is fixed",
        ]
    } else if retrying {
        [
            "retrying",
            "failed and waiting on the retry ladder for another attempt",
        ]
    } else if accepted == Some(true) {
        [
            "accepted",
            "accepted by the gateway and on its way: in its shard queue",
        ]
    } else {
        [
            "unknown",
            "no record: not sent with a key, its record expired, or never accepted",
        ]
    }
}

/// Where the event `id` is; `?key=NAME` names the API key that sent it (ids are per key), else
/// every key's event with that id is shown.
async fn event(
    State(lookups): State<Lookups>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    only_params(params.keys(), &["key"])?;
    let named = named_key(&params, "key")?;
    let pool = pool(&lookups.database)?;
    let applied = shared::processor::inbox::applied(pool, &id)
        .await
        .map_err(db)?;
    let mut applied: Vec<Value> = applied.as_array().cloned().unwrap_or_default();
    if let Some(owner) = &named {
        applied.retain(|row| row["owner"] == owner.as_str() || row["owner"] == "");
    }
    let mut owners: Vec<Owner> = applied
        .iter()
        .filter_map(|row| row["owner"].as_str()?.parse().ok())
        .chain(named.clone())
        .collect();
    owners.push(Owner::legacy());
    owners.sort();
    owners.dedup();
    let dead = shared::processor::dead_letters::of_event(pool, &id)
        .await
        .map_err(db)?;
    let downstream: Vec<Value> = applied.iter().flat_map(|row| announced(row, &id)).collect();
    for row in &mut applied {
        if let Some(fields) = row.as_object_mut() {
            fields.remove("announcements");
        }
    }
    let retries = shared::processor::retries::of(pool, &id)
        .await
        .map_err(db)?;
    let notified = notifications(pool, &IngestKind::ALL, &owners, &id).await?;
    // The gateway's record of the key named, else of any key the inbox knows for the id.
    let mut accepted_by = None;
    for owner in &owners {
        match accepted(&lookups, owner, &id).await {
            Some(true) => {
                accepted_by = Some(true);
                break;
            }
            Some(false) => accepted_by = Some(false),
            None => {}
        }
    }
    let accepted = accepted_by;
    let keys: Vec<&Value> = applied.iter().map(|row| &row["owner"]).collect();
    let [status, explanation] = status(!applied.is_empty(), &dead, retries.is_some(), accepted);
    Ok(Json(json!({
        "event_id": id,
        "status": status,
        "explanation": explanation,
        "accepted": accepted,
        "applied": applied.first(),
        "applied_by": keys,
        "retries": retries,
        "dead_letters": dead,
        "downstream": downstream,
        "notifications": notified,
    })))
}

async fn product(
    State(lookups): State<Lookups>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    const MISSING: &str = "no product with this id";
    let product_id: ProductId = id.parse().map_err(|_| ApiError::NotFound(MISSING.into()))?;
    let pool = pool(&lookups.database)?;
    let state = found(products::load(pool, &product_id).await, MISSING)?;
    let events = shared::processor::inbox::recent(pool, &id, RECENT)
        .await
        .map_err(db)?;
    let orders = orders::recent(pool, &id, RECENT).await.map_err(db)?;
    Ok(Json(
        json!({ "product": state, "recent_events": events, "recent_orders": orders }),
    ))
}

/// The decided order `id`; `?placed_by=NAME` names the key that placed it, needed when several
/// keys placed an order with that id.
async fn order(
    State(lookups): State<Lookups>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    const MISSING: &str =
        "no decided order with this id (a pending one is at the gateway's GET /orders/{id})";
    only_params(params.keys(), &["placed_by"])?;
    let named = named_key(&params, "placed_by")?;
    let order_id: OrderId = id.parse().map_err(|_| ApiError::NotFound(MISSING.into()))?;
    let pool = pool(&lookups.database)?;
    let state = match &named {
        Some(owner) => found(orders::load(pool, owner, &order_id).await, MISSING)?,
        None => {
            let mut all = orders::with_id(pool, &order_id, 2).await.map_err(db)?;
            match (all.pop(), all.is_empty()) {
                (Some(order), true) => order,
                (Some(_), false) => {
                    return Err(ApiError::Conflict(
                        "several keys placed an order with this id: name one with ?placed_by=NAME"
                            .into(),
                    ));
                }
                (None, _) => return Err(ApiError::NotFound(MISSING.into())),
            }
        }
    };
    let owner = Owner::of_key(&state.placed_by);
    let source = format!("order:{id}");
    let notified = notifications(pool, &[IngestKind::OrderCreate], &[owner], &source).await?;
    Ok(Json(json!({ "order": state, "notifications": notified })))
}

async fn summary(
    State(lookups): State<Lookups>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    only_params(params.keys(), &["sku"])?;
    let pool = pool(&lookups.database)?;
    let orders = orders::counts(pool).await.map_err(db)?;
    let products = products::count(pool).await.map_err(db)?;
    let deliveries = shared::notifier::deliveries::counts(pool)
        .await
        .map_err(db)?;
    let dead_letters: i64 = shared::processor::dead_letters::by_reason(pool)
        .await
        .map_err(db)?
        .iter()
        .map(|(_, n)| n)
        .sum();
    let mut summary = json!({
        "orders": orders,
        "products": products,
        "notifications": deliveries
            .into_iter()
            .map(|(status, n)| (status.as_str().to_owned(), json!(n)))
            .collect::<serde_json::Map<_, _>>(),
        "dead_letters": dead_letters,
    });
    if let Some(sku) = params.get("sku") {
        summary["inventory"] = match sku.parse::<ProductId>() {
            Ok(id) => {
                let view = products::load(pool, &id).await.map_err(db)?;
                view.map_or(Value::Null, |view| {
                    let mut inventory = json!(view);
                    if let Some(fields) = inventory.as_object_mut() {
                        let id = fields.remove("product_id").unwrap_or_default();
                        fields.insert("sku".into(), id);
                    }
                    inventory
                })
            }
            Err(_) => Value::Null,
        };
    }
    Ok(Json(summary))
}
