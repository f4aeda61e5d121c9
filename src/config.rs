//! The settings model and its loading: one JSON file (comments and trailing commas accepted),
//! parsed once with positions, deserialised with key paths, then validated as a whole.
//!
//! Every problem is reported with its key path and its line and column in the file, e.g.
//! `pushModules.monalProdiOS.ratelimit.ratelimitTime: invalid duration "twenty seconds": write a
//! number and a unit, e.g. "20s", "5m" or "1h 30m" (line 23, column 30)`, and every problem
//! that can be found is reported at once, so an operator fixes a file in one round. Unknown keys
//! are warnings, not errors: a typo must not pass silently, but a key from an older or newer
//! fpush must not stop a restart either.
//!
//! The core knows only the core keys. Each module's platform block is read by the platform's
//! registry entry ([`Platform::parse`]); the caller says which platforms exist ([`Platforms`]).

mod document;
mod files;
mod push2;
mod reader;
mod registration;
mod store;
mod validate;
mod values;

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fpush_traits::settings::{duration, secret};
use fpush_traits::{Platform, PlatformConfig};
use serde::Deserialize;

use self::document::Pos;
pub use self::files::exposure_warnings;
pub use self::push2::{Push2Settings, WEB_PUSH_MODULE};
pub use self::reader::parse;
pub use self::registration::{RegistrationBlock, RegistrationProtocol};
pub use self::store::{StoreBackend, StoreSettings};
use self::values::{amount, bounded_duration, count};
pub use crate::access::AccessSettings;

/// Everything fpush is configured with. A missing section reads as its defaults; the
/// required `component` too, so that the file's other problems are still found.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Settings {
    pub component: ComponentSettings,
    pub timeout: TimeoutSettings,
    pub limits: LimitSettings,
    pub dead_tokens: DeadTokenSettings,
    #[serde(with = "AccessSection")]
    pub access: AccessSettings,
    pub modules: ModuleSetSettings,
    /// Key `pushModules`, in file order; read module by module (see [`Platforms`]).
    #[serde(skip)]
    pub push_modules: Vec<ModuleSettings>,
    #[serde(deserialize_with = "values::secret_section")]
    pub redis: Option<RedisSettings>,
    pub metrics: Option<MetricsSettings>,
    pub store: Option<StoreSettings>,
    /// The Push 2.0 relay, off when absent.
    pub push2: Option<Push2Settings>,
}

/// `access`, read straight into the core's [`AccessSettings`] (its defaults included).
#[derive(Deserialize)]
#[serde(remote = "AccessSettings", rename_all = "camelCase")]
#[serde(default = "AccessSettings::default")]
#[serde(expecting = "an object with allowedDomains, perDomainRate and perDomainBurst")]
struct AccessSection {
    allowed_domains: Vec<String>,
    #[serde(deserialize_with = "amount::<_, 1_000_000>")]
    per_domain_rate: f64,
    #[serde(deserialize_with = "amount::<_, 10_000_000>")]
    per_domain_burst: f64,
}

impl Settings {
    /// The module with this id.
    pub fn module(&self, id: &str) -> Option<&ModuleSettings> {
        self.push_modules.iter().find(|module| module.id == id)
    }

    /// Whether some module serves a registering protocol: only then is the store opened.
    pub fn serves_registrations(&self) -> bool {
        self.push_modules.iter().any(|m| m.registration.is_some())
    }

    /// The module that serves pushes which name no `pushModule` (at most one exists).
    pub fn default_module(&self) -> Option<&ModuleSettings> {
        self.push_modules.iter().find(|m| m.is_default_module)
    }
}

/// `component`: who we are to the XMPP server and where to reach it.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[serde(
    expecting = "an object with componentHostname, componentKey, serverHostname and serverPort"
)]
pub struct ComponentSettings {
    /// The component's JID, e.g. `push.example.org`.
    #[serde(deserialize_with = "values::hostname")]
    pub component_hostname: String,
    /// The shared secret of the XEP-0114 handshake; never echoed in an error.
    #[serde(deserialize_with = "values::component_key")]
    pub component_key: String,
    #[serde(deserialize_with = "values::hostname")]
    pub server_hostname: String,
    #[serde(deserialize_with = "values::port")]
    pub server_port: u16,
}

