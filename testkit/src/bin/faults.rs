//! The fault-injection harness: runs the real `gateway` and `processor` binaries behind fault
//! proxies, drives a steady keyed load (with duplicates, out-of-order times and poison), injects
//! faults, and checks the result against a model of what was accepted.
//!
//! `cargo build --bins && target/debug/faults --seconds 60` (see `fault-test.sh`). Prints one
//! line of figures and exits non-zero if anything accepted was lost or doubled, the final state
//! differs from the model, or the dead letters are not exactly the poison sent.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use lapin::BasicProperties;
use testkit::fault_proxy::{Fault, Faulty};
use testkit::services::{Services, env_urls, sigterm, through};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

const PRODUCTS: u64 = 40;
const WORKERS: u64 = 16;
const POISON: usize = 3;

#[derive(Default)]
struct Model {
    /// Accepted event id → (product, stock, occurred_at).
    accepted: BTreeMap<String, (String, i64, OffsetDateTime)>,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    unavailable: AtomicU64,
    conflicts: AtomicU64,
    replays: AtomicU64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::args()
        .skip_while(|a| a != "--seconds")
        .nth(1)
        .map_or(Ok(60), |s| s.parse())?;
    let rate: u64 = std::env::args()
        .skip_while(|a| a != "--rate")
        .nth(1)
        .map_or(Ok(100), |s| s.parse())?;
    let backends = testkit::backends();
    let faulty = Faulty::start(&backends).await;
    let [amqp, redis, database] = env_urls();
    let urls = [
        through(&amqp, faulty.amqp.addr()),
        through(&redis, faulty.redis.addr()),
        through(&database, faulty.postgres.addr()),
    ];
    let log_filter = std::env::var("FAULTS_RUST_LOG").unwrap_or_else(|_| "warn".into());
    let mut services = Services::new(&backends, urls, &log_filter, "faults")?;
    for (name, value) in [
        ("PUBLISH_CONFIRM_TIMEOUT_MS", "2000"),
        ("IDEMPOTENCY_LEASE_SECS", "5"),
        ("SHUTDOWN_DEADLINE_SECS", "20"),
    ] {
        services.env.push((name.into(), value.into()));
    }
    let logs = services.logs.clone();
    let mut processor = services.spawn("processor");
    let mut gateway = services.spawn("gateway");
    let key = testkit::api_key(&backends.namespace, shared::auth::Scopes::all()).await;
    let client = reqwest::Client::builder()
        .default_headers(testkit::key_header(&key))
        .timeout(Duration::from_secs(10))
        .build()?;
    let gateway_url = format!("http://{}", services.gateway_addr);
    testkit::until_ready(&client, &gateway_url, Duration::from_secs(60)).await;

