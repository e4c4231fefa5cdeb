//! End to end across the services, all real: an event or an order sent to the gateway, applied
//! by the processor, announced downstream and delivered by the notifier to a subscriber's
//! webhook, signed, under one trace, even when the processor dies between its commit and its
//! publish; the retention of what the processor and the notifier keep; and a test that fails
//! with every service running leaves nothing of its namespace.

mod failing;
mod helpers;
mod notify;
mod retention;
mod trace;
