//! How log lines look, and how they reach stderr. Under journald (stderr is the stream
//! `JOURNAL_STREAM` names) each line starts with its syslog priority (`<3>` error … `<7>` debug)
//! and carries no timestamp of its own (journald stamps every line), so `journalctl -p warning`
//! finds warnings; anywhere else (a terminal, a pipe, Docker, a file) env_logger's usual
//! timestamped lines. Either way control characters are escaped and every line of a record
//! carries its priority or header, and records are written by a thread of their own from a
//! bounded queue, so a reader that stops reading never stalls the pushes.

use std::fmt::Write as _;
use std::io::{self, IsTerminal as _, Write as _};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

/// Records queued for stderr at most; while its reader takes none, newer ones are dropped and
/// counted.
const QUEUED_RECORDS: usize = 10_000;

/// How long the end of the process waits for the queued records to be written.
const FLUSH_WITHIN: Duration = Duration::from_secs(2);

/// The installed logger's queue, for [`flush_logs`] and [`print_problem`].
static INSTALLED: OnceLock<Detached> = OnceLock::new();

/// Whether [`init_logger`] found journald on stderr, for [`print_problem`].
static UNDER_JOURNALD: AtomicBool = AtomicBool::new(false);

/// Install the global logger; `RUST_LOG` overrides `default_filter`.
pub fn init_logger(default_filter: &str) {
    let env = env_logger::Env::default().default_filter_or(default_filter);
    let mut builder = env_logger::Builder::from_env(env);
    let notice = if stderr_is_journal() {
        UNDER_JOURNALD.store(true, Ordering::Relaxed);
        builder
            .write_style(env_logger::WriteStyle::Never)
            .format(|buf, record| {
                let message = record.args().to_string();
                let lines = journal_lines(record.level(), record.target(), &message);
                buf.write_all(lines.as_bytes())
            });
        journal_notice
    } else {
        if colours_wanted() {
            // The queue below is a pipe to env_logger, which would not colour it by itself.
            builder.write_style(env_logger::WriteStyle::Always);
        }
        builder.format(|buf, record| {
            let style = buf.default_level_style(record.level());
            let level = format!("{style}{:<5}{style:#}", record.level());
            let header = plain_header(buf.timestamp_millis(), &level, record.target());
            let lines = plain_lines(&header, &record.args().to_string());
            buf.write_all(lines.as_bytes())
        });
        plain_notice
    };
    // Without a thread (none can be started) stderr is written directly.
    if let Ok(detached) = Detached::spawn(io::stderr(), QUEUED_RECORDS, notice) {
        let _ = INSTALLED.set(detached.clone());
        builder.target(env_logger::Target::Pipe(Box::new(detached)));
    }
    builder.init();
}

/// Whether the level is coloured as env_logger would on its own: stderr is a terminal and
/// neither `RUST_LOG_STYLE` (already read by env_logger) nor `NO_COLOR` says otherwise.
fn colours_wanted() -> bool {
    let unset = |name: &str| std::env::var_os(name).is_none_or(|value| value.is_empty());
    unset("RUST_LOG_STYLE") && unset("NO_COLOR") && io::stderr().is_terminal()
}

/// Prints `text` to stderr at `level`, whatever `RUST_LOG` says: a problem that stops fpush or
/// fails `--check`. Under journald every line carries the priority, so `journalctl -p err` finds
/// why a start or a reload was refused (a bare line is filed as info); elsewhere the text as is,
/// control characters escaped. It goes through the logger's queue, behind the records logged
/// before it.
pub fn print_problem(level: log::Level, text: &str) {
    let lines = if UNDER_JOURNALD.load(Ordering::Relaxed) {
        journal_lines(level, "fpush", text)
    } else {
        plain_lines("", text)
    };
    match INSTALLED.get() {
        Some(detached) => detached.queue(lines.into_bytes()),
        None => eprint!("{lines}"),
    }
}

