//! The tigase door through the real `fpush` binary, its SQLite store and the APNS test server:
//! a Siskin-style app registers over the component link, the server pushes to the node, and
//! Apple's side receives the registered token with the account and — for a payload encrypted
//! by an independent AES-GCM implementation (Python's `cryptography`) — the ciphertext and iv
//! exactly as encrypted, still decrypting to the message. Unregistering ends the pushes.

mod common;
mod p2_support;

use std::path::Path;
use std::process::Command;

use common::*;
use fpush_testkit::apns::{ApnsAnswer, ApnsHarness, TOPIC};
use fpush_testkit::tls::P12Cipher;
use fpush_testkit::xmpp::{ComponentLink, FakeXmppServer, Stanza};
use p2_support::daemon::{exchange, store_entry};
use p2_support::forms::{command_iq, form_value};
use serde_json::{json, Value};

const PROVIDER: &str = "snikket:apns:1";
const JULIET: &str = "juliet@localhost/iphone";
const DOMAIN: &str = "localhost";

/// Settings with one tigase module `siskin` on the APNS test server, the store in `dir`.
fn tigase_settings(xmpp: &FakeXmppServer, apns: &ApnsHarness, dir: &Path) -> String {
    let module = json!({"type": "apple", "apns": apns.token_settings(),
        "registration": {"protocol": "tigase", "provider": PROVIDER},
        "ratelimit": {"enabled": false}});
    let modules = json!({ "siskin": module }).to_string();
    settings(xmpp, &modules, &store_entry(dir))
}

async fn command(
    link: &mut ComponentLink,
    id: &str,
    node: &str,
    fields: &[(&str, &str)],
) -> Stanza {
    exchange(link, id, &command_iq(id, JULIET, JID, node, fields)).await
}

async fn push(link: &mut ComponentLink, id: &str, node: &str, notification: &str) -> Stanza {
    let iq = format!(
        "<iq type='set' id='{id}' from='{DOMAIN}' to='{JID}'>\
         <pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{node}'><item>\
         <notification xmlns='urn:xmpp:push:0'>{notification}</notification></item></publish>\
         </pubsub></iq>"
    );
    exchange(link, id, &iq).await
}

fn crypto(args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tigase_crypto.py");
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn an_encrypted_push_reaches_apple_unchanged_and_unregistering_ends_pushes() {
    let apns = ApnsHarness::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut xmpp = FakeXmppServer::bind(SECRET).await.unwrap();
    let _fpush = Daemon::start(&tigase_settings(&xmpp, &apns, dir.path()));
    let mut link = xmpp.accept(WAIT).await.expect("fpush connects");

    let disco = format!(
        "<iq type='get' id='d1' from='{JULIET}' to='{JID}'>\
         <query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
    );
    let info = exchange(&mut link, "d1", &disco).await;
    assert!(
        info.raw.contains(&format!("<feature var='{PROVIDER}'/>")),
        "{}",
        info.raw
    );

    let token = "0a1b".repeat(16);
    let fields = [("provider", PROVIDER), ("device-token", token.as_str())];
    let registered = command(&mut link, "r1", "register-device", &fields).await;
    assert_eq!(registered.kind(), Some("result"), "{}", registered.raw);
    let node = form_value(&registered, "node");

    let message = r#"{"sender":"romeo@localhost","body":"Wherefore art thou?"}"#;
    let sealed: Value = serde_json::from_str(&crypto(&["encrypt", message])).unwrap();
    let (key, iv, encrypted) = (
        sealed["key"].as_str().unwrap(),
        sealed["iv"].as_str().unwrap(),
        sealed["encrypted"].as_str().unwrap(),
    );
    // As a server may pretty-print it: whitespace around the text, which fpush trims.
    let element = format!(
        "<encrypted xmlns='tigase:push:encrypt:0' iv='{iv}'>\n    {encrypted}\n  </encrypted>"
    );
    assert_result(&push(&mut link, "p1", &node, &element).await, "p1");
    let received = apns.server.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].token, token);
    assert_eq!(received[0].headers["apns-push-type"], "alert");
    let payload: Value = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(payload["account"], "juliet@localhost");
    assert_eq!(payload["encrypted"], encrypted);
    assert_eq!(payload["iv"], iv);
    assert_eq!(payload["aps"]["mutable-content"], 1, "{payload}");
    let arrived = payload["encrypted"].as_str().unwrap();
    assert_eq!(crypto(&["decrypt", key, iv, arrived]), message);

    // A plain summary: the keys the app's extension formats, the count a JSON integer.
    let summary = "<x xmlns='jabber:x:data'><field var='FORM_TYPE'>\
                   <value>urn:xmpp:push:summary</value></field>\
                   <field var='message-count'><value>2</value></field>\
                   <field var='last-message-sender'><value>romeo@localhost</value></field>\
                   <field var='last-message-body'><value>Hello</value></field></x>";
    assert_result(&push(&mut link, "p2", &node, summary).await, "p2");
    let payload: Value = serde_json::from_slice(&apns.server.received()[1].body).unwrap();
    assert_eq!(payload["unread-messages"], json!(2));
    assert_eq!(payload["sender"], "romeo@localhost");
    assert_eq!(payload["body"], "Hello");
    assert_eq!(payload["account"], "juliet@localhost");

    let unregistered = command(&mut link, "u1", "unregister-device", &fields).await;
    assert_eq!(unregistered.kind(), Some("result"), "{}", unregistered.raw);
    let gone = push(&mut link, "p3", &node, summary).await;
    assert_error(&gone, "p3", "cancel", "item-not-found");
    assert_eq!(apns.server.received().len(), 2);
}

