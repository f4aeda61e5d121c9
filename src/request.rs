//! What is inside a stanza: one top-level element's bytes become a [`Request`], and a
//! [`Reply`] becomes reply bytes.
//!
//! Parsing streams over the stanza with quick-xml's reader and extracts only what the dispatcher
//! needs (the IQ header, the device token, the publish-options and summary forms). No tree is
//! built: the push path must cost a microsecond or two per stanza, and the fields we care about
//! are few and sit at well-known places. Namespaces are resolved by [`Scopes`], which only looks
//! at the attributes of elements that declare one and only tells apart the few namespaces matched
//! here.
//!
//! Parsing is lenient where real servers differ (form `type`, labels, empty fields, whitespace,
//! comments, unknown fields and attributes, prefixed namespaces) and strict only where a push
//! could go wrong (the device token).

mod quick;
mod reply;
mod scopes;

use std::borrow::Cow;

use fpush_traits::PushSummary;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

pub use reply::{write_reply, Condition, ErrorType, Reply};

use scopes::{Ns, Scopes};

/// Longest device token accepted. APNS tokens are 64 hex characters and FCM registration tokens
/// are a few hundred bytes; anything this long is not a token.
pub const MAX_TOKEN_LEN: usize = 4096;

/// The addressing of an IQ: what every reply needs. Values are unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IqHeader {
    pub id: String,
    pub from: String,
    /// Empty when the IQ carried no `to` (the reply then carries no `from`).
    pub to: String,
}

/// Everything a push IQ told us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushRequest {
    /// The device token: the `node` of the `publish` element.
    pub token: String,
    /// The publish-options field `pushModule`, when present and non-empty.
    pub module: Option<String>,
    /// The summary form the server attached to the notification.
    pub summary: PushSummary,
    /// Every other publish-options field (`var`, first value), in document order. `FORM_TYPE` and
    /// `pushModule` are not repeated here.
    pub options: Vec<(String, String)>,
}

/// What one stanza asks of us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A usable push IQ.
    Push { iq: IqHeader, push: PushRequest },
    /// A set IQ with a pubsub payload (or a get/set IQ that is not well-formed) that cannot be
    /// delivered: answered `modify`/`bad-request` with `reason` as the text.
    InvalidPush { iq: IqHeader, reason: String },
    /// A disco#info query.
    DiscoInfo { iq: IqHeader },
    /// An XEP-0199 ping.
    Ping { iq: IqHeader },
    /// Any other get/set IQ: answered `cancel`/`service-unavailable`.
    Unsupported { iq: IqHeader },
    /// An IQ of type `result` or `error`: never answered (answering could start a loop).
    Response { id: String },
    /// Messages, presence, anything that is not a stanza, and IQs that cannot be answered
    /// (no `id`, no `from`, no usable `type`).
    Ignored,
}

/// The IQ types, as far as replying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IqType {
    Get,
    Set,
    Response,
}

/// Turns one complete top-level element into a [`Request`].
///
/// Never fails: what cannot be understood is either answered with an error (when the IQ header
/// could be read) or ignored.
pub fn parse(stanza: &[u8]) -> Request {
    parse_with(stanza, Lexer::Quick)
}

/// Which lexer reads a pubsub payload: tests compare the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lexer {
    /// [`quick`] first, quick-xml when it gives up.
    Quick,
    /// quick-xml only.
    #[cfg_attr(not(test), allow(dead_code))]
    General,
}

fn parse_with(stanza: &[u8], lexer: Lexer) -> Request {
    let mut reader = Reader::from_reader(stanza);
    let mut scopes = Scopes::default();
    let (kind, header, empty) = match read_iq_start(&mut reader, &mut scopes) {
        Some(start) => start,
        None => return Request::Ignored,
    };
    let iq = match kind {
        IqType::Response => return Request::Response { id: header.id },
        IqType::Get | IqType::Set => header,
    };
    if empty {
        return Request::Unsupported { iq };
    }
    match read_payload(&mut reader, &mut scopes, stanza, lexer, kind) {
        Ok(Payload::Push(push)) => Request::Push { iq, push },
        Ok(Payload::InvalidPush(reason)) => Request::InvalidPush {
            iq,
            reason: reason.to_owned(),
        },
        Ok(Payload::DiscoInfo) => Request::DiscoInfo { iq },
        Ok(Payload::Ping) => Request::Ping { iq },
        Ok(Payload::Other) => Request::Unsupported { iq },
        Err(Malformed) => Request::InvalidPush {
            iq,
            reason: "the stanza is not well-formed XML".to_owned(),
        },
    }
}

