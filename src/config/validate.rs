//! Checks that need more than one key, or that no type can express: what makes a settings
//! file wrong even though every value has the right type.
//!
//! Decisions, so they are written down once:
//! - `ratelimitTime: "0s"` with the ratelimit enabled is an error: it would mean "no ratelimit"
//!   while saying "ratelimit on"; `enabled: false` says it plainly.
//! - `keepaliveTimeout` must be shorter than `keepaliveInterval`: one ping is outstanding at a
//!   time, and a timeout that outlives the interval would let the next ping start before the
//!   last one was judged.
//! - Zero is refused where it would make fpush spin or never act (`xmppconnectionError`,
//!   `keepaliveInterval`, `keepaliveTimeout`, `ratelimitCleanupInterval`,
//!   `maxConcurrentPushes`); it is allowed where it means "off" (`deadTokens.remember`,
//!   `limits.shutdownGrace`).
//! - `maxStanzaSize` below 4 KiB and `maxDepth` below 16 would reject ordinary push IQs
//!   (a Prosody push is about 1.5 KB and nests about 9 elements deep, the stream included).

use std::time::Duration;

use super::document::Document;
use super::{
    ComponentSettings, ConfigError, LimitSettings, ModuleSettings, RatelimitBackend, RedisSettings,
    TimeoutSettings,
};

const MIN_STANZA_SIZE: usize = 4 * 1024;
const MIN_DEPTH: usize = 16;

/// The checks, each on the part it needs, so that a part that could not be read does not keep
/// the others from being checked.
pub(crate) struct Check<'a> {
    document: &'a Document,
    errors: &'a mut Vec<ConfigError>,
}

impl<'a> Check<'a> {
    pub fn new(document: &'a Document, errors: &'a mut Vec<ConfigError>) -> Self {
        Check { document, errors }
    }

    /// An error at `path`, positioned at its key (or, for a key left at its default, at its
    /// nearest ancestor in the file).
    fn error(&mut self, path: &str, message: impl Into<String>) {
        let pos = self.document.key_pos(path);
        self.errors.push(ConfigError::new(path, pos, message));
    }

    fn not_zero(&mut self, path: &str, value: Duration, what: &str) {
        if value.is_zero() {
            self.error(path, format!("must be longer than 0s ({what})"));
        }
    }

    pub fn component(&mut self, component: &ComponentSettings) {
        let hostname = &component.component_hostname;
        if hostname.trim().is_empty() {
            self.error("component.componentHostname", "must not be empty");
        } else if hostname.contains(|c: char| c.is_whitespace() || c == '@' || c == '/') {
            self.error(
                "component.componentHostname",
                "must be a bare domain such as push.example.org",
            );
        }
        if component.component_key.is_empty() {
            self.error(
                "component.componentKey",
                "must not be empty (it is the component secret set in the XMPP server)",
            );
        }
        if component.server_hostname.trim().is_empty() {
            self.error("component.serverHostname", "must not be empty");
        }
        if component.server_port == 0 {
            self.error("component.serverPort", "must not be 0");
        }
    }

    pub fn timeout(&mut self, timeout: &TimeoutSettings) {
        self.not_zero(
            "timeout.xmppconnectionError",
            timeout.xmpp_connection_error,
            "fpush would reconnect in a tight loop",
        );
        self.not_zero(
            "timeout.keepaliveInterval",
            timeout.keepalive_interval,
            "the link's keepalive ping needs a cadence",
        );
        self.not_zero(
            "timeout.keepaliveTimeout",
            timeout.keepalive_timeout,
            "every link would be declared dead at once",
        );
        if !timeout.keepalive_timeout.is_zero()
            && timeout.keepalive_timeout >= timeout.keepalive_interval
        {
            self.error(
                "timeout.keepaliveTimeout",
                format!(
                    "must be shorter than keepaliveInterval ({})",
                    humantime::format_duration(timeout.keepalive_interval)
                ),
            );
        }
    }

    pub fn limits(&mut self, limits: &LimitSettings) {
        if limits.max_concurrent_pushes == 0 {
            self.error(
                "limits.maxConcurrentPushes",
                "must be at least 1 (0 would refuse every push)",
            );
        }
        if limits.max_stanza_size < MIN_STANZA_SIZE {
            self.error(
                "limits.maxStanzaSize",
                format!(
                    "must be at least {MIN_STANZA_SIZE} bytes (\"4KiB\"); smaller would refuse ordinary pushes"
                ),
            );
        }
        if limits.max_depth < MIN_DEPTH {
            self.error(
                "limits.maxDepth",
                format!("must be at least {MIN_DEPTH}; smaller would refuse ordinary pushes"),
            );
        }
    }

    pub fn redis(&mut self, redis: &RedisSettings) {
        let has_url = !redis.url.trim().is_empty();
        if !has_url && redis.cluster.is_empty() {
            self.error(
                "redis.url",
                "must not be empty (or give `cluster`, the node URLs of a Redis Cluster)",
            );
        }
        if has_url && !redis.cluster.is_empty() {
            self.error(
                "redis.cluster",
                "give either `url` (one Redis) or `cluster` (Redis Cluster nodes), not both",
            );
        }
        for (index, node) in redis.cluster.iter().enumerate() {
            let node = node.trim();
            if !(node.starts_with("redis://") || node.starts_with("rediss://")) {
                self.error(
                    &format!("redis.cluster[{index}]"),
                    "must be a `redis://host:port` or `rediss://host:port` URL",
                );
            }
        }
    }

    pub fn modules(&mut self, modules: &[ModuleSettings], has_redis: bool) {
        let mut default_module: Option<&ModuleSettings> = None;
        for module in modules {
            let path = format!("pushModules.{}", module.id);
            if module.id.trim().is_empty() {
                self.error(&path, "a module id must not be empty");
            }
            if module.is_default_module {
                match default_module {
                    Some(first) => self.error(
                        &format!("{path}.is_default_module"),
                        format!(
                            "more than one default module: `{}` already is the default",
                            first.id
                        ),
                    ),
                    None => default_module = Some(module),
                }
            }
            self.ratelimit(module, &format!("{path}.ratelimit"), has_redis);
        }
    }

    fn ratelimit(&mut self, module: &ModuleSettings, path: &str, has_redis: bool) {
        let ratelimit = &module.ratelimit;
        if ratelimit.enabled {
            if ratelimit.ratelimit_time.is_zero() {
                self.error(
                    &format!("{path}.ratelimitTime"),
                    "must be longer than 0s while the ratelimit is enabled (set `enabled: false` to turn it off)",
                );
            }
            self.not_zero(
                &format!("{path}.ratelimitCleanupInterval"),
                ratelimit.ratelimit_cleanup_interval,
                "the cache sweep would never pause",
            );
        }
        if ratelimit.backend == RatelimitBackend::Redis && !has_redis {
            self.error(
                &format!("{path}.backend"),
                "backend \"redis\" needs a top-level `redis` section with its `url`",
            );
        }
    }
}
