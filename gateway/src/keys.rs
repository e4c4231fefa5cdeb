//! `gateway keys ...`: API keys managed from the command line, against the same environment as
//! the services (`DATABASE_URL`, `PIPELINE_NAMESPACE`); it applies the migrations it needs,
//! does one thing and exits.
//!
//! - `gateway keys create --name NAME --scopes SCOPES [--rate N]`: prints the new key, and
//!   nothing else, on stdout (it is shown this once; only its hash is kept). `SCOPES` is a
//!   comma-separated list, or `*` for every scope; `--rate` is requests per second per replica.
//! - `gateway keys list`: every key, without the keys themselves.
//! - `gateway keys revoke NAME`: the key stops working within 10 s on every replica.

use std::ffi::OsString;

use anyhow::Context;
use lexopt::prelude::*;
use shared::{
    auth::{
        Scopes,
        keys::{self, KeyName, KeyRecord},
    },
    config::Backends,
    connect::postgres,
};
use time::format_description::well_known::Rfc3339;

/// What the command was asked to do.
#[derive(Debug, PartialEq, Eq)]
pub enum KeysCommand {
    /// Make a key.
    Create {
        /// Its name.
        name: KeyName,
        /// What it may do.
        scopes: Scopes,
        /// Requests per second per replica, if limited.
        rate: Option<u32>,
    },
    /// List the keys.
    List,
    /// Revoke the key with this name.
    Revoke(KeyName),
}

/// How to call the command.
pub const USAGE: &str = "usage: gateway keys create --name NAME --scopes SCOPES [--rate N]
       gateway keys list
       gateway keys revoke NAME
SCOPES: comma-separated, from events:write, orders:write, products:read, orders:read,
        catalog:write, ops; or * for every scope";

/// Parses the arguments after `keys`.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<KeysCommand, String> {
    let mut parser = lexopt::Parser::from_args(args);
    let action = match parser.next().map_err(|e| e.to_string())? {
        Some(Value(action)) => action.string().map_err(|e| e.to_string())?,
        _ => return Err("name an action: create, list or revoke".into()),
    };
    match action.as_str() {
        "create" => parse_create(&mut parser),
        "list" => match parser.next().map_err(|e| e.to_string())? {
            None => Ok(KeysCommand::List),
            Some(other) => Err(other.unexpected().to_string()),
        },
        "revoke" => {
            let name = match parser.next().map_err(|e| e.to_string())? {
                Some(Value(name)) => name.string().map_err(|e| e.to_string())?,
                _ => return Err("name the key to revoke".into()),
            };
            if let Some(other) = parser.next().map_err(|e| e.to_string())? {
                return Err(other.unexpected().to_string());
            }
            Ok(KeysCommand::Revoke(
                name.parse().map_err(|e| format!("{e}"))?,
            ))
        }
        other => Err(format!("unknown action {other:?}: create, list or revoke")),
    }
}

fn parse_create(parser: &mut lexopt::Parser) -> Result<KeysCommand, String> {
    let (mut name, mut scopes, mut rate) = (None, None, None);
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        let value = |parser: &mut lexopt::Parser| -> Result<String, String> {
            parser
                .value()
                .map_err(|e| e.to_string())?
                .string()
                .map_err(|e| e.to_string())
        };
        match arg {
            Long("name") => {
                name = Some(
                    value(parser)?
                        .parse::<KeyName>()
                        .map_err(|e| format!("--name: {e}"))?,
                );
            }
            Long("scopes") => {
                scopes = Some(
                    Scopes::parse_list(&value(parser)?).map_err(|e| format!("--scopes: {e}"))?,
                );
            }
            Long("rate") => {
                let text = value(parser)?;
                let parsed = text
                    .parse::<u32>()
                    .ok()
                    .filter(|r| (1..=1_000_000).contains(r))
                    .ok_or_else(|| {
                        format!("--rate: {text:?} is not a whole number from 1 to 1000000")
                    })?;
                rate = Some(parsed);
            }
            other => return Err(other.unexpected().to_string()),
        }
    }
    let scopes = scopes.ok_or("--scopes is required")?;
    if scopes == Scopes::default() {
        return Err("--scopes names no scope".into());
    }
    Ok(KeysCommand::Create {
        name: name.ok_or("--name is required")?,
        scopes,
        rate,
    })
}

