//! The one table from how a push ended to the reply the XMPP server gets (`ARCHITECTURE.md`,
//! "Replies"). Servers act on the error *type* only: `cancel` may delete a registration, `wait`
//! never does, so only a dead token is ever answered `cancel`.

use crate::config::RejectWith;
use crate::outcome::Outcome;
use crate::request::{Condition, ErrorType, Reply};

/// Error texts: short English sentences for the XMPP server's logs.
mod text {
    pub const TOKEN_DEAD: &str = "The device token is no longer valid.";
    pub const RATELIMITED: &str = "Too many pushes for this device: one is already queued, or the push provider asked to wait.";
    pub const OVERLOADED: &str = "The push server is overloaded; try again later.";
    pub const THROTTLED: &str = "The push provider is throttling; try again later.";
    pub const TIMEOUT: &str = "The push provider did not answer in time.";
    pub const TRANSIENT: &str = "The push provider failed temporarily.";
    pub const MISCONFIGURED: &str = "The push module is misconfigured; the operator was alerted.";
    pub const SHUTTING_DOWN: &str = "The push server is shutting down; try again later.";
    pub const MODULE_REMOVED: &str = "The push module was removed by a reload; try again later.";
    pub const TOO_LARGE: &str = "The stanza exceeds the push server's size limit.";
    pub const PAYLOAD_TOO_LARGE: &str = "The push is too large for the push service.";
    pub const FORBIDDEN: &str = "Only XMPP servers may push to this service.";
    pub const DOMAIN_LIMITED: &str = "Too many requests from this domain; try again later.";
    pub const UNKNOWN_REGISTRATION: &str = "No such push registration.";
    pub const NEW_STORE: &str = "No such push registration in this new store; try again later.";
    pub const STORE_FAILED: &str = "The registration store is unavailable; try again later.";
    pub const REFUSED: &str = "The push service refused this push.";
}

/// The reply for a push that ended with `outcome`. `text` replaces the outcome's usual text
/// where the caller knows better (a door's refusal, a removed module); `None` for `queued`,
/// which is not an end.
pub(super) fn reply_for<'a>(
    outcome: Outcome,
    reject_with: RejectWith,
    text: Option<&'a str>,
) -> Option<Reply<'a>> {
    let error = |kind, condition, usual: &'static str| Reply::Error {
        kind,
        condition,
        text: Some(text.unwrap_or(usual)),
    };
    use Condition::*;
    use ErrorType::*;
    Some(match outcome {
        Outcome::delivered => Reply::Result,
        Outcome::queued => return None,
        Outcome::ratelimited if reject_with == RejectWith::Result => Reply::Result,
        Outcome::ratelimited => error(Wait, ResourceConstraint, text::RATELIMITED),
        Outcome::token_invalid | Outcome::known_dead | Outcome::unknown_module => {
            error(Cancel, ItemNotFound, text::TOKEN_DEAD)
        }
        Outcome::throttled => error(Wait, ResourceConstraint, text::THROTTLED),
        Outcome::timeout => error(Wait, RemoteServerTimeout, text::TIMEOUT),
        Outcome::transient => error(Wait, InternalServerError, text::TRANSIENT),
        Outcome::misconfigured => error(Wait, InternalServerError, text::MISCONFIGURED),
        Outcome::overloaded => error(Wait, ResourceConstraint, text::OVERLOADED),
        Outcome::bad_request => error(Modify, BadRequest, ""),
        Outcome::shutdown => error(Wait, InternalServerError, text::SHUTTING_DOWN),
        Outcome::forbidden => error(Auth, Forbidden, text::FORBIDDEN),
        Outcome::domain_limited => error(Wait, ResourceConstraint, text::DOMAIN_LIMITED),
        Outcome::retired => error(Wait, InternalServerError, text::MODULE_REMOVED),
        // Never `modify`: ejabberd deletes a registration on the first non-`wait` error, and one
        // long message must not disable a user's pushes.
        Outcome::too_large => error(Wait, PolicyViolation, text::TOO_LARGE),
        // A registration the store does not hold: the server should disable it.
        Outcome::unknown_registration => error(Cancel, ItemNotFound, text::UNKNOWN_REGISTRATION),
        // Never `cancel`: the store may be the wrong one, and its registrations alive elsewhere.
        Outcome::unknown_in_new_store => error(Wait, ItemNotFound, text::NEW_STORE),
        // Never `cancel`: that would make the server drop a registration that may be alive.
        Outcome::store_failed => error(Wait, InternalServerError, text::STORE_FAILED),
        // Only push2 targets end this way, and they are answered by message; an IQ would still
        // get `wait`, for the same reason as above.
        Outcome::not_allowed | Outcome::rejected => error(Wait, InternalServerError, text::REFUSED),
    })
}

/// The reply for a push a module answered with `outcome`. A push it found too large is over
/// its provider's payload limit, not over `limits.maxStanzaSize`, and the text says so.
pub(super) fn module_reply_for(
    outcome: Outcome,
    reject_with: RejectWith,
) -> Option<Reply<'static>> {
    let text = (outcome == Outcome::too_large).then_some(text::PAYLOAD_TOO_LARGE);
    reply_for(outcome, reject_with, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_of(outcome: Outcome) -> Option<ErrorType> {
        match reply_for(outcome, RejectWith::Wait, None)? {
            Reply::Error { kind, .. } => Some(kind),
            _ => None,
        }
    }

    #[test]
    fn only_dead_tokens_and_unknown_modules_or_registrations_are_answered_cancel() {
        for outcome in Outcome::ALL {
            let cancel = kind_of(outcome) == Some(ErrorType::Cancel);
            let expected = matches!(
                outcome,
                Outcome::token_invalid
                    | Outcome::known_dead
                    | Outcome::unknown_module
                    | Outcome::unknown_registration
            );
            assert_eq!(cancel, expected, "{}", outcome.name());
        }
    }

    #[test]
    fn a_ratelimited_push_can_be_answered_result() {
        assert_eq!(
            reply_for(Outcome::ratelimited, RejectWith::Result, None),
            Some(Reply::Result)
        );
        assert_eq!(reply_for(Outcome::queued, RejectWith::Wait, None), None);
    }
}
