//! Loading settings files: the documented examples, every kind of mistake an operator makes
//! (each reported with its key path and the right line), warnings for keys nobody reads, the
//! platform blocks, and input that is not a settings file at all.
//!
//! The platforms here are small stand-ins named like the real ones (`apple` reads `apns` and
//! needs a `topic`, `google` reads `fcm`, `demo` reads an optional `delay`), so these tests say
//! what the loader does for any platform; the real registry is used for the shipped example.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fpush::config::{
    self, ConfigError, ConfigErrors, Loaded, ModuleSettings, Platforms, RatelimitBackend,
    RejectWith,
};
use fpush_traits::{
    BlockError, BuildError, Capabilities, ParsedConfig, Platform, PlatformConfig, PushTrait,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use common::fixture;

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("settings.example.json")
}

// ---------------------------------------------------------------------------------------------
// Stand-in platforms

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct AppleLike {
    topic: String,
    cert_file_path: Option<String>,
    cert_password: Option<String>,
    #[serde(default, with = "humantime_serde")]
    request_timeout: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct GoogleLike {
    fcm_secret_path: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
#[allow(dead_code)]
struct DemoLike {
    #[serde(with = "humantime_serde")]
    delay: Duration,
}

/// A stand-in's parsed block: it is only looked at, never built.
#[derive(Debug)]
struct Parsed<T>(T);

impl<T: std::fmt::Debug + Send + Sync> PlatformConfig for Parsed<T> {
    fn build(&self, module_id: &str) -> Result<Arc<dyn PushTrait>, BuildError> {
        Err(format!("{module_id}: stand-ins are not built").into())
    }
}

fn parse_as<T>(block: &serde_json::Value) -> Result<ParsedConfig, BlockError>
where
    T: DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (config, ignored_keys) = fpush_traits::parse_block::<T>(block)?;
    Ok(ParsedConfig {
        config: Box::new(Parsed(config)),
        ignored_keys,
    })
}

fn platform(
    type_name: &'static str,
    settings_key: &'static str,
    parse: fn(&serde_json::Value) -> Result<ParsedConfig, BlockError>,
) -> Platform {
    Platform {
        type_name,
        settings_key,
        cargo_feature: "stand_in",
        capabilities: Capabilities::default(),
        plausible_token: |token| !token.is_empty(),
        parse,
    }
}

fn apple() -> Platform {
    platform("apple", "apns", parse_as::<AppleLike>)
}

fn demo() -> Platform {
    platform("demo", "demo", parse_as::<DemoLike>)
}

fn stand_ins() -> Platforms {
    Platforms {
        compiled: vec![
            apple(),
            platform("google", "fcm", parse_as::<GoogleLike>),
            demo(),
        ],
        not_compiled: Vec::new(),
    }
}

fn parse(text: &str) -> Result<Loaded, ConfigErrors> {
    config::parse(text, &stand_ins())
}

fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
    config::load(path, &stand_ins())
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// The 1-based line of the first line of `text` containing `marker`.
fn line_of(text: &str, marker: &str) -> usize {
    text.lines()
        .position(|line| line.contains(marker))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("marker {marker:?} not in the text"))
}

fn errors_with(text: &str, platforms: &Platforms) -> Vec<ConfigError> {
    match config::parse(text, platforms) {
        Ok(loaded) => panic!("expected errors, got {:?}", loaded.settings),
        Err(ConfigErrors { errors, .. }) => errors,
    }
}

fn errors_of(text: &str) -> Vec<ConfigError> {
    errors_with(text, &stand_ins())
}

