//! What is inside a stanza: one top-level element's bytes become a [`Request`], and a
//! [`Reply`] becomes reply bytes.
//!
//! Parsing streams over the stanza with quick-xml's reader and extracts only what the dispatcher
//! needs (the IQ header, the device token, the publish-options and summary forms; for the rare
//! ad-hoc command, its node and form, in `command`). No tree is
//! built: the push path must cost a microsecond or two per stanza, and the fields we care about
//! are few and sit at well-known places. Namespaces are resolved by `Scopes`, which only looks
//! at the attributes of elements that declare one and only tells apart the few namespaces matched
//! here.
//!
//! Parsing is lenient where real servers differ (form `type`, labels, empty fields, whitespace,
//! comments, unknown fields and attributes, prefixed namespaces) and strict only where a push
//! could go wrong (the device token).

mod attributes;
mod command;
mod framed;
mod message;
mod message_reply;
mod quick;
mod reply;
mod scopes;
mod tag;
mod tigase;

use std::borrow::Cow;

use fpush_traits::bytes::every_byte;
use fpush_traits::PushSummary;
use quick_xml::encoding::Decoder;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

pub use command::AdHocCommand;
pub use framed::frame_push;
pub use message::Push2Request;
pub use message_reply::write_message_error;
pub use reply::{write_reply, CommandItem, CommandStatus, Condition, ErrorType, Reply};
pub use tigase::{EncryptedElement, TigaseParts};

use attributes::{attributes, unescaped_value};
use scopes::{Ns, Scopes};

use crate::markup::{is_xml_space_char, split_name};

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

/// At most this many publish-options fields are passed on with a push (besides `pushModule`).
pub const MAX_OPTIONS: usize = 16;

/// Everything a push IQ told us.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushRequest {
    /// The device token: the `node` of the `publish` element.
    pub token: String,
    /// The publish-options field `pushModule`, when present and non-empty.
    pub module: Option<String>,
    /// The summary form the server attached to the notification.
    pub summary: PushSummary,
    /// Every other publish-options field (`var`, first value), in document order, up to
    /// [`MAX_OPTIONS`] and the first `secret`. `FORM_TYPE` and `pushModule` are not repeated here.
    pub options: Vec<(String, String)>,
    /// The Tigase extensions of the notification, when it carries any (boxed: most pushes
    /// carry none).
    pub tigase: Option<Box<TigaseParts>>,
}

/// What one stanza asks of us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A usable push IQ.
    Push { iq: IqHeader, push: PushRequest },
    /// A set IQ with a pubsub payload (or a get/set IQ that is not well-formed) that cannot be
    /// delivered: answered `modify`/`bad-request` with `reason` as the text.
    InvalidPush { iq: IqHeader, reason: String },
    /// A usable push2 `<message>`; `message` is its addressing.
    Push2 {
        message: IqHeader,
        push: Push2Request,
    },
    /// A push2 `<message>` that cannot be delivered: answered with a message error.
    InvalidPush2 { message: IqHeader, reason: String },
    /// A disco#info query.
    DiscoInfo { iq: IqHeader },
    /// A disco#items query for the node of ad-hoc commands: which commands are served.
    CommandList { iq: IqHeader },
    /// An XEP-0050 ad-hoc command (a set IQ).
    Command { iq: IqHeader, command: AdHocCommand },
    /// An XEP-0199 ping.
    Ping { iq: IqHeader },
    /// Any other get/set IQ: answered `cancel`/`service-unavailable`.
    Unsupported { iq: IqHeader },
    /// An IQ of type `result` or `error` (answers to our keepalive pings among them): never
    /// answered, since answering could start a loop.
    Response,
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

impl IqType {
    fn of(value: &[u8]) -> Option<Self> {
        match value {
            b"get" => Some(IqType::Get),
            b"set" => Some(IqType::Set),
            b"result" | b"error" => Some(IqType::Response),
            _ => None,
        }
    }
}

/// What the start tag of an IQ that can be told apart says.
enum IqStart {
    /// `result` or `error`: nothing of it is kept.
    Response,
    /// `get` or `set`, with what a reply needs and whether the element was empty (`<iq/>`).
    Request {
        kind: IqType,
        header: IqHeader,
        empty: bool,
    },
}

