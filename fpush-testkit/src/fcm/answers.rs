//! The answers the FCM test server gives, in Google's real layouts.
//!
//! FCM v1 errors are `google.rpc.Status` JSON: `code`, `message`, `status`, and typed `details`
//! (`google.firebase.fcm.v1.FcmError` with the `errorCode`, `google.rpc.BadRequest` with field
//! violations). The token endpoint answers like Google's OAuth server.

use serde_json::{json, Value};

const FCM_ERROR_TYPE: &str = "type.googleapis.com/google.firebase.fcm.v1.FcmError";
const BAD_REQUEST_TYPE: &str = "type.googleapis.com/google.rpc.BadRequest";
const ERROR_INFO_TYPE: &str = "type.googleapis.com/google.rpc.ErrorInfo";

/// One scripted or conventional answer to `messages:send`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FcmAnswer {
    /// 200 with the message `name`.
    Accept,
    /// Any status and body, with an optional `Retry-After` (seconds).
    Status {
        status: u16,
        body: String,
        retry_after: Option<u64>,
    },
    /// Never answers (until the server stops).
    Stall,
    /// Drops the connection while the request is in flight (a reset, as the client sees it).
    DropConnection,
    /// Sends GOAWAY on the connection, then answers the request normally.
    GoawayThenAccept,
}

impl FcmAnswer {
    /// 404 `NOT_FOUND` / `UNREGISTERED`: the app was uninstalled or the token expired.
    pub fn unregistered() -> Self {
        google_error(
            404,
            "NOT_FOUND",
            "Requested entity was not found.",
            Some("UNREGISTERED"),
            None,
        )
    }

    /// 400 `INVALID_ARGUMENT` naming `message.token` in a `google.rpc.BadRequest` detail.
    pub fn bad_token() -> Self {
        Self::invalid_argument(
            "message.token",
            "The registration token is not a valid FCM registration token",
        )
    }

    /// 400 `INVALID_ARGUMENT` for a malformed or made-up token as FCM sends it today: the
    /// `FcmError` detail and the message only, no `google.rpc.BadRequest` naming the field.
    pub fn bad_token_without_field() -> Self {
        google_error(
            400,
            "INVALID_ARGUMENT",
            "The registration token is not a valid FCM registration token",
            Some("INVALID_ARGUMENT"),
            None,
        )
    }

    /// 400 `INVALID_ARGUMENT` about `field`.
    pub fn invalid_argument(field: &str, description: &str) -> Self {
        google_error(
            400,
            "INVALID_ARGUMENT",
            description,
            Some("INVALID_ARGUMENT"),
            Some(json!({
                "@type": BAD_REQUEST_TYPE,
                "fieldViolations": [{"field": field, "description": description}]
            })),
        )
    }

    /// 400 `INVALID_ARGUMENT` from Google's JSON reader for a name the API does not have: a
    /// `google.rpc.BadRequest` naming where, no `FcmError` (FCM never saw the message).
    pub fn unknown_name(field: &str, description: &str) -> Self {
        google_error(
            400,
            "INVALID_ARGUMENT",
            description,
            None,
            Some(json!({
                "@type": BAD_REQUEST_TYPE,
                "fieldViolations": [{"field": field, "description": description}]
            })),
        )
    }

    /// 400 `INVALID_ARGUMENT` for a message over FCM's size limit, as FCM sends it: an empty
    /// `google.rpc.BadRequest` first, then the `FcmError`; no field named.
    pub fn too_big(message: &str) -> Self {
        let error = json!({
            "code": 400,
            "message": message,
            "status": "INVALID_ARGUMENT",
            "details": [
                {"@type": BAD_REQUEST_TYPE},
                {"@type": FCM_ERROR_TYPE, "errorCode": "INVALID_ARGUMENT"}
            ]
        });
        FcmAnswer::Status {
            status: 400,
            body: json!({ "error": error }).to_string(),
            retry_after: None,
        }
    }

