//! A SIGHUP that comes while fpush is still starting (reading its settings, building its modules:
//! seconds with credential files) does not end the process; the reload it asks for is applied
//! once the daemon runs. The settings file is a FIFO, so that start-up waits for the test, with
//! no timing assumed.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

/// Serves `settings` through the FIFO at `path`, once per word on `go`: the first time fpush
/// opens it, `opened` is told and the writing waits for `go`; later, each `go` lets the next
/// reader have it. (A writer that opened again at once would join the reader still reading.)
fn serve_fifo(path: PathBuf, settings: String, opened: mpsc::Sender<()>, go: mpsc::Receiver<()>) {
    std::thread::spawn(move || {
        for reader in 0.. {
            if reader > 0 && go.recv().is_err() {
                return;
            }
            // Opening for writing waits until fpush opens the file for reading.
            let Ok(mut fifo) = std::fs::OpenOptions::new().write(true).open(&path) else {
                return;
            };
            if opened.send(()).is_err() || (reader == 0 && go.recv().is_err()) {
                return;
            }
            let _ = fifo.write_all(settings.as_bytes());
        }
    });
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().expect("mkfifo");
    assert!(status.success());
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Waits until the log of `child` (read by `log`) holds `text`.
fn wait_for(child: &mut Child, log: &dyn Fn() -> String, text: &str) {
    let deadline = Instant::now() + WAIT;
    while !log().contains(text) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("fpush ended ({status}) before {text:?}:\n{}", log());
        }
        assert!(
            Instant::now() < deadline,
            "no {text:?} in the log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn a_sighup_while_the_settings_load_is_applied_once_the_daemon_runs() {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("settings.json");
    let log_path = dir.path().join("fpush.log");
    mkfifo(&path);
    let (opened_tx, opened) = mpsc::channel();
    let (go, go_rx) = mpsc::channel();
    let text = settings(&server, &demo_module(None, "0s"), "");
    serve_fifo(path.clone(), text, opened_tx, go_rx);
    let mut child = Command::new(env!("CARGO_BIN_EXE_fpush"))
        .arg(&path)
        .env("RUST_LOG", "fpush=debug,info")
        .env_remove("JOURNAL_STREAM")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // fpush is reading its settings: SIGHUP now, then let the reading go on.
    opened.recv_timeout(WAIT).expect("fpush reads its settings");
    signal(child.id(), "HUP");
    go.send(()).unwrap();
    // The file is read (and closed) once fpush says it starts; the reload reads it again.
    wait_for(&mut child, &log, "starting");
    go.send(()).unwrap();

    let connected = server.accept(WAIT).await;
    if let Ok(Some(status)) = child.try_wait() {
        panic!("fpush ended at the SIGHUP: {status}\n{}", log());
    }
    let mut link = connected.expect("fpush connects");
    opened
        .recv_timeout(WAIT)
        .expect("the early SIGHUP reloads the settings");
    wait_for(&mut child, &log, "reloaded ");
    link.send(&push_iq("after", "token-after", None))
        .await
        .unwrap();
    assert_result(&link.next_stanza(WAIT).await.unwrap(), "after");

    signal(child.id(), "TERM");
    assert!(child.wait().unwrap().success(), "{}", log());
}
