//! A push service's answer as what the XMPP server should do (RFC 8030, section 8, and what the
//! browser services answer in practice).

use fpush_http::{HttpError, HttpResponse};
use fpush_traits::{DeadTokenReason, Delivered, PushError, Rejection};

/// Most bytes of an error body quoted in a reason.
const QUOTED_BODY: usize = 200;

/// 201/202 delivered; 404/410 the subscription is gone; 429 slow down; 413 payload too large;
/// 400/401/403 this one request was wrong (bad VAPID token, subscription): a fault of the
/// target's, never a dead target nor a broken module; 5xx transient.
pub fn judge(response: &HttpResponse) -> Result<Delivered, PushError> {
    let status = response.status.as_u16();
    match status {
        200..=299 => Ok(Delivered::identified_by(|| {
            let location = response.headers.get(http::header::LOCATION)?;
            location.to_str().ok().map(str::to_owned)
        })),
        404 | 410 => Err(PushError::TokenInvalid(DeadTokenReason::Unregistered)),
        429 => Err(PushError::ProviderThrottled {
            retry_after: fpush_http::retry_after(&response.headers),
        }),
        413 => Err(PushError::Rejected {
            reason: Rejection::TooLarge,
            detail: format!(
                "413: the push service refused the payload as too large{}",
                quoted(response)
            ),
        }),
        400 | 401 | 403 => Err(PushError::Rejected {
            reason: Rejection::Invalid,
            detail: format!(
                "{status}: the push service refused this request (VAPID token or subscription){}",
                quoted(response)
            ),
        }),
        _ => Err(PushError::Transient(format!(
            "the push service answered {status}{}",
            quoted(response)
        ))),
    }
}

/// A transport failure: a pause the service asked for, a timeout, or something passing.
pub fn failed(error: HttpError) -> PushError {
    match error {
        HttpError::Timeout(_) => PushError::Timeout,
        HttpError::Paused(left) => PushError::ProviderPaused { retry_after: left },
        other => PushError::Transient(other.to_string()),
    }
}

fn quoted(response: &HttpResponse) -> String {
    let body = String::from_utf8_lossy(&response.body);
    let body = body.trim();
    if body.is_empty() {
        return String::new();
    }
    let end = (0..=QUOTED_BODY.min(body.len()))
        .rev()
        .find(|&i| body.is_char_boundary(i))
        .unwrap_or(0);
    format!(": {}", &body[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn answer(status: u16, headers: &[(&str, &str)]) -> HttpResponse {
        let mut map = http::HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        HttpResponse {
            status: http::StatusCode::from_u16(status).unwrap(),
            headers: map,
            body: bytes::Bytes::from_static(b"{\"reason\":\"x\"}"),
        }
    }

    #[test]
    fn statuses_map_to_what_the_server_should_do() {
        // The location is read for the debug log only.
        log::set_max_level(log::LevelFilter::Debug);
        let delivered = judge(&answer(201, &[("location", "https://p/m/1")])).unwrap();
        assert_eq!(delivered.provider_id.as_deref(), Some("https://p/m/1"));
        assert!(judge(&answer(202, &[])).is_ok());
        for gone in [404, 410] {
            assert_eq!(
                judge(&answer(gone, &[])),
                Err(PushError::TokenInvalid(DeadTokenReason::Unregistered))
            );
        }
        assert_eq!(
            judge(&answer(429, &[("retry-after", "30")])),
            Err(PushError::ProviderThrottled {
                retry_after: Some(Duration::from_secs(30))
            })
        );
        for passing in [500, 502, 503] {
            assert!(
                matches!(judge(&answer(passing, &[])), Err(PushError::Transient(_))),
                "{passing}"
            );
        }
    }

    #[test]
    fn a_413_is_too_large_and_400_401_403_are_this_request_s_fault() {
        let reason = |status| match judge(&answer(status, &[])) {
            Err(PushError::Rejected { reason, .. }) => Some(reason),
            _ => None,
        };
        assert_eq!(reason(413), Some(Rejection::TooLarge));
        for status in [400, 401, 403] {
            assert_eq!(reason(status), Some(Rejection::Invalid), "{status}");
        }
    }

    #[test]
    fn a_wrong_request_never_reads_as_misconfiguration() {
        for status in [400, 401, 403, 413] {
            let error = judge(&answer(status, &[])).unwrap_err();
            assert!(!matches!(error, PushError::Misconfigured(_)), "{status}");
            assert!(error.to_string().contains(&status.to_string()), "{error}");
        }
    }

    #[test]
    fn transport_failures_map_to_timeout_throttle_or_transient() {
        assert_eq!(
            failed(HttpError::Timeout(Duration::from_secs(1))),
            PushError::Timeout
        );
        assert_eq!(
            failed(HttpError::Paused(Duration::from_secs(5))),
            PushError::ProviderPaused {
                retry_after: Duration::from_secs(5)
            }
        );
        assert!(matches!(
            failed(HttpError::Refused("goaway".into())),
            PushError::Transient(_)
        ));
    }
}
