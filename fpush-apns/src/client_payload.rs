//! The payload of a push whose client protocol says per push what the app needs (the Tigase
//! protocol of the Siskin-family apps): the kind of push (alert with `mutable-content`, so the
//! app's notification extension can decrypt or format it; background with
//! `content-available`; a PushKit call), the account, an encrypted payload and its parameters
//! copied unchanged, and extra keys (strings and JSON integers). Nothing here knows the
//! protocol: the front door said it all in the [`PushNotification`].

use bytes::Bytes;
use fpush_traits::{PushKind, PushNotification};
use serde_json::{json, Map, Value};

use crate::payload::{PayloadBuilder, MAX_VOIP_PAYLOAD};

/// Whether `push` is rendered here: a push that names its account (a registering client
/// protocol's, which also says the kind, the encrypted part and the extra keys).
pub fn applies(push: &PushNotification) -> bool {
    push.account.is_some()
}

/// The payload of `push` within `limit` (Apple's, for this kind of push); when it would exceed
/// it, the encrypted part and the extra keys are left out (a plain alert is better than a
/// refused push). The kind stays: a background push the app asked for to update itself
/// silently (e.g. "messages read elsewhere": clear the notifications) must not light the screen
/// up with a "new message" alert. When even that is over `limit`, the caller must not send it.
pub fn build(builder: &PayloadBuilder, push: &PushNotification, limit: usize) -> Bytes {
    let full = render(builder, push, true);
    if full.len() <= limit {
        return Bytes::from(full);
    }
    Bytes::from(render(builder, push, false))
}

/// A PushKit call's payload with all it carries, or `None` when that cannot fit PushKit's
/// 5 KB. Such a call must go to the device token as an alert ([`build`] within Apple's 4 KB),
/// never as a PushKit push without its details: the app could neither show the caller nor
/// answer, and iOS stops delivering PushKit pushes to an app that reports no call for one.
pub fn call(builder: &PayloadBuilder, push: &PushNotification) -> Option<Bytes> {
    let full = render(builder, push, true);
    (full.len() <= MAX_VOIP_PAYLOAD).then(|| Bytes::from(full))
}

