//! Reading FCM's answer to `messages:send` and deciding what it means for the push.
//!
//! Google's errors are `{"error": {"code", "message", "status", "details": [...]}}` where
//! `details` mixes typed entries: `google.firebase.fcm.v1.FcmError` carries the `errorCode` that
//! matters most, `google.rpc.BadRequest` names the offending fields, and others may appear.
//! Unknown entries, missing fields and bodies that are not JSON at all (a proxy's HTML page) are
//! tolerated: the HTTP status then decides. A token is only declared dead on an explicit answer
//! about the token (an `UNREGISTERED` or `SENDER_ID_MISMATCH` code, or an `INVALID_ARGUMENT` that
//! names `message.token` or says the registration token is not valid), never on a guess.

use fpush_http::{retry_after, ProviderAnswer};
use fpush_traits::{DeadTokenReason, Delivered, PushError};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::Value;

/// The longest part of an answer's `status` or `errorCode` kept for logs and error texts.
const MAX_CODE_TEXT: usize = 64;
/// The longest part of an answer's `message` kept for logs and error texts.
const MAX_MESSAGE_TEXT: usize = 200;

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

/// Decides what FCM's answer means: a 5xx may be retried, a refused access token (401/403)
/// asks for a new one, a refusal by Apple or a Web Push service of the project's credentials
/// (`THIRD_PARTY_AUTH_ERROR`, also a 401) is the project's configuration.
pub(crate) fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ProviderAnswer {
    if status.is_success() {
        let name = || serde_json::from_slice::<SendResponse>(body).ok()?.name;
        return ProviderAnswer::Delivered(Delivered::identified_by(name));
    }
    let facts = parse_error_body(body);
    let describe = || describe(status, &facts);
    let status_is = |name: &str| facts.status.as_deref() == Some(name);
    let token_at_fault = facts.bad_fields.iter().any(|f| f == "message.token")
        || blames_the_token(facts.message.as_deref());

    match facts.error_code.as_deref() {
        Some("UNREGISTERED") => {
            return ProviderAnswer::Failed(PushError::TokenInvalid(DeadTokenReason::Unregistered))
        }
        Some("SENDER_ID_MISMATCH") => {
            return ProviderAnswer::Failed(PushError::TokenInvalid(DeadTokenReason::NotForThisApp))
        }
        Some("INVALID_ARGUMENT") if token_at_fault => {
            return ProviderAnswer::Failed(PushError::TokenInvalid(DeadTokenReason::BadToken))
        }
        Some("INVALID_ARGUMENT") => {
            return ProviderAnswer::Failed(PushError::Misconfigured(describe()))
        }
        Some("QUOTA_EXCEEDED") => return throttled(headers),
        Some("UNAVAILABLE") | Some("INTERNAL") => return ProviderAnswer::Retry(describe()),
        Some("THIRD_PARTY_AUTH_ERROR") => {
            return ProviderAnswer::Failed(PushError::Misconfigured(third_party_auth(describe())))
        }
        _ => {}
    }
    if status_is("INVALID_ARGUMENT") && token_at_fault {
        ProviderAnswer::Failed(PushError::TokenInvalid(DeadTokenReason::BadToken))
    } else if status == StatusCode::TOO_MANY_REQUESTS || status_is("RESOURCE_EXHAUSTED") {
        throttled(headers)
    } else if status == StatusCode::UNAUTHORIZED
        || status == StatusCode::FORBIDDEN
        || status_is("UNAUTHENTICATED")
        || status_is("PERMISSION_DENIED")
    {
        ProviderAnswer::Renew(describe())
    } else if status.is_server_error() {
        ProviderAnswer::Retry(describe())
    } else {
        // Any other refusal (a 404 for a wrong project, a 400 about our own message) is ours
        // to fix; the token may be fine, so it must not be declared dead.
        ProviderAnswer::Failed(PushError::Misconfigured(describe()))
    }
}

