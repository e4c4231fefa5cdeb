//! `gateway migrate [--logins]`: prepares the namespace's schema for services that run as
//! PostgreSQL roles of their own ([`shared::connect::postgres::roles`]), against the same
//! environment as the services (`DATABASE_URL`, `PIPELINE_NAMESPACE`), as a user that may change
//! the schema (the database's owner, with `CREATEROLE` to make the roles):
//!
//! - applies every migration (creating the database and the schema if missing);
//! - makes each service's role where missing (`pipeline_gateway`, ...) and sets its privileges to
//!   what its service uses, and nothing else;
//! - with `--logins`, for each `<SERVICE>_DATABASE_PASSWORD` that is set, makes the user named
//!   after the service (`gateway`, `processor`, ...) log in with that password as a member of its
//!   role (or sets the password of the user already there: how it is changed).
//!
//! Run it before the services start and at every upgrade (a service whose role may not change
//! the schema waits, retrying, until the migrations it needs are applied). Prints one line per
//! role on stderr; nothing on stdout.

use std::ffi::OsString;

use anyhow::Context;
use shared::{
    config::Backends,
    connect::postgres::{
        self,
        roles::{self, Granted, Role},
    },
};

/// `gateway migrate --help`.
pub const USAGE: &str = "\
Usage: gateway migrate [--logins]

Applies every migration to PIPELINE_NAMESPACE's schema in DATABASE_URL's database, makes each
service's PostgreSQL role where missing (pipeline_gateway, pipeline_processor, pipeline_notifier,
pipeline_imager, pipeline_dashboard; making them needs CREATEROLE) and gives each the privileges
its service uses, and no others. Run it as the database's owner, before the services start and at
every upgrade; services logging in as members of these roles cannot change the schema.

  --logins    also make, for each of GATEWAY_DATABASE_PASSWORD, PROCESSOR_DATABASE_PASSWORD,
              NOTIFIER_DATABASE_PASSWORD, IMAGER_DATABASE_PASSWORD and DASHBOARD_DATABASE_PASSWORD
              that is set, the user named after the service (gateway, processor, ...) logging in
              with that password as a member of its role (an existing user gets the password:
              how it is changed)";

/// Whether `--logins` was given.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<bool, String> {
    let mut logins = false;
    for arg in args {
        match arg.to_str() {
            Some("--logins") => logins = true,
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    Ok(logins)
}

/// Migrates, grants, and with `logins` makes the service users.
pub async fn run(logins: bool, backends: &Backends) -> anyhow::Result<()> {
    let (pool, granted) = postgres::migrate(&backends.database, &backends.namespace)
        .await
        .context("cannot migrate PostgreSQL (DATABASE_URL)")?;
    let mut missing = Vec::new();
    for outcome in &granted {
        match outcome {
            Granted::Granted(role) => eprintln!("{}: privileges set", role.name()),
            Granted::Made(role) => eprintln!("{}: made, privileges set", role.name()),
            Granted::Missing(role) => {
                eprintln!(
                    "{}: missing, and this user may not make roles (CREATEROLE): CREATE ROLE {} \
                     NOLOGIN, then run this again",
                    role.name(),
                    role.name()
                );
                missing.push(*role);
            }
        }
    }
    let outcome = if logins {
        make_logins(&pool, &missing).await
    } else {
        Ok(())
    };
    pool.close().await;
    outcome
}

async fn make_logins(pool: &sqlx::PgPool, missing: &[Role]) -> anyhow::Result<()> {
    for role in Role::ALL {
        let variable = format!("{}_DATABASE_PASSWORD", role.service().to_uppercase());
        let Some(password) = std::env::var(&variable).ok().filter(|p| !p.is_empty()) else {
            continue;
        };
        anyhow::ensure!(
            !missing.contains(&role),
            "{variable} is set but the role {} is missing",
            role.name()
        );
        roles::login(pool, role, role.service(), Some(&password))
            .await
            .with_context(|| format!("cannot make the user {}", role.service()))?;
        eprintln!(
            "{}: logs in as a member of {} (password from {variable})",
            role.service(),
            role.name()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins_is_the_only_argument() {
        let parsed = |args: &[&str]| parse(args.iter().map(OsString::from));
        assert_eq!(parsed(&[]), Ok(false));
        assert_eq!(parsed(&["--logins"]), Ok(true));
        assert_eq!(
            parsed(&["--login"]),
            Err("unexpected argument \"--login\"".to_owned())
        );
    }
}
