//! Cutting the server's byte stream into top-level elements, within the size and depth limits.
//!
//! This is a lexer, not a parser: it finds where markup starts and ends (tags, comments, CDATA,
//! processing instructions), keeps the depth, checks that end tags match, and hands out each
//! complete top-level element as one [`Bytes`] without copying it. What is *inside* a stanza is
//! `request.rs`'s business: between stanzas, a push that is buffered whole is offered to
//! [`request::frame_push`] first, which reads it in the pass that finds its end (by the rules
//! this lexer keeps, shared through `markup.rs`), so it is not walked twice.
//!
//! Memory stays bounded, and no stanza an outsider can have the server forward ends the stream:
//! - A stanza that grows past the size limit, or nests deeper than the depth limit, is no longer
//!   buffered. Its start tag is handed out as [`StreamFrame::Oversized`] (so an IQ can still be
//!   answered) and the rest is lexed and dropped as it arrives.
//! - While a stanza is dropped, only the lexer's state is kept: the open quote, the depth as a
//!   count, and the last two bytes of the current token (a terminator may straddle reads). So a
//!   single tag, comment or CDATA section of any size passes through in bounded memory.
//! - A stanza whose own start tag is over the limit cannot be answered (its `id` is not kept): it
//!   is dropped whole, without a frame.
//!
//! At most one read is held beyond the limit. Only what breaks the stream is fatal: XML that is
//! not well-formed, and a tag over the limit before the stream header. Names are checked in every
//! tag that ends within its stanza's limit, not in a stanza being dropped: the beginning of such a
//! tag may be gone when it arrives in pieces, and every chunking must give the same outcome.

use bytes::{Buf, Bytes, BytesMut};

use super::whole_stanza::whole_stanza_len;
use crate::markup::{end_tag_name, is_plausible_name, is_xml_space, tag_name_len};
use crate::request::{self, Request};

/// One thing the stream produced.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamFrame {
    /// The server's `<stream:stream ...>` start tag.
    StreamHeader(Bytes),
    /// One complete top-level element: a stanza, `<handshake/>`, `<stream:error>`.
    Element(Bytes),
    /// A push IQ, read in the pass that found its end ([`request::frame_push`]): its bytes
    /// and what [`request::parse`] makes of them.
    Push {
        stanza: Bytes,
        request: Box<Request>,
    },
    /// The start tag of a top-level element larger than the size limit or nested deeper than
    /// the depth limit. The element's remaining bytes are skipped.
    Oversized { start_tag: Bytes },
    /// `</stream:stream>`: the server ended the stream.
    StreamEnd,
}

/// Why the stream cannot go on. Each maps to the stream error we send before closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("not well-formed: {0}")]
    NotWellFormed(&'static str),
    #[error("policy violation: {0}")]
    PolicyViolation(&'static str),
}

/// Where the lexer is inside the current token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    /// Character data (or whitespace between stanzas): looking for the next `<`.
    Text,
    /// Just after `<`: the next bytes say what kind of markup this is.
    Markup,
    /// Inside a start tag; `quote` is the open attribute quote, if any.
    StartTag { quote: Option<u8> },
    /// Inside an end tag, looking for `>`.
    EndTag,
    /// Inside `<!-- ... -->`.
    Comment,
    /// Inside `<![CDATA[ ... ]]>`.
    CData,
    /// Inside `<? ... ?>` (the XML declaration, mostly).
    Pi,
}

/// Incremental splitter for one stream. Feed it with [`Framer::buffer`], then drain
/// [`Framer::next_frame`] until it returns `Ok(None)`.
pub struct Framer {
    buf: BytesMut,
    /// Next byte to look at.
    pos: usize,
    lex: Lex,
    /// Offset of the current token's `<`.
    token_start: usize,
    /// 0 before the stream header, 1 between stanzas, 2 and more inside a stanza.
    depth: usize,
    /// Offset of the current top-level element's `<` (meaningful while `depth >= 2`).
    element_start: usize,
    /// End offset of the current top-level element's start tag, once seen.
    start_tag_end: Option<usize>,
    /// The current top-level element is being dropped (over a limit): its bytes are dropped as
    /// they are lexed and only its depth is counted. Between stanzas: the current token is over
    /// the size limit and is dropped the same way.
    skipping: bool,
    /// Offset where the current comment, CDATA section or PI's body starts: its terminator is
    /// looked for from there on.
    body_start: usize,
    /// Names of the open elements inside the current stanza, back to back.
    names: Vec<u8>,
    /// Length of each name in `names`.
    name_lens: Vec<usize>,
    max_size: usize,
    max_depth: usize,
    /// Whether a stanza buffered whole is cut in one pass ([`whole_stanza_len`]).
    one_pass: bool,
}

/// How much spare room to offer each socket read.
pub(crate) const READ_CHUNK: usize = 16 * 1024;

/// Bytes kept of a token whose beginning is dropped: a terminator (`-->`, `]]>`) may straddle
/// reads, and a start tag's `/` before `>` says whether it is self-closing.
const KEPT_TAIL: usize = 2;

impl Framer {
    pub fn new(max_size: usize, max_depth: usize) -> Self {
        Framer {
            buf: BytesMut::with_capacity(READ_CHUNK),
            pos: 0,
            lex: Lex::Text,
            token_start: 0,
            depth: 0,
            element_start: 0,
            start_tag_end: None,
            skipping: false,
            body_start: 0,
            names: Vec::new(),
            name_lens: Vec::new(),
            max_size,
            max_depth,
            one_pass: true,
        }
    }

