//! The `apns` block of a push module's settings.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Apple's production and sandbox provider API origins.
pub const PRODUCTION_ENDPOINT: &str = "https://api.push.apple.com";
pub const SANDBOX_ENDPOINT: &str = "https://api.sandbox.push.apple.com";

/// Settings of one APNS module. Exactly one auth mode: `certFilePath` (+ `certPassword`), or
/// `keyFilePath` + `keyId` + `teamId`.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApnsConfig {
    /// The `.p12` client certificate (certificate auth).
    pub cert_file_path: Option<PathBuf>,
    /// The `.p12` password; empty when absent. Never echoed in an error.
    #[serde(default, deserialize_with = "fpush_traits::settings::secret")]
    pub cert_password: String,
    /// The `.p8` signing key (token auth).
    pub key_file_path: Option<PathBuf>,
    /// The key's id from Apple's developer account (the JWT `kid`).
    pub key_id: Option<String>,
    /// The developer team id (the JWT `iss`).
    pub team_id: Option<String>,
    /// The app's bundle id, sent as `apns-topic`.
    pub topic: String,
    #[serde(default)]
    pub environment: ApnsEnvironment,
    /// Replaces the environment's base URL (`https://host[:port]`), for tests and proxies.
    pub endpoint: Option<String>,
    /// An extra trusted CA (PEM) for `endpoint`.
    pub ca_file_path: Option<PathBuf>,
    #[serde(default)]
    pub push_type: ApnsPushType,
    /// Alert title when the summary gives none (or `alertFromSummary` is off).
    #[serde(default = "default_alert_title")]
    pub alert_title: String,
    /// Alert body when the summary gives none (or `alertFromSummary` is off).
    #[serde(default = "default_alert_body")]
    pub alert_body: String,
    /// Use the summary's sender and body, when the XMPP server sent them, as the alert.
    #[serde(default)]
    pub alert_from_summary: bool,
    /// Merged into the payload's top level (next to `aps`); `null` reads as none, as it always did.
    #[serde(default, deserialize_with = "map_or_null")]
    pub additional_data: serde_json::Map<String, serde_json::Value>,
    /// Sent as `apns-collapse-id` (at most 64 bytes).
    pub collapse_id: Option<String>,
    /// `apns-priority`: 10, 5 or 1. Default 10 for alerts, 5 for background pushes.
    pub priority: Option<u8>,
    /// How long Apple keeps trying to deliver (`apns-expiration` = now + this; `0s` = once).
    #[serde(
        default = "default_expiration",
        deserialize_with = "fpush_traits::settings::duration"
    )]
    pub expiration: Duration,
    /// Bound on one request to Apple, connection set-up included. Whole seconds (`5`, as older
    /// fpush configs write it) or text (`"5s"`).
    #[serde(
        default = "default_request_timeout",
        deserialize_with = "fpush_traits::settings::seconds_or_duration"
    )]
    pub request_timeout: Duration,
    /// Most HTTP/2 connections to Apple, opened only when every open one is at its stream limit.
    #[serde(
        default = "default_max_connections",
        deserialize_with = "fpush_traits::settings::max_connections"
    )]
    pub max_connections: usize,
    /// The `apns-topic` of PushKit (VoIP) pushes; `<topic>.voip` when absent.
    pub voip_topic: Option<String>,
    /// The PushKit `.p12` certificate: with certificate auth, VoIP pushes need their own
    /// (without one they fall back to alerts). Token auth serves both topics with one key.
    pub voip_cert_file_path: Option<PathBuf>,
    /// The PushKit `.p12` password. Never echoed in an error.
    #[serde(default, deserialize_with = "fpush_traits::settings::secret")]
    pub voip_cert_password: String,
}

fn default_max_connections() -> usize {
    fpush_http::DEFAULT_MAX_CONNECTIONS
}

/// Which Apple environment a module pushes to (builds signed for development use `sandbox`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApnsEnvironment {
    #[default]
    Production,
    Sandbox,
}

/// `apns-push-type`: a visible alert, or a silent `content-available` wake-up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApnsPushType {
    #[default]
    Alert,
    Background,
}

impl ApnsPushType {
    pub fn header_value(self) -> &'static str {
        match self {
            ApnsPushType::Alert => "alert",
            ApnsPushType::Background => "background",
        }
    }
}

fn default_alert_title() -> String {
    "New Message".to_string()
}

fn default_alert_body() -> String {
    "You have a new message".to_string()
}

fn map_or_null<'de, D>(
    deserializer: D,
) -> Result<serde_json::Map<String, serde_json::Value>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Option::deserialize(deserializer).map(Option::unwrap_or_default)
}

