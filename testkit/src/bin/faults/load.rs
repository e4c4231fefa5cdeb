//! The load every run drives, and the verdict on it: keyed stock events and orders at a fixed
//! rate, spread over the gateways, each retried with its key until a 202 (with deliberate
//! duplicates and out-of-order times), a model of what was accepted, probes that time recovery,
//! and the check, by the harness's own reading of the tables, that every accepted event was
//! applied exactly once and the state is the model's: each product's stock the last writer's,
//! each order decided once, and each ordered product's stock what its created orders left.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use lapin::BasicProperties;
use shared::{config::Backends, topology::Topology};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tokio::task::JoinHandle;

const PRODUCTS: u64 = 40;
const WORKERS: u64 = 16;
/// Of the workers, how many place orders (the others send stock events).
const ORDER_WORKERS: u64 = 4;
/// The products orders are placed for (never sent a stock event but the first), and the stock
/// each starts with: enough for a while, then orders are rejected for want of it.
const ORDERED: u64 = 8;
const INITIAL_STOCK: i64 = 300;
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

/// What an accepted request asked for.
#[derive(Clone, Debug)]
enum Asked {
    /// A stock event: set this product's stock, as of this time.
    Stock(String, i64, OffsetDateTime),
    /// An order of this many units of this product.
    Order(String, i64),
}

impl Asked {
    /// The product it is about.
    fn product(&self) -> &str {
        match self {
            Self::Stock(product, ..) | Self::Order(product, _) => product,
        }
    }

    /// The path it is sent to, and its body, sent with `key` (an order's id).
    fn request(&self, key: &str) -> (&'static str, String) {
        match self {
            Self::Stock(product, stock, at) => (
                "events",
                format!(
                    r#"{{"product_id": "{product}", "stock": {stock}, "occurred_at": "{}"}}"#,
                    at.format(&Rfc3339).expect("formats")
                ),
            ),
            Self::Order(sku, qty) => (
                "orders",
                format!(r#"{{"id": "{key}", "sku": "{sku}", "qty": {qty}}}"#),
            ),
        }
    }

    /// The event id the processor records it under, sent with `key`.
    fn event_id(&self, key: &str) -> String {
        match self {
            Self::Stock(..) => key.to_owned(),
            Self::Order(..) => format!("order:{key}"),
        }
    }
}

/// Accepted event id (as the processor records it) → what it asked for, and the phase of the
/// run it was accepted in.
type Accepted = BTreeMap<String, (Asked, usize)>;

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
    /// The phases of the run (the first is `steady`), and which one is under way.
    phases: Vec<Phase>,
    phase: Arc<AtomicUsize>,
    topology: Topology,
    pool: sqlx::PgPool,
}

