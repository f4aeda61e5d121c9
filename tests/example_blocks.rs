//! `settings.example.json` shows complete `apple` and `google` modules inside `/* … */`
//! comments. These tests take those blocks out of their comments as an operator would, point
//! their credential paths at files made at test time, and run `fpush --check` on the result: the
//! documented blocks must be a working configuration, not just prose. The settings the app
//! vendors' documents show (`docs/conversations-apps.md`, `docs/siskin-apps.md`) are checked the
//! same way.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use fpush_testkit::apns::ApnsTestKey;
use fpush_testkit::fcm::TestServiceAccount;
use fpush_testkit::tls::{P12Cipher, TestPki};

/// Every key of the `apns` block (ARCHITECTURE.md and issue 3).
const APNS_KEYS: [&str; 22] = [
    "certFilePath",
    "certPassword",
    "keyFilePath",
    "keyId",
    "teamId",
    "topic",
    "environment",
    "endpoint",
    "caFilePath",
    "pushType",
    "alertTitle",
    "alertBody",
    "alertFromSummary",
    "additionalData",
    "collapseId",
    "priority",
    "expiration",
    "requestTimeout",
    "maxConnections",
    "voipTopic",
    "voipCertFilePath",
    "voipCertPassword",
];

/// Every key of the `fcm` block (ARCHITECTURE.md and issue 4).
const FCM_KEYS: [&str; 9] = [
    "fcmSecretPath",
    "endpoint",
    "caFilePath",
    "ttl",
    "collapseKey",
    "additionalData",
    "dataFromSummary",
    "requestTimeout",
    "maxConnections",
];

fn example() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("settings.example.json");
    std::fs::read_to_string(&path).expect("settings.example.json at the repository root")
}

/// One `/* … */` comment of the example: its byte range (markers included) and its inside.
struct BlockComment {
    start: usize,
    end: usize,
    inner: String,
}

/// The block comment that holds a module of `module_type` (`"type": "apple"`).
fn commented_module(text: &str, module_type: &str) -> BlockComment {
    let wanted = format!(r#""type": "{module_type}""#);
    let mut from = 0;
    while let Some(open) = text[from..].find("/*").map(|i| from + i) {
        let close = text[open..]
            .find("*/")
            .map(|i| open + i)
            .unwrap_or_else(|| panic!("unterminated /* at byte {open}"));
        let inner = &text[open + 2..close];
        if inner.contains(&wanted) {
            return BlockComment {
                start: open,
                end: close + 2,
                inner: inner.to_owned(),
            };
        }
        from = close + 2;
    }
    panic!("settings.example.json has no commented module with {wanted}");
}

/// The comment's inside as live settings. Its first line is a description when it does not
/// start with JSON, and stays a `//` comment.
fn uncomment(block: &BlockComment) -> String {
    let (first, rest) = block.inner.split_once('\n').unwrap_or((&block.inner, ""));
    let first = first.trim();
    if first.is_empty() || first.starts_with('"') {
        format!("{first}\n{rest}")
    } else {
        format!("// {first}\n{rest}")
    }
}

/// Replaces the string value of `"key": "…"` on the one line that sets it (not a `//` line).
fn set_string(block: &str, key: &str, value: &str) -> String {
    let needle = format!("\"{key}\":");
    let mut found = 0;
    let lines: Vec<String> = block
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if !trimmed.starts_with(&needle) {
                return line.to_owned();
            }
            found += 1;
            let indent = &line[..line.len() - trimmed.len()];
            let after = trimmed[needle.len()..].trim_start();
            let quoted_end = after[1..]
                .find('"')
                .map(|i| i + 2)
                .unwrap_or_else(|| panic!("{key} is not set to a string: {line}"));
            format!(
                "{indent}{needle} {}{}",
                json_str(value),
                &after[quoted_end..]
            )
        })
        .collect();
    assert_eq!(found, 1, "{key} is set on exactly one live line:\n{block}");
    lines.join("\n")
}

/// The string value of `"key": "…"` on its live line.
fn get_string(block: &str, key: &str) -> String {
    let needle = format!("\"{key}\":");
    let line = block
        .lines()
        .map(str::trim_start)
        .find(|line| line.starts_with(&needle))
        .unwrap_or_else(|| panic!("no live {key} line:\n{block}"));
    let value = line[needle.len()..].trim_start().trim_end_matches(',');
    serde_json::from_str(value).unwrap_or_else(|e| panic!("{key}: {e}: {line}"))
}

