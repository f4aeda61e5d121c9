//! The whole FCM path: a Prosody-shaped push IQ goes into the real `fpush` binary, out of its
//! `google` module (service-account OAuth, HTTP v1) to the in-process FCM test server and its
//! token endpoint, and the reply stanza that comes back is the one the reply table in
//! ARCHITECTURE.md asks for — for every error shape the FCM module distinguishes.

mod common;

use std::time::{Duration, Instant};

use common::*;
use fpush_testkit::fcm::{FcmServer, RecordedMessage, TokenEndpointMode};
use fpush_testkit::settings::with_keys;
use serde_json::{json, Value};

/// Short, so the stalled-provider test stays fast.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(500);
/// A registration token shaped like the ones Firebase hands out.
const DEVICE_TOKEN: &str = "fcm-device-token-7f3a9c:APA91bH1x2y3z4_example-registration";

/// A running path: FCM test server, fake XMPP server, the fpush process and its link.
struct GooglePath {
    fcm: FcmServer,
    link: ComponentLink,
    fpush: Daemon,
    _xmpp: FakeXmppServer,
    _files: tempfile::TempDir,
}

impl GooglePath {
    /// Everything up; `fcm_extra` (e.g. `{"dataFromSummary": true}`) is added to the `fcm` block.
    async fn start(fcm_extra: Value) -> Self {
        Self::start_with(fcm_extra, None).await
    }

    /// Like [`GooglePath::start`]; with `project`, the service-account file names that Firebase
    /// project instead of the test server's (same account and key, so OAuth still succeeds).
    async fn start_with(fcm_extra: Value, project: Option<&str>) -> Self {
        let fcm = FcmServer::start().await.unwrap();
        let files = tempfile::tempdir().unwrap();
        let timeout = format!("{}ms", REQUEST_TIMEOUT.as_millis());
        let mut block = with_keys(fcm.settings(), json!({"requestTimeout": timeout}));
        if let Some(project) = project {
            let mut account: Value = serde_json::from_str(&fcm.account().json()).unwrap();
            account["project_id"] = project.into();
            let path = files.path().join("other-project.json");
            std::fs::write(&path, account.to_string()).unwrap();
            block["fcmSecretPath"] = json!(path);
        }
        // The ratelimit is off so every push of a test reaches the module; the dead-token memory
        // is the core's default (on).
        let modules = json!({ "android": { "type": "google", "is_default_module": true,
            "ratelimit": { "enabled": false }, "fcm": with_keys(block, fcm_extra) } });
        let mut xmpp = FakeXmppServer::bind(SECRET).await.unwrap();
        let fpush = Daemon::start(&settings(&xmpp, &modules.to_string(), ""));
        let link = xmpp.accept(WAIT).await.expect("fpush connects");
        Self {
            fcm,
            link,
            fpush,
            _xmpp: xmpp,
            _files: files,
        }
    }

    async fn push(&mut self, id: &str, token: &str) -> Stanza {
        push_and_reply(&mut self.link, id, token).await
    }

    /// Every `messages:send` request for `token`.
    fn requests_for(&self, token: &str) -> Vec<RecordedMessage> {
        self.fcm
            .messages()
            .into_iter()
            .filter(|m| m.device_token.as_deref() == Some(token))
            .collect()
    }

    fn count_for(&self, token: &str) -> usize {
        self.requests_for(token).len()
    }
}

// --- delivery ------------------------------------------------------------------------------

#[tokio::test]
async fn push_reaches_fcm_as_a_valid_high_priority_v1_message_and_gets_a_result() {
    let mut path = GooglePath::start(
        json!({"dataFromSummary": true, "additionalData": { "app": "chat" }, "ttl": "1h"}),
    )
    .await;

    let reply = path.push("g1", DEVICE_TOKEN).await;
    assert_result(&reply, "g1");

    let requests = path.requests_for(DEVICE_TOKEN);
    assert_eq!(requests.len(), 1, "{requests:?}");
    let request = &requests[0];
    assert_eq!(request.status, 200, "the test server accepted it");
    assert_eq!(request.project, path.fcm.project_id());
    // The Prosody IQ's summary: message-count 1, an empty sender, the dummy body.
    assert_eq!(
        request.body,
        serde_json::json!({ "message": {
            "token": DEVICE_TOKEN,
            "data": { "app": "chat", "message-count": "1", "last-message-body": "New Message!" },
            "android": { "priority": "high", "ttl": "3600s" },
        } })
    );
    assert_eq!(path.fcm.tokens_granted(), 1);

    // The access token is cached: the next push asks the token endpoint nothing.
    assert_result(&path.push("g2", "another-device-token").await, "g2");
    assert_eq!(path.fcm.token_requests(), 1);
}

