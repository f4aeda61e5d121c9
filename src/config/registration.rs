//! `pushModules.<id>.registration`: the registering client protocol a module serves, e.g.
//! `{"protocol": "p2"}` (Conversations-family apps register with fpush before they push).
//!
//! A module serves the registration service of its platform (`fcm` for `google`, `apns` for
//! `apple`); two modules serving one protocol for one service would make a registration's
//! module ambiguous, so that is an error naming both.

use serde::Deserialize;

use super::document::Document;
use super::{ConfigError, Settings};

/// Which registering protocol a module serves (`registration.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(tag = "protocol", rename_all = "lowercase")]
pub enum RegistrationProtocol {
    /// p2 as Conversations and its forks speak it: `register-push-fcm`/`-apns` commands, then
    /// pushes naming a node and a secret.
    P2,
}

impl RegistrationProtocol {
    /// The value of `registration.protocol`.
    pub fn name(self) -> &'static str {
        match self {
            RegistrationProtocol::P2 => "p2",
        }
    }
}

/// Every module with a `registration` block has a platform with a registration service, no two
/// modules serve one protocol for one service, and a `store` section says where the
/// registrations live.
pub(crate) fn check(document: &Document, settings: &Settings) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let modules = &settings.push_modules;
    let registering = modules.iter().find(|module| module.registration.is_some());
    if let (Some(module), None) = (registering, &settings.store) {
        let message = format!(
            "missing: module `{}` serves registrations, which need the registration store \
             (e.g. {{\"backend\": \"sqlite\", \"path\": \"/var/lib/fpush/registrations.sqlite3\"}})",
            module.id
        );
        errors.push(document.at_key("store", message));
    }
    let mut served: Vec<(RegistrationProtocol, &str, &str)> = Vec::new();
    for module in modules {
        let Some(protocol) = module.registration else {
            continue;
        };
        let path = format!("pushModules.{}.registration", module.id);
        let Some(service) = module.platform.capabilities.registration_service else {
            let message = format!(
                "a module of type {} cannot serve registrations (only types with a \
                 registration service can)",
                module.platform.type_name
            );
            errors.push(document.at_key(&path, message));
            continue;
        };
        let taken = served
            .iter()
            .find(|(p, s, _)| *p == protocol && *s == service);
        if let Some((_, _, first)) = taken {
            let message = format!(
                "modules `{first}` and `{}` both serve {} registrations for {service}; \
                 at most one module may",
                module.id,
                protocol.name()
            );
            errors.push(document.at_key(&path, message));
            continue;
        }
        served.push((protocol, service, &module.id));
    }
    errors
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, Platforms};
    use crate::modules::platforms;

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
        assert_eq!(module.registration, Some(super::RegistrationProtocol::P2));
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
}