/// Settings get logged with `{:?}`; the component secret must not end up in a log.
impl fmt::Debug for ComponentSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ComponentSettings")
            .field("component_hostname", &self.component_hostname)
            .field("component_key", &"<redacted>")
            .field("server_hostname", &self.server_hostname)
            .field("server_port", &self.server_port)
            .finish()
    }
}

/// `timeout`: the component link's timings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", expecting = "an object of timeouts")]
pub struct TimeoutSettings {
    /// Wait after a failed connect or handshake; the base of the reconnect backoff.
    /// The key keeps the spelling existing configs use (`xmppconnectionError`).
    #[serde(rename = "xmppconnectionError", alias = "xmppConnectionError")]
    #[serde(default = "secs::<20>")]
    #[serde(deserialize_with = "bounded_duration::<_, 3_600>")]
    pub xmpp_connection_error: Duration,
    /// How often the link is proven alive with a ping to the server.
    #[serde(default = "secs::<60>")]
    #[serde(deserialize_with = "bounded_duration::<_, 3_600>")]
    pub keepalive_interval: Duration,
    /// How long without any reply to a ping means the link is dead.
    #[serde(default = "secs::<20>", deserialize_with = "duration")]
    pub keepalive_timeout: Duration,
}

/// `limits`: the bounds that keep memory and work finite.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", expecting = "an object of limits")]
pub struct LimitSettings {
    /// Provider calls in flight; a push beyond it is answered `wait` at once.
    #[serde(default = "number::<10_000>")]
    #[serde(deserialize_with = "count::<_, 1_000_000>")]
    pub max_concurrent_pushes: usize,
    /// Largest stanza accepted, in bytes (`262144`, `"256KiB"`).
    #[serde(default = "number::<262_144>")]
    #[serde(deserialize_with = "values::byte_size::<_, 67_108_864>")]
    pub max_stanza_size: usize,
    /// Deepest element nesting accepted inside the stream.
    #[serde(default = "number::<32>", deserialize_with = "count::<_, 1_024>")]
    pub max_depth: usize,
    /// How long a shutdown waits for pushes in flight.
    #[serde(default = "secs::<10>")]
    #[serde(deserialize_with = "bounded_duration::<_, 3_600>")]
    pub shutdown_grace: Duration,
    /// Ratelimit-queued pushes held at once; a push beyond it is answered `wait`.
    #[serde(default = "number::<100_000>")]
    #[serde(deserialize_with = "count::<_, 10_000_000>")]
    pub max_queued_pushes: usize,
}

/// `deadTokens`: remembering tokens a provider declared dead.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[serde(expecting = "an object with `remember` and `maxEntries`")]
pub struct DeadTokenSettings {
    /// How long a dead token is answered without asking the provider again; zero disables.
    #[serde(default = "secs::<86_400>")]
    #[serde(deserialize_with = "bounded_duration::<_, 2_592_000>")]
    pub remember: Duration,
    /// Dead tokens remembered per module; the oldest is forgotten first.
    #[serde(default = "number::<1_000_000>")]
    #[serde(deserialize_with = "count::<_, 100_000_000>")]
    pub max_entries: usize,
}

/// `modules`: how the module set behaves across reloads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", expecting = "an object with `retiredGrace`")]
pub struct ModuleSetSettings {
    /// How long a module removed by a reload answers `wait` before `item-not-found`: servers
    /// delete registrations on the latter, so an operator's slip must be fixable first.
    #[serde(default = "secs::<86_400>")]
    #[serde(deserialize_with = "bounded_duration::<_, 2_592_000>")]
    pub retired_grace: Duration,
}

/// `redis`: the shared store for modules whose ratelimit uses `backend: "redis"`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[serde(expecting = "an object with `url` or `cluster`, and optionally `keyPrefix`")]
pub struct RedisSettings {
    /// One Redis server; empty when `cluster` is given instead. May hold a password: never
    /// echoed in an error, redacted in `Debug`.
    #[serde(default, deserialize_with = "secret")]
    pub url: String,
    /// Seed node URLs of a Redis Cluster, instead of `url`; never echoed in an error either.
    #[serde(default, deserialize_with = "values::secret_list")]
    pub cluster: Vec<String>,
    /// Prefix of every key fpush writes, so several deployments can share one Redis.
    #[serde(default = "default_redis_key_prefix")]
    pub key_prefix: String,
}

