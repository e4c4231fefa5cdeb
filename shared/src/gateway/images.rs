//! Product images (`product_images`): the gateway records each upload or source URL as
//! `processing`; the imager makes it `ready`, with its variants, adding it to the product's
//! entry in the same transaction (one more revision, so the cache takes it), or `failed` with
//! the reason.

use serde::Serialize;
use sqlx::{PgPool, types::Json};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    gateway::catalog::{Entry, EntryRow, StoredImage, Variants, entry},
    model::ProductId,
    topology::Namespace,
};

/// Where an image is in its processing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Status {
    /// Queued for the imager, or being processed.
    Processing,
    /// Its variants are stored.
    Ready,
    /// It could not be processed (`error` says why).
    Failed,
}

/// An image's record.
#[derive(Clone, Debug)]
pub struct Record {
    /// The image.
    pub image_id: Uuid,
    /// Its product.
    pub product_id: String,
    /// Its status.
    pub status: Status,
    /// Why it failed.
    pub error: Option<String>,
    /// Its variants once ready.
    pub variants: Option<Variants>,
    /// Failed attempts so far.
    pub attempts: i32,
    /// When it was received.
    pub created_at: OffsetDateTime,
}

/// A new image id: random (122 bits), so an image's URLs cannot be guessed from another's.
pub fn new_id() -> Uuid {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system provides random bytes");
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// The object key of `name` (`original.jpg`, `thumbnail.webp`, ...) of `image` in `namespace`.
pub fn key(namespace: &Namespace, image: Uuid, name: &str) -> String {
    format!("{}/images/{image}/{name}", namespace.as_str())
}

/// The media type of an object key, by its extension.
pub fn content_type_of(key: &str) -> Option<&'static str> {
    match key.rsplit_once('.')?.1 {
        "jpg" => Some("image/jpeg"),
        "png" => Some("image/png"),
        "webp" => Some("image/webp"),
        _ => None,
    }
}

/// Records a new image of `product` as processing, its bytes at `source` (an object key or a
/// URL), unless the product already has `max` images that did not fail (false then). Concurrent
/// uploads of one product take turns on its catalog row, so the bound holds.
pub async fn insert(
    pool: &PgPool,
    image: Uuid,
    product: &ProductId,
    source: &str,
    max: u32,
) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "WITH product AS (
             SELECT product_id FROM product_details WHERE product_id = $2 FOR UPDATE
         )
         INSERT INTO product_images (image_id, product_id, status, source)
         SELECT $1, product_id, 'processing', $3 FROM product
         WHERE (SELECT count(*) FROM product_images
                WHERE product_id = $2 AND status <> 'failed') < $4",
    )
    .bind(image)
    .bind(product.as_str())
    .bind(source)
    .bind(i64::from(max))
    .execute(pool)
    .await
    .map(|done| done.rows_affected() == 1)
}

/// Removes the record of an image that was never queued.
pub async fn remove(pool: &PgPool, image: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM product_images WHERE image_id = $1")
        .bind(image)
        .execute(pool)
        .await
        .map(drop)
}

type RecordRow = (
    Uuid,
    String,
    Status,
    Option<String>,
    Option<Json<Variants>>,
    i32,
    OffsetDateTime,
);

/// The record of `image`, if there is one.
pub async fn find(pool: &PgPool, image: Uuid) -> Result<Option<Record>, sqlx::Error> {
    let row: Option<RecordRow> = sqlx::query_as(
        "SELECT image_id, product_id, status, error, variants, attempts, created_at
         FROM product_images WHERE image_id = $1",
    )
    .bind(image)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(
        |(image_id, product_id, status, error, variants, attempts, created_at)| Record {
            image_id,
            product_id,
            status,
            error,
            variants: variants.map(|v| v.0),
            attempts,
            created_at,
        },
    ))
}

/// Counts one more failed attempt of `image`; the attempts so far.
pub async fn attempted(pool: &PgPool, image: Uuid, error: &str) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE product_images SET attempts = attempts + 1, error = $2, updated_at = now()
         WHERE image_id = $1 RETURNING attempts",
    )
    .bind(image)
    .bind(error)
    .fetch_one(pool)
    .await
}

/// Marks `image` failed for `error`.
pub async fn fail(pool: &PgPool, image: Uuid, error: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE product_images SET status = 'failed', error = $2, updated_at = now()
         WHERE image_id = $1 AND status <> 'ready'",
    )
    .bind(image)
    .bind(error)
    .execute(pool)
    .await
    .map(drop)
}

/// Marks `image` processing again (a replayed job), with its attempts counted afresh.
pub async fn restart(pool: &PgPool, image: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE product_images SET status = 'processing', error = NULL, attempts = 0,
                updated_at = now()
         WHERE image_id = $1 AND status = 'failed'",
    )
    .bind(image)
    .execute(pool)
    .await
    .map(drop)
}

/// Marks `image` of `product` ready with `variants` and adds it to the product's entry, in one
/// transaction; the entry as it now is (`None` if the image was ready already, or the product
/// has no entry).
pub async fn ready(
    pool: &PgPool,
    image: Uuid,
    product: &ProductId,
    variants: &Variants,
) -> Result<Option<Entry>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let marked = sqlx::query(
        "UPDATE product_images SET status = 'ready', error = NULL, variants = $2,
                updated_at = now()
         WHERE image_id = $1 AND status <> 'ready'",
    )
    .bind(image)
    .bind(Json(variants))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if marked == 0 {
        return Ok(None);
    }
    let stored = StoredImage {
        image_id: image,
        variants: variants.clone(),
    };
    let row: Option<EntryRow> = sqlx::query_as(concat!(
        "UPDATE product_details SET images = images || jsonb_build_array($2::jsonb),
                revision = revision + 1
         WHERE product_id = $1 RETURNING ",
        crate::entry_columns!()
    ))
    .bind(product.as_str())
    .bind(Json(&stored))
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(row.map(entry))
}
