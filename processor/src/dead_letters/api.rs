//! The operator's HTTP API over dead letters, served on `PROCESSOR_ADDR`:
//!
//! - `GET /dead-letters?reason=&product_id=&since=&until=&limit=&cursor=`: a page, oldest first.
//! - `GET /dead-letters/{id}`: one, with its payload.
//! - `POST /dead-letters/replay` `{"ids": [...]}` or `{"all": true, <filters>}`, with
//!   `"dry_run": true` to see what would happen (counted in PostgreSQL, the first 100 shown):
//!   claims the selection, publishes each back to its shard (confirmed), then removes it; more
//!   than 100 run as a job (`202`, `GET /dead-letters/replays/{id}`). Replay is idempotent: an
//!   event already applied is recognised by the inbox, and a repeated replay finds the claimed
//!   dead letters taken.
//! - `POST /dead-letters/purge` (same selection) and `DELETE /dead-letters/{id}`: remove.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use lapin::Channel;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::{
    api::{ApiError, JsonBody, bad, db, found, list_page, only_params, time_param},
    connect::{amqp::Broker, postgres::Database},
    dead_letter::Reason,
    topology::Topology,
};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    replay::{self, JobStatus, ReplayJob},
    store::{self, DeadLetter, Selection},
};

const NOT_FOUND: &str = "no dead letter with this id";

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
    /// Where large replays run.
    pub jobs: replay::Jobs,
}

/// The dead-letter routes.
pub fn routes(api: DeadLetterApi) -> Router {
    Router::new()
        .route("/dead-letters", get(list))
        .route("/dead-letters/replay", post(replay))
        .route("/dead-letters/purge", post(purge))
        .route("/dead-letters/replays/{id}", get(progress))
        .route("/dead-letters/{id}", get(show).delete(delete_one))
        .with_state(api)
}

fn pool(api: &DeadLetterApi) -> Result<&sqlx::PgPool, ApiError> {
    shared::api::pool(&api.database)
}

/// `GET /dead-letters`: a page.
#[derive(Serialize, ToSchema)]
pub struct DeadLetterList {
    /// Oldest first.
    items: Vec<DeadLetter>,
    /// Pass as `cursor` for the next page; `null` on the last.
    next_cursor: Option<String>,
}

/// A dead letter with its body (`payload`: the JSON it carried, or its text).
#[derive(Serialize, ToSchema)]
pub struct DeadLetterDetail {
    #[serde(flatten)]
    dead_letter: DeadLetter,
    /// The body.
    #[schema(value_type = Object)]
    payload: Value,
}

/// What became, or would become, of one dead letter in a replay.
#[derive(Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A dry run: it would be replayed.
    WouldReplay,
    /// Published back to where it came from, and removed.
    Replayed,
    /// Not published; it stays a dead letter.
    Failed,
}

/// A dead letter in a replay's results.
#[derive(Serialize, ToSchema)]
pub struct ReplayResult {
    #[serde(flatten)]
    dead_letter: DeadLetter,
    /// Whether the pipeline applied its event before.
    already_applied: bool,
    /// What replaying it does, in words.
    effect: &'static str,
    /// What became of it.
    outcome: Outcome,
}

/// What a replay did, or would do (a dry run counts in PostgreSQL and shows the first 100).
#[derive(Serialize, ToSchema)]
pub struct Replayed {
    /// Whether nothing was done.
    dry_run: bool,
    /// How many were (or would be) replayed.
    count: i64,
    /// Dry run: how many hold an event the pipeline already applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    already_applied: Option<i64>,
    /// Dry run: whether `results` shows only the first 100.
    #[serde(skip_serializing_if = "Option::is_none")]
    truncated: Option<bool>,
    /// Each dead letter with its effect and outcome.
    results: Vec<ReplayResult>,
}

/// A replay of more than 100 dead letters, started as a job.
#[derive(Serialize, ToSchema)]
pub struct ReplayStarted {
    /// Always false.
    dry_run: bool,
    /// Follow it at `GET /dead-letters/replays/{job_id}`.
    job_id: Uuid,
    /// `running`.
    status: JobStatus,
    /// Dead letters it claimed.
    count: usize,
}

/// What a purge removed, or would remove.
#[derive(Serialize, ToSchema)]
pub struct Purged {
    /// Whether nothing was removed.
    dry_run: bool,
    /// How many were (or would be) removed.
    purged: i64,
}

fn result(dead: DeadLetter, already_applied: bool, outcome: Outcome) -> ReplayResult {
    ReplayResult {
        effect: replay::effect(&dead, already_applied),
        dead_letter: dead,
        already_applied,
        outcome,
    }
}

