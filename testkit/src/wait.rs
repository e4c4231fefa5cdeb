//! Waiting by polling with a deadline, never by fixed sleeps: for a value, for an HTTP status,
//! for a service to be ready.

use std::{future::Future, time::Duration};

/// Polls `probe` until it yields `Some`, or panics naming `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_or(timeout, probe)
        .await
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// Polls `probe` every 50 ms until it yields `Some`, or gives `None` after `timeout`.
pub async fn eventually_or<T, F, Fut>(timeout: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `url` until it answers `status`, or panics naming `what` after `timeout`; the answer.
pub async fn until_status(
    client: &reqwest::Client,
    url: &str,
    status: u16,
    what: &str,
    timeout: Duration,
) -> reqwest::Response {
    eventually(what, timeout, || async {
        let response = client.get(url).send().await.ok()?;
        (response.status() == status).then_some(response)
    })
    .await
}

/// Polls the service at `base` (`http://host:port`) until its `/ready` is 200.
pub async fn until_ready(client: &reqwest::Client, base: &str, timeout: Duration) {
    let url = format!("{base}/ready");
    until_status(client, &url, 200, &format!("{base} to be ready"), timeout).await;
}
