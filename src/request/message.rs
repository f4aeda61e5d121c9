//! The Push 2.0 `<message>` (`urn:xmpp:push2:0`, Prosody's mod_push2): where to deliver (the
//! `client`) and what (priority, VoIP flag, the RFC 8291 payload, the VAPID token), read into a
//! [`Push2Request`].
//!
//! Only a message whose first child is a push2 `notification` is a push; every other message
//! (chat, error messages among them) is ignored, since answering one could start a loop.

use std::borrow::Cow;

use fpush_traits::Priority;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use super::attributes::{attributes, unescaped_value};
use super::{IqHeader, Request};

/// The push2 namespace.
pub const NS_PUSH2: &[u8] = b"urn:xmpp:push2:0";
/// The namespace of the encrypted payload (XEP-0420 over RFC 8291).
const NS_RFC8291: &[u8] = b"urn:xmpp:sce:rfc8291:0";

/// Longest `client` kept: endpoint URLs are a few hundred bytes.
pub const MAX_CLIENT_BYTES: usize = 2048;
/// Longest base64 payload kept (a 4 KiB record is 5.5 KiB of base64).
pub const MAX_PAYLOAD_BASE64: usize = 8192;
/// Longest VAPID token or key kept.
pub const MAX_JWT_BYTES: usize = 2048;

/// Everything a push2 notification told us. Text is unescaped and trimmed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Push2Request {
    /// Where to deliver: an APNS device URL or a Web Push endpoint.
    pub client: String,
    pub priority: Option<Priority>,
    /// `<voip/>` was present.
    pub voip: bool,
    /// The RFC 8291 payload as received (base64).
    pub payload: Option<String>,
    /// The VAPID token the user's server signed.
    pub jwt: Option<String>,
    /// The `key` attribute of `jwt`: the VAPID public key, standard base64.
    pub jwt_key: Option<String>,
}

/// Reads a push2 message, or `None` when the stanza is not a `<message>` (so the IQ parser
/// takes it). Costs a prefix check for everything else.
pub(super) fn parse(stanza: &[u8]) -> Option<Request> {
    let start = stanza.iter().position(|b| !b.is_ascii_whitespace())?;
    let rest = &stanza[start..];
    if !rest.starts_with(b"<message")
        || !matches!(
            rest.get(8),
            Some(b' ' | b'>' | b'/' | b'\t' | b'\n' | b'\r')
        )
    {
        return None;
    }
    let mut reader = Reader::from_reader(stanza);
    let Some((head, empty)) = read_start(&mut reader) else {
        return Some(Request::Ignored);
    };
    if empty {
        return Some(Request::Ignored);
    }
    Some(match read_notification(&mut reader) {
        Ok(Some(push)) => Request::Push2 {
            message: head,
            push,
        },
        Ok(None) => Request::Ignored,
        Err(reason) => Request::InvalidPush2 {
            message: head,
            reason: reason.to_owned(),
        },
    })
}

/// The addressing of a message that can be answered: not of type `error`, with a `from`.
fn read_start(reader: &mut Reader<&[u8]>) -> Option<(IqHeader, bool)> {
    let (start, empty) = loop {
        match reader.read_event().ok()? {
            Event::Start(start) => break (start, false),
            Event::Empty(start) => break (start, true),
            Event::Text(_) | Event::Comment(_) | Event::Decl(_) | Event::PI(_) => continue,
            _ => return None,
        }
    };
    let (mut id, mut from, mut to) = (None, None, None);
    for attr in attributes(&start) {
        let attr = attr.ok()?;
        let slot = match attr.key.as_ref() {
            // Error messages are never answered.
            b"type" if attr.value.as_ref() == b"error" => return None,
            b"id" => &mut id,
            b"from" => &mut from,
            b"to" => &mut to,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(unescaped_value(&attr, reader.decoder()).ok()?);
        }
    }
    let from = from.filter(|from| !from.is_empty())?;
    let owned = |value: Option<Cow<'_, str>>| value.map(Cow::into_owned).unwrap_or_default();
    let head = IqHeader {
        id: owned(id),
        from: from.into_owned(),
        to: owned(to),
    };
    Some((head, empty))
}

/// Which text element is being read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Client,
    Priority,
    Payload,
    Jwt,
}

/// Reads the message's children up to a push2 `notification` and that one whole. `Ok(None)`:
/// the message holds no push2 notification.
fn read_notification(reader: &mut Reader<&[u8]>) -> Result<Option<Push2Request>, &'static str> {
    let mut depth = 0usize;
    loop {
        match reader.read_event().map_err(|_| MALFORMED)? {
            Event::Start(start) if depth == 0 && is_notification(&start) => {
                return read_fields(reader).map(Some);
            }
            Event::Empty(start) if depth == 0 && is_notification(&start) => {
                return Err(NO_CLIENT);
            }
            Event::Start(_) => depth += 1,
            Event::End(_) if depth == 0 => return Ok(None),
            Event::End(_) => depth -= 1,
            Event::Eof => return Err(MALFORMED),
            _ => {}
        }
    }
}

