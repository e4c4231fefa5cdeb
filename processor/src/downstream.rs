//! Downstream events: what the processor tells the rest of the world after each applied change
//! (`product.updated` with old and new values, `stock.low` when stock falls below the
//! threshold, `order.created`, `order.rejected`), as the contract's
//! [`Announcement`]s.
//!
//! They are written to the `outbox` table (this module owns it) in the same transaction as
//! the change, published to the `{ns}.events` topic exchange (routing key = type) after the
//! commit, and deleted once the broker confirmed them; only then is the source acknowledged. A
//! processor that dies between commit and publish leaves them in the outbox, and the redelivered
//! source (a duplicate by then) publishes them. Each has a stable id,
//! [`shared::contract::DownstreamId::of`] its source and type, so consumers deduplicate.

use rust_decimal::Decimal;
use shared::{
    contract::{
        Announcement, DownstreamEvent, EventKey, IngestKind, OrderDecided, OrderPlaced,
        ProductUpdated, ProductValues, StockLow,
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
}

/// An outbox row this version cannot read (left by another version): set aside, not skipped.
#[derive(Debug, Clone, PartialEq)]
pub struct Unreadable {
    /// Its id.
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
    let pending = |event| Pending {
        source: source.clone(),
        announcement: Announcement::new(source, event, at),
    };
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
    Pending {
        announcement: Announcement::new(&source, event, at),
        source,
    }
}

/// Downstream events still waiting to be published for these source events, and the rows of
/// theirs this version cannot read.
pub async fn pending(
    pool: &PgPool,
    sources: &[EventKey],
) -> Result<(Vec<Pending>, Vec<Unreadable>), sqlx::Error> {
    let rows: Vec<(String, String, String, String, String)> = sqlx::query_as(
        "SELECT event_id, source_kind, source_owner, routing_key, payload FROM outbox
         WHERE (source_kind, source_owner, source_event_id)
               IN (SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[]))
         ORDER BY seq",
    )
    .bind(sources.iter().map(|k| k.kind.as_str()).collect::<Vec<_>>())
    .bind(sources.iter().map(|k| k.owner.as_str()).collect::<Vec<_>>())
    .bind(sources.iter().map(|k| k.id.as_str()).collect::<Vec<_>>())
    .fetch_all(pool)
    .await?;
    let (mut readable, mut unreadable) = (Vec::new(), Vec::new());
    for (id, source_kind, source_owner, routing_key, body) in rows {
        let decoded = IngestKind::parse(&source_kind)
            .ok_or_else(|| format!("unknown source kind {source_kind:?}"))
            .and_then(|kind| {
                let owner = source_owner.parse().map_err(|e| format!("{e}"))?;
                Announcement::decode(&id, body.as_bytes())
                    .map(|announcement| Pending {
                        source: EventKey {
                            kind,
                            owner,
                            id: announcement.event.source_event_id().clone(),
                        },
                        announcement,
                    })
                    .map_err(|e| e.to_string())
            });
        match decoded {
            Ok(pending) => readable.push(pending),
            Err(error) => unreadable.push(Unreadable {
                id,
                routing_key,
                body: body.into_bytes(),
                error,
            }),
        }
    }
    Ok((readable, unreadable))
}

/// Writes `events` to the outbox (in the caller's transaction).
pub async fn record(tx: &mut sqlx::PgConnection, events: &[Pending]) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&Pending) -> String| events.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO outbox (event_id, source_kind, source_event_id, routing_key, payload,
                             source_owner)
         SELECT id, kind, source, key, body, owner
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
              AS u(id, kind, source, key, body, owner)
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(column(|e| e.announcement.id.to_string()))
    .bind(column(|e| e.source.kind.as_str().to_owned()))
    .bind(column(|e| {
        e.announcement.event.source_event_id().to_string()
    }))
    .bind(column(|e| {
        e.announcement.event.event_type().as_str().to_owned()
    }))
    .bind(column(|e| {
        String::from_utf8(e.announcement.body()).expect("JSON is UTF-8")
    }))
    .bind(column(|e| e.source.owner.to_string()))
    .execute(tx)
    .await?;
    Ok(())
}

/// Forgets published (or set aside) events.
pub async fn published(pool: &PgPool, ids: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM outbox WHERE event_id = ANY($1)")
        .bind(ids)
        .execute(pool)
        .await?;
    Ok(())
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
