//! The contract between the fpush core and its push platforms.
//!
//! The core turns a push IQ into a [`PushNotification`] and hands it to a module through
//! [`PushTrait::send`]. A platform answers with [`Delivered`] or a [`PushError`] that says what the
//! XMPP server should do next, not what the provider's HTTP status was: the core maps each kind to
//! exactly one reply type (see `ARCHITECTURE.md`, "Replies").
//!
//! Nothing here knows about XMPP, and no platform crate imports core code.

use std::time::Duration;

pub use async_trait::async_trait;

/// What the XMPP server told us about the pending messages (the `urn:xmpp:push:summary` form).
///
/// Every field is optional: Prosody sends a dummy body and often empty fields, ejabberd sends no
/// message count, and servers may be configured to send nothing at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushSummary {
    pub message_count: Option<String>,
    pub last_message_sender: Option<String>,
    pub last_message_body: Option<String>,
}

/// One push to deliver: where it goes and what the XMPP server said about it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushNotification {
    /// The device token (the `node` of the push IQ's `publish`).
    pub token: String,
    /// The configured id of the module that delivers this push.
    pub module_id: String,
    /// The summary form, when the server sent one.
    pub summary: PushSummary,
    /// Every other publish-options field (`var`, `value`) in document order, e.g. the client's
    /// `secret`. `FORM_TYPE` and `pushModule` are not repeated here.
    pub options: Vec<(String, String)>,
}

impl PushNotification {
    /// A short, log-safe prefix of the token: tokens are credentials and are never logged whole.
    pub fn token_prefix(&self) -> &str {
        token_prefix(&self.token)
    }
}

/// A short, log-safe prefix of a device token (at most 8 characters, cut on a char boundary).
pub fn token_prefix(token: &str) -> &str {
    match token.char_indices().nth(8) {
        Some((end, _)) => &token[..end],
        None => token,
    }
}

/// A push the provider accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    /// The provider's id for the accepted message (`apns-id`, FCM message `name`), when it gave one.
    pub provider_id: Option<String>,
}

/// Why a provider declared a token dead.
///
/// The distinction matters to the core: "not for this app" answers for *every* token usually mean
/// the operator configured the wrong topic or project, and the core guards against wiping a whole
/// app's registrations over that mistake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadTokenReason {
    /// The app was uninstalled or the token expired (APNS 410 `Unregistered`, FCM `UNREGISTERED`).
    Unregistered,
    /// The token is malformed for this provider (APNS `BadDeviceToken`, FCM `INVALID_ARGUMENT` on
    /// `message.token`).
    BadToken,
    /// The token belongs to another app (APNS `DeviceTokenNotForTopic`, FCM `SENDER_ID_MISMATCH`).
    NotForThisApp,
}

/// What went wrong with a push, phrased as what the XMPP server should do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The token is dead: the server should disable the registration.
    #[error("device token is no longer valid ({0:?})")]
    TokenInvalid(DeadTokenReason),
    /// The provider asked us to slow down.
    #[error("provider throttled the push{}", retry_after_suffix(.retry_after))]
    ProviderThrottled { retry_after: Option<Duration> },
    /// The provider did not answer within the request timeout.
    #[error("provider did not answer in time")]
    Timeout,
    /// A passing failure: 5xx, connection reset, OAuth endpoint down.
    #[error("transient provider failure: {0}")]
    Transient(String),
    /// Our side is broken: credentials, topic or project are wrong. The push is answered `wait`
    /// so no user loses a registration over an operator mistake.
    #[error("push module misconfigured: {0}")]
    Misconfigured(String),
}

fn retry_after_suffix(retry_after: &Option<Duration>) -> String {
    match retry_after {
        Some(after) => format!(" (retry after {}s)", after.as_secs()),
        None => String::new(),
    }
}

/// A push platform: one configured app on one provider.
///
/// Modules live as `Arc<dyn PushTrait>` and are called concurrently from many tasks, so `send`
/// must be cheap to call in parallel (share one pooled connection, not one per push).
#[async_trait]
pub trait PushTrait: Send + Sync {
    /// Deliver one push. Must finish in bounded time (the module owns its request timeout).
    async fn send(&self, notification: &PushNotification) -> Result<Delivered, PushError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_says_when_to_retry_in_plain_words() {
        let throttled = PushError::ProviderThrottled {
            retry_after: Some(Duration::from_secs(30)),
        };
        assert_eq!(
            throttled.to_string(),
            "provider throttled the push (retry after 30s)"
        );
        let plain = PushError::ProviderThrottled { retry_after: None };
        assert_eq!(plain.to_string(), "provider throttled the push");
    }

    #[test]
    fn token_prefix_is_short_and_char_safe() {
        assert_eq!(token_prefix("0123456789abcdef"), "01234567");
        assert_eq!(token_prefix("abc"), "abc");
        assert_eq!(token_prefix("ééééééééé"), "éééééééé");
    }
}
