//! The catalog: each product's details (`product_details`, written here by `POST` and
//! `PATCH /products`; their cache records are [`shared::gateway::catalog`]'s), and the filtered,
//! keyset-paginated listing.
//!
//! A product's price and stock stay the processor's (`products`, set by events in their
//! order); a read joins the two.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use shared::{
    contract::ProductView,
    gateway::catalog::{Entry, EntryRow, ImageView, entry},
    model::{Price, ProductId, Stock},
    objects::Objects,
};
use sqlx::{PgPool, Postgres, QueryBuilder};
use time::OffsetDateTime;

use crate::request::{Details, DetailsPatch};

/// A product as `GET /products/{id}` and the listing show it: its state (price and stock, set
/// by events) and its catalog details (`null` and `[]` for a product known only from events).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Product {
    /// The product.
    #[schema(value_type = String)]
    pub product_id: ProductId,
    /// Current price, exact; `null` until set (a new entry's is applied within moments).
    pub price: Option<Price>,
    /// Current stock; `null` until set.
    #[schema(value_type = Option<i32>)]
    pub stock: Option<Stock>,
    /// When the product last changed (its price, stock or details).
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Its name; `null` for a product with no catalog entry.
    pub name: Option<String>,
    /// Its description.
    pub description: Option<String>,
    /// Its category; `null` for a product with no catalog entry.
    pub category: Option<String>,
    /// Its tags.
    pub tags: Vec<String>,
    /// Its processed images, oldest first (one still processing is not listed yet).
    pub images: Vec<ImageView>,
    /// When its catalog entry was created; `null` for a product with none.
    #[serde(with = "time::serde::rfc3339::option")]
    pub created_at: Option<OffsetDateTime>,
}

impl Product {
    /// The product of `id` from its state and its entry; `None` when it has neither.
    pub fn of(
        id: ProductId,
        state: Option<ProductView>,
        entry: Option<Entry>,
        objects: &Objects,
    ) -> Option<Self> {
        let updated_at = match (&state, &entry) {
            (None, None) => return None,
            (Some(s), None) => s.updated_at,
            (None, Some(e)) => e.updated_at,
            (Some(s), Some(e)) => s.updated_at.max(e.updated_at),
        };
        let (price, stock) = state.map_or((None, None), |s| (s.price, s.stock));
        let (name, description, category, tags, images, created_at) = match entry {
            Some(e) => (
                Some(e.name),
                e.description,
                Some(e.category),
                e.tags,
                e.images.iter().map(|i| i.view(objects)).collect(),
                Some(e.created_at),
            ),
            None => (None, None, None, Vec::new(), Vec::new(), None),
        };
        Some(Self {
            product_id: id,
            price,
            stock,
            updated_at,
            name,
            description,
            category,
            tags,
            images,
            created_at,
        })
    }
}

/// What a creation found.
#[derive(Debug)]
pub enum Created {
    /// The entry, new or left by an earlier try of this same request (which goes on).
    Stored(Entry),
    /// The product already has another catalog entry.
    Taken,
}

/// Creates `id`'s entry at `at`, unless it has one: then the one an earlier try of the same
/// request (same `fingerprint`) left is returned, and any other is [`Created::Taken`].
pub async fn create(
    pool: &PgPool,
    id: &ProductId,
    details: &Details,
    fingerprint: &str,
    at: OffsetDateTime,
) -> Result<Created, sqlx::Error> {
    let inserted: Option<EntryRow> = sqlx::query_as(concat!(
        "INSERT INTO product_details (product_id, name, description, category, tags,
                                      created_at, updated_at, create_fingerprint)
         VALUES ($1, $2, $3, $4, $5, $6, $6, $7)
         ON CONFLICT (product_id) DO NOTHING RETURNING ",
        shared::entry_columns!()
    ))
    .bind(id.as_str())
    .bind(&details.name)
    .bind(&details.description)
    .bind(&details.category)
    .bind(&details.tags)
    .bind(at)
    .bind(fingerprint)
    .fetch_optional(pool)
    .await?;
    if let Some(row) = inserted {
        return Ok(Created::Stored(entry(row)));
    }
    let first: Option<String> =
        sqlx::query_scalar("SELECT create_fingerprint FROM product_details WHERE product_id = $1")
            .bind(id.as_str())
            .fetch_optional(pool)
            .await?;
    if first.as_deref() != Some(fingerprint) {
        return Ok(Created::Taken);
    }
    Ok(shared::gateway::catalog::load(pool, id)
        .await?
        .map_or(Created::Taken, Created::Stored))
}

