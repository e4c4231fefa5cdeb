//! The `imager` binary: wiring only. `imager healthcheck` asks a running one whether it is ready.

use imager::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::service::serve("imager", Config::load, Application::build).await
}