fn loaded(text: &str) -> Loaded {
    parse(text).unwrap_or_else(|errors| panic!("unexpected errors:\n{errors}"))
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

/// The parsed platform block, as its `Debug` shows it.
fn block_debug(module: &ModuleSettings) -> String {
    format!("{:?}", module.config)
}

// ---------------------------------------------------------------------------------------------
// The documented examples

#[test]
fn seed_example_parses_with_its_values() {
    let loaded = load(&fixture("seed-example-settings.json")).unwrap();
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
    assert_eq!(s.push_modules[0].platform.type_name, "apple");
    assert_eq!(s.push_modules[1].platform.type_name, "google");
    assert!(block_debug(&s.push_modules[0]).contains("org.example.app"));
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

#[cfg(feature = "enable_demo_support")]
#[test]
fn settings_example_parses_without_warnings() {
    let loaded = config::load(&example_path(), &fpush::modules::platforms()).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let s = &loaded.settings;
    assert_eq!(s.push_modules.len(), 1);
    let demo = &s.push_modules[0];
    assert_eq!(demo.platform.type_name, "demo");
    assert!(demo.is_default_module);
    assert!(block_debug(demo).contains("delay: 0ns"), "{demo:?}");
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

#[cfg(all(
    feature = "enable_apns_support",
    feature = "enable_fcm_support",
    feature = "enable_demo_support"
))]
#[test]
fn settings_example_commented_modules_are_complete_and_valid() {
    let loaded = config::parse(&example_uncommented(), &fpush::modules::platforms())
        .unwrap_or_else(|errors| panic!("{errors}"));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let s = &loaded.settings;
    let types: Vec<&str> = s
        .push_modules
        .iter()
        .map(|m| m.platform.type_name)
        .collect();
    assert_eq!(types, ["demo", "apple", "google"]);
    assert_eq!(
        s.redis.as_ref().map(|r| r.url.as_str()),
        Some("redis://127.0.0.1:6379")
    );
    assert_eq!(
        s.metrics.as_ref().map(|m| m.listen.to_string()),
        Some("127.0.0.1:9357".to_owned())
    );
    // The platforms read their blocks with the documented values and defaults.
    let apns = block_debug(s.module("myAppiOS").unwrap());
    assert!(apns.contains("topic: \"org.example.app\""), "{apns}");
    assert!(apns.contains("expiration: 2419200s"), "{apns}");
    let fcm = block_debug(s.module("myAppAndroid").unwrap());
    assert!(fcm.contains("ttl: 2419200s"), "{fcm}");
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

#[test]
fn minimal_file_gets_every_default() {
    let loaded = loaded(&settings_with(DEMO, ""));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let s = loaded.settings;
    assert_eq!(s.timeout, config::TimeoutSettings::default());
    assert_eq!(s.limits, config::LimitSettings::default());
    assert_eq!(s.dead_tokens.remember, Duration::from_secs(86_400));
    assert_eq!(
        s.push_modules[0].ratelimit,
        config::RatelimitSettings::default()
    );
    assert_eq!(s.default_module().map(|m| m.id.as_str()), Some("demo"));
    assert_eq!(s.redis, None);
    assert_eq!(s.metrics, None);
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
    let expected = format!(
        "pushModules.monalProdiOS.ratelimit.ratelimitTime: invalid duration \"twenty seconds\": write a number and a unit, e.g. \"20s\", \"5m\" or \"1h 30m\" (line {}, column ",
        line_of(&text, "twenty seconds")
    );
    assert!(shown.starts_with(&expected), "{shown}");
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
    assert_eq!(err.message, "must be a whole number, e.g. 10000");
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
fn braces_in_redis_key_names_are_refused_on_a_cluster() {
    let text = settings_with(
        r#"    "a{b}": { "type": "demo", "ratelimit": { "backend": "redis" } },
    "c{d}": { "type": "demo" }"#,
        r#",
  "redis": { "cluster": ["redis://127.0.0.1:7000"], "keyPrefix": "fpush{}:" }"#,
    );
    let errors = errors_of(&text);
    let prefix = error_at(&errors, "redis.keyPrefix");
    assert_eq!(prefix.line, Some(line_of(&text, "keyPrefix")));
    assert!(prefix.message.contains("slot"), "{}", prefix.message);
    error_at(&errors, "pushModules.a{b}");
    assert_eq!(
        errors.len(),
        2,
        "the memory module's id is its own: {errors:#?}"
    );
    // One Redis server has no slots.
    let single = text.replace(
        r#""cluster": ["redis://127.0.0.1:7000"]"#,
        r#""url": "redis://127.0.0.1""#,
    );
    loaded(&single);
}

#[test]
fn a_module_id_with_white_space_around_it_is_refused() {
    let text = settings_with(
        r#"    " ios": { "type": "demo", "is_default_module": true }"#,
        "",
    );
    let errors = errors_of(&text);
    let err = error_at(&errors, "pushModules. ios");
    assert!(err.message.contains("trimmed"), "{}", err.message);
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
    let shown = ConfigErrors {
        errors: errors.clone(),
        warnings: Vec::new(),
        modules: Vec::new(),
    };
    assert_eq!(shown.to_string().lines().count(), errors.len());
}

#[test]
fn a_bad_component_value_or_list_element_hides_no_other_problem() {
    let text = r#"{
  "component": { "componentHostname": "push.example.org", "componentKey": "k",
    "serverHostname": "h", "serverPort": 0 },
  "access": { "allowedDomains": ["example.org", 7] },
  "limits": { "maxDepth": 1 },
  "pushModules": { "d": { "type": "demo", "ratelimit": { "rejectWith": "never" } } }
}"#;
    let ConfigErrors {
        errors, modules, ..
    } = parse(text).unwrap_err();
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "component.serverPort",
            "access.allowedDomains[1]",
            "limits.maxDepth",
            "pushModules.d.ratelimit.rejectWith"
        ]
    );
    assert_eq!(errors[0].line, Some(3));
    assert_eq!(
        modules.len(),
        1,
        "the module reads with the default in place of the bad value"
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

#[test]
fn module_type_compiled_out_names_its_feature() {
    let platforms = Platforms {
        compiled: vec![demo()],
        not_compiled: vec![("apple", "enable_apns_support")],
    };
    let text = settings_with(r#""i": { "type": "apple", "apns": {} }"#, "");
    let errors = errors_with(&text, &platforms);
    assert!(error_at(&errors, "pushModules.i.type")
        .message
        .contains("enable_apns_support"));
    let errors = errors_with(
        &settings_with(r#""x": { "type": "xiaomi" }"#, ""),
        &platforms,
    );
    let known = &error_at(&errors, "pushModules.x.type").message;
    assert!(known.contains("demo") && known.contains("apple"), "{known}");
}

#[test]
fn demo_type_compiled_out_names_its_feature() {
    let platforms = Platforms {
        compiled: vec![apple()],
        not_compiled: vec![("demo", "enable_demo_support")],
    };
    let errors = errors_with(&settings_with(DEMO, ""), &platforms);
    assert!(error_at(&errors, "pushModules.demo.type")
        .message
        .contains("enable_demo_support"));
}

#[test]
fn unreadable_file_names_its_path() {
    let path = fixture("config/does-not-exist.json");
    let ConfigErrors { errors, .. } = load(&path).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].to_string().contains("does-not-exist.json"),
        "{}",
        errors[0]
    );
}

#[test]
fn every_bad_value_of_one_block_is_reported() {
    let text = settings_with(
        r#"    "d": { "type": "demo",
      "ratelimit": {
        "ratelimitTime": "twenty seconds",
        "rejectWith": "never"
      }
    }"#,
        "",
    );
    let errors = errors_of(&text);
    let time = error_at(&errors, "pushModules.d.ratelimit.ratelimitTime");
    assert_eq!(time.line, Some(line_of(&text, "twenty seconds")));
    let reject = error_at(&errors, "pushModules.d.ratelimit.rejectWith");
    assert_eq!(reject.line, Some(line_of(&text, "never")));
    assert!(reject.message.contains("unknown variant"), "{reject}");
    assert_eq!(errors.len(), 2, "{errors:#?}");
}