/// Runs `command` against the namespace's database.
pub async fn run(command: KeysCommand, backends: &Backends) -> anyhow::Result<()> {
    let pool = postgres::migrated(
        &backends.database,
        &backends.namespace,
        &[postgres::Tables::Keys],
        2,
    )
    .await
    .context("cannot reach PostgreSQL (DATABASE_URL)")?;
    let outcome = match command {
        KeysCommand::Create { name, scopes, rate } => {
            let key = keys::create(&pool, &name, scopes, rate).await?;
            println!("{key}");
            Ok(())
        }
        KeysCommand::List => {
            print!("{}", table(&keys::list(&pool).await?));
            Ok(())
        }
        KeysCommand::Revoke(name) => {
            if keys::revoke(&pool, &name).await? {
                eprintln!(
                    "Revoked {}: it stops working within 10 s everywhere.",
                    name.as_str()
                );
                Ok(())
            } else {
                Err(anyhow::anyhow!("no active key named {:?}", name.as_str()))
            }
        }
    };
    pool.close().await;
    outcome
}

/// The keys as an aligned text table.
fn table(records: &[KeyRecord]) -> String {
    let at = |t: Option<time::OffsetDateTime>| {
        t.and_then(|t| t.replace_nanosecond(0).ok()?.format(&Rfc3339).ok())
            .unwrap_or_else(|| "-".to_owned())
    };
    let mut rows = vec![[
        "NAME".to_owned(),
        "SCOPES".to_owned(),
        "RATE".to_owned(),
        "CREATED".to_owned(),
        "LAST USED".to_owned(),
        "REVOKED".to_owned(),
    ]];
    rows.extend(records.iter().map(|r| {
        [
            r.name.clone(),
            if r.scopes == Scopes::all() {
                "*".to_owned()
            } else {
                r.scopes.names().join(",")
            },
            r.rate_per_second
                .map_or_else(|| "-".to_owned(), |r| format!("{r}/s")),
            at(Some(r.created_at)),
            at(r.last_used_at),
            at(r.revoked_at),
        ]
    }));
    let widths: Vec<usize> = (0..6)
        .map(|i| rows.iter().map(|row| row[i].len()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|row| {
            let line: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            format!("{}\n", line.join("  ").trim_end())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::auth::Scope;

    fn args(line: &str) -> Result<KeysCommand, String> {
        parse(line.split_whitespace().map(OsString::from))
    }

    #[test]
    fn create_list_and_revoke_parse() {
        assert_eq!(
            args("create --name ci --scopes events:write,orders:write --rate 50"),
            Ok(KeysCommand::Create {
                name: "ci".parse().expect("valid"),
                scopes: [Scope::EventsWrite, Scope::OrdersWrite]
                    .into_iter()
                    .collect(),
                rate: Some(50),
            })
        );
        assert_eq!(
            args("create --scopes * --name dev"),
            Ok(KeysCommand::Create {
                name: "dev".parse().expect("valid"),
                scopes: Scopes::all(),
                rate: None,
            })
        );
        assert_eq!(args("list"), Ok(KeysCommand::List));
        assert_eq!(
            args("revoke ci"),
            Ok(KeysCommand::Revoke("ci".parse().expect("valid")))
        );
    }

    #[test]
    fn mistakes_are_named() {
        for (line, says) in [
            ("", "action"),
            ("create --scopes ops", "--name"),
            ("create --name ci", "--scopes"),
            ("create --name ci --scopes admin", "admin"),
            ("create --name 'a b' --scopes ops", "--name"),
            ("create --name ci --scopes ops --rate 0", "--rate"),
            ("create --name ci --scopes ops --colour red", "colour"),
            ("revoke", "revoke"),
            ("rotate ci", "rotate"),
        ] {
            let error = args(line).expect_err(line);
            assert!(error.contains(says), "{line}: {error}");
        }
    }
}
