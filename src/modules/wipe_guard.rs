//! The guard against wiping a whole app's registrations over an operator mistake.
//!
//! With a wrong APNS topic or FCM project, the provider answers "token not for this app" for
//! *every* token; with a wrong APNS environment, "bad device token". Passing those on as
//! `cancel` would make every XMPP server delete every registration of the app. When such answers
//! dominate a module (at least [`MIN_TOKENS`] distinct tokens within [`WINDOW`] and at least
//! 90% of its results since the first of them), they are treated as a misconfiguration (`wait`,
//! loud log) until a push succeeds again.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How long one counting window lasts.
pub const WINDOW: Duration = Duration::from_secs(60);
/// How many distinct "not for this app" tokens within a window it takes to suspect the config.
pub const MIN_TOKENS: usize = 20;
/// The share of a window's results (in percent) those answers must reach.
const MIN_SHARE_PERCENT: u64 = 90;

/// Counts one module's results; see the module documentation.
#[derive(Debug, Default)]
pub struct WipeGuard {
    state: Mutex<GuardState>,
}

#[derive(Debug, Default)]
struct GuardState {
    window_start: Option<Instant>,
    results: u64,
    /// Deliveries among `results`: they leave the count when the first "not for this app"
    /// answer comes (see [`WipeGuard::record_token_refused`]).
    delivered: u64,
    not_for_app: u64,
    /// Hashes of the distinct tokens answered "not for this app" in this window (capped).
    distinct: HashSet<u64>,
    /// Set once the answers dominated; cleared by the next success.
    tripped: bool,
}

impl GuardState {
    fn roll_window(&mut self, now: Instant) {
        let expired = self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= WINDOW);
        if expired {
            self.window_start = Some(now);
            self.results = 0;
            self.delivered = 0;
            self.not_for_app = 0;
            self.distinct.clear();
        }
    }
}

impl WipeGuard {
    /// A push was delivered: the configuration works, so "not for this app" means what it says
    /// again, and the count starts over.
    pub fn record_success(&self) {
        let mut state = self.lock();
        if state.not_for_app > 0 || state.tripped {
            state.window_start = None;
            state.tripped = false;
        }
        state.roll_window(Instant::now());
        state.results += 1;
        state.delivered += 1;
    }

    /// Any other outcome (errors that are not "not for this app").
    pub fn record_other(&self) {
        let mut state = self.lock();
        state.roll_window(Instant::now());
        state.results += 1;
    }

    /// A provider said `token` belongs to another app, or is not a valid token there (which a
    /// wrong APNS environment makes it say of every token). Returns `true` when the answer
    /// must be treated as a misconfiguration instead of a dead token.
    ///
    /// The deliveries before the first such answer leave the count: they say the settings
    /// worked before, not now. Counted, they would hold a busy module's guard back for up to a
    /// minute after a reload with a wrong topic, every answer meanwhile going out as `cancel`.
    /// (A delivery after one restarts the count anyway.)
    pub fn record_token_refused(&self, token: &str) -> bool {
        let mut state = self.lock();
        state.roll_window(Instant::now());
        if state.not_for_app == 0 {
            state.results = state.results.saturating_sub(state.delivered);
            state.delivered = 0;
        }
        state.results += 1;
        state.not_for_app += 1;
        if state.distinct.len() < MIN_TOKENS {
            let mut hasher = DefaultHasher::new();
            token.hash(&mut hasher);
            state.distinct.insert(hasher.finish());
        }
        if state.distinct.len() >= MIN_TOKENS
            && state.not_for_app * 100 >= state.results * MIN_SHARE_PERCENT
        {
            state.tripped = true;
        }
        state.tripped
    }

    /// Whether "not for this app" answers are currently treated as a misconfiguration.
    pub fn is_tripped(&self) -> bool {
        self.lock().tripped
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GuardState> {
        // The state is plain counters: a panic elsewhere cannot leave it inconsistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn trips_when_not_for_app_answers_dominate_and_resets_on_success() {
        let guard = WipeGuard::default();
        for i in 0..MIN_TOKENS - 1 {
            assert!(!guard.record_token_refused(&format!("token-{i}")));
        }
        // The 20th distinct token makes it 20 of 20 results.
        assert!(guard.record_token_refused("token-last"));
        assert!(guard.record_token_refused("token-0"));
        guard.record_success();
        assert!(!guard.is_tripped());
    }

    #[tokio::test(start_paused = true)]
    async fn repeated_answers_for_one_token_do_not_trip() {
        let guard = WipeGuard::default();
        for _ in 0..100 {
            assert!(!guard.record_token_refused("the-same-token"));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn does_not_trip_when_most_pushes_succeed() {
        let guard = WipeGuard::default();
        for i in 0..30 {
            for _ in 0..10 {
                guard.record_success();
            }
            assert!(!guard.record_token_refused(&format!("token-{i}")));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn trips_only_from_nine_in_ten_results_with_other_errors_among_them() {
        // Other errors (timeouts, 5xx) do not reset the count as a success does: only the
        // share keeps a module with a few foreign tokens among many failures answering cancel.
        let guard = WipeGuard::default();
        for i in 0..MIN_TOKENS * 2 {
            guard.record_other();
            assert!(!guard.record_token_refused(&format!("token-{i}")), "{i}");
        }
        tokio::time::advance(WINDOW).await;
        // 9 of 10 results: trips once the tokens are distinct enough.
        guard.record_other();
        let tripped = (0..MIN_TOKENS * 2)
            .map(|i| guard.record_token_refused(&format!("token-{i}")))
            .position(|tripped| tripped);
        assert_eq!(tripped, Some(MIN_TOKENS - 1));
    }

    #[tokio::test(start_paused = true)]
    async fn deliveries_before_the_answers_turned_do_not_hold_the_guard_back() {
        // A busy module delivers, then a reload with a wrong topic makes every answer "not for
        // this app": the deliveries before it say nothing about the settings now, and must not
        // let a minute of those answers through as `cancel`.
        let guard = WipeGuard::default();
        for _ in 0..10_000 {
            guard.record_success();
        }
        let tripped = (0..MIN_TOKENS)
            .map(|i| guard.record_token_refused(&format!("token-{i}")))
            .position(|tripped| tripped);
        assert_eq!(tripped, Some(MIN_TOKENS - 1));
    }

    #[tokio::test(start_paused = true)]
    async fn counts_restart_each_window() {
        let guard = WipeGuard::default();
        for i in 0..MIN_TOKENS - 1 {
            guard.record_token_refused(&format!("token-{i}"));
        }
        tokio::time::advance(WINDOW).await;
        assert!(!guard.record_token_refused("token-new"));
    }
}
