//! Push 2.0 (`urn:xmpp:push2:0`, Prosody's mod_push2): a stateless relay. The user's server
//! says in each message where to deliver (`client`) and brings the encrypted payload and, for
//! Web Push, the VAPID token it signed; nothing is registered or stored here.
//!
//! An APNS device URL (`https://api.push.apple.com/3/device/<token>#<topic>`) goes to the apple
//! module of that topic; any other `https://` URL is a Web Push endpoint, served by the built-in
//! Web Push module when `push2` is configured.

use std::fmt::Write;

use fpush_traits::{EncryptedPayload, PushKind, PushNotification};

use super::{Limiter, Refusal, Target, TargetKey};
use crate::config::WEB_PUSH_MODULE;
use crate::modules::{
    check_web_push_vapid, web_push_payload_len, LookupError, ModuleSet, PARAM_VAPID_KEY,
    PARAM_VAPID_TOKEN, WEB_PUSH_MAX_PAYLOAD,
};
use crate::outcome::Outcome;
use crate::request::Push2Request;

/// The APNS hosts of the APNS form and the environment each names.
const APNS_HOSTS: [(&str, &str); 2] = [
    ("api.push.apple.com", "production"),
    ("api.development.push.apple.com", "sandbox"),
];
/// The path of the APNS form; the device token follows.
const APNS_DEVICE_PATH: &str = "/3/device/";
/// The top-level payload key the app's extension reads the encrypted payload from.
const APNS_PAYLOAD_KEY: &str = "rfc8291";
/// Apple's limits on a push's JSON payload: an alert's, and a PushKit call's.
const APNS_MAX_PAYLOAD: usize = 4096;
const APNS_MAX_VOIP_PAYLOAD: usize = 5120;
/// The least JSON an APNS alert wraps the payload in (empty title and body). A payload that
/// cannot fit even so is refused here: Apple would answer `PayloadTooLarge`, which the apple
/// module must read as its own misconfiguration.
const APNS_LEAST_WRAPPING: usize =
    r#"{"aps":{"alert":{"body":"","title":""},"mutable-content":1,"sound":"default"},"rfc8291":""}"#
        .len();

/// The module and the notification of a push2 push, or why it is refused.
pub fn resolve(modules: &ModuleSet, push: Push2Request) -> Result<Target, Refusal> {
    let Some(rest) = push.client.strip_prefix("https://") else {
        return Err(bad_client("The client must be an https URL."));
    };
    let host = rest.split(['/', ':', '#', '?']).next().unwrap_or_default();
    let host = host.to_ascii_lowercase();
    match APNS_HOSTS.iter().find(|(apns, _)| *apns == host) {
        Some((apns, environment)) => apns_push(modules, push, apns.len(), environment),
        None => web_push(modules, push),
    }
}

/// `https://<apns host>/3/device/<token>#<topic>[&<voip token>]` to the apple module of that
/// topic and environment: an alert (or, with `<voip/>` and a VoIP token, a PushKit call)
/// carrying the encrypted payload under `rfc8291`.
fn apns_push(
    modules: &ModuleSet,
    push: Push2Request,
    host_len: usize,
    environment: &str,
) -> Result<Target, Refusal> {
    let (token, topic, voip_token) = apns_client(&push.client["https://".len() + host_len..])?;
    let wanted = format!("apns:{environment}:{topic}");
    let Some(module) = modules
        .iter()
        .find(|module| module.push.relay_name() == Some(wanted.as_str()))
    else {
        // An app a reload removed is answered `wait` within `modules.retiredGrace`, as a
        // removed module is.
        let (outcome, now) = match modules.retired_relay(&wanted) {
            true => (Outcome::retired, " now"),
            false => (Outcome::unknown_module, ""),
        };
        return Err(Refusal {
            outcome,
            text: format!("No APNS module serves {topic} ({environment}){now}.").into(),
        });
    };
    let voip = push.voip && voip_token.is_some();
    fits_apns(push.payload.as_deref(), voip)?;
    let notification = PushNotification {
        token: token.to_owned(),
        module_id: module.id.clone(),
        priority: push.priority,
        // A call without a VoIP token stays a call: the module sends it as an alert, kept by
        // Apple no longer than a call is.
        kind: Some(if push.voip {
            PushKind::Voip
        } else {
            PushKind::Alert
        }),
        voip_token: voip_token.map(str::to_owned),
        extra: push
            .payload
            .filter(|payload| !payload.is_empty())
            .map(|payload| (APNS_PAYLOAD_KEY.to_owned(), payload))
            .into_iter()
            .collect(),
        ..PushNotification::default()
    };
    // Push2's ratelimit, not the app's: off unless `push2.ratelimit` is enabled.
    let relay = modules
        .lookup(Some(WEB_PUSH_MODULE))
        .ok()
        .filter(|relay| relay.ratelimit_enabled())
        .cloned();
    // The token the push goes to: the rest of the client picks the module or nothing at all.
    let key = match voip {
        true => TargetKey::SecondToken,
        false => TargetKey::Token,
    };
    let target = Target::new(module.clone(), notification, key)
        .answered_by_message()
        .limited_by(Limiter::Relay(relay));
    Ok(urgent_if_call(target, push.voip))
}