    /// The same framer lexing every stanza token by token: the reference the fuzz target
    /// holds the one pass to (both must cut the same frames and fail on the same input).
    pub fn token_by_token(mut self) -> Self {
        self.one_pass = false;
        self
    }

    /// The buffer to read into (with room for at least one more chunk).
    pub fn buffer(&mut self) -> &mut BytesMut {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        &mut self.buf
    }

    /// Bytes held between reads: what the size limit bounds (for tests and the fuzz target).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, or `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<StreamFrame>, FramingError> {
        loop {
            let step = self.step()?;
            match step {
                Step::NeedMore => {
                    if let Some(frame) = self.check_limits_while_waiting()? {
                        return Ok(Some(frame));
                    }
                    self.discard_consumed();
                    return Ok(None);
                }
                Step::Continue => {}
                Step::StreamFrame(frame) => return Ok(Some(frame)),
            }
        }
    }

    /// Lexes one token (or one run of text) further. A run of text goes straight on into the
    /// markup after it, and the markup into its tag: most steps then end a whole token, which
    /// halves the trips through [`Framer::next_frame`]'s loop on a stream of small tags.
    fn step(&mut self) -> Result<Step, FramingError> {
        match self.lex {
            Lex::Text => self.lex_text(),
            Lex::Markup => self.lex_markup(),
            Lex::StartTag { quote } => self.lex_start_tag(quote),
            Lex::EndTag => self.lex_end_tag(),
            Lex::Comment => self.skip_until(b"-->"),
            Lex::CData => self.skip_until(b"]]>"),
            Lex::Pi => self.skip_until(b"?>"),
        }
    }

    /// Character data (or whitespace between stanzas), up to the next `<`.
    fn lex_text(&mut self) -> Result<Step, FramingError> {
        let rest = &self.buf[self.pos..];
        let (text, found) = match memchr::memchr(b'<', rest) {
            Some(i) => (&rest[..i], true),
            None => (rest, false),
        };
        if self.depth <= 1 && !text.iter().all(|b| is_xml_space(*b)) {
            return Err(FramingError::NotWellFormed("text outside of any stanza"));
        }
        self.pos += text.len();
        if !found {
            return Ok(Step::NeedMore);
        }
        if self.depth == 1 && self.one_pass {
            if let Some(frame) = self.take_whole_stanza() {
                return Ok(Step::StreamFrame(frame));
            }
        }
        self.token_start = self.pos;
        self.pos += 1;
        self.lex = Lex::Markup;
        self.lex_markup()
    }

    /// Just after `<`: decides what kind of markup this is, and lexes tags on at once.
    fn lex_markup(&mut self) -> Result<Step, FramingError> {
        let rest = &self.buf[self.token_start..];
        let Some(&second) = rest.get(1) else {
            return Ok(Step::NeedMore);
        };
        match second {
            b'/' => {
                self.lex = Lex::EndTag;
                self.lex_end_tag()
            }
            b'?' => {
                self.body_start = self.token_start + 2;
                self.lex = Lex::Pi;
                Ok(Step::Continue)
            }
            b'!' => {
                self.lex = if rest.starts_with(b"<!--") {
                    self.pos = self.token_start + 4;
                    self.body_start = self.pos;
                    Lex::Comment
                } else if rest.starts_with(b"<![CDATA[") {
                    if self.depth < 2 {
                        return Err(FramingError::NotWellFormed("CDATA outside of any stanza"));
                    }
                    self.pos = self.token_start + 9;
                    self.body_start = self.pos;
                    Lex::CData
                } else if b"<!--".starts_with(rest) || b"<![CDATA[".starts_with(rest) {
                    return Ok(Step::NeedMore);
                } else {
                    return Err(FramingError::NotWellFormed(
                        "document type declarations are not allowed",
                    ));
                };
                Ok(Step::Continue)
            }
            _ => {
                self.lex = Lex::StartTag { quote: None };
                self.lex_start_tag(None)
            }
        }
    }

    /// Inside an end tag, looking for `>`.
    fn lex_end_tag(&mut self) -> Result<Step, FramingError> {
        let Some(i) = memchr::memchr(b'>', &self.buf[self.pos..]) else {
            self.pos = self.buf.len();
            return Ok(Step::NeedMore);
        };
        let end = self.pos + i + 1;
        self.pos = end;
        self.lex = Lex::Text;
        self.close_element(end)
    }

    /// Scans a start tag, honouring quoted attribute values (which may contain `>`).
    fn lex_start_tag(&mut self, mut quote: Option<u8>) -> Result<Step, FramingError> {
        let data = &self.buf[..];
        loop {
            let rest = &data[self.pos..];
            // Names and the gaps between attributes are short: a plain scan beats setting up a
            // vector search there. Values (a token) can be long.
            let found = match quote {
                Some(q) => memchr::memchr(q, rest),
                None => rest.iter().position(|&b| matches!(b, b'>' | b'\'' | b'"')),
            };
            let Some(i) = found else {
                self.pos = data.len();
                self.lex = Lex::StartTag { quote };
                return Ok(Step::NeedMore);
            };
            let at = self.pos + i;
            self.pos = at + 1;
            match (quote, data[at]) {
                (Some(_), _) => quote = None,
                (None, b'>') => break,
                (None, q) => quote = Some(q),
            }
        }
        let end = self.pos;
        let self_closing = data[end - 2] == b'/';
        self.lex = Lex::Text;
        let name = if self.names_checked(end) {
            Some(self.checked_name(end)?)
        } else {
            None
        };
        self.open_element(name, end, self_closing)
    }

    /// The name of the start tag that ends at `end`, checked.
    fn checked_name(&self, end: usize) -> Result<std::ops::Range<usize>, FramingError> {
        let data = &self.buf[..end];
        let name_end = self.token_start + 1 + tag_name_len(&data[self.token_start + 1..]);
        if name_end == self.token_start + 1 {
            return Err(FramingError::NotWellFormed("a tag without a name"));
        }
        if !is_plausible_name(&data[self.token_start + 1..name_end]) {
            return Err(FramingError::NotWellFormed(
                "a tag name with invalid characters",
            ));
        }
        Ok(self.token_start + 1..name_end)
    }

    /// Whether the names in the tag ending at `end` are checked: not in an element being
    /// dropped, nor in a tag that ends past its stanza's limit. When such a tag arrives in
    /// pieces its beginning is dropped before it ends; checking it only when it arrives whole
    /// would make the outcome depend on how the bytes were read.
    fn names_checked(&self, end: usize) -> bool {
        match self.depth {
            0 => true,
            1 => !self.skipping && end - self.token_start <= self.max_size,
            _ => !self.skipping && end - self.element_start <= self.max_size,
        }
    }

    /// Handles a complete start tag ending at `end`; `name` is `None` when it was not checked
    /// ([`Framer::names_checked`]).
    fn open_element(
        &mut self,
        name: Option<std::ops::Range<usize>>,
        end: usize,
        self_closing: bool,
    ) -> Result<Step, FramingError> {
        match self.depth {
            0 => {
                if self_closing {
                    return Err(FramingError::NotWellFormed("an empty stream header"));
                }
                self.depth = 1;
                let header = Bytes::copy_from_slice(&self.buf[self.token_start..end]);
                self.consume(end);
                Ok(Step::StreamFrame(StreamFrame::StreamHeader(header)))
            }
            1 => {
                let Some(name) = name else {
                    return Ok(self.drop_top_level(end, self_closing));
                };
                if &self.buf[name.clone()] == b"stream:stream" && !self_closing {
                    // A server restarting its stream mid-way: handed out, not taken for a
                    // stanza that would swallow everything after it.
                    let header = Bytes::copy_from_slice(&self.buf[self.token_start..end]);
                    self.consume(end);
                    return Ok(Step::StreamFrame(StreamFrame::StreamHeader(header)));
                }
                self.element_start = self.token_start;
                self.start_tag_end = Some(end);
                if self_closing {
                    return Ok(self.take_element(end));
                }
                self.depth = 2;
                self.push_name(name);
                Ok(Step::Continue)
            }
            depth => {
                // `depth - 1` elements are open in this stanza; this one is one deeper.
                if !self_closing {
                    self.depth += 1;
                }
                if !self.skipping && depth > self.max_depth {
                    // Only the depth is counted from here on: no name is kept.
                    return Ok(Step::StreamFrame(self.start_skipping()));
                }
                if let (Some(name), false) = (name, self_closing || self.skipping) {
                    self.push_name(name);
                }
                self.after_token_in_stanza()
            }
        }
    }

    /// A top-level start tag over the size limit, ending at `end`: it cannot be kept, so no `id`
    /// can be read and nothing can be answered. The element is dropped whole without a frame,
    /// its bytes lexed and dropped as they arrive. Logged at debug level only: anyone who can
    /// address the component can send these.
    fn drop_top_level(&mut self, end: usize, self_closing: bool) -> Step {
        log::debug!(
            "dropped a stanza whose start tag is over the {} byte limit (limits.maxStanzaSize)",
            self.max_size
        );
        self.skipping = !self_closing;
        if !self_closing {
            self.depth = 2;
        }
        self.consume(end);
        Step::Continue
    }

    /// Handles a complete end tag ending at `end`.
    fn close_element(&mut self, end: usize) -> Result<Step, FramingError> {
        match self.depth {
            0 => Err(FramingError::NotWellFormed(
                "an end tag before the stream header",
            )),
            1 => {
                self.skipping = false;
                self.consume(end);
                Ok(Step::StreamFrame(StreamFrame::StreamEnd))
            }
            _ => {
                if self.names_checked(end) {
                    self.close_name(end)?;
                }
                self.depth -= 1;
                if self.depth > 1 {
                    return self.after_token_in_stanza();
                }
                if self.skipping {
                    self.skipping = false;
                    self.consume(end);
                    return Ok(Step::Continue);
                }
                Ok(self.take_element(end))
            }
        }
    }

    /// Checks the end tag ending at `end` against the innermost open name, and forgets that name.
    fn close_name(&mut self, end: usize) -> Result<(), FramingError> {
        let tag = &self.buf[self.token_start + 2..end - 1];
        let open_len = self.name_lens.pop().unwrap_or(0);
        let new_len = self.names.len() - open_len;
        if end_tag_name(tag) != &self.names[new_len..] {
            return Err(FramingError::NotWellFormed("an end tag does not match"));
        }
        self.names.truncate(new_len);
        Ok(())
    }

    /// Skips a comment, CDATA section or processing instruction up to `terminator`.
    fn skip_until(&mut self, terminator: &[u8]) -> Result<Step, FramingError> {
        let data = &self.buf[..];
        // Resume a little before where the last scan stopped: the terminator may straddle reads.
        let from = self
            .pos
            .saturating_sub(terminator.len() - 1)
            .max(self.body_start);
        match memchr::memmem::find(&data[from..], terminator) {
            None => {
                self.pos = data.len();
                Ok(Step::NeedMore)
            }
            Some(i) => {
                self.pos = from + i + terminator.len();
                self.lex = Lex::Text;
                if self.depth >= 2 {
                    self.after_token_in_stanza()
                } else {
                    // Between stanzas, a comment or PI over the limit is now behind us.
                    self.skipping = false;
                    Ok(Step::Continue)
                }
            }
        }
    }

    /// After each token inside a stanza: enforce the size limit as soon as it is crossed.
    fn after_token_in_stanza(&mut self) -> Result<Step, FramingError> {
        if self.skipping {
            self.consume(self.pos);
            return Ok(Step::Continue);
        }
        if self.pos - self.element_start > self.max_size {
            // Past the start tag already (we are inside the stanza), so it can be handed out.
            return Ok(Step::StreamFrame(self.start_skipping()));
        }
        Ok(Step::Continue)
    }

    /// Called when the buffered bytes ran out mid-way: no stanza or token may be held past the
    /// limit. Returns the `Oversized` frame when a stanza just crossed it (its start tag is
    /// complete: it is inside it). A token over the limit between stanzas is dropped from here
    /// on; before the stream header, it ends the stream.
    fn check_limits_while_waiting(&mut self) -> Result<Option<StreamFrame>, FramingError> {
        let held = self.buf.len();
        if self.depth >= 2 && !self.skipping && held - self.element_start > self.max_size {
            return Ok(Some(self.start_skipping()));
        }
        let in_token = !matches!(self.lex, Lex::Text | Lex::Markup);
        if self.depth <= 1 && in_token && held - self.token_start > self.max_size {
            if self.depth == 0 {
                return Err(FramingError::PolicyViolation(
                    "a tag before the stream header is over the size limit",
                ));
            }
            self.skipping = true;
        }
        Ok(None)
    }

    /// The current stanza is over a limit: hand out its start tag and drop the rest as it comes.
    fn start_skipping(&mut self) -> StreamFrame {
        let start_tag_end = self.start_tag_end.take().unwrap_or(self.element_start);
        let start_tag = Bytes::copy_from_slice(&self.buf[self.element_start..start_tag_end]);
        self.skipping = true;
        self.names.clear();
        self.name_lens.clear();
        self.discard_consumed();
        StreamFrame::Oversized { start_tag }
    }

    /// Hands out the top-level element that ends at `end`, or its start tag when the element
    /// crossed the limit with its last token (a start tag over the limit never gets here).
    fn take_element(&mut self, end: usize) -> Step {
        self.names.clear();
        self.name_lens.clear();
        let start_tag_end = self.start_tag_end.take().unwrap_or(end);
        if end - self.element_start > self.max_size {
            let start_tag = Bytes::copy_from_slice(&self.buf[self.element_start..start_tag_end]);
            self.consume(end);
            return Step::StreamFrame(StreamFrame::Oversized { start_tag });
        }
        let len = end - self.element_start;
        self.consume(self.element_start);
        let element = self.buf.split_to(len).freeze();
        self.pos -= len;
        self.token_start = 0;
        self.element_start = 0;
        Step::StreamFrame(StreamFrame::Element(element))
    }

    /// Between stanzas, at a `<`: hands out the stanza at once when it is buffered whole and
    /// plain, a push already read ([`request::frame_push`]), anything else cut
    /// ([`whole_stanza_len`]); otherwise leaves everything as it was.
    fn take_whole_stanza(&mut self) -> Option<StreamFrame> {
        let limit = self.buf.len().min(self.pos + self.max_size);
        let data = &self.buf[self.pos..limit];
        if let Some((len, request)) = request::frame_push(data, self.max_depth) {
            let stanza = self.take(len);
            let request = Box::new(request);
            return Some(StreamFrame::Push { stanza, request });
        }
        let len = whole_stanza_len(data, self.max_depth)?;
        Some(StreamFrame::Element(self.take(len)))
    }

    /// Takes the `len` bytes from `pos` out of the buffer.
    fn take(&mut self, len: usize) -> Bytes {
        self.consume(self.pos);
        let element = self.buf.split_to(len).freeze();
        self.pos = 0;
        self.token_start = 0;
        self.element_start = 0;
        element
    }

    /// Records the name of an element that opened inside the current stanza.
    fn push_name(&mut self, name: std::ops::Range<usize>) {
        self.name_lens.push(name.len());
        self.names.extend_from_slice(&self.buf[name]);
    }

    /// Drops the bytes nobody needs any more: everything before the current stanza (between
    /// stanzas, everything before the current token; while dropping, all but the last bytes of
    /// the current token).
    fn discard_consumed(&mut self) {
        let keep_from = if self.depth >= 2 && !self.skipping {
            self.element_start
        } else if self.lex == Lex::Text {
            self.pos
        } else if self.skipping {
            // Only the lexer's state matters in a token being dropped, and its last bytes.
            self.token_start.max(self.pos.saturating_sub(KEPT_TAIL))
        } else {
            self.token_start
        };
        self.consume(keep_from);
    }

    /// Removes the first `n` buffered bytes, moving every offset along.
    fn consume(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        self.buf.advance(n);
        self.pos -= n;
        self.token_start = self.token_start.saturating_sub(n);
        self.element_start = self.element_start.saturating_sub(n);
        self.start_tag_end = self.start_tag_end.map(|end| end.saturating_sub(n));
        self.body_start = self.body_start.saturating_sub(n);
    }
}

