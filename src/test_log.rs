//! Log lines captured in unit tests. A process has one logger, so the test binary installs one
//! that hands each record to the test running on the record's thread, if it is collecting.

use std::cell::RefCell;

thread_local! {
    /// The target prefix this thread's test collects, and the lines so far.
    static COLLECTING: RefCell<Option<(String, Vec<String>)>> = const { RefCell::new(None) };
}

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        COLLECTING.with(|collecting| {
            if let Some((target, lines)) = collecting.borrow_mut().as_mut() {
                if record.target().starts_with(&**target) && record.level() <= log::Level::Info {
                    lines.push(record.args().to_string());
                }
            }
        });
    }

    fn flush(&self) {}
}

/// Starts collecting the lines of at least info level, whose target starts with `target`,
/// logged on this thread from now on.
pub(crate) fn collect(target: &str) {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        if log::set_logger(&Capture).is_ok() {
            log::set_max_level(log::LevelFilter::Trace);
        }
    });
    COLLECTING.with(|collecting| *collecting.borrow_mut() = Some((target.to_owned(), Vec::new())));
}

/// The lines collected since [`collect`]; collecting stops.
pub(crate) fn collected() -> Vec<String> {
    COLLECTING
        .with(|collecting| collecting.borrow_mut().take().map(|(_, lines)| lines))
        .unwrap_or_default()
}
