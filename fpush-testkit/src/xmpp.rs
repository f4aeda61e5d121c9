//! The server side of XEP-0114 (`jabber:component:accept`), enough to drive fpush in tests and
//! benchmarks the way Prosody or ejabberd would: accept the component's stream, check its
//! handshake, send it stanzas, read what it answers, and drop the link on demand.
//!
//! Stanzas the component addresses to itself (its keepalive pings, and its answers to them) are
//! routed back to it automatically, as a real server routes them, so tests only see the
//! component's replies to what they sent.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::Reader;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Why a component link failed in a test.
#[derive(Debug, thiserror::Error)]
pub enum XmppTestError {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("the component closed the stream")]
    Closed,
    #[error("the component sent a wrong handshake digest {0:?}")]
    BadHandshake(String),
    #[error("unexpected data from the component: {0}")]
    Protocol(String),
}

/// A listening fake XMPP server that accepts component connections for one secret.
pub struct FakeXmppServer {
    listener: TcpListener,
    secret: String,
    next_stream: u64,
}

impl FakeXmppServer {
    /// Listen on a free loopback port.
    pub async fn bind(secret: &str) -> io::Result<Self> {
        Self::bind_port(0, secret).await
    }

    /// Listen on `port` of the loopback address: a server that comes back where it was.
    pub async fn bind_port(port: u16, secret: &str) -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        Ok(Self {
            listener,
            secret: secret.to_owned(),
            next_stream: 1,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub fn port(&self) -> u16 {
        self.addr().port()
    }

    /// Accept one component connection and complete its handshake (within `timeout`).
    pub async fn accept(&mut self, timeout: Duration) -> Result<ComponentLink, XmppTestError> {
        let stream_id = format!("fake-stream-{}", self.next_stream);
        self.next_stream += 1;
        let accepting = async {
            let (socket, _) = self.listener.accept().await?;
            socket.set_nodelay(true)?;
            ComponentLink::handshake(socket, stream_id, &self.secret).await
        };
        tokio::time::timeout(timeout, accepting)
            .await
            .map_err(|_| XmppTestError::Timeout("a component connection"))?
    }

    /// Accept one connection and reject its handshake with `<not-authorized/>`, as a server does
    /// when the secret is wrong. Returns the digest the component sent.
    pub async fn accept_and_reject(&mut self, timeout: Duration) -> Result<String, XmppTestError> {
        let rejecting = async {
            let (mut socket, _) = self.listener.accept().await?;
            let mut link = ComponentLink::open(&mut socket, "rejected-stream").await?;
            let digest = link.read_handshake().await?;
            link.socket
                .write_all(
                    b"<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
                      </stream:error></stream:stream>",
                )
                .await?;
            Ok(digest)
        };
        tokio::time::timeout(timeout, rejecting)
            .await
            .map_err(|_| XmppTestError::Timeout("a component connection"))?
    }
}

/// The lowercase hex SHA-1 of stream id + secret (XEP-0114 §3).
pub fn handshake_digest(stream_id: &str, secret: &str) -> String {
    let digest = Sha1::digest(format!("{stream_id}{secret}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// One authenticated component stream, seen from the server.
pub struct ComponentLink {
    socket: TcpStream,
    buf: Vec<u8>,
    /// The stream id this server gave the component.
    pub stream_id: String,
    /// The component JID from the stream header's `to`.
    pub component_jid: String,
    /// Whether the component closed its stream with `</stream:stream>` (not just the socket).
    saw_stream_end: bool,
}

/// Borrowed view used during the handshake before the link is complete.
struct Opening<'a> {
    socket: &'a mut TcpStream,
    buf: Vec<u8>,
    to: String,
}

impl ComponentLink {
    async fn open<'a>(
        socket: &'a mut TcpStream,
        stream_id: &str,
    ) -> Result<Opening<'a>, XmppTestError> {
        let mut buf = Vec::new();
        let header_end = loop {
            if let Some(end) = find_stream_header_end(&buf) {
                break end;
            }
            read_more(socket, &mut buf).await?;
        };
        let header = String::from_utf8_lossy(&buf[..header_end]).into_owned();
        if attribute_of_header(&header, "xmlns").as_deref() != Some("jabber:component:accept") {
            return Err(XmppTestError::Protocol(format!(
                "not a jabber:component:accept stream header: {header}"
            )));
        }
        let to = attribute_of_header(&header, "to").unwrap_or_default();
        buf.drain(..header_end);
        let reply = format!(
            "<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' \
             xmlns='jabber:component:accept' id='{stream_id}' from='{to}'>"
        );
        socket.write_all(reply.as_bytes()).await?;
        Ok(Opening { socket, buf, to })
    }

    async fn handshake(
        mut socket: TcpStream,
        stream_id: String,
        secret: &str,
    ) -> Result<Self, XmppTestError> {
        let (buf, to) = {
            let mut opening = Self::open(&mut socket, &stream_id).await?;
            let digest = opening.read_handshake().await?;
            if digest != handshake_digest(&stream_id, secret) {
                opening
                    .socket
                    .write_all(
                        b"<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
                          </stream:error></stream:stream>",
                    )
                    .await?;
                return Err(XmppTestError::BadHandshake(digest));
            }
            opening.socket.write_all(b"<handshake/>").await?;
            (std::mem::take(&mut opening.buf), opening.to.clone())
        };
        Ok(Self {
            socket,
            buf,
            stream_id,
            component_jid: to,
            saw_stream_end: false,
        })
    }

    /// Send raw XML to the component.
    pub async fn send(&mut self, xml: &str) -> Result<(), XmppTestError> {
        self.socket.write_all(xml.as_bytes()).await?;
        Ok(())
    }

    /// Send raw bytes to the component, possibly split into chunks of `chunk` bytes written one
    /// by one (to exercise reassembly across TCP reads).
    pub async fn send_chunked(&mut self, bytes: &[u8], chunk: usize) -> Result<(), XmppTestError> {
        for piece in bytes.chunks(chunk.max(1)) {
            self.socket.write_all(piece).await?;
            self.socket.flush().await?;
        }
        Ok(())
    }

    /// The next stanza from the component not addressed to the component itself (those are
    /// routed back to it here).
    pub async fn next_stanza(&mut self, timeout: Duration) -> Result<Stanza, XmppTestError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let stanza = self.next_raw(deadline).await?;
            if !self.routed_back(&stanza).await? {
                return Ok(stanza);
            }
        }
    }

