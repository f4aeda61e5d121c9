//! The request Apple gets for one push: `POST /3/device/<token>` with the module's fixed headers
//! (prepared once), a fresh `apns-expiration` and the provider token when there is one.

use std::sync::Mutex;
use std::time::Duration;

use fpush_traits::bytes::every_byte;
use fpush_traits::{Priority, PushError, PushKind, PushNotification};
use http::header::{HeaderName, AUTHORIZATION};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Uri};

use crate::clock::unix_now;
use crate::config::{ApnsConfig, ApnsPushType};

/// Apple's limit on `apns-collapse-id`.
const MAX_COLLAPSE_ID: usize = 64;
/// Device tokens are 64 hex digits today; leave room, but keep them sane for a URL path.
const MAX_TOKEN_LEN: usize = 200;
/// Where a push for one device token goes; the token follows.
const DEVICE_PATH: &str = "/3/device/";
const APNS_TOPIC: HeaderName = HeaderName::from_static("apns-topic");
const APNS_PUSH_TYPE: HeaderName = HeaderName::from_static("apns-push-type");
const APNS_PRIORITY: HeaderName = HeaderName::from_static("apns-priority");
const APNS_EXPIRATION: HeaderName = HeaderName::from_static("apns-expiration");
const APNS_COLLAPSE_ID: HeaderName = HeaderName::from_static("apns-collapse-id");

/// How long Apple may hold a call for a phone it cannot reach: a caller rings for under a
/// minute, and a call delivered later (the module's `expiration` is weeks by default) would
/// ring for one long over.
const CALL_EXPIRATION: Duration = Duration::from_secs(60);

/// What one push changes of the module's fixed headers (push2 says it per push).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PerPush {
    /// `apns-priority` for an alert push: high → 10, normal or low → 5.
    pub priority: Option<u8>,
    /// A PushKit call: to the VoIP token, topic `<topic>.voip`, push type `voip`, priority 10.
    pub voip: bool,
    /// A silent push: push type `background`, priority 5.
    pub background: bool,
    /// The payload is an alert whatever the module's own push type (a client protocol's alert,
    /// a call sent as one): push type `alert`, the push's priority (10 unless said).
    pub alert: bool,
    /// A call, over PushKit or as an alert: Apple keeps it a minute at most, since a call
    /// shown later is long over.
    pub call: bool,
}

impl PerPush {
    /// The token the push goes to and what it changes. A VoIP push without a VoIP token goes
    /// to the device token as an alert.
    pub fn of(push: &PushNotification) -> (&str, PerPush) {
        if let (Some(PushKind::Voip), Some(voip)) = (push.kind, &push.voip_token) {
            let per_push = PerPush {
                voip: true,
                call: true,
                ..PerPush::default()
            };
            return (voip, per_push);
        }
        let priority = push.priority.map(|priority| match priority {
            Priority::High => 10,
            Priority::Normal | Priority::Low => 5,
        });
        let call = push.kind == Some(PushKind::Voip);
        let per_push = PerPush {
            priority,
            background: push.kind == Some(PushKind::Background),
            alert: call,
            call,
            ..PerPush::default()
        };
        (&push.token, per_push)
    }
}

/// What every request of one module shares.
pub(crate) struct RequestTemplate {
    /// The headers every request carries, built once: a request starts from a clone
    /// (reference-counted values) instead of hashing each name in again.
    headers: HeaderMap,
    /// `apns-topic` of PushKit pushes: `<topic>.voip`.
    voip_topic: HeaderValue,
    /// Whether the module sends alerts (a per-push priority applies only to them: Apple
    /// refuses 10 for background pushes).
    alerts: bool,
    expiration: Duration,
    /// The last `apns-expiration` value and the unix second it was computed for: thousands
    /// of pushes a second share one.
    expiration_header: Mutex<(u64, HeaderValue)>,
}

impl RequestTemplate {
    /// Checks the header settings; the error says which one is wrong.
    pub fn new(cfg: &ApnsConfig) -> Result<Self, String> {
        let header = |key: &str, value: &str| {
            HeaderValue::from_str(value)
                .map_err(|_| format!("{key} {value:?} is not a valid header value"))
        };
        if cfg.topic.trim().is_empty() {
            return Err("topic (the app's bundle id) is empty".into());
        }
        let mut headers = HeaderMap::with_capacity(8);
        // First, with a value each request replaces in place (see `head`).
        headers.insert(APNS_EXPIRATION, HeaderValue::from_static("0"));
        headers.insert(APNS_TOPIC, header("topic", &cfg.topic)?);
        headers.insert(
            APNS_PUSH_TYPE,
            HeaderValue::from_static(cfg.push_type.header_value()),
        );
        headers.insert(APNS_PRIORITY, HeaderValue::from(u16::from(priority(cfg)?)));
        // No `content-type`: Apple reads every body as JSON and lists no such request header,
        // so it would only cost HPACK work on every push.
        if let Some(id) = &cfg.collapse_id {
            if id.len() > MAX_COLLAPSE_ID {
                return Err(format!("collapseId is over {MAX_COLLAPSE_ID} bytes"));
            }
            headers.insert(APNS_COLLAPSE_ID, header("collapseId", id)?);
        }
        Ok(Self {
            headers,
            voip_topic: header("topic", &cfg.voip_topic())?,
            alerts: cfg.push_type == ApnsPushType::Alert,
            expiration: cfg.expiration,
            expiration_header: Mutex::new((0, HeaderValue::from_static("0"))),
        })
    }

