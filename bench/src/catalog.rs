//! The catalog listing under load: a catalog of `size` entries (50 categories, 200 tags, prices
//! and stock spread, five description words) written straight into the namespace's tables, then
//! `GET /products` pages of 20 with each kind of filter, timed one after another through the
//! gateway (HTTP, key check, query, JSON).

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use sqlx::PgPool;

/// Requests timed per query shape.
const REQUESTS: u32 = 400;

/// The query shapes timed, each a first page of 20.
pub const SHAPES: [&str; 6] = [
    "category=category-7",
    "category=category-7&sort=-created_at",
    "tag=tag-42&in_stock=true",
    "q=wooden&category=category-3",
    "min_price=100&max_price=120&sort=price",
    "sort=-updated_at",
];

/// One shape's latencies.
pub struct Timed {
    /// The query.
    pub query: &'static str,
    /// Items on its first page.
    pub items: usize,
    /// Latencies, microseconds.
    pub latency: Histogram<u64>,
}

/// Writes a catalog of `size` entries (with their price and stock) into the namespace.
pub async fn seed(pool: &PgPool, size: u64) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let size = i64::try_from(size)?;
    sqlx::query(
        "INSERT INTO product_details (product_id, name, description, category, tags, created_at,
                                      updated_at, create_fingerprint)
         SELECT 'cat-' || i, 'Product ' || md5(i::text),
                'A ' || (ARRAY['red', 'blue', 'green', 'wooden', 'steel'])[1 + i % 5]
                     || ' thing, number ' || i,
                'category-' || (i % 50), ARRAY['tag-' || (i % 200), 'tag-' || (i % 37)],
                now() - i * interval '1 second', now() - i * interval '1 second', 'bench'
         FROM generate_series(1, $1) AS i",
    )
    .bind(size)
    .execute(pool)
    .await?;
    sqlx::query(
        "INSERT INTO products (product_id, price, price_occurred_at, price_event_id,
                               stock, stock_occurred_at, stock_event_id)
         SELECT 'cat-' || i, (i % 1000) + 0.99, now(), 'create:cat-' || i,
                i % 20, now(), 'create:cat-' || i
         FROM generate_series(1, $1) AS i
         ON CONFLICT (product_id) DO NOTHING",
    )
    .bind(size)
    .execute(pool)
    .await?;
    sqlx::query("ANALYZE product_details").execute(pool).await?;
    sqlx::query("ANALYZE products").execute(pool).await?;
    Ok(started.elapsed())
}

/// Times [`REQUESTS`] first pages of each shape, one request at a time, after a warm-up.
pub async fn time(client: &reqwest::Client, gateway: &str) -> anyhow::Result<Vec<Timed>> {
    let mut timed = Vec::new();
    for query in SHAPES {
        let url = format!("{gateway}/api/v1/products?limit=20&{query}");
        let mut latency = Histogram::<u64>::new(3)?;
        let mut items = 0;
        for i in 0..REQUESTS + 20 {
            let started = Instant::now();
            let response = client.get(&url).send().await?;
            anyhow::ensure!(
                response.status().is_success(),
                "GET {url}: {}",
                response.status()
            );
            let page: serde_json::Value = response.json().await?;
            let elapsed = started.elapsed();
            items = page["items"].as_array().map_or(0, Vec::len);
            if i >= 20 {
                latency.record(u64::try_from(elapsed.as_micros())?)?;
            }
        }
        timed.push(Timed {
            query,
            items,
            latency,
        });
    }
    Ok(timed)
}