/// Turns one complete top-level element into a [`Request`].
///
/// Never fails: what cannot be understood is either answered with an error (when the IQ header
/// could be read) or ignored.
pub fn parse(stanza: &[u8]) -> Request {
    // A push that reached the framer in pieces (so was not read while framed) is read the same
    // way now: it costs a fraction of the way below, and gives the same request.
    if stanza.starts_with(b"<iq") {
        if let Some((len, request)) = frame_push(stanza, usize::MAX) {
            if len == stanza.len() {
                return request;
            }
        }
    }
    if let Some(push2) = message::parse(stanza) {
        return push2;
    }
    parse_with(stanza, Lexer::Quick)
}

/// The IQ in `stanza` read by quick-xml's general reader alone, none of the fast paths: what
/// [`parse`] must answer for every IQ (tests and the `request_parse` fuzz target compare them).
pub fn parse_general(stanza: &[u8]) -> Request {
    parse_with(stanza, Lexer::General)
}

/// Which lexer reads a pubsub payload: tests compare the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lexer {
    /// [`quick`] first, quick-xml when it gives up.
    Quick,
    /// quick-xml only.
    General,
}

fn parse_with(stanza: &[u8], lexer: Lexer) -> Request {
    let mut reader = Reader::from_reader(stanza);
    let mut scopes = Scopes::default();
    let (kind, iq, empty) = match read_iq_start(&mut reader, &mut scopes) {
        Some(IqStart::Request {
            kind,
            header,
            empty,
        }) => (kind, header, empty),
        Some(IqStart::Response) => return Request::Response,
        None => return Request::Ignored,
    };
    if empty {
        return Request::Unsupported { iq };
    }
    request_of(
        iq,
        read_payload(&mut reader, &mut scopes, stanza, lexer, kind),
    )
}

/// The request a get/set IQ with this payload makes.
fn request_of(iq: IqHeader, payload: Result<Payload, Malformed>) -> Request {
    match payload {
        Ok(Payload::Push(push)) => Request::Push { iq, push },
        Ok(Payload::InvalidPush(reason)) => Request::InvalidPush {
            iq,
            reason: reason.to_owned(),
        },
        Ok(Payload::DiscoInfo) => Request::DiscoInfo { iq },
        Ok(Payload::CommandList) => Request::CommandList { iq },
        Ok(Payload::Command(command)) => Request::Command { iq, command },
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
        IqStart::Request { header, .. } => Some(header),
        IqStart::Response => None,
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
    CommandList,
    Command(AdHocCommand),
    Ping,
    Other,
}

/// Reads up to the stanza's start tag. `None` for anything that is not an IQ of a usable type
/// with an id, or a get/set IQ without a `from`: those cannot be answered.
fn read_iq_start(reader: &mut Reader<&[u8]>, scopes: &mut Scopes) -> Option<IqStart> {
    let (start, empty) = first_element(reader)?;
    iq_start(&start, empty, reader.decoder(), scopes)
}

/// What the stanza's start tag says, when it is an IQ (see [`read_iq_start`]).
fn iq_start(
    start: &BytesStart<'_>,
    empty: bool,
    decoder: quick_xml::encoding::Decoder,
    scopes: &mut Scopes,
) -> Option<IqStart> {
    if start.local_name().as_ref() != b"iq" {
        // Messages and presence are never answered; neither is anything else at the top level.
        return None;
    }
    // The IQ may declare prefixes its payload uses.
    scopes.enter(start).ok()?;
    IqAttributes::read(start, decoder)?.into_start(empty)
}

/// [`iq_start`] for a start tag read in one pass.
fn iq_start_of_tag(tag: &tag::Tag<'_>, scopes: &mut Scopes) -> Option<IqStart> {
    if tag.local_name() != b"iq" {
        return None;
    }
    scopes.enter_tag(tag).ok()?;
    IqAttributes::of_tag(tag)?.into_start(tag.is_empty())
}

/// The stanza's start tag, and whether the element is empty.
fn first_element<'i>(reader: &mut Reader<&'i [u8]>) -> Option<(BytesStart<'i>, bool)> {
    loop {
        match reader.read_event() {
            Ok(Event::Start(start)) => return Some((start, false)),
            Ok(Event::Empty(start)) => return Some((start, true)),
            Ok(Event::Text(_) | Event::Comment(_) | Event::Decl(_) | Event::PI(_)) => continue,
            Ok(_) | Err(_) => return None,
        }
    }
}

