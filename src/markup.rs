//! Byte-level facts of XML markup that the stream framer and the stanza lexers share: what
//! counts as whitespace, where a start tag ends, what an end tag names.
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
}
