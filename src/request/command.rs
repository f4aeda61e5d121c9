//! XEP-0050 ad-hoc command IQs: the `<command>` element's `node`, `action` and `sessionid`, and
//! the fields of its data form, read with quick-xml's general reader.
//!
//! Commands are rare next to pushes (a client registers once), so this walk favours being short
//! over being fast; it never runs for a push. Anyone can send a command, so what it keeps is
//! bounded: [`MAX_FIELDS`] fields, names up to [`MAX_VAR_BYTES`], values cut past
//! [`MAX_VALUE_BYTES`] (the front door refuses a value that long).

use std::borrow::Cow;

use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use super::scopes::{Ns, Scopes};
use super::{attribute, Malformed, Payload};
use crate::markup::is_xml_space_char;

/// Fields kept of a command's form; later ones are ignored.
pub const MAX_FIELDS: usize = 16;
/// Longest field name kept; fields with longer names are ignored.
pub const MAX_VAR_BYTES: usize = 64;
/// Values are cut to a few bytes more than this, so the door can tell they were too long.
pub const MAX_VALUE_BYTES: usize = 4096;
/// Longest `node`, `action` or `sessionid` kept (cut beyond).
const MAX_ATTRIBUTE_BYTES: usize = 256;

/// One ad-hoc command request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdHocCommand {
    /// The command's node (`register-push-fcm`).
    pub node: String,
    /// `execute`, `cancel`, …; `None` when absent (which means `execute`).
    pub action: Option<String>,
    /// The session the client continues, if any.
    pub session_id: Option<String>,
    /// The form's fields (`var`, first value), in document order, first of each name only.
    pub fields: Vec<(String, String)>,
}

impl AdHocCommand {
    /// The first value of field `var`, if the form has it.
    pub fn field(&self, var: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(name, _)| name == var)
            .map(|(_, value)| value.as_str())
    }
}

/// Reads the command whose start tag `start` was just read (`empty` for `<command/>`).
pub(super) fn read_command(
    reader: &mut Reader<&[u8]>,
    scopes: &mut Scopes,
    start: &BytesStart<'_>,
    empty: bool,
) -> Result<Payload, Malformed> {
    let decoder = reader.decoder();
    let short = |name: &[u8]| -> Result<Option<String>, Malformed> {
        Ok(attribute(start, name, decoder)?.map(|value| bounded(value, MAX_ATTRIBUTE_BYTES)))
    };
    let mut command = AdHocCommand {
        node: short(b"node")?.unwrap_or_default(),
        action: short(b"action")?,
        session_id: short(b"sessionid")?,
        fields: Vec::new(),
    };
    if !empty {
        let mut walk = FormWalk::default();
        walk.run(reader, scopes, &mut command.fields)?;
    }
    Ok(Payload::Command(command))
}

/// Where the walk below `<command>` is: the first data form's fields at depth 2, their values
/// at depth 3.
#[derive(Default)]
struct FormWalk {
    depth: usize,
    /// Whether the first `jabber:x:data` form child is open (and later ones are skipped).
    in_form: bool,
    form_seen: bool,
    /// The open field's name and first value.
    field: Option<(String, Option<String>)>,
    in_value: bool,
}

impl FormWalk {
    fn run(
        &mut self,
        reader: &mut Reader<&[u8]>,
        scopes: &mut Scopes,
        fields: &mut Vec<(String, String)>,
    ) -> Result<(), Malformed> {
        let decoder = reader.decoder();
        loop {
            match reader.read_event()? {
                Event::Start(start) => {
                    let ns = scopes.enter(&start)?;
                    self.depth += 1;
                    self.open(ns, &start, decoder)?;
                }
                Event::Empty(start) => {
                    let ns = scopes.enter(&start)?;
                    scopes.leave();
                    self.depth += 1;
                    self.open(ns, &start, decoder)?;
                    self.close(fields);
                    self.depth -= 1;
                }
                Event::End(_) => {
                    if self.depth == 0 {
                        return Ok(()); // </command>
                    }
                    scopes.leave();
                    self.close(fields);
                    self.depth -= 1;
                }
                Event::Text(text) => self.text(&text.xml10_content()?),
                Event::CData(data) => self.text(&data.xml10_content()?),
                Event::GeneralRef(entity) => {
                    if let Some(ch) = entity.resolve_char_ref()? {
                        self.text(ch.encode_utf8(&mut [0u8; 4]));
                    } else {
                        let name = entity.decode()?;
                        self.text(resolve_predefined_entity(&name).ok_or(Malformed)?);
                    }
                }
                Event::Comment(_) | Event::PI(_) => {}
                Event::Eof | Event::Decl(_) | Event::DocType(_) => return Err(Malformed),
            }
        }
    }

