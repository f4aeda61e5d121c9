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