#[test]
fn settings_errors_and_platform_block_errors_come_together() {
    let text = settings_with(
        r#"    "i": { "type": "apple",
      "apns": {
        "topic": 42,
        "requestTimeout": "soon"
      }
    },
    "d": { "type": "demo", "demo": { "delay": [] } }"#,
        r#",
  "limits": { "maxDepth": "deep" }"#,
    );
    let ConfigErrors {
        errors, modules, ..
    } = parse(&text).unwrap_err();
    let topic = error_at(&errors, "pushModules.i.apns.topic");
    assert_eq!(topic.line, Some(line_of(&text, "\"topic\": 42")));
    let timeout = error_at(&errors, "pushModules.i.apns.requestTimeout");
    assert_eq!(timeout.line, Some(line_of(&text, "soon")));
    let delay = error_at(&errors, "pushModules.d.demo.delay");
    assert_eq!(delay.line, Some(line_of(&text, "\"delay\"")));
    let depth = error_at(&errors, "limits.maxDepth");
    assert_eq!(depth.line, Some(line_of(&text, "deep")));
    assert_eq!(errors.len(), 4, "{errors:#?}");
    // The demo block read with its default delay in place of the bad one; the apple one did not.
    let ids: Vec<&str> = modules.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["d"]);
}

#[test]
fn modules_that_did_read_come_with_the_errors() {
    let text = settings_with(
        r#"    "i": { "type": "apple", "apns": { "topic": "t" } },
    "d": { "type": "demo", "ratelimit": { "ratelimitTime": "never" } },
    "x": { "type": "xiaomi" }"#,
        r#", "limits": { "maxDepth": 1 }"#,
    );
    let ConfigErrors {
        errors, modules, ..
    } = parse(&text).unwrap_err();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    let ids: Vec<&str> = modules.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["i", "d"]);
    let apple = &modules[0];
    assert_eq!(apple.key_path(), "pushModules.i.apns");
    let built = apple.config.build(&apple.id).err().unwrap();
    let shown = apple.build_error(&built);
    assert_eq!(shown.path, "pushModules.i.apns");
    assert_eq!(shown.line, Some(line_of(&text, "\"apns\"")));
}

