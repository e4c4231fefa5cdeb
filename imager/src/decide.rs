//! What to do after an attempt at an image job failed, without I/O: hold it in place while a
//! dependency is down (no attempt counted), wait on a retry rung off the queue's head, or give
//! up and dead-letter it. Unit-tested as a table.

use std::time::Duration;

use shared::dead_letter::Reason;

/// Why an attempt did not make the variants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Never will (undecodable, too large, a private source, the upload gone): fail at once.
    Invalid(String),
    /// A dependency is down (object store, PostgreSQL, Redis): hold, count nothing.
    Outage(String),
    /// Might work next time (a source that does not answer, answers an error, or the job ran
    /// out of time): count the attempt.
    Failed(String),
}

/// What follows a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Try again in place after the outage wait; the job keeps its slot.
    Hold,
    /// Acknowledge the job after parking it on the retry rung that waits this long.
    Retry(Duration),
    /// Mark the image failed and dead-letter the job.
    GiveUp {
        /// The dead letter's reason.
        reason: Reason,
        /// Why, for the image record and the dead letter.
        why: String,
    },
}

/// The retry rungs: the wait after attempt `n` (1-based) is `backoff` doubled `n - 1` times, for
/// every attempt but the last.
pub fn rungs(backoff: Duration, max_attempts: i32) -> Vec<Duration> {
    (1..max_attempts).map(|n| wait_after(backoff, n)).collect()
}

fn wait_after(backoff: Duration, attempt: i32) -> Duration {
    backoff * 2u32.saturating_pow(u32::try_from(attempt - 1).unwrap_or(0))
}

/// What to do after `failure`; `attempts` is how many attempts have failed so far, this one
/// included (counted only for [`Failure::Failed`]).
pub fn next_step(failure: &Failure, attempts: i32, max_attempts: i32, backoff: Duration) -> Step {
    match failure {
        Failure::Outage(_) => Step::Hold,
        Failure::Invalid(why) => Step::GiveUp {
            reason: Reason::Invalid,
            why: why.clone(),
        },
        Failure::Failed(why) if attempts >= max_attempts => Step::GiveUp {
            reason: Reason::AttemptsExhausted,
            why: format!("{attempts} attempts failed; the last: {why}"),
        },
        Failure::Failed(_) => Step::Retry(wait_after(backoff, attempts.max(1))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn each_failure_leads_where_it_should() {
        let failed = Failure::Failed("source_url answered 503 Service Unavailable".into());
        let table = [
            (Failure::Outage("object store".into()), 0, Step::Hold),
            (
                Failure::Invalid("undecodable".into()),
                0,
                Step::GiveUp {
                    reason: Reason::Invalid,
                    why: "undecodable".into(),
                },
            ),
            (failed.clone(), 1, Step::Retry(SECOND)),
            (failed.clone(), 2, Step::Retry(2 * SECOND)),
            (
                failed,
                3,
                Step::GiveUp {
                    reason: Reason::AttemptsExhausted,
                    why: "3 attempts failed; the last: source_url answered 503 Service Unavailable"
                        .into(),
                },
            ),
        ];
        for (failure, attempts, expected) in table {
            assert_eq!(
                next_step(&failure, attempts, 3, SECOND),
                expected,
                "{failure:?} after {attempts}"
            );
        }
    }

    #[test]
    fn every_retry_has_its_rung() {
        assert_eq!(rungs(SECOND, 3), vec![SECOND, 2 * SECOND]);
        assert_eq!(rungs(SECOND, 1), Vec::<Duration>::new());
        for attempts in 1..5 {
            if let Step::Retry(wait) = next_step(&Failure::Failed("x".into()), attempts, 5, SECOND)
            {
                assert!(rungs(SECOND, 5).contains(&wait), "{attempts}: {wait:?}");
            }
        }
    }
}
