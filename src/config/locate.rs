//! Where each key of the settings file sits: key paths, line/column positions and byte spans.
//!
//! serde tells us *what* went wrong and along which key path, but once a value is deserialised
//! its position is gone. This index, built by one small scan over the (already comment-free)
//! text, answers "where is `pushModules.monal.ratelimit`?" for unknown-key warnings, for checks
//! made after deserialisation, and for cutting out a section or platform block so it can be
//! deserialised on its own (which is how one bad section does not hide the errors of the next).
//!
//! The scan is iterative and bounds-checked: on text that is not JSON it stops early and keeps
//! what it found; it never panics and never recurses.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;

/// A 1-based line and column (columns count bytes, as serde_json's do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    pub const START: Pos = Pos { line: 1, column: 1 };

    /// The position of byte `offset` in `text` (clamped to the end of the text).
    pub fn of_offset(text: &str, offset: usize) -> Pos {
        let before = &text.as_bytes()[..offset.min(text.len())];
        let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |newline| newline + 1);
        Pos {
            line,
            column: before.len() - line_start + 1,
        }
    }

    /// Translate a position *relative to a piece of text* that starts at `self` in the file.
    pub fn shift(self, line: usize, column: usize) -> Pos {
        if line <= 1 {
            Pos {
                line: self.line,
                column: self.column.saturating_sub(1) + column,
            }
        } else {
            Pos {
                line: self.line + line - 1,
                column,
            }
        }
    }
}

/// One step of a key path: an object key or an array index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Segment {
    Key(String),
    Index(usize),
}

/// A key path such as `pushModules.monal.ratelimit.ratelimitTime` or `additionalData[2]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct KeyPath(pub Vec<Segment>);

impl KeyPath {
    pub fn root() -> KeyPath {
        KeyPath(Vec::new())
    }

    pub fn key(&self, key: &str) -> KeyPath {
        let mut path = self.clone();
        path.0.push(Segment::Key(key.to_owned()));
        path
    }

    pub fn index(&self, index: usize) -> KeyPath {
        let mut path = self.clone();
        path.0.push(Segment::Index(index));
        path
    }

    pub fn join(&self, tail: &KeyPath) -> KeyPath {
        let mut path = self.clone();
        path.0.extend(tail.0.iter().cloned());
        path
    }

    /// The last object key on the path, if the path ends in one.
    pub fn last_key(&self) -> Option<&str> {
        match self.0.last() {
            Some(Segment::Key(key)) => Some(key),
            _ => None,
        }
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => f.write_str(key)?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// One located value: the root, an object member or an array element.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub path: KeyPath,
    /// Where the member's key starts (its opening quote); `None` for the root and array elements.
    pub key_pos: Option<Pos>,
    /// Where the value starts.
    pub value_pos: Pos,
    /// The value's bytes in the scanned text.
    pub span: Range<usize>,
    parent: Option<usize>,
}

impl Entry {
    /// The position to show for this entry: its key if it has one, else its value.
    pub fn pos(&self) -> Pos {
        self.key_pos.unwrap_or(self.value_pos)
    }

    /// The first byte of the value (`{`, `[`, `"`, a digit, …).
    pub fn first_byte(&self, text: &str) -> Option<u8> {
        text.as_bytes().get(self.span.start).copied()
    }
}

/// Every value of one JSON text, in document order, found by path in constant time (a
/// file with a hundred thousand keys must not make loading quadratic).
#[derive(Debug, Clone, Default)]
pub(crate) struct Index {
    entries: Vec<Entry>,
    /// Path → first entry with that path (a duplicated key keeps its first position).
    by_path: HashMap<KeyPath, usize>,
    /// Entry → its direct children, in document order.
    children: HashMap<usize, Vec<usize>>,
}

impl Index {
    /// Scan `text` (plain JSON) whose first byte sits at `origin` in the settings file; every
    /// path in the index starts with `prefix`.
    pub fn build(text: &str, origin: Pos, prefix: &KeyPath) -> Index {
        let mut scanner = Scanner {
            bytes: text.as_bytes(),
            text,
            at: 0,
            pos: origin,
            entries: Vec::new(),
        };
        scanner.run(prefix);
        let entries = scanner.entries;
        let mut by_path = HashMap::with_capacity(entries.len());
        let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
        for (i, entry) in entries.iter().enumerate() {
            by_path.entry(entry.path.clone()).or_insert(i);
            if let Some(parent) = entry.parent {
                children.entry(parent).or_default().push(i);
            }
        }
        Index {
            entries,
            by_path,
            children,
        }
    }