#[test]
fn modules_built_in_code_have_their_key_path() {
    let (config, _) = fpush_traits::parse_block::<DemoLike>(&serde_json::json!({})).unwrap();
    let module = ModuleSettings::new("m", demo(), Arc::new(Parsed(config)));
    assert_eq!(module.key_path(), "pushModules.m.demo");
    assert!(!module.is_default_module);
    assert_eq!(module.ratelimit, config::RatelimitSettings::default());
    let error = module.build_error(&"no such file");
    assert_eq!(error.to_string(), "pushModules.m.demo: no such file");
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

#[test]
fn legacy_keys_warn_that_they_are_not_used() {
    let path = fixture("config/legacy-settings.json");
    let loaded = load(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let mut paths: Vec<&str> = loaded.warnings.iter().map(|w| w.path.as_str()).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "pushModules.monalProdiOS.apns.poolIdleTimeout",
            "pushModules.monalProdiOS.blacklist",
            "pushModules.monalProdiOS.ratelimit.hardRatelimitTime",
        ]
    );
    for warning in &loaded.warnings {
        assert!(warning.message.contains("not used"), "{warning}");
        let key = warning.path.rsplit('.').next().unwrap();
        assert_eq!(warning.line, Some(line_of(&text, key)));
    }
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
    assert!(loaded.warnings[0].message.contains("type demo"));
}

// ---------------------------------------------------------------------------------------------
// Platform blocks

/// A settings file with one `apple` module whose platform block is `block`.
fn with_platform_block(block: &str) -> String {
    settings_with(
        &format!("    \"m\": {{ \"type\": \"apple\",\n      \"apns\": {block}\n    }}"),
        "",
    )
}

#[test]
fn platform_block_is_read_by_its_platform() {
    let text = with_platform_block("{ \"topic\": \"org.example\", \"requestTimeout\": \"3s\" }");
    let loaded = loaded(&text);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let module = &loaded.settings.push_modules[0];
    assert_eq!(module.platform.settings_key, "apns");
    let block = block_debug(module);
    assert!(block.contains("topic: \"org.example\""), "{block}");
    assert!(block.contains("request_timeout: Some(3s)"), "{block}");
}