    fn open(
        &mut self,
        ns: Ns,
        start: &BytesStart<'_>,
        decoder: quick_xml::encoding::Decoder,
    ) -> Result<(), Malformed> {
        let local = start.local_name();
        match (self.depth, local.as_ref()) {
            (1, b"x") if ns == Ns::DataForms && !self.form_seen => {
                self.in_form = true;
                self.form_seen = true;
            }
            (2, b"field") if self.in_form && ns == Ns::DataForms => {
                self.field = attribute(start, b"var", decoder)?
                    .filter(|var| var.len() <= MAX_VAR_BYTES)
                    .map(|var| (var.into_owned(), None));
            }
            (3, b"value") if ns == Ns::DataForms => {
                self.in_value = matches!(&self.field, Some((_, None)));
                if let Some((_, value @ None)) = &mut self.field {
                    *value = Some(String::new());
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The element at `self.depth` closes.
    fn close(&mut self, fields: &mut Vec<(String, String)>) {
        match self.depth {
            3 => self.in_value = false,
            2 => {
                if let Some((var, value)) = self.field.take() {
                    let known = fields.iter().any(|(name, _)| *name == var);
                    if !known && fields.len() < MAX_FIELDS {
                        let value = value.unwrap_or_default();
                        fields.push((var, value.trim_matches(is_xml_space_char).to_owned()));
                    }
                }
            }
            1 => self.in_form = false,
            _ => {}
        }
    }

    fn text(&mut self, piece: &str) {
        if !self.in_value {
            return;
        }
        if let Some((_, Some(value))) = &mut self.field {
            if value.len() <= MAX_VALUE_BYTES {
                value.push_str(piece);
                // Cut past the bound, never to it: a value cut short must still read as too long.
                let end = (MAX_VALUE_BYTES + 1..value.len())
                    .find(|&i| value.is_char_boundary(i))
                    .unwrap_or(value.len());
                value.truncate(end);
            }
        }
    }
}

/// `value` cut to at most `max` bytes, on a character boundary.
fn bounded(value: Cow<'_, str>, max: usize) -> String {
    let end = floor_char_boundary(&value, max);
    value[..end].to_owned()
}

/// The largest character boundary of `text` at or below `max`.
fn floor_char_boundary(text: &str, max: usize) -> usize {
    if text.len() <= max {
        return text.len();
    }
    (0..=max)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use crate::request::{parse, Request};

    fn command(xml: &str) -> super::AdHocCommand {
        let iq = format!(
            "<iq type='set' id='c1' from='a@example.org/r' to='push.example.org'>{xml}</iq>"
        );
        match parse(iq.as_bytes()) {
            Request::Command { command, .. } => command,
            other => panic!("not a command: {other:?}"),
        }
    }

    #[test]
    fn a_register_command_is_read_with_its_fields() {
        let read = command(
            "<command xmlns='http://jabber.org/protocol/commands' node='register-push-fcm' \
             action='execute'><x xmlns='jabber:x:data' type='submit'>\
             <field var='FORM_TYPE' type='hidden'><value>x</value></field>\
             <field var='token'><value> tok&amp;en </value><value>second</value></field>\
             <field var='device-id'><value>d<![CDATA[e]]>v</value></field>\
             <field var='token'><value>dup</value></field><field var='empty'/>\
             </x></command>",
        );
        assert_eq!(read.node, "register-push-fcm");
        assert_eq!(read.action.as_deref(), Some("execute"));
        assert_eq!(read.field("token"), Some("tok&en"));
        assert_eq!(read.field("device-id"), Some("dev"));
        assert_eq!(read.field("empty"), Some(""));
        assert_eq!(read.fields.len(), 4);
    }

    #[test]
    fn fields_outside_the_first_form_are_not_read() {
        let read = command(
            "<command xmlns='http://jabber.org/protocol/commands' node='n'>\
             <field xmlns='jabber:x:data' var='token'><value>no</value></field>\
             <x xmlns='jabber:x:data'><field var='a'><value>1</value></field></x>\
             <x xmlns='jabber:x:data'><field var='b'><value>2</value></field></x>\
             <x xmlns='urn:other'><field var='c'><value>3</value></field></x></command>",
        );
        assert_eq!(read.fields, [("a".to_owned(), "1".to_owned())]);
        assert_eq!(read.action, None);
    }

    #[test]
    fn what_a_command_keeps_is_bounded() {
        let many: String = (0..40)
            .map(|i| format!("<field var='f{i}'><value>v</value></field>"))
            .collect();
        let long = "é".repeat(5000);
        let read = command(&format!(
            "<command xmlns='http://jabber.org/protocol/commands' node='{}'>\
             <x xmlns='jabber:x:data'><field var='token'><value>{long}</value></field>\
             <field var='{}'><value>v</value></field>{many}</x></command>",
            "n".repeat(1000),
            "v".repeat(100)
        ));
        assert_eq!(read.node.len(), super::MAX_ATTRIBUTE_BYTES);
        assert_eq!(read.fields.len(), super::MAX_FIELDS);
        let token = read.field("token").unwrap_or_default();
        assert!(token.len() > super::MAX_VALUE_BYTES && token.len() <= super::MAX_VALUE_BYTES + 4);
        assert!(read
            .fields
            .iter()
            .all(|(var, _)| var.len() <= super::MAX_VAR_BYTES));
    }

    #[test]
    fn a_broken_command_is_a_bad_request() {
        let iq = "<iq type='set' id='c1' from='a@example.org/r' to='p'>\
                  <command xmlns='http://jabber.org/protocol/commands' node='n'><x></command></iq>";
        assert!(matches!(parse(iq.as_bytes()), Request::InvalidPush { .. }));
    }
}
