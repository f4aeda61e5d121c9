//! The `fpush` binary against an in-process XMPP server speaking `jabber:component:accept`:
//! every row of the reply table that needs no real provider, the ratelimit seen from the XMPP
//! side, reconnects with pushes in flight, limits, and an orderly SIGTERM.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test]
async fn push_for_the_demo_module_gets_a_result() {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let _fpush = Daemon::start(&settings(&server, &demo_module(None, "0s"), ""));
    let mut link = connect(&mut server).await;
    assert_eq!(link.component_jid, JID);

    link.send(&push_iq("p1", "token-aaaa", Some("demo")))
        .await
        .unwrap();
    assert_result(&link.next_stanza(WAIT).await.unwrap(), "p1");
    // Without pushModule the default module takes it.
    link.send(&push_iq("p2", "token-bbbb", None)).await.unwrap();
    assert_result(&link.next_stanza(WAIT).await.unwrap(), "p2");
}

#[tokio::test]
async fn the_captured_prosody_and_ejabberd_iqs_are_delivered() {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    // Both captures name the module `fcm`: here a demo module carries that id.
    let modules = r#"{ "fcm": { "type": "demo", "ratelimit": { "enabled": false } } }"#;
    let _fpush = Daemon::start(&settings(&server, modules, ""));
    let mut link = connect(&mut server).await;
    for name in ["prosody-0.12-push-iq.xml", "ejabberd-23.01-push-iq.xml"] {
        let iq = std::fs::read_to_string(fixture(name)).unwrap();
        link.send(&iq).await.unwrap();
        let reply = link.next_stanza(WAIT).await.unwrap();
        assert_eq!(reply.kind(), Some("result"), "{name}: {}", reply.raw);
        assert_eq!(reply.attr("to"), Some("localhost"));
        assert_eq!(reply.attr("from"), Some("push.localhost"));
    }
}

#[tokio::test]
async fn unknown_module_is_item_not_found_even_with_a_default() {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let _fpush = Daemon::start(&settings(&server, &demo_module(None, "0s"), ""));
    let mut link = connect(&mut server).await;
    link.send(&push_iq("u1", "token-aaaa", Some("otherApp")))
        .await
        .unwrap();
    let reply = link.next_stanza(WAIT).await.unwrap();
    assert_error(&reply, "u1", "cancel", "item-not-found");
    assert!(reply.text.contains("otherApp"), "{}", reply.raw);
}

#[tokio::test]
async fn no_module_and_no_default_is_item_not_found() {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let modules = r#"{ "app": { "type": "demo" } }"#;
    let _fpush = Daemon::start(&settings(&server, modules, ""));
    let mut link = connect(&mut server).await;
    link.send(&push_iq("n1", "token-aaaa", None)).await.unwrap();
    assert_error(
        &link.next_stanza(WAIT).await.unwrap(),
        "n1",
        "cancel",
        "item-not-found",
    );
}

#[tokio::test]
#[cfg_attr(
    feature = "random_delay_before_push",
    ignore = "the jitter moves provider calls in time"
)]
async fn ratelimit_sends_queues_one_and_rejects_the_rest_even_with_one_reused_id() {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let _fpush = Daemon::start(&settings(&server, &demo_module(Some("1s"), "0s"), ""));
    let mut link = connect(&mut server).await;
    // Prosody reuses one id for every push of a registration: all must be answered.
    let started = std::time::Instant::now();
    for _ in 0..3 {
        link.send(&push_iq("same-id", "token-rl", None))
            .await
            .unwrap();
    }
    // The first is sent and the third rejected at once (in either order); the second waits.
    let mut immediate = link.collect(2, WAIT).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(900));
    immediate.sort_by_key(|s| s.kind().map(str::to_owned));
    assert_error(&immediate[0], "same-id", "wait", "resource-constraint");
    assert_result(&immediate[1], "same-id");
    let queued = link.next_stanza(WAIT).await.unwrap();
    assert_result(&queued, "same-id");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "the queued push went out before the window ended"
    );
    // Another token is independent.
    link.send(&push_iq("other", "token-other", None))
        .await
        .unwrap();
    assert_result(&link.next_stanza(WAIT).await.unwrap(), "other");
}

