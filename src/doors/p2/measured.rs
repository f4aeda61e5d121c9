//! The registration store as the doors use it: every call timed and its failures counted
//! (`fpush_store_latency_seconds`, `fpush_store_errors_total`), whichever backend answers.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;

use crate::metrics::RegistrationSeries;
use crate::store::{Credentials, Registration, RegistrationKey, RegistrationStore, StoreError};

/// A store whose calls are measured.
pub struct Measured {
    inner: Arc<dyn RegistrationStore>,
    series: RegistrationSeries,
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
        Measured { inner, series }
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
