//! A catalog entry as stored (`product_details`) and its cache record in Redis, which the
//! gateway (creation, changes, reads) and the imager (a product's ready images) both write.
//!
//! The cache record carries the row's `revision` and is only ever replaced by a newer one
//! ([`Cache::put`]), so a slow reader never puts back what a write just replaced; a product
//! without details caches that too (revision 0), so reads of products known only from events
//! stay one Redis round trip.

use redis::{Script, aio::ConnectionManager};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, types::Json};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    connect::redis::{CommandError, timed},
    contract::ProductView,
    model::ProductId,
    objects::Objects,
    processor::products::StateCache,
    topology::Namespace,
};

/// A product's details as stored, with the revision that counts its changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Its name.
    pub name: String,
    /// Its description.
    pub description: Option<String>,
    /// Its category.
    pub category: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// Its ready images, oldest first.
    #[serde(default)]
    pub images: Vec<StoredImage>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When its details last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// 1 at creation, one more per change (its images included).
    pub revision: i64,
}

/// A processed image: where each of its variants is stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredImage {
    /// The image.
    pub image_id: Uuid,
    /// Its variants.
    pub variants: Variants,
}

/// The variants of an image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variants {
    /// The upload as it came.
    pub original: StoredVariant,
    /// Fits 200×200.
    pub thumbnail: StoredVariant,
    /// Fits 800×800.
    pub medium: StoredVariant,
}

/// One stored variant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredVariant {
    /// Its object key.
    pub key: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Its media type.
    pub content_type: String,
    /// Its size.
    pub bytes: u64,
}

/// An image as clients see it: its variants with the URLs to read them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImageView {
    /// The image.
    pub image_id: Uuid,
    /// Its variants.
    pub variants: VariantsView,
}

/// The variants of an image as clients see them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VariantsView {
    /// The image as it came (re-encoded never).
    pub original: VariantView,
    /// Fits 200×200.
    pub thumbnail: VariantView,
    /// Fits 800×800.
    pub medium: VariantView,
}

/// One variant as clients see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VariantView {
    /// Where to read it.
    pub url: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Its media type.
    pub content_type: String,
    /// Its size.
    pub bytes: u64,
}

impl Variants {
    /// The variants with the URLs `objects` gives them.
    pub fn view(&self, objects: &Objects) -> VariantsView {
        let one = |v: &StoredVariant| VariantView {
            url: objects.url(&v.key),
            width: v.width,
            height: v.height,
            content_type: v.content_type.clone(),
            bytes: v.bytes,
        };
        VariantsView {
            original: one(&self.original),
            thumbnail: one(&self.thumbnail),
            medium: one(&self.medium),
        }
    }
}

impl StoredImage {
    /// The image with the URLs `objects` gives its variants.
    pub fn view(&self, objects: &Objects) -> ImageView {
        ImageView {
            image_id: self.image_id,
            variants: self.variants.view(objects),
        }
    }
}

/// The columns of an [`Entry`], in its order, for `SELECT` and `RETURNING`.
#[macro_export]
macro_rules! entry_columns {
    () => {
        "name, description, category, tags, images, created_at, updated_at, revision"
    };
}

/// An [`Entry`] as a row of [`entry_columns!`].
pub type EntryRow = (
    String,
    Option<String>,
    String,
    Vec<String>,
    Json<Vec<StoredImage>>,
    OffsetDateTime,
    OffsetDateTime,
    i64,
);

/// The entry of a row of [`entry_columns!`].
pub fn entry(
    (name, description, category, tags, images, created_at, updated_at, revision): EntryRow,
) -> Entry {
    Entry {
        name,
        description,
        category,
        tags,
        images: images.0,
        created_at,
        updated_at,
        revision,
    }
}

/// `id`'s entry, if it has one.
pub async fn load(pool: &PgPool, id: &ProductId) -> Result<Option<Entry>, sqlx::Error> {
    let row: Option<EntryRow> = sqlx::query_as(concat!(
        "SELECT ",
        entry_columns!(),
        " FROM product_details WHERE product_id = $1"
    ))
    .bind(id.as_str())
    .fetch_optional(pool)
    .await?;
    Ok(row.map(entry))
}

/// An entry's cache record: its revision, and the entry (`None`: the product has none).
#[derive(Serialize, Deserialize)]
pub struct Cached {
    /// The entry's revision (0 for none).
    pub revision: i64,
    /// The entry.
    pub entry: Option<Entry>,
}

impl Cached {
    /// The record of `entry`.
    pub fn of(entry: Option<Entry>) -> Self {
        Self {
            revision: entry.as_ref().map_or(0, |e| e.revision),
            entry,
        }
    }
}

/// The entries' cache in Redis.
#[derive(Clone)]
pub struct Cache {
    redis: ConnectionManager,
    namespace: Namespace,
    ttl_seconds: u64,
    put: Script,
    state: StateCache,
}

/// Sets KEYS[1] to ARGV[1] for ARGV[3] seconds unless it holds a record of a revision at or
/// above ARGV[2].
const PUT_IF_NEWER: &str = r"
local current = redis.call('GET', KEYS[1])
if current then
  local ok, record = pcall(cjson.decode, current)
  if ok and type(record) == 'table' and tonumber(record.revision)
     and tonumber(record.revision) >= tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return 1
";

impl Cache {
    /// The cache in `namespace`, entries living `ttl_seconds`.
    pub fn new(redis: ConnectionManager, namespace: Namespace, ttl_seconds: u64) -> Self {
        Self {
            state: StateCache::new(redis.clone(), namespace.clone(), ttl_seconds),
            redis,
            namespace,
            ttl_seconds,
            put: Script::new(PUT_IF_NEWER),
        }
    }

    /// Redis key of `id`'s entry.
    pub fn key(&self, id: &ProductId) -> String {
        format!(
            "{}:product-details:{}",
            self.namespace.as_str(),
            id.as_str()
        )
    }

    /// The products' state cache beside it.
    pub fn state(&self) -> &StateCache {
        &self.state
    }

    /// `id`'s cached state and entry record, in one round trip (each `None` when not cached,
    /// unreadable, or Redis is down).
    pub async fn get(&self, id: &ProductId) -> (Option<ProductView>, Option<Cached>) {
        let mut redis = self.redis.clone();
        let get = redis::cmd("MGET")
            .arg(self.state.key(id))
            .arg(self.key(id))
            .to_owned();
        let values = timed(get.query_async::<Vec<Option<String>>>(&mut redis))
            .await
            .unwrap_or_default();
        let mut values = values.into_iter();
        let state = values
            .next()
            .flatten()
            .and_then(|json| StateCache::decode(&json));
        let entry = values
            .next()
            .flatten()
            .and_then(|json| serde_json::from_str(&json).ok());
        (state, entry)
    }

    /// Caches `record` for `id` unless a newer one is there.
    pub async fn put(&self, id: &ProductId, record: &Cached) -> Result<(), CommandError> {
        let mut redis = self.redis.clone();
        let json = serde_json::to_string(record).expect("a cache record always serialises");
        let mut invocation = self.put.key(self.key(id));
        invocation
            .arg(json)
            .arg(record.revision)
            .arg(self.ttl_seconds);
        timed(invocation.invoke_async::<i64>(&mut redis))
            .await
            .map(drop)
    }
}
