//! Reading one piece of the settings (the top level, a module, a platform block) into its type,
//! going on past a bad value so that every bad value of the piece is reported, not only the
//! first one serde stops at.
//!
//! After an error at a key, the key is taken out of a scratch copy and the piece is read again,
//! so the type's default stands in for it. A "missing field" for a key taken out that way is the
//! consequence of the first error, not a new one, and ends the piece.

use std::borrow::Cow;

use fpush_traits::BlockError;
use serde_json::Value;

use super::document::segments;

/// At most this many errors per piece (each one costs a re-read of the piece).
const MAX_ERRORS: usize = 50;

/// What reading a piece gave.
pub(crate) struct Outcome<T> {
    /// The value, with bad keys at their defaults; `None` when it could not be read at all.
    pub value: Option<T>,
    /// Paths relative to the piece.
    pub errors: Vec<BlockError>,
    /// Keys nobody read, relative to the piece.
    pub ignored: Vec<String>,
}

/// Read `piece` with `parse` (which reports one error, as [`fpush_traits::parse_block`] does).
pub(crate) fn read<T>(
    piece: &Value,
    parse: impl Fn(&Value) -> Result<(T, Vec<String>), BlockError>,
) -> Outcome<T> {
    let mut scratch = Cow::Borrowed(piece);
    let mut errors = Vec::new();
    let mut taken_out: Vec<(String, String)> = Vec::new();
    loop {
        let error = match parse(&scratch) {
            Ok((value, ignored)) => {
                return Outcome {
                    value: Some(value),
                    errors,
                    ignored,
                }
            }
            Err(error) => error,
        };
        let consequence = taken_out.iter().any(|(parent, key)| {
            error.path == *parent && error.message == format!("missing field `{key}`")
        });
        if consequence {
            break;
        }
        let target = split_last(&error.path);
        errors.push(error);
        match target {
            Some((parent, key))
                if errors.len() < MAX_ERRORS && take_out(scratch.to_mut(), &parent, &key) =>
            {
                taken_out.push((parent, key));
            }
            _ => break,
        }
    }
    Outcome {
        value: None,
        errors,
        ignored: Vec::new(),
    }
}

/// `ratelimit.rejectWith` → (`ratelimit`, `rejectWith`); `None` for the piece itself and for
/// array elements (taking one out would renumber the rest).
fn split_last(path: &str) -> Option<(String, String)> {
    if path.is_empty() || path.ends_with(']') {
        return None;
    }
    let (parent, key) = path.rsplit_once('.').unwrap_or(("", path));
    Some((parent.to_owned(), key.to_owned()))
}

fn take_out(piece: &mut Value, parent: &str, key: &str) -> bool {
    let mut at = Some(piece);
    for segment in segments(parent) {
        at = match at {
            Some(Value::Object(map)) => map.get_mut(segment),
            Some(Value::Array(items)) => segment.parse().ok().and_then(|i: usize| items.get_mut(i)),
            _ => None,
        };
    }
    match at {
        Some(Value::Object(map)) => map.remove(key).is_some(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize)]
    #[serde(default)]
    struct Inner {
        a: u8,
        b: bool,
    }

    #[derive(Debug, Deserialize)]
    struct Outer {
        #[allow(dead_code)]
        required: String,
        #[serde(default)]
        inner: Inner,
    }

    fn outcome(json: Value) -> Outcome<Outer> {
        read(&json, fpush_traits::parse_block::<Outer>)
    }

    #[test]
    fn every_bad_value_is_reported_and_defaults_stand_in() {
        let result = outcome(serde_json::json!({
            "required": "x", "inner": {"a": "one", "b": "yes", "c": 1}
        }));
        let paths: Vec<&str> = result.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["inner.a", "inner.b"]);
        let value = result.value.unwrap();
        assert_eq!((value.inner.a, value.inner.b), (0, false));
        assert_eq!(result.ignored, ["inner.c"]);
    }

    #[test]
    fn a_bad_required_key_is_reported_once() {
        let result = outcome(serde_json::json!({"required": 5, "inner": {"a": -1}}));
        let mut paths: Vec<&str> = result.errors.iter().map(|e| e.path.as_str()).collect();
        paths.sort_unstable();
        assert_eq!(paths, ["inner.a", "required"]);
        assert!(result.value.is_none());
    }

    #[test]
    fn a_missing_key_is_still_reported() {
        let result = outcome(serde_json::json!({"inner": {"b": 1}}));
        let paths: Vec<&str> = result.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["inner.b", ""]);
        assert!(result.errors[1].message.contains("required"));
    }
}
