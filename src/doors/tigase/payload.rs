//! What a Tigase push carries to the provider: the registered account, then either the
//! encrypted payload (checked, then passed through unchanged) or the plain summary; the kind
//! (alert, background, VoIP) and priority follow from what the push holds.

use fpush_traits::{EncryptedPayload, Priority, PushKind, PushNotification};

use super::command::MAX_PAYLOAD_SIZE;
use crate::markup::is_xml_space_char;
use crate::modules::Module;
use crate::request::{EncryptedElement, PushRequest, TigaseParts};
use crate::store::Registration;

/// Apple's limit for a push payload.
const APNS_MAX_PAYLOAD: usize = 4096;
/// Apple's limit for a PushKit (VoIP) push payload.
const APNS_MAX_VOIP_PAYLOAD: usize = 5120;
/// What the rest of the payload may take next to the encrypted part (`aps`, the account, the
/// key names), kept generous: a payload Apple refuses would cost the whole push.
const PAYLOAD_RESERVE: usize = 768;
/// A room nickname is a JID resourcepart: at most 1023 bytes.
const MAX_NICKNAME_BYTES: usize = 1023;
/// The longest iv passed on: AES-GCM ivs are 12 bytes (16 at most in practice), and a longer
/// `iv` attribute reaches the door cut short, which the app could not decrypt with.
const MAX_IV_BYTES: usize = 64;
/// The AES-GCM tag the ciphertext carries besides the encrypted plaintext.
const GCM_TAG_BYTES: usize = 16;

/// A notification built for one registration.
#[derive(Debug)]
pub struct Built {
    pub notification: PushNotification,
    /// The push skips the ratelimit queue.
    pub urgent: bool,
}

/// The notification `push` makes for `registration`, delivered through `module`.
pub fn notification(module: &Module, registration: &Registration, mut push: PushRequest) -> Built {
    let mut parts = push.tigase.take().map(|parts| *parts).unwrap_or_default();
    let nickname = parts.nickname.take();
    let high = parts
        .priority
        .as_deref()
        .is_some_and(|p| p.trim_matches(is_xml_space_char) == "high");
    let call = parts.encrypted.as_ref().is_some_and(|e| {
        e.kind.as_deref().map(|k| k.trim_matches(is_xml_space_char)) == Some("voip")
    });
    // An encrypted part that cannot go out still means there is something to show.
    let had_encrypted = parts.encrypted.is_some();
    // A call to a VoIP token is sized for PushKit; anything else, a call sent as an alert
    // included, for an alert.
    let limit = match call && registration.second_token.is_some() {
        true => APNS_MAX_VOIP_PAYLOAD,
        false => APNS_MAX_PAYLOAD,
    };
    let encrypted = usable(parts, &registration.account, limit);
    let mut notification = PushNotification {
        token: registration.token.clone(),
        module_id: module.id.clone(),
        account: Some(registration.account.clone()),
        ..PushNotification::default()
    };
    // Only a call whose details go out is a PushKit push; otherwise a plain alert says it.
    let voip_token = registration
        .second_token
        .clone()
        .filter(|_| call && encrypted.is_some());
    let voip = voip_token.is_some();
    let content = match encrypted {
        Some(encrypted) => {
            notification.encrypted = Some(encrypted);
            true
        }
        None => plain(&mut notification, &push, nickname) || had_encrypted,
    };
    notification.kind = Some(if voip {
        PushKind::Voip
    } else if content || call {
        // A call without a VoIP token goes as an alert: the user still learns of it.
        PushKind::Alert
    } else {
        PushKind::Background
    });
    let urgent = call || high;
    notification.priority = Some(if urgent {
        Priority::High
    } else {
        Priority::Normal
    });
    notification.voip_token = voip_token;
    Built {
        notification,
        urgent,
    }
}

/// The plain keys of a push without (usable) encrypted content; whether it has content.
fn plain(
    notification: &mut PushNotification,
    push: &PushRequest,
    nickname: Option<String>,
) -> bool {
    let summary = &push.summary;
    let mut extra = Vec::new();
    if let Some(sender) = &summary.last_message_sender {
        extra.push(("sender".to_owned(), sender.clone()));
    }
    if let Some(body) = &summary.last_message_body {
        extra.push(("body".to_owned(), body.clone()));
    }
    let content = !extra.is_empty();
    // The sender's name in a room: shown beside the room's JID, so only with content.
    let nickname = nickname.map(|n| n.trim_matches(is_xml_space_char).to_owned());
    if let Some(mut nickname) = nickname.filter(|n| content && !n.is_empty()) {
        crate::doors::shorten_text(&mut nickname, MAX_NICKNAME_BYTES);
        extra.push(("nickname".to_owned(), nickname));
    }
    let count = summary.message_count.as_deref().map(str::trim);
    if let Some(count) = count.and_then(|c| c.parse::<u64>().ok()) {
        let key = "unread-messages".to_owned();
        notification.extra_numbers.push((key, count));
    }
    notification.extra = extra;
    content
}

