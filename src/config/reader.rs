//! From the parsed document to [`Settings`]: the top-level sections in one read, then each push
//! module with its platform block (read by the platform's registry entry), then validation;
//! every problem on the way is collected with its key path and position.

use std::sync::Arc;

use fpush_traits::{parse_block, BlockError, Platform, PlatformConfig};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::document::{self, Document};
use super::read::{self, Outcome};
use super::validate::Check;
use super::values;
use super::{
    AccessSettings, ComponentSettings, ConfigError, ConfigErrors, ConfigWarning, DeadTokenSettings,
    LimitSettings, Loaded, MetricsSettings, ModuleSetSettings, ModuleSettings, Platforms,
    RatelimitSettings, RedisSettings, RegistrationBlock, Settings, StoreSettings, TimeoutSettings,
};

/// Keys that older fpush configs carry and this version has no use for: accepted anywhere,
/// with a warning, so an existing deployment's file keeps loading.
const LEGACY_KEYS: &[&str] = &["hardRatelimitTime", "blacklist", "poolIdleTimeout"];

/// The top level; `pushModules` is kept as a value and read module by module.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TopLevel {
    component: Option<ComponentSettings>,
    #[serde(default)]
    timeout: TimeoutSettings,
    #[serde(default)]
    limits: LimitSettings,
    #[serde(default)]
    dead_tokens: DeadTokenSettings,
    #[serde(default, with = "AccessSection")]
    access: AccessSettings,
    #[serde(default)]
    modules: ModuleSetSettings,
    redis: Option<RedisSettings>,
    metrics: Option<MetricsSettings>,
    store: Option<StoreSettings>,
    push_modules: Option<Value>,
}

/// `access`, read straight into the core's [`AccessSettings`] (its defaults included).
#[derive(Deserialize)]
#[serde(
    remote = "AccessSettings",
    rename_all = "camelCase",
    default = "AccessSettings::default"
)]
#[serde(expecting = "an object with allowedDomains, perDomainRate and perDomainBurst")]
struct AccessSection {
    allowed_domains: Vec<String>,
    #[serde(deserialize_with = "values::amount")]
    per_domain_rate: f64,
    #[serde(deserialize_with = "values::amount")]
    per_domain_burst: f64,
}

/// A push module entry besides its platform block.
#[derive(Deserialize)]
#[serde(expecting = "a push module object (with at least `type`)")]
struct ModuleEntry {
    #[serde(rename = "type")]
    type_name: String,
    #[serde(rename = "is_default_module", default)]
    is_default_module: bool,
    #[serde(default)]
    ratelimit: RatelimitSettings,
    registration: Option<RegistrationBlock>,
}

/// Parse and validate settings from the text of a settings file.
pub fn parse(text: &str, platforms: &Platforms) -> Result<Loaded, ConfigErrors> {
    let (document, errors) = document::parse(text).map_err(|error| ConfigErrors {
        errors: vec![error],
        modules: Vec::new(),
    })?;
    let mut reader = Reader {
        document: &document,
        platforms,
        errors,
        warnings: Vec::new(),
    };
    let settings = reader.settings();
    let Reader {
        mut errors,
        mut warnings,
        ..
    } = reader;
    sort_by_position(&mut errors);
    sort_by_position(&mut warnings);
    match settings {
        Ok(settings) if errors.is_empty() => Ok(Loaded { settings, warnings }),
        Ok(Settings { push_modules, .. }) | Err(push_modules) => Err(ConfigErrors {
            errors,
            modules: push_modules,
        }),
    }
}

/// File order; problems without a position last, in the order they were found.
fn sort_by_position(items: &mut [ConfigError]) {
    items.sort_by_key(|item| (item.line.unwrap_or(usize::MAX), item.column.unwrap_or(0)));
}

struct Reader<'a> {
    document: &'a Document,
    platforms: &'a Platforms,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigWarning>,
}

