//! The FCM push module: delivers pushes to Android apps through the Firebase Cloud Messaging
//! HTTP v1 API.
//!
//! A module is one Firebase project, authenticated by its service-account file:
//!
//! 1. at start-up [`FcmPush::new`] reads and checks that file (no network);
//! 2. each push takes an access token from a shared cache (refreshed through the file's
//!    `token_uri` by one push at a time, see `token_cache`);
//! 3. posts a high-priority data message to `{endpoint}/v1/projects/{project_id}/messages:send`
//!    over one shared HTTP/2 connection;
//! 4. turns Google's answer into a [`PushError`] that says what the XMPP server should do.
//!
//! Retries are few and safe: one more attempt when Google cannot have accepted the message (a
//! 5xx answer, a refused stream, a failed connect), one fresh token after a 401/403, never a
//! second send after a timeout or a reset once the request was out, so no device is pushed
//! twice for one IQ.
//!
//! The legacy FCM API (and the `fcm` crate speaking it) was shut down in 2024; only v1 exists
//! here.

mod alarm;
mod config;
mod error;
mod jwt;
mod message;
mod oauth;
mod response;
mod service_account;
mod token_cache;
mod url;

use std::time::Duration;

use fpush_http::{HttpClient, HttpConfig};
use fpush_traits::{async_trait, token_prefix, Delivered, PushError, PushNotification, PushTrait};
use http::{Method, Request};

pub use config::{FcmConfig, DEFAULT_ENDPOINT, DEFAULT_REQUEST_TIMEOUT, DEFAULT_TTL, MAX_TTL};
pub use error::FcmError;

use alarm::Alarm;
use message::{is_reserved_data_key, MessageTemplate};
use oauth::TokenEndpoint;
use response::{classify, Verdict};
use service_account::ServiceAccount;
use token_cache::{TokenCache, TokenError};

/// Pause before the one retry of a push Google did not accept (5xx, refused stream, failed
/// connect): long enough for a restarted frontend or a new connection, short enough that the
/// XMPP server still gets its answer promptly.
pub const RETRY_BACKOFF: Duration = Duration::from_millis(250);

