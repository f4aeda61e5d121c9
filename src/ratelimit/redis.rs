//! The shared backend: one connection to Redis for the whole process, and the calls the shared
//! ratelimit and dead-token memory make on it.
//!
//! Every call is bounded by a short timeout and goes through [`Health`], so a Redis that is down
//! or slow turns into local decisions (see `Ratelimiter::admit`), never into a lost or
//! stuck push. The connection is the `redis` crate's reconnecting `ConnectionManager`, created on
//! first use: building the modules (and `fpush --check`) needs no Redis.

mod health;
mod keys;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, RedisError, Script};

use health::Health;
pub(crate) use keys::{ModuleKeys, TokenDigest};

/// The decision script, loaded once per connection (`EVALSHA`, then `EVAL` if Redis lacks it).
const DECIDE_LUA: &str = include_str!("redis/decide.lua");

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

/// A `redis.url` the `redis` crate cannot use.
#[derive(Debug, thiserror::Error)]
#[error("redis.url: {0}")]
pub struct RedisUrlError(#[source] RedisError);

/// What Redis decided for one push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScriptAnswer {
    Send,
    /// Queued: send after this long from now.
    SendAfter(Duration),
    Reject,
    Dead,
}

/// The connection to the Redis that several fpush instances share.
pub struct RedisStore {
    client: Client,
    /// As configured, to tell whether a reload points elsewhere.
    url: String,
    key_prefix: String,
    options: RedisOptions,
    connection: OnceLock<ConnectionManager>,
    health: Health,
    decide: Script,
}

impl RedisStore {
    /// Checks the URL (`redis://`, `rediss://`, with user and password as the `redis` crate
    /// accepts them) without connecting.
    pub fn new(
        url: &str,
        key_prefix: &str,
        options: RedisOptions,
    ) -> Result<Arc<Self>, RedisUrlError> {
        let client = Client::open(url).map_err(RedisUrlError)?;
        Ok(Arc::new(Self {
            client,
            url: url.to_owned(),
            key_prefix: key_prefix.to_owned(),
            options,
            connection: OnceLock::new(),
            health: Health::new(options.retry_after),
            decide: Script::new(DECIDE_LUA),
        }))
    }

    /// Decisions and dead-token writes taken locally because Redis failed, was too slow or was
    /// known to be down. Only grows; for the metrics.
    pub fn fallbacks(&self) -> u64 {
        self.health.fallbacks()
    }

    /// Whether this store was made for this URL and key prefix (a reload keeps it then).
    pub fn is_for(&self, url: &str, key_prefix: &str) -> bool {
        self.url == url && self.key_prefix == key_prefix
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
        let window = window.map_or_else(|| "off".to_owned(), |window| micros(window).to_string());
        let mut invocation = self.decide.prepare_invoke();
        invocation
            .key(ratelimit_key)
            .key(dead_key.unwrap_or(ratelimit_key))
            .arg(window)
            .arg(if dead_key.is_some() { "1" } else { "0" });
        let (outcome, delay): (i64, i64) = self
            .call(|mut connection| async move { invocation.invoke_async(&mut connection).await })
            .await?;
        match outcome {
            0 => Some(ScriptAnswer::Send),
            1 => Some(ScriptAnswer::SendAfter(Duration::from_micros(
                u64::try_from(delay).unwrap_or(0),
            ))),
            2 => Some(ScriptAnswer::Reject),
            3 => Some(ScriptAnswer::Dead),
            other => {
                self.health
                    .failed(&format_args!("the decision script answered {other}"));
                None
            }
        }
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
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        if !self.health.may_ask() {
            return None;
        }
        let connection = match self.connection() {
            Ok(connection) => connection,
            Err(error) => {
                self.health.failed(&error);
                return None;
            }
        };
        match tokio::time::timeout(self.options.timeout, request(connection)).await {
            Ok(Ok(value)) => {
                self.health.succeeded();
                Some(value)
            }
            Ok(Err(error)) => {
                self.health.failed(&error);
                None
            }
            Err(_) => {
                self.health.failed(&format_args!(
                    "no answer within {}",
                    humantime::format_duration(self.options.timeout)
                ));
                None
            }
        }
    }

    /// The shared connection, created on first use (it connects lazily, and reconnects by itself
    /// after a failure).
    fn connection(&self) -> Result<ConnectionManager, RedisError> {
        if let Some(connection) = self.connection.get() {
            return Ok(connection.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.options.timeout))
            .set_response_timeout(Some(self.options.timeout))
            // Our own retry period paces reconnects; the manager's backoff would only keep a
            // connect pending past the timeout.
            .set_number_of_retries(0);
        let created = ConnectionManager::new_lazy_with_config(self.client.clone(), config)?;
        Ok(self.connection.get_or_init(|| created).clone())
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: show only where it points.
        f.debug_struct("RedisStore")
            .field("addr", &self.client.get_connection_info().addr())
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

    #[test]
    fn a_malformed_url_is_refused_without_connecting() {
        let error = RedisStore::new("http://nowhere", "fpush:", RedisOptions::default())
            .err()
            .map(|e| e.to_string());
        assert!(error.is_some_and(|e| e.starts_with("redis.url: ")));
        assert!(RedisStore::new("redis://127.0.0.1:1", "fpush:", RedisOptions::default()).is_ok());
    }
}
