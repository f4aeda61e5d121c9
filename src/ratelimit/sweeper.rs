//! The background task that sweeps a per-token map on a fixed period until shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{interval_at, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// Sweeps run at least this often, however long entries are kept.
pub(crate) const MAX_PERIOD: Duration = Duration::from_secs(300);
/// Sweeps never run more often than this: sweeping a large map costs milliseconds.
pub(crate) const MIN_PERIOD: Duration = Duration::from_secs(1);

/// The sweep period for entries that become removable after `keep`: every `keep`, but at least
/// every [`MAX_PERIOD`] and at most every [`MIN_PERIOD`].
pub(crate) fn period_for(keep: Duration) -> Duration {
    keep.clamp(MIN_PERIOD, MAX_PERIOD)
}

/// Runs `sweep` on `target` every `period` (the first time one period from now) until `shutdown`
/// is cancelled or `target` is dropped.
///
/// The task holds only a weak reference, so a forgotten sweeper never keeps a map alive.
pub(crate) fn spawn<T>(
    target: &Arc<T>,
    period: Duration,
    shutdown: CancellationToken,
    sweep: fn(&T) -> usize,
    what: &'static str,
) -> JoinHandle<()>
where
    T: Send + Sync + 'static,
{
    let target = Arc::downgrade(target);
    tokio::spawn(async move {
        let mut ticks = interval_at(Instant::now() + period, period);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = ticks.tick() => {}
            }
            let Some(target) = target.upgrade() else {
                break;
            };
            let removed = sweep(&target);
            log::debug!("{what} sweep removed {removed} entries");
        }
    })
}

/// A sweeper for a map that is switched off: there is nothing to sweep, so the task ends at once.
pub(crate) fn none() -> JoinHandle<()> {
    tokio::spawn(async {})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_period_follows_the_keep_time_within_bounds() {
        assert_eq!(period_for(Duration::from_secs(60)), Duration::from_secs(60));
        assert_eq!(period_for(Duration::from_secs(3600)), MAX_PERIOD);
        assert_eq!(period_for(Duration::ZERO), MIN_PERIOD);
    }
}
