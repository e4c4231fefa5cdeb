//! The `processor` binary: wiring only. `processor healthcheck` asks a running one whether it is ready.

use processor::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::service::serve("processor", Config::load, Application::build).await
}