/// What one lexing step achieved.
enum Step {
    NeedMore,
    Continue,
    StreamFrame(StreamFrame),
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &[u8] = b"<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
        xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='push.localhost'>";

    /// Feeds `bytes` and collects every frame that becomes complete.
    fn feed(framer: &mut Framer, bytes: &[u8]) -> Result<Vec<StreamFrame>, FramingError> {
        framer.buffer().extend_from_slice(bytes);
        let mut frames = Vec::new();
        while let Some(frame) = framer.next_frame()? {
            frames.push(frame);
        }
        Ok(frames)
    }

    fn element(bytes: &[u8]) -> StreamFrame {
        StreamFrame::Element(Bytes::copy_from_slice(bytes))
    }

    /// A push read while framing: its bytes and their parse.
    fn pushed(bytes: &[u8]) -> StreamFrame {
        StreamFrame::Push {
            stanza: Bytes::copy_from_slice(bytes),
            request: Box::new(request::parse(bytes)),
        }
    }

    /// The frames as cut, a push read while framing as the element it was cut from (after
    /// checking it is what the parser makes of those bytes): whether a push is read while
    /// framing depends on how it arrived.
    fn as_cut(
        frames: Result<Vec<StreamFrame>, FramingError>,
    ) -> Result<Vec<StreamFrame>, FramingError> {
        let cut = |frame| match frame {
            StreamFrame::Push { stanza, request } => {
                assert_eq!(*request, request::parse(&stanza), "{stanza:?}");
                StreamFrame::Element(stanza)
            }
            frame => frame,
        };
        Ok(frames?.into_iter().map(cut).collect())
    }