/// Longest time spent connecting (TCP, TLS, HTTP/2 handshake) before giving up on a connection.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One configured FCM app.
pub struct FcmPush {
    module_id: String,
    fcm: HttpClient,
    /// `…/v1/projects/{project_id}/messages:send`, relative to the FCM origin.
    send_path: String,
    oauth: TokenEndpoint,
    tokens: TokenCache,
    template: MessageTemplate,
    /// Rate-limits the `error` lines about operator mistakes.
    alarm: Alarm,
    /// Rate-limits the `warn` lines about provider trouble (5xx, timeouts, OAuth down), which
    /// come for every push while they last.
    trouble: Alarm,
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
        let setting = |key: &'static str, reason: String| FcmError::InvalidSetting {
            module: module_id.to_string(),
            key,
            reason,
        };
        if cfg.ttl > MAX_TTL {
            return Err(setting(
                "ttl",
                format!("is longer than the 4 weeks FCM accepts ({:?})", cfg.ttl),
            ));
        }
        if cfg.request_timeout.is_zero() {
            return Err(setting(
                "requestTimeout",
                "must be longer than 0s".to_string(),
            ));
        }
        if let Some(key) = cfg.additional_data.keys().find(|k| is_reserved_data_key(k)) {
            return Err(setting(
                "additionalData",
                format!("uses the key {key:?}, which FCM reserves (from, message_type, notification, google*, gcm*)"),
            ));
        }
        let endpoint =
            url::parse_https_url(&cfg.endpoint).map_err(|reason| setting("endpoint", reason))?;
        let account = ServiceAccount::load(module_id, &cfg.fcm_secret_path)?;

        let http_config = || HttpConfig {
            ca_file: cfg.ca_file_path.clone(),
            client_identity: None,
            connect_timeout: cfg.request_timeout.min(MAX_CONNECT_TIMEOUT),
            request_timeout: cfg.request_timeout,
        };
        let client = |origin: &str| {
            HttpClient::new(origin, http_config()).map_err(|source| FcmError::Http {
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

        Ok(Self {
            module_id: module_id.to_string(),
            fcm,
            send_path,
            oauth: TokenEndpoint::new(oauth_client, account),
            tokens: TokenCache::default(),
            template: MessageTemplate::new(
                cfg.ttl,
                cfg.collapse_key,
                cfg.additional_data,
                cfg.data_from_summary,
            ),
            alarm: Alarm::default(),
            trouble: Alarm::default(),
        })
    }

    /// The Firebase project this module sends for.
    pub fn project_id(&self) -> &str {
        &self.oauth.account().project_id
    }

    /// Logs an operator mistake loudly (rate-limited) and turns it into the push's error.
    fn misconfigured(&self, reason: String) -> PushError {
        if self.alarm.may_sound() {
            log::error!(
                "push module {:?} (FCM project {:?}) is misconfigured, pushes are answered wait: {reason}",
                self.module_id,
                self.project_id()
            );
        }
        PushError::Misconfigured(reason)
    }

    /// Logs provider trouble: a `warn` line at most once a minute, `debug` otherwise.
    fn trouble(&self, text: std::fmt::Arguments<'_>) {
        if self.trouble.may_sound() {
            log::warn!(
                "push module {:?}: {text} (repeats within a minute are logged at debug level)",
                self.module_id
            );
        } else {
            log::debug!("push module {:?}: {text}", self.module_id);
        }
    }

    fn token_failure(&self, error: TokenError) -> PushError {
        match error {
            TokenError::Unavailable(reason) => {
                self.trouble(format_args!("{reason}"));
                PushError::Transient(format!("OAuth token endpoint unavailable: {reason}"))
            }
            TokenError::Refused(reason) => self.misconfigured(format!(
                "the service account {:?} was refused an access token: {reason}",
                self.oauth.account().client_email
            )),
        }
    }
}

#[async_trait]
impl PushTrait for FcmPush {
    async fn send(&self, notification: &PushNotification) -> Result<Delivered, PushError> {
        let token_hint = token_prefix(&notification.token);
        let body = self.template.body(notification);
        let mut retried = false;
        let mut reauthenticated = false;
        loop {
            let access = self
                .tokens
                .get(|| self.oauth.fetch())
                .await
                .map_err(|e| self.token_failure(e))?;
            let request = Request::builder()
                .method(Method::POST)
                .uri(self.send_path.as_str())
                .header(http::header::AUTHORIZATION, access.bearer.clone())
                .header(
                    http::header::CONTENT_TYPE,
                    "application/json; charset=UTF-8",
                )
                .body(body.clone())
                .map_err(|e| self.misconfigured(format!("cannot build the FCM request: {e}")))?;

            let verdict = match self.fcm.send(request).await {
                Ok(answer) => classify(answer.status, &answer.headers, &answer.body),
                Err(e) if e.is_timeout() => {
                    self.trouble(format_args!("FCM timed out for {token_hint}…"));
                    return Err(PushError::Timeout);
                }
                Err(e) if e.not_sent() => Verdict::Retry(format!("FCM request not sent: {e}")),
                Err(e) => {
                    self.trouble(format_args!("FCM request for {token_hint}… failed: {e}"));
                    return Err(PushError::Transient(format!("FCM request failed: {e}")));
                }
            };

            match verdict {
                Verdict::Delivered(delivered) => {
                    log::debug!("push module {:?}: FCM accepted push for {token_hint}…", self.module_id);
                    return Ok(delivered);
                }
                Verdict::Failed(PushError::Misconfigured(reason)) => {
                    return Err(self.misconfigured(reason))
                }
                Verdict::Failed(error @ PushError::ProviderThrottled { .. }) => {
                    self.trouble(format_args!("push for {token_hint}…: {error}"));
                    return Err(error);
                }
                Verdict::Failed(error) => {
                    log::debug!("push module {:?}: push for {token_hint}…: {error}", self.module_id);
                    return Err(error);
                }
                Verdict::Retry(reason) if !retried => {
                    log::debug!(
                        "push module {:?}: {reason}; retrying push for {token_hint}… once",
                        self.module_id
                    );
                    retried = true;
                    tokio::time::sleep(RETRY_BACKOFF).await;
                }
                Verdict::Retry(reason) => {
                    self.trouble(format_args!("push for {token_hint}…: {reason}"));
                    return Err(PushError::Transient(reason));
                }
                Verdict::Reauthenticate(reason) if !reauthenticated => {
                    log::info!(
                        "push module {:?}: {reason}; fetching a new access token",
                        self.module_id
                    );
                    reauthenticated = true;
                    self.tokens.invalidate(&access);
                }
                Verdict::Reauthenticate(reason) => {
                    return Err(self.misconfigured(format!(
                        "{reason} (also with a fresh access token: check the service account's permissions and project)"
                    )))
                }
            }
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
