//! The `fpush` binary fed hostile input on its component stream: deep nesting, huge attributes,
//! a 100 MB stanza, thousands of IQs sharing one id, IQs without `from`, invalid UTF-8, stream
//! errors, and a server that never opens its stream. fpush must never panic, must keep memory
//! bounded, must answer what can be answered, must keep a stream any XMPP user can reach with a
//! stanza (too deep, too large, one huge tag), and must reconnect when the stream is unusable.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends a ping with `id` and returns the first stanza answered after it was sent: when that is
/// the ping's result, nothing sent before the ping was answered.
async fn first_answer_after(link: &mut ComponentLink, id: &str) -> Stanza {
    link.send(&format!(
        "<iq type='get' id='{id}' from='localhost' to='{JID}'><ping xmlns='urn:xmpp:ping'/></iq>"
    ))
    .await
    .unwrap();
    link.next_stanza(WAIT).await.unwrap()
}

/// A push on a fresh link gets its result: the link was usable again.
async fn push_goes_through(link: &mut ComponentLink, id: &str) {
    link.send(&push_iq(id, &format!("token-{id}"), None))
        .await
        .unwrap();
    assert_result(&link.next_stanza(WAIT).await.unwrap(), id);
}

/// Sends `stanza` on the link in pieces, then a push: the push's result is the next stanza
/// (after `wait`/`policy-violation` for `answered`, if given), and the stream stayed up.
async fn skipped_then_push_goes_through(
    link: &mut ComponentLink,
    stanza: &str,
    answered: Option<&str>,
    push_id: &str,
) {
    link.send_chunked(stanza.as_bytes(), 64 * 1024)
        .await
        .unwrap();
    if let Some(id) = answered {
        // `wait`, never `modify`: one odd message must not disable a user's pushes.
        assert_error(
            &link.next_stanza(WAIT).await.unwrap(),
            id,
            "wait",
            "policy-violation",
        );
    }
    push_goes_through(link, push_id).await;
}

#[tokio::test]
async fn deep_nesting_skips_the_stanza_and_the_stream_goes_on() {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let limits = r#""limits": { "maxDepth": 16 },"#;
    let mut fpush = Daemon::start(&settings(&server, &demo_module(None, "0s"), limits));
    let mut link = connect(&mut server).await;
    // 10,000 levels: fpush must count them past its limit, not recurse or keep them.
    let levels = |n| format!("{}{}", "<a>".repeat(n), "</a>".repeat(n));
    let deep_message = format!(
        "<message from='mallory@evil.example' to='{JID}'><body>{}</body></message>",
        levels(10_000)
    );
    skipped_then_push_goes_through(&mut link, &deep_message, None, "after-deep-message").await;
    let deep_set = format!(
        "<iq type='set' id='deep' from='localhost' to='{JID}'>{}</iq>",
        levels(10_000)
    );
    skipped_then_push_goes_through(&mut link, &deep_set, Some("deep"), "after-deep-set").await;
    let deep_get = format!(
        "<iq type='get' id='deep-get' from='mallory@evil.example/x' to='{JID}'>\
         <query xmlns='jabber:iq:version'>{}</query></iq>",
        levels(40)
    );
    skipped_then_push_goes_through(&mut link, &deep_get, Some("deep-get"), "after-deep-get").await;
    fpush.assert_no_panic();
}

#[tokio::test]
async fn nesting_within_the_limit_is_answered() {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let limits = r#""limits": { "maxDepth": 16 },"#;
    let mut fpush = Daemon::start(&settings(&server, &demo_module(None, "0s"), limits));
    let mut link = connect(&mut server).await;
    // The iq counts as 1: fifteen more levels are allowed.
    let nested = format!(
        "<iq type='get' id='nested' from='localhost' to='{JID}'><query xmlns='jabber:iq:version'>{}{}</query></iq>",
        "<a>".repeat(14),
        "</a>".repeat(14)
    );
    link.send(&nested).await.unwrap();
    assert_error(
        &link.next_stanza(WAIT).await.unwrap(),
        "nested",
        "cancel",
        "service-unavailable",
    );
    fpush.assert_no_panic();
}

