//! fpush as systemd sees it: the messages on `NOTIFY_SOCKET` (READY=1 once the component is
//! authenticated, RELOADING=1 … READY=1 around SIGHUP, STOPPING=1 at SIGTERM, WATCHDOG=1 pings),
//! the log format under journald and elsewhere, the shipped unit, and the Debian package (its
//! postinst, and the dependencies the unit needs).

mod common;

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::*;
use tokio::net::UnixDatagram;

/// The daemon with chosen environment variables; stderr goes to `stderr.log` in its temp dir.
struct Service {
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Service {
    /// Start on `settings`; `env` returns extra variables given the stderr file (whose device and
    /// inode a `JOURNAL_STREAM` names).
    fn start(settings: &str, env: impl FnOnce(&Path, &File) -> Vec<(String, String)>) -> Service {
        let dir = tempfile::tempdir().expect("temp dir");
        let settings_path = dir.path().join("settings.json");
        std::fs::write(&settings_path, settings).expect("write settings");
        let stderr = File::create(dir.path().join("stderr.log")).expect("stderr file");
        let vars = env(dir.path(), &stderr);
        let child = Command::new(env!("CARGO_BIN_EXE_fpush"))
            .arg(&settings_path)
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .envs(vars)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start fpush");
        Service {
            child: Some(child),
            dir,
        }
    }

    fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    fn rewrite_settings(&self, settings: &str) {
        std::fs::write(self.dir.path().join("settings.json"), settings).expect("write settings");
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "fpush did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                eprintln!("--- fpush stderr ---\n{}", self.stderr());
            }
        }
    }
}

/// A notify socket in `dir`, as systemd provides one.
fn notify_socket(dir: &Path) -> (UnixDatagram, PathBuf) {
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind notify socket");
    (socket, path)
}

/// The next datagram within `timeout`, if any.
async fn next_message(socket: &UnixDatagram, timeout: Duration) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    let len = tokio::time::timeout(timeout, socket.recv(&mut buf))
        .await
        .ok()?
        .expect("recv");
    Some(String::from_utf8_lossy(&buf[..len]).into_owned())
}

/// Read messages until one has the line `wanted`; return it.
async fn expect_line(socket: &UnixDatagram, wanted: &str) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(message) = next_message(socket, left).await else {
            panic!("no message with {wanted}");
        };
        if message.lines().any(|line| line == wanted) {
            return message;
        }
    }
}

fn has_line(message: &str, wanted: &str) -> bool {
    message.lines().any(|line| line == wanted)
}

#[tokio::test]
async fn notifies_ready_when_authenticated_reloading_ready_around_sighup_and_stopping_at_sigterm() {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let settings = settings(&server, &demo_module(None, "0s"), "");
    let socket_dir = tempfile::tempdir().unwrap();
    let (socket, socket_path) = notify_socket(socket_dir.path());
    let mut fpush = Service::start(&settings, |_, _| {
        vec![(
            "NOTIFY_SOCKET".into(),
            socket_path.to_string_lossy().into_owned(),
        )]
    });

    // Not ready while the server has not authenticated the component.
    let mut before = Vec::new();
    let quiet_until = tokio::time::Instant::now() + Duration::from_millis(500);
    loop {
        let left = quiet_until.saturating_duration_since(tokio::time::Instant::now());
        match next_message(&socket, left).await {
            Some(message) => before.push(message),
            None => break,
        }
    }
    assert!(before.iter().all(|m| !has_line(m, "READY=1")), "{before:?}");

    let mut link = server.accept(WAIT).await.unwrap();
    let ready = expect_line(&socket, "READY=1").await;
    assert!(
        ready.contains("STATUS=component link up (stream fake-stream-"),
        "{ready}"
    );
    link.send(&push_iq("p1", "token-1", None)).await.unwrap();
    assert_result(&link.next_stanza(WAIT).await.unwrap(), "p1");

    // A good reload, then a refused one: each is RELOADING=1 then READY=1.
    for contents in [settings.clone(), "{ \"component\": ".to_owned()] {
        fpush.rewrite_settings(&contents);
        fpush.signal("HUP");
        let reloading = expect_line(&socket, "RELOADING=1").await;
        assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
        let next = next_message(&socket, WAIT)
            .await
            .expect("READY=1 after reload");
        assert_eq!(next, "READY=1\n");
    }

    fpush.signal("TERM");
    let stopping = expect_line(&socket, "STOPPING=1").await;
    // limits.shutdownGrace (10s by default) + 5s to close the stream + 8s for the store's last
    // answers and the log's flush.
    assert!(
        has_line(&stopping, "EXTEND_TIMEOUT_USEC=23000000"),
        "{stopping}"
    );
    assert!(fpush.wait().success());
    while let Some(message) = next_message(&socket, Duration::from_millis(100)).await {
        assert!(!has_line(&message, "READY=1"), "READY=1 after STOPPING=1");
    }
}

