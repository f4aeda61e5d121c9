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
//! - Every duration and count has an upper bound: far beyond any sane value a setting is a typo,
//!   and some would overflow a clock or an allocation later, where it would take the link down.

use std::time::Duration;

use super::document::Document;
use super::values::redis_url_problem;
use super::{
    AccessSettings, ComponentSettings, ConfigError, DeadTokenSettings, LimitSettings,
    ModuleSetSettings, ModuleSettings, RatelimitBackend, RedisSettings, TimeoutSettings,
};

const MIN_STANZA_SIZE: usize = 4 * 1024;
const MIN_DEPTH: usize = 16;
const HOUR: Duration = Duration::from_secs(60 * 60);
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// The checks, each on the part it needs, so that a part that could not be read does not keep
/// the others from being checked.
pub(crate) struct Check<'a> {
    pub document: &'a Document,
    pub errors: &'a mut Vec<ConfigError>,
}

impl Check<'_> {
    /// An error at `path`, positioned at its key (or, for a key left at its default, at its
    /// nearest ancestor in the file).
    fn error(&mut self, path: &str, message: impl Into<String>) {
        let pos = self.document.key_pos(path);
        self.errors.push(ConfigError::new(path, pos, message));
    }

    /// A duration at most `max`; when `zero` says why, also more than zero.
    fn duration(&mut self, path: &str, value: Duration, max: Duration, zero: Option<&str>) {
        if value > max {
            let max = humantime::format_duration(max);
            self.error(path, format!("must be at most {max}"));
        }
        if let Some(what) = zero.filter(|_| value.is_zero()) {
            self.error(path, format!("must be longer than 0s ({what})"));
        }
    }

    fn at_most<T: PartialOrd + std::fmt::Display>(&mut self, path: &str, value: T, max: T) {
        if value > max {
            self.error(path, format!("must be at most {max}"));
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
    }

    pub fn timeout(&mut self, timeout: &TimeoutSettings) {
        let (interval, timeout_) = (timeout.keepalive_interval, timeout.keepalive_timeout);
        let tight_loop = "fpush would reconnect in a tight loop";
        let cadence = "the link's keepalive ping needs a cadence";
        let dead = "every link would be declared dead at once";
        // The keepalive timeout is bounded by the interval, below.
        for (path, value, max, zero) in [
            (
                "timeout.xmppconnectionError",
                timeout.xmpp_connection_error,
                HOUR,
                tight_loop,
            ),
            ("timeout.keepaliveInterval", interval, HOUR, cadence),
            ("timeout.keepaliveTimeout", timeout_, Duration::MAX, dead),
        ] {
            self.duration(path, value, max, Some(zero));
        }
        if !timeout_.is_zero() && timeout_ >= interval {
            let interval = humantime::format_duration(interval);
            let message = format!("must be shorter than keepaliveInterval ({interval})");
            self.error("timeout.keepaliveTimeout", message);
        }
    }

    pub fn limits(&mut self, limits: &LimitSettings) {
        if limits.max_concurrent_pushes == 0 {
            self.error(
                "limits.maxConcurrentPushes",
                "must be at least 1 (0 would refuse every push)",
            );
        }
        let ordinary = "smaller would refuse ordinary pushes";
        if limits.max_stanza_size < MIN_STANZA_SIZE {
            let message =
                format!("must be at least {MIN_STANZA_SIZE} bytes (\"4KiB\"); {ordinary}");
            self.error("limits.maxStanzaSize", message);
        }
        if limits.max_depth < MIN_DEPTH {
            let message = format!("must be at least {MIN_DEPTH}; {ordinary}");
            self.error("limits.maxDepth", message);
        }
        for (path, value, max) in [
            (
                "limits.maxConcurrentPushes",
                limits.max_concurrent_pushes,
                1_000_000,
            ),
            (
                "limits.maxQueuedPushes",
                limits.max_queued_pushes,
                10_000_000,
            ),
            (
                "limits.maxStanzaSize",
                limits.max_stanza_size,
                64 * 1024 * 1024,
            ),
            ("limits.maxDepth", limits.max_depth, 1024),
        ] {
            self.at_most(path, value, max);
        }
        self.duration("limits.shutdownGrace", limits.shutdown_grace, HOUR, None);
    }

    /// Dead-token memory and the grace of retired modules.
    pub fn memory(&mut self, dead_tokens: &DeadTokenSettings, modules: &ModuleSetSettings) {
        self.duration("deadTokens.remember", dead_tokens.remember, 30 * DAY, None);
        let entries = dead_tokens.max_entries;
        self.at_most("deadTokens.maxEntries", entries, 100_000_000);
        let grace = modules.retired_grace;
        self.duration("modules.retiredGrace", grace, 30 * DAY, None);
    }

    pub fn access(&mut self, access: &AccessSettings) {
        let domains = &access.allowed_domains;
        let count = domains.len();
        self.at_most("access.allowedDomains", count, 10_000);
        for (i, domain) in domains.iter().enumerate() {
            if !plausible_domain_pattern(domain) {
                self.error(
                    &format!("access.allowedDomains[{i}]"),
                    format!("{domain:?} is not a domain: write \"example.org\" or \"*.example.org\" (its subdomains)"),
                );
            }
        }
        self.at_most("access.perDomainRate", access.per_domain_rate, 1_000_000.0);
        self.at_most(
            "access.perDomainBurst",
            access.per_domain_burst,
            10_000_000.0,
        );
        if access.per_domain_rate > 0.0 && access.per_domain_burst < 1.0 {
            self.error(
                "access.perDomainBurst",
                "must be at least 1 while perDomainRate is on (below 1 no request would pass)",
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
        } else if let Some(problem) = has_url.then(|| redis_url_problem(&redis.url)).flatten() {
            self.error("redis.url", problem);
        }
        if has_url && !redis.cluster.is_empty() {
            self.error(
                "redis.cluster",
                "give either `url` (one Redis) or `cluster` (Redis Cluster nodes), not both",
            );
        }
        for (index, node) in redis.cluster.iter().enumerate() {
            if let Some(problem) = redis_url_problem(node.trim()) {
                self.error(&format!("redis.cluster[{index}]"), problem);
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
        let time = format!("{path}.ratelimitTime");
        self.duration(&time, ratelimit.ratelimit_time, DAY, None);
        let sweep = ratelimit
            .enabled
            .then_some("the cache sweep would never pause");
        let cleanup = ratelimit.ratelimit_cleanup_interval;
        self.duration(
            &format!("{path}.ratelimitCleanupInterval"),
            cleanup,
            30 * DAY,
            sweep,
        );
        if ratelimit.enabled && ratelimit.ratelimit_time.is_zero() {
            self.error(
                &time,
                "must be longer than 0s while the ratelimit is enabled (set `enabled: false` to turn it off)",
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

/// `example.org` or `*.example.org`: dot-separated labels of letters, digits and inner hyphens.
fn plausible_domain_pattern(pattern: &str) -> bool {
    let domain = pattern.strip_prefix("*.").unwrap_or(pattern);
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_alphanumeric() || c == '-')
    };
    (1..=253).contains(&domain.len()) && domain.split('.').all(label_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_patterns() {
        for ok in [
            "example.org",
            "*.example.org",
            "localhost",
            "xn--bcher-kva.example",
            "bücher.de",
        ] {
            assert!(plausible_domain_pattern(ok), "{ok}");
        }
        for bad in [
            "",
            "*",
            "*.",
            "a..b",
            "-a.org",
            "a-.org",
            "user@example.org",
            "example.org/res",
            "*.*.example.org",
            "exa mple.org",
            "example.org.",
            "a.*.org",
        ] {
            assert!(!plausible_domain_pattern(bad), "{bad}");
        }
    }
}
