//! The access-token cache: one valid token shared by every push, refreshed by one push at a time.
//!
//! Google's tokens live an hour. The cache hands out the current token until shortly before it
//! expires (the refresh margin), then the first push that notices fetches a new one. Pushes
//! arriving meanwhile keep using the current token while it has not expired; without one, they
//! wait for that same fetch and share its outcome, success or failure: a thousand concurrent
//! pushes cause one token request, not a thousand ("no thundering herd").
//! If a refresh fails while the old token has not expired yet, the old token is still used; an
//! expired token is never handed out. After a failed refresh the next one waits a pause that
//! doubles with each failure in a row (1 s up to a minute): pushes meanwhile share the failure,
//! so a revoked key does not make the token endpoint answer one request after another.
//!
//! Time is `tokio::time::Instant`, so the expiry rules are tested on tokio's paused clock.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::HeaderValue;
use tokio::time::Instant;

/// Refresh this long before expiry (or at half the lifetime, for short-lived tokens), so a
/// request that starts with the token finishes before Google stops accepting it.
pub(crate) const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// The longest lifetime believed: Google grants an hour. An endpoint announcing more (up to
/// `u64::MAX` seconds) gets its token refreshed after this, and no deadline overflows.
pub(crate) const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The pause after the first failed refresh, doubled after each further one up to
/// [`MAX_RETRY_PAUSE`].
const FIRST_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// A token refused sooner than this after the last token dropped for a refusal is kept: the
/// fresh token was refused too, so the refusal is not about the token (a 403 that stays, e.g.
/// the FCM API disabled), and a new token per push would only load the token endpoint.
pub(crate) const MIN_INVALIDATE_INTERVAL: Duration = Duration::from_secs(60);
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(60);

/// What the token endpoint granted.
#[derive(Debug, Clone)]
pub(crate) struct TokenGrant {
    /// The `Authorization` header value (`Bearer …`), marked sensitive.
    pub bearer: HeaderValue,
    /// `expires_in`.
    pub lifetime: Duration,
}

/// A cached access token with its deadlines.
#[derive(Debug)]
pub(crate) struct AccessToken {
    pub bearer: HeaderValue,
    /// After this, the next push fetches a new token.
    refresh_after: Instant,
    /// After this, the token is never sent.
    expires_at: Instant,
}

impl AccessToken {
    fn new(grant: TokenGrant, requested_at: Instant) -> Self {
        // Deadlines count from when the token was *requested*: the token endpoint's clock
        // started no earlier than that, so ours can only run out first.
        let lifetime = grant.lifetime.min(MAX_LIFETIME);
        let margin = REFRESH_MARGIN.min(lifetime / 2);
        Self {
            bearer: grant.bearer,
            refresh_after: requested_at + (lifetime - margin),
            expires_at: requested_at + lifetime,
        }
    }

    fn fresh_at(&self, now: Instant) -> bool {
        now < self.refresh_after
    }

    fn unexpired_at(&self, now: Instant) -> bool {
        now < self.expires_at
    }
}

/// `token`, unless it expired before the refresh even ended: then the refresh failed, and the
/// pushes that waited for it share that failure instead of each asking again.
fn usable(token: AccessToken) -> Result<Arc<AccessToken>, TokenError> {
    if token.unexpired_at(Instant::now()) {
        Ok(Arc::new(token))
    } else {
        Err(TokenError::Unavailable(
            "the token endpoint granted a token that expired at once".to_string(),
        ))
    }
}

/// Why no token could be had; cloned to every push that shared the failed refresh.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TokenError {
    /// The token endpoint could not be reached or failed (down, 5xx, timeout, garbage).
    #[error("OAuth token endpoint unavailable: {0}")]
    Unavailable(String),
    /// The token endpoint refused our assertion: the key was revoked, the account deleted, the
    /// file edited by hand.
    #[error("OAuth token endpoint refused the service account: {0}")]
    Refused(String),
}

#[derive(Default)]
struct LastRefresh {
    /// How many refreshes finished (matches [`TokenCache::refreshes`] while the lock is held).
    count: u64,
    outcome: Option<Result<Arc<AccessToken>, TokenError>>,
    /// Refreshes failed since the last one that succeeded.
    failures_in_a_row: u32,
    /// After a failure: no refresh before this.
    retry_at: Option<Instant>,
}

impl LastRefresh {
    /// The failure pushes share instead of a refresh, while the pause after it lasts.
    fn pausing(&self, now: Instant) -> Option<&TokenError> {
        match (&self.outcome, self.retry_at) {
            (Some(Err(error)), Some(retry_at)) if now < retry_at => Some(error),
            _ => None,
        }
    }

