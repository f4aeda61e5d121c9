//! Loading settings files: the documented examples, every kind of mistake an operator makes
//! (each reported with its key path and the right line), warnings for keys nobody reads, the
//! platform blocks, and input that is not a settings file at all.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use fpush::config::{
    self, ConfigError, ConfigErrors, Loaded, ModuleType, RatelimitBackend, RejectWith,
};
use serde::Deserialize;

use common::fixture;

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("settings.example.json")
}

/// The 1-based line of the first line of `text` containing `marker`.
fn line_of(text: &str, marker: &str) -> usize {
    text.lines()
        .position(|line| line.contains(marker))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("marker {marker:?} not in the text"))
}

fn errors_of(text: &str) -> Vec<ConfigError> {
    match config::parse(text) {
        Ok(loaded) => panic!("expected errors, got {:?}", loaded.settings),
        Err(ConfigErrors(errors)) => errors,
    }
}

fn loaded(text: &str) -> Loaded {
    config::parse(text).unwrap_or_else(|errors| panic!("unexpected errors:\n{errors}"))
}

/// The one error with this key path.
fn error_at<'a>(errors: &'a [ConfigError], path: &str) -> &'a ConfigError {
    errors
        .iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| panic!("no error at {path}; errors: {errors:#?}"))
}

/// A valid settings file whose module section is `modules` and whose other sections are `extra`.
fn settings_with(modules: &str, extra: &str) -> String {
    format!(
        r#"{{
  "component": {{
    "componentHostname": "push.example.org",
    "componentKey": "secret",
    "serverHostname": "127.0.0.1",
    "serverPort": 5347
  }},
  "pushModules": {{
{modules}
  }}{extra}
}}
"#
    )
}

const DEMO: &str = r#"    "demo": { "type": "demo", "is_default_module": true }"#;

// ---------------------------------------------------------------------------------------------
// The documented examples

#[cfg(all(feature = "enable_apns_support", feature = "enable_fcm_support"))]
#[test]
fn seed_example_parses_with_its_values() {
    let loaded = config::load(&fixture("seed-example-settings.json")).unwrap();
    let s = &loaded.settings;
    assert_eq!(s.component.component_hostname, "push.example.org");
    assert_eq!(
        s.component.component_key,
        "ARandomComponentKeySetInsideTheXMPPServer"
    );
    assert_eq!(s.component.server_hostname, "127.0.0.1");
    assert_eq!(s.component.server_port, 5347);
    let ids: Vec<&str> = s.push_modules.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["monalProdiOS", "someAndroidApp"], "file order");
    assert_eq!(s.push_modules[0].module_type, ModuleType::Apple);
    assert_eq!(s.push_modules[1].module_type, ModuleType::Google);
    assert_eq!(
        s.default_module().map(|m| m.id.as_str()),
        Some("monalProdiOS")
    );
    let ratelimit = &s.push_modules[0].ratelimit;
    assert!(ratelimit.enabled);
    assert_eq!(ratelimit.ratelimit_time, Duration::from_secs(20));
    assert_eq!(
        ratelimit.ratelimit_cleanup_interval,
        Duration::from_secs(300)
    );
    assert_eq!(s.timeout.xmpp_connection_error, Duration::from_secs(20));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn settings_example_parses_without_warnings() {
    let loaded = config::load(&example_path()).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let s = &loaded.settings;
    assert_eq!(s.push_modules.len(), 1);
    let demo = &s.push_modules[0];
    assert_eq!(demo.module_type, ModuleType::Demo);
    assert!(demo.is_default_module);
    assert_eq!(s.limits.max_stanza_size, 256 * 1024);
    assert_eq!(s.dead_tokens.remember, Duration::from_secs(24 * 3600));
}