#[tokio::test]
async fn default_settings_send_a_data_message_with_a_four_week_ttl() {
    let mut path = GooglePath::start(json!({})).await;
    assert_result(&path.push("d1", DEVICE_TOKEN).await, "d1");
    let requests = path.requests_for(DEVICE_TOKEN);
    assert_eq!(
        requests[0].body,
        serde_json::json!({ "message": {
            "token": DEVICE_TOKEN,
            "android": { "priority": "high", "ttl": "2419200s" },
        } })
    );
}

// --- dead tokens ----------------------------------------------------------------------------

#[tokio::test]
async fn dead_tokens_answer_cancel_and_are_then_answered_without_asking_fcm() {
    let mut path = GooglePath::start(json!({})).await;
    // The testkit's token convention picks each error shape.
    let cases = [
        ("dead-token-1", "UNREGISTERED"),
        ("mismatch-token-1", "SENDER_ID_MISMATCH"),
        ("baddevice-token-1", "INVALID_ARGUMENT"),
    ];
    for (n, (token, reason)) in cases.into_iter().enumerate() {
        let id = format!("x{n}");
        let reply = path.push(&id, token).await;
        assert_error(&reply, &id, "cancel", "item-not-found");
        let requests = path.requests_for(token);
        assert_eq!(requests.len(), 1, "{requests:?}");
        assert_eq!(requests[0].reason.as_deref(), Some(reason));

        // The same token again (Prosody reuses the IQ id): answered from memory.
        let reply = path.push(&id, token).await;
        assert_error(&reply, &id, "cancel", "item-not-found");
        assert_eq!(path.count_for(token), 1);
    }
}

// --- errors that must not disable a registration --------------------------------------------

#[tokio::test]
async fn invalid_argument_about_another_field_answers_wait_and_keeps_the_token() {
    let mut path = GooglePath::start(json!({})).await;
    // `invalidarg…` → INVALID_ARGUMENT naming message.android.collapse_key: our fault.
    let reply = path.push("a1", "invalidarg-token-1").await;
    assert_error(&reply, "a1", "wait", "internal-server-error");
    assert_eq!(path.count_for("invalidarg-token-1"), 1, "not retried");
    // Not declared dead: the next push for it asks FCM again.
    let reply = path.push("a1", "invalidarg-token-1").await;
    assert_error(&reply, "a1", "wait", "internal-server-error");
    assert_eq!(path.count_for("invalidarg-token-1"), 2);
}

#[tokio::test]
async fn quota_exceeded_answers_wait_resource_constraint_without_a_retry() {
    let mut path = GooglePath::start(json!({})).await;
    let reply = path.push("q1", "throttled-token-1").await;
    assert_error(&reply, "q1", "wait", "resource-constraint");
    assert_eq!(path.count_for("throttled-token-1"), 1);
}

#[tokio::test]
async fn server_errors_are_retried_once_then_answer_wait_internal_server_error() {
    let mut path = GooglePath::start(json!({})).await;
    // UNAVAILABLE (503), INTERNAL (500), and a load balancer's HTML 502.
    for (n, token) in ["unavailable-token-1", "internal-token-1", "html-token-1"]
        .into_iter()
        .enumerate()
    {
        let id = format!("e{n}");
        let reply = path.push(&id, token).await;
        assert_error(&reply, &id, "wait", "internal-server-error");
        assert_eq!(path.count_for(token), 2, "{token}: exactly one retry");
    }
    // One 503 then success: the retry delivers it.
    let reply = path.push("e9", "unavailable-once-token-1").await;
    assert_result(&reply, "e9");
    assert_eq!(path.count_for("unavailable-once-token-1"), 2);
}

