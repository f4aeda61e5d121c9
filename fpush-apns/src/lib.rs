//! The APNS push module: delivers pushes through Apple's HTTP/2 provider API.
//!
//! One [`ApnsPush`] is one configured app. It owns one [`fpush_http::HttpClient`] (one
//! multiplexed HTTP/2 connection to Apple shared by every concurrent push), its credentials
//! (a `.p12` client certificate, or a `.p8` key that signs the provider token, see [`auth`]),
//! and the fixed parts of every request (topic, push type, priority, payload skeleton).
//!
//! A push is retried at most once, and only when Apple cannot have accepted it (a 5xx answer, a
//! connection that failed before the request went out, a stream refused or cut by GOAWAY before
//! processing): a retry after a timeout or a reset could notify the user twice. A refused
//! provider token is renewed (when Apple allows it) and the push retried once more.

pub mod auth;
mod clock;
pub mod config;
pub mod payload;
pub mod response;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use fpush_http::{HttpClient, HttpConfig, HttpError};
use fpush_traits::{
    token_prefix, DeadTokenReason, Delivered, PushError, PushNotification, PushTrait,
};
use http::header::{HeaderName, AUTHORIZATION, CONTENT_TYPE};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Method, Uri};
use tokio::time::Instant;

use crate::auth::{load_p12, TokenSigner};
pub use crate::auth::{MIN_RENEW_INTERVAL, RENEW_AFTER};
pub use crate::clock::unix_now;
pub use crate::config::{ApnsConfig, ApnsEnvironment, ApnsPushType};
use crate::payload::PayloadBuilder;
use crate::response::{judge, Verdict};

/// Pause before the one retry a push may get.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// Misconfiguration is logged at error level at most this often per module.
const LOUD_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Apple's limit on `apns-collapse-id`.
const MAX_COLLAPSE_ID: usize = 64;
/// Device tokens are 64 hex digits today; leave room, but keep them sane for a URL path.
const MAX_TOKEN_LEN: usize = 200;
/// Where a push for one device token goes; the token follows.
const DEVICE_PATH: &str = "/3/device/";
const APNS_TOPIC: HeaderName = HeaderName::from_static("apns-topic");
const APNS_PUSH_TYPE: HeaderName = HeaderName::from_static("apns-push-type");
const APNS_PRIORITY: HeaderName = HeaderName::from_static("apns-priority");
const APNS_EXPIRATION: HeaderName = HeaderName::from_static("apns-expiration");
const APNS_COLLAPSE_ID: HeaderName = HeaderName::from_static("apns-collapse-id");

/// Why a module could not be built. Every variant names the module, and the file when one is
/// at fault.
#[derive(Debug, thiserror::Error)]
pub enum ApnsError {
    #[error("push module {module:?}: {}: {reason}", path.display())]
    Credential {
        module: String,
        path: PathBuf,
        reason: String,
    },
    #[error("push module {module:?}: {reason}")]
    Config { module: String, reason: String },
    #[error("push module {module:?}: {source}")]
    Http {
        module: String,
        #[source]
        source: HttpError,
    },
}

enum Auth {
    Certificate,
    Token(Box<TokenSigner>),
}

/// One APNS app: credentials, connection and request template.
pub struct ApnsPush {
    module_id: String,
    client: HttpClient,
    auth: Auth,
    /// The headers every request of this module carries, built once: a request starts from a
    /// clone (reference-counted values) instead of hashing each name in again.
    headers: HeaderMap,
    expiration: Duration,
    /// The last `apns-expiration` value and the unix second it was computed for: thousands
    /// of pushes a second share one.
    expiration_header: Mutex<(u64, HeaderValue)>,
    payload: PayloadBuilder,
    last_loud_log: Mutex<Option<Instant>>,
}

