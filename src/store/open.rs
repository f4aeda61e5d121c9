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
