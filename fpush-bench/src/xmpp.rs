//! The XMPP server's side of XEP-0114, kept lean so the generator costs far less than fpush:
//! accept the component's stream and check its handshake, write push IQs from a byte template
//! (Prosody's exact shape, only the id and token digits change), and scan fpush's replies with
//! `memchr` instead of an XML parser — fpush's replies come from fixed templates.

use std::time::Duration;

use fpush_testkit::xmpp::{handshake_digest, prosody_push_iq};
use memchr::memmem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::p2_store::{write_node, write_secret, write_token, NODE_LEN, SECRET_LEN};
use crate::BenchError;

/// The component JID fpush is configured with.
pub const COMPONENT_JID: &str = "push.bench.localhost";
/// The component secret fpush is configured with.
pub const SECRET: &str = "bench-secret";
/// The domain push IQs come from (the users' server).
pub const USER_DOMAIN: &str = "bench.localhost";
/// Ids and tokens are 64 hex digits, like Prosody's ids and APNS device tokens.
const HEX_LEN: usize = 64;

/// Accepts one component connection and completes its handshake within `timeout`.
/// Returns the authenticated socket and any bytes read past the handshake.
pub async fn accept_component(
    listener: &TcpListener,
    stream_id: &str,
    timeout: Duration,
) -> Result<(TcpStream, Vec<u8>), BenchError> {
    let accepting = async {
        let (mut socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?;
        let mut buf = Vec::with_capacity(1024);
        let header_end = loop {
            if let Some(start) = memmem::find(&buf, b"<stream:stream") {
                if let Some(end) = memchr::memchr(b'>', &buf[start..]) {
                    break start + end + 1;
                }
            }
            read_some(&mut socket, &mut buf).await?;
        };
        buf.drain(..header_end);
        let header = format!(
            "<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' \
             xmlns='jabber:component:accept' id='{stream_id}' from='{COMPONENT_JID}'>"
        );
        socket.write_all(header.as_bytes()).await?;
        let (digest, rest) = loop {
            if let Some(close) = memmem::find(&buf, b"</handshake>") {
                let open = memmem::find(&buf[..close], b"<handshake>")
                    .ok_or_else(|| BenchError::Protocol("no <handshake> element".into()))?;
                let digest = String::from_utf8_lossy(&buf[open + 11..close]).into_owned();
                break (digest, buf[close + 12..].to_vec());
            }
            read_some(&mut socket, &mut buf).await?;
        };
        if digest.trim() != handshake_digest(stream_id, SECRET) {
            return Err(BenchError::Protocol(format!(
                "wrong handshake digest {digest:?}"
            )));
        }
        socket.write_all(b"<handshake/>").await?;
        Ok((socket, rest))
    };
    tokio::time::timeout(timeout, accepting)
        .await
        .map_err(|_| BenchError::Protocol("no component connected in time".into()))?
}

async fn read_some(socket: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), BenchError> {
    buf.reserve(4096);
    if socket.read_buf(buf).await? == 0 {
        return Err(BenchError::Protocol(
            "the component closed the connection during the handshake".into(),
        ));
    }
    Ok(())
}

/// A push IQ as Prosody sends it, with slots for the id and the device token (or, for a push
/// by node, the registration's node and secret).
pub struct PushTemplate {
    bytes: Vec<u8>,
    id_at: usize,
    token_at: usize,
    /// Where the secret goes in a push by node; `None` for a token in the node.
    secret_at: Option<usize>,
}

impl PushTemplate {
    /// Prosody's push IQ with a publish-options form naming `module`.
    pub fn new(module: &str) -> Self {
        let id_slot = "I".repeat(HEX_LEN);
        let token_slot = "T".repeat(HEX_LEN);
        let text = prosody_push_iq(
            &id_slot,
            USER_DOMAIN,
            COMPONENT_JID,
            &token_slot,
            Some(module),
        );
        let bytes = text.into_bytes();
        let id_at = memmem::find(&bytes, id_slot.as_bytes()).unwrap_or(0);
        let token_at = memmem::find(&bytes, token_slot.as_bytes()).unwrap_or(0);
        Self {
            bytes,
            id_at,
            token_at,
            secret_at: None,
        }
    }

    /// Prosody's push IQ for a p2 registration: its node, and a publish-options form with its
    /// secret and no `pushModule`, as Conversations enables push.
    pub fn by_node() -> Self {
        let id_slot = "I".repeat(HEX_LEN);
        let node_slot = "N".repeat(NODE_LEN);
        let secret_slot = "S".repeat(SECRET_LEN);
        let text = prosody_push_iq(&id_slot, USER_DOMAIN, COMPONENT_JID, &node_slot, None)
            .replace(TEMPLATE_SECRET, &secret_slot);
        let bytes = text.into_bytes();
        let id_at = memmem::find(&bytes, id_slot.as_bytes()).unwrap_or(0);
        let token_at = memmem::find(&bytes, node_slot.as_bytes()).unwrap_or(0);
        let secret_at = memmem::find(&bytes, secret_slot.as_bytes());
        Self {
            bytes,
            id_at,
            token_at,
            secret_at,
        }
    }

    /// Appends the IQ for push `seq` to device token (or registration) number `token`.
    pub fn write(&self, out: &mut Vec<u8>, seq: u64, token: u64) {
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        write_hex64(&mut out[start + self.id_at..][..HEX_LEN], ID_PREFIX, seq);
        match self.secret_at {
            None => write_token(&mut out[start + self.token_at..][..HEX_LEN], token),
            Some(secret_at) => {
                write_node(&mut out[start + self.token_at..][..NODE_LEN], token);
                write_secret(&mut out[start + secret_at..][..SECRET_LEN], token);
            }
        }
    }

    /// Length of one IQ in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
}

const ID_PREFIX: u64 = 0x5eed_1d00_0000_0000;
pub const TOKEN_PREFIX: u64 = 0x7a0c_e17e_d000_0000;
/// The secret `prosody_push_iq` puts in its publish-options form.
const TEMPLATE_SECRET: &str = "app-secret-xyz";

/// 64 hex digits: three times a fixed word derived from `prefix`, then `value`.
pub fn write_hex64(slot: &mut [u8], prefix: u64, value: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let words = [prefix, prefix ^ 0x9e37_79b9_7f4a_7c15, !prefix, value];
    for (w, word) in words.iter().enumerate() {
        for i in 0..16 {
            slot[w * 16 + i] = DIGITS[((word >> (60 - 4 * i)) & 0xf) as usize];
        }
    }
}

/// Spreads token numbers over the 64-bit space (a bijection: distinct numbers stay distinct),
/// so tokens look random rather than sequential.
pub fn scramble(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// One stanza from fpush, as far as the generator cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScannedReply<'a> {
    /// An answer to push `seq`; `kind` is `result` or `errortype/condition`.
    Answer { seq: Option<u64>, kind: &'a [u8] },
    /// A get/set from fpush (its keepalive ping).
    Request,
    /// Something that is not an IQ.
    Other,
    /// `</stream:stream>`.
    StreamEnd,
}

/// Cuts fpush's reply stream into stanzas and reads type, id and error condition.
#[derive(Default)]
pub struct ReplyScanner {
    buf: Vec<u8>,
    pos: usize,
}

impl ReplyScanner {
    pub fn with_leftover(bytes: Vec<u8>) -> Self {
        Self { buf: bytes, pos: 0 }
    }

    /// The buffer to read more bytes into (already-scanned bytes are dropped first).
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.reserve(64 * 1024);
        &mut self.buf
    }

    /// The next complete stanza, if one is buffered.
    pub fn next_reply(&mut self) -> Option<ScannedReply<'_>> {
        let rest = &self.buf[self.pos..];
        let start = memchr::memchr(b'<', rest)?;
        let rest = &rest[start..];
        if rest.starts_with(b"</stream:stream") {
            self.pos = self.buf.len();
            return Some(ScannedReply::StreamEnd);
        }
        let tag_end = memchr::memchr(b'>', rest)?;
        let end = if rest[tag_end - 1] == b'/' {
            tag_end + 1
        } else {
            if rest.starts_with(b"<iq ") {
                memmem::find(&rest[tag_end..], b"</iq>")? + tag_end + 5
            } else {
                let name_len = rest[1..]
                    .iter()
                    .position(|b| matches!(b, b' ' | b'>' | b'/'))
                    .unwrap_or(0);
                let mut close = Vec::with_capacity(name_len + 3);
                close.extend_from_slice(b"</");
                close.extend_from_slice(&rest[1..1 + name_len]);
                close.push(b'>');
                memmem::find(&rest[tag_end..], &close)? + tag_end + close.len()
            }
        };
        let stanza_at = self.pos + start;
        self.pos = stanza_at + end;
        let stanza = &self.buf[stanza_at..stanza_at + end];
        Some(classify(stanza, tag_end))
    }
}