/// FCM could not authenticate to Apple or to a Web Push service for the project: the APNs key
/// or certificate, or the Web Push certificate, configured in the Firebase project is invalid
/// or missing. Neither our access token (a fresh one changes nothing, and refreshing it per push
/// would load Google's token endpoint) nor the device token is at fault: the operator must fix
/// the project, and until then the push is answered `wait`.
fn third_party_auth(described: String) -> String {
    format!(
        "{described}; the Firebase project's APNs authentication key or certificate, or its Web \
         Push certificate, is invalid or missing (Firebase console: Project settings, Cloud \
         Messaging)"
    )
}

/// How Google's `message` reads when it refuses the token itself. FCM answers a malformed or
/// made-up token with `INVALID_ARGUMENT` and this text alone, naming no field.
const TOKEN_REFUSALS: [&str; 2] = [
    "not a valid fcm registration token",
    "invalid registration token",
];

/// Whether an `INVALID_ARGUMENT` message says the registration token is what is wrong.
fn blames_the_token(message: Option<&str>) -> bool {
    message.is_some_and(|message| {
        let message = message.to_ascii_lowercase();
        TOKEN_REFUSALS
            .iter()
            .any(|refusal| message.contains(refusal))
    })
}

/// Throttled, with the answer's `Retry-After` (clamped by [`retry_after`]).
fn throttled(headers: &HeaderMap) -> ProviderAnswer {
    ProviderAnswer::Failed(PushError::ProviderThrottled {
        retry_after: retry_after(headers),
    })
}