#[test]
fn platform_block_errors_carry_path_and_file_line() {
    let text = with_platform_block("{\n        \"topic\": 42\n      }");
    let errors = errors_of(&text);
    let err = error_at(&errors, "pushModules.m.apns.topic");
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
fn platform_block_column_is_right_on_the_blocks_first_line() {
    let text = with_platform_block("{ \"topic\": 42 }");
    let errors = errors_of(&text);
    let err = error_at(&errors, "pushModules.m.apns.topic");
    let line = line_of(&text, "\"topic\": 42");
    assert_eq!(err.line, Some(line));
    let value_end = text.lines().nth(line - 1).unwrap().find("42").unwrap() + 2;
    // Like serde_json did: the column of the bad value's last character.
    assert_eq!(err.column, Some(value_end));
}

#[test]
fn platform_block_missing_key_and_unknown_key() {
    let text = with_platform_block("{\n        \"topc\": \"typo\"\n      }");
    let errors = errors_of(&text);
    let err = error_at(&errors, "pushModules.m.apns");
    assert!(err.message.contains("topic"), "{}", err.message);
    assert_eq!(
        err.line,
        Some(line_of(&text, "      }")),
        "where the block ends"
    );

    let lenient = Platforms {
        compiled: vec![platform("apple", "apns", parse_as::<DemoLike>)],
        not_compiled: Vec::new(),
    };
    let loaded = config::parse(&text, &lenient).unwrap();
    assert_eq!(loaded.warnings.len(), 1);
    assert_eq!(loaded.warnings[0].path, "pushModules.m.apns.topc");
    assert_eq!(loaded.warnings[0].line, Some(line_of(&text, "topc")));
}

#[test]
fn a_missing_platform_block_is_read_from_an_empty_object() {
    let text = settings_with(DEMO, "");
    let loaded = loaded(&text);
    let demo = &loaded.settings.push_modules[0];
    assert!(block_debug(demo).contains("delay: 0ns"));
    // A platform that needs a key names the missing block, at the module.
    let text = settings_with("    \"i\": {\n      \"type\": \"apple\" }", "");
    let errors = errors_of(&text);
    let err = error_at(&errors, "pushModules.i");
    assert!(err.message.contains("`apns` block"), "{}", err.message);
    assert!(err.message.contains("topic"), "{}", err.message);
    assert_eq!(err.line, Some(line_of(&text, "\"i\": {")));
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
        assert!(parse(&text).is_err(), "{text:?} parsed");
    }
}

#[test]
fn every_truncation_of_the_example_is_handled() {
    let text = example_uncommented();
    for end in (0..text.len()).filter(|&end| text.is_char_boundary(end)) {
        // Cutting inside a trailing comment can still leave a complete file; anything else errs.
        let _ = parse(&text[..end]);
    }
    let seed = std::fs::read_to_string(fixture("seed-example-settings.json")).unwrap();
    for end in 0..seed.trim_end().len() - 1 {
        assert!(parse(&seed[..end]).is_err(), "cut at {end} parsed");
    }
}

#[test]
fn deep_nesting_and_odd_values_are_errors() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(parse(&deep).is_err());
    let deep_in_module = settings_with(
        &format!(
            "\"d\": {{ \"type\": \"demo\", \"demo\": {}1{} }}",
            "[".repeat(5_000),
            "]".repeat(5_000)
        ),
        "",
    );
    assert!(parse(&deep_in_module).is_err());
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
        assert!(parse(text).is_err(), "{text:?} parsed");
    }
}

#[test]
fn non_utf8_file_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latin1.json");
    std::fs::write(&path, b"{\n \"a\": \"caf\xe9\" }").unwrap();
    let ConfigErrors { errors, .. } = load(&path).unwrap_err();
    assert_eq!(errors[0].line, Some(2));
    assert!(errors[0].to_string().contains("latin1.json"));
    assert!(errors[0].message.contains("UTF-8"));
}

// ---------------------------------------------------------------------------------------------
// The open network: access, caps, bounds, secrets

