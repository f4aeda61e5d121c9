//! Compact timestamps: nanoseconds since a map was created, in a `u64`.
//!
//! Eight bytes instead of a 16-byte `Instant` keep map entries small; a `u64` of nanoseconds lasts
//! 584 years, and every value is capped at [`MAX_TICKS`] (about 146 years) so that sums of two
//! timestamps or durations never wrap. Built on `tokio::time::Instant` so tests run on the paused
//! clock.

use std::time::Duration;

use tokio::time::Instant;

/// The largest timestamp or duration kept, about 146 years: a configured window longer than that
/// behaves as 146 years.
pub(crate) const MAX_TICKS: u64 = 1 << 62;

/// The origin that a map's timestamps count from.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    origin: Instant,
}

impl Clock {
    pub(crate) fn starting_now() -> Self {
        Self {
            origin: Instant::now(),
        }
    }

    pub(crate) fn now(&self) -> u64 {
        ticks(Instant::now().saturating_duration_since(self.origin))
    }

    /// The timestamp of `instant` (the origin for an instant before it).
    pub(crate) fn ticks_at(&self, instant: Instant) -> u64 {
        ticks(instant.saturating_duration_since(self.origin))
    }

    pub(crate) fn instant(&self, at: u64) -> Instant {
        // Cannot fail: every supported platform represents its clock's origin plus 146 years.
        self.origin
            .checked_add(Duration::from_nanos(at.min(MAX_TICKS)))
            .unwrap_or(self.origin)
    }
}

/// A duration in ticks, capped at [`MAX_TICKS`].
pub(crate) fn ticks(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).map_or(MAX_TICKS, |nanos| nanos.min(MAX_TICKS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_exact_nanoseconds_up_to_the_cap() {
        assert_eq!(ticks(Duration::from_secs(20)), 20_000_000_000);
        assert_eq!(ticks(Duration::from_nanos(7)), 7);
        assert_eq!(ticks(Duration::MAX), MAX_TICKS);
    }

    #[tokio::test(start_paused = true)]
    async fn ticks_convert_back_to_the_same_instant() {
        let clock = Clock::starting_now();
        tokio::time::advance(Duration::from_millis(1500)).await;
        let now = clock.now();
        assert_eq!(now, 1_500_000_000);
        assert_eq!(clock.instant(now), Instant::now());
        assert_eq!(clock.ticks_at(Instant::now()), now);
    }

    #[tokio::test(start_paused = true)]
    async fn a_far_future_timestamp_is_representable() {
        let clock = Clock::starting_now();
        let far = clock.instant(MAX_TICKS.saturating_add(MAX_TICKS));
        assert!(far > Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600));
    }
}
