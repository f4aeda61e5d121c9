//! Trading the service account's signed assertion for an access token at its `token_uri`
//! (the OAuth 2.0 JWT bearer grant, RFC 7523).
//!
//! The endpoint comes from the service-account file, so a test file can point it at a local
//! server; it has its own HTTP client because it is another origin than the FCM API.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fpush_http::HttpClient;
use http::{HeaderValue, Method, Request, StatusCode};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::jwt::AssertionSigner;
use crate::service_account::ServiceAccount;
use crate::token_cache::{TokenError, TokenGrant, MAX_LIFETIME};

/// Assumed lifetime when the endpoint grants a token without `expires_in` (Google always sends
/// it); short, so such a token is refreshed early rather than sent after it expired.
const LIFETIME_WHEN_UNSAID: Duration = Duration::from_secs(300);

/// The longest error text kept from a token endpoint's answer.
const MAX_ERROR_TEXT: usize = 200;

const GRANT_TYPE: &str = "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer";

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default, deserialize_with = "expires_in")]
    expires_in: Option<Duration>,
    #[serde(default)]
    token_type: Option<String>,
}

/// `expires_in` as token endpoints send it. RFC 6749 says a number of seconds; some endpoints
/// and proxies send a float (`3599.0`) or a decimal string (`"3599"`), and refusing those would
/// leave the module without a token. A fraction is cut (a token renewed a moment early costs
/// nothing) and a lifetime past [`MAX_LIFETIME`] is clamped to it. Anything else is refused
/// without quoting it: the answer it came in carries the access token.
fn expires_in<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    let seconds = match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(number)) => number.as_f64(),
        Some(Value::String(text)) => decimal(&text),
        Some(_) => None,
    };
    match seconds.filter(|seconds| seconds.is_finite() && *seconds >= 0.0) {
        // Within 0..=MAX_LIFETIME the cast is exact up to the cut fraction.
        Some(seconds) => Ok(Some(Duration::from_secs(
            seconds.min(MAX_LIFETIME.as_secs_f64()) as u64,
        ))),
        None => Err(serde::de::Error::custom(
            "expires_in is not a number of seconds",
        )),
    }
}

/// The value of a decimal string (`"3599"`, `"3599.5"`): digits with at most one `.` between
/// them; signs, exponents, `inf` and `NaN`, which Rust's float parser also takes, are refused.
fn decimal(text: &str) -> Option<f64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, "0"));
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    (digits(whole) && digits(fraction))
        .then(|| text.parse().ok())
        .flatten()
}

#[derive(Deserialize)]
struct TokenErrorResponse {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// Fetches access tokens for one service account.
pub(crate) struct TokenEndpoint {
    client: HttpClient,
    account: ServiceAccount,
}

impl TokenEndpoint {
    pub fn new(client: HttpClient, account: ServiceAccount) -> Self {
        Self { client, account }
    }

    pub fn account(&self) -> &ServiceAccount {
        &self.account
    }

    /// One token request.
    pub async fn fetch(&self) -> Result<TokenGrant, TokenError> {
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let signer = AssertionSigner {
            key: &self.account.key,
            key_id: self.account.key_id.as_deref(),
            client_email: &self.account.client_email,
            token_uri: &self.account.token_uri,
        };
        let assertion = signer
            .sign(now_unix)
            .map_err(|e| TokenError::Refused(e.to_string()))?;
        let body = format!("grant_type={GRANT_TYPE}&assertion={assertion}");
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.account.token_url.path.as_str())
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            .body(Bytes::from(body))
            .map_err(|e| TokenError::Refused(format!("cannot build the token request: {e}")))?;

        let response = self.client.send(request).await.map_err(|e| {
            TokenError::Unavailable(format!("{} did not answer: {e}", self.account.token_uri))
        })?;
        interpret(response.status, &response.body)
    }
}

