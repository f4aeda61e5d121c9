//! push2's APNS form over a real component connection: `https://api.push.apple.com/3/device/
//! <token>#<topic>` goes to the apple module of that topic and environment (the development host
//! to a sandbox module), as an alert titled with the module's `alertTitle`, `mutable-content: 1`
//! and the encrypted payload under `rfc8291`; `<voip/>` with a VoIP token is a PushKit call.

mod common;

use common::*;
use fpush_testkit::apns::{ApnsHarness, Received, TOPIC};
use fpush_testkit::settings::with_keys;
use fpush_testkit::tls::P12Cipher;
use serde_json::{json, Value};

const DEVICE: &str = "3f2a9c1e5b7d4f6a8c0e2b4d6f8a0c2e4b6d8f0a2c4e6b8d0f2a4c6e8b0d2f4a";
const VOIP: &str = "aa2a9c1e5b7d4f6a8c0e2b4d6f8a0c2e4b6d8f0a2c4e6b8d0f2a4c6e8b0d2f4a";
const PAYLOAD: &str = "q83vEjRWeJA+/w==";

struct Apple {
    apns: ApnsHarness,
    link: ComponentLink,
    _fpush: Daemon,
    _xmpp: FakeXmppServer,
}

impl Apple {
    /// A production and a sandbox module of the same app, both at the test server, told apart
    /// by their alert titles.
    async fn start() -> Apple {
        Apple::start_with(json!({"enabled": false}), "").await
    }

    /// The same with the modules' `ratelimit` block and `extra` top-level settings.
    async fn start_with(ratelimit: Value, extra: &str) -> Apple {
        let apns = ApnsHarness::start().await.unwrap();
        let module = |environment: &str, title: &str| {
            let block = with_keys(
                apns.token_settings(),
                json!({"environment": environment, "alertTitle": title}),
            );
            json!({"type": "apple", "ratelimit": ratelimit, "apns": block})
        };
        let modules = json!({
            "ios": module("production", "Production"),
            "ios-dev": module("sandbox", "Sandbox"),
        });
        Apple::launch(apns, modules, extra).await
    }

    /// One production module with certificate auth and no PushKit certificate: it sends calls
    /// as alerts.
    async fn start_without_pushkit() -> Apple {
        let apns = ApnsHarness::start().await.unwrap();
        let block = apns.cert_settings(P12Cipher::Modern).unwrap();
        let modules = json!({"ios": {"type": "apple", "ratelimit": {"enabled": false},
            "apns": block}});
        Apple::launch(apns, modules, "").await
    }

    async fn launch(apns: ApnsHarness, modules: Value, extra: &str) -> Apple {
        let mut xmpp = FakeXmppServer::bind(SECRET).await.unwrap();
        let fpush = Daemon::start(&settings(&xmpp, &modules.to_string(), extra));
        let link = connect(&mut xmpp).await;
        Apple {
            apns,
            link,
            _fpush: fpush,
            _xmpp: xmpp,
        }
    }

    async fn send(&mut self, id: &str, client: &str, inner: &str) {
        let message = format!(
            "<message from='localhost' to='{JID}' id='{id}'>\
             <notification xmlns='urn:xmpp:push2:0'><client>{client}</client>{inner}\
             </notification></message>"
        );
        self.link.send(&message).await.unwrap();
    }

    /// Asserts the next stanza answers `id` as not acceptable and nothing reached Apple.
    async fn assert_refused_unsent(&mut self, id: &str) {
        let reply = self.link.next_stanza(WAIT).await.unwrap();
        assert_eq!(reply.attr("id"), Some(id), "{}", reply.raw);
        assert_eq!(reply.error_type.as_deref(), Some("modify"), "{}", reply.raw);
        let condition = reply.error_condition.as_deref();
        assert_eq!(condition, Some("not-acceptable"), "{}", reply.raw);
        assert!(self.apns.server.received().is_empty());
    }

