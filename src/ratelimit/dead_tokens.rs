//! The memory of tokens a provider declared dead, so they are answered without asking it again.
//!
//! A dead token keeps coming back until the XMPP server disables the registration, and asking the
//! provider each time wastes a request and risks its throttling. Entries are as compact as the
//! ratelimit's: a seeded 128-bit hash of the token and the time it is forgotten.
//!
//! On the Redis backend a dead token is also written to Redis (`SET … PX remember`), where every
//! instance's `Ratelimiter::admit` finds it; the local map still answers when Redis cannot.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// `rebase_from` once there is nothing (left) to move.
const NOT_REBASED: u64 = u64::MAX;

/// At most this many revived tokens (see `DeadTokens::revived`) are kept per module: about 10 MB.
const MAX_REVIVED: usize = 100_000;

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
    /// On the Redis backend: tokens forgotten here whose shared entry may still say "dead" (its
    /// delete failed or has not landed yet), until that entry would have expired by itself.
    /// Redis's "dead" is not trusted for them: a server told so deletes the registration the
    /// client just made again.
    revived: Arc<TokenMap<Revived>>,
    /// For a memory a reload reconfigured: the `remember` (in ticks) its tokens were written
    /// with, so that the new one can be applied to them once it is in service (`rebase`).
    rebase_from: AtomicU64,
    /// The `remember` in service, in ticks, shared by the memories reloads made from one another:
    /// a push that ends with the memory it started with marks its token with the setting in
    /// service (and one long time would otherwise be handed on to every later token, see
    /// `mark_locally`).
    remember_now: Arc<AtomicU64>,
}

