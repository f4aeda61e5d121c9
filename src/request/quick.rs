//! A lexer for the plain shape of a push payload, in front of quick-xml.
//!
//! Servers send `<pubsub>` payloads made of start tags, end tags, empty elements and text,
//! nothing else. For those this lexer cuts the events itself, at a fraction of a general
//! reader's cost per event, and hands them to the same [`PubsubWalk`] quick-xml's events go to.
//! Each start tag is read once, into a [`Tag`] that the scopes and the walk look at. It produces
//! exactly what quick-xml's events would (same name, same attributes, same text) and gives up
//! (`None`) on everything else: comments, processing instructions, CDATA, entity and character
//! references in text, a mismatched or missing end tag, unusual tag syntax (attributes not
//! plainly spelled, or more than [`super::tag::MAX_ATTRIBUTES`]), bytes that are not UTF-8, or
//! nesting deeper than it tracks. The caller then reads the payload again with quick-xml, which
//! decides what such input means.

use std::borrow::Cow;

use memchr::memchr2;
use quick_xml::encoding::Decoder;
use quick_xml::events::BytesText;

use super::scopes::Scopes;
use super::tag::Tag;
use super::{Payload, PubsubWalk};
use crate::markup::end_tag_at;

/// Open elements tracked below `<pubsub>`; real payloads nest five deep.
const MAX_DEPTH: usize = 16;

/// Reads from just after `<pubsub …>` up to its end tag, named `pubsub_name`, with at most
/// `max_open` elements open below `<pubsub>` at once. Returns the payload and the offset just
/// past the end tag; `None` when the payload is not of the plain shape (or would be an error):
/// nothing is decided then.
///
/// Every tag accepted here is also one the stream framer's one pass accepts (a plausible name,
/// read as it reads names), so a push read straight from the link's buffer is cut where the
/// framer would cut it (see [`super::frame_push`]).
pub(super) fn read_pubsub(
    input: &[u8],
    pubsub_name: &[u8],
    scopes: &mut Scopes,
    decoder: Decoder,
    max_open: usize,
) -> Option<(Payload, usize)> {
    // Validated once: every cut below falls next to an ASCII delimiter, so on a char boundary.
    let text = std::str::from_utf8(input).ok()?;
    let mut cursor = Cursor {
        input,
        text,
        open: [&[]; MAX_DEPTH],
        depth: 0,
        max_open: max_open.min(MAX_DEPTH),
        pos: 0,
        line_ends: None,
    };
    let mut walk = PubsubWalk::default();
    let mut tag = Tag::new(text);
    loop {
        let at = cursor.text_until_markup(&mut walk)?;
        match *input.get(at + 1)? {
            b'!' | b'?' => return None,
            b'/' => {
                if cursor.end_tag(at, pubsub_name, &mut walk, scopes)? {
                    return Some((walk.finish(), cursor.pos));
                }
            }
            _ => cursor.start_tag(at, &mut tag, &mut walk, scopes, decoder)?,
        }
    }
}

/// Where the lexer is in the payload, and the elements open below `<pubsub>`.
struct Cursor<'i> {
    input: &'i [u8],
    /// `input`, known to be UTF-8.
    text: &'i str,
    /// Names of the open elements, outermost first; `depth` of them are in use.
    open: [&'i [u8]; MAX_DEPTH],
    depth: usize,
    /// Elements that may be open at once.
    max_open: usize,
    /// Next byte to look at.
    pos: usize,
    /// Whether the input holds a byte that may start a line end quick-xml normalises (see
    /// [`may_hold_line_ends`]); found out at the first text, once for the whole input.
    line_ends: Option<bool>,
}

impl<'i> Cursor<'i> {
    /// Hands the text before the next `<` to the walk and returns that `<`'s offset. `None` at
    /// a reference (`&`) or when the input ends first.
    fn text_until_markup(&mut self, walk: &mut PubsubWalk<'i>) -> Option<usize> {
        let (input, pos) = (self.input, self.pos);
        // Between tags there is usually nothing at all.
        let at = match input.get(pos) {
            Some(b'<') => pos,
            _ => pos + memchr2(b'<', b'&', &input[pos..])?,
        };
        if input[at] == b'&' {
            return None;
        }
        if at > pos && walk.collecting() {
            let text = self.text.get(pos..at)?;
            // One vector search over the whole input beats a byte loop over every piece; only
            // an input that holds such a byte has its pieces looked at one by one.
            let line_ends = *self
                .line_ends
                .get_or_insert_with(|| may_hold_line_ends(input));
            let piece = if !line_ends || !may_hold_line_ends(text.as_bytes()) {
                Cow::Borrowed(text)
            } else {
                BytesText::from_escaped(text).xml10_content().ok()?
            };
            walk.text(piece);
        }
        Some(at)
    }

