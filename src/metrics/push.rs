//! The series counted per push: received, queued, final outcome, the provider's answer and its
//! latency. The hot path only touches handles resolved once per module ([`ModuleMetrics`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fpush_traits::{DeadTokenReason, Delivered, PushError, Rejection};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::{registered, ModuleLabel};
use crate::outcome::Outcome;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PushLabels {
    module: String,
    outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AnswerLabels {
    module: String,
    reason: AnswerLabel,
}

/// What a provider answered, as a fixed label set (never a string from outside): the kind of
/// [`PushError`], with dead tokens split by [`DeadTokenReason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum AnswerLabel {
    accepted,
    unregistered,
    bad_token,
    not_for_this_app,
    /// Refused before asking the provider: it cannot be a token of the platform.
    implausible,
    throttled,
    timeout,
    transient,
    misconfigured,
    /// A target outside the platform's fence: nothing was sent.
    not_allowed,
    too_large,
    /// The provider refused this one request as wrong.
    rejected,
}

impl AnswerLabel {
    pub const ALL: [AnswerLabel; 12] = [
        AnswerLabel::accepted,
        AnswerLabel::unregistered,
        AnswerLabel::bad_token,
        AnswerLabel::not_for_this_app,
        AnswerLabel::implausible,
        AnswerLabel::throttled,
        AnswerLabel::timeout,
        AnswerLabel::transient,
        AnswerLabel::misconfigured,
        AnswerLabel::not_allowed,
        AnswerLabel::too_large,
        AnswerLabel::rejected,
    ];

    /// The label of one provider call's result.
    pub fn of(result: &Result<Delivered, PushError>) -> Self {
        match result {
            Ok(_) => AnswerLabel::accepted,
            Err(PushError::TokenInvalid(DeadTokenReason::Unregistered)) => {
                AnswerLabel::unregistered
            }
            Err(PushError::TokenInvalid(DeadTokenReason::BadToken)) => AnswerLabel::bad_token,
            Err(PushError::TokenInvalid(DeadTokenReason::NotForThisApp)) => {
                AnswerLabel::not_for_this_app
            }
            Err(PushError::TokenInvalid(DeadTokenReason::Implausible)) => AnswerLabel::implausible,
            Err(PushError::ProviderThrottled { .. } | PushError::ProviderPaused { .. }) => {
                AnswerLabel::throttled
            }
            Err(PushError::Timeout) => AnswerLabel::timeout,
            Err(PushError::Transient(_)) => AnswerLabel::transient,
            Err(PushError::Misconfigured(_)) => AnswerLabel::misconfigured,
            Err(PushError::Rejected { reason, .. }) => match reason {
                Rejection::NotAllowed => AnswerLabel::not_allowed,
                Rejection::TooLarge => AnswerLabel::too_large,
                Rejection::Invalid => AnswerLabel::rejected,
            },
        }
    }
}

