//! From the parsed document to [`Settings`]: the top level in one read, then each push module
//! with its platform block (read by the platform's registry entry), then validation; every
//! problem on the way is collected with its key path and position.
//!
//! A piece (the top level, a module, a platform block) is read again after each bad value with
//! that key taken out, so the type's default stands in and every bad value is reported, not
//! only the first one serde stops at. A "missing field" for a key taken out that way is a
//! consequence, not a new problem: the object lacking it is taken out in turn.

use std::sync::Arc;

use fpush_traits::{parse_block, BlockError, Platform, PlatformConfig};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::document::{self, Document};
use super::{validate, ConfigErrors, Loaded, ModuleSettings, Platforms};
use super::{RatelimitSettings, RegistrationBlock, Settings};

/// Keys that older fpush configs carry and this version has no use for: accepted anywhere,
/// with a warning, so an existing deployment's file keeps loading.
const LEGACY_KEYS: &[&str] = &["hardRatelimitTime", "blacklist", "poolIdleTimeout"];

/// At most this many re-reads per piece (one per bad value).
const MAX_ERRORS: usize = 50;

/// A push module entry besides its platform block.
#[derive(Deserialize)]
#[serde(expecting = "a push module object (with at least `type`)")]
struct ModuleEntry {
    #[serde(rename = "type")]
    type_name: String,
    #[serde(default)]
    is_default_module: bool,
    #[serde(default)]
    ratelimit: RatelimitSettings,
    registration: Option<RegistrationBlock>,
}

/// One reading of a piece: the value and the paths of its unread keys, or its first error.
type Parser<'a, T> = &'a dyn Fn(&Value) -> Result<(T, Vec<String>), BlockError>;

/// What reading a piece gave: the value (bad keys at their defaults; `None` when it could not
/// be read at all), the errors and the unread keys, with paths relative to the piece.
type Piece<T> = (Option<T>, Vec<BlockError>, Vec<String>);

/// Parse and validate settings from the text of a settings file.
pub fn parse(text: &str, platforms: &Platforms) -> Result<Loaded, ConfigErrors> {
    let mut document = document::parse(text).map_err(|e| ConfigErrors::new(vec![e]))?;
    let doc = &mut document;
    let settings = Reader { doc, platforms }.settings();
    let (mut errors, mut warnings) = (document.errors, document.warnings);
    // File order; problems without a position last, in the order they were found.
    for items in [&mut errors, &mut warnings] {
        items.sort_by_key(|item| (item.line.unwrap_or(usize::MAX), item.column.unwrap_or(0)));
    }
    match settings {
        Some(settings) if errors.is_empty() => Ok(Loaded { settings, warnings }),
        settings => {
            let modules = settings.map(|s| s.push_modules).unwrap_or_default();
            Err(ConfigErrors {
                errors,
                warnings,
                modules,
            })
        }
    }
}

/// The document being read, with the platforms that read the modules' blocks.
struct Reader<'a> {
    doc: &'a mut Document,
    platforms: &'a Platforms,
}

