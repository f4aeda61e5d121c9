//! How a platform makes itself known to the core: one [`Platform`] entry (its settings names,
//! what it supports, and how to read its settings block), listed once in the core's registry.
//!
//! The core reads the settings file, hands each module's platform block to the entry's `parse`,
//! and later asks the parsed [`PlatformConfig`] to `build` the module. So the core never names a
//! platform, and a platform never sees more of the settings than its own block.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::PushTrait;

/// What a platform can do beyond delivering a plain push, so that a front door can refuse a
/// request cleanly instead of matching on platform names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// It can deliver [`crate::PushKind::Voip`] pushes to a second token.
    pub voip: bool,
    /// It passes [`crate::EncryptedPayload`]s through to the app.
    pub encrypted_payloads: bool,
    /// The service name registration protocols use for it (`fcm`, `apns`), if any.
    pub registration_service: Option<&'static str>,
}

/// One platform's entry in the core's registry.
#[derive(Clone, Copy)]
pub struct Platform {
    /// The value of `pushModules.<id>.type` (`apple`).
    pub type_name: &'static str,
    /// The key of the module's platform block (`apns`).
    pub settings_key: &'static str,
    /// The cargo feature of the `fpush` binary that compiles this platform in.
    pub cargo_feature: &'static str,
    pub capabilities: Capabilities,
    /// Whether a string can be one of this provider's device tokens: a registering front door
    /// refuses the others at once, so junk never reaches the store or the provider.
    pub plausible_token: fn(&str) -> bool,
    /// Reads the module's platform block (`{}` when the file has none).
    pub parse: fn(&serde_json::Value) -> Result<ParsedConfig, BlockError>,
}

impl fmt::Debug for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Platform")
            .field("type_name", &self.type_name)
            .field("settings_key", &self.settings_key)
            .finish_non_exhaustive()
    }
}

/// A platform block that was read: the platform's own settings, ready to build a module.
pub trait PlatformConfig: fmt::Debug + Send + Sync {
    /// Opens and checks the credential files and makes the module's client. Makes no network
    /// call, so `fpush --check` can run it before a reload.
    fn build(&self, module_id: &str) -> Result<Arc<dyn PushTrait>, BuildError>;

    /// The files that hold this module's secrets (keys, certificates, service accounts), so the
    /// core can warn when one is readable by everyone.
    fn credential_files(&self) -> Vec<PathBuf> {
        Vec::new()
    }

    /// What an operator should know about this module's settings that is not an error (e.g.
    /// a feature its credentials cannot serve), for `fpush --check` and the start-up log.
    fn notes(&self) -> Vec<&'static str> {
        Vec::new()
    }
}

/// Why a module could not be built (a credential file missing or unreadable, a bad key).
pub type BuildError = Box<dyn std::error::Error + Send + Sync>;

/// A parsed platform block and the keys in it that the platform does not read.
#[derive(Debug)]
pub struct ParsedConfig {
    pub config: Box<dyn PlatformConfig>,
    /// Paths of unknown keys, relative to the block (`alertTitel`, `additional.x`).
    pub ignored_keys: Vec<String>,
}

/// A platform block that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct BlockError {
    /// Where in the block, relative to it (`topic`, `additionalData.x`); empty for the block.
    pub path: String,
    pub message: String,
    /// Paths of the unknown keys met before the error: the block may lack a key because it was
    /// misspelt, and the misspelling is then what the operator needs to see.
    pub ignored_keys: Vec<String>,
}

/// Reads a platform block into the platform's settings type, keeping the path of the first
/// error and of every unknown key. The usual body of a [`Platform::parse`] function.
pub fn parse_block<T>(block: &serde_json::Value) -> Result<(T, Vec<String>), BlockError>
where
    T: DeserializeOwned,
{
    let mut ignored_keys = Vec::new();
    let mut note = |path: serde_ignored::Path<'_>| ignored_keys.push(key_path(&path));
    let deserializer = serde_ignored::Deserializer::new(block, &mut note);
    match serde_path_to_error::deserialize(deserializer) {
        Ok(value) => Ok((value, ignored_keys)),
        Err(error) => {
            let path = error.path().to_string();
            Err(BlockError {
                path: if path == "." { String::new() } else { path },
                message: error.into_inner().to_string(),
                ignored_keys,
            })
        }
    }
}

/// An unknown key's path as errors write it (`servers[1].x`). serde_ignored's own display
/// (`servers.1.x`) adds a `?` for every optional value on the way (`metrics.?.x`), a path no
/// file holds, so neither the key nor its line could be found from it.
fn key_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", key_path(parent)),
        Path::Map { parent, key } => match key_path(parent) {
            parent if parent.is_empty() => key.clone(),
            parent => format!("{parent}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => key_path(parent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Sample {
        #[allow(dead_code)]
        topic: String,
        #[serde(default)]
        #[allow(dead_code)]
        nested: Nested,
    }

    #[derive(Debug, Default, serde::Deserialize)]
    struct Nested {
        #[serde(default)]
        #[allow(dead_code)]
        port: u16,
    }

    #[test]
    fn unknown_keys_are_reported_with_their_paths() {
        let block = serde_json::json!({"topic": "t", "topik": 1, "nested": {"x": 1}});
        let (_, ignored) = parse_block::<Sample>(&block).unwrap();
        assert_eq!(ignored, vec!["nested.x".to_owned(), "topik".to_owned()]);
    }

    #[test]
    fn an_error_names_the_key_it_is_about() {
        let block = serde_json::json!({"topic": "t", "nested": {"port": "x"}});
        let error = parse_block::<Sample>(&block).unwrap_err();
        assert_eq!(error.path, "nested.port");
        assert!(error.message.contains("u16"), "{error}");
        let missing = parse_block::<Sample>(&serde_json::json!({})).unwrap_err();
        assert_eq!(missing.path, "");
        assert!(missing.message.contains("topic"), "{missing}");
    }
}
