//! The top-level `store` section: where registrations live (the p2 and tigase doors) and their
//! bounds. Read here, checked here, so that the rest of the settings code only hooks it in.

use std::path::PathBuf;
use std::time::Duration;

use fpush_traits::settings::duration;
use serde::Deserialize;

use super::document::Document;
use super::{days, number, values};

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// `store`: the registration store's backend and bounds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[serde(expecting = "an object with `backend`, `path` and the store's bounds")]
pub struct StoreSettings {
    #[serde(default)]
    pub backend: StoreBackend,
    /// The SQLite file; required with the `sqlite` backend.
    pub path: Option<PathBuf>,
    /// Registrations per account; one more replaces the least recently used.
    #[serde(
        default = "number::<20>",
        deserialize_with = "values::count::<_, 10_000>"
    )]
    pub max_per_account: usize,
    /// Registrations per sending domain; beyond it new ones are refused.
    #[serde(default = "number::<1_000_000>")]
    #[serde(deserialize_with = "values::count::<_, 1_000_000_000>")]
    pub max_per_domain: usize,
    /// Registrations in all; beyond it new ones are refused. Bounded by default: the component
    /// takes registrations from any federated domain, and domains cost an outsider little.
    #[serde(default = "max_total", deserialize_with = "optional_count")]
    pub max_total: Option<usize>,
    /// Registrations not pushed to for this long are removed.
    #[serde(default = "days::<180>", deserialize_with = "duration")]
    pub expire_after: Duration,
}

/// `store.backend`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// One file, embedded: nothing to install.
    #[default]
    Sqlite,
    /// The `redis` section's Redis, shared by several fpush instances.
    Redis,
}

fn max_total() -> Option<usize> {
    Some(10_000_000)
}

fn optional_count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    values::count::<_, 1_000_000_000>(d).map(Some)
}

/// The checks no type can express: a path for SQLite, a `redis` section for Redis, sane bounds.
pub(crate) fn check(doc: &mut Document, store: &StoreSettings, has_redis: bool) {
    match store.backend {
        StoreBackend::Sqlite if store.path.as_ref().is_none_or(|p| p.as_os_str().is_empty()) => {
            let message = "missing: the sqlite backend needs its file, e.g. \"/var/lib/fpush/registrations.sqlite3\"";
            doc.error("store.path", message);
        }
        StoreBackend::Redis if !has_redis => {
            let message =
                "the redis backend needs the top-level `redis` section (`url` or `cluster`)";
            doc.error("store.backend", message);
        }
        _ => {}
    }
    let counts = [
        ("store.maxPerAccount", store.max_per_account),
        ("store.maxPerDomain", store.max_per_domain),
        ("store.maxTotal", store.max_total.unwrap_or(1)),
    ];
    for (path, _) in counts.iter().filter(|(_, value)| *value == 0) {
        let message = "must be at least 1 (0 would refuse every registration)";
        doc.error(path, message);
    }
    // The duration reader caps it at a year already.
    if store.expire_after < DAY {
        let message = "must be at least 1d (registrations unused that long are removed)";
        doc.error("store.expireAfter", message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_read_in_camel_case_with_durations() {
        let store: StoreSettings = serde_json::from_str(
            r#"{"backend": "redis", "maxPerAccount": 3, "maxPerDomain": 10, "maxTotal": 50, "expireAfter": "30d"}"#,
        )
        .unwrap();
        assert_eq!(store.backend, StoreBackend::Redis);
        assert_eq!(store.max_per_account, 3);
        assert_eq!(store.max_per_domain, 10);
        assert_eq!(store.max_total, Some(50));
        assert_eq!(store.expire_after, 30 * DAY);
    }

    #[test]
    fn the_store_is_bounded_in_all_without_a_max_total() {
        let store: StoreSettings = serde_json::from_str(r#"{"backend": "sqlite"}"#).unwrap();
        assert_eq!(store.max_total, Some(10_000_000));
    }
}
