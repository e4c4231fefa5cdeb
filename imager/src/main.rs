//! The `imager` binary: wiring only.

use imager::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shared::service::serve("imager", Config::load, Application::build).await
}
