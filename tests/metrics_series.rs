//! What a platform reports about itself (`PushTrait::snapshot`) reaches `/metrics` at scrape
//! time: credential expiry, token-refresh failures that only ever grow, pool and pause series
//! while the pool exists; a module gone from the set takes its gauges with it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use fpush::component::LinkState;
use fpush::metrics::{Metrics, StateSnapshot};
use fpush::modules::{Module, ModuleSet};
use fpush::ratelimit::RatelimitConfig;
use fpush_traits::{
    async_trait, ConnectionGauge, Delivered, PoolGauges, ProviderSnapshot, PushError,
    PushNotification, PushTrait,
};

/// A platform whose snapshot the test sets.
#[derive(Default)]
struct Reporting {
    refresh_failures: AtomicU64,
    pool: Mutex<Option<PoolGauges>>,
}

#[async_trait]
impl PushTrait for Reporting {
    async fn send(&self, _: &PushNotification) -> Result<Delivered, PushError> {
        Ok(Delivered::default())
    }

    fn snapshot(&self) -> ProviderSnapshot {
        ProviderSnapshot {
            credentials_expire_at: Some(UNIX_EPOCH + Duration::from_secs(1_900_000_000)),
            token_refresh_failures: self.refresh_failures.load(Ordering::Relaxed),
            pool: self.pool.lock().unwrap().clone(),
        }
    }
}

fn module_set(metrics: &Metrics, id: &str, push: Arc<dyn PushTrait>) -> ModuleSet {
    let module = Module::new(
        id,
        "apple",
        push,
        RatelimitConfig {
            enabled: false,
            window: Duration::from_secs(20),
            cleanup_interval: Duration::from_secs(300),
        },
        Duration::from_secs(3600),
        metrics.module(id),
    );
    ModuleSet::from_modules(vec![(module, true)])
}

fn scrape(metrics: &Metrics, modules: &ModuleSet) -> String {
    metrics.render(&StateSnapshot {
        modules: modules.gauges(),
        in_flight: 0,
        link: LinkState::Down,
    })
}

/// The value of the line starting with `series` (name and labels as rendered).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

#[test]
fn a_platforms_snapshot_becomes_expiry_refresh_failure_and_pool_series() {
    let metrics = Metrics::new();
    let platform = Arc::new(Reporting::default());
    platform.refresh_failures.store(3, Ordering::Relaxed);
    let modules = module_set(&metrics, "ios", platform.clone());

    let text = scrape(&metrics, &modules);
    let expiry = r#"fpush_credential_expiry_timestamp_seconds{module="ios"}"#;
    assert_eq!(value(&text, expiry), Some(1_900_000_000.0), "{text}");
    let failures = r#"fpush_token_refresh_failures_total{module="ios"}"#;
    assert_eq!(value(&text, failures), Some(3.0), "{text}");
    assert!(
        !text.contains("fpush_pool_connections{"),
        "no pool yet\n{text}"
    );

    let busy = ConnectionGauge {
        streams_in_flight: 7,
        max_streams: 1000,
    };
    *platform.pool.lock().unwrap() = Some(PoolGauges {
        connections: vec![ConnectionGauge::default(), busy],
        ..PoolGauges::default()
    });
    let text = scrape(&metrics, &modules);
    let pool = r#"fpush_pool_connections{module="ios"}"#;
    assert_eq!(value(&text, pool), Some(2.0), "{text}");
    let streams = r#"fpush_pool_streams_in_flight{module="ios",connection="1"}"#;
    assert_eq!(value(&text, streams), Some(7.0), "{text}");
    let limit = r#"fpush_pool_max_streams{module="ios",connection="1"}"#;
    assert_eq!(value(&text, limit), Some(1000.0), "{text}");
}

#[test]
fn the_pools_openings_and_the_providers_pause_become_series() {
    let metrics = Metrics::new();
    let platform = Arc::new(Reporting::default());
    let modules = module_set(&metrics, "ios", platform.clone());
    let opened = r#"fpush_pool_connections_opened_total{module="ios"}"#;
    let pause = r#"fpush_provider_pause_seconds{module="ios"}"#;
    let pauses = r#"fpush_provider_pauses_total{module="ios"}"#;
    let text = scrape(&metrics, &modules);
    for series in [opened, pause, pauses] {
        assert!(!text.contains(series), "no pool, no {series}\n{text}");
    }

    *platform.pool.lock().unwrap() = Some(PoolGauges::default());
    let text = scrape(&metrics, &modules);
    assert_eq!(value(&text, opened), Some(0.0), "{text}");
    assert_eq!(value(&text, pause), Some(0.0), "{text}");
    assert_eq!(value(&text, pauses), Some(0.0), "{text}");

    *platform.pool.lock().unwrap() = Some(PoolGauges {
        connections_opened: 3,
        paused_for: Some(Duration::from_millis(29_500)),
        pauses: 1,
        ..PoolGauges::default()
    });
    let text = scrape(&metrics, &modules);
    assert_eq!(value(&text, opened), Some(3.0), "{text}");
    assert_eq!(
        value(&text, pause),
        Some(30.0),
        "seconds left, rounded up\n{text}"
    );
    assert_eq!(value(&text, pauses), Some(1.0), "{text}");

    // A reload rebuilt the platform: its counts start over, the counters go on.
    let rebuilt = Arc::new(Reporting::default());
    *rebuilt.pool.lock().unwrap() = Some(PoolGauges {
        connections_opened: 1,
        ..PoolGauges::default()
    });
    let modules = module_set(&metrics, "ios", rebuilt);
    let text = scrape(&metrics, &modules);
    assert_eq!(value(&text, opened), Some(4.0), "{text}");
    assert_eq!(value(&text, pause), Some(0.0), "the pause ended\n{text}");
    assert_eq!(value(&text, pauses), Some(1.0), "{text}");
}