/// Turns the `// "key": …` lines of `enable` into live lines and comments out the live lines of
/// `disable` (switching between the two APNS auth modes the block shows).
fn switch_lines(block: &str, enable: &[&str], disable: &[&str]) -> String {
    let starts =
        |text: &str, keys: &[&str]| keys.iter().any(|k| text.starts_with(&format!("\"{k}\":")));
    let mut enabled = 0;
    let lines: Vec<String> = block
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            let indent = &line[..line.len() - trimmed.len()];
            match trimmed.strip_prefix("//").map(str::trim_start) {
                Some(code) if starts(code, enable) => {
                    enabled += 1;
                    format!("{indent}{code}")
                }
                _ if starts(trimmed, disable) => format!("{indent}// {trimmed}"),
                _ => line.to_owned(),
            }
        })
        .collect();
    assert_eq!(
        enabled,
        enable.len(),
        "commented lines for {enable:?}:\n{block}"
    );
    lines.join("\n")
}

/// The example with `block` (a commented module) replaced by `live`.
fn with_live_module(text: &str, block: &BlockComment, live: &str) -> String {
    format!("{}{live}{}", &text[..block.start], &text[block.end..])
}

fn check(dir: &Path, settings: &str) -> Output {
    let path = dir.join("settings.json");
    std::fs::write(&path, settings).unwrap();
    Command::new(env!("CARGO_BIN_EXE_fpush"))
        .arg("--check")
        .arg(&path)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run fpush --check")
}

fn assert_check_passes(out: &Output, module_line: &str, settings: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "fpush --check failed\nstdout: {stdout}\nstderr: {stderr}\nsettings:\n{settings}"
    );
    assert!(
        stdout.contains(module_line),
        "no {module_line:?} in the summary: {stdout}"
    );
}

#[test]
fn the_commented_blocks_show_every_key() {
    let text = example();
    let apple = commented_module(&text, "apple").inner;
    for key in APNS_KEYS {
        assert!(
            apple.contains(&format!("\"{key}\"")),
            "apple block lacks {key}"
        );
    }
    let google = commented_module(&text, "google").inner;
    for key in FCM_KEYS {
        assert!(
            google.contains(&format!("\"{key}\"")),
            "google block lacks {key}"
        );
    }
}

#[test]
fn the_apple_block_with_a_p12_certificate_passes_check() {
    let text = example();
    let block = commented_module(&text, "apple");
    let live = uncomment(&block);
    let dir = tempfile::tempdir().unwrap();
    let p12 = dir.path().join("apns.p12");
    // The password the example shows opens the test certificate.
    let password = get_string(&live, "certPassword");
    TestPki::new()
        .unwrap()
        .client_cert("org.example.app")
        .unwrap()
        .write_p12(&p12, &password, P12Cipher::Modern)
        .unwrap();
    let live = set_string(&live, "certFilePath", &p12.to_string_lossy());

    let settings = with_live_module(&text, &block, &live);
    assert_check_passes(&check(dir.path(), &settings), "type apple", &settings);
}

#[test]
fn the_apple_block_with_a_p8_key_passes_check() {
    let text = example();
    let block = commented_module(&text, "apple");
    let live = switch_lines(
        &uncomment(&block),
        &["keyFilePath", "keyId", "teamId"],
        &["certFilePath", "certPassword"],
    );
    let dir = tempfile::tempdir().unwrap();
    let p8 = dir.path().join("AuthKey.p8");
    ApnsTestKey::generate().unwrap().write_p8(&p8).unwrap();
    let live = set_string(&live, "keyFilePath", &p8.to_string_lossy());

    let settings = with_live_module(&text, &block, &live);
    assert_check_passes(&check(dir.path(), &settings), "type apple", &settings);
}

#[test]
fn the_google_block_with_a_service_account_passes_check() {
    let text = example();
    let block = commented_module(&text, "google");
    let dir = tempfile::tempdir().unwrap();
    let account = dir.path().join("fcm-service-account.json");
    TestServiceAccount::generate("fpush-example", "https://oauth2.googleapis.com/token")
        .write(&account)
        .unwrap();
    let live = set_string(
        &uncomment(&block),
        "fcmSecretPath",
        &account.to_string_lossy(),
    );

    let settings = with_live_module(&text, &block, &live);
    assert_check_passes(&check(dir.path(), &settings), "type google", &settings);
}