    async fn wait_for_requests(&self, count: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let received = self.apns.server.received();
            if received.len() >= count {
                return received;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {count} APNS requests: {received:?}",
                received.len()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

fn encrypted(priority: &str) -> String {
    format!(
        "<priority>{priority}</priority><encrypted xmlns='urn:xmpp:sce:rfc8291:0'>\
         <payload>{PAYLOAD}</payload></encrypted>"
    )
}

fn header<'a>(request: &'a Received, name: &str) -> &'a str {
    request.headers.get(name).unwrap().to_str().unwrap()
}

fn body(request: &Received) -> Value {
    serde_json::from_slice(&request.body).unwrap()
}

#[tokio::test]
async fn the_production_host_reaches_the_production_module_as_an_alert_with_the_payload() {
    let mut apple = Apple::start().await;
    let client = format!("https://api.push.apple.com/3/device/{DEVICE}#{TOPIC}");
    apple.send("a1", &client, &encrypted("high")).await;
    let request = apple.wait_for_requests(1).await.remove(0);
    assert_eq!(request.token, DEVICE);
    assert_eq!(header(&request, "apns-topic"), TOPIC);
    assert_eq!(header(&request, "apns-push-type"), "alert");
    assert_eq!(header(&request, "apns-priority"), "10");
    let payload = body(&request);
    assert_eq!(payload["aps"]["alert"]["title"], "Production");
    assert_eq!(payload["aps"]["mutable-content"], 1);
    assert_eq!(payload["rfc8291"], PAYLOAD);
}

#[tokio::test]
async fn the_development_host_reaches_the_sandbox_module_at_priority_5() {
    let mut apple = Apple::start().await;
    let client = format!("https://api.development.push.apple.com/3/device/{DEVICE}#{TOPIC}");
    apple.send("a1", &client, &encrypted("normal")).await;
    let request = apple.wait_for_requests(1).await.remove(0);
    assert_eq!(body(&request)["aps"]["alert"]["title"], "Sandbox");
    assert_eq!(header(&request, "apns-priority"), "5");
}

#[tokio::test]
async fn voip_with_a_voip_token_is_a_pushkit_call_and_without_one_an_alert() {
    let mut apple = Apple::start().await;
    // `&` escaped, as in any XML text.
    let with_voip = format!("https://api.push.apple.com/3/device/{DEVICE}#{TOPIC}&amp;{VOIP}");
    apple
        .send("v1", &with_voip, &format!("{}<voip/>", encrypted("low")))
        .await;
    let call = apple.wait_for_requests(1).await.remove(0);
    assert_eq!(call.token, VOIP);
    assert_eq!(header(&call, "apns-topic"), format!("{TOPIC}.voip"));
    assert_eq!(header(&call, "apns-push-type"), "voip");
    assert_eq!(header(&call, "apns-priority"), "10");
    assert_eq!(call.status, 200);

    let without = format!("https://api.push.apple.com/3/device/{DEVICE}#{TOPIC}");
    apple.send("v2", &without, "<voip/>").await;
    let alert = apple.wait_for_requests(2).await.remove(1);
    assert_eq!(alert.token, DEVICE);
    assert_eq!(header(&alert, "apns-push-type"), "alert");
    // Both are calls: Apple keeps each a minute at most, not the module's four weeks.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for sent in [&call, &alert] {
        let expiration: u64 = header(sent, "apns-expiration").parse().unwrap();
        assert!(
            (now..=now + 60).contains(&expiration),
            "{expiration} at {now}"
        );
    }
}

#[tokio::test]
async fn an_unknown_topic_or_a_malformed_apns_client_is_answered_and_not_sent() {
    let mut apple = Apple::start().await;
    let cases = [
        (
            "u1",
            format!("https://api.push.apple.com/3/device/{DEVICE}#org.other.app"),
            "cancel",
            "item-not-found",
        ),
        (
            "u2",
            format!("https://api.push.apple.com/3/device/{DEVICE}"),
            "modify",
            "bad-request",
        ),
        (
            "u3",
            format!("https://api.push.apple.com/4/thing/{DEVICE}#{TOPIC}"),
            "modify",
            "bad-request",
        ),
    ];
    for (id, client, kind, condition) in cases {
        apple.send(id, &client, "").await;
        let reply = apple.link.next_stanza(WAIT).await.unwrap();
        assert_eq!(reply.name, "message", "{}", reply.raw);
        assert_eq!(reply.attr("id"), Some(id), "{}", reply.raw);
        assert_eq!(reply.error_type.as_deref(), Some(kind), "{}", reply.raw);
        assert_eq!(
            reply.error_condition.as_deref(),
            Some(condition),
            "{}",
            reply.raw
        );
    }
    assert!(apple.apns.server.received().is_empty());
}

