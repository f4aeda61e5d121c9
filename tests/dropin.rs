//! A drop-in for the original fpush (monal-im/fpush): a settings file with every key its code
//! reads loads with the real platforms, keys this version does not use only warn, and secrets
//! and exposed credential files are handled as an operator of a public service needs.

#![cfg(all(
    feature = "enable_apns_support",
    feature = "enable_fcm_support",
    feature = "enable_demo_support"
))]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use fpush::config::{self, Loaded};

fn parse(text: &str) -> Loaded {
    config::parse(text, &fpush::modules::platforms()).unwrap_or_else(|errors| panic!("{errors}"))
}

fn debug_of(loaded: &Loaded, id: &str) -> String {
    let module = loaded.settings.module(id).expect("module");
    format!("{:?}", module.config)
}

#[test]
fn every_key_of_the_original_is_accepted_and_unused_ones_only_warn() {
    let text = std::fs::read_to_string(common::fixture("config/original-fpush-settings.json"))
        .expect("fixture");
    let loaded = parse(&text);
    let s = &loaded.settings;
    assert_eq!(s.component.server_port, 5347);
    assert_eq!(s.timeout.xmpp_connection_error, Duration::from_secs(10));
    assert_eq!(
        s.default_module().map(|m| m.id.as_str()),
        Some("monalProdiOS")
    );
    let apns = debug_of(&loaded, "monalProdiOS");
    assert!(apns.contains("request_timeout: 5s"), "{apns}");
    assert!(apns.contains("environment: Sandbox"), "{apns}");
    assert!(debug_of(&loaded, "someAndroidApp").contains("fcm-service-account.json"));
    let android = &s.module("someAndroidApp").expect("module").ratelimit;
    assert!(!android.enabled);
    assert_eq!(android.ratelimit_time, Duration::from_secs(10));

    let warned: Vec<&str> = loaded.warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(
        warned,
        [
            "pushModules.monalProdiOS.apns.poolIdleTimeout",
            "pushModules.monalProdiOS.blacklist",
            "pushModules.monalProdiOS.ratelimit.hardRatelimitTime",
            "pushModules.someAndroidApp.ratelimit.hardRatelimitTime",
        ]
    );
    for warning in &loaded.warnings {
        assert!(warning.message.contains("not used"), "{warning}");
    }
}

#[test]
fn request_timeout_takes_whole_seconds_or_text_on_both_providers() {
    for (value, expected) in [("5", "5s"), ("\"5s\"", "5s"), ("\"1500ms\"", "1s 500ms")] {
        let text = format!(
            r#"{{ "component": {{ "componentHostname": "push.example.org", "componentKey": "k",
                               "serverHostname": "127.0.0.1", "serverPort": 5347 }},
                 "pushModules": {{
                   "ios": {{ "type": "apple", "apns": {{ "certFilePath": "c.p12", "topic": "t",
                                                        "requestTimeout": {value} }} }},
                   "android": {{ "type": "google", "fcm": {{ "fcmSecretPath": "sa.json",
                                                            "requestTimeout": {value} }} }} }} }}"#
        );
        let loaded = parse(&text);
        for id in ["ios", "android"] {
            let debug = debug_of(&loaded, id);
            let wanted = format!("request_timeout: {:?}", humantime_parse(expected));
            assert!(debug.contains(&wanted), "{id} {value}: {debug}");
        }
    }
}

fn humantime_parse(text: &str) -> Duration {
    fpush_traits::settings::parse_duration(text).expect("duration")
}

const SECRETS: &str = r#"{
  "component": { "componentHostname": "push.example.org", "componentKey": "component-secret-1",
                 "serverHostname": "127.0.0.1", "serverPort": 5347 },
  "pushModules": {
    "ios": { "type": "apple", "apns": { "certFilePath": "CERT", "certPassword": "cert-secret-2",
                                        "topic": "org.example" } },
    "android": { "type": "google", "fcm": { "fcmSecretPath": "SA" } }
  },
  "redis": { "url": "redis://fpush:redis-secret-3@127.0.0.1:6379/0" }
}"#;

#[test]
fn debug_of_the_settings_shows_no_secret() {
    let loaded = parse(SECRETS);
    let debug = format!("{loaded:?}");
    for secret in ["component-secret-1", "cert-secret-2", "redis-secret-3"] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
    assert!(debug.contains("org.example"), "{debug}");
}

fn write_with_mode(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn world_readable_settings_and_credential_files_are_warned_about() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cert = dir.path().join("apns.p12");
    let account = dir.path().join("sa.json");
    write_with_mode(&cert, "not a real certificate", 0o644);
    write_with_mode(&account, "{}", 0o600);
    let settings = dir.path().join("settings.json");
    let text = SECRETS
        .replace("CERT", &cert.display().to_string())
        .replace("SA", &account.display().to_string());
    write_with_mode(&settings, &text, 0o600);
    let loaded = config::load(&settings, &fpush::modules::platforms()).expect("loads");

    let warnings = config::exposure_warnings(&settings, &loaded.settings);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].path, "pushModules.ios.apns");
    assert!(warnings[0].line.is_some());
    let message = &warnings[0].message;
    assert!(message.contains("readable by everyone"), "{message}");
    assert!(message.contains(&cert.display().to_string()), "{message}");

    std::fs::set_permissions(&cert, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    std::fs::set_permissions(&settings, std::fs::Permissions::from_mode(0o664)).expect("chmod");
    let warnings = config::exposure_warnings(&settings, &loaded.settings);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].path, "");
    assert!(
        warnings[0].message.contains("writable by its group"),
        "{warnings:?}"
    );
}
