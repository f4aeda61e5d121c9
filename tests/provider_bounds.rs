//! Numbers and tokens from outside cannot hurt the `fpush` binary's provider paths: an OAuth
//! `expires_in` near `u64::MAX` and a huge `Retry-After` are clamped (every push is answered,
//! nothing panics), and tokens that cannot be FCM tokens never reach Google.

mod common;

use std::time::Duration;

use common::*;
use fpush_testkit::apns::{ApnsAnswer, ApnsHarness};
use fpush_testkit::fcm::{FcmAnswer, FcmServer};
use fpush_testkit::settings::with_keys;
use serde_json::json;

/// fpush with one default `google` module (ratelimit off) pushing through `fcm`.
async fn start_fcm(fcm: &FcmServer) -> (FakeXmppServer, Daemon, ComponentLink) {
    let block = with_keys(fcm.settings(), json!({ "requestTimeout": "5s" }));
    let modules = json!({ "android": { "type": "google", "is_default_module": true,
        "ratelimit": { "enabled": false }, "fcm": block } });
    let mut xmpp = FakeXmppServer::bind(SECRET).await.unwrap();
    let fpush = Daemon::start(&settings(&xmpp, &modules.to_string(), ""));
    let link = connect(&mut xmpp).await;
    (xmpp, fpush, link)
}

#[tokio::test]
async fn an_oauth_expires_in_near_u64_max_is_survived_and_pushes_are_answered() {
    let fcm = FcmServer::start().await.unwrap();
    fcm.set_token_lifetime(Duration::from_secs(u64::MAX));
    let (_xmpp, mut fpush, mut link) = start_fcm(&fcm).await;
    for id in ["e1", "e2", "e3"] {
        assert_result(
            &push_and_reply(&mut link, id, &format!("token-{id}")).await,
            id,
        );
    }
    assert_eq!(fcm.token_requests(), 1);
    fpush.assert_no_panic();
}

#[tokio::test]
async fn a_huge_fcm_retry_after_is_answered_wait_and_pushes_go_on() {
    let fcm = FcmServer::start().await.unwrap();
    let (_xmpp, mut fpush, mut link) = start_fcm(&fcm).await;
    fcm.script([FcmAnswer::quota_exceeded(u64::MAX)]);
    let reply = push_and_reply(&mut link, "q1", "token-q1").await;
    assert_error(&reply, "q1", "wait", "resource-constraint");
    assert_result(&push_and_reply(&mut link, "q2", "token-q2").await, "q2");
    fpush.assert_no_panic();
}

#[tokio::test]
async fn a_huge_apns_retry_after_is_answered_wait_and_pushes_go_on() {
    let apns = ApnsHarness::start().await.unwrap();
    let mut xmpp = FakeXmppServer::bind(SECRET).await.unwrap();
    let mut fpush = Daemon::start(&settings(&xmpp, &apns_modules(&apns, "5s"), ""));
    let mut link = connect(&mut xmpp).await;
    let throttled = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    apns.server.enqueue(
        throttled,
        [ApnsAnswer::error(429, "TooManyRequests").with_retry_after(u64::MAX)],
    );
    let reply = push_and_reply(&mut link, "t1", throttled).await;
    assert_error(&reply, "t1", "wait", "resource-constraint");
    assert_result(
        &push_and_reply(&mut link, "t2", &"fedcba9876543210".repeat(4)).await,
        "t2",
    );
    fpush.assert_no_panic();
}

#[tokio::test]
async fn implausible_fcm_tokens_are_answered_dead_without_reaching_google() {
    let fcm = FcmServer::start().await.unwrap();
    let (_xmpp, mut fpush, mut link) = start_fcm(&fcm).await;
    for (n, token) in ["x/1", "x.2", "x=3", "x/1"].into_iter().enumerate() {
        let id = format!("i{n}");
        let reply = push_and_reply(&mut link, &id, token).await;
        assert_error(&reply, &id, "cancel", "item-not-found");
    }
    assert_eq!((fcm.message_count(), fcm.token_requests()), (0, 0));
    assert_result(&push_and_reply(&mut link, "ok", "token-ok").await, "ok");
    fpush.assert_no_panic();
}