/// The example with its commented-out modules and sections switched on, as an operator would.
fn example_uncommented() -> String {
    let text = std::fs::read_to_string(example_path()).unwrap();
    text.lines()
        .filter(|line| {
            let line = line.trim();
            !line.starts_with("/*") && line != "*/"
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(all(feature = "enable_apns_support", feature = "enable_fcm_support"))]
#[test]
fn settings_example_commented_modules_are_complete_and_valid() {
    let loaded = loaded(&example_uncommented());
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let s = &loaded.settings;
    let types: Vec<ModuleType> = s.push_modules.iter().map(|m| m.module_type).collect();
    assert_eq!(
        types,
        [ModuleType::Demo, ModuleType::Apple, ModuleType::Google]
    );
    assert_eq!(
        s.redis.as_ref().map(|r| r.url.as_str()),
        Some("redis://127.0.0.1:6379")
    );
    assert_eq!(
        s.metrics.as_ref().map(|m| m.listen.to_string()),
        Some("127.0.0.1:9357".to_owned())
    );
}

#[cfg(all(feature = "enable_apns_support", feature = "enable_fcm_support"))]
#[test]
fn settings_example_google_block_reads_as_fcm_config() {
    let loaded = loaded(&example_uncommented());
    let google = loaded.settings.module("myAppAndroid").unwrap();
    let (fcm, warnings) = google.platform_config::<fpush_fcm::FcmConfig>().unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(fcm.ttl, Duration::from_secs(28 * 24 * 3600));
}

#[cfg(all(feature = "enable_apns_support", feature = "enable_fcm_support"))]
#[test]
fn settings_example_apple_block_reads_as_apns_config() {
    let loaded = loaded(&example_uncommented());
    let apple = loaded.settings.module("myAppiOS").unwrap();
    let (apns, warnings) = apple.platform_config::<fpush_apns::ApnsConfig>().unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(apns.topic, "org.example.app");
    assert_eq!(apns.expiration, Duration::from_secs(28 * 24 * 3600));
}

#[cfg(feature = "enable_demo_support")]
#[test]
fn settings_example_demo_block_reads_as_demo_config() {
    let loaded = config::load(&example_path()).unwrap();
    let demo = &loaded.settings.push_modules[0];
    let (cfg, warnings) = demo.platform_config::<fpush_demo::DemoConfig>().unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(cfg.delay, Duration::ZERO);
}

#[test]
fn every_key_is_read() {
    let text = settings_with(
        r#"    "a": { "type": "demo", "is_default_module": true,
           "ratelimit": { "enabled": false, "ratelimitTime": "0s", "ratelimitCleanupInterval": "1h",
                          "rejectWith": "result", "backend": "redis" } }"#,
        r#",
  "timeout": { "xmppConnectionError": "3s", "keepaliveInterval": "5m", "keepaliveTimeout": "30s" },
  "limits": { "maxConcurrentPushes": 7, "maxStanzaSize": "1MiB", "maxDepth": 20, "shutdownGrace": "0s" },
  "deadTokens": { "remember": "0s" },
  "redis": { "url": "redis://localhost" },
  "metrics": { "listen": "[::1]:9357" }"#,
    );
    let s = loaded(&text).settings;
    assert_eq!(s.timeout.xmpp_connection_error, Duration::from_secs(3));
    assert_eq!(s.timeout.keepalive_interval, Duration::from_secs(300));
    assert_eq!(s.timeout.keepalive_timeout, Duration::from_secs(30));
    assert_eq!(s.limits.max_concurrent_pushes, 7);
    assert_eq!(s.limits.max_stanza_size, 1 << 20);
    assert_eq!(s.limits.max_depth, 20);
    assert_eq!(s.limits.shutdown_grace, Duration::ZERO);
    assert_eq!(s.dead_tokens.remember, Duration::ZERO);
    let r = &s.push_modules[0].ratelimit;
    assert!(!r.enabled);
    assert_eq!(r.ratelimit_cleanup_interval, Duration::from_secs(3600));
    assert_eq!(r.reject_with, RejectWith::Result);
    assert_eq!(r.backend, RatelimitBackend::Redis);
    let redis = s.redis.unwrap();
    assert_eq!(redis.key_prefix, "fpush:");
    assert_eq!(s.metrics.unwrap().listen.port(), 9357);
}

// ---------------------------------------------------------------------------------------------
// Each kind of error: key path and line

#[test]
fn invalid_duration_names_path_value_and_line() {
    let text = settings_with(
        r#"    "monalProdiOS": { "type": "demo", "is_default_module": true,
      "ratelimit": {
        "ratelimitTime": "twenty seconds"
      }
    }"#,
        "",
    );
    let errors = errors_of(&text);
    let err = error_at(&errors, "pushModules.monalProdiOS.ratelimit.ratelimitTime");
    assert_eq!(err.line, Some(line_of(&text, "twenty seconds")));
    assert!(err.column.is_some());
    let shown = err.to_string();
    assert!(
        shown.starts_with(
            "pushModules.monalProdiOS.ratelimit.ratelimitTime: invalid duration \"twenty seconds\" (line "
        ),
        "{shown}"
    );
}

