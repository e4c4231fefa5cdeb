//! The live numbers: every `refresh`, the dashboard scrapes each service's `/metrics` and
//! `/ready`, reads queue depths from RabbitMQ and counts from PostgreSQL, and publishes one
//! JSON snapshot to every open page. A source that is down is named in the snapshot (with its
//! error) and its numbers are `null`, so the page says what it cannot see instead of going
//! blank.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use lapin::options::QueueDeclareOptions;
use notifier::store::deliveries::DeliveryStatus;
use serde_json::{Map, Value, json};
use shared::{
    connect::{amqp::Broker, postgres::Database},
    topology::Topology,
};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::metrics_text::{Scrape, difference, quantile};

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
    pub topology: Topology,
    /// The retry ladder's delays, for the retry queues' names.
    pub retry_delays: Vec<Duration>,
}

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

impl Sources {
    async fn take(&self, past: &mut VecDeque<Past>, history: &mut VecDeque<Value>) -> Value {
        let now = Instant::now();
        let (scrapes, queues, counts) =
            tokio::join!(self.scrape_all(), self.queues(), self.counts());
        let mut services = Map::new();
        let mut metrics = std::collections::HashMap::new();
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
        let gateway = metrics.get("gateway");
        let processor = metrics.get("processor");
        let notifier = metrics.get("notifier");

        let accepted = gateway.map(|g| g.sum("pipeline_events_accepted_total", &[]));
        let applied = processor.map(|p| {
            ["applied", "order_created", "order_rejected"]
                .iter()
                .map(|o| p.sum("pipeline_events_processed_total", &[("outcome", o)]))
                .sum::<f64>()
        });
        let e2e = processor.map(|p| p.buckets("pipeline_end_to_end_duration_seconds", &[]));
        let accept = gateway.map(|g| {
            g.buckets(
                "pipeline_http_request_duration_seconds",
                &[("route", "/events")],
            )
        });

        let previous = past.back();
        let rate = |current: Option<f64>, before: Option<f64>| -> Value {
            match (current, before, previous) {
                (Some(c), Some(b), Some(p)) => {
                    let seconds = now.duration_since(p.at).as_secs_f64();
                    json!(((c - b).max(0.0) / seconds * 10.0).round() / 10.0)
                }
                _ => Value::Null,
            }
        };
        let accepted_rate = rate(accepted, previous.map(|p| p.accepted));
        let applied_rate = rate(applied, previous.map(|p| p.applied));
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
        let latency = json!({
            "end_to_end_seconds": percentiles(&e2e, |p| &p.e2e),
            "accept_seconds": percentiles(&accept, |p| &p.accept),
        });

        let at = OffsetDateTime::now_utc();
        history.push_back(json!({
            "t": at.unix_timestamp(),
            "accepted": accepted_rate,
            "applied": applied_rate,
        }));
        while history.len() > HISTORY {
            history.pop_front();
        }
        past.push_back(Past {
            at: now,
            accepted: accepted.unwrap_or(0.0),
            applied: applied.unwrap_or(0.0),
            e2e: e2e.clone().unwrap_or_default(),
            accept: accept.clone().unwrap_or_default(),
        });
        while past
            .front()
            .is_some_and(|p| now.duration_since(p.at) > LATENCY_WINDOW + Duration::from_secs(5))
        {
            past.pop_front();
        }

        let webhooks = notifier.map(|n| n.by_label("pipeline_webhook_deliveries_total", "outcome"));
        let webhook_rate = webhooks.as_ref().and_then(|w| {
            let sent = w.get("sent").copied().unwrap_or(0.0);
            let attempts: f64 = w.values().sum();
            (attempts > 0.0).then(|| (sent / attempts * 1000.0).round() / 1000.0)
        });
        json!({
            "at": at.format(&Rfc3339).ok(),
            "services": services,
            "dependencies": self.dependencies(&metrics),
            "rates": { "accepted_per_second": accepted_rate, "applied_per_second": applied_rate },
            "totals": {
                "accepted": accepted,
                "applied": applied,
                "rejected": gateway.map(|g| g.by_label("pipeline_events_rejected_total", "reason")),
                "processed": processor.map(|p| p.by_label("pipeline_events_processed_total", "outcome")),
                "retried": processor.map(|p| p.sum("pipeline_events_retried_total", &[])),
                "dead_lettered": processor.map(|p| p.by_label("pipeline_events_dead_lettered_total", "reason")),
            },
            "latency": latency,
            "queues": queues,
            "database": counts,
            "webhooks": {
                "attempts_by_outcome": webhooks,
                "success_rate": webhook_rate,
            },
            "history": history.iter().cloned().collect::<Vec<_>>(),
        })
    }

    /// Each service's `/ready` (true when 200) and `/metrics`, or why not.
    async fn scrape_all(&self) -> Vec<(&'static str, Result<(bool, Scrape), String>)> {
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

    /// Every dependency as each service sees it (`pipeline_dependency_up`).
    fn dependencies(&self, metrics: &std::collections::HashMap<&str, Scrape>) -> Value {
        let mut seen = Map::new();
        for (service, scrape) in metrics {
            for (dependency, up) in scrape.by_label("pipeline_dependency_up", "dependency") {
                seen.entry(dependency)
                    .or_insert_with(|| json!({}))
                    .as_object_mut()
                    .map(|o| o.insert((*service).to_owned(), json!(up >= 1.0)));
            }
        }
        Value::Object(seen)
    }

    /// Depth and consumers of every queue, from passive declarations.
    async fn queues(&self) -> Value {
        let Some(session) = self.broker.session() else {
            return json!({ "up": false, "error": "RabbitMQ is unreachable", "queues": null });
        };
        let open = || session.connection.create_channel();
        let mut channel = match open().await {
            Ok(channel) => channel,
            Err(e) => return json!({ "up": false, "error": e.to_string(), "queues": null }),
        };
        let mut names: Vec<(String, &str)> = (0..self.topology.shards())
            .map(|s| (self.topology.shard_queue(s), "shard"))
            .collect();
        names.extend(
            self.retry_delays
                .iter()
                .map(|d| (self.topology.retry_queue(*d), "retry")),
        );
        names.push((self.topology.dead_letter_queue(), "dead"));
        names.push((self.topology.notifier_queue(), "notifier"));
        let mut queues = Vec::with_capacity(names.len());
        for (name, kind) in names {
            let options = QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            };
            match channel
                .queue_declare(name.as_str().into(), options, Default::default())
                .await
            {
                Ok(q) => queues.push(json!({
                    "name": name, "kind": kind,
                    "messages": q.message_count(), "consumers": q.consumer_count(),
                })),
                Err(_) => {
                    // A missing queue closes the channel: say so, and go on with a new one.
                    queues.push(
                        json!({ "name": name, "kind": kind, "messages": null, "consumers": null }),
                    );
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
            let dead = processor::dead_letters::store::by_reason(pool).await?;
            let deliveries = notifier::store::deliveries::counts(pool).await?;
            let disabled = notifier::store::subscriptions::disabled(pool).await?;
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
            }))
        }
        .await;
        result.unwrap_or_else(|e| json!({ "up": false, "error": e.to_string() }))
    }
}
