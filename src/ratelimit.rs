//! The per-module token ratelimit, and the memory of tokens a provider declared dead.
//!
//! One [`Ratelimiter`] per push module decides, for each push, whether it goes out now, waits for
//! the end of its token's window, or is turned away because one is already waiting. The decision is
//! taken under the lock of the token's map entry, so two pushes racing for one token can never both
//! go out early, and the memory backend never sleeps or awaits: a queued push is a time to send at,
//! and the caller does the waiting.
//!
//! Entries are compact (a seeded 128-bit hash of the token and an 8-byte timestamp, see
//! `token_key`), so a million cached tokens cost tens of megabytes, not hundreds.
//!
//! A module on the Redis backend (`ratelimit.backend: "redis"`, see `redis`) takes the same
//! decisions in Redis instead, shared by every fpush instance; its local map then only mirrors
//! them, so that it can decide alone, with the same rule, whenever Redis is unreachable.

mod clock;
mod dead_tokens;
mod redis;
mod sweeper;
mod take_back;
mod token_key;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::mapref::entry::Entry;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use clock::{ticks, Clock};
use token_key::{new_token_map, table_bytes, TokenHasher, TokenMap};

pub use dead_tokens::DeadTokens;
/// The connection set-up the registration store shares.
pub(crate) use redis::{Connection as RedisConnection, Endpoint as RedisEndpoint};
pub use redis::{RedisOptions, RedisServers, RedisStore, RedisUrlError};
pub use take_back::finish as finish_take_backs;

use redis::{ModuleKeys, ScriptAnswer, TokenDigest};
use take_back::{Queued, QueuedInRedis};

/// How one module limits pushes per token (`pushModules.<id>.ratelimit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RatelimitConfig {
    /// Off: every push is sent at once and nothing is remembered.
    pub enabled: bool,
    /// `ratelimitTime`: the least time between two sends to one token.
    pub window: Duration,
    /// `ratelimitCleanupInterval`: how long after its last send a token is forgotten.
    pub cleanup_interval: Duration,
}

impl Default for RatelimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: Duration::from_secs(20),
            cleanup_interval: Duration::from_secs(300),
        }
    }
}

/// What to do with one push.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The first push for the token, or its window is over: send now.
    Send,
    /// Queued: sleep until this instant, then send (it is the token's new last send).
    SendAt(Instant),
    /// A push for this token is already queued: do not send, reply at once.
    Reject,
}

/// The ratelimit of one push module: the time of the last send to each token.
///
/// An entry's time may lie in the future: that is a queued push, the send the caller will make at
/// that time. So "a push is queued" needs no flag and no call back when it goes out; it is simply
/// "the last send is later than now".
pub struct Ratelimiter {
    config: RatelimitConfig,
    /// `config.window` in ticks.
    window: u64,
    /// How old a last send must be before the sweep drops it: the cleanup interval, but never less
    /// than the window (a younger entry still limits its token).
    keep: u64,
    clock: Clock,
    hasher: TokenHasher,
    /// Shared with the limiter a reload makes from this one (`reconfigured`).
    last_send: Arc<TokenMap<u64>>,
    /// On the Redis backend: where decisions are taken.
    shared: Option<SharedLimit>,
    /// A disabled limiter holds a token (`hold`) in `last_send` too; until the first hold its
    /// decisions skip the map.
    holding: Arc<AtomicBool>,
    /// Map size at which a disabled limiter next drops ended holds.
    next_release: Arc<AtomicUsize>,
    /// The end of each token's hold (`hold`), asked by a queued push when it wakes (one queued
    /// before the hold must not go out during it), and by every decision on the Redis backend
    /// (`last_send` only mirrors Redis there and is not asked while Redis answers).
    holds: Arc<TokenMap<u64>>,
    /// On the Redis backend, the sends Redis queued for this instance, for `unqueue`.
    queued_in_redis: Arc<QueuedInRedis>,
    /// This limiter's id among those sharing `last_send` (a reload's `reconfigured` makes a new
    /// one), and the id of the one whose sweeper runs last: only that one sweeps, with its own
    /// `keep`, so the sweeper of a limiter a reload replaced (alive while a push it admitted is
    /// queued) never drops an entry the new settings still need.
    generation: u64,
    sweeping: Arc<AtomicU64>,
    /// On the Redis backend, the tokens this instance decided alone (Redis did not answer), and
    /// until when that decision limits them: Redis never heard of those sends, so until then
    /// this instance keeps deciding them itself rather than send them again once Redis answers.
    decided_alone: Arc<TokenMap<u64>>,
}