const MALFORMED: &str = "The stanza is not well-formed XML.";
const NO_CLIENT: &str = "The push2 notification names no client.";

fn is_notification(start: &BytesStart<'_>) -> bool {
    start.name().as_ref() == b"notification" && has_xmlns(start, NS_PUSH2)
}

fn has_xmlns(start: &BytesStart<'_>, ns: &[u8]) -> bool {
    attributes(start)
        .flatten()
        .any(|attr| attr.key.as_ref() == b"xmlns" && attr.value.as_ref() == ns)
}

/// The notification's children, up to its end tag. Unknown children are skipped.
fn read_fields(reader: &mut Reader<&[u8]>) -> Result<Push2Request, &'static str> {
    let mut push = Push2Request::default();
    let mut field: Option<Field> = None;
    let mut text = String::new();
    let mut depth = 0usize;
    // Inside the RFC 8291 `<encrypted>` child: only its `<payload>` is the ciphertext.
    let mut encrypted = false;
    loop {
        match reader.read_event().map_err(|_| MALFORMED)? {
            Event::Start(start) => {
                depth += 1;
                if depth == 1 {
                    encrypted = start.local_name().as_ref() == b"encrypted"
                        && has_xmlns(&start, NS_RFC8291);
                }
                field = field_of(&start, depth, encrypted, &mut push);
                text.clear();
            }
            Event::Empty(start) if depth == 0 && start.local_name().as_ref() == b"voip" => {
                push.voip = true;
            }
            Event::Text(t) if field.is_some() => {
                text.push_str(&t.xml10_content().map_err(|_| MALFORMED)?);
            }
            Event::GeneralRef(entity) if field.is_some() => {
                match entity.resolve_char_ref().map_err(|_| MALFORMED)? {
                    Some(ch) => text.push(ch),
                    None => {
                        let name = entity.decode().map_err(|_| MALFORMED)?;
                        text.push_str(resolve_predefined_entity(&name).ok_or(MALFORMED)?);
                    }
                }
            }
            Event::End(_) if depth == 0 => break,
            Event::End(_) => {
                if let Some(done) = field.take() {
                    store(&mut push, done, &text)?;
                }
                encrypted &= depth > 1;
                depth -= 1;
            }
            Event::Eof => return Err(MALFORMED),
            _ => {}
        }
    }
    if push.client.is_empty() {
        return Err(NO_CLIENT);
    }
    if push
        .jwt_key
        .as_ref()
        .is_some_and(|key| key.len() > MAX_JWT_BYTES)
    {
        return Err("The VAPID key is too long.");
    }
    Ok(push)
}

/// Which field an element holds, at its depth below the notification (`encrypted`: inside the
/// RFC 8291 `<encrypted>` child). A `jwt`'s `key` is taken here.
fn field_of(
    start: &BytesStart<'_>,
    depth: usize,
    encrypted: bool,
    push: &mut Push2Request,
) -> Option<Field> {
    match (depth, start.local_name().as_ref()) {
        (1, b"client") => Some(Field::Client),
        (1, b"priority") => Some(Field::Priority),
        (1, b"voip") => {
            push.voip = true;
            None
        }
        (1, b"jwt") => {
            push.jwt_key = attributes(start)
                .flatten()
                .find(|attr| attr.key.as_ref() == b"key")
                .and_then(|attr| String::from_utf8(attr.value.into_owned()).ok())
                .map(|key| key.trim().to_owned());
            Some(Field::Jwt)
        }
        (2, b"payload") if encrypted => Some(Field::Payload),
        _ => None,
    }
}

