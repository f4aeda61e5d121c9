//! What the FCM integration tests share: the test kit's server and a module pointed at it.

#![allow(dead_code)]

use std::time::Duration;

use fpush_fcm::{FcmConfig, FcmPush};
use fpush_testkit::fcm::FcmServer;
use fpush_traits::{Delivered, PushError, PushNotification, PushSummary, PushTrait};

/// Request timeout of the modules under test: long enough for a loaded machine, short enough
/// that a stalled request ends the test quickly.
pub const TEST_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn server() -> FcmServer {
    FcmServer::start().await.unwrap()
}

/// A module configuration aimed at `server`: the test kit's `fcm` block, as the module reads it.
pub fn config(server: &FcmServer) -> FcmConfig {
    let mut cfg: FcmConfig = serde_json::from_value(server.settings()).unwrap();
    cfg.request_timeout = TEST_REQUEST_TIMEOUT;
    cfg
}

pub fn module(server: &FcmServer) -> FcmPush {
    FcmPush::new("android", config(server)).unwrap()
}

pub fn notification(token: &str) -> PushNotification {
    PushNotification {
        token: token.to_string(),
        module_id: "android".to_string(),
        summary: PushSummary {
            message_count: Some("1".to_string()),
            last_message_sender: Some("juliet@capulet.example".to_string()),
            last_message_body: Some("New Message!".to_string()),
        },
        options: Vec::new(),
        ..PushNotification::default()
    }
}

pub async fn push(module: &FcmPush, token: &str) -> Result<Delivered, PushError> {
    module.send(&notification(token)).await
}
