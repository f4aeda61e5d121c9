//! The `push2` settings section: its defaults (the per-target ratelimit off), its bounds with key
//! paths, the module id the relay takes, and the built-in Web Push module it creates.

use fpush::config::{self, ConfigErrors, Push2Settings};
use fpush::metrics::Metrics;
use fpush::modules;

fn settings(push2: &str, modules: &str) -> String {
    format!(
        r#"{{
  "component": {{ "componentHostname": "push.example.org", "componentKey": "secret",
                  "serverHostname": "127.0.0.1", "serverPort": 5347 }},
  {push2}
  "pushModules": {{ "demo": {{ "type": "demo", "is_default_module": true }} {modules} }}
}}"#
    )
}

fn error_paths(text: &str) -> Vec<String> {
    match config::parse(text, &modules::platforms()) {
        Ok(loaded) => panic!("expected errors, got {:?}", loaded.settings.push2),
        Err(ConfigErrors { errors, .. }) => errors.into_iter().map(|e| e.path).collect(),
    }
}

#[test]
fn an_empty_section_turns_the_relay_on_with_the_defaults_and_no_ratelimit() {
    let loaded = config::parse(&settings(r#""push2": {},"#, ""), &modules::platforms()).unwrap();
    let push2 = loaded.settings.push2.unwrap();
    assert_eq!(push2, Push2Settings::default());
    assert!(!push2.ratelimit.enabled);
    assert_eq!(push2.ttl.as_secs(), 28 * 24 * 3600);
    assert!(push2.web_push_origins.is_none());
    let without = config::parse(&settings("", ""), &modules::platforms()).unwrap();
    assert!(without.settings.push2.is_none());
}

#[test]
fn an_operator_can_turn_the_client_ratelimit_on() {
    let text = settings(
        r#""push2": { "ratelimit": { "enabled": true, "ratelimitTime": "5s" } },"#,
        "",
    );
    let push2 = config::parse(&text, &modules::platforms())
        .unwrap()
        .settings
        .push2
        .unwrap();
    assert!(push2.ratelimit.enabled);
    assert_eq!(push2.ratelimit.ratelimit_time.as_secs(), 5);
}

#[test]
fn bad_values_are_reported_at_their_key_paths() {
    let text = settings(
        r#""push2": { "ttl": "1y", "maxOrigins": 0, "maxConnectionsPerOrigin": 100,
                      "webPushOrigins": [], "requestTimeout": "0s", "unknownKey": 1 },"#,
        "",
    );
    let paths = error_paths(&text);
    for path in [
        "push2.ttl",
        "push2.maxOrigins",
        "push2.maxConnectionsPerOrigin",
        "push2.webPushOrigins",
        "push2.requestTimeout",
    ] {
        assert!(paths.iter().any(|p| p == path), "{path} not in {paths:?}");
    }
}

#[test]
fn no_module_may_take_the_relay_s_id() {
    let text = settings(r#""push2": {},"#, r#", "webpush": { "type": "demo" }"#);
    let paths = error_paths(&text);
    assert!(
        paths.iter().any(|p| p == "pushModules.webpush"),
        "{paths:?}"
    );
}

#[test]
fn the_section_creates_the_webpush_module_and_bad_origins_fail_the_build() {
    let metrics = Metrics::new();
    let text = settings(r#""push2": {},"#, "");
    let loaded = config::parse(&text, &modules::platforms()).unwrap();
    let set = modules::build(&loaded.settings, &metrics, None).unwrap();
    let relay = set
        .iter()
        .find(|m| m.id == config::WEB_PUSH_MODULE)
        .unwrap();
    assert_eq!(relay.type_name, "webpush");

    let text = settings(
        r#""push2": { "webPushOrigins": ["http://push.example"] },"#,
        "",
    );
    let loaded = config::parse(&text, &modules::platforms()).unwrap();
    let error = modules::build(&loaded.settings, &metrics, None).unwrap_err();
    assert!(
        error.to_string().contains("push2.webPushOrigins"),
        "{error}"
    );
}
