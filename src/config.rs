//! The settings model and its loading: one JSON file (comments and trailing commas accepted),
//! read once, deserialised with every key path tracked, then validated as a whole.
//!
//! Every problem is reported with its key path and its line and column in the file, e.g.
//! `pushModules.monalProdiOS.ratelimit.ratelimitTime: invalid duration "twenty seconds" (line 23,
//! column 30)`, and as many problems as can be found are reported at once, so an operator fixes
//! a file in one round. Unknown keys are warnings, not errors: a typo must not pass silently,
//! but a key from an older or newer fpush must not stop a restart either.
//!
//! The core only knows the core keys. Each module's platform block (`apns`, `fcm`, `demo`) is
//! kept as its slice of the file and deserialised later, by [`ModuleSettings::platform_config`],
//! into the platform crate's own struct, with the same paths and positions.

mod jsonc;
mod locate;
mod section;
mod validate;
mod values;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use self::locate::{Index, KeyPath, Pos};
use self::section::Piece;

/// Everything fpush is configured with.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub component: ComponentSettings,
    pub timeout: TimeoutSettings,
    pub limits: LimitSettings,
    /// Key `deadTokens`.
    pub dead_tokens: DeadTokenSettings,
    /// Key `pushModules`, in file order.
    pub push_modules: Vec<ModuleSettings>,
    pub redis: Option<RedisSettings>,
    pub metrics: Option<MetricsSettings>,
}

impl Settings {
    /// The module with this id.
    pub fn module(&self, id: &str) -> Option<&ModuleSettings> {
        self.push_modules.iter().find(|module| module.id == id)
    }

    /// The module that serves pushes which name no `pushModule` (at most one exists).
    pub fn default_module(&self) -> Option<&ModuleSettings> {
        self.push_modules
            .iter()
            .find(|module| module.is_default_module)
    }
}

/// `component`: who we are to the XMPP server and where to reach it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[serde(
    expecting = "an object with componentHostname, componentKey, serverHostname and serverPort"
)]
pub struct ComponentSettings {
    /// The component's JID, e.g. `push.example.org`.
    pub component_hostname: String,
    /// The shared secret of the XEP-0114 handshake.
    pub component_key: String,
    pub server_hostname: String,
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
#[serde(rename_all = "camelCase", default)]
#[serde(expecting = "an object of timeouts")]
pub struct TimeoutSettings {
    /// Wait after a failed connect or handshake; the base of the reconnect backoff.
    /// The key keeps the spelling existing configs use (`xmppconnectionError`).
    #[serde(
        rename = "xmppconnectionError",
        alias = "xmppConnectionError",
        deserialize_with = "values::duration"
    )]
    pub xmpp_connection_error: Duration,
    /// How often the link is proven alive with a ping to the server.
    #[serde(deserialize_with = "values::duration")]
    pub keepalive_interval: Duration,
    /// How long without any reply to a ping means the link is dead.
    #[serde(deserialize_with = "values::duration")]
    pub keepalive_timeout: Duration,
}

