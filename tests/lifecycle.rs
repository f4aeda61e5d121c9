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

/// GET `path` from the metrics listener on `port`, retrying while it starts: the body.
async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(mut socket) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
            socket.write_all(request.as_bytes()).await.unwrap();
            let mut response = String::new();
            socket.read_to_string(&mut response).await.unwrap();
            return response;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no metrics listener"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A reload refused for one module's credentials leaves no trace of the modules it named
/// beside it: the metrics show the modules that run.
#[tokio::test]
async fn a_refused_reload_adds_no_series_for_the_modules_it_would_have_added() {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let port = free_port();
    let metrics = format!(r#""metrics": {{ "listen": "127.0.0.1:{port}" }},"#);
    let fpush = Daemon::start(&settings(&server, &demo_module(None, "0s"), &metrics));
    let _link = connect(&mut server).await;
    let refused = r#"{
        "demo": { "type": "demo", "is_default_module": true },
        "added": { "type": "demo" },
        "broken": { "type": "apple", "apns": { "keyFilePath": "/nonexistent/AuthKey_ABC1234567.p8",
            "keyId": "ABC1234567", "teamId": "TEAM123456", "topic": "org.example.app" } }
    }"#;
    fpush.rewrite_settings(&settings(&server, refused, &metrics));
    fpush.reload();
    let log = fpush.log_with("keeping the running settings");
    assert!(log.contains("keeping the running settings"), "{log}");
    let text = http_get(port, "/metrics").await;
    assert!(text.contains(r#"module="demo""#), "{text}");
    let added: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(r#"module="added""#))
        .collect();
    assert!(added.is_empty(), "{added:#?}");
}

/// A stop that comes while a reload moves the link to new settings still answers the pushes in
/// flight: the server is there, only the stream was being replaced.
#[tokio::test]
async fn a_stop_while_a_reload_reconnects_still_answers_the_pushes_in_flight() {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let modules = demo_module(None, "300ms");
    let keepalive = |every: &str| format!(r#""keepaliveInterval": "{every}""#);
    let timeouts = keepalive("60s");
    let mut fpush = Daemon::start(&settings_with_timeouts(&server, &modules, &timeouts, ""));
    let mut old = connect(&mut server).await;
    old.send(&push_iq("in-flight", "token-f", None))
        .await
        .unwrap();
    let timeouts = keepalive("61s");
    fpush.rewrite_settings(&settings_with_timeouts(&server, &modules, &timeouts, ""));
    fpush.reload();
    fpush.log_with("component settings changed: reconnecting");
    fpush.terminate();
    let mut answered = Vec::new();
    while let Ok(stanza) = old.next_stanza(WAIT).await {
        answered.push(stanza);
    }
    if answered.is_empty() {
        // A connect that the stop cut short comes first (reset), then the one that answers.
        let mut new = match server.accept(WAIT).await {
            Ok(link) => link,
            Err(_) => connect(&mut server).await,
        };
        answered.push(
            new.next_stanza(WAIT)
                .await
                .expect("the reply, on a new stream"),
        );
        new.expect_close(WAIT).await.unwrap();
    }
    assert_result(&answered[0], "in-flight");
    assert!(fpush.wait(WAIT).success());
}
