//! `gateway keys ...`: API keys managed from the command line, against the same environment as
//! the services (`DATABASE_URL`, `PIPELINE_NAMESPACE`); it applies the migrations it needs,
//! does one thing and exits.
//!
//! - `gateway keys create --name NAME --scopes SCOPES [--rate N]`: prints the new key, and
//!   nothing else, on stdout (it is shown this once; only its hash is kept). `SCOPES` is a
//!   comma-separated list, or `*` for every scope; `--rate` is requests per second per replica.
//! - `gateway keys import --name NAME --scopes SCOPES --from-env VAR [--rate N] [--replace]`:
//!   stores the hash of the key held by the environment variable `VAR` (made by the operator,
//!   in the format `create` gives): how a deployment gets its first key without it ever being
//!   printed. A key stored before, active or revoked, is left as it is; with `--replace`, an
//!   active key of the same name is revoked in the same transaction (rotation). Prints nothing
//!   on stdout.
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
    /// Store the hash of a key made elsewhere.
    Import {
        /// Its name.
        name: KeyName,
        /// What it may do.
        scopes: Scopes,
        /// Requests per second per replica, if limited.
        rate: Option<u32>,
        /// The environment variable holding the key.
        from_env: String,
        /// Revoke an active key of the same name.
        replace: bool,
    },
    /// List the keys.
    List,
    /// Revoke the key with this name.
    Revoke(KeyName),
}

/// How to call the command.
pub const USAGE: &str = "usage: gateway keys create --name NAME --scopes SCOPES [--rate N]
       gateway keys import --name NAME --scopes SCOPES --from-env VAR [--rate N] [--replace]
       gateway keys list
       gateway keys revoke NAME
SCOPES: comma-separated, from events:write, orders:write, products:read, orders:read,
        orders:read_all, catalog:write, ops; or * for every scope";

/// Parses the arguments after `keys`.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<KeysCommand, String> {
    let mut parser = lexopt::Parser::from_args(args);
    let action = match parser.next().map_err(|e| e.to_string())? {
        Some(Value(action)) => action.string().map_err(|e| e.to_string())?,
        _ => return Err("name an action: create, import, list or revoke".into()),
    };
    match action.as_str() {
        "create" | "import" => parse_create(&mut parser, action == "import"),
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
        other => Err(format!(
            "unknown action {other:?}: create, import, list or revoke"
        )),
    }
}

/// The options of `create`, and of `import` (which also takes `--from-env` and `--replace`).
fn parse_create(parser: &mut lexopt::Parser, import: bool) -> Result<KeysCommand, String> {
    let (mut name, mut scopes, mut rate) = (None, None, None);
    let (mut from_env, mut replace) = (None, false);
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
            Long("from-env") if import => from_env = Some(value(parser)?),
            Long("replace") if import => replace = true,
            other => return Err(other.unexpected().to_string()),
        }
    }
    let scopes = scopes.ok_or("--scopes is required")?;
    if scopes == Scopes::default() {
        return Err("--scopes names no scope".into());
    }
    let name = name.ok_or("--name is required")?;
    if !import {
        return Ok(KeysCommand::Create { name, scopes, rate });
    }
    Ok(KeysCommand::Import {
        name,
        scopes,
        rate,
        from_env: from_env.ok_or("--from-env is required: the variable holding the key")?,
        replace,
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
        KeysCommand::Import {
            name,
            scopes,
            rate,
            from_env,
            replace,
        } => import(&pool, &name, scopes, rate, &from_env, replace).await,
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

/// `keys import`: the key from the variable `from_env`, checked, then stored; what happened on
/// stderr.
async fn import(
    pool: &sqlx::PgPool,
    name: &KeyName,
    scopes: Scopes,
    rate: Option<u32>,
    from_env: &str,
    replace: bool,
) -> anyhow::Result<()> {
    let key = std::env::var(from_env)
        .ok()
        .map(|k| k.trim().to_owned())
        .filter(|k| !k.is_empty())
        .ok_or_else(|| anyhow::anyhow!("{from_env} is not set: it must hold the key to import"))?;
    keys::check_format(&key).map_err(|e| anyhow::anyhow!("{from_env}: {e}"))?;
    let name_str = name.as_str();
    match keys::import(pool, name, &key, scopes, rate, replace).await? {
        keys::Imported::Stored { replaced: true } => eprintln!(
            "Imported the key of {from_env} as {name_str}; the previous {name_str} key is revoked."
        ),
        keys::Imported::Stored { replaced: false } => {
            eprintln!("Imported the key of {from_env} as {name_str}.");
        }
        keys::Imported::Present { revoked: false } => {
            eprintln!("The key of {from_env} is stored already; nothing changed.");
        }
        keys::Imported::Present { revoked: true } => eprintln!(
            "The key of {from_env} was revoked and stays revoked: put a new key in {from_env} to \
             make a working one."
        ),
    }
    Ok(())
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
        assert_eq!(
            args("import --name admin --scopes * --from-env FIRST_API_KEY --replace"),
            Ok(KeysCommand::Import {
                name: "admin".parse().expect("valid"),
                scopes: Scopes::all(),
                rate: None,
                from_env: "FIRST_API_KEY".into(),
                replace: true,
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
            ("import --name ci --scopes ops", "--from-env"),
            ("create --name ci --scopes ops --from-env K", "from-env"),
            ("create --name ci --scopes ops --replace", "replace"),
            ("revoke", "revoke"),
            ("rotate ci", "rotate"),
        ] {
            let error = args(line).expect_err(line);
            assert!(error.contains(says), "{line}: {error}");
        }
    }
}