/// What a token endpoint's answer means.
pub(crate) fn interpret(status: StatusCode, body: &[u8]) -> Result<TokenGrant, TokenError> {
    if status.is_success() {
        let granted: TokenResponse = serde_json::from_slice(body).map_err(|e| {
            TokenError::Unavailable(format!("token endpoint sent an unreadable grant: {e}"))
        })?;
        if let Some(kind) = &granted.token_type {
            if !kind.eq_ignore_ascii_case("bearer") {
                let kind: String = kind.chars().take(MAX_ERROR_TEXT).collect();
                return Err(TokenError::Unavailable(format!(
                    "token endpoint granted a {kind:?} token, not a bearer token"
                )));
            }
        }
        if granted.access_token.trim().is_empty() {
            // Sent as `Bearer `, it would read as FCM refusing our credentials.
            return Err(TokenError::Unavailable(
                "token endpoint granted an empty access token".to_string(),
            ));
        }
        let mut bearer = HeaderValue::from_str(&format!("Bearer {}", granted.access_token))
            .map_err(|_| {
                TokenError::Unavailable(
                    "token endpoint granted a token that cannot be sent in a header".to_string(),
                )
            })?;
        bearer.set_sensitive(true);
        let lifetime = granted.expires_in.unwrap_or(LIFETIME_WHEN_UNSAID);
        return Ok(TokenGrant { bearer, lifetime });
    }
    let detail = match serde_json::from_slice::<TokenErrorResponse>(body) {
        Ok(e) => match e.error_description {
            Some(description) => format!("{}: {description}", e.error),
            None => e.error,
        },
        Err(_) => String::from_utf8_lossy(body).trim().to_string(),
    };
    let detail: String = detail.chars().take(MAX_ERROR_TEXT).collect();
    let text = format!("token endpoint answered {} {detail}", status.as_u16());
    // 4xx means the assertion itself was refused (bad signature, deleted key, wrong account);
    // throttling, timeouts and server errors pass.
    if status.is_client_error()
        && status != StatusCode::TOO_MANY_REQUESTS
        && status != StatusCode::REQUEST_TIMEOUT
    {
        Err(TokenError::Refused(text))
    } else {
        Err(TokenError::Unavailable(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_becomes_a_sensitive_bearer_header() {
        let grant = interpret(
            StatusCode::OK,
            br#"{"access_token":"ya29.abc","expires_in":3599,"token_type":"Bearer"}"#,
        )
        .unwrap();
        assert_eq!(grant.bearer, "Bearer ya29.abc");
        assert!(grant.bearer.is_sensitive());
        assert_eq!(grant.lifetime, Duration::from_secs(3599));
    }

    #[test]
    fn a_grant_without_lifetime_is_kept_briefly() {
        let grant = interpret(StatusCode::OK, br#"{"access_token":"t"}"#).unwrap();
        assert_eq!(grant.lifetime, LIFETIME_WHEN_UNSAID);
    }

    #[test]
    fn a_lifetime_as_a_float_or_a_decimal_string_is_read_and_clamped() {
        let lifetime = |expires_in: &str| {
            let body = format!(r#"{{"access_token":"t","expires_in":{expires_in}}}"#);
            interpret(StatusCode::OK, body.as_bytes()).map(|grant| grant.lifetime)
        };
        let secs = Duration::from_secs;
        assert_eq!(lifetime("3599.0"), Ok(secs(3599)));
        assert_eq!(lifetime("3599.9"), Ok(secs(3599)));
        assert_eq!(lifetime(r#""3599""#), Ok(secs(3599)));
        assert_eq!(lifetime(r#""3599.5""#), Ok(secs(3599)));
        assert_eq!(lifetime("0"), Ok(secs(0)));
        assert_eq!(lifetime("null"), Ok(LIFETIME_WHEN_UNSAID));
        assert_eq!(lifetime("1e300"), Ok(MAX_LIFETIME));
        assert_eq!(lifetime(r#""99999999999999999999999""#), Ok(MAX_LIFETIME));
        assert_eq!(lifetime("18446744073709551615"), Ok(MAX_LIFETIME));
    }

    #[test]
    fn a_lifetime_that_is_no_number_of_seconds_is_refused_without_quoting_the_grant() {
        for expires_in in [
            "-1",
            "-0.5",
            r#""-5""#,
            r#""3599s""#,
            r#"" 3599""#,
            r#""1e3""#,
            r#""inf""#,
            r#""NaN""#,
            r#""""#,
            r#"".5""#,
            "true",
            "[3599]",
            r#"{"s":3599}"#,
        ] {
            let body = format!(r#"{{"access_token":"ya29.SECRET","expires_in":{expires_in}}}"#);
            let Err(TokenError::Unavailable(text)) = interpret(StatusCode::OK, body.as_bytes())
            else {
                panic!("{expires_in}: expected Unavailable");
            };
            assert!(text.contains("expires_in"), "{expires_in}: {text}");
            assert!(!text.contains("SECRET"), "{expires_in}: {text}");
        }
    }

    #[test]
    fn unusable_grants_are_unavailable_not_refused() {
        for body in [
            &b"<html>"[..],
            br#"{"token_type":"Bearer"}"#,
            br#"{"access_token":"a\nb"}"#,
            br#"{"access_token":"t","token_type":"MAC"}"#,
        ] {
            assert!(matches!(
                interpret(StatusCode::OK, body),
                Err(TokenError::Unavailable(_))
            ));
        }
    }

    #[test]
    fn an_empty_access_token_is_unavailable_not_a_grant() {
        for body in [
            &br#"{"access_token":"","expires_in":3599}"#[..],
            br#"{"access_token":"   ","expires_in":3599}"#,
        ] {
            assert!(matches!(
                interpret(StatusCode::OK, body),
                Err(TokenError::Unavailable(_))
            ));
        }
    }

    #[test]
    fn a_long_token_type_is_cut_short_in_the_error_text() {
        let body = format!(
            r#"{{"access_token":"t","token_type":"{}"}}"#,
            "X".repeat(100_000)
        );
        let Err(TokenError::Unavailable(text)) = interpret(StatusCode::OK, body.as_bytes()) else {
            panic!("expected Unavailable");
        };
        assert!(text.len() < 1000, "{} bytes", text.len());
    }

    #[test]
    fn a_refused_assertion_is_reported_with_googles_reason() {
        let err = interpret(
            StatusCode::BAD_REQUEST,
            br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
        )
        .unwrap_err();
        assert_eq!(
            err,
            TokenError::Refused(
                "token endpoint answered 400 invalid_grant: Invalid JWT Signature.".into()
            )
        );
    }

    #[test]
    fn server_errors_and_throttling_are_unavailable() {
        for status in [
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::TOO_MANY_REQUESTS,
        ] {
            assert!(matches!(
                interpret(status, b"busy"),
                Err(TokenError::Unavailable(_))
            ));
        }
    }
}