    // The load: keyed events at a fixed rate; every one retried with the same key until 202.
    let model = Arc::new(Mutex::new(Model::default()));
    let counters = Arc::new(Counters::default());
    let next = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + Duration::from_secs(seconds);
    let base = (OffsetDateTime::now_utc() - time::Duration::hours(1))
        .replace_nanosecond(0)
        .expect("zero nanoseconds is valid");
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let (client, url, model, counters, next) = (
            client.clone(),
            gateway_url.clone(),
            Arc::clone(&model),
            Arc::clone(&counters),
            Arc::clone(&next),
        );
        workers.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(worker);
            let mut tick =
                tokio::time::interval(Duration::from_micros(1_000_000 * WORKERS / rate.max(1)));
            while Instant::now() < stop_at {
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
                send_until_accepted(&client, &url, &key, &body, &counters).await;
                model
                    .lock()
                    .expect("model lock")
                    .accepted
                    .insert(key.clone(), (product, stock, at));
                // A deliberate duplicate: the same request again must be a replay.
                if rng.u8(0..10) == 0 {
                    send_until_accepted(&client, &url, &key, &body, &counters).await;
                }
            }
        }));
    }

    // Poison, straight into the shards.
    let broker = testkit::Broker::connect(&backends).await;
    let topology =
        shared::topology::Topology::new(backends.namespace.clone(), backends.ingest_shards);
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

    // The faults, spread over the run; after each is lifted, the time until a new event is
    // accepted and applied.
    let step = Duration::from_secs(seconds.max(16) / 8);
    let pool = testkit::database(&backends).await;
    let mut recoveries = Vec::new();
    let probe = |name: &'static str| {
        let (client, url, counters, pool) = (
            client.clone(),
            gateway_url.clone(),
            Arc::clone(&counters),
            pool.clone(),
        );
        async move {
            let started = Instant::now();
            let key = format!("probe-{name}");
            send_until_accepted(
                &client,
                &url,
                &key,
                r#"{"product_id": "probe", "price": 1}"#,
                &counters,
            )
            .await;
            testkit::eventually_or(Duration::from_secs(120), || async {
                let applied: Option<String> =
                    sqlx::query_scalar("SELECT event_id FROM processed_events WHERE event_id = $1")
                        .bind(&key)
                        .fetch_optional(&pool)
                        .await
                        .ok()?;
                applied.map(|_| ())
            })
            .await;
            (name, started.elapsed())
        }
    };
    let proxies = [
        ("rabbitmq_drop", &faulty.amqp, Fault::Drop),
        ("redis_drop", &faulty.redis, Fault::Drop),
        ("postgres_drop", &faulty.postgres, Fault::Drop),
        ("rabbitmq_blackhole", &faulty.amqp, Fault::Blackhole),
        (
            "postgres_latency",
            &faulty.postgres,
            Fault::Latency(Duration::from_millis(30)),
        ),
    ];
    for (name, proxy, fault) in proxies {
        tokio::time::sleep(step / 2).await;
        proxy.set(fault);
        tokio::time::sleep(Duration::from_secs(2)).await;
        proxy.set(Fault::Pass);
        recoveries.push(probe(name).await);
    }
    tokio::time::sleep(step / 2).await;
    processor.start_kill()?;
    processor.wait().await?;
    processor = services.spawn("processor");
    recoveries.push(probe("processor_sigkill").await);
    tokio::time::sleep(step / 2).await;
    sigterm(&mut gateway).await;
    gateway = services.spawn("gateway");
    recoveries.push(probe("gateway_sigterm").await);
    tokio::time::sleep(step / 2).await;
    sigterm(&mut processor).await;
    processor = services.spawn("processor");
    recoveries.push(probe("processor_sigterm").await);

    for worker in workers {
        worker.await?;
    }
    let model = std::mem::take(&mut *model.lock().expect("model lock"));
    let accepted = model.accepted.len() + recoveries.len();

    // Check: every accepted event applied exactly once, the state, and the dead letters.
    let applied: Vec<String> = testkit::eventually_or(Duration::from_secs(120), || async {
        let ids: Vec<String> = sqlx::query_scalar("SELECT event_id FROM processed_events")
            .fetch_all(&pool)
            .await
            .ok()?;
        (ids.len() >= accepted).then_some(ids)
    })
    .await
    .unwrap_or_default();
    let applied: BTreeSet<String> = applied.into_iter().collect();
    let expected: BTreeSet<String> = model
        .accepted
        .keys()
        .cloned()
        .chain(recoveries.iter().map(|(name, _)| format!("probe-{name}")))
        .collect();
    let lost = expected.difference(&applied).count();
    let doubled = applied.difference(&expected).count();
    let mut last: BTreeMap<&str, (OffsetDateTime, &str, i64)> = BTreeMap::new();
    for (key, (product, stock, at)) in &model.accepted {
        let candidate = (*at, key.as_str(), *stock);
        let entry = last.entry(product.as_str()).or_insert(candidate);
        if (candidate.0, candidate.1) > (entry.0, entry.1) {
            *entry = candidate;
        }
    }
    let mut wrong_state = 0;
    for (product, (_, _, stock)) in &last {
        let stored: Option<i32> =
            sqlx::query_scalar("SELECT stock FROM products WHERE product_id = $1")
                .bind(product)
                .fetch_optional(&pool)
                .await?
                .flatten();
        if stored.map(i64::from) != Some(*stock) {
            wrong_state += 1;
        }
    }
    let dead: Vec<(String, Vec<u8>)> = testkit::eventually_or(Duration::from_secs(30), || async {
        let rows: Vec<(String, Vec<u8>)> =
            sqlx::query_as("SELECT reason, payload FROM dead_letters")
                .fetch_all(&pool)
                .await
                .ok()?;
        (rows.len() >= POISON).then_some(rows)
    })
    .await
    .unwrap_or_default();
    let poison_ok = dead.len() == POISON
        && dead
            .iter()
            .all(|(reason, payload)| reason == "unparseable" && payload.starts_with(b"poison "));

    let recovery: Vec<String> = recoveries
        .iter()
        .map(|(name, took)| format!("{name}={:.2}s", took.as_secs_f64()))
        .collect();
    println!(
        "faults: accepted={accepted} applied={} lost={lost} doubled={doubled} wrong_state={wrong_state} dead_lettered={} (poison sent {POISON}) requests={} 503s={} 409s={} replays={} recovery: {}",
        applied.len(),
        dead.len(),
        counters.sent.load(Ordering::Relaxed),
        counters.unavailable.load(Ordering::Relaxed),
        counters.conflicts.load(Ordering::Relaxed),
        counters.replays.load(Ordering::Relaxed),
        recovery.join(" ")
    );

    sigterm(&mut gateway).await;
    sigterm(&mut processor).await;
    pool.close().await;
    testkit::cleanup(&backends).await?;
    if lost == 0 && doubled == 0 && wrong_state == 0 && poison_ok {
        if std::env::var_os("FAULTS_KEEP_LOGS").is_none() {
            std::fs::remove_dir_all(&logs)?;
        }
        Ok(())
    } else {
        anyhow::bail!(
            "the pipeline broke its promise; service logs are in {}",
            logs.display()
        )
    }
}

/// Sends one keyed request until it gets a 202 (a client retrying with the same key).
async fn send_until_accepted(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    body: &str,
    counters: &Counters,
) {
    loop {
        counters.sent.fetch_add(1, Ordering::Relaxed);
        let response = client
            .post(format!("{url}/events"))
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(body.to_owned())
            .send()
            .await;
        match response.map(|r| {
            (
                r.status().as_u16(),
                r.headers().contains_key("idempotent-replayed"),
            )
        }) {
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
            // Connection refused while the gateway restarts.
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
