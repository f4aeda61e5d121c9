//! Trading the service account's signed assertion for an access token at its `token_uri`
//! (the OAuth 2.0 JWT bearer grant, RFC 7523).
//!
//! The endpoint comes from the service-account file, so a test file can point it at a local
//! server; it has its own HTTP client because it is another origin than the FCM API.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use fpush_http::HttpClient;
use http::{HeaderValue, Method, Request, StatusCode};
use serde::Deserialize;

use crate::jwt::AssertionSigner;
use crate::service_account::ServiceAccount;
use crate::token_cache::{TokenError, TokenGrant};

/// Assumed lifetime when the endpoint grants a token without `expires_in` (Google always sends
/// it); short, so such a token is refreshed early rather than sent after it expired.
const LIFETIME_WHEN_UNSAID: Duration = Duration::from_secs(300);

/// The longest error text kept from a token endpoint's answer.
const MAX_ERROR_TEXT: usize = 200;

const GRANT_TYPE: &str = "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer";

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    token_type: Option<String>,
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
        let mut bearer = HeaderValue::from_str(&format!("Bearer {}", granted.access_token))
            .map_err(|_| {
                TokenError::Unavailable(
                    "token endpoint granted a token that cannot be sent in a header".to_string(),
                )
            })?;
        bearer.set_sensitive(true);
        let lifetime = granted
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(LIFETIME_WHEN_UNSAID);
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