    fn started(max_size: usize, max_depth: usize) -> Framer {
        let mut framer = Framer::new(max_size, max_depth);
        let frames = feed(&mut framer, HEADER).unwrap();
        assert_eq!(frames.len(), 1);
        assert!(
            matches!(&frames[0], StreamFrame::StreamHeader(h) if h.starts_with(b"<stream:stream"))
        );
        framer
    }

    const PUSH: &[u8] = b"<iq type='set' id='a' from='localhost' to='push.localhost'>\
        <pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='t'><item>\
        <notification xmlns='urn:xmpp:push:0'><x xmlns='jabber:x:data'/></notification>\
        </item></publish></pubsub></iq>";

    #[test]
    fn stanzas_come_out_whole_and_in_order() {
        let mut framer = started(4096, 16);
        let mut input = Vec::new();
        input.extend_from_slice(PUSH);
        input.extend_from_slice(b"<presence from='a'/>");
        input.extend_from_slice(PUSH);
        let frames = feed(&mut framer, &input).unwrap();
        assert_eq!(
            frames,
            vec![pushed(PUSH), element(b"<presence from='a'/>"), pushed(PUSH)]
        );
    }

    #[test]
    fn one_byte_at_a_time_gives_the_same_frames() {
        let mut whole = Vec::new();
        whole.extend_from_slice(HEADER);
        whole.extend_from_slice(b" \n<!-- keepalive -->\t");
        whole.extend_from_slice(PUSH);
        whole.extend_from_slice(
            b"<message><body><![CDATA[</body> <b> ]] > ]]></body><!-- c --></message>",
        );
        whole.extend_from_slice(b"</stream:stream>");
        let mut at_once = Framer::new(4096, 16);
        let expected = feed(&mut at_once, &whole).unwrap();
        assert_eq!(expected.len(), 4, "{expected:?}");
        assert_eq!(expected[1], pushed(PUSH));
        let mut bytewise = Framer::new(4096, 16);
        let mut frames = Vec::new();
        for byte in &whole {
            frames.extend(feed(&mut bytewise, std::slice::from_ref(byte)).unwrap());
        }
        assert_eq!(frames[3], StreamFrame::StreamEnd);
        assert_eq!(Ok(frames), as_cut(Ok(expected)));
    }

