//! The OpenAPI 3 document of the gateway's API, served at `GET /openapi.json`.

use serde::Serialize;
use utoipa::{
    OpenApi, ToSchema,
    openapi::{ObjectBuilder, RefOr, Response, Type, header::HeaderBuilder},
};

use crate::routes::{catalog::*, events::*, images::*, orders::*, products::*};

/// Body of `POST /events`. At least one of `price` and `stock`; unknown fields are refused.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"product_id": "abc123", "price": 49.99, "stock": 100}))]
pub struct EventBody {
    /// 1-128 characters of ASCII letters, digits, `-`, `_`, `.`, `:`.
    pub product_id: String,
    /// Exact decimal, 0 to 1000000000, at most 4 decimal places.
    #[schema(value_type = Option<shared::model::Price>)]
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

/// Body of `POST /products`. Unknown fields are refused.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"product_id": "trail-shoe-42", "name": "Trail shoe", "description": "Light, with a deep grip.", "category": "shoes/trail", "price": 89.5, "stock": 12, "tags": ["running", "grip"]}))]
pub struct NewProductBody {
    /// Product id rules; generated (a UUID) when absent.
    pub product_id: Option<String>,
    /// 1-200 characters, not blank.
    pub name: String,
    /// Up to 5000 characters.
    pub description: Option<String>,
    /// 1-100 letters, digits, `-`, `_`, `/` and spaces.
    pub category: String,
    /// Exact decimal, 0 to 1000000000, at most 4 decimal places.
    #[schema(value_type = shared::model::Price)]
    pub price: String,
    /// Integer, 0 to 2147483647.
    pub stock: i32,
    /// Up to 20 distinct tags of 1-50 characters.
    pub tags: Option<Vec<String>>,
}

/// Body of `PATCH /products/{id}`: at least one field; `price` and `stock` are refused (they
/// change by events).
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"description": "Now waterproof.", "tags": ["running", "waterproof"]}))]
pub struct PatchProductBody {
    /// 1-200 characters, not blank.
    pub name: Option<String>,
    /// Up to 5000 characters; `null` clears it.
    pub description: Option<String>,
    /// 1-100 letters, digits, `-`, `_`, `/` and spaces.
    pub category: Option<String>,
    /// Replaces the tags: up to 20 distinct tags of 1-50 characters.
    pub tags: Option<Vec<String>>,
}

/// Body of `POST /products/{id}/images` as JSON: an image for the imager to fetch.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"source_url": "https://images.example.com/trail-shoe.jpg"}))]
pub struct ImageSourceBody {
    /// An `http` or `https` URL, at most 2048 characters, on a public address.
    pub source_url: String,
}

/// Body of `POST /products/{id}/images` as an image: its bytes.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct ImageBytes(pub Vec<u8>);

#[derive(OpenApi)]
#[openapi(paths(
    post_event,
    get_product,
    post_order,
    get_order,
    post_product,
    patch_product,
    list_products,
    post_image,
    get_image,
    serve_image
))]
struct ApiDoc;

const TITLE: &str = "Product event pipeline: gateway";
const DESCRIPTION: &str = "Ingest product updates and orders; create, change and list catalog products and add their images; read products and orders. Every path is also served under /api/v1. Every data endpoint wants an API key (Authorization: Bearer) holding the scope it names. Idempotency: a request repeated with the same Idempotency-Key (an order: the same order id) and the same body within the retention window (IDEMPOTENCY_RETENTION_SECS, 24 h by default) gets the first answer again, with Idempotent-Replayed: true.";

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

/// The method of an operation [`add_errors`] adds to.
#[derive(Clone, Copy)]
enum Verb {
    Post,
    Patch,
}

/// Adds an error answer for each `(status, what)` to the `verb` operation at `path`.
fn add_errors(
    doc: &mut utoipa::openapi::OpenApi,
    path: &str,
    verb: Verb,
    answers: &[(&str, &str)],
) {
    let Some(item) = doc.paths.paths.get_mut(path) else {
        return;
    };
    let operation = match verb {
        Verb::Post => item.post.as_mut(),
        Verb::Patch => item.patch.as_mut(),
    };
    let Some(operation) = operation else {
        return;
    };
    for (status, what) in answers {
        let answer = shared::openapi::error(what, &[]);
        operation
            .responses
            .responses
            .insert((*status).to_owned(), RefOr::T(answer));
    }
}

/// The document, with the ingest answers (and the replay header of their `202`), the security scheme and the answers every service
/// shares.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    for path in ["/events", "/orders", "/products"] {
        let post = doc.paths.paths.get_mut(path).and_then(|p| p.post.as_mut());
        if let Some(operation) = post {
            let first = if path == "/products" { "201" } else { "202" };
            if let Some(RefOr::T(accepted)) = operation.responses.responses.get_mut(first) {
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
    add_errors(
        &mut doc,
        "/products",
        Verb::Post,
        &[(
            "409",
            "The product already has a catalog entry, or the first request with this key is still in flight",
        )],
    );
    add_errors(
        &mut doc,
        "/products/{id}",
        Verb::Patch,
        &[
            ("404", "The product has no catalog entry"),
            ("415", "Body not declared as JSON"),
        ],
    );
    add_errors(
        &mut doc,
        "/products/{id}/images",
        Verb::Post,
        &[
            ("404", "The product has no catalog entry"),
            ("413", "The image is over 10 MiB"),
            (
                "415",
                "Not an image/jpeg, image/png or image/webp body, nor JSON",
            ),
        ],
    );
    let mut doc = shared::openapi::finish(doc, TITLE, DESCRIPTION);
    // Variant URLs are capabilities (random image ids), readable without a key like a presigned
    // URL: an <img> can show them.
    if let Some(serve) = doc
        .paths
        .paths
        .get_mut("/images/{key}")
        .and_then(|p| p.get.as_mut())
    {
        serve.security = Some(vec![
            utoipa::openapi::security::SecurityRequirement::default(),
        ]);
        for status in ["401", "403", "429"] {
            serve.responses.responses.remove(status);
        }
    }
    doc
}

#[cfg(test)]
mod tests {
    #[test]
    fn prices_are_exact_decimals_in_the_document_never_floats() {
        let document = serde_json::to_value(super::document()).expect("JSON");
        let price = &document["components"]["schemas"]["Price"];
        assert_eq!(price["type"], "number", "{price}");
        assert_eq!(price["format"], "decimal", "{price}");
        assert_eq!(price["maximum"], 1_000_000_000, "{price}");
        let text = document.to_string();
        assert!(!text.contains("\"double\""), "a price typed as a float");
        for schema in ["EventBody", "NewProductBody", "Product"] {
            let property =
                document["components"]["schemas"][schema]["properties"]["price"].to_string();
            assert!(
                property.contains("#/components/schemas/Price"),
                "{schema}.price: {property}"
            );
        }
    }
}
