//! What a platform answers: delivered, or an error phrased as what the XMPP server should do.

use std::time::Duration;

/// A push the provider accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivered {
    /// The provider's id for the accepted message (`apns-id`, FCM message `name`, a Web Push
    /// `Location`), when it gave one and debug logging is on (see [`Delivered::identified_by`]).
    pub provider_id: Option<String>,
}

impl Delivered {
    /// A delivery whose provider id `id` reads from the answer. Only the core's per-push debug
    /// line shows the id (to find the message in the provider's delivery logs), so it is not
    /// copied out of the answer while no debug logging is on: that copy is an allocation per
    /// push.
    pub fn identified_by(id: impl FnOnce() -> Option<String>) -> Self {
        Delivered {
            provider_id: (log::max_level() >= log::LevelFilter::Debug)
                .then(id)
                .flatten(),
        }
    }
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
    /// Refused before asking the provider: it cannot be a token of this platform. Anyone can send
    /// such tokens by the thousand, so the core does not remember them.
    Implausible,
}

/// What went wrong with a push, phrased as what the XMPP server should do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The token is dead: the server should disable the registration.
    #[error("device token is no longer valid ({0:?})")]
    TokenInvalid(DeadTokenReason),
    /// The provider asked us to slow down for this target (APNS 429 for one device token).
    #[error("provider throttled the push{}", retry_after_suffix(.retry_after))]
    ProviderThrottled { retry_after: Option<Duration> },
    /// The provider asked the whole module (or push service) to pause, and the push was not
    /// sent: a 503 with `Retry-After`, a project-wide quota, 429s for many targets. No target
    /// is at fault, so none is held (holding each one pushed meanwhile would only grow memory).
    #[error("provider asked for a pause; not sent (retry after {}s)", .retry_after.as_secs())]
    ProviderPaused { retry_after: Duration },
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
    /// This one request was refused as it stands: neither the token nor the module is at fault,
    /// so nothing is remembered as dead and no module-wide state changes.
    #[error("push refused ({reason:?}): {detail}")]
    Rejected { reason: Rejection, detail: String },
}

/// Why one request was refused (see [`PushError::Rejected`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The platform may not call this target at all (outside the operator's fence): nothing
    /// was sent.
    NotAllowed,
    /// The payload is larger than the provider takes.
    TooLarge,
    /// The provider found this request wrong (its authorization or the subscription).
    Invalid,
}

fn retry_after_suffix(retry_after: &Option<Duration>) -> String {
    match retry_after {
        Some(after) => format!(" (retry after {}s)", after.as_secs()),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_provider_id_is_read_only_while_debug_logging_is_on() {
        log::set_max_level(log::LevelFilter::Info);
        let unread = Delivered::identified_by(|| panic!("read with debug logging off"));
        assert_eq!(unread.provider_id, None);
        log::set_max_level(log::LevelFilter::Debug);
        let read = Delivered::identified_by(|| Some("id-1".to_owned()));
        assert_eq!(read.provider_id.as_deref(), Some("id-1"));
    }

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
}
