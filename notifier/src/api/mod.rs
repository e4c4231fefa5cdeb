//! The notifier's HTTP API, served on `NOTIFIER_ADDR` beside `/health`, `/ready` and
//! `/metrics`:
//!
//! - [`subscriptions`]: `POST /subscriptions`, `GET /subscriptions`, `GET|DELETE
//!   /subscriptions/{id}`, `POST /subscriptions/{id}/rotate-secret`, `POST
//!   /subscriptions/{id}/enable`, `POST /subscriptions/{id}/test` (a test event to it), `POST
//!   /subscriptions/{id}/recover` (its failed deliveries since a time sent again).
//! - [`event_types`]: `GET /event-types`, the event catalog.
//! - [`notifications`]: `GET /notifications/{event_id}` (each subscriber's delivery and every
//!   attempt), `GET /deliveries?status=&subscription_id=&limit=&cursor=`, `POST /deliveries/{id}/retry`.

pub mod event_types;
pub mod notifications;
pub mod subscriptions;

use axum::{Router, extract::FromRef};
use shared::{connect::postgres::Database, egress::Egress};

use crate::bindings::Bindings;

/// What the API's handlers share.
#[derive(Clone)]
pub struct Api {
    /// Subscriptions, notifications and deliveries.
    pub database: Database,
    /// The guard endpoint URLs are checked against when they are given.
    pub egress: Egress,
    /// Most subscriptions a namespace may hold.
    pub max_subscriptions: i64,
    /// The notifier queue's bindings, changed with the subscriptions.
    pub bindings: Bindings,
}

impl FromRef<Api> for Database {
    fn from_ref(api: &Api) -> Self {
        api.database.clone()
    }
}

/// Every route of the API.
pub fn routes(api: Api) -> Router {
    Router::new()
        .merge(subscriptions::routes())
        .merge(notifications::routes())
        .merge(event_types::routes())
        .with_state(api)
}