fn classify(stanza: &[u8], tag_end: usize) -> ScannedReply<'_> {
    if !stanza.starts_with(b"<iq ") {
        return ScannedReply::Other;
    }
    let tag = &stanza[..tag_end];
    let kind = attribute(tag, b"type").unwrap_or(b"");
    if kind == b"get" || kind == b"set" {
        return ScannedReply::Request;
    }
    let seq = attribute(tag, b"id").and_then(parse_seq);
    let kind = if kind == b"error" {
        error_kind(&stanza[tag_end..]).unwrap_or(b"error")
    } else {
        kind
    };
    ScannedReply::Answer { seq, kind }
}

/// `type/condition` of the `<error>` inside an error reply, e.g. `wait/resource-constraint`,
/// as one slice: fpush writes `<error type='wait'><resource-constraint …`.
fn error_kind(body: &[u8]) -> Option<&[u8]> {
    let at = memmem::find(body, b"<error type=")? + 12;
    let value = &body[at + 1..];
    let type_end = memchr::memchr2(b'\'', b'"', value)?;
    let condition = &value[type_end + 1..];
    let open = memchr::memchr(b'<', condition)?;
    let name_len = condition[open + 1..]
        .iter()
        .position(|b| matches!(b, b' ' | b'/' | b'>'))?;
    // "wait'><resource-constraint": the type, the quote, '>' and '<' lie between; report the
    // two names joined by the three bytes between them.
    Some(&value[..type_end + 1 + open + 1 + name_len])
}

