//! The names of the metrics the services export (Prometheus text at `/metrics`), in one place:
//! the emitters and the dashboard, which reads them back from the services' scrapes, use these
//! constants, so a rename cannot leave a reader behind. What each one means for an operator is
//! in `docs/observability.md`.

/// What a metric is, for its `# TYPE` line.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in buckets.
    Histogram,
}

/// Declares each metric's name as a constant documented by its help text, and [`ALL`].
macro_rules! metrics {
    ($($(#[doc = $doc:literal])+ $kind:ident $name:ident = $value:literal;)*) => {
        $($(#[doc = $doc])+ pub const $name: &str = $value;)*

        /// Every metric: its name, kind and help text (its description above, on one line).
        pub const ALL: &[(&str, Kind, &str)] = &[$(($value, Kind::$kind, concat!($($doc),+))),*];
    };
}

/// Registers every metric's help text with the installed recorder: the `# HELP` lines at
/// `/metrics`.
pub fn describe() {
    for (name, kind, help) in ALL {
        let help = help.trim();
        match kind {
            Kind::Counter => metrics::describe_counter!(*name, help),
            Kind::Gauge => metrics::describe_gauge!(*name, help),
            Kind::Histogram => metrics::describe_histogram!(*name, help),
        }
    }
}

metrics! {
    /// Always 1, labelled with the service, its version and the revision it was built from.
    Gauge BUILD_INFO = "pipeline_build_info";

    /// Events the gateway accepted (published and confirmed), by kind.
    Counter EVENTS_ACCEPTED_TOTAL = "pipeline_events_accepted_total";

    /// Requests the gateway refused, by reason.
    Counter EVENTS_REJECTED_TOTAL = "pipeline_events_rejected_total";

    /// Keyed requests answered from the idempotency record.
    Counter EVENTS_REPLAYED_TOTAL = "pipeline_events_replayed_total";

    /// Product reads at the gateway, by source (cache or database).
    Counter PRODUCT_READS_TOTAL = "pipeline_product_reads_total";

    /// How long the broker took to confirm a publish.
    Histogram PUBLISH_CONFIRM_DURATION_SECONDS = "pipeline_publish_confirm_duration_seconds";

    /// Events the processor finished, by outcome.
    Counter EVENTS_PROCESSED_TOTAL = "pipeline_events_processed_total";

    /// Events the processor sent down the retry ladder.
    Counter EVENTS_RETRIED_TOTAL = "pipeline_events_retried_total";

    /// Messages set aside as dead letters, by reason.
    Counter EVENTS_DEAD_LETTERED_TOTAL = "pipeline_events_dead_lettered_total";

    /// Dead letters replayed to their source.
    Counter DEAD_LETTERS_REPLAYED_TOTAL = "pipeline_dead_letters_replayed_total";

    /// From the gateway's acceptance to the processor's commit.
    Histogram END_TO_END_DURATION_SECONDS = "pipeline_end_to_end_duration_seconds";

    /// The time each of the processor's batches spent in a stage (decide, persist, publish,
    /// settle), by stage.
    Histogram STAGE_DURATION_SECONDS = "pipeline_processor_stage_duration_seconds";

    /// Downstream events the processor published, by type.
    Counter DOWNSTREAM_EVENTS_TOTAL = "pipeline_downstream_events_total";

    /// Messages waiting in each shard queue.
    Gauge CONSUMER_LAG_MESSAGES = "pipeline_consumer_lag_messages";

    /// The processor's retry ladder: each retry queue and its delay.
    Gauge RETRY_DELAY_SECONDS = "pipeline_retry_delay_seconds";

    /// Downstream events the notifier took in, by outcome.
    Counter NOTIFIER_EVENTS_TOTAL = "pipeline_notifier_events_total";

    /// Webhook delivery attempts, by outcome.
    Counter WEBHOOK_DELIVERIES_TOTAL = "pipeline_webhook_deliveries_total";

    /// How long a webhook delivery attempt took.
    Histogram WEBHOOK_DELIVERY_DURATION_SECONDS = "pipeline_webhook_delivery_duration_seconds";

    /// Shards this processor replica owns right now.
    Gauge SHARDS_OWNED = "pipeline_shards_owned";

    /// Changes of shard ownership at this replica, by change (claimed, released, lost).
    Counter SHARD_HANDOVERS_TOTAL = "pipeline_shard_handovers_total";

    /// Whether each queue's consumer is running (1) or not (0).
    Gauge CONSUMER_UP = "pipeline_consumer_up";

    /// Consumers restarted, by what ended them.
    Counter CONSUMER_RESTARTS_TOTAL = "pipeline_consumer_restarts_total";

    /// Deliveries held back (returned to their queue) while a dependency is down.
    Counter HOLDS_TOTAL = "pipeline_holds_total";

    /// Requests refused for want of a valid key, scope or same-origin, by reason.
    Counter AUTH_DENIED_TOTAL = "pipeline_auth_denied_total";

    /// Requests over their key's rate, by key name.
    Counter RATE_LIMITED_TOTAL = "pipeline_rate_limited_total";

    /// Whether each dependency answers (1) or not (0).
    Gauge DEPENDENCY_UP = "pipeline_dependency_up";

    /// HTTP requests served, by route, method and status.
    Counter HTTP_REQUESTS_TOTAL = "pipeline_http_requests_total";

    /// HTTP request latency, by route.
    Histogram HTTP_REQUEST_DURATION_SECONDS = "pipeline_http_request_duration_seconds";

    /// Requests refused with 503 because too many were in flight.
    Counter HTTP_SHED_TOTAL = "pipeline_http_shed_total";

    /// Requests that ran past the request timeout (408).
    Counter HTTP_TIMEOUTS_TOTAL = "pipeline_http_timeouts_total";

    /// Images the gateway stored (or took a source URL of) and queued for the imager.
    Counter IMAGES_RECEIVED_TOTAL = "pipeline_images_received_total";

    /// Rows deleted because their retention window passed, by table.
    Counter PRUNED_ROWS_TOTAL = "pipeline_pruned_rows_total";

    /// Images the imager finished, by outcome (ready, invalid, attempts_exhausted).
    Counter IMAGES_PROCESSED_TOTAL = "pipeline_images_processed_total";

    /// How long the imager took over an image that became ready: fetch, decode, variants, store.
    Histogram IMAGE_PROCESSING_DURATION_SECONDS = "pipeline_image_processing_duration_seconds";
}

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

    #[test]
    fn every_metric_has_a_help_text_and_a_unique_name() {
        let mut names = std::collections::BTreeSet::new();
        for (name, _, help) in ALL {
            assert!(name.starts_with("pipeline_"), "{name}");
            assert!(help.trim().len() > 10, "{name} has no help text");
            assert!(names.insert(*name), "{name} twice");
        }
        assert_eq!(names.len(), 34);
    }
}