/// The encrypted part as the app can decrypt it, or `None` when the push has none or it
/// cannot go out: not base64 (the app's decoder rejects whitespace, so XML whitespace is
/// trimmed first), no `iv`, or too large for `max-payload-size` or for Apple's `limit` (4 KB,
/// 5 KB for a PushKit call; a plain "new message" alert goes out instead).
fn usable(parts: TigaseParts, account: &str, limit: usize) -> Option<EncryptedPayload> {
    let EncryptedElement { data, iv, .. } = parts.encrypted?;
    let data = data.trim_matches(is_xml_space_char);
    let iv = iv?;
    let iv = iv.trim_matches(is_xml_space_char);
    let decoded = base64_len(data)?;
    base64_len(iv).filter(|&n| n > 0 && n <= MAX_IV_BYTES)?;
    let fits = decoded <= MAX_PAYLOAD_SIZE + GCM_TAG_BYTES
        && data.len() + iv.len() + account.len() + PAYLOAD_RESERVE <= limit;
    if !fits {
        log::debug!(
            "tigase: an encrypted payload of {decoded} bytes is too large; sending a plain alert"
        );
        return None;
    }
    Some(EncryptedPayload {
        data: data.to_owned(),
        params: vec![("iv".to_owned(), iv.to_owned())],
    })
}

