//! What identifies a push2 target for the dead-token memory and the ratelimit: the token or the
//! endpoint the push goes to, however the `client` spells it.

mod p2_support;

use std::sync::Arc;

use fpush::config::WEB_PUSH_MODULE;
use fpush::modules::ModuleSet;
use fpush_traits::{DeadTokenReason, PushError};
use p2_support::dispatcher::{error_of, module, Harness, JID};
use p2_support::RecordingProvider;

const TOPIC: &str = "org.example.chat";
const DEVICE: &str = "3f2a9c1e5b7d4f6a8c0e2b4d6f8a0c2e4b6d8f0a2c4e6b8d0f2a4c6e8b0d2f4a";
const VOIP: &str = "aa2a9c1e5b7d4f6a8c0e2b4d6f8a0c2e4b6d8f0a2c4e6b8d0f2a4c6e8b0d2f4a";
const ENDPOINT: &str = "https://push.example.net/wpush/v2/abc";

/// A relay module for Web Push (its ratelimit on or off) and an apple module for [`TOPIC`],
/// each on a provider of its own.
fn harness(ratelimit: bool) -> (Harness, Arc<RecordingProvider>) {
    let web = Arc::new(RecordingProvider::default());
    let apple = Arc::new(RecordingProvider::relaying(&format!(
        "apns:production:{TOPIC}"
    )));
    let modules = ModuleSet::from_modules(vec![
        (module(WEB_PUSH_MODULE, "webpush", &web, ratelimit), false),
        (module("ios", "apple", &apple, false), false),
    ]);
    (Harness::with_modules(modules, web), apple)
}

/// Waits until `provider` was asked `count` times (delivered push2 pushes get no answer).
async fn wait_for_asked(provider: &RecordingProvider, count: usize) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while provider.asked().len() < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "asked {:?}",
            provider.asked()
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

fn message(id: &str, client: &str, inner: &str) -> String {
    format!(
        "<message from='capulet.example' to='{JID}' id='{id}'>\
         <notification xmlns='urn:xmpp:push2:0'><client>{client}</client>{inner}\
         </notification></message>"
    )
}

/// Sends a push2 message for `client` and asserts the answer says its target is gone.
async fn assert_gone(h: &mut Harness, client: &str, inner: &str) {
    let reply = h.ask(|id| message(id, client, inner)).await;
    assert_eq!(error_of(&reply), ("cancel", "item-not-found"), "{client}");
}

/// The `client` of an app that takes alerts at [`DEVICE`].
fn alert_client() -> String {
    format!("https://api.push.apple.com/3/device/{DEVICE}#{TOPIC}")
}

/// The `client` of an app that takes alerts at [`DEVICE`] and calls at [`VOIP`].
fn call_client() -> String {
    format!("https://api.push.apple.com/3/device/{DEVICE}#{TOPIC}&amp;{VOIP}")
}

#[tokio::test]
async fn a_dead_endpoint_is_dead_under_every_spelling_that_reaches_it() {
    let (mut h, _) = harness(false);
    h.provider.unregister(ENDPOINT);
    assert_gone(&mut h, ENDPOINT, "").await;
    for client in [
        "https://PUSH.Example.NET/wpush/v2/abc",
        "https://push.example.net:443/wpush/v2/abc",
        "https://push.example.net/wpush/v2/abc#again",
    ] {
        assert_gone(&mut h, client, "").await;
    }
    assert_eq!(h.provider.asked(), [ENDPOINT]);
}

#[tokio::test]
async fn the_relay_ratelimit_holds_every_spelling_of_one_endpoint() {
    let (mut h, _) = harness(true);
    // The first goes out, the second waits for the window, the third is refused.
    h.send(|id| message(id, ENDPOINT, ""));
    h.send(|id| message(id, "https://push.example.net:443/wpush/v2/abc", ""));
    let reply = h
        .ask(|id| message(id, "https://Push.Example.Net/wpush/v2/abc#x", ""))
        .await;
    assert_eq!(error_of(&reply), ("wait", "resource-constraint"));
    wait_for_asked(&h.provider, 1).await;
    assert_eq!(h.provider.asked(), [ENDPOINT]);
}

#[tokio::test]
async fn what_picks_another_subscription_keeps_its_own_key() {
    let (mut h, _) = harness(false);
    h.provider.unregister(ENDPOINT);
    assert_gone(&mut h, ENDPOINT, "").await;
    let others = [
        "https://push.example.net/wpush/v2/ABC",
        "https://push.example.net/wpush/v2/abc?x=1",
        "https://push.example.net:8443/wpush/v2/abc",
    ];
    for client in others {
        h.send(|id| message(id, client, ""));
    }
    // Delivered pushes are not answered: wait for the provider to see them.
    wait_for_asked(&h.provider, 4).await;
    assert_eq!(h.provider.asked().len(), 4);
}

#[tokio::test]
async fn a_dead_apns_token_is_dead_whatever_else_its_client_says() {
    let (mut h, apple) = harness(false);
    apple.unregister(DEVICE);
    let client = alert_client();
    assert_gone(&mut h, &client, "").await;
    for client in [
        format!("https://API.Push.Apple.com/3/device/{DEVICE}#{TOPIC}"),
        call_client(),
    ] {
        assert_gone(&mut h, &client, "").await;
    }
    assert_eq!(apple.asked(), [DEVICE]);
}

#[tokio::test]
async fn a_dead_voip_token_holds_back_calls_only() {
    let (mut h, apple) = harness(false);
    apple.unregister(VOIP);
    let client = call_client();
    assert_gone(&mut h, &client, "<voip/>").await;
    assert_gone(&mut h, &client, "<voip/>").await;
    // An alert to the same client goes to the device token, which lives.
    h.send(|id| message(id, &client, ""));
    wait_for_asked(&apple, 2).await;
    assert_eq!(apple.asked(), [VOIP, DEVICE]);
}

#[tokio::test]
async fn a_call_sent_as_an_alert_is_learnt_for_the_device_token() {
    let (mut h, apple) = harness(false);
    apple.send_calls_as_alerts(true);
    apple.unregister(DEVICE);
    let call = call_client();
    assert_gone(&mut h, &call, "<voip/>").await;
    // The device token is remembered dead, the untried VoIP token is not.
    let alert = alert_client();
    assert_gone(&mut h, &alert, "").await;
    apple.send_calls_as_alerts(false);
    h.send(|id| message(id, &call, "<voip/>"));
    wait_for_asked(&apple, 2).await;
    assert_eq!(apple.asked(), [DEVICE, VOIP]);
}

#[tokio::test]
async fn a_token_the_platform_finds_implausible_is_not_held_by_the_relay_ratelimit() {
    let (mut h, apple) = harness(true);
    for _ in 0..2 {
        apple.answer(
            DEVICE,
            Err(PushError::TokenInvalid(DeadTokenReason::Implausible)),
        );
    }
    // Neither remembered dead nor ratelimited: such a token never cost a call, and anyone
    // can send them by the thousand. Each push is answered at once.
    assert_gone(&mut h, &alert_client(), "").await;
    assert_gone(&mut h, &alert_client(), "").await;
    assert_eq!(apple.asked(), [DEVICE, DEVICE]);
}