    /// 403 `PERMISSION_DENIED` / `SENDER_ID_MISMATCH`: the token belongs to another project.
    pub fn sender_id_mismatch() -> Self {
        google_error(
            403,
            "PERMISSION_DENIED",
            "SenderId mismatch",
            Some("SENDER_ID_MISMATCH"),
            None,
        )
    }

    /// 403 `PERMISSION_DENIED` without FCM detail: the account may not send for this project.
    pub fn permission_denied(project: &str) -> Self {
        google_error(
            403,
            "PERMISSION_DENIED",
            &format!("Permission 'cloudmessaging.messages.create' denied on resource '//cloudresourcemanager.googleapis.com/projects/{project}' (or it may not exist)."),
            None,
            None,
        )
    }

    /// 401 `UNAUTHENTICATED`: the bearer token is missing, unknown or expired.
    pub fn unauthenticated() -> Self {
        google_error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            None,
            None,
        )
    }

    /// 401 `UNAUTHENTICATED` for a request without an `Authorization` header, with the
    /// `google.rpc.ErrorInfo` (`CREDENTIALS_MISSING`) Google's front end adds.
    pub fn credentials_missing() -> Self {
        google_error(
            401,
            "UNAUTHENTICATED",
            "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            None,
            Some(auth_error_info("CREDENTIALS_MISSING")),
        )
    }

    /// 401 `UNAUTHENTICATED` for an access token past its lifetime, with the
    /// `google.rpc.ErrorInfo` (`ACCESS_TOKEN_EXPIRED`) Google's front end adds.
    pub fn access_token_expired() -> Self {
        google_error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            None,
            Some(auth_error_info("ACCESS_TOKEN_EXPIRED")),
        )
    }

    /// 401 `UNAUTHENTICATED` / `THIRD_PARTY_AUTH_ERROR`.
    pub fn third_party_auth_error() -> Self {
        google_error(
            401,
            "UNAUTHENTICATED",
            "Auth error from APNS or Web Push Service",
            Some("THIRD_PARTY_AUTH_ERROR"),
            None,
        )
    }

    /// 429 `RESOURCE_EXHAUSTED` / `QUOTA_EXCEEDED` with `Retry-After`, saying no more (FCM's
    /// answer to too many messages for one device).
    pub fn quota_exceeded(retry_after: u64) -> Self {
        let answer = google_error(
            429,
            "RESOURCE_EXHAUSTED",
            "Quota exceeded for quota metric 'Send requests'.",
            Some("QUOTA_EXCEEDED"),
            None,
        );
        with_retry_after(answer, retry_after)
    }

    /// 429 `RESOURCE_EXHAUSTED` for the whole project: the Google API front end's per-minute
    /// send quota, as it answers it (no `FcmError` detail; a `google.rpc.ErrorInfo` with reason
    /// `RATE_LIMIT_EXCEEDED` and the quota's metadata), with `Retry-After`.
    pub fn project_quota_exceeded(project_number: u64, retry_after: u64) -> Self {
        let info = json!({
            "@type": ERROR_INFO_TYPE,
            "reason": "RATE_LIMIT_EXCEEDED",
            "domain": "googleapis.com",
            "metadata": {
                "service": "fcm.googleapis.com",
                "consumer": format!("projects/{project_number}"),
                "quota_metric": "fcm.googleapis.com/send_requests",
                "quota_limit": "SendsPerMinutePerProject",
                "quota_unit": "1/min/{project}",
            }
        });
        let message = format!("Quota exceeded for quota metric 'Send requests' and limit 'Send requests per minute' of service 'fcm.googleapis.com' for consumer 'project_number:{project_number}'.");
        with_retry_after(
            google_error(429, "RESOURCE_EXHAUSTED", &message, None, Some(info)),
            retry_after,
        )
    }

    /// 503 `UNAVAILABLE`.
    pub fn unavailable() -> Self {
        google_error(
            503,
            "UNAVAILABLE",
            "The service is currently unavailable.",
            Some("UNAVAILABLE"),
            None,
        )
    }

    /// 503 `UNAVAILABLE` with `Retry-After`, as Google answers when it sheds load and says when
    /// to come back (the client must wait that long).
    pub fn unavailable_for(retry_after: u64) -> Self {
        with_retry_after(Self::unavailable(), retry_after)
    }

    /// 500 `INTERNAL`.
    pub fn internal() -> Self {
        google_error(
            500,
            "INTERNAL",
            "Internal error encountered.",
            Some("INTERNAL"),
            None,
        )
    }

    /// A non-JSON body, as a proxy or load balancer sends.
    pub fn html(status: u16) -> Self {
        FcmAnswer::Status {
            status,
            body: format!("<html><head><title>Error {status}</title></head><body>Error {status}</body></html>"),
            retry_after: None,
        }
    }

    /// The name a conventional reason goes by in request records (the `errorCode`, else the
    /// `status`).
    pub fn reason(&self) -> Option<String> {
        match self {
            FcmAnswer::Status { body, status, .. } => {
                let parsed: Value = serde_json::from_str(body).unwrap_or(Value::Null);
                let error = &parsed["error"];
                let code = error["details"]
                    .as_array()
                    .and_then(|details| details.iter().find_map(|d| d["errorCode"].as_str()));
                Some(
                    code.or_else(|| error["status"].as_str())
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("HTTP {status}")),
                )
            }
            FcmAnswer::Stall => Some("STALL".to_string()),
            FcmAnswer::DropConnection => Some("RESET".to_string()),
            FcmAnswer::Accept | FcmAnswer::GoawayThenAccept => None,
        }
    }
}

