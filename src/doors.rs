//! The front doors: each way a push reaches fpush, resolving a request to a [`Target`] — the
//! module that delivers it, what identifies the target for the module's policy, and the
//! notification to send — or to a [`Refusal`] answered at once.
//!
//! Only the doors know a client protocol's rules; after them every push takes the same path
//! (admission, sending, settling, the reply table).

pub mod p2;
pub mod push2;
pub mod tigase;
pub mod token_in_node;

use std::borrow::Cow;
use std::sync::Arc;

use fpush_traits::{PushNotification, PushSummary};

use crate::config::RegistrationProtocol;
use crate::modules::{Admitting, Module, ModuleSet};
use crate::outcome::Outcome;
use crate::request::{IqHeader, PushRequest};

/// What a push keeps of each summary field.
const MAX_SUMMARY_FIELD_BYTES: usize = 1024;
/// How many publish-options fields a push keeps, and how much of each.
pub const MAX_OPTIONS: usize = crate::request::MAX_OPTIONS;
pub const MAX_OPTION_BYTES: usize = 256;

/// The longest IQ `id` a push may carry (servers use 64 hex characters or fewer).
pub const MAX_ID_BYTES: usize = 4096;
/// The longest JID (RFC 7622: three parts of at most 1023 bytes each, plus separators).
pub const MAX_JID_BYTES: usize = 3071;
/// Whether a push IQ's addressing is larger than any server sends: such a push is answered
/// `wait`/`policy-violation` before it can occupy a place in flight or in the queue.
pub fn oversized_header(iq: &IqHeader) -> bool {
    iq.id.len() > MAX_ID_BYTES || iq.from.len() > MAX_JID_BYTES || iq.to.len() > MAX_JID_BYTES
}

/// Where one push goes and what it carries.
#[derive(Debug)]
pub struct Target {
    pub module: Arc<Module>,
    pub notification: PushNotification,
    key: TargetKey,
    /// The stored registration the push was resolved from, if a registering door found it.
    registered: Option<Box<p2::Registered>>,
    /// Whose ratelimit the push passes.
    limiter: Limiter,
    /// Set by a door for pushes that must not wait (see [`Target::urgent`]).
    urgent: bool,
    /// Answered with a message error (push2) rather than an IQ reply.
    pub by_message: bool,
}

/// What a queued push holds besides its text: the target, the IQ's header, its task and future
/// (the future alone is about 700 bytes).
pub const QUEUED_PUSH_OVERHEAD: usize = 1024;

/// Whose ratelimit a push passes; the dead-token memory is always its module's.
#[derive(Debug, Clone, Default)]
pub enum Limiter {
    /// The module's own.
    #[default]
    Module,
    /// Push2's (`push2.ratelimit`, off by default): the relay module's when it is enabled,
    /// none otherwise. A push2 push to an apple module is not held by that app's ratelimit.
    Relay(Option<Arc<Module>>),
}

/// What identifies a target for the ratelimit and the dead-token memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetKey {
    /// The device token alone (the token travels in every push).
    Token,
    /// A key of the door's own (e.g. a registration's token and account together).
    Composite(String),
    /// The second (VoIP) token alone: a call goes to it (push2's, which names its tokens in
    /// every push).
    SecondToken,
}

impl Target {
    pub fn new(module: Arc<Module>, notification: PushNotification, key: TargetKey) -> Self {
        Self {
            module,
            notification,
            key,
            registered: None,
            limiter: Limiter::Module,
            urgent: false,
            by_message: false,
        }
    }

    /// The same push, passing `limiter`'s ratelimit rather than its module's.
    pub fn limited_by(self, limiter: Limiter) -> Self {
        Target { limiter, ..self }
    }

    /// Asks the module whether the push goes out (see [`Module::admit`]); an urgent push passes
    /// no ratelimit.
    pub fn admit(&self) -> Admitting {
        match &self.limiter {
            _ if self.urgent => self.module.admit_limited_by(self.key(), None),
            Limiter::Module => self.module.admit(self.key()),
            Limiter::Relay(relay) => self.module.admit_limited_by(self.key(), relay.as_deref()),
        }
    }

    /// Takes back the queued send at `at` that [`Target::admit`] recorded, when the push could
    /// not be queued: otherwise its token's later pushes are refused until `at` as already
    /// queued, and none is.
    pub fn unqueue(&self, at: tokio::time::Instant) {
        if let Some(limiter) = self.ratelimited_by() {
            limiter.unqueue(self.key(), at);
        }
    }

    /// The module whose ratelimit [`Target::admit`] asked: the push's own, push2's relay
    /// module, or none (an urgent push, or push2 with its ratelimit off).
    pub fn ratelimited_by(&self) -> Option<&Module> {
        match &self.limiter {
            _ if self.urgent => None,
            Limiter::Module => Some(&self.module),
            Limiter::Relay(relay) => relay.as_deref(),
        }
    }