/// Ids of limiters, for [`Ratelimiter::generation`].
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

/// A disabled limiter lets this many holds accumulate before dropping ended ones.
const RELEASE_AT_LEAST: usize = 1024;

/// A module's place in the shared Redis.
#[derive(Clone)]
struct SharedLimit {
    store: Arc<RedisStore>,
    keys: ModuleKeys,
}

/// Whether a push may go out: the dead-token memory and the ratelimit asked together (in one
/// round trip on the Redis backend).
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// A provider declared the token dead recently: answer without asking it (nothing recorded).
    KnownDead,
    /// The provider throttled the token and its pause is not over: answer `wait` without asking
    /// it, whatever the module answers for pushes its own ratelimit refuses.
    Held,
    /// The ratelimit's decision (recorded like `Ratelimiter::check`'s).
    Decided(Decision),
}

impl Ratelimiter {
    /// A limiter on the memory backend: this instance alone decides.
    pub fn new(config: RatelimitConfig) -> Self {
        Self {
            config,
            window: ticks(config.window),
            keep: ticks(config.window.max(config.cleanup_interval)),
            clock: Clock::starting_now(),
            hasher: TokenHasher::random(),
            last_send: Arc::new(new_token_map()),
            shared: None,
            holding: Arc::default(),
            next_release: Arc::new(AtomicUsize::new(RELEASE_AT_LEAST)),
            holds: Arc::new(new_token_map()),
            queued_in_redis: Arc::default(),
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
            sweeping: Arc::default(),
            decided_alone: Arc::new(new_token_map()),
        }
    }

    /// A limiter on the Redis backend for module `module_id`: decisions are taken in `store`,
    /// shared with every instance that uses the same Redis and key prefix (`admit`).
    pub fn with_redis(config: RatelimitConfig, store: Arc<RedisStore>, module_id: &str) -> Self {
        let keys = store.keys_for(module_id);
        Self {
            shared: Some(SharedLimit { store, keys }),
            ..Self::new(config)
        }
    }

    /// The same limiter with new settings (a reload that changed them): it keeps every token it
    /// remembers, queued pushes included, and applies the new window from the next decision on.
    /// The old limiter's sweeper stops once the old limiter is dropped.
    pub fn reconfigured(&self, config: RatelimitConfig) -> Self {
        let limiter = Self {
            config,
            window: ticks(config.window),
            keep: ticks(config.window.max(config.cleanup_interval)),
            clock: self.clock,
            hasher: self.hasher.clone(),
            last_send: self.last_send.clone(),
            shared: self.shared.clone(),
            holding: self.holding.clone(),
            next_release: self.next_release.clone(),
            holds: self.holds.clone(),
            queued_in_redis: self.queued_in_redis.clone(),
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
            sweeping: self.sweeping.clone(),
            decided_alone: self.decided_alone.clone(),
        };
        if config.enabled && !self.config.enabled {
            limiter.resume_holds();
        }
        limiter
    }

    /// On a limiter a reload switched on: each hold a disabled one recorded in `last_send` (the
    /// end of the pause) becomes what an enabled one records (a window before it), or the first
    /// push after the pause would be queued for a window more, though none was sent.
    fn resume_holds(&self) {
        let now = self.clock.now();
        for hold in self.holds.iter().filter(|hold| *hold.value() > now) {
            if let Some(mut last) = self.last_send.get_mut(hold.key()) {
                // Otherwise a send queued after the pause is recorded there: it stays.
                if *last == *hold.value() {
                    *last = last.saturating_sub(self.window);
                }
            }
        }
    }