#[test]
fn access_caps_and_grace_are_read_with_their_defaults() {
    let s = loaded(&settings_with(DEMO, "")).settings;
    assert_eq!(s.access, config::AccessSettings::default());
    assert_eq!(s.access.per_domain_rate, 1000.0);
    assert_eq!(s.access.per_domain_burst, 5000.0);
    assert!(s.access.allowed_domains.is_empty());
    assert_eq!(s.dead_tokens.max_entries, 1_000_000);
    assert_eq!(s.limits.max_queued_pushes, 100_000);
    assert_eq!(s.modules.retired_grace, Duration::from_secs(24 * 3600));

    let text = settings_with(
        DEMO,
        r#",
  "access": { "allowedDomains": ["example.org", "*.example.net"], "perDomainRate": 0.5, "perDomainBurst": 20 },
  "deadTokens": { "maxEntries": 10000 },
  "limits": { "maxQueuedPushes": 0 },
  "modules": { "retiredGrace": "1h" }"#,
    );
    let s = loaded(&text).settings;
    assert_eq!(s.access.allowed_domains, ["example.org", "*.example.net"]);
    assert_eq!(s.access.per_domain_rate, 0.5);
    assert_eq!(s.access.per_domain_burst, 20.0);
    assert_eq!(s.dead_tokens.max_entries, 10_000);
    assert_eq!(s.limits.max_queued_pushes, 0);
    assert_eq!(s.modules.retired_grace, Duration::from_secs(3600));
}

#[test]
fn an_implausible_allowed_domain_is_an_error_at_its_line() {
    let text = settings_with(
        DEMO,
        ",\n  \"access\": { \"allowedDomains\": [\"example.org\",\n    \"user@example.org\"] }",
    );
    let errors = errors_of(&text);
    let err = error_at(&errors, "access.allowedDomains[1]");
    assert_eq!(err.line, Some(line_of(&text, "user@example.org")));
    assert!(err.message.contains("*.example.org"), "{}", err.message);
    assert_eq!(errors.len(), 1, "{errors:?}");
}

/// Every bound: (section, key, a value just beyond it).
const BEYOND_BOUNDS: &[(&str, &str, &str)] = &[
    ("timeout", "xmppconnectionError", "\"61m\""),
    ("timeout", "keepaliveInterval", "\"300000000000y\""),
    ("limits", "shutdownGrace", "\"2h\""),
    ("limits", "maxConcurrentPushes", "1000001"),
    ("limits", "maxQueuedPushes", "10000001"),
    ("limits", "maxStanzaSize", "\"65MiB\""),
    ("limits", "maxDepth", "1025"),
    ("deadTokens", "remember", "\"31d\""),
    ("deadTokens", "maxEntries", "100000001"),
    ("modules", "retiredGrace", "\"31d\""),
    ("access", "perDomainRate", "1000001"),
    ("access", "perDomainBurst", "10000001"),
];

#[test]
fn every_duration_and_count_has_an_upper_bound() {
    for (section, key, value) in BEYOND_BOUNDS {
        let text = settings_with(
            DEMO,
            &format!(",\n  \"{section}\": {{ \"{key}\": {value} }}"),
        );
        let errors = errors_of(&text);
        let err = error_at(&errors, &format!("{section}.{key}"));
        assert!(
            err.message.contains("at most"),
            "{section}.{key}: {}",
            err.message
        );
        assert_eq!(err.line, Some(line_of(&text, key)), "{err}");
    }
    for (key, value) in [
        ("ratelimitTime", "\"25h\""),
        ("ratelimitCleanupInterval", "\"31d\""),
    ] {
        let module =
            format!(r#"    "m": {{ "type": "demo", "ratelimit": {{ "{key}": {value} }} }}"#);
        let errors = errors_of(&settings_with(&module, ""));
        let err = error_at(&errors, &format!("pushModules.m.ratelimit.{key}"));
        assert!(err.message.contains("at most"), "{key}: {}", err.message);
    }
}

#[test]
fn values_at_the_bounds_pass() {
    let text = settings_with(
        DEMO,
        r#",
  "timeout": { "xmppconnectionError": "1h", "keepaliveInterval": "1h", "keepaliveTimeout": "59m" },
  "limits": { "maxConcurrentPushes": 1000000, "maxQueuedPushes": 10000000, "maxStanzaSize": "64MiB",
              "maxDepth": 1024, "shutdownGrace": "1h" },
  "deadTokens": { "remember": "30d", "maxEntries": 100000000 },
  "modules": { "retiredGrace": "30d" },
  "access": { "perDomainRate": 1000000, "perDomainBurst": 10000000 }"#,
    );
    loaded(&text);
}

#[test]
fn a_burst_below_one_with_the_rate_on_is_an_error() {
    let text = settings_with(DEMO, ",\n  \"access\": { \"perDomainBurst\": 0.5 }");
    let errors = errors_of(&text);
    assert!(error_at(&errors, "access.perDomainBurst")
        .message
        .contains("at least 1"));
    let off = settings_with(
        DEMO,
        ",\n  \"access\": { \"perDomainRate\": 0, \"perDomainBurst\": 0 }",
    );
    loaded(&off);
}

#[test]
fn secrets_of_the_wrong_type_are_not_echoed() {
    let key = settings_with(DEMO, "").replace("\"secret\"", "987654321987");
    let redis = settings_with(DEMO, ",\n  \"redis\": { \"url\": 123456789123 }");
    for (text, path) in [(key, "component.componentKey"), (redis, "redis.url")] {
        let errors = errors_of(&text);
        let err = errors
            .iter()
            .find(|e| e.path == path && e.message.contains("not shown"))
            .unwrap_or_else(|| panic!("no type error at {path}: {errors:?}"));
        assert!(err.line.is_some(), "{err}");
        let all = errors.iter().map(ToString::to_string).collect::<String>();
        assert!(
            !all.contains("987654321987") && !all.contains("123456789123"),
            "{all}"
        );
    }
}

#[test]
fn a_number_too_large_to_read_is_not_echoed() {
    let text = settings_with(DEMO, ",\n  \"limits\": { \"maxDepth\": 1e99999 }");
    let errors = errors_of(&text);
    let err = error_at(&errors, "limits.maxDepth");
    assert!(!err.to_string().contains("99999"), "{err}");
}

#[test]
fn redis_url_password_is_redacted_in_debug_output() {
    let text = settings_with(
        DEMO,
        ",\n  \"redis\": { \"url\": \"redis://fpush:hunter2@127.0.0.1:6379/0\" }",
    );
    let s = loaded(&text).settings;
    let debug = format!("{s:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(!debug.contains("\"secret\""), "component key: {debug}");
    assert!(debug.contains("127.0.0.1:6379"), "{debug}");
}

