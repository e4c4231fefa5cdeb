//! The stages a shard's batch goes through, timed: `decide` (the plan, no I/O), `persist` (the
//! transaction around it), `publish` (the downstream events sent and confirmed) and `settle`
//! (the acknowledgements). Each batch's time per stage goes to
//! `pipeline_processor_stage_duration_seconds{stage}`; its `_sum` over the events processed is a
//! stage's cost per event.

use std::time::Duration;

/// A stage of a shard's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Deciding the plan from the batch and the current rows.
    Decide,
    /// The transaction that reads the rows and writes the plan, less the deciding.
    Persist,
    /// Sending the downstream events and waiting for their confirms, and forgetting them.
    Publish,
    /// Acknowledging (or returning) the batch's deliveries.
    Settle,
}

impl Stage {
    /// Label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Decide => "decide",
            Self::Persist => "persist",
            Self::Publish => "publish",
            Self::Settle => "settle",
        }
    }
}

/// Records how long one batch spent in `stage`.
pub fn record(stage: Stage, took: Duration) {
    metrics::histogram!(shared::metric::STAGE_DURATION_SECONDS, "stage" => stage.as_str())
        .record(took.as_secs_f64());
}