#[tokio::test]
async fn a_dead_apns_token_comes_back_cancel() {
    let mut apple = Apple::start().await;
    let client = format!(
        "https://api.push.apple.com/3/device/dead{}#{TOPIC}",
        &DEVICE[4..]
    );
    apple.send("d1", &client, "").await;
    let reply = apple.link.next_stanza(WAIT).await.unwrap();
    assert_eq!(reply.name, "message", "{}", reply.raw);
    assert_eq!(reply.error_type.as_deref(), Some("cancel"), "{}", reply.raw);
    assert_eq!(reply.error_condition.as_deref(), Some("item-not-found"));
}

#[tokio::test]
async fn the_apple_module_s_ratelimit_does_not_hold_push2_pushes_back() {
    let mut apple = Apple::start_with(json!({"ratelimitTime": "60s"}), "").await;
    let client = format!("https://api.push.apple.com/3/device/{DEVICE}#{TOPIC}");
    for id in ["a1", "a2", "a3"] {
        apple.send(id, &client, &encrypted("high")).await;
    }
    apple.wait_for_requests(3).await;
    // Nothing was answered: the next stanza is the answer to this ping.
    let ping = "<iq type='get' id='probe' from='localhost' to='push.localhost'>\
                <ping xmlns='urn:xmpp:ping'/></iq>";
    apple.link.send(ping).await.unwrap();
    let next = apple.link.next_stanza(WAIT).await.unwrap();
    assert_eq!(next.attr("id"), Some("probe"), "unexpected: {}", next.raw);
}

#[tokio::test]
async fn an_enabled_push2_ratelimit_holds_apns_pushes_per_client() {
    let push2 = r#""push2": { "ratelimit": { "enabled": true, "ratelimitTime": "60s" } },"#;
    let mut apple = Apple::start_with(json!({"enabled": false}), push2).await;
    let same = format!("https://api.push.apple.com/3/device/{DEVICE}#{TOPIC}");
    let other = format!("https://api.push.apple.com/3/device/{VOIP}#{TOPIC}");
    // The first goes out, the second waits for the window, the third is answered wait; another
    // client is not held back.
    for (id, client) in [("r1", &same), ("r2", &same), ("r3", &same), ("o1", &other)] {
        apple.send(id, client, &encrypted("high")).await;
    }
    let reply = apple.link.next_stanza(WAIT).await.unwrap();
    assert_eq!(reply.attr("id"), Some("r3"), "{}", reply.raw);
    assert_eq!(reply.error_type.as_deref(), Some("wait"));
    assert_eq!(
        reply.error_condition.as_deref(),
        Some("resource-constraint")
    );
    apple.wait_for_requests(2).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(apple.apns.server.received().len(), 2);
}

#[tokio::test]
async fn a_payload_apns_cannot_carry_is_refused_too_large_and_not_sent() {
    let mut apple = Apple::start().await;
    let client = format!("https://api.push.apple.com/3/device/{DEVICE}#{TOPIC}");
    // Valid base64 of 4,500 bytes: within what a push2 message may carry, over Apple's 4 KiB.
    let payload = "A".repeat(6000);
    let inner = format!(
        "<encrypted xmlns='urn:xmpp:sce:rfc8291:0'><payload>{payload}</payload></encrypted>"
    );
    apple.send("big", &client, &inner).await;
    apple.assert_refused_unsent("big").await;
}

/// A call whose encrypted payload is over an alert's 4 KB and within PushKit's 5 KB.
fn large_call() -> String {
    format!(
        "<encrypted xmlns='urn:xmpp:sce:rfc8291:0'><payload>{}</payload></encrypted><voip/>",
        "A".repeat(4500)
    )
}

