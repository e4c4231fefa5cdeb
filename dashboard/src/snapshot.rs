//! The live numbers: every `refresh`, the dashboard scrapes each service's `/metrics` and
//! `/ready`, reads queue depths from RabbitMQ and counts from PostgreSQL, and publishes one
//! JSON snapshot to every open page. A source that is down is named in the snapshot (with its
//! error) and its numbers are `null`, so the page says what it cannot see instead of going
//! blank.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use lapin::options::QueueDeclareOptions;
use serde_json::{Map, Value, json};
use shared::notifier::deliveries::DeliveryStatus;
use shared::{
    connect::{amqp::Broker, postgres::Database},
    metric,
    topology::Topology,
};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;

use shared::metric::{difference, quantile};

use crate::metrics_text::Scrape;

/// Points of rate history kept for the charts.
pub const HISTORY: usize = 120;
/// Latency percentiles are over this window.
pub const LATENCY_WINDOW: Duration = Duration::from_secs(30);

/// Where the numbers come from.
pub struct Sources {
    /// HTTP client for the services.
    pub client: reqwest::Client,
    /// The services by name and base URL.
    pub services: Vec<(&'static str, String)>,
    /// The broker, for queue depths.
    pub broker: Broker<()>,
    /// PostgreSQL, for counts.
    pub database: Database,
    /// Queue names.
    pub topology: Arc<Topology>,
    /// The retry queues last seen in the processor's metrics.
    pub retry_queues: std::sync::Mutex<Vec<String>>,
}

/// A service's answer: whether it is ready and its metrics, or why it did not answer.
type Answer = Result<(bool, Scrape), String>;

/// What is remembered between refreshes.
struct Past {
    at: Instant,
    accepted: f64,
    applied: f64,
    e2e: Vec<(f64, f64)>,
    accept: Vec<(f64, f64)>,
}

/// Refreshes the snapshot until `shutdown`.
pub async fn run(
    sources: Arc<Sources>,
    every: Duration,
    publish: watch::Sender<Arc<Value>>,
    shutdown: CancellationToken,
) {
    let mut past: VecDeque<Past> = VecDeque::new();
    let mut history: VecDeque<Value> = VecDeque::new();
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let snapshot = sources.take(&mut past, &mut history).await;
        publish.send_replace(Arc::new(snapshot));
    }
}

/// Every dependency as each service sees it (`pipeline_dependency_up`).
fn dependencies(metrics: &HashMap<&str, Scrape>) -> Value {
    let mut seen = Map::new();
    for (service, scrape) in metrics {
        for (dependency, up) in scrape.by_label(metric::DEPENDENCY_UP, "dependency") {
            seen.entry(dependency)
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .map(|o| o.insert((*service).to_owned(), json!(up >= 1.0)));
        }
    }
    Value::Object(seen)
}

/// What one refresh read from the services' scrapes.
struct Reading<'a> {
    gateway: Option<&'a Scrape>,
    processor: Option<&'a Scrape>,
    notifier: Option<&'a Scrape>,
    /// Events accepted by the gateway so far.
    accepted: Option<f64>,
    /// Events applied by the processor so far (updates and decided orders).
    applied: Option<f64>,
    /// The end-to-end latency histogram.
    e2e: Option<Vec<(f64, f64)>>,
    /// The gateway's `POST /events` latency histogram.
    accept: Option<Vec<(f64, f64)>>,
}

impl<'a> Reading<'a> {
    fn of(metrics: &'a HashMap<&str, Scrape>) -> Self {
        let gateway = metrics.get("gateway");
        let processor = metrics.get("processor");
        Reading {
            gateway,
            processor,
            notifier: metrics.get("notifier"),
            accepted: gateway.map(|g| g.sum(metric::EVENTS_ACCEPTED_TOTAL, &[])),
            applied: processor.map(|p| {
                ["applied", "order_created", "order_rejected"]
                    .iter()
                    .map(|o| p.sum(metric::EVENTS_PROCESSED_TOTAL, &[("outcome", o)]))
                    .sum::<f64>()
            }),
            e2e: processor.map(|p| p.buckets(metric::END_TO_END_DURATION_SECONDS, &[])),
            accept: gateway.map(|g| {
                g.buckets(
                    metric::HTTP_REQUEST_DURATION_SECONDS,
                    &[("route", "/events")],
                )
            }),
        }
    }

    /// Totals by label, as the services count them.
    fn totals(&self) -> Value {
        json!({
            "accepted": self.accepted,
            "applied": self.applied,
            "rejected": self.gateway.map(|g| g.by_label(metric::EVENTS_REJECTED_TOTAL, "reason")),
            "processed": self.processor.map(|p| p.by_label(metric::EVENTS_PROCESSED_TOTAL, "outcome")),
            "retried": self.processor.map(|p| p.sum(metric::EVENTS_RETRIED_TOTAL, &[])),
            "dead_lettered": self
                .processor
                .map(|p| p.by_label(metric::EVENTS_DEAD_LETTERED_TOTAL, "reason")),
        })
    }

