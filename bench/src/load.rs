//! The open-loop load: requests start at fixed times whatever happens to earlier ones, and each
//! latency is measured from when the request was due, so a stall shows in the numbers instead of
//! slowing the load down (no coordinated omission).

use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use hdrhistogram::Histogram;
use tokio::time::Instant;

/// More requests in flight than this and the step counts as overloaded.
const MAX_IN_FLIGHT: usize = 8192;

/// The event mix: many products with a few hot ones, partial updates, some client keys, and some
/// repeats of keyed requests.
pub struct Mix {
    rng: fastrand::Rng,
    run: String,
    issued: u64,
    recent: VecDeque<(String, String)>,
}

/// What one request is.
struct Request {
    key: Option<String>,
    body: String,
}

impl Mix {
    /// A mix whose keys are unique to `run`.
    pub fn new(run: &str, seed: u64) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(seed),
            run: run.to_owned(),
            issued: 0,
            recent: VecDeque::new(),
        }
    }

    fn next(&mut self) -> Request {
        self.issued += 1;
        // 5% repeats of an earlier keyed request (one old enough to have been answered): must
        // be answered from the idempotency record.
        if self.rng.f64() < 0.05
            && self.recent.len() >= 500
            && let Some((key, body)) = self.recent.get(self.rng.usize(..250))
        {
            return Request {
                key: Some(key.clone()),
                body: body.clone(),
            };
        }
        // 20% of events go to 20 hot products, the rest spread over 10,000.
        let product = if self.rng.f64() < 0.2 {
            format!("hot-{}", self.rng.u32(0..20))
        } else {
            format!("p-{}", self.rng.u32(0..10_000))
        };
        let price = format!("{}.{:02}", self.rng.u32(1..10_000), self.rng.u32(0..100));
        let stock = self.rng.u32(0..10_000);
        let body = match self.rng.u8(0..10) {
            0..=3 => format!(r#"{{"product_id":"{product}","price":{price}}}"#),
            4..=6 => format!(r#"{{"product_id":"{product}","stock":{stock}}}"#),
            _ => format!(r#"{{"product_id":"{product}","price":{price},"stock":{stock}}}"#),
        };
        // Half the events carry a client key.
        let key = (self.rng.bool()).then(|| format!("{}-{}", self.run, self.issued));
        if let Some(key) = &key {
            self.recent.push_back((key.clone(), body.clone()));
            if self.recent.len() > 1000 {
                self.recent.pop_front();
            }
        }
        Request { key, body }
    }
}

/// What a step of load did.
pub struct Step {
    /// Requests per second offered.
    pub rate: u64,
    /// Requests due in the step.
    pub offered: u64,
    /// Answers of the expected status (`202` for an event) that were not replays: new events.
    pub accepted_new: u64,
    /// Answers of the expected status that were replays of a repeat.
    pub replays: u64,
    /// Anything else: another status, a transport error, overload.
    pub errors: u64,
    /// The errors by kind (status code, `transport`, `overload`).
    pub failures: std::collections::BTreeMap<String, u64>,
    /// How long the step took from first due request to last answer.
    pub elapsed: Duration,
    /// Latency from due time to answer, in microseconds.
    pub latency: Histogram<u64>,
}

impl Step {
    /// Every request answered with the expected status.
    pub fn clean(&self) -> bool {
        self.errors == 0 && self.accepted_new + self.replays == self.offered
    }
}

struct Outcome {
    status: Option<u16>,
    replayed: bool,
    latency: Duration,
}

/// Offers `rate` requests per second for `duration` to `url`'s `POST /events`.
pub async fn offer(
    client: &reqwest::Client,
    url: &str,
    mix: &mut Mix,
    rate: u64,
    duration: Duration,
) -> Step {
    let events = format!("{url}/events");
    let request = || {
        let request = mix.next();
        let post = client
            .post(&events)
            .header("content-type", "application/json")
            .body(request.body);
        match request.key {
            Some(key) => post.header("idempotency-key", key),
            None => post,
        }
    };
    offer_each(request, 202, rate, duration).await
}

/// Offers `rate` requests per second for `duration` to `url`'s `GET /health`: every layer of
/// the server and no work, answered `200` (counted as accepted).
pub async fn offer_health(
    client: &reqwest::Client,
    url: &str,
    rate: u64,
    duration: Duration,
) -> Step {
    let health = format!("{url}/health");
    offer_each(|| client.get(&health), 200, rate, duration).await
}

/// Sends what `next` makes at `rate` per second for `duration`; `expected` is the status of a
/// request that succeeded.
async fn offer_each(
    mut next: impl FnMut() -> reqwest::RequestBuilder,
    expected: u16,
    rate: u64,
    duration: Duration,
) -> Step {
    let total = rate * duration.as_secs().max(1);
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let start = Instant::now() + Duration::from_millis(20);
    let in_flight = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Outcome>();
    let mut overloaded = 0;
    for n in 0..total {
        let due = start + interval * u32::try_from(n).unwrap_or(u32::MAX);
        tokio::time::sleep_until(due).await;
        if in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
            overloaded += 1;
            continue;
        }
        let request = next();
        let (tx, in_flight) = (tx.clone(), Arc::clone(&in_flight));
        in_flight.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let response = request.send().await;
            let latency = due.elapsed();
            in_flight.fetch_sub(1, Ordering::Relaxed);
            let (status, replayed) = match response {
                Ok(r) => (
                    Some(r.status().as_u16()),
                    r.headers().contains_key("idempotent-replayed"),
                ),
                Err(_) => (None, false),
            };
            let _ = tx.send(Outcome {
                status,
                replayed,
                latency,
            });
        });
    }
    drop(tx);
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
    let (mut accepted_new, mut replays, mut errors) = (0, 0, overloaded);
    let mut failures = std::collections::BTreeMap::<String, u64>::new();
    if overloaded > 0 {
        failures.insert("overload".into(), overloaded);
    }
    while let Ok(Some(outcome)) = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
        let micros = u64::try_from(outcome.latency.as_micros()).unwrap_or(u64::MAX);
        latency.saturating_record(micros.max(1));
        match (outcome.status, outcome.replayed) {
            (Some(status), true) if status == expected => replays += 1,
            (Some(status), false) if status == expected => accepted_new += 1,
            (other, _) => {
                errors += 1;
                *failures
                    .entry(other.map_or("transport".into(), |s| s.to_string()))
                    .or_insert(0) += 1;
            }
        }
    }
    Step {
        rate,
        failures,
        offered: total,
        accepted_new,
        replays,
        errors,
        elapsed: start.elapsed(),
        latency,
    }
}