#[test]
fn a_port_error_names_the_range() {
    for port in ["0", "70000", "-1", "\"5347\"", "53.5"] {
        let text = settings_with(DEMO, "").replace("5347", port);
        let errors = errors_of(&text);
        let err = error_at(&errors, "component.serverPort");
        assert!(
            err.message.contains("a port number from 1 to 65535"),
            "{port}: {}",
            err.message
        );
        assert!(!err.message.contains("u16"), "{}", err.message);
    }
}

#[test]
fn metrics_listen_accepts_localhost_or_says_to_use_an_address() {
    let with = |listen: &str| {
        settings_with(
            DEMO,
            &format!(",\n  \"metrics\": {{ \"listen\": \"{listen}\" }}"),
        )
    };
    let s = loaded(&with("localhost:9357")).settings;
    assert_eq!(
        s.metrics.map(|m| m.listen),
        Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9357)))
    );
    let errors = errors_of(&with("metrics.example.org:9357"));
    let err = error_at(&errors, "metrics.listen");
    assert!(
        err.message.contains("IP address") && err.message.contains("127.0.0.1:9357"),
        "{}",
        err.message
    );
}

#[test]
fn a_bad_redis_url_is_an_error_at_redis_url_naming_the_problem() {
    for (url, problem) in [
        ("http://127.0.0.1:6379", "scheme"),
        ("127.0.0.1:6379", "must start with redis://"),
        ("redis://127.0.0.1:6379/first", "database"),
    ] {
        let text = settings_with(DEMO, &format!(",\n  \"redis\": {{ \"url\": \"{url}\" }}"));
        let errors = errors_of(&text);
        let err = error_at(&errors, "redis.url");
        assert!(err.message.contains(problem), "{url}: {}", err.message);
        assert_eq!(err.line, Some(line_of(&text, "\"url\"")));
    }
}

#[test]
fn duration_errors_show_an_example() {
    let text = settings_with(DEMO, ",\n  \"timeout\": { \"keepaliveInterval\": 60 }");
    let errors = errors_of(&text);
    let err = error_at(&errors, "timeout.keepaliveInterval");
    assert!(err.message.contains("e.g. \"60s\""), "{}", err.message);
}