    /// The same push, answered the push2 way: errors as `<message type='error'>`, success silent.
    pub fn answered_by_message(self) -> Self {
        Target {
            by_message: true,
            ..self
        }
    }

    /// The same target, resolved from a stored registration.
    pub fn registered(self, registered: p2::Registered) -> Self {
        Self {
            registered: Some(Box::new(registered)),
            ..self
        }
    }

    /// The stored registration the push was resolved from, if any: how the push ends
    /// matters to it (see [`p2::Registered::settle`]).
    pub fn registration(&self) -> Option<&p2::Registered> {
        self.registered.as_deref()
    }

    /// The same push holding no more than a platform can use, so that pushes in flight and in
    /// the queue stay bounded (a few KiB each) however large the stanzas were (see
    /// `bound_notification`).
    pub fn bounded(mut self) -> Self {
        bound_notification(&mut self.notification);
        self
    }

    /// The push as it waits in the ratelimit queue: no platform reads the publish-options, so
    /// a queued push keeps none.
    pub fn trimmed_for_queue(mut self) -> Self {
        self.notification.options = Vec::new();
        self.notification.options.shrink_to_fit();
        self
    }

    /// About the memory the push holds while it waits in the ratelimit queue: its text and a
    /// fixed share for the structures and the task around it.
    pub fn queued_size(&self) -> usize {
        let key = match &self.key {
            TargetKey::Composite(key) => key.len(),
            TargetKey::Token | TargetKey::SecondToken => 0,
        };
        let registered = self.registered.as_ref().map_or(0, |r| r.text_len());
        QUEUED_PUSH_OVERHEAD + self.notification.text_len() + key + registered
    }

    /// The same target, never held by the ratelimit queue (a call held 20 s is a missed call).
    pub fn urgent(self) -> Self {
        Self {
            urgent: true,
            ..self
        }
    }

    /// Whether the push skips the ratelimit (the dead-token memory and a provider's hold of its
    /// token still apply).
    pub fn is_urgent(&self) -> bool {
        self.urgent
    }

    /// The key the module's policy decides and remembers by.
    pub fn key(&self) -> &str {
        match &self.key {
            TargetKey::Token => &self.notification.token,
            TargetKey::Composite(key) => key,
            TargetKey::SecondToken => match &self.notification.voip_token {
                Some(voip) => voip,
                None => &self.notification.token,
            },
        }
    }
}

/// A request a door answers itself, without a provider call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// How the request is counted; it also picks the reply.
    pub outcome: Outcome,
    /// The reply's text, for the XMPP server's log.
    pub text: Cow<'static, str>,
}

impl Refusal {
    /// The refusal of a push whose registration is stored under a name (a p2 service, a tigase
    /// provider id) no module serves: within `modules.retiredGrace` of the reload that stopped
    /// serving it `wait`, so that an operator's slip can be undone before the servers drop the
    /// registrations; past it (or when no reload did), `item-not-found`, like a push naming a
    /// module no configuration names. `what` names it for the reply's text.
    pub fn unserved(
        modules: &ModuleSet,
        protocol: RegistrationProtocol,
        name: &str,
        what: &str,
    ) -> Self {
        let (outcome, now) = match modules.retired_service(protocol, name) {
            true => (Outcome::retired, " now"),
            false => (Outcome::unknown_module, ""),
        };
        let text = format!("No push module serves {what}{now}.");
        Refusal {
            outcome,
            text: text.into(),
        }
    }
}

impl From<Outcome> for Refusal {
    /// A refusal answered with the outcome's usual text.
    fn from(outcome: Outcome) -> Self {
        Refusal {
            outcome,
            text: Cow::Borrowed(""),
        }
    }
}

/// Cuts `text` to at most `max` bytes, on a character boundary.
fn truncate_on_char(text: &mut String, max: usize) {
    if text.len() > max {
        let end = (0..=max)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(end);
        text.shrink_to_fit();
    }
}

/// Cuts text a user reads to at most `max` bytes, marked with an ellipsis when cut (within
/// `max`), never inside a character, a flag or an emoji sequence: a silently cut message reads
/// as if it were whole.
fn shorten_text(text: &mut String, max: usize) {
    const MARK: char = '\u{2026}';
    if text.len() <= max {
        return;
    }
    let end = fpush_traits::text::cut_point(text, max.saturating_sub(MARK.len_utf8()));
    text.truncate(end);
    text.push(MARK);
    text.shrink_to_fit();
}

/// Cuts each summary field, and each extra payload value a door copied from it, to what a
/// provider payload can carry (APNS and FCM take 4 KiB in all); keeps at most [`MAX_OPTIONS`]
/// publish-options fields of [`MAX_OPTION_BYTES`] each.
fn bound_notification(notification: &mut PushNotification) {
    bound_summary(&mut notification.summary);
    for (_, value) in &mut notification.extra {
        shorten_text(value, MAX_SUMMARY_FIELD_BYTES);
    }
    notification.options.truncate(MAX_OPTIONS);
    bound_option_values(&mut notification.options);
}

