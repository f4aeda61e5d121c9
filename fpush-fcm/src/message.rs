//! The FCM v1 `messages:send` body for one push.
//!
//! Always a *data* message with `android.priority = "high"`: normal priority is held back by
//! Doze until the device wakes on its own, which defeats a chat push. The app decides what to
//! show; we only carry the operator's static `additionalData` and, if enabled, the summary.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use fpush_traits::PushNotification;
use serde::Serialize;

/// Data keys the summary fields are copied to (`dataFromSummary`), named as in XEP-0357.
pub(crate) const SUMMARY_KEYS: [&str; 3] =
    ["message-count", "last-message-sender", "last-message-body"];

/// FCM's limit on a message's `data`, keys and values counted: a larger message is refused.
pub(crate) const MAX_DATA_BYTES: usize = 4096;

/// Keys FCM reserves inside `data` (a message carrying one is refused for every token).
pub(crate) fn is_reserved_data_key(key: &str) -> bool {
    key == "from"
        || key == "message_type"
        || key == "notification"
        || key.starts_with("google")
        || key.starts_with("gcm")
}

/// What every message of a module shares, prepared once.
#[derive(Debug, Clone)]
pub(crate) struct MessageTemplate {
    /// `ttl` as FCM's Duration JSON (`"2419200s"`).
    ttl: String,
    collapse_key: Option<String>,
    additional_data: BTreeMap<String, String>,
    data_from_summary: bool,
}

#[derive(Serialize)]
struct SendRequest<'a> {
    message: Message<'a>,
}

#[derive(Serialize)]
struct Message<'a> {
    token: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    data: BTreeMap<&'a str, &'a str>,
    android: Android<'a>,
}

#[derive(Serialize)]
struct Android<'a> {
    priority: &'static str,
    ttl: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    collapse_key: Option<&'a str>,
}

impl MessageTemplate {
    pub fn new(
        ttl: Duration,
        collapse_key: Option<String>,
        additional_data: BTreeMap<String, String>,
        data_from_summary: bool,
    ) -> Self {
        Self {
            ttl: format!("{}s", ttl.as_secs()),
            collapse_key,
            additional_data,
            data_from_summary,
        }
    }

    /// The JSON body for `notification`. Summary fields, when copied, replace `additionalData`
    /// entries of the same name, and `extra` keys replace both: the app checks them. Only the
    /// summary values are cut to fit [`MAX_DATA_BYTES`]; when the rest is still over it, the
    /// error is the data's size: FCM would refuse the message for any token.
    pub fn body(&self, notification: &PushNotification) -> Result<Bytes, usize> {
        let mut data: BTreeMap<&str, &str> = self
            .additional_data
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if self.data_from_summary {
            let summary = &notification.summary;
            let fields = [
                &summary.message_count,
                &summary.last_message_sender,
                &summary.last_message_body,
            ];
            for (key, value) in SUMMARY_KEYS.into_iter().zip(fields) {
                if let Some(value) = value {
                    data.insert(key, value);
                }
            }
        }
        for (key, value) in &notification.extra {
            if !is_reserved_data_key(key) {
                data.insert(key, value);
            }
        }
        if self.data_from_summary {
            fit_summary(&mut data);
        }
        let size = data_bytes(data.iter().map(|(key, value)| (*key, *value)));
        if size > MAX_DATA_BYTES {
            return Err(size);
        }
        let request = SendRequest {
            message: Message {
                token: &notification.token,
                data,
                android: Android {
                    priority: "high",
                    ttl: &self.ttl,
                    collapse_key: self.collapse_key.as_deref(),
                },
            },
        };
        // Serialising string maps and strings into a Vec cannot fail.
        Ok(Bytes::from(
            serde_json::to_vec(&request).unwrap_or_default(),
        ))
    }
}

