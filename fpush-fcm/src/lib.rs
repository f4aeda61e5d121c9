//! The FCM push module: delivers pushes to Android apps through the Firebase Cloud Messaging
//! HTTP v1 API.
//!
//! A module is one Firebase project, authenticated by its service-account file:
//!
//! 1. at start-up [`FcmPush::new`] reads and checks that file (no network);
//! 2. each push whose token can be an FCM token (see `plausible`) takes an access token from a
//!    cache shared by every module of the same file, so a reload keeps it (refreshed through
//!    the file's `token_uri` by one push at a time, see `token_cache`);
//! 3. posts a high-priority data message to `{endpoint}/v1/projects/{project_id}/messages:send`
//!    over the module's pool of HTTP/2 connections (opened on demand, up to `maxConnections`);
//! 4. turns Google's answer into a [`PushError`] that says what the XMPP server should do; a
//!    quota answer holds the device's token, or pauses the module when Google says the
//!    project's quota is spent (see `quota`).
//!
//! Retries are few and safe: one more attempt when Google cannot have accepted the message (a
//! 5xx answer, a refused stream, a failed connect), one fresh token after a 401/403 that
//! refuses our access token (not after `THIRD_PARTY_AUTH_ERROR`: the project's APNs or Web Push
//! credentials), never a second send after a timeout or a reset once the request was out, so no
//! device is pushed twice for one IQ.
//!
//! The legacy FCM API (and the `fcm` crate speaking it) was shut down in 2024; only v1 exists
//! here.

mod config;
mod error;
mod jwt;
mod message;
mod oauth;
mod platform;
mod plausible;
mod quota;
mod response;
mod service_account;
mod shared_tokens;
mod token_cache;
mod url;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fpush_http::{
    HttpClient, HttpConfig, LoudLog, ProviderAnswer, PushLabel, RetryPolicy, ThrottleKey, Tries,
};
use fpush_traits::{
    async_trait, DeadTokenReason, Delivered, ProviderSnapshot, PushError, PushNotification,
    PushTrait, Rejection,
};
use http::{Method, Request};

pub use config::{FcmConfig, DEFAULT_ENDPOINT, DEFAULT_REQUEST_TIMEOUT, DEFAULT_TTL, MAX_TTL};
pub use error::FcmError;
pub use platform::PLATFORM;

use message::{data_bytes, is_reserved_data_key, MessageTemplate, MAX_DATA_BYTES};
use oauth::TokenEndpoint;
use plausible::plausible_token;
use quota::QuotaScope;
use response::classify;
use service_account::ServiceAccount;
use token_cache::{TokenCache, TokenError};

/// Pause before the one retry of a push Google did not accept (5xx, refused stream, failed
/// connect): long enough for a restarted frontend or a new connection, short enough that the
/// XMPP server still gets its answer promptly.
pub const RETRY_BACKOFF: Duration = Duration::from_millis(250);

const RETRY: RetryPolicy = RetryPolicy {
    backoff: RETRY_BACKOFF,
};

/// Longest time spent connecting (TCP, TLS, HTTP/2 handshake) before giving up on a connection.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One configured FCM app.
pub struct FcmPush {
    module_id: String,
    fcm: HttpClient,
    /// `…/v1/projects/{project_id}/messages:send`, relative to the FCM origin.
    send_path: String,
    oauth: TokenEndpoint,
    /// Shared with every module of the same service-account file (see `shared_tokens`).
    tokens: Arc<TokenCache>,
    template: MessageTemplate,
    loud: LoudLog,
}

impl std::fmt::Debug for FcmPush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FcmPush")
            .field("module_id", &self.module_id)
            .field("fcm", &self.fcm)
            .field("send_path", &self.send_path)
            .field("account", self.oauth.account())
            .finish_non_exhaustive()
    }
}