#[tokio::test]
async fn reject_with_result_answers_rejected_pushes_with_a_result() {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let modules = r#"{ "demo": { "type": "demo", "is_default_module": true,
        "ratelimit": { "ratelimitTime": "30s", "rejectWith": "result" } } }"#;
    let _fpush = Daemon::start(&settings(&server, modules, ""));
    let mut link = connect(&mut server).await;
    for id in ["r1", "r2", "r3"] {
        link.send(&push_iq(id, "token-rr", None)).await.unwrap();
    }
    // r1 sent, r2 queued for 30 s, r3 rejected — with a result (replies in either order).
    let mut ids: Vec<String> = link
        .collect(2, WAIT)
        .await
        .unwrap()
        .iter()
        .map(|s| {
            assert_result(s, s.attr("id").unwrap_or_default());
            s.attr("id").unwrap_or_default().to_owned()
        })
        .collect();
    ids.sort();
    assert_eq!(ids, ["r1", "r3"]);
}

#[tokio::test]
async fn disco_ping_and_other_iqs_are_answered_per_the_table() {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let _fpush = Daemon::start(&settings(&server, &demo_module(None, "0s"), ""));
    let mut link = connect(&mut server).await;

    link.send(
        "<iq type='get' id='d1' from='localhost' to='push.localhost'>\
         <query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
    )
    .await
    .unwrap();
    let disco = link.next_stanza(WAIT).await.unwrap();
    assert_eq!(disco.kind(), Some("result"), "{}", disco.raw);
    assert_eq!(disco.attr("id"), Some("d1"));
    assert!(disco
        .identities
        .contains(&("pubsub".to_owned(), "push".to_owned())));
    assert!(disco.features.contains(&"urn:xmpp:push:0".to_owned()));
    assert!(disco
        .features
        .contains(&"http://jabber.org/protocol/disco#info".to_owned()));

    link.send(
        "<iq type='get' id='ping1' from='localhost' to='push.localhost'>\
         <ping xmlns='urn:xmpp:ping'/></iq>",
    )
    .await
    .unwrap();
    let pong = link.next_stanza(WAIT).await.unwrap();
    assert_eq!(pong.kind(), Some("result"));
    assert_eq!(pong.attr("id"), Some("ping1"));

    link.send(
        "<iq type='get' id='v1' from='localhost' to='push.localhost'>\
         <query xmlns='jabber:iq:version'/></iq>",
    )
    .await
    .unwrap();
    assert_error(
        &link.next_stanza(WAIT).await.unwrap(),
        "v1",
        "cancel",
        "service-unavailable",
    );
}

#[tokio::test]
async fn results_errors_messages_and_presence_are_never_answered() {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let _fpush = Daemon::start(&settings(&server, &demo_module(None, "0s"), ""));
    let mut link = connect(&mut server).await;
    link.send(
        "<iq type='result' id='x1' from='localhost' to='push.localhost'/>\
         <iq type='error' id='x2' from='localhost' to='push.localhost'><error type='cancel'>\
         <item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>\
         <message from='a@localhost' to='push.localhost'><body>hi</body></message>\
         <presence from='a@localhost' to='push.localhost'/>\
         <iq type='get' id='last' from='localhost' to='push.localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
    )
    .await
    .unwrap();
    // The first answer is the one to the final ping: nothing before it was answered.
    let reply = link.next_stanza(WAIT).await.unwrap();
    assert_eq!(reply.attr("id"), Some("last"), "{}", reply.raw);
}