#[tokio::test]
async fn a_huge_attribute_on_the_iq_drops_it_and_the_stream_goes_on() {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let mut fpush = Daemon::start(&settings(&server, &demo_module(None, "0s"), ""));
    let mut link = connect(&mut server).await;
    // A start tag over the limit cannot be kept, so the IQ cannot be answered at all.
    let huge = format!(
        "<iq type='set' id='huge-attr' from='localhost' to='{JID}' junk='{}'><ping xmlns='urn:xmpp:ping'/></iq>",
        "x".repeat(1024 * 1024)
    );
    skipped_then_push_goes_through(&mut link, &huge, None, "after-huge-attr").await;
    fpush.assert_no_panic();
}

#[tokio::test]
async fn a_huge_attribute_inside_a_push_is_answered_policy_violation() {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let limits = r#""limits": { "maxStanzaSize": "64KiB" },"#;
    let mut fpush = Daemon::start(&settings(&server, &demo_module(None, "0s"), limits));
    let mut link = connect(&mut server).await;
    // The push's own start tag is small, so fpush can answer it even though the stanza is not
    // kept; the inner tag alone is over the limit, and is dropped as it arrives. Both cross
    // the limit in the same read.
    let huge = format!(
        "<iq type='set' id='inner-attr' from='localhost' to='{JID}'>\
         <pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{}'><item/></publish></pubsub></iq>",
        "t".repeat(256 * 1024)
    );
    skipped_then_push_goes_through(&mut link, &huge, Some("inner-attr"), "after-inner-attr").await;
    fpush.assert_no_panic();
}

#[tokio::test]
async fn a_huge_comment_in_a_stanza_skips_it_and_the_stream_goes_on() {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let limits = r#""limits": { "maxStanzaSize": "64KiB" },"#;
    let mut fpush = Daemon::start(&settings(&server, &demo_module(None, "0s"), limits));
    let mut link = connect(&mut server).await;
    let huge = format!(
        "<iq type='get' id='comment' from='localhost' to='{JID}'><!--{}--><ping xmlns='urn:xmpp:ping'/></iq>",
        "-x".repeat(256 * 1024)
    );
    skipped_then_push_goes_through(&mut link, &huge, Some("comment"), "after-comment").await;
    fpush.assert_no_panic();
}

#[tokio::test]
async fn a_100_mb_stanza_is_skipped_with_bounded_memory_and_answered() {
    const TOTAL: usize = 100 * 1024 * 1024;
    const CHUNK: usize = 256 * 1024;
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let mut fpush = Daemon::start(&settings(&server, &demo_module(None, "0s"), ""));
    let mut link = connect(&mut server).await;
    let before = fpush.rss_kib().expect("VmRSS of fpush");

    link.send(&format!(
        "<iq type='set' id='100mb' from='localhost' to='{JID}'>\
         <pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='token-big'><item>"
    ))
    .await
    .unwrap();
    // Text in small elements, so the stanza is deep in real content, not one giant token.
    let piece = "<body>".to_owned() + &"x".repeat(CHUNK - 13) + "</body>";
    let mut peak = before;
    let mut sent = 0;
    while sent < TOTAL {
        link.send(&piece).await.unwrap();
        sent += piece.len();
        if sent % (8 * CHUNK) == 0 {
            peak = peak.max(fpush.rss_kib().unwrap_or(0));
        }
    }
    link.send("</item></publish></pubsub></iq>").await.unwrap();
    assert_error(
        &link.next_stanza(WAIT).await.unwrap(),
        "100mb",
        "wait",
        "policy-violation",
    );
    peak = peak.max(fpush.rss_kib().unwrap_or(0));
    // The default limit is 256 KiB: a few of those plus allocator slack, never the 100 MB.
    let growth_mib = peak.saturating_sub(before) / 1024;
    eprintln!("100 MB stanza: fpush RSS {before} KiB before, {peak} KiB at most while skipping it");
    assert!(
        growth_mib < 16,
        "RSS grew by {growth_mib} MiB (from {before} KiB to {peak} KiB) for a 100 MB stanza"
    );
    // The stream is still in step: the next push on it is answered.
    push_goes_through(&mut link, "after-100mb").await;
    fpush.assert_no_panic();
}

