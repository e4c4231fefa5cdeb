//! Shard ownership among processor replicas. Each replica's [`Coordinator`] beats four times
//! per lease time: it records itself as alive and renews its leases in PostgreSQL ([`leases`]), works
//! out its share of the shards ([`share`]: with N shards and R live replicas, ⌊N/R⌋ or ⌈N/R⌉),
//! gives up what is over its share (stops consuming the shard, waits for what it holds to be
//! settled or returned, then releases the lease), and claims free or expired shards up to its
//! share, each claim starting a new epoch. A replica that dies stops renewing: its leases end
//! after the lease time and the others take its shards. A replica cut off by the network does
//! the same of its own accord: one that has not heard the broker for a quarter of a lease (a
//! reconnect after a dropped connection takes less; a connection that fell silent is known lost
//! only after two heartbeats, longer than that) stops consuming at once, releases its leases
//! and leaves, so the replicas that can consume take its shards at their next beat, within the
//! lease time of the cut; one that cannot renew (the database unreachable) keeps consuming for
//! twice the lease time, then stops, so its consumers no longer hold the queues the replica
//! that claimed them must be given. A slow database is not a lost one: a beat may take up to
//! that long (a beat slower than the lease still renews, and a lone replica keeps working
//! behind it); once the replica consumes nothing, a beat may take twice the lease, so it
//! consumes again behind a database slower than a quarter of the lease.
//!
//! Each shard's consumer applies its batches fenced by its lease: the apply transaction first
//! checks, under a share lock, that the shard's epoch is still the one it was claimed in, so a
//! replica that lost a shard (paused, cut off) cannot commit a late batch; the batch is
//! refused, returned to the queue, and that consumer stops. The queues keep single active
//! consumer, so the broker too hands a shard to one consumer at a time.