    /// Webhook attempts by outcome and the share that succeeded.
    fn webhooks(&self) -> Value {
        let attempts = self
            .notifier
            .map(|n| n.by_label(metric::WEBHOOK_DELIVERIES_TOTAL, "outcome"));
        let success_rate = attempts.as_ref().and_then(|w| {
            let sent = w.get("sent").copied().unwrap_or(0.0);
            let all: f64 = w.values().sum();
            (all > 0.0).then(|| (sent / all * 1000.0).round() / 1000.0)
        });
        json!({ "attempts_by_outcome": attempts, "success_rate": success_rate })
    }

    /// Latency percentiles over the last [`LATENCY_WINDOW`] (since start while younger).
    fn latency(&self, now: Instant, past: &VecDeque<Past>) -> Value {
        let window_start = past
            .iter()
            .find(|p| now.duration_since(p.at) <= LATENCY_WINDOW);
        let percentiles = |current: &Option<Vec<(f64, f64)>>,
                           pick: fn(&Past) -> &Vec<(f64, f64)>| {
            let Some(current) = current else {
                return json!({ "p50": null, "p99": null, "p999": null });
            };
            let window =
                window_start.map_or_else(|| current.clone(), |w| difference(current, pick(w)));
            json!({
                "p50": quantile(&window, 0.5),
                "p99": quantile(&window, 0.99),
                "p999": quantile(&window, 0.999),
            })
        };
        json!({
            "end_to_end_seconds": percentiles(&self.e2e, |p| &p.e2e),
            "accept_seconds": percentiles(&self.accept, |p| &p.accept),
        })
    }

    /// Accepted and applied per second since the previous refresh.
    fn rates(&self, now: Instant, previous: Option<&Past>) -> (Value, Value) {
        let rate = |current: Option<f64>, before: Option<f64>| -> Value {
            match (current, before, previous) {
                (Some(c), Some(b), Some(p)) => {
                    let seconds = now.duration_since(p.at).as_secs_f64();
                    json!(((c - b).max(0.0) / seconds * 10.0).round() / 10.0)
                }
                _ => Value::Null,
            }
        };
        (
            rate(self.accepted, previous.map(|p| p.accepted)),
            rate(self.applied, previous.map(|p| p.applied)),
        )
    }

    /// Keeps this reading for the next refreshes' rates and latency windows.
    fn remember(&self, now: Instant, past: &mut VecDeque<Past>) {
        past.push_back(Past {
            at: now,
            accepted: self.accepted.unwrap_or(0.0),
            applied: self.applied.unwrap_or(0.0),
            e2e: self.e2e.clone().unwrap_or_default(),
            accept: self.accept.clone().unwrap_or_default(),
        });
        while past
            .front()
            .is_some_and(|p| now.duration_since(p.at) > LATENCY_WINDOW + Duration::from_secs(5))
        {
            past.pop_front();
        }
    }
}

/// Names on each shard queue the processor replica that owns it (`owner`, null when none
/// does or PostgreSQL cannot say), from the leases in `counts`.
fn owners(queues: &mut Value, counts: &Value) {
    let leases = counts["shards"].as_array();
    let Some(queues) = queues["queues"].as_array_mut() else {
        return;
    };
    for queue in queues.iter_mut().filter(|q| q["kind"] == "shard") {
        let lease = leases.and_then(|all| all.iter().find(|l| l["shard"] == queue["shard"]));
        queue["owner"] = lease.map_or(Value::Null, |l| l["owner"].clone());
    }
}

