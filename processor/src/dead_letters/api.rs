//! The operator's HTTP API over dead letters, served on `PROCESSOR_ADDR`:
//!
//! - `GET /dead-letters?reason=&product_id=&since=&until=&limit=`: list, oldest first.
//! - `GET /dead-letters/{id}`: one, with its payload.
//! - `POST /dead-letters/replay` `{"ids": [...]}` or `{"all": true, <filters>}`, with
//!   `"dry_run": true` to see what would happen: publishes each back to its shard (confirmed),
//!   then removes it. Replay is idempotent: an event already applied is recognised by the inbox.
//! - `POST /dead-letters/purge` (same selection) and `DELETE /dead-letters/{id}`: remove.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json, Router,
    extract::{Path, Query, State, rejection::JsonRejection},
    http::StatusCode,
    routing::{get, post},
};
use lapin::{
    BasicProperties, Channel,
    types::{AMQPValue, FieldTable, LongString},
};
use serde::Deserialize;
use serde_json::{Value, json};
use shared::{
    api::{ApiError, bad, bad_body, db, limit_param, only_params, time_param},
    connect::{
        amqp::{Broker, publish_confirmed},
        postgres::Database,
    },
    topology::Topology,
};
use time::format_description::well_known::Rfc3339;

use super::store::{self, DeadLetter, Selection};

const NOT_FOUND: &str = "no dead letter with this id";

/// Header marking a replayed message with the dead letter it came from.
pub const REPLAYED_FROM: &str = "x-pipeline-replayed-from";
/// Most dead letters one list call returns.
pub const MAX_LIST: i64 = 1000;
/// Most dead letters one replay call handles.
pub const MAX_REPLAY: i64 = 10_000;

/// The live broker state the API needs: a channel in confirm mode for replays.
pub struct ReplayChannel(pub Channel);

/// What the dead-letter handlers share.
#[derive(Clone)]
pub struct DeadLetterApi {
    /// The dead-letter table and the inbox.
    pub database: Database,
    /// The broker, for replays.
    pub broker: Broker<ReplayChannel>,
    /// Exchange names.
    pub topology: Arc<Topology>,
}

/// The dead-letter routes.
pub fn routes(api: DeadLetterApi) -> Router {
    Router::new()
        .route("/dead-letters", get(list))
        .route("/dead-letters/replay", post(replay))
        .route("/dead-letters/purge", post(purge))
        .route("/dead-letters/{id}", get(show).delete(delete_one))
        .with_state(api)
}

fn pool(api: &DeadLetterApi) -> Result<&sqlx::PgPool, ApiError> {
    shared::api::pool(&api.database)
}

fn summary(dead: &DeadLetter) -> Value {
    json!({
        "id": dead.id,
        "event_id": dead.event_id,
        "product_id": dead.product_id,
        "reason": dead.reason,
        "error": dead.error,
        "attempts": dead.attempts,
        "service": dead.service,
        "routing_key": dead.routing_key,
        "message_type": dead.message_type,
        "first_failed_at": dead.first_failed_at.format(&Rfc3339).ok(),
        "dead_lettered_at": dead.dead_lettered_at.format(&Rfc3339).ok(),
        "trace_id": dead.trace_id,
    })
}

async fn list(
    State(api): State<DeadLetterApi>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    only_params(
        params.keys(),
        &["reason", "product_id", "since", "until", "limit"],
    )?;
    let limit = limit_param(params.get("limit"), 100, MAX_LIST)?;
    let selection = Selection {
        ids: None,
        reason: params.get("reason").cloned(),
        product_id: params.get("product_id").cloned(),
        since: time_param("since", params.get("since"))?,
        until: time_param("until", params.get("until"))?,
    };
    let rows = store::list(pool(&api)?, &selection, limit)
        .await
        .map_err(db)?;
    let items: Vec<Value> = rows.iter().map(summary).collect();
    Ok(Json(json!({ "count": items.len(), "dead_letters": items })))
}

async fn show(
    State(api): State<DeadLetterApi>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let dead = store::get(pool(&api)?, &id)
        .await
        .map_err(db)?
        .ok_or(ApiError::NotFound(NOT_FOUND))?;
    let mut body = summary(&dead);
    body["payload"] = serde_json::from_slice(&dead.payload)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&dead.payload).into_owned()));
    Ok(Json(body))
}