impl ApnsPush {
    /// Loads and checks the credential files (this is what `fpush --check` relies on); no
    /// network, no runtime needed. Errors name the module id and the file.
    pub fn new(module_id: &str, cfg: ApnsConfig) -> Result<Self, ApnsError> {
        let config_error = |reason: String| ApnsError::Config {
            module: module_id.to_string(),
            reason,
        };
        let header = |key: &str, value: &str| {
            HeaderValue::from_str(value)
                .map_err(|_| config_error(format!("{key} {value:?} is not a valid header value")))
        };
        if cfg.topic.trim().is_empty() {
            return Err(config_error("topic (the app's bundle id) is empty".into()));
        }
        let topic = header("topic", &cfg.topic)?;
        let priority = match (cfg.priority, cfg.push_type) {
            (None, ApnsPushType::Alert) => 10,
            (None, ApnsPushType::Background) => 5,
            (Some(10), ApnsPushType::Background) => {
                return Err(config_error(
                    "background pushes must use priority 5 or 1".into(),
                ))
            }
            (Some(p @ (1 | 5 | 10)), _) => p,
            (Some(p), _) => return Err(config_error(format!("priority {p} is not 10, 5 or 1"))),
        };
        let mut headers = HeaderMap::with_capacity(8);
        headers.insert(APNS_TOPIC, topic);
        headers.insert(
            APNS_PUSH_TYPE,
            HeaderValue::from_static(cfg.push_type.header_value()),
        );
        headers.insert(APNS_PRIORITY, HeaderValue::from(u16::from(priority)));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        match &cfg.collapse_id {
            Some(id) if id.len() > MAX_COLLAPSE_ID => {
                return Err(config_error(format!(
                    "collapseId is over {MAX_COLLAPSE_ID} bytes"
                )))
            }
            Some(id) => {
                headers.insert(APNS_COLLAPSE_ID, header("collapseId", id)?);
            }
            None => {}
        }
        let payload = PayloadBuilder::new(&cfg).map_err(config_error)?;

        let mut http = HttpConfig {
            ca_file: cfg.ca_file_path.clone(),
            client_identity: None,
            connect_timeout: cfg.request_timeout,
            request_timeout: cfg.request_timeout,
        };
        let (auth, credential_file) = match (&cfg.cert_file_path, &cfg.key_file_path) {
            (Some(cert), None) => {
                http.client_identity = Some(load_p12(module_id, cert, &cfg.cert_password)?);
                (Auth::Certificate, Some(cert.clone()))
            }
            (None, Some(key)) => {
                let (Some(key_id), Some(team_id)) = (&cfg.key_id, &cfg.team_id) else {
                    return Err(config_error(
                        "token auth (keyFilePath) needs keyId and teamId".into(),
                    ));
                };
                let signer = TokenSigner::load(module_id, key, key_id, team_id)?;
                (Auth::Token(Box::new(signer)), None)
            }
            (Some(_), Some(_)) => {
                return Err(config_error(
                    "set either certFilePath or keyFilePath, not both".into(),
                ))
            }
            (None, None) => return Err(config_error(
                "no credentials: set certFilePath (+ certPassword) or keyFilePath + keyId + teamId"
                    .into(),
            )),
        };
        let client = HttpClient::new(cfg.origin(), http).map_err(|source| {
            match (source, credential_file) {
                // rustls refused the key from the .p12 (e.g. an algorithm it does not support).
                (HttpError::TlsConfig(e), Some(path)) => ApnsError::Credential {
                    module: module_id.to_string(),
                    path,
                    reason: format!("the certificate or key is unusable for TLS: {e}"),
                },
                (source, _) => ApnsError::Http {
                    module: module_id.to_string(),
                    source,
                },
            }
        })?;
        Ok(Self {
            module_id: module_id.to_string(),
            client,
            auth,
            headers,
            expiration: cfg.expiration,
            expiration_header: Mutex::new((0, HeaderValue::from_static("0"))),
            payload,
            last_loud_log: Mutex::new(None),
        })
    }

    /// The HTTP client (for connection counts in tests and metrics).
    pub fn http_client(&self) -> &HttpClient {
        &self.client
    }

    fn request(
        &self,
        token: &str,
        body: Bytes,
        bearer: Option<&HeaderValue>,
    ) -> Result<http::Request<Bytes>, PushError> {
        let mut path = String::with_capacity(DEVICE_PATH.len() + token.len());
        path.push_str(DEVICE_PATH);
        path.push_str(token);
        // Takes the string without copying it; `plausible_token` already kept the path valid.
        let path = PathAndQuery::try_from(path)
            .map_err(|e| PushError::Transient(format!("cannot build the request: {e}")))?;
        let mut request = http::Request::new(body);
        *request.method_mut() = Method::POST;
        *request.uri_mut() = Uri::from(path);
        let headers = request.headers_mut();
        *headers = self.headers.clone();
        headers.insert(APNS_EXPIRATION, self.expiration_value());
        if let Some(bearer) = bearer {
            headers.insert(AUTHORIZATION, bearer.clone());
        }
        Ok(request)
    }

