//! The background sweep: registrations nobody pushed to for `store.expireAfter` are removed
//! (Conversations never unregisters by itself, so without it the store only grows).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{RegistrationStore, TOUCH_INTERVAL};

/// Sweeps `store` every `every` (first right away) until `stop` is cancelled, removing what no
/// push used for `expire_after`. A failed sweep is logged and tried again at the next turn.
pub fn spawn_sweeper(
    store: Arc<dyn RegistrationStore>,
    every: Duration,
    expire_after: Duration,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            // A push records its use at most once per `TOUCH_INTERVAL`, so the recorded last use
            // may be that much older than the real one: only older still is unused for
            // `expire_after`.
            let unused = expire_after.saturating_add(TOUCH_INTERVAL);
            let Some(before) = SystemTime::now().checked_sub(unused) else {
                continue;
            };
            match store.sweep(before).await {
                Ok(0) => {}
                Ok(removed) => {
                    log::info!("registration store: removed {removed} unused registrations")
                }
                Err(error) => log::warn!("registration store sweep failed: {error}"),
            }
        }
    })
}
