//! The Push 2.0 relay over a real component connection: push2 messages go into the `fpush`
//! binary, out of its built-in Web Push module to an in-process Web Push service (test CA), and
//! what comes back is what the issue asks: nothing on success, a `<message type='error'>` with
//! the same id otherwise. The payload is encrypted and the VAPID token signed on the test side by
//! an independent implementation (`tests/push2_crypto.py`, PyPI `http_ece`), and decrypted and
//! verified at the receiver.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use fpush_testkit::tls::TestPki;
use fpush_testkit::webpush::{
    verify_vapid, Versions, WebPushAnswer, WebPushReceived, WebPushTestServer,
};
use serde_json::{json, Value};

/// Long enough for a provider call to finish and its answer (if any) to come back.
const SETTLE: Duration = Duration::from_millis(300);

/// A running relay: the Web Push service, the fake XMPP server's link, the fpush process.
struct Relay {
    service: WebPushTestServer,
    link: ComponentLink,
    fpush: Daemon,
    _pki: TestPki,
    _xmpp: FakeXmppServer,
    _ca_dir: tempfile::TempDir,
}

impl Relay {
    /// Everything up; `push2` is the settings section (the service's origin listed and its CA
    /// trusted unless the caller gives its own section).
    async fn start(versions: Versions, push2: Option<Value>) -> Relay {
        let pki = TestPki::new().unwrap();
        let service = WebPushTestServer::start(&pki, versions).await.unwrap();
        let mut xmpp = FakeXmppServer::bind(SECRET).await.unwrap();
        // Read at start-up and whenever a client for a new origin is made.
        let ca_dir = tempfile::tempdir().unwrap();
        let ca = ca_dir.path().join("ca.pem");
        pki.write_ca_pem(&ca).unwrap();
        let push2 = push2
            .unwrap_or_else(|| json!({ "webPushOrigins": [service.origin()], "caFilePath": ca }));
        let extra = format!("\"push2\": {push2},");
        let fpush = Daemon::start(&settings(&xmpp, &demo_module(None, "0s"), &extra));
        let link = connect(&mut xmpp).await;
        Relay {
            service,
            link,
            fpush,
            _pki: pki,
            _xmpp: xmpp,
            _ca_dir: ca_dir,
        }
    }

    async fn start_default() -> Relay {
        Relay::start(Versions::Both, None).await
    }

    /// An endpoint on the service.
    fn endpoint(&self, path: &str) -> String {
        format!("{}/{path}", self.service.origin())
    }

    async fn send(&mut self, stanza: &str) {
        self.link.send(stanza).await.expect("send to fpush");
    }

    /// The requests the service got, once `count` have arrived.
    async fn wait_for_requests(&self, count: usize) -> Vec<WebPushReceived> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let received = self.service.received();
            if received.len() >= count {
                return received;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {count} requests arrived; log:\n{}",
                received.len(),
                self.fpush.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Asserts nothing but the answer to a ping comes back now: a silent success.
    async fn assert_silent(&mut self) {
        tokio::time::sleep(SETTLE).await;
        let ping = "<iq type='get' id='probe' from='localhost' to='push.localhost'>\
                    <ping xmlns='urn:xmpp:ping'/></iq>";
        self.send(ping).await;
        let next = self.link.next_stanza(WAIT).await.unwrap();
        assert_eq!(next.attr("id"), Some("probe"), "unexpected: {}", next.raw);
    }
}

/// A push2 message as mod_push2 sends it.
fn push2_message(id: &str, from: &str, client: &str, inner: &str) -> String {
    format!(
        "<message from='{from}' to='{JID}' id='{id}'><notification xmlns='urn:xmpp:push2:0'>\
         <client>{client}</client>{inner}</notification></message>"
    )
}

/// The test side's encryption: a subscription, its payload, a VAPID token and key.
fn encrypted(text: &str, audience: &str) -> Value {
    let output = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/push2_crypto.py"
        ))
        .args(["encrypt", text, audience])
        .output()
        .expect("python3 runs tests/push2_crypto.py (pip install -r requirements-test.txt)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The receiver's decryption of a body the service got.
fn decrypted(subscription: &Value, body: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/push2_crypto.py"
        ))
        .arg("decrypt")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let request = json!({
        "body_hex": body.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        "ua_private": subscription["ua_private"],
        "auth": subscription["auth"],
    });
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(request.to_string().as_bytes()).unwrap();
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the body does not decrypt: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn full_notification(subscription: &Value, priority: &str) -> String {
    format!(
        "<priority>{priority}</priority>\
         <encrypted xmlns='urn:xmpp:sce:rfc8291:0'><payload>{}</payload></encrypted>\
         <jwt key='{}'>{}</jwt>",
        subscription["payload"].as_str().unwrap(),
        subscription["key"].as_str().unwrap(),
        subscription["jwt"].as_str().unwrap(),
    )
}

