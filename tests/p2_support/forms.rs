//! The data forms of the registration commands: a command IQ as a client sends it, and the
//! values of a completed command's result form.

use fpush_testkit::xmpp::Stanza;

/// A one-step ad-hoc command IQ from `from` to `to` with `fields` in its submitted form.
pub fn command_iq(id: &str, from: &str, to: &str, node: &str, fields: &[(&str, &str)]) -> String {
    let form: String = fields
        .iter()
        .map(|(var, value)| format!("<field var='{var}'><value>{value}</value></field>"))
        .collect();
    format!(
        "<iq type='set' id='{id}' from='{from}' to='{to}'>\
         <command xmlns='http://jabber.org/protocol/commands' node='{node}' action='execute'>\
         <x xmlns='jabber:x:data' type='submit'>{form}</x></command></iq>"
    )
}

/// The first value of field `var` in a reply's form.
pub fn form_value(reply: &Stanza, var: &str) -> String {
    let open = format!("<field var='{var}'><value>");
    let start = reply.raw.find(&open).map(|at| at + open.len());
    let start = start.unwrap_or_else(|| panic!("no field {var}: {}", reply.raw));
    let end = start + reply.raw[start..].find("</value>").unwrap();
    reply.raw[start..end].to_owned()
}