/// The `google.rpc.ErrorInfo` Google's API front end puts in a 401: why the credentials were
/// refused, and for which method.
fn auth_error_info(reason: &str) -> Value {
    json!({
        "@type": ERROR_INFO_TYPE,
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": {
            "service": "fcm.googleapis.com",
            "method": "google.firebase.fcm.v1.FcmService.SendMessage",
        }
    })
}

fn with_retry_after(answer: FcmAnswer, seconds: u64) -> FcmAnswer {
    match answer {
        FcmAnswer::Status { status, body, .. } => FcmAnswer::Status {
            status,
            body,
            retry_after: Some(seconds),
        },
        other => other,
    }
}

fn google_error(
    code: u16,
    status: &str,
    message: &str,
    error_code: Option<&str>,
    extra: Option<Value>,
) -> FcmAnswer {
    let mut details = Vec::new();
    if let Some(error_code) = error_code {
        details.push(json!({"@type": FCM_ERROR_TYPE, "errorCode": error_code}));
    }
    details.extend(extra);
    let mut error = json!({"code": code, "message": message, "status": status});
    if !details.is_empty() {
        error["details"] = Value::Array(details);
    }
    FcmAnswer::Status {
        status: code,
        body: json!({ "error": error }).to_string(),
        retry_after: None,
    }
}

/// Google's OAuth error body (`{"error": "invalid_grant", "error_description": ...}`).
pub fn oauth_error(error: &str, description: &str) -> String {
    json!({"error": error, "error_description": description}).to_string()
}

