//! The `gateway` binary: wiring only. With no arguments it serves; `gateway keys ...` manages
//! API keys ([`gateway::keys`], `gateway keys --help`); `gateway migrate` prepares PostgreSQL
//! for services running as roles of their own ([`gateway::migrate`]); `gateway healthcheck`,
//! `--help` and `--version` as every service ([`shared::cli`]).

use gateway::{Application, Config, keys, migrate};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    match args.next() {
        Some(command) if command == "keys" => {
            let args: Vec<_> = args.collect();
            if args.iter().any(|a| a == "--help" || a == "-h") {
                println!("{}", keys::USAGE);
                return Ok(());
            }
            let command = keys::parse(args).map_err(|e| anyhow::anyhow!("{e}\n{}", keys::USAGE))?;
            keys::run(command, &shared::config::Backends::from_env()?).await
        }
        Some(command) if command == "migrate" => {
            let args: Vec<_> = args.collect();
            if args.iter().any(|a| a == "--help" || a == "-h") {
                println!("{}", migrate::USAGE);
                return Ok(());
            }
            let logins =
                migrate::parse(args).map_err(|e| anyhow::anyhow!("{e}\n{}", migrate::USAGE))?;
            migrate::run(logins, &shared::config::Backends::from_env()?).await
        }
        _ => shared::service::serve("gateway", Config::load, Application::build).await,
    }
}
