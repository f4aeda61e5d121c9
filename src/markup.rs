//! Byte-level facts of XML markup that the stream framer and the stanza lexers share: what
//! counts as whitespace, where a start tag ends, what an end tag names, how a name splits into
//! prefix and local part, how a plainly spelled attribute reads.
//!
//! Both scan the same stanza bytes for the same delimiters; one definition keeps them from
//! drifting apart on an edge (a quoted `>`, whitespace after an end tag's name).

use memchr::memchr;

/// XML's whitespace: space, tab, carriage return, line feed (and nothing else Unicode calls so).
pub fn is_xml_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// [`is_xml_space`] for `str::trim_matches`.
pub fn is_xml_space_char(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// The offset of the `>` that ends the start tag whose body (just after `<`) begins at `from`,
/// or `None` when the input ends first. Quoted attribute values may hold `>`.
pub fn start_tag_end(input: &[u8], from: usize) -> Option<usize> {
    let mut pos = from;
    loop {
        // Names and the gaps between attributes are short: a plain scan beats setting up a
        // vector search there. Values (a token) can be long.
        let at = pos
            + input
                .get(pos..)?
                .iter()
                .position(|&b| matches!(b, b'>' | b'\'' | b'"'))?;
        match input[at] {
            b'>' => return Some(at),
            quote => pos = at + 1 + memchr(quote, &input[at + 1..])? + 1,
        }
    }
}

/// The name in an end tag's body (between `</` and `>`): XML allows whitespace after it.
pub fn end_tag_name(body: &[u8]) -> &[u8] {
    let len = body
        .iter()
        .rposition(|&b| !is_xml_space(b))
        .map_or(0, |i| i + 1);
    &body[..len]
}

/// The end tag whose `</` is at `at`: the offset just past its `>`, and its name. End tags are
/// short: a plain scan beats setting up a vector search.
pub fn end_tag_at(data: &[u8], at: usize) -> Option<(usize, &[u8])> {
    let body = data.get(at + 2..)?;
    let close = body.iter().position(|&b| b == b'>')?;
    Some((at + 2 + close + 1, end_tag_name(&body[..close])))
}

/// The end (just past `>`) and the name's end of the plain start tag whose `<` is at `at`, as the
/// stream framer reads it; `None` for other markup or an implausible name.
pub fn plain_start_tag(data: &[u8], at: usize) -> Option<(usize, usize)> {
    if matches!(data.get(at + 1)?, b'/' | b'!' | b'?') {
        return None;
    }
    let end = start_tag_end(data, at + 1)? + 1;
    let name_len = tag_name_len(&data[at + 1..end]);
    let name = &data[at + 1..at + 1 + name_len];
    is_plausible_name(name).then_some((end, at + 1 + name_len))
}

/// The length of the element name at the start of a tag's body (after `<`, up to and with
/// `>`): it ends at whitespace, `/` or `>`.
pub fn tag_name_len(body: &[u8]) -> usize {
    body.iter()
        .position(|&b| is_xml_space(b) || b == b'/' || b == b'>')
        .unwrap_or(body.len())
}

/// A cheap check of an element name: it starts like an XML name and holds no markup characters.
/// Without it, `<<` would open an "element" that never closes and the stream would stall.
pub fn is_plausible_name(name: &[u8]) -> bool {
    let starts_well = name
        .first()
        .is_some_and(|b| b.is_ascii_alphabetic() || matches!(b, b'_' | b':') || *b >= 0x80);
    starts_well
        && !name
            .iter()
            .any(|b| matches!(b, b'<' | b'&' | b'\'' | b'"' | b'=' | b'!' | b'?'))
}

/// A qualified name's prefix (before its first `:`, if any) and local part, split as quick-xml
/// splits them. Names are a few bytes long: a plain scan beats setting up a vector search.
pub fn split_name(name: &[u8]) -> (Option<&[u8]>, &[u8]) {
    match name.iter().position(|&b| b == b':') {
        Some(colon) => (Some(&name[..colon]), &name[colon + 1..]),
        None => (None, name),
    }
}

/// What [`next_plain_attribute`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum PlainAttribute<'a> {
    /// `key='value'` or `key="value"`, the value raw (references unresolved), and where the
    /// next attribute may begin.
    Found {
        key: &'a [u8],
        value: &'a [u8],
        next: usize,
    },
    /// Only whitespace is left.
    End,
    /// Anything else: whitespace around `=`, an unquoted or missing value, a missing quote.
    Unusual,
}