/// A stretch of the run with a name (a fault and its healing), and what was seen in it.
struct Phase {
    name: &'static str,
    /// The longest time any gateway answered only 503 or nothing.
    longest_refusal: Duration,
    /// How long, with the fault still on, until an event of every shard was applied (`None`:
    /// not within the fault).
    served_within: Option<Duration>,
    /// How long after the fault was lifted until an event was accepted and applied.
    recovery: Option<Duration>,
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
            phases: vec![Phase::new("steady")],
            phase: Arc::default(),
            topology: Topology::new(backends.namespace.clone(), backends.ingest_shards),
            pool: testkit::postgres::pool(backends).await,
        };
        let next = Arc::new(AtomicU64::new(0));
        let base = (OffsetDateTime::now_utc() - time::Duration::hours(1))
            .replace_nanosecond(0)
            .expect("zero nanoseconds is valid");
        load.stock_ordered_products(base).await;
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
        let phase = Arc::clone(&self.phase);
        async move {
            let gateway = &gateways[usize::try_from(worker).unwrap_or(0) % gateways.len()];
            let mut rng = fastrand::Rng::with_seed(worker);
            let mut tick =
                tokio::time::interval(Duration::from_micros(1_000_000 * WORKERS / rate.max(1)));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let n = next.fetch_add(1, Ordering::Relaxed);
                let (key, asked) = if worker < ORDER_WORKERS {
                    order(&mut rng, n)
                } else {
                    stock_event(&mut rng, n, base)
                };
                let (path, body) = asked.request(&key);
                let phase_now = phase.load(Ordering::Relaxed);
                send_until_accepted(&client, &[gateway], path, &key, &body, &counters).await;
                accepted
                    .lock()
                    .expect("model lock")
                    .insert(asked.event_id(&key), (asked, phase_now));
                // A deliberate duplicate: the same request again must be a replay.
                if rng.u8(0..10) == 0 {
                    send_until_accepted(&client, &[gateway], path, &key, &body, &counters).await;
                }
            }
        }
    }

    /// Gives each ordered product its first stock, and waits until it is applied.
    async fn stock_ordered_products(&mut self, base: OffsetDateTime) {
        let at = base - time::Duration::hours(1);
        let mut keys = Vec::new();
        for product in 0..ORDERED {
            let key = format!("stock-fo-{product}");
            let asked = Asked::Stock(format!("fo-{product}"), INITIAL_STOCK, at);
            self.send(&key, asked, 0).await;
            keys.push(key);
        }
        applied_within(&self.pool, &keys, Duration::from_secs(120)).await;
    }

    /// Sends `asked` with `key` (to each gateway in turn until one accepts it) and records it
    /// as accepted in `phase`.
    async fn send(&self, key: &str, asked: Asked, phase: usize) {
        let (path, body) = asked.request(key);
        let gateways: Vec<&Gateway> = self.gateways.iter().collect();
        send_until_accepted(&self.client, &gateways, path, key, &body, &self.counters).await;
        self.accepted
            .lock()
            .expect("model lock")
            .insert(asked.event_id(key), (asked, phase));
    }

    /// Starts a new phase of the run, named after its fault: what is accepted from now on is
    /// counted in its row; the longest refusal so far closes the phase before.
    pub fn begin(&mut self, name: &'static str) {
        self.close_phase();
        self.phases.push(Phase::new(name));
        self.phase.store(self.phases.len() - 1, Ordering::Relaxed);
    }

    fn close_phase(&mut self) {
        let longest = self
            .gateways
            .iter()
            .map(Gateway::take_longest_refusal)
            .max()
            .unwrap_or_default();
        if let Some(phase) = self.phases.last_mut() {
            phase.longest_refusal = phase.longest_refusal.max(longest);
        }
    }

    /// With the fault on: sends an event of every shard and waits, at most `within`, until all
    /// are applied (another replica serving what a cut one held); records how long it took.
    pub async fn served_by_every_shard(&mut self, within: Duration) -> Option<Duration> {
        let started = Instant::now();
        let phase = self.phases.len() - 1;
        let name = self.phases[phase].name;
        let mut keys = Vec::new();
        for (shard, product) in one_product_per_shard(&self.topology, name) {
            let key = format!("served-{name}-{shard}");
            let now = OffsetDateTime::now_utc()
                .replace_nanosecond(0)
                .expect("zero nanoseconds is valid");
            self.send(&key, Asked::Stock(product, 1, now), phase).await;
            keys.push(key);
        }
        let left = within.saturating_sub(started.elapsed());
        let served = applied_within(&self.pool, &keys, left)
            .await
            .map(|()| started.elapsed());
        self.phases[phase].served_within = served;
        served
    }

    /// Sends a new event (to each gateway in turn until one accepts it) and waits until it is
    /// applied; records the time that took as the recovery from `fault`.
    pub async fn probe(&mut self, fault: &'static str) -> Duration {
        let started = Instant::now();
        let key = format!("probe-{fault}");
        let gateways: Vec<&Gateway> = self.gateways.iter().collect();
        let body = r#"{"product_id": "probe", "price": 1}"#;
        send_until_accepted(
            &self.client,
            &gateways,
            "events",
            &key,
            body,
            &self.counters,
        )
        .await;
        let applied = applied_within(&self.pool, &[key], Duration::from_secs(180)).await;
        let took = started.elapsed();
        self.probes.push((fault, took));
        if let Some(phase) = self.phases.last_mut() {
            phase.recovery = applied.map(|()| took);
        }
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
        self.close_phase();
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
        let rows = self
            .phases
            .iter()
            .enumerate()
            .map(|(index, phase)| {
                let ids: Vec<&String> = accepted
                    .iter()
                    .filter(|(_, (_, p))| *p == index)
                    .map(|(id, _)| id)
                    .collect();
                Row {
                    name: phase.name,
                    accepted: ids.len(),
                    lost: ids.iter().filter(|id| !applied.contains(**id)).count(),
                    longest_refusal: phase.longest_refusal,
                    served_within: phase.served_within,
                    recovery: phase.recovery,
                }
            })
            .collect();
        let verdict = Verdict {
            accepted: expected.len(),
            applied: applied.len(),
            lost: expected.difference(&applied).count(),
            doubled: applied.difference(&expected).count(),
            missing: expected
                .difference(&applied)
                .take(20)
                .map(|id| {
                    let queue = accepted
                        .get(id)
                        .and_then(|(asked, _)| asked.product().parse().ok())
                        .map(|product| {
                            self.topology.shard_queue(self.topology.shard_for(&product))
                        });
                    (id.clone(), queue)
                })
                .collect(),
            wrong_state: wrong_state(pool, &accepted).await?,
            orders: orders(pool, &accepted).await?,
            dead_lettered: dead_letters(pool).await,
            counters: std::mem::take(&mut self.counters),
            probes: std::mem::take(&mut self.probes),
            rows,
            orders_accepted: accepted
                .iter()
                .filter(|(_, (asked, _))| matches!(asked, Asked::Order(..)))
                .map(|(id, _)| id.trim_start_matches("order:").to_owned())
                .collect(),
        };
        self.pool.close().await;
        Ok(verdict)
    }
}

