//! A plain start tag read in one pass: its name and its attributes, each a (key, raw value) pair
//! kept in a small array, so that the namespace scopes and the walk look attributes up there
//! instead of each scanning the tag again.
//!
//! Only the spelling servers write is read (`key='value'` or `key="value"`, keys free of quotes,
//! `=`, `/`, `>` and whitespace, at most [`MAX_ATTRIBUTES`] of them); on anything else it gives
//! up (`None`) and the caller leaves the stanza to quick-xml, which decides what it means. What
//! it reads is what quick-xml's attribute iterator reads (without its duplicate check), and the
//! tag ends where [`crate::markup::start_tag_end`] says.

use std::borrow::Cow;

use memchr::memchr;
use quick_xml::escape::unescape;

use super::Malformed;
use crate::markup::is_xml_space;

/// Attributes a start tag may carry to be read here (a push's carry four at most); a tag with
/// more is left to quick-xml. Kept small: the array is set up for every stanza.
pub(super) const MAX_ATTRIBUTES: usize = 8;

/// What a byte may be in a start tag, for the name scan.
const ORDINARY: u8 = 0;
/// Ends a name: whitespace, `/`, `>`.
const NAME_END: u8 = 1;
/// Never in a plausible name (see [`crate::markup::is_plausible_name`]).
const NOT_IN_NAME: u8 = 2;
const COLON: u8 = 3;

/// [`ORDINARY`] and the rest, by byte.
static NAME_CLASS: [u8; 256] = {
    let mut class = [ORDINARY; 256];
    class[b' ' as usize] = NAME_END;
    class[b'\t' as usize] = NAME_END;
    class[b'\r' as usize] = NAME_END;
    class[b'\n' as usize] = NAME_END;
    class[b'/' as usize] = NAME_END;
    class[b'>' as usize] = NAME_END;
    let mut i = 0;
    let bad = b"<&'\"=!?";
    while i < bad.len() {
        class[bad[i] as usize] = NOT_IN_NAME;
        i += 1;
    }
    class[b':' as usize] = COLON;
    class
};

/// Whether a byte ends an attribute's key: `=` (the only one allowed there), whitespace, a
/// quote, `/` or `>`.
static KEY_END: [bool; 256] = {
    let mut end = [false; 256];
    let stops = b"= \t\r\n'\"/>";
    let mut i = 0;
    while i < stops.len() {
        end[stops[i] as usize] = true;
        i += 1;
    }
    end
};

/// One start tag of a text; [`Tag::read`] fills it again for every tag, so that its array is
/// set up once per stanza.
pub(super) struct Tag<'i> {
    text: &'i str,
    /// Whether the text holds `&` at all: only then may a value need unescaping (the quick
    /// lexer leaves text with references to quick-xml, so in a payload it reads only values
    /// may hold one, and nearly none does).
    references: bool,
    /// The qualified name, and its prefix (before the first `:`) when it has one.
    name: &'i [u8],
    prefix: Option<&'i [u8]>,
    local: &'i [u8],
    /// The attributes, first one first: key and raw value (references unresolved).
    attributes: [(&'i [u8], &'i str); MAX_ATTRIBUTES],
    count: usize,
    /// Whether a key starts with `xmlns`: only then are there declarations to read.
    declares: bool,
    /// `<name … />`.
    empty: bool,
}

impl<'i> Tag<'i> {
    /// A tag to read the start tags of `text` into.
    #[inline]
    pub(super) fn new(text: &'i str) -> Self {
        Tag {
            text,
            references: memchr(b'&', text.as_bytes()).is_some(),
            name: &[],
            prefix: None,
            local: &[],
            attributes: [(&[], ""); MAX_ATTRIBUTES],
            count: 0,
            declares: false,
            empty: false,
        }
    }