fn render(builder: &PayloadBuilder, push: &PushNotification, whole: bool) -> Vec<u8> {
    let (title, body, additional) = builder.parts();
    let mut root = Map::with_capacity(additional.len() + push.extra.len() + 4);
    let aps = match push.kind {
        Some(PushKind::Background) => json!({"content-available": 1}),
        // A call carries the alert too: PushKit ignores it, and a module that cannot send
        // PushKit pushes sends the call as this alert.
        _ => json!({
            "alert": {"title": title, "body": body},
            "mutable-content": 1,
            "sound": "default",
        }),
    };
    root.insert("aps".into(), aps);
    for (key, value) in additional {
        root.insert(key.clone(), value.clone());
    }
    if let Some(account) = &push.account {
        root.insert("account".into(), Value::String(account.clone()));
    }
    if whole {
        if let Some(encrypted) = &push.encrypted {
            root.insert("encrypted".into(), Value::String(encrypted.data.clone()));
            for (key, value) in encrypted.params.iter().filter(|(key, _)| key != "aps") {
                root.insert(key.clone(), Value::String(value.clone()));
            }
        }
        for (key, value) in push.extra.iter().filter(|(key, _)| key != "aps") {
            root.insert(key.clone(), Value::String(value.clone()));
        }
        for (key, value) in push.extra_numbers.iter().filter(|(key, _)| key != "aps") {
            root.insert(key.clone(), Value::from(*value));
        }
    }
    // Serialising a map of strings and JSON values cannot fail.
    serde_json::to_vec(&Value::Object(root)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use fpush_traits::EncryptedPayload;

    use super::*;
    use crate::config::ApnsConfig;
    use crate::payload::{MAX_PAYLOAD, MAX_VOIP_PAYLOAD};

    fn builder() -> PayloadBuilder {
        builder_with(r#"{"v": 2}"#)
    }

    fn builder_with(additional: &str) -> PayloadBuilder {
        let cfg: ApnsConfig = serde_json::from_str(&format!(
            r#"{{"keyFilePath": "k", "keyId": "K", "teamId": "T", "topic": "t",
                "additionalData": {additional}}}"#
        ))
        .unwrap();
        PayloadBuilder::new(&cfg).unwrap()
    }

    fn parse(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    fn push(kind: PushKind) -> PushNotification {
        PushNotification {
            kind: Some(kind),
            account: Some("juliet@capulet.example".into()),
            ..PushNotification::new("t", "ios")
        }
    }

    #[test]
    fn an_encrypted_alert_carries_account_ciphertext_and_iv_with_mutable_content() {
        let mut alert = push(PushKind::Alert);
        alert.encrypted = Some(EncryptedPayload {
            data: "c2VjcmV0".into(),
            params: vec![("iv".into(), "aXYx".into())],
        });
        let v = parse(&build(&builder(), &alert, MAX_PAYLOAD));
        assert_eq!(v["aps"]["mutable-content"], 1);
        assert_eq!(v["aps"]["alert"]["title"], "New Message");
        assert_eq!(v["account"], "juliet@capulet.example");
        assert_eq!(v["encrypted"], "c2VjcmV0");
        assert_eq!(v["iv"], "aXYx");
        assert_eq!(v["v"], 2);
    }

    #[test]
    fn plain_keys_keep_their_types_and_a_background_push_is_content_available() {
        let mut plain = push(PushKind::Alert);
        plain.extra = vec![("sender".into(), "romeo@montague.example".into())];
        plain.extra_numbers = vec![("unread-messages".into(), 3)];
        let v = parse(&build(&builder(), &plain, MAX_PAYLOAD));
        assert_eq!(v["sender"], "romeo@montague.example");
        assert_eq!(v["unread-messages"], json!(3));
        let v = parse(&build(&builder(), &push(PushKind::Background), MAX_PAYLOAD));
        assert_eq!(v["aps"], json!({"content-available": 1}));
        assert_eq!(v["account"], "juliet@capulet.example");
    }

    #[test]
    fn a_payload_over_apples_limit_becomes_a_plain_alert() {
        let mut large = push(PushKind::Voip);
        large.encrypted = Some(EncryptedPayload {
            data: "A".repeat(MAX_VOIP_PAYLOAD),
            params: vec![("iv".into(), "aXYx".into())],
        });
        let bytes = build(&builder(), &large, MAX_VOIP_PAYLOAD);
        assert!(bytes.len() <= MAX_VOIP_PAYLOAD);
        let v = parse(&bytes);
        assert!(v.get("encrypted").is_none() && v.get("iv").is_none());
        assert_eq!(v["aps"]["mutable-content"], 1);
        assert_eq!(v["account"], "juliet@capulet.example");
    }

    #[test]
    fn a_call_fits_the_voip_limit_with_its_details() {
        let mut call = push(PushKind::Voip);
        call.encrypted = Some(EncryptedPayload {
            data: "A".repeat(4200),
            params: vec![("iv".into(), "aXYx".into())],
        });
        let bytes = build(&builder(), &call, MAX_VOIP_PAYLOAD);
        assert!(bytes.len() <= MAX_VOIP_PAYLOAD, "{}", bytes.len());
        assert_eq!(
            parse(&bytes)["encrypted"].as_str().map(str::len),
            Some(4200)
        );
    }

    #[test]
    fn a_background_push_that_does_not_fit_stays_a_background_push() {
        // A long account next to a large `additionalData`: the unread count pushes it over.
        let account = format!("{}@capulet.example", "j".repeat(1000));
        let mut silent = push(PushKind::Background);
        silent.account = Some(account.clone());
        silent.extra_numbers = vec![("unread-messages".into(), 0)];
        let fill = |pad: usize| format!(r#"{{"pad": "{}"}}"#, "p".repeat(pad));
        // The largest filler with which the push fits only without its extra keys.
        let pad = (0..MAX_PAYLOAD)
            .take_while(|&pad| {
                render(&builder_with(&fill(pad)), &silent, false).len() <= MAX_PAYLOAD
            })
            .last()
            .unwrap();
        let b = builder_with(&fill(pad));
        assert!(render(&b, &silent, true).len() > MAX_PAYLOAD);
        let bytes = build(&b, &silent, MAX_PAYLOAD);
        assert!(bytes.len() <= MAX_PAYLOAD, "{}", bytes.len());
        let v = parse(&bytes);
        assert_eq!(v["aps"], json!({"content-available": 1}));
        assert_eq!(v["account"], account.as_str());
    }

    #[test]
    fn a_call_whose_details_cannot_fit_pushkit_is_no_pushkit_payload() {
        let mut voip = push(PushKind::Voip);
        voip.encrypted = Some(EncryptedPayload {
            data: "A".repeat(4200),
            params: vec![("iv".into(), "aXYx".into())],
        });
        let fits = call(&builder(), &voip).expect("a call that fits PushKit");
        assert_eq!(parse(&fits)["encrypted"].as_str().map(str::len), Some(4200));
        if let Some(encrypted) = voip.encrypted.as_mut() {
            encrypted.data = "A".repeat(MAX_VOIP_PAYLOAD);
        }
        assert_eq!(call(&builder(), &voip), None);
    }

    #[test]
    fn a_plain_push_is_not_a_client_payload() {
        assert!(!applies(&PushNotification::new("t", "ios")));
        let mut voip = PushNotification::new("t", "ios");
        voip.kind = Some(PushKind::Voip);
        assert!(!applies(&voip));
        assert!(applies(&push(PushKind::Alert)));
    }
}
