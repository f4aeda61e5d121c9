//! The link against the test kit's fake XMPP server on 127.0.0.1: handshake, framing over real
//! sockets, limits, keepalive, reconnects, and shutdown.

use std::time::Duration;

use bytes::Bytes;
use fpush_testkit::xmpp::{ComponentLink, FakeXmppServer, Stanza};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;

use super::handshake::open;
use super::*;
use crate::request::{self, Request};

const SECRET: &str = "s3cret";
/// Upper bound for anything a test waits on; only reached when the test is failing.
const PATIENCE: Duration = Duration::from_secs(10);

fn cfg(port: u16) -> ComponentConfig {
    ComponentConfig {
        jid: "push.localhost".to_owned(),
        secret: SECRET.to_owned(),
        server_host: "127.0.0.1".to_owned(),
        server_port: port,
        reconnect_base: Duration::from_millis(50),
        reconnect_cap: Duration::from_millis(200),
        keepalive_interval: Duration::from_secs(60),
        keepalive_timeout: Duration::from_secs(5),
        max_stanza_size: 1024,
        max_depth: 8,
    }
}

/// A running link and the dispatcher's ends of its channels.
struct Component {
    inbound: mpsc::Receiver<Inbound>,
    replies: Option<ReplySender>,
    state: watch::Receiver<LinkState>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ComponentError>>,
    /// What a reload would send.
    settings: watch::Sender<ComponentConfig>,
}

impl Component {
    fn start(cfg: ComponentConfig) -> Component {
        let (inbound_tx, inbound) = mpsc::channel(64);
        let (reply_tx, reply_rx) = reply_channel();
        let (state_tx, state) = watch::channel(LinkState::Down);
        let (settings, settings_rx) = watch::channel(cfg);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run_reconfigurable(
            settings_rx,
            inbound_tx,
            reply_rx,
            state_tx,
            shutdown.clone(),
            CancellationToken::new(),
        ));
        Component {
            inbound,
            replies: Some(reply_tx),
            state,
            shutdown,
            task,
            settings,
        }
    }

    async fn next_inbound(&mut self) -> Inbound {
        timeout(PATIENCE, self.inbound.recv())
            .await
            .expect("no stanza arrived")
            .expect("the link stopped")
    }

    async fn wait_state(&mut self, wanted: impl Fn(&LinkState) -> bool) {
        let reached = timeout(PATIENCE, self.state.wait_for(|s| wanted(s)))
            .await
            .map(|_| ());
        assert!(
            reached.is_ok(),
            "state never reached; last state {:?}",
            *self.state.borrow()
        );
    }

    /// Waits until the link reports the stream `link` is up.
    async fn wait_up_on(&mut self, link: &ComponentLink) {
        let up = LinkState::Up {
            stream_id: link.stream_id.clone(),
        };
        self.wait_state(|s| *s == up).await;
    }

    fn reply(&self, bytes: &[u8]) {
        self.replies.as_ref().unwrap().send(bytes.to_vec());
    }
}

async fn server() -> FakeXmppServer {
    FakeXmppServer::bind(SECRET).await.unwrap()
}

/// Accepts the component's next connection and checks its handshake.
async fn accept(server: &mut FakeXmppServer) -> ComponentLink {
    let link = server
        .accept(PATIENCE)
        .await
        .expect("the component connects");
    assert_eq!(link.component_jid, "push.localhost");
    link
}

/// A component up on `server`'s first connection, waiting an hour after a failure: within
/// `PATIENCE` only a reconnect made at once arrives.
async fn up_with_an_hour_of_backoff(server: &mut FakeXmppServer) -> (Component, ComponentLink) {
    let mut config = cfg(server.port());
    config.reconnect_base = Duration::from_secs(3600);
    config.reconnect_cap = Duration::from_secs(3600);
    let mut component = Component::start(config);
    let link = accept(server).await;
    component.wait_up_on(&link).await;
    (component, link)
}

