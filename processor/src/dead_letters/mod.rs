//! Dead letters: setting a message aside with its reason ([`set_aside`]), taking dead letters
//! off the dead-letter queue into PostgreSQL ([`intake`], [`store`]), and the operator's API to
//! list, inspect, replay and purge them ([`api`]).
//!
//! A message reaches the dead-letter exchange either from the processor (with the headers of
//! [`shared::contract::headers`]) or from the broker when a shard's delivery limit is exceeded
//! (with the broker's `x-death` headers); the intake records both the same way.

pub mod api;
pub mod intake;
pub mod store;

use lapin::{
    BasicProperties, Channel,
    types::{AMQPValue, LongString},
};
use shared::{connect::amqp::publish_confirmed, contract::headers, topology::Topology};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// Why a message was set aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Not JSON, or not a message type the pipeline knows.
    Unparseable,
    /// Well-formed but breaks the contract's rules, or the database refused it for good.
    Invalid,
    /// Failed on every rung of the retry ladder.
    AttemptsExhausted,
    /// Redelivered more than the shard queue's delivery limit (it crashed its consumer).
    DeliveryLimit,
}

impl Reason {
    /// The label carried in the message, the table and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unparseable => "unparseable",
            Self::Invalid => "invalid",
            Self::AttemptsExhausted => "attempts_exhausted",
            Self::DeliveryLimit => "delivery_limit",
        }
    }
}

/// A message as it arrived, to be set aside.
pub struct Poison<'a> {
    /// The body, untouched.
    pub data: &'a [u8],
    /// Its properties (message id, type and headers are kept).
    pub properties: &'a BasicProperties,
    /// The routing key it had on the ingest exchange.
    pub routing_key: &'a str,
    /// Delivery attempts made so far.
    pub attempts: u32,
}

/// Reads a text header.
pub fn text_header(properties: &BasicProperties, name: &str) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// Reads a numeric header.
pub fn number_header(properties: &BasicProperties, name: &str) -> Option<i64> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        _ => None,
    }
}

/// Publishes `poison` to the dead-letter exchange with `reason` and `error` and waits for the
/// broker's confirm; only then may the caller acknowledge the original.
pub async fn set_aside(
    channel: &Channel,
    topology: &Topology,
    poison: Poison<'_>,
    reason: Reason,
    error: &str,
) -> anyhow::Result<()> {
    let mut table = poison.properties.headers().clone().unwrap_or_default();
    let text = |s: &str| AMQPValue::LongString(LongString::from(s));
    let now = OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .expect("now always formats as RFC 3339");
    table.insert(
        headers::DEAD_LETTER_ID.into(),
        text(&shared::model::EventId::generate().to_string()),
    );
    table.insert(headers::DEAD_REASON.into(), text(reason.as_str()));
    table.insert(headers::DEAD_ERROR.into(), text(error));
    table.insert(headers::DEAD_SERVICE.into(), text("processor"));
    if !table.inner().contains_key(headers::DEAD_AT) {
        table.insert(headers::DEAD_AT.into(), text(&now));
    }
    table.insert(
        headers::ATTEMPTS.into(),
        AMQPValue::LongLongInt(i64::from(poison.attempts)),
    );
    table.insert(
        headers::ORIGINAL_ROUTING_KEY.into(),
        text(poison.routing_key),
    );
    let properties = poison.properties.clone().with_headers(table);
    publish_confirmed(
        channel,
        &topology.dead_letter_exchange(),
        poison.routing_key,
        poison.data,
        properties,
    )
    .await?;
    metrics::counter!("pipeline_events_dead_lettered_total", "reason" => reason.as_str())
        .increment(1);
    Ok(())
}
