//! Which quota a throttling answer from FCM is about: one device's, or the whole project's.
//!
//! FCM answers `429 RESOURCE_EXHAUSTED` both when one device gets too many messages (the
//! `FcmError` detail says `QUOTA_EXCEEDED`) and when the project exceeds its per-minute send
//! quota. Google names a project-wide quota in the details: a `google.rpc.QuotaFailure` whose
//! violation's `subject` is `project:…` (or whose quota is a per-project one), or the API front
//! end's `google.rpc.ErrorInfo` with reason `RATE_LIMIT_EXCEEDED` about the consumer project.
//! Only such an explicit answer pauses the module; anything else holds only the token (and
//! 429s for many tokens at once still trip the transport's breaker).

use serde_json::Value;

/// The scope a throttling answer applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QuotaScope {
    /// Too many messages for this token: hold only it.
    Device,
    /// The project's quota: pause the whole module.
    Project,
}

/// Reads the scope from an error body; unreadable or silent bodies mean [`QuotaScope::Device`].
pub(crate) fn scope(body: &[u8]) -> QuotaScope {
    let Ok(parsed) = serde_json::from_slice::<Value>(body) else {
        return QuotaScope::Device;
    };
    let details = parsed["error"]["details"].as_array();
    if details.into_iter().flatten().any(names_the_project) {
        QuotaScope::Project
    } else {
        QuotaScope::Device
    }
}

fn names_the_project(detail: &Value) -> bool {
    let kind = detail["@type"].as_str().unwrap_or("");
    if kind.ends_with("google.rpc.QuotaFailure") {
        let violations = detail["violations"].as_array();
        violations.into_iter().flatten().any(|violation| {
            let subject = violation["subject"].as_str().unwrap_or("");
            subject.starts_with("project:") || per_project(violation["quotaId"].as_str())
        })
    } else if kind.ends_with("google.rpc.ErrorInfo") {
        let metadata = &detail["metadata"];
        detail["reason"].as_str() == Some("RATE_LIMIT_EXCEEDED")
            || per_project(metadata["quota_limit"].as_str())
    } else {
        false
    }
}

/// Google's per-project quota ids end so (`SendsPerMinutePerProject`).
fn per_project(quota: Option<&str>) -> bool {
    quota.is_some_and(|quota| quota.ends_with("PerProject"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(details: Value) -> Vec<u8> {
        json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": details}})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn quota_exceeded_alone_is_about_the_device() {
        let fcm_error = json!([{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
            "errorCode": "QUOTA_EXCEEDED"}]);
        assert_eq!(scope(&body(fcm_error)), QuotaScope::Device);
        for odd in [
            &b""[..],
            b"<html>429</html>",
            b"{}",
            b"{\"error\": {\"details\": 5}}",
        ] {
            assert_eq!(scope(odd), QuotaScope::Device);
        }
    }

    #[test]
    fn a_quota_failure_on_the_project_is_project_wide() {
        let on_project = json!([{"@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [{"subject": "project:my-app", "description": "Send requests per minute"}]}]);
        assert_eq!(scope(&body(on_project)), QuotaScope::Project);
        let by_quota_id = json!([{"@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [{"quotaId": "SendsPerMinutePerProject"}]}]);
        assert_eq!(scope(&body(by_quota_id)), QuotaScope::Project);
        let on_device = json!([{"@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [{"subject": "device", "description": "Device message rate exceeded"}]}]);
        assert_eq!(scope(&body(on_device)), QuotaScope::Device);
    }

    #[test]
    fn the_front_ends_rate_limit_error_info_is_project_wide() {
        let info = json!([{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "RATE_LIMIT_EXCEEDED", "domain": "googleapis.com",
            "metadata": {"quota_limit": "SendsPerMinutePerProject", "consumer": "projects/42"}}]);
        assert_eq!(scope(&body(info)), QuotaScope::Project);
        let other = json!([{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "SOMETHING_ELSE"}]);
        assert_eq!(scope(&body(other)), QuotaScope::Device);
    }
}
