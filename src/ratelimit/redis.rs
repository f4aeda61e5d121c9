//! The shared backend: one connection to Redis (one server or a Redis Cluster) for the whole
//! process, and the calls the shared ratelimit and dead-token memory make on it.
//!
//! Every call is bounded by a short timeout and goes through [`Health`], so a Redis that is down,
//! slow or refusing turns into local decisions (see `Ratelimiter::admit`), never into a lost or
//! stuck push. The connection is created on first use (see `connection`): building the modules
//! (and `fpush --check`) needs no Redis. Every call's keys share one cluster slot (see `keys`).

mod cause;
mod connection;
mod health;
mod keys;
mod probe;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ::redis::{RedisError, Script};

use crate::metrics::{FallbackCause, RedisFallbacks};
use cause::cause_of;
pub(crate) use connection::{Connection, Endpoint};
pub use connection::{RedisServers, RedisUrlError};
use health::Health;
pub(crate) use keys::{ModuleKeys, TokenDigest};

/// The decision script, loaded once per connection (`EVALSHA`, then `EVAL` if Redis lacks it).
const DECIDE_LUA: &str = include_str!("redis/decide.lua");
/// Takes back a queued send that could not be queued locally (see the script).
const UNQUEUE_LUA: &str = include_str!("redis/unqueue.lua");

/// How patient fpush is with Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisOptions {
    /// The longest a push waits for Redis before it is decided locally.
    pub timeout: Duration,
    /// After a failure, how long every push is decided locally before Redis is tried again.
    pub retry_after: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(250),
            retry_after: Duration::from_secs(1),
        }
    }
}

/// What Redis decided for one push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScriptAnswer {
    Send,
    /// Queued: send after `delay` from now; Redis recorded the send at `stamp` (microseconds of
    /// its clock), which a take-back names.
    SendAfter {
        delay: Duration,
        stamp: u64,
    },
    Reject,
    Dead,
}

/// The connection to the Redis that several fpush instances share.
pub struct RedisStore {
    endpoint: Endpoint,
    /// As configured, to tell whether a reload points elsewhere.
    servers: RedisServers,
    key_prefix: String,
    options: RedisOptions,
    connection: OnceLock<Connection>,
    health: Health,
    decide: Script,
    unqueue: Script,
    /// Whether the start-up look at the nodes has been started (`log_nodes_once`).
    nodes_logged: AtomicBool,
}

impl RedisStore {
    /// A store on one Redis server; see [`RedisStore::open`].
    pub fn new(
        url: &str,
        key_prefix: &str,
        options: RedisOptions,
    ) -> Result<Arc<Self>, RedisUrlError> {
        Self::open(
            RedisServers::Single(url.to_owned()),
            key_prefix,
            options,
            RedisFallbacks::detached(),
        )
    }

    /// Checks the URLs (`redis://`, `rediss://`, with user and password as the `redis` crate
    /// accepts them) without connecting. Local decisions are counted in `fallbacks` by cause.
    pub fn open(
        servers: RedisServers,
        key_prefix: &str,
        options: RedisOptions,
        fallbacks: RedisFallbacks,
    ) -> Result<Arc<Self>, RedisUrlError> {
        Ok(Arc::new(Self {
            endpoint: Endpoint::open(&servers, options.timeout)?,
            servers,
            key_prefix: key_prefix.to_owned(),
            options,
            connection: OnceLock::new(),
            health: Health::new(options.retry_after, fallbacks),
            decide: Script::new(DECIDE_LUA),
            unqueue: Script::new(UNQUEUE_LUA),
            nodes_logged: AtomicBool::new(false),
        }))
    }

    /// Decisions and dead-token writes taken locally because Redis failed, refused, was too
    /// slow or was known to be down. Only grows.
    pub fn fallbacks(&self) -> u64 {
        self.health.fallbacks()
    }

    /// Counts a decision taken locally without asking Redis (see `Health::decided_locally`).
    pub(crate) fn count_local_decision(&self) {
        self.health.decided_locally();
    }

