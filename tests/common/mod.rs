//! Shared harness for the integration tests: runs the real `fpush` binary against the fake XMPP
//! server from `fpush-testkit`, with settings written to a temp dir.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

#[allow(unused_imports)]
pub use fpush_testkit::xmpp::{prosody_push_iq, ComponentLink, FakeXmppServer, Stanza};

pub const SECRET: &str = "test-secret";
pub const JID: &str = "push.localhost";
pub const WAIT: Duration = Duration::from_secs(10);

/// A running `fpush` process; killed when dropped.
pub struct Daemon {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    log_path: PathBuf,
}

impl Daemon {
    /// Start fpush with the given settings (JSON text).
    pub fn start(settings: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let settings_path = dir.path().join("settings.json");
        std::fs::write(&settings_path, settings).expect("write settings");
        let log_path = dir.path().join("fpush.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_fpush"))
            .arg(&settings_path)
            .env("RUST_LOG", "fpush=debug,info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start fpush");
        Daemon {
            child: Some(child),
            dir,
            log_path,
        }
    }

    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.log_path) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    /// Send SIGTERM.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Send SIGHUP (reload the settings file).
    pub fn reload(&self) {
        self.signal("HUP");
    }

    fn signal(&self, name: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args([&format!("-{name}"), &child.id().to_string()])
                .status()
                .expect("kill");
            assert!(status.success());
        }
    }

    /// Replace the settings file (takes effect at the next `reload`).
    pub fn rewrite_settings(&self, settings: &str) {
        std::fs::write(self.dir.path().join("settings.json"), settings).expect("write settings");
    }

    /// The process id, for /proc look-ups.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Wait for the process to exit (up to `timeout`).
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = std::time::Instant::now() + timeout;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "fpush did not exit; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                eprintln!("--- fpush log ---\n{}", self.log());
            }
        }
    }
}

/// Settings for a daemon that talks to `server`, with the given `pushModules` JSON and optional
/// extra top-level sections (e.g. `"limits": {...},`).
pub fn settings(server: &FakeXmppServer, modules: &str, extra: &str) -> String {
    format!(
        r#"{{
  "component": {{
    "componentHostname": "{JID}",
    "componentKey": "{SECRET}",
    "serverHostname": "127.0.0.1",
    "serverPort": {port}
  }},
  "timeout": {{ "xmppconnectionError": "200ms" }},
  {extra}
  "pushModules": {modules}
}}"#,
        port = server.port()
    )
}

/// One demo module named `demo`, the default, with the given ratelimit window (`None` = off)
/// and simulated provider delay.
pub fn demo_module(window: Option<&str>, delay: &str) -> String {
    let ratelimit = match window {
        Some(window) => format!(r#"{{ "enabled": true, "ratelimitTime": "{window}" }}"#),
        None => r#"{ "enabled": false }"#.to_owned(),
    };
    format!(
        r#"{{ "demo": {{ "type": "demo", "is_default_module": true, "demo": {{ "delay": "{delay}" }},
              "ratelimit": {ratelimit} }} }}"#
    )
}

/// A push IQ as Prosody sends it, from `localhost` to the component.
pub fn push_iq(id: &str, token: &str, module: Option<&str>) -> String {
    prosody_push_iq(id, "localhost", JID, token, module)
}

/// Assert `stanza` is an error reply of `kind`/`condition` to IQ `id`.
pub fn assert_error(stanza: &Stanza, id: &str, kind: &str, condition: &str) {
    assert_eq!(stanza.name, "iq", "{}", stanza.raw);
    assert_eq!(stanza.attr("id"), Some(id), "{}", stanza.raw);
    assert_eq!(stanza.kind(), Some("error"), "{}", stanza.raw);
    assert_eq!(stanza.error_type.as_deref(), Some(kind), "{}", stanza.raw);
    assert_eq!(
        stanza.error_condition.as_deref(),
        Some(condition),
        "{}",
        stanza.raw
    );
}

/// Assert `stanza` is a result reply to IQ `id`, addressed back to the sender.
pub fn assert_result(stanza: &Stanza, id: &str) {
    assert_eq!(stanza.name, "iq", "{}", stanza.raw);
    assert_eq!(stanza.attr("id"), Some(id), "{}", stanza.raw);
    assert_eq!(stanza.kind(), Some("result"), "{}", stanza.raw);
    assert_eq!(stanza.attr("from"), Some(JID), "{}", stanza.raw);
    assert_eq!(stanza.attr("to"), Some("localhost"), "{}", stanza.raw);
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

// ---------------------------------------------------------------------------------------------
// Provider paths: helpers for the tests that run a push through a real provider module to an
// in-process APNS or FCM test server (`tests/apns_path.rs`, `tests/fcm_path.rs`,
// `tests/example_blocks.rs`).
// ---------------------------------------------------------------------------------------------

/// `value` as a JSON string literal (file paths go into settings through this, quotes included).
pub fn json_str(value: impl AsRef<str>) -> String {
    serde_json::Value::String(value.as_ref().to_owned()).to_string()
}

/// A file path as a JSON string literal.
pub fn json_path(path: &Path) -> String {
    json_str(path.to_string_lossy())
}

/// Send a Prosody-shaped push for `token` to the default module and return the reply.
pub async fn push_and_reply(link: &mut ComponentLink, id: &str, token: &str) -> Stanza {
    link.send(&push_iq(id, token, None))
        .await
        .expect("send push IQ");
    let reply = link.next_stanza(WAIT).await.expect("reply to the push");
    assert_eq!(reply.attr("id"), Some(id), "{}", reply.raw);
    reply
}
