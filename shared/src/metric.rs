//! The names of the metrics the services export (Prometheus text at `/metrics`), in one place:
//! the emitters and the dashboard, which reads them back from the services' scrapes, use these
//! constants, so a rename cannot leave a reader behind. What each one means for an operator is
//! in `docs/observability.md`.

/// Events the gateway accepted (published and confirmed), by kind.
pub const EVENTS_ACCEPTED_TOTAL: &str = "pipeline_events_accepted_total";

/// Requests the gateway refused, by reason.
pub const EVENTS_REJECTED_TOTAL: &str = "pipeline_events_rejected_total";

/// Keyed requests answered from the idempotency record.
pub const EVENTS_REPLAYED_TOTAL: &str = "pipeline_events_replayed_total";

/// Product reads at the gateway, by source (cache or database).
pub const PRODUCT_READS_TOTAL: &str = "pipeline_product_reads_total";

/// How long the broker took to confirm a publish.
pub const PUBLISH_CONFIRM_DURATION_SECONDS: &str = "pipeline_publish_confirm_duration_seconds";

/// Events the processor finished, by outcome.
pub const EVENTS_PROCESSED_TOTAL: &str = "pipeline_events_processed_total";

/// Events the processor sent down the retry ladder.
pub const EVENTS_RETRIED_TOTAL: &str = "pipeline_events_retried_total";

/// Messages set aside as dead letters, by reason.
pub const EVENTS_DEAD_LETTERED_TOTAL: &str = "pipeline_events_dead_lettered_total";

/// Dead letters replayed to their source.
pub const DEAD_LETTERS_REPLAYED_TOTAL: &str = "pipeline_dead_letters_replayed_total";

/// From the gateway's acceptance to the processor's commit.
pub const END_TO_END_DURATION_SECONDS: &str = "pipeline_end_to_end_duration_seconds";

/// The time each of the processor's batches spent in a stage (decide, persist, publish,
/// settle), by stage.
pub const STAGE_DURATION_SECONDS: &str = "pipeline_processor_stage_duration_seconds";

/// Downstream events the processor published, by type.
pub const DOWNSTREAM_EVENTS_TOTAL: &str = "pipeline_downstream_events_total";

/// Messages waiting in each shard queue.
pub const CONSUMER_LAG_MESSAGES: &str = "pipeline_consumer_lag_messages";

/// The processor's retry ladder: each retry queue and its delay.
pub const RETRY_DELAY_SECONDS: &str = "pipeline_retry_delay_seconds";

/// Downstream events the notifier took in, by outcome.
pub const NOTIFIER_EVENTS_TOTAL: &str = "pipeline_notifier_events_total";

/// Webhook delivery attempts, by outcome.
pub const WEBHOOK_DELIVERIES_TOTAL: &str = "pipeline_webhook_deliveries_total";

/// How long a webhook delivery attempt took.
pub const WEBHOOK_DELIVERY_SECONDS: &str = "pipeline_webhook_delivery_seconds";

/// Shards this processor replica owns right now.
pub const SHARDS_OWNED: &str = "pipeline_shards_owned";

/// Changes of shard ownership at this replica, by change (claimed, released, lost).
pub const SHARD_HANDOVERS_TOTAL: &str = "pipeline_shard_handovers_total";

/// Whether each queue's consumer is running (1) or not (0).
pub const CONSUMER_UP: &str = "pipeline_consumer_up";

/// Consumers restarted, by what ended them.
pub const CONSUMER_RESTARTS_TOTAL: &str = "pipeline_consumer_restarts_total";

/// Deliveries held back (returned to their queue) while a dependency is down.
pub const HOLDS_TOTAL: &str = "pipeline_holds_total";

/// Requests refused for want of a valid key, scope or same-origin, by reason.
pub const AUTH_DENIED_TOTAL: &str = "pipeline_auth_denied_total";

/// Requests over their key's rate, by key name.
pub const RATE_LIMITED_TOTAL: &str = "pipeline_rate_limited_total";

/// Whether each dependency answers (1) or not (0).
pub const DEPENDENCY_UP: &str = "pipeline_dependency_up";

/// HTTP requests served, by route, method and status.
pub const HTTP_REQUESTS_TOTAL: &str = "pipeline_http_requests_total";

/// HTTP request latency, by route.
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "pipeline_http_request_duration_seconds";

/// Requests refused with 503 because too many were in flight.
pub const HTTP_SHED_TOTAL: &str = "pipeline_http_shed_total";

/// Requests that ran past the request timeout (408).
pub const HTTP_TIMEOUTS_TOTAL: &str = "pipeline_http_timeouts_total";

/// The `q` quantile (0..1) of cumulative histogram `buckets` (upper bound, count), interpolated
/// linearly within the bucket it falls in, as Prometheus's `histogram_quantile` does; `None`
/// without observations.
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut previous = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(previous.0);
            }
            let within = count - previous.1;
            let fraction = if within > 0.0 {
                (rank - previous.1) / within
            } else {
                1.0
            };
            return Some(previous.0 + (le - previous.0) * fraction);
        }
        previous = (le, count);
    }
    Some(previous.0)
}

/// Buckets observed between two scrapes of the same histogram.
pub fn difference(now: &[(f64, f64)], before: &[(f64, f64)]) -> Vec<(f64, f64)> {
    now.iter()
        .map(|&(le, count)| {
            let earlier = before
                .iter()
                .find(|(b, _)| b.to_bits() == le.to_bits())
                .map_or(0.0, |(_, c)| *c);
            (le, (count - earlier).max(0.0))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_the_bucket_of_what_was_observed_between_two_readings() {
        let before = [(0.01, 0.0), (0.1, 0.0), (f64::INFINITY, 0.0)];
        let after = [(0.01, 50.0), (0.1, 70.0), (f64::INFINITY, 100.0)];
        let window = difference(&after, &before);
        assert_eq!(quantile(&window, 0.5), Some(0.01));
        let p60 = quantile(&window, 0.6).expect("observations");
        assert!((p60 - 0.055).abs() < 1e-9, "{p60}");
        assert_eq!(quantile(&window, 0.99), Some(0.1), "beyond the last bound");
        assert_eq!(quantile(&difference(&after, &after), 0.5), None);
    }
}
