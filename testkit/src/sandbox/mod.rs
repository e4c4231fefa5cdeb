//! A test's own namespace on the real backends: [`Sandbox`] names it, hands out the
//! [`Backends`] that reach it, and removes everything in it when dropped (its queues and
//! exchanges, its Redis keys, its PostgreSQL schema), whether the test passed or panicked.
//!
//! Also the shape of what a sandbox holds, which the removal relies on: [`SHARDS`] shard queues
//! unless told otherwise, and the retry rungs of [`RETRY_DELAYS`] and [`IMAGE_RETRY_DELAYS`]
//! (services started in a sandbox use these).

mod removal;

use std::time::Duration;

use shared::{config::Backends, topology::Namespace};

/// Shards used by tests: few, to keep the broker light, but more than one.
pub const SHARDS: u16 = 2;

/// The processor's retry ladder in tests, so exhausting it takes well under a second.
pub const RETRY_DELAYS: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(200),
    Duration::from_millis(300),
];

/// `RETRY_DELAYS_MS` for a processor started as a child process: [`RETRY_DELAYS`] (its own
/// default ladder would make queues a sandbox does not know of).
pub fn retry_delays_ms() -> String {
    RETRY_DELAYS
        .iter()
        .map(|d| d.as_millis().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The imager's retry rungs in tests (a 50 ms backoff, three attempts): exhausting them takes a
/// fraction of a second.
pub const IMAGE_RETRY_DELAYS: [Duration; 2] =
    [Duration::from_millis(50), Duration::from_millis(100)];

/// A fresh namespace name, unique to this call; nothing owns what is made in it (a
/// [`Sandbox`] does).
pub fn namespace() -> Namespace {
    format!("t{}", uuid::Uuid::now_v7().simple())
        .parse()
        .expect("t + 32 hex digits is a valid namespace")
}

/// The backends from the environment (defaults: the local services) in `namespace`, with
/// [`SHARDS`] shards.
pub(crate) fn backends_in(namespace: &Namespace) -> Backends {
    let mut backends = Backends::from_env().expect("test environment variables are valid");
    backends.namespace = namespace.clone();
    backends.ingest_shards = SHARDS;
    backends
}

/// A fresh namespace on the environment's backends, owned by the test: dropping it removes the
/// namespace's queues (one at a time: see [`Sandbox::remove`]), exchanges, Redis keys and
/// PostgreSQL schema, on a thread of its own, so a test that panics (even inside a runtime's
/// worker thread) leaves nothing behind either. Declare it before the services it feeds, so
/// they are dropped (and told to stop) first.
pub struct Sandbox {
    /// The environment's backends in the namespace: what the removal reaches, whatever a test
    /// points its services at.
    backends: Backends,
    /// Whether the schema stays ([`Self::keep_schema`]).
    keep_schema: bool,
    /// Whether dropping it still has to remove the namespace.
    armed: bool,
}

impl Sandbox {
    /// A fresh namespace with [`SHARDS`] shards.
    #[allow(clippy::new_without_default)] // Each call makes a namespace: not a default value.
    pub fn new() -> Self {
        Self::with_shards(SHARDS)
    }

    /// A fresh namespace with `shards` shards.
    pub fn with_shards(shards: u16) -> Self {
        let mut backends = backends_in(&namespace());
        backends.ingest_shards = shards;
        Self {
            backends,
            keep_schema: false,
            armed: true,
        }
    }

    /// The environment's backends in this namespace: a copy for a service or a client, which a
    /// test may point elsewhere (a proxy, a closed port) without changing what is removed.
    pub fn backends(&self) -> Backends {
        self.backends.clone()
    }

    /// Leaves the PostgreSQL schema in place when the namespace is removed (for a look after
    /// a failed run); the queues, exchanges and Redis keys still go.
    pub fn keep_schema(&mut self) {
        self.keep_schema = true;
    }

    /// Removes the namespace now, saying what failed instead of panicking. Queues are deleted
    /// one after another, each awaited, and never two sandboxes' at once in this process: on
    /// RabbitMQ 3.10, quorum queues that dead-letter at least once, deleted together, can
    /// crash the broker's dead-letter supervisor, after which it refuses such queues.
    pub async fn remove(mut self) -> anyhow::Result<()> {
        let removed = removal::remove(&self.backends, self.keep_schema).await;
        // Done (or failed for good): dropping it must not try again.
        self.armed = false;
        removed
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Drop cannot await, and blocking on a future inside a runtime panics: the removal runs
        // on a thread of its own, on a runtime of its own, and is waited for. The caller's
        // runtime is not needed meanwhile, so waiting never deadlocks, even on a
        // current-thread runtime or a worker thread.
        let outcome = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?
                        .block_on(removal::remove(&self.backends, self.keep_schema))
                })
                .join()
        });
        let failure = match outcome {
            Ok(Ok(())) => return,
            Ok(Err(e)) => format!("{e:#}"),
            Err(_) => "the removal panicked".to_owned(),
        };
        let message = format!(
            "namespace {} was not fully removed: {failure}",
            self.backends.namespace.as_str()
        );
        // A second panic while unwinding would abort the test run and hide the first one.
        if std::thread::panicking() {
            eprintln!("{message}");
        } else {
            panic!("{message}");
        }
    }
}
