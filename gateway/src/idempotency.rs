//! Idempotency records in Redis, after the IETF `Idempotency-Key` draft.
//!
//! A record is two-phase. [`Idempotency::begin`] takes a short lease on the key (state `lease`,
//! with the body's fingerprint and a random token); [`Idempotency::complete`] turns it into
//! `done` with the first response, kept for the retention window; [`Idempotency::release`]
//! drops the lease after a publish that certainly failed so the client's retry can succeed;
//! [`Idempotency::unclear`] keeps the key's fingerprint when the broker's answer never came (the
//! message may be in the broker): a retry with the same body may publish again (the processor's
//! inbox applies the event once), another body is still refused. Each step is one Lua script,
//! so concurrent requests with one key can never both win.
//!
//! The records' layout (`{ns}:idem-key:{kind}:{owner}:{id}`, a hash: a record lives in the
//! space of the API key that sent it, so another key's identical key never meets it;
//! `{ns}:idem:{kind}:{id}` for the legacy space of records made before) and where a record
//! stands are [`shared::gateway::idempotency`]'s, where the dashboard reads them too.

use std::time::Duration;

use redis::{Script, aio::ConnectionManager};
use shared::{
    connect::redis::{CommandError, timed},
    contract::EventKey,
    gateway::idempotency::key,
    model::{EventId, ProductId},
    topology::Namespace,
};

const BEGIN: &str = r"
local state = redis.call('HGET', KEYS[1], 'state')
if not state then
  redis.call('HSET', KEYS[1], 'state', 'lease', 'fp', ARGV[1], 'token', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {'acquired'}
end
if redis.call('HGET', KEYS[1], 'fp') ~= ARGV[1] then
  return {'mismatch'}
end
if state == 'unclear' then
  redis.call('HSET', KEYS[1], 'state', 'lease', 'token', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {'acquired'}
end
if state == 'lease' then
  return {'in_flight'}
end
return {'done', redis.call('HGET', KEYS[1], 'status'), redis.call('HGET', KEYS[1], 'body'),
        redis.call('HGET', KEYS[1], 'product') or ''}
";

const COMPLETE: &str = r"
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'done', 'status', ARGV[2], 'body', ARGV[3], 'product', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
";

const UNCLEAR: &str = r"
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] and redis.call('HGET', KEYS[1], 'state') == 'lease' then
  redis.call('HSET', KEYS[1], 'state', 'unclear')
  redis.call('HDEL', KEYS[1], 'token')
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

const RELEASE: &str = r"
if redis.call('HGET', KEYS[1], 'token') == ARGV[1] and redis.call('HGET', KEYS[1], 'state') == 'lease' then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// The idempotency store of one namespace.
#[derive(Clone)]
pub struct Idempotency {
    redis: ConnectionManager,
    namespace: Namespace,
    lease: Duration,
    retention: Duration,
    begin: std::sync::Arc<Script>,
    complete: std::sync::Arc<Script>,
    unclear: std::sync::Arc<Script>,
    release: std::sync::Arc<Script>,
}

/// The first answer to a key, replayed to every identical repeat: what it was, and its JSON
/// body as the client first got it. Stored as the record's `status`, `body` and `product`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `202 Accepted`: the message is in the broker.
    Accepted {
        /// The JSON body.
        body: String,
    },
    /// `201 Created`: the product's entry is stored and its creation in the broker.
    Created {
        /// The product created (its URL is the answer's `Location`).
        product_id: ProductId,
        /// The JSON body.
        body: String,
    },
}

impl Answer {
    /// Its HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Self::Accepted { .. } => 202,
            Self::Created { .. } => 201,
        }
    }

    /// Its JSON body.
    pub fn body(&self) -> &str {
        match self {
            Self::Accepted { body } | Self::Created { body, .. } => body,
        }
    }

    /// The answer a record holds: its status, its body and the product a `201` created. A
    /// `201` recorded by an earlier version has no `product` field: its body names it.
    fn read(status: &str, body: String, product: &str) -> Result<Self, IdempotencyError> {
        let corrupt = IdempotencyError::Corrupt("corrupt record");
        match status {
            "202" => Ok(Self::Accepted { body }),
            "201" => {
                let product_id = if product.is_empty() {
                    #[derive(serde::Deserialize)]
                    struct Named {
                        product_id: ProductId,
                    }
                    serde_json::from_str::<Named>(&body)
                        .map_err(|_| corrupt)?
                        .product_id
                } else {
                    product.parse().map_err(|_| corrupt)?
                };
                Ok(Self::Created { product_id, body })
            }
            _ => Err(corrupt),
        }
    }
}

/// A lease on a key: proof that this request is the one allowed to publish.
#[derive(Debug)]
#[must_use = "a lease must be completed or released"]
pub struct Lease {
    key: String,
    token: String,
}

