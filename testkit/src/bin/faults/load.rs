//! The load both runs drive, and the verdict on it: keyed stock events at a fixed rate, spread
//! over the gateways, each retried with its key until a 202 (with deliberate duplicates and
//! out-of-order times), a model of what was accepted, probes that time recovery, and the check
//! that every accepted event was applied exactly once and the state is the model's.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use lapin::BasicProperties;
use shared::{config::Backends, topology::Topology};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tokio::task::JoinHandle;

const PRODUCTS: u64 = 40;
const WORKERS: u64 = 16;
/// Unparseable messages published straight into the shards: they must be dead-lettered.
pub const POISON: usize = 3;

/// One gateway as the load sees it: how it answered.
pub struct Gateway {
    /// `http://host:port`.
    pub url: String,
    /// Requests that got no HTTP answer at all (refused, reset, timed out).
    pub unanswered: AtomicU64,
    /// Since when it has refused (503 or no answer) without another answer in between, and the
    /// longest such stretch.
    refusing: Mutex<(Option<Instant>, Duration)>,
}

impl Gateway {
    fn answered(&self, served: bool) {
        let mut refusing = self.refusing.lock().expect("gateway lock");
        match (served, refusing.0) {
            (true, Some(since)) => *refusing = (None, refusing.1.max(since.elapsed())),
            (false, None) => refusing.0 = Some(Instant::now()),
            _ => {}
        }
    }

    /// The longest stretch during which it answered only 503 or nothing, since the last call
    /// (a stretch still going on counts until now, and goes on counting).
    pub fn take_longest_refusal(&self) -> Duration {
        let mut refusing = self.refusing.lock().expect("gateway lock");
        let longest = refusing
            .0
            .map_or(refusing.1, |since| refusing.1.max(since.elapsed()));
        refusing.1 = Duration::ZERO;
        longest
    }
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    unavailable: AtomicU64,
    conflicts: AtomicU64,
    replays: AtomicU64,
}

/// Accepted event id → (product, stock, occurred_at).
type Accepted = BTreeMap<String, (String, i64, OffsetDateTime)>;

/// The running load.
pub struct Load {
    client: reqwest::Client,
    /// The gateways, in the order given.
    pub gateways: Arc<Vec<Gateway>>,
    accepted: Arc<Mutex<Accepted>>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    probes: Vec<(&'static str, Duration)>,
    pool: sqlx::PgPool,
}

impl Load {
    /// Starts `rate` events per second over `gateways` (worker `i` talks to gateway
    /// `i mod n`), and publishes the poison into the shards.
    pub async fn start(
        client: reqwest::Client,
        gateways: &[String],
        rate: u64,
        backends: &Backends,
    ) -> Self {
        let gateways: Arc<Vec<Gateway>> = Arc::new(
            gateways
                .iter()
                .map(|url| Gateway {
                    url: url.clone(),
                    unanswered: AtomicU64::new(0),
                    refusing: Mutex::new((None, Duration::ZERO)),
                })
                .collect(),
        );
        let mut load = Self {
            client,
            gateways,
            accepted: Arc::default(),
            counters: Arc::default(),
            stop: Arc::default(),
            workers: Vec::new(),
            probes: Vec::new(),
            pool: testkit::postgres::pool(backends).await,
        };
        let next = Arc::new(AtomicU64::new(0));
        let base = (OffsetDateTime::now_utc() - time::Duration::hours(1))
            .replace_nanosecond(0)
            .expect("zero nanoseconds is valid");
        for worker in 0..WORKERS {
            let task = load.worker(worker, rate, base, Arc::clone(&next));
            load.workers.push(tokio::spawn(task));
        }
        poison(backends).await;
        load
    }

