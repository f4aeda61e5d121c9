//! The settings text read once: JSON with `//` and `/* */` comments and trailing commas (parsed by
//! `jsonc-parser`), turned into a `serde_json::Value` plus where every key and value sits, so
//! each later problem can name its line and column.
//!
//! Positions are looked up by key path as serde crates print it (`pushModules.monal.ratelimit`,
//! `additionalData[2]`); a path not in the file falls back to its nearest ancestor.

use std::collections::HashMap;

use jsonc_parser::common::Ranged;
use jsonc_parser::{ast, CollectOptions, ParseOptions};
use serde_json::{Map, Value};

use super::ConfigError;

/// A 1-based line and column (columns count bytes, as serde_json's did: constant time on a
/// file that is one long line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

/// Byte offset → line and column, in logarithmic time (a file with a hundred thousand unknown
/// keys must not make its warnings quadratic).
#[derive(Default)]
pub(crate) struct LineIndex {
    len: usize,
    starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(text: &str) -> Self {
        let starts = text.match_indices('\n').map(|(at, _)| at + 1);
        let (len, starts) = (text.len(), std::iter::once(0).chain(starts).collect());
        LineIndex { len, starts }
    }

    pub fn pos(&self, offset: usize) -> Pos {
        let offset = offset.min(self.len);
        let line = self.starts.partition_point(|&start| start <= offset).max(1);
        let column = offset - self.starts.get(line - 1).copied().unwrap_or(0) + 1;
        Pos { line, column }
    }
}

/// The parsed settings file: its value, for each key path where its key (an array element's
/// value start) and its value's last character are, and the problems found in it so far (by
/// the parse itself, the reader and the checks).
#[derive(Default)]
pub(crate) struct Document {
    pub root: Value,
    lines: LineIndex,
    spans: HashMap<String, (Pos, Pos)>,
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<ConfigError>,
}

/// Standard JSON plus comments and trailing commas; nothing looser (no single quotes, bare
/// words or hex numbers), so a file that loads here also reads as JSON anywhere else.
const OPTIONS: ParseOptions = ParseOptions {
    allow_comments: true,
    allow_trailing_commas: true,
    allow_loose_object_property_names: false,
    allow_missing_commas: false,
    allow_single_quoted_strings: false,
    allow_hexadecimal_numbers: false,
    allow_unary_plus_numbers: false,
    allow_bare_decimal_point_numbers: false,
    allow_non_finite_numbers: false,
    allow_extended_string_escapes: false,
};

/// Parse `text`. A syntax error is fatal; duplicate keys and unreadable numbers are the
/// document's first errors (the first occurrence of a key is kept).
pub(crate) fn parse(text: &str) -> Result<Document, ConfigError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines = LineIndex::new(text);
    let parsed = jsonc_parser::parse_to_ast(text, &CollectOptions::default(), &OPTIONS);
    let root = parsed.map_err(|err| {
        let mut message = err.kind().to_string();
        if let Some(first) = message.get_mut(..1) {
            first.make_ascii_lowercase();
        }
        ConfigError::new("", Some(lines.pos(err.range().start)), message)
    })?;
    let Some(root) = root.value else {
        let message = "the settings file is empty (or holds only comments)";
        return Err(ConfigError::new("", None, message));
    };
    let mut document = Document {
        lines,
        ..Document::default()
    };
    document.root = document.walk(root, String::new(), None);
    document.spans.remove("");
    Ok(document)
}

impl Document {
    /// Convert one AST value (the AST's depth is bounded by the parser) and note its span.
    fn walk(&mut self, value: ast::Value<'_>, path: String, key: Option<usize>) -> Value {
        let range = value.range();
        let json = match value {
            ast::Value::Object(object) => self.object(object.properties, &path),
            ast::Value::Array(array) => (array.elements.into_iter().enumerate())
                .map(|(i, element)| self.walk(element, format!("{path}[{i}]"), None))
                .collect(),
            ast::Value::StringLit(lit) => Value::String(lit.value.into_owned()),
            // Not echoed: the key may be a secret.
            ast::Value::NumberLit(number) => number.value.parse().map_or_else(
                |_| self.walk_error(&path, range.start, "a number too large to read".into()),
                Value::Number,
            ),
            ast::Value::BooleanLit(lit) => Value::Bool(lit.value),
            ast::Value::NullKeyword(_) => Value::Null,
        };
        let key = self.lines.pos(key.unwrap_or(range.start));
        let end = self.lines.pos(range.end.saturating_sub(1).max(range.start));
        self.spans.entry(path).or_insert((key, end));
        json
    }

