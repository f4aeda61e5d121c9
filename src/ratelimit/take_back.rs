//! Taking back, in Redis, a queued send that this instance was given but could not queue (its
//! queue was full): see `Ratelimiter::unqueue`.
//!
//! A take-back names the exact send time Redis recorded for it ([`Queued::stamp`]), so it can
//! never remove a send recorded later (another push queued once that time had come, or after
//! a Redis restart), and only decisions Redis took are taken back there, never one this
//! instance took alone while Redis was unreachable.
//!
//! The take-backs run in tasks of their own (one more round trip, which the push that could not
//! be queued does not wait for). They are tracked, so that shutdown lets them finish
//! ([`finish`]): one cut short would leave the token refused as "already queued" by every
//! instance sharing the Redis until the queued time, and no instance would send then.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

use tokio_util::task::TaskTracker;

use super::token_key::{new_token_map, TokenKey, TokenMap};

/// The take-backs running, in every limiter of the process (a reload may have replaced the
/// limiter that started one).
static RUNNING: LazyLock<TaskTracker> = LazyLock::new(TaskTracker::new);

/// The queue remembers this many sends before dropping those whose time has come.
const PRUNE_AT_LEAST: usize = 1024;

/// A send Redis queued for this instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Queued {
    /// When this instance sends it, in the limiter's ticks.
    pub(crate) at: u64,
    /// The send time Redis recorded, in microseconds of Redis's clock.
    pub(crate) stamp: u64,
}

/// The sends Redis queued for this instance, by token, until taken back or due: what a
/// take-back must find in Redis to undo. Entries whose time has come are dropped once the map
/// doubles, so it holds about twice the pushes queued at once (`limits.maxQueuedPushes`).
#[derive(Debug)]
pub(crate) struct QueuedInRedis {
    sends: TokenMap<Queued>,
    next_prune: AtomicUsize,
}

impl Default for QueuedInRedis {
    fn default() -> Self {
        Self {
            sends: new_token_map(),
            next_prune: AtomicUsize::new(PRUNE_AT_LEAST),
        }
    }
}

impl QueuedInRedis {
    /// Remembers the send Redis queued for `key`; `now` in the limiter's ticks.
    pub(crate) fn remember(&self, key: TokenKey, queued: Queued, now: u64) {
        self.sends.insert(key, queued);
        if self.sends.len() < self.next_prune.load(Ordering::Relaxed) {
            return;
        }
        self.sends.retain(|_, queued| queued.at > now);
        let left = self.sends.len();
        self.next_prune
            .store((2 * left).max(PRUNE_AT_LEAST), Ordering::Relaxed);
    }

    /// The send Redis queued for `key` at `at` (ticks), forgotten: `None` when Redis queued
    /// none there (the decision was this instance's own, or a later one replaced it).
    pub(crate) fn take(&self, key: &TokenKey, at: u64) -> Option<Queued> {
        self.sends
            .remove_if(key, |_, queued| queued.at == at)
            .map(|(_, queued)| queued)
    }

    /// Drops the sends whose time has come (the limiter's sweep).
    pub(crate) fn sweep(&self, now: u64) {
        self.sends.retain(|_, queued| queued.at > now);
    }
}

/// Runs `take_back` in a task of its own, tracked for [`finish`]; nothing outside a runtime.
pub(crate) fn spawn(take_back: impl Future<Output = bool> + Send + 'static) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        RUNNING.spawn_on(take_back, &runtime);
    }
}

/// Waits, at most `within`, until every take-back started so far has ended (each is bounded by
/// the Redis timeout); false when some were still running. Called once nothing can queue any
/// more, before the process exits.
pub async fn finish(within: Duration) -> bool {
    RUNNING.close();
    let finished = tokio::time::timeout(within, RUNNING.wait()).await.is_ok();
    if !finished {
        log::warn!(
            "{} take-backs of queued sends in Redis did not finish in time: those tokens are \
             refused as already queued until their queued time",
            RUNNING.len()
        );
    }
    finished
}