/// Opening a registration store may migrate a large file first: start-up asks for more time
/// (and says why) before it opens the store, and READY=1 still comes with the link.
#[tokio::test]
async fn asks_for_more_start_up_time_while_the_registration_store_opens() {
    let fcm = fpush_testkit::fcm::FcmServer::start().await.unwrap();
    let store_dir = tempfile::tempdir().unwrap();
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let module = serde_json::json!({
        "type": "google",
        "fcm": fpush_testkit::settings::with_keys(fcm.settings(), serde_json::json!({})),
        "registration": {"protocol": "p2"},
    });
    let modules = serde_json::json!({ "conversations": module }).to_string();
    let store = serde_json::json!({"path": store_dir.path().join("registrations.sqlite3")});
    let settings = settings(&server, &modules, &format!(r#""store": {store},"#));
    let socket_dir = tempfile::tempdir().unwrap();
    let (socket, socket_path) = notify_socket(socket_dir.path());
    let _fpush = Service::start(&settings, |_, _| {
        vec![(
            "NOTIFY_SOCKET".into(),
            socket_path.to_string_lossy().into_owned(),
        )]
    });
    let extending = expect_line(&socket, "STATUS=opening the registration store").await;
    assert!(
        has_line(&extending, "EXTEND_TIMEOUT_USEC=60000000"),
        "{extending}"
    );
    let _link = server.accept(WAIT).await.unwrap();
    expect_line(&socket, "READY=1").await;
}

#[tokio::test]
async fn pings_the_watchdog_at_half_the_interval() {
    let server = FakeXmppServer::bind(SECRET).await.unwrap();
    let socket_dir = tempfile::tempdir().unwrap();
    let (socket, socket_path) = notify_socket(socket_dir.path());
    let _fpush = Service::start(&settings(&server, &demo_module(None, "0s"), ""), |_, _| {
        vec![
            (
                "NOTIFY_SOCKET".into(),
                socket_path.to_string_lossy().into_owned(),
            ),
            // 2 s: a ping every second.
            ("WATCHDOG_USEC".into(), "2000000".into()),
        ]
    });
    expect_line(&socket, "WATCHDOG=1").await;
    let started = Instant::now();
    let mut pings = 0;
    while pings < 3 {
        let message = next_message(&socket, WAIT).await.expect("a watchdog ping");
        pings += usize::from(has_line(&message, "WATCHDOG=1"));
    }
    let elapsed = started.elapsed();
    // Three more pings take three seconds at half the interval, six at the whole one; the margins
    // absorb a loaded machine.
    assert!(elapsed >= Duration::from_millis(2000), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(5000), "{elapsed:?}");
}

/// Whether `line` holds an ISO 8601 date-time such as `2024-05-01T12:00:00`.
fn has_timestamp(line: &str) -> bool {
    let bytes = line.as_bytes();
    bytes.windows(11).any(|w| {
        w[..4].iter().all(u8::is_ascii_digit)
            && w[4] == b'-'
            && w[5..7].iter().all(u8::is_ascii_digit)
            && w[7] == b'-'
            && w[8..10].iter().all(u8::is_ascii_digit)
            && w[10] == b'T'
    })
}

/// Run the daemon until it is connected, stop it, and return its stderr lines. The settings carry
/// an unknown key, so there is a warning among the info lines.
async fn log_lines(env: impl FnOnce(&Path, &File) -> Vec<(String, String)>) -> Vec<String> {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let settings = settings(&server, &demo_module(None, "0s"), "\"notAKey\": true,");
    let mut fpush = Service::start(&settings, env);
    let _link = server.accept(WAIT).await.unwrap();
    fpush.signal("TERM");
    assert!(fpush.wait().success());
    let lines: Vec<String> = fpush.stderr().lines().map(str::to_owned).collect();
    assert!(lines.iter().any(|l| l.contains("notAKey")), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("starting")), "{lines:#?}");
    lines
}

#[tokio::test]
async fn under_journald_every_line_starts_with_its_priority_and_has_no_timestamp() {
    let lines = log_lines(|_, stderr| {
        let meta = stderr.metadata().expect("stat stderr file");
        vec![(
            "JOURNAL_STREAM".into(),
            format!("{}:{}", meta.dev(), meta.ino()),
        )]
    })
    .await;
    for line in &lines {
        let priority = line.get(..3).unwrap_or_default();
        assert!(["<3>", "<4>", "<6>", "<7>"].contains(&priority), "{line}");
        assert!(!has_timestamp(line), "{line}");
    }
    let warning = lines.iter().find(|l| l.contains("notAKey")).unwrap();
    assert!(warning.starts_with("<4>fpush"), "{warning}");
    let starting = lines.iter().find(|l| l.contains("starting")).unwrap();
    assert!(starting.starts_with("<6>fpush"), "{starting}");
}

#[tokio::test]
async fn elsewhere_lines_keep_their_timestamp_even_with_an_inherited_journal_stream() {
    // No JOURNAL_STREAM, and one naming another file (inherited, stderr redirected): both get
    // the usual format.
    for inherited in [None, Some("1:1")] {
        let lines = log_lines(|_, _| {
            inherited
                .map(|value| ("JOURNAL_STREAM".to_owned(), value.to_owned()))
                .into_iter()
                .collect()
        })
        .await;
        for line in &lines {
            assert!(line.starts_with('['), "{line}");
            assert!(has_timestamp(line), "{line}");
        }
        let warning = lines.iter().find(|l| l.contains("notAKey")).unwrap();
        assert!(warning.contains(" WARN "), "{warning}");
    }
}

/// `TimeoutStopSec=` of the shipped unit, in seconds.
fn unit_stop_timeout() -> Duration {
    let text = unit_text();
    let value = text
        .lines()
        .find_map(|line| line.strip_prefix("TimeoutStopSec="))
        .expect("TimeoutStopSec= in the unit");
    Duration::from_secs(value.trim().parse().expect("TimeoutStopSec in seconds"))
}

#[test]
fn the_units_stop_timeout_exceeds_the_example_shutdown_grace_plus_closing_time() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("settings.example.json");
    let loaded =
        fpush::config::load(&example, &fpush::modules::platforms()).expect("example settings load");
    let grace = loaded.settings.limits.shutdown_grace;
    // The daemon gives the stream 5 s to close after the grace.
    assert!(
        unit_stop_timeout() > grace + Duration::from_secs(5),
        "TimeoutStopSec {:?} vs shutdownGrace {grace:?}",
        unit_stop_timeout()
    );
}

