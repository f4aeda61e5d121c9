//! A reload (SIGHUP) with unchanged credentials keeps the provider auth the running modules
//! hold: Apple sees one provider token however often fpush reloads (two new tokens within 20
//! minutes earn `TooManyProviderTokenUpdates`), and Google's token endpoint is asked once.

mod common;

use std::time::{Duration, Instant};

use common::*;
use fpush_testkit::apns::ApnsHarness;
use fpush_testkit::fcm::FcmServer;
use fpush_testkit::settings::with_keys;
use serde_json::json;

/// Runs fpush with `modules`, pushes once, reloads twice with the same settings file and pushes
/// after each reload; every push must be delivered.
async fn push_across_two_reloads(modules: &str, token: &str) -> Daemon {
    let mut xmpp = FakeXmppServer::bind(SECRET).await.unwrap();
    let mut fpush = Daemon::start(&settings(&xmpp, modules, ""));
    let mut link = connect(&mut xmpp).await;
    assert_result(&push_and_reply(&mut link, "before", token).await, "before");
    for reload in 1..=2 {
        fpush.reload();
        wait_for_reloads(&fpush, reload);
        let id = format!("after-reload-{reload}");
        assert_result(&push_and_reply(&mut link, &id, token).await, &id);
    }
    fpush.assert_no_panic();
    fpush
}

/// Waits until fpush has logged `count` completed reloads.
fn wait_for_reloads(fpush: &Daemon, count: usize) {
    let deadline = Instant::now() + WAIT;
    while fpush.log().matches("reloaded ").count() < count {
        assert!(
            Instant::now() < deadline,
            "reload {count} not done:\n{}",
            fpush.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn two_sighups_sign_one_apns_provider_token() {
    let apns = ApnsHarness::start().await.unwrap();
    let modules = apns_modules(&apns, "5s");
    let token = "3f2a9c1e5b7d4f6a8c0e2b4d6f8a0c2e4b6d8f0a2c4e6b8d0f2a4c6e8b0d2f4a";
    let _fpush = push_across_two_reloads(&modules, token).await;
    assert_eq!(apns.server.count_for(token), 3);
    assert_eq!(apns.server.provider_tokens_seen(), 1);
}

#[tokio::test]
async fn two_sighups_ask_the_fcm_token_endpoint_once() {
    let fcm = FcmServer::start().await.unwrap();
    let block = with_keys(fcm.settings(), json!({ "requestTimeout": "5s" }));
    let modules = json!({ "android": { "type": "google", "is_default_module": true,
        "ratelimit": { "enabled": false }, "fcm": block } });
    let token = "cT7x9Qz1RkW:APA91bHq-reload_test";
    let _fpush = push_across_two_reloads(&modules.to_string(), token).await;
    assert_eq!(fcm.message_count(), 3);
    assert_eq!(fcm.token_requests(), 1);
}
