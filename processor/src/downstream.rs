//! Downstream events: what the processor tells the rest of the world after each applied change
//! (`product.updated` with old and new values, `stock.low` when stock falls below the
//! threshold, `order.created`, `order.rejected`), as the contract's
//! [`Announcement`]s.
//!
//! They are kept on their source's inbox row ([`crate::store::inbox`]), written in the same
//! transaction as the change, and published to the `{ns}.events` topic exchange (routing key =
//! type) after the commit; only once the broker confirmed them is the source acknowledged. A
//! processor that dies between commit and publish leaves the source unacknowledged, and the
//! redelivered source (a duplicate by then) publishes what its row keeps ([`pending`]), as any
//! duplicate does. Each has a stable id, [`DownstreamId::of`] its source and type, so
//! consumers deduplicate.

use rust_decimal::Decimal;
use shared::{
    contract::{
        Announcement, DownstreamEvent, DownstreamId, EventKey, IngestKind, OrderDecided,
        OrderPlaced, ProductUpdated, ProductValues, StockLow,
    },
    model::{Price, ProductId, Rejection, Stock},
};
use sqlx::PgPool;
use time::OffsetDateTime;

/// One downstream event, ready to publish, with the event that caused it.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// Its source: kind, owner and id (the id is also the event's `source_event_id`).
    pub source: EventKey,
    /// The event.
    pub announcement: Announcement,
    /// Its body, made once: what its source's inbox row keeps and what is published, the same
    /// bytes (for a kept one, the bytes first published).
    pub body: String,
}

impl Pending {
    /// The announcement of `event`, caused by `source`, at `at`, with its body.
    fn new(source: EventKey, event: DownstreamEvent, at: OffsetDateTime) -> Self {
        let announcement = Announcement::new(&source, event, at);
        Self {
            body: announcement.text(),
            source,
            announcement,
        }
    }
}

/// A kept announcement this version cannot read (left by another version): set aside, not
/// skipped.
#[derive(Debug, Clone, PartialEq)]
pub struct Unreadable {
    /// Its source event's id (the announcement's own cannot be known): its message id.
    pub id: String,
    /// Its routing key.
    pub routing_key: String,
    /// Its body.
    pub body: Vec<u8>,
    /// Why it cannot be read.
    pub error: String,
}

/// A product's price and stock at one moment, as stored.
pub type Values = (Option<Decimal>, Option<i32>);

fn values((price, stock): Values) -> ProductValues {
    ProductValues {
        price: price.and_then(|p| Price::new(p).ok()),
        stock: stock.and_then(|s| Stock::new(i64::from(s)).ok()),
    }
}

/// The events of a product change from `old` to `new` by the event `source` at `at`:
/// `product.updated` (`product.created`, even unchanged, for a creation), and `stock.low` when
/// the stock went from at or above `threshold` (or unset) to below it.
pub fn product_changed(
    source: &EventKey,
    product: &ProductId,
    (old, new): (Values, Values),
    threshold: i32,
    at: OffsetDateTime,
) -> Vec<Pending> {
    let created = source.kind == IngestKind::ProductCreate;
    if old == new && !created {
        return Vec::new();
    }
    let pending = |event| Pending::new(source.clone(), event, at);
    let change = ProductUpdated {
        source_event_id: source.id.clone(),
        product_id: product.clone(),
        old: values(old),
        new: values(new),
    };
    let mut events = vec![pending(if created {
        DownstreamEvent::ProductCreated(change)
    } else {
        DownstreamEvent::ProductUpdated(change)
    })];
    if let Some(stock) = new.1
        && stock < threshold
        && old.1.is_none_or(|before| before >= threshold)
        && let Ok(stock) = Stock::new(i64::from(stock))
    {
        events.push(pending(DownstreamEvent::StockLow(StockLow {
            source_event_id: source.id.clone(),
            product_id: product.clone(),
            stock,
            threshold,
        })));
    }
    events
}

/// The event of an order's outcome at `at`: `order.created`, or `order.rejected` with its
/// reason.
pub fn order_decided(
    order: &OrderPlaced,
    rejection: Option<Rejection>,
    at: OffsetDateTime,
) -> Pending {
    let decided = OrderDecided {
        source_event_id: order.event_id.clone(),
        order_id: order.order_id.clone(),
        sku: order.sku.clone(),
        qty: order.qty,
        email: order.email.clone(),
        reason: rejection,
        placed_by: order.owner.clone(),
    };
    let event = match rejection {
        None => DownstreamEvent::OrderCreated(decided),
        Some(_) => DownstreamEvent::OrderRejected(decided),
    };
    let source = EventKey {
        kind: IngestKind::OrderCreate,
        owner: order.owner.clone(),
        id: order.event_id.clone(),
    };
    Pending::new(source, event, at)
}

