//! One PostgreSQL role per service, with only the privileges its code uses: `pipeline_gateway`,
//! `pipeline_processor`, `pipeline_notifier`, `pipeline_imager` and `pipeline_dashboard`. They
//! cannot log in themselves; a deployment logs each service in as a user that is a member of its
//! role ([`login`]; `gateway migrate --logins` makes them from `<SERVICE>_DATABASE_PASSWORD`).
//!
//! [`grant`], run by `gateway migrate` after the migrations as a user that may change the schema,
//! makes the roles where missing and sets each one's privileges on the namespace's schema to
//! exactly [`Role::privileges`], taking back any other: a service's role cannot change the
//! schema, read a table its service never reads, or delete where its service never deletes. A
//! table added by a migration is granted here, or no service can use it (the tests that run every
//! service as its role say so).

use std::fmt::Write as _;

use base64::{Engine as _, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, PgPool};

/// A service's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The gateway's.
    Gateway,
    /// The processor's.
    Processor,
    /// The notifier's.
    Notifier,
    /// The imager's.
    Imager,
    /// The dashboard's.
    Dashboard,
}

/// Privileges on tables (and, `USAGE`, on sequences) of the namespace's schema:
/// `(privileges, objects)`.
pub type Privileges = &'static [(&'static str, &'static [&'static str])];

impl Role {
    /// Every service's role.
    pub const ALL: [Self; 5] = [
        Self::Gateway,
        Self::Processor,
        Self::Notifier,
        Self::Imager,
        Self::Dashboard,
    ];

    /// The service it is for (`gateway`).
    pub fn service(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Processor => "processor",
            Self::Notifier => "notifier",
            Self::Imager => "imager",
            Self::Dashboard => "dashboard",
        }
    }

    /// The role's name (`pipeline_gateway`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Gateway => "pipeline_gateway",
            Self::Processor => "pipeline_processor",
            Self::Notifier => "pipeline_notifier",
            Self::Imager => "pipeline_imager",
            Self::Dashboard => "pipeline_dashboard",
        }
    }

    /// What the service's code does to each table, and so all the role may do.
    pub fn privileges(self) -> Privileges {
        match self {
            Self::Gateway => GATEWAY,
            Self::Processor => PROCESSOR,
            Self::Notifier => NOTIFIER,
            Self::Imager => IMAGER,
            Self::Dashboard => DASHBOARD,
        }
    }
}

/// Every service reads which migrations are applied, to start without changing the schema.
const MIGRATIONS: (&str, &[&str]) = ("SELECT", &["_sqlx_migrations"]);
/// Whoever checks keys reads them and keeps their `last_used_at`; making and revoking keys is
/// `gateway keys`, as the owner.
const KEYS: (&str, &[&str]) = ("SELECT, UPDATE", &["api_keys"]);

// Row locks (`FOR UPDATE`, `FOR SHARE`) need UPDATE, and `ON CONFLICT` needs SELECT on its
// target, beside what a statement plainly does.
const GATEWAY: Privileges = &[
    MIGRATIONS,
    KEYS,
    ("SELECT", &["products", "orders"]),
    ("SELECT, INSERT, UPDATE", &["product_details"]),
    ("SELECT, INSERT, DELETE", &["product_images"]),
];
const PROCESSOR: Privileges = &[
    MIGRATIONS,
    KEYS,
    (
        "SELECT, INSERT, UPDATE",
        &["shard_leases", "products", "retries", "replay_jobs"],
    ),
    (
        "SELECT, INSERT, UPDATE, DELETE",
        &["processor_members", "dead_letters"],
    ),
    ("SELECT, INSERT, DELETE", &["processed_events"]),
    ("SELECT, INSERT", &["orders"]),
];
const NOTIFIER: Privileges = &[
    MIGRATIONS,
    KEYS,
    ("SELECT, INSERT, UPDATE", &["subscriptions"]),
    (
        "SELECT, INSERT, DELETE",
        &["notifications", "delivery_attempts"],
    ),
    ("SELECT, INSERT, UPDATE, DELETE", &["deliveries"]),
    ("USAGE", &["deliveries_id_seq", "delivery_attempts_id_seq"]),
];
const IMAGER: Privileges = &[
    MIGRATIONS,
    ("SELECT, UPDATE", &["product_images", "product_details"]),
];
/// The dashboard reads; replays and purges go through the processor's API.
const DASHBOARD: Privileges = &[
    MIGRATIONS,
    KEYS,
    (
        "SELECT",
        &[
            "processed_events",
            "dead_letters",
            "retries",
            "products",
            "orders",
            "shard_leases",
            "notifications",
            "deliveries",
            "subscriptions",
        ],
    ),
];

/// What [`grant`] did for a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Granted {
    /// The role existed, and now has its privileges.
    Granted(Role),
    /// The role was made, and given its privileges.
    Made(Role),
    /// The role is missing and this user may not make it (it lacks `CREATEROLE`): nothing was
    /// granted to it.
    Missing(Role),
}

