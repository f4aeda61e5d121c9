//! The whole APNS path: a Prosody-shaped push IQ goes into the real `fpush` binary, out of its
//! `apple` module to an in-process APNS test server (HTTP/2 over TLS, test CA), and the reply
//! stanza that comes back is the one the reply table in ARCHITECTURE.md asks for — for both of
//! Apple's auth modes and for every outcome the APNS module distinguishes.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use fpush_testkit::apns::{ApnsAnswer, ApnsHarness, Received, TOPIC};
use fpush_testkit::settings::with_keys;
use fpush_testkit::tls::P12Cipher;
use serde_json::{json, Value};

/// Short, so the stalled-provider test stays fast.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(500);
/// A device token as Apple hands them out: 64 hex digits.
const DEVICE_TOKEN: &str = "3f2a9c1e5b7d4f6a8c0e2b4d6f8a0c2e4b6d8f0a2c4e6b8d0f2a4c6e8b0d2f4a";

/// How the module authenticates to the test server.
#[derive(Clone, Copy)]
enum Auth {
    /// A `.p12` client certificate issued by the test CA.
    Certificate(P12Cipher),
    /// A `.p8` key signing ES256 provider tokens.
    Token,
}

/// A running path: APNS test server, fake XMPP server, the fpush process and its link.
struct ApplePath {
    apns: ApnsHarness,
    link: ComponentLink,
    fpush: Daemon,
    _xmpp: FakeXmppServer,
}

impl ApplePath {
    /// Everything up with default `apns` settings.
    async fn start(auth: Auth) -> Self {
        Self::start_with(auth, json!({})).await
    }

    /// Everything up; `apns_extra` (e.g. `{"pushType": "background"}`, or another `topic`) is
    /// added to the module's `apns` block.
    async fn start_with(auth: Auth, apns_extra: Value) -> Self {
        let apns = ApnsHarness::start().await.unwrap();
        let block = match auth {
            Auth::Certificate(cipher) => apns.cert_settings(cipher).unwrap(),
            Auth::Token => apns.token_settings(),
        };
        let timeout = json!({"requestTimeout": format!("{}ms", REQUEST_TIMEOUT.as_millis())});
        let block = with_keys(with_keys(block, timeout), apns_extra);
        // The ratelimit is off so every push of a test reaches the module; the dead-token memory
        // is the core's default (on).
        let modules = json!({ "ios": { "type": "apple", "is_default_module": true,
            "ratelimit": { "enabled": false }, "apns": block } });
        let mut xmpp = FakeXmppServer::bind(SECRET).await.unwrap();
        let fpush = Daemon::start(&settings(&xmpp, &modules.to_string(), ""));
        let link = xmpp.accept(WAIT).await.expect("fpush connects");
        Self {
            apns,
            link,
            fpush,
            _xmpp: xmpp,
        }
    }

    async fn push(&mut self, id: &str, token: &str) -> Stanza {
        push_and_reply(&mut self.link, id, token).await
    }

    /// The one request the test server received for `token`.
    fn only_request_for(&self, token: &str) -> Received {
        let mut requests: Vec<Received> = self
            .apns
            .server
            .received()
            .into_iter()
            .filter(|r| r.token == token)
            .collect();
        assert_eq!(requests.len(), 1, "requests for {token}: {requests:?}");
        requests.remove(0)
    }
}

fn header<'a>(request: &'a Received, name: &str) -> &'a str {
    request
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header in {:?}", request.headers))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `apns-expiration` is "now + `lifetime`" in unix seconds, give or take the test's own runtime.
fn assert_expiration(request: &Received, lifetime: Duration, sent_before: u64) {
    let expiration: u64 = header(request, "apns-expiration").parse().unwrap();
    let earliest = sent_before + lifetime.as_secs();
    let latest = unix_now() + lifetime.as_secs();
    assert!(
        (earliest..=latest).contains(&expiration),
        "apns-expiration {expiration} not in {earliest}..={latest}"
    );
}