/// The downstream events these source events caused (kept on their inbox rows, in the order
/// they were first published), to publish again, and those of them this version cannot read.
pub async fn pending(
    pool: &PgPool,
    sources: &[EventKey],
) -> Result<(Vec<Pending>, Vec<Unreadable>), sqlx::Error> {
    let rows: Vec<(IngestKind, String, String, String)> = sqlx::query_as(
        "SELECT p.kind, p.owner, p.event_id, a.body
         FROM UNNEST($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS e(kind, owner, id, n)
         JOIN processed_events p
              ON p.event_id = e.id AND p.kind = e.kind AND p.owner IN (e.owner, '')
         CROSS JOIN LATERAL unnest(p.announcements) WITH ORDINALITY AS a(body, i)
         ORDER BY e.n, a.i",
    )
    .bind(sources.iter().map(|k| k.kind.as_str()).collect::<Vec<_>>())
    .bind(sources.iter().map(|k| k.owner.as_str()).collect::<Vec<_>>())
    .bind(sources.iter().map(|k| k.id.as_str()).collect::<Vec<_>>())
    .fetch_all(pool)
    .await?;
    let (mut readable, mut unreadable) = (Vec::new(), Vec::new());
    for (kind, owner, id, body) in rows {
        match again(kind, &owner, &id, &body) {
            Ok((source, announcement)) => readable.push(Pending {
                source,
                announcement,
                body,
            }),
            Err(error) => unreadable.push(Unreadable {
                routing_key: routing_key(&body),
                body: body.into_bytes(),
                error: format!("kept by the {} {id:?} of {owner:?}: {error}", kind.as_str()),
                id,
            }),
        }
    }
    Ok((readable, unreadable))
}

/// A kept announcement of the event `kind`/`owner`/`id`, with the id it was published with,
/// and its source.
fn again(
    kind: IngestKind,
    owner: &str,
    id: &str,
    body: &str,
) -> Result<(EventKey, Announcement), String> {
    let source = EventKey {
        kind,
        owner: owner.parse().map_err(|e| format!("{e}"))?,
        id: id.parse().map_err(|e| format!("{e}"))?,
    };
    // The id is not in the body: it is the source's and the type's, as when first published.
    let mut announcement =
        Announcement::decode("kept", body.as_bytes()).map_err(|e| e.to_string())?;
    announcement.id = DownstreamId::of(&source, announcement.event.event_type());
    Ok((source, announcement))
}

/// The type a body names, as its routing key, or `unknown`.
fn routing_key(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["type"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::contract::{DownstreamId, EventType};

    fn key(source: &str) -> EventKey {
        EventKey {
            kind: IngestKind::ProductUpdate,
            owner: "shop".parse().expect("valid"),
            id: source.parse().expect("valid"),
        }
    }

    fn changed(source: &str, old: Values, new: Values) -> Vec<Pending> {
        let product: ProductId = "p1".parse().expect("valid");
        let at = OffsetDateTime::UNIX_EPOCH;
        product_changed(&key(source), &product, (old, new), 10, at)
    }

    fn types(events: &[Pending]) -> Vec<EventType> {
        events
            .iter()
            .map(|e| e.announcement.event.event_type())
            .collect()
    }

    #[test]
    fn a_change_carries_old_and_new_values_and_a_stable_id() {
        let events = changed("e1", (None, Some(50)), (None, Some(40)));
        assert_eq!(types(&events), [EventType::ProductUpdated]);
        assert_eq!(
            events[0].announcement.id,
            DownstreamId::of(&key("e1"), EventType::ProductUpdated)
        );
        let DownstreamEvent::ProductUpdated(updated) = &events[0].announcement.event else {
            panic!("a product.updated");
        };
        assert_eq!(updated.old.stock.map(Stock::value), Some(50));
        assert_eq!(updated.new.stock.map(Stock::value), Some(40));
    }

    #[test]
    fn stock_low_fires_only_when_crossing_the_threshold() {
        let crossing = changed("e1", (None, Some(10)), (None, Some(9)));
        assert_eq!(
            types(&crossing),
            [EventType::ProductUpdated, EventType::StockLow]
        );
        assert_eq!(changed("e2", (None, Some(5)), (None, Some(4))).len(), 1);
        assert_eq!(changed("e3", (None, None), (None, Some(3))).len(), 2);
        assert!(changed("e4", (None, Some(3)), (None, Some(3))).is_empty());
    }
}
