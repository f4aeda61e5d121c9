//! Opening a stream to the XMPP server and proving who we are (XEP-0114): the stream header,
//! the handshake digest, and reading the server's stream-level answers (`<handshake/>`,
//! `<stream:error>`).

use std::time::Duration;

use quick_xml::events::Event;
use quick_xml::Reader;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::framer::{Framer, StreamFrame};
use super::{ComponentConfig, LinkError};

/// A stream that completed the handshake, with whatever the server already sent after it.
pub(crate) struct Opened {
    pub(crate) stream: TcpStream,
    pub(crate) framer: Framer,
    pub(crate) stream_id: String,
}

/// Connects, sends our stream header, and completes the handshake, all within `limit`.
pub(crate) async fn open(cfg: &ComponentConfig, limit: Duration) -> Result<Opened, LinkError> {
    match tokio::time::timeout(limit, open_unbounded(cfg)).await {
        Ok(result) => result,
        Err(_) => Err(LinkError::Timeout(limit)),
    }
}

async fn open_unbounded(cfg: &ComponentConfig) -> Result<Opened, LinkError> {
    let mut stream = TcpStream::connect((cfg.server_host.as_str(), cfg.server_port))
        .await
        .map_err(LinkError::Connect)?;
    // Replies are small and latency matters more than packet count: never wait for Nagle.
    stream.set_nodelay(true)?;
    stream.write_all(&stream_header(&cfg.jid)).await?;

    let mut framer = Framer::new(cfg.max_stanza_size, cfg.max_depth);
    let header = match read_frame(&mut stream, &mut framer).await? {
        StreamFrame::StreamHeader(header) => header,
        other => return Err(unexpected(&other, &cfg.jid)),
    };
    let Some(stream_id) = stream_id(&header) else {
        return Err(refusal_without_id(&mut stream, &mut framer, &cfg.jid).await);
    };

    let mut handshake = Vec::with_capacity(64);
    handshake.extend_from_slice(b"<handshake>");
    handshake.extend_from_slice(handshake_digest(&stream_id, &cfg.secret).as_bytes());
    handshake.extend_from_slice(b"</handshake>");
    stream.write_all(&handshake).await?;

    match read_frame(&mut stream, &mut framer).await? {
        StreamFrame::Element(element) if element_name(&element) == b"handshake" => Ok(Opened {
            stream,
            framer,
            stream_id,
        }),
        other => Err(unexpected(&other, &cfg.jid)),
    }
}

/// How long a stream error may take to follow a stream header without id: a server sends both
/// at once.
const REFUSAL_GRACE: Duration = Duration::from_secs(1);

/// Why the server opened its stream without an id. A server refusing the stream opens it only
/// to send a stream error (Prosody, for a component name it does not know: `host-unknown`):
/// that error says what to fix, where "no id" would not.
async fn refusal_without_id(stream: &mut TcpStream, framer: &mut Framer, jid: &str) -> LinkError {
    match tokio::time::timeout(REFUSAL_GRACE, read_frame(stream, framer)).await {
        Ok(Ok(StreamFrame::Element(element))) if is_stream_error(&element) => {
            stream_error(&element, jid)
        }
        _ => LinkError::NoStreamId,
    }
}

/// Reads until the framer has a whole frame.
async fn read_frame(stream: &mut TcpStream, framer: &mut Framer) -> Result<StreamFrame, LinkError> {
    loop {
        if let Some(frame) = framer.next_frame()? {
            return Ok(frame);
        }
        if stream.read_buf(framer.buffer()).await? == 0 {
            return Err(LinkError::Closed);
        }
    }
}

/// What an out-of-place frame during the handshake means.
fn unexpected(frame: &StreamFrame, jid: &str) -> LinkError {
    match frame {
        StreamFrame::Element(element) if is_stream_error(element) => stream_error(element, jid),
        StreamFrame::StreamEnd => LinkError::StreamClosed,
        StreamFrame::Element(element) => {
            LinkError::Unexpected(String::from_utf8_lossy(element_name(element)).into_owned())
        }
        StreamFrame::StreamHeader(_) => LinkError::Unexpected("a second stream header".to_owned()),
        StreamFrame::Oversized { .. } => LinkError::Unexpected("an oversized element".to_owned()),
        StreamFrame::Push { .. } => LinkError::Unexpected("iq".to_owned()),
    }
}

/// Our opening tag for the `jabber:component:accept` stream.
pub(crate) fn stream_header(jid: &str) -> Vec<u8> {
    let mut header = Vec::with_capacity(128 + jid.len());
    header.extend_from_slice(
        b"<stream:stream xmlns='jabber:component:accept' \
          xmlns:stream='http://etherx.jabber.org/streams' to='",
    );
    header.extend_from_slice(quick_xml::escape::escape(jid).as_bytes());
    header.extend_from_slice(b"'>");
    header
}