impl Default for TimeoutSettings {
    fn default() -> Self {
        TimeoutSettings {
            xmpp_connection_error: Duration::from_secs(20),
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

/// `limits`: the bounds that keep memory and work finite.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
#[serde(expecting = "an object of limits")]
pub struct LimitSettings {
    /// Provider calls in flight; a push beyond it is answered `wait` at once.
    pub max_concurrent_pushes: usize,
    /// Largest stanza accepted, in bytes (`262144`, `"256KiB"`).
    #[serde(deserialize_with = "values::byte_size")]
    pub max_stanza_size: usize,
    /// Deepest element nesting accepted inside the stream.
    pub max_depth: usize,
    /// How long a shutdown waits for pushes in flight.
    #[serde(deserialize_with = "values::duration")]
    pub shutdown_grace: Duration,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            max_concurrent_pushes: 10_000,
            max_stanza_size: 256 * 1024,
            max_depth: 32,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// `deadTokens`: remembering tokens a provider declared dead.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
#[serde(expecting = "an object with `remember`")]
pub struct DeadTokenSettings {
    /// How long a dead token is answered without asking the provider again; zero disables.
    #[serde(deserialize_with = "values::duration")]
    pub remember: Duration,
}

impl Default for DeadTokenSettings {
    fn default() -> Self {
        DeadTokenSettings {
            remember: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// `redis`: the shared store for modules whose ratelimit uses `backend: "redis"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[serde(expecting = "an object with `url` or `cluster`, and optionally `keyPrefix`")]
pub struct RedisSettings {
    /// One Redis server; empty when `cluster` is given instead.
    #[serde(default)]
    pub url: String,
    /// Seed node URLs of a Redis Cluster, instead of `url`.
    #[serde(default)]
    pub cluster: Vec<String>,
    /// Prefix of every key fpush writes, so several deployments can share one Redis.
    #[serde(default = "default_redis_key_prefix")]
    pub key_prefix: String,
}

fn default_redis_key_prefix() -> String {
    "fpush:".to_owned()
}

/// `metrics`: the optional HTTP listener for `/metrics` and `/health`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[serde(expecting = "an object with `listen`")]
pub struct MetricsSettings {
    pub listen: SocketAddr,
}

/// `pushModules.<id>.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModuleType {
    Apple,
    Google,
    Demo,
}

impl ModuleType {
    /// The key of this type's platform block.
    pub fn platform_key(self) -> &'static str {
        match self {
            ModuleType::Apple => "apns",
            ModuleType::Google => "fcm",
            ModuleType::Demo => "demo",
        }
    }

    /// The cargo feature that compiles this type in.
    pub fn cargo_feature(self) -> &'static str {
        match self {
            ModuleType::Apple => "enable_apns_support",
            ModuleType::Google => "enable_fcm_support",
            ModuleType::Demo => "enable_demo_support",
        }
    }

    /// Whether this build of fpush can run modules of this type.
    pub fn is_compiled_in(self) -> bool {
        match self {
            ModuleType::Apple => cfg!(feature = "enable_apns_support"),
            ModuleType::Google => cfg!(feature = "enable_fcm_support"),
            ModuleType::Demo => cfg!(feature = "enable_demo_support"),
        }
    }
}

impl fmt::Display for ModuleType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ModuleType::Apple => "apple",
            ModuleType::Google => "google",
            ModuleType::Demo => "demo",
        })
    }
}

/// `pushModules.<id>.ratelimit`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
#[serde(expecting = "an object of ratelimit settings")]
pub struct RatelimitSettings {
    pub enabled: bool,
    /// The window after a send within which another push for the token waits.
    #[serde(deserialize_with = "values::duration")]
    pub ratelimit_time: Duration,
    /// Entries whose last send is older than this are swept from the cache.
    #[serde(deserialize_with = "values::duration")]
    pub ratelimit_cleanup_interval: Duration,
    /// The reply to a push rejected by the ratelimit.
    pub reject_with: RejectWith,
    pub backend: RatelimitBackend,
}

impl Default for RatelimitSettings {
    fn default() -> Self {
        RatelimitSettings {
            enabled: true,
            ratelimit_time: Duration::from_secs(20),
            ratelimit_cleanup_interval: Duration::from_secs(300),
            reject_with: RejectWith::Wait,
            backend: RatelimitBackend::Memory,
        }
    }
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

/// One entry of `pushModules`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleSettings {
    /// The key under `pushModules`, matched against a push's `pushModule` field.
    pub id: String,
    pub module_type: ModuleType,
    /// Key `is_default_module` (historic spelling).
    pub is_default_module: bool,
    pub ratelimit: RatelimitSettings,
    /// This type's platform block as it stands in the file, if present.
    platform: Option<PlatformBlock>,
    /// Where the module's id stands in the file.
    position: Option<Pos>,
}

