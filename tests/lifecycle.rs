//! The daemon's life as an operator runs it: reloads and stops around the pushes the XMPP
//! server is sending meanwhile.

mod common;

use common::*;

/// Pushes the server sent before it read the stream's close, when a reload changed the link's
/// settings: each is answered on the new stream.
#[tokio::test]
async fn pushes_sent_while_a_reload_closes_the_stream_are_answered_on_the_next_one() {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let modules = demo_module(None, "0s");
    let keepalive = |every: &str| format!(r#""keepaliveInterval": "{every}""#);
    let timeouts = keepalive("60s");
    let fpush = Daemon::start(&settings_with_timeouts(&server, &modules, &timeouts, ""));
    let mut old = connect(&mut server).await;
    assert_result(
        &push_and_reply(&mut old, "before", "token-0").await,
        "before",
    );
    let timeouts = keepalive("61s");
    fpush.rewrite_settings(&settings_with_timeouts(&server, &modules, &timeouts, ""));
    fpush.reload();
    fpush.log_with("component settings changed: reconnecting");
    // fpush reads no more and closes its stream; the server has not seen the close yet.
    for i in 0..3 {
        let push = push_iq(&format!("late-{i}"), &format!("token-late-{i}"), None);
        old.send(&push).await.unwrap();
    }
    let mut answered = Vec::new();
    while let Ok(stanza) = old.next_stanza(WAIT).await {
        answered.push(stanza);
    }
    let mut new = connect(&mut server).await;
    while answered.len() < 3 {
        match new.next_stanza(WAIT).await {
            Ok(stanza) => answered.push(stanza),
            Err(_) => break,
        }
    }
    let log = fpush.log();
    assert_eq!(answered.len(), 3, "{answered:?}\n{log}");
    for (i, reply) in answered.iter().enumerate() {
        assert_result(reply, &format!("late-{i}"));
    }
}