fn assert_message_error(stanza: &Stanza, id: &str, kind: &str, condition: &str) {
    assert_eq!(stanza.name, "message", "{}", stanza.raw);
    assert_eq!(stanza.kind(), Some("error"), "{}", stanza.raw);
    assert_eq!(stanza.attr("id"), Some(id), "{}", stanza.raw);
    assert_eq!(stanza.attr("from"), Some(JID), "{}", stanza.raw);
    assert_eq!(stanza.attr("to"), Some("localhost"), "{}", stanza.raw);
    assert_eq!(stanza.error_type.as_deref(), Some(kind), "{}", stanza.raw);
    assert_eq!(
        stanza.error_condition.as_deref(),
        Some(condition),
        "{}",
        stanza.raw
    );
}

#[tokio::test]
async fn a_web_push_goes_out_unchanged_decrypts_at_the_receiver_and_is_not_answered() {
    let mut relay = Relay::start_default().await;
    let subscription = encrypted("a new message", &relay.service.origin());
    let client = relay.endpoint("wpush/v2/abc?x=1");
    let message = push2_message(
        "m1",
        "localhost",
        &client,
        &full_notification(&subscription, "high"),
    );
    relay.send(&message).await;
    let received = relay.wait_for_requests(1).await;
    relay.assert_silent().await;
    let request = &received[0];
    assert_eq!(request.method.as_str(), "POST");
    assert_eq!(request.path, "/wpush/v2/abc?x=1");
    assert_eq!(request.alpn.as_deref(), Some("h2"));
    assert_eq!(request.header("content-encoding"), Some("aes128gcm"));
    assert_eq!(request.header("ttl"), Some("2419200"));
    assert_eq!(request.header("urgency"), Some("high"));
    assert_eq!(decrypted(&subscription, &request.body), "a new message");
}

#[tokio::test]
async fn the_vapid_token_passes_through_and_its_key_is_re_encoded_as_base64url() {
    let mut relay = Relay::start_default().await;
    let subscription = encrypted("x", &relay.service.origin());
    let key = subscription["key"].as_str().unwrap();
    assert!(key.contains('+') && key.contains('/'), "{key}");
    let message = push2_message(
        "m1",
        "localhost",
        &relay.endpoint("ep"),
        &full_notification(&subscription, "low"),
    );
    relay.send(&message).await;
    let request = relay.wait_for_requests(1).await.remove(0);
    let authorization = request.header("authorization").unwrap();
    let verified = verify_vapid(authorization).unwrap_or_else(|e| panic!("{e}: {authorization}"));
    assert_eq!(verified.claims["aud"], relay.service.origin());
    assert!(authorization.starts_with(&format!(
        "vapid t={}, k=",
        subscription["jwt"].as_str().unwrap()
    )));
    assert_eq!(request.header("urgency"), Some("low"));
}

#[tokio::test]
async fn a_service_that_offers_only_http1_is_served_over_http1() {
    let mut relay = Relay::start(Versions::Http1Only, None).await;
    let subscription = encrypted("over http/1.1", &relay.service.origin());
    let message = push2_message(
        "m1",
        "localhost",
        &relay.endpoint("ep"),
        &full_notification(&subscription, "normal"),
    );
    relay.send(&message).await;
    let request = relay.wait_for_requests(1).await.remove(0);
    relay.assert_silent().await;
    assert_eq!(request.alpn.as_deref(), Some("http/1.1"));
    assert_eq!(decrypted(&subscription, &request.body), "over http/1.1");
}