/// Reads the header of a get/set IQ from the start tag of a stanza that was too big to buffer,
/// so the server can still be told why it gets no answer. `None` when it cannot be answered.
pub fn parse_oversized(start_tag: &[u8]) -> Option<IqHeader> {
    let mut reader = Reader::from_reader(start_tag);
    match read_iq_start(&mut reader, &mut Scopes::default())? {
        (IqType::Get | IqType::Set, header, _) => Some(header),
        (IqType::Response, _, _) => None,
    }
}

/// A stanza that broke XML rules somewhere past its start tag.
#[derive(Debug)]
struct Malformed;

impl From<quick_xml::Error> for Malformed {
    fn from(_: quick_xml::Error) -> Self {
        Malformed
    }
}

impl From<quick_xml::encoding::EncodingError> for Malformed {
    fn from(_: quick_xml::encoding::EncodingError) -> Self {
        Malformed
    }
}

impl From<quick_xml::events::attributes::AttrError> for Malformed {
    fn from(_: quick_xml::events::attributes::AttrError) -> Self {
        Malformed
    }
}

/// What the first child of a get/set IQ turned out to be.
#[derive(Debug, PartialEq, Eq)]
enum Payload {
    Push(PushRequest),
    InvalidPush(&'static str),
    DiscoInfo,
    Ping,
    Other,
}

/// Reads up to the stanza's start tag. Returns the IQ's type, its header and whether the element
/// was empty (`<iq/>`), or `None` for anything that is not an answerable IQ.
fn read_iq_start(
    reader: &mut Reader<&[u8]>,
    scopes: &mut Scopes,
) -> Option<(IqType, IqHeader, bool)> {
    let (start, empty) = loop {
        match reader.read_event() {
            Ok(Event::Start(start)) => break (start, false),
            Ok(Event::Empty(start)) => break (start, true),
            Ok(Event::Text(_) | Event::Comment(_) | Event::Decl(_) | Event::PI(_)) => continue,
            Ok(_) | Err(_) => return None,
        }
    };
    if start.local_name().as_ref() != b"iq" {
        // Messages and presence are never answered; neither is anything else at the top level.
        return None;
    }
    // The IQ may declare prefixes its payload uses.
    scopes.enter(&start).ok()?;
    let decoder = reader.decoder();
    let mut kind = None;
    let (mut id, mut from, mut to) = (None, None, None);
    // Duplicate-attribute checks allocate; the server already validated its own output.
    for attr in start.attributes().with_checks(false) {
        let attr = attr.ok()?;
        let slot = match attr.key.as_ref() {
            b"type" => {
                kind = match attr.value.as_ref() {
                    b"get" => Some(IqType::Get),
                    b"set" => Some(IqType::Set),
                    b"result" | b"error" => Some(IqType::Response),
                    _ => None,
                };
                continue;
            }
            b"id" => &mut id,
            b"from" => &mut from,
            b"to" => &mut to,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(attr.decode_and_unescape_value(decoder).ok()?.into_owned());
        }
    }
    let Some(kind) = kind else {
        log::debug!("ignoring an IQ without a usable type");
        return None;
    };
    let Some(id) = id else {
        log::debug!("ignoring an IQ without an id: a reply could not be matched to it");
        return None;
    };
    let from = match (kind, from) {
        (IqType::Response, from) => from.unwrap_or_default(),
        (IqType::Get | IqType::Set, Some(from)) if !from.is_empty() => from,
        (IqType::Get | IqType::Set, _) => {
            // The server stamps `from` on everything it routes to a component; without it (or
            // with an empty one) a reply would have no destination.
            log::debug!("ignoring an IQ without a from address (id {id:?})");
            return None;
        }
    };
    let header = IqHeader {
        id,
        from,
        to: to.unwrap_or_default(),
    };
    Some((kind, header, empty))
}

/// Reads the IQ's first child element and, for a push, the rest of the pubsub payload.
fn read_payload(
    reader: &mut Reader<&[u8]>,
    scopes: &mut Scopes,
    stanza: &[u8],
    lexer: Lexer,
    kind: IqType,
) -> Result<Payload, Malformed> {
    loop {
        let (start, empty) = match reader.read_event()? {
            Event::Start(start) => (start, false),
            Event::Empty(start) => (start, true),
            Event::Text(_) | Event::Comment(_) | Event::PI(_) | Event::GeneralRef(_) => continue,
            Event::CData(_) => continue,
            // The IQ closed without a child element.
            Event::End(_) => return Ok(Payload::Other),
            Event::Eof | Event::Decl(_) | Event::DocType(_) => return Err(Malformed),
        };
        let ns = scopes.enter(&start)?;
        let local = start.local_name();
        let payload = match (kind, local.as_ref()) {
            (IqType::Set, b"pubsub") if ns == Ns::Pubsub => {
                if empty {
                    return Ok(Payload::InvalidPush(NO_PUBLISH));
                }
                if lexer == Lexer::Quick {
                    return read_pubsub(reader, scopes, stanza, start.name().as_ref());
                }
                return read_pubsub_events(reader, scopes, reader.decoder());
            }
            (IqType::Get, b"query") if ns == Ns::DiscoInfo => Payload::DiscoInfo,
            (IqType::Get, b"ping") if ns == Ns::Ping => Payload::Ping,
            _ => Payload::Other,
        };
        return Ok(payload);
    }
}

const NO_PUBLISH: &str = "the pubsub payload has no publish element";

/// Which data form a field belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    /// The summary form inside `publish` (`urn:xmpp:push:summary`).
    Summary,
    /// The publish-options form (the client's enable form, replayed).
    Options,
}

