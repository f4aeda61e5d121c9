//! One Web Push request (RFC 8030, 8291, 8292) from a push2 notification: the encrypted payload
//! POSTed unchanged with its `Content-Encoding`, `TTL`, `Urgency`, and the VAPID authorization
//! the user's server signed.

use std::time::Duration;

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};
use bytes::Bytes;
use fpush_traits::{EncryptedPayload, Priority, PushError, PushKind, PushNotification, Rejection};

/// The parameter names under which the push2 door passes the VAPID token and key.
pub const PARAM_VAPID_TOKEN: &str = "vapid_t";
pub const PARAM_VAPID_KEY: &str = "vapid_k";

/// Largest payload posted: push services must accept 4096 bytes (RFC 8030, section 7.2).
pub const MAX_PAYLOAD: usize = 4096;

/// How long a push service may keep a call (`<voip/>`: a Jingle `propose` or its `retract`)
/// for a browser it cannot reach: a caller rings for under a minute, and a call delivered
/// later (`push2.ttl` is weeks by default) would show for one long over.
const CALL_TTL: Duration = Duration::from_secs(60);

const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

/// Why a notification cannot be posted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("the notification carries no push2 payload")]
    NotPush2,
    #[error("the encrypted payload is not base64")]
    PayloadEncoding,
    #[error("the encrypted payload is {0} bytes; at most {MAX_PAYLOAD} are posted")]
    PayloadTooLarge(usize),
    #[error("the VAPID key is not base64")]
    KeyEncoding,
    #[error("the request cannot be built: {0}")]
    Http(String),
}

/// A notification that cannot be posted, as what the XMPP server should hear: too large, or
/// wrong as it stands; never a dead target.
pub fn rejected(error: RequestError) -> PushError {
    let reason = match error {
        RequestError::PayloadTooLarge(_) => Rejection::TooLarge,
        _ => Rejection::Invalid,
    };
    let detail = error.to_string();
    PushError::Rejected { reason, detail }
}

/// Standard or URL-safe base64, padded or not.
fn decode(text: &str) -> Option<Vec<u8>> {
    STANDARD_LENIENT
        .decode(text)
        .or_else(|_| URL_SAFE_LENIENT.decode(text))
        .ok()
}

/// The byte length of a payload as this module decodes it, or `None` when it cannot: the
/// push2 door refuses such a payload itself, with the condition for a bad notification.
pub fn payload_len(text: &str) -> Option<usize> {
    decode(text).map(|raw| raw.len())
}

/// The `k` of RFC 8292: the key as base64url without padding (push2 sends standard base64).
pub fn vapid_key(key: &str) -> Result<String, RequestError> {
    let raw = decode(key.trim()).ok_or(RequestError::KeyEncoding)?;
    Ok(URL_SAFE_NO_PAD.encode(raw))
}

/// The POST of `push` to `path`, kept for `ttl`.
pub fn build(
    path: &str,
    push: &PushNotification,
    ttl: Duration,
) -> Result<http::Request<Bytes>, RequestError> {
    let encrypted = push.encrypted.as_ref().ok_or(RequestError::NotPush2)?;
    let body = match encrypted.data.is_empty() {
        true => Vec::new(),
        false => decode(&encrypted.data).ok_or(RequestError::PayloadEncoding)?,
    };
    if body.len() > MAX_PAYLOAD {
        return Err(RequestError::PayloadTooLarge(body.len()));
    }
    let ttl = match push.kind {
        Some(PushKind::Voip) => ttl.min(CALL_TTL),
        _ => ttl,
    };
    let mut request = http::Request::post(path)
        .header("ttl", ttl.as_secs().to_string())
        .header("urgency", urgency(push));
    if !body.is_empty() {
        request = request
            .header("content-encoding", "aes128gcm")
            .header("content-type", "application/octet-stream");
    }
    if let Some(authorization) = authorization(encrypted)? {
        request = request.header("authorization", authorization);
    }
    request
        .body(Bytes::from(body))
        .map_err(|e| RequestError::Http(e.to_string()))
}

/// RFC 8030's `Urgency`: a call is always high; no priority given means normal.
fn urgency(push: &PushNotification) -> &'static str {
    if push.kind == Some(PushKind::Voip) {
        return "high";
    }
    match push.priority {
        Some(Priority::High) => "high",
        Some(Priority::Low) => "low",
        Some(Priority::Normal) | None => "normal",
    }
}