/// `"name"`, quoted as an SQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A transaction that holds the roles' turn: roles belong to the whole server, so one
/// migrating user at a time makes or changes them.
async fn begin(pool: &PgPool) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('pipeline.roles'))")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Whether the role `name` exists.
async fn exists(tx: &mut sqlx::PgConnection, name: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
        .bind(name)
        .fetch_one(tx)
        .await
}

/// Makes each service's role where missing (when this user may) and sets its privileges on
/// `schema` to its [`Role::privileges`], all in one transaction.
pub async fn grant(pool: &PgPool, schema: &str) -> anyhow::Result<Vec<Granted>> {
    let mut tx = begin(pool).await?;
    let may_make: bool = sqlx::query_scalar(
        "SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&mut *tx)
    .await?;
    let schema = ident(schema);
    let mut report = Vec::new();
    for role in Role::ALL {
        let exists = exists(&mut tx, role.name()).await?;
        let name = ident(role.name());
        if !exists {
            if !may_make {
                report.push(Granted::Missing(role));
                continue;
            }
            sqlx::query(AssertSqlSafe(format!("CREATE ROLE {name} NOLOGIN")))
                .execute(&mut *tx)
                .await?;
        }
        let mut statements = format!(
            "REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {name};\n\
             REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schema} FROM {name};\n\
             GRANT USAGE ON SCHEMA {schema} TO {name};\n"
        );
        for (privileges, objects) in role.privileges() {
            let objects: Vec<String> = objects
                .iter()
                .map(|object| format!("{schema}.{}", ident(object)))
                .collect();
            // USAGE is a sequence's privilege (the next value of a bigserial column).
            let kind = if *privileges == "USAGE" {
                "SEQUENCE"
            } else {
                "TABLE"
            };
            writeln!(
                statements,
                "GRANT {privileges} ON {kind} {} TO {name};",
                objects.join(", ")
            )
            .expect("writing to a String");
        }
        sqlx::raw_sql(AssertSqlSafe(statements))
            .execute(&mut *tx)
            .await?;
        report.push(if exists {
            Granted::Granted(role)
        } else {
            Granted::Made(role)
        });
    }
    tx.commit().await?;
    Ok(report)
}

/// Makes `user` a user that logs in (with `password`, when given) as a member of `role`, or, when
/// it exists, sets its password and membership: how a deployment's service users are made and
/// their passwords changed. The server is sent the password's SCRAM-SHA-256 verifier, never the
/// password, so no statement log can show it.
pub async fn login(
    pool: &PgPool,
    role: Role,
    user: &str,
    password: Option<&str>,
) -> anyhow::Result<()> {
    let mut tx = begin(pool).await?;
    let exists = exists(&mut tx, user).await?;
    let password = match password {
        Some(password) => format!("'{}'", scram_verifier(password, &salt()?)),
        None => "NULL".to_owned(),
    };
    let user = ident(user);
    // Only what a user without SUPERUSER may say (a new role is NOSUPERUSER, NOCREATEDB and
    // NOCREATEROLE by default).
    let verb = if exists { "ALTER" } else { "CREATE" };
    sqlx::raw_sql(AssertSqlSafe(format!(
        "{verb} ROLE {user} WITH LOGIN PASSWORD {password};\n\
         GRANT {} TO {user};",
        ident(role.name())
    )))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

fn salt() -> anyhow::Result<[u8; 16]> {
    let mut salt = [0; 16];
    getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("no randomness for a salt: {e}"))?;
    Ok(salt)
}

/// The SCRAM-SHA-256 verifier PostgreSQL keeps for `password` (RFC 5802, RFC 7677; 4096
/// iterations, as PostgreSQL makes them): `SCRAM-SHA-256$4096:salt$StoredKey:ServerKey`.
pub fn scram_verifier(password: &str, salt: &[u8]) -> String {
    const ITERATIONS: u32 = 4096;
    let hmac = |key: &[u8], data: &[&[u8]]| -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
        for part in data {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    };
    // PBKDF2-HMAC-SHA-256 with one block: Hi(password, salt, i) of RFC 5802.
    let mut block = hmac(password.as_bytes(), &[salt, &1u32.to_be_bytes()]);
    let mut salted = block;
    for _ in 1..ITERATIONS {
        block = hmac(password.as_bytes(), &[&block]);
        for (s, b) in salted.iter_mut().zip(block) {
            *s ^= b;
        }
    }
    let client_key = hmac(&salted, &[b"Client Key"]);
    let stored_key = Sha256::digest(client_key);
    let server_key = hmac(&salted, &[b"Server Key"]);
    format!(
        "SCRAM-SHA-256${ITERATIONS}:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored_key),
        STANDARD.encode(server_key)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verifier_is_scram_sha_256_as_rfc_7677_computes_it() {
        // RFC 7677's example password and salt; the keys as Python's hashlib.pbkdf2_hmac and hmac
        // compute them (the tests that log in with such a verifier check it with the server).
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").expect("base64");
        assert_eq!(
            scram_verifier("pencil", &salt),
            "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$\
             WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:\
             wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
        );
    }
}