    fn worker(
        &self,
        worker: u64,
        rate: u64,
        base: OffsetDateTime,
        next: Arc<AtomicU64>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let (client, gateways, accepted, counters, stop) = (
            self.client.clone(),
            Arc::clone(&self.gateways),
            Arc::clone(&self.accepted),
            Arc::clone(&self.counters),
            Arc::clone(&self.stop),
        );
        async move {
            let gateway = &gateways[usize::try_from(worker).unwrap_or(0) % gateways.len()];
            let mut rng = fastrand::Rng::with_seed(worker);
            let mut tick =
                tokio::time::interval(Duration::from_micros(1_000_000 * WORKERS / rate.max(1)));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let n = next.fetch_add(1, Ordering::Relaxed);
                let product = format!("fp-{}", rng.u64(0..PRODUCTS));
                // Out of order: occurred_at jitters up to 2 s around the send order.
                let at = base
                    + time::Duration::milliseconds(
                        i64::try_from(n * 10).unwrap_or(0) + rng.i64(-2000..2000),
                    );
                let stock = rng.i64(0..1_000_000);
                let key = format!("fk-{n}");
                let body = format!(
                    r#"{{"product_id": "{product}", "stock": {stock}, "occurred_at": "{}"}}"#,
                    at.format(&Rfc3339).expect("formats")
                );
                send_until_accepted(&client, &[gateway], &key, &body, &counters).await;
                let entry = (product, stock, at);
                accepted
                    .lock()
                    .expect("model lock")
                    .insert(key.clone(), entry);
                // A deliberate duplicate: the same request again must be a replay.
                if rng.u8(0..10) == 0 {
                    send_until_accepted(&client, &[gateway], &key, &body, &counters).await;
                }
            }
        }
    }

    /// Sends a new event (to each gateway in turn until one accepts it) and waits until it is
    /// applied; records the time that took as the recovery from `fault`.
    pub async fn probe(&mut self, fault: &'static str) -> Duration {
        let started = Instant::now();
        let key = format!("probe-{fault}");
        let gateways: Vec<&Gateway> = self.gateways.iter().collect();
        let body = r#"{"product_id": "probe", "price": 1}"#;
        send_until_accepted(&self.client, &gateways, &key, body, &self.counters).await;
        testkit::wait::eventually_or(Duration::from_secs(180), || async {
            let applied: Option<String> =
                sqlx::query_scalar("SELECT event_id FROM processed_events WHERE event_id = $1")
                    .bind(&key)
                    .fetch_optional(&self.pool)
                    .await
                    .ok()?;
            applied.map(|_| ())
        })
        .await;
        let took = started.elapsed();
        self.probes.push((fault, took));
        took
    }

    /// Asks the workers to stop after their current event.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Stops the load, waits until everything accepted could have been applied, and checks it.
    pub async fn verdict(mut self) -> anyhow::Result<Verdict> {
        self.stop();
        for worker in std::mem::take(&mut self.workers) {
            worker.await?;
        }
        let accepted = std::mem::take(&mut *self.accepted.lock().expect("model lock"));
        let expected: BTreeSet<String> = accepted
            .keys()
            .cloned()
            .chain(self.probes.iter().map(|(name, _)| format!("probe-{name}")))
            .collect();
        let pool = &self.pool;
        let applied_ids = || async {
            sqlx::query_scalar::<_, String>("SELECT event_id FROM processed_events")
                .fetch_all(pool)
                .await
                .ok()
        };
        let waited = testkit::wait::eventually_or(Duration::from_secs(120), || async {
            applied_ids()
                .await
                .filter(|ids| ids.len() >= expected.len())
        })
        .await;
        // Not all in time: what was applied by then, so the verdict names what is missing.
        let applied = match waited {
            Some(ids) => ids,
            None => applied_ids().await.unwrap_or_default(),
        };
        let applied: BTreeSet<String> = applied.into_iter().collect();
        let verdict = Verdict {
            accepted: expected.len(),
            applied: applied.len(),
            lost: expected.difference(&applied).count(),
            doubled: applied.difference(&expected).count(),
            missing: expected.difference(&applied).take(20).cloned().collect(),
            wrong_state: wrong_state(pool, &accepted).await?,
            dead_lettered: dead_letters(pool).await,
            counters: std::mem::take(&mut self.counters),
            probes: std::mem::take(&mut self.probes),
        };
        self.pool.close().await;
        Ok(verdict)
    }
}

/// What the run shows.
pub struct Verdict {
    accepted: usize,
    applied: usize,
    lost: usize,
    doubled: usize,
    /// The first lost events' ids, to look for in the logs and the queues.
    missing: Vec<String>,
    wrong_state: usize,
    /// Dead letters, if exactly the poison sent.
    dead_lettered: Result<usize, usize>,
    counters: Arc<Counters>,
    probes: Vec<(&'static str, Duration)>,
}

impl Verdict {
    /// The first lost events' ids.
    pub fn missing(&self) -> &[String] {
        &self.missing
    }

