//! The framer's fast path: one tight pass over a stanza that is already buffered whole.
//!
//! Almost every stanza arrives in one read. Lexing it token by token through the framer's state
//! machine costs a dispatch, limit checks and buffer bookkeeping per tag; this pass only walks
//! the bytes. It accepts a subset of what the state machine accepts (plain tags and text, within
//! the limits) and gives up on anything else — comments, CDATA, an incomplete stanza, any error —
//! so the state machine, which knows every rule and every error message, lexes it again from the
//! same `<`. The fuzz target `framer` checks that both ways cut the same frames.

use memchr::memchr;

use crate::markup::{end_tag_at, plain_start_tag};

/// Open elements one pass keeps track of; a deeper stanza takes the state machine's way.
const MAX_OPEN: usize = 32;

/// The length of the complete top-level element at the start of `data` (which starts with its
/// `<`), or `None` when the state machine should lex it instead. `data` must end where the size
/// limit does, so that an element found here is within it.
pub(super) fn whole_stanza_len(data: &[u8], max_depth: usize) -> Option<usize> {
    let mut names = [(0usize, 0usize); MAX_OPEN];
    let mut open = 0;
    let mut at = 0;
    loop {
        // `data[at]` is a `<`.
        if data.get(at + 1) == Some(&b'/') && open > 0 {
            let (end, name) = end_tag_at(data, at)?;
            open -= 1;
            let (from, to) = names[open];
            if name != &data[from..to] {
                return None;
            }
            at = end;
            if open == 0 {
                return Some(at);
            }
        } else {
            // Nesting is checked as the state machine does: depth counts the stream too.
            if open > 0 && 1 + open > max_depth {
                return None;
            }
            let (end, name_end) = plain_start_tag(data, at)?;
            let name = &data[at + 1..name_end];
            let self_closing = data[end - 2] == b'/';
            if open == 0 && (self_closing || name == b"stream:stream") {
                // A stream header mid-way is the state machine's to report.
                return (self_closing && name != b"stream:stream").then_some(end);
            }
            if !self_closing {
                *names.get_mut(open)? = (at + 1, name_end);
                open += 1;
            }
            at = end;
        }
        // Between tags there is usually nothing at all.
        if data.get(at) != Some(&b'<') {
            at += memchr(b'<', data.get(at..)?)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_stanza_is_measured_whole() {
        let stanza = b"<iq id='a>'><x xmlns=\"b'\"><y/>text</x ></iq>";
        let mut data = stanza.to_vec();
        data.extend_from_slice(b"<next/>");
        assert_eq!(whole_stanza_len(&data, 16), Some(stanza.len()));
        assert_eq!(whole_stanza_len(b"<presence/>  ", 16), Some(11));
    }

    #[test]
    fn anything_unusual_is_left_to_the_state_machine() {
        for data in [
            &b"<iq><x></iq>"[..],
            b"<iq><!-- c --></iq>",
            b"<iq><![CDATA[x]]></iq>",
            b"<iq><x/>",
            b"<iq",
            b"<stream:stream xmlns='a'>",
            b"</stream:stream>",
            b"<iq><<x/></iq>",
            b"<iq></ iq>",
            b"<>",
        ] {
            assert_eq!(whole_stanza_len(data, 16), None, "{data:?}");
        }
    }

    #[test]
    fn nesting_past_the_limit_is_left_to_the_state_machine() {
        assert_eq!(whole_stanza_len(b"<a><b><c/></b></a>", 3), Some(18));
        assert_eq!(whole_stanza_len(b"<a><b><c/></b></a>", 2), None);
        let deep = "<a>".repeat(MAX_OPEN + 1) + &"</a>".repeat(MAX_OPEN + 1);
        assert_eq!(whole_stanza_len(deep.as_bytes(), 1000), None);
    }
}
