//! The notifier's tables, each owned by one module here: [`subscriptions`], [`notifications`]
//! (the downstream events taken in) and [`deliveries`] (one per event and subscription, with
//! every attempt). The API, the intake and the delivery worker go through them, and so does
//! the dashboard, which reads them.

pub mod deliveries;
pub mod notifications;
pub mod subscriptions;

use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// A timestamp as RFC 3339, or null.
pub fn timestamp(at: Option<OffsetDateTime>) -> serde_json::Value {
    at.and_then(|t| t.format(&Rfc3339).ok())
        .map_or(serde_json::Value::Null, serde_json::Value::String)
}
