//! The per-module `registration` block as `fpush --check` reads it with the real platform
//! entries: which protocols a module type may serve, and which collisions are refused.

use fpush::config::{parse, Platforms, RegistrationProtocol};
use fpush::modules::platforms;

fn settings(modules: &str) -> String {
    format!(
        r#"{{"component": {{"componentHostname": "push.example.org", "componentKey": "k",
            "serverHostname": "127.0.0.1", "serverPort": 5347}},
          "store": {{"path": "/nonexistent/registrations.sqlite3"}},
          "pushModules": {{ {modules} }} }}"#
    )
}

fn errors(modules: &str, platforms: &Platforms) -> Vec<String> {
    match parse(&settings(modules), platforms) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.errors.iter().map(ToString::to_string).collect(),
    }
}

const FCM: &str = r#""type": "google", "fcm": {"fcmSecretPath": "/nonexistent/sa.json"}"#;

#[cfg(feature = "enable_fcm_support")]
#[test]
fn a_p2_block_is_read() {
    let modules = format!(r#""android": {{{FCM}, "registration": {{"protocol": "p2"}}}}"#);
    let loaded = parse(&settings(&modules), &platforms()).unwrap();
    let module = &loaded.settings.push_modules[0];
    assert_eq!(module.registration, Some(RegistrationProtocol::P2));
    assert_eq!(module.registration_provider, None);
}

#[cfg(feature = "enable_fcm_support")]
#[test]
fn two_p2_modules_for_one_service_are_named_together() {
    let modules = format!(
        r#""first": {{{FCM}, "registration": {{"protocol": "p2"}}}},
           "second": {{{FCM}, "registration": {{"protocol": "p2"}}}},
           "plain": {{{FCM}}}"#
    );
    let found = errors(&modules, &platforms());
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with(
            "pushModules.second.registration: modules `first` and `second` both serve \
             p2 registrations for fcm"
        ),
        "{found:?}"
    );
}

#[cfg(feature = "enable_fcm_support")]
#[test]
fn registrations_need_the_store_section() {
    let modules = format!(r#""android": {{{FCM}, "registration": {{"protocol": "p2"}}}}"#);
    let text = settings(&modules).replace(
        r#""store": {"path": "/nonexistent/registrations.sqlite3"},"#,
        "",
    );
    let found = match parse(&text, &platforms()) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.errors.iter().map(ToString::to_string).collect(),
    };
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("store: missing: module `android` serves registrations"),
        "{found:?}"
    );
}

const APNS: &str = r#""type": "apple", "apns": {"keyFilePath": "/nonexistent/k.p8",
    "keyId": "K", "teamId": "T", "topic": "org.example.app"}"#;

fn tigase(id: &str, provider: &str) -> String {
    format!(
        r#""{id}": {{{APNS}, "registration": {{"protocol": "tigase", "provider": "{provider}"}}}}"#
    )
}

#[cfg(feature = "enable_apns_support")]
#[test]
fn a_tigase_block_is_read_with_its_provider() {
    let text = settings(&tigase("ios", "snikket:apns:1"));
    let loaded = parse(&text, &platforms()).unwrap();
    let module = &loaded.settings.push_modules[0];
    assert_eq!(module.registration, Some(RegistrationProtocol::Tigase));
    assert_eq!(
        module.registration_provider.as_deref(),
        Some("snikket:apns:1")
    );
}

#[cfg(feature = "enable_apns_support")]
#[test]
fn two_modules_claiming_one_provider_id_are_named_together() {
    let modules = format!(
        "{}, {}, {}",
        tigase("first", "snikket:apns:1"),
        tigase("second", "snikket:apns:1"),
        tigase("third", "tigase:messenger:apns:1")
    );
    let found = errors(&modules, &platforms());
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with(
            "pushModules.second.registration: modules `first` and `second` both serve \
             tigase registrations for snikket:apns:1"
        ),
        "{found:?}"
    );
}

#[cfg(feature = "enable_apns_support")]
#[test]
fn a_tigase_module_needs_a_colon_separated_provider() {
    let missing = format!(r#""ios": {{{APNS}, "registration": {{"protocol": "tigase"}}}}"#);
    let found = errors(&missing, &platforms());
    assert!(found[0].contains("missing: `provider`"), "{found:?}");
    for bad in ["", "apns", "a b:c"] {
        let found = errors(&tigase("ios", bad), &platforms());
        assert!(found[0].contains("colon-separated"), "{bad:?}: {found:?}");
    }
}

#[cfg(all(feature = "enable_apns_support", feature = "enable_fcm_support"))]
#[test]
fn provider_ids_belong_to_tigase_modules_of_type_apple() {
    let p2 =
        format!(r#""ios": {{{APNS}, "registration": {{"protocol": "p2", "provider": "x:y"}}}}"#);
    let found = errors(&p2, &platforms());
    assert!(
        found[0].contains("`provider` belongs to tigase"),
        "{found:?}"
    );
    let android = format!(
        r#""android": {{{FCM}, "registration": {{"protocol": "tigase", "provider": "x:y"}}}}"#
    );
    let found = errors(&android, &platforms());
    assert!(found[0].contains("VoIP pushes and encrypted"), "{found:?}");
}

#[test]
fn a_demo_module_cannot_serve_registrations() {
    let found = errors(
        r#""d": {"type": "demo", "registration": {"protocol": "p2"}}"#,
        &platforms(),
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("pushModules.d.registration: a module of type demo cannot"),
        "{found:?}"
    );
}

#[test]
fn an_unknown_protocol_is_an_error_at_its_key() {
    let found = errors(
        r#""d": {"type": "demo", "registration": {"protocol": "p3"}}"#,
        &platforms(),
    );
    assert!(
        found
            .iter()
            .any(|e| e.contains("registration") && e.contains("p2")),
        "{found:?}"
    );
}

#[cfg(feature = "enable_fcm_support")]
#[test]
fn an_unknown_key_in_the_block_is_a_warning_like_any_other() {
    let modules =
        format!(r#""android": {{{FCM}, "registration": {{"protocol": "p2", "comment": "x"}}}}"#);
    let loaded = parse(&settings(&modules), &platforms()).unwrap_or_else(|e| panic!("{e}"));
    let module = &loaded.settings.push_modules[0];
    assert_eq!(module.registration, Some(RegistrationProtocol::P2));
    let paths: Vec<&str> = loaded.warnings.iter().map(|w| w.path.as_str()).collect();
    assert_eq!(paths, ["pushModules.android.registration.comment"]);
}