#[test]
fn both_blocks_together_pass_check_and_missing_files_are_named() {
    let text = example();
    let apple = commented_module(&text, "apple");
    let google = commented_module(&text, "google");
    assert!(apple.end <= google.start, "the apple block comes first");
    let dir = tempfile::tempdir().unwrap();

    // As shipped, the blocks point at /etc/fpush: uncommented unchanged, --check names the files.
    let untouched = format!(
        "{}{}{}{}{}",
        &text[..apple.start],
        uncomment(&apple),
        &text[apple.end..google.start],
        uncomment(&google),
        &text[google.end..]
    );
    let out = check(dir.path(), &untouched);
    assert!(
        !out.status.success(),
        "--check passed without the credential files"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    for (block, key) in [(&apple, "certFilePath"), (&google, "fcmSecretPath")] {
        let file = get_string(&block.inner, key);
        assert!(stderr.contains(&file), "{file} not named: {stderr}");
    }

    // With credentials in place, all three modules (demo, apple, google) check.
    let p12 = dir.path().join("apns.p12");
    let password = get_string(&apple.inner, "certPassword");
    TestPki::new()
        .unwrap()
        .client_cert("org.example.app")
        .unwrap()
        .write_p12(&p12, &password, P12Cipher::Legacy3Des)
        .unwrap();
    let account = dir.path().join("sa.json");
    TestServiceAccount::generate("fpush-example", "https://oauth2.googleapis.com/token")
        .write(&account)
        .unwrap();
    let settings = format!(
        "{}{}{}{}{}",
        &text[..apple.start],
        set_string(&uncomment(&apple), "certFilePath", &p12.to_string_lossy()),
        &text[apple.end..google.start],
        set_string(
            &uncomment(&google),
            "fcmSecretPath",
            &account.to_string_lossy()
        ),
        &text[google.end..]
    );
    let out = check(dir.path(), &settings);
    for line in ["type demo", "type apple", "type google"] {
        assert_check_passes(&out, line, &settings);
    }
}

/// The first `jsonc` block of `docs/<doc>`.
fn doc_block(doc: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs").join(doc);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{doc}: {e}"));
    let open = "```jsonc\n";
    let start = text
        .find(open)
        .unwrap_or_else(|| panic!("{doc} has no jsonc block"))
        + open.len();
    let end = start + text[start..].find("```").expect("the block is closed");
    text[start..end].to_owned()
}

/// `block` with the files it names under /etc/fpush and /var/lib/fpush moved into `dir`.
fn moved_into(block: &str, dir: &Path) -> String {
    let dir = format!("{}/", dir.to_string_lossy());
    block
        .replace("/etc/fpush/", &dir)
        .replace("/var/lib/fpush/", &dir)
}

/// The string value that follows `"key": ` in `block` (also on a line that sets several keys).
fn value_of(block: &str, key: &str) -> String {
    let needle = format!("\"{key}\": \"");
    let start = block
        .find(&needle)
        .unwrap_or_else(|| panic!("no {key} in:\n{block}"))
        + needle.len();
    let end = start + block[start..].find('"').expect("a closing quote");
    block[start..end].to_owned()
}

fn assert_no_warnings(out: &Output, settings: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("unknown key"),
        "the documented settings warn: {stderr}\nsettings:\n{settings}"
    );
}

#[test]
fn the_conversations_apps_settings_pass_check() {
    let dir = tempfile::tempdir().unwrap();
    let settings = moved_into(&doc_block("conversations-apps.md"), dir.path());
    let account = value_of(&settings, "fcmSecretPath");
    TestServiceAccount::generate("fpush-example", "https://oauth2.googleapis.com/token")
        .write(Path::new(&account))
        .unwrap();
    let out = check(dir.path(), &settings);
    assert_check_passes(&out, "type google", &settings);
    assert_no_warnings(&out, &settings);
}

#[test]
fn the_siskin_apps_module_passes_check() {
    let dir = tempfile::tempdir().unwrap();
    let block = moved_into(&doc_block("siskin-apps.md"), dir.path());
    ApnsTestKey::generate()
        .unwrap()
        .write_p8(Path::new(&value_of(&block, "keyFilePath")))
        .unwrap();
    // The document shows the sections a vendor adds, not the component's.
    let settings = format!(
        "{{\n\"component\": {{\"componentHostname\": \"push.example.org\", \
         \"componentKey\": \"secret\", \"serverHostname\": \"127.0.0.1\", \
         \"serverPort\": 5347}},\n{block}}}\n"
    );
    let out = check(dir.path(), &settings);
    assert_check_passes(&out, "type apple", &settings);
    assert_no_warnings(&out, &settings);
}