/// What a field's `var` names, decided when the field opens so that only the names we keep
/// are copied.
enum FieldVar {
    MessageCount,
    LastMessageSender,
    LastMessageBody,
    PushModule,
    /// A publish-options field kept in [`PushRequest::options`].
    Other(String),
    /// `FORM_TYPE`, and summary fields we do not use.
    Skipped,
}

impl FieldVar {
    /// Takes the name borrowed: only the names kept in `options` are copied (most fields of
    /// a push are classified and dropped, and this runs for every field of every push).
    fn classify(form: Form, var: Cow<'_, str>) -> Self {
        match (form, var.as_ref()) {
            (_, "FORM_TYPE") => FieldVar::Skipped,
            (Form::Summary, "message-count") => FieldVar::MessageCount,
            (Form::Summary, "last-message-sender") => FieldVar::LastMessageSender,
            (Form::Summary, "last-message-body") => FieldVar::LastMessageBody,
            (Form::Summary, _) => FieldVar::Skipped,
            (Form::Options, "pushModule") => FieldVar::PushModule,
            (Form::Options, _) => FieldVar::Other(var.into_owned()),
        }
    }
}

/// The field being read: what its `var` names, the depth of its element, and its first value.
struct OpenField<'i> {
    var: FieldVar,
    depth: usize,
    value: Option<Cow<'i, str>>,
    /// Set once the first `<value>` closed: later values are ignored.
    value_done: bool,
}

/// Walks the inside of `<pubsub>` (whose start tag, named `pubsub_name`, was just read) and
/// extracts the push: with [`quick`] when the payload keeps to the plain shape servers send,
/// otherwise with quick-xml. Both feed the same [`PubsubWalk`], so they agree by construction.
fn read_pubsub(
    reader: &mut Reader<&[u8]>,
    scopes: &mut Scopes,
    stanza: &[u8],
    pubsub_name: &[u8],
) -> Result<Payload, Malformed> {
    let decoder = reader.decoder();
    let mark = scopes.mark();
    let rest = usize::try_from(reader.buffer_position())
        .ok()
        .and_then(|at| at.checked_sub(1).map(|before| (before, at)))
        .filter(|&(before, _)| stanza.get(before) == Some(&b'>'))
        .and_then(|(_, at)| stanza.get(at..));
    if let Some(rest) = rest {
        if let Some(payload) = quick::read_pubsub(rest, pubsub_name, scopes, decoder) {
            return Ok(payload);
        }
        scopes.reset(mark);
    }
    read_pubsub_events(reader, scopes, decoder)
}

/// The general walk over quick-xml's events.
fn read_pubsub_events(
    reader: &mut Reader<&[u8]>,
    scopes: &mut Scopes,
    decoder: quick_xml::encoding::Decoder,
) -> Result<Payload, Malformed> {
    let mut walk = PubsubWalk::default();
    loop {
        match reader.read_event()? {
            Event::Start(start) => {
                let ns = scopes.enter(&start)?;
                walk.start(ns, &start, decoder)?;
            }
            Event::Empty(start) => {
                let ns = scopes.enter(&start)?;
                scopes.leave();
                walk.empty(ns, &start, decoder)?;
            }
            Event::End(_) => {
                if walk.end() {
                    break; // </pubsub>
                }
                scopes.leave();
            }
            Event::Text(text) => {
                if walk.collecting() {
                    walk.text(text.xml_content()?);
                }
            }
            Event::CData(data) => {
                if walk.collecting() {
                    walk.text(data.decode()?);
                }
            }
            Event::GeneralRef(entity) => {
                if walk.collecting() {
                    if let Some(ch) = entity.resolve_char_ref()? {
                        let mut buf = [0u8; 4];
                        walk.text(Cow::Owned(ch.encode_utf8(&mut buf).to_owned()));
                    } else {
                        let name = entity.decode()?;
                        let resolved = resolve_predefined_entity(&name).ok_or(Malformed)?;
                        walk.text(Cow::Borrowed(resolved));
                    }
                }
            }
            Event::Comment(_) | Event::PI(_) => {}
            Event::Eof | Event::Decl(_) | Event::DocType(_) => return Err(Malformed),
        }
    }
    Ok(walk.finish())
}