    /// A stanza buffered whole takes the one-pass way; lexed token by token, or fed a byte at a
    /// time, it never does. All three must give the same frames, or fail with the same error.
    #[test]
    fn a_stanza_buffered_whole_frames_as_it_does_token_by_token() {
        let whole = |stanza: &[u8], mut framer: Framer| {
            feed(&mut framer, HEADER)?;
            feed(&mut framer, stanza)
        };
        let bytewise = |stanza: &[u8]| {
            let mut framer = started(4096, 4);
            let mut frames = Vec::new();
            for byte in stanza {
                frames.extend(feed(&mut framer, std::slice::from_ref(byte))?);
            }
            Ok(frames)
        };
        for stanza in [
            &b"<iq a='1'><x/><y b=\"<\">t&amp;x</y ></iq>"[..],
            b"<a><b><c/></b></a>",
            b"<a><b><c><d/></c></b></a>",
            b"<a><b></a></b>",
            b"<a></ a>",
            b"<a><b x='/'>text</b></a><c/>",
            b"<a><!--x--></a>",
            b"<a/ >",
            b"<a>text",
            b"< a></a>",
            b"<a><=b/></a>",
        ] {
            let one_pass = whole(stanza, Framer::new(4096, 4));
            let text = String::from_utf8_lossy(stanza);
            let by_token = whole(stanza, Framer::new(4096, 4).token_by_token());
            assert_eq!(one_pass, by_token, "{text}");
            assert_eq!(one_pass, bytewise(stanza), "{text}");
        }
    }