impl Reader<'_> {
    /// The settings, or (when even the component could not be read) the modules that were.
    fn settings(&mut self) -> Result<Settings, Vec<ModuleSettings>> {
        let root = &self.document.root;
        if !root.is_object() {
            self.error("", None, "the settings file must hold one JSON object");
            return Err(Vec::new());
        }
        let Some(top) = self.read("", root, parse_block::<TopLevel>) else {
            return Err(Vec::new());
        };
        let push_modules = self.modules(top.push_modules.as_ref());
        let mut check = Check {
            document: self.document,
            errors: &mut self.errors,
        };
        check.timeout(&top.timeout);
        check.limits(&top.limits);
        check.memory(&top.dead_tokens, &top.modules);
        check.access(&top.access);
        check.modules(&push_modules, top.redis.is_some());
        check.registrations(&push_modules, top.store.is_some());
        if let Some(redis) = &top.redis {
            check.redis(redis);
        }
        if let Some(component) = &top.component {
            check.component(component);
        }
        if let Some(store) = &top.store {
            super::store::check(&mut check, store, top.redis.is_some());
        }
        let Some(component) = top.component else {
            if root.get("component").is_none() {
                let message = "missing: fpush needs componentHostname, componentKey, serverHostname and serverPort";
                self.error("component", None, message);
            }
            return Err(push_modules);
        };
        Ok(Settings {
            component,
            timeout: top.timeout,
            limits: top.limits,
            dead_tokens: top.dead_tokens,
            access: top.access,
            modules: top.modules,
            push_modules,
            redis: top.redis,
            metrics: top.metrics,
            store: top.store,
        })
    }

    fn modules(&mut self, modules: Option<&Value>) -> Vec<ModuleSettings> {
        let path = "pushModules";
        let Some(modules) = modules else {
            self.error(path, None, "missing: configure at least one push module");
            return Vec::new();
        };
        let Some(modules) = modules.as_object() else {
            let pos = self.document.key_pos(path);
            self.error(path, pos, "must be an object mapping module ids to modules");
            return Vec::new();
        };
        if modules.is_empty() {
            let pos = self.document.key_pos(path);
            self.error(path, pos, "no push modules configured: add at least one");
        }
        // In file order (the map is sorted by key).
        let mut entries: Vec<_> = modules.iter().collect();
        let position = |id: &str| self.document.key_pos(&format!("{path}.{id}"));
        entries.sort_by_cached_key(|(id, _)| position(id).map(|pos| (pos.line, pos.column)));
        entries
            .into_iter()
            .filter_map(|(id, module)| self.module(id, module))
            .collect()
    }

    fn module(&mut self, id: &str, module: &Value) -> Option<ModuleSettings> {
        let path = format!("pushModules.{id}");
        // The platform blocks are the platforms' to read, not unknown keys of the entry.
        let mut blocks = Map::new();
        let mut entry = module.clone();
        if let Some(entry) = entry.as_object_mut() {
            for platform in &self.platforms.compiled {
                if let Some(block) = entry.remove(platform.settings_key) {
                    blocks.insert(platform.settings_key.to_owned(), block);
                }
            }
        }
        let entry = self.read(&path, &entry, parse_block::<ModuleEntry>)?;
        let platform = self.platform(&path, &entry.type_name)?;
        for key in blocks.keys().filter(|key| *key != platform.settings_key) {
            let message = format!(
                "not used by a module of type {} (it reads `{}`); ignored",
                platform.type_name, platform.settings_key
            );
            self.warn(&format!("{path}.{key}"), message);
        }
        let block = blocks.get(platform.settings_key);
        let config = self.platform_block(&path, &platform, block)?;
        let block_path = format!("{path}.{}", platform.settings_key);
        let position = match block {
            Some(_) => self.document.key_pos(&block_path),
            None => self.document.key_pos(&path),
        };
        Some(ModuleSettings {
            id: id.to_owned(),
            platform,
            config,
            is_default_module: entry.is_default_module,
            ratelimit: entry.ratelimit,
            registration: entry.registration.as_ref().map(|block| block.protocol),
            registration_provider: entry.registration.and_then(|block| block.provider),
            position,
        })
    }

    /// The registry entry of a module's `type`, or an error naming the known types (or the cargo
    /// feature that would compile this one in).
    fn platform(&mut self, path: &str, type_name: &str) -> Option<Platform> {
        let platforms = self.platforms;
        if let Some(platform) = platforms.compiled.iter().find(|p| p.type_name == type_name) {
            return Some(*platform);
        }
        let message = match platforms.not_compiled.iter().find(|(t, _)| *t == type_name) {
            Some((_, feature)) => format!(
                "module type `{type_name}` is not compiled into this fpush; build it with the cargo feature `{feature}`"
            ),
            None => {
                let compiled = platforms.compiled.iter().map(|p| p.type_name);
                let known: Vec<_> = compiled
                    .chain(platforms.not_compiled.iter().map(|t| t.0))
                    .collect();
                format!("unknown module type `{type_name}` (known: {})", known.join(", "))
            }
        };
        let type_path = format!("{path}.type");
        let pos = self.document.value_end(&type_path);
        self.error(&type_path, pos, message);
        None
    }

    /// The platform's reading of the module's block; an absent block is read from `{}`, and what
    /// that lacks is reported at the module.
    fn platform_block(
        &mut self,
        path: &str,
        platform: &Platform,
        block: Option<&Value>,
    ) -> Option<Arc<dyn PlatformConfig>> {
        let block_path = format!("{path}.{}", platform.settings_key);
        let parse = |block: &Value| (platform.parse)(block).map(|p| (p.config, p.ignored_keys));
        let config = match block {
            Some(block) if !block.is_object() => {
                let pos = self.document.value_end(&block_path);
                self.error(&block_path, pos, "must be an object");
                None
            }
            Some(block) => self.read(&block_path, block, parse),
            None => {
                let Outcome { value, errors, .. } = read::read(&Value::Object(Map::new()), parse);
                let pos = self.document.key_pos(path);
                for error in errors {
                    let message = format!(
                        "a module of type {} needs its `{}` block ({})",
                        platform.type_name, platform.settings_key, error.message
                    );
                    self.error(path, pos, message);
                }
                value
            }
        };
        config.map(Arc::from)
    }

    /// Read the piece at `path`, recording its errors and its unread keys.
    fn read<T>(
        &mut self,
        path: &str,
        piece: &Value,
        parse: impl Fn(&Value) -> Result<(T, Vec<String>), BlockError>,
    ) -> Option<T> {
        let outcome = read::read(piece, parse);
        for BlockError {
            path: inner,
            message,
        } in outcome.errors
        {
            let full = join(path, &inner);
            let pos = self.document.value_end(&full);
            self.error(&full, pos, message);
        }
        for inner in outcome.ignored {
            let key = document::segments(&inner).last().unwrap_or_default();
            let message = if LEGACY_KEYS.contains(&key) {
                "not used by this version of fpush; ignored (safe to remove)"
            } else {
                "unknown key, ignored (check its spelling and place)"
            };
            self.warn(&join(path, &inner), message.to_owned());
        }
        outcome.value
    }

    fn error(&mut self, path: &str, pos: Option<document::Pos>, message: impl Into<String>) {
        self.errors.push(ConfigError::new(path, pos, message));
    }

    fn warn(&mut self, path: &str, message: String) {
        let pos = self.document.key_pos(path);
        self.warnings.push(ConfigWarning::new(path, pos, message));
    }
}

/// `prefix` + a path relative to it, without `?` placeholders (`nested.?.x` reads `nested.x`).
fn join(prefix: &str, inner: &str) -> String {
    let inner = inner.replace(".?", "").replace("?.", "");
    match (prefix.is_empty(), inner.is_empty() || inner == "?") {
        (_, true) => prefix.to_owned(),
        (true, false) => inner,
        (false, false) if inner.starts_with('[') => format!("{prefix}{inner}"),
        (false, false) => format!("{prefix}.{inner}"),
    }
}
