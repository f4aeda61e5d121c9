//! The memory of tokens a provider declared dead, so they are answered without asking it again.
//!
//! A dead token keeps coming back until the XMPP server disables the registration, and asking the
//! provider each time wastes a request and risks its throttling. Entries are as compact as the
//! ratelimit's: a seeded 128-bit hash of the token and the time it is forgotten.
//!
//! On the Redis backend a dead token is also written to Redis (`SET … PX remember`), where every
//! instance's `Ratelimiter::admit` finds it; the local map still answers when Redis cannot.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::clock::{ticks, Clock};
use super::redis::{ModuleKeys, RedisStore, TokenDigest};
use super::sweeper;
use super::token_key::{new_token_map, table_bytes, TokenHasher, TokenKey, TokenMap};

/// `deadTokens.maxEntries` by default: about 60 MB at most per module.
pub const DEFAULT_MAX_ENTRIES: usize = 1_000_000;

/// The tokens of one module that a provider declared dead, each until `remember` has passed.
pub struct DeadTokens {
    remember: Duration,
    /// `remember` in ticks; zero means switched off.
    remember_ticks: u64,
    clock: Clock,
    hasher: TokenHasher,
    /// When each dead token is forgotten (shared with the memory a reload makes from this one).
    until: Arc<TokenMap<u64>>,
    /// Every entry written, oldest first (so also soonest to expire first): what the cap evicts
    /// and the sweep drops, each in O(1), without scanning the map. A token marked again leaves
    /// a stale item behind, recognised by its time and skipped.
    order: Arc<Mutex<VecDeque<(TokenKey, u64)>>>,
    /// `deadTokens.maxEntries`: at most this many tokens (and order items) are kept.
    max_entries: usize,
    /// On the Redis backend: where dead tokens are shared.
    shared: Option<SharedDead>,
}

/// A module's dead tokens in the shared Redis.
#[derive(Clone)]
struct SharedDead {
    store: Arc<RedisStore>,
    keys: ModuleKeys,
}

impl DeadTokens {
    /// Remembers each dead token for `remember`; `Duration::ZERO` switches the memory off.
    pub fn new(remember: Duration) -> Self {
        Self {
            remember,
            remember_ticks: ticks(remember),
            clock: Clock::starting_now(),
            hasher: TokenHasher::random(),
            until: Arc::new(new_token_map()),
            order: Arc::default(),
            max_entries: DEFAULT_MAX_ENTRIES,
            shared: None,
        }
    }

    /// The same memory keeping at most `max_entries` tokens (the oldest are evicted first).
    pub fn with_max_entries(self, max_entries: usize) -> Self {
        Self {
            max_entries: max_entries.max(1),
            ..self
        }
    }

    /// Whether this memory was made with these settings (a reload keeps it as it is then).
    pub fn is_set_to(&self, remember: Duration, max_entries: usize) -> bool {
        self.remember == remember && self.max_entries == max_entries.max(1)
    }

    /// The same memory under new settings (a reload that changed them): the tokens it remembers
    /// stay, each until its time. Nothing is dropped yet (the reload may still be refused): its
    /// sweeper, started when it is put in service, applies the new cap first. The old memory's
    /// sweeper stops once the old memory is dropped.
    pub fn reconfigured(&self, remember: Duration, max_entries: usize) -> Self {
        Self {
            remember,
            remember_ticks: ticks(remember),
            clock: self.clock,
            hasher: self.hasher.clone(),
            until: self.until.clone(),
            order: self.order.clone(),
            max_entries: max_entries.max(1),
            shared: self.shared.clone(),
        }
    }

    /// Drops the oldest tokens beyond the cap, or all of them when the memory is switched off
    /// (they would never be asked or swept again): what a reload's new settings allow.
    fn trim_to_settings(&self) {
        let keep = match self.remember_ticks {
            0 => 0,
            _ => self.max_entries,
        };
        let mut order = self.order();
        while order.len() > keep {
            if let Some(oldest) = order.pop_front() {
                self.drop_entry(oldest);
            }
        }
    }

    /// Dead tokens of module `module_id` shared in `store` with every instance that uses it.
    pub fn with_redis(remember: Duration, store: Arc<RedisStore>, module_id: &str) -> Self {
        let keys = store.keys_for(module_id);
        Self {
            shared: Some(SharedDead { store, keys }),
            ..Self::new(remember)
        }
    }

    /// The Redis key of `token`'s entry, when this memory is on and shared in `store` (the
    /// ratelimiter's, which reads it in the same script run).
    pub(crate) fn shared_key(
        &self,
        store: &Arc<RedisStore>,
        token: &TokenDigest,
    ) -> Option<String> {
        let shared = self.shared.as_ref()?;
        (self.remember_ticks != 0 && Arc::ptr_eq(&shared.store, store))
            .then(|| shared.keys.dead(token))
    }

