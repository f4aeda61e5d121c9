//! The connections to push services: one `fpush-http` client per origin, reused by every push
//! to it, at most `max_origins` of them (the least recently used is dropped first), each with
//! at most `connections_per_origin` connections. A wildcard entry must not mean unbounded
//! hosts held open.
//!
//! A dropped client's pause (a 503 with `Retry-After`) is kept apart, for at most `max_origins`
//! origins, until it ends: otherwise pushes to many hosts of a wildcard entry would push the
//! paused one out and end its pause early.
//!
//! An origin's addresses are checked against the fence when its client is made and again after
//! [`RECHECK_AFTER`], and the client connects only to the addresses checked: the name is never
//! looked up again between the check and the socket.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
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
    /// The push service paused the origin, and the pause outlived its client.
    #[error("{origin} asked for a pause, {left:?} left")]
    Paused { origin: String, left: Duration },
}

struct Entry {
    client: HttpClient,
    /// Where its connections go: the addresses checked, sorted (empty for an origin listed
    /// exactly, whose client looks its host up itself).
    addresses: Vec<SocketAddr>,
    checked: Instant,
    used: Instant,
}

/// The clients held open, by origin, and the pauses of those dropped while paused.
#[derive(Default)]
struct Held {
    clients: HashMap<String, Entry>,
    /// Until when each origin whose client was dropped by the cap is paused: a new client
    /// would know nothing of the pause. At most `max_origins` entries.
    paused: HashMap<String, Instant>,
}

/// An address lookup in flight.
type Lookup = Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>>;

/// How a host's addresses are found: the system resolver, or a test's stand-in for DNS.
type Resolver = Arc<dyn Fn(String, u16) -> Lookup + Send + Sync>;

/// The system resolver.
fn system_resolver() -> Resolver {
    Arc::new(|host: String, port: u16| -> Lookup {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    })
}

/// The clients held open, by origin.
pub struct Origins {
    settings: ClientSettings,
    held: Mutex<Held>,
    resolver: Resolver,
    /// Which addresses a wildcard origin may have: [`is_public`] (a test narrows it).
    allowed: fn(IpAddr) -> bool,
}

impl Origins {
    pub fn new(settings: ClientSettings) -> Self {
        Origins {
            settings,
            held: Mutex::new(Held::default()),
            resolver: system_resolver(),
            allowed: is_public,
        }
    }

    /// The client of an admitted endpoint's origin, its addresses checked.
    pub async fn client(&self, admitted: &Admitted) -> Result<HttpClient, OriginError> {
        let now = Instant::now();
        if let Some(client) = self.fresh(&admitted.origin, now) {
            return Ok(client);
        }
        self.lock().still_paused(&admitted.origin, now)?;
        let addresses = check_addresses(
            admitted,
            self.settings.request_timeout,
            &self.resolver,
            self.allowed,
        )
        .await?;
        if let Some(client) = self.recheck(&admitted.origin, &addresses, now) {
            return Ok(client);
        }
        // Made outside the lock: it reads the CA file.
        let config = HttpConfig {
            ca_file: self.settings.ca_file.clone(),
            max_connections: self.settings.connections_per_origin.max(1),
            request_timeout: self.settings.request_timeout,
            breaker: NO_429_PAUSE,
            addresses: addresses.clone(),
            ..HttpConfig::default()
        };
        let client = HttpClient::new(&admitted.origin, config)?;
        let mut held = self.lock();
        if let Some(entry) = held.clients.get(&admitted.origin) {
            if entry.addresses == addresses {
                // Another push made one meanwhile: share it.
                return Ok(entry.client.clone());
            }
        }
        let cap = self.settings.max_origins.max(1);
        let entry = Entry {
            client: client.clone(),
            addresses,
            checked: now,
            used: now,
        };
        if held.clients.remove(&admitted.origin).is_none() && held.clients.len() >= cap {
            held.drop_oldest(cap);
        }
        held.clients.insert(admitted.origin.clone(), entry);
        Ok(client)
    }

    /// The held client of `origin`, its check renewed, when it still connects where the
    /// check just found the origin, or when it is paused (it connects nowhere until the
    /// pause ends, and a new client would know nothing of the pause).
    fn recheck(&self, origin: &str, addresses: &[SocketAddr], now: Instant) -> Option<HttpClient> {
        let mut held = self.lock();
        let entry = held.clients.get_mut(origin)?;
        if entry.addresses != addresses && entry.client.paused_for().is_none() {
            return None;
        }
        entry.checked = now;
        entry.used = now;
        Some(entry.client.clone())
    }

    /// Origins held now.
    pub fn len(&self) -> usize {
        self.lock().clients.len()
    }