impl Reader<'_> {
    /// The settings (`None` only for a file that is no object), modules read and checked even
    /// when the top level has problems.
    fn settings(&mut self) -> Option<Settings> {
        let Some(mut root) = self.doc.root.as_object().cloned() else {
            let message = "the settings file must hold one JSON object";
            self.doc.error("", message);
            return None;
        };
        let modules = root.remove("pushModules");
        if !root.contains_key("component") {
            let message = "missing: fpush needs componentHostname, componentKey, serverHostname and serverPort";
            self.doc.error("component", message);
        }
        let mut settings = self.read("", &Value::Object(root), &parse_block::<Settings>)?;
        settings.push_modules = self.modules(modules.as_ref());
        validate::check(self.doc, &settings);
        Some(settings)
    }

    /// The modules in file order (the map is sorted by key).
    fn modules(&mut self, modules: Option<&Value>) -> Vec<ModuleSettings> {
        let modules = match modules.map(Value::as_object) {
            None => Err("missing: configure at least one push module"),
            Some(None) => Err("must be an object mapping module ids to modules"),
            Some(Some(map)) if map.is_empty() => {
                Err("no push modules configured: add at least one")
            }
            Some(Some(map)) => Ok(map),
        };
        let modules = modules.map_err(|message| self.doc.error("pushModules", message));
        let mut entries: Vec<_> = modules.into_iter().flatten().collect();
        entries.sort_by_cached_key(|(id, _)| self.doc.key_pos(&format!("pushModules.{id}")));
        let mut modules = Vec::new();
        for (id, module) in entries {
            modules.extend(self.module(id, module));
        }
        modules
    }

    fn module(&mut self, id: &str, module: &Value) -> Option<ModuleSettings> {
        let path = format!("pushModules.{id}");
        let compiled = &self.platforms.compiled;
        let entry = self.read(&path, module, &|entry| {
            // The platform blocks are the platforms' to read, not unknown keys of the entry.
            let unknown = |key: &String| !compiled.iter().any(|p| p.settings_key == key);
            match parse_block::<ModuleEntry>(entry) {
                Ok((entry, ignored)) => Ok((entry, ignored.into_iter().filter(unknown).collect())),
                Err(mut error) => {
                    error.ignored_keys.retain(unknown);
                    Err(error)
                }
            }
        })?;
        let platform = self.platform(&path, &entry.type_name)?;
        let (type_name, settings_key) = (platform.type_name, platform.settings_key);
        for other in compiled.iter().map(|p| p.settings_key) {
            if other != settings_key && module.get(other).is_some() {
                let message = format!(
                    "not used by a module of type {type_name} (it reads `{settings_key}`); ignored"
                );
                self.doc.warn(&format!("{path}.{other}"), message);
            }
        }
        let block = module.get(settings_key);
        let config = self.platform_block(&path, &platform, block)?;
        let block_path = format!("{path}.{settings_key}");
        let registration = entry.registration;
        Some(ModuleSettings {
            id: id.to_owned(),
            platform,
            config,
            is_default_module: entry.is_default_module,
            ratelimit: entry.ratelimit,
            registration: registration.as_ref().map(|block| block.protocol),
            registration_provider: registration.and_then(|block| block.provider),
            position: self.doc.key_pos(block.map_or(&path, |_| &block_path)),
        })
    }

    /// The registry entry of a module's `type`, or an error naming the known types (or the cargo
    /// feature that would compile this one in).
    fn platform(&mut self, path: &str, type_name: &str) -> Option<Platform> {
        let Platforms {
            compiled,
            not_compiled,
        } = self.platforms;
        if let Some(platform) = compiled.iter().find(|p| p.type_name == type_name) {
            return Some(*platform);
        }
        let message = match not_compiled.iter().find(|(t, _)| *t == type_name) {
            Some((_, feature)) => format!(
                "module type `{type_name}` is not compiled into this fpush; build it with the cargo feature `{feature}`"
            ),
            None => {
                let known = compiled.iter().map(|p| p.type_name);
                let known: Vec<_> = known.chain(not_compiled.iter().map(|t| t.0)).collect();
                format!("unknown module type `{type_name}` (known: {})", known.join(", "))
            }
        };
        self.doc.value_error(&format!("{path}.type"), message);
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
                self.doc.value_error(&block_path, "must be an object");
                None
            }
            Some(block) => self.read(&block_path, block, &parse),
            None => {
                let (value, errors, _) = read_piece(&Value::Object(Map::new()), &parse);
                let (type_name, key) = (platform.type_name, platform.settings_key);
                for error in errors {
                    let message = error.message;
                    let message =
                        format!("a module of type {type_name} needs its `{key}` block ({message})");
                    self.doc.error(path, message);
                }
                value
            }
        };
        config.map(Arc::from)
    }

    /// Read the piece at `path`, recording its errors and its unread keys.
    fn read<T>(&mut self, path: &str, piece: &Value, parse: Parser<T>) -> Option<T> {
        let (value, errors, ignored) = read_piece(piece, parse);
        for error in errors {
            let path = join(path, &error.path);
            self.doc.value_error(&path, error.message);
        }
        for inner in ignored {
            let key = inner.rsplit(['.', '[']).next().unwrap_or_default();
            let message = if LEGACY_KEYS.contains(&key) {
                "not used by this version of fpush; ignored (safe to remove)"
            } else {
                "unknown key, ignored (check its spelling and place)"
            };
            self.doc.warn(&join(path, &inner), message);
        }
        value
    }
}

/// Read `piece` with `parse` (which reports one error, as [`parse_block`] does), taking out
/// each bad key and reading again. The unknown keys are those of every reading: an object
/// taken out may hold the misspelt key it lacks.
fn read_piece<T>(piece: &Value, parse: Parser<T>) -> Piece<T> {
    let mut scratch = piece.clone();
    let mut errors = Vec::new();
    let mut taken_out: Vec<(String, String)> = Vec::new();
    let mut unknown: Vec<String> = Vec::new();
    let mut note = |keys: Vec<String>| {
        let new: Vec<_> = keys
            .into_iter()
            .filter(|key| !unknown.contains(key))
            .collect();
        unknown.extend(new);
    };
    for _ in 0..MAX_ERRORS {
        let mut error = match parse(&scratch) {
            Ok((value, ignored)) => {
                note(ignored);
                return (Some(value), errors, unknown);
            }
            Err(error) => error,
        };
        note(std::mem::take(&mut error.ignored_keys));
        let consequence = taken_out.iter().any(|(parent, key)| {
            error.path == *parent && error.message == format!("missing field `{key}`")
        });
        let holder =
            holder(&error.path).filter(|(parent, key)| take_out(&mut scratch, parent, key));
        if !consequence {
            errors.push(error);
        }
        match holder {
            Some(holder) => taken_out.push(holder),
            None => break,
        }
    }
    (None, errors, unknown)
}