#[tokio::test]
async fn malformed_pushes_get_bad_request() {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let _fpush = Daemon::start(&settings(&server, &demo_module(None, "0s"), ""));
    let mut link = connect(&mut server).await;
    let no_node = "<iq type='set' id='b1' from='localhost' to='push.localhost'>\
        <pubsub xmlns='http://jabber.org/protocol/pubsub'><publish><item/></publish></pubsub></iq>";
    link.send(no_node).await.unwrap();
    assert_error(
        &link.next_stanza(WAIT).await.unwrap(),
        "b1",
        "modify",
        "bad-request",
    );
    link.send(&push_iq("b2", "token with spaces", None))
        .await
        .unwrap();
    assert_error(
        &link.next_stanza(WAIT).await.unwrap(),
        "b2",
        "modify",
        "bad-request",
    );
    let long_token = "a".repeat(5000);
    link.send(&push_iq("b3", &long_token, None)).await.unwrap();
    assert_error(
        &link.next_stanza(WAIT).await.unwrap(),
        "b3",
        "modify",
        "bad-request",
    );
}

#[tokio::test]
async fn a_stanza_split_over_many_reads_is_reassembled() {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let _fpush = Daemon::start(&settings(&server, &demo_module(None, "0s"), ""));
    let mut link = connect(&mut server).await;
    let iq = push_iq("split", "token-split", None);
    link.send_chunked(iq.as_bytes(), 7).await.unwrap();
    assert_result(&link.next_stanza(WAIT).await.unwrap(), "split");
}

#[tokio::test]
async fn oversized_stanza_gets_policy_violation_and_the_link_stays_up() {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let limits = r#""limits": { "maxStanzaSize": 4096 },"#;
    let _fpush = Daemon::start(&settings(&server, &demo_module(None, "0s"), limits));
    let mut link = connect(&mut server).await;
    let padding = "x".repeat(10_000);
    let big = format!(
        "<iq type='set' id='big' from='localhost' to='push.localhost'>\
         <pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='t'><item>{padding}</item>\
         </publish></pubsub></iq>"
    );
    link.send(&big).await.unwrap();
    assert_error(
        &link.next_stanza(WAIT).await.unwrap(),
        "big",
        "wait",
        "policy-violation",
    );
    link.send(&push_iq("after", "token-after", None))
        .await
        .unwrap();
    assert_result(&link.next_stanza(WAIT).await.unwrap(), "after");
}

#[tokio::test]
async fn garbage_closes_the_stream_and_fpush_reconnects() {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let _fpush = Daemon::start(&settings(&server, &demo_module(None, "0s"), ""));
    let mut link = connect(&mut server).await;
    link.send("<iq type='set' id='g'><</iq>").await.unwrap();
    let error = link.next_stanza(WAIT).await.unwrap();
    assert_eq!(error.name, "error", "{}", error.raw);
    assert_eq!(
        error.descendants.first().map(String::as_str),
        Some("not-well-formed")
    );
    link.expect_close(WAIT).await.unwrap();
    let mut again = connect(&mut server).await;
    again
        .send(&push_iq("fresh", "token-fresh", None))
        .await
        .unwrap();
    assert_result(&again.next_stanza(WAIT).await.unwrap(), "fresh");
}

#[tokio::test]
async fn replies_of_pushes_in_flight_go_out_on_the_new_stream() {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let _fpush = Daemon::start(&settings(&server, &demo_module(None, "700ms"), ""));
    let mut link = connect(&mut server).await;
    for i in 0..5 {
        link.send(&push_iq(&format!("f{i}"), &format!("token-{i}"), None))
            .await
            .unwrap();
    }
    // Let fpush read them, then cut the link while the pushes are at the "provider".
    tokio::time::sleep(Duration::from_millis(200)).await;
    link.drop_connection();
    let mut again = connect(&mut server).await;
    let mut ids: Vec<String> = again
        .collect(5, WAIT)
        .await
        .unwrap()
        .iter()
        .map(|s| {
            assert_eq!(s.kind(), Some("result"), "{}", s.raw);
            s.attr("id").unwrap_or_default().to_owned()
        })
        .collect();
    ids.sort();
    assert_eq!(ids, ["f0", "f1", "f2", "f3", "f4"]);
}