fn stanza(bytes: &'static [u8]) -> Inbound {
    Inbound::Stanza(Bytes::from_static(bytes))
}

/// What the dispatcher makes of an inbound stanza: a push read while it was framed, or the
/// parse of a stanza's bytes (which of the two a push takes depends on how it arrived).
fn understood(inbound: Inbound) -> Request {
    match inbound {
        Inbound::Push(request) => *request,
        Inbound::Stanza(bytes) => request::parse(&bytes),
        Inbound::Oversized { .. } => panic!("an oversized stanza, expected a whole one"),
    }
}

/// The raw text of each stanza, back to back.
fn concatenated(stanzas: &[Stanza]) -> String {
    stanzas.iter().map(|s| s.raw.as_str()).collect()
}

const PUSH: &[u8] = b"<iq type='set' id='p1' from='localhost' to='push.localhost'>\
    <pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='tok'/></pubsub></iq>";

/// Reads the component's stream error and the end of its stream.
async fn expect_stream_error(link: &mut ComponentLink, condition: &str) {
    let error = link.next_including_pings(PATIENCE).await.unwrap();
    assert_eq!(
        error.raw,
        format!(
            "<stream:error><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
             </stream:error>"
        )
    );
    link.expect_close(PATIENCE).await.unwrap();
    assert!(link.saw_stream_end(), "no </stream:stream> after the error");
}

#[tokio::test]
async fn handshake_then_many_stanzas_in_one_write() {
    let mut server = server().await;
    let mut component = Component::start(cfg(server.port()));
    let mut link = accept(&mut server).await;
    component.wait_up_on(&link).await;

    let mut burst = Vec::new();
    burst.extend_from_slice(PUSH);
    burst.extend_from_slice(b" <!-- between --> ");
    burst.extend_from_slice(b"<presence from='a@localhost'/>");
    burst.extend_from_slice(b"\n");
    burst.extend_from_slice(PUSH);
    link.send_chunked(&burst, burst.len()).await.unwrap();
    let first = component.next_inbound().await;
    assert!(matches!(first, Inbound::Push(_)), "read while framing");
    assert_eq!(understood(first), request::parse(PUSH));
    assert_eq!(
        component.next_inbound().await,
        stanza(b"<presence from='a@localhost'/>")
    );
    assert_eq!(
        understood(component.next_inbound().await),
        request::parse(PUSH)
    );
}

#[tokio::test]
async fn stanza_split_over_one_byte_writes_is_reassembled() {
    let mut server = server().await;
    let mut component = Component::start(cfg(server.port()));
    let mut link = accept(&mut server).await;
    link.send_chunked(PUSH, 1).await.unwrap();
    assert_eq!(
        understood(component.next_inbound().await),
        request::parse(PUSH)
    );
}

#[tokio::test]
async fn oversized_stanza_gives_its_start_tag_and_the_link_stays() {
    let mut server = server().await;
    let mut component = Component::start(cfg(server.port()));
    let mut link = accept(&mut server).await;
    let start = "<iq type='set' id='big' from='localhost' to='push.localhost'>";
    link.send(start).await.unwrap();
    link.send("<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='t'>")
        .await
        .unwrap();
    for _ in 0..200 {
        link.send("<item><x>0123456789</x></item>").await.unwrap();
    }
    link.send("</publish></pubsub></iq>").await.unwrap();
    link.send_chunked(PUSH, PUSH.len()).await.unwrap();
    assert_eq!(
        component.next_inbound().await,
        Inbound::Oversized {
            start_tag: Bytes::from_static(start.as_bytes())
        }
    );
    assert_eq!(
        understood(component.next_inbound().await),
        request::parse(PUSH)
    );
}

