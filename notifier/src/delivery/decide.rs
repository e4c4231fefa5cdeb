//! What follows from an attempt, decided without I/O, clock or randomness: the caller passes
//! the delivery's attempts so far, the subscription's failures in a row and the jitter draw.
//! The rules are the outcomes listed in [`super`]'s documentation;
//! [`crate::store::deliveries::lease::finish`] reads the inputs and applies the [`Verdict`] in
//! one transaction. Unit-tested as a table.

use std::time::Duration;

use reqwest::StatusCode;

use super::attempt::{Attempt, AttemptError};
use crate::store::subscriptions::DisableReason;

/// The longest `Retry-After` honoured: an endpoint cannot park a delivery for longer.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// How failures are retried and when a subscription is disabled.
#[derive(Clone, Copy, Debug)]
pub struct Schedule<'a> {
    /// The delays before each retry.
    pub retries: &'a [Duration],
    /// Failed deliveries in a row that disable a subscription.
    pub disable_after: i32,
}

/// What follows from an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A 2xx: `sent`, never attempted again; the subscription's failure count starts over.
    Sent,
    /// `410 Gone`: `failed` at once, not counted against the subscription, which is disabled
    /// and its other pending deliveries skipped.
    Gone,
    /// Failed with a retry left: pending again after this wait.
    Retry(Duration),
    /// Failed after the last retry: `failed` (the notifier's dead letter) and counted against
    /// the subscription, which is disabled for `disable` when this failure reaches the count.
    Failed {
        /// Why the subscription is disabled now, if it is.
        disable: Option<DisableReason>,
    },
}

impl Verdict {
    /// The outcome label in metrics and logs: `sent`, `retry` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Retry(_) => "retry",
            Self::Gone | Self::Failed { .. } => "failed",
        }
    }
}

/// What follows from `attempt`, made after `attempts` earlier ones, to a subscription whose
/// last `failures_in_a_row` deliveries failed. A failure with a delay of `schedule` left waits
/// that delay spread by ±20% (`spread` in 0..1: 0 is -20%, 1 is +20%), and never less than
/// the `Retry-After` a `429`, `502`, `503` or `504` asked for (at most [`MAX_RETRY_AFTER`]).
pub fn decide(
    attempt: &Attempt,
    attempts: i32,
    failures_in_a_row: i32,
    schedule: &Schedule<'_>,
    spread: f64,
) -> Verdict {
    let Err(error) = &attempt.result else {
        return Verdict::Sent;
    };
    // The endpoint says it will never take deliveries again.
    if error.status() == Some(StatusCode::GONE) {
        return Verdict::Gone;
    }
    let delay = usize::try_from(attempts)
        .ok()
        .and_then(|i| schedule.retries.get(i));
    match delay {
        Some(delay) => Verdict::Retry(next_delay(*delay, honoured_retry_after(error), spread)),
        None => Verdict::Failed {
            disable: (failures_in_a_row.saturating_add(1) >= schedule.disable_after)
                .then_some(DisableReason::FailedInARow(schedule.disable_after)),
        },
    }
}

/// The `Retry-After` of a `429`, `502`, `503` or `504`; any other answer's is not honoured.
fn honoured_retry_after(error: &AttemptError) -> Option<Duration> {
    match error {
        AttemptError::Status {
            status,
            retry_after,
        } if matches!(status.as_u16(), 429 | 502 | 503 | 504) => *retry_after,
        _ => None,
    }
}

