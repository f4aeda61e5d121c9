//! Apple's answer to one push, turned into what fpush should do about it.
//!
//! Apple answers errors with a status and a JSON body `{"reason": "..."}`; the reason is the
//! precise part, so decisions are made on it, with the status as fallback for reasons Apple may
//! add later.

pub use fpush_http::MAX_RETRY_AFTER;
use fpush_http::{retry_after, HttpResponse, ProviderAnswer};
use fpush_traits::{DeadTokenReason, Delivered, PushError, Rejection};
use http::header::HeaderName;
use http::StatusCode;

/// Apple's id of a delivered push; a ready name, since one read from a string is checked
/// byte by byte on every answer.
const APNS_ID: HeaderName = HeaderName::from_static("apns-id");

/// The longest part of Apple's `reason` kept for logs and error texts (Apple's are short).
const MAX_REASON_TEXT: usize = 200;

#[derive(serde::Deserialize)]
struct ErrorBody {
    reason: Option<String>,
}

/// Apple's `reason`, or an empty string when the body had none.
fn reason(resp: &HttpResponse) -> String {
    serde_json::from_slice::<ErrorBody>(&resp.body)
        .ok()
        .and_then(|b| b.reason)
        .unwrap_or_default()
}

/// Apple refuses our provider-token renewals (`TooManyProviderTokenUpdates`): the key's
/// tokens change more often than every 20 minutes.
pub fn refuses_token_updates(resp: &HttpResponse) -> bool {
    resp.status == StatusCode::TOO_MANY_REQUESTS && reason(resp) == "TooManyProviderTokenUpdates"
}

/// What one answer means. A refused provider token (`InvalidProviderToken`,
/// `ExpiredProviderToken`) asks for a renewal; operator mistakes are `Misconfigured`.
pub fn judge(resp: &HttpResponse) -> ProviderAnswer {
    if resp.status == StatusCode::OK {
        let apns_id = || {
            let value = resp.headers.get(APNS_ID)?;
            value.to_str().ok().map(str::to_owned)
        };
        return ProviderAnswer::Delivered(Delivered::identified_by(apns_id));
    }
    let reason = reason(resp);
    let described = || {
        if reason.is_empty() {
            format!("APNS answered {}", resp.status)
        } else {
            let reason: String = reason.chars().take(MAX_REASON_TEXT).collect();
            format!("APNS answered {} {reason}", resp.status)
        }
    };
    let failed = ProviderAnswer::Failed;
    match (resp.status.as_u16(), reason.as_str()) {
        (410, _) | (_, "Unregistered") => {
            failed(PushError::TokenInvalid(DeadTokenReason::Unregistered))
        }
        (_, "BadDeviceToken") => failed(PushError::TokenInvalid(DeadTokenReason::BadToken)),
        (_, "DeviceTokenNotForTopic") => {
            failed(PushError::TokenInvalid(DeadTokenReason::NotForThisApp))
        }
        // This push's payload, not the module: refused as it stands, never a misconfiguration
        // (which would raise the operator's alert over one sender's long message).
        (413, _) | (_, "PayloadTooLarge") => failed(PushError::Rejected {
            reason: Rejection::TooLarge,
            detail: described(),
        }),
        (429, "TooManyProviderTokenUpdates") => failed(PushError::Misconfigured(format!(
            "{}: the provider token is renewed too often (another process shares this key?); no new one for 20 minutes",
            described()
        ))),
        (429, _) => failed(PushError::ProviderThrottled {
            retry_after: retry_after(&resp.headers),
        }),
        (403, "InvalidProviderToken" | "ExpiredProviderToken") => {
            ProviderAnswer::Renew(described())
        }
        (500..=599, _) => ProviderAnswer::Retry(described()),
        // Apple closed the idle connection instead of processing the push: not our settings,
        // and a new connection can take it.
        (400, "IdleTimeout") => ProviderAnswer::Retry(described()),
        // Every other 4xx (TopicDisallowed, BadTopic, BadCertificate,
        // BadCertificateEnvironment, MissingProviderToken, BadPath, ...) says our request or
        // credentials are wrong, which no retry fixes.
        _ => failed(PushError::Misconfigured(described())),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
                ProviderAnswer::Failed(PushError::TokenInvalid(kind)),
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
            ProviderAnswer::Failed(PushError::ProviderThrottled {
                retry_after: Some(Duration::from_secs(7))
            })
        );
    }

    #[test]
    fn a_huge_retry_after_is_clamped() {
        let mut resp = answer(429, "TooManyRequests");
        resp.headers
            .insert("retry-after", u64::MAX.to_string().parse().unwrap());
        assert_eq!(
            judge(&resp),
            ProviderAnswer::Failed(PushError::ProviderThrottled {
                retry_after: Some(MAX_RETRY_AFTER)
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
                matches!(judge(&answer(status, reason)), ProviderAnswer::Failed(PushError::Misconfigured(ref m)) if m.contains(reason)),
                "{status} {reason}"
            );
        }
    }

    #[test]
    fn a_payload_apple_finds_too_large_is_rejected_not_misconfigured() {
        for (status, reason) in [(413, "PayloadTooLarge"), (413, "")] {
            assert!(
                matches!(
                    judge(&answer(status, reason)),
                    ProviderAnswer::Failed(PushError::Rejected {
                        reason: Rejection::TooLarge,
                        ..
                    })
                ),
                "{status} {reason}"
            );
        }
    }

    #[test]
    fn a_long_reason_is_cut_short_in_the_error_text() {
        let long = "X".repeat(10_000);
        let ProviderAnswer::Failed(PushError::Misconfigured(text)) = judge(&answer(400, &long))
        else {
            panic!("expected Misconfigured");
        };
        assert!(text.len() < 300, "{} bytes", text.len());
    }

    #[test]
    fn server_errors_are_retried_and_refused_tokens_renewed() {
        assert!(matches!(
            judge(&answer(500, "InternalServerError")),
            ProviderAnswer::Retry(_)
        ));
        assert!(matches!(
            judge(&answer(503, "ServiceUnavailable")),
            ProviderAnswer::Retry(_)
        ));
        assert!(matches!(
            judge(&answer(403, "ExpiredProviderToken")),
            ProviderAnswer::Renew(_)
        ));
        assert!(matches!(
            judge(&answer(403, "InvalidProviderToken")),
            ProviderAnswer::Renew(_)
        ));
    }

    #[test]
    fn an_idle_timeout_is_retried_not_misconfigured() {
        assert!(matches!(
            judge(&answer(400, "IdleTimeout")),
            ProviderAnswer::Retry(ref reason) if reason.contains("IdleTimeout")
        ));
    }

    #[test]
    fn success_carries_the_apns_id() {
        // The id is read for the debug log only.
        log::set_max_level(log::LevelFilter::Debug);
        let mut resp = answer(200, "");
        resp.body = bytes::Bytes::new();
        resp.headers.insert("apns-id", "abc".parse().unwrap());
        assert_eq!(
            judge(&resp),
            ProviderAnswer::Delivered(Delivered {
                provider_id: Some("abc".into())
            })
        );
    }
}
