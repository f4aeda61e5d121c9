//! A module's per-push policy: what it decides before the provider is called ([`Module::admit`])
//! and what it learns from the answer ([`Module::settle`]).
//!
//! Both take the target's key — what the front door says identifies the target (today the device
//! token) — so that the ratelimit and the dead-token memory never need to know which door a push
//! came through.

use std::sync::Arc;
use std::time::Duration;

use fpush_traits::{token_prefix, DeadTokenReason, Delivered, PushError, Rejection};

use super::Module;
use crate::outcome::Outcome;
use crate::ratelimit::{Admission, Decision};

/// How long a token the provider throttled without a `Retry-After` is held: APNS documents no
/// `Retry-After` for its per-token 429, and asking again at once would only be throttled again.
pub const THROTTLE_HOLD: Duration = Duration::from_secs(60);

/// A module's answer to "may this push go out?": at once on the memory backend, after a round
/// trip on the Redis backend.
pub enum Admitting {
    Now(Admission),
    Shared(SharedAdmission),
}

/// An admission being decided in Redis.
pub struct SharedAdmission {
    module: Arc<Module>,
    key: String,
}

impl SharedAdmission {
    /// Resolves within the store's timeout: when Redis fails, is slow or is known to be down,
    /// this instance decides alone (counted as a fallback).
    pub async fn decided(self) -> Admission {
        let module = &self.module;
        let admission = module.ratelimit.admit(&module.dead_tokens, &self.key).await;
        module.note_admission(&self.key, admission);
        admission
    }
}

impl Module {
    /// Whether a push for `key` goes out now, waits for the end of its ratelimit window, is
    /// refused because one is already waiting, or is known dead: one call on either backend.
    /// Counts nothing: the caller counts a push as `queued` once it holds a place in the queue,
    /// and the final outcome of every push with [`Module::count`].
    pub fn admit(self: &Arc<Self>, key: &str) -> Admitting {
        match self.ratelimit.admit_at_once(&self.dead_tokens, key) {
            Some(admission) => {
                self.note_admission(key, admission);
                Admitting::Now(admission)
            }
            None => Admitting::Shared(SharedAdmission {
                module: self.clone(),
                key: key.to_owned(),
            }),
        }
    }

    /// Like [`Module::admit`], but the ratelimit is `limiter`'s (none when `None`), decided at
    /// once: a push2 push through this module is held only by push2's own ratelimit (the relay's
    /// module, always on the memory backend), and an urgent push (a call, a `high` push) by none.
    /// A token the provider throttled stays held for every push (more would only be throttled
    /// again, and may pause the whole module). The dead-token memory asked is this instance's.
    pub fn admit_limited_by(&self, key: &str, limiter: Option<&Module>) -> Admitting {
        let admission = if self.dead_tokens.is_dead(key) {
            Admission::KnownDead
        } else if self.is_held(key) {
            Admission::Held
        } else {
            Admission::Decided(limiter.map_or(Decision::Send, |relay| relay.ratelimit.check(key)))
        };
        self.note_admission(key, admission);
        Admitting::Now(admission)
    }

    /// Takes back the queued send at `at` that [`Module::admit`] recorded for `key`: the push
    /// was answered without being queued.
    pub fn unqueue(&self, key: &str, at: tokio::time::Instant) {
        self.ratelimit.unqueue(key, at);
    }

    /// Whether the provider throttled `key` and its pause is not over (see [`Module::settle`]).
    pub fn is_held(&self, key: &str) -> bool {
        self.ratelimit.is_held(key)
    }

    fn note_admission(&self, key: &str, admission: Admission) {
        match admission {
            Admission::Decided(Decision::SendAt(_)) => {
                log::debug!("module {}: push for {}… queued", self.id, token_prefix(key));
            }
            Admission::Decided(Decision::Reject) => {
                log::debug!(
                    "module {}: push for {}… ratelimited",
                    self.id,
                    token_prefix(key)
                );
            }
            Admission::KnownDead => {
                log::debug!("module {}: {}… is known dead", self.id, token_prefix(key));
            }
            Admission::Held => {
                log::debug!(
                    "module {}: {}… is held by the provider",
                    self.id,
                    token_prefix(key)
                );
            }
            Admission::Decided(Decision::Send) => {}
        }
    }

