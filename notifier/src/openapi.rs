//! The OpenAPI 3 document of the notifier's API (webhook subscriptions, notifications and
//! deliveries), served at `GET /openapi.json`. Every operation wants an API key with the `ops`
//! scope. Its `webhooks` describe what a subscriber receives: one request per event type, with
//! the Standard Webhooks headers and the payload's schema (the event catalog).

use serde_json::{Value, json};
use shared::contract::{
    EventType, ImagesReady, OrderDecided, ProductUpdated, ProductValues, StockLow,
};
use utoipa::OpenApi;

use crate::api::{event_types, notifications, subscriptions};

#[derive(OpenApi)]
#[openapi(
    paths(
        subscriptions::create,
        subscriptions::list,
        subscriptions::show,
        subscriptions::remove,
        subscriptions::rotate,
        subscriptions::enable,
        subscriptions::send_test,
        subscriptions::recover,
        event_types::list,
        notifications::show,
        notifications::list,
        notifications::retry
    ),
    components(schemas(ProductUpdated, ProductValues, StockLow, OrderDecided, ImagesReady))
)]
struct ApiDoc;

const TITLE: &str = "Product event pipeline: notifier";
const DESCRIPTION: &str = "Webhook subscriptions (Standard Webhooks signatures), and what became of each downstream event's deliveries. Every operation wants an API key with the ops scope. The webhooks section lists every event type a subscription receives, with its payload.";

/// The document, with the security scheme and the answers every service shares, and the
/// webhooks.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut document = shared::openapi::finish(ApiDoc::openapi(), TITLE, DESCRIPTION);
    // utoipa 5 has no field for OpenAPI 3.1's top-level `webhooks`; the document's extensions
    // are written at its top level, so the section goes there under its own name.
    document
        .extensions
        .get_or_insert_with(Default::default)
        .insert("webhooks".to_owned(), webhooks());
    document
}

/// One `POST` per event type, as delivered to a subscription of it.
fn webhooks() -> Value {
    let header = |name: &str, about: &str| {
        json!({"name": name, "in": "header", "required": true, "description": about,
               "schema": {"type": "string"}})
    };
    let hooks = EventType::ALL.into_iter().map(|kind| {
        let (schema, about) = event_types::about(kind);
        let operation = json!({"post": {
            "operationId": format!("webhook_{}", kind.as_str().replace('.', "_")),
            "summary": format!("`{kind}`"),
            "description": format!(
                "{about} Sent to each enabled subscription of `{kind}`, signed as Standard \
                 Webhooks specify."
            ),
            "tags": ["webhooks"],
            "parameters": [
                header("webhook-id", "The event's id: the same on every attempt; deduplicate on it"),
                header("webhook-timestamp", "When this attempt was signed, in seconds since 1970"),
                header("webhook-signature", "`v1,` and the base64 HMAC-SHA256 of `id.timestamp.body` under the subscription's secret"),
            ],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {
                "type": "object",
                "required": ["type", "timestamp", "data"],
                "properties": {
                    "type": {"type": "string", "const": kind.as_str()},
                    "timestamp": {"type": "string", "format": "date-time",
                                  "description": "When the change was applied"},
                    "data": {"$ref": format!("#/components/schemas/{schema}")},
                },
            }}}},
            "responses": {
                "2XX": {"description": "Received: the delivery is done"},
                "410": {"description": "Gone: the subscription is disabled at once"},
                "429": {"description": "Too many: retried after Retry-After (at most 24 h), else on the schedule"},
                "default": {"description": "Any other answer, or none in time: retried on the schedule, then dead-lettered"},
            },
        }});
        (kind.as_str().to_owned(), operation)
    });
    Value::Object(hooks.collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_webhooks_list_every_event_type_with_a_payload_the_document_defines() {
        let document = serde_json::to_value(document()).expect("JSON");
        let schemas = &document["components"]["schemas"];
        for kind in EventType::ALL {
            let hook = &document["webhooks"][kind.as_str()]["post"];
            assert!(hook.is_object(), "no webhook for {kind}");
            let body = &hook["requestBody"]["content"]["application/json"]["schema"];
            assert_eq!(body["properties"]["type"]["const"], kind.as_str());
            let reference = body["properties"]["data"]["$ref"]
                .as_str()
                .expect("a reference");
            let name = reference
                .strip_prefix("#/components/schemas/")
                .expect("a component");
            assert!(schemas[name].is_object(), "{kind}: {name} is not defined");
        }
        assert_eq!(
            document["webhooks"].as_object().map(serde_json::Map::len),
            Some(EventType::ALL.len())
        );
    }
}