/// Starts fpush with one tigase module whose `apns` block is `block`; answers the link and the
/// node of a registration with a device token and a PushKit token.
async fn registered_with_voip(
    block: Value,
    dir: &Path,
) -> (Daemon, FakeXmppServer, ComponentLink, String) {
    registered_with_voip_limited(block, json!({"enabled": false}), dir).await
}

/// [`registered_with_voip`] with the module's `ratelimit` block.
async fn registered_with_voip_limited(
    block: Value,
    ratelimit: Value,
    dir: &Path,
) -> (Daemon, FakeXmppServer, ComponentLink, String) {
    let mut xmpp = FakeXmppServer::bind(SECRET).await.unwrap();
    let module = json!({"type": "apple", "apns": block,
        "registration": {"protocol": "tigase", "provider": PROVIDER},
        "ratelimit": ratelimit});
    let modules = json!({ "siskin": module }).to_string();
    let fpush = Daemon::start(&settings(&xmpp, &modules, &store_entry(dir)));
    let mut link = xmpp.accept(WAIT).await.expect("fpush connects");
    let node = register_with_voip(&mut link, "r1", DEVICE).await;
    (fpush, xmpp, link, node)
}

/// Registers `device` with [`VOIP`] as its PushKit token; answers the node.
async fn register_with_voip(link: &mut ComponentLink, id: &str, device: &str) -> String {
    let fields = [
        ("provider", PROVIDER),
        ("device-token", device),
        ("device-second-token", VOIP),
    ];
    let registered = command(link, id, "register-device", &fields).await;
    assert_eq!(registered.kind(), Some("result"), "{}", registered.raw);
    form_value(&registered, "node")
}

const DEVICE: &str = "0a1b0a1b0a1b0a1b0a1b0a1b0a1b0a1b0a1b0a1b0a1b0a1b0a1b0a1b0a1b0a1b";
const VOIP: &str = "fe01fe01fe01fe01fe01fe01fe01fe01fe01fe01fe01fe01fe01fe01fe01fe01";
const CALL: &str = "<encrypted xmlns='tigase:push:encrypt:0' iv='aXYxMjM0NTY3ODkw' \
                    type='voip'>Y2FsbA==</encrypted>";
/// A device token Apple answers `Unregistered` (the test server's `dead…` tokens).
const DEAD_DEVICE: &str = "dead0a1b0a1b0a1b0a1b0a1b0a1b0a1b0a1b0a1b0a1b0a1b0a1b0a1b0a1b0a1b";