    fn record(&mut self, outcome: &Result<Arc<AccessToken>, TokenError>, now: Instant) {
        self.count += 1;
        self.outcome = Some(outcome.clone());
        if outcome.is_ok() {
            self.failures_in_a_row = 0;
            self.retry_at = None;
            return;
        }
        let doublings = self.failures_in_a_row.min(6);
        self.failures_in_a_row = self.failures_in_a_row.saturating_add(1);
        let pause = (FIRST_RETRY_PAUSE * (1 << doublings)).min(MAX_RETRY_PAUSE);
        self.retry_at = Some(now + pause);
    }
}

/// The shared cache; see the module header for the rules.
#[derive(Default)]
pub(crate) struct TokenCache {
    /// The token pushes use, read without waiting on the refresh lock.
    current: RwLock<Option<Arc<AccessToken>>>,
    /// Held for the whole of a refresh; waiters share the outcome it leaves behind.
    refresh: tokio::sync::Mutex<LastRefresh>,
    refreshes: AtomicU64,
    /// Refreshes that ended without a token.
    failures: AtomicU64,
    /// When a token was last dropped because FCM refused it.
    last_invalidated: std::sync::Mutex<Option<Instant>>,
}

impl TokenCache {
    /// A usable token: the cached one if fresh (or, while another caller refreshes, if
    /// unexpired), else the outcome of one shared refresh that runs `fetch`.
    pub async fn get<F, Fut>(&self, fetch: F) -> Result<Arc<AccessToken>, TokenError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<TokenGrant, TokenError>>,
    {
        // Read the counter before the token: a refresh finishing in between is then seen as
        // "a refresh happened while we waited", never missed.
        let seen = self.refreshes.load(Ordering::Acquire);
        if let Some(token) = self.current_if(|t| t.fresh_at(Instant::now())) {
            return Ok(token);
        }
        let mut last = match self.refresh.try_lock() {
            Ok(last) => last,
            Err(_) => match self.current_if(|t| t.unexpired_at(Instant::now())) {
                // A refresh is running: the token in hand serves until it expires, so a slow
                // token endpoint does not hold every push for up to the request timeout.
                Some(token) => return Ok(token),
                None => self.refresh.lock().await,
            },
        };
        let now = Instant::now();
        if let Some(error) = last.pausing(now) {
            return self
                .current_if(|t| t.unexpired_at(now))
                .ok_or_else(|| error.clone());
        }
        if last.count != seen {
            match &last.outcome {
                Some(Ok(token)) if token.unexpired_at(now) => return Ok(token.clone()),
                Some(Err(error)) => {
                    return self
                        .current_if(|t| t.unexpired_at(now))
                        .ok_or_else(|| error.clone())
                }
                _ => {}
            }
        }
        if let Some(token) = self.current_if(|t| t.fresh_at(now)) {
            return Ok(token);
        }

        let requested_at = Instant::now();
        let outcome = fetch()
            .await
            .and_then(|grant| usable(AccessToken::new(grant, requested_at)));
        match &outcome {
            Ok(token) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(token.clone());
            }
            Err(_) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        last.record(&outcome, Instant::now());
        self.refreshes.store(last.count, Ordering::Release);
        drop(last);

        match outcome {
            Ok(token) => Ok(token),
            Err(error) => self
                .current_if(|t| t.unexpired_at(Instant::now()))
                .ok_or(error),
        }
    }

    /// Forgets `rejected` if it is still the current token (FCM answered 401 to it), so the
    /// next [`TokenCache::get`] fetches a new one. Pushes that were rejected with the same token
    /// all call this; only the first one drops it, so they share one refresh. True when a
    /// retry may get another token; false when `rejected` is kept because the last token
    /// dropped for a refusal was dropped less than [`MIN_INVALIDATE_INTERVAL`] ago.
    pub fn invalidate(&self, rejected: &Arc<AccessToken>) -> bool {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if !current.as_ref().is_some_and(|t| Arc::ptr_eq(t, rejected)) {
            // A newer token exists, or one is being fetched.
            return true;
        }
        let mut last = self
            .last_invalidated
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if last.is_some_and(|at| now.saturating_duration_since(at) < MIN_INVALIDATE_INTERVAL) {
            return false;
        }
        *last = Some(now);
        *current = None;
        true
    }

