//! The `processor` binary: wiring only.

use processor::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = shared::telemetry::init("processor")?;
    let config = Config::load()?;
    let app = Application::build(config).await?;
    app.run_until(shared::shutdown::signal()).await
}