impl Phase {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            longest_refusal: Duration::ZERO,
            served_within: None,
            recovery: None,
        }
    }
}

/// Waits, at most `within`, until every one of `ids` is applied.
async fn applied_within(pool: &sqlx::PgPool, ids: &[String], within: Duration) -> Option<()> {
    testkit::wait::eventually_or(within, || async {
        let applied: i64 =
            sqlx::query_scalar("SELECT count(*) FROM processed_events WHERE event_id = ANY($1)")
                .bind(ids)
                .fetch_one(pool)
                .await
                .ok()?;
        (usize::try_from(applied).ok()? == ids.len()).then_some(())
    })
    .await
}

/// A product of each shard, named after `phase`: `(shard, product)`.
fn one_product_per_shard(topology: &Topology, phase: &str) -> BTreeMap<u16, String> {
    let mut products = BTreeMap::new();
    for n in 0.. {
        if products.len() == usize::from(topology.shards()) {
            break;
        }
        let product = format!("served-{phase}-{n}").replace('_', "-");
        let id = product.parse().expect("a valid product id");
        products.entry(topology.shard_for(&id)).or_insert(product);
    }
    products
}

/// A stock event, the worker's `n`th request: its key and what it asks.
fn stock_event(rng: &mut fastrand::Rng, n: u64, base: OffsetDateTime) -> (String, Asked) {
    let product = format!("fp-{}", rng.u64(0..PRODUCTS));
    // Out of order: occurred_at jitters up to 2 s around the send order.
    let at = base
        + time::Duration::milliseconds(i64::try_from(n * 10).unwrap_or(0) + rng.i64(-2000..2000));
    let stock = rng.i64(0..1_000_000);
    (format!("fk-{n}"), Asked::Stock(product, stock, at))
}

/// An order, the worker's `n`th request: its id and what it asks.
fn order(rng: &mut fastrand::Rng, n: u64) -> (String, Asked) {
    let sku = format!("fo-{}", rng.u64(0..ORDERED));
    (format!("o-{n}"), Asked::Order(sku, rng.i64(1..4)))
}

