//! The event catalog: `GET /event-types` lists every type a subscription can want, what it
//! means and its payload's schema (the notifier's document describes each under `webhooks`);
//! and the example of each type a subscription's test event carries.

use axum::{Json, Router, routing::get};
use serde::Serialize;
use shared::{
    contract::{
        DownstreamEvent, EventType, ImagesReady, OrderDecided, ProductUpdated, ProductValues,
        StockLow,
    },
    model::{Owner, Price, Rejection, Stock},
};
use utoipa::ToSchema;
use uuid::Uuid;

use super::Api;

pub(super) fn routes() -> Router<Api> {
    Router::new().route("/event-types", get(list))
}

/// One event type.
#[derive(Serialize, ToSchema)]
pub struct EventTypeInfo {
    /// Its name, as subscriptions and the payload's `type` give it.
    name: &'static str,
    /// What happened when it is sent.
    description: &'static str,
    /// The schema of its payload's `data` in this document.
    data_schema: &'static str,
}

/// Every event type.
#[derive(Serialize, ToSchema)]
pub struct EventTypeList {
    /// The types.
    items: Vec<EventTypeInfo>,
    /// Always `null`: the list is whole.
    next_cursor: Option<String>,
}

/// The schema of `kind`'s `data`, and what it means.
pub fn about(kind: EventType) -> (&'static str, &'static str) {
    match kind {
        EventType::ProductCreated => (
            "ProductUpdated",
            "A catalog entry was created; `old` is empty and `new` holds its first price and stock.",
        ),
        EventType::ProductUpdated => (
            "ProductUpdated",
            "A product's price or stock changed: its values before and after.",
        ),
        EventType::StockLow => ("StockLow", "A product's stock fell below the threshold."),
        EventType::OrderCreated => (
            "OrderDecided",
            "An order reserved its stock (`reason` is null).",
        ),
        EventType::OrderRejected => (
            "OrderDecided",
            "An order was rejected (`reason` says why); no stock was taken.",
        ),
        EventType::ImagesReady => (
            "ImagesReady",
            "An image of a product is processed and its variants are stored.",
        ),
    }
}

/// Every event type a subscription can want, with its meaning and payload schema.
#[utoipa::path(get, path = "/event-types", operation_id = "list_event_types", tag = "subscriptions",
    responses((status = 200, description = "The event types", body = EventTypeList)))]
pub(crate) async fn list() -> Json<EventTypeList> {
    let items = EventType::ALL
        .into_iter()
        .map(|kind| {
            let (data_schema, description) = about(kind);
            EventTypeInfo {
                name: kind.as_str(),
                description,
                data_schema,
            }
        })
        .collect();
    Json(EventTypeList {
        items,
        next_cursor: None,
    })
}

/// An example of `kind` for a test event: every id starts with `test-` (`tag` makes them its
/// own), so a receiver can tell it from a real one.
pub fn example(kind: EventType, tag: Uuid) -> DownstreamEvent {
    let parse = |prefix: &str| format!("test-{prefix}-{}", tag.simple());
    let source_event_id = parse("event").parse().expect("a valid event id");
    let product_id = parse("product").parse().expect("a valid product id");
    let price = "49.99".parse::<Price>().ok();
    let stock = Stock::new(3).ok();
    let updated = || ProductUpdated {
        source_event_id: parse("event").parse().expect("a valid event id"),
        product_id: parse("product").parse().expect("a valid product id"),
        old: ProductValues {
            price: None,
            stock: None,
        },
        new: ProductValues { price, stock },
    };
    let order = |reason: Option<Rejection>| OrderDecided {
        source_event_id: parse("event").parse().expect("a valid event id"),
        order_id: parse("order").parse().expect("a valid order id"),
        sku: parse("product").parse().expect("a valid product id"),
        qty: "1".parse().expect("a valid quantity"),
        email: None,
        reason,
        placed_by: Owner::default(),
    };
    match kind {
        EventType::ProductCreated => DownstreamEvent::ProductCreated(updated()),
        EventType::ProductUpdated => DownstreamEvent::ProductUpdated(updated()),
        EventType::StockLow => DownstreamEvent::StockLow(StockLow {
            source_event_id,
            product_id,
            stock: Stock::new(3).expect("a valid stock"),
            threshold: 10,
        }),
        EventType::OrderCreated => DownstreamEvent::OrderCreated(order(None)),
        EventType::OrderRejected => {
            DownstreamEvent::OrderRejected(order(Some(Rejection::InsufficientStock)))
        }
        EventType::ImagesReady => DownstreamEvent::ImagesReady(ImagesReady {
            source_event_id,
            product_id,
            image_id: tag,
        }),
    }
}