    /// Reads the start tag whose `<` is at `at`; returns the offset of its `>`. `None` for a
    /// name the framer or quick-xml would read otherwise (or an implausible one), an attribute
    /// not plainly spelled, more than [`MAX_ATTRIBUTES`], or a tag the text ends in.
    pub(super) fn read(&mut self, at: usize) -> Option<usize> {
        let input = self.text.as_bytes();
        let (name_end, colon) = name_at(input, at + 1)?;
        self.name = &input[at + 1..name_end];
        (self.prefix, self.local) = match colon {
            Some(colon) => (Some(&input[at + 1..colon]), &input[colon + 1..name_end]),
            None => (None, self.name),
        };
        self.count = 0;
        self.declares = false;
        let mut pos = name_end;
        loop {
            while input.get(pos).copied().is_some_and(is_xml_space) {
                pos += 1;
            }
            match *input.get(pos)? {
                b'>' => {
                    self.empty = false;
                    return Some(pos);
                }
                b'/' => {
                    self.empty = true;
                    return (input.get(pos + 1) == Some(&b'>')).then_some(pos + 1);
                }
                _ => pos = self.read_attribute(pos)?,
            }
        }
    }

    /// Reads the attribute whose key begins at `from`; returns where the next one may begin.
    fn read_attribute(&mut self, from: usize) -> Option<usize> {
        let text = self.text;
        let input = text.as_bytes();
        let eq = from
            + input[from..]
                .iter()
                .position(|&b| KEY_END[usize::from(b)])?;
        let quote = *input.get(eq + 1)?;
        if eq == from || input[eq] != b'=' || !matches!(quote, b'\'' | b'"') {
            return None;
        }
        let value_start = eq + 2;
        let value_end = value_start + memchr(quote, &input[value_start..])?;
        let key = &input[from..eq];
        *self.attributes.get_mut(self.count)? = (key, text.get(value_start..value_end)?);
        self.count += 1;
        self.declares |= key.starts_with(b"xmlns");
        Some(value_end + 1)
    }

    pub(super) fn name(&self) -> &'i [u8] {
        self.name
    }

    pub(super) fn prefix(&self) -> Option<&'i [u8]> {
        self.prefix
    }

    pub(super) fn local_name(&self) -> &'i [u8] {
        self.local
    }

    pub(super) fn is_empty(&self) -> bool {
        self.empty
    }

    /// Whether the tag may declare namespaces (a key starts with `xmlns`).
    pub(super) fn declares(&self) -> bool {
        self.declares
    }

    /// The attributes, first one first: key and raw value.
    pub(super) fn attributes(&self) -> &[(&'i [u8], &'i str)] {
        &self.attributes[..self.count]
    }

    /// The first attribute named `name`, unescaped as quick-xml unescapes it (borrowed unless
    /// a reference changed it). The value was checked as UTF-8 with the rest of the input.
    pub(super) fn attribute(&self, name: &[u8]) -> Result<Option<Cow<'i, str>>, Malformed> {
        match self.attributes().iter().find(|(key, _)| *key == name) {
            Some(&(_, value)) => Ok(Some(self.unescaped(value)?)),
            None => Ok(None),
        }
    }

    /// One of this tag's raw values, unescaped: only looked at when the text holds `&`.
    pub(super) fn unescaped(&self, value: &'i str) -> Result<Cow<'i, str>, Malformed> {
        if self.references {
            resolve_references(value)
        } else {
            Ok(Cow::Borrowed(value))
        }
    }
}

/// A raw value with its references resolved, as quick-xml resolves them.
fn resolve_references(value: &str) -> Result<Cow<'_, str>, Malformed> {
    unescape(value).map_err(|_| Malformed)
}