    /// The end tag whose `<` is at `at`. `Some(true)` when it closed `<pubsub>`; `None` when it
    /// does not match the open element. Moves past it either way.
    fn end_tag(
        &mut self,
        at: usize,
        pubsub_name: &[u8],
        walk: &mut PubsubWalk<'i>,
        scopes: &mut Scopes,
    ) -> Option<bool> {
        let expected = match self.depth {
            0 => pubsub_name,
            depth => self.open[depth - 1],
        };
        self.pos = closing_tag_end(self.input, at, expected)?;
        if walk.end() {
            return Some(true);
        }
        scopes.leave();
        self.depth -= 1;
        Some(false)
    }

    /// The start tag (or empty element) whose `<` is at `at`, read into `tag`. `None` when the
    /// one pass gives up on it (see [`Tag::read`]) or on nesting deeper than allowed.
    fn start_tag(
        &mut self,
        at: usize,
        tag: &mut Tag<'i>,
        walk: &mut PubsubWalk<'i>,
        scopes: &mut Scopes,
        decoder: Decoder,
    ) -> Option<()> {
        if self.depth >= self.max_open {
            return None;
        }
        let close = tag.read(at)?;
        let ns = scopes.enter_tag(tag).ok()?;
        if tag.is_empty() {
            scopes.leave();
            walk.empty(ns, tag, decoder).ok()?;
        } else {
            *self.open.get_mut(self.depth)? = tag.name();
            self.depth += 1;
            walk.start(ns, tag, decoder).ok()?;
        }
        self.pos = close + 1;
        Some(())
    }
}

/// The offset just past the end tag whose `<` is at `at`, when it closes `name`. Servers
/// write `</name>`: that is compared in place, and only other spellings are read by
/// [`end_tag_at`] (which allows whitespace before `>`).
fn closing_tag_end(input: &[u8], at: usize, name: &[u8]) -> Option<usize> {
    let after = at + 2 + name.len();
    if input.get(at + 2..after) == Some(name) && input.get(after) == Some(&b'>') {
        return Some(after + 1);
    }
    let (end, read) = end_tag_at(input, at)?;
    (read == name).then_some(end)
}