#[tokio::test]
async fn a_call_between_4_and_5_kb_keeps_its_alert_within_pushkit_s_limit() {
    let mut apple = Apple::start().await;
    let client = format!("https://api.push.apple.com/3/device/{DEVICE}#{TOPIC}&amp;{VOIP}");
    apple.send("c1", &client, &large_call()).await;
    // What went to Apple (the test server refuses every body over 4096 bytes, calls too, so
    // its answer is not looked at).
    let call = apple.wait_for_requests(1).await.remove(0);
    assert_eq!(header(&call, "apns-push-type"), "voip");
    assert!(call.body.len() <= 5120, "{} bytes", call.body.len());
    let payload = body(&call);
    assert_eq!(payload["aps"]["alert"]["title"], "Production");
    assert_eq!(payload["aps"]["alert"]["body"], "You have a new message");
    assert_eq!(payload["rfc8291"].as_str().map(str::len), Some(4500));
}

#[tokio::test]
async fn a_call_a_module_must_send_as_an_alert_is_refused_when_it_cannot_fit_one() {
    let mut apple = Apple::start_without_pushkit().await;
    let client = format!("https://api.push.apple.com/3/device/{DEVICE}#{TOPIC}&amp;{VOIP}");
    apple.send("c2", &client, &large_call()).await;
    apple.assert_refused_unsent("c2").await;
}

/// A call's retraction (mod_push2 sends `<voip/>` and priority `high` for both the Jingle
/// `propose` and its `retract`) must reach the phone at once: held for the push2 ratelimit's
/// window, the phone rings on for up to `ratelimitTime` after the caller hung up, and a second
/// call within the window is answered `wait` and never rings. The tigase door exempts calls
/// (`Target::urgent`: "a call held 20 s is a missed call"); the push2 door does not.
#[tokio::test]
async fn an_enabled_push2_ratelimit_never_holds_a_call_back() {
    let push2 = r#""push2": { "ratelimit": { "enabled": true, "ratelimitTime": "60s" } },"#;
    let mut apple = Apple::start_with(json!({"enabled": false}), push2).await;
    let client = format!("https://api.push.apple.com/3/device/{DEVICE}#{TOPIC}&amp;{VOIP}");
    let call = format!("{}<voip/>", encrypted("high"));
    apple.send("propose", &client, &call).await;
    apple.send("retract", &client, &call).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let calls = apple.apns.server.received();
    assert_eq!(calls.len(), 2, "the retraction was held back: {calls:?}");
}

/// A push2 push is an alert whatever the module's `apns.pushType`: the app's notification
/// service extension, which decrypts `rfc8291`, runs only for an alert with `mutable-content`,
/// and Apple wants the push type to match the payload. A call the module cannot send over
/// PushKit (certificate auth without a PushKit certificate) goes as such an alert too.
#[tokio::test]
async fn a_push2_push_through_a_background_module_is_an_alert() {
    let apns = ApnsHarness::start().await.unwrap();
    let block = with_keys(
        apns.cert_settings(P12Cipher::Modern).unwrap(),
        json!({"pushType": "background", "alertTitle": "Silent app"}),
    );
    let modules = json!({"ios": {"type": "apple", "ratelimit": {"enabled": false},
        "apns": block}});
    let mut apple = Apple::launch(apns, modules, "").await;
    let message = format!("https://api.push.apple.com/3/device/{DEVICE}#{TOPIC}");
    apple.send("b1", &message, &encrypted("high")).await;
    let call = format!("https://api.push.apple.com/3/device/{DEVICE}#{TOPIC}&amp;{VOIP}");
    apple
        .send("b2", &call, &format!("{}<voip/>", encrypted("high")))
        .await;
    for request in apple.wait_for_requests(2).await {
        let payload = body(&request);
        assert_eq!(request.token, DEVICE);
        assert_eq!(header(&request, "apns-push-type"), "alert", "{payload}");
        assert_eq!(header(&request, "apns-priority"), "10", "{payload}");
        assert_eq!(payload["aps"]["alert"]["title"], "Silent app", "{payload}");
        assert_eq!(payload["aps"]["mutable-content"], 1, "{payload}");
        assert!(
            payload["aps"].get("content-available").is_none(),
            "{payload}"
        );
        assert_eq!(payload["rfc8291"], PAYLOAD);
        assert_eq!(request.status, 200);
    }
}