#[tokio::test]
async fn a_call_goes_to_the_pushkit_token_an_empty_push_is_background_and_high_is_10() {
    let apns = ApnsHarness::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_fpush, _xmpp, mut link, node) =
        registered_with_voip(apns.token_settings(), dir.path()).await;

    assert_result(&push(&mut link, "c1", &node, CALL).await, "c1");
    let call = &apns.server.received()[0];
    assert_eq!(call.token, VOIP);
    assert_eq!(call.headers["apns-push-type"], "voip");
    assert_eq!(call.headers["apns-topic"], format!("{TOPIC}.voip").as_str());
    assert_eq!(call.headers["apns-priority"], "10");
    let payload: Value = serde_json::from_slice(&call.body).unwrap();
    assert_eq!(payload["encrypted"], "Y2FsbA==");
    assert_eq!(payload["account"], "juliet@localhost");

    assert_result(&push(&mut link, "b1", &node, "").await, "b1");
    let silent = &apns.server.received()[1];
    assert_eq!(silent.token, DEVICE);
    assert_eq!(silent.headers["apns-push-type"], "background");
    assert_eq!(silent.headers["apns-priority"], "5");
    let payload: Value = serde_json::from_slice(&silent.body).unwrap();
    assert_eq!(payload["aps"], json!({"content-available": 1}));

    // The priority element: an alert at 10; without it, 5.
    let summary = "<x xmlns='jabber:x:data'><field var='last-message-body'><value>Hi</value>\
                   </field></x>";
    let high = format!("{summary}<priority xmlns='tigase:push:priority:0'>high</priority>");
    assert_result(&push(&mut link, "h1", &node, &high).await, "h1");
    assert_result(&push(&mut link, "n1", &node, summary).await, "n1");
    let received = apns.server.received();
    assert_eq!(received[2].headers["apns-push-type"], "alert");
    assert_eq!(received[2].headers["apns-priority"], "10");
    assert_eq!(received[3].headers["apns-priority"], "5");
}

#[tokio::test]
async fn a_call_to_a_token_apple_throttled_waits_out_the_pause_without_asking_again() {
    // Calls pass the ratelimit, not the provider's pause for their token: more would only be
    // throttled again. Answered wait, not what the module answers for pushes its ratelimit
    // refuses: a call acknowledged but never sent would be a missed call.
    let apns = ApnsHarness::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ratelimit = json!({"enabled": false, "rejectWith": "result"});
    let (_fpush, _xmpp, mut link, node) =
        registered_with_voip_limited(apns.token_settings(), ratelimit, dir.path()).await;
    let throttled = ApnsAnswer::error(429, "TooManyRequests").with_retry_after(3600);
    apns.server.enqueue(VOIP, [throttled]);
    for id in ["c1", "c2"] {
        let reply = push(&mut link, id, &node, CALL).await;
        assert_error(&reply, id, "wait", "resource-constraint");
    }
    assert_eq!(apns.server.received().len(), 1);
}

