//! Setting a message aside: the dead-letter exchange gets it with why ([`Reason`]), the last
//! error, the attempts, when it first failed, which service set it aside and which queue it came
//! from, so that it can be listed, inspected and replayed back to that queue. The processor and
//! the notifier both dead-letter; the processor records and replays every dead letter.

use lapin::{
    BasicProperties, Channel,
    types::{AMQPValue, FieldTable, LongString},
};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::{
    connect::amqp::{Routing, send},
    consume::{Pending, Received, requeue, settle},
    contract::headers,
    topology::Topology,
};

/// Why a message was set aside.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, sqlx::Type, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Reason {
    /// Not JSON, or not a message type the pipeline knows.
    Unparseable,
    /// Well-formed but breaks the contract's rules, or the database refused it for good.
    Invalid,
    /// Failed on every rung of the retry ladder.
    AttemptsExhausted,
    /// Redelivered more than its queue's delivery limit (it crashed its consumer): the broker's.
    DeliveryLimit,
    /// Rejected by its consumer without requeueing: the broker's.
    Rejected,
    /// Expired in its queue: the broker's.
    Expired,
    /// Dropped by its queue's length limit: the broker's.
    Maxlen,
}

impl Reason {
    /// Every reason.
    pub const ALL: [Self; 7] = [
        Self::Unparseable,
        Self::Invalid,
        Self::AttemptsExhausted,
        Self::DeliveryLimit,
        Self::Rejected,
        Self::Expired,
        Self::Maxlen,
    ];

    /// The label carried in the message, the table and metrics (the broker's own names for
    /// its reasons).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unparseable => "unparseable",
            Self::Invalid => "invalid",
            Self::AttemptsExhausted => "attempts_exhausted",
            Self::DeliveryLimit => "delivery_limit",
            Self::Rejected => "rejected",
            Self::Expired => "expired",
            Self::Maxlen => "maxlen",
        }
    }

    /// The reason named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// Every reason's name, for error messages.
    pub fn names() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }
}

/// A message as it arrived, to be set aside.
pub struct Poison<'a> {
    /// The body, untouched.
    pub data: &'a [u8],
    /// Its properties (message id, type and headers are kept).
    pub properties: &'a BasicProperties,
    /// The routing key it had.
    pub routing_key: &'a str,
    /// The queue it was consumed from (where a replay sends it back).
    pub queue: &'a str,
    /// Delivery attempts made so far.
    pub attempts: u32,
}

impl Poison<'_> {
    /// Publishes the message, with `headers` for its headers, to `exchange` under its own
    /// routing key, and waits for the confirm (a queue must take it).
    pub async fn send_to(
        &self,
        channel: &Channel,
        exchange: &str,
        headers: FieldTable,
    ) -> anyhow::Result<()> {
        let properties = self.properties.clone().with_headers(headers);
        send(
            channel,
            exchange,
            self.routing_key,
            self.data,
            properties,
            Routing::Required,
        )
        .await?
        .confirmed()
        .await
    }
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

/// Where a service sets messages aside: its channel, the topology naming the dead-letter
/// exchange, and its own name (the dead letter's `service`).
pub struct Sender<'a> {
    /// The channel the dead letters are published on (in confirm mode).
    pub channel: &'a Channel,
    /// The namespace's topology.
    pub topology: &'a Topology,
    /// The service setting messages aside.
    pub service: &'a str,
}

impl Sender<'_> {
    /// Publishes `poison` to the dead-letter exchange with `reason`, `error` and the service
    /// that set it aside, and waits for the broker's confirm; only then may the caller
    /// acknowledge the original.
    pub async fn set_aside(
        &self,
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
            text(&crate::model::EventId::generate().to_string()),
        );
        table.insert(headers::DEAD_REASON.into(), text(reason.as_str()));
        table.insert(headers::DEAD_ERROR.into(), text(error));
        table.insert(headers::DEAD_SERVICE.into(), text(self.service));
        table.insert(headers::SOURCE_QUEUE.into(), text(poison.queue));
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
        poison
            .send_to(self.channel, &self.topology.dead_letter_exchange(), table)
            .await?;
        metrics::counter!(crate::metric::EVENTS_DEAD_LETTERED_TOTAL, "reason" => reason.as_str())
            .increment(1);
        Ok(())
    }

    /// The one way a consumer sets a delivery aside: dead-letters `poison` ([`Self::set_aside`])
    /// and settles the delivery it came from, acknowledged once the dead letter is confirmed
    /// and returned to its queue otherwise (it comes back, nothing is lost). True when set
    /// aside.
    pub async fn set_aside_and_settle(
        &self,
        poison: Poison<'_>,
        reason: Reason,
        error: &str,
        pending: Pending,
    ) -> bool {
        match self.set_aside(poison, reason, error).await {
            Ok(()) => {
                settle(pending).await;
                true
            }
            Err(e) => {
                tracing::warn!(reason = reason.as_str(), error = %e, "Could not dead-letter a message; it goes back to its queue.");
                requeue(pending).await;
                false
            }
        }
    }

    /// Sets aside, as [`Self::set_aside_and_settle`] does, a delivery taken whole off `queue`
    /// and counted as its first attempt. True when set aside.
    pub async fn set_aside_received(
        &self,
        queue: &str,
        delivery: Received,
        reason: Reason,
        error: &str,
    ) -> bool {
        let poison = Poison {
            data: &delivery.data,
            properties: &delivery.properties,
            routing_key: delivery.routing_key.as_str(),
            queue,
            attempts: 1,
        };
        self.set_aside_and_settle(poison, reason, error, delivery.pending)
            .await
    }
}