/// Each service's state, and the scrapes of those that answered.
fn services(
    scrapes: Vec<(&'static str, Answer)>,
) -> (Map<String, Value>, HashMap<&'static str, Scrape>) {
    let mut services = Map::new();
    let mut metrics = HashMap::new();
    for (name, result) in scrapes {
        match result {
            Ok((ready, scrape)) => {
                services.insert(name.to_owned(), json!({ "up": true, "ready": ready }));
                metrics.insert(name, scrape);
            }
            Err(error) => {
                services.insert(
                    name.to_owned(),
                    json!({ "up": false, "ready": Value::Null, "error": error }),
                );
            }
        }
    }
    (services, metrics)
}

impl Sources {
    async fn take(&self, past: &mut VecDeque<Past>, history: &mut VecDeque<Value>) -> Value {
        let now = Instant::now();
        let (services, metrics) = services(self.scrape_all().await);
        let reading = Reading::of(&metrics);
        let retry_queues = self.retry_queues(reading.processor);
        let (mut queues, counts) = tokio::join!(self.queues(retry_queues), self.counts());
        owners(&mut queues, &counts);
        let (accepted_rate, applied_rate) = reading.rates(now, past.back());
        let latency = reading.latency(now, past);
        reading.remember(now, past);
        let at = OffsetDateTime::now_utc();
        history.push_back(json!({
            "t": at.unix_timestamp(),
            "accepted": accepted_rate,
            "applied": applied_rate,
        }));
        while history.len() > HISTORY {
            history.pop_front();
        }
        json!({
            "at": at.format(&Rfc3339).ok(),
            "services": services,
            "dependencies": dependencies(&metrics),
            "rates": { "accepted_per_second": accepted_rate, "applied_per_second": applied_rate },
            "totals": reading.totals(),
            "latency": latency,
            "queues": queues,
            "database": counts,
            "webhooks": reading.webhooks(),
            "history": history.iter().cloned().collect::<Vec<_>>(),
        })
    }

    /// The retry queues of this namespace, as the processor declares them (its
    /// `pipeline_retry_delay_seconds`); the last ones seen while it does not answer.
    fn retry_queues(&self, processor: Option<&Scrape>) -> Vec<String> {
        let mut known = self
            .retry_queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(processor) = processor {
            let ours = format!("{}.retry.", self.topology.namespace().as_str());
            let mut ladder: Vec<(String, f64)> = processor
                .by_label(metric::RETRY_DELAY_SECONDS, "queue")
                .into_iter()
                .filter(|(queue, _)| queue.starts_with(&ours))
                .collect();
            ladder.sort_by(|a, b| a.1.total_cmp(&b.1));
            *known = ladder.into_iter().map(|(queue, _)| queue).collect();
        }
        known.clone()
    }

    /// Each service's `/ready` (true when 200) and `/metrics`, or why not.
    async fn scrape_all(&self) -> Vec<(&'static str, Answer)> {
        let scrapes = self.services.iter().map(|(name, base)| async move {
            let ready = self.client.get(format!("{base}/ready")).send();
            let metrics = self.client.get(format!("{base}/metrics")).send();
            let (ready, metrics) = tokio::join!(ready, metrics);
            let result = async {
                let ready = ready.map_err(|e| e.to_string())?.status().is_success();
                let text = metrics
                    .map_err(|e| e.to_string())?
                    .text()
                    .await
                    .map_err(|e| e.to_string())?;
                Ok((ready, Scrape::parse(&text)))
            }
            .await;
            (*name, result)
        });
        futures_util::future::join_all(scrapes).await
    }

    /// Depth and consumers of every queue, from passive declarations.
    async fn queues(&self, retry_queues: Vec<String>) -> Value {
        let Some(session) = self.broker.session() else {
            return json!({ "up": false, "error": "RabbitMQ is unreachable", "queues": null });
        };
        let open = || session.connection.create_channel();
        let mut channel = match open().await {
            Ok(channel) => channel,
            Err(e) => return json!({ "up": false, "error": e.to_string(), "queues": null }),
        };
        let mut names: Vec<(String, &str, Option<u16>)> = (0..self.topology.shards())
            .map(|s| (self.topology.shard_queue(s), "shard", Some(s)))
            .collect();
        names.extend(retry_queues.into_iter().map(|name| (name, "retry", None)));
        names.push((self.topology.dead_letter_queue(), "dead", None));
        names.push((self.topology.notifier_queue(), "notifier", None));
        names.push((self.topology.images_queue(), "images", None));
        let mut queues = Vec::with_capacity(names.len());
        for (name, kind, shard) in names {
            let options = QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            };
            match channel
                .queue_declare(name.as_str().into(), options, Default::default())
                .await
            {
                Ok(q) => queues.push(json!({
                    "name": name, "kind": kind, "shard": shard,
                    "messages": q.message_count(), "consumers": q.consumer_count(),
                })),
                Err(_) => {
                    // A missing queue closes the channel: say so, and go on with a new one.
                    queues.push(json!({
                        "name": name, "kind": kind, "shard": shard,
                        "messages": null, "consumers": null,
                    }));
                    match open().await {
                        Ok(fresh) => channel = fresh,
                        Err(e) => {
                            return json!({ "up": false, "error": e.to_string(), "queues": null });
                        }
                    }
                }
            }
        }
        let _ = channel.close(200, "depths read".into()).await;
        json!({ "up": true, "error": null, "queues": queues })
    }

    /// Dead letters by reason, deliveries pending and failed, orders by status.
    async fn counts(&self) -> Value {
        let Ok(pool) = self.database.ready() else {
            return json!({ "up": false, "error": "PostgreSQL is unreachable or not migrated yet" });
        };
        let result: Result<Value, sqlx::Error> = async {
            let dead = shared::processor::dead_letters::by_reason(pool).await?;
            let deliveries = shared::notifier::deliveries::open_counts(pool).await?;
            let disabled = shared::notifier::subscriptions::disabled(pool).await?;
            let shards = shared::processor::shards::list(pool).await?;
            let total: i64 = dead.iter().map(|(_, n)| n).sum();
            let by_reason: Map<String, Value> = dead
                .into_iter()
                .map(|(reason, n)| (reason.as_str().to_owned(), json!(n)))
                .collect();
            let status = |s| deliveries.get(&s).copied().unwrap_or(0);
            Ok(json!({
                "up": true,
                "error": null,
                "dead_letters": { "total": total, "by_reason": by_reason },
                "deliveries": {
                    "pending": status(DeliveryStatus::Pending),
                    "failed": status(DeliveryStatus::Failed),
                },
                "disabled_subscriptions": disabled,
                "shards": shards,
            }))
        }
        .await;
        result.unwrap_or_else(|e| json!({ "up": false, "error": e.to_string() }))
    }
}