/// The wait before the next attempt: the schedule's `delay` spread, so deliveries that failed
/// together do not all come back at once; and never sooner than the endpoint's `Retry-After`.
fn next_delay(delay: Duration, retry_after: Option<Duration>, spread: f64) -> Duration {
    let jittered = delay.mul_f64(0.8 + 0.4 * spread.clamp(0.0, 1.0));
    jittered.max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use reqwest::StatusCode;
    use time::OffsetDateTime;

    use shared::egress::EgressError;

    use super::{MAX_RETRY_AFTER, Schedule, Verdict, decide, next_delay};
    use crate::{
        delivery::attempt::{Attempt, AttemptError},
        store::subscriptions::DisableReason,
    };

    const RETRIES: [Duration; 2] = [Duration::from_secs(5), Duration::from_secs(300)];
    const SCHEDULE: Schedule<'static> = Schedule {
        retries: &RETRIES,
        disable_after: 3,
    };
    const KEPT: Verdict = Verdict::Failed { disable: None };
    const DISABLED: Verdict = Verdict::Failed {
        disable: Some(DisableReason::FailedInARow(3)),
    };

    fn attempt(result: Result<StatusCode, AttemptError>) -> Attempt {
        Attempt {
            at: OffsetDateTime::UNIX_EPOCH,
            latency: Duration::from_millis(20),
            result,
        }
    }

    fn ok(code: u16) -> Attempt {
        attempt(Ok(StatusCode::from_u16(code).expect("a status code")))
    }

    fn failed(error: AttemptError) -> Attempt {
        attempt(Err(error))
    }

    /// An answer `code`, without `Retry-After`.
    fn says(code: u16) -> Attempt {
        failed(AttemptError::Status {
            status: StatusCode::from_u16(code).expect("a status code"),
            retry_after: None,
        })
    }

    /// An answer `code` asking, in `Retry-After`, for `seconds`.
    fn asks(code: u16, seconds: u64) -> Attempt {
        failed(AttemptError::Status {
            status: StatusCode::from_u16(code).expect("a status code"),
            retry_after: Some(Duration::from_secs(seconds)),
        })
    }

    fn retry(seconds: u64) -> Verdict {
        Verdict::Retry(Duration::from_secs(seconds))
    }

    #[test]
    fn each_attempt_leads_where_the_delivery_rules_say() {
        let (sent, gone) = (Verdict::Sent, Verdict::Gone);
        let timeout = || failed(AttemptError::TimedOut);
        let refused = failed(AttemptError::Refused(EgressError::NoHost));
        let unreachable = failed(AttemptError::Connect("connection refused".into()));
        let year = 365 * 86_400;
        // (case, attempt, attempts before it, the subscription's failures in a row before it,
        // verdict); the schedule is 5 s then 300 s, 3 failures disable; no jitter.
        let table = [
            ("200", ok(200), 0, 0, sent),
            ("204, last rung, failing", ok(204), 2, 2, sent),
            ("410 at first", says(410), 0, 0, gone),
            ("410 on the last rung", says(410), 2, 2, gone),
            ("500: the first delay", says(500), 0, 0, retry(5)),
            ("500: the second delay", says(500), 1, 0, retry(300)),
            ("503 asks longer", asks(503, 60), 0, 0, retry(60)),
            ("429 asks shorter", asks(429, 1), 0, 0, retry(5)),
            ("502 asks longer", asks(502, 600), 1, 0, retry(600)),
            ("504 asks longer", asks(504, 60), 0, 0, retry(60)),
            ("500 asks: not heard", asks(500, 60), 0, 0, retry(5)),
            ("a year asked: a day", asks(503, year), 0, 0, retry(86_400)),
            ("timeout", timeout(), 1, 0, retry(300)),
            ("refused by the guard", refused, 0, 0, retry(5)),
            ("timeout, last rung", timeout(), 2, 0, KEPT),
            ("503 asks, last rung", asks(503, 60), 2, 1, KEPT),
            ("reaching the count", says(500), 2, 2, DISABLED),
            ("past the count", unreachable, 2, 7, DISABLED),
            ("past the schedule", says(500), 9, 0, KEPT),
        ];
        for (case, attempt, attempts, failures, expected) in table {
            let verdict = decide(&attempt, attempts, failures, &SCHEDULE, 0.5);
            assert_eq!(verdict, expected, "{case}");
        }
    }

    #[test]
    fn the_spread_applies_to_the_schedule_not_to_a_longer_retry_after() {
        let unasked = says(503);
        assert_eq!(decide(&unasked, 0, 0, &SCHEDULE, 0.0), retry(4));
        assert_eq!(decide(&unasked, 0, 0, &SCHEDULE, 1.0), retry(6));
        let asked = asks(503, 60);
        assert_eq!(decide(&asked, 0, 0, &SCHEDULE, 1.0), retry(60));
    }

    #[test]
    fn every_failure_is_labelled_failed_and_a_retry_retry() {
        assert_eq!(Verdict::Sent.as_str(), "sent");
        assert_eq!(retry(1).as_str(), "retry");
        assert_eq!(Verdict::Gone.as_str(), "failed");
        assert_eq!(KEPT.as_str(), "failed");
        assert_eq!(DISABLED.as_str(), "failed");
    }

    #[test]
    fn retries_are_spread_by_a_fifth_either_way() {
        let delay = Duration::from_secs(100);
        assert_eq!(next_delay(delay, None, 0.0), Duration::from_secs(80));
        assert_eq!(next_delay(delay, None, 0.5), Duration::from_secs(100));
        assert_eq!(next_delay(delay, None, 1.0), Duration::from_secs(120));
        // Out-of-range draws stay within the spread.
        assert_eq!(next_delay(delay, None, 7.0), Duration::from_secs(120));
    }

    #[test]
    fn retry_after_is_a_floor_up_to_a_day() {
        let delay = Duration::from_secs(5);
        let asked = Some(Duration::from_secs(60));
        assert_eq!(next_delay(delay, asked, 1.0), Duration::from_secs(60));
        // A shorter ask does not make the schedule sooner.
        let short = Some(Duration::from_secs(1));
        assert_eq!(next_delay(delay, short, 0.5), delay);
        // An endpoint cannot park a delivery for longer than a day.
        let forever = Some(Duration::from_secs(365 * 24 * 3600));
        assert_eq!(next_delay(delay, forever, 0.5), MAX_RETRY_AFTER);
    }
}
