//! Reading FCM's answer to `messages:send` and deciding what it means for the push.
//!
//! Google's errors are `{"error": {"code", "message", "status", "details": [...]}}` where
//! `details` mixes typed entries: `google.firebase.fcm.v1.FcmError` carries the `errorCode` that
//! matters most, `google.rpc.BadRequest` names the offending fields, and others may appear.
//! Unknown entries, missing fields and bodies that are not JSON at all (a proxy's HTML page) are
//! tolerated: the HTTP status then decides. A token is only declared dead on an explicit answer
//! about the token, never on a guess.

use std::time::Duration;

use fpush_traits::{DeadTokenReason, Delivered, PushError};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::Value;

/// What the module should do after one answer from FCM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Delivered(Delivered),
    /// Final: answer the push with this error.
    Failed(PushError),
    /// Google did not accept the message and says trying again may work (5xx): retry once.
    Retry(String),
    /// The access token was refused (401/403): fetch a new one and retry once.
    Reauthenticate(String),
}

#[derive(Deserialize)]
struct SendResponse {
    name: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: GoogleError,
}

#[derive(Deserialize, Default)]
struct GoogleError {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    details: Vec<Value>,
}

/// The facts an error body gave, all optional.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ErrorFacts {
    pub status: Option<String>,
    pub error_code: Option<String>,
    pub message: Option<String>,
    /// Fields named by `google.rpc.BadRequest` violations.
    pub bad_fields: Vec<String>,
}

/// Extracts what an error body says; anything unreadable yields empty facts.
pub(crate) fn parse_error_body(body: &[u8]) -> ErrorFacts {
    let Ok(ErrorBody { error }) = serde_json::from_slice::<ErrorBody>(body) else {
        return ErrorFacts::default();
    };
    let mut facts = ErrorFacts {
        status: error.status,
        message: error.message,
        ..ErrorFacts::default()
    };
    for detail in &error.details {
        let kind = detail.get("@type").and_then(Value::as_str).unwrap_or("");
        if kind.ends_with("google.firebase.fcm.v1.FcmError") {
            if let Some(code) = detail.get("errorCode").and_then(Value::as_str) {
                facts.error_code.get_or_insert_with(|| code.to_string());
            }
        } else if kind.ends_with("google.rpc.BadRequest") {
            let violations = detail.get("fieldViolations").and_then(Value::as_array);
            for violation in violations.into_iter().flatten() {
                if let Some(field) = violation.get("field").and_then(Value::as_str) {
                    facts.bad_fields.push(field.to_string());
                }
            }
        }
    }
    facts
}

/// Decides what FCM's answer means.
pub(crate) fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Verdict {
    if status.is_success() {
        let provider_id = serde_json::from_slice::<SendResponse>(body)
            .ok()
            .and_then(|r| r.name);
        return Verdict::Delivered(Delivered { provider_id });
    }
    let facts = parse_error_body(body);
    let describe = || describe(status, &facts);
    let status_is = |name: &str| facts.status.as_deref() == Some(name);
    let token_at_fault = facts.bad_fields.iter().any(|f| f == "message.token");

    match facts.error_code.as_deref() {
        Some("UNREGISTERED") => {
            return Verdict::Failed(PushError::TokenInvalid(DeadTokenReason::Unregistered))
        }
        Some("SENDER_ID_MISMATCH") => {
            return Verdict::Failed(PushError::TokenInvalid(DeadTokenReason::NotForThisApp))
        }
        Some("INVALID_ARGUMENT") if token_at_fault => {
            return Verdict::Failed(PushError::TokenInvalid(DeadTokenReason::BadToken))
        }
        Some("INVALID_ARGUMENT") => return Verdict::Failed(PushError::Misconfigured(describe())),
        Some("QUOTA_EXCEEDED") => {
            return Verdict::Failed(PushError::ProviderThrottled {
                retry_after: retry_after(headers),
            })
        }
        Some("UNAVAILABLE") | Some("INTERNAL") => return Verdict::Retry(describe()),
        Some("THIRD_PARTY_AUTH_ERROR") => return Verdict::Reauthenticate(describe()),
        _ => {}
    }
    if status_is("INVALID_ARGUMENT") && token_at_fault {
        Verdict::Failed(PushError::TokenInvalid(DeadTokenReason::BadToken))
    } else if status == StatusCode::TOO_MANY_REQUESTS || status_is("RESOURCE_EXHAUSTED") {
        Verdict::Failed(PushError::ProviderThrottled {
            retry_after: retry_after(headers),
        })
    } else if status == StatusCode::UNAUTHORIZED
        || status == StatusCode::FORBIDDEN
        || status_is("UNAUTHENTICATED")
        || status_is("PERMISSION_DENIED")
    {
        Verdict::Reauthenticate(describe())
    } else if status.is_server_error() {
        Verdict::Retry(describe())
    } else {
        // Any other refusal (a 404 for a wrong project, a 400 about our own message) is ours
        // to fix; the token may be fine, so it must not be declared dead.
        Verdict::Failed(PushError::Misconfigured(describe()))
    }
}

