//! The notifier's tables, each owned by one module here: [`subscriptions`], [`notifications`]
//! (the downstream events taken in) and [`deliveries`] (one per event and subscription, with
//! every attempt). The API, the intake and the delivery worker go through them, and so does
//! the dashboard, which reads them.

pub mod deliveries;
pub mod notifications;
pub mod retention;
pub mod subscriptions;