#[tokio::test]
async fn a_call_whose_details_cannot_fit_pushkit_goes_as_an_alert_to_the_device_token() {
    let apns = ApnsHarness::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A large `additionalData` next to the largest ciphertext `max-payload-size` allows (2,064
    // bytes, 2,752 in base64): over PushKit's 5 KB, while the plain alert fits 4 KB.
    let mut block = apns.token_settings();
    block["additionalData"] = json!({"pad": "p".repeat(2600)});
    let (_fpush, _xmpp, mut link, node) = registered_with_voip(block, dir.path()).await;

    let call = format!(
        "<encrypted xmlns='tigase:push:encrypt:0' iv='aXYxMjM0NTY3ODkw' type='voip'>{}\
         </encrypted>",
        "QUFB".repeat(688)
    );
    assert_result(&push(&mut link, "c1", &node, &call).await, "c1");
    let sent = &apns.server.received()[0];
    assert_eq!(sent.token, DEVICE, "never an empty PushKit push");
    assert_eq!(sent.headers["apns-push-type"], "alert");
    assert_eq!(sent.headers["apns-topic"], TOPIC);
    assert_eq!(sent.headers["apns-priority"], "10");
    assert!(sent.body.len() <= 4096, "{}", sent.body.len());
    let payload: Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(payload["aps"]["mutable-content"], 1);
    assert_eq!(payload["account"], "juliet@localhost");
    assert!(payload.get("encrypted").is_none());
}

#[tokio::test]
async fn certificate_auth_without_a_pushkit_certificate_sends_calls_as_alerts() {
    let apns = ApnsHarness::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let block = apns.cert_settings(P12Cipher::Modern).unwrap();
    let (_fpush, _xmpp, mut link, node) = registered_with_voip(block, dir.path()).await;

    let sent_before = unix_now();
    assert_result(&push(&mut link, "c1", &node, CALL).await, "c1");
    let call = &apns.server.received()[0];
    assert_eq!(call.token, DEVICE);
    assert_eq!(call.headers["apns-push-type"], "alert");
    assert_eq!(call.headers["apns-topic"], TOPIC);
    assert_eq!(call.headers["apns-priority"], "10");
    let payload: Value = serde_json::from_slice(&call.body).unwrap();
    assert_eq!(payload["aps"]["mutable-content"], 1);
    // Kept by Apple for a minute at most, as a PushKit call is: a call shown later is over.
    let expiration: u64 = call.headers["apns-expiration"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (sent_before + 60..=unix_now() + 60).contains(&expiration),
        "apns-expiration {expiration}, sent at {sent_before}"
    );
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn a_dead_device_token_behind_a_call_sent_as_an_alert_ends_the_registration() {
    let apns = ApnsHarness::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // No PushKit certificate: calls go to the device token as alerts.
    let block = apns.cert_settings(P12Cipher::Modern).unwrap();
    let (_fpush, _xmpp, mut link, alive) = registered_with_voip(block, dir.path()).await;
    let node = register_with_voip(&mut link, "r2", DEAD_DEVICE).await;

    let reply = push(&mut link, "c1", &node, CALL).await;
    assert_error(&reply, "c1", "cancel", "item-not-found");
    assert_eq!(apns.server.received()[0].token, DEAD_DEVICE);
    // The registration is gone: the server's next push is not sent to Apple again.
    let again = push(&mut link, "c2", &node, CALL).await;
    assert_error(&again, "c2", "cancel", "item-not-found");
    assert_eq!(apns.server.received().len(), 1);
    // Gone from the store itself, not only answered from the memory of dead tokens.
    let store = rusqlite::Connection::open(dir.path().join("registrations.sqlite3")).unwrap();
    let count = "SELECT count(*) FROM registrations WHERE node = ?1";
    let stored = |node: &str| -> i64 { store.query_row(count, [node], |row| row.get(0)).unwrap() };
    assert_eq!((stored(&node), stored(&alive)), (0, 1));
}

#[tokio::test]
async fn a_dead_device_token_behind_a_large_call_leaves_the_pushkit_token_alive() {
    let apns = ApnsHarness::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Token auth with a large `additionalData`: a small call fits PushKit, a large one does not.
    let mut block = apns.token_settings();
    block["additionalData"] = json!({"pad": "p".repeat(2600)});
    let (_fpush, _xmpp, mut link, node) = registered_with_voip(block, dir.path()).await;
    // The same phone's earlier registration: its device token has died since, its PushKit
    // token is the one the new registration holds too.
    let old = register_with_voip(&mut link, "r2", DEAD_DEVICE).await;

    let large = format!(
        "<encrypted xmlns='tigase:push:encrypt:0' iv='aXYxMjM0NTY3ODkw' type='voip'>{}\
         </encrypted>",
        "QUFB".repeat(688)
    );
    let reply = push(&mut link, "c1", &old, &large).await;
    assert_error(&reply, "c1", "cancel", "item-not-found");
    assert_eq!(apns.server.received()[0].token, DEAD_DEVICE);
    // The PushKit token was never asked: calls still ring through PushKit.
    assert_result(&push(&mut link, "c2", &node, CALL).await, "c2");
    let received = apns.server.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[1].token, VOIP);
    assert_eq!(received[1].headers["apns-push-type"], "voip");
}

#[tokio::test]
async fn certificate_auth_with_a_pushkit_certificate_sends_calls_over_it() {
    let apns = ApnsHarness::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut block = apns.cert_settings(P12Cipher::Modern).unwrap();
    // The test CA's client certificate stands in for the PushKit one.
    block["voipCertFilePath"] = block["certFilePath"].clone();
    block["voipCertPassword"] = block["certPassword"].clone();
    let (_fpush, _xmpp, mut link, node) = registered_with_voip(block, dir.path()).await;

    assert_result(&push(&mut link, "c1", &node, CALL).await, "c1");
    let call = &apns.server.received()[0];
    assert_eq!(call.token, VOIP);
    assert_eq!(call.headers["apns-push-type"], "voip");
    assert!(
        call.client_cert,
        "the PushKit connection presents its certificate"
    );
}

#[test]
fn check_says_when_calls_fall_back_to_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let apns = runtime.block_on(ApnsHarness::start()).unwrap();
    let block = apns.cert_settings(P12Cipher::Modern).unwrap();
    let module = json!({"type": "apple", "apns": block,
        "registration": {"protocol": "tigase", "provider": PROVIDER}});
    let store = json!({"path": dir.path().join("registrations.sqlite3")});
    let text = json!({
        "component": {"componentHostname": JID, "componentKey": SECRET,
            "serverHostname": "127.0.0.1", "serverPort": 5347},
        "store": store,
        "pushModules": {"siskin": module},
    });
    let path = dir.path().join("settings.json");
    std::fs::write(&path, text.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fpush"))
        .arg("--check")
        .arg(&path)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("VoIP pushes fall back to alerts"), "{said}");
}