#[test]
fn a_redis_section_or_cluster_of_the_wrong_shape_does_not_echo_its_password() {
    let url = "\"redis://fpush:hunter2@127.0.0.1:6379/0\"";
    let section = settings_with(DEMO, &format!(",\n  \"redis\": {url}"));
    let cluster = settings_with(DEMO, &format!(",\n  \"redis\": {{ \"cluster\": {url} }}"));
    for (text, path) in [(section, "redis"), (cluster, "redis.cluster")] {
        let errors = errors_of(&text);
        let err = error_at(&errors, path);
        assert_eq!(err.line, Some(line_of(&text, "hunter2")), "{err}");
        let all = errors.iter().map(ToString::to_string).collect::<String>();
        assert!(!all.contains("hunter2"), "{all}");
    }
    let inside =
        ",\n  \"redis\": { \"url\": \"redis://h\", \"keyPrefix\": 5, \"keyPrefx\": \"a\" }";
    let text = settings_with(DEMO, inside);
    error_at(&errors_of(&text), "redis.keyPrefix");
    let fixed = text.replace("\"keyPrefix\": 5, ", "");
    let warnings = loaded(&fixed).warnings;
    assert!(
        warnings.iter().any(|w| w.path == "redis.keyPrefx"),
        "{warnings:?}"
    );
    let none = settings_with(DEMO, ",\n  \"redis\": null");
    assert!(loaded(&none).settings.redis.is_none());
}

#[test]
fn a_misspelt_required_key_is_named_beside_the_missing_one() {
    let text = settings_with(
        r#"    "demo": { "type": "demo", "ratelimit": { "enabld": false, "ratelimitTime": 5 } }"#,
        "",
    )
    .replace("\"componentKey\"", "\"componentKye\"");
    let ConfigErrors {
        errors, warnings, ..
    } = parse(&text).unwrap_err();
    error_at(&errors, "component");
    error_at(&errors, "pushModules.demo.ratelimit.ratelimitTime");
    let paths: Vec<&str> = warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "component.componentKye",
            "pushModules.demo.ratelimit.enabld"
        ]
    );
    assert_eq!(warnings[0].line, Some(line_of(&text, "componentKye")));
}

#[test]
fn a_host_name_with_a_port_is_an_error_naming_the_port_key() {
    for (key, written, host) in [
        ("serverHostname", "127.0.0.1", "127.0.0.1:5347"),
        ("serverHostname", "127.0.0.1", "xmpp.example.org:5347"),
        (
            "componentHostname",
            "push.example.org",
            "push.example.org:5347",
        ),
    ] {
        let text =
            settings_with(DEMO, "").replace(&format!("\"{written}\""), &format!("\"{host}\""));
        let errors = errors_of(&text);
        let err = error_at(&errors, &format!("component.{key}"));
        assert!(err.message.contains("serverPort"), "{host}: {err}");
        assert_eq!(err.line, Some(line_of(&text, host)));
    }
    let v6 = settings_with(DEMO, "").replace("\"127.0.0.1\"", "\"::1\"");
    assert_eq!(loaded(&v6).settings.component.server_hostname, "::1");
}

#[test]
fn a_keepalive_timeout_is_not_judged_against_an_interval_that_was_refused() {
    let text = settings_with(
        DEMO,
        r#", "timeout": { "keepaliveInterval": "2h", "keepaliveTimeout": "90s" }"#,
    );
    let errors = errors_of(&text);
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["timeout.keepaliveInterval"], "{errors:?}");
}

#[test]
fn unknown_keys_of_optional_sections_have_their_plain_path_and_line() {
    let text = settings_with(
        DEMO,
        ",\n  \"metrics\": { \"listen\": \"127.0.0.1:9357\",\n    \"lisen\": 1 },\n  \"push2\": {\n    \"tll\": \"4w\" }",
    );
    let warnings = loaded(&text).warnings;
    let found: Vec<(&str, Option<usize>)> =
        warnings.iter().map(|w| (w.path.as_str(), w.line)).collect();
    let expected = [
        ("metrics.lisen", Some(line_of(&text, "lisen"))),
        ("push2.tll", Some(line_of(&text, "tll"))),
    ];
    assert_eq!(found, expected);
}