    /// Decides what to do with a push for `token`, and records it.
    ///
    /// Atomic per token: the entry stays locked from reading the last send to writing the new one.
    /// A `SendAt` counts as sent at that time from now on, whether or not the caller manages to
    /// send (the window starts when a send is attempted, whatever its outcome).
    pub fn check(&self, token: &str) -> Decision {
        if !self.config.enabled {
            return self.check_held(token);
        }
        let entry = self.last_send.entry(self.hasher.key(token));
        // Read under the entry's lock: a time read before it could be older than the send a
        // racing push recorded meanwhile, which would then look queued and refuse this push.
        let now = self.clock.now();
        match entry {
            Entry::Vacant(vacant) => {
                vacant.insert(now);
                Decision::Send
            }
            Entry::Occupied(mut occupied) => match next_send(*occupied.get(), now, self.window) {
                NextSend::Now => {
                    occupied.insert(now);
                    Decision::Send
                }
                NextSend::At(at) => {
                    occupied.insert(at);
                    Decision::SendAt(self.clock.instant(at))
                }
                NextSend::AlreadyQueued => Decision::Reject,
            },
        }
    }

    /// A disabled limiter's decision: send, unless the token is held.
    fn check_held(&self, token: &str) -> Decision {
        if !self.holding.load(Ordering::Relaxed) {
            return Decision::Send;
        }
        // The holds themselves: `last_send` of a limiter a reload switched off holds queued
        // sends, and none of the holds taken while it was on.
        if self.is_held(token) {
            Decision::Reject
        } else {
            Decision::Send
        }
    }

    /// Holds `token` for `pause` (the provider throttled this token): until then no push for it
    /// goes out. On an enabled limiter the entry moves so that pushes are refused until a window
    /// before the end of the pause, and the next one is queued to its end; on a disabled one
    /// pushes are refused until the end. Only this instance holds it, on either backend: on the
    /// Redis backend its pushes for the token are refused until the end of the pause.
    pub fn hold(&self, token: &str, pause: Duration) {
        let until = self.clock.now().saturating_add(ticks(pause));
        // Also on an enabled limiter: a reload may switch it off during the pause.
        self.holding.store(true, Ordering::Relaxed);
        self.holds
            .entry(self.hasher.key(token))
            .and_modify(|held| *held = (*held).max(until))
            .or_insert(until);
        let last = if self.config.enabled {
            until.saturating_sub(self.window)
        } else {
            self.drop_released_holds();
            until
        };
        self.last_send
            .entry(self.hasher.key(token))
            .and_modify(|held| *held = (*held).max(last))
            .or_insert(last);
    }

    /// On a disabled limiter, drops the holds that ended once the map reaches twice the size it
    /// had after the last such pass, so held tokens cost amortised constant time each. On either
    /// backend `holds` grows alongside and is pruned with it (no sweeper runs for either).
    fn drop_released_holds(&self) {
        let len = self.last_send.len();
        if len < self.next_release.load(Ordering::Relaxed) {
            return;
        }
        let now = self.clock.now();
        self.last_send.retain(|_, until| *until > now);
        self.holds.retain(|_, until| *until > now);
        let left = self.last_send.len();
        self.next_release
            .store((2 * left).max(RELEASE_AT_LEAST), Ordering::Relaxed);
    }

    /// The Redis connection this limiter decides with, if it is on the Redis backend.
    pub fn redis_store(&self) -> Option<&Arc<RedisStore>> {
        self.shared.as_ref().map(|shared| &shared.store)
    }

