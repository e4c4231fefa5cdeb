//! A catalog-sized backfill: `events` price updates over `events / 10` products, sent as fast as
//! the gateway takes them (a closed loop of [`IN_FLIGHT`] requests, each refused one retried
//! after its `Retry-After`), timed to the last `202` and to the last event applied.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;

/// Requests in flight at once.
pub const IN_FLIGHT: u64 = 256;

/// What the backfill took.
pub struct Backfill {
    /// Events sent (each accepted once).
    pub events: u64,
    /// Products they cover.
    pub products: u64,
    /// Refusals retried (`503` and the like).
    pub retried: u64,
    /// From the first request to the last `202`.
    pub accepted: Duration,
    /// From the first request to the last event applied.
    pub applied: Duration,
}

/// Sends the backfill to the gateway at `url` and waits until the processor at `processor`
/// has processed `events` more (read from its metrics every half second: counting the inbox
/// would scan a table of a million rows over and over, and slow what it measures).
pub async fn run(
    client: &reqwest::Client,
    (url, processor): (&str, &str),
    events: u64,
) -> anyhow::Result<Backfill> {
    let products = (events / 10).max(1);
    let processed = || async {
        let metrics = crate::probe::scrape(client, processor).await?;
        anyhow::Ok(crate::probe::total(
            &metrics,
            shared::metric::EVENTS_PROCESSED_TOTAL,
        ))
    };
    let before = processed().await?;
    let next = Arc::new(AtomicU64::new(0));
    let retried = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..IN_FLIGHT.min(events) {
        let (client, url) = (client.clone(), format!("{url}/events"));
        let (next, retried) = (Arc::clone(&next), Arc::clone(&retried));
        senders.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= events {
                    return anyhow::Ok(());
                }
                let body = format!(
                    r#"{{"product_id":"bf-{}","price":{}.{:02}}}"#,
                    n % products,
                    1 + n % 997,
                    n % 100
                );
                while !send(&client, &url, &body).await? {
                    retried.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while let Some(sent) = senders.join_next().await {
        sent??;
    }
    let accepted = started.elapsed();
    let target = before + events as f64;
    while processed().await? < target {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(3600),
            "the backfill was not applied within an hour"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(Backfill {
        events,
        products,
        retried: retried.load(Ordering::Relaxed),
        accepted,
        applied: started.elapsed(),
    })
}

/// Sends one update; true once it is accepted, false (after waiting the answer's
/// `Retry-After`, or a second) if it should be sent again.
async fn send(client: &reqwest::Client, url: &str, body: &str) -> anyhow::Result<bool> {
    let answer = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await;
    let wait = match answer {
        Ok(r) if r.status().as_u16() == 202 => return Ok(true),
        Ok(r) if r.status().is_server_error() || r.status().as_u16() == 429 => r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(1),
        Ok(r) => anyhow::bail!("the gateway refused a backfill update: {}", r.status()),
        Err(_) => 1,
    };
    tokio::time::sleep(Duration::from_secs(wait)).await;
    Ok(false)
}