#[tokio::test]
async fn thousands_of_iqs_with_one_id_are_all_answered() {
    const COUNT: usize = 3000;
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let mut fpush = Daemon::start(&settings(&server, &demo_module(None, "0s"), ""));
    let mut link = connect(&mut server).await;
    let mut burst = String::new();
    for i in 0..COUNT {
        burst.push_str(&push_iq("same-id", &format!("token-{i}"), None));
    }
    link.send(&burst).await.unwrap();
    let replies = link.collect(COUNT, WAIT).await.unwrap();
    for reply in &replies {
        assert_result(reply, "same-id");
    }
    // Nothing more: exactly one reply each.
    assert_eq!(
        first_answer_after(&mut link, "end").await.attr("id"),
        Some("end")
    );
    fpush.assert_no_panic();
}

#[tokio::test]
async fn iqs_without_from_or_with_an_empty_from_are_not_answered() {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let mut fpush = Daemon::start(&settings(&server, &demo_module(None, "0s"), ""));
    let mut link = connect(&mut server).await;
    let without_from = push_iq("no-from", "token-a", None).replace(" from='localhost'", "");
    let empty_from = push_iq("empty-from", "token-b", None).replace("from='localhost'", "from=''");
    assert!(!without_from.contains("from=") && empty_from.contains("from=''"));
    link.send(&without_from).await.unwrap();
    link.send(&empty_from).await.unwrap();
    link.send(&format!(
        "<iq type='get' id='ping-no-from' to='{JID}'><ping xmlns='urn:xmpp:ping'/></iq>"
    ))
    .await
    .unwrap();
    // A reply with no destination would be bounced or misrouted by the server.
    assert_eq!(
        first_answer_after(&mut link, "last").await.attr("id"),
        Some("last")
    );
    fpush.assert_no_panic();
}

#[tokio::test]
async fn invalid_utf8_is_never_answered_with_garbage_and_the_link_stays_up() {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let mut fpush = Daemon::start(&settings(&server, &demo_module(None, "0s"), ""));
    let mut link = connect(&mut server).await;
    let mut bad_id =
        b"<iq type='get' id='bad-\xff\xfe' from='localhost' to='push.localhost'>".to_vec();
    bad_id.extend_from_slice(b"<ping xmlns='urn:xmpp:ping'/></iq>");
    let mut bad_token = push_iq("bad-token", "token-\u{1F600}", None).into_bytes();
    let at = bad_token
        .windows(4)
        .position(|w| w == "\u{1F600}".as_bytes())
        .unwrap();
    bad_token[at] = 0xC3; // a lead byte followed by continuation bytes that do not fit it
    link.send_chunked(&bad_id, 1 << 20).await.unwrap();
    link.send_chunked(&bad_token, 1 << 20).await.unwrap();
    // An IQ whose id cannot be read cannot be answered; the push with a broken token is
    // answered as a bad request, in valid UTF-8.
    let reply = link.next_stanza(WAIT).await.unwrap();
    assert_error(&reply, "bad-token", "modify", "bad-request");
    assert!(std::str::from_utf8(reply.raw.as_bytes()).is_ok());
    assert_eq!(
        first_answer_after(&mut link, "last").await.attr("id"),
        Some("last")
    );
    fpush.assert_no_panic();
}

#[tokio::test]
async fn a_stream_error_from_the_server_makes_fpush_reconnect() {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let mut fpush = Daemon::start(&settings(&server, &demo_module(None, "0s"), ""));
    let mut link = connect(&mut server).await;
    link.send(
        "<stream:error><system-shutdown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
         <text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>going down</text></stream:error>\
         </stream:stream>",
    )
    .await
    .unwrap();
    link.expect_close(WAIT).await.unwrap();
    push_goes_through(&mut connect(&mut server).await, "after-stream-error").await;
    let log = fpush.log_with("system-shutdown");
    assert!(
        log.contains("system-shutdown"),
        "the log names the error:\n{log}"
    );
    fpush.assert_no_panic();
}