#[tokio::test]
async fn wrong_secret_is_logged_and_retried() {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let fpush = Daemon::start(&settings(&server, &demo_module(None, "0s"), ""));
    server.accept_and_reject(WAIT).await.unwrap();
    // fpush retries after xmppconnectionError (200 ms here) and gets in this time.
    let mut link = connect(&mut server).await;
    link.send(&push_iq("ok", "token-ok", None)).await.unwrap();
    assert_result(&link.next_stanza(WAIT).await.unwrap(), "ok");
    let refused =
        |log: &str| log.contains("not-authorized") || log.to_lowercase().contains("secret");
    let log = fpush.log_once(refused);
    assert!(
        refused(&log),
        "the log should say the secret was refused:\n{log}"
    );
}

#[tokio::test]
async fn overload_answers_wait_instead_of_queueing() {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let limits = r#""limits": { "maxConcurrentPushes": 1 },"#;
    let _fpush = Daemon::start(&settings(&server, &demo_module(None, "500ms"), limits));
    let mut link = connect(&mut server).await;
    link.send(&push_iq("o1", "token-1", None)).await.unwrap();
    link.send(&push_iq("o2", "token-2", None)).await.unwrap();
    assert_error(
        &link.next_stanza(WAIT).await.unwrap(),
        "o2",
        "wait",
        "resource-constraint",
    );
    assert_result(&link.next_stanza(WAIT).await.unwrap(), "o1");
}

