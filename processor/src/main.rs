//! The `processor` binary: wiring only.

use processor::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::service::serve("processor", Config::load, Application::build).await
}
