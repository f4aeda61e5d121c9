//! The connections to push services: one `fpush-http` client per origin, reused by every push
//! to it, at most `max_origins` of them (the least recently used is dropped first), each with
//! at most `connections_per_origin` connections. A wildcard entry must not mean unbounded
//! hosts held open.
//!
//! An origin's addresses are checked against the fence when its client is made and again after
//! [`RECHECK_AFTER`], so a name that starts resolving to a private address is refused soon.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use fpush_http::{BreakerConfig, HttpClient, HttpConfig};
use tokio::time::Instant;

use crate::fence::{is_public, Admitted, FenceError};

/// How long an origin's address check holds.
pub const RECHECK_AFTER: Duration = Duration::from_secs(60);

/// A push service throttles per subscription or per VAPID key, that is per sender, never for
/// this relay as a whole: 429s for many requests must not pause an origin for every sender (one
/// domain's throttled subscriptions would stop everyone's pushes to that service for up to an
/// hour). Each throttled client is held on its own instead; a 503 with `Retry-After` still
/// pauses the origin. (A zero window keeps no 429 remembered.)
const NO_429_PAUSE: BreakerConfig = BreakerConfig {
    distinct_requests: usize::MAX,
    window: Duration::ZERO,
    default_pause: Duration::from_secs(60),
};

/// How the clients are made.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub ca_file: Option<PathBuf>,
    pub connections_per_origin: usize,
    pub request_timeout: Duration,
    pub max_origins: usize,
}

