//! The OpenAPI 3 document of the processor's operator API (dead letters), served at
//! `GET /openapi.json`. Every operation wants an API key with the `ops` scope.

use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

/// A dead letter, as listed.
#[derive(Serialize, ToSchema)]
pub struct DeadLetterSummary {
    /// Its id.
    pub id: String,
    /// The event's id, when known.
    pub event_id: Option<String>,
    /// The product, when the body could be read.
    pub product_id: Option<String>,
    /// `unparseable`, `invalid`, `attempts_exhausted`, `delivery_limit`, `rejected`.
    pub reason: String,
    /// The last error.
    pub error: String,
    /// Delivery attempts made.
    pub attempts: i32,
    /// The service that set it aside.
    pub service: String,
    /// The routing key it had (its shard).
    pub routing_key: String,
    /// The AMQP message type.
    pub message_type: Option<String>,
    /// When it first failed (RFC 3339).
    pub first_failed_at: Option<String>,
    /// When it was set aside (RFC 3339).
    pub dead_lettered_at: Option<String>,
    /// The trace it belongs to.
    pub trace_id: Option<String>,
    /// The queue it was consumed from, where a replay sends it back.
    pub source_queue: Option<String>,
}

/// `GET /dead-letters`.
#[derive(Serialize, ToSchema)]
pub struct DeadLetterList {
    /// How many are listed.
    pub count: i64,
    /// Oldest first.
    pub dead_letters: Vec<DeadLetterSummary>,
}

/// A dead letter with its body (`payload`: the JSON it carried, or its text).
#[derive(Serialize, ToSchema)]
pub struct DeadLetterDetail {
    /// Its id.
    pub id: String,
    /// Why it was set aside.
    pub reason: String,
    /// The body.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

/// Which dead letters a replay or purge applies to: `ids`, or `all` with optional filters.
#[derive(Serialize, ToSchema)]
pub struct Selection {
    /// These dead letters.
    pub ids: Option<Vec<String>>,
    /// Every dead letter matching the filters.
    pub all: Option<bool>,
    /// Only this reason.
    pub reason: Option<String>,
    /// Only this product.
    pub product_id: Option<String>,
    /// Only those that first failed at or after this time (RFC 3339).
    pub since: Option<String>,
    /// Only those that first failed before this time (RFC 3339).
    pub until: Option<String>,
    /// Say what would happen, change nothing.
    pub dry_run: Option<bool>,
}

/// What a replay did, or would do (a dry run counts in PostgreSQL and shows the first 100).
#[derive(Serialize, ToSchema)]
pub struct Replayed {
    /// Whether nothing was done.
    pub dry_run: bool,
    /// How many were (or would be) replayed.
    pub count: i64,
    /// Dry run: how many hold an event the pipeline already applied.
    pub already_applied: Option<i64>,
    /// Dry run: whether `results` shows only the first 100.
    pub truncated: Option<bool>,
    /// Each dead letter with its effect and outcome (`would_replay`, `replayed`, `failed`).
    #[schema(value_type = Vec<Object>)]
    pub results: Vec<serde_json::Value>,
}

/// A replay of more than 100 dead letters, started as a job.
#[derive(Serialize, ToSchema)]
pub struct ReplayStarted {
    /// Always false.
    pub dry_run: bool,
    /// Follow it at `GET /dead-letters/replays/{job_id}`.
    pub job_id: String,
    /// `running`.
    pub status: String,
    /// Dead letters it claimed.
    pub count: i64,
}

/// A replay job's progress.
#[derive(Serialize, ToSchema)]
pub struct ReplayJob {
    /// Its id.
    pub job_id: String,
    /// `running`, `finished`, or `abandoned` (its process stopped; the rest are replayable).
    pub status: String,
    /// Dead letters it claimed.
    pub claimed: i64,
    /// Replayed so far.
    pub replayed: i64,
    /// Failed so far (kept as dead letters).
    pub failed: i64,
    /// Still held.
    pub remaining: i64,
    /// When it started (RFC 3339).
    pub started_at: Option<String>,
    /// When it finished (RFC 3339).
    pub finished_at: Option<String>,
}

/// What a purge removed, or would remove.
#[derive(Serialize, ToSchema)]
pub struct Purged {
    /// Whether nothing was removed.
    pub dry_run: bool,
    /// How many were (or would be) removed.
    pub purged: i64,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Product event pipeline: processor",
        description = "Dead letters: list, inspect, replay and purge them. Every operation wants an API key with the ops scope."
    ),
    paths(
        crate::dead_letters::api::list,
        crate::dead_letters::api::show,
        crate::dead_letters::api::delete_one,
        crate::dead_letters::api::replay,
        crate::dead_letters::api::progress,
        crate::dead_letters::api::purge
    ),
    components(schemas(
        DeadLetterSummary,
        DeadLetterList,
        DeadLetterDetail,
        Selection,
        Replayed,
        ReplayStarted,
        ReplayJob,
        Purged
    ))
)]
struct ApiDoc;

/// The document, with the security scheme and the answers every service shares.
pub fn document() -> utoipa::openapi::OpenApi {
    shared::openapi::finish(ApiDoc::openapi())
}
