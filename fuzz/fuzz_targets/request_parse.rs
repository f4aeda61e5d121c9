//! The stanza parser on arbitrary bytes: `request::parse` and `request::parse_oversized` must
//! never panic, and whatever IQ they accept must be answerable with a reply that is well-formed
//! XML, carries the request's id back, and is never itself answered (no reply loops). What
//! `request::parse` reads through its fast paths, quick-xml's general reader must read the same
//! (`request::parse_general`). The bytes are also read as a start tag's attributes: every
//! attribute the plain reader (`markup::next_plain_attribute`) reads, quick-xml must read the
//! same.

#![no_main]

use fpush::markup::{next_plain_attribute, PlainAttribute};
use fpush::request::{self, Condition, ErrorType, IqHeader, Reply, Request};
use libfuzzer_sys::fuzz_target;
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

fuzz_target!(|data: &[u8]| {
    check_plain_attributes(data);
    if let Some(iq) = request::parse_oversized(data) {
        check_replies_to(&iq);
    }
    let parsed = request::parse(data);
    // Push2 messages have a reader of their own; every other stanza is read as an IQ.
    if !matches!(parsed, Request::Push2 { .. } | Request::InvalidPush2 { .. }) {
        assert_eq!(
            parsed,
            request::parse_general(data),
            "{:?}",
            String::from_utf8_lossy(data)
        );
    }
    let iq = match parsed {
        Request::Push { iq, push } => {
            assert!(!push.token.is_empty() && push.token.len() <= request::MAX_TOKEN_LEN);
            iq
        }
        Request::InvalidPush { iq, .. }
        | Request::DiscoInfo { iq }
        | Request::CommandList { iq }
        | Request::Command { iq, .. }
        | Request::Ping { iq }
        | Request::Unsupported { iq } => iq,
        Request::Push2 { message, .. } | Request::InvalidPush2 { message, .. } => {
            return check_message_error_to(&message);
        }
        Request::Response | Request::Ignored => return,
    };
    check_replies_to(&iq);
});

/// The plain attribute reader and quick-xml's agree on every attribute the plain one reads,
/// and on where the attributes end.
fn check_plain_attributes(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let start = BytesStart::from_content(format!("e {text}"), 1);
    let raw = start.attributes_raw();
    let mut general = start.attributes();
    general.with_checks(false);
    let mut at = 0;
    loop {
        match next_plain_attribute(raw, at) {
            PlainAttribute::Found { key, value, next } => {
                let theirs = general.next().and_then(Result::ok);
                let theirs = theirs.as_ref().map(|a| (a.key.as_ref(), a.value.as_ref()));
                assert_eq!(theirs, Some((key, value)), "{text:?}");
                at = next;
            }
            PlainAttribute::End => {
                assert!(general.next().is_none(), "{text:?}");
                return;
            }
            PlainAttribute::Unusual => return,
        }
    }
}

/// A push2 message's error reply is well-formed, carries its id, and is never answered.
fn check_message_error_to(message: &IqHeader) {
    assert!(
        !message.from.is_empty(),
        "a message without from was accepted"
    );
    let mut out = Vec::new();
    let text = Some("x < y & 'z'");
    request::write_message_error(
        message,
        ErrorType::Cancel,
        Condition::ItemNotFound,
        text,
        &mut out,
    );
    if !message.id.is_empty() {
        assert_eq!(
            well_formed_id(&out),
            message.id,
            "the error must carry the id"
        );
    }
    assert_eq!(
        request::parse(&out),
        Request::Ignored,
        "an error message was answerable"
    );
}

/// Every reply shape to `iq` is well-formed, carries `iq.id`, and fpush reads it back as a
/// response, which it never answers.
fn check_replies_to(iq: &IqHeader) {
    assert!(
        !iq.from.is_empty(),
        "an IQ without from was accepted: {iq:?}"
    );
    let replies = [
        Reply::Result,
        Reply::DiscoInfo,
        Reply::Error {
            kind: ErrorType::Wait,
            condition: Condition::ResourceConstraint,
            text: Some("x < y & 'z'"),
        },
    ];
    for reply in replies {
        let mut out = Vec::new();
        request::write_reply(iq, &reply, &mut out);
        assert_eq!(
            well_formed_id(&out),
            iq.id,
            "a reply must carry the request's id"
        );
        match request::parse(&out) {
            Request::Response => {}
            other => panic!(
                "a reply was read back as {other:?}: {}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
}

/// Checks that `xml` is one well-formed element and returns its `id` attribute, unescaped.
fn well_formed_id(xml: &[u8]) -> String {
    let text = std::str::from_utf8(xml).expect("replies are UTF-8");
    let mut reader = Reader::from_str(text);
    let mut depth = 0usize;
    let mut id = None;
    loop {
        let event = match reader.read_event() {
            Ok(Event::Eof) => break,
            Ok(event) => event,
            Err(e) => panic!("reply not well-formed ({e}): {text}"),
        };
        match &event {
            Event::Start(start) | Event::Empty(start) if id.is_none() => {
                let attr = start.try_get_attribute("id").expect("readable attributes");
                let value = attr.expect("replies carry an id").unescape_value();
                id = Some(value.expect("an id that unescapes").into_owned());
            }
            _ => {}
        }
        match event {
            Event::Start(_) => depth += 1,
            Event::End(_) => depth -= 1,
            _ => {}
        }
    }
    assert_eq!(depth, 0, "unbalanced reply: {text}");
    id.expect("a reply is an element")
}
