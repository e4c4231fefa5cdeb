//! The wire contract between the services, each message a type that its producer serialises and
//! its consumer deserialises from the same definition:
//!
//! - `ingest`: product updates and orders on the ingest shards.
//! - `downstream`: the events the processor (and the imager) announce and the notifier
//!   delivers.
//! - `downstream_id`: their ids, made in one place.
//! - `image`: the image jobs the gateway queues for the imager.
//! - `samples` (tests only): ids and keys built from text for the unit tests.
//! - here: the names of the AMQP headers, the Redis keys, and the read cache's product view.

mod downstream;
mod downstream_id;
mod image;
mod ingest;
#[cfg(test)]
mod samples;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::model::{Price, ProductId, Stock};

pub use downstream::{
    Announcement, DownstreamEvent, EventType, OrderDecided, ProductUpdated, ProductValues,
    StockLow, UndecodableEvent,
};
pub use downstream_id::{DownstreamId, DownstreamIdError};
pub use image::{IMAGE_JOB_TYPE, ImageJob, ImageSource, ImagesReady};
pub use ingest::{
    EmptyUpdate, EventKey, Ingest, IngestKind, IngestMessage, NewProduct, OrderPlaced,
    ProductUpdate, Undecodable,
};

/// AMQP headers the pipeline sets on its own messages.
pub mod headers {
    /// Why a message is in the dead-letter queue (`unparseable`, `invalid`, ...).
    pub const DEAD_REASON: &str = "x-pipeline-reason";
    /// The last error seen for a dead-lettered message.
    pub const DEAD_ERROR: &str = "x-pipeline-error";
    /// Which service set the message aside.
    pub const DEAD_SERVICE: &str = "x-pipeline-service";
    /// When the message was first set aside (RFC 3339).
    pub const DEAD_AT: &str = "x-pipeline-first-failed-at";
    /// Unique id of a dead letter (stable across its redeliveries).
    pub const DEAD_LETTER_ID: &str = "x-pipeline-dead-letter-id";
    /// Failed attempts so far (the retry ladder's rung).
    pub const ATTEMPTS: &str = "x-pipeline-attempts";
    /// The routing key the message had on the ingest exchange.
    pub const ORIGINAL_ROUTING_KEY: &str = "x-pipeline-routing-key";
    /// The queue a dead letter was consumed from, where a replay sends it back.
    pub const SOURCE_QUEUE: &str = "x-pipeline-source-queue";
}

/// A product's current state, as served by `GET /products/{id}` and held in the read cache.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProductView {
    /// The product.
    #[schema(value_type = String)]
    pub product_id: ProductId,
    /// Current price, exact; `null` if never set.
    pub price: Option<Price>,
    /// Current stock; `null` if never set.
    #[schema(value_type = Option<i32>)]
    pub stock: Option<Stock>,
    /// When the product last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}