#[tokio::test]
async fn service_statuses_come_back_as_message_errors() {
    let mut relay = Relay::start_default().await;
    let subscription = encrypted("x", &relay.service.origin());
    let inner = full_notification(&subscription, "normal");
    let cases = [
        (404, "cancel", "item-not-found"),
        (410, "cancel", "item-not-found"),
        (413, "modify", "not-acceptable"),
        (429, "wait", "resource-constraint"),
        (500, "wait", "internal-server-error"),
        (503, "wait", "internal-server-error"),
        (400, "modify", "bad-request"),
        (401, "modify", "bad-request"),
        (403, "modify", "bad-request"),
    ];
    for (n, (status, kind, condition)) in cases.into_iter().enumerate() {
        relay.service.enqueue(WebPushAnswer::status(status));
        let id = format!("s{status}");
        let client = relay.endpoint(&format!("ep/{n}"));
        relay
            .send(&push2_message(&id, "localhost", &client, &inner))
            .await;
        let reply = relay.link.next_stanza(WAIT).await.unwrap();
        assert_message_error(&reply, &id, kind, condition);
    }
    assert_eq!(relay.service.received().len(), cases.len());
}

#[tokio::test]
async fn a_dead_endpoint_is_remembered_and_not_asked_again() {
    let mut relay = Relay::start_default().await;
    let client = relay.endpoint("gone");
    relay.service.enqueue(WebPushAnswer::status(410));
    for id in ["d1", "d2"] {
        relay
            .send(&push2_message(id, "localhost", &client, ""))
            .await;
        let reply = relay.link.next_stanza(WAIT).await.unwrap();
        assert_message_error(&reply, id, "cancel", "item-not-found");
    }
    assert_eq!(relay.service.received().len(), 1);
}

#[tokio::test]
async fn an_unlisted_loopback_endpoint_is_refused_and_nothing_is_sent() {
    let mut relay = Relay::start_default().await;
    let port = relay.service.port();
    for (id, client, kind, condition) in [
        (
            "r1",
            format!("https://127.0.0.1:{port}/ep"),
            "cancel",
            "not-allowed",
        ),
        (
            "r2",
            "https://127.0.0.1/ep".to_owned(),
            "cancel",
            "not-allowed",
        ),
        (
            "r3",
            format!("http://localhost:{port}/ep"),
            "modify",
            "bad-request",
        ),
    ] {
        relay
            .send(&push2_message(id, "localhost", &client, ""))
            .await;
        let reply = relay.link.next_stanza(WAIT).await.unwrap();
        assert_message_error(&reply, id, kind, condition);
    }
    assert!(relay.service.received().is_empty());
}

#[tokio::test]
async fn a_fenced_endpoint_is_refused_every_time_never_remembered_as_dead() {
    let mut relay = Relay::start_default().await;
    for id in ["f1", "f2", "f3"] {
        relay
            .send(&push2_message(id, "localhost", "https://127.0.0.1/ep", ""))
            .await;
        let reply = relay.link.next_stanza(WAIT).await.unwrap();
        // A remembered dead target would come back `cancel/item-not-found`.
        assert_message_error(&reply, id, "cancel", "not-allowed");
    }
    assert!(relay.service.received().is_empty());
}

#[tokio::test]
async fn a_wildcard_listing_does_not_open_a_loopback_address() {
    let pki_origin_wildcard = json!({ "webPushOrigins": ["https://*.0.0.1"] });
    let mut relay = Relay::start(Versions::Both, Some(pki_origin_wildcard)).await;
    let client = "https://127.0.0.1/ep";
    relay
        .send(&push2_message("w1", "localhost", client, ""))
        .await;
    let reply = relay.link.next_stanza(WAIT).await.unwrap();
    assert_message_error(&reply, "w1", "cancel", "not-allowed");
    assert!(relay.service.received().is_empty());
}

