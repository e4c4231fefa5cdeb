//! The notifier's HTTP API, served on `NOTIFIER_ADDR` beside `/health`, `/ready` and
//! `/metrics`:
//!
//! - [`subscriptions`]: `POST /subscriptions`, `GET /subscriptions`, `GET|DELETE
//!   /subscriptions/{id}`, `POST /subscriptions/{id}/rotate-secret`, `POST
//!   /subscriptions/{id}/enable`.
//! - [`notifications`]: `GET /notifications/{event_id}` (each subscriber's delivery and every
//!   attempt), `GET /deliveries?status=&subscription_id=&limit=`, `POST /deliveries/{id}/retry`.

pub mod notifications;
pub mod subscriptions;

use axum::Router;
use serde_json::Value;
use shared::connect::postgres::Database;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// Every route of the API.
pub fn routes(database: Database) -> Router {
    Router::new()
        .merge(subscriptions::routes())
        .merge(notifications::routes())
        .with_state(database)
}

/// A timestamp as RFC 3339, or null.
fn timestamp(at: Option<OffsetDateTime>) -> Value {
    at.and_then(|t| t.format(&Rfc3339).ok())
        .map_or(Value::Null, Value::String)
}