fn default_expiration() -> Duration {
    Duration::from_secs(28 * 24 * 3600)
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}

impl ApnsConfig {
    /// The topic of PushKit pushes: `voipTopic`, or `<topic>.voip`.
    pub fn voip_topic(&self) -> String {
        self.voip_topic
            .clone()
            .unwrap_or_else(|| format!("{}.voip", self.topic))
    }

    /// Why this module cannot send PushKit pushes, if it cannot: certificate auth without a
    /// PushKit certificate (its VoIP pushes then go out as alerts).
    pub fn voip_unavailable(&self) -> Option<&'static str> {
        (self.cert_file_path.is_some() && self.voip_cert_file_path.is_none()).then_some(
            "VoIP pushes fall back to alerts: certificate auth needs apns.voipCertFilePath \
             (a PushKit certificate) to send them",
        )
    }

    /// The origin requests go to.
    pub fn origin(&self) -> &str {
        match (&self.endpoint, self.environment) {
            (Some(endpoint), _) => endpoint.as_str(),
            (None, ApnsEnvironment::Production) => PRODUCTION_ENDPOINT,
            (None, ApnsEnvironment::Sandbox) => SANDBOX_ENDPOINT,
        }
    }
}

/// Written by hand so the certificate password never reaches a log.
impl std::fmt::Debug for ApnsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApnsConfig")
            .field("cert_file_path", &self.cert_file_path)
            .field("cert_password", &"<redacted>")
            .field("key_file_path", &self.key_file_path)
            .field("key_id", &self.key_id)
            .field("team_id", &self.team_id)
            .field("topic", &self.topic)
            .field("environment", &self.environment)
            .field("endpoint", &self.endpoint)
            .field("ca_file_path", &self.ca_file_path)
            .field("push_type", &self.push_type)
            .field("alert_from_summary", &self.alert_from_summary)
            .field("collapse_id", &self.collapse_id)
            .field("priority", &self.priority)
            .field("expiration", &self.expiration)
            .field("request_timeout", &self.request_timeout)
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_documented_values() {
        let cfg: ApnsConfig = serde_json::from_str(
            r#"{"keyFilePath": "k.p8", "keyId": "K", "teamId": "T", "topic": "com.example"}"#,
        )
        .unwrap();
        assert_eq!(cfg.environment, ApnsEnvironment::Production);
        assert_eq!(cfg.origin(), PRODUCTION_ENDPOINT);
        assert_eq!(cfg.push_type, ApnsPushType::Alert);
        assert_eq!(cfg.expiration, Duration::from_secs(28 * 24 * 3600));
        assert_eq!(cfg.request_timeout, Duration::from_secs(10));
        assert!(cfg.additional_data.is_empty());
    }

    #[test]
    fn parses_every_key() {
        let cfg: ApnsConfig = serde_json::from_str(
            r#"{"certFilePath": "c.p12", "certPassword": "pw", "topic": "com.example",
                "environment": "sandbox", "endpoint": "https://localhost:1", "caFilePath": "ca.pem",
                "pushType": "background", "alertTitle": "t", "alertBody": "b",
                "alertFromSummary": true, "additionalData": {"x": 1}, "collapseId": "c",
                "priority": 5, "expiration": "1h", "requestTimeout": "3s"}"#,
        )
        .unwrap();
        assert_eq!(cfg.origin(), "https://localhost:1");
        assert_eq!(cfg.push_type, ApnsPushType::Background);
        assert_eq!(cfg.expiration, Duration::from_secs(3600));
        assert_eq!(cfg.request_timeout, Duration::from_secs(3));
        assert!(!format!("{cfg:?}").contains("pw"));
    }

    #[test]
    fn the_original_fpush_block_reads_with_its_types() {
        let cfg: ApnsConfig = serde_json::from_str(
            r#"{"certFilePath": "c.p12", "certPassword": "pw", "topic": "com.example",
                "environment": "sandbox", "additionalData": null, "requestTimeout": 5}"#,
        )
        .unwrap();
        assert_eq!(cfg.request_timeout, Duration::from_secs(5));
        assert!(cfg.additional_data.is_empty());
        assert_eq!(cfg.environment, ApnsEnvironment::Sandbox);
    }

    #[test]
    fn a_password_of_the_wrong_type_is_not_echoed() {
        let err = serde_json::from_str::<ApnsConfig>(
            r#"{"certFilePath": "c.p12", "certPassword": 987654321987, "topic": "t"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains("987654321987"), "{err}");
    }

    #[test]
    fn durations_are_bounded() {
        let err = serde_json::from_str::<ApnsConfig>(
            r#"{"certFilePath": "c.p12", "topic": "t", "expiration": "300000000000y"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("at most 1 year"), "{err}");
    }
}