/// The default alert as Monal-style Notification Service Extensions expect it.
fn assert_default_alert_body(request: &Received) {
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({ "aps": {
            "alert": { "title": "New Message", "body": "You have a new message" },
            "mutable-content": 1,
            "sound": "default",
        } })
    );
}

// --- delivery, both auth modes ---------------------------------------------------------------

#[tokio::test]
async fn certificate_auth_push_reaches_apns_with_the_right_request_and_gets_a_result() {
    let mut path = ApplePath::start(Auth::Certificate(P12Cipher::Modern)).await;
    let sent_before = unix_now();

    let reply = path.push("c1", DEVICE_TOKEN).await;
    assert_result(&reply, "c1");

    let request = path.only_request_for(DEVICE_TOKEN);
    assert_eq!(request.status, 200, "the test server accepted it");
    assert!(request.client_cert, "the .p12 certificate was presented");
    assert_eq!(request.jwt, None, "no provider token with certificate auth");
    assert_eq!(header(&request, "apns-topic"), TOPIC);
    assert_eq!(header(&request, "apns-push-type"), "alert");
    assert_eq!(header(&request, "apns-priority"), "10");
    assert_expiration(&request, Duration::from_secs(28 * 24 * 3600), sent_before);
    assert_default_alert_body(&request);
}

#[tokio::test]
async fn a_legacy_3des_p12_certificate_delivers_too() {
    let mut path = ApplePath::start(Auth::Certificate(P12Cipher::Legacy3Des)).await;
    assert_result(&path.push("l1", DEVICE_TOKEN).await, "l1");
    assert!(path.only_request_for(DEVICE_TOKEN).client_cert);
}

#[tokio::test]
async fn token_auth_push_reaches_apns_with_the_right_request_and_gets_a_result() {
    let mut path = ApplePath::start(Auth::Token).await;
    let sent_before = unix_now();

    let reply = path.push("t1", DEVICE_TOKEN).await;
    assert_result(&reply, "t1");

    let request = path.only_request_for(DEVICE_TOKEN);
    assert_eq!(request.status, 200, "the test server accepted it");
    assert!(request.jwt.is_some(), "a provider token was sent");
    assert!(!request.client_cert);
    assert_eq!(header(&request, "apns-topic"), TOPIC);
    assert_eq!(header(&request, "apns-push-type"), "alert");
    assert_eq!(header(&request, "apns-priority"), "10");
    assert_expiration(&request, Duration::from_secs(28 * 24 * 3600), sent_before);
    assert_default_alert_body(&request);

    // The next push reuses the same provider token (Apple throttles frequent renewals).
    let second = "0".repeat(64);
    assert_result(&path.push("t2", &second).await, "t2");
    assert_eq!(path.only_request_for(&second).jwt, request.jwt);
}

#[tokio::test]
async fn background_push_settings_shape_the_request() {
    let mut path = ApplePath::start_with(
        Auth::Token,
        json!({"pushType": "background", "expiration": "1h", "additionalData": { "v": 2 }}),
    )
    .await;
    let sent_before = unix_now();
    assert_result(&path.push("b1", DEVICE_TOKEN).await, "b1");

    let request = path.only_request_for(DEVICE_TOKEN);
    assert_eq!(header(&request, "apns-push-type"), "background");
    assert_eq!(header(&request, "apns-priority"), "5");
    assert_expiration(&request, Duration::from_secs(3600), sent_before);
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({ "aps": { "content-available": 1 }, "v": 2 })
    );
}

// --- dead tokens ----------------------------------------------------------------------------