impl FcmPush {
    /// Reads and checks the service-account file and the settings (what `fpush --check` relies
    /// on): a missing file, invalid JSON, a missing `project_id`/`private_key`/`client_email`/
    /// `token_uri`, a key that is not RSA PEM or an unusable setting is an error naming the
    /// module, the file and the field. No network, no runtime needed.
    pub fn new(module_id: &str, cfg: FcmConfig) -> Result<Self, FcmError> {
        check_settings(module_id, &cfg)?;
        let endpoint = url::parse_https_url(&cfg.endpoint)
            .map_err(|reason| FcmError::setting(module_id, "endpoint", reason))?;
        let account = ServiceAccount::load(module_id, &cfg.fcm_secret_path)?;
        let client = |origin: &str| {
            let http = HttpConfig {
                ca_file: cfg.ca_file_path.clone(),
                client_identity: None,
                connect_timeout: cfg.request_timeout.min(MAX_CONNECT_TIMEOUT),
                request_timeout: cfg.request_timeout,
                max_connections: cfg.max_connections,
                ..HttpConfig::default()
            };
            HttpClient::new(origin, http).map_err(|source| FcmError::Http {
                module: module_id.to_string(),
                origin: origin.to_string(),
                source,
            })
        };
        let fcm = client(&endpoint.origin)?;
        let oauth_client = if account.token_url.origin == endpoint.origin {
            fcm.clone()
        } else {
            client(&account.token_url.origin)?
        };
        let prefix = endpoint.path.trim_end_matches('/');
        let send_path = format!("{prefix}/v1/projects/{}/messages:send", account.project_id);
        let subject = format!(
            "push module {module_id:?} (FCM project {:?})",
            account.project_id
        );
        let tokens = shared_tokens::cache_for(&account.fingerprint);
        Ok(Self {
            module_id: module_id.to_string(),
            fcm,
            send_path,
            oauth: TokenEndpoint::new(oauth_client, account),
            tokens,
            template: MessageTemplate::new(
                cfg.ttl,
                cfg.collapse_key,
                cfg.additional_data,
                cfg.data_from_summary,
            ),
            loud: LoudLog::new(subject),
        })
    }

    /// The Firebase project this module sends for.
    pub fn project_id(&self) -> &str {
        &self.oauth.account().project_id
    }

    /// One `messages:send` with the current access token, and what its answer means. A refused
    /// access token is dropped from the cache once, before the policy's one more try.
    async fn attempt(&self, body: &Bytes, target: ThrottleKey, tries: Tries) -> ProviderAnswer {
        let access = match self.tokens.get(|| self.oauth.fetch()).await {
            Ok(access) => access,
            Err(error) => return ProviderAnswer::Failed(self.token_failure(error)),
        };
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.send_path.as_str())
            .header(http::header::AUTHORIZATION, access.bearer.clone())
            .header(
                http::header::CONTENT_TYPE,
                "application/json; charset=UTF-8",
            )
            .body(body.clone());
        let mut request = match request {
            Ok(request) => request,
            Err(e) => {
                let reason = format!("cannot build the FCM request: {e}");
                return ProviderAnswer::Failed(PushError::Misconfigured(reason));
            }
        };
        // Every message goes to one path: the token tells the throttled targets apart.
        request.extensions_mut().insert(target);
        match self.fcm.send(request).await {
            Ok(answer) => match classify(answer.status, &answer.headers, &answer.body) {
                ProviderAnswer::Renew(reason) => {
                    if tries.renewed || self.tokens.invalidate(&access) {
                        ProviderAnswer::Renew(reason)
                    } else {
                        // A token fetched after the last refusal was refused too.
                        let reason = format!("{reason} (also with a fresh access token)");
                        ProviderAnswer::Failed(PushError::Misconfigured(reason))
                    }
                }
                ProviderAnswer::Failed(PushError::ProviderThrottled { retry_after })
                    if quota::scope(&answer.body) == QuotaScope::Project =>
                {
                    let pause = self.fcm.pause(retry_after, "FCM project quota exceeded");
                    ProviderAnswer::Failed(PushError::ProviderPaused { retry_after: pause })
                }
                judged => judged,
            },
            Err(e) => ProviderAnswer::from_http_error(&e),
        }
    }

    fn token_failure(&self, error: TokenError) -> PushError {
        match error {
            TokenError::Unavailable(reason) => {
                PushError::Transient(format!("OAuth token endpoint unavailable: {reason}"))
            }
            TokenError::Refused(reason) => PushError::Misconfigured(format!(
                "the service account {:?} was refused an access token: {reason}",
                self.oauth.account().client_email
            )),
        }
    }
}