#[test]
fn wrong_type_names_path_and_line() {
    let text = settings_with(
        DEMO,
        ",\n  \"limits\": {\n    \"maxConcurrentPushes\": \"many\"\n  }",
    );
    let errors = errors_of(&text);
    let err = error_at(&errors, "limits.maxConcurrentPushes");
    assert_eq!(err.line, Some(line_of(&text, "\"many\"")));
    assert!(err.message.contains("invalid type"), "{}", err.message);
}

#[test]
fn missing_required_key_names_its_section_and_line() {
    let text = r#"{
  "component": {
    "componentHostname": "push.example.org",
    "serverHostname": "127.0.0.1",
    "serverPort": 5347
  },
  "pushModules": { "demo": { "type": "demo" } }
}"#;
    let errors = errors_of(text);
    let err = error_at(&errors, "component");
    assert!(err.message.contains("componentKey"), "{}", err.message);
    // serde notices the key is missing where the object ends.
    assert_eq!(err.line, Some(6));
}

#[test]
fn missing_component_section_is_an_error() {
    let errors = errors_of(r#"{ "pushModules": { "demo": { "type": "demo" } } }"#);
    assert!(error_at(&errors, "component").message.contains("missing"));
}

#[test]
fn two_default_modules_is_an_error_at_the_second() {
    let text = settings_with(
        r#"    "first": { "type": "demo", "is_default_module": true },
    "second": {
      "type": "demo",
      "is_default_module": true
    }"#,
        "",
    );
    let errors = errors_of(&text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let err = error_at(&errors, "pushModules.second.is_default_module");
    let second_line = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("\"is_default_module\": true"))
        .map(|(i, _)| i + 1)
        .nth(1);
    assert_eq!(err.line, second_line);
    assert!(err.message.contains("`first`"), "{}", err.message);
}

#[test]
fn unknown_module_type_lists_the_known_ones() {
    let text = settings_with("    \"x\": {\n      \"type\": \"xiaomi\"\n    }", "");
    let errors = errors_of(&text);
    let err = error_at(&errors, "pushModules.x.type");
    assert_eq!(err.line, Some(line_of(&text, "xiaomi")));
    assert!(
        err.message.contains("apple")
            && err.message.contains("google")
            && err.message.contains("demo"),
        "{}",
        err.message
    );
}

#[test]
fn redis_backend_without_redis_section_is_an_error() {
    let text = settings_with(
        r#"    "demo": { "type": "demo",
      "ratelimit": {
        "backend": "redis"
      }
    }"#,
        "",
    );
    let errors = errors_of(&text);
    let err = error_at(&errors, "pushModules.demo.ratelimit.backend");
    assert_eq!(err.line, Some(line_of(&text, "\"backend\"")));
    assert!(err.message.contains("redis"), "{}", err.message);
}

#[test]
fn broken_json_reports_the_line() {
    let text = "{\n  \"component\": {\n    \"componentHostname\" \"push.example.org\"\n  }\n}";
    let errors = errors_of(text);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].line, Some(3));
    assert!(errors[0].path.is_empty());
}

#[test]
fn unterminated_comment_reports_where_it_starts() {
    let errors = errors_of("{\n  \"a\": 1\n  /* never closed\n}\n");
    assert_eq!(errors[0].line, Some(3));
    assert!(
        errors[0].message.contains("comment"),
        "{}",
        errors[0].message
    );
}

#[test]
fn line_numbers_count_comment_lines() {
    let text = settings_with(
        "    /* a block comment\n       over three\n       lines */\n    \"d\": { \"type\": \"demo\",\n      \"ratelimit\": { \"ratelimitTime\": 5 } } // no unit",
        "",
    );
    let errors = errors_of(&text);
    let err = error_at(&errors, "pushModules.d.ratelimit.ratelimitTime");
    assert_eq!(err.line, Some(line_of(&text, "\"ratelimitTime\": 5")));
    assert!(err.message.contains("\"5s\""), "{}", err.message);
}

