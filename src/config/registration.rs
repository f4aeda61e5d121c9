//! `pushModules.<id>.registration`: the registering client protocol a module serves, e.g.
//! `{"protocol": "p2"}` (Conversations-family apps register with fpush before they push) or
//! `{"protocol": "tigase", "provider": "snikket:apns:1"}` (Siskin-family apps).
//!
//! A p2 module serves the registration service of its platform (`fcm` for `google`, `apns` for
//! `apple`); a tigase module serves its provider id (APNS modules only). Two modules serving one
//! protocol for one service, or claiming one provider id, would make a registration's module
//! ambiguous, so that is an error naming both.

use serde::Deserialize;

use super::document::Document;
use super::{ConfigError, ModuleSettings, Settings};

/// Which registering protocol a module serves (`registration.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationProtocol {
    /// p2 as Conversations and its forks speak it: `register-push-fcm`/`-apns` commands, then
    /// pushes naming a node and a secret.
    P2,
    /// The Tigase push component's protocol (Siskin IM, Snikket iOS): `register-device` with a
    /// provider id, then pushes naming a node, possibly encrypted.
    Tigase,
}

impl RegistrationProtocol {
    /// The value of `registration.protocol`.
    pub fn name(self) -> &'static str {
        match self {
            RegistrationProtocol::P2 => "p2",
            RegistrationProtocol::Tigase => "tigase",
        }
    }
}

/// The `registration` block as written: the protocol and, for tigase, the provider id.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationBlock {
    pub protocol: RegistrationProtocol,
    /// The provider id clients name in `register-device` (tigase only).
    pub provider: Option<String>,
}

/// Longest provider id accepted (real ones are like `tigase:messenger:apns:1`).
const MAX_PROVIDER_BYTES: usize = 256;

/// Every module with a `registration` block has a platform with a registration service, no two
/// modules serve one protocol for one service (or claim one provider id), and a `store` section
/// says where the registrations live.
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
        if let Some(problem) = provider_problem(module, protocol) {
            errors.push(document.at_key(&path, problem.to_owned()));
            continue;
        }
        let Some(service) = module.platform.capabilities.registration_service else {
            let message = format!(
                "a module of type {} cannot serve registrations (only types with a \
                 registration service can)",
                module.platform.type_name
            );
            errors.push(document.at_key(&path, message));
            continue;
        };
        // A tigase module serves its provider id, not its platform's service.
        let service = module.registration_provider.as_deref().unwrap_or(service);
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

/// What is wrong with a module's `provider`: a tigase module names one and is an APNS module;
/// a p2 module names none.
fn provider_problem(
    module: &ModuleSettings,
    protocol: RegistrationProtocol,
) -> Option<&'static str> {
    let provider = module.registration_provider.as_deref();
    let problem = match (protocol, provider) {
        (RegistrationProtocol::P2, Some(_)) => {
            "`provider` belongs to tigase registrations; p2 modules serve their platform's \
             service"
        }
        (RegistrationProtocol::Tigase, None) => {
            "missing: `provider`, the provider id Siskin-family apps register with (e.g. \
             \"snikket:apns:1\")"
        }
        (RegistrationProtocol::Tigase, Some(id))
            if id.is_empty()
                || id.len() > MAX_PROVIDER_BYTES
                || !id.contains(':')
                || id.contains(|c: char| c.is_whitespace() || c.is_control()) =>
        {
            "`provider` must be a colon-separated id without whitespace (e.g. \
             \"snikket:apns:1\"), at most 256 bytes"
        }
        (RegistrationProtocol::Tigase, Some(_))
            if module.platform.capabilities.registration_service != Some("apns") =>
        {
            "tigase registrations are served by modules of type apple only"
        }
        _ => return None,
    };
    Some(problem)
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
        assert_eq!(
            module.registration,
            Some(super::RegistrationProtocol::Tigase)
        );
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
        let p2 = format!(
            r#""ios": {{{APNS}, "registration": {{"protocol": "p2", "provider": "x:y"}}}}"#
        );
        let found = errors(&p2, &platforms());
        assert!(
            found[0].contains("`provider` belongs to tigase"),
            "{found:?}"
        );
        let android = format!(
            r#""android": {{{FCM}, "registration": {{"protocol": "tigase", "provider": "x:y"}}}}"#
        );
        let found = errors(&android, &platforms());
        assert!(found[0].contains("type apple only"), "{found:?}");
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
