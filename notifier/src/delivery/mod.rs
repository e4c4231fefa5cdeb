//! The delivery worker: finds due deliveries, sends each to its subscriber, records the
//! attempt and what follows from it. It runs apart from the queue consumer, so a slow or dead
//! endpoint never holds up taking events in, and up to `concurrency` deliveries are in flight
//! at once, at most `per_endpoint` of them to one subscription, so one slow endpoint or its
//! retries never hold up another's.
//!
//! A delivery is claimed with a lease (`FOR UPDATE SKIP LOCKED`, then a token and an end
//! time), so several notifiers share the work and a notifier that dies mid-attempt only delays
//! its deliveries until the lease ends. Outcomes:
//! - 2xx within the timeout: `sent`, never attempted again; the subscription's failure count
//!   starts over.
//! - `410 Gone`: `failed` at once, and the subscription disabled (its other pending deliveries
//!   skipped), as Standard Webhooks asks; not counted among its failures in a row.
//! - anything else (another status, a timeout, no connection, a URL the guard refuses): retried
//!   after the next delay of the schedule, spread by ±20%, and never sooner than a `429`,
//!   `502`, `503` or `504` asked in `Retry-After` (at most a day); after the last, `failed`:
//!   dead-lettered (listed under `GET /deliveries?status=failed`, retried on request) and
//!   counted against the subscription, which is disabled once `disable_after` deliveries in a
//!   row have failed (its later events are skipped; deliveries already pending keep their
//!   retries).
//!
//! Every attempt is a row in `delivery_attempts` (time, status code, latency, and the
//! [`attempt::AttemptError`]'s text).
//!
//! - [`attempt`]: what an attempt came to, its failures typed.
//! - [`decide`]: what follows from it, a pure function of the attempt, the delivery's attempts
//!   so far, the subscription's failures in a row and a jitter draw.
//! - [`lease`] (in the store): claiming due deliveries, and recording an attempt with the
//!   applied decision in one transaction.

pub mod attempt;
pub mod decide;

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use backon::{BackoffBuilder, ExponentialBuilder};
use opentelemetry::KeyValue;
use opentelemetry_semantic_conventions::attribute as semconv;
use reqwest::{
    Client, Url,
    header::{CONTENT_TYPE, RETRY_AFTER},
};
use shared::{connect::postgres::Database, egress::Egress, trace};
use time::OffsetDateTime;
use tokio::sync::{Notify, Semaphore};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use uuid::Uuid;

use self::{
    attempt::{Attempt, AttemptError},
    decide::{Schedule, Verdict},
};
use crate::{
    signing,
    store::deliveries::lease::{self, Due},
};

/// How the worker delivers.
#[derive(Clone, Debug)]
pub struct Policy {
    /// How long a subscriber has to answer.
    pub timeout: Duration,
    /// The delays before each retry.
    pub retry_schedule: Vec<Duration>,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// Deliveries in flight at once to one subscription.
    pub per_endpoint: usize,
    /// Failed deliveries in a row that disable a subscription.
    pub disable_after: i32,
    /// How often to look for due retries when nothing wakes the worker.
    pub poll_interval: Duration,
}

/// The worker: what it needs, shared by its in-flight deliveries.
pub struct Worker {
    database: Database,
    client: Client,
    policy: Policy,
    egress: Egress,
    wake: Arc<Notify>,
}

impl Worker {
    /// A worker on `database`, woken early by `wake`, reaching only the addresses `egress`
    /// allows (no redirects, no proxy).
    pub fn new(
        database: Database,
        policy: Policy,
        egress: Egress,
        wake: Arc<Notify>,
    ) -> anyhow::Result<Self> {
        let client = egress
            .client()
            .timeout(policy.timeout)
            .connect_timeout(policy.timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("pipeline-notifier/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            database,
            client,
            policy,
            egress,
            wake,
        })
    }