#[test]
fn all_problems_are_reported_at_once() {
    let text = r#"{
  "component": { "componentHostname": "", "componentKey": "k", "serverHostname": "h", "serverPort": 5347 },
  "timeout": { "keepaliveInterval": "10s", "keepaliveTimeout": "30s" },
  "limits": { "maxConcurrentPushes": 0, "maxStanzaSize": "lots" },
  "pushModules": {
    "a": { "type": "demo", "ratelimit": { "ratelimitTime": "never" } },
    "b": { "type": "apple" },
    "c": { "type": "demo", "ratelimit": { "ratelimitTime": "0s" } }
  }
}"#;
    let errors = errors_of(text);
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    for expected in [
        "component.componentHostname",
        "timeout.keepaliveTimeout",
        "limits.maxStanzaSize",
        "pushModules.a.ratelimit.ratelimitTime",
        "pushModules.b",
        "pushModules.c.ratelimit.ratelimitTime",
    ] {
        assert!(
            paths.contains(&expected),
            "{expected} missing from {paths:?}"
        );
    }
    let lines: Vec<Option<usize>> = errors.iter().map(|e| e.line).collect();
    let mut sorted = lines.clone();
    sorted.sort_by_key(|l| l.unwrap_or(usize::MAX));
    assert_eq!(lines, sorted, "errors come in file order");
    // Displayed one per line.
    assert_eq!(
        ConfigErrors(errors.clone()).to_string().lines().count(),
        errors.len()
    );
}

#[test]
fn validation_rules() {
    let cases: &[(&str, &str, &str)] = &[
        (
            DEMO,
            r#", "limits": { "maxConcurrentPushes": 0 }"#,
            "limits.maxConcurrentPushes",
        ),
        (
            DEMO,
            r#", "limits": { "maxStanzaSize": 100 }"#,
            "limits.maxStanzaSize",
        ),
        (DEMO, r#", "limits": { "maxDepth": 3 }"#, "limits.maxDepth"),
        (
            DEMO,
            r#", "timeout": { "xmppconnectionError": "0s" }"#,
            "timeout.xmppconnectionError",
        ),
        (
            DEMO,
            r#", "timeout": { "keepaliveInterval": "0s" }"#,
            "timeout.keepaliveInterval",
        ),
        (
            DEMO,
            r#", "timeout": { "keepaliveTimeout": "60s" }"#,
            "timeout.keepaliveTimeout",
        ),
        (DEMO, r#", "redis": { "url": "" }"#, "redis.url"),
        (
            DEMO,
            r#", "metrics": { "listen": "localhost" }"#,
            "metrics.listen",
        ),
        (
            r#""a": { "type": "demo", "ratelimit": { "ratelimitCleanupInterval": "0s" } }"#,
            "",
            "pushModules.a.ratelimit.ratelimitCleanupInterval",
        ),
        (r#""g": { "type": "google" }"#, "", "pushModules.g"),
        (
            r#""g": { "type": "google", "fcm": "path" }"#,
            "",
            "pushModules.g.fcm",
        ),
        (
            r#""a": { "type": "demo" }, "a": { "type": "demo" }"#,
            "",
            "pushModules.a",
        ),
        ("", "", "pushModules"),
    ];
    for (modules, extra, path) in cases {
        let errors = errors_of(&settings_with(modules, extra));
        assert!(
            errors.iter().any(|e| e.path == *path),
            "{path}: expected an error there, got {errors:?}"
        );
    }
}

#[test]
fn disabled_ratelimit_accepts_zero_window() {
    let text = settings_with(
        r#""a": { "type": "demo", "ratelimit": { "enabled": false, "ratelimitTime": "0s" } }"#,
        "",
    );
    assert!(!loaded(&text).settings.push_modules[0].ratelimit.enabled);
}

#[cfg(not(feature = "enable_apns_support"))]
#[test]
fn module_type_compiled_out_names_its_feature() {
    let text = settings_with(r#""i": { "type": "apple", "apns": {} }"#, "");
    let errors = errors_of(&text);
    assert!(error_at(&errors, "pushModules.i.type")
        .message
        .contains("enable_apns_support"));
}

#[cfg(not(feature = "enable_demo_support"))]
#[test]
fn demo_type_compiled_out_names_its_feature() {
    let errors = errors_of(&settings_with(DEMO, ""));
    assert!(error_at(&errors, "pushModules.demo.type")
        .message
        .contains("enable_demo_support"));
}

#[test]
fn unreadable_file_names_its_path() {
    let path = fixture("config/does-not-exist.json");
    let ConfigErrors(errors) = config::load(&path).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].to_string().contains("does-not-exist.json"),
        "{}",
        errors[0]
    );
}

// ---------------------------------------------------------------------------------------------
// Warnings

#[test]
fn unknown_keys_warn_with_full_path_and_line() {
    let text = settings_with(
        r#"    "demo": { "type": "demo",
      "ratelimit": {
        "ratelimitTiem": "5s"
      },
      "isDefault": true
    }"#,
        ",\n  \"timeuot\": {}",
    );
    let loaded = loaded(&text);
    let find = |path: &str| {
        loaded
            .warnings
            .iter()
            .find(|w| w.path == path)
            .unwrap_or_else(|| panic!("no warning at {path}: {:?}", loaded.warnings))
    };
    let typo = find("pushModules.demo.ratelimit.ratelimitTiem");
    assert_eq!(typo.line, Some(line_of(&text, "ratelimitTiem")));
    assert!(typo.message.contains("unknown"), "{}", typo.message);
    assert_eq!(
        find("pushModules.demo.isDefault").line,
        Some(line_of(&text, "isDefault"))
    );
    assert_eq!(find("timeuot").line, Some(line_of(&text, "timeuot")));
    assert_eq!(loaded.warnings.len(), 3, "{:?}", loaded.warnings);
}

#[cfg(feature = "enable_apns_support")]
#[test]
fn legacy_keys_warn_that_they_are_not_used() {
    let path = fixture("config/legacy-settings.json");
    let loaded = config::load(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let mut paths: Vec<&str> = loaded.warnings.iter().map(|w| w.path.as_str()).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "pushModules.monalProdiOS.blacklist",
            "pushModules.monalProdiOS.ratelimit.hardRatelimitTime",
        ]
    );
    for warning in &loaded.warnings {
        assert!(warning.message.contains("not used"), "{warning}");
        let key = warning.path.rsplit('.').next().unwrap();
        assert_eq!(warning.line, Some(line_of(&text, key)));
    }
    // The one inside the platform block shows up when the platform reads its block.
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Apns {
        cert_file_path: String,
        cert_password: String,
        topic: String,
    }
    let module = &loaded.settings.push_modules[0];
    let (_, warnings) = module.platform_config::<Apns>().unwrap();
    assert_eq!(warnings.len(), 1);
    assert_eq!(
        warnings[0].path,
        "pushModules.monalProdiOS.apns.poolIdleTimeout"
    );
    assert!(warnings[0].message.contains("not used"));
    assert_eq!(warnings[0].line, Some(line_of(&text, "poolIdleTimeout")));
}