/// The size FCM counts against [`MAX_DATA_BYTES`]: every key and value.
pub(crate) fn data_bytes<'a>(data: impl IntoIterator<Item = (&'a str, &'a str)>) -> usize {
    data.into_iter()
        .map(|(key, value)| key.len() + value.len())
        .sum()
}

/// Cuts the summary values (the body, then the sender, then the count) until `data` fits
/// FCM's limit: a long message is better delivered shortened than refused as too big, which
/// would read as our misconfiguration.
fn fit_summary(data: &mut BTreeMap<&str, &str>) {
    let size = data_bytes(data.iter().map(|(key, value)| (*key, *value)));
    let mut excess = size.saturating_sub(MAX_DATA_BYTES);
    for key in SUMMARY_KEYS.into_iter().rev() {
        let Some(value) = data.get_mut(key).filter(|_| excess > 0) else {
            continue;
        };
        if value.len() < excess {
            // Cutting the value is not enough: leave the key out too.
            excess = excess.saturating_sub(key.len() + value.len());
            data.remove(key);
            continue;
        }
        // Never inside what a reader sees as one symbol (an accented letter, a flag).
        let keep = fpush_traits::text::cut_point(value, value.len() - excess);
        excess = 0;
        *value = &value[..keep];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fpush_traits::PushSummary;
    use serde_json::{json, Value};

    fn push(token: &str) -> PushNotification {
        PushNotification {
            token: token.to_string(),
            module_id: "android".to_string(),
            summary: PushSummary {
                message_count: Some("1".into()),
                last_message_sender: Some("juliet@capulet.example".into()),
                last_message_body: Some("Wherefore art thou?".into()),
            },
            options: vec![("secret".into(), "s3cr3t".into())],
            ..PushNotification::default()
        }
    }

    fn parse(body: Bytes) -> Value {
        serde_json::from_slice(&body).unwrap()
    }

    #[test]
    fn minimal_message_is_a_high_priority_data_message_with_ttl() {
        let template =
            MessageTemplate::new(Duration::from_secs(2_419_200), None, BTreeMap::new(), false);
        let body = parse(template.body(&push("tok\"en")).unwrap());
        assert_eq!(
            body,
            json!({"message": {"token": "tok\"en", "android": {"priority": "high", "ttl": "2419200s"}}})
        );
    }

    #[test]
    fn collapse_key_and_additional_data_are_carried() {
        let extra = BTreeMap::from([("kind".to_string(), "xmpp".to_string())]);
        let template =
            MessageTemplate::new(Duration::from_secs(60), Some("chat".into()), extra, false);
        let body = parse(template.body(&push("t")).unwrap());
        assert_eq!(body["message"]["data"], json!({"kind": "xmpp"}));
        assert_eq!(body["message"]["android"]["collapse_key"], "chat");
        assert_eq!(body["message"]["android"]["ttl"], "60s");
    }

    #[test]
    fn summary_fields_become_data_only_when_asked() {
        let extra = BTreeMap::from([("message-count".to_string(), "static".to_string())]);
        let off = MessageTemplate::new(Duration::from_secs(60), None, extra.clone(), false);
        assert_eq!(
            parse(off.body(&push("t")).unwrap())["message"]["data"],
            json!({"message-count": "static"})
        );

        let on = MessageTemplate::new(Duration::from_secs(60), None, extra, true);
        assert_eq!(
            parse(on.body(&push("t")).unwrap())["message"]["data"],
            json!({
                "message-count": "1",
                "last-message-sender": "juliet@capulet.example",
                "last-message-body": "Wherefore art thou?"
            })
        );
    }

    #[test]
    fn absent_summary_fields_are_left_out() {
        let on = MessageTemplate::new(Duration::from_secs(60), None, BTreeMap::new(), true);
        let mut notification = push("t");
        notification.summary = PushSummary {
            message_count: None,
            last_message_sender: Some(String::new()),
            last_message_body: None,
        };
        assert_eq!(
            parse(on.body(&notification).unwrap())["message"]["data"],
            json!({"last-message-sender": ""})
        );
    }

    #[test]
    fn extra_keys_go_into_data_over_configured_ones() {
        let configured = BTreeMap::from([("account".to_string(), "static".to_string())]);
        let template = MessageTemplate::new(Duration::from_secs(60), None, configured, false);
        let mut notification = push("t");
        notification.extra = vec![
            ("account".into(), "d3v1ce".into()),
            ("channel".into(), "c4ann3l".into()),
            ("google.x".into(), "refused".into()),
        ];
        let body = parse(template.body(&notification).unwrap());
        assert_eq!(
            body["message"]["data"],
            json!({"account": "d3v1ce", "channel": "c4ann3l"})
        );
        assert_eq!(body["message"]["android"]["priority"], "high");
    }

    fn data_bytes(body: &Value) -> usize {
        let data = body["message"]["data"].as_object().unwrap();
        data.iter()
            .map(|(k, v)| k.len() + v.as_str().unwrap().len())
            .sum()
    }

    #[test]
    fn summary_values_are_cut_to_fit_fcms_data_limit_body_first() {
        let configured = BTreeMap::from([("static".to_string(), "s".repeat(1500))]);
        let template = MessageTemplate::new(Duration::from_secs(60), None, configured, true);
        let mut notification = push("t");
        let long = "é".repeat(512);
        notification.summary = PushSummary {
            message_count: Some("1".repeat(1024)),
            last_message_sender: Some(long.clone()),
            last_message_body: Some(long.clone()),
        };
        let body = parse(template.body(&notification).unwrap());
        assert!(data_bytes(&body) <= MAX_DATA_BYTES, "{}", data_bytes(&body));
        let data = &body["message"]["data"];
        assert_eq!(data["last-message-sender"], long.as_str());
        assert_eq!(data["message-count"], "1".repeat(1024));
        let cut = data["last-message-body"].as_str().unwrap();
        assert!(long.starts_with(cut) && cut.len() < long.len() && !cut.is_empty());
    }

    #[test]
    fn a_cut_body_keeps_its_flags_whole() {
        let configured = BTreeMap::from([("static".to_string(), "s".repeat(3100))]);
        let template = MessageTemplate::new(Duration::from_secs(60), None, configured, true);
        let flag = "\u{1F1E9}\u{1F1EA}";
        for pad in 0..8 {
            let mut notification = push("t");
            let whole = format!("{}{}", "a".repeat(pad), flag.repeat(127));
            notification.summary.last_message_body = Some(whole.clone());
            let body = parse(template.body(&notification).unwrap());
            let cut = body["message"]["data"]["last-message-body"]
                .as_str()
                .unwrap();
            assert!(cut.len() < whole.len(), "{pad}: not cut");
            assert!(
                (cut.len() - pad).is_multiple_of(flag.len()),
                "{pad}: {cut:?}"
            );
        }
    }

    #[test]
    fn summary_keys_are_left_out_when_cutting_their_values_is_not_enough() {
        // 4056 bytes configured; the summary's 91 would make 4147.
        let configured = BTreeMap::from([("static".to_string(), "s".repeat(4050))]);
        let template = MessageTemplate::new(Duration::from_secs(60), None, configured, true);
        let body = parse(template.body(&push("t")).unwrap());
        assert_eq!(data_bytes(&body), MAX_DATA_BYTES);
        let data = &body["message"]["data"];
        assert!(data.get("last-message-body").is_none());
        assert_eq!(data["last-message-sender"], "juliet@");
        assert_eq!(data["message-count"], "1");
    }

    #[test]
    fn reserved_data_keys_are_recognised() {
        for key in [
            "from",
            "message_type",
            "notification",
            "google.sent_time",
            "gcm.n.e",
        ] {
            assert!(is_reserved_data_key(key), "{key}");
        }
        assert!(!is_reserved_data_key("kind"));
    }
}
