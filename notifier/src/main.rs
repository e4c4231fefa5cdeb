//! The `notifier` binary: wiring only. `notifier healthcheck` asks a running one whether it is ready.

use notifier::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::service::serve("notifier", Config::load, Application::build).await
}