#[test]
fn token_refresh_failures_only_grow_across_a_rebuilt_platform() {
    let metrics = Metrics::new();
    let platform = Arc::new(Reporting::default());
    let modules = module_set(&metrics, "android", platform.clone());
    let failures = r#"fpush_token_refresh_failures_total{module="android"}"#;
    assert_eq!(value(&scrape(&metrics, &modules), failures), Some(0.0));

    platform.refresh_failures.store(5, Ordering::Relaxed);
    assert_eq!(value(&scrape(&metrics, &modules), failures), Some(5.0));

    // A reload rebuilt the platform: its own count starts over, the series goes on.
    let rebuilt = Arc::new(Reporting::default());
    rebuilt.refresh_failures.store(1, Ordering::Relaxed);
    let modules = module_set(&metrics, "android", rebuilt);
    assert_eq!(value(&scrape(&metrics, &modules), failures), Some(6.0));
}

#[test]
fn a_rebuilt_pool_that_counted_past_the_old_one_before_the_scrape_is_counted_whole() {
    let metrics = Metrics::new();
    let platform = Arc::new(Reporting::default());
    *platform.pool.lock().unwrap() = Some(PoolGauges {
        connections_opened: 5,
        pauses: 2,
        ..PoolGauges::default()
    });
    let modules = module_set(&metrics, "ios", platform);
    scrape(&metrics, &modules);

    // A reload rebuilt the platform, and it counted more than the old one had before the next
    // scrape: all of it is new.
    let rebuilt = Arc::new(Reporting::default());
    *rebuilt.pool.lock().unwrap() = Some(PoolGauges {
        connections_opened: 8,
        pauses: 3,
        ..PoolGauges::default()
    });
    let modules = module_set(&metrics, "ios", rebuilt);
    let text = scrape(&metrics, &modules);
    let opened = r#"fpush_pool_connections_opened_total{module="ios"}"#;
    let pauses = r#"fpush_provider_pauses_total{module="ios"}"#;
    assert_eq!(value(&text, opened), Some(13.0), "{text}");
    assert_eq!(value(&text, pauses), Some(5.0), "{text}");
    // The same platform scraped again adds only what it counted since.
    assert_eq!(value(&scrape(&metrics, &modules), opened), Some(13.0));
}

#[test]
fn a_module_gone_from_the_set_takes_its_gauges_along() {
    let metrics = Metrics::new();
    let before = module_set(&metrics, "old", Arc::new(Reporting::default()));
    let text = scrape(&metrics, &before);
    assert!(
        text.contains(r#"fpush_dead_tokens{module="old"}"#),
        "{text}"
    );

    let after = module_set(&metrics, "new", Arc::new(Reporting::default()));
    let text = scrape(&metrics, &after);
    for gauge in [
        "fpush_dead_tokens",
        "fpush_ratelimit_entries",
        "fpush_wipe_guard_tripped",
        "fpush_credential_expiry_timestamp_seconds",
    ] {
        assert!(
            !text.contains(&format!("{gauge}{{module=\"old\"}}")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{gauge}{{module=\"new\"}}")),
            "{text}"
        );
    }
    // Counters stay: what happened is not undone by a reload.
    assert!(
        text.contains(r#"fpush_pushes_received_total{module="old"}"#),
        "{text}"
    );
}

#[test]
fn a_platform_built_where_a_dropped_one_lived_is_still_a_new_source() {
    let metrics = Metrics::new();
    let opened = r#"fpush_pool_connections_opened_total{module="ios"}"#;
    let mut total = 0;
    // Two reloads between scrapes, again and again: each platform is gone before the next is
    // built, so the allocator may hand its memory to the next one.
    for connections_opened in 1..=20 {
        let platform = Arc::new(Reporting::default());
        *platform.pool.lock().unwrap() = Some(PoolGauges {
            connections_opened,
            ..PoolGauges::default()
        });
        let modules = module_set(&metrics, "ios", platform);
        total += connections_opened;
        let text = scrape(&metrics, &modules);
        assert_eq!(value(&text, opened), Some(total as f64), "{text}");
    }
}
