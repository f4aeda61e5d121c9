//! p2 through the real `fpush` binary and its SQLite store: a client's register command arrives
//! over the component link, the server's push names the node and secret, and the FCM or APNS
//! test server receives the stored token with the `account` key (and `channel` for a room). A
//! dead token removes the registration; registrations survive a restart.

mod common;
mod p2_support;

use std::path::Path;

use common::*;
use fpush_testkit::apns::ApnsHarness;
use fpush_testkit::fcm::FcmServer;
use fpush_testkit::settings::with_keys;
use fpush_testkit::xmpp::{ComponentLink, FakeXmppServer, Stanza};
use p2_support::daemon::{exchange, store_entry};
use p2_support::forms::{command_iq, form_value};
use serde_json::{json, Value};

const FCM_TOKEN: &str = "fcm-device-token-7f3a9c:APA91bH1x2y3z4_example-registration";
const DEVICE_ID: &str = "a1b2c3d4e5f60789";
const JULIET: &str = "juliet@localhost/phone";
const ROOM: &str = "room@conference.localhost";
/// `python3 -c "import hashlib; print(hashlib.sha1(b'juliet@localhost\x00a1b2c3d4e5f60789').hexdigest())"`
const JULIET_DEVICE: &str = "f97fac8587c2e8ef637ef19b00bd7d76c3a6b655";
/// `python3 -c "import hashlib; print(hashlib.sha1(b'room@conference.localhost\x00a1b2c3d4e5f60789').hexdigest())"`
const ROOM_CHANNEL: &str = "b28400cfa1cc718f47cefbf1e2dea3cd0e6f04d6";

/// Settings with one p2 module `conversations` (its `type` and platform block given) and the
/// store in `dir`.
fn p2_settings(xmpp: &FakeXmppServer, module: Value, dir: &Path) -> String {
    let mut module = module;
    module["registration"] = json!({"protocol": "p2"});
    module["ratelimit"] = json!({"enabled": false});
    let modules = json!({ "conversations": module }).to_string();
    settings(xmpp, &modules, &store_entry(dir))
}

/// Sends a command from `from` and returns the reply.
async fn command(
    link: &mut ComponentLink,
    id: &str,
    from: &str,
    node: &str,
    fields: &[(&str, &str)],
) -> Stanza {
    exchange(link, id, &command_iq(id, from, JID, node, fields)).await
}

/// Registers with `fields` (token, device id, …) and answers (node, secret).
async fn register(
    link: &mut ComponentLink,
    node: &str,
    fields: &[(&str, &str)],
) -> (String, String) {
    let reply = command(link, "reg", JULIET, node, fields).await;
    assert_eq!(reply.kind(), Some("result"), "{}", reply.raw);
    assert_eq!(form_value(&reply, "jid"), JID);
    (form_value(&reply, "node"), form_value(&reply, "secret"))
}

/// A push as the user's server sends it for a p2 registration: from the domain, node and
/// secret, no `pushModule`.
async fn push(link: &mut ComponentLink, id: &str, node: &str, secret: &str) -> Stanza {
    let iq = format!(
        "<iq type='set' id='{id}' from='localhost' to='{JID}'>\
         <pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{node}'><item>\
         <notification xmlns='urn:xmpp:push:0'><x xmlns='jabber:x:data' type='form'>\
         <field var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field>\
         <field var='message-count'><value>1</value></field></x></notification></item>\
         </publish><publish-options><x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
         <field var='secret'><value>{secret}</value></field></x></publish-options></pubsub></iq>"
    );
    exchange(link, id, &iq).await
}

fn fcm_module(fcm: &FcmServer) -> Value {
    json!({"type": "google", "fcm": with_keys(fcm.settings(), json!({}))})
}

#[test]
fn the_hash_vectors_match_the_door() {
    use fpush::doors::p2::device_hash;
    assert_eq!(device_hash("juliet@localhost", DEVICE_ID), JULIET_DEVICE);
    assert_eq!(device_hash(ROOM, DEVICE_ID), ROOM_CHANNEL);
}

#[tokio::test]
async fn a_registered_fcm_device_gets_a_high_priority_data_message_with_its_account() {
    let fcm = FcmServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut xmpp = FakeXmppServer::bind(SECRET).await.unwrap();
    let _fpush = Daemon::start(&p2_settings(&xmpp, fcm_module(&fcm), dir.path()));
    let mut link = connect(&mut xmpp).await;

    let account = [("token", FCM_TOKEN), ("device-id", DEVICE_ID)];
    let (node, secret) = register(&mut link, "register-push-fcm", &account).await;
    assert_result(&push(&mut link, "p1", &node, &secret).await, "p1");
    let room = [
        ("token", FCM_TOKEN),
        ("device-id", DEVICE_ID),
        ("muc", ROOM),
    ];
    let (room_node, room_secret) = register(&mut link, "register-push-fcm", &room).await;
    assert_ne!(room_node, node);
    assert_result(&push(&mut link, "p2", &room_node, &room_secret).await, "p2");

    let messages = fcm.messages();
    assert_eq!(messages.len(), 2, "{messages:?}");
    let message = &messages[0].body["message"];
    assert_eq!(message["token"], FCM_TOKEN);
    assert_eq!(message["data"], json!({"account": JULIET_DEVICE}));
    assert_eq!(message["android"]["priority"], "high");
    let in_room = &messages[1].body["message"]["data"];
    assert_eq!(
        in_room,
        &json!({"account": JULIET_DEVICE, "channel": ROOM_CHANNEL})
    );

    let wrong = push(&mut link, "p3", &node, "not-the-secret").await;
    assert_error(&wrong, "p3", "auth", "forbidden");
    let unknown = push(&mut link, "p4", "unknown-node", &secret).await;
    assert_error(&unknown, "p4", "cancel", "item-not-found");
    assert_eq!(fcm.messages().len(), 2, "refused pushes never reach FCM");
}