    /// Sends a stanza the component addressed to itself back to it, as a server routes a stanza
    /// to its recipient; `false` for any other stanza.
    async fn routed_back(&mut self, stanza: &Stanza) -> Result<bool, XmppTestError> {
        if !self.to_itself(stanza) {
            return Ok(false);
        }
        self.send(&stanza.raw).await?;
        Ok(true)
    }

    /// Whether the component addressed `stanza` to itself.
    fn to_itself(&self, stanza: &Stanza) -> bool {
        stanza.attr("to") == Some(self.component_jid.as_str())
    }

    /// The next stanza from the component, pings included and not routed back (to play a server
    /// that stopped answering, or to answer them by hand).
    pub async fn next_including_pings(
        &mut self,
        timeout: Duration,
    ) -> Result<Stanza, XmppTestError> {
        self.next_raw(tokio::time::Instant::now() + timeout).await
    }

    /// Collect `count` stanzas (those to the component itself excluded), failing if they do not
    /// all arrive in time.
    pub async fn collect(
        &mut self,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<Stanza>, XmppTestError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut out = Vec::with_capacity(count);
        while out.len() < count {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            out.push(self.next_stanza(left).await?);
        }
        Ok(out)
    }

    /// Wait until the component closes its stream (`</stream:stream>` or EOF).
    pub async fn expect_close(&mut self, timeout: Duration) -> Result<(), XmppTestError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.next_raw(deadline).await {
                Err(XmppTestError::Closed) => return Ok(()),
                Err(other) => return Err(other),
                Ok(stanza) if self.to_itself(&stanza) => continue,
                Ok(stanza) => {
                    return Err(XmppTestError::Protocol(format!(
                        "expected the stream to close, got {}",
                        stanza.raw
                    )))
                }
            }
        }
    }

    async fn next_raw(&mut self, deadline: tokio::time::Instant) -> Result<Stanza, XmppTestError> {
        loop {
            match split_stanza(&self.buf) {
                Split::Stanza(end) => {
                    let raw = String::from_utf8_lossy(&self.buf[..end]).trim().to_owned();
                    self.buf.drain(..end);
                    return Stanza::parse(raw);
                }
                Split::StreamClosed => {
                    // As a server does: close our side of the stream in turn (errors mean the
                    // component is gone already).
                    if !self.saw_stream_end {
                        let _ = self.socket.write_all(b"</stream:stream>").await;
                        let _ = self.socket.shutdown().await;
                    }
                    self.saw_stream_end = true;
                    return Err(XmppTestError::Closed);
                }
                Split::Incomplete => {}
            }
            let read =
                tokio::time::timeout_at(deadline, read_more(&mut self.socket, &mut self.buf))
                    .await
                    .map_err(|_| XmppTestError::Timeout("a stanza from the component"))?;
            match read {
                Ok(0) => return Err(XmppTestError::Closed),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Err(XmppTestError::Closed)
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Whether the component ended its stream properly (`</stream:stream>`) before closing.
    pub fn saw_stream_end(&self) -> bool {
        self.saw_stream_end
    }

    /// Drop the TCP connection abruptly, without closing the stream.
    pub fn drop_connection(self) {
        drop(self.socket);
    }

    /// Close the stream politely.
    pub async fn close(mut self) -> Result<(), XmppTestError> {
        self.socket.write_all(b"</stream:stream>").await?;
        self.socket.shutdown().await?;
        Ok(())
    }
}

impl Opening<'_> {
    async fn read_handshake(&mut self) -> Result<String, XmppTestError> {
        loop {
            if let Split::Stanza(end) = split_stanza(&self.buf) {
                let raw = String::from_utf8_lossy(&self.buf[..end]).trim().to_owned();
                self.buf.drain(..end);
                let stanza = Stanza::parse(raw)?;
                if stanza.name != "handshake" {
                    return Err(XmppTestError::Protocol(format!(
                        "expected <handshake>, got {}",
                        stanza.raw
                    )));
                }
                return Ok(stanza.text);
            }
            if read_more(self.socket, &mut self.buf).await? == 0 {
                return Err(XmppTestError::Closed);
            }
        }
    }
}

async fn read_more(socket: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; 16 * 1024];
    let n = socket.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// End of the `<stream:stream ...>` start tag (after an optional XML declaration).
fn find_stream_header_end(buf: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(buf).ok()?;
    let start = text.find("<stream:stream")?;
    text[start..].find('>').map(|i| start + i + 1)
}

fn attribute_of_header(header: &str, name: &str) -> Option<String> {
    let start = header.find("<stream:stream")?;
    let tag = &header[start..];
    for quote in ['\'', '"'] {
        let key = format!(" {name}={quote}");
        if let Some(pos) = tag.find(&key) {
            let rest = &tag[pos + key.len()..];
            return rest.find(quote).map(|end| rest[..end].to_owned());
        }
    }
    None
}

enum Split {
    Stanza(usize),
    StreamClosed,
    Incomplete,
}

/// Find the end of the first complete top-level element in `buf` (the stream header is already
/// consumed, so depth 0 here is the stream's children).
fn split_stanza(buf: &[u8]) -> Split {
    let mut reader = Reader::from_reader(buf);
    reader.config_mut().check_end_names = false;
    reader.config_mut().allow_unmatched_ends = true;
    let mut depth = 0usize;
    loop {
        match reader.read_event() {
            Ok(Event::Start(_)) => depth += 1,
            Ok(Event::End(end)) => {
                if depth == 0 {
                    if end.name().as_ref() == b"stream:stream" {
                        return Split::StreamClosed;
                    }
                    return Split::Incomplete;
                }
                depth -= 1;
                if depth == 0 {
                    return Split::Stanza(reader.buffer_position() as usize);
                }
            }
            Ok(Event::Empty(_)) if depth == 0 => {
                return Split::Stanza(reader.buffer_position() as usize)
            }
            Ok(Event::Eof) | Err(_) => return Split::Incomplete,
            Ok(_) => {}
        }
    }
}

/// A stanza received from the component, with the few facts tests assert on.
#[derive(Debug, Clone)]
pub struct Stanza {
    /// The stanza as received.
    pub raw: String,
    /// Local name of the top element (`iq`, `handshake`, …).
    pub name: String,
    attrs: HashMap<String, String>,
    /// `error/@type` for error IQs.
    pub error_type: Option<String>,
    /// The first stanza-error condition element inside `<error>`.
    pub error_condition: Option<String>,
    /// The `<text>` of an error, or the text content of a simple element such as `<handshake>`.
    pub text: String,
    /// Local names of every element below the top one, in document order.
    pub descendants: Vec<String>,
    /// `(category, type)` of disco identities and `var` of disco features, if any.
    pub identities: Vec<(String, String)>,
    pub features: Vec<String>,
}

impl Stanza {
    /// Parse one stanza (e.g. reply bytes taken straight from fpush's reply queue).
    pub fn parse(raw: String) -> Result<Self, XmppTestError> {
        let mut stanza = Stanza {
            name: String::new(),
            attrs: HashMap::new(),
            error_type: None,
            error_condition: None,
            text: String::new(),
            descendants: Vec::new(),
            identities: Vec::new(),
            features: Vec::new(),
            raw: String::new(),
        };
        let mut reader = Reader::from_str(&raw);
        // Local names of the open elements, the top one first.
        let mut stack: Vec<String> = Vec::new();
        loop {
            let event = reader
                .read_event()
                .map_err(|e| XmppTestError::Protocol(format!("not well-formed ({e}): {raw}")))?;
            match event {
                Event::Start(start) => {
                    let local = stanza.element(&start, &stack);
                    stack.push(local);
                }
                Event::Empty(start) => {
                    stanza.element(&start, &stack);
                    if stack.is_empty() {
                        break;
                    }
                }
                Event::Text(text) if keeps_text(&stack) => {
                    let text = text.decode().map(|t| t.into_owned()).unwrap_or_default();
                    stanza.text.push_str(&text);
                }
                Event::GeneralRef(reference) if keeps_text(&stack) => {
                    stanza.text.push_str(&resolve_reference(&reference));
                }
                Event::End(_) => {
                    stack.pop();
                    if stack.is_empty() {
                        break;
                    }
                }
                Event::Eof => {
                    return Err(XmppTestError::Protocol(format!("truncated stanza: {raw}")))
                }
                _ => {}
            }
        }
        stanza.raw = raw;
        Ok(stanza)
    }

    /// Records an element that opened below the open elements `stack`; returns its local name.
    fn element(&mut self, start: &BytesStart<'_>, stack: &[String]) -> String {
        let local = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
        let mut attrs = HashMap::new();
        for attr in start.attributes().flatten() {
            let key = String::from_utf8_lossy(attr.key.as_ref()).into_owned();
            let value = attr
                .unescape_value()
                .map(|v| v.into_owned())
                .unwrap_or_default();
            attrs.insert(key, value);
        }
        let Some(parent) = stack.last() else {
            self.name = local.clone();
            self.attrs = attrs;
            return local;
        };
        let attr = |name: &str| attrs.get(name).cloned().unwrap_or_default();
        if local == "error" {
            self.error_type = attrs.get("type").cloned();
        } else if parent == "error" && local != "text" {
            self.error_condition.get_or_insert(local.clone());
        } else if local == "identity" {
            self.identities.push((attr("category"), attr("type")));
        } else if local == "feature" {
            self.features.push(attr("var"));
        }
        self.descendants.push(local.clone());
        local
    }

    /// An attribute of the top element, unescaped.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs.get(name).map(String::as_str)
    }

    /// `type` of the top element.
    pub fn kind(&self) -> Option<&str> {
        self.attr("type")
    }
}

