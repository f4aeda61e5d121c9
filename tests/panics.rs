//! A panic inside a platform's send is survived, and logged like the other loud lines: one
//! error line a minute at most, counting those held back (a platform that panics on every push
//! must not flood the log). Own test binary: the panic hook and the logger are process-wide.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use fpush::panics::{install_hook, Contained, Panicked};

/// Every log record of this process, with its level.
struct Capture(Mutex<Vec<(log::Level, String)>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        let line = record.args().to_string();
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((record.level(), line));
    }
    fn flush(&self) {}
}

static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));

/// The lines about contained panics so far, at error and at debug level, emptied.
fn panic_lines() -> (Vec<String>, usize) {
    let mut records = CAPTURE.0.lock().unwrap_or_else(|e| e.into_inner());
    let ours = records
        .drain(..)
        .filter(|(_, line)| line.contains("panicked"));
    let (mut errors, mut debug) = (Vec::new(), 0);
    for (level, line) in ours {
        match level {
            log::Level::Error => errors.push(line),
            _ => debug += 1,
        }
    }
    (errors, debug)
}

/// `count` pushes whose send panics, under fpush's panic hook (put back to the default after,
/// so that a failed assertion of this test reads as one, not as exit status 70).
async fn panics_in_send(count: usize) {
    install_hook();
    for _ in 0..count {
        let send: Pin<Box<dyn Future<Output = ()> + Send>> =
            Box::pin(async { panic!("provider bug") });
        assert_eq!(Contained(send).await, Err(Panicked));
    }
    drop(std::panic::take_hook());
}

#[tokio::test(start_paused = true)]
async fn a_platform_that_panics_on_every_push_logs_one_error_a_minute_counting_the_others() {
    log::set_logger(&CAPTURE).unwrap();
    log::set_max_level(log::LevelFilter::Trace);

    panics_in_send(100).await;
    let (errors, debug) = panic_lines();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].contains("provider bug"), "{}", errors[0]);
    assert_eq!(debug, 99);

    tokio::time::advance(Duration::from_secs(60)).await;
    panics_in_send(1).await;
    let (errors, debug) = panic_lines();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].contains("99 more like it"), "{}", errors[0]);
    assert_eq!(debug, 0);
}

/// Set in the child process that [`a_panic_outside_a_push_is_one_escaped_record_then_exit_70`]
/// starts: it panics there, outside a push, under the real logger.
const CHILD: &str = "FPUSH_TEST_PANIC_OUTSIDE_A_PUSH";

/// Runs this test binary's panicking child; its exit code and stderr.
fn panic_in_child(backtrace: bool) -> (Option<i32>, String) {
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "a_panic_outside_a_push_is_one_escaped_record_then_exit_70",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .env_remove("RUST_BACKTRACE")
        .stdout(std::process::Stdio::null());
    if backtrace {
        command.env("RUST_BACKTRACE", "1");
    }
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code(), stderr)
}

#[test]
fn a_panic_outside_a_push_is_one_escaped_record_then_exit_70() {
    if std::env::var_os(CHILD).is_some() {
        fpush::systemd::journal::init_logger("info");
        install_hook();
        // A message carrying outside text: a terminal escape and a line of its own.
        panic!("bad stanza \u{1b}[2J\nFORGED record");
    }
    for backtrace in [false, true] {
        let (code, stderr) = panic_in_child(backtrace);
        assert_eq!(code, Some(fpush::panics::EXIT_ON_PANIC), "{stderr}");
        assert!(
            !stderr.contains('\u{1b}'),
            "a raw control character: {stderr:?}"
        );
        // Every line carries the log's header: none passes for a record of its own.
        for line in stderr.lines() {
            assert!(line.starts_with('['), "{line:?} in {stderr}");
        }
        let told: Vec<&str> = stderr.lines().filter(|l| l.contains("panicked")).collect();
        assert_eq!(told.len(), 1, "{stderr}");
        assert!(told[0].contains("ERROR"), "{}", told[0]);
        assert!(told[0].contains("tests/panics.rs:"), "where: {}", told[0]);
        assert!(stderr.contains("bad stanza \\u{1b}[2J"), "{stderr}");
        assert_eq!(stderr.contains("stack backtrace"), backtrace, "{stderr}");
    }
}