/// Whether events gave `id` a price or stock before it had a catalog entry: creating its entry
/// would then change them. (A product whose entry exists is the creation's own retry, or
/// [`Created::Taken`].)
pub async fn priced_without_entry(pool: &PgPool, id: &ProductId) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM products p
                        WHERE p.product_id = $1 AND (p.price IS NOT NULL OR p.stock IS NOT NULL)
                          AND NOT EXISTS (SELECT 1 FROM product_details d WHERE d.product_id = $1))",
    )
    .bind(id.as_str())
    .fetch_one(pool)
    .await
}

/// Applies `patch` to `id`'s entry; `None` if it has none.
pub async fn patch(
    pool: &PgPool,
    id: &ProductId,
    patch: &DetailsPatch,
) -> Result<Option<Entry>, sqlx::Error> {
    let row: Option<EntryRow> = sqlx::query_as(concat!(
        "UPDATE product_details SET name = coalesce($2, name),
                description = CASE WHEN $3 THEN $4 ELSE description END,
                category = coalesce($5, category), tags = coalesce($6, tags),
                updated_at = greatest(now(), updated_at), revision = revision + 1
         WHERE product_id = $1 RETURNING ",
        shared::entry_columns!()
    ))
    .bind(id.as_str())
    .bind(&patch.name)
    .bind(patch.description.is_some())
    .bind(patch.description.clone().flatten())
    .bind(&patch.category)
    .bind(&patch.tags)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(entry))
}

/// How a listing is ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    /// By name.
    Name,
    /// By price (products without one last).
    Price,
    /// By the last change.
    UpdatedAt,
    /// By creation.
    CreatedAt,
}

impl SortKey {
    /// Every key.
    pub const ALL: [Self; 4] = [Self::Name, Self::Price, Self::UpdatedAt, Self::CreatedAt];

    /// Its name in `sort=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Price => "price",
            Self::UpdatedAt => "updated_at",
            Self::CreatedAt => "created_at",
        }
    }

    /// The SQL expression sorted on.
    fn sql(self) -> &'static str {
        match self {
            Self::Name => "d.name",
            // NaN sorts above every number in PostgreSQL: no price comes last.
            Self::Price => "coalesce(p.price, 'NaN'::numeric)",
            Self::UpdatedAt => "greatest(d.updated_at, p.updated_at)",
            Self::CreatedAt => "d.created_at",
        }
    }

    /// How a cursor holds the sort value: the SQL that writes the expression as text, and the
    /// SQL around the bound text that reads it back (times as whole microseconds since the
    /// epoch, exact).
    fn cursor_sql(self) -> (String, &'static str, &'static str) {
        let expr = self.sql();
        match self {
            Self::Name => (expr.to_owned(), "", "::text COLLATE \"C\""),
            Self::Price => (format!("{expr}::text"), "", "::numeric"),
            Self::UpdatedAt | Self::CreatedAt => (
                format!("(extract(epoch FROM {expr}) * 1000000)::bigint::text"),
                "('epoch'::timestamptz + ",
                "::bigint * interval '1 microsecond')",
            ),
        }
    }

    /// Whether `value` is a sort value of this key as `cursor_sql` writes it.
    pub fn holds(self, value: &str) -> bool {
        match self {
            Self::Name => true,
            Self::Price => value == "NaN" || value.parse::<Decimal>().is_ok(),
            Self::UpdatedAt | Self::CreatedAt => value.parse::<i64>().is_ok(),
        }
    }
}

/// A listing's order: a key, ascending or descending (`-name`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sort {
    /// The key.
    pub key: SortKey,
    /// Descending.
    pub descending: bool,
}

impl Sort {
    /// The order named `name` (`price`, `-price`, ...).
    pub fn parse(name: &str) -> Option<Self> {
        let (descending, key) = match name.strip_prefix('-') {
            Some(key) => (true, key),
            None => (false, name),
        };
        SortKey::ALL
            .into_iter()
            .find(|k| k.as_str() == key)
            .map(|key| Self { key, descending })
    }

    /// Its name.
    pub fn name(self) -> String {
        format!(
            "{}{}",
            if self.descending { "-" } else { "" },
            self.key.as_str()
        )
    }
}

