//! Deciding a batch, without I/O: from the batch, which of its events are new, and the current
//! rows of the products it touches, to a plan: each event's outcome, the rows as they will be,
//! the orders' decisions and the downstream events. [`super::apply`] reads the rows and writes
//! the plan in one transaction.

use std::collections::{HashMap, HashSet};

use shared::{
    contract::{EventKey, Ingest, OrderPlaced},
    model::{Price, ProductId, Rejection, Stock},
    processor::products::Versioned,
};
use time::OffsetDateTime;

use super::{Outcome, inbox};
use crate::downstream::{self, Pending};

/// What a batch does.
#[derive(Debug)]
pub struct Plan<'a> {
    /// Per event, in the order given.
    pub outcomes: Vec<Outcome>,
    /// Every product the batch touched, as it will be, and whether it is to be written.
    pub products: HashMap<ProductId, (Versioned, bool)>,
    /// The orders decided, and why each rejected one was.
    pub orders: Vec<(&'a OrderPlaced, Option<Rejection>)>,
    /// The downstream events, in the order of their causes.
    pub emitted: Vec<Pending>,
}

/// Decides `items` in order against `rows` (the current rows of the products they touch):
/// an event in `new` applies once (a repeat within the batch is a duplicate), an event not in
/// `new` is a duplicate. An update merges into its product field by field, creating it if it
/// has no row; an order takes its quantity from its product's stock or is rejected (an unknown
/// product, too little stock). An order changes the stock's value but not its version: a later
/// stock update (by `occurred_at`) still sets the stock outright, an older one stays stale.
/// Events caused now are stamped `at`; `stock.low` fires when stock falls below
/// `stock_low_threshold`.
pub fn decide<'a>(
    items: &'a [Ingest],
    new: &HashSet<EventKey>,
    rows: Vec<Versioned>,
    stock_low_threshold: i32,
    at: OffsetDateTime,
) -> Plan<'a> {
    let mut plan = Plan {
        outcomes: Vec::with_capacity(items.len()),
        products: rows
            .into_iter()
            .map(|p| (p.product_id.clone(), (p, false)))
            .collect(),
        orders: Vec::new(),
        emitted: Vec::new(),
    };
    let mut applied_here = HashSet::new();
    for item in items {
        let key = item.key();
        let outcome = if new.contains(&key) && applied_here.insert(key) {
            plan.apply(item, stock_low_threshold, at)
        } else {
            Outcome::Duplicate
        };
        plan.outcomes.push(outcome);
    }
    plan
}

impl<'a> Plan<'a> {
    /// Applies one new event to the rows and notes what it emits.
    fn apply(&mut self, item: &'a Ingest, stock_low_threshold: i32, at: OffsetDateTime) -> Outcome {
        let id = item.event_id().as_str();
        let product = item.product();
        if let Ingest::Product(_) | Ingest::Created(_) = item {
            self.products
                .entry(product.clone())
                .or_insert_with(|| (Versioned::new(product, at), true));
        }
        let entry = self.products.get_mut(product);
        let before = entry.as_ref().map(|(p, _)| (p.price.value, p.stock.value));
        let outcome = match (item, entry) {
            (Ingest::Product(update) | Ingest::Created(update), Some((row, changed))) => {
                let version = (update.occurred_at, id);
                let price = row.price.offer(update.price.map(Price::value), version);
                let stock = row.stock.offer(update.stock.map(Stock::value), version);
                *changed |= price || stock;
                if price || stock {
                    Outcome::Changed
                } else {
                    Outcome::Stale
                }
            }
            // Inserted just above.
            (Ingest::Product(_) | Ingest::Created(_), None) => Outcome::Stale,
            (Ingest::Order(order), entry) => {
                let rejection = reserve(order, entry);
                self.orders.push((order, rejection));
                self.emitted
                    .push(downstream::order_decided(order, rejection, at));
                rejection.map_or(Outcome::OrderCreated, Outcome::OrderRejected)
            }
        };
        if let (Some(before), Some((row, _))) = (before, self.products.get(product)) {
            self.emitted.extend(downstream::product_changed(
                &item.key(),
                item.product(),
                (before, (row.price.value, row.stock.value)),
                stock_low_threshold,
                at,
            ));
        }
        outcome
    }

    /// The events of `items` (those [`decide`] was given) that were applied, each with the
    /// bodies of the downstream events it caused: their inbox rows.
    pub fn applied<'p>(&'p self, items: &'p [Ingest]) -> Vec<inbox::Applied<'p>> {
        items
            .iter()
            .zip(&self.outcomes)
            .filter(|(_, outcome)| **outcome != Outcome::Duplicate)
            .map(|(item, _)| {
                let key = item.key();
                let announcements = self
                    .emitted
                    .iter()
                    .filter(|e| e.source == key)
                    .map(|e| e.body.as_str())
                    .collect();
                inbox::Applied {
                    item,
                    announcements,
                }
            })
            .collect()
    }

    /// The rows to write.
    pub fn changed(&mut self) -> Vec<&mut Versioned> {
        self.products
            .values_mut()
            .filter(|(_, changed)| *changed)
            .map(|(p, _)| p)
            .collect()
    }
}

