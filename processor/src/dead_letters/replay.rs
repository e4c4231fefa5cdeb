//! Replaying dead letters: a replay first claims what it selected (so a second replay, a
//! repeated click, finds nothing left to publish), then publishes each back to the queue it came
//! from (a shard's to its shard, the notifier's to the notifier) with a confirm and removes it. Up to [`INLINE`] are replayed within the request; more run
//! as a job ([`Jobs`]) whose progress `GET /dead-letters/replays/{id}` shows. A claim lapses
//! after [`HOLD`], so a replay cut short by a crash leaves its dead letters replayable again;
//! one stopped by shutdown gives them back at once.

use std::time::Duration;

use lapin::{
    BasicProperties, Channel,
    types::{AMQPValue, FieldTable, LongString},
};
use serde::Serialize;
use shared::{
    connect::amqp::{Routing, send},
    topology::Topology,
};
use shared::{dead_letter::Reason, service::Tasks};
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;
use uuid::Uuid;

use super::store::{self, DeadLetter};

/// Header marking a replayed message with the dead letter it came from.
pub const REPLAYED_FROM: &str = "x-pipeline-replayed-from";
/// Most dead letters replayed within the request; a larger replay runs as a job.
pub const INLINE: usize = 100;
/// How long a replay holds the dead letters it claimed.
pub const HOLD: Duration = Duration::from_secs(600);
/// Dead letters a job reads at a time.
const CHUNK: i64 = 100;

/// What replaying a dead letter would do, in words.
pub fn effect(dead: &DeadLetter, already_applied: bool) -> &'static str {
    if already_applied {
        "not applied again (the event was applied before); its downstream events are published again"
    } else if dead.reason == Reason::Unparseable {
        "none: it will be dead-lettered again unless the pipeline now understands it"
    } else {
        "the event goes back to its shard and is applied if it now succeeds"
    }
}

/// Publishes one dead letter back to its shard (confirmed), then removes it; on failure gives
/// it back to the selection. True when replayed.
pub async fn one(
    pool: &PgPool,
    channel: &Channel,
    topology: &Topology,
    job: Uuid,
    dead: &DeadLetter,
) -> Result<bool, sqlx::Error> {
    match republish(channel, topology, dead).await {
        Ok(()) => {
            store::remove(pool, &dead.id).await?;
            metrics::counter!(shared::metric::DEAD_LETTERS_REPLAYED_TOTAL).increment(1);
            Ok(true)
        }
        Err(e) => {
            tracing::warn!(dead_letter = %dead.id, error = %e, "Replay failed; the dead letter is kept.");
            store::release(pool, job, Some(&dead.id)).await?;
            Ok(false)
        }
    }
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
    let (exchange, routing_key) = destination(topology, dead);
    send(
        channel,
        &exchange,
        &routing_key,
        &dead.payload,
        properties,
        Routing::Required,
    )
    .await?
    .confirmed()
    .await
}

/// Where a dead letter goes back to: a shard's through the ingest exchange with its routing key
/// (so the shard count in force decides), a downstream event's (its queue named `outbox`: the
/// processor's kept announcements) to the events exchange, any other
/// queue's (the notifier's) straight to that queue.
fn destination(topology: &Topology, dead: &DeadLetter) -> (String, String) {
    let shards = format!("{}.", topology.ingest_exchange());
    match dead.source_queue.as_deref() {
        Some("outbox") => (topology.events_exchange(), dead.routing_key.clone()),
        Some(queue) if !queue.starts_with(&shards) => (String::new(), queue.to_owned()),
        _ => (topology.ingest_exchange(), dead.routing_key.clone()),
    }
}

/// Where replay jobs run: tracked, and stopped (giving back what they hold) on shutdown.
#[derive(Clone)]
pub struct Jobs {
    /// The jobs' tasks.
    pub tasks: Tasks,
}

impl Jobs {
    /// Starts replaying what `job` holds (`claimed` dead letters) in the background.
    pub async fn start(
        &self,
        pool: PgPool,
        channel: Channel,
        topology: std::sync::Arc<Topology>,
        job: Uuid,
        claimed: usize,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO replay_jobs (id, claimed) VALUES ($1, $2)")
            .bind(job)
            .bind(i32::try_from(claimed).unwrap_or(i32::MAX))
            .execute(&pool)
            .await?;
        let shutdown = self.tasks.stopping();
        self.tasks.spawn(async move {
            if let Err(e) = run(&pool, &channel, &topology, job, &shutdown).await {
                tracing::warn!(job = %job, error = %e, "Replay job stopped; its dead letters become replayable again.");
            }
        });
        Ok(())
    }
}

async fn run(
    pool: &PgPool,
    channel: &Channel,
    topology: &Topology,
    job: Uuid,
    shutdown: &CancellationToken,
) -> Result<(), sqlx::Error> {
    tracing::info!(job = %job, "Replay job started.");
    loop {
        let chunk = store::held_by(pool, job, CHUNK).await?;
        if chunk.is_empty() || shutdown.is_cancelled() {
            break;
        }
        let (mut replayed, mut failed) = (0, 0);
        for dead in &chunk {
            if one(pool, channel, topology, job, dead).await? {
                replayed += 1;
            } else {
                failed += 1;
            }
        }
        sqlx::query(
            "UPDATE replay_jobs SET replayed = replayed + $2, failed = failed + $3 WHERE id = $1",
        )
        .bind(job)
        .bind(replayed)
        .bind(failed)
        .execute(pool)
        .await?;
    }
    store::release(pool, job, None).await?;
    sqlx::query("UPDATE replay_jobs SET finished_at = now() WHERE id = $1")
        .bind(job)
        .execute(pool)
        .await?;
    tracing::info!(job = %job, "Replay job finished.");
    Ok(())
}

/// Where a replay job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Still replaying.
    Running,
    /// Done: every dead letter it claimed was replayed or failed.
    Finished,
    /// Its process stopped; what it had not replayed is replayable again.
    Abandoned,
}

/// A replay job's progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayJob {
    /// Its id.
    pub job_id: Uuid,
    /// Where it stands.
    pub status: JobStatus,
    /// Dead letters it claimed.
    pub claimed: i32,
    /// Replayed so far.
    pub replayed: i32,
    /// Failed so far (kept as dead letters).
    pub failed: i32,
    /// Still held.
    pub remaining: i64,
    /// When it started.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// When it finished.
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
}

/// The progress of the replay job `job`, if there is one.
pub async fn progress(pool: &PgPool, job: Uuid) -> Result<Option<ReplayJob>, sqlx::Error> {
    type Row = (i32, i32, i32, OffsetDateTime, Option<OffsetDateTime>, i64);
    let row: Option<Row> = sqlx::query_as(
        "SELECT claimed, replayed, failed, started_at, finished_at,
                (SELECT count(*) FROM dead_letters WHERE replay_job = $1
                   AND replay_claimed_until > now())
         FROM replay_jobs WHERE id = $1",
    )
    .bind(job)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(
        |(claimed, replayed, failed, started_at, finished_at, remaining)| {
            let status = match (finished_at, remaining) {
                (Some(_), _) => JobStatus::Finished,
                (None, 0) if replayed + failed < claimed => JobStatus::Abandoned,
                (None, _) => JobStatus::Running,
            };
            ReplayJob {
                job_id: job,
                status,
                claimed,
                replayed,
                failed,
                remaining,
                started_at,
                finished_at,
            }
        },
    ))
}
