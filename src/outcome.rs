//! How a push ended: the one vocabulary the modules, the dispatcher's reply table and the
//! metrics share, so none of them has to import another to agree on it.

use prometheus_client::encoding::EncodeLabelValue;

/// How a push ended (or, for `queued`, what happened to it on the way). The names of the final
/// outcomes are the `outcome` label values of `fpush_pushes_total`; `queued` has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    delivered,
    queued,
    ratelimited,
    token_invalid,
    known_dead,
    unknown_module,
    throttled,
    timeout,
    transient,
    misconfigured,
    overloaded,
    bad_request,
    shutdown,
    /// From a full JID or a domain not allowed: never reaches a module's policy or a provider.
    forbidden,
    /// The sending domain used up its fair share (`access.perDomainRate`/`perDomainBurst`).
    domain_limited,
    /// Named a module that a reload removed, within `modules.retiredGrace`.
    retired,
    /// A push IQ over `limits.maxStanzaSize`, or a payload too large for Web Push (refused by
    /// the push2 door, or by the push service: then counted at the module on first use).
    too_large,
    /// A push naming a registration (node and secret) that the store does not hold.
    unknown_registration,
    /// The same, from a store made less than `modules.retiredGrace` ago: answered `wait`, as it
    /// may be the wrong store (see [`crate::store::RegistrationStore::created`]).
    unknown_in_new_store,
    /// The registration store failed or could not be reached: answered `wait`.
    store_failed,
    /// A target the platform may not call (outside `push2.webPushOrigins`): nothing was sent.
    /// Like `rejected`, only the Web Push module ends pushes this way; its series are made on
    /// first use, so that other modules do not show them.
    not_allowed,
    /// The push service refused this one request as wrong (Web Push 400/401/403).
    rejected,
}

impl Outcome {
    pub const ALL: [Outcome; 22] = [
        Outcome::delivered,
        Outcome::queued,
        Outcome::ratelimited,
        Outcome::token_invalid,
        Outcome::known_dead,
        Outcome::unknown_module,
        Outcome::throttled,
        Outcome::timeout,
        Outcome::transient,
        Outcome::misconfigured,
        Outcome::overloaded,
        Outcome::bad_request,
        Outcome::shutdown,
        Outcome::forbidden,
        Outcome::domain_limited,
        Outcome::retired,
        Outcome::too_large,
        Outcome::unknown_registration,
        Outcome::unknown_in_new_store,
        Outcome::store_failed,
        Outcome::not_allowed,
        Outcome::rejected,
    ];

    /// Its position in [`Outcome::ALL`], for per-outcome arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether a push that reached a module can end this way (counted with the module's id).
    pub fn ends_at_module(self) -> bool {
        matches!(
            self,
            Outcome::delivered
                | Outcome::ratelimited
                | Outcome::token_invalid
                | Outcome::known_dead
                | Outcome::throttled
                | Outcome::timeout
                | Outcome::transient
                | Outcome::misconfigured
                | Outcome::overloaded
                | Outcome::shutdown
                | Outcome::retired
        )
    }

    /// Whether a push answered before any module took it can end this way (counted with
    /// `module=""`): a front door or the parser refused it.
    pub fn ends_before_module(self) -> bool {
        matches!(
            self,
            Outcome::unknown_module
                | Outcome::bad_request
                | Outcome::forbidden
                | Outcome::domain_limited
                | Outcome::too_large
                | Outcome::retired
                | Outcome::unknown_registration
                | Outcome::unknown_in_new_store
                | Outcome::store_failed
        )
    }

    /// The label value (and the word in the summary log line).
    pub fn name(self) -> &'static str {
        match self {
            Outcome::delivered => "delivered",
            Outcome::queued => "queued",
            Outcome::ratelimited => "ratelimited",
            Outcome::token_invalid => "token_invalid",
            Outcome::known_dead => "known_dead",
            Outcome::unknown_module => "unknown_module",
            Outcome::throttled => "throttled",
            Outcome::timeout => "timeout",
            Outcome::transient => "transient",
            Outcome::misconfigured => "misconfigured",
            Outcome::overloaded => "overloaded",
            Outcome::bad_request => "bad_request",
            Outcome::shutdown => "shutdown",
            Outcome::forbidden => "forbidden",
            Outcome::domain_limited => "domain_limited",
            Outcome::retired => "retired",
            Outcome::too_large => "too_large",
            Outcome::unknown_registration => "unknown_registration",
            Outcome::unknown_in_new_store => "unknown_in_new_store",
            Outcome::store_failed => "store_failed",
            Outcome::not_allowed => "not_allowed",
            Outcome::rejected => "rejected",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_outcome_at_its_index() {
        for (i, outcome) in Outcome::ALL.iter().enumerate() {
            assert_eq!(outcome.index(), i, "{}", outcome.name());
        }
    }

    #[test]
    fn every_outcome_but_queued_is_final_somewhere() {
        for outcome in Outcome::ALL {
            // Web Push's own endings: counted at its module, their series made on first use.
            let relay = matches!(outcome, Outcome::not_allowed | Outcome::rejected);
            let final_somewhere = outcome.ends_at_module() || outcome.ends_before_module() || relay;
            assert_eq!(
                final_somewhere,
                outcome != Outcome::queued,
                "{}",
                outcome.name()
            );
        }
    }

    #[test]
    fn unknown_module_is_never_a_modules_outcome_and_delivered_never_a_refusal() {
        assert!(!Outcome::unknown_module.ends_at_module());
        assert!(Outcome::unknown_module.ends_before_module());
        assert!(Outcome::delivered.ends_at_module());
        assert!(!Outcome::delivered.ends_before_module());
    }
}