/// Why no client could be had for an origin.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    #[error(transparent)]
    Fenced(#[from] FenceError),
    #[error("cannot resolve {origin}: {reason}")]
    Resolve { origin: String, reason: String },
    /// The resolver did not answer within the request timeout.
    #[error("{origin} did not resolve within {limit:?}")]
    ResolveTimeout { origin: String, limit: Duration },
    #[error(transparent)]
    Client(#[from] fpush_http::HttpError),
}

struct Held {
    client: HttpClient,
    checked: Instant,
    used: Instant,
}

/// The clients held open, by origin.
pub struct Origins {
    settings: ClientSettings,
    held: Mutex<HashMap<String, Held>>,
}

impl Origins {
    pub fn new(settings: ClientSettings) -> Self {
        Origins {
            settings,
            held: Mutex::new(HashMap::new()),
        }
    }

    /// The client of an admitted endpoint's origin, its addresses checked.
    pub async fn client(&self, admitted: &Admitted) -> Result<HttpClient, OriginError> {
        let now = Instant::now();
        if let Some(client) = self.fresh(&admitted.origin, now) {
            return Ok(client);
        }
        check_addresses(admitted, self.settings.request_timeout).await?;
        if let Some(entry) = self.lock().get_mut(&admitted.origin) {
            entry.checked = now;
            entry.used = now;
            return Ok(entry.client.clone());
        }
        // Made outside the lock: it reads the CA file.
        let config = HttpConfig {
            ca_file: self.settings.ca_file.clone(),
            max_connections: self.settings.connections_per_origin.max(1),
            request_timeout: self.settings.request_timeout,
            breaker: NO_429_PAUSE,
            ..HttpConfig::default()
        };
        let client = HttpClient::new(&admitted.origin, config)?;
        let mut held = self.lock();
        if let Some(entry) = held.get(&admitted.origin) {
            // Another push made one meanwhile: share it.
            return Ok(entry.client.clone());
        }
        if held.len() >= self.settings.max_origins.max(1) {
            let oldest = held
                .iter()
                .min_by_key(|(_, entry)| entry.used)
                .map(|(origin, _)| origin.clone());
            if let Some(oldest) = oldest {
                held.remove(&oldest);
            }
        }
        let entry = Held {
            client: client.clone(),
            checked: now,
            used: now,
        };
        held.insert(admitted.origin.clone(), entry);
        Ok(client)
    }

    /// Origins held now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no origin is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The held client of `origin` when its address check still holds.
    fn fresh(&self, origin: &str, now: Instant) -> Option<HttpClient> {
        let mut held = self.lock();
        let entry = held.get_mut(origin)?;
        if now.duration_since(entry.checked) > RECHECK_AFTER {
            return None;
        }
        entry.used = now;
        Some(entry.client.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        // The map stays consistent whatever a panicking holder did: entries are whole.
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Every address the host resolves to must be public, unless the origin is listed exactly.
/// The lookup is bounded by `limit` (the request timeout): a slow resolver must not hold a
/// push longer than a slow push service may.
async fn check_addresses(admitted: &Admitted, limit: Duration) -> Result<(), OriginError> {
    if admitted.explicit {
        return Ok(());
    }
    let addresses: Vec<IpAddr> = match admitted.host.parse::<IpAddr>() {
        Ok(literal) => vec![literal],
        Err(_) => {
            let lookup = tokio::net::lookup_host((admitted.host.as_str(), admitted.port));
            resolved(admitted, limit, lookup).await?
        }
    };
    match addresses.into_iter().find(|address| !is_public(*address)) {
        Some(address) => Err(FenceError::NonPublic {
            origin: admitted.origin.clone(),
            address,
        }
        .into()),
        None => Ok(()),
    }
}

/// The addresses of a lookup that answered within `limit`.
async fn resolved<I>(
    admitted: &Admitted,
    limit: Duration,
    lookup: impl std::future::Future<Output = std::io::Result<I>>,
) -> Result<Vec<IpAddr>, OriginError>
where
    I: Iterator<Item = std::net::SocketAddr>,
{
    let origin = || admitted.origin.clone();
    let answer =
        tokio::time::timeout(limit, lookup)
            .await
            .map_err(|_| OriginError::ResolveTimeout {
                origin: origin(),
                limit,
            })?;
    let addresses = answer.map_err(|e| OriginError::Resolve {
        origin: origin(),
        reason: e.to_string(),
    })?;
    Ok(addresses.map(|addr| addr.ip()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fence::Fence;

    fn origins(max_origins: usize) -> Origins {
        Origins::new(ClientSettings {
            ca_file: None,
            connections_per_origin: 1,
            request_timeout: Duration::from_secs(1),
            max_origins,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_resolver_that_never_answers_is_given_up_after_the_request_timeout() {
        let fence = Fence::new(&["https://*.push.example"]).unwrap();
        let admitted = fence.admit("https://slow.push.example/x").unwrap();
        let never = std::future::pending::<std::io::Result<std::vec::IntoIter<_>>>();
        let limit = Duration::from_secs(10);
        let started = Instant::now();
        let error = resolved(&admitted, limit, never).await.unwrap_err();
        assert!(
            matches!(error, OriginError::ResolveTimeout { .. }),
            "{error}"
        );
        assert_eq!(started.elapsed(), limit);
    }

    #[tokio::test]
    async fn a_wildcard_listing_never_reaches_a_loopback_address() {
        let fence = Fence::new(&["https://*.localhost.test", "https://*.0.0.1"]).unwrap();
        let admitted = fence.admit("https://127.0.0.1/x").unwrap();
        assert!(!admitted.explicit);
        let refused = origins(4).client(&admitted).await.unwrap_err();
        assert!(
            matches!(refused, OriginError::Fenced(FenceError::NonPublic { .. })),
            "{refused}"
        );
    }

    #[tokio::test]
    async fn an_exact_listing_may_be_loopback_and_clients_are_reused_within_the_cap() {
        let fence = Fence::new(&[
            "https://127.0.0.1:1",
            "https://127.0.0.1:2",
            "https://127.0.0.1:3",
        ])
        .unwrap();
        let origins = origins(2);
        for port in [1, 1, 2, 3] {
            let admitted = fence.admit(&format!("https://127.0.0.1:{port}/x")).unwrap();
            origins.client(&admitted).await.unwrap();
        }
        assert_eq!(origins.len(), 2);
    }
}
