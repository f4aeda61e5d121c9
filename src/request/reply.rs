//! Reply bytes from small templates: every reply is a fixed frame around the request's escaped
//! `id`, `from` and `to`, so building one is a few memcpys into a buffer the caller reuses.

use fpush_traits::text::cut_point;

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

/// How an ad-hoc command that was not refused ended (XEP-0050's `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandStatus {
    Completed,
    /// The requester sent `action='cancel'`: nothing was done.
    Canceled,
}

impl CommandStatus {
    /// The `status` attribute's value (also the metrics' `result` label).
    pub fn as_str(self) -> &'static str {
        match self {
            CommandStatus::Completed => "completed",
            CommandStatus::Canceled => "canceled",
        }
    }
}

/// One ad-hoc command listed in a disco#items answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandItem<'a> {
    /// The command's node (`register-push-fcm`).
    pub node: &'a str,
    /// A human-readable name.
    pub name: &'a str,
}

/// What to answer an IQ with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply<'a> {
    /// An empty `result` (a delivered push, a ping).
    Result,
    /// The disco#info answer: identity `pubsub/push` and the features an app server has.
    DiscoInfo,
    /// The disco#info answer of an app server that also serves ad-hoc commands (registrations).
    DiscoInfoWithCommands,
    /// [`Reply::DiscoInfoWithCommands`] plus `features` (e.g. the provider ids Tigase-style
    /// apps look for).
    DiscoInfoWithFeatures { features: &'a [&'a str] },
    /// The disco#items answer for the commands node: `items` at `jid` (our component JID).
    CommandList {
        jid: &'a str,
        items: &'a [CommandItem<'a>],
    },
    /// An ad-hoc command that ended with `status`, with a result form of `fields` (none: no
    /// form).
    CommandEnded {
        node: &'a str,
        session_id: &'a str,
        status: CommandStatus,
        fields: &'a [(&'a str, &'a str)],
    },
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

const DISCO_INFO_WITH_COMMANDS_PAYLOAD: &[u8] =
    b"<query xmlns='http://jabber.org/protocol/disco#info'>\
<identity category='pubsub' type='push'/>\
<feature var='http://jabber.org/protocol/disco#info'/>\
<feature var='urn:xmpp:push:0'/>\
<feature var='http://jabber.org/protocol/commands'/></query>";

pub(super) const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

/// Appends the reply to `iq` to `out`: same `id`, `from` and `to` swapped (an empty address is
/// left out rather than written empty).
pub fn write_reply(iq: &IqHeader, reply: &Reply<'_>, out: &mut Vec<u8>) {
    let kind: &[u8] = match reply {
        Reply::Error { .. } => b"error",
        _ => b"result",
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
        Reply::DiscoInfo => wrap(out, |out| out.extend_from_slice(DISCO_INFO_PAYLOAD)),
        Reply::DiscoInfoWithCommands => wrap(out, |out| {
            out.extend_from_slice(DISCO_INFO_WITH_COMMANDS_PAYLOAD)
        }),
        Reply::DiscoInfoWithFeatures { features } => wrap(out, |out| {
            let payload = DISCO_INFO_WITH_COMMANDS_PAYLOAD;
            let open = payload.len() - b"</query>".len();
            out.extend_from_slice(&payload[..open]);
            for feature in *features {
                out.extend_from_slice(b"<feature var='");
                escape_into(feature.as_bytes(), out);
                out.extend_from_slice(b"'/>");
            }
            out.extend_from_slice(b"</query>");
        }),
        Reply::CommandList { jid, items } => wrap(out, |out| command_list(jid, items, out)),
        Reply::CommandEnded {
            node,
            session_id,
            status,
            fields,
        } => wrap(out, |out| {
            command_ended(node, session_id, *status, fields, out)
        }),
        Reply::Error {
            kind,
            condition,
            text,
        } => {
            out.push(b'>');
            error_element(*kind, *condition, *text, out);
            out.extend_from_slice(b"</iq>");
        }
    }
}

/// Bytes of an error text sent (before escaping): a text may repeat what a sender wrote (a
/// `pushModule`), and a reply many times the size of its request could exceed what the server
/// takes from the component, which closes the link.
const MAX_ERROR_TEXT: usize = 512;

/// The `<error>` element of an error reply, IQ or message alike.
pub(super) fn error_element(
    kind: ErrorType,
    condition: Condition,
    text: Option<&str>,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"<error type='");
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
        let cut = cut_point(text, MAX_ERROR_TEXT);
        escape_into(&text.as_bytes()[..cut], out);
        if cut < text.len() {
            out.extend_from_slice("…".as_bytes());
        }
        out.extend_from_slice(b"</text>");
    }
    out.extend_from_slice(b"</error>");
}

/// Closes the start tag, writes the payload, closes the IQ.
fn wrap(out: &mut Vec<u8>, payload: impl FnOnce(&mut Vec<u8>)) {
    out.push(b'>');
    payload(out);
    out.extend_from_slice(b"</iq>");
}

