//! The Web Push client of the Push 2.0 relay: delivers a push2 notification's encrypted
//! payload to the subscription endpoint (the notification's token) as RFC 8030 asks, with the
//! VAPID authorization the user's server signed. The relay holds no key and reads nothing of
//! the payload.
//!
//! Only push services are ever called: the endpoint's origin must be in the configured list
//! ([`fence`]) and, unless listed exactly, resolve to public addresses only ([`origins`]). A
//! refused endpoint gets no request at all.

pub mod fence;
pub mod origins;
pub mod request;
pub mod response;

use std::path::PathBuf;
use std::time::Duration;

use fpush_http::LoudLog;
use fpush_traits::{async_trait, Delivered, PushError, PushNotification, PushTrait, Rejection};

pub use fence::{Fence, FenceError, DEFAULT_ORIGINS};
use origins::{ClientSettings, OriginError, Origins};

/// Default `TTL`: four weeks, the longest browsers' services keep a message.
pub const DEFAULT_TTL: Duration = Duration::from_secs(28 * 24 * 60 * 60);
/// Default cap on distinct origins held open.
pub const DEFAULT_MAX_ORIGINS: usize = 64;
/// Default cap on connections per origin.
pub const DEFAULT_CONNECTIONS_PER_ORIGIN: usize = 2;

/// What the client is made with (the core's `push2` settings).
#[derive(Debug, Clone)]
pub struct WebPushSettings {
    /// Where pushes may go (`push2.webPushOrigins`).
    pub origins: Vec<String>,
    pub ttl: Duration,
    /// An extra trusted CA (a test server's).
    pub ca_file: Option<PathBuf>,
    pub max_origins: usize,
    pub connections_per_origin: usize,
    pub request_timeout: Duration,
}

impl Default for WebPushSettings {
    fn default() -> Self {
        WebPushSettings {
            origins: DEFAULT_ORIGINS.iter().map(|o| o.to_string()).collect(),
            ttl: DEFAULT_TTL,
            ca_file: None,
            max_origins: DEFAULT_MAX_ORIGINS,
            connections_per_origin: DEFAULT_CONNECTIONS_PER_ORIGIN,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// Why the client cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("webPushOrigins: {0}")]
    Origins(#[from] FenceError),
    #[error("caFilePath: {0}")]
    CaFile(fpush_http::HttpError),
}

/// The Web Push module.
pub struct WebPush {
    fence: Fence,
    origins: Origins,
    ttl: Duration,
    alarms: LoudLog,
}

impl WebPush {
    /// Checks the origin list and the CA file; makes no network call.
    pub fn new(settings: WebPushSettings) -> Result<Self, SettingsError> {
        let fence = Fence::new(&settings.origins)?;
        if let Some(ca_file) = &settings.ca_file {
            // A client makes no connection when built; building one reads and checks the file.
            let config = fpush_http::HttpConfig {
                ca_file: Some(ca_file.clone()),
                ..fpush_http::HttpConfig::default()
            };
            fpush_http::HttpClient::new("https://localhost", config)
                .map_err(SettingsError::CaFile)?;
        }
        Ok(WebPush {
            fence,
            origins: Origins::new(ClientSettings {
                ca_file: settings.ca_file,
                connections_per_origin: settings.connections_per_origin,
                request_timeout: settings.request_timeout,
                max_origins: settings.max_origins,
            }),
            ttl: settings.ttl,
            alarms: LoudLog::new("Web Push"),
        })
    }

    /// Origins with a client held now.
    pub fn origins_held(&self) -> usize {
        self.origins.len()
    }

    /// A refusal before any request: the endpoint is outside the fence. Not a dead target (the
    /// operator may open the fence), so it is never remembered as one.
    fn refuse(&self, push: &PushNotification, why: &dyn std::fmt::Display) -> PushError {
        let text = format_args!("a push to {}… was refused: {why}", push.token_prefix());
        self.alarms.log(log::Level::Warn, "refused endpoint", &text);
        PushError::Rejected {
            reason: Rejection::NotAllowed,
            detail: why.to_string(),
        }
    }
}

#[async_trait]
impl PushTrait for WebPush {
    async fn send(&self, push: &PushNotification) -> Result<Delivered, PushError> {
        let admitted = self
            .fence
            .admit(&push.token)
            .map_err(|e| self.refuse(push, &e))?;
        let request = request::build(&admitted.path, push, self.ttl).map_err(request::rejected)?;
        let client = match self.origins.client(&admitted).await {
            Ok(client) => client,
            Err(OriginError::Fenced(e)) => return Err(self.refuse(push, &e)),
            // Logged when the push service asked for it.
            Err(OriginError::Paused { left, .. }) => {
                return Err(PushError::ProviderPaused { retry_after: left })
            }
            Err(e) => {
                let text = format_args!("{e}");
                self.alarms.log(log::Level::Warn, "origin", &text);
                return Err(match e {
                    OriginError::ResolveTimeout { .. } => PushError::Timeout,
                    e => PushError::Transient(e.to_string()),
                });
            }
        };
        match client.send(request).await {
            Ok(answer) => response::judge(&answer),
            Err(e) => Err(response::failed(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push_to(endpoint: &str) -> PushNotification {
        PushNotification {
            token: endpoint.into(),
            encrypted: Some(fpush_traits::EncryptedPayload::default()),
            ..PushNotification::default()
        }
    }

    #[tokio::test]
    async fn a_pause_that_outlived_its_client_is_answered_throttled_without_a_request() {
        // Two origins listed exactly (loopback allowed), one client held at a time.
        let origins = ["https://127.0.0.1:1", "https://127.0.0.1:2"];
        let webpush = WebPush::new(WebPushSettings {
            origins: origins.iter().map(|o| o.to_string()).collect(),
            max_origins: 1,
            ..WebPushSettings::default()
        })
        .unwrap();
        // The push service of :1 answered 503 with a Retry-After of ten minutes.
        let admitted = webpush.fence.admit("https://127.0.0.1:1/ep").unwrap();
        let paused = webpush.origins.client(&admitted).await.unwrap();
        paused.pause(Some(Duration::from_secs(600)), "503");
        // A push to :2 takes the only place (nothing listens there: not delivered).
        let elsewhere = webpush.send(&push_to("https://127.0.0.1:2/ep")).await;
        assert!(
            matches!(elsewhere, Err(PushError::Transient(_))),
            "{elsewhere:?}"
        );
        let again = webpush.send(&push_to("https://127.0.0.1:1/ep")).await;
        assert!(
            matches!(again, Err(PushError::ProviderPaused { .. })),
            "{again:?}"
        );
    }
}
