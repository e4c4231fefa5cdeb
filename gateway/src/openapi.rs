//! The OpenAPI 3 document of the gateway's API, served at `GET /openapi.json`.

use serde::Serialize;
use utoipa::{
    OpenApi, ToSchema,
    openapi::{ObjectBuilder, RefOr, Response, Type, header::HeaderBuilder},
};

use crate::routes::{events::*, orders::*, products::*};

/// Body of `POST /events`. At least one of `price` and `stock`; unknown fields are refused.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"product_id": "abc123", "price": 49.99, "stock": 100}))]
pub struct EventBody {
    /// 1-128 characters of ASCII letters, digits, `-`, `_`, `.`, `:`.
    pub product_id: String,
    /// Exact decimal, 0 to 1000000000, at most 4 decimal places.
    #[schema(value_type = Option<f64>)]
    pub price: Option<String>,
    /// Integer, 0 to 2147483647.
    pub stock: Option<i32>,
    /// The event's id (same as the `Idempotency-Key` header if both are given).
    pub event_id: Option<String>,
    /// RFC 3339; default: when the gateway received it. At most 5 minutes ahead.
    pub occurred_at: Option<String>,
}

/// `202 Accepted`: the event is durably in the broker.
#[derive(Serialize, ToSchema)]
pub struct Accepted {
    /// The event's id.
    pub event_id: String,
    /// Always `accepted`.
    pub status: String,
}

/// Body of `POST /orders`. The order id is the idempotency key.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"id": "order123", "sku": "mag-safe-phone-case", "qty": 2}))]
pub struct OrderBody {
    /// The client's order id: 1-128 characters of ASCII letters, digits, `-`, `_`, `.`, `:`.
    pub id: String,
    /// The product ordered (product id rules).
    pub sku: String,
    /// Units, 1 to 2147483647.
    pub qty: i32,
    /// The customer's address.
    pub email: Option<String>,
}

/// `202 Accepted` for an order.
#[derive(Serialize, ToSchema)]
pub struct OrderAccepted {
    /// The order id.
    pub order_id: String,
    /// Always `pending`.
    pub status: String,
}

#[derive(OpenApi)]
#[openapi(paths(post_event, get_product, post_order, get_order))]
struct ApiDoc;

const TITLE: &str = "Product event pipeline: gateway";
const DESCRIPTION: &str = "Ingest product updates and orders; read products and orders. Every path is also served under /api/v1. Every data endpoint wants an API key (Authorization: Bearer) holding the scope it names. Idempotency: a request repeated with the same Idempotency-Key (an order: the same order id) and the same body within the retention window (IDEMPOTENCY_RETENTION_SECS, 24 h by default) gets the first answer again, with Idempotent-Replayed: true.";

/// What both ingest endpoints (`POST /events`, `POST /orders`) may answer besides `202`, by
/// status.
fn ingest_answers() -> [(&'static str, Response); 4] {
    use shared::openapi::error;
    [
        (
            "409",
            error(
                "The first request with this key (an order: this order id) is still being published",
                &[],
            ),
        ),
        ("415", error("Body not declared as JSON", &[])),
        (
            "422",
            error("The key (an order: its id) was used with another body", &[]),
        ),
        (
            "503",
            error(
                "RabbitMQ or Redis unavailable: nothing accepted; or RabbitMQ did not confirm in time (`outcome: unknown`): send the same request again, it is applied once",
                &[("Retry-After", "Seconds to wait before retrying")],
            ),
        ),
    ]
}

/// The document, with the ingest answers (and the replay header of their `202`), the security scheme and the answers every service
/// shares.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    for path in ["/events", "/orders"] {
        let post = doc.paths.paths.get_mut(path).and_then(|p| p.post.as_mut());
        if let Some(operation) = post {
            if let Some(RefOr::T(accepted)) = operation.responses.responses.get_mut("202") {
                let replayed = HeaderBuilder::new()
                    .schema(ObjectBuilder::new().schema_type(Type::String))
                    .description(Some("`true` when this is a replay of the first answer"));
                accepted
                    .headers
                    .insert("Idempotent-Replayed".to_owned(), replayed.build());
            }
            for (status, answer) in ingest_answers() {
                operation
                    .responses
                    .responses
                    .insert(status.to_owned(), RefOr::T(answer));
            }
        }
    }
    shared::openapi::finish(doc, TITLE, DESCRIPTION)
}