/// Waits, at most `FLUSH_WITHIN`, until the records queued for stderr are written: the
/// process is about to end, and its last lines say why.
pub fn flush_logs() {
    let Some(Detached { backlog, .. }) = INSTALLED.get() else {
        return;
    };
    let deadline = Instant::now() + FLUSH_WITHIN;
    while backlog.pending.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// What one queue holds back: records queued and not yet written, records dropped since the
/// last notice of them.
#[derive(Default)]
struct Backlog {
    pending: AtomicUsize,
    dropped: AtomicU64,
}

/// The logger's target: records go through a bounded queue to a thread that writes them, so a
/// reader that reads slowly or not at all (journald's socket buffer full, a pipe nobody drains,
/// a terminal on hold) costs log lines, never a stalled event loop with every push on it.
#[derive(Clone)]
struct Detached {
    records: SyncSender<Vec<u8>>,
    backlog: Arc<Backlog>,
}

/// The line that tells how many records were dropped, as the writer thread writes it.
type Notice = fn(u64) -> String;

impl Detached {
    /// Starts the thread that writes to `out`, with room for `capacity` records; `notice` says
    /// how many were dropped.
    fn spawn(
        out: impl io::Write + Send + 'static,
        capacity: usize,
        notice: Notice,
    ) -> io::Result<Detached> {
        let (records, queued) = mpsc::sync_channel(capacity);
        let backlog = Arc::new(Backlog::default());
        let writer = backlog.clone();
        std::thread::Builder::new()
            .name("fpush-log".into())
            .spawn(move || write_records(out, &queued, &writer, notice))?;
        Ok(Detached { records, backlog })
    }

    /// Queues `record`, or drops and counts it when the queue is full.
    fn queue(&self, record: Vec<u8>) {
        self.backlog.pending.fetch_add(1, Ordering::AcqRel);
        if self.records.try_send(record).is_err() {
            self.backlog.pending.fetch_sub(1, Ordering::AcqRel);
            self.backlog.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// env_logger writes each record whole, in one call.
impl io::Write for Detached {
    fn write(&mut self, record: &[u8]) -> io::Result<usize> {
        self.queue(record.to_vec());
        Ok(record.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The writer thread: each record in turn, after a notice of those dropped before it.
fn write_records(
    mut out: impl io::Write,
    records: &Receiver<Vec<u8>>,
    backlog: &Backlog,
    notice: Notice,
) {
    for record in records {
        let dropped = backlog.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let _ = out.write_all(notice(dropped).as_bytes());
        }
        let _ = out.write_all(&record);
        backlog.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

fn journal_notice(dropped: u64) -> String {
    let text = format!("{dropped} log records dropped: journald took none for a while");
    journal_lines(log::Level::Warn, module_path!(), &text)
}

fn plain_notice(dropped: u64) -> String {
    let text = format!("{dropped} log records dropped: stderr took none for a while");
    let now = humantime::format_rfc3339_millis(SystemTime::now());
    let level = format!("{:<5}", log::Level::Warn);
    plain_lines(&plain_header(now, &level, module_path!()), &text)
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
    for line in message.lines() {
        let line = super::escape_controls(line);
        for part in parts(&line, JOURNAL_LINE_TEXT) {
            if out.is_empty() {
                let _ = writeln!(out, "<{priority}>{target}: {part}");
            } else {
                let _ = writeln!(out, "<{priority}>{part}");
            }
        }
    }
    if out.is_empty() {
        let _ = writeln!(out, "<{priority}>{target}:");
    }
    out
}

/// The most text one journal line carries, in bytes. journald cuts a longer line at its
/// `LineMax=` (48 KiB by default) and reads a priority at the start of the rest as of any line:
/// the tail of a long text from outside would be filed at a priority of its choosing (or at
/// info). Longer lines go out in parts, each with the priority.
const JOURNAL_LINE_TEXT: usize = 4096;

/// `line` in parts of at most `max` bytes (at least 4), cut between characters; an empty line
/// is one empty part.
fn parts(line: &str, max: usize) -> impl Iterator<Item = &str> {
    let mut rest = Some(line);
    std::iter::from_fn(move || {
        let line = rest.take()?;
        let mut cut = line.len().min(max);
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        let (part, tail) = line.split_at(cut);
        rest = (!tail.is_empty()).then_some(tail);
        Some(part)
    })
}

/// The start of every line of a record outside journald, as env_logger writes it:
/// `[2024-05-01T12:00:00.000Z INFO  fpush::daemon] `.
fn plain_header(timestamp: impl std::fmt::Display, level: &str, target: &str) -> String {
    format!("[{timestamp} {level} {target}] ")
}

/// One record as stderr lines outside journald: every line of the message starts with
/// `header` and has its control characters escaped, so that text from outside (a provider's
/// answer) can neither start a line that passes for another record nor drive a terminal.
fn plain_lines(header: &str, message: &str) -> String {
    let mut out = String::with_capacity(message.len() + header.len() + 1);
    for line in message.lines() {
        let _ = writeln!(out, "{header}{}", super::escape_controls(line));
    }
    if out.is_empty() {
        let _ = writeln!(out, "{}", header.trim_end());
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
    fn a_line_longer_than_journald_reads_at_once_carries_the_priority_on_every_part() {
        // journald cuts a line at LineMax= (48 KiB by default) and reads a priority at the start
        // of what follows, as of any line.
        let line_max = 48 * 1024;
        let text = format!("{}<0>forged", "é".repeat(line_max / 2));
        let lines = journal_lines(log::Level::Warn, "fpush", &text);
        let mut rest = String::new();
        for (i, line) in lines.lines().enumerate() {
            assert!(line.len() < line_max, "a line of {} bytes", line.len());
            let part = line
                .strip_prefix("<4>")
                .expect("the priority on every line");
            rest.push_str(if i == 0 {
                &part["fpush: ".len()..]
            } else {
                part
            });
        }
        assert_eq!(rest, text, "nothing is lost");
    }

    /// A stderr whose reader takes nothing: every write waits until `gate` closes.
    struct Stuck(mpsc::Receiver<()>);

    impl io::Write for Stuck {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            let _ = self.0.recv();
            Err(io::ErrorKind::BrokenPipe.into())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_reader_that_reads_nothing_does_not_stall_the_logger() {
        let (gate, stuck) = mpsc::channel();
        let mut target = Detached::spawn(Stuck(stuck), 4, plain_notice).unwrap();
        let backlog = target.backlog.clone();
        let (done, finished) = mpsc::channel();
        std::thread::spawn(move || {
            for _ in 0..100_000 {
                let _ = target.write_all(b"<6>fpush: a line\n");
            }
            let _ = done.send(());
        });
        finished
            .recv_timeout(Duration::from_secs(5))
            .expect("the logger went on");
        assert!(backlog.dropped.load(Ordering::Relaxed) > 0);
        drop(gate);
    }

    /// A stderr that keeps what it is given.
    #[derive(Clone, Default)]
    struct Kept(Arc<std::sync::Mutex<Vec<u8>>>);

    impl io::Write for Kept {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn queued_records_are_written_in_order_with_a_notice_of_those_dropped() {
        let kept = Kept::default();
        let mut target = Detached::spawn(kept.clone(), 8, journal_notice).unwrap();
        target.backlog.dropped.store(3, Ordering::Relaxed);
        target.write_all(b"<6>fpush: one\n").unwrap();
        target.write_all(b"<6>fpush: two\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while target.backlog.pending.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let written = String::from_utf8(kept.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            written,
            "<4>fpush::systemd::journal: 3 log records dropped: journald took none for a while\n\
             <6>fpush: one\n<6>fpush: two\n"
        );
    }

    #[test]
    fn outside_journald_every_line_carries_the_header_and_controls_are_escaped() {
        let header = plain_header("2026-01-01T00:00:00.000Z", "INFO ", "fpush_apns");
        let lines = plain_lines(
            &header,
            "answered: a\n[2026-01-01T00:00:00.000Z ERROR fpush] forged\x1b[2J\0",
        );
        assert_eq!(
            lines,
            "[2026-01-01T00:00:00.000Z INFO  fpush_apns] answered: a\n\
             [2026-01-01T00:00:00.000Z INFO  fpush_apns] \
             [2026-01-01T00:00:00.000Z ERROR fpush] forged\\u{1b}[2J\\0\n"
        );
        assert_eq!(
            plain_lines(&header, ""),
            "[2026-01-01T00:00:00.000Z INFO  fpush_apns]\n"
        );
        // A problem printed bare keeps its lines, escaped.
        assert_eq!(plain_lines("", "bad file\n  a\rb"), "bad file\n  a\\rb\n");
    }

    #[test]
    fn the_plain_notice_of_dropped_records_is_a_warning_line() {
        let notice = plain_notice(3);
        assert!(notice.starts_with('['), "{notice}");
        assert!(
            notice.ends_with(
                " WARN  fpush::systemd::journal] 3 log records dropped: stderr took none for a while\n"
            ),
            "{notice}"
        );
    }

    #[test]
    fn journal_stream_is_device_colon_inode() {
        assert_eq!(parse_stream("8:123456"), Some((8, 123456)));
        assert_eq!(parse_stream("8"), None);
        assert_eq!(parse_stream("x:1"), None);
        assert_eq!(parse_stream("1:"), None);
    }
}