#[tokio::test]
async fn sigterm_finishes_pushes_in_flight_then_closes_the_stream() {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let mut fpush = Daemon::start(&settings(&server, &demo_module(Some("1s"), "400ms"), ""));
    let mut link = connect(&mut server).await;
    link.send(&push_iq("t1", "token-t", None)).await.unwrap();
    // A second push for the same token is queued for the window's end: shutdown answers it wait.
    link.send(&push_iq("t2", "token-t", None)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    fpush.terminate();
    let replies = link.collect(2, WAIT).await.unwrap();
    let queued = replies
        .iter()
        .find(|r| r.kind() == Some("error"))
        .expect("the queued push is answered");
    assert_error(queued, "t2", "wait", "internal-server-error");
    let sent = replies
        .iter()
        .find(|r| r.kind() == Some("result"))
        .expect("the push in flight finishes");
    assert_result(sent, "t1");
    link.expect_close(WAIT).await.unwrap();
    assert!(
        link.saw_stream_end(),
        "fpush should close its stream with </stream:stream>"
    );
    assert!(fpush.wait(WAIT).success());
    let log = fpush.log();
    assert!(log.contains("stream closed; bye"), "{log}");
    assert!(!log.contains("did not close in time"), "{log}");
}

#[tokio::test]
async fn a_stream_closed_by_the_server_is_closed_in_turn_and_reopened() {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let _fpush = Daemon::start(&settings(&server, &demo_module(None, "0s"), ""));
    let mut link = connect(&mut server).await;
    link.send("</stream:stream>").await.unwrap();
    link.expect_close(WAIT).await.unwrap();
    assert!(
        link.saw_stream_end(),
        "fpush should answer the server's </stream:stream> with its own"
    );
    let mut again = connect(&mut server).await;
    again
        .send(&push_iq("after-close", "token-c", None))
        .await
        .unwrap();
    assert_result(&again.next_stanza(WAIT).await.unwrap(), "after-close");
}

#[tokio::test]
async fn a_reload_that_names_another_server_connects_to_it() {
    let mut old = FakeXmppServer::bind(SECRET).await.unwrap();
    let mut new = FakeXmppServer::bind(SECRET).await.unwrap();
    let modules = demo_module(None, "0s");
    let fpush = Daemon::start(&settings(&old, &modules, ""));
    let _first = connect(&mut old).await;
    fpush.rewrite_settings(&settings(&new, &modules, ""));
    fpush.reload();
    let mut link = new
        .accept(WAIT)
        .await
        .expect("fpush moves to the new server");
    link.send(&push_iq("m1", "token-moved", None))
        .await
        .unwrap();
    assert_result(&link.next_stanza(WAIT).await.unwrap(), "m1");
}

/// Waits until the log tells of `count` applied reloads, and returns the log.
fn log_after_reloads(fpush: &Daemon, count: usize) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let log = fpush.log();
        if log.matches("reloaded ").count() >= count {
            return log;
        }
        assert!(std::time::Instant::now() < deadline, "{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn a_restart_only_setting_is_said_to_wait_for_the_restart_until_it_runs_again() {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let modules = demo_module(None, "0s");
    let fpush = Daemon::start(&settings(&server, &modules, ""));
    let _link = connect(&mut server).await;
    let warning = "limits.maxConcurrentPushes changes take effect at the next restart";
    let lowered = r#""limits": { "maxConcurrentPushes": 5 },"#;
    let steps = [(lowered, 1), (lowered, 2), ("", 2)];
    for (at, (limits, warned)) in steps.into_iter().enumerate() {
        fpush.rewrite_settings(&settings(&server, &modules, limits));
        fpush.reload();
        let log = log_after_reloads(&fpush, at + 1);
        // Still pending at the second reload; the third puts back what runs: nothing to say.
        assert_eq!(log.matches(warning).count(), warned, "{log}");
    }
}

#[tokio::test]
async fn a_reload_that_changes_the_open_store_says_it_waits_for_the_restart() {
    use fpush_testkit::fcm::FcmServer;
    use fpush_testkit::settings::with_keys;
    use serde_json::json;
    let fcm = FcmServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let module = json!({"type": "google", "fcm": with_keys(fcm.settings(), json!({})),
                        "registration": {"protocol": "p2"}});
    let modules = json!({ "conversations": module }).to_string();
    let store = |per_account: u32| {
        let path = dir.path().join("registrations.sqlite3");
        let store = json!({"path": path, "maxPerAccount": per_account});
        format!(r#""store": {store},"#)
    };
    let fpush = Daemon::start(&settings(&server, &modules, &store(20)));
    let _link = connect(&mut server).await;
    fpush.rewrite_settings(&settings(&server, &modules, &store(5)));
    fpush.reload();
    let log = log_after_reloads(&fpush, 1);
    assert!(
        log.contains("store changes take effect at the next restart"),
        "{log}"
    );
}

#[tokio::test]
async fn a_reload_that_moves_the_redis_of_an_open_redis_store_says_the_store_stays() {
    use fpush_testkit::fcm::FcmServer;
    use fpush_testkit::redis_server;
    use fpush_testkit::settings::with_keys;
    use serde_json::json;
    let fcm = FcmServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut redis, port) = redis_server::start(dir.path(), &[]);
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let module = json!({"type": "google", "fcm": with_keys(fcm.settings(), json!({})),
                        "registration": {"protocol": "p2"}});
    let modules = json!({ "conversations": module }).to_string();
    let shared = |prefix: &str| {
        let redis = json!({"url": format!("redis://127.0.0.1:{port}"), "keyPrefix": prefix});
        format!(r#""store": {{"backend": "redis"}}, "redis": {redis},"#)
    };
    let fpush = Daemon::start(&settings(&server, &modules, &shared("a:")));
    let _link = connect(&mut server).await;
    fpush.rewrite_settings(&settings(&server, &modules, &shared("b:")));
    fpush.reload();
    let log = log_after_reloads(&fpush, 1);
    let _ = redis.kill();
    assert!(
        log.contains("the registration store (backend redis) at the next restart"),
        "{log}"
    );
}

#[tokio::test]
async fn sigterm_while_the_server_is_away_exits_without_waiting_for_the_link() {
    let server = FakeXmppServer::bind(SECRET).await.unwrap();
    let port = server.port();
    drop(server);
    let modules = demo_module(None, "0s");
    let mut fpush = Daemon::start(&settings_on_port(port, &modules, "", ""));
    fpush.log_with("cannot open its link");
    fpush.terminate();
    assert!(fpush.wait(WAIT).success());
    let log = fpush.log();
    assert!(!log.contains("did not close in time"), "{log}");
}
