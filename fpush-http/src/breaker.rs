//! [`Breaker`]: the module-wide pause a provider asks for.
//!
//! It trips on a 503 with `Retry-After`, on 429s for at least
//! [`BreakerConfig::distinct_requests`] distinct targets (device tokens: see [`ThrottleKey`]) within
//! [`BreakerConfig::window`], the shape of a project-wide quota, or when the platform read an
//! answer as module-wide (FCM's project quota, through `HttpClient::pause`). While it is open every request
//! is answered at once, without calling the provider, so the module replies
//! `wait`/`resource-constraint` until the retry time passes. A 429 for one token alone is that
//! token's business (the core holds that token) and does not trip it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::LOUD_LOG_INTERVAL;

/// What a request is about, for counting the targets answered 429: by default its path and
/// query (an APNS device token, a Web Push subscription, WNS's in the query); a platform whose
/// path names no target (FCM sends every message to one path) puts this in the request's
/// extensions. Never the body: one target pushed with ever other bodies must not count as many.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ThrottleKey(pub u64);

impl ThrottleKey {
    /// The key of a target named by `text` (e.g. a device token).
    pub fn of(text: &str) -> Self {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        text.hash(&mut hasher);
        ThrottleKey(hasher.finish())
    }
}

/// When the module-wide pause trips.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// This many distinct targets answered 429 within `window` trip the breaker.
    pub distinct_requests: usize,
    pub window: Duration,
    /// The pause when the 429s that tripped it named no `Retry-After`.
    pub default_pause: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            distinct_requests: 20,
            window: Duration::from_secs(10),
            default_pause: Duration::from_secs(60),
        }
    }
}

/// One client's breaker.
pub(crate) struct Breaker {
    config: BreakerConfig,
    origin: String,
    epoch: Instant,
    /// Milliseconds since `epoch` until which the breaker is open; 0 when it never tripped.
    open_until: AtomicU64,
    trips: AtomicU64,
    throttled: Mutex<Throttled>,
}

#[derive(Default)]
struct Throttled {
    since: Option<Instant>,
    requests: HashSet<ThrottleKey>,
    last_line: Option<Instant>,
}

impl Breaker {
    pub(crate) fn new(config: BreakerConfig, origin: String) -> Self {
        Self {
            config,
            origin,
            epoch: Instant::now(),
            open_until: AtomicU64::new(0),
            trips: AtomicU64::new(0),
            throttled: Mutex::default(),
        }
    }

