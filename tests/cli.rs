//! The command line: `--version`, `--help`, and `--check` on good and broken settings.

mod common;

use std::process::{Command, Output};

fn fpush(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fpush"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "warn")
        .output()
        .expect("run fpush")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn version_and_help() {
    let out = fpush(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout).trim(),
        format!("fpush {}", env!("CARGO_PKG_VERSION"))
    );
    let out = fpush(&["--help"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("--check"));
    let out = fpush(&["--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn check_passes_on_the_example_settings() {
    let out = fpush(&["--check", "settings.example.json"]);
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("type demo"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn check_names_the_missing_credential_files_of_the_documented_example() {
    let seed = common::fixture("seed-example-settings.json");
    let out = fpush(&["--check", seed.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("/etc/fpush/apns.p12"), "{stderr}");
    assert!(
        stderr.contains("/etc/fpush/fcm-service-account.json"),
        "{stderr}"
    );
    assert!(stderr.contains("monalProdiOS"), "{stderr}");
}

#[test]
fn check_reports_key_path_and_line_of_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("settings.json");
    std::fs::write(
        &path,
        r#"{
  "component": { "componentHostname": "push.example.org", "componentKey": "k",
                 "serverHostname": "127.0.0.1", "serverPort": 5347 },
  "pushModules": {
    "demo": { "type": "demo",
              "ratelimit": { "ratelimitTime": "twenty seconds" } }
  }
}"#,
    )
    .unwrap();
    let out = fpush(&["--check", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("pushModules.demo.ratelimit.ratelimitTime"),
        "{stderr}"
    );
    assert!(stderr.contains("line 6"), "{stderr}");
}

#[test]
fn a_missing_settings_file_is_named() {
    let out = fpush(&["--check", "/nonexistent/settings.json"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("/nonexistent/settings.json"));
}

#[test]
fn check_reports_settings_errors_and_credential_errors_in_one_run() {
    let seed = std::fs::read_to_string(common::fixture("seed-example-settings.json")).unwrap();
    let broken = seed.replace("\"ratelimitTime\": \"20s\"", "\"ratelimitTime\": \"soon\"");
    assert_ne!(broken, seed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("settings.json");
    std::fs::write(&path, broken).unwrap();
    let out = fpush(&["--check", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("pushModules.monalProdiOS.ratelimit.ratelimitTime"),
        "{stderr}"
    );
    assert!(stderr.contains("/etc/fpush/apns.p12"), "{stderr}");
    assert!(
        stderr.contains("/etc/fpush/fcm-service-account.json"),
        "{stderr}"
    );
}

/// A valid demo settings file in a temp dir, with `extra` top-level sections, at `mode`.
fn settings_file(extra: &str, mode: u32) -> (tempfile::TempDir, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("settings.json");
    let text = format!(
        r#"{{
  "component": {{ "componentHostname": "push.example.org", "componentKey": "k",
                 "serverHostname": "127.0.0.1", "serverPort": 5347 }},
  "pushModules": {{ "demo": {{ "type": "demo" }} }}{extra}
}}"#
    );
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    (dir, path)
}

#[test]
fn check_prints_its_warnings_whatever_rust_log_says() {
    let (_dir, path) = settings_file(",\n  \"tmeout\": {}", 0o600);
    let out = Command::new(env!("CARGO_BIN_EXE_fpush"))
        .args(["--check", path.to_str().unwrap()])
        .env("RUST_LOG", "off")
        .output()
        .expect("run fpush");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("warning: "), "{stderr}");
    assert!(stderr.contains("tmeout: unknown key"), "{stderr}");
}

#[test]
fn check_warns_about_a_world_readable_settings_file() {
    let (_dir, path) = settings_file("", 0o644);
    let out = fpush(&["--check", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("readable by everyone"), "{stderr}");
    let (_dir, private) = settings_file("", 0o600);
    let out = fpush(&["--check", private.to_str().unwrap()]);
    assert!(
        !text(&out.stderr).contains("readable"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_metrics_address_that_cannot_be_bound_stops_start_up() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap();
    let (_dir, path) = settings_file(
        &format!(",\n  \"metrics\": {{ \"listen\": \"{listen}\" }}"),
        0o600,
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_fpush"))
        .arg(&path)
        .env("RUST_LOG", "off")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start fpush");
    let deadline = std::time::Instant::now() + common::WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("fpush kept running although metrics.listen was taken");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("metrics.listen"), "{stderr}");
    assert!(stderr.contains(&listen.to_string()), "{stderr}");
}

#[test]
fn check_shows_the_warnings_of_a_file_that_has_errors() {
    let (_dir, path) = settings_file(",\n  \"tmeout\": {}", 0o600);
    let misspelt = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"componentKey\"", "\"componentKye\"");
    std::fs::write(&path, misspelt).unwrap();
    let out = fpush(&["--check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("component"), "{stderr}");
    assert!(stderr.contains("componentKye: unknown key"), "{stderr}");
    assert!(stderr.contains("tmeout: unknown key"), "{stderr}");
}