/// The handshake proof: lowercase hex SHA-1 of the stream id followed by the shared secret.
pub(crate) fn handshake_digest(stream_id: &str, secret: &str) -> String {
    // SHA-1 is what XEP-0114 prescribes; ring offers it for such protocols.
    let mut sha = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    sha.update(stream_id.as_bytes());
    sha.update(secret.as_bytes());
    sha.finish()
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The `id` attribute of the server's stream header, unescaped.
pub(crate) fn stream_id(header: &[u8]) -> Option<String> {
    let mut reader = Reader::from_reader(header);
    let start = loop {
        match reader.read_event() {
            Ok(Event::Start(start) | Event::Empty(start)) => break start,
            Ok(Event::Eof) | Err(_) => return None,
            Ok(_) => continue,
        }
    };
    let decoder = reader.decoder();
    start
        .attributes()
        .flatten()
        .find(|attr| attr.key.as_ref() == b"id")
        .and_then(|attr| attr.decode_and_unescape_value(decoder).ok())
        .map(|id| id.into_owned())
        .filter(|id| !id.is_empty())
}

/// The qualified name of a top-level element, straight from its bytes.
pub(crate) fn element_name(element: &[u8]) -> &[u8] {
    let after_lt = element.get(1..).unwrap_or_default();
    let end = after_lt
        .iter()
        .position(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'/' | b'>'))
        .unwrap_or(after_lt.len());
    &after_lt[..end]
}

/// Whether a top-level element is a stream error (`<stream:error>`, whatever the prefix).
pub(crate) fn is_stream_error(element: &[u8]) -> bool {
    let name = element_name(element);
    name == b"error" || name.ends_with(b":error")
}

/// Reads a `<stream:error>` into the error it stands for.
pub(crate) fn stream_error(element: &[u8], jid: &str) -> LinkError {
    let (condition, text) = stream_error_parts(element);
    match condition.as_str() {
        "not-authorized" => LinkError::NotAuthorized,
        "conflict" => LinkError::Conflict(jid.to_owned()),
        _ => LinkError::StreamError { condition, text },
    }
}

/// The defined condition and the optional text of a stream error.
fn stream_error_parts(element: &[u8]) -> (String, String) {
    let mut reader = Reader::from_reader(element);
    let mut depth = 0usize;
    let mut condition = String::new();
    let mut text = String::new();
    let mut in_text = false;
    loop {
        match reader.read_event() {
            Ok(Event::Start(start)) => {
                depth += 1;
                if depth == 2 {
                    in_text = start.local_name().as_ref() == b"text";
                    if !in_text && condition.is_empty() {
                        condition = String::from_utf8_lossy(start.local_name().as_ref()).into();
                    }
                }
            }
            Ok(Event::Empty(start)) => {
                if depth == 1 && condition.is_empty() && start.local_name().as_ref() != b"text" {
                    condition = String::from_utf8_lossy(start.local_name().as_ref()).into();
                }
            }
            Ok(Event::End(_)) => {
                depth = depth.saturating_sub(1);
                in_text = false;
            }
            Ok(Event::Text(content)) if in_text => {
                text.push_str(&String::from_utf8_lossy(&content));
            }
            Ok(Event::Eof) | Err(_) => break,
            Ok(_) => {}
        }
    }
    if condition.is_empty() {
        condition.push_str("undefined-condition");
    }
    (condition, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_lowercase_hex_sha1_of_id_then_secret() {
        // printf '%s' 'abc123secret' | sha1sum
        assert_eq!(
            handshake_digest("abc123", "secret"),
            "b67adbb9f7287b8f2d9c809b39a804b2123fc4c0"
        );
    }

    #[test]
    fn stream_id_is_read_from_the_header() {
        let header = b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' \
            xmlns='jabber:component:accept' id='a&amp;b' from='push.localhost'>";
        assert_eq!(stream_id(header).as_deref(), Some("a&b"));
        assert_eq!(
            stream_id(b"<stream:stream xmlns='jabber:component:accept'>"),
            None
        );
    }

    #[test]
    fn stream_errors_are_classified() {
        let not_authorized = b"<stream:error><not-authorized \
            xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>";
        assert!(matches!(
            stream_error(not_authorized, "push.localhost"),
            LinkError::NotAuthorized
        ));
        let conflict = b"<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
            <text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>Replaced</text></stream:error>";
        assert!(matches!(
            stream_error(conflict, "push.localhost"),
            LinkError::Conflict(jid) if jid == "push.localhost"
        ));
        let other = b"<stream:error><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>bye</text>\
            <system-shutdown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>";
        match stream_error(other, "push.localhost") {
            LinkError::StreamError { condition, text } => {
                assert_eq!(condition, "system-shutdown");
                assert_eq!(text, "bye");
            }
            e => panic!("unexpected {e:?}"),
        }
    }

    #[test]
    fn element_names_come_from_the_start_tag() {
        assert_eq!(element_name(b"<handshake/>"), b"handshake");
        assert_eq!(element_name(b"<stream:error>"), b"stream:error");
        assert_eq!(element_name(b"<iq type='get'>"), b"iq");
        assert!(is_stream_error(b"<stream:error><x/></stream:error>"));
        assert!(!is_stream_error(b"<iq type='error'/>"));
    }

    #[test]
    fn stream_header_names_the_component_and_escapes_it() {
        let header = String::from_utf8(stream_header("push.example.org")).unwrap();
        assert_eq!(
            header,
            "<stream:stream xmlns='jabber:component:accept' \
             xmlns:stream='http://etherx.jabber.org/streams' to='push.example.org'>"
        );
        let odd = String::from_utf8(stream_header("a'b")).unwrap();
        assert!(odd.ends_with("to='a&apos;b'>"), "{odd}");
    }
}
