//! Taking image jobs off `{ns}.images`, several at once (`IMAGE_PREFETCH`, each in a task of its
//! own, so a slow source holds one slot, not the queue): fetch the bytes (the stored upload, or
//! the source URL through the private-network guard), make the variants (on a blocking thread),
//! store them, then, in one transaction, mark the image ready and add it to the product's entry;
//! refresh the product's cache; announce `product.images_ready`; only then acknowledge. Each
//! attempt has a deadline (`IMAGE_JOB_TIMEOUT_SECS`).
//!
//! What follows a failed attempt is [`decide::next_step`]'s: an outage is held in place; an
//! attempt that might work next time parks the job on a retry rung (off the queue's head) and
//! acknowledges it, up to [`Config::max_attempts`] attempts in all; what never will, and what
//! exhausted its attempts, fails the image, removes its stored bytes and dead-letters the job.
//! A replay from the dashboard brings the job back and it starts over.
//!
//! A statement on the image's record that PostgreSQL refuses (not an outage, which is held)
//! fails the image and dead-letters the job as `invalid`, so the queue moves on.
//!
//! A redelivered job whose image is ready already refreshes the cache and announces again
//! (the same event id, which the notifier takes once), then is acknowledged.

use std::{panic::AssertUnwindSafe, sync::Arc, time::Duration};

use futures_util::FutureExt;
use lapin::Channel;
use shared::{
    announce::send_announcement,
    connect::{
        amqp::{Routing, send},
        postgres::{Database, Fault},
    },
    consume::{Consuming, DeliveryHandler, Received, hold, settle},
    contract::{Announcement, DownstreamEvent, DownstreamId, ImageJob, ImageSource, ImagesReady},
    dead_letter::{self, Reason},
    egress::Egress,
    gateway::catalog::{Cache, Cached, StoredVariant, Variants},
    gateway::images::{self, Status},
    model::EventId,
    objects::{Objects, is_outage},
    service::Tasks,
    topology::Topology,
    trace::{self, Messaging, Operation},
};
use time::OffsetDateTime;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    config::Config,
    decide::{self, Failure, Step},
    variants::{self, Encoded, Format, Limits},
};

/// Largest source a URL may give (as an upload).
pub const MAX_SOURCE_BYTES: usize = 10 * 1024 * 1024;

/// The images queue's handler: each delivery becomes a task of the service's work, so jobs run
/// side by side (as many as the broker pushes: `IMAGE_PREFETCH`), and the drain waits for them.
pub struct Jobs {
    imager: Arc<Imager>,
    tasks: Tasks,
}

impl Jobs {
    /// Jobs of `imager`, run as tasks of `tasks`.
    pub fn new(imager: Imager, tasks: Tasks) -> Self {
        Self {
            imager: Arc::new(imager),
            tasks,
        }
    }
}

impl DeliveryHandler for Jobs {
    async fn on_delivery(&self, delivery: Received, at: Consuming<'_>) -> bool {
        let imager = Arc::clone(&self.imager);
        let (channel, shutdown) = (at.channel.clone(), at.shutdown.clone());
        self.tasks.spawn(async move {
            let job = imager.handle(delivery, &channel, &shutdown);
            if AssertUnwindSafe(job).catch_unwind().await.is_err() {
                // Its delivery is neither settled nor dropped by the broker: closing the channel
                // returns it (and the others in hand) to the queue, and the consumer restarts.
                tracing::error!("An image job panicked; restarting the consumer.");
                let _ = channel.close(500, "an image job panicked".into()).await;
            }
        });
        true
    }
}

/// What an image job needs.
pub struct Imager {
    /// Image records and catalog entries.
    pub database: Database,
    /// Where the bytes go.
    pub objects: Objects,
    /// The catalog's cache.
    pub cache: Cache,
    /// Names, and where dead letters, retries and announcements go.
    pub topology: Arc<Topology>,
    /// Fetches source URLs through the guard.
    pub client: reqwest::Client,
    /// Checks a source URL's address before fetching.
    pub egress: Egress,
    /// Decoding limits.
    pub limits: Limits,
    /// Attempts before a job is dead-lettered.
    pub max_attempts: i32,
    /// The wait after the first failed attempt (doubling after each).
    pub backoff: Duration,
    /// How long one attempt may take in all.
    pub deadline: Duration,
}

