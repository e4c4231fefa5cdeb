//! The partitions run: the gateway, two processors and the notifier, each in a network namespace
//! of the run's own, reach RabbitMQ, Redis and PostgreSQL through forwarders on the run's bridge,
//! and the notifier a webhook receiver there. One scenario after another under the load, a link
//! is cut (its packets dropped, so connections hang rather than fail), cut one way, or made slow
//! and lossy, then healed; each scenario is a row of the table the run prints. Besides the load's
//! verdict, every accepted order must reach the receiver as one webhook, signed with the
//! subscription's secret.

use std::{collections::BTreeMap, time::Duration};

use testkit::{
    fault_proxy::{Fault, Faulty},
    netns::{Host, Network, Way},
    sandbox::Sandbox,
    services::sigterm,
    webhooks::Receiver,
};
use tokio::process::Child;

use crate::{Args, load::Load};

/// Shards: four for each processor.
const SHARDS: u16 = 8;
/// How long the slow, lossy links last, whatever the other faults' length.
const SLOW_AT_LEAST: Duration = Duration::from_secs(60);
/// The port every service listens on, each in its own namespace.
const PORT: u16 = 8080;
/// The notifier's settings: endpoints reachable on the bridge's private address, a short
/// answer timeout and retries that outlast a fault (91 s in all) without failing a delivery.
const NOTIFIER_ENV: [(&str, &str); 3] = [
    ("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true"),
    ("WEBHOOK_TIMEOUT_MS", "2000"),
    (
        "WEBHOOK_RETRY_SCHEDULE_MS",
        "1000,2000,4000,8000,16000,30000,30000",
    ),
];

/// What a scenario does to the network, and undoes.
enum Cut<'a> {
    /// The host's link to a peer (a forwarder, the webhook receiver), cut `way`.
    Link(&'a Host, std::net::SocketAddr, Way),
    /// Every host's link to the broker slow (the forwarder's delay) and lossy.
    SlowBroker(Duration, Duration, u8),
}

/// The run's hosts.
struct Hosts<'a> {
    gateway: &'a Host,
    /// The one a scenario cuts first, and the other.
    processors: [&'a Host; 2],
    notifier: &'a Host,
}

impl<'a> Hosts<'a> {
    fn all(&self) -> [&'a Host; 4] {
        let [cut, other] = self.processors;
        [self.gateway, cut, other, self.notifier]
    }
}

/// The scenarios, by name, in the order they run.
fn scenarios<'a>(
    hosts: &Hosts<'a>,
    faulty: &Faulty,
    receiver: std::net::SocketAddr,
) -> [(&'static str, Cut<'a>); 8] {
    let [cut_processor, other_processor] = hosts.processors;
    [
        (
            "processor_cut_from_broker",
            Cut::Link(cut_processor, faulty.amqp.addr(), Way::Both),
        ),
        (
            "processor_cut_from_postgres",
            Cut::Link(cut_processor, faulty.postgres.addr(), Way::Both),
        ),
        (
            "processor_mute_to_broker",
            Cut::Link(other_processor, faulty.amqp.addr(), Way::Outgoing),
        ),
        (
            "gateway_cut_from_redis",
            Cut::Link(hosts.gateway, faulty.redis.addr(), Way::Both),
        ),
        (
            "gateway_cut_from_broker",
            Cut::Link(hosts.gateway, faulty.amqp.addr(), Way::Both),
        ),
        (
            "notifier_cut_from_receiver",
            Cut::Link(hosts.notifier, receiver, Way::Both),
        ),
        (
            "notifier_cut_from_postgres",
            Cut::Link(hosts.notifier, faulty.postgres.addr(), Way::Both),
        ),
        (
            "slow_lossy_broker_links",
            Cut::SlowBroker(Duration::from_millis(200), Duration::from_millis(100), 5),
        ),
    ]
}

/// One scenario under the running load: `cut` made, every shard checked to be served while it
/// lasts (`fault`; a minute at least for the slow links), then every host healed and the
/// recovery probed.
async fn inflict(
    name: &'static str,
    cut: &Cut<'_>,
    fault: Duration,
    hosts: &Hosts<'_>,
    faulty: &Faulty,
    load: &mut Load,
) -> anyhow::Result<()> {
    load.begin(name);
    let started = tokio::time::Instant::now();
    match cut {
        Cut::Link(host, peer, way) => host.cut(*peer, *way)?,
        Cut::SlowBroker(delay, spread, loss) => {
            faulty.amqp.set(Fault::Jitter(*delay, *spread));
            for host in hosts.all() {
                host.lossy(faulty.amqp.addr(), *loss)?;
            }
        }
    }
    // A processor's shards must be served by the other while the fault lasts (the notifier's
    // faults do not touch them); with the one gateway cut, nothing can be until it heals.
    if !matches!(cut, Cut::Link(host, ..) if std::ptr::eq(*host, hosts.gateway)) {
        load.served_by_every_shard(fault).await;
    }
    let lasts = match cut {
        Cut::SlowBroker(..) => fault.max(SLOW_AT_LEAST),
        Cut::Link(..) => fault,
    };
    tokio::time::sleep_until(started + lasts).await;
    faulty.amqp.set(Fault::Pass);
    for host in hosts.all() {
        host.heal()?;
    }
    load.probe(name).await;
    Ok(())
}

