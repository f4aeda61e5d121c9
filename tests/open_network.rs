//! The component link is not a trusted link: what an outsider (or an operator's slip) can send
//! through it is answered without harm. Run against the real binary and the fake XMPP server.

mod common;

use std::time::Duration;

use common::*;
use fpush_testkit::xmpp::{prosody_push_iq, FakeXmppServer};

/// Sends `iq` and returns its reply.
async fn ask(
    link: &mut fpush_testkit::xmpp::ComponentLink,
    iq: &str,
) -> fpush_testkit::xmpp::Stanza {
    link.send(iq).await.unwrap();
    link.next_stanza(WAIT).await.unwrap()
}

#[tokio::test]
async fn a_module_removed_by_a_reload_answers_wait_not_item_not_found() {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let two = r#"{
        "demo": { "type": "demo", "is_default_module": true, "ratelimit": { "enabled": false } },
        "old-app": { "type": "demo", "ratelimit": { "enabled": false } }
    }"#;
    let fpush = Daemon::start(&settings(&server, two, ""));
    let mut link = server.accept(WAIT).await.unwrap();
    let reply = ask(&mut link, &push_iq("before", "t1", Some("old-app"))).await;
    assert_result(&reply, "before");

    fpush.rewrite_settings(&settings(&server, &demo_module(None, "0s"), ""));
    fpush.reload();
    // Once the reload is in service, the removed module's pushes are answered `wait`: a server
    // that heard `cancel` would delete every registration of that app.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let reply = ask(&mut link, &push_iq("after", "t1", Some("old-app"))).await;
        if reply.kind() == Some("error") {
            assert_error(&reply, "after", "wait", "internal-server-error");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "reload not applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A module that never existed is still `item-not-found`.
    let reply = ask(&mut link, &push_iq("never", "t1", Some("no-such-app"))).await;
    assert_error(&reply, "never", "cancel", "item-not-found");
    let log = fpush.log_with("removed by a reload");
    assert!(log.contains("removed by a reload"), "{log}");
}

#[tokio::test]
async fn a_default_module_removed_by_a_reload_answers_pushes_without_push_module_wait() {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let before = r#"{
        "old-default": { "type": "demo", "is_default_module": true, "ratelimit": { "enabled": false } }
    }"#;
    let fpush = Daemon::start(&settings(&server, before, ""));
    let mut link = server.accept(WAIT).await.unwrap();
    let reply = ask(&mut link, &push_iq("before", "t1", None)).await;
    assert_result(&reply, "before");

    // The module that took pushes naming no module is renamed, and no module is the default.
    let after = r#"{ "new-name": { "type": "demo", "ratelimit": { "enabled": false } } }"#;
    fpush.rewrite_settings(&settings(&server, after, ""));
    fpush.reload();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let reply = ask(&mut link, &push_iq("after", "t1", None)).await;
        if reply.kind() == Some("error") {
            // `cancel` here would make ejabberd delete every registration that relied on it.
            assert_error(&reply, "after", "wait", "internal-server-error");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "reload not applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_push_from_a_full_jid_is_forbidden_while_disco_and_ping_from_it_are_answered() {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let _fpush = Daemon::start(&settings(&server, &demo_module(None, "0s"), ""));
    let mut link = server.accept(WAIT).await.unwrap();
    let from = "mallory@evil.example/res";
    let reply = ask(&mut link, &prosody_push_iq("p1", from, JID, "victim", None)).await;
    assert_error(&reply, "p1", "auth", "forbidden");
    let disco = format!(
        "<iq type='get' id='d1' from='{from}' to='{JID}'>\
         <query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
    );
    let reply = ask(&mut link, &disco).await;
    assert_eq!(
        (reply.kind(), reply.attr("id")),
        (Some("result"), Some("d1"))
    );
    assert_eq!(reply.attr("to"), Some(from));
    let ping = format!(
        "<iq type='get' id='g1' from='{from}' to='{JID}'><ping xmlns='urn:xmpp:ping'/></iq>"
    );
    let reply = ask(&mut link, &ping).await;
    assert_eq!(
        (reply.kind(), reply.attr("id")),
        (Some("result"), Some("g1"))
    );
}
