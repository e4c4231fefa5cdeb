//! The benchmark: in one run, the raw broker's round trip and the whole pipeline's maximum
//! sustained rate (gateway, processor and notifier, with a subscriber), latencies at 50% and
//! 80% of it (with the gateway's wait for the broker's confirm), CPU per event and peak memory
//! per service, the processor's time per event in each stage, webhooks per second to a local
//! receiver, a catalog-sized backfill (time to accepted and to applied), the catalog listing's
//! latency over a catalog of 100,000 entries, the cost of authentication per request,
//! `redis-benchmark` figures, and the maximum at the other shard counts of [`SWEEP`], each in a
//! namespace of its own. Beside the CPU each process spent per event at 80%, what its share of
//! the work costs alone in the same run: for the gateway its HTTP server (`GET /health` at the
//! same rate) with a publish's client side, for the broker a round trip and an unrouted publish
//! (the least each can spend; the round trip also at that rate, the pipeline's pace), and for
//! the processor the raw round trip's client, with lapin
//! and with amqprs (an AMQP client without an I/O thread of its own); and the gateway's HTTP
//! server taken apart ([`servers`]: hyper alone, axum's router, the services' layers, each in a
//! process of its own). Runs the release binaries of the services as child processes.
//!
//! `./bench.sh` (full) or `./bench.sh --quick` (a short correctness smoke: every event accepted
//! and applied, no errors; speed is reported, never asserted). `--rate N` starts the search at N
//! (with `--quick`: offers only N), `--step-seconds S` sets each step's length, `--shards N` the
//! shard count (default 4), `--backfill N` the backfill's size (default 1,000,000; 2,000 with
//! `--quick`), `--catalog N` the listed catalog's size (default 100,000; 2,000 with `--quick`).
#![forbid(unsafe_code)]

mod auth_cost;
mod backfill;
mod catalog;
mod load;
mod pipeline;
mod probe;
mod raw;
mod raw_amqprs;
mod redis_strategy;
mod servers;
mod webhooks;

use std::time::Duration;

use load::{Mix, Step};
use pipeline::{Pipeline, search};

/// The processor's stages, as labelled in its stage histogram.
const STAGES: [&str; 4] = ["decide", "persist", "publish", "settle"];

/// The shard counts the sweep compares.
const SWEEP: [u16; 3] = [4, 16, 32];

struct Options {
    quick: bool,
    step: Duration,
    /// Start the search here (and, with `--quick`, only offer this rate).
    rate: u64,
    /// `INGEST_SHARDS` of the run.
    shards: u16,
    /// Events in the backfill.
    backfill: u64,
    /// Entries in the listed catalog.
    catalog: u64,
}

fn options() -> anyhow::Result<Options> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    Ok(Options {
        step: Duration::from_secs(value(&args, "--step-seconds", 10, quick.then_some(4))?),
        rate: value(&args, "--rate", 250, quick.then_some(200))?,
        shards: value(&args, "--shards", 4, None)?,
        backfill: value(&args, "--backfill", 1_000_000, quick.then_some(2_000))?,
        catalog: value(&args, "--catalog", 100_000, quick.then_some(2_000))?,
        quick,
    })
}

/// The number after `flag` in `args`. Without the flag: `quick` in a quick run, where the quick
/// run has a default of its own, else `full`; `full` too when nothing follows the flag.
fn value<T>(args: &[String], flag: &str, full: T, quick: Option<T>) -> anyhow::Result<T>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    Ok(match args.iter().position(|a| a == flag) {
        Some(i) => args.get(i + 1).map_or(Ok(full), |s| s.parse())?,
        None => quick.unwrap_or(full),
    })
}

/// Runs the benchmark; on SIGINT or SIGTERM stops it, and with it the services it started (each
/// child is killed when the run is dropped), instead of leaving them running.
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    // A child of the run serving `GET /health` alone (see [`servers`]).
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve") {
        return servers::serve(args.get(i + 1).map_or("", String::as_str)).await;
    }
    let (mut interrupt, mut terminate) = (
        signal(SignalKind::interrupt())?,
        signal(SignalKind::terminate())?,
    );
    tokio::select! {
        measured = measure() => measured,
        _ = interrupt.recv() => anyhow::bail!("interrupted: the services were stopped"),
        _ = terminate.recv() => anyhow::bail!("terminated: the services were stopped"),
    }
}