#[test]
fn other_platforms_blocks_warn() {
    let text = settings_with(
        "    \"d\": { \"type\": \"demo\",\n      \"fcm\": { \"fcmSecretPath\": \"x\" } }",
        "",
    );
    let loaded = loaded(&text);
    assert_eq!(loaded.warnings.len(), 1);
    assert_eq!(loaded.warnings[0].path, "pushModules.d.fcm");
    assert_eq!(
        loaded.warnings[0].line,
        Some(line_of(&text, "fcmSecretPath"))
    );
}

// ---------------------------------------------------------------------------------------------
// Platform blocks

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TestPlatform {
    topic: String,
    #[serde(default, with = "humantime_serde")]
    request_timeout: Option<Duration>,
}

/// A settings file with one module whose platform block is `block`. The mechanism is the same
/// for every type; demo is the one type every test build has.
fn with_platform_block(block: &str) -> String {
    settings_with(
        &format!("    \"m\": {{ \"type\": \"demo\",\n      \"demo\": {block}\n    }}"),
        "",
    )
}

#[test]
fn platform_config_reads_the_block() {
    let text = with_platform_block("{ \"topic\": \"org.example\", \"requestTimeout\": \"3s\" }");
    let loaded = loaded(&text);
    let module = &loaded.settings.push_modules[0];
    assert_eq!(module.platform_key(), "demo");
    let (cfg, warnings) = module.platform_config::<TestPlatform>().unwrap();
    assert_eq!(cfg.topic, "org.example");
    assert_eq!(cfg.request_timeout, Some(Duration::from_secs(3)));
    assert!(warnings.is_empty());
}

#[test]
fn platform_config_errors_carry_path_and_file_line() {
    let text = with_platform_block("{\n        \"topic\": 42\n      }");
    let loaded = loaded(&text);
    let err = loaded.settings.push_modules[0]
        .platform_config::<TestPlatform>()
        .unwrap_err();
    assert_eq!(err.path, "pushModules.m.demo.topic");
    assert_eq!(err.line, Some(line_of(&text, "\"topic\": 42")));
    let col = text
        .lines()
        .nth(err.line.unwrap() - 1)
        .unwrap()
        .find("42")
        .unwrap()
        + 1;
    assert!(err.column.unwrap() >= col, "{err} points before the value");
}