fn command_list(jid: &str, items: &[CommandItem<'_>], out: &mut Vec<u8>) {
    out.extend_from_slice(
        b"<query xmlns='http://jabber.org/protocol/disco#items' \
          node='http://jabber.org/protocol/commands'>",
    );
    for item in items {
        out.extend_from_slice(b"<item jid='");
        escape_into(jid.as_bytes(), out);
        out.extend_from_slice(b"' node='");
        escape_into(item.node.as_bytes(), out);
        out.extend_from_slice(b"' name='");
        escape_into(item.name.as_bytes(), out);
        out.extend_from_slice(b"'/>");
    }
    out.extend_from_slice(b"</query>");
}

fn command_ended(
    node: &str,
    session_id: &str,
    status: CommandStatus,
    fields: &[(&str, &str)],
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"<command xmlns='http://jabber.org/protocol/commands' node='");
    escape_into(node.as_bytes(), out);
    out.extend_from_slice(b"' sessionid='");
    escape_into(session_id.as_bytes(), out);
    out.extend_from_slice(b"' status='");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b'\'');
    if fields.is_empty() {
        out.extend_from_slice(b"/>");
        return;
    }
    out.extend_from_slice(b"><x xmlns='jabber:x:data' type='form'>");
    // Consecutive fields of one name are one field with several values: a text-multi, as the
    // Tigase push component answers them (TigaseSwift reads `features` as a TextMultiField).
    for (at, (var, value)) in fields.iter().enumerate() {
        let same = |other: Option<&(&str, &str)>| other.is_some_and(|(v, _)| v == var);
        let first = at == 0 || !same(fields.get(at - 1));
        let last = !same(fields.get(at + 1));
        if first {
            out.extend_from_slice(b"<field var='");
            escape_into(var.as_bytes(), out);
            if !last {
                out.extend_from_slice(b"' type='text-multi");
            }
            out.extend_from_slice(b"'>");
        }
        out.extend_from_slice(b"<value>");
        escape_into(value.as_bytes(), out);
        out.extend_from_slice(b"</value>");
        if last {
            out.extend_from_slice(b"</field>");
        }
    }
    out.extend_from_slice(b"</x></command>");
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
    fn an_error_text_that_echoes_an_outsider_s_value_stays_short() {
        // A `pushModule` of quotes fills a stanza; escaped, it would be a reply six times as
        // large, which the server may refuse by closing the link.
        let name = "'".repeat(100_000);
        let text = format!("The push module '{name}' is not configured.");
        let mut out = Vec::new();
        error_element(
            ErrorType::Cancel,
            Condition::ItemNotFound,
            Some(&text),
            &mut out,
        );
        assert!(out.len() < 4_096, "{} bytes", out.len());
        let out = String::from_utf8(out).unwrap();
        assert!(out.ends_with("&apos;…</text></error>"), "{out}");
        // Everyday texts are whole.
        let mut out = Vec::new();
        error_element(
            ErrorType::Wait,
            Condition::ItemNotFound,
            Some("short"),
            &mut out,
        );
        assert!(String::from_utf8(out)
            .unwrap()
            .ends_with(">short</text></error>"));
    }

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

    fn header() -> IqHeader {
        IqHeader {
            id: "c1".into(),
            from: "a@example.org/r".into(),
            to: "push.example.org".into(),
        }
    }

    #[test]
    fn a_multi_valued_field_is_text_multi_as_the_tigase_component_sends_it() {
        // Tigase's push component answers register-device's `features` with
        // `type='text-multi'` (tigase.server.DataForm.addFieldMultiValue), and TigaseSwift-based
        // Siskin reads it with `getField(named: "features") as? TextMultiField`: a list-multi
        // field parses as ListMultiField there, so the app sees no features and never enables
        // encrypted pushes or priorities.
        let mut out = Vec::new();
        let fields = [
            ("node", "n0de"),
            ("features", "tigase:push:encrypt:0"),
            ("features", "tigase:push:priority:0"),
            ("max-payload-size", "2048"),
        ];
        let reply = Reply::CommandEnded {
            node: "register-device",
            session_id: "s1",
            status: CommandStatus::Completed,
            fields: &fields,
        };
        write_reply(&header(), &reply, &mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains(
                "<field var='features' type='text-multi'><value>tigase:push:encrypt:0</value>\
                 <value>tigase:push:priority:0</value></field>"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_completed_command_carries_its_form() {
        let mut out = Vec::new();
        let fields = [("jid", "push.example.org"), ("secret", "a'b")];
        let reply = Reply::CommandEnded {
            node: "register-push-fcm",
            session_id: "s1",
            status: CommandStatus::Completed,
            fields: &fields,
        };
        write_reply(&header(), &reply, &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "<iq type='result' id='c1' from='push.example.org' to='a@example.org/r'>\
             <command xmlns='http://jabber.org/protocol/commands' node='register-push-fcm' \
             sessionid='s1' status='completed'><x xmlns='jabber:x:data' type='form'>\
             <field var='jid'><value>push.example.org</value></field>\
             <field var='secret'><value>a&apos;b</value></field></x></command></iq>"
        );
        // Without fields, no form; the status as it ended.
        for (status, end) in [
            (
                CommandStatus::Completed,
                "sessionid='s' status='completed'/></iq>",
            ),
            (
                CommandStatus::Canceled,
                "sessionid='s' status='canceled'/></iq>",
            ),
        ] {
            out.clear();
            let ended = Reply::CommandEnded {
                node: "n",
                session_id: "s",
                status,
                fields: &[],
            };
            write_reply(&header(), &ended, &mut out);
            assert!(String::from_utf8_lossy(&out).ends_with(end), "{status:?}");
        }
    }

    #[test]
    fn the_command_list_names_each_command_at_our_jid() {
        let mut out = Vec::new();
        let items = [CommandItem {
            node: "register-push-fcm",
            name: "Register FCM",
        }];
        let reply = Reply::CommandList {
            jid: "push.example.org",
            items: &items,
        };
        write_reply(&header(), &reply, &mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains("node='http://jabber.org/protocol/commands'><item jid='push.example.org' node='register-push-fcm' name='Register FCM'/></query>"),
            "{text}"
        );
    }

    #[test]
    fn plain_values_are_copied_unchanged() {
        let mut out = Vec::new();
        escape_into(b"push.example.org", &mut out);
        assert_eq!(out, b"push.example.org");
    }
}
