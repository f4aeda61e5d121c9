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

use super::locate::{Index, KeyPath, Pos};
use super::{ConfigError, ModuleSettings, RatelimitBackend, Settings};

const MIN_STANZA_SIZE: usize = 4 * 1024;
const MIN_DEPTH: usize = 16;

pub(crate) fn settings(settings: &Settings, index: &Index, errors: &mut Vec<ConfigError>) {
    let mut check = Check { index, errors };
    check.component(settings);
    check.timeout(settings);
    check.limits(settings);
    check.redis(settings);
    check.modules(settings);
}

struct Check<'a> {
    index: &'a Index,
    errors: &'a mut Vec<ConfigError>,
}

impl Check<'_> {
    /// Where `path` is in the file, or, for a key left at its default, its nearest ancestor.
    fn position(&self, path: &KeyPath) -> Option<Pos> {
        let mut at = path.clone();
        loop {
            if let Some(entry) = self.index.get(&at) {
                return Some(entry.pos());
            }
            at.0.pop()?;
        }
    }

    fn error(&mut self, path: &KeyPath, message: impl Into<String>) {
        let pos = self.position(path);
        self.errors.push(ConfigError::located(path, pos, message));
    }

    fn not_zero(&mut self, path: &KeyPath, value: Duration, what: &str) {
        if value.is_zero() {
            self.error(path, format!("must be longer than 0s ({what})"));
        }
    }

    fn component(&mut self, settings: &Settings) {
        let path = KeyPath::root().key("component");
        let component = &settings.component;
        let hostname = &component.component_hostname;
        if hostname.trim().is_empty() {
            self.error(&path.key("componentHostname"), "must not be empty");
        } else if hostname.contains(|c: char| c.is_whitespace() || c == '@' || c == '/') {
            self.error(
                &path.key("componentHostname"),
                "must be a bare domain such as push.example.org",
            );
        }
        if component.component_key.is_empty() {
            self.error(
                &path.key("componentKey"),
                "must not be empty (it is the component secret set in the XMPP server)",
            );
        }
        if component.server_hostname.trim().is_empty() {
            self.error(&path.key("serverHostname"), "must not be empty");
        }
        if component.server_port == 0 {
            self.error(&path.key("serverPort"), "must not be 0");
        }
    }

    fn timeout(&mut self, settings: &Settings) {
        let path = KeyPath::root().key("timeout");
        let timeout = &settings.timeout;
        self.not_zero(
            &path.key("xmppconnectionError"),
            timeout.xmpp_connection_error,
            "fpush would reconnect in a tight loop",
        );
        self.not_zero(
            &path.key("keepaliveInterval"),
            timeout.keepalive_interval,
            "the link's keepalive ping needs a cadence",
        );
        self.not_zero(
            &path.key("keepaliveTimeout"),
            timeout.keepalive_timeout,
            "every link would be declared dead at once",
        );
        if !timeout.keepalive_timeout.is_zero()
            && timeout.keepalive_timeout >= timeout.keepalive_interval
        {
            self.error(
                &path.key("keepaliveTimeout"),
                format!(
                    "must be shorter than keepaliveInterval ({})",
                    humantime_serde::re::humantime::format_duration(timeout.keepalive_interval)
                ),
            );
        }
    }

    fn limits(&mut self, settings: &Settings) {
        let path = KeyPath::root().key("limits");
        let limits = &settings.limits;
        if limits.max_concurrent_pushes == 0 {
            self.error(
                &path.key("maxConcurrentPushes"),
                "must be at least 1 (0 would refuse every push)",
            );
        }
        if limits.max_stanza_size < MIN_STANZA_SIZE {
            self.error(
                &path.key("maxStanzaSize"),
                format!(
                    "must be at least {MIN_STANZA_SIZE} bytes (\"4KiB\"); smaller would refuse ordinary pushes"
                ),
            );
        }
        if limits.max_depth < MIN_DEPTH {
            self.error(
                &path.key("maxDepth"),
                format!("must be at least {MIN_DEPTH}; smaller would refuse ordinary pushes"),
            );
        }
    }

    fn redis(&mut self, settings: &Settings) {
        let Some(redis) = &settings.redis else {
            return;
        };
        let path = KeyPath::root().key("redis");
        let has_url = !redis.url.trim().is_empty();
        if !has_url && redis.cluster.is_empty() {
            self.error(
                &path.key("url"),
                "must not be empty (or give `cluster`, the node URLs of a Redis Cluster)",
            );
        }
        if has_url && !redis.cluster.is_empty() {
            self.error(
                &path.key("cluster"),
                "give either `url` (one Redis) or `cluster` (Redis Cluster nodes), not both",
            );
        }
        for (index, node) in redis.cluster.iter().enumerate() {
            let node = node.trim();
            if !(node.starts_with("redis://") || node.starts_with("rediss://")) {
                self.error(
                    &path.key("cluster").index(index),
                    "must be a `redis://host:port` or `rediss://host:port` URL",
                );
            }
        }
    }

    fn modules(&mut self, settings: &Settings) {
        let mut default_module: Option<&ModuleSettings> = None;
        for module in &settings.push_modules {
            let path = KeyPath::root().key("pushModules").key(&module.id);
            if module.id.trim().is_empty() {
                self.error(&path, "a module id must not be empty");
            }
            if !module.module_type.is_compiled_in() {
                self.error(
                    &path.key("type"),
                    format!(
                        "module type `{}` is not compiled into this fpush; build it with the cargo feature `{}`",
                        module.module_type,
                        module.module_type.cargo_feature()
                    ),
                );
            }
            if module.platform.is_none() && module.module_type != super::ModuleType::Demo {
                self.error(
                    &path,
                    format!(
                        "a module of type {} needs its `{}` block",
                        module.module_type,
                        module.platform_key()
                    ),
                );
            }
            if module.is_default_module {
                match default_module {
                    Some(first) => self.error(
                        &path.key("is_default_module"),
                        format!(
                            "more than one default module: `{}` already is the default",
                            first.id
                        ),
                    ),
                    None => default_module = Some(module),
                }
            }
            self.ratelimit(settings, module, &path.key("ratelimit"));
        }
    }

    fn ratelimit(&mut self, settings: &Settings, module: &ModuleSettings, path: &KeyPath) {
        let ratelimit = &module.ratelimit;
        if ratelimit.enabled {
            if ratelimit.ratelimit_time.is_zero() {
                self.error(
                    &path.key("ratelimitTime"),
                    "must be longer than 0s while the ratelimit is enabled (set `enabled: false` to turn it off)",
                );
            }
            self.not_zero(
                &path.key("ratelimitCleanupInterval"),
                ratelimit.ratelimit_cleanup_interval,
                "the cache sweep would never pause",
            );
        }
        if ratelimit.backend == RatelimitBackend::Redis && settings.redis.is_none() {
            self.error(
                &path.key("backend"),
                "backend \"redis\" needs a top-level `redis` section with its `url`",
            );
        }
    }
}
