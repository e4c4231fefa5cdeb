//! The `gateway` binary: wiring only.

use gateway::{Application, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = shared::telemetry::init("gateway")?;
    let config = Config::load()?;
    let app = Application::build(config).await?;
    app.run_until(shared::shutdown::signal()).await
}
