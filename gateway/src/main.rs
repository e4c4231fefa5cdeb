//! The `gateway` binary: wiring only. With no arguments it serves; `gateway keys ...` manages
//! API keys ([`gateway::keys`]).

use gateway::{Application, Config, keys};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    match args.next() {
        None => shared::service::serve("gateway", Config::load, Application::build).await,
        Some(command) if command == "keys" => {
            let command = keys::parse(args).map_err(|e| anyhow::anyhow!("{e}\n{}", keys::USAGE))?;
            keys::run(command, &shared::config::Backends::from_env()?).await
        }
        Some(other) => anyhow::bail!(
            "unknown command {other:?}: run without arguments to serve\n{}",
            keys::USAGE
        ),
    }
}