/// Where a page starts: after the item with this sort value and id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct After {
    /// The order the cursor was made for.
    #[serde(rename = "s")]
    pub sort: String,
    /// The last item's sort value, as PostgreSQL wrote it.
    #[serde(rename = "v")]
    pub value: String,
    /// The last item's id.
    #[serde(rename = "i")]
    pub product_id: String,
}

/// A listing's filters and page.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only this category.
    pub category: Option<String>,
    /// Only products with this tag.
    pub tag: Option<String>,
    /// Full-text search in name and description.
    pub q: Option<String>,
    /// Price at least.
    pub min_price: Option<Decimal>,
    /// Price at most.
    pub max_price: Option<Decimal>,
    /// In stock (stock above 0) or not.
    pub in_stock: Option<bool>,
}

/// A listed product: its entry (the row's first columns, in [`entry_columns!`]'s order: a tuple
/// reads them by position), then by name its id, its state (`state_at` is `None` when it has
/// none) and its sort value as a cursor holds it.
///
/// [`entry_columns!`]: shared::entry_columns
#[derive(sqlx::FromRow)]
struct ListRow {
    #[sqlx(flatten)]
    entry: EntryRow,
    product_id: String,
    price: Option<Decimal>,
    stock: Option<i32>,
    state_at: Option<OffsetDateTime>,
    sort_value: String,
}

/// Up to `limit` catalog products matching `filter` in `sort` order after `after`, and the
/// cursor of the next page (`None` on the last).
pub async fn list(
    pool: &PgPool,
    filter: &Filter,
    sort: Sort,
    after: Option<&After>,
    limit: i64,
    objects: &Objects,
) -> Result<(Vec<Product>, Option<After>), sqlx::Error> {
    let key = sort.key.sql();
    let (value, read_before, read_after) = sort.key.cursor_sql();
    let direction = if sort.descending { "DESC" } else { "ASC" };
    let mut query: QueryBuilder<Postgres> = QueryBuilder::new(format!(
        "SELECT d.name, d.description, d.category, d.tags, d.images, d.created_at, d.updated_at,
                d.revision, d.product_id, p.price, p.stock, p.updated_at AS state_at,
                {value} AS sort_value
         FROM product_details d LEFT JOIN products p ON p.product_id = d.product_id WHERE true"
    ));
    if let Some(category) = &filter.category {
        query.push(" AND d.category = ").push_bind(category.clone());
    }
    if let Some(tag) = &filter.tag {
        query
            .push(" AND d.tags @> ARRAY[")
            .push_bind(tag.clone())
            .push("::text]");
    }
    if let Some(q) = &filter.q {
        query
            .push(" AND d.search @@ websearch_to_tsquery('english', ")
            .push_bind(q.clone())
            .push(")");
    }
    if let Some(min) = filter.min_price {
        query.push(" AND p.price >= ").push_bind(min);
    }
    if let Some(max) = filter.max_price {
        query.push(" AND p.price <= ").push_bind(max);
    }
    if let Some(in_stock) = filter.in_stock {
        query
            .push(" AND (coalesce(p.stock, 0) > 0) = ")
            .push_bind(in_stock);
    }
    if let Some(after) = after {
        let op = if sort.descending { "<" } else { ">" };
        query
            .push(format!(" AND ({key}, d.product_id) {op} ({read_before}"))
            .push_bind(after.value.clone())
            .push(format!("{read_after}, "))
            .push_bind(after.product_id.clone())
            .push(")");
    }
    query
        .push(format!(
            " ORDER BY {key} {direction}, d.product_id {direction} LIMIT "
        ))
        .push_bind(limit + 1);
    let mut rows: Vec<ListRow> = query.build_query_as().fetch_all(pool).await?;
    let more = rows.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next = more.then(|| rows.last()).flatten().map(|row| After {
        sort: sort.name(),
        value: row.sort_value.clone(),
        product_id: row.product_id.clone(),
    });
    let items = rows
        .into_iter()
        .map(|row| listed(row, objects))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((items, next))
}

fn listed(row: ListRow, objects: &Objects) -> Result<Product, sqlx::Error> {
    let corrupt = |e: String| sqlx::Error::Decode(e.into());
    let id: ProductId = row
        .product_id
        .parse()
        .map_err(|e| corrupt(format!("stored product id: {e}")))?;
    let state = row
        .state_at
        .map(|at| shared::processor::products::view(id.clone(), row.price, row.stock, at))
        .transpose()?;
    let entry = entry(row.entry);
    Ok(Product::of(id, state, Some(entry), objects).expect("a listed product has an entry"))
}
