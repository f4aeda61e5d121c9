//! What an operator watches: counters from events, gauges from snapshots, the once-a-minute
//! summary line, and the `/metrics`, `/health`, `/ready` listener.
//!
//! The hot path only touches pre-resolved handles ([`ModuleMetrics`]): one atomic add per
//! outcome, no label lookup per push. Gauges that describe state (cache sizes, the link, the
//! platforms' own state) are read when scraped. This module imports nothing above it: the
//! daemon hands it the state through [`Observed`].

mod listener;
mod push;
mod redis;
mod registrations;
mod slots;
mod state;
mod summary;

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

pub use listener::{serve, serve_on, ListenerLimits};
pub use push::{AnswerLabel, ModuleMetrics, Unattributed};
pub use redis::{FallbackCause, RedisFallbacks};
pub use registrations::RegistrationSeries;
pub use state::{ModuleGauges, PlatformIdentity, StateSnapshot};
pub use summary::spawn_summary_log;

use crate::outcome::Outcome;
use push::PushSeries;
use state::StateSeries;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ModuleLabel {
    module: String,
}

/// Registers a metric and hands it back, so that the series read as a list.
fn registered<M>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M
where
    M: prometheus_client::registry::Metric + Clone,
{
    registry.register(name, help, metric.clone());
    metric
}

/// Every metric fpush exports, and the totals behind the summary log line.
pub struct Metrics {
    registry: Registry,
    per_push: PushSeries,
    state: StateSeries,
    unattributed: Unattributed,
    registrations: RegistrationSeries,
    /// One scrape at a time: the state gauges are cleared and set again for each.
    rendering: Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// The metrics of this process (made once at start-up: it records the start time).
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::default();
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |since| since.as_secs_f64());
        let start_time = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        start_time.set(started);
        registry.register(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds",
            start_time,
        );
        let ours = registry.sub_registry_with_prefix("fpush");
        ours.register(
            "build",
            "The running fpush version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let per_push = PushSeries::register(ours);
        let state = StateSeries::register(ours);
        let unattributed = per_push.unattributed();
        let registrations = RegistrationSeries::register(ours);
        Arc::new(Metrics {
            registry,
            per_push,
            state,
            unattributed,
            registrations,
            rendering: Mutex::default(),
        })
    }

    /// The handles for module `id`, its series created at 0 (shared on later calls).
    pub fn module(&self, id: &str) -> ModuleMetrics {
        self.state.add_module(id);
        self.per_push.module(id)
    }

    /// Counters for pushes answered before reaching any module.
    pub fn unattributed(&self) -> &Unattributed {
        &self.unattributed
    }

    /// The series of registration commands and of the registration store.
    pub fn registrations(&self) -> &RegistrationSeries {
        &self.registrations
    }

    pub fn count_reload(&self, ok: bool) {
        self.state.count_reload(ok);
    }

    pub fn count_reconnect(&self) {
        self.state.count_reconnect();
    }

    /// The handles a Redis store counts its fallbacks with.
    pub fn redis_fallbacks(&self) -> RedisFallbacks {
        self.state.redis_fallbacks()
    }

    /// Process-wide totals per outcome, in [`Outcome::ALL`] order (`queued` included).
    pub fn totals(&self) -> [u64; Outcome::ALL.len()] {
        self.per_push.totals()
    }

    /// The OpenMetrics text exposition, with the state series set from `state`.
    pub fn render(&self, state: &StateSnapshot) -> String {
        self.render_read(&|| state.clone())
    }

    /// The OpenMetrics text exposition, with the state series set from the state `read` returns.
    /// `read` is called within the one scrape at a time: a state read before another scrape's
    /// but applied after it would bring back lower counts, which the followed counters take
    /// for a platform counting afresh and add again.
    pub fn render_read(&self, read: &dyn Fn() -> StateSnapshot) -> String {
        let _one_at_a_time = self
            .rendering
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.state.apply(&read());
        let mut out = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            log::error!("cannot render metrics: {error}");
        }
        out
    }
}

/// What the HTTP listener reads when asked: the counters, and a way to read the state now
/// (given by the daemon, so that this module needs to know nothing of the modules or the link).
pub struct Observed {
    pub metrics: Arc<Metrics>,
    pub state: Arc<dyn Fn() -> StateSnapshot + Send + Sync>,
}