#[tokio::test]
async fn too_deep_stanza_gives_its_start_tag_and_the_link_stays() {
    let mut server = server().await;
    let mut component = Component::start(cfg(server.port()));
    let mut link = accept(&mut server).await;
    let start = "<iq type='get' id='deep' from='localhost' to='push.localhost'>";
    link.send(start).await.unwrap();
    link.send("<a><b><c><d><e><f><g><h><i><j/></i></h></g></f></e></d></c></b></a></iq>")
        .await
        .unwrap();
    link.send_chunked(PUSH, PUSH.len()).await.unwrap();
    assert_eq!(
        component.next_inbound().await,
        Inbound::Oversized {
            start_tag: Bytes::from_static(start.as_bytes())
        }
    );
    assert_eq!(
        understood(component.next_inbound().await),
        request::parse(PUSH)
    );
}

#[tokio::test]
async fn garbage_gets_not_well_formed_and_a_reconnect() {
    let mut server = server().await;
    let _component = Component::start(cfg(server.port()));
    let mut first = accept(&mut server).await;
    first.send("<a></b>").await.unwrap();
    expect_stream_error(&mut first, "not-well-formed").await;
    accept(&mut server).await;
}

#[tokio::test]
async fn wrong_secret_is_reported_as_such() {
    let mut server = server().await;
    let port = server.port();
    let rejecting = tokio::spawn(async move { server.accept_and_reject(PATIENCE).await });
    let err = match open(&cfg(port), PATIENCE).await {
        Err(err) => err,
        Ok(_) => panic!("the handshake must fail"),
    };
    assert!(matches!(err, LinkError::NotAuthorized), "{err:?}");
    assert!(err.to_string().contains("wrong secret"), "{err}");
    rejecting.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_component_name_the_server_does_not_know_is_reported_as_such() {
    // What Prosody 0.12 answers a stream to a name no `Component` declares: a header with an
    // empty id, then the stream error saying why.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let refusing = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut header = [0u8; 512];
        let _ = socket.read(&mut header).await.unwrap();
        let answer = "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' \
            xmlns:stream='http://etherx.jabber.org/streams' version='1.0' id=''>\
            <stream:error><host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
            <text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>push.localhost does not match \
            any configured external components</text></stream:error></stream:stream>";
        for piece in answer.split_inclusive("id=''>") {
            socket.write_all(piece.as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let err = match open(&cfg(port), PATIENCE).await {
        Err(err) => err,
        Ok(_) => panic!("the handshake must fail"),
    };
    let said = err.to_string();
    assert!(
        said.contains("host-unknown") && said.contains("does not match any configured"),
        "{said}"
    );
    refusing.await.unwrap();
}

#[tokio::test]
async fn a_header_without_id_and_nothing_after_it_is_reported_as_such() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut header = [0u8; 512];
        let _ = socket.read(&mut header).await.unwrap();
        let answer = "<stream:stream xmlns='jabber:component:accept' \
            xmlns:stream='http://etherx.jabber.org/streams'>";
        socket.write_all(answer.as_bytes()).await.unwrap();
        tokio::time::sleep(PATIENCE).await;
    });
    let err = match open(&cfg(port), PATIENCE).await {
        Err(err) => err,
        Ok(_) => panic!("the handshake must fail"),
    };
    assert!(matches!(err, LinkError::NoStreamId), "{err:?}");
    silent.abort();
}

#[tokio::test]
async fn wrong_secret_is_retried_with_growing_waits() {
    let mut server = server().await;
    let mut component = Component::start(cfg(server.port()));
    let mut rejected = Vec::new();
    for _ in 0..3 {
        server.accept_and_reject(PATIENCE).await.unwrap();
        rejected.push(Instant::now());
    }
    // Base 50 ms, then twice that with at most a quarter taken off as jitter.
    let (first, second) = (rejected[1] - rejected[0], rejected[2] - rejected[1]);
    assert!(first >= Duration::from_millis(50), "{first:?}");
    assert!(second >= Duration::from_millis(75), "{second:?}");
    component.wait_state(|s| *s != LinkState::Connecting).await;
    assert!(!matches!(*component.state.borrow(), LinkState::Up { .. }));
}