/// The attributes of an IQ start tag that decide how it is answered, unescaped but not yet
/// copied: a response keeps none of them.
#[derive(Default)]
struct IqAttributes<'a> {
    kind: Option<IqType>,
    id: Option<Cow<'a, str>>,
    from: Option<Cow<'a, str>>,
    to: Option<Cow<'a, str>>,
}

impl<'a> IqAttributes<'a> {
    /// `None` when an attribute cannot be read or unescaped. The first `id`, `from` and `to`
    /// count, and the last `type`.
    fn read(start: &'a BytesStart<'_>, decoder: quick_xml::encoding::Decoder) -> Option<Self> {
        let mut attrs = IqAttributes::default();
        for attr in attributes(start) {
            let attr = attr.ok()?;
            attrs.take(attr.key.as_ref(), &attr.value, || {
                unescaped_value(&attr, decoder).ok()
            })?;
        }
        Some(attrs)
    }

    /// [`IqAttributes::read`] for a start tag read in one pass.
    fn of_tag(tag: &tag::Tag<'a>) -> Option<Self> {
        let mut attrs = IqAttributes::default();
        for &(key, value) in tag.attributes() {
            attrs.take(key, value.as_bytes(), || tag.unescaped(value).ok())?;
        }
        Some(attrs)
    }

    /// Keeps what the attribute `key` with the raw value `raw` says, if it is one of ours;
    /// `None` when a value to keep cannot be unescaped.
    fn take(
        &mut self,
        key: &[u8],
        raw: &[u8],
        unescape: impl FnOnce() -> Option<Cow<'a, str>>,
    ) -> Option<()> {
        let slot = match key {
            b"type" => {
                self.kind = IqType::of(raw);
                return Some(());
            }
            b"id" => &mut self.id,
            b"from" => &mut self.from,
            b"to" => &mut self.to,
            _ => return Some(()),
        };
        if slot.is_none() {
            *slot = Some(unescape()?);
        }
        Some(())
    }