/// Where the walk over a pubsub payload is, and what it has found so far.
#[derive(Default)]
struct PubsubWalk<'i> {
    token: Option<String>,
    push: PushRequest,
    seen_publish: bool,
    /// Depth below <pubsub>: its children are at depth 1.
    depth: usize,
    /// (section, depth of its element): which pubsub child we are in.
    section: Option<(Form, usize)>,
    /// (form kind, depth of the <x> element).
    form: Option<(Form, usize)>,
    field: Option<OpenField<'i>>,
    /// Depth of the <value> element whose text is being collected.
    value_depth: Option<usize>,
}

impl<'i> PubsubWalk<'i> {
    /// An element opened (in namespace `ns`).
    fn start(
        &mut self,
        ns: Ns,
        start: &BytesStart<'_>,
        decoder: quick_xml::encoding::Decoder,
    ) -> Result<(), Malformed> {
        self.depth += 1;
        open_element(
            ns,
            start,
            self.depth,
            decoder,
            &mut self.section,
            &mut self.form,
            &mut self.field,
            &mut self.value_depth,
            &mut self.token,
            &mut self.seen_publish,
        )
    }

    /// An empty element: a start immediately followed by its end.
    fn empty(
        &mut self,
        ns: Ns,
        start: &BytesStart<'_>,
        decoder: quick_xml::encoding::Decoder,
    ) -> Result<(), Malformed> {
        let d = self.depth + 1;
        let mut empty_value = None;
        open_element(
            ns,
            start,
            d,
            decoder,
            &mut self.section,
            &mut self.form,
            &mut self.field,
            &mut empty_value,
            &mut self.token,
            &mut self.seen_publish,
        )?;
        close_element(
            d,
            &mut self.section,
            &mut self.form,
            &mut self.field,
            &mut None,
            &mut self.push,
        );
        Ok(())
    }

    /// An element closed; `true` when it was `<pubsub>` itself.
    fn end(&mut self) -> bool {
        if self.depth == 0 {
            return true;
        }
        close_element(
            self.depth,
            &mut self.section,
            &mut self.form,
            &mut self.field,
            &mut self.value_depth,
            &mut self.push,
        );
        self.depth -= 1;
        false
    }

    /// Whether character data is being collected (inside a field's first `<value>`).
    fn collecting(&self) -> bool {
        self.value_depth.is_some() && self.field.is_some()
    }

    /// A piece of character data.
    fn text(&mut self, piece: Cow<'i, str>) {
        if let (Some(_), Some(f)) = (self.value_depth, self.field.as_mut()) {
            append(&mut f.value, piece);
        }
    }

    /// The payload, once `</pubsub>` was read.
    fn finish(self) -> Payload {
        if !self.seen_publish {
            return Payload::InvalidPush(NO_PUBLISH);
        }
        let Some(token) = self.token else {
            return Payload::InvalidPush("the publish element has no node (device token)");
        };
        if let Some(reason) = token_problem(&token) {
            return Payload::InvalidPush(reason);
        }
        let mut push = self.push;
        push.token = token;
        Payload::Push(push)
    }
}

/// Why a device token cannot be used, if it cannot.
fn token_problem(token: &str) -> Option<&'static str> {
    if token.is_empty() {
        Some("the device token (publish node) is empty")
    } else if token.len() > MAX_TOKEN_LEN {
        Some("the device token is longer than 4096 bytes")
    } else if !token.bytes().all(|b| b.is_ascii_graphic())
        && token.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        // Printable ASCII (every real token) is neither; only other tokens are decoded.
        Some("the device token contains whitespace or control characters")
    } else {
        None
    }
}