/// Whether text at this place is kept: inside `<text>`, or directly inside the top element.
fn keeps_text(stack: &[String]) -> bool {
    stack.len() == 1 || stack.last().is_some_and(|inside| inside == "text")
}

/// The text a character or predefined entity reference stands for (empty if unknown).
fn resolve_reference(reference: &BytesRef<'_>) -> String {
    match reference.resolve_char_ref() {
        Ok(Some(ch)) => ch.to_string(),
        _ => reference
            .decode()
            .ok()
            .and_then(|name| quick_xml::escape::resolve_predefined_entity(&name))
            .unwrap_or("")
            .to_owned(),
    }
}

/// A push IQ shaped exactly like the ones Prosody 0.12 (mod_cloud_notify) sends, for tests and the
/// load generator. `module` is the publish-options `pushModule` (omitted when `None`).
pub fn prosody_push_iq(
    id: &str,
    from: &str,
    to: &str,
    token: &str,
    module: Option<&str>,
) -> String {
    let module_field = module
        .map(|m| format!("<field var='pushModule'><value>{m}</value></field>"))
        .unwrap_or_default();
    format!(
        "<iq id='{id}' type='set' to='{to}' from='{from}'><pubsub xmlns='http://jabber.org/protocol/pubsub'>\
         <publish node='{token}'><item><notification xmlns='urn:xmpp:push:0'><x xmlns='jabber:x:data' type='form'>\
         <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:push:summary</value></field>\
         <field var='message-count' type='text-single'><value>1</value></field>\
         <field var='pending-subscription-count' type='text-single'/>\
         <field var='last-message-sender' type='jid-single'/>\
         <field var='last-message-body' type='text-single'><value>New Message!</value></field>\
         </x></notification></item></publish><publish-options><x xmlns='jabber:x:data' type='submit'>\
         <field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field>\
         {module_field}<field var='secret'><value>app-secret-xyz</value></field>\
         </x></publish-options></pubsub></iq>"
    )
}

