//! The Tigase push extensions a notification may carry: `<encrypted
//! xmlns='tigase:push:encrypt:0' iv='…' type='voip'?>BASE64</encrypted>` (a payload the user's
//! server encrypted for the app), `<priority xmlns='tigase:push:priority:0'>high</priority>`
//! and, for a group chat message, `<groupchat xmlns='http://tigase.org/protocol/muc#offline'>
//! <nickname>NICK</nickname></groupchat>` (the sender's nickname in the room).
//!
//! They are read as given, text untrimmed; the tigase door checks them. Only elements in the
//! publish section and outside its forms count. What is kept is bounded: text past
//! [`MAX_TEXT_BYTES`] is not collected (the door then sees a payload too large to pass on).

use super::scopes::Ns;
use super::{Malformed, PubsubWalk, StartTag};

/// Collected text is cut a little past this (no push payload can be this large).
pub const MAX_TEXT_BYTES: usize = 16 * 1024;
/// Longest `iv` or `type` attribute kept (cut beyond).
const MAX_ATTRIBUTE_BYTES: usize = 256;

/// The Tigase extensions of one notification.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TigaseParts {
    pub encrypted: Option<EncryptedElement>,
    /// The text of `<priority>`, as given.
    pub priority: Option<String>,
    /// The text of `<groupchat><nickname>`, as given.
    pub nickname: Option<String>,
}

/// An `<encrypted>` element, as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncryptedElement {
    /// The ciphertext (base64, with XML whitespace as sent).
    pub data: String,
    pub iv: Option<String>,
    /// The `type` attribute (`voip` for a call).
    pub kind: Option<String>,
}

/// Which element's text is being collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Open {
    Encrypted,
    Priority,
    Nickname,
}