pub mod leases;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use shared::connect::postgres::Database;
use sqlx::PgConnection;
use tokio::{task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;

pub use leases::Lease;

/// What a shard's batches are fenced by: the replica's name and the lease it claimed.
#[derive(Clone, Debug)]
pub struct Fence {
    /// This replica's name among the others.
    pub member: Arc<str>,
    /// The shard and the epoch it was claimed in.
    pub lease: Lease,
}

impl Fence {
    /// Inside an apply transaction: true while the lease holds, and then no claim or release of
    /// the shard can commit until the transaction ends ([`leases::fence`]).
    pub async fn holds(&self, tx: &mut PgConnection) -> Result<bool, sqlx::Error> {
        leases::fence(tx, &self.member, self.lease).await
    }
}

/// How many of `shards` the replica at `index` among `members` live replicas should own: the
/// first `shards mod members` get one more.
pub fn share(shards: u16, members: usize, index: usize) -> usize {
    let shards = usize::from(shards);
    let members = members.max(1);
    shards / members + usize::from(index < shards % members)
}

/// The shards this replica owns right now and when it last beat, for `/ready` and the metrics.
#[derive(Clone, Debug, Default)]
pub struct Owned(Arc<Mutex<Held>>);

#[derive(Debug, Default)]
struct Held {
    shards: Vec<u16>,
    beat: Option<Instant>,
}

impl Owned {
    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// After a beat (`beat` true if it succeeded): what is consumed now.
    fn set(&self, shards: impl Iterator<Item = Lease>, beat: bool) {
        let mut held = self.held();
        held.shards = shards.map(|l| l.shard).collect();
        if beat {
            held.beat = Some(Instant::now());
        }
        metrics::gauge!(shared::metric::SHARDS_OWNED).set(held.shards.len() as f64);
    }

    /// The shards owned, in order.
    pub fn shards(&self) -> Vec<u16> {
        self.held().shards.clone()
    }

    /// True when the last successful beat is more recent than `within`: the replica takes part
    /// in sharing the shards (not before its first beat).
    pub fn current(&self, within: Duration) -> bool {
        self.held().beat.is_some_and(|at| at.elapsed() < within)
    }
}

/// Starts consuming a shard, fenced, until the token is cancelled.
pub type Start = Arc<dyn Fn(Fence, CancellationToken) -> JoinHandle<()> + Send + Sync>;

/// A shard being consumed.
struct Running {
    lease: Lease,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Why a beat did not renew the leases.
#[derive(Debug, thiserror::Error)]
enum Missed {
    #[error("RabbitMQ unreachable: stepped aside so that other replicas take the shards")]
    Broker,
    #[error("no answer from PostgreSQL for twice the lease time")]
    TimedOut,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// One replica's part in sharing the shards.
pub struct Coordinator {
    /// This replica's name among the others.
    pub member: Arc<str>,
    /// Where the leases are.
    pub database: Database,
    /// The namespace's shard count.
    pub shards: u16,
    /// How long a lease lasts unless renewed (`SHARD_LEASE_SECS`).
    pub lease: Duration,
    /// Starts a shard's consumer.
    pub start: Start,
    /// What this replica owns, as others see it here.
    pub owned: Owned,
    /// Since when the broker has not been heard (`None` while connected).
    pub broker_unheard: Arc<dyn Fn() -> Option<Instant> + Send + Sync>,
}

impl Coordinator {
    /// Beats until `shutdown`, then stops every consumer, releases the leases and leaves.
    pub async fn run(self, shutdown: CancellationToken) {
        // Nothing to claim before the lease table exists (and nothing to warn about).
        tokio::select! {
            () = self.database.migrated() => {}
            () = shutdown.cancelled() => return,
        }
        let mut running: BTreeMap<u16, Running> = BTreeMap::new();
        let mut prepared = false;
        let mut beats = tokio::time::interval(self.lease / 4);
        beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut renewed = Instant::now();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = beats.tick() => {}
                // Not a beat later: the shards are the other replicas' as soon as it steps aside.
                () = self.cut_off(), if !running.is_empty() => {}
            }
            let beat = if self.is_cut_off() {
                self.step_aside(&mut running).await;
                Err(Missed::Broker)
            } else {
                tokio::time::timeout(
                    self.beat_allowance(renewed, running.is_empty()),
                    self.beat(&mut running, &mut prepared, &shutdown),
                )
                .await
                .unwrap_or(Err(Missed::TimedOut))
            };
            match &beat {
                Ok(()) => renewed = Instant::now(),
                // Said once, when it steps aside.
                Err(Missed::Broker) => {}
                Err(error) => {
                    tracing::warn!(error = %error, "Shard leases not renewed; consuming what is held and trying again.");
                }
            }
            if renewed.elapsed() >= self.lease * 2 && !running.is_empty() {
                tracing::warn!(
                    "Shard leases not renewed for twice their time; stopped consuming so the replica that claimed them is served."
                );
                let held: Vec<Lease> = running.values().map(|r| r.lease).collect();
                stop(&mut running, &held).await;
            }
            self.owned
                .set(running.values().map(|r| r.lease), beat.is_ok());
        }
        let leaving: Vec<Lease> = running.values().map(|r| r.lease).collect();
        stop(&mut running, &leaving).await;
        self.owned.set(std::iter::empty(), false);
        if let Ok(pool) = self.database.ready() {
            for lease in leaving {
                let _ = leases::release(pool, &self.member, lease).await;
            }
            let _ = leases::leave(pool, &self.member).await;
        }
    }

    /// How long a beat may take when the leases were last renewed at `renewed`: while it
    /// consumes, what is left of twice the lease since then (at least a quarter of a lease), so
    /// that its consumers stop on time when the database does not answer; with nothing
    /// consumed, twice the lease, so that a database slower than the lease still sees the beat
    /// through and the replica consumes again (cut short every time, the beat would never renew).
    fn beat_allowance(&self, renewed: Instant, idle: bool) -> Duration {
        if idle {
            self.lease * 2
        } else {
            (self.lease * 2)
                .saturating_sub(renewed.elapsed())
                .max(self.lease / 4)
        }
    }

    /// True once the broker has not been heard for a quarter of a lease.
    fn is_cut_off(&self) -> bool {
        (self.broker_unheard)().is_some_and(|since| since.elapsed() >= self.lease / 4)
    }

    /// Completes once the replica [is cut off](Self::is_cut_off) (looked at ten times a second).
    async fn cut_off(&self) {
        let mut look = tokio::time::interval(Duration::from_millis(100));
        while !self.is_cut_off() {
            look.tick().await;
        }
    }

    /// Cut off from the broker: stops consuming, releases what it holds and leaves (each
    /// within a beat, as far as the database answers), so that the replicas that can consume
    /// share the shards at their next beat without waiting for its leases to end.
    async fn step_aside(&self, running: &mut BTreeMap<u16, Running>) {
        let held: Vec<Lease> = running.values().map(|r| r.lease).collect();
        if !held.is_empty() {
            tracing::warn!(error = %Missed::Broker, "Shard leases given up.");
            stop(running, &held).await;
        }
        let Ok(pool) = self.database.ready() else {
            return;
        };
        let release = async {
            for lease in held {
                leases::release(pool, &self.member, lease).await?;
                handed(lease, "released");
            }
            leases::leave(pool, &self.member).await
        };
        if let Ok(Err(error)) = tokio::time::timeout(self.lease / 4, release).await {
            tracing::warn!(error = %error, "Shard leases not released; they end with their time.");
        }
    }

    /// One beat: renew, drop what was lost, give up what is over the share, claim up to it.
    async fn beat(
        &self,
        running: &mut BTreeMap<u16, Running>,
        prepared: &mut bool,
        shutdown: &CancellationToken,
    ) -> Result<(), Missed> {
        let pool = self.database.ready()?;
        if !*prepared {
            leases::prepare(pool, self.shards).await?;
            *prepared = true;
        }
        let beat = leases::beat(pool, &self.member, self.lease).await?;
        let lost: Vec<Lease> = running
            .values()
            .filter(|r| r.task.is_finished() || !beat.held.contains(&r.lease))
            .map(|r| r.lease)
            .collect();
        stop(running, &lost).await;
        lost.iter().for_each(|lease| handed(*lease, "lost"));
        for lease in &beat.held {
            if !running.contains_key(&lease.shard) {
                self.begin(running, *lease, shutdown);
            }
        }
        let index = beat
            .members
            .iter()
            .position(|m| **m == *self.member)
            .unwrap_or(0);
        let share = share(self.shards, beat.members.len(), index);
        if running.len() > share {
            let over: Vec<Lease> = running
                .values()
                .rev()
                .take(running.len() - share)
                .map(|r| r.lease)
                .collect();
            stop(running, &over).await;
            for lease in over {
                leases::release(pool, &self.member, lease).await?;
                handed(lease, "released");
            }
        } else if running.len() < share {
            let claimed = leases::claim(
                pool,
                &self.member,
                share - running.len(),
                self.shards,
                self.lease,
            )
            .await?;
            for lease in claimed {
                handed(lease, "claimed");
                self.begin(running, lease, shutdown);
            }
        }
        Ok(())
    }

    fn begin(
        &self,
        running: &mut BTreeMap<u16, Running>,
        lease: Lease,
        shutdown: &CancellationToken,
    ) {
        let stop = shutdown.child_token();
        let fence = Fence {
            member: Arc::clone(&self.member),
            lease,
        };
        let task = (self.start)(fence, stop.clone());
        running.insert(lease.shard, Running { lease, stop, task });
    }
}

/// Logs and counts (`pipeline_shard_handovers_total{change}`) a change of ownership:
/// `claimed`, `released` (to another replica), or `lost` (another replica claimed it).
fn handed(lease: Lease, change: &'static str) {
    if change == "lost" {
        tracing::warn!(
            shard = lease.shard,
            epoch = lease.epoch,
            "Shard lost to another replica; stopped consuming it."
        );
    } else {
        tracing::info!(
            shard = lease.shard,
            epoch = lease.epoch,
            change,
            "Shard ownership changed."
        );
    }
    metrics::counter!(shared::metric::SHARD_HANDOVERS_TOTAL, "change" => change).increment(1);
}

/// Stops consuming `leases`' shards and waits until what their consumers held is settled or
/// back in the queue.
async fn stop(running: &mut BTreeMap<u16, Running>, leases: &[Lease]) {
    let stopping: Vec<Running> = leases
        .iter()
        .filter_map(|l| running.remove(&l.shard))
        .collect();
    for r in &stopping {
        r.stop.cancel();
    }
    for r in stopping {
        let _ = r.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::share;

    #[test]
    fn shares_differ_by_at_most_one_and_cover_every_shard() {
        for shards in [1u16, 4, 12, 16, 32] {
            for members in 1..=7usize {
                let all: Vec<usize> = (0..members).map(|i| share(shards, members, i)).collect();
                assert_eq!(
                    all.iter().sum::<usize>(),
                    usize::from(shards),
                    "{shards}/{members}"
                );
                let fewest = usize::from(shards) / members;
                assert!(
                    all.iter().all(|n| *n == fewest || *n == fewest + 1),
                    "{shards}/{members}: {all:?}"
                );
            }
        }
    }
}