    /// A push buffered whole is read while it is framed: the frame must be the one lexing token
    /// by token cuts, with what the parser makes of it. Checked on captured pushes and on each
    /// of them broken or decorated in many ways, under several nesting limits.
    #[test]
    fn a_push_read_while_framing_is_cut_and_parsed_as_usual() {
        use fpush_testkit::xmpp::{stanza_variants, tags_prefixed_in_turn};

        let fixtures: [&[u8]; 3] = [
            PUSH,
            include_bytes!("../../tests/fixtures/prosody-0.12-push-iq.xml"),
            include_bytes!("../../tests/fixtures/ejabberd-23.01-push-iq.xml"),
        ];
        let insertions: [&[u8]; 10] = [
            b"<a>",
            b"</a>",
            b"<a/>",
            b" ",
            b"'",
            b"/",
            b"&amp;",
            b"<!--c-->",
            b"\xff",
            b"<pubsub>",
        ];
        let frames = |stanza: &[u8], depth: usize, framer: fn(usize, usize) -> Framer| {
            let mut framer = framer(4096, depth);
            feed(&mut framer, HEADER).unwrap();
            let mut input = stanza.to_vec();
            input.extend_from_slice(b"<presence/>");
            feed(&mut framer, &input)
        };
        let one_pass = |size, depth| Framer::new(size, depth);
        let by_token = |size, depth| Framer::new(size, depth).token_by_token();
        let mut read_while_framing = 0;
        let mut check = |stanza: &[u8]| {
            for depth in [3, 5, 16] {
                let ours = frames(stanza, depth, one_pass);
                read_while_framing += ours
                    .iter()
                    .flatten()
                    .filter(|f| matches!(f, StreamFrame::Push { .. }))
                    .count();
                let text = String::from_utf8_lossy(stanza);
                assert_eq!(
                    as_cut(ours),
                    frames(stanza, depth, by_token),
                    "{depth} {text}"
                );
            }
        };
        for fixture in fixtures {
            let fixture = fixture.trim_ascii_end();
            assert!(matches!(
                &frames(fixture, 16, one_pass).unwrap()[0],
                StreamFrame::Push { .. }
            ));
            check(fixture);
            // The framer closes an element only by its own name, prefix and all: every start
            // or end tag prefixed in turn, and the IQ's start and end tags together.
            for prefixed in tags_prefixed_in_turn(fixture, b"p:") {
                check(&prefixed);
            }
            let text = std::str::from_utf8(fixture).unwrap();
            let both = text.replacen("<iq", "<i:iq", 1).replace("</iq>", "</i:iq>");
            check(both.as_bytes());
            for variant in stanza_variants(fixture, &insertions, 7) {
                check(&variant);
            }
        }
        assert!(read_while_framing > 1_000, "{read_while_framing}");
    }

    #[test]
    fn a_push_with_a_prefixed_pubsub_is_left_to_the_parser() {
        // Its end tag holds no `</pubsub`: searching for one would scan the whole window.
        let text = std::str::from_utf8(PUSH).unwrap();
        let prefixed = text
            .replace("<pubsub xmlns=", "<ps:pubsub xmlns:ps=")
            .replace("</pubsub>", "</ps:pubsub>")
            .replace("publish", "ps:publish")
            .replace("item>", "ps:item>");
        // Not read while framing, even with a plain push behind it in the buffer.
        let both = [prefixed.as_bytes(), PUSH].concat();
        assert!(request::frame_push(&both, 16).is_none());
        let mut framer = started(4096, 16);
        let frames = feed(&mut framer, prefixed.as_bytes()).unwrap();
        assert_eq!(frames, vec![element(prefixed.as_bytes())]);
        let parsed = request::parse(prefixed.as_bytes());
        assert!(
            matches!(&parsed, request::Request::Push { push, .. } if push.token == "t"),
            "{parsed:?}"
        );
    }

    #[test]
    fn whitespace_and_comments_between_stanzas_are_skipped() {
        let mut framer = started(4096, 16);
        let frames = feed(&mut framer, b"  \r\n <!-- a > comment --> \n<a/>\n ").unwrap();
        assert_eq!(frames, vec![element(b"<a/>")]);
        assert_eq!(framer.buffered(), 0);
    }

    #[test]
    fn quoted_attribute_values_may_hold_markup_characters() {
        let mut framer = started(4096, 16);
        let stanza = b"<iq id='x>y' to=\"a/>b\" t='\"'><q a='</q>'/></iq>";
        assert_eq!(feed(&mut framer, stanza).unwrap(), vec![element(stanza)]);
    }

