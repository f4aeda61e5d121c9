//! Whether Redis is answering, and what falling back to the local limiter has cost.
//!
//! When a call fails or times out, Redis counts as down: for the next `retry_after` every
//! decision is taken locally without asking it, so a dead Redis costs a push nothing. After that,
//! exactly one call tries Redis again (the others keep deciding locally while it waits); when it
//! succeeds, Redis is up again. Every decision taken locally is counted, and the warning about it
//! is logged at most once per minute, so a Redis outage cannot flood the log.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::super::clock::{ticks, Clock};

/// The least time between two warnings about decisions taken without Redis.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// `last_warning` before the first warning.
const NEVER: u64 = u64::MAX;

#[derive(Debug)]
pub(crate) struct Health {
    clock: Clock,
    retry_after: u64,
    down: AtomicBool,
    /// While down: the earliest time one call may try Redis again.
    retry_at: AtomicU64,
    fallbacks: AtomicU64,
    last_warning: AtomicU64,
}

impl Health {
    pub(crate) fn new(retry_after: Duration) -> Self {
        Self {
            clock: Clock::starting_now(),
            retry_after: ticks(retry_after),
            down: AtomicBool::new(false),
            retry_at: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            last_warning: AtomicU64::new(NEVER),
        }
    }

    /// Whether this call should ask Redis. While Redis is down, only the one call that claims
    /// the retry slot does; a `false` counts as a fallback.
    pub(crate) fn may_ask(&self) -> bool {
        if !self.down.load(Ordering::Acquire) {
            return true;
        }
        let now = self.clock.now();
        let retry_at = self.retry_at.load(Ordering::Acquire);
        let claimed = now >= retry_at
            && self
                .retry_at
                .compare_exchange(
                    retry_at,
                    now.saturating_add(self.retry_after),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok();
        if !claimed {
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
        }
        claimed
    }

    /// Redis answered.
    pub(crate) fn succeeded(&self) {
        if self.down.swap(false, Ordering::AcqRel) {
            log::info!(
                "Redis answers again: shared ratelimit resumed ({} decisions were taken locally)",
                self.fallbacks()
            );
        }
    }

    /// Redis failed or was too slow: this decision is taken locally, and so are the next ones
    /// until the retry time.
    pub(crate) fn failed(&self, why: &dyn std::fmt::Display) {
        let now = self.clock.now();
        self.retry_at
            .store(now.saturating_add(self.retry_after), Ordering::Release);
        self.down.store(true, Ordering::Release);
        let fallbacks = self.fallbacks.fetch_add(1, Ordering::Relaxed) + 1;
        if self.claim_warning(now) {
            log::warn!(
                "Redis unavailable ({why}): deciding ratelimits and dead tokens locally until it \
                 answers ({fallbacks} local decisions so far)"
            );
        }
    }

    /// Decisions and writes taken locally because Redis failed, was too slow or was down.
    pub(crate) fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    /// Whether a warning may be logged now (at most one per [`WARN_EVERY`]).
    fn claim_warning(&self, now: u64) -> bool {
        let last = self.last_warning.load(Ordering::Acquire);
        let due = last == NEVER || now.saturating_sub(last) >= ticks(WARN_EVERY);
        due && self
            .last_warning
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn while_down_only_one_call_per_retry_period_asks_redis() {
        let health = Health::new(Duration::from_secs(1));
        assert!(health.may_ask());
        health.failed(&"connection refused");
        assert_eq!(health.fallbacks(), 1);

        assert!(!health.may_ask());
        assert_eq!(health.fallbacks(), 2);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(health.may_ask(), "the retry slot opens after retry_after");
        assert!(!health.may_ask(), "and only one call gets it");
        assert_eq!(health.fallbacks(), 3);

        health.succeeded();
        assert!(health.may_ask());
        assert!(health.may_ask());
        assert_eq!(health.fallbacks(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_warning_is_logged_at_most_once_a_minute() {
        let health = Health::new(Duration::from_secs(1));
        assert!(health.claim_warning(health.clock.now()));
        assert!(!health.claim_warning(health.clock.now()));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(!health.claim_warning(health.clock.now()));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(health.claim_warning(health.clock.now()));
    }
}
