//! The registration series: the register/unregister commands by command and result, and the
//! registration store's latency and errors by operation. Counted where they happen (rare next
//! to pushes); the registrations per module are a state gauge (see `state`).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::registered;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CommandLabels {
    command: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OperationLabel {
    operation: &'static str,
}

fn store_latency_histogram() -> Histogram {
    // 0.1 ms … ~3 s: an indexed look-up on SQLite to a slow Redis round trip.
    Histogram::new(exponential_buckets(0.0001, 2.0, 15))
}

/// The registration families, registered once.
#[derive(Clone)]
pub struct RegistrationSeries {
    commands: Family<CommandLabels, Counter>,
    store_latency: Family<OperationLabel, Histogram, fn() -> Histogram>,
    store_errors: Family<OperationLabel, Counter>,
}

impl RegistrationSeries {
    pub(super) fn register(r: &mut Registry) -> Self {
        RegistrationSeries {
            commands: registered(
                r,
                "registration_commands",
                "Registration commands (register, unregister, unknown) by result",
                Family::default(),
            ),
            store_latency: registered(
                r,
                "store_latency_seconds",
                "Time a registration store call took, by operation",
                Family::new_with_constructor(store_latency_histogram as fn() -> Histogram),
            ),
            store_errors: registered(
                r,
                "store_errors",
                "Registration store calls that failed, by operation",
                Family::default(),
            ),
        }
    }

    /// Counts one command (`register`, `unregister`, `unknown`) that ended with `result`.
    pub fn count_command(&self, command: &'static str, result: &'static str) {
        self.commands
            .get_or_create(&CommandLabels { command, result })
            .inc();
    }

    /// Makes the error series of `operations` exist at 0, so that a rate of errors is 0 rather
    /// than absent while the store works.
    pub fn seed_store_errors(&self, operations: &[&'static str]) {
        for &operation in operations {
            let _created = self
                .store_errors
                .get_or_create(&OperationLabel { operation });
        }
    }

    /// Records one store call: how long it took and whether it failed.
    pub fn observe_store(&self, operation: &'static str, took: Duration, failed: bool) {
        let label = OperationLabel { operation };
        self.store_latency
            .get_or_create(&label)
            .observe(took.as_secs_f64());
        if failed {
            self.store_errors.get_or_create(&label).inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::component::LinkState;
    use crate::metrics::{Metrics, ModuleGauges, StateSnapshot};

    #[test]
    fn commands_store_calls_and_registrations_are_exported() {
        let metrics = Metrics::new();
        let series = metrics.registrations();
        series.count_command("register", "completed");
        series.count_command("register", "completed");
        series.count_command("unknown", "not_found");
        series.observe_store("find", Duration::from_millis(2), false);
        series.observe_store("find", Duration::from_millis(3), true);
        let module = ModuleGauges {
            module: "conversations".to_owned(),
            ratelimit_entries: 0,
            dead_tokens: 0,
            wipe_guard_tripped: false,
            provider: Default::default(),
            platform: Default::default(),
            registrations: Some(3),
        };
        let text = metrics.render(&StateSnapshot {
            modules: vec![module],
            in_flight: 0,
            link: LinkState::Connecting,
        });
        for line in [
            "fpush_registration_commands_total{command=\"register\",result=\"completed\"} 2",
            "fpush_registration_commands_total{command=\"unknown\",result=\"not_found\"} 1",
            "fpush_store_latency_seconds_count{operation=\"find\"} 2",
            "fpush_store_errors_total{operation=\"find\"} 1",
            "fpush_registrations{module=\"conversations\"} 3",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
    }
}