#[test]
fn platform_config_column_is_right_on_the_blocks_first_line() {
    let text = with_platform_block("{ \"topic\": 42 }");
    let loaded = loaded(&text);
    let err = loaded.settings.push_modules[0]
        .platform_config::<TestPlatform>()
        .unwrap_err();
    let line = line_of(&text, "\"topic\": 42");
    assert_eq!(err.line, Some(line));
    let value_end = text.lines().nth(line - 1).unwrap().find("42").unwrap() + 2;
    // serde_json reports the column of the last byte it read: the end of the bad value.
    assert_eq!(err.column, Some(value_end));
}

#[test]
fn platform_config_missing_key_and_unknown_key() {
    let text = with_platform_block("{\n        \"topc\": \"typo\"\n      }");
    let loaded = loaded(&text);
    let module = &loaded.settings.push_modules[0];
    let err = module.platform_config::<TestPlatform>().unwrap_err();
    assert_eq!(err.path, "pushModules.m.demo");
    assert!(err.message.contains("topic"), "{}", err.message);

    #[derive(Deserialize)]
    #[allow(dead_code)]
    struct Lenient {
        #[serde(default)]
        topic: Option<String>,
    }
    let (_, warnings) = module.platform_config::<Lenient>().unwrap();
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].path, "pushModules.m.demo.topc");
    assert_eq!(warnings[0].line, Some(line_of(&text, "topc")));
}

#[test]
fn platform_config_of_a_missing_block_reads_empty_object() {
    #[derive(Deserialize, Default, PartialEq, Debug)]
    #[serde(default)]
    struct AllDefault {
        delay: u32,
    }
    let text = settings_with(DEMO, "");
    let loaded = loaded(&text);
    let demo = &loaded.settings.push_modules[0];
    assert_eq!(demo.platform_key(), "demo");
    let (cfg, warnings) = demo.platform_config::<AllDefault>().unwrap();
    assert_eq!(cfg, AllDefault::default());
    assert!(warnings.is_empty());
    // A struct with a required key names the missing block's path, at the module.
    let err = demo.platform_config::<TestPlatform>().unwrap_err();
    assert_eq!(err.path, "pushModules.demo.demo");
    assert_eq!(err.line, Some(line_of(&text, "\"demo\": {")));
}

// ---------------------------------------------------------------------------------------------
// Input that is not a settings file

/// A small deterministic generator, so a failure reproduces.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_bytes_give_errors_not_panics() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let alphabet = b"{}[]\",:/*\\ \n\t0123456789.-etrufalsn\"abc";
    for round in 0..2_000 {
        let len = (rng.next() % 200) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                let r = rng.next();
                if round % 2 == 0 {
                    alphabet[(r % alphabet.len() as u64) as usize]
                } else {
                    r as u8
                }
            })
            .collect();
        let text = String::from_utf8_lossy(&bytes);
        assert!(config::parse(&text).is_err(), "{text:?} parsed");
    }
}

#[test]
fn every_truncation_of_the_example_is_handled() {
    let text = example_uncommented();
    for end in (0..text.len()).filter(|&end| text.is_char_boundary(end)) {
        // Cutting inside a trailing comment can still leave a complete file; anything else errs.
        let _ = config::parse(&text[..end]);
    }
    let seed = std::fs::read_to_string(fixture("seed-example-settings.json")).unwrap();
    for end in 0..seed.trim_end().len() - 1 {
        assert!(config::parse(&seed[..end]).is_err(), "cut at {end} parsed");
    }
}

#[test]
fn deep_nesting_and_odd_values_are_errors() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(config::parse(&deep).is_err());
    let deep_in_module = settings_with(
        &format!(
            "\"d\": {{ \"type\": \"demo\", \"demo\": {}1{} }}",
            "[".repeat(5_000),
            "]".repeat(5_000)
        ),
        "",
    );
    assert!(config::parse(&deep_in_module).is_err());
    for text in [
        "",
        "null",
        "[]",
        "\"{}\"",
        "{}",
        "{\"pushModules\": []}",
        "\u{feff}",
        "/",
    ] {
        assert!(config::parse(text).is_err(), "{text:?} parsed");
    }
}

#[test]
fn non_utf8_file_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latin1.json");
    std::fs::write(&path, b"{\n \"a\": \"caf\xe9\" }").unwrap();
    let ConfigErrors(errors) = config::load(&path).unwrap_err();
    assert_eq!(errors[0].line, Some(2));
    assert!(errors[0].to_string().contains("latin1.json"));
    assert!(errors[0].message.contains("UTF-8"));
}