/// Updates the walk's context for an element opening at `depth` below `<pubsub>`.
#[allow(clippy::too_many_arguments)]
fn open_element<'i>(
    ns: Ns,
    start: &BytesStart<'_>,
    depth: usize,
    decoder: quick_xml::encoding::Decoder,
    section: &mut Option<(Form, usize)>,
    form: &mut Option<(Form, usize)>,
    field: &mut Option<OpenField<'i>>,
    value_depth: &mut Option<usize>,
    token: &mut Option<String>,
    seen_publish: &mut bool,
) -> Result<(), Malformed> {
    let local = start.local_name();
    let local = local.as_ref();
    if depth == 1 {
        if ns != Ns::Pubsub {
            return Ok(());
        }
        match local {
            b"publish" if !*seen_publish => {
                *seen_publish = true;
                *section = Some((Form::Summary, depth));
                *token = attribute(start, b"node", decoder)?.map(Cow::into_owned);
            }
            b"publish-options" => *section = Some((Form::Options, depth)),
            _ => {}
        }
        return Ok(());
    }
    let Some((kind, _)) = *section else {
        return Ok(());
    };
    match (form.is_some(), field.is_some(), local) {
        (false, _, b"x") if ns == Ns::DataForms => *form = Some((kind, depth)),
        (true, false, b"field") if ns == Ns::DataForms => {
            if let (Some(var), Some((form_kind, _))) = (attribute(start, b"var", decoder)?, *form) {
                *field = Some(OpenField {
                    var: FieldVar::classify(form_kind, var),
                    depth,
                    value: None,
                    value_done: false,
                });
            }
        }
        (true, true, b"value") if ns == Ns::DataForms => {
            if let Some(f) = field.as_ref() {
                if !f.value_done && depth == f.depth + 1 {
                    *value_depth = Some(depth);
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Updates the walk's context for the element closing at `depth`, storing finished fields.
fn close_element<'i>(
    depth: usize,
    section: &mut Option<(Form, usize)>,
    form: &mut Option<(Form, usize)>,
    field: &mut Option<OpenField<'i>>,
    value_depth: &mut Option<usize>,
    push: &mut PushRequest,
) {
    if *value_depth == Some(depth) {
        *value_depth = None;
        if let Some(f) = field.as_mut() {
            f.value_done = true;
        }
        return;
    }
    if field.as_ref().is_some_and(|f| f.depth == depth) {
        if let Some(f) = field.take() {
            store_field(f, push);
        }
        return;
    }
    if form.is_some_and(|(_, d)| d == depth) {
        *form = None;
        return;
    }
    if section.is_some_and(|(_, d)| d == depth) {
        *section = None;
    }
}

/// Puts one finished form field where it belongs.
fn store_field(field: OpenField<'_>, push: &mut PushRequest) {
    let value = field.value.map(trim);
    let non_empty = |v: Option<Cow<'_, str>>| v.filter(|v| !v.is_empty()).map(Cow::into_owned);
    let summary = &mut push.summary;
    match field.var {
        FieldVar::MessageCount => summary.message_count = non_empty(value),
        FieldVar::LastMessageSender => summary.last_message_sender = non_empty(value),
        FieldVar::LastMessageBody => summary.last_message_body = non_empty(value),
        FieldVar::PushModule => {
            if push.module.is_none() {
                push.module = non_empty(value);
            }
        }
        FieldVar::Other(var) => {
            let value = value.map(Cow::into_owned).unwrap_or_default();
            push.options.push((var, value));
        }
        FieldVar::Skipped => {}
    }
}

/// Reads one unprefixed attribute, unescaped (borrowed unless unescaping changed it); the
/// first occurrence wins.
fn attribute<'s>(
    start: &'s BytesStart<'_>,
    name: &[u8],
    decoder: quick_xml::encoding::Decoder,
) -> Result<Option<Cow<'s, str>>, Malformed> {
    for attr in start.attributes().with_checks(false) {
        let attr = attr?;
        if attr.key.as_ref() == name {
            return Ok(Some(attr.decode_and_unescape_value(decoder)?));
        }
    }
    Ok(None)
}

/// Appends a piece of character data to a value being collected.
fn append<'i>(value: &mut Option<Cow<'i, str>>, piece: Cow<'i, str>) {
    match value {
        None => *value = Some(piece),
        Some(existing) => existing.to_mut().push_str(&piece),
    }
}

/// Trims XML whitespace around a value without copying when it was borrowed.
fn trim(value: Cow<'_, str>) -> Cow<'_, str> {
    let is_xml_space = |c: char| matches!(c, ' ' | '\t' | '\r' | '\n');
    match value {
        Cow::Borrowed(s) => Cow::Borrowed(s.trim_matches(is_xml_space)),
        Cow::Owned(s) => {
            let trimmed = s.trim_matches(is_xml_space);
            if trimmed.len() == s.len() {
                Cow::Owned(s)
            } else {
                Cow::Owned(trimmed.to_owned())
            }
        }
    }
}
