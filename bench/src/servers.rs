//! The gateway's HTTP server taken apart: the same `GET /health`, with the same answer, served by
//! hyper alone, by an axum router without layers, and by that router with the layers every
//! service applies ([`shared::http::harden`]), each in a process of its own (this binary started
//! with `--serve KIND`) on the runtime the services use, so that its CPU per request is its own.
//! Beside the gateway's own `GET /health` at the same rate, what each step adds: hyper and the
//! runtime, then axum's routing, then the layers, then the gateway's telemetry and routes.

use std::{convert::Infallible, process::Stdio, time::Duration};

use anyhow::Context;
use axum::{Json, Router, body::Body, routing::get};
use hyper::{Request, Response, body::Incoming, header, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::TcpListener,
    process::{Child, Command},
};

use crate::load::{self, Step};

/// What `--serve` takes, and what each serves `GET /health` with.
pub const KINDS: [(&str, &str); 3] = [
    (
        "hyper",
        "hyper alone (HTTP/1.1, the gateway's header timeout)",
    ),
    ("axum", "an axum router without layers"),
    (
        "hardened",
        "the router with every service's layers, without telemetry",
    ),
];

/// The gateway's answer to `GET /health`.
const HEALTHY: &[u8] = br#"{"status":"healthy"}"#;

/// Serves `kind` (one of [`KINDS`]) on a port of its own on the loopback, prints the address,
/// and serves until the process is killed.
pub async fn serve(kind: &str) -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?);
    let limits = shared::http::Limits::from_env()?;
    let router = Router::new().route(
        "/health",
        get(|| async { Json(serde_json::json!({ "status": "healthy" })) }),
    );
    let forever = std::future::pending();
    match kind {
        "hyper" => hyper_alone(listener, &limits).await,
        "axum" => shared::http::serve(listener, router, &limits, forever).await,
        "hardened" => {
            let hardened = shared::http::harden(router, &limits, "bench", None);
            shared::http::serve(listener, hardened, &limits, forever).await;
        }
        other => anyhow::bail!("--serve takes hyper, axum or hardened, not {other}"),
    }
    Ok(())
}

/// Every request answered `200` with [`HEALTHY`], over connections set up as the services' are
/// (no delay, the header read timeout, the head's size).
async fn hyper_alone(listener: TcpListener, limits: &shared::http::Limits) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(shared::http::MAX_HEAD_BYTES);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors, say: wait a moment rather than spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = http.serve_connection(
            TokioIo::new(stream),
            service_fn(|_: Request<Incoming>| async {
                Ok::<_, Infallible>(
                    Response::builder()
                        .header(header::CONTENT_TYPE, "application/json")
                        .body(Body::from(HEALTHY))
                        .expect("a valid response"),
                )
            }),
        );
        tokio::spawn(connection);
    }
}

/// One of [`KINDS`], served by a child process of this binary.
struct Server {
    url: String,
    pid: u32,
    /// Killed when dropped.
    _child: Child,
}

impl Server {
    async fn start(kind: &str) -> anyhow::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--serve", kind])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child.stdout.take().context("the server's output")?;
        let mut addr = String::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            BufReader::new(stdout).read_line(&mut addr),
        )
        .await
        .context("the server's address, within 10 s")??;
        Ok(Self {
            url: format!("http://{}", addr.trim()),
            pid: child.id().context("the server's process")?,
            _child: child,
        })
    }
}

/// Offers `GET /health` to `kind` at `rate` for `duration`: what was answered, and the CPU per
/// request of the server and of this process (the load generator).
pub async fn health(
    client: &reqwest::Client,
    kind: &str,
    rate: u64,
    duration: Duration,
) -> anyhow::Result<(Step, [Option<f64>; 2])> {
    let server = Server::start(kind).await?;
    load::offer_health(client, &server.url, 10, Duration::from_secs(1)).await;
    Ok(cpu_per_health(client, (&server.url, server.pid), rate, duration).await)
}

/// Offers `GET /health` to the server at `url`, process `pid`, at `rate` for `duration`: what
/// was answered, and the CPU per request of that process and of this one (the load generator).
pub async fn cpu_per_health(
    client: &reqwest::Client,
    (url, pid): (&str, u32),
    rate: u64,
    duration: Duration,
) -> (Step, [Option<f64>; 2]) {
    let own = || {
        [
            crate::probe::cpu_micros(pid),
            crate::probe::cpu_micros(std::process::id()),
        ]
    };
    let before = own();
    let step = load::offer_health(client, url, rate, duration).await;
    let cpu = crate::per_unit(before, own(), step.accepted_new as f64);
    (step, cpu)
}