#[tokio::test]
async fn dead_token_answers_cancel_and_the_token_is_then_answered_without_asking_apple() {
    let mut path = ApplePath::start(Auth::Certificate(P12Cipher::Modern)).await;
    let not_for_topic = "feedface".repeat(8);
    path.apns.server.enqueue(
        &not_for_topic,
        [ApnsAnswer::error(400, "DeviceTokenNotForTopic")],
    );
    // `dead…` → 410 Unregistered, `baddevice…` → 400 BadDeviceToken (the testkit's convention).
    let cases = [
        ("dead-token-1", "Unregistered"),
        ("baddevice-token-1", "BadDeviceToken"),
        (not_for_topic.as_str(), "DeviceTokenNotForTopic"),
    ];
    for (n, (token, reason)) in cases.into_iter().enumerate() {
        let id = format!("d{n}");
        let reply = path.push(&id, token).await;
        assert_error(&reply, &id, "cancel", "item-not-found");
        assert_eq!(path.only_request_for(token).reason.as_deref(), Some(reason));

        // The same token again (Prosody reuses the IQ id): answered from memory.
        let reply = path.push(&id, token).await;
        assert_error(&reply, &id, "cancel", "item-not-found");
        path.only_request_for(token);
    }
}

// --- errors that must not disable a registration --------------------------------------------

#[tokio::test]
async fn throttled_push_answers_wait_and_holds_the_token_without_a_retry_after() {
    let mut path = ApplePath::start(Auth::Token).await;
    // `throttled…` → 429 TooManyRequests without Retry-After, as Apple answers it.
    let reply = path.push("r1", "throttled-token-1").await;
    assert_error(&reply, "r1", "wait", "resource-constraint");
    let throttled = path.only_request_for("throttled-token-1");
    assert_eq!(throttled.status, 429);
    // fpush's own hold (THROTTLE_HOLD, a minute) applies: not asked again meanwhile.
    let reply = path.push("r2", "throttled-token-1").await;
    assert_error(&reply, "r2", "wait", "resource-constraint");
    path.only_request_for("throttled-token-1");
}

#[tokio::test]
async fn service_unavailable_twice_answers_wait_internal_server_error_after_exactly_two_requests() {
    let mut path = ApplePath::start(Auth::Certificate(P12Cipher::Modern)).await;
    // `unavailable…` → 503 every time.
    let reply = path.push("u1", "unavailable-token-1").await;
    assert_error(&reply, "u1", "wait", "internal-server-error");
    assert_eq!(path.apns.server.count_for("unavailable-token-1"), 2);

    // One 503 then success: the retry delivers it.
    let reply = path.push("u2", "unavailable-once-token-1").await;
    assert_result(&reply, "u2");
    assert_eq!(path.apns.server.count_for("unavailable-once-token-1"), 2);
}

#[tokio::test]
async fn stalled_apns_answers_wait_remote_server_timeout_after_the_request_timeout() {
    let mut path = ApplePath::start(Auth::Token).await;
    // Warm the connection so the measured time is the stalled request alone.
    assert_result(&path.push("s0", DEVICE_TOKEN).await, "s0");

    let started = Instant::now();
    // `stall…` → the stream is never answered.
    let reply = path.push("s1", "stall-token-1").await;
    let took = started.elapsed();
    assert_error(&reply, "s1", "wait", "remote-server-timeout");
    assert_answered_at_the_timeout(took, REQUEST_TIMEOUT);
    // Never retried after a timeout: Apple may have delivered it.
    assert_eq!(path.apns.server.count_for("stall-token-1"), 1);

    // The stalled stream does not hold up the shared connection.
    assert_result(&path.push("s2", DEVICE_TOKEN).await, "s2");
}

#[tokio::test]
async fn a_certificate_for_another_app_is_an_operator_error_not_a_dead_token() {
    // The module's topic names another app than its certificate: Apple refuses the topic, and
    // the device's token is as good as before.
    let other = json!({"topic": "com.example.other"});
    let mut path = ApplePath::start_with(Auth::Certificate(P12Cipher::Modern), other).await;
    for n in 1..=2 {
        let id = format!("x{n}");
        assert_error(
            &path.push(&id, DEVICE_TOKEN).await,
            &id,
            "wait",
            "internal-server-error",
        );
        assert_eq!(
            path.apns.server.count_for(DEVICE_TOKEN),
            n,
            "not remembered dead"
        );
    }
    let refused = path.apns.server.received();
    assert!(refused
        .iter()
        .all(|r| r.reason.as_deref() == Some("TopicDisallowed")));
}