    /// The head of a request to `uri` (made from [`device_path`]): the module's headers with
    /// what `per_push` changes, a fresh `apns-expiration` and the provider token if any.
    pub fn head(
        &self,
        uri: Uri,
        per_push: PerPush,
        bearer: Option<&HeaderValue>,
    ) -> http::Request<()> {
        let mut request = http::Request::new(());
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        *headers = self.headers.clone();
        let expiration = match per_push.call {
            true => self.call_expiration_value(),
            false => self.expiration_value(),
        };
        // Replaced in place: an insertion would hash the name and grow the copied map.
        if let Some((_, value)) = headers
            .iter_mut()
            .find(|(name, _)| **name == APNS_EXPIRATION)
        {
            *value = expiration;
        }
        if per_push.voip {
            headers.insert(APNS_TOPIC, self.voip_topic.clone());
            headers.insert(APNS_PUSH_TYPE, HeaderValue::from_static("voip"));
            headers.insert(APNS_PRIORITY, HeaderValue::from_static("10"));
        } else if per_push.background {
            headers.insert(APNS_PUSH_TYPE, HeaderValue::from_static("background"));
            headers.insert(APNS_PRIORITY, HeaderValue::from_static("5"));
        } else if per_push.alert && !self.alerts {
            headers.insert(APNS_PUSH_TYPE, HeaderValue::from_static("alert"));
            let priority = per_push.priority.unwrap_or(10);
            headers.insert(APNS_PRIORITY, HeaderValue::from(u16::from(priority)));
        } else if let Some(priority) = per_push.priority.filter(|_| self.alerts) {
            headers.insert(APNS_PRIORITY, HeaderValue::from(u16::from(priority)));
        }
        if let Some(bearer) = bearer {
            headers.insert(AUTHORIZATION, bearer.clone());
        }
        request
    }

    /// `apns-expiration`: unix seconds after which Apple drops an undelivered push (`0`: try
    /// once). Formatted once per second, not once per push.
    fn expiration_value(&self) -> HeaderValue {
        if self.expiration.is_zero() {
            return HeaderValue::from_static("0");
        }
        let expiration = unix_now().saturating_add(self.expiration.as_secs());
        match self.expiration_header.lock() {
            Ok(mut cached) => {
                if cached.0 != expiration {
                    *cached = (expiration, HeaderValue::from(expiration));
                }
                cached.1.clone()
            }
            Err(_) => HeaderValue::from(expiration),
        }
    }

    /// `apns-expiration` of a call: the module's, but at most [`CALL_EXPIRATION`] away.
    fn call_expiration_value(&self) -> HeaderValue {
        match self.expiration.min(CALL_EXPIRATION) {
            zero if zero.is_zero() => HeaderValue::from_static("0"),
            wait => HeaderValue::from(unix_now().saturating_add(wait.as_secs())),
        }
    }
}

/// The path of a push for `token`: `/3/device/<token>`; `plausible_token` must have passed.
pub(crate) fn device_path(token: &str) -> Result<PathAndQuery, PushError> {
    let mut path = String::with_capacity(DEVICE_PATH.len() + token.len());
    path.push_str(DEVICE_PATH);
    path.push_str(token);
    // Takes the string without copying it; `plausible_token` already kept the path valid.
    PathAndQuery::try_from(path).map_err(|e| cannot_build(&e))
}

/// A request that could not be made (never for a token `plausible_token` let through).
pub(crate) fn cannot_build(e: &dyn std::fmt::Display) -> PushError {
    PushError::Transient(format!("cannot build the request: {e}"))
}

/// `apns-priority`: 10 for alerts, 5 for background pushes unless set; Apple refuses 10 for
/// background pushes.
fn priority(cfg: &ApnsConfig) -> Result<u8, String> {
    match (cfg.priority, cfg.push_type) {
        (None, ApnsPushType::Alert) => Ok(10),
        (None, ApnsPushType::Background) => Ok(5),
        (Some(10), ApnsPushType::Background) => {
            Err("background pushes must use priority 5 or 1".into())
        }
        (Some(p @ (1 | 5 | 10)), _) => Ok(p),
        (Some(p), _) => Err(format!("priority {p} is not 10, 5 or 1")),
    }
}