/// Keeps a finished field's text, within its bound.
fn store(push: &mut Push2Request, field: Field, text: &str) -> Result<(), &'static str> {
    let text = text.trim();
    match field {
        Field::Client if text.len() > MAX_CLIENT_BYTES => Err("The client is too long."),
        Field::Client => {
            push.client = text.to_owned();
            Ok(())
        }
        Field::Priority => {
            push.priority = Some(match text {
                "high" => Priority::High,
                "normal" => Priority::Normal,
                "low" => Priority::Low,
                _ => return Err("The priority must be high, normal or low."),
            });
            Ok(())
        }
        Field::Payload => {
            // Base64 may be wrapped; the whitespace is not part of it.
            let compact: String = text.split_ascii_whitespace().collect();
            if compact.len() > MAX_PAYLOAD_BASE64 {
                return Err("The encrypted payload is too large.");
            }
            push.payload = Some(compact);
            Ok(())
        }
        Field::Jwt if text.len() > MAX_JWT_BYTES => Err("The VAPID token is too long."),
        Field::Jwt => {
            push.jwt = Some(text.to_owned());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = "<message from='example.org' to='push.example.net' id='m1'>\
        <notification xmlns='urn:xmpp:push2:0'>\
        <client>https://push.example.com/ep/abc?x=1&amp;y=2</client>\
        <priority>high</priority><voip/>\
        <encrypted xmlns='urn:xmpp:sce:rfc8291:0'><payload>QUJD\n REVG</payload></encrypted>\
        <jwt key='BPk+/w=='>eyJ.a.b</jwt>\
        </notification></message>";

    fn push2(stanza: &str) -> (IqHeader, Push2Request) {
        match parse(stanza.as_bytes()) {
            Some(Request::Push2 { message, push }) => (message, push),
            other => panic!("not a push2: {other:?}"),
        }
    }

    #[test]
    fn a_full_notification_is_read_whole() {
        let (head, push) = push2(FULL);
        assert_eq!(
            head,
            IqHeader {
                id: "m1".into(),
                from: "example.org".into(),
                to: "push.example.net".into()
            }
        );
        assert_eq!(push.client, "https://push.example.com/ep/abc?x=1&y=2");
        assert_eq!(push.priority, Some(Priority::High));
        assert!(push.voip);
        assert_eq!(push.payload.as_deref(), Some("QUJDREVG"));
        assert_eq!(push.jwt.as_deref(), Some("eyJ.a.b"));
        assert_eq!(push.jwt_key.as_deref(), Some("BPk+/w=="));
    }

    #[test]
    fn a_minimal_notification_has_only_a_client() {
        let (_, push) = push2(
            "<message from='a.org' id='1'><notification xmlns='urn:xmpp:push2:0'>\
             <client>https://x/y</client></notification></message>",
        );
        assert_eq!(push.client, "https://x/y");
        assert_eq!(
            (push.priority, push.voip, push.payload, push.jwt),
            (None, false, None, None)
        );
    }

    #[test]
    fn only_the_rfc_8291_encrypted_element_carries_the_payload() {
        for other in [
            "<encrypted xmlns='urn:example:other'><payload>QUJD</payload></encrypted>",
            "<wrapped><payload>QUJD</payload></wrapped>",
        ] {
            let (_, push) = push2(&format!(
                "<message from='a.org' id='1'><notification xmlns='urn:xmpp:push2:0'>\
                 <client>https://x/y</client>{other}</notification></message>"
            ));
            assert_eq!(push.payload, None, "{other}");
        }
    }

    #[test]
    fn iqs_are_left_to_the_iq_parser() {
        assert_eq!(parse(b"<iq type='get' id='1' from='a'/>"), None);
        assert_eq!(parse(b"<messages/>"), None);
    }

    #[test]
    fn error_messages_and_other_messages_are_ignored() {
        let error = FULL.replace("<message ", "<message type='error' ");
        assert_eq!(parse(error.as_bytes()), Some(Request::Ignored));
        let chat = "<message from='a@b' id='1' type='chat'><body>hi</body></message>";
        assert_eq!(parse(chat.as_bytes()), Some(Request::Ignored));
        let other_ns = FULL.replace("urn:xmpp:push2:0", "urn:xmpp:push2:9");
        assert_eq!(parse(other_ns.as_bytes()), Some(Request::Ignored));
        let no_from = FULL.replace("from='example.org' ", "");
        assert_eq!(parse(no_from.as_bytes()), Some(Request::Ignored));
    }

    #[test]
    fn a_notification_without_client_or_with_a_bad_priority_is_invalid() {
        let no_client = "<message from='a.org' id='1'><notification xmlns='urn:xmpp:push2:0'>\
             <priority>high</priority></notification></message>";
        let bad_priority = FULL.replace(">high<", ">urgent<");
        for stanza in [no_client, &bad_priority] {
            assert!(
                matches!(parse(stanza.as_bytes()), Some(Request::InvalidPush2 { .. })),
                "{stanza}"
            );
        }
    }

    #[test]
    fn oversized_fields_are_refused() {
        let long = FULL.replace("QUJD", &"A".repeat(MAX_PAYLOAD_BASE64 + 1));
        let Some(Request::InvalidPush2 { reason, .. }) = parse(long.as_bytes()) else {
            panic!("a huge payload was accepted");
        };
        assert!(reason.contains("too large"), "{reason}");
        let long_key = FULL.replace("BPk+/w==", &"A".repeat(MAX_JWT_BYTES + 1));
        let long_client = FULL.replace("abc?", &"a".repeat(MAX_CLIENT_BYTES));
        for stanza in [long_key, long_client] {
            let Some(Request::InvalidPush2 { reason, .. }) = parse(stanza.as_bytes()) else {
                panic!("an oversized field was accepted");
            };
            assert!(reason.contains("too long"), "{reason}");
        }
    }

    #[test]
    fn broken_xml_is_invalid_not_ignored() {
        let broken = "<message from='a.org' id='1'><notification xmlns='urn:xmpp:push2:0'>\
             <client>https://x/y</priority></notification></message>";
        assert!(matches!(
            parse(broken.as_bytes()),
            Some(Request::InvalidPush2 { .. })
        ));
    }
}
