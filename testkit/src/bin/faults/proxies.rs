//! The single-broker run: one gateway and one processor reach RabbitMQ, Redis and PostgreSQL
//! through fault proxies; the connections are dropped, black-holed and slowed, and the services
//! SIGKILLed and SIGTERMed, one fault after another.

use std::time::Duration;

use testkit::{
    fault_proxy::{Fault, Faulty},
    sandbox::Sandbox,
    services::sigterm,
};

use crate::{Args, load::Load};

pub async fn run(args: &Args) -> anyhow::Result<()> {
    let sandbox = Sandbox::new();
    let backends = sandbox.backends();
    let faulty = Faulty::start(&backends).await;
    let services = crate::services_through(&faulty, &backends, "faults").await?;
    let mut processor = services.spawn("processor");
    let mut gateway = services.spawn("gateway");
    let client = crate::client(&backends).await?;
    let gateway_url = format!("http://{}", services.gateway_addr);
    testkit::wait::until_ready(&client, &gateway_url, Duration::from_secs(60)).await;
    let started = tokio::time::Instant::now();
    let mut load = Load::start(client, &[gateway_url], args.rate, &backends).await;

    // The faults, spread over the run; after each is lifted, the time until a new event is
    // accepted and applied.
    let step = Duration::from_secs(args.seconds.max(16) / 8);
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
        load.probe(name).await;
    }
    tokio::time::sleep(step / 2).await;
    processor.start_kill()?;
    processor.wait().await?;
    processor = services.spawn("processor");
    load.probe("processor_sigkill").await;
    tokio::time::sleep(step / 2).await;
    sigterm(&mut gateway).await;
    gateway = services.spawn("gateway");
    load.probe("gateway_sigterm").await;
    tokio::time::sleep(step / 2).await;
    sigterm(&mut processor).await;
    processor = services.spawn("processor");
    load.probe("processor_sigterm").await;

    tokio::time::sleep_until(started + Duration::from_secs(args.seconds)).await;
    let verdict = load.verdict().await?;
    println!("faults: {verdict}");
    sigterm(&mut gateway).await;
    sigterm(&mut processor).await;
    sandbox.remove().await?;
    crate::conclude(verdict.kept_promise(), &services.logs)
}
