//! Whether Redis is answering, and what falling back to the local limiter has cost.
//!
//! When a call fails or times out, Redis counts as down: for the next `retry_after` every
//! decision is taken locally without asking it, so a dead Redis costs a push nothing. After that,
//! exactly one call tries Redis again (the others keep deciding locally while it waits); when it
//! succeeds, Redis is up again. Every decision taken locally is counted by cause (a decision
//! skipped while down counts under the cause of the failure that took Redis down), and the
//! warning about it, naming the cause, is logged at most once per minute, and the line saying
//! Redis answers again only after such a warning, so neither an outage nor a flapping Redis can
//! flood the log.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use super::super::clock::{ticks, Clock};
use crate::metrics::{FallbackCause, RedisFallbacks};

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
    /// Where fallbacks are counted by cause for the metrics.
    by_cause: RedisFallbacks,
    /// The index in [`FallbackCause::ALL`] of the last failure's cause.
    last_cause: AtomicUsize,
    last_warning: AtomicU64,
    /// A warning went out since Redis last came back: the next recovery is worth a line too.
    /// Without one (a Redis failing every other call), recoveries go to the debug level.
    warned: AtomicBool,
}

impl Health {
    pub(crate) fn new(retry_after: Duration, by_cause: RedisFallbacks) -> Self {
        Self {
            clock: Clock::starting_now(),
            retry_after: ticks(retry_after),
            down: AtomicBool::new(false),
            retry_at: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            by_cause,
            last_cause: AtomicUsize::new(FallbackCause::error.index()),
            last_warning: AtomicU64::new(NEVER),
            warned: AtomicBool::new(false),
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
            let cause = FallbackCause::ALL[self.last_cause.load(Ordering::Relaxed)];
            self.count(cause);
        }
        claimed
    }

    /// A decision taken locally without asking Redis, for a token whose earlier decision Redis
    /// missed: counted under the cause of the last failure.
    pub(crate) fn decided_locally(&self) {
        let cause = FallbackCause::ALL[self.last_cause.load(Ordering::Relaxed)];
        self.count(cause);
    }

    /// Whether Redis counts as down (until a retry finds it answering again).
    pub(crate) fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Redis answered.
    pub(crate) fn succeeded(&self) {
        if !self.down.swap(false, Ordering::AcqRel) {
            return;
        }
        let level = match self.warned.swap(false, Ordering::AcqRel) {
            true => log::Level::Info,
            false => log::Level::Debug,
        };
        log::log!(
            level,
            "Redis answers again: shared ratelimit resumed ({} decisions were taken locally)",
            self.fallbacks()
        );
    }

    /// Redis failed, refused or was too slow: this decision is taken locally, and so are the
    /// next ones until the retry time.
    pub(crate) fn failed(&self, cause: FallbackCause, why: &dyn std::fmt::Display) {
        let now = self.clock.now();
        self.last_cause.store(cause.index(), Ordering::Relaxed);
        self.retry_at
            .store(now.saturating_add(self.retry_after), Ordering::Release);
        self.down.store(true, Ordering::Release);
        let fallbacks = self.count(cause);
        if self.claim_warning(now) {
            self.warned.store(true, Ordering::Release);
            log::warn!(
                "Redis unavailable ({}: {why}): deciding ratelimits and dead tokens locally \
                 until it answers ({fallbacks} local decisions so far)",
                cause.name()
            );
        }
    }

    /// Decisions and writes taken locally because Redis failed, was too slow or was down.
    pub(crate) fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    /// Counts one local decision; returns the count so far.
    fn count(&self, cause: FallbackCause) -> u64 {
        self.by_cause.count(cause);
        self.fallbacks.fetch_add(1, Ordering::Relaxed) + 1
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
        let health = Health::new(Duration::from_secs(1), RedisFallbacks::detached());
        assert!(health.may_ask());
        health.failed(FallbackCause::unreachable, &"connection refused");
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
        let health = Health::new(Duration::from_secs(1), RedisFallbacks::detached());
        assert!(health.claim_warning(health.clock.now()));
        assert!(!health.claim_warning(health.clock.now()));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(!health.claim_warning(health.clock.now()));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(health.claim_warning(health.clock.now()));
    }

    /// The lines of at least info level this module logs on the current thread.
    fn loud_lines_of(run: impl FnOnce()) -> Vec<String> {
        crate::test_log::collect(module_path!().trim_end_matches("::tests"));
        run();
        crate::test_log::collected()
    }

    #[tokio::test(start_paused = true)]
    async fn a_flapping_redis_is_not_announced_back_more_than_it_is_announced_down() {
        let health = Health::new(Duration::from_secs(1), RedisFallbacks::detached());
        // A Redis near the timeout: every other call fails, for a minute.
        let lines = loud_lines_of(|| {
            for _ in 0..60 {
                health.failed(FallbackCause::timeout, &"no answer");
                health.succeeded();
            }
        });
        assert_eq!(lines.len(), 2, "{lines:#?}");
    }

    #[tokio::test(start_paused = true)]
    async fn decisions_skipped_while_down_count_under_the_failures_cause() {
        let counters = RedisFallbacks::detached();
        let health = Health::new(Duration::from_secs(1), counters.clone());
        health.failed(FallbackCause::crossslot, &"CROSSSLOT");
        assert!(!health.may_ask());
        assert!(!health.may_ask());
        assert_eq!(counters.get(FallbackCause::crossslot), 3);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(health.may_ask());
        health.failed(FallbackCause::timeout, &"no answer");
        assert!(!health.may_ask());
        assert_eq!(counters.get(FallbackCause::timeout), 2);
        assert_eq!(counters.total(), health.fallbacks());
    }
}