/// Cuts a push that is to wait for the registration store the way [`Target::bounded`] will cut
/// its target, so that pushes held while a slow store answers keep a few KiB each, not their
/// stanza's size. Every option is kept (the parser keeps [`MAX_OPTIONS`] and the `secret`);
/// a `secret` cut to [`MAX_OPTION_BYTES`] still matches no stored one it did not match whole.
pub fn bound_request(push: &mut PushRequest) {
    bound_summary(&mut push.summary);
    bound_option_values(&mut push.options);
}

fn bound_summary(summary: &mut PushSummary) {
    if let Some(count) = &mut summary.message_count {
        truncate_on_char(count, MAX_SUMMARY_FIELD_BYTES);
    }
    let text = [
        &mut summary.last_message_sender,
        &mut summary.last_message_body,
    ];
    for field in text.into_iter().flatten() {
        shorten_text(field, MAX_SUMMARY_FIELD_BYTES);
    }
}

fn bound_option_values(options: &mut [(String, String)]) {
    for (name, value) in options {
        truncate_on_char(name, MAX_OPTION_BYTES);
        truncate_on_char(value, MAX_OPTION_BYTES);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_cut_like_its_target_but_keeps_every_option_the_parser_kept() {
        let huge = "x".repeat(64 * 1024);
        let mut push = PushRequest::default();
        push.summary.last_message_body = Some(huge.clone());
        push.options = vec![("field".to_owned(), huge.clone()); MAX_OPTIONS];
        push.options.push(("secret".to_owned(), huge));
        bound_request(&mut push);
        let body = push.summary.last_message_body.as_ref().map(String::len);
        assert_eq!(body, Some(MAX_SUMMARY_FIELD_BYTES));
        assert_eq!(push.options.len(), MAX_OPTIONS + 1);
        assert!(push
            .options
            .iter()
            .all(|(_, v)| v.len() == MAX_OPTION_BYTES));
        assert_eq!(push.options[MAX_OPTIONS].0, "secret");
    }

    #[test]
    fn a_bounded_push_keeps_a_few_kib_of_summary_extra_values_and_options() {
        let huge = "x".repeat(256 * 1024);
        let mut notification = PushNotification::new("token", "module");
        notification.summary.last_message_body = Some(huge.clone());
        notification.summary.last_message_sender = Some(huge.clone());
        notification.extra = vec![
            ("body".into(), huge.clone()),
            ("sender".into(), huge.clone()),
        ];
        notification.options = vec![("secret".into(), huge); 100];
        bound_notification(&mut notification);
        let summary = &notification.summary;
        for field in [&summary.last_message_body, &summary.last_message_sender] {
            assert_eq!(
                field.as_ref().map(String::len),
                Some(MAX_SUMMARY_FIELD_BYTES)
            );
        }
        for (_, value) in &notification.extra {
            assert_eq!(value.len(), MAX_SUMMARY_FIELD_BYTES);
        }
        assert_eq!(notification.options.len(), MAX_OPTIONS);
        assert!(
            notification
                .options
                .iter()
                .all(|(name, value)| name.len() <= MAX_OPTION_BYTES
                    && value.len() <= MAX_OPTION_BYTES)
        );
    }

    #[test]
    fn a_message_cut_to_the_summary_bound_is_marked_and_keeps_its_last_flag_whole() {
        // What a push carries to the alert (APNS `alertFromSummary`, FCM `dataFromSummary`):
        // a 1.6 KB message is cut to 1 KiB here, before the platform's own (marked) fitting,
        // which then finds nothing to cut. The user must see that the text goes on, and no
        // flag may be cut in half (a stray regional-indicator letter).
        let flag = "\u{1F1E9}\u{1F1EA}";
        let body = format!("a{}", flag.repeat(200));
        let mut notification = PushNotification::new("token", "module");
        notification.summary.last_message_body = Some(body.clone());
        bound_notification(&mut notification);
        let cut = notification.summary.last_message_body.unwrap();
        let end = |text: &str| text.chars().rev().take(3).collect::<String>();
        let kept = cut.strip_suffix('\u{2026}');
        assert!(
            kept.is_some(),
            "the cut is not marked: ends {:?}",
            end(&cut)
        );
        let kept = kept.unwrap();
        assert!(
            body.starts_with(kept) && (kept.len() - 1).is_multiple_of(flag.len()),
            "a flag cut in half: ends {:?}",
            end(kept)
        );
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        let mut text = "é".repeat(1000);
        truncate_on_char(&mut text, 1023);
        assert_eq!(text.len(), 1022);
        let mut short = "abc".to_owned();
        truncate_on_char(&mut short, 1024);
        assert_eq!(short, "abc");
    }
}
