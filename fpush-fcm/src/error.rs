//! Start-up errors of an FCM module: everything `fpush --check` can find without the network.
//!
//! Each variant names the module and, where there is one, the file and the field, so an operator
//! reading the message knows what to fix without guessing.

use std::path::PathBuf;

/// Why an FCM module could not be built from its settings.
#[derive(Debug, thiserror::Error)]
pub enum FcmError {
    #[error("push module {module:?}: cannot read the FCM service-account file {}: {source}", path.display())]
    ReadServiceAccount {
        module: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("push module {module:?}: the FCM service-account file {} is not valid JSON: {source}", path.display())]
    ServiceAccountJson {
        module: String,
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("push module {module:?}: {} is the app's google-services.json, not a service-account key (Firebase console: Project settings, Service accounts, Generate new private key)", path.display())]
    WrongFile { module: String, path: PathBuf },
    #[error("push module {module:?}: the FCM service-account file {} has no {field:?}", path.display())]
    MissingField {
        module: String,
        path: PathBuf,
        field: &'static str,
    },
    #[error("push module {module:?}: field {field:?} of the FCM service-account file {} {reason}", path.display())]
    InvalidField {
        module: String,
        path: PathBuf,
        field: &'static str,
        reason: String,
    },
    #[error("push module {module:?}: setting fcm.{key} {reason}")]
    InvalidSetting {
        module: String,
        key: &'static str,
        reason: String,
    },
    #[error("push module {module:?}: cannot set up the HTTP client for {origin}: {source}")]
    Http {
        module: String,
        origin: String,
        #[source]
        source: fpush_http::HttpError,
    },
}

impl FcmError {
    pub(crate) fn setting(module: &str, key: &'static str, reason: String) -> Self {
        FcmError::InvalidSetting {
            module: module.to_string(),
            key,
            reason,
        }
    }
}