pub async fn run(args: &Args, fault: Duration) -> anyhow::Result<()> {
    let mut network = Network::create()?;
    let sandbox = Sandbox::with_shards(SHARDS);
    let backends = sandbox.backends();
    let faulty = Faulty::start_on(network.address().into(), &backends).await;
    let services = crate::services_through(&faulty, &backends, "faults-partitions").await?;
    let gateway_host = network.host("gw")?;
    let processor_hosts = [network.host("p1")?, network.host("p2")?];
    let notifier_host = network.host("nt")?;
    let listen = format!("0.0.0.0:{PORT}");
    let mut gateway = services.spawn_in(
        &gateway_host,
        "gateway",
        "gateway",
        &[("GATEWAY_ADDR", &listen)],
    );
    let mut processors: Vec<Child> = processor_hosts
        .iter()
        .enumerate()
        .map(|(n, host)| {
            let log = format!("processor-{n}");
            services.spawn_in(host, "processor", &log, &[("PROCESSOR_ADDR", &listen)])
        })
        .collect();
    let mut notifier_env = NOTIFIER_ENV.to_vec();
    notifier_env.push(("NOTIFIER_ADDR", &listen));
    let mut notifier = services.spawn_in(&notifier_host, "notifier", "notifier", &notifier_env);
    let client = crate::client(&backends).await?;
    let url = |host: &Host| format!("http://{}:{PORT}", host.address());
    for host in [&gateway_host, &notifier_host]
        .into_iter()
        .chain(&processor_hosts)
    {
        testkit::wait::until_ready(&client, &url(host), Duration::from_secs(120)).await;
    }
    let receiver = Receiver::start_on(network.address().into(), &[], None).await;
    let types = ["order.created", "order.rejected"];
    let (_, secret) = receiver
        .subscribe(&client, &url(&notifier_host), &types)
        .await;
    let processor_urls: Vec<String> = processor_hosts.iter().map(url).collect();
    let mut load = Load::start(client.clone(), &[url(&gateway_host)], args.rate, &backends).await;

    let hosts = Hosts {
        gateway: &gateway_host,
        processors: [&processor_hosts[0], &processor_hosts[1]],
        notifier: &notifier_host,
    };
    let chosen = scenarios(&hosts, &faulty, receiver.addr())
        .into_iter()
        .filter(|(name, _)| {
            args.only
                .as_ref()
                .is_none_or(|only| only.iter().any(|o| o == name))
        });
    for (name, cut) in chosen {
        // Each fault starts from shards shared evenly, so the cut processor holds its half.
        shared_evenly(&client, &processor_urls).await;
        inflict(name, &cut, fault, &hosts, &faulty, &mut load).await?;
    }

    let verdict = load.verdict().await?;
    let webhooks = Webhooks::check(&receiver, &secret, &verdict.orders_accepted).await;
    println!("partitions:\n{}", verdict.table());
    println!("partitions: {verdict}");
    println!("partitions: webhooks: {webhooks}");
    sigterm(&mut notifier).await;
    sigterm(&mut gateway).await;
    for processor in &mut processors {
        sigterm(processor).await;
    }
    drop(network);
    sandbox.remove().await?;
    crate::conclude(verdict.kept_promise() && webhooks.kept(), &services.logs)
}

/// What the receiver got for the accepted orders.
struct Webhooks {
    /// Orders accepted (each must be announced once, as created or rejected).
    expected: usize,
    /// Orders with no webhook that verifies.
    missing: usize,
    /// Orders announced under more than one `webhook-id` (a repeat of one id is a retry the
    /// receiver deduplicates; two ids are two events).
    doubled: usize,
    /// Requests whose signature does not verify with the subscription's secret.
    badly_signed: usize,
    /// Requests in all, repeats included.
    requests: usize,
}

impl Webhooks {
    /// Waits (up to two minutes) until every accepted order has a webhook, then counts.
    async fn check(
        receiver: &Receiver,
        secret: &str,
        orders: &std::collections::BTreeSet<String>,
    ) -> Self {
        let count = || {
            let received = receiver.received();
            let mut ids: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
            let mut badly_signed = 0;
            for request in &received {
                if !request.signed_with(secret) {
                    badly_signed += 1;
                    continue;
                }
                let body: serde_json::Value =
                    serde_json::from_slice(&request.body).unwrap_or_default();
                if let Some(order) = body["data"]["order_id"].as_str() {
                    ids.entry(order.to_owned())
                        .or_default()
                        .insert(request.header("webhook-id").to_owned());
                }
            }
            Self {
                expected: orders.len(),
                missing: orders.iter().filter(|o| !ids.contains_key(*o)).count(),
                doubled: ids.values().filter(|ids| ids.len() > 1).count(),
                badly_signed,
                requests: received.len(),
            }
        };
        testkit::wait::eventually_or(Duration::from_secs(120), || async {
            let seen = count();
            (seen.missing == 0).then_some(())
        })
        .await;
        count()
    }

    fn kept(&self) -> bool {
        self.missing == 0 && self.doubled == 0 && self.badly_signed == 0
    }
}

impl std::fmt::Display for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "orders={} missing={} doubled={} badly_signed={} requests={}",
            self.expected, self.missing, self.doubled, self.badly_signed, self.requests
        )
    }
}

/// Waits until each processor's `/ready` says it owns its even share of the shards.
async fn shared_evenly(client: &reqwest::Client, processors: &[String]) {
    let share = usize::from(SHARDS) / processors.len();
    testkit::wait::eventually(
        "the shards shared evenly",
        Duration::from_secs(120),
        || async {
            for processor in processors {
                let (_, ready) =
                    testkit::http::get_json(client, &format!("{processor}/ready")).await;
                let owned = ready["shards"]["owned"].as_array().map_or(0, Vec::len);
                if owned != share {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
}