    /// What the IQ is, if it can be told apart (and, for get/set, answered).
    fn into_start(self, empty: bool) -> Option<IqStart> {
        let Some(kind) = self.kind else {
            log::debug!("ignoring an IQ without a usable type");
            return None;
        };
        let Some(id) = self.id else {
            log::debug!("ignoring an IQ without an id: a reply could not be matched to it");
            return None;
        };
        if kind == IqType::Response {
            return Some(IqStart::Response);
        }
        // The server stamps `from` on everything it routes to a component; without it (or with
        // an empty one) a reply would have no destination.
        let Some(from) = self.from.filter(|from| !from.is_empty()) else {
            log::debug!("ignoring an IQ without a from address (id {id:?})");
            return None;
        };
        let header = IqHeader {
            id: id.into_owned(),
            from: from.into_owned(),
            to: self.to.map(Cow::into_owned).unwrap_or_default(),
        };
        Some(IqStart::Request {
            kind,
            header,
            empty,
        })
    }
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
        let (_, local) = split_name(start.name().into_inner());
        let payload = match (kind, local) {
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
            (IqType::Get, b"query") if ns == Ns::DiscoItems => {
                let node = attribute(&start, b"node", reader.decoder())?;
                match node.as_deref().map(str::as_bytes) {
                    Some(scopes::NS_COMMANDS) => Payload::CommandList,
                    _ => Payload::Other,
                }
            }
            (IqType::Set, b"command") if ns == Ns::Commands => {
                return command::read_command(reader, scopes, &start, empty);
            }
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
        let quick = quick::read_pubsub(rest, pubsub_name, scopes, decoder, usize::MAX);
        if let Some((payload, _)) = quick {
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
                    walk.text(text.xml10_content()?);
                }
            }
            Event::CData(data) => {
                if walk.collecting() {
                    walk.text(data.xml10_content()?);
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
    /// Depth below `<pubsub>`: its children are at depth 1.
    depth: usize,
    /// (section, depth of its element): which pubsub child we are in.
    section: Option<(Form, usize)>,
    /// (form kind, depth of the `<x>` element).
    form: Option<(Form, usize)>,
    field: Option<OpenField<'i>>,
    /// Depth of the `<value>` element whose text is being collected.
    value_depth: Option<usize>,
    /// The Tigase extension element whose text is being collected.
    tigase_open: Option<tigase::Open>,
}

impl<'i> PubsubWalk<'i> {
    /// An element opened (in namespace `ns`).
    fn start(
        &mut self,
        ns: Ns,
        start: &impl StartTag,
        decoder: quick_xml::encoding::Decoder,
    ) -> Result<(), Malformed> {
        self.depth += 1;
        if self.open_element(ns, start, self.depth, decoder)? {
            self.value_depth = Some(self.depth);
        }
        Ok(())
    }

    /// An empty element: a start immediately followed by its end. An empty `<value/>` holds
    /// no text and leaves the field's first value to come.
    fn empty(
        &mut self,
        ns: Ns,
        start: &impl StartTag,
        decoder: quick_xml::encoding::Decoder,
    ) -> Result<(), Malformed> {
        let depth = self.depth + 1;
        self.open_element(ns, start, depth, decoder)?;
        self.close_element(depth);
        Ok(())
    }

    /// An element closed; `true` when it was `<pubsub>` itself.
    fn end(&mut self) -> bool {
        if self.depth == 0 {
            return true;
        }
        self.close_element(self.depth);
        self.depth -= 1;
        false
    }

    /// Whether character data is being collected (inside a field's first `<value>`).
    fn collecting(&self) -> bool {
        self.value_depth.is_some() && (self.field.is_some() || self.tigase_open.is_some())
    }

    /// A piece of character data.
    fn text(&mut self, piece: Cow<'i, str>) {
        if let (Some(_), Some(f)) = (self.value_depth, self.field.as_mut()) {
            append(&mut f.value, piece);
        } else if self.value_depth.is_some() {
            self.tigase_text(&piece);
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
    } else if !all_ascii_graphic(token.as_bytes())
        && token.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        // Printable ASCII (every real token) is neither; only other tokens are decoded.
        Some("the device token contains whitespace or control characters")
    } else {
        None
    }
}

/// Whether every byte is printable ASCII (`!` to `~`), as every real token is.
fn all_ascii_graphic(bytes: &[u8]) -> bool {
    every_byte(bytes, |b| b.wrapping_sub(b'!') <= b'~' - b'!')
}

impl<'i> PubsubWalk<'i> {
    /// Updates the walk's context for an element opening at `depth` below `<pubsub>`. `true`
    /// when it is the `<value>` whose text is the open field's value.
    fn open_element(
        &mut self,
        ns: Ns,
        start: &impl StartTag,
        depth: usize,
        decoder: quick_xml::encoding::Decoder,
    ) -> Result<bool, Malformed> {
        let local = start.local();
        if depth == 1 {
            if ns == Ns::Pubsub {
                self.open_section(local, start, decoder)?;
            }
            return Ok(false);
        }
        let Some((kind, _)) = self.section else {
            return Ok(false);
        };
        if ns != Ns::DataForms {
            let outside_forms = self.form.is_none() && self.field.is_none();
            if matches!(
                ns,
                Ns::TigaseEncrypt | Ns::TigasePriority | Ns::TigaseMucOffline
            ) && kind == Form::Summary
                && outside_forms
            {
                return self.open_tigase(ns, start, decoder);
            }
            return Ok(false);
        }
        match (self.form, self.field.as_ref(), local) {
            (None, _, b"x") => self.form = Some((kind, depth)),
            (Some((form_kind, _)), None, b"field") => {
                if let Some(var) = start.attribute(b"var", decoder)? {
                    self.field = Some(OpenField {
                        var: FieldVar::classify(form_kind, var),
                        depth,
                        value: None,
                        value_done: false,
                    });
                }
            }
            (Some(_), Some(f), b"value") => return Ok(!f.value_done && depth == f.depth + 1),
            _ => {}
        }
        Ok(false)
    }

    /// A child of `<pubsub>` opened: the first `publish` (with the token) or `publish-options`.
    fn open_section(
        &mut self,
        local: &[u8],
        start: &impl StartTag,
        decoder: quick_xml::encoding::Decoder,
    ) -> Result<(), Malformed> {
        match local {
            b"publish" if !self.seen_publish => {
                self.seen_publish = true;
                self.section = Some((Form::Summary, 1));
                self.token = start.attribute(b"node", decoder)?.map(Cow::into_owned);
            }
            b"publish-options" => self.section = Some((Form::Options, 1)),
            _ => {}
        }
        Ok(())
    }

    /// Updates the walk's context for the element closing at `depth`, storing finished fields.
    fn close_element(&mut self, depth: usize) {
        if self.value_depth == Some(depth) {
            self.value_depth = None;
            self.tigase_open = None;
            if let Some(f) = self.field.as_mut() {
                f.value_done = true;
            }
            return;
        }
        if self.field.as_ref().is_some_and(|f| f.depth == depth) {
            if let Some(f) = self.field.take() {
                store_field(f, &mut self.push);
            }
            return;
        }
        if self.form.is_some_and(|(_, d)| d == depth) {
            self.form = None;
            return;
        }
        if self.section.is_some_and(|(_, d)| d == depth) {
            self.section = None;
        }
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
            if keeps_option(&push.options, &var) {
                let value = value.map(Cow::into_owned).unwrap_or_default();
                push.options.push((var, value));
            }
        }
        FieldVar::Skipped => {}
    }
}

/// Whether a publish-options field is kept: the first [`MAX_OPTIONS`] (all a push passes on)
/// and, beyond them, the first `secret` (it decides the door). A stanza of thousands of tiny
/// fields would otherwise wait in the inbound queue as several times its size in allocations.
fn keeps_option(options: &[(String, String)], var: &str) -> bool {
    options.len() < MAX_OPTIONS
        || var == "secret" && !options.iter().any(|(kept, _)| kept == "secret")
}

/// A start tag as the walk over a pubsub payload reads it: read in one pass ([`tag::Tag`]) or
/// by quick-xml.
trait StartTag {
    /// The name's local part (after its first `:`).
    fn local(&self) -> &[u8];
    /// The first attribute named `name`, unescaped (see [`attribute`]).
    fn attribute(&self, name: &[u8], decoder: Decoder) -> Result<Option<Cow<'_, str>>, Malformed>;
}

impl StartTag for BytesStart<'_> {
    fn local(&self) -> &[u8] {
        split_name(self.name().into_inner()).1
    }

