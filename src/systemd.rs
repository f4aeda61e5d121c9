//! Life under systemd: service manager notifications (readiness, reload, stop, watchdog) and a
//! log format journald can read priorities from. Everything here is inert outside systemd.

pub mod journal;
pub mod notify;

use std::borrow::Cow;

/// `text` with its control characters written out as escapes (`\0`, `\r`, `\u{1b}`), tabs
/// kept: text from outside (a server's stream id, a provider's answer) must not end a journal
/// line or a notification line early, where what follows would be read as a record or an
/// assignment of its own.
pub(crate) fn escape_controls(text: &str) -> Cow<'_, str> {
    let escaped = |c: char| c.is_control() && c != '\t';
    if !text.contains(escaped) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if escaped(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}
