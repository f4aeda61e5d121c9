//! A push IQ read straight from the link's buffer, in the pass that finds where it ends.
//!
//! Parsing a push is most of fpush's work per push, and the framer would walk every tag of it
//! once more just to find its end. For the plain shape servers send (`<iq><pubsub>` with a
//! payload the quick lexer takes, then `</iq>`), reading it here finds the end too, by the
//! framer's rules; anything else is left to the framer and to [`super::parse`].

use std::sync::LazyLock;

use memchr::memmem::Finder;
use quick_xml::Reader;

use super::scopes::{Ns, Scopes};
use super::tag::Tag;
use super::{iq_start_of_tag, quick, request_of, IqStart, IqType, Request};
use crate::markup::end_tag_at;

/// The searcher for `</pubsub`, built once: building one costs about as much as a search.
static PUBSUB_END: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"</pubsub"));

/// A push IQ at the start of `data` (the link's buffer from a `<` between stanzas, cut where
/// the size limit ends), read in the same pass that finds where it ends: its length and its
/// request, exactly what the framer would cut and [`super::parse`] would make of it. `None` for any
/// other stanza or any that is not of the plain shape; the framer then cuts it as usual.
///
/// Parsing a push is most of fpush's work per push; this saves the framer's own pass over it.
/// The framer's rules (names, nesting up to `max_depth` with the stream counted, an end tag for
/// every start tag) are checked on every tag read here.
pub fn frame_push(data: &[u8], max_depth: usize) -> Option<(usize, Request)> {
    // Both start tags read in one pass each (by the framer's rules, see [`Tag::read`]), from
    // text checked as UTF-8 once: up to the second `>`, where they end unless a value holds a
    // `>` (then a tag runs past the text and the stanza is left to the framer).
    let first_gt = memchr::memchr(b'>', data)?;
    let second_gt = first_gt + 1 + memchr::memchr(b'>', &data[first_gt + 1..])?;
    let head = std::str::from_utf8(&data[..=second_gt]).ok()?;
    let mut iq = Tag::new(head);
    let mut pubsub = Tag::new(head);
    let iq_end = iq.read(0)? + 1;
    if iq.local_name() != b"iq" || head.as_bytes().get(iq_end) != Some(&b'<') {
        return None;
    }
    let pubsub_end = pubsub.read(iq_end)? + 1;
    if iq.is_empty() || pubsub.is_empty() {
        return None;
    }
    let mut scopes = Scopes::default();
    let Some(IqStart::Request {
        kind: IqType::Set,
        header,
        empty: false,
    }) = iq_start_of_tag(&iq, &mut scopes)
    else {
        return None;
    };
    let ns = scopes.enter_tag(&pubsub).ok()?;
    // A prefixed `<ps:pubsub>` ends in `</ps:pubsub>`: the search for `</pubsub` below would
    // run through the whole window for each such stanza. Left to the framer.
    if ns != Ns::Pubsub || pubsub.name() != b"pubsub" {
        return None;
    }
    // The stream, the IQ and <pubsub> count towards the framer's depth.
    let max_open = max_depth.checked_sub(2)?;
    // The lexer reads (and checks as UTF-8) up to the first `</pubsub`, not the whole buffer
    // behind this stanza; a nested one would end its input early and make it give up.
    let rest = &data[pubsub_end..];
    let close = PUBSUB_END.find(rest)?;
    let gt = close + memchr::memchr(b'>', &rest[close..])?;
    let decoder = Reader::from_reader(data).decoder();
    let name = pubsub.name();
    let (payload, end) = quick::read_pubsub(&rest[..=gt], name, &mut scopes, decoder, max_open)?;
    let len = pubsub_end + end + iq_end_tag(&rest[end..], iq.name())?;
    Some((len, request_of(header, Ok(payload))))
}

/// The length of the text and the IQ's end tag that must follow `</pubsub>` for
/// [`frame_push`]: the framer closes an element only by its own name (prefix and all).
fn iq_end_tag(data: &[u8], iq_name: &[u8]) -> Option<usize> {
    let at = memchr::memchr(b'<', data)?;
    let (end, name) = (data.get(at + 1) == Some(&b'/')).then(|| end_tag_at(data, at))??;
    (name == iq_name).then_some(end)
}