/// What [`Idempotency::begin`] found.
#[derive(Debug)]
pub enum Begin {
    /// The key is new: this request owns it.
    Acquired(Lease),
    /// The key completed before with the same body: replay this.
    Replay(Answer),
    /// The key was used with a different body.
    Mismatch,
    /// The first request with the key is still publishing.
    InFlight,
}

/// Redis failed or did not answer in time, or a record is not one this version wrote.
#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    /// Redis failed or did not answer in time.
    #[error(transparent)]
    Redis(#[from] CommandError),
    /// The record or the script's reply is not what this version writes.
    #[error("redis: {0}")]
    Corrupt(&'static str),
}

impl Idempotency {
    /// A store over `redis` with the given lease and retention.
    pub fn new(
        redis: ConnectionManager,
        namespace: Namespace,
        lease: Duration,
        retention: Duration,
    ) -> Self {
        Self {
            redis,
            namespace,
            lease,
            retention,
            begin: std::sync::Arc::new(Script::new(BEGIN)),
            complete: std::sync::Arc::new(Script::new(COMPLETE)),
            unclear: std::sync::Arc::new(Script::new(UNCLEAR)),
            release: std::sync::Arc::new(Script::new(RELEASE)),
        }
    }

    /// Claims the idempotency key of `event` for a body with `fingerprint`, or says why it
    /// cannot be claimed.
    pub async fn begin(
        &self,
        event: &EventKey,
        fingerprint: &str,
    ) -> Result<Begin, IdempotencyError> {
        let key = key(&self.namespace, event);
        let token = uuid_like_token();
        let mut redis = self.redis.clone();
        let mut invocation = self.begin.key(&key);
        invocation
            .arg(fingerprint)
            .arg(&token)
            .arg(millis(self.lease));
        let reply: Vec<String> = timed(invocation.invoke_async(&mut redis)).await?;
        match <[String; 4]>::try_from(reply) {
            Ok([done, status, body, product]) if done == "done" => {
                Answer::read(&status, body, &product).map(Begin::Replay)
            }
            Ok(_) => Err(IdempotencyError::Corrupt("unexpected script reply")),
            Err(reply) => match reply.first().map(String::as_str) {
                Some("acquired") => Ok(Begin::Acquired(Lease { key, token })),
                Some("mismatch") => Ok(Begin::Mismatch),
                Some("in_flight") => Ok(Begin::InFlight),
                _ => Err(IdempotencyError::Corrupt("unexpected script reply")),
            },
        }
    }

    /// Records the first response under the lease's key for the retention window.
    pub async fn complete(&self, lease: Lease, answer: &Answer) -> Result<(), IdempotencyError> {
        let mut redis = self.redis.clone();
        let mut invocation = self.complete.key(&lease.key);
        invocation
            .arg(&lease.token)
            .arg(answer.status())
            .arg(answer.body())
            .arg(millis(self.retention))
            .arg(match answer {
                Answer::Accepted { .. } => "",
                Answer::Created { product_id, .. } => product_id.as_str(),
            });
        let _: i64 = timed(invocation.invoke_async(&mut redis)).await?;
        Ok(())
    }

    /// Marks the key as published with an unknown outcome, for the retention window: a retry
    /// with the same body may take it again, another body is refused.
    pub async fn unclear(&self, lease: Lease) -> Result<(), IdempotencyError> {
        let mut redis = self.redis.clone();
        let mut invocation = self.unclear.key(&lease.key);
        invocation.arg(&lease.token).arg(millis(self.retention));
        let _: i64 = timed(invocation.invoke_async(&mut redis)).await?;
        Ok(())
    }

    /// Drops the lease so a retry with the same key can publish.
    pub async fn release(&self, lease: Lease) -> Result<(), IdempotencyError> {
        let mut redis = self.redis.clone();
        let mut invocation = self.release.key(&lease.key);
        invocation.arg(&lease.token);
        let _: i64 = timed(invocation.invoke_async(&mut redis)).await?;
        Ok(())
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A unique token for one lease (a UUIDv7 is unique enough and needs no new dependency).
fn uuid_like_token() -> String {
    EventId::generate().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_answer_reads_back_with_the_product_it_created() {
        let body = r#"{"product_id":"p-1","name":"Mug"}"#.to_owned();
        let created = Answer::read("201", body.clone(), "p-1").expect("a 201");
        assert_eq!(
            created,
            Answer::Created {
                product_id: "p-1".parse().expect("valid"),
                body: body.clone(),
            }
        );
        assert_eq!((created.status(), created.body()), (201, body.as_str()));
        // Recorded by an earlier version: the body names the product.
        let legacy = Answer::read("201", body.clone(), "").expect("a 201 of before");
        assert_eq!(legacy, created);
        let accepted = Answer::read("202", "{}".into(), "").expect("a 202");
        assert_eq!(accepted, Answer::Accepted { body: "{}".into() });
        for (status, body, product) in [("201", "{}", ""), ("201", "{}", "a b"), ("500", "{}", "")]
        {
            assert!(
                Answer::read(status, body.into(), product).is_err(),
                "{status} {body} {product:?}"
            );
        }
    }
}
