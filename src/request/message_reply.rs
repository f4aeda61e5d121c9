//! Error replies to push2 messages: `<message type='error'>` with the message's `id` and
//! `from`/`to` swapped. A delivered push2 push gets no reply (a message has no result).

use super::reply::{error_element, escape_into};
use super::{Condition, ErrorType, IqHeader};

/// Appends the error reply to the message `head` addressed to `out`. An empty `id` or `to` is
/// left out rather than written empty.
pub fn write_message_error(
    head: &IqHeader,
    kind: ErrorType,
    condition: Condition,
    text: Option<&str>,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"<message type='error'");
    for (name, value) in [
        (&b" id='"[..], &head.id),
        (b" from='", &head.to),
        (b" to='", &head.from),
    ] {
        if !value.is_empty() {
            out.extend_from_slice(name);
            escape_into(value.as_bytes(), out);
            out.push(b'\'');
        }
    }
    out.push(b'>');
    error_element(kind, condition, text.filter(|text| !text.is_empty()), out);
    out.extend_from_slice(b"</message>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_goes_back_with_the_same_id_and_swapped_addresses() {
        let head = IqHeader {
            id: "m'1".into(),
            from: "example.org".into(),
            to: "push.example.net".into(),
        };
        let mut out = Vec::new();
        write_message_error(
            &head,
            ErrorType::Cancel,
            Condition::ItemNotFound,
            Some("gone <now>"),
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "<message type='error' id='m&apos;1' from='push.example.net' to='example.org'>\
             <error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>gone &lt;now&gt;</text>\
             </error></message>"
        );
    }

    #[test]
    fn the_error_reply_is_never_answered_in_turn() {
        let head = IqHeader {
            id: "m1".into(),
            from: "example.org".into(),
            to: "push.example.net".into(),
        };
        let mut out = Vec::new();
        write_message_error(
            &head,
            ErrorType::Wait,
            Condition::InternalServerError,
            None,
            &mut out,
        );
        assert_eq!(
            crate::request::parse(&out),
            crate::request::Request::Ignored
        );
    }

    #[test]
    fn a_message_without_id_or_to_is_answered_without_them() {
        let head = IqHeader {
            id: String::new(),
            from: "example.org".into(),
            to: String::new(),
        };
        let mut out = Vec::new();
        write_message_error(
            &head,
            ErrorType::Modify,
            Condition::NotAcceptable,
            None,
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "<message type='error' to='example.org'><error type='modify'>\
             <not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
        );
    }
}