/// Whether `text` holds what XML 1.0 (the XMPP stream's version) changes in text: a `\r`,
/// alone or before `\n`, made `\n`. (U+0085 and U+2028 are line ends in XML 1.1 only.)
fn may_hold_line_ends(text: &[u8]) -> bool {
    memchr::memchr(b'\r', text).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads `payload` as the inside of `<pubsub xmlns='http://jabber.org/protocol/pubsub'>`.
    fn read(payload: &str) -> Option<Payload> {
        use quick_xml::events::BytesStart;
        let mut scopes = Scopes::default();
        let pubsub =
            BytesStart::from_content("pubsub xmlns='http://jabber.org/protocol/pubsub'", 6);
        scopes.enter(&pubsub).ok()?;
        read_pubsub(
            payload.as_bytes(),
            b"pubsub",
            &mut scopes,
            quick_xml::Reader::from_str("").decoder(),
            MAX_DEPTH,
        )
        .map(|(payload, _)| payload)
    }

    #[test]
    fn plain_payloads_are_read() {
        let payload = read(
            "<publish node='tok'><item><notification xmlns='urn:xmpp:push:0'>\
             <x xmlns='jabber:x:data'><field var='last-message-body'><value> hi </value>\
             </field></x></notification></item></publish></pubsub>",
        );
        let Some(Payload::Push(push)) = payload else {
            panic!("expected a push, got {:?}", payload.map(|_| ()));
        };
        assert_eq!(push.token, "tok");
        assert_eq!(push.summary.last_message_body.as_deref(), Some("hi"));
    }

    #[test]
    fn captured_payloads_take_the_quick_path() {
        for fixture in [
            &include_bytes!("../../tests/fixtures/prosody-0.12-push-iq.xml")[..],
            &include_bytes!("../../tests/fixtures/ejabberd-23.01-push-iq.xml")[..],
        ] {
            let open = b"<pubsub xmlns='http://jabber.org/protocol/pubsub'>";
            let at = memchr::memmem::find(fixture, open).unwrap() + open.len();
            let payload = std::str::from_utf8(&fixture[at..]).unwrap();
            assert!(matches!(read(payload), Some(Payload::Push(_))));
        }
    }

    #[test]
    fn anything_unusual_is_left_to_quick_xml() {
        for payload in [
            // Comments, processing instructions, CDATA, references.
            "<publish node='t'/><!-- x --></pubsub>",
            "<publish node='t'/><?pi?></pubsub>",
            "<publish node='t'><![CDATA[x]]></publish></pubsub>",
            "<publish node='t'>&amp;</publish></pubsub>",
            // Mismatched, missing or unnamed tags.
            "<publish node='t'><item></publish></item></pubsub>",
            "<publish node='t'/></pubsu>",
            "<publish node='t'/>",
            "< publish node='t'/></pubsub>",
        ] {
            assert!(read(payload).is_none(), "{payload}");
        }
    }

    #[test]
    fn whitespace_after_end_tag_names_is_allowed() {
        assert!(matches!(
            read("<publish node='t'></publish ></pubsub\n>"),
            Some(Payload::Push(_))
        ));
    }

    #[test]
    fn nesting_deeper_than_tracked_is_left_to_quick_xml() {
        let deep = format!(
            "<publish node='t'>{}{}</publish></pubsub>",
            "<a>".repeat(MAX_DEPTH),
            "</a>".repeat(MAX_DEPTH)
        );
        assert!(read(&deep).is_none());
    }

    /// XMPP streams are XML 1.0: only `\r` is a line end to fold, not U+0085 or U+2028.
    #[test]
    fn text_keeps_what_only_xml_1_1_takes_for_a_line_end() {
        use crate::request::{parse_with, Lexer, Request};
        let stanza = "<iq type='set' id='a' from='example.org' to='push.example.org'>\
            <pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='t'><item>\
            <notification xmlns='urn:xmpp:push:0'><x xmlns='jabber:x:data' type='form'>\
            <field var='last-message-body'><value>a\u{2028}b\r\nc\u{85}d\re</value></field>\
            </x></notification></item></publish></pubsub></iq>";
        for lexer in [Lexer::Quick, Lexer::General] {
            let Request::Push { push, .. } = parse_with(stanza.as_bytes(), lexer) else {
                panic!("not a push");
            };
            let body = push.summary.last_message_body.as_deref();
            assert_eq!(body, Some("a\u{2028}b\nc\u{85}d\ne"));
        }
    }

    /// Both lexers must agree on every stanza: the captured ones, and each of them broken or
    /// decorated in many ways (the quick lexer either reads exactly what quick-xml reads, or
    /// leaves the stanza to it).
    #[test]
    fn quick_and_general_parses_agree() {
        use crate::request::{parse_with, Lexer};
        use fpush_testkit::xmpp::{stanza_variants, tags_prefixed_in_turn};
        let fixtures: [&[u8]; 2] = [
            include_bytes!("../../tests/fixtures/prosody-0.12-push-iq.xml"),
            include_bytes!("../../tests/fixtures/ejabberd-23.01-push-iq.xml"),
        ];
        let insertions: [&[u8]; 14] = [
            "\u{2028}".as_bytes(),
            "\u{85}".as_bytes(),
            b"<!--c-->",
            b"&amp;",
            b"&#65;",
            b"<a>",
            b"</a>",
            b"<a/>",
            b" ",
            b"\r\n",
            b"'",
            b"<![CDATA[x]]>",
            b"\xff",
            b"xmlns:p='jabber:x:data'",
        ];
        let mut cases = 0;
        let mut check = |stanza: &[u8]| {
            let general = parse_with(stanza, Lexer::General);
            let quick = parse_with(stanza, Lexer::Quick);
            assert_eq!(quick, general, "{}", String::from_utf8_lossy(stanza));
            // As the dispatcher parses a stanza (a push read as if framed whole first).
            let parsed = crate::request::parse(stanza);
            assert_eq!(parsed, general, "{}", String::from_utf8_lossy(stanza));
            cases += 1;
        };
        for fixture in fixtures {
            check(fixture);
            // Every start or end tag prefixed in turn (an unbound prefix, a mismatched end tag).
            for prefixed in tags_prefixed_in_turn(fixture, b"p:") {
                check(&prefixed);
            }
            for variant in stanza_variants(fixture, &insertions, 9) {
                check(&variant);
            }
        }
        assert!(cases > 5_000, "{cases}");
    }
}
