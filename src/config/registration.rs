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
use super::{ModuleSettings, Settings};

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
pub(crate) fn check(doc: &mut Document, settings: &Settings) {
    let modules = &settings.push_modules;
    let registering = modules.iter().find(|module| module.registration.is_some());
    if let (Some(module), None) = (registering, &settings.store) {
        let id = &module.id;
        let message = format!(
            "missing: module `{id}` serves registrations, which need the registration store \
             (e.g. {{\"backend\": \"sqlite\", \"path\": \"/var/lib/fpush/registrations.sqlite3\"}})"
        );
        doc.error("store", message);
    }
    let mut served: Vec<(RegistrationProtocol, &str, &str)> = Vec::new();
    for module in modules {
        let Some(protocol) = module.registration else {
            continue;
        };
        let path = format!("pushModules.{}.registration", module.id);
        if let Some(problem) = provider_problem(module, protocol) {
            doc.error(&path, problem);
            continue;
        }
        let Some(service) = module.platform.capabilities.registration_service else {
            let type_name = module.platform.type_name;
            let message = format!(
                "a module of type {type_name} cannot serve registrations (only types with a \
                 registration service can)"
            );
            doc.error(&path, message);
            continue;
        };
        // A tigase module serves its provider id, not its platform's service.
        let service = module.registration_provider.as_deref().unwrap_or(service);
        let taken = served
            .iter()
            .find(|(p, s, _)| *p == protocol && *s == service);
        if let Some((_, _, first)) = taken {
            let (id, name) = (&module.id, protocol.name());
            let message = format!(
                "modules `{first}` and `{id}` both serve {name} registrations for {service}; \
                 at most one module may"
            );
            doc.error(&path, message);
            continue;
        }
        served.push((protocol, service, &module.id));
    }
}

/// Siskin-family apps register a PushKit token beside the device token and send encrypted
/// payloads: only a platform that declares both can serve them.
fn serves_tigase(module: &ModuleSettings) -> bool {
    let capabilities = module.platform.capabilities;
    capabilities.voip && capabilities.encrypted_payloads
}

/// What is wrong with a module's `provider`: a tigase module names one and can serve it;
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
        (RegistrationProtocol::Tigase, Some(_)) if !serves_tigase(module) => {
            "tigase registrations need a module type that delivers VoIP pushes and encrypted \
             payloads"
        }
        _ => return None,
    };
    Some(problem)
}