/// Variants of a stanza for tests that hold two readers to each other: the stanza with each
/// byte taken out in turn, and with each of `insertions` put in before every `<`, after every
/// `>` and at every `every`-th byte.
pub fn stanza_variants<'a>(
    stanza: &'a [u8],
    insertions: &'a [&'a [u8]],
    every: usize,
) -> impl Iterator<Item = Vec<u8>> + 'a {
    (0..stanza.len()).flat_map(move |at| {
        let mut cut = stanza.to_vec();
        cut.remove(at);
        let boundary = stanza[at] == b'<' || at > 0 && stanza[at - 1] == b'>';
        let places = if boundary || at % every.max(1) == 0 {
            insertions
        } else {
            &[]
        };
        let grown = places.iter().map(move |insertion| {
            let mut grown = stanza[..at].to_vec();
            grown.extend_from_slice(insertion);
            grown.extend_from_slice(&stanza[at..]);
            grown
        });
        std::iter::once(cut).chain(grown)
    })
}

/// The stanza with `prefix` put before the name of each start or end tag in turn: one tag
/// per variant, so each makes an unbound prefix or an end tag that does not match its start.
pub fn tags_prefixed_in_turn<'a>(
    stanza: &'a [u8],
    prefix: &'a [u8],
) -> impl Iterator<Item = Vec<u8>> + 'a {
    let tags = stanza.iter().enumerate().filter(|(_, byte)| **byte == b'<');
    tags.map(move |(at, _)| {
        let name = at + 1 + usize::from(stanza.get(at + 1) == Some(&b'/'));
        [&stanza[..name], prefix, &stanza[name..]].concat()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_tag_is_prefixed_in_its_own_variant() {
        let variants: Vec<_> = tags_prefixed_in_turn(b"<a><b/></a>", b"p:").collect();
        assert_eq!(
            variants,
            [&b"<p:a><b/></a>"[..], b"<a><p:b/></a>", b"<a><b/></p:a>"]
        );
    }

    #[test]
    fn digest_is_lowercase_hex_sha1_of_id_and_secret() {
        // SHA-1("abc") is a well-known test vector.
        assert_eq!(
            handshake_digest("a", "bc"),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }

    #[tokio::test]
    async fn a_stream_that_is_not_a_component_stream_is_refused() {
        let mut server = FakeXmppServer::bind("secret").await.unwrap();
        let port = server.port();
        let client = tokio::spawn(async move {
            let mut socket = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            socket
                .write_all(
                    b"<stream:stream xmlns='jabber:client' \
                      xmlns:stream='http://etherx.jabber.org/streams' to='localhost'>",
                )
                .await
                .unwrap();
            socket
        });
        let refused = server.accept(Duration::from_secs(10)).await;
        assert!(
            matches!(&refused, Err(XmppTestError::Protocol(text)) if text.contains("jabber:client")),
            "{:?}",
            refused.err()
        );
        drop(client.await.unwrap());
    }

    #[test]
    fn splits_stanzas_and_detects_incomplete_ones() {
        assert!(matches!(
            split_stanza(b"<iq id='1'/><iq"),
            Split::Stanza(12)
        ));
        assert!(matches!(split_stanza(b"<iq id='1'><a>"), Split::Incomplete));
        assert!(matches!(
            split_stanza(b"</stream:stream>"),
            Split::StreamClosed
        ));
    }

    #[test]
    fn parses_error_replies() {
        let stanza = Stanza::parse(
            "<iq type='error' id='a&amp;b' from='x' to='y'><error type='wait'>\
             <resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>slow down</text></error></iq>"
                .into(),
        )
        .unwrap();
        assert_eq!(stanza.attr("id"), Some("a&b"));
        assert_eq!(stanza.error_type.as_deref(), Some("wait"));
        assert_eq!(
            stanza.error_condition.as_deref(),
            Some("resource-constraint")
        );
        assert_eq!(stanza.text, "slow down");
    }
}