#[tokio::test]
async fn stalled_fcm_answers_wait_remote_server_timeout_after_the_request_timeout() {
    let mut path = GooglePath::start(json!({})).await;
    // Warm the connection and the access token so the measured time is the stalled send alone.
    assert_result(&path.push("s0", DEVICE_TOKEN).await, "s0");

    let started = Instant::now();
    let reply = path.push("s1", "stall-token-1").await;
    let took = started.elapsed();
    assert_error(&reply, "s1", "wait", "remote-server-timeout");
    assert_answered_at_the_timeout(took, REQUEST_TIMEOUT);
    // Never retried after a timeout: Google may have accepted it.
    assert_eq!(path.count_for("stall-token-1"), 1);
    // The stalled stream does not hold up the shared connection.
    assert_result(&path.push("s2", DEVICE_TOKEN).await, "s2");
}

#[tokio::test]
async fn a_connection_reset_after_sending_answers_wait_without_a_retry() {
    let mut path = GooglePath::start(json!({})).await;
    let reply = path.push("c1", "reset-token-1").await;
    assert_error(&reply, "c1", "wait", "internal-server-error");
    assert_eq!(path.count_for("reset-token-1"), 1, "could notify twice");
    // A new connection serves the next push.
    assert_result(&path.push("c2", DEVICE_TOKEN).await, "c2");
}

#[tokio::test]
async fn third_party_auth_error_answers_wait_without_refreshing_the_token() {
    let mut path = GooglePath::start(json!({})).await;
    for (id, token) in [
        ("t1", "thirdpartyauth-token-1"),
        ("t2", "thirdpartyauth-token-2"),
    ] {
        let reply = path.push(id, token).await;
        assert_error(&reply, id, "wait", "internal-server-error");
        assert_eq!(path.count_for(token), 1, "no retry");
    }
    // The project's APNs or Web Push credentials are at fault, not fpush's access token.
    assert_eq!(path.fcm.tokens_granted(), 1, "never a refresh per push");
    let log = path.fpush.log_with("THIRD_PARTY_AUTH_ERROR");
    assert!(log.contains("Firebase console"), "names the setting: {log}");
    // Android devices of the project are still served.
    assert_result(&path.push("t3", DEVICE_TOKEN).await, "t3");
}

#[tokio::test]
async fn oauth_endpoint_down_answers_wait_and_recovers() {
    let mut path = GooglePath::start(json!({})).await;
    path.fcm.set_token_endpoint(TokenEndpointMode::Fail {
        status: 503,
        body: "service unavailable".into(),
    });
    let reply = path.push("o1", DEVICE_TOKEN).await;
    assert_error(&reply, "o1", "wait", "internal-server-error");
    assert_eq!(path.fcm.message_count(), 0, "nothing sent without a token");

    path.fcm.set_token_endpoint(TokenEndpointMode::Grant);
    // A failed refresh is not tried again for a second (pushes meanwhile share its failure).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_result(&path.push("o2", DEVICE_TOKEN).await, "o2");
}

#[tokio::test]
async fn a_wrong_project_answers_wait_after_one_token_refresh() {
    let mut path = GooglePath::start_with(json!({}), Some("some-other-project")).await;
    let reply = path.push("p1", DEVICE_TOKEN).await;
    assert_error(&reply, "p1", "wait", "internal-server-error");
    let requests = path.requests_for(DEVICE_TOKEN);
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(requests
        .iter()
        .all(|r| r.project == "some-other-project"
            && r.reason.as_deref() == Some("PERMISSION_DENIED")));
    assert_eq!(path.fcm.tokens_granted(), 2, "one refresh");

    // Not a dead token: the next push asks FCM again, once, with the token it has (one
    // refused again within a minute of the last refresh is not dropped: no refresh per push).
    let reply = path.push("p1", DEVICE_TOKEN).await;
    assert_error(&reply, "p1", "wait", "internal-server-error");
    assert_eq!(path.count_for(DEVICE_TOKEN), 3);
    assert_eq!(path.fcm.tokens_granted(), 2, "no second refresh");
}

// --- the core's guard against wiping an app's registrations ---------------------------------

#[tokio::test]
async fn sender_id_mismatch_for_twenty_distinct_tokens_turns_cancel_into_wait() {
    let mut path = GooglePath::start(json!({})).await;
    for n in 1..=25 {
        let id = format!("w{n}");
        // `mismatch…` → SENDER_ID_MISMATCH: the tokens belong to another Firebase project.
        let token = format!("mismatch-{n}");
        let reply = path.push(&id, &token).await;
        assert_eq!(path.count_for(&token), 1);
        if n < 20 {
            assert_error(&reply, &id, "cancel", "item-not-found");
        } else {
            assert_error(&reply, &id, "wait", "internal-server-error");
        }
    }
}
