//! The once-a-minute log line with the pushes by outcome, for operators without Prometheus.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Metrics;
use crate::outcome::Outcome;

/// Log one line a minute with the counts by outcome (only when something happened), and whether
/// ratelimits were decided without Redis.
pub fn spawn_summary_log(metrics: Arc<Metrics>, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let fallbacks = metrics.redis_fallbacks();
        let mut last = (metrics.totals(), fallbacks.total());
        let mut ticker = tokio::time::interval(Duration::from_secs(60));
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let now = (metrics.totals(), fallbacks.total());
            if let Some(line) = summary_line(&now.0, &last.0, now.1.saturating_sub(last.1)) {
                log::info!("last minute: {line}");
            }
            last = now;
        }
    });
}

/// The summary of one minute from the outcome totals at its end and start and the decisions
/// taken without Redis in it; `None` when nothing happened.
fn summary_line(now: &[u64], last: &[u64], fallbacks: u64) -> Option<String> {
    let mut parts: Vec<String> = Outcome::ALL
        .iter()
        .zip(now.iter().zip(last.iter()))
        .filter(|(_, (now, last))| now > last)
        .map(|(outcome, (now, last))| format!("{} {}", outcome.name(), now - last))
        .collect();
    if fallbacks > 0 {
        parts.push(format!(
            "ratelimit: local fallback ({fallbacks} decisions without Redis)"
        ));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_says_when_ratelimits_were_decided_without_redis() {
        let zero = [0; Outcome::ALL.len()];
        let mut now = zero;
        now[Outcome::delivered.index()] = 3;
        assert_eq!(summary_line(&now, &zero, 0).as_deref(), Some("delivered 3"));
        assert_eq!(
            summary_line(&now, &zero, 2).as_deref(),
            Some("delivered 3, ratelimit: local fallback (2 decisions without Redis)")
        );
        assert_eq!(summary_line(&zero, &zero, 0), None);
    }
}
