//! TLS to the backends, as a deployment on managed services sets it: the gateway binary started
//! with `sslmode=verify-full`, `rediss://` and `amqps://` against servers of the test's own that
//! take nothing but TLS, with certificates of a private authority that only `SSL_CERT_FILE`
//! names. Trusting it, the gateway becomes ready (`gateway healthcheck` says so) and accepts an
//! event; without it, it stays unready: the servers really are verified.

use std::{process::Stdio, time::Duration};

use testkit::{ports::free_port, tls::TlsBackends};
use tokio::process::{Child, Command};

/// The TLS servers, and the gateway binary pointed at them.
struct Servers(TlsBackends);

impl Servers {
    async fn start() -> Self {
        Self(
            TlsBackends::start("gateway-tls")
                .await
                .expect("PostgreSQL, Redis and RabbitMQ with TLS start"),
        )
    }

    /// The gateway binary running `args` with TLS URLs; `SSL_CERT_FILE` names the authority
    /// when `trusted`. PostgreSQL's URL carries no `sslrootcert`: the authority comes from
    /// `SSL_CERT_FILE` alone.
    fn gateway(&self, args: &[&str], port: u16, trusted: bool) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_gateway"));
        command
            .args(args)
            .env("GATEWAY_ADDR", format!("127.0.0.1:{port}"))
            .env("PIPELINE_NAMESPACE", self.0.backends.namespace.as_str())
            .env("INGEST_SHARDS", self.0.backends.ingest_shards.to_string())
            .env("DATABASE_URL", self.0.postgres.url("sslmode=verify-full"))
            .env("REDIS_URL", self.0.redis.url())
            .env("AMQP_URL", self.0.amqp_url())
            .env(
                "OBJECT_STORE_URL",
                format!(
                    "file://{}",
                    std::env::temp_dir().join("tls-objects").display()
                ),
            )
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if trusted {
            command.env("SSL_CERT_FILE", &self.0.certs.ca);
        } else {
            command.env_remove("SSL_CERT_FILE");
        }
        command
    }

    fn serve(&self, port: u16, trusted: bool) -> Child {
        self.gateway(&[], port, trusted)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the gateway binary runs")
    }

    async fn healthcheck(&self, port: u16) -> std::process::Output {
        self.gateway(&["healthcheck"], port, true)
            .output()
            .await
            .expect("the gateway binary runs")
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_reaches_every_backend_over_tls_trusting_the_authority_of_ssl_cert_file() {
    let servers = Servers::start().await;

    // Without the authority: no backend is trusted, so the gateway never gets ready.
    let port = free_port();
    let mut untrusting = servers.serve(port, false);
    let client = reqwest::Client::new();
    let ready = testkit::wait::eventually(
        "the untrusting gateway to answer /ready",
        crate::helpers::WAIT,
        || ready_of(&client, port),
    )
    .await;
    assert_eq!(ready["status"], "unavailable", "{ready}");
    let unhealthy = servers.healthcheck(port).await;
    assert_eq!(unhealthy.status.code(), Some(1), "{unhealthy:?}");
    assert!(
        String::from_utf8_lossy(&unhealthy.stderr).contains("503"),
        "{unhealthy:?}"
    );
    untrusting.kill().await.expect("stopped");

    // With it, every connection is verified and works.
    let port = free_port();
    let _gateway = servers.serve(port, true);
    testkit::wait::eventually(
        "gateway healthcheck to pass",
        Duration::from_secs(60),
        || async {
            servers
                .healthcheck(port)
                .await
                .status
                .success()
                .then_some(())
        },
    )
    .await;
    // Its readiness does not wait for PostgreSQL (events are accepted without it); the probe
    // soon finds it up too.
    testkit::wait::eventually(
        "every backend up over TLS",
        Duration::from_secs(60),
        || async {
            let ready = ready_of(&client, port).await?;
            ["rabbitmq", "redis", "postgres"]
                .iter()
                .all(|d| ready["dependencies"][d] == "up")
                .then_some(())
        },
    )
    .await;
    let key = testkit::keys::api_key_at(
        &servers.0.backends,
        "tls",
        shared::auth::Scopes::all(),
        None,
    )
    .await;
    let send = async || {
        testkit::keys::client_with_key(&key)
            .post(format!("http://127.0.0.1:{port}/events"))
            .header("content-type", "application/json")
            .header("idempotency-key", "tls-1")
            .body(r#"{"product_id": "tls-1", "price": 9.99}"#)
            .send()
            .await
            .expect("answered")
    };
    assert_eq!(send().await.status(), 202, "over TLS end to end");
    // The idempotency record went to the TLS Redis: the repeat is a replay.
    assert_eq!(send().await.headers()["idempotent-replayed"], "true");
    servers.0.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn healthcheck_fails_when_nothing_listens() {
    let port = free_port();
    let output = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("healthcheck")
        .env("GATEWAY_ADDR", format!("0.0.0.0:{port}"))
        .output()
        .await
        .expect("the gateway binary runs");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("not ready"),
        "{output:?}"
    );
}

/// What the gateway on `port` answers to `/ready`, once it answers.
async fn ready_of(client: &reqwest::Client, port: u16) -> Option<serde_json::Value> {
    let response = client
        .get(format!("http://127.0.0.1:{port}/ready"))
        .send()
        .await
        .ok()?;
    response.json().await.ok()
}