/// The end of the element name that begins at `from` (as the framer reads it: up to whitespace,
/// `/` or `>`) and its first `:`; `None` when it is not plausible or the input ends in it.
/// One pass does what [`crate::markup::tag_name_len`], [`crate::markup::is_plausible_name`]
/// and [`crate::markup::split_name`] do in three.
fn name_at(input: &[u8], from: usize) -> Option<(usize, Option<usize>)> {
    let first = *input.get(from)?;
    if !(first.is_ascii_alphabetic() || matches!(first, b'_' | b':') || first >= 0x80) {
        return None;
    }
    let mut colon = None;
    let mut pos = from;
    loop {
        pos += input
            .get(pos..)?
            .iter()
            .position(|&b| NAME_CLASS[usize::from(b)] != ORDINARY)?;
        match NAME_CLASS[usize::from(input[pos])] {
            NAME_END => return Some((pos, colon)),
            COLON => {
                colon.get_or_insert(pos);
                pos += 1;
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::markup::{is_plausible_name, split_name, start_tag_end, tag_name_len};
    use crate::request::attributes::{attributes, unescaped_value};
    use quick_xml::events::BytesStart;

    /// What the readers before this one make of the tag at the start of `text`: its end, name,
    /// prefix, emptiness and attributes; `None` where this reader must give up.
    type Reading<'a> = (
        usize,
        &'a [u8],
        Option<&'a [u8]>,
        bool,
        Vec<(Vec<u8>, String)>,
    );

    fn general(text: &str) -> Option<Reading<'_>> {
        let input = text.as_bytes();
        let close = start_tag_end(input, 1)?;
        let name_len = tag_name_len(&input[1..=close]);
        let name = &input[1..1 + name_len];
        let content = &text[1..close];
        let (content, empty) = match content.strip_suffix('/') {
            Some(content) => (content, true),
            None => (content, false),
        };
        let after_name = content.as_bytes().get(name_len);
        if !is_plausible_name(name) || after_name.is_some_and(|&b| !is_xml_space(b)) {
            return None;
        }
        let start = BytesStart::from_content(content, name_len);
        let decoder = quick_xml::Reader::from_str("").decoder();
        let mut read = Vec::new();
        for attr in attributes(&start) {
            let attr = attr.ok()?;
            let value = unescaped_value(&attr, decoder).ok()?;
            read.push((attr.key.as_ref().to_vec(), value.into_owned()));
        }
        Some((close, name, split_name(name).0, empty, read))
    }

    fn one_pass(text: &str) -> Option<Reading<'_>> {
        let mut tag = Tag::new(text);
        let close = tag.read(0)?;
        let mut read = Vec::new();
        for &(key, value) in tag.attributes() {
            read.push((key.to_vec(), tag.unescaped(value).ok()?.into_owned()));
        }
        assert_eq!(tag.local_name(), split_name(tag.name()).1);
        let (name, prefix, empty) = (tag.name(), tag.prefix(), tag.is_empty());
        Some((close, name, prefix, empty, read))
    }

    /// Every tag made of up to five awkward pieces reads the same through the one pass as
    /// through the readers before it, or is given up on.
    #[test]
    fn the_one_pass_reads_what_the_general_readers_read() {
        let pieces = [
            " ", "a", "=", "'", "\"", "/", ">", "p:", "&amp;", "&x;", "b='x'", "xmlns", "!",
        ];
        let mut read = 0;
        for tail in &crate::request::strings_of_pieces(&pieces, 5) {
            let text = format!("<e{tail}>");
            if let Some(ours) = one_pass(&text) {
                assert_eq!(Some(&ours), general(&text).as_ref(), "{text:?}");
                read += 1;
            }
        }
        assert!(read > 1_000, "{read}");
    }

    #[test]
    fn plain_tags_are_read_in_one_pass() {
        let text = "<p:field var='FORM_TYPE'\ttype=\"hidden\" xmlns:p='jabber:x:data'/>";
        let mut tag = Tag::new(text);
        assert_eq!(tag.read(0), Some(text.len() - 1));
        assert_eq!(tag.name(), b"p:field");
        assert_eq!(
            (tag.prefix(), tag.local_name()),
            (Some(&b"p"[..]), &b"field"[..])
        );
        assert!(tag.is_empty() && tag.declares());
        assert_eq!(tag.attribute(b"type").ok(), Some(Some(Cow::from("hidden"))));
        assert_eq!(tag.attribute(b"node").ok(), Some(None));
    }

    #[test]
    fn unusual_tags_are_given_up_on() {
        let many = format!("<a{}>", " b='x'".repeat(MAX_ATTRIBUTES + 1));
        for text in [
            "<a b = 'x'>",
            "<a b=x>",
            "<a b='x>",
            "<a b>",
            "<a/b>",
            "<a / >",
            "<a 'b'='x'>",
            "< a>",
            "<1a>",
            "<a",
            &many,
        ] {
            assert_eq!(Tag::new(text).read(0), None, "{text}");
        }
        let most = format!("<a{}>", " b='x'".repeat(MAX_ATTRIBUTES));
        assert!(Tag::new(&most).read(0).is_some());
    }
}