/// What the shared token-prefix convention asks for (see the `fake-fcm` binary), plus the
/// FCM-only prefixes; `first` is whether this is the first request seen for the token.
pub fn for_token(token: &str, first: bool) -> FcmAnswer {
    let once = |answer: FcmAnswer| if first { answer } else { FcmAnswer::Accept };
    if token.starts_with("unavailable-once") {
        once(FcmAnswer::unavailable())
    } else if token.starts_with("throttled-once") {
        once(FcmAnswer::quota_exceeded(THROTTLE_RETRY_AFTER))
    } else if token.starts_with("dead") {
        FcmAnswer::unregistered()
    } else if token.starts_with("baddevice") {
        FcmAnswer::bad_token()
    } else if token.starts_with("unavailable") {
        FcmAnswer::unavailable()
    } else if token.starts_with("throttled") {
        FcmAnswer::quota_exceeded(THROTTLE_RETRY_AFTER)
    } else if token.starts_with("stall") {
        FcmAnswer::Stall
    } else if token.starts_with("mismatch") {
        FcmAnswer::sender_id_mismatch()
    } else if token.starts_with("internal") {
        FcmAnswer::internal()
    } else if token.starts_with("thirdpartyauth") {
        FcmAnswer::third_party_auth_error()
    } else if token.starts_with("invalidarg") {
        FcmAnswer::invalid_argument("message.android.collapse_key", "Invalid collapse key")
    } else if token.starts_with("html") {
        FcmAnswer::html(502)
    } else if token.starts_with("reset") {
        FcmAnswer::DropConnection
    } else {
        FcmAnswer::Accept
    }
}

/// `Retry-After` seconds of the conventional throttling answer.
pub const THROTTLE_RETRY_AFTER: u64 = 30;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_have_googles_layout() {
        let FcmAnswer::Status { status, body, .. } = FcmAnswer::unregistered() else {
            panic!("not a status answer");
        };
        assert_eq!(status, 404);
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            body,
            json!({"error": {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND",
                "details": [{"@type": FCM_ERROR_TYPE, "errorCode": "UNREGISTERED"}]}})
        );
        let FcmAnswer::Status { body, .. } = FcmAnswer::bad_token() else {
            panic!("not a status answer");
        };
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            body["error"]["details"][1]["fieldViolations"][0]["field"],
            "message.token"
        );
    }

    #[test]
    fn a_project_quota_names_the_project_and_carries_no_fcm_error_code() {
        let FcmAnswer::Status {
            status,
            body,
            retry_after,
        } = FcmAnswer::project_quota_exceeded(42, 7)
        else {
            panic!("not a status answer");
        };
        assert_eq!((status, retry_after), (429, Some(7)));
        let body: Value = serde_json::from_str(&body).unwrap();
        let details = body["error"]["details"].as_array().unwrap();
        assert_eq!(details.len(), 1, "{body}");
        assert_eq!(details[0]["@type"], ERROR_INFO_TYPE);
        assert_eq!(details[0]["reason"], "RATE_LIMIT_EXCEEDED");
        assert_eq!(details[0]["metadata"]["consumer"], "projects/42");
        assert_eq!(
            FcmAnswer::project_quota_exceeded(42, 7).reason().as_deref(),
            Some("RESOURCE_EXHAUSTED")
        );
    }

    #[test]
    fn the_token_convention_is_followed() {
        assert_eq!(for_token("dead-1", true), FcmAnswer::unregistered());
        assert_eq!(for_token("baddevice-1", true), FcmAnswer::bad_token());
        assert_eq!(for_token("unavailable-1", false), FcmAnswer::unavailable());
        assert_eq!(
            for_token("throttled-1", false),
            FcmAnswer::quota_exceeded(THROTTLE_RETRY_AFTER)
        );
        assert_eq!(for_token("stall-1", true), FcmAnswer::Stall);
        assert_eq!(
            for_token("unavailable-once-1", true),
            FcmAnswer::unavailable()
        );
        assert_eq!(for_token("unavailable-once-1", false), FcmAnswer::Accept);
        assert_eq!(for_token("throttled-once-1", false), FcmAnswer::Accept);
        assert_eq!(for_token("anything", true), FcmAnswer::Accept);
    }

    #[test]
    fn reasons_name_the_error_code() {
        assert_eq!(
            FcmAnswer::unregistered().reason().as_deref(),
            Some("UNREGISTERED")
        );
        assert_eq!(
            FcmAnswer::unauthenticated().reason().as_deref(),
            Some("UNAUTHENTICATED")
        );
        assert_eq!(FcmAnswer::html(502).reason().as_deref(), Some("HTTP 502"));
        assert_eq!(FcmAnswer::Accept.reason(), None);
    }
}