/// `vapid t=JWT, k=KEY` when the notification carries a token.
fn authorization(encrypted: &EncryptedPayload) -> Result<Option<String>, RequestError> {
    let param = |name: &str| {
        encrypted
            .params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    authorization_of(param(PARAM_VAPID_TOKEN), param(PARAM_VAPID_KEY))
}

/// The header of a VAPID token and key; an empty one counts as absent.
fn authorization_of(
    token: Option<&str>,
    key: Option<&str>,
) -> Result<Option<String>, RequestError> {
    let Some(token) = token.filter(|token| !token.is_empty()) else {
        return Ok(None);
    };
    Ok(Some(match key.filter(|key| !key.is_empty()) {
        Some(key) => format!("vapid t={token}, k={}", vapid_key(key)?),
        None => format!("vapid t={token}"),
    }))
}

/// Whether a VAPID token and key make an `Authorization` header this module can send: the
/// push2 door refuses those that do not, as a bad notification, before any module.
pub fn check_vapid(token: Option<&str>, key: Option<&str>) -> Result<(), RequestError> {
    match authorization_of(token, key)? {
        Some(header) => http::HeaderValue::try_from(header)
            .map(drop)
            .map_err(|e| RequestError::Http(e.to_string())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(data: &str, params: &[(&str, &str)]) -> PushNotification {
        PushNotification {
            token: "https://push.example/ep".into(),
            encrypted: Some(EncryptedPayload {
                data: data.into(),
                params: params
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            }),
            priority: Some(Priority::Low),
            ..PushNotification::default()
        }
    }

    #[test]
    fn a_key_with_plus_and_slash_is_re_encoded_as_base64url_without_padding() {
        // 0xfb 0xff 0xbf: "+/+/" in standard base64, "-_-_" in base64url.
        assert_eq!(vapid_key("+/+/").unwrap(), "-_-_");
        assert_eq!(vapid_key("BPk+/w==").unwrap(), "BPk-_w");
        assert!(vapid_key("not base64!").is_err());
    }

    #[test]
    fn the_payload_is_posted_decoded_with_every_header() {
        let push = push(
            "AAEC/w==",
            &[(PARAM_VAPID_TOKEN, "e.y.j"), (PARAM_VAPID_KEY, "+/+/")],
        );
        let request = build("/ep?x=1", &push, Duration::from_secs(2_419_200)).unwrap();
        assert_eq!(request.method(), http::Method::POST);
        assert_eq!(request.uri(), "/ep?x=1");
        assert_eq!(request.body().as_ref(), &[0, 1, 2, 255]);
        let header = |name: &str| request.headers()[name].to_str().unwrap().to_owned();
        assert_eq!(header("content-encoding"), "aes128gcm");
        assert_eq!(header("ttl"), "2419200");
        assert_eq!(header("urgency"), "low");
        assert_eq!(header("authorization"), "vapid t=e.y.j, k=-_-_");
    }

    #[test]
    fn a_call_is_kept_for_a_minute_at_most() {
        // A browser back online days later would show a call long over.
        let four_weeks = Duration::from_secs(2_419_200);
        let ttl = |kind, ttl| {
            let call = PushNotification {
                kind,
                ..push("", &[])
            };
            let request = build("/ep", &call, ttl).unwrap();
            request.headers()["ttl"].to_str().unwrap().to_owned()
        };
        assert_eq!(ttl(Some(PushKind::Voip), four_weeks), "60");
        assert_eq!(ttl(Some(PushKind::Voip), Duration::from_secs(30)), "30");
        assert_eq!(ttl(None, four_weeks), "2419200");
    }

    #[test]
    fn no_payload_and_no_token_mean_an_empty_unauthorised_post() {
        let request = build("/ep", &push("", &[]), Duration::from_secs(60)).unwrap();
        assert!(request.body().is_empty());
        assert!(request.headers().get("content-encoding").is_none());
        assert!(request.headers().get("authorization").is_none());
    }

    #[test]
    fn bad_or_oversized_payloads_and_plain_pushes_are_refused() {
        let ttl = Duration::from_secs(60);
        assert_eq!(
            build("/", &push("!!", &[]), ttl).unwrap_err(),
            RequestError::PayloadEncoding
        );
        let big = URL_SAFE_NO_PAD.encode(vec![0u8; MAX_PAYLOAD + 1]);
        assert!(matches!(
            build("/", &push(&big, &[]), ttl),
            Err(RequestError::PayloadTooLarge(_))
        ));
        let plain = PushNotification::new("https://push.example/ep", "webpush");
        assert_eq!(build("/", &plain, ttl).unwrap_err(), RequestError::NotPush2);
    }

    #[test]
    fn an_unpostable_notification_is_rejected_never_dead() {
        let reason = |error| match rejected(error) {
            PushError::Rejected { reason, .. } => Some(reason),
            _ => None,
        };
        assert_eq!(
            reason(RequestError::PayloadTooLarge(5000)),
            Some(Rejection::TooLarge)
        );
        assert_eq!(reason(RequestError::KeyEncoding), Some(Rejection::Invalid));
        assert_eq!(reason(RequestError::NotPush2), Some(Rejection::Invalid));
    }
}