#[tokio::test]
async fn an_apns_registration_puts_the_account_at_the_payload_top_level() {
    let apns = ApnsHarness::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut xmpp = FakeXmppServer::bind(SECRET).await.unwrap();
    let module = json!({"type": "apple", "apns": apns.token_settings()});
    let _fpush = Daemon::start(&p2_settings(&xmpp, module, dir.path()));
    let mut link = connect(&mut xmpp).await;

    let not_hex = [("token", FCM_TOKEN), ("device-id", DEVICE_ID)];
    let refused = command(&mut link, "r1", JULIET, "register-push-apns", &not_hex).await;
    assert_error(&refused, "r1", "modify", "bad-request");
    let fcm_there = command(&mut link, "r2", JULIET, "register-push-fcm", &not_hex).await;
    assert_error(&fcm_there, "r2", "cancel", "item-not-found");

    let token = "0a1b".repeat(16);
    let fields = [("token", token.as_str()), ("device-id", DEVICE_ID)];
    let (node, secret) = register(&mut link, "register-push-apns", &fields).await;
    assert_result(&push(&mut link, "p1", &node, &secret).await, "p1");
    let received = apns.server.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].token, token);
    let payload: Value = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(payload["account"], JULIET_DEVICE);
    assert!(payload["aps"].is_object(), "{payload}");
}

#[tokio::test]
async fn a_dead_token_removes_the_registration() {
    let fcm = FcmServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut xmpp = FakeXmppServer::bind(SECRET).await.unwrap();
    let _fpush = Daemon::start(&p2_settings(&xmpp, fcm_module(&fcm), dir.path()));
    let mut link = connect(&mut xmpp).await;

    // The FCM test server answers UNREGISTERED for tokens starting with `dead`.
    let fields = [("token", "dead-token-1"), ("device-id", DEVICE_ID)];
    let (node, secret) = register(&mut link, "register-push-fcm", &fields).await;
    let dead = push(&mut link, "d1", &node, &secret).await;
    assert_error(&dead, "d1", "cancel", "item-not-found");
    let gone = push(&mut link, "d2", &node, &secret).await;
    assert_error(&gone, "d2", "cancel", "item-not-found");
    assert_eq!(fcm.messages().len(), 1, "the second push never reached FCM");
    let unregister = [("device-id", DEVICE_ID)];
    let reply = command(&mut link, "u1", JULIET, "unregister-push-fcm", &unregister).await;
    assert_error(&reply, "u1", "cancel", "item-not-found");
}

#[tokio::test]
async fn a_new_store_answers_wait_for_a_node_it_lacks_and_says_why() {
    let fcm = FcmServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut xmpp = FakeXmppServer::bind(SECRET).await.unwrap();
    // The default grace (24h), with a store made now: perhaps `store.path` changed by mistake.
    let store = json!({"path": dir.path().join("registrations.sqlite3")});
    let mut module = fcm_module(&fcm);
    module["registration"] = json!({"protocol": "p2"});
    let modules = json!({ "conversations": module }).to_string();
    let fpush = Daemon::start(&settings(&xmpp, &modules, &format!(r#""store": {store},"#)));
    let mut link = connect(&mut xmpp).await;

    let lacking = push(&mut link, "n1", "unknownNode1", "some-secret").await;
    assert_error(&lacking, "n1", "wait", "item-not-found");
    assert!(fcm.messages().is_empty());
    // Records reach the log through the logger's thread: maybe just after the reply.
    let said = [
        "it lacks are answered wait",
        "modules.retiredGrace ago, lacks; answered wait",
    ];
    let log = fpush.log_once(|log| said.iter().all(|line| log.contains(line)));
    for line in said {
        assert!(log.contains(line), "{log}");
    }
}

#[tokio::test]
async fn registrations_survive_a_restart() {
    let fcm = FcmServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut xmpp = FakeXmppServer::bind(SECRET).await.unwrap();
    let settings = p2_settings(&xmpp, fcm_module(&fcm), dir.path());
    let mut fpush = Daemon::start(&settings);
    let mut link = connect(&mut xmpp).await;
    let fields = [("token", FCM_TOKEN), ("device-id", DEVICE_ID)];
    let (node, secret) = register(&mut link, "register-push-fcm", &fields).await;
    fpush.terminate();
    assert!(fpush.wait(WAIT).success(), "{}", fpush.log());
    drop(link);

    let _again = Daemon::start(&settings);
    let mut link = connect(&mut xmpp).await;
    assert_result(&push(&mut link, "p1", &node, &secret).await, "p1");
    let again = register(&mut link, "register-push-fcm", &fields).await;
    assert_eq!(
        again,
        (node, secret),
        "registering again keeps node and secret"
    );
}

#[tokio::test]
async fn check_names_both_modules_serving_one_service() {
    let fcm = FcmServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let xmpp = FakeXmppServer::bind(SECRET).await.unwrap();
    let mut module = fcm_module(&fcm);
    module["registration"] = json!({"protocol": "p2"});
    let modules = json!({ "first": module, "second": module }).to_string();
    let path = dir.path().join("settings.json");
    let text = settings(&xmpp, &modules, &store_entry(dir.path()));
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fpush"))
        .args(["--check", path.to_str().unwrap()])
        .output()
        .expect("run fpush --check");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("modules `first` and `second` both serve p2 registrations for fcm"),
        "{stderr}"
    );
}