fn latency_histogram() -> Histogram {
    // 1 ms … ~16 s: provider round trips, timeouts included.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Process-wide totals per outcome, for the summary log line.
pub(super) type OutcomeTotals = [AtomicU64; Outcome::ALL.len()];

/// The per-push families, registered once.
pub(super) struct PushSeries {
    pushes: Family<PushLabels, Counter>,
    queued: Family<ModuleLabel, Counter>,
    received: Family<ModuleLabel, Counter>,
    answers: Family<AnswerLabels, Counter>,
    latency: Family<ModuleLabel, Histogram, fn() -> Histogram>,
    totals: Arc<OutcomeTotals>,
}

impl PushSeries {
    pub(super) fn register(r: &mut Registry) -> Self {
        PushSeries {
            pushes: registered(
                r,
                "pushes",
                "Pushes by how they ended; the outcomes sum to pushes received",
                Family::default(),
            ),
            queued: registered(
                r,
                "pushes_queued",
                "Pushes held until their token's ratelimit window ends (each ends later with one outcome)",
                Family::default(),
            ),
            received: registered(
                r,
                "pushes_received",
                "Push requests received, by the module they named (\"\" when they reached none)",
                Family::default(),
            ),
            answers: registered(
                r,
                "provider_answers",
                "Provider answers by reason",
                Family::default(),
            ),
            latency: registered(
                r,
                "provider_latency_seconds",
                "Time the provider took per push",
                Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            ),
            totals: Arc::default(),
        }
    }

    /// The totals behind the summary log line, in [`Outcome::ALL`] order.
    pub(super) fn totals(&self) -> [u64; Outcome::ALL.len()] {
        std::array::from_fn(|i| self.totals[i].load(Ordering::Relaxed))
    }

    /// The handles of module `id`, its possible series created at 0.
    pub(super) fn module(&self, id: &str) -> ModuleMetrics {
        let label = ModuleLabel {
            module: id.to_owned(),
        };
        let queued = self.queued.get_or_create_owned(&label);
        let outcomes = self.outcomes(id, Outcome::ends_at_module, Some(queued));
        ModuleMetrics {
            outcomes,
            received: self.received.get_or_create_owned(&label),
            answers: AnswerLabel::ALL
                .iter()
                .map(|reason| {
                    self.answers.get_or_create_owned(&AnswerLabels {
                        module: id.to_owned(),
                        reason: *reason,
                    })
                })
                .collect(),
            latency: self.latency.get_or_create_owned(&label),
        }
    }

    /// The handles of pushes answered before reaching a module (`module=""`).
    pub(super) fn unattributed(&self) -> Unattributed {
        let label = ModuleLabel {
            module: String::new(),
        };
        Unattributed {
            outcomes: self.outcomes("", Outcome::ends_before_module, None),
            received: self.received.get_or_create_owned(&label),
        }
    }

    /// One counter per outcome for `module`: created now for the outcomes `possible` says it
    /// can have, on first use for any other (so a surprise is counted, not lost).
    fn outcomes(
        &self,
        module: &str,
        possible: fn(Outcome) -> bool,
        queued: Option<Counter>,
    ) -> OutcomeCounters {
        let by_outcome = Outcome::ALL
            .iter()
            .map(|outcome| match outcome {
                Outcome::queued => queued.clone(),
                _ if possible(*outcome) => Some(self.pushes.get_or_create_owned(&PushLabels {
                    module: module.to_owned(),
                    outcome: *outcome,
                })),
                _ => None,
            })
            .collect();
        OutcomeCounters {
            by_outcome,
            module: module.to_owned(),
            family: self.pushes.clone(),
            totals: self.totals.clone(),
        }
    }
}

/// Counters by outcome for one `module` label value.
#[derive(Clone)]
struct OutcomeCounters {
    by_outcome: Vec<Option<Counter>>,
    module: String,
    family: Family<PushLabels, Counter>,
    totals: Arc<OutcomeTotals>,
}

impl OutcomeCounters {
    fn count(&self, outcome: Outcome) {
        match &self.by_outcome[outcome.index()] {
            Some(counter) => {
                counter.inc();
            }
            None => {
                let labels = PushLabels {
                    module: self.module.clone(),
                    outcome,
                };
                self.family.get_or_create(&labels).inc();
            }
        }
        self.totals[outcome.index()].fetch_add(1, Ordering::Relaxed);
    }
}

/// Pre-resolved metric handles of one module: what the dispatcher touches per push.
#[derive(Clone)]
pub struct ModuleMetrics {
    outcomes: OutcomeCounters,
    received: Counter,
    answers: Vec<Counter>,
    latency: Histogram,
}

impl std::fmt::Debug for ModuleMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleMetrics")
            .field("module", &self.outcomes.module)
            .finish_non_exhaustive()
    }
}

impl ModuleMetrics {
    /// A push arrived for this module.
    pub fn received(&self) {
        self.received.inc();
    }

    /// Count one outcome: `queued` on `fpush_pushes_queued_total` (the push ends later with
    /// another outcome), every other one on `fpush_pushes_total`.
    pub fn count(&self, outcome: Outcome) {
        self.outcomes.count(outcome);
    }

    /// Record what the provider answered and how long it took.
    pub fn observe_answer(&self, result: &Result<Delivered, PushError>, took: Duration) {
        self.answers[AnswerLabel::of(result) as usize].inc();
        self.latency.observe(took.as_secs_f64());
    }

    /// Handles that count nowhere (for tests and benchmarks that build modules by hand).
    pub fn detached() -> Self {
        super::Metrics::new().module("")
    }
}

/// Handles for pushes answered before any module took them (unknown module, malformed, refused
/// by a front door): each is received and ends at once.
#[derive(Clone)]
pub struct Unattributed {
    outcomes: OutcomeCounters,
    received: Counter,
}

impl std::fmt::Debug for Unattributed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unattributed").finish_non_exhaustive()
    }
}

impl Unattributed {
    /// Count one push that was received and ended with `outcome` before reaching a module.
    pub fn count(&self, outcome: Outcome) {
        self.received.inc();
        self.outcomes.count(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(reason: Rejection) -> PushError {
        let detail = String::new();
        PushError::Rejected { reason, detail }
    }

    #[test]
    fn every_push_error_has_its_own_answer_label() {
        let results = [
            Ok(Delivered::default()),
            Err(PushError::TokenInvalid(DeadTokenReason::Unregistered)),
            Err(PushError::TokenInvalid(DeadTokenReason::BadToken)),
            Err(PushError::TokenInvalid(DeadTokenReason::NotForThisApp)),
            Err(PushError::TokenInvalid(DeadTokenReason::Implausible)),
            Err(PushError::ProviderThrottled { retry_after: None }),
            Err(PushError::Timeout),
            Err(PushError::Transient("reset".into())),
            Err(PushError::Misconfigured("topic".into())),
            Err(rejected(Rejection::NotAllowed)),
            Err(rejected(Rejection::TooLarge)),
            Err(rejected(Rejection::Invalid)),
        ];
        let labels: Vec<_> = results.iter().map(AnswerLabel::of).collect();
        assert_eq!(labels, AnswerLabel::ALL);
        for (i, answer) in AnswerLabel::ALL.iter().enumerate() {
            assert_eq!(*answer as usize, i);
        }
    }
}