/// A platform block's text (comment-free JSON) and where it starts in the settings file.
#[derive(Debug, Clone, PartialEq)]
struct PlatformBlock {
    text: String,
    origin: Pos,
}

impl ModuleSettings {
    /// A module with default ratelimit settings and no platform block, for building settings in
    /// code (tests, benchmarks); its `platform_config` deserialises from `{}`.
    pub fn new(id: impl Into<String>, module_type: ModuleType) -> Self {
        ModuleSettings {
            id: id.into(),
            module_type,
            is_default_module: false,
            ratelimit: RatelimitSettings::default(),
            platform: None,
            position: None,
        }
    }

    /// The key of this module's platform block: `apns`, `fcm` or `demo`.
    pub fn platform_key(&self) -> &'static str {
        self.module_type.platform_key()
    }

    /// Deserialise this module's platform block into the platform crate's own config struct
    /// (e.g. `fpush_apns::ApnsConfig`). Errors and unknown-key warnings carry the full key path
    /// (`pushModules.<id>.apns.topic`) and the line and column in the settings file. A missing
    /// block deserialises from `{}`, so a struct whose fields all have defaults still works.
    pub fn platform_config<T: DeserializeOwned>(
        &self,
    ) -> Result<(T, Vec<ConfigWarning>), ConfigError> {
        let path = KeyPath::root()
            .key("pushModules")
            .key(&self.id)
            .key(self.platform_key());
        match &self.platform {
            Some(block) => {
                let index = Index::build(&block.text, block.origin, &path);
                section::deserialize(&Piece {
                    text: &block.text,
                    origin: block.origin,
                    path: &path,
                    index: &index,
                })
            }
            None => {
                let index = Index::default();
                let piece = Piece {
                    text: "{}",
                    origin: Pos::START,
                    path: &path,
                    index: &index,
                };
                // The `{}` is not in the file: point at the module instead.
                section::deserialize(&piece).map_err(|mut err| {
                    err.line = self.position.map(|pos| pos.line);
                    err.column = self.position.map(|pos| pos.column);
                    err
                })
            }
        }
    }
}

/// A problem that stops the settings from being used.
///
/// `path` is the key path (`pushModules.monal.apns.topic`), empty for problems of the file as a
/// whole; `line`/`column` are 1-based positions in the file, when known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", Problem(.path, .line, .column, .message))]
pub struct ConfigError {
    pub path: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(path: &str, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.to_owned(),
            line: None,
            column: None,
            message: message.into(),
        }
    }

    pub(crate) fn at(path: &str, pos: Pos, message: impl Into<String>) -> Self {
        ConfigError {
            line: Some(pos.line),
            column: Some(pos.column),
            ..ConfigError::new(path, message)
        }
    }

    pub(crate) fn located(path: &KeyPath, pos: Option<Pos>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.to_string(),
            line: pos.map(|pos| pos.line),
            column: pos.map(|pos| pos.column),
            message: message.into(),
        }
    }
}

/// Every problem found in a settings file, one per line when displayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", Lines(.0))]
pub struct ConfigErrors(pub Vec<ConfigError>);

/// Something in the settings file that is ignored but probably not meant to be (an unknown
/// key, a key older fpush versions used, a block the module's type does not read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    pub path: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl ConfigWarning {
    pub(crate) fn located(path: &KeyPath, pos: Option<Pos>, message: impl Into<String>) -> Self {
        let ConfigError {
            path,
            line,
            column,
            message,
        } = ConfigError::located(path, pos, message);
        ConfigWarning {
            path,
            line,
            column,
            message,
        }
    }
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Problem(&self.path, &self.line, &self.column, &self.message).fmt(f)
    }
}

/// `path: message (line L, column C)`, leaving out what is unknown.
struct Problem<'a>(&'a str, &'a Option<usize>, &'a Option<usize>, &'a str);

