//! Access-token caches shared by every module built from the same service-account file.
//!
//! A reload rebuilds every module; with a cache of its own each rebuilt module would ask the
//! token endpoint again, once per module per reload. A module built from a file with the same
//! contents gets the cache the running module holds; a changed file gets a new one. Entries
//! hold the cache weakly, so a service account no module uses any more is dropped with its last
//! module.

use std::sync::{Arc, Mutex, Weak};

use crate::token_cache::TokenCache;

/// Live service accounts remembered at most; beyond, a module gets a cache of its own (correct,
/// only without reuse across a reload).
const MAX_SHARED: usize = 16;

static CACHES: Mutex<Vec<(Vec<u8>, Weak<TokenCache>)>> = Mutex::new(Vec::new());

/// The token cache for the service account whose file has the SHA-256 `fingerprint`.
pub(crate) fn cache_for(fingerprint: &[u8]) -> Arc<TokenCache> {
    let mut caches = CACHES.lock().unwrap_or_else(|e| e.into_inner());
    caches.retain(|(_, cache)| cache.strong_count() > 0);
    let shared = caches
        .iter()
        .find(|(known, _)| known.as_slice() == fingerprint)
        .and_then(|(_, cache)| cache.upgrade());
    if let Some(cache) = shared {
        return cache;
    }
    let cache = Arc::new(TokenCache::default());
    if caches.len() < MAX_SHARED {
        caches.push((fingerprint.to_vec(), Arc::downgrade(&cache)));
    }
    cache
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_file_gets_the_same_cache_while_a_module_holds_it() {
        let first = cache_for(b"fingerprint-same");
        let again = cache_for(b"fingerprint-same");
        assert!(Arc::ptr_eq(&first, &again));
        let other = cache_for(b"fingerprint-other");
        assert!(!Arc::ptr_eq(&first, &other));
    }

    #[test]
    fn a_cache_no_module_holds_is_forgotten() {
        let first = cache_for(b"fingerprint-dropped");
        let weak = Arc::downgrade(&first);
        drop(first);
        assert!(
            weak.upgrade().is_none(),
            "the registry does not keep it alive"
        );
        let _fresh = cache_for(b"fingerprint-dropped");
        let caches = CACHES.lock().unwrap_or_else(|e| e.into_inner());
        let entries = caches
            .iter()
            .filter(|(f, _)| f.as_slice() == b"fingerprint-dropped")
            .count();
        assert_eq!(entries, 1, "the dead entry was dropped");
    }
}
