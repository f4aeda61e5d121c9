//! Checks that need more than one key, or a reason no type can give: what makes a settings file
//! wrong even though every value has the right type and is within its bound (bounds are part
//! of the values' types, see [`super::values`]).
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
use super::values::redis_url_problem;
use super::{push2, registration, store, AccessSettings, LimitSettings};
use super::{ModuleSettings, RatelimitBackend, RedisSettings, Settings, TimeoutSettings};

const MIN_STANZA_SIZE: usize = 4 * 1024;
const MIN_DEPTH: usize = 16;
const MAX_ALLOWED_DOMAINS: usize = 10_000;

/// Check `settings`; each check runs on the part it needs, so that a part that could not be
/// read keeps none of the others from being checked.
pub(crate) fn check(doc: &mut Document, settings: &Settings) {
    timeouts(doc, &settings.timeout);
    limits(doc, &settings.limits);
    access(doc, &settings.access);
    let redis = settings.redis.as_ref();
    if let Some(redis) = redis {
        redis_servers(doc, redis);
    }
    modules(doc, &settings.push_modules, redis.is_some());
    if let Some(redis) = redis.filter(|redis| !redis.cluster.is_empty()) {
        cluster_key_names(doc, redis, &settings.push_modules);
    }
    if let Some(store) = &settings.store {
        store::check(doc, store, redis.is_some());
    }
    registration::check(doc, settings);
    push2::check_reserved_id(doc, &settings.push_modules);
    if let Some(push2) = &settings.push2 {
        push2::check(doc, push2);
    }
}

/// A duration that must be more than zero, for the reason `why`.
fn not_zero(doc: &mut Document, path: &str, value: Duration, why: &str) {
    if value.is_zero() {
        doc.error(path, format!("must be longer than 0s ({why})"));
    }
}

fn timeouts(doc: &mut Document, timeout: &TimeoutSettings) {
    let (interval, keepalive) = (timeout.keepalive_interval, timeout.keepalive_timeout);
    let connect = timeout.xmpp_connection_error;
    let tight_loop = "fpush would reconnect in a tight loop";
    not_zero(doc, "timeout.xmppconnectionError", connect, tight_loop);
    let cadence = "the link's keepalive ping needs a cadence";
    not_zero(doc, "timeout.keepaliveInterval", interval, cadence);
    let dead = "every link would be declared dead at once";
    not_zero(doc, "timeout.keepaliveTimeout", keepalive, dead);
    let judged = !keepalive.is_zero() && !doc.refused("timeout.keepaliveInterval");
    if judged && keepalive >= interval {
        let interval = humantime::format_duration(interval);
        let message = format!("must be shorter than keepaliveInterval ({interval})");
        doc.error("timeout.keepaliveTimeout", message);
    }
}

fn limits(doc: &mut Document, limits: &LimitSettings) {
    if limits.max_concurrent_pushes == 0 {
        let message = "must be at least 1 (0 would refuse every push)";
        doc.error("limits.maxConcurrentPushes", message);
    }
    let ordinary = "smaller would refuse ordinary pushes";
    if limits.max_stanza_size < MIN_STANZA_SIZE {
        let message = format!("must be at least {MIN_STANZA_SIZE} bytes (\"4KiB\"); {ordinary}");
        doc.error("limits.maxStanzaSize", message);
    }
    if limits.max_depth < MIN_DEPTH {
        let message = format!("must be at least {MIN_DEPTH}; {ordinary}");
        doc.error("limits.maxDepth", message);
    }
}

fn access(doc: &mut Document, access: &AccessSettings) {
    for (i, domain) in access.allowed_domains.iter().enumerate() {
        if !plausible_domain_pattern(domain) {
            let message = format!("{domain:?} is not a domain: write \"example.org\" or \"*.example.org\" (its subdomains)");
            doc.error(&format!("access.allowedDomains[{i}]"), message);
        }
    }
    if access.allowed_domains.len() > MAX_ALLOWED_DOMAINS {
        let message = format!("must be at most {MAX_ALLOWED_DOMAINS}");
        doc.error("access.allowedDomains", message);
    }
    if access.per_domain_rate > 0.0 && access.per_domain_burst < 1.0 {
        let message =
            "must be at least 1 while perDomainRate is on (below 1 no request would pass)";
        doc.error("access.perDomainBurst", message);
    }
}

