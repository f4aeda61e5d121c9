//! The registration store as the doors use it: every call timed and its failures counted
//! (`fpush_store_latency_seconds`, `fpush_store_errors_total`) and said in the log, whichever
//! backend answers.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use fpush_http::LoudLog;

use crate::metrics::RegistrationSeries;
use crate::store::{Credentials, Registration, RegistrationKey, RegistrationStore, StoreError};

/// A store whose calls are measured.
pub struct Measured {
    inner: Arc<dyn RegistrationStore>,
    series: RegistrationSeries,
    /// A failing store makes every registering client and every push by node wait: the
    /// operator learns why from a warning, at most one a minute for each kind of failure.
    alarms: LoudLog,
}

/// Every operation a store call is counted under: their error series exist from start-up at 0.
const OPERATIONS: [&str; 11] = [
    "register",
    "find",
    "touch",
    "unregister",
    "remove",
    "clear_second_token",
    "sweep",
    "count_unused",
    "sweeps_skipped_for",
    "record_sweeps_skipped",
    "counts",
];

impl Measured {
    pub fn new(inner: Arc<dyn RegistrationStore>, series: RegistrationSeries) -> Self {
        series.seed_store_errors(&OPERATIONS);
        let alarms = LoudLog::new("registration store");
        Measured {
            inner,
            series,
            alarms,
        }
    }

    async fn timed<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call.await;
        self.series
            .observe_store(operation, started.elapsed(), result.is_err());
        if let Err(error) = &result {
            let cause = match error {
                StoreError::Unavailable(_) => "unavailable",
                StoreError::Full(_) => "full",
                StoreError::Unusable(_) => "unusable",
            };
            let text = format_args!("{operation} failed ({error})");
            self.alarms.log(log::Level::Warn, cause, &text);
        }
        result
    }
}

#[async_trait]
impl RegistrationStore for Measured {
    async fn register(&self, registration: Registration) -> Result<Credentials, StoreError> {
        self.timed("register", self.inner.register(registration))
            .await
    }

    async fn find(&self, domain: &str, node: &str) -> Result<Option<Registration>, StoreError> {
        self.timed("find", self.inner.find(domain, node)).await
    }

    async fn touch(&self, domain: &str, node: &str) -> Result<(), StoreError> {
        self.timed("touch", self.inner.touch(domain, node)).await
    }

    async fn unregister(&self, key: &RegistrationKey) -> Result<bool, StoreError> {
        self.timed("unregister", self.inner.unregister(key)).await
    }

    async fn created(&self) -> Result<Option<SystemTime>, StoreError> {
        self.inner.created().await
    }

    async fn remove(&self, domain: &str, node: &str, token: &str) -> Result<bool, StoreError> {
        self.timed("remove", self.inner.remove(domain, node, token))
            .await
    }

    async fn clear_second_token(
        &self,
        domain: &str,
        node: &str,
        second_token: &str,
    ) -> Result<(), StoreError> {
        self.timed(
            "clear_second_token",
            self.inner.clear_second_token(domain, node, second_token),
        )
        .await
    }

    async fn sweep(&self, before: SystemTime) -> Result<u64, StoreError> {
        self.timed("sweep", self.inner.sweep(before)).await
    }

    async fn count_unused(&self, before: SystemTime) -> Result<u64, StoreError> {
        self.timed("count_unused", self.inner.count_unused(before))
            .await
    }

    async fn sweeps_skipped_for(&self) -> Result<Duration, StoreError> {
        self.timed("sweeps_skipped_for", self.inner.sweeps_skipped_for())
            .await
    }

    async fn record_sweeps_skipped(&self, skipped: Option<Duration>) -> Result<(), StoreError> {
        let recorded = self.inner.record_sweeps_skipped(skipped);
        self.timed("record_sweeps_skipped", recorded).await
    }

    async fn counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.timed("counts", self.inner.counts()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doors::p2::tests::EmptyStore;
    use crate::metrics::Metrics;

    #[tokio::test]
    async fn a_failing_store_is_said_in_a_warning_at_most_once_a_minute() {
        let metrics = Metrics::new();
        let store = Measured::new(
            Arc::new(EmptyStore::failing()),
            metrics.registrations().clone(),
        );
        crate::test_log::collect("fpush_http::loud_log");
        for _ in 0..3 {
            assert!(store.find("example.org", "node").await.is_err());
        }
        let lines = crate::test_log::collected();
        assert_eq!(lines.len(), 1, "{lines:#?}");
        assert!(
            lines[0]
                .contains("registration store: find failed (registration store unavailable: down)"),
            "{lines:#?}"
        );
    }
}