/// The settings FCM would refuse for every push, refused at start-up instead.
fn check_settings(module_id: &str, cfg: &FcmConfig) -> Result<(), FcmError> {
    if cfg.ttl > MAX_TTL {
        let reason = format!("is longer than the 4 weeks FCM accepts ({:?})", cfg.ttl);
        return Err(FcmError::setting(module_id, "ttl", reason));
    }
    if cfg.request_timeout.is_zero() {
        let reason = "must be longer than 0s".to_string();
        return Err(FcmError::setting(module_id, "requestTimeout", reason));
    }
    if let Some(key) = cfg.additional_data.keys().find(|k| is_reserved_data_key(k)) {
        let reason = format!("uses the key {key:?}, which FCM reserves (from, message_type, notification, google*, gcm*)");
        return Err(FcmError::setting(module_id, "additionalData", reason));
    }
    let data = cfg.additional_data.iter();
    let size = data_bytes(data.map(|(key, value)| (key.as_str(), value.as_str())));
    if size > MAX_DATA_BYTES {
        let reason = format!(
            "is {size} bytes (keys and values), over the {MAX_DATA_BYTES} FCM takes in a message"
        );
        return Err(FcmError::setting(module_id, "additionalData", reason));
    }
    Ok(())
}

/// A message whose `data` (of `size` bytes) is over FCM's limit even with its summary values
/// cut: refused here, not sent for Google to refuse for any token with an `INVALID_ARGUMENT`
/// that would read as the module's misconfiguration.
fn too_large(size: usize) -> PushError {
    PushError::Rejected {
        reason: Rejection::TooLarge,
        detail: format!("the message's data is {size} bytes, over FCM's {MAX_DATA_BYTES}"),
    }
}

#[async_trait]
impl PushTrait for FcmPush {
    async fn send(&self, notification: &PushNotification) -> Result<Delivered, PushError> {
        if !plausible_token(&notification.token) {
            return Err(PushError::TokenInvalid(DeadTokenReason::Implausible));
        }
        let body = self.template.body(notification).map_err(too_large)?;
        let push = PushLabel {
            provider: "FCM",
            token: &notification.token,
        };
        let target = ThrottleKey::of(&notification.token);
        RETRY
            .run(&self.loud, push, |tries| self.attempt(&body, target, tries))
            .await
    }

    fn snapshot(&self) -> ProviderSnapshot {
        ProviderSnapshot {
            token_refresh_failures: self.tokens.failures(),
            pool: Some(self.fcm.gauges()),
            ..ProviderSnapshot::default()
        }
    }
}

/// Google's answers as the module reads them, for the fuzz targets in `fuzz/`; not part of the
/// API.
#[doc(hidden)]
pub mod fuzzing {
    use http::{HeaderMap, HeaderValue, StatusCode};

    /// What the module makes of a `messages:send` answer (the `Debug` text of its verdict);
    /// `None` when `status` is not an HTTP status.
    pub fn judge_send_answer(status: u16, retry_after: &[u8], body: &[u8]) -> Option<String> {
        let status = StatusCode::from_u16(status).ok()?;
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_bytes(retry_after) {
            headers.insert(http::header::RETRY_AFTER, value);
        }
        Some(format!(
            "{:?}",
            crate::response::classify(status, &headers, body)
        ))
    }

    /// What the module makes of a token endpoint's answer.
    pub fn judge_token_answer(status: u16, body: &[u8]) -> Option<String> {
        let status = StatusCode::from_u16(status).ok()?;
        Some(format!("{:?}", crate::oauth::interpret(status, body)))
    }
}
