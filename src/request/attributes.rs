//! A start tag's attributes, as quick-xml's iterator (without its duplicate check) yields them:
//! read by [`next_plain_attribute`] while they keep to the plain spelling servers write, and by
//! quick-xml from the first one that does not, so the general reader decides every unusual case.

use std::borrow::Cow;

use quick_xml::encoding::Decoder;
use quick_xml::events::attributes::{AttrError, Attribute, Attributes};
use quick_xml::events::BytesStart;
use quick_xml::name::QName;

use crate::markup::{next_plain_attribute, PlainAttribute};

/// The attributes of `start`, first occurrence first; duplicates are not checked (the server
/// validated its own output, and the check allocates).
pub(super) fn attributes<'a>(start: &'a BytesStart<'a>) -> TagAttributes<'a> {
    TagAttributes {
        start,
        next: 0,
        yielded: 0,
        general: None,
    }
}

/// See [`attributes`].
pub(super) struct TagAttributes<'a> {
    start: &'a BytesStart<'a>,
    /// Where the plain reading goes on, and how many attributes it yielded.
    next: usize,
    yielded: usize,
    /// quick-xml's iterator, once an attribute was not plain.
    general: Option<Attributes<'a>>,
}

impl<'a> Iterator for TagAttributes<'a> {
    type Item = Result<Attribute<'a>, AttrError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.general.is_none() {
            match next_plain_attribute(self.start.attributes_raw(), self.next) {
                PlainAttribute::Found { key, value, next } => {
                    self.next = next;
                    self.yielded += 1;
                    let value = Cow::Borrowed(value);
                    return Some(Ok(Attribute {
                        key: QName(key),
                        value,
                    }));
                }
                PlainAttribute::End => return None,
                PlainAttribute::Unusual => self.general = Some(self.general_reader()),
            }
        }
        self.general.as_mut()?.next()
    }
}

impl<'a> TagAttributes<'a> {
    /// quick-xml's iterator, past the attributes already yielded (it reads them the same way).
    fn general_reader(&self) -> Attributes<'a> {
        let mut general = self.start.attributes();
        general.with_checks(false);
        for _ in 0..self.yielded {
            general.next();
        }
        general
    }
}

/// An attribute's value as quick-xml's `decode_and_unescape_value` gives it; a value without
/// references (nearly every one) is only checked to be UTF-8, which is all that call does then.
pub(super) fn unescaped_value<'a>(
    attr: &Attribute<'a>,
    decoder: Decoder,
) -> quick_xml::Result<Cow<'a, str>> {
    if let Cow::Borrowed(raw) = attr.value {
        if let Some(text) = std::str::from_utf8(raw)
            .ok()
            .filter(|_| !raw.contains(&b'&'))
        {
            return Ok(Cow::Borrowed(text));
        }
    }
    attr.decode_and_unescape_value(decoder)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every string of up to five pieces from a set of awkward ones yields the same attributes
    /// and errors through both readers.
    #[test]
    fn both_readers_yield_the_same() {
        let pieces = [
            " ", "a", "=", "'", "\"", "\t", "&amp;", ">", "b='x'", "xmlns:p",
        ];
        for attrs in &crate::request::strings_of_pieces(&pieces, 5) {
            let start = BytesStart::from_content(format!("e{attrs}"), 1);
            let ours: Vec<_> = attributes(&start).collect();
            let mut general = start.attributes();
            let theirs: Vec<_> = general.with_checks(false).collect();
            assert_eq!(ours, theirs, "{attrs:?}");
            let decoder = quick_xml::Reader::from_str("").decoder();
            for attr in ours.iter().flatten() {
                let general = attr.decode_and_unescape_value(decoder);
                let ours = unescaped_value(attr, decoder);
                assert_eq!(ours.ok(), general.ok(), "{attrs:?}");
            }
        }
    }
}