/// The decoded length of standard, padded base64 `text`, or `None` when it is not that.
fn base64_len(text: &str) -> Option<usize> {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    match STANDARD.decode(text) {
        Ok(bytes) if !bytes.is_empty() => Some(bytes.len()),
        Ok(_) => None,
        Err(_) => {
            log::debug!("tigase: an encrypted payload or iv is not base64; sending a plain alert");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use fpush_traits::SentTo;

    use super::*;

    fn parts(data: &str, iv: Option<&str>) -> TigaseParts {
        TigaseParts {
            encrypted: Some(EncryptedElement {
                data: data.to_owned(),
                iv: iv.map(str::to_owned),
                kind: None,
            }),
            priority: None,
            nickname: None,
        }
    }

    fn module() -> Module {
        use std::sync::Arc;
        use std::time::Duration;
        struct Never;
        #[async_trait::async_trait]
        impl fpush_traits::PushTrait for Never {
            async fn send(
                &self,
                _: &PushNotification,
            ) -> Result<fpush_traits::Delivered, fpush_traits::PushError> {
                Ok(fpush_traits::Delivered::default())
            }
        }
        Module::new(
            "ios",
            "apple",
            Arc::new(Never),
            crate::ratelimit::RatelimitConfig::default(),
            Duration::from_secs(3600),
            crate::metrics::ModuleMetrics::detached(),
        )
    }

    fn registration(account: &str, voip: Option<&str>) -> Registration {
        Registration {
            key: crate::store::RegistrationKey {
                service: "snikket:apns:1".into(),
                device: account.into(),
                channel: "ab".repeat(32),
            },
            account: account.into(),
            domain: "example.org".into(),
            token: "ab".repeat(32),
            second_token: voip.map(str::to_owned),
            node: "n0de".into(),
            secret: String::new(),
            last_used: std::time::SystemTime::now(),
        }
    }

    /// A call carrying the largest ciphertext `max-payload-size` allows.
    fn full_size_call() -> PushRequest {
        use base64::engine::general_purpose::STANDARD;
        use base64::Engine;
        let mut call = parts(
            &STANDARD.encode(vec![7u8; MAX_PAYLOAD_SIZE + GCM_TAG_BYTES]),
            Some("aXYxMjM0NTY3ODkw"),
        );
        if let Some(encrypted) = call.encrypted.as_mut() {
            encrypted.kind = Some("voip".into());
        }
        PushRequest {
            tigase: Some(Box::new(call)),
            ..PushRequest::default()
        }
    }

    #[test]
    fn a_full_size_call_from_a_long_account_goes_to_pushkit_with_its_details() {
        let account = format!("{}@example.org", "r".repeat(1000));
        let to_voip = registration(&account, Some(&"cd".repeat(32)));
        let built = notification(&module(), &to_voip, full_size_call());
        let planned = built.notification.planned();
        assert_eq!(
            planned,
            SentTo::SecondToken,
            "{:?}",
            built.notification.kind
        );
        assert_eq!(built.notification.kind, Some(PushKind::Voip));
        assert!(built.notification.encrypted.is_some());
        // Without a VoIP token the call is an alert, sized for one: a plain alert here.
        let no_voip = registration(&account, None);
        let built = notification(&module(), &no_voip, full_size_call());
        assert_eq!(built.notification.planned(), SentTo::Token);
        assert_eq!(built.notification.kind, Some(PushKind::Alert));
        assert_eq!(built.notification.encrypted, None);
        assert_eq!(built.notification.voip_token, None);
    }

    #[test]
    fn a_nickname_goes_with_plain_content_only() {
        let mut push = PushRequest::default();
        push.summary.last_message_body = Some("hi".into());
        let mut notification = PushNotification::default();
        assert!(plain(&mut notification, &push, Some(" Juliet\n".into())));
        assert!(notification
            .extra
            .contains(&("nickname".to_owned(), "Juliet".to_owned())));
        let mut silent = PushNotification::default();
        let nothing = PushRequest::default();
        assert!(!plain(&mut silent, &nothing, Some("Juliet".into())));
        assert!(silent.extra.is_empty());
    }

    #[test]
    fn xml_whitespace_around_base64_is_trimmed_and_the_rest_kept() {
        let usable = usable(
            parts("\n  QUJDREVG\t\n", Some(" aXYxMjM0NTY3ODkw ")),
            "a@b",
            APNS_MAX_PAYLOAD,
        );
        let usable = usable.expect("usable");
        assert_eq!(usable.data, "QUJDREVG");
        assert_eq!(
            usable.params,
            [("iv".to_owned(), "aXYxMjM0NTY3ODkw".to_owned())]
        );
    }

    #[test]
    fn whitespace_inside_base64_or_a_missing_iv_makes_it_unusable() {
        assert_eq!(
            usable(parts("QUJD REVG", Some("aXYx")), "a@b", APNS_MAX_PAYLOAD),
            None
        );
        assert_eq!(
            usable(parts("QUJD!EVG", Some("aXYx")), "a@b", APNS_MAX_PAYLOAD),
            None
        );
        assert_eq!(
            usable(parts("QUJDREVG", None), "a@b", APNS_MAX_PAYLOAD),
            None
        );
        assert_eq!(
            usable(parts("QUJDREVG", Some("")), "a@b", APNS_MAX_PAYLOAD),
            None
        );
        assert_eq!(
            usable(parts("", Some("aXYx")), "a@b", APNS_MAX_PAYLOAD),
            None
        );
    }

    #[test]
    fn an_iv_longer_than_any_aes_gcm_iv_is_unusable() {
        // The request keeps 256 bytes of an attribute: a longer iv arrives cut, as valid base64.
        let cut = "A".repeat(256);
        assert_eq!(
            usable(parts("QUJDREVG", Some(&cut)), "a@b", APNS_MAX_PAYLOAD),
            None
        );
        let largest = STANDARD_IV.repeat(MAX_IV_BYTES / 3);
        assert!(usable(parts("QUJDREVG", Some(&largest)), "a@b", APNS_MAX_PAYLOAD).is_some());
    }

    /// Three bytes of iv in base64.
    const STANDARD_IV: &str = "aXYx";

    #[test]
    fn a_ciphertext_over_max_payload_size_is_unusable() {
        use base64::engine::general_purpose::STANDARD;
        use base64::Engine;
        let fits = STANDARD.encode(vec![7u8; MAX_PAYLOAD_SIZE + GCM_TAG_BYTES]);
        let over = STANDARD.encode(vec![7u8; MAX_PAYLOAD_SIZE + GCM_TAG_BYTES + 1]);
        assert!(usable(parts(&fits, Some("aXYx")), "a@b", APNS_MAX_PAYLOAD).is_some());
        assert_eq!(
            usable(parts(&over, Some("aXYx")), "a@b", APNS_MAX_PAYLOAD),
            None
        );
        // Within max-payload-size, but not within Apple's 4 KB next to a long account.
        let account = "a".repeat(600);
        assert_eq!(
            usable(parts(&fits, Some("aXYx")), &account, APNS_MAX_PAYLOAD),
            None
        );
    }
}