impl fmt::Display for Problem<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Problem(path, line, column, message) = *self;
        if !path.is_empty() {
            write!(f, "{path}: ")?;
        }
        f.write_str(message)?;
        match (line, column) {
            (Some(line), Some(column)) => write!(f, " (line {line}, column {column})"),
            (Some(line), None) => write!(f, " (line {line})"),
            _ => Ok(()),
        }
    }
}

struct Lines<'a>(&'a [ConfigError]);

impl fmt::Display for Lines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            error.fmt(f)?;
        }
        Ok(())
    }
}

/// Settings that passed validation, with the warnings found on the way.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub settings: Settings,
    pub warnings: Vec<ConfigWarning>,
}

/// Read and parse the settings file at `path`.
pub fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
    let bytes = std::fs::read(path).map_err(|err| {
        ConfigErrors(vec![ConfigError::new(
            &path.display().to_string(),
            format!("cannot read the settings file: {err}"),
        )])
    })?;
    let text = String::from_utf8(bytes).map_err(|err| {
        let pos = Pos::of_offset(
            &String::from_utf8_lossy(err.as_bytes()),
            err.utf8_error().valid_up_to(),
        );
        ConfigErrors(vec![ConfigError::at(
            &path.display().to_string(),
            pos,
            "the settings file is not valid UTF-8",
        )])
    })?;
    parse(&text)
}

/// Parse and validate settings from the text of a settings file.
pub fn parse(text: &str) -> Result<Loaded, ConfigErrors> {
    let plain = jsonc::to_plain_json(text).map_err(|err| ConfigErrors(vec![err]))?;
    if plain.trim().is_empty() {
        return Err(ConfigErrors(vec![ConfigError::new(
            "",
            "the settings file is empty (or holds only comments)",
        )]));
    }
    // Syntax first, for the whole file: serde_json's message and position are the best there is.
    if let Err(err) = serde_json::from_str::<serde_json::Value>(&plain) {
        return Err(ConfigErrors(vec![section::json_error(
            KeyPath::root(),
            Pos::START,
            &err,
        )]));
    }
    let index = Index::build(&plain, Pos::START, &KeyPath::root());
    let mut reader = Reader {
        plain: &plain,
        index: &index,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let settings = reader.settings();
    let Reader {
        mut errors,
        mut warnings,
        ..
    } = reader;
    sort_by_position(&mut errors, |e| (e.line, e.column));
    sort_by_position(&mut warnings, |w| (w.line, w.column));
    match settings {
        Some(settings) if errors.is_empty() => Ok(Loaded { settings, warnings }),
        _ if errors.is_empty() => Err(ConfigErrors(vec![ConfigError::new(
            "",
            "the settings could not be read",
        )])),
        _ => Err(ConfigErrors(errors)),
    }
}

/// File order; problems without a position last, in the order they were found.
fn sort_by_position<T>(items: &mut [T], key: impl Fn(&T) -> (Option<usize>, Option<usize>)) {
    items.sort_by_key(|item| {
        let (line, column) = key(item);
        (line.unwrap_or(usize::MAX), column.unwrap_or(0))
    });
}

const TOP_LEVEL_KEYS: &[&str] = &[
    "component",
    "timeout",
    "limits",
    "deadTokens",
    "pushModules",
    "redis",
    "metrics",
];

/// What a push module entry holds besides its platform block.
#[derive(Deserialize)]
#[serde(expecting = "a push module object (with at least `type`)")]
struct ModuleEntry {
    #[serde(rename = "type")]
    module_type: ModuleType,
    #[serde(rename = "is_default_module", default)]
    is_default_module: bool,
    #[serde(default)]
    ratelimit: RatelimitSettings,
    // The platform blocks are read later by `platform_config`; naming them here keeps them
    // out of the unknown-key warnings.
    #[serde(default, rename = "apns")]
    _apns: Option<serde_json::Value>,
    #[serde(default, rename = "fcm")]
    _fcm: Option<serde_json::Value>,
    #[serde(default, rename = "demo")]
    _demo: Option<serde_json::Value>,
}

/// One pass over a syntactically valid settings file, collecting problems as it goes.
struct Reader<'a> {
    plain: &'a str,
    index: &'a Index,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigWarning>,
}

