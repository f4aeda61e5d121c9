//! Opening the store the settings name, at start-up: the SQLite file is created or migrated
//! here (and only here).

use std::sync::Arc;

use super::{RedisRegistrations, RegistrationStore, SqliteStore, StoreError, StoreLimits};
use crate::config::{RedisSettings, StoreBackend, StoreSettings};

/// The registration store of `settings` (`redis` is the top-level `redis` section, needed by
/// the Redis backend). Blocking (it may create or migrate a file): call it at start-up.
pub fn open(
    settings: &StoreSettings,
    redis: Option<&RedisSettings>,
    limits: StoreLimits,
) -> Result<Arc<dyn RegistrationStore>, StoreError> {
    match settings.backend {
        StoreBackend::Sqlite => {
            let path = settings.path.as_deref().ok_or_else(|| {
                StoreError::Unusable("store.path: the sqlite backend needs its file".into())
            })?;
            Ok(Arc::new(SqliteStore::open(path, limits)?))
        }
        StoreBackend::Redis => {
            let redis = redis.ok_or_else(|| {
                StoreError::Unusable("store.backend: redis needs the `redis` section".into())
            })?;
            Ok(Arc::new(RedisRegistrations::open(redis, limits)?))
        }
    }
}

impl From<&StoreSettings> for StoreLimits {
    /// The bounds the backends enforce, from the `store` section.
    fn from(settings: &StoreSettings) -> Self {
        StoreLimits {
            max_per_account: u32::try_from(settings.max_per_account).unwrap_or(u32::MAX),
            max_per_domain: settings.max_per_domain as u64,
            max_total: settings.max_total.map(|total| total as u64),
            expire_after: settings.expire_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settings_defaults_are_the_store_defaults() {
        let limits = StoreLimits::from(&StoreSettings::default());
        assert_eq!(limits, StoreLimits::default());
    }

    #[test]
    fn settings_become_limits() {
        let settings = StoreSettings {
            max_per_account: 3,
            max_per_domain: 10,
            max_total: Some(50),
            ..StoreSettings::default()
        };
        let limits = StoreLimits::from(&settings);
        assert_eq!((limits.max_per_account, limits.max_per_domain), (3, 10));
        assert_eq!(limits.max_total, Some(50));
    }
}
