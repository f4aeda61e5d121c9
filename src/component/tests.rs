//! The link against a small fake XMPP server on 127.0.0.1: handshake, framing over real
//! sockets, limits, keepalive, reconnects, and shutdown.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;

use super::handshake::{handshake_digest, open};
use super::*;

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

/// The server side of one component connection.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn accept(listener: &TcpListener) -> Conn {
        let (stream, _) = timeout(PATIENCE, listener.accept())
            .await
            .expect("the component did not connect")
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Reads until `needle` and returns everything up to and including it.
    async fn read_until(&mut self, needle: &[u8]) -> Vec<u8> {
        timeout(PATIENCE, async {
            loop {
                if let Some(i) = memchr::memmem::find(&self.buf, needle) {
                    return self.buf.drain(..i + needle.len()).collect();
                }
                let mut chunk = [0u8; 4096];
                let n = self.stream.read(&mut chunk).await.unwrap();
                assert!(
                    n > 0,
                    "EOF while waiting for {:?}",
                    String::from_utf8_lossy(needle)
                );
                self.buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .expect("timed out waiting for data")
    }

    /// Reads everything up to the end of the connection.
    async fn read_to_eof(&mut self) -> Vec<u8> {
        timeout(PATIENCE, async {
            let mut rest = std::mem::take(&mut self.buf);
            self.stream.read_to_end(&mut rest).await.unwrap();
            rest
        })
        .await
        .expect("the component did not close the connection")
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Plays the server's part of the XEP-0114 handshake, checking the digest.
    async fn handshake(&mut self, stream_id: &str) {
        let header = self.read_until(b">").await;
        let header = String::from_utf8(header).unwrap();
        assert!(
            header.contains("xmlns='jabber:component:accept'"),
            "{header}"
        );
        assert!(header.contains("to='push.localhost'"), "{header}");
        self.send(
            format!(
                "<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' \
                 xmlns='jabber:component:accept' id='{stream_id}' from='push.localhost'>"
            )
            .as_bytes(),
        )
        .await;
        let handshake = self.read_until(b"</handshake>").await;
        let expected = format!(
            "<handshake>{}</handshake>",
            handshake_digest(stream_id, SECRET)
        );
        assert_eq!(String::from_utf8(handshake).unwrap(), expected);
        self.send(b"<handshake/>").await;
    }
}

/// A running `run` and the dispatcher's ends of its channels.
struct Component {
    inbound: mpsc::Receiver<Inbound>,
    replies: Option<ReplySender>,
    state: watch::Receiver<LinkState>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ComponentError>>,
}

impl Component {
    fn start(cfg: ComponentConfig) -> Component {
        let (inbound_tx, inbound) = mpsc::channel(64);
        let (reply_tx, reply_rx) = reply_channel();
        let (state_tx, state) = watch::channel(LinkState::Down);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(cfg, inbound_tx, reply_rx, state_tx, shutdown.clone()));
        Component {
            inbound,
            replies: Some(reply_tx),
            state,
            shutdown,
            task,
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

    fn reply(&self, bytes: &[u8]) {
        self.replies.as_ref().unwrap().send(bytes.to_vec());
    }
}

async fn listener() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

fn stanza(bytes: &'static [u8]) -> Inbound {
    Inbound::Stanza(Bytes::from_static(bytes))
}

const PUSH: &[u8] = b"<iq type='set' id='p1' from='localhost' to='push.localhost'>\
    <pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='tok'/></pubsub></iq>";

#[tokio::test]
async fn handshake_then_many_stanzas_in_one_write() {
    let (listener, port) = listener().await;
    let mut component = Component::start(cfg(port));
    let mut conn = Conn::accept(&listener).await;
    conn.handshake("stream-1").await;
    component
        .wait_state(|s| {
            *s == LinkState::Up {
                stream_id: "stream-1".to_owned(),
            }
        })
        .await;

    let mut burst = Vec::new();
    burst.extend_from_slice(PUSH);
    burst.extend_from_slice(b" <!-- between --> ");
    burst.extend_from_slice(b"<presence from='a@localhost'/>");
    burst.extend_from_slice(b"\n");
    burst.extend_from_slice(PUSH);
    conn.send(&burst).await;
    assert_eq!(component.next_inbound().await, stanza(PUSH));
    assert_eq!(
        component.next_inbound().await,
        stanza(b"<presence from='a@localhost'/>")
    );
    assert_eq!(component.next_inbound().await, stanza(PUSH));
}

#[tokio::test]
async fn stanza_split_over_one_byte_writes_is_reassembled() {
    let (listener, port) = listener().await;
    let mut component = Component::start(cfg(port));
    let mut conn = Conn::accept(&listener).await;
    conn.handshake("s").await;
    for byte in PUSH {
        conn.send(std::slice::from_ref(byte)).await;
    }
    assert_eq!(component.next_inbound().await, stanza(PUSH));
}

#[tokio::test]
async fn oversized_stanza_gives_its_start_tag_and_the_link_stays() {
    let (listener, port) = listener().await;
    let mut component = Component::start(cfg(port));
    let mut conn = Conn::accept(&listener).await;
    conn.handshake("s").await;
    let start = b"<iq type='set' id='big' from='localhost' to='push.localhost'>";
    conn.send(start).await;
    conn.send(b"<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='t'>")
        .await;
    for _ in 0..200 {
        conn.send(b"<item><x>0123456789</x></item>").await;
    }
    conn.send(b"</publish></pubsub></iq>").await;
    conn.send(PUSH).await;
    assert_eq!(
        component.next_inbound().await,
        Inbound::Oversized {
            start_tag: Bytes::from_static(start)
        }
    );
    assert_eq!(component.next_inbound().await, stanza(PUSH));
}

#[tokio::test]
async fn too_deep_stanza_gets_a_stream_error_and_a_reconnect() {
    let (listener, port) = listener().await;
    let mut component = Component::start(cfg(port));
    let mut conn = Conn::accept(&listener).await;
    conn.handshake("first").await;
    conn.send(b"<a><b><c><d><e><f><g><h><i><j>").await;
    let closing = String::from_utf8(conn.read_to_eof().await).unwrap();
    assert!(
        closing.contains(
            "<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
             </stream:error></stream:stream>"
        ),
        "{closing}"
    );
    let mut second = Conn::accept(&listener).await;
    second.handshake("second").await;
    component
        .wait_state(|s| {
            *s == LinkState::Up {
                stream_id: "second".to_owned(),
            }
        })
        .await;
    second.send(PUSH).await;
    assert_eq!(component.next_inbound().await, stanza(PUSH));
}

#[tokio::test]
async fn garbage_gets_not_well_formed_and_a_reconnect() {
    let (listener, port) = listener().await;
    let _component = Component::start(cfg(port));
    let mut conn = Conn::accept(&listener).await;
    conn.handshake("first").await;
    conn.send(b"<a></b>").await;
    let closing = String::from_utf8(conn.read_to_eof().await).unwrap();
    assert!(closing.contains("<not-well-formed "), "{closing}");
    Conn::accept(&listener).await.handshake("second").await;
}

/// Plays a server that rejects the secret.
async fn reject(listener: &TcpListener) -> Instant {
    let mut conn = Conn::accept(listener).await;
    let at = Instant::now();
    conn.read_until(b">").await;
    conn.send(
        b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' \
          xmlns='jabber:component:accept' id='x'>",
    )
    .await;
    conn.read_until(b"</handshake>").await;
    conn.send(
        b"<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
          </stream:error></stream:stream>",
    )
    .await;
    at
}

#[tokio::test]
async fn wrong_secret_is_reported_as_such() {
    let (listener, port) = listener().await;
    let server = tokio::spawn(async move { reject(&listener).await });
    let err = match open(&cfg(port), PATIENCE).await {
        Err(err) => err,
        Ok(_) => panic!("the handshake must fail"),
    };
    assert!(matches!(err, LinkError::NotAuthorized), "{err:?}");
    assert!(err.to_string().contains("wrong secret"), "{err}");
    server.await.unwrap();
}

#[tokio::test]
async fn wrong_secret_is_retried_with_growing_waits() {
    let (listener, port) = listener().await;
    let mut component = Component::start(cfg(port));
    let first = reject(&listener).await;
    let second = reject(&listener).await;
    let third = reject(&listener).await;
    // Base 50 ms, then twice that with at most a quarter taken off as jitter.
    assert!(
        second - first >= Duration::from_millis(50),
        "{:?}",
        second - first
    );
    assert!(
        third - second >= Duration::from_millis(75),
        "{:?}",
        third - second
    );
    component.wait_state(|s| *s != LinkState::Connecting).await;
    assert!(!matches!(*component.state.borrow(), LinkState::Up { .. }));
}

#[tokio::test]
async fn a_link_that_was_up_reconnects_at_once() {
    let (listener, port) = listener().await;
    let mut config = cfg(port);
    config.reconnect_base = Duration::from_secs(3600);
    config.reconnect_cap = Duration::from_secs(3600);
    let mut component = Component::start(config);
    let mut conn = Conn::accept(&listener).await;
    conn.handshake("first").await;
    component
        .wait_state(|s| matches!(s, LinkState::Up { .. }))
        .await;
    drop(conn);
    // With an hour of backoff, only an immediate reconnect arrives within PATIENCE.
    let mut second = Conn::accept(&listener).await;
    second.handshake("second").await;
    component
        .wait_state(|s| {
            *s == LinkState::Up {
                stream_id: "second".to_owned(),
            }
        })
        .await;
}

#[tokio::test]
async fn unanswered_keepalive_drops_the_link_and_reconnects() {
    let (listener, port) = listener().await;
    let mut config = cfg(port);
    config.keepalive_interval = Duration::from_millis(50);
    config.keepalive_timeout = Duration::from_millis(150);
    let _component = Component::start(config);
    let mut conn = Conn::accept(&listener).await;
    conn.handshake("first").await;
    let ping = String::from_utf8(conn.read_until(b"</iq>").await).unwrap();
    assert_eq!(
        ping,
        "<iq type='get' id='fpush-keepalive' from='push.localhost' to='localhost'>\
         <ping xmlns='urn:xmpp:ping'/></iq>"
    );
    // No answer: the component gives up on this stream and opens a new one.
    conn.read_to_eof().await;
    Conn::accept(&listener).await.handshake("second").await;
}

#[tokio::test]
async fn answered_keepalive_keeps_the_link() {
    let (listener, port) = listener().await;
    let mut config = cfg(port);
    config.keepalive_interval = Duration::from_millis(30);
    config.keepalive_timeout = Duration::from_millis(60);
    let mut component = Component::start(config);
    let mut conn = Conn::accept(&listener).await;
    conn.handshake("only").await;
    let answer = b"<iq type='result' id='fpush-keepalive' from='localhost' to='push.localhost'/>";
    // Four pings on the same stream span more than one keepalive timeout: each answer counted.
    for _ in 0..4 {
        conn.read_until(b"urn:xmpp:ping'/></iq>").await;
        conn.send(answer).await;
        assert_eq!(component.next_inbound().await, stanza(answer));
    }
    assert_eq!(
        *component.state.borrow(),
        LinkState::Up {
            stream_id: "only".to_owned()
        }
    );
}

#[tokio::test]
async fn replies_queued_while_down_go_out_on_the_next_stream() {
    let (listener, port) = listener().await;
    let mut component = Component::start(cfg(port));
    let mut conn = Conn::accept(&listener).await;
    conn.handshake("first").await;
    component
        .wait_state(|s| matches!(s, LinkState::Up { .. }))
        .await;
    drop(conn);
    component
        .wait_state(|s| !matches!(s, LinkState::Up { .. }))
        .await;
    component.reply(b"<iq type='result' id='r1'/>");
    component.reply(b"<iq type='result' id='r2'/>");
    let mut second = Conn::accept(&listener).await;
    second.handshake("second").await;
    let written = second.read_until(b"id='r2'/>").await;
    assert_eq!(
        written,
        b"<iq type='result' id='r1'/><iq type='result' id='r2'/>"
    );
}

#[tokio::test]
async fn replies_are_written_while_up() {
    let (listener, port) = listener().await;
    let mut component = Component::start(cfg(port));
    let mut conn = Conn::accept(&listener).await;
    conn.handshake("s").await;
    component
        .wait_state(|s| matches!(s, LinkState::Up { .. }))
        .await;
    for i in 0..100 {
        component.reply(format!("<iq type='result' id='{i}'/>").as_bytes());
    }
    let written = conn.read_until(b"id='99'/>").await;
    let expected: String = (0..100)
        .map(|i| format!("<iq type='result' id='{i}'/>"))
        .collect();
    assert_eq!(String::from_utf8(written).unwrap(), expected);
}

#[tokio::test]
async fn shutdown_drains_replies_then_closes_the_stream() {
    let (listener, port) = listener().await;
    let mut component = Component::start(cfg(port));
    let mut conn = Conn::accept(&listener).await;
    conn.handshake("s").await;
    component
        .wait_state(|s| matches!(s, LinkState::Up { .. }))
        .await;

    component.shutdown.cancel();
    // In-flight pushes still finish after shutdown; their replies must go out.
    component.reply(b"<iq type='result' id='late'/>");
    drop(component.replies.take());
    let rest = String::from_utf8(conn.read_to_eof().await).unwrap();
    assert_eq!(rest, "<iq type='result' id='late'/></stream:stream>");
    drop(conn);
    let result = timeout(PATIENCE, component.task).await.unwrap().unwrap();
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn shutdown_while_down_returns_at_once() {
    let (listener, port) = listener().await;
    drop(listener); // nothing listens: every connect fails
    let mut config = cfg(port);
    config.reconnect_base = Duration::from_secs(3600);
    let mut component = Component::start(config);
    component.wait_state(|s| *s == LinkState::Down).await;
    component.reply(b"<iq type='result' id='lost'/>");
    component.shutdown.cancel();
    let result = timeout(Duration::from_secs(2), component.task)
        .await
        .expect("run must return promptly")
        .unwrap();
    assert!(result.is_ok());
}
