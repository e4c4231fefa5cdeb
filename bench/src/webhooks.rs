//! Webhooks per second: a subscription to `product.updated` at a local receiver, a step of load
//! at the pipeline's maximum rate (nearly every event changes its product, so nearly every one
//! becomes a webhook), and the rate at which the receiver got them, from the step's start to the
//! last arrival.

use std::time::Duration;

use testkit::webhooks::Receiver;
use tokio::time::Instant;

use crate::load::{Mix, Step, offer};

/// What the measurement saw.
pub struct Delivered {
    /// The load step.
    pub step: Step,
    /// Webhooks the receiver got.
    pub webhooks: usize,
    /// From the step's start to the last webhook.
    pub elapsed: Duration,
}

/// How long the receiver must get nothing before the measurement ends.
const QUIET: Duration = Duration::from_secs(3);

/// Subscribes a receiver to `product.updated` at `notifier`, offers `rate` events per second
/// for `duration` to `gateway`, and counts the webhooks until none came for [`QUIET`].
pub async fn per_second(
    client: &reqwest::Client,
    (gateway, notifier): (&str, &str),
    mix: &mut Mix,
    rate: u64,
    duration: Duration,
) -> anyhow::Result<Delivered> {
    let receiver = Receiver::start(&[]).await;
    let (id, _) = receiver
        .subscribe(client, notifier, &["product.updated"])
        .await;
    let started = Instant::now();
    let step = offer(client, gateway, mix, rate, duration).await;
    let (mut webhooks, mut last) = (receiver.count(), started.elapsed());
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = receiver.count();
        if now > webhooks {
            (webhooks, last) = (now, started.elapsed());
        } else if started.elapsed() - last > QUIET {
            break;
        }
    }
    let deleted = client
        .delete(format!("{notifier}/subscriptions/{id}"))
        .send()
        .await?;
    anyhow::ensure!(
        deleted.status().is_success(),
        "the subscription was not deleted: {}",
        deleted.status()
    );
    Ok(Delivered {
        step,
        webhooks,
        elapsed: last,
    })
}
