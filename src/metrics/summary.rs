//! The once-a-minute log line with the pushes by outcome, for operators without Prometheus.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Metrics;
use crate::outcome::Outcome;

/// Log one line a minute with the counts by outcome (only when something happened).
pub fn spawn_summary_log(metrics: Arc<Metrics>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut last = metrics.totals();
        let mut ticker = tokio::time::interval(Duration::from_secs(60));
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let now = metrics.totals();
            let parts: Vec<String> = Outcome::ALL
                .iter()
                .zip(now.iter().zip(last.iter()))
                .filter(|(_, (now, last))| now > last)
                .map(|(outcome, (now, last))| format!("{} {}", outcome.name(), now - last))
                .collect();
            if !parts.is_empty() {
                log::info!("last minute: {}", parts.join(", "));
            }
            last = now;
        }
    });
}
