//! Push2 messages on the common push path: the same sender policy, admission, bounds, metrics
//! and settling as push IQs, with one difference in the answer: errors go back as
//! `<message type='error'>` and success is silent (a message has no result).

use super::push_path::PushPath;
use super::Dispatcher;
use crate::doors::{self, Refusal};
use crate::outcome::Outcome;
use crate::request::{self, Condition, ErrorType, IqHeader, Push2Request};

/// Error texts: short English sentences for the XMPP server's logs.
mod text {
    pub const GONE: &str = "The push target is no longer valid.";
    pub const BUSY: &str = "Too many pushes; try again later.";
    pub const TIMEOUT: &str = "The push service did not answer in time.";
    pub const FAILED: &str = "The push could not be delivered now; try again later.";
    pub const TOO_LARGE: &str = "The push is too large.";
    pub const BAD: &str = "The push notification is not valid.";
    pub const FORBIDDEN: &str = "Only XMPP servers may push to this service.";
    pub const NOT_ALLOWED: &str = "This relay does not push to that address.";
    pub const REJECTED: &str =
        "The push service refused this push (its authorization or subscription).";
}

impl Dispatcher {
    /// One push2 message: sender policy, the push2 door, then the common path.
    pub(super) fn push2(&self, message: IqHeader, push: Push2Request) {
        if doors::oversized_header(&message) {
            return self.refuse_message(&message, Outcome::too_large.into());
        }
        if let Some(refusal) = self.sender_refused(self.access.load().push(&message.from)) {
            return self.refuse_message(&message, refusal);
        }
        match doors::push2::resolve(&self.modules.load(), push) {
            Ok(target) => self.pushes.dispatch(message, target, &self.tasks),
            Err(refusal) => self.refuse_message(&message, refusal),
        }
    }

    /// A push2 message refused before any module: counted for no module, answered by message.
    pub(super) fn refuse_message(&self, message: &IqHeader, refusal: Refusal) {
        log::debug!(
            "push2 message from {} refused: {}",
            message.from,
            refusal.text
        );
        self.metrics.unattributed().count(refusal.outcome);
        let text = (!refusal.text.is_empty()).then_some(&*refusal.text);
        self.pushes.reply_by_message(message, refusal.outcome, text);
    }
}

impl PushPath {
    /// The message error for a push2 push that ended with `outcome`; nothing when it was
    /// delivered. `text` replaces the usual text.
    pub(super) fn reply_by_message(
        &self,
        message: &IqHeader,
        outcome: Outcome,
        text: Option<&str>,
    ) {
        let Some((kind, condition, usual)) = message_error_for(outcome) else {
            return;
        };
        let mut out = Vec::with_capacity(240 + message.id.len() + message.from.len());
        let text = Some(text.unwrap_or(usual));
        request::write_message_error(message, kind, condition, text, &mut out);
        self.replies.send(out);
    }
}

/// How a push2 push that ended with `outcome` is answered: `None` when it is not answered.
fn message_error_for(outcome: Outcome) -> Option<(ErrorType, Condition, &'static str)> {
    use Condition::*;
    use ErrorType::*;
    Some(match outcome {
        Outcome::delivered | Outcome::queued => return None,
        Outcome::token_invalid
        | Outcome::known_dead
        | Outcome::unknown_module
        | Outcome::unknown_registration => (Cancel, ItemNotFound, text::GONE),
        Outcome::ratelimited
        | Outcome::throttled
        | Outcome::overloaded
        | Outcome::domain_limited => (Wait, ResourceConstraint, text::BUSY),
        Outcome::timeout => (Wait, RemoteServerTimeout, text::TIMEOUT),
        Outcome::transient
        | Outcome::misconfigured
        | Outcome::shutdown
        | Outcome::retired
        | Outcome::unknown_in_new_store
        | Outcome::store_failed => (Wait, InternalServerError, text::FAILED),
        Outcome::too_large => (Modify, NotAcceptable, text::TOO_LARGE),
        Outcome::bad_request => (Modify, BadRequest, text::BAD),
        Outcome::forbidden => (Auth, Forbidden, text::FORBIDDEN),
        Outcome::not_allowed => (Cancel, NotAllowed, text::NOT_ALLOWED),
        // The issue names no condition for a request the service found wrong: the one for a
        // bad notification fits (the server sent something this target does not take).
        Outcome::rejected => (Modify, BadRequest, text::REJECTED),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_delivered_push_goes_unanswered() {
        for outcome in Outcome::ALL {
            let silent = message_error_for(outcome).is_none();
            let expected = matches!(outcome, Outcome::delivered | Outcome::queued);
            assert_eq!(silent, expected, "{}", outcome.name());
        }
    }

    #[test]
    fn the_issue_s_conditions() {
        let condition = |outcome| message_error_for(outcome).map(|(k, c, _)| (k, c));
        use Condition::*;
        use ErrorType::*;
        assert_eq!(
            condition(Outcome::token_invalid),
            Some((Cancel, ItemNotFound))
        );
        assert_eq!(
            condition(Outcome::transient),
            Some((Wait, InternalServerError))
        );
        assert_eq!(condition(Outcome::too_large), Some((Modify, NotAcceptable)));
        assert_eq!(condition(Outcome::bad_request), Some((Modify, BadRequest)));
        assert_eq!(condition(Outcome::not_allowed), Some((Cancel, NotAllowed)));
        assert_eq!(condition(Outcome::rejected), Some((Modify, BadRequest)));
    }
}
