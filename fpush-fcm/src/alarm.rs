//! A loud log line for operator mistakes, at most once a minute per module.
//!
//! A broken service account fails every push; logging each failure at `error` would bury the
//! log, logging none would hide the one thing the operator must fix.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Least time between two loud lines of one module.
pub(crate) const ALARM_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Default)]
pub(crate) struct Alarm {
    last: Mutex<Option<Instant>>,
}

impl Alarm {
    /// True if a loud line may be written now (and records that it was).
    pub fn may_sound(&self) -> bool {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match *last {
            Some(at) if now.duration_since(at) < ALARM_INTERVAL => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn sounds_at_most_once_a_minute() {
        let alarm = Alarm::default();
        assert!(alarm.may_sound());
        assert!(!alarm.may_sound());
        tokio::time::advance(ALARM_INTERVAL - Duration::from_millis(1)).await;
        assert!(!alarm.may_sound());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(alarm.may_sound());
    }
}
