//! The `dashboard` binary: wiring only. `dashboard healthcheck` asks a running one whether it is ready.

use dashboard::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::service::serve("dashboard", Config::load, Application::build).await
}