/// A short description for logs and error texts.
fn describe(status: StatusCode, facts: &ErrorFacts) -> String {
    let mut text = format!("FCM answered {}", status.as_u16());
    // Google's are short; anything else sent there must not make a huge log line.
    for part in [&facts.status, &facts.error_code].into_iter().flatten() {
        text.push(' ');
        text.extend(part.chars().take(MAX_CODE_TEXT));
    }
    if let Some(message) = &facts.message {
        text.push_str(": ");
        text.extend(message.chars().take(MAX_MESSAGE_TEXT));
    }
    text
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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

    fn verdict(answer: (StatusCode, Vec<u8>)) -> ProviderAnswer {
        classify(answer.0, &HeaderMap::new(), &answer.1)
    }

    #[test]
    fn success_reports_the_message_name() {
        // The name is read for the debug log only.
        log::set_max_level(log::LevelFilter::Debug);
        let body = br#"{"name": "projects/p/messages/0:1700000000%abc"}"#;
        assert_eq!(
            classify(StatusCode::OK, &HeaderMap::new(), body),
            ProviderAnswer::Delivered(Delivered {
                provider_id: Some("projects/p/messages/0:1700000000%abc".into())
            })
        );
        assert_eq!(
            classify(StatusCode::OK, &HeaderMap::new(), b"not json"),
            ProviderAnswer::Delivered(Delivered { provider_id: None })
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
            ProviderAnswer::Failed(PushError::TokenInvalid(DeadTokenReason::Unregistered))
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
            ProviderAnswer::Failed(PushError::TokenInvalid(DeadTokenReason::NotForThisApp))
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
            ProviderAnswer::Failed(PushError::TokenInvalid(DeadTokenReason::BadToken))
        );
        let without_fcm_detail = google(
            400,
            "INVALID_ARGUMENT",
            json!([{"@type": BAD_REQUEST, "fieldViolations": [{"field": "message.token"}]}]),
        );
        assert_eq!(
            verdict(without_fcm_detail),
            ProviderAnswer::Failed(PushError::TokenInvalid(DeadTokenReason::BadToken))
        );
    }

    #[test]
    fn invalid_argument_saying_the_token_is_invalid_is_a_bad_token_without_field_details() {
        // What FCM answers for a malformed or made-up token: no google.rpc.BadRequest detail.
        for message in [
            "The registration token is not a valid FCM registration token",
            "Invalid registration token",
        ] {
            let answer = (
                StatusCode::BAD_REQUEST,
                json!({"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT",
                    "details": [{"@type": FCM_ERROR, "errorCode": "INVALID_ARGUMENT"}]}})
                .to_string()
                .into_bytes(),
            );
            assert_eq!(
                verdict(answer),
                ProviderAnswer::Failed(PushError::TokenInvalid(DeadTokenReason::BadToken)),
                "{message}"
            );
        }
        let without_fcm_detail = google(400, "INVALID_ARGUMENT", json!([]));
        assert!(matches!(
            verdict(without_fcm_detail),
            ProviderAnswer::Failed(PushError::Misconfigured(_))
        ));
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
        let ProviderAnswer::Failed(PushError::Misconfigured(text)) = verdict(answer) else {
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
            ProviderAnswer::Failed(PushError::ProviderThrottled {
                retry_after: Some(Duration::from_secs(37))
            })
        );
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), b""),
            ProviderAnswer::Failed(PushError::ProviderThrottled { retry_after: None })
        );
    }

    #[test]
    fn a_huge_retry_after_is_clamped() {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::RETRY_AFTER,
            u64::MAX.to_string().parse().unwrap(),
        );
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, &headers, b""),
            ProviderAnswer::Failed(PushError::ProviderThrottled {
                retry_after: Some(fpush_http::MAX_RETRY_AFTER)
            })
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
            assert!(matches!(verdict(answer), ProviderAnswer::Retry(_)));
        }
        let html = b"<html><body>502 Bad Gateway</body></html>";
        assert!(matches!(
            classify(StatusCode::BAD_GATEWAY, &HeaderMap::new(), html),
            ProviderAnswer::Retry(_)
        ));
    }

    #[test]
    fn third_party_auth_error_is_the_projects_configuration_not_our_access_token() {
        // Google's answer when the project's APNs key or Web Push certificate is missing.
        let third_party = google(
            401,
            "UNAUTHENTICATED",
            json!([{"@type": FCM_ERROR, "errorCode": "THIRD_PARTY_AUTH_ERROR"}]),
        );
        let ProviderAnswer::Failed(PushError::Misconfigured(text)) = verdict(third_party) else {
            panic!("expected Misconfigured");
        };
        assert!(text.contains("THIRD_PARTY_AUTH_ERROR"), "{text}");
        assert!(
            text.contains("Firebase console"),
            "names the setting: {text}"
        );
    }

    #[test]
    fn auth_failures_ask_for_a_new_token() {
        let expired = google(401, "UNAUTHENTICATED", json!([]));
        assert!(matches!(verdict(expired), ProviderAnswer::Renew(_)));
        let denied = google(403, "PERMISSION_DENIED", json!([]));
        assert!(matches!(verdict(denied), ProviderAnswer::Renew(_)));
        assert!(matches!(
            classify(StatusCode::UNAUTHORIZED, &HeaderMap::new(), b"nope"),
            ProviderAnswer::Renew(_)
        ));
    }

    #[test]
    fn not_found_without_unregistered_never_kills_the_token() {
        // A wrong project id in the URL: Google's 404 carries no FcmError detail.
        let answer = google(404, "NOT_FOUND", json!([]));
        assert!(matches!(
            verdict(answer),
            ProviderAnswer::Failed(PushError::Misconfigured(_))
        ));
        let html = classify(
            StatusCode::NOT_FOUND,
            &HeaderMap::new(),
            b"<html>Not Found</html>",
        );
        assert!(matches!(
            html,
            ProviderAnswer::Failed(PushError::Misconfigured(_))
        ));
    }

    #[test]
    fn long_texts_from_the_answer_are_cut_short_in_the_error_text() {
        let long = "X".repeat(100_000);
        for (status, error_code) in [
            (long.as_str(), "INVALID_ARGUMENT"),
            ("INVALID_ARGUMENT", long.as_str()),
        ] {
            let answer = google(
                400,
                status,
                json!([{"@type": FCM_ERROR, "errorCode": error_code}]),
            );
            let ProviderAnswer::Failed(PushError::Misconfigured(text)) = verdict(answer) else {
                panic!("expected Misconfigured");
            };
            assert!(text.len() < 1000, "{} bytes", text.len());
        }
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
                ProviderAnswer::Retry(_)
            ));
        }
    }
}