    /// Whether this store was made for these servers and key prefix (a reload keeps it then).
    pub fn is_for(&self, servers: &RedisServers, key_prefix: &str) -> bool {
        self.servers == *servers && self.key_prefix == key_prefix
    }

    /// Logs, in a task of its own and only the first time it is called, which configured nodes
    /// answer: the start-up line an operator reads to know the shared store is there.
    pub fn log_nodes_once(self: &Arc<Self>) {
        if self.nodes_logged.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let store = self.clone();
            runtime.spawn(async move {
                probe::log_nodes(&store.endpoint, store.options.timeout).await;
            });
        }
    }

    pub(crate) fn keys_for(&self, module_id: &str) -> ModuleKeys {
        ModuleKeys::new(&self.key_prefix, module_id)
    }

    /// Runs the decision script for one push; `None` when the caller must decide locally.
    ///
    /// `window: None` means the module's ratelimit is off (only the dead-token entry matters).
    pub(crate) async fn decide(
        &self,
        ratelimit_key: &str,
        dead_key: Option<&str>,
        window: Option<Duration>,
    ) -> Option<ScriptAnswer> {
        let longest_wait = window.unwrap_or_default();
        let window = window.map_or_else(|| "off".to_owned(), |window| micros(window).to_string());
        let mut invocation = self.decide.prepare_invoke();
        invocation
            .key(ratelimit_key)
            .key(dead_key.unwrap_or(ratelimit_key))
            .arg(window)
            .arg(if dead_key.is_some() { "1" } else { "0" });
        let answer: Vec<i64> = self
            .call(|mut connection| async move { invocation.invoke_async(&mut connection).await })
            .await?;
        let [outcome, delay, ..] = answer[..] else {
            let text = format_args!("the decision script answered {answer:?}");
            self.health.failed(FallbackCause::error, &text);
            return None;
        };
        // Without the recorded time (a foreign script), a queued send is never taken back.
        let stamp = answer.get(2).copied().unwrap_or(0);
        match outcome {
            0 => Some(ScriptAnswer::Send),
            // A queued send is never further away than one window: a larger answer (a foreign
            // or broken script, a clock gone astray) must not park a push for ages.
            1 => Some(ScriptAnswer::SendAfter {
                delay: Duration::from_micros(u64::try_from(delay).unwrap_or(0)).min(longest_wait),
                stamp: u64::try_from(stamp).unwrap_or(0),
            }),
            2 => Some(ScriptAnswer::Reject),
            3 => Some(ScriptAnswer::Dead),
            other => {
                self.health.failed(
                    FallbackCause::error,
                    &format_args!("the decision script answered {other}"),
                );
                None
            }
        }
    }

    /// Takes back the queued send at `stamp` that [`RedisStore::decide`] recorded in
    /// `ratelimit_key`, when the push could not be queued after all; true when the entry still
    /// held exactly that send. Not tried while Redis is known to be down (and not counted as a
    /// fallback, being no decision).
    pub(crate) async fn unqueue(&self, ratelimit_key: &str, stamp: u64, window: Duration) -> bool {
        if self.health.is_down() {
            return false;
        }
        let mut invocation = self.unqueue.prepare_invoke();
        invocation
            .key(ratelimit_key)
            .arg(micros(window))
            .arg(stamp.to_string());
        let taken: Option<i64> = self
            .call(|mut connection| async move { invocation.invoke_async(&mut connection).await })
            .await;
        taken == Some(1)
    }

    /// Remembers a dead token for `remember`; false when Redis could not be told.
    pub(crate) async fn set_dead(&self, dead_key: &str, remember: Duration) -> bool {
        let millis = u64::try_from(remember.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut command = ::redis::cmd("SET");
        command.arg(dead_key).arg(1).arg("PX").arg(millis);
        self.call(|mut connection| async move { command.query_async::<()>(&mut connection).await })
            .await
            .is_some()
    }

    /// Forgets a dead token; false when Redis could not be told.
    pub(crate) async fn delete(&self, key: &str) -> bool {
        let mut command = ::redis::cmd("DEL");
        command.arg(key);
        self.call(|mut connection| async move { command.query_async::<()>(&mut connection).await })
            .await
            .is_some()
    }

    /// One bounded call to Redis, accounted in [`Health`]; `None` means "do it locally".
    async fn call<T, F, Fut>(&self, request: F) -> Option<T>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        if !self.health.may_ask() {
            return None;
        }
        let connection = match self.connection() {
            Ok(connection) => connection,
            Err(error) => {
                self.health.failed(cause_of(&error), &error);
                return None;
            }
        };
        match tokio::time::timeout(self.options.timeout, request(connection)).await {
            Ok(Ok(value)) => {
                self.health.succeeded();
                Some(value)
            }
            Ok(Err(error)) => {
                self.health.failed(cause_of(&error), &error);
                None
            }
            Err(_) => {
                self.health.failed(
                    FallbackCause::timeout,
                    &format_args!(
                        "no answer within {}",
                        humantime::format_duration(self.options.timeout)
                    ),
                );
                None
            }
        }
    }

    /// The shared connection, created on first use (it connects lazily, and reconnects by itself
    /// after a failure).
    fn connection(&self) -> Result<Connection, RedisError> {
        if let Some(connection) = self.connection.get() {
            return Ok(connection.clone());
        }
        let created = self.endpoint.connect_lazily(self.options.timeout)?;
        Ok(self.connection.get_or_init(|| created).clone())
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: show only where it points.
        f.debug_struct("RedisStore")
            .field("servers", &self.endpoint.describe())
            .field("key_prefix", &self.key_prefix)
            .field("options", &self.options)
            .field("fallbacks", &self.fallbacks())
            .finish_non_exhaustive()
    }
}