/// A call (`<voip/>`: mod_push2's Jingle `propose` and `retract`) passes no ratelimit, as a
/// tigase call does: held for the window, it rings late or rings on after the caller hung up.
fn urgent_if_call(target: Target, voip: bool) -> Target {
    if voip {
        target.urgent()
    } else {
        target
    }
}

/// The parts of an APNS client after its host, `/3/device/<token>#<topic>[&<VoIP token>]`:
/// the token, the topic and the VoIP token if one is given.
fn apns_client(rest: &str) -> Result<(&str, &str, Option<&str>), Refusal> {
    const MALFORMED: &str = "The APNS client must be https://<host>/3/device/<token>#<topic>.";
    let (path, fragment) = rest.split_once('#').ok_or_else(|| bad_client(MALFORMED))?;
    let token = path
        .strip_prefix(APNS_DEVICE_PATH)
        .filter(|token| !token.is_empty() && !token.contains(['/', '?']))
        .ok_or_else(|| bad_client(MALFORMED))?;
    let (topic, voip_token) = match fragment.split_once('&') {
        Some((topic, voip)) => (topic, Some(voip).filter(|voip| !voip.is_empty())),
        None => (fragment, None),
    };
    if topic.is_empty() {
        return Err(bad_client(MALFORMED));
    }
    Ok((token, topic, voip_token))
}

/// Refuses a payload no APNS push (a call when `voip`) can carry, however short its alert.
fn fits_apns(payload: Option<&str>, voip: bool) -> Result<(), Refusal> {
    let limit = match voip {
        true => APNS_MAX_VOIP_PAYLOAD,
        false => APNS_MAX_PAYLOAD,
    };
    match payload {
        Some(payload) if payload.len() > limit - APNS_LEAST_WRAPPING => Err(Refusal {
            outcome: Outcome::too_large,
            text: "The encrypted payload does not fit an APNS push.".into(),
        }),
        _ => Ok(()),
    }
}

fn web_push(modules: &ModuleSet, push: Push2Request) -> Result<Target, Refusal> {
    let module = match modules.lookup(Some(WEB_PUSH_MODULE)) {
        Ok(module) => module,
        // Like any module a reload removed: `wait` within `modules.retiredGrace`, so that an
        // operator's slip does not make servers drop their users' subscriptions.
        Err(LookupError::Retired(_)) => {
            return Err(Refusal {
                outcome: Outcome::retired,
                text: "Web Push was turned off by a reload; try again later.".into(),
            })
        }
        Err(_) => {
            return Err(Refusal {
                outcome: Outcome::unknown_module,
                text: "This relay does not serve Web Push (push2 is not configured).".into(),
            })
        }
    };
    let payload = push.payload.unwrap_or_default();
    match decoded_len(&payload) {
        None => return Err(bad_client("The encrypted payload is not base64.")),
        Some(len) if len > WEB_PUSH_MAX_PAYLOAD => {
            return Err(Refusal {
                outcome: Outcome::too_large,
                text: "The encrypted payload exceeds 4096 bytes.".into(),
            })
        }
        Some(_) => {}
    }
    let vapid = check_web_push_vapid(push.jwt.as_deref(), push.jwt_key.as_deref());
    if vapid.is_err() {
        return Err(bad_client("The VAPID token or key cannot be sent."));
    }
    let mut params = Vec::new();
    if let Some(jwt) = push.jwt {
        params.push((PARAM_VAPID_TOKEN.to_owned(), jwt));
    }
    if let Some(key) = push.jwt_key {
        params.push((PARAM_VAPID_KEY.to_owned(), key));
    }
    let notification = PushNotification {
        token: push.client.clone(),
        module_id: module.id.clone(),
        priority: push.priority,
        kind: push.voip.then_some(PushKind::Voip),
        encrypted: Some(EncryptedPayload {
            data: payload,
            params,
        }),
        ..PushNotification::default()
    };
    let key = TargetKey::Composite(endpoint_key(&push.client));
    let target = Target::new(module.clone(), notification, key).answered_by_message();
    Ok(urgent_if_call(target, push.voip))
}

