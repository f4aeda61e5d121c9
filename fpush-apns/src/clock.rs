//! Wall-clock seconds that follow tokio's test clock.
//!
//! JWT `iat` and `apns-expiration` must be real unix time, while token ages are measured with
//! tokio's `Instant`. Adding tokio's offset from the real monotonic clock (zero outside tests
//! that advance time) keeps both views consistent, so a test that advances the clock by an hour
//! sees a token that is an hour old by either measure.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the unix epoch, shifted by however far tokio's clock was advanced.
pub fn unix_now() -> u64 {
    let advanced = tokio::time::Instant::now()
        .into_std()
        .saturating_duration_since(std::time::Instant::now());
    let now = SystemTime::now() + advanced;
    now.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}
