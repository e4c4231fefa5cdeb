//! Downstream events: what the processor tells the rest of the world after each applied change
//! (`product.updated` with old and new values, `stock.low` when stock falls below the
//! threshold, `order.created`, `order.rejected`).
//!
//! They are written to the `outbox` table in the same transaction as the change, published to
//! the `{ns}.events` topic exchange (routing key = type) after the commit, and deleted once the
//! broker confirmed them; only then is the source acknowledged. A processor that dies between
//! commit and publish leaves them in the outbox, and the redelivered source (a duplicate by
//! then) publishes them. Each has a stable id, `{source event id}:{type}`, so consumers
//! deduplicate.

use rust_decimal::Decimal;
use serde_json::{Value, json};
use shared::{
    contract::{DOWNSTREAM_TYPES, OrderPlaced},
    model::{Price, ProductId},
};
use sqlx::PgPool;

/// One downstream event, ready to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Downstream {
    /// `{source event id}:{type}`.
    pub id: String,
    /// The event that caused it.
    pub source_event_id: String,
    /// Its type, also its routing key.
    pub kind: &'static str,
    /// The JSON body.
    pub payload: Value,
}

/// A product's price and stock at one moment.
pub type Values = (Option<Decimal>, Option<i32>);

fn event(source: &str, kind: &'static str, mut payload: Value) -> Downstream {
    let id = format!("{source}:{kind}");
    payload["id"] = json!(id);
    payload["type"] = json!(kind);
    payload["source_event_id"] = json!(source);
    Downstream {
        id,
        source_event_id: source.to_owned(),
        kind,
        payload,
    }
}

fn price(value: Option<Decimal>) -> Value {
    value
        .and_then(|d| Price::new(d).ok())
        .map_or(Value::Null, |p| json!(p))
}

/// The events of a product change from `old` to `new`: `product.updated`, and `stock.low` when
/// the stock went from at or above `threshold` (or unset) to below it.
pub fn product_changed(
    source: &str,
    product: &ProductId,
    old: Values,
    new: Values,
    threshold: i32,
) -> Vec<Downstream> {
    if old == new {
        return Vec::new();
    }
    let values = |(p, s): Values| json!({ "price": price(p), "stock": s });
    let mut events = vec![event(
        source,
        "product.updated",
        json!({ "product_id": product, "old": values(old), "new": values(new) }),
    )];
    if let Some(stock) = new.1
        && stock < threshold
        && old.1.is_none_or(|before| before >= threshold)
    {
        events.push(event(
            source,
            "stock.low",
            json!({ "product_id": product, "stock": stock, "threshold": threshold }),
        ));
    }
    events
}

/// The event of an order's outcome: `order.created`, or `order.rejected` with its reason.
pub fn order_decided(order: &OrderPlaced, rejection: Option<&str>) -> Downstream {
    let body = json!({
        "order_id": order.order_id,
        "sku": order.sku,
        "qty": order.qty,
        "email": order.email,
        "reason": rejection,
    });
    let kind = if rejection.is_some() {
        "order.rejected"
    } else {
        "order.created"
    };
    event(order.event_id.as_str(), kind, body)
}

/// Downstream events still waiting to be published for these source events.
pub async fn pending(pool: &PgPool, sources: &[String]) -> Result<Vec<Downstream>, sqlx::Error> {
    let rows: Vec<(String, String, String, Value)> = sqlx::query_as(
        "SELECT event_id, source_event_id, routing_key, payload FROM outbox
         WHERE source_event_id = ANY($1) ORDER BY seq",
    )
    .bind(sources)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, source_event_id, kind, payload)| {
            Some(Downstream {
                id,
                source_event_id,
                kind: DOWNSTREAM_TYPES.iter().find(|k| **k == kind)?,
                payload,
            })
        })
        .collect())
}

/// Forgets published events.
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

    fn id() -> ProductId {
        "p1".parse().expect("valid")
    }

    #[test]
    fn a_change_carries_old_and_new_values_and_a_stable_id() {
        let events = product_changed("e1", &id(), (None, Some(50)), (None, Some(40)), 10);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].id, "e1:product.updated");
        assert_eq!(events[0].payload["old"]["stock"], 50);
        assert_eq!(events[0].payload["new"]["stock"], 40);
    }

    #[test]
    fn stock_low_fires_only_when_crossing_the_threshold() {
        let crossing = product_changed("e1", &id(), (None, Some(10)), (None, Some(9)), 10);
        assert_eq!(
            crossing.iter().map(|e| e.kind).collect::<Vec<_>>(),
            ["product.updated", "stock.low"]
        );
        let already_low = product_changed("e2", &id(), (None, Some(5)), (None, Some(4)), 10);
        assert_eq!(already_low.len(), 1);
        let first_set_low = product_changed("e3", &id(), (None, None), (None, Some(3)), 10);
        assert_eq!(first_set_low.len(), 2);
        assert!(product_changed("e4", &id(), (None, Some(3)), (None, Some(3)), 10).is_empty());
    }
}