/// A duration in whole microseconds, saturating (a window beyond half a million years is that).
fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(urls: &[&str]) -> Result<Arc<RedisStore>, RedisUrlError> {
        RedisStore::open(
            RedisServers::Cluster(urls.iter().map(|url| (*url).to_owned()).collect()),
            "fpush:",
            RedisOptions::default(),
            RedisFallbacks::detached(),
        )
    }

    #[test]
    fn a_malformed_url_is_refused_without_connecting() {
        let error = RedisStore::new("http://nowhere", "fpush:", RedisOptions::default())
            .err()
            .map(|e| e.to_string());
        assert!(error.is_some_and(|e| e.starts_with("redis.url: ")));
        assert!(RedisStore::new("redis://127.0.0.1:1", "fpush:", RedisOptions::default()).is_ok());
    }

    #[test]
    fn a_malformed_cluster_node_is_refused_by_its_index_without_connecting() {
        let error = cluster(&["redis://127.0.0.1:1", "http://nowhere"])
            .err()
            .map(|e| e.to_string());
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.starts_with("redis.cluster[1]: ")),
            "{error:?}"
        );
        let store = cluster(&["redis://127.0.0.1:1", "rediss://127.0.0.1:2"]);
        assert!(store.is_err(), "the cluster client wants one TLS mode");
        assert!(cluster(&["redis://127.0.0.1:1", "redis://127.0.0.1:2"]).is_ok());
    }

    #[test]
    fn a_store_is_kept_only_for_the_same_servers_and_prefix() {
        let Ok(store) = cluster(&["redis://127.0.0.1:1"]) else {
            panic!("a valid seed list");
        };
        let same = RedisServers::Cluster(vec!["redis://127.0.0.1:1".to_owned()]);
        assert!(store.is_for(&same, "fpush:"));
        assert!(!store.is_for(&same, "other:"));
        assert!(!store.is_for(
            &RedisServers::Single("redis://127.0.0.1:1".to_owned()),
            "fpush:"
        ));
    }
}