/// Dead letters, oldest first, filtered.
#[utoipa::path(get, path = "/dead-letters", operation_id = "list_dead_letters", tag = "dead letters",
    params(
        ("reason" = Option<String>, Query, description = "Only this reason"),
        ("product_id" = Option<String>, Query, description = "Only this product"),
        ("since" = Option<String>, Query, description = "First failed at or after (RFC 3339)"),
        ("until" = Option<String>, Query, description = "First failed before (RFC 3339)"),
        ("limit" = Option<i64>, Query, description = "1 to 1000, default 100"),
        ("cursor" = Option<String>, Query, description = "The previous page's next_cursor (with the same filters)"),
    ),
    responses((status = 200, description = "A page of dead letters", body = DeadLetterList)))]
pub(crate) async fn list(
    State(api): State<DeadLetterApi>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<DeadLetterList>, ApiError> {
    only_params(
        params.keys(),
        &["reason", "product_id", "since", "until", "limit", "cursor"],
    )?;
    let fetch = async |after: Option<store::ListKey>, limit| {
        let selection = Selection {
            ids: None,
            reason: reason_param(params.get("reason"))?,
            product_id: params.get("product_id").cloned(),
            since: time_param("since", params.get("since"))?,
            until: time_param("until", params.get("until"))?,
        };
        store::list(pool(&api)?, &selection, after.as_ref(), limit)
            .await
            .map_err(db)
    };
    let (items, next_cursor) = list_page(&params, fetch, store::list_key).await?;
    Ok(Json(DeadLetterList { items, next_cursor }))
}

/// One dead letter with its body.
#[utoipa::path(get, path = "/dead-letters/{id}", operation_id = "get_dead_letter", tag = "dead letters",
    params(("id" = String, Path, description = "The dead letter's id")),
    responses((status = 200, description = "The dead letter", body = DeadLetterDetail)))]
pub(crate) async fn show(
    State(api): State<DeadLetterApi>,
    Path(id): Path<String>,
) -> Result<Json<DeadLetterDetail>, ApiError> {
    let dead_letter = found(store::get(pool(&api)?, &id).await, NOT_FOUND)?;
    let payload = serde_json::from_slice(&dead_letter.payload).unwrap_or_else(|_| {
        Value::String(String::from_utf8_lossy(&dead_letter.payload).into_owned())
    });
    Ok(Json(DeadLetterDetail {
        dead_letter,
        payload,
    }))
}

/// Removes one dead letter.
#[utoipa::path(delete, path = "/dead-letters/{id}", operation_id = "delete_dead_letter", tag = "dead letters",
    params(("id" = String, Path, description = "The dead letter's id")),
    responses((status = 204, description = "Removed")))]
pub(crate) async fn delete_one(
    State(api): State<DeadLetterApi>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if store::remove(pool(&api)?, &id).await.map_err(db)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(NOT_FOUND.into()))
    }
}

/// Which dead letters a replay or purge applies to: `ids`, or `all` with optional filters.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SelectionBody {
    /// These dead letters.
    ids: Option<Vec<String>>,
    /// Every dead letter matching the filters.
    #[serde(default)]
    all: bool,
    /// Only this reason.
    reason: Option<String>,
    /// Only this product.
    product_id: Option<String>,
    /// Only those that first failed at or after this time (RFC 3339).
    since: Option<String>,
    /// Only those that first failed before this time (RFC 3339).
    until: Option<String>,
    /// Say what would happen, change nothing.
    #[serde(default)]
    dry_run: bool,
}

fn selection(body: SelectionBody) -> Result<(Selection, bool), ApiError> {
    if body.ids.is_none() && !body.all {
        return Err(bad(
            "ids",
            "name the dead letters in `ids`, or send `\"all\": true` (with optional filters)",
        ));
    }
    Ok((
        Selection {
            ids: body.ids,
            reason: reason_param(body.reason.as_ref())?,
            product_id: body.product_id,
            since: time_param("since", body.since.as_ref())?,
            until: time_param("until", body.until.as_ref())?,
        },
        body.dry_run,
    ))
}

/// Replays the selected dead letters to where they came from (or, with `dry_run`, says what
/// would happen); more than 100 run as a job.
#[utoipa::path(post, path = "/dead-letters/replay", operation_id = "replay_dead_letters", tag = "dead letters",
    request_body(content = SelectionBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Replayed (or what would be)", body = Replayed),
        (status = 202, description = "Started as a job", body = ReplayStarted,
            headers(("Location" = String, description = "The job's progress"))),
    ))]