    #[test]
    fn oversized_stanza_gives_its_start_tag_and_the_stream_goes_on() {
        let mut framer = started(256, 16);
        let start = b"<iq type='set' id='big' from='localhost' to='push.localhost'>";
        let mut frames = feed(&mut framer, start).unwrap();
        let filler = b"<x>0123456789abcdef0123456789abcdef</x>";
        let mut most_held = 0;
        for _ in 0..10_000 {
            frames.extend(feed(&mut framer, filler).unwrap());
            most_held = most_held.max(framer.buffered());
        }
        frames.extend(feed(&mut framer, b"</iq><presence/>").unwrap());
        assert_eq!(
            frames,
            vec![
                StreamFrame::Oversized {
                    start_tag: Bytes::copy_from_slice(start)
                },
                element(b"<presence/>"),
            ]
        );
        assert!(most_held <= 256 + filler.len(), "held {most_held} bytes");
    }

    #[test]
    fn oversized_stanza_arriving_in_one_read_is_reported_too() {
        let mut framer = started(64, 16);
        let stanza = b"<iq type='get' id='b' from='l'><query xmlns='x'>0123456789012345678901234567890123456789</query></iq><a/>";
        let frames = feed(&mut framer, stanza).unwrap();
        assert_eq!(
            frames,
            vec![
                StreamFrame::Oversized {
                    start_tag: Bytes::from_static(b"<iq type='get' id='b' from='l'>")
                },
                element(b"<a/>"),
            ]
        );
    }

    /// Feeds `input` in pieces of `chunk` bytes; the frames, whether it failed, and the most
    /// bytes held between reads.
    fn feed_in_pieces(
        framer: &mut Framer,
        input: &[u8],
        chunk: usize,
    ) -> (Vec<StreamFrame>, bool, usize) {
        let mut frames = Vec::new();
        let mut most_held = 0;
        for piece in input.chunks(chunk) {
            match feed(framer, piece) {
                Ok(more) => frames.extend(more),
                Err(_) => return (frames, true, most_held),
            }
            most_held = most_held.max(framer.buffered());
        }
        (frames, false, most_held)
    }

    fn oversized(start_tag: &[u8]) -> StreamFrame {
        StreamFrame::Oversized {
            start_tag: Bytes::copy_from_slice(start_tag),
        }
    }

    #[test]
    fn a_start_tag_over_the_limit_drops_its_stanza_without_a_frame() {
        let long = format!("<iq id='{}'><x>t</x></iq><a/>", "a".repeat(100));
        for chunk in [1, 7, 64, long.len()] {
            let mut framer = started(64, 16);
            let (frames, failed, most_held) = feed_in_pieces(&mut framer, long.as_bytes(), chunk);
            assert!(!failed, "{chunk}");
            assert_eq!(frames, vec![element(b"<a/>")], "{chunk}");
            assert!(most_held <= 64, "{chunk}: held {most_held}");
        }
        let mut framer = started(64, 16);
        let self_closing = format!("<presence a='{}'/><a/>", "b".repeat(100));
        assert_eq!(
            feed(&mut framer, self_closing.as_bytes()).unwrap(),
            vec![element(b"<a/>")]
        );
    }

    #[test]
    fn a_tag_before_the_stream_header_over_the_limit_is_a_policy_violation() {
        let mut framer = Framer::new(64, 16);
        let err = feed(
            &mut framer,
            format!("<stream:stream a='{}", "b".repeat(100)).as_bytes(),
        );
        assert!(
            matches!(err, Err(FramingError::PolicyViolation(_))),
            "{err:?}"
        );
    }

    #[test]
    fn nesting_beyond_the_limit_skips_the_stanza_and_the_stream_goes_on() {
        let mut framer = started(4096, 3);
        assert_eq!(
            feed(&mut framer, b"<a><b><c/></b></a>").unwrap(),
            vec![element(b"<a><b><c/></b></a>")]
        );
        let deep = b"<iq type='get' id='d'><b><c><d><e/></d></c></b></iq><a/>";
        assert_eq!(
            feed(&mut framer, deep).unwrap(),
            vec![oversized(b"<iq type='get' id='d'>"), element(b"<a/>")]
        );
        let mut framer = started(4096, 3);
        assert_eq!(
            feed(&mut framer, b"<m><b><c><d/></c></b></m><a/>").unwrap(),
            vec![oversized(b"<m>"), element(b"<a/>")]
        );
    }

    #[test]
    fn ten_thousand_levels_are_counted_not_kept() {
        let mut framer = started(1 << 20, 16);
        let mut input = b"<message id='m'>".to_vec();
        input.extend(b"<x>".repeat(10_000));
        input.extend(b"</x>".repeat(10_000));
        input.extend_from_slice(b"</message><a/>");
        let (frames, failed, _) = feed_in_pieces(&mut framer, &input, 1000);
        assert!(!failed);
        assert_eq!(
            frames,
            vec![oversized(b"<message id='m'>"), element(b"<a/>")]
        );
        assert!(
            framer.names.capacity() < 1024,
            "{}",
            framer.names.capacity()
        );
    }