/// The attribute at `from` in a start tag's attributes (the bytes after its name), read as
/// quick-xml's attribute iterator reads it, for the spelling servers write only. Reading the
/// common case here costs a fraction of the general iterator; on anything else it answers
/// [`PlainAttribute::Unusual`] and leaves the meaning to quick-xml.
pub fn next_plain_attribute(attributes: &[u8], from: usize) -> PlainAttribute<'_> {
    let rest = attributes.get(from..).unwrap_or_default();
    let Some(gap) = rest.iter().position(|&b| !is_xml_space(b)) else {
        return PlainAttribute::End;
    };
    let key_start = from + gap;
    // quick-xml reads a key's first byte as part of it, whatever it is: `=` included.
    let key_len = attributes[key_start + 1..]
        .iter()
        .position(|&b| b == b'=' || is_xml_space(b));
    let Some(eq) = key_len.map(|len| key_start + 1 + len) else {
        return PlainAttribute::Unusual;
    };
    let quote = match attributes.get(eq + 1) {
        Some(&quote @ (b'\'' | b'"')) if attributes[eq] == b'=' => quote,
        _ => return PlainAttribute::Unusual,
    };
    let value_start = eq + 2;
    let Some(value_len) = memchr(quote, &attributes[value_start..]) else {
        return PlainAttribute::Unusual;
    };
    let value_end = value_start + value_len;
    PlainAttribute::Found {
        key: &attributes[key_start..eq],
        value: &attributes[value_start..value_end],
        next: value_end + 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_angle_brackets_stay_inside_the_tag() {
        assert_eq!(start_tag_end(b"a b='>' c=\">\">", 0), Some(13));
        assert_eq!(start_tag_end(b"a b='>", 0), None);
        assert_eq!(start_tag_end(b"a", 5), None);
    }

    #[test]
    fn end_tag_names_lose_trailing_whitespace_only() {
        assert_eq!(end_tag_name(b"item \r\n\t"), b"item");
        assert_eq!(end_tag_name(b" item"), b" item");
        assert_eq!(end_tag_name(b""), b"");
    }

    #[test]
    fn end_tags_give_their_end_and_name() {
        assert_eq!(end_tag_at(b"x</item \n>y", 1), Some((10, &b"item"[..])));
        assert_eq!(end_tag_at(b"</item", 0), None);
    }

    #[test]
    fn names_split_at_their_first_colon() {
        assert_eq!(split_name(b"x"), (None, &b"x"[..]));
        assert_eq!(split_name(b"p:x:y"), (Some(&b"p"[..]), &b"x:y"[..]));
        assert_eq!(split_name(b":x"), (Some(&b""[..]), &b"x"[..]));
    }

    #[test]
    fn plain_attributes_read_as_quick_xml_reads_them() {
        type Read<'a> = (Vec<(&'a [u8], &'a [u8])>, PlainAttribute<'a>);
        fn read(raw: &[u8]) -> Read<'_> {
            let mut found = Vec::new();
            let mut at = 0;
            loop {
                match next_plain_attribute(raw, at) {
                    PlainAttribute::Found { key, value, next } => {
                        found.push((key, value));
                        at = next;
                    }
                    end => return (found, end),
                }
            }
        }
        let (found, end) = read(b" var='FORM_TYPE'\ttype=\"hidden\"\n");
        assert_eq!(
            found,
            [(&b"var"[..], &b"FORM_TYPE"[..]), (b"type", b"hidden")]
        );
        assert_eq!(end, PlainAttribute::End);
        assert_eq!(read(b" a='1'b='>'").0.len(), 2);
        assert_eq!(read(b" =='x'").0, [(&b"="[..], &b"x"[..])]);
        for unusual in [
            &b" a = 'x'"[..],
            b" ='x'",
            b" a=x",
            b" a='x",
            b" a",
            b" a=",
            b" a=''b",
        ] {
            assert_eq!(read(unusual).1, PlainAttribute::Unusual, "{unusual:?}");
        }
    }
}
