//! Outside journald (stderr a pipe, a file, Docker's log driver) log records go through the same
//! bounded queue and writer thread as under journald: a reader that stops reading costs log
//! lines, never the pushes; and every line starts with its header.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};

use common::*;

const PUSHES: usize = 3_000;
const BATCH: usize = 100;

#[tokio::test]
async fn a_stderr_pipe_nobody_reads_does_not_stall_the_pushes() {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("settings.json");
    std::fs::write(&path, settings(&server, &demo_module(None, "0s"), "")).unwrap();
    // The demo module's debug line: one per push, far more than the 64 KiB a pipe holds, and
    // fewer than the queue holds.
    let mut child = Command::new(env!("CARGO_BIN_EXE_fpush"))
        .arg(&path)
        .env("RUST_LOG", "fpush_demo=debug,info")
        .env_remove("JOURNAL_STREAM")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut link = connect(&mut server).await;
    for batch in 0..PUSHES / BATCH {
        for n in 0..BATCH {
            let id = format!("p{batch}-{n}");
            link.send(&push_iq(&id, &format!("token-{batch}-{n}"), None))
                .await
                .unwrap();
        }
        for _ in 0..BATCH {
            let reply = link.next_stanza(WAIT).await.unwrap_or_else(|error| {
                let _ = child.kill();
                panic!("no reply after {batch} batches of {BATCH}: {error}")
            });
            assert_eq!(reply.kind(), Some("result"), "{}", reply.raw);
        }
    }

    // Now read: the queued records come out whole, in order, each line with its header.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let reading = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).map(|_| text)
    });
    assert!(child.wait().unwrap().success());
    let text = reading.join().unwrap().unwrap();
    for line in text.lines() {
        assert!(line.starts_with('['), "{line}");
    }
    let delivered = text.matches("push delivered").count();
    let last: Vec<&str> = text.lines().rev().take(5).collect();
    assert_eq!(delivered, PUSHES, "{last:#?}");
}
