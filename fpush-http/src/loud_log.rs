//! [`LoudLog`]: a module's loud lines (a broken credential, a provider outage), at most one per
//! cause per minute, each saying how many were held back since the last one.
//!
//! A broken service account or a provider outage fails every push; a line per push would bury
//! the log, no line would hide the one thing the operator must fix. Held-back lines still go to
//! the debug level.

use std::collections::HashMap;
use std::fmt::Display;
use std::sync::Mutex;
use std::time::Duration;

use fpush_traits::{token_prefix, Delivered, PushError};
use log::Level;
use tokio::time::Instant;

/// Least time between two loud lines about one cause.
pub const LOUD_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Names one push in log lines (`APNS push to 3f2a9c1e…`; tokens are never logged whole),
/// formatted only when a line is written.
#[derive(Debug, Clone, Copy)]
pub struct PushLabel<'a> {
    /// `APNS`, `FCM`.
    pub provider: &'static str,
    pub token: &'a str,
}

impl Display for PushLabel<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} push to {}…", self.provider, token_prefix(self.token))
    }
}

/// The loud lines of one module.
#[derive(Debug)]
pub struct LoudLog {
    /// Who speaks (`push module "ios"`), the start of every line.
    subject: String,
    causes: Mutex<HashMap<&'static str, Held>>,
}

#[derive(Debug)]
struct Held {
    last_line: Instant,
    held_back: u64,
}

impl LoudLog {
    pub fn new(subject: impl Into<String>) -> Self {
        Self {
            subject: subject.into(),
            causes: Mutex::new(HashMap::new()),
        }
    }

    /// Who speaks (`push module "ios"`).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Writes `text` at `level` unless a line about `cause` was written within the last
    /// [`LOUD_LOG_INTERVAL`]; then it goes to the debug level and is counted.
    pub fn log(&self, level: Level, cause: &'static str, text: &dyn Display) {
        match self.admit(cause) {
            Some(0) => log::log!(level, "{}: {text}", self.subject),
            Some(held_back) => log::log!(
                level,
                "{}: {text} ({held_back} more like it in the last minute were logged at debug level)",
                self.subject
            ),
            None => log::debug!("{}: {text}", self.subject),
        }
    }

    /// Logs how a push ended, when that concerns the operator: misconfiguration loudly, provider
    /// trouble (throttling, timeouts, outages) as warnings, dead tokens only at debug level.
    pub fn outcome(&self, push: PushLabel<'_>, result: &Result<Delivered, PushError>) {
        match result {
            Ok(_) => log::debug!("{}: {push} delivered", self.subject),
            Err(PushError::Misconfigured(reason)) => self.log(
                Level::Error,
                "misconfigured",
                &format_args!("is misconfigured, pushes are answered wait: {reason}"),
            ),
            Err(
                error @ (PushError::ProviderThrottled { .. } | PushError::ProviderPaused { .. }),
            ) => self.log(Level::Warn, "throttled", &format_args!("{push}: {error}")),
            Err(error @ PushError::Timeout) => {
                self.log(Level::Warn, "timeout", &format_args!("{push}: {error}"))
            }
            Err(error @ PushError::Transient(_)) => {
                self.log(Level::Warn, "transient", &format_args!("{push}: {error}"))
            }
            Err(error @ PushError::Rejected { .. }) => {
                self.log(Level::Warn, "rejected", &format_args!("{push}: {error}"))
            }
            Err(error @ PushError::TokenInvalid(_)) => {
                log::debug!("{}: {push}: {error}", self.subject)
            }
        }
    }

    /// `Some(lines held back since the last one)` when a line about `cause` may be written now
    /// (and records that it was), `None` when it must be held back.
    fn admit(&self, cause: &'static str) -> Option<u64> {
        let now = Instant::now();
        let mut causes = self.causes.lock().unwrap_or_else(|e| e.into_inner());
        match causes.get_mut(cause) {
            Some(held) if now.duration_since(held.last_line) < LOUD_LOG_INTERVAL => {
                held.held_back += 1;
                None
            }
            Some(held) => {
                let held_back = held.held_back;
                *held = Held {
                    last_line: now,
                    held_back: 0,
                };
                Some(held_back)
            }
            None => {
                causes.insert(
                    cause,
                    Held {
                        last_line: now,
                        held_back: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_line_per_cause_per_minute_with_the_count_held_back() {
        let loud = LoudLog::new("push module \"m\"");
        assert_eq!(loud.admit("misconfigured"), Some(0));
        assert_eq!(loud.admit("misconfigured"), None);
        assert_eq!(loud.admit("misconfigured"), None);
        tokio::time::advance(LOUD_LOG_INTERVAL - Duration::from_millis(1)).await;
        assert_eq!(loud.admit("misconfigured"), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(loud.admit("misconfigured"), Some(3));
        assert_eq!(loud.admit("misconfigured"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn causes_are_limited_apart() {
        let loud = LoudLog::new("push module \"m\"");
        assert_eq!(loud.admit("misconfigured"), Some(0));
        assert_eq!(loud.admit("timeout"), Some(0));
        assert_eq!(loud.admit("timeout"), None);
        assert_eq!(loud.admit("transient"), Some(0));
    }

    #[tokio::test(start_paused = true)]
    async fn outcomes_count_against_their_own_cause() {
        let loud = LoudLog::new("push module \"m\"");
        let push = PushLabel {
            provider: "APNS",
            token: "0123456789",
        };
        assert_eq!(push.to_string(), "APNS push to 01234567…");
        loud.outcome(push, &Err(PushError::Misconfigured("bad key".into())));
        loud.outcome(push, &Err(PushError::Timeout));
        loud.outcome(push, &Err(PushError::Timeout));
        // Dead tokens and deliveries are not loud: they never use up a cause's line.
        loud.outcome(
            push,
            &Err(PushError::TokenInvalid(
                fpush_traits::DeadTokenReason::BadToken,
            )),
        );
        loud.outcome(push, &Ok(Delivered::default()));
        tokio::time::advance(LOUD_LOG_INTERVAL).await;
        assert_eq!(loud.admit("misconfigured"), Some(0));
        assert_eq!(loud.admit("timeout"), Some(1));
        assert_eq!(loud.admit("transient"), Some(0));
    }
}
