//! The `api_keys` table, and making keys. A key is `ppk_` and 43 characters of URL-safe base64
//! over 32 random bytes from the operating system (256 bits: never guessed, so a plain SHA-256
//! is the right hash, one that costs a microsecond to check); only that hash is stored.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use time::OffsetDateTime;

use super::{Scope, Scopes};

/// The prefix of every key (so a leaked key is recognisable to secret scanners and people).
pub const PREFIX: &str = "ppk_";

/// The SHA-256 of a key, which is all that is stored of it.
pub type KeyHash = [u8; 32];

/// A new random key.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system provides random bytes");
    format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// The hash a key is stored and looked up by.
pub fn hash(key: &str) -> KeyHash {
    Sha256::digest(key.as_bytes()).into()
}

/// A key's name: 1–64 characters of ASCII letters, digits, `.`, `_` and `-`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyName(String);

/// A name that breaks the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a key name is 1-64 characters of ASCII letters, digits, '.', '_' and '-'")]
pub struct BadKeyName;

impl std::str::FromStr for KeyName {
    type Err = BadKeyName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if valid {
            Ok(Self(s.to_owned()))
        } else {
            Err(BadKeyName)
        }
    }
}

impl KeyName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A key as the store knows it (never the key itself).
#[derive(Clone, Debug, PartialEq)]
pub struct KeyRecord {
    /// Its name.
    pub name: String,
    /// Its hash.
    pub hash: KeyHash,
    /// What it may do.
    pub scopes: Scopes,
    /// Requests per second it may make, per replica; `None`: no limit.
    pub rate_per_second: Option<u32>,
    /// When it was made.
    pub created_at: OffsetDateTime,
    /// When it was last used (recorded every few seconds, not per request).
    pub last_used_at: Option<OffsetDateTime>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<OffsetDateTime>,
}

/// Why a key could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// A key that is not revoked already has this name.
    #[error("a key named {0:?} exists; revoke it first or choose another name")]
    NameTaken(String),
    /// PostgreSQL failed.
    #[error("postgres: {0}")]
    Database(#[from] sqlx::Error),
}

type Row = (
    String,
    Vec<u8>,
    Vec<String>,
    Option<i32>,
    OffsetDateTime,
    Option<OffsetDateTime>,
    Option<OffsetDateTime>,
);

const COLUMNS: &str =
    "name, hash, scopes, rate_per_second, created_at, last_used_at, revoked_at FROM api_keys";

fn record(row: Row) -> Option<KeyRecord> {
    let (name, hash, scopes, rate, created_at, last_used_at, revoked_at) = row;
    Some(KeyRecord {
        name,
        hash: hash.try_into().ok()?,
        // A scope this version does not know grants nothing.
        scopes: scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
        rate_per_second: rate.and_then(|r| u32::try_from(r).ok()),
        created_at,
        last_used_at,
        revoked_at,
    })
}

/// Makes a key named `name` with `scopes` and an optional rate; returns the key, which exists
/// nowhere else from now on.
pub async fn create(
    pool: &PgPool,
    name: &KeyName,
    scopes: Scopes,
    rate_per_second: Option<u32>,
) -> Result<String, CreateError> {
    let key = generate();
    let inserted = sqlx::query(
        "INSERT INTO api_keys (name, hash, scopes, rate_per_second) VALUES ($1, $2, $3, $4)",
    )
    .bind(name.as_str())
    .bind(hash(&key).as_slice())
    .bind(scopes.names())
    .bind(rate_per_second.map(|r| i32::try_from(r).unwrap_or(i32::MAX)))
    .execute(pool)
    .await;
    match inserted {
        Ok(_) => Ok(key),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
            Err(CreateError::NameTaken(name.as_str().to_owned()))
        }
        Err(e) => Err(e.into()),
    }
}

/// A key given from outside (the first key of a deployment, made by its operator) that is not
/// in the pipeline's own format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a key is `{PREFIX}` and 43 characters of URL-safe base64 (32 random bytes), as `gateway keys create` makes them"
)]
pub struct BadKey;

/// Checks that `key` has the format [`generate`] gives: 256 random bits, so its plain SHA-256
/// is a safe thing to store.
pub fn check_format(key: &str) -> Result<(), BadKey> {
    let body = key.strip_prefix(PREFIX).ok_or(BadKey)?;
    match URL_SAFE_NO_PAD.decode(body) {
        Ok(bytes) if bytes.len() == 32 && body.len() == 43 => Ok(()),
        _ => Err(BadKey),
    }
}

/// What [`import`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imported {
    /// The key was stored.
    Stored {
        /// An active key of the same name was revoked in the same transaction (rotation).
        replaced: bool,
    },
    /// The key was stored already; nothing changed.
    Present {
        /// It was revoked, and stays revoked.
        revoked: bool,
    },
}