    /// Decides what to do with a push for `token`, consulting `dead` too. On the Redis backend
    /// that is one script run, atomic across every fpush instance sharing the Redis.
    ///
    /// Always resolves within the store's timeout: when Redis fails, is slow or is known to be
    /// down, the decision is this instance's own (`check` and `DeadTokens::is_dead`), counted in
    /// `RedisStore::fallbacks`. On the memory backend this is just those two.
    pub async fn admit(&self, dead: &DeadTokens, token: &str) -> Admission {
        let Some(shared) = &self.shared else {
            return self.check_locally(dead, token);
        };
        let digest = TokenDigest::of(token);
        let dead_key = dead.shared_key(&shared.store, token, &digest);
        if dead_key.is_none() && dead.is_dead(token) {
            return Admission::KnownDead;
        }
        if self.is_held(token) {
            return Admission::Held;
        }
        if self.config.enabled && self.decided_alone_until(token).is_some() {
            // This instance sent (or queued) for the token while Redis did not answer: Redis
            // does not know, so this instance's own record decides until its window is over.
            shared.store.count_local_decision();
            return self.check_alone(dead, token);
        }
        let window = self.config.enabled.then_some(self.config.window);
        if window.is_none() && dead_key.is_none() {
            // Nothing of this push is shared: asking Redis would only cost time, and a fallback
            // (with its warning and alert) when Redis does not answer.
            return Admission::Decided(Decision::Send);
        }
        let outcome = shared
            .store
            .decide(&shared.keys.ratelimit(&digest), dead_key.as_deref(), window)
            .await;
        match outcome {
            None => self.check_alone(dead, token),
            Some(ScriptAnswer::Dead) => Admission::KnownDead,
            Some(ScriptAnswer::Reject) => Admission::Decided(Decision::Reject),
            Some(ScriptAnswer::Send) => {
                self.mirror(token, None);
                Admission::Decided(Decision::Send)
            }
            Some(ScriptAnswer::SendAfter { delay, stamp }) => {
                // Counted from when the answer arrived, so the send is never earlier than Redis
                // allowed; at most one round trip later.
                let at = Instant::now() + delay;
                self.mirror(token, Some(at));
                let queued = Queued {
                    at: self.clock.ticks_at(at),
                    stamp,
                };
                let key = self.hasher.key(token);
                self.queued_in_redis.remember(key, queued, self.clock.now());
                Admission::Decided(Decision::SendAt(at))
            }
        }
    }

    /// Whether the provider holds `token` now (`hold`); an ended hold is dropped on the way.
    pub fn is_held(&self, token: &str) -> bool {
        let key = self.hasher.key(token);
        let now = self.clock.now();
        let Some(until) = self.holds.get(&key).map(|until| *until) else {
            return false;
        };
        let held = until > now;
        if !held {
            self.holds.remove_if(&key, |_, until| *until <= now);
        }
        held
    }

    /// The decision for a push for `token` when it can be taken without a round trip (the
    /// memory backend); `None` on the Redis backend, where [`Ratelimiter::admit`] decides.
    pub fn admit_at_once(&self, dead: &DeadTokens, token: &str) -> Option<Admission> {
        self.shared
            .is_none()
            .then(|| self.check_locally(dead, token))
    }

    /// Until when a decision this instance took alone still limits `token` (see
    /// `decided_alone`); an ended one is dropped on the way.
    fn decided_alone_until(&self, token: &str) -> Option<u64> {
        let key = self.hasher.key(token);
        let now = self.clock.now();
        let until = *self.decided_alone.get(&key)?;
        if until > now {
            return Some(until);
        }
        self.decided_alone.remove_if(&key, |_, until| *until <= now);
        None
    }

    /// A decision on the Redis backend taken without Redis, remembered (`decided_alone`).
    fn check_alone(&self, dead: &DeadTokens, token: &str) -> Admission {
        let admission = self.check_locally(dead, token);
        if self.config.enabled && matches!(admission, Admission::Decided(_)) {
            let key = self.hasher.key(token);
            if let Some(last) = self.last_send.get(&key).map(|last| *last) {
                let until = last.saturating_add(self.window);
                self.decided_alone
                    .entry(key)
                    .and_modify(|was| *was = (*was).max(until))
                    .or_insert(until);
            }
        }
        admission
    }

    fn check_locally(&self, dead: &DeadTokens, token: &str) -> Admission {
        if dead.is_dead(token) {
            Admission::KnownDead
        } else {
            match self.check(token) {
                // A disabled limiter refuses only a held token. An enabled one refuses a held
                // token until a window before the end of the pause, with nothing queued to
                // cover the push: answered `wait` too, as on Redis, never `rejectWith`.
                Decision::Reject if !self.config.enabled || self.is_held(token) => Admission::Held,
                decision => Admission::Decided(decision),
            }
        }
    }

    /// Records a send that Redis decided in the local map (now, or queued at `at`), so that a
    /// fallback to local decisions starts from what this instance knows.
    fn mirror(&self, token: &str, at: Option<Instant>) {
        if !self.config.enabled {
            return;
        }
        let at = at.map_or_else(|| self.clock.now(), |at| self.clock.ticks_at(at));
        // Never earlier than what is there: a hold written for the fallback must stay.
        self.last_send
            .entry(self.hasher.key(token))
            .and_modify(|last| *last = (*last).max(at))
            .or_insert(at);
    }