    /// Whether a provider declared `token` dead less than `remember` ago.
    pub fn is_dead(&self, token: &str) -> bool {
        if self.remember_ticks == 0 {
            return false;
        }
        let now = self.clock.now();
        self.until
            .get(&self.hasher.key(token))
            .is_some_and(|until| *until > now)
    }

    /// Remembers `token` as dead for `remember` from now (again from now if it already was).
    ///
    /// On the Redis backend the shared entry is written by a task of its own, so the caller (a
    /// reply on its way) does not wait for Redis; see [`DeadTokens::remember_dead`].
    pub fn mark_dead(&self, token: &str) {
        if self.remember_ticks == 0 {
            return;
        }
        self.mark_locally(token);
        if let Some(shared) = &self.shared {
            let store = shared.store.clone();
            let key = shared.keys.dead(&TokenDigest::of(token));
            let remember = self.remember;
            spawn_if_in_runtime(async move {
                store.set_dead(&key, remember).await;
            });
        }
    }

    /// Like [`DeadTokens::mark_dead`], but returns once the shared entry is written (or Redis
    /// has failed, and only this instance remembers).
    pub async fn remember_dead(&self, token: &str) {
        if self.remember_ticks == 0 {
            return;
        }
        self.mark_locally(token);
        if let Some(shared) = &self.shared {
            let key = shared.keys.dead(&TokenDigest::of(token));
            shared.store.set_dead(&key, self.remember).await;
        }
    }

    /// Forgets `token`: a later successful send proves it alive.
    pub fn forget(&self, token: &str) {
        self.until.remove(&self.hasher.key(token));
        if let Some(shared) = &self.shared {
            let store = shared.store.clone();
            let key = shared.keys.dead(&TokenDigest::of(token));
            spawn_if_in_runtime(async move {
                store.delete(&key).await;
            });
        }
    }

    fn mark_locally(&self, token: &str) {
        let key = self.hasher.key(token);
        let mut order = self.order();
        // Strictly increasing, so that an order item names exactly one write of its token.
        let newest = order.back().map_or(0, |(_, until)| *until);
        let until = self
            .clock
            .now()
            .saturating_add(self.remember_ticks)
            .max(newest + 1);
        self.until.insert(key, until);
        order.push_back((key, until));
        while order.len() > self.max_entries {
            if let Some(oldest) = order.pop_front() {
                self.drop_entry(oldest);
            }
        }
    }

    /// Drops the tokens whose time is up, oldest first, and returns how many it dropped. Only
    /// the expired front of the order is touched, never the whole map.
    pub fn sweep(&self) -> usize {
        let now = self.clock.now();
        let mut order = self.order();
        let mut removed = 0;
        while order.front().is_some_and(|(_, until)| *until <= now) {
            if let Some(expired) = order.pop_front() {
                removed += usize::from(self.drop_entry(expired));
            }
        }
        removed
    }

    /// Removes the map entry an order item stands for, unless the token was marked again since.
    fn drop_entry(&self, (key, until): (TokenKey, u64)) -> bool {
        self.until
            .remove_if(&key, |_, current| *current == until)
            .is_some()
    }

    fn order(&self) -> MutexGuard<'_, VecDeque<(TokenKey, u64)>> {
        self.order
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The number of tokens remembered (expired ones count until the next sweep; never more
    /// than `max_entries`).
    pub fn len(&self) -> usize {
        self.until.len()
    }

    pub fn is_empty(&self) -> bool {
        self.until.is_empty()
    }

    /// The heap the token table holds: its allocated buckets, used or not (tables never shrink).
    pub fn table_bytes(&self) -> usize {
        table_bytes(&self.until)
    }

    /// Sweeps every `remember`, or every 300 s if that is shorter (never more often than once a
    /// second), until `shutdown`. With the memory switched off the task ends at once. First,
    /// what the settings no longer allow is dropped (a memory a reload reconfigured).
    pub fn spawn_sweeper(self: &Arc<Self>, shutdown: CancellationToken) -> JoinHandle<()> {
        self.trim_to_settings();
        if self.remember_ticks == 0 {
            return sweeper::none();
        }
        let period = sweeper::period_for(self.remember);
        sweeper::spawn(self, period, shutdown, Self::sweep, "dead-token")
    }
}

/// Runs a Redis write in the background; outside a runtime (never the case in the daemon) the
/// local entry alone is kept.
fn spawn_if_in_runtime(write: impl std::future::Future<Output = ()> + Send + 'static) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(write);
    }
}

impl std::fmt::Debug for DeadTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadTokens")
            .field("remember", &self.remember)
            .field("tokens", &self.len())
            .finish_non_exhaustive()
    }
}