fn redis_servers(doc: &mut Document, redis: &RedisSettings) {
    let has_url = !redis.url.trim().is_empty();
    if !has_url && redis.cluster.is_empty() {
        let message = "must not be empty (or give `cluster`, the node URLs of a Redis Cluster)";
        doc.error("redis.url", message);
    } else if let Some(problem) = has_url.then(|| redis_url_problem(&redis.url)).flatten() {
        doc.error("redis.url", problem);
    }
    if has_url && !redis.cluster.is_empty() {
        let message = "give either `url` (one Redis) or `cluster` (Redis Cluster nodes), not both";
        doc.error("redis.cluster", message);
    }
    for (index, node) in redis.cluster.iter().enumerate() {
        if let Some(problem) = redis_url_problem(node.trim()) {
            doc.error(&format!("redis.cluster[{index}]"), problem);
        }
    }
}

/// On a Redis Cluster only the `{…}` fpush puts in a key may pick its slot: braces in the
/// prefix or a Redis module's id would split a token's two keys (every decision refused with
/// CROSSSLOT) or put all of a module's keys on one master.
fn cluster_key_names(doc: &mut Document, redis: &RedisSettings, modules: &[ModuleSettings]) {
    let braced = |name: &str| name.contains(['{', '}']);
    let why = "on a Redis Cluster braces choose a key's slot (see docs/cluster.md)";
    if braced(&redis.key_prefix) {
        let message = format!("must not contain {{ or }}: {why}");
        doc.error("redis.keyPrefix", message);
    }
    let on_redis = |m: &&ModuleSettings| m.ratelimit.backend == RatelimitBackend::Redis;
    for module in modules.iter().filter(on_redis).filter(|m| braced(&m.id)) {
        let message =
            format!("the id of a module on the Redis backend must not contain {{ or }}: {why}");
        doc.error(&format!("pushModules.{}", module.id), message);
    }
}

fn modules(doc: &mut Document, modules: &[ModuleSettings], has_redis: bool) {
    let defaults: Vec<_> = modules.iter().filter(|m| m.is_default_module).collect();
    for extra in defaults.iter().skip(1) {
        let first = &defaults[0].id;
        let message = format!("more than one default module: `{first}` already is the default");
        let path = format!("pushModules.{}.is_default_module", extra.id);
        doc.error(&path, message);
    }
    for module in modules {
        let path = format!("pushModules.{}", module.id);
        if module.id.trim().is_empty() {
            doc.error(&path, "a module id must not be empty");
        } else if module.id.trim() != module.id {
            let message = "a module id must not start or end with white space (a push's \
                           pushModule is read trimmed: it could never name this module)";
            doc.error(&path, message);
        }
        ratelimit(doc, module, &format!("{path}.ratelimit"), has_redis);
    }
}

fn ratelimit(doc: &mut Document, module: &ModuleSettings, path: &str, has_redis: bool) {
    let ratelimit = &module.ratelimit;
    if ratelimit.enabled {
        let cleanup = ratelimit.ratelimit_cleanup_interval;
        let sweep = "the cache sweep would never pause";
        not_zero(
            doc,
            &format!("{path}.ratelimitCleanupInterval"),
            cleanup,
            sweep,
        );
    }
    if ratelimit.enabled && ratelimit.ratelimit_time.is_zero() {
        let message = "must be longer than 0s while the ratelimit is enabled (set `enabled: false` to turn it off)";
        doc.error(&format!("{path}.ratelimitTime"), message);
    }
    if ratelimit.backend == RatelimitBackend::Redis && !has_redis {
        let message = "backend \"redis\" needs a top-level `redis` section with its `url`";
        doc.error(&format!("{path}.backend"), message);
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
