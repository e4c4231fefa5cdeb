//! The products' read cache in Redis: `{ns}:product:{id}`, a product's [`ProductView`] as
//! JSON, living a while. This module owns the layout. The processor writes every view its batch
//! touched ([`StateCache::put_all`]); the gateway fills a miss from PostgreSQL and shows a new
//! product's creation until it is applied ([`StateCache::put_if_absent`], never over what the
//! processor wrote); readers get a [`ProductView`], never the stored text.

use redis::aio::ConnectionManager;

use crate::{
    connect::redis::{CommandError, timed},
    contract::ProductView,
    model::ProductId,
    topology::Namespace,
};

/// The products' state cache of one namespace.
#[derive(Clone)]
pub struct StateCache {
    redis: ConnectionManager,
    namespace: Namespace,
    ttl_seconds: u64,
}

impl StateCache {
    /// The cache in `namespace`, views living `ttl_seconds`.
    pub fn new(redis: ConnectionManager, namespace: Namespace, ttl_seconds: u64) -> Self {
        Self {
            redis,
            namespace,
            ttl_seconds,
        }
    }

    /// Redis key of `id`'s view (for a reader that fetches it with other keys at once, then
    /// reads it with [`StateCache::decode`]).
    pub fn key(&self, id: &ProductId) -> String {
        format!("{}:product:{}", self.namespace.as_str(), id.as_str())
    }

    /// A stored view; `None` if it is not one (then the reader goes to PostgreSQL).
    pub fn decode(stored: &str) -> Option<ProductView> {
        serde_json::from_str(stored).ok()
    }

    /// Writes every view, over what was there, in one pipelined round trip.
    pub async fn put_all(&self, views: &[ProductView]) -> Result<(), CommandError> {
        if views.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for view in views {
            pipe.cmd("SET")
                .arg(self.key(&view.product_id))
                .arg(encode(view))
                .arg("EX")
                .arg(self.ttl_seconds)
                .ignore();
        }
        let mut redis = self.redis.clone();
        timed(pipe.query_async::<()>(&mut redis)).await
    }

    /// Writes `view` unless a view of the product is there (never over what the processor
    /// wrote meanwhile).
    pub async fn put_if_absent(&self, view: &ProductView) -> Result<(), CommandError> {
        let set = redis::cmd("SET")
            .arg(self.key(&view.product_id))
            .arg(encode(view))
            .arg("EX")
            .arg(self.ttl_seconds)
            .arg("NX")
            .to_owned();
        let mut redis = self.redis.clone();
        timed(set.query_async::<Option<String>>(&mut redis))
            .await
            .map(drop)
    }
}

fn encode(view: &ProductView) -> String {
    serde_json::to_string(view).expect("a product view always serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_reads_back_as_written_and_anything_else_is_a_miss() {
        let view = ProductView {
            product_id: "p1".parse().expect("valid"),
            price: Some("9.99".parse().expect("valid")),
            stock: None,
            updated_at: time::OffsetDateTime::UNIX_EPOCH,
        };
        assert_eq!(StateCache::decode(&encode(&view)), Some(view));
        assert_eq!(StateCache::decode("{\"product_id\":\"p1\"}"), None);
        assert_eq!(StateCache::decode("not json"), None);
    }
}
