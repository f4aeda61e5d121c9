//! `push2`: the Push 2.0 relay. Present, it creates the built-in Web Push module
//! ([`WEB_PUSH_MODULE`]) and opens the relay to push2 messages; absent, push2 messages to Web
//! Push endpoints are refused.
//!
//! The per-target ratelimit is off by default here: the user's server already filters, and a
//! push2 push carries message content that a refusal would lose.

use std::path::PathBuf;
use std::time::Duration;

use fpush_traits::settings::{duration, seconds_or_duration};
use serde::Deserialize;

use super::document::Document;
use super::{days, number, secs, values, ModuleSettings, RatelimitBackend, RatelimitSettings};

/// The id of the module that serves Web Push targets; no configured module may take it.
pub const WEB_PUSH_MODULE: &str = "webpush";

const MAX_TTL: Duration = Duration::from_secs(13 * 7 * 24 * 60 * 60);
const MAX_ORIGINS: usize = 10_000;
const MAX_CONNECTIONS_PER_ORIGIN: usize = 64;

/// `push2`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(
    rename_all = "camelCase",
    expecting = "an object of Push 2.0 relay settings"
)]
pub struct Push2Settings {
    /// Where Web Push requests may go (`https://host`, `https://*.domain`); `None` means the
    /// public browser push services.
    pub web_push_origins: Option<Vec<String>>,
    /// The Web Push `TTL`.
    #[serde(default = "days::<28>", deserialize_with = "duration")]
    pub ttl: Duration,
    /// An extra trusted CA for Web Push origins (a test server's).
    pub ca_file_path: Option<PathBuf>,
    /// Distinct Web Push origins held open at once.
    #[serde(default = "number::<64>")]
    #[serde(deserialize_with = "values::count::<_, { usize::MAX }>")]
    pub max_origins: usize,
    /// Connections per Web Push origin.
    #[serde(default = "number::<2>")]
    #[serde(deserialize_with = "values::count::<_, { usize::MAX }>")]
    pub max_connections_per_origin: usize,
    /// Bound on one Web Push request: whole seconds or text, like the modules' `requestTimeout`.
    #[serde(default = "secs::<10>", deserialize_with = "seconds_or_duration")]
    pub request_timeout: Duration,
    /// The per-target ratelimit, keyed by the push2 `client`; off unless enabled here.
    #[serde(default = "off")]
    pub ratelimit: RatelimitSettings,
}

fn off() -> RatelimitSettings {
    RatelimitSettings {
        enabled: false,
        ..RatelimitSettings::default()
    }
}

/// What no type can express: the bounds.
pub(super) fn check(doc: &mut Document, push2: &Push2Settings) {
    if push2.ttl > MAX_TTL {
        doc.error("push2.ttl", "must be at most 13 weeks");
    }
    if !(1..=MAX_ORIGINS).contains(&push2.max_origins) {
        let message = format!("must be from 1 to {MAX_ORIGINS}");
        doc.error("push2.maxOrigins", message);
    }
    if !(1..=MAX_CONNECTIONS_PER_ORIGIN).contains(&push2.max_connections_per_origin) {
        let message = format!("must be from 1 to {MAX_CONNECTIONS_PER_ORIGIN}");
        doc.error("push2.maxConnectionsPerOrigin", message);
    }
    if !(Duration::from_secs(1)..=Duration::from_secs(300)).contains(&push2.request_timeout) {
        doc.error("push2.requestTimeout", "must be from 1s to 5m");
    }
    if push2.web_push_origins.as_ref().is_some_and(Vec::is_empty) {
        let message = "is empty: leave it out for the public push services";
        doc.error("push2.webPushOrigins", message);
    }
    let limit = &push2.ratelimit;
    if limit.enabled && limit.ratelimit_time.is_zero() {
        let message = "must be longer than 0s when the ratelimit is enabled";
        doc.error("push2.ratelimit.ratelimitTime", message);
    }
    // The relay's limiter lives in each instance: accepting a Redis backend would promise a
    // limit shared between instances that none of them keeps.
    if limit.backend == RatelimitBackend::Redis {
        let message = "the relay's ratelimit is kept in each instance; \"redis\" is not \
                       available here (leave backend out)";
        doc.error("push2.ratelimit.backend", message);
    }
}

/// The relay's module id is reserved whether or not the relay is on: pushes cannot name it
/// (see [`crate::doors::token_in_node`]), and turning the relay on later must not clash.
pub(super) fn check_reserved_id(doc: &mut Document, modules: &[ModuleSettings]) {
    if modules.iter().any(|module| module.id == WEB_PUSH_MODULE) {
        let message = "this id is reserved for the push2 relay's Web Push module; rename the \
                       module";
        doc.error(&format!("pushModules.{WEB_PUSH_MODULE}"), message);
    }
}