/// Takes the order's quantity from its product's stock, or says why not.
fn reserve(order: &OrderPlaced, product: Option<&mut (Versioned, bool)>) -> Option<Rejection> {
    let Some((product, changed)) = product else {
        return Some(Rejection::UnknownProduct);
    };
    let available = product.stock.value.unwrap_or(0);
    if available < order.qty.value() {
        return Some(Rejection::InsufficientStock);
    }
    product.stock.value = Some(available - order.qty.value());
    *changed = true;
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::contract::{DownstreamEvent, EventType, IngestKind, ProductUpdate};
    use time::macros::datetime;

    const AT: OffsetDateTime = datetime!(2026-11-22 12:00 UTC);

    fn update(
        id: &str,
        product: &str,
        price: Option<&str>,
        stock: Option<i64>,
        second: u8,
    ) -> Ingest {
        Ingest::Product(ProductUpdate {
            event_id: id.parse().expect("valid id"),
            owner: "shop".parse().expect("valid owner"),
            product_id: product.parse().expect("valid product"),
            price: price.map(|p| p.parse().expect("valid price")),
            stock: stock.map(|s| Stock::new(s).expect("valid stock")),
            occurred_at: datetime!(2026-11-22 11:00 UTC) + time::Duration::seconds(second.into()),
            received_at: AT,
        })
    }

    fn order(id: &str, sku: &str, qty: &str) -> Ingest {
        let order_id = id.parse().expect("valid order id");
        Ingest::Order(OrderPlaced {
            event_id: OrderPlaced::event_id_of(&order_id),
            owner: "shop".parse().expect("valid owner"),
            order_id,
            sku: sku.parse().expect("valid sku"),
            qty: qty.parse().expect("valid quantity"),
            email: None,
            received_at: AT,
        })
    }

    /// Every item is new.
    fn all_new(items: &[Ingest]) -> HashSet<EventKey> {
        items.iter().map(Ingest::key).collect()
    }

    fn with_stock(product: &str, stock: i32) -> Versioned {
        let mut row = Versioned::new(&product.parse().expect("valid product"), AT);
        row.stock
            .offer(Some(stock), (datetime!(2026-11-22 10:00 UTC), "seed"));
        row
    }

    fn types(plan: &Plan) -> Vec<EventType> {
        plan.emitted
            .iter()
            .map(|e| e.announcement.event.event_type())
            .collect()
    }

    #[test]
    fn an_update_of_an_unknown_product_creates_it_and_announces_the_change() {
        let items = [update("e1", "p1", Some("9.99"), Some(5), 0)];
        let mut plan = decide(&items, &all_new(&items), Vec::new(), 3, AT);
        assert_eq!(plan.outcomes, [Outcome::Changed]);
        assert_eq!(types(&plan), [EventType::ProductUpdated]);
        let changed = plan.changed();
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].stock.value, Some(5));
        assert_eq!(
            changed[0].price.value,
            Some("9.99".parse().expect("decimal"))
        );
    }

    #[test]
    fn a_creation_merges_like_an_update_and_is_announced_even_when_older() {
        let Ingest::Product(newer) = update("e2", "p1", Some("7"), None, 10) else {
            unreachable!("an update")
        };
        let Ingest::Product(creation) = update("create:p1", "p1", Some("9"), Some(3), 5) else {
            unreachable!("an update")
        };
        let items = [Ingest::Product(newer), Ingest::Created(creation)];
        let mut plan = decide(&items, &all_new(&items), Vec::new(), 0, AT);
        assert_eq!(plan.outcomes, [Outcome::Changed, Outcome::Changed]);
        assert_eq!(
            types(&plan),
            [EventType::ProductUpdated, EventType::ProductCreated]
        );
        let row = &plan.changed()[0];
        assert_eq!(row.price.value, Some("7".parse().expect("decimal")));
        assert_eq!(row.stock.value, Some(3));
        // Announced once, even when it changes nothing.
        let Ingest::Product(stale) = update("create:p2", "p2", Some("1"), None, 0) else {
            unreachable!("an update")
        };
        let mut row = Versioned::new(&"p2".parse().expect("valid product"), AT);
        row.price.offer(
            Some("2".parse().expect("decimal")),
            (datetime!(2026-11-22 11:30 UTC), "e9"),
        );
        let items = [Ingest::Created(stale)];
        let plan = decide(&items, &all_new(&items), vec![row], 0, AT);
        assert_eq!(plan.outcomes, [Outcome::Stale]);
        assert_eq!(types(&plan), [EventType::ProductCreated]);
    }

    #[test]
    fn an_older_update_is_stale_and_changes_nothing() {
        let items = [
            update("e2", "p1", None, Some(7), 10),
            update("e1", "p1", None, Some(3), 5),
        ];
        let plan = decide(&items, &all_new(&items), Vec::new(), 0, AT);
        assert_eq!(plan.outcomes, [Outcome::Changed, Outcome::Stale]);
        assert_eq!(plan.products["p1"].0.stock.value, Some(7));
        assert_eq!(types(&plan), [EventType::ProductUpdated]);
    }

    #[test]
    fn an_event_seen_before_or_twice_in_the_batch_is_a_duplicate() {
        let items = [
            update("e1", "p1", None, Some(1), 0),
            update("e1", "p1", None, Some(1), 0),
            update("e0", "p1", None, Some(9), 9),
        ];
        let mut new = all_new(&items);
        new.remove(&EventKey {
            kind: IngestKind::ProductUpdate,
            owner: "shop".parse().expect("valid owner"),
            id: "e0".parse().expect("valid id"),
        });
        let plan = decide(&items, &new, vec![with_stock("p1", 4)], 0, AT);
        assert_eq!(
            plan.outcomes,
            [Outcome::Changed, Outcome::Duplicate, Outcome::Duplicate]
        );
        assert_eq!(plan.products["p1"].0.stock.value, Some(1));
    }

    #[test]
    fn each_applied_event_keeps_the_bodies_of_what_it_caused_and_a_duplicate_is_not_recorded() {
        let items = [
            update("e1", "p1", None, Some(2), 0),
            update("e1", "p1", None, Some(2), 0),
            update("e2", "p1", None, Some(1), 9),
            update("e3", "p1", None, Some(1), 1),
            order("o1", "p1", "1"),
        ];
        let plan = decide(&items, &all_new(&items), vec![with_stock("p1", 4)], 3, AT);
        let applied = plan.applied(&items);
        let recorded: Vec<(&str, Vec<EventType>)> = applied
            .iter()
            .map(|a| {
                let types = a
                    .announcements
                    .iter()
                    .map(|body| {
                        let decoded =
                            shared::contract::Announcement::decode("msg_x", body.as_bytes())
                                .expect("a body the contract reads");
                        decoded.event.event_type()
                    })
                    .collect();
                (a.item.event_id().as_str(), types)
            })
            .collect();
        assert_eq!(
            recorded,
            [
                ("e1", vec![EventType::ProductUpdated, EventType::StockLow]),
                ("e2", vec![EventType::ProductUpdated]),
                ("e3", vec![]),
                (
                    items[4].event_id().as_str(),
                    vec![EventType::OrderCreated, EventType::ProductUpdated]
                ),
            ]
        );
    }

    #[test]
    fn an_order_reserves_stock_or_is_rejected_with_its_reason() {
        let items = [
            order("o1", "p1", "3"),
            order("o2", "p1", "3"),
            order("o3", "nowhere", "1"),
        ];
        let mut plan = decide(&items, &all_new(&items), vec![with_stock("p1", 5)], 0, AT);
        assert_eq!(
            plan.outcomes,
            [
                Outcome::OrderCreated,
                Outcome::OrderRejected(Rejection::InsufficientStock),
                Outcome::OrderRejected(Rejection::UnknownProduct),
            ]
        );
        assert_eq!(plan.orders.len(), 3);
        assert_eq!(
            types(&plan),
            [
                EventType::OrderCreated,
                EventType::ProductUpdated,
                EventType::OrderRejected,
                EventType::OrderRejected,
            ]
        );
        let changed = plan.changed();
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].stock.value, Some(2));
        // The reservation keeps the stock's version: a newer stock count still wins.
        assert_eq!(
            changed[0].stock.version.as_ref().map(|v| v.1.as_str()),
            Some("seed")
        );
    }

    #[test]
    fn crossing_the_low_stock_threshold_announces_it_once() {
        let items = [order("o1", "p1", "2"), order("o2", "p1", "1")];
        let plan = decide(&items, &all_new(&items), vec![with_stock("p1", 6)], 5, AT);
        assert_eq!(
            types(&plan),
            [
                EventType::OrderCreated,
                EventType::ProductUpdated,
                EventType::StockLow,
                EventType::OrderCreated,
                EventType::ProductUpdated,
            ]
        );
        let DownstreamEvent::StockLow(low) = &plan.emitted[2].announcement.event else {
            panic!("a stock.low");
        };
        assert_eq!(low.stock.value(), 4);
    }

    #[test]
    fn an_order_before_its_products_first_update_in_the_batch_finds_no_product() {
        let items = [
            order("o1", "p9", "1"),
            update("e1", "p9", None, Some(10), 0),
        ];
        let plan = decide(&items, &all_new(&items), Vec::new(), 0, AT);
        assert_eq!(
            plan.outcomes,
            [
                Outcome::OrderRejected(Rejection::UnknownProduct),
                Outcome::Changed
            ]
        );
        assert_eq!(plan.products["p9"].0.stock.value, Some(10));
    }

    #[test]
    fn a_duplicate_order_reserves_nothing() {
        let items = [order("o1", "p1", "2")];
        let plan = decide(&items, &HashSet::new(), vec![with_stock("p1", 6)], 0, AT);
        assert_eq!(plan.outcomes, [Outcome::Duplicate]);
        assert!(plan.orders.is_empty() && plan.emitted.is_empty());
        assert_eq!(plan.products["p1"].0.stock.value, Some(6));
    }
}
