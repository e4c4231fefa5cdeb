//! The `gateway` binary: wiring only. With no arguments it serves; `gateway keys ...` manages
//! API keys ([`gateway::keys`], `gateway keys --help`); `gateway healthcheck`, `--help` and
//! `--version` as every service ([`shared::cli`]).

use gateway::{Application, Config, keys};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    if args.next().is_some_and(|command| command == "keys") {
        let args: Vec<_> = args.collect();
        if args.iter().any(|a| a == "--help" || a == "-h") {
            println!("{}", keys::USAGE);
            return Ok(());
        }
        let command = keys::parse(args).map_err(|e| anyhow::anyhow!("{e}\n{}", keys::USAGE))?;
        return keys::run(command, &shared::config::Backends::from_env()?).await;
    }
    shared::service::serve("gateway", Config::load, Application::build).await
}