/// What the run shows.
pub struct Verdict {
    accepted: usize,
    applied: usize,
    lost: usize,
    doubled: usize,
    /// The first lost events' ids, to look for in the logs and the queues, each with the shard
    /// queue it was published to (where known).
    missing: Vec<(String, Option<String>)>,
    wrong_state: usize,
    /// Orders accepted but not decided once, and ordered products whose stock is not what
    /// their created orders left (or is negative).
    orders: OrderCheck,
    /// Dead letters, if exactly the poison sent.
    dead_lettered: Result<usize, usize>,
    counters: Arc<Counters>,
    probes: Vec<(&'static str, Duration)>,
    rows: Vec<Row>,
    /// The ids of the orders accepted.
    pub orders_accepted: BTreeSet<String>,
}

/// One phase's line of the table.
struct Row {
    name: &'static str,
    accepted: usize,
    lost: usize,
    longest_refusal: Duration,
    served_within: Option<Duration>,
    recovery: Option<Duration>,
}

impl Verdict {
    /// The first lost events' ids.
    pub fn missing(&self) -> Vec<String> {
        self.missing.iter().map(|(id, _)| id.clone()).collect()
    }

    /// Nothing lost, nothing doubled, the state the model's, every order decided once and its
    /// stock kept, the poison (and only it) dead.
    pub fn kept_promise(&self) -> bool {
        self.lost == 0
            && self.doubled == 0
            && self.wrong_state == 0
            && self.orders == OrderCheck::default()
            && self.dead_lettered.is_ok()
    }

    /// The phases as a table, one line each: accepted, applied, lost, the longest stretch of
    /// 503s, how long until every shard was served with the fault on, and the recovery after it
    /// (in seconds); then the whole run's, with what was doubled and the products whose state is
    /// wrong (ordered ones included).
    pub fn table(&self) -> String {
        let seconds =
            |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.1}", d.as_secs_f64()));
        let line = |cells: [String; 9]| {
            let [name, rest @ ..] = cells;
            let rest: Vec<String> = rest.iter().map(|c| format!("{c:>9}")).collect();
            format!("{name:<30} {}\n", rest.join(" "))
        };
        let mut table = line(
            [
                "phase", "accepted", "applied", "lost", "doubled", "wrong", "503s (s)", "served",
                "recovery",
            ]
            .map(str::to_owned),
        );
        for row in &self.rows {
            table.push_str(&line([
                row.name.to_owned(),
                row.accepted.to_string(),
                (row.accepted - row.lost).to_string(),
                row.lost.to_string(),
                "-".to_owned(),
                "-".to_owned(),
                format!("{:.1}", row.longest_refusal.as_secs_f64()),
                seconds(row.served_within),
                seconds(row.recovery),
            ]));
        }
        // Doubling and a wrong state show in the end state, not in one phase.
        table.push_str(&line([
            "all".to_owned(),
            self.accepted.to_string(),
            self.applied.to_string(),
            self.lost.to_string(),
            self.doubled.to_string(),
            (self.wrong_state + self.orders.wrong_stock).to_string(),
            "-".to_owned(),
            "-".to_owned(),
            "-".to_owned(),
        ]));
        table
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
            "accepted={} applied={} lost={} doubled={} wrong_state={} orders_undecided={} orders_wrong_stock={} dead_lettered={} (poison sent {POISON}) requests={} 503s={} 409s={} replays={} recovery: {}",
            self.accepted,
            self.applied,
            self.lost,
            self.doubled,
            self.wrong_state,
            self.orders.undecided,
            self.orders.wrong_stock,
            self.dead_lettered.unwrap_or_else(|n| n),
            self.counters.sent.load(Ordering::Relaxed),
            self.counters.unavailable.load(Ordering::Relaxed),
            self.counters.conflicts.load(Ordering::Relaxed),
            self.counters.replays.load(Ordering::Relaxed),
            recovery.join(" ")
        )?;
        if !self.missing.is_empty() {
            let missing: Vec<String> = self
                .missing
                .iter()
                .map(|(id, queue)| match queue {
                    Some(queue) => format!("{id} (in {queue})"),
                    None => id.clone(),
                })
                .collect();
            write!(f, " missing: {}", missing.join(" "))?;
        }
        Ok(())
    }
}