impl Reader<'_> {
    fn settings(&mut self) -> Option<Settings> {
        let root = KeyPath::root();
        let is_object = self
            .index
            .get(&root)
            .and_then(|entry| entry.first_byte(self.plain))
            == Some(b'{');
        if !is_object {
            self.errors.push(ConfigError::at(
                "",
                Pos::START,
                "the settings file must hold one JSON object",
            ));
            return None;
        }
        self.top_level_keys(&root);

        let component = self.section::<ComponentSettings>("component");
        if component.is_none() && self.index.get(&root.key("component")).is_none() {
            self.errors.push(ConfigError::new(
                "component",
                "missing: fpush needs componentHostname, componentKey, serverHostname and serverPort",
            ));
        }
        let timeout = self.section("timeout").unwrap_or_default();
        let limits = self.section("limits").unwrap_or_default();
        let dead_tokens = self.section("deadTokens").unwrap_or_default();
        let redis = self.section::<RedisSettings>("redis");
        let metrics = self.section::<MetricsSettings>("metrics");
        let push_modules = self.push_modules();

        let settings = Settings {
            component: component?,
            timeout,
            limits,
            dead_tokens,
            push_modules,
            redis,
            metrics,
        };
        validate::settings(&settings, self.index, &mut self.errors);
        Some(settings)
    }

    /// Warn about top-level keys we do not read; refuse duplicates (JSON would keep the last
    /// one silently, which hides half of a copy-pasted file).
    fn top_level_keys(&mut self, root: &KeyPath) {
        let mut seen: HashMap<&str, Pos> = HashMap::new();
        for entry in self.index.children(root) {
            let Some(key) = entry.path.last_key() else {
                continue;
            };
            if let Some(first) = seen.get(key) {
                self.errors.push(ConfigError::located(
                    &entry.path,
                    Some(entry.pos()),
                    format!("duplicate key (first at line {})", first.line),
                ));
                continue;
            }
            seen.insert(key, entry.pos());
            if !TOP_LEVEL_KEYS.contains(&key) {
                self.warnings.push(ConfigWarning::located(
                    &entry.path,
                    Some(entry.pos()),
                    section::ignored_key_message(Some(key)),
                ));
            }
        }
    }

    /// Deserialise a top-level section, if present.
    fn section<T: DeserializeOwned>(&mut self, key: &str) -> Option<T> {
        let path = KeyPath::root().key(key);
        let entry = self.index.get(&path)?;
        self.piece(&path, entry.span.clone(), entry.value_pos)
    }

    /// Deserialise the value at `span` of the file as `T`, recording its problems.
    fn piece<T: DeserializeOwned>(
        &mut self,
        path: &KeyPath,
        span: std::ops::Range<usize>,
        origin: Pos,
    ) -> Option<T> {
        let text = self.plain.get(span)?;
        let piece = Piece {
            text,
            origin,
            path,
            index: self.index,
        };
        match section::deserialize::<T>(&piece) {
            Ok((value, warnings)) => {
                self.warnings.extend(warnings);
                Some(value)
            }
            Err(err) => {
                self.errors.push(err);
                None
            }
        }
    }

    fn push_modules(&mut self) -> Vec<ModuleSettings> {
        let path = KeyPath::root().key("pushModules");
        let Some(entry) = self.index.get(&path) else {
            self.errors.push(ConfigError::new(
                "pushModules",
                "missing: configure at least one push module",
            ));
            return Vec::new();
        };
        if entry.first_byte(self.plain) != Some(b'{') {
            self.errors.push(ConfigError::located(
                &path,
                Some(entry.value_pos),
                "must be an object mapping module ids to modules",
            ));
            return Vec::new();
        }
        let entries: Vec<_> = self.index.children(&path).cloned().collect();
        if entries.is_empty() {
            self.errors.push(ConfigError::located(
                &path,
                Some(entry.pos()),
                "no push modules configured: add at least one",
            ));
        }
        let mut seen: HashMap<String, Pos> = HashMap::new();
        let mut modules = Vec::with_capacity(entries.len());
        for module in entries {
            let Some(id) = module.path.last_key() else {
                continue;
            };
            if let Some(first) = seen.get(id) {
                self.errors.push(ConfigError::located(
                    &module.path,
                    Some(module.pos()),
                    format!("duplicate module id (first at line {})", first.line),
                ));
                continue;
            }
            seen.insert(id.to_owned(), module.pos());
            if let Some(settings) = self.module(id, &module) {
                modules.push(settings);
            }
        }
        modules
    }

    fn module(&mut self, id: &str, entry: &locate::Entry) -> Option<ModuleSettings> {
        let path = &entry.path;
        let module: ModuleEntry = self.piece(path, entry.span.clone(), entry.value_pos)?;
        let platform_key = module.module_type.platform_key();
        let mut platform = None;
        for key in ["apns", "fcm", "demo"] {
            let Some(block) = self.index.get(&path.key(key)) else {
                continue;
            };
            if key != platform_key {
                self.warnings.push(ConfigWarning::located(
                    &block.path,
                    Some(block.pos()),
                    format!(
                        "not used by a module of type {} (it reads `{platform_key}`); ignored",
                        module.module_type
                    ),
                ));
            } else if block.first_byte(self.plain) != Some(b'{') {
                self.errors.push(ConfigError::located(
                    &block.path,
                    Some(block.value_pos),
                    "must be an object",
                ));
            } else if let Some(text) = self.plain.get(block.span.clone()) {
                platform = Some(PlatformBlock {
                    text: text.to_owned(),
                    origin: block.value_pos,
                });
            }
        }
        Some(ModuleSettings {
            id: id.to_owned(),
            module_type: module.module_type,
            is_default_module: module.is_default_module,
            ratelimit: module.ratelimit,
            platform,
            position: Some(entry.pos()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{
        "component": {"componentHostname": "push.example.org", "componentKey": "k",
                      "serverHostname": "127.0.0.1", "serverPort": 5347},
        "pushModules": {"d": {"type": "demo", "is_default_module": true}}
    }"#;

    #[test]
    fn minimal_file_gets_every_default() {
        let loaded = parse(MINIMAL).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let s = loaded.settings;
        assert_eq!(s.timeout, TimeoutSettings::default());
        assert_eq!(s.limits, LimitSettings::default());
        assert_eq!(s.dead_tokens.remember, Duration::from_secs(86_400));
        assert_eq!(s.push_modules[0].ratelimit, RatelimitSettings::default());
        assert_eq!(s.default_module().map(|m| m.id.as_str()), Some("d"));
        assert_eq!(s.redis, None);
        assert_eq!(s.metrics, None);
    }

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
        let bare = ConfigError::new("", "broken");
        assert_eq!(bare.to_string(), "broken");
        let two = ConfigErrors(vec![err.clone(), bare]);
        assert_eq!(two.to_string().lines().count(), 2);
    }

    #[test]
    fn component_key_is_not_in_debug_output() {
        let s = parse(MINIMAL).unwrap().settings;
        let debug = format!("{:?}", s.component);
        assert!(
            debug.contains("<redacted>") && !debug.contains("\"k\""),
            "{debug}"
        );
    }

    #[test]
    fn module_built_in_code_reads_its_config_from_empty_object() {
        #[derive(Deserialize, Debug, PartialEq, Default)]
        #[serde(default)]
        struct AllDefault {
            x: u32,
        }
        let module = ModuleSettings::new("m", ModuleType::Demo);
        let (cfg, warnings) = module.platform_config::<AllDefault>().unwrap();
        assert_eq!(cfg, AllDefault::default());
        assert!(warnings.is_empty());
    }
}