/// A revived token: when its shared entry expires at the latest, and that entry's name.
struct Revived {
    until: u64,
    shared_key: Arc<str>,
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
            revived: Arc::new(new_token_map()),
            rebase_from: AtomicU64::new(NOT_REBASED),
            remember_now: Arc::new(AtomicU64::new(ticks(remember))),
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
    /// stay, each now remembered for the new `remember` from when it was declared dead. Nothing
    /// changes yet (the reload may still be refused): its sweeper, started when it is put in
    /// service, applies the new settings first. The old memory's sweeper stops once the old
    /// memory is dropped.
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
            revived: self.revived.clone(),
            rebase_from: AtomicU64::new(self.remember_ticks),
            remember_now: self.remember_now.clone(),
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
        self.rebase(&mut order);
        self.remember_now
            .store(self.remember_ticks, Ordering::Relaxed);
    }

    /// Moves the time of every remembered token by the change of `remember` since the memory
    /// this one was reconfigured from, so that the new setting counts from when each token was
    /// declared dead. All move alike: the order stays sorted, and each item still names its
    /// write (an older, stale item of a token is met before its current one).
    fn rebase(&self, order: &mut VecDeque<(TokenKey, u64)>) {
        let from = self.rebase_from.swap(NOT_REBASED, Ordering::Relaxed);
        if from == NOT_REBASED || from == self.remember_ticks {
            return;
        }
        let to = self.remember_ticks;
        for (key, until) in order.iter_mut() {
            let moved = until.saturating_sub(from).saturating_add(to);
            if let Some(mut current) = self.until.get_mut(key) {
                if *current == *until {
                    *current = moved;
                }
            }
            *until = moved;
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
        token: &str,
        digest: &TokenDigest,
    ) -> Option<String> {
        let shared = self.shared.as_ref()?;
        (self.remember_ticks != 0 && Arc::ptr_eq(&shared.store, store) && !self.is_revived(token))
            .then(|| shared.keys.dead(digest))
    }

    /// Whether `token` is revived (see `revived`); if so, its shared entry's delete is tried
    /// again. An ended revival is dropped on the way.
    fn is_revived(&self, token: &str) -> bool {
        let key = self.hasher.key(token);
        let now = self.clock.now();
        let pending = self
            .revived
            .get(&key)
            .filter(|revived| revived.until > now)
            .map(|revived| (revived.until, revived.shared_key.clone()));
        match pending {
            Some((until, shared_key)) => {
                self.delete_shared(key, until, shared_key);
                true
            }
            None => {
                self.revived
                    .remove_if(&key, |_, revived| revived.until <= now);
                false
            }
        }
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
    ///
    /// On the Redis backend the shared entry is deleted by a task of its own; until that
    /// succeeds (Redis may be down) the token is revived here, so that its shared entry does not
    /// answer it dead.
    pub fn forget(&self, token: &str) {
        let key = self.hasher.key(token);
        self.until.remove(&key);
        let Some(shared) = &self.shared else {
            return;
        };
        let shared_key: Arc<str> = shared.keys.dead(&TokenDigest::of(token)).into();
        let until = self.clock.now().saturating_add(self.remember_ticks);
        // Full (a long outage, many registrations): ended revivals go at the next sweep.
        if self.revived.len() < self.max_entries.min(MAX_REVIVED) {
            let shared_key = shared_key.clone();
            self.revived.insert(key, Revived { until, shared_key });
        }
        self.delete_shared(key, until, shared_key);
    }

    /// Deletes a revived token's shared entry in the background; once Redis has done so, the
    /// token is no longer revived (unless it was forgotten again since).
    fn delete_shared(&self, key: TokenKey, until: u64, shared_key: Arc<str>) {
        let Some(shared) = &self.shared else {
            return;
        };
        let store = shared.store.clone();
        let revived = self.revived.clone();
        spawn_if_in_runtime(async move {
            if store.delete(&shared_key).await {
                revived.remove_if(&key, |_, revived| revived.until == until);
            }
        });
    }

    /// Tries again, in one background task, to delete the shared entries of revived tokens
    /// (stopping at the first failure), so that other instances stop answering them dead even if
    /// this one gets no push for them. Ended revivals are dropped first.
    fn retry_revived(&self) {
        let now = self.clock.now();
        self.revived.retain(|_, revived| revived.until > now);
        let Some(shared) = &self.shared else {
            return;
        };
        let pending: Vec<(TokenKey, u64, Arc<str>)> = self
            .revived
            .iter()
            .map(|entry| (*entry.key(), entry.until, entry.shared_key.clone()))
            .collect();
        if pending.is_empty() {
            return;
        }
        let store = shared.store.clone();
        let revived = self.revived.clone();
        spawn_if_in_runtime(async move {
            for (key, until, shared_key) in pending {
                if !store.delete(&shared_key).await {
                    break;
                }
                revived.remove_if(&key, |_, revived| revived.until == until);
            }
        });
    }

    fn mark_locally(&self, token: &str) {
        let key = self.hasher.key(token);
        // Dead again: the shared entry about to be written is news, not a stale verdict.
        self.revived.remove(&key);
        let mut order = self.order();
        // Strictly increasing, so that an order item names exactly one write of its token.
        let newest = order.back().map_or(0, |(_, until)| *until);
        let remember = self.remember_now.load(Ordering::Relaxed);
        let until = self.clock.now().saturating_add(remember).max(newest + 1);
        self.until.insert(key, until);
        order.push_back((key, until));
        while order.len() > self.max_entries {
            if let Some(oldest) = order.pop_front() {
                self.drop_entry(oldest);
            }
        }
    }

    /// Drops the tokens whose time is up, oldest first, and returns how many it dropped. Only
    /// the expired front of the order is touched, never the whole map. On the Redis backend it
    /// also retries the deletes of revived tokens.
    pub fn sweep(&self) -> usize {
        self.retry_revived();
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    const MINUTE: Duration = Duration::from_secs(60);

    fn in_service(memory: DeadTokens) -> Arc<DeadTokens> {
        let memory = Arc::new(memory);
        drop(memory.spawn_sweeper(CancellationToken::new()));
        memory
    }

    #[tokio::test(start_paused = true)]
    async fn a_longer_remember_counts_from_when_the_token_was_declared_dead() {
        let before = DeadTokens::new(MINUTE);
        before.mark_dead("gone");
        advance(Duration::from_secs(30)).await;
        let after = in_service(before.reconfigured(2 * MINUTE, DEFAULT_MAX_ENTRIES));
        advance(Duration::from_secs(80)).await;
        assert!(after.is_dead("gone"), "110 s after, of 120");
        advance(Duration::from_secs(11)).await;
        assert!(!after.is_dead("gone"));
        assert_eq!(after.sweep(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_shorter_remember_holds_for_old_and_new_tokens_and_the_sweep_drops_them() {
        let before = DeadTokens::new(MINUTE);
        before.mark_dead("old");
        advance(Duration::from_secs(5)).await;
        let after = in_service(before.reconfigured(Duration::from_secs(10), 10));
        after.mark_dead("new");
        // A push that began before the reload ends with the memory it started with.
        before.mark_dead("late");
        advance(Duration::from_secs(6)).await;
        assert!(!after.is_dead("old"));
        assert!(after.is_dead("new") && after.is_dead("late"));
        advance(Duration::from_secs(5)).await;
        assert!(!after.is_dead("new") && !after.is_dead("late"));
        assert_eq!(after.sweep(), 3);
        assert!(after.is_empty());
    }
}