/// The ratelimit and dead-endpoint key of a Web Push endpoint: the endpoint as it is requested,
/// spelled one way. The host is compared without case, `:443` is https's own port and a
/// fragment never leaves the relay, so spellings that differ only there reach the same
/// subscription and share its key (its dead-endpoint memory, its ratelimit); the path and the
/// query are kept exactly, as the push service tells subscriptions apart by them. Read as the
/// Web Push module reads it (its origin fence); an endpoint it cannot read keeps its spelling
/// (it is refused without a request).
fn endpoint_key(client: &str) -> String {
    let Ok(uri) = client.parse::<hyper::Uri>() else {
        return client.to_owned();
    };
    let Some(authority) = uri.authority().filter(|a| !a.as_str().contains('@')) else {
        return client.to_owned();
    };
    let mut key = String::with_capacity(client.len());
    key.push_str("https://");
    key.push_str(&authority.host().to_ascii_lowercase());
    match authority.port_u16().unwrap_or(443) {
        443 => {}
        port => {
            // Writing to a String cannot fail.
            let _ = write!(key, ":{port}");
        }
    }
    key.push_str(uri.path());
    if let Some(query) = uri.query() {
        key.push('?');
        key.push_str(query);
    }
    key
}

fn bad_client(text: &'static str) -> Refusal {
    Refusal {
        outcome: Outcome::bad_request,
        text: text.into(),
    }
}

/// The byte length `text` decodes to as base64 (standard or URL-safe, padded or not), or
/// `None` when it is not base64. Read by the module's own decoder: a payload this door let
/// through must never fail there, where it would read as the push service refusing it.
fn decoded_len(text: &str) -> Option<usize> {
    web_push_payload_len(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_apns_payload_must_fit_with_the_least_wrapping() {
        let fits = |len: usize, voip| fits_apns(Some(&"A".repeat(len)), voip).is_ok();
        assert!(fits(4096 - APNS_LEAST_WRAPPING, false));
        assert!(!fits(4096 - APNS_LEAST_WRAPPING + 1, false));
        assert!(fits(4096, true));
        assert!(fits(5120 - APNS_LEAST_WRAPPING, true));
        assert!(!fits(5120 - APNS_LEAST_WRAPPING + 1, true));
        assert!(fits_apns(None, false).is_ok());
    }

    /// An apple module whose platform serves push2's APNS form for `relay`.
    fn apple(id: &str, relay: &'static str) -> crate::modules::Module {
        use fpush_traits::{async_trait, Delivered, PushError, PushTrait};
        struct Relayed(&'static str);
        #[async_trait]
        impl PushTrait for Relayed {
            async fn send(&self, _: &PushNotification) -> Result<Delivered, PushError> {
                Ok(Delivered::default())
            }
            fn relay_name(&self) -> Option<&str> {
                Some(self.0)
            }
        }
        crate::modules::Module::new(
            id,
            "apple",
            std::sync::Arc::new(Relayed(relay)),
            crate::ratelimit::RatelimitConfig::default(),
            std::time::Duration::from_secs(3600),
            crate::metrics::ModuleMetrics::detached(),
        )
    }

    #[test]
    fn an_apns_push_for_an_app_a_reload_removed_is_answered_wait_within_the_grace() {
        let push = || Push2Request {
            client: "https://api.push.apple.com/3/device/abcd#com.example.app".into(),
            ..Push2Request::default()
        };
        let relay = "apns:production:com.example.app";
        let before = ModuleSet::from_modules(vec![(apple("ios", relay), false)]);
        assert!(resolve(&before, push()).is_ok());
        let mut after = ModuleSet::from_modules(Vec::new());
        after.remember_retired(&before, std::time::Duration::from_secs(3600));
        let refusal = resolve(&after, push()).unwrap_err();
        assert_eq!(refusal.outcome, Outcome::retired, "{}", refusal.text);
        // Served on under another id: pushes go to it.
        let mut renamed = ModuleSet::from_modules(vec![(apple("ios-new", relay), false)]);
        renamed.remember_retired(&before, std::time::Duration::from_secs(3600));
        assert!(resolve(&renamed, push()).is_ok());
        // Past the grace, or never served: no module serves it.
        let mut past = ModuleSet::from_modules(Vec::new());
        past.remember_retired(&before, std::time::Duration::ZERO);
        let refusal = resolve(&past, push()).unwrap_err();
        assert_eq!(refusal.outcome, Outcome::unknown_module, "{}", refusal.text);
    }

    #[test]
    fn base64_lengths_are_read_in_either_alphabet_padded_or_not() {
        assert_eq!(decoded_len(""), Some(0));
        assert_eq!(decoded_len("QUJD"), Some(3));
        assert_eq!(decoded_len("QUI="), Some(2));
        assert_eq!(decoded_len("QUI"), Some(2));
        assert_eq!(decoded_len("-_8"), Some(2));
        assert_eq!(decoded_len("QU!="), None);
        assert_eq!(decoded_len("Q"), None);
    }

    #[test]
    fn a_payload_the_web_push_module_cannot_decode_is_refused_here() {
        // Left bits set in the last character, padding after a whole group, and the two
        // alphabets mixed: each once passed this door and failed in the module, where it was
        // answered and counted as the push service refusing the push.
        for text in ["QUJ", "QUJD=", "QUI==", "ab+-"] {
            assert_eq!(decoded_len(text), None, "{text}");
        }
    }
}
