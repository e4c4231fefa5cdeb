//! The OpenAPI 3 document of the notifier's API (webhook subscriptions, notifications and
//! deliveries), served at `GET /openapi.json`. Every operation wants an API key with the `ops`
//! scope.

use utoipa::OpenApi;

use crate::{
    api::{
        notifications::{DeliveryList, DeliveryLog, Notification, Retried},
        subscriptions::{Created, NewSubscription, RotatedSecret, SubscriptionList},
    },
    store::{
        deliveries::{Attempt, Delivery, DeliveryStatus},
        subscriptions::{Subscription, SubscriptionStatus},
    },
};

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
        Created,
        Subscription,
        SubscriptionStatus,
        SubscriptionList,
        RotatedSecret,
        Delivery,
        DeliveryStatus,
        Attempt,
        DeliveryLog,
        DeliveryList,
        Notification,
        Retried,
        shared::contract::EventType
    ))
)]
struct ApiDoc;

/// The document, with the security scheme and the answers every service shares.
pub fn document() -> utoipa::openapi::OpenApi {
    shared::openapi::finish(ApiDoc::openapi())
}
