//! The `dashboard` binary: wiring only.

use dashboard::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::service::serve("dashboard", Config::load, Application::build).await
}
