//! What the gateway owns and others use: catalog entries and their cache records ([`catalog`],
//! which the imager reads), product images' records ([`images`], which the imager processes),
//! and its idempotency records' layout ([`idempotency`], which the dashboard reads).

pub mod catalog;
pub mod idempotency;
pub mod images;
