//! The `notifier` binary: wiring only.

use notifier::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::service::serve("notifier", Config::load, Application::build).await
}
