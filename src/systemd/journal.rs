//! How log lines look. Under journald (stderr is the stream `JOURNAL_STREAM` names) each line
//! starts with its syslog priority (`<3>` error … `<7>` debug) and carries no timestamp of its own
//! (journald stamps every line), so `journalctl -p warning` finds warnings; anywhere else
//! env_logger's usual timestamped lines.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

/// Install the global logger; `RUST_LOG` overrides `default_filter`.
pub fn init_logger(default_filter: &str) {
    let env = env_logger::Env::default().default_filter_or(default_filter);
    let mut builder = env_logger::Builder::from_env(env);
    if stderr_is_journal() {
        builder
            .write_style(env_logger::WriteStyle::Never)
            .format(|buf, record| {
                let message = record.args().to_string();
                let lines = journal_lines(record.level(), record.target(), &message);
                buf.write_all(lines.as_bytes())
            });
    } else {
        builder.format_timestamp_millis();
    }
    builder.init();
}

/// The syslog priority journald files a record under.
fn priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// One record as journald stream lines. journald reads a priority per line, so every line of a
/// multi-line message carries it: no part of an error is filed as info. journald also ends a
/// line at a NUL, so control characters are escaped: a NUL and `<0>` in a provider's answer
/// would otherwise make a line of their own at the priority they name.
fn journal_lines(level: log::Level, target: &str, message: &str) -> String {
    let priority = priority(level);
    let mut out = String::with_capacity(message.len() + target.len() + 8);
    for (i, line) in message.lines().enumerate() {
        let line = super::escape_controls(line);
        if i == 0 {
            let _ = writeln!(out, "<{priority}>{target}: {line}");
        } else {
            let _ = writeln!(out, "<{priority}>{line}");
        }
    }
    if out.is_empty() {
        let _ = writeln!(out, "<{priority}>{target}:");
    }
    out
}

/// Whether stderr is the journal stream systemd connected: `JOURNAL_STREAM` holds its
/// `device:inode`. Compared rather than merely present, because the variable is inherited by
/// processes whose stderr was redirected elsewhere (a terminal, a file).
fn stderr_is_journal() -> bool {
    let Some((device, inode)) = std::env::var("JOURNAL_STREAM")
        .ok()
        .as_deref()
        .and_then(parse_stream)
    else {
        return false;
    };
    let Ok(stderr) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    match std::fs::File::from(stderr).metadata() {
        Ok(meta) => meta.dev() == device && meta.ino() == inode,
        Err(_) => false,
    }
}

/// `"device:inode"`, both decimal.
fn parse_stream(value: &str) -> Option<(u64, u64)> {
    let (device, inode) = value.split_once(':')?;
    Some((device.parse().ok()?, inode.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_level_maps_to_its_syslog_priority() {
        assert_eq!(priority(log::Level::Error), 3);
        assert_eq!(priority(log::Level::Warn), 4);
        assert_eq!(priority(log::Level::Info), 6);
        assert_eq!(priority(log::Level::Debug), 7);
        assert_eq!(priority(log::Level::Trace), 7);
    }

    #[test]
    fn every_line_of_a_message_carries_the_priority() {
        assert_eq!(
            journal_lines(
                log::Level::Error,
                "fpush::daemon",
                "bad file\n  problem 1\n  problem 2"
            ),
            "<3>fpush::daemon: bad file\n<3>  problem 1\n<3>  problem 2\n"
        );
        assert_eq!(
            journal_lines(log::Level::Info, "fpush", "starting"),
            "<6>fpush: starting\n"
        );
        assert_eq!(journal_lines(log::Level::Warn, "fpush", ""), "<4>fpush:\n");
    }

    #[test]
    fn control_characters_cannot_forge_a_journal_line() {
        // journald ends a line at a NUL too, and reads a priority at the start of every line.
        let lines = journal_lines(
            log::Level::Info,
            "fpush",
            "answered: a\0<0>forged\rx\x1b[2J",
        );
        assert_eq!(lines, "<6>fpush: answered: a\\0<0>forged\\rx\\u{1b}[2J\n");
        let kept = journal_lines(log::Level::Info, "fpush", "tab\there\r\nnext");
        assert_eq!(kept, "<6>fpush: tab\there\n<6>next\n");
    }

    #[test]
    fn journal_stream_is_device_colon_inode() {
        assert_eq!(parse_stream("8:123456"), Some((8, 123456)));
        assert_eq!(parse_stream("8"), None);
        assert_eq!(parse_stream("x:1"), None);
        assert_eq!(parse_stream("1:"), None);
    }
}