    /// Takes back the queued send at `at` that a decision recorded for `token`, when the push
    /// could not be queued after all (no room): the token keeps its last real send, instead of
    /// refusing every push until `at` as already queued while none is. When Redis took that
    /// decision, the shared entry is taken back too (in a task of its own, one more round trip,
    /// which shutdown waits for: see `take_back`), or every instance would refuse the token's
    /// pushes until `at` and none would send then.
    pub fn unqueue(&self, token: &str, at: Instant) {
        self.unqueue_locally(token, at);
        if let Some(undo) = self.unqueue_shared(token, at) {
            take_back::spawn(undo);
        }
    }

    /// [`Ratelimiter::unqueue`] in this instance's map.
    fn unqueue_locally(&self, token: &str, at: Instant) {
        let at = self.clock.ticks_at(at);
        if let Some(mut last) = self.last_send.get_mut(&self.hasher.key(token)) {
            // Untouched since (no hold moved it): the send before it was one window earlier.
            if *last == at {
                *last = at.saturating_sub(self.window);
            }
        }
    }

    /// The call that takes back, in the shared entry, the send at `at` that Redis queued for
    /// `token` (true when the entry still held it); `None` when Redis queued none there.
    fn unqueue_shared(
        &self,
        token: &str,
        at: Instant,
    ) -> Option<impl Future<Output = bool> + Send + 'static> {
        let shared = self.shared.clone()?;
        let queued = self
            .queued_in_redis
            .take(&self.hasher.key(token), self.clock.ticks_at(at))?;
        let key = shared.keys.ratelimit(&TokenDigest::of(token));
        let window = self.config.window;
        Some(async move { shared.store.unqueue(&key, queued.stamp, window).await })
    }

    /// Forgets `token` in this instance (a token that cannot exist need not be limited).
    pub fn forget(&self, token: &str) {
        self.last_send.remove(&self.hasher.key(token));
    }

    /// Drops the entries whose last send is at least `max(cleanup_interval, window)` old, and
    /// returns how many it dropped. Entries with a queued push are never dropped.
    ///
    /// The table keeps its capacity, so the next fill reuses the memory instead of growing.
    pub fn sweep(&self) -> usize {
        let now = self.clock.now();
        let mut removed = 0;
        self.last_send.retain(|_, last| {
            let stale = *last <= now && now - *last >= self.keep;
            removed += usize::from(stale);
            !stale
        });
        self.holds.retain(|_, until| *until > now);
        self.decided_alone.retain(|_, until| *until > now);
        self.queued_in_redis.sweep(now);
        removed
    }

    /// [`Ratelimiter::sweep`], unless a reload's limiter took the map over (its own sweeper
    /// sweeps it then, with the settings now in force).
    fn sweep_if_current(&self) -> usize {
        if self.sweeping.load(Ordering::Acquire) != self.generation {
            return 0;
        }
        self.sweep()
    }

    /// The number of tokens remembered.
    pub fn len(&self) -> usize {
        self.last_send.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last_send.is_empty()
    }

    /// The heap the token table holds: its allocated buckets, used or not (tables never shrink).
    pub fn table_bytes(&self) -> usize {
        table_bytes(&self.last_send)
    }

    /// Sweeps every `cleanup_interval`, or every 300 s if that is shorter (never more often than
    /// once a second), until `shutdown`. A disabled limiter keeps nothing but held tokens, which
    /// `hold` drops itself: its task ends at once.
    ///
    /// On the Redis backend this is also when the daemon first runs the limiter, so its store
    /// logs then which Redis nodes answer (once per store).
    pub fn spawn_sweeper(self: &Arc<Self>, shutdown: CancellationToken) -> JoinHandle<()> {
        if let Some(shared) = &self.shared {
            shared.store.log_nodes_once();
        }
        // From now on only this limiter's sweeper sweeps the shared map.
        self.sweeping.store(self.generation, Ordering::Release);
        if !self.config.enabled {
            // Switched off (by a reload, on a map it shares), a limiter asks only entries in the
            // future (holds) and nothing sweeps the rest: past sends would stay until a restart.
            let now = self.clock.now();
            self.last_send.retain(|_, last| *last > now);
            return sweeper::none();
        }
        let period = sweeper::period_for(self.config.cleanup_interval);
        sweeper::spawn(self, period, shutdown, Self::sweep_if_current, "ratelimit")
    }
}

