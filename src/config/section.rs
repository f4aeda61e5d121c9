//! Deserialising one piece of the settings file — a section such as `limits`, one push module,
//! or a module's platform block — into its type, keeping the full key path and the file's line
//! and column on every error and on every unknown-key warning.
//!
//! Each piece is a slice of the comment-free text plus where that slice starts in the file, so
//! errors inside a piece are shifted back to file positions, and pieces can be deserialised
//! independently: a typo in one module does not hide a typo in the next.

use serde::de::DeserializeOwned;

use super::locate::{Index, KeyPath, Pos, Segment};
use super::{ConfigError, ConfigWarning};

/// Keys that older fpush configs carry and this version has no use for. They are accepted
/// wherever they appear, with a warning, so an existing deployment's file keeps loading.
pub(crate) const LEGACY_KEYS: &[&str] = &["hardRatelimitTime", "blacklist", "poolIdleTimeout"];

/// One piece of the settings file to deserialise on its own.
pub(crate) struct Piece<'a> {
    /// Plain JSON (comments already blanked).
    pub text: &'a str,
    /// Where `text` starts in the settings file.
    pub origin: Pos,
    /// The key path of the piece itself, e.g. `pushModules.monal.apns`.
    pub path: &'a KeyPath,
    /// Positions of the keys inside the piece, by full key path.
    pub index: &'a Index,
}

/// Deserialise `piece` into `T`, collecting ignored keys as warnings.
pub(crate) fn deserialize<T: DeserializeOwned>(
    piece: &Piece<'_>,
) -> Result<(T, Vec<ConfigWarning>), ConfigError> {
    let mut ignored: Vec<KeyPath> = Vec::new();
    let mut json = serde_json::Deserializer::from_str(piece.text);
    let result: Result<T, _> = {
        let mut record = |path: serde_ignored::Path| ignored.push(ignored_key_path(&path));
        let tracked = serde_ignored::Deserializer::new(&mut json, &mut record);
        serde_path_to_error::deserialize(tracked)
    };
    let value = match result {
        Ok(value) => value,
        Err(err) => {
            let inner_path = tracked_key_path(err.path());
            return Err(json_error(
                piece.path.join(&inner_path),
                piece.origin,
                err.inner(),
            ));
        }
    };
    json.end()
        .map_err(|err| json_error(piece.path.clone(), piece.origin, &err))?;

    let warnings = ignored
        .into_iter()
        .map(|inner| {
            let path = piece.path.join(&inner);
            let pos = piece.index.get(&path).map(|entry| entry.pos());
            ConfigWarning::located(&path, pos, ignored_key_message(inner.last_key()))
        })
        .collect();
    Ok((value, warnings))
}

/// The warning text for a key nobody read.
pub(crate) fn ignored_key_message(key: Option<&str>) -> String {
    match key {
        Some(key) if LEGACY_KEYS.contains(&key) => {
            "not used by this version of fpush; ignored (safe to remove)".to_owned()
        }
        _ => "unknown key, ignored (check its spelling and place)".to_owned(),
    }
}

/// A serde_json error as a `ConfigError` at file position.
pub(crate) fn json_error(path: KeyPath, origin: Pos, err: &serde_json::Error) -> ConfigError {
    let (line, column) = (err.line(), err.column());
    let full = err.to_string();
    // serde_json appends " at line L column C" to its message; we report the position ourselves.
    let suffix = format!(" at line {line} column {column}");
    let message = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
    // serde_json says column 0 for "before the first byte of the line"; people count from 1.
    let pos = (line > 0).then(|| origin.shift(line, column.max(1)));
    ConfigError::located(&path, pos, message)
}

fn tracked_key_path(path: &serde_path_to_error::Path) -> KeyPath {
    KeyPath(
        path.iter()
            .filter_map(|segment| match segment {
                serde_path_to_error::Segment::Seq { index } => Some(Segment::Index(*index)),
                serde_path_to_error::Segment::Map { key }
                | serde_path_to_error::Segment::Enum { variant: key } => {
                    Some(Segment::Key(key.clone()))
                }
                serde_path_to_error::Segment::Unknown => None,
            })
            .collect(),
    )
}

fn ignored_key_path(path: &serde_ignored::Path<'_>) -> KeyPath {
    let mut segments = Vec::new();
    let mut at = path;
    loop {
        at = match at {
            serde_ignored::Path::Root => break,
            serde_ignored::Path::Seq { parent, index } => {
                segments.push(Segment::Index(*index));
                parent
            }
            serde_ignored::Path::Map { parent, key } => {
                segments.push(Segment::Key(key.clone()));
                parent
            }
            serde_ignored::Path::Some { parent }
            | serde_ignored::Path::NewtypeStruct { parent }
            | serde_ignored::Path::NewtypeVariant { parent } => parent,
        };
    }
    segments.reverse();
    KeyPath(segments)
}