impl Imager {
    /// The handler for `config`, on `database` and `cache`.
    pub fn new(
        config: &Config,
        database: Database,
        cache: Cache,
        topology: Arc<Topology>,
    ) -> anyhow::Result<Self> {
        let egress = Egress::new(config.allow_private_networks);
        Ok(Self {
            database,
            objects: config.objects.clone(),
            cache,
            topology,
            client: egress.client().timeout(config.fetch_timeout).build()?,
            egress,
            limits: config.limits,
            max_attempts: config.max_attempts,
            backoff: config.backoff,
            deadline: config.job_timeout,
        })
    }

    /// Handles one delivery to the end (settled, parked, or dead-lettered); false if shutdown
    /// came first (it returns to the queue when the channel closes).
    async fn handle(
        &self,
        delivery: Received,
        channel: &Channel,
        shutdown: &CancellationToken,
    ) -> bool {
        let job: ImageJob = match serde_json::from_slice(&delivery.data) {
            Ok(job) => job,
            Err(e) => {
                let why = format!("not an image job: {e}");
                return self
                    .set_aside(channel, delivery, Reason::Unparseable, &why)
                    .await;
            }
        };
        let queue = self.topology.images_queue();
        let message_id = job.message_id();
        let span = trace::messaging(
            "imager",
            &Messaging {
                operation: Operation::Process,
                exchange: delivery.exchange.as_str(),
                routing_key: delivery.routing_key.as_str(),
                queue: Some(&queue),
                message_id: &message_id,
                event_id: &message_id,
            },
            &trace::extract(&delivery.properties),
        );
        let at = Running {
            job: &job,
            channel,
            span: &span,
            shutdown,
        };
        // Every line logged while the job is handled carries its trace.
        let logged = span.log_span();
        self.run(delivery, at).instrument(logged).await
    }

    /// Takes the job on from its image's record: a job without one is dropped (its upload was
    /// withdrawn), a ready image is announced again, a failed one (replayed) starts over.
    async fn run(&self, delivery: Received, at: Running<'_>) -> bool {
        let job = at.job;
        let found = self
            .record(
                || async { images::find(self.database.ready()?, job.image_id).await },
                at.shutdown,
            )
            .await;
        let record = match found {
            None => return false,
            Some(Ok(record)) => record,
            Some(Err(why)) => {
                return self
                    .set_aside(at.channel, delivery, Reason::Invalid, &why)
                    .await;
            }
        };
        match record.map(|r| r.status) {
            None => {
                tracing::warn!(image_id = %job.image_id, "An image job without a record (its upload was withdrawn); dropped.");
                settle(delivery.pending).await;
                return true;
            }
            Some(Status::Ready) => {
                if !self.finish(at).await {
                    return false;
                }
                settle(delivery.pending).await;
                return true;
            }
            Some(Status::Failed) => {
                // Replayed: it starts over.
                let restarted = self
                    .record(
                        || async { images::restart(self.database.ready()?, job.image_id).await },
                        at.shutdown,
                    )
                    .await;
                match restarted {
                    None => return false,
                    Some(Ok(())) => {}
                    Some(Err(why)) => {
                        return self.give_up(at, delivery, Reason::Invalid, &why).await;
                    }
                }
            }
            Some(Status::Processing) => {}
        }
        self.make(delivery, at).await
    }

    /// Makes the image's variants, records them on the product, refreshes its cache and
    /// announces it, then settles the delivery (or parks or dead-letters the job).
    async fn make(&self, delivery: Received, at: Running<'_>) -> bool {
        let job = at.job;
        let started = Instant::now();
        let Some(variants) = self.variants_or_else(delivery, at).await else {
            return false;
        };
        let Ok(variants) = variants else {
            return true;
        };
        let recorded = self
            .record(
                || async {
                    images::ready(
                        self.database.ready()?,
                        job.image_id,
                        &job.product_id,
                        &variants.made,
                    )
                    .await
                },
                at.shutdown,
            )
            .await;
        match recorded {
            None => return false,
            Some(Ok(_)) => {}
            Some(Err(why)) => {
                at.span.fail(&why);
                return self
                    .give_up(at, variants.delivery, Reason::Invalid, &why)
                    .await;
            }
        }
        metrics::histogram!(shared::metric::IMAGE_PROCESSING_DURATION_SECONDS)
            .record(started.elapsed().as_secs_f64());
        metrics::counter!(shared::metric::IMAGES_PROCESSED_TOTAL, "outcome" => "ready")
            .increment(1);
        if !self.finish(at).await {
            return false;
        }
        tracing::info!(image_id = %job.image_id, product_id = %job.product_id, "Image ready.");
        settle(variants.delivery.pending).await;
        true
    }

