//! A local S3 API server (`moto` in server mode, from PyPI) for the object-store tests.

use std::time::Duration;

/// A local S3 API server (`moto` in server mode, from PyPI) on a free port, with one bucket;
/// stopped when dropped.
pub struct S3Server {
    child: tokio::process::Child,
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// Its bucket.
    pub bucket: String,
}

impl S3Server {
    /// Starts the server and creates `bucket`.
    pub async fn start(bucket: &str) -> Self {
        let importable = std::process::Command::new("python3")
            .args(["-c", "import moto.server"])
            .stderr(std::process::Stdio::null())
            .status();
        assert!(
            importable.is_ok_and(|s| s.success()),
            "the S3 tests need moto: python3 -m pip install 'moto[server]'"
        );
        let port = crate::ports::free_port();
        let child = tokio::process::Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 -m moto.server starts (pip install 'moto[server]')");
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        let client = reqwest::Client::new();
        let url = format!("http://{addr}/{bucket}");
        crate::wait::eventually(
            "the S3 server up with its bucket",
            Duration::from_secs(60),
            || {
                let (client, url) = (client.clone(), url.clone());
                async move {
                    let created = client.put(&url).send().await.ok()?;
                    created.status().is_success().then_some(())
                }
            },
        )
        .await;
        Self {
            child,
            addr,
            bucket: bucket.to_owned(),
        }
    }

    /// The `object_store` options that reach it through `addr` (itself, or a proxy in front).
    pub fn options(addr: std::net::SocketAddr) -> Vec<(&'static str, String)> {
        vec![
            ("aws_endpoint", format!("http://{addr}")),
            ("aws_access_key_id", "test".into()),
            ("aws_secret_access_key", "test".into()),
            ("aws_region", "us-east-1".into()),
            ("aws_allow_http", "true".into()),
        ]
    }

    /// Stops the server.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
