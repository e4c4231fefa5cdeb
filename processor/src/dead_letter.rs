//! Setting a message aside in the dead-letter queue, with the reason and the context an
//! operator needs to act on it. The original is acknowledged only after the broker confirmed
//! the dead letter, so nothing is lost on the way.

use lapin::{
    BasicProperties, Channel, Confirmation,
    options::BasicPublishOptions,
    types::{AMQPValue, LongString},
};
use shared::{contract::headers, topology::Topology};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// Why a message was set aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Not JSON, or not a message type the pipeline knows.
    Unparseable,
    /// Well-formed but breaks the contract's rules (or the database refused it).
    Invalid,
}

impl Reason {
    /// The label carried in the message and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unparseable => "unparseable",
            Self::Invalid => "invalid",
        }
    }
}

/// A message as it arrived, to be set aside.
pub struct Poison<'a> {
    /// The body, untouched.
    pub data: &'a [u8],
    /// Its properties (message id, type, headers are kept).
    pub properties: &'a BasicProperties,
    /// The routing key it had on the ingest exchange.
    pub routing_key: &'a str,
}

/// Publishes `poison` to the dead-letter exchange with `reason` and `error` and waits for the
/// broker's confirm.
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
    table.insert(headers::DEAD_REASON.into(), text(reason.as_str()));
    table.insert(headers::DEAD_ERROR.into(), text(error));
    table.insert(headers::DEAD_SERVICE.into(), text("processor"));
    if !table.inner().contains_key(headers::DEAD_AT) {
        table.insert(headers::DEAD_AT.into(), text(&now));
    }
    table.insert(
        headers::ORIGINAL_ROUTING_KEY.into(),
        text(poison.routing_key),
    );
    let properties = poison
        .properties
        .clone()
        .with_headers(table)
        .with_delivery_mode(2);
    let confirmation = channel
        .basic_publish(
            topology.dead_letter_exchange().into(),
            poison.routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            poison.data,
            properties,
        )
        .await?
        .await?;
    match confirmation {
        Confirmation::Ack(None) => {
            metrics::counter!("pipeline_events_dead_lettered_total", "reason" => reason.as_str())
                .increment(1);
            Ok(())
        }
        other => anyhow::bail!("the dead-letter queue did not take the message: {other:?}"),
    }
}