/// Tokens go into the URL path: anything but letters, digits, `-`, `_` and `.` cannot be a
/// device token, so Apple is not asked. Nor is a token of dots only: as a path segment, `.` or
/// `..` names another path (`/3/device/..` is `/3/`), whose refusal would read as our mistake.
pub(crate) fn plausible_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= MAX_TOKEN_LEN
        && all_path_safe(token.as_bytes())
        && !token.bytes().all(|b| b == b'.')
}

/// Whether every byte is a letter, a digit, `-`, `_` or `.` (every push's token passes here).
fn all_path_safe(bytes: &[u8]) -> bool {
    every_byte(bytes, |b| {
        let digit = b.wrapping_sub(b'0') < 10;
        let letter = (b | 0x20).wrapping_sub(b'a') < 26;
        digit | letter | (b == b'-') | (b == b'_') | (b == b'.')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_safe_bytes_are_told_apart_byte_by_byte() {
        for b in 0..=u8::MAX {
            let safe = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
            assert_eq!(all_path_safe(&[b'a', b]), safe, "{b}");
        }
    }

    #[test]
    fn tokens_are_checked_before_they_reach_a_url() {
        assert!(plausible_token("0123abcdef"));
        assert!(plausible_token("dead-token_1.x"));
        assert!(!plausible_token(""));
        assert!(!plausible_token("a/b"));
        assert!(!plausible_token("a?b"));
        assert!(!plausible_token(&"a".repeat(MAX_TOKEN_LEN + 1)));
    }

    #[test]
    fn a_token_of_dots_only_never_makes_a_path_segment() {
        for dots in [".", "..", "..."] {
            assert!(!plausible_token(dots), "{dots}");
        }
        assert!(plausible_token("a..b"));
    }

    fn template() -> RequestTemplate {
        let cfg: ApnsConfig = serde_json::from_str(
            r#"{"keyFilePath": "k", "keyId": "K", "teamId": "T", "topic": "org.example.app"}"#,
        )
        .unwrap();
        RequestTemplate::new(&cfg).unwrap()
    }

    fn headers_for(push: &PushNotification) -> (String, HeaderMap) {
        let (token, per_push) = PerPush::of(push);
        let path = Uri::from(device_path(token).unwrap());
        let request = template().head(path, per_push, None);
        (request.uri().path().to_owned(), request.headers().clone())
    }

    #[test]
    fn a_voip_push_goes_to_the_voip_token_and_topic_at_priority_10() {
        let mut push = PushNotification::new("devicetoken", "ios");
        push.kind = Some(PushKind::Voip);
        push.priority = Some(Priority::Low);
        push.voip_token = Some("voiptoken".into());
        let (path, headers) = headers_for(&push);
        assert_eq!(path, "/3/device/voiptoken");
        assert_eq!(headers[APNS_TOPIC], "org.example.app.voip");
        assert_eq!(headers[APNS_PUSH_TYPE], "voip");
        assert_eq!(headers[APNS_PRIORITY], "10");
    }

    #[test]
    fn a_call_expires_within_a_minute_an_alert_after_the_module_s_expiration() {
        let expires_in = |headers: &HeaderMap| {
            let at: u64 = headers[APNS_EXPIRATION].to_str().unwrap().parse().unwrap();
            at.saturating_sub(unix_now())
        };
        let mut push = PushNotification::new("devicetoken", "ios");
        let alert = expires_in(&headers_for(&push).1);
        assert!(alert > 27 * 24 * 3600, "four weeks by default: {alert}");
        push.kind = Some(PushKind::Voip);
        push.voip_token = Some("voiptoken".into());
        let call = expires_in(&headers_for(&push).1);
        assert!((59..=60).contains(&call), "{call}");
    }

    #[test]
    fn a_voip_push_without_voip_token_is_an_alert_and_priorities_map_to_10_and_5() {
        let mut push = PushNotification::new("devicetoken", "ios");
        push.kind = Some(PushKind::Voip);
        push.priority = Some(Priority::Normal);
        let (path, headers) = headers_for(&push);
        assert_eq!(path, "/3/device/devicetoken");
        assert_eq!(headers[APNS_TOPIC], "org.example.app");
        assert_eq!(headers[APNS_PUSH_TYPE], "alert");
        assert_eq!(headers[APNS_PRIORITY], "5");
        push.priority = Some(Priority::High);
        assert_eq!(headers_for(&push).1[APNS_PRIORITY], "10");
        push.priority = Some(Priority::Low);
        assert_eq!(headers_for(&push).1[APNS_PRIORITY], "5");
    }
}