/// The shipped unit's text.
fn unit_text() -> String {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd/fpush.service");
    std::fs::read_to_string(unit).expect("read unit")
}

/// The values of `key=` lines in the unit's `[Unit]` section, split at whitespace.
fn unit_section_values(text: &str, key: &str) -> Vec<String> {
    let prefix = format!("{key}=");
    text.lines()
        .skip_while(|line| line.trim() != "[Unit]")
        .take_while(|line| !line.starts_with("[Service]"))
        .filter_map(|line| line.strip_prefix(prefix.as_str()))
        .flat_map(|value| value.split_whitespace().map(str::to_owned))
        .collect()
}

#[test]
fn the_unit_starts_after_the_clock_is_synchronised_without_pulling_the_sync_in() {
    let text = unit_text();
    let after = unit_section_values(&text, "After");
    assert!(
        after.iter().any(|unit| unit == "time-sync.target"),
        "{after:?}"
    );
    // systemd.special(7): services needing an accurate clock order themselves after the target
    // but do not pull it in; the NTP client's own service does.
    for key in ["Wants", "Requires"] {
        let pulled = unit_section_values(&text, key);
        assert!(
            !pulled.iter().any(|unit| unit == "time-sync.target"),
            "{key}: {pulled:?}"
        );
    }
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let Some(analyze) = systemd_analyze() else {
        eprintln!("systemd-analyze not installed: unit not verified");
        return;
    };
    // The binary is not installed here: point the commands at one that is.
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("fpush.service");
    std::fs::write(&unit, unit_text().replace("/usr/bin/fpush", "/bin/true")).unwrap();
    let output = Command::new(analyze)
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{said}");
    let ours: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("fpush.service"))
        .collect();
    assert!(ours.is_empty(), "{said}");
}