/// A top-level attribute's raw value in a start tag.
fn attribute<'a>(tag: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let mut from = 0;
    while let Some(at) = memmem::find(&tag[from..], name) {
        let at = from + at;
        let after = at + name.len();
        if at > 0 && tag[at - 1] == b' ' && tag.get(after) == Some(&b'=') {
            let quote = *tag.get(after + 1)?;
            let value = &tag[after + 2..];
            let len = memchr::memchr(quote, value)?;
            return Some(&value[..len]);
        }
        from = after;
    }
    None
}

/// The push sequence number from one of our ids (its last 16 hex digits).
fn parse_seq(id: &[u8]) -> Option<u64> {
    if id.len() != HEX_LEN {
        return None;
    }
    let mut value = 0u64;
    for &digit in &id[48..] {
        let nibble = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            _ => return None,
        };
        value = (value << 4) | u64::from(nibble);
    }
    Some(value)
}

/// Turns the raw `type'><condition` slice of an error reply into `type/condition`.
pub fn kind_label(kind: &[u8]) -> String {
    let text = String::from_utf8_lossy(kind);
    match text.split_once("><") {
        Some((kind, condition)) => {
            format!("{}/{condition}", kind.trim_end_matches(['\'', '"']))
        }
        None => text.into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_writes_distinct_ids_and_tokens_in_prosodys_shape() {
        let template = PushTemplate::new("bench");
        let mut out = Vec::new();
        template.write(&mut out, 7, 1);
        template.write(&mut out, 8, 2);
        assert_eq!(out.len(), 2 * template.len());
        let first = String::from_utf8(out[..template.len()].to_vec()).unwrap();
        let second = String::from_utf8(out[template.len()..].to_vec()).unwrap();
        assert!(first.contains("<value>bench</value>"));
        assert!(first.contains(&format!("id='{}", "5eed1d")));
        assert_ne!(first, second);
        let request = fpush_testkit::xmpp::Stanza::parse(first).unwrap();
        assert_eq!(request.attr("type"), Some("set"));
        assert_eq!(parse_seq(request.attr("id").unwrap().as_bytes()), Some(7));
    }

    #[test]
    fn template_by_node_carries_the_registrations_node_and_secret_and_no_module() {
        let template = PushTemplate::by_node();
        let mut out = Vec::new();
        template.write(&mut out, 7, 42);
        let text = String::from_utf8(out).unwrap();
        let mut secret = [0u8; SECRET_LEN];
        write_secret(&mut secret, 42);
        assert!(text.contains("node='n00000000042'"), "{text}");
        assert!(text.contains(&format!(
            "<value>{}</value>",
            String::from_utf8_lossy(&secret)
        )));
        assert!(!text.contains("pushModule") && !text.contains(TEMPLATE_SECRET));
        let request = fpush_testkit::xmpp::Stanza::parse(text).unwrap();
        assert_eq!(parse_seq(request.attr("id").unwrap().as_bytes()), Some(7));
    }

    #[test]
    fn scans_results_errors_and_pings() {
        let id = {
            let mut slot = vec![0u8; 64];
            write_hex64(&mut slot, ID_PREFIX, 42);
            String::from_utf8(slot).unwrap()
        };
        let stream = format!(
            "<iq type='result' id='{id}' from='c' to='d'/>\
             <iq type='error' id='{id}' from='c' to='d'><error type='wait'>\
             <resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>slow</text></error></iq>\
             <iq type='get' id='fpush-keepalive' from='c' to='d'><ping xmlns='urn:xmpp:ping'/></iq>\
             <iq type='result' id='x'"
        );
        let mut scanner = ReplyScanner::with_leftover(stream.into_bytes());
        assert_eq!(
            scanner.next_reply(),
            Some(ScannedReply::Answer {
                seq: Some(42),
                kind: b"result"
            })
        );
        match scanner.next_reply() {
            Some(ScannedReply::Answer { seq, kind }) => {
                assert_eq!(seq, Some(42));
                assert_eq!(kind_label(kind), "wait/resource-constraint");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(scanner.next_reply(), Some(ScannedReply::Request));
        assert_eq!(scanner.next_reply(), None, "an incomplete stanza waits");
        scanner.buffer().extend_from_slice(b"/></stream:stream>");
        assert_eq!(
            scanner.next_reply(),
            Some(ScannedReply::Answer {
                seq: None,
                kind: b"result"
            })
        );
        assert_eq!(scanner.next_reply(), Some(ScannedReply::StreamEnd));
    }
}