/// Stores the hash of `key` (a key in the pipeline's format, made elsewhere) under `name` with
/// `scopes`, idempotently: a key stored before, active or revoked, is left as it is (a revoked
/// key is never brought back). With `replace`, an active key of the same name is revoked in the
/// same transaction; without it, such a key is [`CreateError::NameTaken`].
pub async fn import(
    pool: &PgPool,
    name: &KeyName,
    key: &str,
    scopes: Scopes,
    rate_per_second: Option<u32>,
    replace: bool,
) -> Result<Imported, CreateError> {
    let hash = hash(key);
    let mut tx = pool.begin().await?;
    // Two importers of one key (two replicas of a job, say) take turns.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('pipeline.api_keys.import'))")
        .execute(&mut *tx)
        .await?;
    let present: Option<(Option<OffsetDateTime>,)> =
        sqlx::query_as("SELECT revoked_at FROM api_keys WHERE hash = $1")
            .bind(hash.as_slice())
            .fetch_optional(&mut *tx)
            .await?;
    if let Some((revoked_at,)) = present {
        return Ok(Imported::Present {
            revoked: revoked_at.is_some(),
        });
    }
    let mut replaced = false;
    if replace {
        replaced = sqlx::query(
            "UPDATE api_keys SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL",
        )
        .bind(name.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
    }
    let inserted = sqlx::query(
        "INSERT INTO api_keys (name, hash, scopes, rate_per_second) VALUES ($1, $2, $3, $4)",
    )
    .bind(name.as_str())
    .bind(hash.as_slice())
    .bind(scopes.names())
    .bind(rate_per_second.map(|r| i32::try_from(r).unwrap_or(i32::MAX)))
    .execute(&mut *tx)
    .await;
    match inserted {
        Ok(_) => {
            tx.commit().await?;
            Ok(Imported::Stored { replaced })
        }
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
            Err(CreateError::NameTaken(name.as_str().to_owned()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Every key, revoked ones included, oldest first.
pub async fn list(pool: &PgPool) -> Result<Vec<KeyRecord>, sqlx::Error> {
    select(pool, "ORDER BY created_at, id").await
}

/// The keys that are not revoked.
pub async fn active(pool: &PgPool) -> Result<Vec<KeyRecord>, sqlx::Error> {
    select(pool, "WHERE revoked_at IS NULL").await
}

/// The keys a static `clause` picks.
async fn select(pool: &PgPool, clause: &'static str) -> Result<Vec<KeyRecord>, sqlx::Error> {
    let query = format!("SELECT {COLUMNS} {clause}");
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(query))
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().filter_map(record).collect())
}

/// The key with `hash`, if it exists and is not revoked.
pub async fn find(pool: &PgPool, hash: &KeyHash) -> Result<Option<KeyRecord>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} WHERE hash = $1 AND revoked_at IS NULL"
    )))
    .bind(hash.as_slice())
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(record))
}

/// Revokes the key named `name`; false if no key of that name is active.
pub async fn revoke(pool: &PgPool, name: &KeyName) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE api_keys SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL",
    )
    .bind(name.as_str())
    .execute(pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Records that the keys with these hashes were used just now.
pub async fn touch(pool: &PgPool, hashes: &[KeyHash]) -> Result<(), sqlx::Error> {
    let hashes: Vec<&[u8]> = hashes.iter().map(<[u8; 32]>::as_slice).collect();
    sqlx::query("UPDATE api_keys SET last_used_at = now() WHERE hash = ANY($1)")
        .bind(hashes)
        .execute(pool)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_random_256_bit_and_hash_stably() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert!(a.starts_with(PREFIX));
        assert_eq!(a.len(), PREFIX.len() + 43);
        assert_eq!(hash(&a), hash(&a));
        assert_ne!(hash(&a), hash(&b));
    }

    #[test]
    fn only_keys_of_the_own_format_are_imported() {
        assert_eq!(check_format(&generate()), Ok(()));
        let short = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode([7u8; 16]));
        let padded = format!("{}=", generate());
        let unprefixed = generate().replacen(PREFIX, "sk_", 1);
        for bad in ["", "ppk_", "password123", &short, &padded, &unprefixed] {
            assert_eq!(check_format(bad), Err(BadKey), "{bad:?}");
        }
    }

    #[test]
    fn names_follow_the_rules() {
        assert!("ci-deploy_2.0".parse::<KeyName>().is_ok());
        for bad in ["", "a b", "ключ", &"n".repeat(65), "a/b"] {
            assert_eq!(bad.parse::<KeyName>(), Err(BadKeyName), "{bad:?}");
        }
    }
}
