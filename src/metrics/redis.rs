//! Ratelimit decisions taken without Redis, by cause: counted by the Redis store when they
//! happen (`fpush_redis_fallbacks_total{cause}`), and summed into the per-minute summary.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

/// Why a ratelimit decision was taken locally instead of in Redis: the `cause` label of
/// `fpush_redis_fallbacks_total`, a fixed set (never text from outside).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum FallbackCause {
    /// No connection (refused, reset, no cluster node reachable).
    unreachable,
    /// No answer within the store's timeout.
    timeout,
    /// Keys of one call in different cluster slots.
    crossslot,
    /// Any other refusal or failure.
    error,
}

impl FallbackCause {
    pub const ALL: [FallbackCause; 4] = [
        FallbackCause::unreachable,
        FallbackCause::timeout,
        FallbackCause::crossslot,
        FallbackCause::error,
    ];

    /// Its position in [`FallbackCause::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The label value (and the word in the logs).
    pub fn name(self) -> &'static str {
        match self {
            FallbackCause::unreachable => "unreachable",
            FallbackCause::timeout => "timeout",
            FallbackCause::crossslot => "crossslot",
            FallbackCause::error => "error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct CauseLabel {
    cause: FallbackCause,
}

/// Pre-resolved fallback counters of a Redis store, one per [`FallbackCause`].
#[derive(Clone)]
pub struct RedisFallbacks {
    by_cause: [Counter; FallbackCause::ALL.len()],
}

impl RedisFallbacks {
    /// The handles in `family`, every cause created at 0.
    pub(super) fn in_family(family: &Family<CauseLabel, Counter>) -> Self {
        RedisFallbacks {
            by_cause: FallbackCause::ALL
                .map(|cause| family.get_or_create(&CauseLabel { cause }).clone()),
        }
    }

    /// One decision taken locally.
    pub fn count(&self, cause: FallbackCause) {
        self.by_cause[cause.index()].inc();
    }

    /// Decisions counted so far for `cause`.
    pub fn get(&self, cause: FallbackCause) -> u64 {
        self.by_cause[cause.index()].get()
    }

    /// Decisions counted so far, all causes together.
    pub fn total(&self) -> u64 {
        self.by_cause.iter().map(Counter::get).sum()
    }

    /// Counters that count nowhere (a store built outside the daemon).
    pub fn detached() -> Self {
        RedisFallbacks::in_family(&Family::default())
    }
}

impl std::fmt::Debug for RedisFallbacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisFallbacks")
            .field("total", &self.total())
            .finish()
    }
}