/// The `depends` of the Debian package (`[package.metadata.deb]` in Cargo.toml).
fn package_depends() -> String {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let manifest = std::fs::read_to_string(manifest).expect("read Cargo.toml");
    let depends = manifest
        .lines()
        .skip_while(|line| line.trim() != "[package.metadata.deb]")
        .find_map(|line| line.strip_prefix("depends = "));
    let depends = depends.expect("the package's depends");
    depends.trim().trim_matches('"').to_owned()
}

/// The package that installed `path` here, as `dpkg-query -S` names it; `None` without dpkg or
/// when no package did.
fn owning_package(path: &str) -> Option<String> {
    let output = Command::new("dpkg-query")
        .args(["-S", path])
        .output()
        .ok()?;
    let said = String::from_utf8_lossy(&output.stdout).into_owned();
    let (package, _) = said.lines().next()?.split_once(": ")?;
    output.status.success().then(|| package.to_owned())
}

fn is_essential(package: &str) -> bool {
    let output = Command::new("dpkg-query")
        .args(["-W", "-f", "${Essential}", package])
        .output()
        .expect("dpkg-query");
    String::from_utf8_lossy(&output.stdout).trim() == "yes"
}

#[test]
fn every_command_the_unit_runs_is_essential_or_a_dependency_of_the_package() {
    let depends = package_depends();
    let text = unit_text();
    let commands = text
        .lines()
        .filter_map(|line| line.split_once('='))
        .filter(|(key, _)| key.starts_with("Exec"))
        .filter_map(|(_, command)| command.split_whitespace().next())
        .map(|command| command.trim_start_matches(['-', '@', '+', '!', ':']))
        .filter(|command| *command != "/usr/bin/fpush");
    for command in commands {
        let Some(package) = owning_package(command) else {
            eprintln!("{command}: no package owns it here (no dpkg?): not checked");
            continue;
        };
        let depended = depends
            .split([',', '|'])
            .any(|dependency| dependency.split_whitespace().next() == Some(package.as_str()));
        assert!(
            is_essential(&package) || depended,
            "{command} comes from {package}, neither essential nor in the package's depends ({depends})"
        );
    }
}

/// Where `systemd-analyze` is, if installed.
fn systemd_analyze() -> Option<PathBuf> {
    ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
}

/// `JOURNAL_STREAM` naming `stderr`, as systemd sets it.
fn journal_stream(stderr: &File) -> Vec<(String, String)> {
    let meta = stderr.metadata().expect("stat stderr file");
    vec![(
        "JOURNAL_STREAM".into(),
        format!("{}:{}", meta.dev(), meta.ino()),
    )]
}

#[tokio::test]
async fn under_journald_a_refused_start_says_why_at_error_priority() {
    let server = FakeXmppServer::bind(SECRET).await.unwrap();
    let settings = settings(
        &server,
        &demo_module(None, "0s"),
        "\"limits\": {\"maxDepth\": 3},",
    );
    let mut fpush = Service::start(&settings, |_, stderr| journal_stream(stderr));
    assert!(!fpush.wait().success());
    let stderr = fpush.stderr();
    assert!(stderr.contains("limits.maxDepth"), "{stderr}");
    for line in stderr.lines() {
        assert!(line.starts_with("<3>"), "{line}");
    }
}