    /// Attempts the job until it makes its variants (`Some(Ok)`, with the delivery still to
    /// settle), or what followed a failure settled the delivery (`Some(Err)`: parked on a retry
    /// rung, or dead-lettered); `None` if shutdown came first.
    async fn variants_or_else(
        &self,
        delivery: Received,
        at: Running<'_>,
    ) -> Option<Result<Made, ()>> {
        let Running {
            job,
            span,
            shutdown,
            ..
        } = at;
        let mut outage_wait = Duration::from_millis(100);
        loop {
            let failure = match self.attempt_in_time(job).await {
                Ok(made) => return Some(Ok(Made { made, delivery })),
                Err(failure) => failure,
            };
            let attempts = match &failure {
                Failure::Failed(why) => {
                    let attempted = self
                        .record(
                            || async {
                                images::attempted(self.database.ready()?, job.image_id, why).await
                            },
                            shutdown,
                        )
                        .await?;
                    match attempted {
                        Ok(attempts) => attempts,
                        Err(refused) => {
                            span.fail(&refused);
                            return self
                                .give_up(at, delivery, Reason::Invalid, &refused)
                                .await
                                .then_some(Err(()));
                        }
                    }
                }
                _ => 0,
            };
            match decide::next_step(&failure, attempts, self.max_attempts, self.backoff) {
                Step::Hold => {
                    metrics::counter!(shared::metric::HOLDS_TOTAL).increment(1);
                    tracing::warn!(image_id = %job.image_id, error = ?failure, retry_in = ?outage_wait, "Holding the image job until the dependency is back.");
                    tokio::select! {
                        () = tokio::time::sleep(outage_wait) => {}
                        () = shutdown.cancelled() => return None,
                    }
                    outage_wait = (outage_wait * 2).min(Duration::from_secs(2));
                }
                Step::Retry(wait) => {
                    tracing::warn!(image_id = %job.image_id, attempts, error = ?failure, retry_in = ?wait, "An image attempt failed; parked for a retry.");
                    return self.park(at, delivery, wait).await.then_some(Err(()));
                }
                Step::GiveUp { reason, why } => {
                    span.fail(&why);
                    return self
                        .give_up(at, delivery, reason, &why)
                        .await
                        .then_some(Err(()));
                }
            }
        }
    }

    /// [`Self::attempt`] within the job's deadline.
    async fn attempt_in_time(&self, job: &ImageJob) -> Result<Variants, Failure> {
        tokio::time::timeout(self.deadline, self.attempt(job))
            .await
            .unwrap_or_else(|_| {
                Err(Failure::Failed(format!(
                    "the job took longer than {} s",
                    self.deadline.as_secs()
                )))
            })
    }

    /// Publishes the job to the retry rung that waits `wait` (it comes back to the images queue
    /// then), and acknowledges it once the broker confirmed; false if shutdown came first.
    async fn park(&self, at: Running<'_>, delivery: Received, wait: Duration) -> bool {
        let Running {
            channel, shutdown, ..
        } = at;
        let rung = self.topology.images_retry_exchange(wait);
        let parked = until_done(
            || async {
                send(
                    channel,
                    &rung,
                    "",
                    &delivery.data,
                    delivery.properties.clone(),
                    Routing::Required,
                )
                .await?
                .confirmed()
                .await
            },
            "image retry",
            shutdown,
        )
        .await;
        if !parked {
            return false;
        }
        settle(delivery.pending).await;
        true
    }
}

/// A job in hand, with what every step of it needs: the channel it came on (where it is
/// parked, dead-lettered or announced), its span, and the shutdown signal.
#[derive(Clone, Copy)]
struct Running<'a> {
    job: &'a ImageJob,
    channel: &'a Channel,
    span: &'a trace::Traced,
    shutdown: &'a CancellationToken,
}