/// What the orders show.
#[derive(Debug, Default, PartialEq, Eq)]
struct OrderCheck {
    /// Accepted orders with no decision, or decisions of orders never accepted.
    undecided: usize,
    /// Ordered products whose stock is not their first stock less their created orders, or is
    /// below zero.
    wrong_stock: usize,
}

/// Checks the orders against what was accepted: each decided exactly once, and each ordered
/// product's stock its first stock less what its created orders reserved.
async fn orders(pool: &sqlx::PgPool, accepted: &Accepted) -> anyhow::Result<OrderCheck> {
    let decided: Vec<(String, String, i32, String)> =
        sqlx::query_as("SELECT order_id, sku, qty, status FROM orders")
            .fetch_all(pool)
            .await?;
    let asked: BTreeMap<String, (&str, i64)> = accepted
        .iter()
        .filter_map(|(id, (asked, _))| match asked {
            Asked::Order(sku, qty) => Some((
                id.trim_start_matches("order:").to_owned(),
                (sku.as_str(), *qty),
            )),
            Asked::Stock(..) => None,
        })
        .collect();
    let mut check = OrderCheck::default();
    let decided_ids: BTreeSet<&str> = decided.iter().map(|(id, ..)| id.as_str()).collect();
    check.undecided = asked
        .keys()
        .filter(|id| !decided_ids.contains(id.as_str()))
        .count()
        + decided_ids
            .iter()
            .filter(|id| !asked.contains_key(**id))
            .count()
        + (decided.len() - decided_ids.len());
    let mut reserved: BTreeMap<&str, i64> = BTreeMap::new();
    for (_, sku, qty, status) in &decided {
        if status == "created" {
            *reserved.entry(sku.as_str()).or_default() += i64::from(*qty);
        }
    }
    for product in 0..ORDERED {
        let sku = format!("fo-{product}");
        let stored: Option<i32> =
            sqlx::query_scalar("SELECT stock FROM products WHERE product_id = $1")
                .bind(&sku)
                .fetch_optional(pool)
                .await?
                .flatten();
        let expected = INITIAL_STOCK - reserved.get(sku.as_str()).copied().unwrap_or(0);
        let stored = stored.map(i64::from);
        if stored != Some(expected) || stored.is_some_and(|s| s < 0) {
            check.wrong_stock += 1;
        }
    }
    Ok(check)
}

/// Products whose stored stock is not the one of their latest accepted event (by occurred_at,
/// then id: the processor's last-writer-wins order).
async fn wrong_state(pool: &sqlx::PgPool, accepted: &Accepted) -> anyhow::Result<usize> {
    let mut last: BTreeMap<&str, (OffsetDateTime, &str, i64)> = BTreeMap::new();
    let stock_events = accepted.iter().filter_map(|(key, (asked, _))| match asked {
        // An ordered product's stock is the orders' check.
        Asked::Stock(product, ..) if product.starts_with("fo-") => None,
        Asked::Stock(product, stock, at) => Some((key, (product, stock, at))),
        Asked::Order(..) => None,
    });
    for (key, (product, stock, at)) in stock_events {
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

/// How long a request may go unaccepted before the run gives up on the pipeline: longer than
/// any fault of any run keeps the gateways refusing (the longest, a node cut for 90 s).
const STUCK: Duration = Duration::from_secs(300);

/// Sends one keyed request until it gets a 202 (a client retrying with the same key), to each
/// of `gateways` in turn. Panics, naming the last answer, when none accepts it within
/// [`STUCK`]: a pipeline that never comes back fails the run rather than holding it forever.
async fn send_until_accepted(
    client: &reqwest::Client,
    gateways: &[&Gateway],
    path: &str,
    key: &str,
    body: &str,
    counters: &Counters,
) {
    let started = Instant::now();
    for attempt in 0.. {
        let gateway = gateways[attempt % gateways.len()];
        counters.sent.fetch_add(1, Ordering::Relaxed);
        let response = client
            .post(format!("{}/{path}", gateway.url))
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
        assert!(
            started.elapsed() < STUCK,
            "no gateway accepted {key} within {STUCK:?}; the last, {}, answered {answer:?}",
            gateway.url
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