/// `fpush --check` on `settings` with stderr taken for journald's: exit code and stderr.
fn check_under_journald(settings: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("settings.json");
    std::fs::write(&path, settings).unwrap();
    let stderr_path = dir.path().join("stderr.log");
    let stderr = File::create(&stderr_path).unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_fpush"))
        .arg("--check")
        .arg(&path)
        .env_remove("NOTIFY_SOCKET")
        .envs(journal_stream(&stderr))
        .stdout(Stdio::null())
        .stderr(stderr)
        .status()
        .unwrap();
    (status.code(), std::fs::read_to_string(stderr_path).unwrap())
}

#[tokio::test]
async fn under_journald_check_files_problems_as_errors_and_warnings() {
    let server = FakeXmppServer::bind(SECRET).await.unwrap();
    let module = demo_module(None, "0s");
    let refused = settings(&server, &module, "\"limits\": {\"maxDepth\": 3},");
    let (code, stderr) = check_under_journald(&refused);
    assert_eq!(code, Some(1));
    let error = stderr.lines().find(|l| l.contains("maxDepth")).unwrap();
    assert!(error.starts_with("<3>"), "{stderr}");
    let warned = settings(&server, &module, "\"notAKey\": 1,");
    let (code, stderr) = check_under_journald(&warned);
    assert_eq!(code, Some(0));
    let warning = stderr.lines().find(|l| l.contains("notAKey")).unwrap();
    assert!(warning.starts_with("<4>"), "{stderr}");
}

/// Runs the package's `postinst configure [configured_before]` on a copy of the system under
/// `root` (its paths moved there), with stand-ins for the commands that need root: `chgrp` fails
/// on a missing file as the real one does. Returns the exit status and stderr.
fn postinst_configure(root: &Path, configured_before: Option<&str>) -> (ExitStatus, String) {
    use std::os::unix::fs::PermissionsExt;
    let script =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("debian/postinst"))
            .expect("read postinst");
    let root_text = root.display().to_string();
    let script = script
        .replace("/etc/fpush", &format!("{root_text}/etc/fpush"))
        .replace("/var/lib/fpush", &format!("{root_text}/var/lib/fpush"))
        .replace("/usr/share/fpush", &format!("{root_text}/usr/share/fpush"));
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for (name, body) in [
        ("systemd-sysusers", "exit 0"),
        ("dpkg-statoverride", "exit 1"),
        (
            "chgrp",
            "[ -e \"$2\" ] || { echo \"chgrp: cannot access '$2'\" >&2; exit 1; }",
        ),
        ("install", "exit 0"),
    ] {
        let path = bin.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let script_path = root.join("postinst");
    std::fs::write(&script_path, script).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new("sh")
        .arg(&script_path)
        .arg("configure")
        .args(configured_before)
        .env("PATH", path)
        .output()
        .expect("run postinst");
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn postinst_puts_the_example_settings_in_place_at_the_first_installation_only() {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let (etc, share) = (
        root.path().join("etc/fpush"),
        root.path().join("usr/share/fpush"),
    );
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("settings.example.json"), "{\"demo\": true}").unwrap();
    let settings = etc.join("settings.json");
    let (status, stderr) = postinst_configure(root.path(), None);
    assert!(status.success(), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&settings).unwrap(),
        "{\"demo\": true}"
    );
    let mode = std::fs::metadata(&settings).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o640, "never world-readable");

    // An upgrade keeps the operator's settings as they are, without asking.
    std::fs::write(&settings, "{\"mine\": true}").unwrap();
    let (status, stderr) = postinst_configure(root.path(), Some("0.1.0"));
    assert!(status.success(), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&settings).unwrap(),
        "{\"mine\": true}"
    );
    // Removed by the operator (settings kept elsewhere): an upgrade neither fails over it nor
    // brings it back.
    std::fs::remove_file(&settings).unwrap();
    let (status, stderr) = postinst_configure(root.path(), Some("0.1.0"));
    assert!(status.success(), "{stderr}");
    assert!(!settings.exists());
}
