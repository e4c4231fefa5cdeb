//! Connection builders for the three backends. Each one starts without waiting for its backend
//! to be up, so a service can start, report itself not ready, and recover by itself.

pub mod amqp;
pub mod postgres;
pub mod redis;
pub mod tls;