    fn attribute(&self, name: &[u8], decoder: Decoder) -> Result<Option<Cow<'_, str>>, Malformed> {
        attribute(self, name, decoder)
    }
}

impl StartTag for tag::Tag<'_> {
    fn local(&self) -> &[u8] {
        self.local_name()
    }

    fn attribute(&self, name: &[u8], _: Decoder) -> Result<Option<Cow<'_, str>>, Malformed> {
        tag::Tag::attribute(self, name)
    }
}

/// Reads one unprefixed attribute, unescaped (borrowed unless unescaping changed it); the
/// first occurrence wins.
fn attribute<'s>(
    start: &'s BytesStart<'_>,
    name: &[u8],
    decoder: quick_xml::encoding::Decoder,
) -> Result<Option<Cow<'s, str>>, Malformed> {
    for attr in attributes(start) {
        let attr = attr?;
        if attr.key.as_ref() == name {
            return Ok(Some(unescaped_value(&attr, decoder)?));
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
    match value {
        Cow::Borrowed(s) => Cow::Borrowed(s.trim_matches(is_xml_space_char)),
        Cow::Owned(s) => {
            let trimmed = s.trim_matches(is_xml_space_char);
            if trimmed.len() == s.len() {
                Cow::Owned(s)
            } else {
                Cow::Owned(trimmed.to_owned())
            }
        }
    }
}

/// Every string made of up to `most` of `pieces` (each once): the awkward inputs the readers'
/// tests hold two readers to.
#[cfg(test)]
fn strings_of_pieces(pieces: &[&str], most: usize) -> Vec<String> {
    let mut all = vec![String::new()];
    let mut last = all.clone();
    for _ in 0..most {
        last = last
            .iter()
            .flat_map(|s| pieces.iter().map(move |p| format!("{s}{p}")))
            .collect();
        all.extend_from_slice(&last);
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_ascii_is_told_apart_byte_by_byte() {
        for b in 0..=u8::MAX {
            assert_eq!(all_ascii_graphic(&[b'a', b]), b.is_ascii_graphic(), "{b}");
        }
        assert!(all_ascii_graphic(b""));
        assert_eq!(
            token_problem("a\u{a0}b"),
            Some("the device token contains whitespace or control characters")
        );
        assert_eq!(token_problem("\u{e9}t\u{e9}"), None);
    }
}