    fn millis(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// How long the breaker stays open, or `None` when requests may go out.
    pub(crate) fn remaining(&self) -> Option<Duration> {
        let until = self.open_until.load(Ordering::Relaxed);
        if until == 0 {
            return None;
        }
        let now = self.millis();
        (until > now).then(|| Duration::from_millis(until - now))
    }

    /// Learns from one answer about the target `request`.
    pub(crate) fn observe(&self, status: u16, retry_after: Option<Duration>, request: ThrottleKey) {
        match (status, retry_after) {
            (503, Some(pause)) => self.trip(pause, "503 with Retry-After"),
            (429, _) if self.count_throttled(request) => {
                let pause = retry_after.unwrap_or(self.config.default_pause);
                self.trip(pause, "429 for many tokens at once");
            }
            _ => {}
        }
    }

    /// Counts a 429; true when distinct ones within the window reach the threshold.
    fn count_throttled(&self, request: ThrottleKey) -> bool {
        let Ok(mut throttled) = self.throttled.lock() else {
            return false;
        };
        let now = Instant::now();
        if throttled
            .since
            .is_none_or(|since| now - since > self.config.window)
        {
            throttled.since = Some(now);
            throttled.requests.clear();
        }
        throttled.requests.insert(request);
        if throttled.requests.len() >= self.config.distinct_requests.max(1) {
            throttled.since = None;
            throttled.requests.clear();
            return true;
        }
        false
    }

    /// Opens the breaker for `pause` (the provider's `Retry-After`) or, without one, the default
    /// pause; returns the pause applied. For answers only the platform can read (FCM's
    /// project-wide quota).
    pub(crate) fn pause(&self, pause: Option<Duration>, cause: &str) -> Duration {
        let pause = pause
            .unwrap_or(self.config.default_pause)
            .min(crate::MAX_RETRY_AFTER);
        self.trip(pause, cause);
        pause
    }

    fn trip(&self, pause: Duration, cause: &str) {
        // A platform's own pause may not come through `retry_after`: bounded here too.
        let pause = pause.min(crate::MAX_RETRY_AFTER);
        let now_ms = self.millis();
        let until = now_ms.saturating_add(pause.as_millis() as u64);
        let before = self.open_until.fetch_max(until, Ordering::Relaxed);
        // A pause is counted when it begins: the answers of the requests in flight then, and
        // later asks while it lasts, only extend it.
        if before <= now_ms && until > now_ms {
            self.trips.fetch_add(1, Ordering::Relaxed);
        }
        let Ok(mut throttled) = self.throttled.lock() else {
            return;
        };
        let now = Instant::now();
        let quiet = throttled
            .last_line
            .is_some_and(|last| now - last < LOUD_LOG_INTERVAL);
        if quiet || before >= until {
            log::debug!("{}: provider pause extended ({cause})", self.origin);
            return;
        }
        throttled.last_line = Some(now);
        log::warn!(
            "{}: the provider asks us to pause ({cause}); answering wait for {}s without calling it",
            self.origin,
            pause.as_secs()
        );
    }

    /// How often the breaker opened while it was closed (the metric hook).
    pub(crate) fn trips(&self) -> u64 {
        self.trips.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(distinct: usize) -> Breaker {
        let config = BreakerConfig {
            distinct_requests: distinct,
            window: Duration::from_secs(10),
            default_pause: Duration::from_secs(60),
        };
        Breaker::new(config, "https://p".into())
    }

    #[tokio::test(start_paused = true)]
    async fn a_503_with_retry_after_pauses_until_then() {
        let b = breaker(3);
        b.observe(503, None, ThrottleKey(1));
        assert_eq!(
            b.remaining(),
            None,
            "a 503 without Retry-After is retried, not a pause"
        );
        b.observe(503, Some(Duration::from_secs(5)), ThrottleKey(1));
        assert_eq!(b.remaining(), Some(Duration::from_secs(5)));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.remaining(), None);
        assert_eq!(b.trips(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_asked_by_the_platform_lasts_its_retry_after_or_the_default() {
        let b = breaker(3);
        assert_eq!(
            b.pause(Some(Duration::from_secs(7)), "quota"),
            Duration::from_secs(7)
        );
        assert_eq!(b.remaining(), Some(Duration::from_secs(7)));
        tokio::time::advance(Duration::from_secs(7)).await;
        assert_eq!(b.remaining(), None);
        assert_eq!(b.pause(None, "quota"), Duration::from_secs(60));
        assert_eq!(b.remaining(), Some(Duration::from_secs(60)));
        assert_eq!(b.trips(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_lasts_at_most_an_hour() {
        let b = breaker(3);
        b.observe(503, Some(Duration::MAX), ThrottleKey(1));
        assert_eq!(b.remaining(), Some(crate::MAX_RETRY_AFTER));
        assert_eq!(
            b.pause(Some(Duration::from_secs(u64::MAX)), "quota"),
            crate::MAX_RETRY_AFTER
        );
        tokio::time::advance(crate::MAX_RETRY_AFTER).await;
        assert_eq!(b.remaining(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn answers_that_extend_a_pause_do_not_count_as_more_pauses() {
        let b = breaker(3);
        // Every request in flight when the provider paused us brings its own 503.
        for _ in 0..50 {
            b.observe(503, Some(Duration::from_secs(5)), ThrottleKey(1));
        }
        b.observe(503, Some(Duration::from_secs(10)), ThrottleKey(1));
        b.pause(Some(Duration::from_secs(2)), "quota");
        assert_eq!(b.remaining(), Some(Duration::from_secs(10)));
        assert_eq!(b.trips(), 1);
        tokio::time::advance(Duration::from_secs(10)).await;
        b.observe(503, Some(Duration::ZERO), ThrottleKey(1));
        assert_eq!((b.remaining(), b.trips()), (None, 1), "no pause at all");
        b.observe(503, Some(Duration::from_secs(5)), ThrottleKey(1));
        assert_eq!(b.trips(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_for_one_token_does_not_trip_it() {
        let b = breaker(3);
        for _ in 0..10 {
            b.observe(429, Some(Duration::from_secs(30)), ThrottleKey(7));
        }
        assert_eq!(b.remaining(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_for_many_tokens_within_the_window_trips_it() {
        let b = breaker(3);
        b.observe(429, None, ThrottleKey(1));
        b.observe(429, None, ThrottleKey(2));
        tokio::time::advance(Duration::from_secs(11)).await;
        b.observe(429, None, ThrottleKey(3));
        assert_eq!(b.remaining(), None, "the first two are outside the window");
        b.observe(429, None, ThrottleKey(4));
        b.observe(429, None, ThrottleKey(5));
        assert_eq!(b.remaining(), Some(Duration::from_secs(60)));
    }
}