#[tokio::test]
async fn bad_notifications_are_answered_modify() {
    let mut relay = Relay::start_default().await;
    let too_large = "A".repeat(4100 * 4 / 3);
    let cases = [
        (
            "b1",
            push2_message("b1", "localhost", "not a url", ""),
            "bad-request",
        ),
        (
            "b2",
            push2_message(
                "b2",
                "localhost",
                &relay.endpoint("ep"),
                &format!("<encrypted xmlns='urn:xmpp:sce:rfc8291:0'><payload>{too_large}</payload></encrypted>"),
            ),
            "not-acceptable",
        ),
        (
            "b3",
            push2_message("b3", "localhost", &relay.endpoint("ep"), "<priority>now</priority>"),
            "bad-request",
        ),
    ];
    for (id, stanza, condition) in cases {
        relay.send(&stanza).await;
        let reply = relay.link.next_stanza(WAIT).await.unwrap();
        assert_message_error(&reply, id, "modify", condition);
    }
    assert!(relay.service.received().is_empty());
}

#[tokio::test]
async fn full_jids_are_forbidden_and_error_messages_are_never_answered() {
    let mut relay = Relay::start_default().await;
    let client = relay.endpoint("ep");
    let error = push2_message("e1", "localhost", &client, "")
        .replace("<message ", "<message type='error' ");
    relay.send(&error).await;
    relay
        .send(&push2_message("f1", "user@localhost/phone", &client, ""))
        .await;
    let reply = relay.link.next_stanza(WAIT).await.unwrap();
    assert_eq!(reply.attr("id"), Some("f1"), "{}", reply.raw);
    assert_eq!(reply.name, "message");
    assert_eq!(reply.error_type.as_deref(), Some("auth"));
    assert_eq!(reply.error_condition.as_deref(), Some("forbidden"));
    relay.assert_silent().await;
    assert!(relay.service.received().is_empty());
}

#[tokio::test]
async fn without_push2_settings_web_push_is_refused() {
    let mut xmpp = FakeXmppServer::bind(SECRET).await.unwrap();
    let _fpush = Daemon::start(&settings(&xmpp, &demo_module(None, "0s"), ""));
    let mut link = connect(&mut xmpp).await;
    let message = push2_message(
        "n1",
        "localhost",
        "https://fcm.googleapis.com/fcm/send/x",
        "",
    );
    link.send(&message).await.unwrap();
    let reply = link.next_stanza(WAIT).await.unwrap();
    assert_message_error(&reply, "n1", "cancel", "item-not-found");
}

#[tokio::test]
async fn push2_messages_mixed_with_push_iqs_are_each_answered_or_delivered_once() {
    let mut relay = Relay::start_default().await;
    let subscription = encrypted("mixed", &relay.service.origin());
    let inner = full_notification(&subscription, "normal");
    let rounds = 40;
    let mut expected_errors = Vec::new();
    for n in 0..rounds {
        relay
            .send(&push_iq(&format!("iq{n}"), &format!("token{n}"), None))
            .await;
        let client = relay.endpoint(&format!("sub/{n}"));
        relay
            .send(&push2_message(
                &format!("p{n}"),
                "localhost",
                &client,
                &inner,
            ))
            .await;
        if n % 10 == 9 {
            // Refused by the fence: answered, never sent.
            let id = format!("x{n}");
            relay
                .send(&push2_message(&id, "localhost", "https://127.0.0.1/x", ""))
                .await;
            expected_errors.push(id);
        }
    }
    let replies = relay
        .link
        .collect(rounds + expected_errors.len(), WAIT)
        .await
        .unwrap();
    let mut results: Vec<String> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    for reply in &replies {
        let id = reply.attr("id").unwrap().to_owned();
        match reply.name.as_str() {
            "iq" => {
                assert_result(reply, &id);
                results.push(id);
            }
            _ => {
                assert_message_error(reply, &id, "cancel", "not-allowed");
                errors.push(id);
            }
        }
    }
    results.sort();
    results.dedup();
    assert_eq!(results.len(), rounds);
    errors.sort();
    expected_errors.sort();
    assert_eq!(errors, expected_errors);
    let received = relay.wait_for_requests(rounds).await;
    relay.assert_silent().await;
    let mut paths: Vec<String> = relay
        .service
        .received()
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert_eq!(received.len(), rounds);
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), rounds, "each push2 push was posted once");
}