/// Whose CPU time per event the report gives: the pipeline's services, then every process of
/// the broker, PostgreSQL and Redis on this machine, then this benchmark (the load generator).
const CPU_OF: [&str; 7] = [
    "gateway",
    "processor",
    "notifier",
    "RabbitMQ",
    "PostgreSQL",
    "Redis",
    "load generator",
];

/// Runs `broker_test`: its rate, and the broker's and the client's (this process's) CPU per
/// message it handled, in microseconds (`None` where it cannot be read): what one message costs
/// at the least.
async fn with_cpu_per_message(
    broker_test: impl Future<Output = anyhow::Result<raw::Measured>>,
) -> anyhow::Result<(f64, [Option<f64>; 2])> {
    let cpu = || {
        [
            probe::cpu_micros_named("beam.smp"),
            probe::cpu_micros(std::process::id()),
        ]
    };
    let before = cpu();
    let measured = broker_test.await?;
    let after = cpu();
    Ok((
        measured.rate,
        per_unit(before, after, measured.messages as f64),
    ))
}

/// CPU microseconds per unit of work between two readings of the same processes (`None` where
/// either reading is missing).
fn per_unit<const N: usize>(
    before: [Option<u64>; N],
    after: [Option<u64>; N],
    units: f64,
) -> [Option<f64>; N] {
    let units = units.max(1.0);
    std::array::from_fn(|i| after[i].zip(before[i]).map(|(a, b)| (a - b) as f64 / units))
}

