//! Apple's answer to one push, turned into what fpush should do about it.
//!
//! Apple answers errors with a status and a JSON body `{"reason": "..."}`; the reason is the
//! precise part, so decisions are made on it, with the status as fallback for reasons Apple may
//! add later.

use std::time::Duration;

use fpush_http::HttpResponse;
use fpush_traits::{DeadTokenReason, Delivered, PushError};
use http::StatusCode;

/// What one answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Delivered(Delivered),
    /// The token is dead, or Apple asked us to slow down: final.
    Final(PushError),
    /// Apple failed before accepting the push (5xx): it may be retried once.
    Retryable(String),
    /// The provider token was refused (`InvalidProviderToken`, `ExpiredProviderToken`): renew
    /// it when allowed and retry once.
    TokenRefused(String),
    /// Our configuration is wrong (certificate, topic, key): logged loudly, answered `wait`.
    Misconfigured(String),
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    reason: Option<String>,
}

/// Apple's `reason`, or an empty string when the body had none.
pub fn reason(resp: &HttpResponse) -> String {
    serde_json::from_slice::<ErrorBody>(&resp.body)
        .ok()
        .and_then(|b| b.reason)
        .unwrap_or_default()
}

pub fn judge(resp: &HttpResponse) -> Verdict {
    if resp.status == StatusCode::OK {
        let provider_id = resp
            .headers
            .get("apns-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        return Verdict::Delivered(Delivered { provider_id });
    }
    let reason = reason(resp);
    let described = || {
        if reason.is_empty() {
            format!("APNS answered {}", resp.status)
        } else {
            format!("APNS answered {} {reason}", resp.status)
        }
    };
    match (resp.status.as_u16(), reason.as_str()) {
        (410, _) | (_, "Unregistered") => {
            Verdict::Final(PushError::TokenInvalid(DeadTokenReason::Unregistered))
        }
        (_, "BadDeviceToken") => Verdict::Final(PushError::TokenInvalid(DeadTokenReason::BadToken)),
        (_, "DeviceTokenNotForTopic") => {
            Verdict::Final(PushError::TokenInvalid(DeadTokenReason::NotForThisApp))
        }
        (429, "TooManyProviderTokenUpdates") => Verdict::Misconfigured(format!(
            "{}: the provider token is renewed too often (another process shares this key?)",
            described()
        )),
        (429, _) => Verdict::Final(PushError::ProviderThrottled {
            retry_after: retry_after(resp),
        }),
        (403, "InvalidProviderToken" | "ExpiredProviderToken") => {
            Verdict::TokenRefused(described())
        }
        (500..=599, _) => Verdict::Retryable(described()),
        // Every other 4xx (TopicDisallowed, BadTopic, BadCertificate,
        // BadCertificateEnvironment, MissingProviderToken, BadPath, ...) says our request or
        // credentials are wrong, which no retry fixes.
        _ => Verdict::Misconfigured(described()),
    }
}

/// Apple's `Retry-After` (seconds), when present.
fn retry_after(resp: &HttpResponse) -> Option<Duration> {
    resp.headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, reason: &str) -> HttpResponse {
        HttpResponse {
            status: StatusCode::from_u16(status).unwrap(),
            headers: http::HeaderMap::new(),
            body: format!(r#"{{"reason":"{reason}"}}"#).into(),
        }
    }

    #[test]
    fn dead_tokens_by_reason() {
        use DeadTokenReason::*;
        for (status, reason, kind) in [
            (410, "Unregistered", Unregistered),
            (410, "ExpiredToken", Unregistered),
            (400, "BadDeviceToken", BadToken),
            (400, "DeviceTokenNotForTopic", NotForThisApp),
        ] {
            assert_eq!(
                judge(&answer(status, reason)),
                Verdict::Final(PushError::TokenInvalid(kind)),
                "{status} {reason}"
            );
        }
    }

    #[test]
    fn throttling_keeps_retry_after() {
        let mut resp = answer(429, "TooManyRequests");
        resp.headers.insert("retry-after", "7".parse().unwrap());
        assert_eq!(
            judge(&resp),
            Verdict::Final(PushError::ProviderThrottled {
                retry_after: Some(Duration::from_secs(7))
            })
        );
    }

    #[test]
    fn operator_mistakes_are_misconfigured() {
        for (status, reason) in [
            (429, "TooManyProviderTokenUpdates"),
            (400, "TopicDisallowed"),
            (400, "BadTopic"),
            (403, "BadCertificate"),
            (403, "BadCertificateEnvironment"),
            (403, "MissingProviderToken"),
        ] {
            assert!(
                matches!(judge(&answer(status, reason)), Verdict::Misconfigured(ref m) if m.contains(reason)),
                "{status} {reason}"
            );
        }
    }

    #[test]
    fn server_errors_are_retryable_and_refused_tokens_renewable() {
        assert!(matches!(
            judge(&answer(500, "InternalServerError")),
            Verdict::Retryable(_)
        ));
        assert!(matches!(
            judge(&answer(503, "ServiceUnavailable")),
            Verdict::Retryable(_)
        ));
        assert!(matches!(
            judge(&answer(403, "ExpiredProviderToken")),
            Verdict::TokenRefused(_)
        ));
        assert!(matches!(
            judge(&answer(403, "InvalidProviderToken")),
            Verdict::TokenRefused(_)
        ));
    }

    #[test]
    fn success_carries_the_apns_id() {
        let mut resp = answer(200, "");
        resp.body = bytes::Bytes::new();
        resp.headers.insert("apns-id", "abc".parse().unwrap());
        assert_eq!(
            judge(&resp),
            Verdict::Delivered(Delivered {
                provider_id: Some("abc".into())
            })
        );
    }
}
