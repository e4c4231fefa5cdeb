//! Broker topology: the namespace every name carries, shard routing, and the idempotent
//! declaration of exchanges and queues that both the gateway and the processor run at start.
//!
//! ```text
//! {ns}.ingest (direct) --"0".."N-1"--> {ns}.ingest.0 .. {ns}.ingest.{N-1}  (quorum, single active consumer)
//!                                           | x-delivery-limit exceeded
//!                                           v
//! {ns}.dead (fanout) ----------------> {ns}.dead (quorum): every dead letter, with its reason
//!
//! {ns}.events (topic) --type--> {ns}.notifier (quorum): downstream events, routing key = type
//!                                 (product.updated, stock.low, order.created, order.rejected),
//!                                 bound by the notifier to the types some subscription wants
//!                                 (the broker drops the rest); kept while it is not running
//!
//! {ns}.retry.{ms}ms (fanout) --> {ns}.retry.{ms}ms (quorum, TTL ms) --expired--> {ns}.ingest
//!                                 (one per rung of the retry ladder; original routing key kept)
//!
//! "" (default exchange) --> {ns}.images (quorum): image jobs, from the gateway to the imager
//!                                 | x-delivery-limit exceeded, or set aside by the imager
//!                                 v
//!                              {ns}.dead
//!
//! {ns}.images.retry.{ms}ms (fanout) --> {ns}.images.retry.{ms}ms (quorum, TTL ms)
//!                                 --expired--> {ns}.images: a job whose attempt failed waits
//!                                 here, off the images queue's head (one per rung)
//!
//! {ns}.shard-count (quorum, always empty): the namespace's shard count as its x-max-length
//! ```

use std::{str::FromStr, time::Duration};

use lapin::{
    Channel, Connection, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
};

use crate::model::ProductId;

/// The prefix of every exchange, queue and Redis key, and the PostgreSQL schema, so that test
/// runs and a dev stack can share one broker, Redis and database. `[a-z][a-z0-9_]{0,39}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace(String);

impl Namespace {
    /// The namespace as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Namespace {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = s.bytes();
        let starts_with_letter = bytes.next().is_some_and(|b| b.is_ascii_lowercase());
        if !starts_with_letter
            || s.len() > 40
            || !bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err("must be 1-40 characters of a-z, 0-9 and '_', starting with a letter");
        }
        Ok(Self(s.to_owned()))
    }
}

/// Times a quorum queue redelivers a message before dead-lettering it with reason
/// `delivery_limit`: the safety net for messages that crash their consumer.
pub const DELIVERY_LIMIT: i64 = 10;

/// The names and shape of the pipeline's exchanges and queues in one namespace.
#[derive(Clone, Debug)]
pub struct Topology {
    namespace: Namespace,
    shards: u16,
}

impl Topology {
    /// The topology of `namespace` with `shards` ingest shard queues (at least one).
    pub fn new(namespace: Namespace, shards: u16) -> Self {
        Self {
            namespace,
            shards: shards.max(1),
        }
    }

    /// The namespace.
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// Number of ingest shards.
    pub fn shards(&self) -> u16 {
        self.shards
    }

    /// The durable direct exchange the gateway publishes to.
    pub fn ingest_exchange(&self) -> String {
        format!("{}.ingest", self.namespace.as_str())
    }

    /// The queue of shard `shard`.
    pub fn shard_queue(&self, shard: u16) -> String {
        format!("{}.ingest.{shard}", self.namespace.as_str())
    }