/// A short description for logs and error texts.
fn describe(status: StatusCode, facts: &ErrorFacts) -> String {
    let mut text = format!("FCM answered {}", status.as_u16());
    for part in [&facts.status, &facts.error_code].into_iter().flatten() {
        text.push(' ');
        text.push_str(part);
    }
    if let Some(message) = &facts.message {
        let message: String = message.chars().take(200).collect();
        text.push_str(": ");
        text.push_str(&message);
    }
    text
}

/// `Retry-After` in delta-seconds (what Google sends); an HTTP date is not honoured.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FCM_ERROR: &str = "type.googleapis.com/google.firebase.fcm.v1.FcmError";
    const BAD_REQUEST: &str = "type.googleapis.com/google.rpc.BadRequest";

    fn google(code: u16, status: &str, details: Value) -> (StatusCode, Vec<u8>) {
        let body = json!({"error": {"code": code, "message": "from Google", "status": status, "details": details}});
        (
            StatusCode::from_u16(code).unwrap(),
            body.to_string().into_bytes(),
        )
    }

    fn verdict(answer: (StatusCode, Vec<u8>)) -> Verdict {
        classify(answer.0, &HeaderMap::new(), &answer.1)
    }

    #[test]
    fn success_reports_the_message_name() {
        let body = br#"{"name": "projects/p/messages/0:1700000000%abc"}"#;
        assert_eq!(
            classify(StatusCode::OK, &HeaderMap::new(), body),
            Verdict::Delivered(Delivered {
                provider_id: Some("projects/p/messages/0:1700000000%abc".into())
            })
        );
        assert_eq!(
            classify(StatusCode::OK, &HeaderMap::new(), b"not json"),
            Verdict::Delivered(Delivered { provider_id: None })
        );
    }

    #[test]
    fn unregistered_is_a_dead_token() {
        let answer = google(
            404,
            "NOT_FOUND",
            json!([{"@type": FCM_ERROR, "errorCode": "UNREGISTERED"}]),
        );
        assert_eq!(
            verdict(answer),
            Verdict::Failed(PushError::TokenInvalid(DeadTokenReason::Unregistered))
        );
    }

    #[test]
    fn sender_id_mismatch_is_a_token_of_another_app() {
        let answer = google(
            403,
            "PERMISSION_DENIED",
            json!([{"@type": FCM_ERROR, "errorCode": "SENDER_ID_MISMATCH"}]),
        );
        assert_eq!(
            verdict(answer),
            Verdict::Failed(PushError::TokenInvalid(DeadTokenReason::NotForThisApp))
        );
    }

    #[test]
    fn invalid_argument_on_the_token_is_a_bad_token_among_other_details() {
        let answer = google(
            400,
            "INVALID_ARGUMENT",
            json!([
                {"@type": "type.googleapis.com/google.rpc.DebugInfo", "detail": "x"},
                {"@type": FCM_ERROR, "errorCode": "INVALID_ARGUMENT"},
                {"@type": BAD_REQUEST, "fieldViolations": [
                    {"field": "message.token", "description": "The registration token is not a valid FCM registration token"}
                ]}
            ]),
        );
        assert_eq!(
            verdict(answer),
            Verdict::Failed(PushError::TokenInvalid(DeadTokenReason::BadToken))
        );
        let without_fcm_detail = google(
            400,
            "INVALID_ARGUMENT",
            json!([{"@type": BAD_REQUEST, "fieldViolations": [{"field": "message.token"}]}]),
        );
        assert_eq!(
            verdict(without_fcm_detail),
            Verdict::Failed(PushError::TokenInvalid(DeadTokenReason::BadToken))
        );
    }

    #[test]
    fn invalid_argument_on_another_field_is_our_fault() {
        let answer = google(
            400,
            "INVALID_ARGUMENT",
            json!([
                {"@type": FCM_ERROR, "errorCode": "INVALID_ARGUMENT"},
                {"@type": BAD_REQUEST, "fieldViolations": [{"field": "message.android.ttl"}]}
            ]),
        );
        let Verdict::Failed(PushError::Misconfigured(text)) = verdict(answer) else {
            panic!("expected Misconfigured");
        };
        assert!(
            text.contains("400") && text.contains("INVALID_ARGUMENT"),
            "{text}"
        );
    }

    #[test]
    fn quota_exceeded_is_throttling_with_retry_after() {
        let (status, body) = google(
            429,
            "RESOURCE_EXHAUSTED",
            json!([{"@type": FCM_ERROR, "errorCode": "QUOTA_EXCEEDED"}]),
        );
        let mut headers = HeaderMap::new();
        headers.insert(http::header::RETRY_AFTER, "37".parse().unwrap());
        assert_eq!(
            classify(status, &headers, &body),
            Verdict::Failed(PushError::ProviderThrottled {
                retry_after: Some(Duration::from_secs(37))
            })
        );
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), b""),
            Verdict::Failed(PushError::ProviderThrottled { retry_after: None })
        );
    }

    #[test]
    fn unavailable_internal_and_5xx_are_retried() {
        for (code, status, error_code) in [
            (503, "UNAVAILABLE", "UNAVAILABLE"),
            (500, "INTERNAL", "INTERNAL"),
        ] {
            let answer = google(
                code,
                status,
                json!([{"@type": FCM_ERROR, "errorCode": error_code}]),
            );
            assert!(matches!(verdict(answer), Verdict::Retry(_)));
        }
        let html = b"<html><body>502 Bad Gateway</body></html>";
        assert!(matches!(
            classify(StatusCode::BAD_GATEWAY, &HeaderMap::new(), html),
            Verdict::Retry(_)
        ));
    }

    #[test]
    fn auth_failures_ask_for_a_new_token() {
        let third_party = google(
            401,
            "UNAUTHENTICATED",
            json!([{"@type": FCM_ERROR, "errorCode": "THIRD_PARTY_AUTH_ERROR"}]),
        );
        assert!(matches!(verdict(third_party), Verdict::Reauthenticate(_)));
        let expired = google(401, "UNAUTHENTICATED", json!([]));
        assert!(matches!(verdict(expired), Verdict::Reauthenticate(_)));
        let denied = google(403, "PERMISSION_DENIED", json!([]));
        assert!(matches!(verdict(denied), Verdict::Reauthenticate(_)));
        assert!(matches!(
            classify(StatusCode::UNAUTHORIZED, &HeaderMap::new(), b"nope"),
            Verdict::Reauthenticate(_)
        ));
    }

    #[test]
    fn not_found_without_unregistered_never_kills_the_token() {
        // A wrong project id in the URL: Google's 404 carries no FcmError detail.
        let answer = google(404, "NOT_FOUND", json!([]));
        assert!(matches!(
            verdict(answer),
            Verdict::Failed(PushError::Misconfigured(_))
        ));
        let html = classify(
            StatusCode::NOT_FOUND,
            &HeaderMap::new(),
            b"<html>Not Found</html>",
        );
        assert!(matches!(html, Verdict::Failed(PushError::Misconfigured(_))));
    }

    #[test]
    fn odd_bodies_are_tolerated() {
        for body in [
            &b""[..],
            b"null",
            b"{}",
            b"{\"error\": \"text\"}",
            b"{\"error\": {\"details\": [1, null, {\"@type\": 5}]}}",
        ] {
            assert_eq!(parse_error_body(body).error_code, None);
            assert!(matches!(
                classify(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new(), body),
                Verdict::Retry(_)
            ));
        }
    }

    #[test]
    fn retry_after_reads_seconds_only() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::RETRY_AFTER, " 5 ".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(5)));
        headers.insert(
            http::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), None);
    }
}
