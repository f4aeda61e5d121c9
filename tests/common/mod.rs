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

    /// The log once `done` holds for it (or after [`WAIT`]): records reach the file through the
    /// logger's own thread, so a line logged before a reply may land just after it.
    pub fn log_once(&self, done: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let log = self.log();
            if done(&log) || std::time::Instant::now() >= deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log once it holds `text` (or after [`WAIT`]).
    pub fn log_with(&self, text: &str) -> String {
        self.log_once(|log| log.contains(text))
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

/// Assert that a reply took `limit` (a request timeout), give or take the scheduling of a busy
/// machine: not sooner, and not much later.
pub fn assert_answered_at_the_timeout(took: Duration, limit: Duration) {
    assert!(
        took >= limit,
        "answered after {took:?}, before the {limit:?} request timeout"
    );
    assert!(
        took < limit + Duration::from_millis(1500),
        "answered after {took:?}, long after the {limit:?} request timeout"
    );
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

/// The path of `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The bytes of `tests/fixtures/<name>`.
pub fn fixture_bytes(name: &str) -> Vec<u8> {
    let path = fixture(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A free loopback port, bound and released at once: good enough on loopback for a listener
/// the test starts next (a metrics listener, a `redis-server`).
#[allow(unused_imports)] // not every test binary starts a listener
pub use fpush_testkit::redis_server::free_port;

/// Waits for fpush to connect to `server` and complete its handshake.
pub async fn connect(server: &mut FakeXmppServer) -> ComponentLink {
    server.accept(WAIT).await.expect("fpush connects")
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

// ---- Hardening helpers (tests/hostile.rs, tests/faults.rs, tests/flapping.rs) ----

/// Settings like [`settings`], with the whole `timeout` section given (JSON members).
pub fn settings_with_timeouts(
    server: &FakeXmppServer,
    modules: &str,
    timeouts: &str,
    extra: &str,
) -> String {
    settings_on_port(server.port(), modules, timeouts, extra)
}

/// Settings for a daemon that connects to `port`, whatever listens there.
pub fn settings_on_port(port: u16, modules: &str, timeouts: &str, extra: &str) -> String {
    format!(
        r#"{{
  "component": {{
    "componentHostname": "{JID}",
    "componentKey": "{SECRET}",
    "serverHostname": "127.0.0.1",
    "serverPort": {port}
  }},
  "timeout": {{ {timeouts} }},
  {extra}
  "pushModules": {modules}
}}"#
    )
}

impl Daemon {
    /// Resident memory of the process in KiB (`VmRSS` in `/proc/PID/status`).
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Fails the test if fpush panicked anywhere (it logs panics like any other line).
    pub fn assert_no_panic(&mut self) {
        let log = self.log();
        assert!(!log.contains("panicked"), "fpush panicked:\n{log}");
        assert!(self.is_running(), "fpush exited:\n{log}");
    }
}

/// A `pushModules` object with one default `apple` module called `apns`, ratelimit off, using
/// token auth against `apns` with the given request timeout.
pub fn apns_modules(apns: &fpush_testkit::apns::ApnsHarness, request_timeout: &str) -> String {
    let block = fpush_testkit::settings::with_keys(
        apns.token_settings(),
        serde_json::json!({ "requestTimeout": request_timeout }),
    );
    serde_json::json!({ "apns": { "type": "apple", "is_default_module": true,
        "ratelimit": { "enabled": false }, "apns": block } })
    .to_string()
}

/// Replies grouped by IQ id, for "every push answered exactly once" checks.
pub fn by_id(replies: &[Stanza]) -> std::collections::HashMap<String, Vec<Stanza>> {
    let mut map: std::collections::HashMap<String, Vec<Stanza>> = Default::default();
    for reply in replies {
        map.entry(reply.attr("id").unwrap_or_default().to_owned())
            .or_default()
            .push(reply.clone());
    }
    map
}
