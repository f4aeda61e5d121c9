//! How long to wait before the next connection attempt after a failed one.
//!
//! The first wait is exactly the configured base, so an operator who sets
//! `timeout.xmppconnectionError` sees it honoured; later waits double up to the cap with jitter,
//! so several fpush instances do not hammer a restarting server in lockstep. After a link that
//! was up dropped, a few quick tries come first: the server is most likely restarting, and some
//! servers drop push registrations while the component is away.

use std::hash::BuildHasher;
use std::time::Duration;

/// The quick tries after a dropped link, each used only while shorter than the base.
const QUICK_WAITS: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];

pub(crate) struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
    /// The next of [`QUICK_WAITS`], while they apply.
    quick: Option<usize>,
}

impl Backoff {
    pub(crate) fn new(base: Duration, cap: Duration) -> Self {
        Backoff {
            base,
            cap: cap.max(base),
            failures: 0,
            quick: None,
        }
    }

    /// Forgets past failures: called once a link has stayed up long enough to count as good.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }

    /// A link that was up dropped: the next waits are the quick ones, then the usual.
    pub(crate) fn try_quickly(&mut self) {
        self.quick = Some(0);
    }

    /// A stream is up: no quick tries are left over for its end, so links that keep dying at
    /// once meet the usual waits.
    pub(crate) fn connected(&mut self) {
        self.quick = None;
    }

    /// The wait after one more failure.
    pub(crate) fn next_delay(&mut self) -> Duration {
        if let Some(next) = self.quick {
            match QUICK_WAITS.get(next).filter(|wait| **wait < self.base) {
                Some(wait) => {
                    self.quick = Some(next + 1);
                    return *wait;
                }
                None => self.quick = None,
            }
        }
        self.failures = self.failures.saturating_add(1);
        if self.failures == 1 {
            return self.base;
        }
        let doublings = (self.failures - 1).min(16);
        let full = self.base.saturating_mul(1 << doublings).min(self.cap);
        // Somewhere in the upper quarter below the full delay, never under the base.
        let jittered = full.mul_f64(0.75 + 0.25 * unit_random());
        jittered.max(self.base)
    }
}

/// A number in [0, 1) that differs between calls. Jitter needs no more than this, so no random
/// number crate is pulled in: the standard library's hasher keys are random per process and
/// per `RandomState`.
fn unit_random() -> f64 {
    let bits = std::collections::hash_map::RandomState::new().hash_one(0u8);
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_wait_is_the_base_then_grows_to_the_cap() {
        let base = Duration::from_secs(20);
        let cap = Duration::from_secs(300);
        let mut backoff = Backoff::new(base, cap);
        assert_eq!(backoff.next_delay(), base);
        let second = backoff.next_delay();
        assert!(second >= Duration::from_secs(30) && second <= Duration::from_secs(40));
        let mut last = second;
        for _ in 0..10 {
            last = backoff.next_delay();
            assert!(last >= base && last <= cap, "{last:?}");
        }
        assert!(last >= cap.mul_f64(0.75), "{last:?}");
    }

    #[test]
    fn after_a_dropped_link_quick_tries_come_before_the_base() {
        let base = Duration::from_secs(20);
        let mut backoff = Backoff::new(base, Duration::from_secs(60));
        backoff.try_quickly();
        let quick: Vec<_> = (0..3).map(|_| backoff.next_delay().as_secs()).collect();
        assert_eq!(quick, [1, 2, 4]);
        assert_eq!(backoff.next_delay(), base);
        // Only the quick waits shorter than the base.
        let mut short = Backoff::new(Duration::from_secs(3), Duration::from_secs(60));
        short.try_quickly();
        let waits: Vec<_> = (0..3).map(|_| short.next_delay().as_secs()).collect();
        assert_eq!(waits, [1, 2, 3]);
    }

    #[test]
    fn a_stream_up_ends_the_quick_tries() {
        let base = Duration::from_secs(20);
        let mut backoff = Backoff::new(base, Duration::from_secs(60));
        backoff.try_quickly();
        backoff.connected();
        assert_eq!(backoff.next_delay(), base);
    }

    #[test]
    fn reset_starts_over_at_the_base() {
        let base = Duration::from_millis(100);
        let mut backoff = Backoff::new(base, Duration::from_secs(10));
        for _ in 0..5 {
            backoff.next_delay();
        }
        backoff.reset();
        assert_eq!(backoff.next_delay(), base);
    }

    #[test]
    fn a_cap_below_the_base_means_the_base() {
        let base = Duration::from_secs(5);
        let mut backoff = Backoff::new(base, Duration::from_secs(1));
        assert_eq!(backoff.next_delay(), base);
        assert_eq!(backoff.next_delay(), base);
    }

    #[test]
    fn jitter_varies() {
        let draws: Vec<f64> = (0..16).map(|_| unit_random()).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        assert!(draws.windows(2).any(|w| w[0] != w[1]));
    }
}