pub(crate) async fn replay(
    State(api): State<DeadLetterApi>,
    JsonBody(body): JsonBody<SelectionBody>,
) -> Result<Response, ApiError> {
    let (selection, dry_run) = selection(body)?;
    let pool = pool(&api)?;
    if dry_run {
        return Ok(Json(preview(pool, &selection).await?).into_response());
    }
    let session = api
        .broker
        .session()
        .ok_or_else(|| ApiError::unavailable("rabbitmq", "not connected"))?;
    let channel = &session.value.0;
    let job = Uuid::now_v7();
    let claimed = store::claim(pool, &selection, job, MAX_REPLAY, replay::HOLD)
        .await
        .map_err(db)?;
    if claimed.len() > replay::INLINE {
        api.jobs
            .start(
                pool.clone(),
                channel.clone(),
                Arc::clone(&api.topology),
                job,
                claimed.len(),
            )
            .await
            .map_err(db)?;
        let location = format!("/dead-letters/replays/{job}");
        return Ok((
            StatusCode::ACCEPTED,
            [(header::LOCATION, location)],
            Json(ReplayStarted {
                dry_run: false,
                job_id: job,
                status: JobStatus::Running,
                count: claimed.len(),
            }),
        )
            .into_response());
    }
    let rows = store::held_by(pool, job, MAX_REPLAY).await.map_err(db)?;
    let applied = store::already_applied(pool, &claimed).await.map_err(db)?;
    let mut results = Vec::with_capacity(rows.len());
    for dead in rows {
        let replayed = replay::one(pool, channel, &api.topology, job, &dead)
            .await
            .map_err(db)?;
        let outcome = if replayed {
            Outcome::Replayed
        } else {
            Outcome::Failed
        };
        let already_applied = applied.contains(&dead.id);
        results.push(result(dead, already_applied, outcome));
    }
    Ok(Json(Replayed {
        dry_run: false,
        count: i64::try_from(results.len()).unwrap_or(i64::MAX),
        already_applied: None,
        truncated: None,
        results,
    })
    .into_response())
}

/// What a replay of `selection` would do: the count (in PostgreSQL) and the first
/// [`replay::INLINE`] with their effect.
async fn preview(pool: &sqlx::PgPool, selection: &Selection) -> Result<Replayed, ApiError> {
    let (count, applied_count) = store::count(pool, selection).await.map_err(db)?;
    let rows = store::list(pool, selection, None, replay::INLINE as i64)
        .await
        .map_err(db)?;
    let ids: Vec<String> = rows.iter().map(|d| d.id.clone()).collect();
    let applied = store::already_applied(pool, &ids).await.map_err(db)?;
    let results: Vec<ReplayResult> = rows
        .into_iter()
        .map(|dead| {
            let already_applied = applied.contains(&dead.id);
            result(dead, already_applied, Outcome::WouldReplay)
        })
        .collect();
    Ok(Replayed {
        dry_run: true,
        count,
        already_applied: Some(applied_count),
        truncated: Some(i64::try_from(results.len()).unwrap_or(i64::MAX) < count),
        results,
    })
}

/// A replay job's progress.
#[utoipa::path(get, path = "/dead-letters/replays/{id}", operation_id = "get_replay", tag = "dead letters",
    params(("id" = String, Path, description = "The job's id (a UUID)")),
    responses((status = 200, description = "The job", body = ReplayJob)))]
pub(crate) async fn progress(
    State(api): State<DeadLetterApi>,
    Path(id): Path<String>,
) -> Result<Json<ReplayJob>, ApiError> {
    let job: Uuid = id
        .parse()
        .map_err(|_| bad("id", "a replay job id is a UUID"))?;
    let progress = replay::progress(pool(&api)?, job).await;
    found(progress, "no replay job with this id").map(Json)
}

/// Removes the selected dead letters for good (or, with `dry_run`, counts them).
#[utoipa::path(post, path = "/dead-letters/purge", operation_id = "purge_dead_letters", tag = "dead letters",
    request_body(content = SelectionBody, content_type = "application/json"),
    responses((status = 200, description = "Removed (or would be)", body = Purged)))]
pub(crate) async fn purge(
    State(api): State<DeadLetterApi>,
    JsonBody(body): JsonBody<SelectionBody>,
) -> Result<Json<Purged>, ApiError> {
    let (selection, dry_run) = selection(body)?;
    let pool = pool(&api)?;
    let count = if dry_run {
        store::count(pool, &selection).await.map_err(db)?.0
    } else {
        i64::try_from(store::purge(pool, &selection).await.map_err(db)?).unwrap_or(i64::MAX)
    };
    Ok(Json(Purged {
        dry_run,
        purged: count,
    }))
}

/// A `reason` filter: one of the dead-letter reasons.
fn reason_param(value: Option<&String>) -> Result<Option<Reason>, ApiError> {
    value
        .map(|name| {
            Reason::parse(name).ok_or_else(|| {
                bad(
                    "reason",
                    format!("reason must be one of {}", Reason::names()),
                )
            })
        })
        .transpose()
}