    /// An object's members; a repeated key is an error at the repeat (JSON readers differ on
    /// which one wins, so the file must not depend on it).
    fn object(&mut self, properties: Vec<ast::ObjectProp<'_>>, path: &str) -> Value {
        let mut map = Map::new();
        for property in properties {
            let key_start = property.name.start();
            let name = property.name.into_string();
            let child = format!("{path}{}{name}", if path.is_empty() { "" } else { "." });
            if map.contains_key(&name) {
                let first = self.spans.get(&child).map_or(0, |span| span.0.line);
                let message = format!("duplicate key (first at line {first})");
                self.walk_error(&child, key_start, message);
                continue;
            }
            let value = self.walk(property.value, child, Some(key_start));
            map.insert(name, value);
        }
        Value::Object(map)
    }

    /// Note a problem met while walking; the value stands as `null`.
    fn walk_error(&mut self, path: &str, offset: usize, message: String) -> Value {
        let pos = Some(self.lines.pos(offset));
        self.errors.push(ConfigError::new(path, pos, message));
        Value::Null
    }

    /// The span at `path`, or at its nearest ancestor below the root.
    fn span(&self, path: &str) -> Option<(Pos, Pos)> {
        let mut path = path;
        loop {
            if let Some(span) = self.spans.get(path) {
                return Some(*span);
            }
            path = &path[..path.rfind(['.', '['])?];
        }
    }

    /// Where the key at `path` stands (or, for an array element, its value): what a warning or a
    /// check on the key points at.
    pub fn key_pos(&self, path: &str) -> Option<Pos> {
        self.span(path).map(|span| span.0)
    }

    /// A problem about the key at `path`, at [`Self::key_pos`].
    pub fn at_key(&self, path: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::new(path, self.key_pos(path), message)
    }

    /// A problem with the value at `path`, at its last character: where a reader notices that
    /// the value is wrong, or that a key is missing from an object.
    pub fn at_value(&self, path: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::new(path, self.span(path).map(|span| span.1), message)
    }

    /// An error about the key at `path` (for a key left at its default: its nearest ancestor).
    pub fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(self.at_key(path, message));
    }

    /// An error about the value at `path`, see [`Self::at_value`].
    pub fn value_error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(self.at_value(path, message));
    }

    /// Whether the value at `path` was refused: a check across keys that needs it would judge
    /// the default standing in for it, not what the file says.
    pub fn refused(&self, path: &str) -> bool {
        self.errors.iter().any(|error| error.path == path)
    }

    pub fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.warnings.push(self.at_key(path, message));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str =
        "{ // comment\n  \"a\": {\"b\": [1, {\"c\": true},]},\n  \"d\\u0041\": \"x\"\n}";

    #[test]
    fn keeps_values_and_the_positions_of_keys_and_value_ends() {
        let document = parse(TEXT).unwrap();
        let errors = &document.errors;
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(document.root["a"]["b"][1]["c"], Value::Bool(true));
        assert_eq!(document.root["dA"], "x", "escaped keys are decoded");
        assert_eq!(document.key_pos("a"), Some(Pos { line: 2, column: 3 }));
        assert_eq!(document.key_pos("a.b[1].c").map(|pos| pos.column), Some(19));
        assert_eq!(document.at_value("a.b[1].c", "").column, Some(27));
        assert_eq!(document.key_pos("a.b[1].nope"), document.key_pos("a.b[1]"));
        assert_eq!(document.key_pos("nope"), None, "the root has no position");
    }

    #[test]
    fn duplicate_keys_are_errors_at_the_second_keeping_the_first() {
        let document = parse("{\"a\": 1,\n \"a\": 2}").unwrap();
        let errors = &document.errors;
        assert_eq!(document.root["a"], 1);
        assert_eq!(errors.len(), 1);
        assert_eq!((errors[0].path.as_str(), errors[0].line), ("a", Some(2)));
        assert!(
            errors[0].message.contains("line 1"),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn syntax_errors_have_a_position_and_loose_json_is_refused() {
        let err = parse("{\n  /* open\n}").err().unwrap();
        assert_eq!((err.line, err.column), (Some(2), Some(3)));
        assert!(err.message.starts_with("unterminated comment"), "{err}");
        for text in [
            "{'a': 1}", "{a: 1}", "[0x1]", "[+1]", "[.5]", "[1 2]", "[NaN]",
        ] {
            assert!(parse(text).is_err(), "{text} parsed");
        }
        assert!(parse("\u{feff}{}").is_ok());
        assert!(parse(" // only a comment").is_err());
    }

    #[test]
    fn positions_of_offsets() {
        let lines = LineIndex::new("ab\n\"grüße\": 1");
        assert_eq!(lines.pos(0), Pos { line: 1, column: 1 });
        let quote = Pos { line: 2, column: 9 };
        assert_eq!(
            lines.pos(3 + 8),
            quote,
            "the closing quote, counted in bytes"
        );
        let end = Pos {
            line: 2,
            column: 13,
        };
        assert_eq!(lines.pos(999), end, "clamped to the end");
    }
}