    /// Whether no origin is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The held client of `origin` when its address check still holds.
    fn fresh(&self, origin: &str, now: Instant) -> Option<HttpClient> {
        let mut held = self.lock();
        let entry = held.clients.get_mut(origin)?;
        if now.duration_since(entry.checked) > RECHECK_AFTER {
            return None;
        }
        entry.used = now;
        Some(entry.client.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        // The map stays consistent whatever a panicking holder did: entries are whole.
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Held {
    /// Refuses an origin whose dropped client was paused, until the pause ends.
    fn still_paused(&mut self, origin: &str, now: Instant) -> Result<(), OriginError> {
        let Some(&until) = self.paused.get(origin) else {
            return Ok(());
        };
        if until <= now {
            self.paused.remove(origin);
            return Ok(());
        }
        Err(OriginError::Paused {
            origin: origin.to_owned(),
            left: until - now,
        })
    }

    /// Drops the least recently used client, keeping its pause if one is on.
    fn drop_oldest(&mut self, cap: usize) {
        let oldest = self
            .clients
            .iter()
            .min_by_key(|(_, entry)| entry.used)
            .map(|(origin, _)| origin.clone());
        let Some((origin, entry)) = oldest.and_then(|o| self.clients.remove_entry(&o)) else {
            return;
        };
        if let Some(left) = entry.client.paused_for() {
            self.keep_pause(origin, Instant::now() + left, cap);
        }
    }

    /// Keeps a pause, within the cap: beyond it the pause that ends soonest goes (one that has
    /// ended, or, only when more than `cap` origins are paused at once, each by its own push
    /// service, the shortest).
    fn keep_pause(&mut self, origin: String, until: Instant, cap: usize) {
        self.paused.insert(origin, until);
        if self.paused.len() > cap {
            let soonest = self
                .paused
                .iter()
                .min_by_key(|(_, &ends)| ends)
                .map(|(origin, _)| origin.clone());
            if let Some(soonest) = soonest {
                self.paused.remove(&soonest);
            }
        }
    }
}

/// Where the origin's connections may go: every address the host resolves to, each public
/// (`allowed`), and the client then connects to these and never looks the host up again (a
/// DNS answer that changed since would otherwise decide). An origin listed exactly is not
/// checked: its client looks its host up itself (empty). The lookup is bounded by `limit`
/// (the request timeout): a slow resolver must not hold a push longer than a slow push
/// service may.
async fn check_addresses(
    admitted: &Admitted,
    limit: Duration,
    resolver: &Resolver,
    allowed: fn(IpAddr) -> bool,
) -> Result<Vec<SocketAddr>, OriginError> {
    if admitted.explicit {
        return Ok(Vec::new());
    }
    let mut addresses: Vec<IpAddr> = match admitted.host.parse::<IpAddr>() {
        Ok(literal) => vec![literal],
        Err(_) => {
            let lookup = resolver(admitted.host.clone(), admitted.port);
            resolved(admitted, limit, async { lookup.await.map(Vec::into_iter) }).await?
        }
    };
    if let Some(&address) = addresses.iter().find(|address| !allowed(**address)) {
        let origin = admitted.origin.clone();
        return Err(FenceError::NonPublic { origin, address }.into());
    }
    if addresses.is_empty() {
        return Err(OriginError::Resolve {
            origin: admitted.origin.clone(),
            reason: "no addresses".into(),
        });
    }
    addresses.sort();
    addresses.dedup();
    let port = admitted.port;
    Ok(addresses
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect())
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
    async fn a_connection_goes_to_the_address_that_was_checked_and_nowhere_else() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let fence = Fence::new(&[format!("https://*.push.invalid:{port}")]).unwrap();
        let admitted = fence
            .admit(&format!("https://a.push.invalid:{port}/x"))
            .unwrap();
        // Here only 127.0.0.1 counts as public, and DNS says that is where the name is. Any
        // other lookup of the name (the system's resolver knows nothing of it) is not the
        // answer that was checked.
        let mut origins = origins(4);
        origins.allowed = |address| address == IpAddr::from([127, 0, 0, 1]);
        origins.resolver = Arc::new(move |_, port| -> Lookup {
            Box::pin(async move { Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))]) })
        });
        let client = origins.client(&admitted).await.unwrap();
        let request = http::Request::post("/x").body(bytes::Bytes::new()).unwrap();
        let sent = tokio::spawn(async move { client.send(request).await });
        let accepted = tokio::time::timeout(Duration::from_secs(2), listener.accept()).await;
        assert!(accepted.is_ok(), "{:?}", sent.await.unwrap());
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

    /// The client of `https://127.0.0.1:{port}`, listed exactly (no lookup).
    async fn client_of(origins: &Origins, port: u16) -> Result<HttpClient, OriginError> {
        let fence = Fence::new(&[format!("https://127.0.0.1:{port}")]).unwrap();
        let admitted = fence.admit(&format!("https://127.0.0.1:{port}/x")).unwrap();
        origins.client(&admitted).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_paused_origin_stays_paused_when_other_origins_push_its_client_out() {
        let origins = origins(2);
        let pause = Duration::from_secs(600);
        // The push service of :1 answered 503 with a Retry-After of ten minutes.
        client_of(&origins, 1)
            .await
            .unwrap()
            .pause(Some(pause), "503");
        tokio::time::advance(Duration::from_secs(1)).await;
        // Pushes to other hosts of the same wildcard drop the least recently used client.
        for port in 2..=5 {
            client_of(&origins, port).await.unwrap();
        }
        assert_eq!(origins.len(), 2);
        match client_of(&origins, 1).await {
            Err(OriginError::Paused { left, .. }) => {
                assert_eq!(left, pause - Duration::from_secs(1))
            }
            Err(e) => panic!("{e}"),
            Ok(client) => assert!(client.paused_for().is_some(), "the pause ended early"),
        }
        tokio::time::advance(pause).await;
        let after = client_of(&origins, 1).await.unwrap();
        assert_eq!(after.paused_for(), None);
        assert!(origins.lock().paused.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn pauses_kept_for_dropped_clients_stay_within_the_cap() {
        let origins = origins(2);
        // Every origin paused, each longer than the one before: the ones ending soonest go.
        for port in 1..=10u16 {
            let client = client_of(&origins, port).await.unwrap();
            client.pause(Some(Duration::from_secs(60 * u64::from(port))), "503");
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        let held = origins.lock();
        assert_eq!(held.clients.len(), 2);
        assert_eq!(held.paused.len(), 2);
        let mut kept: Vec<&str> = held.paused.keys().map(String::as_str).collect();
        kept.sort();
        assert_eq!(kept, ["https://127.0.0.1:7", "https://127.0.0.1:8"]);
    }
}
