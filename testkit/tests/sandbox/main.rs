//! A sandbox removes everything in its namespace when it is dropped (its queues, exchanges,
//! Redis keys and schema), also when the test owning it panics, on a multi-threaded runtime's
//! worker or on a current-thread runtime; its schema stays only when asked.

mod helpers;
mod removal;
