//! The OpenAPI 3 document of the notifier's API (webhook subscriptions, notifications and
//! deliveries), served at `GET /openapi.json`. Every operation wants an API key with the `ops`
//! scope.

use utoipa::OpenApi;

use crate::api::{notifications, subscriptions};

#[derive(OpenApi)]
#[openapi(paths(
    subscriptions::create,
    subscriptions::list,
    subscriptions::show,
    subscriptions::remove,
    subscriptions::rotate,
    subscriptions::enable,
    notifications::show,
    notifications::list,
    notifications::retry
))]
struct ApiDoc;

const TITLE: &str = "Product event pipeline: notifier";
const DESCRIPTION: &str = "Webhook subscriptions (Standard Webhooks signatures), and what became of each downstream event's deliveries. Every operation wants an API key with the ops scope.";

/// The document, with the security scheme and the answers every service shares.
pub fn document() -> utoipa::openapi::OpenApi {
    shared::openapi::finish(ApiDoc::openapi(), TITLE, DESCRIPTION)
}