    /// Delivers until `shutdown`, then waits for the deliveries in flight (their outcomes
    /// are recorded; what is cut off by the caller's deadline is retried when its lease ends).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.policy.concurrency));
        let in_flight = TaskTracker::new();
        let lease = self.policy.timeout + Duration::from_secs(30);
        loop {
            let free = slots.available_permits();
            let claimed = match self.database.ready() {
                Ok(pool) if free > 0 => lease::claim(pool, free, self.policy.per_endpoint, lease)
                    .await
                    .unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "Cannot read due deliveries; trying again.");
                        Vec::new()
                    }),
                _ => Vec::new(),
            };
            let idle = claimed.is_empty();
            for (token, due) in claimed {
                let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                    return;
                };
                let worker = Arc::clone(&self);
                let stopping = shutdown.clone();
                in_flight.spawn(async move {
                    worker.deliver(token, due, &stopping).await;
                    drop(permit);
                    // A free slot: look for more due deliveries now, not at the next poll.
                    worker.wake.notify_one();
                });
            }
            if idle || slots.available_permits() == 0 {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(self.policy.poll_interval) => {}
                }
            } else if shutdown.is_cancelled() {
                break;
            }
        }
        in_flight.close();
        in_flight.wait().await;
    }

    async fn deliver(&self, token: Uuid, due: Due, shutdown: &CancellationToken) {
        let span = trace::client(
            "notifier",
            "POST",
            span_attributes(&due),
            &trace::from_stored(due.traceparent.as_deref(), due.tracestate.as_deref()),
        );
        let attempt = self.send(&due, span.carrier()).await;
        if let Some(status) = attempt.status() {
            span.set(KeyValue::new(
                semconv::HTTP_RESPONSE_STATUS_CODE,
                i64::from(status.as_u16()),
            ));
        }
        if let Some(error) = attempt.error() {
            span.set(KeyValue::new(semconv::ERROR_TYPE, error.error_type()));
            span.fail(error);
        }
        let Some(verdict) = self.record(token, &due, &attempt, shutdown).await else {
            return;
        };
        metrics::counter!(shared::metric::WEBHOOK_DELIVERIES_TOTAL, "outcome" => verdict.as_str())
            .increment(1);
        metrics::histogram!(shared::metric::WEBHOOK_DELIVERY_DURATION_SECONDS)
            .record(attempt.latency);
        // A success is routine (debug); a failure that will be retried is worth a line; one
        // that exhausted its retries (or was told to stop) is dead-lettered and may need an
        // operator.
        macro_rules! attempted {
            ($level:ident) => {
                tracing::$level!(
                    event_id = %due.event_id,
                    event_type = %due.event_type,
                    subscription_id = %due.subscription_id,
                    trace_id = span.trace_id(),
                    attempt = due.attempts + 1,
                    status = attempt.status().map(|s| s.as_u16()),
                    error = attempt.error().map(tracing::field::display),
                    outcome = verdict.as_str(),
                    "Webhook delivery attempted."
                )
            };
        }
        match verdict {
            Verdict::Sent => attempted!(debug),
            Verdict::Retry(_) => attempted!(info),
            Verdict::Gone | Verdict::Failed { .. } => attempted!(warn),
        }
    }

    /// Records the attempt and what follows from it, retrying with backoff while PostgreSQL
    /// fails; `None` if shutdown came first (the attempt is then not recorded, and the delivery
    /// is sent again when its lease ends: at least once, never lost).
    async fn record(
        &self,
        token: Uuid,
        due: &Due,
        attempt: &Attempt,
        shutdown: &CancellationToken,
    ) -> Option<Verdict> {
        let schedule = Schedule {
            retries: &self.policy.retry_schedule,
            disable_after: self.policy.disable_after,
        };
        // One draw per attempt, whatever recording it takes.
        let spread = fastrand::f64();
        let mut backoff = ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(5))
            .without_max_times()
            .build();
        loop {
            let finished =
                lease::finish(self.database.pool(), &schedule, token, due, attempt, spread);
            let error = match finished.await {
                Ok(verdict) => return Some(verdict),
                Err(e) => e,
            };
            let delay = backoff.next().unwrap_or(Duration::from_secs(5));
            tracing::warn!(event_id = %due.event_id, error = %error, retry_in = ?delay, "Cannot record a delivery attempt; trying again.");
            tokio::select! {
                () = shutdown.cancelled() => {
                    tracing::warn!(event_id = %due.event_id, "Stopping with a delivery attempt unrecorded; it is sent again when its lease ends.");
                    return None;
                }
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One signed POST (with the W3C `traceparent` and `tracestate` of its span, when
    /// tracing), to an address the guard allows: a name through its resolver, an IP literal
    /// checked here.
    async fn send(&self, due: &Due, w3c: HashMap<String, String>) -> Attempt {
        let at = OffsetDateTime::now_utc();
        let unsent = |error| Attempt {
            at,
            latency: Duration::ZERO,
            result: Err(error),
        };
        let url = match Url::parse(&due.url) {
            Ok(url) => url,
            Err(e) => return unsent(AttemptError::InvalidUrl(e)),
        };
        if let Err(e) = self.egress.check_host(&url) {
            return unsent(AttemptError::Refused(e));
        }
        let timestamp = at.unix_timestamp();
        let secrets = std::iter::once(due.secret.as_str()).chain(due.previous_secret.as_deref());
        let signature =
            signing::signature_header(secrets, &due.event_id, timestamp, due.body.as_bytes());
        let started = std::time::Instant::now();
        let mut request = self.client.post(url);
        for (name, value) in w3c {
            request = request.header(name, value);
        }
        let result = request
            .header(CONTENT_TYPE, "application/json")
            .header("webhook-id", &due.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(due.body.clone())
            .send()
            .await;
        let latency = started.elapsed();
        let result = match result {
            Ok(response) if response.status().is_success() => Ok(response.status()),
            Ok(response) => Err(AttemptError::Status {
                status: response.status(),
                retry_after: response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| attempt::retry_after(value, SystemTime::now())),
            }),
            Err(e) => Err(AttemptError::from(&e)),
        };
        Attempt {
            at,
            latency,
            result,
        }
    }
}

/// The attempt span's attributes: method, ids, attempt number, and the endpoint (redacted).
fn span_attributes(due: &Due) -> Vec<KeyValue> {
    let mut attributes = vec![
        KeyValue::new(semconv::HTTP_REQUEST_METHOD, "POST"),
        KeyValue::new("pipeline.event_id", due.event_id.clone()),
        KeyValue::new("pipeline.subscription_id", due.subscription_id.to_string()),
        KeyValue::new("pipeline.attempt", i64::from(due.attempts) + 1),
    ];
    if let Ok(url) = Url::parse(&due.url) {
        attributes.push(KeyValue::new(
            semconv::URL_FULL,
            shared::egress::redacted(&url),
        ));
        if let Some(host) = url.host_str() {
            attributes.push(KeyValue::new(semconv::SERVER_ADDRESS, host.to_owned()));
        }
        if let Some(port) = url.port_or_known_default() {
            attributes.push(KeyValue::new(semconv::SERVER_PORT, i64::from(port)));
        }
    }
    attributes
}
