//! Reply bytes from small templates: every reply is a fixed frame around the request's escaped
//! `id`, `from` and `to`, so building one is a few memcpys into a buffer the caller reuses.

use super::IqHeader;

/// The error type: the only part of an error reply that XMPP servers act on (see the Replies
/// table in ARCHITECTURE.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    /// Give up on this request; servers may disable the registration.
    Cancel,
    /// Try again later; never disables anything.
    Wait,
    /// The request itself was wrong.
    Modify,
    /// The sender is not allowed to ask this.
    Auth,
}

impl ErrorType {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            ErrorType::Cancel => "cancel",
            ErrorType::Wait => "wait",
            ErrorType::Modify => "modify",
            ErrorType::Auth => "auth",
        }
    }
}

/// The defined stanza error conditions fpush answers with (RFC 6120, 8.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    BadRequest,
    Forbidden,
    ItemNotFound,
    InternalServerError,
    PolicyViolation,
    RemoteServerTimeout,
    ResourceConstraint,
    ServiceUnavailable,
    NotAcceptable,
    NotAllowed,
}

impl Condition {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Condition::BadRequest => "bad-request",
            Condition::Forbidden => "forbidden",
            Condition::ItemNotFound => "item-not-found",
            Condition::InternalServerError => "internal-server-error",
            Condition::PolicyViolation => "policy-violation",
            Condition::RemoteServerTimeout => "remote-server-timeout",
            Condition::ResourceConstraint => "resource-constraint",
            Condition::ServiceUnavailable => "service-unavailable",
            Condition::NotAcceptable => "not-acceptable",
            Condition::NotAllowed => "not-allowed",
        }
    }
}

/// What to answer an IQ with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply<'a> {
    /// An empty `result` (a delivered push, a ping).
    Result,
    /// The disco#info answer: identity `pubsub/push` and the features an app server has.
    DiscoInfo,
    /// A stanza error; `text` is a short English sentence for the server's log.
    Error {
        kind: ErrorType,
        condition: Condition,
        text: Option<&'a str>,
    },
}

const DISCO_INFO_PAYLOAD: &[u8] = b"<query xmlns='http://jabber.org/protocol/disco#info'>\
<identity category='pubsub' type='push'/>\
<feature var='http://jabber.org/protocol/disco#info'/>\
<feature var='urn:xmpp:push:0'/></query>";

pub(super) const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

/// Appends the reply to `iq` to `out`: same `id`, `from` and `to` swapped (an empty address is
/// left out rather than written empty).
pub fn write_reply(iq: &IqHeader, reply: &Reply<'_>, out: &mut Vec<u8>) {
    let kind: &[u8] = match reply {
        Reply::Result | Reply::DiscoInfo => b"result",
        Reply::Error { .. } => b"error",
    };
    out.extend_from_slice(b"<iq type='");
    out.extend_from_slice(kind);
    out.extend_from_slice(b"' id='");
    escape_into(iq.id.as_bytes(), out);
    out.push(b'\'');
    if !iq.to.is_empty() {
        out.extend_from_slice(b" from='");
        escape_into(iq.to.as_bytes(), out);
        out.push(b'\'');
    }
    if !iq.from.is_empty() {
        out.extend_from_slice(b" to='");
        escape_into(iq.from.as_bytes(), out);
        out.push(b'\'');
    }
    match reply {
        Reply::Result => out.extend_from_slice(b"/>"),
        Reply::DiscoInfo => {
            out.push(b'>');
            out.extend_from_slice(DISCO_INFO_PAYLOAD);
            out.extend_from_slice(b"</iq>");
        }
        Reply::Error {
            kind,
            condition,
            text,
        } => {
            out.extend_from_slice(b"><error type='");
            out.extend_from_slice(kind.as_str().as_bytes());
            out.extend_from_slice(b"'><");
            out.extend_from_slice(condition.as_str().as_bytes());
            out.extend_from_slice(b" xmlns='");
            out.extend_from_slice(NS_STANZAS.as_bytes());
            out.extend_from_slice(b"'/>");
            if let Some(text) = text {
                out.extend_from_slice(b"<text xmlns='");
                out.extend_from_slice(NS_STANZAS.as_bytes());
                out.extend_from_slice(b"'>");
                escape_into(text.as_bytes(), out);
                out.extend_from_slice(b"</text>");
            }
            out.extend_from_slice(b"</error></iq>");
        }
    }
}

/// Escapes for both character data and single- or double-quoted attribute values. Ids and
/// addresses almost never need it, so the markup characters are searched for in bulk and
/// clean runs copied whole. Each search resumes where it last stopped, so a value full of
/// markup characters still costs linear time.
pub(super) fn escape_into(raw: &[u8], out: &mut Vec<u8>) {
    let markup = |from: usize| memchr::memchr3(b'&', b'<', b'>', &raw[from..]).map(|i| from + i);
    let quote = |from: usize| memchr::memchr2(b'\'', b'"', &raw[from..]).map(|i| from + i);
    let (mut next_markup, mut next_quote) = (markup(0), quote(0));
    let mut copied = 0;
    loop {
        let at = match (next_markup, next_quote) {
            (Some(m), Some(q)) => m.min(q),
            (Some(at), None) | (None, Some(at)) => at,
            (None, None) => break,
        };
        out.extend_from_slice(&raw[copied..at]);
        out.extend_from_slice(match raw[at] {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'\'' => b"&apos;",
            _ => b"&quot;",
        });
        copied = at + 1;
        if next_markup == Some(at) {
            next_markup = markup(copied);
        } else {
            next_quote = quote(copied);
        }
    }
    out.extend_from_slice(&raw[copied..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_replaces_every_markup_character() {
        let mut out = Vec::new();
        escape_into(b"a&b<c>d'e\"f", &mut out);
        assert_eq!(out, b"a&amp;b&lt;c&gt;d&apos;e&quot;f");
    }

    #[test]
    fn runs_of_markup_characters_are_all_escaped() {
        let mut out = Vec::new();
        escape_into(b"''<<&\"x\"", &mut out);
        assert_eq!(out, b"&apos;&apos;&lt;&lt;&amp;&quot;x&quot;");
    }

    #[test]
    fn plain_values_are_copied_unchanged() {
        let mut out = Vec::new();
        escape_into(b"push.example.org", &mut out);
        assert_eq!(out, b"push.example.org");
    }
}
