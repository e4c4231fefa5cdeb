//! The second stage of a consumer: work a handler leaves to finish after it returns (waiting
//! for publisher confirms, then settling), run in the order it was left, one at a time, while
//! the handler already takes the next deliveries.

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

/// How many batches may wait for their second stage before the first stage waits too.
pub const DEPTH: usize = 2;

/// Where a handler leaves the rest of a batch's work.
#[derive(Clone)]
pub struct Later {
    queue: mpsc::Sender<BoxFuture<'static, ()>>,
}

impl Later {
    /// A queue of second stages, and the future that runs them in order until every sender is
    /// gone and the queue is empty.
    pub fn new() -> (Self, impl Future<Output = ()>) {
        let (queue, mut waiting) = mpsc::channel::<BoxFuture<'static, ()>>(DEPTH);
        let runner = async move {
            while let Some(work) = waiting.recv().await {
                work.await;
            }
        };
        (Self { queue }, runner)
    }

    /// Runs `work` after everything left before it; waits while `DEPTH` are already waiting.
    /// Work left after the runner stopped is dropped: what it would have settled stays
    /// unacknowledged and returns to the queue when the channel closes.
    pub async fn then(&self, work: impl Future<Output = ()> + Send + 'static) {
        if self.queue.send(Box::pin(work)).await.is_err() {
            tracing::debug!(
                "The consumer's second stage has stopped; the work returns with the channel."
            );
        }
    }
}
