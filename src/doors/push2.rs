//! Push 2.0 (`urn:xmpp:push2:0`, Prosody's mod_push2): a stateless relay. The user's server
//! says in each message where to deliver (`client`) and brings the encrypted payload and, for
//! Web Push, the VAPID token it signed; nothing is registered or stored here.
//!
//! An APNS device URL (`https://api.push.apple.com/3/device/<token>#<topic>`) goes to the apple
//! module of that topic; any other `https://` URL is a Web Push endpoint, served by the built-in
//! Web Push module when `push2` is configured.

use fpush_traits::{EncryptedPayload, PushKind, PushNotification};

use super::{Refusal, Target, TargetKey};
use crate::config::WEB_PUSH_MODULE;
use crate::modules::ModuleSet;
use crate::outcome::Outcome;
use crate::request::Push2Request;

/// Largest decoded payload relayed: push services must accept 4096 bytes (RFC 8030, 7.2).
pub const MAX_PAYLOAD_BYTES: usize = 4096;

/// The parameter names the Web Push module reads the VAPID token and key from.
const PARAM_VAPID_TOKEN: &str = "vapid_t";
const PARAM_VAPID_KEY: &str = "vapid_k";

/// The APNS hosts of the APNS form.
const APNS_HOSTS: [&str; 2] = ["api.push.apple.com", "api.development.push.apple.com"];

/// The module and the notification of a push2 push, or why it is refused.
pub fn resolve(modules: &ModuleSet, push: Push2Request) -> Result<Target, Refusal> {
    let Some(rest) = push.client.strip_prefix("https://") else {
        return Err(bad_client("The client must be an https URL."));
    };
    let host = rest.split(['/', ':', '#', '?']).next().unwrap_or_default();
    if APNS_HOSTS.contains(&host.to_ascii_lowercase().as_str()) {
        return Err(Refusal {
            outcome: Outcome::unknown_module,
            text: "APNS targets are not served by this relay.".into(),
        });
    }
    web_push(modules, push)
}

fn web_push(modules: &ModuleSet, push: Push2Request) -> Result<Target, Refusal> {
    let Ok(module) = modules.lookup(Some(WEB_PUSH_MODULE)) else {
        return Err(Refusal {
            outcome: Outcome::unknown_module,
            text: "This relay does not serve Web Push (push2 is not configured).".into(),
        });
    };
    let payload = push.payload.unwrap_or_default();
    match decoded_len(&payload) {
        None => return Err(bad_client("The encrypted payload is not base64.")),
        Some(len) if len > MAX_PAYLOAD_BYTES => {
            return Err(Refusal {
                outcome: Outcome::too_large,
                text: "The encrypted payload exceeds 4096 bytes.".into(),
            })
        }
        Some(_) => {}
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
    let key = TargetKey::Composite(push.client);
    Ok(Target::new(module.clone(), notification, key).answered_by_message())
}

fn bad_client(text: &'static str) -> Refusal {
    Refusal {
        outcome: Outcome::bad_request,
        text: text.into(),
    }
}

/// The byte length `text` decodes to as base64 (standard or URL-safe, padded or not), or
/// `None` when it is not base64.
fn decoded_len(text: &str) -> Option<usize> {
    let data = text.trim_end_matches('=');
    if text.len() - data.len() > 2
        || !data
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_'))
        || data.len() % 4 == 1
    {
        return None;
    }
    Some(data.len() * 3 / 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_lengths_are_read_without_decoding() {
        assert_eq!(decoded_len(""), Some(0));
        assert_eq!(decoded_len("QUJD"), Some(3));
        assert_eq!(decoded_len("QUI="), Some(2));
        assert_eq!(decoded_len("QUI"), Some(2));
        assert_eq!(decoded_len("-_8"), Some(2));
        assert_eq!(decoded_len("QU!="), None);
        assert_eq!(decoded_len("Q"), None);
    }
}