    /// `apns-expiration`: unix seconds after which Apple drops an undelivered push (`0`: try
    /// once). Formatted once per second, not once per push.
    fn expiration_value(&self) -> HeaderValue {
        if self.expiration.is_zero() {
            return HeaderValue::from_static("0");
        }
        let expiration = unix_now() + self.expiration.as_secs();
        match self.expiration_header.lock() {
            Ok(mut cached) => {
                if cached.0 != expiration {
                    *cached = (expiration, HeaderValue::from(expiration));
                }
                cached.1.clone()
            }
            Err(_) => HeaderValue::from(expiration),
        }
    }

    /// Logs at error level at most once per [`LOUD_LOG_INTERVAL`], and returns the error.
    fn misconfigured(&self, reason: String) -> PushError {
        let loud = match self.last_loud_log.lock() {
            Ok(mut last) => {
                let due = last.is_none_or(|at| at.elapsed() >= LOUD_LOG_INTERVAL);
                if due {
                    *last = Some(Instant::now());
                }
                due
            }
            Err(_) => true,
        };
        if loud {
            log::error!(
                "push module {:?} is misconfigured: {reason}",
                self.module_id
            );
        } else {
            log::debug!(
                "push module {:?} is misconfigured: {reason}",
                self.module_id
            );
        }
        PushError::Misconfigured(reason)
    }
}

/// Tokens go into the URL path: anything but letters, digits, `-`, `_` and `.` cannot be a
/// device token, so Apple is not asked.
fn plausible_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= MAX_TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[async_trait]
impl PushTrait for ApnsPush {
    async fn send(&self, notification: &PushNotification) -> Result<Delivered, PushError> {
        let token = notification.token.as_str();
        let prefix = token_prefix(token);
        if !plausible_token(token) {
            return Err(PushError::TokenInvalid(DeadTokenReason::BadToken));
        }
        let body = self.payload.build(&notification.summary);
        let mut retried = false;
        let mut renewed = false;
        loop {
            let signed = match &self.auth {
                Auth::Token(signer) => Some(signer.current().map_err(|e| self.misconfigured(e))?),
                Auth::Certificate => None,
            };
            let request = self.request(token, body.clone(), signed.as_ref().map(|s| &s.bearer))?;
            let failure = match self.client.send(request).await {
                Ok(answer) => match judge(&answer) {
                    Verdict::Delivered(delivered) => return Ok(delivered),
                    Verdict::Final(error) => {
                        log::debug!("APNS push to {prefix}… in {:?}: {error}", self.module_id);
                        return Err(error);
                    }
                    Verdict::Misconfigured(reason) => return Err(self.misconfigured(reason)),
                    Verdict::TokenRefused(reason) => {
                        let renewable = match (&self.auth, &signed) {
                            (Auth::Token(signer), Some(signed)) => signer.rejected(signed),
                            _ => false,
                        };
                        if renewable && !renewed {
                            renewed = true;
                            log::info!(
                                "APNS refused the provider token of {:?}; renewing it",
                                self.module_id
                            );
                            continue;
                        }
                        return Err(self.misconfigured(reason));
                    }
                    Verdict::Retryable(reason) => PushError::Transient(reason),
                },
                Err(e) if e.is_timeout() => return Err(PushError::Timeout),
                Err(e) if e.not_sent() => {
                    if e.is_tls() && retried {
                        return Err(self.misconfigured(e.to_string()));
                    }
                    PushError::Transient(e.to_string())
                }
                // Failed after the request went out: Apple may have delivered it.
                Err(e) => return Err(PushError::Transient(e.to_string())),
            };
            if retried {
                return Err(failure);
            }
            retried = true;
            log::debug!(
                "APNS push to {prefix}… in {:?} failed ({failure}); retrying once",
                self.module_id
            );
            tokio::time::sleep(RETRY_BACKOFF).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_before_they_reach_a_url() {
        assert!(plausible_token("0123abcdef"));
        assert!(plausible_token("dead-token_1.x"));
        assert!(!plausible_token(""));
        assert!(!plausible_token("a/b"));
        assert!(!plausible_token("a?b"));
        assert!(!plausible_token(&"a".repeat(MAX_TOKEN_LEN + 1)));
    }
}