    /// Learns from the provider's answer for `key` (dead-token memory, wipe guard) and says how
    /// the push ended. `took` is how long the provider call lasted. `limiter` is the module
    /// whose ratelimit admitted the push when that is not only this one (push2's relay, see
    /// [`crate::doors::Target::ratelimited_by`]): a target that is not to be ratelimited is
    /// forgotten in both.
    pub fn settle(
        &self,
        key: &str,
        result: &Result<Delivered, PushError>,
        took: Duration,
        limiter: Option<&Module>,
    ) -> Outcome {
        self.metrics.observe_answer(result, took);
        match result {
            Ok(delivered) => {
                self.wipe_guard.record_success();
                if let Some(id) = &delivered.provider_id {
                    log::debug!(
                        "module {}: push for {}… delivered as {id}",
                        self.id,
                        token_prefix(key)
                    );
                }
                Outcome::delivered
            }
            Err(PushError::TokenInvalid(reason)) => self.settle_dead(key, *reason, limiter),
            Err(PushError::ProviderThrottled { retry_after }) => {
                // Too many pushes to this token: hold only it, until the provider's time.
                self.wipe_guard.record_other();
                let pause = retry_after.unwrap_or(THROTTLE_HOLD);
                self.ratelimit.hold(key, pause);
                log::debug!(
                    "module {}: push for {}… throttled; holding the token for {}s",
                    self.id,
                    token_prefix(key),
                    pause.as_secs()
                );
                Outcome::throttled
            }
            Err(PushError::ProviderPaused { .. }) => {
                // The whole module pauses (its client refuses at once until then): no token
                // is held, as none is at fault.
                self.wipe_guard.record_other();
                Outcome::throttled
            }
            Err(error) => {
                self.wipe_guard.record_other();
                // Per push at debug only: the platform logs the cause (at most once a minute)
                // and the summary line counts these, so a failing provider cannot flood the log.
                log::debug!(
                    "module {}: push for {}… failed: {error}",
                    self.id,
                    token_prefix(key)
                );
                match error {
                    PushError::Timeout => Outcome::timeout,
                    PushError::Misconfigured(_) => Outcome::misconfigured,
                    PushError::Rejected { reason, .. } => {
                        self.settle_rejected(key, *reason, limiter)
                    }
                    PushError::Transient(_)
                    | PushError::TokenInvalid(_)
                    | PushError::ProviderThrottled { .. }
                    | PushError::ProviderPaused { .. } => Outcome::transient,
                }
            }
        }
    }

    /// One request refused as it stands: the target is neither dead nor the module broken, so
    /// nothing is remembered; a fenced target is not ratelimited either (it never cost a call).
    fn settle_rejected(&self, key: &str, reason: Rejection, limiter: Option<&Module>) -> Outcome {
        match reason {
            Rejection::NotAllowed => {
                self.forget_limit(key, limiter);
                Outcome::not_allowed
            }
            Rejection::TooLarge => Outcome::too_large,
            Rejection::Invalid => Outcome::rejected,
        }
    }

    /// Forgets `key` in this module's ratelimit and in `limiter`'s, the one that admitted the
    /// push: a push2 push is held by the relay's ratelimit, not by its module's.
    fn forget_limit(&self, key: &str, limiter: Option<&Module>) {
        self.ratelimit.forget(key);
        if let Some(limiter) = limiter.filter(|limiter| !std::ptr::eq(*limiter, self)) {
            limiter.ratelimit.forget(key);
        }
    }

    /// A token the provider declared dead: remembered and answered dead, unless "not for this
    /// app" or "bad token" answers dominate the module (then it is the operator's mistake, not
    /// the tokens': a wrong topic or project, or a wrong APNS `environment`, which Apple
    /// answers `BadDeviceToken` for every token).
    fn settle_dead(&self, key: &str, reason: DeadTokenReason, limiter: Option<&Module>) -> Outcome {
        match reason {
            // Refused locally: answered dead, but neither remembered nor ratelimited (anyone can
            // send such tokens by the thousand).
            DeadTokenReason::Implausible => {
                self.forget_limit(key, limiter);
                return Outcome::token_invalid;
            }
            DeadTokenReason::NotForThisApp | DeadTokenReason::BadToken => {
                if self.wipe_guard.record_token_refused(key) {
                    self.alarms.log(
                        log::Level::Error,
                        "wipe guard",
                        &"the provider says most tokens are not this app's (another app's, or \
                          not valid here); check its topic/project and environment. Answering \
                          wait instead of disabling registrations",
                    );
                    return Outcome::misconfigured;
                }
            }
            DeadTokenReason::Unregistered => self.wipe_guard.record_other(),
        }
        log::debug!(
            "module {}: token {}… is dead ({reason:?}); disabling it",
            self.id,
            token_prefix(key)
        );
        self.dead_tokens.mark_dead(key);
        Outcome::token_invalid
    }

    /// Counts how one push of this module ended.
    pub fn count(&self, outcome: Outcome) {
        self.metrics.count(outcome);
    }

    /// Counts a push that named this module.
    pub fn count_received(&self) {
        self.metrics.received();
    }
}

#[cfg(test)]
mod tests {
    use fpush_traits::{async_trait, PushNotification, PushTrait};

    use super::*;
    use crate::metrics::ModuleMetrics;
    use crate::modules::wipe_guard::MIN_TOKENS;
    use crate::modules::{build, platforms, ModuleSet};
    use crate::ratelimit::RatelimitConfig;

    struct Never;

    #[async_trait]
    impl PushTrait for Never {
        async fn send(&self, _: &PushNotification) -> Result<Delivered, PushError> {
            Err(PushError::Transient("not in these tests".into()))
        }
    }

    fn module() -> Arc<Module> {
        let ratelimit = RatelimitConfig::default();
        let remember = Duration::from_secs(3600);
        let metrics = ModuleMetrics::detached();
        Arc::new(Module::new(
            "m",
            "demo",
            Arc::new(Never),
            ratelimit,
            remember,
            metrics,
        ))
    }