#[tokio::test]
#[cfg_attr(
    feature = "random_delay_before_push",
    ignore = "the jitter moves provider calls in time"
)]
async fn an_enabled_ratelimit_keys_on_the_client() {
    let pki = TestPki::new().unwrap();
    let service = WebPushTestServer::start(&pki, Versions::Both)
        .await
        .unwrap();
    let ca_dir = tempfile::tempdir().unwrap();
    let ca = ca_dir.path().join("ca.pem");
    pki.write_ca_pem(&ca).unwrap();
    let push2 = json!({
        "webPushOrigins": [service.origin()], "caFilePath": ca,
        "ratelimit": { "enabled": true, "ratelimitTime": "30s" },
    });
    let mut xmpp = FakeXmppServer::bind(SECRET).await.unwrap();
    let extra = format!("\"push2\": {push2},");
    let _fpush = Daemon::start(&settings(&xmpp, &demo_module(None, "0s"), &extra));
    let mut link = connect(&mut xmpp).await;
    let same = format!("{}/same", service.origin());
    let other = format!("{}/other", service.origin());
    let call = format!("{}/call", service.origin());
    // The first goes out, the second waits for the window, the third is answered wait; another
    // client is not held back, nor are calls (a propose and its retract).
    for (id, client) in [("r1", &same), ("r2", &same), ("r3", &same), ("o1", &other)] {
        link.send(&push2_message(id, "localhost", client, ""))
            .await
            .unwrap();
    }
    for id in ["c1", "c2", "c3"] {
        link.send(&push2_message(id, "localhost", &call, "<voip/>"))
            .await
            .unwrap();
    }
    let reply = link.next_stanza(WAIT).await.unwrap();
    assert_message_error(&reply, "r3", "wait", "resource-constraint");
    tokio::time::sleep(SETTLE).await;
    let mut paths: Vec<String> = service.received().into_iter().map(|r| r.path).collect();
    paths.sort();
    assert_eq!(paths, ["/call", "/call", "/call", "/other", "/same"]);
}

#[tokio::test]
async fn one_sender_s_throttled_subscriptions_do_not_pause_the_service_for_others() {
    let mut relay = Relay::start_default().await;
    // One domain's twenty subscriptions, each throttled by the service for an hour.
    let throttled = 20;
    for _ in 0..throttled {
        relay.service.enqueue(WebPushAnswer {
            status: 429,
            retry_after: Some(3600),
        });
    }
    for n in 0..throttled {
        let client = relay.endpoint(&format!("busy/{n}"));
        relay
            .send(&push2_message(&format!("t{n}"), "localhost", &client, ""))
            .await;
    }
    let replies = relay.link.collect(throttled, WAIT).await.unwrap();
    for reply in &replies {
        let id = reply.attr("id").unwrap();
        assert_message_error(reply, id, "wait", "resource-constraint");
    }
    // Another domain's push to its own subscription still goes out.
    let client = relay.endpoint("calm");
    relay
        .send(&push2_message("o1", "other.example", &client, ""))
        .await;
    let received = relay.wait_for_requests(throttled + 1).await;
    assert_eq!(received[throttled].path, "/calm");
    relay.assert_silent().await;
}

#[tokio::test]
async fn a_vapid_key_or_token_that_cannot_be_sent_is_refused_by_the_door() {
    // Once they passed the door and failed in the module, answered with the text and counted
    // under the outcome of a push service refusing the push, though nothing was sent.
    let mut relay = Relay::start_default().await;
    let cases = [
        ("v1", "<jwt key='not base64!'>e.y.j</jwt>"),
        ("v2", "<jwt key='BPk+/w=='>e.y\nj</jwt>"),
    ];
    for (id, inner) in cases {
        let stanza = push2_message(id, "localhost", &relay.endpoint("ep"), inner);
        relay.send(&stanza).await;
        let reply = relay.link.next_stanza(WAIT).await.unwrap();
        assert_message_error(&reply, id, "modify", "bad-request");
        assert!(reply.raw.contains("VAPID"), "{}", reply.raw);
    }
    assert!(relay.service.received().is_empty());
}