async fn delete_one(
    State(api): State<DeadLetterApi>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if store::remove(pool(&api)?, &id).await.map_err(db)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(NOT_FOUND))
    }
}

/// Which dead letters a replay or purge applies to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectionBody {
    ids: Option<Vec<String>>,
    #[serde(default)]
    all: bool,
    reason: Option<String>,
    product_id: Option<String>,
    since: Option<String>,
    until: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

fn selection(
    body: Result<Json<SelectionBody>, JsonRejection>,
) -> Result<(Selection, bool), ApiError> {
    let Json(body) = body.map_err(|e| bad_body(&e))?;
    if body.ids.is_none() && !body.all {
        return Err(bad(
            "ids",
            "name the dead letters in `ids`, or send `\"all\": true` (with optional filters)",
        ));
    }
    Ok((
        Selection {
            ids: body.ids,
            reason: body.reason,
            product_id: body.product_id,
            since: time_param("since", body.since.as_ref())?,
            until: time_param("until", body.until.as_ref())?,
        },
        body.dry_run,
    ))
}

async fn replay(
    State(api): State<DeadLetterApi>,
    body: Result<Json<SelectionBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let (selection, dry_run) = selection(body)?;
    let pool = pool(&api)?;
    let rows = store::list(pool, &selection, MAX_REPLAY)
        .await
        .map_err(db)?;
    let event_ids: Vec<String> = rows.iter().filter_map(|d| d.event_id.clone()).collect();
    let applied = store::already_applied(pool, &event_ids).await.map_err(db)?;
    let session = if dry_run {
        None
    } else {
        Some(
            api.broker
                .session()
                .ok_or_else(|| ApiError::Unavailable("rabbitmq", "not connected".into()))?,
        )
    };
    let mut results = Vec::with_capacity(rows.len());
    for dead in &rows {
        let already_applied = dead.event_id.as_ref().is_some_and(|e| applied.contains(e));
        let mut item = summary(dead);
        item["already_applied"] = json!(already_applied);
        item["effect"] = json!(if already_applied {
            "none: the event was applied before; the pipeline will recognise it"
        } else if dead.reason == "unparseable" {
            "none: it will be dead-lettered again unless the pipeline now understands it"
        } else {
            "the event goes back to its shard and is applied if it now succeeds"
        });
        item["outcome"] = match &session {
            None => json!("would_replay"),
            Some(session) => match republish(&session.value.0, &api.topology, dead).await {
                Ok(()) => {
                    store::remove(pool, &dead.id).await.map_err(db)?;
                    metrics::counter!("pipeline_dead_letters_replayed_total").increment(1);
                    json!("replayed")
                }
                Err(e) => {
                    tracing::warn!(dead_letter = %dead.id, error = %e, "Replay failed; the dead letter is kept.");
                    json!("failed")
                }
            },
        };
        results.push(item);
    }
    Ok(Json(
        json!({ "dry_run": dry_run, "count": results.len(), "results": results }),
    ))
}

async fn purge(
    State(api): State<DeadLetterApi>,
    body: Result<Json<SelectionBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let (selection, dry_run) = selection(body)?;
    let pool = pool(&api)?;
    let count = if dry_run {
        store::list(pool, &selection, i64::MAX)
            .await
            .map_err(db)?
            .len() as u64
    } else {
        store::purge(pool, &selection).await.map_err(db)?
    };
    Ok(Json(json!({ "dry_run": dry_run, "purged": count })))
}

/// Publishes a dead letter's message back to its shard and waits for the confirm.
async fn republish(
    channel: &Channel,
    topology: &Topology,
    dead: &DeadLetter,
) -> anyhow::Result<()> {
    let mut headers = FieldTable::default();
    headers.insert(
        REPLAYED_FROM.into(),
        AMQPValue::LongString(LongString::from(dead.id.as_str())),
    );
    let mut properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_headers(headers);
    if let Some(kind) = &dead.message_type {
        properties = properties.with_type(kind.as_str().into());
    }
    if let Some(event) = dead.event_id.as_ref().filter(|e| e.len() <= 255) {
        properties = properties.with_message_id(event.as_str().into());
    }
    publish_confirmed(
        channel,
        &topology.ingest_exchange(),
        &dead.routing_key,
        &dead.payload,
        properties,
    )
    .await
}