impl PubsubWalk<'_> {
    /// An element in a Tigase namespace opened at `depth` in the publish section; `true` when
    /// its text is to be collected. The first of each kind counts.
    pub(super) fn open_tigase(
        &mut self,
        ns: Ns,
        start: &impl StartTag,
        decoder: quick_xml::encoding::Decoder,
    ) -> Result<bool, Malformed> {
        let parts = self.push.tigase.get_or_insert_with(Box::default);
        match (ns, start.local()) {
            (Ns::TigaseEncrypt, b"encrypted") if parts.encrypted.is_none() => {
                let short = |name: &[u8]| -> Result<Option<String>, Malformed> {
                    Ok(start.attribute(name, decoder)?.map(|v| bounded(&v)))
                };
                parts.encrypted = Some(EncryptedElement {
                    data: String::new(),
                    iv: short(b"iv")?,
                    kind: short(b"type")?,
                });
                self.tigase_open = Some(Open::Encrypted);
            }
            (Ns::TigasePriority, b"priority") if parts.priority.is_none() => {
                parts.priority = Some(String::new());
                self.tigase_open = Some(Open::Priority);
            }
            (Ns::TigaseMucOffline, b"nickname") if parts.nickname.is_none() => {
                parts.nickname = Some(String::new());
                self.tigase_open = Some(Open::Nickname);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// A piece of the open Tigase element's text.
    pub(super) fn tigase_text(&mut self, piece: &str) {
        let (Some(open), Some(parts)) = (self.tigase_open, self.push.tigase.as_mut()) else {
            return;
        };
        let text = match open {
            Open::Encrypted => parts.encrypted.as_mut().map(|e| &mut e.data),
            Open::Priority => parts.priority.as_mut(),
            Open::Nickname => parts.nickname.as_mut(),
        };
        if let Some(text) = text {
            if text.len() <= MAX_TEXT_BYTES {
                text.push_str(piece);
                // Cut past the bound, never to it: the door must still see it was too long.
                let end = (MAX_TEXT_BYTES + 1..text.len())
                    .find(|&i| text.is_char_boundary(i))
                    .unwrap_or(text.len());
                text.truncate(end);
            }
        }
    }
}

fn bounded(value: &str) -> String {
    let end = (0..=MAX_ATTRIBUTE_BYTES.min(value.len()))
        .rev()
        .find(|&i| value.is_char_boundary(i))
        .unwrap_or(0);
    value[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use crate::request::{parse, Request};

    fn push(notification: &str) -> crate::request::PushRequest {
        let iq = format!(
            "<iq type='set' id='p1' from='example.org' to='push.example.org'>\
             <pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n0de'><item>\
             <notification xmlns='urn:xmpp:push:0'>{notification}</notification></item>\
             </publish></pubsub></iq>"
        );
        match parse(iq.as_bytes()) {
            Request::Push { push, .. } => push,
            other => panic!("not a push: {other:?}"),
        }
    }

    #[test]
    fn an_encrypted_voip_element_and_a_priority_are_read_as_given() {
        let read = push(
            "<x xmlns='jabber:x:data'><field var='FORM_TYPE'><value>urn:xmpp:push:summary\
             </value></field></x>\
             <encrypted xmlns='tigase:push:encrypt:0' iv='aXYx' type='voip'>\n  QUJD\nREVG  \
             </encrypted><priority xmlns='tigase:push:priority:0'>high</priority>",
        );
        let parts = read.tigase.expect("tigase parts");
        let encrypted = parts.encrypted.expect("encrypted");
        assert_eq!(encrypted.data, "\n  QUJD\nREVG  ");
        assert_eq!(encrypted.iv.as_deref(), Some("aXYx"));
        assert_eq!(encrypted.kind.as_deref(), Some("voip"));
        assert_eq!(parts.priority.as_deref(), Some("high"));
        assert_eq!(read.token, "n0de");
    }

    #[test]
    fn a_group_chat_nickname_is_read_as_given() {
        let read = push(
            "<x xmlns='jabber:x:data'><field var='last-message-body'><value>hi</value>\
             </field></x><groupchat xmlns='http://tigase.org/protocol/muc#offline'>\
             <nickname>Juliet &amp; co</nickname></groupchat>",
        );
        let parts = read.tigase.expect("tigase parts");
        assert_eq!(parts.nickname.as_deref(), Some("Juliet & co"));
        assert_eq!(parts.encrypted, None);
    }

    #[test]
    fn a_plain_push_carries_no_tigase_parts() {
        let read = push(
            "<x xmlns='jabber:x:data'><field var='last-message-body'><value>hi</value>\
             </field></x>",
        );
        assert_eq!(read.tigase, None);
        assert_eq!(read.summary.last_message_body.as_deref(), Some("hi"));
    }

    #[test]
    fn prefixed_and_entity_laden_elements_read_the_same() {
        let read = push(
            "<t:encrypted xmlns:t='tigase:push:encrypt:0' iv='a&amp;b'>QU&#74;D</t:encrypted>",
        );
        let encrypted = read.tigase.and_then(|p| p.encrypted).expect("encrypted");
        assert_eq!(encrypted.data, "QUJD");
        assert_eq!(encrypted.iv.as_deref(), Some("a&b"));
        assert_eq!(encrypted.kind, None);
    }

    #[test]
    fn tigase_elements_inside_a_form_field_are_not_read() {
        let read = push(
            "<x xmlns='jabber:x:data'><field var='last-message-body'><value>hi</value>\
             <encrypted xmlns='tigase:push:encrypt:0' iv='x'>QUJD</encrypted></field></x>",
        );
        assert!(read.tigase.is_none_or(|p| p.encrypted.is_none()));
        assert_eq!(read.summary.last_message_body.as_deref(), Some("hi"));
    }

    #[test]
    fn the_collected_text_is_bounded() {
        let long = "A".repeat(super::MAX_TEXT_BYTES * 2);
        let read = push(&format!(
            "<encrypted xmlns='tigase:push:encrypt:0' iv='{}'>{long}</encrypted>",
            "i".repeat(1000)
        ));
        let encrypted = read.tigase.and_then(|p| p.encrypted).expect("encrypted");
        assert!(encrypted.data.len() > super::MAX_TEXT_BYTES);
        assert!(encrypted.data.len() < super::MAX_TEXT_BYTES * 2);
        assert_eq!(encrypted.iv.map(|iv| iv.len()), Some(256));
    }
}