    /// Nothing lost, nothing doubled, the state the model's, the poison (and only it) dead.
    pub fn kept_promise(&self) -> bool {
        self.lost == 0 && self.doubled == 0 && self.wrong_state == 0 && self.dead_lettered.is_ok()
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let recovery: Vec<String> = self
            .probes
            .iter()
            .map(|(name, took)| format!("{name}={:.2}s", took.as_secs_f64()))
            .collect();
        write!(
            f,
            "accepted={} applied={} lost={} doubled={} wrong_state={} dead_lettered={} (poison sent {POISON}) requests={} 503s={} 409s={} replays={} recovery: {}",
            self.accepted,
            self.applied,
            self.lost,
            self.doubled,
            self.wrong_state,
            self.dead_lettered.unwrap_or_else(|n| n),
            self.counters.sent.load(Ordering::Relaxed),
            self.counters.unavailable.load(Ordering::Relaxed),
            self.counters.conflicts.load(Ordering::Relaxed),
            self.counters.replays.load(Ordering::Relaxed),
            recovery.join(" ")
        )?;
        if !self.missing.is_empty() {
            write!(f, " missing: {}", self.missing.join(" "))?;
        }
        Ok(())
    }
}

/// Products whose stored stock is not the one of their latest accepted event (by occurred_at,
/// then id: the processor's last-writer-wins order).
async fn wrong_state(pool: &sqlx::PgPool, accepted: &Accepted) -> anyhow::Result<usize> {
    let mut last: BTreeMap<&str, (OffsetDateTime, &str, i64)> = BTreeMap::new();
    for (key, (product, stock, at)) in accepted {
        let candidate = (*at, key.as_str(), *stock);
        let entry = last.entry(product.as_str()).or_insert(candidate);
        if (candidate.0, candidate.1) > (entry.0, entry.1) {
            *entry = candidate;
        }
    }
    let mut wrong = 0;
    for (product, (_, _, stock)) in &last {
        let stored: Option<i32> =
            sqlx::query_scalar("SELECT stock FROM products WHERE product_id = $1")
                .bind(product)
                .fetch_optional(pool)
                .await?
                .flatten();
        if stored.map(i64::from) != Some(*stock) {
            wrong += 1;
        }
    }
    Ok(wrong)
}

/// The dead letters: `Ok(n)` when they are exactly the poison, `Err(n)` otherwise.
async fn dead_letters(pool: &sqlx::PgPool) -> Result<usize, usize> {
    let dead: Vec<(String, Vec<u8>)> =
        testkit::wait::eventually_or(Duration::from_secs(30), || async {
            let rows: Vec<(String, Vec<u8>)> =
                sqlx::query_as("SELECT reason, payload FROM dead_letters")
                    .fetch_all(pool)
                    .await
                    .ok()?;
            (rows.len() >= POISON).then_some(rows)
        })
        .await
        .unwrap_or_default();
    let poison_only = dead.len() == POISON
        && dead
            .iter()
            .all(|(reason, payload)| reason == "unparseable" && payload.starts_with(b"poison "));
    if poison_only {
        Ok(dead.len())
    } else {
        Err(dead.len())
    }
}

/// Publishes the poison straight into the shards.
async fn poison(backends: &Backends) {
    let broker = testkit::broker::Broker::connect(backends).await;
    let topology = Topology::new(backends.namespace.clone(), backends.ingest_shards);
    for i in 0..POISON {
        broker
            .publish(
                &topology.ingest_exchange(),
                &(i % usize::from(backends.ingest_shards)).to_string(),
                format!("poison {i}").as_bytes(),
                BasicProperties::default(),
            )
            .await;
    }
}

/// Sends one keyed request until it gets a 202 (a client retrying with the same key), to each
/// of `gateways` in turn.
async fn send_until_accepted(
    client: &reqwest::Client,
    gateways: &[&Gateway],
    key: &str,
    body: &str,
    counters: &Counters,
) {
    for attempt in 0.. {
        let gateway = gateways[attempt % gateways.len()];
        counters.sent.fetch_add(1, Ordering::Relaxed);
        let response = client
            .post(format!("{}/events", gateway.url))
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(body.to_owned())
            .send()
            .await;
        let answer = response.map(|r| {
            (
                r.status().as_u16(),
                r.headers().contains_key("idempotent-replayed"),
            )
        });
        gateway.answered(matches!(answer, Ok((status, _)) if status != 503));
        match answer {
            Ok((202, replayed)) => {
                if replayed {
                    counters.replays.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            Ok((409, _)) => {
                counters.conflicts.fetch_add(1, Ordering::Relaxed);
            }
            Ok((503, _)) => {
                counters.unavailable.fetch_add(1, Ordering::Relaxed);
            }
            Ok((status, _)) => panic!("unexpected status {status} for {body}"),
            // Connection refused while a gateway restarts.
            Err(_) => {
                gateway.unanswered.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