#[tokio::test]
async fn operator_errors_answer_wait_internal_server_error_and_keep_the_token() {
    let mut path = ApplePath::start(Auth::Certificate(P12Cipher::Modern)).await;
    let answers = [
        (400, "TopicDisallowed"),
        (400, "BadTopic"),
        (403, "BadCertificate"),
        (429, "TooManyProviderTokenUpdates"),
    ];
    for (n, (status, reason)) in answers.into_iter().enumerate() {
        let token = format!("{n}").repeat(64);
        path.apns
            .server
            .enqueue(&token, [ApnsAnswer::error(status, reason)]);
        let id = format!("m{n}");
        let reply = path.push(&id, &token).await;
        assert_error(&reply, &id, "wait", "internal-server-error");
        assert_eq!(
            path.apns.server.count_for(&token),
            1,
            "{reason} is not retried"
        );

        // The token was not declared dead: once the configuration is right it is delivered.
        assert_result(&path.push(&id, &token).await, &id);
        assert_eq!(path.apns.server.count_for(&token), 2);
    }
}

#[tokio::test]
async fn a_payload_apple_finds_too_large_answers_wait_policy_violation_and_is_no_misconfiguration()
{
    let mut path = ApplePath::start(Auth::Token).await;
    path.apns
        .server
        .enqueue(DEVICE_TOKEN, [ApnsAnswer::error(413, "PayloadTooLarge")]);
    let reply = path.push("p1", DEVICE_TOKEN).await;
    assert_error(&reply, "p1", "wait", "policy-violation");
    // Apple's limit, not fpush's stanza size: the text must not point at limits.maxStanzaSize.
    assert!(
        reply
            .raw
            .contains("The push is too large for the push service."),
        "{}",
        reply.raw
    );
    assert_eq!(path.apns.server.count_for(DEVICE_TOKEN), 1, "not retried");
    // One sender's long message: the token lives on and the operator's alert stays quiet.
    assert_result(&path.push("p2", DEVICE_TOKEN).await, "p2");
    assert!(
        !path.fpush.log().contains("misconfigured"),
        "{}",
        path.fpush.log()
    );
}

#[tokio::test]
async fn invalid_provider_token_answers_wait() {
    let mut path = ApplePath::start(Auth::Token).await;
    path.apns.server.enqueue(
        DEVICE_TOKEN,
        [ApnsAnswer::error(403, "InvalidProviderToken")],
    );
    let reply = path.push("i1", DEVICE_TOKEN).await;
    assert_error(&reply, "i1", "wait", "internal-server-error");
    // A provider token minutes old is not renewed (Apple allows one renewal per 20 minutes), so
    // the push is not retried.
    assert_eq!(path.apns.server.count_for(DEVICE_TOKEN), 1);
    let log = path.fpush.log_with("misconfigured");
    assert!(log.contains("misconfigured"), "the operator is told: {log}");
}

// --- the core's guard against wiping an app's registrations ---------------------------------

#[tokio::test]
async fn a_wrong_topic_for_twenty_distinct_tokens_turns_cancel_into_wait() {
    // The module sends a topic the devices' tokens do not belong to: Apple answers
    // DeviceTokenNotForTopic for every one of them.
    let mut path =
        ApplePath::start_with(Auth::Token, json!({"topic": "org.example.wrong-app"})).await;
    for n in 1..=25 {
        let id = format!("w{n}");
        let token = format!("{n:064x}");
        let reply = path.push(&id, &token).await;
        assert_eq!(
            path.only_request_for(&token).reason.as_deref(),
            Some("DeviceTokenNotForTopic")
        );
        if n < 20 {
            assert_error(&reply, &id, "cancel", "item-not-found");
        } else {
            assert_error(&reply, &id, "wait", "internal-server-error");
        }
    }
}