    pub fn get(&self, path: &KeyPath) -> Option<&Entry> {
        self.by_path.get(path).and_then(|&i| self.entries.get(i))
    }

    /// The members (or elements) directly under `path`, in document order.
    pub fn children<'a>(&'a self, path: &KeyPath) -> impl Iterator<Item = &'a Entry> + 'a {
        self.by_path
            .get(path)
            .and_then(|parent| self.children.get(parent))
            .into_iter()
            .flatten()
            .filter_map(|&i| self.entries.get(i))
    }
}

/// What the scanner expects next.
enum Expect {
    Value { path: KeyPath, key_pos: Option<Pos> },
    KeyOrClose,
    Key,
    ValueOrClose,
    AfterValue,
}

/// An open object or array: the entry it fills and how many elements it has seen.
struct Frame {
    entry: usize,
    is_object: bool,
    elements: usize,
}

struct Scanner<'a> {
    bytes: &'a [u8],
    text: &'a str,
    at: usize,
    pos: Pos,
    entries: Vec<Entry>,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn bump(&mut self) {
        if let Some(byte) = self.peek() {
            self.at += 1;
            if byte == b'\n' {
                self.pos.line += 1;
                self.pos.column = 1;
            } else {
                self.pos.column += 1;
            }
        }
    }

    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.bump();
        }
    }

    /// Step over a string starting at its opening quote; returns its raw contents' range.
    fn string(&mut self) -> Option<Range<usize>> {
        self.bump();
        let start = self.at;
        loop {
            match self.peek()? {
                b'"' => {
                    let end = self.at;
                    self.bump();
                    return Some(start..end);
                }
                b'\\' => {
                    self.bump();
                    self.bump();
                }
                _ => self.bump(),
            }
        }
    }

    fn scalar(&mut self) {
        while !matches!(
            self.peek(),
            None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n')
        ) {
            self.bump();
        }
    }

    fn key_text(&self, raw: Range<usize>) -> String {
        let Some(inner) = self.text.get(raw.clone()) else {
            return String::new();
        };
        if !inner.contains('\\') {
            return inner.to_owned();
        }
        self.text
            .get(raw.start.saturating_sub(1)..raw.end + 1)
            .and_then(|quoted| serde_json::from_str::<String>(quoted).ok())
            .unwrap_or_else(|| inner.to_owned())
    }

    /// Scan until the root value ends or the text stops being JSON.
    fn run(&mut self, prefix: &KeyPath) {
        let mut stack: Vec<Frame> = Vec::new();
        let mut expect = Expect::Value {
            path: prefix.clone(),
            key_pos: None,
        };
        loop {
            self.skip_blanks();
            expect = match expect {
                Expect::Value { path, key_pos } => {
                    let Some(byte) = self.peek() else { return };
                    let entry = self.entries.len();
                    self.entries.push(Entry {
                        path,
                        key_pos,
                        value_pos: self.pos,
                        span: self.at..self.at,
                        parent: stack.last().map(|frame| frame.entry),
                    });
                    match byte {
                        b'{' | b'[' => {
                            self.bump();
                            stack.push(Frame {
                                entry,
                                is_object: byte == b'{',
                                elements: 0,
                            });
                            if byte == b'{' {
                                Expect::KeyOrClose
                            } else {
                                Expect::ValueOrClose
                            }
                        }
                        b'"' => {
                            if self.string().is_none() {
                                return;
                            }
                            self.entries[entry].span.end = self.at;
                            Expect::AfterValue
                        }
                        _ => {
                            self.scalar();
                            self.entries[entry].span.end = self.at;
                            Expect::AfterValue
                        }
                    }
                }
                Expect::KeyOrClose | Expect::ValueOrClose
                    if matches!(self.peek(), Some(b'}' | b']')) =>
                {
                    self.close(&mut stack);
                    Expect::AfterValue
                }
                Expect::KeyOrClose | Expect::Key => {
                    if self.peek() != Some(b'"') {
                        return;
                    }
                    let key_pos = self.pos;
                    let Some(raw) = self.string() else { return };
                    let key = self.key_text(raw);
                    self.skip_blanks();
                    if self.peek() != Some(b':') {
                        return;
                    }
                    self.bump();
                    let Some(frame) = stack.last_mut() else {
                        return;
                    };
                    frame.elements += 1;
                    let path = self.entries[frame.entry].path.key(&key);
                    Expect::Value {
                        path,
                        key_pos: Some(key_pos),
                    }
                }
                Expect::ValueOrClose => self.next_element(&mut stack),
                Expect::AfterValue => match (self.peek(), stack.last()) {
                    (_, None) => return,
                    (Some(b','), Some(frame)) => {
                        let is_object = frame.is_object;
                        self.bump();
                        if is_object {
                            Expect::Key
                        } else {
                            self.skip_blanks();
                            self.next_element(&mut stack)
                        }
                    }
                    (Some(b'}' | b']'), Some(_)) => {
                        self.close(&mut stack);
                        Expect::AfterValue
                    }
                    _ => return,
                },
            };
        }
    }

    fn next_element(&mut self, stack: &mut [Frame]) -> Expect {
        match stack.last_mut() {
            Some(frame) => {
                let path = self.entries[frame.entry].path.index(frame.elements);
                frame.elements += 1;
                Expect::Value {
                    path,
                    key_pos: None,
                }
            }
            None => Expect::AfterValue,
        }
    }

    fn close(&mut self, stack: &mut Vec<Frame>) {
        self.bump();
        if let Some(frame) = stack.pop() {
            self.entries[frame.entry].span.end = self.at;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(keys: &[&str]) -> KeyPath {
        KeyPath(keys.iter().map(|k| Segment::Key((*k).to_owned())).collect())
    }

    const TEXT: &str = "{\n  \"a\": {\"b\": [1, {\"c\": true}]},\n  \"d\\u0041\": \"x\"\n}";

    #[test]
    fn finds_keys_with_their_positions_and_spans() {
        let index = Index::build(TEXT, Pos::START, &KeyPath::root());
        let a = index.get(&path(&["a"])).unwrap();
        assert_eq!(a.key_pos, Some(Pos { line: 2, column: 3 }));
        assert_eq!(&TEXT[a.span.clone()], "{\"b\": [1, {\"c\": true}]}");
        let c = index.get(&path(&["a", "b"]).index(1).key("c")).unwrap();
        assert_eq!(&TEXT[c.span.clone()], "true");
        assert_eq!(
            c.value_pos,
            Pos {
                line: 2,
                column: 24
            }
        );
        assert!(
            index.get(&path(&["dA"])).is_some(),
            "escaped keys are decoded"
        );
    }

    #[test]
    fn children_come_in_document_order() {
        let index = Index::build(TEXT, Pos::START, &KeyPath::root());
        let keys: Vec<String> = index
            .children(&KeyPath::root())
            .map(|e| e.path.to_string())
            .collect();
        assert_eq!(keys, ["a", "dA"]);
    }

    #[test]
    fn origin_and_prefix_apply_to_every_entry() {
        let index = Index::build(
            "{\"x\": 1}",
            Pos {
                line: 7,
                column: 10,
            },
            &path(&["p"]),
        );
        let x = index.get(&path(&["p", "x"])).unwrap();
        assert_eq!(
            x.key_pos,
            Some(Pos {
                line: 7,
                column: 11
            })
        );
    }

    #[test]
    fn paths_display_with_dots_and_brackets() {
        assert_eq!(path(&["a", "b"]).index(2).key("c").to_string(), "a.b[2].c");
    }

    #[test]
    fn broken_text_stops_the_scan_without_panicking() {
        for text in [
            "{\"a\": ",
            "{\"a\" 1}",
            "[1, 2",
            "\"open",
            "{\"a\":1,}",
            "}}}",
            "",
        ] {
            let _ = Index::build(text, Pos::START, &KeyPath::root());
        }
    }

    #[test]
    fn shifting_a_relative_position() {
        let origin = Pos { line: 5, column: 9 };
        assert_eq!(origin.shift(1, 1), origin);
        assert_eq!(
            origin.shift(1, 4),
            Pos {
                line: 5,
                column: 12
            }
        );
        assert_eq!(origin.shift(3, 4), Pos { line: 7, column: 4 });
    }

    #[test]
    fn position_of_an_offset() {
        assert_eq!(Pos::of_offset("ab\ncd", 4), Pos { line: 2, column: 2 });
    }
}
