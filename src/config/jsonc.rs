//! Comment-tolerant JSON: turns the settings text into plain JSON of the same shape.
//!
//! `//` and `/* */` comments and trailing commas are overwritten with spaces, byte for byte,
//! and newlines are kept, so every line and column serde_json reports still points into the
//! file the operator wrote. Text inside strings is never touched (`"https://…"` survives).
//!
//! A maintained crate (`json_comments`) blanks comments the same way but leaves trailing
//! commas in place and reports an unterminated comment without a position, so this small
//! pass is our own.

use super::{ConfigError, Pos};

/// Where the scanner is between two bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Code,
    InString,
    StringEscape,
    LineComment,
    BlockComment,
    BlockCommentStar,
}

/// Blank out comments, trailing commas and a leading byte-order mark.
///
/// The result has exactly the length of `text`, with the same line breaks. An unterminated
/// block comment is an error pointing at its start; everything else that is not JSON is left
/// for serde_json to report.
pub(crate) fn to_plain_json(text: &str) -> Result<String, ConfigError> {
    let mut out = text.as_bytes().to_vec();
    let mut state = State::Code;
    // The last comma in code, unless something other than blanks came after it.
    let mut pending_comma: Option<usize> = None;
    // The last significant byte in code, to tell `[1,]` (trailing) from `[,]` (broken).
    let mut last_significant: Option<u8> = None;
    let mut comment_start = 0;

    if out.starts_with("\u{feff}".as_bytes()) {
        out[..3].fill(b' ');
    }

    let mut i = 0;
    while i < out.len() {
        let byte = out[i];
        match state {
            State::Code => match byte {
                b'/' if matches!(out.get(i + 1), Some(b'/')) => {
                    comment_start = i;
                    out[i] = b' ';
                    out[i + 1] = b' ';
                    i += 1;
                    state = State::LineComment;
                }
                b'/' if matches!(out.get(i + 1), Some(b'*')) => {
                    comment_start = i;
                    out[i] = b' ';
                    out[i + 1] = b' ';
                    i += 1;
                    state = State::BlockComment;
                }
                b' ' | b'\t' | b'\r' | b'\n' => {}
                b'}' | b']' => {
                    if let Some(comma) = pending_comma.take() {
                        out[comma] = b' ';
                    }
                    last_significant = Some(byte);
                }
                b',' => {
                    let after_value = !matches!(last_significant, None | Some(b'{' | b'[' | b','));
                    pending_comma = after_value.then_some(i);
                    last_significant = Some(byte);
                }
                other => {
                    pending_comma = None;
                    last_significant = Some(other);
                    if other == b'"' {
                        state = State::InString;
                    }
                }
            },
            State::InString => match byte {
                b'"' => state = State::Code,
                b'\\' => state = State::StringEscape,
                _ => {}
            },
            State::StringEscape => state = State::InString,
            State::LineComment => {
                if byte == b'\n' {
                    state = State::Code;
                } else {
                    out[i] = b' ';
                }
            }
            State::BlockComment | State::BlockCommentStar => {
                if state == State::BlockCommentStar && byte == b'/' {
                    state = State::Code;
                } else if byte == b'*' {
                    state = State::BlockCommentStar;
                } else {
                    state = State::BlockComment;
                }
                if byte != b'\n' && byte != b'\r' {
                    out[i] = b' ';
                }
            }
        }
        i += 1;
    }

    if matches!(state, State::BlockComment | State::BlockCommentStar) {
        let pos = Pos::of_offset(text, comment_start);
        return Err(ConfigError::at("", pos, "unterminated `/*` comment"));
    }
    // Only whole comments (every byte of them, multi-byte characters included) and ASCII
    // commas were replaced by ASCII spaces, so the bytes are still UTF-8; stay panic-free anyway.
    String::from_utf8(out).map_err(|_| {
        ConfigError::new(
            "",
            "the settings file is not valid UTF-8 after removing comments",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(text: &str) -> String {
        to_plain_json(text).unwrap()
    }

    #[test]
    fn blanks_line_and_block_comments_keeping_length_and_lines() {
        let text = "{ // one\n\"a\": /* two\nthree */ 1 }";
        let out = plain(text);
        assert_eq!(out.len(), text.len());
        assert_eq!(out, "{       \n\"a\":       \n         1 }");
    }

    #[test]
    fn leaves_comment_markers_inside_strings_alone() {
        let text = r#"{"url": "https://example.org/*x*/", "q": "say \"//\" here"}"#;
        assert_eq!(plain(text), text);
    }

    #[test]
    fn removes_trailing_commas_before_closing_brackets() {
        assert_eq!(plain("{\"a\": [1, 2,],}"), "{\"a\": [1, 2 ] }");
        let with_comment = "[1, // last\n]";
        assert_eq!(plain(with_comment), "[1         \n]");
    }

    #[test]
    fn keeps_commas_that_are_not_trailing() {
        assert_eq!(plain("[,]"), "[,]");
        assert_eq!(plain("{\"a\":1,,}"), "{\"a\":1,,}");
    }

    #[test]
    fn blanks_multibyte_characters_in_comments() {
        let text = "{} // grüße";
        let out = plain(text);
        assert_eq!(out.len(), text.len());
        assert_eq!(out.trim_end(), "{}");
    }

    #[test]
    fn unterminated_block_comment_is_an_error_at_its_start() {
        let err = to_plain_json("{\n  /* open\n}").unwrap_err();
        assert_eq!((err.line, err.column), (Some(2), Some(3)));
        assert!(err.message.contains("unterminated"));
    }

    #[test]
    fn byte_order_mark_becomes_blanks() {
        assert_eq!(plain("\u{feff}{}"), "   {}");
    }
}