async fn measure() -> anyhow::Result<()> {
    let options = options()?;
    let pipeline = Pipeline::start(options.shards).await?;
    let backends = pipeline.backends.clone();
    let (client, key) = (pipeline.client.clone(), pipeline.key.clone());
    let (url, processor_url, notifier_url) = (
        pipeline.gateway.clone(),
        pipeline.processor.clone(),
        pipeline.notifier.clone(),
    );
    let [gateway_pid, processor_pid, notifier_pid] = pipeline.pids;

    // The same size of message the pipeline publishes.
    let sample = br#"{"event_id":"01a20076-5a6b-7e8a-9d36-7c0b1f3e5a2d","product_id":"p-1234","price":49.99,"stock":100,"occurred_at":"2026-11-21T23:40:22.265192Z","received_at":"2026-11-21T23:40:22.265192Z"}"#;
    let raw_seconds = if options.quick { 3 } else { 10 };
    // Each test of the broker in a queue or exchange of its own, named for it.
    let test = |what: &str| raw::Test {
        uri: backends.amqp[0].clone(),
        name: format!("{}.{what}", backends.namespace.as_str()),
        payload: sample,
        duration: Duration::from_secs(raw_seconds),
    };
    let (raw_rate, [raw_broker, raw_client]) =
        with_cpu_per_message(raw::round_trip(test("raw"), None)).await?;
    eprintln!("raw broker round trip: {raw_rate:.0} msg/s");
    // The same with amqprs, the client without an I/O thread of its own: a comparison, so a
    // failure is reported, not fatal.
    let amqprs = with_cpu_per_message(raw_amqprs::round_trip(test("amqprs"))).await;
    let amqprs_client = amqprs.as_ref().ok().and_then(|(_, [_, client])| *client);
    // And a confirmed publish no queue takes (a downstream event nobody is bound to).
    let (unrouted_rate, [unrouted_broker, unrouted_client]) =
        with_cpu_per_message(raw::unrouted(test("unrouted"))).await?;

    let mut mix = Mix::new(backends.namespace.as_str(), 7);
    let warm = pipeline.offer(&mut mix, 100, Duration::from_secs(2)).await;
    let searched = search(
        &pipeline,
        &mut mix,
        options.rate,
        if options.quick { 1 } else { 14 },
        options.step,
    )
    .await;
    let mut accepted_new = warm.accepted_new + searched.accepted_new;
    let mut errors = warm.errors + searched.errors;
    let mut run = |step: Step| {
        accepted_new += step.accepted_new;
        errors += step.errors;
        step
    };
    let max = searched.max;

    // Latency at 50% and 80% of the maximum, with CPU and end-to-end latency over each.
    let mut rows = Vec::new();
    // Where the time goes: the processor's end-to-end histogram and its stages, the gateway's
    // own time on `POST /events` and its wait for the broker's confirm, and the CPU time of
    // every service.
    let reading = || async {
        let metrics = probe::scrape(&client, &processor_url).await?;
        let at_gateway = probe::scrape(&client, &url).await?;
        let buckets = [
            probe::buckets(&metrics, shared::metric::END_TO_END_DURATION_SECONDS, ""),
            probe::buckets(
                &at_gateway,
                shared::metric::HTTP_REQUEST_DURATION_SECONDS,
                "route=\"/events\"",
            ),
            probe::buckets(
                &at_gateway,
                shared::metric::PUBLISH_CONFIRM_DURATION_SECONDS,
                "",
            ),
        ];
        let stages = STAGES.map(|stage| {
            probe::sum(
                &metrics,
                shared::metric::STAGE_DURATION_SECONDS,
                &format!("stage=\"{stage}\""),
            )
        });
        let cpu = [
            probe::cpu_micros(gateway_pid),
            probe::cpu_micros(processor_pid),
            probe::cpu_micros(notifier_pid),
            probe::cpu_micros_named("beam.smp"),
            probe::cpu_micros_named("postgres"),
            probe::cpu_micros_named("redis-server"),
            probe::cpu_micros(std::process::id()),
        ];
        anyhow::Ok((buckets, cpu, stages))
    };
    for share in [50, 80] {
        let rate = (max * share / 100).max(10);
        let (before, cpu_before, stages_before) = reading().await?;
        let step = run(pipeline.offer(&mut mix, rate, options.step).await);
        pipeline.drained().await;
        let (after, cpu_after, stages_after) = reading().await?;
        let [e2e, handled, confirmed] = [0, 1, 2].map(|i| {
            let window = shared::metric::difference(&after[i], &before[i]);
            [0.5, 0.99].map(|q| shared::metric::quantile(&window, q))
        });
        let events = (step.accepted_new + step.replays) as f64;
        let cpu = per_unit(cpu_before, cpu_after, events);
        let stages: Vec<Option<f64>> = stages_before
            .iter()
            .zip(stages_after)
            .map(|(b, a)| a.zip(*b).map(|(a, b)| (a - b) * 1e6 / events.max(1.0)))
            .collect();
        rows.push((share, rate, step, [e2e, handled, confirmed], cpu, stages));
    }

    // The gateway's HTTP server alone, at the 80% step's rate: `GET /health` passes every layer
    // (request id, limits, tracking, tracing) and does no work. With the client's side of one
    // confirmed publish (the unrouted test above), it is the least a `202` can cost the gateway.
    let health_rate = (max * 80 / 100).max(10);
    let (health, health_cpu) =
        servers::cpu_per_health(&client, (&url, gateway_pid), health_rate, options.step).await;
    // The same requests to its server's parts alone, each in a process of its own.
    let mut parts = Vec::new();
    for (kind, label) in servers::KINDS {
        let (step, cpu) = servers::health(&client, kind, health_rate, options.step).await?;
        parts.push((label, step, cpu));
    }
    // The broker's share at the pipeline's own pace: the raw round trip offered at the same
    // rate, a message at a time as the gateway publishes them, not as fast as confirms allow.
    let (paced_rate, [paced_broker, paced_client]) =
        with_cpu_per_message(raw::round_trip(test("paced"), Some(health_rate))).await?;

    // Webhooks per second: every changed product a webhook, at the maximum rate.
    let delivered = webhooks::per_second(
        &client,
        (&url, &notifier_url),
        &mut mix,
        max.max(50),
        options.step,
    )
    .await?;
    let webhooks_per_second = delivered.webhooks as f64 / delivered.elapsed.as_secs_f64();
    let webhooks_count = delivered.webhooks;
    run(delivered.step);

    // The catalog-sized backfill.
    let backfilled = backfill::run(&client, (&url, &processor_url), options.backfill).await?;
    accepted_new += backfilled.events;

    // Correctness: every accepted new event applied, exactly once.
    let applied = pipeline.applied(accepted_new).await;
    // The catalog listing, over a catalog written straight into the tables.
    let pool = testkit::postgres::pool(&backends).await;
    let seeded = catalog::seed(&pool, options.catalog).await?;
    pool.close().await;
    let listing = catalog::time(&client, &url).await?;
    let rss = [gateway_pid, processor_pid, notifier_pid].map(probe::peak_rss_kib);
    let redis = match backends.redis.addr() {
        redis::ConnectionAddr::Tcp(host, port) => probe::redis_benchmark(host, *port),
        _ => Vec::new(),
    };

    let auth = auth_cost::per_check(&backends, &key).await.map_or_else(
        |e| format!("failed: {e}"),
        |d| format!("{:.2} µs", d.as_secs_f64() * 1e6),
    );

    // The Redis connection strategy, by measurement: one multiplexed connection against a pool.
    let redis_client = redis::Client::open(backends.redis.clone())?;
    let seconds = Duration::from_secs(if options.quick { 1 } else { 4 });
    let prefix = format!("{}:bench", backends.namespace.as_str());
    let mut strategies = Vec::new();
    for (label, connections) in [
        ("one multiplexed connection", 1),
        ("pool of 8 connections", 8),
    ] {
        // A failed measurement is reported, not fatal: the pipeline's figures above stand.
        let rate =
            redis_strategy::pairs_per_second(&redis_client, &prefix, connections, 256, seconds)
                .await
                .map_or_else(|e| format!("failed: {e}"), |r| format!("{r:.0} pairs/s"));
        strategies.push((label, rate));
    }

    let main_complete = pipeline::complete(options.quick, accepted_new, applied, errors);
    pipeline.stop(!main_complete).await?;

    // The rate against the shard count: every other count in a pipeline of its own, its search
    // starting from this one's maximum.
    let mut swept = Vec::new();
    for shards in SWEEP.into_iter().filter(|s| *s != options.shards) {
        let steps = if options.quick { 1 } else { 10 };
        let rate = if options.quick {
            options.rate
        } else {
            max.max(options.rate)
        };
        swept.push(pipeline::sweep(shards, rate, (steps, options.step), options.quick).await?);
    }
    let sweep_complete = swept
        .iter()
        .all(|s| pipeline::complete(options.quick, s.accepted_new, s.applied, s.errors));

    let ms = |v: Option<f64>| v.map_or("n/a".into(), |s| format!("{:.1} ms", s * 1000.0));
    let us = |v: Option<f64>| v.map_or("n/a".into(), |u| format!("{u:.0} µs"));
    let mib = |v: Option<u64>| v.map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
    println!("| figure | value |\n| --- | --- |");
    println!(
        "| raw broker round trip (publish with confirms, consume with acks, quorum queue) | {raw_rate:.0} msg/s |"
    );
    println!(
        "| CPU per message of the raw round trip: broker / client | {} / {} |",
        us(raw_broker),
        us(raw_client)
    );
    println!(
        "| the same round trip offered at the 80% step's rate ({health_rate}/s; {paced_rate:.0} consumed a second); CPU per message: broker / client | {} / {} |",
        us(paced_broker),
        us(paced_client)
    );
    println!(
        "| the same round trip with amqprs (no I/O thread); CPU per message: broker / client | {} |",
        amqprs.as_ref().map_or_else(
            |e| format!("failed: {e:#}"),
            |(rate, [broker, client])| format!(
                "{rate:.0} msg/s; {} / {}",
                us(*broker),
                us(*client)
            )
        )
    );
    println!(
        "| confirmed publishes to an exchange no queue is bound to; CPU per message: broker / client | {unrouted_rate:.0} msg/s; {} / {} |",
        us(unrouted_broker),
        us(unrouted_client)
    );
    println!(
        "| pipeline max sustained rate ({} shards) | {max} events/s |",
        options.shards
    );
    println!("| pipeline ÷ raw | {:.0}% |", max as f64 / raw_rate * 100.0);
    for s in &swept {
        println!(
            "| pipeline max sustained rate at {} shards (a namespace of its own) | {} events/s ({:.0}% of raw) |",
            s.shards,
            s.max,
            s.max as f64 / raw_rate * 100.0
        );
    }
    for (share, rate, step, [e2e, handled, confirmed], cpu, stages) in &rows {
        let q = |p: f64| step.latency.value_at_quantile(p) as f64 / 1000.0;
        println!(
            "| 202 latency at {share}% ({rate}/s): p50 / p99 / p99.9 | {:.1} / {:.1} / {:.1} ms |",
            q(0.5),
            q(0.99),
            q(0.999)
        );
        for (label, [p50, p99]) in [
            ("the gateway's own time on `POST /events`", handled),
            ("of which the wait for the broker's confirm", confirmed),
            ("end-to-end (receipt → applied)", e2e),
        ] {
            println!(
                "| {label} at {share}%: p50 / p99 | {} / {} |",
                ms(*p50),
                ms(*p99)
            );
        }
        let total = cpu.iter().copied().sum::<Option<f64>>();
        println!(
            "| CPU per event at {share}%: {} / total | {} / {} |",
            CPU_OF.join(" / "),
            cpu.iter().map(|c| us(*c)).collect::<Vec<_>>().join(" / "),
            us(total)
        );
        println!(
            "| processor stages per event at {share}% (wall time): {} | {} |",
            STAGES.join(" / "),
            stages
                .iter()
                .map(|s| us(*s))
                .collect::<Vec<_>>()
                .join(" / ")
        );
    }
    println!(
        "| the gateway's HTTP server alone: `GET /health` at {health_rate}/s ({} answered `200`, {} not); CPU per request: gateway / load generator | {} / {} |",
        health.accepted_new,
        health.errors,
        us(health_cpu[0]),
        us(health_cpu[1])
    );
    for (label, step, cpu) in &parts {
        println!(
            "| `GET /health` at {health_rate}/s from {label} ({} answered `200`, {} not); CPU per request: server / load generator | {} / {} |",
            step.accepted_new,
            step.errors,
            us(cpu[0]),
            us(cpu[1])
        );
    }
    // What each process's messages and server cost alone, from this run's own measurements,
    // beside what it spent per event at 80% and the target.
    let at_80 = rows
        .iter()
        .find(|row| row.0 == 80)
        .map_or([None; CPU_OF.len()], |row| row.4);
    let sum = |parts: [Option<f64>; 2]| parts.into_iter().sum::<Option<f64>>();
    for (process, least, floor, spent, target) in [
        (
            "gateway",
            "the least: its HTTP server alone + the client's side of one confirmed publish",
            sum([health_cpu[0], unrouted_client]),
            at_80[0],
            50,
        ),
        (
            "processor",
            "the raw round trip's client: one message consumed and one published, each settled alone, where the processor settles a batch at once, so not a floor",
            raw_client,
            at_80[1],
            50,
        ),
        (
            "processor",
            "the same with amqprs, the client without an I/O thread of its own",
            amqprs_client,
            at_80[1],
            50,
        ),
        (
            "RabbitMQ",
            "the least: one round trip + one confirmed publish no queue takes",
            sum([raw_broker, unrouted_broker]),
            at_80[3],
            120,
        ),
        (
            "RabbitMQ",
            "at the 80% step's rate, each message alone (a comparison, not a floor: the processor acknowledges a batch at once): one round trip at that pace + one confirmed publish no queue takes",
            sum([paced_broker, unrouted_broker]),
            at_80[3],
            120,
        ),
    ] {
        println!(
            "| CPU per event, {process}: {least} / spent at 80% / target | {} / {} / {target} µs |",
            us(floor),
            us(spent)
        );
    }
    println!(
        "| webhooks to a local receiver (every event a `product.updated`) | {webhooks_per_second:.0}/s ({webhooks_count} in {:.1} s) |",
        delivered.elapsed.as_secs_f64()
    );
    let rate = |d: Duration| backfilled.events as f64 / d.as_secs_f64();
    println!(
        "| backfill of {} price updates over {} products ({} in flight): all accepted / all applied | {:.1} s ({:.0}/s) / {:.1} s ({:.0}/s); {} refusals retried |",
        backfilled.events,
        backfilled.products,
        backfill::IN_FLIGHT,
        backfilled.accepted.as_secs_f64(),
        rate(backfilled.accepted),
        backfilled.applied.as_secs_f64(),
        rate(backfilled.applied),
        backfilled.retried
    );
    for timed in &listing {
        let q = |p: f64| timed.latency.value_at_quantile(p) as f64 / 1000.0;
        println!(
            "| `GET /products?limit=20&{}` over {} entries ({} items): p50 / p99 | {:.1} / {:.1} ms |",
            timed.query,
            options.catalog,
            timed.items,
            q(0.5),
            q(0.99)
        );
    }
    eprintln!(
        "catalog of {} written in {:.1} s",
        options.catalog,
        seeded.as_secs_f64()
    );
    println!(
        "| peak RSS: gateway / processor / notifier | {} / {} / {} |",
        mib(rss[0]),
        mib(rss[1]),
        mib(rss[2])
    );
    println!(
        "| authentication per request (a key in memory: header, SHA-256, lookup, scope) | {auth} |"
    );
    for (command, rps) in &redis {
        println!("| redis-benchmark {command} | {rps:.0} req/s |");
    }
    for (label, rate) in &strategies {
        println!("| idempotency claim + record pairs, 256 in flight, {label} | {rate} |");
    }
    println!(
        "| correctness: new events accepted / applied / errors | {accepted_new} / {applied} / {errors} |"
    );
    for s in &swept {
        println!(
            "| correctness at {} shards: accepted / applied / errors | {} / {} / {} |",
            s.shards, s.accepted_new, s.applied, s.errors
        );
    }

    anyhow::ensure!(
        main_complete && sweep_complete,
        "not every accepted event was applied exactly once, or requests failed (the logs' \
         directories are named above)"
    );
    Ok(())
}