    fn settle(module: &Module, key: &str, result: Result<Delivered, PushError>) -> Outcome {
        module.settle(key, &result, Duration::ZERO, Some(module))
    }

    fn refused(reason: DeadTokenReason) -> Result<Delivered, PushError> {
        Err(PushError::TokenInvalid(reason))
    }

    fn known_dead(module: &Arc<Module>, key: &str) -> bool {
        matches!(module.admit(key), Admitting::Now(Admission::KnownDead))
    }

    #[tokio::test(start_paused = true)]
    async fn each_answer_ends_the_push_as_the_reply_table_expects() {
        let module = module();
        let cases = [
            (Ok(Delivered::default()), Outcome::delivered),
            (
                refused(DeadTokenReason::Unregistered),
                Outcome::token_invalid,
            ),
            (refused(DeadTokenReason::BadToken), Outcome::token_invalid),
            (
                refused(DeadTokenReason::NotForThisApp),
                Outcome::token_invalid,
            ),
            (
                refused(DeadTokenReason::Implausible),
                Outcome::token_invalid,
            ),
            (Err(PushError::Timeout), Outcome::timeout),
            (Err(PushError::Transient("5xx".into())), Outcome::transient),
            (
                Err(PushError::Misconfigured("topic".into())),
                Outcome::misconfigured,
            ),
            (
                Err(PushError::ProviderThrottled { retry_after: None }),
                Outcome::throttled,
            ),
        ];
        for (i, (result, expected)) in cases.into_iter().enumerate() {
            let key = format!("token-{i}");
            assert_eq!(settle(&module, &key, result), expected, "{key}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn only_dead_tokens_are_remembered_dead() {
        let module = module();
        settle(&module, "gone", refused(DeadTokenReason::Unregistered));
        settle(&module, "odd", refused(DeadTokenReason::Implausible));
        settle(&module, "slow", Err(PushError::Timeout));
        settle(
            &module,
            "broken",
            Err(PushError::Misconfigured("key".into())),
        );
        assert!(known_dead(&module, "gone"));
        assert!(!known_dead(&module, "odd"));
        assert!(!known_dead(&module, "slow"));
        assert!(!known_dead(&module, "broken"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wave_of_foreign_tokens_is_answered_wait_and_not_remembered_until_a_delivery() {
        let module = module();
        let not_ours = || refused(DeadTokenReason::NotForThisApp);
        for i in 0..MIN_TOKENS - 1 {
            let outcome = settle(&module, &format!("wave-{i}"), not_ours());
            assert_eq!(outcome, Outcome::token_invalid, "{i}");
        }
        for i in MIN_TOKENS - 1..MIN_TOKENS * 2 {
            let key = format!("wave-{i}");
            assert_eq!(settle(&module, &key, not_ours()), Outcome::misconfigured);
            assert!(!known_dead(&module, &key), "{key}");
        }
        // Gone for real while the guard holds: still a dead token.
        let gone = refused(DeadTokenReason::Unregistered);
        assert_eq!(settle(&module, "gone", gone), Outcome::token_invalid);
        assert!(known_dead(&module, "gone"));

        assert_eq!(
            settle(&module, "fine", Ok(Delivered::default())),
            Outcome::delivered
        );
        assert_eq!(settle(&module, "late", not_ours()), Outcome::token_invalid);
        assert!(known_dead(&module, "late"));
    }

    /// The demo module `demo` built from settings whose platform block is `demo`, on a reload of
    /// `previous` when given.
    fn built(demo: &str, previous: Option<&ModuleSet>) -> ModuleSet {
        let text = format!(
            r#"{{
  "component": {{ "componentHostname": "push.example.org", "componentKey": "secret",
                  "serverHostname": "127.0.0.1", "serverPort": 5347 }},
  "pushModules": {{ "demo": {{ "type": "demo", "is_default_module": true, "demo": {demo} }} }}
}}"#
        );
        let metrics = crate::metrics::Metrics::new();
        let loaded = crate::config::parse(&text, &platforms()).unwrap();
        build(&loaded.settings, &metrics, previous).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_with_new_platform_settings_keeps_the_wipe_guard_and_dead_tokens() {
        let first = built(r#"{ "delay": "0s" }"#, None);
        let demo = first.lookup(None).unwrap().clone();
        settle(&demo, "gone", refused(DeadTokenReason::Unregistered));
        for i in 0..MIN_TOKENS {
            settle(
                &demo,
                &format!("wave-{i}"),
                refused(DeadTokenReason::NotForThisApp),
            );
        }
        assert!(first.gauges()[0].wipe_guard_tripped);

        let second = built(r#"{ "delay": "1ms" }"#, Some(&first));
        second.spawn_sweepers(Some(&first));
        let demo = second.lookup(None).unwrap().clone();
        assert!(second.gauges()[0].wipe_guard_tripped);
        assert!(known_dead(&demo, "gone"));
        let late = refused(DeadTokenReason::NotForThisApp);
        assert_eq!(settle(&demo, "late", late), Outcome::misconfigured);
    }
}