#[tokio::test]
async fn a_second_stream_header_ends_the_stream_and_fpush_reconnects() {
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let mut fpush = Daemon::start(&settings(&server, &demo_module(None, "0s"), ""));
    let mut link = connect(&mut server).await;
    link.send(
        "<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' \
         xmlns='jabber:component:accept' id='again'>",
    )
    .await
    .unwrap();
    // Whatever fpush says about it, the stream ends and a new one works.
    while let Ok(stanza) = link.next_stanza(WAIT).await {
        assert_eq!(stanza.name, "error", "{}", stanza.raw);
    }
    push_goes_through(&mut connect(&mut server).await, "after-header").await;
    fpush.assert_no_panic();
}

#[tokio::test]
async fn a_server_that_never_opens_its_stream_is_dropped_and_retried() {
    // A bare TCP listener: it accepts, reads fpush's stream header and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut fpush = Daemon::start(&settings_on_port(
        port,
        &demo_module(None, "0s"),
        r#""xmppconnectionError": "100ms", "keepaliveTimeout": "500ms""#,
        "",
    ));
    let (mut silent, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .unwrap()
        .unwrap();
    let started = Instant::now();
    let mut header = Vec::new();
    let mut buf = [0u8; 4096];
    // fpush speaks first, then gives up on us: its side of the socket closes.
    loop {
        let n = tokio::time::timeout(WAIT, silent.read(&mut buf))
            .await
            .expect("fpush gives up on a silent server")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        header.extend_from_slice(&buf[..n]);
    }
    let gave_up_after = started.elapsed();
    assert!(
        String::from_utf8_lossy(&header).contains("<stream:stream"),
        "fpush opened its stream: {:?}",
        String::from_utf8_lossy(&header)
    );
    assert!(
        gave_up_after >= Duration::from_millis(400) && gave_up_after < Duration::from_secs(5),
        "gave up after {gave_up_after:?} with a 500 ms keepalive timeout"
    );
    // And it tries again.
    let (mut again, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .expect("fpush retries")
        .unwrap();
    let n = tokio::time::timeout(WAIT, again.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("<stream:stream"));
    again.shutdown().await.ok();
    fpush.assert_no_panic();
}

#[tokio::test]
async fn a_server_sending_garbage_instead_of_a_stream_header_is_retried() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut fpush = Daemon::start(&settings_on_port(
        port,
        &demo_module(None, "0s"),
        r#""xmppconnectionError": "100ms""#,
        "",
    ));
    for _ in 0..2 {
        let (mut socket, _) = tokio::time::timeout(WAIT, listener.accept())
            .await
            .expect("fpush connects")
            .unwrap();
        socket
            .write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n\xff\xfe<<<>>>")
            .await
            .ok();
        let mut sink = [0u8; 4096];
        // fpush hangs up on it.
        while let Ok(Ok(n)) = tokio::time::timeout(WAIT, socket.read(&mut sink)).await {
            if n == 0 {
                break;
            }
        }
    }
    fpush.assert_no_panic();
}

#[tokio::test]
async fn a_server_that_reads_no_replies_stops_fpush_reading_before_their_queue_outgrows_its_bound()
{
    // Pings with 4 KB ids, 120 MB of them, while no reply is read: fpush queues 16 MiB of
    // replies, then reads no more (the rest waits in the sockets), instead of holding them all.
    let mut server = FakeXmppServer::bind(SECRET).await.unwrap();
    let fpush = Daemon::start(&settings(&server, &demo_module(None, "0s"), ""));
    let mut link = server.accept(WAIT).await.unwrap();
    assert_eq!(
        first_answer_after(&mut link, "warm").await.attr("id"),
        Some("warm")
    );
    let before = fpush.rss_kib().expect("VmRSS of fpush");
    let long_id = "i".repeat(4000);
    let sending = tokio::spawn(async move {
        for n in 0..30_000 {
            let ping = format!(
                "<iq type='get' id='{long_id}{n}' from='localhost' to='{JID}'><ping xmlns='urn:xmpp:ping'/></iq>"
            );
            if link.send(&ping).await.is_err() {
                break;
            }
        }
        link
    });
    let mut peak = before;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(fpush.rss_kib().unwrap_or(0));
    }
    assert!(
        !sending.is_finished(),
        "fpush took every ping while no reply was read"
    );
    let grown = peak.saturating_sub(before);
    assert!(grown < 64 * 1024, "fpush grew by {grown} KiB");
    sending.abort();
}
