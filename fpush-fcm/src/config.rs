//! The `fcm` block of a `"google"` push module, as the operator writes it in the settings.
//!
//! Unknown keys are deliberately not rejected here: the core reports them with their key path,
//! so this struct stays a plain, lenient `Deserialize`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The FCM HTTP v1 endpoint Google serves.
pub const DEFAULT_ENDPOINT: &str = "https://fcm.googleapis.com";

/// How long FCM keeps a message for an offline device unless told otherwise: four weeks, which
/// is also the longest FCM accepts.
pub const DEFAULT_TTL: Duration = Duration::from_secs(28 * 24 * 60 * 60);

/// The longest `ttl` FCM accepts (a longer one is answered `INVALID_ARGUMENT` for every push).
pub const MAX_TTL: Duration = DEFAULT_TTL;

/// How long one request to FCM (or to the OAuth token endpoint) may take, answer included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of one FCM push module (`pushModules.<id>.fcm`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FcmConfig {
    /// The service-account JSON downloaded from the Firebase console.
    pub fcm_secret_path: PathBuf,
    /// Base URL of the FCM API; only tests point it elsewhere.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// An extra CA (PEM) trusted for the FCM endpoint and the OAuth token endpoint, in addition
    /// to the usual web roots.
    #[serde(default)]
    pub ca_file_path: Option<PathBuf>,
    /// How long FCM stores the message while the device is offline.
    #[serde(
        default = "default_ttl",
        deserialize_with = "fpush_traits::settings::duration"
    )]
    pub ttl: Duration,
    /// `android.collapse_key`: FCM keeps only the latest undelivered message per key.
    #[serde(default)]
    pub collapse_key: Option<String>,
    /// Static string pairs added to every message's `data`.
    #[serde(default)]
    pub additional_data: BTreeMap<String, String>,
    /// Copy the push summary (`message-count`, `last-message-sender`, `last-message-body`) into
    /// `data`. Off by default: the body is message content the operator may not want to hand to
    /// Google.
    #[serde(default)]
    pub data_from_summary: bool,
    /// Bound on every request to FCM and to the token endpoint: whole seconds or text.
    #[serde(
        default = "default_request_timeout",
        deserialize_with = "fpush_traits::settings::seconds_or_duration"
    )]
    pub request_timeout: Duration,
    /// Most HTTP/2 connections to FCM, opened only when every open one is at its stream limit.
    #[serde(
        default = "default_max_connections",
        deserialize_with = "fpush_traits::settings::max_connections"
    )]
    pub max_connections: usize,
}

fn default_max_connections() -> usize {
    fpush_http::DEFAULT_MAX_CONNECTIONS
}

impl FcmConfig {
    /// A configuration with every optional key at its default.
    pub fn new(fcm_secret_path: impl Into<PathBuf>) -> Self {
        Self {
            fcm_secret_path: fcm_secret_path.into(),
            endpoint: default_endpoint(),
            ca_file_path: None,
            ttl: DEFAULT_TTL,
            collapse_key: None,
            additional_data: BTreeMap::new(),
            data_from_summary: false,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_connections: default_max_connections(),
        }
    }
}

fn default_endpoint() -> String {
    DEFAULT_ENDPOINT.to_string()
}

fn default_ttl() -> Duration {
    DEFAULT_TTL
}

fn default_request_timeout() -> Duration {
    DEFAULT_REQUEST_TIMEOUT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_secret_path_is_required() {
        let cfg: FcmConfig =
            serde_json::from_str(r#"{"fcmSecretPath": "/etc/fpush/sa.json"}"#).unwrap();
        assert_eq!(cfg.fcm_secret_path, PathBuf::from("/etc/fpush/sa.json"));
        assert_eq!(cfg.endpoint, DEFAULT_ENDPOINT);
        assert_eq!(cfg.ttl, Duration::from_secs(2_419_200));
        assert_eq!(cfg.request_timeout, DEFAULT_REQUEST_TIMEOUT);
        assert!(cfg.ca_file_path.is_none());
        assert!(cfg.collapse_key.is_none());
        assert!(cfg.additional_data.is_empty());
        assert!(!cfg.data_from_summary);
    }

    #[test]
    fn every_key_is_read_in_camel_case() {
        let cfg: FcmConfig = serde_json::from_str(
            r#"{
                "fcmSecretPath": "sa.json",
                "endpoint": "https://localhost:4433",
                "caFilePath": "ca.pem",
                "ttl": "1h 30m",
                "collapseKey": "chat",
                "additionalData": {"kind": "xmpp"},
                "dataFromSummary": true,
                "requestTimeout": "3s",
                "someFutureKey": 1
            }"#,
        )
        .unwrap();
        assert_eq!(cfg.endpoint, "https://localhost:4433");
        assert_eq!(cfg.ca_file_path, Some(PathBuf::from("ca.pem")));
        assert_eq!(cfg.ttl, Duration::from_secs(5400));
        assert_eq!(cfg.collapse_key.as_deref(), Some("chat"));
        assert_eq!(
            cfg.additional_data.get("kind").map(String::as_str),
            Some("xmpp")
        );
        assert!(cfg.data_from_summary);
        assert_eq!(cfg.request_timeout, Duration::from_secs(3));
    }

    #[test]
    fn request_timeout_takes_whole_seconds_too() {
        let cfg: FcmConfig =
            serde_json::from_str(r#"{"fcmSecretPath": "sa.json", "requestTimeout": 7}"#).unwrap();
        assert_eq!(cfg.request_timeout, Duration::from_secs(7));
    }

    #[test]
    fn additional_data_values_must_be_strings() {
        let err = serde_json::from_str::<FcmConfig>(
            r#"{"fcmSecretPath": "sa.json", "additionalData": {"n": 1}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("string"), "{err}");
    }
}
