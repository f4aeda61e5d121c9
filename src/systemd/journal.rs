//! How log lines look. Under journald (stderr is the stream `JOURNAL_STREAM` names) each line
//! starts with its syslog priority (`<3>` error … `<7>` debug) and carries no timestamp of its own
//! (journald stamps every line), so `journalctl -p warning` finds warnings; anywhere else
//! env_logger's usual timestamped lines. Under journald records are written by a thread of their
//! own from a bounded queue, so a journald that stops reading never stalls the pushes.

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Records queued for journald at most; while it takes none, newer ones are dropped and counted.
const QUEUED_RECORDS: usize = 10_000;

/// How long the end of the process waits for the queued records to be written.
const FLUSH_WITHIN: Duration = Duration::from_secs(2);

/// The installed logger's queue, for [`flush_logs`].
static INSTALLED: OnceLock<Arc<Backlog>> = OnceLock::new();

/// Whether [`init_logger`] found journald on stderr, for [`print_problem`].
static UNDER_JOURNALD: AtomicBool = AtomicBool::new(false);

/// Install the global logger; `RUST_LOG` overrides `default_filter`.
pub fn init_logger(default_filter: &str) {
    let env = env_logger::Env::default().default_filter_or(default_filter);
    let mut builder = env_logger::Builder::from_env(env);
    if stderr_is_journal() {
        UNDER_JOURNALD.store(true, Ordering::Relaxed);
        builder
            .write_style(env_logger::WriteStyle::Never)
            .format(|buf, record| {
                let message = record.args().to_string();
                let lines = journal_lines(record.level(), record.target(), &message);
                buf.write_all(lines.as_bytes())
            });
        // Without a thread (none can be started) stderr is written directly, as elsewhere.
        if let Ok(detached) = Detached::spawn(io::stderr(), QUEUED_RECORDS) {
            let _ = INSTALLED.set(detached.backlog.clone());
            builder.target(env_logger::Target::Pipe(Box::new(detached)));
        }
    } else {
        builder.format_timestamp_millis();
    }
    builder.init();
}

/// Prints `text` to stderr at `level`, whatever `RUST_LOG` says: a problem that stops fpush or
/// fails `--check`. Under journald every line carries the priority, so `journalctl -p err` finds
/// why a start or a reload was refused (a bare line is filed as info); elsewhere the text as is.
pub fn print_problem(level: log::Level, text: &str) {
    if UNDER_JOURNALD.load(Ordering::Relaxed) {
        eprint!("{}", journal_lines(level, "fpush", text));
    } else {
        eprintln!("{text}");
    }
}

/// Waits, at most [`FLUSH_WITHIN`], until the records queued for journald are written: the
/// process is about to end, and its last lines say why.
pub fn flush_logs() {
    let Some(backlog) = INSTALLED.get() else {
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

/// The logger's target under journald: records go through a bounded queue to a thread that
/// writes them, so a journald that reads slowly or not at all (its socket buffer full, the
/// daemon stuck) costs log lines, never a stalled event loop with every push on it.
struct Detached {
    queue: SyncSender<Vec<u8>>,
    backlog: Arc<Backlog>,
}

impl Detached {
    /// Starts the thread that writes to `out`, with room for `capacity` records.
    fn spawn(out: impl io::Write + Send + 'static, capacity: usize) -> io::Result<Detached> {
        let (queue, records) = mpsc::sync_channel(capacity);
        let backlog = Arc::new(Backlog::default());
        let writer = backlog.clone();
        std::thread::Builder::new()
            .name("fpush-log".into())
            .spawn(move || write_records(out, &records, &writer))?;
        Ok(Detached { queue, backlog })
    }
}

/// env_logger writes each record whole, in one call.
impl io::Write for Detached {
    fn write(&mut self, record: &[u8]) -> io::Result<usize> {
        self.backlog.pending.fetch_add(1, Ordering::AcqRel);
        if self.queue.try_send(record.to_vec()).is_err() {
            self.backlog.pending.fetch_sub(1, Ordering::AcqRel);
            self.backlog.dropped.fetch_add(1, Ordering::Relaxed);
        }
        Ok(record.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The writer thread: each record in turn, after a notice of those dropped before it.
fn write_records(mut out: impl io::Write, records: &Receiver<Vec<u8>>, backlog: &Backlog) {
    for record in records {
        let dropped = backlog.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let notice = format!("{dropped} log records dropped: journald took none for a while");
            let notice = journal_lines(log::Level::Warn, module_path!(), &notice);
            let _ = out.write_all(notice.as_bytes());
        }
        let _ = out.write_all(&record);
        backlog.pending.fetch_sub(1, Ordering::AcqRel);
    }
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
    fn a_journal_that_reads_nothing_does_not_stall_the_logger() {
        let (gate, stuck) = mpsc::channel();
        let mut target = Detached::spawn(Stuck(stuck), 4).unwrap();
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
        let mut target = Detached::spawn(kept.clone(), 8).unwrap();
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
    fn journal_stream_is_device_colon_inode() {
        assert_eq!(parse_stream("8:123456"), Some((8, 123456)));
        assert_eq!(parse_stream("8"), None);
        assert_eq!(parse_stream("x:1"), None);
        assert_eq!(parse_stream("1:"), None);
    }
}
