//! The OpenAPI 3 document of the notifier's API (webhook subscriptions, notifications and
//! deliveries), served at `GET /openapi.json`. Every operation wants an API key with the `ops`
//! scope.

use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

/// `POST /subscriptions`.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"url": "https://shop.example/hooks", "event_types": ["order.created"]}))]
pub struct NewSubscription {
    /// An `http(s)` URL with a host, no credentials, not on a private network.
    pub url: String,
    /// One or more of `product.updated`, `stock.low`, `order.created`, `order.rejected`.
    pub event_types: Vec<String>,
}

/// A subscription (its secret only when created).
#[derive(Serialize, ToSchema)]
pub struct Subscription {
    /// Its id (a UUID).
    pub id: String,
    /// The endpoint.
    pub url: String,
    /// The event types it gets.
    pub event_types: Vec<String>,
    /// `enabled` or `disabled`.
    pub status: String,
    /// When it was disabled (RFC 3339).
    pub disabled_at: Option<String>,
    /// Why.
    pub disabled_reason: Option<String>,
    /// Failed deliveries in a row.
    pub consecutive_failures: i32,
    /// When it was made (RFC 3339).
    pub created_at: Option<String>,
    /// The signing secret (`whsec_...`): in the answer to its creation only.
    pub secret: Option<String>,
}

/// `GET /subscriptions`.
#[derive(Serialize, ToSchema)]
pub struct SubscriptionList {
    /// Oldest first; secrets are never listed.
    pub subscriptions: Vec<Subscription>,
}

/// A new secret; the old one also signs until `previous_secret_expires_at`.
#[derive(Serialize, ToSchema)]
pub struct RotatedSecret {
    /// The subscription.
    pub id: String,
    /// The new secret, shown once.
    pub secret: String,
    /// Until when the old secret also signs (RFC 3339).
    pub previous_secret_expires_at: Option<String>,
}

/// One delivery of one event to one subscriber.
#[derive(Serialize, ToSchema)]
pub struct Delivery {
    /// Its id.
    pub id: i64,
    /// The event (the `webhook-id`).
    pub event_id: String,
    /// Its type.
    pub event_type: String,
    /// The subscription.
    pub subscription_id: String,
    /// The endpoint.
    pub url: String,
    /// `pending`, `sent`, `failed`, `skipped`, `cancelled`.
    pub status: String,
    /// Attempts made.
    pub attempts: i32,
    /// When it is tried next, while pending (RFC 3339).
    pub next_attempt_at: Option<String>,
    /// When it succeeded.
    pub sent_at: Option<String>,
    /// When it was given up.
    pub failed_at: Option<String>,
    /// The last attempt's error.
    pub last_error: Option<String>,
    /// Every attempt (in `GET /notifications/{event_id}`).
    #[schema(value_type = Option<Vec<Object>>)]
    pub attempt_log: Option<Vec<serde_json::Value>>,
}

/// `GET /deliveries`.
#[derive(Serialize, ToSchema)]
pub struct DeliveryList {
    /// Newest first.
    pub deliveries: Vec<Delivery>,
}

/// A downstream event the notifier took in, with its deliveries.
#[derive(Serialize, ToSchema)]
pub struct Notification {
    /// The event's id.
    pub event_id: String,
    /// Its type.
    pub event_type: String,
    /// When the notifier took it in (RFC 3339).
    pub received_at: Option<String>,
    /// Always true.
    pub handled: bool,
    /// One per subscriber that wanted it.
    pub deliveries: Vec<Delivery>,
}

/// A delivery sent again.
#[derive(Serialize, ToSchema)]
pub struct Retried {
    /// The delivery.
    pub id: i64,
    /// `pending`.
    pub status: String,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Product event pipeline: notifier",
        description = "Webhook subscriptions (Standard Webhooks signatures), and what became of each downstream event's deliveries. Every operation wants an API key with the ops scope."
    ),
    paths(
        crate::api::subscriptions::create,
        crate::api::subscriptions::list,
        crate::api::subscriptions::show,
        crate::api::subscriptions::remove,
        crate::api::subscriptions::rotate,
        crate::api::subscriptions::enable,
        crate::api::notifications::show,
        crate::api::notifications::list,
        crate::api::notifications::retry
    ),
    components(schemas(
        NewSubscription,
        Subscription,
        SubscriptionList,
        RotatedSecret,
        Delivery,
        DeliveryList,
        Notification,
        Retried
    ))
)]
struct ApiDoc;

/// The document, with the security scheme and the answers every service shares.
pub fn document() -> utoipa::openapi::OpenApi {
    shared::openapi::finish(ApiDoc::openapi())
}