    /// The topic exchange downstream events are published to (routing key = event type).
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.namespace.as_str())
    }

    /// The queue the notifier consumes: the downstream events some subscription wants.
    pub fn notifier_queue(&self) -> String {
        format!("{}.notifier", self.namespace.as_str())
    }

    /// The queue of image jobs the imager consumes (published through the default exchange).
    pub fn images_queue(&self) -> String {
        format!("{}.images", self.namespace.as_str())
    }

    /// The fanout exchange dead letters go through.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dead", self.namespace.as_str())
    }

    /// The queue that keeps dead letters until an operator acts.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead", self.namespace.as_str())
    }

    /// The fanout exchange of the retry rung that waits `delay`.
    pub fn retry_exchange(&self, delay: Duration) -> String {
        format!("{}.retry.{}ms", self.namespace.as_str(), delay.as_millis())
    }

    /// The queue of the retry rung that waits `delay` (same name as its exchange).
    pub fn retry_queue(&self, delay: Duration) -> String {
        self.retry_exchange(delay)
    }

    /// The fanout exchange (and queue) of the image jobs' retry rung that waits `delay`.
    pub fn images_retry_exchange(&self, delay: Duration) -> String {
        format!(
            "{}.images.retry.{}ms",
            self.namespace.as_str(),
            delay.as_millis()
        )
    }

    /// The shard of a product: a stable hash of its id modulo the shard count, so every event
    /// of one product lands on one queue, in order, across restarts and replicas.
    pub fn shard_for(&self, product: &ProductId) -> u16 {
        let shards = u64::from(self.shards);
        u16::try_from(fnv1a(product.as_str().as_bytes()) % shards)
            .expect("a value below a u16 shard count fits a u16")
    }

    /// The routing key of shard `shard` on the ingest exchange.
    pub fn routing_key(shard: u16) -> String {
        shard.to_string()
    }

    /// The queue that records the namespace's shard count in its `x-max-length` (it never holds
    /// a message): the broker refuses to redeclare it with another count. A quorum queue, so
    /// it stays declarable while any one node of a cluster is down (a classic queue cannot be
    /// declared while its home node is away, which would keep every service from starting).
    pub fn shard_count_queue(&self) -> String {
        format!("{}.shard-count", self.namespace.as_str())
    }

    /// Refuses a shard count other than the namespace's: with `INGEST_SHARDS` changed while
    /// events wait in the shard queues, or while services with the old count still run, a
    /// product's events would be split over two queues and applied out of order. The first
    /// service to start a namespace records its count ([`Self::shard_count_queue`]); every later
    /// declaration with another count is refused by the broker (an inequivalent argument).
    pub async fn check_shards(&self, connection: &Connection) -> anyhow::Result<()> {
        let channel = connection.create_channel().await?;
        let mut arguments = quorum_arguments();
        arguments.insert(
            "x-max-length".into(),
            AMQPValue::LongLongInt(i64::from(self.shards)),
        );
        let options = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let declared = channel
            .queue_declare(self.shard_count_queue().as_str().into(), options, arguments)
            .await;
        match declared {
            Ok(_) => {
                channel.close(200, "shard count checked".into()).await?;
                Ok(())
            }
            Err(e) if matches!(e.kind(), lapin::ErrorKind::ProtocolError(error) if error.get_id() == 406) =>
            {
                anyhow::bail!(
                    "INGEST_SHARDS is {} but namespace {} was started with another shard count \
                     ({e}): changing it while events wait in the shard queues, or while services \
                     with the old count run, would apply a product's events out of order. To \
                     change it: stop the gateways, let the processors drain every {}.ingest.* \
                     queue, stop every service, delete those queues and {}, then start every \
                     service with the new INGEST_SHARDS (docs/deploy.md)",
                    self.shards,
                    self.namespace.as_str(),
                    self.namespace.as_str(),
                    self.shard_count_queue(),
                );
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Declares every exchange, queue and binding on a channel of its own, once the shard count
    /// is checked ([`Self::check_shards`]); safe to run any number of times, from any number of
    /// services at once.
    pub async fn declare(&self, connection: &Connection) -> anyhow::Result<()> {
        self.check_shards(connection).await?;
        let channel = connection.create_channel().await?;
        self.declare_on(&channel).await?;
        channel.close(200, "topology declared".into()).await?;
        Ok(())
    }

    async fn declare_on(&self, channel: &Channel) -> lapin::Result<()> {
        let dead = self.dead_letter_exchange();
        exchange(channel, &dead, ExchangeKind::Fanout).await?;
        queue(channel, &self.dead_letter_queue(), quorum_arguments()).await?;
        bind(channel, &self.dead_letter_queue(), &dead, "").await?;
        exchange(channel, &self.ingest_exchange(), ExchangeKind::Direct).await?;
        exchange(channel, &self.events_exchange(), ExchangeKind::Topic).await?;
        // The notifier's and the imager's queues: dead letters after the delivery limit.
        let mut consumed = dead_lettering_to(&dead);
        consumed.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(DELIVERY_LIMIT),
        );
        // Bound only to the types some subscription wants, by the notifier.
        queue(channel, &self.notifier_queue(), consumed.clone()).await?;
        queue(channel, &self.images_queue(), consumed).await?;
        for shard in 0..self.shards {
            let mut arguments = dead_lettering_to(&dead);
            arguments.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
            arguments.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongLongInt(DELIVERY_LIMIT),
            );
            let name = self.shard_queue(shard);
            queue(channel, &name, arguments).await?;
            let key = Self::routing_key(shard);
            bind(channel, &name, &self.ingest_exchange(), &key).await?;
        }
        Ok(())
    }
}