    /// Refreshes that failed so far (one per shared refresh, however many pushes waited on it).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    fn current_if(&self, usable: impl Fn(&AccessToken) -> bool) -> Option<Arc<AccessToken>> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current.as_ref().filter(|t| usable(t)).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn grant(name: &str, lifetime_secs: u64) -> TokenGrant {
        TokenGrant {
            bearer: HeaderValue::from_str(&format!("Bearer {name}")).unwrap(),
            lifetime: Duration::from_secs(lifetime_secs),
        }
    }

    async fn get_counting(
        cache: &TokenCache,
        calls: &AtomicUsize,
        result: Result<TokenGrant, TokenError>,
    ) -> Result<Arc<AccessToken>, TokenError> {
        cache
            .get(|| async {
                calls.fetch_add(1, Ordering::SeqCst);
                result
            })
            .await
    }

    fn name(token: &AccessToken) -> &str {
        token.bearer.to_str().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_fresh_token_is_reused_without_fetching() {
        let cache = TokenCache::default();
        let calls = AtomicUsize::new(0);
        let first = get_counting(&cache, &calls, Ok(grant("a", 3600)))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(3000)).await;
        let second = get_counting(&cache, &calls, Ok(grant("b", 3600)))
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_is_refreshed_within_the_margin_before_expiry() {
        let cache = TokenCache::default();
        let calls = AtomicUsize::new(0);
        get_counting(&cache, &calls, Ok(grant("a", 3600)))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(3600) - REFRESH_MARGIN).await;
        let token = get_counting(&cache, &calls, Ok(grant("b", 3600)))
            .await
            .unwrap();
        assert_eq!(name(&token), "Bearer b");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn short_lived_tokens_are_refreshed_at_half_their_lifetime() {
        let cache = TokenCache::default();
        let calls = AtomicUsize::new(0);
        get_counting(&cache, &calls, Ok(grant("a", 10)))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(4)).await;
        get_counting(&cache, &calls, Ok(grant("b", 10)))
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        let token = get_counting(&cache, &calls, Ok(grant("b", 10)))
            .await
            .unwrap();
        assert_eq!(name(&token), "Bearer b");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lifetime_near_u64_max_is_clamped_not_overflowed() {
        let cache = TokenCache::default();
        let calls = AtomicUsize::new(0);
        let token = get_counting(&cache, &calls, Ok(grant("a", u64::MAX)))
            .await
            .unwrap();
        assert_eq!(name(&token), "Bearer a");
        tokio::time::advance(MAX_LIFETIME - REFRESH_MARGIN).await;
        let renewed = get_counting(&cache, &calls, Ok(grant("b", u64::MAX)))
            .await
            .unwrap();
        assert_eq!(
            name(&renewed),
            "Bearer b",
            "refreshed within the clamped lifetime"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_old_token_bridges_a_failed_refresh_until_it_expires() {
        let cache = TokenCache::default();
        let calls = AtomicUsize::new(0);
        let down = || Err(TokenError::Unavailable("down".into()));
        get_counting(&cache, &calls, Ok(grant("a", 3600)))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(3500)).await;
        let bridged = get_counting(&cache, &calls, down()).await.unwrap();
        assert_eq!(name(&bridged), "Bearer a");
        tokio::time::advance(Duration::from_secs(100)).await;
        // Exactly at expiry: the old token must not be handed out any more.
        let err = get_counting(&cache, &calls, down()).await.unwrap_err();
        assert_eq!(err, TokenError::Unavailable("down".into()));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_refreshes_pause_the_next_one_longer_each_time_until_one_succeeds() {
        let cache = TokenCache::default();
        let calls = AtomicUsize::new(0);
        let refused = || Err(TokenError::Refused("revoked".into()));
        let mut expected_calls = 0;
        for pause in [1, 2, 4, 8, 16, 32, 60, 60] {
            get_counting(&cache, &calls, refused()).await.unwrap_err();
            expected_calls += 1;
            // Pushes during the pause share the failure without asking the endpoint.
            tokio::time::advance(Duration::from_millis(pause * 1000 - 1)).await;
            let shared = get_counting(&cache, &calls, refused()).await.unwrap_err();
            assert_eq!(shared, TokenError::Refused("revoked".into()));
            assert_eq!(calls.load(Ordering::SeqCst), expected_calls, "{pause} s");
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        get_counting(&cache, &calls, Ok(grant("a", 3600)))
            .await
            .unwrap();
        cache.invalidate(&get_counting(&cache, &calls, refused()).await.unwrap());
        // A success ends the series: the next failure pauses a second again.
        get_counting(&cache, &calls, refused()).await.unwrap_err();
        tokio::time::advance(Duration::from_secs(1)).await;
        get_counting(&cache, &calls, Ok(grant("b", 3600)))
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), expected_calls + 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_that_expires_at_once_is_not_handed_out() {
        let cache = TokenCache::default();
        let calls = AtomicUsize::new(0);
        let err = get_counting(&cache, &calls, Ok(grant("a", 0)))
            .await
            .unwrap_err();
        assert!(matches!(err, TokenError::Unavailable(_)));
    }

    /// A hundred concurrent callers whose one refresh gives `outcome` once all of them wait;
    /// answers what each got and how many refreshes ran.
    async fn hundred_sharing_one_refresh(
        cache: &Arc<TokenCache>,
        outcome: Result<TokenGrant, TokenError>,
    ) -> (Vec<Result<Arc<AccessToken>, TokenError>>, usize) {
        let calls = Arc::new(AtomicUsize::new(0));
        let (release, released) = tokio::sync::watch::channel(false);
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let (cache, calls, mut released) = (cache.clone(), calls.clone(), released.clone());
            let outcome = outcome.clone();
            tasks.push(tokio::spawn(async move {
                cache
                    .get(|| async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        let _ = released.wait_for(|r| *r).await;
                        outcome
                    })
                    .await
            }));
        }
        tokio::task::yield_now().await;
        release.send(true).unwrap();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        (results, calls.load(Ordering::SeqCst))
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_refresh_and_its_failure() {
        let cache = Arc::new(TokenCache::default());
        let down = Err(TokenError::Unavailable("down".into()));
        let (results, calls) = hundred_sharing_one_refresh(&cache, down).await;
        for result in results {
            assert!(matches!(result, Err(TokenError::Unavailable(_))));
        }
        assert_eq!(calls, 1);
        assert_eq!(
            cache.failures(),
            1,
            "one failed refresh, however many waited"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_refresh_of_a_token_that_expired_at_once() {
        let cache = Arc::new(TokenCache::default());
        let (results, calls) = hundred_sharing_one_refresh(&cache, Ok(grant("a", 0))).await;
        for result in results {
            assert!(matches!(result, Err(TokenError::Unavailable(_))));
        }
        assert_eq!(calls, 1, "one refresh, not one each");
    }

    #[tokio::test(start_paused = true)]
    async fn invalidating_a_rejected_token_causes_one_refresh() {
        let cache = TokenCache::default();
        let calls = AtomicUsize::new(0);
        let rejected = get_counting(&cache, &calls, Ok(grant("a", 3600)))
            .await
            .unwrap();
        cache.invalidate(&rejected);
        let fresh = get_counting(&cache, &calls, Ok(grant("b", 3600)))
            .await
            .unwrap();
        // A second push rejected with the old token must not throw the new one away.
        cache.invalidate(&rejected);
        let again = get_counting(&cache, &calls, Ok(grant("c", 3600)))
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&fresh, &again));
        assert_eq!(name(&again), "Bearer b");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_refresh_does_not_hold_pushes_while_the_old_token_is_unexpired() {
        let cache = Arc::new(TokenCache::default());
        let calls = AtomicUsize::new(0);
        get_counting(&cache, &calls, Ok(grant("a", 3600)))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(3500)).await;
        let refreshing = cache.clone();
        let stalled = tokio::spawn(async move {
            refreshing
                .get(std::future::pending::<Result<TokenGrant, TokenError>>)
                .await
        });
        tokio::task::yield_now().await;
        // The token endpoint hangs; the token in hand still has 100 s to live.
        let meanwhile = tokio::time::timeout(
            Duration::from_secs(1),
            get_counting(&cache, &calls, Ok(grant("b", 3600))),
        )
        .await
        .expect("a push must not wait for the refresh while the old token is valid")
        .unwrap();
        assert_eq!(name(&meanwhile), "Bearer a");
        assert_eq!(calls.load(Ordering::SeqCst), 1, "one refresh at a time");
        stalled.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_refresh_lets_the_next_caller_fetch() {
        let cache = TokenCache::default();
        let calls = AtomicUsize::new(0);
        let stalled = cache.get(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<Result<TokenGrant, TokenError>>().await
        });
        assert!(tokio::time::timeout(Duration::from_secs(1), stalled)
            .await
            .is_err());
        let token = get_counting(&cache, &calls, Ok(grant("a", 3600)))
            .await
            .unwrap();
        assert_eq!(name(&token), "Bearer a");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