impl std::fmt::Debug for Ratelimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ratelimiter")
            .field("config", &self.config)
            .field(
                "backend",
                &if self.shared.is_some() {
                    "redis"
                } else {
                    "memory"
                },
            )
            .field("tokens", &self.len())
            .finish_non_exhaustive()
    }
}

/// When the next push for a token may go out.
#[derive(Debug, PartialEq, Eq)]
enum NextSend {
    Now,
    At(u64),
    AlreadyQueued,
}

/// The ratelimit rule on timestamps: `last` is the token's last (or queued) send.
fn next_send(last: u64, now: u64, window: u64) -> NextSend {
    if last > now {
        NextSend::AlreadyQueued
    } else if now - last >= window {
        NextSend::Now
    } else {
        NextSend::At(last + window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_sends_queues_and_rejects_by_timestamp() {
        assert_eq!(next_send(100, 100, 20), NextSend::At(120));
        assert_eq!(next_send(100, 119, 20), NextSend::At(120));
        assert_eq!(next_send(100, 120, 20), NextSend::Now);
        assert_eq!(next_send(120, 110, 20), NextSend::AlreadyQueued);
        // The queued send's own instant has come: it counts as sent, the next one waits a window.
        assert_eq!(next_send(120, 120, 20), NextSend::At(140));
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_token_is_refused_then_queued_to_the_end_of_its_pause() {
        let limiter = Ratelimiter::new(RatelimitConfig {
            window: Duration::from_secs(20),
            ..RatelimitConfig::default()
        });
        assert_eq!(limiter.check("t"), Decision::Send);
        limiter.hold("t", Duration::from_secs(60));
        assert_eq!(limiter.check("t"), Decision::Reject);
        assert_eq!(
            limiter.check("other"),
            Decision::Send,
            "only that token is held"
        );
        tokio::time::advance(Duration::from_secs(45)).await;
        let end = Instant::now() + Duration::from_secs(15);
        assert_eq!(limiter.check("t"), Decision::SendAt(end));
    }

    #[tokio::test(start_paused = true)]
    async fn a_disabled_limiter_holds_a_throttled_token_until_its_pause_ends() {
        let limiter = Ratelimiter::new(RatelimitConfig {
            enabled: false,
            ..RatelimitConfig::default()
        });
        limiter.hold("t", Duration::from_secs(30));
        assert_eq!(limiter.check("t"), Decision::Reject);
        assert_eq!(limiter.check("other"), Decision::Send);
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(limiter.check("t"), Decision::Send);
        assert_eq!(
            limiter.check("t"),
            Decision::Send,
            "no window once the pause ended"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_disabled_limiter_drops_ended_holds_as_it_grows() {
        let limiter = Ratelimiter::new(RatelimitConfig {
            enabled: false,
            ..RatelimitConfig::default()
        });
        for i in 0..RELEASE_AT_LEAST {
            limiter.hold(&format!("t{i}"), Duration::from_secs(1));
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        limiter.hold("last", Duration::from_secs(1));
        assert_eq!(limiter.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_disabled_limiter_on_redis_drops_ended_holds_as_it_grows() {
        let store = RedisStore::new("redis://127.0.0.1:1", "fpush:", RedisOptions::default());
        let Ok(store) = store else {
            panic!("a well-formed URL is accepted without connecting");
        };
        let config = RatelimitConfig {
            enabled: false,
            ..RatelimitConfig::default()
        };
        let limiter = Ratelimiter::with_redis(config, store, "app");
        for i in 0..RELEASE_AT_LEAST {
            limiter.hold(&format!("t{i}"), Duration::from_secs(1));
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        limiter.hold("last", Duration::from_secs(1));
        // No sweeper runs for a disabled limiter: the holds must not pile up either.
        assert_eq!(limiter.len(), 1);
        assert_eq!(limiter.holds.len(), 1);
    }

    /// A `redis-server` of the test's own (its files in `_dir`), killed when dropped.
    struct RedisChild {
        child: std::process::Child,
        _dir: tempfile::TempDir,
        url: String,
    }

    impl RedisChild {
        /// The shared ratelimit entry of `limiter`'s `token`, as Redis holds it now.
        async fn entry(&self, limiter: &Ratelimiter, token: &str) -> Option<String> {
            let shared = limiter.shared.as_ref().unwrap();
            let key = shared.keys.ratelimit(&TokenDigest::of(token));
            let client = ::redis::Client::open(self.url.as_str()).unwrap();
            let mut connection = client.get_multiplexed_async_connection().await.unwrap();
            ::redis::AsyncCommands::get(&mut connection, key)
                .await
                .unwrap()
        }

        /// Sets the shared entry of `limiter`'s `token`, as another instance's decision would.
        async fn set_entry(&self, limiter: &Ratelimiter, token: &str, value: &str) {
            let shared = limiter.shared.as_ref().unwrap();
            let key = shared.keys.ratelimit(&TokenDigest::of(token));
            let client = ::redis::Client::open(self.url.as_str()).unwrap();
            let mut connection = client.get_multiplexed_async_connection().await.unwrap();
            let () = ::redis::cmd("SET")
                .arg(key)
                .arg(value)
                .arg("PX")
                .arg(60_000)
                .query_async(&mut connection)
                .await
                .unwrap();
        }

        /// Waits until the shared entry of `token` is no longer `was`.
        async fn wait_for_change(&self, limiter: &Ratelimiter, token: &str, was: Option<String>) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.entry(limiter, token).await == was {
                assert!(Instant::now() < deadline, "the shared entry stayed {was:?}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    impl Drop for RedisChild {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Two instances' limiters for one module, sharing a fresh Redis.
    fn two_instances_on_redis(window: Duration) -> (RedisChild, Ratelimiter, Ratelimiter) {
        let dir = tempfile::tempdir().unwrap();
        let (child, port) = fpush_testkit::redis_server::start(dir.path(), &[]);
        let url = format!("redis://127.0.0.1:{port}");
        let server = RedisChild {
            child,
            _dir: dir,
            url: url.clone(),
        };
        let config = RatelimitConfig {
            window,
            ..RatelimitConfig::default()
        };
        let instance = || {
            let store = RedisStore::new(&url, "fpush:", RedisOptions::default()).unwrap();
            Ratelimiter::with_redis(config, store, "app")
        };
        (server, instance(), instance())
    }

    #[tokio::test]
    async fn a_push_that_could_not_be_queued_is_taken_back_from_redis_for_every_instance() {
        let (redis, a, b) = two_instances_on_redis(Duration::from_secs(20));
        let dead = DeadTokens::new(Duration::ZERO);
        assert_eq!(
            a.admit(&dead, "t").await,
            Admission::Decided(Decision::Send)
        );
        let Admission::Decided(Decision::SendAt(at)) = a.admit(&dead, "t").await else {
            panic!("the second push within the window is queued");
        };
        // Instance a's queue is full (`limits.maxQueuedPushes`): the push is answered `wait`,
        // and the queued send is taken back, in Redis by a task of its own.
        let queued = redis.entry(&a, "t").await;
        assert!(queued.is_some());
        a.unqueue("t", at);
        redis.wait_for_change(&a, "t", queued).await;
        // The next push for the token, on any instance, is queued as usual: one goes out then.
        let next = b.admit(&dead, "t").await;
        assert!(
            matches!(next, Admission::Decided(Decision::SendAt(_))),
            "{next:?}: refused as already queued, while nothing is"
        );
        assert_eq!(
            a.admit(&dead, "t").await,
            Admission::Decided(Decision::Reject)
        );
    }

    /// Decides two pushes for `token` on `limiter`: the first is sent, the second queued (at).
    async fn send_then_queue(limiter: &Ratelimiter, token: &str) -> Instant {
        let dead = DeadTokens::new(Duration::ZERO);
        let first = limiter.admit(&dead, token).await;
        assert_eq!(first, Admission::Decided(Decision::Send));
        match limiter.admit(&dead, token).await {
            Admission::Decided(Decision::SendAt(at)) => at,
            other => panic!("{other:?}: the second push within the window is queued"),
        }
    }

    #[tokio::test]
    async fn a_take_back_never_removes_a_send_queued_after_it() {
        let (redis, a, _b) = two_instances_on_redis(Duration::from_secs(20));
        let at = send_then_queue(&a, "t").await;
        let Some(stamp) = redis.entry(&a, "t").await else {
            panic!("the queued send is in Redis");
        };
        // Meanwhile another decision recorded a later send for the token (its take-back came
        // late, after the queued time, and another push was queued then).
        let later = (stamp.parse::<u64>().unwrap() + 1_000).to_string();
        redis.set_entry(&a, "t", &later).await;
        a.unqueue("t", at);
        assert!(finish_take_backs(Duration::from_secs(10)).await);
        assert_eq!(redis.entry(&a, "t").await, Some(later));
    }

    #[tokio::test]
    async fn a_decision_taken_without_redis_is_not_taken_back_from_it_once_it_answers_again() {
        let dir = tempfile::tempdir().unwrap();
        let (mut child, port) = fpush_testkit::redis_server::start(dir.path(), &[]);
        let url = format!("redis://127.0.0.1:{port}");
        let config = RatelimitConfig::default();
        // Retried at the next push after a failure, so that Redis counts as up again at once.
        let options = RedisOptions {
            retry_after: Duration::ZERO,
            ..RedisOptions::default()
        };
        let instance = || {
            let store = RedisStore::new(&url, "fpush:", options).unwrap();
            Ratelimiter::with_redis(config, store, "app")
        };
        let (a, b) = (instance(), instance());
        child.kill().unwrap();
        child.wait().unwrap();
        // Redis is down: instance a queues the push itself.
        let at = send_then_queue(&a, "t").await;
        let restarted = fpush_testkit::redis_server::start_on(port, dir.path(), &[]);
        let redis = RedisChild {
            child: restarted.unwrap(),
            _dir: dir,
            url: url.clone(),
        };
        // Redis is back: instance b's push is queued there, and Redis answers a again.
        send_then_queue(&b, "t").await;
        let queued_by_b = redis.entry(&b, "t").await;
        assert!(queued_by_b.is_some(), "b's push is queued in Redis");
        let dead = DeadTokens::new(Duration::ZERO);
        assert_eq!(
            a.admit(&dead, "other").await,
            Admission::Decided(Decision::Send)
        );
        // a's queue was full: its own decision is taken back, never b's queued send.
        a.unqueue("t", at);
        assert!(finish_take_backs(Duration::from_secs(10)).await);
        assert_eq!(redis.entry(&b, "t").await, queued_by_b);
    }

    #[test]
    fn a_take_back_is_done_before_the_runtime_ends() {
        let (redis, a, b) = two_instances_on_redis(Duration::from_secs(20));
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        // The process's last moments: the push is refused for a full queue, shutdown follows,
        // the runtime ends (its unfinished tasks dropped).
        let queued = runtime().block_on(async {
            let at = send_then_queue(&a, "t").await;
            let queued = redis.entry(&a, "t").await;
            a.unqueue("t", at);
            finish_take_backs(Duration::from_secs(10)).await;
            queued
        });
        runtime().block_on(async {
            assert_ne!(redis.entry(&a, "t").await, queued, "not taken back");
            let next = b.admit(&DeadTokens::new(Duration::ZERO), "t").await;
            assert!(
                matches!(next, Admission::Decided(Decision::SendAt(_))),
                "{next:?}: refused as already queued, while nothing is"
            );
        });
    }

    #[tokio::test]
    async fn a_send_is_never_taken_back_from_redis() {
        let (_redis, a, b) = two_instances_on_redis(Duration::from_secs(20));
        let dead = DeadTokens::new(Duration::ZERO);
        assert_eq!(
            a.admit(&dead, "t").await,
            Admission::Decided(Decision::Send)
        );
        assert!(
            a.unqueue_shared("t", Instant::now()).is_none(),
            "Redis queued nothing"
        );
        let next = b.admit(&dead, "t").await;
        assert!(
            matches!(next, Admission::Decided(Decision::SendAt(_))),
            "{next:?}: the send still limits its token"
        );
    }

    #[test]
    fn a_zero_window_always_sends() {
        assert_eq!(next_send(100, 100, 0), NextSend::Now);
    }

    #[test]
    fn the_limiter_and_dead_tokens_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Ratelimiter>();
        shareable::<DeadTokens>();
    }
}