fn default_redis_key_prefix() -> String {
    "fpush:".to_owned()
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &values::redacted_url(&self.url))
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

/// `metrics`: the optional HTTP listener for `/metrics` and `/health`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", expecting = "an object with `listen`")]
pub struct MetricsSettings {
    /// An IP address and port; `localhost:PORT` reads as `127.0.0.1:PORT`.
    #[serde(deserialize_with = "values::listen_address")]
    pub listen: SocketAddr,
}

/// `pushModules.<id>.ratelimit`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[serde(expecting = "an object of ratelimit settings")]
pub struct RatelimitSettings {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The window after a send within which another push for the token waits.
    #[serde(default = "secs::<20>")]
    #[serde(deserialize_with = "bounded_duration::<_, 86_400>")]
    pub ratelimit_time: Duration,
    /// Entries whose last send is older than this are swept from the cache.
    #[serde(default = "secs::<300>")]
    #[serde(deserialize_with = "bounded_duration::<_, 2_592_000>")]
    pub ratelimit_cleanup_interval: Duration,
    /// The reply to a push rejected by the ratelimit.
    #[serde(default)]
    pub reject_with: RejectWith,
    #[serde(default)]
    pub backend: RatelimitBackend,
}

/// The sections' defaults are their serde field defaults: what an empty object reads as.
macro_rules! default_is_empty_object {
    ($($section:ty),+) => {$(
        impl Default for $section {
            fn default() -> Self {
                serde_json::from_value(serde_json::json!({}))
                    .expect("every field of a section has a serde default")
            }
        }
    )+};
}

default_is_empty_object!(TimeoutSettings, LimitSettings, DeadTokenSettings);
default_is_empty_object!(ModuleSetSettings, RatelimitSettings);
default_is_empty_object!(StoreSettings, Push2Settings);

/// Serde field defaults, spelled beside the field.
const fn secs<const N: u64>() -> Duration {
    Duration::from_secs(N)
}

const fn days<const N: u64>() -> Duration {
    Duration::from_secs(N * 24 * 60 * 60)
}

const fn number<const N: usize>() -> usize {
    N
}

const fn yes() -> bool {
    true
}

/// `ratelimit.rejectWith`: `wait` (an error the server retries later, never one that disables
/// the registration) or `result` (pretend success).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RejectWith {
    #[default]
    Wait,
    Result,
}

/// `ratelimit.backend`: where the per-token state lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RatelimitBackend {
    #[default]
    Memory,
    Redis,
}

/// The platforms this build knows, as the caller's registry lists them.
#[derive(Debug, Clone, Default)]
pub struct Platforms {
    pub compiled: Vec<Platform>,
    /// Types known but compiled out: (type_name, cargo_feature), for a helpful error.
    pub not_compiled: Vec<(&'static str, &'static str)>,
}

/// One entry of `pushModules`.
#[derive(Clone, Debug)]
pub struct ModuleSettings {
    /// The key under `pushModules`, matched against a push's `pushModule` field.
    pub id: String,
    /// The registry entry of the module's `type`.
    pub platform: Platform,
    /// The module's platform block, read by the platform.
    pub config: Arc<dyn PlatformConfig>,
    /// Key `is_default_module` (historic spelling).
    pub is_default_module: bool,
    pub ratelimit: RatelimitSettings,
    /// Key `registration`: the registering client protocol the module serves, if any.
    pub registration: Option<RegistrationProtocol>,
    /// Key `registration.provider`: the provider id a tigase module serves.
    pub registration_provider: Option<String>,
    /// Where the platform block (or, without one, the module) stands in the file.
    position: Option<Pos>,
}

impl ModuleSettings {
    /// For settings built in code (tests, benchmarks): default ratelimit, not the default module.
    pub fn new(id: impl Into<String>, platform: Platform, config: Arc<dyn PlatformConfig>) -> Self {
        ModuleSettings {
            id: id.into(),
            platform,
            config,
            is_default_module: false,
            ratelimit: RatelimitSettings::default(),
            registration: None,
            registration_provider: None,
            position: None,
        }
    }

