//! A local webhook receiver: an HTTP server that records every request it gets and answers
//! with scripted status codes (then 200), so tests can see exactly what a subscriber saw.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use tokio::{net::TcpListener, task::JoinHandle};

/// One request as the receiver got it.
#[derive(Clone, Debug)]
pub struct Received {
    /// Its headers (names lower-case).
    pub headers: HeaderMap,
    /// Its body, byte for byte.
    pub body: Bytes,
    /// The status the receiver answered.
    pub answered: u16,
}

impl Received {
    /// True when its `webhook-signature` holds a `v1` signature of its id, timestamp and body
    /// made with `secret` (Standard Webhooks: HMAC-SHA256 keyed with the secret's base64 part
    /// decoded), checked here on its own, not with the notifier's code.
    pub fn signed_with(&self, secret: &str) -> bool {
        use base64::{Engine, engine::general_purpose::STANDARD};
        use hmac::{Hmac, Mac};
        let Ok(key) = STANDARD.decode(secret.trim_start_matches("whsec_")) else {
            return false;
        };
        let signed = format!(
            "{}.{}.",
            self.header("webhook-id"),
            self.header("webhook-timestamp")
        );
        self.header("webhook-signature")
            .split(' ')
            .filter_map(|s| s.strip_prefix("v1,"))
            .filter_map(|s| STANDARD.decode(s).ok())
            .any(|signature| {
                let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(&key) else {
                    return false;
                };
                mac.update(signed.as_bytes());
                mac.update(&self.body);
                mac.verify_slice(&signature).is_ok()
            })
    }

    /// A header's value as text ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

#[derive(Default)]
struct Log {
    script: VecDeque<u16>,
    received: Vec<Received>,
    /// Sent as `Retry-After` with every answer that is not 200.
    retry_after: Option<String>,
}

/// A running receiver at `http://127.0.0.1:<port>/hook`; stops when dropped.
pub struct Receiver {
    addr: SocketAddr,
    log: Arc<Mutex<Log>>,
    task: JoinHandle<()>,
}

impl Receiver {
    /// Subscribes this receiver to `types` at the notifier at `notifier`; its id and secret.
    pub async fn subscribe(
        &self,
        client: &reqwest::Client,
        notifier: &str,
        types: &[&str],
    ) -> (String, String) {
        subscribe(client, notifier, &self.url(), types).await
    }

    /// A receiver that answers `script` in turn, then 200 to everything.
    pub async fn start(script: &[u16]) -> Self {
        Self::start_asking(script, None).await
    }

    /// A receiver that answers `script` in turn, each answer with `Retry-After: retry_after`,
    /// then 200 to everything.
    pub async fn start_asking(script: &[u16], retry_after: Option<&str>) -> Self {
        Self::start_on(std::net::Ipv4Addr::LOCALHOST.into(), script, retry_after).await
    }

    /// [`Self::start_asking`] on a free port of `ip` (a bridge's address, for a notifier in a
    /// network namespace).
    pub async fn start_on(ip: std::net::IpAddr, script: &[u16], retry_after: Option<&str>) -> Self {
        let listener = TcpListener::bind((ip, 0)).await.expect("a free port");
        let addr = listener.local_addr().expect("bound");
        let log = Arc::new(Mutex::new(Log {
            script: script.iter().copied().collect(),
            received: Vec::new(),
            retry_after: retry_after.map(str::to_owned),
        }));
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(Arc::clone(&log));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, log, task }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL to subscribe.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// How many requests it got so far.
    pub fn count(&self) -> usize {
        self.log.lock().expect("not poisoned").received.len()
    }

    /// What it got so far.
    pub fn received(&self) -> Vec<Received> {
        self.log.lock().expect("not poisoned").received.clone()
    }

    /// Waits until it got at least `n` requests; all it got.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        crate::wait::eventually(&format!("{n} webhook requests"), timeout, || async {
            let received = self.received();
            (received.len() >= n).then_some(received)
        })
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    State(log): State<Arc<Mutex<Log>>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap) {
    let mut log = log.lock().expect("not poisoned");
    let answered = log.script.pop_front().unwrap_or(200);
    log.received.push(Received {
        headers,
        body,
        answered,
    });
    let mut answer = HeaderMap::new();
    if let Some(wait) = log.retry_after.as_deref().filter(|_| answered != 200) {
        answer.insert(
            axum::http::header::RETRY_AFTER,
            wait.parse().expect("a header value"),
        );
    }
    (
        StatusCode::from_u16(answered).unwrap_or(StatusCode::OK),
        answer,
    )
}

/// Subscribes `url` to `types` at the notifier at `notifier` (`http://host:port`); the
/// subscription's id and secret.
pub async fn subscribe(
    client: &reqwest::Client,
    notifier: &str,
    url: &str,
    types: &[&str],
) -> (String, String) {
    let response = client
        .post(format!("{notifier}/subscriptions"))
        .json(&serde_json::json!({ "url": url, "event_types": types }))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 201);
    let body: serde_json::Value = response.json().await.expect("JSON");
    let field = |name: &str| body[name].as_str().expect(name).to_owned();
    (field("id"), field("secret"))
}