impl Topology {
    /// Declares one retry rung per delay: a message published to a rung's exchange waits out
    /// the delay in its queue, then expires back to the ingest exchange with its original
    /// routing key, so it returns to its own shard.
    pub async fn declare_retry_ladder(
        &self,
        channel: &Channel,
        delays: &[Duration],
    ) -> lapin::Result<()> {
        let back = dead_lettering_to(&self.ingest_exchange());
        rungs(channel, delays, |delay| self.retry_exchange(delay), &back).await
    }
}

impl Topology {
    /// Declares one image retry rung per delay: a job published to a rung's exchange waits out
    /// the delay in its queue, then expires back to the images queue (by the default exchange).
    pub async fn declare_images_retry(
        &self,
        channel: &Channel,
        delays: &[Duration],
    ) -> lapin::Result<()> {
        let mut back = dead_lettering_to("");
        back.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(self.images_queue().into()),
        );
        rungs(
            channel,
            delays,
            |delay| self.images_retry_exchange(delay),
            &back,
        )
        .await
    }
}

/// Declares a retry rung per delay, named by `name_of` it, each dead-lettering as `back` says.
async fn rungs(
    channel: &Channel,
    delays: &[Duration],
    name_of: impl Fn(Duration) -> String,
    back: &FieldTable,
) -> lapin::Result<()> {
    for delay in delays {
        rung(channel, &name_of(*delay), *delay, back.clone()).await?;
    }
    Ok(())
}

/// Declares the retry rung `name`: a fanout exchange of that name bound to a queue of that name,
/// where a message waits out `delay`, then expires as `arguments` dead-letter it.
async fn rung(
    channel: &Channel,
    name: &str,
    delay: Duration,
    mut arguments: FieldTable,
) -> lapin::Result<()> {
    exchange(channel, name, ExchangeKind::Fanout).await?;
    arguments.insert(
        "x-message-ttl".into(),
        AMQPValue::LongLongInt(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
    );
    queue(channel, name, arguments).await?;
    bind(channel, name, name, "").await
}

/// Declares the durable exchange `name`.
async fn exchange(channel: &Channel, name: &str, kind: ExchangeKind) -> lapin::Result<()> {
    let options = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(name.into(), kind, options, FieldTable::default())
        .await
}

/// Declares the durable queue `name` with `arguments`.
async fn queue(channel: &Channel, name: &str, arguments: FieldTable) -> lapin::Result<()> {
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(name.into(), options, arguments)
        .await
        .map(drop)
}

/// Binds the queue `name` to `exchange` with `key`.
async fn bind(channel: &Channel, name: &str, exchange: &str, key: &str) -> lapin::Result<()> {
    channel
        .queue_bind(
            name.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// Quorum queue arguments that dead-letter to `exchange`, at least once: a message leaving
/// the queue (delivery limit, expiry) is kept until the target queue has confirmed it, never
/// dropped on the way (this requires `reject-publish` overflow).
fn dead_lettering_to(exchange: &str) -> FieldTable {
    let mut arguments = quorum_arguments();
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(exchange.into()),
    );
    arguments.insert(
        "x-dead-letter-strategy".into(),
        AMQPValue::LongString("at-least-once".into()),
    );
    arguments.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    arguments
}

fn quorum_arguments() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    arguments
}

/// 64-bit FNV-1a: tiny, stable across versions and platforms, and well spread for short keys.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn a_product_always_maps_to_the_same_shard_and_all_shards_are_used() {
        let topology = Topology::new("t".parse().expect("valid namespace"), 4);
        let id: ProductId = "sku-1".parse().expect("valid id");
        assert_eq!(topology.shard_for(&id), topology.shard_for(&id));
        let mut seen = [false; 4];
        for i in 0..100 {
            let id: ProductId = format!("sku-{i}").parse().expect("valid id");
            seen[usize::from(topology.shard_for(&id))] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn namespaces_are_safe_identifiers() {
        assert!("pipeline".parse::<Namespace>().is_ok());
        assert!("t_0123abc".parse::<Namespace>().is_ok());
        for bad in ["", "1abc", "Abc", "a-b", "a.b", &"a".repeat(41)] {
            assert!(bad.parse::<Namespace>().is_err(), "{bad:?}");
        }
    }
}