    /// `pushModules.<id>.<settings_key>` — the prefix for build errors.
    pub fn key_path(&self) -> String {
        format!("pushModules.{}.{}", self.id, self.platform.settings_key)
    }

    /// A problem met while building the module (a credential file), at its block's key path and
    /// line, so it reads like every other settings problem.
    pub fn build_error(&self, error: &dyn fmt::Display) -> ConfigError {
        ConfigError::new(&self.key_path(), self.position, error.to_string())
    }
}

/// A problem with the settings: `path` is the key path (`pushModules.monal.ratelimit.enabled`),
/// empty for the file as a whole; `line`/`column` are 1-based (columns count bytes), when known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub path: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

/// `path: message (line L, column C)`, leaving out what is unknown.
impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        match (self.line, self.column) {
            (Some(line), Some(column)) => write!(f, " (line {line}, column {column})"),
            (Some(line), None) => write!(f, " (line {line})"),
            _ => Ok(()),
        }
    }
}

/// Something ignored that was probably not meant to be (an unknown key, a key older fpush
/// versions used, a block the module's type does not read): reported like an error, not fatal.
pub type ConfigWarning = ConfigError;

impl ConfigError {
    pub(crate) fn new(path: &str, pos: Option<Pos>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.to_owned(),
            line: pos.map(|pos| pos.line),
            column: pos.map(|pos| pos.column),
            message: message.into(),
        }
    }
}

/// Every problem found in a settings file, one per line when displayed.
#[derive(Debug, thiserror::Error)]
#[error("{}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors {
    pub errors: Vec<ConfigError>,
    /// The warnings found on the way: a misspelt key is often why a required one is missing.
    pub warnings: Vec<ConfigWarning>,
    /// The module entries that did parse, so the caller can still check their credentials
    /// (build them) and report those problems in the same run.
    pub modules: Vec<ModuleSettings>,
}

impl ConfigErrors {
    fn new(errors: Vec<ConfigError>) -> Self {
        let (warnings, modules) = (Vec::new(), Vec::new());
        ConfigErrors {
            errors,
            warnings,
            modules,
        }
    }
}

/// Settings that passed validation, with the warnings found on the way.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub settings: Settings,
    pub warnings: Vec<ConfigWarning>,
}

/// Read and parse the settings file at `path`.
pub fn load(path: &Path, platforms: &Platforms) -> Result<Loaded, ConfigErrors> {
    let file = |pos, message: String| {
        let error = ConfigError::new(&path.display().to_string(), pos, message);
        ConfigErrors::new(vec![error])
    };
    let bytes = std::fs::read(path)
        .map_err(|err| file(None, format!("cannot read the settings file: {err}")))?;
    let text = String::from_utf8(bytes).map_err(|err| {
        let valid = err.as_bytes().get(..err.utf8_error().valid_up_to());
        let valid = std::str::from_utf8(valid.unwrap_or_default()).unwrap_or_default();
        let pos = document::LineIndex::new(valid).pos(valid.len());
        file(Some(pos), "the settings file is not valid UTF-8".to_owned())
    })?;
    parse(&text, platforms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_display_has_path_message_and_position() {
        let err = ConfigError {
            path: "pushModules.monalProdiOS.ratelimit.ratelimitTime".into(),
            line: Some(23),
            column: Some(30),
            message: "invalid duration \"twenty seconds\"".into(),
        };
        assert_eq!(
            err.to_string(),
            "pushModules.monalProdiOS.ratelimit.ratelimitTime: invalid duration \"twenty seconds\" (line 23, column 30)"
        );
        let bare = ConfigError::new("", None, "broken");
        assert_eq!(bare.to_string(), "broken");
        let two = ConfigErrors {
            errors: vec![err.clone(), bare],
            warnings: Vec::new(),
            modules: Vec::new(),
        };
        assert_eq!(two.to_string().lines().count(), 2);
    }

    #[test]
    fn component_key_is_not_in_debug_output() {
        let component = ComponentSettings {
            component_hostname: "push.example.org".into(),
            component_key: "k".into(),
            server_hostname: "127.0.0.1".into(),
            server_port: 5347,
        };
        let debug = format!("{component:?}");
        assert!(
            debug.contains("<redacted>") && !debug.contains("\"k\""),
            "{debug}"
        );
    }
}