/// Why the product's cache was not refreshed: PostgreSQL or Redis away.
#[derive(Debug, thiserror::Error)]
enum Unrefreshed {
    /// The product's entry could not be read.
    #[error("postgresql: {0}")]
    Database(#[from] sqlx::Error),
    /// The cache did not take it.
    #[error(transparent)]
    Cache(#[from] shared::connect::redis::CommandError),
}

/// The variants made, and the delivery to settle once they are recorded and announced.
struct Made {
    made: Variants,
    delivery: Received,
}

impl Imager {
    /// One attempt: the bytes, the variants, all stored.
    async fn attempt(&self, job: &ImageJob) -> Result<Variants, Failure> {
        let bytes = match &job.source {
            ImageSource::Upload { key } => self.objects.get(key).await.map_err(|e| {
                if is_outage(&e) {
                    Failure::Outage(format!("object store: {e}"))
                } else {
                    Failure::Invalid(format!("the upload is gone: {e}"))
                }
            })?,
            ImageSource::Url { url } => self.fetch(url).await?.into(),
        };
        let limits = self.limits;
        let made = tokio::task::spawn_blocking(move || variants::make(&bytes, limits))
            .await
            .map_err(|e| Failure::Failed(format!("the decoder stopped: {e}")))?
            .map_err(|invalid| Failure::Invalid(invalid.0))?;
        let original_key = match &job.source {
            ImageSource::Upload { key } => {
                let declared = key
                    .rsplit_once('.')
                    .and_then(|(_, extension)| Format::of_extension(extension));
                if declared != Some(made.original.format) {
                    return Err(Failure::Invalid(format!(
                        "declared as {} but the content is {}",
                        declared.map_or("another type", Format::content_type),
                        made.original.format.content_type()
                    )));
                }
                key.clone()
            }
            ImageSource::Url { .. } => self.store(job, "original", &made.original).await?,
        };
        Ok(Variants {
            original: stored(original_key, &made.original),
            thumbnail: stored(
                self.store(job, "thumbnail", &made.thumbnail).await?,
                &made.thumbnail,
            ),
            medium: stored(self.store(job, "medium", &made.medium).await?, &made.medium),
        })
    }

    /// Stores `encoded` as `name` of the job's image; its key.
    async fn store(
        &self,
        job: &ImageJob,
        name: &str,
        encoded: &Encoded,
    ) -> Result<String, Failure> {
        let namespace = self.topology.namespace();
        let key = images::key(
            namespace,
            job.image_id,
            &format!("{name}.{}", encoded.format.extension()),
        );
        self.objects
            .put(&key, encoded.bytes.clone(), encoded.format.content_type())
            .await
            .map_err(|e| Failure::Outage(format!("object store: {e}")))?;
        Ok(key)
    }

    /// The bytes at `url`: its address must be public (unless configured otherwise), the
    /// answer a 2xx of at most [`MAX_SOURCE_BYTES`].
    async fn fetch(&self, url: &str) -> Result<Vec<u8>, Failure> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| Failure::Invalid(format!("source_url is not a URL: {e}")))?;
        self.egress
            .check_url(&parsed)
            .await
            .map_err(|e| Failure::Invalid(format!("source_url refused: {e}")))?;
        let mut response = self.client.get(parsed).send().await.map_err(|e| {
            Failure::Failed(format!("source_url: {}", shared::egress::describe(&e)))
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(Failure::Failed(format!("source_url answered {status}")));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            Failure::Failed(format!(
                "source_url broke off: {}",
                shared::egress::describe(&e)
            ))
        })? {
            if bytes.len() + chunk.len() > MAX_SOURCE_BYTES {
                return Err(Failure::Invalid(
                    "the source is over 10 MiB, the most an image may be".into(),
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }

    /// Refreshes the product's cache with its entry as it now is, and announces the image;
    /// false if shutdown came first.
    async fn finish(&self, at: Running<'_>) -> bool {
        let Running { job, shutdown, .. } = at;
        // A read and a cache write carry nothing of the job's that could be refused: every
        // failure is one of the two stores being away, and is held.
        let refreshed = until_done(
            || async {
                let pool = self.database.ready()?;
                let entry = shared::gateway::catalog::load(pool, &job.product_id).await?;
                self.cache.put(&job.product_id, &Cached::of(entry)).await?;
                Ok::<_, Unrefreshed>(())
            },
            "product cache",
            shutdown,
        )
        .await;
        refreshed && until_done(|| self.announce(at), "images_ready event", shutdown).await
    }

    /// Publishes `product.images_ready` for the job and waits for the confirm.
    async fn announce(&self, at: Running<'_>) -> anyhow::Result<()> {
        let Running {
            job, channel, span, ..
        } = at;
        let source_event_id: EventId = job
            .message_id()
            .parse()
            .map_err(|e| anyhow::anyhow!("image job id: {e}"))?;
        let announcement = Announcement {
            id: DownstreamId::tagged(job.image_id),
            timestamp: OffsetDateTime::now_utc(),
            event: DownstreamEvent::ImagesReady(ImagesReady {
                source_event_id,
                product_id: job.product_id.clone(),
                image_id: job.image_id,
            }),
        };
        let body = announcement.body();
        let sending = send_announcement(
            channel,
            &self.topology,
            "imager",
            (&announcement, &body),
            span.context(),
        );
        sending.await?.confirmed().await.map(drop)
    }

    /// Marks the image failed, dead-letters the job with `reason` and `why`, and acknowledges
    /// it; false if shutdown came first.
    async fn give_up(
        &self,
        at: Running<'_>,
        delivery: Received,
        reason: Reason,
        why: &str,
    ) -> bool {
        let job = at.job;
        let failed = self
            .record(
                || async { images::fail(self.database.ready()?, job.image_id, why).await },
                at.shutdown,
            )
            .await;
        match failed {
            None => return false,
            Some(Ok(())) => {}
            // The job is dead-lettered all the same: the record stays as it was.
            Some(Err(refused)) => {
                tracing::error!(image_id = %job.image_id, error = %refused, "Could not mark an image failed.");
            }
        }
        // A failed image is never served: its upload and whatever was stored of it go.
        let stored = images::key(self.topology.namespace(), job.image_id, "");
        if let Err(e) = self.objects.delete_all(&stored).await {
            tracing::warn!(image_id = %job.image_id, error = %e, "Could not remove a failed image's bytes.");
        }
        tracing::warn!(image_id = %job.image_id, reason = reason.as_str(), error = %why, "Image failed; dead-lettered its job.");
        self.set_aside(at.channel, delivery, reason, why).await
    }

    /// Runs `statement` on the image's record, held while PostgreSQL is down; `None` if
    /// shutdown came first, `Some(Err(why))` if PostgreSQL refused it (which trying again would
    /// not change).
    async fn record<T, F, Fut>(
        &self,
        statement: F,
        shutdown: &CancellationToken,
    ) -> Option<Result<T, String>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        let held = hold(statement, Fault::worth_retrying, "image record", shutdown).await?;
        Some(held.map_err(|refused| format!("PostgreSQL refused the image's record: {refused}")))
    }

    /// Dead-letters the delivery with `reason` and `why`, then acks it; if the dead letter is
    /// not confirmed the job goes back to its queue and comes back.
    async fn set_aside(
        &self,
        channel: &Channel,
        delivery: Received,
        reason: Reason,
        why: &str,
    ) -> bool {
        metrics::counter!(shared::metric::IMAGES_PROCESSED_TOTAL, "outcome" => reason.as_str())
            .increment(1);
        let sender = dead_letter::Sender {
            channel,
            topology: &self.topology,
            service: "imager",
        };
        let queue = self.topology.images_queue();
        sender
            .set_aside_received(&queue, delivery, reason, why)
            .await;
        true
    }
}

/// Runs `attempt` until it succeeds, held through every failure (each is a dependency away);
/// false if shutdown came first.
async fn until_done<E, F, Fut>(attempt: F, what: &str, shutdown: &CancellationToken) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    matches!(hold(attempt, |_| true, what, shutdown).await, Some(Ok(())))
}

fn stored(key: String, encoded: &Encoded) -> StoredVariant {
    StoredVariant {
        key,
        width: encoded.width,
        height: encoded.height,
        content_type: encoded.format.content_type().to_owned(),
        bytes: u64::try_from(encoded.bytes.len()).unwrap_or(u64::MAX),
    }
}