/// The key whose value holds the problem at `path`, split from its parent:
/// `ratelimit.rejectWith` → (`ratelimit`, `rejectWith`); an array element's problem is its
/// array's (taking out one element would renumber the rest); `None` for the piece itself.
fn holder(path: &str) -> Option<(String, String)> {
    let mut path = path;
    while let Some((array, _)) = path.strip_suffix(']').and_then(|p| p.rsplit_once('[')) {
        path = array;
    }
    let (parent, key) = path.rsplit_once('.').unwrap_or(("", path));
    (!key.is_empty()).then(|| (parent.to_owned(), key.to_owned()))
}

/// Remove `key` from the object at the key path `parent` (`a.list[1]`), by JSON pointer.
fn take_out(piece: &mut Value, parent: &str, key: &str) -> bool {
    let segments = parent.split(['.', '[', ']']).filter(|s| !s.is_empty());
    let escaped = segments.map(|segment| segment.replace('~', "~0").replace('/', "~1"));
    let pointer: String = escaped.map(|segment| format!("/{segment}")).collect();
    let parent = piece.pointer_mut(&pointer).and_then(Value::as_object_mut);
    parent.is_some_and(|map| map.remove(key).is_some())
}

/// `prefix` + a path relative to it (an index joins without a dot: `list[2]`).
fn join(prefix: &str, inner: &str) -> String {
    match (prefix, inner) {
        (_, "") => prefix.to_owned(),
        ("", _) => inner.to_owned(),
        _ if inner.starts_with('[') => format!("{prefix}{inner}"),
        _ => format!("{prefix}.{inner}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    struct Inner {
        a: u8,
        b: bool,
        list: Vec<u8>,
    }

    #[derive(Debug, Deserialize)]
    struct Outer {
        #[allow(dead_code)]
        required: String,
        #[serde(default)]
        inner: Inner,
        #[serde(default)]
        optional: Option<Required>,
    }

    #[derive(Debug, Deserialize)]
    struct Required {
        #[allow(dead_code)]
        x: u8,
    }

    fn outcome(json: Value) -> Piece<Outer> {
        read_piece(&json, &parse_block::<Outer>)
    }

    fn paths(errors: &[BlockError]) -> Vec<&str> {
        errors.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn every_bad_value_is_reported_and_defaults_stand_in() {
        let (value, errors, ignored) = outcome(serde_json::json!({
            "required": "x", "inner": {"a": "one", "b": "yes", "c": 1}
        }));
        assert_eq!(paths(&errors), ["inner.a", "inner.b"]);
        let value = value.unwrap();
        assert_eq!((value.inner.a, value.inner.b), (0, false));
        assert_eq!(ignored, ["inner.c"]);
    }

    #[test]
    fn a_bad_required_key_is_reported_once() {
        let (value, errors, _) = outcome(serde_json::json!({"required": 5, "inner": {"a": -1}}));
        let mut paths = paths(&errors);
        paths.sort_unstable();
        assert_eq!(paths, ["inner.a", "required"]);
        assert!(value.is_none());
    }

    #[test]
    fn a_missing_key_is_still_reported() {
        let (_, errors, _) = outcome(serde_json::json!({"inner": {"b": 1}}));
        assert_eq!(paths(&errors), ["inner.b", ""]);
        assert!(errors[1].message.contains("required"));
    }

    #[test]
    fn a_bad_required_key_of_an_optional_object_leaves_the_object_out_and_reading_on() {
        let (value, errors, _) = outcome(serde_json::json!({
            "required": "r", "optional": {"x": "ten"}, "inner": {"b": 2}
        }));
        assert_eq!(paths(&errors), ["inner.b", "optional.x"]);
        assert!(value.unwrap().optional.is_none());
    }

    #[test]
    fn a_bad_array_element_leaves_its_array_at_the_default_and_reading_on() {
        let (value, errors, _) = outcome(serde_json::json!({
            "required": "r", "inner": {"list": [1, "two"], "a": "one"}
        }));
        assert_eq!(paths(&errors), ["inner.a", "inner.list[1]"]);
        assert!(value.unwrap().inner.list.is_empty());
    }
}