/// Moves the clock `by` at once (the link idle meanwhile), then lets it run on.
async fn time_passes(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

#[tokio::test]
async fn a_link_that_stayed_up_reconnects_at_once() {
    let mut server = server().await;
    let (mut component, first) = up_with_an_hour_of_backoff(&mut server).await;
    // A first link that dies young: the next death in a row would wait out the backoff,
    // unless the link before it stayed up.
    first.drop_connection();
    let second = accept(&mut server).await;
    component.wait_up_on(&second).await;
    time_passes(STABLE_LINK).await;
    second.drop_connection();
    // With an hour of backoff, only an immediate reconnect arrives within PATIENCE.
    let third = accept(&mut server).await;
    component.wait_up_on(&third).await;
}

#[tokio::test]
async fn a_restarting_server_is_tried_again_quickly_before_the_backoff() {
    let mut server = server().await;
    let port = server.port();
    let (mut component, first) = up_with_an_hour_of_backoff(&mut server).await;
    // The server goes away: the reconnect made at once is refused.
    drop(server);
    first.drop_connection();
    component
        .wait_state(|s| !matches!(s, LinkState::Up { .. }))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut restarted = FakeXmppServer::bind_port(port, SECRET).await.unwrap();
    // With an hour of backoff, only a quick try arrives within PATIENCE.
    let link = accept(&mut restarted).await;
    component.wait_up_on(&link).await;
}

#[tokio::test]
async fn a_link_that_dies_young_reconnects_at_once_but_a_second_in_a_row_waits_out_the_backoff() {
    let mut server = server().await;
    let (mut component, first) = up_with_an_hour_of_backoff(&mut server).await;
    // A server restarted right after the component connected: one young death is no loop.
    first.drop_connection();
    let second = accept(&mut server).await;
    component.wait_up_on(&second).await;
    second.drop_connection();
    component
        .wait_state(|s| !matches!(s, LinkState::Up { .. }))
        .await;
    // A server that accepts the handshake, then closes at once, again and again: reconnecting
    // at once every time would be a loop as fast as the network allows.
    let again = server.accept(Duration::from_secs(1)).await;
    assert!(
        again.is_err(),
        "reconnected at once after two links in a row that died at once"
    );
    time_passes(Duration::from_secs(3600)).await;
    let third = accept(&mut server).await;
    component.wait_up_on(&third).await;
}

#[tokio::test]
async fn links_that_die_right_after_the_handshake_are_retried_with_growing_waits() {
    let mut server = server().await;
    let _component = Component::start(cfg(server.port()));
    let mut closed = Vec::new();
    for _ in 0..4 {
        let link = accept(&mut server).await;
        link.drop_connection();
        closed.push(Instant::now());
    }
    // The first young death is reconnected at once; then base 50 ms, then twice that with at
    // most a quarter taken off as jitter.
    let (first, second) = (closed[2] - closed[1], closed[3] - closed[2]);
    assert!(first >= Duration::from_millis(50), "{first:?}");
    assert!(second >= Duration::from_millis(75), "{second:?}");
}

#[tokio::test]
async fn unanswered_keepalive_drops_the_link_and_reconnects() {
    let mut server = server().await;
    let mut config = cfg(server.port());
    config.keepalive_interval = Duration::from_millis(50);
    config.keepalive_timeout = Duration::from_millis(150);
    let _component = Component::start(config);
    let mut first = accept(&mut server).await;
    let ping = first.next_including_pings(PATIENCE).await.unwrap();
    assert_eq!(
        ping.raw,
        "<iq type='get' id='fpush-keepalive' from='push.localhost' to='push.localhost'>\
         <ping xmlns='urn:xmpp:ping'/></iq>"
    );
    // No answer: the component gives up on this stream and opens a new one.
    first.expect_close(PATIENCE).await.unwrap();
    accept(&mut server).await;
}

#[tokio::test]
async fn answered_keepalive_keeps_the_link() {
    let mut server = server().await;
    let mut config = cfg(server.port());
    config.keepalive_interval = Duration::from_millis(30);
    config.keepalive_timeout = Duration::from_millis(60);
    let mut component = Component::start(config);
    let mut link = accept(&mut server).await;
    // The ping routed back to the component, as a server routes a stanza to its own JID.
    let answer = b"<iq type='get' id='fpush-keepalive' from='push.localhost' to='push.localhost'>\
                   <ping xmlns='urn:xmpp:ping'/></iq>";
    // Four pings on the same stream span more than one keepalive timeout: each answer counted.
    for _ in 0..4 {
        let ping = link.next_including_pings(PATIENCE).await.unwrap();
        assert!(ping.raw.ends_with("urn:xmpp:ping'/></iq>"), "{}", ping.raw);
        link.send_chunked(answer, answer.len()).await.unwrap();
        assert_eq!(component.next_inbound().await, stanza(answer));
    }
    assert_eq!(
        *component.state.borrow(),
        LinkState::Up {
            stream_id: link.stream_id.clone()
        }
    );
}

#[tokio::test]
async fn replies_queued_while_down_go_out_on_the_next_stream() {
    let mut server = server().await;
    let mut component = Component::start(cfg(server.port()));
    let first = accept(&mut server).await;
    component.wait_up_on(&first).await;
    first.drop_connection();
    component
        .wait_state(|s| !matches!(s, LinkState::Up { .. }))
        .await;
    component.reply(b"<iq type='result' id='r1'/>");
    component.reply(b"<iq type='result' id='r2'/>");
    let mut second = accept(&mut server).await;
    let written = second.collect(2, PATIENCE).await.unwrap();
    assert_eq!(
        concatenated(&written),
        "<iq type='result' id='r1'/><iq type='result' id='r2'/>"
    );
}

#[tokio::test]
async fn replies_are_written_while_up() {
    let mut server = server().await;
    let mut component = Component::start(cfg(server.port()));
    let mut link = accept(&mut server).await;
    component.wait_up_on(&link).await;
    for i in 0..100 {
        component.reply(format!("<iq type='result' id='{i}'/>").as_bytes());
    }
    let written = link.collect(100, PATIENCE).await.unwrap();
    let expected: String = (0..100)
        .map(|i| format!("<iq type='result' id='{i}'/>"))
        .collect();
    assert_eq!(concatenated(&written), expected);
}

#[tokio::test]
async fn shutdown_drains_replies_then_closes_the_stream() {
    let mut server = server().await;
    let mut component = Component::start(cfg(server.port()));
    let mut link = accept(&mut server).await;
    component.wait_up_on(&link).await;

    component.shutdown.cancel();
    // In-flight pushes still finish after shutdown; their replies must go out.
    component.reply(b"<iq type='result' id='late'/>");
    drop(component.replies.take());
    let late = link.next_including_pings(PATIENCE).await.unwrap();
    assert_eq!(late.raw, "<iq type='result' id='late'/>");
    link.expect_close(PATIENCE).await.unwrap();
    assert!(link.saw_stream_end(), "the stream was not closed");
    link.drop_connection();
    let result = timeout(PATIENCE, component.task).await.unwrap().unwrap();
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn shutdown_while_down_returns_at_once() {
    // Nothing listens on the port once the server is gone: every connect fails.
    let port = server().await.port();
    let mut config = cfg(port);
    config.reconnect_base = Duration::from_secs(3600);
    let mut component = Component::start(config);
    component.wait_state(|s| *s == LinkState::Down).await;
    component.reply(b"<iq type='result' id='lost'/>");
    component.shutdown.cancel();
    let result = timeout(Duration::from_secs(2), component.task)
        .await
        .expect("run_reconfigurable must return promptly")
        .unwrap();
    assert!(result.is_ok());
}

#[tokio::test]
async fn a_reload_while_up_reconnects_with_the_new_settings() {
    let mut old = server().await;
    let mut new = server().await;
    let mut component = Component::start(cfg(old.port()));
    let first = accept(&mut old).await;
    component.wait_up_on(&first).await;
    component.settings.send_replace(cfg(new.port()));
    let second = accept(&mut new).await;
    component.wait_up_on(&second).await;
}

#[tokio::test]
async fn a_reload_during_the_backoff_connects_with_the_new_settings_at_once() {
    // Nothing listens on the old port: the first attempt fails and an hour of backoff begins.
    let port = server().await.port();
    let mut config = cfg(port);
    config.reconnect_base = Duration::from_secs(3600);
    config.reconnect_cap = Duration::from_secs(3600);
    let mut component = Component::start(config.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    reload_to_a_working_server(&mut component, config).await;
}

#[tokio::test]
async fn a_reload_during_a_handshake_that_hangs_connects_with_the_new_settings_at_once() {
    // A listener that never accepts: the connect succeeds, the server's header never comes.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = cfg(silent.local_addr().unwrap().port());
    config.keepalive_timeout = Duration::from_secs(3600);
    let mut component = Component::start(config.clone());
    component.wait_state(|s| *s == LinkState::Connecting).await;
    reload_to_a_working_server(&mut component, config).await;
}

/// A reload that points `component` at a server that works: it must come up there.
async fn reload_to_a_working_server(component: &mut Component, mut config: ComponentConfig) {
    let mut fixed = server().await;
    config.server_port = fixed.port();
    component.settings.send_replace(config);
    let link = accept(&mut fixed).await;
    component.wait_up_on(&link).await;
}

#[tokio::test]
async fn a_link_taken_over_by_another_connection_waits_before_taking_it_back() {
    let mut server = server().await;
    let (mut component, mut first) = up_with_an_hour_of_backoff(&mut server).await;
    // Prosody with component_conflict_resolve = "kick_old": a second fpush took the name.
    first
        .send(
            "<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>Replaced by a new connection\
             </text></stream:error></stream:stream>",
        )
        .await
        .unwrap();
    component
        .wait_state(|s| !matches!(s, LinkState::Up { .. }))
        .await;
    // Reconnecting at once would kick the other one, which would do the same: a kick war.
    let again = server.accept(Duration::from_secs(1)).await;
    assert!(again.is_err(), "reconnected at once after a conflict");
    component.shutdown.cancel();
    let result = timeout(PATIENCE, component.task).await.unwrap().unwrap();
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn stanzas_read_before_shutdown_are_all_handed_over() {
    let mut server = server().await;
    let mut component = Component::start(cfg(server.port()));
    let mut link = accept(&mut server).await;
    component.wait_up_on(&link).await;
    let sent = fill_the_inbound_queue(&mut link).await;
    component.shutdown.cancel();
    assert_eq!(handed_over(&mut component).await, sent);
}

/// Sends more stanzas than the inbound queue holds (64) in one write, and waits until the link
/// has read them all while the queue is full; answers how many.
async fn fill_the_inbound_queue(link: &mut ComponentLink) -> usize {
    let sent = 80;
    let stanzas: String = (0..sent)
        .map(|i| {
            format!("<iq type='get' id='g{i}' from='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        })
        .collect();
    link.send(&stanzas).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    sent
}

/// How many stanzas the component hands to the dispatcher until none comes for a second.
async fn handed_over(component: &mut Component) -> usize {
    let mut count = 0;
    while let Ok(Some(_)) = timeout(Duration::from_secs(1), component.inbound.recv()).await {
        count += 1;
    }
    count
}

#[test]
fn a_server_s_text_cannot_break_a_log_line() {
    let error = LinkError::StreamError {
        condition: "policy-violation".into(),
        text: "bye\n<0>fpush: forged".into(),
    };
    assert_eq!(
        error.to_string(),
        "the server sent a stream error: policy-violation (bye\\n<0>fpush: forged)"
    );
}

#[tokio::test]
async fn a_reply_queue_over_its_bound_says_so_until_half_of_it_went_out() {
    let (sender, mut writer) = reply_channel();
    let replies = sender.backlog();
    let eighth = MAX_QUEUED_REPLY_BYTES / 8;
    for _ in 0..8 {
        assert!(!replies.is_backlogged());
        sender.send(vec![b'x'; eighth]);
    }
    assert!(replies.is_backlogged());
    let waiting = {
        let replies = replies.clone();
        tokio::spawn(async move { replies.drained().await })
    };
    for _ in 0..4 {
        writer.recv().await.expect("queued");
    }
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!waiting.is_finished(), "half is still queued");
    assert!(!replies.is_backlogged());
    let mut batch = Vec::new();
    assert_eq!(writer.recv_many(&mut batch, 1).await, 1);
    let drained = tokio::time::timeout(Duration::from_secs(10), waiting).await;
    assert!(
        matches!(drained, Ok(Ok(()))),
        "woken once less than half is queued"
    );
}

/// A reload that changes the component settings reconnects; what the link had read but not yet
/// handed to the dispatcher (behind a full inbound queue, or mid-way through a burst when the
/// task had to yield) is handed over first, as at shutdown
/// (`stanzas_read_before_shutdown_are_all_handed_over`): otherwise push IQs the XMPP server
/// delivered would never get a reply.
#[tokio::test]
async fn stanzas_read_before_a_reload_reconnects_are_all_handed_over() {
    let mut old = server().await;
    let mut new = server().await;
    let mut component = Component::start(cfg(old.port()));
    let mut link = accept(&mut old).await;
    component.wait_up_on(&link).await;
    let sent = fill_the_inbound_queue(&mut link).await;
    // A reload names another server (or changes a timeout, a limit: anything in
    // ComponentConfig).
    component.settings.send_replace(cfg(new.port()));
    // The dispatcher goes on taking stanzas meanwhile.
    let taken = handed_over(&mut component).await;
    let second = accept(&mut new).await;
    component.wait_up_on(&second).await;
    assert_eq!(taken, sent, "stanzas read from the old stream were dropped");
}

#[tokio::test]
async fn a_link_whose_stanzas_wait_for_the_dispatcher_is_not_taken_for_dead() {
    // While the dispatcher takes no stanzas (it pauses while the replies' queue is over its
    // bound), the link cannot read the server's answers to its keepalive pings: it must not
    // call a server that keeps answering dead, dropping the stanzas it already read.
    let mut server = server().await;
    let mut config = cfg(server.port());
    config.keepalive_interval = Duration::from_millis(50);
    config.keepalive_timeout = Duration::from_millis(150);
    let mut component = Component::start(config);
    let mut link = accept(&mut server).await;
    component.wait_up_on(&link).await;
    let sent = fill_the_inbound_queue(&mut link).await;
    // The server routes every keepalive ping back for a second; the dispatcher is paused.
    let answering = link.next_stanza(Duration::from_secs(1)).await;
    assert!(
        matches!(
            answering,
            Err(fpush_testkit::xmpp::XmppTestError::Timeout(_))
        ),
        "the link was dropped: {answering:?}"
    );
    let up = LinkState::Up {
        stream_id: link.stream_id.clone(),
    };
    assert_eq!(*component.state.borrow(), up);
    // Every stanza read is handed over once the dispatcher takes them again (with the pings
    // routed back).
    let got = handed_over(&mut component).await;
    assert!(got >= sent, "{got} of {sent} stanzas handed over");
}