    /// A 10 MB attribute, comment or CDATA section inside a stanza, and a 10 MB start tag of a
    /// stanza: each passes through in bounded memory, and the next stanza comes out.
    #[test]
    fn a_ten_megabyte_tag_streams_through_in_bounded_memory() {
        const LIMIT: usize = 4096;
        const READ: usize = 64 * 1024;
        let huge = "x".repeat(10 * 1024 * 1024);
        let start = "<iq type='set' id='h' from='l'>";
        let cases = [
            (format!("{start}<p a='{huge}'/></iq>"), Some(start)),
            (format!("{start}<p a=\"{huge}\">t</p></iq>"), Some(start)),
            (format!("{start}<!--{huge}--></iq>"), Some(start)),
            (
                format!("{start}<b><![CDATA[{huge}]]></b></iq>"),
                Some(start),
            ),
            (format!("<iq type='set' id='h' a='{huge}'><p/></iq>"), None),
            (format!("<!--{huge}-->"), None),
        ];
        for (input, answered) in cases {
            let mut framer = started(LIMIT, 16);
            let mut input = input.into_bytes();
            input.extend_from_slice(PUSH);
            let (frames, failed, most_held) = feed_in_pieces(&mut framer, &input, READ);
            let mut expected: Vec<_> = answered
                .map(|s| oversized(s.as_bytes()))
                .into_iter()
                .collect();
            expected.push(element(PUSH));
            assert!(!failed);
            assert_eq!(as_cut(Ok(frames)), Ok(expected));
            assert!(most_held <= LIMIT + READ, "held {most_held} bytes");
        }
    }

    /// Whatever limit an input crosses, every way of reading it gives the same frames.
    #[test]
    fn skipped_stanzas_frame_the_same_in_any_chunking() {
        let inputs: [&[u8]; 7] = [
            b"<iq id='a'><b><c><d><e/></d></c></b></iq><z/>",
            b"<iq id='a'><b x='0123456789012345678901234567890123456789'/></iq><z/>",
            b"<iq id='a'><!-- 0123456789012345678901234567890123456789 --></iq><z/>",
            b"<iq id='a'><b><![CDATA[ ]] 0123456789012345678901234567890 ]]></b></iq><z/>",
            b"<iq id='a' x='0123456789012345678901234567890123456789'><b/></iq><z/>",
            b"<iq id='a'><?pi 012345678901234567890123456789012345678901 ?></iq><z/>",
            b"<iq id='a'><b>0123456789012345678901234567890123456789</q></b></iq><z/>",
        ];
        for input in inputs {
            let text = String::from_utf8_lossy(input);
            let mut whole = started(48, 4);
            let expected = as_cut(feed(&mut whole, input)).unwrap();
            assert_eq!(expected.last(), Some(&element(b"<z/>")), "{text}");
            for chunk in 1..input.len() {
                let mut framer = started(48, 4);
                let (frames, failed, most_held) = feed_in_pieces(&mut framer, input, chunk);
                assert!(!failed, "{chunk} {text}");
                assert_eq!(as_cut(Ok(frames)).unwrap(), expected, "{chunk} {text}");
                assert!(most_held <= 48, "{chunk} {text}: held {most_held}");
            }
        }
    }

    #[test]
    fn mismatched_end_tag_is_not_well_formed() {
        let mut framer = started(4096, 16);
        let err = feed(&mut framer, b"<a><b></a></b>").unwrap_err();
        assert!(matches!(err, FramingError::NotWellFormed(_)), "{err:?}");
    }

    #[test]
    fn a_tag_whose_name_is_markup_is_not_well_formed() {
        let mut framer = started(1024, 8);
        let err = feed(&mut framer, b"<iq type='set' id='g'><</iq>").unwrap_err();
        assert!(matches!(err, FramingError::NotWellFormed(_)), "{err:?}");
    }

    #[test]
    fn text_between_stanzas_is_not_well_formed() {
        let mut framer = started(4096, 16);
        let err = feed(&mut framer, b"<a/>garbage").unwrap_err();
        assert!(matches!(err, FramingError::NotWellFormed(_)), "{err:?}");
    }

    #[test]
    fn doctype_is_not_well_formed() {
        let mut framer = Framer::new(4096, 16);
        let err = feed(&mut framer, b"<!DOCTYPE x [<!ENTITY a 'b'>]>").unwrap_err();
        assert!(matches!(err, FramingError::NotWellFormed(_)), "{err:?}");
    }

    #[test]
    fn end_of_stream_is_reported() {
        let mut framer = started(4096, 16);
        assert_eq!(
            feed(&mut framer, b"<a/></stream:stream>").unwrap(),
            vec![element(b"<a/>"), StreamFrame::StreamEnd]
        );
    }

    #[test]
    fn end_tag_names_may_carry_trailing_whitespace() {
        let mut framer = started(4096, 16);
        assert_eq!(
            feed(&mut framer, b"<a><b></b ></a\n>").unwrap(),
            vec![element(b"<a><b></b ></a\n>")]
        );
    }

    #[test]
    fn a_stanza_and_a_tag_inside_it_crossing_the_limit_in_one_read_is_skipped() {
        let mut framer = started(256, 16);
        let mut input = b"<iq type='set' id='big' from='localhost'><publish node='".to_vec();
        input.extend_from_slice(&[b't'; 400]);
        let frames = feed(&mut framer, &input).unwrap();
        assert_eq!(
            frames,
            vec![oversized(b"<iq type='set' id='big' from='localhost'>")]
        );
        assert!(framer.buffered() <= 256, "{}", framer.buffered());
        let frames = feed(&mut framer, b"'><item/></publish></iq><a/>").unwrap();
        assert_eq!(frames, vec![element(b"<a/>")]);
    }

    #[test]
    fn a_second_stream_header_is_reported_not_taken_for_a_stanza() {
        let mut framer = started(4096, 16);
        let frames = feed(&mut framer, HEADER).unwrap();
        assert_eq!(frames.len(), 1);
        assert!(
            matches!(&frames[0], StreamFrame::StreamHeader(h) if h.starts_with(b"<stream:stream"))
        );
    }
}
