//! Image jobs: what the gateway queues for the imager (`{ns}.images`) once an upload is stored
//! or a source URL is accepted, and what the imager announces when an image is ready.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::ProductId;

/// The AMQP type of an image job.
pub const IMAGE_JOB_TYPE: &str = "image.job";

/// One image to process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageJob {
    /// The image.
    pub image_id: Uuid,
    /// The product it belongs to.
    pub product_id: ProductId,
    /// Where its bytes are.
    pub source: ImageSource,
}

impl ImageJob {
    /// Its message id, also the `event_id` its dead letter is listed under.
    pub fn message_id(&self) -> String {
        format!("image:{}", self.image_id)
    }
}

/// Where an image's bytes are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ImageSource {
    /// Uploaded to the gateway, stored under this object key.
    Upload {
        /// The object key.
        key: String,
    },
    /// To be fetched from this URL (through the private-network guard).
    Url {
        /// The URL.
        url: String,
    },
}

/// `product.images_ready`: an image of a product was processed and its variants are stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImagesReady {
    /// The job (`image:{image_id}`).
    #[schema(value_type = String)]
    pub source_event_id: crate::model::EventId,
    /// The product.
    #[schema(value_type = String)]
    pub product_id: ProductId,
    /// The image now ready.
    pub image_id: Uuid,
}
